"""Tests of ShapesWorld: determinism, rendering, the caption grammar, questions, clips, sound,
cell labels and scene perturbations."""
import numpy as np
import pytest
import torch

from mmutils import world as w
from mmutils.world.audio import _PITCH


@pytest.fixture(scope="module")
def scenes():
    return w.sample_scenes(10_000, min_objects=1, max_objects=3, seed=7)


def test_answers_are_distinct_and_opposites_pair_up():
    assert len(set(w.ANSWERS)) == len(w.ANSWERS)
    assert set(w.OPPOSITE) == set(w.RELATIONS)
    assert all(w.OPPOSITE[w.OPPOSITE[r]] == r != w.OPPOSITE[r] for r in w.RELATIONS)
    s = w.Scene((w.Obj("circle", "red", "small", 0.2, 0.5), w.Obj("square", "blue", "large", 0.8, 0.45)))
    assert s.relation(1, 0) == w.OPPOSITE[s.relation(0, 1)]


def test_same_seed_same_world():
    a, b = w.sample_scenes(50, max_objects=3, seed=3), w.sample_scenes(50, max_objects=3, seed=3)
    assert a == b
    assert np.array_equal(w.render(a, noise=0.1, seed=1), w.render(b, noise=0.1, seed=1))
    assert w.captions(a, seed=2) == w.captions(b, seed=2)
    assert w.questions(a, seed=2) == w.questions(b, seed=2)
    assert w.sample_scenes(50, seed=4) != a


def test_scene_constraints(scenes):
    counts = np.bincount([len(s) for s in scenes])
    assert counts[0] == 0 and (counts[1:] > 2000).all()
    for s in scenes[:2000]:
        combos = [(o.shape, o.color) for o in s.objects]
        assert len(set(combos)) == len(combos)
        for i, a in enumerate(s.objects):
            r = w.RADIUS[a.size]
            assert r <= a.x <= 1 - r and r <= a.y <= 1 - r
            for b in s.objects[i + 1:]:
                assert np.hypot(a.x - b.x, a.y - b.y) >= r + w.RADIUS[b.size]


def test_relation_is_antisymmetric():
    s = w.Scene((w.Obj("circle", "red", "small", 0.2, 0.5), w.Obj("square", "blue", "large", 0.8, 0.45)))
    assert s.relation(0, 1) == "left of" and s.relation(1, 0) == "right of"
    s = w.Scene((w.Obj("circle", "red", "small", 0.5, 0.2), w.Obj("square", "blue", "large", 0.45, 0.8)))
    assert s.relation(0, 1) == "above" and s.relation(1, 0) == "below"


def test_render_shapes_colors_and_speed_scale():
    scene = w.Scene((w.Obj("square", "red", "large", 0.5, 0.5),))
    img = w.render([scene], size=32)
    assert img.shape == (1, 32, 32, 3) and img.dtype == np.uint8
    assert tuple(img[0, 16, 16]) == w.COLOR_RGB["red"]
    assert tuple(img[0, 0, 0]) == (16, 16, 16)
    big = w.render([scene], size=64)
    assert big.shape == (1, 64, 64, 3)
    # The object covers about the same fraction of the image at every size.
    frac = [(x[0] != 16).any(-1).mean() for x in (img, big)]
    assert abs(frac[0] - frac[1]) < 0.03


def test_each_shape_has_a_distinct_silhouette():
    scenes = [w.Scene((w.Obj(s, "blue", "large", 0.5, 0.5),)) for s in w.SHAPES]
    masks = (w.render(scenes, size=48) != 16).any(-1).reshape(len(w.SHAPES), -1)
    for i in range(len(w.SHAPES)):
        for j in range(i + 1, len(w.SHAPES)):
            assert (masks[i] != masks[j]).sum() > 20, (w.SHAPES[i], w.SHAPES[j])


def test_noise_changes_background_only_statistically():
    scene = w.sample_scenes(4, seed=0)
    clean, noisy = w.render(scene), w.render(scene, noise=0.1, seed=0)
    assert not np.array_equal(clean, noisy)
    assert abs(noisy.astype(float).mean() - clean.astype(float).mean()) < 10


