"""LLaVA-style VLM adapter (LlavaForConditionalGeneration, LlavaNext).

Registers the ``llava`` model adapter; its checkpoints build :class:`evomm_llava.handle.LlavaHandle`
handles for (image, prompt) generation.
"""

from __future__ import annotations

from evomm import hookimpl
from evomm_llava.adapter import LlavaAdapter, LlavaCheckpoint
from evomm_llava.handle import LlavaHandle

__all__ = ["LlavaAdapter", "LlavaCheckpoint", "LlavaHandle"]


@hookimpl
def evomm_register_model_adapters(registry):  # type: ignore[no-untyped-def]
    registry.add(LlavaAdapter)
