"""gaussian_filter / gaussian_filter1d against scipy.ndimage: derivatives (``order=``),
``output=``, ``radius=``, per-axis modes, complex input, kernels wider than the axis, byte
order, and the bad inputs of issue 13."""

from __future__ import annotations

import time

import numpy as np
import pytest
import scipy.ndimage as ndi
from scipy.ndimage._filters import _gaussian_kernel1d

import arraygen
import arraygen.gaussian as G
from arraygen import _array_api as aa
from arraygen.reference import gaussian as ref

MODES = ("reflect", "mirror", "nearest", "wrap", "constant")


def _close(actual, desired, rtol=1e-12, atol=1e-13):
    np.testing.assert_allclose(aa.to_numpy(actual), desired, rtol=rtol,
                               atol=atol * max(1.0, float(np.abs(desired).max())))


# taps --------------------------------------------------------------------------------------
@pytest.mark.parametrize("order", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("sigma,radius", [(0.6, None), (2.3, None), (1.5, 2), (1.0, 0)])
def test_kernel1d_matches_scipy_and_hermite_oracle(order, sigma, radius):
    r = int(4.0 * sigma + 0.5) if radius is None else radius
    w = G.gaussian_kernel1d(sigma, order=order, radius=radius)
    np.testing.assert_allclose(w, _gaussian_kernel1d(sigma, order, r), rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(w, ref.gaussian_kernel1d(sigma, 4.0, order, radius),
                               rtol=1e-12, atol=1e-15 * np.abs(w).max())


# derivatives, radius, per-axis modes, output (Array-API path, every namespace) --------------
@pytest.mark.parametrize("mode", MODES)
def test_order_per_axis_matches_scipy(xp, mode, rng):
    x = rng.standard_normal((2, 7, 9))
    for order in (1, 2, (0, 3), (2, 1)):
        want = ndi.gaussian_filter(x, (1.2, 0.8), order=order, mode=mode, cval=0.3,
                                   axes=(1, 2))
        y = G.gaussian_filter(xp.asarray(x), (1.2, 0.8), order=order, mode=mode, cval=0.3)
        assert aa.array_namespace(y) is aa.array_namespace(xp.asarray(x))
        _close(y, want)
        # the independent oracle (Hermite kernels, numpy.pad) agrees too
        _close(y, ref.gaussian_filter(x, (1.2, 0.8), (1, 2), mode, 0.3, order=order))


def test_radius_and_per_axis_modes_match_scipy(xp, rng):
    x = rng.standard_normal((6, 11))
    cases = [dict(radius=2), dict(radius=(1, 5)), dict(radius=(0, 3), order=(0, 1)),
             dict(mode=("wrap", "constant")), dict(mode=["mirror", "nearest"], radius=(9, 13)),
             dict(truncate=1.3, mode=("reflect", "grid-wrap"))]
    for kw in cases:
        want = ndi.gaussian_filter(x, (1.7, 2.2), cval=-1.0, **kw)
        y = G.gaussian_filter(xp.asarray(x), (1.7, 2.2), cval=-1.0, **kw)
        _close(y, want)


@pytest.mark.parametrize("axis,order,mode", [(-1, 0, "reflect"), (0, 1, "wrap"),
                                             (1, 2, "constant"), (2, 3, "mirror"),
                                             (-2, 1, "nearest")])
def test_gaussian_filter1d_matches_scipy(xp, axis, order, mode, rng):
    x = rng.standard_normal((4, 5, 6))
    for kw in ({}, {"truncate": 2.0}, {"radius": 7}):
        want = ndi.gaussian_filter1d(x, 1.4, axis=axis, order=order, mode=mode, cval=0.5, **kw)
        y = arraygen.gaussian_filter1d(xp.asarray(x), 1.4, axis, order, mode=mode, cval=0.5,
                                       **kw)
        _close(y, want)


def test_output_array_and_dtype_match_scipy(rng):
    x = 20.0 * rng.standard_normal((5, 8))
    for out in (np.float32, "float64", np.int32, np.int16):
        want = ndi.gaussian_filter(x, 1.1, output=out)
        y = G.gaussian_filter(x, 1.1, output=out, axes=(0, 1))
        assert y.dtype == want.dtype
        if np.dtype(out).kind == "i":  # passes chained through the integer dtype, as scipy
            np.testing.assert_array_equal(y, want)
        else:
            f32 = y.dtype == np.float32
            _close(y, want, rtol=1e-6 if f32 else 1e-12, atol=1e-6 if f32 else 1e-13)
    buf = np.empty((5, 8), np.float32)
    got = arraygen.gaussian_filter1d(x, 2.0, 0, 1, buf)
    assert got is buf
    _close(buf, ndi.gaussian_filter1d(x, 2.0, 0, 1), rtol=1e-5, atol=1e-6)
    # float32 input into a float64 output is computed in float64, as scipy does
    x32 = x.astype(np.float32)
    y = G.gaussian_filter(x32, 1.1, output=np.float64)
    assert y.dtype == np.float64
    _close(y, ndi.gaussian_filter(x32, 1.1, output=np.float64))


def test_output_array_other_namespaces(xp, rng):
    x = rng.standard_normal((4, 6))
    out = xp.asarray(np.zeros((4, 6)))
    got = G.gaussian_filter(xp.asarray(x), 1.0, output=out)
    assert got is out
    _close(out, ndi.gaussian_filter(x, 1.0))


@pytest.mark.parametrize("mode", MODES)
def test_complex_input_matches_scipy(xp, mode, rng):
    x = rng.standard_normal((5, 7)) + 1j * rng.standard_normal((5, 7))
    want = ndi.gaussian_filter(x, (1.0, 1.6), order=(0, 1), mode=mode, cval=0.5 - 2.0j)
    y = G.gaussian_filter(xp.asarray(x), (1.0, 1.6), order=(0, 1), mode=mode, cval=0.5 - 2.0j)
    assert xp.isdtype(y.dtype, "complex floating")
    _close(y, want)
    y64 = G.gaussian_filter(xp.asarray(x.astype(np.complex64)), 1.0, mode=mode)
    assert y64.dtype == xp.complex64
    _close(y64, ndi.gaussian_filter(x, 1.0, mode=mode), rtol=1e-5, atol=1e-6)


# kernels wider than the axis (issue 13: gaussian_filter(x, 1e9) allocated 60 GB) -----------
@pytest.mark.parametrize("mode", MODES)
def test_kernel_wider_than_axis_matches_scipy(mode, rng):
    """Folding taps onto the axis gives scipy's result for a radius far beyond the axis."""
    x = rng.standard_normal((2, 5, 7))
    for sigma, order in ((40.0, 0), (40.0, 1), (9.0, 2), (300.0, 0)):
        want = ndi.gaussian_filter(x, sigma, order=order, mode=mode, cval=0.7, axes=(1, 2))
        y = G.gaussian_filter(x, sigma, order=order, mode=mode, cval=0.7, backend="array_api")
        _close(y, want, rtol=1e-11)
    one = rng.standard_normal((3, 1))
    _close(G.gaussian_filter(one, 50.0, mode=mode, cval=0.7),
           ndi.gaussian_filter(one, 50.0, mode=mode, cval=0.7))


@pytest.mark.parametrize("mode", MODES)
def test_huge_sigma_is_fast_and_has_the_right_limit(mode, rng):
    """sigma = 3e5 (radius 1.2e6, folded in chunks): smoothing over the whole axis."""
    x = rng.standard_normal((5, 7))
    t0 = time.perf_counter()
    y = G.gaussian_filter(x, 3e5, mode=mode, cval=0.7)
    assert time.perf_counter() - t0 < 5.0
    limit = {"reflect": "mean", "mirror": "mean", "wrap": "mean"}.get(mode)
    z = x
    for ax in (0, 1):
        n = z.shape[ax]
        if limit == "mean":  # mirror visits the two end samples half as often
            w = np.ones(n) if mode != "mirror" else np.r_[0.5, np.ones(n - 2), 0.5]
            w = (w / w.sum()).reshape((-1, 1) if ax == 0 else (1, -1))
            z = np.broadcast_to((w * z).sum(axis=ax, keepdims=True), z.shape)
        elif mode == "nearest":
            ends = 0.5 * (np.take(z, [0], axis=ax) + np.take(z, [n - 1], axis=ax))
            z = np.broadcast_to(ends, z.shape)
        else:
            z = np.full(z.shape, 0.7)
    np.testing.assert_allclose(y, z, atol=1e-4)
    if limit == "mean":  # the fold is exact for periodic sources: far below the O(n/sigma) term
        np.testing.assert_allclose(y, z, atol=1e-8)


def test_radius_beyond_the_bound_raises_at_once():
    x = np.ones((4, 4))
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="`sigma` = 1e\\+09 with `truncate` = 4"):
        G.gaussian_filter(x, 1e9)
    with pytest.raises(ValueError, match="`radius`"):
        G.gaussian_filter(x, 1.0, radius=10**12)
    assert time.perf_counter() - t0 < 1.0


# kernel backends: what they run (order 0, real) and the routing of the rest -----------------
def test_backends_per_axis_modes_wide_kernels_and_output(kernel_backend, rng):
    kb = kernel_backend
    x64 = rng.standard_normal((2, 6, 9))
    cases = [dict(sigma=(1.0, 2.0), mode=("wrap", "constant")),
             dict(sigma=(30.0, 1.2), mode="reflect"), dict(sigma=25.0, mode="nearest"),
             dict(sigma=(2.0, 40.0), mode=("mirror", "wrap"), radius=(3, 100)),
             dict(sigma=(1.5, 2.5), order=(2, 0), mode="mirror")]  # even order: symmetric
    for kw in cases:
        want = ndi.gaussian_filter(x64, axes=(1, 2), cval=0.4, **kw)
        for dtype in ("float32", "float64"):
            y = G.gaussian_filter(kb.xp.asarray(x64.astype(dtype)), cval=0.4, backend=kb.name,
                                  **kw)
            assert y.dtype == getattr(kb.xp, dtype)
            _close(y, want, rtol=1e-5 if dtype == "float32" else 1e-12,
                   atol=2e-6 if dtype == "float32" else 1e-13)
    # derivative passes and complex input take the Array-API path under an explicit backend
    xc = x64 + 0.5j * x64[:, ::-1]
    want = ndi.gaussian_filter(xc, (1.0, 1.5), order=(1, 0), axes=(1, 2))
    y = G.gaussian_filter(kb.xp.asarray(xc), (1.0, 1.5), order=(1, 0), backend=kb.name)
    _close(y, want)


def test_big_endian_and_list_input_default_backend(rng):
    x = rng.standard_normal((6, 7))
    want = ndi.gaussian_filter(x, 1.3)
    for dt in (">f8", ">f4", "<f8"):
        y = G.gaussian_filter(x.astype(dt), 1.3)
        assert y.dtype.isnative and y.dtype.kind == "f"
        _close(y, want, rtol=1e-5 if "4" in dt else 1e-12, atol=1e-6 if "4" in dt else 1e-13)
    _close(G.gaussian_filter(x.tolist(), 1.3), want)
    _close(arraygen.gaussian_filter1d(x.astype(">f8"), 1.3, axis=0),
           ndi.gaussian_filter1d(x, 1.3, axis=0))
    _close(G.gaussian_filter_fft(x.astype(">f8"), 1.0), G.gaussian_filter_fft(x, 1.0))


# bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,exc,match", [
    ({"order": -1}, ValueError, "`order` must be >= 0"),
    ({"order": 1.5}, TypeError, "`order` must be an integer"),
    ({"order": (1, 2, 3)}, ValueError, "`order` must be a scalar or have one value per axis"),
    ({"radius": -2}, ValueError, "`radius` must be >= 0"),
    ({"radius": 2.5}, TypeError, "`radius` must be an integer"),
    ({"mode": ("wrap", "bogus")}, ValueError, "`mode` must be one of"),
    ({"mode": ("wrap",)}, ValueError, "`mode` must be a scalar or have one value per axis"),
    ({"output": np.zeros((3, 3))}, ValueError, r"`output` must have the shape of `x` \(4, 5\)"),
    ({"output": "bogus"}, TypeError, "`output` must be an array or a dtype"),
    ({"cval": 1 + 2j}, TypeError, "`cval` must be a real number"),
])
def test_bad_input(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        G.gaussian_filter(np.ones((4, 5)), 1.0, **kwargs)


def test_axes_none_is_every_axis_as_scipy(rng):
    x = rng.standard_normal((3, 4, 5))
    _close(G.gaussian_filter(x, (0.7, 1.0, 1.5), axes=None, order=(0, 1, 0)),
           ndi.gaussian_filter(x, (0.7, 1.0, 1.5), order=(0, 1, 0)))


def test_bad_input_other():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="`output` must have a complex dtype"):
        G.gaussian_filter(np.ones((4, 5), complex), 1.0, output=np.float64)
    with pytest.raises(TypeError, match="`output`.*torch|namespaces"):
        G.gaussian_filter(np.ones((4, 5)), 1.0, output=torch.zeros(4, 5))
    with pytest.raises(TypeError, match="`sigma` must be a scalar for gaussian_filter1d"):
        arraygen.gaussian_filter1d(np.ones(5), (1.0, 2.0))
    with pytest.raises(TypeError, match="`x` must be an array"):
        G.gaussian_filter("image", 1.0)
    with pytest.raises(TypeError, match="`x` must be an array"):
        G.gaussian_filter([[1.0, 2.0], [3.0]], 1.0)
    for dtype in ("float77", "int32"):
        with pytest.raises(TypeError, match="`dtype` must be a real floating dtype"):
            G.gaussian_kernel_fft((4, 4), 1.0, dtype=dtype)
