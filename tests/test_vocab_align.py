"""Vocabulary alignment (recipe ``vocab: {mode: pad_from_donor}``): a tiny LLaVA whose language
model has ``V + K`` embedding/head rows (an added ``<image>`` token plus padding rows, as llava-hf's
conversions) merged with tiny Llama parents of ``V`` rows that share its tokenizer's first ids.

References are independent of evomm's reader and operators: tensors come from transformers'
``from_pretrained`` state dicts, and the expected merges are written out here (task arithmetic and
TIES at density 1 are elementwise formulas).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from evomm.errors import ConfigError, IncompatibleModelsError
from evomm.execute import InMemoryMerger, merge_to_dir, open_models
from evomm.layout import ModuleKind, TensorInfo
from evomm.plan import build_plan, vocab_pad_rows
from evomm.plugins import get_plugins
from evomm.recipe import MergeRecipe
from tests.tiny_models import make_tiny_model, perturb_model, tiny_config, train_tokenizer

transformers = pytest.importorskip("transformers")
from transformers import (  # noqa: E402
    CLIPVisionConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
)

K = 3  # extra rows of the VLM: <image> plus two padding rows
VOCAB_NAMES = ("model.embed_tokens.weight", "lm_head.weight")


def make_vlm(out: Path, base_dir: Path, rows: int) -> Path:
    """A tiny LLaVA (``rows`` vocabulary rows) whose language model is the base LLM plus noise."""
    torch.set_num_threads(1)
    tok = copy.deepcopy(train_tokenizer())
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=32, patch_size=8, projection_dim=32,
    )  # fmt: skip
    cfg = LlavaConfig(
        vision_config=vision, text_config=tiny_config("llama", vocab_size=rows),
        image_token_index=tok.convert_tokens_to_ids("<image>"), image_seq_length=16,
        vision_feature_select_strategy="default", vision_feature_layer=-1,
    )  # fmt: skip
    torch.manual_seed(7)
    model = LlavaForConditionalGeneration(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.05)
        base = LlamaForCausalLM.from_pretrained(base_dir).state_dict()
        lm = model.model.language_model.state_dict()
        for name, t in lm.items():
            src = base["model." + name]
            t[: src.shape[0]] = src + 0.02 * torch.randn(src.shape)
        model.model.language_model.load_state_dict(lm)
        head = base["lm_head.weight"]
        model.lm_head.weight[: head.shape[0]] = head + 0.02 * torch.randn(head.shape)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vocab")
    v = len(train_tokenizer())
    base = make_tiny_model(root / "base", "llama", seed=0, vocab_size=v)
    out = {"base": base, "llm": perturb_model(base, root / "llm", seed=1, scale=0.02)}
    out["vlm"] = make_vlm(root / "vlm", base, v + K)
    # same weights, but a tokenizer with two shared ids swapped
    bad = out["bad_tok"] = Path(shutil.copytree(out["llm"], root / "bad_tok"))
    tj = json.loads((bad / "tokenizer.json").read_text())
    vocab = tj["model"]["vocab"]
    a, b = (t for t, i in vocab.items() if i in (40, 41))
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (bad / "tokenizer.json").write_text(json.dumps(tj))
    return out


@pytest.fixture(scope="module")
def plugins():
    return get_plugins()


@pytest.fixture(scope="module")
def states(zoo) -> dict[str, dict[str, torch.Tensor]]:
    """Canonical name -> tensor of each parent, read by transformers."""
    vlm = LlavaForConditionalGeneration.from_pretrained(zoo["vlm"]).state_dict()
    out = {"vlm": {"lm_head.weight": vlm["lm_head.weight"]}}
    out["vlm"].update({k.replace("model.language_model.", "model."): v for k, v in vlm.items()
                       if k.startswith("model.language_model.")})  # fmt: skip
    out["vlm_full"] = vlm
    for alias in ("base", "llm"):
        out[alias] = LlamaForCausalLM.from_pretrained(zoo[alias]).state_dict()
    return out


def recipe(zoo, method: str, mode: str | None = "pad_from_donor", llm_dir: str = "llm", donor: str = "vlm",
           **params) -> MergeRecipe:  # fmt: skip
    data = {
        "merge_method": method,
        "base_model": str(zoo["base"]),
        "models": [
            {"model": str(zoo["vlm"]), "name": "vlm", "parameters": params.get("vlm", {"weight": 0.6})},
            {"model": str(zoo[llm_dir]), "name": "llm", "parameters": params.get("llm", {"weight": 0.5})},
        ],
        "tokenizer_source": donor,
        "dtype": "float32",
    }
    if mode is not None:
        data["vocab"] = {"mode": mode}
    return MergeRecipe.from_dict(data)


def run_merge(rec: MergeRecipe, plugins, out: Path):
    cks = open_models(rec, plugins)
    try:
        plan = build_plan(rec, cks, plugins)
        merge_to_dir(plan, cks, out, plugins, progress=False)
        return plan
    finally:
        for ck in cks.values():
            ck.close()


def merged_lm(out: Path) -> dict[str, torch.Tensor]:
    return LlavaForConditionalGeneration.from_pretrained(out).state_dict()


def _lm(state: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    return state[name if name == "lm_head.weight" else name.replace("model.", "model.language_model.", 1)]


# ------------------------------------------------------------------------------------------------


def test_strict_mode_names_both_sizes(zoo, plugins):
    v = len(train_tokenizer())
    for mode in (None, "strict"):
        with pytest.raises(IncompatibleModelsError) as err:
            open_models(recipe(zoo, "task_arithmetic", mode=mode), plugins)
        msg = str(err.value)
        assert f"vocabulary size {v + K} " in msg and f"vocabulary size {v} " in msg
        assert "pad_from_donor" in msg  # names the fix


def test_task_arithmetic_pads_from_the_donor(zoo, plugins, states, tmp_path):
    v = len(train_tokenizer())
    plan = run_merge(recipe(zoo, "task_arithmetic"), plugins, tmp_path / "out")
    got = merged_lm(tmp_path / "out")  # loads with LlavaForConditionalGeneration
    for name in VOCAB_NAMES:
        step = next(s for s in plan.steps if s.name == name)
        assert step.pad == (("llm", v), ("base", v))
        vlm, llm, base = states["vlm"][name], states["llm"][name], states["base"][name]
        want = base + 0.6 * (vlm[:v] - base) + 0.5 * (llm - base)
        merged = _lm(got, name)
        assert merged.shape == vlm.shape
        torch.testing.assert_close(merged[:v], want, rtol=0, atol=1e-6)
        assert torch.equal(merged[v:], vlm[v:])  # the extra ids are the VLM's rows, bit for bit
    # a block tensor merges as usual
    name = "model.layers.2.mlp.up_proj.weight"
    want = states["base"][name] + 0.6 * (states["vlm"][name] - states["base"][name]) + 0.5 * (
        states["llm"][name] - states["base"][name]
    )
    torch.testing.assert_close(_lm(got, name), want, rtol=0, atol=1e-6)
    # vision tower and projector untouched
    donor = states["vlm_full"]
    frozen = [k for k in donor if k.startswith(("model.vision_tower.", "model.multi_modal_projector."))]
    assert frozen and all(torch.equal(got[k], donor[k]) for k in frozen)
    # only the vocabulary steps record padding, and the padding is part of the digest
    assert {s.name for s in plan.steps if s.pad} == set(VOCAB_NAMES)
    assert all("pad" not in s for s in plan.to_dict()["steps"] if s["name"] not in VOCAB_NAMES)
    unpadded = dataclasses.replace(plan, steps=tuple(dataclasses.replace(s, pad=()) for s in plan.steps))
    assert unpadded.digest() != plan.digest()
    from evomm.cli.plan import format_plan

    assert f"llm: {v} rows" in format_plan(plan)


def test_ties_first_rows_follow_the_formula(zoo, plugins, states, tmp_path):
    v = len(train_tokenizer())
    w = {"vlm": 0.7, "llm": 0.4}
    rec = recipe(zoo, "ties", vlm={"weight": w["vlm"], "density": 1.0}, llm={"weight": w["llm"], "density": 1.0})
    run_merge(rec, plugins, tmp_path / "out")
    got = merged_lm(tmp_path / "out")
    for name in VOCAB_NAMES:
        base = states["base"][name]
        deltas = [w["vlm"] * (states["vlm"][name][:v] - base), w["llm"] * (states["llm"][name] - base)]
        sign = torch.where(sum(deltas) >= 0, 1.0, -1.0)
        agree = [(d * sign > 0).float() for d in deltas]
        mixed = sum(d * a for d, a in zip(deltas, agree))
        div = w["vlm"] * agree[0] + w["llm"] * agree[1]
        want = base + mixed / torch.where(div == 0, torch.ones_like(div), div)
        merged = _lm(got, name)
        torch.testing.assert_close(merged[:v], want, rtol=0, atol=1e-6)
        assert torch.equal(merged[v:], states["vlm"][name][v:])


def test_in_memory_merger_matches_merge_to_dir(zoo, plugins, tmp_path):
    rec = recipe(zoo, "dare_ties", vlm={"weight": 0.6, "density": 0.5}, llm={"weight": 0.5, "density": 0.5})
    plan = run_merge(rec, plugins, tmp_path / "out")
    on_disk = merged_lm(tmp_path / "out")
    cks = open_models(rec, plugins)
    try:
        merger = InMemoryMerger(cks, "vlm", plugins)
        model = merger.apply(build_plan(rec, cks, plugins))
        in_memory = model.state_dict()
    finally:
        for ck in cks.values():
            ck.close()
    assert any(s.pad for s in plan.steps)
    assert set(in_memory) == set(on_disk)
    for k in on_disk:
        assert torch.equal(in_memory[k], on_disk[k]), k


def test_tokenizer_disagreement_names_the_id(zoo, plugins):
    rec = recipe(zoo, "task_arithmetic", llm_dir="bad_tok")
    cks = open_models(rec, plugins)  # shapes allow padding ...
    try:
        with pytest.raises(IncompatibleModelsError, match=r"disagree on shared id 40 "):
            build_plan(rec, cks, plugins)  # ... but the shared ids do not mean the same tokens
    finally:
        for ck in cks.values():
            ck.close()


def test_donor_must_have_the_largest_vocabulary(zoo, plugins):
    v = len(train_tokenizer())
    with pytest.raises(IncompatibleModelsError, match=rf"{v + K}.*largest vocabulary|largest vocabulary"):
        open_models(recipe(zoo, "task_arithmetic", donor="llm"), plugins)
    # only the vocabulary axis of embedding/head tensors may differ
    donor = TensorInfo("model.embed_tokens.weight", "e", (v + K, 32), "float32", ModuleKind.EMBEDDING)
    assert vocab_pad_rows(donor, dataclasses.replace(donor, shape=(v, 32)), "vlm", "llm") == v
    with pytest.raises(IncompatibleModelsError, match=r"\(10, 16\).*first\) axis"):
        vocab_pad_rows(donor, dataclasses.replace(donor, shape=(10, 16)), "vlm", "llm")
    norm = TensorInfo("model.norm.weight", "n", (32,), "float32", ModuleKind.NORM)
    with pytest.raises(IncompatibleModelsError, match=r"kind 'norm'"):
        vocab_pad_rows(norm, dataclasses.replace(norm, shape=(16,)), "vlm", "llm")
    with pytest.raises(IncompatibleModelsError, match=rf"{v + K + 1} rows > {v + K}"):
        vocab_pad_rows(donor, dataclasses.replace(donor, shape=(v + K + 1, 32)), "vlm", "llm")


def test_recipe_key_validation():
    base = {"merge_method": "linear", "models": [{"model": "a"}]}
    assert MergeRecipe.from_dict(base).vocab.mode == "strict"
    assert MergeRecipe.from_dict({**base, "vocab": "pad_from_donor"}).vocab.mode == "pad_from_donor"
    with pytest.raises(ConfigError, match=r"vocab.mode"):
        MergeRecipe.from_dict({**base, "vocab": {"mode": "truncate"}})
    with pytest.raises(ConfigError, match=r"vocab.rows: unknown key.*mode"):
        MergeRecipe.from_dict({**base, "vocab": {"mode": "strict", "rows": 3}})


def test_evolve_template_passes_the_mode_through(zoo, plugins, tmp_path):
    import numpy as np

    from evomm.evolve_recipe import parse_recipe
    from evomm.runner import build_space

    v = len(train_tokenizer())
    data = {
        "parents": [{"name": "vlm", "path": str(zoo["vlm"]), "adapter": "llava"},
                    {"name": "llm", "path": str(zoo["llm"])}],
        "base_model": {"name": "base", "path": str(zoo["base"])},
        "merge": {"method": "task_arithmetic", "tokenizer_source": "vlm", "vocab": {"mode": "pad_from_donor"},
                  "parameters": {"weight": {"evolve": {"low": 0.0, "high": 1.0}, "granularity": "per_model"}}},
        "objectives": [{"name": "x", "task": "toy_ja_math"}],
        "algorithm": {"name": "random", "pop_size": 2},
        "budget": {"evaluations": 2},
    }  # fmt: skip
    space = build_space(parse_recipe(data), 0, tmp_path, plugins, [])
    try:
        cand = space.decode(np.full(space.dim, 0.5))
        assert space.recipe_for(np.full(space.dim, 0.5))["vocab"] == {"mode": "pad_from_donor"}
        step = next(s for s in cand.plan.steps if s.name == "lm_head.weight")
        assert step.pad == (("llm", v), ("base", v))
    finally:
        space.close()
    data["merge"].pop("vocab")
    with pytest.raises(IncompatibleModelsError, match=rf"vocabulary size {v + K} "):
        build_space(parse_recipe(data), 0, tmp_path, plugins, [])
