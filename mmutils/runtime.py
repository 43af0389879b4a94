"""Reproducibility and measurement for the notebooks: seeding, device choice, time budgets and timing.

* :func:`seed_everything` – one call at the top of a notebook makes it repeatable.
* :func:`device` – the best available accelerator (CUDA, then Apple MPS), else the CPU.
* :class:`Budget` – a step and/or wall-clock budget for a training loop.
* :class:`Timer` – a context manager that measures wall-clock seconds.
* :func:`best_time` – the fastest of several timed calls (a latency that other programs disturb least).
* :func:`threads` – a block of code with a given number of intra-op threads.
* :func:`run_concurrently` – independent jobs (e.g. training runs of small models) side by side on the CPU's cores.
* :func:`peak_memory_mb` – the resident memory of this process, in MiB.
"""
from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from .checks import check_choice, check_float, check_instance, check_int

__all__ = ["seed_everything", "device", "evaluating", "Budget", "Timer", "best_time", "threads",
           "run_concurrently", "peak_memory_mb"]

_DEVICE_KINDS = ("cpu", "cuda", "mps")
SEED_VARIABLE = "MMUTILS_SEED"
DEVICE_VARIABLE = "MMUTILS_DEVICE"


def seed_everything(seed: int) -> int:
    """Seed every random number generator the course uses; returns the seed used.

    Seeds Python's :mod:`random`, NumPy's global generator, PyTorch (CPU and,
    when present, every CUDA device) and sets ``PYTHONHASHSEED`` for child
    processes. Deterministic-algorithm settings of PyTorch are left untouched.

    ``seed`` must be an int in ``[0, 2**32 - 1]``. If the environment variable
    ``MMUTILS_SEED`` holds such an int, it replaces ``seed`` and a line says so:
    ``make seeds`` uses it to re-run every notebook under other seeds, the
    course's stand-in for other machines.
    """
    seed = check_int("seed", seed, min=0, max=2**32 - 1)
    override = os.environ.get(SEED_VARIABLE, "").strip()
    if override:
        if not override.isdigit() or int(override) > 2**32 - 1:
            raise ValueError(f"{SEED_VARIABLE} must be an int in [0, 2**32 - 1], got {override!r}")
        seed = int(override)
        print(f"{SEED_VARIABLE}={seed}: using seed {seed} instead of the notebook's")
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return seed


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def device(prefer: str | None = None) -> torch.device:
    """The device to compute on.

    With ``prefer=None``: the kind named by the environment variable
    ``MMUTILS_DEVICE`` if it is set (e.g. ``MMUTILS_DEVICE=cpu`` runs a whole
    notebook on the CPU, where its asserts were checked), else CUDA if available,
    else Apple MPS if available, else the CPU. ``prefer`` (``"cpu"``, ``"cuda"`` or
    ``"mps"``) forces a kind; asking for an accelerator that is not there raises
    ``ValueError``.

    Returns a :class:`torch.device`.
    """
    if prefer is None and os.environ.get(DEVICE_VARIABLE):
        prefer = os.environ[DEVICE_VARIABLE]
        check_choice(DEVICE_VARIABLE, prefer.split(":")[0], _DEVICE_KINDS)
    if prefer is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = check_choice("prefer", check_instance("prefer", prefer, str).split(":")[0], _DEVICE_KINDS)
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError("prefer='cuda' but no CUDA device is available")
    if kind == "mps" and not _mps_available():
        raise ValueError("prefer='mps' but no MPS device is available")
    return torch.device(prefer)


@contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Run ``model`` for inference: eval mode and no gradients inside, its train/eval mode restored after.

    ``with evaluating(model): out = model(x)`` is what every evaluation in the
    course does (dropout off, BatchNorm on its running statistics, no autograd graph).
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


@dataclass
class Budget:
    """A training budget: at most ``max_steps`` steps and/or ``max_seconds`` seconds (at least one is required).

    Notebooks use ``max_steps`` only, so that their results do not depend on the speed of the machine.
    Use: ``b = Budget(max_steps=500).start()``, then ``while not b.exhausted(step)``.
    """

    max_steps: int | None = None
    max_seconds: float | None = None
    _t0: float | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_steps is None and self.max_seconds is None:
            raise ValueError("Budget needs max_steps or max_seconds (or both), got neither")
        if self.max_steps is not None:
            self.max_steps = check_int("max_steps", self.max_steps, min=1)
        if self.max_seconds is not None:
            self.max_seconds = check_float("max_seconds", self.max_seconds, positive=True)

    def start(self) -> "Budget":
        """Start (or restart) the clock; returns ``self``."""
        self._t0 = time.perf_counter()
        return self

    @property
    def elapsed(self) -> float:
        """Seconds since :meth:`start` (0.0 before it is called)."""
        return 0.0 if self._t0 is None else time.perf_counter() - self._t0

    def exhausted(self, step: int) -> bool:
        """Whether the budget is spent after ``step`` completed steps."""
        return (self.max_steps is not None and step >= self.max_steps) or (
            self.max_seconds is not None and self._t0 is not None and self.elapsed >= self.max_seconds)


