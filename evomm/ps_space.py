"""The parameter-space search space: evolve the parameters of a merge operator.

Genes come from :func:`evomm.genome.derive_genome`; a point decodes into an ordinary merge
recipe (:class:`evomm.recipe.MergeRecipe`, mergekit-compatible) and its :class:`MergePlan`,
whose digest is the cache key. Candidates are merged in memory into one preloaded model
(:class:`evomm.execute.InMemoryMerger`; the parents are read once) and exported through the
adapter with :func:`evomm.execute.merge_to_dir`, so the exported ``merge.yaml`` reproduces the
child bit for bit with ``evomm merge``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evomm.adapters import ModelRef
from evomm.errors import ConfigError
from evomm.evolve_recipe import EvolveRecipe, Stage
from evomm.execute import InMemoryMerger, merge_to_dir, open_models
from evomm.genome import Genome, apply_genome, derive_genome
from evomm.handle import ModelHandle
from evomm.plan import MergePlan, plan_frame, plan_from_values
from evomm.recipe import DTYPES, MergeRecipe
from evomm.space import SearchSpace, StageContext

PREVIOUS = "@previous"


@dataclass(frozen=True)
class PSCandidate:
    """A parameter-space candidate: the merge recipe (as JSON) and its plan."""

    plan: MergePlan = field(compare=False)
    recipe_json: str
    plan_digest: str

    def digest(self) -> str:
        return self.plan_digest

    def to_recipe(self) -> dict[str, Any]:
        return json.loads(self.recipe_json)


def stage_parents(recipe: EvolveRecipe, stage: Stage, ctx: StageContext) -> list[ModelRef]:
    """The parents of a stage: ``stage.parents`` (aliases; ``@previous`` = the previous stage's
    child), default all recipe parents with the previous child (if any) first."""
    prev: ModelRef | None = None
    if ctx.previous:
        p = ctx.previous[-1]
        prev = ModelRef(f"{p['name']}_child", str(p["model_dir"]))
    if stage.parents is None:
        return ([prev] if prev else []) + list(recipe.parents)
    out = []
    for alias in stage.parents:
        if alias == PREVIOUS:
            if prev is None:
                raise ConfigError(f"stages.{stage.name}.parents: '@previous' in the first stage names no model")
            out.append(prev)
        else:
            out.append(recipe.model(alias))
    return out


class ParameterSpace(SearchSpace):
    """Search over an operator template's evolved parameters (kind ``params``).

    Args:
        recipe: the evolve recipe (parents, base model, dtype, seed).
        stage: the stage (its ``merge`` template).
        ctx: plugins and earlier stages.
    """

    kind = "params"

    def __init__(self, recipe: EvolveRecipe, stage: Stage, ctx: StageContext) -> None:
        assert stage.merge is not None  # the recipe validator guarantees it
        self.recipe, self.stage, self.ctx, self.template = recipe, stage, ctx, stage.merge
        self.plugins = ctx.plugins
        self.operator = self.plugins.operators.get(self.template.method)
        self.parents = stage_parents(recipe, stage, ctx)
        self.aliases = [p.name for p in self.parents]
        self.base = recipe.base_model
        self.dtype = self.template.dtype or recipe.dtype
        # a first recipe (no parameters) only to learn the donor and open the models
        probe = self._merge_recipe({}, {a: {} for a in self.aliases})
        self.checkpoints = open_models(probe, self.plugins)
        self.donor = probe.donor()
        ck = self.checkpoints[self.donor]
        self.genome: Genome = derive_genome(self.template, self.operator, self.aliases, ck.layout, ck.num_layers)
        self.genes = self.genome.genes
        # the template is checked once, as a whole merge recipe (the genome's midpoint); each
        # candidate's plan is then built from its values in this frame (plan_from_values)
        self.frame = plan_frame(self._merge_recipe(*self._parameters(np.full(self.dim, 0.5))),
                                self.checkpoints, self.plugins)
        self._merger: InMemoryMerger | None = None

    # -- recipes ----------------------------------------------------------------------------------
    def _merge_recipe(self, glob: dict[str, Any], per: dict[str, dict[str, Any]]) -> MergeRecipe:
        return MergeRecipe.from_dict(self._recipe_dict(glob, per), source="evolve recipe (decoded)")

    def _recipe_dict(self, glob: dict[str, Any], per: dict[str, dict[str, Any]]) -> dict[str, Any]:
        models = []
        for p in self.parents:
            entry: dict[str, Any] = {"model": p.path, "name": p.name}
            if per.get(p.name):
                entry["parameters"] = per[p.name]
            if p.adapter:
                entry["adapter"] = p.adapter
            if p.allow_pickle:
                entry["allow_pickle"] = True
            models.append(entry)
        d: dict[str, Any] = {"merge_method": self.template.method, "models": models}
        if self.base is not None:
            d["base_model"] = self.base.path
            if self.base.allow_pickle:  # a merge recipe's base_model is a path: the recipe-wide key
                d["allow_pickle"] = True
        if glob:
            d["parameters"] = glob
        d["dtype"] = self.dtype
        if self.template.out_dtype:
            d["out_dtype"] = self.template.out_dtype
        if self.template.tokenizer_source:
            src = self.template.tokenizer_source
            if self.base is not None and src == self.base.name:
                src = "base"
            d["tokenizer_source"] = src
        if self.template.vocab:
            d["vocab"] = {"mode": self.template.vocab}
        if self.template.allow_nonfinite:
            d["allow_nonfinite"] = True
        d["seed"] = self.recipe.seed
        return d

    def _parameters(self, x: np.ndarray) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        return apply_genome(self.template, self.operator, self.genome, x, self.aliases)

    def recipe_for(self, x: np.ndarray) -> dict[str, Any]:
        """The merge recipe (mergekit-style dict) of unit point ``x``."""
        return self._recipe_dict(*self._parameters(x))

    def decode(self, x: np.ndarray) -> PSCandidate:
        """Point ``x`` -> its plan (built from the resolved values in :attr:`frame`) and recipe."""
        glob, per = self._parameters(x)
        plan = plan_from_values(self.frame, glob, [per.get(ref.name, {}) for ref in self.frame.models])
        return PSCandidate(plan, json.dumps(self._recipe_dict(glob, per), sort_keys=True), plan.digest())

    # -- models -----------------------------------------------------------------------------------
    def _torch_dtype(self) -> torch.dtype:
        return getattr(torch, DTYPES.get(self.dtype, self.dtype))

    def materialize(self, candidate: Any) -> ModelHandle:
        if self._merger is None:
            self._merger = InMemoryMerger(self.checkpoints, self.donor, self.plugins, self._torch_dtype())
        model = self._merger.apply(candidate.plan)
        model.eval()
        return self.checkpoints[self.donor].handle(model)

    def references(self) -> list[str]:
        return [*self.aliases, *([self.base.name] if self.base is not None else [])]

    def _alias_of(self, name: str) -> str:
        if self.base is not None and name == self.base.name:
            # the base model's alias inside the merge recipe ("base" unless a parent took it)
            for alias in self.checkpoints:
                if alias not in self.aliases:
                    return alias
        return name

    def materialize_reference(self, name: str) -> ModelHandle:
        """The reference model ``name``; a parent that lacks the donor's vision tower or
        projector (a text LM in an LLM-into-VLM merge) runs *grafted*: the donor with this
        parent's tensors, so it can be scored on the same (image) tasks as the children."""
        from evomm.layout import DONOR_ONLY_KINDS

        ck = self.checkpoints[self._alias_of(name)]
        donor = self.checkpoints[self.donor]
        if ck is not donor and any(i.kind in DONOR_ONLY_KINDS and n not in ck.layout for n, i in donor.layout.items()):
            weights = {n: ck.read(n) for n in ck.layout if n in donor.layout}
            model = donor.load_model(dtype=self._torch_dtype(), weights=weights)
            model.eval()
            return donor.handle(model)
        model = ck.load_model(dtype=self._torch_dtype())
        model.eval()
        return ck.handle(model)

    def export(self, candidate: Any, out_dir: Path) -> None:
        merge_to_dir(candidate.plan, self.checkpoints, out_dir, self.plugins, progress=False, overwrite=True)

    def lineage(self) -> list[dict[str, Any]]:
        return [dict(p) | {"model_dir": str(p["model_dir"])} for p in self.ctx.previous]

    def describe(self) -> str:
        return f"params: {self.template.method} over {', '.join(self.aliases)}, {self.dim} genes"

    def describe_genes(self) -> str:
        return self.genome.describe()

    def close(self) -> None:
        self._merger = None
        for ck in self.checkpoints.values():
            ck.close()


def build_parameter_space(stage: Stage, ctx: StageContext) -> ParameterSpace:
    """Space factory for stage kind ``params`` (:data:`evomm.space.PARAMS_KIND`)."""
    return ParameterSpace(ctx.recipe, stage, ctx)
