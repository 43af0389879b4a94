"""Tests of seeding, device choice, budgets and timing."""
import functools
import os
import random
import threading
import time

import numpy as np
import pytest
import torch

from mmutils.runtime import (
    Budget, Timer, device, peak_memory_mb, run_concurrently, seed_everything, threads,
)


def test_seed_everything_repeats_all_generators():
    seed_everything(123)
    a = (random.random(), np.random.rand(), torch.rand(3))
    seed_everything(123)
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
    assert os.environ["PYTHONHASHSEED"] == "123"


def test_seed_everything_leaves_determinism_setting_alone():
    before = torch.are_deterministic_algorithms_enabled()
    seed_everything(0)
    assert torch.are_deterministic_algorithms_enabled() == before


def test_seed_everything_takes_the_override_from_the_environment(monkeypatch, capsys):
    monkeypatch.setenv("MMUTILS_SEED", "7")
    assert seed_everything(0) == 7
    a = torch.rand(3)
    assert "MMUTILS_SEED=7" in capsys.readouterr().out
    monkeypatch.delenv("MMUTILS_SEED")
    assert seed_everything(7) == 7
    assert torch.equal(torch.rand(3), a)
    assert capsys.readouterr().out == ""


def test_seed_everything_refuses_a_bad_override(monkeypatch):
    monkeypatch.setenv("MMUTILS_SEED", "one")
    with pytest.raises(ValueError, match="MMUTILS_SEED"):
        seed_everything(0)


def test_device_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.delenv("MMUTILS_DEVICE", raising=False)
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    expected = "cuda" if torch.cuda.is_available() else "mps" if mps else "cpu"
    assert device().type == expected
    assert device("cpu").type == "cpu"


def test_device_bad_input():
    with pytest.raises(TypeError, match="prefer"):
        device(0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="prefer"):
            device("cuda")


def test_device_takes_the_kind_from_the_environment(monkeypatch):
    monkeypatch.setenv("MMUTILS_DEVICE", "cpu")
    assert device().type == "cpu"
    monkeypatch.setenv("MMUTILS_DEVICE", "tpu")
    with pytest.raises(ValueError, match="MMUTILS_DEVICE"):
        device()


def test_budget_steps_and_seconds():
    b = Budget(max_steps=3).start()
    assert not b.exhausted(2) and b.exhausted(3)
    t = Budget(max_seconds=0.01).start()
    time.sleep(0.02)
    assert t.exhausted(0) and t.elapsed >= 0.01
    both = Budget(max_steps=100, max_seconds=100.0).start()
    assert both.exhausted(100) and not both.exhausted(5)


def test_budget_elapsed_before_start_is_zero():
    assert Budget(max_steps=1).elapsed == 0.0


def test_budget_bad_input():
    with pytest.raises(ValueError, match="max_steps or max_seconds"):
        Budget()
    with pytest.raises(TypeError, match="max_seconds"):
        Budget(max_seconds="1")


def test_timer_measures_block():
    with Timer() as t:
        time.sleep(0.02)
        inside = t.seconds
    assert 0.0 < inside <= t.seconds
    total = t.seconds
    time.sleep(0.01)
    assert t.seconds == total >= 0.02
    assert Timer().seconds == 0.0
    assert "Timer(seconds=" in repr(t)


def test_peak_memory_mb_is_plausible():
    mb = peak_memory_mb()
    assert isinstance(mb, float) and 10 < mb < 1_000_000


def _train_small_model(seed: int, steps: int = 20) -> torch.Tensor:
    """A few SGD steps of a linear model drawing only from its own generator; its final weights."""
    gen = torch.Generator().manual_seed(seed)
    weight = torch.zeros(8, 1, requires_grad=True)
    for _ in range(steps):
        x = torch.randn(32, 8, generator=gen)
        loss = ((x @ weight - x.sum(1, keepdim=True)) ** 2).mean()
        loss.backward()
        with torch.no_grad():
            weight -= 0.1 * weight.grad
            weight.grad = None
    return weight.detach()


def test_run_concurrently_returns_what_running_in_turn_returns():
    jobs = [functools.partial(_train_small_model, seed) for seed in range(4)]
    in_turn = [job() for job in jobs]
    for workers in (None, 1, 2, 4):
        results = run_concurrently(jobs, workers=workers)
        assert all(torch.equal(a, b) for a, b in zip(results, in_turn, strict=True))


def test_run_concurrently_runs_the_jobs_at_the_same_time():
    meet = threading.Barrier(2, timeout=10)  # breaks (and raises) unless two jobs wait at once
    assert run_concurrently([meet.wait, meet.wait], workers=2) is not None


def test_run_concurrently_reraises_a_jobs_error():
    def fail():
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        run_concurrently([lambda: 1, fail], workers=2)


@pytest.mark.parametrize("draw", [lambda: torch.rand(1), lambda: np.random.rand(), lambda: random.random(),
                                  lambda: torch.manual_seed(5)])
def test_run_concurrently_refuses_jobs_that_use_the_shared_generators(draw):
    with pytest.raises(RuntimeError, match="all threads share"):
        run_concurrently([lambda: 1, draw], workers=2)


def test_run_concurrently_checks_its_arguments():
    with pytest.raises(TypeError, match="jobs must be a sequence"):
        run_concurrently(lambda: 1)
    with pytest.raises(TypeError, match=r"jobs\[1\] must be callable"):
        run_concurrently([lambda: 1, 2])
    with pytest.raises(ValueError, match="at least one"):
        run_concurrently([])
    with pytest.raises(ValueError, match="workers"):
        run_concurrently([lambda: 1], workers=0)


def test_run_concurrently_keeps_the_callers_gradient_mode():
    with torch.no_grad():
        assert run_concurrently([torch.is_grad_enabled] * 2, workers=2) == [False, False]
    assert run_concurrently([torch.is_grad_enabled] * 2, workers=2) == [True, True]


def test_best_time_records_gradients_only_when_asked():
    from mmutils.runtime import best_time

    modes = []
    best_time(lambda: modes.append(torch.is_grad_enabled()), repeats=1, warmup=0)
    best_time(lambda: modes.append(torch.is_grad_enabled()), repeats=1, warmup=0, grad=True)
    assert modes == [False, True]
    with pytest.raises(TypeError, match="grad"):
        best_time(lambda: None, grad=1)


def test_threads_sets_and_restores_the_thread_count():
    before = torch.get_num_threads()
    with threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), threads(1):  # restored after an error too
        raise RuntimeError
    assert torch.get_num_threads() == before


def test_threads_bad_input():
    with pytest.raises(TypeError, match="n must be"), threads(1.5):
        pass
    with pytest.raises(ValueError, match="n must be"), threads(0):
        pass
