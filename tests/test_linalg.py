"""arraygen.linalg.eigsh (thick-restart Lanczos) against dense numpy.linalg.eigh."""

from __future__ import annotations

import numpy as np
import pytest

from arraygen import _array_api as aa
from arraygen.linalg import eigsh


def _sym_with_spectrum(rng, eigenvalues):
    n = len(eigenvalues)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    a = (q * np.asarray(eigenvalues)) @ q.T
    return 0.5 * (a + a.T)


def _clustered_spectrum(rng, n):
    top = [5.0, 5.0 - 1e-4, 5.0 - 2e-4, 4.0, 3.99]
    return np.concatenate([top, rng.uniform(-3.0, 3.0, n - len(top))])


def _sin_largest_angle(u, v):
    """Sine of the largest principal angle between the column spaces of u and v."""
    qu, _ = np.linalg.qr(u)
    qv, _ = np.linalg.qr(v)
    return float(np.linalg.norm(qv - qu @ (qu.T @ qv), 2))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_eigsh_matches_dense_eigh(xp, rng, dtype):
    n, k = 157, 5
    a = _sym_with_spectrum(rng, _clustered_spectrum(rng, n))
    ref_w, ref_v = np.linalg.eigh(a)
    ref_w, ref_v = ref_w[::-1][:k], ref_v[:, ::-1][:, :k]
    w, v, info = eigsh(xp.asarray(a.astype(dtype)), k, rng=3)
    assert aa.array_namespace(w) is aa.array_namespace(xp.asarray(a))
    assert w.dtype == getattr(xp, dtype) and v.dtype == getattr(xp, dtype)
    assert tuple(v.shape) == (n, k) and tuple(w.shape) == (k,)
    assert aa.device(v) == xp.device
    wn, vn = xp.to_numpy(w).astype(np.float64), xp.to_numpy(v).astype(np.float64)
    res = xp.to_numpy(info.residuals)
    assert info.converged
    if dtype == "float64":
        np.testing.assert_allclose(wn, ref_w, rtol=0, atol=1e-10)
        assert _sin_largest_angle(vn, ref_v) < 1e-6
        assert res.max() < 1e-7
    else:
        np.testing.assert_allclose(wn, ref_w, rtol=0, atol=5e-5)
        assert _sin_largest_angle(vn, ref_v) < 5e-2  # cluster of width 1e-4 at float32
        assert res.max() < 1e-3
    # eigenvalues descending, vectors orthonormal, residuals are the true ones
    assert np.all(np.diff(wn) <= 0)
    np.testing.assert_allclose(vn.T @ vn, np.eye(k), atol=1e-5 if dtype == "float32" else 1e-12)
    true_res = np.linalg.norm(a @ vn - vn * wn, axis=0)
    np.testing.assert_allclose(res, true_res, rtol=0.1, atol=1e-5 if dtype == "float32" else 1e-12)


@pytest.mark.parametrize("block_size", [2, 3])
def test_block_lanczos_callable(rng, block_size):
    n, k = 120, 4
    a = _sym_with_spectrum(rng, np.linspace(-1.0, 2.0, n) ** 3)
    calls = []

    def matmat(v):
        calls.append(v.shape[1])
        return a @ v

    w, v, info = eigsh(matmat, k, n=n, rng=np.random.default_rng(0), block_size=block_size,
                       matmat=True)
    ref = np.sort(np.linalg.eigvalsh(a))[::-1][:k]
    np.testing.assert_allclose(w, ref, atol=1e-10)
    assert set(calls[:-1]) == {block_size}          # every expansion call is one block
    assert info.n_matvec == sum(calls) and info.n_calls == len(calls)
    np.testing.assert_allclose(np.linalg.norm(a @ v - v * w, axis=0), info["residuals"],
                               rtol=1e-6, atol=1e-13)


