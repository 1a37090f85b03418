"""Markdown table (the paper's layout) from merge_search.py result files.

Usage::

    python bench/zoo_experiments/table.py results/res_s0.json results/res_s1.json ...
"""

from __future__ import annotations

import json
import sys

ROWS = (
    ("ja parent", "ja"),
    ("math parent", "math"),
    ("linear 0.5/0.5 (untuned)", "linear 0.5/0.5"),
    ("task arithmetic, lambda 1 (untuned)", "TA lambda 1"),
    ("best uniform task arithmetic (grid on dev)", "best uniform TA"),
    ("ja vector alone, best scale", "ja vector only"),
    ("math vector alone, best scale", "math vector only"),
    ("**per-layer TA, CMA-ES (evolved)**", "per-layer TA, CMA-ES"),
    ("evolved genome, ja genes zeroed", "CMA genome, ja zeroed"),
    ("evolved genome, math genes zeroed", "CMA genome, math zeroed"),
)


def main() -> None:
    results = [json.loads(open(p).read()) for p in sys.argv[1:]]
    heads = [r["zoo"].split("/")[-1] for r in results]
    print("| model | " + " | ".join(f"{h}: ja_math strict / loose" for h in heads) + " |")
    print("|---|" + "---|" * len(results))
    for label, key in ROWS:
        cells = []
        for r in results:
            row = next((x for x in r["rows"] if x["label"].startswith(key)), None)
            if row is None:
                cells.append("-")
                continue
            extra = row["label"][len(key) :].strip(" ,")
            cell = f"{row['ja_math'][0]} / {row['ja_math'][1]}"
            cells.append(cell + (f" ({extra})" if extra else ""))
        print(f"| {label} | " + " | ".join(cells) + " |")
    for h, r in zip(heads, results):
        g = next(x for x in r["rows"] if x["label"].startswith("per-layer"))
        print(f"\n{h} evolved genome: l_ja {g['l_ja']}, l_math {g['l_math']}")


if __name__ == "__main__":
    main()
