"""One offline switch for models and data sets (:func:`evomm.hub.is_offline`), each kind reading
the variables its Hugging Face library reads."""

from __future__ import annotations

import pytest

from evomm.adapters import ModelRef
from evomm.data import load_hub
from evomm.errors import CheckpointError, OfflineError
from evomm.hub import OFFLINE_VARIABLES, is_offline, resolve_model_dir


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


def test_a_hub_model_missing_offline_says_how_to_get_it_at_once(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(OfflineError, match=r"huggingface-cli download org/tiny-model --local-dir DIR.*"
                                           r"`path: DIR` in an evolve recipe"):
        resolve_model_dir(ModelRef("ja", "org/tiny-model"))
    with pytest.raises(CheckpointError, match=r"'\./nowhere' does not exist; check its `model:` \(merge recipe\) "
                                              r"or `path:` \(evolve recipe\)"):
        resolve_model_dir(ModelRef("ja", "./nowhere"))
