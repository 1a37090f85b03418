"""Vocabulary alignment by padding (recipe ``vocab: {mode: pad_from_donor}``).

When the donor's vocabulary *extends* the others' (a VLM's added ``<image>`` token), the other
parents' embedding/head rows beyond their own are taken from the donor before merging
(:attr:`evomm.plan.TensorStep.pad`). These checks decide whether that is safe: only the
vocabulary axis of embedding/head tensors differs, the donor has the largest vocabulary, and the
tokenizers agree on the shared ids. mergekit's tokenizer sources (a merged vocabulary) are
:mod:`evomm.vocab_map` / :mod:`evomm.tokenizer_merge`.
"""

from __future__ import annotations

import functools
from pathlib import Path

from evomm.adapters import Checkpoint
from evomm.errors import CheckpointError, IncompatibleModelsError
from evomm.layout import TensorInfo
from evomm.vocab_map import VOCAB_KINDS

_PAD_FIX = "`vocab: {mode: pad_from_donor}` (see docs/merging.md)"


def vocab_pad_rows(info: TensorInfo, theirs: TensorInfo, donor: str, alias: str) -> int:
    """Row count of another model's tensor that ``pad_from_donor`` may extend to the donor's.

    Args:
        info: the donor's tensor; theirs: the other model's tensor of the same name.
        donor, alias: the two models' aliases (for messages).

    Returns:
        ``theirs.shape[0]`` (smaller than the donor's row count).

    Raises:
        IncompatibleModelsError: the tensor is not an embedding/head, another axis differs, or
            the other model has more rows than the donor (the donor must have the largest vocabulary).

    Example:
        >>> vocab_pad_rows(vlm.layout["lm_head.weight"], llm.layout["lm_head.weight"], "vlm", "ja")  # doctest: +SKIP
        32000
    """
    mine, other = tuple(info.shape), tuple(theirs.shape)
    where = f"tensor {info.name!r} has shape {other} in model {alias!r} but {mine} in the donor {donor!r}"
    if info.kind not in VOCAB_KINDS or len(mine) != len(other) or not mine or mine[1:] != other[1:]:
        raise IncompatibleModelsError(
            f"{where}; {_PAD_FIX} aligns only the vocabulary (first) axis of embedding/head tensors "
            f"(this one is kind {info.kind.value!r}), so these models do not share an architecture size"
        )
    if other[0] > mine[0]:
        raise IncompatibleModelsError(
            f"{where}: model {alias!r} has the larger vocabulary ({other[0]} rows > {mine[0]}); "
            f"{_PAD_FIX} takes the extra rows from the donor, so the donor must have the largest "
            f"vocabulary: make the model with {other[0]} rows the `tokenizer_source`"
        )
    return other[0]


def check_shapes(donor: Checkpoint, other: Checkpoint, vocab_mode: str = "strict") -> None:
    """Shapes of the tensors both models have must be equal, except, with ``vocab_mode``
    ``pad_from_donor``, embedding/head rows where the donor has more (:func:`vocab_pad_rows`).

    What adapters' ``check_compatible(other, vocab_mode=...)`` call instead of the base class's
    shape check when the mode is not ``strict``.

    Raises:
        IncompatibleModelsError: naming the tensor, both shapes and both models.
    """
    theirs = other.layout
    for name, info in donor.layout.items():
        t = theirs.get(name)
        if t is None or tuple(t.shape) == tuple(info.shape):
            continue
        if vocab_mode != "pad_from_donor":
            raise IncompatibleModelsError(
                f"tensor {name!r} has shape {tuple(info.shape)} in {donor.ref.name!r} ({donor.ref.path}) "
                f"but {tuple(t.shape)} in {other.ref.name!r} ({other.ref.path}); these models do not "
                "share an architecture size"
            )
        vocab_pad_rows(info, t, donor.ref.name, other.ref.name)


@functools.lru_cache(maxsize=16)
def _token_table(directory: str) -> dict[int, str] | None:
    """id -> token string of the tokenizer saved in ``directory`` (added tokens included);
    ``None`` when the directory has no tokenizer files."""
    d = Path(directory)
    try:
        if (d / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            vocab = Tokenizer.from_file(str(d / "tokenizer.json")).get_vocab(with_added_tokens=True)
        elif any((d / f).is_file() for f in ("tokenizer.model", "vocab.json")):
            from transformers import AutoTokenizer

            vocab = AutoTokenizer.from_pretrained(d).get_vocab()
        else:
            return None
    except Exception as exc:  # tokenizers/transformers raise many types on a broken file
        raise CheckpointError(
            f"cannot read the tokenizer in {d} to check vocabulary alignment: {exc}; fix or remove "
            "the tokenizer files"
        ) from exc
    return {i: t for t, i in vocab.items()}


def check_shared_tokens(donor: Checkpoint, other: Checkpoint, rows: int) -> None:
    """Both tokenizers must map ids ``0..rows-1`` to the same token strings (skipped when either
    checkpoint has no local directory or no tokenizer files).

    Raises:
        IncompatibleModelsError: naming the first id whose tokens differ, and both tokens.
    """
    dirs = [getattr(ck, "directory", None) for ck in (donor, other)]
    if any(d is None for d in dirs):
        return
    tables = [_token_table(str(d)) for d in dirs]
    if tables[0] is None or tables[1] is None:
        return
    for i in range(rows):
        a, b = tables[0].get(i), tables[1].get(i)
        if a != b:
            raise IncompatibleModelsError(
                f"{_PAD_FIX}: the tokenizers of the donor {donor.ref.name!r} ({donor.ref.path}) and of "
                f"{other.ref.name!r} ({other.ref.path}) disagree on shared id {i} ({a!r} vs {b!r}); rows "
                f"below {rows} would mix different tokens. Merge models that share a tokenizer for the "
                "common ids"
            )


def _pad_or_check(ck: Checkpoint, alias: str, info: TensorInfo, donor: str) -> int | None:
    """``_check_parent`` for ``pad_from_donor`` recipes: the row count to pad, or None."""
    from evomm.plan import _check_parent

    theirs = ck.layout.get(info.name)
    if theirs is None or tuple(theirs.shape) == tuple(info.shape):
        _check_parent(ck, alias, info)
        return None
    return vocab_pad_rows(info, theirs, donor, alias)
