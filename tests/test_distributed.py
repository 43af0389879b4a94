"""Tests of mmutils.distributed: the local CLIP loss, the gather with gradients (against PyTorch's own, on two
gloo processes), and the torchrun training script (two processes equal one; a resumed run equals an
uninterrupted one)."""
import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch

from mmutils import distributed as dd
from mmutils.nn.losses import clip_loss


def _embeddings(n=12, dim=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g), torch.randn(n, dim, generator=g)


# --------------------------------------------------------------------------- #
# The local loss, in one process
# --------------------------------------------------------------------------- #
def test_local_loss_of_one_rank_is_the_clip_loss():
    img, txt = _embeddings()
    scale = torch.tensor(math.log(10.0))
    torch.testing.assert_close(dd.local_clip_loss(img, txt, img, txt, scale, 0), clip_loss(img, txt, scale))


def test_local_loss_closed_form_identical_embeddings():
    # every similarity equal: each row guesses among all N columns, loss = log N, whatever the rank
    ones = torch.ones(8, 3)
    for rank in range(4):
        part = ones[2 * rank:2 * rank + 2]
        loss = dd.local_clip_loss(part, part, ones, ones, 0.0, rank)
        assert loss.item() == pytest.approx(math.log(8), abs=1e-6)


@pytest.mark.parametrize("ranks", [2, 3])
def test_shares_add_up_to_the_global_loss_and_gradient(ranks):
    img, txt = _embeddings(n=4 * ranks)
    u, v = img.clone().requires_grad_(True), txt.clone().requires_grad_(True)
    s = torch.tensor(1.5, requires_grad=True)
    b = 4
    shares = sum(dd.local_clip_loss(u[r * b:(r + 1) * b], v[r * b:(r + 1) * b], u, v, s, r)
                 for r in range(ranks)) / ranks
    ours = torch.autograd.grad(shares, (u, v, s))
    reference = clip_loss(u, v, s)
    torch.testing.assert_close(shares, reference)
    for a, c in zip(ours, torch.autograd.grad(reference, (u, v, s))):
        torch.testing.assert_close(a, c)


def test_local_loss_against_a_loop():
    img, txt = _embeddings(n=6, dim=4, seed=3)
    scale = 2.0
    rank, b = 1, 3
    mine_img, mine_txt = img[b:], txt[b:]
    u, v = torch.nn.functional.normalize(img, dim=1), torch.nn.functional.normalize(txt, dim=1)
    total = 0.0
    for i in range(b):
        row = rank * b + i
        i2t = [math.exp(math.e ** scale * float(u[row] @ v[j])) for j in range(6)]
        t2i = [math.exp(math.e ** scale * float(v[row] @ u[j])) for j in range(6)]
        total += -math.log(i2t[row] / sum(i2t)) - math.log(t2i[row] / sum(t2i))
    expected = total / (2 * b)
    assert dd.local_clip_loss(mine_img, mine_txt, img, txt, scale, rank).item() == pytest.approx(expected, rel=1e-5)


def test_local_loss_bad_input():
    img, txt = _embeddings(n=6)
    with pytest.raises(TypeError, match="image_emb"):
        dd.local_clip_loss(img.tolist(), txt, img, txt, 0.0)
    with pytest.raises(ValueError, match="text_emb"):
        dd.local_clip_loss(img[:3], txt[:2], img, txt, 0.0)
    with pytest.raises(ValueError, match="whole number of local batches"):
        dd.local_clip_loss(img[:4], txt[:4], img, txt, 0.0)
    with pytest.raises(ValueError, match="rank"):
        dd.local_clip_loss(img[:3], txt[:3], img, txt, 0.0, rank=2)


def test_one_process_world_and_gather():
    assert dd.world() == (0, 1)
    x = torch.randn(3, 2)
    assert dd.gather_with_grad(x) is x
    with pytest.raises(TypeError, match="x"):
        dd.gather_with_grad([1.0, 2.0])


def test_batch_indices_follow_seed_and_step():
    a = dd.batch_indices(100, 16, step=5, seed=1)
    assert a.shape == (16,) and a.dtype == torch.int64 and 0 <= a.min() and a.max() < 100
    assert torch.equal(a, dd.batch_indices(100, 16, step=5, seed=1))
    assert not torch.equal(a, dd.batch_indices(100, 16, step=6, seed=1))
    assert not torch.equal(a, dd.batch_indices(100, 16, step=5, seed=2))


