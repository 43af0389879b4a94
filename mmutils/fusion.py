"""Fusion modules: how features of several modalities are combined.

* :class:`ConcatFusion` – feature-level (early) fusion: project each modality to a shared
  width, normalize, concatenate, then a joint MLP (Baltrušaitis et al., 2019).
* :class:`LateFusion` – decision-level fusion: one predictor per modality, logits combined
  by a mean or by learned weights.
* :class:`FiLM` – feature-wise linear modulation of one modality by another (Perez et al., 2018).
* :class:`CrossAttentionFusion` – deep fusion: text tokens attend to image regions
  (as in ViLT/ALBEF, Kim et al., 2021; Li et al., 2021).
* :class:`AttentionPooling` – additive attention pooling over time: tanh scores, softmax, weighted sum.
* :func:`modality_dropout` – random masks of present modalities, for training that survives a missing
  modality (ModDrop, Neverova et al., 2016).
* :class:`FusionClassifier` – one classifier over text and any number of token sets, with the
  strategy (``"early"``, ``"late"``, ``"film"``, ``"cross"``) as its only difference.
"""
from __future__ import annotations

import torch
from torch import nn

from .encoders import _check_mask, check_tensor, masked_mean

__all__ = ["ConcatFusion", "LateFusion", "FiLM", "CrossAttentionFusion", "AttentionPooling", "modality_dropout",
           "STRATEGIES", "FusionClassifier"]


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

    def forward(self, text, image, text_mask, image_mask=None):
        h = self.norm_self(text)
        text = text + self.self_attn(h, h, h, key_padding_mask=~text_mask, need_weights=False)[0]
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


