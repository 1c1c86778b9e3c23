"""sinkhorn(method="multiscale" | "auto"): coarse-to-fine Sinkhorn with truncated kernels.

Oracles: the exact solver run far past the tolerance, a dense float64 NumPy plan built from the
returned potentials (independent of arraygen's kernels), weak duality, and GeomLoss's own
multiscale solver where geomloss + pykeops are installed.
"""

from __future__ import annotations

import math
import types
import warnings

import numpy as np
import pytest

from arraygen import _sinkhorn_multiscale as ms
from arraygen.sinkhorn import BatchedSinkhornResult, ConvergenceWarning, sinkhorn

EPS = 0.003


def _problem(rng, n=700, m=600, d=2):
    x = rng.random((n, d))
    y = rng.random((m, d)) ** 1.5
    a = rng.random(n) + 0.2
    return x, y, a / a.sum(), np.full(m, 1.0 / m)


def _dense(x, y, a, b, f, g, eps):
    """Float64 plan of (f, g), its marginal L1 error and cost, with NumPy only."""
    x, y, f, g = (np.asarray(t, dtype=np.float64) for t in (x, y, f, g))
    if x.ndim == 1:
        x, y = x[:, None], y[:, None]
    c = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    plan = a[:, None] * b[None, :] * np.exp((f[:, None] + g[None, :] - c) / eps)
    err = np.abs(plan.sum(1) - a).sum() + np.abs(plan.sum(0) - b).sum()
    return plan, err, float((plan * c).sum())


@pytest.fixture(scope="module")
def solved():
    rng = np.random.default_rng(7)
    x, y, a, b = _problem(rng)
    ex = sinkhorn(x, y, a, b, epsilon=EPS, tol=1e-11, max_iter=50000, scaling=0.5,
                  relaxation="auto")
    res = sinkhorn(x, y, a, b, epsilon=EPS, tol=1e-5, max_iter=5000, method="multiscale",
                   relaxation="auto")
    return x, y, a, b, ex, res


# --------------------------------------------------------------------------------------------
# agreement with the exact solver, honest error
# --------------------------------------------------------------------------------------------

