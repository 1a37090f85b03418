"""Tiny random Hugging Face causal LMs (Llama, Mistral, Qwen2) and a locally trained tokenizer.

Shared by many test modules (merging, adapters, tasks, evolution); keep these functions and their
defaults stable. Nothing is downloaded: configs are built in code, weights are random (seeded), and
the tokenizer is a byte-level BPE trained with ``tokenizers`` on a few built-in sentences.

Example::

    from tests.tiny_models import make_tiny_model
    a = make_tiny_model(tmp_path / "a", family="llama", seed=0)
    b = make_tiny_model(tmp_path / "b", family="llama", seed=1)
    AutoModelForCausalLM.from_pretrained(a)

Functions:
    train_tokenizer(): a ``PreTrainedTokenizerFast`` (cached per process).
    tiny_config(family, ...): a transformers config of a tiny model.
    make_tiny_model(out_dir, family, seed, ...): save a random tiny model + tokenizer; returns dir.
    perturb_model(src_dir, out_dir, seed, scale): a "fine-tuned" child: src + scale * noise.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path
from typing import Any

import torch

#: Families :func:`tiny_config` knows.
FAMILIES = ("llama", "mistral", "qwen2")

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "One plus two is three. Three plus four is seven.",
    "Merging models combines their weights into a new model.",
    "吾輩は猫である。名前はまだ無い。",
    "東京は日本の首都です。",
    "1 2 3 4 5 6 7 8 9 10 + - * / =",
    "Question: what is 2 + 3? Answer: 5",
] * 20


@functools.lru_cache(maxsize=4)
def train_tokenizer(vocab_size: int = 384) -> Any:
    """A byte-level BPE tokenizer trained on a small built-in corpus (milliseconds, no download).

    Args:
        vocab_size: target vocabulary size (the result may be slightly smaller).

    Returns:
        A ``transformers.PreTrainedTokenizerFast`` with ``<s>``, ``</s>``, ``<pad>``, ``<unk>``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def tiny_config(
    family: str = "llama",
    *,
    vocab_size: int | None = None,
    hidden_size: int = 32,
    num_layers: int = 4,
    intermediate_size: int = 64,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    tie_word_embeddings: bool = False,
    **overrides: Any,
) -> Any:
    """A transformers config of a tiny model of ``family`` (``llama``, ``mistral``, ``qwen2``).

    Args:
        vocab_size: default: the size of :func:`train_tokenizer`'s vocabulary.
        hidden_size, num_layers, intermediate_size, num_heads, num_kv_heads: model size.
        tie_word_embeddings: share the input embedding with the output head.
        overrides: any other config attribute.
    """
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    classes = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config}
    if family not in classes:
        raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}")
    tok = train_tokenizer()
    kwargs: dict[str, Any] = dict(
        vocab_size=vocab_size or len(tok),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=128,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    kwargs.update(overrides)
    return classes[family](**kwargs)


def make_tiny_model(
    out_dir: str | Path,
    family: str = "llama",
    seed: int = 0,
    *,
    dtype: torch.dtype = torch.float32,
    max_shard_size: str | int | None = None,
    save_tokenizer: bool = True,
    pickle: bool = False,
    **config_kwargs: Any,
) -> Path:
    """Save a random tiny causal LM (and the tiny tokenizer) to ``out_dir``.

    Args:
        out_dir: target directory (created).
        family: ``llama``, ``mistral`` or ``qwen2``.
        seed: weights are ``torch.manual_seed(seed)`` random init (normal, std 0.02).
        dtype: stored dtype.
        max_shard_size: e.g. ``"20KB"`` to get a sharded checkpoint with an index.
        save_tokenizer: write tokenizer files too.
        pickle: save ``pytorch_model.bin`` instead of safetensors (to test refusal).
        config_kwargs: passed to :func:`tiny_config` (``num_layers``, ``vocab_size``,
            ``tie_word_embeddings``, ``hidden_size``...).

    Returns:
        ``Path(out_dir)``.
    """
    from transformers import AutoModelForCausalLM, GenerationConfig

    out = Path(out_dir)
    cfg = tiny_config(family, **config_kwargs)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg).to(dtype)
    with torch.no_grad():  # make every tensor (norms too) random, so merges are visible
        for p in model.parameters():
            p.normal_(0.0, 0.02).add_(torch.randn(()) * 0.01)
    kwargs: dict[str, Any] = {}
    if max_shard_size is not None:
        kwargs["max_shard_size"] = max_shard_size
    if pickle:
        out.mkdir(parents=True, exist_ok=True)
        cfg.architectures = [type(model).__name__]
        cfg.save_pretrained(out)
        sd = {k: v.contiguous() for k, v in model.state_dict().items()}
        torch.save(sd, out / "pytorch_model.bin")
    else:
        model.save_pretrained(out, **kwargs)
    GenerationConfig(
        bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id,
        max_new_tokens=8,
    ).save_pretrained(out)
    if save_tokenizer:
        train_tokenizer().save_pretrained(out)
    return out


def perturb_model(src_dir: str | Path, out_dir: str | Path, seed: int, scale: float = 0.01) -> Path:
    """A "fine-tuned" child of ``src_dir``: every floating tensor plus ``scale * N(0, 1)`` noise.

    The child keeps the parent's config, tokenizer and file layout (single file or shards), so
    task-vector merges (``child - parent``) have small, known deltas.
    """
    from safetensors.torch import load_file, save_file

    src, out = Path(src_dir), Path(out_dir)
    shutil.copytree(src, out)
    gen = torch.Generator().manual_seed(seed)
    for f in sorted(out.glob("*.safetensors")):
        tensors = load_file(str(f))
        for k, v in tensors.items():
            if v.is_floating_point():
                noise = torch.randn(v.shape, generator=gen, dtype=torch.float32) * scale
                tensors[k] = (v.float() + noise).to(v.dtype)
        save_file(tensors, str(f), metadata={"format": "pt"})
    return out


def read_all(model_dir: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors checkpoint directory (single file or sharded), by stored name."""
    from safetensors.torch import load_file

    d = Path(model_dir)
    out: dict[str, torch.Tensor] = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def config_dict(model_dir: str | Path) -> dict[str, Any]:
    """``config.json`` of a checkpoint directory as a dict."""
    return json.loads((Path(model_dir) / "config.json").read_text())
