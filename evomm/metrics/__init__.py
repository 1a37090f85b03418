"""Metrics shipped with evomm as ``evaluate`` modules, loaded by path (hub metrics need network).

Each metric is ``evomm/metrics/<name>/<name>.py``; :func:`load_metric` loads it with
``evaluate.load(path)``, which works offline.

Metrics:
    numeric_match: MGSM exact match on the last number of the output -> ``exact_match``.
    mc_accuracy: multiple-choice accuracy on chosen indices -> ``accuracy``.
    rouge_ja: ROUGE-L over MeCab tokens, optional Japanese-answer check -> ``rougeL``
        (needs the ``ja`` extra).

Example:
    >>> from evomm.metrics import load_metric
    >>> load_metric("mc_accuracy").compute(predictions=[1, 0], references=[1, 1])
    {'accuracy': 0.5}
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from evomm.errors import TaskError

METRICS_DIR = Path(__file__).resolve().parent
#: The metrics shipped in this package.
METRICS = ("numeric_match", "mc_accuracy", "rouge_ja")


def metric_path(name: str) -> Path:
    """Directory of the shipped metric ``name`` (what ``evaluate.load`` takes)."""
    if name not in METRICS:
        raise TaskError(f"unknown evomm metric {name!r}; available: {', '.join(METRICS)}")
    return METRICS_DIR / name


@functools.cache
def load_metric(name: str) -> Any:
    """Load a shipped metric as an ``evaluate.EvaluationModule`` (cached per process).

    Args:
        name: one of :data:`METRICS`.

    Returns:
        The module; call ``.compute(predictions=..., references=...)``.

    Raises:
        TaskError: unknown name, or its dependencies (e.g. the ``ja`` extra) are missing.
    """
    import evaluate

    try:
        return evaluate.load(str(metric_path(name)))
    except ImportError as exc:
        raise TaskError(
            f"metric {name!r} cannot load: {exc}; install the extra it needs (pip install 'evomm[ja]')"
        ) from exc
