"""ShapesWorld: a procedural, deterministic multimodal world.

Every scene is a handful of coloured shapes on a dark canvas. From one scene the
module derives, with known ground truth:

* an RGB image (:func:`render`), vectorized in numpy;
* captions from a small grammar with synonyms (:func:`caption`) and a parser
  that maps any of them back to facts (:func:`parse_caption`);
* typed questions with answers (:func:`ask`, :func:`questions`);
* short clips of moving objects with a caption of the motion
  (:func:`sample_sequences`, :func:`render_sequences`);
* a sound: one tone per object, played left to right (:func:`synthesize_audio`),
  and its spectrogram (:func:`spectrogram`).

Coordinates are in the unit square: ``x`` grows to the right, ``y`` grows
downwards (as in image rows). The same seed always gives the same arrays and
texts.

Facts are tuples. A *descriptor* is ``(shape, color, size)``; in a parsed caption
an attribute the caption did not mention is ``None``. The fact kinds are
``("exists", desc)``, ``("rel", desc_a, relation, desc_b)`` (``a`` is
``relation`` ``b``) and ``("moves", desc, direction)``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence as SequenceType

import numpy as np
import torch

__all__ = [
    "SHAPES", "COLORS", "COLOR_RGB", "SIZES", "RELATIONS", "DIRECTIONS",
    "QUESTION_TYPES", "ANSWERS", "MAX_OBJECTS",
    "Obj", "Scene", "Question", "Sequence",
    "sample_scenes", "render", "caption", "captions", "parse_caption",
    "scene_facts", "facts_hold", "ask", "questions",
    "sample_sequences", "render_sequences", "motion_caption",
    "synthesize_audio", "spectrogram", "corpus", "vocabulary",
]

SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")
COLOR_RGB = {
    "red": (225, 45, 45),
    "green": (40, 185, 60),
    "blue": (45, 95, 235),
    "yellow": (240, 220, 40),
    "purple": (160, 60, 210),
    "orange": (250, 140, 20),
}
COLORS = tuple(COLOR_RGB)
SIZES = ("small", "large")
RELATIONS = ("left of", "right of", "above", "below")
DIRECTIONS = ("left", "right", "up", "down")
QUESTION_TYPES = ("color", "shape", "count", "exists", "relation")
MAX_OBJECTS = 5
ANSWERS = COLORS + SHAPES + tuple(str(i) for i in range(MAX_OBJECTS + 1)) + ("yes", "no")

# Radius of each size as a fraction of the image side.
_RADIUS = {"small": 0.13, "large": 0.21}
# Extra gap between two objects' discs, and the dominant-axis ratio a pair must
# have so that its relation (left/right versus above/below) is unambiguous.
_GAP = 0.04
_AXIS_RATIO = 1.3

_SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
_REL_WORDS = {
    "left of": ("left of", "to the left of"),
    "right of": ("right of", "to the right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}
_DIR_WORDS = {
    "left": ("left", "to the left"),
    "right": ("right", "to the right"),
    "up": ("up", "upwards"),
    "down": ("down", "downwards"),
}
_OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


# --------------------------------------------------------------------------- #
# Data types
# --------------------------------------------------------------------------- #
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
        return int(self.positions.shape[0])

    def frame(self, t: int) -> Scene:
        """The scene at frame ``t``."""
        if not 0 <= t < self.frames:
            raise ValueError(f"t must be in [0, {self.frames}), got {t}")
        return Scene(tuple(
            Obj(o.shape, o.color, o.size, float(p[0]), float(p[1]))
            for o, p in zip(self.scene.objects, self.positions[t])
        ))


# --------------------------------------------------------------------------- #
# Validation helpers
# --------------------------------------------------------------------------- #
def _check_int(name: str, value, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return int(value)


def _check_subset(name: str, values, allowed: tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise TypeError(f"{name} must be a sequence of strings, got {type(values).__name__}")
    values = tuple(values)
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise ValueError(f"{name} has unknown values {unknown}; expected some of {allowed}")
    if not values:
        raise ValueError(f"{name} must not be empty")
    return values


def _check_scenes(scenes) -> list[Scene]:
    if isinstance(scenes, Scene):
        return [scenes]
    if not isinstance(scenes, (list, tuple)):
        raise TypeError(f"scenes must be a list of Scene, got {type(scenes).__name__}")
    for s in scenes:
        if not isinstance(s, Scene):
            raise TypeError(f"scenes must contain Scene objects, got {type(s).__name__}")
    return list(scenes)


def _rng(seed_or_rng) -> np.random.Generator:
    if isinstance(seed_or_rng, np.random.Generator):
        return seed_or_rng
    if seed_or_rng is None:
        return np.random.default_rng(0)
    return np.random.default_rng(_check_int("seed", seed_or_rng, minimum=0))


# --------------------------------------------------------------------------- #
# Scenes
# --------------------------------------------------------------------------- #
def _valid_layout(x: np.ndarray, y: np.ndarray, r: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Which scenes have no overlapping pair and no ambiguous relation. Shapes (n, K) -> (n,)."""
    dx = x[:, :, None] - x[:, None, :]
    dy = y[:, :, None] - y[:, None, :]
    dist = np.hypot(dx, dy)
    adx, ady = np.abs(dx), np.abs(dy)
    ratio = np.maximum(adx, ady) / np.maximum(np.minimum(adx, ady), 1e-9)
    pair = present[:, :, None] & present[:, None, :]
    k = x.shape[1]
    pair &= ~np.eye(k, dtype=bool)[None]
    bad = pair & ((dist < r[:, :, None] + r[:, None, :] + _GAP) | (ratio < _AXIS_RATIO))
    return ~bad.any(axis=(1, 2))


