"""The evaluation metrics of the chapters: accuracy, duplicate-aware Recall@K, corpus BLEU,
caption fact accuracy, Spearman correlation, and the alignment/uniformity of embeddings."""
from __future__ import annotations

import math
from collections import Counter
from typing import Hashable, Sequence

import numpy as np
import torch

from .checks import check_instance, check_int, check_texts
from .world import desc_matches, facts_hold, parse_caption

__all__ = [
    "accuracy", "recall_at_k", "retrieval_ranks", "corpus_bleu", "fact_accuracy",
    "spearman", "alignment", "uniformity",
]


def _as_tensor(name: str, x) -> torch.Tensor:
    """``x`` as a tensor (numpy arrays are wrapped without a copy)."""
    return torch.from_numpy(x) if isinstance(x, np.ndarray) else check_instance(name, x, torch.Tensor)


def accuracy(logits_or_preds, targets) -> float:
    """Fraction of correct predictions.

    ``logits_or_preds``: (n, classes) scores (argmax taken) or (n,) predicted
    labels; ``targets``: (n,) integer labels. Returns a float in [0, 1].
    """
    pred = _as_tensor("logits_or_preds", logits_or_preds)
    targets = _as_tensor("targets", targets)
    if pred.ndim == 2:
        pred = pred.argmax(dim=1)
    if pred.ndim != 1 or targets.ndim != 1:
        raise ValueError(f"logits_or_preds must be (n, classes) or (n,) and targets (n,), got "
                         f"{tuple(pred.shape)} and {tuple(targets.shape)}")
    if pred.shape[0] != targets.shape[0] or pred.shape[0] == 0:
        raise ValueError(f"logits_or_preds and targets must have the same, non-zero batch size, got "
                         f"{pred.shape[0]} and {targets.shape[0]}")
    return (pred.cpu() == targets.cpu()).float().mean().item()


def retrieval_ranks(similarity, query_keys: Sequence[Hashable], gallery_keys: Sequence[Hashable]) -> torch.Tensor:
    """Rank (0-based) of the first correct gallery item for each query.

    ``similarity``: (n_queries, n_gallery) scores, higher is closer. A gallery
    item is correct for a query when their keys are equal (e.g. the scene's
    facts), so duplicates of the same content all count as hits.
    Returns a LongTensor of shape (n_queries,); a query with no correct item gets
    rank ``n_gallery``.
    """
    sim = _as_tensor("similarity", similarity).float()
    if sim.ndim != 2:
        raise ValueError(f"similarity must be 2-D (n_queries, n_gallery), got shape {tuple(sim.shape)}")
    if len(query_keys) != sim.shape[0] or len(gallery_keys) != sim.shape[1]:
        raise ValueError(f"query_keys ({len(query_keys)}) and gallery_keys ({len(gallery_keys)}) must match "
                         f"similarity's shape {tuple(sim.shape)}")
    ids: dict = {}
    q = torch.tensor([ids.setdefault(k, len(ids)) for k in query_keys])
    g = torch.tensor([ids.setdefault(k, len(ids)) for k in gallery_keys])
    correct = q[:, None] == g[None, :]  # (nq, ng)
    order = sim.cpu().argsort(dim=1, descending=True)
    hits = correct.gather(1, order)  # (nq, ng), in ranked order
    return torch.where(hits.any(dim=1), hits.float().argmax(dim=1), torch.full((len(q),), sim.shape[1]))


