"""Memory and time before anything is loaded: what ``evomm evolve --dry-run`` and
``evomm merge --dry-run`` print.

The planner reads only each parent's safetensors headers (:func:`evomm.safetensors_header.read_header`),
or a GGUF file's tensor table (``gguf.GGUFReader``, memory-mapped), so it is instant on 7B
checkpoints. Nothing is dequantised, merged or built.

The model of an evolution worker (one candidate at a time, :class:`evomm.execute.InMemoryMerger`):

* every parent's (and the base's) tensors, cached in the recipe's ``dtype`` after the first
  candidate: ``sum(parent parameters) x bytes(dtype)``;
* the working model the candidates are written into: ``parameters x bytes(dtype)``;
* the merge's scratch: the largest tensor in float32, ``(parents + 2)`` times;
* the evaluation's key/value cache, for ``batch x (prompt + new tokens)`` positions;
* the runtime: Python with torch, transformers and evomm imported, :data:`RUNTIME_BYTES`
  (measured; see ``bench/plan_memory.py``, which compares the estimate with a worker's measured
  peak RSS).

Time: one candidate's merge reads every cached parent tensor and writes the model once, so it
takes at least ``(parents + 1) x parameters x bytes(dtype) / bandwidth``; the bandwidth is
measured on the spot on CPU (a 64 MB copy) and taken as :data:`GPU_BANDWIDTH` on a GPU. The
number of item evaluations per candidate is the sum of the objectives' task ``limit`` s (a task
without ``limit`` scores its whole split, whose size is only known once loaded).

Example:
    >>> from evomm.planner import human
    >>> human(3 * 2**30)
    '3.2 GB'
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from evomm.errors import EvommError

#: Bytes per element of the dtypes recipes and checkpoints use (safetensors and torch names).
DTYPE_BYTES = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2, "float8_e4m3fn": 1, "float8_e5m2": 1,
               "int64": 8, "int32": 4, "int16": 2, "int8": 1, "uint8": 1, "bool": 1,
               "F64": 8, "F32": 4, "BF16": 2, "F16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
#: Resident memory of a worker process before any model: Python, torch, transformers and evomm's
#: plugins imported (602 MB measured by bench/plan_memory.py on the project's 2-core VM, CPU
#: torch, transformers 5.25).
RUNTIME_BYTES = 600 * 10**6
#: How many of a parent's largest tensors :class:`ParentSize` keeps (a streaming merge holds a few
#: steps in flight).
TOP = 4
#: Effective device-memory bandwidth assumed on a GPU (bytes/s): about half an H100's HBM3
#: peak, what elementwise torch kernels reach.
GPU_BANDWIDTH = 1.5e12


def human(n: float) -> str:
    """Bytes as text in decimal units (``'3.2 GB'``)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True)
class ParentSize:
    """What a parent weighs, from its headers.

    Attributes:
        name: the recipe's alias.
        params: number of elements of its weights (``None``: unknown).
        stored_bytes: bytes of its weight files as stored.
        top: elements of its :data:`TOP` largest tensors, largest first.
        config: its ``config.json`` (empty when there is none).
        source: where the figures come from (``safetensors headers``, ``GGUF tensor table``).
    """

    name: str
    params: int | None
    stored_bytes: int
    top: tuple[int, ...]
    config: dict
    source: str

    @property
    def largest(self) -> int:
        """Elements of the largest tensor."""
        return self.top[0] if self.top else 0


def _from_safetensors(name: str, directory: Path) -> ParentSize | None:
    from evomm.safetensors_header import read_header

    files = sorted(directory.glob("*.safetensors"))
    if not files:
        return None
    counts, stored = [], 0
    for f in files:
        for entry in read_header(f).entries.values():
            counts.append(math.prod(entry.shape))
            stored += entry.size
    return ParentSize(name, sum(counts), stored, _top(counts), _config(directory),
                      f"safetensors headers ({len(files)} files)")


def _top(counts: list[int]) -> tuple[int, ...]:
    return tuple(sorted(counts, reverse=True)[:TOP])


def _from_gguf(name: str, path: Path) -> ParentSize:
    from gguf import GGUFReader  # memory-maps the file; reads the tensor table only

    counts = [int(t.n_elements) for t in GGUFReader(path).tensors]
    return ParentSize(name, sum(counts), path.stat().st_size, _top(counts), {},
                      "GGUF tensor table (dequantised once into the float32 cache)")


def _config(directory: Path) -> dict:
    try:
        return json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return {}


