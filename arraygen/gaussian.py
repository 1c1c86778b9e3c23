"""Gaussian hot path: scipy-exact separable Gaussian filter and periodic FFT smoothing.

Public ops (DESIGN 4.2) and their Array-API implementations; the kernels live in
``arraygen/backends/<language>/gaussian.py`` and the float64 oracle in
``arraygen/reference/gaussian.py``.

Boundary modes (scipy.ndimage names; ``n`` = length of the axis, ``i`` any integer index):

=============  ==========================================================  ================
mode           source index of ``i``                                        extends as
=============  ==========================================================  ================
``reflect``    ``j = i mod 2n``; ``2n - 1 - j`` if ``j >= n``               d c b a | a b c d | d c b a
``mirror``     ``j = i mod (2n - 2)``; ``2n - 2 - j`` if ``j >= n`` (n > 1)  d c b | a b c d | c b a
``nearest``    ``clip(i, 0, n - 1)``                                        a a a | a b c d | d d d
``wrap``       ``i mod n``                                                  b c d | a b c d | a b c
``constant``   ``i`` if ``0 <= i < n``, else the value ``cval``             k k k | a b c d | k k k
=============  ==========================================================  ================

Launcher contract for kernel backends (every backend implements it):

``gaussian_filter(x, weights, *, axes, mode, cval) -> y``
    ``x``: float32/float64 array in the caller's namespace, any strides, ``x.ndim >= 1``;
    ``weights``: tuple of read-only 1-D float64 NumPy arrays of odd length ``2 r + 1``
    (normalised symmetric taps, centre at index ``r``, ``r >= 1``), one per entry of ``axes``; ``axes``: tuple of distinct non-negative
    ints, applied in that order; ``mode``: one of :data:`MODES`; ``cval``: Python float.
    Returns ``y`` with x's shape and dtype in x's namespace and device, where one pass along
    axis ``a`` with taps ``w`` is ``y[.., i, ..] = sum_k w[k] x[.., src(i + k - r), ..]``
    (``src`` from the table above) and passes are chained in the order of ``axes``.
"""

from __future__ import annotations

import functools
import logging
import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _array_api as aa
from . import _dispatch
from ._kernels.gaussian import MODES, source_indices  # noqa: F401

__all__ = ["MODES", "gaussian_filter", "gaussian_filter_fft", "gaussian_kernel1d",
           "gaussian_kernel_fft"]

logger = logging.getLogger("arraygen")

#: Boundary modes, in the order of their integer codes used by the kernels.
_ALIASES = {"grid-mirror": "reflect", "grid-wrap": "wrap", "grid-constant": "constant"}
#: Below this sigma an axis is left unchanged (scipy's threshold).
_SIGMA_SKIP = 1e-15

# gpu_order as measured by tools/gpu_bench_gaussian.py on an H100 (float32, sigma 2,
# 16x3x1024x1024): cupy 0.25 ms (fused, tiled in shared memory), triton 0.84 ms, numba_cuda 4.0 ms.
_dispatch.register(
    "gaussian_filter",
    kernels={
        "numba_cpu": "arraygen.backends.numba_cpu.gaussian:gaussian_filter",
        "numba_cuda": "arraygen.backends.numba_cuda.gaussian:gaussian_filter",
        "cupy": "arraygen.backends.cupy.gaussian:gaussian_filter",
        "triton": "arraygen.backends.triton.gaussian:gaussian_filter",
    },
    gpu_order=("cupy", "triton", "numba_cuda"),
)


# validation --------------------------------------------------------------------------------
def _check_axes(axes: Any, ndim: int) -> tuple[int, ...]:
    if isinstance(axes, (int, np.integer)) and not isinstance(axes, bool):
        axes = (axes,)
    try:
        axes = tuple(axes)
    except TypeError:
        raise TypeError(f"`axes` must be an int or a sequence of ints; got {axes!r}") from None
    if not axes:
        raise ValueError("`axes` must name at least one axis; got ()")
    out = []
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, (int, np.integer)):
            raise TypeError(f"`axes` must contain ints; got {a!r}")
        if not -ndim <= a < ndim:
            raise ValueError(f"`axes` entry {a} is out of range for an array with {ndim} "
                             f"dimension(s) (valid: {-ndim}..{ndim - 1})")
        out.append(int(a) % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"`axes` must not repeat an axis; got {axes} (normalised {tuple(out)})")
    return tuple(out)


