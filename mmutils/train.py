"""The training loop of every notebook: a fit by steps with a text progress bar and a history.

* :func:`fit` – ``max_steps`` optimizer steps (or ``max_seconds``) of ``loss_fn(model, batches(step))``.
* :func:`random_batches` – random mini-batches indexed from tensors that stay on the device.
* :func:`linear_cooldown` – a constant learning rate, then a linear cool-down over the last steps.
* :class:`History` – every logged loss, extra metric and evaluation.
"""
from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm import tqdm

from .checks import check_float, check_instance, check_int, check_tensor
from .runtime import Budget, evaluating

__all__ = ["History", "fit", "linear_cooldown", "random_batches"]

_FLUSH_SECONDS = 0.5  # how often logged tensors are copied to Python floats (one device sync)


@dataclass
class History:
    """What :func:`fit` logged.

    ``steps[i]`` is the number of optimizer steps done when ``losses[i]`` was
    computed (1, 2, ...); ``metrics[name][i]`` are the extra scalars returned by
    the loss function at the same steps; ``evals`` holds ``(step, {name: value})``
    for every evaluation; ``seconds`` is the wall-clock time of the whole fit.
    """

    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    evals: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.steps)

    def eval_series(self, name: str) -> tuple[list[int], list[float]]:
        """The steps and values of evaluation metric ``name``: two lists of equal length."""
        pts = [(s, d[name]) for s, d in self.evals if name in d]
        if not pts:
            raise KeyError(f"name {name!r} is not an evaluation metric; known: {self.eval_names()}")
        return [p[0] for p in pts], [p[1] for p in pts]

    def eval_names(self) -> list[str]:
        """Names of the evaluation metrics, in the order first logged."""
        names: dict[str, None] = {}
        for _, d in self.evals:
            names.update(dict.fromkeys(d))
        return list(names)

    def last(self, name: str = "loss") -> float:
        """The last logged value of ``name``: ``"loss"``, an extra metric, or an evaluation metric.

        Raises ``KeyError`` if ``name`` was never logged, ``ValueError`` if nothing was logged yet.
        """
        if name == "loss":
            if not self.losses:
                raise ValueError("name 'loss': nothing was logged yet")
            return self.losses[-1]
        if name in self.metrics:
            return self.metrics[name][-1]
        for _, d in reversed(self.evals):
            if name in d:
                return d[name]
        known = ["loss", *self.metrics, *self.eval_names()]
        raise KeyError(f"name {name!r} was not logged; known: {known}")

    def as_dict(self) -> dict[str, Any]:
        """A plain, JSON-friendly dict with the fields of the history."""
        return {"steps": list(self.steps), "losses": list(self.losses),
                "metrics": {k: list(v) for k, v in self.metrics.items()},
                "evals": [[s, dict(d)] for s, d in self.evals], "seconds": self.seconds}


# ---- fit ---------------------------------------------------------------------
def _batch_source(batches) -> Callable[[int], Any]:
    """``batches`` as ``step -> batch``: an iterator ends training when exhausted, a re-iterable is cycled."""
    if isinstance(batches, torch.Tensor):
        raise TypeError("batches must be a callable step -> batch or an iterator of batches, got a Tensor; "
                        "use random_batches(tensor, batch_size=...)")
    if callable(batches):
        return batches
    if isinstance(batches, Iterator):
        return lambda step: next(batches)
    if isinstance(batches, Iterable):
        state = {"it": iter(batches)}

        def from_iterable(step):
            try:
                return next(state["it"])
            except StopIteration:
                state["it"] = iter(batches)
                return next(state["it"])  # an empty iterable ends training

        return from_iterable
    raise TypeError(f"batches must be a callable step -> batch or an iterator of batches, "
                    f"got {type(batches).__name__}")