def sample_scenes(
    n: int,
    *,
    min_objects: int = 1,
    max_objects: int = 2,
    shapes: SequenceType[str] = SHAPES,
    colors: SequenceType[str] = COLORS,
    sizes: SequenceType[str] = SIZES,
    seed: int | np.random.Generator = 0,
) -> list[Scene]:
    """Sample ``n`` random scenes with ``min_objects``..``max_objects`` objects each.

    Objects never overlap (their discs keep a gap), no (shape, color) pair
    repeats within a scene, and every pair of objects has a clear dominant axis,
    so its relation is well defined. Sampling is vectorized rejection sampling.

    Returns a list of ``n`` :class:`Scene`.
    """
    n = _check_int("n", n, minimum=0)
    min_objects = _check_int("min_objects", min_objects, minimum=1, maximum=MAX_OBJECTS)
    max_objects = _check_int("max_objects", max_objects, minimum=1, maximum=MAX_OBJECTS)
    if min_objects > max_objects:
        raise ValueError(f"min_objects ({min_objects}) must be <= max_objects ({max_objects})")
    shapes = _check_subset("shapes", shapes, SHAPES)
    colors = _check_subset("colors", colors, COLORS)
    sizes = _check_subset("sizes", sizes, SIZES)
    if len(shapes) * len(colors) < max_objects:
        raise ValueError("shapes x colors must offer at least max_objects distinct combinations")
    rng = _rng(seed)
    k = max_objects
    counts = rng.integers(min_objects, max_objects + 1, size=n)
    present = np.arange(k)[None, :] < counts[:, None]  # (n, K)
    # Distinct (shape, color) combinations per scene: sample without replacement.
    n_combo = len(shapes) * len(colors)
    combo = np.argsort(rng.random((n, n_combo)), axis=1)[:, :k]  # (n, K)
    shape_idx, color_idx = combo // len(colors), combo % len(colors)
    size_idx = rng.integers(0, len(sizes), size=(n, k))
    radius = np.array([_RADIUS[s] for s in sizes])[size_idx]  # (n, K)
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
    scenes = []
    for i in range(n):
        scenes.append(Scene(tuple(
            Obj(shapes[shape_idx[i, j]], colors[color_idx[i, j]], sizes[size_idx[i, j]],
                round(float(x[i, j]), 4), round(float(y[i, j]), 4))
            for j in range(counts[i])
        )))
    return scenes


