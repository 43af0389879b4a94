"""Editing images with a text-conditioned generator, and judging the edits (chapter 7).

SDEdit (Meng et al., 2022) noises an image part of the way and lets a generator finish it; text-to-image pipelines
finish it under a new prompt (:func:`mmutils.generation.sample_latents` with ``init`` and ``strength``). Inpainting
regenerates a masked region from a prompt, given the rest: the velocity network sees the latents with the region
blanked and the mask as extra input channels (:func:`inpaint_context`; Stable Diffusion's inpainting model blanks the
pixels and encodes them, here the latents are blanked directly), it works on a fixed window around the region
(:func:`crop_origins`, :func:`crop_grid`, :func:`paste_grid`; ``padding_mask_crop`` in ``diffusers``' inpainting
pipelines also crops, and scales the crop up), and the known pixels are put back exactly at the end
(:func:`merge_known`, which ``diffusers`` does only with ``padding_mask_crop``). :func:`object_holes` draws the mask
over an object, and :func:`edit_scores` judges an edit from the scenes an oracle reads: did the asked change happen
(success), and did everything else stay (preservation)?
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .checks import check_float, check_instance, check_int, check_tensor
from .world import BACKGROUND_GREY, Obj, Scene, render

__all__ = ["crop_grid", "crop_origins", "edit_scores", "inpaint_context", "merge_known", "object_holes",
           "paste_grid"]


def _check_objects(objects) -> list[Obj]:
    check_instance("objects", objects, (list, tuple))
    for o in objects:
        check_instance("objects[i]", o, Obj)
    return list(objects)


def crop_origins(objects: Sequence[Obj] | torch.Tensor, grid: int, crop: int) -> list[tuple[int, int]]:
    """The top-left cell (x, y) of a ``crop`` x ``crop`` window of a ``grid`` x ``grid`` map centred on each
    object (its centre at ``grid * (o.x, o.y)`` in cells), moved inside the map where it would stick out.
    ``objects``: :class:`~mmutils.world.Obj` s, or their centres (n, 2) as (x, y) in [0, 1] (for example
    found in generated images by :func:`mmutils.animation.object_centres`)."""
    if isinstance(objects, torch.Tensor):
        check_tensor("objects", objects, 2, size={1: 2}, dtype="float")
        if not torch.isfinite(objects).all():
            raise ValueError("objects must hold finite centres (x, y); a NaN centre means no object was found")
        centres = [(float(x), float(y)) for x, y in objects.tolist()]
    else:
        centres = [(o.x, o.y) for o in _check_objects(objects)]
    grid = check_int("grid", grid, min=1)
    crop = check_int("crop", crop, min=1, max=grid)

    def start(v: float) -> int:
        return min(max(math.floor(grid * v - crop / 2 + 0.5), 0), grid - crop)  # halves round up

    return [(start(x), start(y)) for x, y in centres]


def _check_origins(origins, n: int, crop: int, height: int, width: int) -> list[tuple[int, int]]:
    check_instance("origins", origins, (list, tuple))
    if len(origins) != n:
        raise ValueError(f"origins must give one (x, y) per row ({n}), got {len(origins)}")
    for x, y in origins:
        if not (isinstance(x, int) and isinstance(y, int)):
            raise TypeError(f"origins must hold integer cells (x, y), got {(x, y)}")
        if not (0 <= x <= width - crop and 0 <= y <= height - crop):
            raise ValueError(f"origins must keep the {crop}x{crop} window inside the {height}x{width} grid, "
                             f"got {(x, y)}")
    return list(origins)


def crop_grid(z: torch.Tensor, origins: Sequence[tuple[int, int]], crop: int) -> torch.Tensor:
    """The ``crop`` x ``crop`` windows of ``z`` (n, C, h, w) at ``origins`` (one (x, y) per row): (n, C, crop, crop)."""
    check_tensor("z", z, 4)
    crop = check_int("crop", crop, min=1, max=min(z.shape[2:]))
    origins = _check_origins(origins, len(z), crop, *z.shape[2:])
    return torch.stack([row[:, y:y + crop, x:x + crop] for row, (x, y) in zip(z, origins)])


def paste_grid(z: torch.Tensor, patches: torch.Tensor, origins: Sequence[tuple[int, int]]) -> torch.Tensor:
    """A copy of ``z`` (n, C, h, w) with ``patches`` (n, C, k, k) written back at ``origins``: the inverse of
    :func:`crop_grid` (cells outside the windows keep their values)."""
    check_tensor("z", z, 4)
    check_tensor("patches", patches, 4, size={0: len(z), 1: z.shape[1]})
    k = patches.shape[2]
    origins = _check_origins(origins, len(z), k, *z.shape[2:])
    out = z.clone()
    for row, patch, (x, y) in zip(out, patches, origins):
        row[:, y:y + k, x:x + k] = patch
    return out


def object_holes(objects: Sequence[Obj], grid: int, *, margin: float = 0.5, cell: int = 2,
                 origins: Sequence[tuple[int, int]] | None = None, crop: int | None = None) -> torch.Tensor:
    """Masks (n, 1, g, g) over each object: the region an inpainting edit regenerates, as a user would circle it.

    Each object is rendered alone at ``grid * cell`` pixels (so a cell is ``cell`` x ``cell`` pixels, the
    autoencoder's patch); the disk around its centre that holds every one of its pixels, grown by ``margin``
    cells, is drawn at pixel level, and a cell is in the hole if any of its pixels is in the disk. So no pixel of
    the object is left outside, whatever its shape (a square's corners stick out of the disk of its nominal
    radius). On the whole ``grid`` x ``grid`` map (``g = grid``), or, with ``origins`` and ``crop``, on the
    windows of :func:`crop_origins` (``g = crop``).
    """
    objects = _check_objects(objects)
    grid = check_int("grid", grid, min=1)
    margin = check_float("margin", margin, min=0.0)
    cell = check_int("cell", cell, min=1)
    if (origins is None) != (crop is None):
        raise ValueError("origins and crop go together: give both or neither")
    side, size = grid if crop is None else crop, grid * cell
    if size < 16:
        raise ValueError(f"grid * cell must be at least 16 pixels (the renderer's smallest image), got {size}")
    if not objects:
        return torch.zeros(0, 1, side, side)
    images = torch.from_numpy(render([Scene((o,)) for o in objects], size=size)).int()  # (n, S, S, 3)
    pixels = (images - BACKGROUND_GREY).abs().amax(-1) > 0  # (n, S, S): the object's pixels
    centres = torch.arange(size) + 0.5
    yy, xx = torch.meshgrid(centres, centres, indexing="ij")  # pixel centres
    at = torch.tensor([[o.x * size, o.y * size] for o in objects])  # (n, 2): object centres, in pixels
    distance = ((xx - at[:, 0, None, None]) ** 2 + (yy - at[:, 1, None, None]) ** 2).sqrt()  # (n, S, S)
    radius = torch.where(pixels, distance, 0.0).amax((1, 2)) + margin * cell  # (n,)
    disks = (distance <= radius[:, None, None]).float()[:, None]  # (n, 1, S, S)
    holes = F.max_pool2d(disks, cell)  # (n, 1, grid, grid): cells with any pixel in the disk
    return holes if crop is None else crop_grid(holes, origins, crop)


def inpaint_context(latents: torch.Tensor, holes: torch.Tensor) -> torch.Tensor:
    """What an inpainting model sees besides its noisy input: the latents with the hole blanked, and the hole.

    ``latents`` (n, C, h, w), ``holes`` (n, 1, h, w) with 1 where the model must draw -> (n, C + 1, h, w). A hole
    of all ones blanks everything: the model then generates from the prompt alone.
    """
    check_tensor("latents", latents, 4, dtype="float")
    check_tensor("holes", holes, 4, size={0: len(latents), 1: 1, 2: latents.shape[2], 3: latents.shape[3]})
    return torch.cat([latents * (1 - holes), holes], dim=1)


def merge_known(generated: torch.Tensor, original: torch.Tensor, holes: torch.Tensor) -> torch.Tensor:
    """``generated`` inside the holes and ``original`` everywhere else, exactly: images (n, C, H, W), holes
    (n, 1, h, w) with ``H``, ``W`` whole multiples of ``h``, ``w`` (a latent-grid hole covers its cells' pixels)."""
    check_tensor("generated", generated, 4, dtype="float")
    if check_tensor("original", original, 4, dtype="float").shape != generated.shape:
        raise ValueError(f"original must have the shape of generated {tuple(generated.shape)}, "
                         f"got {tuple(original.shape)}")
    check_tensor("holes", holes, 4, size={0: len(generated), 1: 1})
    (h, w), (big_h, big_w) = holes.shape[2:], generated.shape[2:]
    if big_h % h or big_w % w or big_h // h != big_w // w:
        raise ValueError(f"holes ({h}x{w}) must divide the images ({big_h}x{big_w}) by one whole factor")
    inside = F.interpolate(holes.float(), scale_factor=big_h // h, mode="nearest").bool()  # (n, 1, H, W)
    return torch.where(inside, generated, original)


_ATTRIBUTES = ("shape", "color", "size")


def edit_scores(read: Sequence[Scene], sources: Sequence[Scene], targets: Sequence[Scene], *,
                tolerance: float = 0.1) -> dict[str, torch.Tensor]:
    """How well each edit did, from the scenes an oracle ``read`` in the edited images.

    ``sources``: the scenes before the edit; ``targets``: the same objects, in the same order, with what the edit
    asked for changed. Each target object is matched to the read object whose centre is nearest; it counts as
    found if that centre is within ``tolerance`` (a fraction of the image side) on both axes. Per image (floats,
    (n,) each): ``"success"``, every edited object found with the asked values; ``"preserved"``, everything else
    as before: the edited objects' other attributes, every unedited object, every position, and no object
    more or less; ``"both"``, the two together (the image shows exactly the target scene). Matching is by
    nearest centre, not one to one: keep ``tolerance`` below half the smallest distance between objects
    (sampled scenes keep them at least 0.3 apart).
    """
    for name, scenes in (("read", read), ("sources", sources), ("targets", targets)):
        check_instance(name, scenes, (list, tuple))
        if len(scenes) != len(read):
            raise ValueError(f"{name} must have one scene per read scene ({len(read)}), got {len(scenes)}")
        for scene in scenes:
            check_instance(f"{name}[i]", scene, Scene)
    tolerance = check_float("tolerance", tolerance, min=0.0)
    rows = {"success": [], "preserved": []}
    for seen, source, target in zip(read, sources, targets):
        if len(source) != len(target) or any(abs(a.x - b.x) > 1e-9 or abs(a.y - b.y) > 1e-9
                                             for a, b in zip(source.objects, target.objects)):
            raise ValueError("targets must hold the sources' objects, in order and in place, with attributes changed")
        edited = [k for k, (a, b) in enumerate(zip(source.objects, target.objects)) if a.desc != b.desc]
        if not edited:
            raise ValueError("each target must differ from its source in at least one attribute")
        success, preserved = True, len(seen) == len(target)
        for k, (before, want) in enumerate(zip(source.objects, target.objects)):
            got = min(seen.objects, key=lambda o: (o.x - want.x) ** 2 + (o.y - want.y) ** 2, default=None)
            found = got is not None and abs(got.x - want.x) < tolerance and abs(got.y - want.y) < tolerance
            changed = [a for a in _ATTRIBUTES if getattr(before, a) != getattr(want, a)]
            kept = [a for a in _ATTRIBUTES if a not in changed]
            if k in edited:
                success &= found and all(getattr(got, a) == getattr(want, a) for a in changed)
            preserved &= found and all(getattr(got, a) == getattr(want, a) for a in kept)
        rows["success"].append(success)
        rows["preserved"].append(preserved)
    out = {k: torch.tensor(v, dtype=torch.float32) for k, v in rows.items()}
    out["both"] = out["success"] * out["preserved"]
    return out
