"""Diagnostics of a ``vision_w.py`` run with the layer-0 alignment (W13s, W14s; docs/toy-zoo.md,
"Third attempt"): how well the VLM's layer 0 matches the caption targets, what the evolved child
answers per question kind, and whether the text-only parents read the padded caption layout.

Usage::

    nice -n 5 .venv/bin/python bench/zoo_experiments/vision_w_diag.py \
        --models /tmp/w13/models/W13s_s0 --result /tmp/w13/W13s_s0.json --seed 0
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import vision_w as vw  # noqa: E402
from evomm_zoo import vlm as zvlm  # noqa: E402
from evomm_zoo.generate import greedy_generate  # noqa: E402
from evomm_zoo.images import COLORS, SHAPES  # noqa: E402


def alignment(vlm, vbase, tok, proc, seed: int, layer: int = 0) -> None:
    """Normalised MSE per image position against the share of the targets' variance that depends
    on the caption, and which of the 24 targets is nearest to each row's layer-0 outputs."""
    targets = vw.caption_targets(vbase, tok, layer)
    rows = zvlm.vqa_rows("en_vqa", "dev", 128, seed)
    batch = zvlm.collate_vqa(proc, rows, {})
    store: dict = {}
    hook = vw.layer0_hook(vlm.model.language_model, store, layer)
    with torch.no_grad():
        vlm(**batch)
    hook.remove()
    img = batch["input_ids"] == tok.convert_tokens_to_ids(zvlm.IMAGE_MARK)
    h = store["h"][img].view(len(rows), zvlm.IMAGE_TOKENS, -1)
    t = torch.stack([targets[(r["spec"].color, r["spec"].shape)] for r in rows])
    norm = (t**2).mean()
    print("align (normalised MSE)", round(float(((h - t) ** 2).mean() / norm), 4))
    print("per position", [round(v, 2) for v in (((h - t) ** 2).mean((0, 2)) / norm).tolist()])
    var = ((t - t.mean(0, keepdim=True)) ** 2).mean((0, 2)) / norm
    print("caption-dependent share of the targets", [round(v, 2) for v in var.tolist()])
    keys = list(targets)
    dist = ((h[:, None] - torch.stack([targets[k] for k in keys])[None]) ** 2).sum((2, 3))
    near = [keys[i] for i in dist.argmin(1).tolist()]
    own = [(r["spec"].color, r["spec"].shape) for r in rows]
    print(
        f"nearest target: caption {sum(a == b for a, b in zip(near, own))}, colour "
        f"{sum(a[0] == b[0] for a, b in zip(near, own))}, shape {sum(a[1] == b[1] for a, b in zip(near, own))} "
        f"of {len(rows)}"
    )


def per_kind(vlm, vbase, ja, proc, genome: list[float], seed: int, layer: int = 0) -> None:
    """Strict per question kind (true and shuffled images) and the commonest answers, for the
    evolved child and the constructed composition (VLM layer 0 + ja layers 1-2)."""
    merger = vw.Merger(
        vlm,
        dict(vbase.state_dict()),
        vw.lm_sd(vlm),
        dict(ja.state_dict()),
        vbase.config.num_hidden_layers,
        True,
    )
    n, k = len(genome) // 2, 2 * (layer + 1)  # k: the VLM's modules in the constructed child
    rows = zvlm.vqa_rows("ja_vqa", "test", 400, seed)
    sc = vw.Scorer(proc, rows)
    words = {"colour": set(COLORS.values()), "shape": set(SHAPES.values())}
    for name, a, b in (
        ("evolved", genome[:n], genome[n:]),
        ("constructed", [1.0] * k + [0.0] * (n - k), [0.0] * k + [1.0] * (n - k)),
    ):
        model = merger(a, b)
        for tag, images in (("true", sc.images), ("shuffled", sc.shuf)):
            out = [
                vw.cut(o) for o in zvlm.generate_answers(model, proc, sc.prompts, images, max_new_tokens=6)
            ]
            for kind in ("colour", "shape"):
                got = [(o, r["answer"]) for o, r in zip(out, rows) if r["kind"] == kind]
                line = f"{name} {tag} {kind}: right {sum(o == a for o, a in got)} of {len(got)}"
                if tag == "true":
                    common = collections.Counter(o for o, _ in got).most_common(6)
                    line += f", well-formed {sum(o in words[kind] for o, _ in got)}, commonest {common}"
                print(line)


def caption_reading(models: Path, tok) -> None:
    """The text-only vbase and ja parent on all 24 captions x 2 questions, three caption layouts."""
    from transformers import LlamaForCausalLM

    layouts = {
        "plain": lambda c, s: f"{c} {s}. ",
        "padded (W13s)": vw.caption_text,
        "slots": lambda c, s: f"{c:>6} {s:>8}.",
    }
    for name in ("vbase", "ja"):
        model = LlamaForCausalLM.from_pretrained(str(models / name)).eval()
        for lname, layout in layouts.items():
            for lang, (pre, ans) in (("en", ("Q: ", " A: ")), ("ja", ("問: ", " 答: "))):
                prompts, refs = [], []
                for c in COLORS:
                    for s in SHAPES:
                        for kind in ("colour", "shape"):
                            prompts.append(f"{pre}{layout(c, s)}{zvlm.QUESTIONS[kind][lang == 'ja']}{ans}")
                            word = c if kind == "colour" else s
                            refs.append({**COLORS, **SHAPES}[word] if lang == "ja" else word)
                outs = greedy_generate(model, tok, prompts, max_new_tokens=6)
                print(name, lname, lang, f"{sum(vw.cut(o) == r for o, r in zip(outs, refs))}/{len(refs)}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", required=True, help="<cache>/<design>_s<seed> of vision_w.py")
    ap.add_argument("--result", required=True, help="vision_w.py's --out JSON (for the genome)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layer", type=int, default=0, help="the aligned layer (W16s: 1)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    random.seed(0)
    from transformers import AutoTokenizer, LlamaForCausalLM, LlavaForConditionalGeneration

    models = Path(args.models)
    tok = AutoTokenizer.from_pretrained(str(models / "vbase"))
    vbase = LlamaForCausalLM.from_pretrained(str(models / "vbase"))
    ja = LlamaForCausalLM.from_pretrained(str(models / "ja"))
    vlm = LlavaForConditionalGeneration.from_pretrained(str(models / "vlm")).eval()
    proc = zvlm.build_processor(tok)
    alignment(vlm, vbase, tok, proc, args.seed, args.layer)
    per_kind(vlm, vbase, ja, proc, json.loads(Path(args.result).read_text())["genome"], args.seed, args.layer)
    caption_reading(models, tok)


if __name__ == "__main__":
    main()
