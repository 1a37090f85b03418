"""The search-space protocol: what the evolution loop searches over.

The loop (:mod:`evomm.search`) knows nothing about weights, operators or layer paths. It sees a
:class:`SearchSpace`: a list of :class:`Gene` s, a way to turn a point of the unit cube
``[0, 1]^d`` into a frozen :class:`Candidate` (whose :meth:`Candidate.digest` is the cache key),
a way to build an in-memory model for a candidate (:meth:`SearchSpace.materialize`), and a way to
write a chosen candidate to disk (:meth:`SearchSpace.export`).

Two kinds of space exist:
  * ``params`` — parameter-space merging (:class:`evomm.genome.ParameterSpace`): genes are the
    evolvable parameters of a merge operator, at a chosen granularity; a candidate is a concrete
    merge recipe.
  * ``dfs`` — data-flow-space merging (added by the DFS plugin): genes are layer-path indicators
    and scalings; a candidate is a layer path.

Spaces are made from a recipe *stage* by the :class:`SpaceKind` registered under the stage's
``kind`` (hook ``evomm_register_search_spaces``; ``params`` is the core's own). Stages chain: the child picked at the end of one stage becomes a
parent of the next (PS then DFS, as in the paper's PS+DFS); :class:`StageContext` carries what the
previous stages produced, and :meth:`SearchSpace.lineage` records the chain for model cards.

Genes live in the unit cube for the optimiser (so that CMA-ES's ``sigma`` and the random
initialisation mean the same thing for every gene); :meth:`Gene.value` maps a unit coordinate to
the gene's native value in ``[low, high]``.

Example (a minimal space, e.g. for tests)::

    class Quadratic(SearchSpace):
        kind = "quadratic"
        def __init__(self):
            self.genes = (Gene("x", -1.0, 1.0, "a number"),)
        def decode(self, x):
            return DictCandidate({"x": self.genes[0].value(x[0])})
        def materialize(self, candidate):
            return MyHandle(candidate.to_recipe()["x"])
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from evomm.errors import SearchError
from evomm.params import ParamSpec

if TYPE_CHECKING:
    from evomm.handle import ModelHandle
    from evomm.plugins import Plugins


@dataclass(frozen=True)
class Gene:
    """One coordinate of a search space.

    Attributes:
        name: unique, readable name (``weight[ja].layers.0``, ``path.17``, ``scale.3->5``).
        low, high: native range; the optimiser sees ``[0, 1]`` and :meth:`value` maps it here.
        description: one line for ``evomm plan`` / ``evomm evolve --dry-run``.
        init: preferred starting value in native units (``None``: middle of the range).
        group: label used to group genes in tables (``weight[ja]``), optional.

    Example:
        >>> Gene("w", -1.0, 3.0).value(0.25)
        0.0
    """

    name: str
    low: float
    high: float
    description: str = ""
    init: float | None = None
    group: str = ""

    def value(self, u: float) -> float:
        """Native value of unit coordinate ``u`` (clipped to ``[0, 1]``)."""
        u = min(1.0, max(0.0, float(u)))
        return float(self.low + u * (self.high - self.low))

    def unit(self, v: float) -> float:
        """Unit coordinate of native value ``v`` (inverse of :meth:`value`)."""
        if self.high == self.low:
            return 0.0
        return float(min(1.0, max(0.0, (float(v) - self.low) / (self.high - self.low))))


@runtime_checkable
class Candidate(Protocol):
    """A decoded point of a space: frozen, hashable, printable as a recipe.

    ``digest()`` is the cache key: two candidates with equal digests are the same model and are
    never evaluated twice. ``to_recipe()`` is a JSON/YAML-ready dict (``merge.yaml`` for a
    parameter-space candidate) that ``evomm merge`` turns back into the same model.
    """

    def digest(self) -> str: ...

    def to_recipe(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class DictCandidate:
    """A :class:`Candidate` that is just a recipe dict (digest = SHA-256 of its canonical JSON).

    Spaces whose recipe fully determines the model can use it directly.
    """

    recipe_json: str
    genes: tuple[tuple[str, float], ...] = field(default=(), compare=False)

    @classmethod
    def from_recipe(
        cls, recipe: Mapping[str, Any], genes: Mapping[str, float] | None = None
    ) -> DictCandidate:
        blob = json.dumps(recipe, sort_keys=True, separators=(",", ":"), default=str)
        return cls(blob, tuple((genes or {}).items()))

    def digest(self) -> str:
        return hashlib.sha256(self.recipe_json.encode()).hexdigest()

    def to_recipe(self) -> dict[str, Any]:
        return json.loads(self.recipe_json)


class SearchSpace(ABC):
    """What the evolution loop searches over (see the module docstring).

    Class attributes:
        kind: the stage kind that builds it (``params``, ``dfs``).

    Attributes:
        genes: the coordinates, in genome order.
    """

    kind: ClassVar[str] = ""
    genes: tuple[Gene, ...] = ()

    @property
    def dim(self) -> int:
        return len(self.genes)

    def native(self, x: Sequence[float] | np.ndarray) -> dict[str, float]:
        """Gene name -> native value for unit point ``x`` (for archives and tables)."""
        return {g.name: g.value(u) for g, u in zip(self.genes, np.asarray(x, dtype=float))}

    def initial_point(self) -> np.ndarray:
        """Unit point of every gene's ``init`` (middle of the range when not set)."""
        return np.array([0.5 if g.init is None else g.unit(g.init) for g in self.genes])

    @abstractmethod
    def decode(self, x: np.ndarray) -> Candidate:
        """Turn a unit-cube point (shape ``(dim,)``) into a candidate. Must be deterministic."""

    @abstractmethod
    def materialize(self, candidate: Candidate) -> ModelHandle:
        """An in-memory, runnable model for ``candidate`` (parents are loaded once per space;
        the returned handle may be invalidated by the next call)."""

    def export(self, candidate: Candidate, out_dir: Path) -> None:
        """Write ``candidate`` as a loadable checkpoint under ``out_dir`` (weights, config,
        tokenizer); the caller adds the model card and recipe files."""
        raise SearchError(f"search space {self.kind!r} cannot export candidates")

    def references(self) -> list[str]:
        """Names of the reference models (the parents) the front is compared against."""
        return []

    def materialize_reference(self, name: str) -> ModelHandle:
        """A runnable handle for reference model ``name`` (one of :meth:`references`)."""
        raise SearchError(f"search space {self.kind!r} has no reference model {name!r}")

    def lineage(self) -> list[dict[str, Any]]:
        """The chain of stages that produced this space's parents (for model cards): one dict
        per earlier stage (``stage``, ``kind``, ``candidate``, ``recipe``), oldest first."""
        return []

    def card_notes(self, candidate: Candidate) -> str:
        """Markdown the exported child's model card adds (e.g. how to load a model class that is
        not plain transformers); empty by default."""
        return ""

    def describe(self) -> str:
        """One line about the space for logs (``params: task_arithmetic, 8 genes``)."""
        return f"{self.kind}: {self.dim} genes"

    def describe_genes(self) -> str:
        """The genes with their native bounds, one a line (``evomm evolve --dry-run``); a space
        may group them more readably."""
        return "\n".join(f"  {g.name:<30} [{g.low:g}, {g.high:g}]  {g.description}" for g in self.genes)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release models and files (optional)."""


@dataclass
class StageContext:
    """What a space factory receives besides its stage config.

    Attributes:
        plugins: loaded plugins (adapters, operators, tasks).
        run_dir: the run directory; a stage may keep files under ``run_dir / stage_name``.
        recipe_dir: directory of the recipe file (relative paths resolve from it).
        previous: one entry per finished earlier stage: ``name``, ``kind``, ``candidate``
            (id), ``model_dir`` (its exported child, usable as a parent path), ``recipe``.
        dtype: compute dtype name for in-memory models.
        recipe: the whole evolve recipe (:class:`evomm.evolve_recipe.EvolveRecipe`): parents,
            base model, seed; the stage config is passed to the factory separately.
    """

    plugins: Plugins
    run_dir: Path
    recipe_dir: Path = Path(".")
    previous: list[dict[str, Any]] = field(default_factory=list)
    dtype: str = "float32"
    recipe: Any = None


#: A factory: (stage config, context) -> space. The stage config is the validated
#: :class:`evomm.evolve_recipe.Stage` (``kind``, ``merge``, ``options``, ``parents``...).
SpaceFactory = Callable[[Any, StageContext], SearchSpace]
#: A whole-model builder: (recipe mapping, out_dir, plugins, *, recipe_dir, overwrite) -> out_dir.
RecipeBuilder = Callable[..., Path]


@dataclass(frozen=True)
class SpaceKind:
    """A kind of search space, as registered by ``evomm_register_search_spaces``: stages with
    ``kind: <name>`` are searched in the space ``factory(stage, ctx)`` builds.

    Attributes:
        name: the stage kind (``params``, ``dfs``).
        factory: builds the stage's space; import heavy modules inside it, not at plugin load.
        description: one line for ``evomm plugins``.
        params: the parameters the kind's genes are derived from (listed by ``evomm plugins``;
            ``params`` takes its parameters from the stage's merge operator instead).
        build: for a kind whose exported children are described by a recipe of their own
            (``merge_method: <name>``, e.g. a DFS layer path), the whole-model builder that
            ``evomm merge`` runs on such a recipe: ``build(recipe, out_dir, plugins, *,
            recipe_dir, overwrite) -> out_dir``. ``None``: its children are ordinary merge recipes.

    Example:
        >>> SpaceKind("quadratic", lambda stage, ctx: None, "a test space").name
        'quadratic'
    """

    name: str
    factory: SpaceFactory
    description: str = ""
    params: tuple[ParamSpec, ...] = ()
    build: RecipeBuilder | None = None

    def param(self, name: str) -> ParamSpec:
        """The declared parameter ``name``.

        Raises:
            KeyError: the kind declares no such parameter (a plugin's bug, not a user's).
        """
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(f"search-space kind {self.name!r} declares no parameter {name!r}")


def _build_parameter_space(stage: Any, ctx: StageContext) -> SearchSpace:
    from evomm.ps_space import build_parameter_space  # merges weights: torch and the operators

    return build_parameter_space(stage, ctx)


#: The core's own kind (parameter-space merging), registered before any plugin's.
PARAMS_KIND = SpaceKind(
    "params", _build_parameter_space,
    "parameter space: the evolvable parameters of a merge operator, per layer or per model",
)
