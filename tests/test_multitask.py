"""Closed-form, reference and bad-input tests of mmutils.multitask."""
import math

import pytest
import torch
from torch import nn

from mmutils import multitask as MT


def _pcgrad_loop(grads, order):
    """PCGrad with plain Python floats: task i visits the other tasks in ``order[i]``."""
    rows = grads.double().tolist()
    out = [0.0] * len(rows[0])
    for i, g in enumerate(rows):
        g = list(g)
        for j in order[i]:
            if j == i:
                continue
            dot = sum(a * b for a, b in zip(g, rows[j]))
            if dot < 0:
                norm2 = sum(b * b for b in rows[j])
                g = [a - dot / norm2 * b for a, b in zip(g, rows[j])]
        out = [o + a for o, a in zip(out, g)]
    return torch.tensor(out, dtype=torch.float64)


def test_weighted_sum_equal_and_fixed_weights():
    losses = torch.tensor([0.5, 2.0, 300.0])
    assert MT.weighted_sum(losses).item() == pytest.approx(302.5)
    assert MT.weighted_sum(losses, torch.tensor([2.0, 1.0, 0.01])).item() == pytest.approx(1.0 + 2.0 + 3.0)
    # a list of scalar tensors works too
    assert MT.weighted_sum([torch.tensor(1.0), torch.tensor(2.0)]).item() == pytest.approx(3.0)


def test_uncertainty_weighted_loss_closed_form_and_optimum():
    losses = torch.tensor([0.3, 4.0, 2500.0])
    s = torch.tensor([0.0, 1.0, -2.0])
    expected = sum(math.exp(-si) * li + si for li, si in zip(losses.tolist(), s.tolist()))
    assert MT.uncertainty_weighted_loss(losses, s).item() == pytest.approx(expected, rel=1e-6)
    # the minimum over s is at s = log L, where every weighted term exp(-s) L equals 1
    s = losses.log().requires_grad_()
    MT.uncertainty_weighted_loss(losses, s).backward()
    torch.testing.assert_close(s.grad, torch.zeros(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.exp(-s.detach()) * losses, torch.ones(3))


def test_uncertainty_weighting_module_learns_the_log_losses():
    losses = torch.tensor([0.05, 1.0, 400.0])
    weighting = MT.UncertaintyWeighting(3)
    torch.testing.assert_close(weighting.weights, torch.ones(3))
    opt = torch.optim.SGD(weighting.parameters(), lr=0.05)
    start = MT.UncertaintyWeighting(3, init=losses.log())  # started at the optimum
    torch.testing.assert_close(start(losses), torch.tensor(3.0) + losses.log().sum())
    weighting.log_vars.data = losses.log() + torch.tensor([0.5, -0.5, 0.3])  # near the optimum
    for _ in range(500):
        opt.zero_grad()
        weighting(losses).backward()
        opt.step()
    torch.testing.assert_close(weighting.log_vars.detach(), losses.log(), atol=1e-3, rtol=0)
    torch.testing.assert_close(weighting.weights, 1 / losses, rtol=1e-3, atol=0)


def test_task_gradients_are_one_row_per_task():
    w = nn.Parameter(torch.tensor([1.0, 2.0]))
    b = nn.Parameter(torch.tensor(3.0))
    losses = torch.stack([(w ** 2).sum(), 5 * w[0], b * 0 + w[1] * b])
    grads = MT.task_gradients(losses, [w, b])
    expected = torch.tensor([[2.0, 4.0, 0.0], [5.0, 0.0, 0.0], [0.0, 3.0, 2.0]])
    torch.testing.assert_close(grads, expected)
    # a parameter a task does not reach: zero
    unused = nn.Parameter(torch.ones(2))
    assert MT.task_gradients([(w * 1.0).sum()], [w, unused])[0, 2:].abs().sum() == 0


def test_pcgrad_closed_forms():
    # orthogonal gradients: unchanged, the sum is the ordinary gradient
    g = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    torch.testing.assert_close(MT.pcgrad(g), g.sum(0))
    # exactly opposite gradients: each loses all of itself, the sum is zero
    g = torch.tensor([[1.0, -2.0], [-1.0, 2.0]])
    torch.testing.assert_close(MT.pcgrad(g), torch.zeros(2))
    # two conflicting gradients: g1 projected on the normal plane of g2 and vice versa
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    p1 = g1 - (g1 @ g2) / (g2 @ g2) * g2  # (0.5, 0.5)
    p2 = g2 - (g2 @ g1) / (g1 @ g1) * g1  # (0, 1)
    torch.testing.assert_close(MT.pcgrad(torch.stack([g1, g2])), p1 + p2)
    assert (p1 @ g2).abs() < 1e-6 and (p2 @ g1).abs() < 1e-6
    # one task: its own gradient
    torch.testing.assert_close(MT.pcgrad(g1[None]), g1)


def test_pcgrad_two_tasks_never_point_against_either():
    # Yu et al. (2020): with two tasks the PCGrad update has a non-negative dot product with both gradients
    gen = torch.Generator().manual_seed(3)
    for _ in range(20):
        g1 = torch.randn(6, generator=gen)
        g2 = -3 * g1 + torch.randn(6, generator=gen)  # conflicting, and three times larger
        out = MT.pcgrad(torch.stack([g1, g2]))
        assert out @ g1 >= -1e-5 and out @ g2 >= -1e-5
        # the plain sum does point against the smaller one
        assert (g1 + g2) @ g1 < 0


def test_uncertainty_weighting_optimum_matches_kendalls_likelihood_forms():
    # regression 1/(2 sigma^2) L + log sigma and classification 1/sigma^2 L + log sigma, with s = log sigma^2:
    # at their optimum over s both weight L by 1 / (2 L), half the 1 / L of the form used here
    L = torch.tensor(7.0)
    s = torch.linspace(-5, 10, 150001)
    regression = 0.5 * torch.exp(-s) * L + 0.5 * s
    classification = torch.exp(-s) * L + 0.5 * s
    for loss, factor in ((regression, 0.5), (classification, 1.0)):
        s_opt = s[loss.argmin()]
        assert (factor * torch.exp(-s_opt)).item() == pytest.approx(1 / (2 * L.item()), rel=1e-3)
    ours = torch.exp(-s) * L + s
    assert torch.exp(-s[ours.argmin()]).item() == pytest.approx(1 / L.item(), rel=1e-3)


def test_pcgrad_matches_a_loop_with_the_same_random_order():
    gen = torch.Generator().manual_seed(0)
    grads = torch.randn(4, 9, generator=gen)
    grads[1] = -grads[0] + 0.1 * torch.randn(9, generator=gen)  # a strong conflict
    # the order pcgrad draws: one permutation per task, from a generator seeded alike
    order_gen = torch.Generator().manual_seed(7)
    order = [torch.randperm(4, generator=order_gen).tolist() for _ in range(4)]
    expected = _pcgrad_loop(grads, order)
    got = MT.pcgrad(grads, torch.Generator().manual_seed(7))
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)
    # PCGrad does change something here (else the test would be vacuous)
    assert (got - grads.sum(0)).norm() > 0.1


