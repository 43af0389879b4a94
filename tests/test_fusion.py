"""Shape, mask and bad-input tests of the fusion modules."""
import pytest
import torch

from mmutils import fusion as F


@pytest.mark.parametrize("batch", [1, 4])
def test_concat_fusion_fixes_the_width_mismatch(batch):
    # The classic bug: 2048-d image + 256-d text features into a layer expecting 512.
    feats = [torch.randn(batch, 2048), torch.randn(batch, 256)]
    with pytest.raises(RuntimeError):
        torch.nn.Linear(512, 256)(torch.cat(feats, dim=1))
    fused = F.ConcatFusion((2048, 256), width=32, hidden=16, out_dim=5)
    assert fused(feats).shape == (batch, 5)
    present = torch.tensor([[1, 0]] * batch)
    assert fused(feats, present).shape == (batch, 5)


@pytest.mark.parametrize("mode", ["mean", "learned"])
def test_late_fusion_combines_votes(mode):
    late = F.LateFusion((6, 4), hidden=8, out_dim=3, mode=mode)
    feats = [torch.randn(5, 6), torch.randn(5, 4)]
    per = late.per_modality(feats)
    assert per.shape == (2, 5, 3)
    assert torch.allclose(late(feats), per.mean(0), atol=1e-6)
    only_first = late(feats, present=torch.tensor([[1, 0]] * 5))
    assert torch.allclose(only_first, per[0], atol=1e-6)


def test_film_starts_as_identity_and_modulates():
    film = F.FiLM(cond_dim=5, channels=3)
    x, cond = torch.randn(2, 3, 4, 4), torch.randn(2, 5)
    assert torch.equal(film(x, cond), x)
    torch.nn.init.normal_(film.to_gamma_beta.weight)
    assert film(x, cond).shape == x.shape
    assert film(torch.randn(2, 7, 3), cond).shape == (2, 7, 3)
    assert not torch.allclose(film(x, cond), x)


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
    assert torch.allclose(fusion.pooled(fused, mask), fusion.pooled(fused_pad, mask_pad), atol=1e-5)


def test_attention_pooling_ignores_padding():
    pool = F.AttentionPooling(4, hidden=8)
    x = torch.randn(2, 3, 4)
    out, w = pool(x, torch.ones(2, 3))
    x_pad = torch.cat([x, 100 * torch.randn(2, 2, 4)], dim=1)
    out_pad, w_pad = pool(x_pad, torch.tensor([[1, 1, 1, 0, 0]] * 2))
    assert torch.allclose(out, out_pad, atol=1e-5) and torch.allclose(w_pad[:, 3:], torch.zeros(2, 2))
    assert torch.allclose(w.sum(1), torch.ones(2))


