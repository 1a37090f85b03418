"""Exact match of numeric answers, MGSM convention: the last number of the prediction is its answer.

Full-width digits are folded, thousands separators dropped, trailing text ignored, and numbers
compared after normalisation (``18.0`` == ``18``).
"""

import datasets
import evaluate

from evomm.metrics.textutils import extract_last_number, normalize_number

_DESCRIPTION = "Exact match between the last number in each prediction and the reference number (MGSM)."
_KWARGS = """
Args:
    predictions: model outputs (free text; the last number in each is its answer).
    references: reference answers (numbers or number strings).
Returns:
    exact_match: fraction of predictions whose last number equals the reference.
Example:
    >>> m = evaluate.load("evomm/metrics/numeric_match")
    >>> m.compute(predictions=["... 答えは１，２００です"], references=["1200"])
    {'exact_match': 1.0}
"""


class NumericMatch(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Shi et al., Language Models are Multilingual Chain-of-Thought Reasoners (MGSM), 2022",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        hits = [extract_last_number(p) == normalize_number(r) for p, r in zip(predictions, references)]
        return {"exact_match": sum(hits) / len(hits) if hits else 0.0}
