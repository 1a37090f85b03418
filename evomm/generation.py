"""Scoring one generation's new candidates in rounds of items, on any executor.

For each round of the stage's :class:`~evomm.racing.Strategy`, every candidate still running gets
a :class:`~evomm.executors.Job` for the round's items it has not scored (:func:`evomm.fitness.missing`);
the executor runs the jobs; each result goes to the item store at once (fsynced); after the round
the strategy says which candidates stop. A candidate is *done* when it failed, stopped, or has
scored every item; done candidates are archived in ask order as soon as every candidate asked
before them is done. Decisions depend only on item results, never on which worker finished
first, so every executor gives the same archive.

Resume: the item store is the cache of items. A generation asked again after a crash replays its
rounds from the stored items (no item is scored twice) and takes the same decisions; candidates
already archived are not archived again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from evomm.executors import Executor, Job, JobResult
from evomm.fitness import Estimate, estimate, missing

if TYPE_CHECKING:
    from evomm.front import ObjectiveInfo
    from evomm.item_store import CandidateItems, ItemStore
    from evomm.objectives import ObjectiveSet
    from evomm.racing import Strategy
    from evomm.records import CandidateRecord
    from evomm.worker_board import WorkerBoard


@dataclass
class Pending:
    """A candidate being scored in this generation.

    Attributes:
        key: plan digest (``parent:<name>`` for a parent).
        x: the genome (``None`` for a parent).
        reference: the parent's name.
        record: its archive record, once archived (or already, on resume).
        failed: why its merge failed (NaN/Inf), if it did.
        stopped: the strategy stopped it before the last round.
        timings: seconds per phase, summed over its jobs.
        rounds: how many rounds it took part in.
        workers: seconds of its jobs per worker (``host:pid``).
    """

    key: str
    x: np.ndarray | None = None
    reference: str | None = None
    record: CandidateRecord | None = None
    failed: str | None = None
    stopped: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    rounds: int = 0
    workers: dict[str, float] = field(default_factory=dict)


class Rounds:
    """Runs the rounds of one generation (or of the parents).

    Args:
        stage: the stage name (item-store key).
        strategy: which items each round scores and who stops.
        store: the run's item store.
        objs: the objectives (tasks and their sizes).
        infos: objective infos (directions, constraints) for dominance.
        executor: where jobs run.
        before: called before each job (Ctrl-C, wall time; may raise to stop).
        archive: builds and archives a done candidate's record, returns it.
        on_job: called with each job's seconds (wall-time estimates, progress).
        clock: seconds (the loop's clock: tests pass a fake one).
        whole: tasks known to report a needed metric without per-item values (scored whole from
            then on; shared by the stage's generations, learnt from results).
        board: counts jobs out and back per worker for the dashboard (``workers.json``).
    """

    def __init__(self, stage: str, strategy: Strategy, store: ItemStore, objs: ObjectiveSet,
                 infos: Sequence[ObjectiveInfo], executor: Executor, before: Callable[[], None],
                 archive: Callable[[Pending], CandidateRecord], on_job: Callable[[float], None],
                 clock: Callable[[], float] = time.perf_counter, whole: set[str] | None = None,
                 board: WorkerBoard | None = None) -> None:
        self.stage, self.strategy, self.store, self.objs, self.infos = stage, strategy, store, objs, infos
        self.executor, self.before, self.archive, self.on_job = executor, before, archive, on_job
        self.sizes = {t: objs.task_size(t) for t in objs.tasks}
        self.needed = {t: [m for o in objs.objectives for tt, m, _ in o.terms if tt == t] for t in objs.tasks}
        self.clock = clock
        self.whole = whole if whole is not None else set()
        self.board = board

    def items(self, p: Pending) -> CandidateItems:
        return self.store.get(self.stage, p.key)

    def done(self, p: Pending) -> bool:
        items = self.items(p)
        complete = bool(items) and all(t in items and items[t].complete_for(self.needed[t]) for t in self.sizes)
        return p.failed is not None or p.stopped or complete

    def estimate(self, p: Pending) -> Estimate:
        return estimate(self.items(p), self.objs, self.strategy.cfg.confidence)

    def _job(self, p: Pending, round_: int) -> Job | None:
        want: dict[str, list[int] | None] = {}
        for task, n in self.sizes.items():
            have = self.items(p).get(task)
            ids = missing(have, self.strategy.order(task, n), self.strategy.upto(round_, n), self.needed[task])
            if task in self.whole and ids and self.strategy.bounds and (have is None or not have.aggregate_n):
                ids = None  # a metric that is not a mean over items: score the task once, whole
            if ids is None or ids:
                want[task] = ids
        if not want:
            return None
        genome = None if p.x is None else tuple(float(v) for v in p.x)
        return Job(p.key, genome, p.reference, want)

    def _store(self, p: Pending, res: JobResult) -> None:
        p.timings["merge"] = p.timings.get("merge", 0.0) + res.merge_seconds
        if res.worker:
            p.workers[res.worker] = p.workers.get(res.worker, 0.0) + res.seconds
        if res.failed is not None:
            p.failed = res.failed
        rows = []
        for task, out in res.tasks.items():
            if any(m not in out.items for m in self.needed[task]):
                self.whole.add(task)
            p.timings["evaluate"] = p.timings.get("evaluate", 0.0) + out.seconds
            p.timings[f"task:{task}"] = p.timings.get(f"task:{task}", 0.0) + out.seconds
            rows.append({"stage": self.stage, "key": p.key, "task": task, "n": out.n, "ids": out.ids,
                         "items": {m: [int(v) if float(v).is_integer() else v for v in vals]
                                   for m, vals in out.items.items()},
                         "aggregate": out.aggregate, "whole": out.whole})
        self.store.append_many(rows)

    def _flush(self, pendings: Sequence[Pending]) -> None:
        """Archive the done candidates whose predecessors (in ask order) are all archived."""
        for p in pendings:
            if p.record is not None:
                continue
            if not self.done(p):
                return
            p.record = self.archive(p)

    def run(self, pendings: Sequence[Pending], front: Sequence[CandidateRecord], generation: int) -> None:
        """Score ``pendings`` (in ask order) round by round; every one ends archived.

        Args:
            pendings: the generation's new candidates.
            front: the front of the earlier generations (exact values).
            generation: its number (decisions are stored under it, so a resumed run replays them).
        """
        for r in range(self.strategy.n_rounds):
            live = [p for p in pendings if not self.done(p)]
            if not live:
                break
            jobs, owners = [], []
            for p in live:
                p.rounds = r + 1
                job = self._job(p, r)
                if job is not None and p.record is None:
                    jobs.append(job)
                    owners.append(p)
            t0 = self.clock()
            if self.board is not None:
                self.board.submitted(len(jobs))
            for i, res in self.executor.run(jobs, self.before):
                self._store(owners[i], res)
                if self.board is not None:
                    self.board.finished(res.worker, res.key, res.seconds, self.executor.lost_jobs)
                self._flush(pendings)
                self.on_job(self.clock() - t0)
                t0 = self.clock()
            if self.board is not None:
                self.board.round_done()
            if r + 1 < self.strategy.n_rounds:
                self._decide(pendings, front, generation, r)
            self._flush(pendings)
        for p in pendings:  # a replayed candidate archived before the crash, or a last round
            if not self.done(p) and p.record is None:
                p.stopped = True
        self._flush(pendings)

    def _decide(self, pendings: Sequence[Pending], front: Sequence[CandidateRecord], generation: int,
                round_: int) -> None:
        """Stop the candidates the strategy stops after ``round_`` (a stored decision is replayed)."""
        stored = self.store.decision(self.stage, generation, round_)
        if stored is None:
            still = [p for p in pendings if not self.done(p)]
            if not still:
                return
            refs = [dict(r.objectives) for r in front]
            for p in pendings:  # completed candidates of this generation: exact values
                if p.failed is None and not p.stopped and self.done(p):
                    est = self.estimate(p)
                    if self.objs.feasible(est.values):
                        refs.append(est.values)
            ests = [self.estimate(p) for p in still]
            drops = self.strategy.drops(ests, refs, self.infos, self.objs, round_)
            stored = [p.key for p, stop in zip(still, drops) if stop]
            self.store.append_decision(self.stage, generation, round_, stored)
        stopped = set(stored)
        for p in pendings:
            if p.key in stopped:
                p.stopped = True
