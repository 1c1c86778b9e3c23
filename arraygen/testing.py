"""Tolerance table and ``assert_close``, shared by the tests and the benchmarks.

One table says how far an implementation computing in ``dtype`` may be from the float64 oracle:

======================  ==================================================================
kind                    rtol (eps = machine epsilon of the dtype under test)
======================  ==================================================================
``"exact"``             0 (integers, spins, raw random words, exactly representable floats)
``"elementwise"``       8 eps (a handful of correctly rounded operations per element)
``"transcendental"``    64 eps (exp, log, sqrt, sin/cos from different libms)
``"reduction"``         eps * (16 + 4 sqrt(n_terms)), atol = rtol * max|desired|
``"fast"``              float32 on tensor cores (tf32/bf16 operands): 5e-3
``"poly_exp2"``         a ``"reduction"`` whose float32 terms may use the FMA-unit polynomial
                        ``2**x`` of the tiled kernels: the reduction row plus
                        :data:`POLY_EXP2_RTOL` (float64 never uses it: the reduction row);
                        the error is relative to each term, so with signed terms scale
                        ``atol`` by the sum of their absolute values
``"truncated"``         ``"reduction"`` + 4 * bound (block-sparse kernels, issue 18: ``bound``
                        is the reported ``mass_bound``; eigenvalues of the normalised diffusion
                        operator move by at most (2 + 2 alpha) * bound, Weyl + Schur test)
======================  ==================================================================

float16/bfloat16 inputs are computed in float32 and rounded once, so their rows use
``max(table(float32), 2 eps(half))``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _array_api as aa
from . import _validation as _v

__all__ = ["EPS", "KINDS", "POLY_EXP2_RTOL", "assert_close", "to_numpy", "tol"]

EPS = {
    "float16": float(np.finfo(np.float16).eps),
    "bfloat16": 2.0**-7,
    "float32": float(np.finfo(np.float32).eps),
    "float64": float(np.finfo(np.float64).eps),
}
KINDS = ("exact", "elementwise", "transcendental", "reduction", "fast", "poly_exp2",
         "truncated")

#: Largest relative error of the float32 polynomial ``2**x`` (degree 3, the least accurate the
#: tiled kernels offer; ``tests/test_tiled_variants.py`` measures it over the reduced range).
POLY_EXP2_RTOL = 7.6e-5

to_numpy = aa.to_numpy


def _dtype_name(dtype: Any) -> str:
    text = aa.dtype_name(dtype)
    for name in sorted(EPS, key=len, reverse=True):  # "bfloat16" before "float16"
        if name in text:
            return name
    raise ValueError(f"no tolerance for dtype {dtype!r}; expected one of {sorted(EPS)}")


def _is_exact_dtype(dtype: Any) -> bool:
    """Integer and boolean dtypes (any namespace): compared exactly."""
    text = str(dtype).replace("torch.", "")
    return text == "bool" or "int" in text


def tol(dtype: Any, kind: str = "elementwise", n_terms: int = 1, *,
        bound: float = 0.0) -> tuple[float, float]:
    """``(rtol, atol)`` for comparing a result computed in ``dtype`` with a float64 oracle.

    Parameters
    ----------
    dtype
        Dtype of the result under test (any namespace's dtype object or its name).
    kind
        One of :data:`KINDS` (see the module docstring).
    n_terms
        Number of terms summed per output element (``"reduction"``, ``"poly_exp2"``,
        ``"truncated"``).
    bound
        ``kind="truncated"`` only: the ``mass_bound`` the truncated kernel reported (>= 0).

    Returns
    -------
    rtol, atol_scale
        ``atol_scale`` multiplies ``max|desired|`` to give the absolute tolerance.

    Examples
    --------
    >>> tol("float64", "elementwise")
    (1.7763568394002505e-15, 0.0)
    >>> rtol, atol_scale = tol("float32", "reduction", n_terms=100)
    >>> round(rtol / EPS["float32"])
    56
    >>> tol("int64")
    (0.0, 0.0)
    >>> rtol, _ = tol("float64", "truncated", n_terms=100, bound=1e-6)
    >>> bool(4e-6 < rtol < 4.1e-6)
    True
    """
    _v.check_choice(kind, "kind", KINDS)
    if kind == "exact" or _is_exact_dtype(dtype):
        return 0.0, 0.0
    name = _dtype_name(dtype)
    half = name in ("float16", "bfloat16")
    eps = EPS["float32"] if half else EPS[name]
    if kind == "exact":
        return 0.0, 0.0
    if kind == "elementwise":
        rtol, atol_scale = 8 * eps, 0.0
    elif kind == "transcendental":
        rtol, atol_scale = 64 * eps, 0.0
    elif kind in ("reduction", "poly_exp2", "truncated"):
        rtol = eps * (16 + 4 * math.sqrt(max(int(n_terms), 1)))
        if kind == "poly_exp2" and name != "float64":
            rtol += POLY_EXP2_RTOL
        if kind == "truncated":
            rtol += 4.0 * _v.check_scalar(bound, "bound", nonnegative=True)
        atol_scale = rtol
    else:  # fast
        rtol = 5e-3 if name in ("float32", "float16", "bfloat16") else 1e-10
        atol_scale = rtol
    if half:
        rtol = max(rtol, 2 * EPS[name])
        atol_scale = max(atol_scale, 2 * EPS[name]) if atol_scale else 0.0
    return rtol, atol_scale


def _typed(value: Any) -> bool:
    """True for arrays and NumPy scalars (they carry a namespace, device and dtype)."""
    return isinstance(value, np.generic) or aa.is_array(value)


def _library(value: Any) -> str:
    return "numpy" if isinstance(value, np.generic) else aa._library_name(value)


def _where(value: Any) -> Any:
    """Device kind of an array: ("cpu", None), ("cuda", 0)... (NumPy scalars are on the host)."""
    return ("cpu", None) if isinstance(value, np.generic) else aa.device_kind(value)


def _dtype_text(dtype: Any) -> str:
    """``"float32"`` for NumPy, torch, CuPy and array_api_strict dtypes (and NumPy types)."""
    if isinstance(dtype, np.dtype) or (isinstance(dtype, type) and issubclass(dtype, np.generic)):
        return np.dtype(dtype).name
    text = str(dtype)
    return text.rsplit(".", 1)[-1].strip("'>") if "." in text else text


def _same_dtype(a: Any, b: Any) -> bool:
    """Equal dtypes; across libraries (``check_namespace=False``) equal by name."""
    if a is None or b is None:
        return a is b
    return _dtype_text(a) == _dtype_text(b)


def _same_device(a: Any, b: Any) -> bool:
    """One library: its own device objects compare; two libraries: (kind, index) compare."""
    if _library(a) == _library(b) and not isinstance(a, np.generic) and not isinstance(
            b, np.generic):
        return aa.device(a) == aa.device(b)
    return _where(a) == _where(b)


def assert_close(actual: Any, desired: Any, *, rtol: float | None = None,
                 atol: float | None = None, kind: str = "elementwise", n_terms: int = 1,
                 dtype: Any = None, check_namespace: bool = True, check_dtype: Any = True,
                 check_device: bool = True, check_shape: bool = True, equal_nan: bool = False,
                 err_msg: str = "") -> None:
    """Assert ``|actual - desired| <= atol + rtol |desired|`` elementwise; NaN never passes.

    Like SciPy's ``xp_assert_close``, the array's namespace, device and dtype are checked
    first, against ``desired`` when it is an array or a NumPy scalar (a Python number or list
    sets no expectation): build the oracle in the namespace, device and dtype the result must
    have (``xp.asarray(ref, dtype=...)``), or relax a check explicitly.

    Parameters
    ----------
    actual
        Result under test (any namespace, any device; copied to the host for the comparison).
    desired
        Oracle (its namespace, device and dtype are the expected ones).
    rtol, atol
        Override the table; by default ``tol(dtype or actual.dtype, kind, n_terms)`` with
        ``atol = atol_scale * max|desired|``.
    kind, n_terms, dtype
        Select the row of the tolerance table (see :func:`tol`).
    check_namespace
        ``actual`` must be an array of ``desired``'s library (NumPy, torch, CuPy...).
    check_dtype
        True: ``actual.dtype`` must equal ``desired``'s dtype; a dtype: ``actual.dtype`` must
        equal it; False: no dtype check.
    check_device
        ``actual`` must be on ``desired``'s device (compared as (kind, index)) when both are
        arrays of one library; with ``check_namespace=False`` a NumPy oracle compares values
        only, wherever ``actual`` lives.
    check_shape
        Shapes must be equal (False: ``desired`` is broadcast to ``actual``'s shape).
    equal_nan
        NaN in both places passes.

    Examples
    --------
    >>> import numpy as np
    >>> assert_close(np.float64(1.0) + 1e-17, np.float64(1.0))
    >>> assert_close(np.ones(2, np.float32), np.ones(2))
    Traceback (most recent call last):
    ...
    AssertionError: dtypes do not match: actual float32, desired float64 ...
    >>> assert_close(np.ones(2, np.float32), np.ones(2), check_dtype=False)
    """
    __tracebackhide__ = True
    typed = _typed(desired)
    if check_namespace and typed:
        got = _library(actual) if _typed(actual) else type(actual).__name__
        if got != _library(desired):
            raise AssertionError(f"namespaces do not match: actual is {got}, desired is "
                                 f"{_library(desired)} (pass check_namespace=False to compare "
                                 f"values only). {err_msg}")
    same_library = _typed(actual) and typed and _library(actual) == _library(desired)
    if check_device and same_library and not _same_device(actual, desired):
        where = {k: (aa.device(v) if not isinstance(v, np.generic) else "cpu")
                 for k, v in (("actual", actual), ("desired", desired))}
        raise AssertionError(f"devices do not match: actual on {where['actual']}, desired on "
                             f"{where['desired']} (pass check_device=False to compare values "
                             f"only). {err_msg}")
    if isinstance(check_dtype, bool):
        want = getattr(desired, "dtype", None) if (check_dtype and typed) else None
    else:
        want = check_dtype
    if want is not None and not _same_dtype(getattr(actual, "dtype", None), want):
        raise AssertionError(f"dtypes do not match: actual {getattr(actual, 'dtype', None)}, "
                             f"desired {want} (pass check_dtype=False to compare values only)"
                             f". {err_msg}")
    a = np.asarray(to_numpy(actual) if _typed(actual) else actual, dtype=np.float64)
    d = np.asarray(to_numpy(desired) if _typed(desired) else desired, dtype=np.float64)
    if a.shape != d.shape:
        if check_shape:
            raise AssertionError(f"shape {a.shape} != expected {d.shape}. {err_msg}")
        d = np.broadcast_to(d, a.shape)
    tol_dtype = dtype if dtype is not None else getattr(actual, "dtype", "float64")
    table_rtol, atol_scale = tol(tol_dtype, kind, n_terms)
    rtol = table_rtol if rtol is None else rtol
    finite = np.isfinite(d)
    scale = float(np.max(np.abs(d[finite]))) if finite.any() else 0.0
    atol = atol_scale * scale if atol is None else atol
    if equal_nan:
        both_nan = np.isnan(a) & np.isnan(d)
    else:
        both_nan = np.zeros(a.shape, dtype=bool)
    with np.errstate(invalid="ignore"):
        err = np.abs(a - d)
        # an infinite oracle value must be matched exactly (rtol * inf would accept anything)
        close = np.where(np.isfinite(d), err <= atol + rtol * np.abs(d), a == d)
        bad = ~close & ~both_nan
    if bad.any():
        idx = np.argwhere(bad)[:5]
        worst = [f"at {tuple(int(i) for i in ix)}: {a[tuple(ix)]!r} vs {d[tuple(ix)]!r}"
                 for ix in idx]
        with np.errstate(invalid="ignore", divide="ignore"):
            rel = float(np.max(np.where(bad & np.isfinite(d),
                                        err / np.maximum(np.abs(d), 1e-300), 0)))
        raise AssertionError(
            f"{int(bad.sum())} of {bad.size} elements differ (rtol={rtol:.3g}, atol={atol:.3g}, "
            f"max rel err {rel:.3g}); first: {'; '.join(worst)}. {err_msg}"
        )
