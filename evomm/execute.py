"""Executing merge plans: streaming to disk, or into an already-loaded model in place.

* :func:`open_models` (:mod:`evomm.opening`) opens every model of a recipe lazily (adapter by
  name or detection) and checks that they can be merged.
* :func:`merge_to_dir` streams tensor by tensor: per output tensor it reads that tensor from each
  parent, merges it, and hands it to the donor's writer (peak memory: about one output shard
  plus one tensor per parent). Output goes to a temporary directory beside ``out_dir`` that is
  renamed at the end (:func:`evomm.outputs.staged_output`), so an error never leaves a
  half-written checkpoint.
* :class:`InMemoryMerger` keeps the parents' tensors in memory and writes each candidate's merged
  tensors into one preallocated model, in place: what the evolution loop calls per candidate.

Example:
    >>> plugins = get_plugins()                                          # doctest: +SKIP
    >>> recipe = load_recipe("configs/merge-ties.yaml", plugins)         # doctest: +SKIP
    >>> cks = open_models(recipe, plugins)                                # doctest: +SKIP
    >>> merge_to_dir(build_plan(recipe, cks, plugins), cks, "out", plugins)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from evomm.adapters import Checkpoint
from evomm.errors import ConfigError, MergeError, operator_failures
from evomm.finite import check_output, check_parent
from evomm.opening import open_models as open_models  # re-exported: merge's entry point
from evomm.operators import MergeOperator, TensorContext
from evomm.outputs import staged_output
from evomm.pipeline import BackgroundWriter, in_order, merge_threads, prefetched, single_threaded_torch
from evomm.plan import (
    MergePlan,
    TensorStep,
    plan_checkpoints,
    step_aliases,
    tensor_seed,
)
from evomm.recipe import get_operator

if TYPE_CHECKING:
    import torch

    from evomm.plugins import Plugins

#: Default shard size of written checkpoints (as ``save_pretrained``).
DEFAULT_SHARD_BYTES = 5 * 2**30
#: How many steps ahead :func:`merged_tensors` reads while the current step merges.
PREFETCH_STEPS = 2


def _dtype(name: str) -> torch.dtype:
    import torch
    return getattr(torch, name)


# ---------------------------------------------------------------------------------------------
# merging one tensor
# ---------------------------------------------------------------------------------------------


def merge_step(
    op: MergeOperator,
    plan: MergePlan,
    step: TensorStep,
    read: Callable[[str, str], torch.Tensor],
) -> torch.Tensor:
    """The merged tensor of one step (in the compute dtype, or as read for ``copy`` steps).

    Args:
        op: the operator instance.
        plan: the plan (models, base, seed, dtype).
        step: the step to run.
        read: ``read(alias, name)`` -> that model's tensor, in the compute dtype.

    A model listed in ``step.pad`` (vocabulary alignment) has its tensor extended with the
    donor's rows beyond its own before the operator sees it.
    """
    if step.action == "copy":
        return read(step.source or plan.donor, step.name)
    cache: dict[str, torch.Tensor] = {}
    pads = dict(step.pad)

    def get(alias: str) -> torch.Tensor:
        if alias not in cache:
            t = read(alias, step.name)
            if alias in pads:
                t = _pad_from_donor(t, get(plan.donor), pads[alias], alias, step.name)
            cache[alias] = t
        return cache[alias]

    tensors = [get(ref.name) for ref in plan.models]
    base = get(plan.base.name) if plan.base is not None else None
    ctx = TensorContext(step.name, step.kind, step.layer, tensor_seed(plan.seed, step.name))
    with operator_failures(plan.operator, step.name):
        return op.merge(
            tensors, base, dict(step.global_params), [dict(p) for p in step.model_params], ctx
        )


def _pad_from_donor(t: torch.Tensor, donor: torch.Tensor, rows: int, alias: str, name: str) -> torch.Tensor:
    """``t`` (``rows`` rows) followed by the donor's rows ``rows..`` (``vocab: pad_from_donor``)."""
    import torch
    if t.shape[0] != rows or t.shape[1:] != donor.shape[1:] or rows > donor.shape[0]:
        raise MergeError(
            f"tensor {name!r} of model {alias!r} has shape {tuple(t.shape)}, but the plan pads "
            f"{rows} rows to the donor's {tuple(donor.shape)}; rebuild the plan for these checkpoints"
        )
    return torch.cat([t, donor[rows:].to(t.dtype)], dim=0)


