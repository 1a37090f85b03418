"""The ``irt`` strategy (issue 19.3): the 1PL fit recovers known difficulties, anchors plus the
p-IRT estimate beat the mean of random items on data drawn from the model, and a run archives estimates and reports
the estimation error on candidates scored in full."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import evo_items as I  # noqa: E402

from evomm.archive import Archive  # noqa: E402
from evomm.evolve_recipe import parse_recipe  # noqa: E402
from evomm.irt import estimation_error, fit_difficulties, pirt_estimate  # noqa: E402
from evomm.runner import evolve  # noqa: E402


def _rasch(m: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    theta, b = rng.normal(0, 1, m), rng.normal(0, 1.5, n)
    y = (rng.random((m, n)) < 1 / (1 + np.exp(-(theta[:, None] - b[None, :])))).astype(float)
    return theta, b, y


def test_fit_recovers_known_difficulties():
    _, b, y = _rasch(60, 50, 0)
    fitted = fit_difficulties([dict(enumerate(row)) for row in y], 50)
    assert fitted is not None and np.corrcoef(fitted, b)[0, 1] > 0.9


def test_anchors_and_pirt_estimate_beat_the_mean_of_random_items():
    """What the strategy does (anchors at fitted-difficulty quantiles, p-IRT) against what
    ``subset`` does (the mean of as many items taken at random), on held-out candidates drawn
    from a 1PL model; errors against their true full-set means, averaged over 5 draws."""
    ours, naive = [], []
    for seed in range(5):
        _, _, y = _rasch(200, 100, seed)
        train, test = y[:100], y[100:]
        fitted = fit_difficulties([dict(enumerate(row)) for row in train], 100)
        anchors = np.argsort(fitted)[np.linspace(0, 99, 15).astype(int)]
        rand = np.random.default_rng(seed + 10).choice(100, 15, replace=False)
        truth = test.mean(axis=1)
        ours.append(np.abs([pirt_estimate({int(i): row[i] for i in anchors}, fitted) for row in test] - truth).mean())
        naive.append(np.abs(test[:, rand].mean(axis=1) - truth).mean())
    assert np.mean(ours) < 0.92 * np.mean(naive)


def test_irt_run_archives_estimates_and_reports_the_error(tmp_path):
    evolve(parse_recipe(I.recipe_dict(strategy="irt", anchors=12, generations=3, pop=10)), tmp_path / "run",
           plugins=I.plugins(), progress=False, report=False)
    children = Archive(tmp_path / "run" / "archive.jsonl").stage_records("syn")
    kinds = {r.evaluation for r in children}
    assert kinds == {"full", "estimate"}
    for r in children:
        if r.evaluation == "estimate":
            assert r.items_evaluated == 2 * 12 and set(r.stderr) == {"a", "b"}
        else:
            assert r.items_evaluated == 2 * I.N_ITEMS and set(r.extra["irt_estimate"]) == {"a", "b"}
    err = estimation_error(children)
    assert set(err) == {"a", "b"} and all(0 <= v < 0.25 for v in err.values())
