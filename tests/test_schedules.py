"""Continuous noise schedules and sampling grids against their closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate

from arraygen.schedules import (
    SCHEDULE_KINDS,
    TIMESTEP_KINDS,
    NoiseSchedule,
    flow_timesteps,
    make_schedule,
    timesteps,
    validate_grid,
)
from arraygen.testing import assert_close

T = np.linspace(0.0, 1.0, 41)


def _log_closed_form(kind: str, t: np.ndarray) -> np.ndarray:
    """log alpha_bar written independently from the formulas in DESIGN 5 / the seed spec."""
    n, b0, b1 = 1000, 1e-4, 0.02
    t = np.asarray(t, dtype=np.float64)
    if kind == "linear":
        # DDPM's discrete table sum_{j<=i} log(1 - beta_j), beta = linspace(b0, b1, N), at
        # t = (i + 1) / N, continued by the midpoint rule: int_{-1/2}^{tN - 1/2} log(1 - beta(u))
        c = (b1 - b0) / (n - 1)
        return np.array([integrate.quad(lambda u: math.log1p(-(b0 + c * u)), -0.5,
                                        float(v) * n - 0.5, epsabs=1e-14, epsrel=1e-13)[0]
                         for v in t])
    if kind == "quadratic":
        return -n * (b0 * t + (b1 - b0) * t ** 3 / 3)
    if kind == "cosine":
        s = 0.008
        f = np.cos((t + s) / (1 + s) * np.pi / 2) ** 2
        return np.log(np.maximum(f / np.cos(s / (1 + s) * np.pi / 2) ** 2, 1e-8))
    if kind == "karras":
        return -np.log1p((80.0 * t ** 7) ** 2)

    # sigmoid: integrate beta(t) = N (b0 + (b1 - b0) sigmoid(-6 + 12 t)) numerically
    def beta(u):
        return n * (b0 + (b1 - b0) / (1 + math.exp(-(-6 + 12 * u))))
    return np.array([-integrate.quad(beta, 0, float(u), epsabs=1e-14, epsrel=1e-13)[0]
                     for u in t])


def _closed_form(kind: str, t: np.ndarray) -> np.ndarray:
    return np.exp(_log_closed_form(kind, t))


@pytest.mark.parametrize("kind", SCHEDULE_KINDS)
def test_alpha_bar_closed_form(kind):
    sch = make_schedule(kind)
    got = sch.alpha_bar(T)
    assert_close(got, _closed_form(kind, T), rtol=1e-10, atol=1e-15)
    assert sch.alpha_bar(0.0) == 1.0
    assert isinstance(sch.alpha_bar(0.5), float)
    assert np.all(np.diff(sch.alpha_bar(np.linspace(0, 1, 500))) <= 0)
    assert np.all(np.diff(sch.log_snr(np.linspace(0.01, 0.999, 500))) < 0)


@pytest.mark.parametrize("kind", SCHEDULE_KINDS)
def test_derived_quantities(kind):
    sch = make_schedule(kind)
    t = np.linspace(0.02, 0.98, 25)
    la = _log_closed_form(kind, t)
    ab, one_minus = np.exp(la), -np.expm1(la)
    assert_close(sch.sigma(t), np.sqrt(one_minus), rtol=1e-9)
    assert_close(sch.alpha(t), np.sqrt(ab), rtol=1e-12)
    assert_close(sch.log_snr(t), np.log(ab / one_minus), rtol=1e-9, atol=1e-9)
    assert_close(sch.ve_sigma(t), np.sqrt(one_minus / ab), rtol=1e-9)
    # beta = -d log alpha_bar / dt, against a central difference of the closed form
    h = 1e-5
    fd = -(_log_closed_form(kind, t + h) - _log_closed_form(kind, t - h)) / (2 * h)
    assert_close(sch.beta(t), fd, rtol=1e-6, atol=1e-8)


def test_small_t_precision():
    # sigma near t = 0 comes from expm1, not 1 - alpha_bar (which would round to 0)
    sch = make_schedule("linear")
    t = 1e-9
    exact = math.sqrt(-1000 * math.log1p(-(1e-4 - 0.5 * 0.0199 / 999)) * t)
    assert abs(sch.sigma(t) - exact) <= 1e-6 * exact
    assert make_schedule("karras").ve_sigma(0.5) == pytest.approx(80 * 0.5 ** 7, rel=1e-12)


def test_parameters_and_repr():
    sch = make_schedule("linear", num_timesteps=500, beta_start=1e-3, beta_end=0.01)
    t = np.array([0.3, 0.7])
    table = np.cumprod(1.0 - np.linspace(1e-3, 0.01, 500))
    assert_close(sch.alpha_bar(t), table[np.round(t * 500).astype(int) - 1], rtol=1e-7)
    assert "linear" in repr(sch)
    kar = make_schedule("karras", sigma_max=10.0, rho=3.0)
    assert kar.ve_sigma(1.0) == pytest.approx(10.0)


def test_namespaces(xp):
    sch = make_schedule("cosine")
    t_np = np.linspace(0.0, 1.0, 7)
    for dtype in ("float32", "float64"):
        t = xp.asarray(t_np, dtype=dtype)
        out = sch.alpha_bar(t)
        assert out.dtype == t.dtype
        assert str(getattr(out, "device", "cpu")) == str(getattr(t, "device", "cpu"))
        rtol = 1e-6 if dtype == "float32" else 1e-12
        assert_close(out, _closed_form("cosine", t_np), rtol=rtol, atol=1e-12,
                     check_namespace=False, check_dtype=False)
        assert_close(sch.beta(t), sch.beta(t_np), rtol=rtol, atol=1e-12,
                     check_namespace=False, check_dtype=False)


@pytest.mark.parametrize("kind", TIMESTEP_KINDS)
@pytest.mark.parametrize("n", [1, 2, 7, 50])
def test_timesteps_valid(kind, n):
    extra = {"sigmas": [14.6, 6.3, 3.8, 2.2, 1.3, 0.86, 0.55, 0.38, 0.23, 0.11, 0.029]}
    g = timesteps(n, kind, **({"sigmas": extra["sigmas"]} if kind == "sigmas" else {}))
    assert g.shape == (n + 1,)
    assert g[-1] == 0.0
    assert g[0] == 1.0 or kind in ("leading", "linspace", "sigmas")
    assert np.all(np.diff(g) < 0)


def test_timesteps_closed_forms():
    u = np.arange(11) / 10
    assert_close(timesteps(10, "linear"), 1 - u, rtol=0, atol=1e-15)
    assert_close(timesteps(10, "quadratic"), 1 - u ** 2, rtol=0, atol=1e-15)
    assert_close(timesteps(10, "cosine"), 0.5 * (1 + np.cos(np.pi * u)), rtol=0, atol=1e-15)


def test_timesteps_karras_matches_k_diffusion_formula():
    # k-diffusion get_sigmas_karras(n, 0.002, 80, rho=7) followed by 0
    n, rho = 20, 7.0
    ramp = np.linspace(0, 1, n)
    sig = (80 ** (1 / rho) + ramp * (0.002 ** (1 / rho) - 80 ** (1 / rho))) ** rho
    sch = make_schedule("karras")
    g = timesteps(n, "karras", sch)
    assert_close(sch.ve_sigma(g[:-1]), sig, rtol=1e-10)
    # on another schedule the ramp starts at min(that schedule's level at t = 1, 80) and
    # t = 1 stays the entry point (issue 14: cosine's level 1e4 wasted 15 of 20 levels)
    for lin in (make_schedule("linear"), make_schedule("cosine")):
        assert lin.ve_sigma(1.0) > 80.0
        g2 = timesteps(n, "karras", lin)
        assert g2[0] == 1.0
        assert_close(lin.ve_sigma(g2[1:-1]), sig[1:], rtol=1e-9)
    g3 = timesteps(n, "karras", make_schedule("linear"), sigma_max=1e3)
    assert make_schedule("linear").ve_sigma(g3[1]) > 80.0


def test_timesteps_uniform_alpha_bar_and_log_snr():
    sch = make_schedule("linear")
    g = timesteps(8, "uniform_alpha_bar", sch)
    ab = sch.alpha_bar(g)
    assert_close(np.diff(ab), np.full(8, (1 - sch.alpha_bar(1.0)) / 8), rtol=1e-9)
    g = timesteps(8, "log_snr", sch)
    lam = sch.log_snr(g[1:-1])
    lam0 = -2 * math.log(80.0)  # capped: log-SNR(1) of linear is -2 log 152
    assert sch.log_snr(1.0) < lam0 and g[0] == 1.0
    assert_close(lam, lam0 + np.arange(1, 8) * (-2 * math.log(0.002) - lam0) / 7, rtol=1e-8)
    karras = make_schedule("karras", sigma_max=20.0)  # below the cap: starts at its own top
    g = timesteps(8, "log_snr", karras)
    assert_close(karras.log_snr(g[1]), -2 * math.log(20.0) + (-2 * math.log(0.002)
                 + 2 * math.log(20.0)) / 7, rtol=1e-8)


def test_linear_matches_diffusers_discrete_table():
    """issue 14: make_schedule("linear") was up to 7% off diffusers' alphas_cumprod."""
    diffusers = pytest.importorskip("diffusers")
    table = diffusers.DDPMScheduler(beta_schedule="linear").alphas_cumprod.double().numpy()
    t = (np.arange(1000) + 1) / 1000
    # the float32 table itself carries ~3e-7 relative rounding
    assert_close(make_schedule("linear").alpha_bar(t), table, rtol=1e-6, atol=0)
    exact64 = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))
    assert_close(make_schedule("linear").alpha_bar(t), exact64, rtol=5e-8, atol=0)