class CrossAttentionFusion(nn.Module):
    """Deep fusion: ``layers`` blocks in which text tokens attend to each other and to image regions.

    ``forward(text_tokens, image_tokens, text_mask=None, image_mask=None)``: text (B, L, dim),
    image (B, N, dim), masks (B, L) and (B, N) (true = real token) -> (fused text tokens (B, L, dim),
    attention of the last block over regions (B, L, N)). Regions where ``image_mask`` is false get
    no attention, so the "image" tokens may be any set of tokens (e.g. regions and audio frames,
    some of them missing); a row with no valid region leaves the text unchanged by the
    cross-attention and its attention is all zero. ``pooled`` gives the masked mean of the fused
    tokens (B, dim).
    """

    def __init__(self, dim: int = 64, heads: int = 4, layers: int = 1):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.blocks = nn.ModuleList(_CrossBlock(dim, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.dim = dim

    def forward(self, text_tokens: torch.Tensor, image_tokens: torch.Tensor,
                text_mask: torch.Tensor | None = None,
                image_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        check_tensor("text_tokens", text_tokens, 3, size={2: self.dim}, dtype_kind="float")
        check_tensor("image_tokens", image_tokens, 3, size={2: self.dim}, dtype_kind="float")
        if text_tokens.shape[0] != image_tokens.shape[0]:
            raise ValueError(f"text_tokens and image_tokens must share the batch size, got "
                             f"{tuple(text_tokens.shape)} and {tuple(image_tokens.shape)}")
        mask = _check_mask(text_mask, text_tokens, "text_mask")
        regions = None if image_mask is None else _check_mask(image_mask, image_tokens, "image_mask")
        x, attn = text_tokens, None
        for block in self.blocks:
            x, attn = block(x, image_tokens, mask, regions)
        return self.norm(x), attn

    @staticmethod
    def pooled(fused: torch.Tensor, text_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Masked mean of fused tokens: (B, L, D) -> (B, D)."""
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


# --------------------------------------------------------------------------- #
# Missing modalities
# --------------------------------------------------------------------------- #
def modality_dropout(batch_size: int, n_modalities: int, p: float, *, generator: torch.Generator | None = None,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """Which modalities each example keeps, for training with modality dropout (Neverova et al., 2016).

    Each of the ``n_modalities`` is dropped independently with probability ``p``;
    an example that would lose all of them keeps one, chosen uniformly, so the
    model always sees something. Returns a bool tensor (batch_size, n_modalities),
    true = present, to pass as ``present`` to the fusion modules. Random numbers
    come from ``generator`` (a CPU ``torch.Generator``) or the global CPU generator.
    """
    for name, value, low in (("batch_size", batch_size, 1), ("n_modalities", n_modalities, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
        raise ValueError(f"p must be a number in [0, 1), got {p!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    present = torch.rand(batch_size, n_modalities, generator=generator) >= p  # (B, M)
    rescue = torch.randint(n_modalities, (batch_size,), generator=generator)  # (B,)
    none_left = ~present.any(dim=1)
    present[none_left, rescue[none_left]] = True
    return present if device is None else present.to(device)


# --------------------------------------------------------------------------- #
# One classifier, four fusion strategies
# --------------------------------------------------------------------------- #
STRATEGIES = ("early", "late", "film", "cross")


class _WordTokens(nn.Module):
    """Word and position embeddings, layer-normalized: a Transformer text encoder with no layers.

    ``forward(ids, mask)`` -> (tokens (B, L, dim), masked mean (B, dim)).
    """

    def __init__(self, vocab_size: int, dim: int, max_len: int, pad_id: int = 0):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        nn.init.normal_(self.embed.weight, std=0.02)
        with torch.no_grad():
            self.embed.weight[pad_id].zero_()
        self.pos = nn.Parameter(torch.randn(1, max_len, dim) * 0.02)
        self.norm = nn.LayerNorm(dim)
        self.max_len = max_len

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if ids.shape[1] > self.max_len:
            raise ValueError(f"ids has length {ids.shape[1]}, more than max_len={self.max_len}")
        tokens = self.norm(self.embed(ids) + self.pos[:, : ids.shape[1]])  # (B, L, dim)
        return tokens, masked_mean(tokens, mask)


class FusionClassifier(nn.Module):
    """Text + token sets of other modalities -> class logits, fused by ``strategy``.

    The text (e.g. a question or an instruction) is read by a small Transformer
    encoder (:class:`~mmutils.encoders.TransformerTextEncoder` with ``text_layers``
    layers; ``text_layers=0`` keeps only word and position embeddings) into word
    tokens (B, L, dim) and their masked mean ``q`` (B, dim). Every other modality ``m``
    arrives as tokens (B, N_m, token_dims[m]) from an encoder outside this module
    (e.g. frozen region tokens of an image, frames of a sound); a LayerNorm and a
    linear layer map them to ``dim``. The strategies differ only in where the
    modalities meet:

    * ``"early"`` (feature level): each modality's tokens pooled (``pool="max"``,
      the default, or ``"mean"``), concatenated with ``q``, then one joint MLP
      (:class:`ConcatFusion`; Baltrušaitis et al., 2019).
    * ``"late"`` (decision level): one MLP per modality on the same pooled
      vectors; their logits are averaged (``late_mode="mean"``) or weighted by
      learned weights (``"learned"``) (:class:`LateFusion`).
    * ``"film"`` (deep): ``film_layers`` times, every token of every modality
      goes through ``ReLU(FiLM(Norm(W h), q))``: a linear map, normalized without
      affine parameters, whose channels ``q`` scales and shifts (Perez et al.,
      2018, who use batch norm there); max over tokens, concatenated with ``q``,
      then an MLP.
    * ``"cross"`` (deep): the word tokens attend to the tokens of all other
      modalities (each tagged with a learned modality embedding) in
      :class:`CrossAttentionFusion` blocks; masked mean of the fused words, then
      an MLP. ``last_attention`` keeps the attention (B, L, sum N_m) of the last call.

    ``forward(ids, mask, tokens, present=None)``: ids and mask (B, L); ``tokens``
    a dict ``{name: (B, N_m, token_dims[name])}`` with the keys of ``token_dims``;
    ``present`` (B, M) bool, the non-text modalities in the order of
    ``token_dims`` (default: all present). A missing modality is left out: its
    vote (late), its features (early: zeroed after projection, film: zeroed
    pooled vector) or its tokens (cross: masked out of the attention). The text
    is always present. Returns logits (B, num_classes).
    """

    def __init__(self, vocab_size: int, token_dims: dict[str, int], num_classes: int, strategy: str = "cross", *,
                 dim: int = 32, hidden: int = 64, heads: int = 4, text_layers: int = 1, max_len: int = 16,
                 late_mode: str = "mean", pool: str = "max", film_layers: int = 2, cross_layers: int = 1):
        super().__init__()
        from .encoders import TransformerTextEncoder

        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        if not isinstance(token_dims, dict) or not token_dims or not all(
                isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v > 0
                for k, v in token_dims.items()):
            raise ValueError(f"token_dims must be a non-empty dict {{name: positive int}}, got {token_dims!r}")
        for name, value, low in (("vocab_size", vocab_size, 2), ("num_classes", num_classes, 2), ("dim", dim, 1),
                                 ("hidden", hidden, 1), ("text_layers", text_layers, 0), ("film_layers", film_layers, 1),
                                 ("cross_layers", cross_layers, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if pool not in ("mean", "max"):
            raise ValueError(f"pool must be 'mean' or 'max', got {pool!r}")
        if late_mode not in ("mean", "learned"):
            raise ValueError(f"late_mode must be 'mean' or 'learned', got {late_mode!r}")
        if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
            raise ValueError(f"heads must be an int >= 1, got {heads!r}")
        self.pool = pool
        self.strategy = strategy
        self.token_dims = dict(token_dims)
        self.names = tuple(token_dims)
        self.num_classes = num_classes
        self.vocab_size = vocab_size
        self.dim = dim
        m = len(self.names)
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        if text_layers == 0:  # word + position embeddings only: the fusion layers do the rest
            self.text = _WordTokens(vocab_size, dim, max_len)
        else:
            self.text = TransformerTextEncoder(vocab_size, dim, heads, text_layers, max_len, embed_std=0.02)
        self.adapters = nn.ModuleDict({k: nn.Sequential(nn.LayerNorm(d), nn.Linear(d, dim))
                                       for k, d in token_dims.items()})
        if strategy == "early":
            self.fuse = ConcatFusion((dim,) * (1 + m), width=dim, hidden=hidden, out_dim=num_classes)
        elif strategy == "late":
            self.fuse = LateFusion((dim,) * (1 + m), hidden=hidden, out_dim=num_classes, mode=late_mode)
        elif strategy == "film":
            self.film_linear = nn.ModuleDict({k: nn.ModuleList(nn.Linear(dim, dim) for _ in range(film_layers))
                                              for k in self.names})
            self.film = nn.ModuleDict({k: nn.ModuleList(FiLM(dim, dim) for _ in range(film_layers))
                                       for k in self.names})
            self.film_norm = nn.LayerNorm(dim, elementwise_affine=False)  # FiLM supplies the scale and shift
            self.head = nn.Sequential(nn.Linear((1 + m) * dim, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
        else:
            self.type_embed = nn.Parameter(torch.randn(m, dim) * 0.02)  # (M, dim): which modality a token is from
            self.fuse = CrossAttentionFusion(dim, heads, cross_layers)
            self.head = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
        self.last_attention: torch.Tensor | None = None

    def _inputs(self, ids, mask, tokens, present):
        check_tensor("ids", ids, 2, dtype_kind="int")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(f"ids must lie in [0, {self.vocab_size}), got values in "
                             f"[{int(ids.min())}, {int(ids.max())}] (shape {tuple(ids.shape)})")
        mask = _check_mask(mask, ids)
        if not isinstance(tokens, dict) or set(tokens) != set(self.names):
            got = sorted(tokens) if isinstance(tokens, dict) else type(tokens).__name__
            raise ValueError(f"tokens must be a dict with keys {list(self.names)}, got {got}")
        b = ids.shape[0]
        for k in self.names:
            check_tensor(f"tokens[{k!r}]", tokens[k], 3, size={2: self.token_dims[k]}, dtype_kind="float")
            if tokens[k].shape[0] != b:
                raise ValueError(f"tokens[{k!r}] must have the batch size of ids ({b}), "
                                 f"got shape {tuple(tokens[k].shape)}")
        if present is None:
            present = torch.ones(b, len(self.names), dtype=torch.bool, device=ids.device)
        else:
            check_tensor("present", present, 2, size={0: b, 1: len(self.names)})
            present = present.bool()
        return mask, present

    def encode(self, ids: torch.Tensor, mask: torch.Tensor | None, tokens: dict[str, torch.Tensor],
               present: torch.Tensor | None = None):
        """Checked inputs, encoded: (word tokens (B, L, dim), q (B, dim), mask (B, L),
        {name: adapted tokens (B, N_m, dim)}, present (B, M))."""
        mask, present = self._inputs(ids, mask, tokens, present)
        words, q = self.text(ids, mask)  # (B, L, dim), (B, dim)
        feats = {k: self.adapters[k](tokens[k]) for k in self.names}  # each (B, N_m, dim)
        return words, q, mask, feats, present

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=1) if self.pool == "max" else x.mean(dim=1)  # (B, N, dim) -> (B, dim)

    def votes(self, ids: torch.Tensor, mask: torch.Tensor | None, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """Late fusion only: each modality's own logits, (1 + M, B, num_classes), text first."""
        if self.strategy != "late":
            raise ValueError(f"votes needs strategy='late', this model has strategy={self.strategy!r}")
        _, q, _, feats, _ = self.encode(ids, mask, tokens)
        return self.fuse.per_modality([q] + [self._pool(feats[k]) for k in self.names])

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None, tokens: dict[str, torch.Tensor],
                present: torch.Tensor | None = None) -> torch.Tensor:
        words, q, mask, feats, present = self.encode(ids, mask, tokens, present)
        b = ids.shape[0]
        with_text = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=ids.device), present], dim=1)  # (B, 1+M)
        if self.strategy in ("early", "late"):
            pooled = [q] + [self._pool(feats[k]) for k in self.names]  # (1 + M) x (B, dim)
            return self.fuse(pooled, with_text)  # (B, K)
        if self.strategy == "film":
            parts = [q]
            for i, k in enumerate(self.names):
                h = feats[k]  # (B, N_m, dim)
                for linear, film in zip(self.film_linear[k], self.film[k]):
                    h = torch.relu(film(self.film_norm(linear(h)), q))  # channels scaled and shifted by the text
                parts.append(h.amax(dim=1) * present[:, i:i + 1].to(h.dtype))  # (B, dim), zero if missing
            return self.head(torch.cat(parts, dim=1))  # (B, K)
        keys = torch.cat([feats[k] + self.type_embed[i] for i, k in enumerate(self.names)], dim=1)  # (B, N, dim)
        key_mask = torch.cat([present[:, i:i + 1].expand(b, feats[k].shape[1])
                              for i, k in enumerate(self.names)], dim=1)  # (B, N)
        fused, self.last_attention = self.fuse(words, keys, mask, key_mask)  # (B, L, dim), (B, L, N)
        return self.head(masked_mean(fused, mask))  # (B, K)