def _split_loss(out, step: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """The loss (a scalar tensor) and the extra values to log from what ``loss_fn`` returned."""
    extras = {}
    if isinstance(out, Mapping):
        if "loss" not in out:
            raise ValueError(f"loss_fn returned a dict without a 'loss' key (keys: {list(out)})")
        extras = {k: v for k, v in out.items() if k != "loss"}
        out = out["loss"]
    if check_instance("loss_fn's loss", out, torch.Tensor).numel() != 1:
        raise ValueError(f"loss_fn must return a scalar loss, got shape {tuple(out.shape)} at step {step}")
    return out.reshape(()), extras


def _as_float(v) -> float:
    return float(v.detach().float().item()) if isinstance(v, torch.Tensor) else float(v)


def _run_eval(model: torch.nn.Module, eval_fn: Callable) -> dict[str, float]:
    """``eval_fn(model)`` in eval mode without gradients, as a dict of floats (a number is named "eval")."""
    with evaluating(model):
        out = eval_fn(model)
    return {str(k): _as_float(v) for k, v in out.items()} if isinstance(out, Mapping) else {"eval": _as_float(out)}


def fit(model: torch.nn.Module, loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor | Mapping[str, Any]],
        batches: Callable[[int], Any] | Iterable, *, max_steps: int | None = None, max_seconds: float | None = None,
        optimizer: torch.optim.Optimizer | None = None, lr: float = 1e-3,
        eval_fn: Callable[[torch.nn.Module], Mapping[str, float] | float] | None = None,
        eval_every: int | None = None, progress: bool = True, desc: str = "train", grad_clip: float | None = None,
        scheduler: Any | None = None) -> History:
    """Train ``model`` by gradient descent on ``loss_fn`` for a step or time budget.

    Each step draws ``batch = batches(step)`` (``step`` counts from 0; an iterator is advanced instead), computes
    ``loss_fn(model, batch)`` (a scalar tensor, or a dict with ``"loss"`` and extra scalars to log), back-propagates,
    clips the gradient norm to ``grad_clip`` if given, and steps the optimizer (AdamW, Loshchilov & Hutter 2019,
    with learning rate ``lr`` when ``optimizer`` is None) and ``scheduler`` (if given, once per step).

    ``eval_fn(model)`` (a number or a dict of numbers) runs in eval mode under ``torch.no_grad()`` every
    ``eval_every`` steps and after the last step; the model's original mode is restored at the end. A non-finite
    loss raises ``FloatingPointError``. Training stops after ``max_steps`` steps or ``max_seconds`` seconds
    (whichever comes first; at least one is required) or when an iterator of batches runs out. Progress is a
    plain text ``tqdm`` bar on stdout. Returns a :class:`History`.
    """
    check_instance("model", model, torch.nn.Module)
    source = _batch_source(batches)
    budget = Budget(max_steps=max_steps, max_seconds=max_seconds)  # checks them; at least one is required
    if grad_clip is not None:
        check_float("grad_clip", grad_clip, positive=True)
    if eval_every is not None and check_int("eval_every", eval_every, min=1) and eval_fn is None:
        raise ValueError("eval_every was given but eval_fn is None")
    if optimizer is None:
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("model has no trainable parameters (requires_grad=True); nothing to fit")
        optimizer = torch.optim.AdamW(params, lr=check_float("lr", lr, positive=True))
    else:
        check_instance("optimizer", optimizer, torch.optim.Optimizer)
    clip_params = [p for g in optimizer.param_groups for p in g["params"]]

    history = History()
    pending: list[tuple[int, torch.Tensor, dict[str, Any]]] = []

    def flush() -> None:  # copy pending logged tensors to floats (one sync) and check them
        if not pending:
            return
        values = torch.stack([loss for _, loss, _ in pending]).float().tolist()
        for (step, _, extras), value in zip(pending, values):
            if not math.isfinite(value):
                pending.clear()
                raise FloatingPointError(f"loss is {value} at step {step}; try a smaller lr or set grad_clip")
            history.steps.append(step)
            history.losses.append(value)
            for k, v in extras.items():
                history.metrics.setdefault(k, []).append(_as_float(v))
        pending.clear()

    was_training = model.training
    bar = tqdm(total=max_steps, desc=desc, disable=not progress, file=sys.stdout, mininterval=1.0, ncols=90,
               ascii=False, leave=True)
    budget.start()
    last_flush = time.perf_counter()
    step = 0
    try:
        model.train()
        while not budget.exhausted(step):
            try:
                batch = source(step)
            except StopIteration:
                break
            loss, extras = _split_loss(loss_fn(model, batch), step + 1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(clip_params, grad_clip)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
                extras["lr"] = optimizer.param_groups[0]["lr"]
            step += 1
            pending.append((step, loss.detach(), {k: (v.detach() if isinstance(v, torch.Tensor) else v)
                                                  for k, v in extras.items()}))
            now = time.perf_counter()
            if now - last_flush >= _FLUSH_SECONDS:
                flush()
                last_flush = now
                bar.set_postfix(loss=f"{history.losses[-1]:.4f}", refresh=False)
            bar.update(1)
            if eval_every is not None and step % eval_every == 0:
                flush()
                history.evals.append((step, _run_eval(model, eval_fn)))
        flush()
        if eval_fn is not None and step > 0 and (not history.evals or history.evals[-1][0] != step):
            history.evals.append((step, _run_eval(model, eval_fn)))
        history.seconds = budget.elapsed
        if history.losses:
            post = {"loss": f"{history.losses[-1]:.4f}"}
            if history.evals:
                post.update({k: f"{v:.3g}" for k, v in list(history.evals[-1][1].items())[:2]})
            bar.set_postfix(post, refresh=False)  # shown by close(): the bar's final state
    finally:
        bar.close()
        model.train(was_training)
    return history


# ---- Batches -----------------------------------------------------------------
def random_batches(*tensors: torch.Tensor, batch_size: int, seed: int = 0, generator: torch.Generator | None = None,
                   device: torch.device | str | None = None) -> Callable[[int], tuple[torch.Tensor, ...]]:
    """Random mini-batches from in-memory tensors, for :func:`fit`.

    ``tensors`` all have the same first dimension ``n``; they are moved to
    ``device`` once (if given) and stay there. Each call ``batches(step)`` draws
    ``batch_size`` row indices uniformly with replacement by ``torch.randint``
    from a CPU ``torch.Generator`` (seeded with ``seed`` unless ``generator`` is
    given) and returns the tuple ``(t[idx] for t in tensors)``. Draws follow the
    order of calls (``step`` is accepted for :func:`fit` and ignored), so the same
    seed gives the same batches on any device.
    """
    for i, t in enumerate(tensors):
        check_tensor(f"tensors[{i}]", t)
    lengths = [len(t) for t in tensors]
    if len(set(lengths)) != 1 or lengths[0] == 0:
        raise ValueError(f"tensors must be non-empty and all have the same length (first dim), got {lengths}")
    n = lengths[0]
    batch_size = check_int("batch_size", batch_size, min=1)
    if generator is None:
        generator = torch.Generator().manual_seed(check_int("seed", seed, min=0))
    else:
        check_instance("generator", generator, torch.Generator)
    if device is not None:
        tensors = tuple(t.to(device) for t in tensors)
    target = tensors[0].device

    def batches(step: int = 0) -> tuple[torch.Tensor, ...]:
        idx = torch.randint(n, (batch_size,), generator=generator).to(target)
        return tuple(t[idx] for t in tensors)

    return batches


# ---- Learning-rate schedule --------------------------------------------------
def linear_cooldown(optimizer: torch.optim.Optimizer, total_steps: int, *, fraction: float = 0.3,
                    floor: float = 0.0, warmup: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """A constant learning rate, then a linear cool-down over the last ``fraction`` of ``total_steps``.

    The factor on the optimizer's learning rate at step ``s`` is
    ``min(1, max(floor, (total_steps - s) / (fraction * total_steps)))``: 1 until the cool-down starts, then
    falling linearly, to 0 at ``total_steps``; with ``floor > 0`` it stops at ``floor`` and stays there. With
    ``warmup > 0`` the factor is also at most ``(s + 1) / warmup``: a linear warm-up over the first ``warmup``
    steps. This is the "warmup-stable-decay" (WSD) shape: Hägele et al. (NeurIPS 2024, *Scaling Laws and
    Compute-Optimal Training Beyond Fixed Training Durations*) find, for language models, that a constant rate
    followed by a short cool-down matches a cosine schedule of the same length. Step the returned scheduler once
    per optimizer step (as :func:`fit` does with ``scheduler=``).
    """
    check_instance("optimizer", optimizer, torch.optim.Optimizer)
    total_steps = check_int("total_steps", total_steps, min=1)
    fraction = check_float("fraction", fraction, max=1.0, positive=True)
    floor = check_float("floor", floor, min=0.0, max=1.0)
    warmup = check_int("warmup", warmup, min=0)

    def factor(step: int) -> float:
        rise = (step + 1) / warmup if warmup else 1.0
        return min(1.0, rise, max(floor, (total_steps - step) / (fraction * total_steps)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
