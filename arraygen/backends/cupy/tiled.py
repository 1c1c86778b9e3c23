"""CuPy RawModule launchers of the tiled diffusion kernel (contract: :mod:`arraygen.tiled`).

The CUDA source is ``tiled.cu`` beside this file (see its header for the tiling). Kernels are
compiled on first use, one template instance at a time, through the package's module cache
(:func:`arraygen.backends.cupy.module`), for float and double. Inputs go through
:func:`arraygen.backends.cupy.native` (torch CUDA tensors zero-copy through DLPack,
non-contiguous inputs copied once) and everything runs on the caller's stream
(:func:`arraygen.backends.cupy.stream_for`); row offsets are 64-bit.
"""

from __future__ import annotations

import dataclasses
import math

import cupy as cp
import numpy as np

from ..._kernels.tiled import (
    DIRECT_MAX_D,
    POLY_EXP2_COEFFS,
    merge_column_splits,
    poly_columns,
    split_count,
)
from .._interop import cuda_device_context, like
from .._tuning import Tunable
from . import module, native, sm_count, stream_for

__all__ = ["kernel_logsumexp", "kernel_matvec", "kernel_softmax_matvec"]

SOURCE = "tiled.cu"
_THREADS = 128
_ROWS = 4
_TJ = 64  # columns of y per shared-memory tile: at most one column split per tile
_LOG2E = 1.0 / math.log(2.0)


@dataclasses.dataclass(frozen=True)
class Tuning:
    """Launch tuning of the CuPy tiled kernels (override with ``TUNING.override(...)``).

    The fast-exponent fields select the variants of ``tiled.cu`` for ``d <= 16`` (see its
    "Fast-exponent variants" section); ``tools/gpu_bench_tiled.py`` measures them side by side.
    Matvecs with bandwidths always use the plain kernel.
    """

    splits: int | None = None  #: force this many column splits (tests); None: from occupancy
    #: kernel_matvec: exponent by the law of cosines on y-centred points (D FMAs per pair)
    matvec_cosines: bool = False
    #: kernel_matvec, float32: this share (a multiple of 1/16) of the exponentials evaluated
    #: by polynomial on the FMA units
    matvec_poly_share: float = 0.0
    #: softmax ops: rescale the running sums only when a tile's partial sum passes 2^16; the
    #: two softmax fields below apply with it
    lazy_rescale: bool = True
    softmax_cosines: bool = False
    softmax_poly_share: float = 0.0
    poly_degree: int = 5  #: degree of the polynomial exp2: 3, 4 or 5
    fast_rows: int = 4  #: rows per thread of the fast kernels (4 or 8; 4 when d > 8)
    #: rows per thread of the lazy kernel_softmax_matvec (with right-hand sides; 4 or 8). On an
    #: H100 (N = M = 1e6, d = 3, float32): 8 rows 2.42e12 pairs/s, 4 rows 2.37e12; the
    #: logsumexp keeps ``fast_rows`` (4 rows 2.77e12, 8 rows 2.54e12)
    softmax_rows: int = 8


TUNING = Tunable("cupy.tiled", Tuning())


def _function(expression: str):
    """The compiled kernel ``expression`` (one template instance per module, cached)."""
    return module(SOURCE, (expression,)).get_function(expression)


def _ctype(dtype) -> str:
    return "float" if dtype == cp.float32 else "double"


def _chunks(p: int):
    """(PC, [c0, ...]): right-hand sides handled PC at a time."""
    pc = 1 if p == 1 else 4
    return pc, list(range(0, p, pc))


def _native(a, dtype):
    """A C-contiguous, aligned CuPy array of ``a`` in ``dtype`` (zero-copy when it is one)."""
    c = native(a)
    return c if c.dtype == dtype else c.astype(dtype)


def _arrays(x, y):
    xc = native(x)
    dtype = xc.dtype.type
    return xc, _native(y, dtype), dtype


def _launch(name: str, grid, args) -> None:
    _function(name)(grid, (_THREADS,), args)


def _fast(cosines: bool, share: float, tuning, dtype, d: int,
          rows: int | None = None) -> tuple[str, int]:
    """Template arguments ``COS, NPOLY, DEG, ROWS`` of the fast kernels (``"false, 0, 5, 4"``:
    none of the fast features) and the rows per thread (4 above d = 8: registers)."""
    npoly = poly_columns(share) if dtype == cp.float32 else 0
    degree, rows = tuning.poly_degree, tuning.fast_rows if rows is None else rows
    if degree not in POLY_EXP2_COEFFS:
        raise ValueError(f"`poly_degree` must be one of {sorted(POLY_EXP2_COEFFS)}; "
                         f"got {degree!r}")
    if rows not in (4, 8):
        raise ValueError(f"`fast_rows` must be 4 or 8; got {rows!r}")
    rows = rows if d <= 8 else 4
    return f"{'true' if cosines else 'false'}, {npoly}, {degree if npoly else 5}, {rows}", rows


def _centre(yc):
    """The shift of the cosine variants: the mean of ``y`` (keeps |y'| small: accuracy)."""
    return cp.ascontiguousarray(yc.mean(axis=0))


def _splits(name: str, row_blocks: int, m: int) -> int:
    regs = int(getattr(_function(name), "num_regs", 64) or 64)
    return split_count(row_blocks, m, tile=_TJ, sms=sm_count(cp.cuda.Device().id),
                       regs_per_thread=regs, threads=_THREADS, forced=TUNING.current().splits)


