"""Merge throughput: evomm vs mergekit on three random bf16 Llama checkpoints made locally.

Makes a base model and two "fine-tunes" (base + noise) of about 350M parameters each (``--size``
for smaller/faster runs), merges them with linear, TIES and DARE-TIES using ``evomm merge`` and —
when ``--mergekit-python`` points to a Python with mergekit installed — ``mergekit-yaml`` on the
same YAML recipe, each in its own child process, and prints wall time, peak RSS of that process
(``os.wait4``), effective throughput ((bytes read + bytes written) / wall time) and the ratios.
It also reports the largest difference between the two tools' outputs, each tool's start-up
(its ``--help``) and the ratio of the wall times less those start-ups, which is what the ratio
tends to for models whose merge takes minutes. (``evomm --help`` imports no torch, which evomm
loads at first use, so evomm's start-up subtracted there is the smaller part of what a merge
pays before merging; mergekit's ``--help`` imports torch and transformers.) With ``--baseline
DIR`` it also times evomm from another source tree in the same run, e.g. an older commit
(``git archive <commit> evomm plugins | tar -x -C DIR``; run with ``PYTHONPATH=DIR:DIR/plugins``),
and with ``--baseline-torch-path`` that tree with ``EVOMM_CPU_ENGINE=0`` (before issue 18 evomm
had a NumPy/numba CPU engine beside torch; the switch turned it off).

Weights (``--weights``): ``random`` (the default) draws the base from N(0, 0.02) and each
fine-tune as base + N(0, 0.002); ``default-init`` is the held-out recipe of issue 18: the base is
``LlamaForCausalLM(config)``'s own default initialisation (normal(0, 0.02) matrices, RMSNorm
weights of exactly 1), each fine-tune the base plus per-tensor Gaussian noise of 2% of that
tensor's standard deviation. In bf16 that noise is a few units in the last place, so the task
vectors take few distinct magnitudes (at 350M: ~9% of each matrix's entries are exactly zero and
~15% tie at its median magnitude, against ~2% and ~2% for ``random``) and the norms' are all
zero: magnitude top-k meets large groups of ties at its threshold.

First run and warm: each tool's first timed run per method is its *first run*, what a user's
first merge pays (a baseline tree with numba kernels gets an empty ``NUMBA_CACHE_DIR`` of its
own, so they are compiled; evomm and mergekit keep no compile cache). The ``--repeat`` runs
after it are *warm* and give the medians of the main table; ``--no-first-run`` skips the first
runs.

Usage::

    .venv/bin/python bench/merge_throughput.py --size 350m --mergekit-python /tmp/mkvenv/bin/python
    .venv/bin/python bench/merge_throughput.py --size tiny          # a quick check
    .venv/bin/python bench/merge_throughput.py --models /tmp/m350   # make once, then reuse
    .venv/bin/python bench/merge_throughput.py --models /tmp/m350-init --weights default-init \
        --baseline /tmp/evomm-old --mergekit-python /tmp/mkvenv/bin/python

Timings are wall-clock on whatever machine runs this; nothing is asserted. On a shared or
virtual machine the same command can take twice as long from one minute to the next:
``--repeat N`` runs both tools N times, alternating, and reports the median of each (every
run's time is printed too), so one noisy moment does not decide a ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

#: name -> (hidden, layers, intermediate, vocab, heads, kv heads)
SIZES = {
    "1b": (2048, 22, 5632, 32000, 32, 4),  # TinyLlama-1.1B's shape: where the merge, not start-up, is the time
    "350m": (1024, 24, 2816, 32000, 16, 8),
    "120m": (768, 12, 2048, 32000, 12, 4),
    "tiny": (256, 4, 688, 8000, 8, 4),
}
def baseline_variants(tree: str | None, torch_path: bool) -> list[tuple[str, dict[str, str], str]]:
    """evomm from another source tree, timed in the same run: (key, environment, what it is)."""
    if tree is None:
        return []
    root = Path(tree).resolve()
    env = {"PYTHONPATH": f"{root}{os.pathsep}{root / 'plugins'}"}
    out = [("old", env, f"the evomm in {root}")]
    if torch_path:
        out.append(("oldtorch", {**env, "EVOMM_CPU_ENGINE": "0"}, f"the evomm in {root}, EVOMM_CPU_ENGINE=0"))
    return out
#: What :func:`make_models` records in the models' directory: ``{"size": ..., "weights": ...}``.
MADE = "bench-models.json"
#: ``--weights`` -> what the input models hold (see the module docstring)
WEIGHTS = {
    "random": "base N(0, 0.02), fine-tunes base + N(0, 0.002)",
    "default-init": "base LlamaForCausalLM(config)'s default init, fine-tunes base + per-tensor N(0, (0.02 std)^2)",
}
RECIPES = {
    "linear": {"merge_method": "linear", "models": [
        {"model": "base", "parameters": {"weight": 0.4}}, {"model": "a", "parameters": {"weight": 0.3}},
        {"model": "b", "parameters": {"weight": 0.3}}]},
    "ties": {"merge_method": "ties", "base_model": "base", "models": [
        {"model": "a", "parameters": {"weight": 0.5, "density": 0.5}},
        {"model": "b", "parameters": {"weight": 0.5, "density": 0.5}}]},
    "dare_ties": {"merge_method": "dare_ties", "base_model": "base", "models": [
        {"model": "a", "parameters": {"weight": 0.5, "density": 0.5}},
        {"model": "b", "parameters": {"weight": 0.5, "density": 0.5}}]},
    # issue 20's methods (nearswap and arcee_fusion read two of the three models)
    "nuslerp": {"merge_method": "nuslerp", "base_model": "base", "models": [
        {"model": "a", "parameters": {"weight": 0.6}}, {"model": "b", "parameters": {"weight": 0.4}}]},
    "multislerp": {"merge_method": "multislerp", "base_model": "base", "models": [
        {"model": "a", "parameters": {"weight": 0.6}}, {"model": "b", "parameters": {"weight": 0.4}}]},
    "karcher": {"merge_method": "karcher", "models": [{"model": "base"}, {"model": "a"}, {"model": "b"}]},
    "sce": {"merge_method": "sce", "base_model": "base", "parameters": {"select_topk": 0.5},
            "models": [{"model": "a"}, {"model": "b"}]},
    "nearswap": {"merge_method": "nearswap", "base_model": "base", "parameters": {"t": 0.001},
                 "models": [{"model": "a"}]},
    "arcee_fusion": {"merge_method": "arcee_fusion", "base_model": "base", "models": [{"model": "a"}]},
    "ram": {"merge_method": "ram", "base_model": "base", "parameters": {"epsilon": 0.001},
            "models": [{"model": "a"}, {"model": "b"}]},
    "ramplus_tl": {"merge_method": "ramplus_tl", "base_model": "base",
                   "parameters": {"epsilon": 0.001, "r": 0.5, "alpha": 0.5},
                   "models": [{"model": "a"}, {"model": "b"}]},
}


def make_models(root: Path, size: str, weights: str = "random") -> dict[str, Path]:
    """Write base, a, b (bf16 safetensors + config) under ``root``, their weights drawn as
    ``weights`` (a key of :data:`WEIGHTS`) says; returns alias -> dir."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, layers, inter, vocab, heads, kv = SIZES[size]
    cfg = LlamaConfig(hidden_size=hidden, num_hidden_layers=layers, intermediate_size=inter,
                      vocab_size=vocab, num_attention_heads=heads, num_key_value_heads=kv,
                      tie_word_embeddings=False, max_position_embeddings=2048)
    cfg.architectures = ["LlamaForCausalLM"]
    cfg.torch_dtype = "bfloat16"
    gen = torch.Generator().manual_seed(0)
    if weights == "default-init":
        torch.manual_seed(0)  # the model's own initialisation draws from the global generator
        base = {n: p.detach().to(torch.bfloat16) for n, p in LlamaForCausalLM(cfg).named_parameters()}
        shapes = {n: tuple(t.shape) for n, t in base.items()}
    else:
        with torch.device("meta"):
            shapes = {n: tuple(p.shape) for n, p in LlamaForCausalLM(cfg).named_parameters()}
        base = {n: (torch.randn(shape, generator=gen) * 0.02).to(torch.bfloat16) for n, shape in shapes.items()}
    out = {}
    for alias in ("base", "a", "b"):
        d = root / alias
        d.mkdir(parents=True)
        cfg.save_pretrained(d)
        tensors = {}
        for name, shape in shapes.items():
            if alias == "base":
                tensors[name] = base[name]
                continue
            # a fine-tune: base + small noise (default-init: 2% of the tensor's std; the norms'
            # std is 0, so they get none)
            scale = 0.02 * float(base[name].float().std()) if weights == "default-init" else 0.002
            tensors[name] = (base[name].float() + torch.randn(shape, generator=gen) * scale).to(torch.bfloat16)
        save_file(tensors, str(d / "model.safetensors"), metadata={"format": "pt"})
        out[alias] = d
    (root / MADE).write_text(json.dumps({"size": size, "weights": weights}) + "\n")
    n = sum(torch.Size(s).numel() for s in shapes.values())
    print(f"made 3 Llama checkpoints of {n / 1e6:.0f}M parameters (bf16, weights {weights}: "
          f"{WEIGHTS[weights]}) in {root}", flush=True)
    return out


