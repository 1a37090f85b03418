"""The ``open-clip`` model adapter: open_clip CLIP models, merged tensor by tensor.

A checkpoint is either

* a directory in open_clip's local format (what ``open_clip.push_to_hf_hub`` and the toy zoo
  write): ``open_clip_config.json`` (``{"model_cfg": ..., "preprocess_cfg": ...}``) plus
  ``open_clip_model.safetensors`` (or, with ``allow_pickle``, ``open_clip_pytorch_model.bin``);
  a hub id of such a repository works when online; or
* ``"<model name>@<weights file>"``: an architecture open_clip knows (built in, or registered
  with ``open_clip.add_model_config``) plus a weights file, e.g. ``"ViT-B-32@/ckpt/ft.safetensors"``.

Canonical names are open_clip's own state-dict names (``visual.transformer.resblocks.3.attn.
in_proj_weight``, ``transformer.resblocks.3.mlp.c_fc.weight``, ``token_embedding.weight``...).
The whole image tower (``visual.*``) is :attr:`~evomm.layout.ModuleKind.VISION`; text-tower
tensors get attention / MLP / norm / embedding kinds; ``text_projection`` is the head and
``logit_scale`` is ``other``. Layer indices are resblock numbers in either tower, so per-layer
gradients address "depth" in both. Every parent of a CLIP merge has a vision tower, so it is
merged (VISION is donor-only only when a parent lacks it).

Merged models are saved in the same local format and load with
``open_clip.create_model_and_transforms("local-dir:<dir>")``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evomm_hf.common import copy_files, fill_model, load_pickle_weights
from safetensors import safe_open

from evomm.adapters import Checkpoint, CheckpointWriter, ModelAdapter, ModelRef
from evomm.errors import CheckpointError, IncompatibleModelsError
from evomm.hub import resolve_model_dir
from evomm.layout import ModuleKind, TensorInfo
from evomm.safetensors_header import FIX, ST_DTYPES

if TYPE_CHECKING:
    import torch

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"
PICKLE_NAMES = ("open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth")
#: Tokenizer files some open_clip repositories carry (HF text towers); copied on save.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
)

_RESBLOCK = re.compile(r"(?:^|\.)resblocks\.(\d+)\.")


def classify_clip_tensor(name: str) -> tuple[ModuleKind, int | None]:
    """Kind and layer of an open_clip tensor name.

    Example:
        >>> classify_clip_tensor("visual.transformer.resblocks.1.mlp.c_fc.weight")
        (<ModuleKind.VISION: 'vision'>, 1)
        >>> classify_clip_tensor("transformer.resblocks.0.attn.in_proj_weight")
        (<ModuleKind.ATTENTION: 'attention'>, 0)
        >>> classify_clip_tensor("text_projection")
        (<ModuleKind.HEAD: 'head'>, None)
    """
    m = _RESBLOCK.search(name)
    layer = int(m.group(1)) if m else None
    if name.startswith("visual."):
        return ModuleKind.VISION, layer
    leaf = name.removeprefix("text.")
    if layer is not None:
        if ".attn." in leaf:
            return ModuleKind.ATTENTION, layer
        if ".mlp." in leaf:
            return ModuleKind.MLP, layer
        if ".ln_" in leaf:
            return ModuleKind.NORM, layer
        return ModuleKind.OTHER, layer
    if leaf.startswith(("token_embedding", "positional_embedding")):
        return ModuleKind.EMBEDDING, None
    if leaf.startswith("text_projection"):
        return ModuleKind.HEAD, None
    if leaf.startswith("ln_final"):
        return ModuleKind.NORM, None
    return ModuleKind.OTHER, None


class _SafetensorsFile:
    """Lazy reads from one safetensors file (open_clip keeps all weights in one file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._f = safe_open(str(path), framework="pt", device="cpu")
            self._meta = {}
            for k in self._f.keys():
                sl = self._f.get_slice(k)
                self._meta[k] = (tuple(sl.get_shape()), ST_DTYPES.get(sl.get_dtype(), sl.get_dtype().lower()))
        except Exception as exc:  # safetensors raises its own error types (SafetensorError, ...)
            raise CheckpointError(f"cannot read safetensors file {path}: {exc}; {FIX}") from exc

    def names(self) -> list[str]:
        return list(self._meta)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._meta[name][0]

    def dtype(self, name: str) -> str:
        return self._meta[name][1]

    def read(self, name: str) -> torch.Tensor:
        try:
            return self._f.get_tensor(name)
        except Exception as exc:  # SafetensorError: the file changed or was damaged since opening
            raise CheckpointError(f"cannot read tensor {name!r} of safetensors file {self.path}: {exc}; {FIX}") from exc

    def close(self) -> None:
        self._meta = {}


class _PickleFile(_SafetensorsFile):
    def __init__(self, path: Path) -> None:  # noqa: D107 (same interface)
        self.path = path
        sd = load_pickle_weights(path)
        self._t = {k.removeprefix("module."): v for k, v in sd.items()}
        self._meta = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in self._t.items()}

    def read(self, name: str) -> torch.Tensor:
        return self._t[name].clone()


