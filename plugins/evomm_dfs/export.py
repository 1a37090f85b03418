"""Saving a DFS child as a checkpoint that loads with ``AutoModelForCausalLM``.

Two forms:
  * every scale is 1: a plain checkpoint of A's architecture whose layers are copies of the path's
    layers in path order (a frankenmerge; ``num_hidden_layers`` = path length). It loads with
    transformers alone.
  * otherwise: a :class:`~evomm_dfs.model.DFSForCausalLM` checkpoint (``model_type: evomm_dfs``)
    that stores each distinct layer once plus the path and scalings in ``config.json``. It loads
    with ``AutoModelForCausalLM.from_pretrained`` after ``evomm_dfs.register()``; no remote code.

The directory also gets the tokenizer (from A), ``dfs.yaml`` (the recipe ``evomm merge``
reproduces it from) and a ``README.md`` model card. Everything is written to a temporary sibling
directory and renamed at the end (:func:`evomm.outputs.staged_output`), so a crash never leaves
a half-written child, and a directory evomm did not write is never replaced.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from evomm.errors import CheckpointError
from evomm.layer_stack import renumber, stacked_config
from evomm.outputs import staged_output

from .model import DFSForCausalLM, check_parents
from .path import DFSPath, PathStep  # noqa: F401  (PathStep: doctest)

RECIPE_FILE = "dfs.yaml"
CARD_FILE = "README.md"


def frankenmerge_model(model_a: nn.Module, model_b: nn.Module, path: DFSPath) -> nn.Module:
    """A model of A's class whose layers are *copies* of the path's layers, in path order.

    Only valid when every scale is 1 (there is no place for a scaling in a plain architecture).

    Raises:
        CheckpointError: a scale differs from 1.
    """
    from transformers import AutoModelForCausalLM

    if not path.all_unit_scales():
        raise CheckpointError("dfs: a frankenmerge export needs every scale to be 1; export a DFS model instead")
    check_parents(model_a, model_b, path)
    parents = (model_a, model_b)
    config = copy.deepcopy(model_a.config)
    # the same rewrite as a mergekit `slices:` frankenmerge (evomm.layer_stack)
    for key, value in stacked_config(config.to_dict(), [s.layer for s in path.steps]).items():
        setattr(config, key, value)
    state: dict[str, torch.Tensor] = {}
    for name, tensor in model_a.state_dict().items():
        if not name.startswith("model.layers."):
            state[name] = tensor.detach().clone()
    for k, step in enumerate(path.steps):
        layer = parents[step.parent].model.layers[step.layer]
        for name, tensor in layer.state_dict().items():
            state[renumber(f"model.layers.{step.layer}.{name}", k)] = tensor.detach().clone()
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=next(model_a.parameters()).dtype)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [m for m in missing if not (config.tie_word_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        raise CheckpointError(f"dfs: frankenmerge weights do not fit A's class: missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}")
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    # non-persistent buffers (rotary inv_freq) are not in the state dict: take A's
    model.model.rotary_emb = copy.deepcopy(model_a.model.rotary_emb)
    return model.eval()


def dfs_recipe(path: DFSPath, models: Sequence[Mapping[str, Any]], **extra: Any) -> dict[str, Any]:
    """The DFS recipe for ``path`` (what ``evomm merge`` reads back; see :mod:`evomm_dfs.recipe`).

    Args:
        path: the layer path.
        models: two mappings ``{model, name[, adapter]}`` for A and B (names must match ``path``).
        extra: more top-level keys (``dtype``, ``lineage``...).

    Example:
        >>> p = DFSPath((PathStep(0, 0), PathStep(0, 1)), ("a", "b"))
        >>> dfs_recipe(p, [{"model": "A", "name": "a"}, {"model": "B", "name": "b"}])["path"][1]
        {'model': 'a', 'layer': 1, 'scale': 1.0}
    """
    recipe: dict[str, Any] = {"merge_method": "dfs", "models": [dict(m) for m in models]}
    recipe["path"] = path.to_dict()["path"]
    recipe.update(extra)
    return recipe


def card_section(path: DFSPath, recipe: Mapping[str, Any]) -> str:
    """The DFS part of a model card (Markdown): the path and how to load the checkpoint."""
    names = ", ".join(f"`{p.get('name')}` ({p.get('model')})" for p in recipe.get("models", []))
    lines = ["## Data-flow-space path", "",
             "The parents' weights are unchanged; the child runs a path of their layers, each layer's "
             "input multiplied by an evolved scale (Sakana AI's DFS merge, arXiv 2403.13187).", "",
             f"Parents (A supplies tokenizer, embeddings, final norm and head): {names}.", "",
             f"Path ({len(path)} layers, {len(path.unique_layers())} distinct; `a`/`b` = A/B, `*s` = "
             f"input scale): `{path.describe()}`", "", "## How to load", ""]
    if path.all_unit_scales():
        lines += ["Every scale is 1, so this is a plain checkpoint of A's architecture (a frankenmerge, "
                  "layers copied in path order); it loads with transformers alone:", "", "```python",
                  "from transformers import AutoModelForCausalLM, AutoTokenizer",
                  "model = AutoModelForCausalLM.from_pretrained('<this directory>')",
                  "tokenizer = AutoTokenizer.from_pretrained('<this directory>')", "```", ""]
    else:
        lines += ["This checkpoint uses evomm's `DFSForCausalLM` (`model_type: evomm_dfs`): it stores each "
                  "distinct layer once and runs them in the path order given in `config.json`. "
                  "`evomm_dfs.register()` (installed with evomm) registers it with transformers' Auto classes; no "
                  "`trust_remote_code` and no code from the hub is needed:", "", "```python",
                  "import evomm_dfs",
                  "evomm_dfs.register()  # model_type 'evomm_dfs' for the Auto classes",
                  "from transformers import AutoModelForCausalLM, AutoTokenizer",
                  "model = AutoModelForCausalLM.from_pretrained('<this directory>')",
                  "tokenizer = AutoTokenizer.from_pretrained('<this directory>')", "```", ""]
    return "\n".join(lines)


def card_text(path: DFSPath, recipe: Mapping[str, Any], *, title: str = "evomm DFS child",
              lineage: Sequence[Mapping[str, Any]] = ()) -> str:
    """A model card (Markdown) for a DFS child built outside a run (``evomm merge``)."""
    lines = [f"# {title}", "", card_section(path, recipe),
             f"Reproduce it with `evomm merge {RECIPE_FILE} --out <dir>` (the recipe next to this card).", ""]
    if lineage:
        lines += ["## Lineage", ""]
        for k, st in enumerate(lineage, 1):
            lines.append(f"{k}. stage `{st.get('stage') or st.get('name')}` ({st.get('kind')}): candidate "
                         f"`{st.get('candidate')}`" + (f", model `{st['model_dir']}`" if st.get("model_dir") else ""))
        lines.append("")
    lines += ["## Recipe", "", "```yaml", yaml.safe_dump(dict(recipe), sort_keys=False).rstrip(), "```", ""]
    return "\n".join(lines)


def export_dfs(
    model_a: nn.Module,
    model_b: nn.Module,
    path: DFSPath,
    out_dir: str | Path,
    *,
    recipe: Mapping[str, Any],
    save_tokenizer: Callable[[Path], None] | None = None,
    card: str | None = None,
    force_dfs_class: bool = False,
    overwrite: bool = False,
    reads: Sequence[Path] = (),
) -> Path:
    """Write a DFS child to ``out_dir`` (atomically).

    Args:
        model_a, model_b: the parents (in memory).
        path: the layer path.
        out_dir: target directory: new or empty, or (``overwrite``) an earlier evomm output.
        recipe: the DFS recipe written as ``dfs.yaml`` (see :func:`dfs_recipe`).
        save_tokenizer: writes A's tokenizer files into a directory (e.g. ``tok.save_pretrained``).
        card: the model card; default: :func:`card_text`.
        force_dfs_class: save as ``DFSForCausalLM`` even when every scale is 1.
        overwrite: replace an earlier evomm output at ``out_dir`` once the child is complete.
        reads: the parents' directories (``out_dir`` may not hold them).

    Returns:
        ``out_dir``.

    Raises:
        OutputError: ``out_dir`` may not be written (see :mod:`evomm.outputs`), or the disk filled.

    Example:
        >>> export_dfs(a, b, path, "out/child", recipe=dfs_recipe(path, parents))  # doctest: +SKIP
    """
    out = Path(out_dir)
    with staged_output(out, overwrite=overwrite, reads=reads, command="merge") as tmp:
        if path.all_unit_scales() and not force_dfs_class:
            model = frankenmerge_model(model_a, model_b, path)
        else:
            model = DFSForCausalLM.from_parents(model_a, model_b, path)
        if save_tokenizer is not None:
            save_tokenizer(tmp)
        model.save_pretrained(tmp)
        (tmp / RECIPE_FILE).write_text(yaml.safe_dump(dict(recipe), sort_keys=False), encoding="utf-8")
        (tmp / CARD_FILE).write_text(card if card is not None else card_text(path, recipe), encoding="utf-8")
    return out
