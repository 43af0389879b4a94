"""Tests of mmutils.matching: hard negatives, retrieval keys, the ITM cross-encoder, re-ranking."""
import numpy as np
import pytest
import torch
from torch import nn

from mmutils import metrics, world
from mmutils import matching as M
from mmutils.nn.encoders import ConvTower, RNNTextEncoder

WORLD = dict(shapes=("circle", "square", "triangle"), colors=("red", "green", "blue"), sizes=("small", "large"))


def _pair(rel_dx=-0.5):
    a = world.Obj("circle", "red", "small", 0.5 + rel_dx / 2, 0.5)
    b = world.Obj("square", "blue", "large", 0.5 - rel_dx / 2, 0.5)
    return world.Scene((a, b))


# --------------------------------------------------------------------------- #
# Hard negatives
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("n_objects", [1, 2, 3])
def test_perturb_caption_is_false_and_of_the_asked_kind(n_objects):
    scenes = world.sample_scenes(30, min_objects=n_objects, max_objects=n_objects, seed=n_objects, **WORLD)
    rng = np.random.default_rng(0)
    for scene in scenes:
        for kind in M.NEGATIVE_KINDS:
            if kind == "relation" and n_objects == 1:
                continue
            text, got = M.perturb_caption(scene, rng, kinds=(kind,), **WORLD)
            assert got == kind
            assert not world.facts_hold(world.parse_caption(text), scene)
            words = set(text.split())
            assert words <= set(world.vocabulary())
            assert not words & ({"yellow", "purple", "orange", "star", "cross", "diamond"})  # stays in WORLD


def test_perturb_caption_changes_one_detail():
    scene = _pair()  # small red circle left of large blue square: the two differ in every attribute
    original = [o.desc for o in scene.objects]
    rng = np.random.default_rng(1)
    for kind in ("color", "shape", "size"):
        for _ in range(5):
            text, _ = M.perturb_caption(scene, rng, kinds=(kind,))
            descs = [f[1] for f in world.parse_caption(text) if f[0] == "exists"]
            kept = [d for d in descs if d in original]
            new = [d for d in descs if d not in original]
            assert len(kept) == 1 and len(new) == 1
            other = next(o for o in original if o != kept[0])
            changed = [a for a, x, y in zip(("shape", "color", "size"), new[0], other) if x != y]
            assert changed == [kind]
    text, _ = M.perturb_caption(scene, rng, kinds=("relation",))
    facts = world.parse_caption(text)
    assert {f[1] for f in facts if f[0] == "exists"} == set(original)  # same objects, other arrangement


def test_perturb_caption_is_reproducible_and_weights_kinds():
    scene = _pair()
    assert M.perturb_caption(scene, 3) == M.perturb_caption(scene, 3)
    rng = np.random.default_rng(0)
    kinds = [M.perturb_caption(scene, rng, p=(0, 0, 0, 1))[1] for _ in range(10)]
    assert kinds == ["relation"] * 10
    # a kind with a single allowed value is skipped: only relations are left
    kinds = [M.perturb_caption(scene, rng, colors=("red", "blue"), shapes=("circle", "square"),
                               sizes=("small", "large"), kinds=("color", "relation"))[1] for _ in range(20)]
    assert set(kinds) <= {"color", "relation"}


def test_hard_negative_captions():
    scenes = world.sample_scenes(12, min_objects=2, max_objects=2, seed=0, **WORLD)
    texts, kinds = M.hard_negative_captions(scenes, 0, **WORLD)
    assert len(texts) == len(kinds) == 12
    assert all(not world.facts_hold(world.parse_caption(t), s) for t, s in zip(texts, scenes))
    assert M.hard_negative_captions(scenes, 0, **WORLD) == (texts, kinds)
    # one rng, drawn in order: the same as perturbing scene after scene
    rng = np.random.default_rng(0)
    assert [M.perturb_caption(s, rng, **WORLD) for s in scenes] == list(zip(texts, kinds))


def test_perturb_caption_draws_match_a_reference_loop():
    # The notebooks' stored negatives depend on the order of the rng draws: kind, objects, caption wording.
    scene = _pair()
    for seed in range(5):
        text, kind = M.perturb_caption(scene, seed, kinds=("color", "relation"), p=(1, 3))
        ref = np.random.default_rng(seed)
        while True:
            kind_ref = ("color", "relation")[ref.choice(2, p=[0.25, 0.75])]
            if kind_ref == "relation":
                i, j = ref.choice(2, size=2, replace=False)
                new = world.swap_positions(scene, i, j, keep_inside=False)
            else:
                k = ref.integers(2)
                options = [c for c in world.COLORS if c != scene.objects[k].color]
                new = world.with_attribute(scene, k, "color", options[ref.integers(len(options))])
            expected = world.caption(new, rng=ref)
            if not world.facts_hold(world.parse_caption(expected), scene):
                break
        assert (text, kind) == (expected, kind_ref)


