"""Unimodal encoders for images, text and audio, sized for a laptop CPU.

Every encoder returns *tokens* (a set of feature vectors) and, where it makes
sense, a pooled vector, so the same module can feed late fusion (pooled) and
deep fusion (tokens, e.g. cross-attention over image regions).

* :class:`SpatialCNN` – a small convolutional network that keeps the spatial grid.
* :func:`resnet18_32` – torchvision's ResNet-18 (He et al., 2016), untrained, adapted to 32x32 inputs.
* :class:`RNNTextEncoder` – embedding + GRU (Cho et al., 2014) or LSTM (Hochreiter and Schmidhuber, 1997).
* :class:`TransformerTextEncoder` – a small Transformer encoder (Vaswani et al., 2017).
* :class:`WaveformEncoder` / :class:`SpectrogramEncoder` – 1-D convolution on the waveform,
  2-D convolution on the spectrogram.
* :class:`KerasStyleMultimodalNet` – a PyTorch port of the classic Keras three-input
  network (text Embedding+LSTM with attention pooling, image Conv2D, audio Conv1D,
  concatenation, Dense).
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "check_tensor", "masked_mean", "SpatialCNN", "resnet18_32", "RNNTextEncoder",
    "TransformerTextEncoder", "WaveformEncoder", "SpectrogramEncoder", "KerasStyleMultimodalNet",
]


def check_tensor(name: str, x, ndim: int, *, size: dict[int, int] | None = None, dtype_kind: str | None = None) -> None:
    """Raise ``TypeError``/``ValueError`` naming ``name`` unless ``x`` is a tensor of rank ``ndim``.

    ``size`` maps a dimension to its required length; ``dtype_kind`` is
    ``"float"`` or ``"int"``.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    for dim, length in (size or {}).items():
        if x.shape[dim] != length:
            raise ValueError(f"{name} must have size {length} in dimension {dim}, got shape {tuple(x.shape)}")
    if dtype_kind == "float" and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if dtype_kind == "int" and (x.is_floating_point() or x.is_complex()):
        raise TypeError(f"{name} must be an integer tensor, got {x.dtype}")


