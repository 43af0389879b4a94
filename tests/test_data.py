"""Tests of the ShapesWorld tensor builders, the real-data loaders and caption folders."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from mmutils import world
from mmutils.data import (
    ArrayDataset, CaptionFolderDataset, load_caption_folder, load_digits_tensors, make_audio_data,
    make_caption_data, make_sequence_data, make_vqa_data, sample_photos, shift_cells, skimage_photos,
    to_tensor_images,
)
from mmutils.text import decode, train_tokenizer


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer()


# --------------------------------------------------------------------------- #
# Tensors
# --------------------------------------------------------------------------- #
def test_array_dataset_items_and_batches():
    ds = ArrayDataset(x=torch.arange(12).reshape(6, 2), y=np.arange(6))
    assert len(ds) == 6 and set(ds[0]) == {"x", "y"}
    assert ds[1]["x"].tolist() == [2, 3] and ds[1]["y"].item() == 1
    assert ds[torch.tensor([0, 5])]["y"].tolist() == [0, 5]
    assert ds.to("cpu")[2]["y"].item() == 2 and "x=(6, 2)" in repr(ds)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["x"].shape == (4, 2)


def test_array_dataset_bad_input():
    with pytest.raises(ValueError, match="tensors"):
        ArrayDataset()
    with pytest.raises(ValueError, match="same length"):
        ArrayDataset(x=torch.zeros(3), y=torch.zeros(4))
    with pytest.raises(TypeError, match="x"):
        ArrayDataset(x=[1, 2, 3])


def test_to_tensor_images_layouts():
    img = np.zeros((2, 4, 5, 3), dtype=np.uint8)
    img[0, 1, 2] = (255, 0, 51)
    t = to_tensor_images(img)
    assert t.shape == (2, 3, 4, 5) and t.dtype == torch.float32
    assert t[0, :, 1, 2].tolist() == pytest.approx([1.0, 0.0, 0.2])
    assert to_tensor_images(np.zeros((2, 3, 4, 5, 3), dtype=np.uint8)).shape == (2, 3, 3, 4, 5)
    assert to_tensor_images(np.zeros((4, 5, 1), dtype=np.uint8), device="cpu").shape == (1, 4, 5)


def test_to_tensor_images_bad_input():
    with pytest.raises(TypeError, match="images"):
        to_tensor_images(np.zeros((2, 4, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="images"):
        to_tensor_images(np.zeros((2, 4, 4, 2), dtype=np.uint8))


# --------------------------------------------------------------------------- #
# ShapesWorld builders
# --------------------------------------------------------------------------- #
def test_shift_cells_moves_drops_and_fills_with_zeros():
    grid = torch.arange(1.0, 10.0).reshape(1, 3, 3)
    torch.testing.assert_close(shift_cells(grid, 1, 0)[0], torch.tensor([[0.0, 1, 2], [0, 4, 5], [0, 7, 8]]))
    torch.testing.assert_close(shift_cells(grid, -1, -1)[0], torch.tensor([[5.0, 6, 0], [8, 9, 0], [0, 0, 0]]))
    assert not shift_cells(grid, 0, 3).any()  # moved out entirely
    assert torch.equal(shift_cells(grid, 0, 0), grid)


def test_shift_cells_bad_input():
    with pytest.raises(TypeError, match="grid"):
        shift_cells([[1.0]], 1, 0)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        shift_cells(torch.zeros(3), 1, 0)
    with pytest.raises(TypeError, match="dx"):
        shift_cells(torch.zeros(3, 3), 1.5, 0)


def test_make_caption_data(tok):
    d = make_caption_data(16, tokenizer=tok, seed=3)
    assert d["images"].shape == (16, 3, 32, 32) and d["images"].dtype == torch.float32
    assert 0.0 <= d["images"].min() and d["images"].max() <= 1.0
    assert d["input_ids"].shape == d["attention_mask"].shape and d["input_ids"].shape[0] == 16
    assert len(d["scenes"]) == len(d["captions"]) == 16
    assert decode(tok, d["input_ids"][:3]) == [c.lower() for c in d["captions"][:3]]
    expected = to_tensor_images(world.render(d["scenes"]))
    assert torch.equal(d["images"], expected)  # images match the scenes
    for s, c in zip(d["scenes"], d["captions"]):
        assert world.facts_hold(world.parse_caption(c), s)
    again = make_caption_data(16, tokenizer=tok, seed=3)
    assert torch.equal(again["input_ids"], d["input_ids"]) and again["captions"] == d["captions"]
    other = make_caption_data(16, tokenizer=tok, seed=4, max_length=20, size=48, max_objects=3)
    assert other["input_ids"].shape == (16, 20) and other["images"].shape == (16, 3, 48, 48)
    assert other["captions"] != d["captions"]


def test_make_vqa_data(tok):
    d = make_vqa_data(40, tokenizer=tok, seed=1)
    assert d["images"].shape == (40, 3, 32, 32)
    assert d["answers"].shape == d["qtypes"].shape == (40,) and d["answers"].dtype == torch.long
    for q, a, t in zip(d["questions"], d["answers"].tolist(), d["qtypes"].tolist()):
        assert world.ANSWERS[a] == q.answer and world.QUESTION_TYPES[t] == q.qtype
    assert len(set(d["qtypes"].tolist())) >= 3
    only = make_vqa_data(10, tokenizer=tok, qtypes=["count"], seed=2)
    assert set(only["qtypes"].tolist()) == {world.QUESTION_TYPES.index("count")}


def test_make_sequence_data(tok):
    d = make_sequence_data(6, frames=5, tokenizer=tok, max_objects=2, seed=0)
    assert d["videos"].shape == (6, 5, 3, 32, 32)
    assert d["directions"].shape == (6, 2)
    for s, dirs in zip(d["sequences"], d["directions"].tolist()):
        assert sum(i >= 0 for i in dirs) == len(s.scene)
        assert dirs[len(s.scene):] == [-1] * (2 - len(s.scene))
    assert d["input_ids"].shape[0] == 6 and len(d["captions"]) == 6
    plain = make_sequence_data(3)
    assert "input_ids" not in plain and plain["videos"].shape == (3, 8, 3, 32, 32)
    assert (plain["directions"] >= 0).all()


def test_make_sequence_data_directions_follow_motion():
    d = make_sequence_data(8, frames=4, seed=5)
    for s, (dir_idx,) in zip(d["sequences"], d["directions"].tolist()):
        dx, dy = s.positions[-1, 0] - s.positions[0, 0]
        expected = ("right" if dx > 0 else "left") if abs(dx) >= abs(dy) else ("down" if dy > 0 else "up")
        assert world.DIRECTIONS[dir_idx] == expected


def test_make_audio_data():
    d = make_audio_data(5, max_objects=2, seed=0)
    assert d["waveforms"].shape == (5, 4000)
    assert d["spectrograms"].shape[:2] == (5, 129)
    assert d["images"].shape == (5, 3, 32, 32)
    for key in ("shapes", "colors", "sizes"):
        assert d[key].shape == (5, 2)
    for s, n, shapes in zip(d["scenes"], d["counts"].tolist(), d["shapes"].tolist()):
        assert n == len(s)
        ordered = sorted(s.objects, key=lambda o: o.x)
        assert [world.SHAPES[i] for i in shapes[:n]] == [o.shape for o in ordered]
        assert shapes[n:] == [-1] * (2 - n)
    assert torch.equal(d["spectrograms"], world.spectrogram(d["waveforms"]))


def test_builders_bad_input(tok):
    # The four builders check n alike and pass their other arguments on to mmutils.world and mmutils.text.
    with pytest.raises(ValueError, match="^n must"):
        make_caption_data(0, tokenizer=tok)
    with pytest.raises(TypeError, match="^n must"):
        make_caption_data(2.5, tokenizer=tok)


# --------------------------------------------------------------------------- #
# Real data
# --------------------------------------------------------------------------- #
def test_load_digits_tensors():
    x, y = load_digits_tensors()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() == 1.0
    assert y.shape == (1797,) and y.dtype == torch.long and set(y.tolist()) == set(range(10))


def test_sample_photos():
    photos = sample_photos()
    assert set(photos) == {"china", "flower"}
    assert all(p.dtype == np.uint8 and p.shape == (427, 640, 3) for p in photos.values())


def test_skimage_photos():
    photos = skimage_photos()
    assert list(photos) == ["astronaut", "coffee", "chelsea", "rocket"]
    assert photos["astronaut"].shape == (512, 512, 3) and photos["astronaut"].dtype == np.uint8
    assert skimage_photos(["camera"])["camera"].shape == (512, 512, 3)  # grey to RGB
    with pytest.raises(ValueError, match="names"):
        skimage_photos(["lena"])
    with pytest.raises(TypeError, match="names"):
        skimage_photos("astronaut")


# --------------------------------------------------------------------------- #
# Caption folders
# --------------------------------------------------------------------------- #
def _write_images(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        arr = np.full((6, 8, 3), 40 * k, dtype=np.uint8)
        Image.fromarray(arr).save(folder / name)


def test_coco_folder(tmp_path):
    _write_images(tmp_path / "images", ["a.png", "b.png", "c.png"])
    coco = {
        "images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}, {"id": 3, "file_name": "c.png"}],
        "annotations": [{"image_id": 1, "caption": "a red circle"}, {"image_id": 2, "caption": "a blue square"},
                        {"image_id": 1, "caption": " a crimson disc "}],
    }
    (tmp_path / "captions.json").write_text(json.dumps(coco))
    items = load_caption_folder(tmp_path)
    assert [(p.name, c) for p, c in items] == [("a.png", ["a red circle", "a crimson disc"]),
                                               ("b.png", ["a blue square"])]  # c.png has no caption
    ds = CaptionFolderDataset(str(tmp_path))
    image, caps = ds[1]
    assert len(ds) == 2 and image.size == (8, 6) and image.mode == "RGB" and caps == ["a blue square"]
    ds = CaptionFolderDataset(tmp_path, transform=lambda im: torch.tensor(np.asarray(im)).permute(2, 0, 1))
    assert ds[0][0].shape == (3, 6, 8)


def test_flickr_folder(tmp_path):
    _write_images(tmp_path / "Images", ["x.jpg", "y.png"])
    (tmp_path / "captions.txt").write_text(
        'image,caption\nx.jpg,A dog runs , fast .\nx.jpg,"A dog, running"\ny.png,A cat sleeps\n\n')
    items = load_caption_folder(tmp_path)
    assert [(p.name, c) for p, c in items] == [("x.jpg", ["A dog runs , fast .", "A dog, running"]),
                                               ("y.png", ["A cat sleeps"])]
    (tmp_path / "captions.txt").write_text("x.jpg#0\tA dog\nx.jpg#1\tA brown dog\n")
    assert load_caption_folder(tmp_path)[0][1] == ["A dog", "A brown dog"]


def test_caption_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_caption_folder(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="captions.json"):
        load_caption_folder(tmp_path)
    with pytest.raises(TypeError, match="root"):
        load_caption_folder(3)
    (tmp_path / "captions.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_caption_folder(tmp_path)
    (tmp_path / "captions.json").write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="annotations"):
        load_caption_folder(tmp_path)
    (tmp_path / "captions.json").write_text(json.dumps(
        {"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 7, "caption": "x"}]}))
    with pytest.raises(ValueError, match="image_id 7"):
        load_caption_folder(tmp_path)
    (tmp_path / "captions.json").write_text(json.dumps(
        {"images": [{"id": 1, "file_name": "missing.png"}], "annotations": [{"image_id": 1, "caption": "x"}]}))
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_caption_folder(tmp_path)
    (tmp_path / "captions.json").unlink()
    (tmp_path / "captions.txt").write_text("just-a-name\n")
    with pytest.raises(ValueError, match="image,caption"):
        load_caption_folder(tmp_path)
