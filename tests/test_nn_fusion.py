"""Shape, mask, config and bad-input tests of mmutils.nn.fusion."""
import dataclasses

import pytest
import torch

from mmutils.nn import fusion as F


@pytest.mark.parametrize("batch", [1, 4])
def test_concat_fusion_fixes_the_width_mismatch(batch):
    # The classic bug: 2048-d image + 256-d text features into a layer expecting 512.
    feats = [torch.randn(batch, 2048), torch.randn(batch, 256)]
    fused = F.ConcatFusion((2048, 256), width=32, hidden=16, out_dim=5)
    assert fused(feats).shape == (batch, 5)
    # present = (1, 0): the text is zeroed after its projection, so it cannot matter
    present = torch.tensor([[1, 0]] * batch)
    other = [feats[0], 100 * torch.randn(batch, 256)]
    torch.testing.assert_close(fused(feats, present), fused(other, present))


@pytest.mark.parametrize("mode", ["mean", "learned"])
def test_late_fusion_combines_votes(mode):
    late = F.LateFusion((6, 4), hidden=8, out_dim=3, mode=mode)
    torch.nn.init.normal_(late.weight_logits)
    feats = [torch.randn(5, 6), torch.randn(5, 4)]
    per = late.per_modality(feats)
    assert per.shape == (2, 5, 3)
    w = torch.ones(2) / 2 if mode == "mean" else late.weight_logits.softmax(0)
    torch.testing.assert_close(late(feats), (w[:, None, None] * per).sum(0))
    only_first = late(feats, present=torch.tensor([[1, 0]] * 5))
    torch.testing.assert_close(only_first, per[0])


@pytest.mark.parametrize("batch", [1, 3])
def test_cross_attention_shapes_and_padding(batch):
    torch.manual_seed(0)
    fusion = F.CrossAttentionFusion(dim=16, heads=2, layers=2).eval()
    text, image = torch.randn(batch, 5, 16), torch.randn(batch, 9, 16)
    mask = torch.ones(batch, 5, dtype=torch.bool)
    fused, attn = fusion(text, image, mask)
    assert fused.shape == (batch, 5, 16) and attn.shape == (batch, 5, 9)
    assert torch.allclose(attn.sum(-1), torch.ones(batch, 5), atol=1e-5)
    text_pad = torch.cat([text, torch.randn(batch, 3, 16)], dim=1)
    mask_pad = torch.cat([mask, torch.zeros(batch, 3, dtype=torch.bool)], dim=1)
    fused_pad, _ = fusion(text_pad, image, mask_pad)
    assert torch.allclose(fused, fused_pad[:, :5], atol=1e-5)
    # masked-out regions get no attention and do not matter
    image_mask = torch.ones(batch, 9, dtype=torch.bool)
    image_mask[:, 6:] = False
    out, attn = fusion(text, image, mask, image_mask)
    assert torch.equal(attn[..., 6:], torch.zeros(batch, 5, 3))
    junk = torch.cat([image[:, :6], 100 * torch.randn(batch, 3, 16)], dim=1)
    torch.testing.assert_close(fusion(text, junk, mask, image_mask)[0], out)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: F.ConcatFusion((4, 3))([torch.randn(2, 4)]), ValueError, "features"),
    (lambda: F.ConcatFusion((4, 4))(torch.randn(2, 2, 4)), TypeError, "features must be a list or tuple"),
    (lambda: F.CrossAttentionFusion(16, 3), ValueError, "heads"),
])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# --------------------------------------------------------------------------- #
# modality_dropout
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("batch, m", [(1, 1), (7, 2), (64, 3)])
def test_modality_dropout_shapes_and_keeps_one(batch, m):
    gen = torch.Generator().manual_seed(0)
    present = F.modality_dropout(batch, m, 0.9, generator=gen)
    assert present.shape == (batch, m) and present.dtype == torch.bool
    assert present.any(dim=1).all()  # never all dropped
    assert F.modality_dropout(batch, m, 0.0, generator=gen).all()  # p = 0 keeps everything


