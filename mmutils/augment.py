"""Batched image augmentations on tensors: the random views of contrastive learning (MoCo v2, SimCLR).

* :func:`augment` – MoCo v2-style views (crop, color jitter, grayscale) with per-image parameters, batched.
* :func:`augment_v2` – the same pipeline from ``torchvision.transforms.v2``, one parameter draw per sub-batch.
* :func:`hue_rotation` – per-image 3x3 matrices that turn hue about the gray axis of RGB space.

Image-text augmentations that keep a pair true (chapter 13): :func:`flip_pairs` with :func:`mirror_text` /
:func:`swap_token_ids` / :func:`mirror_scene` (a flip swaps left and right), :func:`safe_hue_angle` and
:func:`hue_jitter` (a hue shift that renames no color), :func:`covering_boxes`, :func:`crop_boxes` and
:func:`crop_resize` (crops that cut out no object), :func:`paraphrase` (text-side, from the grammar) and
:func:`mixgen` (MixGen's image mixup plus text concatenation, Hao et al., 2023).
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_float, check_instance, check_int, check_mask, check_rng, check_tensor
from .world.scenes import RADIUS, Scene

__all__ = ["augment", "augment_v2", "hue_rotation", "mirror_text", "mirror_scene", "swap_token_ids", "flip_pairs",
           "safe_hue_angle", "hue_jitter", "covering_boxes", "crop_boxes", "crop_resize", "mixgen", "paraphrase"]


def _view_args(images, crop_scale, jitter, hue, jitter_p, grayscale_p, permute_p=0.0):
    """The checked arguments shared by :func:`augment` and :func:`augment_v2`, plus whether color jitter applies."""
    check_tensor("images", images, 4, dtype="float")
    if len(check_instance("crop_scale", crop_scale, (tuple, list))) != 2 or not 0 < crop_scale[0] <= crop_scale[1] <= 1:
        raise ValueError(f"crop_scale must be a pair (low, high) with 0 < low <= high <= 1, got {crop_scale!r}")
    jitter = check_float("jitter", jitter, min=0.0, max=1.0)
    hue = check_float("hue", hue, min=0.0, max=0.5)
    jitter_p = check_float("jitter_p", jitter_p, min=0.0, max=1.0)
    grayscale_p = check_float("grayscale_p", grayscale_p, min=0.0, max=1.0)
    permute_p = check_float("permute_p", permute_p, min=0.0, max=1.0)
    color = (jitter > 0 or hue > 0) and jitter_p > 0
    if (color or grayscale_p > 0 or permute_p > 0) and images.shape[1] != 3:
        raise ValueError(f"images must have 3 channels for color jitter / grayscale, got shape {tuple(images.shape)}; "
                         "pass jitter=0, hue=0, grayscale_p=0 for other images")
    return (float(crop_scale[0]), float(crop_scale[1])), jitter, hue, jitter_p, grayscale_p, permute_p, color


def _gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma of RGB images (B, 3, H, W) -> (B, 1, H, W), the weights torchvision uses."""
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def hue_rotation(angles: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (B, 3, 3) about the gray axis (1, 1, 1) / sqrt(3) of RGB space, by ``angles`` (B,) radians.

    Rotating a color about the gray axis keeps its brightness (the mean of R, G, B)
    and its distance to gray, and turns its hue: by 2 pi / 3 it maps red to green,
    green to blue, blue to red. This is the ``hue-rotate`` filter of SVG/CSS (up to
    its luma weighting), a cheap per-image stand-in for a hue shift in HSV space.
    """
    check_tensor("angles", angles, 1, dtype="float")
    c, s = torch.cos(angles), torch.sin(angles)  # (B,)
    a, b = (1 - c) / 3, s / math.sqrt(3)
    diag, plus, minus = c + a, a + b, a - b  # rows: R' = diag R + minus G + plus B, cyclically
    return torch.stack([torch.stack([diag, minus, plus], -1),
                        torch.stack([plus, diag, minus], -1),
                        torch.stack([minus, plus, diag], -1)], -2)  # (B, 3, 3)


def augment(images: torch.Tensor, *, crop_scale: tuple[float, float] = (0.3, 1.0), jitter: float = 0.4,
            hue: float = 0.5, jitter_p: float = 0.8, grayscale_p: float = 0.5, size: int | None = None,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """MoCo v2-style augmentation with *per-image* random parameters, in a few batched tensor operations.

    ``images``: float (B, C, H, W) in [0, 1] on any device; returns float (B, C, size, size)
    (``size`` defaults to H x W) on the same device. Every image draws its own:

    1. **random resized crop** (as ``torchvision.transforms.v2.RandomResizedCrop``): a box of ``crop_scale``
       of the area and aspect ratio in [3/4, 4/3], resampled bilinearly by ``F.affine_grid`` + ``F.grid_sample``;
    2. with probability ``jitter_p``, **color jitter**: brightness, contrast and saturation factors in
       [1 - jitter, 1 + jitter] (torchvision's formulas) and a hue rotation by up to ``hue`` of a full turn
       (:func:`hue_rotation`);
    3. with probability ``grayscale_p``, **grayscale** (the luma in all channels).

    MoCo v2 itself uses a hue jitter of 0.1 and grayscale with probability 0.2; the defaults here are stronger.
    Steps 2 and 3 need C = 3 (skip them with ``jitter = hue = grayscale_p = 0``). Unlike a ``v2`` transform,
    which draws one set of parameters per call (:func:`augment_v2`), the parameters are tensors of length B.
    Randomness comes from ``generator`` or torch's global generator, drawn on the CPU so that a seed gives the
    same views on every device.
    """
    (low, high), jitter, hue, jitter_p, grayscale_p, _, color = _view_args(images, crop_scale, jitter, hue,
                                                                            jitter_p, grayscale_p)
    if generator is not None:
        check_instance("generator", generator, torch.Generator)
    b, c, h, w = images.shape
    out_hw = (h, w) if size is None else (check_int("size", size, min=1),) * 2
    r = torch.rand(b, 10, generator=generator).to(images.device, images.dtype)  # (B, 10) uniform draws

    # 1. Random resized crop: half-width and half-height in [-1, 1] coordinates, a centre that keeps the box inside.
    area = low + (high - low) * r[:, 0]
    log_ratio = math.log(3 / 4) + math.log(16 / 9) * r[:, 1]  # log aspect ratio, uniform in [log 3/4, log 4/3]
    half_w = (area * log_ratio.exp()).sqrt().clamp(max=1.0)  # (B,)
    half_h = (area / log_ratio.exp()).sqrt().clamp(max=1.0)
    theta = torch.zeros(b, 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0], theta[:, 1, 1] = half_w, half_h
    theta[:, 0, 2] = (2 * r[:, 2] - 1) * (1 - half_w)  # centre x
    theta[:, 1, 2] = (2 * r[:, 3] - 1) * (1 - half_h)  # centre y
    grid = F.affine_grid(theta, [b, c, *out_hw], align_corners=False)  # (B, size, size, 2)
    x = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)

    # 2. Color jitter, per image, applied to a random subset (mask `on`).
    if color:
        factor = 1 + jitter * (2 * r[:, 4:7] - 1)  # (B, 3): brightness, contrast, saturation
        y = x * factor[:, 0, None, None, None]
        mean = _gray(y).mean(dim=(2, 3), keepdim=True)  # (B, 1, 1, 1)
        y = factor[:, 1, None, None, None] * y + (1 - factor[:, 1, None, None, None]) * mean
        y = factor[:, 2, None, None, None] * y + (1 - factor[:, 2, None, None, None]) * _gray(y)
        if hue > 0:
            rot = hue_rotation(2 * math.pi * hue * (2 * r[:, 7] - 1))  # (B, 3, 3)
            y = torch.einsum("bij,bjhw->bihw", rot, y)
        on = (r[:, 8] < jitter_p)[:, None, None, None]
        x = torch.where(on, y.clamp(0.0, 1.0), x)
    # 3. Random grayscale.
    if grayscale_p > 0:
        x = torch.where((r[:, 9] < grayscale_p)[:, None, None, None], _gray(x).expand_as(x), x)
    return x.clamp(0.0, 1.0)


def augment_v2(images: torch.Tensor, *, crop_scale: tuple[float, float] = (0.3, 1.0), jitter: float = 0.4,
               hue: float = 0.5, jitter_p: float = 0.8, grayscale_p: float = 0.5, permute_p: float = 0.0,
               flip: bool = False, groups: int = 8, size: int | None = None) -> torch.Tensor:
    """The same MoCo v2-style pipeline built from ``torchvision.transforms.v2``, applied to ``groups`` sub-batches.

    ``images``: float (B, C, H, W) in [0, 1], on any device; returns a new tensor (B, C, size, size) (``size``
    defaults to H x W) on the same device. The pipeline is ``RandomResizedCrop(scale=crop_scale)`` ->
    ``ColorJitter(jitter, jitter, jitter, hue)`` with probability ``jitter_p`` (skipped when ``jitter`` and ``hue``
    are 0) -> optional ``RandomChannelPermutation`` (probability ``permute_p``) -> ``RandomGrayscale(grayscale_p)``
    -> optional ``RandomHorizontalFlip`` (off by default: a flip swaps left and right). Color steps need C = 3.

    A ``v2`` transform draws *one* set of random parameters per call, so the batch is split into ``groups``
    sub-batches, each with its own draw (from torch's global generator). :func:`augment` draws per image instead,
    and is several times faster on a CPU.
    """
    from torchvision.transforms import v2

    crop_scale, jitter, hue, jitter_p, grayscale_p, permute_p, color = _view_args(
        images, crop_scale, jitter, hue, jitter_p, grayscale_p, permute_p)
    groups = check_int("groups", groups, min=1)
    out_size = tuple(images.shape[-2:]) if size is None else (check_int("size", size, min=1),) * 2
    steps: list[nn.Module] = [v2.RandomResizedCrop(out_size, scale=crop_scale, antialias=True)]
    if color:
        steps.append(v2.RandomApply([v2.ColorJitter(jitter, jitter, jitter, hue)], p=jitter_p))
    if permute_p > 0:
        steps.append(v2.RandomApply([v2.RandomChannelPermutation()], p=permute_p))
    if grayscale_p > 0:
        steps.append(v2.RandomGrayscale(p=grayscale_p))
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    pipeline = v2.Compose(steps)
    chunks = images.chunk(min(groups, images.shape[0]))
    return torch.cat([pipeline(c) for c in chunks]).clamp_(0.0, 1.0)


# -- Augmentations that keep an image and its text consistent (chapter 13) ---------------------------------------
# A horizontal flip swaps left and right, a hue rotation can turn one named color into another, a crop can cut out
# a mentioned object: each image transform needs a text transform (or a limit) that keeps the pair true.

_LEFT_RIGHT = re.compile(r"\b(left|right)\b")


def mirror_text(text: str) -> str:
    """The text of the mirrored image: every "left" becomes "right" and back; nothing else changes.

    "a red circle to the left of a blue square" -> "a red circle to the right of a blue square". A horizontal
    flip moves nothing up or down, so "above" and "below" stay (unlike :func:`mmutils.world.swap_relation`, which
    reverses every relation). An involution: ``mirror_text(mirror_text(t)) == t``.
    """
    check_instance("text", text, str)
    return _LEFT_RIGHT.sub(lambda m: "right" if m.group(1) == "left" else "left", text)


def mirror_scene(scene: Scene) -> Scene:
    """The :class:`~mmutils.world.Scene` seen in a mirror: every object at ``x -> 1 - x``, nothing else changed.

    Every ShapesWorld shape is symmetric about its vertical axis, so ``render(mirror_scene(s))`` is the rendered
    image flipped left to right, and the facts of the mirrored scene are those of ``s`` with left and right swapped.
    """
    check_instance("scene", scene, Scene)
    return Scene(tuple(replace(o, x=round(1.0 - o.x, 4)) for o in scene.objects))


def _check_bool(name: str, x, batch: int) -> None:
    """A bool row selector (B,)."""
    check_tensor(name, x, 1, size={0: batch})
    if x.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor (one entry per row), got {x.dtype}")


def swap_token_ids(ids: torch.Tensor, a: int, b: int, where: torch.Tensor | None = None) -> torch.Tensor:
    """Token ids (B, L) with token ``a`` and token ``b`` exchanged, in the rows where ``where`` (B,) bool is true.

    The text side of a flip on tensors: with ``a, b`` the ids of "left" and "right" (single tokens of a word-level
    tokenizer, in every phrasing of the grammar) it is :func:`mirror_text` on a batch, without decoding. An
    involution. ``where=None`` swaps in every row.
    """
    check_tensor("ids", ids, 2, dtype="int")
    a, b = check_int("a", a, min=0), check_int("b", b, min=0)
    swapped = torch.where(ids == a, b, torch.where(ids == b, a, ids))  # (B, L)
    if where is None:
        return swapped
    _check_bool("where", where, ids.shape[0])
    return torch.where(where[:, None], swapped, ids)


def flip_pairs(images: torch.Tensor, ids: torch.Tensor, flip: torch.Tensor, *, left_id: int, right_id: int,
               consistent: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip the images (B, C, H, W) of the rows where ``flip`` (B,) bool is true, and (if ``consistent``) their text.

    The image side is ``torchvision.transforms.v2.functional.horizontal_flip`` on the whole batch, kept where
    ``flip`` is true; the text side swaps ``left_id`` and ``right_id`` in those rows (:func:`swap_token_ids`).
    With ``consistent=False`` the text is kept: the *naive* flip, which makes every left/right statement about a
    flipped image false. Returns ``(images, ids)``, new tensors; flipping twice gives the inputs back.
    """
    from torchvision.transforms.v2 import functional as TF

    check_tensor("images", images, 4, dtype="float")
    check_tensor("ids", ids, 2, size={0: images.shape[0]}, dtype="int")
    _check_bool("flip", flip, images.shape[0])
    out = torch.where(flip[:, None, None, None], TF.horizontal_flip(images), images)  # (B, C, H, W)
    return out, (swap_token_ids(ids, left_id, right_id, flip) if consistent else ids.clone())


def _nearest_palette(rgb: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """Index of the nearest palette color (K, 3) of each color (..., 3), by Euclidean distance in RGB."""
    return torch.cdist(rgb.reshape(-1, 3), palette).argmin(-1).reshape(rgb.shape[:-1])


def safe_hue_angle(palette: torch.Tensor, *, resolution: float = 0.25) -> float:
    """The largest hue rotation (in degrees) that changes no palette color into another named color.

    ``palette``: (K, 3) RGB colors in [0, 1] (e.g. :data:`mmutils.world.COLOR_RGB` / 255). Every angle from 0 up,
    in steps of ``resolution`` degrees, in both directions, is applied with :func:`hue_rotation`; the answer is the
    last angle below the first one at which some rotated color lies nearer (in RGB) to another palette color than to
    its own. A hue jitter within it cannot make "red" false.
    """
    check_tensor("palette", palette, 2, size={1: 3}, dtype="float")
    if palette.shape[0] < 2:
        raise ValueError(f"palette must hold at least 2 colors, got {palette.shape[0]}")
    resolution = check_float("resolution", resolution, min=1e-3, max=10.0)
    own = torch.arange(palette.shape[0])
    steps = torch.arange(1, int(180 / resolution) + 1, dtype=palette.dtype) * resolution  # (S,) degrees
    for sign in (1.0, -1.0):
        rot = hue_rotation(sign * torch.deg2rad(steps))  # (S, 3, 3)
        moved = torch.einsum("sij,kj->ski", rot, palette).clamp(0.0, 1.0)  # (S, K, 3)
        changed = (_nearest_palette(moved, palette) != own).any(-1)  # (S,)
        first = int(changed.float().argmax()) if changed.any() else len(steps)
        steps = steps[:first]
    return float(steps[-1]) if len(steps) else 0.0


def hue_jitter(images: torch.Tensor, max_degrees: float, *, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate the hue of every image by its own angle, uniform in [-max_degrees, max_degrees].

    ``images``: (B, 3, H, W) in [0, 1]; returns ``(images, angles)``: the jittered images (B, 3, H, W), clamped to
    [0, 1], and the angles (B,) in degrees. Gray (the background) stays gray. One batched product with the
    matrices of :func:`hue_rotation`; the angles come from ``generator`` (CPU), or torch's global generator.
    """
    check_tensor("images", images, 4, size={1: 3}, dtype="float")
    max_degrees = check_float("max_degrees", max_degrees, min=0.0, max=180.0)
    u = torch.rand(images.shape[0], generator=generator).to(images.device, images.dtype)  # (B,)
    angles = (2 * u - 1) * max_degrees
    rot = hue_rotation(torch.deg2rad(angles))  # (B, 3, 3)
    return torch.einsum("bij,bjhw->bihw", rot, images).clamp(0.0, 1.0), angles


def covering_boxes(scenes: Sequence[Scene]) -> torch.Tensor:
    """The box (x0, y0, x1, y1) in unit coordinates that covers every object's disc, per scene: (n, 4).

    Each object spans its centre plus or minus its :data:`~mmutils.world.RADIUS`; a crop that contains this box
    cuts out no object, so every statement about the scene stays true.
    """
    check_instance("scenes", scenes, (list, tuple))
    out = []
    for i, s in enumerate(scenes):
        check_instance(f"scenes[{i}]", s, Scene)
        if not len(s):
            raise ValueError(f"scenes[{i}] has no object")
        r = [RADIUS[o.size] for o in s.objects]
        out.append([min(o.x - q for o, q in zip(s.objects, r)), min(o.y - q for o, q in zip(s.objects, r)),
                    max(o.x + q for o, q in zip(s.objects, r)), max(o.y + q for o, q in zip(s.objects, r))])
    return torch.tensor(out, dtype=torch.float32).clamp(0.0, 1.0)


def crop_boxes(n: int, *, min_side: float = 0.6, keep: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Random square crop windows (n, 4) as (x0, y0, x1, y1) in unit coordinates, one per image.

    The side is uniform in [``min_side``, 1]. Without ``keep`` the window lies anywhere inside the image (the
    *naive* crop, which may cut an object out). With ``keep`` (n, 4), boxes that must stay whole (e.g.
    :func:`covering_boxes`), the side is at least the larger side of that box and the window is placed uniformly
    among the positions that contain it. Squares keep the aspect ratio, so a resized crop changes no relation.
    """
    n = check_int("n", n, min=1)
    min_side = check_float("min_side", min_side, min=0.05, max=1.0)
    u = torch.rand(n, 3, generator=generator)  # (n, 3)
    side = min_side + (1 - min_side) * u[:, 0]  # (n,)
    if keep is None:
        lo_x = lo_y = torch.zeros(n)
        hi_x = hi_y = 1 - side
    else:
        check_tensor("keep", keep, 2, size={0: n, 1: 4}, dtype="float")
        keep = keep.cpu()
        side = torch.maximum(side, (keep[:, 2:] - keep[:, :2]).amax(1))
        lo_x, lo_y = (keep[:, 2] - side).clamp(min=0), (keep[:, 3] - side).clamp(min=0)  # window may start here
        hi_x, hi_y = torch.minimum(keep[:, 0], 1 - side), torch.minimum(keep[:, 1], 1 - side)  # ... to here
    x0 = lo_x + (hi_x - lo_x) * u[:, 1]
    y0 = lo_y + (hi_y - lo_y) * u[:, 2]
    return torch.stack([x0, y0, x0 + side, y0 + side], dim=1)  # (n, 4)


def crop_resize(images: torch.Tensor, boxes: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """Crop every image (B, C, H, W) to its own box (B, 4) (x0, y0, x1, y1 in [0, 1]) and resize it bilinearly.

    One ``F.affine_grid`` + ``F.grid_sample`` for the whole batch (``align_corners=False``): output pixel ``i``
    samples the box at ``x0 + (i + 0.5) / size * (x1 - x0)``, as ``torchvision.ops.roi_align(aligned=True,
    sampling_ratio=1)`` does away from the image border. Returns (B, C, size, size),
    ``size`` defaulting to H (square images).
    """
    check_tensor("images", images, 4, dtype="float")
    check_tensor("boxes", boxes, 2, size={0: images.shape[0], 1: 4}, dtype="float")
    b, c, h, w = images.shape
    size = h if size is None else check_int("size", size, min=1)
    boxes = boxes.to(images.device, images.dtype)
    theta = torch.zeros(b, 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0] = boxes[:, 2] - boxes[:, 0]  # half-width in [-1, 1] coordinates = the box's width in [0, 1]
    theta[:, 1, 1] = boxes[:, 3] - boxes[:, 1]
    theta[:, 0, 2] = boxes[:, 0] + boxes[:, 2] - 1  # centre in [-1, 1] coordinates
    theta[:, 1, 2] = boxes[:, 1] + boxes[:, 3] - 1
    grid = F.affine_grid(theta, [b, c, size, size], align_corners=False)  # (B, size, size, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def mixgen(images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, *, partner: torch.Tensor,
           lam: float = 0.5, bos_id: int = 2, eos_id: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MixGen (Hao et al., 2023): a new image-text pair from two, by image mixup and text concatenation.

    Row ``i`` becomes the image ``lam * images[i] + (1 - lam) * images[partner[i]]`` and the text of row ``i``
    followed by the text of row ``partner[i]``: "[BOS] a red circle [EOS]" + "[BOS] a blue star [EOS]" ->
    "[BOS] a red circle a blue star [EOS]" (the inner [EOS] and [BOS] dropped, padding moved to the end, all on
    tensors). Both images stay visible in the blend and both texts stay true of it, so the new pair is a positive
    pair for matching. ``images`` (B, C, H, W), ``ids`` and ``mask`` (B, L), ``partner`` (B,) int (e.g. a
    permutation); returns ``(images (B, C, H, W), ids (B, 2L), mask (B, 2L))``. The paper applies it to a batch
    with ``lam = 0.5``.
    """
    check_tensor("images", images, 4, dtype="float")
    b = images.shape[0]
    check_tensor("ids", ids, 2, size={0: b}, dtype="int")
    mask = check_mask("mask", mask, ids)
    check_tensor("partner", partner, 1, size={0: b}, dtype="int")
    if partner.numel() and (partner.min() < 0 or partner.max() >= b):
        raise ValueError(f"partner must index the batch (0..{b - 1}), got values in "
                         f"[{int(partner.min())}, {int(partner.max())}]")
    lam = check_float("lam", lam, min=0.0, max=1.0)
    mixed = lam * images + (1 - lam) * images[partner]  # (B, C, H, W)
    keep_a = mask & (ids != eos_id)  # the first text without its [EOS]
    keep_b = mask[partner] & (ids[partner] != bos_id)  # the second without its [BOS]
    cat_ids = torch.cat([ids, ids[partner]], dim=1)  # (B, 2L), padding in the middle
    cat_keep = torch.cat([keep_a, keep_b], dim=1)
    order = torch.sort((~cat_keep).to(torch.int8), dim=1, stable=True).indices  # kept tokens first, in order
    out_mask = cat_keep.gather(1, order)
    out_ids = torch.where(out_mask, cat_ids.gather(1, order), torch.zeros_like(cat_ids))  # padding id 0
    return mixed, out_ids, out_mask.long()


_SYNONYMS = [("left of", "to the left of"), ("right of", "to the right of"), ("above", "over"),
             ("below", "under", "beneath"), ("small", "little"), ("large", "big")]
_SYNONYM_OF = {p: group for group in _SYNONYMS for p in group}
_SYNONYM_PATTERN = re.compile(r"\b(" + "|".join(sorted(_SYNONYM_OF, key=len, reverse=True)) + r")\b")
# Words a sentence can lose without changing what it states (the parser ignores them).
_OPTIONAL = [(re.compile(r"^(there is|the image shows) "), ""), (re.compile(r" are there\?$"), "?")]


def paraphrase(text: str, rng: np.random.Generator | int | None = None, *, drop_p: float = 0.5) -> str:
    """Text-side augmentation from the ShapesWorld grammar: the same statement in other words.

    Every synonym phrase is redrawn uniformly among its synonyms ("left of" / "to the left of", "above" / "over",
    "below" / "under" / "beneath", "small" / "little", "large" / "big"), and with probability
    ``drop_p`` an optional opening or ending is dropped ("there is ...", "the image shows ...", "... are there?").
    The facts (:func:`mmutils.world.parse_caption`) and the answer to a question do not change (EDA's synonym
    replacement, Wei and Zou, 2019, restricted to true synonyms of the grammar).
    """
    check_instance("text", text, str)
    rng = check_rng("rng", rng)
    drop_p = check_float("drop_p", drop_p, min=0.0, max=1.0)
    out = _SYNONYM_PATTERN.sub(lambda m: (g := _SYNONYM_OF[m.group(1)])[rng.integers(len(g))], text)
    for pattern, replacement in _OPTIONAL:
        if pattern.search(out) and rng.random() < drop_p:
            out = pattern.sub(replacement, out)
    return out
