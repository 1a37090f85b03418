"""Multiple-choice accuracy: the fraction of chosen indices that equal the gold index."""

import datasets
import evaluate

_KWARGS = """
Args:
    predictions: chosen choice index per question (e.g. argmax of log-likelihoods).
    references: gold choice index per question.
Returns:
    accuracy: fraction of questions answered correctly.
Example:
    >>> evaluate.load("evomm/metrics/mc_accuracy").compute(predictions=[0, 2], references=[0, 1])
    {'accuracy': 0.5}
"""


class MCAccuracy(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Multiple-choice accuracy.",
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references):
        hits = [int(p) == int(r) for p, r in zip(predictions, references)]
        return {"accuracy": sum(hits) / len(hits) if hits else 0.0}
