"""Build the vision half of the toy zoo: VQA and classification data, the tiny LLaVA, the CLIPs.

:func:`build_vision` is called by the zoo build after the text half (it needs
``<zoo>/models/base``). It writes::

    <zoo>/models/vbase, ja_vision         LlamaForCausalLM: the vision half's base and Japanese parent
    <zoo>/models/vlm                      LlavaForConditionalGeneration + processor (on vbase)
    <zoo>/models/clip_base, clip_shape, clip_color   open_clip local-dir checkpoints
    <zoo>/data/{en_vqa,ja_vqa}/{train,dev,test}.jsonl   {"image", "question", "answer", "kind"}
    <zoo>/data/{shape_cls,color_cls}/{train,dev,test}.jsonl + classes.json   {"image", "label"}

with the images as PNG files under ``<zoo>/data/<task>/images/``.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evomm.errors import ConfigError
from evomm_zoo import clip as zclip
from evomm_zoo import vlm as zvlm
from evomm_zoo.images import draw


@dataclass(frozen=True)
class VisionScale:
    """Sizes of one build scale (steps of each training run; rows per split)."""

    vqa_rows: tuple[int, int, int]  # train, dev, test rows per VQA task
    cls_rows: tuple[int, int, int]
    vbase_steps: int  # the vision base: the text base continued on caption QA + its own mix
    ja_steps: int  # the vision half's Japanese parent, fine-tuned from the vision base
    tower_steps: int  # the VLM's vision tower, pretrained then frozen
    vlm_steps: int  # the VLM's language model, layer 0 only (the reader)
    clip_steps: int
    clip_ft_steps: int
    align_ja: float = 1.0  # weight of the reader's alignment on Japanese-question prompts


SCALES: dict[str, VisionScale] = {
    "micro": VisionScale((64, 16, 16), (64, 16, 16), 4, 4, 4, 4, 4, 3),
    "demo": VisionScale((4000, 400, 400), (2000, 200, 400), 400, 300, 1000, 600, 150, 120),
}


def write_split(task_dir: Path, split: str, rows: list[dict[str, Any]], fields: tuple[str, ...]) -> None:
    """Write ``rows`` to ``task_dir/split.jsonl`` with their images under ``task_dir/images/``."""
    images = task_dir / "images"
    images.mkdir(parents=True, exist_ok=True)
    with open(task_dir / f"{split}.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            name = f"images/{r['spec'].key()}.png"
            if not (task_dir / name).exists():
                draw(r["spec"]).save(task_dir / name)
            out = {"image": name, **{k: r[k] for k in fields}}
            f.write(json.dumps(out, ensure_ascii=False) + "\n")


def write_data(zoo_dir: Path, sc: VisionScale, seed: int) -> dict[str, dict[str, list]]:
    """Write the four vision tasks' splits; returns ``task -> split -> rows`` (with specs)."""
    data: dict[str, dict[str, list]] = {}
    for task in zvlm.VQA_TASKS:
        data[task] = {}
        for split, n in zip(("train", "dev", "test"), sc.vqa_rows):
            rows = zvlm.vqa_rows(task, split, n, seed)
            data[task][split] = rows
            write_split(zoo_dir / "data" / task, split, rows, ("question", "answer", "kind"))
    for task in zclip.CLS_TASKS:
        data[task] = {}
        names, templates = zclip.CLASSES[task]
        (zoo_dir / "data" / task).mkdir(parents=True, exist_ok=True)
        (zoo_dir / "data" / task / "classes.json").write_text(
            json.dumps({"classes": names, "templates": templates}, indent=2)
        )
        for split, n in zip(("train", "dev", "test"), sc.cls_rows):
            rows = zclip.cls_rows(task, split, n, seed)
            data[task][split] = rows
            write_split(zoo_dir / "data" / task, split, rows, ("label",))
    return data


def _build_clips(zoo_dir: Path, sc: VisionScale, seed: int, data, progress: bool) -> dict[str, Any]:
    model, tok = zclip.init_clip(seed)
    logs = {"clip_base": zclip.pretrain_clip(model, tok, steps=sc.clip_steps, seed=seed, progress=progress)}
    zclip.save_clip(model, zoo_dir / "models" / "clip_base")
    models = {"clip_base": model}
    for task, name in (("shape_cls", "clip_shape"), ("color_cls", "clip_color")):
        ft = copy.deepcopy(model)
        logs[name] = zclip.finetune_clip(ft, tok, task, steps=sc.clip_ft_steps, seed=seed, progress=progress)
        zclip.save_clip(ft, zoo_dir / "models" / name)
        models[name] = ft
    base = model.state_dict()
    ta = copy.deepcopy(model)
    ta.load_state_dict({k: base[k] + 0.5 * sum(models[m].state_dict()[k] - base[k]
                                             for m in ("clip_shape", "clip_color")) for k in base})  # fmt: skip
    models["task_arithmetic_0.5"] = ta
    cache: dict = {}
    scores = {
        m: {t: round(zclip.accuracy(mod, tok, t, data[t]["test"], cache), 4) for t in zclip.CLS_TASKS}
        for m, mod in models.items()
    }
    return {"logs": logs, "scores": scores}


