"""Shape, mask and bad-input tests of the unimodal encoders."""
import pytest
import torch

from mmutils import encoders as E


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_spatial_cnn_keeps_the_grid(batch):
    cnn = E.SpatialCNN(widths=(8, 16, 16), out_dim=24)
    tokens = cnn(torch.rand(batch, 3, 32, 32))
    assert tokens.shape == (batch, 16, 24)
    assert E.SpatialCNN.pool(tokens).shape == (batch, 24)
    assert cnn.grid(torch.rand(batch, 3, 64, 64)).shape == (batch, 24, 8, 8)


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
    assert tokens.shape[:2] == (batch, 6) and pooled.shape == (batch, enc.out_dim)
    # Padding with extra [PAD] tokens leaves the pooled vector unchanged.
    ids_pad = torch.cat([ids, torch.zeros(batch, 4, dtype=torch.long)], dim=1)
    mask_pad = torch.cat([mask, torch.zeros(batch, 4, dtype=torch.long)], dim=1)
    tokens_pad, pooled_pad = enc(ids_pad, mask_pad)
    assert torch.allclose(pooled, pooled_pad, atol=1e-5)
    assert torch.allclose(tokens, tokens_pad[:, :6], atol=1e-5)


def test_masked_mean():
    x = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert E.masked_mean(x, torch.tensor([[1, 1, 0]])).item() == 2.0
    assert E.masked_mean(x).item() == pytest.approx(104 / 3)


@pytest.mark.parametrize("batch", [1, 3])
def test_audio_encoders(batch):
    wave = torch.randn(batch, 4000)
    tokens, pooled = E.WaveformEncoder(out_dim=12)(wave)
    assert tokens.shape[0] == batch and tokens.shape[2] == 12 and pooled.shape == (batch, 12)
    tokens, pooled = E.SpectrogramEncoder(widths=(4, 8), out_dim=10)(torch.randn(batch, 129, 63))
    assert tokens.shape == (batch, 15, 10) and pooled.shape == (batch, 10)


@pytest.mark.parametrize("call, match", [
    (lambda: E.SpatialCNN()(torch.rand(3, 32, 32)), "images"),
    (lambda: E.SpatialCNN()(torch.rand(2, 1, 32, 32)), "images"),
    (lambda: E.SpatialCNN()(torch.zeros(2, 3, 32, 32, dtype=torch.long)), "images"),
    (lambda: E.RNNTextEncoder(10)(torch.zeros(2, 3, 4, dtype=torch.long)), "ids"),
    (lambda: E.RNNTextEncoder(10)(torch.zeros(2, 3)), "ids"),
    (lambda: E.RNNTextEncoder(10)(torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 4)), "mask"),
    (lambda: E.RNNTextEncoder(10, cell="rnn"), "cell"),
    (lambda: E.TransformerTextEncoder(10, max_len=4)(torch.zeros(1, 5, dtype=torch.long)), "max_len"),
    (lambda: E.TransformerTextEncoder(10, dim=10, heads=3), "heads"),
    (lambda: E.WaveformEncoder()(torch.zeros(2, 2, 100)), "wave"),
    (lambda: E.SpectrogramEncoder()("spec"), "spec"),
    (lambda: E.masked_mean(torch.zeros(2, 3, 4), torch.ones(2, 5)), "mask"),
])
def test_bad_input(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_transformer_embed_std():
    torch.manual_seed(0)
    enc = E.TransformerTextEncoder(50, 32, 4, 1, max_len=8, embed_std=0.02)
    assert enc.embed.weight[1:].std().item() == pytest.approx(0.02, rel=0.2)
    assert torch.count_nonzero(enc.embed.weight[0]) == 0  # the [PAD] row stays zero
    assert E.TransformerTextEncoder(50, 32, 4, 1).embed.weight.std().item() > 0.5  # PyTorch default N(0, 1)
    with pytest.raises(ValueError, match="embed_std"):
        E.TransformerTextEncoder(50, 32, 4, 1, embed_std=0.0)


@pytest.mark.parametrize("batch", [1, 4])
def test_spectrogram_encoder_keeps_frequency_rows(batch):
    enc = E.SpectrogramEncoder(widths=(4, 8), out_dim=10, n_freq=65)
    assert enc.freq_rows == 16
    tokens, pooled = enc(torch.randn(batch, 65, 32))
    assert tokens.shape == (batch, 8, 10) and pooled.shape == (batch, 10)
    # Unlike the frequency mean, the projection sees where on the frequency axis energy sits.
    torch.manual_seed(0)
    low, high = torch.zeros(1, 65, 32), torch.zeros(1, 65, 32)
    low[:, 10], high[:, 40] = 1.0, 1.0
    enc.eval()
    assert not torch.allclose(enc(low)[1], enc(high)[1], atol=1e-4)
    with pytest.raises(ValueError, match="n_freq"):
        enc(torch.randn(batch, 64, 32))
    with pytest.raises(ValueError, match="n_freq"):
        E.SpectrogramEncoder(widths=(4, 8), n_freq=3)


def _keras_inputs(batch, length=7, vocab=20, samples=400):
    torch.manual_seed(1)
    ids = torch.randint(5, vocab, (batch, length))
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, length - 2:] = 0
    ids[0, length - 2:] = 0
    return ids, mask, torch.rand(batch, 3, 32, 32), torch.randn(batch, samples)


