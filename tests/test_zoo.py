"""The toy zoo: the micro build, its models and data, determinism, scoring."""

from __future__ import annotations

import json
import random

import pytest
import torch
from evomm_zoo import build_zoo, default_zoo_dir, read_zoo_json
from evomm_zoo.build import TEXT_MODELS, is_complete, read_jsonl
from evomm_zoo.lexicon import charset, name_pool
from evomm_zoo.recipe import RECIPE_VERSION, text_recipe
from evomm_zoo.scoring import score_equation_only, score_equation_result, score_outputs
from evomm_zoo.textdata import TEXT_TASKS, MixStream, task_rows

# ------------------------------------------------------------------ the built micro zoo


def test_micro_zoo_layout_and_zoo_json(micro_zoo):
    info = read_zoo_json(micro_zoo)
    assert info["complete"] and info["scale"] == "micro" and info["seed"] == 0
    assert info["recipe_version"] == RECIPE_VERSION
    for m in TEXT_MODELS:
        assert (micro_zoo / "models" / m / "model.safetensors").is_file()
        assert (micro_zoo / "models" / m / "tokenizer.json").is_file()
        assert set(info["scores"][m]) >= set(TEXT_TASKS)
        for s in info["scores"][m].values():
            assert s["n"] == 30 and 0 <= s["strict_count"] <= s["n"]
    assert info["recipe"]["text"]["base"]["steps"] == text_recipe("micro").base.steps
    assert {"base", "ja", "math"} <= set(info["curves"])
    for task in TEXT_TASKS:
        for split in ("train", "dev", "test"):
            assert (micro_zoo / "data" / task / f"{split}.jsonl").is_file()


def test_micro_zoo_models_load_with_auto_classes(micro_zoo):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(micro_zoo / "tokenizer")
    text = "問: たろうはりんごを5こもっています。 答: 5+4=9"
    ids = tok(text).input_ids
    assert ids[0] == tok.bos_token_id and tok.unk_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert len(ids) == len(text) + 1  # one id per character, plus <s>
    for m in TEXT_MODELS:
        model = AutoModelForCausalLM.from_pretrained(micro_zoo / "models" / m)
        assert model.config.tie_word_embeddings is False
        assert model.config.vocab_size == len(tok)
        logits = model(torch.tensor([ids])).logits
        assert logits.shape == (1, len(ids), len(tok))


def test_parents_differ_from_base_only_outside_frozen_tensors(micro_zoo):
    from safetensors.torch import load_file

    base = load_file(micro_zoo / "models" / "base" / "model.safetensors")
    for parent in ("ja", "math"):
        sd = load_file(micro_zoo / "models" / parent / "model.safetensors")
        assert set(sd) == set(base)
        assert torch.equal(sd["lm_head.weight"], base["lm_head.weight"])
        assert torch.equal(sd["model.embed_tokens.weight"], base["model.embed_tokens.weight"])
        assert not torch.equal(
            sd["model.layers.0.mlp.up_proj.weight"], base["model.layers.0.mlp.up_proj.weight"]
        )


def test_micro_zoo_loads_through_the_hf_adapter(micro_zoo):
    from evomm.adapters import ModelRef
    from evomm.plugins import load_plugins

    plugins = load_plugins([])
    if "hf-causal-lm" not in plugins.adapters:
        pytest.skip("the hf-causal-lm adapter is not installed")
    adapter = plugins.adapters.get("hf-causal-lm")()
    ckpt = adapter.open(ModelRef("ja", str(micro_zoo / "models" / "ja")))
    assert ckpt.num_layers == 3
    model = ckpt.load_model()
    from transformers import AutoModelForCausalLM

    want = AutoModelForCausalLM.from_pretrained(micro_zoo / "models" / "ja").state_dict()
    got = model.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want if k in got)


def test_build_zoo_reuses_a_complete_zoo(micro_zoo):
    stamp = (micro_zoo / "zoo.json").stat().st_mtime_ns
    info = read_zoo_json(micro_zoo)
    assert build_zoo("micro", out=micro_zoo, seed=0, parts=info["parts"], progress=False) == micro_zoo
    assert (micro_zoo / "zoo.json").stat().st_mtime_ns == stamp
    assert not is_complete(micro_zoo, "micro", 1, ("text",))  # another seed is not this zoo
    assert not is_complete(micro_zoo, "demo", 0, ("text",))


def test_default_zoo_dir_uses_evomm_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("EVOMM_CACHE", str(tmp_path))
    assert default_zoo_dir("demo", 3) == tmp_path / "zoo" / f"demo-v{RECIPE_VERSION}-s3"


# ------------------------------------------------------------------ determinism


def test_base_training_is_deterministic_and_matches_the_build(micro_zoo):
    """Re-train the micro base with the recipe: same seed, bit-identical tensors."""
    from evomm_zoo.text import train_base
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    recipe = text_recipe("micro", seed=0)
    tok = AutoTokenizer.from_pretrained(micro_zoo / "tokenizer")
    model, _ = train_base(tok, None, recipe.base, recipe.arch, progress=False)
    built = load_file(micro_zoo / "models" / "base" / "model.safetensors")
    mine = model.state_dict()
    assert set(built) <= set(mine)
    assert all(torch.equal(built[k], mine[k]) for k in built)
    other_cfg = type(recipe.base)(**{**recipe.base.__dict__, "seed": 1})
    other, _ = train_base(tok, None, other_cfg, recipe.arch, progress=False)
    assert not torch.equal(other.state_dict()["lm_head.weight"], built["lm_head.weight"])


