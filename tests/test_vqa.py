"""Shape, mask and bad-input tests of the VQA models and helpers (mmutils.vqa)."""
import pytest
import torch

from mmutils import vqa, world
from mmutils.nn.encoders import ConvTower

SMALL = dict(dim=16, widths=(4, 8, 8), heads=2, hidden=16, pooled_hidden=16, head_channels=4, max_len=12)
VOCAB = 30


def _question_batch(batch: int, length: int = 7, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (batch, length), generator=g)
    lengths = torch.randint(3, length + 1, (batch,), generator=g)
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    return ids * mask, mask


def _pad(ids, mask, extra: int = 3):
    pad = torch.zeros(ids.shape[0], extra, dtype=ids.dtype)
    return torch.cat([ids, pad], dim=1), torch.cat([mask, pad], dim=1)


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def test_answer_mask_contains_every_true_answer():
    scenes = world.sample_scenes(200, min_objects=1, max_objects=3, seed=0)
    qs = world.questions(scenes, seed=0)
    qtypes = torch.tensor([world.QUESTION_TYPES.index(q.qtype) for q in qs])
    answers = torch.tensor([world.ANSWERS.index(q.answer) for q in qs])
    mask = vqa.answer_mask(qtypes)
    assert mask.shape == (200, len(world.ANSWERS)) and mask.dtype == torch.bool
    assert mask[torch.arange(200), answers].all()
    assert mask[qtypes == world.QUESTION_TYPES.index("exists")].sum(1).eq(2).all()  # yes / no
    with pytest.raises(ValueError, match="qtypes must index"):
        vqa.answer_mask(torch.tensor([0, 5]))
    with pytest.raises(TypeError, match="qtypes must be an integer tensor"):
        vqa.answer_mask(torch.zeros(2))


def test_accuracy_by_type():
    answers = torch.tensor([0, 1, 2, 3])
    qtypes = torch.tensor([0, 0, 2, 4])
    preds = torch.tensor([0, 5, 2, 0])
    acc = vqa.accuracy_by_type(preds, answers, qtypes)
    assert acc == {"color": 0.5, "count": 1.0, "relation": 0.0, "all": 0.5}
    logits = torch.nn.functional.one_hot(preds, len(world.ANSWERS)).float()
    assert vqa.accuracy_by_type(logits, answers, qtypes) == acc
    with pytest.raises(ValueError, match=r"answers must have size 3 in dimension 0, got shape \(4,\)"):
        vqa.accuracy_by_type(preds[:3], answers, qtypes)
    with pytest.raises(ValueError, match="logits_or_preds must be logits"):
        vqa.accuracy_by_type(logits[None], answers, qtypes)
    with pytest.raises(TypeError, match="answers must be an integer tensor"):
        vqa.accuracy_by_type(preds, answers.float(), qtypes)


def test_config_validation():
    cfg = vqa.VQAConfig(**SMALL)
    assert cfg.grid == 4
    with pytest.raises(ValueError, match="divisible by heads"):
        vqa.VQAConfig(dim=10, heads=4)
    with pytest.raises(TypeError, match="hidden must be an int"):
        vqa.VQAConfig(hidden=1.5)
    with pytest.raises(ValueError, match="widths must name at least one stage"):
        vqa.VQAConfig(widths=())
    with pytest.raises(ValueError, match="image_size"):
        vqa.VQAConfig(image_size=36)


# --------------------------------------------------------------------------- #
# models
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("text", vqa.TEXT_ENCODERS)
@pytest.mark.parametrize("fusion", vqa.FUSIONS)
@pytest.mark.parametrize("batch", [1, 3])
def test_vqa_model_shapes_and_padding(fusion, batch, text):
    torch.manual_seed(0)
    model = vqa.VQAModel(VOCAB, fusion, text=text, **SMALL).eval()
    images = torch.rand(batch, 3, 32, 32)
    ids, mask = _question_batch(batch)
    with torch.no_grad():
        logits = model(images, ids, mask)
        assert logits.shape == (batch, len(world.ANSWERS))
        regions = model.encode_image(images)
        assert regions.shape == (batch, 16, SMALL["dim"])
        assert torch.allclose(model.answer(regions, ids, mask), logits, atol=1e-5)
        assert torch.allclose(model(images, *_pad(ids, mask)), logits, atol=1e-5)  # padding changes nothing


def test_cross_attention_maps():
    torch.manual_seed(0)
    model = vqa.VQAModel(VOCAB, "cross", **SMALL).eval()
    ids, mask = _question_batch(2)
    regions = torch.randn(2, 16, SMALL["dim"])
    with torch.no_grad():
        logits, attn = model.answer(regions, ids, mask, return_attention=True)
    assert logits.shape == (2, len(world.ANSWERS)) and attn.shape == (2, ids.shape[1], 16)
    assert torch.allclose(attn.sum(-1), torch.ones(2, ids.shape[1]), atol=1e-5)
    with pytest.raises(ValueError, match="return_attention needs fusion='cross'"):
        vqa.VQAModel(VOCAB, "film", **SMALL).answer(regions, ids, mask, return_attention=True)


