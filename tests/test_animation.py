"""Tests of mmutils.animation: motion captions, object centres in images, room to move, grids moved by one cell
(shift_grids) and by kernels (kernel_move, KernelMover), and the identity and motion measures on clips with known
answers (true ShapesWorld clips, and the same clips spoiled), bad inputs."""
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


def test_shift_grids_moves_what_differs_from_the_background():
    fill = torch.tensor([[5.0, 1, 1, 7]]).expand(1, 2, 4).clone()  # border cells unlike inner ones
    grid = fill.clone()
    grid[0, :, 1] += 10.0  # an object in column 1
    moved = a.shift_grids(grid[None], ["right"], fill)[0]
    torch.testing.assert_close(moved[0, 0], torch.tensor([5.0, 1, 11, 7]))  # the object moved, the borders stay
    torch.testing.assert_close(a.shift_grids(fill[None], ["left"], fill)[0], fill)  # an empty frame stays empty


def test_shift_grids_rejects_bad_inputs():
    grids, fill = torch.zeros(2, 4, 5, 5), torch.zeros(4, 5, 5)
    with pytest.raises(ValueError, match="directions must be among"):
        a.shift_grids(grids, ["right", "sideways"], fill)
    with pytest.raises(ValueError, match="fill"):
        a.shift_grids(grids, ["right", "up"], torch.zeros(4, 4, 4))


def _one_hot(row: int, col: int, k: int = 3) -> torch.Tensor:
    kernel = torch.zeros(k, k)
    kernel[row, col] = 1.0
    return kernel


def test_kernel_move_with_one_hot_kernels_is_shift_grids():
    grids = torch.randn(4, 2, 5, 6, generator=torch.Generator().manual_seed(0))
    fill = torch.randn(2, 5, 6, generator=torch.Generator().manual_seed(1))
    where = {"right": (1, 0), "left": (1, 2), "down": (0, 1), "up": (2, 1)}  # the cell each one takes from
    directions = list(where)
    kernels = torch.stack([_one_hot(*where[d]) for d in directions])
    torch.testing.assert_close(a.kernel_move(grids, kernels, fill), a.shift_grids(grids, directions, fill))
    still = a.kernel_move(grids, torch.stack([_one_hot(1, 1)] * 4), fill)
    torch.testing.assert_close(still, grids)  # the centre weight keeps the grid where it is


def test_kernel_move_of_a_soft_kernel_mixes_and_keeps_an_even_offset_inside():
    grids = torch.zeros(1, 1, 3, 3)
    grids[0, 0, 1, 1] = 1.0
    kernel = 0.5 * (_one_hot(1, 0) + _one_hot(1, 1))  # half stays, half moves one cell right
    moved = a.kernel_move(grids, kernel[None], torch.zeros(1, 3, 3))
    torch.testing.assert_close(moved[0, 0], torch.tensor([[0.0, 0, 0], [0, 0.5, 0.5], [0, 0, 0]]))
    fill = torch.randn(3, 7, 7, generator=torch.Generator().manual_seed(4))  # a background that varies
    kernels = torch.rand(2, 5, 5, generator=torch.Generator().manual_seed(2))
    kernels = kernels / kernels.sum((1, 2), keepdim=True)
    lifted = (fill + 0.3).expand(2, 3, 7, 7)  # the background plus 0.3 everywhere
    moved = a.kernel_move(lifted, kernels, fill)
    inner = (slice(None), slice(None), slice(2, 5), slice(2, 5))  # where every kernel lies inside the grid
    torch.testing.assert_close(moved[inner], lifted[inner])  # weights summing to 1 keep an even offset
    assert (moved[..., 0, 0] < lifted[..., 0, 0]).all()  # at a corner some of the weight fell outside


def test_kernel_move_rejects_bad_inputs():
    grids, fill = torch.zeros(2, 4, 5, 5), torch.zeros(4, 5, 5)
    with pytest.raises(TypeError, match="kernels"):
        a.kernel_move(grids, [[0.0]], fill)
    with pytest.raises(ValueError, match="odd side"):
        a.kernel_move(grids, torch.zeros(2, 2, 2), fill)
    with pytest.raises(ValueError, match="kernels"):
        a.kernel_move(grids, torch.zeros(3, 3, 3), fill)  # one kernel per grid
    with pytest.raises(ValueError, match="fill"):
        a.kernel_move(grids, torch.zeros(2, 3, 3), torch.zeros(4, 4, 4))


def test_kernel_mover_predicts_normalised_kernels_and_learns_a_direction():
    torch.manual_seed(0)
    mover = a.KernelMover(vocab_size=5, dim=8)
    ids = torch.tensor([[1, 2, 0], [3, 4, 4]])  # two prompts, the first padded
    mask = torch.tensor([[True, True, False], [True, True, True]])
    kernels = mover.kernels(ids, mask)
    assert kernels.shape == (2, 3, 3)
    torch.testing.assert_close(kernels.sum((1, 2)), torch.ones(2))
    grids = torch.randn(64, 2, 6, 6, generator=torch.Generator().manual_seed(3))
    fill = torch.zeros(2, 6, 6)
    prompts = torch.tensor([0, 1] * 32)  # prompt 0 asks for right, prompt 1 for up
    targets = torch.stack([a.shift_grids(g[None], ["right" if p == 0 else "up"], fill)[0]
                           for g, p in zip(grids, prompts)])
    batch_ids, batch_mask = ids[prompts], mask[prompts]
    opt = torch.optim.Adam(mover.parameters(), lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        torch.nn.functional.mse_loss(mover(grids, batch_ids, batch_mask, fill), targets).backward()
        opt.step()
    learned = mover.kernels(ids, mask).detach()
    assert learned[0, 1, 0] > 0.9 and learned[1, 2, 1] > 0.9  # right: take from the left; up: from below


def test_kernel_mover_rejects_bad_settings_and_inputs():
    with pytest.raises(ValueError, match="kernel must be odd"):
        a.KernelMover(vocab_size=5, kernel=4)
    with pytest.raises(ValueError, match="kernel"):
        a.KernelMover(vocab_size=5, kernel=1)  # could never move
    with pytest.raises(ValueError, match="vocab_size"):
        a.KernelMover(vocab_size=0)
    with pytest.raises(TypeError, match="ids"):
        a.KernelMover(vocab_size=5).kernels(torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        a.KernelMover(vocab_size=5).kernels(torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 4, dtype=torch.bool))


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