def _check_sigmas(sigma: Any, n_axes: int) -> tuple[float, ...]:
    if aa.is_array(sigma):
        sigma = aa.to_numpy(sigma).tolist()
    if isinstance(sigma, (Sequence, np.ndarray)) and not isinstance(sigma, str):
        values = list(np.asarray(sigma, dtype=object).ravel()) if isinstance(
            sigma, np.ndarray) else list(sigma)
        if len(values) != n_axes:
            raise ValueError(f"`sigma` must be a scalar or have one value per axis "
                             f"({n_axes}); got {len(values)} values")
    else:
        values = [sigma] * n_axes
    return tuple(aa.finite_scalar(s, "sigma", nonnegative=True) for s in values)


def _check_mode(mode: Any) -> str:
    if not isinstance(mode, str):
        raise TypeError(f"`mode` must be a string, one of {MODES}; got {mode!r}")
    m = _ALIASES.get(mode, mode)
    if m not in MODES:
        raise ValueError(f"`mode` must be one of {', '.join(MODES)}; got {mode!r}")
    return m


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> np.ndarray:
    r"""Normalised sampled Gaussian taps, as scipy.ndimage uses them.

    .. math:: w_k = e^{-k^2 / (2\sigma^2)} / \sum_j e^{-j^2 / (2\sigma^2)}, \quad
              k = -r..r, \quad r = \lfloor \text{truncate}\cdot\sigma + 1/2 \rfloor

    Returns
    -------
    w : float64 NumPy array of shape (2r + 1,)
    """
    sigma = aa.finite_scalar(sigma, "sigma", positive=True)
    truncate = aa.finite_scalar(truncate, "truncate", positive=True)
    return _kernel1d(sigma, truncate).copy()


@functools.lru_cache(maxsize=256)
def _kernel1d(sigma: float, truncate: float) -> np.ndarray:
    """Cached, read-only taps for the hot path (arguments already validated)."""
    r = int(truncate * sigma + 0.5)
    k = np.arange(-r, r + 1, dtype=np.float64)
    w = np.exp(-0.5 / (sigma * sigma) * k * k)
    w = w / w.sum()
    w.flags.writeable = False
    return w