def test_modality_dropout_rate_and_determinism():
    a = F.modality_dropout(20000, 2, 0.3, generator=torch.Generator().manual_seed(1))
    b = F.modality_dropout(20000, 2, 0.3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    # each modality is dropped with probability 0.3, except that rows losing both keep one (0.3^2 / 2 = 0.045)
    assert abs((~a).float().mean().item() - (0.3 - 0.045)) < 0.015


def test_modality_dropout_bad_input():
    with pytest.raises(ValueError, match="p must"):  # p = 1 would drop everything
        F.modality_dropout(4, 2, 1.0)


# --------------------------------------------------------------------------- #
# FusionClassifier
# --------------------------------------------------------------------------- #
VOCAB, DIMS = 30, {"image": 12, "audio": 8}
SMALL = dict(dim=16, hidden=16, heads=2, max_len=10)


def _inputs(batch, length=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[:, length - 2:] = False  # the last two positions are padding
    ids[~mask] = 0
    tokens = {"image": torch.randn(batch, 16, 12, generator=g), "audio": torch.randn(batch, 2, 8, generator=g)}
    return ids, mask, tokens


_MODELS = {}  # the models are only evaluated, never changed: build each configuration once


def _model(strategy, **kw):
    key = (strategy, tuple(sorted(kw.items())))
    if key not in _MODELS:
        torch.manual_seed(0)
        model = F.FusionClassifier(VOCAB, DIMS, 5, strategy, **{**SMALL, **kw}).eval()
        if strategy == "film":  # FiLM starts as the identity; give it some modulation to test
            for films in model.film.values():
                for film in films:
                    torch.nn.init.normal_(film.to_gamma_beta.weight, std=0.3)
        _MODELS[key] = model
    return _MODELS[key]


ALL = [(s, kw) for s in F.STRATEGIES for kw in ({"text_layers": 0}, {"text_layers": 1})] + [
    ("late", {"late_mode": "learned"}), ("early", {"pool": "mean"})]


def test_fusion_config_and_keywords_build_the_same_model():
    cfg = F.FusionConfig(dim=16, hidden=8, heads=2, text_layers=0, film_layers=1)
    torch.manual_seed(0)
    a = F.FusionClassifier(VOCAB, DIMS, 5, "film", cfg)
    torch.manual_seed(0)
    b = F.FusionClassifier(VOCAB, DIMS, 5, "film", dim=16, hidden=8, heads=2, text_layers=0, film_layers=1)
    torch.manual_seed(0)
    c = F.FusionClassifier(VOCAB, DIMS, 5, "film", config=dataclasses.replace(cfg, hidden=4), hidden=8)
    assert a.config == b.config == c.config == cfg
    for other in (b, c):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), other.state_dict().values()))
    assert F.FusionClassifier(VOCAB, DIMS, 5).config == F.FusionConfig()


@pytest.mark.parametrize("strategy, kw", ALL)
@pytest.mark.parametrize("batch", [1, 3])
def test_fusion_classifier_shapes(strategy, kw, batch):
    model = _model(strategy, **kw)
    ids, mask, tokens = _inputs(batch)
    logits = model(ids, mask, tokens)
    assert logits.shape == (batch, 5) and torch.isfinite(logits).all()
    if strategy == "cross":
        assert model.last_attention.shape == (batch, 6, 18)


@pytest.mark.parametrize("strategy, kw", ALL)
def test_fusion_classifier_ignores_text_padding(strategy, kw):
    model = _model(strategy, **kw)
    ids, mask, tokens = _inputs(4)
    out = model(ids, mask, tokens)
    longer_ids = torch.cat([ids, torch.randint(5, VOCAB, (4, 3))], dim=1)  # more padding, with junk ids
    longer_mask = torch.cat([mask, torch.zeros(4, 3, dtype=torch.bool)], dim=1)
    assert torch.allclose(model(longer_ids, longer_mask, tokens), out, atol=1e-5)
    assert torch.allclose(model(ids[:, :4], mask[:, :4], tokens), out, atol=1e-5)


@pytest.mark.parametrize("strategy, kw", ALL)
def test_fusion_classifier_missing_modality_is_ignored(strategy, kw):
    model = _model(strategy, **kw)
    ids, mask, tokens = _inputs(4)
    present = torch.tensor([[True, False]] * 4)  # audio missing
    out = model(ids, mask, tokens, present)
    other = dict(tokens, audio=100 * torch.randn(4, 2, 8))
    assert torch.allclose(model(ids, mask, other, present), out, atol=1e-5)
    assert not torch.allclose(model(ids, mask, other), model(ids, mask, tokens), atol=1e-5)
    nothing = torch.zeros(4, 2, dtype=torch.bool)  # only the text left: still finite
    assert torch.isfinite(model(ids, mask, tokens, nothing)).all()


def test_fusion_classifier_late_votes_combine():
    model = _model("late")
    ids, mask, tokens = _inputs(3)
    votes = model.votes(ids, mask, tokens)
    assert votes.shape == (3, 3, 5)  # (text + 2 modalities, B, K)
    assert torch.allclose(model(ids, mask, tokens), votes.mean(0), atol=1e-5)
    only_text = model(ids, mask, tokens, torch.zeros(3, 2, dtype=torch.bool))
    assert torch.allclose(only_text, votes[0], atol=1e-5)
    with pytest.raises(ValueError, match="votes needs strategy='late'"):
        _model("film").votes(ids, mask, tokens)


def test_fusion_classifier_late_mean_is_the_geometric_mean_of_the_votes():
    # Averaging logits = the product rule: softmax(mean of logits) is the normalized geometric mean of the votes'
    # probabilities, also when some votes are missing (they are left out of the mean).
    model = _model("late")
    ids, mask, tokens = _inputs(4)
    present = torch.tensor([[True, True], [True, False], [False, True], [False, False]])
    probs = model.votes(ids, mask, tokens).softmax(-1)  # (3, 4, 5)
    there = torch.cat([torch.ones(4, 1, dtype=torch.bool), present], dim=1).t()  # (3, 4)
    expected = []
    for b in range(4):
        p = probs[there[:, b], b].prod(0) ** (1 / int(there[:, b].sum()))  # geometric mean of the present votes
        expected.append(p / p.sum())
    torch.testing.assert_close(model(ids, mask, tokens, present).softmax(-1), torch.stack(expected))


