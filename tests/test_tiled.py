"""Tiled diffusion kernel: every backend and namespace against the float64 oracle."""

from __future__ import annotations

import numpy as np
import pytest

from arraygen import tiled
from arraygen.reference import tiled as ref
from arraygen.testing import assert_close, to_numpy, tol

DTYPES = ("float32", "float64")


def _sizes(kb, d):
    """Odd (N, M): tiny under the simulators, a few hundred natively."""
    if kb.simulated:
        return (7, 9) if d >= 64 else (13, 21)
    return (203, 301) if d <= 32 else (67, 129)


def _problem(rng, n, m, d, p, dtype):
    x = rng.standard_normal((n, d))
    y = rng.standard_normal((m, d)) + 0.25
    v = rng.standard_normal((m, p)) if p else rng.standard_normal(m)
    beta = 0.7 / d
    return x.astype(dtype), y.astype(dtype), v.astype(dtype), beta


def _noncontig(ns, a):
    """``a`` in namespace ``ns`` as a non-contiguous view (every other row of a bigger array)."""
    big = np.repeat(a, 2, axis=0)
    big[1::2] = 1e30  # never read
    return ns.asarray(big)[::2]


def _check_like(out, ref_arr, ns, dtype, n_terms, exponent_scale=0.0):
    """Namespace, dtype and values; ``exponent_scale`` bounds |beta d2| (the exponent's size,
    which sets the absolute error of a log-sum-exp computed by the law of cosines)."""
    assert type(out) is type(ns.asarray(np.zeros(1))), type(out)
    assert out.dtype == getattr(ns, dtype)
    rtol, atol_scale = tol(dtype, "reduction", n_terms)
    atol = atol_scale * (float(np.max(np.abs(ref_arr))) + exponent_scale)
    assert_close(out, ref_arr, rtol=rtol, atol=atol, dtype=dtype, check_namespace=False,
                 check_device=False, check_dtype=False)


def _exponent_scale(x, y, beta):
    return beta * float(np.max(np.sum(np.asarray(x, np.float64) ** 2, axis=1))
                        + np.max(np.sum(np.asarray(y, np.float64) ** 2, axis=1)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [1, 3, 17, 256])
@pytest.mark.parametrize("p", [0, 3])
def test_matvec_backends(kernel_backend, rng, dtype, d, p):
    kb = kernel_backend
    n, m = _sizes(kb, d)
    x, y, v, beta = _problem(rng, n, m, d, p, dtype)
    ns = kb.xp
    out = tiled.kernel_matvec(_noncontig(ns, x), ns.asarray(y), _noncontig(ns, v), beta=beta,
                              backend=kb.name)
    _check_like(out, ref.kernel_matvec(x, y, v, beta), ns, dtype, m)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [3, 17])
def test_matvec_scales_and_bandwidths(kernel_backend, rng, dtype, d):
    kb = kernel_backend
    n, m = _sizes(kb, d)
    x, y, v, beta = _problem(rng, n, m, d, 2, dtype)
    r, c = rng.uniform(0.5, 2, n).astype(dtype), rng.uniform(-1, 2, m).astype(dtype)
    a, b = rng.uniform(0.3, 3, n).astype(dtype), rng.uniform(0.3, 3, m).astype(dtype)
    ns = kb.xp
    out = tiled.kernel_matvec(ns.asarray(x), ns.asarray(y), ns.asarray(v), beta=beta,
                              row_scale=ns.asarray(r), col_scale=ns.asarray(c),
                              x_bandwidth=ns.asarray(a), y_bandwidth=ns.asarray(b),
                              backend=kb.name)
    want = ref.kernel_matvec(x, y, v, beta, r, c, a, b)
    _check_like(out, want, ns, dtype, m)
    # bandwidths change the answer (the test could fail if they were ignored)
    plain = ref.kernel_matvec(x, y, v, beta, r, c)
    assert np.max(np.abs(plain - want)) > 1e-2 * np.max(np.abs(want))