def test_every_caption_parses_to_true_facts(scenes):
    for style_seed in (0, 1):
        for text, scene in zip(w.captions(scenes, seed=style_seed), scenes):
            facts = w.parse_caption(text)
            assert facts and w.facts_hold(facts, scene), (text, scene)
            assert {f[1] for f in facts if f[0] == "exists"} <= {o.desc for o in scene.objects}


def test_canonical_caption_and_synonyms():
    s = w.Scene((w.Obj("circle", "red", "small", 0.2, 0.5), w.Obj("square", "blue", "large", 0.8, 0.45)))
    assert w.caption(s, canonical=True) == "a small red circle left of a large blue square"
    variants = {w.caption(s, rng=i) for i in range(60)}
    assert len(variants) > 5
    assert all(w.facts_hold(w.parse_caption(v), s) for v in variants)
    target = w.parse_caption("a small red circle left of a large blue square")
    assert w.parse_caption("the little red circle is to the left of the big blue square") == target
    assert w.parse_caption("there is a big blue square to the right of a small red circle") != target


def test_parse_partial_and_motion():
    assert w.parse_caption("an orange star") == frozenset({("exists", ("star", "orange", None))})
    facts = w.parse_caption("the big red circle moves to the left and the small blue square moves up")
    assert ("moves", ("circle", "red", "large"), "left") in facts
    assert ("moves", ("square", "blue", "small"), "up") in facts


# one text per kind of mistake: a word outside the grammar, no object, a relation without its second object
@pytest.mark.parametrize("text", ["a crimson circle", "", "a red circle left of"])
def test_parse_rejects_text_outside_grammar(text):
    with pytest.raises(ValueError, match="text"):
        w.parse_caption(text)


def test_scene_facts_and_facts_hold():
    s = w.Scene((w.Obj("circle", "red", "small", 0.2, 0.5), w.Obj("square", "blue", "large", 0.8, 0.45)))
    facts = w.scene_facts(s)
    assert len(facts) == 4
    assert w.facts_hold(facts, s)
    assert not w.facts_hold({("rel", ("circle", None, None), "right of", ("square", None, None))}, s)
    assert not w.facts_hold({("exists", ("star", None, None))}, s)


def test_desc_matches_treats_none_as_any_value():
    assert w.desc_matches(("circle", None, None), ("circle", "red", "small"))
    assert w.desc_matches((None, None, None), ("square", "blue", "large"))
    assert not w.desc_matches(("circle", "blue", None), ("circle", "red", "small"))


def test_question_answers_follow_the_scene(scenes):
    qs = w.questions(scenes, seed=5)
    assert {q.qtype for q in qs} == set(w.QUESTION_TYPES)
    for q, s in zip(qs, scenes):
        assert q.answer in w.ANSWERS
        words = q.text.rstrip("?").split()
        if q.qtype == "color":
            assert [o.color for o in s.objects if o.shape == words[-1]] == [q.answer]
        elif q.qtype == "shape":
            assert [o.shape for o in s.objects if o.color == words[-2]] == [q.answer]
        elif q.qtype == "count":
            expected = len(s) if words[2] == "objects" else sum(o.color == words[2] for o in s.objects)
            assert q.answer == str(expected)
        elif q.qtype == "exists":
            present = any(o.color == words[-2] and o.shape == words[-1] for o in s.objects)
            assert q.answer == ("yes" if present else "no")
        else:
            facts = w.parse_caption(q.text.removeprefix("is ").rstrip("?"))
            assert q.answer == ("yes" if w.facts_hold(facts, s) else "no")


def test_yes_no_answers_are_balanced(scenes):
    qs = w.questions(scenes, seed=1, qtypes=["exists", "relation"])
    yes = np.mean([q.answer == "yes" for q in qs])
    assert 0.4 < yes < 0.6


