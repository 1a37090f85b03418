"""The CPU engine (:mod:`evomm.host_merge`) gives the torch path's bytes, without torch.

* the operators' torch-free forms (``merge_arrays``: linear, task arithmetic, TIES, DARE-TIES,
  DARE-linear, breadcrumbs (TIES); numba kernels) give exactly what their torch ``merge`` gives
  on random tensors: bfloat16 and float32, one to four models (five decline), densities 0, tiny,
  partial and 1, tied magnitudes at the window bounds, tensors below and above the size where
  selection samples, normalise on/off, lambda, negative and zero weights, and NaN, infinities,
  -0.0 and subnormals among the entries (a NaN result may be another NaN's bits, see
  :func:`_same`); DELLA and rescaled magnitude windows decline;
* the engine's rank-window bounds on tie-heavy magnitudes (all zero, mostly zero, two values)
  are the exact ones and the torch path's, and no selection runs among all the tied entries;
* :func:`evomm_ops._common.f32_sum` is torch's float32 sum for up to four weights;
* :func:`evomm.host_merge.convert` is ``Tensor.to`` between bfloat16, float16 and float32,
  NaN, overflow and subnormals included;
* :func:`evomm.execute.merge_to_dir` writes the same files with the engine as without it
  (``EVOMM_CPU_ENGINE=0``) for linear and task-arithmetic recipes over tiny Llama / Qwen2
  (tied) checkpoints, and for TIES, DARE-TIES, DARE-linear and breadcrumbs-TIES recipes: bf16
  and f32 storage, a float32 compute dtype over bf16 files, a float16 output, sharded outputs;
  an operator that declines some tensors gets them merged by torch, the same bytes again; and
  DELLA, which has no torch-free form, does not use the engine;
* ``evomm merge`` of linear, TIES and DARE-TIES recipes in a fresh interpreter never loads torch.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from evomm_ops._common import f32_sum
from evomm_ops.linear import Linear
from evomm_ops.task_arithmetic import TaskArithmetic, Ties

from evomm import hookimpl, host_merge
from evomm.cli import main
from evomm.execute import merge_to_dir, open_models
from evomm.layout import ModuleKind
from evomm.operators import TensorContext
from evomm.plan import build_plan
from evomm.plugins import get_plugins, load_plugins
from evomm.recipe import MergeRecipe, get_operator
from tests.tiny_models import make_tiny_model, perturb_model

CTX = TensorContext("model.layers.0.mlp.up_proj.weight", ModuleKind.MLP, 0, 5)


def _raw(t: torch.Tensor) -> np.ndarray:
    flat = t.contiguous().reshape(-1)
    return flat.view(torch.int16).numpy().view(np.uint16) if t.dtype == torch.bfloat16 else flat.numpy()


def _same(want: np.ndarray, got: np.ndarray) -> bool:
    """The same bits, except that a NaN may be another NaN: torch's vectorised float32 ->
    bfloat16 conversion writes NaN as 0xFFFF and its scalar tail as 0x7FC0, so its own NaN bits
    depend on where an entry falls in a SIMD register; the engine always writes 0x7FC0."""
    want, got = want.reshape(-1), got.reshape(-1)
    if want.dtype == np.uint16:
        nan_w, nan_g = (want & 0x7FFF) > 0x7F80, (got & 0x7FFF) > 0x7F80
    else:
        nan_w, nan_g = np.isnan(want), np.isnan(got)
    return bool(np.array_equal(nan_w, nan_g) and want[~nan_w].tobytes() == got[~nan_g].tobytes())


def _special(n: int, dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    t = torch.randn(n, generator=gen)
    t[:8] = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 0.0, 1e-40, -1e-39, 3e38])
    return t.to(dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("models", [1, 2, 3, 4])
def test_linear_arrays_equal_the_torch_merge(dtype: torch.dtype, models: int) -> None:
    gen = torch.Generator().manual_seed(models)
    n = 70_001  # several kernel blocks and a ragged end
    ts = [_special(n, dtype, gen) for _ in range(models)]
    name = {torch.bfloat16: "bfloat16", torch.float32: "float32"}[dtype]
    for trial in range(4):
        ws = (torch.rand(models, generator=gen) * 3 - 1).tolist()
        if trial == 1 and models > 1:
            ws[0] = 0.0
        for normalize in (True, False):
            params = [{"weight": w} for w in ws]
            want = Linear().merge(ts, None, {"normalize": normalize}, params, CTX)
            got = Linear().merge_arrays([_raw(t) for t in ts], None, {"normalize": normalize}, params, CTX, name)
            assert got is not None
            assert _same(_raw(want), got), (ws, normalize)


METHODS = ["task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs", "breadcrumbs_ties"]


def _task_vector_inputs(n: int, models: int, dtype: torch.dtype, seed: int, ties: bool):
    gen = torch.Generator().manual_seed(seed)
    base = _special(n, dtype, gen)
    ts = []
    for _ in range(models):
        delta = 0.05 * torch.randn(n, generator=gen)
        if ties:  # few distinct magnitudes: many entries tied at every window bound
            delta = torch.round(delta * 40) / 40
        ts.append((base.float() + delta).to(dtype))
    return base, ts


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("n", [5_003, 300_007])  # whole-tensor and streamed/sampled selection
def test_task_vector_arrays_equal_the_torch_merge(method: str, dtype: torch.dtype, n: int) -> None:
    plugins = get_plugins()
    op = plugins.operators.get(method)()
    name = {torch.bfloat16: "bfloat16", torch.float32: "float32"}[dtype]
    cases = [  # (models, densities, weights, global params, tied inputs)
        (2, [0.5, 0.3], [0.6, 0.4], {}, False),
        (3, [0.2, 1.0, 0.7], [1.0, -0.5, 0.8], {"lambda": 0.7, "normalize": True}, True),
        (1, [0.9], [1.3], {"normalize": False}, False),
        (4, [0.0, 0.4, 1e-6, 0.999], [0.5, 0.5, 0.5, 0.5], {"rescale": False}, True),
    ]
    for k, (models, densities, weights, g, tied) in enumerate(cases):
        base, ts = _task_vector_inputs(n, models, dtype, 100 + k, tied)
        declared = {p.name for p in op.params}
        g = {key: v for key, v in g.items() if key in declared}
        params = [{"weight": w, "density": d} | ({"gamma": 0.05} if "gamma" in declared else {})
                  for w, d in zip(weights, densities)]
        ctx = TensorContext(CTX.name, CTX.kind, CTX.layer, 1000 + k)
        want = op.merge(ts, base, g, params, ctx)
        got = op.merge_arrays([_raw(t) for t in ts], _raw(base), g, params, ctx, name)
        assert got is not None, (method, k)
        assert _same(_raw(want), got), (method, k)


def _tied_magnitudes(case: str, n: int) -> np.ndarray:
    """Task-vector magnitudes whose ties once made the engine select among every tied entry:
    all tied (an all-zero delta: a frozen embedding), mostly zero, and two values only."""
    rng = np.random.default_rng(11)
    if case == "all-zero":
        return np.zeros(n, np.float32)
    if case == "mostly-zero":
        return np.where(rng.random(n) < 0.9, 0.0, np.abs(rng.standard_normal(n))).astype(np.float32)
    return np.where(rng.random(n) < 0.5, 0.001, 0.003).astype(np.float32)


@pytest.mark.parametrize("case", ["all-zero", "mostly-zero", "two-values"])
def test_engine_windows_on_tied_magnitudes_are_exact_and_never_select_among_the_ties(
    monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    from evomm_ops import host_sparsify, sparsify

    n = 2_000_003  # the 64K sample is then ~3% of the entries
    mag = _tied_magnitudes(case, n)
    x = np.where(np.arange(n) % 3 == 0, -mag, mag)  # a task vector with both signs over a zero base
    base = np.zeros(n, np.float32)
    order = np.lexsort((np.arange(n), mag))  # ascending by (magnitude, flat index)
    index = np.arange(n)
    sizes: list[int] = []
    kth = host_sparsify._kth

    def spy(values: np.ndarray, rank: int) -> np.float32:
        sizes.append(values.size)
        return kth(values, rank)

    monkeypatch.setattr(host_sparsify, "_kth", spy)
    windows = [sparsify.topk_window(n, 0.5), sparsify.topk_window(n, 0.05), sparsify.outliers_window(n, 0.6, 0.1),
               (0, n // 3)]
    for lo, hi in windows:
        low, high = host_sparsify.window_bounds(x, base, lo, hi)
        expected = np.zeros(n, dtype=bool)
        expected[order[lo:hi]] = True
        kept = np.ones(n, dtype=bool)  # what the bounds keep (RankBound's definition, written out)
        if low is not None:
            kept &= (mag > low[0]) | ((mag == low[0]) & (index >= low[1]))
        if high is not None:
            kept &= (mag < high[0]) | ((mag == high[0]) & (index < high[1]))
        assert (kept == expected).all(), (case, lo, hi)
        keep = sparsify.window_keep_streamed(torch.from_numpy(x), torch.from_numpy(base), lo, hi, torch.float32)
        assert keep is not None and keep.mask is None  # the torch path's streamed selection
        assert low == (None if keep.low is None else (keep.low.value, keep.low.cut)), (case, lo, hi)
        assert high == (None if keep.high is None else (keep.high.value, keep.high.cut)), (case, lo, hi)
    # selections ran on a few candidates at most, never on every tied entry nor the whole tensor
    assert max(sizes, default=0) <= 70_000, (case, sizes)


def test_methods_without_a_torch_free_form_decline() -> None:
    a = np.ones(4, np.float32)
    della = get_plugins().operators.get("della")()
    assert not della.merges_arrays() and Ties().merges_arrays() and TaskArithmetic().merges_arrays()
    assert della.merge_arrays([a], a, {}, [{"weight": 1.0, "density": 0.5}], CTX, "float32") is None
    # a rescaled magnitude window has no torch-free form
    assert Ties().merge_arrays([a], a, {"rescale": True}, [{"weight": 1.0, "density": 0.5}], CTX, "float32") is None
    assert TaskArithmetic().merge_arrays([a], a, {}, [{"weight": 1.0}], CTX, "float16") is None  # not a host dtype
    assert TaskArithmetic().merge_arrays([a] * 5, a, {}, [{"weight": 1.0}] * 5, CTX, "float32") is None
    assert Linear().merge_arrays([a] * 5, None, {}, [{"weight": 1.0}] * 5, CTX, "float32") is None
    # and what they accept they merge
    assert TaskArithmetic().merge_arrays([a] * 4, a, {}, [{"weight": 1.0}] * 4, CTX, "float32") is not None


def test_f32_sum_is_torch_sum_for_up_to_four_values() -> None:
    rng = np.random.default_rng(0)
    for _ in range(3000):
        k = int(rng.integers(1, 5))
        values = (rng.standard_normal(k) * 10.0 ** rng.integers(-8, 8, k)).tolist()
        assert f32_sum(values).tobytes() == torch.tensor(values, dtype=torch.float32).sum().numpy().tobytes(), values


@pytest.mark.parametrize("src", ["bfloat16", "float16", "float32"])
@pytest.mark.parametrize("dst", ["bfloat16", "float16", "float32"])
def test_convert_is_tensor_to(src: str, dst: str) -> None:
    gen = torch.Generator().manual_seed(1)
    t = torch.cat([
        torch.randn(20_000, generator=gen) * 10.0 ** torch.randint(-12, 12, (20_000,), generator=gen),
        torch.tensor([float("nan"), -float("nan"), float("inf"), -float("inf"), -0.0, 1e-45, 7e4, -1e5, 65519.0]),
    ]).to(getattr(torch, src))
    want = t.to(getattr(torch, dst))
    assert _same(_raw(want), host_merge.convert(_raw(t), src, dst))


# --------------------------------------------------------------------------------------------
# whole merges: engine on and off
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hostzoo")
    base = make_tiny_model(d / "base", "llama", seed=40, dtype=torch.bfloat16)
    z = {
        "base": base,
        "a": perturb_model(base, d / "a", seed=41, scale=0.02),
        "b": perturb_model(base, d / "b", seed=42, scale=0.02),
        "f32": make_tiny_model(d / "f32", "llama", seed=43),
        "f32b": make_tiny_model(d / "f32b", "llama", seed=44),
        "qa": make_tiny_model(d / "qa", "qwen2", seed=45, tie_word_embeddings=True, dtype=torch.bfloat16),
        "qb": make_tiny_model(d / "qb", "qwen2", seed=46, tie_word_embeddings=True, dtype=torch.bfloat16),
    }
    return z


def _files(out: Path) -> dict[str, bytes]:
    """Every file of an output directory but evomm.outputs' marker (it records when, not what)."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file() and p.name != ".evomm-output"}


