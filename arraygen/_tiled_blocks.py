"""Array-API implementation of the block-sparse tiled ops (contract:
:mod:`arraygen._kernels.blocksparse`).

Consecutive row clusters that list the same y-clusters form one group; each group gathers its
kept columns (a slice when they are contiguous, a ``take`` otherwise) and runs the dense
Array-API tile loop of :mod:`arraygen.tiled` on them. The pair list is read from its host copy
(``BlockPairs.host_offsets``/``host_cols``), so nothing is synchronised here.
"""

from __future__ import annotations

import numpy as np

from . import _array_api as aa
from ._kernels.blocksparse import merged_spans

#: Rows of one group at most (several row clusters with identical column lists).
_GROUP_ROWS = 4096


def _groups(pairs):
    """Yield ``(row0, row1, starts, stops)``: rows of consecutive row clusters sharing one
    column list, and that list as contiguous column spans."""
    off, cols = pairs.host_offsets, pairs.host_cols
    span_off, starts, stops = merged_spans(off, cols, pairs.block_y, pairs.m)
    kx = off.shape[0] - 1
    bx, n = pairs.block_x, pairs.n
    c = 0
    while c < kx:
        mine = cols[off[c]:off[c + 1]]
        e = c + 1
        while (e < kx and (e + 1 - c) * bx <= _GROUP_ROWS
               and np.array_equal(cols[off[e]:off[e + 1]], mine)):
            e += 1
        s0, s1 = span_off[c], span_off[c + 1]
        yield c * bx, min(n, e * bx), starts[s0:s1], stops[s0:s1]
        c = e


def _columns(xp, arrays, starts, stops, like):
    """The kept columns (rows of each (M, ...) array, None passes) of one group."""
    if starts.shape[0] == 1:
        j0, j1 = int(starts[0]), int(stops[0])
        return [None if a is None else a[j0:j1, ...] for a in arrays]
    idx = np.concatenate([np.arange(s, e, dtype=np.int64) for s, e in zip(starts, stops)])
    idx = xp.asarray(idx, device=aa.device(like))
    return [None if a is None else xp.take(a, idx, axis=0) for a in arrays]


def matvec(xp, x, y, u, a, b, beta: float, pairs):
    """``out[i] = sum_{j kept} exp(-beta a_i b_j |x_i - y_j|^2) u_j``: (N, p), sorted order."""
    from .tiled import _matvec_xp

    parts = []
    for r0, r1, starts, stops in _groups(pairs):
        yg, ug, bg = _columns(xp, (y, u, b), starts, stops, x)
        parts.append(_matvec_xp(xp, x[r0:r1, :], yg, ug, None if a is None else a[r0:r1],
                                bg, beta))
    return parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)


def softmax(xp, x, y, v, w, beta: float, pairs):
    """Online softmax over the kept columns: ``(out (N, p) or None, lse (N,))``, sorted order."""
    from .tiled import _softmax_xp

    outs, lses = [], []
    for r0, r1, starts, stops in _groups(pairs):
        yg, vg, wg = _columns(xp, (y, v, w), starts, stops, x)
        out, lse = _softmax_xp(xp, x[r0:r1, :], yg, vg, wg, beta)
        outs.append(out)
        lses.append(lse)
    lse = lses[0] if len(lses) == 1 else xp.concat(lses, axis=0)
    if v is None:
        return None, lse
    return (outs[0] if len(outs) == 1 else xp.concat(outs, axis=0)), lse
