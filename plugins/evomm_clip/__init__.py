"""open_clip CLIP model adapter (``open-clip``) and its zero-shot classification handle."""

from __future__ import annotations

from evomm import hookimpl
from evomm_clip.adapter import OpenClipAdapter, OpenClipCheckpoint, classify_clip_tensor
from evomm_clip.handle import OpenClipHandle

__all__ = ["OpenClipAdapter", "OpenClipCheckpoint", "OpenClipHandle", "classify_clip_tensor"]


@hookimpl
def evomm_register_model_adapters(registry):  # type: ignore[no-untyped-def]
    registry.add(OpenClipAdapter)
