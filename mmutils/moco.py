"""Momentum contrast (MoCo v2) and the tools to train and evaluate it on a laptop CPU.

MoCo (He et al., 2020) learns image features without labels by *instance
discrimination*: two augmented views of one image must match each other
better than they match views of other images. Its two ideas are a **queue**
of keys from earlier batches (many negatives without a huge batch) and a
**momentum key encoder**, a slowly moving average of the query encoder, so
that the keys in the queue stay consistent. MoCo v2 (Chen et al., 2020) adds
an MLP projection head, stronger augmentation and a cosine learning rate.

* :class:`ConvEncoder` – a small stride-2 CNN with global average pooling, (B, C, H, W) -> (B, out_dim).
* :func:`augment` – MoCo v2-style views (crop, color jitter, grayscale) with per-image parameters, batched.
* :func:`augment_v2` – the same pipeline from ``torchvision.transforms.v2``, one parameter draw per sub-batch.
* :func:`hue_rotation` – per-image 3x3 matrices that turn hue about the gray axis of RGB space.
* :func:`momentum_update` – ``target <- m * target + (1 - m) * online``, parameter by parameter.
* :class:`KeyQueue` – a fixed-size first-in first-out queue of key vectors (and optional ids) with wrap-around.
* :class:`MoCo` – query and key encoders, momentum update, queue, loss; ``forward(x_q, x_k) -> loss``.
* :class:`InBatchContrast` – the SimCLR-style baseline (Chen et al., 2020): negatives from the batch only.
* :func:`extract_features` – frozen features of many images, in eval mode, in chunks.
* :func:`linear_probe` – accuracy of a logistic regression trained on frozen features.
* :func:`few_label_probe` – the same with only a few labels per class, averaged over random draws.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .encoders import check_tensor
from .losses import info_nce, moco_loss

__all__ = [
    "ConvEncoder", "augment", "augment_v2", "hue_rotation", "momentum_update", "KeyQueue", "MoCo", "InBatchContrast",
    "extract_features", "linear_probe", "few_label_probe",
]


def _check_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_fraction(name: str, value, *, low: float = 0.0, high: float = 1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return float(value)


# --------------------------------------------------------------------------- #
# Encoder
# --------------------------------------------------------------------------- #
class ConvEncoder(nn.Module):
    """Conv(3x3, stride 2)-Norm-ReLU stages, then global average pooling.

    ``forward(images)``: (B, in_channels, H, W) float -> features (B, out_dim),
    where ``out_dim = widths[-1]``. Every stage halves the resolution with a
    strided convolution (no max-pool), which keeps a 32x32 input cheap on a
    CPU. ``norm`` is ``"batch"`` (BatchNorm, statistics over the batch) or
    ``"group"`` (GroupNorm with ``groups`` groups, statistics per image, so
    no information flows between the images of a batch).
    """

    def __init__(self, in_channels: int = 3, widths: Sequence[int] = (32, 64, 128), *,
                 strides: Sequence[int] | None = None, norm: str = "batch", groups: int = 8, pool: str = "mean"):
        super().__init__()
        in_channels = _check_int("in_channels", in_channels)
        if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence) or not widths:
            raise ValueError(f"widths must be a non-empty sequence of ints, got {widths!r}")
        for w in widths:
            _check_int("widths[i]", w)
        strides = (2,) * len(widths) if strides is None else tuple(strides)
        if len(strides) != len(widths) or any(s not in (1, 2) for s in strides):
            raise ValueError(f"strides must give 1 or 2 for each of the {len(widths)} stages, got {strides!r}")
        if norm not in ("batch", "group"):
            raise ValueError(f"norm must be 'batch' or 'group', got {norm!r}")
        if pool not in ("mean", "max", "meanmax"):
            raise ValueError(f"pool must be 'mean', 'max' or 'meanmax', got {pool!r}")
        layers, c = [], in_channels
        for w, s in zip(widths, strides):
            if norm == "group" and w % groups:
                raise ValueError(f"widths must be divisible by groups={groups} for norm='group', got {w}")
            layers += [nn.Conv2d(c, w, 3, stride=s, padding=1, bias=False),
                       nn.BatchNorm2d(w) if norm == "batch" else nn.GroupNorm(groups, w),
                       nn.ReLU(inplace=True)]
            c = w
        self.features = nn.Sequential(*layers)
        self.in_channels = in_channels
        self.pool = pool
        self.out_dim = 2 * c if pool == "meanmax" else c

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_tensor("images", images, 4, size={1: self.in_channels}, dtype_kind="float")
        fmap = self.features(images)  # (B, C, h, w)
        if self.pool == "mean":
            return fmap.mean(dim=(2, 3))  # (B, C)
        if self.pool == "max":
            return fmap.amax(dim=(2, 3))  # (B, C)
        return torch.cat([fmap.mean(dim=(2, 3)), fmap.amax(dim=(2, 3))], dim=1)  # (B, 2C)


# --------------------------------------------------------------------------- #
# Augmentation
# --------------------------------------------------------------------------- #
def _check_crop_scale(crop_scale) -> tuple[float, float]:
    if not (isinstance(crop_scale, (tuple, list)) and len(crop_scale) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in crop_scale)
            and 0 < crop_scale[0] <= crop_scale[1] <= 1):
        raise ValueError(f"crop_scale must be a pair (low, high) with 0 < low <= high <= 1, got {crop_scale!r}")
    return float(crop_scale[0]), float(crop_scale[1])


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
    check_tensor("angles", angles, 1, dtype_kind="float")
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

    1. **random resized crop** (as ``torchvision.transforms.v2.RandomResizedCrop``): a
       box of ``crop_scale`` of the area and aspect ratio in [3/4, 4/3], resampled
       bilinearly to the output size by one ``F.affine_grid`` + ``F.grid_sample`` call;
    2. with probability ``jitter_p``, **color jitter**: brightness, contrast and
       saturation factors in [1 - jitter, 1 + jitter] (torchvision's formulas) and a
       hue rotation by up to ``hue`` of a full turn (:func:`hue_rotation`);
    3. with probability ``grayscale_p``, **grayscale** (the luma in all channels).

    Steps 2 and 3 need C = 3 and are skipped for ``jitter = hue = 0`` and
    ``grayscale_p = 0``. ``torchvision.transforms.v2`` transforms accept a batch but
    draw *one* set of parameters per call (:func:`augment_v2` calls them per
    sub-batch); here the parameters are tensors of length B, so the cost is that of a
    handful of vectorized operations whatever the batch size. Randomness comes from
    ``generator`` or torch's global generator (seeded by
    :func:`mmutils.runtime.seed_everything`), drawn on the CPU so that a seed gives the
    same views on every device.
    """
    check_tensor("images", images, 4, dtype_kind="float")
    low, high = _check_crop_scale(crop_scale)
    jitter = _check_fraction("jitter", jitter, high=1.0)
    hue = _check_fraction("hue", hue, high=0.5)
    jitter_p = _check_fraction("jitter_p", jitter_p)
    grayscale_p = _check_fraction("grayscale_p", grayscale_p)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    b, c, h, w = images.shape
    out_hw = (h, w) if size is None else (_check_int("size", size),) * 2
    color = (jitter > 0 or hue > 0) and jitter_p > 0
    if (color or grayscale_p > 0) and c != 3:
        raise ValueError(f"images must have 3 channels for color jitter / grayscale, got shape {tuple(images.shape)}; "
                         "pass jitter=0, hue=0, grayscale_p=0 for other images")
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

    ``images``: float (B, C, H, W) in [0, 1], on any device; returns a new tensor
    (B, C, size, size) (``size`` defaults to H x W) on the same device. The pipeline is
    ``RandomResizedCrop(scale=crop_scale)`` -> ``ColorJitter(jitter, jitter, jitter, hue)``
    with probability ``jitter_p`` (skipped when ``jitter`` and ``hue`` are 0) ->
    optional ``RandomChannelPermutation`` (probability ``permute_p``) ->
    ``RandomGrayscale(grayscale_p)`` -> optional ``RandomHorizontalFlip`` (off by
    default: a flip swaps left and right). Color steps need C = 3.

    A ``v2`` transform accepts a batch but draws *one* set of random parameters per
    call: one call on a batch gives every image the same crop and the same colors.
    The batch is therefore split into ``groups`` sub-batches, each with its own draw
    (from torch's global generator). :func:`augment` draws per image instead, and is
    several times faster on a CPU (no hue conversion to HSV, one resampling call).
    """
    from torchvision.transforms import v2

    check_tensor("images", images, 4, dtype_kind="float")
    crop_scale = _check_crop_scale(crop_scale)
    jitter = _check_fraction("jitter", jitter, high=1.0)
    hue = _check_fraction("hue", hue, high=0.5)
    jitter_p = _check_fraction("jitter_p", jitter_p)
    grayscale_p = _check_fraction("grayscale_p", grayscale_p)
    permute_p = _check_fraction("permute_p", permute_p)
    groups = _check_int("groups", groups)
    if not isinstance(flip, bool):
        raise TypeError(f"flip must be a bool, got {type(flip).__name__}")
    color = (jitter > 0 or hue > 0) and jitter_p > 0 or grayscale_p > 0 or permute_p > 0
    if color and images.shape[1] != 3:
        raise ValueError(f"images must have 3 channels for color jitter / grayscale, got shape {tuple(images.shape)}")
    out_size = tuple(images.shape[-2:]) if size is None else (_check_int("size", size),) * 2
    steps: list[nn.Module] = [v2.RandomResizedCrop(out_size, scale=crop_scale, antialias=True)]
    if (jitter > 0 or hue > 0) and jitter_p > 0:
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


# --------------------------------------------------------------------------- #
# Momentum update and the queue
# --------------------------------------------------------------------------- #
@torch.no_grad()
def momentum_update(online: nn.Module, target: nn.Module, momentum: float) -> None:
    """Exponential moving average, in place: ``target <- m * target + (1 - m) * online``.

    Applied to every parameter (``m = 0`` copies the online weights, ``m = 1``
    keeps the target); buffers (BatchNorm running statistics) are left alone,
    as in the MoCo code. The two modules must have the same architecture. This is MoCo's key-encoder
    update (He et al., 2020, Eq. 2); no gradient flows through it.
    """
    if not isinstance(online, nn.Module) or not isinstance(target, nn.Module):
        raise TypeError(f"online and target must be nn.Module, got {type(online).__name__} and "
                        f"{type(target).__name__}")
    m = _check_fraction("momentum", momentum)
    p_on, p_tg = list(online.parameters()), list(target.parameters())
    if len(p_on) != len(p_tg) or any(a.shape != b.shape for a, b in zip(p_on, p_tg)):
        raise ValueError("online and target must have the same parameters (same architecture), got "
                         f"{[tuple(p.shape) for p in p_on][:4]}... and {[tuple(p.shape) for p in p_tg][:4]}...")
    for a, b in zip(p_on, p_tg):
        b.mul_(m).add_(a.detach(), alpha=1.0 - m)


class KeyQueue(nn.Module):
    """A first-in first-out queue of ``size`` key vectors of width ``dim`` (MoCo's dictionary).

    ``keys`` is a buffer (size, dim), initialized with random unit vectors as in
    the MoCo code; ``ptr`` is the slot the next key goes into. :meth:`enqueue`
    writes a batch of keys (B, dim) at ``ptr, ptr + 1, ...`` modulo ``size``
    (wrapping around to the start), overwriting the oldest keys, and moves
    ``ptr`` by B. A batch longer than the queue keeps only its last ``size``
    keys. ``filled`` counts how many real keys the queue holds (at most ``size``).

    Optionally every key carries an integer ``ids`` entry (a buffer (size,), -1 for
    the initial random keys), e.g. the class of the caption a text key came from,
    so that a loss can find queued keys that are in fact positives (duplicates).
    """

    def __init__(self, size: int, dim: int, *, generator: torch.Generator | None = None):
        super().__init__()
        self.size = _check_int("size", size)
        self.dim = _check_int("dim", dim)
        self.register_buffer("keys", F.normalize(torch.randn(size, dim, generator=generator), dim=1))
        self.register_buffer("ids", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, ids: torch.Tensor | None = None) -> None:
        """Write ``keys`` (B, dim) (and their ``ids`` (B,), if given) into the queue, oldest first out; no gradient is kept."""
        check_tensor("keys", keys, 2, size={1: self.dim}, dtype_kind="float")
        b = keys.shape[0]
        if ids is not None:
            check_tensor("ids", ids, 1, size={0: b}, dtype_kind="int")
        ptr = int(self.ptr)
        if b > self.size:  # only the last `size` keys survive; they land where sequential writes would put them
            start = ptr + b - self.size
            keys = keys[-self.size:]
            ids = None if ids is None else ids[-self.size:]
        else:
            start = ptr
        idx = (start + torch.arange(keys.shape[0], device=self.keys.device)) % self.size
        self.keys[idx] = keys.detach().to(self.keys.dtype)
        self.ids[idx] = -1 if ids is None else ids.to(self.ids.device, torch.long)
        self.ptr.fill_((ptr + b) % self.size)
        self.filled.fill_(min(int(self.filled) + b, self.size))

    def forward(self) -> torch.Tensor:
        """The queued keys (size, dim)."""
        return self.keys


# --------------------------------------------------------------------------- #
# MoCo and the in-batch baseline
# --------------------------------------------------------------------------- #
def _projection_head(in_dim: int, dim: int, hidden: int | None) -> nn.Module:
    if hidden is None:
        return nn.Linear(in_dim, dim)
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))


def _build_encoder(encoder_fn: Callable[[], nn.Module]) -> tuple[nn.Module, int]:
    if not callable(encoder_fn) or isinstance(encoder_fn, nn.Module):
        raise TypeError(f"encoder_fn must be a function that returns a new nn.Module, got {type(encoder_fn).__name__}")
    encoder = encoder_fn()
    if not isinstance(encoder, nn.Module):
        raise TypeError(f"encoder_fn() must return an nn.Module, got {type(encoder).__name__}")
    out_dim = getattr(encoder, "out_dim", None)
    if not isinstance(out_dim, int):
        raise ValueError("encoder_fn() must return a module with an int attribute out_dim (its feature width)")
    return encoder, out_dim


def _check_views(x_q, x_k, names: tuple[str, str] = ("x_q", "x_k")) -> None:
    for name, x in zip(names, (x_q, x_k)):
        check_tensor(name, x, 4, dtype_kind="float")
    if x_q.shape != x_k.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape, got {tuple(x_q.shape)} and "
                         f"{tuple(x_k.shape)}")


class MoCo(nn.Module):
    """MoCo v2: a query encoder trained by gradient, a momentum key encoder, a queue of negative keys.

    ``encoder_fn()`` builds a backbone (B, C, H, W) -> (B, F) with an ``out_dim``
    attribute (F), e.g. ``lambda: ConvEncoder()``; MoCo puts a projection head on
    top (an MLP ``F -> hidden -> dim`` as in MoCo v2, or linear with
    ``hidden=None`` as in MoCo v1) and deep-copies backbone + head into the key
    encoder, whose parameters get no gradient (``requires_grad=False``).

    ``forward(x_q, x_k)``: two augmented views (B, C, H, W) of the same images.
    In training mode it (1) updates the key encoder by momentum, (2) encodes
    queries ``q`` (B, dim) and, without gradient, keys ``k`` (B, dim), (3)
    computes :func:`mmutils.losses.moco_loss` (positive logit ``q . k``, negatives
    ``q . queue``, over ``temperature``), and (4) only then enqueues ``k``, so
    a batch is never its own negative. Returns the scalar loss. In eval mode
    nothing is updated (no momentum step, no enqueue).

    ``shuffle_bn`` (an int ``S`` >= 2, or None) emulates Shuffle-BN on one
    process: both encoders run on ``S`` sub-batches separately, so BatchNorm
    statistics are per sub-batch, and the key sub-batches are built from a
    random permutation, so a query and its positive key never share their
    statistics (He et al., 2020, Sec. 3.3); this is what the authors' one-GPU
    CIFAR-10 demo does with its split BatchNorm. ``symmetric=True`` (as in that demo
    and in MoCo v3) also uses ``x_k`` as queries for the keys of ``x_q``, averages
    the two losses and enqueues both sets of keys: twice the query-side compute, twice
    the training signal per step. ``backbone`` is the query backbone: the part kept
    for downstream tasks.
    """

    def __init__(self, encoder_fn: Callable[[], nn.Module], dim: int = 64, queue_size: int = 4096,
                 momentum: float = 0.99, temperature: float = 0.2, *, hidden: int | None = 256,
                 shuffle_bn: int | None = None, symmetric: bool = False):
        super().__init__()
        self.backbone, feat_dim = _build_encoder(encoder_fn)
        self.dim = _check_int("dim", dim)
        self.momentum = _check_fraction("momentum", momentum)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature <= 0:
            raise ValueError(f"temperature must be a positive number, got {temperature!r}")
        self.temperature = float(temperature)
        if hidden is not None:
            _check_int("hidden", hidden)
        if shuffle_bn is not None:
            _check_int("shuffle_bn", shuffle_bn, minimum=2)
        self.shuffle_bn = shuffle_bn
        if not isinstance(symmetric, bool):
            raise TypeError(f"symmetric must be a bool, got {type(symmetric).__name__}")
        self.symmetric = symmetric
        self.head = _projection_head(feat_dim, self.dim, hidden)
        self.key_backbone = copy.deepcopy(self.backbone)
        self.key_head = copy.deepcopy(self.head)
        for p in [*self.key_backbone.parameters(), *self.key_head.parameters()]:
            p.requires_grad_(False)
        self.queue = KeyQueue(_check_int("queue_size", queue_size), self.dim)

    # -- the two encoders -------------------------------------------------------
    def _run(self, backbone: nn.Module, head: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.shuffle_bn is None or not self.training:
            return F.normalize(head(backbone(x)), dim=1)
        return torch.cat([F.normalize(head(backbone(c)), dim=1) for c in x.chunk(self.shuffle_bn)])

    def encode_query(self, x: torch.Tensor) -> torch.Tensor:
        """Unit query vectors (B, dim), with gradient."""
        return self._run(self.backbone, self.head, x)

    @torch.no_grad()
    def encode_key(self, x: torch.Tensor) -> torch.Tensor:
        """Unit key vectors (B, dim) from the momentum encoder, without gradient (Shuffle-BN if enabled)."""
        if self.shuffle_bn is None or not self.training:
            return self._run(self.key_backbone, self.key_head, x)
        perm = torch.randperm(x.shape[0], device=x.device)
        k = self._run(self.key_backbone, self.key_head, x[perm])
        return k[torch.argsort(perm)]  # undo the shuffle: row i is again the key of image i

    @torch.no_grad()
    def momentum_update(self) -> None:
        """``key <- m * key + (1 - m) * query`` for backbone and head (see :func:`momentum_update`)."""
        momentum_update(self.backbone, self.key_backbone, self.momentum)
        momentum_update(self.head, self.key_head, self.momentum)

    @torch.no_grad()
    def dequeue_and_enqueue(self, keys: torch.Tensor) -> None:
        """Push ``keys`` (B, dim) into the queue, dropping the oldest (wrap-around, see :class:`KeyQueue`)."""
        self.queue.enqueue(keys)

    def forward(self, x_q: torch.Tensor, x_k: torch.Tensor) -> torch.Tensor:
        _check_views(x_q, x_k)
        if self.training:
            self.momentum_update()
        queue = self.queue.keys.clone()  # (K, dim): the negatives, as they were before this batch
        q = self.encode_query(x_q)  # (B, dim)
        k = self.encode_key(x_k)  # (B, dim), no gradient
        loss = moco_loss(q, k, queue, self.temperature)
        if self.symmetric:  # each view is also a query for the other one's key
            k_q = self.encode_key(x_q)  # (B, dim)
            loss = 0.5 * (loss + moco_loss(self.encode_query(x_k), k_q, queue, self.temperature))
            k = torch.cat([k_q, k])  # (2B, dim)
        if self.training:  # after the logits: the current keys are not their own negatives
            self.dequeue_and_enqueue(k)
        return loss


class InBatchContrast(nn.Module):
    """The SimCLR-style baseline (Chen et al., 2020): one encoder, negatives from the batch only.

    Same backbone and projection head as :class:`MoCo`, no key encoder, no
    queue. ``forward(x_1, x_2)`` encodes both views with the same (trained)
    encoder and returns the symmetric InfoNCE
    ``(info_nce(z1, z2) + info_nce(z2, z1)) / 2``: each view has B - 1
    negatives, the other views in the batch.
    """

    def __init__(self, encoder_fn: Callable[[], nn.Module], dim: int = 64, temperature: float = 0.2, *,
                 hidden: int | None = 256):
        super().__init__()
        self.backbone, feat_dim = _build_encoder(encoder_fn)
        if hidden is not None:
            _check_int("hidden", hidden)
        self.head = _projection_head(feat_dim, _check_int("dim", dim), hidden)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature <= 0:
            raise ValueError(f"temperature must be a positive number, got {temperature!r}")
        self.temperature = float(temperature)

    def forward(self, x_1: torch.Tensor, x_2: torch.Tensor) -> torch.Tensor:
        _check_views(x_1, x_2, ("x_1", "x_2"))
        z = self.head(self.backbone(torch.cat([x_1, x_2])))  # one pass: BatchNorm sees both views
        z1, z2 = z.chunk(2)
        return 0.5 * (info_nce(z1, z2, self.temperature) + info_nce(z2, z1, self.temperature))


# --------------------------------------------------------------------------- #
# Evaluation: frozen features and a linear probe
# --------------------------------------------------------------------------- #
@torch.no_grad()
def extract_features(encoder: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Features of a frozen encoder: ``encoder(images)`` in eval mode, in chunks, as float32 on the CPU.

    ``images``: (N, C, H, W); returns (N, F). The encoder's train/eval mode is restored.
    """
    if not isinstance(encoder, nn.Module):
        raise TypeError(f"encoder must be an nn.Module, got {type(encoder).__name__}")
    check_tensor("images", images, 4, dtype_kind="float")
    batch_size = _check_int("batch_size", batch_size)
    was_training = encoder.training
    encoder.eval()
    try:
        out = [encoder(images[i:i + batch_size]).float().cpu() for i in range(0, images.shape[0], batch_size)]
    finally:
        encoder.train(was_training)
    return torch.cat(out)


def _as_2d_float(name: str, x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, F), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} must be finite, got NaN or inf")
    return x.detach().float().cpu()


def _as_labels(name: str, y, n: int, feats_name: str) -> torch.Tensor:
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(y).__name__}")
    if y.ndim != 1 or y.is_floating_point():
        raise ValueError(f"{name} must be a 1-D integer tensor (N,), got shape {tuple(y.shape)} and dtype {y.dtype}")
    if y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} labels but {feats_name} has {n} rows")
    return y.detach().cpu()


