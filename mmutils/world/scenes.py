"""What a ShapesWorld scene is, and random scenes: the vocabularies, the scene and clip types, the sampler.

Coordinates are in the unit square, ``x`` to the right, ``y`` downwards (as image rows).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence as SequenceType

import numpy as np

from ..checks import check_int, check_rng, check_subset

SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")
COLOR_RGB = {"red": (225, 45, 45), "green": (40, 185, 60), "blue": (45, 95, 235), "yellow": (240, 220, 40),
             "purple": (160, 60, 210), "orange": (250, 140, 20)}
COLORS = tuple(COLOR_RGB)
BACKGROUND_GREY = 16  # the background of every rendered image, the same in each RGB channel (0-255)
SIZES = ("small", "large")
RELATIONS = ("left of", "right of", "above", "below")
OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
DIRECTIONS = ("left", "right", "up", "down")
DIRECTION_VECTORS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}  # y grows down
QUESTION_TYPES = ("color", "shape", "count", "exists", "relation")
MAX_OBJECTS = 5
ANSWERS = COLORS + SHAPES + tuple(str(i) for i in range(MAX_OBJECTS + 1)) + ("yes", "no")
# Radius of each size as a fraction of the image side.
RADIUS = {"small": 0.13, "large": 0.21}
# The values each attribute of an object can take.
ATTRIBUTE_VALUES = {"shape": SHAPES, "color": COLORS, "size": SIZES}

# Extra gap between two objects' discs, and the dominant-axis ratio a pair must
# have so that its relation (left/right versus above/below) is unambiguous.
_GAP = 0.04
_AXIS_RATIO = 1.3


@dataclass(frozen=True)
class Obj:
    """One object: its attributes and its centre ``(x, y)`` in the unit square."""

    shape: str
    color: str
    size: str
    x: float
    y: float

    @property
    def desc(self) -> tuple[str, str, str]:
        """The descriptor ``(shape, color, size)``."""
        return (self.shape, self.color, self.size)


@dataclass(frozen=True)
class Scene:
    """A scene: a tuple of non-overlapping objects, each (shape, color) at most once."""

    objects: tuple[Obj, ...]

    def __len__(self) -> int:
        return len(self.objects)

    def relation(self, i: int, j: int) -> str:
        """Where object ``i`` is relative to object ``j``: one of :data:`RELATIONS`.

        The dominant axis of the displacement decides between left/right and
        above/below; scenes are sampled so that it is never close to a tie.
        """
        a, b = self.objects[i], self.objects[j]
        dx, dy = a.x - b.x, a.y - b.y
        if abs(dx) >= abs(dy):
            return "left of" if dx < 0 else "right of"
        return "above" if dy < 0 else "below"


@dataclass(frozen=True)
class Question:
    """A question about a scene, its answer (one of :data:`ANSWERS`) and its type."""

    text: str
    answer: str
    qtype: str


@dataclass(frozen=True)
class Sequence:
    """A clip: objects at frame 0, their velocities (unit square per frame), the frame count.

    ``positions`` has shape (frames, n_objects, 2). With ``bounce`` an object
    reflects off the border; the caption names the direction of its first move.
    """

    scene: Scene
    velocities: tuple[tuple[float, float], ...]
    positions: np.ndarray
    caption: str

    @property
    def frames(self) -> int:
        """The number of frames of the clip."""
        return int(self.positions.shape[0])

    def frame(self, t: int) -> Scene:
        """The scene at frame ``t``."""
        t = check_int("t", t, min=0, max=self.frames - 1)
        return Scene(tuple(
            Obj(o.shape, o.color, o.size, float(p[0]), float(p[1]))
            for o, p in zip(self.scene.objects, self.positions[t])
        ))


def _valid_layout(x: np.ndarray, y: np.ndarray, r: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Which scenes have no overlapping pair and no ambiguous relation. Shapes (n, K) -> (n,)."""
    dx = x[:, :, None] - x[:, None, :]
    dy = y[:, :, None] - y[:, None, :]
    dist = np.hypot(dx, dy)
    adx, ady = np.abs(dx), np.abs(dy)
    ratio = np.maximum(adx, ady) / np.maximum(np.minimum(adx, ady), 1e-9)
    pair = present[:, :, None] & present[:, None, :] & ~np.eye(x.shape[1], dtype=bool)[None]
    bad = pair & ((dist < r[:, :, None] + r[:, None, :] + _GAP) | (ratio < _AXIS_RATIO))
    return ~bad.any(axis=(1, 2))


def sample_scenes(n: int, *, min_objects: int = 1, max_objects: int = 2, shapes: SequenceType[str] = SHAPES,
                  colors: SequenceType[str] = COLORS, sizes: SequenceType[str] = SIZES,
                  seed: int | np.random.Generator = 0) -> list[Scene]:
    """Sample ``n`` random scenes with ``min_objects``..``max_objects`` objects each.

    Objects never overlap (their discs keep a gap), no (shape, color) pair
    repeats within a scene, and every pair of objects has a clear dominant axis,
    so its relation is well defined (vectorized rejection sampling). Returns ``n`` :class:`Scene`.
    """
    n = check_int("n", n, min=0)
    max_objects = check_int("max_objects", max_objects, min=1, max=MAX_OBJECTS)
    min_objects = check_int("min_objects", min_objects, min=1, max=max_objects)
    shapes = check_subset("shapes", shapes, SHAPES)
    colors = check_subset("colors", colors, COLORS)
    sizes = check_subset("sizes", sizes, SIZES)
    if len(shapes) * len(colors) < max_objects:
        raise ValueError("shapes x colors must offer at least max_objects distinct combinations")
    rng = check_rng("seed", seed)
    k = max_objects
    counts = rng.integers(min_objects, max_objects + 1, size=n)
    present = np.arange(k)[None, :] < counts[:, None]  # (n, K)
    # Distinct (shape, color) combinations per scene: sample without replacement.
    n_combo = len(shapes) * len(colors)
    combo = np.argsort(rng.random((n, n_combo)), axis=1)[:, :k]  # (n, K)
    shape_idx, color_idx = combo // len(colors), combo % len(colors)
    size_idx = rng.integers(0, len(sizes), size=(n, k))
    radius = np.array([RADIUS[s] for s in sizes])[size_idx]  # (n, K)
    x = np.zeros((n, k))
    y = np.zeros((n, k))
    todo = np.arange(n)
    for _ in range(10_000):
        if todo.size == 0:
            break
        r = radius[todo]
        x[todo] = r + rng.random(r.shape) * (1 - 2 * r)
        y[todo] = r + rng.random(r.shape) * (1 - 2 * r)
        ok = _valid_layout(x[todo], y[todo], r, present[todo])
        todo = todo[~ok]
    else:  # pragma: no cover - the constraints are loose enough to converge quickly
        raise RuntimeError("could not place the objects; use fewer or smaller objects")
    return [Scene(tuple(
        Obj(shapes[shape_idx[i, j]], colors[color_idx[i, j]], sizes[size_idx[i, j]],
            round(float(x[i, j]), 4), round(float(y[i, j]), 4))
        for j in range(counts[i])
    )) for i in range(n)]
