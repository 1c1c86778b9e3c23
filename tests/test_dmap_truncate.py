"""DiffusionMap(truncate=...): the block-sparse kernel (issue 18).

Oracles: (1) the float64 dense eigendecomposition of the MASKED kernel built here from the
fitted pair list (the truncated fit must solve exactly that operator, to round-off); (2) the
exact fit, within the tolerance row ``tol(dtype, "truncated", bound=mass_bound)``; (3) pyDiffMap
with the full kernel (k = N), within the same row. Data: points in a 2 x 1 rectangle with a
bandwidth small against it, so most cluster pairs are skipped (fraction asserted < 1).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from arraygen import _array_api as aa
from arraygen.dmap import DiffusionMap
from arraygen.testing import tol


def _np(a):
    return np.asarray(aa.to_numpy(a), dtype=np.float64)


@pytest.fixture(scope="module")
def rect():
    gen = np.random.default_rng(0)
    return gen.random((700, 2)) * np.array([2.0, 1.0])


def _fit(x, **kw):
    opts = {"n_components": 5, "rng": 0, "tol": 1e-10}
    opts.update(kw)
    return DiffusionMap(**opts).fit(x)


def _masked_kernel(dm, mask=True):
    """Dense float64 kernel of the fit's data with the skipped cluster pairs set to 0 (user
    order), from the fitted clusters and pair list (``mask=False``: the full kernel)."""
    kern = dm._kern
    cl, pairs = kern.clusters, kern.pairs
    n, block = cl.n, cl.block
    keep = np.zeros((n, n), dtype=bool)
    offsets, cols = _np(pairs.offsets).astype(np.int64), _np(pairs.cols).astype(np.int64)
    for a in range(cl.K):
        for b in cols[offsets[a]:offsets[a + 1]]:
            keep[a * block:(a + 1) * block, b * block:(b + 1) * block] = True
    inv = _np(cl.inverse).astype(np.int64)
    keep = keep[np.ix_(inv, inv)]
    x = _np(dm.X_)
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    if dm.epsilon == "knn":
        s = np.sqrt(_np(dm.epsilon_))
        k = np.exp(-d2 / (s[:, None] * s[None, :]))
    else:
        k = np.exp(-d2 * dm.beta_)
    return np.where(keep, k, 0.0) if mask else k


def _spectrum(k, alpha, n_eig):
    q = k.sum(1)
    w = q ** -alpha
    ka = w[:, None] * k * w[None, :]
    s = ka.sum(1) ** -0.5
    m = s[:, None] * ka * s[None, :]
    return np.linalg.eigvalsh(m)[::-1][:n_eig]


@pytest.mark.parametrize("epsilon, truncate", [(0.02, 3.0), ("knn", 2.0)])
def test_truncated_fit_solves_the_masked_operator(rect, epsilon, truncate):
    dm = _fit(rect, epsilon=epsilon, truncate=truncate, alpha=0.5)
    rep = dm.truncation_
    assert dm.kernel_storage_ == "blocksparse" and dm.converged_
    assert 0.0 < rep.fraction < 1.0 and rep.truncate == truncate
    assert rep.n_pairs_blocks == dm._kern.pairs.nnz
    k = _masked_kernel(dm)
    np.testing.assert_allclose(k, k.T, rtol=0, atol=0)   # symmetric pair list
    assert np.mean(k > 0) == pytest.approx(rep.fraction, abs=0.02)
    ref = _spectrum(k, 0.5, 6)
    np.testing.assert_allclose(_np(dm.eigenvalues_), ref, rtol=0, atol=1e-10)
    # the reported bound bounds every row's skipped / kept kernel mass
    full = _masked_kernel(dm, mask=False)
    kept = k.sum(1)
    assert np.max((full.sum(1) - kept) / kept) <= rep.mass_bound * (1 + 1e-9) + 1e-300
    if epsilon == "knn":   # the k-NN search over candidate clusters is exact
        ex = _fit(rect, epsilon=epsilon, alpha=0.5)
        np.testing.assert_array_equal(_np(dm.epsilon_), _np(ex.epsilon_))


@pytest.mark.parametrize("epsilon, truncate, alpha", [(0.02, 3.0, 0.0), (0.02, 4.0, 1.0),
                                                     ("knn", 3.0, 0.5)])
def test_truncated_eigenpairs_agree_with_exact(rect, epsilon, truncate, alpha):
    ex = _fit(rect, epsilon=epsilon, alpha=alpha)
    dm = _fit(rect, epsilon=epsilon, alpha=alpha, truncate=truncate)
    bound = dm.truncation_.mass_bound
    assert bound < 1e-2
    rtol, atol_scale = tol("float64", "truncated", n_terms=rect.shape[0], bound=bound)
    np.testing.assert_allclose(dm.eigenvalues_, ex.eigenvalues_, rtol=rtol, atol=atol_scale)
    # eigenvectors come back in the user's order: P psi = lambda psi with the truncated P on
    # user-ordered vectors, and close to the exact ones (well separated eigenvalues)
    psi = dm.eigenvectors_
    np.testing.assert_allclose(dm.apply_markov(psi), psi * dm.eigenvalues_[None, :],
                               atol=1e-7)
    gap = np.min(np.abs(np.diff(ex.eigenvalues_)))
    for k in range(psi.shape[1]):
        s = np.sign(np.dot(psi[:, k], ex.eigenvectors_[:, k]))
        err = np.max(np.abs(s * psi[:, k] - ex.eigenvectors_[:, k]))
        assert err <= 1e-6 + 50 * bound / gap, (k, err)


def test_transform_cdc_and_doob_use_the_truncated_kernel(rect):
    ex = _fit(rect, epsilon=0.02)
    dm = _fit(rect, epsilon=0.02, truncate=4.0)
    bound = dm.truncation_.mass_bound
    # Nystrom on the training points reproduces the (truncated) embedding
    np.testing.assert_allclose(np.abs(dm.transform(rect)), np.abs(dm.embedding_), atol=1e-7)
    gen = np.random.default_rng(1)
    xn = gen.random((90, 2)) * np.array([0.3, 1.0])   # a band: far training clusters skipped
    got, want = dm.transform(xn), ex.transform(xn)
    rep = dm._kern.last_report
    assert rep.fraction < 1.0
    sign = np.sign(np.sum(got * want, axis=0))
    assert np.max(np.abs(got * sign - want)) <= 1e-5 + 100 * (bound + rep.mass_bound)
    f = rect[:, 0] ** 2
    np.testing.assert_allclose(dm.carre_du_champ(f), ex.carre_du_champ(f), rtol=0,
                               atol=1e-6 + 10 * bound * np.max(ex.carre_du_champ(f)))
    h = np.exp(rect[:, 1])
    rtol, atol = tol("float64", "truncated", n_terms=rect.shape[0], bound=bound)
    np.testing.assert_allclose(dm.doob(h).eigenvalues_, ex.doob(h).eigenvalues_, rtol=rtol,
                               atol=atol)


def test_knn_transform_truncated(rect):
    ex = _fit(rect, epsilon="knn")
    dm = _fit(rect, epsilon="knn", truncate=3.0)
    xn = rect[:40] + 0.01
    got, want = dm.transform(xn), ex.transform(xn)
    sign = np.sign(np.sum(got * want, axis=0))
    np.testing.assert_allclose(got * sign, want, atol=1e-4)


def test_truncated_fit_in_every_namespace(xp):
    """Host arrays cluster like NumPy (same pair list, same numbers); device arrays cluster on
    the device (their own kd order), so their fit is checked against the float64 spectrum of
    their own masked operator."""
    gen = np.random.default_rng(2)
    host = aa.device_kind(xp.asarray(np.zeros(1)))[0] == "cpu"
    # device arrays: clusters of 128 points (64 on the host), so more points to skip pairs
    x = gen.random((300 if host else 1500, 2)) * np.array([2.0, 1.0])
    ref = _fit(x, epsilon=0.02, truncate=3.0, eigensolver="lanczos")
    dm = _fit(xp.asarray(x), epsilon=0.02, truncate=3.0, eigensolver="lanczos")
    if host:
        assert dm.truncation_.fraction == ref.truncation_.fraction
        np.testing.assert_allclose(_np(dm.eigenvalues_), _np(ref.eigenvalues_), rtol=0,
                                   atol=1e-9)
        psi, psi_ref = _np(dm.eigenvectors_), _np(ref.eigenvectors_)
        np.testing.assert_allclose(np.abs(psi), np.abs(psi_ref), atol=1e-6)
    else:
        assert 0.0 < dm.truncation_.fraction < 1.0
        np.testing.assert_allclose(_np(dm.eigenvalues_), _spectrum(_masked_kernel(dm), 0.5, 6),
                                   rtol=0, atol=1e-9)


def test_truncated_against_pydiffmap(rect):
    """pyDiffMap, full kernel (k = N), fixed epsilon: our truncated eigenvalues within the
    tolerance row of the reported bound (pyDiffMap epsilon = ours / 4)."""
    pdm = pytest.importorskip("pydiffmap.diffusion_map")
    x = rect[:500]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peer = pdm.DiffusionMap.from_sklearn(k=x.shape[0], n_evecs=4, epsilon=0.005,
                                             alpha=0.5).fit(x)
    ours = DiffusionMap.from_pydiffmap(n_evecs=4, epsilon=0.005, alpha=0.5, rng=0, tol=1e-12,
                                       truncate=3.0).fit(x)
    rep = ours.truncation_
    assert rep.fraction < 1.0
    rtol, atol = tol("float64", "truncated", n_terms=x.shape[0], bound=rep.mass_bound)
    np.testing.assert_allclose(_np(ours.eigenvalues_)[1:], 1.0 + peer.epsilon_fitted * peer.evals,
                               rtol=rtol, atol=atol)


@pytest.mark.parametrize("bad, err", [(0.0, ValueError), (-1.0, ValueError),
                                      (float("nan"), ValueError), ("3", TypeError),
                                      (True, TypeError)])
def test_bad_truncate_names_the_argument(bad, err):
    with pytest.raises(err, match="`truncate`"):
        DiffusionMap(truncate=bad)


def test_truncate_with_dask_input_raises(rect):
    da = pytest.importorskip("dask.array")
    with pytest.raises(ValueError, match="`truncate`"):
        DiffusionMap(n_components=2, epsilon=0.1, truncate=3.0).fit(
            da.from_array(rect, chunks=(350, 2)))


def test_without_truncate_nothing_changes(rect):
    dm = _fit(rect, epsilon=0.02)
    assert dm.truncation_ is None and dm.kernel_storage_ in ("dense", "tiled")


def test_truncated_float32_kernel_on_float64_data(rect):
    """kernel_dtype='float32': the clustered points are cast once; eigenvalues stay within
    float32 round-off of the float64 truncated fit (same pair list)."""
    ref = _fit(rect, epsilon=0.02, truncate=3.0)
    dm = _fit(rect, epsilon=0.02, truncate=3.0, kernel_dtype="float32", tol=1e-7)
    assert dm.eigenvalues_.dtype == np.float64
    assert dm.truncation_.n_pairs_blocks == ref.truncation_.n_pairs_blocks
    np.testing.assert_allclose(dm.eigenvalues_, ref.eigenvalues_, rtol=0, atol=1e-5)
