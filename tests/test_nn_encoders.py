"""Structure, shape, mask and bad-input tests of mmutils.nn.encoders."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmutils.nn import encoders as E


# --------------------------------------------------------------------------- #
# ConvTower
# --------------------------------------------------------------------------- #
def _plain_tower(c, widths, strides, max_pool, norm, groups, out_dim):
    """The tower spelled out layer by layer, as the three towers it replaces were written."""
    layers = []
    for w, s in zip(widths, strides):
        layers += [nn.Conv2d(c, w, 3, stride=s, padding=1, bias=False),
                   nn.BatchNorm2d(w) if norm == "batch" else nn.GroupNorm(groups, w), nn.ReLU(inplace=True)]
        layers += [nn.MaxPool2d(2)] if max_pool else []
        c = w
    return nn.Sequential(*layers, *([nn.Conv2d(c, out_dim, 1)] if out_dim else []))


@pytest.mark.parametrize("kwargs, plain", [
    # stride-1 convolutions with max-pooling and a 1x1 projection (chapters 1-5)
    (dict(in_channels=1, widths=(8, 16, 32), max_pool=True, out_dim=32),
     (1, (8, 16, 32), (1, 1, 1), True, "batch", 8, 32)),
    # stride-2 convolutions, no projection (chapter 9)
    (dict(widths=(16, 32, 64)), (3, (16, 32, 64), (2, 2, 2), False, "batch", 8, None)),
    # mixed strides, GroupNorm, max-pooled to a vector (chapter 10)
    (dict(widths=(16, 32), strides=(1, 2), norm="group", groups=4, pool="max"),
     (3, (16, 32), (1, 2), False, "group", 4, None)),
])
def test_conv_tower_is_the_plain_stack_with_the_same_seeded_init(kwargs, plain):
    torch.manual_seed(0)
    tower = E.ConvTower(**kwargs)
    torch.manual_seed(0)
    reference = _plain_tower(*plain)
    assert [type(m) for m in tower.modules()][2:] == [type(m) for m in reference.modules()][1:]
    ours, theirs = list(tower.state_dict().values()), list(reference.state_dict().values())
    assert len(ours) == len(theirs) and all(torch.equal(a, b) for a, b in zip(ours, theirs))
    x = torch.rand(3, plain[0], 32, 32)
    with torch.no_grad():
        fmap = reference(x)
        torch.testing.assert_close(tower.grid(x), fmap, rtol=0, atol=0)
        expected = {None: fmap.flatten(2).transpose(1, 2), "max": fmap.amax(dim=(2, 3))}[tower.pool]
        torch.testing.assert_close(tower(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("batch", [1, 3])
def test_conv_tower_shapes(batch):
    spatial = E.ConvTower(3, (8, 16, 16), max_pool=True, out_dim=24)
    tokens = spatial(torch.rand(batch, 3, 32, 32))
    assert tokens.shape == (batch, 16, 24) and spatial.channels == spatial.out_dim == 24 and spatial.stages == 3
    assert spatial.grid(torch.rand(batch, 3, 64, 64)).shape == (batch, 24, 8, 8)
    strided = E.ConvTower(3, (8, 16))  # stride 2 rounds up: 33 -> 17 -> 9
    assert strided.proj is None and strided.grid(torch.rand(batch, 3, 33, 33)).shape == (batch, 16, 9, 9)
    assert strided(torch.rand(batch, 3, 32, 32)).shape == (batch, 64, 16)
    # The grid side is the image side divided by every stride (chapter 10's strides=(1, 2, 2): H / 4).
    assert E.ConvTower(3, (8, 8, 8), strides=(1, 2, 2)).grid(torch.rand(batch, 3, 32, 32)).shape == (batch, 8, 8, 8)
    assert E.ConvTower(3, (8, 8), strides=(1, 2), max_pool=True).grid(
        torch.rand(batch, 3, 32, 32)).shape == (batch, 8, 4, 4)  # 32 / 2 = 16, then halved twice
    both = E.ConvTower(1, (8, 16), strides=(1, 2), norm="group", groups=4, pool="meanmax")
    assert (both.channels, both.out_dim) == (16, 32)
    x = torch.rand(batch, 1, 16, 16)
    fmap = both.grid(x)
    torch.testing.assert_close(both(x), torch.cat([fmap.mean(dim=(2, 3)), fmap.amax(dim=(2, 3))], dim=1))


def test_conv_tower_group_norm_keeps_images_independent():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 16, 16)
    group = E.ConvTower(widths=(8, 8), norm="group", groups=4, pool="mean")
    batch = E.ConvTower(widths=(8, 8), pool="mean")
    torch.testing.assert_close(group(x)[:2], group(x[:2]))  # in train mode too
    assert not torch.allclose(batch(x)[:2], batch(x[:2]))  # batch statistics mix the images


@pytest.mark.parametrize("call, exc, match", [
    (lambda: E.ConvTower(widths=()), ValueError, "widths"),
    (lambda: E.ConvTower(widths=16), TypeError, "widths"),
    (lambda: E.ConvTower(widths=(8, 8), strides=(2,)), ValueError, "strides"),
])
def test_conv_tower_bad_config(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# --------------------------------------------------------------------------- #
# RegionTagger
# --------------------------------------------------------------------------- #
def test_region_tagger_heads_and_loss():
    torch.manual_seed(0)
    tagger = E.RegionTagger(E.ConvTower(3, (8, 8), max_pool=True, out_dim=12), {"color": 7, "shape": 4})
    assert list(tagger.classes) == ["color", "shape"]  # split in the order given
    x = torch.rand(2, 3, 16, 16)
    out = tagger(x)
    assert {k: tuple(v.shape) for k, v in out.items()} == {"color": (2, 16, 7), "shape": (2, 16, 4)}
    regions = tagger.tower(x)  # (2, 16, 12)
    torch.testing.assert_close(out["shape"], regions @ tagger.heads["shape"].weight.t() + tagger.heads["shape"].bias)
    labels = {"color": torch.randint(0, 7, (2, 16)), "shape": torch.randint(0, 4, (2, 16))}
    expected = sum(F.cross_entropy(out[k].flatten(0, 1), labels[k].flatten()) for k in ("color", "shape"))
    torch.testing.assert_close(tagger.loss(x, labels), expected)


def test_region_tagger_accuracy_counts_occupied_cells_only():
    tagger = E.RegionTagger(E.ConvTower(3, (8,), out_dim=4), {"a": 3, "b": 2})
    with torch.no_grad():
        for head in tagger.heads.values():
            head.weight.zero_()
            head.bias.copy_(torch.tensor([0.0, 1.0, 0.0][: head.out_features]))  # always predicts class 1
    regions = torch.zeros(1, 4, 4)
    labels = {"a": torch.tensor([[0, 1, 1, 2]]), "b": torch.tensor([[0, 1, 0, 1]])}
    acc = tagger.accuracy(regions, labels)  # occupied cells: 1, 2, 3
    assert acc == pytest.approx({"a": 2 / 3, "b": 2 / 3, "all": 1 / 3})


def test_train_region_tagger_learns_and_locks_the_tower():
    torch.manual_seed(0)
    images = torch.rand(64, 3, 8, 8)
    labels = {"bright": (images.mean(1)[:, ::4, ::4].flatten(1) > 0.5).long()}  # (64, 4): brighter cells
    tagger = E.RegionTagger(E.ConvTower(3, (8, 8), out_dim=8), {"bright": 2})
    history = E.train_region_tagger(tagger, images, labels, steps=60, lr=1e-2, batch_size=16, desc=None)
    losses = history.losses
    assert sum(losses[-10:]) < sum(losses[:10])
    assert not tagger.training and not any(p.requires_grad for p in tagger.parameters())


@pytest.mark.parametrize("call, exc, match", [
    (lambda t: E.RegionTagger(E.ConvTower(pool="mean"), {"a": 2}), ValueError, "tower"),
    (lambda t: E.RegionTagger(E.ConvTower(), {}), ValueError, "heads"),
    (lambda t: E.train_region_tagger(t, torch.rand(2, 3, 16, 16), {"a": torch.zeros(2, 16, dtype=torch.long)}),
     ValueError, "labels"),
])
def test_region_tagger_bad_input(call, exc, match):
    tagger = E.RegionTagger(E.ConvTower(3, (8, 8)), {"a": 3, "b": 2})
    with pytest.raises(exc, match=match):
        call(tagger)


# --------------------------------------------------------------------------- #
# Text and audio encoders, ResNet
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("batch", [2, 5])
def test_resnet18_32(batch):
    model = E.resnet18_32(out_dim=10)
    assert model(torch.rand(batch, 3, 32, 32)).shape == (batch, 10)
    assert model.conv1.stride == (1, 1)


@pytest.mark.parametrize("cls, kwargs", [
    (E.RNNTextEncoder, dict(cell="gru")),
    (E.RNNTextEncoder, dict(cell="lstm", bidirectional=False)),
    (E.TransformerTextEncoder, dict(heads=2, layers=1, max_len=12)),
])
@pytest.mark.parametrize("batch", [1, 4])
def test_text_encoders_shapes_and_padding(cls, kwargs, batch):
    torch.manual_seed(0)
    enc = cls(30, 16, **({"hidden": 8} if cls is E.RNNTextEncoder else {}), **kwargs).eval()
    ids = torch.randint(5, 30, (batch, 6))
    mask = torch.ones(batch, 6, dtype=torch.long)
    tokens, pooled = enc(ids, mask)
    assert tokens.shape == (batch, 6, enc.out_dim) and pooled.shape == (batch, enc.out_dim)
    torch.testing.assert_close(pooled, tokens.mean(1))
    # Padding with extra [PAD] tokens changes neither the tokens nor the pooled vector.
    ids_pad = torch.cat([ids, torch.zeros(batch, 4, dtype=torch.long)], dim=1)
    mask_pad = torch.cat([mask, torch.zeros(batch, 4, dtype=torch.long)], dim=1)
    tokens_pad, pooled_pad = enc(ids_pad, mask_pad)
    assert torch.allclose(pooled, pooled_pad, atol=1e-5)
    assert torch.allclose(tokens, tokens_pad[:, :6], atol=1e-5)


def test_transformer_embed_std():
    torch.manual_seed(0)
    enc = E.TransformerTextEncoder(50, 32, 4, 1, max_len=8, embed_std=0.02)
    assert enc.embed.weight[1:].std().item() == pytest.approx(0.02, rel=0.2)
    assert torch.count_nonzero(enc.embed.weight[0]) == 0  # the [PAD] row stays zero
    assert E.TransformerTextEncoder(50, 32, 4, 1).embed.weight.std().item() > 0.5  # PyTorch default N(0, 1)


def test_transformer_without_layers_is_embeddings_and_norm():
    torch.manual_seed(0)
    enc = E.TransformerTextEncoder(30, 16, 2, 0, max_len=10, embed_std=0.02)
    assert enc.encoder is None
    # The same draws as chapter 2's word tokens: embeddings N(0, 0.02) with a zero [PAD] row, positions
    # N(0, 0.02), a LayerNorm; nothing else consumes random numbers.
    torch.manual_seed(0)
    embed = torch.nn.Embedding(30, 16, padding_idx=0)
    torch.nn.init.normal_(embed.weight, std=0.02)
    with torch.no_grad():
        embed.weight[0].zero_()
    pos = torch.randn(1, 10, 16) * 0.02
    norm = torch.nn.LayerNorm(16)
    expected = [pos, embed.weight, norm.weight, norm.bias]  # own parameters come first in a state_dict
    assert all(torch.equal(a, b) for a, b in zip(enc.state_dict().values(), expected, strict=True))
    ids = torch.randint(5, 30, (3, 6))
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[:, 4:] = False
    tokens, pooled = enc(ids, mask)
    torch.testing.assert_close(tokens, norm(embed(ids) + pos[:, :6]), rtol=0, atol=0)
    torch.testing.assert_close(pooled, tokens[:, :4].mean(1))


@pytest.mark.parametrize("batch", [1, 3])
def test_audio_encoders(batch):
    wave = torch.randn(batch, 4000)
    wenc = E.WaveformEncoder(out_dim=12).eval()
    tokens, pooled = wenc(wave)
    assert tokens.shape == (batch, 63, 12) and pooled.shape == (batch, 12)  # 4000 samples / 4^3 steps
    torch.testing.assert_close(wenc(wave.unsqueeze(1))[0], tokens)  # (B, 1, T) is the same input
    torch.testing.assert_close(pooled, tokens.mean(1))
    enc = E.SpectrogramEncoder(widths=(4, 8), out_dim=10).eval()
    spec = torch.randn(batch, 129, 63)
    tokens, pooled = enc(spec)
    assert tokens.shape == (batch, 15, 10) and pooled.shape == (batch, 10)
    torch.testing.assert_close(enc(spec.unsqueeze(1))[0], tokens)  # (B, 1, F, T) is the same input
    torch.testing.assert_close(tokens, enc.cnn.grid(spec.unsqueeze(1)).mean(dim=2).transpose(1, 2))


@pytest.mark.parametrize("batch", [1, 4])
def test_spectrogram_encoder_keeps_frequency_rows(batch):
    enc = E.SpectrogramEncoder(widths=(4, 8), out_dim=10, n_freq=65)
    assert enc.freq_rows == 16
    tokens, pooled = enc(torch.randn(batch, 65, 32))
    assert tokens.shape == (batch, 8, 10) and pooled.shape == (batch, 10)
    # Unlike the frequency mean, the projection sees where on the frequency axis energy sits.
    low, high = torch.zeros(1, 65, 32), torch.zeros(1, 65, 32)
    low[:, 10], high[:, 40] = 1.0, 1.0
    enc.eval()
    assert not torch.allclose(enc(low)[1], enc(high)[1], atol=1e-4)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: E.RNNTextEncoder(10)(torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 4)), ValueError, "mask"),
    (lambda: E.TransformerTextEncoder(10, max_len=4)(torch.zeros(1, 5, dtype=torch.long)), ValueError, "max_len"),
    (lambda: E.TransformerTextEncoder(10, dim=10, heads=3), ValueError, "heads"),
    (lambda: E.SpectrogramEncoder(widths=(4, 8), n_freq=65)(torch.randn(2, 64, 32)), ValueError, "n_freq"),
])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
