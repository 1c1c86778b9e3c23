"""Gaussian filter: every launch variant of the GPU backends (``TUNING`` records) against scipy.

The fused 2-D kernels (CuPy column strips and tiles, Triton banded products, Numba-CUDA shared
tiles) and the per-axis passes they replace must agree with scipy.ndimage in every boundary
mode, for both dtypes, on shapes with several tiles, partial tiles and widths off the vector
path. The simulators (CPU) run the Triton and Numba-CUDA cases at tiny sizes.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import scipy.ndimage as ndi

import arraygen.gaussian as G
from arraygen.testing import assert_close

MODES = ("reflect", "mirror", "nearest", "wrap", "constant")

#: backend -> tuning overrides to check (the default record is the first entry).
VARIANTS = {
    "cupy": [{}, {"fused": "tile"}, {"fused": "strip", "strip_threads": 32, "strip_rows": 16},
             {"fused": "strip", "strip_threads": 64, "strip_rows": 40}],
    "triton": [{}, {"fused": False}, {"steps": 1},
               {"out_w": 32, "steps": 3, "dot_float64": True}, {"out_w": 32, "wide": True}],
    "numba_cuda": [{}, {"fused": False}, {"vertical_rows": 4}],
}


def _tuning(name):
    return importlib.import_module(f"arraygen.backends.{name}.gaussian").TUNING


def _check(y, want, dtype, sigma):
    taps = sum(2 * int(4.0 * s + 0.5) + 1 for s in sigma if s > 0)
    assert_close(y, want, kind="reduction", n_terms=max(taps, 1), dtype=dtype,
                 check_namespace=False, check_dtype=False, check_device=False)


def _cases(kb, mode):
    if kb.simulated:  # several tiles / steps of the simulated kernels, kept small
        return [((1, 11, 13), (1.0, 0.6))] + ([((1, 37, 9), (2.0, 1.0))] if mode == "reflect"
                                             else [])
    return [((2, 67, 531), (2.0, 3.5)), ((3, 300, 256), (2.0, 2.0)), ((1, 150, 77), (3.0, 0.8)),
            ((2, 33, 1030), (0.4, 4.0)), ((1, 20, 40), (5.0, 5.0))]


@pytest.mark.parametrize("mode", MODES)
def test_gpu_variants_match_scipy(kernel_backend, mode, rng):
    kb = kernel_backend
    if kb.name not in VARIANTS:
        pytest.skip("no launch variants")
    tuning = _tuning(kb.name)
    for shape, sigma in _cases(kb, mode):
        x64 = rng.standard_normal(shape)
        want = ndi.gaussian_filter(x64, (0,) + sigma, mode=mode, cval=-0.6)
        variants = VARIANTS[kb.name]
        if kb.simulated and shape[1] > 16:  # the tall case: several row tiles, default only
            variants = variants[:1]
        for variant in variants:
            with tuning.override(**variant):
                for dtype in ("float32", "float64"):
                    x = kb.xp.asarray(x64.astype(dtype))
                    y = G.gaussian_filter(x, sigma, mode=mode, cval=-0.6, backend=kb.name)
                    assert type(y) is type(x) and y.dtype == x.dtype
                    _check(y, want, dtype, sigma)


def test_gpu_variants_other_axes_and_radius_limits(kernel_backend, rng):
    """Fused last two axes after a pass over a leading axis; radii beyond the fused limit."""
    kb = kernel_backend
    if kb.name not in VARIANTS:
        pytest.skip("no launch variants")
    sigmas = [(0.7, 1.2, 0.5)] if kb.simulated else [(1.5, 2.0, 5.0), (0.5, 4.5, 1.0)]
    shape = (3, 10, 12) if kb.simulated else (5, 70, 90)
    x64 = rng.standard_normal(shape)
    for sigma in sigmas:
        want = ndi.gaussian_filter(x64, sigma, mode="mirror")
        for variant in VARIANTS[kb.name]:
            with _tuning(kb.name).override(**variant):
                y = G.gaussian_filter(kb.xp.asarray(x64.astype("float32")), sigma,
                                      axes=(0, 1, 2), mode="mirror", backend=kb.name)
                _check(y, want, "float32", sigma)


def test_triton_tf32x3_products(kernel_backend, rng):
    """The tensor-core variant of the Triton products stays within 1e-5 of the float64 oracle."""
    if kernel_backend.name != "triton":
        pytest.skip("Triton variant")
    x64 = rng.standard_normal((2, 40, 70) if not kernel_backend.simulated else (1, 20, 19))
    want = ndi.gaussian_filter(x64, (0, 2.0, 2.0))
    with _tuning("triton").override(precision="tf32x3"):
        y = G.gaussian_filter(kernel_backend.xp.asarray(x64.astype("float32")), 2.0,
                              backend="triton")
    got = np.asarray(y.cpu() if hasattr(y, "cpu") else y, dtype=np.float64)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_plan_cache_keeps_every_check(rng):
    """The memoised pass plan: a cached sigma=1 does not let sigma=True (or NaN) through, and
    equal options give the same result as a fresh plan."""
    x = rng.standard_normal((5, 6))
    y1 = G.gaussian_filter(x, 1, mode="mirror")
    with pytest.raises(TypeError, match="`sigma` must be a real number; got True"):
        G.gaussian_filter(x, True, mode="mirror")
    with pytest.raises(ValueError, match="`sigma` must be finite"):
        G.gaussian_filter(x, float("nan"))
    with pytest.raises(ValueError, match="`truncate`"):
        G.gaussian_filter(x, 1, truncate=-1.0)
    G._PLAN_CACHE.clear()
    np.testing.assert_array_equal(G.gaussian_filter(x, 1, mode="mirror"), y1)
    np.testing.assert_allclose(y1, ndi.gaussian_filter(x, 1, mode="mirror"), rtol=1e-13,
                               atol=1e-15)
