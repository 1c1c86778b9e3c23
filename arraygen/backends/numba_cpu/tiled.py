"""Numba-CPU launchers of the tiled diffusion kernel (contract: :mod:`arraygen.tiled`).

Rows are split over threads (``prange``, ``_ROWS_PER_TASK`` rows a task); each thread walks
``y`` in blocks of ``_BLOCK`` columns held structure-of-arrays (``y.T``), so the inner loop is a
unit-stride loop over columns that LLVM vectorises (8-16 lanes). For ``d <= DIRECT_MAX_D`` the
kernels are compiled for the concrete ``d`` (the coordinate loop unrolls and one fused loop
computes distance, exponential and accumulation); larger ``d`` use the law of cosines on
centred points with ``d`` loops over the block.

The exponential is ``2**t`` with ``t = -beta log2(e) d2`` evaluated by vectorisable arithmetic
instead of a libm call (which LLVM cannot vectorise): ``n = floor(t + 1/2)``,
``f = t - n`` in [-1/2, 1/2], a polynomial for ``2**f`` (degree 6 near-minimax for float32,
degree 13 Taylor for float64; both within ~1 ulp) times ``2**n`` built in the exponent bits.
``t`` is clamped at the exponent of the smallest normal minus one, whose bit pattern is 0.0,
so arguments that underflow give exactly 0. Log-weights of ``-inf`` are replaced by a finite
large negative number so every lane stays finite (the kernels use full fastmath). The online
softmax takes each block's maximum over integer keys of the floats (integer max reductions
vectorise, float ones do not here), then sums ``2**(z - max)`` in a second vector loop.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from ..._kernels.tiled import DIRECT_MAX_D
from .._interop import like, to_numpy_view
from . import thread_safe
from .bits import as_float as _as_float
from .bits import as_int as _as_int

__all__ = ["kernel_logsumexp", "kernel_matvec", "kernel_softmax_matvec"]

_BLOCK = 512
_ROWS_PER_TASK = 16
_LOG2E = 1.0 / math.log(2.0)

_P32 = (1.0, 0.6931472067028329, 0.24022650922289554, 0.05550327226669895,
        0.00961805667843204, 0.0013400428177711937, 0.00015461444724808513)
_P64 = tuple(math.log(2.0) ** k / math.factorial(k) for k in range(14))


@functools.cache
def _softmax_block(dtype, dim):
    """The online-softmax step over one block of columns ``j0 .. j0 + nb`` of one row, shared
    by the dense and block-sparse softmax kernels (``.blocksparse``): logits into ``z`` (log2
    units), the block maximum over integer keys, a rescale of ``ssum`` and ``acc`` on a new
    maximum, then ``ssum += sum 2**(z - mx)`` and ``acc[c] += sum 2**(z - mx) v[c]``; returns
    the new ``(mx, ssum)``. Inlined at the Numba IR level: the kernels compile as if the step
    were written out in them."""
    ikey = np.int32 if dtype == np.float32 else np.int64
    lowest_key = int(np.iinfo(ikey).min) + 1
    direct = dim > 0

    @njit(fastmath=True, inline="always")
    def block(xi, yt, yy, w2, vt, nbeta, has_w, j0, nb, z, acc, p, mx, ssum):
        if direct:  # written out so the loop vectorises (no branch inside)
            kmax = ikey(lowest_key)
            if has_w:
                for j in range(nb):
                    d2 = dtype(0.0)
                    for k in range(dim):
                        diff = xi[k] - yt[k, j0 + j]
                        d2 += diff * diff
                    t = w2[j0 + j] + nbeta * d2
                    z[j] = t
                    kmax = max(kmax, _key(t))
            else:
                for j in range(nb):
                    d2 = dtype(0.0)
                    for k in range(dim):
                        diff = xi[k] - yt[k, j0 + j]
                        d2 += diff * diff
                    t = nbeta * d2
                    z[j] = t
                    kmax = max(kmax, _key(t))
            bmax = _unkey(kmax, dtype(0.0))
        else:
            bmax = _logits(xi, yt, yy, j0, nb, nbeta, yy, False, w2, has_w, z, dim, dtype(0.0),
                           dtype(2.0), ikey(lowest_key))
        if bmax > mx:
            r = _exp2(mx - bmax)  # 0 on the first block (mx = lowest)
            ssum *= r
            for c in range(p):
                acc[c] *= r
            mx = bmax
        s = dtype(0.0)
        if p == 0:
            for j in range(nb):
                s += _exp2(z[j] - mx)
        elif p == 1:
            s1 = dtype(0.0)
            for j in range(nb):
                e = _exp2(z[j] - mx)
                s += e
                s1 += e * vt[0, j0 + j]
            acc[0] += s1
        else:
            for j in range(nb):
                e = _exp2(z[j] - mx)
                z[j] = e
                s += e
            for c in range(p):
                s1 = dtype(0.0)
                for j in range(nb):
                    s1 += z[j] * vt[c, j0 + j]
                acc[c] += s1
        ssum += s
        return mx, ssum

    return block


# Floating-point max reductions do not vectorise here; integer ones do. The key
# bits ^ ((bits >> 31) & 0x7fffffff) orders finite floats like signed integers (and is its own
# inverse), so block maxima are taken over keys.
@njit(fastmath=True, inline="always")
def _key_f32(t):
    bits = _as_int(t)
    return bits ^ ((bits >> np.int32(31)) & np.int32(0x7FFFFFFF))


@njit(fastmath=True, inline="always")
def _unkey_f32(key):
    return _as_float(np.int32(key ^ ((key >> np.int32(31)) & np.int32(0x7FFFFFFF))))


@njit(fastmath=True, inline="always")
def _key_f64(t):
    bits = _as_int(t)
    return bits ^ ((bits >> np.int64(63)) & np.int64(0x7FFFFFFFFFFFFFFF))


@njit(fastmath=True, inline="always")
def _unkey_f64(key):
    return _as_float(np.int64(key ^ ((key >> np.int64(63)) & np.int64(0x7FFFFFFFFFFFFFFF))))


@njit(fastmath=True, inline="always")
def _exp2_f32(t):
    t = max(t, np.float32(-127.0))
    n = np.floor(t + np.float32(0.5))
    f = t - n
    p = np.float32(_P32[6])
    p = p * f + np.float32(_P32[5])
    p = p * f + np.float32(_P32[4])
    p = p * f + np.float32(_P32[3])
    p = p * f + np.float32(_P32[2])
    p = p * f + np.float32(_P32[1])
    p = p * f + np.float32(_P32[0])
    return p * _as_float(np.int32((np.int32(n) + np.int32(127)) << np.int32(23)))


@njit(fastmath=True, inline="always")
def _exp2_f64(t):
    t = max(t, -1023.0)
    n = np.floor(t + 0.5)
    f = t - n
    p = _P64[13]
    p = p * f + _P64[12]
    p = p * f + _P64[11]
    p = p * f + _P64[10]
    p = p * f + _P64[9]
    p = p * f + _P64[8]
    p = p * f + _P64[7]
    p = p * f + _P64[6]
    p = p * f + _P64[5]
    p = p * f + _P64[4]
    p = p * f + _P64[3]
    p = p * f + _P64[2]
    p = p * f + _P64[1]
    p = p * f + _P64[0]
    return p * _as_float((np.int64(n) + np.int64(1023)) << np.int64(52))


def _exp2(t):
    """``2**t`` by :func:`_exp2_f32` or :func:`_exp2_f64` after ``t``'s type (Numba only)."""
    raise TypeError("_exp2 is only callable from Numba-compiled code")


