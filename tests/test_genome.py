"""Genome derivation from operator declarations and a layout; genes counted by hand."""

from __future__ import annotations

import numpy as np
import pytest

from evomm.adapters import ModelRef
from evomm.errors import ConfigError
from evomm.evolve_recipe import MergeTemplate, parse_recipe
from evomm.genome import apply_genome, derive_genome
from evomm.layout import TensorInfo, classify_lm_tensor
from evomm.operators import MergeOperator
from evomm.params import ParamScope, ParamSpec, resolve_value


class FakeTA(MergeOperator):
    name = "fake_ta"
    requires_base = True
    params = (
        ParamSpec("weight", ParamScope.PER_MODEL, -2.0, 3.0, None, "task vector weight"),
        ParamSpec("density", ParamScope.PER_MODEL, 0.0, 1.0, 1.0, "kept fraction"),
        ParamSpec("lambda", ParamScope.GLOBAL, 0.0, 2.0, 1.0, "scale"),
        ParamSpec("normalize", ParamScope.GLOBAL, 0.0, 1.0, 0.0, "normalise", kind="bool", evolvable=False),
    )

    def merge(self, tensors, base, global_params, model_params, ctx):  # pragma: no cover
        raise NotImplementedError


def _layout(num_layers: int) -> dict[str, TensorInfo]:
    names = ["model.embed_tokens.weight"]
    for i in range(num_layers):
        names += [f"model.layers.{i}.self_attn.q_proj.weight", f"model.layers.{i}.self_attn.o_proj.weight",
                  f"model.layers.{i}.mlp.up_proj.weight", f"model.layers.{i}.input_layernorm.weight"]
    names += ["model.norm.weight", "lm_head.weight"]
    out = {}
    for n in names:
        kind, layer = classify_lm_tensor(n)
        out[n] = TensorInfo(n, n, (2, 2), "float32", kind, layer)
    return out


def _template(**params) -> MergeTemplate:
    return MergeTemplate(method="fake_ta", parameters=params)


EV = {"evolve": {"low": -1.0, "high": 2.0}}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"weight": EV}, 2),                                             # per model, global: 1 x 2 parents
        ({"weight": EV | {"granularity": "per_layer"}}, 2 * (3 + 1)),     # 3 blocks + rest, x 2 parents
        ({"weight": EV | {"granularity": {"per_layer_group": 2}}}, 2 * (2 + 1)),  # groups {0,1},{2} + rest
        ({"weight": EV | {"granularity": {"gradient": 4}}}, 2 * 4),       # 4 control points per parent
        ({"weight": EV | {"shared": True}}, 1),                          # one gene for both parents
        ({"lambda": {"evolve": True}}, 1),                               # a global parameter
        ({"weight": EV | {"kinds": ["attention", "mlp"]}}, 2 * 3),        # attention, mlp, rest
        ({"weight": EV | {"granularity": "per_layer", "kinds": ["attention"]}}, 2 * (3 * 2 + 1)),
        ({"weight": EV, "density": {"evolve": {"low": 0.1, "high": 1.0}, "granularity": "per_layer"},
          "lambda": {"evolve": True}, "normalize": 0}, 2 + 2 * 4 + 1),
    ],
)
def test_gene_counts(params, expected):
    genome = derive_genome(_template(**params), FakeTA, ["ja", "math"], _layout(3), 3)
    assert len(genome.genes) == expected
    assert len({g.name for g in genome.genes}) == expected  # names are unique


def test_bounds_come_from_declaration_when_evolve_true():
    genome = derive_genome(_template(**{"lambda": {"evolve": True}}), FakeTA, ["a"], _layout(2), 2)
    (g,) = genome.genes
    assert (g.low, g.high, g.init) == (0.0, 2.0, 1.0)


def test_decode_per_layer_resolves_to_each_gene():
    layout = _layout(3)
    t = _template(weight=EV | {"granularity": "per_layer"}, **{"lambda": 1.0})
    genome = derive_genome(t, FakeTA, ["ja", "math"], layout, 3)
    x = np.linspace(0, 1, len(genome.genes))
    glob, per = apply_genome(t, FakeTA, genome, x, ["ja", "math"])
    assert glob == {"lambda": 1.0}
    values = genome.values(x)
    # gene order: ja layers 0..2, ja rest, math layers 0..2, math rest
    for m, alias in enumerate(["ja", "math"]):
        for name, info in layout.items():
            got = resolve_value(per[alias]["weight"], info, 3, "w")
            slot = info.layer if info.layer is not None else 3
            assert got == pytest.approx(values[m * 4 + slot], abs=1e-5), (alias, name)


def test_kind_split_per_layer_resolves_exactly():
    layout = _layout(2)
    t = _template(weight=EV | {"granularity": "per_layer", "kinds": ["attention", "mlp"]})
    genome = derive_genome(t, FakeTA, ["a"], layout, 2)
    names = [g.name for g in genome.genes]
    assert names == ["weight[a].layers.0.attention", "weight[a].layers.0.mlp", "weight[a].layers.0.other",
                     "weight[a].layers.1.attention", "weight[a].layers.1.mlp", "weight[a].layers.1.other",
                     "weight[a].rest"]
    x = np.arange(len(names)) / 10
    _, per = apply_genome(t, FakeTA, genome, x, ["a"])
    vals = dict(zip(names, genome.values(x)))
    for info in layout.values():
        if info.layer is None:
            key = "weight[a].rest"
        else:
            suffix = {"attention": "attention", "mlp": "mlp"}.get(info.kind.value, "other")
            key = f"weight[a].layers.{info.layer}.{suffix}"
        assert resolve_value(per["a"]["weight"], info, 2, "w") == pytest.approx(vals[key], abs=1e-5)


