"""FastSB-OT solver: presets against DPM++(2M) and UniPC on the exact Gaussian map, the
multistep core against the samplers module on identical grids, every preset on NumPy and torch
with exact Gaussian-mixture scores, the OT bridge (Sinkhorn and sliced) against mode weights,
self_check, profile, cache, namespaces and bad input.

Pre-registered bounds (fixed seeds, set before looking at the solver's outputs): MMD^2
(Gaussian kernel, bandwidth 0.5, unbiased) between 4000 "balanced" samples and 4000 exact
samples of the 8-component ring <= 6e-4 (two exact sample sets give |MMD^2| ~ 1e-4; a flipped
score gives > 0.1). On the 16-D Gaussian (exact map, 500 samples), every preset at its own
budget has a path error at most DPM++(2M)'s and UniPC's at the same evaluations.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from arraygen import samplers as S
from arraygen.fastsbot import FastSBOTConfig, FastSBOTSolver
from arraygen.cache import PersistentKernelCache
from arraygen.datasets import GaussianMixture
from arraygen.fastsbot import PRESETS
from arraygen.metrics import mmd
from arraygen.random import Key
from arraygen.schedules import make_schedule

ANG = np.arange(8) * 2 * np.pi / 8
MEANS = np.stack([2.0 * np.cos(ANG), 2.0 * np.sin(ANG)], axis=1)
VAR = np.full(8, 0.3 ** 2)
SCH = make_schedule("linear")


def _ring(ns=None, weights=None):
    if ns is None:
        return GaussianMixture(MEANS, VAR, weights)
    w = None if weights is None else ns.asarray(weights)
    return GaussianMixture(ns.asarray(MEANS), ns.asarray(VAR), w)


def _namespaces():
    import array_api_compat.numpy as npx

    out = [pytest.param(("numpy", npx, None), id="numpy")]
    try:
        import array_api_compat.torch as tx
        import torch

        out.append(pytest.param(("torch", tx, torch.device("cpu")), id="torch:cpu"))
    except ImportError:
        pass
    return out


def _mode_fractions(x):
    d = ((np.asarray(x)[:, None, :] - MEANS[None]) ** 2).sum(-1)
    return np.bincount(d.argmin(1), minlength=8) / x.shape[0]


def _torch_ns():
    class _NS:
        @staticmethod
        def asarray(a):
            import torch

            return torch.asarray(a)
    return _NS


def _to_numpy(x):
    from arraygen.testing import to_numpy

    return to_numpy(x)


def _quiet(fn, *args, **kw):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


# -- the 16-D Gaussian with its exact probability-flow map ------------------------------------

def _gauss(kind="cosine"):
    rng = np.random.default_rng(0)
    mu = rng.uniform(-1.5, 1.5, 16)
    v = np.exp(rng.uniform(math.log(0.01), math.log(2.0), 16))
    sch = make_schedule(kind)
    ab1 = float(sch.alpha_bar(1.0))

    def eps(x, t):
        ab = float(sch.alpha_bar(t))
        return math.sqrt(1 - ab) * (x - math.sqrt(ab) * mu) / (ab * v + 1 - ab)

    def err(x, x_t):
        exact = mu + np.sqrt(v / (ab1 * v + 1 - ab1)) * (x_t - math.sqrt(ab1) * mu)
        return float(np.sqrt(np.mean((x - exact) ** 2 / v)))

    return sch, eps, err


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_each_preset_beats_dpmpp_2m_and_unipc_at_its_budget(kind):
    if not hasattr(S, "sample_unipc"):
        pytest.skip("arraygen.samplers.sample_unipc not available")
    sch, eps, err = _gauss(kind)
    x_t = np.random.default_rng(1).standard_normal((500, 16))
    for quality, p in PRESETS.items():
        n = p["steps"]
        mine = err(FastSBOTSolver(eps, sch, FastSBOTConfig(quality=quality),
                                  prediction="epsilon").sample(noise=x_t), x_t)
        d2m = err(S.sample_dpmpp_2m(eps, x_t, schedule=sch, steps=n, prediction="epsilon"), x_t)
        uni = err(S.sample_unipc(eps, x_t, schedule=sch, steps=n, prediction="epsilon"), x_t)
        assert mine <= min(d2m, uni), (quality, mine, d2m, uni)


def test_core_matches_the_samplers_on_the_same_grid():
    """dpmpp_2m without UniC is DPM++(2M); with UniC it is UniPC-bh2 order 2 (independent code)."""
    if not hasattr(S, "sample_unipc"):
        pytest.skip("arraygen.samplers.sample_unipc not available")
    sch, eps, _ = _gauss("cosine")
    x_t = np.random.default_rng(2).standard_normal((50, 16))
    for unic, ref in ((False, S.sample_dpmpp_2m), (True, S.sample_unipc)):
        solver = FastSBOTSolver(eps, sch, FastSBOTConfig(steps=10, predictor="dpmpp_2m",
                                                         unified_corrector=unic),
                                prediction="epsilon")
        mine = solver.sample(noise=x_t)
        theirs = ref(eps, x_t, schedule=sch, steps=solver.timesteps, prediction="epsilon")
        np.testing.assert_allclose(mine, theirs, rtol=1e-9, atol=1e-9)


def test_orders_of_convergence():
    """Against the exact map to the last level then the exact denoiser (the final step is
    exact), the path error falls like steps^-p: p = 1 (ddim), 2 (dpmpp_2m), 3 (dpmpp_3m)."""
    rng = np.random.default_rng(0)
    mu = rng.uniform(-1.5, 1.5, 16)
    v = np.exp(rng.uniform(math.log(0.01), math.log(2.0), 16))
    sch = make_schedule("cosine")

    def eps(x, t):
        ab = float(sch.alpha_bar(t))
        return math.sqrt(1 - ab) * (x - math.sqrt(ab) * mu) / (ab * v + 1 - ab)

    x_t = np.random.default_rng(3).standard_normal((200, 16))
    ab1 = float(sch.alpha_bar(1.0))
    for predictor, p in (("ddim", 1), ("dpmpp_2m", 2), ("dpmpp_3m", 3)):
        e = []
        for n in (40, 80):                          # uniform in log-SNR from t = 1
            cfg = FastSBOTConfig(steps=n, predictor=predictor, unified_corrector=False,
                                 sigma_min=0.05, sigma_max=1e5)
            solver = FastSBOTSolver(eps, sch, cfg, prediction="epsilon")
            abl = float(sch.alpha_bar(float(solver.timesteps[-2])))
            x_l = math.sqrt(abl) * mu + np.sqrt((abl * v + 1 - abl) / (ab1 * v + 1 - ab1)) * (
                x_t - math.sqrt(ab1) * mu)
            exact = mu + math.sqrt(abl) * v / (abl * v + 1 - abl) * (x_l - math.sqrt(abl) * mu)
            x = solver.sample(noise=x_t)
            e.append(float(np.sqrt(np.mean((x - exact) ** 2 / v))))
        rate = math.log2(e[0] / e[1])
        assert rate > p - 0.3, (predictor, e, rate)


def test_final_step_denoises_to_alpha_bar_one():
    seen = []
    gm = _ring()

    def model(x, t):
        seen.append(t)
        return gm.score(x, t, SCH)

    solver = FastSBOTSolver(model, SCH, FastSBOTConfig(quality="draft"))
    grid = solver.timesteps
    assert grid[0] == 1.0 and grid[-1] == 0.0
    sig_last = math.sqrt((1 - SCH.alpha_bar(float(grid[-2]))) / SCH.alpha_bar(float(grid[-2])))
    assert sig_last == pytest.approx(0.02, rel=1e-6)
    sig_top = math.sqrt((1 - SCH.alpha_bar(float(grid[1]))) / SCH.alpha_bar(float(grid[1])))
    assert sig_top < PRESETS["draft"]["sigma_max"]
    out = []
    solver.sample((10, 2), rng=0, callback=out.append)
    assert seen[-1] == grid[-2] and 0.0 not in seen
    np.testing.assert_array_equal(out[-1]["x"], out[-1]["denoised"])


@pytest.mark.parametrize("ns", _namespaces())
@pytest.mark.parametrize("quality", list(PRESETS))
def test_every_preset_runs_in_the_namespace(ns, quality):
    name, xp, device = ns
    gm = _ring(None if name == "numpy" else _torch_ns())
    solver = FastSBOTSolver(gm.model(SCH), SCH, FastSBOTConfig(quality=quality))
    x = solver.sample((300, 2), rng=3, xp=xp, device=device)
    assert tuple(x.shape) == (300, 2)
    host = np.asarray(_to_numpy(x))
    assert np.all(np.isfinite(host))
    if name == "numpy":
        assert isinstance(x, np.ndarray) and x.dtype == np.float64
    else:
        import torch

        assert isinstance(x, torch.Tensor) and x.dtype == torch.float32
        assert x.device.type == "cpu"
    assert solver.nfe_ == solver.config.steps
    radius = np.sqrt((host ** 2).sum(1))
    assert 1.5 < np.median(radius) < 2.5


def test_balanced_mmd_bound():
    gm = _ring()
    n = 4000
    exact = gm.sample(n, rng=123)
    solver = FastSBOTSolver(gm.model(SCH), SCH, FastSBOTConfig(quality="balanced"))
    x = solver.sample((n, 2), rng=1)
    assert solver.nfe_ == 20
    assert float(mmd(x, exact, bandwidth=0.5)) <= 6e-4
    flipped = FastSBOTSolver(lambda z, t: -gm.score(z, t, SCH), SCH,
                             FastSBOTConfig(quality="balanced"))
    try:
        bad = flipped.sample((1000, 2), rng=1)
    except ValueError as exc:                       # driven to inf: reported, not returned
        assert "score_model" in str(exc)
    else:
        assert float(mmd(bad, exact[:1000], bandwidth=0.5)) > 1e-2


def test_prediction_kinds_give_the_same_samples():
    gm = _ring()
    a = FastSBOTSolver(gm.model(SCH, "score"), SCH, FastSBOTConfig(quality="fast")).sample(
        (200, 2), rng=5)
    b = FastSBOTSolver(gm.model(SCH, "epsilon"), SCH, FastSBOTConfig(quality="fast"),
                       prediction="epsilon").sample((200, 2), rng=5)
    np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-8)


def test_reproducible_with_the_same_rng():
    gm = _ring()
    cfg = FastSBOTConfig(quality="ultra", steps=6, corrector_steps=1)
    s = FastSBOTSolver(gm.model(SCH), SCH, cfg)
    a, b = s.sample((64, 2), rng=11), s.sample((64, 2), rng=11)
    c = s.sample((64, 2), rng=Key(11))
    d = s.sample((64, 2), rng=12)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    assert np.max(np.abs(a - d)) > 1e-3
    g1 = s.sample((64, 2), rng=np.random.default_rng(4))
    g2 = s.sample((64, 2), rng=np.random.default_rng(4))
    np.testing.assert_array_equal(g1, g2)


def test_nfe_budget_and_model_call_count():
    gm = _ring()
    calls = []

    def model(x, t):
        calls.append(t)
        assert 0.0 < t <= 1.0
        return gm.score(x, t, SCH)

    cfg = FastSBOTConfig(quality="extreme", corrector_steps=2, nfe=20)
    assert cfg.steps == 7 and cfg.model_evaluations == 19 and not cfg.unified_corrector
    solver = FastSBOTSolver(model, SCH, cfg)
    solver.sample((32, 2), rng=0)
    assert len(calls) == solver.nfe_ == 19
    assert FastSBOTConfig(quality="balanced", nfe=20).steps == 20


def test_ot_bridge_corrects_mode_weights():
    w = np.full(8, 0.5 / 7)
    w[0] = 0.5
    wrong = _ring(weights=w)
    reference = _ring().sample(300, rng=3)
    base = {"quality": "fast", "backend": "array_api", "profile": True}
    plain = FastSBOTSolver(wrong.model(SCH), SCH, FastSBOTConfig(**base))
    f_plain = _mode_fractions(plain.sample((300, 2), rng=1))[0]
    bridged = FastSBOTSolver(wrong.model(SCH), SCH, FastSBOTConfig(**base), reference=reference)
    f_ot = _mode_fractions(_quiet(bridged.sample, (300, 2), rng=1))[0]
    methods = [m for m in bridged.profile_["ot_method"] if m]
    assert methods and set(methods) == {"sinkhorn"}
    sliced = FastSBOTSolver(wrong.model(SCH), SCH,
                            FastSBOTConfig(memory_limit_ot_mb=1e-3, **base), reference=reference)
    f_sliced = _mode_fractions(sliced.sample((300, 2), rng=1))[0]
    assert {m for m in sliced.profile_["ot_method"] if m} == {"sliced"}
    # the over-weighted mode holds ~ 0.4 without the bridge; the reference says 1/8
    assert f_plain > 0.3
    assert f_ot < f_plain - 0.08, (f_plain, f_ot)
    assert f_sliced < f_plain - 0.05, (f_plain, f_sliced)


def test_profile_records_times_memory_and_epsilon_trace():
    gm = _ring()
    ref = gm.sample(100, rng=2)
    cfg = FastSBOTConfig(quality="ultra", steps=6, corrector_steps=1, profile=True,
                         backend="array_api")
    solver = FastSBOTSolver(gm.model(SCH), SCH, cfg, reference=ref)
    _quiet(solver.sample, (50, 2), rng=0)
    prof = solver.profile_
    assert set(prof["times"]) == {"model", "bridge", "predictor", "corrector", "total"}
    assert all(v >= 0 for v in prof["times"].values())
    assert prof["times"]["total"] >= prof["times"]["model"]
    assert prof["nfe"] == solver.nfe_ == 6 + 5
    assert prof["orders"] == [1, 2, 3, 3, 2, 1]
    assert "host_peak_rss_mb" in prof["memory"]
    assert len(prof["epsilon"]) == 6
    t = np.asarray(prof["timesteps"])
    for k, eps in enumerate(prof["epsilon"]):
        s2 = 1.0 - SCH.alpha_bar(float(t[k]))
        if math.sqrt(s2) >= cfg.ot_min_sigma:
            assert eps == pytest.approx(2.0 * s2, rel=1e-12)
            assert prof["kappa"][k] == pytest.approx(min(1.0, s2), rel=1e-12)
            assert prof["sinkhorn_iterations"][k] >= 1
        else:
            assert eps is None and prof["kappa"][k] == 0.0
    assert prof["epsilon"][0] is not None
    eps = [e for e in prof["epsilon"] if e is not None]
    assert all(a >= b for a, b in itertools.pairwise(eps))


def test_self_check_passes_and_can_fail():
    gm = _ring()
    report = FastSBOTSolver(gm.model(SCH), SCH, FastSBOTConfig(backend="array_api")).self_check()
    assert report.passed, str(report)
    assert set(report.checks) == {"sinkhorn_convergence", "fisher_stability",
                                  "transport_symmetry"}
    assert report.checks["transport_symmetry"]["value"] < 1e-6
    weak = FastSBOTSolver(gm.model(SCH), SCH,
                          FastSBOTConfig(sinkhorn_iterations=1, sinkhorn_tol=1e-6,
                                         backend="array_api")).self_check()
    assert not weak.passed and not weak.checks["sinkhorn_convergence"]["passed"]
    assert "FAIL" in str(weak)
    assert bool(report) is report["passed"] is report.passed
    assert set(report.to_dict()) == {"passed", "checks"}


def test_cache_reuses_the_step_table(tmp_path):
    gm = _ring()
    cache = PersistentKernelCache(tmp_path)
    cfg = FastSBOTConfig(quality="fast", profile=True)
    s1 = FastSBOTSolver(gm.model(SCH), SCH, cfg, cache=cache)
    a = s1.sample((20, 2), rng=0)
    assert s1.profile_["cache_hit"] is False and len(cache) == 1
    s2 = FastSBOTSolver(gm.model(SCH), SCH, cfg, cache=cache)
    b = s2.sample((20, 2), rng=0)
    assert s2.profile_["cache_hit"] is True
    np.testing.assert_array_equal(s1.timesteps, s2.timesteps)
    np.testing.assert_array_equal(a, b)


def test_torch_module_model_defaults_to_torch():
    torch = pytest.importorskip("torch")
    gm = _ring(_torch_ns())

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))

        def forward(self, x, t):
            return self.scale.detach() * gm.score(x, t, SCH)

    x = FastSBOTSolver(Net(), SCH, FastSBOTConfig(quality="draft")).sample((40, 2), rng=0)
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32


def test_torch_function_model_without_xp_follows_the_output_or_the_noise():
    """Issue 15: a torch model and no xp= -> torch samples (namespace from output or noise)."""
    torch = pytest.importorskip("torch")
    gm = _ring(_torch_ns())

    def model(x, t):                                # accepts NumPy, returns torch float32
        return gm.score(torch.as_tensor(x), t, SCH).to(torch.float32)

    solver = FastSBOTSolver(model, SCH, FastSBOTConfig(quality="draft"))
    x = solver.sample((64, 2), rng=0)
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32
    ref = FastSBOTSolver(_ring().model(SCH), SCH, FastSBOTConfig(quality="draft")).sample(
        (64, 2), rng=0)
    np.testing.assert_allclose(x.numpy(), ref, rtol=1e-4, atol=1e-4)
    noise = torch.randn(16, 2, dtype=torch.float64)
    y = FastSBOTSolver(lambda z, t: gm.score(z, t, SCH), SCH,
                       FastSBOTConfig(quality="draft")).sample(noise=noise)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float64


def test_loop_uses_no_public_sampler_or_validated_op(monkeypatch):
    gm = _ring()
    for name in ("sample_ddim", "sample_sde", "sample_dpmpp_2m", "sample_unipc",
                 "convert_prediction"):
        if hasattr(S, name):
            monkeypatch.setattr(S, name, lambda *a, **k: pytest.fail("public sampler called"))
    import arraygen.fisher as F

    monkeypatch.setattr(F, "fisher_langevin_step", lambda *a, **k: pytest.fail("public op"))
    cfg = FastSBOTConfig(quality="fast", corrector_steps=1)
    x = FastSBOTSolver(gm.model(SCH), SCH, cfg).sample((20, 2), rng=0)
    assert np.all(np.isfinite(x))


def test_callback_may_replace_x():
    gm = _ring()
    solver = FastSBOTSolver(gm.model(SCH), SCH, FastSBOTConfig(quality="draft"))

    def pin(info):
        if info["t_next"] == 0.0:
            return np.zeros_like(info["x"])
        return None

    x = solver.sample((10, 2), rng=0, callback=pin)
    np.testing.assert_array_equal(x, 0.0)


def test_gaussian_target_moments_with_correctors():
    """Langevin corrector (with a second-order predictor) on N(mu, C): closed-form moments."""
    mu = np.array([0.5, -1.0])
    cov = np.array([[0.3, 0.12], [0.12, 0.15]])
    gm = GaussianMixture(mu[None, :], cov[None, :, :])
    solver = FastSBOTSolver(gm.model(SCH), SCH, FastSBOTConfig(quality="ultra",
                                                               corrector_steps=1))
    x = solver.sample((4000, 2), rng=2)
    se = np.sqrt(np.diag(cov) / 4000)
    assert np.all(np.abs(x.mean(0) - mu) < 5 * se + 0.02)
    np.testing.assert_allclose(np.cov(x.T), cov, rtol=0.1, atol=0.01)


def test_torch_reference_bridge_and_callbacks():
    torch = pytest.importorskip("torch")
    gm = _ring(_torch_ns())
    ref = gm.sample(40, rng=3, dtype=torch.float32)
    seen = []
    solver = FastSBOTSolver(gm.model(SCH), SCH,
                            FastSBOTConfig(quality="fast", backend="array_api", profile=True),
                            reference=ref)
    x = _quiet(solver.sample, (30, 2), rng=0, progress=True, callback=seen.append)
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32
    assert torch.all(torch.isfinite(x))
    assert [info["step"] for info in seen] == list(range(12))
    assert seen[-1]["nfe"] == 12 and seen[-1]["t_next"] == 0.0
    assert "sinkhorn" in solver.profile_["ot_method"]
    with pytest.raises(TypeError, match="`reference` is a"):
        solver.sample((30, 2), rng=0, xp=np)


@pytest.mark.parametrize("kwargs, match", [
    ({"quality": "turbo"}, r"`quality` must be one of 'draft', 'fast', 'balanced'"),
    ({"quality": "Balanced"}, "`quality`"),
    ({"steps": 0}, "`steps`"),
    ({"steps": 10, "nfe": 10}, "`steps` or `nfe`"),
    ({"nfe": 0}, "`nfe`"),
    ({"momentum": 1.0}, "`momentum`"),
    ({"predictor": "heun"}, "`predictor`"),
    ({"predictor": "sde"}, "`predictor`"),
    ({"sigma_min": -1.0}, "`sigma_min`"),
    ({"sigma_min": 100.0}, "`sigma_min` must be below `sigma_max`"),
    ({"corrector_snr": -1.0}, "`corrector_snr`"),
    ({"memory_limit_ot_mb": 0.0}, "`memory_limit_ot_mb`"),
    ({"ot_epsilon_scale": float("nan")}, "`ot_epsilon_scale`"),
    ({"grid": "fancy"}, "`grid`"),
    ({"ot_min_sigma": 2.0}, "`ot_min_sigma`"),
    ({"eta": 1.0}, "`eta` > 0 needs predictor='ddim'"),
    ({"unified_corrector": True, "corrector_steps": 1}, "`unified_corrector` cannot"),
])
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FastSBOTConfig(**kwargs)


def test_types_are_checked():
    assert FastSBOTConfig(quality="fast").steps == PRESETS["fast"]["steps"]
    with pytest.raises(TypeError, match="`corrector_steps`"):
        FastSBOTConfig(corrector_steps=1.5)
    with pytest.raises(TypeError, match="`steps`"):
        FastSBOTConfig(steps=2.5)
    with pytest.raises(TypeError, match="`use_ot`"):
        FastSBOTConfig(use_ot="yes")
    import arraygen.fastsbot as fs

    assert not hasattr(fs, "_check_int")


def test_bad_solver_and_sample_input():
    gm = _ring()
    with pytest.raises(TypeError, match="`schedule`"):
        FastSBOTSolver(gm.model(SCH), "linear")
    with pytest.raises(TypeError, match="`score_model`"):
        FastSBOTSolver(3, SCH)
    with pytest.raises(ValueError, match="`prediction`"):
        FastSBOTSolver(gm.model(SCH), SCH, prediction="velocity")
    bad_ref = np.ones((10, 2))
    bad_ref[3, 1] = np.nan
    with pytest.raises(ValueError, match="`reference` contains 1 non-finite"):
        FastSBOTSolver(gm.model(SCH), SCH, reference=bad_ref)
    s = FastSBOTSolver(gm.model(SCH), SCH, reference=np.ones((10, 3)))
    with pytest.raises(ValueError, match="`reference` items have shape"):
        s.sample((5, 2), rng=0)
    s = FastSBOTSolver(gm.model(SCH), SCH)
    with pytest.raises(ValueError, match="`shape`"):
        s.sample((5,), rng=0)
    with pytest.raises(TypeError, match=r"`shape` must contain integers; got 2.5"):
        s.sample((2.5, 2), rng=0)                   # issue 13: was truncated to (2, 2)
    with pytest.raises(ValueError, match="`shape`"):
        s.sample((0, 2), rng=0)
    with pytest.raises(TypeError, match="`shape`"):
        s.sample(rng=0)
    with pytest.raises(ValueError, match="`noise` contains"):
        s.sample(noise=np.full((3, 2), np.inf))
    with pytest.raises(TypeError, match="`callback`"):
        s.sample((3, 2), rng=0, callback=3)
    wrong = FastSBOTSolver(lambda x, t: x[:, :1], SCH)
    with pytest.raises(ValueError, match="`score_model` returned shape"):
        wrong.sample((5, 2), rng=0)
    nan = FastSBOTSolver(lambda x, t: x * np.nan, SCH)
    with pytest.raises(ValueError, match="`score_model` drove the samples to non-finite"):
        nan.sample((5, 2), rng=0)


@pytest.mark.parametrize("options", [
    {"quality": "balanced", "steps": 6},                                  # order 3 + UniC
    {"quality": "draft", "steps": 5, "corrector_steps": 1},               # Langevin corrector
    {"quality": "fast", "steps": 5, "predictor": "ddim", "eta": 1.0},     # stochastic DDIM
])
def test_every_namespace_gives_numpys_samples(xp, options):
    """Same starting noise (and Philox stream) in every namespace -> NumPy's samples."""
    mu, var = 0.5, 0.3
    sch = make_schedule("cosine")

    def eps(x, t):                                  # exact epsilon of N(mu, var), any namespace
        ab = float(sch.alpha_bar(t))
        return math.sqrt(1 - ab) * (x - math.sqrt(ab) * mu) / (ab * var + 1 - ab)

    noise = np.random.default_rng(0).standard_normal((64, 3))
    solver = FastSBOTSolver(eps, sch, FastSBOTConfig(**options), prediction="epsilon")
    want = solver.sample(noise=noise, rng=3)
    got = solver.sample(noise=xp.asarray(noise), rng=3)
    assert type(got) is type(xp.asarray(noise))
    np.testing.assert_allclose(_to_numpy(got), want, rtol=1e-9, atol=1e-9)
