"""LLaVA-style VLM adapter (LlavaForConditionalGeneration, LlavaNext)."""
