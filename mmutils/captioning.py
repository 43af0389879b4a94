"""Image captioning with visual attention (chapter 3): decoders that attend over image regions.

Two decoders: a small Transformer with cross-attention from every word to the regions (Vaswani et al., 2017),
and the recurrent decoder of Show, Attend and Tell (Xu et al., 2015), an LSTM or GRU that looks at the image
before each word with the additive attention of Bahdanau et al. (2015).

* :class:`AdditiveAttention` – ``e_i = v^T tanh(W_q h + W_k r_i)``, ``alpha = softmax(e)``, ``z = sum_i alpha_i r_i``.
* :class:`AttentionDecoder` – the recurrent decoder (teacher-forced ``forward``, one-word ``step``).
* :class:`TransformerCaptionDecoder` – a small Transformer decoder (causal self-attention over the words,
  cross-attention over the regions; Vaswani et al., 2017) with the same ``step`` interface.
* :class:`Captioner` – an image encoder plus the decoder.
* :func:`caption_loss` / :func:`attention_penalty` – masked cross-entropy; Xu et al.'s "doubly stochastic" penalty.
* :func:`greedy_decode` / :func:`beam_search` – batched decoding (the length penalty of Wu et al., 2016).

Token conventions are those of :func:`mmutils.text.train_tokenizer` (ids :data:`mmutils.text.PAD_ID`,
:data:`~mmutils.text.BOS_ID`, :data:`~mmutils.text.EOS_ID`, also importable from here), padding on the right.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_choice, check_float, check_instance, check_int, check_mask, check_tensor
from .text import BOS_ID, EOS_ID, PAD_ID

__all__ = ["AdditiveAttention", "AttentionDecoder", "TransformerCaptionDecoder", "Captioner", "caption_loss",
           "attention_penalty", "greedy_decode", "beam_search"]


# -- Attention ----------------------------------------------------------------
class AdditiveAttention(nn.Module):
    """Additive ("Bahdanau", "concat") attention of a query over a set of keys.

    Scores ``e_i = v^T tanh(W_q q + W_k k_i + b)`` (Bahdanau et al., 2015), weights ``alpha = softmax_i(e_i)`` over the
    unmasked keys, context ``sum_i alpha_i k_i``. Xu et al. (2015) use it with the decoder state as query and the CNN's
    region vectors as keys ("soft" attention).

    ``forward(query, keys, mask=None, projected=None)``: query (B, query_dim), keys (B, N, key_dim), mask (B, N)
    bool/int (1 = attend) -> (context (B, key_dim), weights (B, N)); each row of ``weights`` sums to 1. A query of shape
    (B, T, query_dim) (T queries per image, e.g. every step of a caption) gives context (B, T, key_dim) and weights
    (B, T, N). ``projected`` is :meth:`project` ``(keys)``, (B, N, attn_dim): pass it to avoid recomputing ``W_k k_i``
    at every decoding step.
    """

    def __init__(self, query_dim: int, key_dim: int, attn_dim: int = 32):
        super().__init__()
        self.query_dim = check_int("query_dim", query_dim, min=1)
        self.key_dim = check_int("key_dim", key_dim, min=1)
        self.attn_dim = check_int("attn_dim", attn_dim, min=1)
        self.w_query = nn.Linear(query_dim, attn_dim, bias=False)
        self.w_key = nn.Linear(key_dim, attn_dim)
        self.v = nn.Linear(attn_dim, 1, bias=False)

    def project(self, keys: torch.Tensor) -> torch.Tensor:
        """``W_k k_i + b`` for every key: (B, N, key_dim) -> (B, N, attn_dim)."""
        return self.w_key(keys)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor | None = None,
                projected: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if projected is None:
            projected = self.w_key(keys)  # (B, N, A)
        single = query.ndim == 2
        q = self.w_query(query.unsqueeze(1) if single else query)  # (B, T, A)
        scores = self.v(torch.tanh(projected[:, None] + q[:, :, None])).squeeze(-1)  # (B, T, N)
        if mask is not None:
            mask = check_mask("mask", mask, keys)  # (B, N) bool
            if not mask.any(dim=1).all():  # a row with nothing to attend to would give NaN weights
                raise ValueError("mask must leave at least one key per row to attend to")
            scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        weights = scores.softmax(dim=-1)  # (B, T, N), rows sum to 1
        context = torch.bmm(weights, keys)  # (B, T, key_dim)
        if single:
            return context.squeeze(1), weights.squeeze(1)
        return context, weights


# -- Decoder ------------------------------------------------------------------
def _check_teacher_forcing(regions: torch.Tensor, input_ids: torch.Tensor, regions_size: dict) -> None:
    """The inputs of a decoder's teacher-forced ``forward``: regions (B, N, region_dim), input_ids (B, L >= 2)."""
    check_tensor("regions", regions, 3, size=regions_size, dtype="float")
    check_tensor("input_ids", input_ids, 2, size={0: regions.shape[0]}, dtype="int")
    if input_ids.shape[1] < 2:
        raise ValueError(f"input_ids must hold at least 2 tokens ([BOS] and one target), "
                         f"got shape {tuple(input_ids.shape)}")


