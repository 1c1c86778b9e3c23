"""Gaussian filter (sigma = 2, float32, last two axes) over backend x size, with the peers a
user would write instead: scipy.ndimage.gaussian_filter and a separable torch conv2d."""

from __future__ import annotations

import numpy as np

from .common import data, require_backend, split, synchronize, to_namespace

SIZES = ["16x3x64x64", "16x3x256x256", "4x3x1024x1024"]
BACKENDS = ["array_api@numpy", "numba_cpu@numpy", "numba_cuda@cupy", "cupy@cupy",
            "triton@torch:cuda", "peer:scipy.ndimage", "peer:torch_conv2d@torch:cpu",
            "peer:torch_conv2d@torch:cuda", "peer:cupyx.ndimage@cupy"]
SIGMA = 2.0


def _shape(size: str) -> tuple[int, ...]:
    return tuple(int(s) for s in size.split("x"))


def _torch_separable(x, sigma: float):
    """Separable conv2d with the same 17 taps and scipy-'reflect' (torch 'replicate' is not it):
    the padding is an index gather, so the boundary matches scipy's half-sample reflection."""
    import torch

    from arraygen.gaussian import gaussian_kernel1d, source_indices

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
    params = (BACKENDS, SIZES)
    param_names = ["backend", "size"]  # noqa: RUF012 (asv reads class attributes)
    timeout = 300

    def setup(self, backend, size):
        shape = _shape(size)
        host = data(shape, seed=3)
        self.namespace = split(backend)[1] if "@" in backend else "numpy"
        if backend.startswith("peer:"):
            name = backend.split(":", 1)[1].split("@")[0]
            self.x = to_namespace(host, self.namespace)
            if name == "scipy.ndimage":
                import scipy.ndimage as ndi

                self.fn = lambda: ndi.gaussian_filter(self.x, SIGMA, axes=(-2, -1))
            elif name == "torch_conv2d":
                self.fn = lambda: _torch_separable(self.x, SIGMA)
            else:
                try:
                    import cupyx.scipy.ndimage as cndi
                except ImportError:
                    raise NotImplementedError("cupy not installed") from None
                self.fn = lambda: cndi.gaussian_filter(self.x, (0, 0, SIGMA, SIGMA))
        else:
            name, _ = split(backend)
            require_backend(name)
            from arraygen.backends import is_simulated

            if is_simulated(name):
                raise NotImplementedError(f"{name} is simulated here")
            if name == "array_api" and np.prod(shape) > 2**22:
                raise NotImplementedError("array_api path too slow for this size")
            from arraygen.gaussian import gaussian_filter

            self.x = to_namespace(host, self.namespace)
            self.fn = lambda: gaussian_filter(self.x, SIGMA, backend=name)
        self.fn()  # warm-up: compilation and caches stay out of the timings
        synchronize(self.namespace)

    def time_filter(self, backend, size):
        self.fn()
        synchronize(self.namespace)

    def peakmem_filter(self, backend, size):
        self.fn()

    def track_rel_err(self, backend, size):
        """max |y - scipy_float64| / max |scipy_float64| on the first image."""
        import scipy.ndimage as ndi

        from arraygen import _array_api as aa

        y = aa.to_numpy(self.fn())
        x0 = aa.to_numpy(self.x)[(0,) * (self.x.ndim - 2)].astype(np.float64)
        want = ndi.gaussian_filter(x0, SIGMA)
        got = y[(0,) * (y.ndim - 2)].astype(np.float64)
        return float(np.abs(got - want).max() / np.abs(want).max())

    track_rel_err.unit = "relative"
