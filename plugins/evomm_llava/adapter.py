"""The ``llava`` model adapter: LLaVA-style VLMs (``LlavaForConditionalGeneration``,
``LlavaNextForConditionalGeneration``) whose language model can be merged with plain LLMs.

The language model's tensors are exposed under the plain causal-LM canonical names
(``model.layers.{i}...``), so a recipe can combine a VLM with text-only parents opened by the
``hf-causal-lm`` adapter, as EvoVLM-JP did; the vision tower and the projector are
:data:`~evomm.layout.DONOR_ONLY_KINDS` and are copied unchanged from the VLM (the donor).
Stored layouts and canonical names are described in :mod:`evomm_llava.names`.

Example::

    from evomm.adapters import ModelRef
    from evomm_llava.adapter import LlavaAdapter

    vlm = LlavaAdapter().open(ModelRef("vlm", "path/to/llava"))
    vlm.layout["model.layers.0.mlp.up_proj.weight"].stored_name
    # 'model.language_model.layers.0.mlp.up_proj.weight' (or 'language_model.model.layers...')
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

# the checkpoint-directory pieces are shared with the causal-LM adapter (same files, same safety rules)
from evomm_hf.common import (
    TEXT_METADATA_FILES,
    HFDirectoryCheckpoint,
    copy_files,
    fill_model,
    load_pretrained,
    open_weights,
    read_config,
)

from evomm.adapters import Checkpoint, CheckpointWriter, ModelAdapter, ModelRef
from evomm.errors import CheckpointError
from evomm.hub import resolve_model_dir
from evomm.layout import ModuleKind, TensorInfo
from evomm.safetensors_io import ShardedSafetensorsWriter
from evomm_llava.names import canonical_name, classify, is_language_model

if TYPE_CHECKING:
    import torch

#: ``config.json`` ``model_type`` values this adapter opens, with their transformers classes.
SUPPORTED: dict[str, str] = {
    "llava": "LlavaForConditionalGeneration",
    "llava_next": "LlavaNextForConditionalGeneration",
}

#: Non-weight files copied from the VLM donor on save (``config.json`` is rewritten instead).
METADATA_FILES = (*TEXT_METADATA_FILES, "processor_config.json", "preprocessor_config.json")

#: Buffers that some (older) checkpoints store but that are not weights.
_BUFFERS = ("rotary_emb.inv_freq", "embeddings.position_ids")

_ORDER = {ModuleKind.VISION: 0, ModuleKind.PROJECTOR: 1}


def _sort_key(info: TensorInfo) -> tuple[int, int, int]:
    """Vision tower, projector, then the language model (embedding, blocks, norm, head)."""
    if info.kind in _ORDER:
        return (_ORDER[info.kind], 0, 0)
    if info.kind is ModuleKind.EMBEDDING:
        return (2, 0, 0)
    if info.layer is not None:
        return (3, info.layer, 0)
    return (4, 1 if info.kind is ModuleKind.HEAD else 0, 0)


class LlavaCheckpoint(HFDirectoryCheckpoint):
    """A lazily opened LLaVA / LLaVA-NeXT checkpoint (see module docstring).

    Args:
        ref: the model reference.
        directory: its local directory (``resolve_model_dir(ref)``).
    """

    _KIND_LABEL = "VLM "
    _VOCAB_HINT = (
        "evomm never truncates or pads embeddings silently. If the VLM's vocabulary extends the LLM's "
        "(an added <image> token, padding rows), make the VLM the `tokenizer_source` and set "
        "`vocab: {mode: pad_from_donor}` in the recipe (docs/multimodal.md); otherwise merge a language "
        "model with the VLM's tokenizer"
    )

    def __init__(self, ref: ModelRef, directory: Path) -> None:
        self.ref = ref
        self.directory = directory
        self.config = read_config(directory)
        self.model_type = str(self.config.get("model_type", ""))
        if self.model_type not in SUPPORTED:
            raise CheckpointError(
                f"model {ref.name!r} ({directory}) has model_type {self.model_type!r}; the llava adapter "
                f"opens {sorted(SUPPORTED)} — name another adapter with `adapter:` in the recipe"
            )
        self._hf_config: Any = None
        self._processor: Any = None
        self._out_keys: dict[str, str] | None = None
        self._index = open_weights(ref, directory)
        self._layout = self._build_layout()

    def _build_layout(self) -> dict[str, TensorInfo]:
        infos: list[TensorInfo] = []
        for stored in self._index.names():
            if stored.endswith(_BUFFERS):
                continue  # buffers old transformers versions saved; rebuilt from the config
            canonical = canonical_name(stored)
            if canonical is None:
                raise CheckpointError(
                    f"model {self.ref.name!r}: tensor {stored!r} in {self.directory} is not part of a "
                    "LLaVA layout (language_model / vision_tower / multi_modal_projector / image_newline)"
                )
            kind, layer = classify(canonical)
            infos.append(
                TensorInfo(
                    canonical,
                    stored,
                    tuple(self._index.shape(stored)),
                    self._index.dtype(stored),
                    kind,
                    layer,
                )
            )
        layout = {i.name: i for i in sorted(infos, key=_sort_key)}
        if len(layout) != len(infos):
            raise CheckpointError(
                f"model {self.ref.name!r}: {self.directory} stores some tensors twice under different "
                "LLaVA layouts (e.g. both language_model.model.* and model.language_model.*)"
            )
        if not any(i.kind is ModuleKind.VISION for i in infos):
            raise CheckpointError(f"model {self.ref.name!r}: {self.directory} has no vision_tower tensors")
        return layout

    # ------------------------------------------------------------------ description
    @property
    def text_config(self) -> dict[str, Any]:
        """The ``text_config`` section of ``config.json`` (empty when absent)."""
        tc = self.config.get("text_config")
        return tc if isinstance(tc, dict) else {}

    @property
    def num_layers(self) -> int:
        """Depth of the language model (the block stack that per-layer genes address)."""
        n = self.text_config.get("num_hidden_layers")
        if isinstance(n, int):
            return n
        return 1 + max(
            i.layer for i in self._layout.values() if i.layer is not None and is_language_model(i.name)
        )

    @property
    def architecture(self) -> str:
        return SUPPORTED[self.model_type]

    @property
    def vocab_size(self) -> int | None:
        """Rows of the language model's embedding (the vocabulary the weights were trained on)."""
        info = self._layout.get("model.embed_tokens.weight")
        if info is not None:
            return int(info.shape[0])
        v = self.text_config.get("vocab_size", self.config.get("vocab_size"))
        return int(v) if isinstance(v, int) else None

    @property
    def tied(self) -> bool:
        """Whether the LM head is tied to the embedding (no ``lm_head`` stored)."""
        return "lm_head.weight" not in self._layout

    # ------------------------------------------------------------------ compatibility
    def check_compatible(self, other: Checkpoint, *, vocab_mode: str = "strict") -> None:
        """Check that ``other`` (a VLM or a plain LLM) can merge with our language model.

        Args:
            other: the other parent.
            vocab_mode: the recipe's ``vocab.mode``; ``pad_from_donor`` lets ``other`` have a
                smaller vocabulary than this VLM (the donor), whose rows fill the extra ids.

        Raises:
            IncompatibleModelsError: different vocabulary size (the message names both; allowed
                in ``pad_from_donor`` mode when ours is larger), depth, or any other shape of a
                tensor both have.
        """
        self.check_lm_compatible(other, vocab_mode)

    # ------------------------------------------------------------------ running
    def _model_class(self) -> Any:
        import transformers

        return getattr(transformers, SUPPORTED[self.model_type])

    def load_model(
        self,
        dtype: torch.dtype | None = None,
        device: str | torch.device = "cpu",
        weights: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.nn.Module:
        """Build the VLM from our config and fill it with our tensors, ``weights`` replacing them.

        Args:
            dtype: parameter dtype (default: the stored dtype of the language model's embedding).
            device: where to build it.
            weights: canonical name -> tensor (e.g. a merged language model); every other tensor,
                the vision tower and projector included, is read from this checkpoint.

        Returns:
            The model in eval mode.

        Example:
            >>> model = vlm.load_model(weights={"model.norm.weight": torch.ones(64)})  # doctest: +SKIP
        """
        import torch
        from transformers.initialization import no_init_weights

        if dtype is None:
            first = self._layout.get("model.embed_tokens.weight") or next(iter(self._layout.values()))
            dtype = getattr(torch, first.dtype)
        with no_init_weights():
            model = self._model_class()._from_config(self.hf_config, dtype=dtype)
        model.to(device)
        fill_model(self.model_tensors(model), weights, self.read, f"{self.architecture} of {self.ref.name!r}")
        if self.tied:
            model.tie_weights()
        return model.eval()

    def model_tensors(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Canonical name -> parameter data inside ``model`` (tied head omitted).

        Raises:
            CheckpointError: the model has a parameter this checkpoint does not store.
        """
        out: dict[str, torch.Tensor] = {}
        for key, param in model.named_parameters():  # de-duplicates tied parameters
            name = canonical_name(key)
            if name is None or (self.tied and name.startswith("lm_head")):
                continue
            if name not in self._layout:
                raise CheckpointError(
                    f"model {self.ref.name!r}: {type(model).__name__} has parameter {key!r} (canonical "
                    f"{name!r}) that the checkpoint at {self.directory} does not store"
                )
            out[name] = param.data
        return out

    # ------------------------------------------------------------------ saving
    def output_keys(self) -> dict[str, str]:
        """Canonical name -> the key the installed transformers uses for it (what we write).

        Derived from a parameter-less (meta-device) instance of the model class, so the names
        follow the transformers version that will load the result.
        """
        import torch
        if self._out_keys is None:
            with torch.device("meta"):
                model = self._model_class()._from_config(self.hf_config)
            self._out_keys = {}
            for key in model.state_dict():
                name = canonical_name(key)
                if name is not None:
                    self._out_keys.setdefault(name, key)
        return self._out_keys

    def writer(self, out_dir: Path, max_shard_bytes: int = 5 * 2**30) -> CheckpointWriter:
        """A writer that stores tensors under current transformers names (``model.language_model...``).

        It accepts stored names in any LLaVA layout, or canonical names.
        """
        return LlavaWriter(ShardedSafetensorsWriter(out_dir, max_shard_bytes), self.output_keys())

    def save_metadata(self, out_dir: Path) -> None:
        """Write ``config.json`` (current transformers format) and copy the processor, tokenizer,
        chat template and generation config from this (the VLM) checkpoint."""
        out_dir.mkdir(parents=True, exist_ok=True)
        self.hf_config.save_pretrained(out_dir)
        copy_files(self.directory, out_dir, METADATA_FILES)

    def processor(self) -> Any:
        """The VLM's processor (``AutoProcessor``: image processor + tokenizer), loaded once."""
        if self._processor is None:
            self._processor = load_pretrained("AutoProcessor", self.ref, self.directory, "processor")
        return self._processor

    def handle(self, model: torch.nn.Module, **options: Any) -> Any:
        """A :class:`~evomm_llava.handle.LlavaHandle` for ``model`` with this VLM's processor.

        ``options`` are passed to the handle (``prompt_template``, ``device``, ``use_chat_template``).
        """
        from evomm_llava.handle import LlavaHandle

        return LlavaHandle(model, self.processor(), **options)


class LlavaWriter(CheckpointWriter):
    """Renames tensors to the installed transformers' LLaVA keys, then writes safetensors shards.

    Args:
        inner: the shard writer.
        out_keys: canonical name -> output key (from :meth:`LlavaCheckpoint.output_keys`).
    """

    def __init__(self, inner: ShardedSafetensorsWriter, out_keys: Mapping[str, str]) -> None:
        self.inner = inner
        self.out_keys = dict(out_keys)

    def write(self, stored_name: str, tensor: torch.Tensor) -> None:
        canonical = canonical_name(stored_name)
        key = self.out_keys.get(canonical) if canonical is not None else None
        if key is None:
            raise CheckpointError(
                f"cannot place tensor {stored_name!r} in a LLaVA checkpoint: the installed transformers "
                f"model has no parameter for it (canonical name {canonical!r})"
            )
        self.inner.write(key, tensor)

    def close(self) -> None:
        self.inner.close()


class LlavaAdapter(ModelAdapter):
    """Opens LLaVA-family VLM checkpoints (``model_type`` ``llava`` or ``llava_next``)."""

    name = "llava"
    description = "LLaVA / LLaVA-NeXT VLMs; the language model merges with plain LLMs (EvoVLM-JP)"

    @classmethod
    def detect(cls, path: Path, config: Mapping[str, Any]) -> bool:
        if config.get("model_type") in SUPPORTED:
            return True
        archs = set(config.get("architectures") or [])
        return bool(archs & set(SUPPORTED.values()))

    def open(self, ref: ModelRef) -> LlavaCheckpoint:
        return LlavaCheckpoint(ref, resolve_model_dir(ref))
