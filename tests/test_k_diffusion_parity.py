"""arraygen's samplers against the installed k-diffusion's own ``k_diffusion/sampling.py``
(issue 14 items 4 and 8): same sigma grid, same denoiser, same noise -> same sample to ~1e-12.

The denoiser is the closed form of Gaussian data N(mu, diag v) in k-diffusion's variance-
exploding units, ``D(x, s) = mu + v (x - mu) / (v + s^2)``, torch float64; arraygen gets the same
function through its VP time convention (``x_vp = alpha x_ve``, ``s = schedule.ve_sigma(t)``,
``prediction="x0"``). Grids come from k-diffusion's own ``get_sigmas_*``; each level is mapped
to arraygen's t by inverting the schedule and k-diffusion is fed ``schedule.ve_sigma(t)`` of
those t, so both walk exactly the same levels. Stochastic samplers: k-diffusion's
``noise_sampler(sigma, sigma_next)`` returns arraygen's draw for that step
(``normal(Key(seed).advance(i))``, what ``rng=seed`` uses), so the noise is the same too.

Deliberate differences are tested as properties: Heun's entry step from a level above
``SIGMA_MAX`` (Euler, see :func:`arraygen.samplers.sample_heun`), and the Brownian-tree noise of
k-diffusion's SDE samplers, which arraygen replaces by independent increments (the same law).
Skips cleanly when k-diffusion (or torchsde / torchdiffeq, which its sampling.py imports) is
absent (tests/_kdiffusion.py loads sampling.py without the package's heavy ``__init__``).
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from _kdiffusion import load_sampling  # noqa: E402

from arraygen import samplers as S  # noqa: E402
from arraygen.random import Key, normal  # noqa: E402
from arraygen.schedules import SIGMA_MAX, make_schedule, timesteps  # noqa: E402

KD, _WHY = load_sampling()
if KD is None:
    pytest.skip(_WHY, allow_module_level=True)

TOL = 1e-12
SHAPE = (8, 2, 3, 3)  # batch 8, image-like trailing axes (k-diffusion's append_dims)
_g = torch.Generator().manual_seed(0)
MU = torch.empty(SHAPE[1:], dtype=torch.float64).uniform_(-1.5, 1.5, generator=_g)
VAR = torch.exp(torch.empty(SHAPE[1:], dtype=torch.float64).uniform_(math.log(0.01),
                                                                      math.log(2.0),
                                                                      generator=_g))
Z = torch.randn(SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def _kd_denoiser(x, sigma):
    """k-diffusion's model(x, sigma * s_in): the exact E[x0 | x0 + sigma z = x]."""
    s2 = KD.utils.append_dims(sigma, x.ndim) ** 2
    return MU + VAR * (x - MU) / (VAR + s2)


def _arraygen_model(sch):
    def model(x, t):  # VP x at time t -> the same denoised estimate
        s = float(sch.ve_sigma(t))
        return MU + VAR * (x / math.sqrt(sch.alpha_bar(t)) - MU) / (VAR + s * s)
    return model


# k-diffusion grid makers (n = 7 steps): Karras (EDM and SD-like ranges), exponential,
# polyexponential, continuous VP, and a Karras grid ending above 0 (partial denoising)
GRIDS = {
    "karras": lambda n: KD.get_sigmas_karras(n, 0.002, 80.0),
    "karras_sd": lambda n: KD.get_sigmas_karras(n, 0.0292, 14.61),
    "exponential": lambda n: KD.get_sigmas_exponential(n, 0.01, 60.0),
    "polyexponential": lambda n: KD.get_sigmas_polyexponential(n, 0.005, 40.0, rho=2.0),
    "vp": lambda n: KD.get_sigmas_vp(n)[1:],  # its top (152) is above the cosine fit's 80 cap
    "karras_partial": lambda n: KD.get_sigmas_karras(n + 2, 0.002, 80.0)[:-3],
}


def _common_grid(sch, sigmas):
    """arraygen's t for k-diffusion's levels, and the levels of those t (what both then use)."""
    s = sigmas.double().numpy()
    t = np.zeros_like(s)
    pos = s > 0
    t[pos] = sch.t_from_log_alpha_bar(-np.log1p(s[pos] ** 2))
    sig = np.where(pos, sch.ve_sigma(t), 0.0)
    return t, torch.tensor(sig)


