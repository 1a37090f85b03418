"""``mergekit.yaml`` of an export (:func:`evomm.export.to_mergekit`): the operator says whether
mergekit has it (``MergeOperator.mergekit_name``) and the donor model's checkpoint says which
substring of its tensor names a module kind is (``Checkpoint.kind_substring``); export.py names
no operator and no architecture."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from evomm.export import to_mergekit
from evomm.plugins import get_plugins, load_plugins
from tests.tiny_models import make_tiny_model, perturb_model


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("mk")
    base = make_tiny_model(root / "base", "llama", seed=40)
    return {"base": str(base), "a": str(perturb_model(base, root / "a", seed=41)),
            "b": str(perturb_model(base, root / "b", seed=42))}


def _recipe(models: dict[str, str], method: str, **parameters) -> dict:
    return {
        "merge_method": method,
        "base_model": models["base"],
        "models": [{"model": models["a"], "parameters": {"weight": 0.5}},
                   {"model": models["b"], "parameters": {"weight": 0.5}}],
        "parameters": parameters,
        "dtype": "float32",
    }


def test_a_filter_on_a_kind_becomes_the_donors_name_substring(models) -> None:
    density = [{"filter": "attention", "value": 0.3}, {"filter": "mlp", "value": 0.6},
               {"filter": "embedding", "value": 1.0}, {"filter": "q_proj", "value": 0.4}, {"value": 0.9}]
    mk = to_mergekit(_recipe(models, "ties", density=density), get_plugins())
    assert mk is not None and mk["merge_method"] == "ties"
    # kinds become the Llama names' substrings; a filter that is no kind is kept as written
    assert [d.get("filter") for d in mk["parameters"]["density"]] == ["self_attn", "mlp", "embed_tokens", "q_proj", None]
    assert mk["base_model"] == models["base"] and [m["model"] for m in mk["models"]] == [models["a"], models["b"]]


def test_the_operator_says_whether_mergekit_has_it(models, tmp_path: Path) -> None:
    plugins = get_plugins()
    for name, cls in plugins.operators.items():  # the built-in operators all have mergekit's name
        # ... but karcher, whose evomm weights mergekit's karcher rejects
        assert cls.mergekit_name == (None if name == "karcher" else name)
    (tmp_path / "ops.py").write_text(textwrap.dedent("""
        from evomm import hookimpl
        from evomm_ops.linear import Linear

        class Mine(Linear):
            name = "my_mean"
            mergekit_name = None

        class Renamed(Linear):
            name = "my_linear"
            mergekit_name = "linear"

        @hookimpl
        def evomm_register_merge_operators(registry):
            registry.add(Mine)
            registry.add(Renamed)
    """))
    mine = load_plugins([tmp_path])
    assert to_mergekit(_recipe(models, "my_mean"), mine) is None
    assert to_mergekit(_recipe(models, "my_linear"), mine)["merge_method"] == "linear"
    assert to_mergekit(_recipe(models, "linear"), mine)["merge_method"] == "linear"
