"""Pillow-drawn images for the toy zoo's vision models: coloured shapes on a plain background.

Every image is described by an :class:`ImageSpec` (colour, shape, count, a jitter seed) and drawn
deterministically from it, so a data set is fully defined by its specs and the same seed always
gives the same pixels. Images are small (32x32 by default) because the zoo's vision towers use
8x8 patches and must train on one CPU core in seconds.

Example::

    from evomm_zoo.images import ImageSpec, draw
    img = draw(ImageSpec("red", "circle"))          # a 32x32 RGB PIL image
    img2 = draw(ImageSpec("blue", "triangle", count=3, seed=7))
"""

from __future__ import annotations

import math
import random
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from evomm.errors import ConfigError
from evomm_zoo import lexicon

#: RGB of each colour of :data:`evomm_zoo.lexicon.COLOURS`, far apart so a tiny tower separates them.
RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "blue": (40, 80, 230),
    "green": (40, 190, 60),
    "yellow": (235, 215, 40),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}

#: colour name -> Japanese name (the zoo lexicon's colours).
COLORS: dict[str, str] = {n.en: n.ja for n in lexicon.COLOURS}

#: shape name -> Japanese name (the zoo lexicon's shapes).
SHAPES: dict[str, str] = {n.en: n.ja for n in lexicon.SHAPES}

#: counts drawn in "count" images.
COUNTS: tuple[int, ...] = (1, 2, 3)

BACKGROUND = (120, 120, 120)


@dataclass(frozen=True)
class ImageSpec:
    """What one image shows.

    Attributes:
        color: a key of :data:`COLORS`.
        shape: a key of :data:`SHAPES`.
        count: how many copies of the shape (see :data:`COUNTS`); several copies are drawn smaller.
        seed: seeds the jitter of position, size and background noise.
    """

    color: str
    shape: str
    count: int = 1
    seed: int = 0

    def key(self) -> str:
        """A file-name-safe identifier, e.g. ``red-circle-1-17``."""
        return f"{self.color}-{self.shape}-{self.count}-{self.seed}"


def _check(spec: ImageSpec) -> None:
    if spec.color not in COLORS:
        raise ConfigError(f"image colour {spec.color!r} is unknown; use one of {sorted(COLORS)}")
    if spec.shape not in SHAPES:
        raise ConfigError(f"image shape {spec.shape!r} is unknown; use one of {sorted(SHAPES)}")
    if spec.count not in COUNTS:
        raise ConfigError(f"image count {spec.count!r} is unsupported; use one of {sorted(COUNTS)}")


def _draw_shape(d: ImageDraw.ImageDraw, shape: str, box: tuple[float, float, float, float], rgb) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        d.ellipse(box, fill=rgb)
    elif shape == "square":
        d.rectangle(box, fill=rgb)
    elif shape == "triangle":
        d.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=rgb)
    else:  # star: five points, inner radius 0.4 of the outer
        cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2 + (y1 - y0) * 0.05, (x1 - x0) / 2
        pts = []
        for i in range(10):
            rad = r if i % 2 == 0 else r * 0.4
            ang = math.pi * (i / 5 - 0.5)
            pts.append((cx + rad * math.cos(ang), cy + rad * math.sin(ang)))
        d.polygon(pts, fill=rgb)


def draw(spec: ImageSpec, size: int = 32) -> Image.Image:
    """Draw ``spec`` as a ``size`` x ``size`` RGB image.

    A single shape fills about 55-80% of the image at a jittered position; two or three copies
    are drawn in separate, non-overlapping cells. A little per-pixel noise on the background
    keeps models from keying on exact pixel values.

    Args:
        spec: what to draw.
        size: image side in pixels.

    Returns:
        A new PIL image (mode ``RGB``).

    Example::

        draw(ImageSpec("green", "square", count=2, seed=3)).save("x.png")
    """
    _check(spec)
    rng = random.Random(f"{spec.key()}:{size}")
    noise = np.random.default_rng(zlib.crc32(spec.key().encode())).integers(-12, 13, (size, size, 1))
    img = Image.fromarray((np.array(BACKGROUND)[None, None, :] + noise).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    rgb = RGB[spec.color]
    if spec.count == 1:
        s = size * rng.uniform(0.55, 0.8)
        x0, y0 = rng.uniform(0, size - s), rng.uniform(0, size - s)
        _draw_shape(d, spec.shape, (x0, y0, x0 + s, y0 + s), rgb)
        return img
    half = size / 2
    cells = [(0, 0), (half, 0), (0, half), (half, half)]
    rng.shuffle(cells)
    for cx, cy in cells[: spec.count]:
        s = half * rng.uniform(0.6, 0.85)
        x0, y0 = cx + rng.uniform(0, half - s), cy + rng.uniform(0, half - s)
        _draw_shape(d, spec.shape, (x0, y0, x0 + s, y0 + s), rgb)
    return img


def all_specs(counts: tuple[int, ...] = (1,), seeds: range = range(1)) -> list[ImageSpec]:
    """Every colour x shape x count x seed combination, in a fixed order.

    Example::

        len(all_specs(seeds=range(10)))  # 6 colours * 4 shapes * 10 seeds = 240
    """
    return [ImageSpec(c, s, n, k) for k in seeds for n in counts for c in COLORS for s in SHAPES]
