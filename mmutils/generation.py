"""Text-to-image generation on ShapesWorld: the oracle that judges generated images, the rectified-flow
noising step and sampler, classifier-free guidance, and the small generators (chapters 6 to 8).

Judging: :class:`Oracle` (a per-cell classifier with exact ShapesWorld labels) reads an image back into a
:class:`~mmutils.world.Scene`; :func:`prompt_fidelity` scores it against the prompt's facts, and
:func:`oracle_fid` is the Fréchet distance (Heusel et al., 2017) on the oracle's penultimate features.
Generating: :func:`flow_noise` and :func:`euler_sample` (rectified flow, Liu et al., 2023; flow matching,
Lipman et al., 2023), :func:`ddpm_noise` (Ho et al., 2020), :func:`guided` (classifier-free guidance,
Ho & Salimans, 2022), a patchify :class:`PatchAutoencoder` and a FiLM :class:`FlowUNet` that works in its
latent grid (latent diffusion, Rombach et al., 2022); a :class:`ConditionalVAE` is the one-pass baseline
(Kingma & Welling, 2014; Sohn et al., 2015); :func:`with_context_channels` starts a model that also sees a
grid of context from a trained one. Models that later chapters share (the oracle, the autoencoder, chapter 6's
text-to-image network, :func:`load_text_to_image`) are trained once, deterministically, and cached on disk by
:func:`cached_state` (``.cache/`` at the repository root, or the folder named by ``MMUTILS_CACHE``).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checks import (
    check_float,
    check_instance,
    check_int,
    check_tensor,
    check_texts,
    config_with,
)
from .data import object_mask, to_tensor_images  # object_mask is re-exported: chapter 7 uses gen.object_mask
from .nn.encoders import ConvTower, TransformerTextEncoder
from .nn.layers import FiLM
from .runtime import threads
from .train import fit, linear_cooldown, random_batches
from .world import captions as scene_captions
from .world import (
    BACKGROUND_GREY,
    COLORS,
    SHAPES,
    SIZES,
    Obj,
    Scene,
    cell_labels,
    decode_cell_label,
    drop_attributes,
    render,
    sample_scenes,
)
from .world.language import desc_matches, facts_hold, parse_caption

__all__ = [
    "BACKGROUND",
    "CACHE_VARIABLE",
    "HELD_OUT_PAIRS",
    "THIN_SHAPES",
    "ConditionalVAE",
    "ConditionalVAEConfig",
    "FlowUNet",
    "FlowUNetConfig",
    "Oracle",
    "OracleConfig",
    "PatchAutoencoder",
    "cache_dir",
    "cache_text_to_image",
    "cached_state",
    "ddpm_alphas_cumprod",
    "ddpm_noise",
    "euler_integrate",
    "euler_sample",
    "flow_loss",
    "flow_noise",
    "flow_sigmas",
    "flow_target",
    "frechet_distance",
    "guided",
    "load_autoencoder",
    "load_oracle",
    "load_text_to_image",
    "object_mask",
    "oracle_accuracy",
    "oracle_fid",
    "prompt_fidelity",
    "sample_latents",
    "sample_vae",
    "scene_fidelity",
    "scene_images",
    "sdedit_sigmas",
    "text_to_image_data",
    "train_autoencoder",
    "train_oracle",
    "train_text_to_image",
    "vae_loss",
    "with_context_channels",
]

CACHE_VARIABLE = "MMUTILS_CACHE"
TRAIN_THREADS = 2  # cached models train on this many threads on every machine, so their weights are the same
BACKGROUND = BACKGROUND_GREY / 255  # the renderer's background grey, in [0, 1]


# ---- Cache -------------------------------------------------------------------
def cache_dir() -> Path:
    """The folder of cached models: ``$MMUTILS_CACHE`` if set, else ``.cache/`` at the repository root."""
    env = os.environ.get(CACHE_VARIABLE)
    if env:
        return Path(env)
    import mmutils

    return Path(mmutils.__file__).resolve().parents[1] / ".cache"


def cached_state(name: str, key: dict, build: Callable[[], nn.Module]) -> dict:
    """The ``state_dict`` of the model ``build()`` trains, from the cache if it holds one for ``key``.

    ``key``: everything that determines the weights (recipe version, seed, steps, config), JSON-serializable;
    the file is ``<name>-<sha1 of key>.pt``, with ``"threads": TRAIN_THREADS`` added to the key. ``build`` runs
    on ``TRAIN_THREADS`` intra-op threads, whatever the machine (the thread count can change the rounding, and
    so the weights), under :func:`torch.random.fork_rng` after ``torch.manual_seed(key["seed"])``, so a cold
    cache gives the same weights as a warm one and leaves the caller's random state as a warm cache does.
    """
    check_instance("name", name, str)
    check_instance("key", key, dict)
    check_int('key["seed"]', key.get("seed"), min=0)
    path = _cache_path(name, key)
    if path.exists():
        return torch.load(path, map_location="cpu", weights_only=True)
    with torch.random.fork_rng(devices=[]), threads(TRAIN_THREADS):
        torch.manual_seed(key["seed"])
        return _save_state(path, build())


def _cache_path(name: str, key: dict) -> Path:
    key = {**key, "threads": TRAIN_THREADS}
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"{name}-{digest}.pt"


def _save_state(path: Path, model: nn.Module) -> dict:
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(state, tmp)
    tmp.replace(path)  # atomic: a reader never sees half a file
    return state


def scene_images(scenes: Sequence[Scene], size: int = 32) -> torch.Tensor:
    """Rendered scenes as float images (n, 3, size, size) in [0, 1]."""
    return to_tensor_images(render(list(scenes), size=size))


# ---- The oracle --------------------------------------------------------------
@dataclass(frozen=True)
class OracleConfig:
    """The oracle: a :class:`~mmutils.nn.encoders.ConvTower` to a ``grid`` x ``grid`` map, then per cell an
    ``embed``-wide layer (the penultimate features) and a label (empty or shape x color x size) and the
    object centre's offset in the cell."""

    widths: tuple[int, ...] = (32, 64, 96, 96)
    strides: tuple[int, ...] = (2, 2, 2, 1)
    embed: int = 16
    grid: int = 4
    image_size: int = 32


ATTRIBUTES = {"shape": SHAPES, "color": COLORS, "size": SIZES}


