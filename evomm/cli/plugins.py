"""``evomm plugins``: what is loaded — plugins, adapters, operators (with parameters), search-space
kinds, tasks and the plugins' commands."""

from __future__ import annotations

import argparse
from typing import Any

from evomm.plugins import get_plugins


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plugins",
        help="list plugins, model adapters, merge operators, search-space kinds, tasks and commands",
        description="List loaded plugins and everything they registered. Operators are shown with "
        "their declared parameters (scope, range, default), which is what recipes and the genome use.",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    plugins = get_plugins(args.plugins_dir)
    print("plugins:")
    for info in plugins.loaded:
        print(f"  {info.name:<22} {info.origin}")
    print("\nmodel adapters:")
    for name, cls in plugins.adapters.items():
        print(f"  {name:<22} {cls.description}  [{plugins.adapters.owner(name)}]")
    print("\nmerge operators:")
    for name, cls in plugins.operators.items():
        base = " (needs base_model)" if cls.requires_base else ""
        print(f"  {name:<22} {cls.description}{base}  [{plugins.operators.owner(name)}]")
        _print_params(cls.params)
    print("\nsearch-space kinds (stage `kind:`):")
    for name, kind in plugins.spaces.items():
        print(f"  {name:<22} {kind.description}  [{plugins.spaces.owner(name)}]")
        _print_params(kind.params)
    print("\ntasks:")
    for name, cls in plugins.tasks.items():
        print(f"  {name:<22} {cls.description}  [{plugins.tasks.owner(name)}]")
    print("\ncommands (evomm COMMAND):")
    for name, _ in plugins.commands.items():
        print(f"  {name:<22} [{plugins.commands.owner(name)}]")
    return 0


def _print_params(params: Any) -> None:
    for spec in params:
        default = "required" if spec.default is None else f"default {spec.default:g}"
        print(f"      {spec.name:<14} {spec.scope.value:<9} [{spec.low:g}, {spec.high:g}] {default}")