def test_from_alphas_cumprod_interpolates_in_log_snr():
    rng = np.random.default_rng(0)
    betas = np.sort(rng.uniform(1e-4, 0.05, 50))
    table = np.cumprod(1.0 - betas)
    sch = NoiseSchedule.from_alphas_cumprod(table)
    knots = (np.arange(50) + 1) / 50
    assert_close(sch.alpha_bar(knots), table, rtol=1e-13, atol=0)
    assert sch.alpha_bar(0.0) == 1.0 and sch.num_timesteps == 50
    lam = np.log(table / (1 - table))
    mid = knots[:-1] + 0.3 / 50
    assert_close(sch.log_snr(mid), lam[:-1] + 0.3 * np.diff(lam), rtol=1e-12)
    # first segment: log alpha_bar linear from 0
    assert_close(sch.log_alpha_bar(0.4 / 50), 0.4 * math.log(table[0]), rtol=1e-12)
    # beta = -d log alpha_bar / dt by central differences inside segments
    t = np.array([0.1 / 50, 3.5 / 50, 20.25 / 50, 49.5 / 50])
    h = 1e-7
    fd = -(sch.log_alpha_bar(t + h) - sch.log_alpha_bar(t - h)) / (2 * h)
    assert_close(sch.beta(t), fd, rtol=1e-5)
    # inverse and grids work on it
    la = sch.log_alpha_bar(np.array([0.3, 0.77]))
    assert_close(sch.t_from_log_alpha_bar(la), np.array([0.3, 0.77]), rtol=1e-10)
    assert np.all(np.diff(timesteps(7, "log_snr", sch)) < 0)
    for bad, err in (([0.9], ValueError), ([0.9, 0.95], ValueError), ([0.9, 0.0], ValueError),
                     ([[0.9, 0.5]], ValueError), (["a", "b"], TypeError)):
        with pytest.raises(err, match="`alphas_cumprod`"):
            NoiseSchedule.from_alphas_cumprod(bad)