def test_fusion_classifier_late_votes_share_no_parameters():
    # A loss on one vote reaches only that vote's parameters, so the sum of per-vote losses trains each vote as if
    # it were alone (late fusion proper); a loss on the combined output reaches all of them.
    torch.manual_seed(0)
    model = F.FusionClassifier(VOCAB, DIMS, 5, "late", **SMALL, text_layers=0)
    ids, mask, tokens = _inputs(4)
    y = torch.tensor([0, 1, 2, 3])
    owners = [["text.", "fuse.heads.0."], ["adapters.image.", "fuse.heads.1."], ["adapters.audio.", "fuse.heads.2."]]
    for i, own in enumerate(owners):
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model.votes(ids, mask, tokens)[i], y).backward()
        reached = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        assert reached and all(any(n.startswith(o) for o in own) for n in reached), (i, sorted(reached))
    model.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(ids, mask, tokens), y).backward()
    reached = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert all(any(n.startswith(o) for own in owners for o in own) for n in reached)
    assert {n.split(".")[0] for n in reached} == {"text", "adapters", "fuse"}


def test_fusion_classifier_film_matches_a_plain_implementation():
    # Reference: per modality, film_layers times h = relu((1 + gamma(q)) * LN(W h) + beta(q)); max over tokens;
    # zero if missing; concatenated with q; MLP. Written with explicit loops over examples and tokens.
    model = _model("film", text_layers=0)
    ids, mask, tokens = _inputs(3)
    present = torch.tensor([[True, True], [False, True], [True, False]])
    _, q = model.text(ids, mask)
    rows = []
    for b in range(3):
        parts = [q[b]]
        for i, k in enumerate(model.names):
            h = model.adapters[k](tokens[k][b])  # (N, dim)
            for linear, film in zip(model.film_linear[k], model.film[k]):
                gamma, beta = film.to_gamma_beta(q[b]).chunk(2)
                z = linear(h)
                z = (z - z.mean(-1, keepdim=True)) / torch.sqrt(z.var(-1, unbiased=False, keepdim=True) + 1e-5)
                h = torch.stack([torch.relu((1 + gamma) * z[n] + beta) for n in range(len(z))])
            parts.append(h.max(dim=0).values if present[b, i] else torch.zeros(model.dim))
        rows.append(model.head(torch.cat(parts)))
    torch.testing.assert_close(model(ids, mask, tokens, present), torch.stack(rows))


def test_fusion_classifier_late_is_additive_deep_is_not():
    # Late fusion's logits are a sum of a text-only and an image-only part, so for two questions q1, q2 and two
    # images v1, v2: f(q1, v1) + f(q2, v2) - f(q1, v2) - f(q2, v1) = 0. That is why it cannot bind. Deep fusion
    # has an interaction term.
    ids, mask, tokens = _inputs(2)
    q1, q2, m = ids[:1], ids[1:], mask[:1]
    v1, v2 = {"image": tokens["image"][:1]}, {"image": tokens["image"][1:]}
    for strategy in F.STRATEGIES:
        torch.manual_seed(0)
        model = F.FusionClassifier(VOCAB, {"image": 12}, 5, strategy, **SMALL)
        if strategy == "film":
            for films in model.film.values():
                for film in films:
                    torch.nn.init.normal_(film.to_gamma_beta.weight, std=0.3)
        model.eval()
        interaction = model(q1, m, v1) + model(q2, m, v2) - model(q1, m, v2) - model(q2, m, v1)
        if strategy == "late":
            assert torch.allclose(interaction, torch.zeros_like(interaction), atol=1e-5)
        else:
            assert interaction.abs().max() > 1e-4, strategy


@pytest.mark.parametrize("call, exc, match", [
    (lambda: F.FusionClassifier(VOCAB, {}, 5), ValueError, "token_dims"),
    (lambda: F.FusionClassifier(VOCAB, DIMS, 5, dim=30, heads=4), ValueError, "divisible"),
])
def test_fusion_classifier_bad_config(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def _bad_calls():
    ids, mask, tokens = _inputs(3)
    return [
        (lambda m: m(ids.float(), mask, tokens), TypeError, "ids must be an integer"),
        (lambda m: m(ids + VOCAB, mask, tokens), ValueError, r"ids must lie in \[0, 30\)"),
        (lambda m: m(ids, mask[:, :4], tokens), ValueError, r"mask must have shape \(3, 6\), got \(3, 4\)"),
        (lambda m: m(ids, mask, {"image": tokens["image"]}), ValueError, r"tokens must be a dict with keys"),
        (lambda m: m(torch.zeros(3, 12, dtype=torch.long), None, tokens), ValueError, "max_len"),
    ]


@pytest.mark.parametrize("index", range(5))
def test_fusion_classifier_bad_input(index):
    call, exc, match = _bad_calls()[index]
    with pytest.raises(exc, match=match):
        call(_model("cross", text_layers=0))