def test_vector_callable_gets_1d_vectors(rng):
    n, k = 90, 3
    d = np.linspace(0.0, 1.0, n) ** 2
    shapes = []

    def matvec(v):            # a 1-D-only operator: (n,) * (n,) broadcasting
        shapes.append(v.shape)
        return d * v

    w, v, info = eigsh(matvec, k, n=n, rng=0)
    assert set(shapes) == {(n,)}
    assert info.n_calls == len(shapes) == info.n_matvec
    np.testing.assert_allclose(w, d[::-1][:k], atol=1e-10)
    np.testing.assert_allclose(np.abs(v[[n - 1, n - 2, n - 3], [0, 1, 2]]), 1.0, atol=1e-6)


def test_breakdown_exact_invariant_subspace():
    a = np.diag(np.r_[np.full(3, 2.0), np.full(3, 1.0), np.zeros(94)])
    w, v, info = eigsh(a, 5, rng=0)
    np.testing.assert_allclose(w, [2, 2, 2, 1, 1], atol=1e-12)
    assert info.converged
    np.testing.assert_allclose(np.linalg.norm(a @ v - v * w, axis=0), 0, atol=1e-12)


def test_small_operator_dense_fallback():
    a = np.diag(np.arange(8.0))
    w, v, info = eigsh(a, 3, rng=0)
    np.testing.assert_allclose(w, [7, 6, 5])
    np.testing.assert_allclose(np.abs(v[[7, 6, 5], [0, 1, 2]]), 1.0, atol=1e-12)
    assert info.converged and np.max(info.residuals) < 1e-8
    w, v, info = eigsh(np.diag([1.0, 3.0, 2.0]), 2, rng=0)   # basis would be the whole space
    np.testing.assert_allclose(w, [3, 2])
    np.testing.assert_allclose(np.abs(v[[1, 2], [0, 1]]), 1.0)
    assert info.n_restarts == 0 and info.n_matvec == 3


def test_same_seed_same_result_and_philox_across_namespaces(rng):
    import torch

    a = _sym_with_spectrum(rng, np.linspace(0, 1, 90))
    w1, v1, _ = eigsh(a, 3, rng=11)
    w2, v2, _ = eigsh(a, 3, rng=11)
    np.testing.assert_array_equal(w1, w2)
    np.testing.assert_array_equal(v1, v2)
    wt, vt, _ = eigsh(torch.from_numpy(a), 3, rng=11)
    np.testing.assert_allclose(wt.numpy(), w1, atol=1e-12)
    np.testing.assert_allclose(np.abs(vt.numpy().T @ v1), np.eye(3), atol=1e-8)


def test_non_convergence_warns_and_flags(rng):
    a = _sym_with_spectrum(rng, np.r_[1.0, 1.0 - 1e-9, rng.uniform(0, 0.999, 198)])
    with pytest.warns(RuntimeWarning, match="converged"):
        w, v, info = eigsh(a, 2, rng=0, ncv=4, max_iter=1, tol=1e-14)
    assert info.converged is False and info.n_converged < 2
    assert np.all(np.isfinite(w)) and np.all(np.isfinite(v))


def test_bad_inputs(rng):
    a = _sym_with_spectrum(rng, np.arange(10.0))
    with pytest.raises(ValueError, match="`k` must be smaller"):
        eigsh(a, 10)
    with pytest.raises(ValueError, match="`k` must be >= 1"):
        eigsh(a, 0)
    with pytest.raises(TypeError, match="`k` must be an integer"):
        eigsh(a, 2.5)
    with pytest.raises(ValueError, match="`n` is required"):
        eigsh(lambda v: v, 2)
    with pytest.raises(ValueError, match="square"):
        eigsh(np.ones((4, 5)), 2)
    with pytest.raises(ValueError, match="non-finite"):
        eigsh(np.full((30, 30), np.nan), 2)
    with pytest.raises(ValueError, match="non-finite"):
        eigsh(lambda v: v * np.nan, 2, n=40, rng=0)
    with pytest.raises(ValueError, match="returned shape"):
        eigsh(lambda v: v[:-1], 2, n=40, rng=0)
    with pytest.raises(ValueError, match="returned shape"):
        eigsh(lambda v: v[:-1], 2, n=40, rng=0, matmat=True)
    with pytest.raises(TypeError, match="matvec_or_matrix"):
        eigsh("matrix", 2)
    with pytest.raises(ValueError, match="`tol` must be positive"):
        eigsh(a, 2, tol=-1.0)