def _log_weights(rng, m, dtype, with_inf=True):
    w = rng.standard_normal(m)
    if with_inf:
        w[[0, m // 2, m - 1]] = -np.inf
    return w.astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [1, 3, 17, 256])
def test_logsumexp_backends(kernel_backend, rng, dtype, d):
    kb = kernel_backend
    n, m = _sizes(kb, d)
    x, y, _, beta = _problem(rng, n, m, d, 0, dtype)
    w = _log_weights(rng, m, dtype)
    ns = kb.xp
    out = tiled.kernel_logsumexp(_noncontig(ns, x), ns.asarray(y), beta=beta,
                                 log_weights=ns.asarray(w), backend=kb.name)
    scale = _exponent_scale(x, y, beta)
    _check_like(out, ref.kernel_logsumexp(x, y, beta, w), ns, dtype, m, scale)
    plain = tiled.kernel_logsumexp(ns.asarray(x), ns.asarray(y), beta=beta, backend=kb.name)
    _check_like(plain, ref.kernel_logsumexp(x, y, beta), ns, dtype, m, scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [1, 3, 17, 256])
@pytest.mark.parametrize("p", [0, 3])
def test_softmax_matvec_backends(kernel_backend, rng, dtype, d, p):
    kb = kernel_backend
    n, m = _sizes(kb, d)
    x, y, v, beta = _problem(rng, n, m, d, p, dtype)
    w = _log_weights(rng, m, dtype)
    ns = kb.xp
    out, lse = tiled.kernel_softmax_matvec(ns.asarray(x), _noncontig(ns, y), ns.asarray(v),
                                           beta=beta, log_weights=ns.asarray(w),
                                           backend=kb.name)
    want, want_lse = ref.kernel_softmax_matvec(x, y, v, beta, w)
    _check_like(out, want, ns, dtype, m)
    _check_like(lse, want_lse, ns, dtype, m, _exponent_scale(x, y, beta))


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_far_points_and_large_beta(kernel_backend, rng, dtype):
    """exp underflows for every pair: the online softmax must still give the right answer."""
    kb = kernel_backend
    n, m = _sizes(kb, 3)
    x, y, v, _ = _problem(rng, n, m, 3, 2, dtype)
    y = (y + 30.0).astype(dtype)
    beta = 5.0
    ns = kb.xp
    out, lse = tiled.kernel_softmax_matvec(ns.asarray(x), ns.asarray(y), ns.asarray(v),
                                           beta=beta, backend=kb.name)
    want, want_lse = ref.kernel_softmax_matvec(x, y, v, beta)
    assert np.all(want_lse < -1000)
    _check_like(lse, want_lse, ns, dtype, m)
    # the weights are a sharp softmax: compare with a loose rtol (tiny distance rounding moves it)
    assert_close(out, want, rtol=1e-3 if dtype == "float32" else 1e-9, atol=1e-3 * 4,
                 check_namespace=False, check_device=False, check_dtype=False)


@pytest.mark.parametrize("dtype", DTYPES)
def test_array_api_path_every_namespace(xp, rng, dtype):
    n, m, d = 17, 23, 3
    x, y, v, beta = _problem(rng, n, m, d, 2, dtype)
    w = _log_weights(rng, m, dtype)
    X, Y, V, W = (xp.asarray(a) for a in (x, y, v, w))
    out = tiled.kernel_matvec(X, Y, V, beta=beta, backend="array_api")
    _check_like(out, ref.kernel_matvec(x, y, v, beta), xp, dtype, m)
    assert str(out.device) == str(X.device)
    lse = tiled.kernel_logsumexp(X, Y, beta=beta, log_weights=W, backend="array_api")
    _check_like(lse, ref.kernel_logsumexp(x, y, beta, w), xp, dtype, m)
    o, l2 = tiled.kernel_softmax_matvec(X, Y, V[:, 0], beta=beta, log_weights=W,
                                        backend="array_api")
    wo, wl = ref.kernel_softmax_matvec(x, y, v[:, 0], beta, w)
    _check_like(o, wo, xp, dtype, m)
    _check_like(l2, wl, xp, dtype, m)


@pytest.mark.parametrize("d", [3, 40])
@pytest.mark.parametrize("tile", [(4, 5), (1, 1), (50, 7)])
def test_array_api_blocking(rng, d, tile):
    """Several row and column blocks (and the online rescaling across them) give the oracle."""
    n, m = 19, 23
    x, y, v, beta = _problem(rng, n, m, d, 2, "float64")
    a, b = rng.uniform(0.5, 2, n), rng.uniform(0.5, 2, m)
    w = _log_weights(rng, m, "float64")
    import array_api_compat.numpy as xnp

    xc, yc = tiled._centre(xnp, x, y)
    out = tiled._matvec_xp(xnp, xc, yc, v, a, b, beta, tile=tile)
    assert_close(out, ref.kernel_matvec(x, y, v, beta, None, None, a, b), kind="reduction",
                 n_terms=m)
    so, lse = tiled._softmax_xp(xnp, xc, yc, v, w, beta, tile=tile)
    wo, wl = ref.kernel_softmax_matvec(x, y, v, beta, w)
    assert_close(so, wo, kind="reduction", n_terms=m)
    assert_close(lse, wl, kind="reduction", n_terms=m)


def test_all_neg_inf_blocks_then_finite(rng):
    """Rows whose first column blocks carry only zero weights (no NaN from inf - inf)."""
    import array_api_compat.numpy as xnp

    x, y, v, beta = _problem(rng, 5, 12, 2, 1, "float64")
    w = np.full(12, -np.inf)
    w[9] = 0.5
    so, lse = tiled._softmax_xp(xnp, x, y, v, w, beta, tile=(2, 4))
    wo, wl = ref.kernel_softmax_matvec(x, y, v, beta, w)
    assert_close(so, wo, kind="reduction", n_terms=12)
    assert_close(lse, wl, kind="reduction", n_terms=12)
    assert_close(so, np.broadcast_to(v[9], so.shape), kind="reduction", n_terms=12)


def test_half_and_integer_inputs():
    import torch

    x = torch.arange(12, dtype=torch.float16).reshape(6, 2) / 6
    out = tiled.kernel_matvec(x, x, torch.ones(6, dtype=torch.float16), beta=1.0)
    assert out.dtype == torch.float16
    want = ref.kernel_matvec(x.float().numpy(), x.float().numpy(), np.ones(6), 1.0)
    assert_close(out, want, kind="reduction", n_terms=6, check_namespace=False,
                 check_dtype=False)
    xi = np.arange(10).reshape(5, 2)
    lse = tiled.kernel_logsumexp(xi, xi, beta=0.1, backend="array_api")
    assert lse.dtype == np.float64
    assert_close(lse, ref.kernel_logsumexp(xi, xi, 0.1), kind="reduction", n_terms=5)


def test_default_backend_numpy(rng):
    x, y, v, beta = _problem(rng, 31, 29, 3, 0, "float32")
    out = tiled.kernel_matvec(x, y, v, beta=beta)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    assert_close(out, ref.kernel_matvec(x, y, v, beta), kind="reduction", n_terms=29,
                 check_dtype=False)
    o, lse = tiled.kernel_softmax_matvec(x, y, v, beta=beta)
    wo, wl = ref.kernel_softmax_matvec(x, y, v, beta)
    assert_close(o, wo, kind="reduction", n_terms=29, check_dtype=False)
    assert_close(lse, wl, kind="reduction", n_terms=29, check_dtype=False)


def test_numba_cpu_exp2_accuracy():
    """The vectorisable exp2 polynomial is within ~1 ulp of exp2 (and 0 far below)."""
    from numba import njit

    from arraygen.backends.numba_cpu.tiled import _exp2_f32, _exp2_f64

    @njit
    def ev32(t):
        out = np.empty_like(t)
        for i in range(t.size):
            out[i] = _exp2_f32(t[i])
        return out

    @njit
    def ev64(t):
        out = np.empty_like(t)
        for i in range(t.size):
            out[i] = _exp2_f64(t[i])
        return out

    t = np.linspace(-126.0, 0.0, 100_003)
    got = ev32(t.astype(np.float32)).astype(np.float64)
    exact = np.exp2(t.astype(np.float32).astype(np.float64))
    assert np.max(np.abs(got - exact) / exact) < 3 * np.finfo(np.float32).eps
    got64 = ev64(t)
    assert np.max(np.abs(got64 - np.exp2(t)) / np.exp2(t)) < 4 * np.finfo(np.float64).eps
    assert ev32(np.array([-130.0, -1e30], np.float32)).tolist() == [0.0, 0.0]


# ------------------------------------------------------------------------------------------
# bad inputs
# ------------------------------------------------------------------------------------------

def _ok(n=4, m=5, d=2):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, d)), rng.standard_normal((m, d)), rng.standard_normal(m)


