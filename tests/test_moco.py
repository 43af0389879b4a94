"""Tests of MoCo v2 pieces: encoder, batched augmentation, momentum update, queue, losses, probes."""
import copy
import math

import pytest
import torch
from torch import nn

from mmutils import losses as L
from mmutils import moco as M


def _small_encoder(norm="batch"):
    return lambda: M.ConvEncoder(3, (8, 16), norm=norm, groups=4)


def _moco(**kw):
    torch.manual_seed(0)
    args = dict(dim=8, queue_size=16, momentum=0.9, temperature=0.2, hidden=16)
    args.update(kw)
    return M.MoCo(_small_encoder(args.pop("norm", "batch")), **args)


# --------------------------------------------------------------------------- #
# Shapes
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("batch", [1, 3, 8])
@pytest.mark.parametrize("pool,factor", [("mean", 1), ("max", 1), ("meanmax", 2)])
def test_conv_encoder_shapes(batch, pool, factor):
    enc = M.ConvEncoder(3, (8, 16), pool=pool).eval()
    out = enc(torch.rand(batch, 3, 32, 32))
    assert out.shape == (batch, 16 * factor) and enc.out_dim == 16 * factor
    gray = M.ConvEncoder(1, (8, 16), strides=(1, 2), norm="group", groups=4)
    assert gray(torch.rand(batch, 1, 8, 8)).shape == (batch, 16)


@pytest.mark.parametrize("batch", [2, 5, 16])
def test_moco_and_in_batch_shapes(batch):
    model = _moco()
    x = torch.rand(batch, 3, 16, 16)
    assert model.encode_query(x).shape == (batch, 8)
    assert model.encode_key(x).shape == (batch, 8)
    loss = model(x, x)
    assert loss.ndim == 0 and torch.isfinite(loss)
    ib = M.InBatchContrast(_small_encoder(), dim=8, hidden=None)
    assert ib(x, x).ndim == 0


@pytest.mark.parametrize("batch", [1, 4, 12])
def test_augment_keeps_shape_device_range_and_varies(batch):
    torch.manual_seed(0)
    x = torch.rand(batch, 3, 32, 32)
    a, b = M.augment(x), M.augment(x)
    assert a.shape == x.shape and a.dtype == x.dtype and a.device == x.device
    assert a.min() >= 0 and a.max() <= 1
    assert not torch.allclose(a, b)
    assert M.augment(x, size=24).shape == (batch, 3, 24, 24)
    gray = M.augment(torch.rand(batch, 1, 8, 8), jitter=0.0, hue=0.0, grayscale_p=0.0)
    assert gray.shape == (batch, 1, 8, 8)


def test_augment_draws_parameters_per_image_and_v2_per_group():
    one = torch.rand(1, 3, 16, 16).expand(8, 3, 16, 16)
    torch.manual_seed(0)
    assert torch.unique(M.augment(one).flatten(1), dim=0).shape[0] == 8
    assert torch.unique(M.augment_v2(one, groups=1).flatten(1), dim=0).shape[0] == 1
    assert torch.unique(M.augment_v2(one, groups=4).flatten(1), dim=0).shape[0] == 4
    out = M.augment_v2(one, size=12, groups=2)
    assert out.shape == (8, 3, 12, 12) and out.min() >= 0 and out.max() <= 1


def test_augment_generator_reproduces_and_grayscale_equalizes_channels():
    x = torch.rand(5, 3, 16, 16)
    g = torch.Generator().manual_seed(3)
    a = M.augment(x, generator=g)
    b = M.augment(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    gray = M.augment(x, crop_scale=(1.0, 1.0), jitter=0.0, hue=0.0, grayscale_p=1.0)
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])


def test_hue_rotation_closed_form():
    turn = 2 * math.pi / 3
    rot = M.hue_rotation(torch.tensor([0.0, turn, -turn, 1.234]))
    assert rot.shape == (4, 3, 3)
    assert torch.allclose(rot[0], torch.eye(3), atol=1e-6)
    red, green, blue = torch.eye(3)
    assert torch.allclose(rot[1] @ red, green, atol=1e-6) and torch.allclose(rot[1] @ green, blue, atol=1e-6)
    assert torch.allclose(rot[2] @ red, blue, atol=1e-6)
    assert torch.allclose(rot[3] @ torch.ones(3), torch.ones(3), atol=1e-6)  # gray stays gray
    assert torch.allclose(rot[3] @ rot[3].t(), torch.eye(3), atol=1e-6)  # a rotation