def linear_probe(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                 test_labels: torch.Tensor, *, C: float = 1.0, max_iter: int = 2000) -> float:
    """Test accuracy of a logistic regression trained on frozen features (the linear-evaluation protocol).

    ``train_feats`` (N, F) with ``train_labels`` (N,) int; ``test_feats`` (M, F)
    with ``test_labels`` (M,). Features are standardized with the training
    mean and standard deviation, then scikit-learn's ``LogisticRegression``
    (L-BFGS, inverse regularization strength ``C``) is fit to convergence.
    Returns the accuracy on the test set, a float in [0, 1].
    """
    from sklearn.linear_model import LogisticRegression

    xtr = _as_2d_float("train_feats", train_feats)
    xte = _as_2d_float("test_feats", test_feats)
    if xtr.shape[1] != xte.shape[1]:
        raise ValueError(f"train_feats and test_feats must have the same feature size, got {tuple(xtr.shape)} "
                         f"and {tuple(xte.shape)}")
    ytr = _as_labels("train_labels", train_labels, xtr.shape[0], "train_feats")
    yte = _as_labels("test_labels", test_labels, xte.shape[0], "test_feats")
    if torch.unique(ytr).numel() < 2:
        raise ValueError("train_labels must contain at least 2 classes")
    if isinstance(C, bool) or not isinstance(C, (int, float)) or C <= 0:
        raise ValueError(f"C must be a positive number, got {C!r}")
    mean, std = xtr.mean(0), xtr.std(0).clamp(min=1e-6)
    clf = LogisticRegression(C=float(C), max_iter=_check_int("max_iter", max_iter))
    clf.fit(((xtr - mean) / std).numpy(), ytr.numpy())
    pred = clf.predict(((xte - mean) / std).numpy())
    return float((torch.from_numpy(pred) == yte).float().mean())


