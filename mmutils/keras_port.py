"""A PyTorch port of a much-copied Keras text + image + audio classifier, with its bugs fixed (chapter 1).

The Keras original (shown in chapter 1) builds each modality's network with ``create_image_model``
(``Conv2D(32, (3, 3)) -> MaxPooling2D((2, 2)) -> Flatten()``), writes a text network with
``Conv1D(32, (3, 3))`` and ``MaxPooling1D((2, 2))``, and fuses with a function that creates a new
``Dense(128)`` on every call. The port keeps its layers and fixes what is wrong:

* :func:`image_model`, :func:`text_model`, :func:`audio_model`: one network per modality, each with
  the convolution of its input's dimensionality (2-D for images, 1-D for token and sample sequences);
  1-D kernel and pool sizes are single ints;
* several conv + pool stages before ``Flatten`` keep the flattened width (and the first ``Dense``)
  small;
* :class:`KerasPortNet` creates its fusion ``Dense`` once, in ``__init__``, so it is a tracked, trained
  parameter, and returns logits for ``nn.CrossEntropyLoss`` (no softmax layer).

Everything is channels-first, as PyTorch is: images (B, C, H, W), embedded tokens (B, E, L),
waveforms (B, 1, T).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .checks import check_choice, check_int, check_tensor, config_with
from .text import PAD_ID

__all__ = ["image_model", "text_model", "audio_model", "KerasPortConfig", "KerasPortNet"]


class _ChannelsFirst(nn.Module):
    """(B, L, E) -> (B, E, L): embedded tokens as the channels of a 1-D convolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


def image_model(in_channels: int = 3, filters: int = 32, *, stages: int = 1, padding: str = "valid") -> nn.Sequential:
    """Keras' ``create_image_model``: ``stages`` x [Conv2D(filters, 3, relu), MaxPooling2D(2)], then Flatten.

    (B, in_channels, H, W) -> (B, filters * h * w). ``padding="valid"`` (Keras' default) loses a pixel on each side
    per convolution (one stage: 32 -> 30 -> 15, so 15 * 15 * filters features); ``"same"`` keeps the size, so each
    stage halves it exactly (three stages: 32 -> 4, so 4 * 4 * filters). ``stages=1, padding="valid"`` is the
    original.
    """
    check_int("in_channels", in_channels, min=1)
    check_int("filters", filters, min=1)
    check_int("stages", stages, min=1)
    check_choice("padding", padding, ("valid", "same"))
    layers: list[nn.Module] = []
    for s in range(stages):
        layers += [nn.Conv2d(in_channels if s == 0 else filters, filters, 3, padding=padding), nn.ReLU(),
                   nn.MaxPool2d(2)]
    return nn.Sequential(*layers, nn.Flatten())  # (B, filters, h, w) -> (B, filters * h * w)


def text_model(vocab_size: int, embed_dim: int = 32, filters: int = 32, *, kernel_size: int = 3,
               pool_size: int = 2, pad_id: int = PAD_ID) -> nn.Sequential:
    """Keras' ``create_text_model`` with its 1-D sizes fixed.

    Embedding, Conv1D(filters, 3, relu), MaxPooling1D(2), Flatten.

    ids (B, L) int -> (B, filters * ((L - kernel_size + 1) // pool_size)). ``kernel_size`` and ``pool_size`` are
    single ints: a 1-D layer slides along one axis (a tuple such as ``(3, 3)`` raises ``TypeError``; PyTorch's own
    ``nn.Conv1d`` would accept it and fail only on the first forward pass).
    """
    check_int("vocab_size", vocab_size, min=1)
    check_int("embed_dim", embed_dim, min=1)
    check_int("filters", filters, min=1)
    kernel_size = check_int("kernel_size", kernel_size, min=1)
    pool_size = check_int("pool_size", pool_size, min=1)
    return nn.Sequential(
        nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id),  # (B, L) -> (B, L, E)
        _ChannelsFirst(),  # (B, E, L)
        nn.Conv1d(embed_dim, filters, kernel_size), nn.ReLU(),  # (B, filters, L - kernel_size + 1)
        nn.MaxPool1d(pool_size),
        nn.Flatten())


def audio_model(filters: int = 32, *, kernel_size: int = 8, stride: int = 8, stages: int = 3) -> nn.Sequential:
    """A 1-D CNN over the raw waveform: ``stages`` x Conv1D(filters, kernel_size, strides=stride, relu), then Flatten.

    wave (B, T) -> (B, filters * t): each stage divides the length by ``stride`` (three stages of 8: 4000 samples ->
    500 -> 62 -> 7 steps), so the flattened width stays small and still follows time. End-to-end audio models of
    this kind follow Dieleman and Schrauwen (2014).
    """
    check_int("filters", filters, min=1)
    for name, value in (("kernel_size", kernel_size), ("stride", stride), ("stages", stages)):
        check_int(name, value, min=1)
    layers: list[nn.Module] = [nn.Unflatten(1, (1, -1))]  # (B, T) -> (B, 1, T)
    for s in range(stages):
        layers += [nn.Conv1d(1 if s == 0 else filters, filters, kernel_size, stride=stride), nn.ReLU()]
    return nn.Sequential(*layers, nn.Flatten())  # (B, filters, t) -> (B, filters * t)