def _train_language_models(zoo_dir: Path, sc: VisionScale, seed: int, progress: bool) -> dict[str, Any]:
    """``models/vbase`` (the text base continued on its own mix + caption QA in both languages,
    the caption where the image will sit) and ``models/ja_vision`` (vbase fine-tuned to answer
    Japanese questions in Japanese whatever the context's language; embeddings and head fixed)."""
    from evomm_zoo.recipe import FROZEN_IN_FINETUNE
    from evomm_zoo.text import TrainConfig, finetune
    from evomm_zoo.textdata import JA_VLM_MIX, VBASE_MIX

    models = Path(zoo_dir) / "models"
    _, vbase = finetune(models / "base", models / "vbase",
                        TrainConfig(steps=sc.vbase_steps, lr=1e-3, mix=dict(VBASE_MIX), seed=seed),
                        desc="vbase", progress=progress)  # fmt: skip
    _, ja = finetune(models / "vbase", models / "ja_vision",
                     TrainConfig(steps=sc.ja_steps, lr=1e-3, mix=dict(JA_VLM_MIX), freeze=FROZEN_IN_FINETUNE, seed=seed),
                     desc="ja_vision", progress=progress)  # fmt: skip
    return {"vbase": vbase, "ja_vision": ja}


def build_vision(zoo_dir: Path, scale: str, seed: int, progress: bool) -> dict[str, Any]:
    """Build the vision half of the zoo in ``zoo_dir`` (after the text half).

    Recipe v3 (issue 22's design W33; :mod:`evomm_zoo.reader`): the vision base ``vbase`` and
    the Japanese parent ``ja_vision``; the VLM on vbase with a pretrained, frozen vision tower, a
    random frozen projector and a language model that learns in layer 0 only, aligned to vbase's
    caption reading on English and Japanese question prompts; the three CLIPs.
    The search over merges of the VLM and ``ja_vision`` runs after the build
    (:func:`evomm_zoo.vision_search.search_vision`).

    Args:
        zoo_dir: the zoo directory; ``models/base`` must exist.
        scale: ``micro`` (seconds, for tests) or ``demo``.
        seed: the zoo seed.
        progress: show progress bars.

    Returns:
        ``{"scores": {clip model: {task: {"accuracy"}}}, "curves": {model: [[step, loss]]},
        "wall_s": {step: seconds}, "recipe": {"vision": {...}}, "models": {...}, "tasks": {task: dir}}``,
        merged into ``zoo.json``.

    Example::

        info = build_vision(Path("zoo"), "micro", 0, progress=False)
        info["scores"]["clip_shape"]["shape_cls"]["accuracy"]
    """
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from evomm_zoo import reader
    from evomm_zoo.textdata import VBASE_MIX

    if scale not in SCALES:
        raise ConfigError(f"zoo scale {scale!r} is unknown; use one of {sorted(SCALES)}")
    zoo_dir = Path(zoo_dir)
    base_dir = zoo_dir / "models" / "base"
    if not (base_dir / "config.json").is_file():
        raise ConfigError(f"{base_dir} is missing: build the text half of the zoo first")
    sc = SCALES[scale]
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    data = write_data(zoo_dir, sc, seed)
    times["vision_data"] = round(time.perf_counter() - t0, 2)
    logs = _train_language_models(zoo_dir, sc, seed, progress)
    times["vision_vbase"], times["vision_ja"] = logs["vbase"]["wall_s"], logs["ja_vision"]["wall_s"]
    vbase_dir = zoo_dir / "models" / "vbase"
    model, processor = zvlm.init_vlm(vbase_dir, seed)
    tower = reader.pretrain_tower(model, data["en_vqa"]["train"], steps=sc.tower_steps, seed=seed, progress=progress)
    vbase = LlamaForCausalLM.from_pretrained(str(vbase_dir)).eval()
    tok = AutoTokenizer.from_pretrained(str(vbase_dir))
    log = reader.train_reader(model, processor, data["en_vqa"]["train"], reader.prompt_targets(vbase, tok),
                              steps=sc.vlm_steps, seed=seed, rehearse_mix=dict(VBASE_MIX),
                              ja_rows=data["ja_vqa"]["train"], ja_targets=reader.prompt_targets(vbase, tok, lang=1),
                              align_ja=sc.align_ja, progress=progress)  # fmt: skip
    zvlm.save_vlm(model, processor, zoo_dir / "models" / "vlm")
    times["vision_tower"], times["vision_vlm"] = tower["wall_s"], log["wall_s"]
    t0 = time.perf_counter()
    clips = _build_clips(zoo_dir, sc, seed, data, progress)
    times["vision_clip"] = round(time.perf_counter() - t0, 2)
    scores = {name: {t: {"accuracy": v} for t, v in per_task.items()} for name, per_task in clips["scores"].items()}
    torch.set_grad_enabled(True)
    curves = {"vbase": logs["vbase"]["curve"], "ja_vision": logs["ja_vision"]["curve"], "vision_tower": tower["curve"],
              "vlm": log["curve"], **{k: v["curve"] for k, v in clips["logs"].items()}}  # fmt: skip
    recipe = {"scale": scale, "seed": seed, **sc.__dict__, "vlm_image_tokens": zvlm.IMAGE_TOKENS,
              "vlm_learns": "language model layer 0 (tower pretrained then frozen, projector frozen)",
              "tower_fit": {"acc_colour": tower["acc_colour"], "acc_shape": tower["acc_shape"]},
              "vlm_align_loss": log["align"], "clip_model_cfg": zclip.MODEL_CFG}  # fmt: skip
    models = {"vbase": {"path": "models/vbase", "kind": "llama"}, "ja_vision": {"path": "models/ja_vision", "kind": "llama"},
              "vlm": {"path": "models/vlm", "kind": "llava"},
              **{m: {"path": f"models/{m}", "kind": "open_clip"} for m in ("clip_base", "clip_shape", "clip_color")}}  # fmt: skip
    tasks = {t: f"data/{t}" for t in (*zvlm.VQA_TASKS, *zclip.CLS_TASKS)}
    return {"scores": scores, "curves": curves, "wall_s": times, "recipe": {"vision": recipe}, "models": models,
            "tasks": tasks}  # fmt: skip
