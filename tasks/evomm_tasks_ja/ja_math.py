"""``ja_math``: MGSM-JA style free-form math; the answer is the last number of the output."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evomm.handle import ModelHandle
from evomm.metrics.textutils import extract_last_number, is_japanese, normalize_number
from evomm.tasks import MetricSpec, Task, TaskResult

#: The Japanese chain-of-thought instruction prompt (the Alpaca-style template EvoLLM-JP used).
PROMPT = (
    "以下に、あるタスクを説明する指示があります。"
    "リクエストを適切に完了するための回答を日本語で記述してください。一歩一歩考えましょう。\n\n"
    "### 指示:\n{question}\n\n### 応答:\n"
)


class JaMath(Task):
    """Japanese grade-school math (juletxara/mgsm, config ``ja``: question, answer_number).

    Options:
        prompt: template with ``{question}`` (default :data:`PROMPT`).
        max_new_tokens: generation budget (256). stop: stop strings (``("### 指示",)``).
        require_japanese: count an answer as correct only if the output is Japanese (True, as
            EvoLLM-JP). batch_size: prompts per forward pass (16).
    """

    name = "ja_math"
    description = "Japanese math word problems (MGSM-JA); accuracy of the last number"
    modality = "text"
    requires = frozenset({"generate"})
    metrics = (
        MetricSpec("accuracy", True, "correct last number (and Japanese output when required)"),
        MetricSpec("japanese", True, "fraction of outputs written in Japanese"),
    )
    default_data = "juletxara/mgsm"
    default_config = "ja"

    def score(self, handle: ModelHandle, examples: Sequence[dict[str, Any]]) -> TaskResult:
        template = self.options.get("prompt", PROMPT)
        outputs = handle.generate(
            [template.format(question=e["question"]) for e in examples],
            max_new_tokens=int(self.options.get("max_new_tokens", 256)),
            stop=tuple(self.options.get("stop", ("### 指示",))),
            batch_size=int(self.options.get("batch_size", 16)),
        )
        refs = [normalize_number(str(e["answer_number"])) for e in examples]
        japanese = [is_japanese(o) for o in outputs]
        if self.options.get("require_japanese", True):
            # a wrong-language output cannot match: give the metric a prediction with no number
            preds = [o if ja else "" for o, ja in zip(outputs, japanese)]
        else:
            preds = list(outputs)
        hits = [extract_last_number(p) == normalize_number(r) for p, r in zip(preds, refs)]  # numeric_match, per item
        details = [
            {"output": o, "extracted": extract_last_number(o), "reference": r, "japanese": ja}
            for o, r, ja in zip(outputs, refs, japanese)
        ]
        return TaskResult.from_items({"accuracy": hits, "japanese": japanese}, details)
