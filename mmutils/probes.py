"""Unimodal probes for chapter 1, which measure what one modality alone can tell about a scene.

A *probe* trains a small classifier on top of an encoder to read one property of the input (here:
attributes and layout of a two-object ShapesWorld scene, :data:`TARGETS`). If it cannot beat chance, the
property is not (easily) available in the modality. This is the diagnostic probe of Alain and Bengio
(2017), applied to whole encoders trained briefly end to end.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import world
from .checks import check_choice, check_float, check_instance, check_int, check_tensor
from .runtime import evaluating

__all__ = ["TARGETS", "READOUTS", "sample_probe_scenes", "probe_labels", "UnimodalProbe", "probe_loss",
           "probe_accuracy", "chance_accuracy"]

#: Properties of a two-object scene, with their number of classes. "left" and
#: "top" name the object further left / higher up (smaller y: y grows downwards).
TARGETS: dict[str, int] = {
    "shape_left": len(world.SHAPES),  # shape of the left object (index into world.SHAPES)
    "color_left": len(world.COLORS),  # color of the left object (index into world.COLORS)
    "size_left": len(world.SIZES),    # size of the left object (index into world.SIZES)
    "shape_top": len(world.SHAPES),   # shape of the upper object
    "left_above": 2,                  # 1 if the left object is higher up than the right one
}
READOUTS = ("pooled", "mean", "flatten")


def sample_probe_scenes(n: int, *, min_gap: float = 0.1, seed: int = 0) -> list:
    """``n`` two-object scenes whose centres differ by more than ``min_gap`` along *both* axes.

    Otherwise the object "on the left" may be only a pixel further left (a vertically stacked pair),
    which no eye sees at 32x32. Scenes are drawn with :func:`mmutils.world.sample_scenes` from ``seed``
    and filtered, in order. Returns a list of ``n`` :class:`~mmutils.world.Scene`.
    """
    check_int("n", n, min=1)
    check_float("min_gap", min_gap, min=0.0, max=0.5)
    check_int("seed", seed, min=0)
    rng = np.random.default_rng(seed)
    out: list = []
    while len(out) < n:
        batch = world.sample_scenes(2 * (n - len(out)) + 16, min_objects=2, max_objects=2, seed=rng)
        out += [s for s in batch if abs(s.objects[0].x - s.objects[1].x) > min_gap
                and abs(s.objects[0].y - s.objects[1].y) > min_gap]
    return out[:n]


def probe_labels(scenes) -> dict[str, torch.Tensor]:
    """Labels of :data:`TARGETS` for a list of two-object :class:`~mmutils.world.Scene`: ``{name: int64 (n,)}``."""
    check_instance("scenes", scenes, (list, tuple))
    if not scenes:
        raise ValueError("scenes must not be empty")
    out: dict[str, list[int]] = {k: [] for k in TARGETS}
    for i, s in enumerate(scenes):
        check_instance(f"scenes[{i}]", s, world.Scene)
        if len(s) != 2:
            raise ValueError(f"scenes[{i}] has {len(s)} objects; the probes need exactly 2")
        left, right = sorted(s.objects, key=lambda o: o.x)
        top = min(s.objects, key=lambda o: o.y)
        out["shape_left"].append(world.SHAPES.index(left.shape))
        out["color_left"].append(world.COLORS.index(left.color))
        out["size_left"].append(world.SIZES.index(left.size))
        out["shape_top"].append(world.SHAPES.index(top.shape))
        out["left_above"].append(int(left.y < right.y))
    return {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}


def _readout(out, readout: str) -> torch.Tensor:
    """Turn an encoder's output into one feature vector per example: (B, F)."""
    tokens, pooled = (out if isinstance(out, tuple) else (out, None))
    if tokens.ndim == 2:  # already one vector per example
        return tokens
    if tokens.ndim != 3:
        raise ValueError(f"encoder output must be (B, F) or tokens (B, N, D), got shape {tuple(tokens.shape)}")
    if readout == "pooled":
        return pooled if pooled is not None else tokens.mean(dim=1)
    if readout == "mean":
        return tokens.mean(dim=1)
    return tokens.flatten(1)  # "flatten": (B, N * D), keeps where/when each token is