class Oracle(nn.Module):
    """Reads ShapesWorld images back into scenes: which object (shape, color, size) sits in which cell, and where.

    ``forward(images)``: (B, 3, H, W) in [0, 1] -> a dict of per-cell outputs, cells row-major: ``"object"``
    logits (B, grid²) that an object's centre is in the cell, ``"shape"``, ``"color"``, ``"size"`` logits
    (B, grid², n_values) and ``"offset"`` (B, grid², 2), the centre's (x, y) within the cell in [0, 1].
    ``features(images)`` -> the penultimate features (B, grid² * embed), which keep where things are;
    ``read(images)`` -> one :class:`~mmutils.world.Scene` per image, its objects ordered by confidence:
    cells whose probability exceeds ``threshold`` (low, because an object whose centre is near a border
    splits its probability over two cells), most confident first, each dropped if its (shape, color) was
    already read or its centre is within ``min_gap`` of one already read (on both axes; sampled objects are
    at least 0.3 apart), as non-maximum suppression in a detector. ``read(images, shifts=k)`` (k divides the
    cell side) reads each found object's shape, color and size again in k x k copies of the image moved by
    multiples of cell/k pixels (on a canvas one cell larger, filled with the background), averaging the
    probabilities at the cell where the object's centre lands in each copy, weighted by that cell's object
    probability; where objects are comes from the plain reading, and how many can change with what they are
    read as (one per (shape, color)). A network of stride 8 is not shift invariant: its reading of an ambiguous
    drawing can change when the drawing moves by two pixels (Azulay & Weiss, 2019; Zhang, 2019). An image moved
    by any multiple of cell/k pixels along an axis has the original's k x k copies, some of them moved by a
    whole cell, which this fully convolutional network reads nearly alike one cell further on (not exactly: its
    receptive field reaches the zero padding at the canvas's borders), so the averaged reading changes far less
    with such moves than the plain one.
    """

    threshold = 0.1
    min_gap = 0.2

    def __init__(self, config: OracleConfig | None = None, **overrides):
        super().__init__()
        cfg = self.config = config_with(OracleConfig, config, overrides)
        self.tower = ConvTower(3, cfg.widths, strides=cfg.strides)
        self.embed = nn.Sequential(nn.Conv2d(self.tower.channels, cfg.embed, 1), nn.ReLU())
        self.sizes = {"object": 1, **{a: len(v) for a, v in ATTRIBUTES.items()}, "offset": 2}
        self.head = nn.Conv2d(cfg.embed, sum(self.sizes.values()), 1)

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(self.tower.grid(images))  # (B, embed, grid, grid)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self._embed(images).flatten(1)  # (B, embed * grid * grid)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.head(self._embed(images)).flatten(2).transpose(1, 2)  # (B, grid², 1 + 6 + 6 + 2 + 2)
        parts = dict(zip(self.sizes, out.split(list(self.sizes.values()), dim=-1)))
        parts["object"] = parts["object"].squeeze(-1)  # (B, grid²)
        parts["offset"] = parts["offset"].sigmoid()  # (B, grid², 2)
        return parts

    @torch.no_grad()
    def read(self, images: torch.Tensor, *, shifts: int = 1) -> list[Scene]:
        check_tensor("images", images, 4, size={1: 3}, dtype="float")
        cell_side = self.config.image_size // self.config.grid
        shifts = check_int("shifts", shifts, min=1)
        if cell_side % shifts:
            raise ValueError(f"shifts must divide the cell side ({cell_side} pixels), got {shifts}")
        grid = self.config.grid
        out = self(images)
        conf = out["object"].float().sigmoid()  # (B, grid²): probability that an object's centre is there
        centres = (torch.stack(torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="xy"), -1)
                   .reshape(1, grid * grid, 2) + out["offset"].double()) / grid  # (B, grid², 2): (x, y) in [0, 1]
        if shifts > 1:
            values = self._shift_averaged(images, centres, shifts)
        else:
            values = {a: out[a].argmax(-1) for a in ATTRIBUTES}  # (B, grid²) each
        scenes = []
        for b in range(len(images)):
            cells = [c for c in conf[b].argsort(descending=True).tolist() if conf[b, c] > self.threshold]
            objs = {}  # (shape, color) -> object: a scene holds each pair once; keep the most confident
            for c in cells:
                o = Obj(*(ATTRIBUTES[a][values[a][b, c]] for a in ATTRIBUTES), *centres[b, c].tolist())
                if all(max(abs(o.x - k.x), abs(o.y - k.y)) > self.min_gap for k in objs.values()):
                    objs.setdefault(o.desc[:2], o)
            scenes.append(Scene(tuple(objs.values())))
        return scenes

    def _shift_averaged(self, images: torch.Tensor, centres: torch.Tensor, shifts: int) -> dict[str, torch.Tensor]:
        """Per cell of the unmoved image, the attribute values (B, grid²) that maximise the probabilities averaged
        over ``shifts`` x ``shifts`` moved copies, each read where the cell's centre estimate (B, grid², 2) lands
        in that copy and weighted by the probability that an object's centre is in the cell read."""
        side, grid = self.config.image_size, self.config.grid
        cell_side = side // grid
        rows = torch.arange(len(images)).unsqueeze(1)  # (B, 1)
        total = {a: 0.0 for a in ATTRIBUTES}
        weight = 0.0
        for dy in range(0, cell_side, cell_side // shifts):
            for dx in range(0, cell_side, cell_side // shifts):
                canvas = F.pad(images, (dx, cell_side - dx, dy, cell_side - dy), value=BACKGROUND)
                out = self(canvas)  # a (grid + 1) x (grid + 1) map of cells
                at = ((centres * side + torch.tensor([dx, dy])) // cell_side).long().clamp(0, grid)  # (B, grid², 2)
                cell = at[..., 1] * (grid + 1) + at[..., 0]  # (B, grid²) row-major
                w = out["object"].float().sigmoid()[rows, cell].unsqueeze(-1)  # (B, grid², 1)
                for a in ATTRIBUTES:
                    total[a] = total[a] + w * out[a].float().softmax(-1)[rows, cell]  # (B, grid², n_values)
                weight = weight + w
        return {a: (p / weight.clamp_min(1e-12)).argmax(-1) for a, p in total.items()}


def _oracle_targets(scenes: Sequence[Scene], grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell labels (n, grid²) of :func:`~mmutils.world.cell_labels` and centre offsets in the cell (n, grid², 2)."""
    labels = cell_labels(scenes, grid)
    offsets = torch.zeros(len(scenes), grid * grid, 2)
    for i, scene in enumerate(scenes):
        for o in scene.objects:
            r, c = min(int(o.y * grid), grid - 1), min(int(o.x * grid), grid - 1)
            offsets[i, r * grid + c] = torch.tensor([o.x * grid - c, o.y * grid - r])
    return labels, offsets


def _degrade(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Blur (a random mix with a 3x3 box filter) and pixel noise of random strength, per image, so the oracle
    reads the soft edges of generated images as well as crisp renders."""
    b = len(images)
    mix = 0.7 * torch.rand(b, 1, 1, 1, generator=generator)
    noise = 0.06 * torch.rand(b, 1, 1, 1, generator=generator)
    blurred = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return (1 - mix) * images + mix * blurred + noise * torch.randn(images.shape, generator=generator)


def _oracle_loss(model: Oracle, batch) -> torch.Tensor:
    images, labels, offsets, degrade = batch
    out = model(_degrade(images, degrade) if degrade is not None else images)
    full = labels > 0  # (B, grid²): attributes and offsets are learned where an object sits
    loss = F.binary_cross_entropy_with_logits(out["object"], full.float())
    for a, v in decode_cell_label(labels).items():
        loss = loss + F.cross_entropy(out[a][full], v[full] - 1)
    return loss + 4 * F.l1_loss(out["offset"][full], offsets[full])


def train_oracle(config: OracleConfig | None = None, *, n: int = 8000, steps: int = 1600, batch_size: int = 64,
                 lr: float = 3e-3, max_objects: int = 2, seed: int = 0, progress: bool = False) -> Oracle:
    """A new :class:`Oracle` trained on ``n`` random scenes (1 to ``max_objects`` objects, seed ``seed``).

    AdamW with a one-cycle learning rate peaking at ``lr`` for ``steps`` steps of ``batch_size``; per cell,
    a binary cross-entropy on "an object is here", cross-entropies on its attributes and an L1 loss on its
    centre offset. Training images are blurred and noised by random amounts, so that soft edges do not
    change what the oracle reads. Returned in eval mode.
    """
    cfg = config or OracleConfig()
    scenes = sample_scenes(check_int("n", n, min=1), max_objects=check_int("max_objects", max_objects, min=1),
                           seed=check_int("seed", seed, min=0))
    labels, offsets = _oracle_targets(scenes, cfg.grid)
    model = Oracle(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
    draw = random_batches(scene_images(scenes, cfg.image_size), labels, offsets, batch_size=batch_size, seed=seed)
    degrade = torch.Generator().manual_seed(seed + 1)
    fit(model, _oracle_loss, lambda step: (*draw(step), degrade), max_steps=steps, optimizer=opt,
        scheduler=sched, progress=progress, desc="oracle")
    return model.eval()


ORACLE_RECIPE = "oracle-v3"


def load_oracle(seed: int = 0, *, steps: int = 1600, progress: bool = False) -> Oracle:
    """The oracle of :func:`train_oracle` for ``seed``, trained once and cached (see :func:`cached_state`)."""
    seed, steps = check_int("seed", seed, min=0), check_int("steps", steps, min=1)
    cfg = OracleConfig()
    key = {"recipe": ORACLE_RECIPE, "seed": seed, "steps": steps, "config": asdict(cfg)}
    state = cached_state("oracle", key, lambda: train_oracle(cfg, steps=steps, seed=seed, progress=progress))
    with torch.random.fork_rng(devices=[]):  # the weights are overwritten: leave the caller's random state
        model = Oracle(cfg)
    model.load_state_dict(state)
    return model.eval()


def _same_objects(read: Scene, true: Scene, tolerance: float) -> bool:
    """Whether ``read`` holds exactly the objects of ``true``, each centre within ``tolerance`` on both axes."""
    if sorted(o.desc for o in read.objects) != sorted(o.desc for o in true.objects):
        return False
    found = {o.desc: o for o in read.objects}
    return all(abs(found[o.desc].x - o.x) < tolerance and abs(found[o.desc].y - o.y) < tolerance
               for o in true.objects)


@torch.no_grad()
def oracle_accuracy(oracle: Oracle, scenes: Sequence[Scene], tolerance: float = 0.1) -> dict[str, float]:
    """How well ``oracle`` reads real images of ``scenes``: per object, its shape, color, size read at its
    cell; ``"scene"``: exactly the scene's objects found, each centre within ``tolerance`` (a fraction of
    the image side) of the truth on both axes."""
    check_instance("oracle", oracle, Oracle)
    check_instance("scenes", scenes, (list, tuple))
    grid = oracle.config.grid
    images = scene_images(scenes, oracle.config.image_size)
    labels, _ = _oracle_targets(scenes, grid)
    out = oracle(images)
    full = labels > 0
    out = {a: (out[a].argmax(-1)[full] == v[full] - 1).float().mean().item()
           for a, v in decode_cell_label(labels).items()}
    read = oracle.read(images)
    out["scene"] = sum(_same_objects(r, s, tolerance) for r, s in zip(read, scenes)) / len(scenes)
    return out


def prompt_fidelity(oracle: Oracle, images: torch.Tensor, prompts: Sequence[str], *, reduction: str = "mean",
                    shifts: int = 1) -> dict[str, float] | dict[str, torch.Tensor]:
    """How faithful generated ``images`` (n, 3, H, W) in [0, 1] are to their ``prompts`` (n captions): the
    oracle reads each image into a scene (``shifts``: as in :meth:`Oracle.read`), scored by
    :func:`scene_fidelity`."""
    check_instance("oracle", oracle, Oracle)
    check_tensor("images", images, 4, size={1: 3}, dtype="float")
    prompts = check_texts("prompts", prompts)
    if len(prompts) != len(images):
        raise ValueError(f"prompts must give one caption per image ({len(images)}), got {len(prompts)}")
    _check_reduction(reduction)
    return _fidelity(oracle.read(images, shifts=shifts), prompts, reduction)


def _check_reduction(reduction: str) -> None:
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def scene_fidelity(scenes: Sequence[Scene], prompts: Sequence[str], *,
                   reduction: str = "mean") -> dict[str, float] | dict[str, torch.Tensor]:
    """How faithful the ``scenes`` read in generated images are to their ``prompts`` (one caption per scene).

    For each object the prompt names, the read object that matches most of its attributes is compared with
    it: ``"shape"``, ``"color"``, ``"size"``: per scene, the fraction of the named objects whose prompt names
    that attribute that have it right (NaN where the prompt names it for none), then the mean over the scenes
    that are not NaN; ``"objects"``: every named object is there; ``"all"``: every fact of the prompt holds,
    relations included (:func:`~mmutils.world.facts_hold`). ``reduction="none"`` returns the per-scene float
    tensors (n,) instead of means.
    """
    check_instance("scenes", scenes, (list, tuple))
    prompts = check_texts("prompts", prompts)
    if len(prompts) != len(scenes):
        raise ValueError(f"prompts must give one caption per scene ({len(scenes)}), got {len(prompts)}")
    _check_reduction(reduction)
    return _fidelity(scenes, prompts, reduction)


def _fidelity(scenes: Sequence[Scene], prompts: list[str], reduction: str) -> dict:
    """:func:`scene_fidelity` of checked arguments."""
    rows = {k: [] for k in ("shape", "color", "size", "objects", "all")}
    for prompt, scene in zip(prompts, scenes):
        facts = parse_caption(prompt)
        named = [f[1] for f in facts if f[0] == "exists"]
        hits = {a: [] for a in ("shape", "color", "size")}
        for desc in named:
            best = max(scene.objects, key=lambda o: sum(p == v for p, v in zip(desc, o.desc)), default=None)
            for k, a in enumerate(("shape", "color", "size")):
                if desc[k] is not None:
                    hits[a].append(best is not None and best.desc[k] == desc[k])
        for a, h in hits.items():
            rows[a].append(sum(h) / len(h) if h else float("nan"))
        rows["objects"].append(float(all(any(desc_matches(d, o.desc) for o in scene.objects) for d in named)))
        rows["all"].append(float(facts_hold(facts, scene)))
    per = {k: torch.tensor(v) for k, v in rows.items()}
    if reduction == "none":
        return per
    return {k: v[~v.isnan()].mean().item() for k, v in per.items()}


# ---- Fréchet distance --------------------------------------------------------
def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two sets of features (n, d) and (m, d) (Heusel et al., 2017).

    ``||mu_a - mu_b||² + Tr(S_a + S_b - 2 (S_a S_b)^{1/2})`` with unbiased covariances, in float64.
    """
    check_tensor("features_a", features_a, 2, dtype="float")
    check_tensor("features_b", features_b, 2, size={1: features_a.shape[1]}, dtype="float")
    if len(features_a) < 2 or len(features_b) < 2:
        raise ValueError("features_a and features_b need at least 2 rows each")
    a, b = features_a.double(), features_b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    sqrt_trace = torch.linalg.eigvals(cov_a @ cov_b).sqrt().real.sum()  # Tr((S_a S_b)^{1/2})
    return float((mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * sqrt_trace)


class _Features(nn.Module):
    """The oracle's penultimate features as a torchmetrics feature extractor."""

    def __init__(self, oracle: Oracle):
        super().__init__()
        self.oracle = oracle
        self.num_features = oracle.config.embed * oracle.config.grid ** 2

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.oracle.features(images)


@torch.no_grad()
def oracle_fid(oracle: Oracle, real: torch.Tensor, fake: torch.Tensor) -> float:
    """The idea of FID without an Inception download: torchmetrics' ``FrechetInceptionDistance`` with the
    oracle's penultimate features, between ``real`` and ``fake`` images (n, 3, H, W) in [0, 1]."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    check_instance("oracle", oracle, Oracle)
    check_tensor("real", real, 4, size={1: 3}, dtype="float")
    check_tensor("fake", fake, 4, size={1: 3}, dtype="float")
    metric = FrechetInceptionDistance(feature=_Features(oracle.eval()), normalize=True)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return float(metric.compute())


# ---- Noising and sampling ----------------------------------------------------
def _check_t(name: str, t, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if t.ndim > 1 or (t.ndim == 1 and len(t) != len(like)):
        raise ValueError(f"{name} must be a number or a tensor (B,) with B = {len(like)}, got shape {tuple(t.shape)}")
    if ((t < 0) | (t > 1)).any():
        raise ValueError(f"{name} must lie in [0, 1]")
    return t.reshape(-1, *([1] * (like.ndim - 1))) if t.ndim else t


def flow_noise(x0: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
    """The rectified-flow path (Liu et al., 2023; Lipman et al., 2023): ``x_t = (1 - t) x0 + t noise``.

    ``x0``, ``noise``: (B, ...); ``t`` in [0, 1], a number or (B,). t = 0 is data, t = 1 pure noise
    (the convention of ``diffusers``' ``FlowMatchEulerDiscreteScheduler``, whose sigma is t).
    """
    check_tensor("x0", x0, dtype="float")
    check_tensor("noise", noise, x0.ndim, dtype="float")
    if noise.shape != x0.shape:
        raise ValueError(f"noise must have the shape of x0 {tuple(x0.shape)}, got {tuple(noise.shape)}")
    t = _check_t("t", t, x0)
    return (1 - t) * x0 + t * noise


def flow_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The velocity of the straight path, ``d x_t / dt = noise - x0``: what the network learns to predict."""
    return noise - x0


def flow_sigmas(steps: int) -> torch.Tensor:
    """The Euler sampler's noise levels: ``steps + 1`` values evenly from 1 (noise) down to 0 (data)."""
    return torch.linspace(1.0, 0.0, check_int("steps", steps, min=1) + 1)


def sdedit_sigmas(steps: int, strength: float) -> torch.Tensor:
    """The noise levels an image-to-image edit walks (SDEdit, Meng et al., 2022): the tail of
    :func:`flow_sigmas` that starts at about ``strength``.

    Of ``steps`` Euler steps from noise to data, the first ``t_start = int(steps - steps * strength)`` are
    skipped (the rounding of ``diffusers``' image-to-image pipelines, whose ``get_timesteps`` does the same);
    the edit starts from the input noised to ``sigmas[0]`` and takes the remaining ``len(sigmas) - 1`` steps.
    ``strength`` in (0, 1]: 1 is generation from pure noise, small values keep more of the input.
    """
    steps = check_int("steps", steps, min=1)
    strength = check_float("strength", strength, min=0.0, max=1.0)
    t_start = int(max(steps - min(steps * strength, steps), 0))
    if t_start >= steps:
        raise ValueError(f"strength must leave at least one step, got strength={strength}")
    return flow_sigmas(steps)[t_start:]


def euler_integrate(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
                    sigmas: torch.Tensor) -> torch.Tensor:
    """Integrate ``dx/dt = velocity(x, t)`` from ``t = sigmas[0]`` (where ``x`` is) through ``sigmas``.

    ``velocity(x (B, ...), t (B,)) -> (B, ...)``; ``sigmas`` (K + 1,) decreasing. Each step is
    ``x <- x + (t_next - t) v(x, t)``, which is ``FlowMatchEulerDiscreteScheduler.step`` on the same sigmas.
    """
    if not callable(velocity):
        raise TypeError(f"velocity must be callable, got {type(velocity).__name__}")
    x = check_tensor("x", x, dtype="float")
    check_tensor("sigmas", sigmas, 1, dtype="float")
    for t, t_next in pairwise(sigmas.to(x.device)):
        x = x + (t_next - t) * velocity(x, t.expand(len(x)))
    return x


def euler_sample(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], noise: torch.Tensor,
                 steps: int = 20) -> torch.Tensor:
    """Integrate ``dx/dt = velocity(x, t)`` from ``t = 1`` (``noise``) to ``t = 0`` in ``steps`` Euler steps
    on :func:`flow_sigmas` (see :func:`euler_integrate`, which checks ``velocity``)."""
    return euler_integrate(velocity, check_tensor("noise", noise, dtype="float"), flow_sigmas(steps))


def ddpm_alphas_cumprod(timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM's linear variance schedule (Ho et al., 2020): ``alpha_bar_t = prod_{s<=t} (1 - beta_s)``, (timesteps,)."""
    timesteps = check_int("timesteps", timesteps, min=1)
    beta_start = check_float("beta_start", beta_start, min=0.0, max=1.0)
    beta_end = check_float("beta_end", beta_end, min=beta_start, max=1.0)
    betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float32)
    return torch.cumprod(1.0 - betas, dim=0)


def ddpm_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """DDPM's forward process in closed form: ``x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise``.

    ``x0``, ``noise``: (B, ...); ``t``: integer steps (B,); ``alphas_cumprod`` from :func:`ddpm_alphas_cumprod`.
    """
    check_tensor("x0", x0, dtype="float")
    if check_tensor("noise", noise, dtype="float").shape != x0.shape:
        raise ValueError(f"noise must have the shape of x0 {tuple(x0.shape)}, got {tuple(noise.shape)}")
    check_tensor("t", t, 1, size={0: len(x0)}, dtype="int")
    check_tensor("alphas_cumprod", alphas_cumprod, 1, dtype="float")
    if ((t < 0) | (t >= len(alphas_cumprod))).any():
        raise ValueError(f"t must lie in [0, {len(alphas_cumprod) - 1}]")
    ab = alphas_cumprod.to(x0.device)[t].to(x0.dtype).reshape(-1, *([1] * (x0.ndim - 1)))
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def guided(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans, 2022): ``uncond + scale * (cond - uncond)``.

    ``cond``, ``uncond``: the model's outputs (B, ...) with and without the prompt (or with a negative
    prompt in place of none). ``scale = 1`` is the conditional model; larger scales push away from ``uncond``.
    """
    check_tensor("cond", cond, dtype="float")
    if check_tensor("uncond", uncond, dtype="float").shape != cond.shape:
        raise ValueError(f"uncond must have the shape of cond {tuple(cond.shape)}, got {tuple(uncond.shape)}")
    scale = check_float("scale", scale, min=0.0)
    return uncond + scale * (cond - uncond)


# ---- The autoencoder ---------------------------------------------------------
class PatchAutoencoder(nn.Module):
    """A small autoencoder whose latent grid the generator works in (latent diffusion, Rombach et al., 2022).

    ``encode``: (B, 3, H, W) in [0, 1] -> (B, latent, H/patch, W/patch): a ``patch`` x ``patch`` stride-``patch``
    convolution (patchify), a 3x3 convolution and a 1x1 projection, then normalised per channel with the
    ``mean``/``std`` buffers (set by :func:`train_autoencoder`). ``decode``: the inverse, through two 3x3
    convolutions and a pixel shuffle back to (B, 3, H, W).
    """

    def __init__(self, latent: int = 4, width: int = 64, patch: int = 2):
        super().__init__()
        self.latent = check_int("latent", latent, min=1)
        self.patch = check_int("patch", patch, min=1)
        width = check_int("width", width, min=1)
        self.encoder = nn.Sequential(nn.Conv2d(3, width, patch, stride=patch), nn.GELU(),
                                     nn.Conv2d(width, width, 3, padding=1), nn.GELU(), nn.Conv2d(width, latent, 1))
        self.decoder = nn.Sequential(nn.Conv2d(latent, width, 3, padding=1), nn.GELU(),
                                     nn.Conv2d(width, width, 3, padding=1), nn.GELU(),
                                     nn.Conv2d(width, 3 * patch * patch, 1), nn.PixelShuffle(patch))
        self.register_buffer("mean", torch.zeros(1, latent, 1, 1))
        self.register_buffer("std", torch.ones(1, latent, 1, 1))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return (self.encoder(images * 2 - 1) - self.mean) / self.std  # (B, latent, h, w)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return (self.decoder(z * self.std + self.mean) + 1) / 2  # (B, 3, H, W), about [0, 1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images))


def _ae_loss(model: PatchAutoencoder, batch, object_weight: float) -> torch.Tensor:
    (images,) = batch
    weight = 1 + (object_weight - 1) * object_mask(images)
    with torch.autocast(images.device.type, dtype=torch.bfloat16):
        recon = model(images)
    return (weight * (recon.float() - images).square()).mean()


def train_autoencoder(*, n: int = 8000, steps: int = 1000, batch_size: int = 64, lr: float = 5e-3,
                      grad_clip: float | None = 1.0,
                      object_weight: float = 8.0, latent: int = 4, width: int = 64, patch: int = 2,
                      max_objects: int = 2, seed: int = 0, progress: bool = False) -> PatchAutoencoder:
    """A :class:`PatchAutoencoder` trained to reconstruct ``n`` random 32x32 scenes (seed ``seed``).

    Squared error with object pixels weighted ``object_weight`` (they are a small part of the image and
    carry the shape); AdamW with a one-cycle rate peaking at ``lr`` and the gradient norm clipped to
    ``grad_clip`` (at 1e-2 without clipping, one seed in three collapsed to a blur), under bf16 autocast. The
    latent statistics of the training images are stored in ``mean``/``std``, so latents are about zero-mean and
    unit-variance per channel.
    """
    scenes = sample_scenes(check_int("n", n, min=1), max_objects=max_objects, seed=check_int("seed", seed, min=0))
    images = scene_images(scenes)
    model = PatchAutoencoder(latent, width, patch)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    fit(model, lambda m, b: _ae_loss(m, b, object_weight), random_batches(images, batch_size=batch_size, seed=seed),
        max_steps=steps, optimizer=opt, scheduler=sched, grad_clip=grad_clip, progress=progress, desc="autoencoder")
    with torch.no_grad():
        z = model.encoder(images[:2000] * 2 - 1)
        model.mean.copy_(z.mean((0, 2, 3), keepdim=True))
        model.std.copy_(z.std((0, 2, 3), keepdim=True))
    return model.eval()


AE_RECIPE = "patch-ae-v4"


def load_autoencoder(seed: int = 0, *, steps: int = 1000, progress: bool = False) -> PatchAutoencoder:
    """The autoencoder of :func:`train_autoencoder` for ``seed``, trained once and cached."""
    seed, steps = check_int("seed", seed, min=0), check_int("steps", steps, min=1)
    key = {"recipe": AE_RECIPE, "seed": seed, "steps": steps}
    state = cached_state("autoencoder", key, lambda: train_autoencoder(steps=steps, seed=seed, progress=progress))
    with torch.random.fork_rng(devices=[]):
        model = PatchAutoencoder()
    model.load_state_dict(state)
    return model.eval()


# ---- The flow model ----------------------------------------------------------
@dataclass(frozen=True)
class FlowUNetConfig:
    """A two-level U-Net on the latent grid, conditioned by FiLM on the text and the time (Perez et al., 2018)."""

    vocab_size: int = 64
    in_channels: int = 4
    widths: tuple[int, int] = (64, 128)
    text_dim: int = 64
    text_layers: int = 1
    cond_dim: int = 128
    max_len: int = 24
    context_channels: int = 0  # extra input channels: a grid the velocity is conditioned on (0: none)


class _ResBlock(nn.Module):
    """GroupNorm-SiLU-Conv3x3 twice, FiLM from the condition in between, plus a skip."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(8, c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.film = FiLM(cond_dim, c_out)
        self.norm2, self.conv2 = nn.GroupNorm(8, c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.film(self.norm2(h), cond)))
        return self.skip(x) + h


def _time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of t in [0, 1]: (B,) -> (B, dim)."""
    freqs = torch.exp(torch.linspace(0, 8, dim // 2, device=t.device))  # 1 ... e^8
    angles = t.float()[:, None] * freqs[None] * 1000 / freqs[-1]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class FlowUNet(nn.Module):
    """The velocity network ``v(x_t, t, prompt, context)`` of a text-conditioned rectified flow.

    ``forward(x, t, ids, mask, context=None)``: latents (B, C, h, w), times (B,) in [0, 1], prompt token ids
    and mask (B, L) -> velocity (B, C, h, w). A prompt row of all-zero mask means "no prompt": the learned
    ``null`` condition, which classifier-free guidance contrasts with (Ho & Salimans, 2022); ``ids = mask =
    None`` is no prompt for every row. With ``context_channels > 0``, ``context`` (B, context_channels, h, w)
    is concatenated to ``x`` at the input (as Stable Diffusion's inpainting model takes the masked image's
    latents and the mask, and as image-to-image translators take their input). ``h``, ``w`` even.
    """

    def __init__(self, config: FlowUNetConfig | None = None, **overrides):
        super().__init__()
        cfg = self.config = config_with(FlowUNetConfig, config, overrides)
        c1, c2 = cfg.widths
        self.text = TransformerTextEncoder(cfg.vocab_size, cfg.text_dim, layers=cfg.text_layers, max_len=cfg.max_len,
                                           embed_std=0.02)
        self.null = nn.Parameter(torch.zeros(cfg.text_dim))
        self.cond = nn.Sequential(nn.Linear(cfg.text_dim + 64, cfg.cond_dim), nn.SiLU(),
                                  nn.Linear(cfg.cond_dim, cfg.cond_dim))
        self.stem = nn.Conv2d(cfg.in_channels + cfg.context_channels, c1, 3, padding=1)
        self.down1 = _ResBlock(c1, c1, cfg.cond_dim)
        self.pool = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        self.mid1 = _ResBlock(c2, c2, cfg.cond_dim)
        self.mid2 = _ResBlock(c2, c2, cfg.cond_dim)
        self.up = nn.ConvTranspose2d(c2, c1, 2, stride=2)
        self.up1 = _ResBlock(2 * c1, c1, cfg.cond_dim)
        self.out = nn.Sequential(nn.GroupNorm(8, c1), nn.SiLU(), nn.Conv2d(c1, cfg.in_channels, 3, padding=1))

    def condition(self, t: torch.Tensor, ids: torch.Tensor | None, mask: torch.Tensor | None) -> torch.Tensor:
        """The FiLM condition (B, cond_dim) from the time and the prompt (the null vector where mask is all 0)."""
        if ids is None:
            text = self.null.expand(len(t), -1)  # (B, text_dim)
        else:
            has = mask.bool().any(1)  # (B,)
            safe = mask.bool() | ~has[:, None]  # an empty row attends to its padding, then is replaced by null
            _, pooled = self.text(ids, safe)  # (B, text_dim)
            text = torch.where(has[:, None], pooled, self.null.expand_as(pooled))
        return self.cond(torch.cat([text, _time_embedding(t, 64)], dim=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, ids: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, context: torch.Tensor | None = None) -> torch.Tensor:
        if (context is None) != (self.config.context_channels == 0):
            raise ValueError(f"context must be given exactly when context_channels > 0 "
                             f"(here {self.config.context_channels})")
        if context is not None:
            x = torch.cat([x, context], dim=1)  # (B, C + context_channels, h, w)
        c = self.condition(t, ids, mask)
        h1 = self.down1(self.stem(x), c)  # (B, c1, h, w)
        h = self.mid2(self.mid1(self.pool(h1), c), c)  # (B, c2, h/2, w/2)
        h = self.up1(torch.cat([self.up(h), h1], dim=1), c)  # (B, c1, h, w)
        return self.out(h)  # (B, C, h, w)


def with_context_channels(model: FlowUNet, context_channels: int) -> FlowUNet:
    """A copy of ``model`` that also takes ``context_channels`` input channels of context, and computes exactly
    what ``model`` computes until it is trained: every weight is copied and the stem's weights on the new
    channels start at zero (as the Stable Diffusion inpainting checkpoint, whose U-Net takes five more channels,
    was started from a text-to-image one, according to its model card). The copy is in training mode.
    """
    check_instance("model", model, FlowUNet)
    cfg = model.config
    extra = check_int("context_channels", context_channels, min=cfg.context_channels)
    with torch.random.fork_rng(devices=[]):  # every weight is set below: leave the caller's random state
        new = FlowUNet(cfg, context_channels=extra)
    state = {name: value.clone() for name, value in model.state_dict().items()}
    stem = torch.zeros_like(new.stem.weight)  # (c1, C + context_channels, 3, 3)
    stem[:, :state["stem.weight"].shape[1]] = state["stem.weight"]
    state["stem.weight"] = stem
    new.load_state_dict(state)
    return new.train()


def flow_loss(model: FlowUNet, latents: torch.Tensor, ids: torch.Tensor | None, mask: torch.Tensor | None, *,
              p_uncond: float = 0.1, context: torch.Tensor | None = None,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """The rectified-flow loss ``|| v(x_t, t) - (noise - x0) ||²`` with logit-normal ``t`` (Esser et al., 2024).

    ``latents`` (B, C, h, w), prompt ``ids``/``mask`` (B, L) or both None (no prompt), ``context`` for a model
    with ``context_channels``. A fraction ``p_uncond`` of the prompts is dropped (mask zeroed), so the same
    network also learns the unconditional velocity that guidance needs.
    """
    b = len(latents)
    noise = torch.randn(latents.shape, generator=generator, device=latents.device)
    t = torch.sigmoid(torch.randn(b, generator=generator, device=latents.device))
    drop = torch.rand(b, generator=generator, device=latents.device) < p_uncond
    if mask is not None:
        mask = mask * ~drop[:, None]
    with torch.autocast(latents.device.type, dtype=torch.bfloat16):
        pred = model(flow_noise(latents, noise, t), t, ids, mask, context)
    return (pred.float() - flow_target(latents, noise)).square().mean()


@torch.no_grad()
def sample_latents(model: FlowUNet, ids: torch.Tensor, mask: torch.Tensor, *, scale: float = 4.0, steps: int = 20,
                   negative: tuple[torch.Tensor, torch.Tensor] | None = None, shape: tuple[int, int, int] = (4, 16, 16),
                   context: torch.Tensor | None = None, init: torch.Tensor | None = None, strength: float = 1.0,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Latents (B, *shape) for prompts ``ids``/``mask`` (B, L): Euler sampling (:func:`euler_integrate`) of the
    guided velocity (:func:`guided`) with guidance ``scale``; the unconditional branch is the null prompt, or
    the ``negative`` prompt (ids, mask) if given. ``context`` (B, context_channels, h, w) goes to both branches
    of a model that takes one. With ``init`` (B, *shape) latents, this is an image-to-image edit (SDEdit,
    Meng et al., 2022): ``init`` noised to ``sigmas[0]`` of :func:`sdedit_sigmas` ``(steps, strength)``, then
    the rest of the steps; ``strength=1`` without ``init`` is generation from noise. Runs under bf16 autocast.
    """
    check_instance("model", model, FlowUNet)
    check_tensor("ids", ids, 2, dtype="int")
    check_tensor("mask", mask, 2, size={0: len(ids), 1: ids.shape[1]})
    scale = check_float("scale", scale, min=0.0)
    if init is None:
        if check_float("strength", strength, min=0.0, max=1.0) != 1.0:
            raise ValueError("strength < 1 needs init, the latents to edit")
        init = torch.zeros((len(ids), *shape), device=ids.device)
    else:
        check_tensor("init", init, 4, size={0: len(ids)}, dtype="float")
    if context is not None:
        check_tensor("context", context, 4, size={0: len(ids), 2: init.shape[2], 3: init.shape[3]}, dtype="float")
        context = torch.cat([context, context])
    sigmas = sdedit_sigmas(steps, strength)
    if negative is None:
        neg_ids, neg_mask = ids, torch.zeros_like(mask)
    else:
        neg_ids, neg_mask = negative
        check_tensor("negative[0]", neg_ids, 2, size={0: len(ids)}, dtype="int")
        check_tensor("negative[1]", neg_mask, 2, size={0: len(ids), 1: neg_ids.shape[1]})
        width = max(ids.shape[1], neg_ids.shape[1])
        ids, mask, neg_ids, neg_mask = (F.pad(x, (0, width - x.shape[1])) for x in (ids, mask, neg_ids, neg_mask))
    both_ids, both_mask = torch.cat([ids, neg_ids]), torch.cat([mask, neg_mask])
    model.eval()

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            v = model(torch.cat([x, x]), torch.cat([t, t]), both_ids, both_mask, context).float()
        cond, uncond = v.chunk(2)
        return guided(cond, uncond, scale)

    noise = torch.randn(init.shape, generator=generator, device=ids.device)
    return euler_integrate(velocity, flow_noise(init, noise, sigmas[0]), sigmas)


# ---- Chapter 6's text-to-image model, shared with later chapters --------------
HELD_OUT_PAIRS = (("circle", "purple"), ("cross", "green"), ("diamond", "yellow"), ("star", "blue"),
                  ("triangle", "red"))  # shape-colour pairs that no training scene of chapter 6 contains
THIN_SHAPES = ("cross", "star")  # the shapes chapter 6's flow draws worst when small; its data holds more of them
T2I_RECIPE = "text-to-image-v2"


def text_to_image_data(autoencoder: PatchAutoencoder, tokenizer, seed: int = 0, *, n: int = 24000,
                       n_thin: int = 6000, p_drop: float = 0.1) -> dict:
    """Chapter 6's training set: ``n`` one-object scenes (seed ``seed + 10``), then ``n_thin`` scenes of one
    small object of the :data:`THIN_SHAPES` (seed ``seed + 13``), less those of :data:`HELD_OUT_PAIRS`; their
    captions (seeds ``seed + 11`` and ``seed + 14``) with each colour and size word left out with probability
    ``p_drop`` (seeds ``seed + 12`` and ``seed + 15``), tokenized to 24 ids, and their latents. With the default
    counts, small crosses and stars are about 30% of the scenes instead of a sixth (a stroke of a small cross is
    about one latent cell wide). Returns a dict with ``scenes``, ``captions``, ``ids``, ``mask`` (m, 24) and
    ``latents`` (m, 4, 16, 16).
    """
    from .text import encode_batch

    check_instance("autoencoder", autoencoder, PatchAutoencoder)
    seed = check_int("seed", seed, min=0)
    held_out = set(HELD_OUT_PAIRS)
    parts = [(check_int("n", n, min=1), SHAPES, SIZES, seed + 10),
             (check_int("n_thin", n_thin, min=0), THIN_SHAPES, ("small",), seed + 13)]
    scenes, captions = [], []
    for count, shapes, sizes, part_seed in parts:
        drawn = sample_scenes(count, max_objects=1, shapes=shapes, sizes=sizes, seed=part_seed)
        drawn = [s for s in drawn if s.objects[0].desc[:2] not in held_out]
        scenes += drawn
        captions += drop_attributes(scene_captions(drawn, seed=part_seed + 1), p_drop, seed=part_seed + 2)
    ids, mask = encode_batch(tokenizer, captions, max_length=24)
    with torch.no_grad(), threads(TRAIN_THREADS):
        latents = torch.cat([autoencoder.encode(scene_images(scenes[i:i + 2000]))
                             for i in range(0, len(scenes), 2000)])  # (m, 4, 16, 16)
    return {"scenes": scenes, "captions": captions, "ids": ids, "mask": mask, "latents": latents}


def train_text_to_image(latents: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, *, vocab_size: int,
                        seed: int = 0, steps: int = 2400, batch_size: int = 64, eval_fn=None,
                        eval_every: int | None = None, progress: bool = False, desc: str = "flow"):
    """Chapter 6's velocity network: a :class:`FlowUNet` of widths (32, 64) trained with :func:`flow_loss`.

    AdamW at 2e-3 (no weight decay), 100 warm-up steps and a linear cool-down over the last 40%, gradients
    clipped at 1, ``steps`` batches of ``batch_size`` drawn by :func:`~mmutils.train.random_batches` (seed
    ``seed``); the weights start from ``torch.manual_seed(seed)``. ``eval_fn``/``eval_every`` go to
    :func:`~mmutils.train.fit` (they do not change the weights). Returns ``(model, history)``.
    """
    seed, steps = check_int("seed", seed, min=0), check_int("steps", steps, min=1)
    torch.manual_seed(seed)
    model = FlowUNet(vocab_size=check_int("vocab_size", vocab_size, min=1), widths=(32, 64))
    noise = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    with threads(TRAIN_THREADS):
        history = fit(model, lambda m, b: flow_loss(m, *b, generator=noise),
                      random_batches(latents, ids, mask, batch_size=batch_size, seed=seed), max_steps=steps,
                      optimizer=opt, grad_clip=1.0, scheduler=linear_cooldown(opt, steps, fraction=0.4, warmup=100),
                      eval_fn=eval_fn, eval_every=eval_every, progress=progress, desc=desc)
    return model, history


def _text_to_image_key(seed: int, steps: int, vocab_size: int) -> dict:
    return {"recipe": T2I_RECIPE, "seed": seed, "steps": steps, "vocab_size": vocab_size,
            "autoencoder": {"recipe": AE_RECIPE, "steps": 1000}}


def cache_text_to_image(model: FlowUNet, seed: int = 0, *, steps: int = 2400) -> None:
    """Store a model that :func:`train_text_to_image` trained (chapter 6 does, after its own run), so that
    :func:`load_text_to_image` with the same seed and steps reads it instead of training it again."""
    check_instance("model", model, FlowUNet)
    key = _text_to_image_key(check_int("seed", seed, min=0), check_int("steps", steps, min=1),
                             model.config.vocab_size)
    _save_state(_cache_path("text_to_image", key), model)


def load_text_to_image(seed: int = 0, *, steps: int = 2400, progress: bool = False) -> FlowUNet:
    """Chapter 6's text-to-image velocity network for ``seed`` (with its tokenizer,
    :func:`mmutils.text.train_tokenizer`, and :func:`load_autoencoder` ``(seed)``), from the cache, or trained
    on :func:`text_to_image_data` (about 3 minutes on two threads) and cached. In eval mode."""
    from .text import train_tokenizer

    seed, steps = check_int("seed", seed, min=0), check_int("steps", steps, min=1)
    tokenizer = train_tokenizer()

    def build() -> FlowUNet:
        data = text_to_image_data(load_autoencoder(seed), tokenizer, seed)
        return train_text_to_image(data["latents"], data["ids"], data["mask"], vocab_size=len(tokenizer),
                                   seed=seed, steps=steps, progress=progress)[0]

    state = cached_state("text_to_image", _text_to_image_key(seed, steps, len(tokenizer)), build)
    with torch.random.fork_rng(devices=[]):
        model = FlowUNet(vocab_size=len(tokenizer), widths=(32, 64))
    model.load_state_dict(state)
    return model.eval()


# ---- The baseline: a conditional VAE -----------------------------------------
@dataclass(frozen=True)
class ConditionalVAEConfig:
    """A conditional VAE on the latent grid: a conv encoder to ``z_dim`` numbers, a conv decoder back."""

    vocab_size: int = 64
    in_channels: int = 4
    grid: int = 16
    width: int = 64
    z_dim: int = 32
    text_dim: int = 64
    text_layers: int = 1
    max_len: int = 24


class ConditionalVAE(nn.Module):
    """A conditional variational autoencoder (Kingma & Welling, 2014; Sohn et al., 2015): the one-pass baseline.

    ``encode(x, text)``: latents (B, C, g, g) and a text vector (B, text_dim) -> the posterior's mean and log
    variance (B, z_dim) each; ``decode(z, text)`` -> latents (B, C, g, g), the mean of a Gaussian decoder;
    ``text_vector(ids, mask)`` -> (B, text_dim), the prompt pooled by a small Transformer. A sample for a prompt
    is ``decode(z, text)`` with ``z ~ N(0, I)``: one pass, no iterations.
    """

    def __init__(self, config: ConditionalVAEConfig | None = None, **overrides):
        super().__init__()
        cfg = self.config = config_with(ConditionalVAEConfig, config, overrides)
        c, g, w = cfg.in_channels, cfg.grid, cfg.width
        self.text = TransformerTextEncoder(cfg.vocab_size, cfg.text_dim, layers=cfg.text_layers, max_len=cfg.max_len,
                                           embed_std=0.02)
        self.encoder = nn.Sequential(nn.Conv2d(c, w, 3, padding=1), nn.SiLU(),
                                     nn.Conv2d(w, w, 3, stride=2, padding=1), nn.SiLU(), nn.Flatten())
        self.posterior = nn.Linear(w * (g // 2) ** 2 + cfg.text_dim, 2 * cfg.z_dim)
        self.expand = nn.Linear(cfg.z_dim + cfg.text_dim, w * (g // 2) ** 2)
        self.decoder = nn.Sequential(nn.SiLU(), nn.ConvTranspose2d(w, w, 2, stride=2), nn.SiLU(),
                                     nn.Conv2d(w, w, 3, padding=1), nn.SiLU(), nn.Conv2d(w, c, 3, padding=1))

    def text_vector(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.text(ids, mask)[1]  # (B, text_dim)

    def encode(self, x: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.cat([self.encoder(x), text], dim=1)  # (B, w * (g/2)^2 + text_dim)
        mean, log_var = self.posterior(h).chunk(2, dim=1)  # (B, z_dim) each
        return mean, log_var

    def decode(self, z: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        g, w = self.config.grid, self.config.width
        h = self.expand(torch.cat([z, text], dim=1)).view(len(z), w, g // 2, g // 2)  # (B, w, g/2, g/2)
        return self.decoder(h)  # (B, C, g, g)


def vae_loss(model: ConditionalVAE, latents: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, *,
             noise_std: float = 0.5, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The negative ELBO per example, in nats up to a constant: ``||x - decode(z)||² / (2 noise_std²) + KL``.

    ``latents`` (B, C, g, g), prompt ``ids``/``mask`` (B, L); ``z`` is drawn from the posterior by the
    reparameterisation trick (Kingma & Welling, 2014); ``noise_std`` is the decoder's fixed standard deviation
    (smaller: sharper reconstructions, a posterior further from the prior). Returns ``{"loss", "recon", "kl"}``.
    """
    text = model.text_vector(ids, mask)
    mean, log_var = model.encode(latents, text)
    eps = torch.randn(mean.shape, generator=generator, device=mean.device)
    z = mean + (0.5 * log_var).exp() * eps  # (B, z_dim)
    recon = (model.decode(z, text) - latents).square().flatten(1).sum(1) / (2 * noise_std ** 2)  # (B,)
    kl = 0.5 * (mean.square() + log_var.exp() - 1 - log_var).sum(1)  # (B,) KL(q(z|x) || N(0, I))
    return {"loss": (recon + kl).mean(), "recon": recon.mean().detach(), "kl": kl.mean().detach()}


@torch.no_grad()
def sample_vae(model: ConditionalVAE, ids: torch.Tensor, mask: torch.Tensor, *,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Latents (B, C, g, g) for prompts ``ids``/``mask`` (B, L): ``decode(z, text)`` with ``z ~ N(0, I)``."""
    check_instance("model", model, ConditionalVAE)
    check_tensor("ids", ids, 2, dtype="int")
    check_tensor("mask", mask, 2, size={0: len(ids), 1: ids.shape[1]})
    model.eval()
    z = torch.randn(len(ids), model.config.z_dim, generator=generator, device=ids.device)
    return model.decode(z, model.text_vector(ids, mask))
