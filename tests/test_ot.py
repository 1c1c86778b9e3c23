"""Entropic OT (tiled log-domain Sinkhorn) and sliced OT against POT, SciPy and closed forms."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.stats
from scipy.linalg import sqrtm

from arraygen import random as agr
from arraygen.ot import (
    ConvergenceWarning,
    sinkhorn,
    sliced_ot_map,
    sliced_wasserstein,
)

pot = pytest.importorskip("ot")


def _clouds(rng, n=40, m=30, d=2):
    x = rng.normal(size=(n, d))
    y = rng.normal(1.5, 0.6, size=(m, d))
    return x, y


def _weights(rng, n, zeros=()):
    w = rng.random(n) + 0.1
    w[list(zeros)] = 0.0
    return w / w.sum()


def _dense_error(plan, a, b):
    return np.abs(plan.sum(1) - a).sum() + np.abs(plan.sum(0) - b).sum()


# --------------------------------------------------------------------------------------------
# POT equivalence
# --------------------------------------------------------------------------------------------

def test_plan_and_cost_match_pot(xp, rng):
    x, y = _clouds(rng)
    a, b = _weights(rng, 40), _weights(rng, 30)
    eps = 0.3
    res = sinkhorn(xp.asarray(x), xp.asarray(y), xp.asarray(a), xp.asarray(b), epsilon=eps,
                   tol=1e-13, max_iter=20000)
    assert res.converged and res.marginal_error <= 1e-13
    cmat = pot.dist(x, y)
    ref = pot.sinkhorn(a, b, cmat, reg=eps, stopThr=1e-15, numItermax=200000)
    plan = xp.to_numpy(res.plan())
    np.testing.assert_allclose(plan, ref, rtol=1e-9, atol=1e-12 * ref.max())
    assert res.cost == pytest.approx(float((ref * cmat).sum()), rel=1e-10)
    # potentials: P = a b exp((f + g - C)/eps), the documented convention
    f, g = xp.to_numpy(res.f), xp.to_numpy(res.g)
    rebuilt = a[:, None] * b[None, :] * np.exp((f[:, None] + g[None, :] - cmat) / eps)
    np.testing.assert_allclose(rebuilt, ref, rtol=1e-9, atol=1e-12 * ref.max())
    assert res.f.dtype == xp.float64 and tuple(res.f.shape) == (40,)
    # at convergence <f, a> + <g, b> = <C, P> + eps KL(P | a b^T)
    kl = float(np.sum(ref * np.log(ref / (a[:, None] * b[None, :]))))
    assert res.dual_value == pytest.approx(float((ref * cmat).sum()) + eps * kl, rel=1e-9)


def test_uniform_weights_match_pot_default(rng):
    x, y = _clouds(rng, 50, 50)
    res = sinkhorn(x, y, epsilon=0.5, tol=1e-13, max_iter=20000)
    ref = pot.sinkhorn(np.full(50, 0.02), np.full(50, 0.02), pot.dist(x, y), reg=0.5,
                       stopThr=1e-15, numItermax=200000)
    np.testing.assert_allclose(res.plan(), ref, rtol=1e-9, atol=1e-12 * ref.max())


def test_zero_weights_supported(rng):
    x, y = _clouds(rng)
    a = _weights(rng, 40, zeros=(0, 7, 8))
    b = _weights(rng, 30, zeros=(29, 3))
    eps = 0.3
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divide-by-zero or NaN warnings
        res = sinkhorn(x, y, a, b, epsilon=eps, tol=1e-13, max_iter=20000)
    plan = res.plan()
    assert np.isfinite(res.f).all() and np.isfinite(res.g).all() and np.isfinite(plan).all()
    assert (plan[[0, 7, 8], :] == 0).all() and (plan[:, [29, 3]] == 0).all()
    cmat = pot.dist(x, y)
    # POT's default solver divides by a; its log-domain solver handles zeros
    with np.errstate(divide="ignore"):
        ref = pot.sinkhorn(a, b, cmat, reg=eps, method="sinkhorn_log", stopThr=1e-15,
                           numItermax=200000)
    np.testing.assert_allclose(plan, ref, rtol=1e-9, atol=1e-12 * ref.max())
    # and the default solver on the problem with the zero-mass points removed
    ia, ib = a > 0, b > 0
    red = pot.sinkhorn(a[ia], b[ib], cmat[np.ix_(ia, ib)], reg=eps, stopThr=1e-15,
                       numItermax=200000)
    np.testing.assert_allclose(plan[np.ix_(ia, ib)], red, rtol=1e-9, atol=1e-12 * red.max())
    assert res.cost == pytest.approx(float((ref * cmat).sum()), rel=1e-10)


def test_kernel_backends_match_pot(kernel_backend, rng):
    ns = kernel_backend.xp
    x, y = _clouds(rng, 19, 13)
    a, b = _weights(rng, 19, zeros=(2,)), _weights(rng, 13)
    eps = 2.0
    with np.errstate(divide="ignore"):
        ref = pot.sinkhorn(a, b, pot.dist(x, y), reg=eps, method="sinkhorn_log",
                           stopThr=1e-15, numItermax=100000)
    for dtype, tol, rtol in (("float64", 1e-10, 1e-7), ("float32", 1e-4, 2e-3)):
        res = sinkhorn(ns.asarray(x, dtype=dtype), ns.asarray(y, dtype=dtype),
                       ns.asarray(a, dtype=dtype), ns.asarray(b, dtype=dtype), epsilon=eps,
                       tol=tol, max_iter=500, backend=kernel_backend.name)
        assert res.converged
        assert res.f.dtype == getattr(ns, dtype)
        np.testing.assert_allclose(ns.to_numpy(res.plan()), ref, rtol=rtol,
                                   atol=rtol * ref.max())


# --------------------------------------------------------------------------------------------
# honest convergence reporting, scaling, relaxation, float32, small epsilon
# --------------------------------------------------------------------------------------------

def test_reported_error_is_the_plans_error(rng):
    x, y = _clouds(rng)
    a, b = _weights(rng, 40, zeros=(5,)), _weights(rng, 30)
    for relaxation in (1.0, 1.6):
        with pytest.warns(ConvergenceWarning, match="did not converge"):
            res = sinkhorn(x, y, a, b, epsilon=0.05, max_iter=7, relaxation=relaxation)
        assert not res.converged and res.n_iter == 7
        dense = _dense_error(res.plan(), a, b)
        assert res.marginal_error == pytest.approx(dense, rel=1e-9)
        assert res.marginal_error > 1e-6 and res.errors[-1] == res.marginal_error
        assert res.cost == pytest.approx(float((res.plan() * pot.dist(x, y)).sum()), rel=1e-9)


@pytest.mark.parametrize("scaling, relaxation", [(0.5, 1.0), (None, "auto"), (0.5, "auto"),
                                                 (0.8, 1.5)])
def test_scaling_and_relaxation_reach_the_same_plan(rng, scaling, relaxation):
    x, y = _clouds(rng, 60, 50)
    eps = 0.05
    plain = sinkhorn(x, y, epsilon=eps, tol=1e-11, max_iter=20000)
    res = sinkhorn(x, y, epsilon=eps, tol=1e-11, max_iter=20000, scaling=scaling,
                   relaxation=relaxation)
    assert plain.converged and res.converged
    np.testing.assert_allclose(res.plan(), plain.plan(), rtol=1e-6, atol=1e-9 / 3000)
    assert res.epsilons[-1] == eps and res.epsilon == eps
    assert (res.relaxation > 1.0) == (relaxation != 1.0)
    if scaling is not None:
        assert res.epsilons[0] > 100 * eps and np.all(np.diff(res.epsilons) <= 0)
    if relaxation == "auto":
        assert res.n_iter < plain.n_iter / 2


def test_mixed_precision_reaches_the_float64_plan(rng):
    x, y = _clouds(rng, 120, 100)
    ref = sinkhorn(x, y, epsilon=0.05, tol=1e-11, max_iter=20000)
    res = sinkhorn(x, y, epsilon=0.05, tol=1e-11, max_iter=20000, scaling=0.5,
                   relaxation="auto", mixed_precision=True)
    assert res.converged and res.f.dtype == np.float64 and res.marginal_error <= 1e-11
    assert res.errors[0] > 1e-3 and min(res.errors[:-1]) > 1e-11
    np.testing.assert_allclose(res.plan(), ref.plan(), rtol=1e-7, atol=1e-12)
    assert res.cost == pytest.approx(ref.cost, rel=1e-9)


def test_float32_converges_to_float32_tolerance(rng):
    x, y = _clouds(rng, 200, 150)
    ref = sinkhorn(x, y, epsilon=0.1, tol=1e-12, max_iter=20000, scaling=0.5,
                   relaxation="auto")
    res = sinkhorn(x.astype(np.float32), y.astype(np.float32), epsilon=0.1, tol=1e-4,
                   max_iter=5000, scaling=0.5, relaxation="auto")
    assert res.converged and res.f.dtype == np.float32 and res.g.dtype == np.float32
    assert res.cost == pytest.approx(ref.cost, rel=1e-4)
    np.testing.assert_allclose(res.plan(), ref.plan(), rtol=5e-3, atol=5e-3 * ref.plan().max())


def test_small_epsilon_has_no_nan(rng):
    x, y = _clouds(rng, 80, 70)
    scale = float(((np.vstack([x, y]).max(0) - np.vstack([x, y]).min(0)) ** 2).sum())
    for dtype in (np.float64, np.float32):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            res = sinkhorn(x.astype(dtype), y.astype(dtype), epsilon=1e-3 * scale,
                           tol=1e-5, max_iter=3000, scaling=0.5, relaxation="auto")
        assert np.isfinite(res.f).all() and np.isfinite(res.g).all()
        assert np.isfinite(res.cost) and np.isfinite(res.marginal_error)
        if dtype == np.float64:
            assert res.converged
            assert _dense_error(res.plan(), np.full(80, 1 / 80), np.full(70, 1 / 70)) <= 2e-5
            # nearly unregularised: the cost is close to the exact OT cost
            exact = pot.emd2(np.full(80, 1 / 80), np.full(70, 1 / 70), pot.dist(x, y))
            assert exact <= res.cost <= exact * 1.05


def test_plan_operators_match_dense_plan(xp, rng):
    x, y = _clouds(rng, 33, 27, 3)
    a, b = _weights(rng, 33, zeros=(4,)), _weights(rng, 27)
    res = sinkhorn(xp.asarray(x), xp.asarray(y), xp.asarray(a), xp.asarray(b), epsilon=0.4,
                   tol=1e-12, max_iter=5000)
    plan = xp.to_numpy(res.plan())
    v = rng.normal(size=(27, 2))
    u = rng.normal(size=33)
    np.testing.assert_allclose(xp.to_numpy(res.plan_matvec(xp.asarray(v))), plan @ v,
                               rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(xp.to_numpy(res.plan_matvec(xp.asarray(v[:, 0]))),
                               plan @ v[:, 0], rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(xp.to_numpy(res.plan_rmatvec(xp.asarray(u))), plan.T @ u,
                               rtol=1e-10, atol=1e-13)
    bary = xp.to_numpy(res.barycentric_map())
    rows = plan.sum(1)
    keep = rows > 0
    np.testing.assert_allclose(bary[keep], (plan @ y)[keep] / rows[keep, None], rtol=1e-9)


def test_dense_plan_refuses_large_problems(rng):
    x, y = _clouds(rng, 40, 30)
    res = sinkhorn(x, y, epsilon=1.0)
    with pytest.raises(ValueError, match="max_elements.*plan_matvec"):
        res.plan(max_elements=1000)


def test_callback_and_history(rng):
    x, y = _clouds(rng)
    seen = []
    res = sinkhorn(x, y, epsilon=0.5, tol=1e-10, callback=lambda info: seen.append(info))
    assert [s["marginal_error"] for s in seen] == res.errors
    assert res.errors[-1] <= 1e-10 < res.errors[0]
    with pytest.warns(ConvergenceWarning, match="callback"):
        stopped = sinkhorn(x, y, epsilon=0.5, tol=1e-10, callback=lambda info: True)
    assert not stopped.converged and stopped.n_iter == 1


# --------------------------------------------------------------------------------------------
# closed form: entropic OT between Gaussians
# --------------------------------------------------------------------------------------------

def _whiten(z):
    z = z - z.mean(0)
    chol = np.linalg.cholesky(np.cov(z.T, bias=True))
    return z @ np.linalg.inv(chol).T


def gaussian_eot_cross_covariance(s0, s1, epsilon):
    r"""Cross-covariance of the optimal entropic coupling between N(m0,S0) and N(m1,S1) for
    <C,P> + eps KL(P|mu x nu), C = |x-y|^2 (Janati et al. 2020; Mallasto et al. 2021;
    Bunne et al. 2023 with sigma^2 = eps/2):
    C_s = (S0^{1/2} D S0^{-1/2} - sigma^2 I)/2, D = (4 S0^{1/2} S1 S0^{1/2} + sigma^4 I)^{1/2}."""
    sig2 = epsilon / 2.0
    r0 = np.real(sqrtm(s0))
    dmat = np.real(sqrtm(4.0 * r0 @ s1 @ r0 + sig2 ** 2 * np.eye(len(s0))))
    return 0.5 * (r0 @ dmat @ np.linalg.inv(r0) - sig2 * np.eye(len(s0)))


def test_gaussian_closed_form():
    # Pre-registered tolerances (N = 1000 whitened samples per side, eps = 1): over seeds 0-4
    # the relative cost error was <= 9.2e-4 and the cross-covariance error <= 1.8e-3; the
    # bounds below are ~3x those. A factor 2 in epsilon moves the cross-covariance by ~0.1.
    m0, m1 = np.array([0.0, 0.0]), np.array([2.0, -1.0])
    s0 = np.array([[1.0, 0.3], [0.3, 0.5]])
    s1 = np.array([[0.6, -0.2], [-0.2, 1.2]])
    eps, n = 1.0, 1000
    rng = np.random.default_rng(3)
    x = m0 + _whiten(rng.normal(size=(n, 2))) @ np.linalg.cholesky(s0).T
    y = m1 + _whiten(rng.normal(size=(n, 2))) @ np.linalg.cholesky(s1).T
    cross = gaussian_eot_cross_covariance(s0, s1, eps)
    cost = np.sum((m0 - m1) ** 2) + np.trace(s0) + np.trace(s1) - 2 * np.trace(cross)
    res = sinkhorn(x, y, epsilon=eps, tol=1e-8, scaling=0.5, relaxation="auto")
    assert res.converged
    assert res.cost == pytest.approx(cost, rel=3e-3)
    bary = res.barycentric_map()
    emp = (x - x.mean(0)).T @ (bary - y.mean(0)) / n
    np.testing.assert_allclose(emp, cross, atol=6e-3)
    wrong = gaussian_eot_cross_covariance(s0, s1, 2 * eps)
    assert np.abs(emp - wrong).max() > 0.03


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------

def test_bad_weights(rng):
    x, y = _clouds(rng)
    a, b = _weights(rng, 40), _weights(rng, 30)
    neg = a.copy()
    neg[0], neg[1] = -0.01, neg[1] + 0.01
    with pytest.raises(ValueError, match=r"`a` must be non-negative.*sum\(a\).*sum\(b\)"):
        sinkhorn(x, y, neg, b, epsilon=1.0)
    with pytest.raises(ValueError, match=r"sum\(a\) = 2.*sum\(b\) = 1"):
        sinkhorn(x, y, 2 * a, b, epsilon=1.0)
    with pytest.raises(ValueError, match=r"sum\(a\) = 1.*sum\(b\) = 0.5"):
        sinkhorn(x, y, a, b / 2, epsilon=1.0)
    with pytest.raises(ValueError, match=r"`b` must have shape \(30,\)"):
        sinkhorn(x, y, a, b[:-1], epsilon=1.0)
    nan_b = b.copy()
    nan_b[0] = np.nan
    with pytest.raises(ValueError, match="`b` must be finite"):
        sinkhorn(x, y, a, nan_b, epsilon=1.0)


@pytest.mark.parametrize("eps, exc, msg", [(0.0, ValueError, "positive"),
                                           (-1.0, ValueError, "positive"),
                                           (float("nan"), ValueError, "finite"),
                                           (float("inf"), ValueError, "finite"),
                                           ("big", TypeError, "real number")])
def test_bad_epsilon(rng, eps, exc, msg):
    x, y = _clouds(rng)
    with pytest.raises(exc, match=f"`epsilon`.*{msg}"):
        sinkhorn(x, y, epsilon=eps)


def test_bad_points(rng):
    x, y = _clouds(rng)
    with pytest.raises(ValueError, match=r"`x` of shape \(40, 2\).*`y` of shape \(30, 3\)"):
        sinkhorn(x, rng.normal(size=(30, 3)), epsilon=1.0)
    bad = x.copy()
    bad[5, 1] = np.nan
    bad[9, 0] = np.inf
    with pytest.raises(ValueError, match="`x` contains 2 non-finite values"):
        sinkhorn(bad, y, epsilon=1.0)
    with pytest.raises(ValueError, match="`y` must contain at least one point"):
        sinkhorn(x, y[:0], epsilon=1.0)
    with pytest.raises(ValueError, match="`x` must have shape"):
        sinkhorn(x[None, None], y, epsilon=1.0)
    with pytest.raises(ValueError, match=r"batched problems.*\(1, 40, 2\) and \(30, 2\)"):
        sinkhorn(x[None], y, epsilon=1.0)
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="different namespaces"):
        sinkhorn(x, torch.from_numpy(y), epsilon=1.0)


def test_bad_options(rng):
    x, y = _clouds(rng)
    with pytest.raises(ValueError, match="`scaling` must be < 1"):
        sinkhorn(x, y, epsilon=1.0, scaling=1.5)
    with pytest.raises(ValueError, match="`relaxation`"):
        sinkhorn(x, y, epsilon=1.0, relaxation=2.5)
    with pytest.raises(ValueError, match="`max_iter` must be >= 1"):
        sinkhorn(x, y, epsilon=1.0, max_iter=0)
    with pytest.raises(ValueError, match="`tol` must be positive"):
        sinkhorn(x, y, epsilon=1.0, tol=0.0)


# --------------------------------------------------------------------------------------------
# sliced OT
# --------------------------------------------------------------------------------------------

def test_sliced_d1_is_exact_1d(rng):
    x, y = rng.normal(size=300), rng.normal(1.0, 2.0, size=200)
    assert sliced_wasserstein(x, y, p=1, n_projections=4, rng=0) == pytest.approx(
        scipy.stats.wasserstein_distance(x, y), rel=1e-12)
    # equal sizes: sort and subtract
    z = rng.normal(3.0, 0.5, size=300)
    w2 = np.sqrt(np.mean((np.sort(x) - np.sort(z)) ** 2))
    assert sliced_wasserstein(x, z, p=2, rng=1) == pytest.approx(w2, rel=1e-12)
    assert sliced_wasserstein(x, y, p=2, rng=1) == pytest.approx(
        np.sqrt(pot.wasserstein_1d(x, y, p=2)), rel=1e-12)


def test_sliced_matches_pot_same_projections(xp, rng):
    x, y = rng.normal(size=(120, 5)), rng.normal(1.0, 2.0, size=(90, 5))
    a, b = _weights(rng, 120), _weights(rng, 90, zeros=(3,))
    theta = rng.normal(size=(17, 5))
    theta /= np.linalg.norm(theta, axis=1, keepdims=True)
    for p in (1, 2, 3):
        for wa, wb in ((None, None), (a, b)):
            ours = sliced_wasserstein(xp.asarray(x), xp.asarray(y), p=p,
                                      projections=xp.asarray(theta),
                                      a=None if wa is None else xp.asarray(wa),
                                      b=None if wb is None else xp.asarray(wb))
            ref = pot.sliced_wasserstein_distance(x, y, wa, wb, p=p, projections=theta.T)
            assert ours == pytest.approx(float(ref), rel=1e-10)
    # equal sizes, the sort-and-subtract path
    ours = sliced_wasserstein(xp.asarray(x[:90]), xp.asarray(y), projections=xp.asarray(theta))
    ref = pot.sliced_wasserstein_distance(x[:90], y, projections=theta.T)
    assert ours == pytest.approx(float(ref), rel=1e-10)


def test_sliced_directions_are_fresh_and_reproducible(rng):
    x, y = rng.normal(size=(100, 8)), rng.normal(0.5, 1.0, size=(100, 8))
    assert sliced_wasserstein(x, y, n_projections=16) != sliced_wasserstein(
        x, y, n_projections=16)
    assert sliced_wasserstein(x, y, rng=5) == sliced_wasserstein(x, y, rng=agr.Key(5))
    gen = np.random.default_rng(0)
    assert sliced_wasserstein(x, y, rng=gen) != sliced_wasserstein(x, y, rng=gen)
    # the Philox directions are those of arraygen.random.normal, normalised
    z = agr.normal(agr.Key(7), (16, 8))
    theta = z / np.linalg.norm(z, axis=1, keepdims=True)
    assert sliced_wasserstein(x, y, n_projections=16, rng=7) == pytest.approx(
        float(pot.sliced_wasserstein_distance(x, y, projections=theta.T)), rel=1e-12)


def test_sliced_bad_input(rng):
    x, y = rng.normal(size=(10, 3)), rng.normal(size=(12, 3))
    with pytest.raises(ValueError, match="`p` must be >= 1"):
        sliced_wasserstein(x, y, p=0.5)
    with pytest.raises(ValueError, match="`n_projections` must be >= 1"):
        sliced_wasserstein(x, y, n_projections=0)
    with pytest.raises(ValueError, match=r"`x` of shape \(10, 3\).*`y` of shape \(12, 2\)"):
        sliced_wasserstein(x, y[:, :2])
    with pytest.raises(ValueError, match=r"`projections` must have shape \(L, 3\)"):
        sliced_wasserstein(x, y, projections=np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"sum\(a\) = 0.5"):
        sliced_wasserstein(x, y, a=np.full(10, 0.05))


def test_sliced_map_full_step_on_translation(xp, rng):
    # y is a translated copy of x: every 1-D matching is the translation's projection, so one
    # step over whole orthonormal bases is exactly the translation (the seed moved 1/d of it)
    x = rng.normal(size=(64, 4))
    shift = np.array([1.0, -2.0, 0.5, 3.0])
    y = (x + shift)[rng.permutation(64)]
    for n_proj in (4, 12):
        out = xp.to_numpy(sliced_ot_map(xp.asarray(x), xp.asarray(y), n_projections=n_proj,
                                        rng=1))
        np.testing.assert_allclose(out, x + shift, atol=1e-10)
    half = sliced_ot_map(x, y, n_projections=8, rng=2, step=0.5)
    np.testing.assert_allclose(half, x + 0.5 * shift, atol=1e-10)


def test_sliced_map_iterations_transport_the_distribution(rng):
    x = rng.normal(size=(2000, 3))
    y = rng.normal(size=(1500, 3)) @ np.diag([2.0, 0.5, 1.0]) + np.array([3.0, 0.0, -1.0])
    out = sliced_ot_map(x, y, n_projections=6, rng=3, n_iter=40)
    assert out.shape == x.shape and out.dtype == x.dtype
    np.testing.assert_allclose(out.mean(0), y.mean(0), atol=0.02)
    np.testing.assert_allclose(np.cov(out.T), np.cov(y.T), atol=0.08)
    before = sliced_wasserstein(x, y, rng=9)
    assert sliced_wasserstein(out, y, rng=9) < 0.1 * before


# --------------------------------------------------------------------------------------------
# issue 13: one boundary, no validation in the loop, honest flags, clear errors
# --------------------------------------------------------------------------------------------

@pytest.mark.timeout(20)
def test_overflowing_cost_scale_raises_at_once(rng):
    # used to loop forever in the epsilon schedule (infinite cost scale), memory growing
    x, y = 1e160 * rng.normal(size=(30, 2)), rng.normal(size=(20, 2))
    with pytest.raises(ValueError, match=r"`x` and `y` .*overflows float64"):
        sinkhorn(x, y, epsilon=0.5, scaling=0.5)
    with pytest.raises(ValueError, match=r"`x` and `y`.*out of range for float32"):
        sinkhorn((1e19 * x / 1e160).astype(np.float32), y.astype(np.float32), epsilon=0.5)


def test_errors_name_the_users_argument(rng):
    x, y = _clouds(rng)
    with pytest.raises(ValueError, match=r"`epsilon` is too small"):
        sinkhorn(x, y, epsilon=1e-310)
    with pytest.raises(ValueError, match=r"`epsilon` \(cost scale / epsilon\).*float32"):
        sinkhorn(x.astype(np.float32), y.astype(np.float32), epsilon=1e-38)
    with pytest.raises(TypeError, match="`x` must be an array"):
        sinkhorn("points", y, epsilon=1.0)
    with pytest.raises(TypeError, match="`warm_start` must be a pair"):
        sinkhorn(x, y, epsilon=1.0, warm_start=np.zeros(40))
    with pytest.raises(ValueError, match=r"`warm_start\[0\]` must have shape \(40,\)"):
        sinkhorn(x, y, epsilon=1.0, warm_start=(np.zeros(39), np.zeros(30)))


def test_lists_are_read_as_numpy(rng):
    x, y = _clouds(rng, 6, 5)
    ref = sinkhorn(x, y, epsilon=0.5)
    res = sinkhorn(x.tolist(), y.tolist(), epsilon=0.5)
    np.testing.assert_allclose(res.f, ref.f, rtol=1e-12)
    assert sliced_wasserstein(x.tolist(), y.tolist(), rng=0) == sliced_wasserstein(x, y, rng=0)


def test_no_validation_inside_the_loop(rng, monkeypatch):
    # each check used to validate the arrays again (805 all_finite calls in 200 iterations)
    import arraygen._array_api as aa

    calls = []
    real = aa.all_finite
    monkeypatch.setattr(aa, "all_finite", lambda xp, a: calls.append(1) or real(xp, a))
    x, y = rng.random((50, 2)), rng.random((40, 2))
    counts = {}
    for backend in (None, "array_api"):
        for n_iter in (20, 200):
            calls.clear()
            with pytest.warns(ConvergenceWarning):
                res = sinkhorn(x, y, epsilon=1e-3, max_iter=n_iter, tol=1e-15, backend=backend)
            assert res.n_iter == n_iter
            counts[backend, n_iter] = len(calls)
    assert counts[None, 20] == counts[None, 200] <= 10
    assert counts["array_api", 20] == counts["array_api", 200] <= 10


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("relaxation", [1.0, 1.5, "auto"])
@pytest.mark.parametrize("tol", [None, 1e-5, 1e-7])
def test_converged_and_error_are_honest(rng, dtype, relaxation, tol):
    # float32 plain Sinkhorn used to count only the rows: converged=True above tol
    x, y = rng.random((120, 2)), rng.random((100, 2))
    a, b = _weights(rng, 120), _weights(rng, 100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = sinkhorn(x.astype(dtype), y.astype(dtype), a.astype(dtype), b.astype(dtype),
                       epsilon=0.01, relaxation=relaxation, tol=tol, max_iter=3000)
    plan = res.plan().astype(np.float64)
    err = _dense_error(plan, a, b)
    slack = 3e-7 if dtype == "float32" else 1e-12
    assert abs(err - res.marginal_error) <= 0.02 * res.marginal_error + slack
    limit = tol if tol is not None else (1e-4 if dtype == "float32" else 1e-6)
    assert res.converged == (res.marginal_error <= limit)
    if res.converged:
        assert err <= limit + slack
    if dtype == "float64" or tol != 1e-7:
        assert res.converged


def test_float32_default_call_converges_honestly(rng):
    # float32 with tol=1e-6 used to run to max_iter; the default tol follows the dtype and a
    # stalled error ends the run early
    x, y = rng.random((400, 2)), rng.random((300, 2))
    res = sinkhorn(x.astype(np.float32), y.astype(np.float32), epsilon=0.005)
    plan = res.plan().astype(np.float64)
    assert res.converged and _dense_error(plan, np.full(400, 1 / 400),
                                          np.full(300, 1 / 300)) <= 1e-4 + 1e-7
    with pytest.warns(ConvergenceWarning, match="stopped falling|rounding floor"):
        hard = sinkhorn(x.astype(np.float32), y.astype(np.float32), epsilon=0.005, tol=1e-9,
                        max_iter=100000)
    assert not hard.converged and hard.n_iter < 3000


def test_torch_autograd_inputs_do_not_warn():
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(30, 2, dtype=torch.float64, generator=gen, requires_grad=True)
    y = torch.randn(20, 2, dtype=torch.float64, generator=gen)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = sinkhorn(x, y, epsilon=0.5)
        sliced_wasserstein(x, y, rng=0)
        res.cost.backward()
    assert x.grad is not None and x.grad.shape == x.shape


def test_cost_gradient_is_the_envelope_gradient():
    # d OT_eps / dx_i = 2 sum_j P_ij (x_i - y_j), also as finite differences of the dual value
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(25, 2)), rng.normal(1.0, 0.5, size=(20, 2))
    a = _weights(rng, 25)
    xt = torch.tensor(x, requires_grad=True)
    at = torch.tensor(a, requires_grad=True)
    res = sinkhorn(xt, torch.tensor(y), at, epsilon=0.3, tol=1e-13, max_iter=20000)
    res.dual_value.backward()
    plan = res.plan().numpy()
    expected = 2.0 * (plan.sum(1)[:, None] * x - plan @ y)
    np.testing.assert_allclose(xt.grad.numpy(), expected, rtol=1e-8, atol=1e-12)
    h, k = 1e-5, 3
    fd = []
    for s in (1.0, -1.0):
        xs = x.copy()
        xs[k, 0] += s * h
        fd.append(sinkhorn(xs, y, a, epsilon=0.3, tol=1e-13, max_iter=20000).dual_value)
    assert xt.grad[k, 0].item() == pytest.approx((fd[0] - fd[1]) / (2 * h), rel=1e-5)
    # weights: the gradient is f up to a constant (the sum of a is fixed)
    da = at.grad.numpy() - res.f.numpy()
    np.testing.assert_allclose(da, da[0], atol=1e-10)
    assert res.cost.item() == pytest.approx(float((plan * pot.dist(x, y)).sum()), rel=1e-10)


def test_dense_and_tiled_paths_agree(rng):
    x, y = _clouds(rng, 70, 50)
    dense = sinkhorn(x, y, epsilon=0.05, tol=1e-10, relaxation="auto")
    tiled = sinkhorn(x, y, epsilon=0.05, tol=1e-10, relaxation="auto", backend="array_api")
    assert dense.converged and tiled.converged
    np.testing.assert_allclose(dense.plan(), tiled.plan(), rtol=1e-6, atol=1e-12)
    assert dense.cost == pytest.approx(tiled.cost, rel=1e-8)


# --------------------------------------------------------------------------------------------
# issue 15: batched problems, warm starts, several right-hand sides
# --------------------------------------------------------------------------------------------

def test_batched_problems_match_one_by_one(xp, rng):
    xs, ys = rng.normal(size=(3, 30, 2)), rng.normal(1.0, 0.5, size=(3, 25, 2))
    a = np.stack([_weights(rng, 30) for _ in range(3)])
    b = np.stack([_weights(rng, 25, zeros=(k,)) for k in range(3)])
    res = sinkhorn(xp.asarray(xs), xp.asarray(ys), xp.asarray(a), xp.asarray(b), epsilon=0.2,
                   tol=1e-11)
    assert len(res) == 3 and tuple(res.cost.shape) == (3,) and tuple(res.f.shape) == (3, 30)
    assert res.converged
    for k in range(3):
        cmat = pot.dist(xs[k], ys[k])
        with np.errstate(divide="ignore"):
            ref = pot.sinkhorn(a[k], b[k], cmat, reg=0.2, method="sinkhorn_log",
                               stopThr=1e-14, numItermax=100000)
        np.testing.assert_allclose(xp.to_numpy(res[k].plan()), ref, rtol=1e-7,
                                   atol=1e-10 * ref.max())
        assert float(res.cost[k]) == pytest.approx(float((ref * cmat).sum()), rel=1e-8)
    v = rng.normal(size=(3, 25, 4))
    out = xp.to_numpy(res.plan_matvec(xp.asarray(v)))
    np.testing.assert_allclose(out[1], xp.to_numpy(res[1].plan()) @ v[1], rtol=1e-10,
                               atol=1e-14)
    with pytest.raises(ValueError, match=r"`a` must have shape \(3, 30\)"):
        sinkhorn(xp.asarray(xs), xp.asarray(ys), xp.asarray(a[:2]), epsilon=0.2)


def test_warm_start_reaches_the_plan_faster(rng):
    x, y = _clouds(rng, 60, 50)
    ref = sinkhorn(x, y, epsilon=0.05, tol=1e-10)
    coarse = sinkhorn(x, y, epsilon=0.05, tol=1e-4)
    warm = sinkhorn(x, y, epsilon=0.05, tol=1e-10, warm_start=(coarse.f, coarse.g))
    assert warm.converged and warm.n_iter <= ref.n_iter - coarse.n_iter + 5
    np.testing.assert_allclose(warm.plan(), ref.plan(), rtol=1e-6, atol=1e-12)
    again = sinkhorn(x, y, epsilon=0.05, tol=1e-10, warm_start=(ref.f, ref.g))
    assert again.converged and again.n_iter <= 2


def test_plan_matvec_several_right_hand_sides(xp, rng):
    x, y = _clouds(rng, 30, 20)
    res = sinkhorn(xp.asarray(x), xp.asarray(y), epsilon=0.3, tol=1e-10)
    plan = xp.to_numpy(res.plan())
    v, u = rng.normal(size=(20, 5)), rng.normal(size=(30, 3))
    np.testing.assert_allclose(xp.to_numpy(res.plan_matvec(xp.asarray(v))), plan @ v,
                               rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(xp.to_numpy(res.plan_rmatvec(xp.asarray(u))), plan.T @ u,
                               rtol=1e-9, atol=1e-13)
    with pytest.raises(ValueError, match=r"`v` must have shape \(20,\) or \(20, p\)"):
        res.plan_matvec(xp.asarray(v[:5]))