def merged_tensors(
    plan: MergePlan,
    checkpoints: Mapping[str, Checkpoint],
    plugins: Plugins,
    progress: bool = False,
    *,
    prefetch: int = PREFETCH_STEPS,
    threads: int | None = None,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(canonical name, merged tensor in the output dtype)`` for each step, in plan
    order, streaming from the checkpoints.

    One background thread reads (and converts to the compute dtype) the inputs of the next
    ``prefetch`` steps while ``threads`` threads merge the steps before, each with torch's
    intra-op parallelism off (:mod:`evomm.pipeline`); file reads and torch kernels release the
    GIL. At most ``prefetch + threads + 1`` steps' inputs are in memory. The results do not
    depend on ``prefetch`` nor ``threads`` (0 and 1: one step at a time, in the calling thread).

    Args:
        plan: the plan to run.
        checkpoints: alias -> opened checkpoint.
        plugins: registries (the operator).
        progress: show a tqdm bar.
        prefetch: how many steps ahead to read.
        threads: tensors merged at once (default :func:`evomm.merge_threads`).

    Example:
        >>> for name, t in merged_tensors(plan, cks, plugins):   # doctest: +SKIP
        ...     print(name, t.dtype)
    """
    op = get_operator(plan.operator, plugins, "plan operator")()
    compute = _dtype(plan.dtype)
    checkpoints = plan_checkpoints(plan, checkpoints)  # slices' lanes, merged vocabularies (issue 20)
    donor = checkpoints[plan.donor]

    def read_step(step: TensorStep) -> dict[str, torch.Tensor]:
        return {alias: _read_checked(plan, checkpoints[alias], alias, step.name).to(compute)
                for alias in step_aliases(plan, step)}

    def merge_one(item: tuple[TensorStep, dict[str, torch.Tensor]]) -> tuple[str, torch.Tensor]:
        step, inputs = item
        merged = merge_step(op, plan, step, lambda alias, _name: inputs[alias])
        out = merged.to(_dtype(plan.out_dtype or donor.layout[step.name].dtype))
        if not plan.allow_nonfinite:
            check_output(out, plan.operator, step.name)
        return step.name, out

    steps = tqdm(plan.steps, desc=f"merging ({plan.operator})", unit="tensor", disable=not progress)
    with single_threaded_torch():
        workers = merge_threads() if threads is None else threads
        yield from in_order(prefetched(steps, read_step, prefetch), merge_one, workers)


def _read_checked(plan: MergePlan, ck: Checkpoint, alias: str, name: str) -> torch.Tensor:
    """``ck.read(name)``, refused (:class:`~evomm.errors.NonFiniteError`) when it holds NaN or
    Inf and the plan does not allow them (:mod:`evomm.finite`)."""
    t = ck.read(name)
    if not plan.allow_nonfinite:
        check_parent(t, alias, ck.ref.path, name)
    return t


# ---------------------------------------------------------------------------------------------
# streaming to a directory
# ---------------------------------------------------------------------------------------------


def checkpoint_paths(checkpoints: Mapping[str, Checkpoint]) -> list[Path]:
    """The local directories the checkpoints are read from (an output must not replace them)."""
    paths = []
    for ck in checkpoints.values():
        where = getattr(ck, "directory", None) or getattr(getattr(ck, "ref", None), "path", None)
        if where is not None and Path(where).exists():
            paths.append(Path(where))
    return paths


def _output_bytes(plan: MergePlan, donor: Checkpoint) -> int | None:
    """How many bytes the plan's tensors take on disk (None when a dtype is unknown)."""
    from evomm.safetensors_io import ITEMSIZE

    total = 0
    for step in plan.steps:
        _, shape, dtype = _announce(plan, donor, step.name)
        if dtype not in ITEMSIZE:
            return None
        total += math.prod(shape) * ITEMSIZE[dtype]
    return total


def _announce(plan: MergePlan, donor: Checkpoint, name: str) -> tuple[str, tuple[int, ...], str]:
    info = donor.layout[name]
    return info.stored_name, tuple(info.shape), plan.out_dtype or info.dtype


def merge_to_dir(
    plan: MergePlan,
    checkpoints: Mapping[str, Checkpoint],
    out_dir: str | Path,
    plugins: Plugins,
    progress: bool = True,
    *,
    overwrite: bool = False,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    pipeline: bool = True,
) -> Path:
    """Run ``plan`` and write the merged checkpoint to ``out_dir`` (weights, config, tokenizer).

    Args:
        plan: from :func:`evomm.plan.build_plan`.
        checkpoints: alias -> opened checkpoint (:func:`open_models`).
        out_dir: output directory; must not exist or be empty, or (``overwrite``) hold an
            earlier evomm output (see :mod:`evomm.outputs`).
        plugins: registries (the operator).
        progress: show a tqdm bar.
        overwrite: replace an earlier evomm output at ``out_dir`` (only once the merge succeeded).
        max_shard_bytes: shard size of the output weights.
        pipeline: overlap reading (:data:`PREFETCH_STEPS` steps ahead), merging and writing (one
            background thread each); False runs them one after another. The bytes written are
            the same either way.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        OutputError: ``out_dir`` may not be written (:func:`evomm.outputs.check_output_target`),
            or the disk filled or is read-only; no output is left behind.
        EvommError: anything the operator or the checkpoints raise; no output is left behind.
    """
    out = Path(out_dir)
    checkpoints = plan_checkpoints(plan, checkpoints)  # slices' lanes, merged vocabularies (issue 20)
    donor = checkpoints[plan.donor]
    with staged_output(out, overwrite=overwrite, reads=checkpoint_paths(checkpoints), command="merge",
                       need_bytes=_output_bytes(plan, donor)) as tmp:
        writer = donor.writer(tmp, max_shard_bytes)
        expect = getattr(writer, "expect", None)
        if callable(expect):  # lets a safetensors writer stream instead of buffering a shard
            expect([_announce(plan, donor, step.name) for step in plan.steps])
        items = merged_tensors(plan, checkpoints, plugins, progress=progress,
                               prefetch=PREFETCH_STEPS if pipeline else 0, threads=None if pipeline else 1)
        write_one = writer.write
        background = BackgroundWriter(write_one) if pipeline else None
        write = background.put if background is not None else write_one
        try:
            for name, item in items:
                write(donor.layout[name].stored_name, item)
                del item
        except BaseException:
            if background is not None:
                background.close(reraise=False)  # the loop's own error is the one to report
            raise
        if background is not None:
            background.close()
        writer.close()
        donor.save_metadata(tmp)
        if plan.out_dtype:
            donor.record_dtype(tmp, plan.out_dtype)
        (tmp / "evomm_merge.json").write_text(
            json.dumps({"plan_digest": plan.digest(), **plan.to_dict()}, indent=1, default=str) + "\n"
        )
    return out


# ---------------------------------------------------------------------------------------------
# merging into a loaded model, in place
# ---------------------------------------------------------------------------------------------


class InMemoryMerger:
    """Merges candidates into one preallocated model, in place, without touching the disk.

    The parents' tensors are read once (lazily, on first use, in the compute dtype) and kept;
    the donor's model is built once (:attr:`model`). :meth:`apply` writes the merged tensors of
    a plan into :attr:`model`'s own parameters and skips tensors whose step did not change since
    the previous call (so a candidate that differs in a few layers costs only those layers).

    Args:
        checkpoints: alias -> opened checkpoint (every model plans will name).
        donor: alias of the model whose architecture :attr:`model` has.
        plugins: registries (operators).
        dtype: compute dtype of the parents' tensors and of the merge (default float32).
        model_dtype: dtype of :attr:`model` (default: ``dtype``).
        device: device of :attr:`model` and of the cached tensors.

    Example:
        >>> merger = InMemoryMerger(cks, donor="base", plugins=plugins)   # doctest: +SKIP
        >>> model = merger.apply(plan)      # the same object every call  # doctest: +SKIP
    """

    def __init__(
        self,
        checkpoints: Mapping[str, Checkpoint],
        donor: str,
        plugins: Plugins,
        dtype: torch.dtype | None = None,
        *,
        model_dtype: torch.dtype | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        import torch
        dtype = torch.float32 if dtype is None else dtype
        if donor not in checkpoints:
            raise ConfigError(f"InMemoryMerger: donor {donor!r} is not among the models {list(checkpoints)}")
        self.checkpoints = dict(checkpoints)
        self.donor = donor
        self.plugins = plugins
        self.dtype = dtype
        self.device = torch.device(device)
        self.model = checkpoints[donor].load_model(dtype=model_dtype or dtype, device=self.device)
        self.targets = checkpoints[donor].model_tensors(self.model)
        self._cache: dict[tuple[str, str], torch.Tensor] = {}
        self._applied: dict[str, tuple[Any, ...]] = {}
        #: aliases whose tensors were read for a plan with ``allow_nonfinite`` (not checked)
        self._nonfinite_ok: set[str] = set()
        self._ops: dict[str, MergeOperator] = {}

    def _read(self, alias: str, name: str) -> torch.Tensor:
        key = (alias, name)
        t = self._cache.get(key)
        if t is None:
            if alias not in self.checkpoints:
                raise ConfigError(f"plan names model {alias!r}, which this merger was not given")
            # copy=True: a large tensor may come memory-mapped from its file; the cache outlives
            # any one step, and must not depend on the file staying as it is
            ck = self.checkpoints[alias]
            stored = ck.read(name)
            if alias not in self._nonfinite_ok:
                check_parent(stored, alias, ck.ref.path, name)
            t = self._cache[key] = stored.to(self.device, self.dtype, copy=True)
        return t

    def preload(self) -> None:
        """Read every parent tensor now (otherwise the first :meth:`apply` does)."""
        for alias, ck in self.checkpoints.items():
            for name in ck.layout:
                if name in self.targets:
                    self._read(alias, name)

    def _op(self, name: str) -> MergeOperator:
        if name not in self._ops:
            self._ops[name] = self.plugins.operators.get(name)()
        return self._ops[name]

    def merged_tensors(self, plan: MergePlan) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield ``(name, merged tensor in the compute dtype)`` for every step of ``plan``."""
        op = self._op(plan.operator)
        self._allow(plan)
        for step, merged in self._merged(op, plan, plan.steps):
            yield step.name, merged

    def _merged(self, op: MergeOperator, plan: MergePlan, steps: Sequence[TensorStep], *, to_model: bool = False
                ) -> Iterator[tuple[TensorStep, torch.Tensor]]:
        """``(step, merged tensor)`` for each step, in order, in the compute dtype (``to_model``:
        in its target's dtype), checked for NaN/Inf (unless the plan allows them). The parents' tensors are read in the calling
        thread (a checkpoint is never read from two threads); the steps merge side by side as
        :func:`merged_tensors` merges them (:mod:`evomm.pipeline`), so the results are the same."""
        def read_inputs() -> Iterator[TensorStep]:
            for step in steps:
                for alias in step_aliases(plan, step):
                    self._read(alias, step.name)
                yield step

        def merge_one(step: TensorStep) -> tuple[TensorStep, torch.Tensor]:
            merged = merge_step(op, plan, step, self._read)
            if to_model:
                merged = merged.to(self.targets[step.name].dtype)
            if not plan.allow_nonfinite:
                check_output(merged, plan.operator, step.name)
            return step, merged

        with single_threaded_torch():
            yield from in_order(read_inputs(), merge_one, merge_threads())

    def _allow(self, plan: MergePlan) -> None:
        """Remember whether ``plan`` lets parents hold NaN/Inf: a parent tensor is checked when
        it is first read (then cached), so an allowing plan's reads stay unchecked for good."""
        if plan.allow_nonfinite:
            self._nonfinite_ok.update(ref.name for ref in (*plan.models, *([plan.base] if plan.base else [])))

    def apply(self, plan: MergePlan, *, force: bool = False) -> torch.nn.Module:
        """Write the merge described by ``plan`` into :attr:`model` in place and return it.

        Args:
            plan: a plan whose models are among this merger's checkpoints.
            force: recompute every tensor even if its step is unchanged since the last call.

        Returns:
            :attr:`model` (the same object every time).

        Raises:
            NonFiniteError: a parent tensor holds NaN/Inf, or (``output=True``) a merged tensor
                does (unless the plan allows them); the failing tensor is not written, so the
                next :meth:`apply` starts from a consistent model.
        """
        import torch
        op = self._op(plan.operator)
        self._allow(plan)
        identity = (plan.operator, plan.models, plan.base, plan.seed, plan.dtype, plan.allow_nonfinite)
        todo = [step for step in plan.steps if step.name in self.targets  # not e.g. a tied head
                and (force or self._applied.get(step.name) != (identity, step))]
        with torch.no_grad():
            # each merged tensor is checked before the model changes: it stays consistent
            for step, merged in self._merged(op, plan, todo, to_model=True):
                self.targets[step.name].copy_(merged)
                self._applied[step.name] = (identity, step)
        return self.model

    def invalidate(self) -> None:
        """Forget what was applied (call after modifying :attr:`model` by other means)."""
        self._applied.clear()
