"""Multi-objective vision-language pretraining (chapter 12): contrastive, matching and captioning in one model.

ALBEF (Li et al., 2021) and BLIP (Li et al., 2022) pretrain one model with three losses at once: image-text
contrastive (ITC, CLIP's InfoNCE, optionally with multi-positive targets for duplicate facts), image-text
matching (ITM, on hard negatives mined from the ITC similarities) and image-conditioned language modelling (LM,
BLIP's captioning decoder).

* :class:`PretrainConfig` / :class:`MultiObjectiveModel` – the model and its sizes.
* :func:`mine_hard_negatives` – ALBEF's in-batch negative sampling from similarities.
* :class:`LossWeights` / :func:`pretraining_loss` – the weighted sum; a zero weight switches its branch off.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_choice, check_float, check_instance, check_int, check_mask, check_tensor, config_with
from .nn.encoders import TransformerTextEncoder
from .nn.fusion import CrossAttentionFusion
from .nn.layers import causal_mask, grid_position_embedding, masked_mean
from .nn.losses import CLIP_INIT_LOGIT_SCALE, clip_loss, logit_scale_to_scale
from .text import BOS_ID, EOS_ID, PAD_ID

__all__ = ["PretrainConfig", "MultiObjectiveModel", "mine_hard_negatives", "LossWeights", "pretraining_loss",
           "NEGATIVE_MODES"]

NEGATIVE_MODES = ("hard", "random")


@dataclass
class PretrainConfig:
    """Sizes of a :class:`MultiObjectiveModel`.

    ``vocab_size``: tokenizer size; ``image_dim`` and ``n_regions``: what the image encoder returns,
    (B, n_regions, image_dim), ``n_regions`` a square grid; ``dim``: width of every Transformer (a multiple of ``heads``
    and of 4); ``embed_dim``: width of the ITC embeddings; ``max_len``: longest token sequence
    ([BOS] and [EOS] included). ``pad_id``, ``bos_id``, ``eos_id`` follow :func:`mmutils.text.train_tokenizer`
    (:data:`mmutils.text.PAD_ID`, :data:`~mmutils.text.BOS_ID`, :data:`~mmutils.text.EOS_ID`). The grid and width
    rules of :func:`mmutils.nn.layers.grid_position_embedding` are checked here, when the sizes are given.
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
    pad_id: int = PAD_ID
    bos_id: int = BOS_ID
    eos_id: int = EOS_ID

    def __post_init__(self) -> None:
        for name in ("vocab_size", "image_dim", "n_regions", "dim", "heads", "text_layers", "fusion_layers",
                     "decoder_layers", "embed_dim", "max_len"):
            check_int(name, getattr(self, name), min=1)
        if math.isqrt(self.n_regions) ** 2 != self.n_regions:
            raise ValueError(f"n_regions must be a square number (a grid of regions), got {self.n_regions}")
        if self.dim % self.heads or self.dim % 4:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads}) and by 4")
        for name in ("pad_id", "bos_id", "eos_id"):
            check_int(name, getattr(self, name), min=0, max=self.vocab_size - 1)


