"""Tests of mmutils.layout: layouts that make every fact of a prompt true and keep the world's gaps, the cells an
object covers, and objects moved and pasted in the latent grid (exactly, on known inputs), bad inputs."""
from __future__ import annotations

import math

import pytest
import torch

from mmutils import layout as lay
from mmutils.data import to_tensor_images
from mmutils.world import RADIUS, Obj, Scene, captions, facts_hold, parse_caption, render, sample_scenes

PROMPTS = captions(sample_scenes(60, min_objects=2, max_objects=2, seed=5), seed=6) + [
    "a red circle left of a square", "the blue star is above the small object", "a large green cross"]


# ---- Layouts -----------------------------------------------------------------
def test_layouts_make_every_fact_true_and_keep_the_worlds_gaps():
    layouts = lay.plan_layouts(PROMPTS, seed=1)
    assert len(layouts) == len(PROMPTS)
    for prompt, scene in zip(PROMPTS, layouts):
        facts = parse_caption(prompt)
        assert facts_hold(facts, scene), (prompt, scene)
        assert len(scene) == sum(f[0] == "exists" for f in facts)
        if len(scene) == 2:
            a, b = scene.objects
            assert a.desc[:2] != b.desc[:2]
            assert math.dist((a.x, a.y), (b.x, b.y)) > RADIUS[a.size] + RADIUS[b.size]
            subject = next(f[1] for f in facts if f[0] == "rel")
            assert all(p is None or p == v for p, v in zip(subject, a.desc))  # subject first


def test_layouts_fill_what_the_prompt_leaves_open_and_follow_the_seed():
    first = lay.plan_layouts(["a circle above a square"] * 30, seed=2)
    assert len({o.color for s in first for o in s.objects}) > 3  # colours drawn, not fixed
    assert {o.shape for s in first for o in s.objects} == {"circle", "square"}
    assert len({(s.objects[0].x, s.objects[0].y) for s in first}) == 30  # each layout its own place
    assert lay.plan_layouts(["a circle above a square"] * 30, seed=2) == first
    assert lay.plan_layouts(["a circle above a square"] * 30, seed=3) != first


def test_one_object_layouts_keep_a_place_that_fits_their_size():
    for scene in lay.plan_layouts(["a large red circle", "a blue star"] * 20, seed=4):
        (o,) = scene.objects
        r = RADIUS[o.size]
        assert r <= o.x <= 1 - r and r <= o.y <= 1 - r


def test_plan_layouts_refuses_bad_prompts():
    with pytest.raises(TypeError, match="prompts"):
        lay.plan_layouts("a red circle")
    with pytest.raises(ValueError, match="grammar"):
        lay.plan_layouts(["a red circle beside a dog"])
    with pytest.raises(ValueError, match="two objects and one relation"):
        lay.plan_layouts(["a red circle left of a blue square and a green star"])
    with pytest.raises(ValueError, match="twice"):
        lay.plan_layouts(["a red circle left of a small red circle"])
    with pytest.raises(ValueError, match="pool"):
        lay.plan_layouts(["a small red circle left of a small blue square"] * 30, pool=20)


# ---- Cells and pasting -------------------------------------------------------
def test_object_cells_cover_the_object_and_nothing_else():
    scene = Scene((Obj("square", "red", "small", 0.25, 0.25),))
    images = to_tensor_images(render([scene, Scene(())], size=32))
    cells = lay.object_cells(images, 2)
    assert cells.shape == (2, 1, 16, 16)
    assert cells[1].sum() == 0
    ys, xs = torch.nonzero(cells[0, 0], as_tuple=True)
    assert xs.float().mean() == pytest.approx(0.25 * 16 - 0.5, abs=0.6)
    assert ys.float().mean() == pytest.approx(0.25 * 16 - 0.5, abs=0.6)
    assert 4 <= len(xs) <= 25  # a small square: about 8 pixels across, 4 or 5 cells
    with pytest.raises(ValueError, match="cell"):
        lay.object_cells(images, 3)


def test_paste_objects_moves_cells_exactly_and_drops_what_leaves_the_grid():
    background = torch.zeros(2, 1, 4, 4)
    latents = torch.arange(32, dtype=torch.float).view(2, 1, 4, 4) + 1
    cells = torch.zeros(2, 1, 4, 4)
    cells[0, 0, 1, 1] = 1  # one cell of object 0, value 6
    cells[1, 0, 0, 3] = 1  # one cell of object 1, value 20
    out = lay.paste_objects(background, latents, cells, torch.tensor([[2, 1], [1, 0]]), torch.tensor([0, 1]))
    assert out[0, 0, 2, 3] == 6 and out[0].count_nonzero() == 1  # moved 2 right, 1 down
    assert out[1].count_nonzero() == 0  # moved off the right edge
    both = lay.paste_objects(background[:1], latents, torch.ones(2, 1, 4, 4), torch.zeros(2, 2, dtype=torch.long),
                             torch.tensor([0, 0]))
    assert torch.equal(both[0], latents[1])  # pasted in order: the second covers the first
    assert torch.equal(background, torch.zeros(2, 1, 4, 4))  # the input is left as it was


def test_paste_objects_refuses_bad_inputs():
    z, cells = torch.zeros(1, 2, 4, 4), torch.ones(1, 1, 4, 4)
    shifts, group = torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, dtype=torch.long)
    with pytest.raises(ValueError, match="latents"):
        lay.paste_objects(z, torch.zeros(1, 3, 4, 4), cells, shifts, group)
    with pytest.raises(TypeError, match="shifts"):
        lay.paste_objects(z, z, cells, shifts.float(), group)
    with pytest.raises(ValueError, match="group"):
        lay.paste_objects(z, z, cells, shifts, torch.tensor([1]))
