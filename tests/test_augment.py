"""Tests of the batched augmentations: shapes, per-image draws, reproducibility, closed forms."""
import math

import pytest
import torch

from mmutils.augment import augment, augment_v2, hue_rotation


@pytest.mark.parametrize("batch", [1, 4, 12])
def test_augment_keeps_shape_device_range_and_varies(batch):
    torch.manual_seed(0)
    x = torch.rand(batch, 3, 32, 32)
    a, b = augment(x), augment(x)
    assert a.shape == x.shape and a.dtype == x.dtype and a.device == x.device
    assert a.min() >= 0 and a.max() <= 1
    assert not torch.allclose(a, b)
    assert augment(x, size=24).shape == (batch, 3, 24, 24)
    gray = augment(torch.rand(batch, 1, 8, 8), jitter=0.0, hue=0.0, grayscale_p=0.0)
    assert gray.shape == (batch, 1, 8, 8)


def test_augment_draws_parameters_per_image_and_v2_per_group():
    one = torch.rand(1, 3, 16, 16).expand(8, 3, 16, 16)
    torch.manual_seed(0)
    assert torch.unique(augment(one).flatten(1), dim=0).shape[0] == 8
    assert torch.unique(augment_v2(one, groups=1).flatten(1), dim=0).shape[0] == 1
    assert torch.unique(augment_v2(one, groups=4).flatten(1), dim=0).shape[0] == 4
    out = augment_v2(one, size=12, groups=2)
    assert out.shape == (8, 3, 12, 12) and out.min() >= 0 and out.max() <= 1


def test_augment_generator_reproduces_and_grayscale_equalizes_channels():
    x = torch.rand(5, 3, 16, 16)
    a = augment(x, generator=torch.Generator().manual_seed(3))
    b = augment(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    gray = augment(x, crop_scale=(1.0, 1.0), jitter=0.0, hue=0.0, grayscale_p=1.0)
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])


def test_hue_rotation_closed_form():
    turn = 2 * math.pi / 3
    rot = hue_rotation(torch.tensor([0.0, turn, -turn, 1.234]))
    assert rot.shape == (4, 3, 3)
    assert torch.allclose(rot[0], torch.eye(3), atol=1e-6)
    red, green, blue = torch.eye(3)
    assert torch.allclose(rot[1] @ red, green, atol=1e-6) and torch.allclose(rot[1] @ green, blue, atol=1e-6)
    assert torch.allclose(rot[2] @ red, blue, atol=1e-6)
    assert torch.allclose(rot[3] @ torch.ones(3), torch.ones(3), atol=1e-6)  # gray stays gray
    assert torch.allclose(rot[3] @ rot[3].t(), torch.eye(3), atol=1e-6)  # a rotation


@pytest.mark.parametrize("call, error, match", [
    (lambda: augment(torch.rand(2, 3, 8, 8), crop_scale=(0.0, 1.0)), ValueError, "crop_scale"),
    (lambda: augment(torch.rand(2, 1, 8, 8)), ValueError, "3 channels"),
])
def test_bad_input_names_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


# -- Image-text consistent augmentations (chapter 13) ---------------------------------------------------------------
import numpy as np  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from mmutils import world  # noqa: E402
from mmutils.augment import (  # noqa: E402
    covering_boxes, crop_boxes, crop_resize, flip_pairs, hue_jitter, mirror_scene, mirror_text, mixgen, paraphrase,
    safe_hue_angle, swap_token_ids,
)
from mmutils.text import encode_batch, train_tokenizer  # noqa: E402

PALETTE = torch.tensor(list(world.COLOR_RGB.values()), dtype=torch.float32) / 255


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer()


@pytest.fixture(scope="module")
def scenes():
    return world.sample_scenes(300, min_objects=1, max_objects=3, seed=0)


def test_mirror_text_is_an_involution_that_swaps_only_left_and_right():
    text = "a red circle to the left of a blue square and a big green star above a small red cross"
    assert mirror_text(text) == text.replace("left", "right")
    assert mirror_text(mirror_text(text)) == text
    assert mirror_text("a star below a circle") == "a star below a circle"  # a mirror moves nothing up or down
    assert mirror_text("the cleft rightly") == "the cleft rightly"  # whole words only


