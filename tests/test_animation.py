"""Tests of mmutils.animation: motion captions, object centres in images, room to move, and the identity and
motion measures on clips with known answers (true ShapesWorld clips, and the same clips spoiled), bad inputs."""
from __future__ import annotations

import math

import pytest
import torch

from mmutils import animation as a
from mmutils.data import to_tensor_images
from mmutils.world import Obj, Scene, render, sample_sequences, with_attribute


def _clip_scenes(seq) -> list[Scene]:
    return [seq.frame(k) for k in range(seq.frames)]


def _direction(seq) -> str:
    vx, vy = seq.velocities[0]
    return ("right" if vx > 0 else "left") if abs(vx) >= abs(vy) else ("down" if vy > 0 else "up")


SEQS = sample_sequences(40, frames=4, speed=0.0625, seed=3)
CLIPS = [_clip_scenes(s) for s in SEQS]
DIRS = [_direction(s) for s in SEQS]
TRAVEL = 3 * 0.0625


# ---- Captions ----------------------------------------------------------------
def test_split_motion_and_motion_direction():
    assert a.split_motion("the little orange circle moves to the right") == ("the little orange circle",
                                                                               "moves to the right")
    assert a.split_motion("the star moves up") == ("the star", "moves up")
    for seq in SEQS[:10]:
        assert a.motion_direction(seq.caption) == _direction(seq)
    with pytest.raises(TypeError, match="caption"):
        a.split_motion(3)
    with pytest.raises(ValueError, match="moves"):
        a.split_motion("there is a red circle")
    with pytest.raises(ValueError, match="one object"):
        a.split_motion("the red circle moves up and the blue square moves left")
    with pytest.raises(ValueError, match="name the object"):
        a.split_motion("moves up")
    with pytest.raises(ValueError, match="one motion"):
        a.motion_direction("there is a red circle")


# ---- Where the object is -----------------------------------------------------
def test_object_centres_find_rendered_objects_and_nan_on_empty_images():
    objs = [Obj("circle", "red", "large", 0.3, 0.6), Obj("square", "blue", "small", 0.8, 0.2)]
    images = to_tensor_images(render([Scene((o,)) for o in objs] + [Scene(())]))
    centres = a.object_centres(images)
    assert centres.shape == (3, 2)
    torch.testing.assert_close(centres[:2], torch.tensor([[o.x, o.y] for o in objs]), atol=0.02, rtol=0)
    assert torch.isnan(centres[2]).all()
    with pytest.raises(TypeError, match="images"):
        a.object_centres(images.numpy())
    with pytest.raises(ValueError, match="images"):
        a.object_centres(images[:, :1])
    with pytest.raises(ValueError, match="threshold"):
        a.object_centres(images, threshold=2.0)


def test_room_to_move_checks_both_ends_and_nan():
    centres = torch.tensor([[0.5, 0.5], [0.75, 0.5], [0.5, 0.2], [math.nan, math.nan]])
    room = a.room_to_move(centres, ["right", "right", "up", "left"], 0.2, margin=0.1)
    assert room.tolist() == [True, False, False, False]
    assert a.room_to_move(centres[:3], ["left", "left", "down"], 0.2, margin=0.1).tolist() == [True, True, True]
    with pytest.raises(ValueError, match="directions"):
        a.room_to_move(centres, ["right"], 0.2)
    with pytest.raises(ValueError, match="directions"):
        a.room_to_move(centres, ["right", "right", "up", "sideways"], 0.2)
    with pytest.raises(ValueError, match="margin"):
        a.room_to_move(centres, ["right"] * 4, 0.2, margin=0.6)


def test_shift_grids_moves_one_cell_and_fills_from_the_other_side():
    grids = torch.arange(2 * 9, dtype=torch.float32).reshape(2, 1, 3, 3)
    fill = torch.full((1, 3, 3), -1.0)
    moved = a.shift_grids(grids, ["right", "up"], fill)
    torch.testing.assert_close(moved[0, 0], torch.tensor([[-1.0, 0, 1], [-1, 3, 4], [-1, 6, 7]]))
    torch.testing.assert_close(moved[1, 0], torch.tensor([[12.0, 13, 14], [15, 16, 17], [-1, -1, -1]]))
    torch.testing.assert_close(a.shift_grids(grids[:1], ["left"], fill)[0, 0, :, 0], torch.tensor([1.0, 4, 7]))
    torch.testing.assert_close(a.shift_grids(grids[:1], ["down"], fill)[0, 0, 0], torch.tensor([-1.0, -1, -1]))
    assert torch.equal(grids[0, 0, 0], torch.tensor([0.0, 1, 2]))  # the input is left as it was


def test_shift_grids_rejects_bad_inputs():
    grids, fill = torch.zeros(2, 4, 5, 5), torch.zeros(4, 5, 5)
    with pytest.raises(ValueError, match="directions must be among"):
        a.shift_grids(grids, ["right", "sideways"], fill)
    with pytest.raises(ValueError, match="fill"):
        a.shift_grids(grids, ["right", "up"], torch.zeros(4, 4, 4))


# ---- The measures ------------------------------------------------------------
def test_true_clips_are_consistent_and_move_as_captioned():
    assert all(a.identity_consistent(CLIPS))
    assert all(a.motion_correct(CLIPS, DIRS, TRAVEL))
    assert a.clip_scores(CLIPS, DIRS, TRAVEL) == {"identity": 1.0, "motion": 1.0, "both": 1.0}


def test_identity_fails_when_the_object_changes_or_vanishes():
    clip = CLIPS[0]
    obj = clip[2].objects[0]
    other_color = "blue" if obj.color != "blue" else "red"
    recoloured = clip[:2] + [with_attribute(clip[2], 0, "color", other_color)] + clip[3:]
    vanished = clip[:3] + [Scene(())]
    doubled = clip[:3] + [Scene((obj, obj))]
    empty = [Scene(())] * 4
    resized = clip[:3] + [with_attribute(clip[3], 0, "size", "small" if obj.size != "small" else "large")]
    assert a.identity_consistent([recoloured, vanished, doubled, empty, resized]) == [False, False, False, False,
                                                                                    True]  # size is not checked


def test_motion_fails_when_reversed_sideways_or_still():
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}
    sideways = {"left": "up", "right": "down", "up": "left", "down": "right"}
    assert not any(a.motion_correct(CLIPS, [opposite[d] for d in DIRS], TRAVEL))
    assert not any(a.motion_correct(CLIPS, [sideways[d] for d in DIRS], TRAVEL))
    still = [[c[0]] * 4 for c in CLIPS]
    assert not any(a.motion_correct(still, DIRS, TRAVEL))
    assert not any(a.motion_correct(CLIPS, DIRS, 4 * TRAVEL))  # moved a quarter of what was asked: too little
    assert a.clip_scores(still, DIRS, TRAVEL) == {"identity": 1.0, "motion": 0.0, "both": 0.0}


def test_measures_reject_bad_clips():
    with pytest.raises(TypeError, match="clips"):
        a.identity_consistent("clip")
    with pytest.raises(TypeError, match=r"clips\[i\]\[k\]"):
        a.identity_consistent([[CLIPS[0][0], "frame"]])
    with pytest.raises(ValueError, match="at least one frame"):
        a.identity_consistent([[]])
    with pytest.raises(ValueError, match="one direction per clip"):
        a.motion_correct(CLIPS, DIRS[:3], TRAVEL)
    with pytest.raises(ValueError, match="travel"):
        a.motion_correct(CLIPS, DIRS, 0.0)
