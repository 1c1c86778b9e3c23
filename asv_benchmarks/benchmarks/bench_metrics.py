"""Image and distribution metrics against the peers a user would call instead.

SSIM / PSNR on 16 RGB 256 x 256 images (peer_numbers P6: uniform noise smoothed with sigma 3 px
and rescaled to [0, 1]; the second image adds N(0, 0.05^2) noise, clipped), against
scikit-image (``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``, one call per
image and channel). Frechet distance on (2000, 256) features against pytorch-fid's formula
(``scipy.linalg.sqrtm``). MMD (Gaussian kernel) on (4000, 2) points against the dense NumPy
formula. ``backend`` parameters: ``"array_api@<namespace>"`` or ``"peer:<name>"``.
"""

from __future__ import annotations

import functools

import numpy as np

from .common import gpu_present, split, synchronize, to_namespace

GPU = gpu_present()


@functools.cache
def _images():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    x = ndimage.gaussian_filter(rng.random((16, 3, 256, 256)), sigma=(0, 0, 3, 3))
    x = (x - x.min()) / (x.max() - x.min())
    y = np.clip(x + 0.05 * rng.standard_normal(x.shape), 0, 1)
    return x.astype(np.float32), y.astype(np.float32)


def _skimage(metric, x, y):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    out = np.empty(x.shape[:2])
    for i in range(x.shape[0]):
        for c in range(x.shape[1]):
            if metric == "ssim":
                out[i, c] = structural_similarity(x[i, c], y[i, c], data_range=1.0,
                                                  gaussian_weights=True, sigma=1.5,
                                                  use_sample_covariance=False)
            else:
                out[i, c] = peak_signal_noise_ratio(x[i, c], y[i, c], data_range=1.0)
    return out


class ImageMetrics:
    params = [["array_api@numpy", "array_api@torch:cpu", "peer:skimage"]
              + (["array_api@torch:cuda", "array_api@cupy"] if GPU else []), ["ssim", "psnr"]]
    param_names = ["backend", "metric"]
    timeout = 300

    def setup(self, param, metric):
        backend, ns = split(param)
        self.backend, self.ns, self.metric = backend, ns, metric
        xh, yh = _images()
        self.host = (xh, yh)
        if backend == "peer:skimage":
            self.x, self.y = xh.astype(np.float64), yh.astype(np.float64)
        else:
            self.x, self.y = to_namespace(xh, ns), to_namespace(yh, ns)
        self.run()
        synchronize(self.ns)

    def run(self):
        if self.backend == "peer:skimage":
            return _skimage(self.metric, self.x, self.y)
        from arraygen import metrics

        fn = metrics.ssim if self.metric == "ssim" else metrics.psnr
        return fn(self.x, self.y, data_range=1.0)

    def time_metric(self, param, metric):
        self.run()
        synchronize(self.ns)

    def peakmem_metric(self, param, metric):
        self.run()

    def track_diff_vs_skimage(self, param, metric):
        from arraygen.testing import to_numpy

        ref = _skimage(self.metric, *(a.astype(np.float64) for a in self.host))
        return float(np.max(np.abs(np.asarray(to_numpy(self.run()), np.float64) - ref)))


class FrechetDistance:
    params = [["array_api@numpy", "array_api@torch:cpu", "peer:scipy_sqrtm"]
              + (["array_api@torch:cuda"] if GPU else [])]
    param_names = ["backend"]
    timeout = 300

    def setup(self, param):
        backend, ns = split(param)
        self.backend, self.ns = backend, ns
        rng = np.random.default_rng(1)
        self.a_host = rng.standard_normal((2000, 256))
        self.b_host = rng.standard_normal((2000, 256)) @ (np.eye(256) + 0.05 * rng.standard_normal(
            (256, 256))) + 0.1
        if backend.startswith("peer"):
            self.a, self.b = self.a_host, self.b_host
        else:
            self.a, self.b = to_namespace(self.a_host, ns), to_namespace(self.b_host, ns)

    def run(self):
        if self.backend == "peer:scipy_sqrtm":
            import scipy.linalg

            mu1, mu2 = self.a.mean(0), self.b.mean(0)
            s1, s2 = np.cov(self.a, rowvar=False), np.cov(self.b, rowvar=False)
            covmean = scipy.linalg.sqrtm(s1 @ s2).real
            return ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
        from arraygen.metrics import frechet_distance

        return frechet_distance(self.a, self.b)

    def time_frechet(self, param):
        self.run()
        synchronize(self.ns)


class MMD:
    params = [["array_api@numpy", "numba_cpu@numpy", "array_api@torch:cpu", "peer:dense_numpy"]
              + (["triton@torch:cuda", "cupy@cupy"] if GPU else []), [1000, 4000]]
    param_names = ["backend", "n"]
    timeout = 300

    def setup(self, param, n):
        backend, ns = split(param)
        if not backend.startswith("peer"):
            from .common import require_backend

            require_backend(backend)
        self.backend, self.ns = backend, ns
        rng = np.random.default_rng(2)
        self.xh = rng.standard_normal((n, 2)).astype(np.float32)
        self.yh = (rng.standard_normal((n, 2)) + 0.3).astype(np.float32)
        if backend.startswith("peer"):
            self.x, self.y = self.xh.astype(np.float64), self.yh.astype(np.float64)
        else:
            self.x, self.y = to_namespace(self.xh, ns), to_namespace(self.yh, ns)
        self.run()
        synchronize(self.ns)

    def run(self):
        if self.backend == "peer:dense_numpy":
            def gram(a, b):
                d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
                return np.exp(-d2 / 2.0)
            n, m = self.x.shape[0], self.y.shape[0]
            return ((gram(self.x, self.x).sum() - n) / (n * (n - 1))
                    + (gram(self.y, self.y).sum() - m) / (m * (m - 1))
                    - 2 * gram(self.x, self.y).mean())
        from arraygen.metrics import mmd

        return mmd(self.x, self.y, bandwidth=1.0, backend=self.backend)

    def time_mmd(self, param, n):
        self.run()
        synchronize(self.ns)

    def peakmem_mmd(self, param, n):
        self.run()
