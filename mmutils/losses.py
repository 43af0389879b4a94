"""Contrastive and distillation losses.

* :func:`info_nce` – InfoNCE with in-batch negatives (van den Oord et al., 2018; SimCLR, Chen et al., 2020).
* :func:`clip_loss` – symmetric image-text InfoNCE with a learnable logit scale (Radford et al., 2021).
* :func:`moco_loss` – InfoNCE against one positive key and a queue of negatives (He et al., 2020).
* :func:`simcse_loss` – unsupervised SimCSE: two dropout views of a sentence (Gao et al., 2021).
* :func:`distillation_loss` – soft-target KL at temperature T, scaled by T^2 (Hinton et al., 2015).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["info_nce", "clip_loss", "moco_loss", "simcse_loss", "distillation_loss"]


def _check_pair(name_a: str, a, name_b: str, b) -> None:
    for name, t in ((name_a, a), (name_b, b)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim != 2:
            raise ValueError(f"{name} must be 2-D (batch, dim), got shape {tuple(t.shape)}")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{name_a} and {name_b} must have the same batch size, got {a.shape[0]} and {b.shape[0]}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{name_a} and {name_b} must have the same dim, got {a.shape[1]} and {b.shape[1]}")


def _check_temperature(temperature) -> None:
    if isinstance(temperature, torch.Tensor):
        if temperature.numel() != 1 or temperature.item() <= 0:
            raise ValueError(f"temperature must be a positive scalar, got {temperature}")
    elif not isinstance(temperature, (int, float)) or temperature <= 0:
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")


def info_nce(query: torch.Tensor, key: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """InfoNCE with in-batch negatives: row i of ``key`` is the positive of row i of ``query``.

    ``query, key``: (B, D), L2-normalized inside. Logits are cosine
    similarities / ``temperature``, shape (B, B); the loss is the cross-entropy
    with the diagonal as targets. With all similarities equal it is log(B).
    """
    _check_pair("query", query, "key", key)
    _check_temperature(temperature)
    q, k = F.normalize(query, dim=1), F.normalize(key, dim=1)
    logits = q @ k.t() / temperature  # (B, B)
    targets = torch.arange(q.shape[0], device=q.device)
    return F.cross_entropy(logits.float(), targets)


def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric CLIP loss: mean of image-to-text and text-to-image cross-entropy.

    ``image_emb, text_emb``: (B, D), L2-normalized inside; ``logit_scale``: the
    log of the inverse temperature (a learnable scalar, CLIP initializes it at
    log(1/0.07) and clamps exp(logit_scale) at 100). Returns a scalar.
    """
    _check_pair("image_emb", image_emb, "text_emb", text_emb)
    if isinstance(logit_scale, (int, float)):
        logit_scale = torch.tensor(float(logit_scale))
    if not isinstance(logit_scale, torch.Tensor) or logit_scale.numel() != 1:
        raise ValueError(f"logit_scale must be a scalar, got {logit_scale!r}")
    scale = logit_scale.exp().clamp(max=100.0)
    img, txt = F.normalize(image_emb, dim=1), F.normalize(text_emb, dim=1)
    logits_per_image = scale * img @ txt.t()  # (B, B)
    targets = torch.arange(img.shape[0], device=img.device)
    return 0.5 * (F.cross_entropy(logits_per_image.float(), targets)
                  + F.cross_entropy(logits_per_image.t().float(), targets))


def moco_loss(query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """MoCo InfoNCE: each query against its own key (positive) and K queued keys (negatives).

    ``query, key``: (B, D); ``queue``: (K, D) keys of earlier batches. All are
    L2-normalized inside; ``key`` and ``queue`` are detached (no gradient to the
    key encoder). Logits have shape (B, 1 + K) with the positive in column 0.
    With all similarities equal the loss is log(K + 1).
    """
    _check_pair("query", query, "key", key)
    if not isinstance(queue, torch.Tensor) or queue.ndim != 2 or queue.shape[1] != query.shape[1]:
        raise ValueError(f"queue must be 2-D (K, {query.shape[1]}), got "
                         f"{tuple(queue.shape) if isinstance(queue, torch.Tensor) else type(queue).__name__}")
    _check_temperature(temperature)
    q = F.normalize(query, dim=1)
    k = F.normalize(key.detach(), dim=1)
    negatives = F.normalize(queue.detach(), dim=1)
    positive = (q * k).sum(dim=1, keepdim=True)  # (B, 1)
    negative = q @ negatives.t()  # (B, K)
    logits = torch.cat([positive, negative], dim=1) / temperature
    targets = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits.float(), targets)


def simcse_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.05,
                hard_negatives: torch.Tensor | None = None) -> torch.Tensor:
    """SimCSE loss: InfoNCE between two views ``z1, z2`` (B, D) with in-batch negatives.

    Unsupervised SimCSE passes the same sentences twice through the encoder
    with dropout on. Supervised SimCSE uses a paraphrase as ``z2`` and may add
    ``hard_negatives`` (B, D), appended as extra columns of the logits.
    """
    if hard_negatives is None:
        return info_nce(z1, z2, temperature)
    _check_pair("z1", z1, "z2", z2)
    _check_pair("z1", z1, "hard_negatives", hard_negatives)
    _check_temperature(temperature)
    a = F.normalize(z1, dim=1)
    b = F.normalize(torch.cat([z2, hard_negatives], dim=0), dim=1)
    logits = a @ b.t() / temperature  # (B, 2B)
    targets = torch.arange(a.shape[0], device=a.device)
    return F.cross_entropy(logits.float(), targets)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Hinton et al. (2015) soft-target loss: T^2 * KL(softmax(teacher/T) || softmax(student/T)).

    ``student_logits, teacher_logits``: (B, C). The teacher is detached. Zero when
    the two logits are equal.
    """
    _check_pair("student_logits", student_logits, "teacher_logits", teacher_logits)
    _check_temperature(temperature)
    t = float(temperature)
    log_p_student = F.log_softmax(student_logits.float() / t, dim=1)
    p_teacher = F.softmax(teacher_logits.detach().float() / t, dim=1)
    return F.kl_div(log_p_student, p_teacher, reduction="batchmean") * t * t


# The CLIP paper's initial logit scale, log(1 / 0.07).
CLIP_INIT_LOGIT_SCALE = math.log(1 / 0.07)