def test_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"merge.parameters.wieght.*declares"):
        derive_genome(_template(wieght=EV), FakeTA, ["a"], _layout(2), 2)
    with pytest.raises(ConfigError, match=r"merge.parameters.density.evolve.*valid range"):
        derive_genome(_template(density={"evolve": {"low": 0.0, "high": 5.0}}), FakeTA, ["a"], _layout(2), 2)
    with pytest.raises(ConfigError, match="cannot be evolved"):
        derive_genome(_template(normalize={"evolve": True}), FakeTA, ["a"], _layout(2), 2)
    with pytest.raises(ConfigError, match="nothing to evolve"):
        derive_genome(_template(weight=1.0), FakeTA, ["a"], _layout(2), 2)


def test_recipe_errors_name_key_path_and_value():
    base = {"parents": [{"name": "a", "path": "x"}], "merge": {"method": "linear"},
            "objectives": [{"name": "o", "task": "t"}]}
    with pytest.raises(ConfigError, match=r"algorithm.name.*'nsga9'"):
        parse_recipe(base | {"algorithm": {"name": "nsga9"}})
    with pytest.raises(ConfigError, match=r"objectives.0.*constraint"):
        parse_recipe(base | {"objectives": [{"name": "o", "task": "t", "constraint": "at least 3"}]})
    with pytest.raises(ConfigError, match=r"budgett.*unknown key"):
        parse_recipe(base | {"budgett": {}})
    # parents are ModelRefs (the one model-reference type): their keys are checked like any other
    with pytest.raises(ConfigError, match=r"parents\[0\]\.pth: unknown key"):
        parse_recipe(base | {"parents": [{"name": "a", "pth": "x"}]})
    with pytest.raises(ConfigError, match=r"parents\[0\]\.path: required key is missing"):
        parse_recipe(base | {"parents": [{"name": "a"}]})
    parsed = parse_recipe(base | {"parents": [{"name": "a", "path": "x", "revision": "v1"}]})
    assert parsed.parents[0] == ModelRef("a", "x", revision="v1")
    with pytest.raises(ConfigError, match="cmaes optimises one objective"):
        parse_recipe(base | {"algorithm": {"name": "cmaes"},
                             "objectives": [{"name": "o", "task": "t"}, {"name": "p", "task": "t"}]})


CASES = {
    "ties, per-layer weight and density": ("ties", {
        "weight": {"evolve": {"low": 0.0, "high": 1.0}, "granularity": "per_layer"},
        "density": {"evolve": {"low": 0.1, "high": 1.0}, "granularity": {"gradient": 3}},
    }),
    "task arithmetic, per-kind weight, fixed lambda": ("task_arithmetic", {
        "weight": {"evolve": {"low": -0.5, "high": 1.5}, "granularity": "per_layer", "kinds": ["attention", "mlp"]},
    }),
    "linear, no base, shared weight": ("linear", {
        "weight": {"evolve": {"low": 0.0, "high": 1.0}, "granularity": "per_layer", "shared": True},
    }),
}


@pytest.mark.parametrize("case", list(CASES))
def test_decode_builds_the_plan_the_merge_recipe_builds(micro_zoo, tmp_path, case):
    """A candidate's plan comes straight from its values (issue 18.5); it must equal, digest
    included, the plan ``evomm merge`` builds from the candidate's merge recipe, whose digest is
    in archives and exports (the digest as the plan hashed before: dataclasses.asdict)."""
    import dataclasses
    import hashlib
    import json

    from evomm.plan import build_plan
    from evomm.plugins import get_plugins
    from evomm.ps_space import ParameterSpace
    from evomm.recipe import MergeRecipe
    from evomm.space import StageContext

    method, params = CASES[case]
    models = micro_zoo / "models"
    merge = {"method": method, "parameters": params}
    d = {
        "seed": 3, "parents": [{"name": "ja", "path": str(models / "ja")}, {"name": "math", "path": str(models / "math")}],
        "objectives": [{"name": "a", "task": "toy_ja_math"}],
        "stages": [{"name": "ps", "kind": "params", "merge": merge,
                    "algorithm": {"name": "random", "pop_size": 2}, "budget": {"generations": 1}}],
    }
    if method != "linear":
        d["base_model"] = {"name": "base", "path": str(models / "base")}
        merge["tokenizer_source"] = "base"
    rec = parse_recipe(d)
    plugins = get_plugins()
    ctx = StageContext(plugins=plugins, run_dir=tmp_path, recipe_dir=tmp_path, previous=[], dtype="float32", recipe=rec)
    space = ParameterSpace(rec, rec.stages[0], ctx)
    points = np.vstack([np.zeros(space.dim), np.ones(space.dim), np.random.default_rng(7).random((4, space.dim))])
    digests = set()
    for x in points:
        cand = space.decode(x)
        ref = build_plan(MergeRecipe.from_dict(space.recipe_for(x)), space.checkpoints, plugins)
        assert cand.plan == ref and cand.digest() == ref.digest()
        old = dataclasses.asdict(ref)
        for step in old["steps"]:
            step["kind"] = step["kind"].value
            if not step["pad"]:
                del step["pad"]
        del old["meta"], old["allow_nonfinite"], old["stack"], old["vocab"]  # left out when unset
        blob = json.dumps(old, sort_keys=True, separators=(",", ":"), default=str)
        assert cand.digest() == hashlib.sha256(blob.encode()).hexdigest()
        digests.add(cand.digest())
    assert len(digests) == len(points)
    space.close()
