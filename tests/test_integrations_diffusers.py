"""arraygen's samplers against diffusers' schedulers on the same table and timesteps, with a tiny
random UNet2DModel and with the exact Gaussian epsilon; and the ArraygenScheduler adapter inside
a diffusers pipeline (issue 14 items 2, 4 and 6). Skips without diffusers."""

from __future__ import annotations

import numpy as np
import pytest

diffusers = pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")

from arraygen import samplers as S  # noqa: E402
from arraygen.integrations.diffusers import ArraygenScheduler, unet_model  # noqa: E402
from arraygen.random import Key, normal  # noqa: E402
from arraygen.schedules import NoiseSchedule  # noqa: E402

TOL = 1e-5  # float32 rounding of diffusers' coefficients, accumulated over the loop


@pytest.fixture(scope="module")
def unet():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 10x faster for this tiny net on a shared machine
    torch.manual_seed(0)
    net = diffusers.UNet2DModel(sample_size=8, in_channels=3, out_channels=3,
                                block_out_channels=(8, 16), layers_per_block=1,
                                norm_num_groups=8, down_block_types=("DownBlock2D",) * 2,
                                up_block_types=("UpBlock2D",) * 2)
    yield net.eval()
    torch.set_num_threads(threads)


def _noise(shape=(2, 3, 8, 8), seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _diffusers_loop(sched, model, x, n):
    sched.set_timesteps(n)
    x = x * sched.init_noise_sigma
    with torch.no_grad():
        for t in sched.timesteps:
            out = model(sched.scale_model_input(x, t), t)
            x = sched.step(out, t, x).prev_sample
    return x


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def _unet_call(unet):
    return lambda x, t: unet(x, t).sample


@pytest.mark.parametrize("beta_schedule", ["linear", "squaredcos_cap_v2"])
def test_ddim_and_dpmpp_2m_reproduce_diffusers_unet_loops(unet, beta_schedule):
    x = _noise()
    ddim = diffusers.DDIMScheduler(beta_schedule=beta_schedule, clip_sample=False)
    sch = NoiseSchedule.from_diffusers(ddim)
    ref = _diffusers_loop(ddim, _unet_call(unet), x, 10)
    ours = S.sample_ddim(unet_model(unet, sch), x, schedule=sch, steps=10, grid="leading",
                         prediction="epsilon")
    assert _rel(ours, ref) < TOL
    dpm = diffusers.DPMSolverMultistepScheduler(beta_schedule=beta_schedule)
    ref = _diffusers_loop(dpm, _unet_call(unet), x, 12)
    ours = S.sample_dpmpp_2m(unet_model(unet, sch), x, schedule=sch, steps=12, grid="linspace",
                             prediction="epsilon")
    assert _rel(ours, ref) < TOL
    # the naive route differs by far more than the tolerance: the comparison can fail
    naive = S.sample_dpmpp_2m(unet_model(unet, sch), x, schedule=sch, steps=12,
                              prediction="epsilon")
    assert _rel(naive, ref) > 10 * TOL


def _gaussian_eps(sch_ref_table, mu, var):
    """Exact epsilon of N(mu, diag var) data at diffusers' integer timestep ``i``."""
    def eps(x, i):
        ab = sch_ref_table[int(round(float(i)))].double()
        return ((1 - ab).sqrt() * (x.double() - ab.sqrt() * mu) / (ab * var + 1 - ab)).float()
    return eps


@pytest.mark.parametrize("order", [2, 3])
def test_unipc_reproduces_diffusers(unet, order):
    x = _noise()
    ref_s = diffusers.UniPCMultistepScheduler(solver_order=order)
    sch = NoiseSchedule.from_diffusers(ref_s)
    for n in (6, 16):
        ref = _diffusers_loop(ref_s, _unet_call(unet), x, n)
        ours = S.sample_unipc(unet_model(unet, sch), x, schedule=sch, steps=n, order=order,
                              grid="linspace", prediction="epsilon")
        assert _rel(ours, ref) < TOL
    # and on the exact Gaussian (v-prediction through the converter)
    gen = torch.Generator().manual_seed(1)
    mu, var = torch.randn(3, 1, 1, generator=gen).double(), torch.tensor([0.02, 0.3, 1.5])
    var = var.double()[:, None, None]
    ref_s = diffusers.UniPCMultistepScheduler(solver_order=order, beta_schedule="squaredcos_cap_v2",
                                              prediction_type="v_prediction")
    table = ref_s.alphas_cumprod
    sch = NoiseSchedule.from_diffusers(ref_s)
    eps = _gaussian_eps(table, mu, var)

    def v_model(x, i):
        ab = table[int(round(float(i)))].double()
        x0 = (x.double() - (1 - ab).sqrt() * eps(x, i).double()) / ab.sqrt()
        return (ab.sqrt() * eps(x, i).double() - (1 - ab).sqrt() * x0).float()

    ref = _diffusers_loop(ref_s, v_model, x, 8)
    ours = S.sample_unipc(S.discrete_time_model(v_model, 1000), x, schedule=sch, steps=8,
                          order=order, grid="linspace", prediction="v")
    assert _rel(ours, ref) < TOL


def _k_diffusion_dpmpp_3m_sde(denoise, x, sigmas, eta, noise):
    """k-diffusion 0.1.1's ``sample_dpmpp_3m_sde`` transcribed (VE x, sigmas, noise sampler)."""
    denoised_1, denoised_2 = None, None
    h, h_1, h_2 = None, None, None
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, i)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -sigmas[i].log(), -sigmas[i + 1].log()
            h = s - t
            h_eta = h * (eta + 1)
            x = torch.exp(-h_eta) * x + (-h_eta).expm1().neg() * denoised
            if h_2 is not None:
                r0 = h_1 / h
                r1 = h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None:
                r = h_1 / h
                d = (denoised - denoised_1) / r
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                x = x + phi_2 * d
            if eta:
                x = x + noise(i) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt()
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_dpmpp_3m_sde_reproduces_k_diffusion(unet, eta):
    """Against the installed k-diffusion's own ``sample_dpmpp_3m_sde`` (tests/_kdiffusion.py)
    when it loads, else against the transcription above (VE variables, its own coordinates),
    fed the same grid, network and noise; with k-diffusion present the transcription is checked
    against it too. (diffusers has no 3M SDE, and its third-order ODE warms up with a different
    second-order step.) tests/test_k_diffusion_parity.py covers the other samplers."""
    from _kdiffusion import load_sampling

    kd, _ = load_sampling()
    ref_s = diffusers.DPMSolverMultistepScheduler()
    sch = NoiseSchedule.from_diffusers(ref_s)
    grid = np.append((np.array([999, 799, 599, 399, 199, 99, 29, 9]) + 1) / 1000, 0.0)
    tsteps = np.round(grid[:-1] * 1000 - 1)
    sig = torch.tensor(np.append(sch.ve_sigma(grid[:-1]), 0.0))
    z = _noise().double()

    def denoise(x_ve, i):
        s = sig[i]
        x_vp = (x_ve / (1 + s * s).sqrt()).float()
        with torch.no_grad():
            eps = unet(x_vp, int(tsteps[i])).sample.double()
        return x_ve - s * eps

    def noise(i):
        return normal(Key(5).advance(i), tuple(z.shape), dtype=torch.float64, like=z)

    def step_of(sigma):  # k-diffusion passes levels; the step index is where they sit
        return int(torch.nonzero(sig == sigma.reshape(-1)[0])[0, 0])

    x_ve = z * (1 + sig[0] ** 2).sqrt()  # VE start whose VP sample is z
    ref = _k_diffusion_dpmpp_3m_sde(denoise, x_ve, sig, eta, noise)
    if kd is not None:
        real = kd.sample_dpmpp_3m_sde(lambda x, s: denoise(x, step_of(s)), x_ve, sig, eta=eta,
                                      noise_sampler=lambda s, s_next: noise(step_of(s)),
                                      disable=True)
        assert _rel(ref, real) < 1e-12  # the transcription is k-diffusion's loop
        ref = real
    ours = S.sample_dpmpp_3m_sde(unet_model(unet, sch), z, schedule=sch, grid=grid, eta=eta,
                                 prediction="epsilon", rng=5, model_dtype=torch.float32)
    assert ours.dtype == torch.float64
    assert _rel(ours, ref) < 1e-6  # float32 network inputs rounded from float64 states


