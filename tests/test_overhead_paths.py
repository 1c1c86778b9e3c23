"""The NumPy fast paths of the boundary (issue 15, per-call overhead) change nothing.

``_array_api``, ``_validation`` and ``_dispatch`` take a fast path for plain C-contiguous,
native-order float64/float32 ``np.ndarray`` input. The fixture ``general`` switches every fast
path off (the fast-path type and dtypes become objects nothing matches), so each test runs the
same call both ways and requires the same result (bitwise on the Array-API path) or the same
exception type and message. Inputs cover the cases that must leave the fast path: non-contiguous,
big-endian, float16, integer, list, torch, NaN, wrong shapes and mixed namespaces.
"""

from __future__ import annotations

import numpy as np
import pytest

import arraygen
from arraygen import _array_api as aa
from arraygen import _dispatch, tiled
from arraygen import _validation as _v
from arraygen.backends import available
from arraygen.metrics import mmd
from arraygen.reference import fisher as ref_fisher
from arraygen.reference import tiled as ref_tiled


class _Nothing:
    """A type no argument has: with it as the fast-path type, every fast path is skipped."""


def _general_path(monkeypatch):
    aa.numpy_namespace()  # the cached namespace exists either way
    monkeypatch.setattr(aa, "_NDARRAY", _Nothing)
    monkeypatch.setattr(_v, "_NDARRAY", _Nothing)
    monkeypatch.setattr(aa, "_F64", object())
    monkeypatch.setattr(aa, "_F32", object())


def _outcome(fn):
    """("ok", list of NumPy results, type names) or ("error", type, message)."""
    try:
        out = fn()
    except Exception as exc:  # noqa: BLE001 - the exception itself is what is compared
        return ("error", type(exc), str(exc))
    outs = out if isinstance(out, tuple) else (out,)
    return ("ok", [aa.to_numpy(o).copy() for o in outs],
            [(type(o).__name__, str(o.dtype), tuple(o.shape)) for o in outs])


def _both(monkeypatch, fn):
    fast = _outcome(fn)
    with monkeypatch.context() as m:
        _general_path(m)
        general = _outcome(fn)
    return fast, general


def _assert_same(fast, general, *, exact=True):
    assert fast[0] == general[0], (fast, general)
    if fast[0] == "error":
        assert fast[1:] == general[1:]
        return
    assert fast[2] == general[2]  # types, dtypes and shapes
    for a, b in zip(fast[1], general[1]):
        if exact:
            np.testing.assert_array_equal(a, b)
        else:  # Numba kernels: parallel, fastmath; allow last-bit differences only
            np.testing.assert_allclose(a, b, rtol=1e-12 if a.dtype == np.float64 else 1e-5,
                                       atol=0)


rng = np.random.default_rng(15)
X = rng.random((40, 3))
Y = rng.random((30, 3))
V = rng.random(30)
W = np.log(rng.random(30) + 0.1)
S = rng.standard_normal((40, 3))
AB = rng.random(40)
IMG = rng.random((10, 10))


def _ops(backend, x=X, y=Y, v=V, w=W):
    return {
        "kernel_matvec": lambda: tiled.kernel_matvec(x, y, v, beta=2.0, backend=backend),
        "kernel_matvec scaled": lambda: tiled.kernel_matvec(
            x, y, v, beta=2.0, row_scale=AB, col_scale=V, x_bandwidth=AB + 0.5,
            y_bandwidth=V + 0.5, backend=backend),
        "kernel_logsumexp": lambda: tiled.kernel_logsumexp(x, y, beta=2.0, log_weights=w,
                                                           backend=backend),
        "kernel_softmax_matvec": lambda: tiled.kernel_softmax_matvec(x, y, v, beta=2.0,
                                                                     backend=backend),
        "mmd": lambda: mmd(x, y, bandwidth=[0.5, 1.0], backend=backend),
        "fisher_diagonal": lambda: arraygen.fisher_diagonal(x, AB, backend=backend),
        "fisher_langevin_step": lambda: arraygen.fisher_langevin_step(
            x, S, np.abs(S), AB, step_size=0.01, noise=S, backend=backend),
        "gaussian_filter": lambda: arraygen.gaussian_filter(IMG, 1.0, backend=backend),
    }


BACKENDS = ["array_api"] + (["numba_cpu"] if available()["numba_cpu"] is None else [])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("op", list(_ops(None)))
def test_fast_and_general_paths_agree_on_plain_arrays(monkeypatch, backend, dtype, op):
    x, y, v = X.astype(dtype), Y.astype(dtype), V.astype(dtype)
    fast, general = _both(monkeypatch, _ops(backend, x, y, v)[op])
    assert fast[0] == "ok", fast
    _assert_same(fast, general, exact=backend == "array_api")


