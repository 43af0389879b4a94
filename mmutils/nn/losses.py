"""Contrastive and distillation losses, each one function of embeddings or logits.

:func:`info_nce`, :func:`clip_loss` (with :func:`logit_scale_to_scale`, the one place CLIP's scale is
clamped; ``key_id=`` gives multi-positive targets), :func:`moco_loss`, :func:`simcse_loss`,
:func:`distillation_loss`. Every loss computes its cross-entropy
(or KL divergence) in float32 and returns a scalar tensor; the contrastive losses L2-normalize their
embeddings inside, while :func:`distillation_loss` takes logits as they are.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..checks import check_float, check_tensor

__all__ = ["CLIP_INIT_LOGIT_SCALE", "CLIP_MAX_LOGIT_SCALE", "logit_scale_to_scale", "info_nce", "clip_loss",
           "moco_loss", "simcse_loss", "distillation_loss"]

#: CLIP initializes the logit scale (log of the inverse temperature) at log(1 / 0.07) ...
CLIP_INIT_LOGIT_SCALE = math.log(1 / 0.07)
#: ... and clamps it at log(100), so logits are at most 100 times the cosine similarity.
CLIP_MAX_LOGIT_SCALE = math.log(100.0)


def _check_pair(name_a: str, a, name_b: str, b) -> None:
    """Both (B, D) tensors with the same B and D."""
    check_tensor(name_a, a, 2)
    check_tensor(name_b, b, 2, size={0: a.shape[0], 1: a.shape[1]})


def _check_temperature(temperature) -> None:
    if not isinstance(temperature, torch.Tensor):  # a learnable temperature is trusted
        check_float("temperature", temperature, positive=True)


def logit_scale_to_scale(logit_scale: torch.Tensor | float,
                         max_logit_scale: float = CLIP_MAX_LOGIT_SCALE) -> torch.Tensor:
    """CLIP's inverse temperature ``exp(logit_scale)``, the exponent clamped to ``[0, max_logit_scale]``.

    ``logit_scale``: a scalar tensor (usually a learnable parameter) or a number. Radford et al. (2021)
    clamp the scale at 100 for stability; the clamp also stops the gradient at the bound. Returns a scalar.
    """
    if not isinstance(logit_scale, torch.Tensor):
        logit_scale = torch.tensor(check_float("logit_scale", logit_scale))
    elif logit_scale.numel() != 1:
        raise ValueError(f"logit_scale must be a scalar, got shape {tuple(logit_scale.shape)}")
    return logit_scale.clamp(0.0, max_logit_scale).exp()


def info_nce(query: torch.Tensor, key: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """InfoNCE with in-batch negatives: row i of ``key`` is the positive of row i of ``query``.

    ``query, key``: (B, D), L2-normalized inside. Logits are cosine similarities / ``temperature``,
    (B, B); the loss is the cross-entropy with the diagonal as targets (van den Oord et al., 2018;
    SimCLR, Chen et al., 2020). With all similarities equal it is log(B).
    """
    _check_pair("query", query, "key", key)
    _check_temperature(temperature)
    return _in_batch_nce(query, key, temperature)


def _in_batch_nce(query: torch.Tensor, keys: torch.Tensor, temperature) -> torch.Tensor:
    """Cross-entropy of cos(query (B, D), keys (K >= B, D)) / temperature, row i's target being key i."""
    q, k = F.normalize(query, dim=1), F.normalize(keys, dim=1)
    logits = q @ k.t() / temperature  # (B, K)
    targets = torch.arange(q.shape[0], device=q.device)
    return F.cross_entropy(logits.float(), targets)


