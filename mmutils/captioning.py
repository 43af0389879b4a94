"""Image captioning with visual attention: a CNN that keeps a grid of regions, a
recurrent decoder with additive attention, teacher forcing, greedy and beam-search
decoding.

The model follows *Show, Attend and Tell* (Xu et al., 2015), whose decoder is an
LSTM that, before each word, looks at the image with the additive attention of
Bahdanau et al. (2015):

* :class:`AdditiveAttention` – ``e_i = v^T tanh(W_q h + W_k r_i)``, ``alpha = softmax(e)``,
  context ``z = sum_i alpha_i r_i``.
* :class:`AttentionDecoder` – embedding + GRU (Cho et al., 2014) or LSTM (Hochreiter
  and Schmidhuber, 1997) cell; initial state from the mean region; input
  ``[E y_{t-1}; z_t]``; "deep output" logits from ``[h_t; z_t; E y_{t-1}]``.
  ``forward`` is teacher-forced and returns the logits and attention weights of
  every step; :meth:`AttentionDecoder.step` advances one word.
* :class:`Captioner` – an image encoder (e.g. :class:`mmutils.encoders.SpatialCNN`,
  or ``nn.Identity()`` for precomputed region tokens) plus the decoder.
* :func:`caption_loss` – masked cross-entropy that ignores padding;
  :func:`attention_penalty` – Xu et al.'s "doubly stochastic" regularizer.
* :func:`greedy_decode` (batched) and :func:`beam_search` (batched over images and
  beams, optional length normalization as in Wu et al., 2016).

Token conventions are those of :func:`mmutils.text.train_tokenizer`: ``[PAD]`` 0,
``[BOS]`` 2, ``[EOS]`` 3, padding on the right.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .encoders import check_tensor

__all__ = [
    "AdditiveAttention", "AttentionDecoder", "Captioner", "caption_loss", "attention_penalty",
    "greedy_decode", "beam_search",
]

PAD_ID, BOS_ID, EOS_ID = 0, 2, 3


def _check_dim(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return value


def _check_id(name: str, value, vocab_size: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int token id, got {type(value).__name__}")
    if not 0 <= value < vocab_size:
        raise ValueError(f"{name} must be a token id in [0, {vocab_size}), got {value}")
    return value


# --------------------------------------------------------------------------- #
# Attention
# --------------------------------------------------------------------------- #
class AdditiveAttention(nn.Module):
    """Additive ("Bahdanau", "concat") attention of a query over a set of keys.

    Scores ``e_i = v^T tanh(W_q q + W_k k_i + b)`` (Bahdanau et al., 2015), weights
    ``alpha = softmax_i(e_i)`` over the unmasked keys, context ``sum_i alpha_i k_i``.
    Xu et al. (2015) use it with the decoder state as query and the CNN's
    region vectors as keys ("soft" attention).

    ``forward(query, keys, mask=None, projected=None)``: query (B, query_dim),
    keys (B, N, key_dim), mask (B, N) bool/int (1 = attend) ->
    (context (B, key_dim), weights (B, N)); each row of ``weights`` sums to 1.
    A query of shape (B, T, query_dim) (T queries per image, e.g. every step of
    a caption) gives context (B, T, key_dim) and weights (B, T, N).
    ``projected`` is :meth:`project` ``(keys)``, (B, N, attn_dim): pass it to
    avoid recomputing ``W_k k_i`` at every decoding step.
    """

    def __init__(self, query_dim: int, key_dim: int, attn_dim: int = 32):
        super().__init__()
        self.query_dim = _check_dim("query_dim", query_dim)
        self.key_dim = _check_dim("key_dim", key_dim)
        self.attn_dim = _check_dim("attn_dim", attn_dim)
        self.w_query = nn.Linear(query_dim, attn_dim, bias=False)
        self.w_key = nn.Linear(key_dim, attn_dim)
        self.v = nn.Linear(attn_dim, 1, bias=False)

    def project(self, keys: torch.Tensor) -> torch.Tensor:
        """``W_k k_i + b`` for every key: (B, N, key_dim) -> (B, N, attn_dim)."""
        check_tensor("keys", keys, 3, size={2: self.key_dim}, dtype_kind="float")
        return self.w_key(keys)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor | None = None,
                projected: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(query, torch.Tensor) or query.ndim not in (2, 3):
            raise ValueError(f"query must be a (B, query_dim) or (B, T, query_dim) tensor, got "
                             f"{tuple(query.shape) if isinstance(query, torch.Tensor) else type(query).__name__}")
        check_tensor("query", query, query.ndim, size={-1: self.query_dim}, dtype_kind="float")
        check_tensor("keys", keys, 3, size={0: query.shape[0], 2: self.key_dim}, dtype_kind="float")
        if projected is None:
            projected = self.w_key(keys)
        elif projected.shape != (*keys.shape[:2], self.attn_dim):
            raise ValueError(f"projected must have shape {(*keys.shape[:2], self.attn_dim)}, "
                             f"got {tuple(projected.shape)}")
        single = query.ndim == 2
        q = self.w_query(query.unsqueeze(1) if single else query)  # (B, T, A)
        scores = self.v(torch.tanh(projected[:, None] + q[:, :, None])).squeeze(-1)  # (B, T, N)
        if mask is not None:
            check_tensor("mask", mask, 2, size={0: keys.shape[0], 1: keys.shape[1]})
            mask = mask.bool()
            if not mask.any(dim=1).all():
                raise ValueError("mask must leave at least one key per row to attend to")
            scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        weights = scores.softmax(dim=-1)  # (B, T, N), rows sum to 1
        context = torch.bmm(weights, keys)  # (B, T, key_dim)
        if single:
            return context.squeeze(1), weights.squeeze(1)
        return context, weights


# --------------------------------------------------------------------------- #
# Decoder
# --------------------------------------------------------------------------- #
class AttentionDecoder(nn.Module):
    """Recurrent caption decoder that attends over image regions for each word.

    Show, Attend and Tell (Xu et al., 2015), with a GRU or LSTM:

    * optionally a learned position embedding ``p_i`` is added to each region,
      ``r_i <- r_i + p_i`` (``n_regions`` given), so that the attended context
      also says *where* it looked;
    * initial state ``h_0 = tanh(W_init mean_i r_i)`` (for the LSTM also ``c_0``);
    * ``attend="previous"`` (Xu et al.): ``z_t, alpha_t = Attention(h_{t-1}, r)``, then
      ``h_t = RNN([E y_{t-1}; z_t], h_{t-1})``;
      ``attend="current"`` (the "spatial attention" of Lu et al., 2017):
      ``h_t = RNN(E y_{t-1}, h_{t-1})``, then ``z_t, alpha_t = Attention(h_t, r)``. The
      recurrence no longer waits for the attention, so teacher forcing runs the
      RNN over the whole caption in one call and attends at all steps at once
      (several times faster on a CPU);
    * "deep output" logits ``W_out tanh(W_h h_t + W_z z_t + E y_{t-1})`` over the vocabulary.

    ``forward(regions, input_ids)`` is teacher-forced: regions (B, N, region_dim)
    float, input_ids (B, L) int starting with ``[BOS]`` -> (logits (B, L - 1, vocab_size),
    weights (B, L - 1, N)); step ``t`` reads ``input_ids[:, t]`` and predicts
    ``input_ids[:, t + 1]``. The decoder is causal: tokens after position ``t``
    (e.g. padding) do not change the outputs of step ``t``.
    """

    def __init__(self, vocab_size: int, region_dim: int, *, embed_dim: int = 32, hidden: int = 64,
                 attn_dim: int = 32, cell: str = "gru", attend: str = "previous", n_regions: int | None = None,
                 pad_id: int = PAD_ID, dropout: float = 0.0):
        super().__init__()
        self.vocab_size = _check_dim("vocab_size", vocab_size)
        self.region_dim = _check_dim("region_dim", region_dim)
        self.embed_dim = _check_dim("embed_dim", embed_dim)
        self.hidden = _check_dim("hidden", hidden)
        if cell not in ("gru", "lstm"):
            raise ValueError(f"cell must be 'gru' or 'lstm', got {cell!r}")
        if attend not in ("previous", "current"):
            raise ValueError(f"attend must be 'previous' (Xu et al.) or 'current' (Lu et al.), got {attend!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be a float in [0, 1), got {dropout!r}")
        self.cell_type, self.attend = cell, attend
        self.pad_id = _check_id("pad_id", pad_id, vocab_size)
        self.n_regions = None if n_regions is None else _check_dim("n_regions", n_regions)
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
        check_tensor("regions", regions, 3, size={2: self.region_dim}, dtype_kind="float")
        if self.pos is not None:
            if regions.shape[1] != self.n_regions:
                raise ValueError(f"regions must have n_regions={self.n_regions} regions (dimension 1), "
                                 f"got shape {tuple(regions.shape)}")
            regions = regions + self.pos
        return regions, self.attention.project(regions)

    def init_state(self, regions: torch.Tensor):
        """Initial state from the mean region (after :meth:`prepare`): (B, N, region_dim) ->
        h (B, hidden) for the GRU, (h, c) for the LSTM."""
        check_tensor("regions", regions, 3, size={2: self.region_dim}, dtype_kind="float")
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

        tokens (B,) int (the previous word), state from :meth:`init_state` or the
        last step, ``regions, projected = prepare(raw_regions)`` ->
        (logits (B, vocab_size), new state, weights (B, N)).
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
        regions, projected = self.prepare(regions)
        check_tensor("input_ids", input_ids, 2, size={0: regions.shape[0]}, dtype_kind="int")
        if input_ids.shape[1] < 2:
            raise ValueError(f"input_ids must hold at least 2 tokens ([BOS] and one target), "
                             f"got shape {tuple(input_ids.shape)}")
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


class Captioner(nn.Module):
    """An image encoder that keeps a grid of regions plus an :class:`AttentionDecoder`.

    ``encoder``: images (B, C, H, W) -> region tokens (B, N, region_dim), e.g.
    :class:`mmutils.encoders.SpatialCNN` (N = 16 for 32x32 images and three
    stages), or ``nn.Identity()`` when the regions are precomputed by a frozen
    encoder. ``forward(images, input_ids)`` -> (logits (B, L - 1, V), weights (B, L - 1, N)).
    """

    def __init__(self, encoder: nn.Module, decoder: AttentionDecoder):
        super().__init__()
        if not isinstance(encoder, nn.Module):
            raise TypeError(f"encoder must be a torch.nn.Module, got {type(encoder).__name__}")
        if not isinstance(decoder, AttentionDecoder):
            raise TypeError(f"decoder must be an AttentionDecoder, got {type(decoder).__name__}")
        self.encoder = encoder
        self.decoder = decoder

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Region tokens (B, N, region_dim) of ``images``."""
        regions = self.encoder(images)
        check_tensor("regions (the encoder's output)", regions, 3, size={2: self.decoder.region_dim},
                     dtype_kind="float")
        return regions

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decoder(self.encode(images), input_ids)