def test_make_model_uses_group_norm_and_follows_seed():
    a, b = dd.make_model(30, seed=4), dd.make_model(30, seed=4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in a.modules())
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_train_bad_input(tmp_path):
    with pytest.raises(ValueError, match="steps"):
        dd.train(out=tmp_path, steps=0)
    with pytest.raises(ValueError, match="checkpoint_at"):
        dd.train(out=tmp_path, steps=4, checkpoint_at=4)
    with pytest.raises(TypeError, match="gather"):
        dd.train(out=tmp_path, steps=4, gather="yes")


# --------------------------------------------------------------------------- #
# Two gloo processes under torchrun
# --------------------------------------------------------------------------- #
def _torchrun(*args, cwd):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


GATHER_CHECK = textwrap.dedent("""
    import sys, warnings
    import torch, torch.distributed as dist
    import torch.distributed.nn.functional as dnf
    from mmutils import distributed as dd
    warnings.simplefilter("ignore", FutureWarning)  # PyTorch marks its own all_gather as deprecated
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    x = torch.arange(6.0).view(3, 2) * (rank + 1)
    weights = torch.arange(12.0).view(6, 2) + 1
    results = []
    for gather in (dd.gather_with_grad, lambda t: torch.cat(dnf.all_gather(t))):
        leaf = x.clone().requires_grad_(True)
        out = gather(leaf)
        ((out * weights) ** 2).sum().mul(rank + 1).backward()  # a different loss on each rank
        results.append((out.detach(), leaf.grad))
    (ours, our_grad), (theirs, their_grad) = results
    assert dd.world() == (rank, 2)
    assert torch.equal(ours, theirs) and ours.shape == (6, 2)
    torch.testing.assert_close(our_grad, their_grad)
    # closed form: d/dx of sum over ranks q of (q + 1) * sum((out * w)**2) is (2 + 4) * x * w**2 on x's rows
    torch.testing.assert_close(our_grad, 6 * x * weights[3 * rank:3 * rank + 3] ** 2)
    if rank == 0:
        print("gather ok", our_grad.flatten().tolist())
    dist.destroy_process_group()
""")


def test_gather_with_grad_matches_pytorch_on_two_processes(tmp_path):
    script = tmp_path / "gather_check.py"
    script.write_text(GATHER_CHECK)
    done = _torchrun(str(script), cwd=tmp_path)
    assert "gather ok" in done.stdout


def test_two_processes_equal_one_and_resume_is_exact(tmp_path):
    common = ["-m", "mmutils.distributed", "--steps", "6", "--batch-size", "16", "--n-train", "256"]
    _torchrun(*common, "--out", str(tmp_path / "full"), "--checkpoint-at", "3", cwd=tmp_path)
    _torchrun(*common, "--out", str(tmp_path / "resumed"), "--resume", str(tmp_path / "full" / "checkpoint.pt"),
              cwd=tmp_path)
    torch.set_num_threads(1)
    single = dd.train(out=tmp_path / "single", steps=1, batch_size=16, n_train=256)
    full = json.loads((tmp_path / "full" / "history.json").read_text())
    resumed = json.loads((tmp_path / "resumed" / "history.json").read_text())
    assert full["processes"] == 2 and len(full["loss"]) == 6
    # two processes with 8 pairs each compute the loss and gradient of one process with 16
    assert full["loss"][0] == pytest.approx(single["loss"][0], abs=1e-5)
    one, two = torch.load(tmp_path / "single" / "grads_step0.pt"), torch.load(tmp_path / "full" / "grads_step0.pt")
    flat_one = torch.cat([g.flatten() for g in one.values()])
    flat_two = torch.cat([two[name].flatten() for name in one])
    assert ((flat_two - flat_one).norm() / flat_one.norm()).item() < 1e-4  # equal up to float rounding
    # the resumed run continues exactly where the checkpoint stopped
    assert resumed["first_step"] == 3 and resumed["loss"] == full["loss"][3:]
    a, b = torch.load(tmp_path / "full" / "final.pt"), torch.load(tmp_path / "resumed" / "final.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
