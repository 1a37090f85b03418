"""Text helpers shared by the metric modules: MGSM numeric answers, script ratio, MeCab tokens.

Plain functions (no ``evaluate``), so tasks can also call them for per-example details.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Any

from evomm.errors import TaskError

# A number not glued to a preceding digit/dot (so "3-2" gives 3 and 2, not -2), with decimals.
_NUMBER = re.compile(r"(?<![\d.])-?\d+(?:\.\d+)?")
# A comma between digits that groups thousands: "1,234,567".
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_MINUS = str.maketrans({"\u2212": "-", "\u2013": "-"})  # minus sign, en dash


def normalize_number(text: str) -> str:
    """Canonical form of a number string: ``"18.00"`` -> ``"18"``, ``"-0.50"`` -> ``"-0.5"``.

    Example:
        >>> normalize_number("1,000.0")
        '1000'
    """
    t = unicodedata.normalize("NFKC", str(text)).translate(_MINUS).replace(",", "").strip()
    try:
        value = float(t)
    except ValueError:
        return t
    if value.is_integer():
        return str(int(value))
    return repr(value)


def extract_last_number(text: str) -> str | None:
    """The last number in ``text``, normalised (the MGSM convention), or ``None``.

    Full-width digits and punctuation are folded (NFKC), thousands separators dropped,
    trailing text ignored.

    Example:
        >>> extract_last_number("りんごは全部で１，２００個です。答えは 1,200 個。")
        '1200'
    """
    t = unicodedata.normalize("NFKC", str(text)).translate(_MINUS)
    t = _THOUSANDS.sub("", t)
    found = _NUMBER.findall(t)
    return normalize_number(found[-1]) if found else None


def _is_japanese_char(ch: str) -> bool:
    code = ord(ch)
    return (
        0x3040 <= code <= 0x30FF  # hiragana, katakana
        or 0x31F0 <= code <= 0x31FF  # katakana extensions
        or 0x4E00 <= code <= 0x9FFF  # CJK unified ideographs
        or 0x3400 <= code <= 0x4DBF  # CJK extension A
        or 0xFF66 <= code <= 0xFF9F  # half-width katakana
    )


def japanese_ratio(text: str) -> float:
    """Fraction of the letters in ``text`` that are kana or kanji (0 when it has no letters).

    Example:
        >>> japanese_ratio("赤いりんご")
        1.0
        >>> japanese_ratio("red apple")
        0.0
    """
    letters = [c for c in unicodedata.normalize("NFKC", text) if unicodedata.category(c).startswith("L")]
    if not letters:
        return 0.0
    return sum(_is_japanese_char(c) for c in letters) / len(letters)


def is_japanese(text: str, min_ratio: float = 0.5) -> bool:
    """True when at least ``min_ratio`` of the letters of ``text`` are kana or kanji."""
    return japanese_ratio(text) >= min_ratio


@functools.lru_cache(maxsize=1)
def _tagger() -> Any:
    try:
        import fugashi
        import unidic_lite  # noqa: F401 - the dictionary fugashi's Tagger finds
    except ImportError as exc:
        raise TaskError(
            f"Japanese ROUGE-L needs MeCab (fugashi + unidic-lite), which is missing ({exc.name}); "
            "install the ja extra: pip install 'evomm[ja]'"
        ) from exc
    return fugashi.Tagger("-Owakati")


def normalize_ja(text: str) -> str:
    """NFKC, whitespace folded to single spaces, stripped (before MeCab tokenization)."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def mecab_tokens(text: str) -> list[str]:
    """MeCab (fugashi ``-Owakati``, unidic-lite) tokens of the normalised ``text``.

    Example:
        >>> mecab_tokens("猫が好きです")
        ['猫', 'が', '好き', 'です']
    """
    return _tagger().parse(normalize_ja(text)).split()


class MecabTokenizer:
    """A ``rouge_score`` tokenizer (``.tokenize(text)``) over MeCab tokens."""

    def tokenize(self, text: str) -> list[str]:
        return mecab_tokens(text)