# public op ---------------------------------------------------------------------------------
def gaussian_filter(x, sigma, *, axes=(-2, -1), mode: str = "reflect", cval: float = 0.0,
                    truncate: float = 4.0, backend: str | None = None):
    r"""Separable Gaussian filter with scipy.ndimage.gaussian_filter semantics.

    Along each axis ``a`` of ``axes`` with :math:`\sigma_a > 0`, in order:

    .. math:: y_i = \sum_{k=-r}^{r} w_k\, \tilde x_{i+k}, \quad
              w_k \propto e^{-k^2/(2\sigma_a^2)}, \ \sum_k w_k = 1, \
              r = \lfloor \text{truncate}\cdot\sigma_a + 1/2 \rfloor

    where :math:`\tilde x` is ``x`` extended by ``mode`` (see :data:`MODES` and the module
    docstring). Axes not in ``axes`` (batch, channels) are left alone.

    Parameters
    ----------
    x : array of shape (..., n_1, ..., n_k)
        Real input, any strides. float16/bfloat16 are computed in float32; integer and bool
        inputs become the namespace's default float.
    sigma : float or sequence of floats
        Standard deviation in samples, scalar or one per axis of ``axes``; non-negative and
        finite. An axis with sigma 0 is left unchanged.
    axes : int or sequence of ints
        Axes to filter (default: the last two). Distinct, in range.
    mode : {"reflect", "mirror", "nearest", "wrap", "constant"}
        Boundary extension (scipy names; ``reflect`` is half-sample symmetric).
    cval : float
        Value outside the array for ``mode="constant"``.
    truncate : float
        Kernel radius in standard deviations (> 0).
    backend : str, optional
        ``"array_api"``, ``"numba_cpu"``, ``"numba_cuda"``, ``"cupy"`` or ``"triton"``
        (default: ``ARRAYGEN_BACKEND`` or automatic, see :mod:`arraygen._dispatch`).

    Returns
    -------
    y : array like ``x`` (same namespace, device, shape and floating dtype)
    """
    xp = aa.array_namespace(x=x)
    if x.ndim == 0:
        raise ValueError("`x` must have at least one dimension; got a 0-d array")
    axes = _check_axes(axes, x.ndim)
    sigmas = _check_sigmas(sigma, len(axes))
    mode = _check_mode(mode)
    cval = aa.finite_scalar(cval, "cval")
    truncate = aa.finite_scalar(truncate, "truncate", positive=True)
    x, out_dtype = aa.as_float_array(xp, x, "x")
    pairs = [(a, s) for a, s in zip(axes, sigmas) if s > _SIGMA_SKIP]
    pairs = [(a, _kernel1d(s, truncate)) for a, s in pairs]
    pairs = [(a, w) for a, w in pairs if len(w) > 1 and x.shape[a] > 0]
    if not pairs or aa.size(x) == 0:
        y = xp.asarray(x, copy=True)
    else:
        axes_f = tuple(a for a, _ in pairs)
        weights = tuple(w for _, w in pairs)
        name = _dispatch.select("gaussian_filter", x, backend=backend)
        if name == "array_api":
            y = _gaussian_filter_xp(xp, x, weights, axes_f, mode, cval)
        else:
            y = _dispatch.kernel("gaussian_filter", name)(x, weights, axes=axes_f, mode=mode,
                                                          cval=cval)
    return y if y.dtype == out_dtype else xp.astype(y, out_dtype)


def _gaussian_filter_xp(xp, x, weights, axes, mode, cval):
    """Array-API implementation: one gather (``take``) and 2r + 1 shifted FMAs per axis."""
    for axis, w in zip(axes, weights):
        x = _correlate_axis_xp(xp, x, w, axis, mode, cval)
    return x


def _correlate_axis_xp(xp, x, w, axis, mode, cval):
    n = x.shape[axis]
    r = (len(w) - 1) // 2
    dev = aa.device(x)
    src = source_indices(n, r, mode)
    valid = src >= 0
    idx = xp.asarray(np.where(valid, src, 0), dtype=xp.int64, device=dev)
    padded = xp.take(x, idx, axis=axis)
    if not valid.all():
        shape = [1] * x.ndim
        shape[axis] = n + 2 * r
        mask = xp.reshape(xp.asarray(valid, device=dev), tuple(shape))
        padded = xp.where(mask, padded, xp.asarray(cval, dtype=x.dtype, device=dev))

    def shifted(k):
        sl = [slice(None)] * x.ndim
        sl[axis] = slice(k, k + n)
        return padded[tuple(sl)]

    y = float(w[r]) * shifted(r)
    for k in range(1, r + 1):  # symmetric taps: w[r - k] == w[r + k]
        y = y + float(w[r + k]) * (shifted(r - k) + shifted(r + k))
    return y


# FFT path ----------------------------------------------------------------------------------
_MEMORY_CACHE: OrderedDict = OrderedDict()
_MEMORY_CACHE_ENTRIES = 32


def _fft_sigmas(sigma, n_axes):
    return _check_sigmas(sigma, n_axes)


