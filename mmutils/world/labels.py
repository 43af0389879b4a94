"""Per-cell labels that teach an image tower what is where: which object sits in each cell of a grid, and back."""
from __future__ import annotations

import math
from typing import Sequence as SequenceType

import torch

from ..checks import check_instance, check_int, check_subset
from .scenes import ATTRIBUTE_VALUES, COLORS, SHAPES, SIZES, Scene


def _allowed(attributes, shapes, colors, sizes) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
    """The checked ``attributes`` and the allowed values of each attribute."""
    attributes = check_subset("attributes", attributes, tuple(ATTRIBUTE_VALUES))
    values = {"shape": check_subset("shapes", SHAPES if shapes is None else shapes, SHAPES),
              "color": check_subset("colors", COLORS if colors is None else colors, COLORS),
              "size": check_subset("sizes", SIZES if sizes is None else sizes, SIZES)}
    return attributes, values


def cell_labels(scenes: SequenceType[Scene], grid: int, attributes: SequenceType[str] = ("shape", "color", "size"),
                *, shapes: SequenceType[str] | None = None, colors: SequenceType[str] | None = None,
                sizes: SequenceType[str] | None = None) -> torch.Tensor:
    """Which object sits in each cell of a ``grid`` x ``grid`` partition of each scene.

    An object's cell holds its centre: row ``min(int(y * grid), grid - 1)``, column ``min(int(x * grid), grid - 1)``.
    Returns int64 (n, grid * grid), cells row-major: 0 for an empty cell, else ``1 +`` the mixed-radix
    index of the object's values of ``attributes`` among the allowed ``shapes`` / ``colors`` / ``sizes``
    (default: all), e.g. ``(shape * len(colors) + color) * len(sizes) + size``; invert with
    :func:`decode_cell_label`. A cell holds one label: when two objects' centres fall in the same cell
    (for sampled scenes possible up to ``grid=4``, rarely at 4; at any grid for clip frames or hand-made
    scenes), the later object of ``scene.objects`` silently overwrites the earlier one. A per-region
    classifier trained on them knows what is where, as matching and VQA models start from a pretrained
    detector (Anderson et al., 2018; ALBEF, Li et al., 2021).
    """
    check_instance("scenes", scenes, (list, tuple))
    grid = check_int("grid", grid, min=1)
    attributes, values = _allowed(attributes, shapes, colors, sizes)
    labels = [[0] * (grid * grid) for _ in scenes]
    for i, scene in enumerate(check_instance("scenes", s, Scene) for s in scenes):
        for o in scene.objects:
            index = 0
            for attr in attributes:
                allowed = values[attr]
                if getattr(o, attr) not in allowed:
                    raise ValueError(f"scenes[{i}] has an object {o.desc} whose {attr} is outside {allowed}")
                index = index * len(allowed) + allowed.index(getattr(o, attr))
            r, c = min(int(o.y * grid), grid - 1), min(int(o.x * grid), grid - 1)
            labels[i][r * grid + c] = 1 + index
    return torch.tensor(labels, dtype=torch.long).reshape(len(scenes), grid * grid)


def decode_cell_label(label, attributes: SequenceType[str] = ("shape", "color", "size"), *,
                      shapes: SequenceType[str] | None = None, colors: SequenceType[str] | None = None,
                      sizes: SequenceType[str] | None = None):
    """The inverse of :func:`cell_labels` (called with the same ``attributes`` and allowed values).

    For one int label: ``None`` for 0 (empty), else e.g. ``{"shape": "circle", "color": "red", "size": "small"}``.
    For a tensor of labels (any shape, e.g. (n, grid * grid)): ``{attribute: int64 tensor of that shape}``
    holding ``1 +`` each value's index and 0 on empty cells (the targets of per-attribute region heads).
    """
    attributes, values = _allowed(attributes, shapes, colors, sizes)
    radix = [len(values[a]) for a in attributes]
    out = {}
    if isinstance(label, torch.Tensor):  # (...) -> {attribute: (...)}
        index = label.long().sub(1).clamp(min=0)
        for attr, n in zip(reversed(attributes), reversed(radix)):
            out[attr] = torch.where(label > 0, index % n + 1, 0)
            index = index // n
        return {a: out[a] for a in attributes}
    index = check_int("label", label, min=0, max=math.prod(radix)) - 1
    if index < 0:
        return None
    for attr, n in zip(reversed(attributes), reversed(radix)):
        out[attr] = values[attr][index % n]
        index //= n
    return {a: out[a] for a in attributes}
