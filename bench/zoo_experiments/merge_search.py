"""Does the toy zoo show the EvoLLM-JP effect? Merges, a per-layer CMA-ES, ablations.

Plain torch task arithmetic on state dicts (independent of evomm's merge operators, so that the
two can be compared): ``w = base + sum_g l_ja[g] * tau_ja + l_math[g] * tau_math`` where ``g``
is the group of the tensor (a decoder layer, or "rest" = final norm/embeddings/head).

Coefficients are chosen on the dev split (400 items), everything is reported on test (400).

Usage::

    python bench/zoo_experiments/merge_search.py ZOO_DIR [--evals 160] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import torch
from evomm_zoo.build import read_jsonl
from evomm_zoo.generate import greedy_generate
from evomm_zoo.scoring import MAX_NEW_TOKENS, score_outputs

torch.set_num_threads(1)


def group_of(name: str, num_layers: int, split_kinds: bool = False) -> int:
    """Group index: decoder layer i -> i, anything else -> num_layers.

    With ``split_kinds``, each layer has two groups: attention (2i) and MLP + norms (2i+1);
    anything else is group 2 * num_layers.
    """
    m = re.search(r"layers\.(\d+)\.", name)
    if not split_kinds:
        return int(m.group(1)) if m else num_layers
    if not m:
        return 2 * num_layers
    return 2 * int(m.group(1)) + (0 if ".self_attn." in name else 1)


class Merger:
    """Holds base and task vectors; writes merges into one preallocated model."""

    def __init__(self, zoo: Path, split_kinds: bool = False) -> None:
        from transformers import AutoTokenizer, LlamaForCausalLM

        self.zoo = zoo
        self.tok = AutoTokenizer.from_pretrained(str(zoo / "models" / "base"))
        self.model = LlamaForCausalLM.from_pretrained(str(zoo / "models" / "base")).eval()
        sd = {k: v.clone() for k, v in self.model.state_dict().items()}
        ja = LlamaForCausalLM.from_pretrained(str(zoo / "models" / "ja")).state_dict()
        math = LlamaForCausalLM.from_pretrained(str(zoo / "models" / "math")).state_dict()
        self.base = sd
        self.tau = {"ja": {k: ja[k] - sd[k] for k in sd}, "math": {k: math[k] - sd[k] for k in sd}}
        self.layers = self.model.config.num_hidden_layers
        self.split_kinds = split_kinds
        self.groups = {k: group_of(k, self.layers, split_kinds) for k in sd}
        self.data = {
            s: {t: read_jsonl(zoo / "data" / t / f"{s}.jsonl") for t in ("ja_math", "ja_skill", "en_math")}
            for s in ("dev", "test")
        }

    @property
    def n_groups(self) -> int:
        return 2 * self.layers + 1 if self.split_kinds else self.layers + 1

    def load(self, l_ja: list[float], l_math: list[float]) -> None:
        """Write base + per-group weighted task vectors into the model."""
        with torch.no_grad():
            new = {}
            for k, w in self.base.items():
                g = self.groups[k]
                new[k] = w + l_ja[g] * self.tau["ja"][k] + l_math[g] * self.tau["math"][k]
            self.model.load_state_dict(new)

    def score(self, split: str, task: str = "ja_math") -> dict:
        rows = self.data[split][task]
        outs = greedy_generate(
            self.model, self.tok, [r["prompt"] for r in rows], max_new_tokens=MAX_NEW_TOKENS, batch_size=400
        )
        return score_outputs(task, outs, rows)

    def eval_genome(self, l_ja, l_math, split: str, task: str = "ja_math") -> dict:
        self.load(list(l_ja), list(l_math))
        return self.score(split, task)


def uniform(m: Merger, a: float, b: float) -> tuple[list[float], list[float]]:
    return [a] * m.n_groups, [b] * m.n_groups


def grid_search(m: Merger, values: list[float]) -> tuple[tuple[float, float], dict]:
    """Best uniform (l_ja, l_math) on dev (strict), ties broken by loose."""
    best, best_key = None, (-1, -1)
    for a in values:
        for b in values:
            s = m.eval_genome(*uniform(m, a, b), "dev")
            key = (s["strict_count"], s["loose_count"])
            if key > best_key:
                best, best_key = (a, b), key
    return best, {"strict_count": best_key[0], "loose_count": best_key[1]}


def cma_search(
    m: Merger, evals: int, seed: int, x0: list[float], sigma: float = 0.3
) -> tuple[list[float], int]:
    """Per-group (l_ja, l_math) by CMA-ES on dev strict counts (loose as a tie-breaker)."""
    import cma

    n = m.n_groups
    es = cma.CMAEvolutionStrategy(
        x0, sigma, {"seed": seed + 1, "bounds": [-1.0, 2.5], "popsize": 10, "verbose": -9, "maxfevals": evals}
    )
    best_x, best_f = list(x0), None
    while not es.stop():
        xs = es.ask()
        fs = []
        for x in xs:
            s = m.eval_genome(x[:n], x[n:], "dev")
            f = -(s["strict_count"] + 0.01 * s["loose_count"])
            fs.append(f)
            if best_f is None or f < best_f:
                best_x, best_f = list(map(float, x)), f
        es.tell(xs, fs)
    return best_x, int(round(-best_f))


def report(m: Merger, label: str, l_ja, l_math) -> dict:
    out = {
        "label": label,
        "l_ja": [float(v) for v in l_ja],
        "l_math": [float(v) for v in l_math],
    }
    for task in ("ja_math", "ja_skill", "en_math"):
        s = m.eval_genome(l_ja, l_math, "test", task)
        out[task] = (s["strict_count"], s["loose_count"])
    print(
        f"{label:<38} ja_math {out['ja_math']}  ja_skill {out['ja_skill']}  en_math {out['en_math']}",
        flush=True,
    )
    return out


def run(zoo: Path, evals: int, seed: int, split_kinds: bool = False, x0: tuple | None = None) -> dict:
    t0 = time.perf_counter()
    m = Merger(zoo, split_kinds)
    n = m.n_groups
    rows = [
        report(m, "base", *uniform(m, 0, 0)),
        report(m, "ja", *uniform(m, 1, 0)),
        report(m, "math", *uniform(m, 0, 1)),
        report(m, "linear 0.5/0.5", *uniform(m, 0.5, 0.5)),
        report(m, "TA lambda 1", *uniform(m, 1, 1)),
    ]
    values = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
    (a, b), dev = grid_search(m, values) if x0 is None else (x0, None)
    label = f"best uniform TA ({a}, {b})" if x0 is None else f"uniform TA ({a}, {b}), CMA start"
    rows.append(report(m, label, *uniform(m, a, b)))
    # ja vector alone / math vector alone at their best uniform scale (is one vector enough?)
    aj, _ = max(
        ((v, m.eval_genome(*uniform(m, v, 0), "dev")["strict_count"]) for v in values[1:]), key=lambda t: t[1]
    )
    bm, _ = max(
        ((v, m.eval_genome(*uniform(m, 0, v), "dev")["strict_count"]) for v in values[1:]), key=lambda t: t[1]
    )
    rows.append(report(m, f"ja vector only, best scale {aj}", *uniform(m, aj, 0)))
    rows.append(report(m, f"math vector only, best scale {bm}", *uniform(m, 0, bm)))
    x, dev_cma = cma_search(m, evals, seed, [a] * n + [b] * n)
    rows.append(report(m, "per-layer TA, CMA-ES", x[:n], x[n:]))
    rows.append(report(m, "CMA genome, ja zeroed", [0.0] * n, x[n:]))
    rows.append(report(m, "CMA genome, math zeroed", x[:n], [0.0] * n))
    return {
        "zoo": str(zoo),
        "dev_best_uniform": dev,
        "dev_cma": dev_cma,
        "rows": rows,
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("zoo", type=Path)
    ap.add_argument("--evals", type=int, default=160)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--split-kinds", action="store_true", help="attention and MLP genes per layer")
    ap.add_argument("--x0", type=float, nargs=2, help="skip the grid: start CMA-ES at uniform (l_ja, l_math)")
    args = ap.parse_args()
    res = run(args.zoo, args.evals, args.seed, args.split_kinds, tuple(args.x0) if args.x0 else None)
    print("genome l_ja", res["rows"][-3]["l_ja"], "l_math", res["rows"][-3]["l_math"], "wall", res["wall_s"])
    if args.out:
        args.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
