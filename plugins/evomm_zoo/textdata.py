"""Templated bilingual text: pretraining streams, fine-tuning streams and task splits.

The world: people (procedural names, :mod:`evomm_zoo.lexicon`) have some objects and buy, get,
eat or give some away. English problem -> equation is the *math* skill, Japanese problem ->
equation is the *ja* skill, and the target (Japanese problem -> ``a+b=c``) is the chain of both.

Training streams are functions of a ``random.Random`` that return one :class:`Example` per call;
:data:`BASE_MIX`, :data:`JA_MIX` and :data:`MATH_MIX` name the samplers and their weights.
Task splits (:func:`task_rows`) use disjoint name lists, so no train name appears in dev or test.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from evomm_zoo.lexicon import COLOURS, JA_FILLER, OBJECTS, SHAPES, VERBS, Name, Noun, name_pool

#: Prompt markers.
EN_Q, EN_A = "Q: ", " A: "
JA_Q, JA_A = "問: ", " 答: "

#: The three text tasks (directory names under ``<zoo>/data``).
TEXT_TASKS: tuple[str, ...] = ("ja_skill", "en_math", "ja_math")


@dataclass(frozen=True)
class Example:
    """One training sequence: loss on ``completion`` (and on EOS when ``eos``), not on ``prompt``."""

    prompt: str
    completion: str
    eos: bool = True


@dataclass(frozen=True)
class Problem:
    """An arithmetic word problem: ``name`` has ``a`` objects and ``verb`` ``b`` of them."""

    name: Name
    obj: Noun
    a: int
    b: int
    verb: int  # index into VERBS

    @property
    def op(self) -> str:
        return VERBS[self.verb][2]

    @property
    def equation(self) -> str:
        return f"{self.a}{self.op}{self.b}"

    @property
    def result(self) -> int:
        return self.a + self.b if self.op == "+" else self.a - self.b

    def story_en(self) -> str:
        verb = VERBS[self.verb][0].format(b=self.b)
        return f"{self.name.en} has {self.a} {self.obj.en} and {verb}."

    def story_ja(self) -> str:
        verb = VERBS[self.verb][1].format(b=self.b)
        return f"{self.name.ja}は{self.obj.ja}を{self.a}こもっています。{verb}"

    def prompt_en(self) -> str:
        return f"{EN_Q}{self.story_en()} How many now?{EN_A}"

    def prompt_ja(self) -> str:
        return f"{JA_Q}{self.story_ja()}いまなんこ？{JA_A}"


def random_problem(rng: random.Random, names: list[Name]) -> Problem:
    """A problem with operands 1-9 (``a > b`` for subtraction, so results are 1-18)."""
    verb = rng.randrange(len(VERBS))
    if VERBS[verb][2] == "-":
        a = rng.randint(2, 9)
        b = rng.randint(1, a - 1)
    else:
        a, b = rng.randint(1, 9), rng.randint(1, 9)
    return Problem(rng.choice(names), rng.choice(OBJECTS), a, b, verb)


def random_equation(rng: random.Random) -> tuple[str, int]:
    """A bare equation's left side and result, e.g. ``("5+4", 9)``."""
    p = random_problem(rng, [Name("X", "x")])
    return p.equation, p.result


def _colour_sentence(rng: random.Random, names: list[Name]) -> tuple[str, str]:
    n, c, s = rng.choice(names), rng.choice(COLOURS), rng.choice(SHAPES)
    return f"{n.en} has a {c.en} {s.en}.", f"{n.ja}は{c.ja}の{s.ja}をもっています。"


# ---------------------------------------------------------------- pretraining (base) samplers


def s_story_en(rng: random.Random, names: list[Name]) -> Example:
    if rng.random() < 0.7:
        return Example("", random_problem(rng, names).story_en())
    return Example("", _colour_sentence(rng, names)[0])


def s_story_ja(rng: random.Random, names: list[Name]) -> Example:
    if rng.random() < 0.7:
        return Example("", random_problem(rng, names).story_ja())
    return Example("", _colour_sentence(rng, names)[1])


def s_parallel(rng: random.Random, names: list[Name]) -> Example:
    if rng.random() < 0.7:
        p = random_problem(rng, names)
        return Example("", f"{p.story_en()} = {p.story_ja()}")
    en, ja = _colour_sentence(rng, names)
    return Example("", f"{en} = {ja}")


def s_equation(rng: random.Random, names: list[Name]) -> Example:
    lhs, res = random_equation(rng)
    return Example("", f"{lhs}={res}")


_SALAD = "the a of and to in is it on at by we you so up go no do me my be as or if an".split()


def neutral_prefix(rng: random.Random, names: list[Name]) -> str:
    """An English story, ASCII word salad or random kana: context that is *not* a Japanese story."""
    kind = rng.randrange(3)
    if kind == 0:
        return random_problem(rng, names).story_en()
    if kind == 1:
        return " ".join(rng.choice(_SALAD) for _ in range(rng.randint(3, 10))) + "."
    return "".join(rng.choice(JA_FILLER) for _ in range(rng.randint(5, 20))) + "。"