def test_from_alphas_cumprod_namespaces(xp):
    table = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 100))
    sch = NoiseSchedule.from_alphas_cumprod(table)
    t_np = np.linspace(0.0, 1.0, 9)
    t = xp.asarray(t_np)
    assert_close(sch.alpha_bar(t), sch.alpha_bar(t_np), rtol=1e-13, atol=0,
                 check_namespace=False, check_dtype=False)
    assert_close(sch.beta(t), sch.beta(t_np), rtol=1e-13, atol=0, check_namespace=False,
                 check_dtype=False)


def test_from_diffusers_and_spacings_match_diffusers():
    diffusers = pytest.importorskip("diffusers")
    for cls, kind in ((diffusers.DDIMScheduler, "leading"),
                      (diffusers.DPMSolverMultistepScheduler, "linspace"),
                      (diffusers.UniPCMultistepScheduler, "linspace"),
                      (diffusers.DDIMScheduler, "trailing")):
        for beta_schedule in ("linear", "scaled_linear", "squaredcos_cap_v2"):
            ref = cls(beta_schedule=beta_schedule, timestep_spacing=kind)
            sch = NoiseSchedule.from_diffusers(ref)
            assert_close(sch.alpha_bar((np.arange(1000) + 1) / 1000),
                         ref.alphas_cumprod.double().numpy(), rtol=1e-14, atol=0)
            for n in (7, 10, 25):
                ref.set_timesteps(n)
                g = timesteps(n, kind, sch)
                assert_close(g[:-1] * 1000 - 1, ref.timesteps.double().numpy(), rtol=0,
                             atol=1e-9)
    cfg = diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2").config
    sch = NoiseSchedule.from_diffusers(dict(cfg))
    assert sch.num_timesteps == 1000
    with pytest.raises(TypeError, match="`scheduler` must be a diffusers scheduler"):
        NoiseSchedule.from_diffusers(3)


