"""Gaussian filter (tracking): sigma = 2, float32, last two axes, over backend x size.

``track_rel_err`` is max |y - scipy_float64| / max |scipy_float64| on the first image (scipy is
the oracle here). The peers (scipy.ndimage, torch conv2d, cupyx) are timed in
``asv_benchmarks/compare/bench_gaussian.py``.
"""

from __future__ import annotations

import numpy as np

from .common import data, on_gpu, require_backend, split, synchronize, to_namespace, with_gpu
from .common import repeat, rounds  # noqa: F401 (asv timing attributes)

SIZES = ["16x3x64x64", "16x3x256x256", "4x3x1024x1024"]
PARAMS = with_gpu(["numba_cpu@numpy", "array_api@numpy", "array_api@torch:cpu"],
                  ["cupy@cupy", "triton@torch:cuda", "numba_cuda@cupy"])
SIGMA = 2.0


def shape_of(size: str) -> tuple[int, ...]:
    return tuple(int(s) for s in size.split("x"))


class GaussianFilter:
    params = [PARAMS, SIZES]
    param_names = ["backend", "size"]
    timeout = 300

    def setup(self, param, size):
        backend, ns = split(param)
        shape = shape_of(size)
        if backend == "array_api" and np.prod(shape) > 2**22 and not on_gpu(ns):
            raise NotImplementedError("the Array-API path on CPU is timed up to 2**22 elements")
        require_backend(backend)
        from arraygen.gaussian import gaussian_filter

        self.ns = ns
        self.x = to_namespace(data(shape, seed=3), ns)
        self.fn = lambda: gaussian_filter(self.x, SIGMA, backend=backend)
        self.fn()  # warm-up: compilation and caches stay out of the timings
        synchronize(ns)

    def time_filter(self, param, size):
        self.fn()
        synchronize(self.ns)

    def track_rel_err(self, param, size):
        import scipy.ndimage as ndi

        from arraygen.testing import to_numpy

        y = to_numpy(self.fn())
        x0 = to_numpy(self.x)[(0,) * (self.x.ndim - 2)].astype(np.float64)
        want = ndi.gaussian_filter(x0, SIGMA)
        got = y[(0,) * (y.ndim - 2)].astype(np.float64)
        return float(np.abs(got - want).max() / np.abs(want).max())

    track_rel_err.unit = "relative"
