"""The vision half's VLM training (recipe v3): a pretrained frozen tower and a layer-0 reader.

Issue 22's design W33 (docs/toy-zoo.md, "Vision"): W31s, the first design in which a merge of
the VLM's language model with a Japanese model answers Japanese questions about images that
neither parent can, plus the alignment on Japanese-question prompts:

1. :func:`pretrain_tower`: the VLM's CLIP vision tower is pretrained (as LLaVA's tower is a
   pretrained CLIP) with a linear head on *every* patch output predicting the image's colour and
   shape, then frozen; the projector stays at its random init, frozen, so nothing descended from
   the text base alone can read the image tokens.
2. :func:`train_reader`: of the VLM's language model only decoder layer 0 learns (English VQA +
   a text rehearsal loss on the vision base's own mix + :func:`prompt_align_loss`, which pulls
   layer 0's outputs over the whole prompt towards the vision base's outputs on the image's
   caption in the same place; also on Japanese-question prompts, ``問: <image>なにいろ？ 答: ``
   against ``問: <English caption>なにいろ？ 答: ``, alignment only: no Japanese answer is
   trained). The VLM's task vector is then a *reader*: it turns image tokens
   into what the base's later layers would see for a caption, so the Japanese parent's later
   layers (fine-tuned from the same base to answer Japanese questions about captions) answer
   from it in Japanese.

The evolved merge takes the VLM's layer 0 and the Japanese parent's later layers in proportions
the search finds; neither parent answers a Japanese question about an image alone.
"""

from __future__ import annotations

import random
import time
from typing import Any

from evomm_zoo import vlm as zvlm
from evomm_zoo.images import COLORS, SHAPES, draw


def caption_text(color: str, shape: str) -> str:
    """The image's English caption as the vision base reads it (``red circle. ``), left-padded with
    spaces to the image's token count (one character = one token), so the caption's last character
    sits where the last image token sits; ``yellow triangle. `` (17) drops its space."""
    text = f"{color} {shape}. "
    if len(text) > zvlm.IMAGE_TOKENS:
        text = text.rstrip()
    return text.rjust(zvlm.IMAGE_TOKENS)


def _record_layer(lm: Any, store: dict, layer: int = 0) -> Any:
    """A forward hook on decoder layer ``layer`` of a Llama model keeping its output in ``store["h"]``."""

    def keep(module: Any, args: Any, out: Any) -> None:
        store["h"] = out[0] if isinstance(out, tuple) else out

    return lm.layers[layer].register_forward_hook(keep)


def prompt_targets(vbase: Any, tokenizer: Any, lang: int = 0) -> dict[tuple[str, str, str], Any]:
    """(colour, shape, question kind) -> the vision base's layer-0 outputs at every position from
    the caption's first character to the end of ``Q: <padded caption><question> A: ``: 48 fixed
    targets. The VLM's English prompt ``<s>Q: <image x 16><question> A: `` has the same length
    token by token, so target position i is the VLM's position 4 + i. ``lang=1``: the Japanese
    prompt ``問: <padded English caption><Japanese question> 答: `` (the caption stays English).

    Raises:
        ValueError: the tokenizer is not the zoo's character-level one (lengths differ).
    """
    import torch

    out, store = {}, {}
    hook = _record_layer(vbase.model, store)
    try:
        with torch.no_grad():
            for c in COLORS:
                for s in SHAPES:
                    for kind in zvlm.QUESTIONS:
                        q = zvlm.QUESTIONS[kind][lang]
                        pre, post = ("Q: ", " A: ") if lang == 0 else ("問: ", " 答: ")
                        ids = tokenizer(pre + caption_text(c, s) + q + post, return_tensors="pt").input_ids
                        if ids.shape[1] != 4 + zvlm.IMAGE_TOKENS + len(q) + 4:
                            raise ValueError(f"caption prompt has {ids.shape[1]} tokens; the zoo tokenizer "
                                             "gives one per character")
                        vbase.model(input_ids=ids)
                        out[(c, s, kind)] = store["h"][0, 4:].clone()
    finally:
        hook.remove()
    return out


def prompt_align_loss(h: Any, rows: list[dict], targets: dict) -> Any:
    """Normalised MSE between layer-0 outputs ``h`` (batch x width x hidden; right-padded rows
    whose prompt starts ``<s>Q: ``) and :func:`prompt_targets`, over each row's span."""
    import torch

    hs, ts = [], []
    for i, r in enumerate(rows):
        t = targets[(r["spec"].color, r["spec"].shape, r["kind"])]
        hs.append(h[i, 4 : 4 + len(t)])
        ts.append(t)
    hh, tt = torch.cat(hs), torch.cat(ts)
    return ((hh - tt) ** 2).mean() / (tt**2).mean()


