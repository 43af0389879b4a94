"""Tests of mmutils.autoregressive: the k-means codebook and the token round trip on latents with known blocks, the
token loss, and the cached, guided sampler against a sampler that recomputes the whole sequence, bad inputs."""
from __future__ import annotations

import math

import pytest
import torch

from mmutils import autoregressive as ar

TEXT_VOCAB, CODES, L, T = 7, 4, 3, 4


def _latents_of_known_blocks(n=64, seed=0):
    """Latents (n, 2, 4, 4) whose 2x2 blocks are each one of four fixed patterns, and their tokens (n, 4)."""
    g = torch.Generator().manual_seed(seed)
    patterns = torch.tensor([[3.0] * 8, [-3.0] * 8, [3.0, -3.0] * 4, [0.0] * 8])  # (4, 2 * 2 * 2)
    tokens = torch.randint(4, (n, 4), generator=g)
    return ar.from_tokens(tokens, patterns, patch=2, size=4), tokens, patterns


def test_codebook_finds_the_blocks_and_tokens_round_trip():
    latents, tokens, patterns = _latents_of_known_blocks()
    codebook = ar.fit_codebook(latents, 4, patch=2, seed=0)
    assert codebook.shape == (4, 8)
    order = torch.cdist(patterns, codebook).argmin(1)  # which code each pattern became
    assert sorted(order.tolist()) == [0, 1, 2, 3]
    assert torch.allclose(codebook[order], patterns, atol=1e-5)
    found = ar.to_tokens(latents, codebook, patch=2)
    assert torch.equal(found, order[tokens])
    assert torch.allclose(ar.from_tokens(found, codebook, patch=2, size=4), latents, atol=1e-5)


def test_codebook_and_tokens_refuse_bad_inputs():
    latents, tokens, patterns = _latents_of_known_blocks(8)
    with pytest.raises(ValueError, match="patch"):
        ar.fit_codebook(latents, 4, patch=3)
    with pytest.raises(TypeError, match="latents"):
        ar.fit_codebook(latents.long(), 4)
    with pytest.raises(ValueError, match="tokens"):
        ar.from_tokens(tokens[:, :3], patterns, patch=2, size=4)
    with pytest.raises(TypeError, match="tokens"):
        ar.from_tokens(tokens.float(), patterns, patch=2, size=4)


def _model(seed=0):
    torch.manual_seed(seed)
    return ar.token_transformer(TEXT_VOCAB, CODES, text_length=L, image_tokens=T, width=16, layers=2, heads=2).eval()


def _sample_without_cache(model, ids, scale, generator):
    """The same draws as ar.sample_tokens, recomputing every position at every step."""
    n = len(ids)
    seq = torch.cat([ids, torch.zeros_like(ids)])
    drawn = []
    for _ in range(T):
        logits = model(input_ids=seq).logits[:, -1, TEXT_VOCAB:]
        guided = logits[n:] + scale * (logits[:n] - logits[n:])
        token = torch.multinomial(guided.softmax(-1), 1, generator=generator)
        drawn.append(token)
        seq = torch.cat([seq, token.repeat(2, 1) + TEXT_VOCAB], 1)
    return torch.cat(drawn, 1)


@torch.no_grad()
def test_cached_guided_sampling_equals_recomputing_the_sequence():
    model = _model()
    ids = torch.tensor([[1, 5, 6], [2, 3, 0], [4, 4, 4]])
    for scale in (1.0, 3.0):
        fast = ar.sample_tokens(model, ids, text_vocab=TEXT_VOCAB, image_tokens=T, scale=scale,
                                generator=torch.Generator().manual_seed(1))
        slow = _sample_without_cache(model, ids, scale, torch.Generator().manual_seed(1))
        assert torch.equal(fast, slow)
        assert fast.shape == (3, T) and 0 <= fast.min() and fast.max() < CODES
    # scale 0 is the unconditional model: the captions no longer matter
    a = ar.sample_tokens(model, ids, text_vocab=TEXT_VOCAB, image_tokens=T, scale=0.0,
                         generator=torch.Generator().manual_seed(2))
    b = ar.sample_tokens(model, ids.flip(0), text_vocab=TEXT_VOCAB, image_tokens=T, scale=0.0,
                         generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="scale"):
        ar.sample_tokens(model, ids, text_vocab=TEXT_VOCAB, image_tokens=T, scale=-1.0)


def test_token_loss_learns_and_drops_captions():
    model = _model().train()
    ids = torch.tensor([[1, 5, 6], [2, 3, 0]] * 8)
    tokens = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]] * 8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss = ar.token_loss(model, ids, tokens, text_vocab=TEXT_VOCAB, p_uncond=0.0)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 1.0 and loss.item() < 0.05  # the caption decides the tokens: learnable exactly
    with torch.no_grad():  # every caption dropped: the first token is a coin toss between 0 and 3, at best
        dropped = ar.token_loss(model, ids, tokens, text_vocab=TEXT_VOCAB, p_uncond=1.0)
    assert dropped.item() >= math.log(2) / T - 1e-6
