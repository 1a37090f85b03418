"""CLIP task arithmetic with evolved per-task coefficients (the FusionBench setting, in miniature).

A base CLIP and two fine-tunes of its image tower (shape classification, colour classification)
are merged as ``base + l_shape * (shape - base) + l_colour * (colour - base)`` with evomm's
``task_arithmetic`` operator through the ``open-clip`` adapter. pymoo's NSGA-II evolves the two
coefficients (optionally one pair per resblock, ``--per-layer``) against two objectives, the
zero-shot accuracy on each task (on a dev split), and prints the Pareto front with test scores.
Each candidate is merged in place into one preallocated model (:class:`evomm.execute.InMemoryMerger`),
never written to disk; the best-balanced one is saved in open_clip's local format.

Models: the toy zoo's ``clip_base`` / ``clip_shape`` / ``clip_color`` when ``--zoo DIR`` is given
(``evomm zoo build``), otherwise tiny ones trained here in about half a minute on one CPU core.

Run::

    python examples/clip_task_arithmetic/evolve_coefficients.py --out runs/clip-ta
    python examples/clip_task_arithmetic/evolve_coefficients.py --zoo zoo --per-layer
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from evomm_zoo import clip as zclip
from evomm_zoo.images import draw

from evomm.execute import InMemoryMerger, open_models
from evomm.plan import build_plan
from evomm.plugins import get_plugins
from evomm.recipe import MergeRecipe

TASKS = {"shape": "shape_cls", "colour": "color_cls"}


def train_tiny_clips(out: Path, seed: int = 0) -> dict[str, Path]:
    """A tiny base CLIP (contrastive pretraining on drawn shapes) and two image-tower fine-tunes."""
    model, tok = zclip.init_clip(seed)
    zclip.pretrain_clip(model, tok, steps=150, seed=seed)
    paths = {"base": out / "clip_base"}
    zclip.save_clip(model, paths["base"])
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    for alias, task in TASKS.items():
        model.load_state_dict(base_state)
        zclip.finetune_clip(model, tok, task, steps=80, seed=seed)
        paths[alias] = out / f"clip_{alias}"
        zclip.save_clip(model, paths[alias])
    return paths


def recipe(paths: dict[str, Path], coef: dict[str, float | list[float]]) -> MergeRecipe:
    """A task-arithmetic recipe; a list coefficient is a per-resblock gradient (mergekit style)."""
    return MergeRecipe.from_dict(
        {
            "merge_method": "task_arithmetic",
            "base_model": str(paths["base"]),
            "models": [{"model": str(paths[a]), "name": a, "parameters": {"weight": coef[a]}} for a in TASKS],
        }
    )


def evaluation_sets(n: int, split: str, seed: int) -> dict[str, tuple[list, list[int], list[list[str]]]]:
    """Per task: images, labels and class prompts (the zoo's templates)."""
    out = {}
    for alias, task in TASKS.items():
        rows = zclip.cls_rows(task, split, n, seed)
        out[alias] = ([draw(r["spec"]) for r in rows], [r["label"] for r in rows], zclip.class_prompts(task))
    return out


def accuracies(handle, sets) -> dict[str, float]:
    """Zero-shot accuracy of the handle's model on each task."""
    return {
        a: float(np.mean([p == y for p, y in zip(handle.classify(imgs, prompts), labels)]))
        for a, (imgs, labels, prompts) in sets.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zoo", type=Path, help="a built toy zoo (uses its models/clip_*)")
    ap.add_argument("--out", type=Path, default=Path("runs/clip-task-arithmetic"))
    ap.add_argument("--per-layer", action="store_true", help="one coefficient per task and resblock")
    ap.add_argument("--generations", type=int, default=6)
    ap.add_argument("--pop-size", type=int, default=10)
    ap.add_argument("--n-dev", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()

    if args.zoo:
        m = args.zoo.expanduser() / "models"
        paths = {"base": m / "clip_base", "shape": m / "clip_shape", "colour": m / "clip_color"}
    else:
        paths = train_tiny_clips(args.out / "models", args.seed)
    plugins = get_plugins()
    checkpoints = open_models(recipe(paths, {a: 1.0 for a in TASKS}), plugins)
    merger = InMemoryMerger(checkpoints, donor="base", plugins=plugins)
    handle = checkpoints["base"].handle(merger.model)
    dev, test = evaluation_sets(args.n_dev, "dev", args.seed), evaluation_sets(200, "test", args.seed)
    n_layers = checkpoints["base"].num_layers
    k = n_layers if args.per_layer else 1

    def decode(x: np.ndarray) -> dict[str, float | list[float]]:
        parts = np.split(np.asarray(x, dtype=float), len(TASKS))
        return {a: (p.tolist() if args.per_layer else float(p[0])) for a, p in zip(TASKS, parts)}

    def score(x: np.ndarray, sets) -> dict[str, float]:
        rec = recipe(paths, decode(x))
        merger.apply(build_plan(rec, checkpoints, plugins))
        return accuracies(handle, sets)

    for alias in ("base", *TASKS):  # the parents, for reference
        parent = {a: (1.0 if a == alias else 0.0) for a in TASKS}
        x = np.array([parent[a] for a in TASKS for _ in range(k)])
        print(f"parent {alias:7s} test accuracy: {score(x, test)}")

    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.problem import Problem

    problem = Problem(n_var=len(TASKS) * k, n_obj=len(TASKS), xl=-0.5, xu=1.5)
    algo = NSGA2(pop_size=args.pop_size)
    algo.setup(problem, seed=args.seed)
    archive = []
    for gen in range(args.generations):  # pymoo's ask/tell loop: pymoo minimises, so negate
        pop = algo.ask()
        F = []
        for x in pop.get("X"):
            acc = score(x, dev)
            archive.append({"x": decode(x), "dev": acc})
            F.append([-acc[a] for a in TASKS])
        pop.set("F", np.array(F))
        algo.tell(infills=pop)
        best = max(archive, key=lambda r: min(r["dev"].values()))
        print(f"generation {gen + 1}: best balanced dev accuracy {best['dev']}")

    front = algo.opt
    print(f"\nPareto front ({len(front)} candidates), test accuracy:")
    results = []
    for x in front.get("X"):
        acc = score(x, test)
        results.append({"coefficients": decode(x), "test": acc})
        print(f"  {json.dumps(decode(x))} -> {acc}")
    pick = max(results, key=lambda r: min(r["test"].values()))
    rec = recipe(paths, pick["coefficients"])
    out_dir = args.out / "merged"
    from evomm.execute import merge_to_dir

    merge_to_dir(build_plan(rec, checkpoints, plugins), checkpoints, out_dir, plugins, overwrite=True)
    (args.out / "front.json").write_text(json.dumps(results, indent=1))
    print(f"\nsaved the most balanced child to {out_dir} (open_clip local-dir format); "
          f"front in {args.out / 'front.json'}; {time.perf_counter() - t0:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
