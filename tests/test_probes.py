"""Tests of the unimodal probe helpers."""
import pytest
import torch
from torch import nn

import mmutils.world as W
from mmutils import probes as P
from mmutils.nn import encoders as E


def _pair(left, right):
    return W.Scene((W.Obj(*left), W.Obj(*right)))


def test_sample_probe_scenes_have_a_clear_layout():
    scenes = P.sample_probe_scenes(50, min_gap=0.15, seed=3)
    assert len(scenes) == 50 and all(len(s) == 2 for s in scenes)
    for s in scenes:
        a, b = s.objects
        assert abs(a.x - b.x) > 0.15 and abs(a.y - b.y) > 0.15
    assert scenes == P.sample_probe_scenes(50, min_gap=0.15, seed=3)
    assert scenes != P.sample_probe_scenes(50, min_gap=0.15, seed=4)


def test_probe_labels_closed_form():
    # The blue square is left of and above the red circle.
    scene = _pair(("circle", "red", "small", 0.8, 0.8), ("square", "blue", "large", 0.2, 0.3))
    labels = P.probe_labels([scene, scene])
    assert set(labels) == set(P.TARGETS)
    assert P.TARGETS == {"shape_left": 6, "color_left": 6, "size_left": 2, "shape_top": 6, "left_above": 2}
    assert labels["shape_left"].tolist() == [W.SHAPES.index("square")] * 2
    assert labels["color_left"][0] == W.COLORS.index("blue")
    assert labels["size_left"][0] == W.SIZES.index("large")
    assert labels["shape_top"][0] == W.SHAPES.index("square")
    assert labels["left_above"][0] == 1
    flipped = _pair(("circle", "red", "small", 0.8, 0.2), ("square", "blue", "large", 0.2, 0.7))
    lab = P.probe_labels([flipped])
    assert lab["shape_top"][0] == W.SHAPES.index("circle") and lab["left_above"][0] == 0


@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("readout, in_dim", [("flatten", 16 * 8), ("pooled", 8), ("mean", 8)])
def test_probe_on_image_tokens(batch, readout, in_dim):
    probe = P.UnimodalProbe(E.ConvTower(widths=(4, 4, 4), max_pool=True, out_dim=8), in_dim, readout=readout, hidden=16)
    out = probe(torch.rand(batch, 3, 32, 32))
    assert {k: tuple(v.shape) for k, v in out.items()} == {k: (batch, c) for k, c in P.TARGETS.items()}


@pytest.mark.parametrize("batch", [2, 4])
def test_probe_on_text_respects_padding(batch):
    torch.manual_seed(0)
    enc = E.RNNTextEncoder(30, 8, 4)
    probe = P.UnimodalProbe(enc, enc.out_dim, {"a": 3}, hidden=0).eval()  # linear head
    ids = torch.randint(5, 30, (batch, 6))
    mask = torch.ones(batch, 6, dtype=torch.long)
    out = probe(ids, mask)["a"]
    ids_pad = torch.cat([ids, torch.zeros(batch, 2, dtype=torch.long)], 1)
    mask_pad = torch.cat([mask, torch.zeros(batch, 2, dtype=torch.long)], 1)
    assert out.shape == (batch, 3)
    assert torch.allclose(out, probe(ids_pad, mask_pad)["a"], atol=1e-5)


def test_probe_on_vector_encoder_and_loss():
    enc = nn.Linear(5, 7)
    probe = P.UnimodalProbe(enc, 7, {"a": 2, "b": 4})
    x = torch.randn(6, 5)
    logits = probe(x)
    labels = {"a": torch.zeros(6, dtype=torch.long), "b": torch.ones(6, dtype=torch.long),
              "extra": torch.zeros(6, dtype=torch.long)}
    loss = P.probe_loss(logits, labels)
    expected = (nn.functional.cross_entropy(logits["a"], labels["a"])
                + nn.functional.cross_entropy(logits["b"], labels["b"]))
    assert torch.allclose(loss, expected)


def test_probe_learns_and_accuracy():
    torch.manual_seed(0)
    x = torch.randn(200, 4)
    labels = {"sign": (x[:, 0] > 0).long()}
    probe = P.UnimodalProbe(nn.Identity(), 4, {"sign": 2}, hidden=0)
    opt = torch.optim.Adam(probe.parameters(), lr=0.1)
    for _ in range(60):
        loss = P.probe_loss(probe(x), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    probe.train()
    acc = P.probe_accuracy(probe, (x,), labels, batch_size=64)
    assert acc["sign"] > 0.95 and probe.training  # mode restored
    chance = P.chance_accuracy({"sign": labels["sign"], "const": torch.zeros(10, dtype=torch.long)})
    assert chance["const"] == 1.0 and 0.4 < chance["sign"] < 0.6


@pytest.mark.parametrize("call, exc, match", [
    (lambda: P.probe_labels(W.sample_scenes(3, min_objects=1, max_objects=1)), ValueError, "exactly 2"),
    (lambda: P.probe_labels([]), ValueError, "scenes"),
    (lambda: P.UnimodalProbe(nn.Identity(), 4)(torch.randn(2, 5)), ValueError, "in_dim"),
    (lambda: P.UnimodalProbe(nn.Identity(), 4)(torch.randn(2, 3, 4, 5)), ValueError, "encoder output"),
    (lambda: P.probe_loss({"a": torch.randn(3, 2)}, {"b": torch.zeros(3, dtype=torch.long)}), ValueError, "labels"),
    (lambda: P.probe_loss({"a": torch.randn(3, 2)}, {"a": torch.zeros(3)}), TypeError, r"labels\['a'\]"),
])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
