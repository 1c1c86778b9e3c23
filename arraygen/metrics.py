r"""Image and distribution metrics, written once against the Array API.

Image metrics take images of shape ``(..., H, W)``: the last two axes are the image and every
leading index gets its own value (a batch of RGB images ``(N, 3, H, W)`` gives ``(N, 3)``).
``spatial_dims`` says how many trailing axes form one image (1 for signals, 3 for volumes;
a 1-D array is one signal); :func:`ssim` also takes scikit-image's ``channel_axis`` (the
value is averaged over that axis). Integer and boolean images are promoted to the namespace's
default float before any arithmetic (no integer overflow), and float images need an explicit
``data_range``.

Distribution metrics take samples as rows, ``(n, d)`` (a 1-D array is ``(n, 1)``), and
return a 0-d array in the inputs' namespace and on their device.

=====================  ==========================================================================
:func:`mse`, :func:`mae`  mean squared / absolute error per image
:func:`nrmse`          normalised root mean squared error (scikit-image's three normalisations)
:func:`psnr`           ``10 log10(data_range^2 / mse)``, ``inf`` for identical images
:func:`ssim`           Wang et al. 2004 (Gaussian window sigma 1.5, 11 taps, population
                       covariance, K1 = 0.01, K2 = 0.03, valid region); scikit-image's uniform
                       window, ``full=True`` map, ``channel_axis``, 1-D and n-D images
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
from typing import Any, NamedTuple

import numpy as np

from . import _array_api as aa
from . import _validation as _v
from .ot import sliced_wasserstein
from .tiled import _matvec

__all__ = ["energy_distance", "frechet_distance", "mae", "mmd", "mse", "nrmse", "psnr",
           "sliced_wasserstein", "ssim"]

#: SSIM window: Gaussian sigma, truncation (radius = int(truncate * sigma + 0.5) = 5, 11 taps).
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
#: scikit-image's default uniform window (``gaussian_weights=False``).
SSIM_UNIFORM_WIN = 7


# --------------------------------------------------------------------------------------------
# input handling (through arraygen._validation, once per call)
# --------------------------------------------------------------------------------------------

class _Images(NamedTuple):
    xp: Any
    x: Any          # as passed (its dtype sets an inferred data_range)
    xf: Any         # compute dtype
    yf: Any
    out_dtype: Any
    floating: bool  # any floating input (data_range required)
    axes: tuple     # the image axes (negative)
    check: bool     # check finiteness (float input and check_finite)


def _images(x, y, check_finite: bool, spatial_dims=None, *, min_side: int = 1,
            channel_axis=None) -> _Images:
    """Validate a pair of images; ``channel_axis`` (if any) is moved to the front."""
    xp, (x, y) = _v.common_namespace(x=x, y=y)
    for name, a in (("x", x), ("y", y)):
        if a.ndim < 1:
            raise ValueError(f"`{name}` must be images of shape (..., H, W) or a 1-D signal; "
                             "got a 0-d array")
    if tuple(x.shape) != tuple(y.shape):
        raise ValueError(f"`x` and `y` must have the same shape; got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    if channel_axis is not None:
        c = _v.check_int(channel_axis, "channel_axis")
        if not -x.ndim <= c < x.ndim or x.ndim < 2:
            raise ValueError(f"`channel_axis` must be an axis of `x` (shape {tuple(x.shape)}) "
                             f"with at least one image axis left; got {channel_axis}")
        x, y = xp.moveaxis(x, c, 0), xp.moveaxis(y, c, 0)
    rest = x.ndim - (channel_axis is not None)
    if spatial_dims is None:
        s = min(2, rest)
    else:
        s = _v.check_int(spatial_dims, "spatial_dims", minimum=1, maximum=rest)
    axes = tuple(range(-s, 0))
    sides = tuple(int(x.shape[k]) for k in axes)
    if min(sides) < min_side:
        raise ValueError(f"images must be at least {' x '.join([str(min_side)] * s)}; got shape "
                         f"{tuple(x.shape)}" + ("" if channel_axis is None else
                                                " (channel axis first)"))
    floating = any(xp.isdtype(a.dtype, "real floating") for a in (x, y))
    for name, a in (("x", x), ("y", y)):
        if xp.isdtype(a.dtype, "complex floating"):
            raise TypeError(f"`{name}` must be real; got dtype {a.dtype}")
    (xf, yf), out_dtype = _v.promote_float(xp, x, y)
    return _Images(xp, x, xf, yf, out_dtype, floating, axes, bool(check_finite and floating))


#: Host image metrics run over chunks of the batch of about this many elements per array:
#: the filter passes then stay in cache and reuse freed memory (measured 2.4x faster for
#: SSIM on a (16, 3, 256, 256) float64 batch than one pass over the whole batch).
_CHUNK_ELEMENTS = 1 << 17


def _per_image(im: _Images, fn):
    """Apply ``fn(x_chunk, y_chunk) -> tuple of arrays`` over chunks of the flattened batch.

    The chunks are ``(b, *image)`` arrays; each returned array has ``b`` leading entries and
    comes back with the batch shape restored (``x``'s leading axes). On a GPU the whole batch
    is one chunk. Returns ``(outputs, span)``: with ``im.check``, ``span = (min, max)`` over
    ``x`` and ``y``, taken from each chunk while it is in cache (one host synchronisation);
    a non-finite span means NaN or inf in the input (they propagate through min/max), and
    the exact finiteness check then raises naming ``x`` or ``y``.
    """
    xp, s = im.xp, len(im.axes)
    lead = tuple(int(n) for n in im.xf.shape[:im.xf.ndim - s])
    image = tuple(int(n) for n in im.xf.shape[im.xf.ndim - s:])
    count = math.prod(lead)
    xf = xp.reshape(im.xf, (count,) + image)
    yf = xp.reshape(im.yf, (count,) + image)
    step = count
    if aa.device_kind(xf)[0] == "cpu":
        step = max(1, _CHUNK_ELEMENTS // max(1, math.prod(image)))
    parts, spans = [], []
    for i in range(0, count, step):
        a, b = (xf, yf) if step >= count else (xf[i:min(count, i + step), ...],
                                               yf[i:min(count, i + step), ...])
        parts.append(fn(a, b))
        if im.check:
            spans.append(xp.stack([xp.min(a), xp.min(b), xp.max(a), xp.max(b)]))
    out = []
    for k in range(len(parts[0])):
        whole = parts[0][k] if len(parts) == 1 else xp.concat([p[k] for p in parts], axis=0)
        out.append(xp.reshape(whole, lead + tuple(int(n) for n in whole.shape[1:])))
    span = None
    if im.check:
        ends = aa.to_numpy(xp.stack(spans) if len(spans) > 1 else spans[0][None, :])
        span = (float(ends[:, :2].min()), float(ends[:, 2:].max()))
        if not (math.isfinite(span[0]) and math.isfinite(span[1])):
            _v.require_finite(xp, im.xf, "x")
            _v.require_finite(xp, im.yf, "y")
    return out, span


def _dtype_range(xp, x, *, ssim_rule: bool) -> float:
    """Inferred ``data_range`` of an integer or boolean reference image, as scikit-image.

    SSIM: ``dtype max - dtype min`` (uint8 255, int8 255, bool 1). PSNR: the dtype max if the
    reference image is non-negative, else max - min.
    """
    if x.dtype == xp.bool:
        return 1.0
    info = xp.iinfo(x.dtype)
    full = float(info.max) - float(info.min)
    if ssim_rule:
        return full
    return float(info.max) if int(xp.min(x)) >= 0 else full


def _data_range(im: _Images, data_range, *, ssim_rule: bool = False) -> float:
    if data_range is None:
        if im.floating:
            raise ValueError("`data_range` is required for floating-point images (e.g. 1.0 "
                             "for [0, 1], 2.0 for [-1, 1], 255.0 for [0, 255])")
        return _dtype_range(im.xp, im.x, ssim_rule=ssim_rule)
    return _v.check_scalar(data_range, "data_range", positive=True)


def _value_range(span: tuple, data_range: float) -> float:
    """Warn when float images span more than ``data_range``; return their largest magnitude."""
    lo, hi = span
    if hi - lo > data_range * (1 + 1e-6):
        warnings.warn(f"the images span {hi - lo:.4g} (min {lo:.4g}, max {hi:.4g}), more than "
                      f"data_range = {data_range:.4g}; check the value range", UserWarning,
                      stacklevel=3)
    return max(abs(lo), abs(hi))


def _cast(xp, a, dtype):
    return a if a.dtype == dtype else xp.astype(a, dtype)


# --------------------------------------------------------------------------------------------
# image metrics
# --------------------------------------------------------------------------------------------

def _mean_square(xp, d, axes):
    return xp.mean(d * d, axis=axes)


def mse(x, y, *, spatial_dims: int | None = None, check_finite: bool = True):
    r"""Mean squared error per image, :math:`\frac{1}{HW}\sum (x - y)^2`.

    Parameters
    ----------
    x, y : array, shape (..., H, W)
        Same shape; integer images are promoted to float first.
    spatial_dims : int, optional
        Number of trailing axes forming one image (default 2, or 1 for a 1-D signal).
    check_finite : bool
        Raise on NaN/inf in float input.

    Returns
    -------
    array, shape (...)

    Examples
    --------
    >>> import numpy as np
    >>> x = np.zeros((2, 4, 4), dtype=np.uint8)
    >>> y = np.full((2, 4, 4), 255, dtype=np.uint8)
    >>> mse(x, y)   # no uint8 wrap-around
    array([65025., 65025.])
    """
    im = _images(x, y, check_finite, spatial_dims)
    (out,), _ = _per_image(im, lambda a, b: (_mean_square(im.xp, a - b, im.axes),))
    return _cast(im.xp, out, im.out_dtype)


def mae(x, y, *, spatial_dims: int | None = None, check_finite: bool = True):
    r"""Mean absolute error per image, :math:`\frac{1}{HW}\sum |x - y|`; shapes as :func:`mse`.

    Examples
    --------
    >>> import numpy as np
    >>> float(mae(np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])))   # one 1-D signal
    1.0
    """
    im = _images(x, y, check_finite, spatial_dims)
    (out,), _ = _per_image(im, lambda a, b: (im.xp.mean(im.xp.abs(a - b), axis=im.axes),))
    return _cast(im.xp, out, im.out_dtype)


def nrmse(x, y, *, normalization: str = "euclidean", spatial_dims: int | None = None,
          check_finite: bool = True):
    r"""Normalised root mean squared error per image (``skimage.metrics.normalized_root_mse``).

    .. math::

        \mathrm{NRMSE} = \sqrt{\mathrm{MSE}(x, y)} \,/\, D(x),\qquad
        D = \sqrt{\overline{x^2}}\ (\text{"euclidean"}),\
            \max x - \min x\ (\text{"min-max"}),\ \bar x\ (\text{"mean"})

    Parameters
    ----------
    x : array, shape (..., H, W)
        Reference (ground-truth) images: the normalisation is computed from them.
    y : array, shape (..., H, W)
        Test images.
    normalization : {"euclidean", "min-max", "mean"}
        The denominator :math:`D` (case-insensitive, as scikit-image).
    spatial_dims : int, optional
        As in :func:`mse`.
    check_finite : bool

    Returns
    -------
    array, shape (...)
        0 for identical images; ``inf`` (with a warning) where :math:`D = 0` and the images
        differ.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[3.0, 4.0]])
    >>> float(nrmse(x, np.zeros_like(x)))   # |x - 0| / |x|
    1.0
    >>> float(nrmse(x, x + 1, normalization="min-max"))
    1.0
    """
    if isinstance(normalization, str):
        normalization = normalization.lower()
    norm = _v.check_choice(normalization, "normalization", ("euclidean", "min-max", "mean"))
    im = _images(x, y, check_finite, spatial_dims)
    xp, axes = im.xp, im.axes

    def parts(a, b):
        rmse = xp.sqrt(_mean_square(xp, a - b, axes))
        if norm == "euclidean":
            return rmse, xp.sqrt(_mean_square(xp, a, axes))
        if norm == "min-max":
            return rmse, xp.max(a, axis=axes) - xp.min(a, axis=axes)
        return rmse, xp.mean(a, axis=axes)

    (rmse, denom), _ = _per_image(im, parts)
    zero = denom == 0
    if bool(xp.any(zero & (rmse > 0))):
        warnings.warn(f"nrmse: the {norm} normalisation of `x` is 0 for some images; their "
                      "NRMSE is inf", UserWarning, stacklevel=2)
    safe = xp.where(zero, xp.ones_like(denom), denom)
    out = xp.where(zero, xp.where(rmse > 0, xp.full_like(rmse, math.inf), xp.zeros_like(rmse)),
                   rmse / safe)
    return _cast(xp, out, im.out_dtype)


def psnr(x, y, *, data_range: float | None = None, spatial_dims: int | None = None,
         check_finite: bool = True):
    r"""Peak signal-to-noise ratio per image, :math:`10\log_{10}(L^2/\mathrm{MSE})` in dB.

    Computed as :math:`20\log_{10} L - 10\log_{10}\mathrm{MSE}` with the first term in float64
    on the host, so any finite ``data_range`` works in any dtype.

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
    spatial_dims : int, optional
        As in :func:`mse`.
    check_finite : bool

    Returns
    -------
    array, shape (...)
        ``inf`` where the images are identical.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.zeros((8, 8))
    >>> y = x + 0.1                     # MSE = 0.01
    >>> print(f"{float(psnr(x, y, data_range=1.0)):.6f}")
    20.000000
    """
    im = _images(x, y, check_finite, spatial_dims)
    xp = im.xp
    rng = _data_range(im, data_range)
    (err,), span = _per_image(im, lambda a, b: (_mean_square(xp, a - b, im.axes),))
    if span is not None:
        _value_range(span, rng)
    zero = err == 0
    safe = xp.where(zero, xp.ones_like(err), err)
    value = 20.0 * math.log10(rng) - 10.0 * xp.log10(safe)
    out = xp.where(zero, xp.full_like(err, math.inf), value)
    return _cast(xp, out, im.out_dtype)


def _gaussian_taps(sigma: float, truncate: float = SSIM_TRUNCATE) -> list[float]:
    """scipy.ndimage's normalised Gaussian taps, radius ``int(truncate * sigma + 0.5)``."""
    radius = int(truncate * sigma + 0.5)
    k = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 / (sigma * sigma) * k * k)
    return [float(v) for v in w / w.sum()]


