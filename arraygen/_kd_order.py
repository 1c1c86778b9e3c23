"""kd-tree order of a point cloud computed on the points' own device (Array API).

The order :func:`arraygen.blocksparse.cluster_points` needs: split the cloud recursively at a
multiple of ``block`` points (the left part gets half of the segment's clusters) until every
segment is one cluster of ``block`` consecutive points (only the last may be partial). Here all
segments of one tree level are split at once, so the work is a few whole-array operations per
level instead of a host loop over segments:

* the segments of every level depend on ``n`` and ``block`` only (host arithmetic);
* each segment picks the coordinate of largest variance, from cumulative sums of the points
  in the current order (float64, centred);
* one stable sort by that coordinate, then one stable sort by segment id, orders every segment
  along its own axis, so the first ``left`` points of a segment are its lower part.

No host synchronisation: the segment boundaries are uploaded, nothing is read back.
"""

from __future__ import annotations

import itertools

from . import _array_api as aa

__all__ = ["kd_levels", "kd_order"]


def kd_levels(n: int, block: int, within: int | None = None) -> list[list[int]]:
    """Segment starts of every level that splits something (host ints), each ending with ``n``.

    Level 0 is ``[0, n]`` (``within``: the runs ``[0, within, 2 within, ..., n]``); a segment
    ``[s, e)`` longer than ``block`` splits at ``s + (ceil((e - s) / block) // 2) * block``.

    Examples
    --------
    >>> kd_levels(10, 2)  # then [0, 2, 4, 6, 8, 10]: clusters of 2
    [[0, 10], [0, 4, 10], [0, 2, 4, 6, 10]]
    >>> kd_levels(10, 2, within=4)  # runs of 4 split further: nested clusters of 4 and of 2
    [[0, 4, 8, 10]]
    """
    step = int(n) if within is None else max(1, int(within))
    bounds = [*range(0, int(n), step), int(n)] if n > 0 else [0, 0]
    levels = []
    while any(e - s > block for s, e in itertools.pairwise(bounds)):
        levels.append(bounds)
        new = [0]
        for s, e in itertools.pairwise(bounds):
            size = e - s
            if size > block:
                new.append(s + (-(-size // block) // 2) * block)
            new.append(e)
        bounds = new
    return levels


def kd_order(xp, x, block: int, *, within: int | None = None):
    """Permutation ``perm`` (n,) int64 such that ``x[perm]`` is in kd-tree order.

    With ``within`` (a multiple of ``block``), each run of ``within`` consecutive points of
    ``x`` is ordered on its own: applied to points already in a kd order of ``within``-point
    clusters, the runs of ``within`` and of ``block`` points are then both clusters (a nested
    order, e.g. coarse and fine clusters of one cloud)::

        outer = kd_order(xp, x, 128)
        perm = xp.take(outer, kd_order(xp, xp.take(x, outer, axis=0), 32, within=128))

    Parameters
    ----------
    xp : namespace
        Array API namespace of ``x``.
    x : array, shape (n, d)
        Finite points (any real floating dtype), on any device.
    block : int
        Points per cluster (>= 1).
    within : int, optional
        Order each run of ``within`` points separately (default: the whole cloud at once).

    Returns
    -------
    perm : array, shape (n,), int64, on ``x``'s device.

    Examples
    --------
    >>> import numpy as np
    >>> from arraygen import _array_api as aa
    >>> x = np.array([[0.0], [10.0], [0.1], [10.1], [0.2], [10.2]])
    >>> perm = kd_order(aa.array_namespace(x), x, 3)
    >>> x[perm, 0].tolist()
    [0.0, 0.1, 0.2, 10.0, 10.1, 10.2]
    """
    n, d = x.shape
    dev = aa.device(x)
    f64 = xp.float64
    perm = xp.arange(n, dtype=xp.int64, device=dev)
    levels = kd_levels(n, int(block), within)
    if not levels:
        return perm
    # coordinate rows (d, n): the cumulative sums run along the contiguous axis (a scan down
    # the rows of an (n, d) array has only d independent lanes on a GPU)
    pts = xp.astype(xp.matrix_transpose(x), f64)
    pts = pts - (xp.sum(pts, axis=1) / float(n))[:, None]
    zero_col = xp.zeros((d, 1), dtype=f64, device=dev)
    pos = xp.arange(n, dtype=xp.int64, device=dev)
    for bounds in levels:
        starts = xp.asarray(bounds[:-1], dtype=xp.int64, device=dev)
        ends = xp.asarray(bounds[1:], dtype=xp.int64, device=dev)
        seg = xp.searchsorted(starts, pos, side="right") - 1
        csum = xp.concat([zero_col, xp.cumulative_sum(pts, axis=1)], axis=1)
        csq = xp.concat([zero_col, xp.cumulative_sum(pts * pts, axis=1)], axis=1)
        count = xp.astype(ends - starts, f64)[None, :]
        mean = (xp.take(csum, ends, axis=1) - xp.take(csum, starts, axis=1)) / count
        var = (xp.take(csq, ends, axis=1) - xp.take(csq, starts, axis=1)) / count - mean * mean
        axis = xp.argmax(var, axis=0)  # (segments,) widest coordinate by variance
        flat = xp.reshape(pts, (d * n,))
        key = xp.take(flat, xp.take(axis, seg) * n + pos)
        order = xp.argsort(key, stable=True)
        order = xp.take(order, xp.argsort(xp.take(seg, order), stable=True))
        perm = xp.take(perm, order)
        pts = xp.take(pts, order, axis=1)
    return perm
