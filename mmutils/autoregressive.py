"""The autoregressive line of text-to-image generation in miniature (chapter 6): image tokens and a causal Transformer.

DALL·E (Ramesh et al., 2021) and Parti (Yu et al., 2022) turn an image into a grid of discrete tokens with a learned
codebook (a discrete VAE; a ViT-VQGAN) and train a Transformer to predict those tokens one after the other: DALL·E
one decoder over the caption's tokens and then the image's, Parti an encoder for the caption and a decoder that
cross-attends to it. Here the codebook is learned by k-means (``faiss``) on ``patch`` x ``patch`` blocks of a trained
autoencoder's latent grid (:func:`fit_codebook`, :func:`to_tokens`, :func:`from_tokens`); a VQ-VAE learns the
codebook and the autoencoder together, k-means on frozen latents is the quick stand-in. The Transformer is
``transformers``' GPT-2 (:func:`token_transformer`) over one sequence, the caption's ids then the image's tokens,
as in DALL·E;
:func:`token_loss` is the cross-entropy of each image token given everything before it, with the caption replaced
by padding for a fraction of the rows, so that the same network also learns the unconditional model that
classifier-free guidance needs (Parti uses guidance too). :func:`sample_tokens` draws the tokens one at a time,
with guidance and a key-value cache.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .checks import check_float, check_int, check_tensor

__all__ = ["fit_codebook", "from_tokens", "sample_tokens", "to_tokens", "token_loss", "token_transformer"]


def _blocks(latents: torch.Tensor, patch: int) -> torch.Tensor:
    """(n, C, H, W) -> (n, T, C * patch²): the ``patch`` x ``patch`` blocks, row-major."""
    if latents.shape[2] % patch or latents.shape[3] % patch:
        raise ValueError(f"patch must divide the latent grid {tuple(latents.shape[2:])}, got {patch}")
    return F.unfold(latents, patch, stride=patch).transpose(1, 2)


def fit_codebook(latents: torch.Tensor, codes: int = 512, *, patch: int = 2, sample: int = 200_000,
                 iterations: int = 20, seed: int = 0) -> torch.Tensor:
    """A codebook (codes, C * patch²) for the ``patch`` x ``patch`` blocks of ``latents`` (n, C, H, W): k-means
    (``faiss.Kmeans``, ``iterations`` rounds) on at most ``sample`` blocks drawn at random (seed ``seed``)."""
    import faiss

    check_tensor("latents", latents, 4, dtype="float")
    codes = check_int("codes", codes, min=2)
    blocks = _blocks(latents, check_int("patch", patch, min=1)).reshape(-1, latents.shape[1] * patch * patch)
    rng = np.random.default_rng(check_int("seed", seed, min=0))
    pick = rng.choice(len(blocks), min(check_int("sample", sample, min=codes), len(blocks)), replace=False)
    kmeans = faiss.Kmeans(blocks.shape[1], codes, niter=check_int("iterations", iterations, min=1), seed=seed)
    kmeans.train(np.ascontiguousarray(blocks[pick].numpy(), dtype=np.float32))
    return torch.from_numpy(kmeans.centroids.copy())


def to_tokens(latents: torch.Tensor, codebook: torch.Tensor, *, patch: int = 2) -> torch.Tensor:
    """The nearest code of each ``patch`` x ``patch`` block: latents (n, C, H, W) -> tokens (n, H W / patch²)."""
    check_tensor("latents", latents, 4, dtype="float")
    check_tensor("codebook", codebook, 2, size={1: latents.shape[1] * patch * patch}, dtype="float")
    blocks = _blocks(latents, patch)  # (n, T, d)
    return torch.cat([torch.cdist(part, codebook[None]).argmin(-1) for part in blocks.split(2000)])


def from_tokens(tokens: torch.Tensor, codebook: torch.Tensor, *, patch: int = 2, size: int = 16) -> torch.Tensor:
    """The latents of ``tokens`` (n, T): each token's code put back as its block -> (n, C, size, size)."""
    check_tensor("tokens", tokens, 2, dtype="int")
    if tokens.shape[1] != (size // patch) ** 2:
        raise ValueError(f"tokens must hold {(size // patch) ** 2} per image for a {size}x{size} grid of "
                         f"{patch}x{patch} blocks, got {tokens.shape[1]}")
    blocks = codebook[tokens]  # (n, T, d)
    return F.fold(blocks.transpose(1, 2), size, patch, stride=patch)  # (n, C, size, size)


def token_transformer(text_vocab: int, codes: int, *, text_length: int, image_tokens: int, width: int = 64,
                      layers: int = 2, heads: int = 4):
    """A GPT-2 (``transformers.GPT2LMHeadModel``, no dropout) over ``text_length`` caption ids then
    ``image_tokens`` image tokens; image token ``k`` has the id ``text_vocab + k``, so one vocabulary of
    ``text_vocab + codes`` ids serves both."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=check_int("text_vocab", text_vocab, min=1) + check_int("codes", codes, min=2),
        n_positions=check_int("text_length", text_length, min=1) + check_int("image_tokens", image_tokens, min=1),
        n_embd=check_int("width", width, min=1), n_layer=check_int("layers", layers, min=1),
        n_head=check_int("heads", heads, min=1), resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=None, eos_token_id=None)
    return GPT2LMHeadModel(config)


def token_loss(model, ids: torch.Tensor, tokens: torch.Tensor, *, text_vocab: int, p_uncond: float = 0.1,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Mean cross-entropy of each image token given the caption and the image tokens before it.

    ``ids`` (B, L) caption ids (padding id 0), ``tokens`` (B, T) image tokens. Each row's caption is replaced
    by padding with probability ``p_uncond`` (drawn from ``generator``): the unconditional model. No attention
    mask: padding positions are attended to, in training as in :func:`sample_tokens`. In float32:
    unlike the flow's U-Net, this small Transformer trains slower under bf16 autocast on a CPU (measured).
    """
    drop = torch.rand(len(ids), generator=generator) < p_uncond  # (B,)
    ids = ids.masked_fill(drop[:, None], 0)
    logits = model(input_ids=torch.cat([ids, tokens + text_vocab], 1)).logits  # (B, L + T, vocab)
    predicted = logits[:, ids.shape[1] - 1:-1, text_vocab:]  # (B, T, codes): position k predicts token k
    return F.cross_entropy(predicted.reshape(-1, predicted.shape[-1]), tokens.reshape(-1))


@torch.no_grad()
def sample_tokens(model, ids: torch.Tensor, *, text_vocab: int, image_tokens: int, scale: float = 1.0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Image tokens (n, T) for captions ``ids`` (n, L) (padding id 0), drawn one at a time from the model's
    distribution over the codes, with classifier-free guidance on the logits: ``uncond + scale * (cond -
    uncond)``, the unconditional row having a caption of padding only; both rows go through the network in one
    batch. One call over the captions, then one call for each token but the last, which feeds only the new token
    and reuses the keys and values of the earlier ones (``past_key_values``): 1 + (T - 1) sequential calls."""
    check_tensor("ids", ids, 2, dtype="int")
    scale = check_float("scale", scale, min=0.0)
    n = len(ids)
    out = model(input_ids=torch.cat([ids, torch.zeros_like(ids)]), use_cache=True)  # conditional, unconditional
    drawn = []
    for k in range(check_int("image_tokens", image_tokens, min=1)):
        logits = out.logits[:, -1, text_vocab:].float()  # (2n, codes)
        guided = logits[n:] + scale * (logits[:n] - logits[n:])
        token = torch.multinomial(guided.softmax(-1), 1, generator=generator)  # (n, 1)
        drawn.append(token)
        if k < image_tokens - 1:  # the last token needs no call after it
            out = model(input_ids=token.repeat(2, 1) + text_vocab, past_key_values=out.past_key_values,
                        use_cache=True)
    return torch.cat(drawn, 1)
