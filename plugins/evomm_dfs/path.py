"""The data-flow-space genome: slots, indicators, scalings, and the layer path they decode to.

Sakana's DFS merge (arXiv 2403.13187, section 3.2) lays the ``M = N_A + N_B`` layers of parents
A and B out in order and repeats that sequence ``r`` times, giving ``T = M * r`` *slots*. An
indicator per slot says whether that layer is on the path (on where the indicator is > 0); a
scaling ``W[i, j]`` multiplies the hidden state passed from layer ``i`` to layer ``j``. Model A
supplies embeddings, final norm and head; its first layer starts the path and its last layer ends
it (so slot 0, A's layer 0 in the first repeat, has no indicator gene, and A's last layer is
appended after the selected slots).

How W is stored (the genome must stay manageable): ``scaling`` picks one of
  * ``matrix`` (default, the paper's W): one gene per *transition that can occur*, i.e. per
    ordered pair (i, j) such that layer i can precede layer j on some path. With ``r >= 2`` that is
    all M x M pairs (fine for toy models, 4,096 genes for two 32-layer models); with ``r = 1`` only
    pairs in layout order plus those into A's last layer (about M^2 / 2).
  * ``destination``: one gene per destination layer (``W[i, j] = w_j``), M genes: the choice for
    large parents, where the full W would swamp the optimiser.
  * ``none``: no scaling genes, ``W = 1`` (the paper's ablation; it cost over 20% there).
The input to the first path step (the embedding output) is never scaled.

A cost bound ``max_path_length`` (A's two fixed ends included) is enforced by a deterministic
repair: when more middle slots are on than fit, the ones with the largest indicator values are
kept (ties by slot order), in slot order. The resulting :class:`DFSPath` is what is digested,
executed and exported, so two genomes that decode to the same path share a cache entry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evomm.errors import ConfigError

#: Parent indices inside a path: A (donor of embeddings, norm, head) and B.
PARENT_A, PARENT_B = 0, 1
SCALING_MODES = ("matrix", "destination", "none")
#: decimals a decoded scale is rounded to
SCALE_DECIMALS = 6


@dataclass(frozen=True)
class PathStep:
    """One position of a layer path.

    Attributes:
        parent: 0 for A, 1 for B.
        layer: the layer index inside that parent.
        scale: factor applied to the hidden state *entering* this step (1 for the first step).
    """

    parent: int
    layer: int
    scale: float = 1.0


@dataclass(frozen=True)
class DFSPath:
    """A decoded DFS candidate: the layers a token goes through, in order, with input scalings.

    Attributes:
        steps: the path, first step = A's layer 0, last step = A's last layer (when decoded).
        parents: the aliases of A and B (for recipes and model cards).

    Example:
        >>> p = DFSPath((PathStep(0, 0), PathStep(1, 1, 0.5), PathStep(0, 2)), ("a", "b"))
        >>> p.unique_layers()
        [(0, 0), (0, 2), (1, 1)]
        >>> p.all_unit_scales()
        False
    """

    steps: tuple[PathStep, ...]
    parents: tuple[str, str] = ("a", "b")

    def __len__(self) -> int:
        return len(self.steps)

    def unique_layers(self) -> list[tuple[int, int]]:
        """The distinct (parent, layer) pairs on the path, sorted: the layers an export stores."""
        return sorted({(s.parent, s.layer) for s in self.steps})

    def all_unit_scales(self) -> bool:
        """Whether every step's scale is 1 (then the child is a plain frankenmerge)."""
        return all(s.scale == 1.0 for s in self.steps)

    def to_dict(self) -> dict[str, Any]:
        """The recipe form: ``{"parents": [...], "path": [{"model", "layer", "scale"}, ...]}``."""
        return {
            "parents": list(self.parents),
            "path": [
                {"model": self.parents[s.parent], "layer": s.layer, "scale": s.scale}
                for s in self.steps
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "dfs recipe") -> DFSPath:
        """Inverse of :meth:`to_dict` (the ``path`` list may omit ``scale``, meaning 1).

        Raises:
            ConfigError: unknown model alias, bad layer index type, or an empty path.
        """
        parents = tuple(data.get("parents") or ())
        if len(parents) != 2:
            raise ConfigError(f"{where}: 'parents' must name exactly two models (A, B), got {parents!r}")
        raw = data.get("path")
        if not isinstance(raw, Sequence) or not raw:
            raise ConfigError(f"{where}: 'path' must be a non-empty list of {{model, layer, scale}}")
        steps = []
        for k, entry in enumerate(raw):
            if not isinstance(entry, Mapping) or "model" not in entry or "layer" not in entry:
                raise ConfigError(f"{where}: path[{k}] must be {{model, layer, scale}}, got {entry!r}")
            if entry["model"] not in parents:
                raise ConfigError(
                    f"{where}: path[{k}].model={entry['model']!r} is not one of the parents {list(parents)}"
                )
            layer = entry["layer"]
            if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
                raise ConfigError(f"{where}: path[{k}].layer must be a layer index >= 0, got {layer!r}")
            scale = entry.get("scale", 1.0)
            if isinstance(scale, bool) or not isinstance(scale, (int, float)):
                raise ConfigError(f"{where}: path[{k}].scale must be a number, got {scale!r}")
            steps.append(PathStep(parents.index(entry["model"]), layer, float(scale)))
        return cls(tuple(steps), (str(parents[0]), str(parents[1])))

    def digest(self) -> str:
        """SHA-256 of the canonical JSON of :meth:`to_dict` (the evolution cache key)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def describe(self) -> str:
        """Compact text, e.g. ``a0 b1*0.50 a2``."""
        names = ("a", "b")
        return " ".join(
            f"{names[s.parent]}{s.layer}" + ("" if s.scale == 1.0 else f"*{s.scale:.2f}") for s in self.steps
        )


@dataclass(frozen=True)
class DFSLayout:
    """The slot layout of a DFS search and its genome (indicators, then scalings).

    Attributes:
        layers_a, layers_b: number of layers of A and B.
        repeats: ``r``, how many times the M layers are laid out.
        max_path_length: most path steps allowed (A's first and last layer included).
        scaling: ``matrix``, ``destination`` or ``none`` (see the module docstring).

    Example:
        >>> lay = DFSLayout(2, 2, repeats=1, max_path_length=4, scaling="destination")
        >>> lay.num_slots, len(lay.indicator_slots()), len(lay.scale_keys())
        (4, 3, 4)
        >>> lay.decode([1, -1, 1], [1, 1, 1, 0.5]).describe()  # scale genes: a0, a1, b0, b1
        'a0 a1 b1*0.50 a1'
    """

    layers_a: int
    layers_b: int
    repeats: int
    max_path_length: int
    scaling: str = "matrix"

    def __post_init__(self) -> None:
        if self.layers_a < 1 or self.layers_b < 1:
            raise ConfigError(f"dfs: both parents need layers, got A={self.layers_a}, B={self.layers_b}")
        if self.repeats < 1:
            raise ConfigError(f"dfs: repeats must be >= 1, got {self.repeats}")
        if self.scaling not in SCALING_MODES:
            raise ConfigError(f"dfs: scaling={self.scaling!r} is not one of {list(SCALING_MODES)}")
        if self.max_path_length < 2:
            raise ConfigError(
                f"dfs: max_path_length={self.max_path_length} is too small; the path holds at least "
                "A's first and last layer (2)"
            )

    @property
    def num_layers(self) -> int:
        """``M``: the layers of A followed by the layers of B."""
        return self.layers_a + self.layers_b

    @property
    def num_slots(self) -> int:
        """``T = M * r``."""
        return self.num_layers * self.repeats

    def layer_id(self, parent: int, layer: int) -> int:
        """Index of (parent, layer) in the M-layer layout (A's layers first)."""
        return layer if parent == PARENT_A else self.layers_a + layer

    def layer_of(self, layer_id: int) -> tuple[int, int]:
        """Inverse of :meth:`layer_id`."""
        if layer_id < self.layers_a:
            return PARENT_A, layer_id
        return PARENT_B, layer_id - self.layers_a

    def slot_layer(self, slot: int) -> tuple[int, int]:
        """(parent, layer) that slot ``slot`` holds."""
        return self.layer_of(slot % self.num_layers)

    def indicator_slots(self) -> list[int]:
        """Slots that have an indicator gene: all but slot 0 (A's first layer, always on)."""
        return list(range(1, self.num_slots))

    def _sequence(self) -> list[int]:
        # layer ids in the order a path may visit them: fixed A0, every other slot, fixed A-last
        ids = [self.layer_id(*self.slot_layer(s)) for s in range(self.num_slots)]
        return ids + [self.layer_id(PARENT_A, self.layers_a - 1)]

    def scale_keys(self) -> list[tuple[int, int]]:
        """What each scaling gene scales: (source id, destination id) pairs for ``matrix``,
        (-1, destination id) for ``destination``, none for ``none``."""
        if self.scaling == "none":
            return []
        if self.scaling == "destination":
            return [(-1, j) for j in range(self.num_layers)]
        seq = self._sequence()
        pairs: set[tuple[int, int]] = set()
        for i, src in enumerate(seq):
            for dst in seq[i + 1 :]:
                pairs.add((src, dst))
        return sorted(pairs)

    def layer_name(self, layer_id: int) -> str:
        parent, layer = self.layer_of(layer_id)
        return f"{'ab'[parent]}{layer}"

    def gene_names(self) -> tuple[list[str], list[str]]:
        """Readable names of the indicator genes and of the scaling genes."""
        inds = [f"path.{s}.{self.layer_name(self.layer_id(*self.slot_layer(s)))}" for s in self.indicator_slots()]
        scales = [
            f"scale.{'*' if i < 0 else self.layer_name(i)}->{self.layer_name(j)}" for i, j in self.scale_keys()
        ]
        return inds, scales

    def decode(
        self,
        indicators: Sequence[float],
        scales: Sequence[float],
        parents: tuple[str, str] = ("a", "b"),
    ) -> DFSPath:
        """Turn native gene values into a :class:`DFSPath` (deterministic).

        Args:
            indicators: one value per :meth:`indicator_slots` entry; on where > 0.
            scales: one value per :meth:`scale_keys` entry.
            parents: aliases of A and B.

        Raises:
            ConfigError: wrong number of values.
        """
        slots = self.indicator_slots()
        keys = self.scale_keys()
        if len(indicators) != len(slots) or len(scales) != len(keys):
            raise ConfigError(
                f"dfs: expected {len(slots)} indicators and {len(keys)} scalings, "
                f"got {len(indicators)} and {len(scales)}"
            )
        chosen = [(float(v), s) for v, s in zip(indicators, slots) if float(v) > 0.0]
        room = self.max_path_length - 2
        if len(chosen) > room:
            # repair: keep the strongest indicators (ties: earlier slot), then restore slot order
            chosen = sorted(chosen, key=lambda vs: (-vs[0], vs[1]))[:room]
        middle = sorted(s for _, s in chosen)
        ids = [0] + [self.layer_id(*self.slot_layer(s)) for s in middle]
        ids.append(self.layer_id(PARENT_A, self.layers_a - 1))
        table = dict(zip(keys, (float(v) for v in scales)))
        steps = []
        for k, dst in enumerate(ids):
            if k == 0 or self.scaling == "none":
                scale = 1.0
            elif self.scaling == "destination":
                scale = table[(-1, dst)]
            else:
                scale = table[(ids[k - 1], dst)]
            # rounded so the written recipe is short and reloads to the same path (and digest)
            steps.append(PathStep(*self.layer_of(dst), round(scale, SCALE_DECIMALS)))
        return DFSPath(tuple(steps), parents)

    def identity_indicators(self, low: float, high: float) -> list[float]:
        """Indicator values whose path is exactly A's own layers (a useful starting point)."""
        on = {s for s in range(1, self.layers_a - 1)}
        return [high if s in on else low for s in self.indicator_slots()]
