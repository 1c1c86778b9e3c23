"""Gibbs contract shared by the op module and every backend."""

from __future__ import annotations

import numpy as np


def symmetric_offsets(offsets, shape):
    """Periodic offsets reduced to [-n/2, n/2) per axis: the same neighbours on the torus.

    Kernels wrap ``i + o`` with one conditional add or subtract; this guarantees it suffices.
    """
    return tuple(tuple(((d + n // 2) % n) - n // 2 for d, n in zip(o, shape)) for o in offsets)


def default_origin(shape4) -> tuple[int, int, int, int]:
    """The ``origin`` of a whole array (B, C, H, W): element ``e`` is the site's flat index."""
    _, C, H, W = (int(v) for v in shape4)
    return (0, C * H * W, H * W, W)


def row_starts(shape4, origin) -> np.ndarray:
    """int64 (B * C * H,): the stream element of site x = 0 of every grid row (b, c, y).

    ``origin = (e0, chain_stride, plane_stride, row_stride)`` (the launcher contract in
    :mod:`arraygen.gibbs`): the uniform of local site (b, c, y, x) of a sweep is stream element
    ``e = e0 + b chain_stride + c plane_stride + y row_stride + x`` >= 0 (so a window of a
    larger array, e.g. a Dask chunk with its halo inside an open grid, draws the numbers of the
    whole call): word ``e mod 4`` of Philox block ``e // 4``. Windows whose halos wrap around
    a torus are not affine: their callers inject the uniforms of the wrapped sites.
    """
    B, C, H, _ = (int(v) for v in shape4)
    e0, sb, sc, sy = (int(v) for v in origin)
    b = np.arange(B, dtype=np.int64)[:, None, None] * sb
    c = np.arange(C, dtype=np.int64)[None, :, None] * sc
    y = np.arange(H, dtype=np.int64)[None, None, :] * sy
    return np.ascontiguousarray((e0 + b + c + y).reshape(-1))


def element_indices(shape4, origin) -> np.ndarray:
    """int64 (B, C, H, W): the stream element ``e`` of every site (see :func:`row_starts`)."""
    W = int(shape4[3])
    rows = row_starts(shape4, origin)
    return (rows[:, None] + np.arange(W, dtype=np.int64)[None, :]).reshape(tuple(shape4))
