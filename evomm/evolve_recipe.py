"""The evolve recipe: parents, what to evolve, objectives, algorithm, budget (``evomm evolve``).

A recipe is YAML validated by pydantic; every error names the key path, the value received and
the fix. Example (``configs/demo.yaml`` is a complete one)::

    seed: 0
    parents:
      - {name: ja, path: zoo/models/ja, adapter: hf-causal-lm}
      - {name: math, path: zoo/models/math}
    base_model: {name: base, path: zoo/models/base}
    merge:
      method: task_arithmetic
      tokenizer_source: base
      parameters:
        weight: {evolve: {low: -0.5, high: 1.5}, granularity: per_layer}
        normalize: 0
    objectives:
      - {name: ja_math, task: toy_ja_math, metric: strict}
      - {name: ja, task: toy_ja_skill, constraint: ">= 0.2"}
    tasks:
      toy_ja_math: {data: zoo/data/ja_math, split: dev, limit: 100}
    algorithm: {name: nsga2, pop_size: 12}
    budget: {generations: 8}
    fitness: {strategy: racing, rounds: [20, 50, 100%], confidence: 0.95}
    executor: {name: processes, workers: 2}

A parameter is either fixed (a number, a gradient list or ``{filter, value}`` entries, passed to
the merge unchanged) or evolved: ``{evolve: {low, high} | true, granularity: ..., kinds: [...]}``.
Granularities: ``global`` (one value for the whole model; for a per-model parameter that is one
value per parent, ``per_model`` is a synonym), ``per_layer`` (one value per block plus one for the
tensors outside the block stack), ``{per_layer_group: N}`` (blocks in groups of N),
``{gradient: K}`` (K control points interpolated across the blocks, mergekit's gradient).
``kinds: [attention, mlp]`` splits each of those values by module kind. ``shared: true`` makes a
per-model parameter use one gene for every parent.

Several stages (``stages: [...]``; e.g. parameter space then data-flow space) share parents,
objectives and tasks; the single-stage form above is shorthand for one ``params`` stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evomm.adapters import ModelRef
from evomm.conditions import Condition, parse_condition
from evomm.errors import ConfigError
from evomm.recipe import key_path

ALGORITHMS = ("nsga2", "nsga3", "moead", "cmaes", "de", "ga", "random")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Bounds(_Strict):
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> Bounds:
        if not self.low < self.high:
            raise ValueError(f"evolve bounds need low < high, got low={self.low}, high={self.high}")
        return self


Granularity = Union[
    Literal["global", "per_model", "per_layer"],
    dict[Literal["per_layer_group", "gradient"], int],
]


class Evolved(_Strict):
    """An evolved parameter: bounds (``true`` = the operator's declared range) and granularity."""

    evolve: Union[Bounds, Literal[True]]
    granularity: Granularity = "global"
    kinds: list[str] | None = None
    shared: bool = False
    init: float | None = None

    @field_validator("granularity")
    @classmethod
    def _positive(cls, v: Any) -> Any:
        if isinstance(v, dict):
            if len(v) != 1:
                raise ValueError("granularity takes one of per_layer_group: N or gradient: K")
            (key, n), = v.items()
            if n < 1 or (key == "gradient" and n < 2):
                raise ValueError(f"{key} must be >= {2 if key == 'gradient' else 1}, got {n}")
        return v


ParamEntry = Union[Evolved, float, list[Any]]


class MergeTemplate(_Strict):
    """The operator template of a parameter-space stage."""

    method: str
    parameters: dict[str, ParamEntry] = Field(default_factory=dict)
    models: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="fixed per-parent overrides: {alias: {param: value}}"
    )
    tokenizer_source: str | None = None
    dtype: str | None = None
    out_dtype: str | None = None
    vocab: Literal["strict", "pad_from_donor"] | None = Field(
        None, description="the merge recipe's `vocab.mode` (`{mode: ...}` or the mode alone)"
    )
    allow_nonfinite: bool = Field(
        False, description="the merge recipe's `allow_nonfinite`: candidates whose merged weights "
        "hold NaN/Inf are evaluated instead of archived as failed, and parents may hold them"
    )

    @field_validator("vocab", mode="before")
    @classmethod
    def _vocab_mode(cls, v: Any) -> Any:
        return v["mode"] if isinstance(v, dict) and set(v) == {"mode"} else v


