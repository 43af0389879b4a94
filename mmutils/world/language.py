"""The language of ShapesWorld: a caption grammar with synonyms, the facts a caption states, and its parser.

Facts are tuples. A *descriptor* is ``(shape, color, size)``; in a parsed caption
an attribute the caption did not mention is ``None``. The fact kinds are
``("exists", desc)``, ``("rel", desc_a, relation, desc_b)`` (``a`` is
``relation`` ``b``) and ``("moves", desc, direction)``.
"""
from __future__ import annotations

import re
from typing import Iterable, Sequence as SequenceType

import numpy as np

from ..checks import check_float, check_instance, check_rng
from .scenes import ANSWERS, COLOR_RGB, COLORS, OPPOSITE, SHAPES, Obj, Scene

_SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
_REL_WORDS = {"left of": ("left of", "to the left of"), "right of": ("right of", "to the right of"),
              "above": ("above", "over"), "below": ("below", "under", "beneath")}
_DIR_WORDS = {"left": ("left", "to the left"), "right": ("right", "to the right"), "up": ("up", "upwards"),
              "down": ("down", "downwards")}
_FILLER = {"there", "is", "are", "the", "image", "shows", "and", "a", "an", "it", "then"}
_WORD_TO_SIZE = {w: s for s, ws in _SIZE_WORDS.items() for w in ws}
# Multi-word phrases, longest first, mapped to a token.
_PHRASES = sorted(
    [(p.split(), ("REL", r)) for r, ps in _REL_WORDS.items() for p in ps]
    + [(("moves " + p).split(), ("MOVE", d)) for d, ps in _DIR_WORDS.items() for p in ps],
    key=lambda item: -len(item[0]),
)
# Each relation phrase and the phrase of the opposite relation in the same position (else its first).
_REL_SWAP = {p: opposite[k] if k < len(opposite) else opposite[0]
             for r, ps in _REL_WORDS.items() for opposite in [_REL_WORDS[OPPOSITE[r]]] for k, p in enumerate(ps)}
_REL_PATTERN = re.compile(r"\b(" + "|".join(sorted(_REL_SWAP, key=len, reverse=True)) + r")\b")


def _np(rng: np.random.Generator, obj: Obj, *, canonical: bool, det: str = "a") -> str:
    size = _SIZE_WORDS[obj.size][0 if canonical else rng.integers(2)]
    return f"{det} {size} {obj.color} {obj.shape}"


def _pick(rng: np.random.Generator, options: tuple[str, ...], canonical: bool) -> str:
    return options[0] if canonical else options[rng.integers(len(options))]


def caption(scene: Scene, *, rng: np.random.Generator | int | None = None, canonical: bool = False) -> str:
    """One true caption of ``scene``.

    With ``canonical=True`` the wording is fixed ("a small red circle left of a large blue
    square"); otherwise a sentence pattern and synonyms are drawn from ``rng``. Captions of
    larger scenes state one relation and list the other objects.
    """
    check_instance("scene", scene, Scene)
    if len(scene) == 0:
        raise ValueError("scene must have at least one object")
    rng = check_rng("rng", rng)
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
    check_instance("scenes", scenes, (list, tuple))
    rng = check_rng("seed", seed)
    return [caption(s, rng=rng, canonical=canonical) for s in scenes]


def motion_caption(scene: Scene, velocities, *, rng: np.random.Generator | int | None = None,
                   canonical: bool = False) -> str:
    """Caption of a motion: "the small red circle moves right and the big blue square moves up"."""
    rng = check_rng("rng", rng)
    parts = []
    for o, (vx, vy) in zip(scene.objects, velocities):
        direction = ("right" if vx > 0 else "left") if abs(vx) >= abs(vy) else ("down" if vy > 0 else "up")
        subject = _np(rng, o, canonical=canonical, det="the")
        parts.append(f"{subject} moves {_pick(rng, _DIR_WORDS[direction], canonical)}")
    return " and ".join(parts)