def _merge_both(recipe: dict[str, Any], tmp: Path, monkeypatch: pytest.MonkeyPatch, plugins: Any = None,
                **kw: Any) -> tuple[dict[str, bytes], dict[str, bytes], bool]:
    plugins = plugins or get_plugins()
    r = MergeRecipe.from_dict(recipe)
    cks = open_models(r, plugins)
    plan = build_plan(r, cks, plugins)
    writer = cks[plan.donor].writer(tmp / "probe")
    engine = host_merge.unsupported(plan, cks, get_operator(plan.operator, plugins)(), writer) is None
    host = merge_to_dir(plan, cks, tmp / "host", plugins, progress=False, **kw)
    monkeypatch.setenv(host_merge.ENV_ENGINE, "0")
    torch_out = merge_to_dir(plan, cks, tmp / "torch", plugins, progress=False, **kw)
    monkeypatch.delenv(host_merge.ENV_ENGINE)
    return _files(host), _files(torch_out), engine


def _models(*specs: tuple[Path, dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"model": str(p), "parameters": params} for p, params in specs]


CASES = {
    "linear-bf16": lambda z: {"merge_method": "linear", "models": _models(
        (z["a"], {"weight": 0.3}), (z["b"], {"weight": 0.45}), (z["base"], {"weight": 0.25}))},
    "linear-gradient-unnormalised": lambda z: {"merge_method": "linear", "parameters": {"normalize": False},
        "models": _models((z["a"], {"weight": [0.2, 0.9]}), (z["b"], {"weight": [{"filter": "mlp", "value": -0.3},
                                                                                   {"value": 0.6}]}))},
    "linear-f32-compute-over-bf16": lambda z: {"merge_method": "linear", "dtype": "float32", "models": _models(
        (z["a"], {"weight": 0.7}), (z["b"], {"weight": 0.35}))},
    "linear-f32-files-to-f16": lambda z: {"merge_method": "linear", "dtype": "float32", "out_dtype": "float16",
        "models": _models((z["f32"], {"weight": 0.6}), (z["f32b"], {"weight": 0.55}))},
    "linear-bf16-compute-over-f32": lambda z: {"merge_method": "linear", "dtype": "bfloat16", "models": _models(
        (z["f32"], {"weight": 0.6}), (z["f32b"], {"weight": 0.55}))},
    "linear-tied-qwen2": lambda z: {"merge_method": "linear", "models": _models(
        (z["qa"], {"weight": 0.4}), (z["qb"], {"weight": 0.6}))},
    "task-arithmetic": lambda z: {"merge_method": "task_arithmetic", "base_model": str(z["base"]),
        "parameters": {"lambda": 0.8}, "models": _models((z["a"], {"weight": [0.5, 1.2]}), (z["b"], {"weight": 0.7}))},
    "ties": lambda z: {"merge_method": "ties", "base_model": str(z["base"]), "models": _models(
        (z["a"], {"weight": 0.6, "density": [0.2, 0.8]}), (z["b"], {"weight": 0.4, "density": 0.5}))},
    "dare-ties-f32-compute": lambda z: {"merge_method": "dare_ties", "base_model": str(z["base"]), "dtype": "float32",
        "models": _models((z["a"], {"weight": 0.6, "density": 0.3}), (z["b"], {"weight": 0.7, "density": 0.6}))},
    "dare-linear": lambda z: {"merge_method": "dare_linear", "base_model": str(z["base"]), "models": _models(
        (z["a"], {"weight": 0.5, "density": 0.5}), (z["b"], {"weight": 0.5, "density": 0.9}))},
    "breadcrumbs-ties": lambda z: {"merge_method": "breadcrumbs_ties", "base_model": str(z["base"]),
        "models": _models((z["a"], {"weight": 1.0, "density": 0.4, "gamma": 0.02}),
                          (z["b"], {"weight": 1.0, "density": 0.6, "gamma": 0.05}))},
    "task-arithmetic-normalised": lambda z: {"merge_method": "task_arithmetic", "base_model": str(z["base"]),
        "dtype": "float32", "parameters": {"normalize": True},
        "models": _models((z["a"], {"weight": 0.5}), (z["b"], {"weight": 0.3}))},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_engine_writes_the_torch_paths_bytes(case: str, zoo: dict[str, Path], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    host, torch_files, engine = _merge_both(CASES[case](zoo), tmp_path, monkeypatch)
    assert engine, "the engine should run this plan"
    assert host.keys() == torch_files.keys()
    for name in host:
        if name != "evomm_merge.json":  # carries no timing, but compare it too below
            assert host[name] == torch_files[name], name
    assert host["evomm_merge.json"] == torch_files["evomm_merge.json"]


def test_sharded_outputs_are_the_same(zoo: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host, torch_files, engine = _merge_both(CASES["linear-bf16"](zoo), tmp_path, monkeypatch, max_shard_bytes=40_000)
    assert engine and "model.safetensors.index.json" in host and len(host) > 4
    assert host == torch_files


def test_della_does_not_use_the_engine(zoo: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = {"merge_method": "della", "base_model": str(zoo["base"]), "models": _models(
        (zoo["a"], {"weight": 0.5, "density": 0.4}), (zoo["b"], {"weight": 0.5, "density": 0.6}))}
    host, torch_files, engine = _merge_both(recipe, tmp_path, monkeypatch)
    assert not engine and host == torch_files


class _Choosy(Linear):
    """Linear whose torch-free form declines the MLP tensors (the engine merges them with torch)."""

    name = "choosy_linear"

    def merge_arrays(self, arrays, base, global_params, model_params, ctx, dtype):  # type: ignore[no-untyped-def]
        if ctx.kind is ModuleKind.MLP:
            return None
        return super().merge_arrays(arrays, base, global_params, model_params, ctx, dtype)


class _ChoosyPlugin:
    @hookimpl
    def evomm_register_merge_operators(self, registry: Any) -> None:
        registry.add(_Choosy)


def test_tensors_an_operator_declines_are_merged_by_torch(zoo: dict[str, Path], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    plugins = load_plugins(extra=[_ChoosyPlugin()])
    recipe = CASES["linear-bf16"](zoo) | {"merge_method": "choosy_linear"}
    host, torch_files, engine = _merge_both(recipe, tmp_path, monkeypatch, plugins=plugins)
    assert engine
    assert host["model.safetensors"] == torch_files["model.safetensors"]
    plain, _, _ = _merge_both(CASES["linear-bf16"](zoo), tmp_path / "plain", monkeypatch)
    assert host["model.safetensors"] == plain["model.safetensors"]


@pytest.mark.parametrize("case", ["linear-bf16", "ties", "dare-ties-f32-compute"])
def test_a_cli_merge_never_loads_torch(case: str, zoo: dict[str, Path], tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(CASES[case](zoo)))
    child = textwrap.dedent("""
        import sys
        from evomm.cli import main
        rc = main(sys.argv[1:])
        print("RC", rc, "TORCH", "torch" in sys.modules)
    """)
    proc = subprocess.run([sys.executable, "-c", child, "merge", str(recipe), "--out", str(tmp_path / "out"),
                           "--no-progress"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-4:] == ["RC", "0", "TORCH", "False"]
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_the_console_script_skips_teardown_after_a_merge(zoo: dict[str, Path], tmp_path: Path) -> None:
    """``evomm merge`` through the console script (:func:`evomm.cli.entry`) runs the exit
    handlers, flushes its output and ends with ``os._exit``: a non-daemon thread that would
    keep a normal exit waiting forever does not, and the merged bytes are those of ``main``."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(CASES["dare-ties-f32-compute"](zoo)))
    child = textwrap.dedent("""
        import atexit, sys, threading
        from evomm import cli
        threading.Thread(target=threading.Event().wait).start()  # never ends: blocks a normal exit
        atexit.register(lambda: print("ATEXIT RAN"))
        sys.argv = ["evomm", "merge", sys.argv[1], "--out", sys.argv[2], "--no-progress"]
        cli.entry()
        print("NOT REACHED")
    """)
    proc = subprocess.run([sys.executable, "-c", child, str(recipe), str(tmp_path / "fast")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "merged" in proc.stdout and "ATEXIT RAN" in proc.stdout and "NOT REACHED" not in proc.stdout
    assert main(["merge", str(recipe), "--out", str(tmp_path / "plain"), "--no-progress"]) == 0
    for f in ("model.safetensors", "config.json"):
        assert (tmp_path / "fast" / f).read_bytes() == (tmp_path / "plain" / f).read_bytes()


def test_other_commands_and_failed_merges_exit_the_ordinary_way(zoo: dict[str, Path], tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from evomm import cli

    monkeypatch.setattr(sys, "argv", ["evomm", "plugins"])
    with pytest.raises(SystemExit) as done:
        cli.entry()
    assert done.value.code == 0
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(CASES["linear-bf16"](zoo)))
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("not empty")
    monkeypatch.setattr(sys, "argv", ["evomm", "merge", str(recipe), "--out", str(tmp_path / "taken")])
    with pytest.raises(SystemExit) as failed:
        cli.entry()
    assert failed.value.code == 2