def settle(paths: list[Path]) -> None:
    """Give every timed run the same start: the inputs in the page cache (read once, so neither
    tool pays for a cold disk) and no dirty pages of an earlier run's output waiting to be
    written back (the kernel throttles a writer once too many are dirty: writing 0.7 GB took
    0.15 s or 1.8 s on the same machine depending on what the previous run left behind)."""
    for d in paths:
        for f in d.glob("*.safetensors"):
            with open(f, "rb", buffering=0) as fh:
                while fh.read(64 * 2**20):
                    pass
    os.sync()


def _hwm_mib(pid: int) -> float | None:
    """The peak resident set (VmHWM) of a running process, in MiB, or None (not Linux, or gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def run_child(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str, float]:
    """Run ``cmd``; return (wall seconds, peak RSS of that child in MiB, its combined output,
    its CPU seconds, user + system: steadier than wall time on a shared machine).

    The peak RSS is the child's VmHWM, polled every 5 ms while it runs. ``ru_maxrss`` from
    ``wait4`` is not used where /proc exists: Linux carries the forking process's peak over
    ``exec`` into it, so it never reads below this benchmark's own resident size (~1 GB with
    torch imported; more after making the models)."""
    start = time.perf_counter()
    peak = None
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            hwm = _hwm_mib(proc.pid)
            if hwm is not None:
                peak = max(peak or 0.0, hwm)
            time.sleep(0.005)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: keep Popen from waiting
        log.seek(0)
        text = log.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)}\n{text[-3000:]}")
    rss = peak if peak is not None else usage.ru_maxrss / 1024  # ru_maxrss: KiB
    return wall, rss, text, usage.ru_utime + usage.ru_stime


def _medians(runs: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    """Per-column medians of (wall, peak RSS, CPU) over the runs."""
    return tuple(statistics.median(col) for col in zip(*runs))  # type: ignore[return-value]


def _after_startup(row: dict, start: dict[str, float]) -> float:
    """mergekit's wall time over evomm's, each less its tool's start-up (floored at 0.1 s)."""
    return max(row["mk_s"] - start["mk"], 0.1) / max(row["evomm_s"] - start["evomm"], 0.1)


