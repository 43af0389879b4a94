"""Batched image augmentations on tensors: the random views of contrastive learning (MoCo v2, SimCLR).

* :func:`augment` – MoCo v2-style views (crop, color jitter, grayscale) with per-image parameters, batched.
* :func:`augment_v2` – the same pipeline from ``torchvision.transforms.v2``, one parameter draw per sub-batch.
* :func:`hue_rotation` – per-image 3x3 matrices that turn hue about the gray axis of RGB space.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_float, check_instance, check_int, check_tensor

__all__ = ["augment", "augment_v2", "hue_rotation"]


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
