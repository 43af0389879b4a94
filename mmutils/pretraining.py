"""Multi-objective vision-language pretraining: contrastive, matching and captioning in one model.

ALBEF (Li et al., 2021) and BLIP (Li et al., 2022) pretrain one image-text model
with three losses at once:

* **ITC**, image-text contrastive: the symmetric InfoNCE loss of CLIP (Radford et
  al., 2021) on projected, L2-normalized image and text embeddings;
* **ITM**, image-text matching: a binary classifier over cross-attention-fused
  features, trained on the positive pairs and on *hard negatives mined from the
  ITC similarities of the batch* (a negative is drawn with probability
  proportional to its softmax similarity, as in ALBEF);
* **LM**, language modelling conditioned on the image (captioning): a small
  causal Transformer decoder that attends to the image regions (BLIP's decoder).

This module holds:

* :class:`PretrainConfig` – the sizes of the model;
* :class:`MultiObjectiveModel` – image tokens, text encoder, ITC projections, ITM
  head over :class:`mmutils.fusion.CrossAttentionFusion`, causal decoder with
  :meth:`~MultiObjectiveModel.generate` (greedy decoding) and
  :meth:`~MultiObjectiveModel.caption_log_likelihood` (the captioner as a pair scorer);
* :func:`grid_position_embedding` – the 2-D sine-cosine start of the region positions;
* :func:`causal_mask` – the additive attention mask of a decoder;
* :func:`mine_hard_negatives` – ALBEF's in-batch negative sampling from similarities;
* :class:`LossWeights` and :func:`pretraining_loss` – the weighted sum of the three
  losses; a zero weight switches its branch off (not even computed), so single-objective
  variants train with the same code.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .encoders import TransformerTextEncoder, _check_mask, check_tensor, masked_mean
from .fusion import CrossAttentionFusion
from .losses import clip_loss

__all__ = [
    "PretrainConfig", "MultiObjectiveModel", "grid_position_embedding", "causal_mask", "mine_hard_negatives", "LossWeights",
    "pretraining_loss", "NEGATIVE_MODES",
]

NEGATIVE_MODES = ("hard", "random")


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


@dataclass
class PretrainConfig:
    """Sizes of a :class:`MultiObjectiveModel`.

    ``vocab_size``: tokenizer size; ``image_dim`` and ``n_regions``: what the
    image encoder returns, (B, n_regions, image_dim); ``dim``: width of every
    Transformer; ``embed_dim``: width of the ITC embeddings; ``max_len``: longest
    token sequence ([BOS] and [EOS] included). ``pad_id``, ``bos_id``, ``eos_id``
    follow :func:`mmutils.text.train_tokenizer` (0, 2, 3).
    """

    vocab_size: int
    image_dim: int
    n_regions: int
    dim: int = 32
    heads: int = 4
    text_layers: int = 1
    fusion_layers: int = 1
    decoder_layers: int = 1
    embed_dim: int = 32
    max_len: int = 16
    pad_id: int = 0
    bos_id: int = 2
    eos_id: int = 3

    def __post_init__(self) -> None:
        for name in ("vocab_size", "image_dim", "n_regions", "dim", "heads", "text_layers", "fusion_layers",
                     "decoder_layers", "embed_dim", "max_len"):
            _positive_int(name, getattr(self, name))
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        for name in ("pad_id", "bos_id", "eos_id"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < self.vocab_size:
                raise ValueError(f"{name} must be an int in [0, vocab_size={self.vocab_size}), got {value!r}")


def grid_position_embedding(n_regions: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine embedding (n_regions, dim) of the cells of a square, row-major grid.

    Half of the channels encode the row and half the column, each as sines and
    cosines of geometrically spaced frequencies, as in the Transformer
    (Vaswani et al., 2017) and the 2-D variant of MAE. The model uses it to
    *initialize* its learned per-region position embedding, so every head knows
    where a region is from the first step (a small random initialization takes
    hundreds of steps to become useful). ``n_regions`` must be a square and
    ``dim`` a multiple of 4.
    """
    _positive_int("n_regions", n_regions)
    _positive_int("dim", dim)
    side = math.isqrt(n_regions)
    if side * side != n_regions:
        raise ValueError(f"n_regions must be a square number (a grid of regions), got {n_regions}")
    if dim % 4:
        raise ValueError(f"dim must be a multiple of 4 (sin and cos of rows and columns), got {dim}")
    quarter = dim // 4
    freq = 1.0 / (10.0 ** (torch.arange(quarter, dtype=torch.float32) / max(quarter, 1)))  # (dim/4,)
    rows, cols = torch.meshgrid(torch.arange(side, dtype=torch.float32), torch.arange(side, dtype=torch.float32),
                                indexing="ij")
    parts = []
    for coord in (rows.flatten(), cols.flatten()):  # (N,) each
        angle = coord[:, None] * freq[None] * math.pi / 2  # (N, dim/4)
        parts += [angle.sin(), angle.cos()]
    return torch.cat(parts, dim=1)  # (N, dim)


