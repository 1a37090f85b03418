"""Hugging Face causal-LM adapter (Llama, Mistral, Qwen2 and any model.layers.{i} family)."""
