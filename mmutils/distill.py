"""Knowledge distillation (chapter 14): a small student learns from a large teacher's outputs, in one or two modalities.

* :func:`distillation_loss` – Hinton et al. (2015) soft targets, ``T^2 * KL`` (defined in :mod:`mmutils.nn.losses`,
  re-exported here).
* :func:`soft_target_loss` – the student's objective on a batch where only some rows have labels: soft targets on
  every row plus the cross-entropy of the labelled rows.
* :func:`affinity_mimicking_loss` – TinyCLIP's affinity mimicking (Wu et al., 2023): the student's image-to-text and
  text-to-image similarity distributions within a batch match the teacher's.
* :func:`teacher_outputs` – a frozen teacher run once over a whole data set, in chunks (its soft labels).
* :func:`parameter_count`, :func:`best_time` – the size and the measured latency of a model (``best_time`` is
  defined in :mod:`mmutils.runtime`, re-exported here).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_float, check_instance, check_int, check_tensor
from .nn.losses import distillation_loss, logit_scale_to_scale
from .runtime import best_time, evaluating

__all__ = ["distillation_loss", "soft_target_loss", "affinity_mimicking_loss", "teacher_outputs",
           "parameter_count", "best_time"]


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                     temperature: float = 4.0, hard_weight: float = 1.0) -> torch.Tensor:
    """Hinton et al. (2015): soft targets on every row, plus the cross-entropy of the rows that have a label.

    ``student_logits, teacher_logits``: (B, C); ``labels``: (B,) int64, a class in [0, C) or ``-1`` for an unlabelled
    row. Returns ``distillation_loss(student, teacher, T) + hard_weight * sum_labelled CE / B``, the hard term at
    ``T = 1`` as in Hinton et al.: its sum over the labelled rows is divided by the whole batch, so each labelled
    row weighs ``hard_weight`` times as much as each row's soft term, and a batch with few labels gives the labels
    a small total weight (Hinton et al. found a considerably lower weight on the hard term to work best;
    ``hard_weight`` sets it). The soft term carries the ``T^2`` factor, which keeps its gradients on the scale of
    the hard term's whatever the temperature (:func:`distillation_loss`).
    """
    check_tensor("student_logits", student_logits, 2, dtype="float")
    b, c = student_logits.shape
    check_tensor("teacher_logits", teacher_logits, 2, size={0: b, 1: c}, dtype="float")
    check_tensor("labels", labels, 1, size={0: b}, dtype="int")
    if labels.numel() and (int(labels.min()) < -1 or int(labels.max()) >= c):
        raise ValueError(f"labels must be classes in [0, {c}) or -1 (unlabelled), got values in "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    hard_weight = check_float("hard_weight", hard_weight, min=0.0)
    soft = distillation_loss(student_logits, teacher_logits, temperature)  # checks the temperature
    labelled = labels >= 0  # (B,)
    hard = F.cross_entropy(student_logits[labelled].float(), labels[labelled], reduction="sum") / b
    return soft + hard_weight * hard


def _affinity_kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean over rows of KL(softmax(teacher row) || softmax(student row)) for (B, B) logits."""
    return F.kl_div(student.log_softmax(dim=1), teacher.log_softmax(dim=1), reduction="batchmean", log_target=True)


def affinity_mimicking_loss(student_image: torch.Tensor, student_text: torch.Tensor, teacher_image: torch.Tensor,
                            teacher_text: torch.Tensor, student_logit_scale: torch.Tensor | float,
                            teacher_logit_scale: torch.Tensor | float) -> torch.Tensor:
    """TinyCLIP's affinity mimicking (Wu et al., 2023): match the teacher's in-batch similarity distributions.

    ``student_image, student_text``: (B, D_s) embeddings of B image-text pairs; ``teacher_image, teacher_text``:
    (B, D_t) embeddings of the same pairs by the teacher (D_t may differ from D_s: only B x B similarities are
    compared, so no projection between the two spaces is needed). All are L2-normalized inside. The affinities are
    the CLIP logits ``exp(logit_scale) * cos`` (scales clamped as in :func:`mmutils.nn.clip_loss`), (B, B) for each
    model. Returns the mean of KL(teacher || student) over the rows of the image-to-text affinities (each image's
    distribution over the B texts) and over the rows of the text-to-image affinities: zero when the student's
    similarity matrix equals the teacher's. Each model keeps its own logit scale and the two directions are
    averaged, as in TinyCLIP's released training code. The teacher's side is detached. TinyCLIP writes the same objective
    as a cross-entropy with the teacher's softmax as target, which differs from this one by the teacher's entropy,
    a constant for the student.
    """
    check_tensor("student_image", student_image, 2, dtype="float")
    b, d_s = student_image.shape
    check_tensor("student_text", student_text, 2, size={0: b, 1: d_s}, dtype="float")
    check_tensor("teacher_image", teacher_image, 2, size={0: b}, dtype="float")
    check_tensor("teacher_text", teacher_text, 2, size={0: b, 1: teacher_image.shape[1]}, dtype="float")
    s_scale = logit_scale_to_scale(student_logit_scale)
    t_scale = logit_scale_to_scale(teacher_logit_scale).detach()
    s = s_scale * F.normalize(student_image.float(), dim=1) @ F.normalize(student_text.float(), dim=1).t()  # (B, B)
    with torch.no_grad():
        t = t_scale * F.normalize(teacher_image.float(), dim=1) @ F.normalize(teacher_text.float(), dim=1).t()
    return (_affinity_kl(s, t) + _affinity_kl(s.t(), t.t())) / 2


def teacher_outputs(teacher: nn.Module, *inputs: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """``teacher(*chunk)`` over the rows of ``inputs``, chunk by chunk, in eval mode without gradients.

    ``inputs``: tensors sharing their first dimension n (e.g. images (n, 3, H, W), ids (n, L), mask (n, L)). Returns
    the outputs concatenated along dimension 0, e.g. logits (n, C): the teacher's soft labels, computed once, as in
    offline distillation (Hinton et al., 2015), so that training the student costs no teacher forward passes.
    """
    check_instance("teacher", teacher, nn.Module)
    if not inputs:
        raise ValueError("inputs must hold at least one tensor")
    for i, x in enumerate(inputs):
        check_tensor(f"inputs[{i}]", x)
    n = inputs[0].shape[0]
    if any(x.shape[0] != n for x in inputs):
        raise ValueError(f"inputs must share their first dimension, got {[tuple(x.shape) for x in inputs]}")
    batch_size = check_int("batch_size", batch_size, min=1)
    with evaluating(teacher):
        return torch.cat([teacher(*(x[k:k + batch_size] for x in inputs)) for k in range(0, n, batch_size)])


def parameter_count(model: nn.Module) -> int:
    """The number of parameters of ``model`` (trainable or not; buffers such as BatchNorm statistics excluded)."""
    check_instance("model", model, nn.Module)
    return sum(p.numel() for p in model.parameters())
