"""Architectures as data (issue 21.3): each shipped layout file against a tiny random model built
from transformers' own config class, an unknown family's error, and a user's layout directory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from evomm_hf.adapter import HFCausalLMAdapter
from evomm_hf.families import LAYOUT_DIR, LAYOUTS_ENV, layouts

from evomm.adapters import ModelRef
from evomm.errors import CheckpointError
from evomm.layout import ModuleKind

_SMALL = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
              bos_token_id=0, eos_token_id=1, pad_token_id=2)


def _config(family: str):  # type: ignore[no-untyped-def]
    import transformers as tr

    classes = {"llama": tr.LlamaConfig, "mistral": tr.MistralConfig, "qwen2": tr.Qwen2Config,
               "qwen3": tr.Qwen3Config, "gemma2": tr.Gemma2Config, "gemma3": tr.Gemma3TextConfig,
               "phi3": tr.Phi3Config}
    extra = {"head_dim": 8} if family in ("qwen3", "gemma2", "gemma3") else {}
    return classes[family](**_SMALL, **extra)


def _save(family: str, out: Path) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_config(family))
    model.save_pretrained(out)
    return model


def _expected_kind(model: torch.nn.Module, name: str) -> ModuleKind:
    """The kind of parameter ``name`` judged from transformers' module object, not from the file."""
    module = model.get_submodule(name.rsplit(".", 1)[0])
    if isinstance(module, torch.nn.Embedding):
        return ModuleKind.EMBEDDING
    if "Norm" in type(module).__name__:
        return ModuleKind.NORM
    if name.startswith("lm_head"):
        return ModuleKind.HEAD
    path = name.split(".")
    return ModuleKind.ATTENTION if "self_attn" in path else ModuleKind.MLP


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3"])
def test_layout_file_describes_transformers_model(tmp_path: Path, family: str) -> None:
    model = _save(family, tmp_path / family)
    ck = HFCausalLMAdapter().open(ModelRef("m", str(tmp_path / family)))
    assert ck.family.family == family
    params = dict(model.named_parameters())  # the tied head is de-duplicated away
    assert set(ck.layout) == set(params)
    for name, info in ck.layout.items():
        assert info.kind is _expected_kind(model, name), name
        assert (info.layer is not None) == name.startswith("model.layers."), name
    # the file's norm_offset is the applied scale: norm(x; w) = unit(x) * (offset + w), so
    # norm(x; 0) = offset * (norm(x; 1) - norm(x; 0)) (Gemma: 1 + w, the others: w)
    norm = model.get_submodule("model.norm")
    x = torch.randn(2, 32)
    with torch.no_grad():
        norm.weight.fill_(0.0)
        at0 = norm(x)
        norm.weight.fill_(1.0)
        assert torch.allclose(at0, ck.norm_offset * (norm(x) - at0), atol=1e-5)


def test_every_family_has_a_tested_file() -> None:
    families = {lay.family for lay in layouts().values()}
    assert families == {"llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3"}


def _mystery(tmp_path: Path) -> Path:
    d = tmp_path / "mystery"
    _save("llama", d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "mystery"
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def test_unknown_family_says_how_to_add_a_layout(tmp_path: Path) -> None:
    d = _mystery(tmp_path)
    with pytest.raises(CheckpointError, match=r"no layout for model_type 'mystery'.*llama\.yaml.*EVOMM_LAYOUTS"):
        HFCausalLMAdapter().open(ModelRef("m", str(d)))


def test_user_layout_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = _mystery(tmp_path)
    extra = tmp_path / "layouts"
    extra.mkdir()
    text = (LAYOUT_DIR / "llama.yaml").read_text().replace("family: llama", "family: mystery")
    (extra / "mystery.yaml").write_text(text.replace("model_types: [llama]", "model_types: [mystery]"))
    monkeypatch.setenv(LAYOUTS_ENV, str(extra))
    ck = HFCausalLMAdapter().open(ModelRef("m", str(d)))
    assert ck.family.family == "mystery" and ck.num_layers == 2


def test_tensor_missing_from_the_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "llama"
    _save("llama", d)
    extra = tmp_path / "layouts"
    extra.mkdir()
    text = (LAYOUT_DIR / "llama.yaml").read_text()
    (extra / "llama.yaml").write_text(text.replace("mlp.gate_proj, ", ""))
    monkeypatch.setenv(LAYOUTS_ENV, str(extra))
    with pytest.raises(CheckpointError, match=r"'model.layers.0.mlp.gate_proj.weight' is not in the llama layout"):
        HFCausalLMAdapter().open(ModelRef("m", str(d)))
    shutil.rmtree(extra)
