"""The model-adapter interface. Adapters themselves are plugins (``plugins/evomm_hf``, ...).

An adapter opens a checkpoint *lazily* (no tensor is read until asked for) and describes its
weights in canonical names (:mod:`evomm.layout`). The rest of evomm — plans, operators, the
executor, the evolution loop — only ever sees :class:`Checkpoint` and canonical names, never a
model family. Tasks see only the :class:`~evomm.handle.ModelHandle` an adapter builds.

Example (registering an adapter from a plugin)::

    from evomm import hookimpl

    @hookimpl
    def evomm_register_model_adapters(registry):
        registry.add(MyAdapter)   # a ModelAdapter subclass with name = "my-family"
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import ConfigDict

from evomm.errors import CheckpointError
from evomm.layout import ModuleKind, TensorInfo

if TYPE_CHECKING:  # annotations only: importing the interfaces loads no torch
    import torch

    from evomm.handle import ModelHandle


@dataclass(frozen=True)
class ModelRef:
    """A model named in a recipe: the one model-reference type (merge, evolve and DFS recipes
    all resolve their model entries to it; evolve recipes validate ``parents:`` as it directly).

    Attributes:
        name: the alias recipes use for it (``ja``, ``math``, ``base``).
        path: a local directory or a hub id (``org/model``).
        adapter: registry name of the adapter; ``None`` picks one by :meth:`ModelAdapter.detect`.
        revision: hub revision (ignored for local paths).
        trust_remote_code: passed to transformers; off unless a recipe turns it on for this model.
        allow_pickle: accept pickle ``.bin`` weights (unsafe: they can run code on load).
    """

    __pydantic_config__ = ConfigDict(extra="forbid")  # an unknown key in a recipe is an error

    name: str
    path: str
    adapter: str | None = None
    revision: str | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = False


class CheckpointWriter(ABC):
    """Receives output tensors (by stored name) one at a time and writes them to ``out_dir``."""

    @abstractmethod
    def write(self, stored_name: str, tensor: torch.Tensor) -> None: ...

    @abstractmethod
    def close(self) -> None:
        """Flush what is buffered and write any index file."""


class Checkpoint(ABC):
    """An opened model: its tensor layout, lazy reads, and how to run and save it."""

    ref: ModelRef

    @property
    @abstractmethod
    def layout(self) -> Mapping[str, TensorInfo]:
        """Canonical name -> :class:`TensorInfo`, in the checkpoint's natural order."""

    @property
    @abstractmethod
    def num_layers(self) -> int:
        """Number of blocks in the (language-model) block stack."""

    @property
    def architecture(self) -> str:
        """A family label used in compatibility errors (e.g. ``LlamaForCausalLM``)."""
        return type(self).__name__

    @property
    def vocab_size(self) -> int | None:
        return None

    @abstractmethod
    def read(self, name: str) -> torch.Tensor:
        """Read one tensor by canonical name (raises CheckpointError when absent)."""

    def check_compatible(self, other: Checkpoint) -> None:
        """Raise :class:`~evomm.errors.IncompatibleModelsError` if ``other`` cannot merge with us.

        The default compares shapes of the tensors both have.
        """
        from evomm.errors import IncompatibleModelsError

        mine, theirs = self.layout, other.layout
        for name, info in mine.items():
            if name in theirs and tuple(theirs[name].shape) != tuple(info.shape):
                raise IncompatibleModelsError(
                    f"tensor {name!r} has shape {tuple(info.shape)} in {self.ref.name!r} "
                    f"({self.ref.path}) but {tuple(theirs[name].shape)} in {other.ref.name!r} "
                    f"({other.ref.path}); these models do not share an architecture size"
                )

    @abstractmethod
    def load_model(
        self,
        dtype: torch.dtype | None = None,
        device: str | torch.device = "cpu",
        weights: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.nn.Module:
        """Build a runnable model with our config; ``weights`` (canonical names) replace ours."""

    @abstractmethod
    def model_tensors(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Canonical name -> the tensor *inside* ``model`` (shared storage, for in-place merges)."""

    @abstractmethod
    def writer(self, out_dir: Path, max_shard_bytes: int = 5 * 2**30) -> CheckpointWriter:
        """A writer for this checkpoint's weight file format under ``out_dir``."""

    @abstractmethod
    def save_metadata(self, out_dir: Path) -> None:
        """Write everything but the weights (config, tokenizer, generation config, processor)."""

    def record_dtype(self, out_dir: Path, dtype: str) -> None:
        """Note in the metadata :meth:`save_metadata` wrote to ``out_dir`` that the weights are
        stored in ``dtype`` (a torch dtype name such as ``"float16"``).

        :func:`evomm.execute.merge_to_dir` calls it after :meth:`save_metadata` when a plan sets
        ``out_dtype``, so that a loader reading the dtype from the metadata (``dtype="auto"`` in
        transformers) gets what the shards hold. The default does nothing, for formats whose
        metadata has no dtype.

        Example (what the Hugging Face adapters do, via :func:`evomm_hf.common.set_config_dtype`)::

            def record_dtype(self, out_dir, dtype):
                set_config_dtype(out_dir / "config.json", dtype)
        """
        del out_dir, dtype  # nothing to record by default

    @abstractmethod
    def handle(self, model: torch.nn.Module, **options: Any) -> ModelHandle:
        """A :class:`ModelHandle` that lets tasks query ``model``."""

    def iter_tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name in self.layout:
            yield name, self.read(name)

    def require(self, name: str) -> TensorInfo:
        try:
            return self.layout[name]
        except KeyError:
            raise CheckpointError(
                f"tensor {name!r} is missing from {self.ref.name!r} ({self.ref.path}); "
                f"it has {len(self.layout)} tensors, e.g. {list(self.layout)[:3]}"
            ) from None

    def kind_substring(self, kind: ModuleKind) -> str | None:
        """A substring of this checkpoint's tensor names that picks out the tensors of ``kind``
        (what a mergekit ``filter`` matches: ``"self_attn"`` for a Llama's attention), or
        ``None`` when the family's names have none. ``evomm export`` writes a recipe's
        ``filter: KIND`` so in ``mergekit.yaml``; by default none is known and the kind's name
        is kept.

        Example:
            >>> Checkpoint.kind_substring(None, ModuleKind.ATTENTION) is None  # type: ignore[arg-type]
            True
        """
        del kind
        return None

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release open files (optional)."""


class ModelAdapter(ABC):
    """Opens checkpoints of one family of models.

    Class attributes:
        name: registry name (``hf-causal-lm``, ``llava``, ``open-clip``).
        description: one line for ``evomm plugins``.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""

    @classmethod
    def detect(cls, path: Path, config: Mapping[str, Any]) -> bool:
        """Whether this adapter handles the local checkpoint at ``path`` (``config.json`` given)."""
        return False

    @abstractmethod
    def open(self, ref: ModelRef) -> Checkpoint:
        """Open ``ref`` lazily. Raises CheckpointError/OfflineError with a clear message."""