def nbytes(d: Path) -> int:
    return sum(f.stat().st_size for f in d.glob("*.safetensors"))


def _same_files(a: Path, b: Path) -> bool:
    """Whether two output directories hold the same weight files, byte for byte."""
    names = sorted(p.name for p in a.glob("*.safetensors"))
    return names == sorted(p.name for p in b.glob("*.safetensors")) and all(
        (a / n).read_bytes() == (b / n).read_bytes() for n in names
    )


def max_diff(a: Path, b: Path) -> float:
    from safetensors import safe_open

    def files(d: Path) -> dict[str, Path]:
        out = {}
        for f in d.glob("*.safetensors"):
            with safe_open(str(f), "pt") as h:
                out.update(dict.fromkeys(h.keys(), f))
        return out

    fa, fb = files(a), files(b)
    worst = 0.0
    for name, f in fa.items():
        with safe_open(str(f), "pt") as ha, safe_open(str(fb[name]), "pt") as hb:
            x, y = ha.get_tensor(name).float(), hb.get_tensor(name).float()
            worst = max(worst, float((x - y).abs().max()))
    return worst


@dataclass
class Tool:
    """One command the bench times: ``cmd(recipe, out_dir)`` run with ``env`` added; ``numba``:
    it may keep numba kernels on disk (a baseline tree: its first run gets an empty cache)."""

    key: str
    cmd: Callable[[Path, Path], list[str]]
    env: dict[str, str]
    numba: bool


