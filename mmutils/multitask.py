"""Multi-task learning (chapter 15): one shared backbone, several task heads, and how their losses are combined.

* :func:`weighted_sum` – fixed weights: ``sum_i w_i L_i`` (equal weights by default).
* :func:`uncertainty_weighted_loss` and :class:`UncertaintyWeighting` – Kendall, Gal and Cipolla (2018): one learned
  log-variance ``s_i`` per task, ``sum_i exp(-s_i) L_i + s_i``.
* :func:`task_gradients` – the gradient of each task's loss with respect to the shared parameters, one backward pass
  per task, as a (T, P) matrix.
* :func:`pcgrad` and :func:`pcgrad_backward` – PCGrad (Yu et al., 2020): each task's gradient loses its component
  along every other task's gradient that it conflicts with (negative dot product) before they are summed.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .checks import check_instance, check_int, check_tensor

__all__ = ["weighted_sum", "uncertainty_weighted_loss", "UncertaintyWeighting", "task_gradients", "pcgrad",
           "pcgrad_backward"]


def _check_losses(losses) -> torch.Tensor:
    """``losses`` as a (T,) float tensor: a 1-d tensor or a sequence of scalar tensors."""
    if isinstance(losses, (list, tuple)):
        if not losses:
            raise ValueError("losses must hold at least one task loss, got an empty sequence")
        for i, loss in enumerate(losses):
            if check_tensor(f"losses[{i}]", loss, dtype="float").numel() != 1:
                raise ValueError(f"losses[{i}] must be a scalar, got shape {tuple(loss.shape)}")
        return torch.stack([loss.reshape(()) for loss in losses])
    check_tensor("losses", losses, 1, dtype="float")
    if losses.numel() == 0:
        raise ValueError("losses must hold at least one task loss, got an empty tensor")
    return losses


def weighted_sum(losses: torch.Tensor | Sequence[torch.Tensor], weights: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_i weights[i] * losses[i]``: fixed loss weights, equal (all 1) when ``weights`` is None.

    ``losses``: (T,) task losses (or a sequence of T scalar tensors); ``weights``: (T,). Returns a scalar. With equal
    weights a task whose loss is 100 times larger gets 100 times the say in every shared parameter's gradient.
    """
    losses = _check_losses(losses)
    if weights is None:
        return losses.sum()
    check_tensor("weights", weights, 1, size={0: len(losses)}, dtype="float")
    return (weights.to(losses) * losses).sum()


def uncertainty_weighted_loss(losses: torch.Tensor | Sequence[torch.Tensor], log_vars: torch.Tensor) -> torch.Tensor:
    """Kendall, Gal and Cipolla (2018): ``sum_i exp(-s_i) L_i + s_i`` with ``s_i = log_vars[i]``.

    ``losses``: (T,) task losses (or a sequence of T scalar tensors); ``log_vars``: (T,) learned log-variances
    ``s_i = log sigma_i^2``. Returns a scalar. For fixed ``L_i`` the minimum over ``s_i`` is at ``s_i = log L_i``,
    where the task's weighted term ``exp(-s_i) L_i`` equals 1: every task gets the same say, whatever the units of
    its loss. This is the form used for classification and regression alike in most implementations. The paper
    derives its terms from likelihoods: ``L_i / (2 sigma_i^2) + log sigma_i = (exp(-s_i) L_i + s_i) / 2`` for a
    Gaussian regression task, and approximately ``L_i / sigma_i^2 + log sigma_i = exp(-s_i) L_i + s_i / 2`` for a
    softmax classification task; at their optimum over ``s_i`` both give ``L_i`` the weight ``1 / (2 L_i)``, half of
    this form's ``1 / L_i``.
    """
    losses = _check_losses(losses)
    check_tensor("log_vars", log_vars, 1, size={0: len(losses)}, dtype="float")
    return (torch.exp(-log_vars) * losses + log_vars).sum()


