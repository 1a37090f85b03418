"""The DFS search space for evomm's evolution loop (stage ``kind: dfs``).

Genes come from the ``dfs`` kind's own declarations (:data:`evomm_dfs.kind.PARAMS`):
``include`` is expanded to one gene per slot and ``scale`` to one gene per transition (see
:mod:`evomm_dfs.path`); a stage may narrow the scale range within the declared one. Parents are
loaded once; a candidate is materialised by wrapping their own layer modules (no copies), so a
candidate costs a forward pass, not a merge.

Stage options (``options:`` of a ``kind: dfs`` stage)::

    options:
      repeats: 2               # r (default: the operator's default, 3)
      max_path_length: 8       # required: most layers on a path
      scaling: matrix          # matrix | destination | none
      scale: {low: 0.5, high: 1.5}   # optional, inside the operator's range [0, 2]
      init: identity           # identity (start at A's own path) | middle (all indicators 0)
      format: auto             # export format: auto | frankenmerge | dfs

The stage's ``parents`` are [A, B]; ``@previous`` names the child picked by the previous stage
(the paper's PS+DFS puts the PS child in as A).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from evomm.adapters import ModelRef
from evomm.errors import ConfigError, SearchError
from evomm.space import Gene, SearchSpace, StageContext

from .export import card_section, card_text, dfs_recipe, export_dfs
from .kind import DFS_KIND
from .model import DFSForCausalLM, check_parents
from .path import DFSLayout, DFSPath, PathStep
from .recipe import load_parents

if TYPE_CHECKING:
    from evomm.handle import ModelHandle
    from evomm.plugins import Plugins

#: native distance from the threshold (0) of indicator genes in the ``identity`` start
IDENTITY_MARGIN = 0.25


@dataclass(frozen=True)
class DFSCandidate:
    """A decoded DFS point: the path (what is digested) and the recipe that reproduces it."""

    path: DFSPath
    parents: tuple[tuple[tuple[str, str], ...], ...]
    genes: tuple[tuple[str, float], ...] = field(default=(), compare=False)
    dtype: str = "float32"

    def digest(self) -> str:
        return self.path.digest()

    def to_recipe(self) -> dict[str, Any]:
        return dfs_recipe(self.path, [dict(p) for p in self.parents], dtype=self.dtype)


def _options(stage: Any) -> dict[str, Any]:
    opts = getattr(stage, "options", None)
    if opts is None and isinstance(stage, Mapping):
        opts = stage.get("options", stage)
    return dict(opts or {})


def _check_keys(opts: Mapping[str, Any], where: str) -> None:
    known = {"repeats", "max_path_length", "scaling", "scale", "init", "format"}
    unknown = sorted(set(opts) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {unknown}; known: {sorted(known)}")


class DFSSpace(SearchSpace):
    """Layer-path search over parents A and B (see the module docstring).

    Args:
        refs: A and B as :class:`ModelRef` (A first).
        plugins: loaded plugins (adapters to open the parents).
        options: the stage options (see module docstring).
        dtype: compute dtype name.
        lineage: earlier stages (for model cards).
    """

    kind = "dfs"

    def __init__(
        self,
        refs: Sequence[ModelRef],
        plugins: Plugins,
        options: Mapping[str, Any],
        dtype: str = "float32",
        lineage: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        where = "stage options (kind: dfs)"
        _check_keys(options, where)
        if len(refs) != 2:
            raise ConfigError(f"{where}: a DFS stage takes exactly two parents (A, B), got {len(refs)}")
        self.refs = list(refs)
        self.dtype = dtype
        self._lineage = [dict(x) for x in lineage]
        self.format = str(options.get("format", "auto"))
        self.ckpts, self.models = load_parents(self.refs, plugins, dtype)
        self.aliases = (self.refs[0].name, self.refs[1].name)
        check_parents(self.models[0], self.models[1], DFSPath((PathStep(0, 0),), self.aliases))
        include, scale = DFS_KIND.param("include"), DFS_KIND.param("scale")
        repeats, max_len = DFS_KIND.param("repeats"), DFS_KIND.param("max_path_length")
        if "max_path_length" not in options:
            raise ConfigError(f"{where}: max_path_length is required (it bounds a candidate's cost)")
        r = int(repeats.check(options.get("repeats", repeats.default), f"{where}.repeats"))
        n = int(max_len.check(options["max_path_length"], f"{where}.max_path_length"))
        self.layout = DFSLayout(
            len(self.models[0].model.layers), len(self.models[1].model.layers), r, n,
            str(options.get("scaling", "matrix")),
        )
        s_low, s_high = scale.low, scale.high
        if options.get("scale") is not None:
            s = options["scale"]
            s_low = scale.check(s.get("low", scale.low), f"{where}.scale.low")
            s_high = scale.check(s.get("high", scale.high), f"{where}.scale.high")
            if not s_low < s_high:
                raise ConfigError(f"{where}.scale: need low < high, got {s_low}, {s_high}")
        init = options.get("init", "identity")
        if init not in ("identity", "middle"):
            raise ConfigError(f"{where}.init: {init!r} is not 'identity' or 'middle'")
        ind_names, scale_names = self.layout.gene_names()
        ind_init: list[float | None] = [None] * len(ind_names)
        if init == "identity":
            ind_init = list(self.layout.identity_indicators(-IDENTITY_MARGIN, IDENTITY_MARGIN))
        default_scale = scale.default if scale.default is not None and s_low <= scale.default <= s_high else None
        self.genes = tuple(
            [Gene(nm, include.low, include.high, include.description, v, "include")
             for nm, v in zip(ind_names, ind_init)]
            + [Gene(nm, s_low, s_high, scale.description, default_scale, "scale") for nm in scale_names]
        )
        self._n_ind = len(ind_names)

    # ------------------------------------------------------------------------------------------
    def decode(self, x: np.ndarray) -> DFSCandidate:
        x = np.asarray(x, dtype=float)
        if x.shape != (self.dim,):
            raise SearchError(f"dfs space of {self.dim} genes got a point of shape {x.shape}")
        values = [g.value(u) for g, u in zip(self.genes, x)]
        path = self.layout.decode(values[: self._n_ind], values[self._n_ind :], self.aliases)
        parents = tuple(self._parent_entry(r) for r in self.refs)
        genes = tuple((g.name, round(v, 6)) for g, v in zip(self.genes, values))
        return DFSCandidate(path, parents, genes, self.dtype)

    @staticmethod
    def _parent_entry(ref: ModelRef) -> tuple[tuple[str, str], ...]:
        entry = {"model": str(ref.path), "name": ref.name}
        if ref.adapter:
            entry["adapter"] = ref.adapter
        return tuple(entry.items())

    def model(self, candidate: DFSCandidate) -> DFSForCausalLM:
        """The in-memory child (shares every parameter with the parents)."""
        return DFSForCausalLM.from_parents(self.models[0], self.models[1], candidate.path).eval()

    def materialize(self, candidate: Any) -> ModelHandle:
        return self.ckpts[0].handle(self.model(candidate))

    def export(self, candidate: Any, out_dir: Path) -> None:
        from evomm.export import absolute_model_paths

        recipe = absolute_model_paths(candidate.to_recipe())  # dfs.yaml works from any directory
        if self._lineage:
            recipe["lineage"] = self._lineage
        tok = getattr(self.ckpts[0], "tokenizer", None)
        export_dfs(
            self.models[0], self.models[1], candidate.path, out_dir,
            recipe=recipe,
            save_tokenizer=(lambda d: tok().save_pretrained(d)) if tok is not None else None,
            card=card_text(candidate.path, recipe, lineage=self._lineage),
            force_dfs_class=self.format == "dfs",
            overwrite=True,  # a stage's child left by an interrupted run (evomm's own output)
            reads=[Path(c.ref.path) for c in self.ckpts if Path(c.ref.path).exists()],
        )

    def card_notes(self, candidate: Any) -> str:
        return card_section(candidate.path, candidate.to_recipe())

    def references(self) -> list[str]:
        return list(self.aliases)

    def materialize_reference(self, name: str) -> ModelHandle:
        if name not in self.aliases:
            raise SearchError(f"dfs space has no reference model {name!r}; it has {list(self.aliases)}")
        i = self.aliases.index(name)
        return self.ckpts[i].handle(self.models[i])

    def lineage(self) -> list[dict[str, Any]]:
        return [dict(x) for x in self._lineage]

    def describe(self) -> str:
        lay = self.layout
        return (f"dfs: A={self.aliases[0]} ({lay.layers_a} layers), B={self.aliases[1]} ({lay.layers_b}), "
                f"r={lay.repeats}, T={lay.num_slots}, max path {lay.max_path_length}, scaling "
                f"{lay.scaling}: {self.dim} genes")

    def close(self) -> None:
        for c in self.ckpts:
            c.close()


# ---------------------------------------------------------------------------------------------- factory


def build_dfs_space(stage: Any, ctx: StageContext) -> DFSSpace:
    """Stage factory registered as kind ``dfs`` (hook ``evomm_register_search_spaces`` in :mod:`evomm_dfs`).

    Args:
        stage: the stage (:class:`evomm.evolve_recipe.Stage`: ``parents`` = [A, B], ``options``).
        ctx: the recipe (``ctx.recipe``, to resolve aliases), earlier stages (``previous``; the
            alias ``@previous`` is the previous stage's child) and the plugins.

    Raises:
        ConfigError: bad options, or not exactly two parents.
    """
    from evomm.ps_space import stage_parents

    recipe = getattr(ctx, "recipe", None)
    if recipe is None:
        raise ConfigError(f"stage {getattr(stage, 'name', 'dfs')!r}: the dfs space needs the evolve recipe")
    specs = stage_parents(recipe, stage, ctx)
    if stage.parents is None:
        specs = specs[:2]  # default: the previous child (if any) as A, then the recipe's parents
    refs = list(specs)
    # same entries as the params space's lineage (name, kind, candidate, model_dir, recipe, ...)
    lineage = [dict(p) | {"stage": p.get("name"), "model_dir": str(p.get("model_dir") or "")}
               for p in ctx.previous]
    return DFSSpace(refs, ctx.plugins, _options(stage), ctx.dtype, lineage)
