"""The hf-causal-lm adapter and the safetensors reader/writer, on tiny local checkpoints."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from evomm_hf.adapter import HFCausalLMAdapter, HFCausalLMCheckpoint

from evomm.adapters import ModelRef
from evomm.errors import CheckpointError, IncompatibleModelsError, OfflineError
from evomm.hub import resolve_model_dir
from evomm.layout import ModuleKind
from evomm.safetensors_io import INDEX_FILE, SafetensorsIndex, ShardedSafetensorsWriter
from tests.tiny_models import config_dict, make_tiny_model, read_all


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hf")
    return {
        "llama": make_tiny_model(d / "llama", "llama", seed=0),
        "llama_sharded": make_tiny_model(d / "llama_sharded", "llama", seed=1, max_shard_size="20KB"),
        "qwen_tied": make_tiny_model(d / "qwen_tied", "qwen2", seed=2, tie_word_embeddings=True),
        "mistral": make_tiny_model(d / "mistral", "mistral", seed=3),
        "llama_vocab": make_tiny_model(d / "llama_vocab", "llama", seed=4, vocab_size=400),
        "pickle": make_tiny_model(d / "pickle", "llama", seed=5, pickle=True),
    }


def open_ck(path: Path, name: str = "m", **kw: object) -> HFCausalLMCheckpoint:
    return HFCausalLMAdapter().open(ModelRef(name, str(path), **kw))  # type: ignore[arg-type]


def test_detect(zoo: dict[str, Path]) -> None:
    assert HFCausalLMAdapter.detect(zoo["llama"], config_dict(zoo["llama"]))
    assert not HFCausalLMAdapter.detect(zoo["llama"], {"architectures": ["CLIPModel"]})


@pytest.mark.parametrize("key", ["llama", "llama_sharded", "mistral"])
def test_layout_is_canonical_and_reads_match_files(zoo: dict[str, Path], key: str) -> None:
    ck = open_ck(zoo[key])
    stored = read_all(zoo[key])
    assert set(ck.layout) == set(stored)
    assert ck.num_layers == 4 and ck.vocab_size == config_dict(zoo[key])["vocab_size"]
    info = ck.layout["model.layers.3.mlp.up_proj.weight"]
    assert (info.kind, info.layer) == (ModuleKind.MLP, 3)
    assert ck.layout["lm_head.weight"].kind is ModuleKind.HEAD
    assert list(ck.layout)[0] == "model.embed_tokens.weight"
    for name in ("model.layers.2.self_attn.k_proj.weight", "model.norm.weight"):
        assert torch.equal(ck.read(name), stored[name])


def test_tied_embeddings_have_no_head(zoo: dict[str, Path]) -> None:
    ck = open_ck(zoo["qwen_tied"])
    assert ck.tied and "lm_head.weight" not in ck.layout
    model = ck.load_model()
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert "lm_head.weight" not in ck.model_tensors(model)


def test_load_model_matches_from_pretrained_and_shares_storage(zoo: dict[str, Path]) -> None:
    from transformers import AutoModelForCausalLM

    ck = open_ck(zoo["llama"])
    model = ck.load_model(dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(zoo["llama"], dtype=torch.float32)
    ids = torch.tensor([[1, 5, 9, 11]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, ref(ids).logits)
    tensors = ck.model_tensors(model)
    tensors["model.norm.weight"].zero_()
    assert float(model.model.norm.weight.detach().abs().sum()) == 0.0
    new = {"model.norm.weight": torch.full_like(tensors["model.norm.weight"], 2.0)}
    assert torch.equal(ck.load_model(weights=new).model.norm.weight, new["model.norm.weight"])


def test_vocab_mismatch_names_both_sizes(zoo: dict[str, Path]) -> None:
    with pytest.raises(IncompatibleModelsError, match=r"vocabulary size 384 .* vocabulary size 400"):
        open_ck(zoo["llama"], "a").check_compatible(open_ck(zoo["llama_vocab"], "b"))


def test_architecture_mismatch(zoo: dict[str, Path]) -> None:
    with pytest.raises(IncompatibleModelsError, match=r"LlamaForCausalLM but 'b'.* MistralForCausalLM"):
        open_ck(zoo["llama"], "a").check_compatible(open_ck(zoo["mistral"], "b"))


def test_pickle_refused_unless_allowed(zoo: dict[str, Path]) -> None:
    with pytest.raises(CheckpointError, match=r"'p'.*pickle weights.*allow_pickle"):
        open_ck(zoo["pickle"], "p")
    ck = open_ck(zoo["pickle"], "p", allow_pickle=True)
    sd = torch.load(zoo["pickle"] / "pytorch_model.bin", weights_only=True)
    assert torch.equal(ck.read("model.layers.1.mlp.down_proj.weight"), sd["model.layers.1.mlp.down_proj.weight"])


def test_save_metadata_copies_donor_files(zoo: dict[str, Path], tmp_path: Path) -> None:
    open_ck(zoo["llama"]).save_metadata(tmp_path)
    for f in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / f).read_bytes() == (zoo["llama"] / f).read_bytes()


def test_missing_local_path_and_offline_hub_id() -> None:
    with pytest.raises(CheckpointError, match=r"local path './nowhere/model' does not exist"):
        resolve_model_dir(ModelRef("x", "./nowhere/model"))
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    with pytest.raises(OfflineError, match=r"'evomm-test/not-cached'.*local path"):
        resolve_model_dir(ModelRef("x", "evomm-test/not-cached"))


@pytest.mark.parametrize("announce", [False, True])
def test_sharded_writer_roundtrip(tmp_path: Path, announce: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    tensors = {f"t{i}": torch.randn(100, generator=gen).to(torch.bfloat16) for i in range(5)}
    w = ShardedSafetensorsWriter(tmp_path / "out", max_shard_bytes=450)  # 200 bytes each: 2 per shard
    if announce:  # streaming mode: shards laid out first, nothing buffered
        w.expect([(k, v.shape, "bfloat16") for k, v in tensors.items()])
    for k, v in tensors.items():
        w.write(k, v)
    w.close()
    index = json.loads((tmp_path / "out" / INDEX_FILE).read_text())
    assert sorted(set(index["weight_map"].values())) == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert index["metadata"]["total_size"] == 1000
    idx = SafetensorsIndex(tmp_path / "out")
    assert idx.names() == list(tensors) and idx.dtype("t3") == "bfloat16" and idx.shape("t3") == (100,)
    for k, v in tensors.items():
        assert torch.equal(idx.read(k), v)
    with pytest.raises(CheckpointError, match="'t9' is not in the checkpoint"):
        idx.read("t9")


def test_streaming_writer_refuses_surprises(tmp_path: Path) -> None:
    w = ShardedSafetensorsWriter(tmp_path / "out")
    w.expect([("a", (2,), "float32"), ("b", (3,), "float32")])
    with pytest.raises(CheckpointError, match=r"expected \('a', \(2,\), 'float32'\), got \('a', \(3,\)"):
        w.write("a", torch.zeros(3))
    w.write("a", torch.zeros(2))
    with pytest.raises(CheckpointError, match=r"closed before tensors \['b'\]"):
        w.close()
