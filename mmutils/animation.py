"""Text to short clips (chapter 8): a motion caption split into who and how it moves, the object found in a
generated frame, a mover that moves the last frame the way the text says (kernels predicted from the prompt), and clips
judged from what an oracle reads in each frame (identity consistency, motion accuracy).

A clip here is a sequence of frames of one object; the oracle of chapter 6 reads each frame into a
:class:`~mmutils.world.Scene`, and the measures below take those readings: ``clips[i][k]`` is the scene read in
frame ``k`` of clip ``i``. Identity consistency asks whether the object stays the same object (its shape and
colour) from frame to frame; motion accuracy whether its centre moves the way the caption says.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_float, check_instance, check_int, check_tensor
from .data import object_mask, shift_cells
from .nn.layers import masked_mean
from .world import DIRECTION_VECTORS, DIRECTIONS, Scene, parse_caption

__all__ = ["KernelMover", "clip_scores", "identity_consistent", "kernel_move", "motion_correct", "motion_direction",
           "object_centres", "room_to_move", "shift_grids", "split_motion"]


def split_motion(caption: str) -> tuple[str, str]:
    """Who moves and how: "the little orange circle moves to the right" -> ("the little orange circle",
    "moves to the right"). Raises ``ValueError`` if the caption has no "moves" or names more than one motion."""
    check_instance("caption", caption, str)
    words = caption.split()
    if words.count("moves") != 1 or " and " in f" {caption} ":
        raise ValueError(f"caption must describe one object that moves (one 'moves'), got {caption!r}")
    k = words.index("moves")
    if k == 0:
        raise ValueError(f"caption must name the object before 'moves', got {caption!r}")
    return " ".join(words[:k]), " ".join(words[k:])


def motion_direction(caption: str) -> str:
    """The direction a one-object motion caption asks for ("left", "right", "up" or "down"), by
    :func:`mmutils.world.parse_caption`; ``ValueError`` if it asks for none or several."""
    moves = [fact[2] for fact in parse_caption(caption) if fact[0] == "moves"]
    if len(moves) != 1:
        raise ValueError(f"caption must ask for exactly one motion, got {caption!r}")
    return moves[0]


def object_centres(images: torch.Tensor, threshold: float = 0.15) -> torch.Tensor:
    """The centre of the non-background pixels of each image, as a generator would locate its object before
    continuing the clip: images (n, 3, H, W) in [0, 1] -> (n, 2) of (x, y) in [0, 1] (pixel centres; x to the
    right, y down), NaN where no pixel differs from the background grey by more than ``threshold``."""
    check_tensor("images", images, 4, size={1: 3}, dtype="float")
    threshold = check_float("threshold", threshold, min=0.0, max=1.0)
    mask = object_mask(images, threshold)[:, 0]  # (n, H, W)
    h, w = mask.shape[1:]
    ys = (torch.arange(h, dtype=mask.dtype) + 0.5) / h
    xs = (torch.arange(w, dtype=mask.dtype) + 0.5) / w
    total = mask.sum((1, 2))
    x = (mask * xs[None, None, :]).sum((1, 2)) / total
    y = (mask * ys[None, :, None]).sum((1, 2)) / total
    return torch.stack([x, y], 1)  # 0 / 0 is NaN where the mask is empty


def _check_directions(directions, n: int) -> list[str]:
    check_instance("directions", directions, (list, tuple))
    if len(directions) != n:
        raise ValueError(f"directions must give one direction per clip ({n}), got {len(directions)}")
    for d in directions:
        if d not in DIRECTION_VECTORS:
            raise ValueError(f"directions must be among {DIRECTIONS}, got {d!r}")
    return list(directions)


def room_to_move(centres: torch.Tensor, directions: Sequence[str], travel: float, *,
                 margin: float = 0.15) -> torch.Tensor:
    """Whether each object, moved by ``travel`` (a fraction of the image side) in its direction from its centre
    (n, 2), keeps its centre at least ``margin`` from every border: (n,) bool; False where a centre is NaN."""
    check_tensor("centres", centres, 2, size={1: 2}, dtype="float")
    directions = _check_directions(directions, len(centres))
    travel = check_float("travel", travel, min=0.0)
    margin = check_float("margin", margin, min=0.0, max=0.5)
    step = torch.tensor([DIRECTION_VECTORS[d] for d in directions], dtype=centres.dtype).reshape(-1, 2)
    end = centres + travel * step
    inside = lambda p: ((p >= margin) & (p <= 1 - margin)).all(1)  # noqa: E731 (NaN compares False)
    return inside(centres) & inside(end)


def shift_grids(grids: torch.Tensor, directions: Sequence[str], fill: torch.Tensor) -> torch.Tensor:
    """Grids (n, C, h, w), e.g. latent frames, each moved by one cell in ``directions[i]`` (x to the right, y down),
    relative to a background ``fill`` (C, h, w), e.g. the latents of an empty frame: ``fill + shift(grid - fill)``.
    What differs from the background moves; what leaves the grid is dropped, the row or column that comes in shows
    ``fill``, and every cell keeps the background of its own place (an encoder's border cells differ from its inner
    ones). A perfect animator of one-cell moves would draw this."""
    check_tensor("grids", grids, 4, dtype="float")
    directions = _check_directions(directions, len(grids))
    check_tensor("fill", fill, 3, size={0: grids.shape[1], 1: grids.shape[2], 2: grids.shape[3]}, dtype="float")
    moved = []
    for grid, d in zip(grids, directions):
        dx, dy = (int(v) for v in DIRECTION_VECTORS[d])
        moved.append(fill + shift_cells(grid - fill, dx, dy))  # (C, h, w); zeros, so fill, come in
    return torch.stack(moved)


def kernel_move(grids: torch.Tensor, kernels: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Grids (n, C, h, w) each moved by its own kernel (n, k, k), odd k, weights usually summing to 1, relative to a
    background ``fill`` (C, h, w): ``fill + K * (grid - fill)``, where every channel is convolved with the kernel as
    by ``torch.nn.functional.conv2d``, a cross-correlation with zero padding:
    ``out[y, x] = sum_ij K[i, j] in[y + i - k // 2, x + j - k // 2]``. So what differs from the background moves,
    and nothing else appears; a one-hot kernel moves the grid by whole cells (its 1 left of the centre: one cell to
    the right, as :func:`shift_grids`). A CDNA-style transformation (Finn, Goodfellow and Levine, 2016, apply their
    kernels to the whole previous frame and composite the results with predicted masks)."""
    check_tensor("grids", grids, 4, dtype="float")
    n, c, h, w = grids.shape
    check_tensor("kernels", kernels, 3, size={0: n}, dtype="float")
    k = kernels.shape[1]
    if kernels.shape[2] != k or k % 2 == 0:
        raise ValueError(f"kernels must be square with an odd side, got {tuple(kernels.shape[1:])}")
    check_tensor("fill", fill, 3, size={0: c, 1: h, 2: w}, dtype="float")
    weight = kernels.to(grids.dtype).repeat_interleave(c, 0).unsqueeze(1)  # (n C, 1, k, k): kernel i for grid i
    moved = F.conv2d((grids - fill).reshape(1, n * c, h, w), weight, padding=k // 2, groups=n * c)  # (1, n C, h, w)
    return fill + moved.reshape(n, c, h, w)


class KernelMover(nn.Module):
    """A frame predictor that moves rather than draws: from a motion prompt it predicts one k x k kernel (a
    softmax over the k² weights) and moves the last frame's latent grid with it (:func:`kernel_move`), as CDNA
    (Finn, Goodfellow and Levine, 2016) predicts kernels that transform the previous frame. A k x k kernel moves by
    at most k // 2 cells per frame; a kernel that is not one-hot blends shifted copies. The prompt is read
    as the mean of its token embeddings, then an MLP. ``forward(grids (B, C, h, w), ids (B, L), mask (B, L),
    fill (C, h, w))`` -> the next grids (B, C, h, w): the background ``fill`` plus the grids' difference from it,
    moved."""

    def __init__(self, vocab_size: int, dim: int = 32, kernel: int = 3):
        super().__init__()
        vocab_size = check_int("vocab_size", vocab_size, min=1)
        dim = check_int("dim", dim, min=1)
        self.kernel = check_int("kernel", kernel, min=3)
        if kernel % 2 == 0:
            raise ValueError(f"kernel must be odd (a centre cell and neighbours on every side), got {kernel}")
        self.embed = nn.Embedding(vocab_size, dim)
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, kernel * kernel))

    def kernels(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The kernels (B, k, k), each summing to 1, for prompts ``ids`` / ``mask`` (B, L)."""
        check_tensor("ids", ids, 2, dtype="int")
        logits = self.head(masked_mean(self.embed(ids), mask))  # (B, k²); masked_mean checks the mask
        return logits.softmax(-1).reshape(-1, self.kernel, self.kernel)

    def forward(self, grids: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
        return kernel_move(grids, self.kernels(ids, mask), fill)  # (B, C, h, w)


def _check_clips(clips) -> list[list[Scene]]:
    check_instance("clips", clips, (list, tuple))
    for clip in clips:
        check_instance("clips[i]", clip, (list, tuple))
        if not clip:
            raise ValueError("clips must hold at least one frame each")
        for frame in clip:
            check_instance("clips[i][k]", frame, Scene)
    return [list(c) for c in clips]


def identity_consistent(clips: Sequence[Sequence[Scene]]) -> list[bool]:
    """Per clip, whether every frame shows the same cast: at least one object in the first frame, and the same
    multiset of (shape, colour) read in every frame. Size is left out: the verdict is about what each object is."""
    out = []
    for clip in _check_clips(clips):
        casts = [Counter((o.shape, o.color) for o in frame.objects) for frame in clip]
        out.append(bool(casts[0]) and all(c == casts[0] for c in casts[1:]))
    return out


def motion_correct(clips: Sequence[Sequence[Scene]], directions: Sequence[str], travel: float, *,
                   tolerance: float = 0.5) -> list[bool]:
    """Per one-object clip, whether the object moved as asked: exactly one object read in the first and the last
    frame, and its centre moved more than ``tolerance * travel`` along ``directions[i]`` and less than
    ``tolerance * travel`` across it (``travel``: the distance asked for, a fraction of the image side)."""
    clips = _check_clips(clips)
    directions = _check_directions(directions, len(clips))
    travel = check_float("travel", travel, positive=True)
    tolerance = check_float("tolerance", tolerance, positive=True, max=1.0)
    out = []
    for clip, d in zip(clips, directions):
        first, last = clip[0].objects, clip[-1].objects
        if len(first) != 1 or len(last) != 1:
            out.append(False)
            continue
        ux, uy = DIRECTION_VECTORS[d]
        dx, dy = last[0].x - first[0].x, last[0].y - first[0].y
        along, across = dx * ux + dy * uy, abs(dx * uy - dy * ux)
        out.append(along > tolerance * travel and across < tolerance * travel)
    return out


def clip_scores(clips: Sequence[Sequence[Scene]], directions: Sequence[str], travel: float) -> dict[str, float]:
    """The shares of clips with a consistent identity (:func:`identity_consistent`), with the asked motion
    (:func:`motion_correct`), and with both."""
    ident = identity_consistent(clips)
    moved = motion_correct(clips, directions, travel)
    n = max(len(ident), 1)
    return {"identity": sum(ident) / n, "motion": sum(moved) / n,
            "both": sum(a and b for a, b in zip(ident, moved)) / n}
