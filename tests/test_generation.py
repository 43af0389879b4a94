"""Tests of mmutils.generation: the cache, the oracle's reading, prompt fidelity, the Fréchet distance,
the noising steps and the sampler against diffusers' schedulers, guidance, the models' shapes, bad inputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mmutils import generation as g
from mmutils.nn.layers import FiLM
from mmutils.world import Obj, Scene


# ---- Cache -------------------------------------------------------------------
def test_cached_state_trains_once_and_keeps_the_callers_random_state(tmp_path, monkeypatch):
    monkeypatch.setenv(g.CACHE_VARIABLE, str(tmp_path))
    calls = []

    def build():
        calls.append(torch.get_num_threads())
        return torch.nn.Linear(3, 2)

    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    torch.rand(0)
    cold = g.cached_state("lin", {"seed": 3}, build)
    after_cold = torch.rand(1)
    warm = g.cached_state("lin", {"seed": 3}, build)
    assert len(calls) == 1 and len(list(tmp_path.glob("lin-*.pt"))) == 1
    assert calls == [g.TRAIN_THREADS]  # built on the fixed thread count, whatever the caller's
    torch.testing.assert_close(cold, warm)
    torch.manual_seed(5)
    assert torch.equal(torch.rand(1), before) and torch.equal(after_cold, before)  # state untouched
    torch.manual_seed(3)
    torch.testing.assert_close(cold, torch.nn.Linear(3, 2).state_dict())  # built after manual_seed(seed)
    g.cached_state("lin", {"seed": 4}, build)
    assert len(calls) == 2  # another seed is another file


def test_cached_state_needs_a_seed_in_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv(g.CACHE_VARIABLE, str(tmp_path))
    with pytest.raises(TypeError, match=r'key\["seed"\]'):
        g.cached_state("lin", {"steps": 3}, lambda: torch.nn.Linear(1, 1))


def test_load_oracle_cold_equals_warm_and_leaves_the_random_state(tmp_path, monkeypatch):
    monkeypatch.setenv(g.CACHE_VARIABLE, str(tmp_path))
    monkeypatch.setattr(g, "train_oracle", lambda cfg, **kw: g.Oracle(cfg))  # a stand-in for training
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    cold = g.load_oracle(2)
    warm = g.load_oracle(2)
    assert torch.equal(torch.rand(1), expected)
    assert all(torch.equal(v, warm.state_dict()[k]) for k, v in cold.state_dict().items())
    assert not cold.training and len(list(tmp_path.glob("oracle-*.pt"))) == 1


def test_cache_dir_defaults_to_the_repository_root(monkeypatch):
    monkeypatch.delenv(g.CACHE_VARIABLE, raising=False)
    assert g.cache_dir().name == ".cache" and (g.cache_dir().parent / "mmutils").is_dir()


# ---- Oracle ------------------------------------------------------------------
class _FixedOracle(g.Oracle):
    """An oracle whose per-cell outputs are given, to test how they are read."""

    def __init__(self, outputs):
        super().__init__()
        self.outputs = outputs

    def forward(self, images):
        return self.outputs


def _outputs(cells: dict[int, tuple[float, int, int, int, float, float]]):
    """Per-cell outputs for one image on the 4x4 grid: {cell: (probability, shape, color, size, dx, dy)}."""
    out = {"object": torch.full((1, 16), -9.0), "shape": torch.zeros(1, 16, 6), "color": torch.zeros(1, 16, 6),
           "size": torch.zeros(1, 16, 2), "offset": torch.full((1, 16, 2), 0.5)}
    for c, (p, s, col, z, dx, dy) in cells.items():
        out["object"][0, c] = float(np.log(p / (1 - p)))
        out["shape"][0, c, s] = out["color"][0, c, col] = out["size"][0, c, z] = 5.0
        out["offset"][0, c] = torch.tensor([dx, dy])
    return out


def test_oracle_read_decodes_cells_and_suppresses_duplicates():
    # cell 5 (row 1, col 1): a red circle, small; cell 6 is the same object seen from the next cell;
    # cell 15 a blue square, large, less confident but far away; cell 0 below the threshold.
    oracle = _FixedOracle(_outputs({5: (0.9, 0, 0, 0, 0.9, 0.5), 6: (0.6, 0, 0, 0, 0.05, 0.5),
                                    15: (0.3, 1, 2, 1, 0.5, 0.5), 0: (0.05, 3, 3, 1, 0.5, 0.5)}))
    (scene,) = oracle.read(torch.zeros(1, 3, 32, 32))
    assert [o.desc for o in scene.objects] == [("circle", "red", "small"), ("square", "blue", "large")]
    assert scene.objects[0].x == pytest.approx(1.9 / 4) and scene.objects[0].y == pytest.approx(1.5 / 4)
    assert scene.objects[1].x == pytest.approx(3.5 / 4)


def test_oracle_shapes_and_a_short_training_run():
    oracle = g.train_oracle(n=64, steps=3, batch_size=8)
    images = g.scene_images([Scene((Obj("circle", "red", "small", 0.3, 0.3),))] * 2)
    out = oracle(images)
    assert out["object"].shape == (2, 16) and out["shape"].shape == (2, 16, 6)
    assert out["size"].shape == (2, 16, 2) and out["offset"].shape == (2, 16, 2)
    assert oracle.features(images).shape == (2, 16 * 16) and not oracle.training
    acc = g.oracle_accuracy(oracle, [Scene((Obj("circle", "red", "small", 0.3, 0.3),))])
    assert set(acc) == {"shape", "color", "size", "scene"} and all(0 <= v <= 1 for v in acc.values())


class _PlacedOracle(g.Oracle):
    """An oracle whose outputs depend only on the image side: on a 32x32 image, a red circle in cell 5 (row 1,
    column 1) with its centre in the middle of the cell, at pixel (12, 12); on a 40x40 canvas, a red square
    in cell 6 (row 1, column 1 of 5x5), and triangles of no confidence in every other cell."""

    def forward(self, images):
        side = images.shape[-1] // 8
        cells = side * side
        here = 5 if side == 4 else 6
        out = {"object": torch.full((len(images), cells), -20.0), "offset": torch.full((len(images), cells, 2), 0.5)}
        out["object"][:, here] = 10.0
        for attribute, values in g.ATTRIBUTES.items():
            out[attribute] = torch.zeros(len(images), cells, len(values))
        out["shape"][:, :, g.SHAPES.index("triangle")] = 5.0
        out["shape"][:, here] = 0.0
        out["shape"][:, here, g.SHAPES.index("circle" if side == 4 else "square")] = 5.0
        out["color"][:, :, g.COLORS.index("red")] = 5.0
        return out


def test_shift_averaged_read_looks_where_the_centre_lands_in_each_copy():
    oracle = _PlacedOracle()
    images = torch.zeros(2, 3, 32, 32)
    plain, averaged = oracle.read(images), oracle.read(images, shifts=2)  # copies moved by 0 and 4 pixels
    assert [o.desc for o in plain[0].objects] == [("circle", "red", g.SIZES[0])]
    assert [o.desc for o in averaged[0].objects] == [("square", "red", g.SIZES[0])]  # cell 6 of every copy
    assert (averaged[1].objects[0].x, averaged[1].objects[0].y) == (plain[1].objects[0].x, plain[1].objects[0].y)
    assert plain[0].objects[0].x == pytest.approx(0.375)


def test_read_rejects_shifts_that_do_not_divide_the_cell():
    oracle = g.Oracle()
    images = torch.zeros(1, 3, 32, 32)
    with pytest.raises(ValueError, match="shifts must divide the cell side"):
        oracle.read(images, shifts=3)
    with pytest.raises(TypeError, match="shifts"):
        oracle.read(images, shifts=2.0)


class _ReadingOracle(g.Oracle):
    """An oracle that reads given scenes."""

    def __init__(self, scenes):
        super().__init__()
        self.scenes = scenes

    def read(self, images, *, shifts=1):
        return self.scenes


def test_prompt_fidelity_per_attribute_and_relation():
    red_small = Obj("circle", "red", "small", 0.2, 0.5)
    blue_large = Obj("square", "blue", "large", 0.8, 0.5)
    scenes = [Scene((Obj("circle", "red", "large", 0.5, 0.5),)),  # size wrong
              Scene((red_small, blue_large)),  # right, relation right
              Scene((red_small.__class__("circle", "red", "small", 0.8, 0.5),
                     Obj("square", "blue", "large", 0.2, 0.5))),  # objects right, relation wrong
              Scene(())]  # nothing drawn
    prompts = ["a small red circle", "a small red circle left of a big blue square",
               "the small red circle is to the left of the large blue square", "a red triangle"]
    per = g.prompt_fidelity(_ReadingOracle(scenes), torch.zeros(4, 3, 32, 32), prompts, reduction="none")
    torch.testing.assert_close(per["size"][:3], torch.tensor([0.0, 1.0, 1.0]))
    torch.testing.assert_close(per["shape"], torch.tensor([1.0, 1.0, 1.0, 0.0]))
    assert per["size"][3].isnan()  # the prompt names no size
    torch.testing.assert_close(per["objects"], torch.tensor([0.0, 1.0, 1.0, 0.0]))
    torch.testing.assert_close(per["all"], torch.tensor([0.0, 1.0, 0.0, 0.0]))
    mean = g.prompt_fidelity(_ReadingOracle(scenes), torch.zeros(4, 3, 32, 32), prompts)
    assert mean["size"] == pytest.approx(2 / 3) and mean["all"] == pytest.approx(0.25)
    assert g.scene_fidelity(scenes, prompts) == mean  # the same scoring, of scenes read already
    with pytest.raises(ValueError, match="one caption per scene"):
        g.scene_fidelity(scenes, prompts[:3])
    with pytest.raises(TypeError, match="scenes"):
        g.scene_fidelity(scenes[0], prompts[:1])


# ---- Fréchet distance --------------------------------------------------------
def test_frechet_distance_matches_the_closed_form_on_gaussians():
    gen = torch.Generator().manual_seed(0)
    mu_a, mu_b = torch.tensor([0.0, 1.0, -1.0]), torch.tensor([0.5, 1.0, 0.0])
    sd_a, sd_b = torch.tensor([1.0, 2.0, 0.5]), torch.tensor([1.0, 1.0, 1.5])
    a = mu_a + sd_a * torch.randn(200_000, 3, generator=gen, dtype=torch.float64)
    b = mu_b + sd_b * torch.randn(200_000, 3, generator=gen, dtype=torch.float64)
    exact = float((mu_a - mu_b).square().sum() + (sd_a - sd_b).square().sum())  # diagonal covariances
    assert g.frechet_distance(a, b) == pytest.approx(exact, abs=0.02)
    assert g.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_matches_scipy_on_full_covariances():
    from scipy import linalg

    gen = torch.Generator().manual_seed(1)
    a = torch.randn(300, 5, generator=gen, dtype=torch.float64) @ torch.randn(5, 5, generator=gen, dtype=torch.float64)
    b = torch.randn(200, 5, generator=gen, dtype=torch.float64) + 0.3
    ca, cb = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
    ref = (np.sum((a.numpy().mean(0) - b.numpy().mean(0)) ** 2) + np.trace(ca) + np.trace(cb)
           - 2 * np.trace(linalg.sqrtm(ca @ cb).real))
    assert g.frechet_distance(a, b) == pytest.approx(ref, rel=1e-6)


def test_oracle_fid_is_the_frechet_distance_of_the_oracle_features():
    torch.manual_seed(0)
    oracle = g.Oracle().eval()
    real, fake = torch.rand(40, 3, 32, 32), torch.rand(30, 3, 32, 32) * 0.5
    with torch.no_grad():
        ref = g.frechet_distance(oracle.features(real), oracle.features(fake))
    assert g.oracle_fid(oracle, real, fake) == pytest.approx(ref, rel=1e-3, abs=1e-4)


# ---- Noising and sampling ----------------------------------------------------
def test_flow_noise_equals_diffusers_scale_noise():
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler()
    sched.set_timesteps(sigmas=g.flow_sigmas(10)[:-1].tolist())
    x0, noise = torch.randn(4, 4, 8, 8), torch.randn(4, 4, 8, 8)
    for i in (0, 3, 9):
        t = sched.sigmas[i]
        expected = sched.scale_noise(x0, sched.timesteps[i:i + 1], noise)
        torch.testing.assert_close(g.flow_noise(x0, noise, t), expected)
    torch.testing.assert_close(g.flow_noise(x0, noise, 0.0), x0)
    torch.testing.assert_close(g.flow_noise(x0, noise, torch.ones(4)), noise)
    # the velocity target is the time derivative of the path
    eps = 1e-3
    torch.testing.assert_close((g.flow_noise(x0, noise, 0.5 + eps) - g.flow_noise(x0, noise, 0.5)) / eps,
                               g.flow_target(x0, noise), atol=1e-2, rtol=1e-2)


def test_euler_sample_equals_the_diffusers_scheduler_loop():
    from diffusers import FlowMatchEulerDiscreteScheduler

    def velocity(x, t):  # any smooth field that depends on x and t
        return torch.sin(x) * t.view(-1, 1, 1, 1) - 0.3 * x

    noise = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    sched = FlowMatchEulerDiscreteScheduler()
    sched.set_timesteps(sigmas=g.flow_sigmas(7)[:-1].tolist())
    x = noise.clone()
    for i, timestep in enumerate(sched.timesteps):
        x = sched.step(velocity(x, sched.sigmas[i].expand(len(x))), timestep, x).prev_sample
    torch.testing.assert_close(g.euler_sample(velocity, noise, steps=7), x)


@pytest.mark.parametrize("steps", [1, 3, 20])
def test_euler_sample_lands_on_a_point_mass_in_any_number_of_steps(steps):
    # For data at one point c the exact velocity is (x - c) / t, and each Euler step stays on the straight path.
    c = torch.tensor([[0.5, -2.0]])
    noise = torch.randn(5, 2)
    out = g.euler_sample(lambda x, t: (x - c) / t.clamp(min=1e-12)[:, None], noise, steps=steps)
    torch.testing.assert_close(out, c.expand(5, 2), atol=1e-5, rtol=0)


@pytest.mark.parametrize("steps, strength", [(20, 0.3), (20, 0.7), (20, 1.0), (10, 0.75), (7, 0.5)])
def test_sdedit_sigmas_are_the_diffusers_img2img_timesteps(steps, strength):
    from types import SimpleNamespace

    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Img2ImgPipeline

    sched = FlowMatchEulerDiscreteScheduler()
    sched.set_timesteps(sigmas=g.flow_sigmas(steps)[:-1].tolist())
    pipe = SimpleNamespace(scheduler=sched)  # the pipeline's own get_timesteps, on this scheduler
    timesteps, n = StableDiffusion3Img2ImgPipeline.get_timesteps(pipe, steps, strength, "cpu")
    sigmas = g.sdedit_sigmas(steps, strength)
    assert len(sigmas) == n + 1 and sigmas[-1] == 0
    torch.testing.assert_close(sigmas[:-1] * sched.config.num_train_timesteps, timesteps)
    # the start point: the input noised to the first sigma, as the pipeline's scale_noise does
    x0, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(g.flow_noise(x0, noise, sigmas[0]), sched.scale_noise(x0, timesteps[:1], noise))


def test_euler_integrate_from_the_middle_equals_the_scheduler_from_its_begin_index():
    from diffusers import FlowMatchEulerDiscreteScheduler

    def velocity(x, t):
        return torch.cos(x) * t.view(-1, 1) + 0.2 * x

    sched = FlowMatchEulerDiscreteScheduler()
    sched.set_timesteps(sigmas=g.flow_sigmas(10)[:-1].tolist())
    sched.set_begin_index(4)
    x = x_start = torch.randn(3, 5)
    for i, timestep in enumerate(sched.timesteps[4:], start=4):
        x = sched.step(velocity(x, sched.sigmas[i].expand(len(x))), timestep, x).prev_sample
    torch.testing.assert_close(g.euler_integrate(velocity, x_start, g.sdedit_sigmas(10, 0.6)), x)


def test_object_mask_marks_the_pixels_that_differ_from_the_background():
    from mmutils.world import sample_scenes

    images = g.scene_images(sample_scenes(4, seed=0))
    expected = (images * 255).round().sub(16).abs().amax(1, keepdim=True) > 0.05 * 255
    assert torch.equal(g.object_mask(images).bool(), expected)
    assert g.object_mask(images, 0.7).sum() < g.object_mask(images).sum()  # green (185 of 255) falls below 0.7


def test_flow_sigmas_run_from_noise_to_data():
    torch.testing.assert_close(g.flow_sigmas(4), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))


def test_ddpm_noise_equals_diffusers_add_noise():
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    ab = g.ddpm_alphas_cumprod(1000)
    torch.testing.assert_close(ab, sched.alphas_cumprod)
    x0, noise, t = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4), torch.tensor([0, 10, 250, 700, 999])
    torch.testing.assert_close(g.ddpm_noise(x0, noise, t, ab), sched.add_noise(x0, noise, t))


def test_ddpm_schedule_closed_forms():
    ab = g.ddpm_alphas_cumprod(1000)
    assert ab[0] == pytest.approx(1 - 1e-4) and bool((ab[1:] < ab[:-1]).all()) and ab[-1] < 1e-4
    x0 = torch.randn(200_000, generator=torch.Generator().manual_seed(0))
    xt = g.ddpm_noise(x0, torch.randn(200_000), torch.full((200_000,), 300), ab)
    assert xt.var().item() == pytest.approx(1.0, abs=0.02)  # variance preserving
    assert torch.corrcoef(torch.stack([x0, xt]))[0, 1].item() == pytest.approx(ab[300].sqrt().item(), abs=0.01)


def test_guided_formula():
    cond, uncond = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 4.0])
    torch.testing.assert_close(g.guided(cond, uncond, 1.0), cond)
    torch.testing.assert_close(g.guided(cond, uncond, 0.0), uncond)
    torch.testing.assert_close(g.guided(cond, uncond, 3.0), torch.tensor([3.0, -2.0]))


# ---- Models ------------------------------------------------------------------
def test_autoencoder_shapes():
    x = torch.rand(2, 3, 32, 32)
    ae = g.PatchAutoencoder()
    assert ae.encode(x).shape == (2, 4, 16, 16) and ae(x).shape == x.shape
    assert g.PatchAutoencoder(latent=8, patch=4).encode(x).shape == (2, 8, 8, 8)


def test_trained_autoencoder_latents_are_normalised_per_channel():
    from mmutils.world import sample_scenes

    ae = g.train_autoencoder(n=64, steps=2, seed=3)
    z = ae.encode(g.scene_images(sample_scenes(64, seed=3)))  # the training images
    torch.testing.assert_close(z.mean((0, 2, 3)), torch.zeros(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std((0, 2, 3)), torch.ones(4), atol=1e-3, rtol=0)


def test_flow_unet_shapes_null_prompt_loss_and_sampler():
    torch.manual_seed(0)
    model = g.FlowUNet(vocab_size=20, widths=(16, 32), text_dim=16, cond_dim=32)
    ids = torch.randint(5, 20, (3, 6))
    mask = torch.ones(3, 6, dtype=torch.long)
    x, t = torch.randn(3, 4, 8, 8), torch.rand(3)
    assert model(x, t, ids, mask).shape == (3, 4, 8, 8)
    cond = model.condition(t, ids, mask)
    null = model.condition(t, ids, torch.zeros_like(mask))
    null_other = model.condition(t, torch.randint(5, 20, (3, 6)), torch.zeros_like(mask))
    torch.testing.assert_close(null, null_other)  # no prompt: the words do not matter
    assert not torch.allclose(cond, null)
    loss = g.flow_loss(model, x, ids, mask, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss) and model.null.grad is not None
    for film in (m for m in model.modules() if isinstance(m, FiLM)):  # FiLM starts as the identity
        torch.nn.init.normal_(film.to_gamma_beta.weight, std=0.3)
    z = g.sample_latents(model, ids, mask, steps=2, shape=(4, 8, 8), generator=torch.Generator().manual_seed(0))
    assert z.shape == (3, 4, 8, 8)
    z_neg = g.sample_latents(model, ids, mask, steps=2, negative=(ids[:, :3], mask[:, :3]), shape=(4, 8, 8),
                             generator=torch.Generator().manual_seed(0))
    assert z_neg.shape == (3, 4, 8, 8) and not torch.allclose(z, z_neg)


def test_flow_unet_with_context_channels_and_no_prompt():
    torch.manual_seed(0)
    model = g.FlowUNet(vocab_size=20, widths=(16, 32), text_dim=16, cond_dim=32, context_channels=5)
    x, t, ctx = torch.randn(3, 4, 8, 8), torch.rand(3), torch.randn(3, 5, 8, 8)
    ids, mask = torch.randint(5, 20, (3, 6)), torch.zeros(3, 6, dtype=torch.long)
    assert model(x, t, None, None, ctx).shape == (3, 4, 8, 8)
    torch.testing.assert_close(model.condition(t, None, None), model.condition(t, ids, mask))  # None: no prompt
    with pytest.raises(ValueError, match="context"):
        model(x, t, ids, mask)
    with pytest.raises(ValueError, match="context"):
        g.FlowUNet(vocab_size=20, widths=(16, 32), text_dim=16, cond_dim=32)(x, t, ids, mask, ctx)
    loss = g.flow_loss(model, x, None, None, context=ctx, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and model.stem.weight.grad[:, 4:].abs().sum() > 0  # the context is used


def test_sample_latents_edits_from_init_with_a_strength():
    torch.manual_seed(0)
    model = g.FlowUNet(vocab_size=20, widths=(16, 32), text_dim=16, cond_dim=32, context_channels=2)
    ids, mask = torch.randint(5, 20, (2, 6)), torch.ones(2, 6, dtype=torch.long)
    init, ctx = torch.randn(2, 4, 8, 8), torch.randn(2, 2, 8, 8)
    gen_ = torch.Generator().manual_seed(0)
    light = g.sample_latents(model, ids, mask, init=init, strength=0.05, context=ctx, generator=gen_)
    full = g.sample_latents(model, ids, mask, init=init, context=ctx, generator=gen_)
    assert light.shape == full.shape == (2, 4, 8, 8)
    # one step of 20 from t = 0.05: the input, barely moved; strength 1 forgets it
    assert (light - init).abs().mean() < 0.2 < (full - init).abs().mean()
    with pytest.raises(ValueError, match="init"):
        g.sample_latents(model, ids, mask, strength=0.5, context=ctx)
    with pytest.raises(ValueError, match="context"):
        g.sample_latents(model, ids, mask, init=init, context=torch.zeros(2, 2, 4, 4))
    with pytest.raises(ValueError, match="strength"):
        g.sdedit_sigmas(20, 0.0)  # not a single step


def test_conditional_vae_shapes_loss_terms_and_samples():
    torch.manual_seed(0)
    vae = g.ConditionalVAE(vocab_size=20, grid=8, width=16, z_dim=6, text_dim=16)
    ids = torch.randint(5, 20, (3, 6))
    mask = torch.ones(3, 6, dtype=torch.long)
    x = torch.randn(3, 4, 8, 8)
    text = vae.text_vector(ids, mask)
    mean, log_var = vae.encode(x, text)
    assert text.shape == (3, 16) and mean.shape == log_var.shape == (3, 6)
    assert vae.decode(mean, text).shape == (3, 4, 8, 8)
    out = g.vae_loss(vae, x, ids, mask, generator=torch.Generator().manual_seed(0))
    # the KL of a diagonal Gaussian to N(0, I), in closed form, from the same encoder outputs
    kl = 0.5 * (mean.square() + log_var.exp() - 1 - log_var).sum(1).mean()
    torch.testing.assert_close(out["kl"], kl.detach())
    torch.testing.assert_close(out["loss"].detach(), out["recon"] + out["kl"])
    out["loss"].backward()
    assert all(p.grad is not None for p in vae.parameters() if p.requires_grad and p.dim() > 1)
    # noise_std scales the reconstruction term by 1 / noise_std²
    half = g.vae_loss(vae, x, ids, mask, noise_std=1.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(half["recon"] * 4, out["recon"])
    z = g.sample_vae(vae, ids, mask, generator=torch.Generator().manual_seed(1))
    assert z.shape == (3, 4, 8, 8) and not vae.training
    torch.testing.assert_close(z, g.sample_vae(vae, ids, mask, generator=torch.Generator().manual_seed(1)))


def test_sample_vae_bad_inputs():
    vae = g.ConditionalVAE(vocab_size=20, grid=8, width=16, z_dim=6, text_dim=16)
    with pytest.raises(TypeError, match="model"):
        g.sample_vae(torch.nn.Linear(1, 1), torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3))
    with pytest.raises(ValueError, match="mask"):
        g.sample_vae(vae, torch.ones(2, 3, dtype=torch.long), torch.ones(3, 3))


# ---- Bad inputs --------------------------------------------------------------
def test_bad_tensor_type_names_the_argument():
    with pytest.raises(TypeError, match="x0"):
        g.flow_noise([1.0], torch.zeros(1), 0.5)
    with pytest.raises(TypeError, match="features_a"):
        g.frechet_distance(np.zeros((3, 2)), torch.zeros(3, 2))


def test_shape_mismatch_names_the_argument():
    with pytest.raises(ValueError, match="noise"):
        g.flow_noise(torch.zeros(2, 3), torch.zeros(2, 4), 0.5)
    with pytest.raises(ValueError, match="uncond"):
        g.guided(torch.zeros(2), torch.zeros(3), 2.0)
    with pytest.raises(ValueError, match="features_b"):
        g.frechet_distance(torch.zeros(4, 2), torch.zeros(4, 3))


def test_time_out_of_range_or_wrong_length():
    with pytest.raises(ValueError, match="t must lie"):
        g.flow_noise(torch.zeros(2, 3), torch.zeros(2, 3), 1.5)
    with pytest.raises(ValueError, match="t must be"):
        g.flow_noise(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3))
    with pytest.raises(ValueError, match="t must lie"):
        g.ddpm_noise(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1000]), g.ddpm_alphas_cumprod(1000))
    with pytest.raises(TypeError, match="t must be an integer"):
        g.ddpm_noise(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0.0, 1.0]), g.ddpm_alphas_cumprod(10))


def test_bad_numbers_name_the_argument():
    with pytest.raises(ValueError, match="steps"):
        g.flow_sigmas(0)
    with pytest.raises(TypeError, match="steps"):
        g.euler_sample(lambda x, t: x, torch.zeros(1), steps=2.0)
    with pytest.raises(ValueError, match="scale"):
        g.guided(torch.zeros(2), torch.zeros(2), -1.0)
    with pytest.raises(ValueError, match="beta_end"):
        g.ddpm_alphas_cumprod(10, beta_start=0.1, beta_end=0.01)


def test_velocity_must_be_callable():
    with pytest.raises(TypeError, match="velocity"):
        g.euler_sample(torch.zeros(1), torch.zeros(1))


def test_prompts_must_match_the_images():
    oracle = _ReadingOracle([Scene(())])
    with pytest.raises(ValueError, match="prompts"):
        g.prompt_fidelity(oracle, torch.zeros(1, 3, 32, 32), ["a red circle", "a blue square"])
    with pytest.raises(TypeError, match="prompts"):
        g.prompt_fidelity(oracle, torch.zeros(1, 3, 32, 32), "a red circle")
    with pytest.raises(ValueError, match="reduction"):
        g.prompt_fidelity(oracle, torch.zeros(1, 3, 32, 32), ["a red circle"], reduction="sum")
    with pytest.raises(TypeError, match="oracle"):
        g.prompt_fidelity(object(), torch.zeros(1, 3, 32, 32), ["a red circle"])


def test_images_must_be_float_rgb_batches():
    with pytest.raises(ValueError, match="images"):
        g.Oracle().read(torch.zeros(3, 32, 32))
    with pytest.raises(TypeError, match="fake"):
        g.oracle_fid(g.Oracle(), torch.zeros(2, 3, 32, 32), torch.zeros(2, 3, 32, 32, dtype=torch.uint8))


def test_frechet_distance_needs_two_rows():
    with pytest.raises(ValueError, match="at least 2 rows"):
        g.frechet_distance(torch.zeros(1, 2), torch.zeros(3, 2))


def test_with_context_channels_starts_as_the_model_it_copies():
    torch.manual_seed(0)
    model = g.FlowUNet(vocab_size=20, widths=(16, 32), text_dim=16, cond_dim=32)
    for film in (m for m in model.modules() if isinstance(m, FiLM)):
        torch.nn.init.normal_(film.to_gamma_beta.weight, std=0.3)
    state = torch.random.get_rng_state()
    new = g.with_context_channels(model, 4)
    assert torch.equal(torch.random.get_rng_state(), state) and new.training
    x, t, ctx = torch.randn(3, 4, 8, 8), torch.rand(3), torch.randn(3, 4, 8, 8)
    ids, mask = torch.randint(5, 20, (3, 6)), torch.ones(3, 6, dtype=torch.long)
    model.eval(), new.eval()
    torch.testing.assert_close(new(x, t, ids, mask, ctx), model(x, t, ids, mask))  # the context is not seen yet
    assert new.stem.weight[:, 4:].abs().sum() == 0 and new.config.context_channels == 4
    with pytest.raises(TypeError, match="model"):
        g.with_context_channels(torch.nn.Linear(2, 2), 4)
    with pytest.raises(ValueError, match="context_channels"):
        g.with_context_channels(new, 2)  # fewer than the model already takes


def test_text_to_image_data_leaves_out_the_held_out_pairs_and_adds_thin_shapes():
    from mmutils.text import train_tokenizer

    ae = g.PatchAutoencoder()
    data = g.text_to_image_data(ae, train_tokenizer(), 1, n=300, n_thin=150)
    m = len(data["scenes"])
    assert 240 + 110 < m < 450 and not any(s.objects[0].desc[:2] in set(g.HELD_OUT_PAIRS) for s in data["scenes"])
    thin = sum(s.objects[0].shape in g.THIN_SHAPES and s.objects[0].size == "small" for s in data["scenes"]) / m
    assert 0.3 < thin < 0.55  # a sixth of the first part, all of the second
    assert data["latents"].shape == (m, 4, 16, 16) and data["ids"].shape == data["mask"].shape == (m, 24)
    assert len(data["captions"]) == m


def test_cached_text_to_image_is_what_load_text_to_image_reads(tmp_path, monkeypatch):
    from mmutils.text import train_tokenizer

    monkeypatch.setenv(g.CACHE_VARIABLE, str(tmp_path))
    torch.manual_seed(0)
    model = g.FlowUNet(vocab_size=len(train_tokenizer()), widths=(32, 64))
    g.cache_text_to_image(model, 7, steps=3)
    loaded = g.load_text_to_image(7, steps=3)  # read from the cache: nothing is trained
    assert not loaded.training
    for (name, value), other in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(value, other), name
    with pytest.raises(TypeError, match="model"):
        g.cache_text_to_image(torch.nn.Linear(2, 2), 7)
