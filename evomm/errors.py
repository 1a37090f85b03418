"""The one exception hierarchy of evomm.

Every error a user can cause (bad YAML, a missing tensor, an unknown operator, a hub name while
offline) is raised as a subclass of :class:`EvommError`, never as ``AssertionError`` or a bare
``RuntimeError``. Messages say *what* was wrong (the key or the file), *what* was received and
*how to fix it*; the CLI prints them without a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class EvommError(Exception):
    """Base class of every error evomm raises on purpose."""


class ConfigError(EvommError):
    """A recipe, YAML file or command-line value is malformed or out of range."""


class RegistryError(EvommError):
    """A name is unknown to, or registered twice in, a :class:`evomm.registry.Registry`."""


class PluginError(EvommError):
    """A plugin failed to load or implements a hook that does not exist."""


class CheckpointError(EvommError):
    """A checkpoint cannot be opened or read: missing files or tensors, refused pickle files."""


class IncompatibleModelsError(EvommError):
    """Parents cannot be merged together: different architecture, shapes or vocabulary."""


class MergeError(EvommError):
    """A merge operator received inputs it cannot combine."""


class TaskError(EvommError):
    """A fitness task is misconfigured or its data cannot be loaded."""


class OfflineError(EvommError):
    """A hub name was given while ``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE`` is set."""


class SearchError(EvommError):
    """The evolutionary search cannot start or resume."""


class RunLockedError(SearchError):
    """Another process holds the run directory's lock (its pid and host are in the message)."""


class OutputError(EvommError):
    """An output cannot be written where asked: a non-empty or foreign directory, a directory that
    holds an input of the command, a path under a file, a read-only file system, a full disk."""


class NonFiniteError(MergeError):
    """A parent tensor or a merged tensor holds NaN or Inf values.

    Attributes:
        output: True when the *merge* produced them (a property of the candidate: the evolution
            records it as failed), False when a parent holds them (the run cannot go on).
    """

    def __init__(self, message: str, *, output: bool = False) -> None:
        super().__init__(message)
        self.output = output

    def __reduce__(self) -> tuple[Any, ...]:  # keeps ``output`` across processes (pickling)
        return (_non_finite, (str(self), self.output))


def _non_finite(message: str, output: bool) -> NonFiniteError:
    return NonFiniteError(message, output=output)


@contextmanager
def operator_failures(operator: str, tensor: str) -> Iterator[None]:
    """Inside, an unexpected exception (an operator's bug, an input it did not expect) becomes a
    :class:`MergeError` that names the operator and the tensor; an :class:`EvommError` passes
    through unchanged.

    Example:
        >>> with operator_failures("linear", "model.norm.weight"):
        ...     1 / 0
        Traceback (most recent call last):
        ...
        evomm.errors.MergeError: operator 'linear' failed on tensor 'model.norm.weight': ZeroDivisionError: division by zero
    """
    try:
        yield
    except EvommError:
        raise
    except Exception as exc:
        raise MergeError(
            f"operator {operator!r} failed on tensor {tensor!r}: {type(exc).__name__}: {exc}"
        ) from exc

