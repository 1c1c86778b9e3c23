"""Image and distribution metrics beside the peers a user would call instead.

* SSIM / PSNR against scikit-image (``gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False``, one call per image and channel, float64);
  ``track_diff_vs_skimage`` is the largest difference of the values;
* Frechet distance against pytorch-fid's formula (``scipy.linalg.sqrtm``);
* MMD against the dense NumPy formula (float64).

Data: ``asv_benchmarks/benchmarks/bench_metrics.py``.
"""

from __future__ import annotations

import numpy as np

from ._tracking import tracking

T = tracking("bench_metrics")
C = tracking("common")


def skimage_metric(metric, x, y):
    sm = C.require_module("skimage.metrics", "scikit-image")
    out = np.empty(x.shape[:2])
    for i in range(x.shape[0]):
        for c in range(x.shape[1]):
            if metric == "ssim":
                out[i, c] = sm.structural_similarity(x[i, c], y[i, c], data_range=1.0,
                                                     gaussian_weights=True, sigma=1.5,
                                                     use_sample_covariance=False)
            else:
                out[i, c] = sm.peak_signal_noise_ratio(x[i, c], y[i, c], data_range=1.0)
    return out


class ImageMetrics:
    params = [C.with_gpu(["array_api@numpy", "array_api@torch:cpu", "peer:skimage"],
                         ["array_api@torch:cuda", "array_api@cupy"]), ["ssim", "psnr"]]
    param_names = ["backend", "metric"]
    timeout = 300

    def setup(self, param, metric):
        self.backend, self.ns = C.split(param)
        self.metric = metric
        self.host = T.images("16x3x256x256")
        if self.backend == "peer:skimage":
            C.require_module("skimage", "scikit-image")
            self.x, self.y = (a.astype(np.float64) for a in self.host)
        else:
            self.x, self.y = (C.to_namespace(a, self.ns) for a in self.host)
        self.run()

    def run(self):
        if self.backend == "peer:skimage":
            return skimage_metric(self.metric, self.x, self.y)
        from arraygen import metrics

        fn = metrics.ssim if self.metric == "ssim" else metrics.psnr
        out = fn(self.x, self.y, data_range=1.0)
        C.synchronize(self.ns)
        return out

    def time_metric(self, param, metric):
        self.run()

    def track_diff_vs_skimage(self, param, metric):
        from arraygen.testing import to_numpy

        ref = skimage_metric(self.metric, *(a.astype(np.float64) for a in self.host))
        return float(np.max(np.abs(np.asarray(to_numpy(self.run()), np.float64) - ref)))

    track_diff_vs_skimage.unit = "abs difference"


class FrechetDistance:
    params = [["array_api@numpy", "array_api@torch:cpu", "peer:scipy_sqrtm"]]
    param_names = ["backend"]
    timeout = 300

    def setup(self, param):
        self.backend, self.ns = C.split(param)
        a, b = T.features(256)
        if self.backend.startswith("peer"):
            self.a, self.b = a, b
        else:
            self.a, self.b = C.to_namespace(a, self.ns), C.to_namespace(b, self.ns)

    def time_frechet(self, param):
        if self.backend == "peer:scipy_sqrtm":
            import scipy.linalg

            mu1, mu2 = self.a.mean(0), self.b.mean(0)
            s1, s2 = np.cov(self.a, rowvar=False), np.cov(self.b, rowvar=False)
            covmean = scipy.linalg.sqrtm(s1 @ s2).real
            return ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
        from arraygen.metrics import frechet_distance

        return frechet_distance(self.a, self.b)


class MMD:
    params = [["numba_cpu@numpy", "peer:dense_numpy"], [1000, 4000]]
    param_names = ["backend", "n"]
    timeout = 300

    def setup(self, param, n):
        self.backend, self.ns = C.split(param)
        x, y = T.clouds(n)
        if self.backend.startswith("peer"):
            self.x, self.y = x.astype(np.float64), y.astype(np.float64)
        else:
            C.require_backend(self.backend)
            self.x, self.y = x, y
        self.time_mmd(param, n)  # warm-up (kernel compilation)

    def time_mmd(self, param, n):
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
