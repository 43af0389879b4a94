"""Small building blocks shared by the encoders, fusion modules and chapter models.

Pooling (:func:`masked_mean`, :class:`AttentionPooling`, :class:`GlobalMaxPool1d`), conditioning
(:class:`FiLM`, :class:`CrossAttentionBlock`) and positions (:func:`coordinate_grid`, :func:`causal_mask`,
:func:`grid_position_embedding`). The modules do not check their tensors (a model validates what the user
passes once; torch reports shape errors) except the optional ``mask`` of :func:`masked_mean` and
:class:`AttentionPooling`, which is checked against the tokens' (B, L) (a wrong mask would silently broadcast);
the functions that build a tensor check their sizes.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..checks import check_int, check_mask

__all__ = ["masked_mean", "AttentionPooling", "GlobalMaxPool1d", "FiLM", "CrossAttentionBlock", "coordinate_grid",
           "causal_mask", "grid_position_embedding"]


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``x`` (B, L, D) over the positions where ``mask`` (B, L) is true (all when None). Returns (B, D)."""
    m = check_mask("mask", mask, x).unsqueeze(-1).to(x.dtype)  # (B, L, 1)
    return (x * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


class AttentionPooling(nn.Module):
    """Additive attention pooling (Bahdanau et al., 2015 style scores) over a sequence.

    scores_t = v^T tanh(W x_t + b); weights = softmax over valid t; output = sum_t weights_t x_t
    (the common Keras layer). ``forward(x, mask=None)``: (B, T, dim), (B, T) -> (pooled (B, dim), weights (B, T)).
    """

    def __init__(self, dim: int, hidden: int = 64):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1, bias=False))
        self.dim = dim

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mask = check_mask("mask", mask, x)  # (B, T)
        scores = self.score(x).squeeze(-1).masked_fill(~mask, float("-inf"))  # (B, T)
        weights = scores.softmax(dim=1)
        return (weights.unsqueeze(-1) * x).sum(dim=1), weights  # (B, dim), (B, T)


