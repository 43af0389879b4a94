"""The text corpus of ShapesWorld: captions, questions and motion captions, for training a tokenizer."""
from __future__ import annotations

import numpy as np

from ..checks import check_int, check_rng
from .language import captions, vocabulary
from .motion import sample_sequences
from .qa import questions
from .scenes import sample_scenes


def corpus(n: int = 2000, *, seed: int | np.random.Generator = 0) -> list[str]:
    """Texts of the world for training a tokenizer: ``n`` captions, ``n`` questions,
    ``n // 4`` motion captions, and one line per grammar word so none is missing."""
    n = check_int("n", n, min=1)
    rng = check_rng("seed", seed)
    scenes = sample_scenes(n, min_objects=1, max_objects=3, seed=rng)
    texts = captions(scenes, seed=rng)
    texts += [q.text for q in questions(scenes, seed=rng)]
    texts += [s.caption for s in sample_sequences(max(1, n // 4), max_objects=2, seed=rng)]
    return texts + vocabulary()
