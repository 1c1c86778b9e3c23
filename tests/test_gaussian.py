"""Gaussian hot path: every backend and namespace against scipy.ndimage and the float64 oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage as ndi

import arraygen.gaussian as G
from arraygen import _array_api as aa
from arraygen.cache import PersistentKernelCache
from arraygen.reference import gaussian as ref
from arraygen.testing import assert_close as _assert_close


def assert_close(actual, desired, **kw):
    """Values against a NumPy float64 oracle; namespace, device and dtype are asserted apart."""
    for check in ("check_namespace", "check_dtype", "check_device"):
        kw.setdefault(check, False)
    _assert_close(actual, desired, **kw)


MODES = ("reflect", "mirror", "nearest", "wrap", "constant")


def _taps(sigmas, truncate=4.0):
    return sum(2 * int(truncate * s + 0.5) + 1 for s in sigmas if s > 0)


def _check(actual, desired, dtype, sigmas, truncate=4.0):
    assert_close(actual, desired, kind="reduction", n_terms=max(_taps(sigmas, truncate), 1),
                 dtype=dtype)


# oracle ------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sigma,axes", [(0.8, (-2, -1)), ((2.5, 0.0), (-2, -1)),
                                        ((1.0, 3.0, 0.4), (0, 1, 2)), (6.0, (1,))])
def test_reference_matches_scipy(mode, sigma, axes, rng):
    x = rng.standard_normal((3, 5, 8))  # radius 24 > every axis: multiple reflections
    want = ndi.gaussian_filter(x, sigma, axes=axes, mode=mode, cval=-0.7)
    got = ref.gaussian_filter(x, sigma, axes, mode, -0.7)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("sigma,truncate", [(0.3, 4.0), (1.0, 4.0), (2.0, 4.0), (1.7, 2.5)])
def test_kernel1d_matches_scipy_impulse_response(sigma, truncate):
    w = G.gaussian_kernel1d(sigma, truncate)
    r = int(truncate * sigma + 0.5)
    assert w.shape == (2 * r + 1,)
    delta = np.zeros(4 * r + 3)
    delta[2 * r + 1] = 1.0
    resp = ndi.gaussian_filter1d(delta, sigma, truncate=truncate, mode="constant")
    np.testing.assert_allclose(w, resp[r + 1:3 * r + 2], rtol=1e-14, atol=1e-17)
    assert math.isclose(w.sum(), 1.0, rel_tol=1e-14)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_source_indices_match_numpy_pad(mode, n, rng):
    r = 9
    x = rng.standard_normal(n)
    pad = {"reflect": "symmetric", "mirror": "reflect", "nearest": "edge", "wrap": "wrap",
           "constant": "constant"}[mode]
    want = np.pad(x, r, mode=pad, constant_values=np.nan) if mode == "constant" else np.pad(
        x, r, mode=pad)
    src = G.source_indices(n, r, mode)
    got = np.where(src >= 0, x[np.maximum(src, 0)], np.nan)
    np.testing.assert_array_equal(got, want)


# every backend -----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_backend_matches_scipy(kernel_backend, mode, rng):
    """Odd sizes, per-axis sigma with a 0, three axes, both dtypes, on each backend."""
    kb = kernel_backend
    x64 = rng.standard_normal((3, 5, 7))
    sigma = (0.9, 0.0, 2.0)
    want = ndi.gaussian_filter(x64, sigma, axes=(0, 1, 2), mode=mode, cval=0.25)
    for dtype in ("float32", "float64"):
        x = kb.xp.asarray(x64.astype(dtype))
        y = G.gaussian_filter(x, sigma, axes=(0, 1, 2), mode=mode, cval=0.25, backend=kb.name)
        assert type(y) is type(x) and y.dtype == x.dtype and tuple(y.shape) == x64.shape
        _check(y, want, dtype, sigma)


def test_backend_last_two_axes_non_contiguous(kernel_backend, rng):
    """The hot case (last two axes, leading batch axes) on a strided, transposed view."""
    kb = kernel_backend
    base = rng.standard_normal((2, 9, 2, 13)).astype(np.float32)
    view_np = np.transpose(base, (2, 0, 1, 3))[:, :, ::2, 1:]  # (2, 2, 5, 12), non-contiguous
    want = ndi.gaussian_filter(view_np.astype(np.float64), (0, 0, 1.3, 0.7), mode="reflect")
    if kb.xp.name.startswith("torch"):
        import torch

        t = torch.from_numpy(base).to(kb.xp.device)
        x = t.permute(2, 0, 1, 3)[:, :, ::2, 1:]
    else:
        x = kb.xp.asarray(base)
        x = kb.xp.permute_dims(x, (2, 0, 1, 3))[:, :, ::2, 1:]
    y = G.gaussian_filter(x, (1.3, 0.7), backend=kb.name)
    _check(y, want, "float32", (1.3, 0.7))
    _check(x, view_np, "float32", ())  # input untouched


def test_backend_gpu_tiles_and_fallbacks(kernel_backend, rng):
    """Several fused tiles per axis, partial tiles, a radius beyond the fused kernel's limit."""
    kb = kernel_backend
    if kb.simulated:
        pytest.skip("too large for the simulator")
    x64 = rng.standard_normal((2, 67, 531))
    for sigma, mode in [((2.0, 3.5), "reflect"), ((2.0, 2.0), "constant"),
                        ((4.5, 1.0), "wrap"), ((0.4, 2.0), "mirror"), ((3.0, 1.2), "nearest")]:
        want = ndi.gaussian_filter(x64, sigma, axes=(-2, -1), mode=mode, cval=1.5)
        for dtype in ("float32", "float64"):
            y = G.gaussian_filter(kb.xp.asarray(x64.astype(dtype)), sigma, mode=mode, cval=1.5,
                                  backend=kb.name)
            _check(y, want, dtype, sigma)