def test_mirror_scene_renders_the_flipped_image_and_mirrors_the_facts(scenes):
    mirrored = [mirror_scene(s) for s in scenes]
    assert np.array_equal(world.render(mirrored), world.render(scenes)[:, :, ::-1])  # exact, pixel for pixel
    assert [mirror_scene(m) for m in mirrored] == scenes  # twice is the identity
    texts = world.captions(scenes, seed=1)
    for s, m, t in zip(scenes, mirrored, texts):
        assert world.facts_hold(world.parse_caption(mirror_text(t)), m)
        if "left" in t or "right" in t:  # a horizontal relation: the unmirrored caption is now false
            assert not world.facts_hold(world.parse_caption(t), m)


def test_swap_token_ids_is_mirror_text_on_tensors(tokenizer, scenes):
    texts = world.captions(scenes, seed=2) + [q.text for q in world.questions(scenes, seed=3)]
    ids, _ = encode_batch(tokenizer, texts)
    left, right = tokenizer.convert_tokens_to_ids(["left", "right"])
    swapped = swap_token_ids(ids, left, right)
    expected, _ = encode_batch(tokenizer, [mirror_text(t) for t in texts])
    assert torch.equal(swapped, expected)
    assert torch.equal(swap_token_ids(swapped, left, right), ids)  # an involution
    rows = torch.arange(len(texts)) % 2 == 0
    partial = swap_token_ids(ids, left, right, rows)
    assert torch.equal(partial[rows], swapped[rows]) and torch.equal(partial[~rows], ids[~rows])


def test_flip_pairs_twice_is_the_identity_and_naive_keeps_the_text(tokenizer):
    from torchvision.transforms.v2 import functional as TF

    x = torch.rand(6, 3, 8, 8)
    ids, _ = encode_batch(tokenizer, ["is the red square left of the blue circle?"] * 6)
    left, right = tokenizer.convert_tokens_to_ids(["left", "right"])
    flip = torch.tensor([True, False, True, True, False, False])
    x1, ids1 = flip_pairs(x, ids, flip, left_id=left, right_id=right)
    assert torch.equal(x1[flip], TF.horizontal_flip(x[flip])) and torch.equal(x1[~flip], x[~flip])
    assert torch.equal(x1[flip], x[flip].flip(-1))
    assert (ids1[flip] == right).any(1).all() and (ids1[~flip] == left).any(1).all()
    x2, ids2 = flip_pairs(x1, ids1, flip, left_id=left, right_id=right)
    assert torch.equal(x2, x) and torch.equal(ids2, ids)
    _, naive = flip_pairs(x, ids, flip, left_id=left, right_id=right, consistent=False)
    assert torch.equal(naive, ids)


def test_safe_hue_angle_closed_form_and_palette():
    primaries = torch.eye(3)  # pure red, green, blue: red turns halfway to green at 60 degrees
    assert 59.0 <= safe_hue_angle(primaries) < 60.0
    safe = safe_hue_angle(PALETTE)
    assert 0 < safe < 60
    nearest = lambda rgb: torch.cdist(rgb, PALETTE).argmin(-1)  # noqa: E731
    for degrees in (safe, -safe):
        rot = hue_rotation(torch.deg2rad(torch.tensor([degrees])))[0]
        assert torch.equal(nearest((PALETTE @ rot.t()).clamp(0, 1)), torch.arange(len(PALETTE)))
    past = [hue_rotation(torch.deg2rad(torch.tensor([d])))[0] for d in (safe + 1.0, -safe - 1.0)]
    assert any(not torch.equal(nearest((PALETTE @ r.t()).clamp(0, 1)), torch.arange(len(PALETTE))) for r in past)


