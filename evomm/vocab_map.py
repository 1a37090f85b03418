"""Vocabulary maps: every parent's embedding and head rows laid out in the merged vocabulary.

What mergekit's ``tokenizer_source`` / ``tokenizer:`` do (``mergekit/tokenizer/embed.py``,
``PermutedVocabulary``): the output has a vocabulary of its own (a union of the parents', or
one parent's, plus added tokens); each parent's vocabulary-axis tensors (embedding, head) are
re-laid out in it before the merge: a token the parent has keeps its row, a token it lacks gets
a *fill* (the row of the one parent that has it, the base's row, the mean of the parents that
have it, a configured source, or zeros). The operator then merges these tensors as usual.

:class:`VocabMap` is the frozen, hashable description a plan carries (``MergePlan.vocab``, built
by :mod:`evomm.tokenizer_merge`); :class:`VocabView` presents one opened checkpoint through it,
so the executor streams the plan like any other (:func:`vocab_views`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evomm.adapters import Checkpoint, CheckpointWriter
from evomm.errors import CheckpointError
from evomm.layout import ModuleKind, TensorInfo

if TYPE_CHECKING:
    import torch

    from evomm.handle import ModelHandle

#: Kinds whose first axis is the vocabulary.
VOCAB_KINDS = frozenset({ModuleKind.EMBEDDING, ModuleKind.HEAD})


@dataclass(frozen=True)
class Fill:
    """How an output row is made for a parent that lacks its token (or for a forced token).

    Attributes:
        rows: ``(model alias, row in that model's own vocabulary)`` pairs; empty: zeros.
        mean: average the rows (mergekit adds them to zeros, then divides by their count);
            False: take the single row as is.
    """

    rows: tuple[tuple[str, int], ...] = ()
    mean: bool = False


@dataclass(frozen=True)
class VocabMap:
    """The merged vocabulary and each parent's rows in it (``MergePlan.vocab``).

    Attributes:
        tokens: the output vocabulary, in id order.
        size: output rows (``len(tokens)`` rounded up by ``pad_to_multiple_of``; rows beyond
            the tokens are each parent's mean row, as mergekit).
        rows: per model alias, its row for each output id (-1: it lacks that token).
        fills: ``(output id, fill)`` for ids some parent lacks, or forced.
        forced: output ids whose fill replaces even the rows parents have.
        tokenizer: how to write the output tokenizer: ``(alias of the model whose tokenizer is
            extended, ((token, added-token settings as sorted items or ()), ...))``.
    """

    tokens: tuple[str, ...]
    size: int
    rows: tuple[tuple[str, tuple[int, ...]], ...]
    fills: tuple[tuple[int, Fill], ...]
    forced: tuple[int, ...]
    tokenizer: tuple[str, tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]]

    def to_dict(self) -> dict[str, Any]:
        """A short description for plan files: sizes, the tokenizer donor and a digest of the rest."""
        blob = json.dumps([self.tokens, self.rows, [(i, f.rows, f.mean) for i, f in self.fills], self.forced,
                           self.tokenizer], separators=(",", ":"), default=str)
        return {"tokens": len(self.tokens), "size": self.size, "tokenizer_from": self.tokenizer[0],
                "added": len(self.tokenizer[1]), "digest": hashlib.sha256(blob.encode()).hexdigest()}

    def of(self, alias: str) -> tuple[int, ...]:
        for a, rows in self.rows:
            if a == alias:
                return rows
        raise CheckpointError(f"vocabulary map: no rows for model {alias!r}")


def remap(vmap: VocabMap, alias: str, read: Callable[[str], torch.Tensor]) -> torch.Tensor:
    """Model ``alias``'s vocabulary-axis tensor laid out in ``vmap``'s vocabulary.

    Args:
        vmap: the map.
        alias: the model.
        read: ``read(alias)`` -> that model's tensor (same name), in the compute dtype.

    The arithmetic is mergekit 0.1.5's: rows copied, a mean fill summed onto zeros in order
    and divided by the count, padding rows the mean of the real rows.
    """
    import torch

    own = read(alias)
    cache = {alias: own}

    def get(a: str) -> torch.Tensor:
        if a not in cache:
            cache[a] = read(a)
        return cache[a]

    rows = vmap.of(alias)
    out = torch.zeros((vmap.size, *own.shape[1:]), dtype=own.dtype)
    have = torch.tensor([i for i, r in enumerate(rows) if r >= 0], dtype=torch.long)
    out[have] = own[torch.tensor([r for r in rows if r >= 0], dtype=torch.long)]
    forced = set(vmap.forced)
    for i, fill in vmap.fills:
        if rows[i] >= 0 and i not in forced:
            continue
        if not fill.rows:
            out[i] = 0
        elif fill.mean:
            acc = torch.zeros(own.shape[1:], dtype=own.dtype)
            for a, r in fill.rows:
                acc = acc + get(a)[r].to(own.dtype)
            out[i] = acc / len(fill.rows)
        else:
            a, r = fill.rows[0]
            out[i] = get(a)[r]
    if vmap.size > len(vmap.tokens):
        out[len(vmap.tokens):] = torch.mean(out[: len(vmap.tokens)], dim=0)
    return out


class _LastTensor:
    """The parents' copies of the vocabulary tensor read last, shared by the views of one plan:
    the executor reads one tensor name from every parent in turn, and each view's fills need the
    other parents' rows, so each parent's tensor is read once per name instead of once per view."""

    def __init__(self, models: Mapping[str, Checkpoint]) -> None:
        self._models, self._name, self._got = models, "", {}  # type: ignore[var-annotated]

    def read(self, alias: str, name: str) -> torch.Tensor:
        if name != self._name:
            self._name, self._got = name, {}
        if alias not in self._got:
            self._got[alias] = self._models[alias].read(name).float()
        return self._got[alias]


class VocabView(Checkpoint):
    """An opened checkpoint whose embedding/head tensors are laid out in a :class:`VocabMap`
    (other tensors unchanged). Its metadata gets the merged tokenizer and ``vocab_size``.

    Args:
        inner: the checkpoint.
        vmap: the map.
        models: alias -> opened checkpoint (the parents fills read from).
    """

    def __init__(self, inner: Checkpoint, vmap: VocabMap, models: Mapping[str, Checkpoint],
                 shared: _LastTensor | None = None) -> None:
        self.inner, self.vmap, self._models = inner, vmap, models
        self._shared = shared if shared is not None else _LastTensor(models)
        self.ref = inner.ref
        self.directory = getattr(inner, "directory", None)
        self._layout = {
            name: TensorInfo(name, info.stored_name, (vmap.size, *info.shape[1:]), info.dtype, info.kind, info.layer)
            if self._maps(info) else info
            for name, info in inner.layout.items()
        }

    @staticmethod
    def _maps(info: TensorInfo) -> bool:
        return info.layer is None and info.kind in VOCAB_KINDS and len(info.shape) >= 1

    @property
    def layout(self) -> Mapping[str, TensorInfo]:
        return self._layout

    @property
    def num_layers(self) -> int:
        return self.inner.num_layers

    @property
    def architecture(self) -> str:
        return self.inner.architecture

    @property
    def vocab_size(self) -> int | None:
        return self.vmap.size

    def read(self, name: str) -> torch.Tensor:
        if not self._maps(self.inner.require(name)):
            return self.inner.read(name)
        return remap(self.vmap, self.ref.name, lambda a: self._shared.read(a, name))

    def writer(self, out_dir: Path, max_shard_bytes: int = 5 * 2**30) -> CheckpointWriter:
        return self.inner.writer(out_dir, max_shard_bytes)

    def save_metadata(self, out_dir: Path) -> None:
        """The model's files, then the merged tokenizer and the new ``vocab_size``."""
        from evomm.tokenizer_merge import write_tokenizer

        self.inner.save_metadata(out_dir)
        src = self._models[self.vmap.tokenizer[0]]
        write_tokenizer(self.vmap, Path(getattr(src, "directory", src.ref.path)), out_dir)
        path = out_dir / "config.json"
        if path.is_file():
            config = json.loads(path.read_text(encoding="utf-8"))
            for node in (config, config.get("text_config")):  # a VLM keeps it in text_config
                if isinstance(node, dict) and (node is config or "vocab_size" in node):
                    node["vocab_size"] = self.vmap.size
            path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    def record_dtype(self, out_dir: Path, dtype: str) -> None:
        self.inner.record_dtype(out_dir, dtype)

    def kind_substring(self, kind: ModuleKind) -> str | None:
        return self.inner.kind_substring(kind)

    def load_model(self, dtype: torch.dtype | None = None, device: str | torch.device = "cpu",
                   weights: Mapping[str, torch.Tensor] | None = None) -> torch.nn.Module:
        raise CheckpointError(f"model {self.ref.name!r}: a merge with a merged vocabulary is written to disk "
                              "(`evomm merge`); load the written checkpoint instead")

    def model_tensors(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return self.inner.model_tensors(model)

    def handle(self, model: torch.nn.Module, **options: Any) -> ModelHandle:
        return self.inner.handle(model, **options)


def vocab_views(vmap: VocabMap | None, checkpoints: Mapping[str, Checkpoint]) -> dict[str, Checkpoint]:
    """Each checkpoint of ``vmap.rows`` seen through ``vmap`` (others, or no map: unchanged).
    Idempotent: views already in ``checkpoints`` are rebuilt over their inner checkpoints."""
    raw = {a: ck.inner if isinstance(ck, VocabView) else ck for a, ck in checkpoints.items()}
    if vmap is None:
        return raw
    mapped = {a for a, _ in vmap.rows}
    shared = _LastTensor(raw)
    return {a: VocabView(ck, vmap, raw, shared) if a in mapped else ck for a, ck in raw.items()}
