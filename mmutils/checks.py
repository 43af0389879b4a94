"""Argument checks for the public functions of mmutils: the one place where bad input is caught.

Every helper raises ``TypeError`` when a value has the wrong type and
``ValueError`` when it has the right type but a wrong value, and the message
names the argument and what was expected. Public functions call them once at
their boundary; internal calls trust their inputs and do not re-check.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from numbers import Integral, Real

import numpy as np
import torch

__all__ = [
    "check_int", "check_float", "check_choice", "check_subset", "check_tensor", "check_mask", "check_texts",
    "check_rng", "check_instance", "config_with",
]


def check_int(name: str, value, *, min: int | None = None, max: int | None = None) -> int:
    """``value`` as an ``int`` in ``[min, max]``; bools are not ints here."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if (min is not None and value < min) or (max is not None and value > max):
        raise ValueError(f"{name} must be an int in [{'-inf' if min is None else min}, "
                         f"{'inf' if max is None else max}], got {value}")
    return value


def check_float(name: str, value, *, min: float | None = None, max: float | None = None,
                positive: bool = False) -> float:
    """``value`` as a ``float`` in ``[min, max]`` (and > 0 if ``positive``); ints are accepted, bools not."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if positive and not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value}")
    if (min is not None and value < min) or (max is not None and value > max) or value != value:
        raise ValueError(f"{name} must be a number in [{'-inf' if min is None else min}, "
                         f"{'inf' if max is None else max}], got {value}")
    return value


def check_choice(name: str, value, choices: Sequence):
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_subset(name: str, values, allowed: Sequence[str]) -> tuple[str, ...]:
    """``values`` as a non-empty tuple of strings, each one of ``allowed``."""
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a sequence of strings, got {type(values).__name__}")
    values = tuple(values)
    if not values or any(v not in allowed for v in values):
        raise ValueError(f"{name} must be a non-empty subset of {tuple(allowed)}, got {values}")
    return values


def check_tensor(name: str, x, ndim: int | None = None, *, size: dict[int, int] | None = None,
                 dtype: str | None = None) -> torch.Tensor:
    """``x`` if it is a tensor of rank ``ndim`` with the lengths ``size`` ({dim: length}).

    ``dtype`` is ``"float"`` or ``"int"`` (any integer or bool dtype).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    for dim, length in (size or {}).items():
        if x.shape[dim] != length:
            raise ValueError(f"{name} must have size {length} in dimension {dim}, got shape {tuple(x.shape)}")
    if dtype == "float" and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if dtype == "int" and (x.is_floating_point() or x.is_complex()):
        raise TypeError(f"{name} must be an integer tensor, got {x.dtype}")
    return x


def check_mask(name: str, mask, like: torch.Tensor) -> torch.Tensor:
    """A bool (B, L) mask for ``like`` (B, L, ...): all true when ``mask`` is None."""
    if mask is None:
        return torch.ones(like.shape[:2], dtype=torch.bool, device=like.device)
    check_tensor(name, mask, 2)
    if mask.shape != like.shape[:2]:
        raise ValueError(f"{name} must have shape {tuple(like.shape[:2])}, got {tuple(mask.shape)}")
    return mask.bool()


def check_texts(name: str, texts) -> list[str]:
    """``texts`` as a non-empty list of strings (a single string is refused)."""
    if isinstance(texts, str) or not isinstance(texts, Sequence) or not all(isinstance(t, str) for t in texts):
        raise TypeError(f"{name} must be a list of strings, got {type(texts).__name__}")
    if not texts:
        raise ValueError(f"{name} must not be empty")
    return list(texts)


def check_rng(name: str, rng) -> np.random.Generator:
    """A numpy ``Generator``: ``rng`` itself, or a new one seeded with a non-negative int (None: seed 0)."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(check_int(name, 0 if rng is None else rng, min=0))


def check_instance(name: str, value, cls: type | tuple[type, ...]):
    """``value`` if it is an instance of ``cls``."""
    if not isinstance(value, cls):
        names = " or ".join(c.__name__ for c in (cls if isinstance(cls, tuple) else (cls,)))
        raise TypeError(f"{name} must be a {names}, got {type(value).__name__}")
    return value


def config_with(cls: type, config, overrides: dict):
    """A new ``cls`` dataclass: the fields of ``config`` (or the defaults) with ``overrides`` applied.

    Lets a model take ``Model(config, **overrides)``; unknown names raise ``TypeError``
    as a misspelt keyword argument would.
    """
    if config is not None:
        check_instance("config", config, cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(f"unknown {cls.__name__} field(s) {unknown}; fields are {sorted(names)}")
    return dataclasses.replace(config, **overrides) if config is not None else cls(**overrides)
