"""The ``hf-causal-lm`` model adapter: Hugging Face causal LMs, one layout file per family.

Which tensor is which comes from the family's layout file (:mod:`evomm_hf.families`: Llama,
Mistral, Qwen2, Qwen3, Gemma 2, Gemma 3 text, Phi-3, or one a user adds), picked by the
checkpoint's ``model_type``. These families store their weights under the canonical names
(``model.embed_tokens``, ``model.layers.{i}.*``, ``model.norm``, ``lm_head``; see
:mod:`evomm.layout`), so the mapping is the identity; buffers such as ``rotary_emb.inv_freq``
that old checkpoints store are left out of the layout. A parent may also be a GGUF file
(:mod:`evomm.gguf`): it is read from its dequantised copy.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evomm.adapters import Checkpoint, CheckpointWriter, ModelAdapter, ModelRef
from evomm.errors import CheckpointError, IncompatibleModelsError, TaskError
from evomm.hub import resolve_model_dir
from evomm.layout import ModuleKind, TensorInfo
from evomm.safetensors_io import SafetensorsIndex, ShardedSafetensorsWriter
from evomm_hf.common import (
    PICKLE_FILES,
    TEXT_METADATA_FILES,
    HFDirectoryCheckpoint,
    PickleIndex,
    copy_files,
    fill_model,
    load_pretrained,
    open_weights,
    read_config,
)
from evomm_hf.families import FamilyLayout, layout_for

if TYPE_CHECKING:
    import torch

#: Files (besides weights) that make a checkpoint usable; copied from the donor on save.
METADATA_FILES = ("config.json", *TEXT_METADATA_FILES)
_SKIP = re.compile(r"rotary_emb\.inv_freq$|\.masked_bias$|\.attn\.bias$")
_LAYER = re.compile(r"^model\.layers\.(\d+)\.")
#: re-exported for older importers; the pickle reader now lives in :mod:`evomm_hf.common`.
__all__ = [
    "METADATA_FILES",
    "PICKLE_FILES",
    "HFCausalLMAdapter",
    "HFCausalLMCheckpoint",
    "PickleIndex",
    "_PickleIndex",
    "read_config",
]
_PickleIndex = PickleIndex


def _sort_key(name: str) -> tuple[int, int, str]:
    m = _LAYER.match(name)
    if m:
        return (1, int(m.group(1)), name)
    if "embed_tokens" in name:
        return (0, 0, name)
    return (2, 0 if "norm" in name else 1, name)


class HFCausalLMCheckpoint(HFDirectoryCheckpoint):
    """A lazily opened Hugging Face causal-LM checkpoint (see module docstring).

    Args:
        ref: the model reference (alias, path, flags).
        directory: the local directory (``resolve_model_dir(ref)``).
    """

    _HF_CONFIG_HINT = "; if the model needs custom code, set `trust_remote_code: true` on it"

    def __init__(self, ref: ModelRef, directory: Path) -> None:
        self.ref = ref
        self.directory = directory
        self.config = read_config(directory)
        self._hf_config: Any = None
        self._tokenizer: Any = None
        self._index: Any = open_weights(ref, directory)
        # only ask transformers (seconds to import a config class) when config.json lacks the key
        tied = self.config["tie_word_embeddings"] if "tie_word_embeddings" in self.config else self._default_tied()
        self.tied = bool(tied)
        self.family: FamilyLayout = layout_for(self.config, f"model {ref.name!r} ({directory})")
        self._layout = self._build_layout()

    def _default_tied(self) -> bool:
        # config.json may omit the key; the config class's default decides (Llama: False).
        return bool(getattr(self.hf_config, "tie_word_embeddings", False))

    def _build_layout(self) -> dict[str, TensorInfo]:
        layout: dict[str, TensorInfo] = {}
        for stored in sorted(self._index.names(), key=_sort_key):
            if _SKIP.search(stored):
                continue
            found = self.family.classify(stored)
            if found is None:
                raise CheckpointError(
                    f"model {self.ref.name!r} ({self.directory}): tensor {stored!r} is not in the "
                    f"{self.family.family} layout file {self.family.source}; if the checkpoint is right, "
                    "add its module to that file (or to a copy in $EVOMM_LAYOUTS)"
                )
            kind, layer = found
            if self.tied and kind is ModuleKind.HEAD:
                continue  # the head *is* the embedding; saving it twice would untie it
            layout[stored] = TensorInfo(
                stored, stored, tuple(self._index.shape(stored)), self._index.dtype(stored), kind, layer
            )
        if not any(info.layer is not None for info in layout.values()):
            raise CheckpointError(
                f"model {self.ref.name!r} ({self.directory}) has no `{self.family.layers}.{{i}}.` tensors; "
                "the hf-causal-lm adapter handles causal LMs with a block stack — name another "
                "adapter with `adapter:` in the recipe"
            )
        return layout

    @property
    def num_layers(self) -> int:
        n = self.config.get("num_hidden_layers")
        if isinstance(n, int):
            return n
        return 1 + max(i.layer for i in self._layout.values() if i.layer is not None)

    @property
    def norm_offset(self) -> float:
        """The family's norms scale by ``norm_offset + w`` (Gemma: 1; see :mod:`evomm_hf.families`)."""
        return self.family.norm_offset

    @property
    def architecture(self) -> str:
        archs = self.config.get("architectures") or [self.config.get("model_type", "unknown")]
        return str(archs[0])

    @property
    def vocab_size(self) -> int | None:
        info = self._layout.get(self.family.embedding)
        if info is not None:
            return int(info.shape[0])
        v = self.config.get("vocab_size")
        return int(v) if isinstance(v, int) else None

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
        self.check_lm_compatible(other, vocab_mode)

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
        import torch
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
        fill_model(self.model_tensors(model), weights, self._read_for_model, self.architecture)
        if self.tied:
            model.tie_weights()
        model.requires_grad_(False)  # merged models are evaluated, not trained
        return model.eval()

    def _read_for_model(self, name: str) -> torch.Tensor:
        if name not in self._layout:
            raise CheckpointError(
                f"model {self.ref.name!r}: the transformers model has parameter {name!r}, which "
                f"the checkpoint at {self.directory} does not store"
            )
        return self.read(name)

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
        copy_files(self.directory, out_dir, METADATA_FILES)

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
            self._tokenizer = load_pretrained("AutoTokenizer", self.ref, self.directory, "tokenizer")
        return self._tokenizer


class HFCausalLMAdapter(ModelAdapter):
    """Opens Hugging Face ``*ForCausalLM`` checkpoints of a family with a layout file (and GGUF files)."""

    name = "hf-causal-lm"
    description = "Hugging Face causal LMs (Llama, Mistral, Qwen2/3, Gemma 2/3, Phi-3; layouts as data; GGUF)"

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
