"""Fusion modules: how the features of several modalities are combined into one prediction.

Early (:class:`ConcatFusion`), late (:class:`LateFusion`) and deep (:class:`CrossAttentionFusion`) fusion,
:func:`modality_dropout`, and :class:`FusionClassifier` (with :class:`FusionConfig`): one classifier whose
only difference is the strategy. FiLM and the cross-attention block live in :mod:`mmutils.nn.layers`.

Late (decision-level) fusion means separately trained votes: each modality's predictor is trained with its
own loss and only the decisions are combined. The same :class:`LateFusion` module trained through its
combined output instead is a jointly trained sum of votes ("joint logit averaging" in chapter 2).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ..checks import check_choice, check_float, check_instance, check_int, check_mask, check_tensor, config_with
from .encoders import TransformerTextEncoder
from .layers import CrossAttentionBlock, FiLM, masked_mean

__all__ = ["ConcatFusion", "LateFusion", "CrossAttentionFusion", "modality_dropout", "STRATEGIES", "FusionConfig",
           "FusionClassifier"]


def _check_count(features, n: int) -> None:
    """One feature tensor per modality (zip would silently drop the extra modalities)."""
    if len(check_instance("features", features, (list, tuple))) != n:
        raise ValueError(f"features must be a list of {n} tensors, one per modality, got {len(features)}")


class ConcatFusion(nn.Module):
    """Early fusion (Baltrušaitis et al., 2019): per-modality Linear + LayerNorm to ``width``, concatenation, MLP.

    ``forward(features, present=None)``: list of (B, dims[i]) -> (B, out_dim). Projecting each modality
    first fixes the classic bug of concatenating a 2048-d and a 256-d vector into a layer expecting 512;
    the normalization keeps one modality's scale from drowning the other. ``present`` (B, M) bool zeroes
    the projected features of missing modalities.
    """

    def __init__(self, dims: tuple[int, ...], width: int = 128, hidden: int = 128, out_dim: int = 10):
        super().__init__()
        self.dims = tuple(dims)
        self.proj = nn.ModuleList(nn.Sequential(nn.Linear(d, width), nn.LayerNorm(width)) for d in dims)
        self.mlp = nn.Sequential(nn.Linear(width * len(dims), hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

    def forward(self, features, present: torch.Tensor | None = None) -> torch.Tensor:
        _check_count(features, len(self.dims))
        z = [p(f) for p, f in zip(self.proj, features)]  # M x (B, width)
        if present is not None:
            z = [zi * present[:, i:i + 1].to(zi.dtype) for i, zi in enumerate(z)]
        return self.mlp(torch.cat(z, dim=1))  # (B, out_dim)


class LateFusion(nn.Module):
    """Late fusion (decision-level, Baltrušaitis et al., 2019): one small classifier per modality, logits combined.

    ``mode="mean"`` averages the logits, ``"learned"`` weighs them by a softmax of learned weights.
    Averaging logits is the product rule of classifier combination: the softmax of the mean is the
    normalized geometric mean of the votes' probabilities (a constant per example does not change it).
    ``forward(features, present=None)``: list of (B, dims[i]) -> (B, out_dim); a missing modality's
    vote is left out. ``per_modality(features)`` returns the individual logits (M, B, out_dim).

    The votes share no parameters. For late fusion proper, train each vote with its own loss (e.g. the sum
    over ``per_modality`` of the cross-entropies), which trains each exactly as if it were alone; training
    ``forward``'s output instead gives a jointly trained sum of votes.
    """

    def __init__(self, dims: tuple[int, ...], hidden: int = 128, out_dim: int = 10, mode: str = "mean"):
        super().__init__()
        self.mode = check_choice("mode", mode, ("mean", "learned"))
        self.dims = tuple(dims)
        self.heads = nn.ModuleList(nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))
                                   for d in dims)
        self.weight_logits = nn.Parameter(torch.zeros(len(dims)))

    def per_modality(self, features) -> torch.Tensor:
        """Each modality's own logits (M, B, out_dim) from the list of features (B, dims[i])."""
        _check_count(features, len(self.dims))
        return torch.stack([h(f) for h, f in zip(self.heads, features)])  # (M, B, out_dim)

    def forward(self, features, present: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.per_modality(features)  # (M, B, K)
        m, b = logits.shape[:2]
        w = torch.ones(m, device=logits.device) if self.mode == "mean" else self.weight_logits.softmax(0) * m
        w = w[:, None].expand(m, b)  # (M, B)
        if present is not None:
            w = w * present.t().to(w.dtype)
        w = w / w.sum(dim=0, keepdim=True).clamp(min=1e-6)
        return (w.unsqueeze(-1) * logits).sum(dim=0)  # (B, K)


class CrossAttentionFusion(nn.Module):
    """Deep fusion with cross-attention (as in ALBEF, Li et al., 2021): ``layers`` cross-attention blocks, a LayerNorm.

    ``forward(text_tokens, image_tokens, text_mask=None, image_mask=None)``: text (B, L, dim), image
    (B, N, dim), masks (B, L), (B, N) (true = real) -> (fused text (B, L, dim), last block's attention
    (B, L, N)). Masked-out "image" tokens (any token set, e.g. regions and audio frames) get no attention;
    a row with none left is unchanged, with zero attention.
    """

    def __init__(self, dim: int = 64, heads: int = 4, layers: int = 1):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.blocks = nn.ModuleList(CrossAttentionBlock(dim, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.dim = dim

    def forward(self, text_tokens: torch.Tensor, image_tokens: torch.Tensor,
                text_mask: torch.Tensor | None = None,
                image_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mask = check_mask("text_mask", text_mask, text_tokens)  # (B, L) bool
        regions = None if image_mask is None else image_mask.bool()  # (B, N)
        x, attn = text_tokens, None
        for block in self.blocks:
            x, attn = block(x, image_tokens, mask, regions)  # (B, L, dim), (B, L, N)
        return self.norm(x), attn


def modality_dropout(batch_size: int, n_modalities: int, p: float, *, generator: torch.Generator | None = None,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """Which modalities each example keeps, for training with modality dropout (Neverova et al., 2016).

    Each modality is dropped independently with probability ``p`` in [0, 1); an example that would lose
    all keeps one, chosen uniformly. Returns bool (batch_size, n_modalities), true = present, the
    ``present`` of the fusion modules. Random numbers come from ``generator`` (CPU) or the global one.
    """
    check_int("batch_size", batch_size, min=1)
    check_int("n_modalities", n_modalities, min=1)
    if not 0 <= check_float("p", p) < 1:
        raise ValueError(f"p must be a number in [0, 1), got {p}")
    if generator is not None:
        check_instance("generator", generator, torch.Generator)
    present = torch.rand(batch_size, n_modalities, generator=generator) >= p  # (B, M)
    rescue = torch.randint(n_modalities, (batch_size,), generator=generator)  # (B,)
    none_left = ~present.any(dim=1)
    present[none_left, rescue[none_left]] = True
    return present if device is None else present.to(device)


STRATEGIES = ("early", "late", "film", "cross")


@dataclass
class FusionConfig:
    """Sizes of a :class:`FusionClassifier` (the defaults are chapter 2's).

    ``dim``: token width after the adapters; ``hidden``: MLP width; ``heads``: attention heads;
    ``text_layers``: Transformer layers of the text encoder (0: embeddings only); ``max_len``: the
    longest text; ``late_mode``: ``"mean"`` or ``"learned"`` votes; ``pool``: ``"max"`` or ``"mean"``
    (early, late); ``film_layers``: FiLM layers per modality; ``cross_layers``: cross-attention blocks.
    """

    dim: int = 32
    hidden: int = 64
    heads: int = 4
    text_layers: int = 1
    max_len: int = 16
    late_mode: str = "mean"
    pool: str = "max"
    film_layers: int = 2
    cross_layers: int = 1

    def __post_init__(self) -> None:
        for name, low in (("dim", 1), ("hidden", 1), ("heads", 1), ("text_layers", 0), ("max_len", 1),
                          ("film_layers", 1), ("cross_layers", 1)):
            check_int(name, getattr(self, name), min=low)
        check_choice("late_mode", self.late_mode, ("mean", "learned"))
        check_choice("pool", self.pool, ("mean", "max"))
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")


class FusionClassifier(nn.Module):
    """Text + token sets of other modalities -> class logits, fused by ``strategy``.

    The text is read by a :class:`~mmutils.nn.encoders.TransformerTextEncoder` (``text_layers=0``: word
    and position embeddings only) into word tokens (B, L, dim) and their masked mean ``q`` (B, dim). Every
    other modality ``m`` arrives as tokens (B, N_m, token_dims[m]) (e.g. frozen region tokens, sound
    frames), mapped to ``dim`` by a LayerNorm and a linear layer. The strategies differ only in where
    the modalities meet:

    * ``"early"``: each modality's tokens pooled (``pool``), concatenated with ``q``, one MLP (:class:`ConcatFusion`).
    * ``"late"``: one MLP per modality on the same pooled vectors, logits averaged (:class:`LateFusion`).
      The text vote owns the text encoder, each other vote its adapter: no parameter is shared, so a loss
      per vote (from :meth:`votes`) trains separate predictors (late fusion); a loss on ``forward``'s
      output trains the votes jointly.
    * ``"film"``: ``film_layers`` times, every token goes through ``ReLU(FiLM(Norm(W h), q))`` (Perez et
      al., 2018, with batch norm there); max over tokens, concatenated with ``q``, then an MLP.
    * ``"cross"``: the words attend to all other tokens (each tagged with a learned modality embedding)
      in :class:`CrossAttentionFusion`; masked mean, then an MLP. ``last_attention``: (B, L, sum N_m).

    Sizes come from ``config`` (a :class:`FusionConfig`) with ``overrides`` applied, so
    ``FusionClassifier(V, dims, K, "film", dim=32, text_layers=0)`` works.

    ``forward(ids, mask, tokens, present=None)``: ids and mask (B, L); ``tokens`` ``{name: (B, N_m,
    token_dims[name])}``; ``present`` (B, M) bool in the order of ``token_dims`` (default: all). A missing
    modality's vote (late), features (early, film: zeroed) or tokens (cross: masked out) are left out;
    the text is always present. Returns logits (B, num_classes).
    """

    def __init__(self, vocab_size: int, token_dims: Mapping[str, int], num_classes: int, strategy: str = "cross",
                 config: FusionConfig | None = None, **overrides):
        super().__init__()
        c = self.config = config_with(FusionConfig, config, overrides)
        self.strategy = check_choice("strategy", strategy, STRATEGIES)
        self.vocab_size = check_int("vocab_size", vocab_size, min=2)
        self.num_classes = check_int("num_classes", num_classes, min=2)
        check_instance("token_dims", token_dims, Mapping)
        if not token_dims:
            raise ValueError("token_dims must name at least one modality {name: token width}")
        self.token_dims = {k: check_int(f"token_dims[{k!r}]", d, min=1) for k, d in token_dims.items()}
        self.names = tuple(self.token_dims)
        self.pool, self.dim = c.pool, c.dim
        dim, hidden, m = c.dim, c.hidden, len(self.names)
        # text_layers=0: word + position embeddings only, the fusion layers do the rest
        self.text = TransformerTextEncoder(vocab_size, dim, c.heads, c.text_layers, c.max_len, embed_std=0.02)
        self.adapters = nn.ModuleDict({k: nn.Sequential(nn.LayerNorm(d), nn.Linear(d, dim))
                                       for k, d in self.token_dims.items()})
        if strategy == "early":
            self.fuse = ConcatFusion((dim,) * (1 + m), width=dim, hidden=hidden, out_dim=num_classes)
        elif strategy == "late":
            self.fuse = LateFusion((dim,) * (1 + m), hidden=hidden, out_dim=num_classes, mode=c.late_mode)
        elif strategy == "film":
            self.film_linear = nn.ModuleDict({k: nn.ModuleList(nn.Linear(dim, dim) for _ in range(c.film_layers))
                                              for k in self.names})
            self.film = nn.ModuleDict({k: nn.ModuleList(FiLM(dim, dim) for _ in range(c.film_layers))
                                       for k in self.names})
            self.film_norm = nn.LayerNorm(dim, elementwise_affine=False)  # FiLM supplies the scale and shift
            self.head = nn.Sequential(nn.Linear((1 + m) * dim, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
        else:
            self.type_embed = nn.Parameter(torch.randn(m, dim) * 0.02)  # (M, dim): which modality a token is from
            self.fuse = CrossAttentionFusion(dim, c.heads, c.cross_layers)
            self.head = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
        self.last_attention: torch.Tensor | None = None

    def _inputs(self, ids, mask, tokens, present):
        """The user's inputs, checked once: (mask (B, L) bool, present (B, M) bool)."""
        check_tensor("ids", ids, 2, dtype="int")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(f"ids must lie in [0, {self.vocab_size}), got values in "
                             f"[{int(ids.min())}, {int(ids.max())}] (shape {tuple(ids.shape)})")
        mask = check_mask("mask", mask, ids)
        if set(check_instance("tokens", tokens, Mapping)) != set(self.names):
            raise ValueError(f"tokens must be a dict with keys {list(self.names)}, got {sorted(tokens)}")
        b = ids.shape[0]
        for k in self.names:
            check_tensor(f"tokens[{k!r}]", tokens[k], 3, size={0: b, 2: self.token_dims[k]}, dtype="float")
        if present is None:
            return mask, torch.ones(b, len(self.names), dtype=torch.bool, device=ids.device)
        return mask, check_tensor("present", present, 2, size={0: b, 1: len(self.names)}).bool()

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
        """Late fusion only: each modality's own logits, (1 + M, B, num_classes), text first.

        ``sum(F.cross_entropy(v, y) for v in model.votes(ids, mask, tokens))`` trains every vote on its
        own (the votes share no parameters); ``forward`` averages them over the present modalities.
        """
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
