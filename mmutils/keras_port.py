"""A PyTorch port of the classic Keras text + image + audio network, for chapter 1.

The Keras original (functional API, channels-last)::

    text  = Embedding(vocab, 128) -> LSTM(64, return_sequences=True) -> AttentionLayer()
    image = Conv2D(32, 3, relu) -> MaxPooling2D(2) -> Flatten()
    audio = Conv1D(32, 9, strides=4, relu) -> GlobalMaxPooling1D()
    out   = Dense(num_classes, softmax)(Dense(128, relu)(concatenate([text, image, audio])))

:class:`KerasStyleMultimodalNet` is that network, layer for layer.
"""
from __future__ import annotations

import torch
from torch import nn

from .checks import check_int, check_mask
from .nn.fusion import ConcatFusion
from .nn.layers import AttentionPooling, GlobalMaxPool1d
from .text import PAD_ID

__all__ = ["KerasStyleMultimodalNet"]


class KerasStyleMultimodalNet(nn.Module):
    """PyTorch port of the classic Keras text + image + audio network (see the module docstring).

    What the port has to make explicit:

    * PyTorch is channels-first: images are (B, C, H, W), the waveform (B, 1, T).
    * ``Dense`` infers its input width, ``nn.Linear`` does not: the width of the
      concatenation (``self.dims``) is computed from ``image_size`` here.
    * ``LSTM(64)`` returns the state after the last *real* token only when the
      padding is masked (``mask_zero=True``); here the padded positions are
      packed away (no attention) or masked out of the softmax (attention).
    * The attention layer (``tanh(x W + b) u``, softmax over time, weighted sum)
      is :class:`mmutils.nn.layers.AttentionPooling` with ``hidden = lstm_units``.
    * The last layer returns logits: ``nn.CrossEntropyLoss`` applies the
      (log-)softmax that Keras puts in the last ``Dense``.

    ``forward(ids, mask, images, wave)``: ids (B, L) int, mask (B, L) (1 = token), images (B, C,
    image_size, image_size), wave (B, T) or (B, 1, T) -> logits (B, num_classes). ``features(...)`` returns
    ``{"text": (B, lstm_units), "image": (B, dims["image"]), "audio": (B, audio_filters)}``;
    ``last_attention`` holds the attention weights (B, L) of the last call.

    ``fusion_width=None`` concatenates the raw features like the original (the flattened image block
    then holds almost all dimensions); an int uses :class:`mmutils.nn.fusion.ConcatFusion` instead.
    """

    def __init__(self, vocab_size: int, num_classes: int, *, image_size: int = 32, image_channels: int = 3,
                 embed_dim: int = 128, lstm_units: int = 64, conv_filters: int = 32, audio_filters: int = 32,
                 audio_kernel: int = 9, audio_stride: int = 4, hidden: int = 128, attention: bool = True,
                 fusion_width: int | None = None, pad_id: int = PAD_ID):
        super().__init__()
        for name, value, low in [("vocab_size", vocab_size, 1), ("num_classes", num_classes, 2),
                                 ("image_size", image_size, 4), ("audio_kernel", audio_kernel, 1),
                                 ("audio_stride", audio_stride, 1)]:
            check_int(name, value, min=low)
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)  # Embedding(vocab, 128)
        self.lstm = nn.LSTM(embed_dim, lstm_units, batch_first=True)  # LSTM(64)
        self.attention = AttentionPooling(lstm_units, hidden=lstm_units) if attention else None
        self.image = nn.Sequential(  # Conv2D(32, (3, 3), activation="relu"), MaxPooling2D(2), Flatten()
            nn.Conv2d(image_channels, conv_filters, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
        self.audio = nn.Sequential(  # Conv1D(32, 9, strides=4, activation="relu"), GlobalMaxPooling1D()
            nn.Conv1d(1, audio_filters, audio_kernel, stride=audio_stride), nn.ReLU(), GlobalMaxPool1d())
        side = (image_size - 2) // 2  # 'valid' 3x3 convolution, then 2x2 pooling
        self.dims = {"text": lstm_units, "image": conv_filters * side * side, "audio": audio_filters}
        if fusion_width is None:  # concatenate([...]) -> Dense(128, relu) -> Dense(num_classes)
            width = sum(self.dims.values())
            self.head = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
        else:
            self.head = ConcatFusion(tuple(self.dims.values()), width=fusion_width, hidden=hidden, out_dim=num_classes)
        self.fusion_width = fusion_width
        self.image_size = image_size
        self.image_channels = image_channels
        self.last_attention: torch.Tensor | None = None

    def features(self, ids: torch.Tensor, mask: torch.Tensor | None, images: torch.Tensor,
                 wave: torch.Tensor) -> dict[str, torch.Tensor]:
        """The per-modality feature vectors, before fusion."""
        mask = check_mask("mask", mask, ids)  # (B, L) bool
        expected = (self.image_channels, self.image_size, self.image_size)
        if images.ndim != 4 or images.shape[1:] != expected:  # the classic mistake of a port from Keras
            hint = " (PyTorch is channels-first: use images.permute(0, 3, 1, 2))" \
                if images.shape[-1] == self.image_channels else ""
            raise ValueError(f"images must have shape (B, {', '.join(map(str, expected))}), "
                             f"got {tuple(images.shape)}{hint}")
        if wave.ndim == 2:
            wave = wave.unsqueeze(1)  # (B, 1, T)
        x = self.embed(ids)  # (B, L, embed_dim)
        lengths = mask.sum(dim=1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, (h_n, _) = self.lstm(packed)
        if self.attention is None:
            text = h_n[-1]  # (B, lstm_units): the state after the last real token
            self.last_attention = None
        else:
            seq, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])
            text, self.last_attention = self.attention(seq, mask)  # (B, lstm_units), (B, L)
        return {"text": text, "image": self.image(images), "audio": self.audio(wave)}

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None, images: torch.Tensor,
                wave: torch.Tensor) -> torch.Tensor:
        feats = list(self.features(ids, mask, images, wave).values())
        if self.fusion_width is None:
            return self.head(torch.cat(feats, dim=1))  # (B, sum(dims)) -> (B, num_classes)
        return self.head(feats)  # (B, num_classes)
