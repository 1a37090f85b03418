"""The toy zoo's vision tasks: ``toy_en_vqa``, ``toy_ja_vqa``, ``toy_shape_cls``, ``toy_color_cls``.

VQA tasks read ``<zoo>/data/<task>/<split>.jsonl`` (rows ``{"image", "question", "answer",
"kind"}``, image paths relative to the task directory), prompt the handle with
``"Q: <image>{question} A: "`` (English) or ``"問: <image>{question} 答: "`` (Japanese) and one
image per prompt, and score strictly (``accuracy``: the answer, stripped, must equal the
reference) and graded (``rouge``: character-level ROUGE-L F1, the search's fitness where strict
accuracy is 0 for every candidate).

Because a model can guess ("what colour?" has six answers), VQA tasks also report ``shuffled``:
the same questions with every image replaced by the next row's image (a control for image use),
and ``image_gain`` = accuracy - shuffled. ``shuffled: false`` in the options skips the control
(half the cost; ``shuffled`` and ``image_gain`` are then not reported).

Classification tasks read rows ``{"image", "label"}`` plus ``classes.json`` (``classes``,
``templates``) and score ``handle.classify`` by accuracy.

``data`` may be a zoo directory or a task directory; by default the demo zoo is used.

Example (recipe)::

    tasks:
      - name: toy_ja_vqa
        split: dev
        limit: 200
        options: {shuffled: false}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from evomm.errors import TaskError
from evomm.tasks import MetricSpec, Task, TaskResult

IMAGE_MARK = "<image>"


class ToyVisionTask(Task):
    """Base of the toy vision tasks; subclasses set ``name`` and ``zoo_task``."""

    zoo_task: ClassVar[str]
    default_data = None  # the demo zoo: evomm_zoo.default_zoo_dir("demo")

    def task_dir(self) -> Path:
        """The directory holding ``<split>.jsonl`` and ``images/``."""
        from evomm_zoo import default_zoo_dir

        root = Path(self.data) if self.data else default_zoo_dir("demo")
        if not (root / f"{self.split}.jsonl").exists():
            root = root / "data" / self.zoo_task
        if not (root / f"{self.split}.jsonl").exists():
            raise TaskError(
                f"task {self.name!r}: no {self.split}.jsonl in {root} (data={self.data!r}); build "
                "the toy zoo first with `evomm zoo build` (or pass data: <zoo dir>)"
            )
        return root

    def splits(self) -> list[str] | None:
        """The ``<split>.jsonl`` files of this task's directory."""
        from evomm_zoo import default_zoo_dir

        root = Path(self.data) if self.data else default_zoo_dir("demo")
        folder = root if any(root.glob("*.jsonl")) else root / "data" / self.zoo_task
        return sorted(p.stem for p in folder.glob("*.jsonl"))

    def load(self):
        import datasets

        rows = []
        with open(self.task_dir() / f"{self.split}.jsonl", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        return datasets.Dataset.from_list(rows)

    def images(self, examples: Sequence[dict[str, Any]]) -> list:
        """The examples' images as RGB PIL images."""
        from PIL import Image

        root = self.task_dir()
        out = []
        for e in examples:
            path = root / e["image"]
            if not path.is_file():
                raise TaskError(f"task {self.name!r}: image {path} is missing; rebuild the toy zoo")
            with Image.open(path) as im:
                out.append(im.convert("RGB"))
        return out


class ToyVQA(ToyVisionTask):
    """Image + question -> a one-word answer, scored strictly, with an image-shuffled control."""

    modality = "image+text"
    requires = frozenset({"generate", "image"})
    metrics = (
        MetricSpec("accuracy", True, "the answer equals the reference (fraction of items)"),
        MetricSpec("shuffled", True, "accuracy with every image swapped for another row's (control)"),
        MetricSpec("image_gain", True, "accuracy - shuffled: what seeing the right image adds"),
        MetricSpec("rouge", True, "character-level ROUGE-L F1 of the answer (graded; partial credit)"),
    )
    template: ClassVar[str] = "Q: " + IMAGE_MARK + "{question} A: "

    def prompt(self, question: str) -> str:
        return self.template.format(question=question)

    def _answers(self, handle: Any, prompts: list[str], images: list) -> list[str]:
        outs = handle.generate(
            prompts,
            images=images,
            max_new_tokens=int(self.options.get("max_new_tokens", 8)),
            stop=["\n"],
            batch_size=int(self.options.get("batch_size", 64)),
        )
        return [o.strip() for o in outs]

    def score(self, handle: Any, examples: Sequence[dict[str, Any]]) -> TaskResult:
        prompts = [self.prompt(e["question"]) for e in examples]
        images = self.images(examples)
        outs = self._answers(handle, prompts, images)
        n = len(examples)
        from evomm_zoo.scoring import char_rouge_l

        right = [float(o == e["answer"]) for o, e in zip(outs, examples)]
        items = {"accuracy": right, "rouge": [char_rouge_l(o, e["answer"]) for o, e in zip(outs, examples)]}
        details = [
            {"question": e["question"], "image": e["image"], "output": o, "answer": e["answer"], "correct": r}
            for o, e, r in zip(outs, examples, right)
        ]
        if self.options.get("shuffled", True) and n > 1:
            rolled = images[1:] + images[:1]  # every row gets another row's image
            shuf = self._answers(handle, prompts, rolled)
            hits = [float(o == e["answer"]) for o, e in zip(shuf, examples)]
            items["shuffled"] = hits
            items["image_gain"] = [r - h for r, h in zip(right, hits)]
            for d, o, h in zip(details, shuf, hits):
                d.update(shuffled_output=o, shuffled_correct=bool(h))
        return TaskResult.from_items(items, details)


class ToyEnVQA(ToyVQA):
    name = "toy_en_vqa"
    zoo_task = "en_vqa"
    description = "toy zoo: drawn shape + English question -> colour or shape word; the VLM's skill"


class ToyJaVQA(ToyVQA):
    name = "toy_ja_vqa"
    zoo_task = "ja_vqa"
    description = "toy zoo: drawn shape + Japanese question -> Japanese word; the target (VLM + ja)"
    template = "問: " + IMAGE_MARK + "{question} 答: "


class ToyClassification(ToyVisionTask):
    """Zero-shot image classification through ``handle.classify`` with the task's class prompts."""

    modality = "image"
    requires = frozenset({"classify"})
    metrics = (MetricSpec("accuracy", True, "predicted class equals the label (fraction of items)"),)

    def class_prompts(self) -> list[list[str]]:
        """Prompts per class from ``classes.json`` (every template filled with the class name)."""
        path = self.task_dir() / "classes.json"
        if not path.is_file():
            raise TaskError(f"task {self.name!r}: {path} is missing; rebuild the toy zoo")
        spec = json.loads(path.read_text(encoding="utf-8"))
        return [[t.format(c) for t in spec["templates"]] for c in spec["classes"]]

    def score(self, handle: Any, examples: Sequence[dict[str, Any]]) -> TaskResult:
        pred = handle.classify(self.images(examples), self.class_prompts())
        right = [int(p) == int(e["label"]) for p, e in zip(pred, examples)]
        details = [{"image": e["image"], "label": e["label"], "pred": int(p)} for p, e in zip(pred, examples)]
        return TaskResult.from_items({"accuracy": right}, details)


class ToyShapeCls(ToyClassification):
    name = "toy_shape_cls"
    zoo_task = "shape_cls"
    description = "toy zoo: drawn image -> its shape (circle, square, triangle, star), zero-shot CLIP"


class ToyColorCls(ToyClassification):
    name = "toy_color_cls"
    zoo_task = "color_cls"
    description = "toy zoo: drawn image -> its colour (six classes), zero-shot CLIP"


VISION_TASKS = (ToyEnVQA, ToyJaVQA, ToyShapeCls, ToyColorCls)
