"""Video understanding on ShapesWorld clips (chapter 17): motion labels, sounds, and four ways to read time.

* :func:`make_clips` – clips in which one object moves left, right, up or down while the others stand still
  (or nothing moves), with the motion's caption and the scene's sound.
* :class:`FrameAveraging` – a 2-D CNN on every frame, features averaged over time (blind to the order of frames).
* :class:`FrameDifferences` – early temporal fusion: frames and their differences stacked as channels of one image.
* :class:`Conv2Plus1D` – factorized space-time convolutions, a spatial 3x3 then a temporal 3 (R(2+1)D), with
  :func:`r2plus1d_mid_width`, the paper's middle width.
* :class:`DividedSpaceTimeBlock` / :class:`SpaceTimeTransformer` – TimeSformer's divided attention: every region
  attends over time, then every frame over space.
* :class:`ClipClassifier` – linear heads on any of them, e.g. the motion and the color of the object that moves.

Every video encoder maps clips (B, T, 3, H, W) to a vector (B, dim).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import world
from .checks import check_float, check_instance, check_int, check_rng, check_tensor
from .data import to_tensor_images
from .nn.encoders import ConvTower

__all__ = ["MOTIONS", "ClipClassifier", "Conv2Plus1D", "DividedSpaceTimeBlock", "FrameAveraging", "FrameDifferences",
           "SpaceTimeTransformer", "make_clips", "r2plus1d_mid_width"]

MOTIONS = (*world.DIRECTIONS, "still")  # the motion labels of make_clips: left, right, up, down, still


def make_clips(n: int, *, frames: int = 8, objects: int = 1, still: float = 0.2, speed: float = 0.05,
               n_fft: int = 128, hop_length: int = 128, seed: int | np.random.Generator = 0) -> dict:
    """``n`` clips at 32x32 of ``objects`` objects: in a moving clip the first object moves, the others stand still.

    The mover travels ``speed`` of the image side per frame, left, right, up or down, on a path that stays inside
    the image (:func:`mmutils.world.sample_sequences`); the other objects stay where they are at frame 0 and may be
    passed over. In ``round(still * n)`` clips, chosen at random, nothing moves (every object is held at its frame-0
    place). Returns a dict:

    * ``videos`` float (n, frames, 3, 32, 32) in [0, 1];
    * ``motions`` int64 (n,), the mover's direction as an index into :data:`MOTIONS` (4 = still);
    * ``movers`` int64 (n,), which object moves, named by its color as an index into
      :data:`mmutils.world.COLORS` (-1 in still clips);
    * ``spectrograms`` float (n, n_fft // 2 + 1, steps): the log spectrogram of the scene's sound, one tone per
      object from left to right at frame 0 (pitch from the shape, timbre from the color, loudness from the size;
      :func:`mmutils.world.synthesize_audio`, 0.5 s at 8 kHz);
    * ``captions``: the mover's motion ("the small red circle moves left"), ``None`` in still clips;
    * ``sequences``: the :class:`mmutils.world.Sequence` of each clip.
    """
    n = check_int("n", n, min=1)
    frames = check_int("frames", frames, min=2)
    objects = check_int("objects", objects, min=1, max=4)
    n_still = round(check_float("still", still, min=0.0, max=1.0) * n)
    rng = check_rng("seed", seed)
    moving = world.sample_sequences(n, frames=frames, min_objects=objects, max_objects=objects, speed=speed,
                                    seed=rng)
    is_still = np.zeros(n, dtype=bool)
    is_still[rng.permutation(n)[:n_still]] = True
    seqs, motions, movers, captions = [], [], [], []
    for s, held in zip(moving, is_still):
        positions = np.repeat(s.positions[:1], frames, axis=0)  # (T, K, 2): everybody at frame 0 ...
        velocities = [(0.0, 0.0)] * objects
        mover = s.scene.objects[0]
        if not held:
            positions[:, 0] = s.positions[:, 0]  # ... except the mover
            velocities[0] = s.velocities[0]
            captions.append(world.motion_caption(world.Scene((mover,)), velocities[:1], rng=rng))
            motions.append(_direction(*velocities[0]))
            movers.append(world.COLORS.index(mover.color))
        else:
            captions.append(None)
            motions.append(MOTIONS.index("still"))
            movers.append(-1)
        seqs.append(world.Sequence(s.scene, tuple(velocities), positions, captions[-1] or ""))
    videos = to_tensor_images(world.render_sequences(seqs))  # (n, T, 3, 32, 32)
    sounds = world.synthesize_audio([s.frame(0) for s in seqs])  # (n, 4000)
    return {"videos": videos, "motions": torch.tensor(motions), "movers": torch.tensor(movers),
            "spectrograms": world.spectrogram(sounds, n_fft=n_fft, hop_length=hop_length),
            "captions": captions, "sequences": seqs}


def _direction(vx: float, vy: float) -> int:
    d = ("right" if vx > 0 else "left") if abs(vx) >= abs(vy) else ("down" if vy > 0 else "up")
    return MOTIONS.index(d)


def _check_video(videos, frames: int | None = None, side: int | None = None) -> torch.Tensor:
    size = {2: 3} | ({1: frames} if frames is not None else {}) | ({3: side, 4: side} if side is not None else {})
    return check_tensor("videos", videos, 5, size=size, dtype="float")


class FrameAveraging(nn.Module):
    """The mean over frames of a 2-D CNN's pooled features: (B, T, 3, H, W) -> (B, dim).

    Any reordering of the frames gives the same output, so a clip and the same clip played backwards look alike:
    the direction of a motion is invisible. This is the single-frame network of Karpathy et al. (2014), who
    averaged its predictions over a video (here the features are averaged), and the parameter-free mean pooling of
    CLIP4Clip (Luo et al., 2022).
    """

    def __init__(self, dim: int = 32, widths: tuple[int, ...] = (8, 16, 32)):
        super().__init__()
        self.frame_encoder = ConvTower(3, widths, pool="mean", out_dim=check_int("dim", dim, min=1))
        self.dim = dim

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        b, t = _check_video(videos).shape[:2]
        per_frame = self.frame_encoder(videos.flatten(0, 1)).view(b, t, -1)  # (B, T, dim)
        return per_frame.mean(dim=1)  # (B, dim): the order of the frames is gone


class FrameDifferences(nn.Module):
    """Early temporal fusion: the T frames and their T - 1 differences as the channels of one image, a 2-D CNN.

    (B, T, 3, H, W) -> (B, dim). The difference ``x[t+1] - x[t]`` is positive where the object arrives and negative
    where it leaves, which gives the direction away to the first convolution (Karpathy et al., 2014, "early fusion";
    the two-stream network of Simonyan and Zisserman, 2014, feeds stacked optical flow instead).
    """

    def __init__(self, frames: int = 8, dim: int = 32, widths: tuple[int, ...] = (16, 32, 32)):
        super().__init__()
        self.frames = check_int("frames", frames, min=2)
        self.encoder = ConvTower(3 * (2 * frames - 1), widths, pool="mean", out_dim=check_int("dim", dim, min=1))
        self.dim = dim

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        videos = _check_video(videos, frames=self.frames)
        differences = videos[:, 1:] - videos[:, :-1]  # (B, T - 1, 3, H, W)
        stacked = torch.cat([videos, differences], dim=1).flatten(1, 2)  # (B, 3 (2T - 1), H, W)
        return self.encoder(stacked)  # (B, dim)


def r2plus1d_mid_width(in_channels: int, out_channels: int, t: int = 3, d: int = 3) -> int:
    """R(2+1)D's middle width M_i = floor(t d^2 N_{i-1} N_i / (d^2 N_{i-1} + t N_i)) (Tran et al., 2018, eq. 1).

    With it, a (1, d, d) convolution from N_{i-1} to M_i channels followed by a (t, 1, 1) one from M_i to N_i
    channels has about as many weights as one (t, d, d) convolution from N_{i-1} to N_i channels, never more.
    """
    n_in, n_out = check_int("in_channels", in_channels, min=1), check_int("out_channels", out_channels, min=1)
    t, d = check_int("t", t, min=1), check_int("d", d, min=1)
    return (t * d * d * n_in * n_out) // (d * d * n_in + t * n_out)


def _groups(channels: int) -> int:
    """The largest of 4, 2, 1 that divides ``channels``: GroupNorm's group count."""
    return next(g for g in (4, 2, 1) if channels % g == 0)


class Conv2Plus1D(nn.Module):
    """Factorized space-time convolutions (R(2+1)D, Tran et al., 2018): (B, T, 3, H, W) -> (B, dim).

    Each stage is a spatial ``Conv3d`` with kernel (1, 3, 3) and stride (1, 2, 2) to ``M`` channels, then a
    temporal ``Conv3d`` with kernel (3, 1, 1) to the stage width, each followed by GroupNorm and ReLU (the paper
    uses BatchNorm); the result is averaged over time and space and projected to ``dim``. The temporal kernels
    compare neighbouring frames at every place, which is where motion shows. ``matched=False`` (the default) sets
    the middle width ``M`` to the stage width, which gives fewer weights than a 3x3x3 convolution; ``matched=True``
    sizes it as the paper does (:func:`r2plus1d_mid_width`), so that each stage has about the weights of the full
    3x3x3 one.
    """

    def __init__(self, dim: int = 32, widths: tuple[int, ...] = (8, 16, 32), matched: bool = False):
        super().__init__()
        check_instance("matched", matched, bool)
        layers, c = [], 3
        for w in widths:
            m = r2plus1d_mid_width(c, w) if matched else w  # the middle width M_i
            layers += [nn.Conv3d(c, m, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False),  # space
                       nn.GroupNorm(_groups(m), m), nn.ReLU(inplace=True),
                       nn.Conv3d(m, w, (3, 1, 1), padding=(1, 0, 0), bias=False),  # time
                       nn.GroupNorm(_groups(w), w), nn.ReLU(inplace=True)]
            c = w
        self.stages = nn.Sequential(*layers)
        self.proj = nn.Linear(c, check_int("dim", dim, min=1))
        self.dim = dim

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        x = self.stages(_check_video(videos).transpose(1, 2))  # (B, C, T, h, w): channels before time
        return self.proj(x.mean(dim=(2, 3, 4)))  # (B, dim)


class DividedSpaceTimeBlock(nn.Module):
    """One block of TimeSformer's divided space-time attention (Bertasius et al., 2021), pre-norm.

    ``forward(x)``: tokens (B, T, N, D), N regions per frame -> (B, T, N, D). First every region attends over the
    T frames at its own place (:meth:`attend_time`, a sequence of T for each of the B N places), then every frame
    attends over its N regions (:meth:`attend_space`, a sequence of N for each of the B T frames), then an MLP;
    each with a residual connection. Its cost is B N T^2 + B T N^2 attention scores instead of B (T N)^2 for joint
    space-time attention.
    """

    def __init__(self, dim: int = 32, heads: int = 4):
        super().__init__()
        dim, heads = check_int("dim", dim, min=1), check_int("heads", heads, min=1)
        if dim % heads:
            raise ValueError(f"dim must be divisible by heads, got dim={dim} and heads={heads}")
        self.norm_time, self.norm_space, self.norm_mlp = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.time_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.space_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def attend_time(self, x: torch.Tensor) -> torch.Tensor:
        """Temporal attention with its residual: (B, T, N, D) -> (B, T, N, D); place n sees only place n."""
        b, t, n, d = x.shape
        h = self.norm_time(x).transpose(1, 2).reshape(b * n, t, d)  # (B N, T, D): each place over time
        return x + self.time_attn(h, h, h, need_weights=False)[0].view(b, n, t, d).transpose(1, 2)

    def attend_space(self, x: torch.Tensor) -> torch.Tensor:
        """Spatial attention with its residual: (B, T, N, D) -> (B, T, N, D); frame t sees only frame t."""
        b, t, n, d = x.shape
        h = self.norm_space(x).reshape(b * t, n, d)  # (B T, N, D): each frame over space
        return x + self.space_attn(h, h, h, need_weights=False)[0].view(b, t, n, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attend_space(self.attend_time(check_tensor("x", x, 4, dtype="float")))  # (B, T, N, D)
        return x + self.mlp(self.norm_mlp(x))  # (B, T, N, D)


class SpaceTimeTransformer(nn.Module):
    """A small TimeSformer: a 2-D CNN makes region tokens per frame, divided space-time blocks mix them.

    (B, T, 3, 32, 32) -> (B, dim). Each frame becomes a 4x4 grid of ``dim``-d tokens (a three-stage
    :class:`~mmutils.nn.encoders.ConvTower`, in place of ViT's linear patch embedding), plus a learned embedding of
    its region and one of its frame; ``layers`` :class:`DividedSpaceTimeBlock`; a LayerNorm; the mean of all tokens.
    TimeSformer instead prepends a class token, which every query may also attend to, and classifies from it after
    the last block. Either way the order of the frames enters only through the frame embeddings.
    """

    def __init__(self, frames: int = 8, dim: int = 32, heads: int = 4, layers: int = 1,
                 widths: tuple[int, int, int] = (8, 16, 32)):
        super().__init__()
        self.frames = check_int("frames", frames, min=1)
        check_instance("widths", widths, (tuple, list))
        if len(widths) != 3:
            raise ValueError(f"widths must give 3 stages (32x32 -> a 4x4 grid), got {tuple(widths)}")
        self.patches = ConvTower(3, widths, out_dim=dim)  # stride-2 stages: 32x32 -> (16, dim)
        self.space_pos = nn.Parameter(torch.zeros(1, 1, 16, dim))
        self.time_pos = nn.Parameter(torch.zeros(1, frames, 1, dim))
        nn.init.normal_(self.space_pos, std=0.02)
        nn.init.normal_(self.time_pos, std=0.02)
        self.blocks = nn.ModuleList(DividedSpaceTimeBlock(dim, heads) for _ in range(check_int("layers", layers,
                                                                                              min=1)))
        self.norm = nn.LayerNorm(dim)
        self.dim = dim

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        b, t = _check_video(videos, frames=self.frames, side=32).shape[:2]
        x = self.patches(videos.flatten(0, 1)).view(b, t, 16, -1)  # (B, T, 16, dim)
        x = x + self.space_pos + self.time_pos  # where and when
        for block in self.blocks:
            x = block(x)  # (B, T, 16, dim)
        return self.norm(x).mean(dim=(1, 2))  # (B, dim)


class ClipClassifier(nn.Module):
    """A video encoder with one linear head per label: ``heads`` maps a name to its number of classes.

    ``forward(videos)``: (B, T, 3, H, W) -> {name: logits (B, classes)}. :meth:`loss` sums the heads'
    cross-entropies, skipping targets of -1 (e.g. the mover's shape in a clip where nothing moves).
    """

    def __init__(self, encoder: nn.Module, heads: Mapping[str, int]):
        super().__init__()
        self.encoder = check_instance("encoder", encoder, nn.Module)
        check_instance("heads", heads, Mapping)
        if not heads:
            raise ValueError("heads must name at least one head, got an empty mapping")
        self.heads = nn.ModuleDict({k: nn.Linear(encoder.dim, check_int(f"heads[{k!r}]", c, min=2))
                                    for k, c in heads.items()})

    def forward(self, videos: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.encoder(videos)  # (B, dim)
        return {k: head(z) for k, head in self.heads.items()}  # {name: (B, classes)}

    def loss(self, videos: torch.Tensor, targets: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Sum over heads of the mean cross-entropy over targets != -1; ``targets`` int64 (B,) per head."""
        logits = self(videos)
        return sum(F.cross_entropy(logits[k], targets[k], ignore_index=-1) for k in self.heads)
