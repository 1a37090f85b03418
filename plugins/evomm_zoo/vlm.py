"""The toy zoo's tiny LLaVA: a CLIP vision tower on 32x32 drawn images + the zoo's base LM.

The VLM is a transformers ``LlavaForConditionalGeneration`` whose language model starts as a copy
of the vision base (``<zoo>/models/vbase``); :mod:`evomm_zoo.reader` trains it on English
questions about Pillow-drawn shapes (:mod:`evomm_zoo.images`). It is saved with
``save_pretrained`` together with a ``LlavaProcessor`` (the zoo tokenizer + a CLIP image
processor), so ``LlavaForConditionalGeneration.from_pretrained`` and
``AutoProcessor.from_pretrained`` reload it like a downloaded checkpoint.

Prompts put the image where a caption would sit, right after the question marker:
``"Q: <image>What colour is it? A: "`` (English) and ``"問: <image>なにいろ？ 答: "``
(Japanese); the processor expands ``<image>`` to :data:`IMAGE_TOKENS` image tokens.

Example::

    model, processor = init_vlm(zoo / "models" / "vbase", seed=0)
    reader.pretrain_tower(model, vqa_rows("en_vqa", "train", 2000, 0), steps=1000, seed=0)
    save_vlm(model, processor, zoo / "models" / "vlm")
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from evomm_zoo.images import COLORS, SHAPES, ImageSpec, draw

IMAGE_SIZE, PATCH = 32, 8
IMAGE_TOKENS = (IMAGE_SIZE // PATCH) ** 2  # the CLS token is dropped ("default" strategy)
IMAGE_MARK = "<image>"

#: question kind -> (English question, Japanese question).
QUESTIONS: dict[str, tuple[str, str]] = {
    "colour": ("What colour is it?", "なにいろ？"),
    "shape": ("What shape is it?", "なにのかたち？"),
}

#: Which image-jitter seeds each split draws from (disjoint, so no image is in two splits).
SPLIT_SEEDS: dict[str, range] = {
    "train": range(0, 10_000),
    "dev": range(10_000, 11_000),
    "test": range(11_000, 12_000),
}

VQA_TASKS: tuple[str, ...] = ("en_vqa", "ja_vqa")



def vqa_prompt(task: str, question: str) -> str:
    """The prompt for a VQA row: ``Q: <image>{question} A: `` or ``問: <image>{question} 答: ``."""
    if task == "ja_vqa":
        return f"問: {IMAGE_MARK}{question} 答: "
    return f"Q: {IMAGE_MARK}{question} A: "


def vqa_answer(task: str, kind: str, spec: ImageSpec) -> str:
    """The reference answer: the English word (``en_vqa``) or the Japanese word (``ja_vqa``)."""
    word = spec.color if kind == "colour" else spec.shape
    if task == "ja_vqa":
        return COLORS[word] if kind == "colour" else SHAPES[word]
    return word


def vqa_rows(task: str, split: str, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` VQA rows (half colour, half shape questions) with balanced classes.

    Args:
        task: ``en_vqa`` or ``ja_vqa``.
        split: ``train``, ``dev`` or ``test``; images come from that split's seeds only.
        n: number of rows.
        seed: the zoo seed.

    Returns:
        Rows ``{"spec": ImageSpec, "kind", "question", "prompt", "answer"}`` (``spec`` is turned
        into an image path when written to disk).

    Example::

        vqa_rows("ja_vqa", "test", 4, 0)[0]["answer"]   # e.g. 'あか'
    """
    rng = random.Random(f"vqa-{task}-{split}-{seed}")
    seeds = SPLIT_SEEDS[split]
    lang = 1 if task == "ja_vqa" else 0
    rows = []
    for i in range(n):
        kind = ("colour", "shape")[i % 2]
        spec = ImageSpec(rng.choice(list(COLORS)), rng.choice(list(SHAPES)), 1, rng.choice(seeds))
        q = QUESTIONS[kind][lang]
        rows.append(
            {"spec": spec, "kind": kind, "question": q, "prompt": vqa_prompt(task, q),
             "answer": vqa_answer(task, kind, spec)}
        )  # fmt: skip
    return rows


def build_processor(tokenizer):  # -> transformers.LlavaProcessor
    """A ``LlavaProcessor`` for the zoo VLM: the zoo tokenizer + a 32x32 CLIP image processor."""
    from transformers import CLIPImageProcessor, LlavaProcessor

    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        do_convert_rgb=True,
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH,
        vision_feature_select_strategy="default",
        image_token=IMAGE_MARK,
        num_additional_image_tokens=1,
    )


