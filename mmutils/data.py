"""The datasets of the notebooks as tensors: ShapesWorld data generated once, and offline real data.

* ``make_caption_data``, ``make_vqa_data``, ``make_sequence_data``, ``make_audio_data`` – ShapesWorld
  rendered in one pass: a dict of tensors plus the scenes, captions or questions they came from.
* ``load_digits_tensors``, ``sample_photos``, ``skimage_photos`` – real data installed with scikit-learn / -image.
* ``load_caption_folder``, ``CaptionFolderDataset`` – any image-caption folder in COCO or Flickr layout.
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from . import world
from .checks import check_instance, check_int, check_rng, check_subset
from .text import encode_batch

__all__ = [
    "ArrayDataset", "to_tensor_images", "object_mask", "shift_cells",
    "make_caption_data", "make_vqa_data", "make_sequence_data", "make_audio_data",
    "load_digits_tensors", "sample_photos", "skimage_photos", "SKIMAGE_PHOTOS",
    "load_caption_folder", "CaptionFolderDataset",
]

# scikit-image photos that ship inside the package (no download needed).
SKIMAGE_PHOTOS = (
    "astronaut", "brick", "camera", "cell", "chelsea", "coffee", "coins", "colorwheel", "grass", "gravel",
    "hubble_deep_field", "immunohistochemistry", "moon", "page", "retina", "rocket", "text",
)


def _to(tensors: dict[str, Any], device) -> dict[str, Any]:
    if device is None:
        return tensors
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in tensors.items()}


# ---- Tensors -----------------------------------------------------------------
class ArrayDataset(Dataset):
    """A map-style dataset over tensors of equal length: ``ArrayDataset(images=x, labels=y)``.

    ``ds[i]`` is the dict ``{name: tensor[i]}`` (``i`` may also be a slice or an
    index tensor, giving a batch). NumPy arrays are converted with ``torch.as_tensor``.
    """

    def __init__(self, **tensors: torch.Tensor | np.ndarray) -> None:
        if not tensors:
            raise ValueError("tensors: expected at least one named tensor, e.g. ArrayDataset(x=..., y=...)")
        converted = {name: torch.as_tensor(t) if isinstance(t, np.ndarray) else check_instance(name, t, torch.Tensor)
                     for name, t in tensors.items()}
        lengths = {name: len(t) for name, t in converted.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"tensors must all have the same length, got {lengths}")
        self.tensors = converted

    def __len__(self) -> int:
        return next(iter(self.tensors.values())).shape[0]

    def __getitem__(self, index) -> dict[str, torch.Tensor]:
        return {name: t[index] for name, t in self.tensors.items()}

    def to(self, device: torch.device | str) -> "ArrayDataset":
        """A copy with every tensor on ``device``."""
        return ArrayDataset(**{k: v.to(device) for k, v in self.tensors.items()})

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={tuple(v.shape)}" for k, v in self.tensors.items())
        return f"ArrayDataset({fields})"


def to_tensor_images(images: np.ndarray, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 images ``(..., H, W, C)`` (C = 1 or 3) to float32 ``(..., C, H, W)`` in [0, 1].

    E.g. ``(n, H, W, 3)`` -> ``(n, 3, H, W)``; video ``(n, T, H, W, 3)`` -> ``(n, T, 3, H, W)``.
    """
    if check_instance("images", images, np.ndarray).dtype != np.uint8:
        raise TypeError(f"images must have dtype uint8, got {images.dtype}")
    if images.ndim < 3 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must have shape (..., H, W, 3) or (..., H, W, 1), got {images.shape}")
    t = torch.from_numpy(np.ascontiguousarray(images))
    if device is not None:
        t = t.to(device)  # move the uint8 array: a quarter of the bytes of float
    return t.movedim(-1, -3).float().div_(255.0).contiguous()


# ---- ShapesWorld builders ----------------------------------------------------
def _text_tensors(tokenizer, texts: list[str], max_length: int | None) -> dict[str, torch.Tensor]:
    ids, mask = encode_batch(tokenizer, texts, max_length=max_length)
    return {"input_ids": ids, "attention_mask": mask}


def object_mask(images: torch.Tensor, threshold: float = 0.05) -> torch.Tensor:
    """Where the objects are: (n, 1, H, W), 1 where some channel of ``images`` (n, 3, H, W) in [0, 1] differs from
    the renderer's background grey by more than ``threshold`` (decoded images have faint halos; a larger threshold
    skips them)."""
    return ((images - world.BACKGROUND_GREY / 255).abs().amax(1, keepdim=True) > threshold).float()