def test_euler_ancestral_reproduces_diffusers_with_the_same_noise(unet, monkeypatch):
    import diffusers.schedulers.scheduling_euler_ancestral_discrete as mod

    calls = []

    def arraygen_noise(shape, generator=None, device=None, dtype=None, **kw):
        k = len(calls)
        calls.append(k)
        return normal(Key(7).advance(k), tuple(shape), dtype=torch.float32,
                      like=torch.zeros(1))

    monkeypatch.setattr(mod, "randn_tensor", arraygen_noise)
    ref_s = diffusers.EulerAncestralDiscreteScheduler(timestep_spacing="trailing")
    sch = NoiseSchedule.from_diffusers(ref_s)
    z = _noise()
    ref = _diffusers_loop(ref_s, _unet_call(unet), z, 10)
    # diffusers starts from z * sigma_max in VE units: the VP sample is z sigma / sqrt(1 + sigma^2)
    s_max = float(ref_s.sigmas[0])
    x_vp = z * (s_max / (1 + s_max ** 2) ** 0.5)
    ours = S.sample_euler_ancestral(unet_model(unet, sch), x_vp, schedule=sch, steps=10,
                                    grid="trailing", prediction="epsilon", rng=7)
    assert len(calls) == 10
    assert _rel(ours, ref) < TOL
    other = S.sample_euler_ancestral(unet_model(unet, sch), x_vp, schedule=sch, steps=10,
                                     grid="trailing", prediction="epsilon", rng=8)
    assert _rel(other, ref) > 1e-2


