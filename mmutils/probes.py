"""Unimodal probes: what can one modality alone tell about a scene?

A *probe* trains a small classifier on top of an encoder to read one property
of the input (here: attributes and layout of a two-object ShapesWorld scene).
If the probe cannot beat chance, that property is not (easily) available in
the modality; if it reaches near 100 %, it is. This is the diagnostic-probe
method of Alain and Bengio (2017), applied here to whole encoders trained
briefly end to end.

* :data:`TARGETS` – the probed properties and their number of classes.
* :func:`sample_probe_scenes` – two-object scenes whose layout is unambiguous to the eye.
* :func:`probe_labels` – the labels of :data:`TARGETS` for two-object scenes.
* :class:`UnimodalProbe` – encoder + read-out + one linear head per target.
* :func:`probe_loss`, :func:`probe_accuracy`, :func:`chance_accuracy`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .encoders import check_tensor

__all__ = ["TARGETS", "READOUTS", "sample_probe_scenes", "probe_labels", "UnimodalProbe", "probe_loss", "probe_accuracy",
           "chance_accuracy"]

#: Properties of a two-object scene, with their number of classes. "left" and
#: "top" name the object further left / higher up (smaller y: y grows downwards).
TARGETS: dict[str, int] = {
    "shape_left": 6,   # shape of the left object (index into world.SHAPES)
    "color_left": 6,   # color of the left object (index into world.COLORS)
    "size_left": 2,    # size of the left object (index into world.SIZES)
    "shape_top": 6,    # shape of the upper object
    "left_above": 2,   # 1 if the left object is higher up than the right one
}
READOUTS = ("pooled", "mean", "flatten")


def sample_probe_scenes(n: int, *, min_gap: float = 0.1, seed: int = 0) -> list:
    """``n`` two-object scenes whose centres differ by more than ``min_gap`` along *both* axes.

    In a plain two-object scene the object "on the left" may be only a pixel
    further left than the other (when the pair is stacked vertically), which
    no eye can see at 32x32; the gap makes "left" and "upper" well defined.
    Scenes are drawn with :func:`mmutils.world.sample_scenes` from ``seed``
    and filtered, in order. Returns a list of ``n`` :class:`~mmutils.world.Scene`.
    """
    from . import world

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if isinstance(min_gap, bool) or not isinstance(min_gap, (int, float)) or not 0 <= min_gap < 0.5:
        raise ValueError(f"min_gap must be a number in [0, 0.5), got {min_gap!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    rng = np.random.default_rng(seed)
    out: list = []
    while len(out) < n:
        batch = world.sample_scenes(2 * (n - len(out)) + 16, min_objects=2, max_objects=2, seed=rng)
        out += [s for s in batch if abs(s.objects[0].x - s.objects[1].x) > min_gap
                and abs(s.objects[0].y - s.objects[1].y) > min_gap]
    return out[:n]


def probe_labels(scenes) -> dict[str, torch.Tensor]:
    """Labels of :data:`TARGETS` for a list of two-object :class:`~mmutils.world.Scene`.

    Returns a dict ``name -> int64 tensor (n,)``. Raises ``ValueError`` if a
    scene does not have exactly two objects.
    """
    from . import world

    if isinstance(scenes, world.Scene) or not isinstance(scenes, Sequence):
        raise TypeError(f"scenes must be a list of Scene, got {type(scenes).__name__}")
    if not scenes:
        raise ValueError("scenes must not be empty")
    out: dict[str, list[int]] = {k: [] for k in TARGETS}
    for i, s in enumerate(scenes):
        if not isinstance(s, world.Scene):
            raise TypeError(f"scenes[{i}] must be a Scene, got {type(s).__name__}")
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
    if not isinstance(tokens, torch.Tensor):
        raise TypeError(f"the encoder must return a tensor or a (tokens, pooled) tuple, got {type(tokens).__name__}")
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

    ``forward(*inputs)`` runs ``encoder(*inputs)``, turns its output into
    features (B, in_dim) with ``readout``, then a shared hidden layer
    (``hidden`` units, ReLU; ``hidden=0`` for purely linear heads) and one
    linear head per entry of ``targets``. Returns ``{name: logits (B, classes)}``.

    ``readout``: ``"pooled"`` (the encoder's pooled vector, or the mean of its
    tokens), ``"mean"`` (mean of the tokens), or ``"flatten"`` (all tokens
    concatenated in order: keeps the spatial grid or the time order, needs a
    fixed number of tokens). An encoder returning (B, F) is used as is.
    """

    def __init__(self, encoder: nn.Module, in_dim: int, targets: Mapping[str, int] | None = None, *,
                 readout: str = "pooled", hidden: int = 128):
        super().__init__()
        targets = dict(TARGETS if targets is None else targets)
        if not isinstance(encoder, nn.Module):
            raise TypeError(f"encoder must be a torch.nn.Module, got {type(encoder).__name__}")
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        if isinstance(in_dim, bool) or not isinstance(in_dim, int) or in_dim < 1:
            raise ValueError(f"in_dim must be a positive int, got {in_dim!r}")
        if not targets or any(not isinstance(k, int) or k < 2 for k in targets.values()):
            raise ValueError(f"targets must map names to class counts >= 2, got {targets}")
        self.encoder = encoder
        self.readout = readout
        self.in_dim = in_dim
        self.targets = targets
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


