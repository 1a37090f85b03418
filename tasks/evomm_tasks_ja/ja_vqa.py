"""``ja_vqa``: Japanese visual QA scored by ROUGE-L over MeCab tokens (JA-VG-VQA-500 schema)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evomm.errors import TaskError
from evomm.handle import ModelHandle
from evomm.metrics import load_metric
from evomm.tasks import MetricSpec, Task, TaskResult

#: Prompt template; the handle places the image (one per prompt).
PROMPT = "{question}"


class JaVQA(Task):
    """JA-VG-VQA-500 (image_id, image, qas: [{qa_id, question, answer}]); one example per QA.

    Rows that are already flat (image, question, answer) are used as they are.

    Options:
        prompt: template with ``{question}`` (default: the question itself).
        max_new_tokens: generation budget (64). stop: stop strings (``("\\n",)``).
        require_japanese: a non-Japanese answer to a Japanese reference scores 0 (True, as
            EvoVLM-JP). batch_size: prompts per forward pass (8).
    """

    name = "ja_vqa"
    description = "Japanese visual QA (JA-VG-VQA-500), ROUGE-L over MeCab tokens"
    modality = "image+text"
    requires = frozenset({"generate", "image"})
    metrics = (MetricSpec("rougeL", True, "mean ROUGE-L F over MeCab tokens (0 for non-Japanese)"),)
    default_data = "SakanaAI/JA-VG-VQA-500"

    def load(self) -> Any:
        ds = super().load()
        if "qas" not in ds.column_names:
            missing = {"image", "question", "answer"} - set(ds.column_names)
            if missing:
                raise TaskError(
                    f"ja_vqa data {self.data!r} lacks columns {sorted(missing)}; use the JA-VG-VQA-500 "
                    "schema (image, qas) or flat rows (image, question, answer)"
                )
            return ds

        def flatten(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
            out: dict[str, list[Any]] = {"image_id": [], "image": [], "qa_id": [], "question": [], "answer": []}
            for image_id, image, qas in zip(batch["image_id"], batch["image"], batch["qas"]):
                for qa in qas:
                    out["image_id"].append(image_id)
                    out["image"].append(image)
                    for key in ("qa_id", "question", "answer"):
                        out[key].append(qa[key])
            return out

        return ds.map(flatten, batched=True, remove_columns=ds.column_names)

    def score(self, handle: ModelHandle, examples: Sequence[dict[str, Any]]) -> TaskResult:
        template = self.options.get("prompt", PROMPT)
        outputs = handle.generate(
            [template.format(question=e["question"]) for e in examples],
            images=[e["image"] for e in examples],
            max_new_tokens=int(self.options.get("max_new_tokens", 64)),
            stop=tuple(self.options.get("stop", ("\n",))),
            batch_size=int(self.options.get("batch_size", 8)),
        )
        refs = [str(e["answer"]) for e in examples]
        res = load_metric("rouge_ja").compute(
            predictions=[o.strip() for o in outputs],
            references=refs,
            require_japanese=bool(self.options.get("require_japanese", True)),
        )
        details = [{"output": o, "reference": r, "rougeL": s} for o, r, s in zip(outputs, refs, res["scores"])]
        return TaskResult.from_items({"rougeL": res["scores"]}, details)
