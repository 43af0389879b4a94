"""Tests of the argument checks: what each helper returns, and the exception class and message of each mistake."""
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from mmutils.checks import (
    check_choice, check_float, check_instance, check_int, check_mask, check_rng, check_subset, check_tensor,
    check_texts, config_with,
)


def test_check_int():
    assert check_int("n", np.int64(3), min=0, max=3) == 3 and type(check_int("n", np.int64(3))) is int
    with pytest.raises(TypeError, match="n must be an int, got bool"):
        check_int("n", True)
    with pytest.raises(TypeError, match="n must be an int, got float"):
        check_int("n", 2.0)
    with pytest.raises(ValueError, match=r"n must be an int in \[1, inf\], got 0"):
        check_int("n", 0, min=1)


def test_check_float():
    assert check_float("lr", 1) == 1.0 and type(check_float("lr", 1)) is float
    with pytest.raises(TypeError, match="lr must be a number, got str"):
        check_float("lr", "0.1")
    with pytest.raises(ValueError, match="lr must be a positive number"):
        check_float("lr", 0.0, positive=True)
    with pytest.raises(ValueError, match=r"p must be a number in \[0.0, 1.0\], got 1.5"):
        check_float("p", 1.5, min=0.0, max=1.0)
    with pytest.raises(ValueError, match="p must be a number"):
        check_float("p", float("nan"))


def test_check_choice():
    assert check_choice("pool", "mean", ("mean", "max")) == "mean"
    with pytest.raises(ValueError, match=r"pool must be one of \('mean', 'max'\), got 'sum'"):
        check_choice("pool", "sum", ("mean", "max"))


def test_check_subset():
    assert check_subset("colors", ["red"], ("red", "blue")) == ("red",)
    with pytest.raises(TypeError, match="colors must be a sequence of strings, got str"):
        check_subset("colors", "red", ("red", "blue"))
    with pytest.raises(ValueError, match="colors must be a non-empty subset"):
        check_subset("colors", ["teal"], ("red", "blue"))
    with pytest.raises(ValueError, match="colors must be a non-empty subset"):
        check_subset("colors", [], ("red", "blue"))


def test_check_tensor():
    x = torch.zeros(2, 3)
    assert check_tensor("x", x, 2, size={1: 3}, dtype="float") is x
    assert check_tensor("ids", torch.zeros(2, dtype=torch.bool), dtype="int") is not None
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got ndarray"):
        check_tensor("x", np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"x must have 3 dimensions, got shape \(2, 3\)"):
        check_tensor("x", x, 3)
    with pytest.raises(ValueError, match=r"x must have size 4 in dimension 1"):
        check_tensor("x", x, size={1: 4})
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        check_tensor("x", x.long(), dtype="float")
    with pytest.raises(TypeError, match="ids must be an integer tensor"):
        check_tensor("ids", x, dtype="int")


def test_check_mask():
    tokens = torch.zeros(2, 4, 8)
    assert torch.equal(check_mask("mask", None, tokens), torch.ones(2, 4, dtype=torch.bool))
    mask = check_mask("mask", torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]]), tokens)
    assert mask.dtype == torch.bool and mask.sum() == 3
    with pytest.raises(ValueError, match=r"mask must have shape \(2, 4\), got \(2, 3\)"):
        check_mask("mask", torch.ones(2, 3), tokens)
    with pytest.raises(TypeError, match="mask must be a torch.Tensor"):
        check_mask("mask", [[1, 1, 1, 1]] * 2, tokens)


def test_check_texts():
    assert check_texts("texts", ("a", "b")) == ["a", "b"]
    with pytest.raises(TypeError, match="texts must be a list of strings, got str"):
        check_texts("texts", "a red circle")
    with pytest.raises(TypeError, match="texts must be a list of strings"):
        check_texts("texts", ["a", 3])
    with pytest.raises(ValueError, match="texts must not be empty"):
        check_texts("texts", [])


def test_check_rng():
    g = np.random.default_rng(5)
    assert check_rng("seed", g) is g
    assert check_rng("seed", 7).random() == np.random.default_rng(7).random()
    assert check_rng("seed", None).random() == np.random.default_rng(0).random()
    with pytest.raises(ValueError, match="seed must be an int in"):
        check_rng("seed", -1)
    with pytest.raises(TypeError, match="seed must be an int, got float"):
        check_rng("seed", 0.5)


def test_check_instance():
    assert check_instance("x", 3, int) == 3
    with pytest.raises(TypeError, match="scenes must be a list or tuple, got str"):
        check_instance("scenes", "abc", (list, tuple))


@dataclass
class _Config:
    dim: int = 8
    depth: int = 2


def test_config_with():
    assert config_with(_Config, None, {}) == _Config()
    assert config_with(_Config, None, {"dim": 4}) == _Config(dim=4)
    base = _Config(depth=5)
    assert config_with(_Config, base, {"dim": 4}) == _Config(dim=4, depth=5) and base == _Config(depth=5)
    with pytest.raises(TypeError, match=r"unknown _Config field\(s\) \['width'\]"):
        config_with(_Config, None, {"width": 3})
    with pytest.raises(TypeError, match="config must be a _Config, got dict"):
        config_with(_Config, {"dim": 4}, {})
