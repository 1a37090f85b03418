"""Scoring of the toy text tasks, shared by the zoo build and the ``evomm_tasks_toy`` plugin.

Two metrics per task, as the toy-zoo notes recommend:

* ``strict``: for ``en_math`` / ``ja_math`` the output must *begin* with the right equation and
  the right result (``"5+4=9"``; ``"5+4=9 ..."`` is fine, ``"4+5=9"`` or ``"5+4=19"`` are not).
  For ``ja_skill`` it must begin with the right equation (``"5+4"`` not followed by a digit).
* ``loose``: for ``en_math`` / ``ja_math`` the first number after the first ``=`` is the result
  (this has a 4-16% chance floor: any ``x=y`` output can hit it); for ``ja_skill`` the first two
  numbers of the output are the two operands in order (the operator may be wrong).

Example:
    >>> row = {"a": 5, "b": 4, "op": "+", "result": 9}
    >>> score_output("ja_math", "5+4=9", row), score_output("ja_math", "3+6=9", row)
    ({'strict': True, 'loose': True}, {'strict': False, 'loose': True})
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

_EQ_RESULT = re.compile(r"\s*(\d+)\s*([+\-])\s*(\d+)\s*=\s*(-?\d+)")
_EQ = re.compile(r"\s*(\d+)\s*([+\-])\s*(\d+)(?!\d)")
_AFTER_EQ = re.compile(r"=\s*(-?\d+)")
_NUM = re.compile(r"\d+")


def _same_equation(m: re.Match, row: Mapping[str, Any]) -> bool:
    return int(m.group(1)) == int(row["a"]) and m.group(2) == row["op"] and int(m.group(3)) == int(row["b"])


def score_equation_result(output: str, row: Mapping[str, Any]) -> dict[str, bool]:
    """Scores of an output that should be ``a op b = result`` (tasks ``en_math``, ``ja_math``).

    Args:
        output: the generated continuation (prompt excluded).
        row: the task row (needs ``a``, ``b``, ``op``, ``result``).

    Returns:
        ``{"strict": equation and result right, "loose": number after the first "=" right}``.
    """
    m = _EQ_RESULT.match(output)
    strict = bool(m) and _same_equation(m, row) and int(m.group(4)) == int(row["result"])
    after = _AFTER_EQ.search(output)
    loose = bool(after) and int(after.group(1)) == int(row["result"])
    return {"strict": strict, "loose": loose}


def score_equation_only(output: str, row: Mapping[str, Any]) -> dict[str, bool]:
    """Scores of an output that should begin with the equation ``a op b`` (task ``ja_skill``).

    Returns:
        ``{"strict": begins with the right equation, "loose": first two numbers are a, b}``.
    """
    m = _EQ.match(output)
    strict = bool(m) and _same_equation(m, row)
    nums = _NUM.findall(output)
    loose = len(nums) >= 2 and int(nums[0]) == int(row["a"]) and int(nums[1]) == int(row["b"])
    return {"strict": strict, "loose": loose}


def char_rouge_l(output: str, reference: str) -> float:
    """Character-level ROUGE-L F1 of ``output`` against ``reference`` (the graded VQA metric).

    The paper's JA-VG-VQA fitness is ROUGE-L over MeCab tokens; the toy answers are one kana word,
    so characters are the tokens. Written by hand because ``rouge-score`` drops non-ASCII text in
    its default tokenizer, and the longest common subsequence is six lines.

    Example:
        >>> char_rouge_l("あか", "あか"), char_rouge_l("あお", "あか"), char_rouge_l("red", "あか")
        (1.0, 0.5, 0.0)
    """
    prev = [0] * (len(reference) + 1)
    for ch in output:
        cur = [0]
        for j, ref_ch in enumerate(reference):
            cur.append(prev[j] + 1 if ch == ref_ch else max(prev[j + 1], cur[j]))
        prev = cur
    common = prev[-1]
    if common == 0:
        return 0.0
    precision, recall = common / len(output), common / len(reference)
    return 2 * precision * recall / (precision + recall)


#: task (data directory name) -> scorer.
SCORERS: dict[str, Callable[[str, Mapping[str, Any]], dict[str, bool]]] = {
    "ja_skill": score_equation_only,
    "en_math": score_equation_result,
    "ja_math": score_equation_result,
}

#: Tokens to generate per item (the longest answer, ``"9+9=18"``, has 6 characters).
MAX_NEW_TOKENS = 8


def score_output(task: str, output: str, row: Mapping[str, Any]) -> dict[str, bool]:
    """Score one output of ``task`` (a key of :data:`SCORERS`)."""
    return SCORERS[task](output, row)


def score_outputs(task: str, outputs: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Aggregate scores of a task's outputs.

    Returns:
        ``{"strict": fraction, "loose": fraction, "strict_count": int, "loose_count": int, "n": int}``.

    Example:
        >>> score_outputs("ja_skill", ["5+4", "5-4"], [{"a": 5, "b": 4, "op": "+"}] * 2)["loose_count"]
        2
    """
    marks = [score_output(task, o, r) for o, r in zip(outputs, rows)]
    n = len(marks)
    strict = sum(m["strict"] for m in marks)
    loose = sum(m["loose"] for m in marks)
    return {
        "strict": strict / n if n else 0.0,
        "loose": loose / n if n else 0.0,
        "strict_count": strict,
        "loose_count": loose,
        "n": n,
    }