@pytest.mark.parametrize("call, error, match", [
    (lambda m, ids, mask: vqa.VQAModel(VOCAB, "pooled", image_encoder=torch.nn.Identity(), **SMALL), TypeError,
     "image_encoder must be a ConvTower"),
    (lambda m, ids, mask: vqa.VQAModel(VOCAB, "pooled", image_encoder=ConvTower(3, (4, 8, 8), out_dim=8), **SMALL),
     ValueError, "image_encoder must have out_dim=16"),
    (lambda m, ids, mask: vqa.ImageOnlyVQA(image_encoder=ConvTower(3, (4, 8, 8), max_pool=True, out_dim=16,
                                                                pool="mean"), **SMALL), ValueError,
     r"image_encoder must return region tokens \(pool=None\), got pool='mean'"),
    (lambda m, ids, mask: m.answer(torch.rand(2, 16, 16), ids, mask[:, :5]), ValueError,
     r"attention_mask must have shape \(2, 7\)"),
])
def test_vqa_model_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call(vqa.VQAModel(VOCAB, "film", **SMALL), *_question_batch(2))


def test_shared_frozen_encoder_is_not_trained():
    enc = ConvTower(3, (4, 8, 8), max_pool=True, out_dim=16).requires_grad_(False)
    model = vqa.VQAModel(VOCAB, "cross", image_encoder=enc, **SMALL)
    assert model.image_encoder is enc
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and not any(n.startswith("image_encoder.") for n in trainable)


@pytest.mark.parametrize("batch", [1, 4])
def test_question_only_shapes_and_padding(batch):
    torch.manual_seed(0)
    model = vqa.QuestionOnlyVQA(VOCAB, **SMALL).eval()
    ids, mask = _question_batch(batch)
    with torch.no_grad():
        logits = model(ids, mask)
        assert logits.shape == (batch, len(world.ANSWERS))
        assert torch.allclose(model(*_pad(ids, mask)), logits, atol=1e-5)
    with pytest.raises(ValueError, match=r"input_ids must have 2 dimensions, got shape \(7,\)"):
        model(ids[0], mask[0])


@pytest.mark.parametrize("batch", [1, 4])
def test_image_only_shapes_and_bad_types(batch):
    model = vqa.ImageOnlyVQA(**SMALL).eval()
    images = torch.rand(batch, 3, 32, 32)
    qtypes = torch.arange(batch) % len(world.QUESTION_TYPES)
    with torch.no_grad():
        logits = model(images, qtypes)
        assert logits.shape == (batch, len(world.ANSWERS))
        assert torch.allclose(model.answer(model.image_encoder(images), qtypes), logits, atol=1e-5)
    with pytest.raises(ValueError, match="qtypes must index QUESTION_TYPES"):
        model(images, torch.full((batch,), 7))
    with pytest.raises(ValueError, match="qtypes must have size"):
        model(images, torch.zeros(batch + 1, dtype=torch.long))


def test_film_block_shapes_and_identity_film_at_init():
    block = vqa.FiLMBlock(8, cond_dim=5).eval()
    fmap = torch.randn(3, 8, 4, 4)
    out = block(fmap, torch.randn(3, 5))
    assert out.shape == (3, 8, 4, 4)
    # FiLM starts as the identity, so the question does not matter yet
    assert torch.equal(out, block(fmap, torch.randn(3, 5)))


class _ScaledText(torch.nn.Module):
    """Wraps a question encoder and multiplies its pooled question vector by ``scale``."""

    def __init__(self, encoder, scale):
        super().__init__()
        self.encoder, self.scale = encoder, scale

    def forward(self, ids, mask):
        words, question = self.encoder(ids, mask)
        return words, question * self.scale


def test_film_reads_the_layer_normalized_question():
    # FiLM's gamma and beta see LN(q): rescaling the question vector changes no answer (a raw q let them blow up)
    torch.manual_seed(0)
    model = vqa.VQAModel(VOCAB, "film", **SMALL).eval()
    for block in model.blocks:  # a FiLM that is not the identity, so the question matters
        torch.nn.init.normal_(block.film.to_gamma_beta.weight)
    ids, mask = _question_batch(3)
    regions = torch.randn(3, 16, SMALL["dim"])
    with torch.no_grad():
        logits = model.answer(regions, ids, mask)
        model.text_encoder = _ScaledText(model.text_encoder, 10.0)
        torch.testing.assert_close(model.answer(regions, ids, mask), logits, atol=1e-4, rtol=1e-4)


def test_cross_attention_sees_where_a_region_is():
    # Identical tokens in every cell: without the coordinate embedding every word would attend uniformly.
    torch.manual_seed(0)
    model = vqa.VQAModel(VOCAB, "cross", **SMALL).eval()
    ids, mask = _question_batch(2)
    regions = torch.randn(1, 1, SMALL["dim"]).expand(2, 16, -1)
    with torch.no_grad():
        _, attn = model.answer(regions, ids, mask, return_attention=True)
        assert attn.std(dim=-1).min() > 1e-4  # the cells differ by where they are
        torch.nn.init.zeros_(model.region_position.weight)
        torch.nn.init.zeros_(model.region_position.bias)
        _, flat = model.answer(regions, ids, mask, return_attention=True)
    torch.testing.assert_close(flat, torch.full_like(flat, 1 / 16))
