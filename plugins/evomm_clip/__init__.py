"""open_clip CLIP model adapter."""
