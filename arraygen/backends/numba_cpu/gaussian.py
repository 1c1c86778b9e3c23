"""Numba CPU kernels of the Gaussian hot path (launcher contract: :mod:`arraygen.gaussian`).

Every pass works on a C-contiguous (outer, n, inner) view of the array: ``inner == 1`` (the
last axis) filters contiguous rows through a padded line buffer; otherwise each output line
``out[o, i, :]`` is a weighted sum of whole input lines, so the innermost loop is contiguous and
vectorised. Taps are symmetric (``w[r - k] == w[r + k]``), so each pair costs one multiply.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from ..._kernels.gaussian import MODES
from .. import _interop

_MODE_CODE = {m: i for i, m in enumerate(MODES)}


@numba.njit(inline="always", cache=True)
def _src(i, n, mode):
    """Source index of i on an axis of length n; -1 means cval (codes as MODES)."""
    if 0 <= i < n:
        return i
    if mode == 4:  # constant
        return -1
    if mode == 2:  # nearest
        return 0 if i < 0 else n - 1
    if mode == 3:  # wrap
        j = i % n
        return j + n if j < 0 else j
    if n == 1:
        return 0
    if mode == 0:  # reflect
        p = 2 * n
        j = i % p
        j = j + p if j < 0 else j
        return p - 1 - j if j >= n else j
    p = 2 * n - 2  # mirror
    j = i % p
    j = j + p if j < 0 else j
    return p - j if j >= n else j


@numba.njit(inline="always", cache=True, fastmath={"contract"})
def _filter_line(buf, w, o, n, r):
    """o[j] = sum_k w[k] buf[j + k]; slices keep indices non-negative so LLVM vectorises."""
    wc = w[r]
    c = buf[r:r + n]
    for j in range(n):
        o[j] = wc * c[j]
    for k in range(1, r + 1):
        wk = w[r + k]
        lo = buf[r - k:r - k + n]
        hi = buf[r + k:r + k + n]
        for j in range(n):
            o[j] += wk * (lo[j] + hi[j])


def _pass_last_py(x, w, mode, cval, out):
    rows, n = x.shape
    r = (w.shape[0] - 1) // 2
    chunk = 16
    for blk in prange((rows + chunk - 1) // chunk):
        buf = np.empty(n + 2 * r, dtype=x.dtype)
        for row in range(blk * chunk, min(rows, (blk + 1) * chunk)):
            xr = x[row]
            buf[r:r + n] = xr
            for i in range(r):
                s = _src(i - r, n, mode)
                buf[i] = xr[s] if s >= 0 else cval
                s = _src(n + i, n, mode)
                buf[n + r + i] = xr[s] if s >= 0 else cval
            _filter_line(buf, w, out[row], n, r)


def _pass_inner_py(x, w, mode, cval, out):
    outer, n, inner = x.shape
    r = (w.shape[0] - 1) // 2
    for t in prange(outer * n):
        o = t // n
        i = t - o * n
        dst = out[o, i]
        xc = x[o, i]
        wc = w[r]
        for j in range(inner):
            dst[j] = wc * xc[j]
        for k in range(1, r + 1):
            wk = w[r + k]
            a = _src(i - k, n, mode)
            b = _src(i + k, n, mode)
            if a >= 0 and b >= 0:
                xa = x[o, a]
                xb = x[o, b]
                for j in range(inner):
                    dst[j] += wk * (xa[j] + xb[j])
            elif a >= 0 or b >= 0:
                xs = x[o, a] if a >= 0 else x[o, b]
                for j in range(inner):
                    dst[j] += wk * (xs[j] + cval)
            else:
                for j in range(inner):
                    dst[j] += wk * (cval + cval)


_FLAGS = {"cache": True, "fastmath": {"contract"}}
_pass_last = numba.njit(parallel=True, **_FLAGS)(_pass_last_py)
_pass_inner = numba.njit(parallel=True, **_FLAGS)(_pass_inner_py)
# Small arrays run serially: a parallel launch costs more than the work below this size.
_pass_last_serial = numba.njit(**_FLAGS)(_pass_last_py)
_pass_inner_serial = numba.njit(**_FLAGS)(_pass_inner_py)
_PARALLEL_MIN_SIZE = 1 << 16


def gaussian_filter(x, weights, *, axes, mode, cval):
    """Launcher: see the contract in :mod:`arraygen.gaussian`."""
    a = np.ascontiguousarray(_interop.to_numpy_view(x))
    code = _MODE_CODE[mode]
    c = a.dtype.type(cval)
    shape = a.shape
    for axis, w in zip(axes, weights):
        w = np.array(w, dtype=a.dtype)  # a writable copy (the cached taps are read-only)
        n = shape[axis]
        outer = math.prod(shape[:axis])
        inner = math.prod(shape[axis + 1:])
        out = np.empty_like(a)
        parallel = a.size >= _PARALLEL_MIN_SIZE
        if inner == 1:
            fn = _pass_last if parallel else _pass_last_serial
            fn(a.reshape(outer, n), w, code, c, out.reshape(outer, n))
        else:
            fn = _pass_inner if parallel else _pass_inner_serial
            fn(a.reshape(outer, n, inner), w, code, c, out.reshape(outer, n, inner))
        a = out
    return _interop.like(a, x)
