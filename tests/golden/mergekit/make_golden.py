"""Regenerate the mergekit golden files (run by hand, never in CI; needs mergekit 0.1.5).

    .venv/bin/python tests/golden/mergekit/make_golden.py --mergekit-python /tmp/mkvenv/bin/python

Writes three tiny float32 Llama checkpoints (``inputs/base``, ``inputs/a``, ``inputs/b``; a and b
are base plus noise, like fine-tunes), the recipes of :data:`RECIPES` (``recipes/*.yaml``, with
model paths relative to this directory), and mergekit's output for each
(``mergekit/<name>.safetensors``, one file per recipe with every output tensor).
tests/test_mergekit_e2e.py merges the same recipes with evomm and compares.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

#: name -> recipe (model names are input directory names, resolved relative to HERE/inputs).
RECIPES = {
    "linear": {"merge_method": "linear", "dtype": "float32", "models": [
        {"model": "a", "parameters": {"weight": [0.2, 0.8]}},
        {"model": "b", "parameters": {"weight": [{"filter": "mlp", "value": 0.9}, {"value": 0.5}]}}]},
    "linear_unnormalized": {"merge_method": "linear", "dtype": "float32", "parameters": {"normalize": False},
                            "models": [{"model": "base", "parameters": {"weight": 0.3}},
                                       {"model": "a", "parameters": {"weight": 0.6}},
                                       {"model": "b", "parameters": {"weight": 0.25}}]},
    "task_arithmetic": {"merge_method": "task_arithmetic", "base_model": "base", "dtype": "float32",
                        "tokenizer_source": "base", "parameters": {"lambda": 0.9}, "models": [
                            {"model": "a", "parameters": {"weight": 0.7}},
                            {"model": "b", "parameters": {"weight": [{"filter": "self_attn", "value": 0.3},
                                                                     {"value": [1.0, 0.2]}]}}]},
    "ties": {"merge_method": "ties", "base_model": "base", "dtype": "float32", "models": [
        {"model": "base"},
        {"model": "a", "parameters": {"weight": 0.6, "density": 0.5}},
        {"model": "b", "parameters": {"weight": 0.4, "density": [0.3, 0.9]}}]},
    "ties_bf16": {"merge_method": "ties", "base_model": "base", "dtype": "bfloat16", "models": [
        {"model": "a", "parameters": {"weight": 1.0, "density": 0.4}},
        {"model": "b", "parameters": {"weight": 1.0, "density": 0.4}}]},
    "slerp": {"merge_method": "slerp", "base_model": "a", "dtype": "float32",
              "parameters": {"t": [0.0, 0.5, 1.0]}, "models": [{"model": "a"}, {"model": "b"}]},
}


def make_inputs(root: Path) -> None:
    from tests.tiny_models import make_tiny_model, perturb_model

    if root.exists():
        shutil.rmtree(root)
    kw = dict(hidden_size=16, intermediate_size=32, num_layers=3, num_heads=4, num_kv_heads=2)
    make_tiny_model(root / "base", "llama", seed=100, **kw)
    perturb_model(root / "base", root / "a", seed=101, scale=0.01)
    perturb_model(root / "base", root / "b", seed=102, scale=0.01)


def absolute(recipe: dict, inputs: Path) -> dict:
    r = yaml.safe_load(yaml.safe_dump(recipe))
    for m in r["models"]:
        m["model"] = str(inputs / m["model"])
    if "base_model" in r:
        r["base_model"] = str(inputs / r["base_model"])
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mergekit-python", required=True, help="a python with mergekit 0.1.5")
    args = ap.parse_args()
    from safetensors.torch import load_file, save_file

    make_inputs(HERE / "inputs")
    (HERE / "mergekit").mkdir(exist_ok=True)
    mk = Path(args.mergekit_python).parent / "mergekit-yaml"
    for name, recipe in RECIPES.items():
        with tempfile.TemporaryDirectory() as tmp:
            cfg = Path(tmp) / "r.yaml"
            cfg.write_text(yaml.safe_dump(absolute(recipe, HERE / "inputs"), sort_keys=False))
            subprocess.run([str(mk), str(cfg), str(Path(tmp) / "out")], check=True)
            tensors = {}
            for f in sorted((Path(tmp) / "out").glob("*.safetensors")):
                tensors.update(load_file(str(f)))
            save_file(tensors, str(HERE / "mergekit" / f"{name}.safetensors"))
        print(f"{name}: {len(tensors)} tensors")


if __name__ == "__main__":
    main()
