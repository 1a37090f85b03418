"""Recipes that name the toy zoo by the relative path ``zoo/`` (configs/*.yaml), pointed elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: The directory name configs/*.yaml use for the zoo (``evomm zoo build --scale demo --out zoo``).
ZOO_PREFIX = "zoo"


def rebase_zoo_paths(data: Any, zoo: str | Path) -> Any:
    """A copy of a recipe (dicts, lists, strings) with every path ``zoo`` or ``zoo/...`` moved to
    the zoo at ``zoo``.

    Example:
        >>> rebase_zoo_paths({"path": "zoo/models/ja", "data": "zoo", "x": "zoology"}, "/z")
        {'path': '/z/models/ja', 'data': '/z', 'x': 'zoology'}
    """
    if isinstance(data, dict):
        return {k: rebase_zoo_paths(v, zoo) for k, v in data.items()}
    if isinstance(data, list):
        return [rebase_zoo_paths(v, zoo) for v in data]
    if isinstance(data, str) and (data == ZOO_PREFIX or data.startswith(ZOO_PREFIX + "/")):
        return str(Path(zoo)) + data[len(ZOO_PREFIX):]
    return data
