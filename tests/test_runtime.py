"""Tests of seeding, device choice, budgets and timing."""
import os
import random
import time

import numpy as np
import pytest
import torch

from mmutils.runtime import Budget, Timer, device, peak_memory_mb, seed_everything


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
