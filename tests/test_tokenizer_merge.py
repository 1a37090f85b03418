"""``tokenizer_source: union`` and the ``tokenizer:`` block: evomm vs mergekit 0.1.5 and vs the rule.

Three tiny Llamas whose tokenizers share some tokens (at different ids) and differ in others are
regenerated from seeds (tests/golden/mergekit_tokenizer/make_golden.py, which also wrote
mergekit's outputs). mergekit numbers a union's new tokens in hash-map order, so rows are
compared by token, never by id.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from evomm.errors import ConfigError
from evomm.execute import merge_to_dir, open_models
from evomm.plan import build_plan, plan_frame
from evomm.plugins import get_plugins
from evomm.recipe import MergeRecipe
from tests.golden.mergekit_tokenizer.make_golden import (
    HERE,
    RECIPES,
    VOCABS,
    absolute,
    inputs_digest,
    make_inputs,
)
from tests.tiny_models import read_all

VOCAB_TENSORS = ("model.embed_tokens.weight", "lm_head.weight")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_inputs(tmp_path_factory.mktemp("tok_inputs"))
    want = (HERE / "mergekit" / "inputs.sha256").read_text().strip()
    assert inputs_digest(root) == want, "inputs differ from the goldens' (rerun make_golden.py)"
    return root


def _merge(name: str, inputs: Path, out: Path) -> Path:
    plugins = get_plugins()
    recipe = MergeRecipe.from_dict(absolute(RECIPES[name], inputs))
    cks = open_models(recipe, plugins, check=False)
    try:
        return merge_to_dir(build_plan(recipe, cks, plugins), cks, out, plugins, progress=False)
    finally:
        for ck in cks.values():
            ck.close()


def _vocab(model_dir: Path) -> dict[str, int]:
    from transformers import AutoTokenizer

    return dict(AutoTokenizer.from_pretrained(str(model_dir)).get_vocab())


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_same_rows_as_mergekit_token_by_token(name: str, inputs: Path, tmp_path: Path) -> None:
    out = _merge(name, inputs, tmp_path / "out")
    ours, theirs = read_all(out), load_file(str(HERE / "mergekit" / f"{name}.safetensors"))
    mine, mk = _vocab(out), json.loads((HERE / "mergekit" / f"{name}.vocab.json").read_text())
    assert sorted(mine) == sorted(mk)
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        assert ours[key].shape == theirs[key].shape, key
        if key not in VOCAB_TENSORS:
            assert torch.equal(ours[key], theirs[key]), key
            continue
        for token, i in mk.items():
            assert torch.equal(ours[key][mine[token]], theirs[key][i]), (key, token)
        # padding rows (pad_to_multiple_of): each parent's mean row, merged; the mean sums the rows
        # in id order, and mergekit's ids are another order: float32 rounding (seen: 9.3e-10)
        n = len(mk)
        torch.testing.assert_close(ours[key][n:], theirs[key][n:], rtol=1e-6, atol=1e-8)
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] == theirs["model.embed_tokens.weight"].shape[0]


@pytest.mark.parametrize("name", ["union_two", "union_linear"])
def test_union_row_of_every_token_is_the_parents_mix(name: str, inputs: Path, tmp_path: Path) -> None:
    """A linear union by the rule, on the parents' own rows: a token's row is sum(w * row) / sum(w)
    over the parents, a parent lacking the token standing in with the one parent that has it,
    else the base's row (when there is a base), else the mean of those that have it."""
    recipe = RECIPES[name]
    out = _merge(name, inputs, tmp_path / "out")
    merged, vocab = read_all(out), _vocab(out)
    weights = {m["model"]: m["parameters"]["weight"] for m in recipe["models"]}
    parents = {m: (read_all(inputs / m), _vocab(inputs / m)) for m in weights}
    for key in VOCAB_TENSORS:
        for token, i in vocab.items():
            have = {m: t[key][v[token]] for m, (t, v) in parents.items() if token in v}
            if len(have) == 1:
                fill = next(iter(have.values()))
            elif recipe.get("base_model") in have:
                fill = have[recipe["base_model"]]
            else:
                fill = sum(have.values()) / len(have)
            rows = {m: have.get(m, fill) for m in weights}
            want = sum(weights[m] * rows[m] for m in weights) / sum(weights.values())
            torch.testing.assert_close(merged[key][i], want, rtol=1e-6, atol=1e-8, msg=f"{key} {token}")
    words = {t for m in weights for t in [*VOCABS[m][0], *VOCABS[m][1]]}
    assert set(vocab) == words | {"<unk>", "<s>", "</s>"}


