"""Issue 22, fifth attempt: variants of the zoo's vision recipe (v3, design W31s), run through the
product (the zoo's own VLM training and evomm's CMA-ES search), on a copy of a built zoo.

A variant either retrains the VLM's reader (layer 0 of its language model; the pretrained tower
and the projector are the zoo's, reused) or only changes the search recipe, then runs
:func:`evomm_zoo.vision_search.search_vision` on the copy and prints the held-out table.

Usage (a built demo zoo per seed: ``evomm zoo build --scale demo --seed N``)::

    nice .venv/bin/python bench/zoo_experiments/vision_v3.py --seed 0 --variant ja-align --out /tmp/v3
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

VARIANTS = {
    # the shipped recipe, searched again (a control for the search's own noise: none, it is seeded)
    "control": {},
    # layer 0 also aligned on Japanese-question prompts (English caption targets; no Japanese answers)
    "ja-align": {"align_ja": 1.0},
    # the search with strict accuracy weighted twice the graded term
    "strict2": {"suite": {"toy_ja_vqa.accuracy": 2, "toy_ja_vqa.rouge": 1}},
}


def retrain_reader(zoo: Path, seed: int, knobs: dict) -> dict:
    """Reset the VLM's language model to vbase's and train the reader again with ``knobs``."""
    from evomm_zoo import reader
    from evomm_zoo import vlm as zvlm
    from evomm_zoo.textdata import VBASE_MIX
    from evomm_zoo.vision import SCALES
    from transformers import AutoTokenizer, LlamaForCausalLM, LlavaForConditionalGeneration

    models = zoo / "models"
    model = LlavaForConditionalGeneration.from_pretrained(str(models / "vlm"))
    processor = zvlm.build_processor(AutoTokenizer.from_pretrained(str(models / "vbase")))
    vbase = LlamaForCausalLM.from_pretrained(str(models / "vbase")).eval()
    model.model.language_model.load_state_dict(vbase.model.state_dict())
    tok = AutoTokenizer.from_pretrained(str(models / "vbase"))
    kw = {}
    if knobs.get("align_ja"):
        kw = {"align_ja": knobs["align_ja"], "ja_targets": reader.prompt_targets(vbase, tok, lang=1),
              "ja_rows": zvlm.vqa_rows("ja_vqa", "train", 4000, seed)}
    log = reader.train_reader(model, processor, zvlm.vqa_rows("en_vqa", "train", 4000, seed),
                              reader.prompt_targets(vbase, tok), steps=SCALES["demo"].vlm_steps, seed=seed,
                              rehearse_mix=dict(VBASE_MIX), **kw)
    zvlm.save_vlm(model, processor, models / "vlm")
    return {"align": log["align"], "wall_s": log["wall_s"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variant", choices=sorted(VARIANTS), required=True)
    ap.add_argument("--out", default="/tmp/v3")
    args = ap.parse_args()
    import evomm_zoo.vision_search as vs
    import torch
    from evomm_zoo import default_zoo_dir

    torch.set_num_threads(1)
    knobs = VARIANTS[args.variant]
    src = default_zoo_dir("demo", args.seed)
    zoo = Path(args.out) / f"{args.variant}_s{args.seed}"
    if zoo.exists():
        shutil.rmtree(zoo)
    shutil.copytree(src, zoo, ignore=shutil.ignore_patterns("runs"))
    t0 = time.perf_counter()
    res = {"variant": args.variant, "seed": args.seed}
    if "align_ja" in knobs:
        res["reader"] = retrain_reader(zoo, args.seed, knobs)
    if "suite" in knobs:
        shipped = vs.vision_recipe

        def recipe(z, scale="demo", seed=0):
            data = shipped(z, scale, seed)
            data["objectives"][0]["suite"] = knobs["suite"]
            return data

        vs.vision_recipe = recipe
    res.update(vs.search_vision(zoo, "demo", args.seed, progress=False))
    res["wall_s_total"] = round(time.perf_counter() - t0, 1)
    print("\n".join(vs.format_table(res["vision_table"])))
    (zoo / "result.json").write_text(json.dumps(res, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
