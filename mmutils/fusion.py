"""Fusion modules: how features of several modalities are combined.

* :class:`ConcatFusion` – feature-level (early) fusion: project each modality to a shared
  width, normalize, concatenate, then a joint MLP (Baltrušaitis et al., 2019).
* :class:`LateFusion` – decision-level fusion: one predictor per modality, logits combined
  by a mean or by learned weights.
* :class:`FiLM` – feature-wise linear modulation of one modality by another (Perez et al., 2018).
* :class:`CrossAttentionFusion` – deep fusion: text tokens attend to image regions
  (as in ViLT/ALBEF, Kim et al., 2021; Li et al., 2021).
* :class:`AttentionPooling` – additive attention pooling over time: tanh scores, softmax, weighted sum.
"""
from __future__ import annotations

import torch
from torch import nn

from .encoders import _check_mask, check_tensor

__all__ = ["ConcatFusion", "LateFusion", "FiLM", "CrossAttentionFusion", "AttentionPooling"]


def _check_features(features, dims: tuple[int, ...]) -> list[torch.Tensor]:
    if not isinstance(features, (list, tuple)) or len(features) != len(dims):
        raise ValueError(f"features must be a list of {len(dims)} tensors, got "
                         f"{len(features) if isinstance(features, (list, tuple)) else type(features).__name__}")
    batch = None
    for i, (f, d) in enumerate(zip(features, dims)):
        check_tensor(f"features[{i}]", f, 2, size={1: d}, dtype_kind="float")
        if batch is not None and f.shape[0] != batch:
            raise ValueError(f"features must share the batch size, got {[t.shape[0] for t in features]}")
        batch = f.shape[0]
    return list(features)


