"""Tests of mmutils.clip: the dual encoder, the hard-negative loss, zero-shot classification,
the relation-swap test, position swaps, the strided image tower and the tiny CLIPConfig."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmutils import clip, encoders, losses, text, world

WORDS = ("left", "right", "red", "blue", "circle", "square")


def _bag(texts):
    """A callable 'tokenizer': one count per word of WORDS (n, 6), float."""
    return torch.tensor([[float(t.split().count(w)) for w in WORDS] for t in texts])


class _Unflatten(nn.Module):
    """Images (B, D, 1, 1) -> (B, D): lets a test choose the image features directly."""

    def forward(self, images):
        return images.flatten(1)


def _controlled(dim=6, **kwargs):
    """A DualEncoder whose image features are the 'image' itself and whose text features are word counts,
    with identity projections, so every similarity is known in closed form."""
    model = clip.DualEncoder(_Unflatten(), nn.Identity(), image_dim=dim, text_dim=6, embed_dim=dim,
                             tokenizer=_bag, **kwargs)
    with torch.no_grad():
        model.image_proj.weight.copy_(torch.eye(dim))
        model.text_proj.weight.copy_(torch.eye(dim, 6))
    return model


def _images(rows):
    return torch.tensor(rows, dtype=torch.float32)[:, :, None, None]  # (n, D, 1, 1)


# --------------------------------------------------------------------------- #
# Constants and the strided tower
# --------------------------------------------------------------------------- #
def test_constants_are_clips():
    assert clip.CLIP_INIT_LOGIT_SCALE == pytest.approx(math.log(1 / 0.07))
    assert clip.CLIP_MAX_LOGIT_SCALE == pytest.approx(math.log(100))
    assert clip.CLIP_INIT_LOGIT_SCALE == pytest.approx(losses.CLIP_INIT_LOGIT_SCALE)


@pytest.mark.parametrize("batch", [1, 3, 8])
@pytest.mark.parametrize("widths, size, cells", [((8, 16, 32), 32, 16), ((4, 8), 32, 64), ((4, 8, 8), 20, 9)])
def test_strided_cnn_shapes(batch, widths, size, cells):
    cnn = clip.StridedCNN(widths=widths)
    tokens = cnn(torch.rand(batch, 3, size, size))
    assert tokens.shape == (batch, cells, widths[-1])
    fmap = cnn.grid(torch.rand(batch, 3, size, size))
    assert fmap.shape[:2] == (batch, widths[-1]) and fmap.shape[2] * fmap.shape[3] == cells
    assert cnn.out_dim == widths[-1] and cnn.stages == len(widths)


def test_strided_cnn_tokens_are_the_grid_in_row_major_order():
    cnn = clip.StridedCNN(widths=(4, 6)).eval()
    x = torch.rand(2, 3, 16, 16)
    fmap, tokens = cnn.grid(x), cnn(x)
    assert torch.equal(tokens[:, 1 * 4 + 2], fmap[:, :, 1, 2])  # row 1, column 2 of the 4 x 4 grid


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(widths=()), ValueError, "widths"),
    (dict(widths=(8, 0)), ValueError, "widths"),
    (dict(widths="8"), ValueError, "widths"),
    (dict(in_channels=0), ValueError, "in_channels"),
])
def test_strided_cnn_bad_config(kwargs, error, match):
    with pytest.raises(error, match=match):
        clip.StridedCNN(**kwargs)


def test_strided_cnn_bad_input():
    cnn = clip.StridedCNN(widths=(4,))
    with pytest.raises(ValueError, match="images"):
        cnn(torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match="images"):
        cnn(torch.rand(3, 8, 8))
    with pytest.raises(TypeError, match="images"):
        cnn(torch.zeros(2, 3, 8, 8, dtype=torch.long))


# --------------------------------------------------------------------------- #
# The dual encoder
# --------------------------------------------------------------------------- #
def _dual(pooling="mean", embed_dim=16):
    cnn = clip.StridedCNN(widths=(4, 8, 8))  # 32x32 -> 4 x 4 tokens of width 8
    txt = encoders.RNNTextEncoder(20, dim=8, hidden=8)  # -> 16-d
    image_dim = 8 if pooling == "mean" else 16 * 8
    return clip.DualEncoder(cnn, txt, image_dim=image_dim, text_dim=16, embed_dim=embed_dim, pooling=pooling)


@pytest.mark.parametrize("pooling", ["mean", "flatten"])
@pytest.mark.parametrize("n_images, n_texts", [(1, 1), (3, 5), (8, 2)])
def test_dual_encoder_shapes_and_unit_embeddings(pooling, n_images, n_texts):
    model = _dual(pooling)
    images = torch.rand(n_images, 3, 32, 32)
    ids = torch.randint(5, 20, (n_texts, 7))
    mask = torch.ones(n_texts, 7, dtype=torch.long)
    img, txt = model.encode_image(images), model.encode_text(ids, mask)
    assert img.shape == (n_images, 16) and txt.shape == (n_texts, 16)
    assert torch.allclose(img.norm(dim=1), torch.ones(n_images), atol=1e-5)
    assert torch.allclose(txt.norm(dim=1), torch.ones(n_texts), atol=1e-5)
    per_image, per_text = model(images, ids, mask)
    assert per_image.shape == (n_images, n_texts) and torch.equal(per_text, per_image.t())
    assert torch.allclose(per_image, model.scale() * img @ txt.t(), atol=1e-5)


def test_dual_encoder_scale_starts_at_clip_and_is_clamped():
    model = _dual()
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert model.scale().item() == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert model.scale().item() == pytest.approx(100.0, rel=1e-5)
    with torch.no_grad():
        model.logit_scale.fill_(-3.0)
    assert model.scale().item() == pytest.approx(1.0)
    frozen = clip.DualEncoder(nn.Identity(), nn.Identity(), image_dim=4, text_dim=4, embed_dim=4,
                              learn_logit_scale=False, init_logit_scale=0.0)
    assert not frozen.logit_scale.requires_grad and frozen.scale().item() == 1.0


def test_mean_pooling_ignores_the_order_of_regions_and_flatten_does_not():
    tokens = torch.randn(2, 4, 3)
    permuted = tokens[:, [2, 0, 3, 1]]
    mean = clip.DualEncoder(nn.Identity(), nn.Identity(), image_dim=3, text_dim=3, embed_dim=5, pooling="mean")
    flat = clip.DualEncoder(nn.Identity(), nn.Identity(), image_dim=12, text_dim=3, embed_dim=5, pooling="flatten")
    assert torch.allclose(mean.encode_image(tokens), mean.encode_image(permuted), atol=1e-6)
    assert not torch.allclose(flat.encode_image(tokens), flat.encode_image(permuted), atol=1e-3)


def test_dual_encoder_accepts_pooled_outputs_and_tuples():
    # An image encoder with (B, D) output and a text encoder returning (tokens, pooled).
    model = clip.DualEncoder(nn.Flatten(), encoders.RNNTextEncoder(10, 4, 4), image_dim=12, text_dim=8, embed_dim=6)
    assert model.encode_image(torch.rand(3, 3, 2, 2)).shape == (3, 6)
    assert model.encode_text(torch.randint(0, 10, (2, 5))).shape == (2, 6)


def test_dual_encoder_without_text_projection_keeps_the_text_embedding():
    model = clip.DualEncoder(nn.Flatten(), nn.Identity(), image_dim=12, text_dim=4, embed_dim=4, project_text=False)
    emb = torch.randn(5, 4)
    assert torch.allclose(model.encode_text(emb), F.normalize(emb, dim=1))
    assert sum(p.numel() for p in model.text_proj.parameters()) == 0


def test_dual_encoder_with_a_transformers_tokenizer():
    tok = text.train_tokenizer(["a red circle left of a blue square"])
    model = clip.DualEncoder(nn.Flatten(), encoders.RNNTextEncoder(len(tok), 4, 4), image_dim=12, text_dim=8,
                             embed_dim=6, tokenizer=tok, max_length=10)
    ids, mask = model.tokenize(["a red circle", "a blue square left of a red circle"])
    assert ids.shape == mask.shape == (2, 10)
    model.train()
    emb = model.embed_texts(["a red circle"] * 3, batch_size=2)
    assert emb.shape == (3, 6) and model.training and not emb.requires_grad  # mode restored, no graph
    assert model.embed_images(torch.rand(5, 3, 2, 2), batch_size=2).shape == (5, 6)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(image_encoder="cnn"), TypeError, "image_encoder"),
    (dict(text_encoder=None), TypeError, "text_encoder"),
    (dict(image_dim=0), ValueError, "image_dim"),
    (dict(text_dim=2.5), ValueError, "text_dim"),
    (dict(embed_dim=True), ValueError, "embed_dim"),
    (dict(pooling="max"), ValueError, "pooling"),
    (dict(project_text=False), ValueError, "project_text"),
    (dict(tokenizer=3), TypeError, "tokenizer"),
    (dict(init_logit_scale=5.0), ValueError, "init_logit_scale"),
    (dict(init_logit_scale=-1.0), ValueError, "init_logit_scale"),
])
def test_dual_encoder_bad_config(kwargs, error, match):
    args = dict(image_encoder=nn.Identity(), text_encoder=nn.Identity(), image_dim=4, text_dim=4, embed_dim=8)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        clip.DualEncoder(args.pop("image_encoder"), args.pop("text_encoder"), **args)


def test_dual_encoder_bad_input():
    model = _dual("flatten")
    with pytest.raises(ValueError, match="image_dim"):
        clip.DualEncoder(clip.StridedCNN(widths=(4, 8, 8)), nn.Identity(), image_dim=8, text_dim=4,
                         pooling="flatten").encode_image(torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match="text_encoder"):
        clip.DualEncoder(nn.Identity(), nn.Identity(), image_dim=4, text_dim=4).encode_text(torch.rand(2, 5))
    with pytest.raises(ValueError, match="image_encoder"):
        clip.DualEncoder(nn.Identity(), nn.Identity(), image_dim=4, text_dim=4).encode_image(torch.rand(5))
    with pytest.raises(ValueError, match="no tokenizer"):
        model.tokenize(["a red circle"])
    with pytest.raises(TypeError, match="texts"):
        _controlled().tokenize("a red circle")
    with pytest.raises(ValueError, match="images"):
        model.embed_images(torch.rand(3, 32, 32))


# --------------------------------------------------------------------------- #
# The loss with hard negatives
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("b, k", [(1, 1), (4, 4), (6, 2)])
def test_hard_negative_loss_closed_form(b, k):
    z = torch.ones(b, 3)  # every similarity equal: log(B + K) one way, log(B) the other
    loss = clip.clip_loss_with_hard_negatives(z, z, torch.ones(k, 3), 1.0)
    assert loss.item() == pytest.approx(0.5 * (math.log(b + k) + math.log(b)), abs=1e-5)


def test_hard_negative_loss_without_negatives_is_clip_loss():
    torch.manual_seed(0)
    a, t = torch.randn(5, 4), torch.randn(5, 4)
    scale = torch.tensor(2.0)
    got = clip.clip_loss_with_hard_negatives(a, t, torch.zeros(0, 4), scale)
    assert got.item() == pytest.approx(losses.clip_loss(a, t, scale).item(), abs=1e-6)


def test_hard_negative_loss_explicit_formula_and_gradient():
    torch.manual_seed(1)
    a, t, n = torch.randn(3, 4), torch.randn(3, 4), torch.randn(2, 4)
    scale = torch.tensor(1.5, requires_grad=True)
    got = clip.clip_loss_with_hard_negatives(a, t, n, scale)
    img, txt = F.normalize(a, dim=1), F.normalize(torch.cat([t, n]), dim=1)
    logits = scale.exp() * img @ txt.t()
    targets = torch.arange(3)
    expected = 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits[:, :3].t(), targets))
    assert got.item() == pytest.approx(expected.item(), abs=1e-6)
    got.backward()
    assert scale.grad is not None and torch.isfinite(scale.grad)
    # with aligned pairs, a negative identical to a true caption raises the loss more than its opposite does
    assert clip.clip_loss_with_hard_negatives(a, a, a[:1], 1.5) > clip.clip_loss_with_hard_negatives(a, a, -a[:1], 1.5)
    # the scale is clamped at 100
    assert clip.clip_loss_with_hard_negatives(a, t, n, math.log(1000)).item() == \
        pytest.approx(clip.clip_loss_with_hard_negatives(a, t, n, math.log(100)).item())


@pytest.mark.parametrize("args, error, match", [
    ((torch.rand(3, 4), torch.rand(2, 4), torch.rand(2, 4), 1.0), ValueError, "same shape"),
    ((torch.rand(3, 4), torch.rand(3, 4), torch.rand(2, 5), 1.0), ValueError, "negative_text_emb"),
    ((torch.rand(3), torch.rand(3), torch.rand(2, 3), 1.0), ValueError, "image_emb"),
    ((torch.rand(3, 4), torch.rand(3, 4), torch.rand(2, 4), torch.ones(2)), ValueError, "logit_scale"),
    ((torch.rand(3, 4), torch.rand(3, 4), [[0.0] * 4], 1.0), TypeError, "negative_text_emb"),
])
def test_hard_negative_loss_bad_input(args, error, match):
    with pytest.raises(error, match=match):
        clip.clip_loss_with_hard_negatives(*args)


# --------------------------------------------------------------------------- #
# Similarity and zero-shot classification
# --------------------------------------------------------------------------- #
def test_similarity_is_the_cosine_matrix():
    model = _controlled()
    images = _images([[1, 0, 1, 0, 0, 0], [0, 1, 0, 1, 0, 0], [0, 0, 0, 0, 1, 1]])
    texts = ["red", "left blue", "circle square", "left red"]
    sim = clip.similarity(model, images, texts, batch_size=2)
    expected = F.normalize(images.flatten(1), dim=1) @ F.normalize(_bag(texts), dim=1).t()
    assert sim.shape == (3, 4) and torch.allclose(sim, expected, atol=1e-6)


def test_zero_shot_classify_and_prompt_ensembles():
    model = _controlled()
    images = _images([[0, 0, 1, 0, 0, 0], [0, 0, 0, 1, 0, 0], [0, 0, 1, 0, 1, 0], [0, 0, 0, 1, 0, 1]])
    pred, prob = clip.zero_shot_classify(model, images, ["red", "blue"])
    assert pred.tolist() == [0, 1, 0, 1] and prob.shape == (4, 2)
    assert torch.allclose(prob.sum(1), torch.ones(4))
    # prob is the softmax of the scaled cosines
    expected = (model.scale() * F.normalize(images.flatten(1), dim=1)
                @ F.normalize(_bag(["red", "blue"]), dim=1).t()).softmax(1)
    assert torch.allclose(prob, expected, atol=1e-5)
    # An ensemble is the renormalized mean of its prompts' unit embeddings: "circle" + "square" -> both
    pred, _ = clip.zero_shot_classify(model, images, [["red circle", "red square"], ["blue circle", "blue square"]])
    assert pred.tolist() == [0, 1, 0, 1]
    pred, _ = clip.zero_shot_classify(model, images, [["circle"], ["square", "blue square"]])
    assert pred.tolist()[2:] == [0, 1]


@pytest.mark.parametrize("prompts, error, match", [
    ("red", TypeError, "prompts"),
    ([], ValueError, "prompts"),
    ([["red"], []], TypeError, r"prompts\[1\]"),
    ([["red", 3]], TypeError, r"prompts\[0\]"),
])
def test_zero_shot_bad_prompts(prompts, error, match):
    with pytest.raises(error, match=match):
        clip.zero_shot_classify(_controlled(), _images([[1, 0, 0, 0, 0, 0]]), prompts)


def test_evaluation_needs_a_dual_encoder():
    with pytest.raises(TypeError, match="DualEncoder"):
        clip.similarity(nn.Linear(2, 2), torch.rand(1, 3, 4, 4), ["a"])
    with pytest.raises(TypeError, match="DualEncoder"):
        clip.zero_shot_classify(None, torch.rand(1, 3, 4, 4), ["a"])
    with pytest.raises(TypeError, match="strings"):
        clip.similarity(_controlled(), _images([[1, 0, 0, 0, 0, 0]]), ["red", 2])


# --------------------------------------------------------------------------- #
# The relation-swap test
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
    assert clip.swap_relation(caption) == swapped


def test_swap_relation_makes_generated_captions_false():
    scenes = world.sample_scenes(200, min_objects=2, max_objects=2, seed=3)
    for scene, caption in zip(scenes, world.captions(scenes, seed=4)):
        assert world.facts_hold(world.parse_caption(caption), scene)
        assert not world.facts_hold(world.parse_caption(clip.swap_relation(caption)), scene)


def test_swap_relation_bad_input():
    with pytest.raises(ValueError, match="no relation"):
        clip.swap_relation("a red circle")
    with pytest.raises(ValueError, match="no relation"):
        clip.swap_relation("a red circle leftover")  # whole words only
    with pytest.raises(TypeError, match="caption"):
        clip.swap_relation(None)


def test_relation_swap_accuracy_closed_form():
    captions = ["red left of blue", "blue left of red", "red right of blue"]
    # Images whose features say "left" (dim 0) or "right" (dim 1): the relation is read correctly.
    images = _images([[1, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0]])
    assert clip.relation_swap_accuracy(_controlled(), images, captions) == pytest.approx(1.0)
    # Images that only show the colors: the caption and its swap tie, each tie counts one half.
    images = _images([[0, 0, 1, 1, 0, 0]] * 3)
    assert clip.relation_swap_accuracy(_controlled(), images, captions) == pytest.approx(0.5)
    # Wrong way round: always fooled.
    images = _images([[0, 1, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]])
    assert clip.relation_swap_accuracy(_controlled(), images, captions) == pytest.approx(0.0)


def test_relation_swap_accuracy_bad_input():
    images = _images([[1, 0, 0, 0, 0, 0]] * 2)
    with pytest.raises(ValueError, match="same length"):
        clip.relation_swap_accuracy(_controlled(), images, ["red left of blue"])
    with pytest.raises(ValueError, match="no relation"):
        clip.relation_swap_accuracy(_controlled(), images, ["red", "blue"])
    with pytest.raises(ValueError, match="images"):
        clip.relation_swap_accuracy(_controlled(), torch.rand(2, 6), ["red left of blue"] * 2)


# --------------------------------------------------------------------------- #
# Position swaps
# --------------------------------------------------------------------------- #
def test_swap_positions_reverses_the_relation_and_keeps_the_objects():
    scenes = world.sample_scenes(100, min_objects=2, max_objects=3, seed=5)
    for scene in scenes:
        swapped = clip.swap_positions(scene, 0, 1)
        assert [o.desc for o in swapped.objects] == [o.desc for o in scene.objects]
        a, b = swapped.objects[0], swapped.objects[1]
        for o in (a, b):
            r = world._RADIUS[o.size]
            assert r <= o.x <= 1 - r and r <= o.y <= 1 - r
        if a.size == b.size:  # no border correction: the places are exchanged exactly
            assert (a.x, a.y, b.x, b.y) == (scene.objects[1].x, scene.objects[1].y,
                                            scene.objects[0].x, scene.objects[0].y)
            assert swapped.relation(0, 1) == scene.relation(1, 0)
        if len(scene) == 3:
            assert swapped.objects[2] == scene.objects[2]


@pytest.mark.parametrize("i, j, error, match", [
    (0, 0, ValueError, "differ"), (0, 2, ValueError, "j"), (-1, 1, ValueError, "i"), (True, 1, ValueError, "i"),
])
def test_swap_positions_bad_input(i, j, error, match):
    scene = world.sample_scenes(1, min_objects=2, max_objects=2)[0]
    with pytest.raises(error, match=match):
        clip.swap_positions(scene, i, j)
    with pytest.raises(TypeError, match="scene"):
        clip.swap_positions("scene")


# --------------------------------------------------------------------------- #
# The tiny Hugging Face CLIP
# --------------------------------------------------------------------------- #
def test_tiny_clip_config_builds_a_clip_model_for_the_course_tokenizer():
    from transformers import CLIPModel

    tok = text.train_tokenizer(["a red circle left of a blue square", "a big green star"])
    config = clip.tiny_clip_config(tok, hidden=16, layers=1, heads=2, projection_dim=8, max_length=12)
    assert config.text_config.vocab_size == len(tok)
    assert config.text_config.eos_token_id == tok.eos_token_id == 3
    assert config.text_config.pad_token_id == tok.pad_token_id
    assert config.logit_scale_init_value == pytest.approx(math.log(1 / 0.07))
    model = CLIPModel(config).eval()
    ids, mask = text.encode_batch(tok, ["a red circle", "a big green star left of a blue square"], max_length=12)
    for n_images in (1, 3):
        out = model(input_ids=ids, attention_mask=mask, pixel_values=torch.rand(n_images, 3, 32, 32))
        assert out.logits_per_image.shape == (n_images, 2) and out.logits_per_text.shape == (2, n_images)
        assert out.image_embeds.shape == (n_images, 8) and out.text_embeds.shape == (2, 8)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(image_size=30), ValueError, "divisible"),
    (dict(hidden=30, heads=4), ValueError, "divisible"),
    (dict(layers=0), ValueError, "layers"),
    (dict(patch_size=True), ValueError, "patch_size"),
])
def test_tiny_clip_config_bad_input(kwargs, error, match):
    tok = text.train_tokenizer(["a red circle"])
    with pytest.raises(error, match=match):
        clip.tiny_clip_config(tok, **kwargs)


def test_tiny_clip_config_needs_a_tokenizer():
    with pytest.raises(TypeError, match="tokenizer"):
        clip.tiny_clip_config("bert")