# --------------------------------------------------------------------------- #
# Rendering
# --------------------------------------------------------------------------- #
def _shape_masks(a: np.ndarray, b: np.ndarray, shape_idx: np.ndarray) -> np.ndarray:
    """Inside-masks for shapes in normalized coordinates.

    ``a, b``: (m, H, W) offsets from each object's centre divided by its radius;
    ``shape_idx``: (m,) index into :data:`SHAPES`. Returns bool (m, H, W).
    """
    out = np.zeros(a.shape, dtype=bool)
    aa, ab = np.abs(a), np.abs(b)
    for s, name in enumerate(SHAPES):
        sel = shape_idx == s
        if not sel.any():
            continue
        x, y, ax, ay = a[sel], b[sel], aa[sel], ab[sel]
        if name == "circle":
            m = x * x + y * y <= 1.0
        elif name == "square":
            m = np.maximum(ax, ay) <= 0.8
        elif name == "triangle":  # apex up
            m = (y <= 0.75) & (ax <= 0.95 * (y + 0.95) / 1.7)
        elif name == "star":  # five points, apex up
            rho = np.hypot(x, y)
            theta = np.arctan2(y, x) + np.pi / 2
            phi = np.mod(theta, 2 * np.pi / 5) - np.pi / 5
            m = rho <= 1.0 - 0.6 * (1 - np.abs(phi) / (np.pi / 5))
        elif name == "cross":
            m = ((ax <= 0.32) & (ay <= 0.95)) | ((ay <= 0.32) & (ax <= 0.95))
        else:  # diamond
            m = ax + ay <= 1.0
        out[sel] = m
    return out


def render(
    scenes: SequenceType[Scene] | Scene,
    *,
    size: int = 32,
    noise: float = 0.0,
    seed: int | np.random.Generator = 0,
) -> np.ndarray:
    """Render scenes to RGB images.

    Parameters
    ----------
    scenes: list of :class:`Scene` (or one scene).
    size: image side in pixels, at least 16.
    noise: standard deviation of Gaussian pixel noise, as a fraction of 255
        (0 gives clean images), added to a faint random background texture.

    Returns
    -------
    uint8 array of shape ``(n, size, size, 3)``.
    """
    scenes = _check_scenes(scenes)
    size = _check_int("size", size, minimum=16)
    if not isinstance(noise, (int, float)) or isinstance(noise, bool):
        raise TypeError(f"noise must be a float, got {type(noise).__name__}")
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be in [0, 1], got {noise}")
    n = len(scenes)
    images = np.full((n, size, size, 3), 16, dtype=np.uint8)
    owner = [i for i, s in enumerate(scenes) for _ in s.objects]
    objs = [o for s in scenes for o in s.objects]
    if objs:
        owner_arr = np.asarray(owner)
        cx = np.array([o.x for o in objs], dtype=np.float32)
        cy = np.array([o.y for o in objs], dtype=np.float32)
        rad = np.array([_RADIUS[o.size] for o in objs], dtype=np.float32)
        shape_idx = np.array([SHAPES.index(o.shape) for o in objs])
        rgb = np.array([COLOR_RGB[o.color] for o in objs], dtype=np.uint8)
        # Work on a square patch around each object rather than on the whole image.
        half = int(np.ceil(_RADIUS["large"] * size)) + 1
        patch = np.arange(-half, half + 1)
        px0 = np.floor(cx * size).astype(int)  # (m,)
        py0 = np.floor(cy * size).astype(int)
        cols = px0[:, None] + patch[None, :]  # (m, P)
        rows = py0[:, None] + patch[None, :]
        u = (cols + 0.5) / size - cx[:, None]  # (m, P) offset in unit coordinates
        v = (rows + 0.5) / size - cy[:, None]
        a = (u / rad[:, None])[:, None, :]  # (m, 1, P)
        b = (v / rad[:, None])[:, :, None]  # (m, P, 1)
        a, b = np.broadcast_arrays(a, b)
        inside = _shape_masks(a, b, shape_idx)  # (m, P, P)
        inside &= ((rows >= 0) & (rows < size))[:, :, None] & ((cols >= 0) & (cols < size))[:, None, :]
        m_idx, r_idx, c_idx = np.nonzero(inside)
        images[owner_arr[m_idx], rows[m_idx, r_idx], cols[m_idx, c_idx]] = rgb[m_idx]
    if noise > 0:
        rng = _rng(seed)
        texture = rng.normal(0.0, noise * 255.0, size=images.shape).astype(np.float32)
        images = np.clip(images.astype(np.float32) + texture, 0, 255).astype(np.uint8)
    return images


