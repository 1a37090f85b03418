"""A synthetic search space and two tasks for evolution tests (no weights, milliseconds per
candidate). The model of a candidate is its gene vector; task ``syn_a`` rewards genes near 0.2,
``syn_b`` genes near 0.8 (a clean two-objective trade-off). :data:`PLUGIN` registers stage kind
``synthetic`` and the tasks."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import numpy as np

from evomm import hookimpl
from evomm.space import DictCandidate, Gene, SearchSpace, SpaceKind
from evomm.tasks import MetricSpec, Task, TaskResult

DIM = 4
EVALUATED: list[str] = []  # digests evaluated in this process (tests count re-evaluations)


class SynthHandle:
    capabilities = frozenset()

    def __init__(self, x: np.ndarray) -> None:
        self.x = x


class SynthSpace(SearchSpace):
    kind = "synthetic"

    def __init__(self, stage: Any = None, ctx: Any = None) -> None:
        self.genes = tuple(Gene(f"g{i}", 0.0, 1.0, "synthetic gene") for i in range(DIM))

    def decode(self, x: np.ndarray) -> DictCandidate:
        vals = [round(float(v), 4) for v in x]
        return DictCandidate.from_recipe({"x": vals}, dict(zip([g.name for g in self.genes], vals)))

    def materialize(self, candidate: DictCandidate) -> SynthHandle:
        EVALUATED.append(candidate.digest())
        return SynthHandle(np.array(candidate.to_recipe()["x"]))

    def references(self) -> list[str]:
        return ["low", "high"]

    def materialize_reference(self, name: str) -> SynthHandle:
        return SynthHandle(np.full(DIM, 0.0 if name == "low" else 1.0))

    def export(self, candidate: DictCandidate, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "x.txt").write_text(" ".join(map(str, candidate.to_recipe()["x"])))


@hookimpl
def evomm_register_search_spaces(registry: Any) -> None:
    registry.add(SpaceKind("synthetic", SynthSpace, "synthetic test space"))


class _Syn(Task):
    target = 0.0
    metrics = (MetricSpec("score"), MetricSpec("loss", higher_is_better=False))

    def load(self) -> list[dict[str, Any]]:
        return [{"i": i} for i in range(10)]

    def score(self, handle: Any, examples: Any) -> TaskResult:
        d = float(np.mean((handle.x - self.target) ** 2))
        # a subset scores a little lower (noisier), so cheap-first has something to decide
        frac = len(examples) / 10
        return TaskResult({"score": (1.0 - d) * (0.9 + 0.1 * frac), "loss": d}, n=len(examples))


class SynA(_Syn):
    name = "syn_a"
    target = 0.2


class SynB(_Syn):
    name = "syn_b"
    target = 0.8


@hookimpl
def evomm_register_tasks(registry: Any) -> None:
    registry.add(SynA)
    registry.add(SynB)


PLUGIN = types.ModuleType("evo_synthetic_plugin")
PLUGIN.evomm_register_tasks = evomm_register_tasks  # type: ignore[attr-defined]
PLUGIN.evomm_register_search_spaces = evomm_register_search_spaces  # type: ignore[attr-defined]


def recipe_dict(algorithm: str = "nsga2", generations: int = 4, pop: int = 8, seed: int = 0,
                cheap: bool = False) -> dict[str, Any]:
    d: dict[str, Any] = {
        "seed": seed,
        "parents": [{"name": "low", "path": "none"}, {"name": "high", "path": "none"}],
        "objectives": [{"name": "a", "task": "syn_a"}, {"name": "b", "task": "syn_b"}],
        "stages": [{"name": "syn", "kind": "synthetic", "algorithm": {"name": algorithm, "pop_size": pop},
                    "budget": {"generations": generations}}],
    }
    if cheap:
        d["cheap_first"] = {"subset": 3, "margin": 0.0}
    return d


def plugins() -> Any:
    from evomm.plugins import load_plugins

    return load_plugins(extra=[PLUGIN], autoload=False)


if __name__ == "__main__":  # used by tests/test_resume.py: run or resume in a subprocess
    from evomm.evolve_recipe import parse_recipe
    from evomm.runner import evolve

    run_dir, mode, crash_after = sys.argv[1], sys.argv[2], int(sys.argv[3])
    import os

    def crash(rec: Any) -> None:
        if crash_after and len(EVALUATED) >= crash_after:
            os.kill(os.getpid(), 9)

    evolve(parse_recipe(recipe_dict(generations=5)) if mode == "start" else None, run_dir,
           resume=(mode == "resume"), plugins=plugins(), progress=False, on_evaluated=crash)
    print("evaluated", len(EVALUATED))
