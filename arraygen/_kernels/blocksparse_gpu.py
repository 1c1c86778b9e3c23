"""Launch geometry shared by the CUDA launchers of the block-sparse tiled kernels (CuPy,
Numba-CUDA, Triton): how a row cluster maps to thread blocks and how many splits its pair list
is cut into. The layout itself (clusters, CSR pair lists) is :mod:`arraygen._kernels.blocksparse`.

A launch has ``K_x * tiles`` row blocks (``tiles`` row tiles of ``threads * rows`` rows per
row cluster) times ``S`` splits: split ``s`` of row cluster ``A`` walks the pairs
``[p0 + s c, min(p1, p0 + (s + 1) c))`` with ``c = ceil((p1 - p0) / S)``, so long rows are
spread over ``S`` blocks and the partial results are merged afterwards
(:func:`arraygen._kernels.tiled.merge_column_splits` for the softmax kernels, a sum for matvec).
"""

from __future__ import annotations

import dataclasses

from .tiled import column_splits

#: Most threads per block of the direct kernels (``__launch_bounds__`` of blocksparse.cu).
MAX_THREADS = 128


@dataclasses.dataclass(frozen=True)
class LaunchTuning:
    """Launch tuning of the CUDA-thread block-sparse kernels (CuPy and Numba-CUDA: each has its
    ``Tuning = LaunchTuning`` and a ``TUNING.override(...)``)."""

    splits: int | None = None  #: force this many splits of every pair list; None: occupancy
    threads: int | None = None  #: threads per block of the direct kernels (<= 128)
    rows: int | None = None  #: rows per thread of the direct kernels (1, 2 or 4)


def row_geometry(block_x: int, *, threads: int | None = None,
                 rows: int | None = None) -> tuple[int, int, int]:
    """``(threads, rows, tiles)``: a block of ``threads`` threads owns ``rows`` rows per
    thread, and a row cluster of ``block_x`` rows takes ``tiles`` such blocks.

    Default: about one block per cluster, up to 512 rows (128 threads x 4 rows), with two rows
    per thread from 64 rows on (register reuse of each staged column) and whole warps.

    Examples
    --------
    >>> row_geometry(128)
    (64, 2, 1)
    >>> row_geometry(1000)
    (128, 4, 2)
    """
    target = min(-(-block_x // 32) * 32, 512)
    if rows is None:
        rows = 4 if target >= 256 else 2 if target >= 64 else 1
    if threads is None:
        threads = min(MAX_THREADS, -(-target // (rows * 32)) * 32)
    tiles = -(-block_x // (threads * rows))
    return int(threads), int(rows), int(tiles)


def pair_splits(row_blocks: int, n_pairs: int, n_row_clusters: int, blocks_per_wave: int, *,
                forced: int | None = None, max_splits: int = 8) -> int:
    """Splits ``S`` of every row's pair list: a fuller last wave
    (:func:`arraygen._kernels.tiled.column_splits`) with at least two pairs per split on
    average (``n_pairs / n_row_clusters``), or ``forced``. Known on the host from array shapes
    only (no synchronisation).

    Examples
    --------
    >>> pair_splits(100, 100 * 40, 100, 132 * 16)
    8
    >>> pair_splits(100, 100, 100, 132 * 16)
    1
    """
    if forced is not None:
        return max(1, int(forced))
    mean_pairs = n_pairs / max(1, n_row_clusters)
    cap = max(1, min(max_splits, int(mean_pairs // 2)))
    return max(1, min(cap, column_splits(row_blocks, blocks_per_wave, max_splits)))
