"""Where candidates are scored: executors (``local``, ``processes``; ``ray`` in :mod:`evomm.ray_executor`).

The evolution loop turns each round of a generation into :class:`Job` s: a candidate's genome (or
a parent's name) and, per task, the item ids to score. An :class:`Executor` runs them and yields
:class:`JobResult` s (per-item values, never tensors) as they finish; only the driver writes the
item store and the archive, in ask order, so every executor gives the same archive for the same
seed. A worker (:class:`Worker`) builds the stage's search space once (parents loaded and kept)
from a :class:`WorkerSpec` (the recipe, the stage, the run directory, how plugins were loaded)
and materialises each job's candidate in it.

Executors are registered with the ``evomm_register_executors`` hook as :class:`ExecutorKind` s;
the recipe's ``executor: {name, workers, ...}`` (or ``--executor``/``--workers``) picks one.

A worker process that dies (killed, out of memory) loses its jobs: the ``processes`` executor
starts a new pool and runs them again (at most :data:`MAX_ATTEMPTS` times each).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cloudpickle
import numpy as np

from evomm.errors import NonFiniteError, SearchError

if TYPE_CHECKING:
    from evomm.evolve_recipe import EvolveRecipe
    from evomm.evolve_recipe import Executor as ExecutorConfig
    from evomm.objectives import ObjectiveSet
    from evomm.plugins import Plugins
    from evomm.space import SearchSpace

#: How many times a job is started before a dying worker stops the run.
MAX_ATTEMPTS = 3

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One candidate's evaluation on some items.

    Attributes:
        key: the candidate's plan digest (``parent:<name>`` for a parent).
        genome: the point in [0, 1]^d, or ``None`` for a parent.
        reference: the parent's name (``None`` for a child).
        items: task -> item ids to score (``None``: the whole task).
    """

    key: str
    genome: tuple[float, ...] | None
    reference: str | None
    items: dict[str, list[int] | None]


@dataclass
class TaskOut:
    """One task's results in a job: per-item values and the metrics that have none."""

    n: int
    ids: list[int]
    items: dict[str, list[float]]
    aggregate: dict[str, float]
    whole: bool
    seconds: float


@dataclass
class JobResult:
    """What a worker sends back: per-task results, merge time, or why the merge failed."""

    key: str
    tasks: dict[str, TaskOut] = field(default_factory=dict)
    merge_seconds: float = 0.0
    failed: str | None = None
    worker: str = ""

    @property
    def seconds(self) -> float:
        """The worker's time on the job: merge plus every task."""
        return self.merge_seconds + sum(t.seconds for t in self.tasks.values())


def worker_name() -> str:
    """This process as a worker: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def stage_space(recipe: EvolveRecipe, stage_index: int, run_dir: Path, plugins: Plugins,
                previous: list[dict[str, Any]]) -> SearchSpace:
    """The search space of stage ``stage_index``, built by the kind the stage names
    (``plugins.spaces``, filled by ``evomm_register_search_spaces``). Needs no run directory."""
    from evomm.space import StageContext

    stage = recipe.stages[stage_index]
    ctx = StageContext(plugins=plugins, run_dir=run_dir, previous=list(previous), dtype=recipe.dtype,
                       recipe=recipe)
    return plugins.spaces.get(stage.kind).factory(stage, ctx)


class Worker:
    """Scores jobs in one process with one search space and one set of tasks."""

    def __init__(self, space: SearchSpace, objs: ObjectiveSet) -> None:
        self.space, self.objs = space, objs

    def run(self, job: Job) -> JobResult:
        """Materialise the job's candidate and score its items.

        Raises:
            SearchError: the genome decodes to another plan than ``job.key`` (a worker built
                for another stage or recipe).
        """
        t0 = time.perf_counter()
        try:
            if job.reference is not None:
                handle = self.space.materialize_reference(job.reference)
            else:
                cand = self.space.decode(np.asarray(job.genome, dtype=float))
                if cand.digest() != job.key:
                    raise SearchError(f"a worker decoded another plan ({cand.digest()}) than the driver "
                                      f"({job.key}): workers must be built from the run's recipe and stage")
                handle = self.space.materialize(cand)
        except NonFiniteError as exc:
            if not exc.output:
                raise  # a parent holds NaN/Inf: every candidate would; the run stops, clearly
            return JobResult(job.key, merge_seconds=time.perf_counter() - t0, failed=str(exc), worker=worker_name())
        out = JobResult(job.key, merge_seconds=time.perf_counter() - t0, worker=worker_name())
        for task, res in self.objs.evaluate_items(handle, job.items).items():
            out.tasks[task] = TaskOut(
                n=self.objs.task_size(task), ids=list(res.item_ids),
                items={m: [float(v) for v in vals] for m, vals in res.items.items()},
                aggregate={m: float(v) for m, v in res.metrics.items() if m not in res.items},
                whole=job.items[task] is None, seconds=res.seconds)
        return out

    def close(self) -> None:
        self.space.close()


@dataclass
class PluginSource:
    """How a process's plugins were loaded, so that a worker loads the same ones."""

    plugins_dirs: tuple[str, ...] = ()
    extra: tuple[Any, ...] = ()
    autoload: bool | None = None


@dataclass
class WorkerSpec:
    """Everything a worker needs to build its :class:`Worker` (picklable with cloudpickle)."""

    recipe: EvolveRecipe
    stage_index: int
    run_dir: Path
    previous: list[dict[str, Any]]
    plugins: PluginSource
    threads: int | None = None

    def build(self) -> Worker:
        from evomm.objectives import ObjectiveSet
        from evomm.plugins import load_plugins

        if self.threads:
            limit_threads(self.threads)
        src = self.plugins
        plugins = load_plugins(list(src.plugins_dirs), extra=list(src.extra), autoload=src.autoload)
        objs = ObjectiveSet(self.recipe.objectives, self.recipe.tasks, plugins)
        space = stage_space(self.recipe, self.stage_index, self.run_dir, plugins, self.previous)
        return Worker(space, objs)


