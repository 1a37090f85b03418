"""The ``evomm`` command line. Each subcommand lives in its own module in this package and
exposes ``add_parser(subparsers)``, which registers the subcommand and sets ``func``. Plugins add
subcommands the same way through :func:`~evomm.hookspecs.evomm_register_commands` (the toy zoo's
``demo`` and ``zoo`` come from the ``evomm_zoo`` plugin).

Errors that users cause (:class:`~evomm.errors.EvommError`) are printed as one clear message
(exit status 2), without a traceback; ``EVOMM_DEBUG=1`` shows the traceback too.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
from collections.abc import Sequence

from evomm import __version__
from evomm.errors import EvommError, PluginError
from evomm.plugins import get_plugins

#: Subcommand modules, in ``--help`` order (the plugins' commands follow).
COMMANDS = (
    "merge",
    "plan",
    "evolve",
    "front",
    "export",
    "serve",
    "rescore",
    "plugins",
    "tasks",
    "new_task",
)


def build_parser(plugins_dirs: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The ``evomm`` parser: evomm's subcommands, then those the plugins register (loaded with
    ``plugins_dirs`` as ``--plugins-dir``).

    Raises:
        PluginError: a plugin fails to load, or its command clashes with one evomm has or adds
            no parser of its name.
    """
    parser = argparse.ArgumentParser(
        prog="evomm",
        description="Evolutionary model merging: breed new models out of existing ones.",
    )
    parser.add_argument("--version", action="version", version=f"evomm {__version__}")
    parser.add_argument(
        "--plugins-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="load one-file plugins (*.py) from DIR as well (repeatable)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"evomm.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"evomm.cli.{name}":
                continue  # not built yet
            raise
        module.add_parser(sub)
    plugins = get_plugins(plugins_dirs)
    for name, command in plugins.commands.items():
        owner = plugins.commands.owner(name)
        if name in sub.choices:
            raise PluginError(f"plugin {owner!r} registers the command {name!r}, which evomm already has; "
                              f"rename it, or disable the plugin with EVOMM_DISABLE_PLUGINS={owner}")
        command.add_parser(sub)
        if name not in sub.choices:
            raise PluginError(f"plugin {owner!r} registers the command {name!r}, but its add_parser "
                              f"added no parser of that name (call subparsers.add_parser({name!r}, ...))")
    return parser


def _plugins_dirs(argv: Sequence[str] | None) -> list[str]:
    """The ``--plugins-dir`` values of ``argv``: the plugins are loaded before the whole parse."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--plugins-dir", action="append", default=[])
    return pre.parse_known_args(argv)[0].plugins_dir


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser(_plugins_dirs(argv))
    except EvommError as exc:
        print(f"evomm: error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    # Everything imported so far lives until exit: keep the cyclic garbage collector from
    # walking those objects again and again while a long command allocates.
    gc.freeze()
    try:
        result = args.func(args)
    except EvommError as exc:
        if os.environ.get("EVOMM_DEBUG"):
            raise
        print(f"evomm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("evomm: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


def entry() -> None:
    """The ``evomm`` console script: :func:`main`, then exit with its status."""
    sys.exit(main())