class UnimodalProbe(nn.Module):
    """An encoder, a read-out, and one classification head per target.

    ``forward(*inputs)``: ``encoder(*inputs)``, read out to features (B, in_dim), a shared hidden layer
    (``hidden`` units, ReLU; 0 for linear heads), one linear head per target -> ``{name: logits (B, classes)}``.
    ``readout``: ``"pooled"`` (the encoder's pooled vector, else the mean of its tokens), ``"mean"`` (of
    the tokens) or ``"flatten"`` (all tokens in order: keeps the grid or the time order). An encoder
    output (B, F) is used as is.
    """

    def __init__(self, encoder: nn.Module, in_dim: int, targets: Mapping[str, int] | None = None, *,
                 readout: str = "pooled", hidden: int = 128):
        super().__init__()
        targets = dict(TARGETS if targets is None else check_instance("targets", targets, Mapping))
        check_instance("encoder", encoder, nn.Module)
        check_choice("readout", readout, READOUTS)
        check_int("in_dim", in_dim, min=1)
        check_int("hidden", hidden, min=0)
        if not targets:
            raise ValueError("targets must name at least one target")
        for name, k in targets.items():
            check_int(f"targets[{name!r}]", k, min=2)
        self.encoder, self.readout, self.in_dim, self.targets = encoder, readout, in_dim, targets
        self.trunk = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU()) if hidden else nn.Identity()
        width = hidden or in_dim
        self.heads = nn.ModuleDict({name: nn.Linear(width, k) for name, k in targets.items()})

    def features(self, *inputs) -> torch.Tensor:
        """The read-out features (B, in_dim) of ``encoder(*inputs)``."""
        feats = _readout(self.encoder(*inputs), self.readout)
        if feats.shape[1] != self.in_dim:
            raise ValueError(f"in_dim is {self.in_dim} but the {self.readout!r} read-out of the encoder has "
                             f"shape {tuple(feats.shape)}")
        return feats

    def forward(self, *inputs) -> dict[str, torch.Tensor]:
        h = self.trunk(self.features(*inputs))  # (B, hidden)
        return {name: head(h) for name, head in self.heads.items()}  # name -> (B, classes)


def _check_labels(labels, names, n: int) -> None:
    """``labels`` holds an int tensor (n,) for each of ``names``."""
    check_instance("labels", labels, Mapping)
    missing = [k for k in names if k not in labels]
    if missing:
        raise ValueError(f"labels has no entry for {missing} (labels: {list(labels)})")
    for k in names:
        check_tensor(f"labels[{k!r}]", labels[k], 1, size={0: n}, dtype="int")


def probe_loss(logits: Mapping[str, torch.Tensor], labels: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Sum over targets of the cross-entropy of ``logits[name]`` (B, k) and ``labels[name]`` (B,); extras ignored."""
    check_instance("logits", logits, Mapping)
    _check_labels(labels, list(logits), next(iter(logits.values())).shape[0])
    return sum(F.cross_entropy(z, labels[k]) for k, z in logits.items())


def probe_accuracy(model: UnimodalProbe, inputs: Sequence[torch.Tensor], labels: Mapping[str, torch.Tensor],
                   *, batch_size: int = 500) -> dict[str, float]:
    """Accuracy ``{name: float}`` per target of ``model`` on ``inputs`` (tensors with n rows).

    Runs in eval mode without gradients, ``batch_size`` rows at a time; the model's train/eval mode is
    restored afterwards.
    """
    check_instance("inputs", inputs, (tuple, list))
    n = check_tensor("inputs[0]", inputs[0] if inputs else None).shape[0]
    for i, t in enumerate(inputs):
        check_tensor(f"inputs[{i}]", t, size={0: n})
    _check_labels(labels, list(model.targets), n)
    batch_size = check_int("batch_size", batch_size, min=1)
    preds: dict[str, list[torch.Tensor]] = {k: [] for k in model.targets}
    with evaluating(model):
        for start in range(0, n, batch_size):
            out = model(*(t[start:start + batch_size] for t in inputs))
            for k, z in out.items():
                preds[k].append(z.argmax(dim=1))
    return {k: (torch.cat(p).cpu() == labels[k].cpu()).float().mean().item() for k, p in preds.items()}


def chance_accuracy(labels: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Accuracy of always guessing the most frequent class, per target: ``{name: float}``."""
    check_instance("labels", labels, Mapping)
    out = {}
    for k, y in labels.items():
        check_tensor(f"labels[{k!r}]", y, 1, dtype="int")
        out[k] = torch.bincount(y.cpu()).max().item() / y.shape[0]
    return out
