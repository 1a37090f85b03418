"""Recipes (schema, mergekit keys, errors) and plans (parameter resolution per tensor), without
weights: the checkpoints here are layouts only."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

from evomm import hookimpl
from evomm.adapters import Checkpoint, ModelRef
from evomm.errors import CheckpointError, ConfigError, IncompatibleModelsError
from evomm.layout import ModuleKind, TensorInfo, classify_lm_tensor
from evomm.operators import MergeOperator
from evomm.params import ParamScope, ParamSpec
from evomm.plan import build_plan
from evomm.plugins import load_plugins
from evomm.recipe import MergeRecipe, check_recipe, load_recipe

G, M = ParamScope.GLOBAL, ParamScope.PER_MODEL


class WeightedSum(MergeOperator):
    """A test operator: sum_i weight_i * t_i (divided by sum of weights when normalize)."""

    name = "t_linear"
    params = (
        ParamSpec("weight", M, -1.0, 2.0, None, "weight"),
        ParamSpec("normalize", G, 0.0, 1.0, 1.0, "normalize", kind="bool"),
    )

    def merge(self, tensors, base, global_params, model_params, ctx):  # type: ignore[no-untyped-def]
        w = [p["weight"] for p in model_params]
        out = sum(wi * t for wi, t in zip(w, tensors))
        return out / sum(w) if global_params["normalize"] else out


class TaskSum(MergeOperator):
    """A test operator needing a base: base + lambda * sum_i weight_i * density_i * (t_i - base)."""

    name = "t_task"
    requires_base = True
    params = (
        ParamSpec("weight", M, -1.0, 2.0, None, "weight"),
        ParamSpec("density", M, 0.0, 1.0, 1.0, "density"),
        ParamSpec("lambda", G, 0.0, 5.0, 1.0, "scale"),
    )

    def merge(self, tensors, base, global_params, model_params, ctx):  # type: ignore[no-untyped-def]
        delta = sum(p["weight"] * p["density"] * (t - base) for p, t in zip(model_params, tensors))
        return base + global_params["lambda"] * delta


class TestOps:
    @hookimpl
    def evomm_register_merge_operators(self, registry):  # type: ignore[no-untyped-def]
        registry.add(WeightedSum)
        registry.add(TaskSum)


@pytest.fixture(scope="module")
def plugins():  # type: ignore[no-untyped-def]
    return load_plugins(extra=[TestOps()], autoload=False)


LAYERS = 5


def lm_layout(num_layers: int = LAYERS, hidden: int = 4, vocab: int = 10, extra: tuple[str, ...] = ()):
    names = ["model.embed_tokens.weight"]
    for i in range(num_layers):
        names += [f"model.layers.{i}.self_attn.q_proj.weight", f"model.layers.{i}.mlp.up_proj.weight",
                  f"model.layers.{i}.input_layernorm.weight"]
    names += ["model.norm.weight", "lm_head.weight", *extra]
    out = {}
    for n in names:
        kind, layer = classify_lm_tensor(n)
        if n.startswith("vision_tower"):
            kind, layer = ModuleKind.VISION, None
        shape = (vocab, hidden) if kind in (ModuleKind.EMBEDDING, ModuleKind.HEAD) else (hidden, hidden)
        out[n] = TensorInfo(n, n, shape, "float32", kind, layer)
    return out


class FakeCheckpoint(Checkpoint):
    """Layout only; reading is not needed to plan."""

    def __init__(self, alias: str, layout: Mapping[str, TensorInfo], num_layers: int = LAYERS) -> None:
        self.ref = ModelRef(alias, f"/fake/{alias}")
        self._layout = dict(layout)
        self._n = num_layers

    layout = property(lambda self: self._layout)  # type: ignore[assignment]
    num_layers = property(lambda self: self._n)  # type: ignore[assignment]

    def read(self, name: str) -> torch.Tensor:
        raise AssertionError("planning must not read tensors")

    def load_model(self, dtype=None, device="cpu", weights=None):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def model_tensors(self, model):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def writer(self, out_dir, max_shard_bytes=0):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def save_metadata(self, out_dir):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def handle(self, model, **options):  # type: ignore[no-untyped-def]
        raise NotImplementedError


def recipe(**kw: Any) -> MergeRecipe:
    data: dict[str, Any] = {
        "merge_method": "t_linear",
        "models": [{"model": "/m/a", "parameters": {"weight": 0.3}}, {"model": "/m/b", "parameters": {"weight": 0.7}}],
    }
    data.update(kw)
    return MergeRecipe.from_dict(data)


def cks(*aliases: str, **layouts: Mapping[str, TensorInfo]) -> dict[str, Checkpoint]:
    return {a: FakeCheckpoint(a, layouts.get(a, lm_layout())) for a in aliases}


def params_of(plan, name: str) -> tuple[dict[str, float], list[dict[str, float]]]:  # type: ignore[no-untyped-def]
    step = next(s for s in plan.steps if s.name == name)
    return dict(step.global_params), [dict(p) for p in step.model_params]


# ------------------------------------------------------------------------------- schema


def test_operator_alias_and_defaults() -> None:
    r = MergeRecipe.from_dict({"operator": "t_linear", "models": [{"model": "x/a"}, {"model": "y/a"}]})
    assert r.merge_method == "t_linear"
    assert r.aliases() == ["a", "a-2"]
    assert r.dtype == "float32" and r.donor() == "a"


def test_dtype_aliases_and_bad_dtype() -> None:
    assert recipe(dtype="bf16").dtype == "bfloat16"
    with pytest.raises(ConfigError, match=r"dtype: 'int4'.*bfloat16"):
        recipe(dtype="int4")


@pytest.mark.parametrize(
    ("key", "value", "pattern"),
    [
        ("slices", [], r"slices: expected a non-empty list"),  # slices are supported (issue 20)
        ("modules", {}, r"`modules`"),
        ("chat_template", "chatml", r"`chat_template`"),  # tokenizer/union: supported (issue 20)
    ],
)
def test_unsupported_mergekit_keys_are_refused(key: str, value: Any, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        recipe(**{key: value})


def test_unknown_key_gets_path_and_did_you_mean() -> None:
    with pytest.raises(ConfigError, match=r"models\[1\]\.paramters: unknown key did you mean 'parameters'"):
        MergeRecipe.from_dict({"merge_method": "x", "models": [{"model": "a"}, {"model": "b", "paramters": {}}]})
    with pytest.raises(ConfigError, match=r"merge_methd: unknown key did you mean 'merge_method'"):
        MergeRecipe.from_dict({"merge_methd": "x", "models": [{"model": "a"}]})


def test_tokenizer_source_and_base_resolution() -> None:
    r = recipe(base_model="/m/a", tokenizer_source="b", merge_method="t_task")
    assert r.base_ref().name == "a" and r.donor() == "b"  # type: ignore[union-attr]
    srcs, base = r.sources(TaskSum)                      # a task method gets the base apart
    assert [s.ref.name for s in srcs] == ["b"] and base.name == "a"  # type: ignore[union-attr]
    r_b = recipe(base_model="/m/b")                      # linear: the base is a source, put first
    srcs, base = r_b.sources(WeightedSum)
    assert [s.ref.name for s in srcs] == ["b", "a"] and base is None
    assert srcs[0].where == "models[1].parameters" and srcs[0].parameters == {"weight": 0.7}
    r2 = recipe(base_model="/m/base", tokenizer_source="base")
    assert r2.base_ref() == ModelRef("base", "/m/base") and r2.donor() == "base"
    with pytest.raises(ConfigError, match=r"tokenizer_source: 'c' names no model"):
        recipe(tokenizer_source="c")


def test_malformed_yaml_names_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("merge_method: linear\nmodels:\n  - model: a\n   parameters: {weight: 1}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:4:\d+: malformed YAML"):
        load_recipe(f)


def test_load_recipe_paths_relative_to_recipe(tmp_path: Path) -> None:
    (tmp_path / "models" / "a").mkdir(parents=True)
    f = tmp_path / "r.yaml"
    f.write_text("merge_method: t_linear\nmodels:\n  - model: models/a\n    parameters: {weight: 1}\n")
    assert load_recipe(f).models[0].model == str(tmp_path / "models" / "a")


# ------------------------------------------------------------------------------- checks


def test_unknown_operator_did_you_mean(plugins) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=r"merge_method: unknown merge operator 't_lineer'; did you mean 't_linear'"):
        check_recipe(recipe(merge_method="t_lineer"), plugins)


def test_unknown_parameter_did_you_mean(plugins) -> None:  # type: ignore[no-untyped-def]
    r = recipe(models=[{"model": "a", "parameters": {"weight": 1}}, {"model": "b", "parameters": {"wieght": 1}}])
    with pytest.raises(ConfigError, match=r"models\[1\]\.parameters\.wieght: .*did you mean 'weight'"):
        check_recipe(r, plugins)


def test_out_of_range_value_names_key_path(plugins) -> None:  # type: ignore[no-untyped-def]
    r = recipe(merge_method="t_task", base_model="/m/base", models=[
        {"model": "a", "parameters": {"weight": 1, "density": [0.1, {"x": 1}]}}])
    with pytest.raises(ConfigError, match=r"models\[0\]\.parameters\.density\[1\]"):
        check_recipe(r, plugins)
    r = recipe(merge_method="t_task", base_model="/m/base", models=[
        {"model": "a", "parameters": {"weight": 1, "density": [{"filter": "mlp", "value": 1.5}]}}])
    with pytest.raises(ConfigError, match=r"density\[0\]\.value: density=1.5 is outside"):
        check_recipe(r, plugins)


def test_required_and_scope_errors(plugins) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=r"models\[1\]\.parameters\.weight: required by 't_linear'"):
        check_recipe(recipe(models=[{"model": "a", "parameters": {"weight": 1}}, {"model": "b"}]), plugins)
    with pytest.raises(ConfigError, match=r"models\[0\]\.parameters\.normalize: .*global parameter"):
        check_recipe(recipe(models=[{"model": "a", "parameters": {"weight": 1, "normalize": 0}}]), plugins)
    with pytest.raises(ConfigError, match=r"base_model: 't_task' needs a base model"):
        check_recipe(recipe(merge_method="t_task"), plugins)
    # a global value is a fallback for a per-model parameter (mergekit's precedence)
    check_recipe(recipe(models=[{"model": "a"}, {"model": "b"}], parameters={"weight": 0.5}), plugins)


# ------------------------------------------------------------------------------- plans


def test_plan_resolves_gradients_and_filters_per_tensor(plugins) -> None:  # type: ignore[no-untyped-def]
    r = recipe(
        models=[
            {"model": "/m/a", "parameters": {"weight": [0.0, 1.0]}},
            {"model": "/m/b", "parameters": {"weight": [{"filter": "mlp", "value": [1.0, 0.0]}, {"value": 0.25}]}},
        ],
        parameters={"normalize": 0},
    )
    plan = build_plan(r, cks("a", "b"), plugins)
    assert [s.name for s in plan.steps] == list(lm_layout())
    last = LAYERS - 1
    for layer in range(LAYERS):
        t = layer / last  # mergekit's position in the block stack
        g, mp = params_of(plan, f"model.layers.{layer}.mlp.up_proj.weight")
        assert g == {"normalize": 0.0}
        assert mp[0]["weight"] == pytest.approx(t) and mp[1]["weight"] == pytest.approx(1 - t)
        _, mp = params_of(plan, f"model.layers.{layer}.self_attn.q_proj.weight")
        assert mp[0]["weight"] == pytest.approx(t) and mp[1]["weight"] == 0.25
    _, mp = params_of(plan, "lm_head.weight")  # outside the stack: t = 0
    assert mp[0]["weight"] == 0.0 and mp[1]["weight"] == 0.25
    assert plan.donor == "a" and plan.base is None and [m.name for m in plan.models] == ["a", "b"]


def test_plan_defaults_fallbacks_and_digest(plugins) -> None:  # type: ignore[no-untyped-def]
    r = recipe(merge_method="t_task", base_model="/m/base",
               models=[{"model": "/m/a", "parameters": {"density": 0.5}}, {"model": "/m/b"}],
               parameters={"weight": 0.8, "lambda": [1.0, 2.0]})
    plan = build_plan(r, cks("a", "b", "base"), plugins)
    g, mp = params_of(plan, f"model.layers.{LAYERS - 1}.mlp.up_proj.weight")
    assert g == {"lambda": 2.0}
    assert mp == [{"density": 0.5, "weight": 0.8}, {"density": 1.0, "weight": 0.8}]
    assert plan.base.name == "base" and plan.donor == "base"  # type: ignore[union-attr]
    again = build_plan(r, cks("a", "b", "base"), plugins)
    assert again == plan and again.digest() == plan.digest() and hash(again) == hash(plan)
    other = build_plan(r.model_copy(update={"seed": 1}), cks("a", "b", "base"), plugins)
    assert other.digest() != plan.digest()


def test_plan_missing_tensor_and_shape_mismatch(plugins) -> None:  # type: ignore[no-untyped-def]
    short = lm_layout()
    del short["model.layers.3.mlp.up_proj.weight"]
    with pytest.raises(CheckpointError, match=r"'model.layers.3.mlp.up_proj.weight' is missing from model 'b'"):
        build_plan(recipe(), cks("a", "b", b=short), plugins)
    with pytest.raises(IncompatibleModelsError, match=r"'model.embed_tokens.weight' has shape \(10, 8\) in model 'b'"):
        build_plan(recipe(), cks("a", "b", b=lm_layout(hidden=8)), plugins)


def test_plan_copies_donor_only_tensors(plugins) -> None:  # type: ignore[no-untyped-def]
    vlm = lm_layout(extra=("vision_tower.encoder.weight",))
    plan = build_plan(recipe(), cks("a", "b", a=vlm), plugins)
    step = next(s for s in plan.steps if s.name == "vision_tower.encoder.weight")
    assert step.action == "copy" and step.source == "a" and step.kind is ModuleKind.VISION
    # when every parent has it, it is merged like any other tensor
    plan = build_plan(recipe(), cks("a", "b", a=vlm, b=vlm), plugins)
    assert next(s for s in plan.steps if s.name.startswith("vision")).action == "merge"


def test_filter_without_fallback_on_required_parameter(plugins) -> None:  # type: ignore[no-untyped-def]
    r = recipe(models=[{"model": "/m/a", "parameters": {"weight": [{"filter": "mlp", "value": 1}]}},
                       {"model": "/m/b", "parameters": {"weight": 1}}])
    with pytest.raises(ConfigError, match=r"models\[0\]\.parameters\.weight.*'model.embed_tokens.weight' of model 'a'"):
        build_plan(r, cks("a", "b"), plugins)


@pytest.mark.parametrize("path", sorted(Path(__file__).parents[1].glob("configs/merge-*.yaml")))
def test_example_configs_validate(path: Path) -> None:
    from evomm.plugins import get_plugins

    recipe = load_recipe(path, get_plugins())
    assert recipe.models and recipe.donor() in recipe.aliases() + ["base"]
