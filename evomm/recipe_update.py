"""``evomm evolve RECIPE --resume RUN --recipe-update``: continue a run with a changed budget.

A run's archive and checkpoints belong to one search: its parents, objectives, tasks, genome
(merge template, stage kinds), algorithm and seed. Resuming with another of those would mix
candidates of two searches in one archive (and a pickled algorithm would silently ignore a new
``algorithm:``), so only these keys may change:

* ``budget`` of any stage (generations, evaluations, wall_time: more to go on, less to stop
  at the next check),
* ``name`` (the run's display name).

Everything else must be equal, after relative paths are made absolute from the recipe's
directory. :func:`recipe_changes` lists the changes or raises a ConfigError naming every key that
may not change.

Example:
    >>> recipe_changes(stored, new)      # doctest: +SKIP
    ['stages[ps].budget.generations: 10 -> 20']
"""

from __future__ import annotations

import re
from typing import Any

from evomm.errors import ConfigError
from evomm.evolve_recipe import EvolveRecipe

_SHORTHAND = {"merge", "algorithm", "budget"}  # folded into stages by the validator
_BUDGET_KEY = re.compile(r"stages\[[^\]]*\]\.budget\.\w+")


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, list) and value and all(isinstance(v, dict) and "name" in v for v in value) \
            and len({v["name"] for v in value}) == len(value):
        for v in value:  # stages, parents, objectives: by name, so a reorder reads as a change
            _flatten(v, f"{prefix}[{v['name']}]", out)
    else:
        out[prefix] = value
    return out


def _allowed(key: str) -> bool:
    return key == "name" or _BUDGET_KEY.fullmatch(key) is not None


def _flat(recipe: EvolveRecipe) -> dict[str, Any]:
    data = recipe.model_dump(mode="json", exclude=_SHORTHAND)
    # the order of parents and objectives matters (genome and objective order): keep it visible
    data["parent_order"] = [p["name"] for p in data["parents"]]
    data["objective_order"] = [o["name"] for o in data["objectives"]]
    data["stage_order"] = [s["name"] for s in data["stages"]]
    return _flatten(data, "", {})


def recipe_changes(stored: EvolveRecipe, new: EvolveRecipe, *, run: str = "the run") -> list[str]:
    """The changes from ``stored`` to ``new`` as ``key: old -> new`` lines.

    Raises:
        ConfigError: ``new`` changes a key other than a stage's budget or the name (every such
            key is listed with both values).
    """
    old_flat, new_flat = _flat(stored), _flat(new)
    changes, refused = [], []
    for key in sorted(set(old_flat) | set(new_flat)):
        a, b = old_flat.get(key, "(absent)"), new_flat.get(key, "(absent)")
        if a == b:
            continue
        line = f"{key}: {a!r} -> {b!r}"
        (changes if _allowed(key) else refused).append(line)
    if refused:
        raise ConfigError(
            f"--recipe-update: the recipe describes another search than {run}; only a stage's "
            f"budget and the name may change on resume, but these differ:\n  " + "\n  ".join(refused)
            + "\nstart a new run with `evomm evolve RECIPE --out NEW_DIR` for a different search"
        )
    return changes