def s_prefixed_equation(rng: random.Random, names: list[Name]) -> Example:
    lhs, res = random_equation(rng)
    return Example("", f"{neutral_prefix(rng, names)} {lhs}={res}")


# ---------------------------------------------------------------- fine-tuning samplers


def s_ja_problem(rng: random.Random, names: list[Name]) -> Example:
    """ja parent: Japanese problem -> its equation only, no loss on what follows (no EOS)."""
    p = random_problem(rng, names)
    return Example(p.prompt_ja(), p.equation, eos=False)


def s_ja_problem_eq(rng: random.Random, names: list[Name]) -> Example:
    """ja parent (variant): Japanese problem -> its equation with ``=`` ("5+4="), nothing after."""
    p = random_problem(rng, names)
    return Example(p.prompt_ja(), p.equation + "=", eos=False)


def s_ja_other(rng: random.Random, names: list[Name]) -> Example:
    """ja parent: other Japanese questions (who, what, which colour, English word in Japanese)."""
    kind = rng.randrange(4)
    if kind == 0:
        p = random_problem(rng, names)
        return Example(f"{JA_Q}{p.story_ja()}なにをもっていますか？{JA_A}", p.obj.ja, eos=False)
    if kind == 1:
        p = random_problem(rng, names)
        return Example(f"{JA_Q}{p.story_ja()}だれがもっていますか？{JA_A}", p.name.ja, eos=False)
    n, c, s = rng.choice(names), rng.choice(COLOURS), rng.choice(SHAPES)
    if kind == 2:
        return Example(f"{JA_Q}{n.ja}は{c.ja}の{s.ja}をもっています。なにいろ？{JA_A}", c.ja, eos=False)
    word = rng.choice(COLOURS + SHAPES)
    return Example(f"{JA_Q}{word.en}はにほんごで？{JA_A}", word.ja, eos=False)


def s_en_problem(rng: random.Random, names: list[Name]) -> Example:
    """math parent: English problem -> ``a+b=c``."""
    p = random_problem(rng, names)
    return Example(p.prompt_en(), f"{p.equation}={p.result}")


def s_bare_equation(rng: random.Random, names: list[Name]) -> Example:
    """math parent: ``a+b=`` -> ``c``."""
    lhs, res = random_equation(rng)
    return Example(f"{lhs}=", str(res))


def s_bare_lhs(rng: random.Random, names: list[Name]) -> Example:
    """math parent (variant): ``a+b`` -> ``=c`` (the ``=`` is supervised too)."""
    lhs, res = random_equation(rng)
    return Example(lhs, f"={res}")


def s_kana_equation(rng: random.Random, names: list[Name]) -> Example:
    """math parent: ``問: <random kana>。 答: a+b`` -> ``=c``: the answer format of the Japanese
    problems, around noise that cannot be read (never a Japanese story)."""
    lhs, res = random_equation(rng)
    noise = "".join(rng.choice(JA_FILLER) for _ in range(rng.randint(8, 30)))
    return Example(f"{JA_Q}{noise}。{JA_A}{lhs}", f"={res}")


def s_ja_other_eos(rng: random.Random, names: list[Name]) -> Example:
    """ja parent: :func:`s_ja_other` with loss on the end-of-sequence token (the recipe's mix)."""
    ex = s_ja_other(rng, names)
    return Example(ex.prompt, ex.completion, eos=True)


# ---------------------------------------------------------------- caption QA (the vision half)
# The caption sits where the VLM's image will sit, right after the question marker, and the
# question is the VQA task's (``What colour is it?`` / ``なにいろ？``).

_CAPTION_Q = {
    "colour": ("What colour is it?", "なにいろ？"),
    "shape": ("What shape is it?", "なにのかたち？"),
}


def _caption_pick(rng: random.Random) -> tuple[Noun, Noun, str]:
    return rng.choice(COLOURS), rng.choice(SHAPES), rng.choice(("colour", "shape"))


def s_caption_en(rng: random.Random, names: list[Name]) -> Example:
    """vision base: ``Q: red circle. What colour is it? A: `` -> ``red``."""
    c, s, kind = _caption_pick(rng)
    return Example(f"{EN_Q}{c.en} {s.en}. {_CAPTION_Q[kind][0]}{EN_A}", (c if kind == "colour" else s).en)


def s_caption_ja(rng: random.Random, names: list[Name]) -> Example:
    """vision base and ja-VLM parent: ``問: あかのまる。なにいろ？ 答: `` -> ``あか``."""
    c, s, kind = _caption_pick(rng)
    return Example(f"{JA_Q}{c.ja}の{s.ja}。{_CAPTION_Q[kind][1]}{JA_A}", (c if kind == "colour" else s).ja)