def parent_size(name: str, path: str) -> ParentSize | str:
    """:class:`ParentSize` of the model at ``path``, or a sentence saying why it is unknown.

    Example:
        >>> parent_size("m", "/nonexistent")
        'no local files at /nonexistent (a hub id is sized once downloaded)'
    """
    from evomm.gguf import find_gguf

    p = Path(path).expanduser()
    if not p.exists():
        return f"no local files at {path} (a hub id is sized once downloaded)"
    try:
        gguf_file = find_gguf(p)
        if gguf_file is not None:
            return _from_gguf(name, gguf_file)
        found = _from_safetensors(name, p)
    except (EvommError, ImportError, OSError, ValueError) as exc:
        return f"cannot read the headers of {path}: {exc}"
    return found if found is not None else f"{path} has no safetensors files (pickle weights are not sized)"


@dataclass(frozen=True)
class WorkerPlan:
    """The estimate for one evolution worker (see the module docstring); all sizes in bytes."""

    parents: tuple[ParentSize, ...]
    unknown: tuple[str, ...]
    dtype: str
    device: str
    cache: int
    model: int
    scratch: int
    kv_cache: int
    runtime: int
    merge_seconds: float
    bandwidth: float

    @property
    def total(self) -> int:
        """Peak resident memory of the worker (host RAM on CPU, device memory on a GPU + runtime)."""
        return self.cache + self.model + self.scratch + self.kv_cache + self.runtime

    def lines(self, workers: int = 1, items: str = "") -> list[str]:
        """The dry run's text."""
        out = ["memory and time plan (from headers; nothing loaded):"]
        for p in self.parents:
            out.append(f"  parent {p.name}: {p.params / 1e9:.3g}B parameters, {human(p.stored_bytes)} stored "
                       f"({p.source}); {human(p.params * DTYPE_BYTES[self.dtype])} as {self.dtype}")
        out += [f"  parent {u}" for u in self.unknown]
        where = "GPU memory" if self.device != "cpu" else "RAM"
        out.append(f"  per worker ({self.device}): parents cached {human(self.cache)} + working model "
                    f"{human(self.model)} + merge scratch {human(self.scratch)} + KV cache {human(self.kv_cache)} "
                    f"+ runtime {human(self.runtime)} = {human(self.total)} {where}"
                    + (f"; {workers} workers: {human(self.total * workers)}" if workers > 1 else ""))
        out.append(f"  merge per candidate: >= {self.merge_seconds:.2g} s at {human(self.bandwidth)}/s "
                   f"({'measured' if self.device == 'cpu' else 'assumed'} memory bandwidth)")
        if items:
            out.append(f"  item evaluations per candidate: {items}")
        if self.unknown:
            out.append("  (parents of unknown size are not counted)")
        return out


def cpu_bandwidth(nbytes: int = 64 * 2**20) -> float:
    """Copy bandwidth of this machine's memory (bytes/s): best of three copies of ``nbytes``."""
    import numpy as np

    a = np.ones(nbytes // 8)
    b = np.empty_like(a)
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t0)
    return 2 * nbytes / best  # read + write


