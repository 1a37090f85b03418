"""Merge recipes: the YAML a user writes, validated with pydantic (a superset of mergekit's format).

A recipe names an operator, the models and their parameters::

    merge_method: dare_ties          # or `operator:`; any registered merge operator
    base_model: ./models/base        # path, hub id, or the `name` of an entry below
    models:
      - model: ./models/ja
        name: ja                     # optional alias (default: the directory name)
        parameters: {weight: 0.5, density: [0.2, 0.8]}   # numbers, gradients, {filter, value} lists
      - model: ./models/math
        parameters: {weight: 0.5, density: 0.5}
    parameters: {normalize: 1}       # global parameters (and fallbacks for per-model ones)
    dtype: float32                   # compute dtype (default float32)
    out_dtype: bfloat16              # stored dtype of the output (default: the donor's)
    tokenizer_source: base           # base | union | <alias or model path> (evomm.tokenizer_merge)
    seed: 0                          # DARE/DELLA randomness
    vocab: {mode: pad_from_donor}    # default strict; see VocabOptions (VLM + LLM vocabularies)
    allow_pickle: true               # accept pytorch_model.bin for every model, base included
                                     # (unsafe: pickle runs code); per model: on its entry
    allow_nonfinite: true            # let NaN/Inf in parents or output through (default: error)

mergekit's ``slices:`` (per-slice merges and passthrough frankenmerges) replaces ``models:``; see
:mod:`evomm.slices`; ``tokenizer_source: union`` and ``tokenizer:`` merge vocabularies, see
:mod:`evomm.tokenizer_merge`. mergekit keys evomm does not support (``modules``,
``chat_template``) are refused with a clear :class:`~evomm.errors.ConfigError`.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, model_validator

from evomm.adapters import ModelRef
from evomm.errors import ConfigError, RegistryError
from evomm.params import ParamScope, ParamSpec
from evomm.slices import SliceEntry, SliceSource, check_slices, with_slice_models
from evomm.tokenizer_merge import TokenizerOptions

if TYPE_CHECKING:
    from evomm.operators import MergeOperator
    from evomm.plugins import Plugins

#: Accepted dtype names -> torch dtype names.
DTYPES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float64": "float64", "fp64": "float64",
}

#: mergekit keys evomm refuses, with the reason.
UNSUPPORTED_KEYS = {
    "modules": "per-module definitions are not supported; use `models:` with `{filter, value}` "
    "parameters",
    "chat_template": "`chat_template` is not supported; the donor's chat template is copied as is",
}


@dataclass(frozen=True)
class SourceModel:
    """A model an operator combines: its ref, its per-model parameters and their key path."""

    ref: ModelRef
    parameters: Mapping[str, Any]
    where: str


def key_path(loc: Sequence[Any]) -> str:
    """A pydantic error location as the key path users read in merge and evolve recipes:
    ``models[1].parameters.weight`` (validator and union-member tags left out).

    Example:
        >>> key_path(("stages", 0, "merge", "parameters", "w", "Evolved", "evolve"))
        'stages[0].merge.parameters.w.evolve'
        >>> key_path(())
        '(top level)'
    """
    out = ""
    for part in loc:
        if isinstance(part, str) and part.startswith(("function-", "Evolved")):
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _did_you_mean(name: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=2)
    return f" did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


class ModelEntry(BaseModel):
    """One entry of ``models:``."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="local directory or hub id (org/name)")
    name: str | None = Field(None, description="alias used by tokenizer_source and errors")
    adapter: str | None = Field(None, description="model adapter name; default: detected")
    revision: str | None = Field(None, description="hub revision")
    parameters: dict[str, Any] | None = Field(None, description="per-model operator parameters")
    trust_remote_code: bool = False
    allow_pickle: bool = False

    def ref(self, alias: str, *, allow_pickle: bool = False) -> ModelRef:
        """This entry as the :class:`ModelRef` adapters open (``allow_pickle``: the recipe-wide key)."""
        return ModelRef(alias, self.model, self.adapter, self.revision, self.trust_remote_code,
                        self.allow_pickle or allow_pickle)


