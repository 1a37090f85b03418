"""Regenerate the mergekit golden files of ``slices:`` recipes (run by hand, never in CI; needs
mergekit 0.1.5)::

    .venv/bin/python tests/golden/mergekit_slices/make_golden.py --mergekit-python /tmp/mkvenv/bin/python

The inputs are the committed tiny float32 Llamas of tests/golden/mergekit/inputs (``base``,
``a``, ``b``: 3 layers each). For each recipe of :data:`RECIPES` mergekit's output tensors go to
``mergekit/<name>.safetensors`` and its ``config.json`` to ``mergekit/<name>.config.json``.
tests/test_mergekit_slices.py merges the same recipes with evomm and compares.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
INPUTS = HERE.parent / "mergekit" / "inputs"


def _src(model: str, start: int, end: int, **parameters: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"model": model, "layer_range": [start, end]}
    if parameters:
        out["parameters"] = parameters
    return out


#: name -> recipe (model names are directories of INPUTS).
RECIPES: dict[str, dict[str, Any]] = {
    # two slices over different, aligned ranges; a gradient over slice 0's two layers, a filter
    # fallback for slice 1 and for the norm/head (taken from the last slice)
    "slerp": {"merge_method": "slerp", "base_model": "a", "dtype": "float32",
              "parameters": {"t": [{"filter": "self_attn", "value": 0.8}, {"value": 0.4}]},
              "slices": [{"sources": [_src("a", 0, 2), _src("b", 0, 2)], "parameters": {"t": [0.1, 0.9]}},
                         {"sources": [_src("a", 2, 3), _src("b", 1, 2)]}]},
    # per-source weights (one a gradient over its slice), a slice-level fallback, base as a source
    "linear": {"merge_method": "linear", "dtype": "float32",
               "slices": [{"sources": [_src("a", 0, 2, weight=0.3), _src("b", 1, 3, weight=[0.2, 0.9])]},
                          {"sources": [_src("base", 2, 3), _src("a", 0, 1, weight=0.7)],
                           "parameters": {"weight": 0.5}}]},
    # a frankenmerge: 2 + 2 + 1 = 5 layers from three models, the last slice scaled
    "passthrough": {"merge_method": "passthrough", "dtype": "float32",
                    "slices": [{"sources": [_src("a", 0, 2)]}, {"sources": [_src("b", 1, 3)]},
                               {"sources": [_src("base", 2, 3)], "parameters": {"scale": 0.5}}]},
    # a task-vector method: the base is a source of every slice
    "task_arithmetic": {"merge_method": "task_arithmetic", "base_model": "base", "dtype": "float32",
                        "slices": [{"sources": [_src("base", 0, 2), _src("a", 0, 2, weight=[0.2, 0.6]),
                                                _src("b", 1, 3, weight=0.5)]},
                                   {"sources": [_src("base", 1, 3), _src("a", 1, 3, weight=0.4),
                                                _src("b", 0, 2, weight=0.3)]}]},
}


def absolute(recipe: dict[str, Any], inputs: Path = INPUTS) -> dict[str, Any]:
    """``recipe`` with every model name made a path under ``inputs``."""
    r = yaml.safe_load(yaml.safe_dump(recipe))
    for sl in r["slices"]:
        for src in sl["sources"]:
            src["model"] = str(inputs / src["model"])
    if "base_model" in r:
        r["base_model"] = str(inputs / r["base_model"])
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mergekit-python", required=True, help="a python with mergekit 0.1.5")
    args = ap.parse_args()
    from safetensors.torch import load_file, save_file

    out_dir = HERE / "mergekit"
    out_dir.mkdir(exist_ok=True)
    mk = Path(args.mergekit_python).parent / "mergekit-yaml"
    for name, recipe in RECIPES.items():
        with tempfile.TemporaryDirectory() as tmp:
            cfg = Path(tmp) / "r.yaml"
            cfg.write_text(yaml.safe_dump(absolute(recipe), sort_keys=False))
            subprocess.run([str(mk), str(cfg), str(Path(tmp) / "out")], check=True)
            tensors = {}
            for f in sorted((Path(tmp) / "out").glob("*.safetensors")):
                tensors.update(load_file(str(f)))
            save_file(tensors, str(out_dir / f"{name}.safetensors"))
            shutil.copyfile(Path(tmp) / "out" / "config.json", out_dir / f"{name}.config.json")
        print(f"{name}: {len(tensors)} tensors")


if __name__ == "__main__":
    main()