def _kv_bytes(config: dict, dtype: str, positions: int) -> int:
    text = config.get("text_config", config)
    layers = int(text.get("num_hidden_layers", 0) or 0)
    heads = int(text.get("num_key_value_heads") or text.get("num_attention_heads") or 0)
    hidden, n_heads = text.get("hidden_size", 0), text.get("num_attention_heads") or 1
    head_dim = int(text.get("head_dim") or hidden // n_heads)
    return 2 * layers * heads * head_dim * positions * DTYPE_BYTES[dtype]


def plan_worker(
    parents: Sequence[tuple[str, str]],
    dtype: str = "float32",
    *,
    device: str = "cpu",
    positions: int = 16 * 1024,
    bandwidth: float | None = None,
) -> WorkerPlan:
    """Estimate one evolution worker's memory and merge time.

    Args:
        parents: ``(alias, path)`` of every model merged (parents and base).
        dtype: the recipe's compute dtype (parents are cached in it, the model is built in it).
        device: ``"cpu"`` or a GPU (``"cuda"``).
        positions: key/value positions the evaluation holds at once (batch x tokens).
        bandwidth: bytes/s; default: :func:`cpu_bandwidth` on CPU, :data:`GPU_BANDWIDTH` on a GPU.
    """
    sizes = [parent_size(n, p) for n, p in parents]
    known = tuple(s for s in sizes if isinstance(s, ParentSize))
    unknown = tuple(f"{n}: {s}" for (n, _), s in zip(parents, sizes) if isinstance(s, str))
    per = DTYPE_BYTES[dtype]
    biggest = max((s.params for s in known), default=0)
    cache = sum(s.params for s in known) * per
    model = biggest * per
    scratch = max((s.largest for s in known), default=0) * 4 * (len(known) + 2)
    kv = max((_kv_bytes(s.config, dtype, positions) for s in known), default=0)
    bw = bandwidth or (cpu_bandwidth() if device == "cpu" else GPU_BANDWIDTH)
    seconds = (cache + model) / bw
    return WorkerPlan(known, unknown, dtype, device, cache, model, scratch, kv, RUNTIME_BYTES, seconds, bw)


def items_per_candidate(recipe: object) -> str:
    """The item evaluations one candidate costs under an evolve recipe (``"150"``, or a note)."""
    tasks = getattr(recipe, "tasks", {}) or {}
    total, whole = 0, []
    for objective in getattr(recipe, "objectives", []):
        names = list(objective.suite or {}) if objective.suite else [objective.task]
        for name in names:
            opts = tasks.get(name)
            if opts is not None and opts.limit:
                total += opts.limit
            else:
                whole.append(str(name))
    text = str(total)
    if whole:
        text += f" + the whole split of {', '.join(sorted(set(whole)))}"
    cheap = getattr(recipe, "cheap_first", None)
    if cheap is not None:
        text += f" ({cheap.subset} per task first; the rest only for candidates that may enter the front)"
    return text


def evolve_plan_lines(recipe: object) -> list[str]:
    """``evomm evolve --dry-run``'s plan for an :class:`~evomm.evolve_recipe.EvolveRecipe`
    (its first stage's merge dtype, its executor's workers and GPUs)."""
    refs = [(p.name, p.path) for p in recipe.parents]  # type: ignore[attr-defined]
    base = getattr(recipe, "base_model", None)
    if base is not None:
        refs.append((base.name, base.path))
    stage = recipe.stages[0]  # type: ignore[attr-defined]
    dtype = (stage.merge.dtype if stage.merge is not None and stage.merge.dtype else None) or recipe.dtype  # type: ignore[attr-defined]
    executor = recipe.executor  # type: ignore[attr-defined]
    plan = plan_worker(refs, dtype, device="cuda" if executor.num_gpus_per_worker else "cpu")
    return plan.lines(executor.workers, items_per_candidate(recipe))


def merge_plan_lines(recipe: object, prefetch: int = 2) -> list[str]:
    """``evomm merge --dry-run``'s plan for a :class:`~evomm.recipe.MergeRecipe`: the parents,
    the output's size, and the streaming merge's in-flight memory (each tensor is read, merged
    and written on its own: ``prefetch`` steps read ahead, one merging, one being written)."""
    refs = [(r.name, r.path) for r in recipe.all_refs()]  # type: ignore[attr-defined]
    sizes = [parent_size(n, p) for n, p in refs]
    known = [s for s in sizes if isinstance(s, ParentSize)]
    out_dtype = recipe.out_dtype or recipe.dtype  # type: ignore[attr-defined]
    lines = ["memory and time plan (from headers; nothing loaded):"]
    for (name, _), s in zip(refs, sizes):
        lines.append(f"  parent {name}: " + (s if isinstance(s, str) else
                     f"{s.params / 1e9:.3g}B parameters, {human(s.stored_bytes)} stored ({s.source})"))
    if not known:
        return lines
    params = max(s.params for s in known)
    stored = sum(s.stored_bytes / max(s.params, 1) for s in known)  # bytes per element, all parents
    top = max((s.top for s in known), key=sum)[: prefetch + 2]
    in_flight = sum(top) * (stored + DTYPE_BYTES[out_dtype])
    read = sum(s.stored_bytes for s in known)
    bw = cpu_bandwidth()
    lines += [f"  output: {human(params * DTYPE_BYTES[out_dtype])} as {out_dtype}",
              f"  streaming merge: about {human(RUNTIME_BYTES + in_flight)} RAM "
              f"(runtime + the {len(top)} largest tensors of every parent and the output in flight)",
              f"  merge time: >= {(read + params * DTYPE_BYTES[out_dtype]) / bw:.2g} s at {human(bw)}/s "
              "memory bandwidth (disk reads and writes usually bound it)"]
    return lines