class AttentionDecoder(nn.Module):
    """Recurrent caption decoder that attends over image regions for each word.

    Show, Attend and Tell (Xu et al., 2015), with a GRU or LSTM:

    * optionally a learned position embedding ``p_i`` is added to each region, ``r_i <- r_i + p_i``
      (``n_regions`` given), so that the attended context also says *where* it looked;
    * initial state ``h_0 = tanh(W_init mean_i r_i)`` (for the LSTM also ``c_0``);
    * ``attend="previous"`` (Xu et al.): ``z_t, alpha_t = Attention(h_{t-1}, r)``, then
      ``h_t = RNN([E y_{t-1}; z_t], h_{t-1})``;
      ``attend="current"`` (the "spatial attention" of Lu et al., 2017): ``h_t = RNN(E y_{t-1}, h_{t-1})``, then
      ``z_t, alpha_t = Attention(h_t, r)``. The recurrence no longer waits for the attention, so teacher forcing runs
      the RNN over the whole caption in one call and attends at all steps at once (several times faster on a CPU);
    * "deep output" logits ``W_out tanh(W_h h_t + W_z z_t + E y_{t-1})`` over the vocabulary.

    ``forward(regions, input_ids)`` is teacher-forced: regions (B, N, region_dim) float, input_ids (B, L) int starting
    with ``[BOS]`` -> (logits (B, L - 1, vocab_size), weights (B, L - 1, N)); step ``t`` reads ``input_ids[:, t]`` and
    predicts ``input_ids[:, t + 1]``. The decoder is causal: tokens after position ``t`` (e.g. padding) do not change
    the outputs of step ``t``.
    """

    def __init__(self, vocab_size: int, region_dim: int, *, embed_dim: int = 32, hidden: int = 64,
                 attn_dim: int = 32, cell: str = "gru", attend: str = "previous", n_regions: int | None = None,
                 pad_id: int = PAD_ID, dropout: float = 0.0):
        super().__init__()
        self.vocab_size = check_int("vocab_size", vocab_size, min=1)
        self.region_dim = check_int("region_dim", region_dim, min=1)
        self.embed_dim = check_int("embed_dim", embed_dim, min=1)
        self.hidden = check_int("hidden", hidden, min=1)
        self.cell_type = check_choice("cell", cell, ("gru", "lstm"))
        self.attend = check_choice("attend", attend, ("previous", "current"))
        check_float("dropout", dropout, min=0.0, max=1.0)
        self.pad_id = check_int("pad_id", pad_id, min=0, max=vocab_size - 1)
        self.n_regions = None if n_regions is None else check_int("n_regions", n_regions, min=1)
        # the (dim: length) sizes of the regions every public call checks: (B, n_regions or any N, region_dim)
        self._regions_size = {2: region_dim} if n_regions is None else {1: n_regions, 2: region_dim}
        self.pos = None
        if n_regions is not None:
            self.pos = nn.Parameter(torch.zeros(n_regions, region_dim))
            nn.init.normal_(self.pos, std=0.1)
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.attention = AdditiveAttention(hidden, region_dim, attn_dim)
        self.init_h = nn.Linear(region_dim, hidden)
        self.init_c = nn.Linear(region_dim, hidden) if cell == "lstm" else None
        if attend == "previous":  # one step at a time: a cell
            self.rnn = (nn.GRUCell if cell == "gru" else nn.LSTMCell)(embed_dim + region_dim, hidden)
        else:  # whole captions at once under teacher forcing
            self.rnn = (nn.GRU if cell == "gru" else nn.LSTM)(embed_dim, hidden, batch_first=True)
        self.out_h = nn.Linear(hidden, embed_dim)
        self.out_z = nn.Linear(region_dim, embed_dim, bias=False)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(embed_dim, vocab_size)

    def prepare(self, regions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image work done once: (B, N, region_dim) -> (regions with positions
        (B, N, region_dim), their attention projection (B, N, attn_dim))."""
        if self.pos is not None:
            regions = regions + self.pos
        return regions, self.attention.project(regions)

    def init_state(self, regions: torch.Tensor):
        """Initial state from the mean region (after :meth:`prepare`): (B, N, region_dim) ->
        h (B, hidden) for the GRU, (h, c) for the LSTM."""
        mean = regions.mean(dim=1)  # (B, region_dim)
        h = torch.tanh(self.init_h(mean))  # (B, H)
        return h if self.init_c is None else (h, torch.tanh(self.init_c(mean)))

    def _top(self, state) -> torch.Tensor:
        return state if self.init_c is None else state[0]  # (B, H)

    def _run(self, emb: torch.Tensor, state):
        """nn.GRU / nn.LSTM over (B, T, E) from a (B, H) state -> (outputs (B, T, H), last state)."""
        packed = state[None] if self.init_c is None else tuple(s[None] for s in state)
        out, last = self.rnn(emb, packed)
        return out, (last[0] if self.init_c is None else tuple(s[0] for s in last))

    def _logits(self, h, context, emb):
        return self.out(self.drop(torch.tanh(self.out_h(h) + self.out_z(context) + emb)))

    def step(self, tokens: torch.Tensor, state, regions: torch.Tensor, projected: torch.Tensor):
        """One decoding step.

        tokens (B,) int (the previous word), state from :meth:`init_state` or the last step, ``regions, projected =
        prepare(raw_regions)`` -> (logits (B, vocab_size), new state, weights (B, N)).
        """
        emb = self.embed(tokens)  # (B, E)
        if self.attend == "previous":
            context, weights = self.attention(self._top(state), regions, projected=projected)  # (B, D), (B, N)
            state = self.rnn(torch.cat([emb, context], dim=-1), state)
            h = self._top(state)
        else:
            _, state = self._run(emb.unsqueeze(1), state)
            h = self._top(state)  # (B, H)
            context, weights = self.attention(h, regions, projected=projected)
        return self._logits(h, context, emb), state, weights

    def forward(self, regions: torch.Tensor, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_teacher_forcing(regions, input_ids, self._regions_size)
        regions, projected = self.prepare(regions)
        state = self.init_state(regions)
        emb = self.embed(input_ids[:, :-1])  # (B, T, E) teacher forcing: the true previous words
        if self.attend == "previous":  # the recurrence waits for each attention step
            hs, contexts, all_weights = [], [], []
            for t in range(emb.shape[1]):
                context, weights = self.attention(self._top(state), regions, projected=projected)
                state = self.rnn(torch.cat([emb[:, t], context], dim=-1), state)
                hs.append(self._top(state))
                contexts.append(context)
                all_weights.append(weights)
            hs, context, weights = (torch.stack(x, dim=1) for x in (hs, contexts, all_weights))
        else:  # the recurrence reads words only: run it over all steps in one call, then attend
            hs, _ = self._run(emb, state)  # (B, T, H)
            context, weights = self.attention(hs, regions, projected=projected)  # (B, T, D), (B, T, N)
        return self._logits(hs, context, emb), weights  # (B, T, V), (B, T, N)


def _split_heads(attn: nn.MultiheadAttention, z: torch.Tensor) -> torch.Tensor:
    """(B, n, d) -> (B, H, n, d / H), the heads of ``attn`` side by side."""
    b, n, d = z.shape
    return z.view(b, n, attn.num_heads, d // attn.num_heads).transpose(1, 2)


def _keys_values(attn: nn.MultiheadAttention, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The keys and values ``attn`` computes from z (B, n, d): two (B, H, n, d / H) tensors."""
    _, w_k, w_v = attn.in_proj_weight.chunk(3)
    _, b_k, b_v = attn.in_proj_bias.chunk(3)
    return _split_heads(attn, F.linear(z, w_k, b_k)), _split_heads(attn, F.linear(z, w_v, b_v))


def _attend(attn: nn.MultiheadAttention, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor):
    """What ``attn(x, z, z)`` computes (no mask) from ``keys, values = _keys_values(attn, z)``:
    x (B, T, d) -> (output (B, T, d), weights averaged over the heads (B, T, n))."""
    w_q, b_q = attn.in_proj_weight.chunk(3)[0], attn.in_proj_bias.chunk(3)[0]
    q = _split_heads(attn, F.linear(x, w_q, b_q))  # (B, H, T, d_h)
    alpha = (q @ keys.transpose(-2, -1) / q.shape[-1] ** 0.5).softmax(dim=-1)  # (B, H, T, n)
    z = (alpha @ values).transpose(1, 2).flatten(2)  # (B, T, d) the heads' outputs side by side
    return attn.out_proj(z), alpha.mean(dim=1)


class _DecoderBlock(nn.Module):
    """Pre-norm Transformer decoder block: causal self-attention, cross-attention, MLP, each residual."""

    def __init__(self, dim: int, heads: int, mlp_dim: int):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    def forward(self, x: torch.Tensor, memory: torch.Tensor, causal: torch.Tensor):
        """All positions at once: x (B, T, d), memory (B, N, d), causal (T, T) bool (True = hidden) ->
        (x (B, T, d), cross-attention weights averaged over the heads (B, T, N))."""
        h = self.norm1(x)  # (B, T, d)
        x = x + self.self_attn(h, h, h, attn_mask=causal, need_weights=False)[0]
        context, weights = self.cross_attn(self.norm2(x), memory, memory)  # (B, T, d), (B, T, N) mean of heads
        x = x + context
        return x + self.mlp(self.norm3(x)), weights

    def step(self, x: torch.Tensor, memory_kv: tuple[torch.Tensor, torch.Tensor], cache: tuple[torch.Tensor, ...]):
        """One new position: x (B, 1, d), the cross-attention's keys and values of the memory
        (``_keys_values(self.cross_attn, memory)``), ``cache`` the self-attention's keys and values of the t earlier
        positions, each (B, H, t, d_h) -> (x (B, 1, d), weights (B, 1, N), the cache of t + 1 positions). The new
        position attends to the earlier ones and to itself, which is what the causal mask allows it in ``forward``."""
        h = self.norm1(x)  # (B, 1, d)
        keys, values = (torch.cat([past, new], dim=2) for past, new in zip(cache, _keys_values(self.self_attn, h)))
        x = x + _attend(self.self_attn, h, keys, values)[0]
        context, weights = _attend(self.cross_attn, self.norm2(x), *memory_kv)
        x = x + context
        return x + self.mlp(self.norm3(x)), weights, (keys, values)


class TransformerCaptionDecoder(nn.Module):
    """A small Transformer caption decoder over image regions (Vaswani et al., 2017).

    The regions are projected to the model width, ``m_i = W_r r_i`` (the "memory"); word ``t`` enters as
    ``E y_t + p_t`` (learned positions); each of ``layers`` pre-norm blocks applies causal self-attention over the
    words so far, cross-attention from every word to the memory, and an MLP; a final LayerNorm and a linear layer
    score the vocabulary. Unlike the GRU of :class:`AttentionDecoder`, every word position can look back at all
    earlier words and at the image directly, so no fact has to be carried along in a recurrent state.

    ``forward(regions, input_ids)`` is teacher-forced like :meth:`AttentionDecoder.forward`: regions
    (B, N, region_dim), input_ids (B, L) starting with ``[BOS]``, L - 1 <= ``max_len`` -> (logits (B, L - 1, V),
    cross-attention weights of the last block, averaged over heads, (B, L - 1, N)). ``step`` has the interface of
    :meth:`AttentionDecoder.step` (so :func:`greedy_decode` and :func:`beam_search` run it). Its state is a
    key/value cache: per block, the self-attention's keys and values of the t positions fed so far, each
    (B, heads, t, dim / heads), a flat tuple of 2 * layers tensors; :meth:`prepare` computes the cross-attention's
    keys and values of the regions once. A step runs the new word's position only, which gives the last-position
    logits of a full teacher-forced pass over the prefix (up to rounding) at a fraction of its cost.
    """

    def __init__(self, vocab_size: int, region_dim: int, *, dim: int = 64, layers: int = 2, heads: int = 4,
                 mlp_dim: int | None = None, max_len: int = 32, pad_id: int = PAD_ID):
        super().__init__()
        self.vocab_size = check_int("vocab_size", vocab_size, min=1)
        self.region_dim = check_int("region_dim", region_dim, min=1)
        self.dim = check_int("dim", dim, min=1)
        check_int("layers", layers, min=1)
        heads = check_int("heads", heads, min=1)
        if dim % heads:
            raise ValueError(f"dim must be divisible by heads, got dim={dim}, heads={heads}")
        self.max_len = check_int("max_len", max_len, min=1)
        self.pad_id = check_int("pad_id", pad_id, min=0, max=vocab_size - 1)
        self._regions_size = {2: region_dim}
        self.embed = nn.Embedding(vocab_size, dim)
        self.positions = nn.Parameter(torch.randn(max_len, dim) * 0.02)
        self.project = nn.Linear(region_dim, dim)
        self.blocks = nn.ModuleList(_DecoderBlock(dim, heads, mlp_dim or 2 * dim) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, vocab_size)

    def prepare(self, regions: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        """Per-image work done once for :meth:`step`: (B, N, region_dim) -> (the regions, per block the
        cross-attention's keys and values of the memory ``W_r r``, each (B, heads, N, dim / heads))."""
        memory = self.project(regions)  # (B, N, dim)
        return regions, tuple(_keys_values(block.cross_attn, memory) for block in self.blocks)

    def init_state(self, regions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The empty prefix: empty keys and values (B, heads, 0, dim / heads), two per block."""
        heads = self.blocks[0].self_attn.num_heads
        empty = regions.new_zeros(regions.shape[0], heads, 0, self.dim // heads)
        return (empty,) * (2 * len(self.blocks))

    def decode(self, input_ids: torch.Tensor, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Words (B, T) and memory (B, N, dim) -> (logits (B, T, V), last block's weights (B, T, N))."""
        t = input_ids.shape[1]
        if t > self.max_len:
            raise ValueError(f"input_ids may hold at most max_len={self.max_len} input words, got {t}")
        x = self.embed(input_ids) + self.positions[:t]  # (B, T, d)
        causal = torch.triu(torch.ones(t, t, dtype=torch.bool, device=x.device), diagonal=1)  # True = hidden
        for block in self.blocks:
            x, weights = block(x, memory, causal)
        return self.out(self.norm(x)), weights

    def step(self, tokens: torch.Tensor, state: tuple[torch.Tensor, ...], regions: torch.Tensor,
             projected: tuple[tuple[torch.Tensor, torch.Tensor], ...]):
        """tokens (B,) the previous word, state the cache of the t words before it (:meth:`init_state`),
        ``regions, projected = prepare(raw_regions)`` -> (logits (B, V), the cache of t + 1 words, weights (B, N))."""
        t = state[0].shape[2]
        if t >= self.max_len:
            raise ValueError(f"the decoder reads at most max_len={self.max_len} input words, got a state of {t}")
        x = (self.embed(tokens) + self.positions[t])[:, None]  # (B, 1, d) the new position only
        cache = []
        for i, (block, memory_kv) in enumerate(zip(self.blocks, projected)):
            x, weights, keys_values = block.step(x, memory_kv, state[2 * i:2 * i + 2])
            cache += keys_values  # each (B, H, t + 1, d_h)
        return self.out(self.norm(x[:, 0])), tuple(cache), weights[:, 0]

    def forward(self, regions: torch.Tensor, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_teacher_forcing(regions, input_ids, self._regions_size)
        return self.decode(input_ids[:, :-1], self.project(regions))  # (B, L-1, V), (B, L-1, N)


_DECODERS = (AttentionDecoder, TransformerCaptionDecoder)  # what Captioner and the decoding functions accept


class Captioner(nn.Module):
    """An image encoder that keeps a grid of regions plus a decoder (:class:`AttentionDecoder` or
    :class:`TransformerCaptionDecoder`).

    ``encoder``: images (B, C, H, W) -> region tokens (B, N, region_dim), e.g. :class:`mmutils.nn.encoders.ConvTower`
    with ``max_pool=True`` (N = 16 for 32x32 images and three stages), or ``nn.Identity()`` when the regions are
    precomputed by a frozen encoder. ``forward(images, input_ids)`` -> (logits (B, L - 1, V), weights (B, L - 1, N));
    the decoder checks the regions the encoder returns.
    """

    def __init__(self, encoder: nn.Module, decoder: AttentionDecoder | TransformerCaptionDecoder):
        super().__init__()
        self.encoder = check_instance("encoder", encoder, nn.Module)
        self.decoder = check_instance("decoder", decoder, _DECODERS)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Region tokens (B, N, region_dim) of ``images``."""
        return self.encoder(images)

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decoder(self.encode(images), input_ids)


# -- Losses -------------------------------------------------------------------
def caption_loss(logits: torch.Tensor, targets: torch.Tensor, pad_id: int = PAD_ID,
                 label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean token cross-entropy over the non-padding targets.

    ``logits`` (B, T, V) float, ``targets`` (B, T) int (for teacher forcing, ``input_ids[:, 1:]``); positions where
    ``targets == pad_id`` are ignored, so padding a batch more does not change the loss. Returns a scalar tensor
    (``log V`` for uniform logits).
    """
    check_tensor("logits", logits, 3, dtype="float")
    check_tensor("targets", targets, 2, size={0: logits.shape[0], 1: logits.shape[1]}, dtype="int")
    check_int("pad_id", pad_id)
    label_smoothing = check_float("label_smoothing", label_smoothing, min=0.0, max=1.0)
    if not (targets != pad_id).any():  # the mean over no token would be NaN
        raise ValueError("targets must contain at least one non-padding token")
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=pad_id,
                           label_smoothing=label_smoothing)


def attention_penalty(weights: torch.Tensor, targets: torch.Tensor, pad_id: int = PAD_ID) -> torch.Tensor:
    """The "doubly stochastic" attention regularizer of Xu et al. (2015), per caption.

    ``mean_b sum_i (1 - sum_t alpha_{b,t,i})^2`` (the paper's ``tau`` = 1), the sum over the steps ``t`` whose target is
    not padding. It pushes the decoder to look at every region about once over a caption. ``weights`` (B, T, N),
    ``targets`` (B, T).
    """
    check_tensor("weights", weights, 3, dtype="float")
    check_tensor("targets", targets, 2, size={0: weights.shape[0], 1: weights.shape[1]}, dtype="int")
    mask = (targets != pad_id).to(weights.dtype).unsqueeze(-1)  # (B, T, 1)
    return (1 - (weights * mask).sum(dim=1)).pow(2).sum(dim=1).mean()


# -- Decoding -----------------------------------------------------------------
def _select_state(state, index: torch.Tensor):
    return state[index] if isinstance(state, torch.Tensor) else tuple(s[index] for s in state)


@torch.no_grad()
def greedy_decode(decoder: AttentionDecoder | TransformerCaptionDecoder, regions: torch.Tensor, *, bos_id: int = BOS_ID,
                  eos_id: int = EOS_ID, max_len: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched greedy decoding: at each step feed back the most likely word.

    ``regions`` (B, N, region_dim). Decoding starts from ``bos_id`` and stops once every caption has produced ``eos_id``
    or after ``max_len`` words. Returns (tokens (B, T) int64 without ``[BOS]``, the ``[EOS]`` included and ``pad_id``
    after it; weights (B, T, N), zero after ``[EOS]``), T <= max_len. Decode the tokens to text with
    :func:`mmutils.text.decode`.
    """
    check_instance("decoder", decoder, _DECODERS)
    check_tensor("regions", regions, 3, size=decoder._regions_size, dtype="float")
    for name, token in (("bos_id", bos_id), ("eos_id", eos_id)):
        check_int(name, token, min=0, max=decoder.vocab_size - 1)
    check_int("max_len", max_len, min=1)
    b = regions.shape[0]
    regions, projected = decoder.prepare(regions)
    state = decoder.init_state(regions)
    tokens = torch.full((b,), bos_id, dtype=torch.long, device=regions.device)
    done = torch.zeros(b, dtype=torch.bool, device=regions.device)
    out_tokens, out_weights = [], []
    for _ in range(max_len):
        logits, state, weights = decoder.step(tokens, state, regions, projected)
        tokens = logits.argmax(dim=-1)  # (B,)
        tokens = tokens.masked_fill(done, decoder.pad_id)
        out_tokens.append(tokens)
        out_weights.append(weights.masked_fill(done[:, None], 0.0))
        done = done | (tokens == eos_id)
        if done.all():
            break
    return torch.stack(out_tokens, dim=1), torch.stack(out_weights, dim=1)


@torch.no_grad()
def beam_search(decoder: AttentionDecoder | TransformerCaptionDecoder, regions: torch.Tensor, beam_size: int = 3, *,
                bos_id: int = BOS_ID, eos_id: int = EOS_ID, max_len: int = 20,
                length_penalty: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched beam search: keep the ``beam_size`` most likely partial captions per image.

    At every step each live beam is extended by every word; of the ``beam_size * vocab_size`` candidates of an image the
    ``beam_size`` with the highest total log-probability survive. A beam that has produced ``eos_id`` is finished: it
    keeps its score and is extended only by padding. At the end the beam with the best ``score / lp`` wins, with the
    length penalty of Wu et al. (2016), ``lp = ((5 + length) / 6) ** length_penalty`` (length counts the words and
    ``[EOS]``; ``length_penalty`` is their alpha, 0 ranks by log-probability alone, and then ``beam_size=1`` is exactly
    :func:`greedy_decode`). Like Wu et al., it ranks only the final beams; the beam itself is pruned by score.

    ``regions`` (B, N, region_dim). Returns (tokens (B, T), weights (B, T, N), scores (B,) the winners'
    log-probabilities), formatted as in :func:`greedy_decode`.
    """
    check_instance("decoder", decoder, _DECODERS)
    check_tensor("regions", regions, 3, size=decoder._regions_size, dtype="float")
    for name, token in (("bos_id", bos_id), ("eos_id", eos_id)):
        check_int(name, token, min=0, max=decoder.vocab_size - 1)
    check_int("max_len", max_len, min=1)
    k = check_int("beam_size", beam_size, min=1)
    check_float("length_penalty", length_penalty, min=0.0)
    b, n = regions.shape[:2]
    v, dev = decoder.vocab_size, regions.device
    flat, projected = decoder.prepare(regions.repeat_interleave(k, dim=0))  # beam j of image i: row i*K + j
    state = decoder.init_state(flat)
    scores = torch.full((b, k), float("-inf"), device=dev)
    scores[:, 0] = 0.0  # all beams start identical: expand only the first at step 1
    tokens = torch.full((b * k,), bos_id, dtype=torch.long, device=dev)
    done = torch.zeros(b * k, dtype=torch.bool, device=dev)
    lengths = torch.zeros(b * k, device=dev)
    hist_tokens = torch.zeros(b * k, 0, dtype=torch.long, device=dev)
    hist_weights = torch.zeros(b * k, 0, n, device=dev)
    base = (torch.arange(b, device=dev) * k)[:, None]  # (B, 1) first row of each image
    for _ in range(max_len):
        logits, state, weights = decoder.step(tokens, state, flat, projected)
        logp = logits.float().log_softmax(dim=-1)  # (B*K, V)
        finished = torch.full_like(logp, float("-inf"))
        finished[:, decoder.pad_id] = 0.0  # a finished beam continues with padding, at no cost
        logp = torch.where(done[:, None], finished, logp)
        cand = (scores[:, :, None] + logp.view(b, k, v)).view(b, k * v)  # (B, K*V)
        scores, idx = cand.topk(k, dim=1)  # (B, K)
        rows = (base + idx // v).flatten()  # (B*K,) the beam each survivor extends
        tokens = (idx % v).flatten()
        state = _select_state(state, rows)
        weights = weights.masked_fill(done[:, None], 0.0)[rows]
        lengths = lengths[rows] + (~done[rows]).float()
        done = done[rows] | (tokens == eos_id)
        hist_tokens = torch.cat([hist_tokens[rows], tokens[:, None]], dim=1)
        hist_weights = torch.cat([hist_weights[rows], weights[:, None]], dim=1)
        if done.all():
            break
    final = scores / ((5 + lengths.view(b, k)) / 6) ** length_penalty if length_penalty else scores  # Wu et al.
    best = (base.squeeze(1) + final.argmax(dim=1))  # (B,)
    return hist_tokens[best], hist_weights[best], scores.flatten()[best]
