"""Conditions on an objective's value: ``>= 0.5`` (objective constraints in an evolve recipe)
and ``NAME>=0.5`` (``evomm front/export --pick``). One parser for both, so that they accept the
same forms and refuse the same mistakes (two numbers, ``0.1.2``, ``nan``) with one message.

Example:
    >>> parse_condition(">= 0.5", "the constraint")
    Condition(op='>=', bound=0.5)
    >>> parse_named_condition("ja>=0.25", "--pick")
    ('ja', Condition(op='>=', bound=0.25))
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from evomm.errors import ConfigError

#: The comparison operators a condition may use.
OPS = (">=", "<=", ">", "<")
_OP = r"(>=|<=|>|<)"
_CONDITION = re.compile(rf"^\s*{_OP}\s*(\S+)\s*$")
_NAMED = re.compile(rf"^\s*([A-Za-z_][\w.\-]*?)\s*{_OP}\s*(\S+)\s*$")


@dataclass(frozen=True)
class Condition:
    """``value <op> bound``."""

    op: str
    bound: float

    def holds(self, value: float) -> bool:
        """Whether ``value`` meets the condition."""
        return {">=": value >= self.bound, "<=": value <= self.bound,
                ">": value > self.bound, "<": value < self.bound}[self.op]

    def violation(self, value: float) -> float:
        """pymoo's inequality constraint ``g``: ``<= 0`` when ``value`` meets the condition
        (``>`` and ``<`` are treated as ``>=`` and ``<=``)."""
        return self.bound - value if self.op in (">=", ">") else value - self.bound

    def __str__(self) -> str:
        return f"{self.op} {self.bound:g}"


def _bound(text: str, number: str, what: str, example: str) -> float:
    try:
        value = float(number)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ConfigError(f"{what} {text!r} does not end in one finite number (got {number!r}); write e.g. {example!r}")
    return value


def parse_condition(text: str, what: str, example: str = ">= 0.5") -> Condition:
    """Parse ``"<op> <number>"`` (``>= 0.5``, ``<1e-3``).

    Args:
        text: the condition.
        what: what it is, to begin the message with (``"--pick"``, ``"the constraint"``).
        example: a valid condition to show in the message.

    Raises:
        ConfigError: naming ``what``, the text received and an example.
    """
    m = _CONDITION.match(str(text))
    if not m:
        raise ConfigError(
            f"{what} {text!r} is not a condition; write one operator ({', '.join(OPS)}) and one "
            f"number, e.g. {example!r}"
        )
    return Condition(m.group(1), _bound(text, m.group(2), what, example))


def parse_named_condition(text: str, what: str, example: str = "ja>=0.5") -> tuple[str, Condition]:
    """Parse ``"<name> <op> <number>"`` (``ja>=0.5``) into the name and its condition.

    Raises:
        ConfigError: naming ``what``, the text received and an example.
    """
    m = _NAMED.match(str(text))
    if not m:
        raise ConfigError(
            f"{what} {text!r} is not a condition; write an objective name, one operator "
            f"({', '.join(OPS)}) and one number, e.g. {example!r}"
        )
    return m.group(1), Condition(m.group(2), _bound(text, m.group(3), what, example))
