"""Canonical tensor names: how adapters describe a checkpoint's weights to the rest of evomm.

An adapter maps each stored tensor name (``model.language_model.layers.3.mlp.up_proj.weight``)
to a *canonical* name that is the same for every model family that shares the tensor's role.
For language models the canonical name is the Hugging Face causal-LM name
(``model.layers.3.mlp.up_proj.weight``, ``model.embed_tokens.weight``, ``model.norm.weight``,
``lm_head.weight``), so that the language model inside a VLM and a plain LLM line up and can be
merged together. Each tensor also carries its layer index (``None`` outside the block stack) and
its :class:`ModuleKind`, which is what per-layer parameters and genome granularities key on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum


class ModuleKind(str, Enum):
    """The role of a tensor; recipes filter parameters by these names."""

    EMBEDDING = "embedding"
    ATTENTION = "attention"
    MLP = "mlp"
    NORM = "norm"
    HEAD = "head"
    VISION = "vision"
    PROJECTOR = "projector"
    OTHER = "other"


#: Kinds that only some parents may have (a VLM's vision tower); a merge copies them from the
#: donor parent instead of requiring them in every parent.
DONOR_ONLY_KINDS = frozenset({ModuleKind.VISION, ModuleKind.PROJECTOR})


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a checkpoint, as the adapter describes it.

    Attributes:
        name: canonical name (see module docstring).
        stored_name: the name in the checkpoint's files.
        shape: tensor shape.
        dtype: torch dtype name as stored, e.g. ``"bfloat16"``.
        kind: the tensor's role.
        layer: index in the transformer block stack, ``None`` for embeddings, final norm, head...
    """

    name: str
    stored_name: str
    shape: tuple[int, ...]
    dtype: str
    kind: ModuleKind
    layer: int | None = None


_LAYER_RE = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def classify_lm_tensor(canonical: str) -> tuple[ModuleKind, int | None]:
    """Kind and layer of a canonical causal-LM tensor name (Llama/Mistral/Qwen2 naming).

    Example:
        >>> classify_lm_tensor("model.layers.2.self_attn.q_proj.weight")
        (<ModuleKind.ATTENTION: 'attention'>, 2)
        >>> classify_lm_tensor("lm_head.weight")
        (<ModuleKind.HEAD: 'head'>, None)
    """
    m = _LAYER_RE.search(canonical)
    layer = int(m.group(1)) if m else None
    if "embed_tokens" in canonical or canonical.endswith("wte.weight"):
        return ModuleKind.EMBEDDING, None
    if canonical.startswith("lm_head"):
        return ModuleKind.HEAD, None
    if layer is not None:
        if ".self_attn." in canonical or ".attention." in canonical:
            return ModuleKind.ATTENTION, layer
        if ".mlp." in canonical or ".block_sparse_moe." in canonical:
            return ModuleKind.MLP, layer
        if "norm" in canonical:
            return ModuleKind.NORM, layer
        return ModuleKind.OTHER, layer
    if "norm" in canonical:
        return ModuleKind.NORM, None
    return ModuleKind.OTHER, None
