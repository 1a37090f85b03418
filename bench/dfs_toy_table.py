"""The paper's table in miniature: parents, PS, DFS and PS+DFS on the toy zoo (CPU).

Runs configs/toy-dfs.yaml and configs/toy-ps-dfs.yaml (zoo paths rewritten to ``--zoo``; budgets
from the configs unless overridden), takes the PS child (first stage of PS+DFS), the DFS child and
the PS+DFS child, and scores them and the parents on the *test* split of toy_ja_skill,
toy_math and toy_ja_math (strict metric). Prints a Markdown table and writes it with the raw
numbers to ``--out/table.json``.

Usage::

    .venv/bin/python bench/dfs_toy_table.py --zoo zoo --out /tmp/dfs-table
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml
from evomm_zoo import rebase_zoo_paths

TASKS = ("toy_ja_skill", "toy_math", "toy_ja_math")


def _recipe(config: Path, zoo: Path, generations: int | None, limit: int | None) -> dict:
    data = rebase_zoo_paths(yaml.safe_load(config.read_text()), zoo)
    for st in data["stages"]:
        if generations is not None:
            st["budget"] = {"generations": generations}
    if limit is not None:
        for opts in data["tasks"].values():
            opts["limit"] = limit
    return data


def _score(model_dir: Path, plugins, zoo: Path, limit: int) -> dict[str, float]:
    from evomm.adapters import ModelRef

    ckpt = plugins.adapters.get("hf-causal-lm")().open(ModelRef("m", str(model_dir)))
    handle = ckpt.handle(ckpt.load_model())
    out = {}
    for name in TASKS:
        task = plugins.tasks.get(name)(str(zoo), split="test", limit=limit)
        out[name] = task.evaluate(handle).metrics["strict"]
    ckpt.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--zoo", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--generations", type=int, default=None, help="override every stage's budget")
    ap.add_argument("--fitness-limit", type=int, default=None, help="override the dev-split limit")
    ap.add_argument("--test-limit", type=int, default=400)
    args = ap.parse_args()
    torch.set_num_threads(1)
    import evomm_dfs  # noqa: F401

    from evomm.evolve_recipe import parse_recipe
    from evomm.export import export_run_candidate
    from evomm.plugins import get_plugins
    from evomm.runner import evolve

    plugins = get_plugins()
    root = Path(__file__).resolve().parents[1]
    args.out.mkdir(parents=True, exist_ok=True)
    timing: dict[str, float] = {}
    children: dict[str, Path] = {}
    for tag, cfg in (("dfs", "toy-dfs.yaml"), ("ps_dfs", "toy-ps-dfs.yaml")):
        run = args.out / f"run-{tag}"
        start = time.perf_counter()
        if not (run / "run.json").is_file():
            evolve(parse_recipe(_recipe(root / "configs" / cfg, args.zoo, args.generations, args.fitness_limit)),
                   run, progress=False, report=False)
        timing[tag] = time.perf_counter() - start
        final = args.out / f"child-{tag}"
        if not final.exists():
            export_run_candidate(run, final, pick_how="knee", plugins=plugins)
        children[tag] = final
    children["ps"] = args.out / "run-ps_dfs" / "stages" / "ps" / "child"
    rows = {name: args.zoo / "models" / name for name in ("base", "ja", "math")}
    rows.update({"PS (task arithmetic, evolved)": children["ps"], "DFS (ja x math)": children["dfs"],
                 "PS+DFS (PS child x math)": children["ps_dfs"]})
    table = {label: _score(path, plugins, args.zoo, args.test_limit) for label, path in rows.items()}
    lines = ["| model | " + " | ".join(TASKS) + " |", "|---|" + "---|" * len(TASKS)]
    lines += [f"| {label} | " + " | ".join(f"{v[t]:.3f}" for t in TASKS) + " |" for label, v in table.items()]
    text = "\n".join(lines)
    print(text)
    for tag in ("dfs", "ps_dfs"):
        rec = yaml.safe_load((children[tag] / "merge.yaml").read_text())
        print(f"{tag} path: " + " ".join(f"{s['model']}{s['layer']}*{s['scale']:.2f}" for s in rec["path"]))
    (args.out / "table.json").write_text(json.dumps({"table": table, "seconds": timing,
                                                       "test_limit": args.test_limit}, indent=1))
    (args.out / "table.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