def _check_mask(mask, ids_or_tokens: torch.Tensor, name: str = "mask") -> torch.Tensor:
    if mask is None:
        return torch.ones(ids_or_tokens.shape[:2], dtype=torch.bool, device=ids_or_tokens.device)
    check_tensor(name, mask, 2)
    if mask.shape != ids_or_tokens.shape[:2]:
        raise ValueError(f"{name} must have shape {tuple(ids_or_tokens.shape[:2])}, got {tuple(mask.shape)}")
    return mask.bool()


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``x`` (B, L, D) over the positions where ``mask`` (B, L) is true. Returns (B, D)."""
    check_tensor("x", x, 3, dtype_kind="float")
    m = _check_mask(mask, x).unsqueeze(-1).to(x.dtype)  # (B, L, 1)
    return (x * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


class SpatialCNN(nn.Module):
    """Conv-BN-ReLU stages, each halving the resolution; the output keeps the spatial grid.

    ``forward(images)``: (B, C, H, W) float -> region tokens (B, N, out_dim) with
    N = (H / 2^stages) * (W / 2^stages), in row-major order. ``pool`` averages
    the tokens to (B, out_dim) (global average pooling, which discards layout).
    """

    def __init__(self, in_channels: int = 3, widths: tuple[int, ...] = (32, 64, 96), out_dim: int = 128):
        super().__init__()
        if not widths:
            raise ValueError("widths must name at least one stage")
        layers, c = [], in_channels
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            c = w
        self.features = nn.Sequential(*layers)
        self.proj = nn.Conv2d(c, out_dim, 1)
        self.in_channels = in_channels
        self.out_dim = out_dim
        self.stages = len(widths)

    def grid(self, images: torch.Tensor) -> torch.Tensor:
        """Feature map (B, out_dim, H / 2^stages, W / 2^stages)."""
        check_tensor("images", images, 4, size={1: self.in_channels}, dtype_kind="float")
        return self.proj(self.features(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        fmap = self.grid(images)  # (B, D, h, w)
        return fmap.flatten(2).transpose(1, 2)  # (B, h*w, D)

    @staticmethod
    def pool(tokens: torch.Tensor) -> torch.Tensor:
        """Global average pooling of region tokens: (B, N, D) -> (B, D)."""
        return tokens.mean(dim=1)


def resnet18_32(out_dim: int = 128, in_channels: int = 3) -> nn.Module:
    """torchvision's ResNet-18 (no pretrained weights) adapted to 32x32 images.

    As usual for CIFAR-sized inputs, the 7x7 stride-2 stem becomes a 3x3
    stride-1 convolution and the max-pool is removed, so a 32x32 image keeps a
    4x4 grid after the last stage; the classifier becomes a linear layer to
    ``out_dim``. Input (B, in_channels, H, W) -> (B, out_dim).
    """
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=out_dim)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


class RNNTextEncoder(nn.Module):
    """Embedding + (bi)GRU or LSTM over token ids.

    ``forward(ids, mask)``: ids (B, L) int, mask (B, L) (1 = real token) ->
    (tokens (B, L, out_dim), pooled (B, out_dim)). Padding is packed away, so
    it changes neither the tokens at real positions nor the pooled vector,
    which is the masked mean of the tokens.
    """

    def __init__(self, vocab_size: int, dim: int = 64, hidden: int = 64, *, cell: str = "gru",
                 bidirectional: bool = True, pad_id: int = 0):
        super().__init__()
        if cell not in ("gru", "lstm"):
            raise ValueError(f"cell must be 'gru' or 'lstm', got {cell!r}")
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn(dim, hidden, batch_first=True, bidirectional=bidirectional)
        self.out_dim = hidden * (2 if bidirectional else 1)
        self.vocab_size = vocab_size

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        check_tensor("ids", ids, 2, dtype_kind="int")
        mask = _check_mask(mask, ids)
        lengths = mask.sum(dim=1).clamp(min=1).cpu()
        x = self.embed(ids)  # (B, L, dim)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        tokens, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])
        return tokens, masked_mean(tokens, mask)  # (B, L, H), (B, H)


class TransformerTextEncoder(nn.Module):
    """Token + learned position embeddings, then a pre-norm Transformer encoder.

    ``forward(ids, mask)`` -> (tokens (B, L, dim), pooled (B, dim)); padded
    positions are excluded from attention and from the masked-mean pooling.

    ``embed_std``: standard deviation of the token-embedding initialization.
    ``None`` keeps PyTorch's default N(0, 1), which is 50 times larger than the
    position embeddings (std 0.02), so word order is hard to pick up at first;
    ``0.02`` (as in BERT, Devlin et al., 2019) puts both on the same scale and
    learns order-dependent facts much faster.
    """

    def __init__(self, vocab_size: int, dim: int = 64, heads: int = 4, layers: int = 2, max_len: int = 32,
                 *, dropout: float = 0.0, pad_id: int = 0, embed_std: float | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        if embed_std is not None and (isinstance(embed_std, bool) or not isinstance(embed_std, (int, float))
                                      or not embed_std > 0):
            raise ValueError(f"embed_std must be a positive number or None, got {embed_std!r}")
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        if embed_std is not None:
            nn.init.normal_(self.embed.weight, std=float(embed_std))
            with torch.no_grad():
                self.embed.weight[pad_id].zero_()  # keep the [PAD] row at zero, as padding_idx does
        self.pos = nn.Parameter(torch.zeros(1, max_len, dim))
        nn.init.normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=dropout,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.max_len = max_len
        self.out_dim = dim

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        check_tensor("ids", ids, 2, dtype_kind="int")
        if ids.shape[1] > self.max_len:
            raise ValueError(f"ids has length {ids.shape[1]}, more than max_len={self.max_len}")
        mask = _check_mask(mask, ids)
        x = self.embed(ids) + self.pos[:, : ids.shape[1]]  # (B, L, dim)
        tokens = self.norm(self.encoder(x, src_key_padding_mask=~mask))
        return tokens, masked_mean(tokens, mask)


class WaveformEncoder(nn.Module):
    """1-D convolutions over the raw waveform.

    ``forward(wave)``: (B, samples) or (B, 1, samples) -> (tokens (B, T, out_dim), pooled (B, out_dim)),
    where the tokens are the feature vectors of successive time steps.
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
        if isinstance(wave, torch.Tensor) and wave.ndim == 2:
            wave = wave.unsqueeze(1)
        check_tensor("wave", wave, 3, size={1: 1}, dtype_kind="float")
        tokens = self.features(wave).transpose(1, 2)  # (B, T, out_dim)
        return tokens, tokens.mean(dim=1)


