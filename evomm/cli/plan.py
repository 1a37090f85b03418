"""``evomm plan RECIPE``: print the merge plan of a recipe without reading any tensor."""

from __future__ import annotations

import argparse
from itertools import groupby

from evomm.plan import MergePlan, Params, TensorStep


def _fmt(params: Params) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in params)


def _summary(step: TensorStep, plan: MergePlan) -> str:
    if step.action == "copy":
        return f"copy from {step.source}"
    parts = [_fmt(step.global_params)] if step.global_params else []
    for ref, mp in zip(plan.models, step.model_params):
        if mp:
            parts.append(f"{ref.name}: {_fmt(mp)}")
    if step.pad:  # recipe `vocab: {mode: pad_from_donor}`
        rows = ", ".join(f"{alias}: {n} rows" for alias, n in step.pad)
        parts.append(f"vocab padded from {plan.donor} ({rows})")
    return "; ".join(parts) or "(no parameters)"


def format_plan(plan: MergePlan) -> str:
    """A human-readable plan: models, operator, and the parameters of each group of tensors
    (grouped by layer, then by identical parameters)."""
    lines = [
        f"operator : {plan.operator}",
        "models   : " + ", ".join(f"{r.name} ({r.path})" for r in plan.models),
        f"base     : {plan.base.name + ' (' + plan.base.path + ')' if plan.base else '-'}",
        f"donor    : {plan.donor} (config, tokenizer)",
        f"dtype    : compute {plan.dtype}, output {plan.out_dtype or 'as the donor stores it'}",
        f"seed     : {plan.seed}",
        f"tensors  : {len(plan.steps)} ({sum(s.action == 'copy' for s in plan.steps)} copied)",
        f"digest   : {plan.digest()[:16]}",
        "",
    ]
    for layer, group in groupby(plan.steps, key=lambda s: s.layer):
        steps = list(group)
        head = "outside blocks" if layer is None else f"layer {layer}"
        lines.append(f"{head} ({len(steps)} tensors)")
        for summary, same in groupby(steps, key=lambda s: _summary(s, plan)):
            same = list(same)
            kinds = sorted({s.kind.value for s in same})
            lines.append(f"  {len(same):>3} x {'/'.join(kinds):<18} {summary}")
    return "\n".join(lines)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="print the merge plan of a recipe (reads only checkpoint headers)",
        description="Validate RECIPE, open its models lazily and print the resolved merge plan: the "
        "models, the operator and every parameter per tensor, grouped by layer. No tensor is read.",
    )
    p.add_argument("recipe", metavar="RECIPE.yaml", help="the merge recipe (see docs/merging.md)")
    p.add_argument("--allow-pickle", action="store_true", help="accept pickle weights (unsafe)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from evomm.execute import open_models
    from evomm.plan import build_plan
    from evomm.plugins import get_plugins
    from evomm.recipe import load_recipe

    plugins = get_plugins(args.plugins_dir)
    recipe = load_recipe(args.recipe, plugins)
    if args.allow_pickle:
        recipe = recipe.with_overrides(allow_pickle=True)
    checkpoints = open_models(recipe, plugins)
    print(format_plan(build_plan(recipe, checkpoints, plugins)))
    return 0
