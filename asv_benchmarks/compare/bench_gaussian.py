"""Gaussian filter beside scipy.ndimage, a separable torch conv2d and cupyx.scipy.ndimage.

Problem and sizes: ``asv_benchmarks/benchmarks/bench_gaussian.py`` (sigma = 2, float32, last
two axes; the torch peer uses the same 17 taps with scipy's 'reflect' boundary).
"""

from __future__ import annotations

from ._tracking import tracking

T = tracking("bench_gaussian")
C = tracking("common")

PARAMS = C.with_gpu(["numba_cpu@numpy", "peer:scipy.ndimage@numpy", "peer:torch_conv2d@torch:cpu"],
                    ["cupy@cupy", "peer:cupyx.ndimage@cupy", "peer:torch_conv2d@torch:cuda"])
SIZES = ["16x3x256x256", "4x3x1024x1024"]


def torch_separable(x, sigma: float):
    """Separable conv2d with the same taps; the padding is an index gather reproducing scipy's
    half-sample 'reflect' (torch's own padding modes are not it)."""
    import torch

    from arraygen._kernels.gaussian import source_indices
    from arraygen.gaussian import gaussian_kernel1d

    w = torch.from_numpy(gaussian_kernel1d(sigma)).to(dtype=x.dtype, device=x.device)
    r = (w.numel() - 1) // 2
    b, c, h, wd = x.shape
    y = x.reshape(b * c, 1, h, wd)
    iy = torch.as_tensor(source_indices(h, r, "reflect"), device=x.device)
    ix = torch.as_tensor(source_indices(wd, r, "reflect"), device=x.device)
    y = torch.nn.functional.conv2d(y.index_select(2, iy), w.view(1, 1, -1, 1))
    y = torch.nn.functional.conv2d(y.index_select(3, ix), w.view(1, 1, 1, -1))
    return y.reshape(b, c, h, wd)


class GaussianFilter:
    params = [PARAMS, SIZES]
    param_names = ["backend", "size"]
    timeout = 300

    def setup(self, param, size):
        backend, ns = C.split(param)
        self.ns = ns
        self.x = C.to_namespace(C.data(T.shape_of(size), seed=3), ns)
        if backend == "peer:scipy.ndimage":
            import scipy.ndimage as ndi

            self.fn = lambda: ndi.gaussian_filter(self.x, T.SIGMA, axes=(-2, -1))
        elif backend == "peer:torch_conv2d":
            self.fn = lambda: torch_separable(self.x, T.SIGMA)
        elif backend == "peer:cupyx.ndimage":
            cndi = C.require_module("cupyx.scipy.ndimage", "cupy-cuda13x")
            self.fn = lambda: cndi.gaussian_filter(self.x, (0, 0, T.SIGMA, T.SIGMA))
        else:
            C.require_backend(backend)
            from arraygen.gaussian import gaussian_filter

            self.fn = lambda: gaussian_filter(self.x, T.SIGMA, backend=backend)
        self.fn()
        C.synchronize(ns)

    def time_filter(self, param, size):
        self.fn()
        C.synchronize(self.ns)
