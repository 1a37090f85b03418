"""What a plugin hands :func:`~evomm.hookspecs.evomm_register_commands`: one ``evomm`` subcommand."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """A subcommand a plugin adds to ``evomm`` (``evomm NAME ...``).

    Attributes:
        name: the subcommand's name; a name evomm already has is an error.
        add_parser: called with the ``evomm`` subparsers when the command line is built; it adds
            the parser called ``name`` and sets its ``func`` (``parser.set_defaults(func=run)``),
            exactly as evomm's own subcommands (``evomm/cli/*.py``) do. ``func(args)`` returns
            the exit status; ``args.plugins_dir`` holds ``--plugins-dir``.

    Example:
        >>> def add_parser(sub):
        ...     p = sub.add_parser("hello", help="say hello")
        ...     p.set_defaults(func=lambda args: print("hello") or 0)
        >>> Command("hello", add_parser).name
        'hello'
    """

    name: str
    add_parser: Callable[[argparse._SubParsersAction], object]
