"""Helpers of ``vision_w.py``'s fourth-attempt designs (W15s-W20s; docs/toy-zoo.md, "Issue 22",
"Fourth attempt"): a per-question-kind fitness, a pretrained (then frozen) vision tower, and TIES /
DARE-TIES merging of the per-module groups. Kept apart so that ``vision_w.py`` stays readable;
``vision_w.py`` imports this module lazily (run both from ``bench/zoo_experiments/``'s parent as
the usage line of ``vision_w.py`` shows).
"""

from __future__ import annotations

import random

import torch
from evomm_zoo import vlm as zvlm
from evomm_zoo.images import COLORS, SHAPES, draw

#: question kind -> number of classes (chance of a random well-formed answer = 1 / classes).
KIND_CLASSES = {"colour": len(COLORS), "shape": len(SHAPES)}


def kind_counts(out: list[str], rows: list[dict], cut) -> dict[str, int]:
    """Strict right answers and item counts per question kind (``strict_colour``, ``n_colour``...)."""
    res: dict[str, int] = {}
    for kind in KIND_CLASSES:
        got = [(o, r["answer"]) for o, r in zip(out, rows) if r["kind"] == kind]
        res["strict_" + kind] = sum(cut(o) == a for o, a in got)
        res["n_" + kind] = len(got)
    return res


def kind_min_fitness(r: dict) -> float:
    """W15s's dev fitness ``kindmin``: 2 x the smaller of the two kinds' gains over chance
    (strict right minus n / classes, i.e. minus a random well-formed answer's expected count),
    plus the graded term (summed char ROUGE-L). Trading shape for colour cannot raise the first
    term: it only moves when the weaker kind improves."""
    gains = [r["strict_" + k] - r["n_" + k] / c for k, c in KIND_CLASSES.items()]
    return 2 * min(gains) + r["rouge"]


# ------------------------------------------------------------------ a pretrained vision tower


def pretrain_tower(model, seed: int, steps: int = 300, lr: float = 2e-3, batch: int = 64) -> dict:
    """W17s: pretrain the VLM's (random-init) CLIP vision tower in place, as LLaVA's tower is a
    pretrained CLIP, before any VLM training: a linear head on *every* patch output of the last
    encoder layer (the features LLaVA passes to the projector, CLS dropped) predicts the image's
    colour and its shape (cross-entropy, 6 + 4 classes), so each patch must carry the whole
    image's colour and shape. Train-split images only; the head is thrown away. The projector is
    not touched (it stays at its random init when the design freezes it).

    Returns:
        ``{"loss": final loss, "acc_colour": ..., "acc_shape": ...}`` (per patch, last batch).
    """
    tower = model.model.vision_tower
    rows = zvlm.vqa_rows("en_vqa", "train", 4000, seed)
    specs = sorted({r["spec"] for r in rows}, key=repr)
    cols, shps = list(COLORS), list(SHAPES)
    torch.manual_seed(seed + 7)
    head = torch.nn.Linear(tower.config.hidden_size, len(cols) + len(shps))
    for p in tower.parameters():
        p.requires_grad_(True)
    params = list(tower.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98))
    rng = random.Random(f"tower-{seed}")
    cache: dict = {}
    tower.train()
    for _ in range(steps):
        b = rng.sample(specs, batch)
        for s in b:
            if s not in cache:
                cache[s] = zvlm.pixels([draw(s)])[0]
        pix = torch.stack([cache[s] for s in b])
        hs = tower(pixel_values=pix, output_hidden_states=True).hidden_states[-1][:, 1:]
        logits = head(hs)  # (batch, 16, 10)
        yc = torch.tensor([cols.index(s.color) for s in b]).repeat_interleave(hs.shape[1])
        ys = torch.tensor([shps.index(s.shape) for s in b]).repeat_interleave(hs.shape[1])
        lc = torch.nn.functional.cross_entropy(logits[..., : len(cols)].reshape(-1, len(cols)), yc)
        ls = torch.nn.functional.cross_entropy(logits[..., len(cols) :].reshape(-1, len(shps)), ys)
        loss = lc + ls
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    tower.eval()
    with torch.no_grad():
        ac = (logits[..., : len(cols)].reshape(-1, len(cols)).argmax(1) == yc).float().mean()
        ash = (logits[..., len(cols) :].reshape(-1, len(shps)).argmax(1) == ys).float().mean()
    return {
        "loss": round(loss.item(), 4),
        "acc_colour": round(ac.item(), 3),
        "acc_shape": round(ash.item(), 3),
    }