# --------------------------------------------------------------------------- #
# Closed forms
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("k", [1, 7, 64])
def test_moco_loss_with_equal_queue_is_log_k_plus_1(k):
    key = torch.randn(4, 8)
    queue = key[:1].expand(k, 8).clone()
    key = key[:1].expand(4, 8)
    query = torch.randn(4, 8)
    assert torch.isclose(L.moco_loss(query, key, queue, 0.2), torch.tensor(math.log(k + 1)), atol=1e-5)


@pytest.mark.parametrize("queue_size", [1, 10, 100])
def test_moco_module_with_queue_of_equal_keys_is_log_k_plus_1(queue_size):
    model = _moco(queue_size=queue_size).eval()
    x = torch.rand(1, 3, 16, 16).expand(5, 3, 16, 16).contiguous()  # five copies of one image
    k = model.encode_key(x)
    assert torch.allclose(k, k[:1].expand_as(k), atol=1e-6)
    model.queue.keys.copy_(k[:1].expand(queue_size, -1))
    loss = model(torch.rand(5, 3, 16, 16), x)
    assert torch.isclose(loss, torch.tensor(math.log(queue_size + 1)), atol=1e-4)


def test_in_batch_contrast_equal_embeddings_is_log_b():
    torch.manual_seed(0)
    model = M.InBatchContrast(_small_encoder(), dim=8).eval()
    x = torch.rand(1, 3, 16, 16).expand(6, 3, 16, 16).contiguous()
    assert torch.isclose(model(x, x), torch.tensor(math.log(6)), atol=1e-4)


# --------------------------------------------------------------------------- #
# Momentum update
# --------------------------------------------------------------------------- #
def test_momentum_update_equals_formula():
    torch.manual_seed(0)
    online, target = nn.Linear(4, 3), nn.Linear(4, 3)
    before = [p.clone() for p in target.parameters()]
    M.momentum_update(online, target, 0.9)
    for b, o, t in zip(before, online.parameters(), target.parameters()):
        assert torch.allclose(t, 0.9 * b + 0.1 * o)
        assert not t.requires_grad or t.grad is None
    M.momentum_update(online, target, 0.0)
    assert all(torch.equal(o, t) for o, t in zip(online.parameters(), target.parameters()))
    kept = [p.clone() for p in target.parameters()]
    M.momentum_update(nn.Linear(4, 3), target, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(kept, target.parameters()))


def test_moco_step_updates_key_encoder_by_momentum_and_gives_it_no_grad():
    model = _moco(momentum=0.9)
    x = torch.rand(6, 3, 16, 16)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model(x, x).backward()
    opt.step()
    assert all(p.grad is None and not p.requires_grad for p in model.key_backbone.parameters())
    assert all(p.grad is None for p in model.key_head.parameters())
    assert all(p.grad is not None for p in model.backbone.parameters())
    key_before = [p.clone() for p in model.key_backbone.parameters()]
    query_now = [p.clone() for p in model.backbone.parameters()]
    model(x, x)  # the next forward applies the momentum step first
    for b, q, k in zip(key_before, query_now, model.key_backbone.parameters()):
        assert torch.allclose(k, 0.9 * b + 0.1 * q, atol=1e-6)
    assert not torch.allclose(key_before[0], query_now[0])  # the two encoders really differ


# --------------------------------------------------------------------------- #
# Queue
# --------------------------------------------------------------------------- #
def test_queue_wraps_around():
    q = M.KeyQueue(5, 2)
    rows = torch.arange(16, dtype=torch.float32).view(8, 2)  # key i is [2i, 2i+1]
    q.enqueue(rows[:3])
    assert int(q.ptr) == 3 and int(q.filled) == 3
    assert torch.equal(q.keys[:3], rows[:3])
    q.enqueue(rows[3:6])  # slots 3, 4, then wraps to 0
    assert int(q.ptr) == 1 and int(q.filled) == 5
    assert torch.equal(q.keys, torch.stack([rows[5], rows[1], rows[2], rows[3], rows[4]]))
    q.enqueue(rows[6:8])  # slots 1, 2
    assert torch.equal(q.keys, torch.stack([rows[5], rows[6], rows[7], rows[3], rows[4]]))
    assert int(q.ptr) == 3


