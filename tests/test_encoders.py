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