#: ``vocab.mode`` values: ``strict`` (every parent has the donor's embedding/head shapes) or
#: ``pad_from_donor`` (smaller parents' rows for the donor's extra ids are the donor's rows).
VOCAB_MODES = ("strict", "pad_from_donor")


class VocabOptions(BaseModel):
    """``vocab:`` of a recipe: what to do when parents' vocabularies differ in size.

    ``mode: strict`` (default): embedding/head tensors must have the same shape in every parent.
    ``mode: pad_from_donor``: when the donor (``tokenizer_source``) has the largest vocabulary,
    another parent's embedding/head tensors (kinds ``embedding``/``head``) with fewer rows are
    extended with the donor's rows for the extra ids before merging, so their task vectors are
    zero there and the merged extra rows equal the donor's (EvoVLM-JP: a VLM whose vocabulary has
    an added ``<image>`` token, merged with plain LLMs). Only the row count may differ, and the
    tokenizers must agree on the shared ids (checked by :func:`evomm.plan.build_plan`).

    Example:
        >>> VocabOptions.model_validate({"mode": "pad_from_donor"}).mode
        'pad_from_donor'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["strict", "pad_from_donor"] = "strict"


class MergeRecipe(BaseModel):
    """A validated merge recipe (see module docstring). Build with :func:`load_recipe` or
    :meth:`MergeRecipe.from_dict`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    merge_method: str = Field(validation_alias=AliasChoices("merge_method", "operator"))
    models: list[ModelEntry] = Field(min_length=1)
    base_model: str | None = None
    parameters: dict[str, Any] | None = None
    dtype: str = "float32"
    out_dtype: str | None = None
    tokenizer_source: str | None = None
    tokenizer: TokenizerOptions | None = Field(None, description="mergekit's tokenizer block (evomm.tokenizer_merge)")
    seed: int = 0
    name: str | None = Field(None, description="a label for the merged model (free text)")
    vocab: VocabOptions = Field(default_factory=VocabOptions, description="vocabulary alignment")
    slices: list[SliceEntry] | None = Field(
        None, description="mergekit slices (instead of `models:`): layer ranges merged or stacked, "
        "see evomm.slices; `models` is then derived from the sources"
    )
    allow_pickle: bool = Field(
        False, description="accept pickle weights for every model, base_model included (what "
        "--allow-pickle sets); unsafe: pickle can run code. Per model: `allow_pickle` on its entry"
    )
    allow_nonfinite: bool = Field(
        False, description="merge parents holding NaN/Inf and write an output holding them "
        "(default: either is an error naming the model or operator and the tensor)"
    )

    @model_validator(mode="before")
    @classmethod
    def _refuse_unsupported(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            raise ConfigError(f"a recipe must be a mapping of keys, got {type(data).__name__}")
        for key, why in UNSUPPORTED_KEYS.items():
            if key in data:
                raise ConfigError(f"recipe key `{key}`: {why}")
        if "merge_method" in data and "operator" in data:
            raise ConfigError("give either `merge_method` or `operator` (they are the same key), not both")
        data = dict(data)
        if data.get("slices") is not None:
            data = with_slice_models(data)
        for key in ("dtype", "out_dtype"):
            value = data.get(key)
            if value is not None:
                if str(value) not in DTYPES:
                    raise ConfigError(
                        f"{key}: {value!r} is not a dtype evomm merges in; use one of "
                        f"{sorted(set(DTYPES.values()))}"
                    )
                data[key] = DTYPES[str(value)]
        if isinstance(data.get("vocab"), str):  # shorthand `vocab: pad_from_donor`
            data["vocab"] = {"mode": data["vocab"]}
        if data.get("tokenizer_source") is not None and data.get("tokenizer") is not None:
            raise ConfigError("give either `tokenizer_source` or a `tokenizer:` block (its `source`), not both")
        return data

    @model_validator(mode="after")
    def _check_names(self) -> MergeRecipe:
        explicit = [m.name for m in self.models if m.name]
        dup = {a for a in explicit if explicit.count(a) > 1}
        if dup:
            raise ConfigError(f"models: the name(s) {sorted(dup)} are used twice; give each model its own name")
        src = self.tokenizer.source if self.tokenizer is not None else self.tokenizer_source
        if src not in (None, "base", "union"):
            self._match(src, "tokenizer_source")
        if self.vocab.mode != "strict" and (self.tokenizer is not None or src == "union"):
            raise ConfigError("vocab: pad_from_donor and a tokenizer union/block both align vocabularies; keep "
                              "one (`tokenizer: {source: <the donor>}` re-lays rows out by token)")
        if self.tokenizer_source == "base" and self.base_model is None:
            raise ConfigError("tokenizer_source: 'base' needs a `base_model`; name a model alias instead")
        return self

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_dict(cls, data: Any, source: str = "recipe") -> MergeRecipe:
        """Validate ``data`` (parsed YAML); errors name the key path, the value and the fix.

        Raises:
            ConfigError: with messages such as ``recipe: models[1].paramters: unknown key``.
        """
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"{source}: " + "; ".join(_explain(e) for e in exc.errors())) from None

    # ------------------------------------------------------------------ model aliases

    def aliases(self) -> list[str]:
        """The alias of each entry of ``models`` (explicit ``name`` or the directory name)."""
        out: list[str] = []
        taken = {m.name for m in self.models if m.name}
        for m in self.models:
            if m.name:
                out.append(m.name)
                continue
            base = Path(m.model.rstrip("/\\")).name or m.model
            alias, k = base, 2
            while alias in out or alias in taken:
                alias, k = f"{base}-{k}", k + 1
            out.append(alias)
        return out

    def _match(self, ref: str, key: str) -> int | None:
        """Index of the entry whose alias or model path is ``ref``; None when none matches."""
        aliases = self.aliases()
        for i, (m, a) in enumerate(zip(self.models, aliases)):
            if ref in (a, m.model) or Path(ref).expanduser().resolve() == Path(m.model).expanduser().resolve():
                return i
        if key == "tokenizer_source":
            if self.base_model is not None and ref == self.base_model:
                return None
            raise ConfigError(
                f"tokenizer_source: {ref!r} names no model;{_did_you_mean(ref, aliases)} use 'base' or "
                f"one of {aliases}"
            )
        return None

    def base_index(self) -> int | None:
        """Index in ``models`` of the base model when it is listed there too (mergekit style)."""
        return None if self.base_model is None else self._match(self.base_model, "base_model")

    def base_ref(self) -> ModelRef | None:
        """The base model as a :class:`ModelRef`, or ``None``."""
        if self.base_model is None:
            return None
        i = self.base_index()
        if i is not None:
            return self.refs()[i]
        alias = "base" if "base" not in self.aliases() else "base_model"
        return ModelRef(alias, self.base_model, allow_pickle=self.allow_pickle)

    def refs(self) -> list[ModelRef]:
        """One :class:`ModelRef` per entry of ``models``, in order."""
        return [
            m.ref(a, allow_pickle=self.allow_pickle)
            for m, a in zip(self.models, self.aliases())
        ]

    def all_refs(self) -> list[ModelRef]:
        """Every model the recipe needs: the entries of ``models`` plus a base listed only there."""
        refs = self.refs()
        base = self.base_ref()
        if base is not None and base.name not in {r.name for r in refs}:
            refs.append(base)
        return refs

    def donor(self) -> str:
        """Alias of the model whose config and tokenizer the output takes (``tokenizer_source``;
        default: the base model, else the first model)."""
        base = self.base_ref()
        src = self.tokenizer.source if self.tokenizer is not None else self.tokenizer_source
        if src is None or src in ("base", "union"):
            return base.name if base is not None else self.aliases()[0]
        i = self._match(src, "tokenizer_source")
        return self.aliases()[i] if i is not None else base.name  # type: ignore[union-attr]

    def sources(self, operator: type[MergeOperator]) -> tuple[list[SourceModel], ModelRef | None]:
        """The models the operator combines, and the base it is given, as mergekit does.

        For an operator that ``requires_base`` (task-vector methods) or takes an
        ``optional_base`` (NuSLERP, Multi-SLERP) the base is given separately and is not a
        source even when listed in ``models``. For any other operator
        (linear, SLERP, ...) the base model is an ordinary source placed first (SLERP's ``t = 0``
        end), appended from ``base_model`` when ``models`` does not list it, and no separate
        base is given.

        Returns:
            ``(sources, base)``: each source with its per-model parameters and key path.
        """
        refs = self.refs()
        bi = self.base_index()
        entries = [
            SourceModel(ref, m.parameters or {}, f"models[{i}].parameters")
            for i, (ref, m) in enumerate(zip(refs, self.models))
        ]
        base = self.base_ref()
        if base is None:
            return entries, None
        if operator.requires_base or operator.optional_base:
            return [e for i, e in enumerate(entries) if i != bi], base
        if bi is None:
            return [SourceModel(base, {}, "base_model.parameters"), *entries], None
        return [entries[bi], *(e for i, e in enumerate(entries) if i != bi)], None

    def with_overrides(self, *, dtype: str | None = None, allow_pickle: bool = False) -> MergeRecipe:
        """A copy with a new compute dtype and/or ``allow_pickle`` on every model, the base model
        included (CLI flags)."""
        data = self.model_dump(by_alias=False)
        if dtype is not None:
            data["dtype"] = dtype
        if allow_pickle:
            data["allow_pickle"] = True
        return MergeRecipe.from_dict(data, source="command line")