def _tools(args: argparse.Namespace, variants: list[tuple[str, dict[str, str], str]]) -> list[Tool]:
    """The commands timed per method: evomm, its variants, and mergekit when it is given."""
    evomm = [str(Path(sys.executable).parent / "evomm")]

    def evomm_cmd(recipe: Path, out: Path) -> list[str]:
        return [*evomm, "merge", str(recipe), "--out", str(out), "--no-progress"]

    tools = [Tool("evomm", evomm_cmd, {}, numba=False)]
    tools += [Tool(key, evomm_cmd, env, numba=True) for key, env, _ in variants]
    if args.mergekit_python:
        mk = str(Path(args.mergekit_python).parent / "mergekit-yaml")
        tools.append(Tool("mk", lambda recipe, out: [mk, str(recipe), str(out)], {}, numba=False))
    return tools


def time_method(
    method: str, recipe: Path, root: Path, tools: list[Tool], models: list[Path], repeat: int, first_run: bool
) -> tuple[dict[str, tuple[float, float, float]], dict[str, list[tuple[float, float, float]]]]:
    """Time every tool on one recipe: ``(first, warm)``, each tool's first run (when
    ``first_run``) and its ``repeat`` warm runs as (wall s, peak RSS MiB, CPU s), alternating
    between the tools so that one noisy moment of a shared machine hits them alike."""
    first: dict[str, tuple[float, float, float]] = {}
    warm: dict[str, list[tuple[float, float, float]]] = {t.key: [] for t in tools}
    for rep in range(max(1, repeat) + int(first_run)):
        for tool in tools:
            env = dict(tool.env)
            if first_run and tool.numba:
                cache = root / f"numba-cache-{method}-{tool.key}"
                if rep == 0:  # the first run compiles into an empty cache, the warm ones load it
                    shutil.rmtree(cache, ignore_errors=True)
                env["NUMBA_CACHE_DIR"] = str(cache)
            out = root / f"out-{tool.key}-{method}"
            shutil.rmtree(out, ignore_errors=True)
            settle(models)
            wall, rss, _, cpu = run_child(tool.cmd(recipe, out), env={**os.environ, **env})
            if first_run and rep == 0:
                first[tool.key] = (wall, rss, cpu)
            else:
                warm[tool.key].append((wall, rss, cpu))
    return first, warm


def summarise(
    method: str, first: dict[str, tuple[float, float, float]], warm: dict[str, list[tuple[float, float, float]]],
    root: Path, read: int, variants: list[tuple[str, dict[str, str], str]], mk: bool,
) -> dict:
    """One method's row: per tool the warm medians (``<key>_s``, ``_cpu_s``, ``_rss``), every warm
    run, the first run (``<key>_first_s``, ``_first_rss``) when timed, and the comparisons."""
    row: dict = {"method": method}
    for key, runs in warm.items():
        wall, rss, cpu = _medians(runs)
        row.update({f"{key}_s": wall, f"{key}_cpu_s": cpu, f"{key}_rss": rss,
                    f"{key}_gbs": (read + nbytes(root / f"out-{key}-{method}")) / wall / 1e9,
                    f"{key}_runs_s": [r[0] for r in runs]})
        if key in first:
            row.update({f"{key}_first_s": first[key][0], f"{key}_first_rss": first[key][1]})
    for key, _, _ in variants:
        row[f"{key}_same_bytes"] = _same_files(root / f"out-evomm-{method}", root / f"out-{key}-{method}")
        row[f"{key}_max_diff"] = max_diff(root / f"out-evomm-{method}", root / f"out-{key}-{method}")
    if mk:
        row["max_abs_diff"] = max_diff(root / f"out-evomm-{method}", root / f"out-mk-{method}")
    return row


