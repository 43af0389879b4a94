"""Tests of mmutils.keras_port: the Keras text + image + audio classifier in PyTorch, bugs fixed."""
import pytest
import torch
from torch import nn

from mmutils import keras_port as K

SMALL = dict(vocab_size=20, num_classes=5, text_len=10, image_size=16, audio_len=800, filters=4, embed_dim=6,
             image_stages=2, audio_stages=2, hidden=12)


def _inputs(batch, config=K.KerasPortConfig(**SMALL)):
    torch.manual_seed(1)
    ids = torch.randint(1, config.vocab_size, (batch, config.text_len))
    ids[0, -3:] = 0  # padding
    images = torch.rand(batch, config.image_channels, config.image_size, config.image_size)
    return ids, images, torch.randn(batch, config.audio_len)


def _keras_side(n, kernel=3, pool=2):  # Keras' 'valid' convolution, then pooling
    return (n - kernel + 1) // pool


@pytest.mark.parametrize("size, stages, padding, side", [(32, 1, "valid", 15), (224, 1, "valid", 111),
                                                         (32, 3, "same", 4), (16, 2, "same", 4)])
def test_image_model_widths_follow_keras_arithmetic(size, stages, padding, side):
    model = K.image_model(3, 8, stages=stages, padding=padding)
    if stages == 1 and padding == "valid":
        assert side == _keras_side(size)
    assert model(torch.zeros(2, 3, size, size)).shape == (2, 8 * side * side)


def test_text_and_audio_widths():
    text = K.text_model(30, embed_dim=5, filters=7)
    assert text(torch.randint(0, 30, (3, 16))).shape == (3, 7 * _keras_side(16))  # 16 -> 14 -> 7
    audio = K.audio_model(filters=6)
    assert audio(torch.randn(3, 4000)).shape == (3, 6 * 7)  # 4000 -> 500 -> 62 -> 7


def test_text_model_is_embedding_conv1d_maxpool_flatten():
    """Reference check: the same weights applied by hand, channels-last as Keras computes it."""
    torch.manual_seed(0)
    model = K.text_model(12, embed_dim=4, filters=3)
    embed, conv = model[0], model[2]
    ids = torch.randint(0, 12, (2, 9))
    x = embed.weight[ids]  # (B, L, E), channels-last
    windows = torch.stack([x[:, t:t + 3].flatten(1) for t in range(9 - 2)], dim=1)  # (B, 7, 3 * E)
    kernel = conv.weight.permute(0, 2, 1).flatten(1)  # (filters, 3 * E), ordered (tap, channel)
    y = torch.relu(windows @ kernel.t() + conv.bias)  # (B, 7, filters)
    y = y[:, :6].reshape(2, 3, 2, 3).amax(dim=2)  # MaxPooling1D(2) over time: (B, 3, filters)
    expected = y.transpose(1, 2).flatten(1)  # PyTorch flattens channels-first: (B, filters * 3)
    torch.testing.assert_close(model(ids), expected)


@pytest.mark.parametrize("batch", [1, 4])
def test_net_shapes_and_dims(batch):
    torch.manual_seed(0)
    net = K.KerasPortNet(**SMALL).eval()
    assert net.dims == {"text": 4 * 4, "image": 4 * 4 * 4, "audio": 4 * 12}  # 800 -> 100 -> 12
    assert net.fusion[0].in_features == sum(net.dims.values())
    ids, images, wave = _inputs(batch)
    feats = net.features(ids, images, wave)
    assert {k: tuple(v.shape) for k, v in feats.items()} == {k: (batch, d) for k, d in net.dims.items()}
    logits = net(ids, images, wave)
    assert logits.shape == (batch, 5)
    # forward = classifier(fuse(features)) with the weights made once: two calls agree
    torch.testing.assert_close(logits, net.classifier(net.fuse(list(feats.values()))))
    torch.testing.assert_close(net(ids, images, wave), logits)


def test_fusion_dense_is_a_parameter():
    net = K.KerasPortNet(**SMALL)
    names = {n for n, _ in net.named_parameters()}
    assert {"fusion.0.weight", "fusion.0.bias", "classifier.weight"} <= names
    assert net.config == K.KerasPortConfig(**SMALL)
    assert K.KerasPortNet(K.KerasPortConfig(**SMALL), hidden=7).fusion[0].out_features == 7


def test_trains():
    torch.manual_seed(0)
    net = K.KerasPortNet(**{**SMALL, "num_classes": 2})
    ids, images, wave = _inputs(8)
    y = (images[:, 0].mean((1, 2)) > images[:, 0].mean()).long()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = nn.functional.cross_entropy(net(ids, images, wave), y)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("call, exc, match", [
    (lambda n, i, x, w: n(i, x.permute(0, 2, 3, 1), w), ValueError, "channels-first"),
    (lambda n, i, x, w: n(i[:, :5], x, w), ValueError, "ids must have size 10"),
    (lambda n, i, x, w: n(i.float(), x, w), TypeError, "ids must be an integer tensor"),
    (lambda n, i, x, w: n(i, x, w[:, :100]), ValueError, "wave must have size 800"),
])
def test_bad_input(call, exc, match):
    net = K.KerasPortNet(**SMALL)
    with pytest.raises(exc, match=match):
        call(net, *_inputs(3))


@pytest.mark.parametrize("build, exc, match", [
    (lambda: K.text_model(20, kernel_size=(3, 3)), TypeError, "kernel_size must be an int"),
    (lambda: K.text_model(20, pool_size=(2, 2)), TypeError, "pool_size must be an int"),
    (lambda: K.image_model(padding="full"), ValueError, "padding"),
    (lambda: K.KerasPortNet(**{**SMALL, "image_size": 3}), ValueError, "config.image_size"),
    (lambda: K.KerasPortNet(**SMALL, colour=3), TypeError, "unknown KerasPortConfig field"),
])
def test_bad_config(build, exc, match):
    with pytest.raises(exc, match=match):
        build()