def _explain(err: Mapping[str, Any]) -> str:
    where = key_path(err.get("loc", ()))
    if err.get("type") == "extra_forbidden":
        key = str(err["loc"][-1]) if err.get("loc") else "?"
        parent = err["loc"][:-1]
        owners = {"models": ModelEntry, "vocab": VocabOptions, "slices": SliceEntry, "tokenizer": TokenizerOptions}
        owner = SliceSource if "sources" in parent else owners.get(parent[0], MergeRecipe) if parent else MergeRecipe
        fields = owner.model_fields
        names = list(fields) + (["operator"] if not parent else [])
        return f"{where}: unknown key{_did_you_mean(key, names)} known keys: {', '.join(names)}"
    if err.get("type") == "missing":
        return f"{where}: this key is required"
    return f"{where}: {err.get('msg')} (got {err.get('input')!r})"


def load_recipe(path: str | Path, plugins: Plugins | None = None) -> MergeRecipe:
    """Read and validate a recipe YAML file (evomm or mergekit format).

    Relative model paths that do not exist from the current directory but do from the recipe's
    directory are rewritten to the latter.

    Args:
        path: the YAML file.
        plugins: when given, parameters are checked against the operator's declarations
            (:func:`check_recipe`).

    Raises:
        ConfigError: missing file, malformed YAML (with line and column), invalid keys or values.

    Example:
        >>> recipe = load_recipe("configs/merge-linear.yaml")           # doctest: +SKIP
        >>> recipe.merge_method, recipe.aliases()                       # doctest: +SKIP
        ('linear', ['a', 'b'])
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"recipe file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{p}{at}: malformed YAML: {problem}; check indentation and quoting there") from None
    if isinstance(data, Mapping):
        data = dict(data)
        for entry in data.get("models") or []:
            if isinstance(entry, dict) and isinstance(entry.get("model"), str):
                entry["model"] = _relative_to(entry["model"], p.parent)
        if isinstance(data.get("base_model"), str):
            data["base_model"] = _relative_to(data["base_model"], p.parent)
        for sl in data.get("slices") or []:
            for src in (sl.get("sources") or []) if isinstance(sl, dict) else []:
                if isinstance(src, dict) and isinstance(src.get("model"), str):
                    src["model"] = _relative_to(src["model"], p.parent)
    recipe = MergeRecipe.from_dict(data, source=str(p))
    if plugins is not None:
        check_recipe(recipe, plugins)
    return recipe


def _relative_to(model: str, recipe_dir: Path) -> str:
    candidate = recipe_dir / model
    if not Path(model).is_absolute() and not Path(model).exists() and candidate.exists():
        return str(candidate)
    return model


# ---------------------------------------------------------------------- parameter validation


def get_operator(name: str, plugins: Plugins, key: str = "merge_method") -> type[MergeOperator]:
    """The operator class registered as ``name`` (a recipe's ``merge_method``, a plan's
    operator); unknown: a ConfigError at ``key`` with did-you-mean."""
    try:
        return plugins.operators.get(name)
    except RegistryError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def _check_value(spec: ParamSpec, value: Any, where: str) -> None:
    if isinstance(value, bool) or isinstance(value, (int, float)):
        spec.check(value, where)
    elif isinstance(value, Mapping):
        _check_value(spec, [value], where)
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            if isinstance(v, Mapping):
                unknown = set(v) - {"filter", "value"}
                if unknown or "value" not in v:
                    raise ConfigError(
                        f"{where}[{i}]: a filter entry is `{{filter: <kind or name part>, value: ...}}`, "
                        f"got {dict(v)!r}"
                    )
                if v.get("filter") is not None and not isinstance(v["filter"], str):
                    raise ConfigError(f"{where}[{i}].filter: must be a string, got {v['filter']!r}")
                _check_value(spec, v["value"], f"{where}[{i}].value")
            elif isinstance(v, (int, float)):
                spec.check(v, f"{where}[{i}]")
            else:
                raise ConfigError(f"{where}[{i}]: expected a number or a {{filter, value}} entry, got {v!r}")
    else:
        raise ConfigError(
            f"{where}: expected a number, a list of numbers (a gradient across layers) or a list of "
            f"{{filter, value}} entries, got {value!r}"
        )


def _check_section(
    params: Mapping[str, Any] | None, op: type[MergeOperator], where: str, per_model: bool
) -> None:
    declared = {s.name: s for s in op.params}
    for key, value in (params or {}).items():
        spec = declared.get(key)
        if spec is None:
            names = sorted(declared)
            raise ConfigError(
                f"{where}.{key}: {op.name!r} has no parameter {key!r};{_did_you_mean(key, names)} "
                f"its parameters are: {', '.join(names) or '(none)'}"
            )
        if per_model and spec.scope is ParamScope.GLOBAL:
            raise ConfigError(
                f"{where}.{key}: {key!r} is a global parameter of {op.name!r}; move it to the "
                "top-level `parameters:`"
            )
        _check_value(spec, value, f"{where}.{key}")


def check_recipe(recipe: MergeRecipe, plugins: Plugins) -> type[MergeOperator]:
    """Check a recipe against its operator's declared parameters; return the operator class.

    Checks: the operator exists; every parameter name is declared (did-you-mean otherwise) and
    in scope; every value is in range; required parameters are given; the number of models and
    the base model fit the operator.

    Raises:
        ConfigError: naming the key path, e.g. ``models[1].parameters.density``.
    """
    if recipe.slices is not None:
        return check_slices(recipe, plugins)
    op = get_operator(recipe.merge_method, plugins)
    _check_section(recipe.parameters, op, "parameters", per_model=False)
    sources, _ = recipe.sources(op)
    for i, m in enumerate(recipe.models):
        _check_section(m.parameters, op, f"models[{i}].parameters", per_model=True)
    glob = recipe.parameters or {}
    for spec in op.params:
        if spec.default is not None or spec.name in glob:
            continue
        if spec.scope is ParamScope.GLOBAL:
            raise ConfigError(f"parameters.{spec.name}: required by {op.name!r} (no default); add it")
        for src in sources:
            if spec.name not in src.parameters:
                raise ConfigError(
                    f"{src.where}.{spec.name}: required by {op.name!r} (no default); give it for "
                    f"model {src.ref.name!r} or once under the top-level `parameters:`"
                )
    if op.requires_base and recipe.base_model is None:
        raise ConfigError(f"base_model: {op.name!r} needs a base model (task vectors are model - base); add one")
    n = len(sources)
    if n < op.min_models or (op.max_models is not None and n > op.max_models):
        limit = f"{op.min_models}..{op.max_models if op.max_models is not None else 'any'}"
        raise ConfigError(
            f"models: {op.name!r} takes {limit} source models (besides the base), the recipe gives {n}"
        )
    return op
