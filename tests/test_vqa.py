"""Shape, mask and bad-input tests of the VQA models and helpers (mmutils.vqa)."""
import pytest
import torch

from mmutils import vqa, world
from mmutils.encoders import SpatialCNN

SMALL = dict(dim=16, widths=(4, 8, 8), heads=2, hidden=16, late_hidden=16, head_channels=4, max_len=12)
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
def test_coordinate_grid_values():
    c = vqa.coordinate_grid(2, 3)
    assert c.shape == (2, 2, 3)
    assert torch.equal(c[0, 0], torch.tensor([-1.0, 0.0, 1.0]))  # x grows to the right
    assert torch.equal(c[1, :, 0], torch.tensor([-1.0, 1.0]))  # y grows downwards
    assert torch.equal(vqa.coordinate_grid(1, 1), torch.zeros(2, 1, 1))
    with pytest.raises(ValueError, match="h must be a positive int"):
        vqa.coordinate_grid(0, 3)


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
    with pytest.raises(ValueError, match="qtypes must have 1 dimensions"):
        vqa.answer_mask(torch.zeros(2, 2, dtype=torch.long))


def test_accuracy_by_type():
    answers = torch.tensor([0, 1, 2, 3])
    qtypes = torch.tensor([0, 0, 2, 4])
    preds = torch.tensor([0, 5, 2, 0])
    acc = vqa.accuracy_by_type(preds, answers, qtypes)
    assert acc == {"color": 0.5, "count": 1.0, "relation": 0.0, "all": 0.5}
    logits = torch.nn.functional.one_hot(preds, len(world.ANSWERS)).float()
    assert vqa.accuracy_by_type(logits, answers, qtypes) == acc
    with pytest.raises(ValueError, match=r"share the batch size.*\(3,\)"):
        vqa.accuracy_by_type(preds[:3], answers, qtypes)
    with pytest.raises(TypeError, match="answers must be an integer tensor"):
        vqa.accuracy_by_type(preds, answers.float(), qtypes)


def test_cell_labels_put_objects_in_their_cells():
    scene = world.Scene((world.Obj("circle", "red", "small", 0.1, 0.9),
                         world.Obj("star", "blue", "large", 0.7, 0.3)))
    colors, shapes = vqa.cell_labels([scene], 4)
    assert colors.shape == shapes.shape == (1, 16)
    # (x=0.1, y=0.9) -> row 3, column 0; (x=0.7, y=0.3) -> row 1, column 2
    assert colors[0, 12] == world.COLORS.index("red") + 1 and shapes[0, 12] == world.SHAPES.index("circle") + 1
    assert colors[0, 6] == world.COLORS.index("blue") + 1 and shapes[0, 6] == world.SHAPES.index("star") + 1
    assert int((colors > 0).sum()) == 2
    with pytest.raises(ValueError, match="grid must be a positive int"):
        vqa.cell_labels([scene], 0)
    with pytest.raises(TypeError, match="scenes must be a list"):
        vqa.cell_labels("scene", 4)


def test_region_tagger_shapes_and_loss():
    enc = SpatialCNN(3, (4, 8, 8), 16)
    tagger = vqa.RegionTagger(enc)
    images = torch.rand(2, 3, 32, 32)
    color_logits, shape_logits = tagger(images)
    assert color_logits.shape == (2, 16, 1 + len(world.COLORS))
    assert shape_logits.shape == (2, 16, 1 + len(world.SHAPES))
    labels = torch.zeros(2, 16, dtype=torch.long)
    loss = tagger.loss(images, labels, labels)
    assert loss.ndim == 0 and torch.isfinite(loss)
    with pytest.raises(ValueError, match=r"colors must have shape \(2, 16\)"):
        tagger.loss(images, labels[:, :9], labels)
    with pytest.raises(TypeError, match="encoder must be a SpatialCNN"):
        vqa.RegionTagger(torch.nn.Linear(2, 2))


def test_config_validation():
    cfg = vqa.VQAConfig(**SMALL)
    assert cfg.grid == 4
    with pytest.raises(ValueError, match="divisible by heads"):
        vqa.VQAConfig(dim=10, heads=4)
    with pytest.raises(ValueError, match="text must be one of"):
        vqa.VQAConfig(text="lstm")
    with pytest.raises(TypeError, match="hidden must be an int"):
        vqa.VQAConfig(hidden=1.5)
    with pytest.raises(ValueError, match="widths must be a non-empty tuple"):
        vqa.VQAConfig(widths=())
    with pytest.raises(TypeError, match="unknown VQAConfig field"):
        vqa.VQAModel(VOCAB, "late", colour=3)


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


def test_vqa_model_bad_inputs():
    model = vqa.VQAModel(VOCAB, "film", **SMALL)
    ids, mask = _question_batch(2)
    with pytest.raises(ValueError, match="fusion must be one of"):
        vqa.VQAModel(VOCAB, "early", **SMALL)
    with pytest.raises(ValueError, match="vocab_size must be an int >= 2"):
        vqa.VQAModel(1, "late", **SMALL)
    with pytest.raises(ValueError, match=r"images must have 4 dimensions, got shape \(3, 32, 32\)"):
        model(torch.rand(3, 32, 32), ids, mask)
    with pytest.raises(ValueError, match=r"images must have size 3 in dimension 1"):
        model(torch.rand(2, 1, 32, 32), ids, mask)
    with pytest.raises(ValueError, match=r"share the batch size.*\(3, 3, 32, 32\)"):
        model(torch.rand(3, 3, 32, 32), ids, mask)
    with pytest.raises(ValueError, match=r"regions must have size 16 in dimension 2"):
        model.answer(torch.rand(2, 16, 7), ids, mask)
    with pytest.raises(TypeError, match="input_ids must be an integer tensor"):
        model.answer(torch.rand(2, 16, 16), ids.float(), mask)
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(2, 7\)"):
        model.answer(torch.rand(2, 16, 16), ids, mask[:, :5])
    with pytest.raises(ValueError, match="image_encoder must have out_dim=16"):
        vqa.VQAModel(VOCAB, "late", image_encoder=SpatialCNN(3, (4, 8, 8), 8), **SMALL)


def test_shared_frozen_encoder_is_not_trained():
    enc = SpatialCNN(3, (4, 8, 8), 16).requires_grad_(False)
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
    with pytest.raises(ValueError, match="regions and qtypes must share the batch size"):
        model(images, torch.zeros(batch + 1, dtype=torch.long))


def test_film_block_shapes():
    block = vqa.FiLMBlock(8, cond_dim=5)
    out = block(torch.randn(3, 8, 4, 4), torch.randn(3, 5))
    assert out.shape == (3, 8, 4, 4)
    with pytest.raises(ValueError, match=r"fmap must have size 8 in dimension 1"):
        block(torch.randn(3, 6, 4, 4), torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"cond must have size 5 in dimension 1"):
        block(torch.randn(3, 8, 4, 4), torch.randn(3, 4))
