"""The speed paths of merging give the same results as the plain ones.

* :func:`evomm.execute.merge_to_dir` with its read-ahead thread and background writer writes the
  same bytes as the sequential loop, for linear, TIES and DARE-TIES, and still leaves nothing
  behind when the writer or the operator fails;
* :func:`evomm.execute.merged_tensors` yields the same tensors, in plan order, for every prefetch
  depth and number of merging threads;
* the operators' chunked arithmetic (:data:`evomm_ops._common.CHUNK`) gives the same bits for
  every chunk size, for every method and dtype;
* reading a tensor through a copy-on-write memory map (large tensors) gives the same tensor and
  the same merged checkpoint as ``readinto``, never writes through to the file, and still names
  a truncated file;
* the streaming writer reserves each shard's exact size with ``fallocate`` and writes the same
  bytes as without it;
* the selection's NumPy tally (CPU float tensors: counts at the bracket's ends, positions
  strictly between) gives exactly what the torch formulation gives, NaN and open bounds included (DARE's masks: tests/test_dare_masks.py);
* the streamed rank window (TIES / breadcrumbs without rescale on CPU: thresholds found in one
  chunked pass, for every model at once, the mask recomputed per chunk) keeps exactly the
  entries the whole-tensor mask keeps, the joint pass gives each model what its own pass gives, ties at both bounds included, never modifies its inputs, and steps aside (None) where
  it does not apply, so the operators' results are the same bits either way;
* ``import evomm_dfs`` stays cheap (no transformers at all) and an exported DFS child
  still loads with ``AutoModelForCausalLM`` in a fresh process that only imported ``evomm_dfs``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from evomm.errors import CheckpointError
from evomm.execute import merge_to_dir, merged_tensors, open_models
from evomm.plan import build_plan
from evomm.plugins import get_plugins
from evomm.recipe import MergeRecipe
from tests.tiny_models import make_tiny_model, perturb_model

RECIPES: dict[str, dict[str, Any]] = {
    "linear": {"merge_method": "linear", "models": [
        {"model": "base", "parameters": {"weight": 0.4}}, {"model": "a", "parameters": {"weight": 0.3}},
        {"model": "b", "parameters": {"weight": 0.3}}]},
    "ties": {"merge_method": "ties", "base_model": "base", "models": [
        {"model": "a", "parameters": {"weight": 0.5, "density": 0.5}},
        {"model": "b", "parameters": {"weight": 0.7, "density": 0.3}}]},
    "dare_ties": {"merge_method": "dare_ties", "base_model": "base", "models": [
        {"model": "a", "parameters": {"weight": 0.5, "density": 0.5}},
        {"model": "b", "parameters": {"weight": 0.5, "density": 0.4}}]},
}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("speedzoo")
    base = make_tiny_model(d / "base", "llama", seed=30)
    return {"base": base, "a": perturb_model(base, d / "a", seed=31), "b": perturb_model(base, d / "b", seed=32)}


def _recipe(method: str, zoo: dict[str, Path], **extra: Any) -> MergeRecipe:
    data = json.loads(json.dumps(RECIPES[method]))
    for m in data["models"]:
        m["model"] = str(zoo[m["model"]])
    if "base_model" in data:
        data["base_model"] = str(zoo[data["base_model"]])
    data.update(extra)
    return MergeRecipe.from_dict(data)


CHUNKED_CASES = [
    ("linear", None, [{"weight": 0.4}, {"weight": 0.3}, {"weight": -0.2}], {}),
    ("task_arithmetic", "base", [{"weight": 0.7}, {"weight": 0.6}], {"lambda": 1.3}),
    ("ties", "base", [{"weight": 0.5, "density": 0.5}, {"weight": 0.7, "density": 0.3}], {}),
    ("ties", "base", [{"weight": 1.0, "density": 0.4}, {"weight": 1.0, "density": 0.6}], {"rescale": 1}),
    ("dare_ties", "base", [{"weight": 0.5, "density": 0.5}, {"weight": 0.5, "density": 0.4}], {}),
    ("dare_linear", "base", [{"weight": 0.5, "density": 0.7}, {"weight": 0.5, "density": 0.2}], {}),
    ("breadcrumbs_ties", "base", [{"weight": 0.5, "density": 0.6, "gamma": 0.1}] * 2, {}),
    ("della", "base", [{"weight": 0.5, "density": 0.5, "epsilon": 0.1}] * 2, {}),
    ("della_linear", "base", [{"weight": 0.8, "density": 0.4, "epsilon": 0.2}] * 2, {}),
]


@pytest.mark.parametrize(("name", "base", "per", "g"), CHUNKED_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunk_size_never_changes_a_bit(monkeypatch: pytest.MonkeyPatch, name: str, base: str | None,
                                        per: list[dict[str, float]], g: dict[str, float], dtype: torch.dtype) -> None:
    import evomm_ops
    from evomm_ops import linear, task_arithmetic

    from evomm.layout import ModuleKind
    from evomm.operators import TensorContext

    gen = torch.Generator().manual_seed(5)
    b = torch.randn(37, 53, generator=gen)
    # quantised deltas: many ties at every threshold, as bf16 fine-tunes have
    models = [(b + torch.randint(-3, 4, b.shape, generator=gen) * 0.01).to(dtype) for _ in per]
    op = {o.name: o for o in evomm_ops.OPERATORS}[name]()
    ctx = TensorContext("model.layers.0.mlp.up_proj.weight", ModuleKind.MLP, 0, 99)
    base_t = b.to(dtype) if base else None
    results = []
    for chunk in (1 << 30, 64, 37 * 53 - 1, 1):
        monkeypatch.setattr(task_arithmetic, "CHUNK", chunk)
        monkeypatch.setattr(linear, "CHUNK", chunk)
        results.append(op.merge(models, base_t, g, per, ctx))
    whole = results[0]
    assert whole.dtype == dtype and whole.shape == b.shape
    assert not torch.equal(whole, models[0])  # the merge did something
    for got in results[1:]:
        assert torch.equal(got.view(-1).view(torch.uint8), whole.view(-1).view(torch.uint8))


def test_mapped_reads_equal_plain_reads_and_never_write_through(
    zoo: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors import safe_open

    from evomm import safetensors_io
    from evomm.safetensors_io import SafetensorsIndex

    idx = SafetensorsIndex(zoo["a"])
    plain = {name: idx.read(name) for name in idx}
    monkeypatch.setattr(safetensors_io, "MAP_MIN_BYTES", 0)  # map every tensor
    with safe_open(str(zoo["a"] / "model.safetensors"), "pt") as f:
        for name in idx:
            mapped = idx.read(name)
            assert torch.equal(mapped, plain[name]) and torch.equal(mapped, f.get_tensor(name))
            mapped.add_(1)  # copy-on-write: the file keeps its bytes
            assert torch.equal(idx.read(name), plain[name])
    # a whole merge through mapped reads writes the same bytes
    plugins = get_plugins()
    recipe = _recipe("ties", zoo, dtype="bfloat16")
    cks = open_models(recipe, plugins)
    plan = build_plan(recipe, cks, plugins)
    mapped_out = merge_to_dir(plan, cks, tmp_path / "mapped", plugins, progress=False)
    monkeypatch.setattr(safetensors_io, "MAP_MIN_BYTES", 1 << 62)
    read_out = merge_to_dir(plan, cks, tmp_path / "read", plugins, progress=False)
    assert _files(mapped_out) == _files(read_out)


def test_mapped_read_of_a_truncated_file_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import save_file

    from evomm import safetensors_io
    from evomm.safetensors_io import SafetensorsIndex

    path = tmp_path / "model.safetensors"
    save_file({"w": torch.arange(4096, dtype=torch.float32)}, str(path))
    idx = SafetensorsIndex(tmp_path)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 100)
    monkeypatch.setattr(safetensors_io, "MAP_MIN_BYTES", 0)
    with pytest.raises(CheckpointError, match="truncated.*'w'"):
        idx.read("w")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_numpy_tally_equals_the_torch_tally(dtype: torch.dtype) -> None:
    from evomm_ops import rank_select

    g = torch.Generator().manual_seed(5)
    values = torch.randn(50_000, generator=g, dtype=dtype).abs()
    values[::97] = float("nan")
    lo, hi = 0.2, 0.3
    values[1000:1500] = 0.25  # tie blocks inside the bracket and on both ends
    values[2000:2300] = lo
    values[3000:3100] = hi
    for bounds in ((lo, hi), (lo, None), (None, hi), (lo, lo)):
        below, eq_lo, eq_hi, positions = rank_select.tally(values.numpy(), *bounds)
        # written out: below = #(x < lo); ends counted apart (lo's once when lo == hi); between
        # them strictly, and NaN only when the bracket is open above (it ranks highest)
        b_lo, b_hi = bounds
        x = values
        assert below == (int((x < b_lo).sum()) if b_lo is not None else 0)
        assert eq_lo == (int((x == b_lo).sum()) if b_lo is not None else 0)
        assert eq_hi == (int((x == b_hi).sum()) if b_hi is not None and b_hi != b_lo else 0)
        if b_lo is None:
            inside = x < b_hi
        elif b_hi is None:
            inside = ~(x <= b_lo)
        else:
            inside = (x > b_lo) & (x < b_hi)
        assert positions.dtype == np.int64
        assert positions.tolist() == inside.nonzero().squeeze(1).tolist()
        # the torch formulation (taken for float16 and bfloat16, and off the CPU): the same counts
        half = values.half()
        t_counts = rank_select.tally(half, *bounds)
        h_lo = torch.tensor(b_lo).half().item() if b_lo is not None else None
        h_hi = torch.tensor(b_hi).half().item() if b_hi is not None else None
        n_counts = rank_select.tally(half.float().numpy(), h_lo, h_hi)
        assert t_counts[:3] == n_counts[:3]
        assert t_counts[3].tolist() == n_counts[3].tolist()


def _quantised_pair(dtype: torch.dtype, shape: tuple[int, int] = (600, 700)) -> tuple[torch.Tensor, torch.Tensor]:
    """A base and a model whose task vector takes few distinct values: big tie blocks at every
    threshold (as bf16 fine-tunes have); above ``_SAMPLE_MIN_NUMEL`` entries."""
    gen = torch.Generator().manual_seed(11)
    base = torch.randn(shape, generator=gen, dtype=torch.float64)
    steps = torch.randint(-40, 41, shape, generator=gen, dtype=torch.float64)
    return base.to(dtype), (base + steps * 0.001).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("window", ["topk-0.5", "topk-0.07", "outliers", "below"])
def test_streamed_window_keeps_what_the_whole_tensor_mask_keeps(dtype: torch.dtype, window: str) -> None:
    from evomm_ops import sparsify

    base, model = _quantised_pair(dtype)
    before = (base.clone(), model.clone())
    n = base.numel()
    wd = torch.float64 if dtype == torch.float64 else torch.float32
    lo, hi = {
        "topk-0.5": sparsify.topk_window(n, 0.5),
        "topk-0.07": sparsify.topk_window(n, 0.07),
        "outliers": sparsify.outliers_window(n, 0.6, 0.1),
        "below": (0, n // 3),  # a high bound only
    }[window]
    keep = sparsify.window_keep_streamed(model, base, lo, hi, wd)
    assert keep is not None and keep.mask is None  # the streamed path ran
    assert (keep.low is not None) == (lo > 0) and (keep.high is not None) == (hi < n)
    delta = model.to(wd).sub(base.to(wd)).reshape(-1)
    mask = sparsify.rank_window_keep_(delta.abs(), lo, hi)  # the whole-tensor reference
    assert int(mask.sum()) == hi - lo
    tied = (delta.abs() == (keep.low or keep.high).value).sum()  # type: ignore[union-attr]
    assert tied > 100  # the bound sits in a tie block
    for chunk in (n, 1 << 18, 99_991):  # apply_ chunk by chunk, at odd offsets too
        got = torch.cat([keep.apply_(delta[s : s + chunk].clone(), s) for s in range(0, n, chunk)])
        assert torch.equal(got.view(torch.uint8), (delta * mask).view(torch.uint8))
    assert torch.equal(base, before[0]) and torch.equal(model, before[1])


def test_streamed_window_steps_aside_where_it_does_not_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    from evomm_ops import sparsify

    base, model = _quantised_pair(torch.float32)
    n = base.numel()
    assert sparsify.window_keep_streamed(model[:100], base[:100], 50, 100 * 700, torch.float32) is None  # small
    assert sparsify.window_keep_streamed(model, base, 0, n, torch.float32) is None  # keeps everything
    assert sparsify.window_keep_streamed(model, base, 5, 5, torch.float32) is None  # keeps nothing
    assert sparsify.window_keep_streamed(model, base, 10, n, torch.float16) is None  # not a CPU f32/f64 work dtype
    # a bracket that misses the rank: None, never a wrong threshold
    from evomm_ops import rank_select

    monkeypatch.setattr(rank_select, "bracket", lambda s, q: (1, 2))
    assert sparsify.window_keep_streamed(model, base, n // 2, n, torch.float32) is None


def test_joint_streamed_windows_equal_one_model_at_a_time() -> None:
    from evomm_ops import sparsify

    base, a = _quantised_pair(torch.bfloat16)
    b = _quantised_pair(torch.bfloat16)[1].flip(0)
    n = base.numel()
    windows = [sparsify.topk_window(n, 0.3), sparsify.outliers_window(n, 0.6, 0.1), (0, n), (7, 7)]
    models = [a, b, a, b]
    joint = sparsify.window_keeps_streamed(models, base, windows, torch.float32)
    alone = [sparsify.window_keep_streamed(t, base, lo, hi, torch.float32) for t, (lo, hi) in zip(models, windows)]
    assert joint[2] is None and joint[3] is None  # full and empty windows are not streamed
    assert joint[0] is not None and joint[1] is not None and joint[1].low and joint[1].high  # both bounds
    assert joint == alone  # the same bounds (value, tie cut), field by field
    delta = b.float().sub(base.float()).reshape(-1)
    reference = sparsify.rank_window_keep_(delta.abs(), *windows[1])
    assert torch.equal(joint[1].apply_(delta.clone()), delta * reference)


@pytest.mark.parametrize("name", ["ties", "breadcrumbs", "breadcrumbs_ties"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_operators_give_the_same_bits_with_and_without_the_streamed_window(
    monkeypatch: pytest.MonkeyPatch, name: str, dtype: torch.dtype
) -> None:
    import evomm_ops
    from evomm_ops import sparsify

    from evomm.layout import ModuleKind
    from evomm.operators import TensorContext

    base, a = _quantised_pair(dtype)
    b = _quantised_pair(dtype)[1].flip(0)
    inputs = [a.clone(), b.clone()]
    per = [{"weight": 0.6, "density": 0.4, "gamma": 0.05}, {"weight": 0.5, "density": 0.7, "gamma": 0.1}]
    if name == "ties":
        per = [{k: v for k, v in p.items() if k != "gamma"} for p in per]
    op = {o.name: o for o in evomm_ops.OPERATORS}[name]()
    ctx = TensorContext("model.layers.0.mlp.up_proj.weight", ModuleKind.MLP, 0, 7)
    calls: list[bool] = []
    real = sparsify.window_keeps_streamed

    def spy(*args: Any) -> Any:
        keeps = real(*args)
        calls.extend(keep is not None for keep in keeps)
        return keeps

    monkeypatch.setattr(sparsify, "window_keeps_streamed", spy)
    streamed = op.merge(inputs, base, {}, per, ctx)
    assert calls == [True, True]
    assert torch.equal(inputs[0], a) and torch.equal(inputs[1], b)  # inputs untouched
    monkeypatch.setattr(sparsify, "window_keeps_streamed", lambda models, *args: [None] * len(models))
    whole = op.merge(inputs, base, {}, per, ctx)
    assert torch.equal(streamed.view(-1).view(torch.uint8), whole.view(-1).view(torch.uint8))
    assert not torch.equal(whole, base)


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.suffix in (".safetensors", ".json")}


@pytest.mark.parametrize("method", sorted(RECIPES))
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_pipelined_merge_writes_the_same_bytes(zoo: dict[str, Path], tmp_path: Path, method: str, dtype: str) -> None:
    plugins = get_plugins()
    recipe = _recipe(method, zoo, dtype=dtype, out_dtype="bfloat16")
    cks = open_models(recipe, plugins)
    plan = build_plan(recipe, cks, plugins)
    # small shards: several files, so the background writer crosses shard boundaries
    fast = merge_to_dir(plan, cks, tmp_path / "fast", plugins, progress=False, max_shard_bytes=40_000)
    slow = merge_to_dir(plan, cks, tmp_path / "slow", plugins, progress=False, max_shard_bytes=40_000,
                        pipeline=False)
    got, want = _files(fast), _files(slow)
    assert len([n for n in want if n.endswith(".safetensors")]) > 1
    assert got == want


def test_preallocated_shards_hold_exactly_the_same_bytes(zoo: dict[str, Path], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import evomm.safetensors_io as sio

    plugins = get_plugins()
    recipe = _recipe("ties", zoo, out_dtype="bfloat16")
    cks = open_models(recipe, plugins)
    plan = build_plan(recipe, cks, plugins)
    calls: list[tuple[int, bool]] = []
    real = sio.preallocate

    def spy(fd: int, size: int) -> bool:
        calls.append((size, real(fd, size)))
        return calls[-1][1]

    monkeypatch.setattr(sio, "preallocate", spy)
    merge_to_dir(plan, cks, tmp_path / "pre", plugins, progress=False, max_shard_bytes=40_000)
    monkeypatch.setattr(sio, "preallocate", lambda fd, size: False)
    merge_to_dir(plan, cks, tmp_path / "plain", plugins, progress=False, max_shard_bytes=40_000)
    pre, plain = _files(tmp_path / "pre"), _files(tmp_path / "plain")
    assert pre == plain  # no trailing preallocated bytes, nothing else changed
    shards = sorted(n for n in pre if n.endswith(".safetensors"))
    assert len(calls) == len(shards) > 1  # one reservation per shard file ...
    assert sorted(size for size, _ in calls) == sorted(len(pre[n]) for n in shards)  # ... of its exact size
    # Linux file systems that tests run on (ext4, xfs, btrfs, tmpfs) all support fallocate
    assert all(ok for _, ok in calls) == sys.platform.startswith("linux")


@pytest.mark.parametrize("method", ["dare_ties", "ties"])
def test_merged_tensors_do_not_depend_on_prefetch_depth_nor_threads(zoo: dict[str, Path], method: str) -> None:
    plugins = get_plugins()
    recipe = _recipe(method, zoo)
    cks = open_models(recipe, plugins)
    plan = build_plan(recipe, cks, plugins)
    intra = torch.get_num_threads()
    want = list(merged_tensors(plan, cks, plugins, prefetch=0, threads=1))
    assert [n for n, _ in want] == [s.name for s in plan.steps]
    for depth, threads in ((1, 1), (3, 2), (0, 4), (len(plan.steps) + 5, 3)):
        got = list(merged_tensors(plan, cks, plugins, prefetch=depth, threads=threads))
        assert [n for n, _ in got] == [n for n, _ in want]  # plan order, whatever finishes first
        for (name, g), (_, w) in zip(got, want):
            assert g.dtype == w.dtype and torch.equal(g, w), name
    assert torch.get_num_threads() == intra  # torch's intra-op threads are restored


def test_in_order_keeps_the_order_and_raises_in_the_caller() -> None:
    from evomm.pipeline import in_order

    def slow_first(x: int) -> int:
        time.sleep(0.05 if x % 3 == 0 else 0.0)  # later items finish first
        if x == 7:
            raise CheckpointError("item 7 (test)")
        return x * 10

    assert list(in_order(range(7), slow_first, workers=3)) == [x * 10 for x in range(7)]
    got = []
    with pytest.raises(CheckpointError, match="item 7"):
        for y in in_order(range(20), slow_first, workers=3):
            got.append(y)
    assert got == [x * 10 for x in range(7)]


def test_a_merge_thread_reduces_as_the_calling_thread() -> None:
    """A merge thread's BLAS/OpenMP thread count starts at the library default; unless it is set
    to the caller's one thread, reductions (dot, norms: karcher, DARE rescale) differ in the last
    bit depending on which thread merged the tensor."""
    from evomm.pipeline import in_order, single_threaded_torch

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2_000_000, generator=g), torch.randn(2_000_000, generator=g)
    with single_threaded_torch():
        ref = torch.dot(x, y)
        got = list(in_order(range(4), lambda _: torch.dot(x, y), workers=2))
    assert all(torch.equal(v, ref) for v in got), (ref, got)


def test_abandoned_prefetching_generator_stops_cleanly(zoo: dict[str, Path]) -> None:
    plugins = get_plugins()
    recipe = _recipe("linear", zoo)
    cks = open_models(recipe, plugins)
    plan = build_plan(recipe, cks, plugins)
    gen = merged_tensors(plan, cks, plugins, prefetch=2)
    first = next(gen)
    gen.close()  # must not hang nor raise
    assert first[0] == plan.steps[0].name


def test_writer_error_surfaces_and_leaves_nothing(zoo: dict[str, Path], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer failing mid-merge (in its background thread) leaves nothing behind."""
    from evomm.safetensors_io import ShardedSafetensorsWriter

    method = "write"
    plugins = get_plugins()
    recipe = _recipe("ties", zoo)
    cks = open_models(recipe, plugins)
    plan = build_plan(recipe, cks, plugins)
    calls = {"n": 0}
    real = getattr(ShardedSafetensorsWriter, method)

    def failing(self: ShardedSafetensorsWriter, name: str, *args: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 5:
            raise CheckpointError("disk full (test)")
        real(self, name, *args)

    monkeypatch.setattr(ShardedSafetensorsWriter, method, failing)
    with pytest.raises(CheckpointError, match="disk full"):
        merge_to_dir(plan, cks, tmp_path / "out", plugins, progress=False)
    assert calls["n"] == 5
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_read_error_surfaces_from_the_prefetch_thread(zoo: dict[str, Path], tmp_path: Path) -> None:
    """A read failing in the prefetch thread surfaces in the caller; nothing is left behind."""
    plugins = get_plugins()
    recipe = _recipe("linear", zoo)
    cks = open_models(recipe, plugins)
    plan = build_plan(recipe, cks, plugins)
    victim = plan.steps[3].name
    ck = cks[plan.models[1].name]
    method = "read"
    real_read = getattr(ck, method)

    def read(name: str) -> Any:
        if name == victim:
            raise CheckpointError(f"cannot read {name} (test)")
        return real_read(name)

    setattr(ck, method, read)
    with pytest.raises(CheckpointError, match="cannot read"):
        merge_to_dir(plan, cks, tmp_path / "out", plugins, progress=False)
    assert not (tmp_path / "out").exists()


_CHILD = """
import sys
{first}
heavy = sorted(m for m in ("evomm_dfs.model", "torch._dynamo", "transformers.modeling_utils", "transformers")
               if m in sys.modules and m not in before)
assert not [f for f in sys.meta_path if type(f).__module__.startswith("evomm")], "an evomm import hook"
{register}
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
print(type(model).__name__, len(model.model.layers), ",".join(heavy) or "-")
"""


# what the fresh process imports first: evomm_dfs alone (it imports nothing heavy, the user then
# calls evomm_dfs.register()), transformers before evomm_dfs (registered at import), and
# DFSConfig's module first (transformers is imported while evomm_dfs.config is half-initialised)
_FIRST = {
    "evomm_dfs": ("before = set(sys.modules)\nimport evomm_dfs", "evomm_dfs.register()"),
    "transformers_first": ("import transformers\nbefore = set(sys.modules)\nimport evomm_dfs", ""),
    "config_module_first": ("import evomm_dfs.config\nbefore = {'transformers'}", ""),
}


@pytest.mark.slow
@pytest.mark.parametrize("first", sorted(_FIRST))
def test_dfs_import_is_light_and_exported_child_loads_in_a_fresh_process(tmp_path: Path, first: str) -> None:
    from evomm_dfs.export import dfs_recipe, export_dfs
    from evomm_dfs.path import DFSPath, PathStep
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)
    a, b = LlamaForCausalLM(cfg).eval(), LlamaForCausalLM(cfg).eval()
    path = DFSPath((PathStep(0, 0, 1.0), PathStep(1, 1, 0.5), PathStep(1, 1, 1.5)), ("a", "b"))
    meta = [{"model": "A", "name": "a"}, {"model": "B", "name": "b"}]
    out = export_dfs(a, b, path, tmp_path / "child", recipe=dfs_recipe(path, meta))
    child = _CHILD.format(first=_FIRST[first][0], register=_FIRST[first][1])
    proc = subprocess.run([sys.executable, "-c", child, str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    kind, layers, heavy = proc.stdout.split()[-3:]
    assert (kind, layers) == ("DFSForCausalLM", "2")  # distinct layers only
    assert heavy == "-", f"`import evomm_dfs` imported {heavy}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_streamed_dare_keep_equals_the_whole_tensor_keep(dtype: torch.dtype) -> None:
    from evomm_ops import sparsify

    gen = torch.Generator().manual_seed(3)
    base = torch.randn(600, 700, generator=gen).to(dtype)  # 420,000 entries: two stream chunks
    model = (base.float() + torch.randn(600, 700, generator=gen) * 0.01).to(dtype)
    before = (base.clone(), model.clone())
    delta = model.float().sub(base.float()).reshape(-1)
    streamed = sparsify.random_keep_streamed(model, base, 0.3, torch.Generator().manual_seed(5), True, torch.float32)
    whole = sparsify.random_keep(delta.numel(), 0.3, torch.Generator().manual_seed(5), delta.abs(), True)
    assert streamed.mask is not None and streamed.mask.dtype == torch.bool  # a quarter of a float mask
    assert torch.equal(streamed.mask.float(), whole.mask)
    # the same norms, summed in another order: equal to float32 rounding
    assert streamed.scale is not None and whole.scale is not None
    assert abs(float(streamed.scale) / float(whole.scale) - 1) < 1e-6
    kept = streamed.apply_(delta.clone())
    assert abs(float(kept.abs().sum(dtype=torch.float64)) / float(delta.abs().sum(dtype=torch.float64)) - 1) < 1e-5
    assert abs(float(streamed.mask.float().mean()) - 0.3) < 0.01
    plain = sparsify.random_keep_streamed(model, base, 0.3, torch.Generator().manual_seed(5), False, torch.float32)
    assert plain.scale is None and torch.equal(plain.mask, streamed.mask)
    assert sparsify.random_keep_streamed(model, base, 1.0, gen, True, torch.float32) is sparsify.KEEP_ALL
    assert torch.equal(base, before[0]) and torch.equal(model, before[1])


def test_joint_dare_keeps_equal_one_model_at_a_time_with_one_generator() -> None:
    from evomm_ops import sparsify

    gen = torch.Generator().manual_seed(4)
    base = torch.randn(300, 1000, generator=gen)  # 300,000 entries: two stream chunks
    models = [base + torch.randn(300, 1000, generator=gen) * 0.01 for _ in range(3)]
    densities = [0.4, 1.0, 0.7]  # the middle model keeps everything and draws nothing
    joint = sparsify.random_keeps_streamed(models, base, densities, torch.Generator().manual_seed(8), True,
                                           torch.float32)
    one = torch.Generator().manual_seed(8)
    alone = [sparsify.random_keep_streamed(t, base, d, one, True, torch.float32) for t, d in zip(models, densities)]
    assert joint[1] is sparsify.KEEP_ALL and alone[1] is sparsify.KEEP_ALL
    for i in (0, 2):
        assert torch.equal(joint[i].mask, alone[i].mask)
        assert torch.equal(joint[i].scale, alone[i].scale)
    assert not torch.equal(joint[0].mask, joint[2].mask)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_sparsify_threads_work_again_in_a_forked_child() -> None:
    from evomm_ops import rank_select

    assert rank_select.parallel_map(abs, [-1, -2]) == [1, 2]  # the pool exists now
    pid = os.fork()
    if pid == 0:  # child: a pool inherited from the parent would have no threads and hang
        os._exit(0 if rank_select._POOL is None and rank_select.parallel_map(abs, [-3, -4]) == [3, 4] else 1)
    start = time.monotonic()
    while time.monotonic() - start < 20:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise AssertionError("the forked child's parallel map hung")
