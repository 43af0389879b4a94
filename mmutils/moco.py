"""Momentum contrast (MoCo v2, chapter 10) and the tools to train and evaluate it on a laptop CPU.

MoCo (He et al., 2020) learns image features without labels by instance discrimination, with a queue of keys from
earlier batches and a momentum key encoder; MoCo v2 (Chen et al., 2020) adds an MLP head and stronger augmentation
(:mod:`mmutils.augment`). The backbone is any module with an ``out_dim``, e.g. ``mmutils.nn.ConvTower(pool="mean")``.

* :func:`momentum_update`, :class:`KeyQueue`, :class:`MoCo` – the parts and the model.
* :class:`InBatchContrast` – the baseline with negatives from the batch only, in the symmetric form of CLIP and MoCo v3
  (B - 1 negatives per view; SimCLR's NT-Xent would use 2B - 2).
* :func:`extract_features`, :func:`linear_probe`, :func:`few_label_probe` – evaluation on frozen features.
"""
from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_float, check_instance, check_int, check_tensor
from .nn.losses import info_nce, moco_loss
from .runtime import evaluating

__all__ = ["momentum_update", "KeyQueue", "MoCo", "InBatchContrast", "extract_features", "linear_probe",
           "few_label_probe"]


# -- Momentum update and the queue --------------------------------------------
@torch.no_grad()
def momentum_update(online: nn.Module, target: nn.Module, momentum: float) -> None:
    """Exponential moving average, in place: ``target <- m * target + (1 - m) * online``.

    Applied to every parameter (``m = 0`` copies the online weights, ``m = 1`` keeps the target); buffers (BatchNorm
    running statistics) are left alone, as in the MoCo code. The two modules must have the same architecture. This is
    MoCo's key-encoder update (He et al., 2020, Eq. 2); no gradient flows through it.
    """
    check_instance("online", online, nn.Module)
    check_instance("target", target, nn.Module)
    m = check_float("momentum", momentum, min=0.0, max=1.0)
    p_on, p_tg = list(online.parameters()), list(target.parameters())
    if len(p_on) != len(p_tg) or any(a.shape != b.shape for a, b in zip(p_on, p_tg)):
        raise ValueError("online and target must have the same parameters (same architecture)")
    _ema(p_on, p_tg, m)


def _ema(online, target, m: float) -> None:
    for a, b in zip(online, target):
        b.mul_(m).add_(a.detach(), alpha=1.0 - m)


class KeyQueue(nn.Module):
    """A first-in first-out queue of ``size`` key vectors of width ``dim`` (MoCo's dictionary).

    ``keys`` is a buffer (size, dim), initialized with random unit vectors as in the MoCo code; ``ptr`` is the slot the
    next key goes into. :meth:`enqueue` writes a batch of keys (B, dim) at ``ptr, ptr + 1, ...`` modulo ``size``
    (wrapping around to the start), overwriting the oldest keys, and moves ``ptr`` by B. A batch longer than the queue
    keeps only its last ``size`` keys. ``filled`` counts how many real keys the queue holds (at most ``size``).

    Optionally every key carries an integer ``ids`` entry (a buffer (size,), -1 for the initial random keys), e.g. the
    class of the caption a text key came from, so that a loss can find queued keys that are in fact positives
    (duplicates).
    """

    def __init__(self, size: int, dim: int, *, generator: torch.Generator | None = None):
        super().__init__()
        self.size = check_int("size", size, min=1)
        self.dim = check_int("dim", dim, min=1)
        self.register_buffer("keys", F.normalize(torch.randn(size, dim, generator=generator), dim=1))
        self.register_buffer("ids", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, ids: torch.Tensor | None = None) -> None:
        """Write ``keys`` (B, dim) (and their ``ids`` (B,), if given) into the queue, oldest out; keeps no gradient."""
        check_tensor("keys", keys, 2, size={1: self.dim}, dtype="float")
        if ids is not None:
            check_tensor("ids", ids, 1, size={0: keys.shape[0]}, dtype="int")
        self._push(keys, ids)

    def _push(self, keys: torch.Tensor, ids: torch.Tensor | None = None) -> None:
        b, ptr = keys.shape[0], int(self.ptr)
        if b > self.size:  # only the last `size` keys survive; they land where sequential writes would put them
            start = ptr + b - self.size
            keys = keys[-self.size:]
            ids = None if ids is None else ids[-self.size:]
        else:
            start = ptr
        idx = (start + torch.arange(keys.shape[0], device=self.keys.device)) % self.size
        self.keys[idx] = keys.detach().to(self.keys.dtype)
        self.ids[idx] = -1 if ids is None else ids.to(self.ids.device, torch.long)
        self.ptr.fill_((ptr + b) % self.size)
        self.filled.fill_(min(int(self.filled) + b, self.size))

    def forward(self) -> torch.Tensor:
        """The queued keys (size, dim)."""
        return self.keys


