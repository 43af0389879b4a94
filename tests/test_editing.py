"""Tests of mmutils.editing: crops and their inverse, object holes, the inpainting context, the exact merge of known
pixels, edit success and preservation on scenes with known answers, bad inputs."""
from __future__ import annotations

import pytest
import torch

from mmutils import editing as e
from mmutils.world import BACKGROUND_GREY, RADIUS, SHAPES, SIZES, Obj, Scene, render, with_attribute

CIRCLE = Obj("circle", "red", "large", 0.3, 0.3)
SQUARE = Obj("square", "blue", "small", 0.75, 0.7)
SCENE = Scene((CIRCLE, SQUARE))


# ---- Crops and holes ---------------------------------------------------------
def test_crop_origins_centre_the_window_and_stay_inside():
    objs = [Obj("circle", "red", "small", 0.5, 0.5), Obj("circle", "red", "small", 0.02, 0.98)]
    assert e.crop_origins(objs, 16, 8) == [(4, 4), (0, 8)]
    assert e.crop_origins([Obj("circle", "red", "small", 0.53125, 0.46875)], 16, 8) == [(5, 4)]  # halves round up


def test_crop_then_paste_is_the_identity_and_paste_touches_only_the_window():
    z = torch.randn(2, 3, 16, 16)
    origins = [(4, 4), (0, 8)]
    patches = e.crop_grid(z, origins, 8)
    assert patches.shape == (2, 3, 8, 8)
    torch.testing.assert_close(patches[1], z[1, :, 8:16, 0:8])
    assert torch.equal(e.paste_grid(z, patches, origins), z)
    pasted = e.paste_grid(z, torch.zeros(2, 3, 8, 8), origins)
    assert pasted[0, :, 4:12, 4:12].abs().sum() == 0 and torch.equal(pasted[0, :, :4], z[0, :, :4])
    assert torch.equal(z, z.clone())  # the input is not modified


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size", SIZES)
def test_object_holes_cover_every_pixel_of_the_object_in_a_disk(shape, size):
    obj = Obj(shape, "red", size, 0.45, 0.55)
    holes = e.object_holes([obj], 16)
    assert holes.shape == (1, 1, 16, 16)
    pixels = torch.from_numpy(render(Scene((obj,)), size=32)[0]).int().sub(BACKGROUND_GREY).abs().amax(-1) > 0
    inside = holes[0, 0].repeat_interleave(2, 0).repeat_interleave(2, 1).bool()
    assert bool(inside[pixels].all())  # no pixel of the object is left outside the hole
    # ... and the hole is a disk around the centre, within a cell and a half of the object's reach
    c = torch.arange(16) + 0.5
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    reach = RADIUS[size] * 16 * 1.25  # no shape reaches further than 1.25 times its nominal radius
    assert bool((holes[0, 0][(xx - 16 * obj.x) ** 2 + (yy - 16 * obj.y) ** 2 > (reach + 1.5) ** 2] == 0).all())
    grown = e.object_holes([obj], 16, margin=1.0)
    assert bool((grown >= holes).all()) and grown.sum() > holes.sum()


def test_object_holes_in_crop_windows_are_the_windows_of_the_full_map_holes():
    holes = e.object_holes([CIRCLE, SQUARE], 16)
    origins = e.crop_origins([CIRCLE, SQUARE], 16, 8)
    torch.testing.assert_close(e.object_holes([CIRCLE, SQUARE], 16, origins=origins, crop=8),
                               e.crop_grid(holes, origins, 8))


def test_inpaint_context_blanks_the_hole_and_appends_it():
    z, holes = torch.randn(2, 4, 8, 8), torch.zeros(2, 1, 8, 8)
    holes[:, :, 2:5, 2:5] = 1
    ctx = e.inpaint_context(z, holes)
    assert ctx.shape == (2, 5, 8, 8) and torch.equal(ctx[:, 4:], holes)
    assert ctx[:, :4, 2:5, 2:5].abs().sum() == 0 and torch.equal(ctx[:, :4, :2], z[:, :, :2])


def test_merge_known_keeps_every_known_pixel_exactly():
    generated, original = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    holes = e.object_holes([CIRCLE, SQUARE], 16)  # latent-grid holes cover 2x2 pixels each
    merged = e.merge_known(generated, original, holes)
    inside = holes.repeat_interleave(2, 2).repeat_interleave(2, 3).bool().expand(-1, 3, -1, -1)
    assert torch.equal(merged[~inside], original[~inside])
    assert torch.equal(merged[inside], generated[inside])