def test_fast_path_matches_the_float64_oracle():
    """The fast path is not merely self-consistent: it agrees with the reference."""
    out = tiled.kernel_matvec(X, Y, V, beta=2.0)
    np.testing.assert_allclose(out, ref_tiled.kernel_matvec(X, Y, V, 2.0), rtol=1e-12)
    lse = tiled.kernel_logsumexp(X, Y, beta=2.0, log_weights=W)
    np.testing.assert_allclose(lse, ref_tiled.kernel_logsumexp(X, Y, 2.0, W), rtol=1e-12)
    np.testing.assert_allclose(arraygen.fisher_diagonal(S, AB), ref_fisher.fisher_diagonal(S, AB),
                               rtol=1e-14)


def _variants():
    torch = pytest.importorskip("torch")
    return {
        "fortran": (np.asfortranarray(X), Y),
        "strided": (np.repeat(X, 2, axis=0)[::2], Y),
        "big-endian": (X.astype(">f8"), Y.astype(">f8")),
        "float16": (X.astype(np.float16), Y.astype(np.float16)),
        "int": ((X * 10).astype(np.int64), (Y * 10).astype(np.int32)),
        "list": (X.tolist(), Y),
        "1-D": (X[:, 0].copy(), Y[:, 0].copy()),
        "subclass": (X.view(np.matrix).A.view(_Sub), Y),
        "torch": (torch.from_numpy(X.copy()), torch.from_numpy(Y.copy())),
    }


class _Sub(np.ndarray):
    """An ndarray subclass: not a plain ndarray, so it takes the general path."""


@pytest.mark.parametrize("variant", ["fortran", "strided", "big-endian", "float16", "int", "list",
                                     "1-D", "subclass", "torch"])
@pytest.mark.parametrize("op", ["kernel_matvec", "kernel_logsumexp", "kernel_softmax_matvec",
                                "mmd"])
def test_inputs_off_the_fast_path_still_work_and_agree(monkeypatch, variant, op):
    x, y = _variants()[variant]
    v, w = V, W
    if variant == "torch":
        v, w = y[:, 0] * 0 + 1, y[:, 1] - 1
    fn = _ops("array_api", x, y, v, w)[op]
    fast, general = _both(monkeypatch, fn)
    _assert_same(fast, general)
    if variant == "subclass":  # named by its module, as before the fast paths: same outcome
        return
    assert fast[0] == "ok", fast
    if op == "kernel_matvec":  # and the value is right (inputs read as float64 / float32)
        xf = np.asarray(aa.to_numpy(x) if not isinstance(x, list) else x, dtype=np.float64)
        yf = np.asarray(aa.to_numpy(y), dtype=np.float64)
        want = ref_tiled.kernel_matvec(xf.reshape(len(xf), -1), yf.reshape(len(yf), -1),
                                       np.asarray(aa.to_numpy(v), dtype=np.float64), 2.0)
        rtol = 2e-3 if variant == "float16" else 1e-12
        np.testing.assert_allclose(fast[1][0].astype(np.float64), want, rtol=rtol)


