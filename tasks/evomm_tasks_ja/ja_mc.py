"""``ja_mc``: Japanese multiple choice by log-likelihood (JCommonsenseQA schema)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evomm.errors import TaskError
from evomm.handle import ModelHandle
from evomm.tasks import MetricSpec, Task, TaskResult

#: Context template; each choice is scored as the continuation.
PROMPT = "質問：{question}\n選択肢：{choices}\n答え："


class JaMC(Task):
    """JCommonsenseQA-style multiple choice (q_id, question, choice0..choiceN, label).

    Each choice is scored by the log-likelihood of its text after the prompt; the prediction is
    the argmax. ``accuracy_norm`` divides each log-likelihood by the choice's length in
    characters (lm-eval's ``acc_norm``).

    Options:
        prompt: template with ``{question}`` and ``{choices}`` (default :data:`PROMPT`).
        batch_size: requests per forward pass (16).
    """

    name = "ja_mc"
    description = "Japanese commonsense multiple choice (JCommonsenseQA) by log-likelihood"
    modality = "text"
    requires = frozenset({"loglikelihood"})
    metrics = (
        MetricSpec("accuracy", True, "argmax of the choices' log-likelihoods is the label"),
        MetricSpec("accuracy_norm", True, "same with log-likelihood per character"),
    )
    default_data = "shunk031/JGLUE"
    default_config = "JCommonsenseQA"
    default_split = "validation"

    @staticmethod
    def choices(example: dict[str, Any]) -> list[str]:
        out = []
        while f"choice{len(out)}" in example and example[f"choice{len(out)}"] is not None:
            out.append(str(example[f"choice{len(out)}"]))
        if len(out) < 2:
            raise TaskError(
                f"ja_mc example {example.get('q_id', '?')} has {len(out)} choices; the JCommonsenseQA "
                "schema has columns choice0, choice1, ... and label"
            )
        return out

    def score(self, handle: ModelHandle, examples: Sequence[dict[str, Any]]) -> TaskResult:
        template = self.options.get("prompt", PROMPT)
        requests, owners = [], []
        for k, e in enumerate(examples):
            options = self.choices(e)
            ctx = template.format(question=e["question"], choices="、".join(options))
            requests += [(ctx, c) for c in options]
            owners += [k] * len(options)
        lls = handle.loglikelihood(requests, batch_size=int(self.options.get("batch_size", 16)))
        per: list[list[tuple[float, float]]] = [[] for _ in examples]
        for (_, cont), k, ll in zip(requests, owners, lls):
            per[k].append((ll, ll / max(1, len(cont))))
        pred = [max(range(len(p)), key=lambda i, p=p: p[i][0]) for p in per]
        pred_norm = [max(range(len(p)), key=lambda i, p=p: p[i][1]) for p in per]
        labels = [int(e["label"]) for e in examples]
        items = {
            "accuracy": [y == t for y, t in zip(pred, labels)],
            "accuracy_norm": [y == t for y, t in zip(pred_norm, labels)],
        }
        details = [{"loglikelihoods": [x[0] for x in p], "pred": y, "label": t} for p, y, t in zip(per, pred, labels)]
        return TaskResult.from_items(items, details)
