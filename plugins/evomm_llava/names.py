"""Tensor names of LLaVA-family checkpoints: stored layouts -> canonical names -> model keys.

LLaVA checkpoints on disk come in three layouts, depending on the transformers version that wrote
them (all three load in transformers 5):

==================  =======================================  ======================================
part                current (in-memory names, >= 4.52)       older (< 4.52, and 5.x ``save_pretrained``)
==================  =======================================  ======================================
language model      ``model.language_model.layers.{i}...``   ``language_model.model.layers.{i}...``
LM head             ``lm_head.weight``                       ``language_model.lm_head.weight``
vision tower        ``model.vision_tower.[vision_model.]*``  ``vision_tower.[vision_model.]*``
projector           ``model.multi_modal_projector.*``        ``multi_modal_projector.*``
LLaVA-NeXT newline  ``model.image_newline``                  ``image_newline``
==================  =======================================  ======================================

Canonical names (what plans and operators see) are those of :mod:`evomm.layout`: the language
model uses the plain causal-LM names (``model.layers.{i}...``, ``model.embed_tokens.weight``,
``model.norm.weight``, ``lm_head.weight``) so that it lines up with a plain LLM; the vision tower
is ``vision_tower.*`` with CLIP's optional ``vision_model.`` level removed, the projector
``multi_modal_projector.*`` and LLaVA-NeXT's ``image_newline``.

The mapping is written as prefix rules (as transformers' own ``conversion_mapping.py`` does)
rather than taken from transformers, because that module is private and changes between versions.
"""

from __future__ import annotations

import re

from evomm.layout import ModuleKind, classify_lm_tensor

# (stored prefix, canonical prefix); the first match wins, so longer prefixes come first.
_PREFIX_RULES: tuple[tuple[str, str], ...] = (
    ("model.language_model.model.", "model."),  # transitional 4.5x nesting, seen in the wild
    ("model.language_model.", "model."),
    ("language_model.model.", "model."),
    ("language_model.lm_head.", "lm_head."),
    ("model.vision_tower.vision_model.", "vision_tower."),
    ("model.vision_tower.", "vision_tower."),
    ("vision_tower.vision_model.", "vision_tower."),
    ("vision_tower.", "vision_tower."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
    ("multi_modal_projector.", "multi_modal_projector."),
    ("model.image_newline", "image_newline"),
    ("image_newline", "image_newline"),
    ("lm_head.", "lm_head."),
    ("model.", "model."),  # already canonical (a plain LM name)
)

VISION_PREFIX = "vision_tower."
PROJECTOR_PREFIXES = ("multi_modal_projector.", "image_newline")

_VISION_LAYER = re.compile(r"\.layers\.(\d+)\.")


def canonical_name(stored: str) -> str | None:
    """The canonical name of a stored LLaVA tensor name, or ``None`` when it is not a LLaVA name.

    The function is idempotent: a canonical name maps to itself.

    Example:
        >>> canonical_name("language_model.model.layers.3.mlp.up_proj.weight")
        'model.layers.3.mlp.up_proj.weight'
        >>> canonical_name("model.vision_tower.vision_model.embeddings.class_embedding")
        'vision_tower.embeddings.class_embedding'
        >>> canonical_name("language_model.lm_head.weight")
        'lm_head.weight'
    """
    for prefix, target in _PREFIX_RULES:
        if stored.startswith(prefix):
            return target + stored[len(prefix) :]
    return None


def classify(canonical: str) -> tuple[ModuleKind, int | None]:
    """Module kind and layer of a canonical LLaVA tensor name.

    The vision tower is :attr:`ModuleKind.VISION` (layer: its encoder layer, for information
    only; vision tensors are donor-only and never merged with an LLM), the projector and
    LLaVA-NeXT's ``image_newline`` are :attr:`ModuleKind.PROJECTOR`; the language model is
    classified as a plain causal LM.

    Example:
        >>> classify("vision_tower.encoder.layers.1.mlp.fc1.weight")
        (<ModuleKind.VISION: 'vision'>, 1)
        >>> classify("model.layers.0.self_attn.q_proj.weight")
        (<ModuleKind.ATTENTION: 'attention'>, 0)
    """
    if canonical.startswith(VISION_PREFIX):
        m = _VISION_LAYER.search(canonical)
        return ModuleKind.VISION, int(m.group(1)) if m else None
    if canonical.startswith(PROJECTOR_PREFIXES):
        return ModuleKind.PROJECTOR, None
    return classify_lm_tensor(canonical)


def is_language_model(canonical: str) -> bool:
    """Whether a canonical name belongs to the language model (``model.*`` or ``lm_head.*``)."""
    return canonical.startswith(("model.", "lm_head."))
