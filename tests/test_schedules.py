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
        return -n * (b0 * t + 0.5 * (b1 - b0) * t ** 2)
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
    exact = math.sqrt(1000 * 1e-4 * t)
    assert abs(sch.sigma(t) - exact) <= 1e-6 * exact
    assert make_schedule("karras").ve_sigma(0.5) == pytest.approx(80 * 0.5 ** 7, rel=1e-12)


def test_parameters_and_repr():
    sch = make_schedule("linear", num_timesteps=500, beta_start=1e-3, beta_end=0.01)
    t = np.array([0.3, 0.7])
    assert_close(sch.alpha_bar(t), np.exp(-500 * (1e-3 * t + 0.5 * 9e-3 * t ** 2)), rtol=1e-12)
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
        assert_close(out, _closed_form("cosine", t_np), rtol=rtol, atol=1e-12)
        assert_close(sch.beta(t), sch.beta(t_np), rtol=rtol, atol=1e-12)


@pytest.mark.parametrize("kind", TIMESTEP_KINDS)
@pytest.mark.parametrize("n", [1, 2, 7, 50])
def test_timesteps_valid(kind, n):
    g = timesteps(n, kind)
    assert g.shape == (n + 1,)
    assert g[0] == 1.0 and g[-1] == 0.0
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
    # on another schedule the ramp starts at that schedule's level at t = 1
    lin = make_schedule("linear")
    g2 = timesteps(n, "karras", lin)
    assert g2[0] == 1.0
    assert_close(lin.ve_sigma(g2[1:-1]),
                 (lin.ve_sigma(1.0) ** (1 / rho) + ramp[1:] * (0.002 ** (1 / rho)
                  - lin.ve_sigma(1.0) ** (1 / rho))) ** rho, rtol=1e-9)


def test_timesteps_uniform_alpha_bar_and_log_snr():
    sch = make_schedule("linear")
    g = timesteps(8, "uniform_alpha_bar", sch)
    ab = sch.alpha_bar(g)
    assert_close(np.diff(ab), np.full(8, (1 - sch.alpha_bar(1.0)) / 8), rtol=1e-9)
    g = timesteps(8, "log_snr", sch)
    lam = sch.log_snr(g[:-1])
    assert_close(np.diff(lam), np.full(7, (-2 * math.log(0.002) - sch.log_snr(1.0)) / 7),
                 rtol=1e-8)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"`kind` must be one of .*linear.*karras"):
        make_schedule("exponential")
    with pytest.raises(ValueError, match="`kind` must be one of"):
        timesteps(10, "geometric")
    with pytest.raises(ValueError, match="`n` must be at least 1"):
        timesteps(0)
    with pytest.raises(TypeError, match="`n` must be an integer"):
        timesteps(2.5)
    with pytest.raises(TypeError, match="unknown parameters"):
        make_schedule("linear", sigma_max=3.0)
    with pytest.raises(ValueError, match="`num_timesteps` must be at least 1"):
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