class Timer:
    """Context manager measuring wall-clock time: ``with Timer() as t: ...`` then ``t.seconds``.

    Inside the block ``t.seconds`` is the time so far; after it, the total.
    """

    def __init__(self) -> None:
        self._t0: float | None = None
        self._t1: float | None = None

    def __enter__(self) -> "Timer":
        self._t0 = time.perf_counter()
        self._t1 = None
        return self

    def __exit__(self, *exc) -> bool:
        self._t1 = time.perf_counter()
        return False

    @property
    def seconds(self) -> float:
        """Elapsed seconds (0.0 if the timer never started)."""
        if self._t0 is None:
            return 0.0
        return (self._t1 if self._t1 is not None else time.perf_counter()) - self._t0

    def __repr__(self) -> str:
        return f"Timer(seconds={self.seconds:.3f})"


def best_time(fn: Callable[[], object], *, repeats: int = 7, warmup: int = 2, grad: bool = False) -> float:
    """The fastest of ``repeats`` timed calls of ``fn()``, in seconds, after ``warmup`` untimed calls.

    The minimum is the run least disturbed by other programs on the machine, so it varies far less from run to run
    than the mean; it still depends on the machine. Calls run under ``torch.no_grad()`` unless ``grad=True`` (to time
    a training step, backward pass included).
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    repeats = check_int("repeats", repeats, min=1)
    warmup = check_int("warmup", warmup, min=0)
    check_instance("grad", grad, bool)
    with torch.set_grad_enabled(grad):
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            with Timer() as timer:
                fn()
            times.append(timer.seconds)
    return min(times)


@contextmanager
def threads(n: int) -> Iterator[None]:
    """Run the body with ``n`` intra-op threads (``torch.set_num_threads(n)``); the previous number is restored after.

    Large batched operations (convolutions over thousands of images) split well across threads; the small
    operations of a tiny model do not. A notebook that runs its small models on one thread can use
    ``with threads(2):`` for a batched step in between. Give a fixed number rather than the machine's core count:
    how an operation is split can change its floating-point rounding, and so the results, with the thread count.
    The count is a setting of the whole process: change it between, not during, the jobs of :func:`run_concurrently`.
    """
    n = check_int("n", n, min=1)
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _global_rng_states() -> tuple[bytes, str, bytes]:
    """Snapshots of the generators every thread shares: PyTorch's CPU generator, NumPy's and Python's."""
    return (torch.get_rng_state().numpy().tobytes(), repr(np.random.get_state()), repr(random.getstate()).encode())


def _with_grad_mode(job: Callable[[], object], enabled: bool) -> object:
    """``job()`` with gradient recording on or off, as in the thread that called :func:`run_concurrently`."""
    with torch.set_grad_enabled(enabled):
        return job()


def run_concurrently(jobs: Sequence[Callable[[], object]], *, workers: int | None = None) -> list:
    """Run independent jobs side by side, one thread each; return their results in the order of ``jobs``.

    A model of a few thousand parameters keeps one core of a CPU busy and leaves the others idle: splitting its small
    operations across threads does not pay. Several such training runs can share the cores instead: PyTorch releases
    Python's global interpreter lock while one of its operations runs (forward, ``backward()``, fused optimizer
    steps), so one thread's operations can run while another runs Python code. Put the longest job first: a free
    thread takes the next job in order.

    ``jobs``: callables taking no arguments (e.g. ``functools.partial(train, config)`` or a lambda), each training or
    evaluating its own model. ``workers``: how many run at once, default ``min(len(jobs), os.cpu_count())``;
    ``workers=1`` runs them one after the other in this thread. Jobs run with gradients on or off as in the caller
    (inside ``torch.no_grad()``, they do not record gradients either). Exceptions are re-raised here, the first job's
    first.

    The results equal those of running the jobs one after the other, on the condition that the jobs share nothing
    they change: each has its own model and optimizer, and draws its randomness only from its own seeded
    ``torch.Generator`` (e.g. :func:`mmutils.train.random_batches` with a seed), never from the generators that all
    threads share (``torch.manual_seed``, ``torch.rand`` without a generator, dropout, NumPy's and Python's global
    generators): the order in which threads draw from those changes from run to run. Build each model (which draws
    its initial weights from the global generator) before calling this. Their states are compared before and after,
    and a change raises ``RuntimeError``.
    """
    if isinstance(jobs, (str, bytes)) or not isinstance(jobs, Sequence):
        raise TypeError(f"jobs must be a sequence (list or tuple) of callables, got {type(jobs).__name__}")
    if not jobs:
        raise ValueError("jobs must hold at least one callable, got an empty sequence")
    for i, job in enumerate(jobs):
        if not callable(job):
            raise TypeError(f"jobs[{i}] must be callable (taking no arguments), got {type(job).__name__}")
    if workers is None:
        workers = min(len(jobs), os.cpu_count() or 1)
    workers = check_int("workers", workers, min=1)
    before = _global_rng_states()
    if workers == 1:
        results = [job() for job in jobs]
    else:
        grad = torch.is_grad_enabled()  # a thread-local setting: new threads start with gradients on
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_with_grad_mode, job, grad) for job in jobs]
        results = [future.result() for future in futures]
    if _global_rng_states() != before:
        raise RuntimeError("a job drew from (or re-seeded) a random generator that all threads share (torch's global "
                           "generator, NumPy's or Python's), so the results depend on the threads' timing; give each "
                           "job its own seeded torch.Generator and build the models before run_concurrently")
    return results


def peak_memory_mb() -> float:
    """Peak resident set size of this process in MiB (``resource.getrusage``).

    Falls back to the current resident size from :mod:`psutil` where
    ``resource`` is unavailable (Windows).
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        import psutil

        info = psutil.Process().memory_info()
        return float(getattr(info, "peak_wset", info.rss)) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return float(peak) / (2**20 if sys.platform == "darwin" else 2**10)
