"""Pieces shared by the built-in adapters that read Hugging Face-style checkpoint directories.

``hf-causal-lm`` (:mod:`evomm_hf.adapter`), ``llava`` (:mod:`evomm_llava.adapter`) and, for
:func:`fill_model`, ``open-clip`` (:mod:`evomm_clip.adapter`) use these so that the pickle guard,
config loading, metadata copying and weight filling behave the same in every adapter.

Example::

    from evomm_hf.common import open_weights, read_config

    config = read_config(directory)
    index = open_weights(ref, directory)   # SafetensorsIndex, or PickleIndex with allow_pickle
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evomm.adapters import Checkpoint, ModelRef
from evomm.errors import CheckpointError, IncompatibleModelsError, TaskError
from evomm.layout import ModuleKind, TensorInfo
from evomm.safetensors_io import INDEX_FILE, SINGLE_FILE, SafetensorsIndex

if TYPE_CHECKING:
    import torch

#: Non-weight files of a text model besides ``config.json`` (generation config, tokenizer files,
#: chat template) that adapters copy from the donor on save.
TEXT_METADATA_FILES = (
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

#: Pickle weight files (read only when the model's ``allow_pickle`` is on).
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def load_pickle_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of one ``torch.save`` file (``pytorch_model.bin``), memory-mapped where the
    file allows it.

    A training checkpoint's ``{"state_dict": {...}}`` is unwrapped. ``weights_only=True`` still unpickles, but refuses arbitrary objects. Files in torch's zip
    format are memory-mapped (no full read); files in the legacy format that transformers and
    torch wrote before torch 1.6 cannot be, and are read whole.

    Raises:
        CheckpointError: the file is missing, damaged, or holds something other than a mapping
            of names to tensors.

    Example:
        >>> load_pickle_weights(Path("ckpt/pytorch_model.bin"))["model.norm.weight"]   # doctest: +SKIP
    """
    import torch
    try:
        try:
            sd = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except RuntimeError as exc:
            if "mmap can only be used" not in str(exc):
                raise
            sd = torch.load(path, map_location="cpu", weights_only=True)  # the legacy format
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, OSError...
        raise CheckpointError(
            f"cannot load the pickle weights {path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}; "
            "the file is corrupt or truncated; re-download or re-save it (with safetensors)"
        ) from exc
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):  # a training checkpoint
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(
            f"{path} holds a {type(sd).__name__}, not a mapping of tensor names to tensors; "
            "save the model's state_dict (or convert it to safetensors)"
        )
    return sd


class PickleIndex:
    """Reads ``pytorch_model*.bin`` files (only when the user allowed pickle).

    Args:
        directory: the checkpoint directory holding ``pytorch_model.bin`` or a sharded index.

    Example:
        >>> PickleIndex(Path("ckpt")).names()   # doctest: +SKIP
    """

    def __init__(self, directory: Path) -> None:
        index = directory / "pytorch_model.bin.index.json"
        if index.is_file():
            try:
                files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise CheckpointError(
                    f"{index} is not a valid pickle-weights index ({type(exc).__name__}: {exc}); "
                    "the file is corrupt or truncated; re-download or re-save it"
                ) from None
        else:
            files = ["pytorch_model.bin"]
        self._tensors: dict[str, torch.Tensor] = {}
        for f in files:
            self._tensors.update(load_pickle_weights(directory / f))

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


