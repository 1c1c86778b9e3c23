"""Numba-CUDA launchers of the block-sparse tiled kernels (contract:
:mod:`arraygen._kernels.blocksparse`).

Same kernels as the CUDA C source ``arraygen/backends/cupy/blocksparse.cu`` (see its header):
block ``(A * tiles + row tile, split)`` owns ``threads * rows`` rows of row cluster ``A`` and
one run of its pair list, and walks the run's "virtual columns" (pair index times ``block_y``
plus the offset in the cluster) in tiles of ``_TJ`` points staged in shared memory, pre-scaled
by ``sqrt(beta log2 e)``; columns past a partial last cluster carry zero weight. Partial
results of the splits are merged in the caller's own library (its Array API namespace), so
CuPy is not needed. ``d > 16``: one row per thread, law of cosines on centred points. Under
``NUMBA_ENABLE_CUDASIM=1`` host (NumPy) arrays run in the simulator.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import cuda

from ..._kernels.blocksparse_gpu import LaunchTuning, pair_splits, row_geometry
from ..._kernels.tiled import DIRECT_MAX_D, merge_column_splits, resident_blocks
from .. import is_simulated
from .._interop import cuda_device_context, like, to_numpy_view
from .._tuning import Tunable
from . import contiguous, device_view, jit, tile_common
from .tile_common import tile_functions
from .tiled import _Arrays, _chunks

__all__ = ["kernel_logsumexp_blocks", "kernel_matvec_blocks", "kernel_softmax_matvec_blocks"]

_TJ = 64
_COS_THREADS = 128
_LOG2E = 1.0 / math.log(2.0)


@jit(device=True, inline="always")
def pair_run(offsets, A):
    """The pair run ``[ps, pe)`` of this block's split ``blockIdx.y`` of row cluster ``A``: the
    pairs ``offsets[A] .. offsets[A + 1]`` cut into ``gridDim.y`` runs of equal length."""
    p0, p1 = offsets[A], offsets[A + 1]
    per = (p1 - p0 + cuda.gridDim.y - 1) // cuda.gridDim.y
    ps = min(p0 + cuda.blockIdx.y * per, p1)
    return ps, min(ps + per, p1)


Tuning = LaunchTuning  #: launch tuning (``TUNING.override(...)``)


TUNING = Tunable("numba_cuda.blocksparse", Tuning())


@functools.cache
def _direct_kernels(dtype_name: str, D: int, PC: int, ROWS: int, BW: bool):
    nbt = getattr(np, dtype_name)
    W = D + PC + 1
    PA = max(PC, 1)
    lowest = -1e30 if dtype_name == "float32" else -1e300
    zero, one = nbt(0.0), nbt(1.0)
    SH = _TJ * W
    XR, ACC = (ROWS, D), (ROWS, PA)
    tf = tile_functions(dtype_name, D, PC, ROWS, _TJ)
    load_row, stage, store_row, store_softmax = (tf.load_row, tf.stage, tf.store_row,
                                                 tf.store_softmax)
    matvec_tile = tf.matvec_tile_bw if BW else tf.matvec_tile
    softmax_tile = tf.softmax_tile

    @jit(fastmath=True)
    def matvec(x, y, u, a, b, offsets, cols, n, m, bx, by, tpc, p, c0, s, part_out):
        """Partial sums of split blockIdx.y over its run of column clusters."""
        sy = cuda.shared.array(SH, nbt)
        xr = cuda.local.array(XR, nbt)
        acc = cuda.local.array(ACC, nbt)
        part = cuda.local.array(ACC, nbt)
        na = cuda.local.array(ROWS, nbt)
        tid = cuda.threadIdx.x
        nt = cuda.blockDim.x
        A = cuda.blockIdx.x // tpc
        local0 = (cuda.blockIdx.x - A * tpc) * nt * ROWS + tid
        row0 = A * bx
        ps, pe = pair_run(offsets, A)
        vlen = (pe - ps) * by
        for r in range(ROWS):
            li = local0 + r * nt
            i = row0 + li
            ok = li < bx and i < n
            load_row(x, i, ok, s, xr, r)
            for c in range(PC):
                acc[r, c] = zero
            na[r] = (-a[i] if ok else -one) if BW else -one
        for v0 in range(0, vlen, _TJ):
            cuda.syncthreads()
            for t in range(tid, _TJ, nt):
                vv = v0 + t
                j = -1
                if vv < vlen:
                    kk = vv // by
                    j = cols[ps + kk] * by + (vv - kk * by)
                ok = 0 <= j < m
                stage(sy, t, y, u, j, ok, p, c0, s)
                sy[t * W + D + PC] = (b[j] if ok else one) if BW else one
            cuda.syncthreads()
            matvec_tile(sy, xr, na, part, acc)
        split = cuda.blockIdx.y
        for r in range(ROWS):
            li = local0 + r * nt
            i = row0 + li
            if li < bx and i < n:
                store_row(part_out, split, i, p, c0, acc, r)

    @jit(fastmath=True)
    def softmax(x, y, v, w2, offsets, cols, n, m, bx, by, tpc, p, c0, s, acc_out, mx_out,
                sm_out):
        """Online softmax of split blockIdx.y over its run (log2 units, unnormalised)."""
        sy = cuda.shared.array(SH, nbt)
        xr = cuda.local.array(XR, nbt)
        acc = cuda.local.array(ACC, nbt)
        pacc = cuda.local.array(ACC, nbt)
        mx = cuda.local.array(ROWS, nbt)
        sm = cuda.local.array(ROWS, nbt)
        psum = cuda.local.array(ROWS, nbt)
        tid = cuda.threadIdx.x
        nt = cuda.blockDim.x
        A = cuda.blockIdx.x // tpc
        local0 = (cuda.blockIdx.x - A * tpc) * nt * ROWS + tid
        row0 = A * bx
        ps, pe = pair_run(offsets, A)
        vlen = (pe - ps) * by
        for r in range(ROWS):
            li = local0 + r * nt
            i = row0 + li
            ok = li < bx and i < n
            load_row(x, i, ok, s, xr, r)
            for c in range(PA):
                acc[r, c] = zero
            mx[r] = lowest
            sm[r] = zero
        for v0 in range(0, vlen, _TJ):
            cuda.syncthreads()
            for t in range(tid, _TJ, nt):
                vv = v0 + t
                j = -1
                if vv < vlen:
                    kk = vv // by
                    j = cols[ps + kk] * by + (vv - kk * by)
                ok = 0 <= j < m
                stage(sy, t, y, v, j, ok, p, c0, s)
                sy[t * W + D + PC] = w2[j] if ok else -math.inf
            cuda.syncthreads()
            softmax_tile(sy, xr, mx, sm, psum, pacc, acc)
        split = cuda.blockIdx.y
        for r in range(ROWS):
            li = local0 + r * nt
            i = row0 + li
            if li < bx and i < n:
                store_softmax(acc_out, mx_out, sm_out, split, i, p, c0, mx, sm, acc, r)

    return matvec, softmax


@functools.cache
def _cos_kernels(dtype_name: str, PC: int, BW: bool):
    nbt = getattr(np, dtype_name)
    PA = max(PC, 1)
    lowest = -1e30 if dtype_name == "float32" else -1e300
    zero = nbt(0.0)
    row_dot = tile_common.row_dot(dtype_name)
    term = tile_common.online_term(dtype_name, PC)

    @jit(fastmath=True)
    def matvec(x, y, yy, u, a, b, offsets, cols, n, m, bx, by, tpc, p, c0, beta2, part_out):
        A = cuda.blockIdx.x // tpc
        li = (cuda.blockIdx.x - A * tpc) * cuda.blockDim.x + cuda.threadIdx.x
        i = A * bx + li
        if li >= bx or i >= n:
            return
        d = x.shape[1]
        ps, pe = pair_run(offsets, A)
        acc = cuda.local.array(PA, nbt)
        xx = row_dot(x, i, x, i, d)
        nb = -beta2 * a[i] if BW else -beta2
        for c in range(PC):
            acc[c] = zero
        for t in range(ps, pe):
            jb = cols[t] * by
            for j in range(jb, min(jb + by, m)):
                dot = row_dot(x, i, y, j, d)
                q = max(xx + yy[j] - 2 * dot, zero)
                e = math.exp2(nb * b[j] * q) if BW else math.exp2(nb * q)
                for c in range(PC):
                    if c0 + c < p:
                        acc[c] += e * u[j, c0 + c]
        split = cuda.blockIdx.y
        for c in range(PC):
            if c0 + c < p:
                part_out[split, i, c0 + c] = acc[c]

    @jit(fastmath=True)
    def softmax(x, y, yy, v, w2, offsets, cols, n, m, bx, by, tpc, p, c0, beta2, acc_out,
                mx_out, sm_out):
        A = cuda.blockIdx.x // tpc
        li = (cuda.blockIdx.x - A * tpc) * cuda.blockDim.x + cuda.threadIdx.x
        i = A * bx + li
        if li >= bx or i >= n:
            return
        d = x.shape[1]
        ps, pe = pair_run(offsets, A)
        acc = cuda.local.array(PA, nbt)
        xx = row_dot(x, i, x, i, d)
        for c in range(PA):
            acc[c] = zero
        mx = nbt(lowest)
        sm = zero
        for t in range(ps, pe):
            jb = cols[t] * by
            for j in range(jb, min(jb + by, m)):
                dot = row_dot(x, i, y, j, d)
                z = w2[j] - beta2 * max(xx + yy[j] - 2 * dot, zero)
                mx, sm = term(z, mx, sm, acc, v, j, p, c0)
        split = cuda.blockIdx.y
        if c0 == 0:
            mx_out[split, i] = mx
            sm_out[split, i] = sm
        for c in range(PC):
            if c0 + c < p:
                acc_out[split, i, c0 + c] = acc[c]

    return matvec, softmax


def _regs(kern) -> int:
    try:
        return max(kern.get_regs_per_thread().values()) if kern.overloads else 64
    except (AttributeError, KeyError, TypeError, ValueError):  # assume a register-heavy kernel
        return 64


class _Launch:
    """Arrays, pair list and launch geometry of one call (see _kernels.blocksparse_gpu)."""

    def __init__(self, x, y, offsets, cols, block_x, block_y):
        self.arr = arr = _Arrays(x)
        self.x, self.y = arr.x, arr.native(y)
        self.offsets, self.cols = self._index(offsets), self._index(cols)
        self.n, self.d = self.x.shape
        self.m = self.y.shape[0]
        self.bx, self.by = int(block_x), int(block_y)
        self.kx = int(offsets.shape[0]) - 1
        self.direct = self.d <= DIRECT_MAX_D
        self.tuning = TUNING.current()
        if self.direct:
            self.threads, self.rows, self.tpc = row_geometry(
                self.bx, threads=self.tuning.threads, rows=self.tuning.rows)
        else:
            self.threads, self.rows, self.tpc = _COS_THREADS, 1, -(-self.bx // _COS_THREADS)
        if is_simulated("numba_cuda"):  # every simulated thread is a Python thread
            self.threads = min(self.threads, 32)
            if self.direct:
                self.tpc = -(-self.bx // (self.threads * self.rows))
            else:
                self.tpc = -(-self.bx // self.threads)
        self.row_blocks = self.kx * self.tpc

    def _index(self, a):
        a = np.ascontiguousarray(to_numpy_view(a)) if self.arr.host else contiguous(a)
        if str(a.dtype).replace("torch.", "") != "int32":
            a = contiguous(self.arr.xp.astype(a, self.arr.xp.int32))
        return a

    def splits(self, kern) -> int:
        forced = self.tuning.splits
        if forced is None and is_simulated("numba_cuda"):
            return 1
        if forced is None:
            per_wave = resident_blocks(cuda.get_current_device().MULTIPROCESSOR_COUNT,
                                       _regs(kern), self.threads)
        else:
            per_wave = 1
        return pair_splits(self.row_blocks, int(self.cols.shape[0]), self.kx, per_wave,
                           forced=forced)

    def pairs(self):
        return (device_view(self.offsets), device_view(self.cols), self.n, self.m, self.bx,
                self.by, self.tpc)


def _dv(*arrays):
    return tuple(device_view(a) for a in arrays)


def kernel_matvec_blocks(x, y, u, a, b, offsets, cols, *, beta, block_x, block_y):
    """``out[i, k] = sum_{j in kept clusters} exp(-beta a_i b_j |x_i - y_j|^2) u[j, k]``."""
    with cuda_device_context(x):
        ln = _Launch(x, y, offsets, cols, block_x, block_y)
        arr = ln.arr
        dtype = arr.type
        uc = arr.native(u)
        p = uc.shape[1]
        bw = a is not None or b is not None
        ac = arr.native(a) if a is not None else arr.full(ln.n, 1.0)
        bc = arr.native(b) if b is not None else arr.full(ln.m, 1.0)
        pc, starts = _chunks(p)
        name = np.dtype(dtype).name
        if ln.direct:
            kern, _ = _direct_kernels(name, ln.d, pc, ln.rows, bw)
            args = (dtype(math.sqrt(beta * _LOG2E)),)
            pre = _dv(ln.x, ln.y, uc, ac, bc)
        else:
            kern, _ = _cos_kernels(name, pc, bw)
            args = (dtype(beta * _LOG2E),)
            pre = _dv(ln.x, ln.y, arr.row_norms(ln.y), uc, ac, bc)
        splits = ln.splits(kern)
        part = arr.empty((splits, ln.n, p))
        for c0 in starts:
            kern[(ln.row_blocks, splits), ln.threads, arr.stream](
                *pre, *ln.pairs(), p, c0, *args, device_view(part))
        out = part[0] if splits == 1 else arr.xp.sum(part, axis=0)
        return like(out, x)


def _softmax(x, y, v, w, offsets, cols, beta, block_x, block_y):
    ln = _Launch(x, y, offsets, cols, block_x, block_y)
    arr = ln.arr
    dtype = arr.type
    m = ln.m
    w2 = arr.full(m, 0.0) if w is None else contiguous(arr.native(w) * dtype(_LOG2E))
    if v is None:
        vc, p, pc, starts = arr.full((m, 1), 0.0), 0, 0, [0]
    else:
        vc = arr.native(v)
        p = vc.shape[1]
        pc, starts = _chunks(p)
    name = np.dtype(dtype).name
    if ln.direct:
        _, kern = _direct_kernels(name, ln.d, pc, ln.rows, False)
        args = (dtype(math.sqrt(beta * _LOG2E)),)
        pre = _dv(ln.x, ln.y, vc, w2)
    else:
        _, kern = _cos_kernels(name, pc, False)
        args = (dtype(beta * _LOG2E),)
        pre = _dv(ln.x, ln.y, arr.row_norms(ln.y), vc, w2)
    splits = ln.splits(kern)
    acc = arr.empty((splits, ln.n, max(p, 1)))
    mx = arr.empty((splits, ln.n))
    sm = arr.empty((splits, ln.n))
    for c0 in starts:
        kern[(ln.row_blocks, splits), ln.threads, arr.stream](
            *pre, *ln.pairs(), p, c0, *args, *_dv(acc, mx, sm))
    out, lse = merge_column_splits(arr.xp, acc[:, :, :p], mx, sm)
    return contiguous(out), lse


def kernel_logsumexp_blocks(x, y, w, offsets, cols, *, beta, block_x, block_y):
    """``lse[i] = log sum_{j in kept clusters} exp(w_j - beta |x_i - y_j|^2)``."""
    with cuda_device_context(x):
        _, lse = _softmax(x, y, None, w, offsets, cols, beta, block_x, block_y)
        return like(lse, x)


def kernel_softmax_matvec_blocks(x, y, v, w, offsets, cols, *, beta, block_x, block_y):
    """Online-softmax average of ``v`` over the kept clusters and the row log-sum-exp."""
    with cuda_device_context(x):
        out, lse = _softmax(x, y, v, w, offsets, cols, beta, block_x, block_y)
        return like(out, x), like(lse, x)