# ---- Judging edits -----------------------------------------------------------
RECOLOURED = with_attribute(SCENE, 0, "color", "green")


@pytest.mark.parametrize("read, success, preserved", [
    (RECOLOURED, 1, 1),  # exactly the target
    (SCENE, 0, 1),  # nothing changed
    (Scene((Obj("circle", "green", "large", 0.3, 0.3), Obj("square", "blue", "large", 0.75, 0.7))), 1, 0),  # other
    (Scene((Obj("star", "green", "large", 0.3, 0.3), SQUARE)), 1, 0),  # the edited object's shape lost
    (Scene((Obj("circle", "green", "large", 0.45, 0.3), SQUARE)), 0, 0),  # moved too far: not found
    (Scene((Obj("circle", "green", "large", 0.35, 0.3), SQUARE)), 1, 1),  # moved within the tolerance
    (Scene((*RECOLOURED.objects, Obj("cross", "red", "small", 0.2, 0.8))), 1, 0),  # an object more
    (Scene((Obj("circle", "green", "large", 0.3, 0.3),)), 1, 0),  # an object less
])
def test_edit_scores_on_known_answers(read, success, preserved):
    out = e.edit_scores([read], [SCENE], [RECOLOURED])
    assert (out["success"].item(), out["preserved"].item()) == (success, preserved)
    assert out["both"].item() == success * preserved


def test_edit_scores_of_an_edit_of_two_attributes_needs_both():
    target = with_attribute(RECOLOURED, 0, "size", "small")
    half = Scene((Obj("circle", "green", "large", 0.3, 0.3), SQUARE))
    assert e.edit_scores([half], [SCENE], [target])["success"].item() == 0
    assert e.edit_scores([target], [SCENE], [target])["both"].item() == 1


# ---- Bad inputs --------------------------------------------------------------
def test_wrong_types_name_the_argument():
    with pytest.raises(TypeError, match="objects"):
        e.object_holes([SCENE], 16)
    with pytest.raises(TypeError, match="origins"):
        e.crop_grid(torch.zeros(1, 4, 16, 16), [(1.0, 0)], 8)
    with pytest.raises(TypeError, match="read"):
        e.edit_scores(SCENE, [SCENE], [RECOLOURED])
    with pytest.raises(TypeError, match="generated"):
        e.merge_known([0.0], torch.zeros(1, 3, 4, 4), torch.zeros(1, 1, 2, 2))


def test_wrong_values_name_the_argument():
    with pytest.raises(ValueError, match="sources"):
        e.edit_scores([SCENE, SCENE], [SCENE], [RECOLOURED, RECOLOURED])
    with pytest.raises(ValueError, match="differ"):
        e.edit_scores([SCENE], [SCENE], [SCENE])
    with pytest.raises(ValueError, match="in place"):
        e.edit_scores([SCENE], [SCENE], [Scene((CIRCLE,))])
    with pytest.raises(ValueError, match="origins"):
        e.crop_grid(torch.zeros(1, 4, 16, 16), [(10, 0)], 8)
    with pytest.raises(ValueError, match="origins"):
        e.crop_grid(torch.zeros(2, 4, 16, 16), [(0, 0)], 8)
    with pytest.raises(ValueError, match="crop"):
        e.crop_origins([CIRCLE], 16, 20)
    with pytest.raises(ValueError, match="together"):
        e.object_holes([CIRCLE], 16, crop=8)
    with pytest.raises(ValueError, match="margin"):
        e.object_holes([CIRCLE], 16, margin=-1)
    with pytest.raises(ValueError, match="original"):
        e.merge_known(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 8, 8), torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match="holes"):
        e.merge_known(torch.zeros(1, 3, 6, 6), torch.zeros(1, 3, 6, 6), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="holes"):
        e.inpaint_context(torch.zeros(1, 4, 8, 8), torch.zeros(1, 1, 4, 4))


def test_crop_origins_take_centres_as_well_as_objects():
    objs = [Obj("circle", "red", "small", 0.5, 0.5), Obj("circle", "red", "small", 0.02, 0.98)]
    centres = torch.tensor([[o.x, o.y] for o in objs])
    assert e.crop_origins(centres, 16, 8) == e.crop_origins(objs, 16, 8)
    with pytest.raises(ValueError, match="finite"):
        e.crop_origins(torch.tensor([[0.5, float("nan")]]), 16, 8)
    with pytest.raises(ValueError, match="objects"):
        e.crop_origins(torch.zeros(2, 3), 16, 8)
