r"""Image and distribution metrics, written once against the Array API.

Image metrics take images of shape ``(..., H, W)``: the last two axes are the image and every
leading index gets its own value (a batch of RGB images ``(N, 3, H, W)`` gives ``(N, 3)``;
average over the channel axis for scikit-image's ``channel_axis`` convention). Integer and
boolean images are promoted to the namespace's default float before any arithmetic (no
integer overflow), and float images need an explicit ``data_range``.

Distribution metrics take samples as rows, ``(n, d)`` (a 1-D array is ``(n, 1)``), and
return a 0-d array in the inputs' namespace and on their device.

=====================  ==========================================================================
:func:`mse`, :func:`mae`  mean squared / absolute error per image
:func:`psnr`           ``10 log10(data_range^2 / mse)``, ``inf`` for identical images
:func:`ssim`           Wang et al. 2004 (Gaussian window sigma 1.5, 11 taps, population
                       covariance, K1 = 0.01, K2 = 0.03, valid region)
:func:`frechet_distance`  FID formula on feature rows (float64, eigh-based trace square root)
:func:`mmd`            squared maximum mean discrepancy, Gaussian kernel, tiled
:func:`energy_distance`  squared energy distance (V-statistic), blocked
:func:`sliced_wasserstein`  from :mod:`arraygen.ot` (as POT's ``sliced_wasserstein_distance``)
=====================  ==========================================================================
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from . import _array_api as aa
from .ot import sliced_wasserstein

__all__ = ["energy_distance", "frechet_distance", "mae", "mmd", "mse", "psnr",
           "sliced_wasserstein", "ssim"]

#: SSIM window: Gaussian sigma, truncation (radius = int(truncate * sigma + 0.5) = 5, 11 taps).
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5


# --------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------

def _check_finite(xp, arr, name: str) -> None:
    if not aa.all_finite(xp, arr):
        bad = int(xp.sum(xp.astype(~xp.isfinite(arr), xp.int64)))
        raise ValueError(f"`{name}` contains {bad} non-finite values (pass check_finite=False "
                         f"to skip this check)")


def _images(x, y, check_finite: bool, min_side: int = 1):
    """Validate a pair of images; return (xp, x_float, y_float, any_float_input)."""
    xp = aa.array_namespace(x=x, y=y)
    aa.check_same_device(x=x, y=y)
    for name, a in (("x", x), ("y", y)):
        if a.ndim < 2:
            raise ValueError(f"`{name}` must be images of shape (..., H, W); got shape "
                             f"{tuple(a.shape)}")
    if tuple(x.shape) != tuple(y.shape):
        raise ValueError(f"`x` and `y` must have the same shape; got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if h < min_side or w < min_side:
        raise ValueError(f"images must be at least {min_side} x {min_side}; got shape "
                         f"{tuple(x.shape)}")
    floating = any(xp.isdtype(a.dtype, "real floating") for a in (x, y))
    xf, x_dt = aa.as_float_array(xp, x, "x")
    yf, y_dt = aa.as_float_array(xp, y, "y")
    work = aa.compute_dtype(xp, xp.result_type(x_dt, y_dt))
    xf = xf if xf.dtype == work else xp.astype(xf, work)
    yf = yf if yf.dtype == work else xp.astype(yf, work)
    if check_finite and floating:
        _check_finite(xp, xf, "x")
        _check_finite(xp, yf, "y")
    return xp, xf, yf, floating


def _integer_range(xp, x) -> float:
    """skimage's rule: dtype max if the reference image is non-negative, else max - min."""
    if x.dtype == xp.bool:
        return 1.0
    info = xp.iinfo(x.dtype)
    if int(xp.min(x)) >= 0:
        return float(info.max)
    return float(info.max) - float(info.min)


def _data_range(xp, x, y, data_range, floating: bool) -> float:
    if data_range is None:
        if floating:
            raise ValueError("`data_range` is required for floating-point images (e.g. 1.0 "
                             "for [0, 1], 2.0 for [-1, 1], 255.0 for [0, 255])")
        return _integer_range(xp, x)
    return aa.finite_scalar(data_range, "data_range", positive=True)


def _warn_range(xp, xf, yf, data_range: float) -> None:
    lo = min(float(xp.min(xf)), float(xp.min(yf)))
    hi = max(float(xp.max(xf)), float(xp.max(yf)))
    if hi - lo > data_range * (1 + 1e-6):
        warnings.warn(f"the images span {hi - lo:.4g} (min {lo:.4g}, max {hi:.4g}), more than "
                      f"data_range = {data_range:.4g}; check the value range", UserWarning,
                      stacklevel=3)