def _noise_sampler(sig, seed):
    """k-diffusion's noise_sampler(sigma, sigma_next) drawing arraygen's step-i normal."""
    def sample(sigma, sigma_next):
        i = int(torch.nonzero(sig == sigma)[0, 0])
        return normal(Key(seed).advance(i), SHAPE, dtype=torch.float64, like=Z)
    return sample


def _run_both(sch_kind, grid_kind, kd_fn, ours_fn, kd_kw=None, ours_kw=None, n=7, seed=None):
    sch = make_schedule(sch_kind)
    t, sig = _common_grid(sch, GRIDS[grid_kind](n))
    a0, a_end = math.sqrt(sch.alpha_bar(t[0])), math.sqrt(sch.alpha_bar(t[-1]))
    kd_kw = dict(kd_kw or {})
    ours_kw = dict(ours_kw or {})
    if seed is not None:
        kd_kw["noise_sampler"] = _noise_sampler(sig, seed)
        ours_kw["rng"] = seed
    ref = kd_fn(_kd_denoiser, Z / a0, sig, disable=True, **kd_kw) * a_end  # back to VP
    ours = ours_fn(_arraygen_model(sch), Z, schedule=sch, grid=t, prediction="x0", **ours_kw)
    return ours, ref, sch, t, sig


def _assert_same(ours, ref):
    assert ours.dtype == torch.float64 and ours.shape == ref.shape
    err = float((ours - ref).abs().max() / ref.abs().max())
    assert err < TOL, err


CASES = [
    ("euler", "sample_euler", "sample_euler", {}, {}, False),
    ("ddim", "sample_euler", "sample_ddim", {}, {}, False),
    ("dpmpp_2m", "sample_dpmpp_2m", "sample_dpmpp_2m", {}, {}, False),
    ("dpmpp_2m_sde", "sample_dpmpp_2m_sde", "sample_dpmpp_2m", {}, {"sde": True}, True),
    ("dpmpp_2m_sde_eta", "sample_dpmpp_2m_sde", "sample_dpmpp_2m", {"eta": 0.4},
     {"sde": True, "eta": 0.4}, True),
    ("dpmpp_3m_sde", "sample_dpmpp_3m_sde", "sample_dpmpp_3m_sde", {}, {}, True),
    ("dpmpp_3m_sde_eta_snoise", "sample_dpmpp_3m_sde", "sample_dpmpp_3m_sde",
     {"eta": 0.5, "s_noise": 0.9}, {"eta": 0.5, "s_noise": 0.9}, True),
    ("dpmpp_3m_ode", "sample_dpmpp_3m_sde", "sample_dpmpp_3m_sde", {"eta": 0.0},
     {"eta": 0.0}, True),
    ("euler_ancestral", "sample_euler_ancestral", "sample_euler_ancestral", {}, {}, True),
    ("euler_ancestral_eta_snoise", "sample_euler_ancestral", "sample_euler_ancestral",
     {"eta": 0.6, "s_noise": 1.1}, {"eta": 0.6, "s_noise": 1.1}, True),
    ("euler_ancestral_eta0", "sample_euler_ancestral", "sample_euler_ancestral",
     {"eta": 0.0}, {"eta": 0.0}, True),
    ("dpmpp_2s_ancestral", "sample_dpmpp_2s_ancestral", "sample_dpmpp_2s_ancestral", {}, {},
     True),
    ("dpmpp_2s_ancestral_eta_snoise", "sample_dpmpp_2s_ancestral",
     "sample_dpmpp_2s_ancestral", {"eta": 0.5, "s_noise": 0.8},
     {"eta": 0.5, "s_noise": 0.8}, True),
    ("dpmpp_2s_eta0", "sample_dpmpp_2s_ancestral", "sample_dpmpp_2s_ancestral",
     {"eta": 0.0}, {"eta": 0.0}, True),
]


@pytest.mark.parametrize("sch_kind,grid_kind", [
    ("cosine", "karras"), ("linear", "karras_sd"), ("cosine", "exponential"),
    ("linear", "polyexponential"), ("linear", "vp"), ("cosine", "karras_partial"),
    ("karras", "karras"),
])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_sampler_reproduces_k_diffusion(case, sch_kind, grid_kind):
    _, kd_name, ours_name, kd_kw, ours_kw, stochastic = case
    ours, ref, *_ = _run_both(sch_kind, grid_kind, getattr(KD, kd_name), getattr(S, ours_name),
                              kd_kw, ours_kw, seed=11 if stochastic else None)
    _assert_same(ours, ref)