def test_queue_batch_longer_than_queue_keeps_last_keys_in_sequential_slots():
    q = M.KeyQueue(3, 1)
    q.enqueue(torch.zeros(1, 1))  # ptr 1
    q.enqueue(torch.arange(1, 8, dtype=torch.float32).view(7, 1))  # keys 1..7 at slots 1,2,0,1,2,0,1
    assert q.keys.view(-1).tolist() == [6.0, 7.0, 5.0]
    assert int(q.ptr) == 8 % 3


def test_queue_stores_ids_with_wrap_around():
    q = M.KeyQueue(4, 2)
    assert q.ids.tolist() == [-1, -1, -1, -1]
    q.enqueue(torch.randn(3, 2), torch.tensor([7, 8, 9]))
    q.enqueue(torch.randn(2, 2), torch.tensor([10, 11]))
    assert q.ids.tolist() == [11, 8, 9, 10]
    q.enqueue(torch.randn(1, 2))  # keys without ids get -1
    assert q.ids.tolist() == [11, -1, 9, 10]
    with pytest.raises(ValueError, match="ids"):
        q.enqueue(torch.randn(2, 2), torch.tensor([1, 2, 3]))
    with pytest.raises(TypeError, match="ids"):
        q.enqueue(torch.randn(2, 2), torch.tensor([1.0, 2.0]))


def test_enqueue_happens_after_logits():
    model = _moco(queue_size=8)
    x_q, x_k = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    ref = copy.deepcopy(model)
    old_queue = model.queue.keys.clone()
    ref.momentum_update()
    q, k = ref.encode_query(x_q), ref.encode_key(x_k)
    expected = L.moco_loss(q, k, old_queue, model.temperature)
    wrong = L.moco_loss(q, k, torch.cat([k, old_queue[4:]]), model.temperature)  # keys already enqueued
    loss = model(x_q, x_k)
    assert torch.isclose(loss, expected, atol=1e-5) and not torch.isclose(loss, wrong, atol=1e-5)
    assert torch.allclose(model.queue.keys[:4], k, atol=1e-6)  # ... and then they are enqueued
    assert torch.equal(model.queue.keys[4:], old_queue[4:]) and int(model.queue.ptr) == 4


def test_symmetric_loss_averages_both_directions_and_enqueues_both_key_sets():
    model = _moco(queue_size=16, symmetric=True)
    x_q, x_k = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    ref = copy.deepcopy(model)
    old_queue = model.queue.keys.clone()
    ref.momentum_update()
    q1, k2 = ref.encode_query(x_q), ref.encode_key(x_k)
    q2, k1 = ref.encode_query(x_k), ref.encode_key(x_q)
    expected = 0.5 * (L.moco_loss(q1, k2, old_queue, 0.2) + L.moco_loss(q2, k1, old_queue, 0.2))
    loss = model(x_q, x_k)
    assert torch.isclose(loss, expected, atol=1e-5)
    assert torch.allclose(model.queue.keys[:8], torch.cat([k1, k2]), atol=1e-6) and int(model.queue.ptr) == 8
    with pytest.raises(TypeError, match="symmetric"):
        _moco(symmetric=1)


def test_eval_mode_neither_updates_nor_enqueues():
    model = _moco().eval()
    keys, params = model.queue.keys.clone(), [p.clone() for p in model.key_backbone.parameters()]
    model(torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16))
    assert torch.equal(keys, model.queue.keys) and int(model.queue.ptr) == 0
    assert all(torch.equal(a, b) for a, b in zip(params, model.key_backbone.parameters()))


def test_shuffle_bn_unshuffles_keys():
    # GroupNorm has no batch statistics, so the shuffled and plain key paths must agree row by row.
    model = _moco(norm="group", shuffle_bn=2, hidden=None)
    plain = _moco(norm="group", hidden=None)
    plain.load_state_dict(model.state_dict())
    x = torch.rand(6, 3, 16, 16)
    assert torch.allclose(model.encode_key(x), plain.encode_key(x), atol=1e-5)


# --------------------------------------------------------------------------- #
# Probes
# --------------------------------------------------------------------------- #
def test_extract_features_and_linear_probe():
    enc = M.ConvEncoder(3, (8, 16)).train()
    feats = M.extract_features(enc, torch.rand(10, 3, 16, 16), batch_size=3)
    assert feats.shape == (10, 16) and feats.device.type == "cpu" and enc.training
    g = torch.Generator().manual_seed(0)
    y = torch.arange(40) % 2
    x = torch.randn(40, 5, generator=g) + 3.0 * y[:, None]
    assert M.linear_probe(x[:20], y[:20], x[20:], y[20:]) == 1.0


