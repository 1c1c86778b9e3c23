"""CuPy RawModule launchers of the block-sparse tiled kernels (contract:
:mod:`arraygen._kernels.blocksparse`).

The CUDA source is ``blocksparse.cu`` beside this file (see its header): one thread block per
row tile of a row cluster and split of its pair list, walking the kept column clusters through
shared memory like ``tiled.cu``. Launch geometry (rows per block, splits) comes from
:mod:`arraygen._kernels.blocksparse_gpu`; splits are merged here (a sum for matvec,
:func:`arraygen._kernels.tiled.merge_column_splits` for the softmax kernels). Everything runs on
the caller's stream and nothing is synchronised with the host.
"""

from __future__ import annotations

import math

import cupy as cp
import numpy as np

from ..._kernels.blocksparse_gpu import LaunchTuning, pair_splits, row_geometry
from ..._kernels.tiled import DIRECT_MAX_D, merge_column_splits, resident_blocks
from .._interop import cuda_device_context, like
from .._tuning import Tunable
from . import module, native, sm_count, stream_for

__all__ = ["kernel_logsumexp_blocks", "kernel_matvec_blocks", "kernel_softmax_matvec_blocks"]

SOURCE = "blocksparse.cu"
_COS_THREADS = 128
_LOG2E = 1.0 / math.log(2.0)


Tuning = LaunchTuning  #: launch tuning (``TUNING.override(...)``)


TUNING = Tunable("cupy.blocksparse", Tuning())


def _function(expression: str):
    return module(SOURCE, (expression,)).get_function(expression)


def _ctype(dtype) -> str:
    return "float" if dtype == cp.float32 else "double"


def _chunks(p: int):
    pc = 1 if p == 1 else 4
    return pc, list(range(0, p, pc))


def _native(a, dtype):
    c = native(a)
    return c if c.dtype == dtype else c.astype(dtype)


