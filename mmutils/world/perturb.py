"""Scene perturbations for hard negatives: two objects exchanging places, or one attribute changed."""
from __future__ import annotations

from dataclasses import replace

from ..checks import check_choice, check_instance, check_int
from .scenes import ATTRIBUTE_VALUES, RADIUS, Scene


def swap_positions(scene: Scene, i: int = 0, j: int = 1, *, keep_inside: bool = True) -> Scene:
    """The same :class:`Scene` with objects ``i`` and ``j`` exchanging their positions.

    The relation between the two is reversed while the set of objects stays the same (the ARO test of
    Yuksekgonul et al., 2023). With ``keep_inside`` an object is moved inwards just enough to stay
    whole (by :data:`RADIUS`); without it the centres are exchanged exactly.
    """
    check_instance("scene", scene, Scene)
    i = check_int("i", i, min=0, max=len(scene) - 1)
    j = check_int("j", j, min=0, max=len(scene) - 1)
    if i == j:
        raise ValueError(f"i and j must differ, got {i} and {j}")
    objs = list(scene.objects)
    a, b = objs[i], objs[j]
    if keep_inside:
        ra, rb = RADIUS[a.size], RADIUS[b.size]
        objs[i] = replace(a, x=min(max(b.x, ra), 1 - ra), y=min(max(b.y, ra), 1 - ra))
        objs[j] = replace(b, x=min(max(a.x, rb), 1 - rb), y=min(max(a.y, rb), 1 - rb))
    else:
        objs[i], objs[j] = replace(a, x=b.x, y=b.y), replace(b, x=a.x, y=a.y)
    return Scene(tuple(objs))


def with_attribute(scene: Scene, index: int, attribute: str, value: str) -> Scene:
    """The same :class:`Scene` with the ``attribute`` (shape, color or size) of object ``index`` set to ``value``.

    The object keeps its place; the result may repeat another object's (shape, color) pair.
    """
    check_instance("scene", scene, Scene)
    index = check_int("index", index, min=0, max=len(scene) - 1)
    check_choice("attribute", attribute, tuple(ATTRIBUTE_VALUES))
    check_choice("value", value, ATTRIBUTE_VALUES[attribute])
    objs = list(scene.objects)
    objs[index] = replace(objs[index], **{attribute: value})
    return Scene(tuple(objs))
