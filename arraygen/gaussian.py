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
    (symmetric taps ``w[r - k] == w[r + k]``, centre at index ``r``, ``r >= 1``; ``r`` may
    reach the axis length, never more), one per entry of ``axes``; ``axes``: tuple of distinct
    non-negative ints, applied in that order; ``mode``: one of :data:`MODES`; ``cval``: Python
    float. Returns ``y`` with x's shape and dtype in x's namespace and device, where one pass
    along axis ``a`` with taps ``w`` is ``y[.., i, ..] = sum_k w[k] x[.., src(i + k - r), ..]``
    (``src`` from the table above) and passes are chained in the order of ``axes``.

The op module hands kernels only such passes (smoothing and even derivative orders, real
input: complex input is filtered as two real arrays); odd-order derivative passes, whose taps
are antisymmetric, run on the Array-API path.
"""

from __future__ import annotations

import functools
import logging
import math
from collections import OrderedDict
from typing import Any, NamedTuple

import numpy as np

from . import _array_api as aa
from . import _dask, _dispatch
from ._kernels.gaussian import MODES, source_indices  # noqa: F401
from ._validation import check_choice, check_int, check_scalar, check_shape, common_namespace

__all__ = ["MODES", "gaussian_filter", "gaussian_filter1d", "gaussian_filter_fft",
           "gaussian_kernel1d", "gaussian_kernel_fft"]

logger = logging.getLogger("arraygen")

#: Boundary modes, in the order of their integer codes used by the kernels.
_ALIASES = {"grid-mirror": "reflect", "grid-wrap": "wrap", "grid-constant": "constant"}
#: Below this sigma an axis is left unchanged (scipy's threshold).
_SIGMA_SKIP = 1e-15

# gpu_order as measured by tools/gpu_bench_gaussian.py on an H100 (float32, sigma 2,
# 16x3x1024x1024): cupy 0.25 ms (fused, tiled in shared memory), triton 0.84 ms, numba_cuda 4.0 ms
# (two passes). Issue 19 added fused one-read-one-write kernels to every GPU backend (CuPy column
# strips, Triton banded products, Numba-CUDA shared tiles), chosen by each backend's ``TUNING``;
# the benchmark times the old and new kernels side by side.
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


# arguments ---------------------------------------------------------------------------------
#: Largest kernel radius (samples) a filter builds; wider kernels are folded onto the axis in
#: chunks, so this bounds the time spent summing taps (about 0.1 s), not the memory.
MAX_RADIUS = 1 << 23


def _check_axes(axes: Any, ndim: int) -> tuple[int, ...]:
    """``axes`` as distinct non-negative ints (an int is one axis, None every axis)."""
    if axes is None:
        return tuple(range(ndim))
    if aa.is_array(axes) or isinstance(axes, (int, np.integer)):
        axes = (axes,) if not aa.is_array(axes) or axes.ndim == 0 else tuple(axes.tolist())
    if not isinstance(axes, (tuple, list, range)):
        raise TypeError(f"`axes` must be an int or a sequence of ints; got {axes!r}")
    if not axes:
        raise ValueError("`axes` must name at least one axis; got ()")
    out = []
    for a in axes:
        a = check_int(a, "axes")
        if not -ndim <= a < ndim:
            raise ValueError(f"`axes` entry {a} is out of range for an array with {ndim} "
                             f"dimension(s) (valid: {-ndim}..{ndim - 1})")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"`axes` must not repeat an axis; got {tuple(axes)} (normalised "
                         f"{tuple(out)})")
    return tuple(out)


def _per_axis(value: Any, n_axes: int, name: str) -> list:
    """A scalar option repeated over ``n_axes``, or a sequence with one entry per axis."""
    if aa.is_array(value):
        value = aa.to_numpy(value).tolist()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        if len(value) != n_axes:
            raise ValueError(f"`{name}` must be a scalar or have one value per axis "
                             f"({n_axes}); got {len(value)} values")
        return list(value)
    return [value] * n_axes


def _check_mode(mode: Any, name: str = "mode") -> str:
    if not isinstance(mode, str):
        raise TypeError(f"`{name}` must be a string, one of {MODES}; got {mode!r}")
    return check_choice(_ALIASES.get(mode, mode), name, MODES)


def _check_cval(cval: Any, complex_ok: bool) -> complex | float:
    if complex_ok and isinstance(cval, (complex, np.complexfloating)):
        re = check_scalar(cval.real, "cval")
        return complex(re, check_scalar(cval.imag, "cval"))
    return check_scalar(cval, "cval")


def _radius(sigma: float, truncate: float, radius: Any, name_r: str) -> int:
    """Kernel radius: ``radius`` if given, else ``int(truncate * sigma + 0.5)``, bounded."""
    if radius is not None:
        r = check_int(radius, name_r, minimum=0)
        if r > MAX_RADIUS:
            raise ValueError(f"`radius` = {r} is above the largest supported kernel radius "
                             f"{MAX_RADIUS}")
        return r
    r = truncate * sigma + 0.5
    if r > MAX_RADIUS + 1:
        raise ValueError(
            f"`sigma` = {sigma:g} with `truncate` = {truncate:g} gives a kernel radius of "
            f"{int(r)} samples, above the largest supported {MAX_RADIUS}; pass a smaller "
            "`truncate` or `radius` (or use gaussian_filter_fft for very wide periodic smoothing)")
    return int(r)


class _Pass(NamedTuple):
    """One 1-D correlation: ``y[.., i, ..] = sum_k taps[k] x~[.., i + k - r, ..]`` on ``axis``."""

    axis: int
    taps: np.ndarray  # read-only float64, odd length 2 r + 1
    mode: str
    symmetric: bool


_PLAN_CACHE: dict = {}
_PLAN_TYPES = (int, float, str, type(None))


def _plan(shape, axes, sigma, order, mode, truncate, radius) -> list[_Pass]:
    """:func:`_plan_uncached`, memoised for options that are plain Python scalars (the types
    are part of the key, so e.g. ``True`` never reuses the plan of ``1``; only successful
    plans are stored, so bad options always reach the checks)."""
    opts = (sigma, order, mode, truncate, radius)
    if not all(type(o) in _PLAN_TYPES for o in opts):
        return _plan_uncached(shape, axes, *opts)
    key = (shape, axes, *opts, *(type(o) for o in opts))
    hit = _PLAN_CACHE.get(key)
    if hit is None:
        hit = _plan_uncached(shape, axes, *opts)
        if len(_PLAN_CACHE) >= 256:
            _PLAN_CACHE.clear()
        _PLAN_CACHE[key] = hit
    return list(hit)


def _plan_uncached(shape, axes, sigma, order, mode, truncate, radius) -> list[_Pass]:
    """Validate the per-axis options of a filter call; return its 1-D passes, in order.

    Axes with sigma <= 1e-15 are skipped (as scipy does); an order-0 kernel of one tap is the
    identity and is skipped too.
    """
    k = len(axes)
    sigmas = [check_scalar(s, "sigma", nonnegative=True) for s in _per_axis(sigma, k, "sigma")]
    orders = [check_int(o, "order", minimum=0) for o in _per_axis(order, k, "order")]
    modes = [_check_mode(m) for m in _per_axis(mode, k, "mode")]
    truncate = check_scalar(truncate, "truncate", positive=True)
    radii = [None if r is None else check_int(r, "radius", minimum=0)
             for r in _per_axis(radius, k, "radius")]
    passes = []
    for axis, s, o, m, r in zip(axes, sigmas, orders, modes, radii):
        if s <= _SIGMA_SKIP or shape[axis] == 0:
            continue
        r = _radius(s, truncate, r, "radius")
        if r == 0 and o == 0:
            continue
        taps = _folded_taps(s, o, r, shape[axis], m)
        if o == 0 and len(taps) == 1:
            continue
        passes.append(_Pass(axis, taps, m, o % 2 == 0))
    return passes


# taps --------------------------------------------------------------------------------------
def _poly(sigma: float, order: int) -> np.ndarray:
    """Coefficients of q with d^order/dx^order exp(-x^2 / (2 sigma^2)) = q(x) exp(...)."""
    q = np.zeros(order + 1)
    q[0] = 1.0
    if order:
        d = np.diag(np.arange(1, order + 1, dtype=np.float64), 1)  # q -> q'
        p = np.diag(np.full(order, -1.0 / (sigma * sigma)), -1)  # q -> q * p'
        for _ in range(order):
            q = (d + p) @ q
    return q


def _kernel(sigma: float, order: int, radius: int) -> np.ndarray:
    """scipy.ndimage's kernel: phi^(order) sampled at x = -r..r, phi normalised to sum 1."""
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * x.astype(np.float64) ** 2)
    phi = phi / phi.sum()
    if order == 0:
        return phi
    return (x[:, None].astype(np.float64) ** np.arange(order + 1)) @ _poly(sigma, order) * phi