def _key(t):
    """The integer max-key of a float32/float64 (Numba only)."""
    raise TypeError("_key is only callable from Numba-compiled code")


def _unkey(k, like):
    """The float of a max-key, in the float type of the scalar ``like`` (Numba only; the key's
    integer type does not tell: Numba widens int32 arithmetic to int64)."""
    raise TypeError("_unkey is only callable from Numba-compiled code")


# Generic over the dtype through overloads (not closures over dispatchers), so the kernels made
# by _make close over plain values only and Numba's on-disk cache finds them again in a new
# process (the cache key hashes the closure's values; a dispatcher hashes differently in each).
@overload(_exp2, inline="always")
def _exp2_overload(t):
    if t == types.float32:
        return lambda t: _exp2_f32(t)
    return lambda t: _exp2_f64(t)


@overload(_key, inline="always")
def _key_overload(t):
    if t == types.float32:
        return lambda t: _key_f32(t)
    return lambda t: _key_f64(t)


@overload(_unkey, inline="always")
def _unkey_overload(k, like):
    if like == types.float32:
        return lambda k, like: _unkey_f32(k)
    return lambda k, like: _unkey_f64(k)


@njit(fastmath=True, inline="always")
def _logits(xi, yt, yy, j0, nb, scale, b, has_b, w2, has_w, z, dim, zero, two, kmin):
    """z[j] = w2_j + scale b_j |x_i - y_{j0+j}|^2 for one block; returns max_j z[j].

    ``dim > 0``: direct distances in ``dim`` coordinates; ``dim = 0``: the law of cosines.
    ``zero``, ``two`` and ``kmin`` (the least key) are constants of the kernel's dtype.
    """
    if dim == 0:
        xx = zero
        for k in range(xi.shape[0]):
            xx += xi[k] * xi[k]
        for j in range(nb):
            z[j] = 0.0
        for k in range(xi.shape[0]):
            xk = xi[k]
            for j in range(nb):
                z[j] += xk * yt[k, j0 + j]
        for j in range(nb):
            z[j] = max(xx + yy[j0 + j] - two * z[j], zero)
    kmax = kmin
    for j in range(nb):
        if dim > 0:
            d2 = zero
            for k in range(dim):
                diff = xi[k] - yt[k, j0 + j]
                d2 += diff * diff
        else:
            d2 = z[j]
        t = scale * d2
        if has_b:
            t *= b[j0 + j]
        if has_w:
            t += w2[j0 + j]
        z[j] = t
        kmax = max(kmax, _key(t))
    return _unkey(kmax, zero)