def _reflect_pad(xp, a, axis: int, radius: int):
    """Extend ``axis`` by ``radius`` on both sides, scipy's ``"reflect"`` (d c b a | a b c d)."""
    n = int(a.shape[axis])
    i = np.arange(-radius, n + radius) % (2 * n)
    i = np.where(i >= n, 2 * n - 1 - i, i)
    return xp.take(a, xp.asarray(i, device=aa.device(a)), axis=axis)


def _filter_valid(xp, a, taps, axes):
    """Separable valid-mode correlation of ``a`` with ``taps`` over ``axes`` (negative)."""
    n = len(taps)
    half = n // 2
    symmetric = all(taps[i] == taps[n - 1 - i] for i in range(half))
    for ax in axes:
        length = int(a.shape[ax])

        def shifted(i, a=a, ax=ax, length=length):
            index = [slice(None)] * a.ndim
            index[ax] = slice(i, length - n + 1 + i)
            return a[tuple(index)]

        if symmetric:  # pair the taps: half the multiplications
            acc = taps[half] * shifted(half) if n % 2 else None
            for i in range(half):
                part = taps[i] * (shifted(i) + shifted(n - 1 - i))
                acc = part if acc is None else acc + part
        else:
            acc = None
            for i, c in enumerate(taps):
                part = c * shifted(i)
                acc = part if acc is None else acc + part
        a = acc
    return a