@pytest.mark.filterwarnings("ignore:eigsh. only:RuntimeWarning")
def test_nonsymmetric_matrix_warns(rng):
    with pytest.warns(UserWarning, match="symmetric"):
        eigsh(np.triu(rng.standard_normal((40, 40))), 2, rng=0, max_iter=3)


# ------------------------------------------------------------ repeated eigenvalues (issue 15)
def _repeated(rng, n=140):
    """Top of the spectrum: 3.0 x 5, 2.0 x 3, 1.5 x 1, then the rest below 1."""
    top = [3.0] * 5 + [2.0] * 3 + [1.5]
    return _sym_with_spectrum(rng, np.r_[top, rng.uniform(-1.0, 1.0, n - len(top))])


@pytest.mark.parametrize("block_size", [1, 2, 5])
def test_repeated_eigenvalues_every_namespace(xp, rng, block_size):
    a = _repeated(rng)
    k = 9
    ref_w, ref_v = np.linalg.eigh(a)
    ref_w, ref_v = ref_w[::-1][:k], ref_v[:, ::-1][:, :k]
    w, v, info = eigsh(xp.asarray(a), k, rng=4, block_size=block_size)
    wn, vn = xp.to_numpy(w), xp.to_numpy(v)
    np.testing.assert_allclose(wn, ref_w, atol=1e-10)
    assert _sin_largest_angle(vn, ref_v) < 1e-6
    assert info.converged
    np.testing.assert_allclose(np.linalg.norm(a @ vn - vn * wn, axis=0),
                               xp.to_numpy(info.residuals), rtol=0.1, atol=1e-12)


def _circle_operator(n=200, eps=0.04):
    """The symmetric diffusion operator (alpha = 1) of a uniformly sampled circle: every
    eigenvalue but the top one is double (cos kt, sin kt)."""
    t = 2.0 * np.pi * np.arange(n) / n
    x = np.c_[np.cos(t), np.sin(t)]
    k = np.exp(-((x[:, None, :] - x[None, :, :]) ** 2).sum(-1) / eps)
    w = 1.0 / k.sum(1)
    ka = w[:, None] * k * w[None, :]
    da = ka.sum(1)
    return ka / np.sqrt(np.outer(da, da))


def test_repeated_eigenvalues_callable_and_verify_off():
    """Without the deflation check a single-vector Lanczos returns each eigenvalue once."""
    m = _circle_operator()
    ref = np.linalg.eigvalsh(m)[::-1][:5]
    assert abs(ref[1] - ref[2]) < 1e-12 and abs(ref[3] - ref[4]) < 1e-12
    w, v, info = eigsh(lambda u: m @ u, 5, n=200, rng=0, matmat=True)
    np.testing.assert_allclose(w, ref, atol=1e-10)
    assert info.converged
    w_off, _v, info_off = eigsh(lambda u: m @ u, 5, n=200, rng=0, matmat=True, verify=False)
    assert abs(w_off[1] - w_off[2]) > 1e-3              # the failure the check repairs


def test_missed_eigenvalue_is_not_reported_converged(rng, monkeypatch):
    """A check that runs out of passes must say so: converged False and a warning."""
    import functools

    from arraygen import linalg

    a = np.diag(np.r_[np.full(6, 2.0), np.linspace(0.0, 1.0, 94)])
    monkeypatch.setattr(linalg, "_complete", functools.partial(linalg._complete, max_passes=1))
    with pytest.warns(RuntimeWarning, match="deflation check still finds"):
        w, v, info = eigsh(a, 6, rng=0)
    assert info.converged is False
    np.testing.assert_allclose(w[:2], [2.0, 2.0], atol=1e-10)
