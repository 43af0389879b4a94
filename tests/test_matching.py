"""Tests of mmutils.matching: hard negatives, retrieval keys, the ITM cross-encoder, re-ranking."""
import numpy as np
import pytest
import torch
from torch import nn

from mmutils import clip, encoders, metrics, world
from mmutils import matching as M

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


@pytest.mark.parametrize("call, error, match", [
    (lambda: M.perturb_caption("a red circle"), TypeError, "scene"),
    (lambda: M.perturb_caption(_pair(), kinds=("texture",)), ValueError, "kinds"),
    (lambda: M.perturb_caption(_pair(), p=(1, 1)), ValueError, "p must"),
    (lambda: M.perturb_caption(_pair(), p=(0, 0, 0, 0)), ValueError, "p must"),
    (lambda: M.perturb_caption(_pair(), rng="seed"), TypeError, "rng"),
    (lambda: M.perturb_caption(_pair(), colors=("pink",)), ValueError, "colors"),
    (lambda: M.perturb_caption(world.Scene((world.Obj("circle", "red", "small", 0.5, 0.5),)),
                               kinds=("relation",)), ValueError, "kinds"),
    (lambda: M.hard_negative_captions(_pair()), TypeError, "scenes"),
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
    with pytest.raises(ValueError):
        M.caption_key("a red banana")


# --------------------------------------------------------------------------- #
# Region labels
# --------------------------------------------------------------------------- #
def test_region_labels():
    labels = M.region_labels([_pair(), _pair(0.5)], grid=4, **WORLD)
    assert labels.shape == (2, 16) and labels.dtype == torch.long
    circle = 1 + (WORLD["shapes"].index("circle") * 3 + WORLD["colors"].index("red")) * 2 + 0
    square = 1 + (WORLD["shapes"].index("square") * 3 + WORLD["colors"].index("blue")) * 2 + 1
    # scene 0: circle at x=0.25, square at x=0.75, both at y=0.5 (row 2)
    assert labels[0, 2 * 4 + 1] == circle and labels[0, 2 * 4 + 3] == square
    assert (labels[0] > 0).sum() == 2 and labels[1, 2 * 4 + 3] == circle
    assert M.region_labels([_pair()], grid=2).shape == (1, 4)
    assert int(M.region_labels([_pair()]).max()) <= 1 + len(world.SHAPES) * len(world.COLORS) * len(world.SIZES)


def test_region_labels_bad_input():
    with pytest.raises(ValueError, match="grid"):
        M.region_labels([_pair()], grid=0)
    with pytest.raises(TypeError, match="scenes"):
        M.region_labels(_pair())
    with pytest.raises(ValueError, match="outside"):
        M.region_labels([_pair()], shapes=("triangle",))


# --------------------------------------------------------------------------- #
# The cross-encoder
# --------------------------------------------------------------------------- #
def _cross(text_dim=16, dim=16):
    torch.manual_seed(0)
    return M.CrossEncoderITM(nn.Identity(), encoders.RNNTextEncoder(30, dim=8, hidden=text_dim // 2),
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
    model = M.CrossEncoderITM(encoders.SpatialCNN(widths=(4, 8), out_dim=6), encoders.RNNTextEncoder(20, 8, 4),
                              image_dim=6, text_dim=8, grid=8, dim=8, heads=2)
    images = torch.rand(4, 3, 32, 32)
    ids = torch.randint(5, 20, (4, 5))
    loss = nn.functional.binary_cross_entropy_with_logits(model(images, ids), torch.tensor([1.0, 0, 1, 0]))
    loss.backward()
    assert model.cross_attn.in_proj_weight.grad is not None and model.image_encoder.proj.weight.grad is not None


@pytest.mark.parametrize("call, error, match", [
    (lambda m: m.match(torch.randn(2, 9), torch.randn(2, 5, 16)), ValueError, "image_tokens"),
    (lambda m: m.match(torch.randn(2, 8, 12), torch.randn(2, 5, 16)), ValueError, "image_tokens"),
    (lambda m: m.match(torch.randn(2, 9, 11), torch.randn(2, 5, 16)), ValueError, "image_tokens"),
    (lambda m: m.match(torch.randn(2, 9, 12), torch.randn(2, 5, 15)), ValueError, "text_tokens"),
    (lambda m: m.match(torch.randn(2, 9, 12), torch.randn(3, 5, 16)), ValueError, "batch size"),
    (lambda m: m.match(torch.randn(2, 9, 12), torch.randn(2, 5, 16), torch.ones(2, 4)), ValueError, "text_mask"),
    (lambda m: m(torch.randn(2, 9, 12), torch.randint(5, 30, (3, 5))), ValueError, "batch size"),
    (lambda m: m.encode_image(torch.randn(2, 9, 7)), ValueError, "image_encoder"),
])
def test_cross_encoder_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call(_cross())


def test_cross_encoder_bad_config():
    text = encoders.RNNTextEncoder(30, 8, 8)
    with pytest.raises(ValueError, match="heads"):
        M.CrossEncoderITM(nn.Identity(), text, image_dim=4, text_dim=16, grid=2, dim=10, heads=4)
    with pytest.raises(ValueError, match="grid"):
        M.CrossEncoderITM(nn.Identity(), text, image_dim=4, text_dim=16, grid=0)
    with pytest.raises(TypeError, match="text_encoder"):
        M.CrossEncoderITM(nn.Identity(), "gru", image_dim=4, text_dim=16, grid=2)


def test_dual_encoder_is_the_clip_one():
    assert M.DualEncoder is clip.DualEncoder


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


@pytest.mark.parametrize("scores, labels, match", [
    (torch.rand(3), torch.tensor([0, 1]), "same"),
    (torch.rand(3, 1), torch.tensor([0, 1, 1]), "1-D"),
    (torch.rand(3), torch.tensor([0, 2, 1]), "labels"),
    (torch.rand(0), torch.zeros(0), "non-zero"),
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
    with pytest.raises(ValueError, match="same shape"):
        M.pair_scores(score, q, g[:5])
    with pytest.raises(ValueError, match="chunk"):
        M.pair_scores(score, q, g, chunk=0)
    with pytest.raises(TypeError, match="query_idx"):
        M.pair_scores(score, q.float(), g)
    with pytest.raises(ValueError, match="one score per pair"):
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


def test_rerank_bad_input():
    with pytest.raises(ValueError, match="k must"):
        M.rerank(torch.randn(2, 3), lambda q, g: q.float(), k=4)
    with pytest.raises(ValueError, match="k must"):
        M.rerank(torch.randn(2, 3), lambda q, g: q.float(), k=0)
    with pytest.raises(ValueError, match="similarity"):
        M.rerank(torch.randn(3), lambda q, g: q.float(), k=1)
