"""``evomm tasks``: the registered fitness tasks, their metrics and data sources."""

from __future__ import annotations

import argparse
import json

from evomm.data import describe_source
from evomm.plugins import get_plugins
from evomm.tasks import Task


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tasks",
        help="list fitness tasks, their metrics and data sources",
        description="List the registered fitness tasks: modality, the capabilities they need from a "
        "model, their metrics (+ higher is better, - lower is better; the first is the default "
        "objective) and where their data comes from (override with `data:` in a recipe).",
    )
    p.add_argument("names", nargs="*", help="only these tasks")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def task_info(name: str, cls: type[Task], owner: str) -> dict[str, object]:
    """What ``evomm tasks`` shows about one task class (the attributes :class:`Task` declares)."""
    data = describe_source(cls.default_data, cls.default_config)
    return {
        "name": name,
        "description": cls.description,
        "modality": cls.modality,
        "requires": sorted(cls.requires),
        "metrics": [
            {"name": m.name, "higher_is_better": m.higher_is_better, "description": m.description}
            for m in cls.metrics
        ],
        "data": f"{data} [{cls.default_split}]",
        "plugin": owner,
    }


def run(args: argparse.Namespace) -> int:
    registry = get_plugins(args.plugins_dir).tasks
    names = args.names or registry.names()
    infos = [task_info(n, registry.get(n), registry.owner(n)) for n in names]
    if args.json:
        print(json.dumps(infos, ensure_ascii=False, indent=2))
        return 0
    for info in infos:
        metrics = ", ".join(f"{m['name']}{'+' if m['higher_is_better'] else '-'}" for m in info["metrics"])
        print(f"{info['name']}  [{info['plugin']}]")
        print(f"    {info['description']}")
        print(f"    modality: {info['modality']}   needs: {', '.join(info['requires']) or '-'}")
        print(f"    metrics:  {metrics or '-'}")
        print(f"    data:     {info['data']}")
    return 0
