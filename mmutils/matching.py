"""Image-text matching (chapter 4): hard-negative captions, a cross-encoder matching head, and re-ranking.

A dual encoder (:class:`mmutils.clip.DualEncoder`, CLIP) embeds images and texts separately and compares them with
one dot product; a cross-encoder reads both together and outputs one match logit (the ITM head of ALBEF and BLIP,
Li et al., 2021, 2022).

* :func:`perturb_caption` / :func:`hard_negative_captions` – false captions that differ from a true one in one detail.
* :func:`caption_key` – the duplicate-aware retrieval key of a caption for :func:`mmutils.metrics.recall_at_k`.
* :class:`CrossEncoderITM` – the cross-encoder.
* :func:`calibrate_threshold` – the accuracy-maximizing threshold of a score.
* :func:`pair_scores` / :func:`rerank` – score (query, gallery) pairs in chunks; re-rank a fast model's top ``k``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from . import world
from .checks import check_float, check_instance, check_int, check_mask, check_rng, check_subset, check_tensor
from .nn.layers import coordinate_grid, masked_mean

__all__ = ["NEGATIVE_KINDS", "perturb_caption", "hard_negative_captions", "caption_key", "CrossEncoderITM",
           "calibrate_threshold", "pair_scores", "rerank"]

NEGATIVE_KINDS = ("color", "shape", "size", "relation")


# -- Hard negatives -----------------------------------------------------------
def perturb_caption(scene, rng: np.random.Generator | int = 0, *, kinds: Sequence[str] = NEGATIVE_KINDS,
                    p: Sequence[float] | None = None, shapes: Sequence[str] | None = None,
                    colors: Sequence[str] | None = None, sizes: Sequence[str] | None = None,
                    max_tries: int = 50) -> tuple[str, str]:
    """A caption that is FALSE of ``scene`` but differs from a true one in one detail.

    One object's color, shape or size is changed to another value from ``colors`` / ``shapes`` / ``sizes`` (default: all
    of the world's) with :func:`mmutils.world.with_attribute`, or, for ``"relation"``, two objects exchange places with
    :func:`mmutils.world.swap_positions` (so "A left of B" becomes "A right of B" or "B left of A"); the modified scene
    is captioned with :func:`mmutils.world.caption` (random wording from ``rng``). A candidate is kept only if
    :func:`mmutils.world.facts_hold` says it is false of ``scene``. These are the hard negatives of ITM training
    (Li et al., 2021) and of the ARO benchmark (Yuksekgonul et al., 2023).

    ``kinds``: the perturbations to draw from, with probabilities ``p`` (default uniform). A kind that cannot apply is
    left out (``"relation"`` needs two objects; an attribute needs two allowed values). Returns ``(caption, kind)``.
    Raises ``ValueError`` if no false caption is found in ``max_tries`` draws.
    """
    check_instance("scene", scene, world.Scene)
    (text,), (kind,) = hard_negative_captions([scene], rng, kinds=kinds, p=p, shapes=shapes, colors=colors,
                                              sizes=sizes, max_tries=max_tries)
    return text, kind


def hard_negative_captions(scenes, rng: np.random.Generator | int = 0, *, kinds: Sequence[str] = NEGATIVE_KINDS,
                           p: Sequence[float] | None = None, shapes: Sequence[str] | None = None,
                           colors: Sequence[str] | None = None, sizes: Sequence[str] | None = None,
                           max_tries: int = 50) -> tuple[list[str], list[str]]:
    """One hard-negative caption per scene of ``scenes``, drawn in order from one ``rng``.

    The keyword arguments are those of :func:`perturb_caption`. Returns ``(captions, kinds)``, two lists of
    ``len(scenes)``.
    """
    check_instance("scenes", scenes, (list, tuple))
    rng = check_rng("rng", rng)
    kinds = check_subset("kinds", kinds, NEGATIVE_KINDS)
    p = [1.0] * len(kinds) if p is None else [check_float(f"p[{i}]", w, min=0.0) for i, w in enumerate(p)]
    if len(p) != len(kinds) or sum(p) <= 0:
        raise ValueError(f"p must hold one non-negative weight per kind ({len(kinds)}), not all zero, got {p!r}")
    values = {"shape": check_subset("shapes", world.SHAPES if shapes is None else shapes, world.SHAPES),
              "color": check_subset("colors", world.COLORS if colors is None else colors, world.COLORS),
              "size": check_subset("sizes", world.SIZES if sizes is None else sizes, world.SIZES)}
    max_tries = check_int("max_tries", max_tries, min=1)
    texts, drawn = [], []
    for n, scene in enumerate(scenes):
        check_instance(f"scenes[{n}]", scene, world.Scene)
        usable = [(k, w) for k, w in zip(kinds, p)
                  if w > 0 and (len(scene) >= 2 if k == "relation" else len(scene) >= 1 and len(values[k]) >= 2)]
        if not usable:
            raise ValueError(f"none of kinds {kinds} can change scenes[{n}] ({len(scene)} object(s), "
                             f"{ {k: len(v) for k, v in values.items()} } allowed values)")
        usable_kinds = tuple(k for k, _ in usable)
        weights = np.array([w for _, w in usable], dtype=float)
        weights /= weights.sum()
        for _ in range(max_tries):
            kind = usable_kinds[rng.choice(len(usable_kinds), p=weights)]
            if kind == "relation":
                i, j = rng.choice(len(scene), size=2, replace=False)
                new = world.swap_positions(scene, i, j, keep_inside=False)  # the centres exchanged exactly
            else:
                k = rng.integers(len(scene))
                options = [v for v in values[kind] if v != getattr(scene.objects[k], kind)]
                if not options:
                    continue
                new = world.with_attribute(scene, k, kind, options[rng.integers(len(options))])
            text = world.caption(new, rng=rng)
            if not world.facts_hold(world.parse_caption(text), scene):
                texts.append(text)
                drawn.append(kind)
                break
        else:
            raise ValueError(f"no false caption found for scenes[{n}] in max_tries={max_tries} draws of kinds "
                             f"{usable_kinds}")
    return texts, drawn


def caption_key(text_or_facts) -> frozenset:
    """The duplicate-aware retrieval key of a caption: its facts plus the converse of each relation.

    "A left of B" also states "B right of A", so the key of a caption that names every object of a scene with all three
    attributes equals :func:`mmutils.world.scene_facts` of a scene exactly when the caption is true of that scene. With
    partial captions ("a red object") or scenes with more objects than the caption names, equal keys are sufficient but
    not necessary for truth: use :func:`mmutils.world.facts_hold` there.

    ``text_or_facts``: a caption (parsed with :func:`mmutils.world.parse_caption`) or a set of facts. Returns a
    frozenset of facts.
    """
    check_instance("text_or_facts", text_or_facts, (str, set, frozenset))
    facts = world.parse_caption(text_or_facts) if isinstance(text_or_facts, str) else frozenset(text_or_facts)
    closed = set(facts)
    for fact in facts:
        if fact[0] == "rel":
            _, a, rel, b = fact
            closed.add(("rel", b, world.OPPOSITE[rel], a))
    return frozenset(closed)


# -- The cross-encoder --------------------------------------------------------
class CrossEncoderITM(nn.Module):
    """Image-text matching (ITM) head over fused features: one match logit per (image, caption) pair.

    The ITM heads of ALBEF and BLIP (Li et al., 2021, 2022) fuse the two modalities with cross-attention and classify
    the fused features as match or no match. Here each image region *reads the caption*: the region tokens (plus a
    linear embedding of each region's grid coordinates) attend to the text tokens, padding masked out; an MLP block
    follows. The head then keeps the layout: a linear map per region to ``head_channels`` features, the grid flattened
    in cell order (global average pooling would forget where things are), concatenated with the masked mean of the text
    tokens, and an MLP to one logit (> 0: "the caption matches the image").

    ``image_encoder(images)``: (B, C, H, W) -> region tokens (B, grid * grid, image_dim), row-major (e.g.
    :class:`mmutils.nn.ConvTower`; pass ``nn.Identity()`` to feed cached region tokens). ``text_encoder(ids, mask)`` ->
    ``(tokens (B, L, text_dim), pooled)`` as the course's text encoders do; like ALBEF, it may start from (a copy of) a
    dual encoder's text tower. The towers run once per image and per text (:meth:`encode_image`, :meth:`encode_text`);
    :meth:`match` fuses aligned batches of their outputs, which is all a re-ranker has to run per pair.
    ``forward(images, ids, mask)`` returns the logits (B,) of aligned pairs.
    """

    def __init__(self, image_encoder: nn.Module, text_encoder: nn.Module, *, image_dim: int, text_dim: int,
                 grid: int, dim: int = 32, heads: int = 4, head_channels: int = 8, hidden: int = 64):
        super().__init__()
        check_instance("image_encoder", image_encoder, nn.Module)
        check_instance("text_encoder", text_encoder, nn.Module)
        for name, value in (("image_dim", image_dim), ("text_dim", text_dim), ("grid", grid), ("dim", dim),
                            ("heads", heads), ("head_channels", head_channels), ("hidden", hidden)):
            check_int(name, value, min=1)
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
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
        self.head = nn.Sequential(nn.Linear(grid * grid * head_channels + dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.image_dim, self.text_dim, self.grid, self.dim = image_dim, text_dim, grid, dim

    @property
    def n_regions(self) -> int:
        """Number of image regions the model reads: ``grid * grid``."""
        return self.grid * self.grid

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """The image tower: images (B, C, H, W) (or whatever ``image_encoder`` takes) -> (B, grid**2, image_dim)."""
        return self.image_encoder(images)

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The text tower: ids (B, L) and mask (B, L) -> contextual tokens (B, L, text_dim)."""
        out = self.text_encoder(ids, mask)
        return out[0] if isinstance(out, (tuple, list)) else out

    def match(self, image_tokens: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor | None = None,
              return_attention: bool = False):
        """Match logits (B,) of aligned pairs of tower outputs.

        ``image_tokens``: (B, grid**2, image_dim) from :meth:`encode_image`; ``text_tokens``: (B, L, text_dim) from
        :meth:`encode_text`; ``text_mask``: (B, L), 1 on words and 0 on padding (padding changes nothing). With
        ``return_attention`` also returns how much each region attended to each word, (B, grid**2, L), averaged over
        heads.
        """
        check_tensor("image_tokens", image_tokens, 3, size={1: self.n_regions, 2: self.image_dim}, dtype="float")
        check_tensor("text_tokens", text_tokens, 3, size={0: image_tokens.shape[0], 2: self.text_dim}, dtype="float")
        mask = check_mask("text_mask", text_mask, text_tokens)
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
        """Match logits (B,) of aligned (image, caption) pairs; the inputs are checked once, by :meth:`match`."""
        return self.match(self.encode_image(images), self.encode_text(ids, mask), mask)


def calibrate_threshold(scores, labels) -> float:
    """The threshold ``t`` that maximizes the accuracy of ``scores > t`` as a predictor of ``labels``.

    ``scores``: (n,) floats (e.g. cosines of a dual encoder, which has no natural threshold); ``labels``: (n,) 0/1.
    Candidates are the midpoints between consecutive distinct sorted scores (and one below / above all of them):
    ``scores > t`` puts equal scores on the same side, so no cut inside a group of ties is considered. Returns a float.
    """
    scores = torch.as_tensor(scores).detach().float().cpu()
    labels = torch.as_tensor(labels).detach().cpu()
    if scores.ndim != 1 or scores.shape != labels.shape or scores.numel() == 0:
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
    tied = torch.cat([torch.zeros(1, dtype=torch.bool), s[1:] == s[:-1], torch.zeros(1, dtype=torch.bool)])
    acc = acc.masked_fill(tied, -1.0)  # a cut between equal scores cannot be made by a threshold
    return float(cands[int(acc.argmax())])


# -- Scoring pairs and re-ranking ---------------------------------------------
def pair_scores(score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], query_idx: torch.Tensor,
                gallery_idx: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """``score_fn(query_idx, gallery_idx)`` evaluated in chunks of ``chunk`` pairs, without gradients.

    ``query_idx``, ``gallery_idx``: (P,) int tensors naming P (query, gallery) pairs; ``score_fn`` returns (p,) scores
    for a chunk. Returns (P,) float scores.
    """
    check_tensor("query_idx", query_idx, 1, dtype="int")
    check_tensor("gallery_idx", gallery_idx, 1, size={0: len(query_idx)}, dtype="int")
    chunk = check_int("chunk", chunk, min=1)
    out = []
    with torch.no_grad():
        for s in range(0, query_idx.shape[0], chunk):
            q, g = query_idx[s:s + chunk], gallery_idx[s:s + chunk]
            out.append(check_tensor("score_fn(query_idx, gallery_idx)", score_fn(q, g), 1, size={0: len(q)}).float())
    return torch.cat(out) if out else torch.zeros(0)


def rerank(similarity: torch.Tensor, score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
           k: int = 10, chunk: int = 4096) -> torch.Tensor:
    """Re-rank the top ``k`` of each row of a first-stage ``similarity`` with a second scorer.

    ``similarity``: (Q, G) scores of a fast model (e.g. dual-encoder cosines); ``score_fn(query_idx, gallery_idx)`` ->
    (p,) scores of a slow, accurate model (e.g. :class:`CrossEncoderITM` logits), called on the Q * k candidate pairs
    only. Returns a (Q, G) float matrix whose row order is: the top ``k`` candidates ordered by the second scorer, then
    every other item in its first-stage order, so :func:`mmutils.metrics.recall_at_k` applies to it directly. This is
    the retrieve-then-re-rank recipe of ALBEF and BLIP (Li et al., 2021, 2022).
    """
    q, g = check_tensor("similarity", similarity, 2).shape
    k = check_int("k", k, min=1, max=g)  # at most the gallery size
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
