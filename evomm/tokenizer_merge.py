"""mergekit's tokenizer sources: ``tokenizer_source: union|base|<model>`` and ``tokenizer:``.

::

    tokenizer_source: union           # or base, or a model; or instead the block:
    tokenizer:
      source: union                   # union (default) | base | <model>
      tokens:                         # per-token overrides (added to the vocabulary if new)
        <|im_start|>: {source: ./chat-model}                      # that model's row
        <pad>: {source: {kind: zero}}                             # zeros
        <|end|>: {source: {kind: model_token, model: ./a, token: "</s>"}, force: true}
      pad_to_multiple_of: 64          # extra rows: each parent's mean row

As mergekit 0.1.5 (``mergekit/tokenizer/build.py``, ``embed.py``): the output tokenizer is the
base model's (else the first model's), ``union`` adds every token of the other parents (their
added tokens with their settings), ``<model>`` takes that model's; each parent's embedding and
head rows are laid out in it (:mod:`evomm.vocab_map`): rows a parent lacks come from the one
parent that has the token, else the base's row when the base has it, else the mean of the
parents that have it (zeros when none has it). One difference: mergekit adds a union's new
tokens in the order of a hash map (its ids change from run to run); evomm adds them by model
order and then by id, so the same recipe gives the same ids.

``tokenizer_source: base`` or a model keeps evomm's meaning: the donor of config and
tokenizer, rows merged as they are (parents of other sizes are refused unless ``vocab:
pad_from_donor``); mergekit re-lays the parents out by token there too, which evomm does for
``tokenizer: {source: base|<model>}``, so a re-layout is always asked for explicitly.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from evomm.errors import CheckpointError, ConfigError
from evomm.vocab_map import Fill, VocabMap

if TYPE_CHECKING:
    from evomm.adapters import Checkpoint
    from evomm.recipe import MergeRecipe


class ZeroSource(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["zero"]


class ModelTokenSource(BaseModel):
    """A row of a model's own vocabulary, by ``token`` or ``token_id``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["model_token"]
    model: str
    token: str | None = None
    token_id: int | None = None

    @model_validator(mode="after")
    def _one(self) -> ModelTokenSource:
        if (self.token is None) == (self.token_id is None):
            raise ValueError("give exactly one of `token` and `token_id`")
        return self


class TokenOptions(BaseModel):
    """One entry of ``tokenizer.tokens``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    source: ZeroSource | ModelTokenSource | str = Field(description="a model, {kind: zero} or {kind: model_token}")
    force: bool = Field(False, description="use the source even for parents that have the token")


class TokenizerOptions(BaseModel):
    """A recipe's ``tokenizer:`` block (mergekit's ``TokenizerConfig``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    source: str = Field("union", description="union | base | a model")
    tokens: dict[str, TokenOptions] | None = None
    pad_to_multiple_of: int | None = Field(None, ge=1)


def _auto(directory: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(directory), use_fast=True)
    except Exception as exc:  # transformers raises many types on a missing or broken tokenizer
        raise CheckpointError(f"cannot load the tokenizer in {directory} to merge vocabularies: {exc}") from exc


def _dir(ck: Checkpoint) -> Path:
    return Path(getattr(ck, "directory", None) or ck.ref.path)


def _vocab(tok: Any, rows: int | None) -> dict[str, int]:
    """token -> id of a tokenizer, ids at or beyond the model's row count left out (as mergekit)."""
    return {t: i for t, i in tok.get_vocab().items() if rows is None or i < rows}


def _settings(token: Any) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(token.__getstate__().items())) if hasattr(token, "__getstate__") else ()


def _added(spec: tuple[str, tuple[tuple[str, Any], ...]]) -> Any:
    from tokenizers import AddedToken

    token, settings = spec
    return AddedToken(**dict(settings)) if settings else token


def output_tokenizer(base_dir: Path, added: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]) -> Any:
    """The base tokenizer (reloaded, so the original is untouched) with ``added`` added in order."""
    tok = _auto(base_dir)
    for spec in added:
        tok.add_tokens(_added(spec))
    return tok


def write_tokenizer(vmap: VocabMap, base_dir: Path, out_dir: Path) -> None:
    """Write the output tokenizer of ``vmap`` into ``out_dir`` (replacing the donor's copies).

    Raises:
        CheckpointError: the rebuilt tokenizer's vocabulary is not the plan's (the tokenizer
            files changed since planning).
    """
    tok = output_tokenizer(base_dir, vmap.tokenizer[1])
    vocab = tok.get_vocab()
    if [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])] != list(vmap.tokens):
        raise CheckpointError(f"the tokenizer in {base_dir} no longer gives the planned vocabulary; re-plan the merge")
    tok.save_pretrained(str(out_dir))


def _source_and_extra(recipe: MergeRecipe) -> tuple[str | None, dict[str, TokenOptions], int | None]:
    block = recipe.tokenizer
    if block is not None:
        return block.source, dict(block.tokens or {}), block.pad_to_multiple_of
    return recipe.tokenizer_source, {}, None


