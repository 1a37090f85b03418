"""Helpers of ``vision_w.py``'s fourth-attempt designs (W15s-W20s; docs/toy-zoo.md, "Issue 22",
"Fourth attempt"): a per-question-kind fitness, a pretrained (then frozen) vision tower, and TIES /
DARE-TIES merging of the per-module groups. Kept apart so that ``vision_w.py`` stays readable;
``vision_w.py`` imports this module lazily (run both from ``bench/zoo_experiments/``'s parent as
the usage line of ``vision_w.py`` shows).
"""

from __future__ import annotations

import torch
from evomm_zoo import vlm as zvlm
from evomm_zoo.images import COLORS, SHAPES

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
    """W17s: pretrain the VLM's (random-init) CLIP vision tower in place before any VLM training
    (per-patch colour + shape heads on the train images; the zoo's recipe v3 does the same:
    :func:`evomm_zoo.reader.pretrain_tower`, which this calls)."""
    from evomm_zoo.reader import pretrain_tower as zoo_pretrain

    rows = zvlm.vqa_rows("en_vqa", "train", 4000, seed)
    res = zoo_pretrain(model, rows, steps=steps, seed=seed, lr=lr, batch_size=batch)
    return {"loss": res["curve"][-1][1], "acc_colour": res["acc_colour"], "acc_shape": res["acc_shape"]}


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


def prompt_targets(vbase, tok, caption_text=None, hook_fn=None, layer: int = 0) -> dict:
    """W28s: vbase's layer-0 outputs over the whole English prompt with the caption in the image's
    place (:func:`evomm_zoo.reader.prompt_targets`, which the zoo's recipe v3 uses; layer 0 only)."""
    from evomm_zoo.reader import prompt_targets as zoo_targets

    if layer != 0:
        raise ValueError("the whole-prompt targets are layer 0's")
    return zoo_targets(vbase, tok)


def prompt_align_loss(h, rows, targets):
    """The normalised MSE of :func:`prompt_targets` (:func:`evomm_zoo.reader.prompt_align_loss`)."""
    from evomm_zoo.reader import prompt_align_loss as zoo_loss

    return zoo_loss(h, rows, targets)
