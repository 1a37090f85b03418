"""ROUGE-L F-measure over MeCab tokens (fugashi ``-Owakati`` with unidic-lite), as EvoVLM-JP.

Texts are NFKC-normalised before tokenization. With ``require_japanese=True``, a prediction
that is not Japanese (kana/kanji below ``min_japanese_ratio`` of its letters) scores 0 against a
Japanese reference. Needs the ``ja`` extra (``pip install 'evomm[ja]'``).
"""

import datasets
import evaluate
from rouge_score import rouge_scorer

from evomm.metrics.textutils import MecabTokenizer, is_japanese

_KWARGS = """
Args:
    predictions: generated answers.
    references: reference answers.
    require_japanese: score 0 when the reference is Japanese and the prediction is not.
    min_japanese_ratio: fraction of kana/kanji letters that makes a text Japanese (0.5).
Returns:
    rougeL: mean ROUGE-L F-measure in [0, 1]; scores: the per-example values.
Example:
    >>> evaluate.load("evomm/metrics/rouge_ja").compute(predictions=["赤い"], references=["赤い"])
    {'rougeL': 1.0, 'scores': [1.0]}
"""


class RougeJa(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="ROUGE-L over MeCab tokens, with an optional Japanese-answer check.",
            citation="Akiba et al., Evolutionary Optimization of Model Merging Recipes, 2024",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, require_japanese=False, min_japanese_ratio=0.5):
        scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=MecabTokenizer())
        scores = []
        for pred, ref in zip(predictions, references):
            if require_japanese and is_japanese(ref, min_japanese_ratio) and not is_japanese(
                pred, min_japanese_ratio
            ):
                scores.append(0.0)
                continue
            scores.append(scorer.score(ref, pred)["rougeL"].fmeasure)
        return {"rougeL": sum(scores) / len(scores) if scores else 0.0, "scores": scores}
