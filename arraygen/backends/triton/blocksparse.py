"""Triton launchers of the block-sparse tiled kernels (contract:
:mod:`arraygen._kernels.blocksparse`).

Program ``(A * tiles + row tile, split)`` owns ``BLOCK_M`` rows of row cluster ``A`` and one run
of its pair list (:mod:`arraygen._kernels.blocksparse_gpu`), and walks the run's "virtual
columns" (pair index times ``block_y`` plus the offset in the cluster) ``BLOCK_N`` at a time:
the column ids are gathered from ``cols`` and the tile of squared distances comes from the
dense kernels' :func:`arraygen.backends.triton.tiled._sq_tile` (direct differences for
``d <= 16``, law of cosines on the matrix units above), pre-scaled so the kernel value is
``exp2(-|x' - y'|^2)``. Columns past a partial last cluster carry zero weight. Programs write
partial results per split (matvec sums; softmax running max in log2 units, sum and weighted
sum), merged here in torch.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import triton
import triton.language as tl

from ... import _array_api as aa
from ..._kernels.blocksparse_gpu import pair_splits
from ..._kernels.tiled import merge_column_splits
from .. import is_simulated
from .._interop import cuda_device_context, like, to_torch
from .._tuning import Tunable
from .tiled import _BLOCK_K, _LOWEST, _common, _dot_prec, _online_tile, _rhs_blocks, _sq_tile

__all__ = ["kernel_logsumexp_blocks", "kernel_matvec_blocks", "kernel_softmax_matvec_blocks"]

_LOG2E = 1.0 / math.log(2.0)
_NUM_WARPS = 4


@dataclasses.dataclass(frozen=True)
class Tuning:
    """Launch tuning of the Triton block-sparse kernels (``TUNING.override(...)``)."""

    splits: int | None = None  #: force this many splits of every pair list; None: occupancy
    block_m: int | None = None  #: rows per program (a power of two); None: from block_x


TUNING = Tunable("triton.blocksparse", Tuning())


@triton.jit
def _run(offsets_ptr, cluster):
    """The pair run [ps, pe) of this program's split of row cluster ``cluster``."""
    p0 = tl.load(offsets_ptr + cluster)
    p1 = tl.load(offsets_ptr + cluster + 1)
    nsplit = tl.num_programs(1)
    per = (p1 - p0 + nsplit - 1) // nsplit
    ps = tl.minimum(p0 + tl.program_id(1) * per, p1)
    pe = tl.minimum(ps + per, p1)
    return ps, pe


@triton.jit
def _cluster_rows(offsets_ptr, n, bx, by, tpc, BLOCK_M: tl.constexpr):
    """This program's rows (int64) of its row cluster, their mask, and the start pair ``ps``
    and virtual-column count ``vlen`` of its split's pair run."""
    pid = tl.program_id(0)
    cluster = pid // tpc
    local = (pid - cluster * tpc) * BLOCK_M + tl.arange(0, BLOCK_M)
    rows = cluster.to(tl.int64) * bx + local
    rmask = (local < bx) & (rows < n)
    ps, pe = _run(offsets_ptr, cluster)
    return rows, rmask, ps, (pe - ps) * by


@triton.jit
def _columns(cols_ptr, ps, v0, vlen, by, m, BLOCK_N: tl.constexpr):
    """Columns (int64) of virtual columns v0 .. v0 + BLOCK_N of the run at pair ``ps``."""
    vv = v0 + tl.arange(0, BLOCK_N)
    vmask = vv < vlen
    k = vv // by
    cl = tl.load(cols_ptr + ps + k, mask=vmask, other=0)
    j = cl.to(tl.int64) * by + (vv - k * by)
    return j, vmask & (j < m)


