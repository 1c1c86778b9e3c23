"""Numba-CUDA launchers of the tiled diffusion kernel (contract: :mod:`arraygen.tiled`).

Same tiling as the CUDA C source ``arraygen/backends/cupy/tiled.cu``: for ``d <= 16`` a block
of ``_THREADS`` threads owns ``_THREADS * _ROWS`` rows (coordinates and accumulators in
registers) and walks ``y`` in tiles of ``_TJ`` points staged in shared memory, pre-scaled by
``sqrt(beta log2 e)`` so the kernel value is ``exp2(-|x' - y'|^2)``; tail points carry zero
weight. Kernels are compiled per (dtype, d, right-hand-side chunk). The columns of ``y`` are
split over ``blockIdx.y`` when that fills the last wave better (partials merged after the
launch). Larger ``d``: one row per thread, law of cosines on centred points. Softmax state
(log2 units) and per-tile two-level summation as in the C source.

CuPy arrays and torch CUDA tensors are used directly through ``__cuda_array_interface__``
(:func:`arraygen.backends.numba_cuda.device_view`), on the caller's stream
(:func:`arraygen.backends.numba_cuda.stream_of`); scratch arrays, the row norms and the merge of
column splits are computed in the caller's own library (its Array API namespace), so CuPy is
not needed. Under ``NUMBA_ENABLE_CUDASIM=1`` host (NumPy) arrays run in the simulator.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
from numba import cuda

from ... import _array_api as aa
from ..._kernels.tiled import DIRECT_MAX_D, merge_column_splits, split_count
from .. import is_simulated
from .._interop import cuda_device_context, like, to_numpy_view
from .._tuning import Tunable
from . import contiguous, device_view, jit, stream_of, tile_common
from .tile_common import tile_functions

__all__ = ["kernel_logsumexp", "kernel_matvec", "kernel_softmax_matvec"]

_THREADS = 128
_ROWS = 4
_TJ = 64
_LOG2E = 1.0 / math.log(2.0)
_LN2 = math.log(2.0)


@functools.cache
def _direct_kernels(dtype_name: str, D: int, PC: int, BW: bool):
    nbt = getattr(np, dtype_name)
    W_MV = D + PC + 1
    W_SM = D + PC + 1
    PA = max(PC, 1)
    lowest = -1e30 if dtype_name == "float32" else -1e300
    zero, one = nbt(0.0), nbt(1.0)
    SH_MV, SH_SM = _TJ * W_MV, _TJ * W_SM
    XR, ACC = (_ROWS, D), (_ROWS, PA)
    tf = tile_functions(dtype_name, D, PC, _ROWS, _TJ)
    load_row, stage, store_row, store_softmax = (tf.load_row, tf.stage, tf.store_row,
                                                 tf.store_softmax)
    matvec_tile = tf.matvec_tile_bw if BW else tf.matvec_tile
    softmax_tile = tf.softmax_tile

    @jit(fastmath=True)
    def matvec(x, y, u, a, b, n, m, chunk, p, c0, s, part_out):
        """Partial sums over the columns of split blockIdx.y into part_out[split]."""
        sy = cuda.shared.array(SH_MV, nbt)
        xr = cuda.local.array(XR, nbt)
        acc = cuda.local.array(ACC, nbt)
        part = cuda.local.array(ACC, nbt)
        na = cuda.local.array(_ROWS, nbt)
        tid = cuda.threadIdx.x
        base = cuda.blockIdx.x * (_THREADS * _ROWS) + tid
        jb = cuda.blockIdx.y * chunk
        je = min(jb + chunk, m)
        for r in range(_ROWS):
            i = base + r * _THREADS
            ok = i < n
            load_row(x, i, ok, s, xr, r)
            for c in range(PC):
                acc[r, c] = zero
            na[r] = (-a[i] if ok else -one) if BW else -one
        for j0 in range(jb, je, _TJ):
            cuda.syncthreads()
            for t in range(tid, _TJ, _THREADS):
                j = j0 + t
                ok = j < je
                stage(sy, t, y, u, j, ok, p, c0, s)
                sy[t * W_MV + D + PC] = (b[j] if ok else one) if BW else one
            cuda.syncthreads()
            matvec_tile(sy, xr, na, part, acc)
        split = cuda.blockIdx.y
        for r in range(_ROWS):
            i = base + r * _THREADS
            if i < n:
                store_row(part_out, split, i, p, c0, acc, r)

    @jit(fastmath=True)
    def softmax(x, y, v, w2, n, m, chunk, p, c0, s, acc_out, mx_out, sm_out):
        """Online softmax over the columns of split blockIdx.y (log2 units, unnormalised)."""
        sy = cuda.shared.array(SH_SM, nbt)
        xr = cuda.local.array(XR, nbt)
        acc = cuda.local.array(ACC, nbt)
        pacc = cuda.local.array(ACC, nbt)
        mx = cuda.local.array(_ROWS, nbt)
        sm = cuda.local.array(_ROWS, nbt)
        ps = cuda.local.array(_ROWS, nbt)
        tid = cuda.threadIdx.x
        base = cuda.blockIdx.x * (_THREADS * _ROWS) + tid
        jb = cuda.blockIdx.y * chunk
        je = min(jb + chunk, m)
        for r in range(_ROWS):
            i = base + r * _THREADS
            load_row(x, i, i < n, s, xr, r)
            for c in range(PA):
                acc[r, c] = zero
            mx[r] = lowest
            sm[r] = zero
        for j0 in range(jb, je, _TJ):
            cuda.syncthreads()
            for t in range(tid, _TJ, _THREADS):
                j = j0 + t
                ok = j < je
                stage(sy, t, y, v, j, ok, p, c0, s)
                sy[t * W_SM + D + PC] = w2[j] if ok else -math.inf
            cuda.syncthreads()
            softmax_tile(sy, xr, mx, sm, ps, pacc, acc)
        split = cuda.blockIdx.y
        for r in range(_ROWS):
            i = base + r * _THREADS
            if i < n:
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
    def matvec(x, y, yy, u, a, b, n, m, p, c0, beta2, out):
        i = cuda.grid(1)
        if i >= n:
            return
        d = x.shape[1]
        acc = cuda.local.array(PA, nbt)
        xx = row_dot(x, i, x, i, d)
        nb = -beta2 * a[i] if BW else -beta2
        for c in range(PC):
            acc[c] = zero
        for j in range(m):
            dot = row_dot(x, i, y, j, d)
            q = max(xx + yy[j] - 2 * dot, zero)
            e = math.exp2(nb * b[j] * q) if BW else math.exp2(nb * q)
            for c in range(PC):
                if c0 + c < p:
                    acc[c] += e * u[j, c0 + c]
        for c in range(PC):
            if c0 + c < p:
                out[i, c0 + c] = acc[c]

    @jit(fastmath=True)
    def softmax(x, y, yy, v, w2, n, m, p, c0, beta2, out, lse):
        i = cuda.grid(1)
        if i >= n:
            return
        d = x.shape[1]
        acc = cuda.local.array(PA, nbt)
        xx = row_dot(x, i, x, i, d)
        for c in range(PA):
            acc[c] = zero
        mx = nbt(lowest)
        sm = zero
        for j in range(m):
            dot = row_dot(x, i, y, j, d)
            z = w2[j] - beta2 * max(xx + yy[j] - 2 * dot, zero)
            mx, sm = term(z, mx, sm, acc, v, j, p, c0)
        if c0 == 0:
            lse[i] = (mx + math.log2(sm)) * _LN2
        for c in range(PC):
            if c0 + c < p:
                out[i, c0 + c] = acc[c] / sm

    return matvec, softmax


@dataclasses.dataclass(frozen=True)
class Tuning:
    """Launch tuning of the Numba-CUDA tiled kernels (``TUNING.override(...)``)."""

    splits: int | None = None  #: force this many column splits (tests); None: from occupancy


TUNING = Tunable("numba_cuda.tiled", Tuning())


def _splits(kern, row_blocks: int, m: int) -> int:
    """Column splits for a fuller last wave (see arraygen._kernels.tiled.split_count)."""
    forced = TUNING.current().splits
    if forced is None and is_simulated("numba_cuda"):
        return 1
    if forced is not None:
        return split_count(row_blocks, m, tile=_TJ, sms=1, regs_per_thread=64,
                           threads=_THREADS, forced=forced)
    try:
        regs = max(kern.get_regs_per_thread().values()) if kern.overloads else 64
    except (AttributeError, KeyError, TypeError, ValueError):  # assume a register-heavy kernel
        regs = 64
    return split_count(row_blocks, m, tile=_TJ, sms=cuda.get_current_device().MULTIPROCESSOR_COUNT,
                       regs_per_thread=regs, threads=_THREADS)


class _Arrays:
    """The caller's arrays as the kernels take them: C-contiguous, in the compute dtype, in
    the caller's library (NumPy under the simulator), with that library's namespace ``xp``
    for scratch arrays and the stream the kernels run on."""

    def __init__(self, x):
        host = is_simulated("numba_cuda") and not hasattr(x, "__cuda_array_interface__")
        self.host = host
        xn = np.ascontiguousarray(to_numpy_view(x)) if host else contiguous(x)
        self.xp = aa.array_namespace(xn)
        self.dtype = xn.dtype
        self.type = np.dtype(str(xn.dtype).replace("torch.", "")).type
        self.stream = stream_of(xn)
        self.x = xn

    def native(self, a):
        """``a`` C-contiguous in the compute dtype (zero-copy when it already is)."""
        a = np.ascontiguousarray(to_numpy_view(a)) if self.host else contiguous(a)
        return a if a.dtype == self.dtype else contiguous(self.xp.astype(a, self.dtype))

    def empty(self, shape):
        return self.xp.empty(shape, dtype=self.dtype, device=aa.device(self.x))

    def full(self, shape, value):
        return self.xp.full(shape, value, dtype=self.dtype, device=aa.device(self.x))

    def row_norms(self, y):
        return contiguous(self.xp.sum(y * y, axis=1))


def _chunks(p: int):
    pc = 1 if p == 1 else 4
    return pc, list(range(0, p, pc))


def _dv(*arrays):
    return tuple(device_view(a) for a in arrays)


def kernel_matvec(x, y, u, a, b, *, beta):
    """``out[i, k] = sum_j exp(-beta a_i b_j |x_i - y_j|^2) u[j, k]`` (see arraygen.tiled)."""
    with cuda_device_context(x):
        arr = _Arrays(x)
        xp, dtype, stream = arr.xp, arr.type, arr.stream
        xc, yc, uc = arr.x, arr.native(y), arr.native(u)
        n, d = xc.shape
        m = yc.shape[0]
        p = uc.shape[1]
        bw = a is not None or b is not None
        ac = arr.native(a) if a is not None else arr.full(n, 1.0)
        bc = arr.native(b) if b is not None else arr.full(m, 1.0)
        pc, starts = _chunks(p)
        name = np.dtype(dtype).name
        if d <= DIRECT_MAX_D:
            kern, _ = _direct_kernels(name, d, pc, bw)
            row_blocks = -(-n // (_THREADS * _ROWS))
            splits = _splits(kern, row_blocks, m)
            chunk = -(-m // splits)
            part = arr.empty((splits, n, p))
            s = dtype(math.sqrt(beta * _LOG2E))
            for c0 in starts:
                kern[(row_blocks, splits), _THREADS, stream](*_dv(xc, yc, uc, ac, bc), n, m,
                                                             chunk, p, c0, s, device_view(part))
            out = part[0] if splits == 1 else xp.sum(part, axis=0)
        else:
            out = arr.empty((n, p))
            kern, _ = _cos_kernels(name, pc, bw)
            yy = arr.row_norms(yc)
            grid = -(-n // _THREADS)
            for c0 in starts:
                kern[grid, _THREADS, stream](*_dv(xc, yc, yy, uc, ac, bc), n, m, p, c0,
                                             dtype(beta * _LOG2E), device_view(out))
        return like(out, x)


def _softmax(x, y, v, w, beta):
    arr = _Arrays(x)
    xp, dtype, stream = arr.xp, arr.type, arr.stream
    xc, yc = arr.x, arr.native(y)
    n, d = xc.shape
    m = yc.shape[0]
    w2 = arr.full(m, 0.0) if w is None else contiguous(arr.native(w) * dtype(_LOG2E))
    if v is None:
        vc, p, pc, starts = arr.full((m, 1), 0.0), 0, 0, [0]
    else:
        vc = arr.native(v)
        p = vc.shape[1]
        pc, starts = _chunks(p)
    name = np.dtype(dtype).name
    if d <= DIRECT_MAX_D:
        _, kern = _direct_kernels(name, d, pc, False)
        row_blocks = -(-n // (_THREADS * _ROWS))
        splits = _splits(kern, row_blocks, m)
        chunk = -(-m // splits)
        acc = arr.empty((splits, n, max(p, 1)))
        mx = arr.empty((splits, n))
        sm = arr.empty((splits, n))
        s = dtype(math.sqrt(beta * _LOG2E))
        for c0 in starts:
            kern[(row_blocks, splits), _THREADS, stream](*_dv(xc, yc, vc, w2), n, m, chunk, p, c0,
                                                         s, *_dv(acc, mx, sm))
        out, lse = merge_column_splits(xp, acc[:, :, :p], mx, sm)
        return contiguous(out), lse
    out = arr.empty((n, max(p, 1)))
    lse = arr.empty(n)
    _, kern = _cos_kernels(name, pc, False)
    yy = arr.row_norms(yc)
    grid = -(-n // _THREADS)
    for c0 in starts:
        kern[grid, _THREADS, stream](*_dv(xc, yc, yy, vc, w2), n, m, p, c0, dtype(beta * _LOG2E),
                                     *_dv(out, lse))
    return contiguous(out[:, :p]), lse


def kernel_logsumexp(x, y, w, *, beta):
    """``lse[i] = log sum_j exp(w_j - beta |x_i - y_j|^2)`` (see arraygen.tiled)."""
    with cuda_device_context(x):
        _, lse = _softmax(x, y, None, w, beta)
        return like(lse, x)


def kernel_softmax_matvec(x, y, v, w, *, beta):
    """Online-softmax average of ``v`` and the row log-sum-exp (see arraygen.tiled)."""
    with cuda_device_context(x):
        out, lse = _softmax(x, y, v, w, beta)
        return like(out, x), like(lse, x)
