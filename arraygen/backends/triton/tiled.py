"""Triton launchers of the tiled diffusion kernel (contract: :mod:`arraygen.tiled`).

One program owns ``BLOCK_M`` rows and walks ``y`` in tiles of ``BLOCK_N`` columns; the
(BLOCK_M, BLOCK_N) tile of exponents lives in registers only. Coordinates are scaled by
``sqrt(beta log2 e)`` on load so the kernel value is ``exp2(-|x' - y'|^2)`` (``tl.exp2``).

* ``d <= 16``: direct differences, the coordinate loop unrolled (``D`` is a constexpr).
* ``d > 16``: centred law of cosines, the Gram tile by ``tl.dot`` over ``BLOCK_K`` chunks
  (the matrix units). ``precision="high"`` (the only mode exposed) keeps float32 accuracy with
  3xTF32 (``input_precision="tf32x3"``); float64 uses IEEE fp64.
* Several right-hand sides: the tile of kernel values times the (BLOCK_N, PB) block of ``u``
  by ``tl.dot`` in IEEE precision (float32); float64 runs one right-hand side per launch.
* Softmax: FlashAttention-style running max per row with a finite sentinel (no inf - inf).

Torch tensors are used directly (CPU tensors under ``TRITON_INTERPRET=1``); CuPy arrays are
handed over through DLPack. Non-contiguous inputs are copied once; offsets are 64-bit.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .._interop import cuda_device_context, like, to_torch
from ..._kernels.tiled import DIRECT_MAX_D

__all__ = ["kernel_logsumexp", "kernel_matvec", "kernel_softmax_matvec"]

_LOG2E = 1.0 / math.log(2.0)
_LN2 = math.log(2.0)
# (BLOCK_N, BLOCK_M) tiles with rows on the fast axis: 4 warps x 32 lanes x 4 rows, so every
# thread owns whole columns of its rows and the reductions over columns stay in registers.
_BLOCK_M = 512
_NUM_WARPS = 4
_BLOCK_K = 32


def _block_m(dd: int) -> int:
    """Rows per program: 512 for direct distances, 128 for the tl.dot path (shared memory)."""
    return _BLOCK_M if dd > 0 else 128


def _block_n(dd: int, pb: int) -> int:
    """Columns per tile: 32 for direct distances, 16 when tl.dot needs a second operand."""
    return 32 if dd > 0 and pb <= 1 else 16
_LOWEST = -1e30


@triton.jit
def _sq_tile(x_ptr, y_ptr, yy_ptr, rows, cols, rmask, cmask, n, m, d,
             D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
             BLOCK_K: tl.constexpr, DOT_PREC: tl.constexpr):
    """Squared distances of the pre-scaled points as a (BLOCK_N, BLOCK_M) tile (cols x rows).

    Direct (D > 0): x and y are structure-of-arrays (d, N) and (d, M). Law of cosines
    (D == 0): row-major (N, d) and (M, d), with yy = |y|^2.
    """
    dt = x_ptr.dtype.element_ty
    if D > 0:
        q = tl.zeros((BLOCK_N, BLOCK_M), dtype=dt)
        for k in tl.static_range(D):
            xk = tl.load(x_ptr + k * n + rows, mask=rmask, other=0.0)
            yk = tl.load(y_ptr + k * m + cols, mask=cmask, other=0.0)
            diff = yk[:, None] - xk[None, :]
            q += diff * diff
    else:
        ks = tl.arange(0, BLOCK_K)
        xx = tl.zeros((BLOCK_M,), dtype=dt)
        g = tl.zeros((BLOCK_N, BLOCK_M), dtype=dt)
        for k0 in range(0, d, BLOCK_K):
            kmask = (k0 + ks) < d
            xt = tl.load(x_ptr + rows[:, None] * d + (k0 + ks)[None, :],
                         mask=rmask[:, None] & kmask[None, :], other=0.0)
            yt = tl.load(y_ptr + cols[:, None] * d + (k0 + ks)[None, :],
                         mask=cmask[:, None] & kmask[None, :], other=0.0)
            xx += tl.sum(xt * xt, axis=1)
            if DOT_PREC == "ieee64":
                g += tl.dot(yt, tl.trans(xt), input_precision="ieee", out_dtype=tl.float64)
            else:
                g += tl.dot(yt, tl.trans(xt), input_precision=DOT_PREC)
        yy = tl.load(yy_ptr + cols, mask=cmask, other=0.0)
        q = tl.maximum(yy[:, None] + xx[None, :] - 2.0 * g, 0.0)
    return q


@triton.jit
def _matvec_kernel(x_ptr, y_ptr, yy_ptr, u_ptr, a_ptr, b_ptr, out_ptr, n, m, d, p, c0,
                   D: tl.constexpr, PB: tl.constexpr, HAS_BW: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                   DOT_PREC: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < n
    dt = out_ptr.dtype.element_ty
    if HAS_BW:
        na = -tl.load(a_ptr + rows, mask=rmask, other=1.0)
    if PB == 1:
        acc2 = tl.zeros((BLOCK_N, BLOCK_M), dtype=dt)
    else:
        cs = tl.arange(0, PB)
        cmask_p = (c0 + cs) < p
        acc = tl.zeros((BLOCK_M, PB), dtype=dt)
    for j0 in range(0, m, BLOCK_N):
        cols = j0 + tl.arange(0, BLOCK_N).to(tl.int64)
        cmask = cols < m
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
    if PB == 1:
        tl.store(out_ptr + rows * p + c0, tl.sum(acc2, axis=0), mask=rmask)
    else:
        tl.store(out_ptr + rows[:, None] * p + (c0 + cs)[None, :], acc,
                 mask=rmask[:, None] & cmask_p[None, :])


@triton.jit
def _softmax_kernel(x_ptr, y_ptr, yy_ptr, v_ptr, w_ptr, out_ptr, lse_ptr, n, m, d, p, c0,
                    D: tl.constexpr, PB: tl.constexpr, BLOCK_M: tl.constexpr,
                    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, DOT_PREC: tl.constexpr,
                    LOWEST: tl.constexpr, LN2: tl.constexpr):
    """Online softmax in log2 units (w pre-multiplied by log2 e); PB = 0: log-sum-exp only."""
    pid = tl.program_id(0)
    rows = pid.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < n
    dt = lse_ptr.dtype.element_ty
    mx = tl.full((BLOCK_M,), LOWEST, dtype=dt)
    sm = tl.zeros((BLOCK_M,), dtype=dt)
    if PB == 1:
        acc = tl.zeros((BLOCK_M,), dtype=dt)
    elif PB > 1:
        cs = tl.arange(0, PB)
        cmask_p = (c0 + cs) < p
        acc = tl.zeros((BLOCK_M, PB), dtype=dt)
    for j0 in range(0, m, BLOCK_N):
        cols = j0 + tl.arange(0, BLOCK_N).to(tl.int64)
        cmask = cols < m
        q = _sq_tile(x_ptr, y_ptr, yy_ptr, rows, cols, rmask, cmask, n, m, d, D, BLOCK_M,
                     BLOCK_N, BLOCK_K, DOT_PREC)
        wj = tl.load(w_ptr + cols, mask=cmask, other=float("-inf"))
        z = wj[:, None] - q
        new = tl.maximum(mx, tl.max(z, axis=0))
        alpha = tl.exp2(mx - new)
        e = tl.exp2(z - new[None, :])
        sm = sm * alpha + tl.sum(e, axis=0)
        if PB == 1:
            vj = tl.load(v_ptr + cols * p + c0, mask=cmask, other=0.0)
            acc = acc * alpha + tl.sum(e * vj[:, None], axis=0)
        elif PB > 1:
            vt = tl.load(v_ptr + cols[:, None] * p + (c0 + cs)[None, :],
                         mask=cmask[:, None] & cmask_p[None, :], other=0.0)
            acc = acc * alpha[:, None] + tl.dot(tl.trans(e), vt, input_precision="ieee")
        mx = new
    if c0 == 0:
        tl.store(lse_ptr + rows, (mx + tl.log2(sm)) * LN2, mask=rmask)
    if PB == 1:
        tl.store(out_ptr + rows * p + c0, acc / sm, mask=rmask)
    elif PB > 1:
        tl.store(out_ptr + rows[:, None] * p + (c0 + cs)[None, :], acc / sm[:, None],
                 mask=rmask[:, None] & cmask_p[None, :])


def _tensors(x, y):
    xt = to_torch(x).contiguous()
    yt = to_torch(y).to(xt.dtype).contiguous()
    return xt, yt


def _dot_prec(dtype) -> str:
    return "ieee64" if dtype == torch.float64 else "tf32x3"


_MAX_PB = 64


def _rhs_blocks(p: int, dtype):
    """(PB, starts): right-hand sides per launch (at most ``_MAX_PB`` accumulators per row)."""
    if p == 1 or dtype == torch.float64:
        return 1, list(range(p))
    pb = min(_MAX_PB, max(16, triton.next_power_of_2(p)))
    return pb, list(range(0, p, pb))


def _common(xt, yt, beta):
    """Pre-scaled points (x' = sqrt(beta log2 e) x): SoA for direct d, row-major otherwise."""
    n, d = xt.shape
    m = yt.shape[0]
    s = math.sqrt(beta * _LOG2E)
    if d <= DIRECT_MAX_D:
        xs, ys = (xt * s).t().contiguous(), (yt * s).t().contiguous()
        return xs, ys, xt.new_zeros(1), n, m, d, d
    xs, ys = (xt * s).contiguous(), (yt * s).contiguous()
    return xs, ys, (ys * ys).sum(dim=1), n, m, d, 0


def kernel_matvec(x, y, u, a, b, *, beta):
    """``out[i, k] = sum_j exp(-beta a_i b_j |x_i - y_j|^2) u[j, k]`` (see arraygen.tiled)."""
    with cuda_device_context(x):
        xt, yt = _tensors(x, y)
        xs, ys, yy, n, m, d, dd = _common(xt, yt, beta)
        ut = to_torch(u).to(xt.dtype).contiguous()
        p = ut.shape[1]
        bw = a is not None or b is not None
        at = to_torch(a).to(xt.dtype).contiguous() if a is not None else xt.new_ones(n)
        bt = to_torch(b).to(xt.dtype).contiguous() if b is not None else xt.new_ones(m)
        out = xt.new_empty((n, p))
        pb, starts = _rhs_blocks(p, xt.dtype)
        grid = (triton.cdiv(n, _block_m(dd)),)
        for c0 in starts:
            _matvec_kernel[grid](xs, ys, yy, ut, at, bt, out, n, m, d, p, c0, D=dd, PB=pb,
                                 HAS_BW=bw, BLOCK_M=_block_m(dd), BLOCK_N=_block_n(dd, pb),
                                 BLOCK_K=_BLOCK_K, DOT_PREC=_dot_prec(xt.dtype),
                                 num_warps=_NUM_WARPS)
    return like(out, x)


def _softmax(x, y, v, w, beta):
    xt, yt = _tensors(x, y)
    xs, ys, yy, n, m, d, dd = _common(xt, yt, beta)
    w2 = (xt.new_zeros(m) if w is None
          else to_torch(w).to(xt.dtype).contiguous() * _LOG2E)
    if v is None:
        vt, p, pb, starts = xt.new_zeros(1), 0, 0, [0]
    else:
        vt = to_torch(v).to(xt.dtype).contiguous()
        p = vt.shape[1]
        pb, starts = _rhs_blocks(p, xt.dtype)
    out = xt.new_empty((n, max(p, 1)))
    lse = xt.new_empty(n)
    grid = (triton.cdiv(n, _block_m(dd)),)
    for c0 in starts:
        _softmax_kernel[grid](xs, ys, yy, vt, w2, out, lse, n, m, d, p, c0, D=dd, PB=pb,
                              BLOCK_M=_block_m(dd), BLOCK_N=_block_n(dd, pb), BLOCK_K=_BLOCK_K,
                              DOT_PREC=_dot_prec(xt.dtype), LOWEST=_LOWEST, LN2=_LN2,
                              num_warps=_NUM_WARPS)
    return out[:, :p], lse


def kernel_logsumexp(x, y, w, *, beta):
    """``lse[i] = log sum_j exp(w_j - beta |x_i - y_j|^2)`` (see arraygen.tiled)."""
    with cuda_device_context(x):
        _, lse = _softmax(x, y, None, w, beta)
    return like(lse, x)


def kernel_softmax_matvec(x, y, v, w, *, beta):
    """Online-softmax average of ``v`` and the row log-sum-exp (see arraygen.tiled)."""
    with cuda_device_context(x):
        out, lse = _softmax(x, y, v, w, beta)
    return like(out.contiguous(), x), like(lse, x)
