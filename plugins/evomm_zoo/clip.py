"""The toy zoo's tiny open_clip models: a base CLIP and its shape / colour fine-tunes.

The base is pretrained contrastively on drawn images (:mod:`evomm_zoo.images`) and captions
("two red stars"); each fine-tune trains the *image* tower on one classification task through
the frozen zero-shot head (the class prompts' text embeddings), as in the task-arithmetic papers
(Ilharco et al. 2023, FusionBench), so the fine-tunes differ from the base only in the image
tower and merging them by task arithmetic is the FusionBench setting in miniature.

Checkpoints use open_clip's own local-directory format: ``open_clip_config.json`` (``model_cfg``
+ ``preprocess_cfg``) and ``open_clip_model.safetensors``. They load with open_clip's
``local-dir:`` schema; :func:`load_clip` wraps it. The text tower uses open_clip's bundled BPE
tokenizer (no download), with a 16-token context.

Example::

    model, preprocess, tokenizer = load_clip(zoo / "models" / "clip_shape")
    # equivalent: open_clip.create_model_and_transforms(f"local-dir:{path}")
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from evomm.errors import CheckpointError
from evomm.outputs import staged_output
from evomm_zoo.images import COLORS, SHAPES, ImageSpec, draw

#: open_clip ``model_cfg`` of the zoo CLIP (about 1.7M parameters, most in the token embedding).
MODEL_CFG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8,
                   "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1,
                 "mlp_ratio": 2.0},
}  # fmt: skip
PREPROCESS_CFG: dict[str, Any] = {"size": 32, "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic",
                                  "resize_mode": "shortest"}  # fmt: skip

CLS_TASKS: tuple[str, ...] = ("shape_cls", "color_cls")
#: counts of the shapes in classification images (three small copies are too hard to tell apart).
CLS_COUNTS: tuple[int, ...] = (1, 2)
NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}

#: task -> (class names, prompt templates). Class index = position in the list.
CLASSES: dict[str, tuple[list[str], list[str]]] = {
    "shape_cls": (list(SHAPES), ["a {}.", "a picture of a {}.", "a drawn {}."]),
    "color_cls": (list(COLORS), ["something {}.", "a {} shape.", "a picture in {}."]),
}

#: image-jitter seeds of each split (disjoint from each other and from the VQA splits).
SPLIT_SEEDS: dict[str, range] = {"train": range(20_000, 30_000), "dev": range(30_000, 31_000),
                                 "test": range(31_000, 32_000)}  # fmt: skip


def class_prompts(task: str) -> list[list[str]]:
    """The prompts of each class of ``task`` (the zero-shot head), e.g. ``[["a circle.", ...], ...]``."""
    names, templates = CLASSES[task]
    return [[t.format(n) for t in templates] for n in names]


def caption(spec: ImageSpec, rng: random.Random) -> str:
    """A pretraining caption of ``spec``; it names colour and shape only part of the time, so the
    base CLIP is a weak zero-shot classifier that the fine-tunes clearly improve on."""
    noun = spec.shape + ("s" if spec.count > 1 else "")
    colour = spec.color if rng.random() < 0.15 else ""
    if rng.random() < 0.5:
        noun = "things" if spec.count > 1 else "thing"
    words = [NUMBER_WORDS[spec.count], colour, noun]
    return " ".join(w for w in words if w) + "."


def random_spec(rng: random.Random, split: str) -> ImageSpec:
    """A random image of ``split``: any colour, shape and count."""
    return ImageSpec(rng.choice(list(COLORS)), rng.choice(list(SHAPES)), rng.choice(CLS_COUNTS),
                     rng.choice(SPLIT_SEEDS[split]))  # fmt: skip


def cls_rows(task: str, split: str, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` classification rows ``{"spec": ImageSpec, "label": int}`` of ``task``'s ``split``."""
    rng = random.Random(f"cls-{task}-{split}-{seed}")
    rows = []
    for _ in range(n):
        spec = random_spec(rng, split)
        word = spec.shape if task == "shape_cls" else spec.color
        rows.append({"spec": spec, "label": CLASSES[task][0].index(word)})
    return rows


def _register() -> None:
    import open_clip  # noqa: F401  (the local-dir schema needs no registration; kept for clarity)


def init_clip(seed: int):
    """A randomly initialised zoo CLIP: ``(model, tokenizer)``."""
    import open_clip
    import torch

    torch.manual_seed(seed)
    model = open_clip.CLIP(**MODEL_CFG)
    tokenizer = open_clip.SimpleTokenizer(context_length=MODEL_CFG["text_cfg"]["context_length"])
    return model, tokenizer


def save_clip(model, path: Path) -> None:
    """Write ``model`` to ``path`` (new or empty) in open_clip's local-dir format, atomically
    (:func:`evomm.outputs.staged_output`)."""
    from safetensors.torch import save_file

    with staged_output(Path(path), command="zoo build") as tmp:
        (tmp / "open_clip_config.json").write_text(
            json.dumps({"model_cfg": MODEL_CFG, "preprocess_cfg": PREPROCESS_CFG}, indent=2)
        )
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "open_clip_model.safetensors"))