@triton.jit
def _matvec_kernel(x_ptr, y_ptr, yy_ptr, u_ptr, a_ptr, b_ptr, offsets_ptr, cols_ptr, out_ptr,
                   n, m, d, p, c0, bx, by, tpc,
                   D: tl.constexpr, PB: tl.constexpr, HAS_BW: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                   DOT_PREC: tl.constexpr):
    rows, rmask, ps, vlen = _cluster_rows(offsets_ptr, n, bx, by, tpc, BLOCK_M)
    dt = out_ptr.dtype.element_ty
    if HAS_BW:
        na = -tl.load(a_ptr + rows, mask=rmask, other=1.0)
    if PB == 1:
        acc2 = tl.zeros((BLOCK_N, BLOCK_M), dtype=dt)
    else:
        cs = tl.arange(0, PB)
        cmask_p = (c0 + cs) < p
        acc = tl.zeros((BLOCK_M, PB), dtype=dt)
    for v0 in range(0, vlen, BLOCK_N):
        cols, cmask = _columns(cols_ptr, ps, v0, vlen, by, m, BLOCK_N)
        q = _sq_tile(x_ptr, y_ptr, yy_ptr, rows, cols, rmask, cmask, n, m, d, D, BLOCK_M,
                     BLOCK_N, BLOCK_K, DOT_PREC)
        if HAS_BW:
            bj = tl.load(b_ptr + cols, mask=cmask, other=1.0)
            e = tl.exp2((bj[:, None] * q) * na[None, :])
        else:
            e = tl.exp2(-q)
        if PB == 1:
            uj = tl.load(u_ptr + cols * p + c0, mask=cmask, other=0.0)
            acc2 += e * uj[:, None]
        else:
            ut = tl.load(u_ptr + cols[:, None] * p + (c0 + cs)[None, :],
                         mask=cmask[:, None] & cmask_p[None, :], other=0.0)
            acc += tl.dot(tl.trans(e), ut, input_precision="ieee")
    base = tl.program_id(1).to(tl.int64) * n * p
    if PB == 1:
        tl.store(out_ptr + base + rows * p + c0, tl.sum(acc2, axis=0), mask=rmask)
    else:
        tl.store(out_ptr + base + rows[:, None] * p + (c0 + cs)[None, :], acc,
                 mask=rmask[:, None] & cmask_p[None, :])


@triton.jit
def _softmax_kernel(x_ptr, y_ptr, yy_ptr, v_ptr, w_ptr, offsets_ptr, cols_ptr, acc_ptr, mx_ptr,
                    sm_ptr, n, m, d, p, c0, bx, by, tpc,
                    D: tl.constexpr, PB: tl.constexpr, BLOCK_M: tl.constexpr,
                    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, DOT_PREC: tl.constexpr,
                    LOWEST: tl.constexpr):
    """Online softmax of one split (log2 units, w pre-multiplied by log2 e), unnormalised;
    PB = 0: log-sum-exp state only."""
    rows, rmask, ps, vlen = _cluster_rows(offsets_ptr, n, bx, by, tpc, BLOCK_M)
    dt = mx_ptr.dtype.element_ty
    mx = tl.full((BLOCK_M,), LOWEST, dtype=dt)
    sm = tl.zeros((BLOCK_M,), dtype=dt)
    if PB == 1:
        acc = tl.zeros((BLOCK_M,), dtype=dt)
    elif PB > 1:
        cs = tl.arange(0, PB)
        cmask_p = (c0 + cs) < p
        acc = tl.zeros((BLOCK_M, PB), dtype=dt)
    for v0 in range(0, vlen, BLOCK_N):
        cols, cmask = _columns(cols_ptr, ps, v0, vlen, by, m, BLOCK_N)
        q = _sq_tile(x_ptr, y_ptr, yy_ptr, rows, cols, rmask, cmask, n, m, d, D, BLOCK_M,
                     BLOCK_N, BLOCK_K, DOT_PREC)
        wj = tl.load(w_ptr + cols, mask=cmask, other=float("-inf"))
        z = wj[:, None] - q
        new, alpha, e, sm = _online_tile(z, mx, sm)
        if PB == 1:
            vj = tl.load(v_ptr + cols * p + c0, mask=cmask, other=0.0)
            acc = acc * alpha + tl.sum(e * vj[:, None], axis=0)
        elif PB > 1:
            vt = tl.load(v_ptr + cols[:, None] * p + (c0 + cs)[None, :],
                         mask=cmask[:, None] & cmask_p[None, :], other=0.0)
            acc = acc * alpha[:, None] + tl.dot(tl.trans(e), vt, input_precision="ieee")
        mx = new
    split = tl.program_id(1).to(tl.int64)
    if c0 == 0:
        tl.store(mx_ptr + split * n + rows, mx, mask=rmask)
        tl.store(sm_ptr + split * n + rows, sm, mask=rmask)
    if PB == 1:
        tl.store(acc_ptr + (split * n + rows) * p + c0, acc, mask=rmask)
    elif PB > 1:
        tl.store(acc_ptr + (split * n + rows)[:, None] * p + (c0 + cs)[None, :], acc,
                 mask=rmask[:, None] & cmask_p[None, :])


def _block_m(block_x: int, dd: int) -> int:
    """Rows per program: the cluster rounded up to a power of two (16 .. 512; at most 128 for
    the tl.dot path)."""
    forced = TUNING.current().block_m
    if forced is not None:
        return int(forced)
    return max(16, min(512 if dd > 0 else 128, triton.next_power_of_2(int(block_x))))


def _block_n(dd: int, pb: int) -> int:
    return 32 if dd > 0 and pb <= 1 else 16