def _split_ref(ref: ModelRef) -> tuple[str | None, Path, Path]:
    """(model name or None, directory, weights file) for ``ref.path``."""
    if "@" in ref.path and not Path(ref.path).exists():
        name, _, weights = ref.path.partition("@")
        w = Path(weights).expanduser()
        if not w.is_file():
            raise CheckpointError(
                f"model {ref.name!r}: weights file {weights!r} (from {ref.path!r}) does not exist"
            )
        return name, w.parent, w
    directory = resolve_model_dir(ref)
    if not (directory / CONFIG_NAME).is_file():
        raise CheckpointError(
            f"model {ref.name!r}: {directory} has no {CONFIG_NAME}; give an open_clip local directory "
            "(open_clip_config.json + open_clip_model.safetensors) or '<model name>@<weights file>'"
        )
    for fname in (WEIGHTS_NAME, *PICKLE_NAMES):
        if (directory / fname).is_file():
            return None, directory, directory / fname
    raise CheckpointError(f"model {ref.name!r}: {directory} has {CONFIG_NAME} but no {WEIGHTS_NAME}")


class OpenClipCheckpoint(Checkpoint):
    """A lazily opened open_clip model (see module docstring).

    Args:
        ref: the model reference (``path``: a local-format directory or ``name@weights``).
    """

    def __init__(self, ref: ModelRef) -> None:
        import open_clip

        self.ref = ref
        self.model_name, self.directory, self.weights_path = _split_ref(ref)
        if self.weights_path.suffix != ".safetensors" and not ref.allow_pickle:
            raise CheckpointError(
                f"model {ref.name!r}: {self.weights_path.name} is a pickle file, which can run arbitrary "
                "code when loaded; convert it to safetensors or set `allow_pickle: true` on this model"
            )
        if self.model_name is None:
            cfg = json.loads((self.directory / CONFIG_NAME).read_text())
            self.model_cfg: dict[str, Any] = cfg.get("model_cfg", cfg)
            self.preprocess_cfg: dict[str, Any] = cfg.get("preprocess_cfg", {})
        else:
            model_cfg = open_clip.get_model_config(self.model_name)
            if model_cfg is None:
                raise CheckpointError(
                    f"model {ref.name!r}: open_clip knows no architecture {self.model_name!r}; register it with "
                    "open_clip.add_model_config(<json>) or use a local directory with open_clip_config.json"
                )
            self.model_cfg, self.preprocess_cfg = model_cfg, {}
        is_st = self.weights_path.suffix == ".safetensors"
        self._file = _SafetensorsFile(self.weights_path) if is_st else _PickleFile(self.weights_path)
        self._layout = {}
        for name in self._file.names():
            kind, layer = classify_clip_tensor(name)
            self._layout[name] = TensorInfo(
                name, name, self._file.shape(name), self._file.dtype(name), kind, layer
            )
        if not any(n.startswith("visual.") for n in self._layout):
            raise CheckpointError(
                f"model {ref.name!r}: {self.weights_path} holds no visual.* tensors; not a CLIP"
            )
        self._transforms: Any = None

    # ------------------------------------------------------------------ description
    @property
    def layout(self) -> Mapping[str, TensorInfo]:
        return self._layout

    @property
    def num_layers(self) -> int:
        """The deeper tower's number of resblocks (layer indices of both towers fall in it)."""
        layers = [i.layer for i in self._layout.values() if i.layer is not None]
        return 1 + max(layers) if layers else 1

    @property
    def architecture(self) -> str:
        return f"open_clip:{self.model_name or 'local'}"

    @property
    def vocab_size(self) -> int | None:
        for name in ("token_embedding.weight", "text.token_embedding.weight"):
            if name in self._layout:
                return int(self._layout[name].shape[0])
        return None

    def read(self, name: str) -> torch.Tensor:
        return self._file.read(self.require(name).stored_name)

    def check_compatible(self, other: Checkpoint) -> None:
        """Both must be open_clip models of one architecture (same tensor names and shapes)."""
        if not isinstance(other, OpenClipCheckpoint):
            raise IncompatibleModelsError(
                f"{self.ref.name!r} ({self.ref.path}) is an open_clip model but {other.ref.name!r} "
                f"({other.ref.path}) is a {other.architecture}; CLIP models merge only with CLIP models"
            )
        extra = sorted(set(self.layout) ^ set(other.layout))
        if extra:
            raise IncompatibleModelsError(
                f"open_clip models {self.ref.name!r} and {other.ref.name!r} have different tensors "
                f"(e.g. {extra[:3]}); they are not the same architecture"
            )
        super().check_compatible(other)

    # ------------------------------------------------------------------ running
    def _create(self, dtype: torch.dtype | None, device: str | torch.device) -> tuple[Any, Any]:
        import open_clip

        name = self.model_name or f"local-dir:{self.directory}"
        # a local directory's preprocess_cfg is read by open_clip itself (local-dir: schema)
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, load_weights=False, pretrained_image=False, pretrained_text=False, device=device
        )
        if dtype is not None:
            model = model.to(dtype)
        return model, preprocess

    def load_model(
        self,
        dtype: torch.dtype | None = None,
        device: str | torch.device = "cpu",
        weights: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.nn.Module:
        """Build the open_clip model from its config and fill it (``weights`` replace ours).

        Args:
            dtype: parameter dtype (default float32, open_clip's default).
            device: where to build it.
            weights: canonical name -> tensor.

        Returns:
            The model in eval mode; its image transform is kept for :meth:`handle`.
        """
        model, self._transforms = self._create(dtype, device)
        fill_model(self.model_tensors(model), weights, self.read, f"the open_clip model of {self.ref.name!r}")
        return model.eval()

    def model_tensors(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Canonical name -> tensor inside ``model`` (state-dict entries this checkpoint stores)."""
        state = model.state_dict(keep_vars=True)
        missing = sorted(set(self._layout) - set(state))
        if missing:
            raise CheckpointError(
                f"model {self.ref.name!r}: the open_clip model has no tensor {missing[0]!r} stored in "
                f"{self.weights_path}; the config does not match the weights"
            )
        return {name: state[name].data for name in self._layout}

    # ------------------------------------------------------------------ saving
    def writer(self, out_dir: Path, max_shard_bytes: int = 5 * 2**30) -> CheckpointWriter:
        """A writer of ``open_clip_model.safetensors`` (one file: open_clip does not read shards)."""
        return OpenClipWriter(out_dir)

    def save_metadata(self, out_dir: Path) -> None:
        """Write ``open_clip_config.json`` (model and preprocess config) and any tokenizer files."""
        out_dir.mkdir(parents=True, exist_ok=True)
        data = {"model_cfg": self.model_cfg, "preprocess_cfg": self.preprocess_cfg}
        (out_dir / CONFIG_NAME).write_text(json.dumps(data, indent=2) + "\n")
        if self.model_name is None:
            copy_files(self.directory, out_dir, TOKENIZER_FILES)

    def tokenizer(self) -> Any:
        """open_clip's tokenizer for this architecture (the bundled BPE for standard CLIPs)."""
        import open_clip

        return open_clip.get_tokenizer(self.model_name or f"local-dir:{self.directory}")

    def handle(self, model: torch.nn.Module, **options: Any) -> Any:
        """An :class:`~evomm_clip.handle.OpenClipHandle` (zero-shot classification) for ``model``.

        ``options``: ``device``, ``batch_size``.
        """
        from evomm_clip.handle import OpenClipHandle

        if self._transforms is None:
            self._transforms = self._create(None, "cpu")[1]  # builds a small throwaway model
        return OpenClipHandle(model, self._transforms, self.tokenizer(), **options)

    def close(self) -> None:
        self._file.close()


class OpenClipWriter(CheckpointWriter):
    """Collects tensors and writes ``open_clip_model.safetensors`` at :meth:`close`.

    Buffers the whole model in CPU memory (CLIP models are at most a few GB).
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._tensors: dict[str, torch.Tensor] = {}

    def write(self, stored_name: str, tensor: torch.Tensor) -> None:
        if stored_name in self._tensors:
            raise CheckpointError(f"tensor {stored_name!r} written twice to {self.out_dir}")
        self._tensors[stored_name] = tensor.detach().to("cpu").contiguous()

    def close(self) -> None:
        from safetensors.torch import save_file  # imports torch: only when saving

        save_file(self._tensors, str(self.out_dir / WEIGHTS_NAME), metadata={"format": "pt"})
        self._tensors = {}


class OpenClipAdapter(ModelAdapter):
    """Opens open_clip models: local directories with ``open_clip_config.json``, or ``name@weights``."""

    name = "open-clip"
    description = "open_clip CLIP models (local open_clip_config.json dirs or name@weights); zero-shot handle"

    @classmethod
    def detect(cls, path: Path, config: Mapping[str, Any]) -> bool:
        return (Path(path) / CONFIG_NAME).is_file()

    def open(self, ref: ModelRef) -> OpenClipCheckpoint:
        return OpenClipCheckpoint(ref)