# --------------------------------------------------------------------------- #
# Captions
# --------------------------------------------------------------------------- #
def _np(rng: np.random.Generator, obj: Obj, *, canonical: bool, det: str = "a") -> str:
    size = _SIZE_WORDS[obj.size][0 if canonical else rng.integers(2)]
    return f"{det} {size} {obj.color} {obj.shape}"


def _pick(rng: np.random.Generator, options: tuple[str, ...], canonical: bool) -> str:
    return options[0] if canonical else options[rng.integers(len(options))]


def caption(scene: Scene, *, rng: np.random.Generator | int | None = None, canonical: bool = False) -> str:
    """One true caption of ``scene``.

    With ``canonical=True`` the wording is fixed ("a small red circle left of a
    large blue square"); otherwise a sentence pattern and synonyms are drawn
    from ``rng``. Two-object captions state the relation of the first object
    to the second; captions of larger scenes list the objects and one relation.
    """
    if not isinstance(scene, Scene):
        raise TypeError(f"scene must be a Scene, got {type(scene).__name__}")
    if len(scene) == 0:
        raise ValueError("scene must have at least one object")
    rng = _rng(rng)
    objs = scene.objects
    if len(objs) == 1:
        pattern = 0 if canonical else rng.integers(3)
        np0 = _np(rng, objs[0], canonical=canonical)
        return (np0, f"there is {np0}", f"the image shows {np0}")[pattern]
    order = [0, 1] if canonical else list(rng.permutation(len(objs)))
    i, j = order[0], order[1]
    rel = scene.relation(i, j)
    rel_words = _pick(rng, _REL_WORDS[rel], canonical)
    if len(objs) == 2:
        pattern = 0 if canonical else rng.integers(3)
        if pattern == 2:
            return (f"{_np(rng, objs[i], canonical=canonical, det='the')} is {rel_words} "
                    f"{_np(rng, objs[j], canonical=canonical, det='the')}")
        sentence = f"{_np(rng, objs[i], canonical=canonical)} {rel_words} {_np(rng, objs[j], canonical=canonical)}"
        return sentence if pattern == 0 else f"there is {sentence}"
    others = [k for k in range(len(objs)) if k not in (i, j)]
    listing = ", ".join(_np(rng, objs[k], canonical=canonical) for k in others)
    return (f"{_np(rng, objs[i], canonical=canonical)} {rel_words} "
            f"{_np(rng, objs[j], canonical=canonical)} and {listing}")


def captions(scenes: SequenceType[Scene], *, seed: int | np.random.Generator = 0, canonical: bool = False) -> list[str]:
    """One caption per scene (see :func:`caption`), reproducible from ``seed``."""
    scenes = _check_scenes(scenes)
    rng = _rng(seed)
    return [caption(s, rng=rng, canonical=canonical) for s in scenes]


def _desc_key(desc) -> tuple:
    return tuple("" if d is None else d for d in desc)


def scene_facts(scene: Scene) -> frozenset:
    """Every fact true of ``scene``: one ``exists`` per object and one ``rel`` per ordered pair."""
    if not isinstance(scene, Scene):
        raise TypeError(f"scene must be a Scene, got {type(scene).__name__}")
    facts = {("exists", o.desc) for o in scene.objects}
    for i, a in enumerate(scene.objects):
        for j, b in enumerate(scene.objects):
            if i != j:
                facts.add(("rel", a.desc, scene.relation(i, j), b.desc))
    return frozenset(facts)


def _desc_matches(partial, full) -> bool:
    return all(p is None or p == f for p, f in zip(partial, full))


def facts_hold(facts: Iterable[tuple], scene: Scene) -> bool:
    """Whether every fact (possibly with ``None`` attributes) is true of ``scene``.

    A descriptor with ``None`` matches any object that agrees on the attributes
    given. ``moves`` facts are not checked here (a scene has no motion).
    """
    if not isinstance(scene, Scene):
        raise TypeError(f"scene must be a Scene, got {type(scene).__name__}")
    objs = scene.objects
    for fact in facts:
        if fact[0] == "exists":
            if not any(_desc_matches(fact[1], o.desc) for o in objs):
                return False
        elif fact[0] == "rel":
            _, da, rel, db = fact
            if not any(
                i != j and _desc_matches(da, a.desc) and _desc_matches(db, b.desc) and scene.relation(i, j) == rel
                for i, a in enumerate(objs) for j, b in enumerate(objs)
            ):
                return False
        elif fact[0] != "moves":
            raise ValueError(f"facts contains an unknown fact kind {fact[0]!r}")
    return True