@pytest.mark.parametrize("mode", ["constant", ("constant", "reflect"), ("reflect", "constant")])
def test_backend_derivatives_constant_mode(kernel_backend, mode, rng):
    """Derivative taps (sum != 1) with a nonzero cval: every 1-D pass pads ITS input with cval,
    as scipy does, so a fused 2-D kernel must not pad the second pass with the first pass's
    filtered cval."""
    kb = kernel_backend
    x64 = rng.standard_normal((2, 9, 11))
    for order in (1, (1, 0), (0, 2), (2, 1)):
        want = ndi.gaussian_filter(x64, (1.2, 0.8), order=order, mode=mode, cval=0.3,
                                   axes=(1, 2))
        for dtype in ("float32", "float64"):
            y = G.gaussian_filter(kb.xp.asarray(x64.astype(dtype)), (1.2, 0.8), order=order,
                                  mode=mode, cval=0.3, backend=kb.name)
            _check(y, want, dtype, (1.2, 0.8))


def test_cupy_fused_tiles(kernel_backend, rng):
    """The fused CuPy kernel: several tiles, partial tiles, widths off the 16-byte vector path."""
    if kernel_backend.name != "cupy":
        pytest.skip("CuPy fused-kernel cases")
    for shape, sigma, mode in [((2, 300, 531), (2.0, 3.5), "reflect"),
                               ((1, 67, 300), (1.0, 1.0), "constant"),
                               ((3, 150, 77), (3.0, 0.8), "mirror")]:
        x64 = rng.standard_normal(shape)
        want = ndi.gaussian_filter(x64, (0,) + sigma, mode=mode, cval=-1.0)
        for dtype in ("float32", "float64"):
            x = kernel_backend.xp.asarray(x64.astype(dtype))
            y = G.gaussian_filter(x, sigma, mode=mode, cval=-1.0, backend="cupy")
            _check(y, want, dtype, sigma)


