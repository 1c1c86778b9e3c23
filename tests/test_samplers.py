"""Samplers against closed forms (VP diffusion and flow of a Gaussian), exact Gaussian-mixture
scores, the exact empirical score, and the converters; bad inputs.

Pre-registered bounds (fixed seeds, chosen before looking at the sampler outputs from the noise
level of the estimators): MMD^2 (Gaussian kernel, bandwidth 0.5, n = 2000, unbiased) between
sampler output and exact mixture samples <= 2e-3 (two exact sample sets give |MMD^2| ~ 4e-4;
a sampler with the score's sign flipped gives ~ 0.3); Gaussian sample means within 5 standard
errors plus 0.02, covariances within 10 % (n = 8000).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from arraygen import samplers as S
from arraygen.bridge import EmpiricalScore
from arraygen.datasets import GaussianMixture
from arraygen.metrics import mmd
from arraygen.random import Key, normal
from arraygen.schedules import make_schedule, timesteps
from arraygen.testing import assert_close

MU = np.array([0.5, -1.0])
COV = np.array([[0.3, 0.12], [0.12, 0.15]])


def _gaussian(xp=None):
    if xp is None:
        return GaussianMixture(MU[None, :], COV[None, :, :])
    return GaussianMixture(xp.asarray(MU[None, :]), xp.asarray(COV[None, :, :]))


def _ring(k: int = 8, radius: float = 2.0, std: float = 0.3):
    ang = np.arange(k) * 2 * np.pi / k
    return GaussianMixture(np.stack([radius * np.cos(ang), radius * np.sin(ang)], 1),
                           np.full(k, std ** 2))


def _sqrtm(c):
    lam, vec = np.linalg.eigh(c)
    return (vec * np.sqrt(lam)) @ vec.T


def _start(sch, n, seed=0):
    """Exact samples of the VP marginal at t = 1 for the Gaussian target."""
    ab = sch.alpha_bar(1.0)
    z = np.random.default_rng(seed).standard_normal((n, 2))
    c1 = ab * COV + (1 - ab) * np.eye(2)
    return math.sqrt(ab) * MU + z @ _sqrtm(c1)


def _pf_ode_endpoint(sch, x_start, t_start=1.0):
    """Exact probability-flow ODE solution at t = 0: y - mu = (S + s^2)^(1/2) (S + s0^2)^(-1/2)
    (y0 - mu) with y = x / alpha, s = the variance-exploding level (here s = 0 at the end)."""
    a0, s0 = sch.alpha(t_start), sch.ve_sigma(t_start)
    y0 = x_start / a0 - MU
    m = _sqrtm(COV) @ np.linalg.inv(_sqrtm(COV + s0 ** 2 * np.eye(2)))
    return MU + y0 @ m.T


# --------------------------------------------------------------------------------------------
# deterministic samplers: convergence order against the exact PF-ODE solution
# --------------------------------------------------------------------------------------------

def _rms(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2)))


@pytest.mark.parametrize("name,fn,order", [
    ("euler", S.sample_euler, 1), ("heun", S.sample_heun, 2), ("dpmpp_2m", S.sample_dpmpp_2m, 2),
])
def test_ode_convergence_order(name, fn, order):
    sch = make_schedule("karras")
    gm = _gaussian()
    x = _start(sch, 512)
    exact = _pf_ode_endpoint(sch, x)
    errs = [_rms(fn(gm.model(sch, "x0"), x, schedule=sch, steps=n, prediction="x0"), exact)
            for n in (20, 40, 80)]
    ratios = [errs[0] / errs[1], errs[1] / errs[2]]
    if order == 2:
        assert min(ratios) > 3.0, (errs, ratios)
    else:
        assert all(1.6 < r < 2.5 for r in ratios), (errs, ratios)
    assert errs[-1] < (0.05 if order == 1 else 0.005)


def test_dpmpp_2m_quality_target():
    # P7: Gaussian data N(0.5, 0.5^2), Karras sigmas 0.002..80, 20 model evaluations:
    # k-diffusion's DPM++(2M) reaches an endpoint RMS error of 0.0493 (relative to 0.5)
    sch = make_schedule("karras")
    mu, c = 0.5, 0.5
    gm = GaussianMixture(np.full((1, 64), mu), np.full((1,), c * c))
    ab1 = sch.alpha_bar(1.0)
    z = np.random.default_rng(3).standard_normal((64, 64))
    x = math.sqrt(ab1) * mu + math.sqrt(ab1 * c * c + 1 - ab1) * z
    exact = mu + (x / math.sqrt(ab1) - mu) * c / math.sqrt(c * c + sch.ve_sigma(1.0) ** 2)
    calls = []
    model = gm.model(sch, "x0")

    def counted(x_, t_):
        calls.append(t_)
        return model(x_, t_)

    out = S.sample_dpmpp_2m(counted, x, schedule=sch, steps=20, prediction="x0")
    assert len(calls) == 20
    assert _rms(out, exact) / c <= 0.0495


def test_heun_churn_changes_the_path_but_not_the_law():
    sch = make_schedule("karras")
    gm = _gaussian()
    x = _start(sch, 64)
    plain = S.sample_heun(gm.model(sch), x, schedule=sch, steps=10, prediction="score")
    churned = S.sample_heun(gm.model(sch), x, schedule=sch, steps=10, s_churn=5.0, rng=1,
                            prediction="score")
    again = S.sample_heun(gm.model(sch), x, schedule=sch, steps=10, s_churn=5.0, rng=1,
                          prediction="score")
    np.testing.assert_array_equal(churned, again)
    assert _rms(plain, churned) > 1e-3
    none = S.sample_heun(gm.model(sch), x, schedule=sch, steps=10, s_churn=5.0, s_tmax=1e-3,
                         rng=1, prediction="score")
    assert_close(none, plain, rtol=1e-12, atol=1e-12)


def test_ddim_eta0_equals_euler_and_is_deterministic():
    sch = make_schedule("linear")
    gm = _gaussian()
    x = _start(sch, 64)
    a = S.sample_ddim(gm.model(sch), x, schedule=sch, steps=15, prediction="score")
    b = S.sample_ddim(gm.model(sch), x, schedule=sch, steps=15, rng=123, prediction="score")
    e = S.sample_euler(gm.model(sch), x, schedule=sch, steps=15, prediction="score")
    np.testing.assert_array_equal(a, b)
    assert_close(a, e, rtol=1e-12, atol=1e-12)


def test_ddim_inversion_round_trip():
    sch = make_schedule("linear")
    gm = _gaussian()
    x = _start(sch, 64)
    grid = timesteps(40, "linear")[:36]  # ends at t = 0.125
    x_lo = S.sample_ddim(gm.model(sch), x, schedule=sch, steps=grid, prediction="score")
    back = S.ddim_invert(gm.model(sch), x_lo, schedule=sch, steps=grid, n_fixed_point=20,
                         prediction="score")
    assert _rms(back, x) < 1e-10
    # the plain (one-evaluation) inversion is approximate, and improves with finer grids
    errs = []
    for n in (20, 80):
        g = timesteps(n, "linear")[:-1]
        lo = S.sample_ddim(gm.model(sch), x, schedule=sch, steps=g, prediction="score")
        errs.append(_rms(S.ddim_invert(gm.model(sch), lo, schedule=sch, steps=g,
                                       prediction="score"), x))
    assert errs[1] < errs[0] / 2


# --------------------------------------------------------------------------------------------
# stochastic samplers: moments of a Gaussian target
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,fn,kw", [
    ("ddpm", S.sample_ddpm, {"steps": 200}),
    ("ddim_eta1", S.sample_ddim, {"steps": 200, "eta": 1.0}),
    ("sde", S.sample_sde, {"steps": 400}),
    ("sde_pc", S.sample_sde, {"steps": 100, "corrector_steps": 1}),
    ("dpmpp_2m_sde", S.sample_dpmpp_2m, {"steps": 60, "sde": True}),
    ("heun", S.sample_heun, {"steps": 30}),
    ("heun_churn", S.sample_heun, {"steps": 40, "s_churn": 20.0, "s_tmin": 0.05}),
])
def test_vp_gaussian_moments(name, fn, kw):
    sch = make_schedule("linear")
    gm = _gaussian()
    n = 8000
    x = _start(sch, n, seed=5)
    out = fn(gm.model(sch, "epsilon"), x, schedule=sch, prediction="epsilon", rng=11, **kw)
    se = np.sqrt(np.diag(COV) / n)
    assert np.all(np.abs(out.mean(0) - MU) < 5 * se + 0.02), out.mean(0)
    assert_close(np.cov(out.T), COV, rtol=0.10, atol=0.1 * 0.12)


# --------------------------------------------------------------------------------------------
# Gaussian-mixture targets with exact scores: MMD to exact samples
# --------------------------------------------------------------------------------------------

MMD_BOUND = 2e-3


@pytest.mark.parametrize("name,fn,kw", [
    ("ddpm", S.sample_ddpm, {"steps": 100}),
    ("ddim", S.sample_ddim, {"steps": 30}),
    ("euler", S.sample_euler, {"steps": 100}),
    ("heun", S.sample_heun, {"steps": 25}),
    ("dpmpp_2m", S.sample_dpmpp_2m, {"steps": 25}),
    ("dpmpp_2m_sde", S.sample_dpmpp_2m, {"steps": 50, "sde": True}),
    ("sde", S.sample_sde, {"steps": 200}),
])
def test_mixture_mmd(name, fn, kw):
    gm = _ring()
    sch = make_schedule("linear")
    n = 2000
    ref = gm.sample(n, rng=123)
    x = normal(7, (n, 2), like=ref)
    out = fn(gm.model(sch), x, schedule=sch, rng=1, **kw, prediction="score")
    value = float(mmd(out, ref, bandwidth=0.5, backend="array_api"))
    assert value < MMD_BOUND, value


def test_mixture_mmd_detects_wrong_sign():
    # the test above can fail: the seed's drift sign error (-score) is far outside the bound
    gm = _ring()
    sch = make_schedule("linear")
    ref = gm.sample(2000, rng=123)
    x = normal(7, (2000, 2), like=ref)
    model = gm.model(sch)
    out = S.sample_euler(lambda x_, t_: -model(x_, t_), x, schedule=sch, steps=50,
                         prediction="score")
    assert float(mmd(out, ref, bandwidth=0.5, backend="array_api")) > 20 * MMD_BOUND


# --------------------------------------------------------------------------------------------
# flow matching (t = 0 noise, t = 1 data) on a Gaussian target
# --------------------------------------------------------------------------------------------

def test_mixture_velocity_matches_flow_map():
    gm = _gaussian()
    x0 = np.random.default_rng(1).standard_normal((16, 2))

    def flow(t):
        return t * MU + x0 @ _sqrtm(t * t * COV + (1 - t) ** 2 * np.eye(2)).T

    for t in (0.0, 0.3, 0.9):
        h = 1e-6
        fd = (flow(t + h) - flow(max(t - h, 0.0))) / (h + min(h, t))
        assert_close(gm.velocity(flow(t), t), fd, rtol=1e-5, atol=1e-6)


def test_flow_heun_second_order():
    gm = _gaussian()
    x0 = np.random.default_rng(2).standard_normal((256, 2))
    exact = MU + x0 @ _sqrtm(COV).T
    errs = [_rms(S.sample_flow_heun(lambda x, t: gm.velocity(x, t), x0, steps=n,
                                    prediction="velocity"), exact)
            for n in (10, 20, 40)]
    assert errs[0] / errs[1] > 3.0 and errs[1] / errs[2] > 3.0, errs


def test_flow_grids_shift_and_default():
    """issue 14: SD3-style shift for flow grids; flow DDIM defaults to the linear grid (which
    measures better than the quadratic one on the exact Gaussian)."""
    from arraygen.schedules import flow_timesteps
    gm = _gaussian()
    x0 = np.random.default_rng(2).standard_normal((32, 2))
    v = lambda x, t: gm.velocity(x, t)  # noqa: E731
    for shift in (1.0, 3.0):
        out = S.sample_flow_ddim(v, x0, steps=9, shift=shift, prediction="velocity")
        x = x0.copy()
        for t, tn in itertools.pairwise(flow_timesteps(9, shift=shift)):
            x = x + (tn - t) * gm.velocity(x, t)
        assert_close(out, x, rtol=1e-12, atol=1e-12)
    g = flow_timesteps(6, "quadratic", shift=2.0)
    assert_close(S.sample_flow_heun(v, x0, grid=g, prediction="velocity"),
                 S.sample_flow_heun(v, x0, steps=6, grid="quadratic", shift=2.0,
                                    prediction="velocity"), rtol=0, atol=0)
    # the linear default is the better grid at equal steps on the Gaussian's exact flow map
    exact = MU + x0 @ _sqrtm(COV).T
    lin = _rms(S.sample_flow_ddim(v, x0, steps=10, prediction="velocity"), exact)
    quad = _rms(S.sample_flow_ddim(v, x0, steps=10, grid="quadratic", prediction="velocity"),
                exact)
    assert lin < quad


def test_flow_ddim_eta0_is_euler_on_quadratic_grid():
    gm = _gaussian()
    x0 = np.random.default_rng(2).standard_normal((32, 2))
    out = S.sample_flow_ddim(lambda x, t: gm.velocity(x, t), x0, steps=12, grid="quadratic",
                             prediction="velocity")
    x = x0.copy()
    grid = (np.arange(13) / 12) ** 2
    for t, tn in itertools.pairwise(grid):
        x = x + (tn - t) * gm.velocity(x, t)
    assert_close(out, x, rtol=1e-12, atol=1e-12)
    same = S.sample_flow_sde(lambda x, t: gm.velocity(x, t), x0, steps=grid, temperature=0.0,
                             prediction="velocity")
    assert_close(same, x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name,fn,kw", [
    ("flow_sde", S.sample_flow_sde, {"steps": 200, "temperature": 0.7}),
    ("flow_ddim_eta", S.sample_flow_ddim, {"steps": 100, "eta": 0.7}),
    ("flow_heun", S.sample_flow_heun, {"steps": 10}),
])
def test_flow_gaussian_moments(name, fn, kw):
    gm = _gaussian()
    n = 8000
    x0 = np.random.default_rng(9).standard_normal((n, 2))
    out = fn(lambda x, t: gm.velocity(x, t), x0, rng=4, **kw, prediction="velocity")
    se = np.sqrt(np.diag(COV) / n)
    assert np.all(np.abs(out.mean(0) - MU) < 5 * se + 0.02), out.mean(0)
    assert_close(np.cov(out.T), COV, rtol=0.10, atol=0.1 * 0.12)


def test_flow_sde_without_drift_correction_is_wrong():
    # seed 003's flow SDE (noise without the score correction) inflates the variance; ours not
    gm = _gaussian()
    x0 = np.random.default_rng(9).standard_normal((8000, 2))
    key = Key(4)
    x = x0.copy()
    grid = np.linspace(0, 1, 201)
    for k, (t, tn) in enumerate(itertools.pairwise(grid)):
        x = x + (tn - t) * gm.velocity(x, t)
        if k < 195:
            x = x + 0.7 * (1 - t) * math.sqrt(tn - t) * normal(key.advance(k), x.shape, like=x)
    assert np.trace(np.cov(x.T)) > 1.2 * np.trace(COV)


# --------------------------------------------------------------------------------------------
# noise streams, namespaces, callbacks
# --------------------------------------------------------------------------------------------

def test_noise_reproducible():
    sch = make_schedule("linear")
    gm = _gaussian()
    x = _start(sch, 32)
    a = S.sample_ddpm(gm.model(sch), x, schedule=sch, steps=10, rng=5, prediction="score")
    b = S.sample_ddpm(gm.model(sch), x, schedule=sch, steps=10, rng=Key(5), prediction="score")
    c = S.sample_ddpm(gm.model(sch), x, schedule=sch, steps=10, rng=6, prediction="score")
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3
    g1 = S.sample_ddpm(gm.model(sch), x, schedule=sch, steps=10, rng=np.random.default_rng(1),
                       prediction="score")
    g2 = S.sample_ddpm(gm.model(sch), x, schedule=sch, steps=10, rng=np.random.default_rng(1),
                       prediction="score")
    np.testing.assert_array_equal(g1, g2)


@pytest.mark.parametrize("method", ["ddpm", "dpmpp_2m_sde", "flow_sde"])
def test_namespaces_match_numpy(xp, method):
    sch = make_schedule("cosine")
    x_np = _start(sch, 24)
    gm_np, gm_xp = _gaussian(), _gaussian(xp)

    def run(gm, x):
        if method == "ddpm":
            return S.sample_ddpm(gm.model(sch), x, schedule=sch, steps=8, rng=3, prediction="score")
        if method == "dpmpp_2m_sde":
            return S.sample_dpmpp_2m(gm.model(sch, "x0"), x, schedule=sch, steps=8, rng=3,
                                     prediction="x0", sde=True)
        return S.sample_flow_sde(lambda x_, t_: gm.velocity(x_, t_), x, steps=8, rng=3,
                                 n_noise_free=2, prediction="velocity")

    ref = run(gm_np, x_np)
    x = xp.asarray(x_np)
    out = run(gm_xp, x)
    assert out.dtype == x.dtype
    assert str(getattr(out, "device", "cpu")) == str(getattr(x, "device", "cpu"))
    assert_close(out, ref, rtol=1e-9, atol=1e-9, check_namespace=False, check_dtype=False)


def test_float32_and_half_inputs():
    torch = pytest.importorskip("torch")
    sch = make_schedule("linear")
    gm = GaussianMixture(torch.tensor(MU[None, :]), torch.tensor(COV[None]))
    x64 = _start(sch, 16)
    ref = S.sample_dpmpp_2m(_gaussian().model(sch), x64, schedule=sch, steps=10, prediction="score")
    for dt, tol in ((torch.float32, 1e-4), (torch.float16, 2e-2)):
        out = S.sample_dpmpp_2m(gm.model(sch), torch.tensor(x64, dtype=dt), schedule=sch,
                                steps=10, prediction="score")
        assert out.dtype == dt
        assert_close(out, ref, rtol=tol, atol=tol, check_namespace=False, check_dtype=False)


def test_callback_batched_t_and_progress():
    sch = make_schedule("linear")
    gm = _gaussian()
    x = _start(sch, 8)
    seen, shapes = [], []

    def model(x_, t_):
        shapes.append(tuple(t_.shape))
        return gm.score(x_, t_, sch)

    out = S.sample_heun(model, x, schedule=sch, steps=5, callback=seen.append, batched_t=True,
                        progress=True, prediction="score")
    assert [d["step"] for d in seen] == list(range(5))
    # 2n - 2: Euler on the entry step from t = 1 (VE level 152 > 80) and on the step to t = 0
    assert seen[-1]["t_next"] == 0.0 and seen[-1]["nfe"] == 8
    assert set(shapes) == {(8,)}
    ref = S.sample_heun(gm.model(sch), x, schedule=sch, steps=5, prediction="score")
    assert_close(out, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fn", [S.sample_ddim, S.sample_heun, S.sample_dpmpp_2m, S.sample_unipc,
                                S.sample_dpmpp_2s_ancestral, S.sample_sde, S.sample_ddpm],
                         ids=lambda f: f.__name__)
def test_callback_may_replace_x(fn):
    """issue 14: inpainting/guidance edits; the replacement is what the next step sees."""
    sch = make_schedule("cosine")
    gm = _gaussian()
    x = _start(sch, 6)
    seen_by_model = []

    def model(x_, t_):
        seen_by_model.append(x_[:, 0].copy())
        return gm.score(x_, t_, sch)

    def pin_first_coordinate(info):
        new = info["x"].copy()
        new[:, 0] = 0.25 * info["t_next"]
        return new

    out = fn(model, x, schedule=sch, steps=6, prediction="score", rng=0,
             callback=pin_first_coordinate)
    assert np.all(out[:, 0] == 0.0)  # the last replacement (t_next = 0) is the output
    g = timesteps(6, S.DEFAULT_GRID, sch)
    if fn not in (S.sample_heun, S.sample_dpmpp_2s_ancestral):  # one evaluation per step:
        # the call of step k sees exactly the value pinned after step k - 1
        assert_close(np.array([v[0] for v in seen_by_model[1:]]), 0.25 * g[1:-1], rtol=1e-12,
                     atol=0)
    else:  # two-stage samplers: the first stage of step k starts from the pinned value
        firsts = [v[0] for v in seen_by_model if np.any(np.isclose(v[0], 0.25 * g[1:-1]))]
        assert len(firsts) >= 4
    with pytest.raises(ValueError, match="`callback` returned shape"):
        fn(model, x, schedule=sch, steps=3, prediction="score", rng=0,
           callback=lambda info: info["x"][:, :1])


def test_half_input_runs_the_model_in_half_and_the_state_in_float32():
    sch = make_schedule("cosine")
    gm = _gaussian()
    x64 = _start(sch, 32)
    dtypes = []

    def model(x_, t_):
        dtypes.append(x_.dtype)
        return gm.score(x_.astype(np.float64), t_, sch).astype(x_.dtype)

    out = S.sample_dpmpp_2m(model, x64.astype(np.float16), schedule=sch, steps=10,
                            prediction="score")
    assert out.dtype == np.float16 and set(dtypes) == {np.dtype(np.float16)}
    ref = S.sample_dpmpp_2m(gm.model(sch), x64, schedule=sch, steps=10, prediction="score")
    assert np.max(np.abs(out - ref)) < 0.05
    # model_dtype= on float64 input: the state stays float64
    out = S.sample_dpmpp_2m(model, x64, schedule=sch, steps=10, prediction="score",
                            model_dtype="float32")
    assert out.dtype == np.float64 and dtypes[-1] == np.float32
    assert np.max(np.abs(out - ref)) < 1e-4
    with pytest.raises(TypeError, match="`model_dtype` must be a real floating dtype"):
        S.sample_dpmpp_2m(model, x64, schedule=sch, steps=3, prediction="score",
                          model_dtype="int32")


def test_partial_grid_and_image_shapes():
    # an explicit grid ending above 0 returns x at that time; trailing shapes are free
    data = np.random.default_rng(0).standard_normal((5, 2, 3, 3))
    sch = make_schedule("linear")
    model = EmpiricalScore(data, sch, backend="array_api")
    x = np.random.default_rng(1).standard_normal((4, 2, 3, 3))
    out = S.sample_ddim(model, x, schedule=sch, steps=[1.0, 0.6, 0.3], prediction="score")
    assert out.shape == x.shape


# --------------------------------------------------------------------------------------------
# converters, thresholding
# --------------------------------------------------------------------------------------------

def test_converters_against_exact_mixture():
    gm = _ring()
    sch = make_schedule("linear")
    x = np.random.default_rng(0).standard_normal((50, 2)) * 2
    t = 0.4
    ab = sch.alpha_bar(t)
    score = gm.score(x, t, sch)
    assert_close(S.to_x0(score, x, ab, prediction="score"), gm.denoiser(x, t, sch), rtol=1e-10,
                 atol=1e-10)
    assert_close(S.to_eps(score, x, ab, prediction="score"), gm.eps(x, t, sch), rtol=1e-10,
                 atol=1e-12)
    v = S.to_v(score, x, ab, prediction="score")
    # v = alpha eps - sigma x0 by definition
    assert_close(v, math.sqrt(ab) * gm.eps(x, t, sch) - math.sqrt(1 - ab) * gm.denoiser(x, t, sch),
                 rtol=1e-10, atol=1e-10)
    kinds = ("score", "epsilon", "x0", "v")
    outs = {k: S.convert_prediction(score, x, ab, source="score", target=k) for k in kinds}
    for src in kinds:
        for dst in kinds:
            assert_close(S.convert_prediction(outs[src], x, ab, source=src, target=dst),
                         outs[dst], rtol=1e-9, atol=1e-9)
    # per-sample alpha_bar
    abs_ = np.full(50, ab)
    assert_close(S.to_x0(score, x, abs_, prediction="score"), outs["x0"], rtol=1e-12, atol=1e-12)


def test_flow_converters():
    gm = _ring()
    x = np.random.default_rng(0).standard_normal((20, 2))
    t = 0.35
    v = gm.velocity(x, t)
    # x_t = (1 - t) x0 + t x1 holds for the posterior means
    assert_close((1 - t) * S.flow_to_noise(v, x, t) + t * S.flow_to_data(v, x, t), x,
                 rtol=1e-12, atol=1e-12)
    # the flow score equals the score of the path's marginal (a mixture with a = t, b = 1 - t)
    resp, cinv, _, _ = gm._path(x, t, 1 - t)
    assert_close(S.flow_score(v, x, t), -(resp[:, :, None] * cinv).sum(0), rtol=1e-9, atol=1e-9)


def test_dynamic_threshold_against_numpy_quantile():
    x0 = np.random.default_rng(0).standard_normal((6, 3, 5, 5)) * np.array([0.3, 1, 2, 3, 5, 9])[
        :, None, None, None]
    out = S.dynamic_threshold(x0, 0.995)
    s = np.maximum(np.quantile(np.abs(x0).reshape(6, -1), 0.995, axis=1), 1.0)
    ref = np.clip(x0, -s[:, None, None, None], s[:, None, None, None]) / s[:, None, None, None]
    assert_close(out, ref, rtol=1e-12, atol=1e-15)
    sch = make_schedule("linear")
    gm = _ring(radius=6.0)
    x = np.random.default_rng(1).standard_normal((64, 2))
    res = S.sample_ddim(gm.model(sch), x, schedule=sch, steps=10, dynamic_thresholding=True,
                        prediction="score")
    assert np.abs(res).max() <= 1.0 + 1e-12


# --------------------------------------------------------------------------------------------
# Gaussian mixture and empirical score oracles
# --------------------------------------------------------------------------------------------

def test_mixture_score_against_finite_differences_and_moments():
    gm = GaussianMixture(np.array([[0.0, 0.0], [3.0, 1.0]]),
                         np.array([[[1.0, 0.3], [0.3, 0.5]], [[0.2, 0.0], [0.0, 0.2]]]),
                         np.array([0.3, 0.7]))
    sch = make_schedule("cosine")
    x = np.random.default_rng(0).standard_normal((9, 2)) * 2
    for t in (0.1, 0.5, 0.9):
        noised = gm.noised(sch.alpha_bar(t))
        h = 1e-6
        fd = np.stack([(noised.log_prob(x + h * e) - noised.log_prob(x - h * e)) / (2 * h)
                       for e in np.eye(2)], 1)
        assert_close(gm.score(x, t, sch), fd, rtol=1e-6, atol=1e-7)
    samples = gm.sample(100000, rng=2)
    assert_close(samples.mean(0), gm.mean(), rtol=0, atol=0.02)
    assert_close(np.cov(samples.T), gm.covariance(), rtol=0.03, atol=0.02)


def test_mixture_sampling_same_stream_in_every_namespace(xp):
    gm_np = _ring()
    gm_xp = GaussianMixture(xp.asarray(gm_np.means), xp.asarray(np.full(8, 0.09)))
    a = gm_np.sample(50, rng=8)
    b = gm_xp.sample(50, rng=Key(8))
    assert_close(b, a, rtol=1e-12, atol=1e-12, check_namespace=False, check_dtype=False)
    x = a[:5] * 0.7
    assert_close(gm_xp.score(xp.asarray(x), 0.3, make_schedule("linear")),
                 gm_np.score(x, 0.3, make_schedule("linear")), rtol=1e-10, atol=1e-12,
                 check_namespace=False, check_dtype=False)


def _empirical_oracle(data, x, ab):
    a = math.sqrt(ab)
    d2 = ((x[:, None, :] - a * data[None]) ** 2).sum(-1)
    logw = -d2 / (2 * (1 - ab))
    w = np.exp(logw - logw.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    post = w @ data
    return post, (a * post - x) / (1 - ab)


def test_empirical_score_against_dense_oracle():
    rng = np.random.default_rng(0)
    data = rng.standard_normal((40, 2, 2, 3))
    x = rng.standard_normal((7, 2, 2, 3))
    sch = make_schedule("linear")
    model = EmpiricalScore(data, sch)
    for t in (0.05, 0.4, 1.0):
        post, score = _empirical_oracle(data.reshape(40, -1), x.reshape(7, -1), sch.alpha_bar(t))
        assert_close(model(x, t), score.reshape(x.shape), rtol=1e-9, atol=1e-9)
        assert_close(model.denoise(x, t), post.reshape(x.shape), rtol=1e-9, atol=1e-9)
    t_vec = np.array([0.1, 0.5, 0.1, 0.9, 0.5, 0.3, 0.1])
    out = model(x, t_vec)
    for i, t in enumerate(t_vec):
        _, score = _empirical_oracle(data.reshape(40, -1), x[i:i + 1].reshape(1, -1),
                                     sch.alpha_bar(t))
        assert_close(out[i], score.reshape(x.shape[1:]), rtol=1e-9, atol=1e-9)


def test_empirical_score_namespaces(xp):
    rng = np.random.default_rng(3)
    data, x = rng.standard_normal((30, 3)), rng.standard_normal((5, 3))
    sch = make_schedule("cosine")
    _, score = _empirical_oracle(data, x, sch.alpha_bar(0.6))
    for dtype, tol in (("float64", 1e-9), ("float32", 1e-4)):
        model = EmpiricalScore(xp.asarray(data, dtype=dtype), sch)
        out = model(xp.asarray(x, dtype=dtype), 0.6)
        assert out.dtype == xp.asarray(x, dtype=dtype).dtype
        assert_close(out, score, rtol=tol, atol=tol, check_namespace=False, check_dtype=False)


def test_empirical_score_sampler_reproduces_training_points():
    data = np.random.default_rng(0).uniform(-2, 2, (6, 2))
    sch = make_schedule("linear")
    x = np.random.default_rng(1).standard_normal((200, 2))
    out = S.sample_dpmpp_2m(EmpiricalScore(data, sch, backend="array_api"), x, schedule=sch,
                            steps=40, prediction="score")
    nearest = np.sqrt(((out[:, None] - data[None]) ** 2).sum(-1)).min(1)
    assert nearest.max() < 1e-2


# --------------------------------------------------------------------------------------------
# bad inputs
# --------------------------------------------------------------------------------------------

def test_bad_inputs():
    sch = make_schedule("linear")
    gm = _gaussian()
    x = _start(sch, 4)
    model = gm.model(sch)
    with pytest.raises(ValueError, match="`prediction` must be one of"):
        S.sample_ddim(model, x, schedule=sch, steps=5, prediction="noise")
    with pytest.raises(ValueError, match="flow-matching velocity models"):
        S.sample_heun(model, x, schedule=sch, steps=5, prediction="velocity")
    with pytest.raises(ValueError, match="`prediction` must be one of"):
        S.sample_flow_heun(model, x, steps=5, prediction="score")
    with pytest.raises(ValueError, match="`steps` must be >= 1"):
        S.sample_euler(model, x, schedule=sch, steps=0, prediction="score")
    with pytest.raises(TypeError, match="`steps` must be an integer"):
        S.sample_euler(model, x, schedule=sch, steps=2.5, prediction="score")
    with pytest.raises(ValueError, match="`steps` must be strictly decreasing"):
        S.sample_euler(model, x, schedule=sch, steps=[1.0, 0.2, 0.5, 0.0], prediction="score")
    with pytest.raises(ValueError, match="`grid` must be strictly decreasing"):
        S.sample_euler(model, x, schedule=sch, grid=[1.0, 0.2, 0.5, 0.0], prediction="score")
    with pytest.raises(ValueError, match="disagrees with the explicit `grid`"):
        S.sample_euler(model, x, schedule=sch, steps=5, grid=[1.0, 0.5, 0.0],
                       prediction="score")
    with pytest.raises(TypeError, match="`steps` is required"):
        S.sample_euler(model, x, schedule=sch, prediction="score")
    with pytest.raises(ValueError, match="grid='sigmas' needs the levels"):
        S.sample_euler(model, x, schedule=sch, steps=4, grid="sigmas", prediction="score")
    with pytest.raises(ValueError, match="`steps` must be strictly increasing \\(flow time"):
        S.sample_flow_heun(lambda a, b: a, x, steps=[0.0, 0.5, 0.4, 1.0], prediction="velocity")
    with pytest.raises(ValueError, match="`steps` must be >= 1"):
        S.sample_flow_ddim(lambda a, b: a, x, steps=0, prediction="velocity")
    with pytest.raises(ValueError, match="`shift` must be positive"):
        S.sample_flow_ddim(lambda a, b: a, x, steps=3, shift=0.0, prediction="velocity")
    with pytest.raises(TypeError, match="`schedule` must be a NoiseSchedule"):
        S.sample_ddpm(model, x, schedule="linear", steps=5, prediction="score")
    with pytest.raises(ValueError, match="`grid` must be one of"):
        S.sample_ddpm(model, x, schedule=sch, steps=5, grid="exponential", prediction="score")
    # flow samplers accept (and ignore) a schedule for a uniform signature
    np.testing.assert_array_equal(
        S.sample_flow_heun(lambda a, b: -a, x, schedule=sch, steps=3, prediction="velocity"),
        S.sample_flow_heun(lambda a, b: -a, x, steps=3, prediction="velocity"))
    with pytest.raises(TypeError, match="`model` must be callable"):
        S.sample_ddim(None, x, schedule=sch, steps=5, prediction="score")
    with pytest.raises(ValueError, match="`model` returned shape"):
        S.sample_ddim(lambda a, t: a[:, :1], x, schedule=sch, steps=5, prediction="score")
    with pytest.raises(ValueError, match="`eta` must be non-negative"):
        S.sample_ddim(model, x, schedule=sch, steps=5, eta=-0.1, prediction="score")
    with pytest.raises(ValueError, match="`corrector_steps` must be >= 0"):
        S.sample_sde(model, x, schedule=sch, steps=5, corrector_steps=-1, prediction="score")
    with pytest.raises(TypeError, match="`corrector_steps` must be an integer"):
        S.sample_sde(model, x, schedule=sch, steps=5, corrector_steps=True, prediction="score")
    with pytest.raises(ValueError, match="`s_tmax` must be >= 2.0"):
        S.sample_heun(model, x, schedule=sch, steps=5, s_churn=1.0, s_tmin=2.0, s_tmax=1.0,
                      prediction="score")
    with pytest.raises(ValueError, match="`snr` must be positive"):
        S.sample_sde(model, x, schedule=sch, steps=5, snr=0, prediction="score")
    with pytest.raises(ValueError, match="`n_noise_free` must be >= 0"):
        S.sample_flow_sde(lambda a, b: a, x, steps=5, n_noise_free=-2, prediction="velocity")
    with pytest.raises(ValueError, match="`order` must be <= 3"):
        S.sample_unipc(model, x, schedule=sch, steps=5, order=4, prediction="score")
    with pytest.raises(ValueError, match="`x` .*non-finite"):
        S.sample_ddim(model, np.full((2, 2), np.nan), schedule=sch, steps=5, prediction="score")
    with pytest.raises(ValueError, match="`x` must have a non-empty batch axis"):
        S.sample_ddim(model, np.zeros((0, 2)), schedule=sch, steps=5, prediction="score")
    with pytest.raises(ValueError, match="must end above t = 0"):
        S.ddim_invert(model, x, schedule=sch, steps=[1.0, 0.5, 0.0], prediction="score")
    with pytest.raises(ValueError, match="`dynamic_thresholding` must be <= 1"):
        S.sample_ddim(model, x, schedule=sch, steps=5, dynamic_thresholding=1.5,
                      prediction="score")
    with pytest.raises(ValueError, match="`source` must be one of"):
        S.convert_prediction(x, x, 0.5, source="eps", target="x0")
    with pytest.raises(ValueError, match="`alpha_bar` must be <= 1"):
        S.to_x0(x, x, 1.5, prediction="score")
    with pytest.raises(ValueError, match="`output` and `x` must have the same shape"):
        S.to_x0(x[:, :1], x, 0.5, prediction="score")
    with pytest.raises(ValueError, match="`percentile` must be >"):
        S.dynamic_threshold(x, 0.0)
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="different namespaces"):
        S.to_x0(torch.tensor(x), x, 0.5, prediction="score")


ALL_VP = [S.sample_ddpm, S.sample_ddim, S.sample_euler, S.sample_heun, S.sample_dpmpp_2m,
          S.sample_sde, S.sample_unipc, S.sample_dpmpp_3m_sde, S.sample_euler_ancestral,
          S.sample_dpmpp_2s_ancestral]
ALL_FLOW = [S.sample_flow_heun, S.sample_flow_sde, S.sample_flow_ddim]


@pytest.mark.parametrize("fn", ALL_VP + ALL_FLOW + [S.ddim_invert],
                         ids=lambda f: f.__name__)
def test_prediction_is_required_and_names_the_choices(fn):
    """issue 14: no default (an epsilon UNet read as a score gives wrong samples silently)."""
    import inspect
    assert inspect.signature(fn).parameters["prediction"].default is inspect.Parameter.empty
    sch = make_schedule("linear")
    x = _start(sch, 4)
    kw = {} if fn in ALL_FLOW else {"schedule": sch}
    with pytest.raises(TypeError, match="needs `prediction=`.*'velocity'" if fn in ALL_FLOW
                       else "needs `prediction=`.*'score', 'epsilon', 'x0', 'v'"):
        fn(lambda a, t: a, x, steps=3, rng=0, **kw)


@pytest.mark.parametrize("fn", ALL_VP, ids=lambda f: f.__name__)
def test_model_output_checked_every_call(fn):
    """issue 13: non-finite output -> ValueError naming model, step and t; another library or
    complex -> TypeError; never a silent NaN."""
    sch = make_schedule("cosine")
    gm = _gaussian()
    x = _start(sch, 4)
    good = gm.model(sch)
    calls = []

    def nan_at_third_call(a, t):
        calls.append(t)
        out = good(a, t)
        return out * np.nan if len(calls) == 3 else out

    with pytest.raises(ValueError, match=r"`model` \(nan_at_third_call\) returned non-finite "
                                         r"values .*at step \d+ \(t = 0\.\d+"):
        fn(nan_at_third_call, x, schedule=sch, steps=6, prediction="score", rng=0)
    with pytest.raises(TypeError, match="returned complex values"):
        fn(lambda a, t: good(a, t) + 0j, x, schedule=sch, steps=3, prediction="score", rng=0)
    with pytest.raises(TypeError, match="must return an array like its input; got list"):
        fn(lambda a, t: good(a, t).tolist(), x, schedule=sch, steps=3, prediction="score",
           rng=0)
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="returned a torch array for a numpy input"):
        fn(lambda a, t: torch.tensor(good(a, t)), x, schedule=sch, steps=3,
           prediction="score", rng=0)
    with pytest.raises(TypeError, match="returned a numpy array for a torch input"):
        fn(lambda a, t: good(a.numpy(), t), torch.tensor(x), schedule=sch, steps=3,
           prediction="score", rng=0)


def test_non_finite_output_on_torch_is_caught_without_per_step_sync():
    torch = pytest.importorskip("torch")
    sch = make_schedule("linear")
    x = torch.tensor(_start(sch, 4))
    with pytest.raises(ValueError, match=r"non-finite values .*at step 4 \(t = "):
        S.sample_dpmpp_2m(lambda a, t: a * (float("inf") if t < 0.05 else 1.0), x,
                          schedule=sch, steps=[1.0, 0.5, 0.2, 0.1, 0.04, 0.0],
                          prediction="epsilon")


def test_extreme_karras_rho_rejected_and_flat_grids_explained():
    """issue 13: make_schedule("karras", rho=1e6) then sampling gave ZeroDivisionError."""
    with pytest.raises(ValueError, match="`rho` must be <= 1000"):
        make_schedule("karras", rho=1e6)
    sch = make_schedule("karras", rho=900.0)  # alpha_bar = 1 in float64 for t <= ~0.97
    x = _start(make_schedule("linear"), 4)
    with pytest.raises(ValueError, match="no noise .* before its last time"):
        S.sample_dpmpp_2m(lambda a, t: a, x, schedule=sch, steps=5, grid="linear",
                          prediction="epsilon")
    # the default (log-SNR) grid stays inside the noisy range and samples
    out = S.sample_dpmpp_2m(lambda a, t: 0.0 * a, x, schedule=sch, steps=5,
                            prediction="epsilon")
    assert np.all(np.isfinite(out))


def test_bad_inputs_oracles():
    sch = make_schedule("linear")
    with pytest.raises(ValueError, match="`means` must have shape"):
        GaussianMixture(np.zeros(3))
    with pytest.raises(ValueError, match="`covariances` must have shape"):
        GaussianMixture(np.zeros((2, 3)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="`weights` must sum to 1"):
        GaussianMixture(np.zeros((2, 3)), weights=np.array([0.5, 0.6]))
    with pytest.raises(ValueError, match="positive semi-definite"):
        GaussianMixture(np.zeros((1, 2)), np.array([[[1.0, 2.0], [2.0, 1.0]]]))
    with pytest.raises(ValueError, match="`x` must have shape"):
        _gaussian().score(np.zeros((3, 5)), 0.5, sch)
    model = EmpiricalScore(np.zeros((3, 2)), sch)
    with pytest.raises(ValueError, match="undefined at alpha_bar = 1"):
        model(np.zeros((1, 2)), 0.0)
    with pytest.raises(ValueError, match="`x` must have shape"):
        model(np.zeros((1, 3)), 0.5)
    with pytest.raises(ValueError, match="`data` contains .*non-finite"):
        EmpiricalScore(np.array([[np.inf, 0.0]]), sch)
    with pytest.raises(TypeError, match="`schedule` must be a NoiseSchedule"):
        EmpiricalScore(np.zeros((3, 2)), "linear")
