"""Re-run an evolved genome through evomm's own pipeline: a YAML recipe, `evomm merge`, the
`evomm_hf` handle and the `toy_ja_math` task, and compare with merge_search.py's test score.

Usage::

    python bench/zoo_experiments/evomm_merge_check.py ZOO RESULTS.json OUT_DIR
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml


def per_layer(values: list[float]) -> list[dict]:
    *layers, rest = values
    return [{"filter": f"layers.{i}.", "value": float(v)} for i, v in enumerate(layers)] + [
        {"value": float(rest)}
    ]


def main() -> None:
    zoo, results, out = Path(sys.argv[1]).resolve(), Path(sys.argv[2]), Path(sys.argv[3]).resolve()
    row = next(r for r in json.loads(results.read_text())["rows"] if r["label"].startswith("per-layer"))
    recipe = {
        "merge_method": "task_arithmetic",
        "base_model": "base",
        "models": [
            {"model": str(zoo / "models" / "base"), "name": "base"},
            {
                "model": str(zoo / "models" / "ja"),
                "name": "ja",
                "parameters": {"weight": per_layer(row["l_ja"])},
            },
            {
                "model": str(zoo / "models" / "math"),
                "name": "math",
                "parameters": {"weight": per_layer(row["l_math"])},
            },
        ],
        "parameters": {"lambda": 1.0},
        "dtype": "float32",
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    subprocess.run(
        ["evomm", "merge", str(out / "recipe.yaml"), "--out", str(out / "child"), "--overwrite"], check=True
    )

    from evomm_hf.handle import HFCausalLMHandle
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evomm.plugins import get_plugins

    model = AutoModelForCausalLM.from_pretrained(out / "child")
    handle = HFCausalLMHandle(model, AutoTokenizer.from_pretrained(out / "child"))
    task = get_plugins([]).tasks.get("toy_ja_math")(str(zoo), split="test")
    m = task.evaluate(handle).metrics
    n = 400
    print(f"evomm merge + toy_ja_math: strict {round(m['strict'] * n)} loose {round(m['loose'] * n)}")
    print(f"merge_search.py (torch):   strict {row['ja_math'][0]} loose {row['ja_math'][1]}")


if __name__ == "__main__":
    main()