def _error_cases():
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(Y.copy())
    nan = X.copy()
    nan[3, 1] = np.nan
    return {
        "mixed numpy/torch": lambda: tiled.kernel_matvec(X, t, V, beta=1.0),
        "mixed log_weights": lambda: tiled.kernel_logsumexp(
            X, Y, beta=1.0, log_weights=torch.from_numpy(W.copy())),
        "mixed fisher": lambda: arraygen.fisher_langevin_step(
            X, S, torch.from_numpy(np.abs(S)), AB, step_size=0.1),
        "nan x": lambda: tiled.kernel_matvec(nan, Y, V, beta=1.0),
        "nan v": lambda: tiled.kernel_matvec(X, Y, V * np.nan, beta=1.0),
        "nan mmd": lambda: mmd(nan, Y, bandwidth=1.0),
        "dimension": lambda: tiled.kernel_matvec(X, Y[:, :2], V, beta=1.0),
        "3-D x": lambda: tiled.kernel_logsumexp(X[None], Y, beta=1.0),
        "no points": lambda: tiled.kernel_matvec(X[:0], Y, V, beta=1.0),
        "no coordinates": lambda: tiled.kernel_matvec(X[:, :0], Y[:, :0], V, beta=1.0),
        "v rows": lambda: tiled.kernel_matvec(X, Y, V[:-1], beta=1.0),
        "v 3-D": lambda: tiled.kernel_matvec(X, Y, V[:, None, None], beta=1.0),
        "complex": lambda: tiled.kernel_matvec(X + 0j, Y, V, beta=1.0),
        "strings": lambda: tiled.kernel_matvec([["a", "b", "c"]], Y, V, beta=1.0),
        "None x": lambda: tiled.kernel_logsumexp(None, Y, beta=1.0),  # was AttributeError
        "None y": lambda: mmd(X, None, bandwidth=1.0),
        "scalar x": lambda: tiled.kernel_logsumexp(1.5, Y, beta=1.0),
        "beta nan": lambda: tiled.kernel_matvec(X, Y, V, beta=float("nan")),
        "beta inf": lambda: tiled.kernel_matvec(X, Y, V, beta=float("inf")),
        "beta negative": lambda: tiled.kernel_matvec(X, Y, V, beta=-1.0),
        "beta string": lambda: tiled.kernel_matvec(X, Y, V, beta="1"),
        "beta overflow f32": lambda: tiled.kernel_matvec(X.astype(np.float32), Y.astype(
            np.float32), V.astype(np.float32), beta=1e39),
        "exponent range": lambda: tiled.kernel_matvec(X * 1e200, Y, V, beta=1.0),
        "unbiased n=1": lambda: mmd(X[:1], Y, bandwidth=1.0),
        "log_weights all -inf": lambda: tiled.kernel_logsumexp(
            X, Y, beta=1.0, log_weights=np.full(30, -np.inf)),
        "log_weights nan": lambda: tiled.kernel_logsumexp(
            X, Y, beta=1.0, log_weights=np.where(np.arange(30) == 4, np.nan, W)),
        "log_weights +inf": lambda: tiled.kernel_softmax_matvec(
            X, Y, V, beta=1.0, log_weights=np.where(np.arange(30) == 4, np.inf, -np.inf)),
        "log_weights shape": lambda: tiled.kernel_logsumexp(X, Y, beta=1.0, log_weights=W[:-1]),
        "fisher shape": lambda: arraygen.fisher_langevin_step(X, S[:3], S, AB, step_size=0.1),
        "fisher v negative": lambda: arraygen.fisher_langevin_step(X, S, S, AB, step_size=0.1,
                                                                   noise=S),
        "alpha_bar range": lambda: arraygen.fisher_diagonal(S, AB + 2.0),
        "gaussian sigma": lambda: arraygen.gaussian_filter(IMG, -1.0),
        "backend unknown": lambda: arraygen.fisher_diagonal(S, 0.5, backend="fast"),
    }


@pytest.mark.parametrize("case", ["mixed numpy/torch", "mixed log_weights", "mixed fisher",
                                  "nan x", "nan v", "nan mmd", "dimension", "3-D x", "no points",
                                  "no coordinates", "v rows", "v 3-D", "complex", "strings",
                                  "None x", "None y", "scalar x", "beta nan", "beta inf", "beta negative",
                                  "beta string", "beta overflow f32", "exponent range",
                                  "unbiased n=1", "log_weights all -inf",
                                  "log_weights nan", "log_weights +inf", "log_weights shape", "fisher shape",
                                  "fisher v negative", "alpha_bar range", "gaussian sigma",
                                  "backend unknown"])
def test_fast_and_general_paths_raise_the_same_errors(monkeypatch, case):
    fast, general = _both(monkeypatch, _error_cases()[case])
    assert fast[0] == "error", fast
    assert issubclass(fast[1], (TypeError, ValueError))
    _assert_same(fast, general)


def test_log_weights_with_zero_weights_agree(monkeypatch):
    """-inf entries (zero weights) next to finite ones pass both paths, with equal results."""
    w = np.where(np.arange(30) % 3 == 0, -np.inf, W)
    for w_cast in (w.astype(np.float32), w):
        fast, general = _both(monkeypatch, lambda w_cast=w_cast: tiled.kernel_logsumexp(
            X, Y, beta=1.0, log_weights=w_cast, backend="array_api"))
        assert fast[0] == "ok", fast
        _assert_same(fast, general)
    keep = np.isfinite(w)  # float64 run: the oracle on the points of non-zero weight
    np.testing.assert_allclose(fast[1][0], ref_tiled.kernel_logsumexp(X, Y[keep], 1.0, W[keep]),
                               rtol=1e-12)


def test_mixed_namespaces_message_names_each_argument():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"`x` is numpy, `y` is torch"):
        tiled.kernel_matvec(X, torch.from_numpy(Y.copy()), V, beta=1.0)


