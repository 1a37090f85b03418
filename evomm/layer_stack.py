"""Layer stacks: an output block stack assembled from layers of several models.

What a mergekit ``slices:`` recipe describes, and what a data-flow-space path with every scale
1 exports (a *frankenmerge*): output layer ``k`` is layer ``l`` of model ``m``, renumbered to
``k``, and the output config says ``num_hidden_layers = len(stack)``. This module holds the
pieces both use:

* :func:`renumber` and :func:`stacked_config` (the renaming and the config rewrite; the DFS
  plugin's frankenmerge export uses them too);
* :class:`Lane` / :class:`LayerStack`: the frozen, hashable description a
  :class:`~evomm.plan.MergePlan` carries (``plan.stack``);
* :class:`StackedCheckpoint`: a read-only view of several opened checkpoints as one model of
  the stack's depth, so the executor streams a sliced plan like any other
  (:func:`stacked_checkpoints`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evomm.adapters import Checkpoint, CheckpointWriter, ModelRef
from evomm.errors import CheckpointError
from evomm.layout import ModuleKind, TensorInfo

if TYPE_CHECKING:
    import torch

    from evomm.handle import ModelHandle

_LAYER_SEGMENT = re.compile(r"((?:^|\.)layers\.)(\d+)(\.)")


def renumber(name: str, layer: int) -> str:
    """``name`` with its block index (the first ``layers.<i>.`` segment) replaced by ``layer``.

    Example:
        >>> renumber("model.layers.2.mlp.up_proj.weight", 7)
        'model.layers.7.mlp.up_proj.weight'
        >>> renumber("model.language_model.layers.10.input_layernorm.weight", 0)
        'model.language_model.layers.0.input_layernorm.weight'
    """
    out, n = _LAYER_SEGMENT.subn(lambda m: f"{m.group(1)}{layer}{m.group(3)}", name, count=1)
    if n != 1:
        raise CheckpointError(f"tensor {name!r} has no `layers.<i>.` segment to renumber")
    return out


def stacked_config(config: Mapping[str, Any], layers: Sequence[int]) -> dict[str, Any]:
    """The config fields a stack of ``layers`` (source block indices, in output order) changes:
    ``num_hidden_layers`` and, when the config lists one type per layer (``layer_types``:
    sliding/full attention), that list in stack order. What mergekit writes for a slices merge.

    Example:
        >>> stacked_config({"num_hidden_layers": 3, "layer_types": ["s", "f", "s"]}, [0, 1, 1, 2])
        {'num_hidden_layers': 4, 'layer_types': ['s', 'f', 'f', 's']}
    """
    out: dict[str, Any] = {"num_hidden_layers": len(layers)}
    types = config.get("layer_types")
    if isinstance(types, list) and types:
        out["layer_types"] = [types[i] if i < len(types) else types[-1] for i in layers]
    return out


@dataclass(frozen=True)
class Lane:
    """One input of a stacked merge: which model's layer fills each output layer.

    Attributes:
        name: the alias the plan uses for this input (a model's own alias when the lane reads
            one model throughout, else ``lane<i>``).
        layers: per output layer, ``(model alias, source layer)``.
        first: the model whose tensors before the stack (embeddings) this lane reads.
        last: the model whose tensors after the stack (final norm, head) this lane reads.
    """

    name: str
    layers: tuple[tuple[str, int], ...]
    first: str
    last: str

    def models(self) -> list[str]:
        """The model aliases this lane reads, each once."""
        return list(dict.fromkeys([self.first, *(m for m, _ in self.layers), self.last]))


@dataclass(frozen=True)
class LayerStack:
    """The stacked inputs of a plan (``MergePlan.stack``).

    Attributes:
        lanes: the plan's source lanes, then (task-vector methods) the base lane.
        metadata: alias of the model whose config, tokenizer and writer the output takes.
    """

    lanes: tuple[Lane, ...]
    metadata: str

    def to_dict(self) -> dict[str, Any]:
        return {"metadata": self.metadata, "lanes": [
            {"name": ln.name, "first": ln.first, "last": ln.last, "layers": [list(p) for p in ln.layers]}
            for ln in self.lanes]}


class StackedCheckpoint(Checkpoint):
    """Several opened checkpoints seen as one model whose blocks are a lane's layers.

    Tensors outside the block stack come from ``lane.first`` (embeddings) and ``lane.last``
    (everything else: final norm, head). Weights are read from the underlying checkpoints
    under their own names; the writer, metadata and config come from ``metadata``, with
    ``num_hidden_layers`` (and ``layer_types``) rewritten (:func:`stacked_config`).

    Args:
        lane: the lane.
        models: alias -> opened checkpoint (every model of the lane and ``metadata``).
        metadata: alias of the model giving config, tokenizer and writer.
    """

    def __init__(self, lane: Lane, models: Mapping[str, Checkpoint], metadata: str) -> None:
        missing = [a for a in [*lane.models(), metadata] if a not in models]
        if missing:
            raise CheckpointError(f"layer stack {lane.name!r}: no opened checkpoint for {missing}")
        self.lane, self._models, self._meta = lane, models, models[metadata]
        first = models[lane.first]
        self.ref = ModelRef(lane.name, first.ref.path, first.ref.adapter)
        self.directory = getattr(self._meta, "directory", None)
        self._sources: dict[str, tuple[str, str]] = {}
        self._layout = self._build()

    def _put(self, out: dict[str, TensorInfo], alias: str, info: TensorInfo, layer: int | None) -> None:
        name = info.name if layer is None else renumber(info.name, layer)
        stored = info.stored_name if layer is None else renumber(info.stored_name, layer)
        out[name] = TensorInfo(name, stored, tuple(info.shape), info.dtype, info.kind, layer)
        self._sources[name] = (alias, info.name)

    def _build(self) -> dict[str, TensorInfo]:
        out: dict[str, TensorInfo] = {}
        for info in self._models[self.lane.first].layout.values():
            if info.layer is None and info.kind is ModuleKind.EMBEDDING:
                self._put(out, self.lane.first, info, None)
        by_layer: dict[str, dict[int, list[TensorInfo]]] = {}
        for k, (alias, src) in enumerate(self.lane.layers):
            if alias not in by_layer:
                by_layer[alias] = {}
                for info in self._models[alias].layout.values():
                    if info.layer is not None:
                        by_layer[alias].setdefault(info.layer, []).append(info)
            infos = by_layer[alias].get(src)
            if not infos:
                ck = self._models[alias]
                raise CheckpointError(
                    f"model {alias!r} ({ck.ref.path}) has no layer {src} (it has {ck.num_layers}); "
                    "fix the layer_range that names it"
                )
            for info in infos:
                self._put(out, alias, info, k)
        for info in self._models[self.lane.last].layout.values():
            if info.layer is None and info.kind is not ModuleKind.EMBEDDING:
                self._put(out, self.lane.last, info, None)
        return out

    @property
    def layout(self) -> Mapping[str, TensorInfo]:
        return self._layout

    @property
    def num_layers(self) -> int:
        return len(self.lane.layers)

    @property
    def architecture(self) -> str:
        return self._meta.architecture

    @property
    def vocab_size(self) -> int | None:
        return self._models[self.lane.first].vocab_size

    def source(self, name: str) -> tuple[str, str]:
        """``(model alias, tensor name)`` that output tensor ``name`` is read from."""
        try:
            return self._sources[name]
        except KeyError:
            raise CheckpointError(f"layer stack {self.lane.name!r} has no tensor {name!r}") from None

    def read(self, name: str) -> torch.Tensor:
        alias, src = self.source(name)
        return self._models[alias].read(src)

    def writer(self, out_dir: Path, max_shard_bytes: int = 5 * 2**30) -> CheckpointWriter:
        return self._meta.writer(out_dir, max_shard_bytes)

    def save_metadata(self, out_dir: Path) -> None:
        """The metadata model's files, with the config's depth (and layer types) rewritten."""
        self._meta.save_metadata(out_dir)
        path = out_dir / "config.json"
        if not path.is_file():
            return
        config = json.loads(path.read_text(encoding="utf-8"))
        config.update(stacked_config(config, [src for _, src in self.lane.layers]))
        path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    def record_dtype(self, out_dir: Path, dtype: str) -> None:
        self._meta.record_dtype(out_dir, dtype)

    def kind_substring(self, kind: ModuleKind) -> str | None:
        return self._meta.kind_substring(kind)

    def load_model(self, dtype: torch.dtype | None = None, device: str | torch.device = "cpu",
                   weights: Mapping[str, torch.Tensor] | None = None) -> torch.nn.Module:
        raise CheckpointError(
            f"layer stack {self.lane.name!r}: a sliced merge is written to disk (`evomm merge`); "
            "load the written checkpoint instead"
        )

    def model_tensors(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return self._meta.model_tensors(model)

    def handle(self, model: torch.nn.Module, **options: Any) -> ModelHandle:
        return self._meta.handle(model, **options)


def stacked_checkpoints(stack: LayerStack | None, checkpoints: Mapping[str, Checkpoint]) -> dict[str, Checkpoint]:
    """``checkpoints`` plus one :class:`StackedCheckpoint` per lane of ``stack`` (a lane named
    like a model replaces that model's entry; the view reads the original). Idempotent: views
    already in ``checkpoints`` are replaced by fresh ones over the original models. No stack: a
    copy of ``checkpoints``.
    """
    raw: dict[str, Checkpoint] = {}
    for alias, ck in checkpoints.items():
        if isinstance(ck, StackedCheckpoint):
            if alias in ck._models:  # the model this view was named after
                raw[alias] = ck._models[alias]
        else:
            raw[alias] = ck
    out = dict(raw)
    for lane in stack.lanes if stack is not None else ():
        out[lane.name] = StackedCheckpoint(lane, raw, stack.metadata)  # type: ignore[union-attr]
    return out
