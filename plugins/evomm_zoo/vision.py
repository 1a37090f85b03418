"""Build the vision half of the toy zoo: VQA and classification data, the tiny LLaVA, the CLIPs.

:func:`build_vision` is called by the zoo build after the text half (it needs
``<zoo>/models/base``). It writes::

    <zoo>/models/vlm                      LlavaForConditionalGeneration + processor
    <zoo>/models/clip_base, clip_shape, clip_color   open_clip local-dir checkpoints
    <zoo>/data/{en_vqa,ja_vqa}/{train,dev,test}.jsonl   {"image", "question", "answer", "kind"}
    <zoo>/data/{shape_cls,color_cls}/{train,dev,test}.jsonl + classes.json   {"image", "label"}

with the images as PNG files under ``<zoo>/data/<task>/images/``.
"""

from __future__ import annotations

import copy
import json
import random
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
    """Sizes of one build scale."""

    vqa_rows: tuple[int, int, int]  # train, dev, test rows per VQA task
    cls_rows: tuple[int, int, int]
    vlm_steps: int
    clip_steps: int
    clip_ft_steps: int
    eval_rows: int = 200  # test rows scored per VQA task for zoo.json (each also image-shuffled)


SCALES: dict[str, VisionScale] = {
    "micro": VisionScale((64, 16, 16), (64, 16, 16), 4, 4, 3),
    "demo": VisionScale((4000, 200, 400), (2000, 200, 400), 600, 150, 120),
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


def vqa_scores(model, processor, rows: list[dict], *, shuffle_seed: int = 0) -> dict[str, float]:
    """Strict accuracy on ``rows`` and the same with the images shuffled between rows (control)."""
    images = [draw(r["spec"]) for r in rows]
    perm = list(range(len(rows)))
    random.Random(shuffle_seed).shuffle(perm)
    prompts = [r["prompt"] for r in rows]
    out = zvlm.generate_answers(model, processor, prompts, images)
    shuf = zvlm.generate_answers(model, processor, prompts, [images[i] for i in perm])
    n = max(1, len(rows))
    right = sum(o == r["answer"] for o, r in zip(out, rows))
    right_shuffled = sum(o == r["answer"] for o, r in zip(shuf, rows))
    return {"accuracy": round(right / n, 4), "shuffled": round(right_shuffled / n, 4),
            "count": right, "shuffled_count": right_shuffled, "n": len(rows)}  # fmt: skip


def graft_lm(vlm, lm) -> Any:
    """A copy of ``vlm`` whose language model and head are ``lm``'s (a text LM made to see)."""
    g = copy.deepcopy(vlm)
    g.model.language_model.load_state_dict(lm.model.state_dict())
    g.lm_head.load_state_dict(lm.lm_head.state_dict())
    return g


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


def build_vision(zoo_dir: Path, scale: str, seed: int, progress: bool) -> dict[str, Any]:
    """Build the vision half of the zoo in ``zoo_dir`` (after the text half).

    Args:
        zoo_dir: the zoo directory; ``models/base`` must exist (``models/ja`` is scored when present).
        scale: ``micro`` (seconds, for tests) or ``demo``.
        seed: the zoo seed.
        progress: show progress bars.

    Returns:
        ``{"scores": {model: {task: {metric: value}}}, "curves": {model: [[step, loss]]},
        "wall_s": {step: seconds}, "recipe": {"vision": {...}}, "tasks": {task: dir}}``, merged
        into ``zoo.json`` (models ``vlm``, ``ja_grafted``, ``clip_*``, ``task_arithmetic_0.5``).

    Example::

        info = build_vision(Path("zoo"), "micro", 0, progress=False)
        info["scores"]["vlm"]["en_vqa"]["accuracy"]
    """
    import torch
    from transformers import LlamaForCausalLM

    if scale not in SCALES:
        raise ConfigError(f"zoo scale {scale!r} is unknown; use one of {sorted(SCALES)}")
    base_dir = Path(zoo_dir) / "models" / "base"
    if not (base_dir / "config.json").is_file():
        raise ConfigError(f"{base_dir} is missing: build the text half of the zoo first")
    sc = SCALES[scale]
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    data = write_data(Path(zoo_dir), sc, seed)
    times["vision_data"] = round(time.perf_counter() - t0, 2)
    model, processor = zvlm.init_vlm(base_dir, seed)
    log = zvlm.train_vlm(model, processor, data["en_vqa"]["train"], steps=sc.vlm_steps, lr=1e-3,
                         freeze=zvlm.FROZEN_IN_VLM, seed=seed, progress=progress)  # fmt: skip
    zvlm.save_vlm(model, processor, Path(zoo_dir) / "models" / "vlm")
    times["vision_vlm"] = log["wall_s"]
    t0 = time.perf_counter()
    scores: dict[str, dict[str, Any]] = {"vlm": {}}
    for task in zvlm.VQA_TASKS:
        scores["vlm"][task] = vqa_scores(model, processor, data[task]["test"][: sc.eval_rows])
    ja_dir = Path(zoo_dir) / "models" / "ja"
    if (ja_dir / "config.json").is_file():
        g = graft_lm(model, LlamaForCausalLM.from_pretrained(str(ja_dir)))
        scores["ja_grafted"] = {  # the ja LM on the VLM's vision tower and projector
            t: vqa_scores(g, processor, data[t]["test"][: sc.eval_rows]) for t in zvlm.VQA_TASKS
        }
    times["vision_vlm_eval"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    clips = _build_clips(Path(zoo_dir), sc, seed, data, progress)
    times["vision_clip"] = round(time.perf_counter() - t0, 2)
    for name, per_task in clips["scores"].items():
        scores[name] = {t: {"accuracy": v} for t, v in per_task.items()}
    torch.set_grad_enabled(True)
    curves = {"vlm": log["curve"], **{k: v["curve"] for k, v in clips["logs"].items()}}
    recipe = {"scale": scale, "seed": seed, **sc.__dict__, "vlm_image_tokens": zvlm.IMAGE_TOKENS,
              "clip_model_cfg": zclip.MODEL_CFG}  # fmt: skip
    tasks = {t: f"data/{t}" for t in (*zvlm.VQA_TASKS, *zclip.CLS_TASKS)}
    return {"scores": scores, "curves": curves, "wall_s": times, "recipe": {"vision": recipe}, "tasks": tasks}
