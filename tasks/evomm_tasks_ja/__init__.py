"""Japanese text and vision fitness tasks (ja_math, ja_mc, ja_vqa) and clip_zeroshot."""