class SpectrogramEncoder(nn.Module):
    """2-D convolutions over a (log-)spectrogram treated as a one-channel image.

    ``forward(spec)``: (B, freq, frames) or (B, 1, freq, frames) -> (tokens (B, T, out_dim), pooled (B, out_dim));
    the tokens follow time (T = frames / 2^stages).

    How the frequency axis is folded into each time step:

    * ``n_freq=None`` (default): the feature map is averaged over frequency.
      Convolutions are translation-equivariant, so this makes the features
      nearly invariant to *where* on the frequency axis a pattern sits.
    * ``n_freq=F`` (the number of frequency bins of the input): the feature
      map's frequency rows of each frame are concatenated and projected to
      ``out_dim`` by a linear layer, as in convolutional-recurrent speech
      models. This keeps absolute frequencies, e.g. the harmonic profile that
      makes a timbre.
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64), out_dim: int = 64, n_freq: int | None = None):
        super().__init__()
        self.cnn = SpatialCNN(1, widths, out_dim)
        self.out_dim = out_dim
        self.n_freq = n_freq
        self.freq_proj = None
        if n_freq is not None:
            if isinstance(n_freq, bool) or not isinstance(n_freq, int) or n_freq < 2 ** len(widths):
                raise ValueError(f"n_freq must be an int >= 2^stages = {2 ** len(widths)}, got {n_freq!r}")
            rows = n_freq
            for _ in widths:
                rows //= 2  # each MaxPool2d(2) floors the size
            self.freq_rows = rows
            self.freq_proj = nn.Linear(out_dim * rows, out_dim)

    def forward(self, spec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(spec, torch.Tensor) and spec.ndim == 3:
            spec = spec.unsqueeze(1)
        check_tensor("spec", spec, 4, size={1: 1}, dtype_kind="float")
        if self.n_freq is not None and spec.shape[2] != self.n_freq:
            raise ValueError(f"spec must have n_freq={self.n_freq} frequency bins (dimension 2 of "
                             f"(B, 1, freq, frames)), got shape {tuple(spec.shape)}")
        fmap = self.cnn.grid(spec)  # (B, D, f, t)
        if self.freq_proj is None:
            tokens = fmap.mean(dim=2).transpose(1, 2)  # (B, t, D)
        else:
            b, d, f, t = fmap.shape
            tokens = self.freq_proj(fmap.permute(0, 3, 1, 2).reshape(b, t, d * f))  # (B, t, D*f) -> (B, t, D)
        return tokens, tokens.mean(dim=1)


class _GlobalMaxPool1d(nn.Module):
    """Keras' GlobalMaxPooling1D for channels-first input: (B, C, T) -> (B, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=-1)


