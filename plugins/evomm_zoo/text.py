"""Train the zoo's text models: the tiny Llama base and its ja / math fine-tunes.

The public entry points are :func:`model_config`, :func:`train_lm`, :func:`train_base` and
:func:`finetune`. The vision half of the zoo builds its VLM's language model from the base these
functions save (``<zoo>/models/base``), or calls :func:`train_lm` with its own stream.

All training is deterministic for a fixed seed on one torch thread: the data stream is a seeded
:class:`~evomm_zoo.textdata.MixStream` and the model is initialised under ``torch.manual_seed``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evomm_zoo.textdata import BASE_MIX, Example, MixStream


@dataclass(frozen=True)
class ArchConfig:
    """The Llama architecture of the zoo's language models (design d1 of the notes)."""

    hidden_size: int = 64
    num_hidden_layers: int = 3
    num_attention_heads: int = 4
    intermediate_size: int = 256
    max_position_embeddings: int = 256


@dataclass(frozen=True)
class TrainConfig:
    """One training run.

    Attributes:
        steps: optimiser steps.
        lr: peak learning rate (linear warm-up over ``warmup`` of the steps, cosine decay to 10%).
        batch_size: sequences per step.
        mix: sampler name -> weight (see :data:`evomm_zoo.textdata.SAMPLERS`).
        weight_decay: AdamW weight decay.
        freeze: parameter-name prefixes kept fixed (e.g. embeddings and head in fine-tunes).
        seed: seed of the data stream and (for the base) the initialisation.
    """

    steps: int
    lr: float
    batch_size: int = 32
    mix: dict[str, float] = field(default_factory=lambda: dict(BASE_MIX))
    weight_decay: float = 0.0
    freeze: tuple[str, ...] = ()
    warmup: float = 0.05
    seed: int = 0


def model_config(tokenizer, arch: ArchConfig | None = None):  # -> transformers.LlamaConfig
    """The ``LlamaConfig`` of a zoo language model for ``tokenizer`` (untied embeddings).

    Example:
        >>> from evomm_zoo.tokenizer import build_tokenizer
        >>> model_config(build_tokenizer()).hidden_size
        64
    """
    from transformers import LlamaConfig

    arch = arch or ArchConfig()
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_hidden_layers,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_attention_heads,
        max_position_embeddings=arch.max_position_embeddings,
        tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def collate(tokenizer, examples: list[Example]) -> dict[str, Any]:
    """Right-padded ``input_ids``/``attention_mask``/``labels`` for a batch of examples.

    The sequence is ``<s> prompt completion [</s>]``; labels are -100 on ``<s>``, the prompt,
    padding, and on ``</s>`` unless ``example.eos``.
    """
    import torch

    from evomm_zoo.tokenizer import encode_plain

    prompts = encode_plain(tokenizer, [e.prompt for e in examples])
    comps = encode_plain(tokenizer, [e.completion for e in examples])
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    seqs, labs = [], []
    for ex, p, c in zip(examples, prompts, comps):
        seqs.append([bos, *p, *c, eos])
        labs.append([-100] * (1 + len(p)) + c + [eos if ex.eos else -100])
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (s, lab) in enumerate(zip(seqs, labs)):
        ids[i, : len(s)] = torch.tensor(s)
        labels[i, : len(lab)] = torch.tensor(lab)
        mask[i, : len(s)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """The learning-rate factor of ``step``: linear warm-up over ``cfg.warmup`` of the steps, then
    cosine decay to 10% (every zoo training run uses it)."""
    warm = max(1, int(cfg.warmup * cfg.steps))
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, cfg.steps - warm)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def train_lm(
    model, tokenizer, cfg: TrainConfig, *, desc: str = "train", progress: bool = True
) -> dict[str, Any]:
    """Train ``model`` in place on ``cfg.mix`` (AdamW, warm-up + cosine schedule).

    Args:
        model: a causal LM (``LlamaForCausalLM``) whose forward takes ``labels``.
        tokenizer: the zoo tokenizer.
        cfg: the run's hyper-parameters.
        desc: label of the progress bar.
        progress: show a tqdm bar.

    Returns:
        ``{"curve": [[step, mean loss over the last interval], ...], "wall_s": seconds,
        "cpu_s": CPU seconds of this process}`` (wall time on a busy machine overstates the
        cost; CPU time does not).
    """
    import torch
    from tqdm.auto import tqdm

    for name, p in model.named_parameters():
        p.requires_grad_(not name.startswith(cfg.freeze) if cfg.freeze else True)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    stream = MixStream(cfg.mix, cfg.seed)
    every = max(1, cfg.steps // 30)
    curve, acc, t0, c0 = [], [], time.perf_counter(), time.process_time()
    model.train()
    bar = tqdm(range(cfg.steps), desc=desc, disable=not progress, leave=False)
    for step in bar:
        batch = collate(tokenizer, stream.batch(cfg.batch_size))
        loss = model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        acc.append(loss.item())
        if (step + 1) % every == 0 or step + 1 == cfg.steps:
            curve.append([step + 1, round(sum(acc) / len(acc), 4)])
            bar.set_postfix(loss=f"{curve[-1][1]:.3f}")
            acc = []
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return {
        "curve": curve,
        "wall_s": round(time.perf_counter() - t0, 2),
        "cpu_s": round(time.process_time() - c0, 2),
    }


def save_model(model, tokenizer, path: Path) -> None:
    """Save an ordinary HF checkpoint (safetensors) with the tokenizer inside."""
    model.save_pretrained(str(path), safe_serialization=True)
    tokenizer.save_pretrained(str(path))


def train_base(
    tokenizer,
    out: Path | None,
    cfg: TrainConfig,
    arch: ArchConfig | None = None,
    *,
    progress: bool = True,
):
    """Pretrain the bilingual base from scratch and (when ``out``) save it.

    Args:
        tokenizer: the zoo tokenizer (:func:`evomm_zoo.tokenizer.build_tokenizer`).
        out: directory to save the checkpoint to, or ``None``.
        cfg: training hyper-parameters (``cfg.seed`` also seeds the initialisation).
        arch: the architecture (default: hidden 64, 3 layers, 4 heads, MLP 256).
        progress: show a progress bar.

    Returns:
        ``(model, log)`` where ``log`` is :func:`train_lm`'s record.

    Example:
        >>> from evomm_zoo.tokenizer import build_tokenizer
        >>> model, log = train_base(build_tokenizer(), None, TrainConfig(steps=2, lr=1e-3),
        ...                         progress=False)
        >>> len(log["curve"]) > 0
        True
    """
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(cfg.seed)
    model = LlamaForCausalLM(model_config(tokenizer, arch))
    log = train_lm(model, tokenizer, cfg, desc="base", progress=progress)
    if out is not None:
        save_model(model, tokenizer, out)
    return model, log


def finetune(
    base_dir: Path, out: Path | None, cfg: TrainConfig, *, desc: str = "finetune", progress: bool = True
):
    """Fine-tune a copy of the checkpoint in ``base_dir`` on ``cfg.mix`` and (when ``out``) save it.

    Returns:
        ``(model, log)``.
    """
    from transformers import AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    model = LlamaForCausalLM.from_pretrained(str(base_dir))
    log = train_lm(model, tokenizer, cfg, desc=desc, progress=progress)
    if out is not None:
        save_model(model, tokenizer, out)
    return model, log
