"""Closed-form, reference and bad-input tests of mmutils.nn.losses."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmutils.nn import losses as L


# --------------------------------------------------------------------------- #
# Plain-loop references (float64 numpy, one row at a time), as in lightly's loss tests
# --------------------------------------------------------------------------- #
def _unit(x):
    x = x.detach().double().numpy()
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _cross_entropy_row(logits, target):
    return -logits[target] + math.log(sum(math.exp(v) for v in logits))


def _info_nce_loop(query, key, temperature):
    q, k = _unit(query), _unit(key)
    total = 0.0
    for i in range(len(q)):
        logits = [float(q[i] @ k[j]) / temperature for j in range(len(k))]
        total += _cross_entropy_row(logits, i)
    return total / len(q)


def _moco_loop(query, key, queue, temperature):
    q, k, neg = _unit(query), _unit(key), _unit(queue)
    total = 0.0
    for i in range(len(q)):
        logits = [float(q[i] @ k[i]) / temperature] + [float(q[i] @ n) / temperature for n in neg]
        total += _cross_entropy_row(logits, 0)
    return total / len(q)


def _clip_loop(image, text, logit_scale, negatives=None):
    img, txt = _unit(image), _unit(text)
    candidates = txt if negatives is None else np.concatenate([txt, _unit(negatives)])
    scale = math.exp(min(max(logit_scale, 0.0), math.log(100)))
    b = len(img)
    i2t = sum(_cross_entropy_row([scale * float(img[i] @ c) for c in candidates], i) for i in range(b)) / b
    t2i = sum(_cross_entropy_row([scale * float(txt[i] @ img[j]) for j in range(b)], i) for i in range(b)) / b
    return 0.5 * (i2t + t2i)


def _multi_positive_clip_loop(image, text, logit_scale, keys, negatives=None):
    """Each row: minus the mean, over its positives (same key), of the log-softmax; then both directions averaged."""
    img, txt = _unit(image), _unit(text)
    candidates = txt if negatives is None else np.concatenate([txt, _unit(negatives)])
    scale = math.exp(min(max(logit_scale, 0.0), math.log(100)))
    b = len(img)

    def row_loss(logits, positives):
        log_z = math.log(sum(math.exp(v) for v in logits))
        return sum(log_z - logits[j] for j in positives) / len(positives)

    positives = [[j for j in range(b) if keys[j] == keys[i]] for i in range(b)]
    i2t = sum(row_loss([scale * float(img[i] @ c) for c in candidates], positives[i]) for i in range(b)) / b
    t2i = sum(row_loss([scale * float(txt[i] @ img[j]) for j in range(b)], positives[i]) for i in range(b)) / b
    return 0.5 * (i2t + t2i)


@pytest.mark.parametrize("batch, dim, temperature", [(1, 3, 0.1), (4, 8, 0.5), (16, 32, 0.07)])
@pytest.mark.parametrize("seed", [0, 1])
def test_info_nce_matches_loop(batch, dim, temperature, seed):
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(batch, dim, generator=g), torch.randn(batch, dim, generator=g)
    assert L.info_nce(q, k, temperature).item() == pytest.approx(_info_nce_loop(q, k, temperature), rel=1e-5)


@pytest.mark.parametrize("batch, dim, queue_size, temperature", [(1, 3, 1, 0.2), (4, 8, 16, 0.07), (8, 16, 64, 0.5)])
@pytest.mark.parametrize("seed", [0, 1])
def test_moco_loss_matches_loop(batch, dim, queue_size, temperature, seed):
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(batch, dim, generator=g), torch.randn(batch, dim, generator=g)
    queue = torch.randn(queue_size, dim, generator=g)
    expected = _moco_loop(q, k, queue, temperature)
    assert L.moco_loss(q, k, queue, temperature).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("batch, n_neg", [(1, 0), (5, 0), (5, 3), (8, 8)])
@pytest.mark.parametrize("logit_scale", [-1.0, 0.5, L.CLIP_INIT_LOGIT_SCALE, 7.0])
def test_clip_loss_matches_loop(batch, n_neg, logit_scale):
    g = torch.Generator().manual_seed(batch + n_neg)
    a, b, neg = (torch.randn(n, 6, generator=g) for n in (batch, batch, n_neg))
    expected = _clip_loop(a, b, logit_scale, neg if n_neg else None)
    got = L.clip_loss(a, b, torch.tensor(logit_scale), neg if n_neg else None)
    assert got.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("keys", [[0, 1, 0, 2, 1], [3, 3, 3, 3, 3], [0, 1, 2, 3, 4], [7]])
@pytest.mark.parametrize("n_neg", [0, 3])
@pytest.mark.parametrize("logit_scale", [0.5, L.CLIP_INIT_LOGIT_SCALE])
def test_clip_loss_multi_positive_matches_loop(keys, n_neg, logit_scale):
    g = torch.Generator().manual_seed(len(keys) + n_neg)
    a, b, neg = (torch.randn(n, 6, generator=g) for n in (len(keys), len(keys), n_neg))
    key_id = torch.tensor(keys)
    expected = _multi_positive_clip_loop(a, b, logit_scale, keys, neg if n_neg else None)
    got = L.clip_loss(a, b, torch.tensor(logit_scale), neg if n_neg else None, key_id=key_id)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_clip_loss_multi_positive_closed_forms():
    a, b = torch.randn(6, 4), torch.randn(6, 4)
    # all keys distinct: the one-positive loss
    torch.testing.assert_close(L.clip_loss(a, b, 2.0, key_id=torch.arange(6)), L.clip_loss(a, b, 2.0))
    # two pairs with the same key (twins) and a third pair, each caption equal to its image; the twins at an angle
    # 2a apart. The one-positive loss falls as the twins move apart; the multi-positive loss is lowest when they
    # coincide (each twin row then splits its mass evenly over its two positives).
    def twins(a):
        z = torch.tensor([[math.cos(a), math.sin(a)], [math.cos(a), -math.sin(a)], [-1.0, 0.0]])
        return z, z

    keys = torch.tensor([5, 5, 1])
    plain = [L.clip_loss(*twins(a), L.CLIP_INIT_LOGIT_SCALE).item() for a in (0.0, 0.3)]
    multi = [L.clip_loss(*twins(a), L.CLIP_INIT_LOGIT_SCALE, key_id=keys).item() for a in (0.0, 0.3)]
    assert plain[1] < plain[0] - 0.1 and multi[1] > multi[0]
    assert multi[0] == pytest.approx(plain[0], abs=1e-6)  # together, the two targets cost the same


def test_clip_loss_closed_form_and_symmetry():
    z = torch.ones(5, 3)
    assert L.clip_loss(z, z, L.CLIP_INIT_LOGIT_SCALE).item() == pytest.approx(math.log(5), abs=1e-5)
    # identical captions as negatives: the image-to-text side sees 5 + 2 equal candidates
    assert L.clip_loss(z, z, 1.0, torch.ones(2, 3)).item() == pytest.approx(0.5 * (math.log(7) + math.log(5)), abs=1e-5)
    a, b = torch.randn(7, 4), torch.randn(7, 4)
    assert L.clip_loss(a, b, 2.0).item() == pytest.approx(L.clip_loss(b, a, 2.0).item(), abs=1e-6)


def test_logit_scale_to_scale_clamps_value_and_gradient():
    # CLIP's initial temperature is 0.07 and its largest scale 100.
    assert L.logit_scale_to_scale(L.CLIP_INIT_LOGIT_SCALE).item() == pytest.approx(1 / 0.07)
    assert L.logit_scale_to_scale(L.CLIP_MAX_LOGIT_SCALE + 1.0).item() == pytest.approx(100.0)
    theta = torch.tensor([-1.0, 2.0, 9.0], requires_grad=True)
    scales = torch.stack([L.logit_scale_to_scale(t) for t in theta])
    torch.testing.assert_close(scales, torch.tensor([1.0, math.exp(2.0), 100.0]))
    scales.sum().backward()
    torch.testing.assert_close(theta.grad, torch.tensor([0.0, math.exp(2.0), 0.0]))  # no push past the bounds
    assert L.logit_scale_to_scale(9.0, max_logit_scale=1.0).item() == pytest.approx(math.e)


def test_clip_loss_gradient_reaches_embeddings_negatives_and_unclamped_scale():
    a, b, neg = (torch.randn(4, 3, requires_grad=True) for _ in range(3))
    theta = torch.tensor(L.CLIP_INIT_LOGIT_SCALE, requires_grad=True)
    L.clip_loss(a, b, theta, neg).backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (a, b, neg, theta))


def test_clip_loss_max_logit_scale():
    torch.manual_seed(0)
    a, b = torch.randn(6, 4), torch.randn(6, 4)

    def expected(scale):
        logits = scale * F.normalize(a, dim=1) @ F.normalize(b, dim=1).t()
        targets = torch.arange(6)
        return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets))

    theta = torch.tensor(6.0, requires_grad=True)  # above the default bound log(100)
    default = L.clip_loss(a, b, theta)
    torch.testing.assert_close(default, expected(100.0))
    torch.testing.assert_close(default, L.clip_loss(a, b, theta, max_logit_scale=L.CLIP_MAX_LOGIT_SCALE), rtol=0,
                               atol=0)
    own = L.clip_loss(a, b, theta, max_logit_scale=7.0)  # a model with a higher bound trains past log(100)
    torch.testing.assert_close(own, expected(math.exp(6.0)))
    own.backward()
    assert theta.grad.abs() > 0
    torch.testing.assert_close(L.clip_loss(a, b, 9.0, max_logit_scale=7.0), expected(math.exp(7.0)))


def test_info_nce_closed_forms():
    z = torch.ones(8, 4)
    assert L.info_nce(z, z, temperature=0.1).item() == pytest.approx(math.log(8), abs=1e-5)
    assert L.info_nce(torch.eye(6), torch.eye(6), temperature=0.05).item() < 1e-6


def test_moco_loss_closed_form_and_no_gradient_to_keys():
    q = torch.ones(4, 3)
    assert L.moco_loss(q, q, torch.ones(16, 3), temperature=0.2).item() == pytest.approx(math.log(17), abs=1e-5)
    q = torch.randn(4, 3, requires_grad=True)
    k = torch.randn(4, 3, requires_grad=True)
    queue = torch.randn(8, 3, requires_grad=True)
    L.moco_loss(q, k, queue).backward()
    assert q.grad is not None and k.grad is None and queue.grad is None


def test_simcse_loss():
    z = torch.ones(3, 4)
    assert L.simcse_loss(z, z).item() == pytest.approx(math.log(3), abs=1e-5)
    assert L.simcse_loss(z, z, hard_negatives=z).item() == pytest.approx(math.log(6), abs=1e-5)
    a, b, n = torch.randn(5, 4), torch.randn(5, 4), torch.randn(5, 4)
    logits = F.normalize(a, dim=1) @ F.normalize(torch.cat([b, n]), dim=1).t() / 0.05  # (B, 2B)
    torch.testing.assert_close(L.simcse_loss(a, b, 0.05, n), F.cross_entropy(logits, torch.arange(5)))


def test_distillation_loss():
    t = torch.randn(5, 10)
    assert L.distillation_loss(t, t).item() == pytest.approx(0.0, abs=1e-6)
    s = torch.randn(5, 10)
    p, log_q = (t / 2).softmax(1), (s / 2).log_softmax(1)
    expected = 4 * (p * (p.log() - log_q)).sum(1).mean()  # T^2 KL(teacher || student) at T = 2
    torch.testing.assert_close(L.distillation_loss(s, t, 2.0), expected)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: L.info_nce([[0.0]], torch.zeros(1, 1)), TypeError, "query"),
    (lambda: L.info_nce(torch.zeros(3, 4), torch.zeros(2, 4)), ValueError, "key"),
    (lambda: L.clip_loss(torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(2)), ValueError, "logit_scale"),
    (lambda: L.clip_loss(torch.zeros(3, 4), torch.zeros(3, 4), 1.0, key_id=torch.zeros(2, dtype=torch.long)),
     ValueError, "key_id"),
    (lambda: L.clip_loss(torch.zeros(3, 4), torch.zeros(3, 4), 1.0, key_id=torch.zeros(3)), TypeError, "key_id"),
    (lambda: L.clip_loss(torch.zeros(3, 4), torch.zeros(3, 4), 1.0, key_id=[0, 1, 2]), TypeError, "key_id"),
])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
