"""The toy text tasks (tasks/evomm_tasks_toy) score a scripted fake handle correctly."""

from __future__ import annotations

import pytest
from evomm_zoo.build import write_jsonl
from evomm_zoo.textdata import task_rows

from evomm.errors import TaskError


class FakeHandle:
    """Answers from a script: prompt -> output; records what it was asked."""

    capabilities = frozenset({"generate"})

    def __init__(self, script):
        self.script = script
        self.calls = []

    def generate(self, prompts, *, images=None, max_new_tokens=64, stop=(), num_beams=1, batch_size=16):
        self.calls.append({"n": len(prompts), "max_new_tokens": max_new_tokens, "stop": list(stop)})
        return [self.script[p] for p in prompts]


@pytest.fixture()
def zoo(tmp_path):
    for task in ("ja_skill", "en_math", "ja_math"):
        write_jsonl(tmp_path / "data" / task / "test.jsonl", task_rows(task, "test", 8, seed=0))
    return tmp_path


def _tasks():
    from evomm_tasks_toy.text import ToyJaMath, ToyJaSkill, ToyMath

    return ToyJaSkill, ToyMath, ToyJaMath


def test_toy_tasks_are_registered():
    from evomm.plugins import load_plugins

    tasks = load_plugins([]).tasks
    for cls in _tasks():
        assert tasks.get(cls.name) is cls
        assert [m.name for m in cls.metrics][:2] == ["strict", "loose"]


@pytest.mark.parametrize("which", [1, 2])
def test_math_tasks_score_strict_and_loose(zoo, which):
    cls = _tasks()[which]
    task = cls(str(zoo))
    rows = task.examples()
    script = {}
    for i, r in enumerate(rows):
        if i < 3:  # right
            script[r["prompt"]] = f"{r['equation']}={r['result']}"
        elif i < 5:  # lucky: the right number after '=', another equation
            script[r["prompt"]] = f"0+{r['result']}={r['result']}"
        else:  # wrong
            script[r["prompt"]] = f"{r['equation']}={r['result'] + 1}"
    handle = FakeHandle(script)
    result = task.evaluate(handle)
    assert result.n == 8
    assert result.metrics == {"strict": 3 / 8, "loose": 5 / 8}
    assert handle.calls[0]["max_new_tokens"] >= 6
    assert [d["strict"] for d in result.details] == [True] * 3 + [False] * 5


def test_ja_skill_task_scores_the_equation(zoo):
    cls = _tasks()[0]
    task = cls(str(zoo / "data" / "ja_skill"))  # a task directory works too
    rows = task.examples()
    flip = {"+": "-", "-": "+"}
    script = {
        r["prompt"]: (r["equation"] if i % 2 == 0 else f"{r['a']}{flip[r['op']]}{r['b']}")
        for i, r in enumerate(rows)
    }
    result = task.evaluate(FakeHandle(script))
    assert result.metrics == {"strict": 0.5, "loose": 1.0}


def test_limit_and_subset(zoo):
    cls = _tasks()[2]
    task = cls(str(zoo), limit=4, seed=1)
    rows = task.examples()
    assert len(rows) == 4
    script = {r["prompt"]: f"{r['equation']}={r['result']}" for r in rows}
    result = task.evaluate(FakeHandle(script), subset=[0, 2])
    assert result.n == 2 and result.metrics["strict"] == 1.0


def test_missing_data_tells_the_user_to_build_the_zoo(tmp_path):
    cls = _tasks()[2]
    with pytest.raises(TaskError, match="evomm zoo build"):
        cls(str(tmp_path / "nowhere")).examples()


@pytest.mark.parametrize("model", ["ja", "math"])
def test_toy_tasks_through_the_hf_handle_match_the_zoo_scores(micro_zoo, model):
    """Two independent paths (the zoo's own generation, the evomm_hf handle + task) agree."""
    handle_mod = pytest.importorskip("evomm_hf.handle")
    from evomm_zoo import read_zoo_json
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = micro_zoo / "models" / model
    handle = handle_mod.HFCausalLMHandle(
        AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    )
    from evomm_zoo.build import read_jsonl
    from evomm_zoo.generate import LocalHandle

    prompts = [r["prompt"] for r in read_jsonl(micro_zoo / "data" / "ja_math" / "test.jsonl")]
    local = LocalHandle(AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path))
    # the raw continuations agree too (a non-trivial check even where the micro scores are 0)
    assert handle.generate(prompts, max_new_tokens=8) == local.generate(prompts, max_new_tokens=8)
    want = read_zoo_json(micro_zoo)["scores"][model]
    for cls, zoo_task in zip(_tasks(), ("ja_skill", "en_math", "ja_math")):
        got = cls(str(micro_zoo), split="test").evaluate(handle).metrics
        assert got == {"strict": want[zoo_task]["strict"], "loose": want[zoo_task]["loose"]}
