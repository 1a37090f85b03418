"""Does a merged VLM answer Japanese questions about images better than the VLM and the ja model?

Plain torch task arithmetic on the LLaVA language model (the vision tower and projector are the
VLM's): ``theta = base + a * (vlm_lm - base) + b * (ja - base)``. Coefficients are chosen on the
dev split, reported on the held-out test split, with an image-shuffled control for every model
and the random-answer / best-fixed-answer baselines.

Usage::

    .venv/bin/python bench/zoo_experiments/vision_vqa.py --zoo <dir with models/base, models/ja> \
        --seed 0 --steps 700 --out /tmp/vision_vqa_s0.json
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import random
import time
from pathlib import Path
from typing import Any

import torch
from evomm_zoo import vlm as zvlm
from evomm_zoo.images import COLORS, SHAPES, draw

#: Kept fixed while training the VLM, as in the zoo's text fine-tunes: the language model's
#: embeddings and head (smaller language-model task vector: norm 6.8 instead of 14.7, and the
#: English VQA score is as good or better; see docs/toy-zoo.md).
FROZEN_IN_VLM: tuple[str, ...] = ("model.language_model.embed_tokens", "lm_head")


def train_vlm(
    model, processor, rows: list[dict], *, steps: int, lr: float = 2e-3, batch_size: int = 32,
    seed: int = 0, progress: bool = True, freeze_lm: bool = False, eos_loss: bool = True,
    freeze: tuple[str, ...] = (),
) -> dict[str, Any]:  # fmt: skip
    """Train the VLM in place on VQA ``rows`` (AdamW, warm-up then cosine decay to 10%).

    Args:
        model: the ``LlavaForConditionalGeneration`` from :func:`init_vlm`.
        processor: its processor.
        rows: training rows (:func:`vqa_rows`).
        steps: optimiser steps.
        lr: peak learning rate.
        batch_size: rows per step.
        seed: seed of the batch order.
        progress: show a tqdm bar.
        freeze_lm: keep the language model and head fixed (train only tower and projector).
        eos_loss: also train the ``</s>`` after each answer.
        freeze: further parameter-name prefixes to keep fixed (e.g. the LM's embeddings and head).

    Returns:
        ``{"curve": [[step, mean loss], ...], "wall_s": seconds}``.
    """
    import torch
    from evomm_zoo.text import TrainConfig, lr_factor
    from tqdm.auto import tqdm

    for name, p in model.named_parameters():
        lm = "language_model" in name or name.startswith("lm_head")
        p.requires_grad_(not ((freeze_lm and lm) or (freeze and name.startswith(freeze))))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, TrainConfig(steps=steps, lr=lr)))
    rng = random.Random(f"vlm-batches-{seed}")
    cache: dict = {}
    curve, acc, t0, every = [], [], time.perf_counter(), max(1, steps // 30)
    model.train()
    for step in tqdm(range(steps), desc="vlm", disable=not progress, leave=False):
        loss = model(**zvlm.collate_vqa(processor, rng.sample(rows, batch_size), cache, eos_loss)).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        acc.append(loss.item())
        if (step + 1) % every == 0 or step + 1 == steps:
            curve.append([step + 1, round(sum(acc) / len(acc), 4)])
            acc = []
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return {"curve": curve, "wall_s": round(time.perf_counter() - t0, 2)}


def graft_lm(vlm, lm):
    """A copy of ``vlm`` whose language model and head are ``lm``'s (a text LM made to see)."""
    import copy

    g = copy.deepcopy(vlm)
    g.model.language_model.load_state_dict(lm.model.state_dict())
    g.lm_head.load_state_dict(lm.lm_head.state_dict())
    return g


def cut(text: str) -> str:
    """The first word of an answer (the ja parent was not taught to stop)."""
    for sep in (" ", "。", "、", "\n", "？", "?", "."):
        text = text.split(sep)[0]
    return text.strip()


def score(model, processor, rows, images, perm) -> dict:
    prompts = [r["prompt"] for r in rows]
    out = zvlm.generate_answers(model, processor, prompts, images, max_new_tokens=6)
    shuf = zvlm.generate_answers(model, processor, prompts, [images[i] for i in perm], max_new_tokens=6)
    right = [cut(o) == r["answer"] for o, r in zip(out, rows)]
    by_kind = collections.Counter(r["kind"] for r, ok in zip(rows, right) if ok)
    return {
        "right": sum(right),
        "shuffled": sum(cut(o) == r["answer"] for o, r in zip(shuf, rows)),
        "exact": sum(o == r["answer"] for o, r in zip(out, rows)),
        "colour": by_kind["colour"],
        "shape": by_kind["shape"],
        "n": len(rows),
        "sample": out[:4],
    }


def merged(vlm, base_sd, vlm_sd, ja_sd, a: float, b: float):
    m = copy.deepcopy(vlm)
    sd = {k: base_sd[k] + a * (vlm_sd[k] - base_sd[k]) + b * (ja_sd[k] - base_sd[k]) for k in base_sd}
    m.model.language_model.load_state_dict(
        {k[len("model.") :]: v for k, v in sd.items() if k.startswith("model.")}
    )
    m.lm_head.load_state_dict({"weight": sd["lm_head.weight"]})
    return m


def group(key: str) -> str:
    """The gene group of a language-model tensor: emb, l<i>, out (final norm + head)."""
    if key.startswith("model.layers."):
        return "l" + key.split(".")[2]
    return "emb" if "embed_tokens" in key else "out"


def merged_pl(vlm, base_sd, vlm_sd, ja_sd, genes: dict):
    """Per-group task arithmetic: genes[group] = (a, b)."""
    m = copy.deepcopy(vlm)
    sd = {}
    for k in base_sd:
        a, b = genes[group(k)]
        sd[k] = base_sd[k] + a * (vlm_sd[k] - base_sd[k]) + b * (ja_sd[k] - base_sd[k])
    m.model.language_model.load_state_dict(
        {k[len("model.") :]: v for k, v in sd.items() if k.startswith("model.")}
    )
    m.lm_head.load_state_dict({"weight": sd["lm_head.weight"]})
    return m


def search(ev_dev, groups, n: int, seed: int):
    """Random search then Gaussian perturbation of the best (half the budget each) on dev."""
    rng = random.Random(f"search-{seed}")
    best, best_s = None, -1
    for i in range(n):
        if i < n // 2 or best is None:
            g = {k: (rng.uniform(0, 1.5), rng.uniform(0, 2.0)) for k in groups}
        else:
            g = {
                k: (max(0, a + rng.gauss(0, 0.25)), max(0, b + rng.gauss(0, 0.3)))
                for k, (a, b) in best.items()
            }
        s = ev_dev(g)
        if s > best_s:
            best, best_s = g, s
    return best, best_s


def lm_state(model) -> dict:
    """Causal-LM names (``model.*``, ``lm_head.weight``) of a LLaVA's or a Llama's language model."""
    if hasattr(model, "model") and hasattr(model.model, "language_model"):
        sd = {"model." + k: v for k, v in model.model.language_model.state_dict().items()}
        sd["lm_head.weight"] = model.lm_head.weight
        return {k: v.detach().clone() for k, v in sd.items()}
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def baselines(rows) -> dict:
    kinds = collections.defaultdict(list)
    for r in rows:
        kinds[r["kind"]].append(r["answer"])
    rand = sum(len(v) / (len(COLORS) if k == "colour" else len(SHAPES)) for k, v in kinds.items())
    fixed = sum(collections.Counter(v).most_common(1)[0][1] for v in kinds.values())
    return {"random_answer": round(rand, 1), "best_fixed_answer": fixed}


def caption_qa(rng, names):
    """ja parent, vision flavour: an English caption where the image would sit, a Japanese
    question, and the answer as 'English word=Japanese word' (chain) or the Japanese word."""
    from evomm_zoo.textdata import Example

    c, sh = rng.choice(list(COLORS)), rng.choice(list(SHAPES))
    kind = rng.choice(("colour", "shape"))
    en = c if kind == "colour" else sh
    ja = COLORS[c] if kind == "colour" else SHAPES[sh]
    q = zvlm.QUESTIONS[kind][1]
    ans = f"{en}={ja}" if CHAIN[0] else ja
    return Example(f"問: a {c} {sh}. {q} 答: ", ans, eos=False)


CHAIN = [False]
FROZEN = FROZEN_IN_VLM


def train_ja_vis(zoo: Path, seed: int, chain: bool):
    from dataclasses import replace

    from evomm_zoo import textdata
    from evomm_zoo.recipe import text_recipe
    from evomm_zoo.text import finetune

    CHAIN[0] = chain
    textdata.SAMPLERS["caption_qa"] = caption_qa
    cfg = text_recipe("demo", seed).ja
    mix = {k: v * 0.7 for k, v in cfg.mix.items()}
    mix["caption_qa"] = 0.3
    model, log = finetune(zoo / "models" / "base", None, replace(cfg, mix=mix), desc="ja_vis", progress=False)
    print(f"ja_vis trained in {log['wall_s']} s, loss {log['curve'][-1]}")
    return model.eval()


def main() -> None:
    from transformers import LlamaForCausalLM

    ap = argparse.ArgumentParser()
    ap.add_argument("--zoo", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=700)
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--n-test", type=int, default=400)
    ap.add_argument("--freeze-lm", action="store_true")
    ap.add_argument("--stage1", type=int, default=0, help="steps with the LM frozen first (LLaVA stage 1)")
    ap.add_argument("--out", type=Path)
    ap.add_argument(
        "--ja",
        choices=("zoo", "vis"),
        default="zoo",
        help="zoo: <zoo>/models/ja; vis: base fine-tuned on the ja mix + caption QA",
    )
    ap.add_argument("--freeze-emb", action="store_true", help="VLM: LM embeddings and head fixed")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--search", type=int, default=0, help="per-layer random search budget (dev evals)")
    ap.add_argument("--captions", action="store_true", help="VLM also captions; stage 1 on captions")
    ap.add_argument("--chain", action="store_true", help="target answer 'red=あか' (VLM word, then ja)")
    ap.add_argument("--vlm-eos", type=int, default=1, help="train the VLM to stop after its answer")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    base = LlamaForCausalLM.from_pretrained(str(args.zoo / "models" / "base")).eval()
    ja = LlamaForCausalLM.from_pretrained(str(args.zoo / "models" / "ja")).eval()
    if args.ja == "vis":
        ja = train_ja_vis(args.zoo, args.seed, args.chain)
    model, proc = zvlm.init_vlm(args.zoo / "models" / "base", args.seed)
    rows = zvlm.vqa_rows("en_vqa", "train", args.n_train, args.seed)
    captions = [
        {
            **r,
            "prompt": zvlm.vqa_prompt("en_vqa", "What is it?"),
            "answer": f"a {r['spec'].color} {r['spec'].shape}",
        }
        for r in rows
    ]
    if args.captions:
        rows = rows + captions
    if args.stage1:
        log1 = train_vlm(
            model,
            proc,
            captions if args.captions else rows,
            steps=args.stage1,
            seed=args.seed + 100,
            freeze_lm=True,
            eos_loss=bool(args.vlm_eos),
        )
        print(f"stage 1 (LM frozen) in {log1['wall_s']} s, loss {log1['curve'][-1]}")
    log = train_vlm(
        model,
        proc,
        rows,
        steps=args.steps,
        seed=args.seed,
        freeze_lm=args.freeze_lm,
        eos_loss=bool(args.vlm_eos),
        freeze=FROZEN if args.freeze_emb else (),
        lr=args.lr,
    )
    print(f"vlm trained in {log['wall_s']} s, loss {log['curve'][-1]}")
    data = {}
    for task in ("en_vqa", "ja_vqa"):
        for split in ("dev", "test"):
            r = zvlm.vqa_rows(task, split, args.n_test if split == "test" else 200, args.seed)
            if args.chain and task == "ja_vqa":
                for x in r:
                    en = x["spec"].color if x["kind"] == "colour" else x["spec"].shape
                    x["answer"] = f"{en}={x['answer']}"
            imgs = [draw(x["spec"]) for x in r]
            perm = list(range(len(r)))
            random.Random(1).shuffle(perm)
            data[task, split] = (r, imgs, perm)
    res: dict = {"baselines_ja_test": baselines(data["ja_vqa", "test"][0]), "vlm_train_s": log["wall_s"]}

    def ev(m, task, split="test"):
        return score(m, proc, *data[task, split])

    res["vlm"] = {t: ev(model, t) for t in ("en_vqa", "ja_vqa")}
    res["ja_grafted"] = {t: ev(graft_lm(model, ja), t) for t in ("en_vqa", "ja_vqa")}
    res["base_grafted"] = {t: ev(graft_lm(model, base), t) for t in ("en_vqa", "ja_vqa")}
    b_sd, v_sd, j_sd = lm_state(base), lm_state(model), lm_state(ja)
    res["task_vector_norms"] = {
        "vlm": round(float(sum(((v_sd[k] - b_sd[k]) ** 2).sum() for k in b_sd) ** 0.5), 2),
        "ja": round(float(sum(((j_sd[k] - b_sd[k]) ** 2).sum() for k in b_sd) ** 0.5), 2),
    }
    print("task vector norms", res["task_vector_norms"])
    res["linear_0.5"] = ev(merged(model, b_sd, v_sd, j_sd, 0.5, 0.5), "ja_vqa")
    res["ta_1.0"] = ev(merged(model, b_sd, v_sd, j_sd, 1.0, 1.0), "ja_vqa")
    grid = {}
    for a in (0.5, 0.75, 1.0, 1.25):
        for b in (0.5, 1.0, 1.5, 2.0):
            grid[a, b] = ev(merged(model, b_sd, v_sd, j_sd, a, b), "ja_vqa", "dev")["right"]
    (a, b), dev = max(grid.items(), key=lambda kv: kv[1])
    res["grid_dev"] = {f"{k[0]},{k[1]}": v for k, v in grid.items()}
    res["best_ta"] = {"a": a, "b": b, "dev": dev, **ev(merged(model, b_sd, v_sd, j_sd, a, b), "ja_vqa")}
    res["best_ta_ja_zeroed"] = ev(merged(model, b_sd, v_sd, j_sd, a, 0.0), "ja_vqa")
    res["best_ta_vlm_zeroed"] = ev(merged(model, b_sd, v_sd, j_sd, 0.0, b), "ja_vqa")
    if args.search:
        groups = sorted({group(k) for k in b_sd})
        best, best_dev = search(
            lambda g: ev(merged_pl(model, b_sd, v_sd, j_sd, g), "ja_vqa", "dev")["right"],
            groups,
            args.search,
            args.seed,
        )
        res["search"] = {
            "genes": {k: [round(a, 3), round(b, 3)] for k, (a, b) in best.items()},
            "dev": best_dev,
        }
        res["search"]["test"] = ev(merged_pl(model, b_sd, v_sd, j_sd, best), "ja_vqa")
        res["search"]["ja_zeroed"] = ev(
            merged_pl(model, b_sd, v_sd, j_sd, {k: (a, 0.0) for k, (a, b) in best.items()}), "ja_vqa"
        )
        res["search"]["vlm_zeroed"] = ev(
            merged_pl(model, b_sd, v_sd, j_sd, {k: (0.0, b) for k, (a, b) in best.items()}), "ja_vqa"
        )
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(res, ensure_ascii=False, indent=1))
    if args.out:
        args.out.write_text(json.dumps(res, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