@dataclass
class KerasPortConfig:
    """Sizes of :class:`KerasPortNet`; the input sizes fix the flattened widths, as Keras' ``Input`` shapes do."""

    vocab_size: int = 64
    num_classes: int = 6
    text_len: int = 16
    image_size: int = 32
    image_channels: int = 3
    audio_len: int = 4000
    filters: int = 32
    embed_dim: int = 32
    image_stages: int = 3
    audio_stages: int = 3
    hidden: int = 128


class KerasPortNet(nn.Module):
    """The Keras text + image + audio classifier, ported to PyTorch with its bugs fixed.

    Each modality has its own network (:func:`text_model`, :func:`image_model` with ``padding="same"`` and
    ``image_stages`` stages, :func:`audio_model`); their flattened features are concatenated and fused by one
    ``Dense(hidden, relu)`` created here, once (``self.fusion``), then classified by ``Dense(num_classes)`` without a
    softmax (``nn.CrossEntropyLoss`` applies the log-softmax to logits). ``nn.Linear`` needs its input width, which
    Keras' ``Dense`` infers: ``self.dims`` holds the flattened widths, measured by one pass over zeros, as Keras
    infers them from the ``Input`` shapes.

    ``forward(ids, images, wave)``: ids (B, text_len) int, images (B, image_channels, image_size, image_size)
    channels-first, wave (B, audio_len) -> logits (B, num_classes). :meth:`features` returns the per-modality
    features ``{"text": (B, dims["text"]), "image": ..., "audio": ...}``; :meth:`fuse` maps their list to
    (B, hidden). Build with ``KerasPortNet(config)`` or ``KerasPortNet(vocab_size=..., num_classes=...)``.
    """

    def __init__(self, config: KerasPortConfig | None = None, **overrides):
        super().__init__()
        c = self.config = config_with(KerasPortConfig, config, overrides)
        for name in ("vocab_size", "text_len", "image_channels", "audio_len", "filters", "embed_dim", "image_stages",
                     "audio_stages", "hidden"):
            check_int(f"config.{name}", getattr(c, name), min=1)
        check_int("config.num_classes", c.num_classes, min=2)
        check_int("config.image_size", c.image_size, min=2 ** c.image_stages)
        self.text_model = text_model(c.vocab_size, c.embed_dim, c.filters)
        self.image_model = image_model(c.image_channels, c.filters, stages=c.image_stages, padding="same")
        self.audio_model = audio_model(c.filters, stages=c.audio_stages)
        with torch.no_grad():  # Keras infers Dense's input width from the Input shapes; we measure it once
            zeros = (torch.zeros(1, c.text_len, dtype=torch.long),
                     torch.zeros(1, c.image_channels, c.image_size, c.image_size), torch.zeros(1, c.audio_len))
            self.dims = {k: v.shape[1] for k, v in self._encode(*zeros).items()}
        self.fusion = nn.Sequential(nn.Linear(sum(self.dims.values()), c.hidden), nn.ReLU())  # created once
        self.classifier = nn.Linear(c.hidden, c.num_classes)  # logits

    def _encode(self, ids: torch.Tensor, images: torch.Tensor, wave: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"text": self.text_model(ids), "image": self.image_model(images), "audio": self.audio_model(wave)}

    def features(self, ids: torch.Tensor, images: torch.Tensor, wave: torch.Tensor) -> dict[str, torch.Tensor]:
        """The flattened per-modality features, before fusion: {"text": (B, d_t), "image": (B, d_i), "audio": (B, d_a)}."""
        c = self.config
        check_tensor("ids", ids, 2, size={1: c.text_len}, dtype="int")  # Flatten fixes the length
        expected = (c.image_channels, c.image_size, c.image_size)
        check_tensor("images", images, dtype="float")
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:  # the classic mistake of a port from Keras
            hint = " (PyTorch is channels-first: use images.permute(0, 3, 1, 2))" \
                if images.ndim == 4 and images.shape[-1] == c.image_channels else ""
            raise ValueError(f"images must have shape (B, {', '.join(map(str, expected))}), "
                             f"got {tuple(images.shape)}{hint}")
        check_tensor("wave", wave, 2, size={0: ids.shape[0], 1: c.audio_len}, dtype="float")
        if images.shape[0] != ids.shape[0]:
            raise ValueError(f"images must hold one image per caption ({ids.shape[0]}), got {images.shape[0]}")
        return self._encode(ids, images, wave)

    def fuse(self, features: list[torch.Tensor]) -> torch.Tensor:
        """concatenate -> Dense(hidden, relu): a list of (B, d_m) -> (B, hidden), with the weights made in ``__init__``."""
        return self.fusion(torch.cat(features, dim=1))

    def forward(self, ids: torch.Tensor, images: torch.Tensor, wave: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.fuse(list(self.features(ids, images, wave).values())))  # (B, num_classes)