class UncertaintyWeighting(nn.Module):
    """Learned task weights of Kendall et al. (2018): one log-variance ``s_i`` per task, ``forward(losses)`` returns
    ``sum_i exp(-s_i) L_i + s_i`` (:func:`uncertainty_weighted_loss`).

    ``n_tasks``: T. ``init``: the starting ``s`` (T,), zeros (all weights 1) when None. Starting at the log of each
    task's first loss puts ``s`` at its optimum for those losses: with Adam this matters when a loss starts
    thousands of times larger than it ends, because Adam's second-moment estimate remembers the huge first
    gradients of ``s`` for about ``1 / (1 - beta2)`` steps and keeps its later steps small. ``weights``: the
    current ``exp(-s)`` (T,), detached.
    """

    def __init__(self, n_tasks: int, init: torch.Tensor | None = None):
        super().__init__()
        n_tasks = check_int("n_tasks", n_tasks, min=1)
        if init is None:
            init = torch.zeros(n_tasks)
        else:
            check_tensor("init", init, 1, size={0: n_tasks}, dtype="float")
        self.log_vars = nn.Parameter(init.detach().float().clone())  # (T,)

    @property
    def weights(self) -> torch.Tensor:
        """The current task weights ``exp(-s_i)``, (T,), detached."""
        return torch.exp(-self.log_vars.detach())

    def forward(self, losses: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        return uncertainty_weighted_loss(losses, self.log_vars)


def _check_params(params) -> list[torch.Tensor]:
    if isinstance(params, torch.Tensor):
        raise TypeError("params must be a sequence of tensors (e.g. list(model.trunk.parameters())), got a Tensor")
    check_instance("params", params, (list, tuple))
    if not params:
        raise ValueError("params must hold at least one tensor, got an empty sequence")
    for i, p in enumerate(params):
        if not check_tensor(f"params[{i}]", p).requires_grad:
            raise ValueError(f"params[{i}] must require gradients")
    return list(params)


def task_gradients(losses: torch.Tensor | Sequence[torch.Tensor], params: Sequence[torch.Tensor]) -> torch.Tensor:
    """The gradient of each task's loss with respect to the shared ``params``, flattened: (T, P).

    ``losses``: (T,) task losses (or T scalar tensors) that share one graph; ``params``: the shared parameters
    (P numbers in all). One backward pass per task (the graph is retained): this is what a gradient method costs
    beyond an ordinary step, which needs a single backward pass of the summed loss. A parameter that a task does
    not reach gets a zero gradient for that task.
    """
    losses = _check_losses(losses)
    params = _check_params(params)
    rows = []
    for loss in losses:
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(params, grads)]))
    return torch.stack(rows)  # (T, P)


def pcgrad(grads: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """PCGrad (Yu et al., 2020): project conflicting task gradients, then sum them.

    ``grads``: (T, P), one task gradient per row. For each task ``i``, its gradient ``g_i`` is taken through the
    other tasks ``j`` in a random order (drawn from ``generator``); whenever ``g_i . g_j < 0`` it loses its component
    along ``g_j``: ``g_i <- g_i - (g_i . g_j) / |g_j|^2 g_j``, where ``g_j`` is the original gradient of task j.
    Returns the sum of the projected gradients, (P,). Gradients that do not conflict are left unchanged (their sum
    is the ordinary gradient of the summed loss); two exactly opposite gradients cancel; with two tasks the sum has a
    non-negative dot product with each task's gradient. As in the paper's supervised experiments, pass the gradients
    of the shared parameters only (:func:`pcgrad_backward` does).
    """
    check_tensor("grads", grads, 2, dtype="float")
    if len(grads) == 0:
        raise ValueError("grads must hold at least one task gradient, got shape (0, P)")
    if generator is not None:
        check_instance("generator", generator, torch.Generator)
    n = len(grads)
    projected = grads.clone()
    for i in range(n):
        g = projected[i]  # (P,): a view, changed in place
        for j in torch.randperm(n, generator=generator).tolist():
            if j == i:
                continue
            dot = g @ grads[j]
            if dot < 0:
                g -= dot / grads[j].square().sum() * grads[j]
    return projected.sum(0)  # (P,)


def pcgrad_backward(losses: torch.Tensor | Sequence[torch.Tensor], shared: Sequence[torch.Tensor],
                    total: torch.Tensor | None = None, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """One PCGrad backward step: ``.grad`` of the ``shared`` parameters from :func:`pcgrad`, every other from ``total``.

    ``losses``: (T,) (weighted) task losses; ``shared``: the parameters every task uses (the backbone); ``total``:
    the scalar whose ordinary gradient the other parameters (task heads, loss weights) get, ``losses.sum()`` when
    None. Costs T + 1 backward passes (T task gradients on the shared parameters, then ``total``, which goes through
    the shared parameters too; their gradient from it is then replaced). Accumulates
    into ``.grad`` of the non-shared parameters like ``total.backward()`` and overwrites that of ``shared``. Returns
    the (T, T) cosine similarities of the task gradients before projection (negative: conflicting).
    """
    losses = _check_losses(losses)
    shared = _check_params(shared)
    if total is None:
        total = losses.sum()
    elif check_tensor("total", total, dtype="float").numel() != 1:
        raise ValueError(f"total must be a scalar, got shape {tuple(total.shape)}")
    grads = task_gradients(losses, shared)  # (T, P)
    combined = pcgrad(grads, generator)  # (P,)
    total.backward()
    offset = 0
    for p in shared:
        p.grad = combined[offset:offset + p.numel()].view_as(p).clone()
        offset += p.numel()
    unit = grads / grads.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return unit @ unit.t()  # (T, T)