@pytest.mark.parametrize("call, match", [
    (lambda: F.ConcatFusion((4, 3))([torch.randn(2, 4)]), "features"),
    (lambda: F.ConcatFusion((4, 3))([torch.randn(2, 4), torch.randn(2, 5)]), r"features\[1\]"),
    (lambda: F.ConcatFusion((4, 3))([torch.randn(2, 4), torch.randn(3, 3)]), "batch size"),
    (lambda: F.LateFusion((4,), mode="max"), "mode"),
    (lambda: F.LateFusion((4, 3))([torch.randn(2, 4), torch.randn(2, 3)], torch.ones(2, 3)), "present"),
    (lambda: F.FiLM(5, 3)(torch.randn(2, 4, 4, 4), torch.randn(2, 5)), "channels"),
    (lambda: F.FiLM(5, 3)(torch.randn(2, 3, 4, 4), torch.randn(3, 5)), "batch size"),
    (lambda: F.FiLM(5, 3)(torch.randn(2, 3), torch.randn(2, 5)), "x must"),
    (lambda: F.FiLM(5, 3)(torch.randn(2, 3, 4, 4), torch.randn(2, 6)), "cond"),
    (lambda: F.CrossAttentionFusion(16, 2)(torch.randn(2, 5, 16), torch.randn(3, 4, 16)), "batch size"),
    (lambda: F.CrossAttentionFusion(16, 2)(torch.randn(2, 5, 16), torch.randn(2, 4, 8)), "image_tokens"),
    (lambda: F.CrossAttentionFusion(16, 2)(torch.randn(2, 5), torch.randn(2, 4, 16)), "text_tokens"),
    (lambda: F.CrossAttentionFusion(16, 3), "heads"),
    (lambda: F.AttentionPooling(4)(torch.randn(2, 3, 5)), "x"),
])
def test_bad_input(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
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


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(batch_size=0, n_modalities=2, p=0.1), ValueError, "batch_size"),
    (dict(batch_size=4, n_modalities=0, p=0.1), ValueError, "n_modalities"),
    (dict(batch_size=4, n_modalities=2, p=1.0), ValueError, "p must"),
    (dict(batch_size=4, n_modalities=2, p=-0.1), ValueError, "p must"),
    (dict(batch_size=4, n_modalities=2, p=0.1, generator=3), TypeError, "generator"),
])
def test_modality_dropout_bad_input(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        F.modality_dropout(**kwargs)


# --------------------------------------------------------------------------- #
# FusionClassifier
# --------------------------------------------------------------------------- #
VOCAB, DIMS = 30, {"image": 12, "audio": 8}


def _inputs(batch, length=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[:, length - 2:] = False  # the last two positions are padding
    ids[~mask] = 0
    tokens = {"image": torch.randn(batch, 16, 12, generator=g), "audio": torch.randn(batch, 2, 8, generator=g)}
    return ids, mask, tokens


def _model(strategy, **kw):
    key = (strategy, tuple(sorted(kw.items())))
    if key not in _MODELS:
        _MODELS[key] = _build(strategy, **kw)
    return _MODELS[key]


_MODELS = {}  # the models are only evaluated, never changed: build each configuration once


def _build(strategy, **kw):
    torch.manual_seed(0)
    model = F.FusionClassifier(VOCAB, DIMS, 5, strategy, dim=16, hidden=16, heads=2, max_len=10, **kw).eval()
    if strategy == "film":  # FiLM starts as the identity; give it some modulation to test
        for films in model.film.values():
            for film in films:
                torch.nn.init.normal_(film.to_gamma_beta.weight, std=0.3)
    return model


ALL = [(s, kw) for s in F.STRATEGIES for kw in ({"text_layers": 0}, {"text_layers": 1})] + [
    ("late", {"late_mode": "learned"}), ("early", {"pool": "mean"})]


@pytest.mark.parametrize("strategy, kw", ALL)
@pytest.mark.parametrize("batch", [1, 3, 8])
def test_fusion_classifier_shapes(strategy, kw, batch):
    model = _model(strategy, **kw)
    ids, mask, tokens = _inputs(batch)
    logits = model(ids, mask, tokens)
    assert logits.shape == (batch, 5) and torch.isfinite(logits).all()
    present = torch.tensor([[True, False]] * batch)
    assert model(ids, mask, tokens, present).shape == (batch, 5)
    if strategy == "cross":
        assert model.last_attention.shape == (batch, 6, 18)


@pytest.mark.parametrize("strategy, kw", ALL)
def test_fusion_classifier_ignores_text_padding(strategy, kw):
    model = _model(strategy, **kw)
    ids, mask, tokens = _inputs(4)
    out = model(ids, mask, tokens)
    longer_ids = torch.cat([ids, torch.randint(5, VOCAB, (4, 3))], dim=1)  # more padding, with junk ids
    longer_mask = torch.cat([mask, torch.zeros(4, 3, dtype=torch.bool)], dim=1)
    if kw.get("text_layers") == 1 or strategy == "cross":  # attention: junk under the mask must not matter
        assert torch.allclose(model(longer_ids, longer_mask, tokens), out, atol=1e-5)
    else:  # embeddings + masked mean
        assert torch.allclose(model(ids[:, :4], mask[:, :4], tokens), out, atol=1e-5)
        assert torch.allclose(model(longer_ids, longer_mask, tokens), out, atol=1e-5)


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


def test_fusion_classifier_late_is_additive_deep_is_not():
    # Late fusion's logits are a sum of a text-only and an image-only part, so for two questions q1, q2 and two
    # images v1, v2: f(q1, v1) + f(q2, v2) - f(q1, v2) - f(q2, v1) = 0. That is why it cannot bind. Deep fusion
    # has an interaction term.
    ids, mask, tokens = _inputs(2)
    q1, q2, m = ids[:1], ids[1:], mask[:1]
    v1, v2 = {"image": tokens["image"][:1]}, {"image": tokens["image"][1:]}
    for strategy in F.STRATEGIES:
        torch.manual_seed(0)
        model = F.FusionClassifier(VOCAB, {"image": 12}, 5, strategy, dim=16, hidden=16, heads=2, max_len=10)
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
    (lambda: F.FusionClassifier(VOCAB, DIMS, 5, "middle"), ValueError, "strategy"),
    (lambda: F.FusionClassifier(VOCAB, {}, 5), ValueError, "token_dims"),
    (lambda: F.FusionClassifier(VOCAB, {"image": 0}, 5), ValueError, "token_dims"),
    (lambda: F.FusionClassifier(VOCAB, DIMS, 1), ValueError, "num_classes"),
    (lambda: F.FusionClassifier(VOCAB, DIMS, 5, dim=30, heads=4), ValueError, "divisible"),
    (lambda: F.FusionClassifier(VOCAB, DIMS, 5, late_mode="max"), ValueError, "late_mode"),
    (lambda: F.FusionClassifier(VOCAB, DIMS, 5, pool="sum"), ValueError, "pool"),
    (lambda: F.FusionClassifier(VOCAB, DIMS, 5, film_layers=0), ValueError, "film_layers"),
])
def test_fusion_classifier_bad_config(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def _bad_calls():
    ids, mask, tokens = _inputs(3)
    return [
        (lambda m: m(ids.float(), mask, tokens), TypeError, "ids must be an integer"),
        (lambda m: m(ids[0], mask, tokens), ValueError, r"ids must have 2 dimensions, got shape \(6,\)"),
        (lambda m: m(ids + VOCAB, mask, tokens), ValueError, r"ids must lie in \[0, 30\)"),
        (lambda m: m(ids, mask[:, :4], tokens), ValueError, r"mask must have shape \(3, 6\), got \(3, 4\)"),
        (lambda m: m(ids, mask, {"image": tokens["image"]}), ValueError, r"tokens must be a dict with keys"),
        (lambda m: m(ids, mask, dict(tokens, image=tokens["image"][:2])), ValueError,
         r"tokens\['image'\] must have the batch size of ids \(3\), got shape \(2, 16, 12\)"),
        (lambda m: m(ids, mask, dict(tokens, audio=torch.randn(3, 2, 9))), ValueError,
         r"tokens\['audio'\] must have size 8 in dimension 2, got shape \(3, 2, 9\)"),
        (lambda m: m(ids, mask, dict(tokens, audio=torch.randn(3, 8))), ValueError,
         r"tokens\['audio'\] must have 3 dimensions"),
        (lambda m: m(ids, mask, tokens, torch.ones(3, 3, dtype=torch.bool)), ValueError,
         r"present must have size 2 in dimension 1, got shape \(3, 3\)"),
        (lambda m: m(torch.zeros(3, 12, dtype=torch.long), None, tokens), ValueError, "max_len"),
    ]


@pytest.mark.parametrize("strategy", F.STRATEGIES)
@pytest.mark.parametrize("index", range(10))
def test_fusion_classifier_bad_input(strategy, index):
    call, exc, match = _bad_calls()[index]
    with pytest.raises(exc, match=match):
        call(_model(strategy, text_layers=0))
