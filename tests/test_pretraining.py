"""Tests of mmutils.pretraining: the ITC + ITM + LM model, hard-negative mining, the weighted loss."""
import math

import pytest
import torch
from torch import nn

from mmutils import pretraining as P
from mmutils.nn.encoders import ConvTower
from mmutils.nn.layers import grid_position_embedding
from mmutils.nn.losses import clip_loss

VOCAB, N, IMG_DIM, DIM, MAX_LEN = 40, 16, 12, 16, 10


def _config(**kwargs):
    base = dict(vocab_size=VOCAB, image_dim=IMG_DIM, n_regions=N, dim=DIM, heads=2, embed_dim=8, max_len=MAX_LEN)
    return P.PretrainConfig(**{**base, **kwargs})


def _model(seed=0, **kwargs):
    torch.manual_seed(seed)
    return P.MultiObjectiveModel(nn.Identity(), _config(**kwargs)).eval()


def _batch(b, length=8, seed=0):
    """Region tokens (b, N, IMG_DIM), captions [BOS] w w ... [EOS] [PAD]... and their mask."""
    g = torch.Generator().manual_seed(seed)
    regions = torch.randn(b, N, IMG_DIM, generator=g)
    ids = torch.randint(5, VOCAB, (b, length), generator=g)
    lengths = torch.randint(3, length + 1, (b,), generator=g)
    pos = torch.arange(length)[None]
    ids[:, 0] = 2
    ids = torch.where(pos == lengths[:, None] - 1, torch.full_like(ids, 3), ids)  # [EOS]
    mask = (pos < lengths[:, None]).long()
    ids = ids.masked_fill(mask == 0, 0)
    return regions, ids, mask


# --------------------------------------------------------------------------- #
# Shapes
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("b", [1, 3, 8])
def test_forward_shapes(b):
    model = _model()
    regions, ids, mask = _batch(b)
    out = model(regions, ids, mask)
    assert out["image_emb"].shape == (b, 8) and out["text_emb"].shape == (b, 8)
    assert out["itm"].shape == (b,)
    assert out["lm"].shape == (b, ids.shape[1], VOCAB)
    assert torch.allclose(out["image_emb"].norm(dim=1), torch.ones(b), atol=1e-5)
    assert torch.allclose(out["text_emb"].norm(dim=1), torch.ones(b), atol=1e-5)
    assert model.caption_log_likelihood(model.encode_image(regions), ids, mask).shape == (b,)


@pytest.mark.parametrize("b", [1, 2, 5])
def test_conv_tower_image_encoder(b):
    cnn = ConvTower(3, (4, 8), max_pool=True, out_dim=IMG_DIM)  # 16x16 images -> 4x4 = 16 regions
    model = P.MultiObjectiveModel(cnn, _config()).eval()
    images = torch.rand(b, 3, 16, 16)
    tokens = model.encode_image(images)
    assert tokens.shape == (b, N, DIM)
    _, ids, mask = _batch(b)
    assert model(images, ids, mask)["lm"].shape == (b, ids.shape[1], VOCAB)


@pytest.mark.parametrize("b", [2, 4, 9])
def test_loss_returns_scalars(b):
    model = _model()
    out = P.pretraining_loss(model, *_batch(b), generator=torch.Generator().manual_seed(0))
    assert set(out) == {"loss", "itc", "itm", "itm_acc", "lm"}
    for v in out.values():
        assert v.shape == () and torch.isfinite(v)


def test_region_positions_start_from_the_grid_embedding():
    assert torch.equal(_model().image_pos.data[0], grid_position_embedding(N, DIM))


def test_config_and_keyword_overrides_build_the_same_model():
    config = _config()
    a, b = _model(), _model()  # seeded
    torch.manual_seed(0)
    c = P.MultiObjectiveModel(nn.Identity(), vocab_size=VOCAB, image_dim=IMG_DIM, n_regions=N, dim=DIM, heads=2,
                              embed_dim=8, max_len=MAX_LEN)
    torch.manual_seed(0)
    d = P.MultiObjectiveModel(nn.Identity(), _config(max_len=4), max_len=MAX_LEN)  # overrides win
    assert a.config == c.config == d.config == config
    for w, x, y, z in zip(*(m.state_dict().values() for m in (a, b, c, d))):
        assert torch.equal(w, x) and torch.equal(w, y) and torch.equal(w, z)


