"""Shape, mask and bad-input tests of the fusion modules."""
import pytest
import torch

from mmutils import fusion as F


@pytest.mark.parametrize("batch", [1, 4])
def test_concat_fusion_fixes_the_width_mismatch(batch):
    # The classic bug: 2048-d image + 256-d text features into a layer expecting 512.
    feats = [torch.randn(batch, 2048), torch.randn(batch, 256)]
    with pytest.raises(RuntimeError):
        torch.nn.Linear(512, 256)(torch.cat(feats, dim=1))
    fused = F.ConcatFusion((2048, 256), width=32, hidden=16, out_dim=5)
    assert fused(feats).shape == (batch, 5)
    present = torch.tensor([[1, 0]] * batch)
    assert fused(feats, present).shape == (batch, 5)


@pytest.mark.parametrize("mode", ["mean", "learned"])
def test_late_fusion_combines_votes(mode):
    late = F.LateFusion((6, 4), hidden=8, out_dim=3, mode=mode)
    feats = [torch.randn(5, 6), torch.randn(5, 4)]
    per = late.per_modality(feats)
    assert per.shape == (2, 5, 3)
    assert torch.allclose(late(feats), per.mean(0), atol=1e-6)
    only_first = late(feats, present=torch.tensor([[1, 0]] * 5))
    assert torch.allclose(only_first, per[0], atol=1e-6)


def test_film_starts_as_identity_and_modulates():
    film = F.FiLM(cond_dim=5, channels=3)
    x, cond = torch.randn(2, 3, 4, 4), torch.randn(2, 5)
    assert torch.equal(film(x, cond), x)
    torch.nn.init.normal_(film.to_gamma_beta.weight)
    assert film(x, cond).shape == x.shape
    assert film(torch.randn(2, 7, 3), cond).shape == (2, 7, 3)
    assert not torch.allclose(film(x, cond), x)


@pytest.mark.parametrize("batch", [1, 3])
def test_cross_attention_shapes_and_padding(batch):
    torch.manual_seed(0)
    fusion = F.CrossAttentionFusion(dim=16, heads=2, layers=2).eval()
    text, image = torch.randn(batch, 5, 16), torch.randn(batch, 9, 16)
    mask = torch.ones(batch, 5, dtype=torch.bool)
    fused, attn = fusion(text, image, mask)
    assert fused.shape == (batch, 5, 16) and attn.shape == (batch, 5, 9)
    assert torch.allclose(attn.sum(-1), torch.ones(batch, 5), atol=1e-5)
    text_pad = torch.cat([text, torch.randn(batch, 3, 16)], dim=1)
    mask_pad = torch.cat([mask, torch.zeros(batch, 3, dtype=torch.bool)], dim=1)
    fused_pad, _ = fusion(text_pad, image, mask_pad)
    assert torch.allclose(fused, fused_pad[:, :5], atol=1e-5)
    assert torch.allclose(fusion.pooled(fused, mask), fusion.pooled(fused_pad, mask_pad), atol=1e-5)


def test_attention_pooling_ignores_padding():
    pool = F.AttentionPooling(4, hidden=8)
    x = torch.randn(2, 3, 4)
    out, w = pool(x, torch.ones(2, 3))
    x_pad = torch.cat([x, 100 * torch.randn(2, 2, 4)], dim=1)
    out_pad, w_pad = pool(x_pad, torch.tensor([[1, 1, 1, 0, 0]] * 2))
    assert torch.allclose(out, out_pad, atol=1e-5) and torch.allclose(w_pad[:, 3:], torch.zeros(2, 2))
    assert torch.allclose(w.sum(1), torch.ones(2))


@pytest.mark.parametrize("call, match", [
    (lambda: F.ConcatFusion((4, 3))([torch.randn(2, 4)]), "features"),
    (lambda: F.ConcatFusion((4, 3))([torch.randn(2, 4), torch.randn(2, 5)]), r"features\[1\]"),
    (lambda: F.ConcatFusion((4, 3))([torch.randn(2, 4), torch.randn(3, 3)]), "batch size"),
    (lambda: F.LateFusion((4,), mode="max"), "mode"),
    (lambda: F.LateFusion((4, 3))([torch.randn(2, 4), torch.randn(2, 3)], torch.ones(2, 3)), "present"),
    (lambda: F.FiLM(5, 3)(torch.randn(2, 4, 4, 4), torch.randn(2, 5)), "channels"),
    (lambda: F.FiLM(5, 3)(torch.randn(2, 3, 4, 4), torch.randn(3, 5)), "batch size"),
    (lambda: F.FiLM(5, 3)(torch.randn(2, 3), torch.randn(2, 5)), "x must"),
    (lambda: F.FiLM(5, 3)(torch.randn(2, 3, 4, 4), torch.randn(2, 6)), "cond"),
    (lambda: F.CrossAttentionFusion(16, 2)(torch.randn(2, 5, 16), torch.randn(3, 4, 16)), "batch size"),
    (lambda: F.CrossAttentionFusion(16, 2)(torch.randn(2, 5, 16), torch.randn(2, 4, 8)), "image_tokens"),
    (lambda: F.CrossAttentionFusion(16, 2)(torch.randn(2, 5), torch.randn(2, 4, 16)), "text_tokens"),
    (lambda: F.CrossAttentionFusion(16, 3), "heads"),
    (lambda: F.AttentionPooling(4)(torch.randn(2, 3, 5)), "x"),
])
def test_bad_input(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
