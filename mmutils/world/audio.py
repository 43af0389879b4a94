"""The audio modality of ShapesWorld: one tone per object, played left to right, and its spectrogram."""
from __future__ import annotations

from typing import Sequence as SequenceType

import numpy as np
import torch

from ..checks import check_float, check_instance, check_int, check_rng
from .scenes import SHAPES, Scene

# Pitch follows shape, timbre (harmonic weights) follows color, loudness follows size.
_PITCH = {s: f for s, f in zip(SHAPES, (262.0, 330.0, 392.0, 523.0, 659.0, 784.0))}
_TIMBRE = {"red": (1.0,), "green": (1.0, 0.5), "blue": (1.0, 0.0, 0.5), "yellow": (1.0, 0.5, 0.33, 0.25),
           "purple": (1.0, 0.0, 0.0, 0.6), "orange": (0.6, 1.0)}
_LOUDNESS = {"small": 0.35, "large": 0.8}


def synthesize_audio(scenes: SequenceType[Scene] | Scene, *, sample_rate: int = 8000, duration: float = 0.5,
                     noise: float = 0.0, seed: int | np.random.Generator = 0) -> np.ndarray:
    """The sound of each scene: one tone per object, played in order from left to right.

    The clip is split into one equal slot per object; a tone has the pitch of its shape (C4 to G5), the
    harmonics of its color, the loudness of its size. Returns float32 ``(n, round(sample_rate * duration))`` in [-1, 1].
    """
    scenes = [scenes] if isinstance(scenes, Scene) else check_instance("scenes", scenes, (list, tuple))
    sample_rate = check_int("sample_rate", sample_rate, min=1000)
    duration = check_float("duration", duration, min=0.05, max=10.0)
    noise = check_float("noise", noise, min=0.0, max=1.0)
    n_samples = int(round(sample_rate * duration))
    t = np.arange(n_samples) / sample_rate
    out = np.zeros((len(scenes), n_samples), dtype=np.float64)
    for i, s in enumerate(scenes):
        objs = sorted(s.objects, key=lambda o: o.x)
        if not objs:
            continue
        slot = n_samples // len(objs)
        for k, o in enumerate(objs):
            seg = slice(k * slot, (k + 1) * slot if k < len(objs) - 1 else n_samples)
            ts = t[seg] - t[seg][0]
            wave = sum(w * np.sin(2 * np.pi * (h + 1) * _PITCH[o.shape] * ts) for h, w in enumerate(_TIMBRE[o.color]))
            wave = wave / sum(_TIMBRE[o.color])
            fade = np.minimum(1.0, np.minimum(ts, ts[-1] - ts) / 0.01)
            out[i, seg] = _LOUDNESS[o.size] * wave * fade
    if noise > 0:
        out += check_rng("seed", seed).normal(0, noise, size=out.shape)
    return np.clip(out, -1, 1).astype(np.float32)


def spectrogram(waveform, *, n_fft: int = 256, hop_length: int = 64) -> torch.Tensor:
    """Log-magnitude spectrogram ``log(1 + |STFT|)`` with a Hann window (``torch.stft``).

    ``waveform``: array or tensor of shape ``(..., samples)``. Returns float32
    tensor of shape ``(..., n_fft // 2 + 1, frames)``.
    """
    if isinstance(waveform, np.ndarray):
        waveform = torch.from_numpy(np.ascontiguousarray(waveform))
    check_instance("waveform", waveform, torch.Tensor)
    n_fft = check_int("n_fft", n_fft, min=8)
    hop_length = check_int("hop_length", hop_length, min=1)
    if waveform.ndim < 1 or waveform.shape[-1] < n_fft:
        raise ValueError(f"waveform must have shape (..., samples) with samples >= n_fft={n_fft}, "
                         f"got {tuple(waveform.shape)}")
    lead = waveform.shape[:-1]
    flat = waveform.reshape(-1, waveform.shape[-1]).float()
    spec = torch.stft(flat, n_fft=n_fft, hop_length=hop_length, window=torch.hann_window(n_fft, device=flat.device),
                      return_complex=True)
    return torch.log1p(spec.abs()).reshape(*lead, spec.shape[-2], spec.shape[-1])