# --------------------------------------------------------------------------- #
# The causal decoder
# --------------------------------------------------------------------------- #
def test_decoder_never_looks_ahead():
    model = _model()
    regions, ids, _ = _batch(3, length=8)
    tokens = model.encode_image(regions)
    before = model.decode(tokens, ids)
    changed = ids.clone()
    changed[:, 5:] = torch.randint(5, VOCAB, (3, 3))
    after = model.decode(tokens, changed)
    assert torch.allclose(before[:, :5], after[:, :5], atol=1e-5)  # positions 0..4 see tokens 0..4 only
    assert not torch.allclose(before[:, 5:], after[:, 5:], atol=1e-3)
    assert torch.allclose(model.decode(tokens, ids[:, :5]), before[:, :5], atol=1e-5)


def test_decoder_depends_on_the_image():
    model = _model()
    regions, ids, _ = _batch(2)
    a = model.decode(model.encode_image(regions), ids)
    b = model.decode(model.encode_image(regions.flip(0)), ids)
    assert not torch.allclose(a, b, atol=1e-4)


def test_caption_log_likelihood_matches_the_lm_loss_and_ignores_padding():
    model = _model()
    regions, ids, mask = _batch(4, length=8)
    mask = torch.ones_like(mask)  # same length for all: the token mean equals the mean of the row means
    tokens = model.encode_image(regions)
    ll = model.caption_log_likelihood(tokens, ids, mask)
    assert (ll <= 0).all()
    out = P.pretraining_loss(model, regions, ids, mask, P.LossWeights(0, 0, 1))
    assert math.isclose(-ll.mean().item(), out["lm"].item(), rel_tol=1e-5)
    # Extra padding on the right changes nothing.
    padded = torch.cat([ids, torch.zeros(4, 2, dtype=ids.dtype)], 1)
    padded_mask = torch.cat([mask, torch.zeros(4, 2, dtype=mask.dtype)], 1)
    assert torch.allclose(model.caption_log_likelihood(tokens, padded, padded_mask), ll, atol=1e-5)


def test_generate_returns_valid_ids():
    model = _model()
    regions, _, _ = _batch(5)
    out = model.generate(model.encode_image(regions))
    assert out.dtype == torch.long and out.shape[0] == 5 and 2 <= out.shape[1] <= MAX_LEN
    assert (out[:, 0] == 2).all()
    assert ((out >= 0) & (out < VOCAB)).all()
    assert model.generate(model.encode_image(regions), max_len=3).shape[1] <= 3


def test_generate_stops_at_eos_and_pads_after_it():
    model = _model()
    tokens = model.encode_image(_batch(3)[0])
    script = {0: [7, 3], 1: [8, 9, 10, 3], 2: [11, 3]}  # row -> tokens it emits

    def scripted_decode(image_tokens, ids):  # emits the scripted token for the next position
        logits = torch.zeros(ids.shape[0], ids.shape[1], VOCAB)
        for row, seq in script.items():
            logits[row, -1, seq[min(ids.shape[1] - 1, len(seq) - 1)]] = 10.0
        return logits

    model.decode = scripted_decode
    out = model.generate(tokens)
    assert out.tolist() == [[2, 7, 3, 0, 0], [2, 8, 9, 10, 3], [2, 11, 3, 0, 0]]  # stops when all rows ended

    def always_eos(image_tokens, ids):
        logits = torch.zeros(ids.shape[0], ids.shape[1], VOCAB)
        logits[..., 3] = 1.0
        return logits

    model.decode = always_eos
    assert model.generate(tokens).tolist() == [[2, 3]] * 3

    def never_eos(image_tokens, ids):
        logits = torch.zeros(ids.shape[0], ids.shape[1], VOCAB)
        logits[..., 6] = 1.0
        return logits

    model.decode = never_eos
    assert model.generate(tokens, max_len=6).tolist() == [[2, 6, 6, 6, 6, 6]] * 3


# --------------------------------------------------------------------------- #
# Hard-negative mining
# --------------------------------------------------------------------------- #
def test_mine_hard_negatives_never_picks_the_positive():
    g = torch.Generator().manual_seed(0)
    sim = torch.randn(6, 6) + 20 * torch.eye(6)  # the positive is by far the most similar
    for _ in range(50):
        neg_text, neg_image = P.mine_hard_negatives(sim, generator=g)
        assert neg_text.shape == neg_image.shape == (6,)
        assert (neg_text != torch.arange(6)).all() and (neg_image != torch.arange(6)).all()


def test_mine_hard_negatives_prefers_similar_items():
    g = torch.Generator().manual_seed(0)
    sim = torch.zeros(4, 4)
    sim[0, 2] = 5.0  # text 2 is image 0's nearest miss; image 0 is text 2's
    counts = torch.zeros(4)
    counts_img = torch.zeros(4)
    for _ in range(200):
        neg_text, neg_image = P.mine_hard_negatives(sim, generator=g)
        counts[neg_text[0]] += 1
        counts_img[neg_image[2]] += 1
    assert counts[2] > 150 and counts_img[0] > 150  # softmax weight e^5 / (e^5 + 2) = 0.99