def load_clip(path: Path):
    """Load a zoo CLIP (or any open_clip local-dir checkpoint).

    Args:
        path: a directory with ``open_clip_config.json`` and ``open_clip_model.safetensors``.

    Returns:
        ``(model, preprocess, tokenizer)``: the model in eval mode, the evaluation image
        transform and the text tokenizer.

    Raises:
        CheckpointError: when the directory lacks either file.

    Example::

        model, preprocess, tokenizer = load_clip(Path("zoo/models/clip_base"))
        feats = model.encode_image(preprocess(img)[None])
    """
    import open_clip

    path = Path(path)
    for name in ("open_clip_config.json", "open_clip_model.safetensors"):
        if not (path / name).is_file():
            raise CheckpointError(f"{path} has no {name}; it is not an open_clip local-dir checkpoint "
                                  "(build the zoo with `evomm zoo build`)")  # fmt: skip
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{path}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{path}")
    model.eval()
    return model, preprocess, tokenizer


def _pixels(specs: list[ImageSpec], cache: dict):
    import torch

    from evomm_zoo.vlm import pixels

    missing = [s for s in specs if s not in cache]
    if missing:
        for s, p in zip(missing, pixels([draw(s) for s in missing])):
            cache[s] = p
    return torch.stack([cache[s] for s in specs])


def text_head(model, tokenizer, prompts: list[list[str]]):
    """Normalised class embeddings: the mean of each class's normalised prompt embeddings."""
    import torch

    with torch.no_grad():
        heads = []
        for group in prompts:
            e = torch.nn.functional.normalize(model.encode_text(tokenizer(group)), dim=-1).mean(0)
            heads.append(torch.nn.functional.normalize(e, dim=0))
    return torch.stack(heads)


def accuracy(model, tokenizer, task: str, rows: list[dict], cache: dict | None = None) -> float:
    """Zero-shot accuracy of ``model`` on classification ``rows`` of ``task``."""
    import torch

    cache = {} if cache is None else cache
    head = text_head(model, tokenizer, class_prompts(task))
    with torch.no_grad():
        img = torch.nn.functional.normalize(
            model.encode_image(_pixels([r["spec"] for r in rows], cache)), dim=-1
        )
    pred = (img @ head.T).argmax(-1)
    return float((pred == torch.tensor([r["label"] for r in rows])).float().mean())


def _loop(model, params, steps: int, lr: float, step_loss, desc: str, progress: bool) -> dict[str, Any]:
    import torch
    from tqdm.auto import tqdm

    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    curve, acc, t0, every = [], [], time.perf_counter(), max(1, steps // 20)
    model.train()
    for step in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        loss = step_loss(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        acc.append(loss.item())
        if (step + 1) % every == 0 or step + 1 == steps:
            curve.append([step + 1, round(sum(acc) / len(acc), 4)])
            acc = []
    model.eval()
    return {"curve": curve, "wall_s": round(time.perf_counter() - t0, 2)}


def pretrain_clip(model, tokenizer, *, steps: int, seed: int, batch_size: int = 64, lr: float = 2e-3,
                  progress: bool = True) -> dict[str, Any]:  # fmt: skip
    """Contrastive pretraining on drawn images and :func:`caption` captions (in place)."""
    import torch

    rng = random.Random(f"clip-pretrain-{seed}")
    cache: dict = {}

    def step_loss(_: int):
        specs = [random_spec(rng, "train") for _ in range(batch_size)]
        texts = tokenizer([caption(s, rng) for s in specs])
        img = torch.nn.functional.normalize(model.encode_image(_pixels(specs, cache)), dim=-1)
        txt = torch.nn.functional.normalize(model.encode_text(texts), dim=-1)
        logits = model.logit_scale.exp() * img @ txt.T
        # Captions can repeat inside a batch: every pair with the same caption counts as a match.
        same = torch.tensor([[a == b for b in texts.tolist()] for a in texts.tolist()], dtype=torch.float)
        target = same / same.sum(1, keepdim=True)
        return (torch.nn.functional.cross_entropy(logits, target)
                + torch.nn.functional.cross_entropy(logits.T, target)) / 2  # fmt: skip

    return _loop(model, list(model.parameters()), steps, lr, step_loss, "clip base", progress)


def finetune_clip(model, tokenizer, task: str, *, steps: int, seed: int, batch_size: int = 64,
                  lr: float = 2e-3, progress: bool = True) -> dict[str, Any]:  # fmt: skip
    """Fine-tune the image tower (in place) on ``task`` through the frozen zero-shot head."""
    import torch

    head = text_head(model, tokenizer, class_prompts(task))
    rows = cls_rows(task, "train", 4000, seed)
    rng = random.Random(f"clip-ft-{task}-{seed}")
    cache: dict = {}
    for p in model.parameters():
        p.requires_grad_(False)
    params = list(model.visual.parameters())
    for p in params:
        p.requires_grad_(True)

    def step_loss(_: int):
        batch = rng.sample(rows, batch_size)
        img = torch.nn.functional.normalize(
            model.encode_image(_pixels([r["spec"] for r in batch], cache)), dim=-1
        )
        logits = model.logit_scale.exp().detach() * img @ head.T
        return torch.nn.functional.cross_entropy(logits, torch.tensor([r["label"] for r in batch]))

    log = _loop(model, params, steps, lr, step_loss, f"clip {task}", progress)
    for p in model.parameters():
        p.requires_grad_(True)
    return log
