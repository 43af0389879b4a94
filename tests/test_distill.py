"""Closed-form, reference and bad-input tests of mmutils.distill."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmutils import distill as D
from mmutils.nn import losses


def _kl_loop(p_logits, q_logits, temperature):
    """Mean over rows of KL(softmax(p / T) || softmax(q / T)), one row and one class at a time, in float64."""
    total = 0.0
    for p_row, q_row in zip(p_logits.double().tolist(), q_logits.double().tolist()):
        zp = math.log(sum(math.exp(v / temperature) for v in p_row))
        zq = math.log(sum(math.exp(v / temperature) for v in q_row))
        total += sum(math.exp(a / temperature - zp) * ((a / temperature - zp) - (b / temperature - zq))
                     for a, b in zip(p_row, q_row))
    return total / len(p_logits)


def test_distillation_loss_is_the_one_of_nn_losses():
    assert D.distillation_loss is losses.distillation_loss  # one definition, re-exported


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 10.0])
def test_distillation_loss_is_t2_times_kl_of_softened_distributions(temperature):
    gen = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 5, generator=gen) * 3, torch.randn(6, 5, generator=gen) * 3
    expected = temperature ** 2 * _kl_loop(t, s, temperature)
    assert D.distillation_loss(s, t, temperature).item() == pytest.approx(expected, rel=1e-5)


def test_distillation_loss_gradient_is_t_times_softened_difference():
    # d/dz_s [T^2 KL(p_T || q_T)] = T (q_T - p_T) / B: the T^2 factor undoes the 1/T^2 of the softened gradients
    gen = torch.Generator().manual_seed(1)
    s, t = torch.randn(4, 7, generator=gen).requires_grad_(), torch.randn(4, 7, generator=gen)
    D.distillation_loss(s, t, 3.0).backward()
    expected = 3.0 * ((s.detach() / 3).softmax(1) - (t / 3).softmax(1)) / 4
    torch.testing.assert_close(s.grad, expected)


def test_distillation_loss_gradient_does_not_shrink_with_the_temperature():
    # Hinton et al. (2015): at high T, with zero-mean logits, the gradient tends to (z_s - z_t) / (C B)
    gen = torch.Generator().manual_seed(2)
    s = torch.randn(3, 10, generator=gen)
    t = torch.randn(3, 10, generator=gen)
    s, t = s - s.mean(1, keepdim=True), t - t.mean(1, keepdim=True)
    limit = (s - t) / (10 * 3)
    for temperature in (100.0, 1000.0):
        z = s.clone().requires_grad_()
        D.distillation_loss(z, t, temperature).backward()
        torch.testing.assert_close(z.grad, limit, atol=0.1 / temperature, rtol=0)  # error O(1/T)
    # without the T^2 factor the same gradient would be T^2 times smaller: 1e-6 of it at T = 1000
    assert limit.abs().max() > 1e-3


def test_soft_target_loss_closed_form():
    gen = torch.Generator().manual_seed(3)
    s, t = torch.randn(5, 4, generator=gen), torch.randn(5, 4, generator=gen)
    labels = torch.tensor([2, -1, 0, -1, -1])
    ce = (F.cross_entropy(s[[0]], labels[[0]]) + F.cross_entropy(s[[2]], labels[[2]])) / 5  # sum / B
    expected = losses.distillation_loss(s, t, 2.0) + 0.5 * ce
    torch.testing.assert_close(D.soft_target_loss(s, t, labels, 2.0, hard_weight=0.5), expected)
    # no label at all: the soft term alone (no NaN from an empty cross-entropy)
    none = torch.full((5,), -1)
    torch.testing.assert_close(D.soft_target_loss(s, t, none, 2.0), losses.distillation_loss(s, t, 2.0))
    # the student equal to the teacher, no labels: zero
    assert D.soft_target_loss(t, t, none).item() == pytest.approx(0.0, abs=1e-6)


def _affinity_loop(si, st, ti, tt, s_scale, t_scale):
    """Both directions, row by row: mean KL(softmax(teacher row) || softmax(student row)), averaged."""
    def unit(x):
        return F.normalize(x.double(), dim=1)

    s = s_scale * unit(si) @ unit(st).t()
    t = t_scale * unit(ti) @ unit(tt).t()
    total = 0.0
    for a, b in ((s, t), (s.t(), t.t())):
        total += _kl_loop(b, a, 1.0) / 2
    return total


def test_affinity_mimicking_loss_reference_with_different_widths():
    gen = torch.Generator().manual_seed(4)
    si, st = torch.randn(6, 8, generator=gen), torch.randn(6, 8, generator=gen)
    ti, tt = torch.randn(6, 32, generator=gen), torch.randn(6, 32, generator=gen)
    got = D.affinity_mimicking_loss(si, st, ti, tt, math.log(10.0), torch.tensor(math.log(50.0)))
    assert got.item() == pytest.approx(_affinity_loop(si, st, ti, tt, 10.0, 50.0), rel=1e-5)


def test_affinity_mimicking_loss_zero_when_student_equals_teacher():
    gen = torch.Generator().manual_seed(5)
    i, t = torch.randn(7, 16, generator=gen), torch.randn(7, 16, generator=gen)
    assert D.affinity_mimicking_loss(i, t, i, t, 2.0, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    # the embeddings are normalized inside: rescaling a row changes nothing
    scaled = D.affinity_mimicking_loss(3 * i, t, i, 0.5 * t, 2.0, 2.0)
    assert scaled.item() == pytest.approx(0.0, abs=1e-6)
    # a different temperature is a different similarity structure
    assert D.affinity_mimicking_loss(i, t, i, t, 1.0, 3.0).item() > 1e-3


def test_affinity_mimicking_loss_trains_only_the_student():
    gen = torch.Generator().manual_seed(6)
    si = torch.randn(4, 8, generator=gen).requires_grad_()
    ti = torch.randn(4, 8, generator=gen).requires_grad_()
    t = torch.randn(4, 8, generator=gen)
    D.affinity_mimicking_loss(si, t, ti, t, 2.0, 2.0).backward()
    assert si.grad is not None and si.grad.abs().sum() > 0
    assert ti.grad is None


def test_teacher_outputs_chunks_and_restores_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.5))
    model.train()
    x = torch.randn(10, 3)
    out = D.teacher_outputs(model, x, batch_size=3)
    assert model.training and not out.requires_grad
    model.eval()
    torch.testing.assert_close(out, model(x))


def test_teacher_outputs_several_inputs():
    class Add(nn.Module):
        def forward(self, a, b):
            return a + b

    a, b = torch.arange(5.0)[:, None], torch.ones(5, 1)
    torch.testing.assert_close(D.teacher_outputs(Add(), a, b, batch_size=2), a + b)


def test_parameter_count():
    assert D.parameter_count(nn.Linear(3, 4)) == 16
    assert D.parameter_count(nn.BatchNorm1d(4)) == 8  # weight and bias; running statistics are buffers


def test_best_time_is_the_minimum():
    calls = []
    seconds = D.best_time(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(calls) == 5 and 0 <= seconds < 0.1


@pytest.mark.parametrize("call, exc, match", [
    # wrong type of a tensor argument
    (lambda: D.soft_target_loss([[0.0]], torch.zeros(1, 1), torch.zeros(1, dtype=torch.long)), TypeError,
     "student_logits"),
    # labels of the wrong dtype, shape or range
    (lambda: D.soft_target_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2)), TypeError, "labels"),
    (lambda: D.soft_target_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3, dtype=torch.long)),
     ValueError, "labels"),
    (lambda: D.soft_target_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 3])), ValueError, "labels"),
    (lambda: D.soft_target_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, -2])), ValueError, "labels"),
    # teacher and student disagree on the classes
    (lambda: D.soft_target_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.tensor([0, 1])), ValueError,
     "teacher_logits"),
    # a temperature or weight out of range
    (lambda: D.soft_target_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1]), 0.0), ValueError,
     "temperature"),
    (lambda: D.soft_target_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1]), hard_weight=-1.0),
     ValueError, "hard_weight"),
    (lambda: D.distillation_loss(torch.zeros(2, 3), torch.zeros(2, 3), "4"), TypeError, "temperature"),
    # affinity mimicking: pairs that do not line up
    (lambda: D.affinity_mimicking_loss(torch.zeros(3, 4), torch.zeros(2, 4), torch.zeros(3, 8), torch.zeros(3, 8),
                                       1.0, 1.0), ValueError, "student_text"),
    (lambda: D.affinity_mimicking_loss(torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(2, 8), torch.zeros(2, 8),
                                       1.0, 1.0), ValueError, "teacher_image"),
    (lambda: D.affinity_mimicking_loss(torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(3, 8), torch.zeros(3, 6),
                                       1.0, 1.0), ValueError, "teacher_text"),
    (lambda: D.affinity_mimicking_loss(torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(3, 8), torch.zeros(3, 8),
                                       torch.zeros(2), 1.0), ValueError, "logit_scale"),
    (lambda: D.affinity_mimicking_loss(torch.zeros(3, 4, dtype=torch.long), torch.zeros(3, 4), torch.zeros(3, 8),
                                       torch.zeros(3, 8), 1.0, 1.0), TypeError, "student_image"),
    # teacher_outputs: not a model, no inputs, ragged inputs, bad batch size
    (lambda: D.teacher_outputs(lambda x: x, torch.zeros(2, 1)), TypeError, "teacher"),
    (lambda: D.teacher_outputs(nn.Identity()), ValueError, "inputs"),
    (lambda: D.teacher_outputs(nn.Identity(), torch.zeros(2, 1), torch.zeros(3, 1)), ValueError, "inputs"),
    (lambda: D.teacher_outputs(nn.Identity(), [0.0]), TypeError, r"inputs\[0\]"),
    (lambda: D.teacher_outputs(nn.Identity(), torch.zeros(2, 1), batch_size=0), ValueError, "batch_size"),
    # sizes and timings
    (lambda: D.parameter_count("model"), TypeError, "model"),
    (lambda: D.best_time(3), TypeError, "fn"),
    (lambda: D.best_time(lambda: None, repeats=0), ValueError, "repeats"),
    (lambda: D.best_time(lambda: None, warmup=-1), ValueError, "warmup"),
])
def test_bad_inputs(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
