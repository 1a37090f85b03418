"""The DFS recipe: a fixed layer path over two parents, and how ``evomm merge`` runs it.

Format (what an exported DFS child's ``dfs.yaml`` / ``merge.yaml`` holds; the ``models`` entries
are those of an ordinary merge recipe)::

    merge_method: dfs
    models:                        # A first: tokenizer, embeddings, final norm and head
      - {model: zoo/models/ja, name: ja}
      - {model: zoo/models/math, name: math, adapter: hf-causal-lm}
    path:                          # in order; `scale` multiplies the hidden state entering the step
      - {model: ja, layer: 0}
      - {model: math, layer: 1, scale: 0.93}
      - {model: ja, layer: 2}
    dtype: float32                 # optional (default float32)
    format: auto                   # optional: auto | frankenmerge | dfs

Other keys (``genes``, ``lineage``, ``name``, ``scores``) are provenance and are ignored when merging.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from evomm.adapters import Checkpoint, ModelRef
from evomm.errors import ConfigError
from evomm.recipe import ModelEntry

from .path import DFSPath

if TYPE_CHECKING:
    from evomm.plugins import Plugins

DEFAULT_ADAPTER = "hf-causal-lm"


class DFSRecipe(BaseModel):
    """A validated DFS recipe (see the module docstring)."""

    model_config = ConfigDict(extra="allow")
    merge_method: Literal["dfs"]
    models: list[ModelEntry] = Field(min_length=2, max_length=2)  # as in a merge recipe
    path: list[dict[str, Any]] = Field(min_length=1)
    dtype: str = "float32"
    format: Literal["auto", "frankenmerge", "dfs"] = "auto"

    def dfs_path(self) -> DFSPath:
        """The path as a :class:`DFSPath` (aliases checked)."""
        return DFSPath.from_dict({"parents": [p.name for p in self.models], "path": self.path}, "dfs recipe")

    def refs(self) -> list[ModelRef]:
        return [p.ref(p.name or "") for p in self.models]


def is_dfs_recipe(data: Any) -> bool:
    """Whether parsed YAML is a DFS recipe (``merge_method: dfs``)."""
    return isinstance(data, Mapping) and (data.get("merge_method") or data.get("operator")) == "dfs"


def parse_dfs_recipe(data: Any, source: str = "dfs recipe", recipe_dir: Path | None = None) -> DFSRecipe:
    """Validate a DFS recipe mapping; relative parent paths resolve from ``recipe_dir``.

    Raises:
        ConfigError: naming the key, the value and the fix.
    """
    if not is_dfs_recipe(data):
        raise ConfigError(f"{source}: a DFS recipe is a mapping with `merge_method: dfs`, got {str(data)[:80]!r}")
    if "operator" in data and "merge_method" not in data:
        data = {("merge_method" if k == "operator" else k): v for k, v in data.items()}
    try:
        recipe = DFSRecipe.model_validate(data)
    except ValidationError as exc:
        msgs = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r})" for e in exc.errors()]
        raise ConfigError(f"{source}: " + "; ".join(msgs)) from None
    for i, p in enumerate(recipe.models):
        if not p.name:
            raise ConfigError(f"{source}: models[{i}].name: a DFS parent needs a name, which path steps use "
                              f"(e.g. name: ja); got {p.model!r} without one")
        if p.parameters:
            raise ConfigError(f"{source}: models[{i}].parameters: a DFS parent takes no operator parameters "
                              "(a path step's scale is in `path:`); remove the key")
    if recipe.dtype not in ("float32", "float16", "bfloat16", "float64"):
        raise ConfigError(f"{source}: dtype={recipe.dtype!r}; use float32, float16, bfloat16 or float64")
    if recipe_dir is not None:
        for p in recipe.models:
            cand = recipe_dir / p.model
            if not Path(p.model).is_absolute() and not Path(p.model).exists() and cand.exists():
                p.model = str(cand.resolve())
    recipe.dfs_path()  # validate aliases and layer indices early
    return recipe


def load_dfs_recipe(path: str | Path) -> DFSRecipe:
    """Read a DFS recipe YAML file (e.g. an exported child's ``dfs.yaml``)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"DFS recipe {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    return parse_dfs_recipe(data, str(p), p.parent.resolve())


def open_checkpoint(ref: ModelRef, plugins: Plugins) -> Checkpoint:
    """Open ``ref`` with its named adapter (default ``hf-causal-lm``)."""
    adapter = plugins.adapters.get(ref.adapter or DEFAULT_ADAPTER)
    return adapter().open(ref)


def load_parents(
    refs: list[ModelRef], plugins: Plugins, dtype: str = "float32"
) -> tuple[list[Checkpoint], list[torch.nn.Module]]:
    """Open and load A and B (once) as runnable models in ``dtype``."""
    ckpts = [open_checkpoint(r, plugins) for r in refs]
    torch_dtype = getattr(torch, dtype)
    models = [c.load_model(dtype=torch_dtype) for c in ckpts]
    return ckpts, models


def merge_dfs_recipe(recipe: DFSRecipe, out_dir: str | Path, plugins: Plugins, *, overwrite: bool = False) -> Path:
    """Build and export the child a DFS recipe describes (what ``evomm merge`` calls).

    Args:
        recipe: a validated :class:`DFSRecipe`.
        out_dir: output directory: new or empty, or (``overwrite``) an earlier evomm output
            (see :mod:`evomm.outputs`); never one that holds a parent.
        plugins: loaded plugins (for the parents' adapters).
        overwrite: replace an earlier evomm output at ``out_dir`` once the child is complete.

    Returns:
        ``out_dir``.

    Example:
        >>> merge_dfs_recipe(load_dfs_recipe("child/dfs.yaml"), "child2", get_plugins())  # doctest: +SKIP
    """
    from evomm.outputs import check_output_target

    from .export import export_dfs

    reads = [Path(r.path) for r in recipe.refs() if Path(r.path).exists()]
    check_output_target(Path(out_dir), overwrite=overwrite, reads=reads)  # before loading the parents
    path = recipe.dfs_path()
    if recipe.format == "frankenmerge" and not path.all_unit_scales():
        raise ConfigError(
            "dfs recipe: format: frankenmerge needs every scale to be 1 (a plain architecture has no "
            "place for scalings); use format: auto or dfs"
        )
    ckpts, models = load_parents(recipe.refs(), plugins, recipe.dtype)
    tok = getattr(ckpts[0], "tokenizer", None)
    try:
        return export_dfs(
            models[0], models[1], path, out_dir,
            recipe=recipe.model_dump(exclude_none=True),
            save_tokenizer=(lambda d: tok().save_pretrained(d)) if tok is not None else None,
            force_dfs_class=recipe.format == "dfs",
            overwrite=overwrite,
            reads=reads,
        )
    finally:
        for c in ckpts:
            c.close()