class MultiObjectiveModel(nn.Module):
    """An ALBEF/BLIP-style image-text model with ITC, ITM and captioning heads.

    * ``image_encoder(images)`` -> region tokens (B, N, image_dim), e.g. :class:`mmutils.nn.ConvTower` (or
      ``nn.Identity()`` to feed cached region tokens); a linear map, a learned position embedding per region
      (initialized with :func:`mmutils.nn.layers.grid_position_embedding`, so the regions are told apart from the first
      step) and a LayerNorm turn them into image tokens (B, N, dim).
    * text encoder: :class:`mmutils.nn.encoders.TransformerTextEncoder` -> tokens (B, L, dim) and their masked mean
      (B, dim).
    * ITC: ``image_proj`` maps the *flattened* image tokens (B, N * dim; flattening keeps the layout that average
      pooling would discard) and ``text_proj`` the pooled text to ``embed_dim``; :meth:`embed_image` /
      :meth:`embed_text` return L2-normalized embeddings; ``logit_scale`` starts at log(1/0.07) as in CLIP.
    * ITM: :class:`mmutils.nn.fusion.CrossAttentionFusion` lets the words attend to each other and to the image tokens;
      the masked mean of the fused words goes through a linear layer to one match logit (:meth:`match`, > 0 =
      "matches").
    * LM: a causal Transformer decoder (self-attention under :func:`mmutils.nn.layers.causal_mask`, cross-attention to
      the image tokens) predicts token ``t + 1`` from tokens ``0..t`` (:meth:`decode`); it shares the word embedding
      with the text encoder, as BLIP shares most of its text parameters. :meth:`generate` decodes greedily from [BOS].

    ``config`` is a :class:`PretrainConfig`; keyword ``overrides`` replace its fields (or give them all:
    ``MultiObjectiveModel(enc, vocab_size=..., image_dim=..., n_regions=...)``). Padding must be on the right (as
    :func:`mmutils.text.encode_batch` pads): the encoder and the fusion mask it out, and the causal decoder never looks
    ahead, so padding changes no output at a real token.
    """

    def __init__(self, image_encoder: nn.Module, config: PretrainConfig | None = None, **overrides):
        super().__init__()
        check_instance("image_encoder", image_encoder, nn.Module)
        c = self.config = config_with(PretrainConfig, config, overrides)
        self.image_encoder = image_encoder
        self.image_in = nn.Linear(c.image_dim, c.dim)
        self.image_pos = nn.Parameter(grid_position_embedding(c.n_regions, c.dim)[None])  # (1, N, dim)
        self.image_norm = nn.LayerNorm(c.dim)
        self.text_encoder = TransformerTextEncoder(c.vocab_size, c.dim, c.heads, c.text_layers, c.max_len,
                                                   pad_id=c.pad_id, embed_std=0.02)
        # ITC
        self.image_proj = nn.Linear(c.n_regions * c.dim, c.embed_dim)
        self.text_proj = nn.Linear(c.dim, c.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(CLIP_INIT_LOGIT_SCALE))
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
        check_tensor("image_encoder(images)", regions, 3, size={1: c.n_regions, 2: c.image_dim})
        return self.image_norm(self.image_in(regions) + self.image_pos)  # (B, N, dim)

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Text tokens (B, L, dim) and their masked mean (B, dim) from ids (B, L) and mask (B, L)."""
        return self.text_encoder(ids, mask)

    # -------------------------------------------------------------------- ITC
    def embed_image(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """ITC embedding: image tokens (B, N, dim) -> unit vectors (B, embed_dim)."""
        return F.normalize(self.image_proj(image_tokens.flatten(1)), dim=-1)

    def embed_text(self, pooled: torch.Tensor) -> torch.Tensor:
        """ITC embedding: pooled text (B, dim) -> unit vectors (B, embed_dim)."""
        return F.normalize(self.text_proj(pooled), dim=-1)

    def scale(self) -> torch.Tensor:
        """The ITC inverse temperature exp(logit_scale), in [1, 100]: the exponent is clamped to [0, log 100] as in
        CLIP (:func:`mmutils.nn.losses.logit_scale_to_scale`)."""
        return logit_scale_to_scale(self.logit_scale)

    # -------------------------------------------------------------------- ITM
    def match(self, image_tokens: torch.Tensor, text_tokens: torch.Tensor,
              text_mask: torch.Tensor | None = None) -> torch.Tensor:
        """ITM logits (B,) of aligned pairs: image tokens (B, N, dim), text tokens (B, L, dim), mask (B, L)."""
        mask = check_mask("text_mask", text_mask, text_tokens)
        fused, _ = self.fusion(text_tokens, image_tokens, mask)  # (B, L, dim)
        return self.itm_head(masked_mean(fused, mask)).squeeze(-1)  # (B,)

    def match_pairs(self, image_tokens: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor,
                    image_index: torch.Tensor, text_index: torch.Tensor) -> torch.Tensor:
        """ITM logits (P,) of the pairs (image ``image_index[k]``, text ``text_index[k]``) of a batch.

        ``image_tokens`` (B, N, dim), ``text_tokens`` (B, L, dim), ``text_mask`` (B, L), both indices (P,) ints.
        Equal, up to floating-point rounding, to
        ``match(image_tokens[image_index], text_tokens[text_index], text_mask[text_index])``, but cheaper when a text
        occurs in several pairs (ITM pairs each caption with its image and with a negative image, and may use it as
        another image's negative text): the first fusion block's self-attention sees no image, so it runs once per
        text and is gathered into the pairs.
        """
        mask = check_mask("text_mask", text_mask, text_tokens)  # (B, L) bool
        check_tensor("image_index", image_index, 1, dtype="int")
        check_tensor("text_index", text_index, 1, size={0: image_index.shape[0]}, dtype="int")  # one per pair
        first, *rest = self.fusion.blocks  # CrossAttentionBlock: read_text, then read_image
        text = first.read_text(text_tokens, mask)  # (B, L, dim): once per text
        text, mask, image = text[text_index], mask[text_index], image_tokens[image_index]  # (P, L, dim) ...
        x, _ = first.read_image(text, image)  # (P, L, dim)
        for block in rest:
            x, _ = block(x, image, mask)
        fused = self.fusion.norm(x)  # (P, L, dim)
        return self.itm_head(masked_mean(fused, mask)).squeeze(-1)  # (P,)

    # --------------------------------------------------------------------- LM
    def decode(self, image_tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Next-token logits (B, L, vocab) of a causal decoder reading ids (B, L) and attending to the image.

        The logits at position ``t`` depend on ``ids[:, :t + 1]`` and the image only; L <= ``max_len``.
        """
        length = ids.shape[1]
        if length > self.config.max_len:
            raise ValueError(f"ids must have length <= max_len={self.config.max_len}, got shape {tuple(ids.shape)}")
        x = self.text_encoder.embed(ids) + self.dec_pos[:, :length]  # (B, L, dim)
        h = self.decoder(x, image_tokens, tgt_mask=causal_mask(length, ids.device), tgt_is_causal=True)
        return self.lm_head(self.dec_norm(h))  # (B, L, vocab)

    def caption_log_likelihood(self, image_tokens: torch.Tensor, ids: torch.Tensor,
                               mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean log-probability per predicted token of each caption given its image: (B,) floats.

        ``image_tokens`` (B, N, dim), ``ids`` (B, L) starting with [BOS], ``mask`` (B, L) (1 = real token, padding on
        the right). The decoder predicts tokens ``1..L-1`` from their prefixes; padded targets are left out of the mean.
        A captioning model scores (image, caption) pairs this way, so it can rank and match without an ITM or ITC head
        (a generative classifier).
        """
        check_tensor("ids", ids, 2, dtype="int")
        if ids.shape[1] < 2:
            raise ValueError(f"ids must have length >= 2 ([BOS] and one token), got shape {tuple(ids.shape)}")
        mask = check_mask("mask", mask, ids)
        logits = self.decode(image_tokens, ids[:, :-1]).float()  # (B, L-1, vocab)
        logp = logits.log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)  # (B, L-1)
        keep = mask[:, 1:].to(logp.dtype)
        return (logp * keep).sum(1) / keep.sum(1).clamp(min=1.0)

    @torch.no_grad()
    def generate(self, image_tokens: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
        """Greedy decoding from [BOS]: image tokens (B, N, dim) -> ids (B, T), T <= ``max_len``.

        Each step appends the most likely next token; a row that has emitted [EOS] is padded with ``pad_id`` afterwards;
        decoding stops when every row has ended or after ``max_len`` tokens ([BOS] included, at most
        ``config.max_len``).
        """
        c = self.config
        max_len = c.max_len if max_len is None else check_int("max_len", max_len, min=1, max=c.max_len)
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
        image_tokens = self.encode_image(images)
        check_tensor("ids", ids, 2, size={0: image_tokens.shape[0]}, dtype="int")  # one caption per image
        text_tokens, pooled = self.encode_text(ids, mask)
        return {"image_emb": self.embed_image(image_tokens), "text_emb": self.embed_text(pooled),
                "itm": self.match(image_tokens, text_tokens, mask), "lm": self.decode(image_tokens, ids)}


def mine_hard_negatives(similarity: torch.Tensor, key_id: torch.Tensor | None = None,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """ALBEF's in-batch hard negatives: sample a non-matching partner with probability softmax(similarity).

    ``similarity``: (B, B) image-to-text scores of a batch of aligned pairs (row ``i`` = image ``i``, column ``j`` =
    text ``j``; e.g. scaled ITC cosines). ``key_id``: optional (B,) ints; pairs with equal keys count as matching (a
    caption of another image in the batch may be true of this one), so they are never drawn. Returns
    ``(negative_text, negative_image)``, two (B,) index tensors: for image ``i`` a text ``negative_text[i] != i`` and
    for text ``j`` an image ``negative_image[j] != j``, drawn with weights softmax over the row (column) with the
    positives removed. A row whose every other item matches falls back to a uniform draw among the other indices (a
    positive is never picked; with ``key_id`` it then may be a duplicate). B must be >= 2.
    """
    b = check_tensor("similarity", similarity, 2, dtype="float").shape[0]
    if similarity.shape[1] != b or b < 2:
        raise ValueError(f"similarity must be square (B, B) with B >= 2 pairs to mine a negative from, got shape "
                         f"{tuple(similarity.shape)}")
    eye = torch.eye(b, dtype=torch.bool, device=similarity.device)
    same = eye
    if key_id is not None:
        check_tensor("key_id", key_id, 1, size={0: b}, dtype="int")
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
            check_float(name, getattr(self, name), min=0.0)
        if self.itc == self.itm == self.lm == 0:
            raise ValueError("at least one of the weights itc, itm, lm must be > 0")


def pretraining_loss(model: MultiObjectiveModel, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
                     weights: LossWeights | None = None, *, key_id: torch.Tensor | None = None,
                     negatives: str = "hard", multi_positive: bool = False,
                     generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The ALBEF/BLIP pretraining loss ``itc * L_ITC + itm * L_ITM + lm * L_LM`` on a batch of pairs.

    ``images``: what ``model.image_encoder`` takes, batch B; ``ids``, ``mask``: (B, L) captions padded on the right;
    ``key_id``: optional (B,) ints, equal for captions with the same facts (never mined as each other's negatives).

    * ITC: :func:`mmutils.nn.losses.clip_loss` on the ITC embeddings, one positive per row (the diagonal); with
      ``key_id`` and ``multi_positive=True`` its targets are multi-positive: a caption with the same key as the image
      counts as a positive, not as a negative.
    * ITM: for each image a negative caption and for each caption a negative image from :func:`mine_hard_negatives`;
      binary cross-entropy on the B positive and 2B negative pairs (ALBEF). ``negatives="hard"`` mines them from the ITC
      similarities (no gradient through the mining; with ``itc = 0`` the ITC heads stay untrained, so these "hard"
      negatives are close to random); ``negatives="random"`` draws them uniformly (all similarities equal), the baseline
      of an ITM model trained without a contrastive head. Pairs with equal ``key_id`` are never drawn as negatives in
      either mode.
    * LM: cross-entropy of the decoder's prediction of token ``t + 1`` from tokens ``0..t`` over real tokens
      (padding ignored).

    A branch whose weight is 0 is not computed (it gets no gradient). Returns a dict with ``"loss"`` and the unweighted
    parts that were computed (``"itc"``, ``"itm"``, ``"itm_acc"``, ``"lm"``), all scalars, ready for
    :func:`mmutils.train.fit`.
    """
    check_instance("model", model, MultiObjectiveModel)
    weights = LossWeights() if weights is None else check_instance("weights", weights, LossWeights)
    check_choice("negatives", negatives, NEGATIVE_MODES)
    check_instance("multi_positive", multi_positive, bool)
    image_tokens = model.encode_image(images)  # (B, N, dim)
    check_tensor("ids", ids, 2, size={0: image_tokens.shape[0]}, dtype="int")  # one caption per image
    mask = check_tensor("mask", mask, 2, size=dict(enumerate(ids.shape))).bool()  # the shape of ids
    out: dict[str, torch.Tensor] = {}
    total = image_tokens.new_zeros(())
    text_tokens = pooled = None
    need_emb = weights.itc > 0 or (weights.itm > 0 and negatives == "hard")
    if weights.itc > 0 or weights.itm > 0:
        text_tokens, pooled = model.encode_text(ids, mask)  # (B, L, dim), (B, dim)
    if need_emb:
        img_emb, txt_emb = model.embed_image(image_tokens), model.embed_text(pooled)  # (B, E) each
    if weights.itc > 0:
        out["itc"] = clip_loss(img_emb, txt_emb, model.logit_scale, key_id=key_id if multi_positive else None)
        total = total + weights.itc * out["itc"]
    if weights.itm > 0:
        b = ids.shape[0]
        if negatives == "hard":
            with torch.no_grad():
                sim = model.scale() * img_emb @ txt_emb.t()  # (B, B)
        else:
            sim = image_tokens.new_zeros(b, b).float()  # equal scores: uniform draws
        neg_text, neg_image = mine_hard_negatives(sim, key_id, generator)
        pos = torch.arange(b, device=ids.device)
        # the 3B pairs: (image i, text i), (image i, negative text of image i), (negative image of text i, text i)
        image_index = torch.cat([pos, pos, neg_image])  # (3B,)
        text_index = torch.cat([pos, neg_text, pos])  # (3B,)
        logits = model.match_pairs(image_tokens, text_tokens, mask, image_index, text_index)  # (3B,)
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