@pytest.mark.parametrize("op", ["matvec", "logsumexp", "softmax"])
def test_bad_points(op):
    x, y, v = _ok()

    def call(x, y, v=v, **kw):
        kw.setdefault("beta", 1.0)
        if op == "matvec":
            return tiled.kernel_matvec(x, y, v, **kw)
        if op == "logsumexp":
            return tiled.kernel_logsumexp(x, y, **kw)
        return tiled.kernel_softmax_matvec(x, y, v, **kw)

    with pytest.raises(ValueError, match=r"`x` and `y` must have the same dimension"
                                         r".*\(4, 2\).*\(5, 3\)"):
        call(x, np.ones((5, 3)))
    with pytest.raises(ValueError, match=r"`x` and `y` must have the same dimension"):
        call(x[:, 0], y)  # (N,) is N points in 1-D: d = 1 against d = 2
    with pytest.raises(ValueError, match=r"`y` must have shape \(N, d\).*\(1, 5, 2\)"):
        call(x, y[None])
    with pytest.raises(ValueError, match="`x` must contain at least one point"):
        call(x[:0], y)
    with pytest.raises(ValueError, match="`y` must contain at least one point"):
        call(x, y[:0], v[:0])
    bad = x.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="`x` contains 1 non-finite"):
        call(bad, y)
    bad = y.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="`y` contains 1 non-finite"):
        call(x, bad)
    for beta in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="`beta` must be"):
            call(x, y, beta=beta)
    with pytest.raises(TypeError, match="`beta` must be a real number"):
        call(x, y, beta="big")
    import torch

    with pytest.raises(TypeError, match="different namespaces"):
        call(torch.from_numpy(x), y)