def pretrain_tower(model: Any, rows: list[dict], *, steps: int, seed: int, lr: float = 2e-3,
                   batch_size: int = 64, progress: bool = False) -> dict[str, Any]:  # fmt: skip
    """Pretrain the VLM's vision tower in place on the images of ``rows`` (per-patch colour and
    shape heads, cross-entropy; the head is thrown away) and freeze it.

    Returns:
        ``{"curve": [[step, loss]], "acc_colour", "acc_shape"`` (per patch, last batch), ``"wall_s"}``.
    """
    import torch
    from tqdm.auto import tqdm

    tower = model.model.vision_tower
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
    curve, t0, every = [], time.perf_counter(), max(1, steps // 30)
    tower.train()
    for step in tqdm(range(steps), desc="vision tower", disable=not progress, leave=False):
        b = rng.sample(specs, min(batch_size, len(specs)))
        for s in b:
            if s not in cache:
                cache[s] = zvlm.pixels([draw(s)])[0]
        hs = tower(pixel_values=torch.stack([cache[s] for s in b]), output_hidden_states=True).hidden_states[-1][:, 1:]
        logits = head(hs)
        yc = torch.tensor([cols.index(s.color) for s in b]).repeat_interleave(hs.shape[1])
        ys = torch.tensor([shps.index(s.shape) for s in b]).repeat_interleave(hs.shape[1])
        lc = torch.nn.functional.cross_entropy(logits[..., : len(cols)].reshape(-1, len(cols)), yc)
        ls = torch.nn.functional.cross_entropy(logits[..., len(cols) :].reshape(-1, len(shps)), ys)
        loss = lc + ls
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if (step + 1) % every == 0 or step + 1 == steps:
            curve.append([step + 1, round(loss.item(), 4)])
    tower.eval()
    with torch.no_grad():
        ac = (logits[..., : len(cols)].reshape(-1, len(cols)).argmax(1) == yc).float().mean().item()
        ash = (logits[..., len(cols) :].reshape(-1, len(shps)).argmax(1) == ys).float().mean().item()
    return {"curve": curve, "acc_colour": round(ac, 3), "acc_shape": round(ash, 3),
            "wall_s": round(time.perf_counter() - t0, 2)}  # fmt: skip


def train_reader(model: Any, processor: Any, rows: list[dict], targets: dict, *, steps: int, seed: int,
                 rehearse_mix: dict[str, float], lr: float = 1e-3, batch_size: int = 32,
                 rehearse: float = 0.3, align: float = 1.0, layers: tuple[int, ...] = (0,),
                 ja_rows: list[dict] | None = None, ja_targets: dict | None = None, align_ja: float = 0.0,
                 progress: bool = False) -> dict[str, Any]:  # fmt: skip
    """Train the VLM in place with only the language model's decoder ``layers`` learning (the
    tower, projector, other layers, norms, embeddings and head stay fixed): VQA cross-entropy on
    ``rows`` + ``align`` x :func:`prompt_align_loss` + ``rehearse`` x the text loss on batches of
    ``rehearse_mix`` (AdamW, 5% warm-up then cosine to 10%). ``align_ja`` > 0: also align layer 0
    on Japanese-question prompts (``ja_rows`` with ``ja_targets`` from ``prompt_targets(lang=1)``;
    16 a step, alignment only: no Japanese answer is trained).

    Returns:
        ``{"curve": [[step, loss]], "align": last alignment loss, "wall_s"}``.
    """
    import torch
    from tqdm.auto import tqdm

    from evomm_zoo.text import TrainConfig, collate, lr_factor
    from evomm_zoo.textdata import MixStream

    learn = tuple(f"language_model.layers.{i}." for i in layers)
    for name, p in model.named_parameters():
        p.requires_grad_(any(k in name for k in learn))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, TrainConfig(steps=steps, lr=lr)))
    rng = random.Random(f"vlm2-{seed}")
    stream = MixStream(rehearse_mix, seed + 100)
    tok = processor.tokenizer
    cache: dict = {}
    store: dict = {}
    hook = _record_layer(model.model.language_model, store)
    curve, acc, t0, every, la = [], [], time.perf_counter(), max(1, steps // 30), None
    model.train()
    try:
        for step in tqdm(range(steps), desc="vlm reader", disable=not progress, leave=False):
            batch_rows = rng.sample(rows, min(batch_size, len(rows)))
            loss = model(**zvlm.collate_vqa(processor, batch_rows, cache)).loss
            la = prompt_align_loss(store["h"], batch_rows, targets)
            loss = loss + align * la
            if align_ja and ja_rows and ja_targets:
                jb = rng.sample(ja_rows, min(16, len(ja_rows)))
                batch = zvlm.collate_vqa(processor, jb, cache)
                model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      pixel_values=batch["pixel_values"])  # fmt: skip
                loss = loss + align_ja * prompt_align_loss(store["h"], jb, ja_targets)
            if rehearse:
                loss = loss + rehearse * model(**collate(tok, stream.batch(16))).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            acc.append(loss.item())
            if (step + 1) % every == 0 or step + 1 == steps:
                curve.append([step + 1, round(sum(acc) / len(acc), 4)])
                acc = []
    finally:
        hook.remove()
        model.eval()
        for p in model.parameters():
            p.requires_grad_(True)
    return {"curve": curve, "align": None if la is None else round(la.item(), 4),
            "wall_s": round(time.perf_counter() - t0, 2)}  # fmt: skip