# ------------------------------------------------------------------ TIES / DARE-TIES


def trim(tv: dict, density: float, dare: bool, seed: int) -> dict:
    """TIES's trim (keep the ``density`` share of each tensor's entries with the largest
    magnitude) or DARE's drop (keep each entry with probability ``density``, rescaled by
    1 / density; fixed seed), per tensor of the task vector ``tv``."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in tv.items():
        if not v.abs().sum():
            out[k] = v
            continue
        if dare:
            keep = torch.rand(v.shape, generator=g) < density
            out[k] = v * keep / density
        else:
            n = max(1, int(density * v.numel()))
            thr = v.abs().flatten().kthvalue(v.numel() - n + 1).values
            out[k] = v * (v.abs() >= thr)
    return out


def ties_delta(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """TIES's sign election and disjoint sum of two weighted (already trimmed) task vectors
    ``x = a * tv``, ``y = b * tj``: the elected sign of an entry is that of ``x + y``; only the
    entries agreeing with it are summed (no mean: the coefficients carry the scale, as in
    task arithmetic)."""
    s = torch.sign(x + y)
    return x * (torch.sign(x) == s) + y * (torch.sign(y) == s)


# ------------------------------------------------------------------ W28s: align the whole prompt


def prompt_targets(vbase, tok, caption_text, hook_fn, layer: int = 0) -> dict:
    """W28s: (colour, shape, kind) -> vbase's layer-``layer`` outputs at every position from the
    caption's first character to the end of the prompt on ``Q: <caption><question> A: `` (the
    caption padded to the image's 16 tokens by ``caption_text``): the image positions *and* the
    question positions, whose layer-0 outputs in the VLM attend to the image tokens (W13s aligned
    the image positions only, so the question positions attended over projector outputs that no
    text ever produced). 48 fixed targets; the VLM's English prompt has the same length token by
    token (one character = one token), so position i of the target is position 4 + i of the VLM's
    ``<s>Q: <image x 16>question A: ``."""
    out, store = {}, {}
    hook = hook_fn(vbase.model, store, layer)
    with torch.no_grad():
        for c in COLORS:
            for s in SHAPES:
                for kind, (q, _) in zvlm.QUESTIONS.items():
                    ids = tok("Q: " + caption_text(c, s) + q + " A: ", return_tensors="pt").input_ids
                    assert ids.shape[1] == 4 + zvlm.IMAGE_TOKENS + len(q) + 4, ids.shape
                    vbase.model(input_ids=ids)
                    out[(c, s, kind)] = store["h"][0, 4:].clone()
    hook.remove()
    return out


def prompt_align_loss(h, rows, targets) -> torch.Tensor:
    """Normalised MSE between the VLM's layer outputs ``h`` (batch x width x hidden, right-padded
    rows whose prompt starts ``<s>Q: ``) and :func:`prompt_targets`, over each row's span."""
    hs, ts = [], []
    for i, r in enumerate(rows):
        t = targets[(r["spec"].color, r["spec"].shape, r["kind"])]
        hs.append(h[i, 4 : 4 + len(t)])
        ts.append(t)
    h, t = torch.cat(hs), torch.cat(ts)
    return ((h - t) ** 2).mean() / (t**2).mean()
