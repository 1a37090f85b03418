"""Quick screen of ja-parent recipes on an existing zoo (same base and math parent).

For each variant: fine-tune a ja parent from ``<zoo>/models/base``, then measure on 200 dev
items: its ja_skill and ja_math (strict), its arithmetic when given the equation
(teacher-forced ``prompt + "5+4="``, and bare ``"5+4="``), and a small uniform task-arithmetic
grid with the zoo's math parent (best strict ja_math).

Usage::

    python bench/zoo_experiments/ja_variants.py ZOO_DIR [variant ...]
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from evomm_zoo.generate import greedy_generate
from evomm_zoo.recipe import text_recipe
from evomm_zoo.scoring import score_outputs
from evomm_zoo.text import finetune

torch.set_num_threads(1)

VARIANTS = {
    "d1e": {},  # the recipe's ja parent
    "d1": {"mix": {"ja_problem": 0.7, "ja_other": 0.3}},
    "lr3e-4": {"lr": 3e-4},
    "steps100": {"steps": 100},
    "eqsign": {"mix": {"ja_problem_eq": 0.7, "ja_other": 0.3}},
    "eqsign150": {"steps": 150, "mix": {"ja_problem_eq": 0.7, "ja_other": 0.3}},
    "eos_other": {"mix": {"ja_problem": 0.7, "ja_other_eos": 0.3}},
    "steps200": {"steps": 200},
    # math-parent variants (the ja parent stays the zoo's)
    "math:lhs15": {"mix": {"en_problem": 0.7, "bare_equation": 0.15, "bare_lhs": 0.15}},
    "math:lhs30": {"mix": {"en_problem": 0.7, "bare_lhs": 0.3}},
    "math:kana20": {"mix": {"en_problem": 0.6, "bare_equation": 0.2, "kana_equation": 0.2}},
    "eq15": {"mix": {"ja_problem": 0.6, "ja_other": 0.25, "equation": 0.15}},
    "replay20": {"mix": {"ja_problem": 0.55, "ja_other": 0.25, "prefixed_equation": 0.2}},
}


def tf_arith(model, tok, rows, with_prompt: bool) -> int:
    prompts = [(r["prompt"] if with_prompt else "") + r["equation"] + "=" for r in rows]
    outs = greedy_generate(model, tok, prompts, max_new_tokens=3)
    return sum(
        o.startswith(str(r["result"])) and not o[len(str(r["result"])) :][:1].isdigit()
        for o, r in zip(outs, rows)
    )


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from merge_search import Merger

    zoo = Path(sys.argv[1])
    names = sys.argv[2:] or list(VARIANTS)
    m = Merger(zoo)
    n = m.n_groups
    rows = m.data["dev"]["ja_math"][:200]
    skill = m.data["dev"]["ja_skill"][:200]
    seed = m.model.config.to_dict().get("seed", 0)
    for name in names:
        t0 = time.perf_counter()
        which = "math" if name.startswith("math:") else "ja"
        cfg = replace(getattr(text_recipe("demo", seed), which), **VARIANTS[name])
        model, _ = finetune(zoo / "models" / "base", None, cfg, progress=False)
        sd = model.state_dict()
        m.tau[which] = {k: sd[k] - m.base[k] for k in m.base}
        m.load([1.0] * n, [0.0] * n)
        outs = greedy_generate(m.model, m.tok, [r["prompt"] for r in skill], max_new_tokens=8)
        s_skill = score_outputs("ja_skill", outs, skill)["strict_count"]
        s_alone = score_outputs("ja_math", greedy_generate(m.model, m.tok, [r["prompt"] for r in rows]), rows)
        m.load([0.0] * n, [1.0] * n)
        s_math = score_outputs("ja_math", greedy_generate(m.model, m.tok, [r["prompt"] for r in rows]), rows)
        m.load([1.0] * n, [0.0] * n)
        tf = (tf_arith(m.model, m.tok, rows, True), tf_arith(m.model, m.tok, rows, False))
        grid = {}
        for a in (0.5, 0.75, 1.0):
            for b in (0.5, 1.0, 1.5):
                m.load([a] * n, [b] * n)
                outs = greedy_generate(m.model, m.tok, [r["prompt"] for r in rows], max_new_tokens=8)
                grid[(a, b)] = score_outputs("ja_math", outs, rows)["strict_count"]
        best = max(grid, key=grid.get)
        print(
            f"{name:<10} ja_skill {s_skill}/200  ja alone ja_math {s_alone['strict_count']}/{s_alone['loose_count']}"
            f"  math alone {s_math['strict_count']}/{s_math['loose_count']}  tf(prompt, bare) {tf}  best uniform {best}: {grid[best]}  grid {list(grid.values())}"
            f"  ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
