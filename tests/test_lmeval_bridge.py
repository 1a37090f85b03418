"""The ``lmeval`` task: local lm-eval YAML tasks scored on an in-memory tiny Llama.

Every lm-eval score is compared with one computed here straight from the handle
(``loglikelihood`` over the choices, ``generate`` for exact match).
"""

from __future__ import annotations

import importlib.util
import json
import random
import sys

import pytest
import torch

from evomm.errors import TaskError
from evomm.plugins import get_plugins
from tests.tiny_models import tiny_config, train_tokenizer

needs_lmeval = pytest.mark.skipif(
    importlib.util.find_spec("lm_eval") is None,
    reason="lm_eval is not installed (pip install 'evomm[lmeval]')",
)

QUESTIONS = ["red or blue", "one two three", "cats and dogs", "sun moon", "apple pie",
             "the quick fox", "rain today", "big small", "left right", "north south"]
CHOICES = [["red", "blue", "green"], ["one", "two", "six"], ["cat", "dog", "cow"]]

MC_YAML = """\
task: evomm_test_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""

GEN_YAML = """\
task: evomm_test_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 6
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""


@pytest.fixture(scope="module")
def handle():
    from evomm_hf.handle import HFCausalLMHandle
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config("llama")).eval()
    return HFCausalLMHandle(model, train_tokenizer())


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def mc_task_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("lmeval_mc")
    rng = random.Random(0)
    rows = [{"question": q, "choices": CHOICES[i % 3], "label": rng.randrange(3)} for i, q in enumerate(QUESTIONS)]
    _write(d / "mc.jsonl", rows)
    (d / "mc.yaml").write_text(MC_YAML.format(data=d / "mc.jsonl"), encoding="utf-8")
    return d / "mc.yaml", rows


def _lmeval(**options):
    return get_plugins().tasks.get("lmeval")(**options)


def _mc_correct(handle, rows):
    """Per-row correctness from the handle's log-likelihoods (lm-eval's prompt: context, then
    target_delimiter ' ' + choice)."""
    out = []
    for r in rows:
        ctx = f"Question: {r['question']}\nAnswer:"
        lls = handle.loglikelihood([(ctx, " " + c) for c in r["choices"]])
        out.append(max(range(len(lls)), key=lls.__getitem__) == r["label"])
    return out


@needs_lmeval
def test_multiple_choice_accuracy_matches_handle_loglikelihood(handle, mc_task_file):
    path, rows = mc_task_file
    task = _lmeval(task=str(path))
    assert task.primary_metric == "acc" and task.requires == {"loglikelihood"}
    result = task.evaluate(handle)
    correct = _mc_correct(handle, rows)
    assert result.n == len(rows)
    assert result.metrics["acc"] == pytest.approx(sum(correct) / len(rows))
    per_doc = {d["doc_id"]: d["acc"] for d in result.details}
    assert [bool(per_doc[i]) for i in range(len(rows))] == correct
    assert result.item_values("acc") == {i: float(c) for i, c in enumerate(correct)}  # per item, by index


@needs_lmeval
def test_limit_seed_subset_select_lmeval_samples(handle, mc_task_file):
    path, rows = mc_task_file
    task = _lmeval(task=str(path), limit=6, seed=3)
    order = list(range(len(rows)))
    random.Random(3).shuffle(order)
    chosen = order[:6]
    result = task.evaluate(handle)
    assert sorted(d["doc_id"] for d in result.details) == sorted(chosen)
    correct = _mc_correct(handle, [rows[i] for i in chosen])
    assert result.metrics["acc"] == pytest.approx(sum(correct) / 6)
    sub = task.evaluate(handle, subset=[0, 2])  # the same task object scores again
    assert sorted(d["doc_id"] for d in sub.details) == sorted([chosen[0], chosen[2]])
    assert sub.metrics["acc"] == pytest.approx((correct[0] + correct[2]) / 2)
    assert sub.item_values("acc") == {0: float(correct[0]), 2: float(correct[2])}


@needs_lmeval
def test_generate_until_exact_match_matches_handle_generate(handle, tmp_path):
    prompts = [f"Q: {q}?\nA:" for q in QUESTIONS[:6]]
    outs = handle.generate(prompts, max_new_tokens=6, stop=["\n"])
    # half the references are the model's own greedy output, so the expected score is not 0
    rows = [{"prompt": p, "answer": o if i % 2 == 0 else o + "x"} for i, (p, o) in enumerate(zip(prompts, outs))]
    _write(tmp_path / "gen.jsonl", rows)
    (tmp_path / "gen.yaml").write_text(GEN_YAML.format(data=tmp_path / "gen.jsonl"), encoding="utf-8")
    task = _lmeval(task=str(tmp_path / "gen.yaml"), batch_size=4)
    assert task.requires == {"generate"}
    result = task.evaluate(handle)
    expected = sum(o == r["answer"] for o, r in zip(outs, rows)) / len(rows)
    assert expected == pytest.approx(0.5)
    assert result.metrics["exact_match"] == pytest.approx(expected)
    assert [d["response"] for d in sorted(result.details, key=lambda d: d["doc_id"])] == outs


@needs_lmeval
def test_metric_option_and_errors(mc_task_file, tmp_path):
    path, _ = mc_task_file
    with pytest.raises(TaskError, match="metric='f1'.*reports \\['acc'\\]"):
        _ = _lmeval(task=str(path), metric="f1").metrics
    with pytest.raises(TaskError, match="does not exist"):
        _lmeval(task=str(tmp_path / "missing.yaml")).load()
    with pytest.raises(TaskError, match="set it there"):
        _lmeval(task=str(path), data="x.jsonl")


def test_missing_extra_names_the_install_command(monkeypatch):
    for mod in [m for m in sys.modules if m == "lm_eval" or m.startswith("lm_eval.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # makes `import lm_eval` fail
    task = _lmeval(task="arc_easy")  # building the task does not import lm_eval
    with pytest.raises(TaskError, match=r"pip install 'evomm\[lmeval\]'"):
        task.evaluate(object())


LL_YAML = """\
task: evomm_test_ll
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{answer}}}}"
target_delimiter: ""
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


@needs_lmeval
def test_loglikelihood_task_is_greedy_from_generation(handle, tmp_path):
    prompts = [f"Q: {q}?\nA:" for q in QUESTIONS[:4]]
    outs = handle.generate(prompts, max_new_tokens=3)
    # even rows: the greedy continuation (is_greedy), odd rows: something else
    rows = [{"prompt": p, "answer": o if i % 2 == 0 else "zq"} for i, (p, o) in enumerate(zip(prompts, outs))]
    _write(tmp_path / "ll.jsonl", rows)
    (tmp_path / "ll.yaml").write_text(LL_YAML.format(data=tmp_path / "ll.jsonl"), encoding="utf-8")
    result = _lmeval(task=str(tmp_path / "ll.yaml")).evaluate(handle)
    assert result.metrics["acc"] == pytest.approx(0.5)
    lls = handle.loglikelihood([(r["prompt"], r["answer"]) for r in rows])
    got = [d["response"][0] for d in sorted(result.details, key=lambda d: d["doc_id"])]
    assert got == pytest.approx(lls)
