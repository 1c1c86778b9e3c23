"""Block-sparse tiled kernels: the contract shared by :mod:`arraygen.blocksparse`,
:mod:`arraygen.tiled` and the launchers ``arraygen/backends/<lang>/blocksparse.py``.

Layout
------
Points are reordered once (:func:`arraygen.blocksparse.cluster_points`) so that each run of
``block`` consecutive points is one spatial cluster: cluster ``A`` of a cloud of ``n`` points is
the rows ``[A * block, min(n, (A + 1) * block))`` (:func:`cluster_range`); only the last cluster
may be partial. A pair list (:class:`arraygen.blocksparse.BlockPairs`) is a CSR structure over
row clusters: row cluster ``A`` sums only over the y-clusters ``cols[offsets[A]:offsets[A+1]]``
(``offsets`` (Kx + 1,) int32, ``cols`` (nnz,) int32, ascending within a row).

Launchers (one module per backend, ``arraygen/backends/<lang>/blocksparse.py``)
-----------------------------------------------------------------------------
Inputs are the SORTED points (``Clusters.points`` order), trusted, in one namespace, device and
compute dtype (float32 or float64), possibly non-contiguous; ``x`` and ``y`` are centred when
``d > DIRECT_MAX_D`` (law of cosines, as in :mod:`arraygen.tiled`). ``offsets`` and ``cols`` are
int32 arrays on the points' device. ``beta`` is a Python float, ``block_x``/``block_y`` ints.
Results come back in the caller's namespace and dtype, in sorted order::

    kernel_matvec_blocks(x, y, u, a, b, offsets, cols, *, beta, block_x, block_y) -> (N, p)
        out[i, k] = sum_{j in kept(i)} exp(-beta a_i b_j |x_i - y_j|^2) u[j, k]
        (a (N,) / b (M,) or None: ones)
    kernel_logsumexp_blocks(x, y, w, offsets, cols, *, beta, block_x, block_y) -> (N,)
        lse[i] = log sum_{j in kept(i)} exp(w_j - beta |x_i - y_j|^2)   (w (M,) or None)
    kernel_softmax_matvec_blocks(x, y, v, w, offsets, cols, *, beta, block_x, block_y)
        -> (out (N, p), lse (N,)), out[i] = sum_{j in kept(i)} softmax_j(...) v_j

where ``kept(i)`` is the union of the columns of the y-clusters listed for the row cluster of
``i``. Every row cluster lists at least one y-cluster, and for ``kernel_logsumexp_blocks`` /
``kernel_softmax_matvec_blocks`` at least one listed column has a finite log-weight, so no row
is empty. Launchers may read the host copies ``pairs.host_offsets``/``host_cols`` instead when
the caller passes them (the private cores pass the device arrays; :func:`merged_spans` turns a
pair list into contiguous column spans on the host, which CPU kernels prefer).

The keep rule (float64, from cluster bounds only)
-------------------------------------------------
``U[A,B] = max_{j in B} w_j - beta amin_A bmin_B dmin(A,B)^2`` bounds every exponent of the
pair from above; ``L[A] = max_B (max_{j in B} w_j - beta amax_A bmax_B dmax(A,B)^2)`` bounds the
largest exponent of every row of ``A`` from below, with ``dmin = max(0, |cA - cB| - rA - rB)``,
``dmax = |cA - cB| + rA + rB``. A pair is kept iff ``U[A,B] >= L[A] - truncate**2`` and
``mass_bound = max_A sum_{B skipped} count_B exp(U[A,B] - L[A])`` bounds the relative error of
every row's kernel sum (skipped mass over kept mass, for non-negative right-hand sides).

Nothing here imports from the rest of arraygen.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DEFAULT_BLOCK_CPU", "DEFAULT_BLOCK_GPU", "OPS", "cluster_count", "cluster_range",
           "merged_spans", "point_mask"]

#: Points per cluster when ``cluster_points(block=None)``: host arrays and CUDA arrays.
DEFAULT_BLOCK_CPU = 64
DEFAULT_BLOCK_GPU = 128

#: The launcher names every block-sparse backend module defines.
OPS = ("kernel_matvec_blocks", "kernel_logsumexp_blocks", "kernel_softmax_matvec_blocks")


def cluster_count(n: int, block: int) -> int:
    """Number of clusters of ``block`` points covering ``n`` points (the last may be partial)."""
    return -(-int(n) // int(block))


def cluster_range(c: int, block: int, n: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of cluster ``c`` of ``n`` sorted points in clusters of ``block``."""
    start = int(c) * int(block)
    return start, min(int(n), start + int(block))


def merged_spans(offsets, cols, block_y: int, m: int):
    """Contiguous column spans of a pair list (host NumPy, O(nnz)).

    Consecutive y-clusters of one row cluster (``B, B + 1, ...``) are merged into one span of
    columns. Returns ``(span_offsets (Kx + 1,) int64, starts (S,) int64, stops (S,) int64)``:
    row cluster ``A`` sums over the columns ``[starts[s], stops[s])`` for
    ``s in range(span_offsets[A], span_offsets[A + 1])``.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    kx = offsets.shape[0] - 1
    nnz = cols.shape[0]
    if nnz == 0:
        return np.zeros(kx + 1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    row = np.repeat(np.arange(kx, dtype=np.int64), np.diff(offsets))
    new = np.ones(nnz, dtype=bool)
    new[1:] = (cols[1:] != cols[:-1] + 1) | (row[1:] != row[:-1])
    first = np.flatnonzero(new)
    last = np.empty_like(first)
    last[:-1] = first[1:] - 1
    last[-1] = nnz - 1
    starts = cols[first] * int(block_y)
    stops = np.minimum((cols[last] + 1) * int(block_y), int(m))
    span_offsets = np.zeros(kx + 1, np.int64)
    np.add.at(span_offsets, row[first] + 1, 1)
    return np.cumsum(span_offsets), starts, stops


def point_mask(offsets, cols, block_x: int, block_y: int, n: int, m: int) -> np.ndarray:
    """The (n, m) boolean mask of the point pairs a pair list computes (host, tests only)."""
    offsets = np.asarray(offsets, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    kx = offsets.shape[0] - 1
    ky = cluster_count(m, block_y)
    keep = np.zeros((kx, ky), dtype=bool)
    row = np.repeat(np.arange(kx), np.diff(offsets))
    keep[row, cols] = True
    return keep[np.arange(n) // int(block_x)][:, np.arange(m) // int(block_y)]
