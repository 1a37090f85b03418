"""CLIP task arithmetic in miniature (the FusionBench setting): does base + l*(t_shape + t_colour)
beat each fine-tune on the mean of the shape and colour classification tasks?

Builds the zoo's base CLIP and its two fine-tunes exactly as ``build_vision`` does (demo scale),
then scores base, fine-tunes and task-arithmetic merges on held-out test images; l is chosen on
the dev split.

Usage::

    .venv/bin/python bench/zoo_experiments/vision_clip.py --seed 0 [--out clip_s0.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
from evomm_zoo import clip as zclip
from evomm_zoo.vision import SCALES


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    sc = SCALES["demo"]
    t0 = time.perf_counter()
    base, tok = zclip.init_clip(args.seed)
    zclip.pretrain_clip(base, tok, steps=sc.clip_steps, seed=args.seed, progress=False)
    fts = {}
    for task in zclip.CLS_TASKS:
        fts[task] = copy.deepcopy(base)
        zclip.finetune_clip(fts[task], tok, task, steps=sc.clip_ft_steps, seed=args.seed, progress=False)
    build_s = round(time.perf_counter() - t0, 1)
    cache: dict = {}
    rows = {
        (t, s): zclip.cls_rows(t, s, n, args.seed)
        for t in zclip.CLS_TASKS
        for s, n in (("dev", 200), ("test", 400))
    }

    def ev(m, split="test"):
        r = {t: round(zclip.accuracy(m, tok, t, rows[t, split], cache), 4) for t in zclip.CLS_TASKS}
        r["mean"] = round(sum(r.values()) / len(r), 4)
        return r

    b = base.state_dict()

    def ta(lam):
        m = copy.deepcopy(base)
        m.load_state_dict({k: b[k] + lam * sum(f.state_dict()[k] - b[k] for f in fts.values()) for k in b})
        return m

    res = {"build_s": build_s, "base": ev(base), **{f"ft_{t}": ev(m) for t, m in fts.items()}}
    dev = {lam: ev(ta(lam), "dev")["mean"] for lam in (0.3, 0.4, 0.5, 0.6, 0.8, 1.0)}
    best = max(dev, key=dev.get)
    res["ta_dev_means"] = dev
    res["ta_1.0 (untuned)"] = ev(ta(1.0))
    res[f"ta_best (l={best} on dev)"] = ev(ta(best))
    print(json.dumps(res, indent=1))
    if args.out:
        args.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
