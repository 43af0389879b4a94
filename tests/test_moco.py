"""Tests of MoCo v2 pieces: momentum update, queue, MoCo and the in-batch baseline, probes."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmutils import moco as M
from mmutils.nn.encoders import ConvTower
from mmutils.nn.losses import moco_loss


def _small_encoder(norm="batch"):
    return lambda: ConvTower(3, (8, 16), norm=norm, groups=4, pool="mean")


def _moco(**kw):
    torch.manual_seed(0)
    args = dict(dim=8, queue_size=16, momentum=0.9, temperature=0.2, hidden=16)
    args.update(kw)
    return M.MoCo(_small_encoder(args.pop("norm", "batch")), **args)


# --------------------------------------------------------------------------- #
# Shapes and closed forms
# --------------------------------------------------------------------------- #
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


def test_moco_loss_path_matches_a_plain_loop():
    # Reference: MoCo's loss written per query, from the encoders' weights, with the queue before the batch.
    model = _moco(queue_size=8, temperature=0.3)
    x_q, x_k = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for online, key in ((ref.backbone, ref.key_backbone), (ref.head, ref.key_head)):
            for p, p_key in zip(online.parameters(), key.parameters()):
                p_key.copy_(0.9 * p_key + 0.1 * p)
    queue = model.queue.keys.clone()
    q = F.normalize(ref.head(ref.backbone(x_q)), dim=1)
    with torch.no_grad():
        k = F.normalize(ref.key_head(ref.key_backbone(x_k)), dim=1)
    losses = []
    for i in range(4):
        positive = torch.exp(q[i] @ k[i] / 0.3)
        negatives = sum(torch.exp(q[i] @ queue[j] / 0.3) for j in range(8))
        losses.append(-torch.log(positive / (positive + negatives)))
    expected = torch.stack(losses).mean()
    assert torch.allclose(model(x_q, x_k), expected, atol=1e-5)


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


def test_momentum_update_bad_input():
    with pytest.raises(ValueError, match="same parameters"):
        M.momentum_update(nn.Linear(2, 2), nn.Linear(3, 2), 0.5)


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


def test_queue_bad_input():
    with pytest.raises(TypeError, match="ids"):
        M.KeyQueue(4, 3).enqueue(torch.randn(2, 3), torch.tensor([1.0, 2.0]))


def test_enqueue_happens_after_logits():
    model = _moco(queue_size=8)
    x_q, x_k = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    ref = copy.deepcopy(model)
    old_queue = model.queue.keys.clone()
    ref.momentum_update()
    q, k = ref.encode_query(x_q), ref.encode_key(x_k)
    expected = moco_loss(q, k, old_queue, model.temperature)
    wrong = moco_loss(q, k, torch.cat([k, old_queue[4:]]), model.temperature)  # keys already enqueued
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
    expected = 0.5 * (moco_loss(q1, k2, old_queue, 0.2) + moco_loss(q2, k1, old_queue, 0.2))
    loss = model(x_q, x_k)
    assert torch.isclose(loss, expected, atol=1e-5)
    assert torch.allclose(model.queue.keys[:8], torch.cat([k1, k2]), atol=1e-6) and int(model.queue.ptr) == 8


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


def test_shuffle_bn_keys_match_a_plain_permuted_split():
    # Reference: permute the batch with the same random draw, run the key encoder on S chunks, undo the permutation.
    model = _moco(shuffle_bn=2, hidden=None).train()
    x = torch.rand(8, 3, 16, 16)
    torch.manual_seed(1)
    keys = model.encode_key(x)
    torch.manual_seed(1)
    perm = torch.randperm(8)
    with torch.no_grad():
        chunks = [F.normalize(model.key_head(model.key_backbone(c)), dim=1) for c in x[perm].chunk(2)]
    expected = torch.empty_like(keys)
    expected[perm] = torch.cat(chunks)
    assert torch.allclose(keys, expected, atol=1e-6)
    whole = F.normalize(model.key_head(model.key_backbone(x)), dim=1)
    assert not torch.allclose(keys, whole, atol=1e-3)  # the BatchNorm statistics are per sub-batch


def test_moco_stores_image_ids_and_counts_own_image_keys():
    model = _moco(queue_size=16, symmetric=True)
    x = torch.rand(4, 3, 16, 16)
    assert model.own_image_rate(torch.tensor([0, 1, 2, 3])) == 0.0  # the initial random keys have id -1
    model(x, x, ids=torch.tensor([10, 11, 12, 13]))
    assert model.queue.ids[:8].tolist() == [10, 11, 12, 13] * 2 and int(model.queue.ptr) == 8
    ids = torch.tensor([10, 5, 13, 7])
    expected = sum(any(int(i) == int(j) for j in model.queue.ids) for i in ids) / 4  # plain loop: 2 of 4
    assert model.own_image_rate(ids) == expected == 0.5
    model.eval()(x, x, ids=torch.tensor([0, 1, 2, 3]))  # eval mode: nothing enqueued
    assert model.own_image_rate(torch.tensor([0, 1, 2, 3])) == 0.0


def test_moco_bad_input():
    with pytest.raises(TypeError, match="encoder_fn"):  # a module, not a function making one
        M.MoCo(ConvTower(pool="mean"))
    model, x = _moco(), torch.rand(4, 3, 16, 16)
    with pytest.raises(TypeError, match="ids"):  # float ids
        model(x, x, ids=torch.zeros(4))
    with pytest.raises(ValueError, match="ids"):  # one id per image
        model(x, x, ids=torch.arange(3))


# --------------------------------------------------------------------------- #
# Probes
# --------------------------------------------------------------------------- #
def test_extract_features_and_linear_probe():
    enc = ConvTower(3, (8, 16), pool="mean").train()
    feats = M.extract_features(enc, torch.rand(10, 3, 16, 16), batch_size=3)
    assert feats.shape == (10, 16) and feats.device.type == "cpu" and enc.training
    g = torch.Generator().manual_seed(0)
    y = torch.arange(40) % 2
    x = torch.randn(40, 5, generator=g) + 3.0 * y[:, None]
    assert M.linear_probe(x[:20], y[:20], x[20:], y[20:]) == 1.0


@pytest.mark.parametrize("per_class", [2, 5])
def test_few_label_probe_separable_and_draw_count(per_class, monkeypatch):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    x = torch.randn(60, 3, generator=g) * 0.01 + torch.eye(3)[y] * 5.0  # every dimension carries signal
    fits = []
    probe = M._probe

    def counting_probe(xtr, ytr, *args):
        fits.append(sorted(ytr.tolist()))
        return probe(xtr, ytr, *args)

    monkeypatch.setattr(M, "_probe", counting_probe)
    mean, std = M.few_label_probe(x[:30], y[:30], x[30:], y[30:], per_class=per_class, draws=4)
    assert mean == 1.0 and std == 0.0
    assert fits == [sorted([0, 1, 2] * per_class)] * 4  # one fit per draw, per_class rows of every class


@pytest.mark.parametrize("call, error, match", [
    (lambda x, y: M.linear_probe(x[:4], y[:4].float(), x[4:], y[4:]), TypeError, "train_labels"),
    (lambda x, y: M.few_label_probe(x[:4], y[:4], x[4:], y[4:], per_class=3), ValueError, "per_class"),
])
def test_probe_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call(torch.randn(8, 3), torch.arange(8) % 2)
