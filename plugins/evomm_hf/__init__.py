"""Hugging Face causal-LM adapter (Llama, Mistral, Qwen2 and any model.layers.{i} family)."""

from __future__ import annotations

from evomm import hookimpl
from evomm_hf.adapter import HFCausalLMAdapter, HFCausalLMCheckpoint

__all__ = ["HFCausalLMAdapter", "HFCausalLMCheckpoint"]


@hookimpl
def evomm_register_model_adapters(registry):  # type: ignore[no-untyped-def]
    registry.add(HFCausalLMAdapter)
