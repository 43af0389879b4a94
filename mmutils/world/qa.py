"""Typed questions about ShapesWorld scenes with their answers, for visual question answering."""
from __future__ import annotations

from typing import Sequence as SequenceType

import numpy as np

from ..checks import check_choice, check_instance, check_rng, check_subset
from .scenes import COLORS, OPPOSITE, QUESTION_TYPES, RELATIONS, SHAPES, Question, Scene


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
    check_instance("scene", scene, Scene)
    rng = check_rng("rng", rng)
    possible = _applicable(scene)
    if qtype is None:
        qtype = possible[rng.integers(len(possible))]
    check_choice("qtype", qtype, QUESTION_TYPES)
    if qtype not in possible:
        raise ValueError(f"qtype {qtype!r} cannot be asked of this scene (possible: {possible})")
    return _ask(scene, qtype, rng)


def _ask(scene: Scene, qtype: str, rng: np.random.Generator) -> Question:
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
        OPPOSITE[true_rel] if rng.random() < 0.5 else RELATIONS[rng.integers(len(RELATIONS))])
    a, b = objs[i], objs[j]
    return Question(f"is the {a.color} {a.shape} {rel} the {b.color} {b.shape}?",
                    "yes" if rel == true_rel else "no", qtype)


def questions(scenes: SequenceType[Scene], *, seed: int | np.random.Generator = 0,
              qtypes: SequenceType[str] | None = None) -> list[Question]:
    """One question per scene, its type drawn uniformly from the applicable ``qtypes``.

    Raises ``ValueError`` if none of ``qtypes`` applies to some scene (e.g. ``relation`` with one object).
    """
    check_instance("scenes", scenes, (list, tuple))
    allowed = QUESTION_TYPES if qtypes is None else check_subset("qtypes", qtypes, QUESTION_TYPES)
    rng = check_rng("seed", seed)
    out = []
    for s in scenes:
        possible = [t for t in _applicable(check_instance("scenes", s, Scene)) if t in allowed]
        if not possible:
            raise ValueError(f"none of qtypes {allowed} can be asked of a scene with {len(s)} object(s)")
        out.append(_ask(s, possible[rng.integers(len(possible))], rng))
    return out
