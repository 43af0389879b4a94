"""Shapes, closed-form checks, decoding and bad-input tests of mmutils.captioning."""
import math

import pytest
import torch

from mmutils import captioning as cap
from mmutils.nn.encoders import ConvTower

VOCAB, D, N = 20, 8, 16


def _regions(b: int, n: int = N, d: int = D, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, n, d, generator=torch.Generator().manual_seed(seed))


def _captions(b: int, length: int = 7, seed: int = 0) -> torch.Tensor:
    """[BOS] words [EOS] [PAD]... with random lengths, ids as in mmutils.text (PAD 0, BOS 2, EOS 3)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (b, length), generator=g)
    ids[:, 0] = cap.BOS_ID
    lengths = torch.randint(3, length + 1, (b,), generator=g)
    for i, n in enumerate(lengths.tolist()):
        ids[i, n - 1] = cap.EOS_ID
        ids[i, n:] = cap.PAD_ID
    return ids


def _decoder(**kw) -> cap.AttentionDecoder:
    torch.manual_seed(0)
    return cap.AttentionDecoder(VOCAB, D, embed_dim=8, hidden=12, attn_dim=6, **kw).eval()


# --------------------------------------------------------------------------- #
# attention
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("b", [1, 3, 8])
def test_additive_attention_shapes_and_weights_sum_to_one(b):
    att = cap.AdditiveAttention(12, D, 6)
    ctx, w = att(torch.randn(b, 12), _regions(b))
    assert ctx.shape == (b, D) and w.shape == (b, N)
    assert torch.allclose(w.sum(-1), torch.ones(b), atol=1e-6) and (w >= 0).all()
    ctx3, w3 = att(torch.randn(b, 5, 12), _regions(b))  # several queries per image
    assert ctx3.shape == (b, 5, D) and w3.shape == (b, 5, N)
    assert torch.allclose(w3.sum(-1), torch.ones(b, 5), atol=1e-6)


def test_additive_attention_closed_form():
    att = cap.AdditiveAttention(4, D, 6)
    keys = _regions(2)
    with torch.no_grad():
        att.v.weight.zero_()  # all scores equal: uniform weights, context = mean of the keys
    ctx, w = att(torch.randn(2, 4), keys)
    assert torch.allclose(w, torch.full((2, N), 1 / N))
    assert torch.allclose(ctx, keys.mean(1), atol=1e-6)
    # the formula e_i = v^T tanh(W_q q + W_k k_i + b)
    att = cap.AdditiveAttention(4, D, 6)
    q = torch.randn(2, 4)
    e = att.v(torch.tanh(att.w_query(q)[:, None] + att.w_key(keys))).squeeze(-1)
    ctx, w = att(q, keys)
    assert torch.allclose(w, e.softmax(-1), atol=1e-6)
    assert torch.allclose(ctx, (w[..., None] * keys).sum(1), atol=1e-6)
    # a mask removes keys; precomputed projections give the same result
    mask = torch.ones(2, N, dtype=torch.bool)
    mask[:, 5:] = False
    _, wm = att(q, keys, mask)
    assert (wm[:, 5:] == 0).all() and torch.allclose(wm.sum(-1), torch.ones(2))
    assert torch.allclose(att(q, keys, projected=att.project(keys))[1], w)


@pytest.mark.parametrize("call, error, match", [
    (lambda att: att(torch.randn(2, 4), _regions(2), torch.ones(2, N - 1)), ValueError,
     r"mask must have shape \(2, 16\)"),
    (lambda att: att(torch.randn(2, 4), _regions(2), torch.zeros(2, N)), ValueError,
     "mask must leave at least one key"),
])
def test_additive_attention_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call(cap.AdditiveAttention(4, D, 6))


# --------------------------------------------------------------------------- #
# decoder
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("attend", ["previous", "current"])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("b", [1, 4, 9])
def test_decoder_shapes_and_attention(attend, cell, b):
    dec = _decoder(cell=cell, attend=attend, n_regions=N)
    ids = _captions(b)
    logits, w = dec(_regions(b), ids)
    assert logits.shape == (b, ids.shape[1] - 1, VOCAB)
    assert w.shape == (b, ids.shape[1] - 1, N)
    assert torch.allclose(w.sum(-1), torch.ones(b, ids.shape[1] - 1), atol=1e-5)


@pytest.mark.parametrize("attend", ["previous", "current"])
def test_teacher_forcing_equals_stepping(attend):
    dec = _decoder(attend=attend, cell="lstm")
    regions, ids = _regions(3), _captions(3)
    logits, w = dec(regions, ids)
    r, proj = dec.prepare(regions)
    state = dec.init_state(r)
    for t in range(ids.shape[1] - 1):
        step_logits, state, step_w = dec.step(ids[:, t], state, r, proj)
        assert torch.allclose(step_logits, logits[:, t], atol=1e-5)
        assert torch.allclose(step_w, w[:, t], atol=1e-6)


@pytest.mark.parametrize("attend", ["previous", "current"])
def test_padding_changes_neither_outputs_nor_loss(attend):
    dec = _decoder(attend=attend)
    regions, ids = _regions(4), _captions(4)
    padded = torch.cat([ids, torch.zeros(4, 5, dtype=torch.long)], dim=1)
    logits, _ = dec(regions, ids)
    logits_p, _ = dec(regions, padded)
    assert torch.allclose(logits_p[:, : logits.shape[1]], logits, atol=1e-6)  # causal
    loss = cap.caption_loss(logits, ids[:, 1:])
    assert torch.allclose(cap.caption_loss(logits_p, padded[:, 1:]), loss)
    # whatever the model predicts at padded positions does not count
    noisy = logits_p.clone()
    noisy[:, logits.shape[1]:] = torch.randn_like(noisy[:, logits.shape[1]:]) * 10
    assert torch.allclose(cap.caption_loss(noisy, padded[:, 1:]), loss)


def test_caption_loss_closed_form():
    targets = _captions(3)[:, 1:]
    assert math.isclose(cap.caption_loss(torch.zeros(3, targets.shape[1], VOCAB), targets).item(),
                        math.log(VOCAB), rel_tol=1e-6)  # uniform logits: log V
    perfect = torch.nn.functional.one_hot(targets, VOCAB).float() * 100
    assert cap.caption_loss(perfect, targets).item() < 1e-6
    # equals the hand-written masked mean
    logits = torch.randn(3, targets.shape[1], VOCAB)
    nll = -logits.log_softmax(-1).gather(-1, targets[..., None]).squeeze(-1)
    mask = targets != 0
    assert torch.allclose(cap.caption_loss(logits, targets), nll[mask].mean(), atol=1e-6)


def test_attention_penalty_closed_form():
    targets = torch.tensor([[5, 6, 3, 0]])
    w = torch.zeros(1, 4, 2)
    w[0, :3, 0] = 1.0  # three real steps all on region 0, padding step ignored
    w[0, 3, 1] = 1.0
    assert cap.attention_penalty(w, targets).item() == pytest.approx((1 - 3) ** 2 + (1 - 0) ** 2)


def test_captioner_with_conv_tower():
    enc = ConvTower(3, (4, 8, 8), max_pool=True, out_dim=D)
    model = cap.Captioner(enc, _decoder(n_regions=N))
    for b in (1, 5):
        logits, w = model(torch.rand(b, 3, 32, 32), _captions(b))
        assert logits.shape == (b, 6, VOCAB) and w.shape == (b, 6, N)
        assert torch.equal(model.encode(torch.zeros(b, 3, 32, 32)), enc(torch.zeros(b, 3, 32, 32)))


@pytest.mark.parametrize("call, error, match", [
    (lambda dec: dec(_regions(2), _captions(2).float()), TypeError, "input_ids must be an integer tensor"),
    (lambda dec: dec(_regions(2), _captions(2)[:, :1]), ValueError, "input_ids must hold at least 2 tokens"),
])
def test_decoder_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call(_decoder(n_regions=N))


def test_caption_loss_bad_input():
    with pytest.raises(ValueError, match="targets must contain at least one non-padding"):
        cap.caption_loss(torch.zeros(1, 3, VOCAB), torch.zeros(1, 3, dtype=torch.long))


# --------------------------------------------------------------------------- #
# decoding
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("attend", ["previous", "current"])
@pytest.mark.parametrize("b", [1, 6])
def test_greedy_decode_shapes_and_format(attend, b):
    dec = _decoder(attend=attend)
    tokens, w = cap.greedy_decode(dec, _regions(b), max_len=9)
    assert tokens.shape[0] == b and tokens.shape[1] <= 9 and w.shape == (*tokens.shape, N)
    for row, wr in zip(tokens, w):
        eos = (row == cap.EOS_ID).nonzero()
        if len(eos):  # padding (and zero attention) after the first [EOS]
            first = eos[0, 0].item()
            assert (row[first + 1:] == cap.PAD_ID).all() and (wr[first + 1:] == 0).all()
            assert torch.allclose(wr[: first + 1].sum(-1), torch.ones(first + 1), atol=1e-5)


def test_greedy_decode_follows_argmax_of_teacher_forcing():
    dec = _decoder()
    regions = _regions(4)
    tokens, w = cap.greedy_decode(dec, regions, max_len=6)
    ids = torch.cat([torch.full((4, 1), cap.BOS_ID), tokens], dim=1)
    logits, w_tf = dec(regions, ids)
    live = torch.ones(4, dtype=torch.bool)
    for t in range(tokens.shape[1]):
        assert torch.equal(logits[live, t].argmax(-1), tokens[live, t])
        assert torch.allclose(w_tf[live, t], w[live, t], atol=1e-6)
        live &= tokens[:, t] != cap.EOS_ID


@pytest.mark.parametrize("attend", ["previous", "current"])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_beam_one_equals_greedy(attend, cell):
    dec = _decoder(attend=attend, cell=cell)
    with torch.no_grad():
        dec.out.bias[cap.EOS_ID] += 1.5  # make some captions end early
    regions = _regions(7, seed=3)
    tokens, w = cap.greedy_decode(dec, regions, max_len=10)
    beam_tokens, beam_w, scores = cap.beam_search(dec, regions, beam_size=1, max_len=10)
    assert torch.equal(beam_tokens, tokens)
    assert torch.allclose(beam_w, w, atol=1e-6)
    assert scores.shape == (7,) and (scores <= 0).all()


def _score(dec, regions, tokens):
    """Log-probability of generated tokens (up to and including the first [EOS])."""
    ids = torch.cat([torch.full((tokens.shape[0], 1), cap.BOS_ID), tokens], dim=1)
    logp = dec(regions, ids)[0].log_softmax(-1).gather(-1, tokens[..., None]).squeeze(-1)
    return (logp * (tokens != cap.PAD_ID)).sum(1)


@pytest.mark.parametrize("b", [1, 5])
def test_beam_search_scores_are_log_probabilities(b):
    dec = _decoder()
    with torch.no_grad():
        dec.out.bias[cap.EOS_ID] += 1.0
    regions = _regions(b, seed=1)
    tokens, w, scores = cap.beam_search(dec, regions, beam_size=4, max_len=8)
    assert tokens.shape[0] == b and w.shape == (*tokens.shape, N)
    with torch.no_grad():
        assert torch.allclose(_score(dec, regions, tokens), scores, atol=1e-4)


class _TwoStepDecoder(cap.AttentionDecoder):
    """A hand-made decoder whose next-word distribution depends on the previous word only.

    After [BOS]: word 5 with p = 0.6, word 6 with p = 0.4. After 5: words 7 and 8 with
    p = 0.5 each. After 6: word 9 with p = 0.9. After any of 7, 8, 9: [EOS]. Greedy picks
    5 then 7 (p = 0.3); the best caption is 6 9 (p = 0.36).
    """

    TABLE = {cap.BOS_ID: {5: 0.6, 6: 0.4}, 5: {7: 0.5, 8: 0.5}, 6: {9: 0.9, 7: 0.1}}

    def step(self, tokens, state, regions, projected):
        probs = torch.full((tokens.shape[0], self.vocab_size), 1e-9)
        for i, tok in enumerate(tokens.tolist()):
            for word, p in self.TABLE.get(tok, {cap.EOS_ID: 1.0}).items():
                probs[i, word] = p
        weights = torch.full((tokens.shape[0], regions.shape[1]), 1 / regions.shape[1])
        return probs.log(), state, weights


def test_beam_search_closed_form_beats_greedy():
    dec = _TwoStepDecoder(VOCAB, D)
    regions = _regions(2)
    greedy, _ = cap.greedy_decode(dec, regions, max_len=5)
    assert greedy[0].tolist() == [5, 7, cap.EOS_ID]
    tokens, _, scores = cap.beam_search(dec, regions, beam_size=2, max_len=5)
    assert tokens[0].tolist() == [6, 9, cap.EOS_ID] and tokens[1].tolist() == [6, 9, cap.EOS_ID]
    assert torch.allclose(scores, torch.full((2,), math.log(0.4 * 0.9)), atol=1e-5)
    tokens1, _, scores1 = cap.beam_search(dec, regions, beam_size=1, max_len=5)
    assert tokens1[0].tolist() == [5, 7, cap.EOS_ID]
    assert scores1[0].item() == pytest.approx(math.log(0.3), abs=1e-5)


def test_beam_search_length_penalty_prefers_longer():
    class Short(_TwoStepDecoder):  # [EOS] right away with p = 0.5, or 5 then 7 with p = 0.5 * 0.9
        TABLE = {cap.BOS_ID: {cap.EOS_ID: 0.5, 5: 0.5}, 5: {7: 0.9, 8: 0.1}}

    dec = Short(VOCAB, D)
    tokens, _, _ = cap.beam_search(dec, _regions(1), beam_size=2, max_len=5)
    assert tokens[0].tolist()[:1] == [cap.EOS_ID]
    tokens, _, _ = cap.beam_search(dec, _regions(1), beam_size=2, max_len=5, length_penalty=1.0)
    assert tokens[0].tolist() == [5, 7, cap.EOS_ID]  # log(0.45) / (8/6) > log(0.5) / (6/6)
    # Wu et al.'s lp = ((5 + |y|) / 6)^alpha: the long caption wins iff (8/6)^alpha > log(0.45) / log(0.5), i.e.
    # alpha > 0.492 (with the plain |y|^alpha it would win from alpha > 0.129 on)
    threshold = math.log(math.log(0.45) / math.log(0.5)) / math.log(8 / 6)
    for alpha, expected in ((threshold - 0.05, [cap.EOS_ID]), (threshold + 0.05, [5, 7, cap.EOS_ID])):
        tokens, _, _ = cap.beam_search(dec, _regions(1), beam_size=2, max_len=5, length_penalty=alpha)
        assert tokens[0].tolist()[:len(expected)] == expected, alpha


def test_decoding_bad_input():
    enc = ConvTower(3, (4, 8, 8), max_pool=True, out_dim=D)
    with pytest.raises(TypeError, match="decoder"):  # the Captioner instead of its decoder
        cap.greedy_decode(cap.Captioner(enc, _decoder()), _regions(2))


# --------------------------------------------------------------------------- #
# Transformer decoder
# --------------------------------------------------------------------------- #
def _transformer(**kw) -> cap.TransformerCaptionDecoder:
    torch.manual_seed(0)
    return cap.TransformerCaptionDecoder(VOCAB, D, dim=12, layers=2, heads=3, max_len=16, **kw).eval()


@pytest.mark.parametrize("b", [1, 4])
def test_transformer_shapes_and_attention(b):
    dec = _transformer()
    ids = _captions(b)
    logits, w = dec(_regions(b), ids)
    assert logits.shape == (b, ids.shape[1] - 1, VOCAB) and w.shape == (b, ids.shape[1] - 1, N)
    assert torch.allclose(w.sum(-1), torch.ones(b, ids.shape[1] - 1), atol=1e-5) and (w >= 0).all()


def test_transformer_is_causal_and_ignores_padding():
    dec = _transformer()
    regions, ids = _regions(4), _captions(4)
    logits, _ = dec(regions, ids)
    changed = ids.clone()
    changed[:, 4:] = 7  # later words change ...
    with torch.no_grad():
        assert torch.allclose(dec(regions, changed)[0][:, :4], logits[:, :4], atol=1e-5)  # ... not earlier
        padded = torch.cat([ids, torch.zeros(4, 5, dtype=torch.long)], dim=1)
        loss = cap.caption_loss(logits, ids[:, 1:])
        assert torch.allclose(cap.caption_loss(dec(regions, padded)[0], padded[:, 1:]), loss, atol=1e-6)


def test_transformer_teacher_forcing_equals_stepping():
    dec = _transformer()
    regions, ids = _regions(3), _captions(3)
    with torch.no_grad():
        logits, w = dec(regions, ids)
        r, memory = dec.prepare(regions)
        state = dec.init_state(r)
        assert [s.shape for s in state] == [(3, 3, 0, 4)] * 4  # empty keys and values per block
        for t in range(ids.shape[1] - 1):
            step_logits, state, step_w = dec.step(ids[:, t], state, r, memory)
            assert torch.allclose(step_logits, logits[:, t], atol=1e-5)
            assert torch.allclose(step_w, w[:, t], atol=1e-5)
        assert [s.shape for s in state] == [(3, 3, ids.shape[1] - 1, 4)] * 4
        with pytest.raises(ValueError, match="max_len=16"):  # the cache is full after max_len words
            state = tuple(s[:, :, :1].expand(-1, -1, 16, -1) for s in state)
            dec.step(ids[:, 0], state, r, memory)


def test_transformer_cross_attention_reference():
    """The block's weights equal a plain loop over heads of softmax(q k^T / sqrt(d_h))."""
    dec = _transformer()
    block = dec.blocks[0]
    x, memory = torch.randn(2, 5, 12), dec.project(_regions(2))
    attn = block.cross_attn
    w_q, w_k, _ = attn.in_proj_weight.chunk(3)
    b_q, b_k, _ = attn.in_proj_bias.chunk(3)
    ref = torch.zeros(2, 5, N)
    for h in range(3):
        sl = slice(4 * h, 4 * h + 4)
        q = x @ w_q[sl].T + b_q[sl]
        k = memory @ w_k[sl].T + b_k[sl]
        ref += (q @ k.transpose(1, 2) / 2.0).softmax(-1) / 3
    with torch.no_grad():
        assert torch.allclose(attn(x, memory, memory)[1], ref, atol=1e-5)


