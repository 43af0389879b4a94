"""Visual question answering (VQA) on ShapesWorld (chapter 5): fused models and single-modality baselines.

The models read an image and a question and pick the answer from :data:`mmutils.world.ANSWERS`, as in the VQA
benchmark (Antol et al., 2015); they share their parts and differ only in *how* the modalities meet:

* :class:`VQAModel` – ``fusion="pooled"`` (concatenation of pooled features, an early fusion), ``"film"`` (FiLM,
  Perez et al., 2018) or ``"cross"`` (cross-attention), see its docstring.
* :class:`QuestionOnlyVQA` – the language prior: the answer from the question alone.
* :class:`ImageOnlyVQA` – the image and the question's *type*, but not the question.
* :func:`answer_logits` (one call for every model), :func:`answer_mask`, :func:`accuracy_by_type`.

All of them can share one pretrained, frozen :class:`~mmutils.nn.encoders.ConvTower` (``max_pool=True``, no
``pool``), e.g. trained by a :class:`~mmutils.nn.encoders.RegionTagger` with heads ``{"color": 1 + len(COLORS),
"shape": 1 + len(SHAPES)}`` on the labels ``{"color": world.cell_labels(scenes, grid, ("color",)), "shape":
world.cell_labels(scenes, grid, ("shape",))}`` (:func:`mmutils.world.cell_labels`, one call per head), the way real VQA
systems start from a pretrained backbone or detector (Anderson et al., 2018). Every model checks its inputs once, where
the user calls it.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from . import world
from .checks import check_choice, check_instance, check_int, check_mask, check_tensor, config_with
from .nn.encoders import ConvTower, RNNTextEncoder, TransformerTextEncoder
from .nn.fusion import ConcatFusion, CrossAttentionFusion
from .nn.layers import FiLM, coordinate_grid, masked_mean

__all__ = ["VQAConfig", "FUSIONS", "answer_mask", "accuracy_by_type", "FiLMBlock", "VQAModel", "QuestionOnlyVQA",
           "ImageOnlyVQA", "answer_logits"]

FUSIONS = ("pooled", "film", "cross")
TEXT_ENCODERS = ("gru", "transformer")


@dataclass
class VQAConfig:
    """Sizes shared by the VQA models (the defaults are the ones chapter 5 uses).

    ``dim``: width of region tokens and word tokens; ``widths``: channels of the :class:`~mmutils.nn.encoders.ConvTower`
    stages (each halves the image, so 32x32 images give a ``grid`` of 4x4 regions); ``text``: the question encoder,
    ``"gru"`` (bidirectional GRU, Cho et al., 2014) or ``"transformer"`` (with ``text_layers`` layers and ``heads``
    heads, Vaswani et al., 2017); ``heads``: also the heads of the cross-attention; ``hidden``: hidden width of the
    answer heads; ``pooled_hidden``: that of the pooled-concatenation classifier (wider, so that the three fusions have
    about the same number of parameters); ``film_blocks``: FiLM residual blocks; ``cross_layers``: cross-attention blocks;
    ``head_channels``: channels per grid cell in the grid-keeping heads; ``max_len``: the longest question the
    Transformer encoder accepts.
    """

    dim: int = 32
    widths: tuple[int, ...] = (16, 32, 48)
    text: str = "gru"
    text_layers: int = 1
    heads: int = 2
    hidden: int = 128
    pooled_hidden: int = 640
    film_blocks: int = 1
    cross_layers: int = 1
    head_channels: int = 16
    max_len: int = 16
    image_size: int = 32

    def __post_init__(self) -> None:
        check_choice("text", self.text, TEXT_ENCODERS)
        check_instance("widths", self.widths, (tuple, list))
        if not self.widths:
            raise ValueError("widths must name at least one stage, got an empty sequence")
        self.widths = tuple(check_int(f"widths[{i}]", w, min=1) for i, w in enumerate(self.widths))
        for f in fields(self):
            if f.name not in ("text", "widths"):
                check_int(f.name, getattr(self, f.name), min=1)
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        if self.image_size % 2 ** len(self.widths):
            raise ValueError(f"image_size ({self.image_size}) must be divisible by 2**len(widths) "
                             f"= {2 ** len(self.widths)}")

    def text_encoder(self, vocab_size: int) -> nn.Module:
        """A new question encoder: (ids, mask) -> (tokens (B, L, dim), pooled (B, dim))."""
        check_int("vocab_size", vocab_size, min=2)
        if self.text == "gru":
            if self.dim % 2:
                raise ValueError(f"dim must be even for the bidirectional GRU, got {self.dim}")
            return RNNTextEncoder(vocab_size, self.dim, self.dim // 2, cell="gru", bidirectional=True)
        return TransformerTextEncoder(vocab_size, self.dim, self.heads, self.text_layers, self.max_len)

    @property
    def grid(self) -> int:
        """Side of the region grid: ``image_size / 2**len(widths)``."""
        return self.image_size // 2 ** len(self.widths)


def _qtypes_arg(qtypes, batch: int | None = None) -> torch.Tensor:
    """``qtypes`` (B,) ids into QUESTION_TYPES (an embedding index out of range is a device-side error on a GPU)."""
    check_tensor("qtypes", qtypes, 1, size=None if batch is None else {0: batch}, dtype="int")
    if qtypes.numel() and (qtypes.min() < 0 or qtypes.max() >= len(world.QUESTION_TYPES)):
        raise ValueError(f"qtypes must index QUESTION_TYPES (0..{len(world.QUESTION_TYPES) - 1}), "
                         f"got values in [{int(qtypes.min())}, {int(qtypes.max())}]")
    return qtypes


def answer_mask(qtypes: torch.Tensor) -> torch.Tensor:
    """Which answers can answer each question type: bool (B, len(ANSWERS)) for ``qtypes`` (B,).

    ``qtypes`` indexes :data:`mmutils.world.QUESTION_TYPES`: color questions are answered by a color, shape questions by
    a shape, count questions by a number, exists and relation questions by yes or no.
    """
    _qtypes_arg(qtypes)
    types, answers = world.QUESTION_TYPES, world.ANSWERS
    family = {"color": set(world.COLORS), "shape": set(world.SHAPES), "count": {a for a in answers if a.isdigit()},
              "exists": {"yes", "no"}, "relation": {"yes", "no"}}
    table = torch.tensor([[a in family[t] for a in answers] for t in types], device=qtypes.device)
    return table[qtypes]  # (B, A)


def accuracy_by_type(logits_or_preds: torch.Tensor, answers: torch.Tensor, qtypes: torch.Tensor) -> dict[str, float]:
    """Accuracy per question type, plus ``"all"``.

    ``logits_or_preds``: logits (B, A) or predicted answer ids (B,); ``answers`` and ``qtypes``: (B,) ids into
    :data:`~mmutils.world.ANSWERS` and :data:`~mmutils.world.QUESTION_TYPES`. Types absent from the batch are left out.
    """
    check_tensor("logits_or_preds", logits_or_preds)
    if logits_or_preds.ndim not in (1, 2):
        raise ValueError(f"logits_or_preds must be logits (B, A) or predictions (B,), "
                         f"got shape {tuple(logits_or_preds.shape)}")
    check_tensor("answers", answers, 1, size={0: logits_or_preds.shape[0]}, dtype="int")
    check_tensor("qtypes", qtypes, 1, size={0: logits_or_preds.shape[0]}, dtype="int")
    preds = logits_or_preds.argmax(-1) if logits_or_preds.ndim == 2 else logits_or_preds
    correct = (preds == answers).float()
    out = {}
    for i, name in enumerate(world.QUESTION_TYPES):
        sel = qtypes == i
        if sel.any():
            out[name] = float(correct[sel].mean())
    out["all"] = float(correct.mean()) if correct.numel() else float("nan")
    return out


def _with_coords(fmap: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, C + 2, h, w): the feature map with the (x, y) coordinates of every cell appended."""
    coords = coordinate_grid(fmap.shape[2], fmap.shape[3], fmap.device).to(fmap.dtype)  # (2, h, w)
    return torch.cat([fmap, coords.expand(fmap.shape[0], -1, -1, -1)], dim=1)


