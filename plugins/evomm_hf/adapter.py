"""The ``hf-causal-lm`` model adapter: Hugging Face causal LMs with ``model.layers.{i}.`` naming.

Covers Llama, Mistral, Qwen2 and any family whose checkpoint follows the same naming
(``model.embed_tokens``, ``model.layers.{i}.*``, ``model.norm``, ``lm_head``). Stored names *are*
the canonical names (see :mod:`evomm.layout`), so the mapping is the identity; buffers such as
``rotary_emb.inv_freq`` that old checkpoints store are left out of the layout.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from evomm.adapters import Checkpoint, CheckpointWriter, ModelAdapter, ModelRef
from evomm.errors import CheckpointError, IncompatibleModelsError, TaskError
from evomm.hub import resolve_model_dir
from evomm.layout import ModuleKind, TensorInfo, classify_lm_tensor
from evomm.plan import check_shapes
from evomm.safetensors_io import INDEX_FILE, SINGLE_FILE, SafetensorsIndex, ShardedSafetensorsWriter

#: Files (besides weights) that make a checkpoint usable; copied from the donor on save.
METADATA_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
)
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
_SKIP = re.compile(r"rotary_emb\.inv_freq$|\.masked_bias$|\.attn\.bias$")
_LAYER = re.compile(r"^model\.layers\.(\d+)\.")


class _PickleIndex:
    """Reads ``pytorch_model*.bin`` files (only when the user allowed pickle)."""

    def __init__(self, directory: Path) -> None:
        index = directory / "pytorch_model.bin.index.json"
        if index.is_file():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        else:
            files = ["pytorch_model.bin"]
        self._tensors: dict[str, torch.Tensor] = {}
        for f in files:
            # weights_only still unpickles, but refuses arbitrary objects; mmap avoids a full read.
            self._tensors.update(torch.load(directory / f, map_location="cpu", mmap=True, weights_only=True))

    def names(self) -> list[str]:
        return list(self._tensors)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._tensors[name].shape)

    def dtype(self, name: str) -> str:
        return str(self._tensors[name].dtype).removeprefix("torch.")

    def read(self, name: str) -> torch.Tensor:
        return self._tensors[name].clone()

    def close(self) -> None:
        self._tensors.clear()


def _sort_key(name: str) -> tuple[int, int, str]:
    m = _LAYER.match(name)
    if m:
        return (1, int(m.group(1)), name)
    if "embed_tokens" in name:
        return (0, 0, name)
    return (2, 0 if "norm" in name else 1, name)


def read_config(directory: Path) -> dict[str, Any]:
    path = directory / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{directory} has no config.json; is it a Hugging Face checkpoint directory?")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc


class HFCausalLMCheckpoint(Checkpoint):
    """A lazily opened Hugging Face causal-LM checkpoint (see module docstring).

    Args:
        ref: the model reference (alias, path, flags).
        directory: the local directory (``resolve_model_dir(ref)``).
    """

    def __init__(self, ref: ModelRef, directory: Path) -> None:
        self.ref = ref
        self.directory = directory
        self.config = read_config(directory)
        self._hf_config: Any = None
        self._tokenizer: Any = None
        has_st = (directory / INDEX_FILE).is_file() or any(directory.glob("*.safetensors"))
        if has_st:
            self._index: Any = SafetensorsIndex(directory)
        elif any((directory / f).is_file() for f in PICKLE_FILES):
            if not ref.allow_pickle:
                raise CheckpointError(
                    f"model {ref.name!r} ({ref.path}) has only pickle weights (pytorch_model*.bin), which "
                    "can run arbitrary code when loaded; convert it to safetensors, or accept the risk "
                    "with `allow_pickle: true` on this model in the recipe (or `--allow-pickle`)"
                )
            self._index = _PickleIndex(directory)
        else:
            raise CheckpointError(
                f"model {ref.name!r}: no weights in {directory} (expected {SINGLE_FILE}, {INDEX_FILE} "
                "or, with allow_pickle, pytorch_model.bin)"
            )
        # only ask transformers (seconds to import a config class) when config.json lacks the key
        tied = self.config["tie_word_embeddings"] if "tie_word_embeddings" in self.config else self._default_tied()
        self.tied = bool(tied)
        self._layout = self._build_layout()

    def _default_tied(self) -> bool:
        # config.json may omit the key; the config class's default decides (Llama: False).
        return bool(getattr(self.hf_config, "tie_word_embeddings", False))

    @property
    def hf_config(self) -> Any:
        """The ``transformers`` config (``AutoConfig``), loaded on first use."""
        if self._hf_config is None:
            from transformers import AutoConfig

            try:
                self._hf_config = AutoConfig.from_pretrained(
                    self.directory, trust_remote_code=self.ref.trust_remote_code
                )
            except Exception as exc:  # transformers raises ValueError/OSError/KeyError variously
                raise CheckpointError(
                    f"model {self.ref.name!r}: transformers cannot read {self.directory / 'config.json'}: "
                    f"{exc}; if the model needs custom code, set `trust_remote_code: true` on it"
                ) from exc
        return self._hf_config

    def _build_layout(self) -> dict[str, TensorInfo]:
        layout: dict[str, TensorInfo] = {}
        for stored in sorted(self._index.names(), key=_sort_key):
            if _SKIP.search(stored):
                continue
            kind, layer = classify_lm_tensor(stored)
            if self.tied and kind is ModuleKind.HEAD:
                continue  # the head *is* the embedding; saving it twice would untie it
            layout[stored] = TensorInfo(
                stored, stored, tuple(self._index.shape(stored)), self._index.dtype(stored), kind, layer
            )
        if not any(info.layer is not None for info in layout.values()):
            raise CheckpointError(
                f"model {self.ref.name!r} ({self.directory}) has no `model.layers.{{i}}.` tensors; "
                "the hf-causal-lm adapter handles Llama/Mistral/Qwen2-style checkpoints — name another "
                "adapter with `adapter:` in the recipe"
            )
        return layout

    @property
    def layout(self) -> Mapping[str, TensorInfo]:
        return self._layout

    @property
    def num_layers(self) -> int:
        n = self.config.get("num_hidden_layers")
        if isinstance(n, int):
            return n
        return 1 + max(i.layer for i in self._layout.values() if i.layer is not None)

    @property
    def architecture(self) -> str:
        archs = self.config.get("architectures") or [self.config.get("model_type", "unknown")]
        return str(archs[0])

    @property
    def vocab_size(self) -> int | None:
        info = self._layout.get("model.embed_tokens.weight")
        if info is not None:
            return int(info.shape[0])
        v = self.config.get("vocab_size")
        return int(v) if isinstance(v, int) else None

    def read(self, name: str) -> torch.Tensor:
        return self._index.read(self.require(name).stored_name)

    def check_compatible(self, other: Checkpoint, *, vocab_mode: str = "strict") -> None:
        """Same architecture (when both are HF causal LMs), vocabulary size, depth and shapes.

        With ``vocab_mode="pad_from_donor"`` (recipe ``vocab:``), ``other`` may have a smaller
        vocabulary than this (the donor) model; see :func:`evomm.plan.check_shapes`.
        """
        where = f"{self.ref.name!r} ({self.ref.path})", f"{other.ref.name!r} ({other.ref.path})"
        if isinstance(other, HFCausalLMCheckpoint) and other.architecture != self.architecture:
            raise IncompatibleModelsError(
                f"{where[0]} is a {self.architecture} but {where[1]} is a {other.architecture}; "
                "only models of one architecture can be merged"
            )
        pad = vocab_mode == "pad_from_donor"
        if self.vocab_size and other.vocab_size and self.vocab_size != other.vocab_size:
            if not pad:
                raise IncompatibleModelsError(
                    f"vocabulary size {self.vocab_size} of {where[0]} differs from vocabulary size "
                    f"{other.vocab_size} of {where[1]}; merge models that share a tokenizer (mergekit's "
                    "tokenizer surgery is not supported), or, when the donor's vocabulary extends the "
                    "other's, set `vocab: {mode: pad_from_donor}` in the recipe"
                )
            if other.vocab_size > self.vocab_size:
                raise IncompatibleModelsError(
                    f"vocab: pad_from_donor: the donor {where[0]} has vocabulary size {self.vocab_size} "
                    f"but {where[1]} has {other.vocab_size}; the donor must have the largest vocabulary: "
                    "make that model the `tokenizer_source`"
                )
        if self.num_layers != other.num_layers:
            raise IncompatibleModelsError(
                f"{where[0]} has {self.num_layers} layers but {where[1]} has {other.num_layers}; "
                "parameter-space merges need equal depth"
            )
        if pad:
            check_shapes(self, other, vocab_mode)
        else:
            super().check_compatible(other)

    def load_model(
        self,
        dtype: torch.dtype | None = None,
        device: str | torch.device = "cpu",
        weights: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.nn.Module:
        """Build the transformers model from our config and fill it with our (or ``weights``') tensors.

        Args:
            dtype: parameter dtype (default: the stored dtype of the embedding).
            device: where to build it.
            weights: canonical name -> tensor; replaces our tensor of that name.
        """
        from transformers import AutoModelForCausalLM
        from transformers.initialization import no_init_weights

        if dtype is None:
            first = next(iter(self._layout.values()))
            dtype = getattr(torch, first.dtype)
        with no_init_weights():
            model = AutoModelForCausalLM.from_config(
                self.hf_config, dtype=dtype, trust_remote_code=self.ref.trust_remote_code
            )
        model.to(device)
        weights = weights or {}
        with torch.no_grad():
            for name, target in self.model_tensors(model).items():
                if name in weights:
                    src = weights[name]
                elif name in self._layout:
                    src = self.read(name)
                else:
                    raise CheckpointError(
                        f"model {self.ref.name!r}: the transformers model has parameter {name!r}, which "
                        f"the checkpoint at {self.directory} does not store"
                    )
                if tuple(src.shape) != tuple(target.shape):
                    raise IncompatibleModelsError(
                        f"tensor {name!r} has shape {tuple(src.shape)} but {self.architecture} "
                        f"expects {tuple(target.shape)}"
                    )
                target.copy_(src)
        if self.tied:
            model.tie_weights()
        model.requires_grad_(False)  # merged models are evaluated, not trained
        return model.eval()

    def model_tensors(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Canonical name -> parameter data inside ``model`` (tied head omitted: it is the embedding)."""
        out: dict[str, torch.Tensor] = {}
        for name, param in model.named_parameters():  # de-duplicates tied parameters
            if self.tied and name.startswith("lm_head"):
                continue
            out[name] = param.data
        return out

    def writer(self, out_dir: Path, max_shard_bytes: int = 5 * 2**30) -> CheckpointWriter:
        return ShardedSafetensorsWriter(out_dir, max_shard_bytes)

    def save_metadata(self, out_dir: Path) -> None:
        """Copy config, generation config, tokenizer files and chat template from this checkpoint."""
        out_dir.mkdir(parents=True, exist_ok=True)
        for fname in METADATA_FILES:
            src = self.directory / fname
            if src.is_file():
                shutil.copyfile(src, out_dir / fname)

    def handle(self, model: torch.nn.Module, **options: Any) -> Any:
        """An ``HFCausalLMHandle`` for ``model`` with this checkpoint's tokenizer."""
        try:
            from evomm_hf.handle import HFCausalLMHandle
        except ImportError as exc:
            raise TaskError(
                "the hf-causal-lm model handle (evomm_hf.handle.HFCausalLMHandle) is not available in "
                f"this installation: {exc}"
            ) from exc
        return HFCausalLMHandle(model, self.tokenizer(), **options)

    def tokenizer(self) -> Any:
        """This checkpoint's tokenizer (``AutoTokenizer``), loaded once."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            try:
                self._tokenizer = AutoTokenizer.from_pretrained(
                    self.directory, trust_remote_code=self.ref.trust_remote_code
                )
            except Exception as exc:
                raise TaskError(
                    f"model {self.ref.name!r}: cannot load its tokenizer from {self.directory}: {exc}"
                ) from exc
        return self._tokenizer

    def close(self) -> None:
        self._index.close()


class HFCausalLMAdapter(ModelAdapter):
    """Opens Hugging Face ``*ForCausalLM`` checkpoints with ``model.layers.{i}.`` naming."""

    name = "hf-causal-lm"
    description = "Hugging Face causal LMs (Llama, Mistral, Qwen2, any model.layers.{i} family)"

    @classmethod
    def detect(cls, path: Path, config: Mapping[str, Any]) -> bool:
        archs = config.get("architectures") or []
        if not any(str(a).endswith("ForCausalLM") for a in archs):
            return False
        try:
            names = SafetensorsIndex(path).names()
        except CheckpointError:
            return True  # pickle-only or broken: let open() explain
        return any(_LAYER.match(n) for n in names)

    def open(self, ref: ModelRef) -> HFCausalLMCheckpoint:
        return HFCausalLMCheckpoint(ref, resolve_model_dir(ref))