def recall_at_k(similarity, query_keys: Sequence[Hashable], gallery_keys: Sequence[Hashable],
                ks: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
    """Duplicate-aware Recall@K: share of queries with a correct item among the top ``k``.

    See :func:`retrieval_ranks` for the arguments. Returns ``{k: recall}``.
    """
    ks = [check_int("ks", k, min=1) for k in ks]
    ranks = retrieval_ranks(similarity, query_keys, gallery_keys)
    return {k: (ranks < k).float().mean().item() for k in ks}


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]], max_n: int = 4) -> float:
    """Corpus-level BLEU-``max_n`` (Papineni et al., 2002) on whitespace tokens, in [0, 1].

    Clipped n-gram precisions are summed over the corpus, combined by a
    geometric mean with uniform weights, and multiplied by the brevity
    penalty, whose reference length is the closest reference length per
    sentence. No smoothing: agrees with ``sacrebleu.corpus_bleu(...,
    tokenize="none", smooth_method="none") / 100``.

    ``hypotheses``: a list of n strings; ``references``: a list of n non-empty lists of reference strings.
    """
    hypotheses = check_texts("hypotheses", hypotheses)
    if len(check_instance("references", references, (list, tuple))) != len(hypotheses):
        raise ValueError(f"hypotheses and references must have the same length, got {len(hypotheses)} and "
                         f"{len(references)}")
    max_n = check_int("max_n", max_n, min=1)
    matches = [0] * max_n
    totals = [0] * max_n
    hyp_len = ref_len = 0
    for i, (hyp, refs) in enumerate(zip(hypotheses, references)):
        refs = check_texts(f"references[{i}]", refs)
        h = hyp.split()
        rs = [r.split() for r in refs]
        hyp_len += len(h)
        ref_len += min((abs(len(r) - len(h)), len(r)) for r in rs)[1]
        for n in range(1, max_n + 1):
            counts = _ngrams(h, n)
            max_ref: Counter = Counter()
            for r in rs:
                max_ref |= _ngrams(r, n)
            matches[n - 1] += sum(min(c, max_ref[g]) for g, c in counts.items())
            totals[n - 1] += max(len(h) - n + 1, 0)
    if min(matches) == 0 or hyp_len == 0:
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matches, totals)) / max_n
    brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return brevity * math.exp(log_precision)


def fact_accuracy(captions: Sequence[str], scenes) -> dict[str, float]:
    """How often generated captions are true of their scenes, using the world's parser.

    Returns ``{"parsed": share that parse, "true": share whose every fact holds,
    "complete": share that are true and mention every object of the scene}``.
    A caption outside the grammar counts as false.
    """
    captions = check_texts("captions", captions)
    if len(check_instance("scenes", scenes, (list, tuple))) != len(captions):
        raise ValueError(f"captions and scenes must have the same length, got {len(captions)} and {len(scenes)}")
    parsed = true = complete = 0
    for text, scene in zip(captions, scenes):
        try:
            facts = parse_caption(text)
        except ValueError:
            continue
        parsed += 1
        if facts_hold(facts, scene):
            true += 1
            mentioned = {f[1] for f in facts if f[0] == "exists"}
            if all(any(desc_matches(m, o.desc) for m in mentioned) for o in scene.objects) \
                    and len(mentioned) == len(scene.objects):
                complete += 1
    n = len(captions)
    return {"parsed": parsed / n, "true": true / n, "complete": complete / n}


def spearman(x, y) -> float:
    """Spearman rank correlation of two 1-D sequences (average ranks for ties)."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.ndim != 1 or x.shape != y.shape or x.size < 2:
        raise ValueError(f"x and y must be 1-D of the same length >= 2, got {x.shape} and {y.shape}")
    return float(spearmanr(x, y).statistic)


def _unit(name: str, z) -> torch.Tensor:
    z = _as_tensor(name, z).float()
    if z.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, dim), got shape {tuple(z.shape)}")
    return torch.nn.functional.normalize(z, dim=1)


def alignment(x, y, alpha: float = 2.0) -> float:
    """Alignment loss of Wang and Isola (2020): E ||f(x) - f(y)||^alpha over positive pairs.

    ``x, y``: (n, dim) embeddings of positive pairs (normalized here). Lower is better.
    """
    x, y = _unit("x", x), _unit("y", y)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    return (x - y).norm(dim=1).pow(alpha).mean().item()


def uniformity(x, t: float = 2.0) -> float:
    """Uniformity loss of Wang and Isola (2020): log E exp(-t ||f(x) - f(y)||^2) over all pairs.

    ``x``: (n, dim) embeddings (normalized here), n >= 2. Lower is more uniform.
    """
    x = _unit("x", x)
    if x.shape[0] < 2:
        raise ValueError("x must hold at least 2 embeddings")
    return torch.pdist(x).pow(2).mul(-t).exp().mean().log().item()
