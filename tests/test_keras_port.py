"""Tests of mmutils.keras_port: the Keras text + image + audio network in PyTorch."""
import pytest
import torch

from mmutils.keras_port import KerasStyleMultimodalNet
from mmutils.nn.fusion import ConcatFusion

SMALL = dict(embed_dim=8, lstm_units=6, conv_filters=4, audio_filters=3, hidden=12)


def _inputs(batch, length=7, vocab=20, samples=400):
    torch.manual_seed(1)
    ids = torch.randint(5, vocab, (batch, length))
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, length - 2:] = 0
    ids[0, length - 2:] = 0
    return ids, mask, torch.rand(batch, 3, 32, 32), torch.randn(batch, samples)


def test_default_widths_are_the_keras_ones():
    net = KerasStyleMultimodalNet(100, 6)
    assert net.dims == {"text": 64, "image": 32 * 15 * 15, "audio": 32}
    assert net.head[0].in_features == sum(net.dims.values()) and net.head[0].out_features == 128


@pytest.mark.parametrize("batch", [1, 3, 6])
@pytest.mark.parametrize("kwargs", [dict(), dict(attention=False), dict(fusion_width=16)])
def test_shapes_and_padding(batch, kwargs):
    torch.manual_seed(0)
    net = KerasStyleMultimodalNet(20, 5, **SMALL, **kwargs).eval()
    assert net.dims == {"text": 6, "image": 4 * 15 * 15, "audio": 3}
    assert isinstance(net.head, ConcatFusion) == ("fusion_width" in kwargs)
    ids, mask, images, wave = _inputs(batch)
    logits = net(ids, mask, images, wave)
    assert logits.shape == (batch, 5)
    feats = net.features(ids, mask, images, wave)
    assert {k: tuple(v.shape) for k, v in feats.items()} == {"text": (batch, 6), "image": (batch, 900),
                                                            "audio": (batch, 3)}
    if net.attention is not None:
        w = net.last_attention
        assert w.shape == (batch, 7) and torch.allclose(w.sum(1), torch.ones(batch), atol=1e-5)
        assert torch.all(w[0, 5:] == 0)  # no weight on padding
    else:  # the LSTM state after the last real token
        lstm_out, _ = net.lstm(net.embed(ids[:1, :5]))
        torch.testing.assert_close(feats["text"][:1], lstm_out[:, -1])
    # More padding changes nothing; (B, 1, T) audio equals (B, T).
    ids_pad = torch.cat([ids, torch.zeros(batch, 3, dtype=torch.long)], dim=1)
    mask_pad = torch.cat([mask, torch.zeros(batch, 3, dtype=torch.long)], dim=1)
    assert torch.allclose(net(ids_pad, mask_pad, images, wave), logits, atol=1e-5)
    assert torch.allclose(net(ids, mask, images, wave.unsqueeze(1)), logits, atol=1e-6)


def test_trains():
    torch.manual_seed(0)
    net = KerasStyleMultimodalNet(20, 2, **SMALL)
    ids, mask, images, wave = _inputs(8)
    y = (images[:, 0].mean((1, 2)) > images[:, 0].mean()).long()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(net(ids, mask, images, wave), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


@pytest.mark.parametrize("call, exc, match", [
    (lambda n, i, m, x, w: n(i, m, x.permute(0, 2, 3, 1), w), ValueError, "channels-first"),
    (lambda n, i, m, x, w: n(i, m[:, :3], x, w), ValueError, "mask"),
])
def test_bad_input(call, exc, match):
    net = KerasStyleMultimodalNet(20, 3, **SMALL)
    with pytest.raises(exc, match=match):
        call(net, *_inputs(3))