def test_bad_rhs_and_vectors():
    x, y, v = _ok()
    with pytest.raises(ValueError, match=r"`v` must have shape \(5,\) or \(5, p\)"):
        tiled.kernel_matvec(x, y, np.ones(4), beta=1.0)
    with pytest.raises(ValueError, match=r"`v` must have shape"):
        tiled.kernel_softmax_matvec(x, y, np.ones((5, 2, 1)), beta=1.0)
    with pytest.raises(ValueError, match="`v` contains 1 non-finite"):
        tiled.kernel_matvec(x, y, np.array([1, 2, np.nan, 3, 4.0]), beta=1.0)
    with pytest.raises(ValueError, match=r"`row_scale` must have shape \(4,\)"):
        tiled.kernel_matvec(x, y, v, beta=1.0, row_scale=np.ones(5))
    with pytest.raises(ValueError, match=r"`col_scale` must have shape \(5,\)"):
        tiled.kernel_matvec(x, y, v, beta=1.0, col_scale=np.ones(4))
    with pytest.raises(ValueError, match=r"`x_bandwidth` must have shape \(4,\)"):
        tiled.kernel_matvec(x, y, v, beta=1.0, x_bandwidth=np.ones((4, 1)))
    with pytest.raises(ValueError, match="`y_bandwidth` must be positive"):
        tiled.kernel_matvec(x, y, v, beta=1.0, y_bandwidth=np.array([1, 1, 0, 1, 1.0]))
    with pytest.raises(ValueError, match="`col_scale` contains 1 non-finite"):
        tiled.kernel_matvec(x, y, v, beta=1.0, col_scale=np.array([1, 1, np.inf, 1, 1.0]))
    with pytest.raises(TypeError, match="`row_scale` must be an array"):
        tiled.kernel_matvec(x, y, v, beta=1.0, row_scale="1234")
    # lists are read as NumPy arrays (as SciPy does)
    assert_close(tiled.kernel_matvec(x, y, v, beta=1.0, row_scale=[1, 2, 3, 4]),
                 np.arange(1, 5) * tiled.kernel_matvec(x, y, v, beta=1.0))


def test_bad_log_weights():
    x, y, v = _ok()
    with pytest.raises(ValueError, match=r"`log_weights` must have shape \(5,\)"):
        tiled.kernel_logsumexp(x, y, beta=1.0, log_weights=np.zeros(4))
    with pytest.raises(ValueError, match="`log_weights` must not contain NaN or \\+inf"):
        tiled.kernel_logsumexp(x, y, beta=1.0, log_weights=np.array([0, np.nan, 0, 0, 0.0]))
    with pytest.raises(ValueError, match="`log_weights` must not contain NaN or \\+inf"):
        tiled.kernel_softmax_matvec(x, y, v, beta=1.0,
                                    log_weights=np.array([0, np.inf, 0, 0, 0.0]))
    with pytest.raises(ValueError, match="`log_weights` must have at least one finite entry"):
        tiled.kernel_logsumexp(x, y, beta=1.0, log_weights=np.full(5, -np.inf))