def gaussian_kernel_fft(shape, sigma, *, xp=None, device=None, dtype=None, floor: float = 1e-12,
                        spacing=None, cache=None):
    r"""Transfer function of a Gaussian on the ``rfftn`` grid of ``shape``, floored.

    .. math:: G(f) = \max\!\big(e^{-2\pi^2 \sum_i \sigma_i^2 f_i^2},\ \text{floor}\big)

    with :math:`f_i` from ``fftfreq(shape[i], d=spacing[i])`` (``rfftfreq`` for the last axis),
    in cycles per unit length. By default ``spacing[i] = 1 / shape[i]``: every axis spans a
    periodic domain of unit length (the convention of spectral solvers on [0, 1)^k), the
    :math:`f_i` are the integer wave numbers of the rfft grid and ``sigma`` is measured in units
    of the domain; e.g. for (64, 64) and sigma = 1 all but the zero frequency fall to the floor.
    With ``spacing=1.0`` the :math:`f_i` are in cycles per sample and ``sigma`` is in samples
    (pixels), as :func:`gaussian_filter_fft` uses it; the smallest coefficient of a (64, 64)
    grid with sigma = 1 is then :math:`e^{-\pi^2} \approx 5.2\cdot10^{-5}` (the Nyquist
    corner). The floor only keeps divisions by G finite; 1e-12 leaves every coefficient above it
    untouched (an earlier 1e-6 floor blocked high-frequency decay).

    Parameters
    ----------
    shape : sequence of int
        Spatial shape (n_1, ..., n_k) of the signal.
    sigma : float or sequence of float
        Standard deviation(s) in samples, scalar or one per axis, non-negative and finite.
    xp : module, optional
        Namespace of the result (numpy, cupy, torch or a compat namespace); default numpy.
    device : optional
        Device of the result in ``xp``.
    dtype : optional
        Real floating dtype of the result; default float64.
    floor : float
        Lower clamp, in [0, 1).
    spacing : float or sequence of float, optional
        Sample spacing per axis (positive); default ``1 / shape[i]`` (unit-length domain).
    cache : PersistentKernelCache, True or None
        Also look up / store the kernel on disk (True: the default cache directory).

    Returns
    -------
    G : array of shape (n_1, ..., n_{k-1}, n_k // 2 + 1)
    """
    shape, sigmas, floor = _check_fft_args(shape, sigma, floor)
    spacings = _fft_spacings(spacing, shape)
    ns = aa.namespace_for(xp)
    dtype = ns.float64 if dtype is None else dtype
    if isinstance(dtype, str):
        dtype = getattr(ns, dtype)
    if not ns.isdtype(dtype, "real floating"):
        raise TypeError(f"`dtype` must be a real floating dtype; got {dtype}")
    key = (getattr(ns, "__name__", str(ns)), str(device), str(dtype), shape, sigmas, floor,
           spacings)
    hit = _MEMORY_CACHE.get(key)
    if hit is not None:
        _MEMORY_CACHE.move_to_end(key)
        return hit

    def compute():
        return _kernel_fft_numpy(shape, sigmas, floor, spacings)

    disk = _disk_cache(cache)
    if disk is not None:
        host = disk.get_or_compute("gaussian_kernel_fft", compute, shape=list(shape),
                                   sigma=list(sigmas), floor=floor, spacing=list(spacings))
    else:
        host = compute()
    host = np.ascontiguousarray(host, dtype=np.float64)
    if aa.is_torch_namespace(ns):
        import torch

        g = torch.from_numpy(host).to(device=device or "cpu", dtype=dtype)
    else:
        g = ns.asarray(host, device=device) if device is not None else ns.asarray(host)
        g = ns.astype(g, dtype)
    _MEMORY_CACHE[key] = g
    if len(_MEMORY_CACHE) > _MEMORY_CACHE_ENTRIES:
        _MEMORY_CACHE.popitem(last=False)
    return g


def _check_fft_args(shape, sigma, floor):
    try:
        shape = tuple(int(n) for n in shape)
    except TypeError:
        raise TypeError(f"`shape` must be a sequence of ints; got {shape!r}") from None
    if not shape or any(n < 1 for n in shape):
        raise ValueError(f"`shape` must be a non-empty sequence of positive ints; got {shape}")
    sigmas = _fft_sigmas(sigma, len(shape))
    floor = aa.finite_scalar(floor, "floor", nonnegative=True)
    if floor >= 1.0:
        raise ValueError(f"`floor` must lie in [0, 1); got {floor}")
    return shape, sigmas, floor


