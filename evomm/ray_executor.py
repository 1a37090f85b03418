"""The ``ray`` executor: one Ray actor per worker, each with its own search space and parents.

``executor: {name: ray, workers: 4, num_gpus_per_worker: 1, address: "ray://head:10001"}``:
``address`` joins a running cluster (``ray.init(address=...)``); without it a local Ray starts
on this machine (loopback only, no dashboard). Each actor declares ``num_gpus_per_worker`` GPUs
and ``num_cpus_per_worker`` CPUs (default: this machine's cores split between the workers) so
Ray places it; the actor builds its :class:`~evomm.executors.Worker` from the
:class:`~evomm.executors.WorkerSpec` once and keeps it. A job whose actor dies
(``RayActorError``: the node went away, the process was killed) runs again on a new actor
(at most :data:`~evomm.executors.MAX_ATTEMPTS` times).

Ray is an optional dependency: ``pip install "evomm[ray]"``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import cloudpickle

from evomm.errors import ConfigError, SearchError
from evomm.executors import MAX_ATTEMPTS, Executor, ExecutorContext, Job, JobResult

log = logging.getLogger(__name__)


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError('executor.name: ray needs Ray: pip install "evomm[ray]" (or choose processes)') from None
    return ray


class _Actor:
    """The body of a Ray actor: a worker built once from the pickled spec."""

    def __init__(self, blob: bytes) -> None:
        self.worker = cloudpickle.loads(blob).build()

    def run(self, job: Job) -> JobResult:
        return self.worker.run(job)

    def pid(self) -> int:
        return os.getpid()


class RayExecutor(Executor):
    """Jobs on Ray actors (see the module docstring)."""

    name = "ray"

    def __init__(self, ctx: ExecutorContext) -> None:
        ray = _ray()
        s = ctx.settings
        self.n = self.worker_count = s.workers
        cpus = s.num_cpus_per_worker or max(1, (os.cpu_count() or 1) // self.n)
        if not ray.is_initialized():
            if s.address:
                ray.init(address=s.address, log_to_driver=False)
            else:
                # a local Ray's workers import what this process imports (its sys.path)
                env = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}}
                ray.init(num_cpus=max(int(cpus * self.n), 1), include_dashboard=False, log_to_driver=False,
                         _node_ip_address="127.0.0.1", runtime_env=env)
            self._started = True
        else:
            self._started = False
        ctx.spec.threads = ctx.spec.threads or max(1, int(cpus))
        self.blob = cloudpickle.dumps(ctx.spec)
        self.cls = ray.remote(num_cpus=cpus, num_gpus=s.num_gpus_per_worker, max_restarts=0)(_Actor)
        self.actors: list[Any] = [self.cls.remote(self.blob) for _ in range(self.n)]

    def run(self, jobs: Sequence[Job], before: Callable[[], None]) -> Iterator[tuple[int, JobResult]]:
        ray = _ray()
        queue = list(range(len(jobs)))
        attempts = dict.fromkeys(queue, 0)
        running: dict[Any, tuple[int, int]] = {}  # object ref -> (job index, actor slot)
        free = list(range(self.n))
        try:
            while queue or running:
                while queue and free:
                    i, slot = queue.pop(0), free.pop(0)
                    before()
                    attempts[i] += 1
                    running[self.actors[slot].run.remote(jobs[i])] = (i, slot)
                done, _ = ray.wait(list(running), num_returns=1)
                i, slot = running.pop(done[0])
                try:
                    res = ray.get(done[0])
                except ray.exceptions.RayActorError as exc:
                    if attempts[i] >= MAX_ATTEMPTS:
                        raise SearchError(f"a Ray worker died {MAX_ATTEMPTS} times while candidate {jobs[i].key} "
                                          f"was being scored; the last error: {exc}") from None
                    log.warning("warning: a Ray worker died; candidate %s runs again on a new worker", jobs[i].key)
                    self.lost_jobs += 1
                    self.actors[slot] = self.cls.remote(self.blob)
                    queue.insert(0, i)
                    free.append(slot)
                    continue
                free.append(slot)
                yield i, res
        finally:
            for ref in running:
                try:
                    ray.cancel(ref, force=False)
                except Exception:  # noqa: BLE001 - an actor already gone has nothing to cancel
                    pass

    def close(self) -> None:
        ray = _ray()
        for a in self.actors:
            ray.kill(a)
        self.actors = []
        if self._started:
            ray.shutdown()