@pytest.mark.parametrize("batch", [1, 3, 6])
@pytest.mark.parametrize("kwargs", [dict(), dict(attention=False), dict(fusion_width=16)])
def test_keras_style_net_shapes_and_padding(batch, kwargs):
    torch.manual_seed(0)
    net = E.KerasStyleMultimodalNet(20, 5, embed_dim=8, lstm_units=6, conv_filters=4, audio_filters=3,
                                    hidden=12, **kwargs).eval()
    assert net.dims == {"text": 6, "image": 4 * 15 * 15, "audio": 3}
    ids, mask, images, wave = _keras_inputs(batch)
    logits = net(ids, mask, images, wave)
    assert logits.shape == (batch, 5)
    feats = net.features(ids, mask, images, wave)
    assert {k: tuple(v.shape) for k, v in feats.items()} == {"text": (batch, 6), "image": (batch, 900),
                                                            "audio": (batch, 3)}
    if net.attention is not None:
        w = net.last_attention
        assert w.shape == (batch, 7) and torch.allclose(w.sum(1), torch.ones(batch), atol=1e-5)
        assert torch.all(w[0, 5:] == 0)  # no weight on padding
    # More padding changes nothing; (B, 1, T) audio equals (B, T).
    ids_pad = torch.cat([ids, torch.zeros(batch, 3, dtype=torch.long)], dim=1)
    mask_pad = torch.cat([mask, torch.zeros(batch, 3, dtype=torch.long)], dim=1)
    assert torch.allclose(net(ids_pad, mask_pad, images, wave), logits, atol=1e-5)
    assert torch.allclose(net(ids, mask, images, wave.unsqueeze(1)), logits, atol=1e-6)


def test_keras_style_net_trains():
    torch.manual_seed(0)
    net = E.KerasStyleMultimodalNet(20, 2, embed_dim=8, lstm_units=6, conv_filters=4, audio_filters=3, hidden=12)
    ids, mask, images, wave = _keras_inputs(8)
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


@pytest.mark.parametrize("call, match", [
    (lambda n, i, m, x, w: n(i, m, x.permute(0, 2, 3, 1), w), "channels-first"),
    (lambda n, i, m, x, w: n(i, m, x[:, :, :16, :16], w), "images"),
    (lambda n, i, m, x, w: n(i, m, x[:2], w), "batch size"),
    (lambda n, i, m, x, w: n(i.float(), m, x, w), "ids"),
    (lambda n, i, m, x, w: n(i, m[:, :3], x, w), "mask"),
    (lambda n, i, m, x, w: n(i, m, x, w[:, :4]), "audio_kernel"),
    (lambda n, i, m, x, w: n(i, m, x, w.unsqueeze(1).repeat(1, 2, 1)), "wave"),
    (lambda n, i, m, x, w: E.KerasStyleMultimodalNet(20, 1), "num_classes"),
    (lambda n, i, m, x, w: E.KerasStyleMultimodalNet(20, 3, image_size=2), "image_size"),
])
def test_keras_style_net_bad_input(call, match):
    net = E.KerasStyleMultimodalNet(20, 3, embed_dim=8, lstm_units=6, conv_filters=4, audio_filters=3)
    with pytest.raises((ValueError, TypeError), match=match):
        call(net, *_keras_inputs(3))
