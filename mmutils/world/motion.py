"""Short ShapesWorld clips: objects moving along one axis, with a caption of the motion."""
from __future__ import annotations

from typing import Sequence as SequenceType

import numpy as np

from ..checks import check_float, check_instance, check_int, check_rng
from .language import motion_caption
from .rendering import render
from .scenes import DIRECTION_VECTORS, DIRECTIONS, RADIUS, Obj, Scene, Sequence, sample_scenes


def sample_sequences(n: int, *, frames: int = 8, min_objects: int = 1, max_objects: int = 1, speed: float = 0.05,
                     bounce: bool = False, seed: int | np.random.Generator = 0) -> list[Sequence]:
    """Sample ``n`` clips of ``frames`` frames; each object moves left, right, up or down by ``speed`` per frame.

    Without ``bounce`` start positions are chosen so that objects stay inside the image for the
    whole clip; with ``bounce`` they reflect off the border. Objects may pass over each other.
    """
    n = check_int("n", n, min=0)
    frames = check_int("frames", frames, min=2)
    speed = check_float("speed", speed, positive=True, max=0.2)
    rng = check_rng("seed", seed)
    scenes = sample_scenes(n, min_objects=min_objects, max_objects=max_objects, seed=rng)
    out = []
    t = np.arange(frames)[:, None]
    for s in scenes:
        vel, pos = [], []
        objs = list(s.objects)
        for k, o in enumerate(objs):
            d = DIRECTIONS[rng.integers(4)]
            v = speed * np.array(DIRECTION_VECTORS[d])
            r, start = RADIUS[o.size], np.array([o.x, o.y])
            if not bounce:  # choose a start from which the whole path stays inside
                travel = v * (frames - 1)
                lo, hi = r - np.minimum(travel, 0), 1 - r - np.maximum(travel, 0)
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
        out.append(Sequence(scene, tuple(vel), np.stack(pos, axis=1), motion_caption(scene, vel, rng=rng)))  # (T, K, 2)
    return out


def render_sequences(sequences: SequenceType[Sequence], *, size: int = 32) -> np.ndarray:
    """Render clips to uint8 video of shape ``(n, frames, size, size, 3)``."""
    check_instance("sequences", sequences, (list, tuple))
    if not sequences:
        return np.zeros((0, 0, size, size, 3), dtype=np.uint8)
    frames = {s.frames for s in sequences}
    if len(frames) != 1:
        raise ValueError(f"sequences must all have the same number of frames, got {sorted(frames)}")
    t_len = frames.pop()
    flat = [s.frame(t) for s in sequences for t in range(t_len)]
    return render(flat, size=size).reshape(len(sequences), t_len, size, size, 3)
