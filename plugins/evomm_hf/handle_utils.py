"""Helpers shared by the text-generating model handles (:mod:`evomm_hf.handle`,
:mod:`evomm_llava.handle`): batching, stop strings, progress bars, argument checks.

Example::

    from evomm_hf.handle_utils import batches, cut_at_stop

    list(batches([3, 1, 2], 2))          # [[3, 1], [2]]
    cut_at_stop("4\\nQ: next", ["\\n"])    # '4'
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from evomm.errors import TaskError
from evomm.progress import bar

#: Show a progress bar when a call has more than this many requests (and runs for over 2 s,
#: so that the evolution's own bar is not buried under many short ones).
PROGRESS_MIN = 64


def batches(order: list[int], batch_size: int) -> Iterator[list[int]]:
    """Consecutive slices of ``order`` of at most ``batch_size`` items.

    Example:
        >>> list(batches([0, 1, 2], 2))
        [[0, 1], [2]]
    """
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` cut before the first occurrence of any non-empty string of ``stop``.

    Example:
        >>> cut_at_stop("yes.\\nno", ["\\n", "."])
        'yes'
    """
    cut = len(text)
    for s in stop:
        if s and (i := text.find(s)) != -1:
            cut = min(cut, i)
    return text[:cut]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token-id sequences.

    Example:
        >>> common_prefix([1, 2, 3], [1, 2, 4])
        2
    """
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def stop_kwargs(stop: Sequence[str], tokenizer: Any) -> dict[str, Any]:
    """``generate()`` keyword arguments that end a row early once it produced a stop string.

    transformers' ``StopStringCriteria`` only stops; the text is cut again after decoding
    (:func:`cut_at_stop`).

    Example:
        >>> stop_kwargs([""], None)
        {}
    """
    stop = [s for s in stop if s]
    if not stop:
        return {}
    return {"stop_strings": stop, "tokenizer": tokenizer}


def check_generate_args(batch_size: int, max_new_tokens: int, num_beams: int) -> None:
    """Raise :class:`TaskError` unless ``batch_size >= 1``, ``max_new_tokens >= 0``, ``num_beams >= 1``.

    Example:
        >>> check_generate_args(16, 8, 1)
    """
    if batch_size < 1 or max_new_tokens < 0 or num_beams < 1:
        raise TaskError(
            f"generate(): batch_size={batch_size}, max_new_tokens={max_new_tokens}, "
            f"num_beams={num_beams}; use batch_size >= 1, max_new_tokens >= 0, num_beams >= 1"
        )


def progress(total: int, desc: str) -> Any:
    """A tqdm bar for ``total`` requests, shown only above :data:`PROGRESS_MIN` and after 2 s
    (never while progress is off: :mod:`evomm.progress`, ``--no-progress``).

    Example:
        >>> b = progress(10, "generate"); b.update(10); b.close()
    """
    return bar(total=total, desc=desc, disable=total <= PROGRESS_MIN, leave=False, delay=2.0)
