"""The metric modules (evaluate, loaded by path) against hand-computed values."""

from __future__ import annotations

import sys

import pytest

from evomm.errors import TaskError
from evomm.metrics import load_metric, textutils
from evomm.metrics.textutils import extract_last_number, is_japanese, japanese_ratio, mecab_tokens


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("ステップ1: 5個のりんごと3個のりんごで8個。\n答えは8です。", "8"),
        ("合計は1,250円です。したがって、答えは 1,250 円。", "1250"),
        ("全部で１２個になります。", "12"),  # full-width digits
        ("答え：１，０００", "1000"),  # full-width comma
        ("48 / 2 = 24. The answer is 24.", "24"),  # trailing period
        ("気温は -3 度から 5 度上がって 2 度です", "2"),
        ("差は−7です", "-7"),  # U+2212 minus sign
        ("3.50ドルの2倍は7.00ドル", "7"),
        ("He has 1,234,567 dollars left over", "1234567"),
        ("答えは分かりません", None),
    ],
)
def test_mgsm_extractor_on_real_style_outputs(output: str, expected: str | None) -> None:
    assert extract_last_number(output) == expected


def test_numeric_match_module() -> None:
    m = load_metric("numeric_match")
    preds = ["答えは１８です。", "so 3 + 4 = 7 apples", "The answer is 1,000.", "わかりません"]
    refs = ["18", "8", "1000", "0"]
    assert m.compute(predictions=preds, references=refs) == {"exact_match": 2 / 4}


def test_mc_accuracy_module() -> None:
    m = load_metric("mc_accuracy")
    assert m.compute(predictions=[0, 2, 1, 4, 3], references=[0, 1, 1, 4, 0]) == {"accuracy": 3 / 5}


def test_mecab_tokens_are_the_known_unidic_split() -> None:
    assert mecab_tokens("机の上に赤いりんごがあります。") == ["机", "の", "上", "に", "赤い", "りんご", "が", "あり", "ます", "。"]
    assert mecab_tokens("テーブルに青いりんごがある") == ["テーブル", "に", "青い", "りんご", "が", "ある"]
    assert mecab_tokens("ｒｅｄ　１２３") == mecab_tokens("red 123")  # NFKC before tokenizing


def test_rouge_ja_on_a_hand_computed_pair() -> None:
    m = load_metric("rouge_ja")
    # tokens checked above: LCS = (に, りんご, が) = 3; P = 3/10, R = 3/6; F = 2PR/(P+R) = 0.375
    res = m.compute(predictions=["机の上に赤いりんごがあります。"], references=["テーブルに青いりんごがある"])
    assert res["rougeL"] == pytest.approx(0.375)
    same = m.compute(predictions=["赤いりんご"], references=["赤いりんご"])
    assert same["rougeL"] == pytest.approx(1.0)


def test_rouge_ja_japanese_check() -> None:
    m = load_metric("rouge_ja")
    preds, refs = ["red apple 赤", "赤いりんご"], ["red apple 赤", "赤いりんご"]
    # "red apple 赤": 1 of 9 letters is kanji -> not Japanese; the reference is not either, so it counts
    assert m.compute(predictions=preds, references=refs, require_japanese=True)["rougeL"] == pytest.approx(1.0)
    res = m.compute(predictions=["red", "赤"], references=["赤", "赤"], require_japanese=True)
    assert res["scores"] == [0.0, pytest.approx(1.0)]
    assert japanese_ratio("LED電球") == pytest.approx(2 / 5)
    assert is_japanese("カメラ") and not is_japanese("camera") and not is_japanese("123")


def test_missing_ja_extra_is_a_clear_error(monkeypatch) -> None:
    textutils._tagger.cache_clear()
    monkeypatch.setitem(sys.modules, "fugashi", None)  # import fugashi -> ImportError
    with pytest.raises(TaskError, match=r"pip install 'evomm\[ja\]'"):
        mecab_tokens("猫")
    textutils._tagger.cache_clear()


def test_unknown_metric_name() -> None:
    with pytest.raises(TaskError, match="rouge_ja"):
        load_metric("rouge-ja")
