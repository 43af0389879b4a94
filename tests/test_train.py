"""Tests of the fit loop, its history and random batches."""
import pytest
import torch

from mmutils.train import History, fit, linear_cooldown, random_batches


def _regression(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3
    return x, y


def _mse(model, batch):
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)


def test_fit_reduces_loss_and_logs_every_step(capsys):
    torch.manual_seed(0)
    x, y = _regression()
    model = torch.nn.Linear(3, 1)
    h = fit(model, _mse, random_batches(x, y, batch_size=32), max_steps=150, lr=0.05, desc="lin")
    assert isinstance(h, History) and len(h) == 150
    assert h.steps == list(range(1, 151))
    assert h.losses[-1] < 0.05 * h.losses[0]
    assert h.seconds > 0 and h.last() == h.losses[-1]
    out = capsys.readouterr().out
    assert "lin" in out and "150/150" in out and "loss=" in out


def test_fit_dict_loss_extras_and_eval_modes():
    x, y = _regression()
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Dropout(0.1), torch.nn.Linear(8, 1))
    seen = []

    def loss_fn(m, batch):
        assert m.training and torch.is_grad_enabled()
        loss = _mse(m, batch)
        return {"loss": loss, "double": 2 * loss.detach(), "const": 1.0}

    def eval_fn(m):
        seen.append((m.training, torch.is_grad_enabled()))
        return {"mse": _mse(m, (x, y)), "n": 256}

    model.eval()
    h = fit(model, loss_fn, random_batches(x, y, batch_size=16), max_steps=25, eval_fn=eval_fn,
            eval_every=10, progress=False)
    assert [s for s, _ in h.evals] == [10, 20, 25]
    assert seen == [(False, False)] * 3
    assert not model.training  # original mode restored
    assert h.metrics["double"] == pytest.approx([2 * v for v in h.losses], rel=1e-5)
    assert h.metrics["const"] == [1.0] * 25
    assert h.last("mse") == h.evals[-1][1]["mse"] and h.last("n") == 256.0
    steps, values = h.eval_series("mse")
    assert steps == [10, 20, 25] and len(values) == 3
    d = h.as_dict()
    assert set(d) == {"steps", "losses", "metrics", "evals", "seconds"} and d["evals"][0][0] == 10


def test_fit_eval_only_at_end_and_number_result():
    x, y = _regression(64)
    h = fit(torch.nn.Linear(3, 1), _mse, random_batches(x, y, batch_size=8), max_steps=5,
            eval_fn=lambda m: 0.5, progress=False)
    assert h.evals == [(5, {"eval": 0.5})]


def test_fit_iterators_and_iterables():
    x, y = _regression(64)
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    h = fit(torch.nn.Linear(3, 1), _mse, iter(batches), max_steps=10, progress=False)
    assert len(h) == 4  # the iterator ran out
    h = fit(torch.nn.Linear(3, 1), _mse, batches, max_steps=10, progress=False)
    assert len(h) == 10  # a list is cycled


def test_fit_max_seconds_and_scheduler_and_clip():
    x, y = _regression(64)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    h = fit(model, _mse, random_batches(x, y, batch_size=8), max_steps=3, max_seconds=60.0, optimizer=opt,
            scheduler=sched, grad_clip=1.0, progress=False)
    assert h.metrics["lr"] == pytest.approx([0.05, 0.025, 0.0125])
    h = fit(torch.nn.Linear(3, 1), _mse, random_batches(x, y, batch_size=8), max_seconds=0.2, progress=False)
    assert len(h) > 0 and h.seconds >= 0.2


def test_fit_is_reproducible():
    x, y = _regression()
    runs = []
    for _ in range(2):
        torch.manual_seed(1)
        model = torch.nn.Linear(3, 1)
        runs.append(fit(model, _mse, random_batches(x, y, batch_size=8, seed=3), max_steps=20, progress=False).losses)
    assert runs[0] == runs[1]


def test_fit_non_finite_loss_raises():
    model = torch.nn.Linear(1, 1)
    with pytest.raises(FloatingPointError, match="step 1"):
        fit(model, lambda m, b: m.weight.sum() * float("nan"), lambda s: None, max_steps=3, progress=False)


