"""Numba-CPU launchers of the block-sparse tiled kernels (contract:
:mod:`arraygen._kernels.blocksparse`).

Row clusters are split over threads (``prange``); a row cluster first merges its listed
y-clusters into contiguous column spans (consecutive cluster ids are adjacent columns), then each
of its rows walks those spans exactly as the dense kernels of :mod:`.tiled` walk all of ``y``:
the same vectorised ``2**t`` (:func:`.tiled._exp2`), integer-key block maxima and online
softmax, on ``_BLOCK``-column pieces of each span.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..._kernels.tiled import DIRECT_MAX_D
from .._interop import like
from . import thread_safe
from .tiled import _BLOCK, _LOG2E, _exp2, _host, _logits, _prepare, _softmax_block

__all__ = ["kernel_logsumexp_blocks", "kernel_matvec_blocks", "kernel_softmax_matvec_blocks"]

# Column offsets read from the pair list are masked with this: the result is provably >= 0, so
# LLVM drops Numba's negative-index wraparound from the inner loops, which then vectorise as in
# the dense kernels (unmasked, the block-sparse loops ran 2.5x slower per pair).
_NONNEG = np.int64((1 << 40) - 1)


@njit(inline="always")
def _spans(offsets, cols, c, block_y, m, starts, stops):
    """Merge the y-clusters of row cluster ``c`` into column spans; returns their number."""
    ns = 0
    for q in range(offsets[c], offsets[c + 1]):
        j0 = cols[q] * block_y
        j1 = min(m, j0 + block_y)
        if ns > 0 and stops[ns - 1] == j0:
            stops[ns - 1] = j1
        else:
            starts[ns] = j0
            stops[ns] = j1
            ns += 1
    return ns


def _make(dtype, dim):
    """Compile the block-sparse kernels for one dtype and (direct distances) one ``dim``;
    ``dim = 0`` selects the law of cosines (any d, centred points)."""
    ikey = np.int32 if dtype == np.float32 else np.int64
    lowest = float(-np.finfo(dtype).max)
    lowest_key = int(np.iinfo(ikey).min) + 1
    direct = dim > 0
    softmax_block = _softmax_block(dtype, dim)

    @njit(parallel=True, fastmath=True, cache=True)
    def matvec(x, yt, yy, ut, a, b, nbeta, has_a, has_b, offsets, cols, block_x, block_y, out):
        n = x.shape[0]
        m = yt.shape[1]
        p = ut.shape[0]
        kx = offsets.shape[0] - 1
        for c in prange(kx):
            width = offsets[c + 1] - offsets[c]
            starts = np.empty(width, np.int64)
            stops = np.empty(width, np.int64)
            ns = _spans(offsets, cols, c, block_y, m, starts, stops)
            z = np.empty(_BLOCK, dtype)
            acc = np.empty(p, dtype)
            for i in range(c * block_x, min(n, (c + 1) * block_x)):
                xi = x[i]
                scale = nbeta * a[i] if has_a else nbeta
                for k in range(p):
                    acc[k] = 0.0
                if direct and p == 1 and not has_b:
                    s = dtype(0.0)
                    for q in range(ns):
                        s0 = starts[q] & _NONNEG
                        for j in range(stops[q] - s0):
                            d2 = dtype(0.0)
                            for k in range(dim):
                                diff = xi[k] - yt[k, s0 + j]
                                d2 += diff * diff
                            s += _exp2(scale * d2) * ut[0, s0 + j]
                    acc[0] = s
                else:
                    for q in range(ns):
                        s0 = starts[q]
                        for jb in range((stops[q] - s0 + _BLOCK - 1) // _BLOCK):
                            j0 = (s0 + jb * _BLOCK) & _NONNEG
                            nb = min(_BLOCK, stops[q] - j0)
                            _logits(xi, yt, yy, j0, nb, scale, b, has_b, yy, False, z, dim,
                                    dtype(0.0), dtype(2.0), ikey(lowest_key))
                            for j in range(nb):
                                z[j] = _exp2(z[j])
                            for k in range(p):
                                s = dtype(0.0)
                                for j in range(nb):
                                    s += z[j] * ut[k, j0 + j]
                                acc[k] += s
                for k in range(p):
                    out[i, k] = acc[k]

    @njit(parallel=True, fastmath=True, cache=True)
    def softmax(x, yt, yy, w2, vt, nbeta, has_w, offsets, cols, block_x, block_y, out, lse):
        """Online softmax in log2 units over the kept spans (see .tiled)."""
        n = x.shape[0]
        m = yt.shape[1]
        p = vt.shape[0]
        kx = offsets.shape[0] - 1
        for c in prange(kx):
            width = offsets[c + 1] - offsets[c]
            starts = np.empty(width, np.int64)
            stops = np.empty(width, np.int64)
            ns = _spans(offsets, cols, c, block_y, m, starts, stops)
            z = np.empty(_BLOCK, dtype)
            acc = np.empty(max(p, 1), dtype)
            for i in range(c * block_x, min(n, (c + 1) * block_x)):
                xi = x[i]
                mx = dtype(lowest)
                ssum = dtype(0.0)
                for k in range(p):
                    acc[k] = 0.0
                for q in range(ns):
                    s0 = starts[q]
                    for jb in range((stops[q] - s0 + _BLOCK - 1) // _BLOCK):
                        j0 = (s0 + jb * _BLOCK) & _NONNEG
                        nb = min(_BLOCK, stops[q] - j0)
                        mx, ssum = softmax_block(xi, yt, yy, w2, vt, nbeta, has_w, j0, nb, z,
                                                 acc, p, mx, ssum)
                lse[i] = (mx + np.log2(ssum)) / dtype(_LOG2E)
                for k in range(p):
                    out[i, k] = acc[k] / ssum

    return matvec, softmax


_KERNELS: dict = {}


def _kernels(dtype, d: int):
    dim = d if d <= DIRECT_MAX_D else 0
    key = (np.dtype(dtype).name, dim)
    if key not in _KERNELS:
        _KERNELS[key] = _make(np.dtype(dtype).type, dim)
    return _KERNELS[key]


def _pairs(offsets, cols):
    return _host(offsets, np.int64), _host(cols, np.int64)


@thread_safe
def kernel_matvec_blocks(x, y, u, a, b, offsets, cols, *, beta, block_x, block_y):
    """``out[i] = sum_{j kept} exp(-beta a_i b_j |x_i - y_j|^2) u_j`` (sorted order)."""
    xh, yt, yy, dtype = _prepare(x, y)
    ut = np.ascontiguousarray(_host(u, dtype).T)
    ones = np.ones(1, dtype)
    ah = ones if a is None else _host(a, dtype)
    bh = ones if b is None else _host(b, dtype)
    off, cl = _pairs(offsets, cols)
    out = np.empty((xh.shape[0], ut.shape[0]), dtype)
    matvec, _ = _kernels(dtype, xh.shape[1])
    matvec(xh, yt, yy, ut, ah, bh, dtype(-beta * _LOG2E), a is not None, b is not None, off, cl,
           int(block_x), int(block_y), out)
    return like(out, x)


def _softmax(x, y, v, w, offsets, cols, beta, block_x, block_y):
    xh, yt, yy, dtype = _prepare(x, y)
    n = xh.shape[0]
    vt = (np.empty((0, yt.shape[1]), dtype) if v is None
          else np.ascontiguousarray(_host(v, dtype).T))
    if w is None:
        w2 = np.zeros(1, dtype)
    else:
        floor = float(np.finfo(dtype).max) / 1e8  # finite stand-in for -inf (zero weight)
        w2 = np.maximum(_host(w, np.float64) * _LOG2E, -floor).astype(dtype)
    off, cl = _pairs(offsets, cols)
    out = np.empty((n, vt.shape[0]), dtype)
    lse = np.empty(n, dtype)
    _, softmax = _kernels(dtype, xh.shape[1])
    softmax(xh, yt, yy, w2, vt, dtype(-beta * _LOG2E), w is not None, off, cl, int(block_x),
            int(block_y), out, lse)
    return out, lse


@thread_safe
def kernel_logsumexp_blocks(x, y, w, offsets, cols, *, beta, block_x, block_y):
    """``lse[i] = log sum_{j kept} exp(w_j - beta |x_i - y_j|^2)`` (sorted order)."""
    _, lse = _softmax(x, y, None, w, offsets, cols, beta, block_x, block_y)
    return like(lse, x)


@thread_safe
def kernel_softmax_matvec_blocks(x, y, v, w, offsets, cols, *, beta, block_x, block_y):
    """Online-softmax average of ``v`` over the kept columns and the row log-sum-exp."""
    out, lse = _softmax(x, y, v, w, offsets, cols, beta, block_x, block_y)
    return like(out, x), like(lse, x)
