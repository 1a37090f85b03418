"""What tasks may ask of a model: the :class:`ModelHandle` protocol.

Tasks never touch weights or architectures, and adapters never know tasks; this protocol is the
whole contract between them. An adapter returns a handle from ``Checkpoint.handle(model)``.
A handle implements the methods its ``capabilities`` name and raises
:class:`~evomm.errors.TaskError` from the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from PIL.Image import Image


@runtime_checkable
class ModelHandle(Protocol):
    """A model that tasks can query.

    Attributes:
        capabilities: subset of ``{"generate", "loglikelihood", "image", "classify"}``.
    """

    capabilities: frozenset[str]

    def generate(
        self,
        prompts: Sequence[str],
        *,
        images: Sequence[Image] | None = None,
        max_new_tokens: int = 64,
        stop: Sequence[str] = (),
        num_beams: int = 1,
        batch_size: int = 16,
    ) -> list[str]:
        """Greedy (or beam) continuations of ``prompts`` (one image per prompt for VLMs),
        cut at the first stop string; the prompt itself is not included."""
        ...

    def loglikelihood(
        self,
        requests: Sequence[tuple[str, str]],
        *,
        images: Sequence[Image] | None = None,
        batch_size: int = 16,
    ) -> list[float]:
        """Sum of log-probabilities of each continuation given its context."""
        ...

    def classify(
        self, images: Sequence[Image], class_prompts: Sequence[Sequence[str]]
    ) -> list[int]:
        """Zero-shot classification (CLIP): index of the best class per image; each class is
        described by one or more prompts whose embeddings are averaged."""
        ...
