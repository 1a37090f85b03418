"""The dry-run memory and time planner (issue 21.5) on 7B-shaped checkpoints made here: real
safetensors headers over sparse files (no weights are written or read)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from evomm.cli import main
from evomm.evolve_recipe import EvolveRecipe
from evomm.planner import (
    DTYPE_BYTES,
    RUNTIME_BYTES,
    evolve_plan_lines,
    human,
    items_per_candidate,
    parent_size,
    plan_worker,
)

#: Llama-2-7B: the published parameter count and its shapes.
LLAMA7B_PARAMS = 6_738_415_616
_CFG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
        "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
        "num_key_value_heads": 32, "vocab_size": 32000}


def _shapes() -> dict[str, tuple[int, ...]]:
    h, f, v = 4096, 11008, 32000
    out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,),
                                       "lm_head.weight": (v, h)}
    for i in range(32):
        p = f"model.layers.{i}."
        out.update({p + f"self_attn.{x}_proj.weight": (h, h) for x in "qkvo"})
        out.update({p + "mlp.gate_proj.weight": (f, h), p + "mlp.up_proj.weight": (f, h),
                    p + "mlp.down_proj.weight": (h, f)})
        out.update({p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,)})
    return out


def make_7b(directory: Path, shards: int = 2) -> Path:
    """A 7B-shaped bf16 checkpoint: config.json and ``shards`` safetensors files whose data
    regions are holes (``truncate``), so they take no disk space."""
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(_CFG))
    names = list(_shapes().items())
    for s in range(shards):
        header, offset = {}, 0
        for name, shape in names[s::shards]:
            size = 2 * int.__mul__(*shape) if len(shape) == 2 else 2 * shape[0]
            header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + size]}
            offset += size
        raw = json.dumps(header).encode()
        with open(directory / f"model-{s:05d}-of-{shards:05d}.safetensors", "wb") as f:
            f.write(struct.pack("<Q", len(raw)) + raw)
            f.truncate(8 + len(raw) + offset)
    return directory


@pytest.fixture(scope="module")
def sevens(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("7b")
    return [make_7b(d / n) for n in ("base", "ja", "math")]


def test_parent_size_from_headers(sevens: list[Path]) -> None:
    size = parent_size("base", str(sevens[0]))
    assert not isinstance(size, str)
    assert size.params == LLAMA7B_PARAMS and size.stored_bytes == 2 * LLAMA7B_PARAMS
    assert size.largest == 32000 * 4096
    assert sum(f.stat().st_blocks for f in sevens[0].iterdir()) * 512 < 10**6  # nothing was ever written


@pytest.mark.parametrize(("dtype", "device"), [("bfloat16", "cuda"), ("float32", "cpu")])
def test_worker_plan_on_three_7b_parents(sevens: list[Path], dtype: str, device: str) -> None:
    plan = plan_worker([(p.name, str(p)) for p in sevens], dtype, device=device, positions=1000, bandwidth=1e12)
    per = DTYPE_BYTES[dtype]
    assert plan.cache == 3 * LLAMA7B_PARAMS * per  # every parent cached in the compute dtype
    assert plan.model == LLAMA7B_PARAMS * per
    assert plan.scratch == 32000 * 4096 * 4 * 5
    assert plan.kv_cache == 2 * 32 * 4096 * 1000 * per  # K and V, 32 layers, 32 heads x 128
    assert plan.total == plan.cache + plan.model + plan.scratch + plan.kv_cache + RUNTIME_BYTES
    assert plan.merge_seconds == pytest.approx(4 * LLAMA7B_PARAMS * per / 1e12)
    text = "\n".join(plan.lines(workers=2))
    assert "6.74B parameters" in text and ("GPU memory" if device == "cuda" else "RAM") in text


def test_unknown_parent_is_said_not_guessed(sevens: list[Path]) -> None:
    plan = plan_worker([("base", str(sevens[0])), ("hub", "org/not-here")], "bfloat16", bandwidth=1e12)
    assert plan.cache == LLAMA7B_PARAMS * 2
    assert "org/not-here" in "\n".join(plan.lines()) and "not counted" in "\n".join(plan.lines())


def test_evolve_plan_counts_items_and_workers(sevens: list[Path]) -> None:
    recipe = EvolveRecipe.model_validate({
        "parents": [{"name": "ja", "path": str(sevens[1])}, {"name": "math", "path": str(sevens[2])}],
        "base_model": {"name": "base", "path": str(sevens[0])},
        "merge": {"method": "ties", "dtype": "bfloat16", "parameters": {"weight": {"evolve": True}}},
        "objectives": [{"name": "m", "task": "ja_math"}, {"name": "s", "suite": {"ja_mc": 1.0, "other": 1.0}}],
        "tasks": {"ja_math": {"limit": 250}, "ja_mc": {"limit": 100}},
        "executor": {"workers": 2, "num_gpus_per_worker": 1},
    })
    assert items_per_candidate(recipe) == "350 + the whole split of other"
    text = "\n".join(evolve_plan_lines(recipe))
    total = (4 * LLAMA7B_PARAMS * 2 + 32000 * 4096 * 4 * 5  # 3 parents cached + the model, bf16; scratch
             + 2 * 32 * 4096 * 16 * 1024 * 2 + RUNTIME_BYTES)  # KV cache of 16K positions; runtime
    assert "per worker (cuda)" in text and "GPU memory" in text
    assert f"= {human(total)} GPU memory; 2 workers: {human(2 * total)}" in text


def test_merge_dry_run_reads_headers_only(sevens: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({"merge_method": "ties", "base_model": str(sevens[0]), "dtype": "bfloat16",
                                  "models": [{"model": str(p), "parameters": {"weight": 0.5, "density": 0.5}}
                                             for p in sevens[1:]]}))
    assert main(["merge", str(recipe), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("6.74B parameters, 13.5 GB stored") == 3 and "output: 13.5 GB as bfloat16" in out
    # in flight: the 4 largest tensors (embedding, head, two MLP matrices) of 3 bf16 parents + output
    in_flight = (2 * 32000 * 4096 + 2 * 11008 * 4096) * (3 * 2 + 2)
    assert f"streaming merge: about {human(RUNTIME_BYTES + in_flight)} RAM" in out
    assert not (tmp_path / "out").exists()