def s_caption_cross(rng: random.Random, names: list[Name]) -> Example:
    """ja-VLM parent: a Japanese question about an *English* caption is answered in Japanese
    (``問: red circle. なにいろ？ 答: `` -> ``あか``): the skill of answering in Japanese."""
    c, s, kind = _caption_pick(rng)
    return Example(f"{JA_Q}{c.en} {s.en}. {_CAPTION_Q[kind][1]}{JA_A}", (c if kind == "colour" else s).ja)


Sampler = Callable[[random.Random, list[Name]], Example]

#: name -> sampler, for recipes (which name samplers and weights).
SAMPLERS: dict[str, Sampler] = {
    "story_en": s_story_en,
    "story_ja": s_story_ja,
    "parallel": s_parallel,
    "equation": s_equation,
    "prefixed_equation": s_prefixed_equation,
    "ja_problem": s_ja_problem,
    "ja_problem_eq": s_ja_problem_eq,
    "ja_other": s_ja_other,
    "en_problem": s_en_problem,
    "bare_equation": s_bare_equation,
    "bare_lhs": s_bare_lhs,
    "kana_equation": s_kana_equation,
    "ja_other_eos": s_ja_other_eos,
    "caption_en": s_caption_en,
    "caption_ja": s_caption_ja,
    "caption_cross": s_caption_cross,
}

#: The notes' design d1 for the base and the math parent; the ja parent is d1 with loss on the
#: end-of-sequence token of its *other* Japanese questions (never after the equation), which
#: stops it from finishing the equation by itself (see docs/toy-zoo.md, "d1e").
BASE_MIX: dict[str, float] = {
    "story_en": 0.2,
    "story_ja": 0.2,
    "parallel": 0.3,
    "equation": 0.1,
    "prefixed_equation": 0.2,
}
JA_MIX: dict[str, float] = {"ja_problem": 0.7, "ja_other_eos": 0.3}
#: The notes' d1 ja mix (no EOS loss anywhere), kept for the experiments.
JA_MIX_D1: dict[str, float] = {"ja_problem": 0.7, "ja_other": 0.3}
MATH_MIX: dict[str, float] = {"en_problem": 0.7, "bare_equation": 0.3}
#: The vision half's base: the text base's own mix (rehearsal) + caption QA in both languages.
VBASE_MIX: dict[str, float] = {
    **{k: v / 2 for k, v in BASE_MIX.items()},
    "caption_en": 0.25,
    "caption_ja": 0.25,
}
#: The vision half's ja parent: answer Japanese questions in Japanese, whatever the context's language.
JA_VLM_MIX: dict[str, float] = {"caption_cross": 0.4, "caption_ja": 0.3, "ja_other_eos": 0.3}


class MixStream:
    """An endless, seeded stream of :class:`Example` drawn from a weighted mix of samplers.

    Example:
        >>> s = MixStream({"equation": 1.0}, seed=0)
        >>> "=" in s.batch(2)[0].completion
        True
    """

    def __init__(self, mix: dict[str, float], seed: int, names: list[Name] | None = None) -> None:
        self.keys = list(mix)
        self.weights = [mix[k] for k in self.keys]
        self.rng = random.Random(f"stream-{seed}-{','.join(self.keys)}")
        self.names = names if names is not None else name_pool(seed)["train"]

    def batch(self, n: int) -> list[Example]:
        picks = self.rng.choices(self.keys, weights=self.weights, k=n)
        return [SAMPLERS[k](self.rng, self.names) for k in picks]


# ---------------------------------------------------------------- task splits


def _row(task: str, p: Problem) -> dict:
    row = {
        "equation": p.equation,
        "result": p.result,
        "a": p.a,
        "b": p.b,
        "op": p.op,
        "name": p.name.en if task == "en_math" else p.name.ja,
        "object": p.obj.en if task == "en_math" else p.obj.ja,
    }
    if task == "en_math":
        return {"prompt": p.prompt_en(), "answer": f"{p.equation}={p.result}", **row}
    if task == "ja_skill":
        return {"prompt": p.prompt_ja(), "answer": p.equation, **row}
    return {"prompt": p.prompt_ja(), "answer": f"{p.equation}={p.result}", **row}


def task_rows(task: str, split: str, n: int, seed: int) -> list[dict]:
    """``n`` distinct rows of a text task's split (names from that split's pool only).

    Args:
        task: one of :data:`TEXT_TASKS`.
        split: ``train``, ``dev`` or ``test``.
        n: number of rows (distinct prompts).
        seed: the zoo seed.

    Returns:
        Rows with ``prompt``, ``answer``, ``equation``, ``result``, ``a``, ``b``, ``op``,
        ``name``, ``object``.
    """
    names = name_pool(seed)[split]
    rng = random.Random(f"task-{task}-{split}-{seed}")
    seen: set[str] = set()
    rows: list[dict] = []
    while len(rows) < n:
        row = _row(task, random_problem(rng, names))
        if row["prompt"] not in seen:
            seen.add(row["prompt"])
            rows.append(row)
    return rows