def test_hue_jitter_draws_per_image_keeps_gray_and_reproduces():
    x = torch.rand(16, 3, 8, 8)
    x[:, :, 0, 0] = 0.3  # a gray pixel
    a, angles = hue_jitter(x, 20.0, generator=torch.Generator().manual_seed(0))
    b, again = hue_jitter(x, 20.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and torch.equal(angles, again)
    assert angles.abs().max() <= 20.0 and len(torch.unique(angles)) == 16
    assert torch.allclose(a[:, :, 0, 0], torch.full((16, 3), 0.3), atol=1e-6)
    rot = hue_rotation(torch.deg2rad(angles))
    assert torch.allclose(a, torch.einsum("bij,bjhw->bihw", rot, x).clamp(0, 1))
    assert torch.allclose(hue_jitter(x, 0.0)[0], x, atol=1e-6)


def test_covering_and_crop_boxes_keep_every_object(scenes):
    cover = covering_boxes(scenes)
    for s, (x0, y0, x1, y1) in zip(scenes, cover.tolist()):
        for o in s.objects:
            r = world.RADIUS[o.size]
            assert x0 <= o.x - r + 1e-6 and o.x + r - 1e-6 <= x1 and y0 <= o.y - r + 1e-6 and o.y + r - 1e-6 <= y1
    gen = torch.Generator().manual_seed(0)
    kept = crop_boxes(len(scenes), min_side=0.5, keep=cover, generator=gen)
    assert torch.allclose(kept[:, 2] - kept[:, 0], kept[:, 3] - kept[:, 1])  # squares
    assert (kept[:, :2] <= cover[:, :2] + 1e-6).all() and (kept[:, 2:] >= cover[:, 2:] - 1e-6).all()
    assert kept.min() >= 0 and kept.max() <= 1 + 1e-6
    free = crop_boxes(len(scenes), min_side=0.5, generator=gen)
    assert free.min() >= 0 and free.max() <= 1 + 1e-6 and (free[:, 2] - free[:, 0]).min() >= 0.5
    # every object keeps most of its pixels in a crop that keeps its box, and some are cut by a free crop
    images = torch.from_numpy(world.render(scenes)).permute(0, 3, 1, 2).float() / 255
    cut = 0
    for boxes, must_keep in ((kept, True), (free, False)):
        out = crop_resize(images, boxes)
        for s, img in zip(scenes, out):
            for o in s.objects:
                rgb = torch.tensor(world.COLOR_RGB[o.color]) / 255
                present = ((img - rgb[:, None, None]).abs().amax(0) < 0.05).sum()
                if must_keep:
                    assert present >= 4
                else:
                    cut += int(present == 0)
    assert cut > 0


def test_crop_resize_matches_roi_align_and_the_identity():
    from torchvision.ops import roi_align

    x = torch.rand(5, 3, 16, 16)
    full = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 5)
    assert torch.allclose(crop_resize(x, full), x, atol=1e-5)
    boxes = torch.tensor([[0.1, 0.2, 0.7, 0.8], [0.0, 0.0, 0.5, 0.5], [0.3, 0.25, 0.9, 0.85],
                          [0.2, 0.2, 0.6, 0.6], [0.05, 0.4, 0.55, 0.9]])
    rois = torch.cat([torch.arange(5.0)[:, None], boxes * 16], dim=1)  # (5, 5): image index, box in pixels
    ref = roi_align(x, rois, output_size=12, spatial_scale=1.0, sampling_ratio=1, aligned=True)
    out = crop_resize(x, boxes, size=12)
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))  # at the image border roi_align pads with zeros
    assert torch.allclose(out[inner], ref[inner], atol=1e-5)
    assert torch.allclose(out[2:4], ref[2:4], atol=1e-5)  # boxes well inside the image: equal everywhere