def init_vlm(base_dir: Path, seed: int):
    """A fresh tiny LLaVA whose language model and head are copies of the LM in ``base_dir``.

    Returns:
        ``(model, processor)``.
    """
    import torch
    from transformers import AutoTokenizer, CLIPVisionConfig, LlamaForCausalLM, LlavaConfig
    from transformers import LlavaForConditionalGeneration as Llava

    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    base = LlamaForCausalLM.from_pretrained(str(base_dir))
    vision = CLIPVisionConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        image_size=IMAGE_SIZE, patch_size=PATCH, projection_dim=64,
    )  # fmt: skip
    cfg = LlavaConfig(
        vision_config=vision,
        text_config=base.config,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_MARK),
        image_seq_length=IMAGE_TOKENS,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(seed)
    model = Llava(cfg)
    model.model.language_model.load_state_dict(base.model.state_dict())
    model.lm_head.load_state_dict(base.lm_head.state_dict())
    model.eval()
    return model, build_processor(tokenizer)


def pixels(images) -> Any:
    """Normalised pixel tensor (N, 3, 32, 32) exactly as :func:`build_processor`'s processor makes it."""
    import numpy as np
    import torch

    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images])
    return torch.from_numpy((arr / 255.0 - 0.5) / 0.5).permute(0, 3, 1, 2).contiguous()


def encode_prompts(processor, prompts: list[str]) -> list[list[int]]:
    """Token ids of prompts as the processor makes them (``<s>`` + image marks expanded)."""
    tok = processor.tokenizer
    image_id = tok.convert_tokens_to_ids(IMAGE_MARK)
    out = []
    for p in prompts:
        ids = tok(p.replace(IMAGE_MARK, "\0")).input_ids  # "\0" is unknown: one placeholder id
        marks = tok("\0", add_special_tokens=False).input_ids[0]
        row = []
        for t in ids:
            row.extend([image_id] * IMAGE_TOKENS if t == marks else [t])
        out.append(row)
    return out


def collate_vqa(processor, rows: list[dict], cache: dict, eos_loss: bool = True) -> dict[str, Any]:
    """A training batch: right-padded ids, labels on the answer (and ``</s>``), pixel values."""
    import torch

    tok = processor.tokenizer
    prompts = encode_prompts(processor, [r["prompt"] for r in rows])
    answers = [tok(r["answer"], add_special_tokens=False).input_ids for r in rows]
    seqs = [p + a + [tok.eos_token_id] for p, a in zip(prompts, answers)]
    width = max(map(len, seqs))
    ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (p, s) in enumerate(zip(prompts, seqs)):
        ids[i, : len(s)] = torch.tensor(s)
        labels[i, len(p) : len(s) - (0 if eos_loss else 1)] = torch.tensor(
            s[len(p) : len(s) - (0 if eos_loss else 1)]
        )
        mask[i, : len(s)] = 1
    for r in rows:
        if r["spec"] not in cache:
            cache[r["spec"]] = pixels([draw(r["spec"])])[0]
    pix = torch.stack([cache[r["spec"]] for r in rows])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "pixel_values": pix}


def generate_answers(model, processor, prompts: list[str], images, *, max_new_tokens: int = 8,
                     batch_size: int = 64) -> list[str]:  # fmt: skip
    """Greedy answers of the VLM (left-padded batches, cut at ``</s>``); for experiments and scores."""
    import torch

    tok = processor.tokenizer
    out: list[str] = []
    for i in range(0, len(prompts), batch_size):
        enc = encode_prompts(processor, prompts[i : i + batch_size])
        width = max(map(len, enc))
        ids = torch.full((len(enc), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for j, e in enumerate(enc):
            ids[j, width - len(e) :] = torch.tensor(e)
            mask[j, width - len(e) :] = 1
        pix = pixels(images[i : i + batch_size])
        with torch.no_grad():
            gen = model.generate(
                input_ids=ids, attention_mask=mask, pixel_values=pix, max_new_tokens=max_new_tokens,
                do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
            )  # fmt: skip
        out += tok.batch_decode(gen[:, width:], skip_special_tokens=True)
    return [o.strip() for o in out]


def save_vlm(model, processor, path: Path) -> None:
    """Save the VLM (safetensors) and its processor so both reload with ``from_pretrained``."""
    model.save_pretrained(str(path), safe_serialization=True)
    processor.save_pretrained(str(path))
