"""DiffusionMap against pyDiffMap (installed peer) with the same full kernel (k = N).

Conventions (see arraygen.dmap): pyDiffMap's kernel is exp(-|x-y|^2 / (4 e rho_x rho_y)), so its
epsilon is ``epsilon_ / 4``; its eigenvalues are those of the generator, (lambda - 1) / e, in
descending order without lambda_0; its eigenvectors have unit 2-norm and any sign; its Nystrom
``transform`` does not divide by lambda.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from arraygen import _array_api as aa
from arraygen.datasets import swiss_roll
from arraygen.dmap import DiffusionMap

pdm = pytest.importorskip("pydiffmap.diffusion_map")
pkernel = pytest.importorskip("pydiffmap.kernel")


def _np(a):
    return np.asarray(aa.to_numpy(a), dtype=np.float64)


def _data(n=180, seed=1):
    x, _ = swiss_roll(n, noise=0.05, rng=seed)
    return x / x.std()


def _peer(x, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pdm.DiffusionMap.from_sklearn(k=x.shape[0], **kw).fit(x)


def _compare_spectrum(peer, ours, *, atol_lam=1e-12, atol_vec=1e-8):
    e = peer.epsilon_fitted
    assert _np(ours.epsilon_) == pytest.approx(4.0 * e, rel=1e-14)
    np.testing.assert_allclose(1.0 + e * peer.evals, _np(ours.eigenvalues_)[1:], rtol=0,
                               atol=atol_lam)
    psi = _np(ours.eigenvectors_)[:, 1:]
    psi = psi / np.linalg.norm(psi, axis=0)
    evecs = peer.evecs * np.sign(np.sum(peer.evecs * psi, axis=0))
    np.testing.assert_allclose(evecs, psi, rtol=0, atol=atol_vec)
    # pyDiffMap's embedding: unit-norm eigenvectors times sqrt(-1 / generator eigenvalue)
    emb = psi * np.sqrt(-1.0 / peer.evals)
    np.testing.assert_allclose(np.abs(peer.dmap), np.abs(emb), rtol=0, atol=atol_vec * 10)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_fixed_epsilon_matches_pydiffmap(alpha):
    x = _data()
    peer = _peer(x, n_evecs=4, epsilon=0.05, alpha=alpha)
    ours = DiffusionMap.from_pydiffmap(n_evecs=4, epsilon=0.05, alpha=alpha, rng=0,
                                       tol=1e-12).fit(x)
    assert ours.epsilon == pytest.approx(0.2)
    _compare_spectrum(peer, ours)
    np.testing.assert_allclose(_np(ours.q_), peer.q, rtol=1e-12)
    np.testing.assert_allclose(_np(ours.weights_), peer.right_norm_vec, rtol=1e-12)


@pytest.mark.parametrize("rule", ["bgh", "bgh_generous"])
def test_bgh_rule_matches_pydiffmap(rule):
    x = _data(seed=3)
    peer = _peer(x, n_evecs=3, epsilon=rule, alpha=0.5)
    ours = DiffusionMap(n_components=3, epsilon=rule, alpha=0.5, rng=0, tol=1e-12).fit(x)
    assert ours.intrinsic_dim_ == peer.local_kernel.d == 2
    _compare_spectrum(peer, ours)
    # independent check of the rule itself: the BGH slope maximum over powers of two
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1).ravel()
    grid = 2.0 ** np.arange(-40.0, 41.0)
    from scipy.special import logsumexp

    log_t = np.array([logsumexp(-d2 / (4 * e)) for e in grid])
    slope = np.diff(log_t) / np.diff(np.log(grid))
    expected = grid[np.argmax(slope)] * (2.0 if rule == "bgh_generous" else 1.0)
    assert ours.epsilon_ == pytest.approx(4.0 * expected, rel=1e-14)
    # kernel density estimate with the estimated dimension: normalised Gaussian KDE
    k = np.exp(-((x[:, None, :] - x[None, :, :]) ** 2).sum(-1) / ours.epsilon_)
    np.testing.assert_allclose(ours.kernel_density_,
                               k.mean(1) / (np.pi * ours.epsilon_) ** (2 / 2), rtol=1e-12)


@pytest.mark.parametrize("bandwidth_type,epsilon", [("-1/(d+2)", "bgh"), (-0.25, 0.2),
                                                     ("-1/(2*d)", "bgh")])
def test_variable_bandwidth_matches_pydiffmap(bandwidth_type, epsilon):
    x = _data(seed=5)
    peer = _peer(x, n_evecs=4, epsilon=epsilon, alpha=0.5, bandwidth_type=bandwidth_type)
    ours = DiffusionMap.from_pydiffmap(n_evecs=4, epsilon=epsilon, alpha=0.5,
                                       bandwidth_type=bandwidth_type, rng=0, tol=1e-12).fit(x)
    np.testing.assert_allclose(_np(ours.bandwidths_), peer.local_kernel.bandwidths, rtol=1e-12)
    np.testing.assert_allclose(_np(ours.q_), peer.q, rtol=1e-12)
    kde = peer.local_kernel.kde
    assert ours.intrinsic_dim_ == kde.d
    np.testing.assert_allclose(_np(ours.kernel_density_), kde.compute(x), rtol=1e-12)
    _compare_spectrum(peer, ours)
    # out of sample: pyDiffMap's Nystrom is P_yx psi (no 1/lambda): proportional columns
    y = x[:9] + 0.02
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = peer.transform(y)
    mine = _np(ours.transform(y))
    ratio = mine / theirs
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio[:1], ratio.shape), rtol=1e-8)
    # and the fitted points reproduce the embedding (Nystrom with the points' own rho)
    np.testing.assert_allclose(_np(ours.transform(x)), _np(ours.embedding_), atol=1e-7)


def test_variable_bandwidth_against_dense_formula(xp):
    """Berry-Harlim kernel from the bandwidths, checked densely on every namespace."""
    x = _data(120, seed=7)
    ours = DiffusionMap(n_components=3, epsilon=0.5, bandwidth_type=-0.3, rng=0,
                        dense_kernel_mb=0).fit(xp.asarray(x))
    rho = _np(ours.bandwidths_)
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    k = np.exp(-d2 / (0.5 * np.outer(rho, rho)))
    q = k.sum(1) / rho ** 2
    w = q ** -0.5
    ka = w[:, None] * k * w[None, :]
    da = ka.sum(1)
    lam = np.linalg.eigvalsh(ka / np.sqrt(np.outer(da, da)))[::-1][:4]
    np.testing.assert_allclose(_np(ours.eigenvalues_), lam, atol=1e-9)
    np.testing.assert_allclose(_np(ours.q_), q, rtol=1e-10)
    # rho = q0^beta with pyDiffMap's NNKDE (8 neighbours, self included)
    near = np.sort(d2, axis=1)[:, :8].sum(1) / 7.0
    assert np.all(rho > 0) and np.all(np.isfinite(rho))
    np.testing.assert_allclose(_np(ours.kernel_density_) ** -0.3, rho, rtol=1e-12)
    assert np.corrcoef(np.log(rho), np.log(near))[0, 1] > 0.5


def test_callable_bandwidth():
    x = _data(100, seed=9)

    def bw(points):
        return 0.5 + 0.1 * np.linalg.norm(points, axis=1)

    ours = DiffusionMap(n_components=2, epsilon=0.3, bandwidth_type=bw, rng=0,
                        tol=1e-12).fit(x)
    np.testing.assert_allclose(ours.bandwidths_, bw(x), rtol=1e-14)
    np.testing.assert_allclose(ours.transform(x), ours.embedding_, atol=1e-8)
    with pytest.raises(ValueError, match="positive"):
        DiffusionMap(n_components=2, epsilon=0.3, bandwidth_type=lambda p: -bw(p)).fit(x)


def test_from_pydiffmap_conversions():
    dm = DiffusionMap.from_pydiffmap(n_evecs=3, epsilon=0.25, alpha=1.0, rng=0)
    assert dm.n_components == 3 and dm.epsilon == 1.0 and dm.alpha == 1.0
    assert DiffusionMap.from_pydiffmap(epsilon="bgh").epsilon == "bgh"
    with pytest.raises(ValueError, match="`epsilon` must be positive"):
        DiffusionMap.from_pydiffmap(epsilon=-1.0)


def test_variable_bandwidth_with_duplicates():
    """Ten copies of one point (pyDiffMap itself stops with an ARPACK error here): the
    nearest-neighbour bandwidths of the fitted points use the nonzero distances only, as
    pyDiffMap's NNKDE, so nothing is zero, inf or NaN and the spectrum is the dense one."""
    x = _data(60, seed=11)
    x = np.concatenate([x, np.repeat(x[:1], 9, axis=0)])
    dm = DiffusionMap(n_components=3, epsilon=0.5, bandwidth_type=-0.25, rng=0).fit(x)
    assert np.all(np.isfinite(dm.embedding_)) and dm.converged_
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    pos = np.where(d2 > 0, d2, np.inf)
    rho0 = np.sqrt(np.sort(pos, axis=1)[:, :7].mean(1))
    np.testing.assert_allclose(dm._vbw.rho0, rho0, rtol=1e-12)
    rho = dm.bandwidths_
    k = np.exp(-d2 / (0.5 * np.outer(rho, rho)))
    w = (k.sum(1) / rho ** 2) ** -0.5
    ka = w[:, None] * k * w[None, :]
    da = ka.sum(1)
    lam = np.linalg.eigvalsh(ka / np.sqrt(np.outer(da, da)))[::-1][:4]
    np.testing.assert_allclose(dm.eigenvalues_, lam, atol=1e-9)
