"""Tests of ShapesWorld: determinism, rendering, the caption grammar, questions, clips and sound."""
import numpy as np
import pytest
import torch

from mmutils import world as w


@pytest.fixture(scope="module")
def scenes():
    return w.sample_scenes(10_000, min_objects=1, max_objects=3, seed=7)


def test_vocabularies_are_large_enough():
    assert len(w.SHAPES) >= 5 and len(w.COLORS) >= 6 and len(w.SIZES) == 2
    assert set(w.RELATIONS) == {"left of", "right of", "above", "below"}
    assert len(set(w.ANSWERS)) == len(w.ANSWERS)


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
            r = w._RADIUS[a.size]
            assert r <= a.x <= 1 - r and r <= a.y <= 1 - r
            for b in s.objects[i + 1:]:
                assert np.hypot(a.x - b.x, a.y - b.y) >= r + w._RADIUS[b.size]


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


@pytest.mark.parametrize("text", ["a crimson circle", "a red ring", "left of", "", "a red circle left of"])
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
    with pytest.raises(ValueError, match="qtype"):
        w.ask(s, "colour")
    with pytest.raises(ValueError, match="qtypes"):
        w.questions([s], qtypes=["relation"])


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
        r = w._RADIUS[seq.scene.objects[0].size]
        assert (seq.positions >= r - 1e-9).all() and (seq.positions <= 1 - r + 1e-9).all()


def test_audio_encodes_attributes():
    red_circle = w.Scene((w.Obj("circle", "red", "large", 0.5, 0.5),))
    red_star = w.Scene((w.Obj("star", "red", "large", 0.5, 0.5),))
    small = w.Scene((w.Obj("circle", "red", "small", 0.5, 0.5),))
    wave = w.synthesize_audio([red_circle, red_star, small], sample_rate=8000, duration=0.5)
    assert wave.shape == (3, 4000) and wave.dtype == np.float32 and np.abs(wave).max() <= 1
    spec = np.abs(np.fft.rfft(wave, axis=1))
    freqs = np.fft.rfftfreq(4000, 1 / 8000)
    assert abs(freqs[spec[0].argmax()] - w._PITCH["circle"]) < 5
    assert abs(freqs[spec[1].argmax()] - w._PITCH["star"]) < 5
    assert np.abs(wave[2]).max() < np.abs(wave[0]).max()


def test_spectrogram_shape():
    wave = w.synthesize_audio(w.sample_scenes(3, seed=0))
    spec = w.spectrogram(wave, n_fft=256, hop_length=64)
    assert spec.shape == (3, 129, 4000 // 64 + 1) and spec.dtype == torch.float32
    assert w.spectrogram(torch.from_numpy(wave[0])).shape == (129, 63)


def test_corpus_covers_vocabulary():
    words = {t for text in w.corpus(200) for t in text.lower().replace("?", " ").split()}
    assert set(w.vocabulary()) <= words


@pytest.mark.parametrize("call, match", [
    (lambda: w.sample_scenes(-1), "n"),
    (lambda: w.sample_scenes(2.5), "n"),
    (lambda: w.sample_scenes(2, max_objects=0), "max_objects"),
    (lambda: w.sample_scenes(2, min_objects=3, max_objects=2), "min_objects"),
    (lambda: w.sample_scenes(2, colors=["red", "teal"]), "colors"),
    (lambda: w.sample_scenes(2, shapes=["hexagon"]), "shapes"),
    (lambda: w.sample_scenes(2, shapes="circle"), "shapes"),
    (lambda: w.render(w.sample_scenes(2), size=8), "size"),
    (lambda: w.render(w.sample_scenes(2), size=32.0), "size"),
    (lambda: w.render(w.sample_scenes(2), noise=2.0), "noise"),
    (lambda: w.render(["scene"]), "scenes"),
    (lambda: w.caption("a red circle"), "scene"),
    (lambda: w.parse_caption(3), "text"),
    (lambda: w.sample_sequences(2, frames=1), "frames"),
    (lambda: w.sample_sequences(2, speed=0.5), "speed"),
    (lambda: w.synthesize_audio(w.sample_scenes(1), duration=0.0), "duration"),
    (lambda: w.synthesize_audio(w.sample_scenes(1), sample_rate=10), "sample_rate"),
    (lambda: w.spectrogram([0.0] * 300), "waveform"),
    (lambda: w.spectrogram(np.zeros(100, dtype=np.float32)), "waveform"),
])
def test_bad_input_names_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