def _fft_spacings(spacing, shape) -> tuple[float, ...]:
    if spacing is None:
        return tuple(1.0 / n for n in shape)
    values = [spacing] * len(shape) if np.isscalar(spacing) else list(spacing)
    if len(values) != len(shape):
        raise ValueError(f"`spacing` needs one value per axis of shape {shape}; got {spacing!r}")
    return tuple(aa.finite_scalar(v, "spacing", positive=True) for v in values)


def _kernel_fft_numpy(shape, sigmas, floor, spacings) -> np.ndarray:
    k = len(shape)
    e = np.zeros((1,) * k)
    for i, (n, s, d) in enumerate(zip(shape, sigmas, spacings)):
        f = np.fft.rfftfreq(n, d) if i == k - 1 else np.fft.fftfreq(n, d)
        e = e + ((s * f) ** 2).reshape(tuple(-1 if j == i else 1 for j in range(k)))
    return np.maximum(np.exp(-2.0 * math.pi**2 * e), floor)


def _disk_cache(cache):
    if cache is None or cache is False:
        return None
    if cache is True:
        from .cache import PersistentKernelCache

        return PersistentKernelCache()
    if hasattr(cache, "get_or_compute"):
        return cache
    raise TypeError(f"`cache` must be None, True or a PersistentKernelCache; got {cache!r}")


def gaussian_filter_fft(x, sigma, *, axes=(-2, -1), floor: float = 1e-12, cache=None):
    r"""Periodic Gaussian smoothing in Fourier space.

    .. math:: y = \operatorname{irfftn}\big(G \cdot \operatorname{rfftn}(x)\big)

    over ``axes``, with ``G`` from :func:`gaussian_kernel_fft` (cached per shape, sigma,
    device and dtype in memory, and on disk when ``cache`` is given). This is circular
    convolution with the continuous Gaussian's DFT: it equals
    ``scipy.ndimage.gaussian_filter(x, sigma, mode="wrap", truncate=large)`` up to aliasing
    terms of size :math:`e^{-2\pi^2\sigma^2(1-|f|)^2}` (below 3e-9 for sigma >= 2); with the
    default ``truncate=4`` scipy's truncated kernel differs by about its lost tail mass
    (~6e-5 relative).

    Parameters
    ----------
    x : array of shape (..., n_1, ..., n_k)
        Real input; half precision is computed in float32, integers in the default float.
    sigma : float or sequence of float
        Standard deviation(s) in samples, non-negative and finite.
    axes : int or sequence of int
        Axes to smooth (default: the last two); distinct and in range.
    floor : float
        Kernel floor, see :func:`gaussian_kernel_fft`.
    cache : PersistentKernelCache, True or None
        Persist kernels on disk as well as in memory.

    Returns
    -------
    y : array like ``x`` (namespace, device, shape, floating dtype)
    """
    xp = aa.array_namespace(x=x)
    if x.ndim == 0:
        raise ValueError("`x` must have at least one dimension; got a 0-d array")
    axes = _check_axes(axes, x.ndim)
    sigmas = _check_sigmas(sigma, len(axes))
    x, out_dtype = aa.as_float_array(xp, x, "x")
    if aa.size(x) == 0:
        return xp.astype(xp.asarray(x, copy=True), out_dtype)
    k = len(axes)
    dest = tuple(range(x.ndim - k, x.ndim))
    moved = xp.moveaxis(x, axes, dest)
    spatial = tuple(moved.shape[-k:])
    g = gaussian_kernel_fft(spatial, sigmas, xp=xp, device=aa.device(x), dtype=x.dtype,
                            floor=floor, spacing=1.0, cache=cache)
    spec = xp.fft.rfftn(moved, axes=dest)
    y = xp.fft.irfftn(spec * g, s=spatial, axes=dest)
    y = xp.moveaxis(y, dest, axes)
    if y.dtype != x.dtype:
        y = xp.astype(y, x.dtype)
    return y if y.dtype == out_dtype else xp.astype(y, out_dtype)