def _check_pairs(logits: Mapping[str, torch.Tensor], labels: Mapping[str, torch.Tensor]) -> None:
    if not isinstance(logits, Mapping) or not isinstance(labels, Mapping):
        raise TypeError("logits and labels must be dicts name -> tensor")
    missing = [k for k in logits if k not in labels]
    if missing:
        raise ValueError(f"labels has no entry for {missing} (labels: {list(labels)})")
    for k, z in logits.items():
        check_tensor(f"logits[{k!r}]", z, 2, dtype_kind="float")
        check_tensor(f"labels[{k!r}]", labels[k], 1, size={0: z.shape[0]}, dtype_kind="int")


def probe_loss(logits: Mapping[str, torch.Tensor], labels: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Sum over targets of the cross-entropy between ``logits[name]`` (B, k) and ``labels[name]`` (B,).

    ``labels`` may hold more targets than ``logits``; those are ignored. Returns a scalar.
    """
    _check_pairs(logits, labels)
    return sum(F.cross_entropy(z, labels[k]) for k, z in logits.items())


@torch.no_grad()
def probe_accuracy(model: UnimodalProbe, inputs: Sequence[torch.Tensor], labels: Mapping[str, torch.Tensor],
                   *, batch_size: int = 500) -> dict[str, float]:
    """Accuracy per target of ``model`` on ``inputs`` (a tuple of tensors with n rows), in eval mode.

    Returns ``{name: accuracy}`` for every target of the model; the model's
    train/eval mode is restored afterwards.
    """
    if not isinstance(inputs, (tuple, list)) or not inputs:
        raise TypeError("inputs must be a non-empty tuple of tensors (the encoder's arguments)")
    n = inputs[0].shape[0]
    for i, t in enumerate(inputs):
        if not isinstance(t, torch.Tensor) or t.shape[0] != n:
            raise ValueError(f"inputs[{i}] must be a tensor with {n} rows, got "
                             f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
    was_training = model.training
    model.eval()
    try:
        preds: dict[str, list[torch.Tensor]] = {k: [] for k in model.targets}
        for start in range(0, n, batch_size):
            out = model(*(t[start:start + batch_size] for t in inputs))
            for k, z in out.items():
                preds[k].append(z.argmax(dim=1))
    finally:
        model.train(was_training)
    result = {}
    for k, p in preds.items():
        if k not in labels:
            raise ValueError(f"labels has no entry for {k!r} (labels: {list(labels)})")
        check_tensor(f"labels[{k!r}]", labels[k], 1, size={0: n}, dtype_kind="int")
        result[k] = (torch.cat(p).cpu() == labels[k].cpu()).float().mean().item()
    return result


def chance_accuracy(labels: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Accuracy of always guessing the most frequent class, per target: ``{name: float}``."""
    if not isinstance(labels, Mapping) or not labels:
        raise TypeError("labels must be a non-empty dict name -> int tensor (n,)")
    out = {}
    for k, y in labels.items():
        check_tensor(f"labels[{k!r}]", y, 1, dtype_kind="int")
        out[k] = torch.bincount(y.cpu()).max().item() / y.shape[0]
    return out
