"""Issue 22 designs W*: a bilingual caption-reading base shared by the VLM and the ja parent.

One run = one design x one seed, all in plain torch on top of a text base (``--base``):

1. vbase: the text base continued on its own mix (rehearsal) + caption QA in both languages,
   the caption sitting where the image will sit (``Q: red circle. What colour is it? A: red``,
   ``問: あかのまる。なにいろ？ 答: あか``).
2. ja parent: vbase fine-tuned to answer Japanese questions in Japanese, whatever the context's
   language (``問: red circle. なにいろ？ 答: あか``), + Japanese caption QA + the zoo's other
   Japanese questions; embeddings and head frozen.
3. VLM: a tiny LLaVA on vbase; stage 1 (LM frozen, tower + projector) on English VQA, stage 2
   (LM layers too, embeddings/head frozen) on English VQA + Japanese questions answered in English
   + text rehearsal.
4. Merges of the LM (vision tower and projector from the VLM): untuned linear 0.5/0.5 and TA 1/1,
   the grafted ja (= VLM genes zeroed), per-layer task arithmetic searched by CMA-ES on dev
   (fitness: strict + char ROUGE-L), reported on test with an image-shuffled control.

Results and the next designs: docs/toy-zoo.md, "Issue 22". Models are kept under ``--cache``
(``<design>_s<seed>/{vbase,ja,vlm}``; each is reused when present, so W6s/W7s/W3m run on W3s's
models and W9s/W10s/W11s on W8s's by copying them in first). Per-layer-and-module genes:
``per_module`` (2 or 4 genes per layer and parent); image-use fitness: ``fit="image"``; a stage-2
loss pulling the VLM LM's layer-0 outputs at the image positions towards vbase's on the image's
English caption (W13s, W14s): ``align`` (its weight). Fourth attempt (W15s-W32s, helpers in
``vision_w2.py``): ``fit="kindmin"``, ``align_layer``, ``tower`` (pretrain the tower, then freeze
it), ``s1_layers`` (the VLM's LM learns only these layers), ``align_span="prompt"``, ``dev`` (dev
items), ``ties`` (TIES / DARE-TIES), ``hidden`` (a larger base from ``vision_base.py``). Designs that only differ in the search can
share models: copy ``vbase``, ``ja`` (and ``vlm``) into the new design's cache directory first.

Usage::

    nice -n 5 .venv/bin/python bench/zoo_experiments/vision_w.py --base ~/.cache/evomm/zoo/demo-v2-s0/models/base \
        --seed 0 --design W1 --out /tmp/w1_s0.json
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import time
from pathlib import Path

import torch
import vision_w2 as vw2
from evomm_zoo import textdata as td
from evomm_zoo import vlm as zvlm
from evomm_zoo.images import draw
from evomm_zoo.scoring import char_rouge_l as rouge_l  # the zoo's graded VQA metric
from evomm_zoo.text import TrainConfig, collate, train_lm
from evomm_zoo.textdata import MixStream
from vision_vqa import FROZEN_IN_VLM


def cut(text: str) -> str:
    for sep in (" ", "。", "、", "\n", "？", "?", "."):
        text = text.split(sep)[0]
    return text.strip()


# W9s: W8s's models with a gene per layer *and module*; W10s-W14s vary it
_W9S = dict(s1=0, s2=600, ja_en=0.0, rehearse=0.3, vbase=400, ja_steps=300, freeze_vision=True, per_module=True)
# W21s (fourth attempt): a pretrained, frozen tower; the VLM's LM learns in layer 0 only
_W21S = {**_W9S, "align": 1.0, "tower": 300, "s1": 600, "s1_layers": (0,), "s2": 0}
_W24S = {**_W21S, "tower": 1000}  # W21s with the tower pretrained 1000 steps

DESIGNS = {
    # stage-1 steps, stage-2 steps, share of ja questions answered in English, rehearsal weight
    "W1": dict(s1=300, s2=500, ja_en=0.2, rehearse=0.3, vbase=400, ja_steps=300),
    "W2": dict(s1=0, s2=800, ja_en=0.2, rehearse=0.3, vbase=400, ja_steps=300),
    # W3 with half the VLM steps (a screen; vbase and ja copied from W1's cache)
    "W3s": dict(s1=150, s2=250, ja_en=0.0, rehearse=0.3, vbase=400, ja_steps=300),
    # W3s without stage 1 (is the projector then unreadable by the ja parent alone?)
    "W4s": dict(s1=0, s2=400, ja_en=0.0, rehearse=0.3, vbase=400, ja_steps=300),
    # W3s with a ja parent closer to vbase (100 steps)
    "W5s": dict(s1=150, s2=250, ja_en=0.0, rehearse=0.3, vbase=400, ja_steps=100),
    # a smoke test of the script (seconds of CPU, meaningless numbers)
    "Wq": dict(s1=3, s2=3, ja_en=0.2, rehearse=0.3, vbase=3, ja_steps=3),
    "W3": dict(s1=300, s2=500, ja_en=0.0, rehearse=0.3, vbase=400, ja_steps=300),
    # W3s's models (copy vbase, ja and vlm into the cache) searched with a fitness that rewards
    # image use: dev strict minus dev strict with shuffled images, plus the graded term
    "W6s": dict(s1=150, s2=250, ja_en=0.0, rehearse=0.3, vbase=400, ja_steps=300, fit="image"),
    # W3s with a ja parent that never sees an English caption (no caption_cross): reading an
    # English-like context and answering in Japanese is left to the merge, so that the grafted ja
    # parent should not read the projector's image tokens (copy vbase and vlm from W3s)
    "W7s": dict(s1=150, s2=250, ja_en=0.0, rehearse=0.3, vbase=400, ja_steps=300, ja_mix="nocross"),
    # the vision tower and projector frozen at their random init, only the LM layers learn to
    # read the image tokens: nothing descended from vbase alone can read them, so the VLM's LM
    # vector is needed to see (copy vbase and ja from W3s)
    "W8s": dict(s1=0, s2=600, ja_en=0.0, rehearse=0.3, vbase=400, ja_steps=300, freeze_vision=True),
    # W8s's / W3s's models (copy vbase, ja and vlm in) with a gene per layer *and module*
    # (attention + its norm, MLP + its norm) and per parent: 14 genes instead of 8
    "W9s": _W9S,
    # W9s with W6s's image-use fitness (strict - shuffled strict + graded on dev)
    "W10s": {**_W9S, "fit": "image"},
    # W9s with four genes per layer and parent (q/k; v/o + input norm; gate/up + post norm; down): 26 genes
    "W11s": {**_W9S, "per_module": 4},
    # W9s searched with a wider CMA-ES: population 16, initial step 0.8 (instead of 10 and 0.4)
    "W12s": {**_W9S, "popsize": 16, "sigma": 0.8},
    # W9s + a stage-2 loss pulling the VLM LM's layer-0 outputs at the 16 image positions towards
    # vbase's layer-0 outputs on the image's English caption (``caption_targets``), weight ``align``
    "W13s": {**_W9S, "align": 1.0},
    # W13s with the alignment weighted 5 (W13s learnt only the image-independent part of the targets)
    "W14s": {**_W9S, "align": 5.0},
    # ---- fourth attempt (docs/toy-zoo.md): helpers in vision_w2.py
    # W13s's models (copy vbase, ja, vlm) searched with the per-kind fitness: 2 x min over
    # (colour, shape) of strict minus chance, + graded (vision_w2.kind_min_fitness)
    "W15s": {**_W9S, "align": 1.0, "fit": "kindmin"},
    # W13s aligning the output of layer 1 (VLM layers 0-1 + ja layer 2 is the built-in composition)
    "W16s": {**_W9S, "align": 1.0, "align_layer": 1},
    # W13s on a pretrained vision tower (per-patch colour + shape classification, 300 steps; then
    # frozen; the projector stays at its random init, frozen: vision_w2.pretrain_tower)
    "W17s": {**_W9S, "align": 1.0, "tower": 300},
    # W21s / W24s / W28s on a larger text base: hidden 128, 4 layers, MLP 512 (vision_base.py, as --base)
    "W18s": {**_W21S, "hidden": 128},
    "W29s": {**_W24S, "hidden": 128},
    "W32s": {**_W24S, "align_span": "prompt", "hidden": 128},
    # W24s's models searched through TIES / DARE-TIES (density 0.5)
    "W19s": {**_W24S, "ties": {"density": 0.5}},
    "W20s": {**_W24S, "ties": {"density": 0.5, "dare": True}},
    # the VLM's LM learns in layer 0 only (layers 1-2 and final norm stay vbase's): a reader whose
    # outputs vbase's later layers answer from; W21s on W17s's pretrained tower, W22s on the random one
    "W21s": _W21S,
    "W22s": {**_W21S, "tower": 0},
    # W21s's models (copy vbase, ja, vlm) searched with W15s's per-kind fitness
    "W23s": {**_W21S, "fit": "kindmin"},
    # W21s with the tower pretrained 1000 steps instead of 300 (per-patch shape accuracy 0.89 at 300)
    "W24s": _W24S,
    # W24s aligning the whole prompt's layer-0 outputs (image + question positions; vision_w2.prompt_targets)
    "W28s": {**_W24S, "align_span": "prompt"},
    "W30s": {**_W24S, "align_span": "prompt", "align": 3.0},  # W28s with the alignment weighted 3
    "W31s": {**_W24S, "align_span": "prompt", "dev": 400},  # W28s searched on 400 dev items
    "W3m": dict(s1=150, s2=250, ja_en=0.0, rehearse=0.3, vbase=400, ja_steps=300, per_module=True),
}

#: ja parent mixes: the default (``td.JA_VLM_MIX``) and W7s's, without ``caption_cross``.
JA_MIXES = {"nocross": {"caption_ja": 0.7, "ja_other_eos": 0.3}}


def vbase_mix() -> dict[str, float]:
    return dict(td.VBASE_MIX)


JA_V_MIX = td.JA_VLM_MIX


# ------------------------------------------------------------------ VLM training


def caption_text(color: str, shape: str) -> str:
    """W13s: the image's English caption padded to the image's token count
    (:func:`evomm_zoo.reader.caption_text`, which the zoo's recipe v3 uses)."""
    from evomm_zoo.reader import caption_text as zoo_caption

    return zoo_caption(color, shape)


def layer0_hook(lm, store: dict, layer: int = 0):
    """Record the output of decoder layer ``layer`` (0 unless W16s) of ``lm`` (a Llama model) in ``store["h"]``."""

    def keep(module, args, out):
        store["h"] = out[0] if isinstance(out, tuple) else out

    return lm.layers[layer].register_forward_hook(keep)


def caption_targets(vbase, tok, layer: int = 0) -> dict:
    """(colour, shape) -> vbase's layer-``layer`` outputs (IMAGE_TOKENS x hidden) on the padded
    caption after ``Q: `` (the VLM's English prompt prefix): 24 fixed targets."""
    from evomm_zoo.images import COLORS, SHAPES

    out, store = {}, {}
    hook = layer0_hook(vbase.model, store, layer)
    with torch.no_grad():
        for c in COLORS:
            for s in SHAPES:
                ids = tok("Q: " + caption_text(c, s), return_tensors="pt").input_ids
                assert ids.shape[1] == 4 + zvlm.IMAGE_TOKENS, ids.shape
                vbase.model(input_ids=ids)
                out[(c, s)] = store["h"][0, -zvlm.IMAGE_TOKENS :].clone()
    hook.remove()
    return out


def train_vlm2(model, processor, rows, *, steps, lr, seed, freeze_lm, rehearse, tok, freeze_vision=False,
               align=0.0, targets=None, align_layer=0, only_layers=None):  # fmt: skip
    """Like zvlm.train_vlm, plus a text rehearsal loss (vbase's mix) weighted ``rehearse``;
    ``freeze_vision``: the vision tower and projector stay at their (random) init; ``align``
    (W13s): weight of the normalised MSE between the LM's layer-0 outputs at the image positions
    and ``targets[(colour, shape)]`` (:func:`caption_targets`); ``only_layers`` (W21s): of the LM,
    only these decoder layers learn."""
    import math

    for name, p in model.named_parameters():
        lm = "language_model" in name or name.startswith("lm_head")
        vis = "vision_tower" in name or "multi_modal_projector" in name
        frozen = (freeze_lm and lm) or (freeze_vision and vis) or name.startswith(FROZEN_IN_VLM)
        if only_layers is not None and lm:
            frozen = frozen or not any(f"language_model.layers.{i}." in name for i in only_layers)
        p.requires_grad_(not frozen)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98))
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            (s + 1) / warm
            if s < warm
            else 0.1 + 0.45 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm)))
        ),
    )
    rng = random.Random(f"vlm2-{seed}")
    stream = MixStream(vbase_mix(), seed + 100)
    cache: dict = {}
    store: dict = {}
    hook = layer0_hook(model.model.language_model, store, align_layer) if align else None
    image_id = tok.convert_tokens_to_ids(zvlm.IMAGE_MARK)
    model.train()
    for step in range(steps):
        batch_rows = rng.sample(rows, 32)
        batch = zvlm.collate_vqa(processor, batch_rows, cache)
        loss = model(**batch).loss
        if align and len(next(iter(targets))) == 3:  # W28s: image and question positions
            la = vw2.prompt_align_loss(store["h"], batch_rows, targets)
        elif align:
            h = store["h"][batch["input_ids"] == image_id].view(len(batch_rows), zvlm.IMAGE_TOKENS, -1)
            t = torch.stack([targets[(r["spec"].color, r["spec"].shape)] for r in batch_rows])
            la = ((h - t) ** 2).mean() / (t**2).mean()
        if align:
            loss = loss + align * la
            if step in (0, steps // 2) or step == steps - 1:
                print(f"align step {step}: {la.item():.4f}", flush=True)
        if rehearse and not freeze_lm:
            loss = loss + rehearse * model(**collate(tok, stream.batch(16))).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
    if hook is not None:
        hook.remove()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return round(loss.item(), 4)


# ------------------------------------------------------------------ scoring and merging


class Scorer:
    def __init__(self, processor, rows, shuffle_seed=0):
        self.processor, self.rows = processor, rows
        self.images = [draw(r["spec"]) for r in rows]
        perm = list(range(len(rows)))
        random.Random(shuffle_seed).shuffle(perm)
        self.shuf = [self.images[i] for i in perm]
        self.prompts = [r["prompt"] for r in rows]

    def score(self, model, shuffled=False, sample=0):
        out = zvlm.generate_answers(model, self.processor, self.prompts, self.images, max_new_tokens=6)
        res = self._metrics(out, "")
        if shuffled:
            so = zvlm.generate_answers(model, self.processor, self.prompts, self.shuf, max_new_tokens=6)
            res.update(self._metrics(so, "shuffled_"))
        if sample:
            res["sample"] = out[:sample]
        return res

    def _metrics(self, out, pre):
        strict = sum(cut(o) == r["answer"] for o, r in zip(out, self.rows))
        graded = sum(rouge_l(cut(o), r["answer"]) for o, r in zip(out, self.rows))
        exact = sum(o.strip() == r["answer"] for o, r in zip(out, self.rows))
        kinds = {pre + k: v for k, v in vw2.kind_counts(out, self.rows, cut).items()}
        return kinds | {
            pre + "exact": exact,
            pre + "strict": strict,
            pre + "rouge": round(graded, 2),
            pre + "n": len(self.rows),
        }


def lm_sd(model) -> dict:
    sd = {"model." + k: v.clone() for k, v in model.model.language_model.state_dict().items()}
    sd["lm_head.weight"] = model.lm_head.weight.detach().clone()
    return sd


def group(key: str, per_module: bool = False) -> int:
    """Gene group of a weight: its decoder layer (or, ``per_module``, 2 x layer + 0 for the
    attention and its norm, + 1 for the MLP and its norm); -1: final norm (embeddings and head
    have zero task vectors)."""
    if key.startswith("model.layers."):
        layer = int(key.split(".")[2])
        if not per_module:
            return layer
        if per_module == 4:  # W11s: q/k, v/o + input norm, gate/up + post norm, down
            sub = next(i for i, ns in enumerate(_FINE) if any(n in key for n in ns))
            return 4 * layer + sub
        return 2 * layer + (1 if (".mlp." in key or "post_attention_layernorm" in key) else 0)
    return -1


_FINE = (
    ("q_proj", "k_proj"),
    ("v_proj", "o_proj", "input_layernorm"),
    ("gate_proj", "up_proj", "post_attention"),
    ("down_proj",),
)


def genes_per_layer(per_module) -> int:
    """Genes per decoder layer and parent: 1 (W1-W8s), 2 (``per_module=True``) or 4."""
    return 4 if per_module == 4 else 2 if per_module else 1


class Merger:
    def __init__(self, vlm, base_sd, vlm_sd, ja_sd, layers, per_module=False, ties=None):
        self.vlm, self.base, self.layers = copy.deepcopy(vlm), base_sd, layers * genes_per_layer(per_module)
        self.per_module, self.ties = per_module, ties
        self.tv = {k: vlm_sd[k] - base_sd[k] for k in base_sd}
        self.tj = {k: ja_sd[k] - base_sd[k] for k in base_sd}
        if ties:  # W19s/W20s: {"density": d, "dare": bool}; trimmed once (the masks do not
            # depend on the coefficients), sign election per merge (vision_w2.ties_delta)
            self.tv = vw2.trim(self.tv, ties["density"], ties.get("dare", False), 1)
            self.tj = vw2.trim(self.tj, ties["density"], ties.get("dare", False), 2)

    def __call__(self, a, b):
        """a, b: per group (layers then final norm) coefficient lists, or scalars."""
        if not isinstance(a, (list, tuple)):
            a = [a] * (self.layers + 1)
        if not isinstance(b, (list, tuple)):
            b = [b] * (self.layers + 1)
        sd = {}
        for k, w in self.base.items():
            g = group(k, self.per_module)
            x, y = a[g] * self.tv[k], b[g] * self.tj[k]
            sd[k] = w + (vw2.ties_delta(x, y) if self.ties else x + y)
        self.vlm.model.language_model.load_state_dict(
            {k[6:]: v for k, v in sd.items() if k.startswith("model.")}
        )
        self.vlm.lm_head.load_state_dict({"weight": sd["lm_head.weight"]})
        return self.vlm


def fitness(r, mode="plain"):
    """Dev fitness: strict + graded; ``image``: strict - shuffled strict + graded (rewards image
    use); ``kindmin``: :func:`vision_w2.kind_min_fitness` (W15s)."""
    if mode == "kindmin":
        return vw2.kind_min_fitness(r)
    if mode == "image":
        return r["strict"] - r["shuffled_strict"] + r["rouge"]
    return r["strict"] + r["rouge"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--design", default="W1")
    ap.add_argument("--out", required=True)
    ap.add_argument("--evals", type=int, default=120)
    ap.add_argument("--cache", default="/tmp/v22/models")
    args = ap.parse_args()
    torch.set_num_threads(1)
    d = DESIGNS[args.design]
    seed = args.seed
    from transformers import AutoTokenizer, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(args.base)
    t0 = time.perf_counter()
    times = {}
    if "hidden" in d:  # W18s runs on a larger base only
        assert json.loads((Path(args.base) / "config.json").read_text())["hidden_size"] == d["hidden"]
    mdir = Path(args.cache) / f"{args.design}_s{seed}"
    ft = dict(lr=1e-3, batch_size=32, freeze=("model.embed_tokens.", "lm_head."), seed=seed)
    if (mdir / "vbase" / "config.json").is_file():
        vbase = LlamaForCausalLM.from_pretrained(str(mdir / "vbase"))
    else:
        vbase = LlamaForCausalLM.from_pretrained(args.base)
        train_lm(
            vbase, tok, TrainConfig(steps=d["vbase"], lr=1e-3, mix=vbase_mix(), seed=seed), progress=False
        )
        times["vbase"] = round(time.perf_counter() - t0, 1)
        vbase.save_pretrained(str(mdir / "vbase"))
        tok.save_pretrained(str(mdir / "vbase"))
    if (mdir / "ja" / "config.json").is_file():
        ja = LlamaForCausalLM.from_pretrained(str(mdir / "ja"))
    else:
        ja = copy.deepcopy(vbase)
        mix = dict(JA_MIXES[d["ja_mix"]] if "ja_mix" in d else JA_V_MIX)
        train_lm(ja, tok, TrainConfig(steps=d["ja_steps"], mix=mix, **ft), progress=False)
        ja.save_pretrained(str(mdir / "ja"))
        times["ja"] = round(time.perf_counter() - t0, 1)
    if (mdir / "vlm" / "config.json").is_file():  # reused (W6s/W7s: W3s's VLM copied in)
        from transformers import LlavaForConditionalGeneration

        model = LlavaForConditionalGeneration.from_pretrained(str(mdir / "vlm")).eval()
        processor = zvlm.build_processor(tok)
    else:
        model, processor = zvlm.init_vlm(mdir / "vbase", seed)
        if d.get("tower"):  # W17s: a pretrained tower (then frozen by ``freeze_vision``)
            res_tower = vw2.pretrain_tower(model, seed, steps=d["tower"])
            print("tower", res_tower, flush=True)
            times["tower"], times["tower_fit"] = round(time.perf_counter() - t0, 1), res_tower
        en = zvlm.vqa_rows("en_vqa", "train", 4000, seed)
        jq = zvlm.vqa_rows("ja_vqa", "train", 4000, seed)
        for r in jq:
            r["answer"] = r["spec"].color if r["kind"] == "colour" else r["spec"].shape
        kw = dict(freeze_vision=d.get("freeze_vision", False), align=d.get("align", 0.0),
                  targets=(vw2.prompt_targets(vbase, tok, caption_text, layer0_hook, d.get("align_layer", 0))
                           if d.get("align_span") == "prompt" else caption_targets(vbase, tok, d.get("align_layer", 0))
                           ) if d.get("align") else None,
                  align_layer=d.get("align_layer", 0))  # fmt: skip
        if d.get("s1_layers") is not None:  # W21s: stage 1 trains only these LM layers (+ align, rehearsal)
            train_vlm2(model, processor, en, steps=d["s1"], lr=1e-3, seed=seed, freeze_lm=False,
                       rehearse=d["rehearse"], tok=tok, only_layers=d["s1_layers"], **kw)  # fmt: skip
        elif d["s1"]:
            train_vlm2(
                model, processor, en, steps=d["s1"], lr=2e-3, seed=seed, freeze_lm=True, rehearse=0, tok=tok
            )
        rows2 = en + jq[: int(len(en) * d["ja_en"] / (1 - d["ja_en"]))] if d["ja_en"] else en
        if d["s2"]:
            train_vlm2(model, processor, rows2, steps=d["s2"], lr=d.get("s2_lr", 1e-3), seed=seed,
                       freeze_lm=False, rehearse=d["rehearse"], tok=tok, **kw)  # fmt: skip
        times["vlm"] = round(time.perf_counter() - t0, 1)
        zvlm.save_vlm(model, processor, mdir / "vlm")
    mode = d.get("fit", "plain")
    shuf_dev = mode == "image"

    ja_dev = Scorer(processor, zvlm.vqa_rows("ja_vqa", "dev", d.get("dev", 200), seed))
    en_test = Scorer(processor, zvlm.vqa_rows("en_vqa", "test", 400, seed))
    ja_test = Scorer(processor, zvlm.vqa_rows("ja_vqa", "test", 400, seed))
    per_module = d.get("per_module", False)
    L = vbase.config.num_hidden_layers * genes_per_layer(per_module)  # gene groups before the final norm
    base_sd = dict(vbase.state_dict())
    ja_sd = dict(ja.state_dict())
    merger = Merger(model, base_sd, lm_sd(model), ja_sd, vbase.config.num_hidden_layers, per_module)
    # W19s/W20s: the searched merges (grid, CMA-ES, evolved, ablations) by TIES / DARE-TIES; the
    # parents and the untuned merges stay plain
    smerger = Merger(model, base_sd, lm_sd(model), ja_sd, merger.layers // genes_per_layer(per_module),
                     per_module, d["ties"]) if d.get("ties") else merger  # fmt: skip
    res = {"design": args.design, "seed": seed, "times": times, "test": {}, "dev": {}, "fitness": mode}

    def report(name, a, b, mg=merger):
        m = mg(a, b)
        res["test"][name] = {
            "ja": ja_test.score(m, shuffled=True, sample=6),
            "en": en_test.score(m, shuffled=True),
        }
        print(name, json.dumps(res["test"][name], ensure_ascii=False), flush=True)

    report("vlm", 1.0, 0.0)
    report("ja_grafted", 0.0, 1.0)
    report("linear_0.5", 0.5, 0.5)
    report("ta_1_1", 1.0, 1.0)
    if d.get("align"):  # the composition W13s builds in (a diagnostic, not searched): the VLM's
        # layer 0 (both modules; W16s: layers 0-1), the ja parent's later layers and final norm
        g = genes_per_layer(per_module) * (1 + d.get("align_layer", 0))
        report("constructed", [1.0] * g + [0.0] * (L + 1 - g), [0.0] * g + [1.0] * (L + 1 - g))
    grid = {}
    for a in (0.5, 1.0, 1.5):
        for b in (0.5, 1.0, 1.5, 2.0):
            grid[(a, b)] = ja_dev.score(smerger(a, b), shuffled=shuf_dev)
    best = max(grid, key=lambda k: fitness(grid[k], mode))
    res["dev"]["grid"] = {f"{a},{b}": v for (a, b), v in grid.items()}
    print("grid best", best, grid[best], flush=True)
    report("best_uniform", *best, mg=smerger)
    import cma

    x0 = [best[0]] * (L + 1) + [best[1]] * (L + 1)
    es = cma.CMAEvolutionStrategy(
        x0,
        d.get("sigma", 0.4),
        {"bounds": [-1, 3], "popsize": d.get("popsize", 10), "seed": seed + 1, "verbose": -9},
    )
    n, bestx, bestf = 0, x0, fitness(grid[best], mode)
    while n < args.evals:
        xs = es.ask()
        fs = []
        for x in xs:
            r = ja_dev.score(smerger(list(x[: L + 1]), list(x[L + 1 :])), shuffled=shuf_dev)
            f = fitness(r, mode)
            fs.append(-f)
            if f > bestf:
                bestf, bestx = f, list(x)
        es.tell(xs, fs)
        n += len(xs)
        print("cma", n, round(bestf, 2), flush=True)
    bestx = [round(float(v), 3) for v in bestx]
    res["genome"] = bestx
    a, b = bestx[: L + 1], bestx[L + 1 :]
    report("evolved", a, b, smerger)
    report("evolved_ja_zeroed", a, [0.0] * (L + 1), smerger)
    report("evolved_vlm_zeroed", [0.0] * (L + 1), b, smerger)
    res["times"]["total"] = round(time.perf_counter() - t0, 1)
    res["times"]["cpu"] = round(time.process_time(), 1)  # CPU seconds of the whole run
    Path(args.out).write_text(json.dumps(res, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