def test_mixgen_mixes_images_and_concatenates_texts(tokenizer):
    texts = ["a red circle", "there is a big blue star left of a small green cross", "a yellow square"]
    x = torch.rand(3, 3, 8, 8)
    ids, mask = encode_batch(tokenizer, texts)
    partner = torch.tensor([1, 2, 0])
    mixed, cat_ids, cat_mask = mixgen(x, ids, mask, partner=partner, lam=0.5)
    assert torch.allclose(mixed, 0.5 * x + 0.5 * x[partner])
    expected, expected_mask = encode_batch(tokenizer, [f"{texts[i]} {texts[j]}" for i, j in enumerate([1, 2, 0])],
                                           max_length=cat_ids.shape[1])
    assert torch.equal(cat_ids, expected) and torch.equal(cat_mask, expected_mask)
    assert torch.equal(mixgen(x, ids, mask, partner=partner, lam=1.0)[0], x)
    # the concatenation is true of both scenes: its facts are the union of the two captions' facts
    joined = tokenizer.decode(cat_ids[0], skip_special_tokens=True)
    assert world.parse_caption(joined) == world.parse_caption(texts[0]) | world.parse_caption(texts[1])


def test_paraphrase_keeps_facts_and_answers(tokenizer, scenes):
    rng = np.random.default_rng(0)
    texts = world.captions(scenes, seed=4)
    changed = 0
    for s, t in zip(scenes, texts):
        p = paraphrase(t, rng)
        changed += p != t
        assert world.parse_caption(p) == world.parse_caption(t) and world.facts_hold(world.parse_caption(p), s)
    assert changed > len(texts) // 2
    qs = world.questions(scenes, seed=5)
    para = [paraphrase(q.text, rng) for q in qs]
    assert sum(p != q.text for p, q in zip(para, qs)) > len(qs) // 8  # relation and count questions
    ids, _ = encode_batch(tokenizer, texts + para)
    assert not (ids == tokenizer.unk_token_id).any()  # every word is in the grammar's vocabulary
    assert paraphrase("how many objects are there?", 0, drop_p=1.0) == "how many objects?"
    assert paraphrase("a red circle", 0, drop_p=1.0) == "a red circle"


@pytest.mark.parametrize("call, error, match", [
    (lambda: mirror_text(3), TypeError, "text"),
    (lambda: mirror_scene("scene"), TypeError, "scene"),
    (lambda: swap_token_ids(torch.zeros(2, 3), 5, 6), TypeError, "ids"),
    (lambda: swap_token_ids(torch.zeros(2, 3, dtype=torch.long), 5, 6, torch.ones(2)), TypeError, "where"),
    (lambda: swap_token_ids(torch.zeros(2, 3, dtype=torch.long), 5, 6, torch.ones(3, dtype=torch.bool)),
     ValueError, "where"),
    (lambda: flip_pairs(torch.rand(2, 3, 4, 4), torch.zeros(3, 5, dtype=torch.long), torch.ones(2, dtype=torch.bool),
                        left_id=5, right_id=6), ValueError, "ids"),
    (lambda: safe_hue_angle(torch.rand(4, 2)), ValueError, "palette"),
    (lambda: safe_hue_angle(torch.rand(1, 3)), ValueError, "palette"),
    (lambda: hue_jitter(torch.rand(2, 1, 4, 4), 10.0), ValueError, "images"),
    (lambda: hue_jitter(torch.rand(2, 3, 4, 4), 200.0), ValueError, "max_degrees"),
    (lambda: covering_boxes([world.Scene(())]), ValueError, "scenes"),
    (lambda: crop_boxes(3, min_side=0.0), ValueError, "min_side"),
    (lambda: crop_boxes(3, keep=torch.rand(2, 4)), ValueError, "keep"),
    (lambda: crop_resize(torch.rand(2, 3, 4, 4), torch.rand(3, 4)), ValueError, "boxes"),
    (lambda: mixgen(torch.rand(2, 3, 4, 4), torch.zeros(2, 5, dtype=torch.long), None,
                    partner=torch.tensor([0, 2])), ValueError, "partner"),
    (lambda: mixgen(torch.rand(2, 3, 4, 4), torch.zeros(2, 5, dtype=torch.long), None,
                    partner=torch.tensor([1, 0]), lam=1.5), ValueError, "lam"),
    (lambda: paraphrase(["a red circle"]), TypeError, "text"),
])
def test_consistent_augmentations_name_the_bad_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()