def _local_moments(xp, xf, yf, taps, axes):
    """Windowed means of x, y, x^2, y^2 and xy (valid region), one filter pass each.

    On a GPU the five maps are stacked into one array and filtered together (5x fewer kernel
    launches); on the host they are filtered one by one, which keeps each pass in cache
    (measured faster on NumPy at 512 x 512).
    """
    maps = (xf, yf, xf * xf, yf * yf, xf * yf)
    if aa.device_kind(xf)[0] == "cuda":
        f = _filter_valid(xp, xp.stack(maps, axis=0), taps, axes)
        return tuple(f[k, ...] for k in range(5))
    return tuple(_filter_valid(xp, a, taps, axes) for a in maps)


def ssim(x, y, *, data_range: float | None = None, win_size: int | None = None,
         gaussian_weights: bool = True, sigma: float = SSIM_SIGMA,
         use_sample_covariance: bool = False, k1: float = 0.01, k2: float = 0.03,
         channel_axis: int | None = None, spatial_dims: int | None = None, full: bool = False,
         check_finite: bool = True):
    r"""Structural similarity per image (Wang et al. 2004), mean over the valid region.

    Local statistics use a window :math:`w` (by default the normalised Gaussian of sigma 1.5
    with 11 taps, radius ``int(3.5 * sigma + 0.5) = 5``) and population (biased) variances
    and covariance:

    .. math::

        \mathrm{SSIM} = \frac{(2\mu_x\mu_y + C_1)(2\sigma_{xy} + C_2)}
                             {(\mu_x^2 + \mu_y^2 + C_1)(\sigma_x^2 + \sigma_y^2 + C_2)},
        \quad C_1 = (k_1 L)^2,\ C_2 = (k_2 L)^2,

    evaluated as :math:`(1 - \frac{(\mu_x - \mu_y)^2}{\mu_x^2 + \mu_y^2 + C_1})
    (1 - \frac{\sigma_x^2 + \sigma_y^2 - 2\sigma_{xy}}{\sigma_x^2 + \sigma_y^2 + C_2})`
    (no product overflows, whatever :math:`L`), averaged over the pixels at least
    ``(win_size - 1) // 2`` from the border. With the defaults it equals
    ``skimage.metrics.structural_similarity(x, y, data_range=L, gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False)`` for each image; every scikit-image option
    below has scikit-image's meaning.

    Parameters
    ----------
    x, y : array, shape (..., H, W)
        Same shape. Leading axes are batched (one value each).
    data_range : float, optional
        :math:`L`; required for float images. For integer images it is inferred as
        scikit-image's SSIM does: dtype max - dtype min (uint8 and int8: 255; bool: 1).
    win_size : int, optional
        Odd window side. Default: ``2 * int(3.5 * sigma + 0.5) + 1`` (11) for the Gaussian
        window, 7 for the uniform one. With the Gaussian window it sets only the border that
        is left out of the mean (the taps follow ``sigma``), as in scikit-image.
    gaussian_weights : bool
        Gaussian window (default) or uniform ``win_size``-wide window (scikit-image's default).
    sigma : float
        Gaussian window width.
    use_sample_covariance : bool
        Scale variances and covariance by ``NP / (NP - 1)``, ``NP = win_size ** ndim``
        (scikit-image's default True; Wang et al.: False).
    k1, k2 : float
        Stabilising constants (defaults of the paper).
    channel_axis : int, optional
        An axis of ``x`` holding channels: SSIM is computed per channel and averaged over
        it (scikit-image's ``channel_axis``).
    spatial_dims : int, optional
        Number of trailing axes (after removing ``channel_axis``) forming one image: 1 for
        signals, 2 (default; 1 for a 1-D array) for images, 3 for volumes.
    full : bool
        Also return the SSIM map, computed at every pixel with scipy's ``"reflect"``
        boundary as scikit-image does.
    check_finite : bool

    Returns
    -------
    mssim : array, shape (...)
        Mean SSIM per image (batch shape: ``x``'s shape without the image axes and the
        channel axis).
    map : array, shape of ``x``
        Only with ``full=True``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.random((2, 16, 16))
    >>> ssim(x, x, data_range=1.0)
    array([1., 1.])
    >>> mean, smap = ssim(x[0], 1 - x[0], data_range=1.0, full=True)
    >>> smap.shape, bool(mean < 0.5)
    ((16, 16), True)
    """
    gaussian_weights = _v.check_choice(gaussian_weights, "gaussian_weights", (True, False))
    use_sample_covariance = _v.check_choice(use_sample_covariance, "use_sample_covariance",
                                            (True, False))
    full = _v.check_choice(full, "full", (True, False))
    k1 = _v.check_scalar(k1, "k1", positive=True)
    k2 = _v.check_scalar(k2, "k2", positive=True)
    if gaussian_weights:
        sigma = _v.check_scalar(sigma, "sigma", positive=True)
        taps = _gaussian_taps(sigma)
    if win_size is None:
        win = len(taps) if gaussian_weights else SSIM_UNIFORM_WIN
    else:
        win = _v.check_int(win_size, "win_size", minimum=1)
        if win % 2 == 0:
            raise ValueError(f"`win_size` must be odd; got {win}")
    if not gaussian_weights:
        taps = [1.0 / win] * win
    im = _images(x, y, check_finite, spatial_dims, min_side=win, channel_axis=channel_axis)
    xp, axes = im.xp, im.axes
    npix = win ** len(axes)
    if use_sample_covariance and npix == 1:
        raise ValueError("`win_size` = 1 leaves no sample covariance (NP - 1 = 0); use "
                         "win_size >= 3 or use_sample_covariance=False")
    rng = _data_range(im, data_range, ssim_rule=True)
    work = im.xf.dtype
    big = float(xp.finfo(work).max)
    c1 = min((k1 * rng) * (k1 * rng), big)  # Python floats (float64); see the docstring
    c2 = min((k2 * rng) * (k2 * rng), big)
    cov_norm = npix / (npix - 1) if use_sample_covariance else 1.0
    pad = (win - 1) // 2
    radius = (len(taps) - 1) // 2
    whole = full or pad != radius

    def one_chunk(xf, yf):
        if whole:  # every pixel, reflected borders (scikit-image's map); the mean is cropped
            for ax in axes:
                xf = _reflect_pad(xp, xf, xf.ndim + ax, radius)
                yf = _reflect_pad(xp, yf, yf.ndim + ax, radius)
        ux, uy, uxx, uyy, uxy = _local_moments(xp, xf, yf, taps, axes)
        vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
        if cov_norm != 1.0:
            vx, vy, vxy = vx * cov_norm, vy * cov_norm, vxy * cov_norm
        du = ux - uy
        var_sum = vx + vy
        smap = ((1.0 - du * du / (ux * ux + uy * uy + c1))
                * (1.0 - (var_sum - 2.0 * vxy) / (var_sum + c2)))
        inner = smap
        if whole and pad:
            index = [slice(None)] * smap.ndim
            for ax in axes:
                index[smap.ndim + ax] = slice(pad, int(smap.shape[ax]) - pad)
            inner = smap[tuple(index)]
        mean = xp.mean(inner, axis=axes)
        return (mean, smap) if full else (mean,)

    got, span = _per_image(im, one_chunk)
    if span is not None:
        peak = _value_range(span, rng)
        if peak * peak > big:
            raise ValueError(f"`x` and `y` reach {peak:.3g}, whose square overflows {work}; "
                             "rescale the images or use float64")
    mean = got[0]
    if channel_axis is not None:
        mean = xp.mean(mean, axis=0)
    mean = _cast(xp, mean, im.out_dtype)
    if not full:
        return mean
    smap = got[1]
    if channel_axis is not None:
        smap = xp.moveaxis(smap, 0, channel_axis)
    return mean, _cast(xp, smap, im.out_dtype)


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

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> a = rng.standard_normal((500, 2))
    >>> abs(float(frechet_distance(a, a))) < 1e-12         # same features: 0
    True
    >>> print(f"{float(frechet_distance(a, a + 3.0)):.6f}")  # mean shift (3, 3): 9 + 9
    18.000000
    """
    xp, (fa, fb) = _v.common_namespace(features_a=features_a, features_b=features_b)
    fa, fb, _ = _v.as_point_pair(xp, fa, fb, ("features_a", "features_b"),
                                 check_finite=check_finite)
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
    if aa.is_array(bandwidth) and bandwidth.ndim == 1:
        bandwidth = [bandwidth[i] for i in range(bandwidth.shape[0])]
    if isinstance(bandwidth, Sequence) and not isinstance(bandwidth, str):
        values = list(bandwidth)
        if not values:
            raise ValueError("`bandwidth` must be a positive float or a non-empty sequence")
    else:
        values = [bandwidth]
    return [_v.check_scalar(h, "bandwidth", positive=True) for h in values]


def _beta(h: float) -> float:
    """``1 / (2 h^2)`` in float64 without overflow or division by zero; names `bandwidth`."""
    beta = 0.5 / h / h
    if beta == 0.0 or math.isinf(beta):
        raise ValueError(f"`bandwidth` = {h:.6g} is out of range: the kernel exponent "
                         f"1 / (2 bandwidth^2) is {beta} in float64; use a bandwidth within "
                         "about 1e-150 to 1e150 of the data scale")
    return beta


def mmd(x, y, *, bandwidth, unbiased: bool = True, check_finite: bool = True,
        backend: str | None = None):
    r"""Squared maximum mean discrepancy with a Gaussian kernel, tiled (no n x m matrix).

    .. math::

        k(a, b) = \sum_h \exp\Bigl(-\frac{\lVert a - b\rVert^2}{2h^2}\Bigr),\qquad
        \mathrm{MMD}^2 = \overline{k(x, x')} + \overline{k(y, y')} - 2\,\overline{k(x, y)}

    ``unbiased=True`` (default): the U-statistic, means over pairs ``i != j`` within each set
    (unbiased for the population MMD², may be slightly negative); ``unbiased=False``: the
    V-statistic (means over all pairs, >= 0). Kernel sums run through the tiled
    Gaussian-kernel matvec (:func:`arraygen.tiled.kernel_matvec`'s core).

    Parameters
    ----------
    x : array, shape (n, d) or (n,)
    y : array, shape (m, d) or (m,)
    bandwidth : float or sequence of float
        Kernel length scale(s) :math:`h > 0` (several: a sum of kernels).
    unbiased : bool
    check_finite : bool
        Check that the samples are finite and that the kernel exponents fit the dtype.
    backend : str, optional
        Kernel backend, as in :func:`~arraygen.tiled.kernel_matvec`.

    Returns
    -------
    0-d array
        :math:`\mathrm{MMD}^2` in the inputs' float dtype.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([0.0, 1.0])              # two points in 1-D
    >>> k01 = np.exp(-0.5)                    # k(0, 1) with h = 1
    >>> value = mmd(x, x + 10.0, bandwidth=1.0, unbiased=False, backend="array_api")
    >>> bool(np.isclose(value, 2 * (1 + k01) / 2, atol=1e-12))   # k(x, y) ~ 0
    True
    """
    xp, (x, y) = _v.common_namespace(x=x, y=y)
    # finiteness comes with the exponent-range check below (one reduction per sample)
    xf, yf, out_dtype = _v.as_point_pair(xp, x, y, check_finite=False)
    unbiased = _v.check_choice(unbiased, "unbiased", (True, False))
    hs = _bandwidths(bandwidth)
    betas = [_beta(h) for h in hs]
    for beta in betas:
        _v.check_fits_dtype(xp, beta, xf.dtype, "bandwidth", what="1 / (2 bandwidth^2)")
    if check_finite:  # x-x, y-y and x-y pairs: bounded by the pairs within each sample
        for label, a in (("x", xf), ("y", yf)):
            _v.check_exponent_range(xp, max(betas), a, None, "bandwidth", x_name=label,
                                    what="1 / (2 bandwidth^2)")
    n, m = int(xf.shape[0]), int(yf.shape[0])
    if unbiased and (n < 2 or m < 2):
        raise ValueError(f"the unbiased MMD needs at least 2 samples in each set; got n = {n}, "
                         f"m = {m} (use unbiased=False)")
    kxx, kyy, kxy = _kernel_sums(xp, xf, yf, betas, backend)
    k = float(len(hs))
    if unbiased:
        # the diagonal terms are exactly k(a, a) = 1 per bandwidth
        out = ((kxx - k * n) / (n * (n - 1)) + (kyy - k * m) / (m * (m - 1))
               - 2.0 * kxy / (n * m))
    else:
        out = kxx / (n * n) + kyy / (m * m) - 2.0 * kxy / (n * m)
    return _cast(xp, out, out_dtype)


#: Up to this many point pairs the three MMD kernel sums share one launch over the joined
#: sample (per-call overhead dominates); above it they run as three launches (less work).
_MMD_JOINED_PAIRS = 1 << 20


def _kernel_sums(xp, xf, yf, betas, backend):
    """``(sum k(x, x'), sum k(y, y'), sum k(x, y))`` over all ordered pairs, summed over the
    kernels ``exp(-beta |a - b|^2)`` of ``betas``: 0-d arrays."""
    n, m = int(xf.shape[0]), int(yf.shape[0])
    dev = aa.device(xf)
    kxx = kyy = kxy = 0.0
    if (n + m) ** 2 <= _MMD_JOINED_PAIRS:
        # one launch: z = [x; y] against the indicator columns [1_x, 1_y]
        z = xp.concat([xf, yf], axis=0)
        ind = xp.concat([xp.ones((n,), dtype=xf.dtype, device=dev),
                         xp.zeros((m,), dtype=xf.dtype, device=dev)], axis=0)
        cols = xp.stack([ind, 1.0 - ind], axis=1)
        for beta in betas:
            out = _matvec(xp, z, z, cols, beta=beta, backend=backend)
            kxx = kxx + xp.sum(out[:n, 0])
            kxy = kxy + xp.sum(out[:n, 1])
            kyy = kyy + xp.sum(out[n:, 1])
        return kxx, kyy, kxy
    ones_m = xp.ones((m, 1), dtype=xf.dtype, device=dev)
    ones_n = xp.ones((n, 1), dtype=xf.dtype, device=dev)
    for beta in betas:
        kxx = kxx + xp.sum(_matvec(xp, xf, xf, ones_n, beta=beta, backend=backend))
        kyy = kyy + xp.sum(_matvec(xp, yf, yf, ones_m, beta=beta, backend=backend))
        kxy = kxy + xp.sum(_matvec(xp, xf, yf, ones_m, beta=beta, backend=backend))
    return kxx, kyy, kxy


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
    x : array, shape (n, d) or (n,)
    y : array, shape (m, d) or (m,)
    check_finite : bool

    Returns
    -------
    0-d array

    Examples
    --------
    >>> import numpy as np
    >>> float(energy_distance(np.array([0.0]), np.array([1.0])))   # 2 |0 - 1| - 0 - 0
    2.0
    """
    xp, (x, y) = _v.common_namespace(x=x, y=y)
    xf, yf, out_dtype = _v.as_point_pair(xp, x, y, check_finite=check_finite)
    out = (2.0 * _mean_distance(xp, xf, yf) - _mean_distance(xp, xf, xf)
           - _mean_distance(xp, yf, yf))
    return _cast(xp, out, out_dtype)
