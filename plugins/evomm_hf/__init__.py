"""Hugging Face causal-LM adapter (Llama, Mistral, Qwen2/3, Gemma 2/3, Phi-3; layouts as data)
and the ``evomm convert`` command (GGUF files to Hugging Face checkpoints)."""

from __future__ import annotations

from evomm import hookimpl
from evomm_hf.adapter import HFCausalLMAdapter, HFCausalLMCheckpoint

__all__ = ["HFCausalLMAdapter", "HFCausalLMCheckpoint"]


@hookimpl
def evomm_register_model_adapters(registry):  # type: ignore[no-untyped-def]
    registry.add(HFCausalLMAdapter)


@hookimpl
def evomm_register_commands(registry):  # type: ignore[no-untyped-def]
    from evomm.cli.command import Command
    from evomm_hf import cli

    registry.add(Command("convert", cli.add_parser))