@pytest.mark.parametrize("env", [None, "array_api", "numba_cpu"])
@pytest.mark.parametrize("prefer", [False, True])
def test_dispatch_fast_path_chooses_as_the_general_rule(monkeypatch, env, prefer):
    if env is None:
        monkeypatch.delenv("ARRAYGEN_BACKEND", raising=False)
    else:
        monkeypatch.setenv("ARRAYGEN_BACKEND", env)
    for op in ("kernel_matvec", "fisher_diagonal", "gaussian_filter"):
        if op not in _dispatch.registered_ops():
            continue
        for arrays in ((X, Y, None), (X,), ()):
            def call(op=op, arrays=arrays):
                return _dispatch.select(op, *arrays, prefer_array_api=prefer)
            fast = _outcome(lambda: np.asarray(call()))
            with monkeypatch.context() as m:
                _general_path(m)
                general = _outcome(lambda: np.asarray(call()))
            _assert_same(fast, general)


def test_namespace_helpers_agree_with_array_api_compat(monkeypatch):
    import array_api_compat

    torch = pytest.importorskip("torch")
    t = torch.zeros(3)
    void = np.zeros(3, dtype=[("a", np.float64)])
    for value in (X, X.astype(">f8"), X.astype(np.float16), void, X.view(_Sub), t, 1.0, 2, None,
                  np.float64(1.0), [1.0]):
        assert aa.is_array(value) == (array_api_compat.is_array_api_obj(value)
                                      and not isinstance(value, (int, float, complex, bool)))
        assert aa.is_numpy_array(value) == array_api_compat.is_numpy_array(value)
        assert aa.is_torch_array(value) == array_api_compat.is_torch_array(value)
        assert aa.is_cupy_array(value) == array_api_compat.is_cupy_array(value)
        if aa.is_array(value):
            assert aa.device(value) == array_api_compat.device(value)
            assert aa.array_namespace(value) is array_api_compat.array_namespace(value)
    assert aa.array_namespace(x=X, y=None, v=V) is array_api_compat.array_namespace(X)
    assert aa.check_same_device(x=X, v=V) == array_api_compat.device(X)
    assert aa.check_same_device(x=None) is None
    with pytest.raises(TypeError, match="expected at least one array argument"):
        aa.array_namespace(x=None, y=None)
    fast, general = _both(monkeypatch, lambda: _v.common_namespace(x=None, y=None))
    _assert_same(fast, general)


@pytest.mark.parametrize("value", [0.5, -1.0, 0.0, float("nan"), float("inf"), 2, True, "1",
                                   np.float64(0.5), np.array(0.5), 1e400, 1 + 0j])
def test_check_scalar_float_fast_path_matches_other_real_types(value):
    """check_scalar's plain-float shortcut gives what np.float64 (the general path) gives."""
    def run(v):
        return _outcome(lambda: np.asarray(_v.check_scalar(v, "beta", positive=True)))

    got = run(value)
    if type(value) is float:
        other = run(np.float64(value))
        assert got[0] == other[0]
        if got[0] == "error":
            assert got[1:] == other[1:]
        else:
            np.testing.assert_array_equal(got[1][0], other[1][0])
    else:
        assert got[0] in ("ok", "error")
        if got[0] == "error":
            assert got[1] in (TypeError, ValueError)


def test_launcher_cache_follows_register():
    if available()["numba_cpu"] is not None:
        pytest.skip("numba_cpu not usable here")
    first = _dispatch.kernel("kernel_matvec", "numba_cpu")
    assert _dispatch.kernel("kernel_matvec", "numba_cpu") is first
    name = "_test_overhead_op"
    try:
        _dispatch.register(name, kernels={"numba_cpu": "math:fabs"}, gpu_order=())
        assert _dispatch.kernel(name, "numba_cpu")(-2.0) == 2.0
        _dispatch.register(name, kernels={"numba_cpu": "math:sqrt"}, gpu_order=())
        assert _dispatch.kernel(name, "numba_cpu")(4.0) == 2.0
    finally:
        _dispatch._OPS.pop(name, None)
        _dispatch._LAUNCHERS.pop((name, "numba_cpu"), None)


def test_dtype_helpers_agree_on_both_paths(monkeypatch):
    xp = aa.numpy_namespace()
    dtypes = [np.dtype(d) for d in (np.float64, np.float32, np.float16, np.int64, np.bool_)]
    arrays = [np.zeros(2, dtype=d) for d in dtypes]

    def table():
        return (
            [aa.is_half(xp, d) for d in dtypes],
            [str(aa.compute_dtype(xp, d)) for d in dtypes],
            [(str(aa.as_float_array(xp, a, "a")[0].dtype), str(aa.as_float_array(xp, a, "a")[1]))
             for a in arrays],
            [str(aa.result_dtype(xp, a, b)) for a in arrays for b in arrays],
        )

    fast = table()
    with monkeypatch.context() as m:
        _general_path(m)
        general = table()
    assert fast == general
    assert fast[0] == [False, False, True, False, False]
