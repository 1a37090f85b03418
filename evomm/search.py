"""The ask/tell loop over pymoo: caching, cheap fitness, executors, archive, checkpoints.

pymoo supplies the algorithms; this loop owns everything else. Per generation it asks the
algorithm for a population, decodes each point with the :class:`~evomm.space.SearchSpace`,
looks the candidate's digest up in the archive (identical plans are never evaluated twice),
scores the rest in rounds of items on an executor (:mod:`evomm.generation`; the strategy of
:mod:`evomm.racing` stops candidates that cannot enter the front; item results go to
``items.jsonl``), appends each record to ``archive.jsonl`` in ask order (fsynced), tells pymoo
the objective values (sign-flipped in :mod:`evomm.objectives`), and checkpoints the algorithm.

Resume: the checkpoint holds the algorithm as it was after the last complete generation
(pickled with cloudpickle, its random generators included); the candidates of the generation
in flight are asked again, identically, and those already archived are cache hits. So a resumed
run evaluates at most the candidates in flight at the crash and ends with the same front as an
uninterrupted run with the same seed.

Stopping: the budget (generations, evaluations) is checked between generations; a wall-time
budget and Ctrl-C are checked before each new candidate. A candidate is not started when the
mean time of the last few candidates says it would end past the wall-time budget (the stage
ends with a note saying so). Ctrl-C (see :mod:`evomm.interrupt`) stops before the next
candidate. A stop in the middle of a generation leaves the checkpoint of the last complete
generation, with the time spent so far added to it, so a resumed run asks that generation
again identically (its archived candidates are cache hits) and knows how much wall time is left.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
from pymoo.core.problem import Problem
from pymoo.termination.max_gen import MaximumGenerationTermination

from evomm.archive import Archive
from evomm.errors import SearchError
from evomm.evolve_recipe import Algorithm, Budget, Fitness
from evomm.evolve_recipe import Executor as Executor_
from evomm.executors import Executor, ExecutorContext, LocalExecutor, Worker
from evomm.fitness import estimate
from evomm.front import ObjectiveInfo, pareto_front
from evomm.generation import Pending, Rounds
from evomm.item_store import ITEMS_NAME, ItemStore
from evomm.objectives import ObjectiveSet, minimize_matrix
from evomm.progress import bar as progress_bar
from evomm.racing import Strategy, make_strategy
from evomm.records import CandidateRecord, RunInfo
from evomm.space import SearchSpace
from evomm.worker_board import WORKERS_NAME, WorkerBoard

CHECKPOINT_NAME = "checkpoint.pkl"
#: How many recent candidates estimate the time of the next one (wall-time budgets).
RECENT = 3
_SINGLE = ("cmaes", "de", "ga")


class RandomSearch:
    """The random-search baseline: ``pop_size`` uniform points per generation (seeded)."""

    def __init__(self, pop_size: int) -> None:
        self.pop_size = pop_size
        self.n_gen = 0
        self.rng: np.random.Generator | None = None
        self.dim = 0

    def setup(self, problem: Problem, seed: int, **_: Any) -> None:
        self.rng = np.random.default_rng(seed)
        self.dim = problem.n_var

    def ask_x(self) -> np.ndarray:
        assert self.rng is not None
        return self.rng.random((self.pop_size, self.dim))

    def tell_f(self, X: np.ndarray, F: np.ndarray, G: np.ndarray | None) -> None:
        self.n_gen += 1


def cma_seed(seed: int) -> int:
    """The seed handed to the `cma` package for the run seed ``seed``: `cma` seeds numpy from the
    clock for 0 (and None), so a CMA-ES run with seed 0 would not repeat; 0 maps to 2**32 - 1 (the
    one collision: run seeds 0 and 2**32 - 1 draw the same CMA-ES samples).

    Example:
        >>> cma_seed(0), cma_seed(7)
        (4294967295, 7)
    """
    return seed if seed else 2**32 - 1


def make_algorithm(cfg: Algorithm, space: SearchSpace, n_obj: int, seed: int) -> Any:
    """A pymoo algorithm (or :class:`RandomSearch`) for ``cfg``.

    Raises:
        SearchError: a single-objective algorithm with several objectives, or bad settings.
    """
    name, n, kw = cfg.name, cfg.pop_size, dict(cfg.settings)
    if name in _SINGLE and n_obj != 1:
        raise SearchError(
            f"algorithm.name: {name!r} optimises one objective but the recipe has {n_obj}; "
            "use nsga2, nsga3, moead or random, or keep one objective"
        )
    try:
        if name == "random":
            return RandomSearch(n)
        if name == "nsga2":
            from pymoo.algorithms.moo.nsga2 import NSGA2

            return NSGA2(pop_size=n, **kw)
        if name in ("nsga3", "moead"):
            from pymoo.util.ref_dirs import get_reference_directions

            ref = get_reference_directions("energy", max(n_obj, 2), n, seed=seed)[:, :n_obj] if n_obj > 1 \
                else np.ones((1, 1))
            if name == "nsga3":
                from pymoo.algorithms.moo.nsga3 import NSGA3

                return NSGA3(ref, pop_size=n, **kw)
            from pymoo.algorithms.moo.moead import ParallelMOEAD

            kw.setdefault("n_neighbors", max(2, min(15, n // 2)))
            return ParallelMOEAD(ref, **kw)
        if name == "cmaes":
            from pymoo.algorithms.soo.nonconvex.cmaes import CMAES

            kw.setdefault("sigma", 1 / 6)  # the paper's setting, in unit-cube coordinates
            return CMAES(x0=space.initial_point(), popsize=n, **kw)
        if name == "de":
            from pymoo.algorithms.soo.nonconvex.de import DE

            return DE(pop_size=n, **kw)
        from pymoo.algorithms.soo.nonconvex.ga import GA

        return GA(pop_size=n, **kw)
    except TypeError as exc:
        raise SearchError(f"algorithm.settings: {exc} (settings are pymoo {name} keyword arguments)") from None


@dataclass
class StageResult:
    """What a finished (or stopped) stage produced."""

    stage: str
    front: list[CandidateRecord]
    parents: list[CandidateRecord]
    reason: str
    generations: int
    evaluations: int
    note: str = ""  # why the stage stopped early, for the user (wall time)


class _WallTimeUp(Exception):
    """The next candidate would not fit in the wall-time budget (the message says so)."""


@dataclass
class _State:
    algorithm: Any
    generation: int = 0
    elapsed: float = 0.0
    np_state: Any = None
    done: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class EvolutionLoop:
    """One stage's search.

    Args:
        space: what is searched.
        objectives: the objectives (tasks bound).
        algorithm, budget: the stage's settings.
        run: run info passed to hooks; ``run.run_dir`` holds the archive.
        archive: the run's archive (shared by stages).
        stage: stage name (records and checkpoints are kept per stage).
        hook: the plugin manager's ``hook`` (lifecycle hooks), or ``None``.
        fitness: how candidates are scored (:mod:`evomm.racing`; default ``full``).
        executor: where candidates are scored (default: in this process).
        items: the run's item store (default: ``items.jsonl`` in the run directory).
        score_parents: score the space's reference models first (shown beside the front).
        progress: show a tqdm bar.
        on_evaluated: test hook called after each *evaluation* (not cache hits).
        stop: checked before each new candidate (:class:`evomm.interrupt.GracefulStop`: its
            ``check()`` raises ``KeyboardInterrupt`` once Ctrl-C was pressed), or ``None``.
        clock: seconds, for the wall-time budget (tests pass a fake one).
    """

    def __init__(
        self,
        space: SearchSpace,
        objectives: ObjectiveSet,
        algorithm: Algorithm,
        budget: Budget,
        run: RunInfo,
        archive: Archive,
        stage: str = "ps",
        hook: Any = None,
        fitness: Fitness | None = None,
        executor: Executor | None = None,
        items: ItemStore | None = None,
        score_parents: bool = True,
        progress: bool = True,
        on_evaluated: Callable[[CandidateRecord], None] | None = None,
        stop: Any = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.space, self.objs, self.alg_cfg, self.budget = space, objectives, algorithm, budget
        self.run, self.archive, self.stage, self.hook = run, archive, stage, hook
        self.score_parents, self.progress = score_parents, progress
        cfg = fitness or Fitness()
        self.strategy, self.full = make_strategy(cfg, run.seed), make_strategy(Fitness(), run.seed)
        self.items = items if items is not None else ItemStore(Path(run.run_dir) / ITEMS_NAME, repair=True)
        self.executor = executor if executor is not None else LocalExecutor(
            ExecutorContext(Executor_(), None, lambda: Worker(space, objectives)))  # type: ignore[arg-type]
        self._gen = 0
        self._whole_tasks: set[str] = set()
        self._bar: Any = None
        self._state: _State | None = None
        self.on_evaluated, self.stop, self.clock = on_evaluated, stop, clock
        self.recent: deque[float] = deque(maxlen=RECENT)  # seconds of the last new candidates
        self._t0, self._spent0 = clock(), 0.0  # clock() at _spent0 seconds of stage time
        ex = self.executor
        self.board = WorkerBoard(Path(run.run_dir) / WORKERS_NAME, ex.name or type(ex).__name__, ex.worker_count)
        self.stage_dir = Path(run.run_dir) / "stages" / stage
        self.stage_dir.mkdir(parents=True, exist_ok=True)
        self.infos = [ObjectiveInfo(o.name, o.direction, c) for o, c in
                      zip(objectives.objectives, [i["constraint"] for i in objectives.info()])]
        self.evaluated_now = 0

    # -- checkpoints ------------------------------------------------------------------------------
    def _checkpoint_path(self) -> Path:
        return self.stage_dir / CHECKPOINT_NAME

    def _save(self, state: _State) -> None:
        tmp = self._checkpoint_path().with_suffix(".tmp")
        with tmp.open("wb") as fh:
            cloudpickle.dump(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._checkpoint_path())

    def _read_checkpoint(self, path: Path) -> _State:
        try:
            with path.open("rb") as fh:
                return cloudpickle.load(fh)
        except Exception as exc:  # a checkpoint from another pymoo version, or corrupt
            raise SearchError(
                f"cannot read the checkpoint {path}: {type(exc).__name__}: {exc}; "
                "delete it to restart the stage from generation 0 (the archive is kept as a cache)"
            ) from None

    def _load_or_start(self) -> _State:
        path = self._checkpoint_path()
        if path.exists():
            return self._read_checkpoint(path)
        n_constr = self.objs.n_constraints
        problem = Problem(n_var=self.space.dim, n_obj=len(self.objs.names), n_ieq_constr=n_constr,
                          xl=0.0, xu=1.0)
        alg = make_algorithm(self.alg_cfg, self.space, len(self.objs.names), self.run.seed)
        alg.setup(problem, termination=MaximumGenerationTermination(10**9), seed=self.run.seed, verbose=False)
        if self.alg_cfg.name == "cmaes":  # pymoo hands the seed to `cma`, which reads 0 as "from the clock"
            alg.options["seed"] = cma_seed(self.run.seed)
        state = _State(alg, np_state=np.random.RandomState(self.run.seed).get_state())
        self._save(state)  # generation 0 has a checkpoint too: a stop before its end adds its time
        return state

    def _save_time_spent(self, state: _State) -> None:
        """After a stop inside a generation: add the time spent to the checkpoint of the last
        complete generation (the algorithm in memory has been asked already and is not saved)."""
        path = self._checkpoint_path()
        if path.exists():
            saved = self._read_checkpoint(path)
            saved.elapsed = self._spent()
            saved.extra["recent_s"] = list(self.recent)
            self._save(saved)

    # -- evaluation -------------------------------------------------------------------------------
    def _children(self) -> list[CandidateRecord]:
        return self.archive.stage_records(self.stage)

    def _next_id(self) -> str:
        n = sum(1 for r in self.archive.records if not r.is_parent)
        return f"c{n + 1:05d}"

    def _rounds(self, strategy: Strategy) -> Rounds:
        return Rounds(self.stage, strategy, self.items, self.objs, self.infos, self.executor, self._before_job,
                      self._record, self._job_done, self.clock, self._whole_tasks, self.board)

    def _job_done(self, seconds: float) -> None:
        self.recent.append(seconds)
        if self._bar is not None:
            self._show(self._bar, self._state)

    def _record(self, p: Pending) -> CandidateRecord:
        """Build and archive the record of a done candidate (ids are given in archive order)."""
        cid = p.key if p.reference is not None else self._next_id()
        gen = -1 if p.reference is not None else self._gen
        genome = [] if p.x is None else [float(v) for v in p.x]
        genes = {} if p.x is None else self.space.native(p.x)
        timings = dict(p.timings)
        if p.failed is not None:
            rec = CandidateRecord(
                id=cid, generation=gen, genome=genome, plan_hash=p.key, metrics={},
                objectives=self.objs.failed_values(), timings={"merge": timings.get("merge", 0.0)},
                extra={"failed": p.failed, "feasible": False}, stage=self.stage, genes=genes,
                evaluation="failed")
        else:
            strategy = self.strategy if p.reference is None else self.full
            est = estimate(self.items.get(self.stage, p.key), self.objs, strategy.cfg.confidence)
            values, stderr, evaluation, more = strategy.final(est, self.objs)
            extra = {"feasible": self.objs.feasible(values), "strategy": strategy.name, "rounds": p.rounds,
                     **strategy.note(), **more}
            if p.workers:  # seconds per worker (host:pid): the dashboard's per-worker totals
                extra["workers"] = {w: round(sec, 3) for w, sec in p.workers.items()}
            rec = CandidateRecord(
                id=cid, generation=gen, genome=genome, plan_hash=p.key, metrics=est.metrics,
                objectives=values, timings=timings, extra=extra, stage=self.stage, genes=genes,
                evaluation=evaluation, items_evaluated=est.items_evaluated, stderr=stderr)
        return self._archive(rec)

    def _archive(self, rec: CandidateRecord) -> CandidateRecord:
        self.archive.append(rec)
        self.evaluated_now += 1
        if self.hook is not None:
            self.hook.evomm_candidate_evaluated(run=self.run, record=rec)
        if self.on_evaluated is not None:
            self.on_evaluated(rec)
        return rec

    def _evaluate_generation(self, X: np.ndarray, gen: int) -> list[CandidateRecord]:
        """Records of the generation's points: archived ones (cache hits), the rest scored in rounds."""
        self._gen = gen
        keys = [self.space.decode(x).digest() for x in X]
        pending: dict[str, Pending] = {}
        for x, key in zip(X, keys):
            rec = self.archive.get(key, self.stage)
            if key in pending or (rec is not None and (rec.generation != gen or not self.items.get(self.stage, key))):
                continue  # asked twice, or archived by an earlier generation (or without item results)
            pending[key] = Pending(key, x=x, record=rec)
        earlier = [r for r in self.archive.stage_records(self.stage, parents=True) if r.generation < gen]
        sizes = {t: self.objs.task_size(t) for t in self.objs.tasks}
        metrics = list(dict.fromkeys((t, m) for o in self.objs.objectives for t, m, _ in o.terms))
        self.strategy.prepare(self.items, self.stage, earlier, metrics, sizes)
        front = pareto_front([r for r in earlier if not r.is_parent], self.infos)
        self._rounds(self.strategy).run(list(pending.values()), front, gen)
        return [pending[k].record if k in pending else self.archive.get(k, self.stage) for k in keys]  # type: ignore[misc]

    def _before_job(self) -> None:
        """Before a job starts: Ctrl-C and the wall-time budget may stop the stage."""
        if self.stop is not None:
            self.stop.check()
        self._check_wall_time()

    def _spent(self) -> float:
        """Seconds this stage has run, over every session (resumes included)."""
        return self._spent0 + (self.clock() - self._t0)

    def _check_wall_time(self) -> None:
        """Raise :class:`_WallTimeUp` if the next candidate would end past the wall-time budget."""
        limit = self.budget.wall_time
        if limit is None:
            return
        spent = self._spent()
        estimate = sum(self.recent) / len(self.recent) if self.recent else 0.0
        if spent >= limit:
            raise _WallTimeUp(f"stopped: the wall-time budget ({limit:g} s) is spent ({spent:.0f} s)")
        if spent + estimate > limit:
            raise _WallTimeUp(
                f"stopped: the next candidate would exceed the wall-time budget ({spent:.0f} s of "
                f"{limit:g} s spent; a candidate takes ~{estimate:.1f} s)")

    def score_references(self) -> list[CandidateRecord]:
        """Score (or read from the archive) the space's reference models, on every item."""
        names = self.space.references()
        pending = [Pending(f"parent:{n}", reference=n, record=self.archive.get(f"parent:{n}", self.stage))
                   for n in names]
        self._rounds(self.full).run([p for p in pending if p.record is None], [], -1)
        return [p.record for p in pending]  # type: ignore[misc]

    # -- the loop ---------------------------------------------------------------------------------
    def _budget_left(self, state: _State) -> bool:
        b = self.budget
        if b.generations is not None and state.generation >= b.generations:
            return False
        if b.evaluations is not None and len(self._children()) >= b.evaluations:
            return False
        return True

    def _ask(self, state: _State) -> tuple[np.ndarray, Any]:
        alg = state.algorithm
        if isinstance(alg, RandomSearch):
            return alg.ask_x(), None
        pop = alg.ask()
        return np.atleast_2d(pop.get("X")), pop

    def _tell(self, state: _State, X: np.ndarray, pop: Any, F: np.ndarray, G: np.ndarray) -> None:
        alg = state.algorithm
        if isinstance(alg, RandomSearch):
            alg.tell_f(X, F, G)
            return
        pop.set("F", F)
        if G.shape[1]:
            pop.set("G", G)
        alg.tell(infills=pop)

    def run_stage(self) -> StageResult:
        """Run (or resume) the stage until its budget is spent or Ctrl-C; returns the front."""
        state = self._load_or_start()
        self._t0, self._spent0 = self.clock(), state.elapsed
        self.recent.extend(state.extra.get("recent_s", []))
        reason, note, parents = "budget", "", []
        bar = self._bar = self._make_bar(state)
        self._state = state
        try:
            parents = self.score_references() if self.score_parents else []
            while not state.done and self._budget_left(state):
                outer = np.random.get_state()  # isolate the algorithm's use of numpy's global RNG
                np.random.set_state(state.np_state)
                X, pop = self._ask(state)
                state.np_state = np.random.get_state()
                np.random.set_state(outer)
                recs = self._evaluate_generation(X, state.generation)
                self._show(bar, state)
                F = minimize_matrix([r.objectives for r in recs], self.infos)
                G = np.stack([self.objs.constraint_values(r.objectives) for r in recs])
                outer = np.random.get_state()
                np.random.set_state(state.np_state)
                self._tell(state, X, pop, F, G)
                state.np_state = np.random.get_state()
                np.random.set_state(outer)
                state.generation += 1
                state.elapsed = self._spent()
                state.extra["recent_s"] = list(self.recent)
                self._save(state)
                self._show(bar, state)
                if self.hook is not None:
                    self.hook.evomm_generation_end(run=self.run, generation=state.generation,
                                                   front=pareto_front(self._children(), self.infos))
        except KeyboardInterrupt:
            reason = "interrupted"
            self._save_time_spent(state)
        except _WallTimeUp as up:
            note = str(up)
            self._save_time_spent(state)
        finally:
            bar.close()
        return StageResult(self.stage, pareto_front(self._children(), self.infos), parents, reason,
                           state.generation, len(self._children()), note)

    # -- progress ---------------------------------------------------------------------------------
    def _make_bar(self, state: _State) -> Any:
        """A bar over the budget's first bound: generations, else evaluations, else seconds."""
        b = self.budget
        if b.generations is not None:
            total, unit = b.generations, "gen"
        elif b.evaluations is not None:
            total, unit = b.evaluations, "cand"
        else:
            total, unit = int(np.ceil(b.wall_time or 0)), "s"
        bar = progress_bar(total=total, desc=f"evolve[{self.stage}]", unit=unit,
                           disable=not self.progress, dynamic_ncols=True)
        self._show(bar, state)
        return bar

    def _show(self, bar: Any, state: _State) -> None:
        if bar.disable:
            return
        n = {"gen": state.generation, "cand": len(self._children())}.get(bar.unit, int(self._spent()))
        bar.n = min(n, bar.total)
        bar.set_postfix_str(self._postfix(), refresh=True)

    def _postfix(self) -> str:
        front = pareto_front(self._children(), self.infos)
        best = []
        for o in self.infos:
            vals = [r.objectives[o.name] for r in front]
            if vals:
                best.append(f"{o.name}={(max if o.maximize else min)(vals):.3g}")
        return f"done={len(self._children())} " + " ".join(best)
