"""The toy zoo's text tasks: ``toy_ja_skill``, ``toy_math`` and ``toy_ja_math``.

Each reads ``<zoo>/data/<task>/<split>.jsonl`` (rows with ``prompt``, ``answer``, ``equation``,
``result``, ``a``, ``b``, ``op``), asks the handle for greedy continuations and scores them with
:mod:`evomm_zoo.scoring`: ``strict`` (equation and result both right) first, ``loose`` second.

``data`` may be a zoo directory, a task directory holding ``<split>.jsonl``, or one ``.jsonl``
file; by default the demo zoo's cache directory (:func:`evomm_zoo.default_zoo_dir`) is used.

Example (recipe)::

    tasks:
      - name: toy_ja_math
        split: dev
        limit: 200
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from evomm_zoo.scoring import MAX_NEW_TOKENS, score_output

from evomm.errors import TaskError
from evomm.tasks import MetricSpec, Task, TaskResult

_METRICS = (
    MetricSpec("strict", True, "equation and result both right (fraction of items)"),
    MetricSpec("loose", True, "the number after the first '=' is right (has a chance floor)"),
)


class ToyTextTask(Task):
    """Base of the toy text tasks; subclasses set ``name`` and ``zoo_task``."""

    zoo_task: ClassVar[str]
    modality = "text"
    requires = frozenset({"generate"})
    metrics = _METRICS
    default_data = None  # the demo zoo: evomm_zoo.default_zoo_dir("demo")

    def data_file(self) -> Path:
        """The ``.jsonl`` file of ``self.split`` this task reads."""
        from evomm_zoo import default_zoo_dir

        root = Path(self.data) if self.data else default_zoo_dir("demo")
        if root.suffix == ".jsonl":
            path = root
        elif (root / f"{self.split}.jsonl").exists():
            path = root / f"{self.split}.jsonl"
        else:
            path = root / "data" / self.zoo_task / f"{self.split}.jsonl"
        if not path.exists():
            raise TaskError(
                f"task {self.name!r}: no data at {path} (data={self.data!r}, split={self.split!r}); "
                "build the toy zoo first with `evomm zoo build` (or pass data: <zoo dir>)"
            )
        return path

    def splits(self) -> list[str] | None:
        """The ``<split>.jsonl`` files beside this task's data (``None`` for one given file)."""
        from evomm_zoo import default_zoo_dir

        root = Path(self.data) if self.data else default_zoo_dir("demo")
        if root.suffix == ".jsonl":
            return None
        folder = root if any(root.glob("*.jsonl")) else root / "data" / self.zoo_task
        return sorted(p.stem for p in folder.glob("*.jsonl"))

    def load(self):
        import datasets
        from evomm_zoo.build import read_jsonl

        return datasets.Dataset.from_list(read_jsonl(self.data_file()))

    def score(self, handle: Any, examples: Sequence[dict[str, Any]]) -> TaskResult:
        prompts = [e["prompt"] for e in examples]
        outs = handle.generate(
            prompts,
            max_new_tokens=int(self.options.get("max_new_tokens", MAX_NEW_TOKENS)),
            stop=["\n"],
            batch_size=int(self.options.get("batch_size", 64)),
        )
        marks = [score_output(self.zoo_task, out, ex) for out, ex in zip(outs, examples)]
        details = [
            {"prompt": ex["prompt"], "output": out, "answer": ex["answer"], **mark}
            for out, ex, mark in zip(outs, examples, marks)
        ]
        items = {"strict": [m["strict"] for m in marks], "loose": [m["loose"] for m in marks]}
        return TaskResult.from_items(items, details)


class ToyJaSkill(ToyTextTask):
    name = "toy_ja_skill"
    zoo_task = "ja_skill"
    description = "toy zoo: Japanese word problem -> its equation ('5+4'); the ja parent's skill"
    metrics = (
        MetricSpec("strict", True, "the output begins with the right equation"),
        MetricSpec("loose", True, "the first two numbers are the operands (operator may be wrong)"),
    )


class ToyMath(ToyTextTask):
    name = "toy_math"
    zoo_task = "en_math"
    description = "toy zoo: English word problem -> 'a+b=c'; the math parent's skill"


class ToyJaMath(ToyTextTask):
    name = "toy_ja_math"
    zoo_task = "ja_math"
    description = "toy zoo: Japanese word problem -> 'a+b=c'; the target (a chain of both skills)"


TEXT_TASKS = (ToyJaSkill, ToyMath, ToyJaMath)
