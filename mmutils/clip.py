"""CLIP-style contrastive image-text learning (Radford et al., 2021, chapter 9): a dual encoder and its evaluations.

* :class:`DualEncoderConfig` / :class:`DualEncoder` – two towers, two projections, a learnable clamped logit scale;
  its loss is :func:`mmutils.nn.losses.clip_loss` (``negative_text_emb=`` for NegCLIP's hard negatives).
* :func:`similarity` – the (images x texts) cosine-similarity matrix of a model.
* :func:`zero_shot_classify` – CLIP's zero-shot classification with one prompt (or an ensemble) per class.
* :func:`relation_swap_accuracy` – the relation-swap test of ARO (Yuksekgonul et al., 2023) on ShapesWorld.
* :func:`tiny_clip_config` – a tiny ``transformers.CLIPConfig`` for 32x32 images and the course tokenizer.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import world
from .checks import check_choice, check_float, check_instance, check_int, check_tensor, check_texts, config_with
from .nn.losses import CLIP_INIT_LOGIT_SCALE, CLIP_MAX_LOGIT_SCALE, logit_scale_to_scale
from .runtime import evaluating
from .text import encode_batch

__all__ = ["DualEncoderConfig", "DualEncoder", "similarity", "zero_shot_classify", "relation_swap_accuracy",
           "tiny_clip_config"]


@dataclass
class DualEncoderConfig:
    """Sizes and options of a :class:`DualEncoder`.

    ``image_dim``: width of the image features after pooling (D, or N * D for ``pooling="flatten"``); ``text_dim``:
    width of the pooled text features; ``embed_dim``: width of the joint space; ``pooling``: ``"mean"`` or ``"flatten"``
    for region tokens; ``project_text=False`` keeps the text features as they are (needs ``text_dim == embed_dim``, e.g.
    a locked MiniLM space as in LiT); ``max_length``: padding length of a ``transformers`` tokenizer; the logit scale
    starts at ``init_logit_scale`` (CLIP: log(1 / 0.07)), is clamped to ``[0, max_logit_scale]`` (CLIP: log 100) and is
    learned if ``learn_logit_scale``.
    """

    image_dim: int
    text_dim: int
    embed_dim: int = 64
    pooling: str = "mean"
    project_text: bool = True
    max_length: int | None = None
    init_logit_scale: float = CLIP_INIT_LOGIT_SCALE
    max_logit_scale: float = CLIP_MAX_LOGIT_SCALE
    learn_logit_scale: bool = True

    def __post_init__(self) -> None:
        for name in ("image_dim", "text_dim", "embed_dim"):
            check_int(name, getattr(self, name), min=1)
        check_choice("pooling", self.pooling, ("mean", "flatten"))
        if not self.project_text and self.text_dim != self.embed_dim:
            raise ValueError(f"project_text=False needs text_dim == embed_dim, got {self.text_dim} "
                             f"and {self.embed_dim}")
        if self.max_length is not None:
            check_int("max_length", self.max_length, min=1)
        check_float("init_logit_scale", self.init_logit_scale, min=0.0,
                    max=check_float("max_logit_scale", self.max_logit_scale, positive=True))


class DualEncoder(nn.Module):
    """A CLIP dual encoder: two towers, two linear projections, one learnable logit scale.

    ``image_encoder(images)`` returns a vector per image (B, D) or region tokens (B, N, D) (e.g.
    :class:`mmutils.nn.ConvTower`). Tokens are turned into one vector by ``config.pooling``: ``"mean"`` (global average
    pooling, which forgets where each region was) or ``"flatten"`` (concatenate the N tokens in grid order, which keeps
    the layout; the projection then sees every position separately).

    ``text_encoder(*text_inputs)`` returns (B, text_dim) or a tuple whose second item is the pooled (B, text_dim)
    vector, as the course's text encoders do (``(tokens, pooled)``). A locked, precomputed text tower is
    ``nn.Identity()`` fed with the embeddings themselves.

    ``tokenizer`` (optional) turns a list of strings into ``text_inputs``: a ``transformers`` tokenizer (then
    ``(input_ids, attention_mask)`` from :func:`mmutils.text.encode_batch`, padded to ``max_length`` if given) or any
    callable returning a tensor or a tuple of tensors. It lets :meth:`embed_texts`, :func:`zero_shot_classify` and
    :func:`relation_swap_accuracy` take plain text.

    ``config`` is a :class:`DualEncoderConfig`; keyword ``overrides`` replace its fields
    (``DualEncoder(img, txt, image_dim=64, text_dim=64)`` works without one). :meth:`scale` is ``exp(logit_scale)``
    clamped by :func:`mmutils.nn.losses.logit_scale_to_scale`, so the logits never exceed ``exp(max_logit_scale)``
    (CLIP: 100) times a cosine.
    """

    def __init__(self, image_encoder: nn.Module, text_encoder: nn.Module, config: DualEncoderConfig | None = None,
                 *, tokenizer=None, **overrides):
        super().__init__()
        check_instance("image_encoder", image_encoder, nn.Module)
        check_instance("text_encoder", text_encoder, nn.Module)
        if tokenizer is not None and not callable(tokenizer):
            raise TypeError(f"tokenizer must be a transformers tokenizer or a callable, got {type(tokenizer).__name__}")
        c = self.config = config_with(DualEncoderConfig, config, overrides)
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.image_proj = nn.Linear(c.image_dim, c.embed_dim, bias=False)
        self.text_proj = nn.Linear(c.text_dim, c.embed_dim, bias=False) if c.project_text else nn.Identity()
        self.logit_scale = nn.Parameter(torch.tensor(float(c.init_logit_scale)), requires_grad=c.learn_logit_scale)
        self.tokenizer = tokenizer

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters (where :meth:`tokenize` puts the text inputs)."""
        return self.logit_scale.device

    def scale(self) -> torch.Tensor:
        """``exp(logit_scale)`` with the exponent clamped to [0, max_logit_scale]: a scalar tensor."""
        return logit_scale_to_scale(self.logit_scale, self.config.max_logit_scale)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """The image tower, pooled: (B, C, H, W) -> (B, image_dim), before the projection."""
        out = self.image_encoder(images)
        out = out[1] if isinstance(out, (tuple, list)) else out
        if out.ndim == 3:
            out = out.mean(dim=1) if self.config.pooling == "mean" else out.flatten(1)  # (B, D) or (B, N * D)
        if out.ndim != 2 or out.shape[1] != self.config.image_dim:
            raise ValueError(f"image_encoder must give (B, image_dim={self.config.image_dim}) features after "
                             f"pooling={self.config.pooling!r}, got shape {tuple(out.shape)}")
        return out

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> unit-length embeddings (B, embed_dim)."""
        return F.normalize(self.image_proj(self.image_features(images)), dim=-1)

    def encode_text(self, *text_inputs: torch.Tensor) -> torch.Tensor:
        """Text inputs (e.g. ``ids`` (B, L) and ``mask`` (B, L)) -> unit-length embeddings (B, embed_dim)."""
        out = self.text_encoder(*text_inputs)
        out = out[1] if isinstance(out, (tuple, list)) else out
        if out.ndim != 2 or out.shape[1] != self.config.text_dim:
            raise ValueError(f"text_encoder must return (B, text_dim={self.config.text_dim}), "
                             f"got shape {tuple(out.shape)}")
        return F.normalize(self.text_proj(out), dim=-1)

    def forward(self, images: torch.Tensor, *text_inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits_per_image (B, T), logits_per_text (T, B))``: scaled cosine similarities."""
        img = self.encode_image(images)  # (B, E)
        txt = self.encode_text(*text_inputs)  # (T, E)
        logits_per_image = self.scale() * img @ txt.t()
        return logits_per_image, logits_per_image.t()

    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, ...]:
        """Strings -> the text inputs of :meth:`encode_text`, on the model's device."""
        return self._text_inputs(check_texts("texts", texts))

    def _text_inputs(self, texts: list[str]) -> tuple[torch.Tensor, ...]:
        if self.tokenizer is None:
            raise ValueError("this DualEncoder has no tokenizer; pass tokenizer=... to use plain text")
        from transformers import PreTrainedTokenizerBase

        if isinstance(self.tokenizer, PreTrainedTokenizerBase):
            out = encode_batch(self.tokenizer, texts, max_length=self.config.max_length)
        else:
            out = self.tokenizer(texts)
        out = (out,) if isinstance(out, torch.Tensor) else tuple(out)
        return tuple(t.to(self.device) for t in out)

    def embed_texts(self, texts: Sequence[str], batch_size: int = 512) -> torch.Tensor:
        """Plain strings -> unit-length embeddings (n, embed_dim), in eval mode without gradients."""
        return self._embed_texts(check_texts("texts", texts), check_int("batch_size", batch_size, min=1))

    def embed_images(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Images (n, C, H, W) -> unit-length embeddings (n, embed_dim), in eval mode without gradients."""
        return self._embed_images(check_tensor("images", images, 4, dtype="float"),
                                  check_int("batch_size", batch_size, min=1))

    def _embed_texts(self, texts: list[str], batch_size: int) -> torch.Tensor:
        with evaluating(self):
            parts = [self.encode_text(*self._text_inputs(texts[k:k + batch_size]))
                     for k in range(0, len(texts), batch_size)]
        return torch.cat(parts)

    def _embed_images(self, images: torch.Tensor, batch_size: int) -> torch.Tensor:
        with evaluating(self):
            parts = [self.encode_image(images[k:k + batch_size].to(self.device))
                     for k in range(0, images.shape[0], batch_size)]
        return torch.cat(parts)


# -- Evaluation ---------------------------------------------------------------
def similarity(model: DualEncoder, images: torch.Tensor, texts: Sequence[str], batch_size: int = 512) -> torch.Tensor:
    """Cosine similarities of ``images`` (n, C, H, W) and ``texts`` (m strings): (n, m), on the CPU."""
    check_instance("model", model, DualEncoder)
    check_tensor("images", images, 4, dtype="float")
    batch_size = check_int("batch_size", batch_size, min=1)
    texts = check_texts("texts", texts)
    return (model._embed_images(images, batch_size) @ model._embed_texts(texts, batch_size).t()).cpu()


def zero_shot_classify(model: DualEncoder, images: torch.Tensor, prompts: Sequence[str] | Sequence[Sequence[str]],
                       batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP's zero-shot classifier: the class whose prompt embedding is closest to the image.

    ``images``: (n, C, H, W). ``prompts``: one string per class (C classes), or one list of strings per class, whose
    normalized embeddings are averaged and renormalized (prompt ensembling, Radford et al., 2021). No classifier is
    trained: the text tower writes the class weights.

    Returns ``(predictions (n,) int64, probabilities (n, C))``, where the probabilities are the softmax of the scaled
    similarities, on the CPU.
    """
    check_instance("model", model, DualEncoder)
    check_tensor("images", images, 4, dtype="float")
    batch_size = check_int("batch_size", batch_size, min=1)
    check_instance("prompts", prompts, (list, tuple))
    groups = [check_texts(f"prompts[{c}]", [p] if isinstance(p, str) else p) for c, p in enumerate(prompts)]
    if not groups:
        raise ValueError("prompts must not be empty")
    emb = model._embed_texts([t for g in groups for t in g], batch_size)  # (sum K_c, E)
    owner = torch.tensor([c for c, g in enumerate(groups) for _ in g], device=emb.device)
    class_emb = torch.zeros(len(groups), emb.shape[1], device=emb.device).index_add_(0, owner, emb)
    class_emb = F.normalize(class_emb, dim=1)  # (C, E)
    img = model._embed_images(images, batch_size)  # (n, E)
    with torch.no_grad():
        logits = (model.scale() * img @ class_emb.t()).cpu()  # (n, C)
    return logits.argmax(dim=1), logits.softmax(dim=1)


def relation_swap_accuracy(model: DualEncoder, images: torch.Tensor, captions: Sequence[str],
                           batch_size: int = 512) -> float:
    """Share of images whose true caption scores higher than the same caption with the relation swapped.

    ``images``: (n, C, H, W); ``captions``: n relational captions, caption i true of image i. Each image is compared
    with its caption and with :func:`mmutils.world.swap_relation` of it; a tie counts one half. Chance is 0.5: a model
    that reads captions as bags of words cannot beat it (Yuksekgonul et al., 2023).
    """
    check_instance("model", model, DualEncoder)
    check_tensor("images", images, 4, dtype="float")
    batch_size = check_int("batch_size", batch_size, min=1)
    captions = check_texts("captions", captions)
    if len(images) != len(captions):
        raise ValueError(f"images and captions must have the same length, got {len(images)} and {len(captions)}")
    swapped = [world.swap_relation(c) for c in captions]
    img = model._embed_images(images, batch_size)
    true = (img * model._embed_texts(captions, batch_size)).sum(dim=1)
    false = (img * model._embed_texts(swapped, batch_size)).sum(dim=1)
    return ((true > false).float() + 0.5 * (true == false).float()).mean().item()


# -- Hugging Face -------------------------------------------------------------
def tiny_clip_config(tokenizer, *, image_size: int = 32, patch_size: int = 8, hidden: int = 64, layers: int = 2,
                     heads: int = 4, projection_dim: int = 64, max_length: int = 32):
    """A tiny ``transformers.CLIPConfig`` for ShapesWorld images and the course tokenizer.

    Both towers are ``layers``-layer Transformers of width ``hidden`` with ``heads`` heads and an MLP of width
    ``2 * hidden``; the vision tower cuts an ``image_size`` image into ``(image_size / patch_size)^2`` patches (ViT);
    the text tower reads up to ``max_length`` tokens of ``tokenizer``'s vocabulary and pools at the ``[EOS]`` token,
    whose id, like those of ``[PAD]`` and ``[BOS]``, comes from the tokenizer. The logit scale starts at log(1 / 0.07).
    """
    from transformers import CLIPConfig, PreTrainedTokenizerBase

    check_instance("tokenizer", tokenizer, PreTrainedTokenizerBase)
    for name, value in (("image_size", image_size), ("patch_size", patch_size), ("hidden", hidden),
                        ("layers", layers), ("heads", heads), ("projection_dim", projection_dim),
                        ("max_length", max_length)):
        check_int(name, value, min=1)
    if image_size % patch_size or hidden % heads:
        raise ValueError(f"image_size ({image_size}) must be divisible by patch_size ({patch_size}) and "
                         f"hidden ({hidden}) by heads ({heads})")
    common = dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                  num_attention_heads=heads, projection_dim=projection_dim)
    text = dict(common, vocab_size=len(tokenizer), max_position_embeddings=max_length,
                pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id)
    vision = dict(common, image_size=image_size, patch_size=patch_size, num_channels=3)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim,
                      logit_scale_init_value=CLIP_INIT_LOGIT_SCALE)