@pytest.mark.parametrize("call, error, match", [
    (lambda: M.perturb_caption("a red circle"), TypeError, "scene"),  # wrong type
    (lambda: M.perturb_caption(_pair(), p=(1, 1)), ValueError, "p must"),  # one weight per kind
    (lambda: M.perturb_caption(world.Scene((world.Obj("circle", "red", "small", 0.5, 0.5),)),
                               kinds=("relation",)), ValueError, "kinds"),  # nothing applies to the scene
])
def test_perturb_caption_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --------------------------------------------------------------------------- #
# Retrieval keys
# --------------------------------------------------------------------------- #
def test_caption_key_equals_scene_facts_exactly_when_true():
    scenes = world.sample_scenes(60, min_objects=2, max_objects=2, seed=4, **WORLD)
    captions = world.captions(scenes, seed=5)
    negatives, _ = M.hard_negative_captions(scenes, 6, **WORLD)
    image_keys = [world.scene_facts(s) for s in scenes]
    for text in captions + negatives:
        key, facts = M.caption_key(text), world.parse_caption(text)
        assert M.caption_key(facts) == key
        assert [key == k for k in image_keys] == [world.facts_hold(facts, s) for s in scenes]


def test_caption_key_closes_relations():
    left = M.caption_key("a small red circle left of a large blue square")
    right = M.caption_key("the large blue square is to the right of the little red circle")
    assert left == right == world.scene_facts(_pair())
    assert M.caption_key("a small red circle right of a large blue square") != left


def test_caption_key_bad_input():
    with pytest.raises(TypeError, match="text_or_facts"):
        M.caption_key(["a red circle"])


