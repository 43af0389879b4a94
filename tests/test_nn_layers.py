"""Tests of mmutils.nn.layers: pooling, FiLM, the cross-attention block, grids and masks."""
import math

import pytest
import torch

from mmutils.nn import layers as L


def test_masked_mean():
    x = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert L.masked_mean(x, torch.tensor([[1, 1, 0]])).item() == 2.0
    assert L.masked_mean(x).item() == pytest.approx(104 / 3)
    assert L.masked_mean(x, torch.zeros(1, 3)).item() == 0.0  # nothing valid: zero, not NaN


def test_attention_pooling_ignores_padding():
    torch.manual_seed(0)
    pool = L.AttentionPooling(4, hidden=8)
    x = torch.randn(2, 3, 4)
    out, w = pool(x, torch.ones(2, 3))
    x_pad = torch.cat([x, 100 * torch.randn(2, 2, 4)], dim=1)
    out_pad, w_pad = pool(x_pad, torch.tensor([[1, 1, 1, 0, 0]] * 2))
    assert torch.allclose(out, out_pad, atol=1e-5) and torch.equal(w_pad[:, 3:], torch.zeros(2, 2))
    assert torch.allclose(w.sum(1), torch.ones(2))


def test_attention_pooling_matches_the_keras_formula():
    torch.manual_seed(0)
    pool = L.AttentionPooling(4, hidden=6)
    x, mask = torch.randn(3, 5, 4), torch.tensor([[1, 1, 1, 0, 0], [1] * 5, [1, 0, 0, 0, 0]]).bool()
    W, b, u = pool.score[0].weight.t(), pool.score[0].bias, pool.score[2].weight.t()
    weights = (torch.tanh(x @ W + b) @ u).squeeze(-1).masked_fill(~mask, float("-inf")).softmax(1)
    out, w = pool(x, mask)
    torch.testing.assert_close(w, weights)
    torch.testing.assert_close(out, (weights.unsqueeze(-1) * x).sum(1))


def test_global_max_pool():
    x = torch.randn(2, 3, 7)
    assert torch.equal(L.GlobalMaxPool1d()(x), x.max(dim=-1).values)


@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (2, 7, 3), (2, 3)])
def test_film_starts_as_identity_and_modulates(shape):
    film = L.FiLM(cond_dim=5, channels=3)
    x, cond = torch.randn(*shape), torch.randn(2, 5)
    assert torch.equal(film(x, cond), x)
    torch.nn.init.normal_(film.to_gamma_beta.weight)
    out = film(x, cond)
    gamma, beta = film.to_gamma_beta(cond).chunk(2, dim=1)  # (B, C)
    if len(shape) == 4:  # channels first
        expected = x * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]
    else:  # channels last
        expected = x * (1 + gamma.view(2, *[1] * (len(shape) - 2), 3)) + beta.view(2, *[1] * (len(shape) - 2), 3)
    assert out.shape == x.shape and torch.equal(out, expected) and not torch.allclose(out, x)


def test_cross_attention_block_empty_image_row_leaves_text_to_the_mlp():
    torch.manual_seed(0)
    block = L.CrossAttentionBlock(8, 2).eval()
    text, image = torch.randn(2, 4, 8), torch.randn(2, 5, 8)
    text_mask = torch.ones(2, 4, dtype=torch.bool)
    image_mask = torch.tensor([[True] * 3 + [False] * 2, [False] * 5])
    out, attn = block(text, image, text_mask, image_mask)
    assert out.shape == (2, 4, 8) and attn.shape == (2, 4, 5)
    assert torch.allclose(attn[0].sum(-1), torch.ones(4), atol=1e-6) and torch.equal(attn[0, :, 3:], torch.zeros(4, 2))
    assert torch.equal(attn[1], torch.zeros(4, 5))
    # Row 1 has no region: only self-attention and the MLP act on it.
    h = block.norm_self(text[1:])
    t = text[1:] + block.self_attn(h, h, h, need_weights=False)[0]
    torch.testing.assert_close(out[1:], t + block.mlp(block.norm_mlp(t)))


def test_coordinate_grid():
    g = L.coordinate_grid(2, 3)
    assert g.shape == (2, 2, 3)
    assert g[0].tolist() == [[-1.0, 0.0, 1.0]] * 2  # x grows to the right
    assert g[1].tolist() == [[-1.0] * 3, [1.0] * 3]  # y grows downwards
    assert torch.equal(L.coordinate_grid(1, 1), torch.zeros(2, 1, 1))


def test_causal_mask():
    m = L.causal_mask(4)
    assert m.shape == (4, 4)
    assert torch.equal(m == 0, torch.ones(4, 4, dtype=torch.bool).tril())
    assert torch.isneginf(m[0, 1:]).all()


def test_grid_position_embedding_closed_form():
    emb = L.grid_position_embedding(9, 8)  # a 3 x 3 grid, quarter = 2 frequencies: 1 and 1/sqrt(10)
    assert emb.shape == (9, 8)
    row, col = 1, 2  # region 5
    freq = torch.tensor([1.0, 10 ** -0.5])
    expected = torch.cat([(row * freq * math.pi / 2).sin(), (row * freq * math.pi / 2).cos(),
                          (col * freq * math.pi / 2).sin(), (col * freq * math.pi / 2).cos()])
    torch.testing.assert_close(emb[5], expected)
    assert len({tuple(r) for r in emb.tolist()}) == 9  # every region has its own position


@pytest.mark.parametrize("call, exc, match", [
    (lambda: L.masked_mean(torch.zeros(2, 3, 4), torch.ones(2, 5)), ValueError, "mask"),
    (lambda: L.grid_position_embedding(8, 8), ValueError, "n_regions"),
    (lambda: L.grid_position_embedding(16, 6), ValueError, "dim"),
])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_nn_package_reexports_its_submodules():
    import mmutils
    from mmutils import nn as N

    for sub in (N.layers, N.encoders, N.fusion, N.losses):
        for name in sub.__all__:
            assert getattr(N, name) is getattr(sub, name), name
    assert mmutils.nn is N