def test_data_is_deterministic_and_seeded():
    assert task_rows("ja_math", "dev", 20, seed=0) == task_rows("ja_math", "dev", 20, seed=0)
    assert task_rows("ja_math", "dev", 20, seed=0) != task_rows("ja_math", "dev", 20, seed=1)
    a, b = MixStream({"story_ja": 1.0}, seed=0), MixStream({"story_ja": 1.0}, seed=0)
    assert a.batch(5) == b.batch(5)


# ------------------------------------------------------------------ data


def test_splits_do_not_overlap(micro_zoo):
    for task in TEXT_TASKS:
        splits = {s: read_jsonl(micro_zoo / "data" / task / f"{s}.jsonl") for s in ("train", "dev", "test")}
        names = {s: {r["name"] for r in rows} for s, rows in splits.items()}
        prompts = {s: {r["prompt"] for r in rows} for s, rows in splits.items()}
        for x, y in (("train", "dev"), ("train", "test"), ("dev", "test")):
            assert names[x].isdisjoint(names[y]), (task, x, y)
            assert prompts[x].isdisjoint(prompts[y]), (task, x, y)
        for rows in splits.values():
            assert len({r["prompt"] for r in rows}) == len(rows)  # no duplicate within a split


def test_name_pools_are_disjoint_and_training_uses_train_names():
    pools = name_pool(0)
    for x, y in (("train", "dev"), ("train", "test"), ("dev", "test")):
        assert {n.ja for n in pools[x]}.isdisjoint(n.ja for n in pools[y])
        assert {n.en for n in pools[x]}.isdisjoint(n.en for n in pools[y])
    held_out = [n.ja for n in pools["dev"] + pools["test"]]
    texts = [e.prompt + e.completion for e in MixStream({"story_ja": 1, "ja_problem": 1}, 0).batch(300)]
    assert not any(text.startswith(("問: " + n + "は", n + "は")) for text in texts for n in held_out)


def test_rows_are_consistent_and_within_the_charset():
    chars = set(charset())
    for task in TEXT_TASKS:
        for r in task_rows(task, "test", 50, seed=0):
            want = r["a"] + r["b"] if r["op"] == "+" else r["a"] - r["b"]
            assert r["result"] == want and 1 <= r["a"] <= 9 and 1 <= r["b"] <= 9
            assert set(r["prompt"] + r["answer"]) <= chars
            assert r["answer"] == (r["equation"] if task == "ja_skill" else f"{r['equation']}={want}")
            json.dumps(r)


def test_ja_prompts_say_in_japanese_what_en_prompts_say_in_english():
    rng = random.Random(0)
    ja = task_rows("ja_math", "test", 5, seed=rng.randint(0, 9))
    assert all(r["prompt"].startswith("問: ") and r["prompt"].endswith(" 答: ") for r in ja)
    en = task_rows("en_math", "test", 5, seed=0)
    assert all(r["prompt"].startswith("Q: ") and r["prompt"].endswith(" A: ") for r in en)


# ------------------------------------------------------------------ scoring

ROW = {"a": 7, "b": 3, "op": "-", "result": 4}


@pytest.mark.parametrize(
    "output, strict, loose",
    [
        ("7-3=4", True, True),
        ("7-3=4 and more", True, True),
        (" 7 - 3 = 4", True, True),
        ("7-3=41", False, False),  # a longer number is a different number
        ("3+1=4", False, True),  # lucky result, wrong equation: loose only
        ("7+3=10", False, False),
        ("7-3", False, False),
        ("7-3=5", False, False),
        ("x 7-3=4", False, True),  # must begin with the equation
        ("", False, False),
    ],
)
def test_score_equation_result(output, strict, loose):
    assert score_equation_result(output, ROW) == {"strict": strict, "loose": loose}


@pytest.mark.parametrize(
    "output, strict, loose",
    [
        ("7-3", True, True),
        ("7-3=4", True, True),
        ("7-3いまなん", True, True),
        ("7+3", False, True),  # operator wrong, operands right
        ("7-31", False, False),
        ("3-7", False, False),
        ("7", False, False),
    ],
)
def test_score_equation_only(output, strict, loose):
    assert score_equation_only(output, ROW) == {"strict": strict, "loose": loose}


def test_score_outputs_counts_and_fractions():
    rows = [ROW, ROW, ROW, ROW]
    got = score_outputs("ja_math", ["7-3=4", "1+3=4", "nothing", "7-3=4"], rows)
    assert (got["strict_count"], got["loose_count"], got["n"]) == (2, 3, 4)
    assert got["strict"] == 0.5 and got["loose"] == 0.75


# ------------------------------------------------------------------ CLI


def test_cli_zoo_info_prints_the_scores_table(micro_zoo, capsys):
    from evomm.cli import main

    assert main(["zoo", "info", "--scale", "micro", "--out", str(micro_zoo)]) == 0
    out = capsys.readouterr().out
    info = read_zoo_json(micro_zoo)
    for model in TEXT_MODELS:
        row = next(line for line in out.splitlines() if line.strip().startswith(model + " "))
        cells = row.split()[1:]
        for task in TEXT_TASKS:
            s = info["scores"][model][task]
            assert f"{s['strict_count']}/{s['loose_count']}" in cells


def test_cli_zoo_info_without_a_zoo_says_how_to_build(tmp_path, capsys):
    from evomm.cli import main

    assert main(["zoo", "info", "--out", str(tmp_path / "none")]) == 2
    assert "evomm zoo build" in capsys.readouterr().err