def test_explicit_backend_errors():
    from arraygen import BackendError

    x, y, v = _ok()
    with pytest.raises(BackendError, match="unknown backend"):
        tiled.kernel_matvec(x, y, v, beta=1.0, backend="fortran")
    if to_numpy(x) is x:  # numpy input cannot go to the cupy backend
        with pytest.raises(BackendError, match="cupy"):
            tiled.kernel_matvec(x, y, v, beta=1.0, backend="cupy")


def test_column_splits():
    # 1954 row blocks, 1320 resident: 2 waves unsplit, 1.5 per split pass with 2 splits
    assert tiled.column_splits(1954, 1320) == 2
    assert tiled.column_splits(100, 1320) == 8  # a small N leaves SMs idle: split the columns
    assert tiled.column_splits(1320, 1320) == 1  # exactly one full wave (ties keep 1)
    for b, c in [(1954, 1056), (977, 132 * 6), (5000, 2112)]:
        s = tiled.column_splits(b, c)
        best = min(np.ceil(b * k / c) / k for k in range(1, 9))
        assert np.ceil(b * s / c) / s == best


@pytest.mark.parametrize("dtype", DTYPES)
def test_column_split_merge(kernel_backend, rng, dtype):
    """CUDA launchers split the columns of y over blocks and merge the partial results."""
    kb = kernel_backend
    if kb.name not in ("numba_cuda", "cupy"):
        pytest.skip("column splits exist in the CUDA launchers only")
    import importlib

    module = importlib.import_module(f"arraygen.backends.{kb.name}.tiled")
    with module.TUNING.override(splits=3):  # a frozen tuning record, scoped to this block
        _check_column_split_merge(kb, rng, dtype)


def _check_column_split_merge(kb, rng, dtype):
    n, m = (13, 150) if kb.simulated else (203, 1001)
    x, y, v, beta = _problem(rng, n, m, 3, 2, dtype)
    w = _log_weights(rng, m, dtype)
    ns = kb.xp
    out = tiled.kernel_matvec(ns.asarray(x), ns.asarray(y), ns.asarray(v), beta=beta,
                              backend=kb.name)
    _check_like(out, ref.kernel_matvec(x, y, v, beta), ns, dtype, m)
    so, lse = tiled.kernel_softmax_matvec(ns.asarray(x), ns.asarray(y), ns.asarray(v),
                                          beta=beta, log_weights=ns.asarray(w), backend=kb.name)
    want, want_lse = ref.kernel_softmax_matvec(x, y, v, beta, w)
    _check_like(so, want, ns, dtype, m)
    _check_like(lse, want_lse, ns, dtype, m, _exponent_scale(x, y, beta))


@pytest.mark.parametrize("d", [3, 40])
def test_many_right_hand_sides(kernel_backend, rng, d):
    """More columns than a kernel keeps accumulators for (KERNEL_MAX_RHS): chunked launches."""
    kb = kernel_backend
    n, m = (5, 7) if kb.simulated else (67, 129)
    p = tiled.KERNEL_MAX_RHS + 6
    x, y, v, beta = _problem(rng, n, m, d, p, "float32")
    ns = kb.xp
    out = tiled.kernel_matvec(ns.asarray(x), ns.asarray(y), ns.asarray(v), beta=beta,
                              backend=kb.name)
    _check_like(out, ref.kernel_matvec(x, y, v, beta), ns, "float32", m)
    out, lse = tiled.kernel_softmax_matvec(ns.asarray(x), ns.asarray(y), ns.asarray(v),
                                           beta=beta, backend=kb.name)
    want, want_lse = ref.kernel_softmax_matvec(x, y, v, beta)
    _check_like(out, want, ns, "float32", m)
    _check_like(lse, want_lse, ns, "float32", m, _exponent_scale(x, y, beta))


def test_wide_problems_prefer_array_api(monkeypatch):
    """Automatic dispatch sends d > DIRECT_MAX_D with many right-hand sides to the BLAS path;
    an explicit backend is still honoured."""
    from arraygen import _dispatch

    seen = []
    original = _dispatch.select

    def spy(*args, **kwargs):
        seen.append(kwargs.get("prefer_array_api"))
        return original(*args, **kwargs)

    monkeypatch.setattr(_dispatch, "select", spy)
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((9, 20)), rng.standard_normal((11, 20))
    v = rng.standard_normal((11, tiled.KERNEL_MAX_RHS + 1))
    tiled.kernel_softmax_matvec(x, y, v, beta=0.1)
    tiled.kernel_matvec(x, y, v, beta=0.1)
    tiled.kernel_matvec(x, y, v[:, :3], beta=0.1)
    assert seen == [True, True, False]
    assert original("kernel_matvec", x, backend=None, prefer_array_api=True) == "array_api"