def shift_cells(grid: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """``grid`` (..., h, w) moved ``dx`` cells right and ``dy`` down (negative: left, up): what leaves the grid is
    dropped, zeros come in; e.g. a latent grid whose object moves by whole cells."""
    check_instance("grid", grid, torch.Tensor)
    if grid.ndim < 2:
        raise ValueError(f"grid must have at least 2 dimensions (..., h, w), got shape {tuple(grid.shape)}")
    dx, dy = check_int("dx", dx), check_int("dy", dy)
    out = torch.zeros_like(grid)
    h, w = grid.shape[-2:]
    if abs(dx) >= w or abs(dy) >= h:
        return out
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = grid[..., max(-dy, 0):h - max(dy, 0),
                                                                          max(-dx, 0):w - max(dx, 0)]
    return out


def make_caption_data(n: int, *, tokenizer, size: int = 32, min_objects: int = 1, max_objects: int = 2,
                      noise: float = 0.0, canonical: bool = False, max_length: int | None = None, seed: int = 0,
                      device: torch.device | str | None = None) -> dict[str, Any]:
    """``n`` ShapesWorld images with one caption each, as tensors.

    Scenes (:func:`mmutils.world.sample_scenes`), images (:func:`~mmutils.world.render`)
    and captions (:func:`~mmutils.world.captions`, random wording unless
    ``canonical``) all follow from ``seed``. Captions are tokenized with
    ``tokenizer`` (see :func:`mmutils.text.encode_batch`; pass ``max_length`` to
    give separate splits the same length).

    Returns a dict: ``images`` float (n, 3, size, size) in [0, 1],
    ``input_ids`` and ``attention_mask`` int64 (n, L), all on ``device``;
    ``scenes`` (list of Scene) and ``captions`` (list of str).
    """
    n = check_int("n", n, min=1)
    rng = check_rng("seed", seed)
    scenes = world.sample_scenes(n, min_objects=min_objects, max_objects=max_objects, seed=rng)
    images = world.render(scenes, size=size, noise=noise, seed=rng)
    texts = world.captions(scenes, seed=rng, canonical=canonical)
    out = {"images": to_tensor_images(images), **_text_tensors(tokenizer, texts, max_length)}
    return {**_to(out, device), "scenes": scenes, "captions": texts}


def make_vqa_data(n: int, *, tokenizer, size: int = 32, min_objects: int = 1, max_objects: int = 3,
                  qtypes: Sequence[str] | None = None, noise: float = 0.0, max_length: int | None = None,
                  seed: int = 0, device: torch.device | str | None = None) -> dict[str, Any]:
    """``n`` ShapesWorld images with one typed question each, as tensors.

    Question types are drawn uniformly among the ``qtypes`` (default: all of
    :data:`mmutils.world.QUESTION_TYPES`) that apply to each scene.

    Returns a dict: ``images`` float (n, 3, size, size), ``input_ids`` and
    ``attention_mask`` int64 (n, L) of the question, ``answers`` int64 (n,)
    indexing :data:`mmutils.world.ANSWERS`, ``qtypes`` int64 (n,) indexing
    :data:`mmutils.world.QUESTION_TYPES` (all on ``device``); ``scenes`` and
    ``questions`` (list of :class:`mmutils.world.Question`).
    """
    n = check_int("n", n, min=1)
    rng = check_rng("seed", seed)
    scenes = world.sample_scenes(n, min_objects=min_objects, max_objects=max_objects, seed=rng)
    images = world.render(scenes, size=size, noise=noise, seed=rng)
    qs = world.questions(scenes, seed=rng, qtypes=qtypes)
    out = {"images": to_tensor_images(images), **_text_tensors(tokenizer, [q.text for q in qs], max_length),
           "answers": torch.tensor([world.ANSWERS.index(q.answer) for q in qs], dtype=torch.long),
           "qtypes": torch.tensor([world.QUESTION_TYPES.index(q.qtype) for q in qs], dtype=torch.long)}
    return {**_to(out, device), "scenes": scenes, "questions": qs}


def make_sequence_data(n: int, *, frames: int = 8, tokenizer=None, size: int = 32, min_objects: int = 1,
                       max_objects: int = 1, speed: float = 0.05, bounce: bool = False,
                       max_length: int | None = None, seed: int = 0,
                       device: torch.device | str | None = None) -> dict[str, Any]:
    """``n`` clips of moving shapes with a caption of the motion, as tensors.

    Returns a dict: ``videos`` float (n, frames, 3, size, size) in [0, 1];
    ``directions`` int64 (n, max_objects): each object's direction as an index
    into :data:`mmutils.world.DIRECTIONS` (-1 where a clip has fewer objects);
    with a ``tokenizer`` also ``input_ids`` and ``attention_mask`` (n, L) of the
    captions (all on ``device``); ``sequences`` and ``captions``.
    """
    n = check_int("n", n, min=1)
    rng = check_rng("seed", seed)
    seqs = world.sample_sequences(n, frames=frames, min_objects=min_objects, max_objects=max_objects,
                                  speed=speed, bounce=bounce, seed=rng)
    videos = world.render_sequences(seqs, size=size)
    directions = torch.full((n, max_objects), -1, dtype=torch.long)
    for i, s in enumerate(seqs):
        for k, (vx, vy) in enumerate(s.velocities):
            d = ("right" if vx > 0 else "left") if abs(vx) >= abs(vy) else ("down" if vy > 0 else "up")
            directions[i, k] = world.DIRECTIONS.index(d)
    texts = [s.caption for s in seqs]
    out = {"videos": to_tensor_images(videos), "directions": directions}
    if tokenizer is not None:
        out.update(_text_tensors(tokenizer, texts, max_length))
    return {**_to(out, device), "sequences": seqs, "captions": texts}


def make_audio_data(n: int, *, sample_rate: int = 8000, duration: float = 0.5, n_fft: int = 256,
                    hop_length: int = 64, min_objects: int = 1, max_objects: int = 1, noise: float = 0.0,
                    size: int = 32, seed: int = 0, device: torch.device | str | None = None) -> dict[str, Any]:
    """``n`` ShapesWorld scenes with their sound, spectrogram, image and attribute labels.

    Each object sounds one tone (pitch from its shape, timbre from its colour,
    loudness from its size), left to right (:func:`mmutils.world.synthesize_audio`).
    Labels list the objects in that order, as indices into
    :data:`~mmutils.world.SHAPES`, :data:`~mmutils.world.COLORS` and
    :data:`~mmutils.world.SIZES`, padded with -1.

    Returns a dict: ``waveforms`` float (n, samples), ``spectrograms`` float
    (n, n_fft // 2 + 1, frames) (log-magnitude), ``images`` float (n, 3, size, size),
    ``shapes``, ``colors``, ``sizes`` int64 (n, max_objects), ``counts`` int64 (n,)
    (all on ``device``); ``scenes``.
    """
    n = check_int("n", n, min=1)
    rng = check_rng("seed", seed)
    scenes = world.sample_scenes(n, min_objects=min_objects, max_objects=max_objects, seed=rng)
    waves = world.synthesize_audio(scenes, sample_rate=sample_rate, duration=duration, noise=noise, seed=rng)
    spec = world.spectrogram(waves, n_fft=n_fft, hop_length=hop_length)
    labels = {k: torch.full((n, max_objects), -1, dtype=torch.long) for k in ("shapes", "colors", "sizes")}
    for i, s in enumerate(scenes):
        for k, o in enumerate(sorted(s.objects, key=lambda o: o.x)):
            labels["shapes"][i, k] = world.SHAPES.index(o.shape)
            labels["colors"][i, k] = world.COLORS.index(o.color)
            labels["sizes"][i, k] = world.SIZES.index(o.size)
    out = {"waveforms": torch.from_numpy(waves), "spectrograms": spec,
           "images": to_tensor_images(world.render(scenes, size=size)), **labels,
           "counts": torch.tensor([len(s) for s in scenes], dtype=torch.long)}
    return {**_to(out, device), "scenes": scenes}


# ---- Real data shipped with installed packages -------------------------------
def load_digits_tensors(device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's handwritten digits (1797 scans of 8x8 pixels, UCI; Alpaydin & Kaynak, 1998).

    Returns ``(images, labels)``: float32 ``(1797, 1, 8, 8)`` in [0, 1] and int64 ``(1797,)`` in 0..9.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).div_(16.0).unsqueeze(1)
    labels = torch.tensor(bunch.target, dtype=torch.long)
    return (images, labels) if device is None else (images.to(device), labels.to(device))


def sample_photos() -> dict[str, np.ndarray]:
    """scikit-learn's two sample photos, ``{"china": ..., "flower": ...}``: uint8 arrays (427, 640, 3)."""
    from sklearn.datasets import load_sample_images

    bunch = load_sample_images()
    return {Path(f).stem: np.asarray(img, dtype=np.uint8) for f, img in zip(bunch.filenames, bunch.images)}


def skimage_photos(names: Sequence[str] = ("astronaut", "coffee", "chelsea", "rocket")) -> dict[str, np.ndarray]:
    """Photos bundled with scikit-image (``skimage.data``), as ``{name: uint8 (H, W, 3)}``.

    ``names``: any of :data:`SKIMAGE_PHOTOS`; grey images are repeated to three channels.
    """
    import skimage.data

    out = {}
    for name in check_subset("names", names, SKIMAGE_PHOTOS):
        img = np.asarray(getattr(skimage.data, name)())
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=-1)
        out[name] = img[..., :3].astype(np.uint8, copy=False)
    return out