class Objective(_Strict):
    """One objective: a task's metric, or a weighted suite of tasks, and its direction."""

    name: str
    task: str | None = None
    metric: str | None = None
    suite: dict[str, float] | None = None
    direction: Literal["maximize", "minimize"] | None = None
    constraint: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Objective:
        if (self.task is None) == (self.suite is None):
            raise ValueError(f"objective {self.name!r} needs exactly one of `task` or `suite`")
        return self

    @field_validator("constraint")
    @classmethod
    def _condition(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                parse_condition(v, "the constraint")
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return v

    def constraint_parts(self) -> Condition | None:
        """The parsed ``constraint`` (:mod:`evomm.conditions`), or None."""
        return None if self.constraint is None else parse_condition(self.constraint, "the constraint")


class TaskOptions(BaseModel):
    """Options passed to a task (``data``, ``split``, ``limit``, ``seed`` and task-specific ones)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    data: str | None = None
    split: str | None = None  # None: the task's own default split
    limit: int | None = None
    seed: int | None = None


class Algorithm(_Strict):
    name: Literal["nsga2", "nsga3", "moead", "cmaes", "de", "ga", "random"] = "nsga2"
    pop_size: int = Field(16, ge=2)
    settings: dict[str, Any] = Field(
        default_factory=dict, description="extra keyword arguments for the pymoo algorithm"
    )


#: The scoring strategy of a recipe without ``fitness:`` or ``cheap_first:``.
DEFAULT_STRATEGY = "full"

#: The budget of a stage that gives no ``budget:`` at all.
DEFAULT_GENERATIONS = 10


class Budget(_Strict):
    """When a stage stops: whichever bound is reached first. A budget given in the recipe is
    exactly the bounds it names (at least one); a stage without ``budget:`` runs
    :data:`DEFAULT_GENERATIONS` generations. ``wall_time`` is checked before each candidate."""

    generations: int | None = Field(None, ge=1)
    evaluations: int | None = Field(None, ge=1)
    wall_time: float | None = Field(None, gt=0, allow_inf_nan=False, description="seconds")

    @model_validator(mode="after")
    def _bounded(self) -> Budget:
        if self.generations is None and self.evaluations is None and self.wall_time is None:
            raise ValueError(
                "the budget has no bound, so the run would never stop: give at least one of "
                "generations, evaluations or wall_time (seconds), e.g. `budget: {generations: 10}`"
            )
        return self


def default_budget() -> Budget:
    """The budget of a stage without ``budget:`` (:data:`DEFAULT_GENERATIONS` generations)."""
    return Budget(generations=DEFAULT_GENERATIONS)


class CheapFirst(_Strict):
    """Score on ``subset`` examples first; the full task only if the candidate could enter the
    front (optimistic by ``margin`` in each objective)."""

    subset: int = Field(ge=1)
    margin: float = Field(0.05, ge=0)


Round = Union[int, str]

#: Racing's default rounds: 20 items, doubling, then the rest (rounds past a task's size score
#: nothing more). Doubling stops a candidate about as soon as its bounds allow; on
#: bench/search_cost.py's synthetic suites it scored 1.3-4.1x fewer items than the issue's
#: example [20, 50, 100%], within 1.4% of full evaluation's held-out value (docs/evolution.md).
DEFAULT_ROUNDS: tuple[Round, ...] = (20, 40, 80, 160, 320, 640, 1280, 2560, 5120, 10240, "100%")


class Fitness(_Strict):
    """How candidates are scored (:mod:`evomm.racing`): ``full`` (every item), ``subset`` (the
    first ``subset`` items, the rest if optimistic by ``margin`` it could enter the front),
    ``racing`` (rounds of shuffled items, stopping candidates whose confidence bound cannot enter
    the front) or ``irt`` (``anchors`` items, the rest estimated by an item-response model; the
    rest scored only if the estimate could enter the front)."""

    strategy: Literal["full", "subset", "racing", "irt"] = "full"
    rounds: list[Round] = Field(default_factory=lambda: list(DEFAULT_ROUNDS))
    confidence: float = Field(0.95, gt=0, le=1)
    subset: int | None = Field(None, ge=1)
    margin: float = Field(0.05, ge=0)
    anchors: int = Field(20, ge=2)

    @field_validator("rounds")
    @classmethod
    def _rounds(cls, v: list[Round]) -> list[Round]:
        if not v:
            raise ValueError("rounds needs at least one entry, e.g. [20, 50, 100%]")
        for r in v:
            ok = (isinstance(r, int) and r >= 1) or (
                isinstance(r, str) and r.endswith("%") and r[:-1].replace(".", "", 1).isdigit()
                and 0 < float(r[:-1]) <= 100)
            if not ok:
                raise ValueError(f"a round is a number of items (20) or a share ('50%'), got {r!r}")
        return v

    @model_validator(mode="after")
    def _subset(self) -> Fitness:
        if self.strategy == "subset" and self.subset is None:
            raise ValueError("strategy subset needs `subset: N` (items scored first)")
        return self


class Executor(_Strict):
    """Where candidates are scored (``evomm_register_executors``): ``local`` (this process),
    ``processes`` (``workers`` local processes) or ``ray`` (``workers`` Ray actors; ``address``
    joins a running cluster). The archive does not depend on it."""

    name: str = "local"
    workers: int = Field(1, ge=1)
    num_gpus_per_worker: float = Field(0, ge=0)
    num_cpus_per_worker: float | None = Field(None, gt=0)
    address: str | None = None


class Stage(_Strict):
    """One search stage. ``kind: params`` uses ``merge``; other kinds read ``options``."""

    name: str = "ps"
    kind: str = "params"
    parents: list[str] | None = Field(
        None, description="aliases of the parents for this stage; '@previous' is the previous "
        "stage's picked child (default: all parents, with the previous child first)"
    )
    merge: MergeTemplate | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    algorithm: Algorithm = Field(default_factory=Algorithm)
    budget: Budget = Field(default_factory=default_budget)
    pick: str = "knee"

    @model_validator(mode="after")
    def _params_need_merge(self) -> Stage:
        if self.kind == "params" and self.merge is None:
            raise ValueError(f"stage {self.name!r} of kind 'params' needs a `merge:` template")
        return self


class EvolveRecipe(_Strict):
    """A complete evolve recipe (see module docstring)."""

    name: str = "evolve"
    seed: int = Field(0, ge=0, lt=2**32)  # numpy's and pymoo's seed range
    dtype: str = "float32"
    parents: list[ModelRef] = Field(min_length=1)
    base_model: ModelRef | None = None
    objectives: list[Objective] = Field(min_length=1)
    tasks: dict[str, TaskOptions] = Field(default_factory=dict)
    cheap_first: CheapFirst | None = None
    fitness: Fitness | None = None
    executor: Executor = Field(default_factory=Executor)
    score_parents: bool = True
    stages: list[Stage] = Field(default_factory=list)
    # single-stage shorthand
    merge: MergeTemplate | None = None
    algorithm: Algorithm | None = None
    budget: Budget | None = None

    @model_validator(mode="after")
    def _stages(self) -> EvolveRecipe:
        if self.stages and (self.merge or self.algorithm or self.budget):
            raise ValueError("give either `stages:` or the single-stage keys merge/algorithm/budget, not both")
        if not self.stages:
            if self.merge is None:
                raise ValueError("a recipe needs `merge:` (or a list of `stages:`)")
            stage = Stage(
                merge=self.merge,
                algorithm=self.algorithm or Algorithm(),
                budget=self.budget or default_budget(),
            )
            object.__setattr__(self, "stages", [stage])
        if self.cheap_first is not None and self.fitness is not None:
            raise ValueError("give `fitness:` or the older `cheap_first:`, not both; cheap_first: {subset: N, "
                             "margin: M} is fitness: {strategy: subset, subset: N, margin: M}")
        names = [o.name for o in self.objectives]
        if len(set(names)) != len(names):
            raise ValueError(f"objective names must be unique, got {names}")
        aliases = [p.name for p in self.parents] + ([self.base_model.name] if self.base_model else [])
        if len(set(aliases)) != len(aliases):
            raise ValueError(f"model aliases must be unique, got {aliases}")
        for st in self.stages:
            if st.algorithm.name == "cmaes" and len(self.objectives) != 1:
                raise ValueError(
                    f"stage {st.name!r}: cmaes optimises one objective, the recipe has "
                    f"{len(self.objectives)}; use nsga2/nsga3/moead or keep one objective"
                )
        return self

    def resolve_paths(self, recipe_dir: Path) -> EvolveRecipe:
        """A copy whose relative model and data paths are made absolute from ``recipe_dir``."""

        def fix(p: str | None) -> str | None:
            if p is None:
                return None
            q = Path(p).expanduser()
            cand = q if q.is_absolute() else (recipe_dir / q)
            return str(cand.resolve()) if cand.exists() else p

        data = self.model_dump(mode="python")
        for m in data["parents"] + ([data["base_model"]] if data["base_model"] else []):
            m["path"] = fix(m["path"])
        for opts in data["tasks"].values():
            opts["data"] = fix(opts.get("data"))
        data["merge"] = data["algorithm"] = data["budget"] = None
        return EvolveRecipe.model_validate(data)

    def fitness_spec(self) -> Fitness:
        """The scoring strategy: ``fitness``, else ``cheap_first`` as ``strategy: subset``, else
        :data:`DEFAULT_STRATEGY`."""
        if self.fitness is not None:
            return self.fitness
        if self.cheap_first is not None:
            return Fitness(strategy="subset", subset=self.cheap_first.subset, margin=self.cheap_first.margin)
        return Fitness(strategy=DEFAULT_STRATEGY)

    def objective_tasks(self) -> list[str]:
        """The tasks the objectives use (a suite's ``task.metric`` keys by task), in order."""
        used: list[str] = []
        for o in self.objectives:
            names = [o.task] if o.task else [key.partition(".")[0] for key in o.suite or {}]
            used += [n for n in names if n is not None and n not in used]
        return used

    def model(self, alias: str) -> ModelRef:
        for m in [*self.parents, *([self.base_model] if self.base_model else [])]:
            if m.name == alias:
                return m
        raise ConfigError(f"model alias {alias!r} is not among the recipe's parents or base_model")


def parse_recipe(data: Any, source: str = "<recipe>") -> EvolveRecipe:
    """Validate a recipe mapping; errors name the key path, the value and the fix.

    Example:
        >>> parse_recipe({"parents": [{"name": "a", "path": "x"}], "merge": {"method": "linear"},
        ...               "objectives": [{"name": "o", "task": "t"}]}).stages[0].kind
        'params'
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: an evolve recipe must be a YAML mapping, got {type(data).__name__}")
    try:
        return EvolveRecipe.model_validate(data)
    except ValidationError as exc:
        lines = []
        seen: set[str] = set()
        for err in exc.errors():
            where = key_path(err["loc"])
            if where in seen:
                continue
            seen.add(where)
            value = err.get("input")
            msg = err["msg"]
            if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
                msg = "unknown key (check the spelling; see docs/evolution.md for the keys)"
            elif err["type"] in ("missing", "missing_argument"):
                msg = "required key is missing"
            lines.append(f"  {where}: {msg} (got {value!r})" if "missing" not in err["type"] else f"  {where}: {msg}")
        raise ConfigError(f"{source}: invalid evolve recipe:\n" + "\n".join(lines)) from None


def load_evolve_recipe(path: str | Path) -> EvolveRecipe:
    """Read and validate an evolve recipe YAML; relative paths resolve from its directory.

    Raises:
        ConfigError: missing file, bad YAML or an invalid key (the message names it).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"evolve recipe {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    return parse_recipe(data, str(p)).resolve_paths(p.parent.resolve())


def is_evolve_recipe(data: Any) -> bool:
    """Whether a parsed YAML mapping is an evolve recipe (has ``objectives``), not a merge recipe."""
    return isinstance(data, dict) and "objectives" in data
