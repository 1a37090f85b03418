"""``evomm new-task NAME``: scaffold a task plugin package (pyproject with the entry point, the
task module, a data file and a test).

Example::

    evomm new-task my_qa --out .
    cd evomm-task-my-qa && pip install -e . && evomm tasks my_qa && python -m pytest -q tests
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import tempfile
from pathlib import Path
from string import Template

from evomm.errors import ConfigError
from evomm.outputs import check_output_target

TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "new_task"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "new-task",
        help="scaffold a task plugin package",
        description="Create DIR/evomm-task-NAME/: pyproject.toml declaring the `evomm` entry point, "
        "the package evomm_task_NAME with the task class, a small JSONL data file and a pytest test.",
    )
    p.add_argument("name", help="task name used in recipes (lowercase letters, digits, _)")
    p.add_argument("--out", default=".", metavar="DIR", help="parent directory (default: .)")
    p.set_defaults(func=run)


def scaffold(name: str, out: str | Path = ".") -> Path:
    """Write the package for task ``name`` under ``out``; returns its directory.

    Args:
        name: the task's registry name (``my_qa``).
        out: the parent directory.

    Returns:
        ``out/evomm-task-<name with dashes>``.

    Raises:
        ConfigError: a malformed name, or the target exists.
        OutputError: ``out`` is a file, lies under one, or cannot be written.

    Example:
        >>> scaffold("my_qa", tmp_path)   # doctest: +SKIP
        PosixPath('.../evomm-task-my-qa')
    """
    if not _NAME.match(name):
        raise ConfigError(
            f"task name {name!r} is not valid; use lowercase letters, digits and '_', starting with a letter"
        )
    values = {
        "task": name,
        "package": f"evomm_task_{name}",
        "dist": f"evomm-task-{name.replace('_', '-')}",
        "cls": "".join(p.capitalize() for p in name.split("_")) + "Task",
    }
    target = Path(out) / values["dist"]
    if target.exists():
        raise ConfigError(f"{target} already exists; choose another --out or remove it")
    check_output_target(target)  # --out under a file, or on a read-only disk
    files = {
        "pyproject.toml": "pyproject.toml.tmpl",
        "README.md": "README.md.tmpl",
        f"{values['package']}/__init__.py": "__init__.py.tmpl",
        f"{values['package']}/task.py": "task.py.tmpl",
        f"{values['package']}/{name}.jsonl": "data.jsonl.tmpl",
        f"tests/test_{name}.py": "test_task.py.tmpl",
    }
    Path(out).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".new-task-", dir=out))  # nothing half-written on a crash
    try:
        for rel, tmpl in files.items():
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(Template((TEMPLATES / tmpl).read_text(encoding="utf-8")).substitute(values), encoding="utf-8")
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target


def run(args: argparse.Namespace) -> int:
    target = scaffold(args.name, args.out)
    print(f"created {target}")
    print(f"  next: cd {target} && pip install -e . && evomm tasks {args.name} && python -m pytest -q tests")
    return 0