@pytest.mark.parametrize("per_class", [2, 5])
def test_few_label_probe_separable_and_draw_count(per_class):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    x = torch.randn(60, 3, generator=g) * 0.01 + torch.eye(3)[y] * 5.0  # every dimension carries signal
    mean, std = M.few_label_probe(x[:30], y[:30], x[30:], y[30:], per_class=per_class, draws=4)
    assert mean == 1.0 and std == 0.0
    with pytest.raises(ValueError, match="per_class"):
        M.few_label_probe(x[:30], y[:30], x[30:], y[30:], per_class=11)
    with pytest.raises(ValueError, match="draws"):
        M.few_label_probe(x[:30], y[:30], x[30:], y[30:], per_class=1, draws=0)


# --------------------------------------------------------------------------- #
# Bad input
# --------------------------------------------------------------------------- #
def test_bad_views_raise_naming_the_argument():
    model = _moco()
    with pytest.raises(ValueError, match="x_q and x_k"):
        model(torch.rand(4, 3, 16, 16), torch.rand(5, 3, 16, 16))
    with pytest.raises(ValueError, match="x_q"):
        model(torch.rand(3, 16, 16), torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match="x_1"):
        M.InBatchContrast(_small_encoder())(torch.rand(3, 16, 16), torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match="images"):
        M.ConvEncoder(3, (8,))(torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match="query and key"):
        L.moco_loss(torch.randn(4, 8), torch.randn(5, 8), torch.randn(3, 8))
    with pytest.raises(ValueError, match="queue"):
        L.moco_loss(torch.randn(4, 8), torch.randn(4, 8), torch.randn(3, 7))
    with pytest.raises(ValueError, match="keys"):
        M.KeyQueue(4, 3).enqueue(torch.randn(2, 5))


@pytest.mark.parametrize("t", [0, -0.1])
def test_non_positive_temperature_raises(t):
    with pytest.raises(ValueError, match="temperature"):
        _moco(temperature=t)
    with pytest.raises(ValueError, match="temperature"):
        M.InBatchContrast(_small_encoder(), temperature=t)
    with pytest.raises(ValueError, match="temperature"):
        L.moco_loss(torch.randn(2, 4), torch.randn(2, 4), torch.randn(3, 4), t)


@pytest.mark.parametrize("m", [-0.1, 1.5])
def test_momentum_outside_unit_interval_raises(m):
    with pytest.raises(ValueError, match="momentum"):
        _moco(momentum=m)
    with pytest.raises(ValueError, match="momentum"):
        M.momentum_update(nn.Linear(2, 2), nn.Linear(2, 2), m)


def test_other_bad_values():
    with pytest.raises(ValueError, match="same parameters"):
        M.momentum_update(nn.Linear(2, 2), nn.Linear(3, 2), 0.5)
    with pytest.raises(ValueError, match="crop_scale"):
        M.augment(torch.rand(2, 3, 8, 8), crop_scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="3 channels"):
        M.augment(torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match="3 channels"):
        M.augment_v2(torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match="crop_scale"):
        M.augment_v2(torch.rand(2, 3, 8, 8), crop_scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="hue"):
        M.augment(torch.rand(2, 3, 8, 8), hue=0.7)
    with pytest.raises(ValueError, match="size"):
        M.augment(torch.rand(2, 3, 8, 8), size=0)
    with pytest.raises(TypeError, match="generator"):
        M.augment(torch.rand(2, 3, 8, 8), generator=0)
    with pytest.raises(ValueError, match="angles"):
        M.hue_rotation(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="queue_size"):
        _moco(queue_size=0)
    with pytest.raises(TypeError, match="encoder_fn"):
        M.MoCo(M.ConvEncoder())
    with pytest.raises(ValueError, match="train_labels"):
        M.linear_probe(torch.randn(4, 2), torch.zeros(3, dtype=torch.long), torch.randn(2, 2),
                       torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="feature size"):
        M.linear_probe(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]), torch.randn(2, 3),
                       torch.zeros(2, dtype=torch.long))
