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
* Fast variants for ``d <= 16`` (``TUNING``; ``tools/gpu_bench_tiled.py`` measures them):
  the FMA-only exponent (law of cosines on y-centred points, prepared by the launcher: per row
  ``a = 2 x'``, ``k = -|x'|^2``, per column ``c = w2 - |y'|^2``), lazy rescaling of the softmax
  (a tile's sums are redone with the tile maximum only when one passes 2^16: one block-uniform
  branch per tile), ``POLY_COLS`` extra columns per tile whose ``2**t`` is a polynomial on the
  FMA units (float32; :data:`arraygen._kernels.tiled.POLY_EXP2_COEFFS`), and the MUFU
  exponential as ``ex2.approx.ftz`` (inline PTX on a GPU; ``tl.exp2`` under the interpreter).

Torch tensors are used directly (CPU tensors under ``TRITON_INTERPRET=1``); CuPy arrays are
handed over through DLPack. Non-contiguous inputs are copied once; offsets are 64-bit.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import triton
import triton.language as tl

from ..._kernels.tiled import DIRECT_MAX_D, POLY_EXP2_COEFFS
from .. import is_simulated
from .._interop import cuda_device_context, like, to_torch
from .._tuning import Tunable

__all__ = ["kernel_logsumexp", "kernel_matvec", "kernel_softmax_matvec"]

_LOG2E = 1.0 / math.log(2.0)
_LN2 = math.log(2.0)
# (BLOCK_N, BLOCK_M) tiles with rows on the fast axis: 4 warps x 32 lanes x 4 rows, so every
# thread owns whole columns of its rows and the reductions over columns stay in registers.
_BLOCK_M = 512
_NUM_WARPS = 4
_BLOCK_K = 32


@dataclasses.dataclass(frozen=True)
class Tuning:
    """Variants of the Triton tiled kernels for ``d <= 16`` (``TUNING.override(...)``)."""

    #: kernel_matvec: exponent by the law of cosines on y-centred points (D FMAs per pair)
    matvec_cosines: bool = False
    #: kernel_matvec, float32: columns per tile, beside the 32 MUFU ones, whose exp2 is the FMA
    #: polynomial (0, or a power of two: 4 -> share 1/9, 8 -> 1/5, 16 -> 1/3)
    matvec_poly_cols: int = 0
    #: softmax ops: rescale only when a tile's partial sum passes 2^16 (else every tile)
    lazy_rescale: bool = False
    softmax_cosines: bool = False  #: softmax ops: the law-of-cosines exponent
    softmax_poly_cols: int = 0  #: softmax ops: as matvec_poly_cols
    poly_degree: int = 5  #: 3, 4 or 5
    #: float32 on a GPU: MUFU exponentials of the fast kernels as ex2.approx.ftz
    ftz_exp2: bool = False
    fast_block_n: int = 32  #: MUFU columns per step of the fast kernels (16, 32 or 64)

    def fast_matvec(self) -> bool:
        return (self.matvec_cosines or self.matvec_poly_cols > 0 or self.ftz_exp2
                or self.fast_block_n != 32)

    def fast_softmax(self) -> bool:
        return (self.lazy_rescale or self.softmax_cosines or self.softmax_poly_cols > 0
                or self.ftz_exp2 or self.fast_block_n != 32)


TUNING = Tunable("triton.tiled", Tuning())


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
def _online_tile(z, mx, sm):
    """One tile of the online softmax (log2 units): z (BLOCK_N, BLOCK_M) exponents, mx the
    running maxima, sm the running sums of the rows; returns the new maxima, the factor alpha
    rescaling what was accumulated, e = 2^(z - new) and the new sums (the softmax kernels of
    .tiled and .blocksparse)."""
    new = tl.maximum(mx, tl.max(z, axis=0))
    alpha = tl.exp2(mx - new)
    e = tl.exp2(z - new[None, :])
    sm = sm * alpha + tl.sum(e, axis=0)
    return new, alpha, e, sm


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
        new, alpha, e, sm = _online_tile(z, mx, sm)
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


@triton.jit
def _exp2_mufu(t, FTZ: tl.constexpr):
    """``2**t`` on the MUFU: ex2.approx.ftz by inline PTX (FTZ), else ``tl.exp2``."""
    if FTZ:
        bits = tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=r,r",
                                         [t.to(tl.int32, bitcast=True)], dtype=tl.int32,
                                         is_pure=True, pack=1)  # .b32 operands: any LLVM
        return bits.to(tl.float32, bitcast=True)
    else:
        return tl.exp2(t)