# ---- Image-caption folders (COCO or Flickr layout) ---------------------------
def _find_image(root: Path, name: str, source: Path) -> Path:
    for folder in (root / "images", root / "Images", root):
        path = folder / name
        if path.is_file():
            return path
    raise FileNotFoundError(f"image {name!r} listed in {source} not found under {root / 'images'} or {root}")


def _read_coco(root: Path, path: Path) -> list[tuple[Path, list[str]]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        files = {im["id"]: str(im["file_name"]) for im in data["images"]}
        anns = [(ann["image_id"], ann["caption"].strip()) for ann in data["annotations"]]
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    except (KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{path} must be COCO captions JSON: 'images' with 'id' and 'file_name', "
                         f"'annotations' with 'image_id' and a string 'caption' ({err!r})") from err
    caps: dict[Any, list[str]] = {i: [] for i in files}
    for k, (i, caption) in enumerate(anns):
        if i not in caps:
            raise ValueError(f"{path}: annotations[{k}] refers to unknown image_id {i!r}")
        caps[i].append(caption)
    return [(_find_image(root, files[i], path), c) for i, c in caps.items() if c]


def _read_flickr(root: Path, path: Path) -> list[tuple[Path, list[str]]]:
    caps: dict[str, list[str]] = {}
    text = path.read_text(encoding="utf-8")
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if "\t" in line:  # original Flickr8k: "image.jpg#0<TAB>caption"
            name, caption = line.split("\t", 1)
            name = name.split("#", 1)[0]
        else:  # "image,caption" (CSV; the caption may be quoted and contain commas)
            row = next(csv.reader(io.StringIO(line)))
            if len(row) < 2:
                raise ValueError(f"{path}:{lineno}: expected 'image,caption', got {line!r}")
            name, caption = row[0], ",".join(row[1:])
        name, caption = name.strip(), caption.strip()
        if lineno == 1 and name.lower() == "image" and caption.lower() == "caption":
            continue  # header
        if not name or not caption:
            raise ValueError(f"{path}:{lineno}: expected 'image,caption', got {line!r}")
        caps.setdefault(name, []).append(caption)
    return [(_find_image(root, name, path), c) for name, c in caps.items()]


def load_caption_folder(root: str | Path) -> list[tuple[Path, list[str]]]:
    """Read an image-caption folder: a list of ``(image_path, [captions])``, one per image.

    Two layouts are understood:

    * COCO: ``root/captions.json`` with ``{"images": [{"id", "file_name"}],
      "annotations": [{"image_id", "caption"}]}`` and the files in ``root/images/``;
    * Flickr: ``root/captions.txt`` with ``image,caption`` lines (an optional
      ``image,caption`` header; or ``image#k<TAB>caption``) and the files in
      ``root/images/`` (or ``root/Images/``).

    Images without any caption are skipped. Raises ``FileNotFoundError`` for a
    missing folder, caption file or image, ``ValueError`` for a malformed caption file.
    """
    root = Path(check_instance("root", root, (str, Path)))
    if not root.is_dir():
        raise FileNotFoundError(f"root: caption folder {root} does not exist")
    if (root / "captions.json").is_file():
        return _read_coco(root, root / "captions.json")
    if (root / "captions.txt").is_file():
        return _read_flickr(root, root / "captions.txt")
    raise FileNotFoundError(f"root: {root} has neither captions.json (COCO) nor captions.txt (Flickr)")


class CaptionFolderDataset(Dataset):
    """A dataset over an image-caption folder (see :func:`load_caption_folder`).

    ``ds[i]`` is ``(image, captions)``, as in ``torchvision.datasets.CocoCaptions``:
    the RGB ``PIL.Image`` passed through ``transform`` (if given) and the list of
    its captions. ``ds.samples`` holds the ``(path, captions)`` pairs.
    """

    def __init__(self, root: str | Path, transform: Callable | None = None) -> None:
        self.root = Path(root) if isinstance(root, (str, Path)) else root
        self.samples = load_caption_folder(root)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        from PIL import Image

        path, captions = self.samples[index]
        with Image.open(path) as im:
            image = im.convert("RGB")
        if self.transform is not None:
            image = self.transform(image)
        return image, list(captions)