class GlobalMaxPool1d(nn.Module):
    """Keras' ``GlobalMaxPooling1D`` for channels-first input: (B, C, T) -> (B, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=-1)


class FiLM(nn.Module):
    """Feature-wise linear modulation (Perez et al., 2018): ``x * (1 + gamma(c)) + beta(c)``.

    ``forward(x, cond)``: ``x`` a feature map (B, C, H, W) or channels-last (B, C), (B, N, C); ``cond``
    (B, cond_dim). Returns the shape of ``x``. The projection starts at zero: an untrained FiLM is the identity.
    """

    def __init__(self, cond_dim: int, channels: int):
        super().__init__()
        self.to_gamma_beta = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.to_gamma_beta.weight)
        nn.init.zeros_(self.to_gamma_beta.bias)
        self.channels = channels
        self.cond_dim = cond_dim

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.to_gamma_beta(cond).chunk(2, dim=1)  # (B, C) each
        if x.ndim == 4:  # (B, C, H, W): broadcast over the grid
            gamma, beta = gamma[:, :, None, None], beta[:, :, None, None]
        else:  # channels last: broadcast over the tokens, if any
            shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (self.channels,)
            gamma, beta = gamma.view(shape), beta.view(shape)
        return x * (1 + gamma) + beta


class CrossAttentionBlock(nn.Module):
    """Pre-norm block: self-attention over the text, cross-attention to the image, MLP (each residual).

    ``forward(text, image, text_mask, image_mask=None)``: text (B, L, dim), image (B, N, dim), bool masks
    (B, L), (B, N) (true = real) -> (text (B, L, dim), attention averaged over heads (B, L, N)). A row with
    no valid region leaves the text unchanged by the cross-attention, with zero attention. ``forward`` is
    :meth:`read_text` then :meth:`read_image`; the first does not see the image, so a caller that pairs one text
    with several images can run it once per text.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm_self, self.norm_cross, self.norm_mlp = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, text: torch.Tensor, image: torch.Tensor, text_mask: torch.Tensor,
                image_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.read_image(self.read_text(text, text_mask), image, image_mask)

    def read_text(self, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """The self-attention residual: text (B, L, dim), bool mask (B, L) -> (B, L, dim)."""
        h = self.norm_self(text)
        return text + self.self_attn(h, h, h, key_padding_mask=~text_mask, need_weights=False)[0]

    def read_image(self, text: torch.Tensor, image: torch.Tensor,
                   image_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The cross-attention and MLP residuals: text (B, L, dim) from :meth:`read_text`, image (B, N, dim),
        optional bool mask (B, N) -> (text (B, L, dim), attention averaged over heads (B, L, N))."""
        h = self.norm_cross(text)
        if image_mask is None:
            out, attn = self.cross_attn(h, image, image, need_weights=True, average_attn_weights=True)
        else:
            # A row without any valid region would give a softmax over nothing (NaN): let it attend to
            # everything, then zero its update, so such text passes through the cross-attention unchanged.
            empty = ~image_mask.any(dim=1)  # (B,)
            padding = ~image_mask & ~empty[:, None]  # (B, N), True = ignore this region
            out, attn = self.cross_attn(h, image, image, key_padding_mask=padding, need_weights=True,
                                        average_attn_weights=True)
            keep = (~empty).to(out.dtype)[:, None, None]
            out, attn = out * keep, attn * keep
        text = text + out
        return text + self.mlp(self.norm_mlp(text)), attn  # (B, L, D), (B, L, N)


def coordinate_grid(h: int, w: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Coordinates of the cells of an ``h`` x ``w`` grid, in [-1, 1]: a (2, h, w) tensor (x, then y).

    Appended to feature maps as two channels (CoordConv, as in FiLM, Perez et al., 2018), they tell a
    layer *where* a cell is; x grows to the right and y downwards.
    """
    check_int("h", h, min=1)
    check_int("w", w, min=1)
    ys = torch.linspace(-1.0, 1.0, h, device=device) if h > 1 else torch.zeros(1, device=device)
    xs = torch.linspace(-1.0, 1.0, w, device=device) if w > 1 else torch.zeros(1, device=device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")  # (h, w) each
    return torch.stack([gx, gy])  # (2, h, w)


def causal_mask(length: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Additive causal attention mask (length, length): 0 on and below the diagonal, -inf above.

    Position ``i`` attends to ``0..i`` only, never to a later token (Vaswani et al., 2017).
    """
    check_int("length", length, min=1)
    return torch.triu(torch.full((length, length), float("-inf"), device=device), diagonal=1)


def grid_position_embedding(n_regions: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine embedding (n_regions, dim) of the cells of a square, row-major grid.

    Half of the channels encode the row, half the column, as sines and cosines of geometrically spaced
    frequencies (Vaswani et al., 2017; 2-D as in MAE, He et al., 2022). Used to *initialize* a learned
    per-region position embedding, which a small random init takes hundreds of steps to make useful.
    """
    check_int("n_regions", n_regions, min=1)
    check_int("dim", dim, min=1)
    side = math.isqrt(n_regions)
    if side * side != n_regions:
        raise ValueError(f"n_regions must be a square number (a grid of regions), got {n_regions}")
    if dim % 4:
        raise ValueError(f"dim must be a multiple of 4 (sin and cos of rows and columns), got {dim}")
    quarter = dim // 4
    freq = 1.0 / (10.0 ** (torch.arange(quarter, dtype=torch.float32) / max(quarter, 1)))  # (dim/4,)
    axis = torch.arange(side, dtype=torch.float32)
    rows, cols = torch.meshgrid(axis, axis, indexing="ij")
    parts = []
    for coord in (rows.flatten(), cols.flatten()):  # (N,) each
        angle = coord[:, None] * freq[None] * math.pi / 2  # (N, dim/4)
        parts += [angle.sin(), angle.cos()]
    return torch.cat(parts, dim=1)  # (N, dim)
