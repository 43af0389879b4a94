"""Image-text matching: hard negatives, a cross-encoder matching head, and re-ranking.

Two ways to score how well a caption fits an image:

* a **dual encoder** embeds images and texts separately and compares them with one
  dot product (CLIP, Radford et al., 2021). The course's dual encoder is
  :class:`mmutils.clip.DualEncoder`, re-exported here as :class:`DualEncoder`.
* a **cross-encoder** reads the image and the text together and outputs one match
  logit: the image-text matching (ITM) head of ALBEF and BLIP (Li et al., 2021,
  2022), here :class:`CrossEncoderITM`.

The tools around the comparison:

* :func:`perturb_caption` / :func:`hard_negative_captions` – captions that differ from a
  true caption of the scene in one color, shape or size, or in the relation, and are
  false of it (checked with :func:`mmutils.world.facts_hold`).
* :func:`caption_key` – the facts of a caption, closed under converse relations: the
  duplicate-aware retrieval key for :func:`mmutils.metrics.recall_at_k`.
* :func:`region_labels` – what sits in each cell of the image grid, to pretrain an
  image tower that knows what is where.
* :func:`calibrate_threshold` – the accuracy-maximizing threshold of a score.
* :func:`pair_scores` / :func:`rerank` – score (query, gallery) pairs in chunks, and
  re-rank the top ``k`` of a fast model's similarity matrix with a slow, precise scorer.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .clip import DualEncoder
from .encoders import _check_mask, check_tensor, masked_mean

__all__ = [
    "DualEncoder", "NEGATIVE_KINDS", "perturb_caption", "hard_negative_captions", "caption_key",
    "region_labels", "CrossEncoderITM", "calibrate_threshold", "pair_scores", "rerank",
]

NEGATIVE_KINDS = ("color", "shape", "size", "relation")
_OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


# --------------------------------------------------------------------------- #
# Hard negatives
# --------------------------------------------------------------------------- #
def _check_choices(name: str, values, allowed: tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a sequence of strings, got {type(values).__name__}")
    values = tuple(values)
    unknown = [v for v in values if v not in allowed]
    if unknown or not values:
        raise ValueError(f"{name} must be a non-empty subset of {allowed}, got {values}")
    return values


def _rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool) and rng >= 0:
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy Generator or a non-negative int seed, got {rng!r}")


def perturb_caption(scene, rng: np.random.Generator | int = 0, *, kinds: Sequence[str] = NEGATIVE_KINDS,
                    p: Sequence[float] | None = None, shapes: Sequence[str] | None = None,
                    colors: Sequence[str] | None = None, sizes: Sequence[str] | None = None,
                    max_tries: int = 50) -> tuple[str, str]:
    """A caption that is FALSE of ``scene`` but differs from a true one in one detail.

    One object's color, shape or size is changed to another value from
    ``colors`` / ``shapes`` / ``sizes`` (default: all of the world's), or, for
    ``"relation"``, two objects exchange places (so "A left of B" becomes "A right
    of B" or "B left of A"); the modified scene is captioned with
    :func:`mmutils.world.caption` (random wording from ``rng``). A candidate is
    kept only if :func:`mmutils.world.facts_hold` says it is false of ``scene``.
    These are the hard negatives of ITM training (Li et al., 2021) and of the
    ARO benchmark (Yuksekgonul et al., 2023).

    ``kinds``: the perturbations to draw from, with probabilities ``p`` (default
    uniform). A kind that cannot apply is left out (``"relation"`` needs two
    objects; an attribute needs two allowed values). Returns ``(caption, kind)``.
    Raises ``ValueError`` if no false caption is found in ``max_tries`` draws.
    """
    from . import world

    if not isinstance(scene, world.Scene):
        raise TypeError(f"scene must be a mmutils.world.Scene, got {type(scene).__name__}")
    if len(scene) == 0:
        raise ValueError("scene must have at least one object")
    rng = _rng(rng)
    kinds = _check_choices("kinds", kinds, NEGATIVE_KINDS)
    if p is None:
        p = [1.0] * len(kinds)
    if isinstance(p, str) or not isinstance(p, Sequence) or len(p) != len(kinds) or \
            any(isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 for v in p) or sum(p) <= 0:
        raise ValueError(f"p must hold one non-negative weight per kind ({len(kinds)}), not all zero, got {p!r}")
    values = {"shape": _check_choices("shapes", world.SHAPES if shapes is None else shapes, world.SHAPES),
              "color": _check_choices("colors", world.COLORS if colors is None else colors, world.COLORS),
              "size": _check_choices("sizes", world.SIZES if sizes is None else sizes, world.SIZES)}
    usable = [(k, w) for k, w in zip(kinds, p)
              if w > 0 and (len(scene) >= 2 if k == "relation" else len(values[k]) >= 2)]
    if not usable:
        raise ValueError(f"none of kinds {kinds} can change this scene ({len(scene)} object(s), "
                         f"{ {k: len(v) for k, v in values.items()} } allowed values)")
    kinds = tuple(k for k, _ in usable)
    weights = np.array([w for _, w in usable], dtype=float)
    weights /= weights.sum()
    objs = scene.objects
    for _ in range(max_tries):
        kind = kinds[rng.choice(len(kinds), p=weights)]
        new = list(objs)
        if kind == "relation":
            i, j = rng.choice(len(objs), size=2, replace=False)
            a, b = objs[i], objs[j]
            new[i] = world.Obj(a.shape, a.color, a.size, b.x, b.y)
            new[j] = world.Obj(b.shape, b.color, b.size, a.x, a.y)
        else:
            k = rng.integers(len(objs))
            options = [v for v in values[kind] if v != getattr(objs[k], kind)]
            if not options:
                continue
            attrs = {"shape": objs[k].shape, "color": objs[k].color, "size": objs[k].size,
                     kind: options[rng.integers(len(options))]}
            new[k] = world.Obj(attrs["shape"], attrs["color"], attrs["size"], objs[k].x, objs[k].y)
        text = world.caption(world.Scene(tuple(new)), rng=rng)
        if not world.facts_hold(world.parse_caption(text), scene):
            return text, kind
    raise ValueError(f"no false caption found for the scene in max_tries={max_tries} draws of kinds {kinds}")


def hard_negative_captions(scenes, rng: np.random.Generator | int = 0, **kwargs) -> tuple[list[str], list[str]]:
    """One hard-negative caption per scene (see :func:`perturb_caption`, whose keyword
    arguments pass through). Returns ``(captions, kinds)``, two lists of ``len(scenes)``."""
    if not isinstance(scenes, (list, tuple)):
        raise TypeError(f"scenes must be a list of Scene, got {type(scenes).__name__}")
    rng = _rng(rng)
    out = [perturb_caption(s, rng, **kwargs) for s in scenes]
    return [t for t, _ in out], [k for _, k in out]


def caption_key(text_or_facts) -> frozenset:
    """The duplicate-aware retrieval key of a caption: its facts plus the converse of each relation.

    "A left of B" also states "B right of A", so the key of a caption that names
    every object of a scene with all three attributes equals
    :func:`mmutils.world.scene_facts` of a scene exactly when the caption is true
    of that scene. With partial captions ("a red object") or scenes with more
    objects than the caption names, equal keys are sufficient but not necessary
    for truth: use :func:`mmutils.world.facts_hold` there.

    ``text_or_facts``: a caption (parsed with :func:`mmutils.world.parse_caption`)
    or a set of facts. Returns a frozenset of facts.
    """
    from . import world

    if isinstance(text_or_facts, str):
        facts = world.parse_caption(text_or_facts)
    elif isinstance(text_or_facts, (set, frozenset)):
        facts = frozenset(text_or_facts)
    else:
        raise TypeError(f"text_or_facts must be a caption string or a set of facts, "
                        f"got {type(text_or_facts).__name__}")
    closed = set(facts)
    for fact in facts:
        if fact[0] == "rel":
            _, a, rel, b = fact
            closed.add(("rel", b, _OPPOSITE[rel], a))
    return frozenset(closed)


# --------------------------------------------------------------------------- #
# A pretrained image tower: what is where
# --------------------------------------------------------------------------- #
def region_labels(scenes, grid: int = 4, *, shapes: Sequence[str] | None = None,
                  colors: Sequence[str] | None = None, sizes: Sequence[str] | None = None) -> torch.Tensor:
    """Which object sits in each cell of a ``grid`` x ``grid`` partition of each scene.

    The cell of an object is the one that holds its centre. Returns an int64
    tensor (n, grid * grid), row-major: 0 for an empty cell, else ``1 +`` the index
    of the object's (shape, color, size) among the ``len(shapes) * len(colors) *
    len(sizes)`` descriptors (default: all of the world's). Training a per-region
    classifier on these labels gives an image tower that knows what is where, the
    way matching models start from a pretrained backbone or detector
    (ALBEF, Li et al., 2021; Anderson et al., 2018).
    """
    from . import world

    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
        raise ValueError(f"grid must be a positive int, got {grid!r}")
    if not isinstance(scenes, (list, tuple)) or not all(isinstance(s, world.Scene) for s in scenes):
        raise TypeError("scenes must be a list of mmutils.world.Scene")
    shapes = _check_choices("shapes", world.SHAPES if shapes is None else shapes, world.SHAPES)
    colors = _check_choices("colors", world.COLORS if colors is None else colors, world.COLORS)
    sizes = _check_choices("sizes", world.SIZES if sizes is None else sizes, world.SIZES)
    labels = torch.zeros(len(scenes), grid * grid, dtype=torch.long)
    for i, scene in enumerate(scenes):
        for o in scene.objects:
            if o.shape not in shapes or o.color not in colors or o.size not in sizes:
                raise ValueError(f"scenes[{i}] has an object {o.desc} outside shapes={shapes}, colors={colors}, "
                                 f"sizes={sizes}")
            r, c = min(int(o.y * grid), grid - 1), min(int(o.x * grid), grid - 1)
            labels[i, r * grid + c] = 1 + (shapes.index(o.shape) * len(colors) + colors.index(o.color)) \
                * len(sizes) + sizes.index(o.size)
    return labels


# --------------------------------------------------------------------------- #
# The cross-encoder
# --------------------------------------------------------------------------- #
class CrossEncoderITM(nn.Module):
    """Image-text matching (ITM) head over fused features: one match logit per (image, caption) pair.

    The ITM heads of ALBEF and BLIP (Li et al., 2021, 2022) fuse the two
    modalities with cross-attention and classify the fused features as match or
    no match. Here each image region *reads the caption*: the region tokens
    (plus a linear embedding of each region's grid coordinates) attend to the
    text tokens, padding masked out; an MLP block follows. The head then keeps
    the layout: a linear map per region to ``head_channels`` features, the grid
    flattened in cell order (global average pooling would forget where things
    are), concatenated with the masked mean of the text tokens, and an MLP to
    one logit (> 0: "the caption matches the image").

    ``image_encoder(images)``: (B, C, H, W) -> region tokens (B, grid * grid,
    image_dim), row-major (e.g. :class:`mmutils.encoders.SpatialCNN`; pass
    ``nn.Identity()`` to feed cached region tokens). ``text_encoder(ids, mask)`` ->
    ``(tokens (B, L, text_dim), pooled)`` as the course's text encoders do; like
    ALBEF, it may start from (a copy of) a dual encoder's text tower. The
    towers run once per image and per text (:meth:`encode_image`,
    :meth:`encode_text`); :meth:`match` fuses aligned batches of their outputs,
    which is all a re-ranker has to run per pair. ``forward(images, ids, mask)``
    returns the logits (B,) of aligned pairs.
    """

    def __init__(self, image_encoder: nn.Module, text_encoder: nn.Module, *, image_dim: int, text_dim: int,
                 grid: int, dim: int = 32, heads: int = 4, head_channels: int = 8, hidden: int = 64):
        super().__init__()
        for name, module in (("image_encoder", image_encoder), ("text_encoder", text_encoder)):
            if not isinstance(module, nn.Module):
                raise TypeError(f"{name} must be a torch.nn.Module, got {type(module).__name__}")
        for name, value in (("image_dim", image_dim), ("text_dim", text_dim), ("grid", grid), ("dim", dim),
                            ("heads", heads), ("head_channels", head_channels), ("hidden", hidden)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        from .vqa import coordinate_grid

        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.image_in = nn.Sequential(nn.Linear(image_dim, dim), nn.LayerNorm(dim))
        self.text_in = nn.Identity() if text_dim == dim else nn.Linear(text_dim, dim)
        self.coord = nn.Linear(2, dim)
        self.register_buffer("coords", coordinate_grid(grid, grid).flatten(1).t().contiguous(), persistent=False)
        self.norm_regions, self.norm_words = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.reduce = nn.Linear(dim, head_channels)
        self.head = nn.Sequential(nn.Linear(grid * grid * head_channels + dim, hidden), nn.ReLU(),
                                  nn.Linear(hidden, 1))
        self.image_dim, self.text_dim, self.grid, self.dim = image_dim, text_dim, grid, dim

    @property
    def n_regions(self) -> int:
        return self.grid * self.grid

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """The image tower: images (B, C, H, W) (or whatever ``image_encoder`` takes) -> (B, grid**2, image_dim)."""
        tokens = self.image_encoder(images)
        if not isinstance(tokens, torch.Tensor) or tokens.ndim != 3 or \
                tokens.shape[1:] != (self.n_regions, self.image_dim):
            got = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise ValueError(f"image_encoder must return (B, grid**2={self.n_regions}, "
                             f"image_dim={self.image_dim}), got {got}")
        return tokens

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The text tower: ids (B, L) and mask (B, L) -> contextual tokens (B, L, text_dim)."""
        out = self.text_encoder(ids, mask)
        tokens = out[0] if isinstance(out, (tuple, list)) else out
        if not isinstance(tokens, torch.Tensor) or tokens.ndim != 3 or tokens.shape[2] != self.text_dim:
            raise ValueError(f"text_encoder must return tokens (B, L, text_dim={self.text_dim}), got "
                             f"{tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__}")
        return tokens

    def match(self, image_tokens: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor | None = None,
              return_attention: bool = False):
        """Match logits (B,) of aligned pairs of tower outputs.

        ``image_tokens``: (B, grid**2, image_dim) from :meth:`encode_image`;
        ``text_tokens``: (B, L, text_dim) from :meth:`encode_text`; ``text_mask``:
        (B, L), 1 on words and 0 on padding (padding changes nothing). With
        ``return_attention`` also returns how much each region attended to each
        word, (B, grid**2, L), averaged over heads.
        """
        check_tensor("image_tokens", image_tokens, 3, size={1: self.n_regions, 2: self.image_dim},
                     dtype_kind="float")
        check_tensor("text_tokens", text_tokens, 3, size={2: self.text_dim}, dtype_kind="float")
        if image_tokens.shape[0] != text_tokens.shape[0]:
            raise ValueError(f"image_tokens and text_tokens must share the batch size, got "
                             f"{tuple(image_tokens.shape)} and {tuple(text_tokens.shape)}")
        mask = _check_mask(text_mask, text_tokens, "text_mask")
        regions = self.image_in(image_tokens) + self.coord(self.coords)  # (B, N, dim)
        words = self.text_in(text_tokens)  # (B, L, dim)
        keys = self.norm_words(words)
        read, attn = self.cross_attn(self.norm_regions(regions), keys, keys, key_padding_mask=~mask,
                                     need_weights=return_attention)  # (B, N, dim), (B, N, L)
        regions = regions + read
        regions = regions + self.mlp(regions)
        cells = torch.relu(self.reduce(regions)).flatten(1)  # (B, N * head_channels), cell order kept
        logits = self.head(torch.cat([cells, masked_mean(words, mask)], dim=1)).squeeze(-1)  # (B,)
        return (logits, attn) if return_attention else logits

    def forward(self, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Match logits (B,) of aligned (image, caption) pairs."""
        if isinstance(images, torch.Tensor) and isinstance(ids, torch.Tensor) and images.shape[0] != ids.shape[0]:
            raise ValueError(f"images and ids must share the batch size, got {tuple(images.shape)} "
                             f"and {tuple(ids.shape)}")
        return self.match(self.encode_image(images), self.encode_text(ids, mask), mask)


def calibrate_threshold(scores, labels) -> float:
    """The threshold ``t`` that maximizes the accuracy of ``scores > t`` as a predictor of ``labels``.

    ``scores``: (n,) floats (e.g. cosines of a dual encoder, which has no natural
    threshold); ``labels``: (n,) 0/1. Candidates are the midpoints between
    consecutive sorted scores (and one below / above all of them). Returns a float.
    """
    scores = torch.as_tensor(scores).detach().float().cpu()
    labels = torch.as_tensor(labels).detach().cpu()
    if scores.ndim != 1 or labels.ndim != 1 or scores.shape != labels.shape or scores.numel() == 0:
        raise ValueError(f"scores and labels must be 1-D of the same non-zero length, got {tuple(scores.shape)} "
                         f"and {tuple(labels.shape)}")
    if not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError("labels must be 0 or 1")
    s, order = scores.sort()
    y = labels[order].float()
    cands = torch.cat([s[:1] - 1.0, (s[1:] + s[:-1]) / 2, s[-1:] + 1.0])  # (n + 1,)
    # Predicting 1 for the items above cut k: correct = negatives at or below k + positives above k.
    neg_below = torch.cat([torch.zeros(1), (1 - y).cumsum(0)])
    pos_above = y.sum() - torch.cat([torch.zeros(1), y.cumsum(0)])
    acc = (neg_below + pos_above) / y.numel()
    return float(cands[int(acc.argmax())])


# --------------------------------------------------------------------------- #
# Scoring pairs and re-ranking
# --------------------------------------------------------------------------- #
def pair_scores(score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], query_idx: torch.Tensor,
                gallery_idx: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """``score_fn(query_idx, gallery_idx)`` evaluated in chunks of ``chunk`` pairs, without gradients.

    ``query_idx``, ``gallery_idx``: (P,) int tensors naming P (query, gallery)
    pairs; ``score_fn`` returns (p,) scores for a chunk. Returns (P,) float scores.
    """
    check_tensor("query_idx", query_idx, 1, dtype_kind="int")
    check_tensor("gallery_idx", gallery_idx, 1, dtype_kind="int")
    if query_idx.shape != gallery_idx.shape:
        raise ValueError(f"query_idx and gallery_idx must have the same shape, got {tuple(query_idx.shape)} "
                         f"and {tuple(gallery_idx.shape)}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive int, got {chunk!r}")
    out = []
    with torch.no_grad():
        for s in range(0, query_idx.shape[0], chunk):
            scores = score_fn(query_idx[s:s + chunk], gallery_idx[s:s + chunk])
            expected = tuple(query_idx[s:s + chunk].shape)
            if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != expected:
                got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
                raise ValueError(f"score_fn must return one score per pair, shape {expected}, got {got}")
            out.append(scores.float())
    return torch.cat(out) if out else torch.zeros(0)


def rerank(similarity: torch.Tensor, score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
           k: int = 10, chunk: int = 4096) -> torch.Tensor:
    """Re-rank the top ``k`` of each row of a first-stage ``similarity`` with a second scorer.

    ``similarity``: (Q, G) scores of a fast model (e.g. dual-encoder cosines);
    ``score_fn(query_idx, gallery_idx)`` -> (p,) scores of a slow, accurate model
    (e.g. :class:`CrossEncoderITM` logits), called on the Q * k candidate pairs only.
    Returns a (Q, G) float matrix whose row order is: the top ``k`` candidates
    ordered by the second scorer, then every other item in its first-stage order,
    so :func:`mmutils.metrics.recall_at_k` applies to it directly. This is the
    retrieve-then-re-rank recipe of ALBEF and BLIP (Li et al., 2021, 2022).
    """
    check_tensor("similarity", similarity, 2)
    q, g = similarity.shape
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= g:
        raise ValueError(f"k must be an int in [1, {g}] (the gallery size of similarity {tuple(similarity.shape)}), "
                         f"got {k!r}")
    sim = similarity.detach().float()
    top = sim.topk(k, dim=1).indices  # (Q, k)
    query_idx = torch.arange(q, device=sim.device)[:, None].expand(q, k).reshape(-1)
    scores = pair_scores(score_fn, query_idx, top.reshape(-1), chunk).to(sim.device).view(q, k)
    # Map second-stage scores above every first-stage score, keeping their order.
    hi = sim.max()
    ranks = scores.argsort(dim=1).argsort(dim=1).float()  # (Q, k): 0 = worst of the k
    out = sim.clone()
    out.scatter_(1, top, hi + 1.0 + ranks)
    return out
