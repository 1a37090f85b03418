"""A larger text base for the vision half (issue 22, W18s; docs/toy-zoo.md "Fourth attempt"):
the demo recipe's base run (1500 steps, lr 3e-3, batch 32, ``BASE_MIX``, weight decay 0.01, the
seed's data stream and init) on a larger Llama (default hidden 128, 4 layers, 4 heads, MLP 512),
saved as an ordinary checkpoint with the zoo tokenizer, to be passed to ``vision_w.py --base``.

Usage::

    nice -n 5 .venv/bin/python bench/zoo_experiments/vision_base.py --seed 0 --out /tmp/w15/base128_s0
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--mlp", type=int, default=512)
    ap.add_argument("--steps", type=int, default=1500)
    args = ap.parse_args()
    import torch
    from evomm_zoo.recipe import text_recipe
    from evomm_zoo.text import ArchConfig, train_base
    from evomm_zoo.tokenizer import build_tokenizer

    torch.set_num_threads(1)
    arch = ArchConfig(
        hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
        intermediate_size=args.mlp,
    )  # fmt: skip
    cfg = replace(text_recipe("demo", args.seed).base, steps=args.steps)
    t0, c0 = time.perf_counter(), time.process_time()
    _, log = train_base(build_tokenizer(), Path(args.out), cfg, arch, progress=False)
    info = {
        "arch": asdict(arch),
        "steps": args.steps,
        "final_loss": log["curve"][-1][1],
        "wall_s": round(time.perf_counter() - t0, 1),
        "cpu_s": round(time.process_time() - c0, 1),
    }
    print(json.dumps(info))
    (Path(args.out) / "build.json").write_text(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