def test_ask_bad_type():
    s = w.sample_scenes(1, max_objects=1, seed=0)[0]
    with pytest.raises(ValueError, match="qtype"):
        w.ask(s, "relation")
    with pytest.raises(ValueError, match="qtypes"):
        w.questions([s], qtypes=["relation"])
    with pytest.raises(TypeError, match="scene"):
        w.ask("a red circle")


def test_sequences_move_as_captioned():
    seqs = w.sample_sequences(200, frames=6, max_objects=2, seed=2)
    video = w.render_sequences(seqs, size=32)
    assert video.shape == (200, 6, 32, 32, 3)
    for seq in seqs:
        facts = w.parse_caption(seq.caption)
        for (_, desc, direction), k in zip(sorted(f for f in facts if f[0] == "moves"), range(10)):
            idx = [o.desc for o in seq.scene.objects].index(desc)
            d = seq.positions[-1, idx] - seq.positions[0, idx]
            expected = {"left": d[0] < 0, "right": d[0] > 0, "up": d[1] < 0, "down": d[1] > 0}[direction]
            assert expected
        assert (seq.positions >= 0).all() and (seq.positions <= 1).all()


def test_bounce_stays_inside():
    seqs = w.sample_sequences(50, frames=40, speed=0.1, bounce=True, seed=0)
    for seq in seqs:
        r = w.RADIUS[seq.scene.objects[0].size]
        assert (seq.positions >= r - 1e-9).all() and (seq.positions <= 1 - r + 1e-9).all()


def test_audio_encodes_attributes():
    red_circle = w.Scene((w.Obj("circle", "red", "large", 0.5, 0.5),))
    red_star = w.Scene((w.Obj("star", "red", "large", 0.5, 0.5),))
    small = w.Scene((w.Obj("circle", "red", "small", 0.5, 0.5),))
    wave = w.synthesize_audio([red_circle, red_star, small], sample_rate=8000, duration=0.5)
    assert wave.shape == (3, 4000) and wave.dtype == np.float32 and np.abs(wave).max() <= 1
    spec = np.abs(np.fft.rfft(wave, axis=1))
    freqs = np.fft.rfftfreq(4000, 1 / 8000)
    assert abs(freqs[spec[0].argmax()] - _PITCH["circle"]) < 5
    assert abs(freqs[spec[1].argmax()] - _PITCH["star"]) < 5
    assert np.abs(wave[2]).max() < np.abs(wave[0]).max()