def _fold_radius(n: int, mode: str) -> int:
    """Radius beyond which taps fold onto the axis: sources repeat (period) or saturate."""
    if mode in ("nearest", "constant"):
        return n
    return _period(n, mode) // 2


def _period(n: int, mode: str) -> int:
    if mode == "wrap" or n == 1:
        return n
    return 2 * n if mode == "reflect" else 2 * n - 2


@functools.lru_cache(maxsize=256)
def _folded_taps(sigma: float, order: int, radius: int, n: int, mode: str) -> np.ndarray:
    """Correlation taps (the kernel reversed, as scipy correlates with it) for an axis of
    length ``n``, read-only.

    When ``radius`` exceeds the axis, taps whose sources coincide are summed (exact, by the
    periodicity of reflect/mirror/wrap sources and the saturation of nearest/constant ones),
    so the result has radius at most about ``n`` and the same value as the full kernel.
    """
    rf = _fold_radius(n, mode)
    if radius <= rf:
        taps = _kernel(sigma, order, radius)[::-1].copy()
    else:
        taps = _fold(sigma, order, radius, n, mode, rf)
    taps.flags.writeable = False
    return taps


def _fold(sigma, order, radius, n, mode, rf, chunk=1 << 20):
    """Taps of radius ``rf`` equal to the radius-``radius`` taps folded onto the axis."""
    q = _poly(sigma, order)
    acc = np.zeros(2 * rf + 1)
    norm = 0.0
    period = _period(n, mode) if mode not in ("nearest", "constant") else None
    for lo in range(-radius, radius + 1, chunk):
        d = np.arange(lo, min(lo + chunk, radius + 1))
        phi = np.exp(-0.5 / (sigma * sigma) * d.astype(np.float64) ** 2)
        norm += phi.sum()
        # correlation tap at offset d is the kernel at -d
        val = phi if order == 0 else ((-d[:, None]).astype(np.float64) ** np.arange(order + 1)
                                      ) @ q * phi
        if period is None:
            idx = np.clip(d, -rf, rf) + rf
        else:
            m = np.mod(d, period)
            idx = np.where(m <= period // 2, m, m - period) + rf
        acc += np.bincount(idx, weights=val, minlength=2 * rf + 1)
    if period is not None and period % 2 == 0 and rf > 0:
        acc[0] = acc[-1] = 0.5 * acc[-1]  # offsets +-period/2 have the same source
    acc = acc / norm
    sign = 1.0 if order % 2 == 0 else -1.0
    return 0.5 * (acc + sign * acc[::-1])  # exactly (anti)symmetric, as the math says


def gaussian_kernel1d(sigma: float, truncate: float = 4.0, *, order: int = 0,
                      radius: int | None = None) -> np.ndarray:
    r"""Sampled Gaussian (or its derivative) as scipy.ndimage builds it.

    .. math:: w_k = q(x_k)\, \phi_k, \quad \phi_k = e^{-x_k^2 / (2\sigma^2)} \Big/
              \sum_j e^{-x_j^2 / (2\sigma^2)}, \quad x_k = k - r, \ k = 0..2r,

    with :math:`q \phi` the ``order``-th derivative of :math:`e^{-x^2/(2\sigma^2)}` over itself
    (:math:`q = 1` for ``order=0``) and :math:`r = \lfloor \text{truncate}\cdot\sigma + 1/2
    \rfloor` unless ``radius`` is given. This is the convolution kernel; the filters correlate
    with ``w[::-1]`` (scipy's ``_gaussian_kernel1d``).

    Parameters
    ----------
    sigma : float
        Standard deviation in samples (> 0).
    truncate : float
        Radius in standard deviations (> 0), used when ``radius`` is None.
    order : int
        Derivative order (>= 0).
    radius : int, optional
        Radius in samples (>= 0).

    Returns
    -------
    w : float64 NumPy array of shape (2r + 1,)

    Examples
    --------
    >>> from arraygen.gaussian import gaussian_kernel1d
    >>> w = gaussian_kernel1d(1.0)
    >>> w.shape, round(float(w.sum()), 12)
    ((9,), 1.0)
    >>> gaussian_kernel1d(1.0, order=1, radius=1).round(4)
    array([ 0.2741,  0.    , -0.2741])
    """
    sigma = check_scalar(sigma, "sigma", positive=True)
    truncate = check_scalar(truncate, "truncate", positive=True)
    order = check_int(order, "order", minimum=0)
    return _kernel(sigma, order, _radius(sigma, truncate, radius, "radius"))


# public ops --------------------------------------------------------------------------------
def gaussian_filter(x, sigma, *, axes=(-2, -1), order=0, output=None, mode="reflect",
                    cval=0.0, truncate: float = 4.0, radius=None, backend: str | None = None):
    r"""Separable Gaussian filter with scipy.ndimage.gaussian_filter semantics.

    Along each axis ``a`` of ``axes`` with :math:`\sigma_a > 10^{-15}`, in order:

    .. math:: y_i = \sum_{k=-r}^{r} w_{-k}\, \tilde x_{i+k}, \quad
              r = \lfloor \text{truncate}\cdot\sigma_a + 1/2 \rfloor

    with :math:`w` from :func:`gaussian_kernel1d` (the normalised sampled Gaussian, or its
    ``order``-th derivative) and :math:`\tilde x` the input extended by ``mode`` (module
    docstring). Axes not in ``axes`` (batch, channels) are left alone. A radius longer than the
    axis is folded onto it (taps with the same source are summed: the result is that of the
    full kernel, in memory and time bounded by the axis); radii above :data:`MAX_RADIUS`
    (2**23 samples) raise ``ValueError`` naming ``sigma`` and ``truncate`` (or ``radius``).

    Parameters
    ----------
    x : array or list, shape (..., n_1, ..., n_k)
        Real or complex input, any strides (complex: real and imaginary parts are filtered
        separately). float16/bfloat16 are computed in float32; integer and bool inputs become
        the namespace's default float.
    sigma : float or sequence of floats
        Standard deviation in samples, scalar or one per axis of ``axes``; non-negative and
        finite. An axis with sigma 0 is left unchanged.
    axes : int, sequence of ints or None
        Axes to filter (default: the last two; None: every axis, as scipy's default).
        Distinct, in range.
    order : int or sequence of ints
        Derivative order per axis (0: smoothing; 1: first derivative of the Gaussian...).
    output : array or dtype, optional
        Array (``x``'s namespace, device and shape) to write the result into and return, or
        the dtype of the result. As in scipy, passes are chained through this dtype (an integer
        dtype truncates after each pass).
    mode : str or sequence of str
        ``"reflect"``, ``"mirror"``, ``"nearest"``, ``"wrap"`` or ``"constant"`` (scipy names;
        ``grid-*`` aliases accepted), or one per axis.
    cval : float (complex for complex input)
        Value outside the array for ``mode="constant"``.
    truncate : float
        Kernel radius in standard deviations (> 0).
    radius : int or sequence of ints, optional
        Kernel radius in samples per axis; overrides ``truncate``.
    backend : str, optional
        ``"array_api"``, ``"numba_cpu"``, ``"numba_cuda"``, ``"cupy"`` or ``"triton"``
        (default: ``ARRAYGEN_BACKEND`` or automatic, see :mod:`arraygen._dispatch`). Kernels
        run the order-0 passes; derivative passes take the Array-API path.

    Returns
    -------
    y : array like ``x`` (namespace, device, shape; ``x``'s floating dtype unless ``output``)

    Examples
    --------
    >>> import numpy as np
    >>> from arraygen import gaussian_filter
    >>> x = np.zeros((5, 5)); x[2, 2] = 1.0
    >>> y = gaussian_filter(x, 1.0)
    >>> round(float(y.sum()), 12), round(float(y[2, 2]), 4)
    (1.0, 0.1592)
    >>> gaussian_filter(np.arange(5.0), 1.0, axes=0, order=1).round(3)
    array([0.364, 0.849, 0.97 , 0.849, 0.364])
    """
    if _dask.is_dask_array(x) and output is None:
        return _dask.gaussian_filter(x, sigma, axes=axes, mode=mode, cval=cval,
                                     truncate=truncate, backend=backend, order=order,
                                     radius=radius)
    xp, (x, out_arr) = _arrays(x, output)
    axes = _check_axes(axes, x.ndim)
    passes = _plan(tuple(x.shape), axes, sigma, order, mode, truncate, radius)
    return _filter(xp, x, passes, cval, output, out_arr, backend)


def gaussian_filter1d(x, sigma, axis=-1, order=0, output=None, mode="reflect", cval=0.0,
                      truncate=4.0, *, radius=None, backend: str | None = None):
    r"""One-dimensional Gaussian filter along ``axis`` (scipy.ndimage.gaussian_filter1d).

    :func:`gaussian_filter` with a single axis: ``sigma``, ``order``, ``mode`` and ``radius``
    are scalars.

    Parameters
    ----------
    x : array or list
        Real or complex input.
    sigma : float
        Standard deviation in samples (non-negative; <= 1e-15 leaves ``x`` unchanged).
    axis : int
        Axis to filter.
    order : int
        Derivative order (>= 0).
    output : array or dtype, optional
        As in :func:`gaussian_filter`.
    mode : str
        Boundary mode, as in :func:`gaussian_filter`.
    cval : float
        Value outside the array for ``mode="constant"``.
    truncate : float
        Kernel radius in standard deviations.
    radius : int, optional
        Kernel radius in samples; overrides ``truncate``.
    backend : str, optional
        As in :func:`gaussian_filter`.

    Returns
    -------
    y : array like ``x``

    Examples
    --------
    >>> import numpy as np
    >>> from arraygen import gaussian_filter1d
    >>> gaussian_filter1d(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), 1.0).round(4)
    array([1.427 , 2.0678, 3.    , 3.9322, 4.573 ])
    """
    xp, (x, out_arr) = _arrays(x, output)
    (axis,) = _check_axes(check_int(axis, "axis"), x.ndim)
    for name, value in (("sigma", sigma), ("order", order), ("mode", mode), ("radius", radius)):
        if isinstance(value, (list, tuple)) or aa.is_array(value) and value.ndim:
            raise TypeError(f"`{name}` must be a scalar for gaussian_filter1d; got {value!r}")
    passes = _plan(tuple(x.shape), (axis,), sigma, order, mode, truncate, radius)
    return _filter(xp, x, passes, cval, output, out_arr, backend)


def _arrays(x, output):
    """The input (lists read as NumPy) and the ``output`` array, if one was passed."""
    out_arr = output if aa.is_array(output) and not isinstance(output, type) else None
    xp, (x, out_arr) = common_namespace(x=x, output=out_arr)
    if x.ndim == 0:
        raise ValueError("`x` must have at least one dimension; got a 0-d array")
    if out_arr is not None and tuple(out_arr.shape) != tuple(x.shape):
        raise ValueError(f"`output` must have the shape of `x` {tuple(x.shape)}; got "
                         f"{tuple(out_arr.shape)}")
    return xp, (x, out_arr)


def _output_dtype(xp, output, out_arr):
    if output is None:
        return None
    if out_arr is not None:
        return out_arr.dtype
    try:
        if isinstance(output, str) or isinstance(output, type) or isinstance(output, np.dtype):
            dt = getattr(xp, np.dtype(output).name)
        else:
            dt = output
        xp.isdtype(dt, "numeric")
    except Exception:
        raise TypeError(f"`output` must be an array or a dtype of {getattr(xp, '__name__', xp)}"
                        f"; got {output!r}") from None
    return dt


def _filter(xp, x, passes, cval, output, out_arr, backend):
    """Validated input -> filtered array in the requested dtype, written to ``output``."""
    is_complex = xp.isdtype(x.dtype, "complex floating")
    cval = _check_cval(cval, is_complex)
    out_dtype = _output_dtype(xp, output, out_arr)
    if is_complex:
        if out_dtype is not None and not xp.isdtype(out_dtype, "complex floating"):
            raise TypeError(f"`output` must have a complex dtype for complex `x`; got "
                            f"{out_dtype}")
        cdt = x.dtype if out_dtype is None else out_dtype
        rdt = xp.float32 if cdt == xp.complex64 else xp.float64
        c = complex(cval)
        re = _filter_real(xp, xp.real(x), passes, c.real, rdt, backend)
        im = _filter_real(xp, xp.imag(x), passes, c.imag, rdt, backend)
        y = xp.astype(re, cdt) + xp.astype(im, cdt) * xp.asarray(1j, dtype=cdt,
                                                                  device=aa.device(x))
    else:
        real_out = out_dtype
        if out_dtype is not None and xp.isdtype(out_dtype, "complex floating"):
            real_out = None
        y = _filter_real(xp, x, passes, cval, real_out, backend)
        if out_dtype is not None and y.dtype != out_dtype:
            y = xp.astype(y, out_dtype)
    if out_arr is None:
        return y
    out_arr[...] = y
    return out_arr


def _filter_real(xp, x, passes, cval, out_dtype, backend):
    """Real input; ``out_dtype`` None means x's floating dtype (its default float for ints)."""
    x, x_dtype = aa.as_float_array(xp, x, "x")
    cast = None  # integer/bool output: scipy stores every pass in it
    if out_dtype is None:
        out_dtype = x_dtype
    elif xp.isdtype(out_dtype, "real floating"):
        work = xp.result_type(x.dtype, aa.compute_dtype(xp, out_dtype))
        x = xp.astype(x, work) if x.dtype != work else x
    else:
        cast = out_dtype
    if not passes or aa.size(x) == 0:
        y = xp.asarray(x, copy=True)
    else:
        y = _run_passes(xp, x, passes, float(cval), cast, backend)
    return y if y.dtype == out_dtype else xp.astype(y, out_dtype)


def _run_passes(xp, x, passes, cval, cast, backend):
    """Kernel backends take runs of symmetric passes with one mode; the rest is Array-API."""
    all_kernel = all(p.symmetric for p in passes)
    name = _dispatch.select("gaussian_filter", x, backend=backend,
                            prefer_array_api=not all_kernel)
    groups: list[list[_Pass]] = []
    for p in passes:
        g = groups[-1] if groups else None
        if (g is not None and cast is None and name != "array_api" and p.symmetric
                and g[-1].symmetric and p.mode == g[-1].mode):
            g.append(p)
        else:
            groups.append([p])
    work = x.dtype
    for g in groups:
        if name == "array_api" or not g[0].symmetric:
            for p in g:
                x = _correlate_axis_xp(xp, x, p.taps, p.axis, p.mode, cval)
        else:
            x = _dispatch.kernel("gaussian_filter", name)(
                x, tuple(p.taps for p in g), axes=tuple(p.axis for p in g), mode=g[0].mode,
                cval=cval)
        if cast is not None:
            x = xp.astype(xp.astype(x, cast), work)
    return x


def _correlate_axis_xp(xp, x, w, axis, mode, cval):
    """One gather (``take``) and about r + 1 shifted FMAs along ``axis``."""
    n = x.shape[axis]
    r = (len(w) - 1) // 2
    if r == 0:
        return float(w[0]) * x
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

    if np.array_equal(w, w[::-1]):
        y = float(w[r]) * shifted(r)
        for k in range(1, r + 1):
            y = y + float(w[r + k]) * (shifted(r - k) + shifted(r + k))
    elif np.array_equal(w, -w[::-1]):  # odd derivatives: w[r] == 0
        y = float(w[r + 1]) * (shifted(r + 1) - shifted(r - 1))
        for k in range(2, r + 1):
            y = y + float(w[r + k]) * (shifted(r + k) - shifted(r - k))
    else:
        y = float(w[0]) * shifted(0)
        for k in range(1, 2 * r + 1):
            y = y + float(w[k]) * shifted(k)
    return y


# FFT path ----------------------------------------------------------------------------------
_MEMORY_CACHE: OrderedDict = OrderedDict()
_MEMORY_CACHE_ENTRIES = 32


def _sigmas(sigma, n_axes):
    return tuple(check_scalar(s, "sigma", nonnegative=True)
                 for s in _per_axis(sigma, n_axes, "sigma"))


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

    Examples
    --------
    >>> from arraygen import gaussian_kernel_fft
    >>> g = gaussian_kernel_fft((4, 6), 1.0, spacing=1.0)
    >>> g.shape, float(g[0, 0])
    ((4, 4), 1.0)
    """
    shape, sigmas, floor = _check_fft_args(shape, sigma, floor)
    spacings = _fft_spacings(spacing, shape)
    ns = aa.namespace_for(xp)
    dtype = ns.float64 if dtype is None else dtype
    if isinstance(dtype, str):
        dtype = getattr(ns, dtype, dtype)
    try:
        ok = ns.isdtype(dtype, "real floating")
    except Exception:
        ok = False
    if not ok:
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
    shape = check_shape(shape, "shape")
    if not shape:
        raise ValueError("`shape` must name at least one axis; got ()")
    sigmas = _sigmas(sigma, len(shape))
    floor = check_scalar(floor, "floor", low=0.0, high=1.0, high_inclusive=False)
    return shape, sigmas, floor


def _fft_spacings(spacing, shape) -> tuple[float, ...]:
    if spacing is None:
        return tuple(1.0 / n for n in shape)
    return tuple(check_scalar(v, "spacing", positive=True)
                 for v in _per_axis(spacing, len(shape), "spacing"))


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

    Examples
    --------
    >>> import numpy as np
    >>> from arraygen import gaussian_filter_fft
    >>> x = np.zeros((8, 8)); x[0, 0] = 1.0
    >>> y = gaussian_filter_fft(x, 1.0)
    >>> round(float(y.sum()), 12), bool(y[0, 0] > y[0, 1] > y[0, 4])
    (1.0, True)
    """
    xp, (x, _) = _arrays(x, None)
    axes = _check_axes(axes, x.ndim)
    sigmas = _sigmas(sigma, len(axes))
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