def causal_mask(length: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Additive causal attention mask (length, length): 0 on and below the diagonal, -inf above.

    Position ``i`` may attend to positions ``0..i`` only, so the prediction at
    ``i`` never sees a later token (Vaswani et al., 2017).
    """
    _positive_int("length", length)
    return torch.triu(torch.full((length, length), float("-inf"), device=device), diagonal=1)


class MultiObjectiveModel(nn.Module):
    """An ALBEF/BLIP-style image-text model with ITC, ITM and captioning heads.

    * ``image_encoder(images)`` -> region tokens (B, N, image_dim), e.g.
      :class:`mmutils.encoders.SpatialCNN` (or ``nn.Identity()`` to feed cached
      region tokens); a linear map, a learned position embedding per region
      (initialized with :func:`grid_position_embedding`, so the regions are
      told apart from the first step) and a LayerNorm turn them into image
      tokens (B, N, dim). ``n_regions`` must be a square grid and ``dim`` a
      multiple of 4.
    * text encoder: :class:`mmutils.encoders.TransformerTextEncoder` -> tokens
      (B, L, dim) and their masked mean (B, dim).
    * ITC: ``image_proj`` maps the *flattened* image tokens (B, N * dim; flattening
      keeps the layout that average pooling would discard) and ``text_proj`` the
      pooled text to ``embed_dim``; :meth:`embed_image` / :meth:`embed_text` return
      L2-normalized embeddings; ``logit_scale`` starts at log(1/0.07) as in CLIP.
    * ITM: :class:`mmutils.fusion.CrossAttentionFusion` lets the words attend to each
      other and to the image tokens; the masked mean of the fused words goes
      through a linear layer to one match logit (:meth:`match`, > 0 = "matches").
    * LM: a causal Transformer decoder (self-attention under :func:`causal_mask`,
      cross-attention to the image tokens) predicts token ``t + 1`` from tokens
      ``0..t`` (:meth:`decode`); it shares the word embedding with the text
      encoder, as BLIP shares most of its text parameters. :meth:`generate`
      decodes greedily from [BOS].

    Padding must be on the right (as :func:`mmutils.text.encode_batch` pads): the
    encoder and the fusion mask it out, and the causal decoder never looks ahead,
    so padding changes no output at a real token.
    """

    def __init__(self, image_encoder: nn.Module, config: PretrainConfig):
        super().__init__()
        if not isinstance(image_encoder, nn.Module):
            raise TypeError(f"image_encoder must be a torch.nn.Module, got {type(image_encoder).__name__}")
        if not isinstance(config, PretrainConfig):
            raise TypeError(f"config must be a PretrainConfig, got {type(config).__name__}")
        c = self.config = config
        self.image_encoder = image_encoder
        self.image_in = nn.Linear(c.image_dim, c.dim)
        self.image_pos = nn.Parameter(grid_position_embedding(c.n_regions, c.dim)[None])  # (1, N, dim)
        self.image_norm = nn.LayerNorm(c.dim)
        self.text_encoder = TransformerTextEncoder(c.vocab_size, c.dim, c.heads, c.text_layers, c.max_len,
                                                   pad_id=c.pad_id, embed_std=0.02)
        # ITC
        self.image_proj = nn.Linear(c.n_regions * c.dim, c.embed_dim)
        self.text_proj = nn.Linear(c.dim, c.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        # ITM
        self.fusion = CrossAttentionFusion(c.dim, c.heads, c.fusion_layers)
        self.itm_head = nn.Linear(c.dim, 1)
        # LM (the word embedding is the text encoder's)
        self.dec_pos = nn.Parameter(torch.randn(1, c.max_len, c.dim) * 0.02)
        layer = nn.TransformerDecoderLayer(c.dim, c.heads, dim_feedforward=2 * c.dim, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, c.decoder_layers)
        self.dec_norm = nn.LayerNorm(c.dim)
        self.lm_head = nn.Linear(c.dim, c.vocab_size)

    # ----------------------------------------------------------------- towers
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Image tokens (B, N, dim) from whatever ``image_encoder`` takes (e.g. images (B, C, H, W))."""
        c = self.config
        regions = self.image_encoder(images)
        if not isinstance(regions, torch.Tensor) or regions.ndim != 3 or \
                tuple(regions.shape[1:]) != (c.n_regions, c.image_dim):
            got = tuple(regions.shape) if isinstance(regions, torch.Tensor) else type(regions).__name__
            raise ValueError(f"image_encoder must return (B, n_regions={c.n_regions}, image_dim={c.image_dim}), "
                             f"got {got}")
        return self.image_norm(self.image_in(regions) + self.image_pos)  # (B, N, dim)

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Text tokens (B, L, dim) and their masked mean (B, dim) from ids (B, L) and mask (B, L)."""
        return self.text_encoder(ids, mask)

    def _check_image_tokens(self, name: str, x) -> None:
        check_tensor(name, x, 3, size={1: self.config.n_regions, 2: self.config.dim}, dtype_kind="float")

    # -------------------------------------------------------------------- ITC
    def embed_image(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """ITC embedding: image tokens (B, N, dim) -> unit vectors (B, embed_dim)."""
        self._check_image_tokens("image_tokens", image_tokens)
        return F.normalize(self.image_proj(image_tokens.flatten(1)), dim=-1)

    def embed_text(self, pooled: torch.Tensor) -> torch.Tensor:
        """ITC embedding: pooled text (B, dim) -> unit vectors (B, embed_dim)."""
        check_tensor("pooled", pooled, 2, size={1: self.config.dim}, dtype_kind="float")
        return F.normalize(self.text_proj(pooled), dim=-1)

    def scale(self) -> torch.Tensor:
        """The ITC inverse temperature exp(logit_scale), clamped at 100 as in CLIP."""
        return self.logit_scale.exp().clamp(max=100.0)

    # -------------------------------------------------------------------- ITM
    def match(self, image_tokens: torch.Tensor, text_tokens: torch.Tensor,
              text_mask: torch.Tensor | None = None) -> torch.Tensor:
        """ITM logits (B,) of aligned pairs: image tokens (B, N, dim), text tokens (B, L, dim), mask (B, L)."""
        self._check_image_tokens("image_tokens", image_tokens)
        check_tensor("text_tokens", text_tokens, 3, size={2: self.config.dim}, dtype_kind="float")
        if image_tokens.shape[0] != text_tokens.shape[0]:
            raise ValueError(f"image_tokens and text_tokens must share the batch size, got "
                             f"{tuple(image_tokens.shape)} and {tuple(text_tokens.shape)}")
        mask = _check_mask(text_mask, text_tokens, "text_mask")
        fused, _ = self.fusion(text_tokens, image_tokens, mask)  # (B, L, dim)
        return self.itm_head(masked_mean(fused, mask)).squeeze(-1)  # (B,)

    # --------------------------------------------------------------------- LM
    def decode(self, image_tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Next-token logits (B, L, vocab) of a causal decoder reading ids (B, L) and attending to the image.

        The logits at position ``t`` depend on ``ids[:, :t + 1]`` and the image only.
        """
        self._check_image_tokens("image_tokens", image_tokens)
        check_tensor("ids", ids, 2, dtype_kind="int")
        if ids.shape[0] != image_tokens.shape[0]:
            raise ValueError(f"image_tokens and ids must share the batch size, got {tuple(image_tokens.shape)} "
                             f"and {tuple(ids.shape)}")
        length = ids.shape[1]
        if not 1 <= length <= self.config.max_len:
            raise ValueError(f"ids must have length in [1, max_len={self.config.max_len}], got shape "
                             f"{tuple(ids.shape)}")
        x = self.text_encoder.embed(ids) + self.dec_pos[:, :length]  # (B, L, dim)
        h = self.decoder(x, image_tokens, tgt_mask=causal_mask(length, ids.device), tgt_is_causal=True)
        return self.lm_head(self.dec_norm(h))  # (B, L, vocab)

    def caption_log_likelihood(self, image_tokens: torch.Tensor, ids: torch.Tensor,
                               mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean log-probability per predicted token of each caption given its image: (B,) floats.

        ``image_tokens`` (B, N, dim), ``ids`` (B, L) starting with [BOS], ``mask``
        (B, L) (1 = real token, padding on the right). The decoder predicts
        tokens ``1..L-1`` from their prefixes; padded targets are left out of the
        mean. A captioning model scores (image, caption) pairs this way, so it can
        rank and match without an ITM or ITC head (a generative classifier).
        """
        check_tensor("ids", ids, 2, dtype_kind="int")
        if ids.shape[1] < 2:
            raise ValueError(f"ids must have length >= 2 ([BOS] and one token), got shape {tuple(ids.shape)}")
        mask = _check_mask(mask, ids, "mask")
        logits = self.decode(image_tokens, ids[:, :-1]).float()  # (B, L-1, vocab)
        logp = logits.log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)  # (B, L-1)
        keep = mask[:, 1:].to(logp.dtype)
        return (logp * keep).sum(1) / keep.sum(1).clamp(min=1.0)

    @torch.no_grad()
    def generate(self, image_tokens: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
        """Greedy decoding from [BOS]: image tokens (B, N, dim) -> ids (B, T), T <= ``max_len``.

        Each step appends the most likely next token; a row that has emitted
        [EOS] is padded with ``pad_id`` afterwards; decoding stops when every row
        has ended or after ``max_len`` tokens ([BOS] included).
        """
        self._check_image_tokens("image_tokens", image_tokens)
        c = self.config
        max_len = c.max_len if max_len is None else _positive_int("max_len", max_len)
        if max_len > c.max_len:
            raise ValueError(f"max_len must be <= config.max_len={c.max_len}, got {max_len}")
        b = image_tokens.shape[0]
        ids = torch.full((b, 1), c.bos_id, dtype=torch.long, device=image_tokens.device)
        done = torch.zeros(b, dtype=torch.bool, device=image_tokens.device)
        while ids.shape[1] < max_len and not bool(done.all()):
            nxt = self.decode(image_tokens, ids)[:, -1].argmax(-1)  # (B,)
            nxt = torch.where(done, torch.full_like(nxt, c.pad_id), nxt)
            ids = torch.cat([ids, nxt[:, None]], dim=1)
            done |= nxt == c.eos_id
        return ids

    def forward(self, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor | None = None) -> dict:
        """All heads on aligned pairs: ``{"image_emb", "text_emb"}`` (B, embed_dim), ``"itm"`` (B,),
        ``"lm"`` (B, L, vocab) next-token logits."""
        check_tensor("ids", ids, 2, dtype_kind="int")
        image_tokens = self.encode_image(images)
        if ids.shape[0] != image_tokens.shape[0]:
            raise ValueError(f"images and ids must share the batch size, got {image_tokens.shape[0]} and "
                             f"{tuple(ids.shape)}")
        text_tokens, pooled = self.encode_text(ids, mask)
        return {"image_emb": self.embed_image(image_tokens), "text_emb": self.embed_text(pooled),
                "itm": self.match(image_tokens, text_tokens, mask), "lm": self.decode(image_tokens, ids)}


def mine_hard_negatives(similarity: torch.Tensor, key_id: torch.Tensor | None = None,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """ALBEF's in-batch hard negatives: sample a non-matching partner with probability softmax(similarity).

    ``similarity``: (B, B) image-to-text scores of a batch of aligned pairs (row
    ``i`` = image ``i``, column ``j`` = text ``j``; e.g. scaled ITC cosines).
    ``key_id``: optional (B,) ints; pairs with equal keys count as matching (a
    caption of another image in the batch may be true of this one), so they are
    never drawn. Returns ``(negative_text, negative_image)``, two (B,) index
    tensors: for image ``i`` a text ``negative_text[i] != i`` and for text ``j``
    an image ``negative_image[j] != j``, drawn with weights softmax over the row
    (column) with the positives removed. A row whose every other item matches
    falls back to a uniform draw among the other indices (a positive is never
    picked; with ``key_id`` it then may be a duplicate). B must be >= 2.
    """
    check_tensor("similarity", similarity, 2, dtype_kind="float")
    b = similarity.shape[0]
    if similarity.shape[1] != b:
        raise ValueError(f"similarity must be square (B, B), got shape {tuple(similarity.shape)}")
    if b < 2:
        raise ValueError(f"similarity must hold at least 2 pairs to mine a negative, got shape "
                         f"{tuple(similarity.shape)}")
    eye = torch.eye(b, dtype=torch.bool, device=similarity.device)
    same = eye
    if key_id is not None:
        check_tensor("key_id", key_id, 1, size={0: b}, dtype_kind="int")
        same = eye | (key_id[:, None] == key_id[None, :]).to(similarity.device)
    sim = similarity.detach().float()

    def draw(scores: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(scores.masked_fill(same, float("-inf")), dim=1)  # rows of all -inf give NaN
        w = torch.nan_to_num(w, nan=0.0)
        empty = w.sum(1) <= 0
        w = torch.where(empty[:, None], (~eye).float(), w)
        idx = torch.multinomial(w.cpu(), 1, generator=generator).squeeze(1)
        return idx.to(similarity.device)

    return draw(sim), draw(sim.t())


@dataclass
class LossWeights:
    """Weights of the three pretraining losses; 0 switches a branch off."""

    itc: float = 1.0
    itm: float = 1.0
    lm: float = 1.0

    def __post_init__(self) -> None:
        for name in ("itc", "itm", "lm"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise ValueError(f"{name} weight must be a finite number >= 0, got {value!r}")
        if self.itc == self.itm == self.lm == 0:
            raise ValueError("at least one of the weights itc, itm, lm must be > 0")


def pretraining_loss(model: MultiObjectiveModel, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
                     weights: LossWeights | None = None, *, key_id: torch.Tensor | None = None,
                     negatives: str = "hard", generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The ALBEF/BLIP pretraining loss ``itc * L_ITC + itm * L_ITM + lm * L_LM`` on a batch of pairs.

    ``images``: what ``model.image_encoder`` takes, batch B; ``ids``, ``mask``: (B, L)
    captions padded on the right; ``key_id``: optional (B,) ints, equal for
    captions with the same facts (never mined as each other's negatives).

    * ITC: :func:`mmutils.losses.clip_loss` on the ITC embeddings.
    * ITM: for each image a negative caption and for each caption a negative image
      from :func:`mine_hard_negatives`; binary cross-entropy on the B positive and
      2B negative pairs (ALBEF). ``negatives="hard"`` mines them from the ITC
      similarities (no gradient through the mining; with ``itc = 0`` the ITC heads
      stay untrained, so these "hard" negatives are close to random);
      ``negatives="random"`` draws them uniformly (all similarities equal), the
      baseline of an ITM model trained without a contrastive head. Pairs with
      equal ``key_id`` are never drawn as negatives in either mode.
    * LM: cross-entropy of the decoder's prediction of token ``t + 1`` from tokens
      ``0..t`` over real tokens (padding ignored).

    A branch whose weight is 0 is not computed (it gets no gradient). Returns a dict
    with ``"loss"`` and the unweighted parts that were computed (``"itc"``, ``"itm"``,
    ``"itm_acc"``, ``"lm"``), all scalars, ready for :func:`mmutils.train.fit`.
    """
    if not isinstance(model, MultiObjectiveModel):
        raise TypeError(f"model must be a MultiObjectiveModel, got {type(model).__name__}")
    weights = LossWeights() if weights is None else weights
    if not isinstance(weights, LossWeights):
        raise TypeError(f"weights must be a LossWeights, got {type(weights).__name__}")
    check_tensor("ids", ids, 2, dtype_kind="int")
    check_tensor("mask", mask, 2)
    if mask.shape != ids.shape:
        raise ValueError(f"mask must have the shape of ids {tuple(ids.shape)}, got {tuple(mask.shape)}")
    if not isinstance(images, torch.Tensor) or images.shape[0] != ids.shape[0]:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images and ids must share the batch size, got {got} and {tuple(ids.shape)}")
    if negatives not in NEGATIVE_MODES:
        raise ValueError(f"negatives must be one of {NEGATIVE_MODES}, got {negatives!r}")
    if weights.itm > 0 and ids.shape[0] < 2:
        raise ValueError(f"the ITM branch needs a batch of at least 2 pairs to mine negatives, got ids of shape "
                         f"{tuple(ids.shape)}")
    mask = mask.bool()
    image_tokens = model.encode_image(images)  # (B, N, dim)
    out: dict[str, torch.Tensor] = {}
    total = image_tokens.new_zeros(())
    text_tokens = pooled = None
    need_emb = weights.itc > 0 or (weights.itm > 0 and negatives == "hard")
    if weights.itc > 0 or weights.itm > 0:
        text_tokens, pooled = model.encode_text(ids, mask)  # (B, L, dim), (B, dim)
    if need_emb:
        img_emb, txt_emb = model.embed_image(image_tokens), model.embed_text(pooled)  # (B, E) each
    if weights.itc > 0:
        out["itc"] = clip_loss(img_emb, txt_emb, model.logit_scale)
        total = total + weights.itc * out["itc"]
    if weights.itm > 0:
        b = ids.shape[0]
        if negatives == "hard":
            with torch.no_grad():
                sim = model.scale() * img_emb @ txt_emb.t()  # (B, B)
        else:
            sim = image_tokens.new_zeros(b, b).float()  # equal scores: uniform draws
        neg_text, neg_image = mine_hard_negatives(sim, key_id, generator)
        images_all = torch.cat([image_tokens, image_tokens, image_tokens[neg_image]])  # (3B, N, dim)
        texts_all = torch.cat([text_tokens, text_tokens[neg_text], text_tokens])  # (3B, L, dim)
        masks_all = torch.cat([mask, mask[neg_text], mask])
        logits = model.match(images_all, texts_all, masks_all)  # (3B,)
        labels = torch.cat([torch.ones(b), torch.zeros(2 * b)]).to(logits.device)
        out["itm"] = F.binary_cross_entropy_with_logits(logits.float(), labels)
        out["itm_acc"] = ((logits > 0).float() == labels).float().mean()
        total = total + weights.itm * out["itm"]
    if weights.lm > 0:
        if ids.shape[1] < 2:
            raise ValueError(f"the LM branch needs ids of length >= 2, got shape {tuple(ids.shape)}")
        logits = model.decode(image_tokens, ids[:, :-1])  # (B, L-1, vocab)
        target = ids[:, 1:].masked_fill(~mask[:, 1:], -100)
        out["lm"] = F.cross_entropy(logits.float().flatten(0, 1), target.flatten(), ignore_index=-100)
        total = total + weights.lm * out["lm"]
    return {"loss": total, **out}
