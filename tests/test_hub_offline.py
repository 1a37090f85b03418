"""One offline switch for models and data sets (:func:`evomm.hub.is_offline`), each kind reading
the variables its Hugging Face library reads."""

from __future__ import annotations

import pytest

from evomm.data import load_hub
from evomm.errors import OfflineError
from evomm.hub import OFFLINE_VARIABLES, is_offline


@pytest.mark.parametrize(
    ("variable", "models", "datasets"),
    [
        ("HF_HUB_OFFLINE", True, True),
        ("TRANSFORMERS_OFFLINE", True, False),
        ("HF_DATASETS_OFFLINE", False, True),
        (None, False, False),
    ],
)
def test_each_kind_reads_its_own_variables(monkeypatch, variable, models, datasets) -> None:
    for v in {v for vs in OFFLINE_VARIABLES.values() for v in vs}:
        monkeypatch.delenv(v, raising=False)
    if variable:
        monkeypatch.setenv(variable, "yes")
    assert (is_offline("models"), is_offline("datasets")) == (models, datasets)
    if datasets:  # a hub data set is refused at once, without a network attempt
        with pytest.raises(OfflineError, match="is a hub dataset"):
            load_hub("org/some-dataset")


def test_false_values_are_not_offline(monkeypatch) -> None:
    for value in ("0", "false", "", "no"):
        monkeypatch.setenv("HF_HUB_OFFLINE", value)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        assert not is_offline()
