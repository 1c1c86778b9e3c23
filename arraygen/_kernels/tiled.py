"""Tiled-kernel contract shared by the op module and the CUDA launchers: the direct-distance
limit, the column-split launch geometry (occupancy, number of splits), the merge, and the
FMA-unit exponential of the fast variants (coefficients, share, a NumPy model of it)."""

from __future__ import annotations

import math

import numpy as np

#: Up to this dimension distances are computed directly; above it by the centred law of cosines.
DIRECT_MAX_D = 16


def column_splits(row_blocks: int, blocks_per_wave: int, max_splits: int = 8) -> int:
    """Launch geometry for the CUDA launchers: split the columns of ``y`` S ways.

    With ``B = row_blocks`` blocks of rows and ``C = blocks_per_wave`` resident blocks, one
    launch over all columns takes ``ceil(B / C)`` waves of full-length blocks; S column splits
    (partial results merged afterwards) cost ``ceil(B S / C) / S`` of those. Returns the S in
    ``1..max_splits`` of least cost (the fewest splits on ties).
    """
    best, best_cost = 1, float(math.ceil(row_blocks / blocks_per_wave))
    for splits in range(2, max_splits + 1):
        cost = math.ceil(row_blocks * splits / blocks_per_wave) / splits
        if cost < best_cost - 1e-9:
            best, best_cost = splits, cost
    return best


def resident_blocks(sms: int, regs_per_thread: int, threads: int) -> int:
    """Blocks of ``threads`` threads resident on the whole GPU at once: ``sms`` SMs of 2048
    threads and 65536 registers each, registers allocated per warp in units of 256."""
    warp_regs = -(-regs_per_thread * 32 // 256) * 256
    per_sm = max(1, min(2048 // threads, 65536 // (warp_regs * (threads // 32))))
    return sms * per_sm


def split_count(row_blocks: int, m: int, *, tile: int, sms: int, regs_per_thread: int,
                threads: int, forced: int | None = None) -> int:
    """Column splits S of one launch: :func:`column_splits` for the occupancy of a kernel
    using ``regs_per_thread`` registers (or ``forced``), at most one split per ``tile``
    columns of the ``m`` columns of ``y``."""
    if forced is None:
        forced = column_splits(row_blocks, resident_blocks(sms, regs_per_thread, threads))
    return max(1, min(int(forced), -(-m // tile)))


def merge_column_splits(xp, acc, mx, sm):
    """Merge the partial online softmaxes of S column splits (CUDA launchers).

    ``mx`` (S, N): running maxima in log2 units; ``sm`` (S, N): sums of ``2**(e - mx)``;
    ``acc`` (S, N, p): the matching weighted sums of ``v``. Returns ``(out (N, p), lse (N,))``
    with ``lse`` in natural-log units.
    """
    top = xp.max(mx, axis=0)
    wgt = xp.exp2(mx - top[None, :])
    total = xp.sum(wgt * sm, axis=0)
    lse = (top + xp.log2(total)) * math.log(2.0)
    out = xp.sum(wgt[:, :, None] * acc, axis=0) / total[:, None]
    return out, lse


#: Columns per period of the fast kernels: ``k`` of every 16 evaluate ``2**t`` by polynomial.
POLY_PERIOD = 16

#: Minimax coefficients (float32, constant term first) of ``2**f`` on ``[-1/2, 1/2]`` for
#: relative error, by degree: the kernels' FMA-unit exponential (``tiled_poly2`` in
#: ``backends/cupy/tiled.cu``, ``_exp2_fma`` in ``backends/triton/tiled.py``).
POLY_EXP2_COEFFS = {
    3: (0.9999280571937561, 0.6932609677314758, 0.2426111251115799, 0.0551716685295105),
    4: (0.9999992847442627, 0.6931217908859253, 0.240247443318367, 0.05591785907745361,
        0.009570102207362652),
    5: (1.0000001192092896, 0.6931469440460205, 0.24022120237350464, 0.05550713092088699,
        0.009675540961325169, 0.0013276472454890609),
}

#: Upper bounds of the float32 evaluation's relative error over ``t`` in [-125, 64], by degree
#: (``tests/test_tiled_variants.py`` measures them).
POLY_EXP2_REL_ERR = {3: 7.6e-5, 4: 2.8e-6, 5: 2.4e-7}


def poly_columns(share: float) -> int:
    """The ``k`` of a polynomial share ``k / POLY_PERIOD`` (0 <= k <= 16); ValueError otherwise.

    >>> poly_columns(0.125)
    2
    """
    k = round(float(share) * POLY_PERIOD)
    if not (0 <= k <= POLY_PERIOD and abs(k - float(share) * POLY_PERIOD) < 1e-9):
        raise ValueError(f"`poly_share` must be a multiple of 1/{POLY_PERIOD} in [0, 1]; "
                         f"got {share!r}")
    return k


def exp2_poly(t, degree: int = 5):
    """``2**t`` in float32 the way the kernels' FMA-unit path computes it (NumPy model).

    ``t`` is clamped to ``[-126, 64]`` (below -125 the result is at most ``2**-125``, not a
    relative approximation), split ``t = k + f`` with ``k = rint(t)`` by the
    ``1.5 * 2**23`` shifter (``f`` in ``[-1/2, 1/2]`` exactly), ``2**f`` by the Horner
    polynomial (each step one rounding, as an FMA) and ``k`` added to the exponent bits.

    >>> round(float(exp2_poly(np.float32(3.0))), 5)
    8.0
    """
    shifter = np.float32(12582912.0)
    t = np.minimum(np.maximum(np.asarray(t, np.float32), np.float32(-126)), np.float32(64))
    r = (t + shifter).astype(np.float32)
    f = (t - (r - shifter)).astype(np.float32)
    coeffs = [np.float32(c) for c in POLY_EXP2_COEFFS[degree]]
    p = np.full(f.shape, coeffs[-1], np.float32)
    for c in coeffs[-2::-1]:  # an FMA: one rounding of the exact p * f + c
        p = (p.astype(np.float64) * f.astype(np.float64) + np.float64(c)).astype(np.float32)
    bits = p.view(np.int32) + (r.view(np.int32) << np.int32(23))
    return bits.astype(np.int32).view(np.float32)