# --------------------------------------------------------------------------- #
# Losses
# --------------------------------------------------------------------------- #
def caption_loss(logits: torch.Tensor, targets: torch.Tensor, pad_id: int = PAD_ID,
                 label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean token cross-entropy over the non-padding targets.

    ``logits`` (B, T, V) float, ``targets`` (B, T) int (for teacher forcing,
    ``input_ids[:, 1:]``); positions where ``targets == pad_id`` are ignored, so
    padding a batch more does not change the loss. Returns a scalar tensor
    (``log V`` for uniform logits).
    """
    check_tensor("logits", logits, 3, dtype_kind="float")
    check_tensor("targets", targets, 2, size={0: logits.shape[0], 1: logits.shape[1]}, dtype_kind="int")
    if isinstance(pad_id, bool) or not isinstance(pad_id, int):
        raise TypeError(f"pad_id must be an int, got {type(pad_id).__name__}")
    if not (targets != pad_id).any():
        raise ValueError("targets must contain at least one non-padding token")
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) \
            or not 0 <= label_smoothing < 1:
        raise ValueError(f"label_smoothing must be a float in [0, 1), got {label_smoothing!r}")
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=pad_id,
                           label_smoothing=float(label_smoothing))


def attention_penalty(weights: torch.Tensor, targets: torch.Tensor, pad_id: int = PAD_ID) -> torch.Tensor:
    """The "doubly stochastic" attention regularizer of Xu et al. (2015), per caption.

    ``mean_b sum_i (1 - sum_t alpha_{b,t,i})^2`` (the paper's ``tau`` = 1), the sum over
    the steps ``t`` whose target is not padding. It pushes the decoder to look at
    every region about once over a caption. ``weights`` (B, T, N), ``targets`` (B, T).
    """
    check_tensor("weights", weights, 3, dtype_kind="float")
    check_tensor("targets", targets, 2, size={0: weights.shape[0], 1: weights.shape[1]}, dtype_kind="int")
    mask = (targets != pad_id).to(weights.dtype).unsqueeze(-1)  # (B, T, 1)
    return (1 - (weights * mask).sum(dim=1)).pow(2).sum(dim=1).mean()


# --------------------------------------------------------------------------- #
# Decoding
# --------------------------------------------------------------------------- #
def _check_decoding(decoder, regions, bos_id, eos_id, max_len) -> None:
    if not isinstance(decoder, AttentionDecoder):
        raise TypeError(f"decoder must be an AttentionDecoder, got {type(decoder).__name__}")
    check_tensor("regions", regions, 3, size={2: decoder.region_dim}, dtype_kind="float")
    _check_id("bos_id", bos_id, decoder.vocab_size)
    _check_id("eos_id", eos_id, decoder.vocab_size)
    _check_dim("max_len", max_len)


def _select_state(state, index: torch.Tensor):
    return state[index] if isinstance(state, torch.Tensor) else tuple(s[index] for s in state)


@torch.no_grad()
def greedy_decode(decoder: AttentionDecoder, regions: torch.Tensor, *, bos_id: int = BOS_ID,
                  eos_id: int = EOS_ID, max_len: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched greedy decoding: at each step feed back the most likely word.

    ``regions`` (B, N, region_dim). Decoding starts from ``bos_id`` and stops once
    every caption has produced ``eos_id`` or after ``max_len`` words.
    Returns (tokens (B, T) int64 without ``[BOS]``, the ``[EOS]`` included and
    ``pad_id`` after it; weights (B, T, N), zero after ``[EOS]``), T <= max_len.
    Decode the tokens to text with :func:`mmutils.text.decode`.
    """
    _check_decoding(decoder, regions, bos_id, eos_id, max_len)
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
def beam_search(decoder: AttentionDecoder, regions: torch.Tensor, beam_size: int = 3, *,
                bos_id: int = BOS_ID, eos_id: int = EOS_ID, max_len: int = 20,
                length_penalty: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched beam search: keep the ``beam_size`` most likely partial captions per image.

    At every step each live beam is extended by every word; of the ``beam_size *
    vocab_size`` candidates of an image the ``beam_size`` with the highest total
    log-probability survive. A beam that has produced ``eos_id`` is finished: it
    keeps its score and is extended only by padding. At the end the beam with the
    best ``score / length ** length_penalty`` wins (length counts the words and
    ``[EOS]``; ``length_penalty=0`` ranks by log-probability alone, and then
    ``beam_size=1`` is exactly :func:`greedy_decode`).

    ``regions`` (B, N, region_dim). Returns (tokens (B, T), weights (B, T, N),
    scores (B,) the winners' log-probabilities), formatted as in :func:`greedy_decode`.
    """
    _check_decoding(decoder, regions, bos_id, eos_id, max_len)
    k = _check_dim("beam_size", beam_size)
    if isinstance(length_penalty, bool) or not isinstance(length_penalty, (int, float)) or length_penalty < 0:
        raise ValueError(f"length_penalty must be a float >= 0, got {length_penalty!r}")
    b, n = regions.shape[:2]
    v = decoder.vocab_size
    dev = regions.device
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
    final = scores / lengths.view(b, k).clamp(min=1) ** length_penalty if length_penalty else scores
    best = (base.squeeze(1) + final.argmax(dim=1))  # (B,)
    return hist_tokens[best], hist_weights[best], scores.flatten()[best]