def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor | float,
              negative_text_emb: torch.Tensor | None = None, *, key_id: torch.Tensor | None = None,
              max_logit_scale: float = CLIP_MAX_LOGIT_SCALE) -> torch.Tensor:
    """Symmetric CLIP loss (Radford et al., 2021): mean of image-to-text and text-to-image cross-entropy.

    ``image_emb, text_emb``: (B, D), row i of one matches row i of the other; ``logit_scale``: the log of
    the inverse temperature, clamped to ``[0, max_logit_scale]`` (see :func:`logit_scale_to_scale`; a model
    with its own bound passes it). With ``negative_text_emb`` (K, D), captions that match no image (e.g.
    relation-swapped), image-to-text runs over B + K captions (logits (B, B + K)) and text-to-image over
    the B images, as in NegCLIP (Yuksekgonul et al., 2023).

    ``key_id`` (B,) ints give *multi-positive* targets: pairs i, j with ``key_id[i] == key_id[j]`` (e.g. captions
    with the same facts) are positives of each other, so a duplicate in the batch is not pushed away. Each row's
    target is then uniform over its positives, ``t_ij = [k_i = k_j] / #{j' : k_j' = k_i}``, and each direction is the
    soft-target cross-entropy ``-sum_j t_ij log softmax(logits_i)_j`` (as in UniCL, Yang et al., 2022); with all keys
    distinct it is the one-positive loss. Returns a scalar.
    """
    _check_pair("image_emb", image_emb, "text_emb", text_emb)
    b = image_emb.shape[0]
    if negative_text_emb is not None:
        check_tensor("negative_text_emb", negative_text_emb, 2, size={1: image_emb.shape[1]})
        text_emb = torch.cat([text_emb, negative_text_emb])  # (B + K, D)
    scale = logit_scale_to_scale(logit_scale, max_logit_scale)
    img, txt = F.normalize(image_emb, dim=1), F.normalize(text_emb, dim=1)
    logits = (scale * img @ txt.t()).float()  # (B, B + K)
    if key_id is None:
        targets = torch.arange(b, device=img.device)  # the diagonal
        return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits[:, :b].t(), targets))
    targets = _positive_targets(check_tensor("key_id", key_id, 1, size={0: b}, dtype="int").to(img.device))  # (B, B)
    image_to_text = F.cross_entropy(logits, F.pad(targets, (0, logits.shape[1] - b)))  # no mass on the K negatives
    return 0.5 * (image_to_text + F.cross_entropy(logits[:, :b].t(), targets))  # targets is symmetric


def _positive_targets(key_id: torch.Tensor) -> torch.Tensor:
    """Multi-positive targets: keys (B,) -> (B, B), row i uniform over the j with ``key_id[j] == key_id[i]`` (i
    included). Symmetric: a key shared by n items gives each of them the same n positives of weight 1/n."""
    same = (key_id[:, None] == key_id[None, :]).float()  # (B, B), 1 on the diagonal
    return same / same.sum(dim=1, keepdim=True)


def moco_loss(query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """MoCo InfoNCE (He et al., 2020): each query against its own key (positive) and K queued keys (negatives).

    ``query, key``: (B, D); ``queue``: (K, D) keys of earlier batches; ``key`` and ``queue`` are detached.
    Logits (B, 1 + K) have the positive in column 0. With all similarities equal the loss is log(K + 1).
    """
    _check_pair("query", query, "key", key)
    check_tensor("queue", queue, 2, size={1: query.shape[1]})
    _check_temperature(temperature)
    q, k, negatives = F.normalize(query, dim=1), F.normalize(key.detach(), dim=1), F.normalize(queue.detach(), dim=1)
    positive = (q * k).sum(dim=1, keepdim=True)  # (B, 1)
    negative = q @ negatives.t()  # (B, K)
    logits = torch.cat([positive, negative], dim=1) / temperature  # (B, 1 + K)
    targets = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits.float(), targets)


def simcse_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.05,
                hard_negatives: torch.Tensor | None = None) -> torch.Tensor:
    """SimCSE loss (Gao et al., 2021): InfoNCE between two views ``z1, z2`` (B, D) with in-batch negatives.

    Unsupervised SimCSE passes the same sentences twice through the encoder with dropout on. Supervised
    SimCSE uses a paraphrase as ``z2`` and may add ``hard_negatives`` (B, D): extra columns, logits (B, 2B).
    """
    if hard_negatives is None:
        return info_nce(z1, z2, temperature)
    _check_pair("z1", z1, "z2", z2)
    _check_pair("z1", z1, "hard_negatives", hard_negatives)
    _check_temperature(temperature)
    return _in_batch_nce(z1, torch.cat([z2, hard_negatives], dim=0), temperature)  # keys (2B, D)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      temperature: float = 4.0) -> torch.Tensor:
    """Hinton et al. (2015) soft-target loss: T^2 * KL(softmax(teacher/T) || softmax(student/T)).

    ``student_logits, teacher_logits``: (B, C). The teacher is detached. Zero when the two are equal.
    """
    _check_pair("student_logits", student_logits, "teacher_logits", teacher_logits)
    _check_temperature(temperature)
    t = float(temperature)
    log_p_student = F.log_softmax(student_logits.float() / t, dim=1)  # (B, C)
    p_teacher = F.softmax(teacher_logits.detach().float() / t, dim=1)  # (B, C)
    return F.kl_div(log_p_student, p_teacher, reduction="batchmean") * t * t
