"""Tests of mmutils.clip: the dual encoder and its config, zero-shot classification, the relation-swap test
and the tiny CLIPConfig."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmutils import clip, text
from mmutils.nn.encoders import ConvTower, RNNTextEncoder

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
# The dual encoder
# --------------------------------------------------------------------------- #
def _dual(pooling="mean", embed_dim=16):
    cnn = ConvTower(3, (4, 8, 8))  # 32x32 -> 4 x 4 tokens of width 8
    txt = RNNTextEncoder(20, dim=8, hidden=8)  # -> 16-d
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
    assert model.scale().item() == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert model.scale().item() == pytest.approx(100.0, rel=1e-5)
    with torch.no_grad():
        model.logit_scale.fill_(-3.0)
    assert model.scale().item() == pytest.approx(1.0)
    frozen = clip.DualEncoder(nn.Identity(), nn.Identity(), image_dim=4, text_dim=4, embed_dim=4,
                              learn_logit_scale=False, init_logit_scale=0.0, max_logit_scale=1.0)
    assert not frozen.logit_scale.requires_grad and frozen.scale().item() == 1.0
    with torch.no_grad():
        frozen.logit_scale.fill_(3.0)
    assert frozen.scale().item() == pytest.approx(math.e)  # clamped at its own max_logit_scale


def test_config_and_keyword_overrides_build_the_same_model():
    config = clip.DualEncoderConfig(image_dim=12, text_dim=8, embed_dim=6, pooling="flatten")
    torch.manual_seed(0)
    a = clip.DualEncoder(nn.Identity(), nn.Identity(), config)
    torch.manual_seed(0)
    b = clip.DualEncoder(nn.Identity(), nn.Identity(), image_dim=12, text_dim=8, embed_dim=6, pooling="flatten")
    torch.manual_seed(0)
    c = clip.DualEncoder(nn.Identity(), nn.Identity(), clip.DualEncoderConfig(image_dim=12, text_dim=8),
                         embed_dim=6, pooling="flatten")  # overrides replace the config's fields
    assert a.config == b.config == c.config == config and a.config is not config
    for x, y, z in zip(a.state_dict().values(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(x, y) and torch.equal(x, z)


def test_mean_pooling_ignores_the_order_of_regions_and_flatten_does_not():
    tokens = torch.randn(2, 4, 3)
    permuted = tokens[:, [2, 0, 3, 1]]
    mean = clip.DualEncoder(nn.Identity(), nn.Identity(), image_dim=3, text_dim=3, embed_dim=5, pooling="mean")
    flat = clip.DualEncoder(nn.Identity(), nn.Identity(), image_dim=12, text_dim=3, embed_dim=5, pooling="flatten")
    assert torch.allclose(mean.encode_image(tokens), mean.encode_image(permuted), atol=1e-6)
    assert not torch.allclose(flat.encode_image(tokens), flat.encode_image(permuted), atol=1e-3)


def test_dual_encoder_accepts_pooled_outputs_and_tuples():
    # An image encoder with (B, D) output and a text encoder returning (tokens, pooled).
    model = clip.DualEncoder(nn.Flatten(), RNNTextEncoder(10, 4, 4), image_dim=12, text_dim=8, embed_dim=6)
    assert model.encode_image(torch.rand(3, 3, 2, 2)).shape == (3, 6)
    assert model.encode_text(torch.randint(0, 10, (2, 5))).shape == (2, 6)


def test_dual_encoder_without_text_projection_keeps_the_text_embedding():
    model = clip.DualEncoder(nn.Flatten(), nn.Identity(), image_dim=12, text_dim=4, embed_dim=4, project_text=False)
    emb = torch.randn(5, 4)
    assert torch.allclose(model.encode_text(emb), F.normalize(emb, dim=1))
    assert sum(p.numel() for p in model.text_proj.parameters()) == 0


def test_dual_encoder_with_a_transformers_tokenizer():
    tok = text.train_tokenizer(["a red circle left of a blue square"])
    model = clip.DualEncoder(nn.Flatten(), RNNTextEncoder(len(tok), 4, 4), image_dim=12, text_dim=8,
                             embed_dim=6, tokenizer=tok, max_length=10)
    ids, mask = model.tokenize(["a red circle", "a blue square left of a red circle"])
    assert ids.shape == mask.shape == (2, 10)
    model.train()
    emb = model.embed_texts(["a red circle"] * 3, batch_size=2)
    assert emb.shape == (3, 6) and model.training and not emb.requires_grad  # mode restored, no graph
    assert torch.allclose(emb, model.eval().encode_text(*model.tokenize(["a red circle"])).expand(3, 6), atol=1e-6)
    assert model.embed_images(torch.rand(5, 3, 2, 2), batch_size=2).shape == (5, 6)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(image_encoder="cnn"), TypeError, "image_encoder"),  # wrong type
    (dict(project_text=False), ValueError, "project_text"),  # inconsistent fields (text_dim != embed_dim)
])
def test_dual_encoder_bad_config(kwargs, error, match):
    args = dict(image_encoder=nn.Identity(), text_encoder=nn.Identity(), image_dim=4, text_dim=4, embed_dim=8)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        clip.DualEncoder(args.pop("image_encoder"), args.pop("text_encoder"), **args)


@pytest.mark.parametrize("call, error, match", [
    (lambda m: m.encode_image(torch.rand(2, 3, 32, 32)), ValueError, "image_dim"),  # pooled width != image_dim
    (lambda m: m.tokenize(["a red circle"]), ValueError, "no tokenizer"),
])
def test_dual_encoder_bad_input(call, error, match):
    model = clip.DualEncoder(ConvTower(3, (4, 8, 8)), nn.Identity(), image_dim=8 * 4, text_dim=4,
                             pooling="flatten")  # flatten gives 16 * 8, not 32
    with pytest.raises(error, match=match):
        call(model)


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


def test_evaluation_bad_input():
    with pytest.raises(TypeError, match="prompts"):  # one string, not a list of class prompts
        clip.zero_shot_classify(_controlled(), _images([[1, 0, 0, 0, 0, 0]]), "red")


# --------------------------------------------------------------------------- #
# The relation-swap test
# --------------------------------------------------------------------------- #
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


@pytest.mark.parametrize("captions, error, match", [
    (["red left of blue"], ValueError, "same length"),
    (["red", "blue"], ValueError, "relation"),  # nothing to swap
])
def test_relation_swap_accuracy_bad_input(captions, error, match):
    with pytest.raises(error, match=match):
        clip.relation_swap_accuracy(_controlled(), _images([[1, 0, 0, 0, 0, 0]] * 2), captions)


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
    model = CLIPModel(config).eval()
    ids, mask = text.encode_batch(tok, ["a red circle", "a big green star left of a blue square"], max_length=12)
    for n_images in (1, 3):
        out = model(input_ids=ids, attention_mask=mask, pixel_values=torch.rand(n_images, 3, 32, 32))
        assert out.logits_per_image.shape == (n_images, 2) and out.logits_per_text.shape == (2, n_images)
        assert out.image_embeds.shape == (n_images, 8) and out.text_embeds.shape == (2, 8)


def test_tiny_clip_config_bad_input():
    with pytest.raises(ValueError, match="divisible"):
        clip.tiny_clip_config(text.train_tokenizer(["a red circle"]), image_size=30)