def few_label_probe(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                    test_labels: torch.Tensor, *, per_class: int, draws: int = 10, seed: int = 0,
                    C: float = 1.0) -> tuple[float, float]:
    """Linear-probe accuracy with only ``per_class`` labelled examples of each class, averaged over ``draws``.

    Each draw picks ``per_class`` rows of every class of ``train_labels`` at random
    (a ``torch.Generator`` seeded with ``seed + draw``), fits :func:`linear_probe` on
    them and scores it on all of ``test_feats`` (M, F) / ``test_labels`` (M,). Returns
    ``(mean, standard deviation)`` of the accuracies over the draws: with few labels
    one draw is a noisy estimate, the semi-supervised protocol of SimCLR and MoCo
    (Chen et al., 2020) reports the average.
    """
    xtr = _as_2d_float("train_feats", train_feats)
    ytr = _as_labels("train_labels", train_labels, xtr.shape[0], "train_feats")
    per_class = _check_int("per_class", per_class)
    draws = _check_int("draws", draws)
    seed = _check_int("seed", seed, minimum=0)
    classes = torch.unique(ytr)
    counts = torch.stack([(ytr == c).sum() for c in classes])
    if int(counts.min()) < per_class:
        raise ValueError(f"per_class={per_class} but class {int(classes[counts.argmin()])} has only "
                         f"{int(counts.min())} rows in train_labels")
    accs = []
    for d in range(draws):
        g = torch.Generator().manual_seed(seed + d)
        idx = torch.cat([torch.nonzero(ytr == c).flatten()[torch.randperm(int(n), generator=g)[:per_class]]
                         for c, n in zip(classes, counts)])
        accs.append(linear_probe(xtr[idx], ytr[idx], test_feats, test_labels, C=C))
    acc = torch.tensor(accs)
    return float(acc.mean()), float(acc.std()) if draws > 1 else 0.0