def read_config(directory: Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint directory.

    Args:
        directory: the checkpoint directory.

    Returns:
        The JSON object.

    Raises:
        CheckpointError: the file is missing or not valid JSON.

    Example:
        >>> read_config(Path("ckpt"))["model_type"]   # doctest: +SKIP
        'llama'
    """
    path = directory / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{directory} has no config.json; is it a Hugging Face checkpoint directory?")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc


def open_weights(ref: ModelRef, directory: Path) -> SafetensorsIndex | PickleIndex:
    """Open the weights of ``directory``: safetensors, else pickle files if ``ref.allow_pickle``.

    Args:
        ref: the model reference (its name, path and ``allow_pickle`` flag).
        directory: the local checkpoint directory.

    Returns:
        An index with ``names()``, ``shape()``, ``dtype()``, ``read()``, ``close()``.

    Raises:
        CheckpointError: only pickle weights without ``allow_pickle``, or no weights at all.

    Example:
        >>> open_weights(ModelRef("m", "ckpt"), Path("ckpt")).names()   # doctest: +SKIP
    """
    if (directory / INDEX_FILE).is_file() or any(directory.glob("*.safetensors")):
        return SafetensorsIndex(directory)
    if any((directory / f).is_file() for f in PICKLE_FILES):
        if not ref.allow_pickle:
            raise CheckpointError(
                f"model {ref.name!r} ({ref.path}) has only pickle weights (pytorch_model*.bin), which "
                "can run arbitrary code when loaded; convert it to safetensors, or accept the risk "
                "with `allow_pickle: true` on this model in the recipe (or `--allow-pickle`)"
            )
        return PickleIndex(directory)
    raise CheckpointError(
        f"model {ref.name!r}: no weights in {directory} (expected {SINGLE_FILE}, {INDEX_FILE} "
        "or, with allow_pickle, pytorch_model.bin)"
    )


def copy_files(src_dir: Path, out_dir: Path, names: Iterable[str]) -> None:
    """Copy each of ``names`` that exists in ``src_dir`` into ``out_dir`` (created if needed).

    Example:
        >>> copy_files(Path("donor"), Path("out"), ["tokenizer.json"])   # doctest: +SKIP
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for fname in names:
        src = src_dir / fname
        if src.is_file():
            shutil.copyfile(src, out_dir / fname)


def set_config_dtype(config_path: Path, dtype: str) -> None:
    """Set the dtype recorded in a Hugging Face ``config.json`` to ``dtype``.

    transformers 5 writes ``dtype``, older versions ``torch_dtype`` (still read as an alias): each
    key present is updated, at the top level and in nested sub-configs (``text_config``,
    ``vision_config``); a config with neither at the top level gets ``torch_dtype``, which every
    version reads. No config file: nothing to do.

    Example:
        >>> import json, tempfile
        >>> path = Path(tempfile.mkdtemp()) / "config.json"
        >>> _ = path.write_text(json.dumps({"dtype": "bfloat16", "text_config": {"torch_dtype": "bfloat16"}}))
        >>> set_config_dtype(path, "float16")
        >>> json.loads(path.read_text())
        {'dtype': 'float16', 'text_config': {'torch_dtype': 'float16'}}
    """
    if not config_path.is_file():
        return
    config = json.loads(config_path.read_text(encoding="utf-8"))

    def update(node: dict[str, Any]) -> bool:
        found = False
        for key in ("dtype", "torch_dtype"):
            if key in node:
                node[key] = dtype
                found = True
        for value in node.values():
            if isinstance(value, dict):
                update(value)
        return found

    if not update(config):
        config["torch_dtype"] = dtype
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def load_pretrained(loader: str, ref: ModelRef, directory: Path, what: str) -> Any:
    """``transformers.<loader>.from_pretrained(directory)`` with a :class:`TaskError` on failure.

    Args:
        loader: the transformers auto class, e.g. ``"AutoTokenizer"`` or ``"AutoProcessor"``.
        ref: the model reference (name and ``trust_remote_code``).
        directory: the checkpoint directory.
        what: what is loaded, for the error message (``"tokenizer"``).

    Example:
        >>> load_pretrained("AutoTokenizer", ref, Path("ckpt"), "tokenizer")   # doctest: +SKIP
    """
    import transformers

    try:
        return getattr(transformers, loader).from_pretrained(directory, trust_remote_code=ref.trust_remote_code)
    except Exception as exc:  # transformers raises ValueError/OSError/KeyError variously
        raise TaskError(f"model {ref.name!r}: cannot load its {what} from {directory}: {exc}") from exc


def fill_model(
    targets: Mapping[str, torch.Tensor],
    weights: Mapping[str, torch.Tensor] | None,
    read: Callable[[str], torch.Tensor],
    model_desc: str,
) -> None:
    """Copy into each of ``targets`` its tensor from ``weights``, or else from ``read(name)``.

    Args:
        targets: canonical name -> parameter data of a freshly built model.
        weights: canonical name -> tensor that replaces the checkpoint's (may be ``None``).
        read: reads a checkpoint tensor by canonical name.
        model_desc: names the model in the shape error (``"LlamaForCausalLM"``).

    Raises:
        IncompatibleModelsError: a tensor's shape differs from the parameter's.

    Example:
        >>> fill_model(ckpt.model_tensors(model), None, ckpt.read, "the model")   # doctest: +SKIP
    """
    import torch
    weights = weights or {}
    with torch.no_grad():
        for name, target in targets.items():
            src = weights[name] if name in weights else read(name)
            if tuple(src.shape) != tuple(target.shape):
                raise IncompatibleModelsError(
                    f"tensor {name!r} has shape {tuple(src.shape)} but {model_desc} "
                    f"expects {tuple(target.shape)}"
                )
            target.copy_(src)


#: Module kind -> the substring of Hugging Face causal-LM tensor names (Llama, Mistral, Qwen2 and
#: the language model of a LLaVA) that selects it, as mergekit's ``filter`` matches names.
LM_KIND_SUBSTRINGS: dict[ModuleKind, str] = {
    ModuleKind.ATTENTION: "self_attn",
    ModuleKind.MLP: "mlp",
    ModuleKind.NORM: "norm",
    ModuleKind.EMBEDDING: "embed_tokens",
    ModuleKind.HEAD: "lm_head",
}


class HFDirectoryCheckpoint(Checkpoint):
    """Base of checkpoints stored as a Hugging Face directory (``config.json`` + weights).

    Subclasses set ``ref``, ``directory``, ``config``, ``_index`` (see :func:`open_weights`),
    ``_layout`` and ``_hf_config = None`` in ``__init__``; this class provides :attr:`layout`,
    :meth:`read`, :attr:`hf_config`, :meth:`record_dtype` and :meth:`close`.
    """

    ref: ModelRef
    directory: Path
    config: dict[str, Any]
    _index: Any
    _layout: dict[str, TensorInfo]
    _hf_config: Any
    #: appended to the message when transformers cannot read ``config.json``.
    _HF_CONFIG_HINT = ""
    #: how compatibility errors name this checkpoint's kind (``"VLM "`` for LLaVA).
    _KIND_LABEL = ""
    #: how to fix a vocabulary mismatch in strict mode.
    _VOCAB_HINT = (
        "set `tokenizer_source: union` (or a `tokenizer:` block) in the merge recipe to merge the "
        "vocabularies as mergekit does, or, when the donor's vocabulary extends the other's, "
        "`vocab: {mode: pad_from_donor}`"
    )

    def record_dtype(self, out_dir: Path, dtype: str) -> None:
        """Record ``dtype`` in the written ``config.json`` (:func:`set_config_dtype`)."""
        set_config_dtype(out_dir / "config.json", dtype)

    def check_lm_compatible(self, other: Checkpoint, vocab_mode: str = "strict") -> None:
        """Vocabulary size, depth and shapes of a language model against ``other``.

        With ``vocab_mode="pad_from_donor"`` (recipe ``vocab:``), ``other`` may have a smaller
        vocabulary than this (the donor) model; see :func:`evomm.plan.check_shapes`.

        Raises:
            IncompatibleModelsError: naming both models and both sizes.
        """
        from evomm.plan import check_shapes

        me = f"{self._KIND_LABEL}{self.ref.name!r} ({self.ref.path})"
        them = f"{other.ref.name!r} ({other.ref.path})"
        pad = vocab_mode == "pad_from_donor"
        if self.vocab_size and other.vocab_size and self.vocab_size != other.vocab_size:
            if not pad:
                raise IncompatibleModelsError(
                    f"vocabulary size {self.vocab_size} of {me} differs from vocabulary size "
                    f"{other.vocab_size} of {them}; {self._VOCAB_HINT}"
                )
            if other.vocab_size > self.vocab_size:
                raise IncompatibleModelsError(
                    f"vocab: pad_from_donor: the donor {me} has vocabulary size {self.vocab_size} "
                    f"but {them} has {other.vocab_size}; the donor must have the largest vocabulary: "
                    "make that model the `tokenizer_source`"
                )
        if self.num_layers != other.num_layers:
            raise IncompatibleModelsError(
                f"{me} has {self.num_layers} layers but {them} has {other.num_layers}; "
                "parameter-space merges need equal depth"
            )
        if pad:
            check_shapes(self, other, vocab_mode)
        else:
            Checkpoint.check_compatible(self, other)

    @property
    def layout(self) -> Mapping[str, TensorInfo]:
        return self._layout

    def read(self, name: str) -> torch.Tensor:
        return self._index.read(self.require(name).stored_name)

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
                    f"{exc}{self._HF_CONFIG_HINT}"
                ) from exc
        return self._hf_config

    def kind_substring(self, kind: ModuleKind) -> str | None:
        """The causal-LM names' substring for ``kind`` (:data:`LM_KIND_SUBSTRINGS`)."""
        return LM_KIND_SUBSTRINGS.get(kind)

    def close(self) -> None:
        self._index.close()