def swap_relation(caption: str) -> str:
    """The caption with every relation replaced by its opposite (left of <-> right of, above <-> below).

    "a red circle to the left of a blue square" -> "a red circle to the right of a blue square": false
    of the scene the old one was true of (ARO's relation swap, Yuksekgonul et al., 2023).
    Raises ``ValueError`` if the caption states no relation.
    """
    check_instance("caption", caption, str)
    swapped, count = _REL_PATTERN.subn(lambda m: _REL_SWAP[m.group(1)], caption)
    if count == 0:
        raise ValueError(f"caption states no relation (left of, right of, above, below ...): {caption!r}")
    return swapped


def drop_attributes(captions: SequenceType[str], p: float, *, seed: int | np.random.Generator = 0) -> list[str]:
    """The captions with each colour word and each size word left out, independently, with probability ``p``.

    "there is a big red circle" -> "there is a red circle", "there is a big circle", ... A caption stays true
    of its scene and says less (an attribute left out parses as ``None``). Training on such captions teaches a
    text-conditioned model what an underspecified prompt allows, as real captions leave most attributes unsaid.
    """
    check_instance("captions", captions, (list, tuple))
    p = check_float("p", p, min=0.0, max=1.0)
    rng = check_rng("seed", seed)
    droppable = set(COLORS) | set(_WORD_TO_SIZE)
    return [" ".join(w for w in c.split() if w not in droppable or rng.random() >= p) for c in captions]


def scene_facts(scene: Scene) -> frozenset:
    """Every fact true of ``scene``: one ``exists`` per object and one ``rel`` per ordered pair."""
    check_instance("scene", scene, Scene)
    facts = {("exists", o.desc) for o in scene.objects}
    for i, a in enumerate(scene.objects):
        for j, b in enumerate(scene.objects):
            if i != j:
                facts.add(("rel", a.desc, scene.relation(i, j), b.desc))
    return frozenset(facts)


def desc_matches(partial, full) -> bool:
    """Whether a parsed descriptor ``partial`` (``None`` = unmentioned attribute) fits the full descriptor ``full``."""
    return all(p is None or p == f for p, f in zip(partial, full))


def facts_hold(facts: Iterable[tuple], scene: Scene) -> bool:
    """Whether every fact is true of ``scene`` (a ``None`` attribute matches any value; ``moves`` is not checked)."""
    check_instance("scene", scene, Scene)
    objs = scene.objects
    for fact in facts:
        if fact[0] == "exists":
            if not any(desc_matches(fact[1], o.desc) for o in objs):
                return False
        elif fact[0] == "rel":
            _, da, rel, db = fact
            if not any(
                i != j and desc_matches(da, a.desc) and desc_matches(db, b.desc) and scene.relation(i, j) == rel
                for i, a in enumerate(objs) for j, b in enumerate(objs)
            ):
                return False
        elif fact[0] != "moves":
            raise ValueError(f"facts contains an unknown fact kind {fact[0]!r}")
    return True


def parse_caption(text: str) -> frozenset:
    """Map a caption of the ShapesWorld grammar back to its facts.

    Handles every pattern and synonym of :func:`caption` and :func:`motion_caption`, and partial
    descriptions such as "a red circle" (unmentioned attributes become ``None``). Returns a frozenset
    of facts; raises ``ValueError`` naming the first word outside the grammar, or if no object is named.
    """
    check_instance("text", text, str)
    words = re.findall(r"[a-z0-9]+", text.lower())
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
    if not any(it[0] == "NP" for it in items):
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


def vocabulary() -> list[str]:
    """Every word the grammar can produce (captions, questions, motion captions, answers)."""
    words = set(SHAPES) | set(COLORS) | set(_FILLER) | set(ANSWERS)
    words |= {"object", "objects", "what", "color", "shape", "how", "many", "moves", "of", "to"}
    words.update(w for group in (_SIZE_WORDS, _REL_WORDS, _DIR_WORDS) for ps in group.values() for p in ps
                 for w in p.split())
    return sorted(words)
