"""DiffusionMap.fit on a dask array (driver-vector model): the points stay row-chunked on the
cluster, only the kernel matrix-vector products run there, the eigensolver runs in NumPy.

Oracle: the same fit on the NumPy array (same data, same rng): eigenvalues to ~1e-10,
eigenvectors and embedding to round-off; graph size per kernel call constant (no lazy
history recomputed by host syncs). ``transform`` after a dask fit (issue 16): out-of-core
Nystrom over the stored training chunks, against the NumPy fit's ``transform``.
"""

import numpy as np
import pytest

from arraygen import _dask
from arraygen.dmap import DiffusionMap

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def data():
    """A noisy swiss roll, N = 400, d = 3."""
    gen = np.random.default_rng(3)
    t = 1.5 * np.pi * (1.0 + 2.0 * gen.random(400))
    x = np.c_[t * np.cos(t), 10.0 * gen.random(400), t * np.sin(t)]
    return x + 0.05 * gen.standard_normal(x.shape)


def _fit(x, **kw):
    return DiffusionMap(n_components=5, rng=0, **kw).fit(x)


def _same_vectors(a, b, tol):
    """Columns equal up to sign (signs are fixed by the largest entry, but guard round-off)."""
    for k in range(a.shape[1]):
        s = 1.0 if np.dot(a[:, k], b[:, k]) >= 0 else -1.0
        np.testing.assert_allclose(a[:, k], s * b[:, k], atol=tol)


@pytest.mark.parametrize("eigensolver", ["auto", "lanczos"])
@pytest.mark.parametrize("epsilon", ["median", 20.0])
def test_fit_on_dask_matches_numpy(dask_client, data, eigensolver, epsilon):
    xd = da.from_array(data, chunks=((150, 100, 150), 3))   # ragged row chunks
    dm = _fit(xd, eigensolver=eigensolver, epsilon=epsilon)
    ref = _fit(data, eigensolver=eigensolver, epsilon=epsilon)
    assert dm.kernel_storage_ == "dask" and dm.converged_
    assert dm.eigensolver_ == ref.eigensolver_
    assert dm.epsilon_ == pytest.approx(ref.epsilon_, rel=1e-12)
    for name in ("eigenvalues_", "eigenvectors_", "embedding_", "stationary_", "degree_"):
        assert isinstance(getattr(dm, name), np.ndarray), name   # NumPy on the driver
    np.testing.assert_allclose(dm.eigenvalues_, ref.eigenvalues_, rtol=0, atol=1e-10)
    np.testing.assert_allclose(dm.degree_, ref.degree_, rtol=1e-12)
    _same_vectors(dm.eigenvectors_, ref.eigenvectors_, 1e-6)
    _same_vectors(dm.embedding_, ref.embedding_, 1e-6)
    # the fitted points stay a persisted dask array on the cluster
    assert _dask.is_dask_array(dm.X_) and dm.X_.shape == data.shape


def test_bgh_rule_and_markov_operator_on_dask(dask_client, data):
    xd = da.from_array(data, chunks=(128, 3))
    dm = _fit(xd, epsilon="bgh", eigensolver="lanczos")
    ref = _fit(data, epsilon="bgh", eigensolver="lanczos")
    assert dm.intrinsic_dim_ == ref.intrinsic_dim_
    assert dm.epsilon_ == pytest.approx(ref.epsilon_, rel=1e-12)
    np.testing.assert_allclose(dm.eigenvalues_, ref.eigenvalues_, rtol=0, atol=1e-10)
    # P psi_k = lambda_k psi_k through the cluster kernel (a property a wrong P breaks)
    psi = dm.eigenvectors_
    np.testing.assert_allclose(dm.apply_markov(psi), psi * dm.eigenvalues_[None, :],
                               atol=1e-6)
    f = data[:, 1]
    np.testing.assert_allclose(dm.carre_du_champ(f), ref.carre_du_champ(f), rtol=1e-9,
                               atol=1e-12)
    # h = 1: the Doob transform is P itself
    np.testing.assert_allclose(dm.doob(np.ones(data.shape[0])).eigenvalues_, ref.eigenvalues_,
                               rtol=0, atol=1e-10)