class ConcatFusion(nn.Module):
    """Early fusion: per-modality Linear + LayerNorm to ``width``, concatenation, MLP to ``out_dim``.

    ``forward(features)``: list of (B, dims[i]) -> (B, out_dim). Projecting each
    modality first fixes the classic shape bug of concatenating a 2048-d and a
    256-d vector into a layer that expects 512, and the normalization keeps one
    modality's scale from drowning the other.
    ``present`` (optional, (B, M) bool) zeroes the projected features of missing modalities.
    """

    def __init__(self, dims: tuple[int, ...], width: int = 128, hidden: int = 128, out_dim: int = 10):
        super().__init__()
        self.dims = tuple(dims)
        self.proj = nn.ModuleList(nn.Sequential(nn.Linear(d, width), nn.LayerNorm(width)) for d in dims)
        self.mlp = nn.Sequential(nn.Linear(width * len(dims), hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

    def forward(self, features, present: torch.Tensor | None = None) -> torch.Tensor:
        feats = _check_features(features, self.dims)
        z = [p(f) for p, f in zip(self.proj, feats)]  # M x (B, width)
        if present is not None:
            check_tensor("present", present, 2, size={0: feats[0].shape[0], 1: len(self.dims)})
            z = [zi * present[:, i:i + 1].to(zi.dtype) for i, zi in enumerate(z)]
        return self.mlp(torch.cat(z, dim=1))  # (B, out_dim)


class LateFusion(nn.Module):
    """Decision-level fusion: a small classifier per modality; their logits are combined.

    ``mode="mean"`` averages the logits, ``mode="learned"`` uses a softmax-normalized
    learned weight per modality. ``forward(features, present=None)``: list of
    (B, dims[i]) -> (B, out_dim); with ``present`` (B, M) a missing modality's
    vote is left out of the combination. ``per_modality(features)`` returns
    the individual logits (M, B, out_dim).
    """

    def __init__(self, dims: tuple[int, ...], hidden: int = 128, out_dim: int = 10, mode: str = "mean"):
        super().__init__()
        if mode not in ("mean", "learned"):
            raise ValueError(f"mode must be 'mean' or 'learned', got {mode!r}")
        self.dims = tuple(dims)
        self.mode = mode
        self.heads = nn.ModuleList(nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))
                                   for d in dims)
        self.weight_logits = nn.Parameter(torch.zeros(len(dims)))

    def per_modality(self, features) -> torch.Tensor:
        feats = _check_features(features, self.dims)
        return torch.stack([h(f) for h, f in zip(self.heads, feats)])  # (M, B, out_dim)

    def forward(self, features, present: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.per_modality(features)  # (M, B, K)
        m, b = logits.shape[:2]
        w = torch.ones(m, device=logits.device) if self.mode == "mean" else self.weight_logits.softmax(0) * m
        w = w[:, None].expand(m, b)  # (M, B)
        if present is not None:
            check_tensor("present", present, 2, size={0: b, 1: m})
            w = w * present.t().to(w.dtype)
        w = w / w.sum(dim=0, keepdim=True).clamp(min=1e-6)
        return (w.unsqueeze(-1) * logits).sum(dim=0)  # (B, K)


class FiLM(nn.Module):
    """Feature-wise linear modulation (Perez et al., 2018): ``x * (1 + gamma(c)) + beta(c)``.

    ``forward(x, cond)``: ``x`` is a feature map (B, C, H, W) or tokens (B, N, C);
    ``cond`` is (B, cond_dim), e.g. a question embedding. Returns the same shape as ``x``.
    gamma is parameterized around 1 so an untrained FiLM layer is the identity.
    """

    def __init__(self, cond_dim: int, channels: int):
        super().__init__()
        self.to_gamma_beta = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.to_gamma_beta.weight)
        nn.init.zeros_(self.to_gamma_beta.bias)
        self.channels = channels
        self.cond_dim = cond_dim

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        check_tensor("cond", cond, 2, size={1: self.cond_dim}, dtype_kind="float")
        if not isinstance(x, torch.Tensor) or x.ndim not in (3, 4):
            raise ValueError(f"x must be (B, C, H, W) or (B, N, C), got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        if x.shape[0] != cond.shape[0]:
            raise ValueError(f"x and cond must share the batch size, got {x.shape[0]} and {cond.shape[0]}")
        channel_dim = 1 if x.ndim == 4 else 2
        if x.shape[channel_dim] != self.channels:
            raise ValueError(f"x must have {self.channels} channels, got shape {tuple(x.shape)}")
        gamma, beta = self.to_gamma_beta(cond).chunk(2, dim=1)  # (B, C) each
        if x.ndim == 4:
            gamma, beta = gamma[:, :, None, None], beta[:, :, None, None]
        else:
            gamma, beta = gamma[:, None, :], beta[:, None, :]
        return x * (1 + gamma) + beta


class _CrossBlock(nn.Module):
    """Pre-norm block: self-attention over text, cross-attention to image, MLP."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm_self, self.norm_cross, self.norm_mlp = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, text, image, text_mask):
        h = self.norm_self(text)
        text = text + self.self_attn(h, h, h, key_padding_mask=~text_mask, need_weights=False)[0]
        h = self.norm_cross(text)
        out, attn = self.cross_attn(h, image, image, need_weights=True, average_attn_weights=True)
        text = text + out
        return text + self.mlp(self.norm_mlp(text)), attn  # (B, L, D), (B, L, N)


class CrossAttentionFusion(nn.Module):
    """Deep fusion: ``layers`` blocks in which text tokens attend to each other and to image regions.

    ``forward(text_tokens, image_tokens, text_mask=None)``: text (B, L, dim),
    image (B, N, dim), mask (B, L) -> (fused text tokens (B, L, dim),
    attention of the last block over regions (B, L, N)). ``pooled`` gives the
    masked mean of the fused tokens (B, dim).
    """

    def __init__(self, dim: int = 64, heads: int = 4, layers: int = 1):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.blocks = nn.ModuleList(_CrossBlock(dim, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.dim = dim

    def forward(self, text_tokens: torch.Tensor, image_tokens: torch.Tensor,
                text_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        check_tensor("text_tokens", text_tokens, 3, size={2: self.dim}, dtype_kind="float")
        check_tensor("image_tokens", image_tokens, 3, size={2: self.dim}, dtype_kind="float")
        if text_tokens.shape[0] != image_tokens.shape[0]:
            raise ValueError(f"text_tokens and image_tokens must share the batch size, got "
                             f"{tuple(text_tokens.shape)} and {tuple(image_tokens.shape)}")
        mask = _check_mask(text_mask, text_tokens, "text_mask")
        x, attn = text_tokens, None
        for block in self.blocks:
            x, attn = block(x, image_tokens, mask)
        return self.norm(x), attn

    @staticmethod
    def pooled(fused: torch.Tensor, text_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Masked mean of fused tokens: (B, L, D) -> (B, D)."""
        from .encoders import masked_mean

        return masked_mean(fused, text_mask)


class AttentionPooling(nn.Module):
    """Additive attention pooling (Bahdanau et al., 2015 style scores) over a sequence.

    scores_t = v^T tanh(W x_t + b); weights = softmax over valid t; output = sum_t weights_t x_t.
    ``forward(x, mask=None)``: (B, T, dim), (B, T) -> (pooled (B, dim), weights (B, T)).
    This is the PyTorch form of the common Keras layer (Dense-tanh, Dense(1), softmax, weighted sum).
    """

    def __init__(self, dim: int, hidden: int = 64):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1, bias=False))
        self.dim = dim

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        check_tensor("x", x, 3, size={2: self.dim}, dtype_kind="float")
        mask = _check_mask(mask, x)
        scores = self.score(x).squeeze(-1).masked_fill(~mask, float("-inf"))  # (B, T)
        weights = scores.softmax(dim=1)
        return (weights.unsqueeze(-1) * x).sum(dim=1), weights