# namespaces, dtypes, dispatch --------------------------------------------------------------
def test_namespaces_and_dtypes(xp, rng):
    x64 = rng.standard_normal((2, 6, 9))
    want = ndi.gaussian_filter(x64, 1.5, axes=(-2, -1))
    for dtype in ("float32", "float64"):
        x = xp.asarray(x64.astype(dtype))
        y = G.gaussian_filter(x, 1.5)
        assert aa.array_namespace(y) is aa.array_namespace(x)
        assert y.dtype == x.dtype and aa.device(y) == aa.device(x)
        _check(y, want, dtype, (1.5, 1.5))
    xi = xp.asarray(np.arange(54).reshape(6, 9))
    yi = G.gaussian_filter(xi, 1.0)
    assert xp.isdtype(yi.dtype, "real floating")
    _check(yi, ndi.gaussian_filter(np.arange(54.0).reshape(6, 9), 1.0), "float32", (1.0, 1.0))


def test_half_precision_computed_in_float32(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((5, 11)).astype(np.float16)
    for arr in (x, torch.from_numpy(x)):
        y = G.gaussian_filter(arr, 1.2)
        assert y.dtype == arr.dtype
        assert_close(y, ndi.gaussian_filter(x.astype(np.float64), 1.2), dtype="float16")


def test_torch_autograd_goes_through_array_api(rng):
    torch = pytest.importorskip("torch")
    x = torch.tensor(rng.standard_normal((4, 6)), requires_grad=True)
    G.gaussian_filter(x, 1.0, mode="wrap").sum().backward()
    # wrap mode preserves the sum, so d(sum y)/dx = 1 everywhere
    np.testing.assert_allclose(x.grad.numpy(), 1.0, rtol=1e-12)


@pytest.mark.parametrize("mode", ["reflect", "wrap"])
def test_default_mode_preserves_intensity(kernel_backend, mode, rng):
    """reflect (half-sample symmetric) and wrap are doubly stochastic while r < n: the total
    intensity of every image is preserved (mirror, nearest and constant are not)."""
    x64 = rng.random((2, 9, 13))
    x = kernel_backend.xp.asarray(x64)
    y = aa.to_numpy(G.gaussian_filter(x, (2.0, 3.0), mode=mode, backend=kernel_backend.name))
    np.testing.assert_allclose(y.sum(axis=(1, 2)), x64.sum(axis=(1, 2)), rtol=1e-13)


def test_sigma_zero_and_tiny_leave_input_unchanged(rng):
    x = rng.standard_normal((4, 5))
    for sigma in (0.0, 1e-20, 0.1):  # 0.1: radius 0, a single tap of weight 1
        y = G.gaussian_filter(x, sigma)
        np.testing.assert_array_equal(y, x)
        assert y is not x


def test_empty_input_returns_empty():
    y = G.gaussian_filter(np.zeros((0, 4)), 1.0)
    assert y.shape == (0, 4)


def test_mode_aliases():
    x = np.random.default_rng(1).standard_normal((5, 6))
    np.testing.assert_allclose(G.gaussian_filter(x, 1.0, mode="grid-wrap"),
                               G.gaussian_filter(x, 1.0, mode="wrap"), rtol=0, atol=0)


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"sigma": -1.0}, ValueError, "`sigma` must be non-negative"),
    ({"sigma": float("nan")}, ValueError, "`sigma` must be finite"),
    ({"sigma": float("inf")}, ValueError, "`sigma` must be finite"),
    ({"sigma": (1.0, 2.0, 3.0)}, ValueError, "`sigma` must be a scalar or have one value"),
    ({"sigma": 1.0, "mode": "bogus"}, ValueError, "`mode` must be one of 'reflect', 'mirror'"),
    ({"sigma": 1.0, "mode": 3}, TypeError, "`mode` must be a string"),
    ({"sigma": 1.0, "axes": (0, 3)}, ValueError, "`axes` entry 3 is out of range"),
    ({"sigma": 1.0, "axes": (1, -2)}, ValueError, "`axes` must not repeat"),
    ({"sigma": 1.0, "axes": ()}, ValueError, "`axes` must name at least one axis"),
    ({"sigma": 1.0, "axes": (0.5,)}, TypeError, "`axes` must be an integer; got 0.5"),
    ({"sigma": 1.0, "truncate": 0.0}, ValueError, "`truncate` must be positive"),
    ({"sigma": 1.0, "truncate": -2.0}, ValueError, "`truncate` must be positive"),
    ({"sigma": 1.0, "cval": float("nan")}, ValueError, "`cval` must be finite"),
])
def test_bad_input(kwargs, exc, match):
    x = np.ones((3, 4, 5))
    sigma = kwargs.pop("sigma")
    with pytest.raises(exc, match=match):
        G.gaussian_filter(x, sigma, **kwargs)


