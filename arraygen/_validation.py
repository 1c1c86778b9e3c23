"""The boundary: the only place where user input becomes trusted arrays and options.

Every public function of arraygen calls these helpers once, on the arguments the user passed,
and hands the results to a private core (``_core`` functions, ``_*_xp`` implementations,
backend launchers) that trusts them: no core validates again, and no validation runs inside an
iteration loop. Errors are ``TypeError`` (wrong kind of object) or ``ValueError`` (wrong value),
and always name the argument the user passed, with the value or shape that was wrong.

Modelled on SciPy's ``scipy/_lib/_util.py`` (``_validate_int``) and ``scipy/_lib/_array_api.py``
(``_asarray(check_finite=)``, ``xp_promote``).

Conventions
-----------
- Python lists and tuples where an array is expected are read as NumPy arrays (as SciPy does);
  any other non-array object is a ``TypeError`` naming the argument. NumPy arrays in
  non-native byte order (``astype(">f8")``) are converted to native order.
- A point cloud is ``(N, d)``; a 1-D ``(N,)`` array is N points in one dimension, everywhere.
- Floating results keep the input's dtype; half dtypes are computed in float32; integer and
  boolean arrays become the namespace's default float.
- Scalars are checked in float64 on the host (``check_scalar``); an option that would overflow
  the compute dtype once combined with the data is the caller's to check with
  ``check_fits_dtype``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _array_api as aa

__all__ = [
    "as_array",
    "as_log_weights",
    "as_marginals",
    "as_point_pair",
    "as_points",
    "as_rhs",
    "as_vector",
    "check_choice",
    "check_exponent_range",
    "check_fits_dtype",
    "check_int",
    "check_model_output",
    "check_scalar",
    "check_shape",
    "common_namespace",
    "host_float",
    "host_float64",
    "promote_float",
    "require_finite",
]

_INTEGER_TYPES = (int, np.integer)
_NDARRAY = np.ndarray
# float64/float32 dtype -> (largest value, smallest normal), for check_fits_dtype and
# check_exponent_range on NumPy dtypes (the fast path of issue 15; same values as finfo)
_NUMPY_FINFO = {dt: (float(np.finfo(dt).max), float(np.finfo(dt).smallest_normal))
                for dt in (np.dtype(np.float64), np.dtype(np.float32))}


# --------------------------------------------------------------------------------------------
# options (Python scalars)
# --------------------------------------------------------------------------------------------

def check_int(value: Any, name: str, *, minimum: int | None = None,
              maximum: int | None = None) -> int:
    """Return ``value`` as a Python int; ``TypeError``/``ValueError`` name the argument.

    Booleans and floats (even integral ones such as ``2.0``) are rejected, as SciPy's
    ``_validate_int`` does; NumPy integers and objects with ``__index__`` are accepted.

    Examples
    --------
    >>> check_int(3, "steps", minimum=1)
    3
    >>> check_int(2.5, "steps")
    Traceback (most recent call last):
    ...
    TypeError: `steps` must be an integer; got 2.5
    """
    if isinstance(value, bool):
        raise TypeError(f"`{name}` must be an integer; got {value!r}")
    try:
        out = operator.index(value)
    except TypeError:
        raise TypeError(f"`{name}` must be an integer; got {value!r}") from None
    if minimum is not None and out < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}; got {out}")
    if maximum is not None and out > maximum:
        raise ValueError(f"`{name}` must be <= {maximum}; got {out}")
    return int(out)


def check_scalar(value: Any, name: str, *, positive: bool = False, nonnegative: bool = False,
                 finite: bool = True, low: float | None = None, high: float | None = None,
                 low_inclusive: bool = True, high_inclusive: bool = True) -> float:
    """Return a real scalar option as a Python float (checked in float64).

    ``positive`` means ``> 0``, ``nonnegative`` means ``>= 0``; ``low``/``high`` bound the
    value (inclusive unless told otherwise). A 0-d array is accepted (detached from autograd).

    Examples
    --------
    >>> check_scalar(0.5, "epsilon", positive=True)
    0.5
    >>> check_scalar(-1, "epsilon", positive=True)
    Traceback (most recent call last):
    ...
    ValueError: `epsilon` must be positive; got -1.0
    """
    if type(value) is float:  # fast path: a plain Python float skips the type dispatch
        v = value
    else:
        v = _scalar_as_float(value, name)
    if math.isnan(v) or (finite and math.isinf(v)):
        raise ValueError(f"`{name}` must be finite; got {v}")
    if positive and not v > 0:
        raise ValueError(f"`{name}` must be positive; got {v}")
    if nonnegative and not v >= 0:
        raise ValueError(f"`{name}` must be non-negative; got {v}")
    if low is not None and not (v >= low if low_inclusive else v > low):
        raise ValueError(f"`{name}` must be {'>=' if low_inclusive else '>'} {low}; got {v}")
    if high is not None and not (v <= high if high_inclusive else v < high):
        raise ValueError(f"`{name}` must be {'<=' if high_inclusive else '<'} {high}; got {v}")
    return v


def _scalar_as_float(value: Any, name: str) -> float:
    """:func:`check_scalar`'s conversion of anything but a plain float (TypeError names it)."""
    if isinstance(value, (bool, str, bytes)):
        raise TypeError(f"`{name}` must be a real number; got {value!r}")
    if aa.is_array(value):
        if math.prod(value.shape) != 1:
            raise TypeError(f"`{name}` must be a real number; got an array of shape "
                            f"{tuple(value.shape)}")
        if aa.is_array(value) and _is_complex_dtype(value.dtype):
            raise TypeError(f"`{name}` must be real; got dtype {value.dtype}")
        value = host_float(value)
    if isinstance(value, complex):
        raise TypeError(f"`{name}` must be a real number; got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        raise TypeError(f"`{name}` must be a real number; got {value!r}") from None


def check_choice(value: Any, name: str, choices: Sequence[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``; else ``ValueError`` listing them."""
    try:
        ok = value in choices
    except TypeError:
        ok = False
    if not ok or isinstance(value, bool) and not any(c is value for c in choices):
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"`{name}` must be one of {listed}; got {value!r}")
    return value


def check_shape(shape: Any, name: str, *, ndim: int | Sequence[int] | None = None,
                minimum: int = 1) -> tuple[int, ...]:
    """Return a shape as a tuple of ints, each ``>= minimum``; ``2.5`` is an error, not 2.

    Examples
    --------
    >>> check_shape((4, 8), "shape")
    (4, 8)
    >>> check_shape((1, 2.5), "shape")
    Traceback (most recent call last):
    ...
    TypeError: `shape` must contain integers; got 2.5 at position 1
    """
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"`{name}` must be a tuple of integers; got {shape!r}")
    out = []
    for i, s in enumerate(shape):
        if isinstance(s, bool) or not isinstance(s, _INTEGER_TYPES):
            raise TypeError(f"`{name}` must contain integers; got {s!r} at position {i}")
        if s < minimum:
            raise ValueError(f"`{name}` must contain integers >= {minimum}; got {tuple(shape)}")
        out.append(int(s))
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if len(out) not in allowed:
            raise ValueError(f"`{name}` must have {' or '.join(map(str, allowed))} entries; "
                             f"got {tuple(out)}")
    return tuple(out)


# --------------------------------------------------------------------------------------------
# arrays
# --------------------------------------------------------------------------------------------

def _is_complex_dtype(dtype: Any) -> bool:
    kind = getattr(dtype, "kind", None)  # NumPy and CuPy dtypes: no string formatting
    if isinstance(kind, str):
        return kind == "c"
    flag = getattr(dtype, "is_complex", None)  # torch dtypes
    if isinstance(flag, bool):
        return flag
    return "complex" in str(dtype)


def host_float(a: Any) -> float:
    """A one-element array (any namespace, autograd or not) as a Python float: one sync."""
    if aa.is_torch_array(a):
        a = a.detach()
    return float(a.reshape(()) if hasattr(a, "reshape") and a.ndim else a)


def host_float64(value: Any, name: str, *, expected: str) -> np.ndarray:
    """An array or sequence of numbers as a float64 NumPy array on the host (a copy of a
    device array); ``TypeError`` naming ``name`` and ``expected`` for anything else.

    For small host-side tables (schedules, time grids), not for data.
    """
    if aa.is_array(value):
        value = aa.to_numpy(value)
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be {expected}; got {type(value).__name__}") from None


def as_array(value: Any, name: str) -> Any:
    """An array argument: arrays pass through, lists/tuples become NumPy arrays.

    Raises ``TypeError`` naming ``name`` for anything else (including ragged or non-numeric
    lists), never ``AttributeError``.
    """
    if type(value) is _NDARRAY and value.dtype.isnative:  # fast path: the common case
        return value
    if isinstance(value, np.generic):  # a NumPy scalar where an array is expected
        value = np.asarray(value)
    if value is None or aa.is_array(value):
        if isinstance(value, np.ndarray) and not value.dtype.isnative:
            return value.astype(value.dtype.newbyteorder("="))  # kernels take native order
        return value
    if isinstance(value, (list, tuple)):
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError):
            raise TypeError(f"`{name}` must be an array; got a {type(value).__name__} that is "
                            "not a rectangular array of numbers") from None
        if arr.dtype == object or arr.dtype.kind in "USV":
            raise TypeError(f"`{name}` must be an array of numbers; got a "
                            f"{type(value).__name__} of {arr.dtype} values")
        return arr
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise TypeError(f"`{name}` must be an array; got the scalar {value!r}")
    raise TypeError(f"`{name}` must be an array (NumPy, CuPy, torch or a list); got "
                    f"{type(value).__name__}")


def common_namespace(**named: Any):
    """Read the array arguments; return ``(xp, arrays)`` with arrays in the given order.

    ``None`` stays ``None``; lists become NumPy arrays. Arrays of two libraries raise
    ``TypeError`` naming each argument's library; arrays on two devices raise ``ValueError``
    naming each device.

    Examples
    --------
    >>> import numpy as np
    >>> xp, (x, y) = common_namespace(x=[[0.0, 1.0]], y=np.ones((3, 2)))
    >>> x.shape, y.shape
    ((1, 2), (3, 2))
    """
    values = list(named.values())
    if aa.plain_numpy(values) and all(v is None or v.dtype.isnative for v in values):
        return aa.numpy_namespace(), values  # fast path: what the general path returns
    arrays = {name: as_array(value, name) for name, value in named.items()}
    present = {name: a for name, a in arrays.items() if a is not None}
    xp = aa.array_namespace(**present)
    aa.check_same_device(**present)
    return xp, list(arrays.values())


def require_finite(xp: Any, arr: Any, name: str) -> None:
    """``ValueError`` naming ``name`` and the count if any element is NaN or infinite."""
    if not aa.all_finite(xp, arr):
        bad = ~xp.isfinite(arr)
        count = int(xp.sum(xp.astype(bad, xp.int64)))
        raise ValueError(f"`{name}` contains {count} non-finite values (NaN or inf); pass "
                         "check_finite=False to skip this check")


def _as_float(xp: Any, x: Any, name: str):
    if _is_complex_dtype(x.dtype):
        raise TypeError(f"`{name}` must be real; got dtype {x.dtype}")
    return aa.as_float_array(xp, x, name)


def promote_float(xp: Any, *arrays: Any):
    """Cast arrays to one compute dtype; return ``(arrays, out_dtype)``.

    The output dtype is the promoted floating dtype of the inputs (integers become the
    namespace's default float); the compute dtype is float32 for half output dtypes.
    ``None`` entries stay ``None``.
    """
    out_dtype = aa.result_dtype(xp, *arrays)
    work = aa.compute_dtype(xp, out_dtype)
    cast = [None if a is None else (a if a.dtype == work else xp.astype(a, work))
            for a in arrays]
    return cast, out_dtype


def as_points(xp: Any, x: Any, name: str, *, min_points: int = 1,
              check_finite: bool = True):
    """A point cloud: ``(N, d)``, or ``(N,)`` read as ``(N, 1)``; returns ``(x, out_dtype)``.

    ``x`` is returned in its compute dtype (float32 for half inputs).
    """
    if type(x) is _NDARRAY and aa.is_fast_float(x.dtype) and xp is aa.numpy_namespace():
        # fast path (NumPy float64/float32): the checks below, minus the dtype handling
        if x.ndim == 1:
            x = x.reshape((x.shape[0], 1))
        if x.ndim == 2 and x.shape[0] >= min_points and x.shape[1] > 0:
            if check_finite:
                require_finite(xp, x, name)
            return x, x.dtype
    x = as_array(x, name)
    if x is None:
        raise TypeError(f"`{name}` must be an array; got None")
    if x.ndim == 1:
        x = xp.reshape(x, (x.shape[0], 1))
    if x.ndim != 2:
        raise ValueError(f"`{name}` must have shape (N, d) (points x dimensions) or (N,); got "
                         f"shape {tuple(x.shape)}")
    if x.shape[0] < min_points:
        what = "at least one point" if min_points == 1 else f"at least {min_points} points"
        raise ValueError(f"`{name}` must contain {what}; got shape {tuple(x.shape)}")
    if x.shape[1] == 0:
        raise ValueError(f"`{name}` must have at least one coordinate; got shape "
                         f"{tuple(x.shape)}")
    x, out_dtype = _as_float(xp, x, name)
    if check_finite:
        require_finite(xp, x, name)
    return x, out_dtype


def as_point_pair(xp: Any, x: Any, y: Any, names: tuple[str, str] = ("x", "y"), *,
                  min_points: int = 1, check_finite: bool = True):
    """Two clouds of the same dimension in one compute dtype: ``(x, y, out_dtype)``."""
    nx, ny = names
    x, x_dt = as_points(xp, x, nx, min_points=min_points, check_finite=check_finite)
    y, y_dt = as_points(xp, y, ny, min_points=min_points, check_finite=check_finite)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"`{nx}` and `{ny}` must have the same dimension (last axis); got "
                         f"`{nx}` of shape {tuple(x.shape)} and `{ny}` of shape "
                         f"{tuple(y.shape)}")
    if x_dt is y_dt and aa.is_fast_float(x_dt) and xp is aa.numpy_namespace():
        return x, y, x_dt  # fast path: one NumPy float dtype, nothing to promote
    out_dtype = xp.result_type(x_dt, y_dt)
    work = aa.compute_dtype(xp, out_dtype)
    x = x if x.dtype == work else xp.astype(x, work)
    y = y if y.dtype == work else xp.astype(y, work)
    return x, y, out_dtype


def _per_point(xp: Any, w: Any, size: int, name: str, like: Any, what: str = ""):
    """``w`` as a real float array of shape ``(size,)`` in ``like``'s namespace and device.

    ``what`` is added to the shape error (e.g. ``" (one per point)"``).
    """
    w = as_array(w, name)
    aa.array_namespace(**{name: w, "x": like})
    aa.check_same_device(**{name: w, "x": like})
    if tuple(w.shape) != (size,):
        raise ValueError(f"`{name}` must have shape ({size},){what}; got shape "
                         f"{tuple(w.shape)}")
    return _as_float(xp, w, name)[0]


def as_vector(xp: Any, value: Any, size: int, name: str, like: Any, *,
              positive: bool = False, check_finite: bool = True):
    """An optional per-point vector ``(size,)`` in ``like``'s namespace, device and dtype."""
    if value is None:
        return None
    value = _per_point(xp, value, size, name, like)
    if value.dtype != like.dtype:
        value = xp.astype(value, like.dtype)
    if check_finite:
        require_finite(xp, value, name)
    if positive and not bool(xp.all(value > 0)):
        raise ValueError(f"`{name}` must be positive; got minimum {host_float(xp.min(value))}")
    return value


def as_rhs(xp: Any, v: Any, rows: int, name: str = "v", *, rows_of: str = "y",
           check_finite: bool = True):
    """Right-hand sides ``(rows,)`` or ``(rows, p)``: returns ``(v (rows, p), was_1d, out_dtype)``.

    ``v`` comes back 2-D in its compute dtype (float32 for half inputs; integers become the
    default float); ``out_dtype`` is the dtype a result built from it should have. ``rows_of``
    names the argument whose length ``rows`` is (for the error message).

    Examples
    --------
    >>> import array_api_compat.numpy as xp
    >>> v, one_d, dt = as_rhs(xp, [1, 2, 3], 3)
    >>> v.shape, one_d, str(dt)
    ((3, 1), True, 'float64')
    """
    v = as_array(v, name)
    if (type(v) is _NDARRAY and aa.is_fast_float(v.dtype) and v.ndim in (1, 2)
            and v.shape[0] == rows and xp is aa.numpy_namespace()):
        # fast path (NumPy float64/float32): no dtype handling
        if check_finite:
            require_finite(xp, v, name)
        if v.ndim == 1:
            return v.reshape((rows, 1)), True, v.dtype
        return v, False, v.dtype
    if v.ndim not in (1, 2) or v.shape[0] != rows:
        raise ValueError(f"`{name}` must have shape ({rows},) or ({rows}, p) (one row per point "
                         f"of `{rows_of}`); got shape {tuple(v.shape)}")
    v, out_dtype = _as_float(xp, v, name)
    if check_finite:
        require_finite(xp, v, name)
    one_d = v.ndim == 1
    return (xp.reshape(v, (rows, 1)) if one_d else v), one_d, out_dtype


def check_exponent_range(xp: Any, scale: float, x: Any, y: Any, name: str, *,
                         what: str = "", x_name: str = "x", y_name: str = "y",
                         check_finite: bool = True) -> None:
    """``ValueError`` naming ``name`` if ``scale * |x_i - y_j|^2`` can overflow x's dtype.

    For Gaussian-kernel exponents ``-scale * |x_i - y_j|^2`` with ``x`` (N, d), ``y`` (M, d)
    in one compute dtype; ``y=None`` means the pairs within ``x``. The largest squared
    distance is bounded by ``d (max |x| + max |y|)^2`` (largest coordinate magnitudes) from
    one reduction per array (one synchronisation for both); if that bound, or the bound times
    ``scale``, exceeds the dtype's largest value, the kernels would produce ``inf - inf`` or
    an all-``-inf`` row (NaN). The same reduction is
    the finiteness check (``check_finite``): a NaN or inf coordinate makes it non-finite, and
    :func:`require_finite` then names the argument, so callers need no separate pass.
    ``scale`` must already be a positive Python float (:func:`check_fits_dtype` checks it
    alone); ``what`` says how it derives from the argument ``name`` (e.g.
    ``"1 / (2 bandwidth^2)"``).
    """
    pairs = [(x_name, x)] if y is None else [(x_name, x), (y_name, y)]
    if type(x) is _NDARRAY and aa.is_fast_float(x.dtype) and (y is None or type(y) is _NDARRAY):
        # fast path (NumPy float64/float32): the same reductions without the stack and copy
        big = _NUMPY_FINFO[x.dtype][0]
        peaks = [float(np.abs(a).max()) for _, a in pairs]
    else:
        if not xp.isdtype(x.dtype, "real floating"):
            return
        big = float(xp.finfo(x.dtype).max)
        # max |coordinate| cannot overflow (a sum of squares could, with a warning)
        peaks = [float(v) for v in aa.to_numpy(xp.stack([xp.max(xp.abs(a)) for _, a in pairs]))]
    if not all(math.isfinite(v) for v in peaks):
        if check_finite:
            for label, a in pairs:
                require_finite(xp, a, label)
        if any(math.isnan(v) for v in peaks):  # check_finite=False: NaN stays the caller's
            return
    # |x_i - y_j| <= sqrt(d) (max|x| + max|y|), in float64 on the host
    reach = math.sqrt(int(x.shape[-1])) * (2 * peaks[0] if y is None else peaks[0] + peaks[1])
    bound = reach * reach  # inf, not OverflowError, past float64
    if bound > big:
        who = f"`{x_name}` is" if y is None else f"`{x_name}` and `{y_name}` are"
        raise ValueError(f"{who} too large for {x.dtype}: squared distances up to "
                         f"{bound:.3g} overflow (max {big:.3g}); rescale the data or use "
                         "float64")
    if scale * bound > big:
        label = f" ({what})" if what else ""
        raise ValueError(f"`{name}`{label} = {scale:.6g} is too large for {x.dtype} with these "
                         f"points: the kernel exponent reaches {scale * bound:.3g} (max "
                         f"{big:.3g}); rescale the data or use float64")


def as_log_weights(xp: Any, w: Any, size: int, like: Any, name: str = "log_weights"):
    """Log-weights ``(size,)``: finite or ``-inf`` (zero weight), at least one finite."""
    if w is None:
        return None
    if (type(w) is _NDARRAY and type(like) is _NDARRAY and w.dtype is like.dtype
            and aa.is_fast_float(w.dtype) and w.shape == (size,)):
        # fast path: one reduction; the maximum is NaN if any entry is NaN, +inf if any is
        # +inf, and -inf only if every entry is -inf (the checks below, in their order)
        top = float(w.max())
        if not top < math.inf:
            raise ValueError(f"`{name}` must not contain NaN or +inf (use -inf for zero weight)")
        if top == -math.inf:
            raise ValueError(f"`{name}` must have at least one finite entry (all weights are 0)")
        return w
    w = _per_point(xp, w, size, name, like, " (one per point)")
    if w.dtype != like.dtype:
        w = xp.astype(w, like.dtype)
    if bool(xp.any(xp.isnan(w) | (w == math.inf))):
        raise ValueError(f"`{name}` must not contain NaN or +inf (use -inf for zero weight)")
    if not bool(xp.any(xp.isfinite(w))):
        raise ValueError(f"`{name}` must have at least one finite entry (all weights are 0)")
    return w


def as_marginals(xp: Any, a: Any, b: Any, n: int, m: int, like: Any,
                 names: tuple[str, str] = ("a", "b"), *, tol: float | None = None):
    """Probability vectors ``a (n,)``, ``b (m,)``, normalised, in ``like``'s dtype.

    ``None`` stays ``None`` (uniform). Raises ``ValueError`` for wrong shapes, non-finite or
    negative entries, or sums that differ from 1 by more than ``tol`` (1e-9 in float64, 1e-5
    otherwise); the message gives both sums.
    """
    dt = like.dtype
    if tol is None:
        tol = 1e-9 if dt == xp.float64 else 1e-5
    arrays = {}
    for name, w, size in ((names[0], a, n), (names[1], b, m)):
        if w is None:
            continue
        w = _per_point(xp, w, size, name, like, " (one weight per point)")
        arrays[name] = xp.astype(w, xp.float64) if hasattr(xp, "float64") else w
    if not arrays:
        return None, None
    sums = {name: (host_float(xp.sum(arrays[name])) if name in arrays else 1.0)
            for name in names}
    described = f"sum({names[0]}) = {sums[names[0]]:.10g}, sum({names[1]}) = {sums[names[1]]:.10g}"
    for name, w in arrays.items():
        if not aa.all_finite(xp, w):
            raise ValueError(f"`{name}` must be finite; got non-finite weights ({described})")
        lo = host_float(xp.min(w))
        if lo < 0:
            raise ValueError(f"`{name}` must be non-negative; got minimum {lo:.6g} ({described})")
    for name in arrays:
        if not abs(sums[name] - 1.0) <= tol:
            raise ValueError(f"`{names[0]}` and `{names[1]}` must each sum to 1 (probability "
                             f"vectors, tolerance {tol:g}); got {described}")
    out = [None, None]
    for k, name in enumerate(names):
        if name in arrays:
            out[k] = xp.astype(arrays[name] / sums[name], dt)
    return tuple(out)


def check_fits_dtype(xp: Any, value: float, dtype: Any, name: str, *, what: str = "") -> None:
    """``ValueError`` naming ``name`` if ``value`` overflows (or flushes to 0 in) ``dtype``.

    Use it for options that reach a kernel in the compute dtype (``beta`` in float32, say):
    ``what`` says which combination overflowed, e.g. ``"beta * max squared distance"``.
    """
    if aa.is_fast_float(dtype):
        big, tiny = _NUMPY_FINFO[dtype]
    else:
        if not xp.isdtype(dtype, "real floating"):
            return
        info = xp.finfo(dtype)
        big, tiny = float(info.max), float(info.smallest_normal)
    v = abs(float(value))
    if v > big or (v != 0.0 and v < tiny):
        label = f" ({what})" if what else ""
        raise ValueError(f"`{name}`{label} = {float(value):.6g} is out of range for {dtype} "
                         f"(magnitudes {tiny:.3g} to {big:.3g}); rescale the data or use float64")


def check_model_output(xp: Any, out: Any, x: Any, *, model: str = "model", step: int | None = None,
                       t: float | None = None, check_finite: bool = True) -> None:
    """Check what a user's model returned for input ``x`` (one sync when ``check_finite``).

    ``TypeError`` if it is not an array of ``x``'s namespace (naming both libraries) or is
    complex; ``ValueError`` if its shape differs from ``x``'s or it holds NaN/inf, naming the
    model, the step and t.
    """
    where = "".join([f" at step {step}" if step is not None else "",
                     f" (t = {t:.6g})" if t is not None else ""])
    if not aa.is_array(out):
        raise TypeError(f"`{model}` must return an array like its input; got "
                        f"{type(out).__name__}{where}")
    lib_out, lib_x = aa._library_name(out), aa._library_name(x)
    if lib_out != lib_x:
        raise TypeError(f"`{model}` returned a {lib_out} array for a {lib_x} input{where}; "
                        f"return the same array type as `x` (convert inside the model)")
    if _is_complex_dtype(out.dtype):
        raise TypeError(f"`{model}` returned complex values (dtype {out.dtype}){where}; it must "
                        "be real")
    if tuple(out.shape) != tuple(x.shape):
        raise ValueError(f"`{model}` returned shape {tuple(out.shape)} for input of shape "
                         f"{tuple(x.shape)}{where}")
    if check_finite and not aa.all_finite(xp, out):
        raise ValueError(f"`{model}` returned non-finite values (NaN or inf){where}")