def test_fit_bad_input():
    model = torch.nn.Linear(3, 1)
    x, y = _regression(8)
    ok = random_batches(x, y, batch_size=4)
    with pytest.raises(TypeError, match="random_batches"):
        fit(model, _mse, x, max_steps=1)  # a tensor is not a batch source
    with pytest.raises(ValueError, match="max_steps or max_seconds"):
        fit(model, _mse, ok)
    with pytest.raises(ValueError, match="eval_every"):
        fit(model, _mse, ok, max_steps=1, eval_every=5)
    frozen = torch.nn.Linear(1, 1).requires_grad_(False)
    with pytest.raises(ValueError, match="trainable"):
        fit(frozen, _mse, ok, max_steps=1)


def test_fit_bad_loss_fn_output():
    model = torch.nn.Linear(3, 1)
    x, y = _regression(8)
    ok = random_batches(x, y, batch_size=4)
    with pytest.raises(ValueError, match="'loss'"):
        fit(model, lambda m, b: {"l": _mse(m, b)}, ok, max_steps=1, progress=False)
    with pytest.raises(TypeError, match="loss_fn"):
        fit(model, lambda m, b: 1.0, ok, max_steps=1, progress=False)
    with pytest.raises(ValueError, match="scalar"):
        fit(model, lambda m, b: m(b[0]), ok, max_steps=1, progress=False)


def test_history_last_errors():
    h = History()
    with pytest.raises(ValueError, match="name 'loss'"):
        h.last()
    h = History(steps=[1], losses=[0.5], metrics={"acc": [0.9]}, evals=[(1, {"val": 0.8})])
    assert h.last("acc") == 0.9 and h.last("val") == 0.8
    with pytest.raises(KeyError, match="nope"):
        h.last("nope")
    with pytest.raises(KeyError, match="acc"):
        h.eval_series("acc")


def test_random_batches_shapes_seed_and_device():
    x = torch.arange(100).float().reshape(50, 2)
    y = torch.arange(50)
    b1 = random_batches(x, y, batch_size=7, seed=5)
    b2 = random_batches(x, y, batch_size=7, generator=torch.Generator().manual_seed(5))
    xb, yb = b1(0)
    assert xb.shape == (7, 2) and yb.shape == (7,)
    assert torch.equal(xb[:, 0], 2 * yb.float())  # rows stay aligned
    assert torch.equal(b2(0)[1], yb)
    assert not torch.equal(b1(1)[1], yb) or not torch.equal(b1(2)[1], yb)
    (xc,) = random_batches(x, batch_size=3, device="cpu")(0)
    assert xc.device.type == "cpu" and xc.shape == (3, 2)


def test_random_batches_bad_input():
    x = torch.zeros(10, 2)
    with pytest.raises(TypeError, match=r"tensors\[0\]"):
        random_batches([1, 2], batch_size=2)
    with pytest.raises(ValueError, match="same length"):
        random_batches(x, torch.zeros(9), batch_size=2)


def _lrs(scheduler, steps):
    lrs = []
    for _ in range(steps + 1):
        lrs.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return lrs


def test_linear_cooldown_shape_and_floor():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    lrs = _lrs(linear_cooldown(opt, 10, fraction=0.4), 10)
    # constant for steps 0 to 6, then 0.1 * (10 - s) / 4 for steps 7 to 10, down to 0 at step 10
    assert lrs[:7] == pytest.approx([0.1] * 7)
    assert lrs[7:] == pytest.approx([0.075, 0.05, 0.025, 0.0])
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    lrs = _lrs(linear_cooldown(opt, 10, fraction=0.4, floor=0.3), 10)
    assert lrs[7:] == pytest.approx([0.075, 0.05, 0.03, 0.03])


def test_linear_cooldown_warmup():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    lrs = _lrs(linear_cooldown(opt, 10, fraction=0.4, warmup=4), 10)
    # 0.1 * (s + 1) / 4 for steps 0 to 3, then constant, then the same cool-down as without a warm-up
    assert lrs[:7] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1, 0.1])
    assert lrs[7:] == pytest.approx([0.075, 0.05, 0.025, 0.0])


def test_linear_cooldown_bad_input():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(TypeError, match="optimizer"):
        linear_cooldown("adam", 10)
    with pytest.raises(ValueError, match="total_steps"):
        linear_cooldown(opt, 0)
    with pytest.raises(ValueError, match="fraction"):
        linear_cooldown(opt, 10, fraction=1.5)
    with pytest.raises(ValueError, match="floor"):
        linear_cooldown(opt, 10, floor=-0.1)
    with pytest.raises(ValueError, match="warmup"):
        linear_cooldown(opt, 10, warmup=-1)