class KerasStyleMultimodalNet(nn.Module):
    """PyTorch port of the classic Keras text + image + audio network.

    The Keras original (functional API, channels-last)::

        text  = Embedding(vocab, 128) -> LSTM(64, return_sequences=True) -> AttentionLayer()
        image = Conv2D(32, 3, relu) -> MaxPooling2D(2) -> Flatten()
        audio = Conv1D(32, 9, strides=4, relu) -> GlobalMaxPooling1D()
        out   = Dense(num_classes, softmax)(Dense(128, relu)(concatenate([text, image, audio])))

    What the port has to make explicit:

    * PyTorch is channels-first: images are (B, C, H, W), the waveform (B, 1, T).
    * ``Dense`` infers its input width, ``nn.Linear`` does not: the width of the
      concatenation (``self.dims``) is computed from ``image_size`` here.
    * ``LSTM(64)`` returns the state after the last *real* token only when the
      padding is masked (``mask_zero=True``); here the padded positions are
      packed away (no attention) or masked out of the softmax (attention).
    * The attention layer (``tanh(x W + b) u``, softmax over time, weighted sum)
      is :class:`mmutils.fusion.AttentionPooling` with ``hidden = lstm_units``.
    * The last layer returns logits: ``nn.CrossEntropyLoss`` applies the
      (log-)softmax that Keras puts in the last ``Dense``.

    ``forward(ids, mask, images, wave)``: ids (B, L) int, mask (B, L) (1 = token),
    images (B, C, image_size, image_size) float, wave (B, T) or (B, 1, T) float
    -> logits (B, num_classes). ``features(...)`` returns the three per-modality
    vectors ``{"text": (B, lstm_units), "image": (B, dims["image"]), "audio": (B, audio_filters)}``;
    ``last_attention`` holds the attention weights (B, L) of the last call.

    ``fusion_width=None`` concatenates the raw features, exactly like the
    original (the flattened image block then holds almost all the
    dimensions); an int uses :class:`mmutils.fusion.ConcatFusion` instead
    (each modality projected to ``fusion_width`` and layer-normalized first).
    """

    def __init__(self, vocab_size: int, num_classes: int, *, image_size: int = 32, image_channels: int = 3,
                 embed_dim: int = 128, lstm_units: int = 64, conv_filters: int = 32, audio_filters: int = 32,
                 audio_kernel: int = 9, audio_stride: int = 4, hidden: int = 128, attention: bool = True,
                 fusion_width: int | None = None, pad_id: int = 0):
        super().__init__()
        from .fusion import AttentionPooling, ConcatFusion  # fusion imports this module: import lazily

        for name, value, low in [("vocab_size", vocab_size, 1), ("num_classes", num_classes, 2),
                                 ("image_size", image_size, 4), ("audio_kernel", audio_kernel, 1),
                                 ("audio_stride", audio_stride, 1)]:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)  # Embedding(vocab, 128)
        self.lstm = nn.LSTM(embed_dim, lstm_units, batch_first=True)  # LSTM(64)
        self.attention = AttentionPooling(lstm_units, hidden=lstm_units) if attention else None
        self.image = nn.Sequential(  # Conv2D(32, (3, 3), activation="relu"), MaxPooling2D(2), Flatten()
            nn.Conv2d(image_channels, conv_filters, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
        self.audio = nn.Sequential(  # Conv1D(32, 9, strides=4, activation="relu"), GlobalMaxPooling1D()
            nn.Conv1d(1, audio_filters, audio_kernel, stride=audio_stride), nn.ReLU(), _GlobalMaxPool1d())
        side = (image_size - 2) // 2  # 'valid' 3x3 convolution, then 2x2 pooling
        self.dims = {"text": lstm_units, "image": conv_filters * side * side, "audio": audio_filters}
        if fusion_width is None:  # concatenate([...]) -> Dense(128, relu) -> Dense(num_classes)
            self.head = nn.Sequential(nn.Linear(sum(self.dims.values()), hidden), nn.ReLU(),
                                      nn.Linear(hidden, num_classes))
        else:
            self.head = ConcatFusion(tuple(self.dims.values()), width=fusion_width, hidden=hidden,
                                     out_dim=num_classes)
        self.fusion_width = fusion_width
        self.image_size = image_size
        self.image_channels = image_channels
        self.audio_kernel = audio_kernel
        self.last_attention: torch.Tensor | None = None

    def _check(self, ids, mask, images, wave):
        check_tensor("ids", ids, 2, dtype_kind="int")
        mask = _check_mask(mask, ids)
        check_tensor("images", images, 4, dtype_kind="float")
        if images.shape[1:] != (self.image_channels, self.image_size, self.image_size):
            hint = " (PyTorch is channels-first: use images.permute(0, 3, 1, 2))" \
                if images.shape[-1] == self.image_channels else ""
            raise ValueError(f"images must have shape (B, {self.image_channels}, {self.image_size}, "
                             f"{self.image_size}), got {tuple(images.shape)}{hint}")
        if isinstance(wave, torch.Tensor) and wave.ndim == 2:
            wave = wave.unsqueeze(1)
        check_tensor("wave", wave, 3, size={1: 1}, dtype_kind="float")
        if wave.shape[2] < self.audio_kernel:
            raise ValueError(f"wave must have at least audio_kernel={self.audio_kernel} samples, "
                             f"got shape {tuple(wave.shape)}")
        batch = {"ids": ids.shape[0], "images": images.shape[0], "wave": wave.shape[0]}
        if len(set(batch.values())) != 1:
            raise ValueError(f"ids, images and wave must share the batch size, got {batch}")
        return mask, wave

    def features(self, ids: torch.Tensor, mask: torch.Tensor | None, images: torch.Tensor,
                 wave: torch.Tensor) -> dict[str, torch.Tensor]:
        """The per-modality feature vectors, before fusion."""
        mask, wave = self._check(ids, mask, images, wave)
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
