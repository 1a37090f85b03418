"""``evomm zoo build`` / ``evomm zoo info``: build the toy zoo and show what it holds."""

from __future__ import annotations

import argparse

from evomm_zoo.recipe import SCALES


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "zoo",
        help="build or describe the toy model zoo",
        description="The toy zoo: tiny bilingual models (base, ja, math, vlm, clip) and their tasks, "
        "built locally and deterministically. See docs/toy-zoo.md.",
    )
    zsub = p.add_subparsers(dest="zoo_command", metavar="ACTION")
    for name, help_ in (("build", "build the zoo (reused when complete)"), ("info", "show a built zoo")):
        q = zsub.add_parser(name, help=help_, description=help_)
        q.add_argument("--scale", choices=SCALES, default="demo", help="micro (tests) or demo (default)")
        q.add_argument("--out", default=None, metavar="DIR", help="zoo directory (default: the cache)")
        q.add_argument("--seed", type=int, default=0, help="seed of everything (default 0)")
        if name == "build":
            q.add_argument("--force", action="store_true", help="rebuild even when a complete zoo exists")
            q.add_argument("--text-only", action="store_true", help="build only the text half")
            q.set_defaults(func=run_build)
        else:
            q.set_defaults(func=run_info)
    p.set_defaults(func=lambda args: (p.print_help(), 1)[1])


def run_build(args: argparse.Namespace) -> int:
    import time

    import torch

    from evomm_zoo import build_zoo

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    parts = ("text",) if args.text_only else ("text", "vision")
    zoo = build_zoo(args.scale, out=args.out, seed=args.seed, force=args.force, parts=parts)
    print(f"zoo ready in {time.perf_counter() - t0:.1f} s: {zoo}")
    args.out = str(zoo)
    return run_info(args)


def _cell(s: dict | None, sizes: set) -> str:
    if not s:
        return "-"
    if "n" in s:
        sizes.add(s["n"])
    if "strict_count" in s:
        return f"{s['strict_count']}/{s['loose_count']}"
    if "count" in s:
        return f"{s['count']}/{s.get('shuffled_count', '-')}"
    value = next((v for v in s.values() if isinstance(v, float)), None)
    return f"{value:.3f}" if value is not None else "?"


def format_scores(info: dict) -> list[str]:
    """Lines of the scores table of a ``zoo.json``.

    Cells: ``strict/loose`` counts (text tasks), ``right/right with shuffled images`` counts (VQA),
    or the first fractional metric (classification accuracy).
    """
    scores = info.get("scores", {})
    tasks = sorted({t for s in scores.values() for t in s})
    width = max([10, *(len(m) + 2 for m in scores)])
    lines = [f"{'model':<{width}}" + "".join(f"{t:>12}" for t in tasks)]
    sizes = set()
    for model, per_task in scores.items():
        cells = []
        for t in tasks:
            cells.append(_cell(per_task.get(t), sizes))
        lines.append(f"{model:<{width}}" + "".join(f"{c:>12}" for c in cells))
    lines.append("items per task: " + ", ".join(map(str, sorted(sizes))))
    return lines


def run_info(args: argparse.Namespace) -> int:
    from pathlib import Path

    from evomm.errors import ConfigError
    from evomm_zoo import default_zoo_dir, read_zoo_json

    zoo = Path(args.out) if args.out else default_zoo_dir(args.scale, args.seed)
    info = read_zoo_json(zoo)
    if not info or not info.get("complete"):
        raise ConfigError(
            f"no complete toy zoo at {zoo}; build it with `evomm zoo build --scale {args.scale}`"
        )
    print(f"toy zoo at {zoo}")
    print(
        f"  scale {info['scale']}, seed {info['seed']}, recipe v{info['recipe_version']}, parts {info['parts']}"
    )
    print("  models: " + ", ".join(f"{m} ({v['path']})" for m, v in info.get("models", {}).items()))
    print("  tasks:  " + ", ".join(info.get("tasks", {})))
    print("  wall times (s): " + ", ".join(f"{k} {v}" for k, v in info.get("wall_s", {}).items()))
    if info.get("cpu_s"):
        print("  cpu times (s):  " + ", ".join(f"{k} {v}" for k, v in info["cpu_s"].items()))
    print(
        "\nscores on test (text: strict/loose counts; VQA: right/right with shuffled images; else accuracy)"
    )
    for line in format_scores(info):
        print("  " + line)
    table = info.get("vision_table")
    if table:
        from evomm_zoo.vision_search import format_table

        print(f"\nvision: the VLM x ja_vision merge evolved by CMA-ES ({table['evaluations']} candidates, run "
              f"{zoo / table['run']}), scored on the held-out {table['split']} split")
        for line in format_table(table):
            print(line)
    return 0