def test_graph_per_kernel_call_does_not_grow(dask_client, data, monkeypatch):
    """Every eigensolver matvec builds a graph of the same size (persisted inputs, one task per
    row chunk): nothing lazy accumulates across Lanczos iterations."""
    sizes = []
    real = _dask.kernel_matvec

    def spy(*a, **k):
        out = real(*a, **k)
        sizes.append(len(out.__dask_graph__()))
        return out

    monkeypatch.setattr(_dask, "kernel_matvec", spy)
    xd = da.from_array(data, chunks=(100, 3))
    dm = _fit(xd, epsilon=20.0, eigensolver="lanczos")
    assert len(sizes) == dm.n_kernel_calls_ >= 5
    assert max(sizes) == min(sizes) <= 4 * 4 + 4


@pytest.mark.parametrize("kw, match", [({"epsilon": "knn"}, "`epsilon`"),
                                       ({"bandwidth_type": -0.25}, "`bandwidth_type`")])
def test_unsupported_options_on_dask_raise(kw, match, data):
    xd = da.from_array(data, chunks=(200, 3))
    with pytest.raises(ValueError, match=match):
        DiffusionMap(n_components=2, **kw).fit(xd)


def test_dask_input_validated_at_the_boundary(data):
    bad = data.copy()
    bad[7, 1] = np.nan
    with pytest.raises(ValueError, match="`X`"):
        DiffusionMap(n_components=2).fit(da.from_array(bad, chunks=(200, 3)))


@pytest.fixture(scope="module")
def fitted(dask_client, data):
    """The same map fitted on ragged dask chunks and on NumPy."""
    xd = da.from_array(data, chunks=((150, 100, 150), 3))
    return _fit(xd, epsilon=20.0), _fit(data, epsilon=20.0)


def test_transform_after_dask_fit_numpy_points(fitted, data):
    """NumPy new points in, NumPy coordinates out, equal to the NumPy fit's Nystrom map
    (the partial softmaxes of the three training chunks merged by their log-sum-exp)."""
    dm, ref = fitted
    gen = np.random.default_rng(5)
    xn = data[:37] + 0.3 * gen.standard_normal((37, 3))
    got = dm.transform(xn)
    assert isinstance(got, np.ndarray) and got.shape == (37, 5)
    _same_vectors(got, ref.transform(xn), 1e-8)
    # on the training points the extension reproduces the embedding (eigen-equation)
    _same_vectors(dm.transform(data), dm.embedding_, 1e-6)
    # lists are read as NumPy; one point far from the data still gets finite coordinates
    far = dm.transform([[1e3, 1e3, 1e3]])
    assert np.all(np.isfinite(far))


def test_transform_after_dask_fit_dask_points(fitted, data):
    """dask new points in (ragged row chunks), a lazy dask array out with their row chunks."""
    dm, ref = fitted
    xn = data[::7] + 0.1
    xd = da.from_array(xn, chunks=((20, 17, xn.shape[0] - 37), 3))
    got = dm.transform(xd)
    assert _dask.is_dask_array(got) and got.chunks[0] == xd.chunks[0]
    _same_vectors(np.asarray(got.compute()), ref.transform(xn), 1e-8)


def test_doob_transform_after_dask_fit(fitted, data):
    dm, ref = fitted
    h = np.exp(data[:, 1] / 10.0)
    xn = data[:25] - 0.2
    _same_vectors(dm.doob(h).transform(xn), ref.doob(h).transform(xn), 1e-7)


def test_transform_after_dask_fit_checks_points(fitted):
    dm, _ = fitted
    with pytest.raises(ValueError, match="`X_new`"):
        dm.transform(np.zeros((4, 2)))
    bad = np.zeros((4, 3))
    bad[1, 2] = np.inf
    with pytest.raises(ValueError, match="`X_new`"):
        dm.transform(bad)