class _Launch:
    """Sorted points, pair list and launch geometry of one call."""

    def __init__(self, x, y, offsets, cols, block_x, block_y, direct_name):
        self.x = native(x)
        self.dtype = self.x.dtype.type
        self.y = _native(y, self.dtype)
        self.offsets = _native(offsets, cp.int32)
        self.cols = _native(cols, cp.int32)
        self.n, self.d = self.x.shape
        self.m = self.y.shape[0]
        self.bx, self.by = int(block_x), int(block_y)
        self.kx = self.offsets.shape[0] - 1
        self.direct = self.d <= DIRECT_MAX_D
        tun = TUNING.current()
        if self.direct:
            self.threads, self.rows, self.tpc = row_geometry(self.bx, threads=tun.threads,
                                                             rows=tun.rows)
        else:
            self.threads, self.rows, self.tpc = _COS_THREADS, 1, -(-self.bx // _COS_THREADS)
        self.name = direct_name(self.rows) if self.direct else None
        self.row_blocks = self.kx * self.tpc
        self.splits = self._splits(tun.splits)

    def _splits(self, forced):
        if forced is None and self.name is not None:
            regs = int(getattr(_function(self.name), "num_regs", 64) or 64)
        else:
            regs = 64
        per_wave = resident_blocks(sm_count(cp.cuda.Device().id), regs, self.threads)
        return pair_splits(self.row_blocks, int(self.cols.shape[0]), self.kx, per_wave,
                           forced=forced)

    def geometry(self):
        return (self.row_blocks, self.splits), (self.threads,)

    def pairs(self):
        return (self.offsets, self.cols, np.int64(self.n), np.int64(self.m))


def kernel_matvec_blocks(x, y, u, a, b, offsets, cols, *, beta, block_x, block_y):
    """``out[i, k] = sum_{j in kept clusters} exp(-beta a_i b_j |x_i - y_j|^2) u[j, k]``."""
    with cuda_device_context(x), stream_for(x):
        bw = a is not None or b is not None
        bw_s = "true" if bw else "false"
        p = u.shape[1]
        pc, starts = _chunks(p)
        dtype = native(x).dtype.type
        ct = _ctype(dtype)
        launch = _Launch(x, y, offsets, cols, block_x, block_y,
                         lambda rows: f"bs_matvec_direct<{ct}, {x.shape[1]}, {pc}, {rows}, "
                                      f"{bw_s}>")
        n, m = launch.n, launch.m
        uc = _native(u, dtype)
        ac = _native(a, dtype) if a is not None else cp.ones(n, dtype)
        bc = _native(b, dtype) if b is not None else cp.ones(m, dtype)
        grid, block = launch.geometry()
        part = cp.empty((launch.splits, n, p), dtype)
        if launch.direct:
            s = dtype(math.sqrt(beta * _LOG2E))
            fn = _function(launch.name)
            for c0 in starts:
                fn(grid, block, (launch.x, launch.y, uc, ac, bc, *launch.pairs(),
                                 np.int32(launch.bx), np.int32(launch.by), np.int32(launch.tpc),
                                 np.int32(p), np.int32(c0), s, part))
        else:
            yy = cp.sum(launch.y * launch.y, axis=1)
            fn = _function(f"bs_matvec_cos<{ct}, {pc}, {bw_s}>")
            for c0 in starts:
                fn(grid, block, (launch.x, launch.y, yy, uc, ac, bc, *launch.pairs(),
                                 np.int32(launch.d), np.int32(launch.bx), np.int32(launch.by),
                                 np.int32(launch.tpc), np.int32(p), np.int32(c0),
                                 dtype(beta * _LOG2E), part))
        out = part[0] if launch.splits == 1 else part.sum(axis=0)
        return like(out, x)


def _softmax(x, y, v, w, offsets, cols, beta, block_x, block_y):
    dtype = native(x).dtype.type
    ct = _ctype(dtype)
    if v is None:
        p, pc, starts = 0, 0, [0]
    else:
        p = v.shape[1]
        pc, starts = _chunks(p)
    launch = _Launch(x, y, offsets, cols, block_x, block_y,
                     lambda rows: f"bs_softmax_direct<{ct}, {x.shape[1]}, {pc}, {rows}>")
    n, m = launch.n, launch.m
    vc = cp.zeros((m, 1), dtype) if v is None else _native(v, dtype)
    w2 = cp.zeros(m, dtype) if w is None else _native(w, dtype) * dtype(_LOG2E)
    grid, block = launch.geometry()
    acc = cp.empty((launch.splits, n, max(p, 1)), dtype)
    mx = cp.empty((launch.splits, n), dtype)
    sm = cp.empty((launch.splits, n), dtype)
    if launch.direct:
        s = dtype(math.sqrt(beta * _LOG2E))
        fn = _function(launch.name)
        for c0 in starts:
            fn(grid, block, (launch.x, launch.y, vc, w2, *launch.pairs(), np.int32(launch.bx),
                             np.int32(launch.by), np.int32(launch.tpc), np.int32(p),
                             np.int32(c0), s, acc, mx, sm))
    else:
        yy = cp.sum(launch.y * launch.y, axis=1)
        fn = _function(f"bs_softmax_cos<{ct}, {pc}>")
        for c0 in starts:
            fn(grid, block, (launch.x, launch.y, yy, vc, w2, *launch.pairs(),
                             np.int32(launch.d), np.int32(launch.bx), np.int32(launch.by),
                             np.int32(launch.tpc), np.int32(p), np.int32(c0),
                             dtype(beta * _LOG2E), acc, mx, sm))
    return merge_column_splits(cp, acc[:, :, :p], mx, sm)


def kernel_logsumexp_blocks(x, y, w, offsets, cols, *, beta, block_x, block_y):
    """``lse[i] = log sum_{j in kept clusters} exp(w_j - beta |x_i - y_j|^2)``."""
    with cuda_device_context(x), stream_for(x):
        _, lse = _softmax(x, y, None, w, offsets, cols, beta, block_x, block_y)
        return like(lse, x)


def kernel_softmax_matvec_blocks(x, y, v, w, offsets, cols, *, beta, block_x, block_y):
    """Online-softmax average of ``v`` over the kept clusters and the row log-sum-exp."""
    with cuda_device_context(x), stream_for(x):
        out, lse = _softmax(x, y, v, w, offsets, cols, beta, block_x, block_y)
        return like(cp.ascontiguousarray(out), x), like(lse, x)