# ------------------------------------------------------------------------------------------
# issue 13: one boundary, (N,) clouds, check_finite, beta out of the dtype's range
# ------------------------------------------------------------------------------------------

def test_one_d_clouds_are_points_in_one_dimension(rng):
    """(N,) means N points in 1-D for all three ops (one rule), same answer as (N, 1)."""
    x, y, v = rng.standard_normal(7), rng.standard_normal(9), rng.standard_normal(9)
    X, Y = x[:, None], y[:, None]
    assert_close(tiled.kernel_matvec(x, y, v, beta=0.5), ref.kernel_matvec(X, Y, v, 0.5),
                 kind="reduction", n_terms=9)
    assert_close(tiled.kernel_logsumexp(x, Y, beta=0.5), ref.kernel_logsumexp(X, Y, 0.5),
                 kind="reduction", n_terms=9)
    out, lse = tiled.kernel_softmax_matvec(X, y, v, beta=0.5)
    want, want_lse = ref.kernel_softmax_matvec(X, Y, v, 0.5)
    assert_close(out, want, kind="reduction", n_terms=9)
    assert_close(lse, want_lse, kind="reduction", n_terms=9)


@pytest.mark.parametrize("op", ["matvec", "logsumexp", "softmax"])
def test_check_finite_false_skips_the_checks(op):
    x, y, v = _ok()
    bad = x.copy()
    bad[0, 0] = np.nan
    kw = dict(beta=1.0, backend="array_api", check_finite=False)
    if op == "matvec":
        out = tiled.kernel_matvec(bad, y, v, **kw)
    elif op == "logsumexp":
        out = tiled.kernel_logsumexp(bad, y, **kw)
    else:
        out = tiled.kernel_softmax_matvec(bad, y, v, **kw)[1]
    out = np.asarray(out)
    assert np.isnan(out[0]) and np.all(np.isfinite(out[1:]))  # NaN stays in its row


@pytest.mark.parametrize("op", ["matvec", "logsumexp", "softmax"])
def test_float32_beta_out_of_range_is_an_error_not_nan(op):
    """float32 with beta above float32 max gave all-NaN; the scalar check runs in float64."""
    x, y, v = (a.astype(np.float32) for a in _ok())

    def call(beta, xx=x, yy=y):
        if op == "matvec":
            return tiled.kernel_matvec(xx, yy, v, beta=beta)
        if op == "logsumexp":
            return tiled.kernel_logsumexp(xx, yy, beta=beta)
        return tiled.kernel_softmax_matvec(xx, yy, v, beta=beta)

    with pytest.raises(ValueError, match="`beta`.*out of range for float32"):
        call(1e39)  # above float32 max (3.4e38)
    with pytest.raises(ValueError, match="`beta`.*out of range for float32"):
        call(1e-40)  # flushes in float32
    with pytest.raises(ValueError, match="`beta` = 1e\\+38 is too large for float32"):
        call(1e38)  # representable, but beta * |x - y|^2 overflows
    with pytest.raises(ValueError, match="`x` and `y` are too large for float32"):
        call(1.0, x * np.float32(1e20), y)  # finite points whose squared distances overflow
    # float64 handles the same beta (no overflow there): finite, matches the oracle
    x64, y64, v64 = _ok()
    out = tiled.kernel_logsumexp(x64, y64, beta=1e37, backend="array_api")
    assert_close(out, ref.kernel_logsumexp(x64, y64, 1e37), rtol=1e-12)
    # bandwidths multiply beta: a product that overflows float32 is named too
    with pytest.raises(ValueError, match="`beta`.*too large for float32"):
        tiled.kernel_matvec(x, y, v, beta=1e20, x_bandwidth=np.full(4, 1e18, np.float32))


@pytest.mark.parametrize("op", ["kernel_matvec", "kernel_softmax_matvec"])
def test_missing_rhs_is_a_type_error_naming_v(op):
    x = np.zeros((3, 2))
    with pytest.raises(TypeError, match="`v`"):
        getattr(tiled, op)(x, x, None, beta=1.0)
