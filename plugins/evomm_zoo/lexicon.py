"""Words of the toy zoo's bilingual world: names, objects, verbs, colours and shapes.

Everything the templates in :mod:`evomm_zoo.textdata` (and the vision half's captions and
questions) write is built from these tables, and the tokenizer's character set is derived from
them (:func:`charset`), so a template can never produce an unknown character.

Names are made procedurally from kana syllables: the English name is the romaji ("Kaito"), the
Japanese name the hiragana of the same syllables ("かいと"), so parallel EN = JA lines stay
consistent. :func:`name_pool` returns disjoint train/dev/test name lists (held-out names).
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

#: (romaji, hiragana) syllables used to make names.
SYLLABLES: tuple[tuple[str, str], ...] = (
    ("ka", "か"), ("ki", "き"), ("ku", "く"), ("ke", "け"), ("ko", "こ"),
    ("sa", "さ"), ("shi", "し"), ("su", "す"), ("se", "せ"), ("so", "そ"),
    ("ta", "た"), ("chi", "ち"), ("te", "て"), ("to", "と"),
    ("na", "な"), ("ni", "に"), ("no", "の"),
    ("ha", "は"), ("hi", "ひ"), ("fu", "ふ"), ("ho", "ほ"),
    ("ma", "ま"), ("mi", "み"), ("mu", "む"), ("me", "め"), ("mo", "も"),
    ("ya", "や"), ("yu", "ゆ"), ("yo", "よ"),
    ("ra", "ら"), ("ri", "り"), ("ru", "る"), ("re", "れ"), ("ro", "ろ"),
    ("wa", "わ"), ("n", "ん"),
)  # fmt: skip


@dataclass(frozen=True)
class Noun:
    """A countable object in both languages (``en`` plural, ``ja``)."""

    en: str
    ja: str


OBJECTS: tuple[Noun, ...] = (
    Noun("apples", "りんご"), Noun("oranges", "みかん"), Noun("balls", "ボール"),
    Noun("pens", "ペン"), Noun("books", "ほん"), Noun("cookies", "クッキー"),
    Noun("flowers", "はな"), Noun("cards", "カード"), Noun("cups", "コップ"),
    Noun("eggs", "たまご"),
)  # fmt: skip

#: English verb phrase (takes the number), Japanese verb, and the operator it means.
VERBS: tuple[tuple[str, str, str], ...] = (
    ("buys {b} more", "{b}こかいました。", "+"),
    ("gets {b} more", "{b}こもらいました。", "+"),
    ("eats {b}", "{b}こたべました。", "-"),
    ("gives away {b}", "{b}こあげました。", "-"),
)

COLOURS: tuple[Noun, ...] = (
    Noun("red", "あか"), Noun("blue", "あお"), Noun("green", "みどり"),
    Noun("yellow", "きいろ"), Noun("white", "しろ"), Noun("black", "くろ"),
)  # fmt: skip

SHAPES: tuple[Noun, ...] = (
    Noun("circle", "まる"), Noun("square", "しかく"), Noun("triangle", "さんかく"),
    Noun("star", "ほし"),
)  # fmt: skip

#: Fixed Japanese phrases (the kana/kanji the templates use beyond names and nouns).
JA_PHRASES: tuple[str, ...] = (
    "問: ",
    " 答: ",
    "は",
    "を",
    "こもっています。",
    "いまなんこ？",
    "なにをもっていますか？",
    "だれがもっていますか？",
    "なにいろ？",
    "なにのかたち？",
    "のえ",
    "があります。",
    "えいごで",
    "にほんごで",
    "です。",
    "、",
    "。",
    "？",
    "の",
    "いろ",
    "かたち",
)

#: Random Japanese filler characters for "neutral prefixes" (never a Japanese story).
JA_FILLER: str = "あいうえおかきくけこさしすせそたちつてとなにぬねのまみむめもやゆよらりるれろわん"

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<s>", "</s>", "<unk>", "<image>")


def charset() -> list[str]:
    """Every character the zoo's templates can write, sorted (the tokenizer's vocabulary).

    Returns:
        Printable ASCII (without tab/vertical whitespace) and every non-ASCII character used
        by the tables above, sorted by code point.

    Example:
        >>> "あ" in charset() and "+" in charset()
        True
    """
    chars = set(string.printable) - set("\t\r\x0b\x0c")
    for _, ja in SYLLABLES:
        chars.update(ja)
    for table in (OBJECTS, COLOURS, SHAPES):
        for noun in table:
            chars.update(noun.ja)
    for _, ja, _ in VERBS:
        chars.update(ja)
    for phrase in JA_PHRASES:
        chars.update(phrase)
    chars.update(JA_FILLER)
    return sorted(chars)


@dataclass(frozen=True)
class Name:
    """A person's name in both scripts."""

    en: str
    ja: str


def _make_name(rng: random.Random) -> Name:
    k = rng.choice((2, 2, 3))
    parts = [rng.choice(SYLLABLES[:-1])]  # no name starts with ん
    parts += [rng.choice(SYLLABLES) for _ in range(k - 1)]
    en = "".join(p[0] for p in parts)
    return Name(en[0].upper() + en[1:], "".join(p[1] for p in parts))


def name_pool(seed: int, sizes: tuple[int, int, int] = (120, 40, 40)) -> dict[str, list[Name]]:
    """Disjoint name lists for the train, dev and test splits.

    Args:
        seed: random seed (the same seed gives the same lists).
        sizes: how many names in train, dev and test.

    Returns:
        ``{"train": [...], "dev": [...], "test": [...]}``; no English or Japanese spelling is
        shared between two splits.

    Example:
        >>> pools = name_pool(0)
        >>> set(n.ja for n in pools["train"]).isdisjoint(n.ja for n in pools["test"])
        True
    """
    rng = random.Random(f"names-{seed}")
    seen_en: set[str] = set()
    seen_ja: set[str] = set()
    names: list[Name] = []
    while len(names) < sum(sizes):
        name = _make_name(rng)
        if name.en in seen_en or name.ja in seen_ja:
            continue
        seen_en.add(name.en)
        seen_ja.add(name.ja)
        names.append(name)
    a, b = sizes[0], sizes[0] + sizes[1]
    return {"train": names[:a], "dev": names[a:b], "test": names[b:]}
