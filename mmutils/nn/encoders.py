"""Unimodal encoders for images, text and audio, sized for a laptop CPU.

Every encoder returns *tokens* (a set of feature vectors) and, where it makes sense, a pooled vector, so
the same module can feed late fusion (pooled) and deep fusion (tokens, e.g. cross-attention over regions).
Images: :class:`ConvTower`, :func:`resnet18_32`, :class:`RegionTagger` (with :func:`train_region_tagger`);
text: :class:`RNNTextEncoder`, :class:`TransformerTextEncoder`; audio: :class:`WaveformEncoder`,
:class:`SpectrogramEncoder`; two towers in one joint space: :class:`DualEncoder` (CLIP, chapters 9 and 18).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import (check_choice, check_float, check_instance, check_int, check_mask, check_tensor, check_texts,
                      config_with)
from ..runtime import evaluating
from ..text import PAD_ID, encode_batch
from ..train import fit, random_batches
from .layers import masked_mean
from .losses import CLIP_INIT_LOGIT_SCALE, CLIP_MAX_LOGIT_SCALE, logit_scale_to_scale

__all__ = ["ConvTower", "resnet18_32", "RNNTextEncoder", "TransformerTextEncoder", "WaveformEncoder",
           "SpectrogramEncoder", "RegionTagger", "train_region_tagger", "DualEncoderConfig", "DualEncoder"]

POOLS = (None, "mean", "max", "meanmax")


class ConvTower(nn.Module):
    """Conv3x3-Norm-ReLU stages that shrink the resolution by their strides, as region tokens or a pooled vector.

    Stage i is ``Conv2d(c, widths[i], 3, stride=strides[i], padding=1, bias=False)``, then ``BatchNorm2d``
    (``norm="batch"``) or ``GroupNorm(groups, .)`` (``norm="group"``: statistics per image), ReLU, and
    ``MaxPool2d(2)`` if ``max_pool``. ``strides`` (ints >= 1) default to 1 with ``max_pool`` (each pool
    halves the side) and to 2 without it: stride-2 convolutions halve the side at about a quarter of the
    CPU cost of pooling, with a smaller receptive field (15 pixels for 3 stages). ``out_dim`` adds a 1x1
    convolution (with bias) to ``out_dim`` channels.

    ``grid(images)``: (B, in_channels, H, W) -> feature map (B, channels, h, w), h = H / prod(strides),
    further halved once per stage if ``max_pool`` (a strided convolution rounds up, a pool down): e.g.
    h = H / 4 for ``strides=(1, 2, 2)``, h = H / 2^stages with the default strides.
    ``forward(images)`` -> region tokens (B, h*w, channels) row-major (``pool=None``), or a vector:
    ``"mean"``, ``"max"`` (B, channels), ``"meanmax"`` (B, 2 * channels). The attribute ``out_dim`` is the
    width of forward's last dimension.
    """

    def __init__(self, in_channels: int = 3, widths: Sequence[int] = (32, 64, 96), *,
                 strides: Sequence[int] | None = None, max_pool: bool = False, norm: str = "batch", groups: int = 8,
                 out_dim: int | None = None, pool: str | None = None):
        super().__init__()
        check_int("in_channels", in_channels, min=1)
        check_instance("widths", widths, (tuple, list))
        if not widths:
            raise ValueError("widths must name at least one stage, got an empty sequence")
        widths = tuple(check_int(f"widths[{i}]", w, min=1) for i, w in enumerate(widths))
        if strides is None:
            strides = ((1 if max_pool else 2),) * len(widths)
        else:
            check_instance("strides", strides, (tuple, list))
            strides = tuple(check_int(f"strides[{i}]", s, min=1) for i, s in enumerate(strides))
        if len(strides) != len(widths):
            raise ValueError(f"strides must give one stride for each of the {len(widths)} stages, got {strides}")
        check_choice("norm", norm, ("batch", "group"))
        check_choice("pool", pool, POOLS)
        layers, c = [], in_channels
        for w, s in zip(widths, strides):
            layers += [nn.Conv2d(c, w, 3, stride=s, padding=1, bias=False),
                       nn.BatchNorm2d(w) if norm == "batch" else nn.GroupNorm(groups, w), nn.ReLU(inplace=True)]
            if max_pool:
                layers.append(nn.MaxPool2d(2))
            c = w
        self.features = nn.Sequential(*layers)
        self.proj = None if out_dim is None else nn.Conv2d(c, check_int("out_dim", out_dim, min=1), 1)
        self.in_channels = in_channels
        self.stages = len(widths)
        self.pool = pool
        self.channels = c if out_dim is None else out_dim
        self.out_dim = 2 * self.channels if pool == "meanmax" else self.channels

    def grid(self, images: torch.Tensor) -> torch.Tensor:
        """Feature map (B, channels, h, w) of images (B, in_channels, H, W)."""
        fmap = self.features(images)  # (B, widths[-1], h, w)
        return fmap if self.proj is None else self.proj(fmap)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        fmap = self.grid(images)  # (B, D, h, w)
        if self.pool is None:
            return fmap.flatten(2).transpose(1, 2)  # (B, h*w, D)
        if self.pool == "mean":
            return fmap.mean(dim=(2, 3))  # (B, D)
        if self.pool == "max":
            return fmap.amax(dim=(2, 3))  # (B, D)
        return torch.cat([fmap.mean(dim=(2, 3)), fmap.amax(dim=(2, 3))], dim=1)  # (B, 2D)


def resnet18_32(out_dim: int = 128, in_channels: int = 3) -> nn.Module:
    """torchvision's ResNet-18 (He et al., 2016; no pretrained weights) adapted to 32x32 images.

    As usual for CIFAR-sized inputs, the stem is a 3x3 stride-1 convolution without max-pool (a 32x32
    image keeps a 4x4 grid) and the classifier a linear layer. (B, in_channels, H, W) -> (B, out_dim).
    """
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=out_dim)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


class RNNTextEncoder(nn.Module):
    """Embedding + (bi)GRU (Cho et al., 2014) or LSTM (Hochreiter and Schmidhuber, 1997) over token ids.

    ``forward(ids, mask=None)``: ids (B, L) int, mask (B, L) (1 = real token) -> (tokens (B, L, out_dim),
    pooled (B, out_dim)). Padding is packed away; pooled is the masked mean of the tokens.
    """

    def __init__(self, vocab_size: int, dim: int = 64, hidden: int = 64, *, cell: str = "gru",
                 bidirectional: bool = True, pad_id: int = PAD_ID):
        super().__init__()
        check_choice("cell", cell, ("gru", "lstm"))
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn(dim, hidden, batch_first=True, bidirectional=bidirectional)
        self.out_dim = hidden * (2 if bidirectional else 1)
        self.vocab_size = vocab_size

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mask = check_mask("mask", mask, ids)  # (B, L) bool
        lengths = mask.sum(dim=1).clamp(min=1).cpu()
        x = self.embed(ids)  # (B, L, dim)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        tokens, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])
        return tokens, masked_mean(tokens, mask)  # (B, L, H), (B, H)


class TransformerTextEncoder(nn.Module):
    """Token + learned position embeddings, then a pre-norm Transformer encoder (Vaswani et al., 2017).

    ``forward(ids, mask=None)`` -> (tokens (B, L, dim), pooled (B, dim)); padded positions are excluded
    from attention and from the masked-mean pooling. ``layers=0`` keeps the embeddings and the final
    LayerNorm only (no attention: each token sees only its word and position). ``embed_std``: std of the
    token-embedding init; ``None`` keeps PyTorch's N(0, 1), 50 times the position embeddings' 0.02, so word
    order is slow to learn; ``0.02`` (as in BERT, Devlin et al., 2019) puts both on the same scale.
    """

    def __init__(self, vocab_size: int, dim: int = 64, heads: int = 4, layers: int = 2, max_len: int = 32,
                 *, dropout: float = 0.0, pad_id: int = PAD_ID, embed_std: float | None = None):
        super().__init__()
        check_int("vocab_size", vocab_size, min=1)
        check_int("max_len", max_len, min=1)
        check_int("layers", layers, min=0)
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        if embed_std is not None:
            nn.init.normal_(self.embed.weight, std=check_float("embed_std", embed_std, positive=True))
            with torch.no_grad():
                self.embed.weight[pad_id].zero_()  # keep the [PAD] row at zero, as padding_idx does
        self.pos = nn.Parameter(torch.zeros(1, max_len, dim))
        nn.init.normal_(self.pos, std=0.02)
        self.encoder = None  # layers=0: embeddings, positions and the final LayerNorm only
        if layers:
            layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=dropout,
                                               batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.max_len = max_len
        self.out_dim = dim

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if ids.shape[1] > self.max_len:  # else a puzzling broadcast error with the position embeddings
            raise ValueError(f"ids has length {ids.shape[1]}, more than max_len={self.max_len}")
        mask = check_mask("mask", mask, ids)  # (B, L) bool
        x = self.embed(ids) + self.pos[:, : ids.shape[1]]  # (B, L, dim)
        if self.encoder is not None:
            x = self.encoder(x, src_key_padding_mask=~mask)
        tokens = self.norm(x)
        return tokens, masked_mean(tokens, mask)  # (B, L, dim), (B, dim)


class WaveformEncoder(nn.Module):
    """1-D convolutions over the raw waveform (Conv1d-BN-ReLU stages, then a 1x1 projection).

    ``forward(wave)``: (B, samples) or (B, 1, samples) -> (tokens (B, T, out_dim), pooled (B, out_dim)),
    one token per time step (T = samples / stride^stages).
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64), out_dim: int = 64, kernel: int = 9, stride: int = 4):
        super().__init__()
        layers, c = [], 1
        for w in widths:
            layers += [nn.Conv1d(c, w, kernel, stride=stride, padding=kernel // 2), nn.BatchNorm1d(w), nn.ReLU()]
            c = w
        self.features = nn.Sequential(*layers, nn.Conv1d(c, out_dim, 1))
        self.out_dim = out_dim

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if wave.ndim == 2:
            wave = wave.unsqueeze(1)  # (B, 1, samples)
        tokens = self.features(wave).transpose(1, 2)  # (B, T, out_dim)
        return tokens, tokens.mean(dim=1)


class SpectrogramEncoder(nn.Module):
    """2-D convolutions (a max-pooling :class:`ConvTower`) over a (log-)spectrogram seen as a one-channel image.

    ``forward(spec)``: (B, freq, frames) or (B, 1, freq, frames) -> (tokens (B, T, out_dim), pooled (B, out_dim));
    the tokens follow time (T = frames / 2^stages). With ``n_freq=None`` the feature map is averaged over
    frequency, which makes the features nearly invariant to *where* on the frequency axis a pattern sits.
    With ``n_freq=F`` (the input's frequency bins) each frame's frequency rows are concatenated and
    projected to ``out_dim``, as in convolutional-recurrent speech models: this keeps absolute frequencies
    (e.g. the harmonics of a timbre).
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64), out_dim: int = 64, n_freq: int | None = None):
        super().__init__()
        self.cnn = ConvTower(1, widths, max_pool=True, out_dim=out_dim)
        self.out_dim = out_dim
        self.n_freq = n_freq
        self.freq_proj = None
        if n_freq is not None:
            self.freq_rows = check_int("n_freq", n_freq, min=2 ** len(widths)) // 2 ** len(widths)  # MaxPool2d floors
            self.freq_proj = nn.Linear(out_dim * self.freq_rows, out_dim)

    def forward(self, spec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if spec.ndim == 3:
            spec = spec.unsqueeze(1)  # (B, 1, freq, frames)
        if self.n_freq is not None and spec.shape[2] != self.n_freq:  # else a matmul error deep inside
            raise ValueError(f"spec must have n_freq={self.n_freq} frequency bins (dimension 2 of "
                             f"(B, 1, freq, frames)), got shape {tuple(spec.shape)}")
        fmap = self.cnn.grid(spec)  # (B, D, f, t)
        if self.freq_proj is None:
            tokens = fmap.mean(dim=2).transpose(1, 2)  # (B, t, D)
        else:
            b, d, f, t = fmap.shape
            tokens = self.freq_proj(fmap.permute(0, 3, 1, 2).reshape(b, t, d * f))  # (B, t, D*f) -> (B, t, D)
        return tokens, tokens.mean(dim=1)


class RegionTagger(nn.Module):
    """A :class:`ConvTower` with linear classifiers on every region token: what sits in each cell.

    Training it on per-cell labels (:func:`mmutils.world.cell_labels`) teaches the tower's region tokens
    what is where, as VQA and captioning systems start from a pretrained detector (Anderson et al., 2018).
    ``heads`` maps a head name to its number of classes (class 0 = empty cell); each head is its own
    ``Linear(tower.out_dim, classes)``, created in the order of ``heads``.

    ``forward(images)``: (B, C, H, W) -> ``{name: logits (B, N, heads[name])}``, N the tower's regions;
    :meth:`classify` does the same from region tokens (B, N, D). :meth:`loss` sums the heads'
    cross-entropies; :meth:`accuracy` scores occupied cells.
    """

    def __init__(self, tower: ConvTower, heads: Mapping[str, int]):
        super().__init__()
        check_instance("tower", tower, ConvTower)
        if tower.pool is not None:
            raise ValueError(f"tower must return region tokens (pool=None), got pool={tower.pool!r}")
        check_instance("heads", heads, Mapping)
        if not heads:
            raise ValueError("heads must name at least one head")
        self.tower = tower
        self.classes = {name: check_int(f"heads[{name!r}]", k, min=2) for name, k in heads.items()}
        self.heads = nn.ModuleDict({name: nn.Linear(tower.out_dim, k) for name, k in self.classes.items()})

    def classify(self, regions: torch.Tensor) -> dict[str, torch.Tensor]:
        """Region tokens (B, N, D) -> ``{name: logits (B, N, heads[name])}``."""
        return {name: head(regions) for name, head in self.heads.items()}  # name -> (B, N, classes)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.classify(self.tower(images))  # (B, N, D) -> name -> (B, N, classes)

    def loss(self, images: torch.Tensor, labels: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Sum over heads of the cross-entropy over all regions; ``labels[name]``: (B, N) int."""
        logits = self(images)
        return sum(F.cross_entropy(z.flatten(0, 1), labels[name].flatten()) for name, z in logits.items())

    @torch.no_grad()
    def accuracy(self, regions: torch.Tensor, labels: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """Accuracy of each head on the occupied cells (label > 0), from region tokens (B, N, D).

        Also ``"all"``: the share of occupied cells where every head is right.
        """
        occupied = next(iter(labels.values())) > 0  # (B, N)
        hits = {name: z.argmax(-1) == labels[name] for name, z in self.classify(regions).items()}
        every = torch.stack(list(hits.values())).all(dim=0)
        out = {name: hit[occupied].float().mean().item() for name, hit in hits.items()}
        return {**out, "all": every[occupied].float().mean().item()}


def train_region_tagger(tagger: RegionTagger, images: torch.Tensor, labels: Mapping[str, torch.Tensor], *,
                        steps: int = 300, lr: float = 3e-3, batch_size: int = 64, seed: int = 0,
                        desc: str = "region tagger", **fit_kwargs):
    """Train ``tagger`` on ``images`` (n, C, H, W) and per-cell ``labels`` ({head: (n, N) int}), then freeze it.

    ``steps`` steps of :func:`mmutils.train.fit` (``fit_kwargs`` pass through) on batches from
    :func:`mmutils.train.random_batches` seeded with ``seed``. Afterwards the tagger is in eval mode
    without gradients, a locked tower as in LiT (Zhai et al., 2022). Returns the :class:`~mmutils.train.History`.
    """
    check_instance("tagger", tagger, RegionTagger)
    names = list(tagger.classes)
    if set(check_instance("labels", labels, Mapping)) != set(names):
        raise ValueError(f"labels must have one entry per head {names}, got {sorted(labels)}")
    batches = random_batches(images, *(labels[name] for name in names), batch_size=batch_size, seed=seed)
    history = fit(tagger, lambda model, batch: model.loss(batch[0], dict(zip(names, batch[1:]))), batches,
                  max_steps=steps, lr=lr, desc=desc, **fit_kwargs)
    tagger.eval().requires_grad_(False)
    return history


# -- Two towers, one joint space (CLIP) ---------------------------------------
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
