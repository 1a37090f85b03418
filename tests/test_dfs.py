"""Data-flow-space merging: path decoding, execution without copies, KV cache, export, recipes.

References are independent of evomm_dfs's forward: A's own forward, and transformers' own
LlamaForCausalLM built with the path's layers copied in order (scalings added by forward-pre
hooks on its layers).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from evomm_dfs.export import dfs_recipe, export_dfs, frankenmerge_model
from evomm_dfs.kind import DFS_KIND
from evomm_dfs.model import DFSForCausalLM, _CacheSlot, unique_storage
from evomm_dfs.path import DFSLayout, DFSPath, PathStep
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from evomm.errors import ConfigError
from tests.tiny_models import make_tiny_model, train_tokenizer

VOCAB = 64


def _model(seed: int, layers: int = 3) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      initializer_range=0.2, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def parents() -> tuple[LlamaForCausalLM, LlamaForCausalLM]:
    return _model(0), _model(1)


def _path(*steps: tuple[int, int, float]) -> DFSPath:
    return DFSPath(tuple(PathStep(p, layer, s) for p, layer, s in steps), ("a", "b"))


REPEATED = _path((0, 0, 1.0), (1, 1, 0.8), (1, 1, 1.3), (0, 1, 1.0), (1, 1, 0.9), (0, 2, 1.0))


def _reference(a: LlamaForCausalLM, b: LlamaForCausalLM, path: DFSPath) -> LlamaForCausalLM:
    """transformers' own Llama with the path's layers copied in order; scalings by pre-hooks."""
    unit = DFSPath(tuple(PathStep(s.parent, s.layer, 1.0) for s in path.steps), path.parents)
    ref = frankenmerge_model(a, b, unit)
    for layer, step in zip(ref.model.layers, path.steps):
        if step.scale != 1.0:
            layer.register_forward_pre_hook(
                lambda mod, args, kwargs, s=step.scale: ((args[0] * s, *args[1:]), kwargs), with_kwargs=True
            )
    return ref


def _ids(batch: int = 2, length: int = 9, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (batch, length), generator=g)


# ------------------------------------------------------------------------------------------ layout


def test_layout_gene_counts_by_hand() -> None:
    # r = 1, A = B = 2 layers: slots a0 a1 b0 b1 -> 3 indicator genes (slot 0 fixed)
    lay = DFSLayout(2, 2, repeats=1, max_path_length=6, scaling="matrix")
    assert lay.num_slots == 4 and len(lay.indicator_slots()) == 3
    # sequence a0 a1 b0 b1 (+ a1 at the end): ordered pairs i<j in that list, deduplicated
    seq = [0, 1, 2, 3, 1]
    expected = {(seq[i], seq[j]) for i in range(5) for j in range(i + 1, 5)}
    assert set(lay.scale_keys()) == expected and len(lay.scale_keys()) == len(expected) == 9
    # r >= 2: every ordered pair can occur -> M * M genes
    assert len(DFSLayout(2, 2, 2, 6, "matrix").scale_keys()) == 16
    assert len(DFSLayout(2, 3, 2, 6, "destination").scale_keys()) == 5
    assert DFSLayout(2, 2, 3, 6, "none").scale_keys() == []
    assert DFSLayout(3, 3, 3, 9).num_slots == 18


def test_decode_path_scalings_and_repair() -> None:
    lay = DFSLayout(3, 2, repeats=2, max_path_length=5, scaling="matrix")
    keys = lay.scale_keys()
    scales = [1.0 + 0.01 * k for k in range(len(keys))]
    inds = [-1.0] * len(lay.indicator_slots())
    # slots: 0 a0 1 a1 2 a2 3 b0 4 b1 | 5 a0 6 a1 7 a2 8 b0 9 b1 ; indicator i is slot i+1
    inds[3 - 1], inds[9 - 1] = 0.5, 0.1  # b0 (first repeat), b1 (second repeat)
    p = lay.decode(inds, scales)
    assert [(s.parent, s.layer) for s in p.steps] == [(0, 0), (1, 0), (1, 1), (0, 2)]
    ids = [0, 3, 4, 2]
    for k in range(1, 4):
        assert p.steps[k].scale == pytest.approx(scales[keys.index((ids[k - 1], ids[k]))])
    assert p.steps[0].scale == 1.0
    # too many on: max_path_length 5 leaves room for 3 middle layers, the strongest are kept
    inds2 = [0.1 * (k + 1) for k in range(len(inds))]  # increasing: the last 3 slots win
    p2 = lay.decode(inds2, scales)
    assert len(p2) == 5
    assert [(s.parent, s.layer) for s in p2.steps[1:4]] == [lay.slot_layer(s) for s in (7, 8, 9)]
    with pytest.raises(ConfigError):
        lay.decode(inds[:-1], scales)


def test_identity_indicators_decode_to_a() -> None:
    lay = DFSLayout(4, 4, repeats=2, max_path_length=8)
    p = lay.decode(lay.identity_indicators(-0.25, 0.25), [1.0] * len(lay.scale_keys()))
    assert [(s.parent, s.layer) for s in p.steps] == [(0, i) for i in range(4)]


def test_path_recipe_round_trip() -> None:
    d = REPEATED.to_dict()
    assert DFSPath.from_dict(d) == REPEATED and DFSPath.from_dict(d).digest() == REPEATED.digest()
    with pytest.raises(ConfigError, match="not one of the parents"):
        DFSPath.from_dict({"parents": ["a", "b"], "path": [{"model": "c", "layer": 0}]})


def test_dfs_recipe_parents_are_merge_recipe_model_entries() -> None:
    from evomm_dfs.recipe import parse_dfs_recipe

    from evomm.adapters import ModelRef

    base = {"merge_method": "dfs", "path": [{"model": "a", "layer": 0}]}
    rec = parse_dfs_recipe(base | {"models": [{"model": "x", "name": "a", "allow_pickle": True},
                                               {"model": "y", "name": "b", "revision": "r"}]})
    assert rec.refs() == [ModelRef("a", "x", allow_pickle=True), ModelRef("b", "y", revision="r")]
    with pytest.raises(ConfigError, match=r"models\[1\]\.name: a DFS parent needs a name"):
        parse_dfs_recipe(base | {"models": [{"model": "x", "name": "a"}, {"model": "y"}]})
    with pytest.raises(ConfigError, match=r"models\[0\]\.parameters: a DFS parent takes no"):
        parse_dfs_recipe(base | {"models": [{"model": "x", "name": "a", "parameters": {"weight": 1}},
                                            {"model": "y", "name": "b"}]})


def test_dfs_is_a_search_space_kind_with_its_parameters_not_an_operator() -> None:
    from evomm.plugins import load_plugins

    plugins = load_plugins()
    assert plugins.spaces.get("dfs") is DFS_KIND and plugins.spaces.owner("dfs") == "evomm_dfs"
    assert "dfs" not in plugins.operators
    assert [p.name for p in DFS_KIND.params] == ["include", "scale", "repeats", "max_path_length"]
    assert DFS_KIND.build is not None


# ------------------------------------------------------------------------------------------ execution


def test_a_path_with_unit_scales_gives_a_logits(parents) -> None:
    a, b = parents
    child = DFSForCausalLM.from_parents(a, b, _path(*((0, i, 1.0) for i in range(3)))).eval()
    ids = _ids()
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding in row 0
    with torch.no_grad():
        assert torch.allclose(child(ids).logits, a(ids).logits, atol=1e-6)
        assert torch.allclose(child(ids, attention_mask=mask).logits, a(ids, attention_mask=mask).logits, atol=1e-6)


def test_scaled_repeated_path_matches_transformers_reference(parents) -> None:
    a, b = parents
    child = DFSForCausalLM.from_parents(a, b, REPEATED).eval()
    ref = _reference(a, b, REPEATED)
    ids = _ids()
    with torch.no_grad():
        got, want = child(ids).logits, ref(ids).logits
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, a(ids).logits, atol=1e-3)  # the path changes the model


def test_repeated_layer_shares_parameters(parents) -> None:
    a, b = parents
    child = DFSForCausalLM.from_parents(a, b, REPEATED)
    assert child.model.layers[child.config.path_layers[1]] is b.model.layers[1]
    assert child.config.path_layers[1] == child.config.path_layers[2] == child.config.path_layers[4]
    assert len(child.model.layers) == 4  # a0, a1, a2, b1: each once
    before = unique_storage([a, b])
    assert unique_storage([a, b, child]) == before
    assert unique_storage([child]) < unique_storage([_reference(a, b, REPEATED)])


def test_b_layers_after_a_embedding_run_and_generate(tmp_path) -> None:
    from evomm_hf.handle import HFCausalLMHandle

    tok = train_tokenizer()
    a = AutoModelForCausalLM.from_pretrained(make_tiny_model(tmp_path / "a", seed=0)).eval()
    b = AutoModelForCausalLM.from_pretrained(make_tiny_model(tmp_path / "b", seed=1)).eval()
    n = len(b.model.layers)
    path = DFSPath((PathStep(0, 0),) + tuple(PathStep(1, i, 0.9) for i in range(n)) + (PathStep(0, n - 1),))
    child = DFSForCausalLM.from_parents(a, b, path).eval()
    out = HFCausalLMHandle(child, tok).generate(["One plus two is", "東京は"], max_new_tokens=5)
    assert len(out) == 2 and all(isinstance(t, str) for t in out)
    ids = torch.tensor([tok("One plus two is")["input_ids"]])
    with torch.no_grad():
        gen = child.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert gen.shape == (1, ids.shape[1] + 5)
    # same decoding through the handle (which batches with left padding)
    assert out[0] == tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True)


@pytest.mark.parametrize("cache_kw", ["past_key_values", "cache"])  # old and new transformers names
def test_kv_cache_generation_equals_no_cache(parents, monkeypatch, cache_kw) -> None:
    a, b = parents
    child = DFSForCausalLM.from_parents(a, b, REPEATED).eval()
    ids = _ids(2, 6, seed=3)
    kw = dict(max_new_tokens=10, do_sample=False, pad_token_id=0, eos_token_id=None)
    with torch.no_grad():
        with_cache = child.generate(ids, use_cache=True, **kw)
        without = child.generate(ids, use_cache=False, **kw)
        full = child(with_cache).logits  # one pass over the whole sequence, no cache
        # step-by-step with a cache: logits of every position equal the full pass
        out = child(with_cache[:, :6], use_cache=True)
        cache, steps = out.past_key_values, [out.logits]
        for t in range(6, with_cache.shape[1]):
            o = child(with_cache[:, t : t + 1], use_cache=True, **{cache_kw: cache})
            steps.append(o.logits)
    assert torch.equal(with_cache, without)
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)
    assert len(cache.layers) == len(REPEATED)  # one cache slot per path position
    # the test can fail: a cache keyed by the layer's own index (repeats collide) diverges
    monkeypatch.setattr(_CacheSlot, "update", lambda self, k, v, idx, *a, **kw: self._cache.update(k, v, idx, *a, **kw))
    with torch.no_grad():
        out = child(with_cache[:, :6], use_cache=True)
        bad = child(with_cache[:, 6:7], past_key_values=out.past_key_values, use_cache=True).logits
    assert not torch.allclose(bad, full[:, 6:7], atol=1e-4)


def test_two_different_caches_are_refused(parents) -> None:
    child = DFSForCausalLM.from_parents(*parents, REPEATED).eval()
    with torch.no_grad():
        first = child(_ids(1, 4), use_cache=True).past_key_values
        second = child(_ids(1, 4, seed=1), use_cache=True).past_key_values
        with pytest.raises(ValueError, match="not both"):
            child(_ids(1, 1), cache=first, past_key_values=second, use_cache=True)


# ------------------------------------------------------------------------------------------ export


@pytest.mark.parametrize("scaled", [False, True])
def test_export_reloads_with_in_memory_logits(parents, tmp_path, scaled) -> None:
    import evomm_dfs  # noqa: F401  (registers the Auto classes)

    a, b = parents
    path = REPEATED if scaled else DFSPath(tuple(PathStep(s.parent, s.layer, 1.0) for s in REPEATED.steps))
    parents_meta = [{"model": "A", "name": "a"}, {"model": "B", "name": "b"}]
    out = export_dfs(a, b, path, tmp_path / "child", recipe=dfs_recipe(path, parents_meta))
    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = _ids()
    with torch.no_grad():
        want = DFSForCausalLM.from_parents(a, b, path).eval()(ids).logits
        got = reloaded(ids).logits
    assert torch.allclose(got, want, atol=1e-5)
    if scaled:
        assert type(reloaded).__name__ == "DFSForCausalLM"
        assert len(reloaded.model.layers) == 4  # distinct layers only
    else:
        assert type(reloaded) is LlamaForCausalLM
        assert reloaded.config.num_hidden_layers == len(path)
    card = (out / "README.md").read_text()
    assert ("import evomm_dfs" in card) == scaled
    assert (out / "dfs.yaml").is_file() and not list(tmp_path.glob(".child.*"))


def test_merge_reproduces_export_from_recipe(tmp_path) -> None:
    from evomm_dfs.recipe import load_dfs_recipe, merge_dfs_recipe

    from evomm.plugins import load_plugins

    pa, pb = make_tiny_model(tmp_path / "a", seed=0), make_tiny_model(tmp_path / "b", seed=1)
    a = AutoModelForCausalLM.from_pretrained(pa).eval()
    b = AutoModelForCausalLM.from_pretrained(pb).eval()
    path = _path((0, 0, 1.0), (1, 2, 1.1), (1, 2, 0.7), (0, 3, 1.0))
    recipe = dfs_recipe(path, [{"model": str(pa), "name": "a"}, {"model": str(pb), "name": "b"}])
    first = export_dfs(a, b, path, tmp_path / "c1", recipe=recipe)
    second = merge_dfs_recipe(load_dfs_recipe(first / "dfs.yaml"), tmp_path / "c2", load_plugins())
    m1 = AutoModelForCausalLM.from_pretrained(first).eval()
    m2 = AutoModelForCausalLM.from_pretrained(second).eval()
    ids = _ids()
    with torch.no_grad():
        assert torch.equal(m1(ids).logits, m2(ids).logits)
    assert (second / "tokenizer.json").is_file() or (second / "tokenizer_config.json").is_file()


# ------------------------------------------------------------------------------------------ search space


def test_dfs_space_genes_come_from_operator(tmp_path) -> None:
    from evomm_dfs.space import DFSSpace

    from evomm.adapters import ModelRef
    from evomm.plugins import load_plugins

    pa, pb = make_tiny_model(tmp_path / "a", seed=0), make_tiny_model(tmp_path / "b", seed=1)
    space = DFSSpace([ModelRef("a", str(pa)), ModelRef("b", str(pb))], load_plugins(),
                     {"repeats": 2, "max_path_length": 8, "scaling": "matrix", "scale": {"low": 0.5, "high": 1.5}})
    lay = space.layout
    assert space.dim == lay.num_slots - 1 + lay.num_layers ** 2
    inc = DFS_KIND.param("include")
    assert all((g.low, g.high) == (inc.low, inc.high) for g in space.genes if g.group == "include")
    assert all((g.low, g.high) == (0.5, 1.5) for g in space.genes if g.group == "scale")
    start = space.decode(space.initial_point())
    assert [(s.parent, s.layer, s.scale) for s in start.path.steps] == [(0, i, 1.0) for i in range(4)]
    rng = np.random.default_rng(0)
    cand = space.decode(rng.random(space.dim))
    assert cand.digest() == space.decode(np.array([g.unit(v) for g, (_, v) in zip(space.genes, cand.genes)])).digest()
    assert 2 <= len(cand.path) <= 8
    handle = space.materialize(cand)
    assert len(handle.generate(["One plus"], max_new_tokens=3)) == 1
    space.export(cand, tmp_path / "child")
    assert (tmp_path / "child" / "dfs.yaml").is_file()
    with pytest.raises(ConfigError, match="max_path_length"):
        DFSSpace([ModelRef("a", str(pa)), ModelRef("b", str(pb))], load_plugins(), {"repeats": 2})
    space.close()


def test_parents_with_different_hidden_sizes_are_refused(parents) -> None:
    from evomm.errors import IncompatibleModelsError

    a, _ = parents
    cfg = copy.deepcopy(a.config)
    cfg.hidden_size, cfg.head_dim = 48, 12
    with pytest.raises(IncompatibleModelsError, match="hidden size"):
        DFSForCausalLM.from_parents(a, LlamaForCausalLM(cfg), REPEATED)