@pytest.mark.parametrize("method,ref_cls,kw", [
    ("ddim", diffusers.DDIMScheduler, {"clip_sample": False}),
    ("dpmpp_2m", diffusers.DPMSolverMultistepScheduler, {}),
    ("unipc", diffusers.UniPCMultistepScheduler, {}),
])
def test_scheduler_adapter_in_a_pipeline(unet, method, ref_cls, kw):
    ref_sched = ref_cls(**kw)
    if method != "unipc":
        pipe = diffusers.DDPMPipeline(unet=unet, scheduler=ref_sched)
        pipe.set_progress_bar_config(disable=True)
        ref = pipe(batch_size=2, generator=torch.Generator().manual_seed(3),
                   num_inference_steps=8, output_type="np").images
    else:  # UniPC's step takes no generator, so DDPMPipeline cannot run it: its loop by hand
        x = torch.randn((2, 3, 8, 8), generator=torch.Generator().manual_seed(3))
        x = _diffusers_loop(ref_sched, _unet_call(unet), x, 8)
        ref = (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    # diffusers' from_config drops values that were the source class's defaults (so a swapped
    # scheduler gets its own defaults): name the spacing to keep the source's timesteps
    ours_sched = ArraygenScheduler.from_config(
        ref_sched.config, method=method, timestep_spacing=ref_sched.config.timestep_spacing)
    pipe = diffusers.DDPMPipeline(unet=unet, scheduler=ours_sched)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(batch_size=2, generator=torch.Generator().manual_seed(3), num_inference_steps=8,
               output_type="np").images
    assert out.shape == ref.shape == (2, 8, 8, 3)
    assert np.abs(out - ref).max() < TOL
    assert torch.equal(ours_sched.timesteps, ref_sched.timesteps.to(ours_sched.timesteps.dtype))


def test_scheduler_adapter_other_grids_methods_and_errors(unet):
    sched = ArraygenScheduler(method="dpmpp_2m", grid="log_snr",
                              beta_schedule="squaredcos_cap_v2")
    sched.set_timesteps(6)
    assert sched.timesteps[0] == 999 and sched.timesteps.dtype == torch.float32
    pipe = diffusers.DDPMPipeline(unet=unet, scheduler=sched)
    pipe.set_progress_bar_config(disable=True)
    img = pipe(batch_size=1, generator=torch.Generator().manual_seed(0), num_inference_steps=6,
               output_type="np").images
    assert np.all(np.isfinite(img))
    # same answer as the sampler function on the same grid
    sch = sched.schedule
    x = _noise((1, 3, 8, 8))
    direct = S.sample_dpmpp_2m(unet_model(unet, sch), x, schedule=sch, steps=6,
                               prediction="epsilon")
    sched.set_timesteps(6)
    y = x.clone()
    with torch.no_grad():
        for t in sched.timesteps:
            y = sched.step(unet(y, t).sample, t, y).prev_sample
    assert _rel(y, direct) < TOL
    # stochastic methods draw from the pipeline's generator
    for method in ("ddpm", "dpmpp_2m_sde", "dpmpp_3m_sde", "euler_ancestral"):
        s = ArraygenScheduler(method=method)
        pipe = diffusers.DDPMPipeline(unet=unet, scheduler=s)
        pipe.set_progress_bar_config(disable=True)
        a = pipe(batch_size=1, generator=torch.Generator().manual_seed(0),
                 num_inference_steps=4, output_type="np").images
        b = pipe(batch_size=1, generator=torch.Generator().manual_seed(0),
                 num_inference_steps=4, output_type="np").images
        c = pipe(batch_size=1, generator=torch.Generator().manual_seed(1),
                 num_inference_steps=4, output_type="np").images
        assert np.array_equal(a, b) and not np.array_equal(a, c)
    ays = [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029, 0.0]
    s = ArraygenScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    s.set_timesteps(sigmas=ays)
    assert s.num_inference_steps == 11
    noisy = s.add_noise(x, x, torch.tensor([999]))
    ab = s.alphas_cumprod[999]
    assert torch.allclose(noisy, (ab.sqrt() + (1 - ab).sqrt()) * x)
    # image-to-image: start part-way down the grid from a noised image (add_noise at that t)
    s = ArraygenScheduler(method="dpmpp_2m")
    s.set_timesteps(10)
    s.set_begin_index(4)
    t_start = s.timesteps[4:]
    y = s.add_noise(x, _noise((1, 3, 8, 8), seed=5), t_start[:1])
    with torch.no_grad():
        for t in t_start:
            y = s.step(unet(y, t).sample, t, y).prev_sample
    sch = s.schedule
    ref = S.sample_dpmpp_2m(unet_model(unet, sch), s.add_noise(x, _noise((1, 3, 8, 8), seed=5),
                                                               t_start[:1]),
                            schedule=sch, grid=np.append((t_start.numpy() + 1) / 1000, 0.0),
                            prediction="epsilon")
    assert _rel(y, ref) < TOL
    with pytest.raises(ValueError, match="`begin_index` must be <= 9"):
        s.set_begin_index(10)
    with pytest.raises(ValueError, match="`method` must be one of"):
        ArraygenScheduler(method="heun")
    with pytest.raises(ValueError, match="call set_timesteps"):
        ArraygenScheduler().step(x, 0, x)


def test_model_dtype_bf16_network_keeps_float32_state(unet):
    """issue 14: a bf16 UNet received float32 x and raised; the state must stay float32."""
    sch = NoiseSchedule.from_diffusers(diffusers.DDIMScheduler())
    net16 = diffusers.UNet2DModel.from_config(unet.config).to(torch.bfloat16)
    net16.load_state_dict({k: v.to(torch.bfloat16) for k, v in unet.state_dict().items()})
    seen = []

    def model(x, t):
        seen.append(x.dtype)
        return unet_model(net16, sch)(x, t)

    x = _noise()
    out = S.sample_dpmpp_2m(model, x, schedule=sch, steps=5, prediction="epsilon",
                            model_dtype=torch.bfloat16)
    assert out.dtype == torch.float32 and set(seen) == {torch.bfloat16}
    ref = S.sample_dpmpp_2m(unet_model(unet, sch), x, schedule=sch, steps=5,
                            prediction="epsilon")
    assert _rel(out, ref) < 0.1  # bf16 network, float32 solver
    # half input: the model gets half, the result comes back in half
    out16 = S.sample_dpmpp_2m(model, x.to(torch.bfloat16), schedule=sch, steps=5,
                              prediction="epsilon")
    assert out16.dtype == torch.bfloat16