# -- MoCo and the in-batch baseline -------------------------------------------
def _backbone_and_head(encoder_fn: Callable[[], nn.Module], dim: int, hidden: int | None) -> tuple[nn.Module, ...]:
    """``encoder_fn()`` and a projection head ``out_dim -> hidden -> dim`` (MoCo v2) or ``out_dim -> dim`` (v1)."""
    if not callable(encoder_fn) or isinstance(encoder_fn, nn.Module):
        raise TypeError(f"encoder_fn must be a function that returns a new nn.Module, got {type(encoder_fn).__name__}")
    encoder = check_instance("encoder_fn()", encoder_fn(), nn.Module)
    out_dim = check_int("encoder_fn().out_dim", getattr(encoder, "out_dim", None), min=1)
    dim = check_int("dim", dim, min=1)
    if hidden is None:
        return encoder, nn.Linear(out_dim, dim)
    hidden = check_int("hidden", hidden, min=1)
    return encoder, nn.Sequential(nn.Linear(out_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))


class MoCo(nn.Module):
    """MoCo v2: a query encoder trained by gradient, a momentum key encoder, a queue of negative keys.

    ``encoder_fn()`` builds a backbone (B, C, H, W) -> (B, F) with an ``out_dim`` attribute (F), e.g.
    ``lambda: ConvTower(pool="mean")``; MoCo puts a projection head on top (an MLP ``F -> hidden -> dim`` as in MoCo v2,
    or linear with ``hidden=None`` as in MoCo v1) and deep-copies backbone + head into the key encoder, whose parameters
    get no gradient (``requires_grad=False``).

    ``forward(x_q, x_k, ids=None)``: two augmented views (B, C, H, W) of the same images. In training mode it (1) updates
    the key encoder by momentum, (2) encodes queries ``q`` (B, dim) and, without gradient, keys ``k`` (B, dim),
    (3) computes :func:`mmutils.nn.losses.moco_loss` (positive logit ``q . k``, negatives ``q . queue``, over
    ``temperature``), and (4) only then enqueues ``k``, so a batch is never its own negative. Returns the scalar loss.
    In eval mode nothing is updated (no momentum step, no enqueue). ``ids`` (B,) int, optional, are stored with the keys
    in ``queue.ids`` (e.g. the index of each source image, to count how often a query meets an older key of its own
    image among the negatives: :meth:`own_image_rate`).

    ``shuffle_bn`` (an int ``S`` >= 2, or None) emulates Shuffle-BN on one process (He et al., 2020, Sec. 3.3): both
    encoders run on ``S`` sub-batches separately, so BatchNorm statistics are per sub-batch, and the key encoder sees
    the batch in a random order (unshuffled afterwards), as in the authors' one-GPU CIFAR-10 demo with its split
    BatchNorm. A key is then normalized with the statistics of a random sub-batch of images, which shares only about a
    fraction ``1/S`` of its images with the query's sub-batch (half at ``S = 2``) instead of all of them; a key still
    lands in its query's own sub-batch with probability ``1/S``. (Moving whole sub-batches, e.g. the keys of sub-batch
    ``g`` computed in sub-batch ``g + 1``, would not help: the statistics would come from the same images.)
    ``symmetric=True`` (as in that demo and in MoCo v3) also uses ``x_k`` as queries for the keys of ``x_q``,
    averages the two losses and enqueues both sets of keys: twice the query-side compute, twice the training signal
    per step. ``backbone`` is the query backbone: the
    part kept for downstream tasks.
    """

    def __init__(self, encoder_fn: Callable[[], nn.Module], dim: int = 64, queue_size: int = 4096,
                 momentum: float = 0.99, temperature: float = 0.2, *, hidden: int | None = 256,
                 shuffle_bn: int | None = None, symmetric: bool = False):
        super().__init__()
        self.backbone, self.head = _backbone_and_head(encoder_fn, dim, hidden)
        self.dim = dim
        self.momentum = check_float("momentum", momentum, min=0.0, max=1.0)
        self.temperature = check_float("temperature", temperature, positive=True)
        self.shuffle_bn = None if shuffle_bn is None else check_int("shuffle_bn", shuffle_bn, min=2)
        self.symmetric = check_instance("symmetric", symmetric, bool)
        self.key_backbone = copy.deepcopy(self.backbone)
        self.key_head = copy.deepcopy(self.head)
        for p in [*self.key_backbone.parameters(), *self.key_head.parameters()]:
            p.requires_grad_(False)
        self.queue = KeyQueue(check_int("queue_size", queue_size, min=1), dim)

    # -- the two encoders -------------------------------------------------------
    def _run(self, backbone: nn.Module, head: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.shuffle_bn is None or not self.training:
            return F.normalize(head(backbone(x)), dim=1)
        return torch.cat([F.normalize(head(backbone(c)), dim=1) for c in x.chunk(self.shuffle_bn)])

    def encode_query(self, x: torch.Tensor) -> torch.Tensor:
        """Unit query vectors (B, dim), with gradient."""
        return self._run(self.backbone, self.head, x)

    @torch.no_grad()
    def encode_key(self, x: torch.Tensor) -> torch.Tensor:
        """Unit key vectors (B, dim) from the momentum encoder, without gradient (Shuffle-BN if enabled)."""
        if self.shuffle_bn is None or not self.training:
            return self._run(self.key_backbone, self.key_head, x)
        perm = torch.randperm(x.shape[0], device=x.device)
        k = self._run(self.key_backbone, self.key_head, x[perm])
        return k[torch.argsort(perm)]  # undo the shuffle: row i is again the key of image i

    @torch.no_grad()
    def momentum_update(self) -> None:
        """``key <- m * key + (1 - m) * query`` for backbone and head (see :func:`momentum_update`)."""
        _ema(self.backbone.parameters(), self.key_backbone.parameters(), self.momentum)
        _ema(self.head.parameters(), self.key_head.parameters(), self.momentum)

    @torch.no_grad()
    def dequeue_and_enqueue(self, keys: torch.Tensor, ids: torch.Tensor | None = None) -> None:
        """Push ``keys`` (B, dim) (and ``ids`` (B,)) into the queue, dropping the oldest (see :class:`KeyQueue`)."""
        self.queue._push(keys, ids)

    @torch.no_grad()
    def own_image_rate(self, ids: torch.Tensor) -> float:
        """The fraction of ``ids`` (B,) that occur among the queued keys' ids: queries that meet a key of their own image.

        Call it before ``forward`` on the same batch: the queue then holds only earlier batches. Such a key is a view
        of the query's own image, a positive, but the loss counts it as a negative.
        """
        check_tensor("ids", ids, 1, dtype="int")
        return float((ids.to(self.queue.ids.device)[:, None] == self.queue.ids[None, :]).any(1).float().mean())

    def forward(self, x_q: torch.Tensor, x_k: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        check_tensor("x_q", x_q, 4, dtype="float")
        check_tensor("x_k", x_k, 4, size=dict(enumerate(x_q.shape)), dtype="float")  # the shape of x_q
        if ids is not None:
            check_tensor("ids", ids, 1, size={0: x_q.shape[0]}, dtype="int")
        if self.training:
            self.momentum_update()
        queue = self.queue.keys.clone()  # (K, dim): the negatives, as they were before this batch
        q = self.encode_query(x_q)  # (B, dim)
        k = self.encode_key(x_k)  # (B, dim), no gradient
        loss = moco_loss(q, k, queue, self.temperature)
        if self.symmetric:  # each view is also a query for the other one's key
            k_q = self.encode_key(x_q)  # (B, dim)
            loss = 0.5 * (loss + moco_loss(self.encode_query(x_k), k_q, queue, self.temperature))
            k = torch.cat([k_q, k])  # (2B, dim)
            ids = None if ids is None else torch.cat([ids, ids])
        if self.training:  # after the logits: the current keys are not their own negatives
            self.dequeue_and_enqueue(k, ids)
        return loss


class InBatchContrast(nn.Module):
    """The in-batch baseline: one encoder, negatives from the batch only, no queue, no momentum encoder.

    Same backbone and projection head as :class:`MoCo`. ``forward(x_1, x_2)`` encodes both views (B, C, H, W) with the
    same (trained) encoder and returns the symmetric InfoNCE ``(info_nce(z1, z2) + info_nce(z2, z1)) / 2``, the form of
    CLIP (Radford et al., 2021) and MoCo v3 (Chen et al., 2021): each view is scored against the B views of the other
    side, its positive and B - 1 negatives. SimCLR's NT-Xent (Chen et al., 2020) also counts the other views of its
    own side, 2B - 2 negatives.
    """

    def __init__(self, encoder_fn: Callable[[], nn.Module], dim: int = 64, temperature: float = 0.2, *,
                 hidden: int | None = 256):
        super().__init__()
        self.backbone, self.head = _backbone_and_head(encoder_fn, dim, hidden)
        self.temperature = check_float("temperature", temperature, positive=True)

    def forward(self, x_1: torch.Tensor, x_2: torch.Tensor) -> torch.Tensor:
        check_tensor("x_1", x_1, 4, dtype="float")
        check_tensor("x_2", x_2, 4, size=dict(enumerate(x_1.shape)), dtype="float")  # the shape of x_1
        z = self.head(self.backbone(torch.cat([x_1, x_2])))  # one pass: BatchNorm sees both views
        z1, z2 = z.chunk(2)
        return 0.5 * (info_nce(z1, z2, self.temperature) + info_nce(z2, z1, self.temperature))


# -- Evaluation: frozen features and a linear probe ---------------------------
def extract_features(encoder: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Features of a frozen encoder: ``encoder(images)`` in eval mode, in chunks, as float32 on the CPU.

    ``images``: (N, C, H, W); returns (N, F). The encoder's train/eval mode is restored.
    """
    check_instance("encoder", encoder, nn.Module)
    check_tensor("images", images, 4, dtype="float")
    batch_size = check_int("batch_size", batch_size, min=1)
    with evaluating(encoder):
        out = [encoder(images[i:i + batch_size]).float().cpu() for i in range(0, images.shape[0], batch_size)]
    return torch.cat(out)


def linear_probe(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                 test_labels: torch.Tensor, *, C: float = 1.0, max_iter: int = 2000) -> float:
    """Test accuracy of a logistic regression trained on frozen features (the linear-evaluation protocol).

    ``train_feats`` (N, F) with ``train_labels`` (N,) int; ``test_feats`` (M, F) with ``test_labels`` (M,). Features are
    standardized with the training mean and standard deviation, then scikit-learn's ``LogisticRegression`` (L-BFGS,
    inverse regularization strength ``C``) is fit to convergence. Returns the test accuracy, a float in [0, 1].
    """
    check_tensor("train_feats", train_feats, 2, dtype="float")
    check_tensor("train_labels", train_labels, 1, size={0: len(train_feats)}, dtype="int")
    check_tensor("test_feats", test_feats, 2, size={1: train_feats.shape[1]}, dtype="float")
    check_tensor("test_labels", test_labels, 1, size={0: len(test_feats)}, dtype="int")
    return _probe(train_feats, train_labels, test_feats, test_labels, check_float("C", C, positive=True),
                  check_int("max_iter", max_iter, min=1))


def _probe(xtr, ytr, xte, yte, C: float, max_iter: int = 2000) -> float:
    from sklearn.linear_model import LogisticRegression

    xtr, xte = xtr.detach().float().cpu(), xte.detach().float().cpu()
    ytr, yte = ytr.detach().cpu(), yte.detach().cpu()
    mean, std = xtr.mean(0), xtr.std(0).clamp(min=1e-6)
    clf = LogisticRegression(C=C, max_iter=max_iter)
    clf.fit(((xtr - mean) / std).numpy(), ytr.numpy())
    pred = clf.predict(((xte - mean) / std).numpy())
    return float((torch.from_numpy(pred) == yte).float().mean())


def few_label_probe(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                    test_labels: torch.Tensor, *, per_class: int, draws: int = 10, seed: int = 0,
                    C: float = 1.0) -> tuple[float, float]:
    """Linear-probe accuracy with only ``per_class`` labelled examples of each class, averaged over ``draws``.

    Each draw picks ``per_class`` rows of every class of ``train_labels`` (N,) at random (a ``torch.Generator`` seeded
    with ``seed + draw``), fits :func:`linear_probe` on them and scores it on all of ``test_feats`` (M, F) /
    ``test_labels`` (M,). Returns ``(mean, standard deviation)`` of the accuracies over the draws: with few labels one
    draw is a noisy estimate, the semi-supervised protocol of SimCLR and MoCo (Chen et al., 2020) reports the average.
    """
    check_tensor("train_feats", train_feats, 2, dtype="float")
    check_tensor("train_labels", train_labels, 1, size={0: len(train_feats)}, dtype="int")
    check_tensor("test_feats", test_feats, 2, size={1: train_feats.shape[1]}, dtype="float")
    check_tensor("test_labels", test_labels, 1, size={0: len(test_feats)}, dtype="int")
    per_class = check_int("per_class", per_class, min=1)
    draws = check_int("draws", draws, min=1)
    seed = check_int("seed", seed, min=0)
    C = check_float("C", C, positive=True)
    xtr, ytr = train_feats.detach().float().cpu(), train_labels.detach().cpu()
    classes = torch.unique(ytr)
    counts = torch.stack([(ytr == c).sum() for c in classes])
    if int(counts.min()) < per_class:
        raise ValueError(f"per_class={per_class} but class {int(classes[counts.argmin()])} has only "
                         f"{int(counts.min())} rows in train_labels")
    accs = []
    for d in range(draws):
        g = torch.Generator().manual_seed(seed + d)
        idx = torch.cat([torch.nonzero(ytr == c).flatten()[torch.randperm(int(n), generator=g)[:per_class]]
                         for c, n in zip(classes, counts)])
        accs.append(_probe(xtr[idx], ytr[idx], test_feats, test_labels, C))
    acc = torch.tensor(accs)
    return float(acc.mean()), float(acc.std()) if draws > 1 else 0.0