def test_stochastic_parity_is_not_vacuous():
    """Another seed (or k-diffusion's own noise) gives a visibly different sample."""
    _, ref, *_ = _run_both("cosine", "karras", KD.sample_dpmpp_3m_sde,
                              S.sample_dpmpp_3m_sde, seed=11)
    other = S.sample_dpmpp_3m_sde(_arraygen_model(make_schedule("cosine")), Z,
                                  schedule=make_schedule("cosine"),
                                  grid=_common_grid(make_schedule("cosine"),
                                                    GRIDS["karras"](7))[0],
                                  prediction="x0", rng=12)
    assert float((other - ref).abs().max()) > 1e-2


def _kd_heun_with_euler_entry(**kw):
    """k-diffusion's Heun, except an Euler first step from a level above SIGMA_MAX (what
    arraygen's sample_heun documents and does)."""
    def run(model, x, sigmas, disable=True):
        if float(sigmas[0]) > SIGMA_MAX:
            x = KD.sample_euler(model, x, sigmas[:2], disable=True)
            sigmas = sigmas[1:]
        return KD.sample_heun(model, x, sigmas, disable=True, **kw)
    return run


@pytest.mark.parametrize("sch_kind,grid_kind", [
    ("cosine", "karras"), ("linear", "karras_sd"), ("linear", "vp"),
    ("cosine", "karras_partial"), ("karras", "karras"),
])
def test_heun_reproduces_k_diffusion(sch_kind, grid_kind):
    ours, ref, *_ = _run_both(sch_kind, grid_kind, _kd_heun_with_euler_entry(), S.sample_heun)
    _assert_same(ours, ref)


def test_heun_churn_reproduces_k_diffusion(monkeypatch):
    """EDM's stochastic Heun (s_churn): k-diffusion draws torch.randn_like once per step; it is
    routed to arraygen's step-i draw."""
    counter = itertools.count()

    def randn_like(x, **kw):
        return normal(Key(4).advance(next(counter)), tuple(x.shape), dtype=x.dtype, like=x)

    monkeypatch.setattr(KD.torch, "randn_like", randn_like)
    kw = {"s_churn": 2.0, "s_tmin": 0.05, "s_tmax": 10.0, "s_noise": 1.007}
    sch = make_schedule("cosine")
    t, sig = _common_grid(sch, GRIDS["karras_sd"](8))
    ref = KD.sample_heun(_kd_denoiser, Z / math.sqrt(sch.alpha_bar(t[0])), sig, disable=True,
                         **kw)
    ours = S.sample_heun(_arraygen_model(sch), Z, schedule=sch, grid=t, prediction="x0",
                         rng=4, **kw)
    _assert_same(ours, ref)
    plain = S.sample_heun(_arraygen_model(sch), Z, schedule=sch, grid=t, prediction="x0")
    assert float((plain - ref).abs().max()) > 1e-2  # the churn was applied


def _exact_endpoint(sch, t0, x_vp):
    """The exact probability-flow map from t0 to t = 0 of the Gaussian data (VE form)."""
    s0 = float(sch.ve_sigma(t0))
    return MU + torch.sqrt(VAR / (VAR + s0 * s0)) * (x_vp / math.sqrt(sch.alpha_bar(t0)) - MU)


@pytest.mark.parametrize("kind,n,gain", [("karras", 10, 1.0), ("karras", 20, 1.0),
                                         ("log_snr", 5, 10.0)])
def test_heun_euler_entry_from_above_sigma_max_is_deliberate(kind, n, gain):
    """From t = 1 on cosine (VE level 1e4) arraygen's Heun takes an Euler entry step: that is
    k-diffusion's Euler step then its Heun, one evaluation fewer than k-diffusion's plain Heun
    on the same grid, and no less accurate against the exact probability-flow map; on a coarse
    grid (1e4 -> 5.7, log-SNR, 5 steps) the plain trapezoid overshoots (error 33 vs 2.0)."""
    sch = make_schedule("cosine")
    t = timesteps(n, kind, sch)  # t = 1 (level 1e4), then levels capped at 80
    t, sig = _common_grid(sch, torch.tensor(np.append(sch.ve_sigma(t[:-1]), 0.0)))
    assert float(sig[0]) > 1e3
    exact = _exact_endpoint(sch, t[0], Z)
    calls = []
    model = _arraygen_model(sch)
    ours = S.sample_heun(lambda x, tt: calls.append(tt) or model(x, tt), Z, schedule=sch,
                         grid=t, prediction="x0")
    x_ve = Z / math.sqrt(sch.alpha_bar(t[0]))
    entry = _kd_heun_with_euler_entry()(_kd_denoiser, x_ve, sig)
    kd_calls = []
    plain = KD.sample_heun(lambda x, s: kd_calls.append(s) or _kd_denoiser(x, s), x_ve, sig,
                           disable=True)
    _assert_same(ours, entry)
    assert len(calls) == 2 * n - 2 and len(kd_calls) == 2 * n - 1

    def err(out):
        return float(((out - exact) ** 2 / VAR).mean().sqrt())

    assert gain * err(ours) <= err(plain), (err(ours), err(plain))
    assert float((ours - plain).abs().max()) > 1e-3  # the entry step does differ