def test_agrees_with_exact_solver_within_the_reported_error(solved):
    x, y, a, b, ex, res = solved
    assert ex.converged and res.converged and res.marginal_error <= 1e-5
    plan, err, _ = _dense(x, y, a, b, res.f, res.g, EPS)
    plan_ex, _, cost_ex = _dense(x, y, a, b, ex.f, ex.g, EPS)
    scale = err + ex.marginal_error
    # the plan of the truncated solve is the exact plan up to its marginal error
    assert np.abs(plan - plan_ex).sum() <= 20 * scale
    assert abs(res.cost - cost_ex) <= 10 * scale * cost_ex
    assert abs(res.dual_value - ex.dual_value) <= 10 * scale * abs(ex.dual_value)
    # potentials: equal up to the gauge f + c, g - c
    shift = np.mean(res.f - ex.f)
    assert np.abs(res.f - ex.f - shift).max() <= 1000 * scale * EPS
    assert np.abs(res.g - ex.g + shift).max() <= 1000 * scale * EPS
    # the plan operators are the exact ones of the returned potentials
    gen = np.random.default_rng(1)
    v, u = gen.normal(size=(y.shape[0], 2)), gen.normal(size=x.shape[0])
    np.testing.assert_allclose(res.plan_matvec(v), plan @ v, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(res.plan_rmatvec(u), plan.T @ u, rtol=1e-9, atol=1e-14)
    rows = plan.sum(1)
    np.testing.assert_allclose(res.barycentric_map(), plan @ y / rows[:, None], rtol=1e-9)


def test_marginal_error_and_cost_are_the_plans(solved):
    x, y, a, b, _, res = solved
    _, err, cost = _dense(x, y, a, b, res.f, res.g, EPS)
    assert res.marginal_error == pytest.approx(err, rel=1e-8)
    assert res.cost == pytest.approx(cost, rel=1e-10)
    assert res.dual_value == pytest.approx(float(a @ res.f + b @ res.g), rel=1e-12)


def test_info_records_the_truncation(solved):
    *_, res = solved
    info = res.info
    assert set(ms.INFO_KEYS) <= set(info) and info["method"] == "multiscale"
    kx, ky = info["clusters"]
    bx, by = info["block"]
    assert kx == math.ceil(700 / bx) and ky == math.ceil(600 / by)
    assert info["coarse_iter"] > 0 and info["exact_passes"] >= 1
    assert 0.0 < info["fraction"] < 0.9          # kernels really skipped pairs
    for level in info["levels"]:
        assert 0.0 < level["fraction_rows"] <= 1.0 and 0.0 < level["fraction_cols"] <= 1.0
        assert level["mass_bound_rows"] >= 0.0 and level["mass_bound_cols"] >= 0.0
        assert level["truncate"] >= ms.MIN_TRUNCATE
    assert res.n_iter == len(res.epsilons)
    assert res.epsilons[-1] == EPS


def test_float32_input(rng):
    x, y, a, b = _problem(rng, 500, 400)
    res = sinkhorn(x.astype(np.float32), y.astype(np.float32), a.astype(np.float32),
                   b.astype(np.float32), epsilon=0.004, tol=1e-3, method="multiscale")
    assert res.f.dtype == np.float32 and res.converged
    _, err, _ = _dense(x.astype(np.float32), y.astype(np.float32), a.astype(np.float32)
                       .astype(np.float64), b.astype(np.float32).astype(np.float64), res.f,
                       res.g, 0.004)
    # float32 centring and log-weights move the plan by ~1e-7 relative per entry
    assert res.marginal_error == pytest.approx(err, rel=1e-3)


def test_converged_flag_is_honest_when_max_iter_is_too_small(rng):
    x, y, a, b = _problem(rng, 400, 300)
    with pytest.warns(ConvergenceWarning, match="multiscale"):
        res = sinkhorn(x, y, a, b, epsilon=EPS, tol=1e-9, max_iter=6, method="multiscale")
    assert not res.converged and res.n_iter <= 6
    _, err, _ = _dense(x, y, a, b, res.f, res.g, EPS)
    assert res.marginal_error == pytest.approx(err, rel=1e-8) and err > 1e-9


def test_too_narrow_truncation_is_widened_by_the_exact_check(rng, monkeypatch):
    x, y, a, b = _problem(rng, 400, 300)
    monkeypatch.setattr(ms, "default_truncate", lambda tol: 1.0)
    res = sinkhorn(x, y, a, b, epsilon=EPS, tol=1e-6, method="multiscale", relaxation="auto")
    _, err, _ = _dense(x, y, a, b, res.f, res.g, EPS)
    assert res.marginal_error == pytest.approx(err, rel=1e-8)
    widths = [level["truncate"] for level in res.info["levels"]]
    assert res.info["exact_passes"] >= 2 and widths[-1] > widths[0] == 1.0
    assert res.converged == (err <= 1e-6)


def test_callback_sees_the_users_order_and_can_stop(rng):
    x, y, a, b = _problem(rng, 300, 200)
    seen = []

    def stop(info):
        seen.append(info)
        return True

    with pytest.warns(ConvergenceWarning, match="callback"):
        res = sinkhorn(x, y, a, b, epsilon=EPS, tol=1e-9, method="multiscale", callback=stop)
    assert len(seen) == 1 and not res.converged
    f = seen[0]["f"]
    assert f.shape == (300,)
    # the callback's f is the potential of the user's points: the returned one is its update
    assert np.corrcoef(f, res.f)[0, 1] > 0.99


def test_warm_start_skips_the_coarse_level(solved):
    x, y, a, b, _, res = solved
    again = sinkhorn(x, y, a, b, epsilon=EPS, tol=1e-5, method="multiscale",
                     warm_start=(res.f, res.g))
    assert again.converged and again.info["coarse_iter"] == 0
    assert again.n_iter <= 5


# --------------------------------------------------------------------------------------------
# method="auto", validation, namespaces, batches
# --------------------------------------------------------------------------------------------

def test_auto_picks_exact_on_small_problems(rng):
    x, y, a, b = _problem(rng, 200, 150)
    res = sinkhorn(x, y, a, b, epsilon=EPS, tol=1e-4, method="auto")
    ref = sinkhorn(x, y, a, b, epsilon=EPS, tol=1e-4)
    assert res.info is None and ref.info is None
    np.testing.assert_array_equal(res.f, ref.f)
    assert res.n_iter == ref.n_iter


def _fake(n, m, d, scale):
    return types.SimpleNamespace(x=np.zeros((n, d)), y=np.zeros((m, d)), scale=scale)


def test_auto_rule():
    big = 1 << 12                                          # N M = 2**24
    assert ms.choose_method("auto", _fake(big, big, 3, 3.0), 0.01) == "multiscale"
    assert ms.choose_method("auto", _fake(big, big // 2, 3, 3.0), 0.01) == "exact"
    assert ms.choose_method("auto", _fake(big, big, 4, 3.0), 0.01) == "exact"
    assert ms.choose_method("auto", _fake(big, big, 3, 3.0), 0.1) == "exact"
    assert ms.choose_method("exact", _fake(big, big, 3, 3.0), 0.01) == "exact"
    assert ms.choose_method("multiscale", _fake(10, 10, 9, 3.0), 1.0) == "multiscale"


@pytest.mark.parametrize("method", ["fast", "Exact", None, 1, True])
def test_bad_method_names_the_argument(rng, method):
    x, y, _, _ = _problem(rng, 20, 10)
    with pytest.raises(ValueError, match="`method`"):
        sinkhorn(x, y, epsilon=0.1, method=method)


def test_dask_input_refuses_multiscale(rng):
    da = pytest.importorskip("dask.array")
    x, y, _, _ = _problem(rng, 60, 50)
    with pytest.raises(ValueError, match="`method`.*Dask"):
        sinkhorn(da.from_array(x, chunks=30), da.from_array(y, chunks=25), epsilon=0.1,
                 method="multiscale")


def test_namespaces(xp, rng):
    x, y, a, b = _problem(rng, 200, 150)
    res = sinkhorn(xp.asarray(x), xp.asarray(y), xp.asarray(a), xp.asarray(b), epsilon=0.005,
                   tol=1e-4, method="multiscale", relaxation="auto")
    ex = sinkhorn(x, y, a, b, epsilon=0.005, tol=1e-9, max_iter=20000, relaxation="auto")
    assert res.converged and res.f.shape == (200,)
    f, g = xp.to_numpy(res.f), xp.to_numpy(res.g)
    plan, err, _ = _dense(x, y, a, b, f, g, 0.005)
    assert res.marginal_error == pytest.approx(err, rel=1e-6) and err <= 1e-4
    assert abs(res.cost - ex.cost) <= 10 * (err + ex.marginal_error) * ex.cost
    bary = xp.to_numpy(res.barycentric_map())
    np.testing.assert_allclose(bary, plan @ y / plan.sum(1)[:, None], rtol=1e-8, atol=1e-12)


def test_kernel_backends(kernel_backend, rng):
    ns = kernel_backend.xp
    x, y, a, b = _problem(rng, 45, 35)
    eps = 0.01
    args = [ns.asarray(t) for t in (x, y, a, b)]
    opts = {"epsilon": eps, "tol": 1e-5, "max_iter": 2000, "method": "multiscale",
            "relaxation": "auto", "backend": kernel_backend.name}
    # simulated GPU kernels are slow: start next to the solution (a few truncated iterations)
    near = sinkhorn(x, y, a, b, epsilon=eps, tol=1e-6, relaxation="auto")
    runs = [sinkhorn(*args, warm_start=(ns.asarray(near.f), ns.asarray(near.g)), **opts)]
    if not kernel_backend.simulated:
        runs.append(sinkhorn(*args, **opts))
    for res in runs:
        f, g = ns.to_numpy(res.f), ns.to_numpy(res.g)
        _, err, cost = _dense(x, y, a, b, f, g, eps)
        assert res.converged and err <= 1e-5
        assert res.marginal_error == pytest.approx(err, rel=1e-6)
        assert res.cost == pytest.approx(cost, rel=1e-8)
        assert res.info["fraction"] < 1.0


def test_batched_problems(rng):
    x = np.stack([_problem(rng, 250, 200)[0] for _ in range(2)])
    y = np.stack([_problem(rng, 250, 200)[1] for _ in range(2)])
    res = sinkhorn(x, y, epsilon=0.005, tol=1e-4, method="multiscale", relaxation="auto")
    assert isinstance(res, BatchedSinkhornResult) and res.converged
    for k in range(2):
        one = sinkhorn(x[k], y[k], epsilon=0.005, tol=1e-4, method="multiscale",
                       relaxation="auto")
        np.testing.assert_allclose(res.f[k], one.f)
        assert res[k].info["method"] == "multiscale"
        _, err, _ = _dense(x[k], y[k], np.full(250, 1 / 250), np.full(200, 1 / 200),
                           res.f[k], res.g[k], 0.005)
        assert res[k].marginal_error == pytest.approx(err, rel=1e-8)
        assert err <= 1e-4


def test_one_dimensional_points(rng):
    x, y = rng.random(500), rng.random(400) ** 2
    res = sinkhorn(x, y, epsilon=1e-3, tol=1e-5, method="multiscale", relaxation="auto")
    _, err, _ = _dense(x, y, np.full(500, 1 / 500), np.full(400, 1 / 400), res.f, res.g, 1e-3)
    assert res.converged and res.marginal_error == pytest.approx(err, rel=1e-8)


def test_zero_weights(rng):
    x, y, a, b = _problem(rng, 300, 200)
    a[:40] = 0.0
    a /= a.sum()
    res = sinkhorn(x, y, a, b, epsilon=0.005, tol=1e-5, method="multiscale",
                   relaxation="auto")
    _, err, _ = _dense(x, y, a, b, res.f, res.g, 0.005)
    assert res.converged and res.marginal_error == pytest.approx(err, rel=1e-8)
    assert np.all(np.isfinite(res.f))


def test_torch_gradients_match_the_exact_solver(rng):
    torch = pytest.importorskip("torch")
    x, y, _, _ = _problem(rng, 300, 250)
    grads = []
    for method in ("exact", "multiscale"):
        xt = torch.tensor(x, requires_grad=True)
        res = sinkhorn(xt, torch.tensor(y), epsilon=0.005, tol=1e-7, max_iter=20000,
                       method=method, relaxation="auto")
        res.cost.backward()
        grads.append(xt.grad.numpy())
    np.testing.assert_allclose(grads[1], grads[0], atol=1e-3 * np.abs(grads[0]).max())


# --------------------------------------------------------------------------------------------
# GeomLoss's multiscale solver (the model of this one)
# --------------------------------------------------------------------------------------------

def test_against_geomloss_multiscale(rng):
    torch = pytest.importorskip("torch")
    pytest.importorskip("pykeops")
    geomloss = pytest.importorskip("geomloss")
    n, eps = 1000, 0.004
    x = rng.random((n, 3)).astype(np.float32)
    y = (0.5 * (x + rng.random((n, 3)) ** 2)).astype(np.float32)
    a = np.full(n, 1.0 / n)
    # GeomLoss: cost |x - y|^2 / 2 and eps_GL = blur^2, so blur = sqrt(eps / 2); its
    # potentials are in cost / 2 units: f = 2 f_GL
    loss = geomloss.SamplesLoss("sinkhorn", p=2, blur=math.sqrt(eps / 2), scaling=0.9,
                                debias=False, potentials=True, backend="multiscale",
                                truncate=5)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fg, gg = loss(torch.from_numpy(x), torch.from_numpy(y))
    except Exception as exc:  # noqa: BLE001 (KeOps compiles with the system compiler)
        pytest.skip(f"GeomLoss multiscale (KeOps) did not run here: {exc!r:.200}")
    f_gl, g_gl = 2.0 * fg.double().numpy().ravel(), 2.0 * gg.double().numpy().ravel()
    _, err_gl, _ = _dense(x, y, a, a, f_gl, g_gl, eps)
    res = sinkhorn(x.astype(np.float64), y.astype(np.float64), epsilon=eps, tol=1e-6,
                   method="multiscale", relaxation="auto")
    assert res.converged
    # weak duality: <a,f> + <b,g> - eps (sum P - 1) <= OT_eps for any (f, g), with a gap
    # that closes with GeomLoss's marginal error (about 1e-1 here: its schedule is fixed)
    plan_gl, _, _ = _dense(x, y, a, a, f_gl, g_gl, eps)
    dual_gl = a @ f_gl + a @ g_gl - eps * (plan_gl.sum() - 1.0)
    assert dual_gl <= res.dual_value + 1e-5 * abs(res.dual_value)
    assert res.dual_value - dual_gl <= 0.2 * max(err_gl, 1e-3) * abs(res.dual_value)
    # potentials agree up to the gauge, within GeomLoss's error
    shift = np.mean(res.f - f_gl)
    assert np.abs(res.f - f_gl - shift).max() <= 100 * max(err_gl, 1e-3) * eps
    assert np.abs(res.g - g_gl + shift).max() <= 100 * max(err_gl, 1e-3) * eps


# --------------------------------------------------------------------------------------------
# the GPU route on the host: device kd order, exact pass in the points' dtype
# --------------------------------------------------------------------------------------------

def test_device_route_same_solution(monkeypatch):
    """The route CUDA arrays take (clusters from the device kd order, the exact check's
    kernels in float32 where the rounding allows) forced on float32 host arrays: converged,
    its reported error is the float64 plan's, and the plan is the host route's up to the two
    errors; a small epsilon keeps the check in float64."""
    from arraygen import blocksparse

    rng = np.random.default_rng(11)
    x, y, a, b = _problem(rng, n=900, m=800)
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    eps, tol = 0.01, 1e-3   # float32 eps * scale / eps = 2.4e-5 <= 0.05 * tol
    host = sinkhorn(x32, y32, a, b, epsilon=eps, tol=tol, method="multiscale")
    monkeypatch.setattr(blocksparse, "_order_on_host", lambda x: False)
    monkeypatch.setattr(ms, "_on_gpu", lambda x: True)
    dev = sinkhorn(x32, y32, a, b, epsilon=eps, tol=tol, method="multiscale")
    assert host.info["exact_dtype"] == "float64" and dev.info["exact_dtype"] == "float32"
    assert dev.converged and dev.marginal_error <= tol
    plan, err, cost = _dense(x32, y32, a, b, dev.f, dev.g, eps)
    assert dev.marginal_error == pytest.approx(err, abs=ms.EXACT_NARROW_SHARE * tol)
    assert dev.cost == pytest.approx(cost, rel=1e-4)
    plan_h, err_h, _ = _dense(x32, y32, a, b, host.f, host.g, eps)
    assert np.abs(plan - plan_h).sum() <= 20 * (err + err_h)
    small = sinkhorn(x32, y32, a, b, epsilon=EPS, tol=1e-4, method="multiscale")
    assert small.info["exact_dtype"] == "float64"     # 7.9e-5 > 0.05 * 1e-4: rounding too big


def test_device_order_gives_valid_clusters(monkeypatch):
    from arraygen import blocksparse

    rng = np.random.default_rng(3)
    x = rng.random((5000, 3))
    host = blocksparse.cluster_points(x, block=64)
    monkeypatch.setattr(blocksparse, "_order_on_host", lambda x: False)
    dev = blocksparse.cluster_points(x, block=64)
    perm = np.asarray(dev.perm)
    assert np.array_equal(np.sort(perm), np.arange(5000))
    assert np.array_equal(np.asarray(dev.inverse)[perm], np.arange(5000))
    np.testing.assert_array_equal(dev.points, x[perm])
    pts = dev.points.reshape(dev.K, 64, 3) if 5000 % 64 == 0 else None
    for k in range(dev.K):  # every point of a cluster within its radius of the centre
        p = dev.points[k * 64:(k + 1) * 64]
        np.testing.assert_allclose(dev.centers[k], p.mean(0), rtol=1e-12)
        assert np.sqrt(((p - dev.centers[k]) ** 2).sum(1)).max() <= dev.radii[k]
    assert pts is None
    # a spatial order: clusters about as tight as the host order's
    assert np.mean(dev.radii) <= 1.3 * np.mean(host.radii)