# --------------------------------------------------------------------------- #
# The cross-encoder
# --------------------------------------------------------------------------- #
def _cross(text_dim=16, dim=16):
    torch.manual_seed(0)
    return M.CrossEncoderITM(nn.Identity(), RNNTextEncoder(30, dim=8, hidden=text_dim // 2),
                             image_dim=12, text_dim=text_dim, grid=3, dim=dim, heads=2, head_channels=4,
                             hidden=16).eval()


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_cross_encoder_shapes(batch):
    model = _cross()
    regions = torch.randn(batch, 9, 12)
    ids = torch.randint(5, 30, (batch, 7))
    mask = torch.ones(batch, 7, dtype=torch.long)
    logits = model(regions, ids, mask)
    assert logits.shape == (batch,)
    tokens = model.encode_text(ids, mask)
    assert tokens.shape == (batch, 7, 16)
    logits2, attn = model.match(model.encode_image(regions), tokens, mask, return_attention=True)
    assert torch.allclose(logits, logits2)
    assert attn.shape == (batch, 9, 7)
    assert torch.allclose(attn.sum(-1), torch.ones(batch, 9), atol=1e-5)
    assert _cross(text_dim=16, dim=8)(regions, ids, mask).shape == (batch,)  # text projected to dim


def test_cross_encoder_ignores_padding_and_reads_the_image():
    model = _cross()
    regions = torch.randn(2, 9, 12)
    ids = torch.randint(5, 30, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.long)
    padded_ids = torch.cat([ids, torch.zeros(2, 3, dtype=torch.long)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(2, 3, dtype=torch.long)], dim=1)
    with torch.no_grad():
        plain = model(regions, ids, mask)
        padded, attn = model.match(regions, model.encode_text(padded_ids, padded_mask), padded_mask,
                                   return_attention=True)
        other = model(torch.randn(2, 9, 12), ids, mask)
    assert torch.allclose(plain, padded, atol=1e-5)
    assert torch.all(attn[:, :, 6:] == 0)
    assert not torch.allclose(plain, other)


def test_cross_encoder_with_a_cnn_tower_trains():
    torch.manual_seed(0)
    model = M.CrossEncoderITM(ConvTower(3, (4, 8), max_pool=True, out_dim=6), RNNTextEncoder(20, 8, 4),
                              image_dim=6, text_dim=8, grid=8, dim=8, heads=2)
    images = torch.rand(4, 3, 32, 32)
    ids = torch.randint(5, 20, (4, 5))
    loss = nn.functional.binary_cross_entropy_with_logits(model(images, ids), torch.tensor([1.0, 0, 1, 0]))
    loss.backward()
    assert model.cross_attn.in_proj_weight.grad is not None and model.image_encoder.proj.weight.grad is not None


def test_cross_encoder_bad_input():
    with pytest.raises(ValueError, match="text_mask"):
        _cross().match(torch.randn(2, 9, 12), torch.randn(2, 5, 16), torch.ones(2, 4))


def test_cross_encoder_bad_config():
    with pytest.raises(ValueError, match="heads"):  # inconsistent sizes
        M.CrossEncoderITM(nn.Identity(), RNNTextEncoder(30, 8, 8), image_dim=4, text_dim=16, grid=2, dim=10, heads=4)


# --------------------------------------------------------------------------- #
# Thresholds, pair scores, re-ranking
# --------------------------------------------------------------------------- #
def test_calibrate_threshold():
    scores = torch.tensor([0.1, 0.2, 0.35, 0.8, 0.9])
    labels = torch.tensor([0, 0, 0, 1, 1])
    t = M.calibrate_threshold(scores, labels)
    assert 0.35 < t < 0.8
    assert ((scores > t).long() == labels).all()
    # noisy labels: the chosen threshold is at least as good as every other candidate
    rng = torch.Generator().manual_seed(0)
    s = torch.rand(200, generator=rng)
    y = (s + 0.3 * torch.rand(200, generator=rng) > 0.6).long()
    best = ((s > M.calibrate_threshold(s, y)).long() == y).float().mean()
    assert all(best >= ((s > c).long() == y).float().mean() for c in torch.linspace(-0.1, 1.1, 61))
    assert M.calibrate_threshold(torch.tensor([0.5]), torch.tensor([1])) < 0.5


@pytest.mark.parametrize("scores, labels, accuracy", [
    ([1.0, 1.0, 1.0], [0, 1, 1], 2 / 3),  # one group of ties: all above (2/3), never "1/3 by a cut inside it"
    ([0.2, 0.5, 0.5, 0.5, 0.9], [0, 0, 1, 1, 1], 4 / 5),  # the best reachable cut is below the tied group
    ([0.1, 0.1, 0.4, 0.4, 0.8], [0, 0, 1, 0, 1], 4 / 5),
])
def test_calibrate_threshold_with_tied_scores(scores, labels, accuracy):
    s, y = torch.tensor(scores), torch.tensor(labels)
    t = M.calibrate_threshold(s, y)
    assert ((s > t).long() == y).float().mean().item() == pytest.approx(accuracy)
    # no threshold does better: try one below, between and above every distinct score
    values = sorted(set(scores))
    cuts = [values[0] - 1] + [(a + b) / 2 for a, b in zip(values, values[1:])] + [values[-1] + 1]
    assert max(((s > c).long() == y).float().mean().item() for c in cuts) == pytest.approx(accuracy)


@pytest.mark.parametrize("scores, labels, match", [
    (torch.rand(3), torch.tensor([0, 1]), "same"),
    (torch.rand(3), torch.tensor([0, 2, 1]), "labels"),
])
def test_calibrate_threshold_bad_input(scores, labels, match):
    with pytest.raises(ValueError, match=match):
        M.calibrate_threshold(scores, labels)


def test_pair_scores_chunks():
    table = torch.randn(5, 7)
    q = torch.randint(0, 5, (23,))
    g = torch.randint(0, 7, (23,))
    calls = []

    def score(qi, gi):
        calls.append(len(qi))
        return table[qi, gi]

    out = M.pair_scores(score, q, g, chunk=10)
    assert torch.equal(out, table[q, g]) and calls == [10, 10, 3]


def test_pair_scores_bad_input():
    q, g = torch.randint(0, 5, (23,)), torch.randint(0, 7, (23,))
    with pytest.raises(ValueError, match="score_fn"):  # not one score per pair
        M.pair_scores(lambda a, b: torch.zeros(1), q, g)


def test_rerank_reorders_only_the_top_k():
    torch.manual_seed(0)
    sim = torch.randn(6, 12)
    truth = torch.randn(6, 12)  # what the second scorer says
    out = M.rerank(sim, lambda q, g: truth[q, g], k=4)
    assert out.shape == sim.shape
    top = sim.topk(4, dim=1).indices
    new_top = out.topk(4, dim=1).indices
    for r in range(6):
        assert set(top[r].tolist()) == set(new_top[r].tolist())
        assert new_top[r].tolist() == sorted(top[r].tolist(), key=lambda j: -truth[r, j].item())
        rest_before = [j for j in sim[r].argsort(descending=True).tolist() if j not in top[r].tolist()]
        rest_after = out[r].argsort(descending=True).tolist()[4:]
        assert rest_before == rest_after
    assert torch.equal(M.rerank(sim, lambda q, g: truth[q, g], k=12).argsort(1, descending=True),
                       truth.argsort(1, descending=True))


def test_rerank_with_recall_at_k():
    # A first stage that puts the right item at rank 3 and a perfect second stage: R@1 goes from 0 to 1.
    n = 5
    sim = torch.zeros(n, n)
    for i in range(n):
        sim[i, (i + 1) % n], sim[i, (i + 2) % n], sim[i, i] = 3.0, 2.0, 1.0
    keys = list(range(n))
    assert metrics.recall_at_k(sim, keys, keys, ks=(1, 3))[1] == 0.0
    out = M.rerank(sim, lambda q, g: (q == g).float(), k=3)
    assert metrics.recall_at_k(out, keys, keys, ks=(1, 3)) == {1: 1.0, 3: 1.0}
    assert metrics.recall_at_k(M.rerank(sim, lambda q, g: (q == g).float(), k=2), keys, keys, ks=(1,))[1] == 0.0