def print_tables(rows: list[dict], args: argparse.Namespace, start: dict[str, float], inputs: int,
                 variants: list[tuple[str, dict[str, str], str]], mk: bool) -> None:
    """The summary: evomm vs mergekit (warm medians), first run and warm of every tool side by
    side, each variant against evomm, and every run's time."""
    runs_note = f", medians of {args.repeat} alternating runs" if args.repeat > 1 else ""
    print(f"\nsize {args.size}, weights {args.weights}, inputs {inputs / 1e9:.2f} GB, torch threads: default{runs_note}")
    mk_start = f", mergekit {start['mk']:.2f} s" if mk else ""
    print(f"start-up (`--help`: imports, no merge): evomm {start['evomm']:.2f} s{mk_start}")
    head = f"{'method':<10} {'evomm s':>8} {'cpu s':>6} {'RSS MiB':>8} {'GB/s':>6}"
    if mk:
        head += (f" {'mk s':>8} {'mk cpu':>6} {'mk RSS':>8} {'mk GB/s':>8} {'speedup':>8} {'RSS ratio':>9}"
                 f" {'max|diff|':>10} {'after start-up':>15}")
    print(head)
    for r in rows:
        line = f"{r['method']:<10} {r['evomm_s']:8.1f} {r['evomm_cpu_s']:6.1f} {r['evomm_rss']:8.0f} {r['evomm_gbs']:6.2f}"
        if mk:
            line += (f" {r['mk_s']:8.1f} {r['mk_cpu_s']:6.1f} {r['mk_rss']:8.0f} {r['mk_gbs']:8.2f} {r['mk_s'] / r['evomm_s']:7.2f}x"
                     f" {r['evomm_rss'] / r['mk_rss']:9.2f} {r['max_abs_diff']:10.3g}"
                     f" {_after_startup(r, start):14.2f}x")
        print(line)
    keys = ["evomm", *(key for key, _, _ in variants), *(["mk"] if mk else [])]
    if not args.no_first_run:
        print("\nfirst run and warm (median), wall s / peak RSS MiB"
              + ("; mergekit's time over each" if mk else "") + ":")
        print(f"{'method':<10} " + " ".join(f"{k + ' first':>20} {k + ' warm':>20}" for k in keys))
        for r in rows:
            cells = []
            for k in keys:
                for tag, s, rss in (("first", r[f"{k}_first_s"], r[f"{k}_first_rss"]), ("warm", r[f"{k}_s"], r[f"{k}_rss"])):
                    ratio = ""
                    if mk and k != "mk":
                        ratio = f"{(r['mk_first_s'] if tag == 'first' else r['mk_s']) / s:5.1f}x"
                    cells.append(f"{s:6.1f}/{rss:5.0f} {ratio:>6}")
            print(f"{r['method']:<10} " + " ".join(f"{c:>20}" for c in cells))
    for key, _, what in variants:
        print(f"\nevomm against {what}, same run:")
        for r in rows:
            print(f"{r['method']:<10} evomm {r['evomm_s']:.1f} s ({r['evomm_cpu_s']:.1f} s CPU), {key} "
                  f"{r[key + '_s']:.1f} s ({r[key + '_cpu_s']:.1f} s CPU): {r[key + '_s'] / r['evomm_s']:.2f}x; "
                  f"peak RSS {r['evomm_rss']:.0f} vs {r[key + '_rss']:.0f} MiB; same bytes: {r[key + '_same_bytes']}"
                  f" (max |diff| {r[key + '_max_diff']:.3g})")
    if args.repeat > 1:
        for r in rows:
            each = " | ".join(f"{'mergekit' if k == 'mk' else k} " + " ".join(f"{t:.1f}" for t in r[k + "_runs_s"])
                              for k in keys)
            print(f"{r['method']:<10} every warm run, s: {each}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="350m", help="model size (default 350m)")
    ap.add_argument("--weights", choices=sorted(WEIGHTS), default="random",
                    help="how the input models' weights are drawn (default random; see the module docstring)")
    ap.add_argument("--methods", default="linear,ties,dare_ties", help="comma-separated recipes to run")
    ap.add_argument("--mergekit-python", default=None, help="a python with mergekit 0.1.5 installed")
    ap.add_argument("--workdir", default=None, help="where to put models and outputs (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--repeat", type=int, default=1,
                    help="warm timed runs per tool and method, alternating; medians are reported (default 1)")
    ap.add_argument("--no-first-run", action="store_true",
                    help="skip each tool's first run")
    ap.add_argument("--models", default=None,
                    help="directory of the input models: reused when it holds base/a/b, else made there and kept")
    ap.add_argument("--baseline", default=None, metavar="DIR",
                    help="also time evomm from the source tree DIR (holding evomm/ and plugins/), alternating")
    ap.add_argument("--baseline-torch-path", action="store_true",
                    help="with --baseline: also time that tree with EVOMM_CPU_ENGINE=0 (its torch path)")
    args = ap.parse_args()
    variants = baseline_variants(args.baseline, args.baseline_torch_path)
    torch.set_num_threads(1)
    root = Path(args.workdir or tempfile.mkdtemp(prefix="evomm-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        mdir = Path(args.models) if args.models else root / "models"
        if args.models and all((mdir / a / "model.safetensors").is_file() for a in ("base", "a", "b")):
            # directories made before the record existed hold the random weights
            made = json.loads((mdir / MADE).read_text()) if (mdir / MADE).is_file() else {"size": "?", "weights": "random"}
            if made["weights"] != args.weights:
                raise SystemExit(f"--models {mdir} holds weights {made['weights']!r}, not {args.weights!r}: "
                                 f"pass --weights {made['weights']} or another --models directory")
            args.size = made["size"]
            models = {a: mdir / a for a in ("base", "a", "b")}
            print(f"reusing the models in {mdir} (size {made['size']}, weights {made['weights']})", flush=True)
        else:
            models = make_models(mdir, args.size, args.weights)
        in_bytes = {k: nbytes(v) for k, v in models.items()}
        tools = _tools(args, variants)
        mk = args.mergekit_python is not None
        # Start-up: each tool's `--help`, which imports what a merge imports (torch; for mergekit
        # also transformers) and merges nothing. It is part of every wall time above; the
        # "after start-up" ratio divides what is left, the merge itself, as it would scale to
        # models whose merge takes minutes.
        evomm = [str(Path(sys.executable).parent / "evomm")]
        start = {"evomm": statistics.median(run_child([*evomm, "merge", "--help"])[0]
                                            for _ in range(max(1, args.repeat)))}
        if mk:
            mk_cmd = str(Path(args.mergekit_python).parent / "mergekit-yaml")
            start["mk"] = statistics.median(run_child([mk_cmd, "--help"])[0] for _ in range(max(1, args.repeat)))
        rows = []
        for method in args.methods.split(","):
            recipe = json.loads(json.dumps(RECIPES[method]))
            for m in recipe["models"]:
                m["model"] = str(models[m["model"]])
            if "base_model" in recipe:
                recipe["base_model"] = str(models[recipe["base_model"]])
            recipe.update(dtype="bfloat16", out_dtype="bfloat16")
            path = root / f"{method}.yaml"
            path.write_text(yaml.safe_dump(recipe, sort_keys=False))
            first, warm = time_method(method, path, root, tools, list(models.values()), args.repeat,
                                      not args.no_first_run)
            # every recipe reads all three models once
            rows.append(summarise(method, first, warm, root, sum(in_bytes.values()), variants, mk))
            print(json.dumps(rows[-1]), flush=True)
        print_tables(rows, args, start, sum(in_bytes.values()), variants, mk)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