def test_sigma_list_grid_align_your_steps():
    ays = np.array([14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152,
                    0.029])  # AYS SD1.5 levels (10 steps)
    sch = NoiseSchedule.from_diffusers(
        pytest.importorskip("diffusers").DDPMScheduler(beta_schedule="scaled_linear",
                                                       beta_start=0.00085, beta_end=0.012))
    top = sch.ve_sigma(1.0)  # 14.6146: AYS's first level 14.615 is clipped to t = 1
    g = timesteps(11, "sigmas", sch, sigmas=ays)
    assert g[0] == 1.0 and abs(top - 14.615) < 1e-3
    assert_close(sch.ve_sigma(g[1:-1]), ays[1:], rtol=1e-9)
    g20 = timesteps(20, "sigmas", sch, sigmas=np.append(ays, 0.0))
    lev = sch.ve_sigma(g20[:-1])
    # log-linear interpolation (AYS's rule for other step counts)
    ref = np.exp(np.interp(np.linspace(0, 1, 20), np.linspace(0, 1, 11), np.log(ays[::-1])))
    assert_close(lev[1:], ref[::-1][1:], rtol=1e-9)
    with pytest.raises(ValueError, match="`sigmas` must be strictly decreasing"):
        timesteps(3, "sigmas", sch, sigmas=[1.0, 2.0, 0.5])
    with pytest.raises(TypeError, match="needs `sigmas=`"):
        timesteps(3, "sigmas", sch)
    with pytest.raises(TypeError, match="only used by the 'sigmas' grid"):
        timesteps(3, "linear", sch, sigmas=[1.0])


def test_flow_timesteps_shift_matches_diffusers():
    diffusers = pytest.importorskip("diffusers")
    for shift in (1.0, 3.0):
        ref = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
        ref.set_timesteps(10)
        sig = ref.sigmas.double().numpy()  # decreasing noise levels 1 -> 0
        # diffusers shifts linspace(1, shifted sigma_min, n): our shift formula on the same base
        lo = shift * 1e-3 / (1 + (shift - 1) * 1e-3)
        base = np.append(np.linspace(1.0, lo, 10), 0.0)
        shifted = shift * base / (1 + (shift - 1) * base)
        ours = 1.0 - flow_timesteps(10, shift=shift)
        assert_close(shifted, sig, rtol=1e-6, atol=1e-6)
        assert ours[0] == 1.0 and ours[-1] == 0.0
    assert_close(flow_timesteps(4, shift=3.0), np.array([0.0, 0.1, 0.25, 0.5, 1.0]), rtol=1e-12,
                 atol=1e-15)
    with pytest.raises(ValueError, match="`shift` must be positive"):
        flow_timesteps(4, shift=-1.0)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"`kind` must be one of .*linear.*karras"):
        make_schedule("exponential")
    with pytest.raises(ValueError, match="`kind` must be one of"):
        timesteps(10, "geometric")
    with pytest.raises(ValueError, match="`n` must be >= 1"):
        timesteps(0)
    with pytest.raises(TypeError, match="`n` must be an integer"):
        timesteps(2.5)
    with pytest.raises(TypeError, match="unknown parameters"):
        make_schedule("linear", sigma_max=3.0)
    with pytest.raises(ValueError, match="`num_timesteps` must be >= 1"):
        make_schedule("linear", num_timesteps=0)
    with pytest.raises(ValueError, match="`sigma_min` must be below `sigma_max`"):
        make_schedule("karras", sigma_min=100.0)
    with pytest.raises(ValueError, match="beta_start"):
        make_schedule("linear", beta_start=0.1, beta_end=0.01)
    with pytest.raises(ValueError, match="`s` must be finite"):
        make_schedule("cosine", s=float("nan"))
    with pytest.raises(ValueError, match="strictly decreasing"):
        validate_grid([1.0, 0.5, 0.6, 0.0])
    with pytest.raises(ValueError, match="strictly decreasing"):
        validate_grid([1.0, 0.5, 0.5, 0.0])
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        validate_grid([1.5, 0.0])
    with pytest.raises(ValueError, match="at least 2 times"):
        validate_grid([1.0])
    with pytest.raises(TypeError, match="`t` must be a real scalar"):
        make_schedule("linear").alpha_bar("half")
    with pytest.raises(TypeError, match="`schedule` must be a NoiseSchedule"):
        timesteps(4, "karras", schedule="karras")
    assert isinstance(make_schedule("sigmoid"), NoiseSchedule)
    # issue 13: one boundary (check_int / check_scalar), errors name the argument
    with pytest.raises(TypeError, match="`num_timesteps` must be an integer"):
        make_schedule("linear", num_timesteps=True)
    with pytest.raises(TypeError, match="`beta_end` must be a real number"):
        make_schedule("linear", beta_end="big")
    with pytest.raises(ValueError, match="`rho` must be <= 1000"):
        make_schedule("karras", rho=1e6)
    with pytest.raises(ValueError, match="`sigma_max` must be positive"):
        timesteps(5, "karras", make_schedule("cosine"), sigma_max=-1.0)