def test_mine_hard_negatives_respects_duplicate_keys():
    g = torch.Generator().manual_seed(0)
    key_id = torch.tensor([0, 0, 1, 2, 1])
    sim = torch.zeros(5, 5)
    sim[0, 1] = sim[2, 4] = 10.0  # the most similar items are duplicates: they must never be drawn
    for _ in range(100):
        neg_text, neg_image = P.mine_hard_negatives(sim, key_id, generator=g)
        assert (key_id[neg_text] != key_id).all() and (key_id[neg_image] != key_id).all()


def test_mine_hard_negatives_fallback_when_all_match():
    g = torch.Generator().manual_seed(0)
    neg_text, neg_image = P.mine_hard_negatives(torch.zeros(3, 3), torch.zeros(3, dtype=torch.long), generator=g)
    assert (neg_text != torch.arange(3)).all() and (neg_image != torch.arange(3)).all()


def test_mine_hard_negatives_is_reproducible():
    sim = torch.randn(8, 8)
    a = P.mine_hard_negatives(sim, generator=torch.Generator().manual_seed(3))
    b = P.mine_hard_negatives(sim, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


# --------------------------------------------------------------------------- #
# The weighted loss
# --------------------------------------------------------------------------- #
def test_loss_is_the_weighted_sum_of_its_parts():
    model = _model()
    regions, ids, mask = _batch(6)
    w = P.LossWeights(itc=2.0, itm=0.5, lm=3.0)
    out = P.pretraining_loss(model, regions, ids, mask, w, generator=torch.Generator().manual_seed(0))
    expected = 2.0 * out["itc"] + 0.5 * out["itm"] + 3.0 * out["lm"]
    assert torch.allclose(out["loss"], expected, atol=1e-6)
    o = model(regions, ids, mask)
    assert torch.allclose(out["itc"], clip_loss(o["image_emb"], o["text_emb"], model.logit_scale), atol=1e-6)
    assert torch.equal(model.scale(), model.logit_scale.exp())  # within CLIP's clamp


def test_itc_counts_same_key_pairs_as_positives():
    model = _model()
    regions, ids, mask = _batch(6)
    key_id = torch.tensor([0, 1, 0, 2, 1, 3])
    w = P.LossWeights(itc=1.0, itm=0.0, lm=0.0)
    o = model(regions, ids, mask)
    multi = P.pretraining_loss(model, regions, ids, mask, w, key_id=key_id, multi_positive=True)["itc"]
    plain = P.pretraining_loss(model, regions, ids, mask, w, key_id=key_id)["itc"]  # the default: one positive
    torch.testing.assert_close(multi, clip_loss(o["image_emb"], o["text_emb"], model.logit_scale, key_id=key_id))
    torch.testing.assert_close(plain, clip_loss(o["image_emb"], o["text_emb"], model.logit_scale))
    assert not torch.allclose(multi, plain)
    # with distinct keys the two agree
    distinct = P.pretraining_loss(model, regions, ids, mask, w, key_id=torch.arange(6), multi_positive=True)["itc"]
    torch.testing.assert_close(distinct, plain)


def _grads(model, weights, negatives="hard"):
    model.zero_grad(set_to_none=True)
    out = P.pretraining_loss(model, *_batch(4), weights, negatives=negatives,
                             generator=torch.Generator().manual_seed(0))
    out["loss"].backward()
    return out, {name: p.grad is not None for name, p in model.named_parameters()}


def test_zero_weights_switch_branches_off():
    model = _model().train()
    out, has = _grads(model, P.LossWeights(1, 0, 0))
    assert set(out) == {"loss", "itc"}
    assert has["image_proj.weight"] and has["text_proj.weight"] and has["logit_scale"]
    assert not has["itm_head.weight"] and not has["lm_head.weight"] and not has["dec_pos"]

    out, has = _grads(model, P.LossWeights(0, 0, 1))
    assert set(out) == {"loss", "lm"}
    assert has["lm_head.weight"] and has["image_in.weight"] and has["text_encoder.embed.weight"]
    assert not has["itm_head.weight"] and not has["image_proj.weight"] and not has["logit_scale"]
    assert not has["text_encoder.encoder.layers.0.linear1.weight"]  # the text encoder did not even run

    out, has = _grads(model, P.LossWeights(0, 1, 0), negatives="random")
    assert set(out) == {"loss", "itm", "itm_acc"}
    assert has["itm_head.weight"] and has["text_encoder.encoder.layers.0.linear1.weight"]
    assert not has["image_proj.weight"] and not has["lm_head.weight"] and not has["logit_scale"]

    out, has = _grads(model, P.LossWeights(1, 1, 1))
    assert all(has.values())


@pytest.mark.parametrize("kwargs, error, match", [
    ({"lm": "1"}, TypeError, "lm"),
    ({"itc": 0, "itm": 0, "lm": 0}, ValueError, "at least one"),
])
def test_loss_weights_bad_values(kwargs, error, match):
    with pytest.raises(error, match=match):
        P.LossWeights(**kwargs)


def test_training_lowers_every_loss():
    torch.manual_seed(0)
    model = P.MultiObjectiveModel(nn.Identity(), _config()).train()
    regions, ids, mask = _batch(8, seed=1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    first = P.pretraining_loss(model, regions, ids, mask, generator=g)
    for _ in range(30):
        out = P.pretraining_loss(model, regions, ids, mask, generator=g)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    for k in ("itc", "lm"):
        assert out[k] < 0.8 * first[k], k
    assert out["itm"] < first["itm"]


# --------------------------------------------------------------------------- #
# Bad inputs
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("kwargs, error, match", [
    ({"heads": 3}, ValueError, "heads"),  # inconsistent sizes
    ({"n_regions": 15}, ValueError, "n_regions"),  # not a square grid
])
def test_config_rejects_bad_sizes(kwargs, error, match):
    with pytest.raises(error, match=match):
        _config(**kwargs)


@pytest.mark.parametrize("call, error, match", [
    (lambda m, r, i, k: P.MultiObjectiveModel("cnn", _config()), TypeError, "image_encoder"),
    (lambda m, r, i, k: m.encode_image(torch.randn(3, N, IMG_DIM + 1)), ValueError, "image_encoder"),
    (lambda m, r, i, k: m.decode(m.encode_image(r), torch.full((3, MAX_LEN + 1), 5)), ValueError, "max_len"),
    (lambda m, r, i, k: m.caption_log_likelihood(m.encode_image(r), i[:, :1], k[:, :1]), ValueError, "length"),
    (lambda m, r, i, k: m.match(m.encode_image(r), m.encode_text(i, k)[0], k[:, :-1]), ValueError, "text_mask"),
])
def test_model_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call(_model(), *_batch(3))


@pytest.mark.parametrize("layers", [1, 2])
def test_match_pairs_equals_match_on_the_gathered_pairs(layers):
    model = _model(fusion_layers=layers)
    regions, ids, mask = _batch(5)
    image, (text, _) = model.encode_image(regions), model.encode_text(ids, mask)
    image_index, text_index = torch.tensor([0, 1, 2, 3, 4, 0, 4, 4]), torch.tensor([0, 1, 2, 3, 4, 3, 0, 4])
    expected = model.match(image[image_index], text[text_index], mask[text_index])  # one fusion pass per pair
    torch.testing.assert_close(model.match_pairs(image, text, mask, image_index, text_index), expected)


@pytest.mark.parametrize("image_index, text_index, error, match", [
    (torch.tensor([0.0, 1.0]), torch.tensor([0, 1]), TypeError, "image_index"),
    (torch.tensor([0, 1]), torch.tensor([0, 1, 2]), ValueError, "text_index"),
])
def test_match_pairs_bad_input(image_index, text_index, error, match):
    model = _model()
    regions, ids, mask = _batch(3)
    with pytest.raises(error, match=match):
        model.match_pairs(model.encode_image(regions), model.encode_text(ids, mask)[0], mask, image_index, text_index)


def test_mining_bad_input():
    with pytest.raises(ValueError, match="similarity"):  # not square
        P.mine_hard_negatives(torch.zeros(3, 4))


@pytest.mark.parametrize("call, error, match", [
    (lambda m, r, i, k: P.pretraining_loss(m, r, i, k[:, :-1]), ValueError, "mask"),
    (lambda m, r, i, k: P.pretraining_loss(m, r[:1], i[:1], k[:1]), ValueError, "2 pairs"),  # ITM needs a batch
    (lambda m, r, i, k: P.pretraining_loss(m, r, i[:, :1], k[:, :1], P.LossWeights(0, 0, 1)), ValueError,
     "length >= 2"),
    (lambda m, r, i, k: P.pretraining_loss(m, r, i, k, multi_positive="yes"), TypeError, "multi_positive"),
    (lambda m, r, i, k: P.pretraining_loss(m, r, i, k, P.LossWeights(1, 0, 0), key_id=torch.zeros(2, dtype=torch.long),
                                           multi_positive=True), ValueError, "key_id"),
])
def test_loss_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call(_model(), *_batch(3))


def test_a_batch_of_one_is_fine_without_the_itm_branch():
    regions, ids, mask = _batch(3)
    out = P.pretraining_loss(_model(), regions[:1], ids[:1], mask[:1], P.LossWeights(1, 0, 1))
    assert torch.isfinite(out["loss"])