class FiLMBlock(nn.Module):
    """The residual block of FiLM (Perez et al., 2018).

    ``x = ReLU(conv1x1([x, coords]))``; ``y = ReLU(FiLM(BN(conv3x3(x)), q))``; output ``x + y``. ``forward(fmap, q)``:
    (B, C, h, w), (B, cond_dim) -> (B, C, h, w). The batch norm has no affine parameters: FiLM's gamma and beta take
    their place.
    """

    def __init__(self, channels: int, cond_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels + 2, channels, 1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.film = FiLM(cond_dim, channels)
        self.channels = channels

    def forward(self, fmap: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(_with_coords(fmap)))  # (B, C, h, w)
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
        x = torch.relu(self.reduce(_with_coords(fmap)))  # (B, head_channels, h, w)
        # (B, head_channels * h * w): the cell order, hence the layout, is kept; plus the max over cells
        parts = [x.flatten(1), x.amax(dim=(2, 3))] + ([extra] if extra is not None else [])
        return self.out(torch.relu(self.fc(torch.cat(parts, dim=1))))


# -- The models ---------------------------------------------------------------
def _image_encoder(image_encoder, cfg: VQAConfig) -> ConvTower:
    if image_encoder is None:
        return ConvTower(3, cfg.widths, max_pool=True, out_dim=cfg.dim)
    check_instance("image_encoder", image_encoder, ConvTower)
    if image_encoder.pool is not None:
        raise ValueError(f"image_encoder must return region tokens (pool=None), got pool={image_encoder.pool!r}")
    if image_encoder.out_dim != cfg.dim or image_encoder.stages != len(cfg.widths):
        raise ValueError(f"image_encoder must have out_dim={cfg.dim} and {len(cfg.widths)} stages "
                         f"(config), got out_dim={image_encoder.out_dim} and {image_encoder.stages} stages")
    return image_encoder


class VQAModel(nn.Module):
    """Image + question -> answer logits, with ``fusion`` one of ``"pooled"``, ``"film"``, ``"cross"``.

    Image: a :class:`~mmutils.nn.encoders.ConvTower` (``image_encoder``, e.g. a pretrained and frozen one shared by
    several models; a new one with ``max_pool=True`` if ``None``) -> region tokens (B, N, dim), N = grid**2, row-major,
    layer-normalized. Question: ``config.text`` encoder (a bidirectional GRU by default) -> word tokens (B, L, dim) and
    their masked mean q (B, dim).

    * pooled: the global average of the regions (B, dim) and q are concatenated and read by one classifier,
      :class:`~mmutils.nn.fusion.ConcatFusion` (the first VQA baselines, Antol et al., 2015): an early
      (feature-level) fusion of pooled features. Pooling discards where things are.
    * film: the region grid (B, dim, g, g) goes through ``film_blocks`` :class:`FiLMBlock`, whose channels the
      layer-normalized question ``LN(q)`` scales and shifts (Perez et al., 2018); a head that keeps the grid reads the
      result (and ``LN(q)``). The normalization matters: fed the raw GRU vector, the model trained far worse in
      chapter 5 (existence about 0.62, below the pooled model overall, in one run);
      :class:`~mmutils.nn.fusion.ConcatFusion` normalizes each modality too.
    * cross: the words attend to the regions (:class:`~mmutils.nn.fusion.CrossAttentionFusion`), each region token
      plus a learned embedding of its cell's (x, y) coordinates (``region_position``), so that what a word reads also
      says where it is. The attention ``A`` (B, L, N) says where each word looks;
      ``A^T`` paints every word onto the regions it points at, ``painted = A^T @ words`` (B, N, dim), and the same kind
      of grid-keeping head reads ``[regions, painted]`` (and the mean word).

    ``forward(images, input_ids, attention_mask=None)``: images (B, 3, S, S), ids and mask (B, L) ->
    logits (B, len(ANSWERS)). ``answer(regions, ...)`` does the same from precomputed region tokens (B, N, dim).
    Padding changes no output.
    """

    def __init__(self, vocab_size: int, fusion: str = "cross", config: VQAConfig | None = None, *,
                 image_encoder: ConvTower | None = None, **overrides):
        super().__init__()
        self.fusion = check_choice("fusion", fusion, FUSIONS)
        self.config = cfg = config_with(VQAConfig, config, overrides)
        n_answers = len(world.ANSWERS)
        self.image_encoder = _image_encoder(image_encoder, cfg)
        self.text_encoder = cfg.text_encoder(vocab_size)
        self.region_norm = nn.LayerNorm(cfg.dim)
        if fusion == "pooled":
            self.fuse = ConcatFusion((cfg.dim, cfg.dim), width=cfg.dim, hidden=cfg.pooled_hidden, out_dim=n_answers)
        elif fusion == "film":
            self.question_norm = nn.LayerNorm(cfg.dim)
            self.blocks = nn.ModuleList(FiLMBlock(cfg.dim, cfg.dim) for _ in range(cfg.film_blocks))
            self.head = _SpatialHead(cfg.dim, cfg.grid, cfg.head_channels, cfg.hidden, n_answers, extra=cfg.dim)
        else:
            self.region_position = nn.Linear(2, cfg.dim)  # (x, y) of a cell -> an embedding added to its token
            self.fuse = CrossAttentionFusion(cfg.dim, cfg.heads, cfg.cross_layers)
            self.head = _SpatialHead(2 * cfg.dim, cfg.grid, cfg.head_channels, cfg.hidden, n_answers, extra=cfg.dim)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Region tokens (B, N, dim) of images (B, 3, S, S)."""
        size = self.config.image_size
        check_tensor("images", images, 4, size={1: 3, 2: size, 3: size}, dtype="float")
        return self.image_encoder(images)

    def answer(self, regions: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               *, return_attention: bool = False):
        """Logits (B, A) from region tokens (B, N, dim) and the question (B, L).

        With ``return_attention=True`` (cross fusion only) also the attention of every word over the regions (B, L, N);
        each row sums to 1 and region ``k`` is cell ``(k // grid, k % grid)``.
        """
        check_tensor("regions", regions, 3, size={1: self.config.grid ** 2, 2: self.config.dim}, dtype="float")
        check_tensor("input_ids", input_ids, 2, size={0: regions.shape[0]}, dtype="int")
        mask = check_mask("attention_mask", attention_mask, input_ids)
        if return_attention and self.fusion != "cross":
            raise ValueError(f"return_attention needs fusion='cross', this model has fusion={self.fusion!r}")
        return self._answer(regions, input_ids, mask, return_attention)

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        size = self.config.image_size
        check_tensor("images", images, 4, size={1: 3, 2: size, 3: size}, dtype="float")
        check_tensor("input_ids", input_ids, 2, size={0: images.shape[0]}, dtype="int")
        mask = check_mask("attention_mask", attention_mask, input_ids)
        return self._answer(self.image_encoder(images), input_ids, mask)

    def _answer(self, regions: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor,
                return_attention: bool = False):
        words, question = self.text_encoder(input_ids, mask)  # (B, L, D), (B, D)
        regions = self.region_norm(regions)  # (B, N, D)
        if self.fusion == "pooled":
            return self.fuse([regions.mean(dim=1), question])  # (B, A): layout averaged away
        g, d = self.config.grid, self.config.dim
        if self.fusion == "film":
            fmap = regions.transpose(1, 2).reshape(-1, d, g, g)  # (B, D, g, g)
            question = self.question_norm(question)  # (B, D): FiLM's gamma and beta see a vector of fixed scale
            for block in self.blocks:
                fmap = block(fmap, question)  # channels scaled and shifted by the question
            return self.head(fmap, question)  # (B, A)
        coords = coordinate_grid(g, g, regions.device).to(regions.dtype).flatten(1).t()  # (N, 2), row-major cells
        keys = regions + self.region_position(coords)  # (B, N, D): what is in each region, and where
        fused, attn = self.fuse(words, keys, mask)  # (B, L, D), (B, L, N): words look for what they name
        pointing = attn * mask.unsqueeze(-1).to(attn.dtype)  # (B, L, N): padding points nowhere
        painted = pointing.transpose(1, 2) @ fused  # (B, N, D): the words that point at each region
        fmap = torch.cat([regions, painted], dim=-1).transpose(1, 2).reshape(-1, 2 * d, g, g)  # (B, 2D, g, g)
        logits = self.head(fmap, masked_mean(fused, mask))  # (B, A)
        return (logits, attn) if return_attention else logits


class QuestionOnlyVQA(nn.Module):
    """The language prior: answer logits from the question alone.

    The same question encoder as :class:`VQAModel` (``config.text``), its masked-mean vector, then an MLP.
    ``forward(input_ids, attention_mask=None)``: (B, L) -> logits (B, len(ANSWERS)).
    """

    def __init__(self, vocab_size: int, config: VQAConfig | None = None, **overrides):
        super().__init__()
        self.config = cfg = config_with(VQAConfig, config, overrides)
        self.text_encoder = cfg.text_encoder(vocab_size)
        self.head = nn.Sequential(nn.Linear(cfg.dim, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, len(world.ANSWERS)))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        check_tensor("input_ids", input_ids, 2, dtype="int")
        _, question = self.text_encoder(input_ids, check_mask("attention_mask", attention_mask, input_ids))  # (B, D)
        return self.head(question)  # (B, A)


class ImageOnlyVQA(nn.Module):
    """The image and the question's type, but not the question: what the picture alone gives away.

    The same kind of image encoder as :class:`VQAModel` (``image_encoder`` or a new
    :class:`~mmutils.nn.encoders.ConvTower`), a head that keeps the grid layout, and an embedding of the type (which the
    first words of a question, "what color", "how many", ..., reveal anyway). ``forward(images, qtypes)``: (B, 3, S, S),
    (B,) ids into :data:`~mmutils.world.QUESTION_TYPES` -> logits (B, len(ANSWERS)); ``answer(regions, qtypes)`` does
    the same from region tokens (B, N, dim).
    """

    def __init__(self, config: VQAConfig | None = None, *, image_encoder: ConvTower | None = None, **overrides):
        super().__init__()
        self.config = cfg = config_with(VQAConfig, config, overrides)
        self.image_encoder = _image_encoder(image_encoder, cfg)
        self.region_norm = nn.LayerNorm(cfg.dim)
        self.type_embedding = nn.Embedding(len(world.QUESTION_TYPES), cfg.dim)
        self.head = _SpatialHead(cfg.dim, cfg.grid, cfg.head_channels, cfg.hidden, len(world.ANSWERS), extra=cfg.dim)

    def answer(self, regions: torch.Tensor, qtypes: torch.Tensor) -> torch.Tensor:
        """Logits (B, A) from region tokens (B, N, dim) and question types (B,)."""
        check_tensor("regions", regions, 3, size={1: self.config.grid ** 2, 2: self.config.dim}, dtype="float")
        return self._answer(regions, _qtypes_arg(qtypes, regions.shape[0]))

    def forward(self, images: torch.Tensor, qtypes: torch.Tensor) -> torch.Tensor:
        size = self.config.image_size
        check_tensor("images", images, 4, size={1: 3, 2: size, 3: size}, dtype="float")
        qtypes = _qtypes_arg(qtypes, images.shape[0])
        return self._answer(self.image_encoder(images), qtypes)

    def _answer(self, regions: torch.Tensor, qtypes: torch.Tensor) -> torch.Tensor:
        g = self.config.grid
        fmap = self.region_norm(regions).transpose(1, 2).reshape(-1, self.config.dim, g, g)  # (B, D, g, g)
        return self.head(fmap, self.type_embedding(qtypes))  # (B, A)


def answer_logits(model: nn.Module, regions: torch.Tensor, input_ids: torch.Tensor,
                  attention_mask: torch.Tensor, qtypes: torch.Tensor) -> torch.Tensor:
    """Answer logits (B, len(ANSWERS)) of any model of this module, from one batch.

    Each model takes what it is allowed to see: :class:`QuestionOnlyVQA` the question (``input_ids``,
    ``attention_mask``, (B, L)), :class:`ImageOnlyVQA` the region tokens (B, N, dim) and ``qtypes`` (B,),
    :class:`VQAModel` the regions and the question. Lets one training loop serve all of them.
    """
    if isinstance(model, QuestionOnlyVQA):
        return model(input_ids, attention_mask)
    if isinstance(model, ImageOnlyVQA):
        return model.answer(regions, qtypes)
    return check_instance("model", model, VQAModel).answer(regions, input_ids, attention_mask)
