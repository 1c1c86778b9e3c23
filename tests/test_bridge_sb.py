"""Static Schrödinger bridge from entropic OT: marginals against the Gaussian closed form,
coupling samples against the dense plan, drift against the plan's barycentric map."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import sqrtm

from arraygen.ot import SchrodingerBridge, sinkhorn

M0, M1 = np.array([0.0, 0.0]), np.array([2.0, -1.0])
S0 = np.array([[1.0, 0.3], [0.3, 0.5]])
S1 = np.array([[0.6, -0.2], [-0.2, 1.2]])


def _whiten(z):
    z = z - z.mean(0)
    chol = np.linalg.cholesky(np.cov(z.T, bias=True))
    return z @ np.linalg.inv(chol).T


def gaussian_sb_marginal(t, sigma):
    r"""Mean and covariance at time t of the Schrödinger bridge between N(M0, S0) and
    N(M1, S1) for the reference sigma W (Bunne et al. 2023, "The Schrödinger bridge between
    Gaussian measures has a closed form"):
    Sigma_t = (1-t)^2 S0 + t^2 S1 + t(1-t)(C + C^T) + sigma^2 t(1-t) I,
    C = (S0^{1/2} D S0^{-1/2} - sigma^2 I)/2, D = (4 S0^{1/2} S1 S0^{1/2} + sigma^4 I)^{1/2}."""
    r0 = np.real(sqrtm(S0))
    dmat = np.real(sqrtm(4.0 * r0 @ S1 @ r0 + sigma ** 4 * np.eye(2)))
    cross = 0.5 * (r0 @ dmat @ np.linalg.inv(r0) - sigma ** 2 * np.eye(2))
    mean = (1 - t) * M0 + t * M1
    cov = ((1 - t) ** 2 * S0 + t ** 2 * S1 + t * (1 - t) * (cross + cross.T)
           + sigma ** 2 * t * (1 - t) * np.eye(2))
    return mean, cov


def _gaussian_clouds(n, seed):
    rng = np.random.default_rng(seed)
    x0 = M0 + _whiten(rng.normal(size=(n, 2))) @ np.linalg.cholesky(S0).T
    x1 = M1 + _whiten(rng.normal(size=(n, 2))) @ np.linalg.cholesky(S1).T
    return x0, x1


def test_bridge_marginals_match_gaussian_closed_form():
    # Pre-registered tolerance: with n paths the sample mean has standard error
    # sqrt(Sigma_ii / n) and the sample covariance sqrt((Sigma_ii Sigma_jj + Sigma_ij^2) / n);
    # the empirical endpoint clouds (whitened, N = 1500) and Euler (50 steps) add much less
    # (over seeds 0-2 the largest deviation was 2.4 standard errors). Bound: 5 standard errors.
    sigma, n, steps = 0.7, 1500, 50
    x0, x1 = _gaussian_clouds(n, seed=11)
    sb = SchrodingerBridge(x0, x1, sigma)
    assert sb.converged and sb.epsilon == pytest.approx(2 * sigma ** 2)
    paths = sb.sample_paths(x0, steps, rng=4)
    assert paths.shape == (steps + 1, n, 2) and paths.dtype == np.float64
    np.testing.assert_array_equal(paths[0], x0)
    for t in (0.25, 0.5, 0.75):
        pts = paths[round(t * steps)]
        mean, cov = gaussian_sb_marginal(t, sigma)
        se_mean = np.sqrt(np.diag(cov) / n)
        se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov ** 2) / n)
        assert np.all(np.abs(pts.mean(0) - mean) <= 5 * se_mean), t
        assert np.all(np.abs(np.cov(pts.T) - cov) <= 5 * se_cov), t
        # a wrong bridge (no coupling: independent endpoints) is far outside the band
        indep = (1 - t) ** 2 * S0 + t ** 2 * S1 + sigma ** 2 * t * (1 - t) * np.eye(2)
        assert np.any(np.abs(np.cov(pts.T) - indep) > 5 * se_cov), t


def test_drift_at_time_zero_is_the_plans_barycentric_displacement():
    x0, x1 = _gaussian_clouds(300, seed=2)
    sb = SchrodingerBridge(x0, x1, 0.5, tol=1e-10)
    res = sinkhorn(x0, x1, epsilon=0.5, tol=1e-10)
    np.testing.assert_allclose(sb.result.plan(), res.plan(), rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(sb.drift(x0, 0.0), res.barycentric_map() - x0, rtol=1e-8,
                               atol=1e-10)
    # at t = 1/2 the posterior mean uses the Brownian-bridge variance sigma^2 (1 - t):
    # weights b_j exp(g_j/eps - |x - x1_j|^2 / (2 sigma^2 (1 - t)))
    x = x0[:7] * 0.5 + 0.5
    g = res.g
    logits = np.log(1 / 300) + g / res.epsilon - ((x[:, None, :] - x1[None]) ** 2).sum(-1) / (
        2 * 0.5 ** 2 * 0.5)
    w = np.exp(logits - logits.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    np.testing.assert_allclose(sb.drift(x, 0.5), (w @ x1 - x) / 0.5, rtol=1e-8, atol=1e-10)


def test_sample_coupling_frequencies_match_the_plan():
    rng = np.random.default_rng(5)
    x0, x1 = rng.normal(size=(6, 2)), rng.normal(1.0, 1.0, size=(5, 2))
    a = np.array([0.3, 0.0, 0.2, 0.1, 0.25, 0.15])
    sb = SchrodingerBridge(x0, x1, 0.8, a=a, tol=1e-12)
    plan = sb.result.plan()
    n = 40000
    i, j = sb.sample_coupling(n, rng=7, max_elements=64)  # blocks of 12 rows
    assert i.shape == (n,) and j.shape == (n,) and i.dtype == np.int64
    assert not np.any(i == 1)  # zero-mass source point
    counts = np.zeros_like(plan)
    np.add.at(counts, (i, j), 1)
    expected = n * plan
    keep = expected > 0
    chi2 = float((((counts - expected) ** 2)[keep] / expected[keep]).sum())
    dof = int(keep.sum()) - 1
    # chi-square with ~24 degrees of freedom: mean 24, sd ~7; 3x the mean is p < 1e-6
    assert chi2 < 3 * dof, chi2
    i2, j2 = sb.sample_coupling(n, rng=7)
    np.testing.assert_array_equal(i, i2)
    np.testing.assert_array_equal(j, j2)


def test_sample_paths_reproducible_and_namespaces(xp):
    x0, x1 = _gaussian_clouds(40, seed=3)
    sb = SchrodingerBridge(xp.asarray(x0), xp.asarray(x1), 0.6)
    p1 = sb.sample_paths(xp.asarray(x0[:9]), 6, rng=3)
    p2 = sb.sample_paths(xp.asarray(x0[:9]), 6, rng=3)
    assert tuple(p1.shape) == (7, 9, 2)
    np.testing.assert_array_equal(xp.to_numpy(p1), xp.to_numpy(p2))
    ref = SchrodingerBridge(x0, x1, 0.6).sample_paths(x0[:9], 6, rng=3)
    np.testing.assert_allclose(xp.to_numpy(p1), ref, rtol=1e-9, atol=1e-9)


def test_bridge_bad_input():
    x0, x1 = _gaussian_clouds(20, seed=4)
    with pytest.raises(ValueError, match="`sigma` must be positive"):
        SchrodingerBridge(x0, x1, 0.0)
    with pytest.raises(ValueError, match="`sigma` must be finite"):
        SchrodingerBridge(x0, x1, float("nan"))
    sb = SchrodingerBridge(x0, x1, 0.5)
    with pytest.raises(ValueError, match=r"`t` must lie in \[0, 1\)"):
        sb.drift(x0, 1.0)
    with pytest.raises(ValueError, match=r"`x` must have shape \(n, 2\)"):
        sb.drift(x0[:, :1], 0.2)
    with pytest.raises(ValueError, match="`n_steps` must be >= 1"):
        sb.sample_paths(x0, 0)
    with pytest.raises(ValueError, match=r"`x0` of shape \(20, 2\).*`x1` of shape \(20, 3\)"):
        SchrodingerBridge(x0, np.ones((20, 3)), 0.5)


@pytest.mark.timeout(20)
def test_bridge_overflowing_clouds_and_tiny_sigma_raise_at_once():
    # used to loop forever (infinite cost scale in the epsilon schedule), and sigma = 1e-160
    # spoke of `log_weights`
    rng = np.random.default_rng(5)
    x0, x1 = rng.normal(size=(30, 2)), rng.normal(size=(20, 2))
    with pytest.raises(ValueError, match=r"`x0` and `x1` .*overflows float64"):
        SchrodingerBridge(1e160 * x0, x1, 0.5)
    for tiny in (1e-160, 1e-170):  # epsilon = 2 sigma^2 subnormal, then 0
        with pytest.raises(ValueError, match=r"`sigma` is too small"):
            SchrodingerBridge(x0, x1, tiny)
    with pytest.raises(ValueError, match=r"`sigma` is out of range|`sigma`.*overflow"):
        SchrodingerBridge(x0, x1, 1e200)
    # lists are read as NumPy arrays
    sb = SchrodingerBridge(x0.tolist(), x1.tolist(), 0.7)
    ref = SchrodingerBridge(x0, x1, 0.7)
    np.testing.assert_allclose(sb.drift(x0[:3].tolist(), 0.3), ref.drift(x0[:3], 0.3),
                               rtol=1e-12)


def test_bridge_module_holds_the_bridge_and_reexports_the_score():
    import arraygen.bridge
    import arraygen.ot
    import arraygen.scores

    assert arraygen.bridge.EmpiricalScore is arraygen.scores.EmpiricalScore
    assert arraygen.ot.SchrodingerBridge is arraygen.bridge.SchrodingerBridge
    assert SchrodingerBridge.__module__ == "arraygen.bridge"


def test_bridge_result_is_honest_in_float32():
    x0, x1 = _gaussian_clouds(60, seed=6)
    sb = SchrodingerBridge(x0.astype(np.float32), x1.astype(np.float32), 0.4)
    plan = sb.result.plan().astype(np.float64)
    err = np.abs(plan.sum(1) - 1 / 60).sum() + np.abs(plan.sum(0) - 1 / 60).sum()
    assert sb.converged and err <= 1e-4 + 3e-7
    assert abs(err - sb.result.marginal_error) <= 0.02 * err + 3e-7
