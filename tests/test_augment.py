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
