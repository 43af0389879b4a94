"""CLIP-style contrastive image-text learning (Radford et al., 2021, chapter 9): a dual encoder and its evaluations.

* :class:`DualEncoderConfig` / :class:`DualEncoder` – two towers, two projections, a learnable clamped logit scale
  (defined in :mod:`mmutils.nn.encoders`, where chapter 18 also finds them); its loss is
  :func:`mmutils.nn.losses.clip_loss` (``negative_text_emb=`` for NegCLIP's hard negatives).
* :func:`similarity` – the (images x texts) cosine-similarity matrix of a model.
* :func:`zero_shot_classify` – CLIP's zero-shot classification with one prompt (or an ensemble) per class.
* :func:`relation_swap_accuracy` – the relation-swap test of ARO (Yuksekgonul et al., 2023) on ShapesWorld.
* :func:`tiny_clip_config` – a tiny ``transformers.CLIPConfig`` for 32x32 images and the course tokenizer.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from . import world
from .checks import check_instance, check_int, check_tensor, check_texts
from .nn.encoders import DualEncoder, DualEncoderConfig
from .nn.losses import CLIP_INIT_LOGIT_SCALE

__all__ = ["DualEncoderConfig", "DualEncoder", "similarity", "zero_shot_classify", "relation_swap_accuracy",
           "tiny_clip_config"]


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
