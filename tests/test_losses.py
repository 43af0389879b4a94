"""Closed-form and bad-input tests of the contrastive and distillation losses."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmutils import losses as L


def test_info_nce_equal_similarities_is_log_batch():
    z = torch.ones(8, 4)
    assert L.info_nce(z, z, temperature=0.1).item() == pytest.approx(math.log(8), abs=1e-5)


def test_info_nce_perfect_pairs_is_small():
    z = torch.eye(6)
    assert L.info_nce(z, z, temperature=0.05).item() < 1e-6


def test_clip_loss_symmetric_and_closed_form():
    z = torch.ones(5, 3)
    assert L.clip_loss(z, z, torch.tensor(L.CLIP_INIT_LOGIT_SCALE)).item() == pytest.approx(math.log(5), abs=1e-5)
    a, b = torch.randn(7, 4), torch.randn(7, 4)
    assert L.clip_loss(a, b, 2.0).item() == pytest.approx(L.clip_loss(b, a, 2.0).item(), abs=1e-6)
    # The scale is clamped at 100: log(1000) behaves like log(100).
    assert L.clip_loss(a, b, math.log(1000)).item() == pytest.approx(L.clip_loss(a, b, math.log(100)).item())


def test_clip_loss_matches_explicit_formula():
    torch.manual_seed(0)
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    s = torch.tensor(1.5)
    logits = s.exp() * F.normalize(a, dim=1) @ F.normalize(b, dim=1).t()
    expected = (F.cross_entropy(logits, torch.arange(4)) + F.cross_entropy(logits.t(), torch.arange(4))) / 2
    assert L.clip_loss(a, b, s).item() == pytest.approx(expected.item(), abs=1e-6)


def test_moco_loss_equal_keys_is_log_k_plus_one():
    q = torch.ones(4, 3)
    queue = torch.ones(16, 3)
    assert L.moco_loss(q, q, queue, temperature=0.2).item() == pytest.approx(math.log(17), abs=1e-5)


def test_moco_no_gradient_to_keys():
    q = torch.randn(4, 3, requires_grad=True)
    k = torch.randn(4, 3, requires_grad=True)
    L.moco_loss(q, k, torch.randn(8, 3)).backward()
    assert q.grad is not None and k.grad is None


def test_simcse_with_hard_negatives_equal_is_log_2b():
    z = torch.ones(3, 4)
    assert L.simcse_loss(z, z).item() == pytest.approx(math.log(3), abs=1e-5)
    assert L.simcse_loss(z, z, hard_negatives=z).item() == pytest.approx(math.log(6), abs=1e-5)


def test_distillation_zero_when_equal_and_positive_otherwise():
    t = torch.randn(5, 10)
    assert L.distillation_loss(t, t).item() == pytest.approx(0.0, abs=1e-6)
    assert L.distillation_loss(torch.randn(5, 10), t).item() > 0


@pytest.mark.parametrize("call, match", [
    (lambda: L.info_nce(torch.zeros(3, 4), torch.zeros(2, 4)), "batch size"),
    (lambda: L.info_nce(torch.zeros(3, 4), torch.zeros(3, 5)), "dim"),
    (lambda: L.info_nce(torch.zeros(3), torch.zeros(3)), "query"),
    (lambda: L.info_nce(torch.zeros(3, 4), torch.zeros(3, 4), temperature=0), "temperature"),
    (lambda: L.info_nce([[0.0]], torch.zeros(1, 1)), "query"),
    (lambda: L.clip_loss(torch.zeros(3, 4), torch.zeros(2, 4), 1.0), "batch size"),
    (lambda: L.clip_loss(torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(2)), "logit_scale"),
    (lambda: L.moco_loss(torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(8, 5)), "queue"),
    (lambda: L.moco_loss(torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(8, 4), temperature=-1), "temperature"),
    (lambda: L.simcse_loss(torch.zeros(3, 4), torch.zeros(3, 4), hard_negatives=torch.zeros(2, 4)), "batch size"),
    (lambda: L.distillation_loss(torch.zeros(3, 4), torch.zeros(3, 5)), "dim"),
])
def test_bad_input(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