def test_spectrogram_shape():
    wave = w.synthesize_audio(w.sample_scenes(3, seed=0))
    spec = w.spectrogram(wave, n_fft=256, hop_length=64)
    assert spec.shape == (3, 129, 4000 // 64 + 1) and spec.dtype == torch.float32
    assert w.spectrogram(torch.from_numpy(wave[0])).shape == (129, 63)


def test_corpus_covers_vocabulary():
    words = {t for text in w.corpus(200) for t in text.lower().replace("?", " ").split()}
    assert set(w.vocabulary()) <= words


# --------------------------------------------------------------------------- #
# The relation swap
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("caption, swapped", [
    ("a red circle left of a blue square", "a red circle right of a blue square"),
    ("there is a big red circle to the right of a small blue square",
     "there is a big red circle to the left of a small blue square"),
    ("the red circle is above the blue square", "the red circle is below the blue square"),
    ("a red circle under a blue square", "a red circle over a blue square"),
    ("a red circle beneath a blue square", "a red circle above a blue square"),
    ("a red circle over a blue square", "a red circle under a blue square"),
])
def test_swap_relation(caption, swapped):
    assert w.swap_relation(caption) == swapped


def test_swap_relation_makes_generated_captions_false():
    scenes = w.sample_scenes(200, min_objects=2, max_objects=2, seed=3)
    for scene, caption in zip(scenes, w.captions(scenes, seed=4)):
        assert w.facts_hold(w.parse_caption(caption), scene)
        assert not w.facts_hold(w.parse_caption(w.swap_relation(caption)), scene)


def test_swap_relation_needs_a_whole_word_relation():
    with pytest.raises(ValueError, match="no relation"):
        w.swap_relation("a red circle leftover")


# --------------------------------------------------------------------------- #
# Cell labels
# --------------------------------------------------------------------------- #
def _loop_cell_labels(scenes, grid, attributes, values):
    """Reference: the label of every cell by a plain loop over cells and objects."""
    out = torch.zeros(len(scenes), grid * grid, dtype=torch.long)
    for i, s in enumerate(scenes):
        for cell in range(grid * grid):
            for o in s.objects:
                if (min(int(o.y * grid), grid - 1), min(int(o.x * grid), grid - 1)) == divmod(cell, grid):
                    index = 0
                    for a in attributes:
                        index = index * len(values[a]) + values[a].index(getattr(o, a))
                    out[i, cell] = 1 + index
    return out


@pytest.mark.parametrize("grid", [1, 3, 4])
@pytest.mark.parametrize("attributes", [("shape", "color", "size"), ("color",), ("size", "shape")])
def test_cell_labels_match_a_loop(scenes, grid, attributes):
    values = {"shape": w.SHAPES, "color": w.COLORS, "size": w.SIZES}
    few = scenes[:300]
    assert torch.equal(w.cell_labels(few, grid, attributes), _loop_cell_labels(few, grid, attributes, values))


def test_cell_labels_closed_form_and_allowed_values():
    s = w.Scene((w.Obj("star", "blue", "large", 0.9, 0.1), w.Obj("circle", "red", "small", 0.3, 0.6)))
    labels = w.cell_labels([s], 2)
    star = 1 + (w.SHAPES.index("star") * len(w.COLORS) + w.COLORS.index("blue")) * 2 + 1
    circle = 1 + (0 * len(w.COLORS) + 0) * 2 + 0
    assert labels.tolist() == [[0, star, circle, 0]] and labels.dtype == torch.long
    assert w.cell_labels([s], 2, ("color",)).tolist() == [[0, 1 + w.COLORS.index("blue"), 1, 0]]
    sub = w.cell_labels([s], 2, shapes=("star", "circle"), colors=("blue", "red"))
    assert sub.tolist() == [[0, 1 + (0 * 2 + 0) * 2 + 1, 1 + (1 * 2 + 1) * 2 + 0, 0]]
    with pytest.raises(ValueError, match="outside"):
        w.cell_labels([s], 2, shapes=("star",))
    # Two centres in one cell: the later object's label wins.
    shared = w.Scene((w.Obj("star", "blue", "large", 0.1, 0.1), w.Obj("circle", "red", "small", 0.4, 0.3)))
    assert w.cell_labels([shared], 2, ("color",)).tolist() == [[1 + w.COLORS.index("red"), 0, 0, 0]]


def test_decode_cell_label_inverts_cell_labels(scenes):
    few = scenes[:200]
    for attributes, kw in [(("shape", "color", "size"), {}), (("color", "size"), {"colors": w.COLORS[::-1]})]:
        labels = w.cell_labels(few, 4, attributes, **kw)
        decoded = w.decode_cell_label(labels, attributes, **kw)
        for a in attributes:
            assert torch.equal(decoded[a], w.cell_labels(few, 4, (a,), **kw))  # per-attribute labels
        for s, row in zip(few[:50], labels[:50].tolist()):
            found = [w.decode_cell_label(v, attributes, **kw) for v in row if v]
            assert sorted(map(str, found)) == sorted(str({a: getattr(o, a) for a in attributes}) for o in s.objects)
    assert w.decode_cell_label(0) is None
    assert w.decode_cell_label(1) == {"shape": w.SHAPES[0], "color": w.COLORS[0], "size": w.SIZES[0]}


# --------------------------------------------------------------------------- #
# Scene perturbations
# --------------------------------------------------------------------------- #
def test_swap_positions_reverses_the_relation_and_keeps_the_objects():
    scenes = w.sample_scenes(100, min_objects=2, max_objects=3, seed=5)
    for scene in scenes:
        swapped = w.swap_positions(scene, 0, 1)
        assert [o.desc for o in swapped.objects] == [o.desc for o in scene.objects]
        a, b = swapped.objects[0], swapped.objects[1]
        for o in (a, b):
            r = w.RADIUS[o.size]
            assert r <= o.x <= 1 - r and r <= o.y <= 1 - r
        if a.size == b.size:  # no border correction: the places are exchanged exactly
            assert (a.x, a.y, b.x, b.y) == (scene.objects[1].x, scene.objects[1].y,
                                            scene.objects[0].x, scene.objects[0].y)
            assert swapped.relation(0, 1) == scene.relation(1, 0)
        if len(scene) == 3:
            assert swapped.objects[2] == scene.objects[2]
        exact = w.swap_positions(scene, 1, 0, keep_inside=False).objects
        assert (exact[0].x, exact[0].y, exact[1].x, exact[1].y) == (scene.objects[1].x, scene.objects[1].y,
                                                                    scene.objects[0].x, scene.objects[0].y)


def test_swap_positions_moves_a_large_object_inside():
    s = w.Scene((w.Obj("circle", "red", "small", 0.13, 0.5), w.Obj("square", "blue", "large", 0.7, 0.5)))
    swapped = w.swap_positions(s)
    assert swapped.objects[1].x == w.RADIUS["large"] and swapped.objects[0].x == 0.7


def test_with_attribute_changes_one_attribute_in_place():
    s = w.Scene((w.Obj("circle", "red", "small", 0.2, 0.5), w.Obj("square", "blue", "large", 0.8, 0.45)))
    changed = w.with_attribute(s, 1, "color", "green")
    assert changed.objects == (s.objects[0], w.Obj("square", "green", "large", 0.8, 0.45))
    assert w.with_attribute(s, 0, "size", "large").objects[0].desc == ("circle", "red", "large")
    assert s.objects[1].color == "blue"  # scenes are immutable


# --------------------------------------------------------------------------- #
# Bad input: the checks the functions make themselves, one case per kind of mistake (the argument
# checks they share, such as sizes, seeds and choices, are tested once in test_checks.py)
# --------------------------------------------------------------------------- #
_SCENE = w.Scene((w.Obj("circle", "red", "small", 0.2, 0.5), w.Obj("square", "blue", "large", 0.8, 0.45)))


@pytest.mark.parametrize("call, error, match", [
    (lambda: w.caption("a red circle"), TypeError, "scene"),
    (lambda: w.caption(w.Scene(())), ValueError, "scene"),
    (lambda: w.facts_hold({("touches", None)}, _SCENE), ValueError, "facts"),
    (lambda: w.spectrogram(np.zeros(100, dtype=np.float32)), ValueError, "waveform"),
    (lambda: w.swap_positions(_SCENE, 0, 0), ValueError, "differ"),
])
def test_bad_input_names_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_drop_attributes_leaves_out_colour_and_size_words():
    caps = ["there is a big red circle", "a small green cross left of a large blue star"]
    assert w.drop_attributes(caps, 0.0) == caps
    assert w.drop_attributes(caps, 1.0) == ["there is a circle", "a cross left of a star"]
    scenes = w.sample_scenes(200, max_objects=2, seed=1)
    some = w.drop_attributes(w.captions(scenes, seed=2), 0.5, seed=3)
    assert some == w.drop_attributes(w.captions(scenes, seed=2), 0.5, seed=3)  # reproducible from the seed
    assert all(w.facts_hold(w.parse_caption(c), s) for c, s in zip(some, scenes))  # still true, says less
    named = [d for c in some for f in w.parse_caption(c) if f[0] == "exists" for d in [f[1]]]
    assert 0.3 < sum(d[1] is None for d in named) / len(named) < 0.7


def test_drop_attributes_bad_input():
    with pytest.raises(TypeError, match="captions"):
        w.drop_attributes("a red circle", 0.5)
    with pytest.raises(ValueError, match="p"):
        w.drop_attributes(["a red circle"], 1.5)
    with pytest.raises(TypeError, match="p"):
        w.drop_attributes(["a red circle"], "half")
