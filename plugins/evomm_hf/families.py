"""Architectures as data: each causal-LM family's weight layout, read from a YAML file.

``plugins/evomm_hf/layouts/<family>.yaml`` (Llama, Mistral, Qwen2, Qwen3, Gemma 2, Gemma 3 text,
Phi-3) says, for the ``config.json`` ``model_type`` values it lists, where a checkpoint's tensors
are and what they are, as open_clip's ``model_configs/*.json`` and mergekit's architecture files
do::

    family: gemma3
    model_types: [gemma3_text]
    layers: model.layers                 # block i's tensors are model.layers.{i}.<module>.weight|bias
    embedding: model.embed_tokens.weight
    head: lm_head.weight                 # absent when tie_word_embeddings (the head is the embedding)
    final_norm: model.norm.weight
    attention: [self_attn.q_proj, ...]   # modules of a block, per kind
    mlp: [mlp.gate_proj, ...]
    norms: [input_layernorm, ..., self_attn.q_norm]   # every per-layer norm, extra ones included
    norm_offset: 1.0                     # the norm scales by (norm_offset + w): Gemma's 1 + w

Every tensor of a checkpoint must be one of these: a tensor the file does not describe is an
error naming the file, so a layout is checked against each checkpoint it reads (and each file
against a tiny model built from transformers' own config class in tests/test_layouts.py).
``norm_offset`` is recorded for tools that need the applied scale; evomm's operators are not
affected by it (they combine weights with weights summing to one, or deltas from a base, where
the offset cancels).

A family evomm does not ship: write a file like ``layouts/llama.yaml`` into a directory and name
that directory in ``$EVOMM_LAYOUTS`` (several: separated by ``os.pathsep``).

Example:
    >>> layout_for({"model_type": "qwen3"}).classify("model.layers.3.self_attn.q_norm.weight")
    (<ModuleKind.NORM: 'norm'>, 3)
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from evomm.errors import CheckpointError, ConfigError
from evomm.layout import ModuleKind

#: The layout files shipped with evomm.
LAYOUT_DIR = Path(__file__).parent / "layouts"
#: Environment variable naming extra directories of layout files.
LAYOUTS_ENV = "EVOMM_LAYOUTS"
_SUFFIXES = ("weight", "bias")


class FamilyLayout(BaseModel):
    """One family's layout file (see the module docstring); :meth:`classify` reads names with it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: str
    model_types: list[str]
    layers: str
    embedding: str
    head: str
    final_norm: str
    attention: list[str]
    mlp: list[str]
    norms: list[str]
    norm_offset: float = 0.0
    source: str = ""  # the file it was read from (set by the loader)

    @functools.cached_property
    def _block(self) -> re.Pattern[str]:
        modules = "|".join(sorted(map(re.escape, self._module_kinds), key=len, reverse=True))
        return re.compile(rf"^{re.escape(self.layers)}\.(\d+)\.({modules})\.(?:{'|'.join(_SUFFIXES)})$")

    @functools.cached_property
    def _module_kinds(self) -> dict[str, ModuleKind]:
        out = {m: ModuleKind.ATTENTION for m in self.attention}
        out.update({m: ModuleKind.MLP for m in self.mlp})
        out.update({m: ModuleKind.NORM for m in self.norms})
        return out

    def classify(self, name: str) -> tuple[ModuleKind, int | None] | None:
        """Kind and layer index of the stored tensor ``name``; ``None`` if the file does not describe it."""
        if name == self.embedding:
            return ModuleKind.EMBEDDING, None
        if name == self.head:
            return ModuleKind.HEAD, None
        if name == self.final_norm:
            return ModuleKind.NORM, None
        m = self._block.match(name)
        if m is None:
            return None
        return self._module_kinds[m.group(2)], int(m.group(1))

    def is_block_tensor(self, name: str) -> bool:
        """Whether ``name`` is inside the block stack (``layers.{i}.``)."""
        return name.startswith(f"{self.layers}.")


def _read(path: Path) -> FamilyLayout:
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
        return FamilyLayout(**data, source=str(path))
    except (OSError, yaml.YAMLError, TypeError, ValidationError) as exc:
        raise ConfigError(
            f"layout file {path} cannot be read: {exc}; see plugins/evomm_hf/layouts/llama.yaml for the format"
        ) from exc


def _dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get(LAYOUTS_ENV, "").split(os.pathsep) if p]
    return [LAYOUT_DIR, *extra]


@functools.lru_cache(maxsize=8)
def _load(dirs: tuple[Path, ...]) -> dict[str, FamilyLayout]:
    by_type: dict[str, FamilyLayout] = {}
    for d in dirs:
        for path in sorted(d.glob("*.yaml")):
            layout = _read(path)
            for t in layout.model_types:
                by_type[t] = layout  # a later directory ($EVOMM_LAYOUTS) overrides a shipped file
    return by_type


def layouts() -> dict[str, FamilyLayout]:
    """``model_type`` -> its layout, from the shipped files and ``$EVOMM_LAYOUTS``.

    Example:
        >>> sorted({lay.family for lay in layouts().values()})[:3]
        ['gemma2', 'gemma3', 'llama']
    """
    return _load(tuple(_dirs()))


def layout_for(config: dict[str, Any], where: str = "the model") -> FamilyLayout:
    """The layout of a checkpoint with this ``config.json``.

    Raises:
        CheckpointError: no layout file lists its ``model_type``; the message says how to add one.
    """
    model_type = str(config.get("model_type", ""))
    found = layouts().get(model_type)
    if found is None:
        known = ", ".join(sorted(layouts()))
        raise CheckpointError(
            f"{where}: the hf-causal-lm adapter has no layout for model_type {model_type!r} "
            f"(architectures {config.get('architectures')}); it knows {known}. Describe the family in a "
            f"layout file: copy {LAYOUT_DIR / 'llama.yaml'}, list {model_type!r} under model_types, name "
            f"its modules, and put it in a directory named by ${LAYOUTS_ENV}"
        )
    return found
