"""``clip_zeroshot``: zero-shot image classification for CLIP models (class names + templates)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evomm.errors import TaskError
from evomm.handle import ModelHandle
from evomm.tasks import MetricSpec, Task, TaskResult

#: Default prompt templates (a few of CLIP's ImageNet templates); ``{}`` is the class name.
TEMPLATES = ("a photo of a {}.", "a picture of a {}.", "an image of a {}.")


class ClipZeroShot(Task):
    """Classify images by the closest class prompt (an image folder: image + ClassLabel label).

    Options:
        classes: class names, in label order (default: the label column's ClassLabel names).
        templates: prompt templates with ``{}`` (default :data:`TEMPLATES`).
        image_column / label_column: column names (``image``/``img``, ``label``).
        batch_size: images per call (64).
    """

    name = "clip_zeroshot"
    description = "zero-shot image classification (CLIP): class names x prompt templates"
    modality = "image"
    requires = frozenset({"classify"})
    metrics = (MetricSpec("accuracy", True, "top-1 accuracy"),)
    default_data = None

    def _columns(self, example: dict[str, Any]) -> tuple[str, str]:
        image_col = self.options.get("image_column") or ("img" if "img" in example else "image")
        label_col = self.options.get("label_column", "label")
        for col in (image_col, label_col):
            if col not in example:
                raise TaskError(
                    f"clip_zeroshot data {self.data!r} has no column {col!r} (columns: {sorted(example)}); "
                    "set image_column/label_column"
                )
        return image_col, label_col

    def class_names(self) -> list[str]:
        if "classes" in self.options:
            return [str(c) for c in self.options["classes"]]
        if self._examples is None:
            self._examples = self.load()
        feature = self._examples.features.get(self.options.get("label_column", "label"))
        names = getattr(feature, "names", None)
        if not names:
            raise TaskError(
                f"clip_zeroshot: the label column of {self.data!r} has no class names; "
                "give classes: [cat, dog, ...] in the task options"
            )
        return list(names)

    def score(self, handle: ModelHandle, examples: Sequence[dict[str, Any]]) -> TaskResult:
        image_col, label_col = self._columns(examples[0])
        templates = list(self.options.get("templates", TEMPLATES))
        class_prompts = [[t.format(c) for t in templates] for c in self.class_names()]
        batch = int(self.options.get("batch_size", 64))
        preds: list[int] = []
        for start in range(0, len(examples), batch):
            chunk = examples[start : start + batch]
            preds += handle.classify([e[image_col] for e in chunk], class_prompts)
        labels = [int(e[label_col]) for e in examples]
        hits = [int(p) == t for p, t in zip(preds, labels)]
        return TaskResult.from_items({"accuracy": hits}, [{"pred": p, "label": t} for p, t in zip(preds, labels)])