@triton.jit
def _exp2_fma(t, C0: tl.constexpr, C1: tl.constexpr, C2: tl.constexpr, C3: tl.constexpr,
              C4: tl.constexpr, C5: tl.constexpr, DEG: tl.constexpr):
    """``2**t`` (float32) on the FMA units, as ``tiled_exp2_fma`` in backends/cupy/tiled.cu."""
    t = tl.minimum(tl.maximum(t, -126.0), 64.0)
    r = t + 12582912.0  # 1.5 * 2**23: rint(t) in the low mantissa bits
    f = t - (r - 12582912.0)
    if DEG == 5:
        q = tl.fma(tl.fma(tl.fma(tl.fma(C5 * f + C4, f, C3), f, C2), f, C1), f, C0)
    elif DEG == 4:
        q = tl.fma(tl.fma(tl.fma(C4 * f + C3, f, C2), f, C1), f, C0)
    else:
        q = tl.fma(tl.fma(C3 * f + C2, f, C1), f, C0)
    bits = q.to(tl.int32, bitcast=True) + (r.to(tl.int32, bitcast=True) << 23)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _z_fast(xs_ptr, ys_ptr, cy_ptr, rows, rmask, cols, n, ms,
            D: tl.constexpr, COS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """(BLOCK_N, BLOCK_M) exponents: ``c_j + a_i . y'_j`` (COS) or ``c_j - |x'_i - y'_j|^2``.
    The columns are padded to ``ms`` (no masks: vector loads)."""
    cj = tl.load(cy_ptr + cols)
    z = tl.zeros((BLOCK_N, BLOCK_M), dtype=xs_ptr.dtype.element_ty) + cj[:, None]
    for k in tl.static_range(D):
        xk = tl.load(xs_ptr + k * n + rows, mask=rmask, other=0.0)
        yk = tl.load(ys_ptr + k * ms + cols)
        if COS:
            z += yk[:, None] * xk[None, :]
        else:
            diff = yk[:, None] - xk[None, :]
            z -= diff * diff
    return z


@triton.jit
def _matvec_fast_kernel(xs_ptr, kx_ptr, ys_ptr, cy_ptr, u_ptr, out_ptr, n, ms,
                        D: tl.constexpr, COS: tl.constexpr, BLOCK_M: tl.constexpr,
                        BLOCK_N: tl.constexpr, POLY_COLS: tl.constexpr, FTZ: tl.constexpr,
                        C0: tl.constexpr, C1: tl.constexpr, C2: tl.constexpr,
                        C3: tl.constexpr, C4: tl.constexpr, C5: tl.constexpr,
                        DEG: tl.constexpr):
    """One right-hand side: ``out[i] = sum_j 2**(k_i + z_ij) u_j`` (k = 0 without COS); each
    step takes BLOCK_N MUFU columns and POLY_COLS polynomial ones (u = 0 on the padding)."""
    pid = tl.program_id(0)
    rows = pid.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < n
    kx = tl.load(kx_ptr + rows, mask=rmask, other=0.0)
    acc = tl.zeros((BLOCK_M,), dtype=out_ptr.dtype.element_ty)
    for j0 in range(0, ms, BLOCK_N + POLY_COLS):
        cols = j0 + tl.arange(0, BLOCK_N)
        z = _z_fast(xs_ptr, ys_ptr, cy_ptr, rows, rmask, cols, n, ms, D, COS, BLOCK_M, BLOCK_N)
        uj = tl.load(u_ptr + cols)
        acc += tl.sum(_exp2_mufu(z + kx[None, :], FTZ) * uj[:, None], axis=0)
        if POLY_COLS > 0:
            colp = j0 + BLOCK_N + tl.arange(0, POLY_COLS)
            zp = _z_fast(xs_ptr, ys_ptr, cy_ptr, rows, rmask, colp, n, ms, D, COS, BLOCK_M,
                         POLY_COLS)
            up = tl.load(u_ptr + colp)
            ep = _exp2_fma(zp + kx[None, :], C0, C1, C2, C3, C4, C5, DEG)
            acc += tl.sum(ep * up[:, None], axis=0)
    tl.store(out_ptr + rows, acc, mask=rmask)


@triton.jit
def _softmax_fast_kernel(xs_ptr, kx_ptr, ys_ptr, cy_ptr, v_ptr, out_ptr, lse_ptr, n, ms,
                         D: tl.constexpr, COS: tl.constexpr, PB: tl.constexpr,
                         LAZY: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                         POLY_COLS: tl.constexpr, FTZ: tl.constexpr, LIMIT: tl.constexpr,
                         LOWEST: tl.constexpr, LN2: tl.constexpr,
                         C0: tl.constexpr, C1: tl.constexpr, C2: tl.constexpr,
                         C3: tl.constexpr, C4: tl.constexpr, C5: tl.constexpr,
                         DEG: tl.constexpr):
    """Online softmax in log2 units, PB in {0, 1} (c = -inf on the padding); LAZY: the
    reference maximum changes only when a tile's partial sum fails ``<= LIMIT`` (then the tile
    is redone with its maximum)."""
    pid = tl.program_id(0)
    rows = pid.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < n
    dt = lse_ptr.dtype.element_ty
    mr = tl.full((BLOCK_M,), LOWEST, dtype=dt)
    sm = tl.zeros((BLOCK_M,), dtype=dt)
    acc = tl.zeros((BLOCK_M,), dtype=dt)
    for j0 in range(0, ms, BLOCK_N + POLY_COLS):
        cols = j0 + tl.arange(0, BLOCK_N)
        z = _z_fast(xs_ptr, ys_ptr, cy_ptr, rows, rmask, cols, n, ms, D, COS, BLOCK_M, BLOCK_N)
        if PB == 1:
            vj = tl.load(v_ptr + cols)
        if POLY_COLS > 0:
            colp = j0 + BLOCK_N + tl.arange(0, POLY_COLS)
            zp = _z_fast(xs_ptr, ys_ptr, cy_ptr, rows, rmask, colp, n, ms, D, COS, BLOCK_M,
                         POLY_COLS)
            if PB == 1:
                vp = tl.load(v_ptr + colp)
        if LAZY:
            e = _exp2_mufu(z - mr[None, :], FTZ)
            ps = tl.sum(e, axis=0)
            if PB == 1:
                pacc = tl.sum(e * vj[:, None], axis=0)
            if POLY_COLS > 0:
                ep = _exp2_fma(zp - mr[None, :], C0, C1, C2, C3, C4, C5, DEG)
                ps += tl.sum(ep, axis=0)
                if PB == 1:
                    pacc += tl.sum(ep * vp[:, None], axis=0)
            bad = tl.max(tl.where(ps <= LIMIT, 0, 1), axis=0)
            if bad > 0:  # rare (the first tile, a maximum grown past LIMIT): redo the tile
                new = tl.maximum(mr, tl.max(z, axis=0))
                if POLY_COLS > 0:
                    new = tl.maximum(new, tl.max(zp, axis=0))
                alpha = tl.exp2(mr - new)
                e = tl.exp2(z - new[None, :])
                ps = tl.sum(e, axis=0)
                if PB == 1:
                    pacc = tl.sum(e * vj[:, None], axis=0)
                if POLY_COLS > 0:
                    ep = tl.exp2(zp - new[None, :])
                    ps += tl.sum(ep, axis=0)
                    if PB == 1:
                        pacc += tl.sum(ep * vp[:, None], axis=0)
                sm = sm * alpha
                if PB == 1:
                    acc = acc * alpha
                mr = new
            sm += ps
            if PB == 1:
                acc += pacc
        else:
            new = tl.maximum(mr, tl.max(z, axis=0))
            if POLY_COLS > 0:
                new = tl.maximum(new, tl.max(zp, axis=0))
            alpha = _exp2_mufu(mr - new, FTZ)
            e = _exp2_mufu(z - new[None, :], FTZ)
            ps = tl.sum(e, axis=0)
            if PB == 1:
                pacc = tl.sum(e * vj[:, None], axis=0)
            if POLY_COLS > 0:
                ep = _exp2_fma(zp - new[None, :], C0, C1, C2, C3, C4, C5, DEG)
                ps += tl.sum(ep, axis=0)
                if PB == 1:
                    pacc += tl.sum(ep * vp[:, None], axis=0)
            sm = sm * alpha + ps
            if PB == 1:
                acc = acc * alpha + pacc
            mr = new
    kx = tl.load(kx_ptr + rows, mask=rmask, other=0.0)
    # every exponent -inf (mr never left the sentinel): the polynomial's 2^-126 dust is no mass
    sm = tl.where(mr == LOWEST, 0.0, sm)
    tl.store(lse_ptr + rows, (mr + kx + tl.log2(sm)) * LN2, mask=rmask)
    if PB == 1:
        tl.store(out_ptr + rows, acc / sm, mask=rmask)


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


_LAZY_LIMIT = 65536.0  # 2**16: a tile whose partial sum passes it is redone (lazy rescaling)


def _fast_inputs(xt, yt, w, u, beta, cos, step, pad):
    """Inputs of the fast kernels: SoA ``xs`` (x' or 2 x'), ``kx`` (-|x'|^2 or 0), SoA ``ys``
    (y'), ``cy`` (w2 - |y'|^2 or w2, w2 = log2(e) w) and ``u`` (M,), the points shifted by the
    mean of y and scaled by sqrt(beta log2 e). The columns are padded to ``ms``, a multiple of
    ``step`` and 16 (aligned vector loads, no masks), with ``cy = pad`` and ``u = 0``."""
    s = math.sqrt(beta * _LOG2E)
    ctr = yt.mean(dim=0, keepdim=True)
    xs = (xt - ctr) * s
    ys = (yt - ctr) * s
    m = yt.shape[0]
    w2 = xt.new_zeros(m) if w is None else to_torch(w).to(xt.dtype).contiguous() * _LOG2E
    if cos:
        kx = -(xs * xs).sum(dim=1)
        cy = w2 - (ys * ys).sum(dim=1)
        xs = 2.0 * xs
    else:
        kx = xt.new_zeros(xt.shape[0])
        cy = w2
    unit = step * 16 // math.gcd(step, 16)
    ms = -(-m // unit) * unit
    ys_p = xt.new_zeros((yt.shape[1], ms))
    ys_p[:, :m] = ys.t()
    cy_p = xt.new_full((ms,), pad)
    cy_p[:m] = cy
    u_p = xt.new_zeros(ms)
    if u is not None:
        u_p[:m] = to_torch(u).to(xt.dtype).reshape(m)
    return xs.t().contiguous(), kx.contiguous(), ys_p, cy_p, u_p, ms


def _fast_consts(tuning, dtype, cos: bool, poly: int) -> dict:
    """Constexpr arguments shared by the fast kernels."""
    f32 = dtype == torch.float32
    poly = poly if f32 else 0
    if poly and (poly & (poly - 1) or poly > 64):
        raise ValueError(f"`*_poly_cols` must be 0 or a power of two up to 64; got {poly!r}")
    if tuning.poly_degree not in POLY_EXP2_COEFFS:
        raise ValueError(f"`poly_degree` must be one of {sorted(POLY_EXP2_COEFFS)}; "
                         f"got {tuning.poly_degree!r}")
    coeffs = list(POLY_EXP2_COEFFS[tuning.poly_degree]) + [0.0] * 6
    if tuning.fast_block_n not in (16, 32, 64):
        raise ValueError(f"`fast_block_n` must be 16, 32 or 64; got {tuning.fast_block_n!r}")
    return dict(COS=cos, POLY_COLS=poly, BLOCK_N=tuning.fast_block_n,
                FTZ=bool(tuning.ftz_exp2 and f32 and not is_simulated("triton")),
                DEG=tuning.poly_degree, **{f"C{k}": coeffs[k] for k in range(6)})


def _matvec_fast(xt, yt, u, beta, tuning):
    consts = _fast_consts(tuning, xt.dtype, tuning.matvec_cosines, tuning.matvec_poly_cols)
    xs, kx, ys, cy, up, ms = _fast_inputs(xt, yt, None, u, beta, tuning.matvec_cosines,
                                          consts["BLOCK_N"] + consts["POLY_COLS"], 0.0)
    n = xt.shape[0]
    out = xt.new_empty((n, 1))
    grid = (triton.cdiv(n, _BLOCK_M),)
    _matvec_fast_kernel[grid](xs, kx, ys, cy, up, out, n, ms, D=xt.shape[1], BLOCK_M=_BLOCK_M,
                              num_warps=_NUM_WARPS, **consts)
    return out


def _softmax_fast(xt, yt, v, w, beta, tuning):
    consts = _fast_consts(tuning, xt.dtype, tuning.softmax_cosines, tuning.softmax_poly_cols)
    xs, kx, ys, cy, vp, ms = _fast_inputs(xt, yt, w, v, beta, tuning.softmax_cosines,
                                          consts["BLOCK_N"] + consts["POLY_COLS"],
                                          float("-inf"))
    n = xt.shape[0]
    p = 0 if v is None else 1
    out = xt.new_empty((n, 1))
    lse = xt.new_empty(n)
    grid = (triton.cdiv(n, _BLOCK_M),)
    _softmax_fast_kernel[grid](xs, kx, ys, cy, vp, out, lse, n, ms, D=xt.shape[1], PB=p,
                               LAZY=tuning.lazy_rescale, BLOCK_M=_BLOCK_M, LIMIT=_LAZY_LIMIT, LOWEST=_LOWEST, LN2=_LN2,
                               num_warps=_NUM_WARPS, **consts)
    return out[:, :p], lse


def kernel_matvec(x, y, u, a, b, *, beta):
    """``out[i, k] = sum_j exp(-beta a_i b_j |x_i - y_j|^2) u[j, k]`` (see arraygen.tiled)."""
    with cuda_device_context(x):
        xt, yt = _tensors(x, y)
        tuning = TUNING.current()
        bw = a is not None or b is not None
        if (not bw and tuning.fast_matvec() and xt.shape[1] <= DIRECT_MAX_D
                and u.shape[1] == 1):
            return like(_matvec_fast(xt, yt, u, beta, tuning), x)
        xs, ys, yy, n, m, d, dd = _common(xt, yt, beta)
        ut = to_torch(u).to(xt.dtype).contiguous()
        p = ut.shape[1]
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
    tuning = TUNING.current()
    if (tuning.fast_softmax() and xt.shape[1] <= DIRECT_MAX_D
            and (v is None or v.shape[1] == 1)):
        return _softmax_fast(xt, yt, v, w, beta, tuning)
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