@pytest.mark.parametrize("kd_name,ours_name,ours_kw", [
    ("sample_dpmpp_2m_sde", "sample_dpmpp_2m", {"sde": True}),
    ("sample_dpmpp_3m_sde", "sample_dpmpp_3m_sde", {}),
])
def test_sde_law_matches_k_diffusion_brownian_tree(kd_name, ours_name, ours_kw):
    """k-diffusion's default noise (a torchsde Brownian tree) and arraygen's independent
    increments give the same law on the same grid: the per-coordinate means and variances of
    the two samplers agree (at 12 steps both are still far from the target N(mu, v), the 3M SDE
    by a factor ~3.5 in variance, so the agreement is the solvers', not the target's)."""
    pytest.importorskip("torchsde")
    sch = make_schedule("cosine")
    t, sig = _common_grid(sch, KD.get_sigmas_karras(12, 0.002, 80.0))
    b = 4000
    z = torch.randn((b, 4), dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    mu, var = MU.reshape(-1)[:4], VAR.reshape(-1)[:4]

    def kd_model(x, sigma):
        return mu + var * (x - mu) / (var + KD.utils.append_dims(sigma, x.ndim) ** 2)

    def ours_model(x, tt):
        s = float(sch.ve_sigma(tt))
        return mu + var * (x / math.sqrt(sch.alpha_bar(tt)) - mu) / (var + s * s)

    torch.manual_seed(0)  # the Brownian tree's entropy
    with warnings.catch_warnings():  # torchsde: "Should have ta>=t0" (float rounding)
        warnings.simplefilter("ignore", UserWarning)
        ref = getattr(KD, kd_name)(kd_model, z / math.sqrt(sch.alpha_bar(t[0])), sig,
                                   disable=True)
    ours = getattr(S, ours_name)(ours_model, z, schedule=sch, grid=t, prediction="x0", rng=3,
                                 **ours_kw)
    v_ref, v_ours = ref.var(dim=0), ours.var(dim=0)
    # sd of log(var ratio) of two 4000-sample variances: sqrt(2 * 2 / 4000) = 3.2%; 4 sd
    assert torch.all((v_ours / v_ref).log().abs() < 0.13), (v_ours / var, v_ref / var)
    assert torch.all((ours.mean(dim=0) - ref.mean(dim=0)).abs() / v_ref.sqrt() < 0.09)
    assert float((ours - ref).abs().max()) > 0.1  # different draws, not one path


@pytest.mark.parametrize("n", [2, 7, 20])
def test_grids_are_k_diffusions(n):
    """On the karras schedule (VE level 80 at t = 1) arraygen's "karras" grid is k-diffusion's
    get_sigmas_karras(n, 0.002, 80) and its "log_snr" grid (equal steps in log sigma) is
    get_sigmas_exponential(n, 0.002, 80), each followed by 0 (k-diffusion builds them in
    float32)."""
    sch = make_schedule("karras")
    for kind, ref in (("karras", KD.get_sigmas_karras(n, 0.002, 80.0)),
                      ("log_snr", KD.get_sigmas_exponential(n, 0.002, 80.0))):
        ours = np.asarray(sch.ve_sigma(timesteps(n, kind, sch)))
        ref = ref.double().numpy()
        assert ours.shape == ref.shape and ours[-1] == ref[-1] == 0.0
        np.testing.assert_allclose(ours[:-1], ref[:-1], rtol=2e-6)
    # a cosine schedule's t = 1 (level 1e4) stays the entry point before the capped ramp
    cos = make_schedule("cosine")
    g = np.asarray(cos.ve_sigma(timesteps(n, "log_snr", cos)))
    ref = KD.get_sigmas_exponential(n, 0.002, 80.0).double().numpy()
    assert g[0] > 1e3
    np.testing.assert_allclose(g[1:-1], ref[1:-1], rtol=2e-6)