class _Launch:
    """Pre-scaled points, pair list and launch geometry of one call."""

    def __init__(self, x, y, offsets, cols, beta, block_x, block_y):
        xt = to_torch(x).contiguous()
        yt = to_torch(y).to(xt.dtype).contiguous()
        self.xt = xt
        self.xs, self.ys, self.yy, self.n, self.m, self.d, self.dd = _common(xt, yt, beta)
        self.offsets = to_torch(offsets).to(torch.int32).contiguous()
        self.cols = to_torch(cols).to(torch.int32).contiguous()
        self.kx = int(self.offsets.shape[0]) - 1
        self.bx, self.by = int(block_x), int(block_y)
        self.block_m = _block_m(self.bx, self.dd)
        self.tpc = -(-self.bx // self.block_m)
        row_blocks = self.kx * self.tpc
        forced = TUNING.current().splits
        if forced is None and (is_simulated("triton") or not xt.is_cuda):
            forced = 1
        per_wave = (torch.cuda.get_device_properties(xt.device).multi_processor_count * 4
                    if forced is None else 1)
        self.splits = pair_splits(row_blocks, int(self.cols.shape[0]), self.kx, per_wave,
                                  forced=forced)
        self.grid = (row_blocks, self.splits)

    def tail(self):
        return (self.n, self.m, self.d)

    def geometry(self):
        return (self.bx, self.by, self.tpc)


def kernel_matvec_blocks(x, y, u, a, b, offsets, cols, *, beta, block_x, block_y):
    """``out[i, k] = sum_{j in kept clusters} exp(-beta a_i b_j |x_i - y_j|^2) u[j, k]``."""
    with cuda_device_context(x):
        ln = _Launch(x, y, offsets, cols, beta, block_x, block_y)
        xt = ln.xt
        ut = to_torch(u).to(xt.dtype).contiguous()
        p = ut.shape[1]
        bw = a is not None or b is not None
        at = to_torch(a).to(xt.dtype).contiguous() if a is not None else xt.new_ones(ln.n)
        bt = to_torch(b).to(xt.dtype).contiguous() if b is not None else xt.new_ones(ln.m)
        part = xt.new_empty((ln.splits, ln.n, p))
        pb, starts = _rhs_blocks(p, xt.dtype)
        for c0 in starts:
            _matvec_kernel[ln.grid](ln.xs, ln.ys, ln.yy, ut, at, bt, ln.offsets, ln.cols, part,
                                    *ln.tail(), p, c0, *ln.geometry(), D=ln.dd, PB=pb,
                                    HAS_BW=bw, BLOCK_M=ln.block_m,
                                    BLOCK_N=_block_n(ln.dd, pb), BLOCK_K=_BLOCK_K,
                                    DOT_PREC=_dot_prec(xt.dtype), num_warps=_NUM_WARPS)
        out = part[0] if ln.splits == 1 else part.sum(dim=0)
    return like(out, x)


def _softmax(x, y, v, w, offsets, cols, beta, block_x, block_y):
    ln = _Launch(x, y, offsets, cols, beta, block_x, block_y)
    xt = ln.xt
    w2 = (xt.new_zeros(ln.m) if w is None
          else to_torch(w).to(xt.dtype).contiguous() * _LOG2E)
    if v is None:
        vt, p, pb, starts = xt.new_zeros(1), 0, 0, [0]
    else:
        vt = to_torch(v).to(xt.dtype).contiguous()
        p = vt.shape[1]
        pb, starts = _rhs_blocks(p, xt.dtype)
    acc = xt.new_empty((ln.splits, ln.n, max(p, 1)))
    mx = xt.new_empty((ln.splits, ln.n))
    sm = xt.new_empty((ln.splits, ln.n))
    for c0 in starts:
        _softmax_kernel[ln.grid](ln.xs, ln.ys, ln.yy, vt, w2, ln.offsets, ln.cols, acc, mx, sm,
                                 *ln.tail(), p, c0, *ln.geometry(), D=ln.dd, PB=pb,
                                 BLOCK_M=ln.block_m, BLOCK_N=_block_n(ln.dd, pb),
                                 BLOCK_K=_BLOCK_K, DOT_PREC=_dot_prec(xt.dtype),
                                 LOWEST=_LOWEST, num_warps=_NUM_WARPS)
    return merge_column_splits(aa.array_namespace(xt), acc[:, :, :p], mx, sm)


def kernel_logsumexp_blocks(x, y, w, offsets, cols, *, beta, block_x, block_y):
    """``lse[i] = log sum_{j in kept clusters} exp(w_j - beta |x_i - y_j|^2)``."""
    with cuda_device_context(x):
        _, lse = _softmax(x, y, None, w, offsets, cols, beta, block_x, block_y)
    return like(lse, x)


def kernel_softmax_matvec_blocks(x, y, v, w, offsets, cols, *, beta, block_x, block_y):
    """Online-softmax average of ``v`` over the kept clusters and the row log-sum-exp."""
    with cuda_device_context(x):
        out, lse = _softmax(x, y, v, w, offsets, cols, beta, block_x, block_y)
    return like(out.contiguous(), x), like(lse, x)
