"""FastSB-OT solver: every preset on NumPy and torch with exact Gaussian-mixture scores, the OT
bridge (Sinkhorn and sliced) against mode weights, self_check, profile, cache, bad input.

Pre-registered bounds (fixed seeds, set from the estimators' noise before looking at the
solver's outputs): MMD^2 (Gaussian kernel, bandwidth 0.5, unbiased) between 4000 "balanced"
samples and 4000 exact samples of the 8-component ring <= 6e-4 (two exact sample sets give
|MMD^2| ~ 1e-4; DDIM at the same 20 evaluations gives ~ 6.5e-4; a flipped score gives > 0.1),
and below DDIM's value at the same number of model evaluations.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from arraygen import samplers as S
from arraygen.bridge import FastSBOTConfig, FastSBOTSolver
from arraygen.cache import PersistentKernelCache
from arraygen.datasets import GaussianMixture
from arraygen.fastsbot import PRESETS
from arraygen.metrics import mmd
from arraygen.random import Key, normal
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
    cfg = solver.config
    assert solver.nfe_ == cfg.steps + cfg.corrector_steps * (cfg.steps - 1)
    # samples land near the ring (radius 2), not at the origin or far out
    radius = np.sqrt((host ** 2).sum(1))
    assert 1.5 < np.median(radius) < 2.5


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


def test_balanced_mmd_bound_and_beats_ddim_at_equal_nfe():
    gm = _ring()
    n = 4000
    exact = gm.sample(n, rng=123)
    solver = FastSBOTSolver(gm.model(SCH), SCH, FastSBOTConfig(quality="balanced"))
    x = solver.sample((n, 2), rng=1)
    assert solver.nfe_ == 20
    value = float(mmd(x, exact, bandwidth=0.5))
    ddim = S.sample_ddim(gm.model(SCH), normal(7, (n, 2), xp=np), schedule=SCH, steps=20)
    value_ddim = float(mmd(ddim, exact, bandwidth=0.5))
    assert value <= 6e-4, value
    assert value < value_ddim, (value, value_ddim)
    # the same bound catches a wrong drift: a flipped score is far off
    flipped = FastSBOTSolver(lambda z, t: -gm.score(z, t, SCH), SCH,
                             FastSBOTConfig(quality="balanced"))
    bad = flipped.sample((1000, 2), rng=1)
    assert not np.all(np.isfinite(bad)) or float(mmd(bad, exact[:1000], bandwidth=0.5)) > 1e-2


def test_prediction_kinds_give_the_same_samples():
    gm = _ring()
    a = FastSBOTSolver(gm.model(SCH, "score"), SCH, FastSBOTConfig(quality="fast")).sample(
        (200, 2), rng=5)
    b = FastSBOTSolver(gm.model(SCH, "epsilon"), SCH, FastSBOTConfig(quality="fast"),
                       prediction="epsilon").sample((200, 2), rng=5)
    np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-8)


def test_reproducible_with_the_same_rng():
    gm = _ring()
    cfg = FastSBOTConfig(quality="ultra", steps=6)
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

    cfg = FastSBOTConfig(quality="extreme", nfe=20)
    assert cfg.corrector_steps == 2 and cfg.steps == 7 and cfg.model_evaluations == 19
    solver = FastSBOTSolver(model, SCH, cfg)
    solver.sample((32, 2), rng=0)
    assert len(calls) == solver.nfe_ == 19
    assert FastSBOTConfig(quality="balanced", nfe=20).steps == 20


def test_ot_bridge_corrects_mode_weights_sinkhorn_and_sliced():
    w = np.full(8, 0.5 / 7)
    w[0] = 0.5
    wrong = _ring(weights=w)
    reference = _ring().sample(300, rng=3)
    base = {"quality": "fast", "backend": "array_api", "profile": True}
    plain = FastSBOTSolver(wrong.model(SCH), SCH, FastSBOTConfig(**base))
    f_plain = _mode_fractions(plain.sample((300, 2), rng=1))[0]
    bridged = FastSBOTSolver(wrong.model(SCH), SCH, FastSBOTConfig(**base), reference=reference)
    x = _quiet(bridged.sample, (300, 2), rng=1)
    f_ot = _mode_fractions(x)[0]
    methods = [m for m in bridged.profile_["ot_method"] if m]
    assert methods and set(methods) == {"sinkhorn"}
    sliced = FastSBOTSolver(wrong.model(SCH), SCH,
                            FastSBOTConfig(memory_limit_ot_mb=1e-3, **base), reference=reference)
    f_sliced = _mode_fractions(sliced.sample((300, 2), rng=1))[0]
    assert {m for m in sliced.profile_["ot_method"] if m} == {"sliced"}
    # the over-weighted mode holds ~ 0.37 without the bridge; the reference says 1/8
    assert f_plain > 0.3
    assert f_ot < f_plain - 0.08, (f_plain, f_ot)
    assert f_sliced < f_plain - 0.05, (f_plain, f_sliced)


def _quiet(fn, *args, **kw):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


def test_profile_records_times_memory_and_epsilon_trace():
    gm = _ring()
    ref = gm.sample(100, rng=2)
    cfg = FastSBOTConfig(quality="ultra", steps=6, profile=True, backend="array_api")
    solver = FastSBOTSolver(gm.model(SCH), SCH, cfg, reference=ref)
    _quiet(solver.sample, (50, 2), rng=0)
    prof = solver.profile_
    assert set(prof["times"]) == {"model", "bridge", "predictor", "corrector", "total"}
    assert all(v >= 0 for v in prof["times"].values())
    assert prof["times"]["total"] >= prof["times"]["model"]
    assert prof["nfe"] == solver.nfe_ == 6 + 5
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
    # annealed with the noise level: non-increasing along the trajectory
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
    grid = s1.timesteps
    assert grid[0] == 1.0 and grid[-1] == 0.0 and np.all(np.diff(grid) < 0)
    assert math.sqrt(1.0 - SCH.alpha_bar(float(grid[-2]))) == pytest.approx(0.25, rel=1e-6)


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


@pytest.mark.parametrize("kwargs, match", [
    ({"quality": "turbo"}, r"`quality` must be one of \('draft', 'fast', 'balanced'"),
    ({"quality": "Balanced"}, "`quality`"),
    ({"steps": 0}, "`steps`"),
    ({"steps": 10, "nfe": 10}, "`steps` or `nfe`"),
    ({"nfe": 0}, "`nfe`"),
    ({"momentum": 1.0}, "`momentum`"),
    ({"predictor": "heun"}, "`predictor`"),
    ({"sigma_min": 1.5}, "`sigma_min`"),
    ({"corrector_snr": -1.0}, "`corrector_snr`"),
    ({"memory_limit_ot_mb": 0.0}, "`memory_limit_ot_mb`"),
    ({"ot_epsilon_scale": float("nan")}, "`ot_epsilon_scale`"),
    ({"grid": "fancy"}, "`grid`"),
    ({"ot_min_sigma": 2.0}, "`ot_min_sigma`"),
])
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FastSBOTConfig(**kwargs)


def test_fast_is_a_real_preset_and_types_are_checked():
    assert FastSBOTConfig(quality="fast").steps == PRESETS["fast"]["steps"]
    with pytest.raises(TypeError, match="`corrector_steps`"):
        FastSBOTConfig(corrector_steps=1.5)
    with pytest.raises(TypeError, match="`use_ot`"):
        FastSBOTConfig(use_ot="yes")


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
    with pytest.raises(ValueError, match="`reference` contains non-finite"):
        FastSBOTSolver(gm.model(SCH), SCH, reference=bad_ref)
    s = FastSBOTSolver(gm.model(SCH), SCH, reference=np.ones((10, 3)))
    with pytest.raises(ValueError, match="`reference` items have shape"):
        s.sample((5, 2), rng=0)
    s = FastSBOTSolver(gm.model(SCH), SCH)
    with pytest.raises(ValueError, match="`shape`"):
        s.sample((5,), rng=0)
    wrong = FastSBOTSolver(lambda x, t: x[:, :1], SCH)
    with pytest.raises(ValueError, match="returned shape"):
        wrong.sample((5, 2), rng=0)


def test_gaussian_target_moments_with_correctors():
    """ultra (reverse SDE + Fisher-Langevin corrector) on N(mu, C): closed-form moments."""
    mu = np.array([0.5, -1.0])
    cov = np.array([[0.3, 0.12], [0.12, 0.15]])
    gm = GaussianMixture(mu[None, :], cov[None, :, :])
    solver = FastSBOTSolver(gm.model(SCH), SCH, FastSBOTConfig(quality="ultra"))
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


def test_self_check_report_access():
    gm = _ring()
    report = FastSBOTSolver(gm.model(SCH), SCH,
                            FastSBOTConfig(quality="draft", backend="array_api")).self_check()
    assert bool(report) is report["passed"] is report.passed
    assert report["fisher_stability"]["threshold"] == 0.25
    assert set(report.to_dict()) == {"passed", "checks"}