def test_bad_input_fft():
    x = np.ones((4, 5))
    with pytest.raises(ValueError, match="`sigma` must be non-negative"):
        G.gaussian_filter_fft(x, -0.5)
    with pytest.raises(ValueError, match="`axes` must not repeat"):
        G.gaussian_filter_fft(x, 1.0, axes=(0, 0))
    with pytest.raises(ValueError, match="`floor` must be < 1.0"):
        G.gaussian_kernel_fft((8, 8), 1.0, floor=2.0)
    with pytest.raises(ValueError, match="`shape` must contain integers >= 1"):
        G.gaussian_kernel_fft((0, 8), 1.0)
    with pytest.raises(TypeError, match="complex|real"):
        G.gaussian_filter_fft(np.ones((3, 3), dtype=complex), 1.0)


# FFT path ----------------------------------------------------------------------------------
def test_kernel_fft_matches_analytic_transform():
    shape, sigma = (12, 9, 10), (1.0, 0.5, 2.0)
    g = G.gaussian_kernel_fft(shape, sigma, floor=0.0, spacing=1.0)
    assert g.shape == (12, 9, 6) and g.dtype == np.float64
    f0, f1, f2 = np.meshgrid(np.fft.fftfreq(12), np.fft.fftfreq(9), np.fft.rfftfreq(10),
                             indexing="ij")
    want = np.exp(-2 * np.pi**2 * ((1.0 * f0) ** 2 + (0.5 * f1) ** 2 + (2.0 * f2) ** 2))
    np.testing.assert_allclose(g, want, rtol=1e-14)
    np.testing.assert_allclose(g, ref.gaussian_kernel_fft(shape, sigma, 0.0, 1.0), rtol=1e-14)
    # default spacing: unit-length domain, integer wave numbers, sigma in domain units
    g_unit = G.gaussian_kernel_fft(shape, sigma, floor=0.0)
    k0, k1, k2 = np.meshgrid(np.arange(12) - 12 * (np.arange(12) >= 6),
                             np.arange(9) - 9 * (np.arange(9) >= 5), np.arange(6), indexing="ij")
    want_unit = np.exp(-2 * np.pi**2 * ((1.0 * k0) ** 2 + (0.5 * k1) ** 2 + (2.0 * k2) ** 2))
    np.testing.assert_allclose(g_unit, want_unit, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(G.gaussian_kernel_fft((64,), 2.0 / 64, floor=0.0),
                               G.gaussian_kernel_fft((64,), 2.0, floor=0.0, spacing=1.0),
                               rtol=1e-12)
    # the transform of the normalised sampled kernel agrees up to aliasing + truncation
    w = G.gaussian_kernel1d(2.0, truncate=8.0)
    dtft = np.real(np.fft.rfft(np.roll(np.pad(w, (0, 64 - len(w))), -(len(w) // 2))))
    np.testing.assert_allclose(G.gaussian_kernel_fft((64,), 2.0, floor=0.0, spacing=1.0), dtft,
                               atol=1e-8)


def test_kernel_fft_floor():
    # the issue's check: shape (64, 64), sigma = 1 (default unit-length domain) reaches the
    # 1e-12 floor, far below the old 1e-6 clamp
    g_issue = G.gaussian_kernel_fft((64, 64), 1.0)
    assert float(g_issue.min()) < 1e-10
    assert float(g_issue.min()) == 1e-12 and float(g_issue[0, 0]) == 1.0
    # in samples (spacing 1) the smallest coefficient is exp(-2 pi^2 sigma^2 * 2 * 0.25)
    g1 = G.gaussian_kernel_fft((64, 64), 1.0, spacing=1.0)
    assert math.isclose(float(g1.min()), math.exp(-math.pi**2), rel_tol=1e-12)
    g4 = G.gaussian_kernel_fft((64, 64), 4.0, spacing=1.0)
    assert float(g4.min()) < 1e-10  # not the old 1e-6 clamp
    assert float(g4.min()) == 1e-12
    assert float(G.gaussian_kernel_fft((64, 64), 4.0, floor=1e-6, spacing=1.0).min()) == 1e-6
    assert float(G.gaussian_kernel_fft((64, 64), 4.0, floor=0.0, spacing=1.0).min()) < 1e-60


def test_kernel_fft_namespace_dtype_device_and_memory_cache(xp):
    g = G.gaussian_kernel_fft((8, 6), 1.5, xp=xp.namespace, device=xp.device, dtype=xp.float32)
    here = aa.device(xp.asarray(np.zeros(1)))  # torch: cuda:0, not the fixture's "cuda"
    assert g.dtype == xp.float32 and aa.device(g) == here and tuple(g.shape) == (8, 4)
    again = G.gaussian_kernel_fft((8, 6), 1.5, xp=xp.namespace, device=xp.device,
                                  dtype=xp.float32)
    assert again is g
    assert_close(g, ref.gaussian_kernel_fft((8, 6), 1.5), dtype="float32")


def test_kernel_fft_disk_cache(tmp_path):
    cache = PersistentKernelCache(tmp_path)
    shape = (10, 7)
    g = G.gaussian_kernel_fft(shape, 0.731, cache=cache)
    assert len(cache) == 1
    stored = cache.get("gaussian_kernel_fft", shape=list(shape), sigma=[0.731, 0.731],
                       floor=1e-12, spacing=[1 / 10, 1 / 7])
    np.testing.assert_array_equal(stored, g)


@pytest.mark.parametrize("sigma", [2.0, (3.0, 2.5)])
def test_filter_fft_matches_periodic_convolution(xp, sigma, rng):
    """Against scipy's wrap mode with a long kernel and against direct periodic summation.

    The FFT path convolves with the continuous Gaussian's DFT; scipy convolves with the
    sampled, truncated and renormalised kernel. With truncate=12 the two differ only by
    aliasing, exp(-2 pi^2 sigma^2 (1-|f|)^2) <= 3e-9 for sigma >= 2 (tolerance 1e-8 in
    float64); with scipy's default truncate=4 by the lost tail mass (tolerance 2e-4).
    """
    x64 = rng.standard_normal((2, 24, 31))
    axes = (-2, -1)
    want = ndi.gaussian_filter(x64, sigma, axes=axes, mode="wrap", truncate=12.0)
    exact = ref.periodic_gaussian_filter(x64, sigma, axes)
    np.testing.assert_allclose(exact, want, atol=1e-8)
    for dtype in ("float32", "float64"):
        x = xp.asarray(x64.astype(dtype))
        y = G.gaussian_filter_fft(x, sigma, axes=axes)
        assert y.dtype == x.dtype and aa.device(y) == aa.device(x)
        scale = float(np.abs(want).max())
        atol = 1e-8 * scale if dtype == "float64" else 2e-6 * scale
        assert_close(y, exact, rtol=0, atol=atol)
        assert_close(y, ndi.gaussian_filter(x64, sigma, axes=axes, mode="wrap"), rtol=0,
                     atol=2e-4 * scale)


def test_filter_fft_other_axes(rng):
    x = rng.standard_normal((16, 3, 20))
    y = G.gaussian_filter_fft(x, 2.0, axes=(2, 0))
    want = ndi.gaussian_filter(x, (2.0, 0, 2.0), mode="wrap", truncate=12.0)
    np.testing.assert_allclose(y, want, atol=1e-8)
