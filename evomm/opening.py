"""Opening the models of a recipe: each with its adapter (named, or detected from the
directory), lazily, checked against the donor (:func:`open_models`; re-exported by
:mod:`evomm.execute`).

Example:
    >>> cks = open_models(recipe, get_plugins())                       # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from evomm.adapters import Checkpoint, ModelAdapter, ModelRef
from evomm.errors import CheckpointError
from evomm.hub import resolve_model_dir
from evomm.plan import parents_checked_when_opened

if TYPE_CHECKING:
    from evomm.plugins import Plugins
    from evomm.recipe import MergeRecipe



def _adapter_for(ref: ModelRef, plugins: Plugins) -> ModelAdapter:
    if ref.adapter:
        return plugins.adapters.get(ref.adapter)()
    directory = resolve_model_dir(ref)
    cfg_path = directory / "config.json"
    try:
        config = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    except ValueError as exc:
        raise CheckpointError(f"model {ref.name!r}: {cfg_path} is not valid JSON: {exc}") from exc
    for _name, cls in plugins.adapters.items():
        if cls.detect(directory, config):
            return cls()
    raise CheckpointError(
        f"model {ref.name!r} ({ref.path}): no model adapter recognises it (architectures "
        f"{config.get('architectures')}); name one with `adapter:` — available: "
        f"{', '.join(plugins.adapters.names()) or '(none)'}"
    )


def _check_compatible(donor: Checkpoint, other: Checkpoint, vocab_mode: str) -> None:
    """``donor.check_compatible(other)``, passing ``vocab_mode`` when it is not ``strict`` (an
    adapter whose ``check_compatible`` takes no ``vocab_mode`` keyword is checked strictly)."""
    if vocab_mode != "strict" and "vocab_mode" in inspect.signature(donor.check_compatible).parameters:
        donor.check_compatible(other, vocab_mode=vocab_mode)  # type: ignore[call-arg]
    else:
        donor.check_compatible(other)


def open_models(
    recipe_or_refs: MergeRecipe | Sequence[ModelRef], plugins: Plugins, *, check: bool = True
) -> dict[str, Checkpoint]:
    """Open every model of a recipe (or a list of refs) lazily and check they can be merged.

    Args:
        recipe_or_refs: a :class:`~evomm.recipe.MergeRecipe` (its models and base model) or
            :class:`ModelRef` s.
        plugins: registries (adapters).
        check: run ``donor.check_compatible(other)`` for every other model (the donor is the
            recipe's ``tokenizer_source``, or the first ref), with the recipe's ``vocab.mode``
            as ``vocab_mode=`` when it is not ``strict`` and the adapter accepts it.

    Returns:
        alias -> :class:`Checkpoint`, in recipe order.

    Raises:
        CheckpointError, OfflineError: a model cannot be found or opened.
        IncompatibleModelsError: two models cannot be merged.
    """
    from evomm.recipe import MergeRecipe

    vocab_mode = "strict"
    if isinstance(recipe_or_refs, MergeRecipe):
        refs, donor = recipe_or_refs.all_refs(), recipe_or_refs.donor()
        vocab_mode = recipe_or_refs.vocab.mode
        check = check and parents_checked_when_opened(recipe_or_refs)  # slices, tokenizer sources (issue 20)
    else:
        refs = list(recipe_or_refs)
        donor = refs[0].name if refs else ""
    out: dict[str, Checkpoint] = {}
    try:
        for ref in refs:
            out[ref.name] = _adapter_for(ref, plugins).open(ref)
        if check and donor in out:
            for alias, ck in out.items():
                if alias != donor:
                    _check_compatible(out[donor], ck, vocab_mode)
    except BaseException:
        for ck in out.values():
            ck.close()
        raise
    return out