def build_vocab_map(recipe: MergeRecipe, checkpoints: Mapping[str, Checkpoint]) -> VocabMap | None:
    """The recipe's merged vocabulary, or None when no parent needs its rows re-laid out.

    Raises:
        ConfigError: a ``tokens`` source names no model, or a token a source model lacks.
        CheckpointError: a tokenizer cannot be loaded.
    """
    source, tokens, pad = _source_and_extra(recipe)
    if source is None or recipe.vocab.mode == "pad_from_donor":  # that mode pads in the plan's steps
        return None
    refs = recipe.all_refs()
    aliases = [r.name for r in refs]
    if recipe.tokenizer is None and source != "union":
        # tokenizer_source base|<model>: evomm's donor of config and tokenizer, rows merged as
        # they are (sizes must agree, or vocab: pad_from_donor); mergekit would re-lay them out,
        # which `tokenizer: {source: <model>}` asks for explicitly
        return None
    base_ref = recipe.base_ref()
    first = base_ref.name if base_ref is not None else aliases[0]
    toks = {a: _auto(_dir(checkpoints[a])) for a in aliases}
    vocabs = {a: _vocab(toks[a], checkpoints[a].vocab_size) for a in aliases}
    added: list[tuple[str, tuple[tuple[str, Any], ...]]] = []
    if source == "union":
        added = _union_additions(first, aliases, toks, vocabs)
        out_from = first
    else:
        out_from = first if source == "base" else recipe.donor()
    out_vocab = dict(vocabs[out_from]) if source != "union" else dict(toks[first].get_vocab())
    for spec in added:
        if spec[0] not in out_vocab:
            out_vocab[spec[0]] = len(out_vocab)
    for t in tokens:
        if t not in out_vocab:
            added.append((t, ()))
            out_vocab[t] = len(out_vocab)
    ordered = tuple(t for t, _ in sorted(out_vocab.items(), key=lambda kv: kv[1]))
    rows = tuple((a, tuple(vocabs[a].get(t, -1) for t in ordered)) for a in aliases)
    if not tokens and all(r == tuple(range(len(ordered))) and checkpoints[a].vocab_size == len(ordered)
                          for a, r in rows):
        return None  # every parent already has the output's vocabulary
    fills, forced = _fills(recipe, ordered, dict(rows), vocabs, tokens, base_ref.name if base_ref else None)
    size = len(ordered) if not pad else -(-len(ordered) // pad) * pad
    return VocabMap(ordered, size, rows, fills, forced, (out_from, tuple(added)))


def _union_additions(first: str, aliases: list[str], toks: Mapping[str, Any],
                     vocabs: Mapping[str, dict[str, int]]) -> list[tuple[str, tuple[tuple[str, Any], ...]]]:
    """mergekit's ``build_union_tokenizer`` order, made deterministic: the other models' plain
    tokens the base lacks (model order, then id), then every model's added tokens."""
    order = [first, *(a for a in aliases if a != first)]
    base_vocab = toks[first].get_vocab()
    plain: dict[str, None] = {}
    special: dict[str, Any] = {}
    for a in order:
        ids = set(vocabs[a].values())
        decoder = toks[a].added_tokens_decoder
        added_here = {info.content for info in decoder.values()}
        for t, _ in sorted(vocabs[a].items(), key=lambda kv: kv[1]):
            if t not in added_here:
                plain.setdefault(t, None)
        for i, info in sorted(decoder.items()):
            if i in ids:
                special.setdefault(info.content, info)
    out = [(t, ()) for t in plain if t not in special and t not in base_vocab]
    out += [(t, _settings(info)) for t, info in special.items()]
    return out


def _fills(recipe: MergeRecipe, tokens: tuple[str, ...], rows: Mapping[str, tuple[int, ...]],
           vocabs: Mapping[str, dict[str, int]], configured: Mapping[str, TokenOptions],
           base: str | None) -> tuple[tuple[tuple[int, Fill], ...], tuple[int, ...]]:
    """mergekit's ``assign_embedding_sources`` + ``compute_default_embedding`` per output id."""
    models = list(rows)
    fills: list[tuple[int, Fill]] = []
    forced: list[int] = []
    for i, t in enumerate(tokens):
        present = [a for a in models if rows[a][i] >= 0]
        cfg = configured.get(t)
        if cfg is not None:
            if cfg.force:
                forced.append(i)
            if cfg.force or len(present) < len(models):
                fills.append((i, _configured(recipe, t, i, cfg, rows, vocabs)))
            continue
        if len(present) == len(models):
            continue
        if len(present) == 1:
            fills.append((i, Fill(((present[0], rows[present[0]][i]),))))
        elif not present:
            fills.append((i, Fill()))
        elif base is not None and base in present:
            fills.append((i, Fill(((base, rows[base][i]),))))
        else:
            fills.append((i, Fill(tuple((a, rows[a][i]) for a in present), mean=True)))
    return tuple(fills), tuple(forced)


def _configured(recipe: MergeRecipe, token: str, i: int, cfg: TokenOptions, rows: Mapping[str, tuple[int, ...]],
                vocabs: Mapping[str, dict[str, int]]) -> Fill:
    where = f"tokenizer.tokens[{token!r}].source"
    src = cfg.source
    if isinstance(src, ZeroSource):
        return Fill()
    model = src.model if isinstance(src, ModelTokenSource) else src
    idx = recipe._match(model, "")
    alias = recipe.aliases()[idx] if idx is not None else (recipe.base_ref().name if recipe.base_model == model
                                                            and recipe.base_ref() else None)
    if alias is None or alias not in rows:
        raise ConfigError(f"{where}: {model!r} names no model of the recipe; use one of {recipe.aliases()}")
    if isinstance(src, ModelTokenSource):
        row = src.token_id if src.token_id is not None else vocabs[alias].get(src.token or "", -1)
        if row not in set(vocabs[alias].values()):
            raise ConfigError(f"{where}: model {alias!r} has no token {src.token or src.token_id!r}")
        return Fill(((alias, row),))
    if rows[alias][i] < 0:
        raise ConfigError(f"{where}: model {alias!r} lacks the token {token!r}; name a model that has it")
    return Fill(((alias, rows[alias][i]),))

