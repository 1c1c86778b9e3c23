"""Tiled-kernel contract shared by the op module and the CUDA launchers: the direct-distance
limit, the column-split launch geometry (occupancy, number of splits) and the merge."""

from __future__ import annotations

import math

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