def _points(xp, a, name: str, check_finite: bool):
    if a.ndim == 1:
        a = xp.reshape(a, (-1, 1))
    if a.ndim != 2:
        raise ValueError(f"`{name}` must have shape (n, d) (rows are samples); got shape "
                         f"{tuple(a.shape)}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"`{name}` must be non-empty; got shape {tuple(a.shape)}")
    af, _ = aa.as_float_array(xp, a, name)
    if check_finite:
        _check_finite(xp, af, name)
    return af


def _pair(x, y, names, check_finite: bool):
    xp = aa.array_namespace(**{names[0]: x, names[1]: y})
    aa.check_same_device(**{names[0]: x, names[1]: y})
    xf = _points(xp, x, names[0], check_finite)
    yf = _points(xp, y, names[1], check_finite)
    if xf.shape[1] != yf.shape[1]:
        raise ValueError(f"`{names[0]}` and `{names[1]}` must have the same number of columns "
                         f"(features); got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    work = xp.result_type(xf.dtype, yf.dtype)
    return xp, xp.astype(xf, work), xp.astype(yf, work)


# --------------------------------------------------------------------------------------------
# image metrics
# --------------------------------------------------------------------------------------------

def mse(x, y, *, check_finite: bool = True):
    r"""Mean squared error per image, :math:`\frac{1}{HW}\sum (x - y)^2`.

    Parameters
    ----------
    x, y : array, shape (..., H, W)
        Same shape; integer images are promoted to float first.
    check_finite : bool
        Raise on NaN/inf in float input.

    Returns
    -------
    array, shape (...)
    """
    xp, xf, yf, _ = _images(x, y, check_finite)
    diff = xf - yf
    return xp.mean(diff * diff, axis=(-2, -1))


def mae(x, y, *, check_finite: bool = True):
    r"""Mean absolute error per image, :math:`\frac{1}{HW}\sum |x - y|`; shapes as :func:`mse`."""
    xp, xf, yf, _ = _images(x, y, check_finite)
    return xp.mean(xp.abs(xf - yf), axis=(-2, -1))


def psnr(x, y, *, data_range: float | None = None, check_finite: bool = True):
    r"""Peak signal-to-noise ratio per image, :math:`10\log_{10}(L^2/\mathrm{MSE})` in dB.

    Parameters
    ----------
    x : array, shape (..., H, W)
        Reference images (their dtype sets the inferred range for integer input).
    y : array, shape (..., H, W)
        Test images.
    data_range : float, optional
        :math:`L`, the value range of the images. Required for float images; for integer
        images it is inferred as scikit-image does (uint8: 255; a signed dtype: its max if
        ``x`` is non-negative, else max - min; bool: 1).
    check_finite : bool

    Returns
    -------
    array, shape (...)
        ``inf`` where the images are identical.
    """
    xp, xf, yf, floating = _images(x, y, check_finite)
    rng = _data_range(xp, x, y, data_range, floating)
    if floating and check_finite:
        _warn_range(xp, xf, yf, rng)
    err = xp.mean((xf - yf) * (xf - yf), axis=(-2, -1))
    zero = err == 0
    safe = xp.where(zero, xp.ones_like(err), err)
    value = 10.0 * xp.log10((rng * rng) / safe)
    return xp.where(zero, xp.full_like(err, math.inf), value)


def _gaussian_taps() -> list[float]:
    radius = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
    k = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (k / SSIM_SIGMA) ** 2)
    return [float(v) for v in w / w.sum()]


def _filter_valid(a, taps):
    """Separable valid-mode correlation over the last two axes."""
    n = len(taps)
    h, w = a.shape[-2], a.shape[-1]
    acc = None
    for i, c in enumerate(taps):
        part = c * a[..., :, i:w - n + 1 + i]
        acc = part if acc is None else acc + part
    out = None
    for i, c in enumerate(taps):
        part = c * acc[..., i:h - n + 1 + i, :]
        out = part if out is None else out + part
    return out


def ssim(x, y, *, data_range: float | None = None, k1: float = 0.01, k2: float = 0.03,
         check_finite: bool = True):
    r"""Structural similarity per image (Wang et al. 2004), mean over the valid region.

    Local statistics use the normalised Gaussian window of sigma 1.5 with 11 taps (radius
    ``int(3.5 * 1.5 + 0.5) = 5``), population (biased) variances and covariance:

    .. math::

        \mathrm{SSIM} = \frac{(2\mu_x\mu_y + C_1)(2\sigma_{xy} + C_2)}
                             {(\mu_x^2 + \mu_y^2 + C_1)(\sigma_x^2 + \sigma_y^2 + C_2)},
        \quad C_1 = (k_1 L)^2,\ C_2 = (k_2 L)^2,

    averaged over the pixels whose window lies inside the image (the border of 5 pixels is
    dropped). Equals ``skimage.metrics.structural_similarity(x, y, data_range=L,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`` for each image.

    Parameters
    ----------
    x, y : array, shape (..., H, W), H, W >= 11
    data_range : float, optional
        :math:`L`; required for float images, inferred for integer ones as in :func:`psnr`.
    k1, k2 : float
        Stabilising constants (defaults of the paper).
    check_finite : bool

    Returns
    -------
    array, shape (...)
    """
    taps = _gaussian_taps()
    xp, xf, yf, floating = _images(x, y, check_finite, min_side=len(taps))
    rng = _data_range(xp, x, y, data_range, floating)
    k1 = aa.finite_scalar(k1, "k1", positive=True)
    k2 = aa.finite_scalar(k2, "k2", positive=True)
    if floating and check_finite:
        _warn_range(xp, xf, yf, rng)
    ux = _filter_valid(xf, taps)
    uy = _filter_valid(yf, taps)
    vx = _filter_valid(xf * xf, taps) - ux * ux
    vy = _filter_valid(yf * yf, taps) - uy * uy
    vxy = _filter_valid(xf * yf, taps) - ux * uy
    c1 = (k1 * rng) ** 2
    c2 = (k2 * rng) ** 2
    num = (2.0 * ux * uy + c1) * (2.0 * vxy + c2)
    den = (ux * ux + uy * uy + c1) * (vx + vy + c2)
    return xp.mean(num / den, axis=(-2, -1))


# --------------------------------------------------------------------------------------------
# distribution metrics
# --------------------------------------------------------------------------------------------

def _mean_cov(xp, f):
    n = f.shape[0]
    mu = xp.mean(f, axis=0)
    c = f - mu
    return mu, xp.matmul(xp.matrix_transpose(c), c) / float(n - 1)


def frechet_distance(features_a, features_b, *, check_finite: bool = True):
    r"""Fréchet distance between Gaussians fitted to two feature sets (the FID formula).

    .. math::

        d^2 = \lVert\mu_a - \mu_b\rVert^2 + \mathrm{tr}\,\Sigma_a + \mathrm{tr}\,\Sigma_b
              - 2\,\mathrm{tr}\bigl(\Sigma_a^{1/2}\Sigma_b\Sigma_a^{1/2}\bigr)^{1/2}

    with sample means and covariances (``ddof = 1``, as pytorch-fid), all in float64. The
    trace square root uses symmetric eigendecompositions (:math:`\Sigma_a^{1/2}` from
    ``eigh``, then the eigenvalues of the symmetrised product, negative round-off clipped to
    0), so no imaginary parts arise; it equals the ``scipy.linalg.sqrtm`` formula
    :math:`\mathrm{tr}\sqrt{\Sigma_a\Sigma_b}`.

    Parameters
    ----------
    features_a : array, shape (n_a, d)
    features_b : array, shape (n_b, d)
        Rows are samples; ``n >= 2`` each. A warning is issued when ``n < d`` (rank-deficient
        covariance: the value is still defined but biased and noisy).
    check_finite : bool

    Returns
    -------
    0-d float64 array
    """
    xp, fa, fb = _pair(features_a, features_b, ("features_a", "features_b"), check_finite)
    for name, f in (("features_a", fa), ("features_b", fb)):
        if f.shape[0] < 2:
            raise ValueError(f"`{name}` needs at least 2 samples for a covariance; got "
                             f"{f.shape[0]}")
    d = int(fa.shape[1])
    small = [f"{name} has n = {f.shape[0]}" for name, f in (("features_a", fa),
                                                           ("features_b", fb))
             if f.shape[0] < d]
    if small:
        warnings.warn(f"frechet_distance: fewer samples than features (d = {d}; "
                      f"{', '.join(small)}): the covariance is rank-deficient", UserWarning,
                      stacklevel=2)
    fa = xp.astype(fa, xp.float64)
    fb = xp.astype(fb, xp.float64)
    mu_a, cov_a = _mean_cov(xp, fa)
    mu_b, cov_b = _mean_cov(xp, fb)
    lam_a, vec_a = xp.linalg.eigh(0.5 * (cov_a + xp.matrix_transpose(cov_a)))
    root_a = xp.matmul(vec_a * xp.sqrt(xp.maximum(lam_a, xp.zeros_like(lam_a)))[None, :],
                       xp.matrix_transpose(vec_a))
    prod = xp.matmul(root_a, xp.matmul(cov_b, root_a))
    eig = xp.linalg.eigvalsh(0.5 * (prod + xp.matrix_transpose(prod)))
    tr_sqrt = xp.sum(xp.sqrt(xp.maximum(eig, xp.zeros_like(eig))))
    diff = mu_a - mu_b
    return (xp.sum(diff * diff) + xp.linalg.trace(cov_a) + xp.linalg.trace(cov_b)
            - 2.0 * tr_sqrt)


def _bandwidths(bandwidth) -> list[float]:
    if isinstance(bandwidth, Sequence) and not isinstance(bandwidth, str):
        values = list(bandwidth)
        if not values:
            raise ValueError("`bandwidth` must be a positive float or a non-empty sequence")
    else:
        values = [bandwidth]
    return [aa.finite_scalar(h, "bandwidth", positive=True) for h in values]


def mmd(x, y, *, bandwidth, unbiased: bool = True, check_finite: bool = True,
        backend: str | None = None):
    r"""Squared maximum mean discrepancy with a Gaussian kernel, tiled (no n x m matrix).

    .. math::

        k(a, b) = \sum_h \exp\Bigl(-\frac{\lVert a - b\rVert^2}{2h^2}\Bigr),\qquad
        \mathrm{MMD}^2 = \overline{k(x, x')} + \overline{k(y, y')} - 2\,\overline{k(x, y)}

    ``unbiased=True`` (default): the U-statistic, means over pairs ``i != j`` within each set
    (unbiased for the population MMD², may be slightly negative); ``unbiased=False``: the
    V-statistic (means over all pairs, >= 0). Kernel sums run through
    :func:`arraygen.tiled.kernel_matvec`.

    Parameters
    ----------
    x : array, shape (n, d)
    y : array, shape (m, d)
    bandwidth : float or sequence of float
        Kernel length scale(s) :math:`h > 0` (several: a sum of kernels).
    unbiased : bool
    check_finite : bool
    backend : str, optional
        Passed to :func:`~arraygen.tiled.kernel_matvec`.

    Returns
    -------
    0-d array
        :math:`\mathrm{MMD}^2` in the inputs' float dtype.
    """
    from .tiled import kernel_matvec

    xp, xf, yf = _pair(x, y, ("x", "y"), check_finite)
    hs = _bandwidths(bandwidth)
    n, m = int(xf.shape[0]), int(yf.shape[0])
    if unbiased and (n < 2 or m < 2):
        raise ValueError(f"the unbiased MMD needs at least 2 samples in each set; got n = {n}, "
                         f"m = {m} (use unbiased=False)")
    dev = aa.device(xf)
    ones_m = xp.ones((m,), dtype=xf.dtype, device=dev)
    ones_n = xp.ones((n,), dtype=xf.dtype, device=dev)
    kxx = kyy = kxy = 0.0
    for h in hs:
        beta = 1.0 / (2.0 * h * h)
        kxx = kxx + xp.sum(kernel_matvec(xf, xf, ones_n, beta=beta, backend=backend))
        kyy = kyy + xp.sum(kernel_matvec(yf, yf, ones_m, beta=beta, backend=backend))
        kxy = kxy + xp.sum(kernel_matvec(xf, yf, ones_m, beta=beta, backend=backend))
    k = float(len(hs))
    if unbiased:
        # the diagonal terms are exactly k(a, a) = 1 per bandwidth
        return ((kxx - k * n) / (n * (n - 1)) + (kyy - k * m) / (m * (m - 1))
                - 2.0 * kxy / (n * m))
    return kxx / (n * n) + kyy / (m * m) - 2.0 * kxy / (n * m)


def _mean_distance(xp, a, b, block_elements: int = 1 << 22):
    """Mean Euclidean distance over all pairs (rows of a) x (rows of b), in row blocks."""
    n, m, d = int(a.shape[0]), int(b.shape[0]), int(a.shape[1])
    rows = max(1, block_elements // max(1, m * d))
    total = None
    for i0 in range(0, n, rows):
        blk = a[i0:min(n, i0 + rows), :]
        diff = blk[:, None, :] - b[None, :, :]
        part = xp.sum(xp.sqrt(xp.sum(diff * diff, axis=2)))
        total = part if total is None else total + part
    return total / float(n * m)


def energy_distance(x, y, *, check_finite: bool = True):
    r"""Squared energy distance between two samples (V-statistic), blocked.

    .. math:: D^2 = 2\,E\lVert X - Y\rVert - E\lVert X - X'\rVert - E\lVert Y - Y'\rVert

    with every expectation the mean over all pairs (including ``i = j``), so ``D^2 >= 0``.
    In 1-D, ``sqrt(D^2)`` is ``scipy.stats.energy_distance``. Memory O(block) per step.

    Parameters
    ----------
    x : array, shape (n, d)
    y : array, shape (m, d)
    check_finite : bool

    Returns
    -------
    0-d array
    """
    xp, xf, yf = _pair(x, y, ("x", "y"), check_finite)
    return (2.0 * _mean_distance(xp, xf, yf) - _mean_distance(xp, xf, xf)
            - _mean_distance(xp, yf, yf))
