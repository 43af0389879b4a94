"""The visual modality of ShapesWorld: scenes rendered to RGB images, vectorized in numpy."""
from __future__ import annotations

from typing import Sequence as SequenceType

import numpy as np

from ..checks import check_float, check_instance, check_int, check_rng
from .scenes import BACKGROUND_GREY, COLOR_RGB, RADIUS, SHAPES, Scene


def _shape_masks(a: np.ndarray, b: np.ndarray, shape_idx: np.ndarray) -> np.ndarray:
    """Inside-masks (m, H, W) bool of shapes ``shape_idx`` (m,), at offsets ``a, b`` (m, H, W) in radii."""
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


def render(scenes: SequenceType[Scene] | Scene, *, size: int = 32, noise: float = 0.0,
           seed: int | np.random.Generator = 0) -> np.ndarray:
    """Render a list of :class:`Scene` (or one scene) to uint8 RGB images ``(n, size, size, 3)``.

    ``size``: image side in pixels, at least 16. ``noise``: standard deviation of
    Gaussian pixel noise as a fraction of 255 (0 gives clean images).
    """
    scenes = [scenes] if isinstance(scenes, Scene) else check_instance("scenes", scenes, (list, tuple))
    size = check_int("size", size, min=16)
    noise = check_float("noise", noise, min=0.0, max=1.0)
    n = len(scenes)
    images = np.full((n, size, size, 3), BACKGROUND_GREY, dtype=np.uint8)
    owner = [i for i, s in enumerate(scenes) for _ in s.objects]
    objs = [o for s in scenes for o in s.objects]
    if objs:
        owner_arr = np.asarray(owner)
        cx = np.array([o.x for o in objs], dtype=np.float32)
        cy = np.array([o.y for o in objs], dtype=np.float32)
        rad = np.array([RADIUS[o.size] for o in objs], dtype=np.float32)
        shape_idx = np.array([SHAPES.index(o.shape) for o in objs])
        rgb = np.array([COLOR_RGB[o.color] for o in objs], dtype=np.uint8)
        # Work on a square patch around each object rather than on the whole image.
        half = int(np.ceil(RADIUS["large"] * size)) + 1
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
        texture = check_rng("seed", seed).normal(0.0, noise * 255.0, size=images.shape).astype(np.float32)
        images = np.clip(images.astype(np.float32) + texture, 0, 255).astype(np.uint8)
    return images