def _make(dtype, dim):
    """Compile the kernels for one dtype and, for direct distances, one dimension ``dim``.

    ``dim = 0`` selects the law-of-cosines kernels (any d, centred points).
    """
    ikey = np.int32 if dtype == np.float32 else np.int64
    lowest = float(-np.finfo(dtype).max)
    lowest_key = int(np.iinfo(ikey).min) + 1
    direct = dim > 0
    softmax_block = _softmax_block(dtype, dim)

    @njit(parallel=True, fastmath=True, cache=True)
    def matvec(x, yt, yy, ut, a, b, nbeta, has_a, has_b, out):
        n = x.shape[0]
        m = yt.shape[1]
        p = ut.shape[0]
        ntask = (n + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK
        for task in prange(ntask):
            z = np.empty(_BLOCK, dtype)
            acc = np.empty(p, dtype)
            for i in range(task * _ROWS_PER_TASK, min(n, (task + 1) * _ROWS_PER_TASK)):
                xi = x[i]
                scale = nbeta * a[i] if has_a else nbeta
                for c in range(p):
                    acc[c] = 0.0
                if direct and p == 1 and not has_b:
                    # fused: distance, exponential and accumulation in one vector loop
                    s = dtype(0.0)
                    for j in range(m):
                        d2 = dtype(0.0)
                        for k in range(dim):
                            diff = xi[k] - yt[k, j]
                            d2 += diff * diff
                        s += _exp2(scale * d2) * ut[0, j]
                    acc[0] = s
                else:
                    for jb in range((m + _BLOCK - 1) // _BLOCK):
                        j0 = jb * _BLOCK
                        nb = min(_BLOCK, m - j0)
                        _logits(xi, yt, yy, j0, nb, scale, b, has_b, yy, False, z, dim, dtype(0.0),
                                dtype(2.0), ikey(lowest_key))
                        for j in range(nb):
                            z[j] = _exp2(z[j])
                        for c in range(p):
                            s = dtype(0.0)
                            for j in range(nb):
                                s += z[j] * ut[c, j0 + j]
                            acc[c] += s
                for c in range(p):
                    out[i, c] = acc[c]

    @njit(parallel=True, fastmath=True, cache=True)
    def softmax(x, yt, yy, w2, vt, nbeta, has_w, out, lse):
        """Online softmax in log2 units: z = w2_j - beta log2(e) d2 with w2 = w log2(e)."""
        n = x.shape[0]
        m = yt.shape[1]
        p = vt.shape[0]
        ntask = (n + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK
        for task in prange(ntask):
            z = np.empty(_BLOCK, dtype)
            acc = np.empty(max(p, 1), dtype)
            for i in range(task * _ROWS_PER_TASK, min(n, (task + 1) * _ROWS_PER_TASK)):
                xi = x[i]
                mx = dtype(lowest)
                ssum = dtype(0.0)
                for c in range(p):
                    acc[c] = 0.0
                for jb in range((m + _BLOCK - 1) // _BLOCK):
                    j0 = jb * _BLOCK
                    nb = min(_BLOCK, m - j0)
                    mx, ssum = softmax_block(xi, yt, yy, w2, vt, nbeta, has_w, j0, nb, z, acc, p,
                                             mx, ssum)
                lse[i] = (mx + np.log2(ssum)) / dtype(_LOG2E)
                for c in range(p):
                    out[i, c] = acc[c] / ssum

    return matvec, softmax


_KERNELS: dict = {}


def _kernels(dtype, d: int):
    dim = d if d <= DIRECT_MAX_D else 0
    key = (np.dtype(dtype).name, dim)
    if key not in _KERNELS:
        _KERNELS[key] = _make(np.dtype(dtype).type, dim)
    return _KERNELS[key]


def _host(a, dtype):
    return np.ascontiguousarray(to_numpy_view(a), dtype=dtype)


def _prepare(x, y):
    xh = np.ascontiguousarray(to_numpy_view(x))
    dtype = xh.dtype.type
    yh = _host(y, dtype)
    yt = np.ascontiguousarray(yh.T)
    yy = np.einsum("ij,ij->i", yh, yh).astype(dtype)
    return xh, yt, yy, dtype


@thread_safe
def kernel_matvec(x, y, u, a, b, *, beta):
    """``out[i, k] = sum_j exp(-beta a_i b_j |x_i - y_j|^2) u[j, k]`` (see arraygen.tiled)."""
    xh, yt, yy, dtype = _prepare(x, y)
    ut = np.ascontiguousarray(_host(u, dtype).T)
    ones = np.ones(1, dtype)
    ah = ones if a is None else _host(a, dtype)
    bh = ones if b is None else _host(b, dtype)
    out = np.empty((xh.shape[0], ut.shape[0]), dtype)
    matvec, _ = _kernels(dtype, xh.shape[1])
    matvec(xh, yt, yy, ut, ah, bh, dtype(-beta * _LOG2E), a is not None, b is not None, out)
    return like(out, x)


def _softmax(x, y, v, w, beta):
    xh, yt, yy, dtype = _prepare(x, y)
    n = xh.shape[0]
    vt = (np.empty((0, yt.shape[1]), dtype) if v is None
          else np.ascontiguousarray(_host(v, dtype).T))
    if w is None:
        w2 = np.zeros(1, dtype)
    else:
        floor = float(np.finfo(dtype).max) / 1e8  # finite stand-in for -inf (zero weight)
        w2 = np.maximum(_host(w, np.float64) * _LOG2E, -floor).astype(dtype)
    out = np.empty((n, vt.shape[0]), dtype)
    lse = np.empty(n, dtype)
    _, softmax = _kernels(dtype, xh.shape[1])
    softmax(xh, yt, yy, w2, vt, dtype(-beta * _LOG2E), w is not None, out, lse)
    return out, lse


@thread_safe
def kernel_logsumexp(x, y, w, *, beta):
    """``lse[i] = log sum_j exp(w_j - beta |x_i - y_j|^2)`` (see arraygen.tiled)."""
    _, lse = _softmax(x, y, None, w, beta)
    return like(lse, x)


@thread_safe
def kernel_softmax_matvec(x, y, v, w, *, beta):
    """Online-softmax average of ``v`` and the row log-sum-exp (see arraygen.tiled)."""
    out, lse = _softmax(x, y, v, w, beta)
    return like(out, x), like(lse, x)
