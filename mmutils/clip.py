"""CLIP-style contrastive image-text learning (Radford et al., 2021), at laptop scale.

* :class:`DualEncoder` – an image tower and a text tower, each followed by a linear
  projection into one joint space, and a learnable, clamped logit scale (the inverse
  temperature). ``encode_image`` / ``encode_text`` give unit vectors; ``forward``
  gives the image-text logits.
* :func:`clip_loss_with_hard_negatives` – the symmetric CLIP loss where every image
  also has to beat extra negative captions (as NegCLIP, Yuksekgonul et al., 2023).
* :func:`similarity` – the (images x texts) cosine-similarity matrix of a model.
* :func:`zero_shot_classify` – classification by comparing images with one text
  prompt (or an ensemble of prompts) per class, as in CLIP's zero-shot transfer.
* :func:`swap_relation` / :func:`relation_swap_accuracy` – the relation-swap test:
  does the model prefer "a red circle left of a blue square" over the same caption
  with "right of"? (the ARO test of Yuksekgonul et al., 2023, on ShapesWorld).
* :func:`swap_positions` – the same scene with two objects exchanging places.
* :func:`tiny_clip_config` – a tiny ``transformers.CLIPConfig`` for 32x32 images and
  the course tokenizer.
* :class:`StridedCNN` – a cheap image tower (stride-2 convolutions) that returns a grid of
  region tokens, for contrastive training on a CPU budget.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .encoders import check_tensor

__all__ = [
    "CLIP_INIT_LOGIT_SCALE", "CLIP_MAX_LOGIT_SCALE", "DualEncoder", "clip_loss_with_hard_negatives",
    "similarity", "zero_shot_classify", "swap_relation", "relation_swap_accuracy", "swap_positions",
    "tiny_clip_config", "StridedCNN",
]

# CLIP initializes the logit scale at log(1 / 0.07) and clamps it at log(100).
CLIP_INIT_LOGIT_SCALE = math.log(1 / 0.07)
CLIP_MAX_LOGIT_SCALE = math.log(100.0)

_POOLINGS = ("mean", "flatten")


# --------------------------------------------------------------------------- #
# A fast image tower
# --------------------------------------------------------------------------- #
class StridedCNN(nn.Module):
    """Conv(stride 2)-BN-ReLU stages: each halves the resolution; the output keeps the spatial grid.

    ``forward(images)``: (B, C, H, W) float -> region tokens (B, N, widths[-1]) with
    N = (H / 2^stages) * (W / 2^stages), in row-major (grid) order, as
    :class:`mmutils.encoders.SpatialCNN` returns them. Striding the convolutions
    instead of max-pooling after stride-1 ones does the same downsampling at about a
    quarter of the cost on a CPU, because no layer works at full resolution after
    the first; the price is a smaller receptive field (15 pixels for 3 stages).
    ``grid(images)`` returns the feature map (B, D, h, w).
    """

    def __init__(self, in_channels: int = 3, widths: tuple[int, ...] = (16, 32, 64)):
        super().__init__()
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence) or not widths or \
                any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
            raise ValueError(f"widths must be a non-empty sequence of positive ints, got {widths!r}")
        layers, c = [], in_channels
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            c = w
        self.features = nn.Sequential(*layers)
        self.in_channels = in_channels
        self.out_dim = int(widths[-1])
        self.stages = len(widths)

    def grid(self, images: torch.Tensor) -> torch.Tensor:
        """Feature map (B, out_dim, ceil(H / 2^stages), ceil(W / 2^stages))."""
        check_tensor("images", images, 4, size={1: self.in_channels}, dtype_kind="float")
        return self.features(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.grid(images).flatten(2).transpose(1, 2)  # (B, D, h, w) -> (B, h * w, D)


# --------------------------------------------------------------------------- #
# The dual encoder
# --------------------------------------------------------------------------- #
class DualEncoder(nn.Module):
    """A CLIP dual encoder: two towers, two linear projections, one learnable logit scale.

    ``image_encoder(images)`` returns a vector per image (B, D) or region tokens
    (B, N, D) (e.g. :class:`mmutils.encoders.SpatialCNN`). Tokens are turned into
    one vector by ``pooling``: ``"mean"`` (global average pooling, which forgets
    where each region was) or ``"flatten"`` (concatenate the N tokens in grid order,
    which keeps the layout; the projection then sees every position separately).
    ``image_dim`` is the width after pooling (D, or N * D for ``"flatten"``).

    ``text_encoder(*text_inputs)`` returns (B, text_dim) or a tuple whose second
    item is the pooled (B, text_dim) vector, as the course's text encoders do
    (``(tokens, pooled)``). A locked, precomputed text tower is ``nn.Identity()``
    fed with the embeddings themselves.

    ``tokenizer`` (optional) turns a list of strings into ``text_inputs``: a
    ``transformers`` tokenizer (then ``(input_ids, attention_mask)`` from
    :func:`mmutils.text.encode_batch`, padded to ``max_length`` if given) or any
    callable returning a tensor or a tuple of tensors. It lets :meth:`embed_texts`,
    :func:`zero_shot_classify` and :func:`relation_swap_accuracy` take plain text.

    The logit scale is ``log(1 / temperature)``, a learnable scalar initialized at
    ``init_logit_scale`` (CLIP: log(1 / 0.07)); :meth:`scale` returns
    ``exp(logit_scale)`` with the exponent clamped to ``[0, max_logit_scale]``
    (CLIP: log 100), so the logits never exceed 100 times a cosine.
    """

    def __init__(self, image_encoder: nn.Module, text_encoder: nn.Module, *, image_dim: int, text_dim: int,
                 embed_dim: int = 64, pooling: str = "mean", project_text: bool = True,
                 tokenizer=None, max_length: int | None = None,
                 init_logit_scale: float = CLIP_INIT_LOGIT_SCALE, max_logit_scale: float = CLIP_MAX_LOGIT_SCALE,
                 learn_logit_scale: bool = True):
        super().__init__()
        for name, module in (("image_encoder", image_encoder), ("text_encoder", text_encoder)):
            if not isinstance(module, nn.Module):
                raise TypeError(f"{name} must be a torch.nn.Module, got {type(module).__name__}")
        for name, value in (("image_dim", image_dim), ("text_dim", text_dim), ("embed_dim", embed_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if pooling not in _POOLINGS:
            raise ValueError(f"pooling must be one of {_POOLINGS}, got {pooling!r}")
        if not project_text and text_dim != embed_dim:
            raise ValueError(f"project_text=False needs text_dim == embed_dim, got {text_dim} and {embed_dim}")
        if tokenizer is not None and not callable(tokenizer):
            raise TypeError(f"tokenizer must be a transformers tokenizer or a callable, got {type(tokenizer).__name__}")
        if not 0 <= init_logit_scale <= max_logit_scale:
            raise ValueError(f"init_logit_scale must be in [0, max_logit_scale={max_logit_scale:.3f}], "
                             f"got {init_logit_scale}")
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.image_proj = nn.Linear(image_dim, embed_dim, bias=False)
        self.text_proj = nn.Linear(text_dim, embed_dim, bias=False) if project_text else nn.Identity()
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)), requires_grad=learn_logit_scale)
        self.image_dim, self.text_dim, self.embed_dim = image_dim, text_dim, embed_dim
        self.pooling = pooling
        self.max_logit_scale = float(max_logit_scale)
        self.tokenizer = tokenizer
        self.max_length = max_length

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def scale(self) -> torch.Tensor:
        """``exp(logit_scale)`` with the exponent clamped to [0, max_logit_scale]: a scalar tensor."""
        return self.logit_scale.clamp(0.0, self.max_logit_scale).exp()

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """The image tower, pooled: (B, C, H, W) -> (B, image_dim), before the projection."""
        out = self.image_encoder(images)
        if isinstance(out, (tuple, list)):
            out = out[1]
        if not isinstance(out, torch.Tensor) or out.ndim not in (2, 3):
            raise ValueError(f"image_encoder must return (B, D) or (B, N, D), got "
                             f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
        if out.ndim == 3:
            out = out.mean(dim=1) if self.pooling == "mean" else out.flatten(1)  # (B, D) or (B, N * D)
        if out.shape[1] != self.image_dim:
            raise ValueError(f"image features have width {out.shape[1]} after pooling={self.pooling!r}, "
                             f"but image_dim={self.image_dim}")
        return out

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> unit-length embeddings (B, embed_dim)."""
        return F.normalize(self.image_proj(self.image_features(images)), dim=-1)

    def encode_text(self, *text_inputs: torch.Tensor) -> torch.Tensor:
        """Text inputs (e.g. ``ids`` (B, L) and ``mask`` (B, L)) -> unit-length embeddings (B, embed_dim)."""
        out = self.text_encoder(*text_inputs)
        if isinstance(out, (tuple, list)):
            out = out[1]
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[1] != self.text_dim:
            raise ValueError(f"text_encoder must return (B, text_dim={self.text_dim}), got "
                             f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
        return F.normalize(self.text_proj(out), dim=-1)

    def forward(self, images: torch.Tensor, *text_inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits_per_image (B, T), logits_per_text (T, B))``: scaled cosine similarities."""
        img = self.encode_image(images)  # (B, E)
        txt = self.encode_text(*text_inputs)  # (T, E)
        logits_per_image = self.scale() * img @ txt.t()
        return logits_per_image, logits_per_image.t()

    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, ...]:
        """Strings -> the text inputs of :meth:`encode_text`, on the model's device."""
        if self.tokenizer is None:
            raise ValueError("this DualEncoder has no tokenizer; pass tokenizer=... to use plain text")
        if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts:
            raise TypeError(f"texts must be a non-empty list of strings, got {type(texts).__name__}")
        from transformers import PreTrainedTokenizerBase

        if isinstance(self.tokenizer, PreTrainedTokenizerBase):
            from .text import encode_batch

            out = encode_batch(self.tokenizer, list(texts), max_length=self.max_length)
        else:
            out = self.tokenizer(list(texts))
        out = (out,) if isinstance(out, torch.Tensor) else tuple(out)
        return tuple(t.to(self.device) for t in out)

    def embed_texts(self, texts: Sequence[str], batch_size: int = 512) -> torch.Tensor:
        """Plain strings -> unit-length embeddings (n, embed_dim), in eval mode without gradients."""
        with _evaluating(self):
            parts = [self.encode_text(*self.tokenize(texts[k:k + batch_size]))
                     for k in range(0, len(texts), batch_size)]
        return torch.cat(parts)

    def embed_images(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Images (n, C, H, W) -> unit-length embeddings (n, embed_dim), in eval mode without gradients."""
        check_tensor("images", images, 4, dtype_kind="float")
        with _evaluating(self):
            parts = [self.encode_image(images[k:k + batch_size].to(self.device))
                     for k in range(0, images.shape[0], batch_size)]
        return torch.cat(parts)


@contextmanager
def _evaluating(model: nn.Module):
    """Eval mode and no gradients inside; the model's mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _check_model(model) -> None:
    if not isinstance(model, DualEncoder):
        raise TypeError(f"model must be a mmutils.clip.DualEncoder, got {type(model).__name__}")


# --------------------------------------------------------------------------- #
# Loss with hard negatives
# --------------------------------------------------------------------------- #
def clip_loss_with_hard_negatives(image_emb: torch.Tensor, text_emb: torch.Tensor, negative_text_emb: torch.Tensor,
                                  logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric CLIP loss in which each image must also beat ``negative_text_emb``.

    ``image_emb``, ``text_emb``: (B, D), row i of one matches row i of the other;
    ``negative_text_emb``: (K, D) captions that match no image (e.g. the true
    captions with the relation swapped). The image-to-text cross-entropy runs
    over B + K candidate captions (logits (B, B + K)), the text-to-image one over
    the B images as in :func:`mmutils.losses.clip_loss`; the loss is their mean.
    Vectors are L2-normalized inside; ``exp(logit_scale)`` is clamped at 100.
    This is the NegCLIP recipe of Yuksekgonul et al. (2023). Returns a scalar.
    """
    for name, t in (("image_emb", image_emb), ("text_emb", text_emb), ("negative_text_emb", negative_text_emb)):
        check_tensor(name, t, 2, dtype_kind="float")
    if image_emb.shape != text_emb.shape:
        raise ValueError(f"image_emb and text_emb must have the same shape, got {tuple(image_emb.shape)} "
                         f"and {tuple(text_emb.shape)}")
    if negative_text_emb.shape[1] != image_emb.shape[1]:
        raise ValueError(f"negative_text_emb must have dim {image_emb.shape[1]}, got shape "
                         f"{tuple(negative_text_emb.shape)}")
    if isinstance(logit_scale, (int, float)) and not isinstance(logit_scale, bool):
        logit_scale = torch.tensor(float(logit_scale), device=image_emb.device)
    if not isinstance(logit_scale, torch.Tensor) or logit_scale.numel() != 1:
        raise ValueError(f"logit_scale must be a scalar, got {logit_scale!r}")
    scale = logit_scale.exp().clamp(max=100.0)
    img = F.normalize(image_emb, dim=1)
    txt = F.normalize(torch.cat([text_emb, negative_text_emb]), dim=1)  # (B + K, D)
    logits = scale * img @ txt.t()  # (B, B + K)
    b = img.shape[0]
    targets = torch.arange(b, device=img.device)
    return 0.5 * (F.cross_entropy(logits.float(), targets) + F.cross_entropy(logits[:, :b].t().float(), targets))


# --------------------------------------------------------------------------- #
# Evaluation
# --------------------------------------------------------------------------- #
def _check_texts(name: str, texts) -> list:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"{name} must be a list of strings, got {type(texts).__name__}")
    if not texts:
        raise ValueError(f"{name} must not be empty")
    return list(texts)


def similarity(model: DualEncoder, images: torch.Tensor, texts: Sequence[str], batch_size: int = 512) -> torch.Tensor:
    """Cosine similarities of ``images`` (n, C, H, W) and ``texts`` (m strings): (n, m), on the CPU."""
    _check_model(model)
    texts = _check_texts("texts", texts)
    if not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must contain only strings")
    return (model.embed_images(images, batch_size) @ model.embed_texts(texts, batch_size).t()).cpu()


def zero_shot_classify(model: DualEncoder, images: torch.Tensor, prompts: Sequence[str] | Sequence[Sequence[str]],
                       batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP's zero-shot classifier: the class whose prompt embedding is closest to the image.

    ``images``: (n, C, H, W). ``prompts``: one string per class (C classes), or
    one list of strings per class, whose normalized embeddings are averaged and
    renormalized (prompt ensembling, Radford et al., 2021). No classifier is
    trained: the text tower writes the class weights.

    Returns ``(predictions (n,) int64, probabilities (n, C))``, where the
    probabilities are the softmax of the scaled similarities, on the CPU.
    """
    _check_model(model)
    prompts = _check_texts("prompts", prompts)
    groups = [[p] if isinstance(p, str) else list(p) for p in prompts]
    for i, g in enumerate(groups):
        if not g or not all(isinstance(t, str) for t in g):
            raise TypeError(f"prompts[{i}] must be a string or a non-empty list of strings")
    flat = [t for g in groups for t in g]
    emb = model.embed_texts(flat, batch_size)  # (sum K_c, E)
    owner = torch.tensor([c for c, g in enumerate(groups) for _ in g], device=emb.device)
    class_emb = torch.zeros(len(groups), emb.shape[1], device=emb.device).index_add_(0, owner, emb)
    class_emb = F.normalize(class_emb, dim=1)  # (C, E)
    img = model.embed_images(images, batch_size)  # (n, E)
    with torch.no_grad():
        logits = (model.scale() * img @ class_emb.t()).cpu()  # (n, C)
    return logits.argmax(dim=1), logits.softmax(dim=1)


# Relation phrases of the ShapesWorld grammar and their opposites (longest first).
_REL_SWAP = {
    "to the left of": "to the right of", "to the right of": "to the left of",
    "left of": "right of", "right of": "left of",
    "above": "below", "below": "above", "over": "under", "under": "over", "beneath": "above",
}
_REL_PATTERN = re.compile(r"\b(" + "|".join(sorted(_REL_SWAP, key=len, reverse=True)) + r")\b")


def swap_relation(caption: str) -> str:
    """The caption with every relation replaced by its opposite (left of <-> right of, above <-> below).

    "a red circle to the left of a blue square" -> "a red circle to the right of a blue square".
    The new caption is false of the scene the old one was true of.
    Raises ``ValueError`` if the caption states no relation.
    """
    if not isinstance(caption, str):
        raise TypeError(f"caption must be a str, got {type(caption).__name__}")
    swapped, count = _REL_PATTERN.subn(lambda m: _REL_SWAP[m.group(1)], caption)
    if count == 0:
        raise ValueError(f"caption states no relation (left of, right of, above, below ...): {caption!r}")
    return swapped


def relation_swap_accuracy(model: DualEncoder, images: torch.Tensor, captions: Sequence[str],
                           batch_size: int = 512) -> float:
    """Share of images whose true caption scores higher than the same caption with the relation swapped.

    ``images``: (n, C, H, W); ``captions``: n relational captions, caption i true of
    image i. Each image is compared with its caption and with
    :func:`swap_relation` of it; a tie counts one half. Chance is 0.5: a model that
    reads captions as bags of words cannot beat it (Yuksekgonul et al., 2023).
    """
    _check_model(model)
    captions = _check_texts("captions", captions)
    check_tensor("images", images, 4, dtype_kind="float")
    if images.shape[0] != len(captions):
        raise ValueError(f"images and captions must have the same length, got {images.shape[0]} and {len(captions)}")
    img = model.embed_images(images, batch_size)
    true = (img * model.embed_texts(captions, batch_size)).sum(dim=1)
    false = (img * model.embed_texts([swap_relation(c) for c in captions], batch_size)).sum(dim=1)
    return ((true > false).float() + 0.5 * (true == false).float()).mean().item()


def swap_positions(scene, i: int = 0, j: int = 1):
    """The same :class:`mmutils.world.Scene` with objects ``i`` and ``j`` exchanging their positions.

    A large object that takes the place of a small one near the border is moved
    inwards just enough to stay whole. The relation between the two is reversed
    (check it with :func:`mmutils.world.facts_hold` where it matters), while the
    set of objects, what a bag of local features sees, stays the same.
    """
    from .world import Obj, Scene

    if not isinstance(scene, Scene):
        raise TypeError(f"scene must be a Scene, got {type(scene).__name__}")
    n = len(scene.objects)
    for name, k in (("i", i), ("j", j)):
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < n:
            raise ValueError(f"{name} must be an object index in [0, {n}), got {k!r}")
    if i == j:
        raise ValueError(f"i and j must differ, got {i} and {j}")
    from .world import _RADIUS

    def placed(o, x, y):  # keep the whole object inside the image
        r = _RADIUS[o.size]
        return Obj(o.shape, o.color, o.size, min(max(x, r), 1 - r), min(max(y, r), 1 - r))

    objs = list(scene.objects)
    a, b = objs[i], objs[j]
    objs[i], objs[j] = placed(a, b.x, b.y), placed(b, a.x, a.y)
    return Scene(tuple(objs))


# --------------------------------------------------------------------------- #
# Hugging Face
# --------------------------------------------------------------------------- #
def tiny_clip_config(tokenizer, *, image_size: int = 32, patch_size: int = 8, hidden: int = 64, layers: int = 2,
                     heads: int = 4, projection_dim: int = 64, max_length: int = 32):
    """A tiny ``transformers.CLIPConfig`` for ShapesWorld images and the course tokenizer.

    Both towers are ``layers``-layer Transformers of width ``hidden`` with
    ``heads`` heads and an MLP of width ``2 * hidden``; the vision tower cuts an
    ``image_size`` image into ``(image_size / patch_size)^2`` patches (ViT); the
    text tower reads up to ``max_length`` tokens of ``tokenizer``'s vocabulary and
    pools at the ``[EOS]`` token, whose id, like those of ``[PAD]`` and ``[BOS]``,
    comes from the tokenizer. The logit scale starts at log(1 / 0.07).
    """
    from transformers import CLIPConfig, PreTrainedTokenizerBase

    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise TypeError(f"tokenizer must be a transformers tokenizer, got {type(tokenizer).__name__}")
    for name, value in (("image_size", image_size), ("patch_size", patch_size), ("hidden", hidden),
                        ("layers", layers), ("heads", heads), ("projection_dim", projection_dim),
                        ("max_length", max_length)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if image_size % patch_size:
        raise ValueError(f"image_size ({image_size}) must be divisible by patch_size ({patch_size})")
    if hidden % heads:
        raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
    common = dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                  num_attention_heads=heads, projection_dim=projection_dim)
    text = dict(common, vocab_size=len(tokenizer), max_position_embeddings=max_length,
                pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id)
    vision = dict(common, image_size=image_size, patch_size=patch_size, num_channels=3)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim,
                      logit_scale_init_value=CLIP_INIT_LOGIT_SCALE)