_FILLER = {"there", "is", "are", "the", "image", "shows", "and", "a", "an", "it", "then"}
_WORD_TO_SIZE = {w: s for s, ws in _SIZE_WORDS.items() for w in ws}
# Multi-word phrases, longest first, mapped to a token.
_PHRASES = sorted(
    [(p.split(), ("REL", r)) for r, ps in _REL_WORDS.items() for p in ps]
    + [(("moves " + p).split(), ("MOVE", d)) for d, ps in _DIR_WORDS.items() for p in ps],
    key=lambda item: -len(item[0]),
)


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def parse_caption(text: str) -> frozenset:
    """Map a caption of the ShapesWorld grammar back to its facts.

    Handles every pattern and synonym :func:`caption` and
    :func:`motion_caption` produce, and partial descriptions such as "a red
    circle" (unmentioned attributes become ``None``).

    Returns a frozenset of facts; raises ``ValueError`` naming the first word
    outside the grammar, or on a sentence with no object.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    words = _tokens(text)
    items: list[tuple] = []
    i = 0
    while i < len(words):
        for phrase, token in _PHRASES:
            if words[i:i + len(phrase)] == list(phrase):
                items.append(token)
                i += len(phrase)
                break
        else:
            size = color = None
            j = i
            if j < len(words) and words[j] in _WORD_TO_SIZE:
                size = _WORD_TO_SIZE[words[j]]
                j += 1
            if j < len(words) and words[j] in COLOR_RGB:
                color = words[j]
                j += 1
            if j < len(words) and words[j] in SHAPES:
                items.append(("NP", (words[j], color, size)))
                i = j + 1
            elif j < len(words) and words[j] in ("object", "shape", "thing"):
                items.append(("NP", (None, color, size)))
                i = j + 1
            elif j == i and words[i] in _FILLER:
                i += 1
            else:
                bad = words[j] if j < len(words) else words[i]
                raise ValueError(f"text contains {bad!r}, which is outside the ShapesWorld grammar: {text!r}")
    facts = set()
    nps = [it for it in items if it[0] == "NP"]
    if not nps:
        raise ValueError(f"text mentions no object: {text!r}")
    for k, it in enumerate(items):
        if it[0] == "NP":
            facts.add(("exists", it[1]))
        elif it[0] == "REL":
            if not (0 < k < len(items) - 1 and items[k - 1][0] == "NP" and items[k + 1][0] == "NP"):
                raise ValueError(f"text has a relation without an object on each side: {text!r}")
            facts.add(("rel", items[k - 1][1], it[1], items[k + 1][1]))
        elif it[0] == "MOVE":
            if not (k > 0 and items[k - 1][0] == "NP"):
                raise ValueError(f"text has a motion without an object: {text!r}")
            facts.add(("moves", items[k - 1][1], it[1]))
    return frozenset(facts)


# --------------------------------------------------------------------------- #
# Questions
# --------------------------------------------------------------------------- #
def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _unique(objs, attr: str, value) -> bool:
    return sum(getattr(o, attr) == value for o in objs) == 1


def _applicable(scene: Scene) -> list[str]:
    objs = scene.objects
    types = ["count", "exists"]
    if any(_unique(objs, "shape", o.shape) for o in objs):
        types.insert(0, "color")
    if any(_unique(objs, "color", o.color) for o in objs):
        types.insert(1 if "color" in types else 0, "shape")
    if len(objs) >= 2:
        types.append("relation")
    return [t for t in QUESTION_TYPES if t in types]


def ask(scene: Scene, qtype: str | None = None, *, rng: np.random.Generator | int | None = None) -> Question:
    """Ask one question of type ``qtype`` about ``scene`` (random type if ``None``).

    * color: "what color is the square?" (about a shape that occurs once);
    * shape: "what shape is the red object?" (about a color that occurs once);
    * count: "how many objects are there?" or "how many red objects are there?";
    * exists: "is there a red square?" (yes and no equally likely);
    * relation: "is the red square left of the blue circle?" (two or more objects).

    Raises ``ValueError`` if ``qtype`` is unknown or cannot be asked of this scene.
    """
    if not isinstance(scene, Scene):
        raise TypeError(f"scene must be a Scene, got {type(scene).__name__}")
    rng = _rng(rng)
    possible = _applicable(scene)
    if qtype is None:
        qtype = possible[rng.integers(len(possible))]
    if qtype not in QUESTION_TYPES:
        raise ValueError(f"qtype must be one of {QUESTION_TYPES}, got {qtype!r}")
    if qtype not in possible:
        raise ValueError(f"qtype {qtype!r} cannot be asked of this scene (possible: {possible})")
    objs = scene.objects
    if qtype == "color":
        cands = [o for o in objs if _unique(objs, "shape", o.shape)]
        o = cands[rng.integers(len(cands))]
        return Question(f"what color is the {o.shape}?", o.color, qtype)
    if qtype == "shape":
        cands = [o for o in objs if _unique(objs, "color", o.color)]
        o = cands[rng.integers(len(cands))]
        return Question(f"what shape is the {o.color} object?", o.shape, qtype)
    if qtype == "count":
        if rng.random() < 0.5:
            return Question("how many objects are there?", str(len(objs)), qtype)
        color = COLORS[rng.integers(len(COLORS))]
        return Question(f"how many {color} objects are there?", str(sum(o.color == color for o in objs)), qtype)
    if qtype == "exists":
        if rng.random() < 0.5:
            o = objs[rng.integers(len(objs))]
            return Question(f"is there {_article(o.color)} {o.color} {o.shape}?", "yes", qtype)
        present = {(o.shape, o.color) for o in objs}
        absent = [(s, c) for s in SHAPES for c in COLORS if (s, c) not in present]
        s, c = absent[rng.integers(len(absent))]
        return Question(f"is there {_article(c)} {c} {s}?", "no", qtype)
    i, j = rng.choice(len(objs), size=2, replace=False)
    true_rel = scene.relation(i, j)
    rel = true_rel if rng.random() < 0.5 else (
        _OPPOSITE[true_rel] if rng.random() < 0.5 else RELATIONS[rng.integers(len(RELATIONS))])
    a, b = objs[i], objs[j]
    return Question(f"is the {a.color} {a.shape} {rel} the {b.color} {b.shape}?",
                    "yes" if rel == true_rel else "no", qtype)


def questions(
    scenes: SequenceType[Scene],
    *,
    seed: int | np.random.Generator = 0,
    qtypes: SequenceType[str] | None = None,
) -> list[Question]:
    """One question per scene, its type drawn uniformly from the applicable ``qtypes``.

    Raises ``ValueError`` if none of ``qtypes`` applies to some scene (e.g. only
    ``relation`` for one-object scenes).
    """
    scenes = _check_scenes(scenes)
    allowed = QUESTION_TYPES if qtypes is None else _check_subset("qtypes", qtypes, QUESTION_TYPES)
    rng = _rng(seed)
    out = []
    for s in scenes:
        possible = [t for t in _applicable(s) if t in allowed]
        if not possible:
            raise ValueError(f"none of qtypes {allowed} can be asked of a scene with {len(s)} object(s)")
        out.append(ask(s, possible[rng.integers(len(possible))], rng=rng))
    return out


# --------------------------------------------------------------------------- #
# Sequences
# --------------------------------------------------------------------------- #
def motion_caption(scene: Scene, velocities, *, rng: np.random.Generator | int | None = None,
                   canonical: bool = False) -> str:
    """Caption of a motion: "the small red circle moves right and the big blue square moves up"."""
    rng = _rng(rng)
    parts = []
    for o, (vx, vy) in zip(scene.objects, velocities):
        direction = ("right" if vx > 0 else "left") if abs(vx) >= abs(vy) else ("down" if vy > 0 else "up")
        parts.append(f"{_np(rng, o, canonical=canonical, det='the')} moves {_pick(rng, _DIR_WORDS[direction], canonical)}")
    return " and ".join(parts)


def sample_sequences(
    n: int,
    *,
    frames: int = 8,
    min_objects: int = 1,
    max_objects: int = 1,
    speed: float = 0.05,
    bounce: bool = False,
    seed: int | np.random.Generator = 0,
) -> list[Sequence]:
    """Sample ``n`` clips of ``frames`` frames; each object moves along one axis.

    Each object moves left, right, up or down by ``speed`` (unit square per
    frame). Without ``bounce`` start positions are chosen so that objects stay
    inside the image for the whole clip; with ``bounce`` they reflect off the
    border. Objects of one clip may pass over each other.
    """
    n = _check_int("n", n, minimum=0)
    frames = _check_int("frames", frames, minimum=2)
    if not isinstance(speed, (int, float)) or not 0 < speed <= 0.2:
        raise ValueError(f"speed must be a float in (0, 0.2], got {speed!r}")
    rng = _rng(seed)
    scenes = sample_scenes(n, min_objects=min_objects, max_objects=max_objects, seed=rng)
    out = []
    t = np.arange(frames)[:, None]
    for s in scenes:
        vel, pos = [], []
        objs = list(s.objects)
        for k, o in enumerate(objs):
            d = DIRECTIONS[rng.integers(4)]
            v = np.array({"left": (-speed, 0), "right": (speed, 0), "up": (0, -speed), "down": (0, speed)}[d])
            r = _RADIUS[o.size]
            start = np.array([o.x, o.y])
            if not bounce:  # choose a start from which the whole path stays inside
                travel = v * (frames - 1)
                lo = r - np.minimum(travel, 0)
                hi = 1 - r - np.maximum(travel, 0)
                start = lo + rng.random(2) * np.maximum(hi - lo, 0)
                objs[k] = Obj(o.shape, o.color, o.size, round(float(start[0]), 4), round(float(start[1]), 4))
            p = start[None, :] + t * v[None, :]  # (T, 2)
            if bounce:  # reflect into [r, 1 - r]
                span = 1 - 2 * r
                q = np.mod(p - r, 2 * span)
                p = r + np.where(q > span, 2 * span - q, q)
            vel.append((float(v[0]), float(v[1])))
            pos.append(p)
        scene = Scene(tuple(objs))
        positions = np.stack(pos, axis=1)  # (T, K, 2)
        out.append(Sequence(scene, tuple(vel), positions, motion_caption(scene, vel, rng=rng)))
    return out


def render_sequences(sequences: SequenceType[Sequence], *, size: int = 32) -> np.ndarray:
    """Render clips to uint8 video of shape ``(n, frames, size, size, 3)``."""
    if not isinstance(sequences, (list, tuple)) or not all(isinstance(s, Sequence) for s in sequences):
        raise TypeError("sequences must be a list of Sequence")
    if not sequences:
        return np.zeros((0, 0, size, size, 3), dtype=np.uint8)
    frames = {s.frames for s in sequences}
    if len(frames) != 1:
        raise ValueError(f"sequences must all have the same number of frames, got {sorted(frames)}")
    t_len = frames.pop()
    flat = [s.frame(t) for s in sequences for t in range(t_len)]
    return render(flat, size=size).reshape(len(sequences), t_len, size, size, 3)


# --------------------------------------------------------------------------- #
# Audio
# --------------------------------------------------------------------------- #
# Pitch follows shape, timbre (harmonic weights) follows color, loudness follows size.
_PITCH = {s: f for s, f in zip(SHAPES, (262.0, 330.0, 392.0, 523.0, 659.0, 784.0))}
_TIMBRE = {
    "red": (1.0,), "green": (1.0, 0.5), "blue": (1.0, 0.0, 0.5),
    "yellow": (1.0, 0.5, 0.33, 0.25), "purple": (1.0, 0.0, 0.0, 0.6), "orange": (0.6, 1.0),
}
_LOUDNESS = {"small": 0.35, "large": 0.8}


def synthesize_audio(
    scenes: SequenceType[Scene] | Scene,
    *,
    sample_rate: int = 8000,
    duration: float = 0.5,
    noise: float = 0.0,
    seed: int | np.random.Generator = 0,
) -> np.ndarray:
    """The sound of each scene: one tone per object, played in order from left to right.

    The clip is split into as many equal slots as the scene has objects; an
    object's tone has the pitch of its shape (C4 to G5), the harmonic profile
    of its color and the loudness of its size, with a short fade in and out.

    Returns float32 array of shape ``(n, round(sample_rate * duration))`` in [-1, 1].
    """
    scenes = _check_scenes(scenes)
    sample_rate = _check_int("sample_rate", sample_rate, minimum=1000)
    if not isinstance(duration, (int, float)) or not 0.05 <= duration <= 10:
        raise ValueError(f"duration must be a float in [0.05, 10] seconds, got {duration!r}")
    if not isinstance(noise, (int, float)) or not 0 <= noise <= 1:
        raise ValueError(f"noise must be a float in [0, 1], got {noise!r}")
    n_samples = int(round(sample_rate * duration))
    t = np.arange(n_samples) / sample_rate
    out = np.zeros((len(scenes), n_samples), dtype=np.float64)
    for i, s in enumerate(scenes):
        objs = sorted(s.objects, key=lambda o: o.x)
        if not objs:
            continue
        slot = n_samples // len(objs)
        for k, o in enumerate(objs):
            seg = slice(k * slot, (k + 1) * slot if k < len(objs) - 1 else n_samples)
            ts = t[seg] - t[seg][0]
            wave = sum(w * np.sin(2 * np.pi * (h + 1) * _PITCH[o.shape] * ts)
                       for h, w in enumerate(_TIMBRE[o.color]))
            wave = wave / sum(_TIMBRE[o.color])
            fade = np.minimum(1.0, np.minimum(ts, ts[-1] - ts) / 0.01)
            out[i, seg] = _LOUDNESS[o.size] * wave * fade
    if noise > 0:
        out += _rng(seed).normal(0, noise, size=out.shape)
    return np.clip(out, -1, 1).astype(np.float32)


def spectrogram(waveform, *, n_fft: int = 256, hop_length: int = 64) -> torch.Tensor:
    """Log-magnitude spectrogram ``log(1 + |STFT|)`` with a Hann window (``torch.stft``).

    ``waveform``: array or tensor of shape ``(..., samples)``. Returns float32
    tensor of shape ``(..., n_fft // 2 + 1, frames)``.
    """
    if isinstance(waveform, np.ndarray):
        waveform = torch.from_numpy(np.ascontiguousarray(waveform))
    if not isinstance(waveform, torch.Tensor):
        raise TypeError(f"waveform must be a numpy array or torch tensor, got {type(waveform).__name__}")
    if waveform.ndim < 1 or waveform.shape[-1] < n_fft:
        raise ValueError(f"waveform must have shape (..., samples) with samples >= n_fft={n_fft}, "
                         f"got {tuple(waveform.shape)}")
    n_fft = _check_int("n_fft", n_fft, minimum=8)
    hop_length = _check_int("hop_length", hop_length, minimum=1)
    lead = waveform.shape[:-1]
    flat = waveform.reshape(-1, waveform.shape[-1]).float()
    spec = torch.stft(flat, n_fft=n_fft, hop_length=hop_length, window=torch.hann_window(n_fft, device=flat.device),
                      return_complex=True)
    return torch.log1p(spec.abs()).reshape(*lead, spec.shape[-2], spec.shape[-1])


# --------------------------------------------------------------------------- #
# Text corpus
# --------------------------------------------------------------------------- #
def vocabulary() -> list[str]:
    """Every word the grammar can produce (captions, questions, motion captions, answers)."""
    words = set(SHAPES) | set(COLORS) | set(_FILLER) | {"object", "objects", "what", "color", "shape",
                                                        "how", "many", "moves", "of", "to"}
    for group in (_SIZE_WORDS, _REL_WORDS, _DIR_WORDS):
        for phrases in group.values():
            for p in phrases:
                words.update(p.split())
    words.update(ANSWERS)
    return sorted(words)


def corpus(n: int = 2000, *, seed: int = 0) -> list[str]:
    """Texts of the world for training a tokenizer: ``n`` captions, ``n`` questions,
    ``n // 4`` motion captions, and one line per grammar word so none is missing."""
    n = _check_int("n", n, minimum=1)
    rng = _rng(seed)
    scenes = sample_scenes(n, min_objects=1, max_objects=3, seed=rng)
    texts = captions(scenes, seed=rng)
    texts += [q.text for q in questions(scenes, seed=rng)]
    texts += [s.caption for s in sample_sequences(max(1, n // 4), max_objects=2, seed=rng)]
    texts += vocabulary()
    return texts