def kernel_matvec(x, y, u, a, b, *, beta):
    """``out[i, k] = sum_j exp(-beta a_i b_j |x_i - y_j|^2) u[j, k]`` (see arraygen.tiled)."""
    with cuda_device_context(x), stream_for(x):
        xc, yc, dtype = _arrays(x, y)
        n, d = xc.shape
        m = yc.shape[0]
        uc = _native(u, dtype)
        p = uc.shape[1]
        bw = a is not None or b is not None
        ac = _native(a, dtype) if a is not None else cp.ones(n, dtype)
        bc = _native(b, dtype) if b is not None else cp.ones(m, dtype)
        ct = _ctype(dtype)
        pc, starts = _chunks(p)
        bw_s = "true" if bw else "false"
        if d <= DIRECT_MAX_D:
            s = dtype(math.sqrt(beta * _LOG2E))
            tuning = TUNING.current()
            fast, rows = _fast(tuning.matvec_cosines, tuning.matvec_poly_share, tuning, dtype, d)
            plain = bw or fast == f"false, 0, 5, {_ROWS}"
            if plain:
                name = f"tiled_matvec_direct<{ct}, {d}, {pc}, {bw_s}>"
                rows = _ROWS
            else:
                name = f"tiled_matvec_fast<{ct}, {d}, {pc}, {fast}>"
                ctr = _centre(yc)
            row_blocks = -(-n // (_THREADS * rows))
            splits = _splits(name, row_blocks, m)
            chunk = -(-m // splits)
            part = cp.empty((splits, n, p), dtype)
            for c0 in starts:
                rest = (np.int64(n), np.int64(m), np.int64(chunk), np.int32(p), np.int32(c0), s,
                        part)
                _launch(name, (row_blocks, splits),
                        (xc, yc, uc, ac, bc, *rest) if plain else (xc, yc, uc, ctr, *rest))
            out = part[0] if splits == 1 else part.sum(axis=0)
        else:
            out = cp.empty((n, p), dtype)
            yy = cp.sum(yc * yc, axis=1)
            name = f"tiled_matvec_cos<{ct}, {pc}, {bw_s}>"
            grid = -(-n // _THREADS)
            for c0 in starts:
                _launch(name, (grid,), (xc, yc, yy, uc, ac, bc, np.int64(n), np.int64(m),
                                     np.int32(d), np.int32(p), np.int32(c0),
                                     dtype(beta * _LOG2E), out))
        return like(out, x)  # on the caller's stream: DLPack hands over without a sync


def _softmax(x, y, v, w, beta):
    xc, yc, dtype = _arrays(x, y)
    n, d = xc.shape
    m = yc.shape[0]
    w2 = cp.zeros(m, dtype) if w is None else _native(w, dtype) * dtype(_LOG2E)
    if v is None:
        vc, p, pc, starts = cp.zeros((m, 1), dtype), 0, 0, [0]
    else:
        vc = _native(v, dtype)
        p = vc.shape[1]
        pc, starts = _chunks(p)
    ct = _ctype(dtype)
    if d <= DIRECT_MAX_D:
        s = dtype(math.sqrt(beta * _LOG2E))
        tuning = TUNING.current()
        lazy = tuning.lazy_rescale
        if lazy:
            fast, rows = _fast(tuning.softmax_cosines, tuning.softmax_poly_share, tuning, dtype,
                               d, tuning.softmax_rows if p else None)
            name = f"tiled_softmax_lazy<{ct}, {d}, {pc}, {fast}>"
            ctr = _centre(yc)
        else:
            name, rows = f"tiled_softmax_direct<{ct}, {d}, {pc}>", _ROWS
        row_blocks = -(-n // (_THREADS * rows))
        splits = _splits(name, row_blocks, m)
        chunk = -(-m // splits)
        acc = cp.empty((splits, n, max(p, 1)), dtype)
        mx = cp.empty((splits, n), dtype)
        sm = cp.empty((splits, n), dtype)
        for c0 in starts:
            head = (xc, yc, vc, w2, ctr) if lazy else (xc, yc, vc, w2)
            _launch(name, (row_blocks, splits),
                    (*head, np.int64(n), np.int64(m), np.int64(chunk), np.int32(p),
                     np.int32(c0), s, acc, mx, sm))
        return merge_column_splits(cp, acc[:, :, :p], mx, sm)
    out = cp.empty((n, max(p, 1)), dtype)
    lse = cp.empty(n, dtype)
    # law of cosines: one row per thread, no column splits
    yy = cp.sum(yc * yc, axis=1)
    name = f"tiled_softmax_cos<{ct}, {pc}>"
    grid = -(-n // _THREADS)
    for c0 in starts:
        _launch(name, (grid,), (xc, yc, yy, vc, w2, np.int64(n), np.int64(m), np.int32(d),
                             np.int32(p), np.int32(c0), dtype(beta * _LOG2E), out, lse))
    return out[:, :p], lse


def kernel_logsumexp(x, y, w, *, beta):
    """``lse[i] = log sum_j exp(w_j - beta |x_i - y_j|^2)`` (see arraygen.tiled)."""
    with cuda_device_context(x), stream_for(x):
        _, lse = _softmax(x, y, None, w, beta)
        return like(lse, x)


def kernel_softmax_matvec(x, y, v, w, *, beta):
    """Online-softmax average of ``v`` and the row log-sum-exp (see arraygen.tiled)."""
    with cuda_device_context(x), stream_for(x):
        out, lse = _softmax(x, y, v, w, beta)
        return like(cp.ascontiguousarray(out), x), like(lse, x)