def test_transformer_decoding():
    dec = _transformer()
    with torch.no_grad():
        dec.out.bias[cap.EOS_ID] += 1.5  # make some captions end early
    regions = _regions(5, seed=2)
    tokens, w = cap.greedy_decode(dec, regions, max_len=10)
    beam1, beam1_w, _ = cap.beam_search(dec, regions, beam_size=1, max_len=10)
    assert torch.equal(beam1, tokens) and torch.allclose(beam1_w, w, atol=1e-5)
    beam_tokens, _, scores = cap.beam_search(dec, regions, beam_size=3, max_len=10)
    with torch.no_grad():
        assert torch.allclose(_score(dec, regions, beam_tokens), scores, atol=1e-4)
    model = cap.Captioner(torch.nn.Identity(), dec)  # a Captioner takes either decoder
    assert model(regions, _captions(5))[0].shape == (5, 6, VOCAB)


@pytest.mark.parametrize("make, error, match", [
    (lambda: cap.TransformerCaptionDecoder(VOCAB, D, dim=10, heads=4), ValueError,
     "dim must be divisible by heads"),
    (lambda: cap.TransformerCaptionDecoder(VOCAB, D, layers=0), ValueError, "layers"),
    (lambda: _transformer()(_regions(2), torch.full((2, 18), 5)), ValueError, "max_len=16"),
    (lambda: _transformer()(_regions(2, d=D + 1), _captions(2)), ValueError, "regions"),
    (lambda: _transformer()(_regions(2), _captions(2).float()), TypeError, "input_ids"),
])
def test_transformer_bad_inputs(make, error, match):
    with pytest.raises(error, match=match):
        make()