def test_pcgrad_backward_sets_projected_shared_grads_and_ordinary_head_grads():
    torch.manual_seed(0)
    trunk, head_a, head_b = nn.Linear(3, 4), nn.Linear(4, 1), nn.Linear(4, 1)
    x = torch.randn(8, 3)
    h = trunk(x)
    losses = torch.stack([head_a(h).pow(2).mean(), -head_b(h).mean()])
    shared = list(trunk.parameters())
    cos = MT.pcgrad_backward(losses, shared, generator=torch.Generator().manual_seed(1))
    assert cos.shape == (2, 2) and torch.allclose(cos.diagonal(), torch.ones(2))
    # the shared parameters: the PCGrad combination
    h = trunk(x)
    again = torch.stack([head_a(h).pow(2).mean(), -head_b(h).mean()])
    grads = MT.task_gradients(again, shared)
    expected = MT.pcgrad(grads, torch.Generator().manual_seed(1))
    torch.testing.assert_close(torch.cat([p.grad.flatten() for p in shared]), expected)
    # a head: the ordinary gradient of the sum
    head_grad = head_a.weight.grad.clone()
    head_a.weight.grad = None
    again.sum().backward()
    torch.testing.assert_close(head_a.weight.grad, head_grad)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: MT.weighted_sum([]), ValueError, "losses must hold at least one"),
        (lambda: MT.weighted_sum(torch.ones(2, 2)), ValueError, "losses must have 1 dimensions"),
        (lambda: MT.weighted_sum([torch.ones(2)]), ValueError, r"losses\[0\] must be a scalar"),
        (lambda: MT.weighted_sum(torch.ones(3), torch.ones(2)), ValueError, "weights must have size 3"),
        (lambda: MT.weighted_sum(torch.tensor([1, 2])), TypeError, "losses must be a floating-point"),
        (lambda: MT.uncertainty_weighted_loss(torch.ones(3), torch.zeros(2)), ValueError, "log_vars must have size 3"),
        (lambda: MT.UncertaintyWeighting(0), ValueError, "n_tasks must be an int"),
        (lambda: MT.UncertaintyWeighting(2, init=torch.zeros(3)), ValueError, "init must have size 2"),
        (lambda: MT.pcgrad(torch.ones(3)), ValueError, "grads must have 2 dimensions"),
        (lambda: MT.pcgrad(torch.ones(0, 3)), ValueError, "grads must hold at least one"),
        (lambda: MT.pcgrad(torch.ones(2, 3), generator=0), TypeError, "generator must be a Generator"),
        (lambda: MT.task_gradients(torch.ones(2), torch.ones(3)), TypeError, "params must be a sequence"),
        (lambda: MT.task_gradients(torch.ones(2), []), ValueError, "params must hold at least one"),
        (lambda: MT.task_gradients(torch.ones(2), [torch.ones(3)]), ValueError, r"params\[0\] must require"),
        (lambda: MT.pcgrad_backward(torch.ones(2, requires_grad=True), [nn.Parameter(torch.ones(1))],
                                    total=torch.ones(2)), ValueError, "total must be a scalar"),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()
