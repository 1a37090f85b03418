"""Registry, plugin manager and parameter resolution."""

from __future__ import annotations

import textwrap

import pytest

from evomm.errors import PluginError, RegistryError
from evomm.layout import ModuleKind, TensorInfo
from evomm.params import resolve_value
from evomm.plugins import load_plugins
from evomm.registry import Registry


class _Named:
    name = "ties"


def test_registry_rejects_duplicates_and_suggests_names() -> None:
    reg: Registry[type] = Registry("merge operator")
    reg.add(_Named)
    with pytest.raises(RegistryError, match="registered twice"):
        reg.add(_Named)
    with pytest.raises(RegistryError, match=r"did you mean 'ties'\?.*available: ties"):
        reg.get("tie")


def test_one_file_plugin_loads_and_misspelt_hook_is_an_error(tmp_path) -> None:
    good = tmp_path / "good"
    good.mkdir()
    (good / "meanop.py").write_text(
        textwrap.dedent(
            """
            import torch
            from evomm import hookimpl
            from evomm.operators import MergeOperator

            class Mean(MergeOperator):
                name = "test-mean"
                def merge(self, tensors, base, global_params, model_params, ctx):
                    return torch.stack(list(tensors)).mean(0)

            @hookimpl
            def evomm_register_merge_operators(registry):
                registry.add(Mean)
            """
        )
    )
    plugins = load_plugins([good], autoload=False)
    assert plugins.operators.get("test-mean").name == "test-mean"
    assert [p.name for p in plugins.loaded] == ["meanop"]

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "typo.py").write_text(
        "from evomm import hookimpl\n@hookimpl\ndef evomm_register_merge_operator(registry):\n    pass\n"
    )
    with pytest.raises(PluginError, match="evomm_register_merge_operator"):
        load_plugins([bad], autoload=False)


def test_disable_env_skips_a_plugin(tmp_path, monkeypatch) -> None:
    (tmp_path / "skipme.py").write_text("raise RuntimeError('must not be imported')\n")
    monkeypatch.setenv("EVOMM_DISABLE_PLUGINS", "skipme")
    plugins = load_plugins([tmp_path], autoload=False)
    assert plugins.loaded == []


def _info(name: str, kind: ModuleKind, layer: int | None) -> TensorInfo:
    return TensorInfo(name, name, (2, 2), "float32", kind, layer)


def test_gradient_and_filters_follow_mergekit_positions() -> None:
    # mergekit: t = layer / (num_layers - 1); values interpolated linearly between list entries.
    mlp3 = _info("model.layers.3.mlp.up_proj.weight", ModuleKind.MLP, 3)
    assert resolve_value([0.0, 1.0, 0.0], mlp3, num_layers=5, where="w") == pytest.approx(0.5)
    embed = _info("model.embed_tokens.weight", ModuleKind.EMBEDDING, None)
    assert resolve_value([0.2, 1.0], embed, num_layers=5, where="w") == pytest.approx(0.2)
    filters = [{"filter": "self_attn", "value": 0.1}, {"filter": "mlp", "value": [1.0, 2.0]}]
    assert resolve_value(filters, mlp3, 5, "w") == pytest.approx(1.75)
    attn = _info("model.layers.0.self_attn.q_proj.weight", ModuleKind.ATTENTION, 0)
    assert resolve_value(filters, attn, 5, "w") == pytest.approx(0.1)
    assert resolve_value(filters, embed, 5, "w") is None
