"""The zoo's recipes: every hyper-parameter of a ``micro`` or ``demo`` build, as data.

Changing anything here that changes the built tensors must bump :data:`RECIPE_VERSION`, so that
cached zoos built by an older recipe are rebuilt instead of reused.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from evomm.errors import ConfigError
from evomm_zoo.text import ArchConfig, TrainConfig
from evomm_zoo.textdata import BASE_MIX, JA_MIX, MATH_MIX

#: Version of the build recipe (part of the cache directory name and of ``zoo.json``).
RECIPE_VERSION = 3

SCALES: tuple[str, ...] = ("micro", "demo")

#: Parameters kept fixed while fine-tuning the parents (the notes: freezing them stops the
#: untied output layer from absorbing most of each task vector).
FROZEN_IN_FINETUNE: tuple[str, ...] = ("model.embed_tokens.", "lm_head.")


@dataclass(frozen=True)
class TextRecipe:
    """Everything the text half of a zoo build uses.

    Attributes:
        arch: the Llama architecture.
        base, ja, math: the three training runs.
        split_sizes: rows per split of each text task (train, dev, test).
        workers: processes for the two fine-tunes (2 trains ja and math in parallel).
    """

    arch: ArchConfig
    base: TrainConfig
    ja: TrainConfig
    math: TrainConfig
    split_sizes: dict[str, int] = field(default_factory=dict)
    workers: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def text_recipe(scale: str, seed: int = 0) -> TextRecipe:
    """The text recipe of ``scale`` (``"micro"`` or ``"demo"``) for ``seed``.

    Example:
        >>> text_recipe("demo").base.steps
        1500
    """
    if scale not in SCALES:
        raise ConfigError(f"unknown zoo scale {scale!r}; use one of {', '.join(SCALES)}")
    ft = dict(lr=1e-3, batch_size=32, freeze=FROZEN_IN_FINETUNE, weight_decay=0.0, seed=seed)
    demo = TextRecipe(
        arch=ArchConfig(),
        base=TrainConfig(
            steps=1500, lr=3e-3, batch_size=32, mix=dict(BASE_MIX), weight_decay=0.01, seed=seed
        ),
        ja=TrainConfig(steps=300, mix=dict(JA_MIX), **ft),
        math=TrainConfig(steps=300, mix=dict(MATH_MIX), **ft),
        split_sizes={"train": 2000, "dev": 400, "test": 400},
        workers=2,
    )
    if scale == "demo":
        return demo
    return replace(
        demo,
        base=replace(demo.base, steps=40, batch_size=16),
        ja=replace(demo.ja, steps=10, batch_size=16),
        math=replace(demo.math, steps=10, batch_size=16),
        split_sizes={"train": 60, "dev": 30, "test": 30},
        workers=1,
    )
