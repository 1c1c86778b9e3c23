"""Image and distribution metrics (tracking): SSIM, PSNR, Frechet distance, MMD.

SSIM / PSNR on RGB images (uniform noise smoothed with sigma 3 px and rescaled to [0, 1]; the
second image adds N(0, 0.05^2) noise, clipped). Frechet distance on (2000, d) features. MMD
(Gaussian kernel, bandwidth 1) on (n, 2) points. scikit-image, scipy's ``sqrtm`` formula and the
dense NumPy MMD are timed in ``asv_benchmarks/compare/bench_metrics.py``.
"""

from __future__ import annotations

import functools

import numpy as np

from .common import require_backend, split, synchronize, to_namespace, with_gpu
from .common import repeat, rounds  # noqa: F401 (asv timing attributes)

IMAGE_SIZES = ["4x3x64x64", "16x3x256x256"]


@functools.cache
def images(size: str = "16x3x256x256"):
    from scipy import ndimage

    shape = tuple(int(s) for s in size.split("x"))
    rng = np.random.default_rng(0)
    x = ndimage.gaussian_filter(rng.random(shape), sigma=(0, 0, 3, 3))
    x = (x - x.min()) / (x.max() - x.min())
    y = np.clip(x + 0.05 * rng.standard_normal(x.shape), 0, 1)
    return x.astype(np.float32), y.astype(np.float32)


@functools.cache
def features(d: int, n: int = 2000):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((n, d))
    b = rng.standard_normal((n, d)) @ (np.eye(d) + 0.05 * rng.standard_normal((d, d))) + 0.1
    return a, b


@functools.cache
def clouds(n: int):
    rng = np.random.default_rng(2)
    return (rng.standard_normal((n, 2)).astype(np.float32),
            (rng.standard_normal((n, 2)) + 0.3).astype(np.float32))


class ImageMetrics:
    params = [with_gpu(["array_api@numpy", "array_api@torch:cpu"],
                       ["array_api@torch:cuda", "array_api@cupy"]), ["ssim", "psnr"],
              IMAGE_SIZES]
    param_names = ["backend", "metric", "size"]
    timeout = 300

    def setup(self, param, metric, size):
        from arraygen import metrics

        _, self.ns = split(param)
        self.fn = metrics.ssim if metric == "ssim" else metrics.psnr
        self.x, self.y = (to_namespace(a, self.ns) for a in images(size))
        self.run()

    def run(self):
        out = self.fn(self.x, self.y, data_range=1.0)
        synchronize(self.ns)
        return out

    def time_metric(self, param, metric, size):
        self.run()


class FrechetDistance:
    params = [with_gpu(["array_api@numpy", "array_api@torch:cpu"], ["array_api@torch:cuda"]),
              [64, 256]]
    param_names = ["backend", "dim"]
    timeout = 300

    def setup(self, param, dim):
        _, self.ns = split(param)
        self.a, self.b = (to_namespace(v, self.ns) for v in features(dim))

    def time_frechet(self, param, dim):
        from arraygen.metrics import frechet_distance

        frechet_distance(self.a, self.b)
        synchronize(self.ns)


class MMD:
    params = [with_gpu(["numba_cpu@numpy", "array_api@numpy", "array_api@torch:cpu"],
                       ["triton@torch:cuda", "cupy@cupy"]), [1000, 4000]]
    param_names = ["backend", "n"]
    timeout = 300

    def setup(self, param, n):
        self.backend, self.ns = split(param)
        require_backend(self.backend)
        self.x, self.y = (to_namespace(v, self.ns) for v in clouds(n))
        self.run()

    def run(self):
        from arraygen.metrics import mmd

        out = mmd(self.x, self.y, bandwidth=1.0, backend=self.backend)
        synchronize(self.ns)
        return out

    def time_mmd(self, param, n):
        self.run()