def test_tokenizer_config_errors(inputs: Path) -> None:
    r = absolute(RECIPES["tokenizer_block"], inputs)
    with pytest.raises(ConfigError, match="either `tokenizer_source` or a `tokenizer:` block"):
        MergeRecipe.from_dict({**r, "tokenizer_source": "union"})
    bad = json.loads(json.dumps(r))
    bad["tokenizer"]["tokens"]["sky"] = {"source": "nowhere"}
    recipe = MergeRecipe.from_dict(bad)
    plugins = get_plugins()
    cks = open_models(recipe, plugins, check=False)
    with pytest.raises(ConfigError, match=r"tokenizer\.tokens\['sky'\]\.source: 'nowhere' names no model"):
        build_plan(recipe, cks, plugins)
    with pytest.raises(ConfigError, match="pad_from_donor and a tokenizer"):
        MergeRecipe.from_dict({**absolute(RECIPES["union_linear"], inputs), "vocab": "pad_from_donor"})


def test_search_templates_refuse_merged_vocabularies(inputs: Path) -> None:
    """The in-memory (evolve) path reads parents unmapped: plan_frame says so instead of failing
    on a shape."""
    recipe = MergeRecipe.from_dict(absolute(RECIPES["union_linear"], inputs))
    plugins = get_plugins()
    with pytest.raises(ConfigError, match="a search template needs parents that share a vocabulary"):
        plan_frame(recipe, open_models(recipe, plugins, check=False), plugins)


def _model(root: Path, words: list[str], seed: int) -> Path:
    import torch as t
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.golden.mergekit_tokenizer.make_golden import _tokenizer

    tok = _tokenizer(words, [])
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    t.manual_seed(seed)
    LlamaForCausalLM(cfg).save_pretrained(root)
    tok.save_pretrained(root)
    return root


def test_tokenizer_block_generalises_pad_from_donor(tmp_path: Path) -> None:
    """A donor whose vocabulary extends the other's: `tokenizer: {source: <donor>}` (mergekit's
    re-layout) gives what `vocab: pad_from_donor` gives, bit for bit."""
    words = ["the", "cat", "dog"]
    small = _model(tmp_path / "small", words, 1)
    donor = _model(tmp_path / "donor", [*words, "<image>", "<pad2>"], 2)
    models = [{"model": str(small), "name": "small", "parameters": {"weight": 0.4}},
              {"model": str(donor), "name": "donor", "parameters": {"weight": 0.6}}]
    outs = []
    for extra in ({"tokenizer_source": "donor", "vocab": "pad_from_donor"}, {"tokenizer": {"source": "donor"}}):
        plugins = get_plugins()
        recipe = MergeRecipe.from_dict({"merge_method": "linear", "dtype": "float32", "models": models, **extra})
        cks = open_models(recipe, plugins)
        outs.append(read_all(merge_to_dir(build_plan(recipe, cks, plugins), cks, tmp_path / f"o{len(outs)}", plugins,
                                          progress=False)))
    assert sorted(outs[0]) == sorted(outs[1])
    assert all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])
    assert outs[1]["lm_head.weight"].shape[0] == 8 and _vocab(tmp_path / "o1") == _vocab(donor)