def limit_threads(n: int) -> None:
    """Use ``n`` threads for torch/BLAS in this process (workers share the machine's cores)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


@dataclass
class ExecutorContext:
    """What an executor factory receives: the recipe's settings, the worker spec and the
    driver's own in-process worker (for ``local``)."""

    settings: ExecutorConfig
    spec: WorkerSpec
    local: Callable[[], Worker]


class Executor(ABC):
    """Runs jobs and yields ``(index in jobs, result)`` as they finish.

    Attributes (shown by the dashboard): ``name``, ``worker_count`` (how many jobs run at once) and
    ``lost_jobs`` (jobs run again because their worker died).
    """

    name: str = ""
    worker_count: int = 1
    lost_jobs: int = 0

    @abstractmethod
    def run(self, jobs: Sequence[Job], before: Callable[[], None]) -> Iterator[tuple[int, JobResult]]:
        """Run ``jobs``; ``before()`` is called before each job starts (it may raise to stop)."""

    def close(self) -> None:  # noqa: B027 - nothing to release by default
        """Release workers."""


@dataclass(frozen=True)
class ExecutorKind:
    """A registered executor: ``name`` (the recipe's ``executor.name``), its factory, one line."""

    name: str
    factory: Callable[[ExecutorContext], Executor]
    description: str = ""


class LocalExecutor(Executor):
    """In this process, one job after the other (the job starts when the driver asks for it)."""

    name = "local"

    def __init__(self, ctx: ExecutorContext) -> None:
        self.worker = ctx.local()

    def run(self, jobs: Sequence[Job], before: Callable[[], None]) -> Iterator[tuple[int, JobResult]]:
        for i, job in enumerate(jobs):
            before()
            yield i, self.worker.run(job)


_WORKER: dict[str, Any] = {}


def _exit_with_parent() -> None:
    """End this worker when the driver ends, even by SIGKILL (the pool cannot tell it then)."""
    import multiprocessing
    import threading

    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=lambda: (parent.join(), os._exit(1)), daemon=True).start()


def _init_worker(blob: bytes) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    _exit_with_parent()
    try:
        _WORKER["worker"] = cloudpickle.loads(blob).build()
    except BaseException as exc:  # reported by the first job, not as a broken pool
        _WORKER["error"] = exc


def _run_job(job: Job) -> JobResult:
    if "error" in _WORKER:
        raise _WORKER["error"]
    return _WORKER["worker"].run(job)


class ProcessExecutor(Executor):
    """``workers`` local processes (spawned), each with its own space and parents, threads split."""

    name = "processes"

    def __init__(self, ctx: ExecutorContext) -> None:
        self.n = self.worker_count = ctx.settings.workers
        threads = max(1, (os.cpu_count() or 1) // self.n)
        spec = ctx.spec
        spec.threads = spec.threads or threads
        self.blob = cloudpickle.dumps(spec)
        self.pool: ProcessPoolExecutor | None = None
        self.attempts: dict[str, int] = {}

    def _pool(self) -> ProcessPoolExecutor:
        if self.pool is None:
            import multiprocessing

            self.pool = ProcessPoolExecutor(self.n, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_init_worker, initargs=(self.blob,))
        return self.pool

    def run(self, jobs: Sequence[Job], before: Callable[[], None]) -> Iterator[tuple[int, JobResult]]:
        pending = dict(enumerate(jobs))
        self.attempts = {}
        while pending:
            futures: dict[Future[JobResult], int] = {}
            try:
                pool = self._pool()
                for i, job in pending.items():
                    before()
                    self.attempts[job.key] = self.attempts.get(job.key, 0) + 1
                    futures[pool.submit(_run_job, job)] = i
                broken = False
                for fut in as_completed(futures):
                    if isinstance(fut.exception(), BrokenProcessPool):
                        broken = True
                        continue
                    i = futures[fut]
                    res = fut.result()
                    del pending[i]
                    yield i, res
            finally:
                for fut in futures:
                    fut.cancel()
            if broken:
                self._requeue([jobs[i] for i in pending])

    def _requeue(self, lost: list[Job]) -> None:
        """A worker died: start a new pool for the jobs it took down (each at most MAX_ATTEMPTS times)."""
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None
        self.lost_jobs += len(lost)
        worst = max(lost, key=lambda j: self.attempts.get(j.key, 0))
        if self.attempts.get(worst.key, 0) >= MAX_ATTEMPTS:
            raise SearchError(f"a worker process died {MAX_ATTEMPTS} times while candidate {worst.key} was "
                              "being scored (out of memory? see the system log); lower executor.workers")
        log.warning("warning: a worker process died; its %d job(s) run again on a new worker", len(lost))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


def _ray_factory(ctx: ExecutorContext) -> Executor:
    from evomm.ray_executor import RayExecutor

    return RayExecutor(ctx)


#: The executors evomm itself registers (in :func:`evomm.plugins.load_plugins`).
BUILTIN_EXECUTORS = (
    ExecutorKind("local", LocalExecutor, "in this process, one candidate after the other"),
    ExecutorKind("processes", ProcessExecutor, "N local worker processes (executor.workers), threads split"),
    ExecutorKind("ray", _ray_factory, "Ray actors, one per worker; executor.address joins a cluster "
                 "(pip install 'evomm[ray]')"),
)
