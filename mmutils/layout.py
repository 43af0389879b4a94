"""Two objects and a relation from a one-object generator: plan a layout, paint each object, compose (chapter 6).

A text-to-image model that reads its caption as one pooled vector cannot say which colour goes with which shape,
nor which object is on the left. LLM-grounded diffusion (Lian et al., 2024) splits the job: a planner turns the
prompt into a layout (a box and a short phrase per object), the generator draws each object from its own phrase
inside its box, and the objects' latents guide the first steps of the final image. Here each object is drawn
wherever the generator puts it and then moved: the planner is the world's own scene
sampler (:func:`plan_layouts`: it keeps objects apart as real scenes do, and keeps a layout only when the
prompt's relation holds), and :func:`paste_objects` moves each generated object's latent cells to its planned
place (:func:`object_cells` finds them) over a background.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .checks import check_int, check_rng, check_tensor, check_texts
from .data import object_mask, shift_cells
from .world import COLORS, SHAPES, SIZES, Obj, Scene, parse_caption, sample_scenes

__all__ = ["object_cells", "paste_objects", "plan_layouts"]


def _named_objects(prompt: str) -> tuple[list[tuple], str | None]:
    """The objects a prompt names (descriptors with ``None`` for what it leaves open), in the order of its
    relation (subject first), and the relation (``None`` for one object)."""
    facts = parse_caption(prompt)
    named = [f[1] for f in facts if f[0] == "exists"]
    relations = [f for f in facts if f[0] == "rel"]
    if len(named) == 1 and not relations:
        return named, None
    if len(named) == 2 and len(relations) == 1:
        _, subject, relation, reference = relations[0]
        return [subject, reference], relation
    raise ValueError(f"prompts must name one object, or two objects and one relation between them, got {prompt!r}")


def plan_layouts(prompts: Sequence[str], *, seed: int | np.random.Generator = 0, pool: int = 4000) -> list[Scene]:
    """A layout per prompt: a scene in which every fact of the prompt holds.

    Attributes the prompt names are kept, the others drawn at random (a shape and colour pair is not repeated
    within a scene). Positions come from a ``pool`` of scenes of the same number of objects drawn by
    :func:`~mmutils.world.sample_scenes` (so the objects keep the world's gaps for their sizes and their
    relation is clear): the first scene not used yet whose sizes are the layout's and whose relation is the
    prompt's, read in either order. Objects are listed subject first. Raises ``ValueError`` for a prompt outside the grammar
    or one that names more than two objects or more than one relation, or one shape and colour twice.
    """
    prompts = check_texts("prompts", prompts)
    pool = check_int("pool", pool, min=1)
    rng = check_rng("seed", seed)
    plans = [_named_objects(p) for p in prompts]
    candidates = {k: sample_scenes(pool, min_objects=k, max_objects=k, seed=rng) for k in (1, 2)}
    used = {1: set(), 2: set()}
    layouts = []
    for named, relation in plans:
        descs = []
        for shape, color, size in named:
            if shape and color and any((shape, color) == d[:2] for d in descs):
                raise ValueError(f"prompts must not name the same shape and colour twice (a scene holds each "
                                 f"pair once), got {prompts[len(layouts)]!r}")
            while True:  # fill what the prompt leaves open, without repeating a (shape, colour) pair
                pick = (shape or SHAPES[rng.integers(len(SHAPES))], color or COLORS[rng.integers(len(COLORS))],
                        size or SIZES[rng.integers(len(SIZES))])
                if all(pick[:2] != d[:2] for d in descs):
                    break
            descs.append(pick)
        place = _place(candidates[len(descs)], used[len(descs)], [d[2] for d in descs], relation)
        layouts.append(Scene(tuple(Obj(*d, o.x, o.y) for d, o in zip(descs, place))))
    return layouts


def _place(scenes: list[Scene], used: set, sizes: list[str], relation: str | None) -> tuple[Obj, ...]:
    """The objects of the first scene of ``scenes`` not in ``used`` whose sizes are ``sizes`` and, for two objects,
    whose relation (first to second, in either order) is ``relation``; its index joins ``used``."""
    orders = [(0,)] if relation is None else [(0, 1), (1, 0)]
    for k, scene in enumerate(scenes):
        if k in used:
            continue
        for order in orders:
            objs = tuple(scene.objects[i] for i in order)
            if [o.size for o in objs] == sizes and (relation is None or scene.relation(*order) == relation):
                used.add(k)
                return objs
    raise ValueError(f"the pool holds no more layouts of sizes {sizes} with the relation {relation!r}; "
                     "raise pool")


def object_cells(images: torch.Tensor, cell: int, *, threshold: float = 0.15) -> torch.Tensor:
    """The latent cells that hold an object: images (n, 3, H, W) in [0, 1] -> a float mask (n, 1, H / cell,
    W / cell), 1.0 where some pixel of the ``cell`` x ``cell`` block differs from the background grey by more than
    ``threshold`` (:func:`mmutils.data.object_mask`)."""
    check_tensor("images", images, 4, size={1: 3}, dtype="float")
    cell = check_int("cell", cell, min=1)
    if images.shape[2] % cell or images.shape[3] % cell:
        raise ValueError(f"cell must divide the images' height and width {tuple(images.shape[2:])}, got {cell}")
    return F.max_pool2d(object_mask(images, threshold), cell)


def paste_objects(background: torch.Tensor, latents: torch.Tensor, cells: torch.Tensor, shifts: torch.Tensor,
                  group: torch.Tensor) -> torch.Tensor:
    """Scenes composed in the latent grid from objects generated one at a time.

    ``background`` (n, C, h, w): the latents each scene starts from; ``latents`` (m, C, h, w): the generated
    objects; ``cells`` (m, 1, h, w): where each object is (:func:`object_cells`); ``shifts`` (m, 2) integers:
    how many cells (x, y) to move each object (right and down); ``group`` (m,) integers: the scene of each
    object. Objects are pasted in order, each over what is already there; cells moved past an edge are
    dropped. Returns (n, C, h, w).
    """
    check_tensor("background", background, 4, dtype="float")
    n, c, h, w = background.shape
    check_tensor("latents", latents, 4, size={1: c, 2: h, 3: w}, dtype="float")
    m = len(latents)
    check_tensor("cells", cells, 4, size={0: m, 1: 1, 2: h, 3: w})
    check_tensor("shifts", shifts, 2, size={0: m, 1: 2}, dtype="int")
    check_tensor("group", group, 1, size={0: m}, dtype="int")
    if m and (group.min() < 0 or group.max() >= n):
        raise ValueError(f"group must name scenes 0 to {n - 1}, got {group.min().item()} to {group.max().item()}")
    out = background.clone()
    for z, where, (dx, dy), g in zip(latents, cells.bool(), shifts.tolist(), group.tolist()):
        moved, inside = shift_cells(z, dx, dy), shift_cells(where, dx, dy)  # (C, h, w), (1, h, w)
        out[g] = torch.where(inside, moved, out[g])
    return out

