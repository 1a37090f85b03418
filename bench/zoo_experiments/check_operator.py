"""Re-score merge_search.py's genomes with evomm's own ``task_arithmetic`` operator.

For every row of a merge_search result file, the merged weights are computed twice: with the
plain-torch formula of merge_search.py and with the ``task_arithmetic`` operator registered by the
``evomm_ops`` plugin (per tensor, ``weight`` per parent = that tensor's group coefficient,
``lambda`` 1, no normalisation). The script prints the largest difference between the two and
both test scores, which must agree.

Usage::

    python bench/zoo_experiments/check_operator.py ZOO_DIR RESULTS.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from evomm.layout import classify_lm_tensor
from evomm.operators import TensorContext
from evomm.plugins import load_plugins

torch.set_num_threads(1)


def operator_merge(m, op, l_ja, l_math) -> dict[str, torch.Tensor]:
    out = {}
    for k, base in m.base.items():
        g = m.groups[k]
        kind, layer = classify_lm_tensor(k)
        ctx = TensorContext(k, kind, layer, 0)
        ja, math = base + m.tau["ja"][k], base + m.tau["math"][k]
        params = [{"weight": float(l_ja[g])}, {"weight": float(l_math[g])}]
        out[k] = op.merge([ja, math], base, {"lambda": 1.0, "normalize": False}, params, ctx)
    return out


def main() -> None:
    from merge_search import Merger  # same folder

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("zoo", type=Path)
    ap.add_argument("results", type=Path)
    args = ap.parse_args()
    m = Merger(args.zoo)
    op = load_plugins([]).operators.get("task_arithmetic")()
    res = json.loads(args.results.read_text())
    for row in res["rows"]:
        merged = operator_merge(m, op, row["l_ja"], row["l_math"])
        m.load(row["l_ja"], row["l_math"])
        mine = m.model.state_dict()
        diff = max((merged[k] - mine[k]).abs().max().item() for k in merged)
        m.model.load_state_dict(merged)
        s = m.score("test", "ja_math")
        print(
            f"{row['label']:<38} max|diff| {diff:.2e}  operator ja_math {s['strict_count']}/{s['loose_count']}"
            f"  torch {row['ja_math'][0]}/{row['ja_math'][1]}"
        )


if __name__ == "__main__":
    main()
