"""Visual question answering (VQA) on ShapesWorld: fused models and single-modality baselines.

A VQA model reads an image and a question and picks the answer from a fixed
list (:data:`mmutils.world.ANSWERS`), as in the VQA benchmark (Antol et al.,
2015). The models here share their parts, so that they differ only in *how*
the two modalities meet:

* :class:`VQAModel` with ``fusion="late"`` – each encoder runs to the end on its
  own: the image becomes one globally pooled vector, the question one vector,
  and the two meet only in the answer classifier (:class:`mmutils.fusion.ConcatFusion`).
* ``fusion="film"`` – the question modulates the image feature map with FiLM
  layers (Perez et al., 2018), in residual blocks that also see the coordinates
  of every cell; the head keeps the spatial grid.
* ``fusion="cross"`` – question words attend to image regions
  (:class:`mmutils.fusion.CrossAttentionFusion`); the attention map paints the
  words back onto the region grid, and a head that keeps the grid reads it.
* :class:`QuestionOnlyVQA` – the language prior: the answer from the question alone.
* :class:`ImageOnlyVQA` – the image and the question's *type* (its first words),
  but not the question: what the picture alone gives away.

All of them can share one pretrained, frozen image encoder: :class:`RegionTagger`
trains a :class:`~mmutils.encoders.SpatialCNN` to say which color and shape sit in
each cell of the region grid (:func:`cell_labels`), the way real VQA systems start
from a pretrained backbone or detector (Anderson et al., 2018).

Helpers: :func:`answer_logits` (one call for every model), :func:`coordinate_grid`,
:func:`answer_mask` and :func:`accuracy_by_type`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
from torch import nn

from .encoders import RNNTextEncoder, SpatialCNN, TransformerTextEncoder, _check_mask, check_tensor, masked_mean
from .fusion import ConcatFusion, CrossAttentionFusion, FiLM

__all__ = [
    "VQAConfig", "FUSIONS", "coordinate_grid", "answer_mask", "accuracy_by_type", "cell_labels",
    "RegionTagger", "FiLMBlock", "VQAModel", "QuestionOnlyVQA", "ImageOnlyVQA", "answer_logits",
]

FUSIONS = ("late", "film", "cross")
TEXT_ENCODERS = ("gru", "transformer")


def _answers() -> tuple[str, ...]:
    from .world import ANSWERS

    return ANSWERS


def _qtypes() -> tuple[str, ...]:
    from .world import QUESTION_TYPES

    return QUESTION_TYPES


@dataclass
class VQAConfig:
    """Sizes shared by the VQA models (the defaults are the ones chapter 5 uses).

    ``dim``: width of region tokens and word tokens; ``widths``: channels of the
    :class:`~mmutils.encoders.SpatialCNN` stages (each halves the image, so 32x32
    images give a ``grid`` of 4x4 regions); ``text``: the question encoder,
    ``"gru"`` (bidirectional GRU, Cho et al., 2014) or ``"transformer"`` (with
    ``text_layers`` layers and ``heads`` heads, Vaswani et al., 2017); ``heads``:
    also the heads of the cross-attention; ``hidden``: hidden width of the answer
    heads; ``late_hidden``: that of the late-fusion classifier (wider, so that
    the three fusions have about the same number of parameters); ``film_blocks``:
    FiLM residual blocks; ``cross_layers``: cross-attention blocks;
    ``head_channels``: channels per grid cell in the grid-keeping heads;
    ``max_len``: the longest question the Transformer encoder accepts.
    """

    dim: int = 32
    widths: tuple[int, ...] = (16, 32, 48)
    text: str = "gru"
    text_layers: int = 1
    heads: int = 2
    hidden: int = 128
    late_hidden: int = 640
    film_blocks: int = 1
    cross_layers: int = 1
    head_channels: int = 16
    max_len: int = 16
    image_size: int = 32

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "text":
                if value not in TEXT_ENCODERS:
                    raise ValueError(f"text must be one of {TEXT_ENCODERS}, got {value!r}")
            elif f.name == "widths":
                if not isinstance(value, (tuple, list)) or not value or \
                        not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in value):
                    raise ValueError(f"widths must be a non-empty tuple of positive ints, got {value!r}")
                self.widths = tuple(value)
            elif isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{f.name} must be an int, got {type(value).__name__}")
            elif value < 1:
                raise ValueError(f"{f.name} must be >= 1, got {value}")
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        if self.image_size % 2 ** len(self.widths):
            raise ValueError(f"image_size ({self.image_size}) must be divisible by 2**len(widths) "
                             f"= {2 ** len(self.widths)}")

    def text_encoder(self, vocab_size: int) -> nn.Module:
        """A new question encoder: (ids, mask) -> (tokens (B, L, dim), pooled (B, dim))."""
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 2:
            raise ValueError(f"vocab_size must be an int >= 2, got {vocab_size!r}")
        if self.text == "gru":
            if self.dim % 2:
                raise ValueError(f"dim must be even for the bidirectional GRU, got {self.dim}")
            return RNNTextEncoder(vocab_size, self.dim, self.dim // 2, cell="gru", bidirectional=True)
        return TransformerTextEncoder(vocab_size, self.dim, self.heads, self.text_layers, self.max_len)

    @property
    def grid(self) -> int:
        """Side of the region grid: ``image_size / 2**len(widths)``."""
        return self.image_size // 2 ** len(self.widths)


def _config(config: VQAConfig | None, overrides: dict) -> VQAConfig:
    if config is not None and not isinstance(config, VQAConfig):
        raise TypeError(f"config must be a VQAConfig or None, got {type(config).__name__}")
    base = {f.name: getattr(config, f.name) for f in fields(VQAConfig)} if config is not None else {}
    unknown = set(overrides) - {f.name for f in fields(VQAConfig)}
    if unknown:
        raise TypeError(f"unknown VQAConfig field(s): {sorted(unknown)}")
    return VQAConfig(**{**base, **overrides})


def coordinate_grid(h: int, w: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Coordinates of the cells of an ``h`` x ``w`` grid, in [-1, 1]: a (2, h, w) tensor (x, then y).

    Appended to feature maps as two extra channels (CoordConv, as FiLM does,
    Perez et al., 2018), they tell a convolution or an attention layer *where* a
    cell is; x grows to the right and y downwards, as image rows do.
    """
    for name, v in (("h", h), ("w", w)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    ys = torch.linspace(-1.0, 1.0, h, device=device) if h > 1 else torch.zeros(1, device=device)
    xs = torch.linspace(-1.0, 1.0, w, device=device) if w > 1 else torch.zeros(1, device=device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")  # (h, w) each
    return torch.stack([gx, gy])  # (2, h, w)


def answer_mask(qtypes: torch.Tensor) -> torch.Tensor:
    """Which answers can answer each question type: bool (B, len(ANSWERS)) for ``qtypes`` (B,).

    ``qtypes`` indexes :data:`mmutils.world.QUESTION_TYPES`: color questions are
    answered by a color, shape questions by a shape, count questions by a
    number, exists and relation questions by yes or no.
    """
    from .world import COLORS, SHAPES

    check_tensor("qtypes", qtypes, 1, dtype_kind="int")
    types, answers = _qtypes(), _answers()
    if qtypes.numel() and (qtypes.min() < 0 or qtypes.max() >= len(types)):
        raise ValueError(f"qtypes must index QUESTION_TYPES (0..{len(types) - 1}), "
                         f"got values in [{int(qtypes.min())}, {int(qtypes.max())}]")
    family = {"color": set(COLORS), "shape": set(SHAPES), "count": {a for a in answers if a.isdigit()},
              "exists": {"yes", "no"}, "relation": {"yes", "no"}}
    table = torch.tensor([[a in family[t] for a in answers] for t in types], device=qtypes.device)
    return table[qtypes]  # (B, A)


def accuracy_by_type(logits_or_preds: torch.Tensor, answers: torch.Tensor, qtypes: torch.Tensor) -> dict[str, float]:
    """Accuracy per question type, plus ``"all"``.

    ``logits_or_preds``: logits (B, A) or predicted answer ids (B,); ``answers``
    and ``qtypes``: (B,) ids into :data:`~mmutils.world.ANSWERS` and
    :data:`~mmutils.world.QUESTION_TYPES`. Types absent from the batch are left out.
    """
    if not isinstance(logits_or_preds, torch.Tensor) or logits_or_preds.ndim not in (1, 2):
        raise ValueError(f"logits_or_preds must be logits (B, A) or predictions (B,), got "
                         f"{tuple(logits_or_preds.shape) if isinstance(logits_or_preds, torch.Tensor) else type(logits_or_preds).__name__}")
    check_tensor("answers", answers, 1, dtype_kind="int")
    check_tensor("qtypes", qtypes, 1, dtype_kind="int")
    preds = logits_or_preds.argmax(-1) if logits_or_preds.ndim == 2 else logits_or_preds
    if not (preds.shape[0] == answers.shape[0] == qtypes.shape[0]):
        raise ValueError(f"logits_or_preds, answers and qtypes must share the batch size, got "
                         f"{tuple(logits_or_preds.shape)}, {tuple(answers.shape)} and {tuple(qtypes.shape)}")
    correct = (preds == answers).float()
    out = {}
    for i, name in enumerate(_qtypes()):
        sel = qtypes == i
        if sel.any():
            out[name] = float(correct[sel].mean())
    out["all"] = float(correct.mean()) if correct.numel() else float("nan")
    return out


def _check_inputs(images, input_ids, attention_mask, cfg: VQAConfig):
    check_tensor("images", images, 4, size={1: 3, 2: cfg.image_size, 3: cfg.image_size}, dtype_kind="float")
    check_tensor("input_ids", input_ids, 2, dtype_kind="int")
    if images.shape[0] != input_ids.shape[0]:
        raise ValueError(f"images and input_ids must share the batch size, got {tuple(images.shape)} "
                         f"and {tuple(input_ids.shape)}")
    return _check_mask(attention_mask, input_ids, "attention_mask")


class FiLMBlock(nn.Module):
    """The residual block of FiLM (Perez et al., 2018).

    ``x = ReLU(conv1x1([x, coords]))``; ``y = ReLU(FiLM(BN(conv3x3(x)), q))``; output ``x + y``.
    ``forward(fmap, q)``: (B, C, h, w), (B, cond_dim) -> (B, C, h, w). The batch
    norm has no affine parameters: FiLM's gamma and beta take their place.
    """

    def __init__(self, channels: int, cond_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels + 2, channels, 1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.film = FiLM(cond_dim, channels)
        self.channels = channels

    def forward(self, fmap: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        check_tensor("fmap", fmap, 4, size={1: self.channels}, dtype_kind="float")
        coords = coordinate_grid(fmap.shape[2], fmap.shape[3], fmap.device).to(fmap.dtype)
        coords = coords.expand(fmap.shape[0], -1, -1, -1)  # (B, 2, h, w)
        x = torch.relu(self.conv1(torch.cat([fmap, coords], dim=1)))  # (B, C, h, w)
        y = torch.relu(self.film(self.bn(self.conv2(x)), q))  # (B, C, h, w)
        return x + y


class _SpatialHead(nn.Module):
    """A head that keeps the layout: a 1x1 conv (with coordinates) to few channels per cell, then an MLP
    on the flattened grid (where) and its global max pool (what, wherever it is)."""

    def __init__(self, channels: int, grid: int, head_channels: int, hidden: int, out_dim: int, extra: int = 0):
        super().__init__()
        self.reduce = nn.Conv2d(channels + 2, head_channels, 1)
        self.fc = nn.Linear(head_channels * (grid * grid + 1) + extra, hidden)
        self.out = nn.Linear(hidden, out_dim)

    def forward(self, fmap: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        coords = coordinate_grid(fmap.shape[2], fmap.shape[3], fmap.device).to(fmap.dtype)
        x = torch.relu(self.reduce(torch.cat([fmap, coords.expand(fmap.shape[0], -1, -1, -1)], dim=1)))
        # (B, head_channels * h * w): the cell order, hence the layout, is kept; plus the max over cells
        parts = [x.flatten(1), x.amax(dim=(2, 3))] + ([extra] if extra is not None else [])
        return self.out(torch.relu(self.fc(torch.cat(parts, dim=1))))


# --------------------------------------------------------------------------- #
# Stage 1: an image encoder that knows what is where
# --------------------------------------------------------------------------- #
def cell_labels(scenes, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What sits in each cell of a ``grid`` x ``grid`` partition of each scene.

    The cell of an object is the one that holds its centre. Returns
    ``(colors, shapes)``, two int64 tensors of shape (n, grid * grid), in
    row-major cell order: 0 for an empty cell, else 1 + the index into
    :data:`~mmutils.world.COLORS` / :data:`~mmutils.world.SHAPES`.
    """
    from .world import COLORS, SHAPES, Scene

    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
        raise ValueError(f"grid must be a positive int, got {grid!r}")
    if not isinstance(scenes, (list, tuple)) or not all(isinstance(s, Scene) for s in scenes):
        raise TypeError("scenes must be a list of mmutils.world.Scene")
    colors = torch.zeros(len(scenes), grid, grid, dtype=torch.long)
    shapes = torch.zeros(len(scenes), grid, grid, dtype=torch.long)
    for i, scene in enumerate(scenes):
        for o in scene.objects:
            r, c = min(int(o.y * grid), grid - 1), min(int(o.x * grid), grid - 1)
            colors[i, r, c] = COLORS.index(o.color) + 1
            shapes[i, r, c] = SHAPES.index(o.shape) + 1
    return colors.flatten(1), shapes.flatten(1)


class RegionTagger(nn.Module):
    """An image encoder with two linear probes per region: which color, which shape (or empty).

    Training it on :func:`cell_labels` teaches the encoder's region tokens what
    is where, the way real VQA systems start from a pretrained detector or
    ImageNet backbone (Anderson et al., 2018; Perez et al., 2018).
    ``forward(images)``: (B, 3, S, S) -> (color logits (B, N, 1 + len(COLORS)),
    shape logits (B, N, 1 + len(SHAPES))).
    """

    def __init__(self, encoder: SpatialCNN):
        super().__init__()
        from .world import COLORS, SHAPES

        if not isinstance(encoder, SpatialCNN):
            raise TypeError(f"encoder must be a SpatialCNN, got {type(encoder).__name__}")
        self.encoder = encoder
        self.color = nn.Linear(encoder.out_dim, 1 + len(COLORS))
        self.shape = nn.Linear(encoder.out_dim, 1 + len(SHAPES))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        regions = self.encoder(images)  # (B, N, D)
        return self.color(regions), self.shape(regions)

    def loss(self, images: torch.Tensor, colors: torch.Tensor, shapes: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of both probes over all regions; labels (B, N) from :func:`cell_labels`."""
        color_logits, shape_logits = self(images)
        for name, labels, logits in (("colors", colors, color_logits), ("shapes", shapes, shape_logits)):
            check_tensor(name, labels, 2, dtype_kind="int")
            if labels.shape != logits.shape[:2]:
                raise ValueError(f"{name} must have shape {tuple(logits.shape[:2])} (batch, regions), "
                                 f"got {tuple(labels.shape)}")
        return (nn.functional.cross_entropy(color_logits.flatten(0, 1), colors.flatten())
                + nn.functional.cross_entropy(shape_logits.flatten(0, 1), shapes.flatten()))


# --------------------------------------------------------------------------- #
# Stage 2: answering
# --------------------------------------------------------------------------- #
def _check_regions(regions, cfg: VQAConfig) -> None:
    check_tensor("regions", regions, 3, size={1: cfg.grid ** 2, 2: cfg.dim}, dtype_kind="float")


def _image_encoder(image_encoder, cfg: VQAConfig) -> SpatialCNN:
    if image_encoder is None:
        return SpatialCNN(3, cfg.widths, cfg.dim)
    if not isinstance(image_encoder, SpatialCNN):
        raise TypeError(f"image_encoder must be a SpatialCNN or None, got {type(image_encoder).__name__}")
    if image_encoder.out_dim != cfg.dim or image_encoder.stages != len(cfg.widths):
        raise ValueError(f"image_encoder must have out_dim={cfg.dim} and {len(cfg.widths)} stages "
                         f"(config), got out_dim={image_encoder.out_dim} and {image_encoder.stages} stages")
    return image_encoder


class VQAModel(nn.Module):
    """Image + question -> answer logits, with ``fusion`` one of ``"late"``, ``"film"``, ``"cross"``.

    Image: a :class:`~mmutils.encoders.SpatialCNN` (``image_encoder``, e.g. a
    pretrained and frozen one shared by several models; a new one if ``None``)
    -> region tokens (B, N, dim), N = grid**2, row-major, layer-normalized.
    Question: ``config.text`` encoder (a bidirectional GRU by default) -> word
    tokens (B, L, dim) and their masked mean q (B, dim).

    * late: the global average of the regions (B, dim) and q meet only in the
      classifier, :class:`~mmutils.fusion.ConcatFusion` (the first VQA
      baselines, Antol et al., 2015). Pooling discards where things are.
    * film: the region grid (B, dim, g, g) goes through ``film_blocks``
      :class:`FiLMBlock`, whose channels q scales and shifts (Perez et al.,
      2018); a head that keeps the grid reads the result (and q).
    * cross: the words attend to the regions (:class:`~mmutils.fusion.CrossAttentionFusion`;
      the regions carry no position embedding: the head below keeps the grid). The attention
      ``A`` (B, L, N) says where each word looks; ``A^T`` paints every word onto
      the regions it points at, ``painted = A^T @ words`` (B, N, dim), and the same
      kind of grid-keeping head reads ``[regions, painted]`` (and the mean word).

    ``forward(images, input_ids, attention_mask=None)``: images (B, 3, S, S),
    ids and mask (B, L) -> logits (B, len(ANSWERS)). ``answer(regions, ...)``
    does the same from precomputed region tokens (B, N, dim). Padding changes
    no output.
    """

    def __init__(self, vocab_size: int, fusion: str = "cross", config: VQAConfig | None = None, *,
                 image_encoder: SpatialCNN | None = None, **overrides):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 2:
            raise ValueError(f"vocab_size must be an int >= 2, got {vocab_size!r}")
        cfg = _config(config, overrides)
        self.config, self.fusion = cfg, fusion
        n_answers = len(_answers())
        self.image_encoder = _image_encoder(image_encoder, cfg)
        self.text_encoder = cfg.text_encoder(vocab_size)
        self.region_norm = nn.LayerNorm(cfg.dim)
        if fusion == "late":
            self.fuse = ConcatFusion((cfg.dim, cfg.dim), width=cfg.dim, hidden=cfg.late_hidden, out_dim=n_answers)
        elif fusion == "film":
            self.blocks = nn.ModuleList(FiLMBlock(cfg.dim, cfg.dim) for _ in range(cfg.film_blocks))
            self.head = _SpatialHead(cfg.dim, cfg.grid, cfg.head_channels, cfg.hidden, n_answers, extra=cfg.dim)
        else:
            self.fuse = CrossAttentionFusion(cfg.dim, cfg.heads, cfg.cross_layers)
            self.head = _SpatialHead(2 * cfg.dim, cfg.grid, cfg.head_channels, cfg.hidden, n_answers, extra=cfg.dim)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Region tokens (B, N, dim) of images (B, 3, S, S)."""
        cfg = self.config
        check_tensor("images", images, 4, size={1: 3, 2: cfg.image_size, 3: cfg.image_size}, dtype_kind="float")
        return self.image_encoder(images)

    def answer(self, regions: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               *, return_attention: bool = False):
        """Logits (B, A) from region tokens (B, N, dim) and the question (B, L).

        With ``return_attention=True`` (cross fusion only) also the attention of
        every word over the regions (B, L, N); each row sums to 1 and region ``k``
        is cell ``(k // grid, k % grid)``.
        """
        cfg = self.config
        _check_regions(regions, cfg)
        check_tensor("input_ids", input_ids, 2, dtype_kind="int")
        if regions.shape[0] != input_ids.shape[0]:
            raise ValueError(f"regions and input_ids must share the batch size, got {tuple(regions.shape)} "
                             f"and {tuple(input_ids.shape)}")
        if return_attention and self.fusion != "cross":
            raise ValueError(f"return_attention needs fusion='cross', this model has fusion={self.fusion!r}")
        mask = _check_mask(attention_mask, input_ids, "attention_mask")
        words, question = self.text_encoder(input_ids, mask)  # (B, L, D), (B, D)
        regions = self.region_norm(regions)  # (B, N, D)
        if self.fusion == "late":
            return self.fuse([SpatialCNN.pool(regions), question])  # (B, A): layout averaged away
        g, d = cfg.grid, cfg.dim
        if self.fusion == "film":
            fmap = regions.transpose(1, 2).reshape(-1, d, g, g)  # (B, D, g, g)
            for block in self.blocks:
                fmap = block(fmap, question)  # channels scaled and shifted by the question
            return self.head(fmap, question)  # (B, A)
        fused, attn = self.fuse(words, regions, mask)  # (B, L, D), (B, L, N): words look for what they name
        pointing = attn * mask.unsqueeze(-1).to(attn.dtype)  # (B, L, N): padding points nowhere
        painted = pointing.transpose(1, 2) @ fused  # (B, N, D): the words that point at each region
        fmap = torch.cat([regions, painted], dim=-1).transpose(1, 2).reshape(-1, 2 * d, g, g)  # (B, 2D, g, g)
        logits = self.head(fmap, masked_mean(fused, mask))  # (B, A)
        return (logits, attn) if return_attention else logits

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        _check_inputs(images, input_ids, attention_mask, self.config)
        return self.answer(self.encode_image(images), input_ids, attention_mask)


class QuestionOnlyVQA(nn.Module):
    """The language prior: answer logits from the question alone.

    The same Transformer question encoder as :class:`VQAModel`, its masked-mean
    vector, then an MLP. ``forward(input_ids, attention_mask=None)``: (B, L) ->
    logits (B, len(ANSWERS)).
    """

    def __init__(self, vocab_size: int, config: VQAConfig | None = None, **overrides):
        super().__init__()
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 2:
            raise ValueError(f"vocab_size must be an int >= 2, got {vocab_size!r}")
        cfg = _config(config, overrides)
        self.config = cfg
        self.text_encoder = cfg.text_encoder(vocab_size)
        self.head = nn.Sequential(nn.Linear(cfg.dim, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, len(_answers())))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        check_tensor("input_ids", input_ids, 2, dtype_kind="int")
        mask = _check_mask(attention_mask, input_ids, "attention_mask")
        _, question = self.text_encoder(input_ids, mask)  # (B, D)
        return self.head(question)  # (B, A)


class ImageOnlyVQA(nn.Module):
    """The image and the question's type, but not the question: what the picture alone gives away.

    The same kind of image encoder as :class:`VQAModel` (``image_encoder`` or a
    new :class:`~mmutils.encoders.SpatialCNN`), a head that keeps the grid
    layout, and an embedding of the type (which the first words of a question,
    "what color", "how many", ..., reveal anyway).
    ``forward(images, qtypes)``: (B, 3, S, S), (B,) ids into
    :data:`~mmutils.world.QUESTION_TYPES` -> logits (B, len(ANSWERS));
    ``answer(regions, qtypes)`` does the same from region tokens (B, N, dim).
    """

    def __init__(self, config: VQAConfig | None = None, *, image_encoder: SpatialCNN | None = None, **overrides):
        super().__init__()
        cfg = _config(config, overrides)
        self.config = cfg
        self.image_encoder = _image_encoder(image_encoder, cfg)
        self.region_norm = nn.LayerNorm(cfg.dim)
        self.type_embedding = nn.Embedding(len(_qtypes()), cfg.dim)
        self.head = _SpatialHead(cfg.dim, cfg.grid, cfg.head_channels, cfg.hidden, len(_answers()), extra=cfg.dim)

    def answer(self, regions: torch.Tensor, qtypes: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        _check_regions(regions, cfg)
        check_tensor("qtypes", qtypes, 1, dtype_kind="int")
        if qtypes.shape[0] != regions.shape[0]:
            raise ValueError(f"regions and qtypes must share the batch size, got {tuple(regions.shape)} "
                             f"and {tuple(qtypes.shape)}")
        if qtypes.numel() and (qtypes.min() < 0 or qtypes.max() >= len(_qtypes())):
            raise ValueError(f"qtypes must index QUESTION_TYPES (0..{len(_qtypes()) - 1}), "
                             f"got values in [{int(qtypes.min())}, {int(qtypes.max())}]")
        g = cfg.grid
        fmap = self.region_norm(regions).transpose(1, 2).reshape(-1, cfg.dim, g, g)  # (B, D, g, g)
        return self.head(fmap, self.type_embedding(qtypes))  # (B, A)

    def forward(self, images: torch.Tensor, qtypes: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        check_tensor("images", images, 4, size={1: 3, 2: cfg.image_size, 3: cfg.image_size}, dtype_kind="float")
        return self.answer(self.image_encoder(images), qtypes)


def answer_logits(model: nn.Module, regions: torch.Tensor, input_ids: torch.Tensor,
                  attention_mask: torch.Tensor, qtypes: torch.Tensor) -> torch.Tensor:
    """Answer logits (B, len(ANSWERS)) of any model of this module, from one batch.

    Each model takes what it is allowed to see: :class:`QuestionOnlyVQA` the
    question (``input_ids``, ``attention_mask``, (B, L)), :class:`ImageOnlyVQA`
    the region tokens (B, N, dim) and ``qtypes`` (B,), :class:`VQAModel` the
    regions and the question. Lets one training loop serve all of them.
    """
    if isinstance(model, QuestionOnlyVQA):
        return model(input_ids, attention_mask)
    if isinstance(model, ImageOnlyVQA):
        return model.answer(regions, qtypes)
    if isinstance(model, VQAModel):
        return model.answer(regions, input_ids, attention_mask)
    raise TypeError(f"model must be a VQAModel, QuestionOnlyVQA or ImageOnlyVQA, got {type(model).__name__}")
