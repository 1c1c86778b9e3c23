"""Numba-CUDA kernels of the Gaussian hot path (launcher contract: :mod:`arraygen.gaussian`).

Passes over the last two axes with radii up to :data:`FUSED_MAX_RADIUS` run fused
(``Tuning.fused=True``, the default): one block per TH x TW output tile of a plane stages the
tile plus its halo in shared memory (source rows and columns from the mode's index tables),
runs the vertical pass into a second shared tile and the horizontal pass from it, and writes the
tile: one read and one write of the image (the halo re-reads hit L2). The kernel is compiled per
(radius pair, dtype) with the tile shape as constants.

Otherwise two kernels filter one axis of a C-contiguous (outer, n, inner) view, one thread per output
element on a 2-D grid (coalesced axis x, lines on axis y with a grid-stride loop): one for
``inner > 1`` and one for the last axis. The boundary mode is resolved on the host into a table of n + 2r
source indices (-1: cval, :func:`arraygen.gaussian.source_indices`) and the taps are an
array, so a new sigma never recompiles. CuPy and torch CUDA arrays are used in place through
``__cuda_array_interface__``; under ``NUMBA_ENABLE_CUDASIM=1`` host NumPy arrays run in
Numba's simulator.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numba
import numpy as np
from numba import cuda

from ..._kernels.gaussian import source_indices
from .. import _interop, is_simulated
from .._tuning import Tunable
from . import contiguous, device_view, empty_like, jit, stream_of, threads_per_block


@jit
def _pass_inner_kernel(x, y, w, src, n, inner, cval):
    """Flat x, y as (lines = outer * n, inner): y[o, i, j] = sum_k w[k] x[o, src[i + k], j].

    Grid axis 0 runs over j (coalesced), axis 1 over lines (grid-stride).
    """
    lines = x.shape[0] // inner
    j = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    line = cuda.blockIdx.y
    while line < lines and j < inner:
        i = line % n
        base = (line - i) * inner + j
        acc = cval - cval  # zero in the dtype of cval (float32 or float64)
        for k in range(w.shape[0]):
            s = src[i + k]
            acc += w[k] * (x[base + s * inner] if s >= 0 else cval)
        y[line * inner + j] = acc
        line += cuda.gridDim.y


@jit
def _pass_last_kernel(x, y, w, src, n, cval):
    """Flat x, y as (outer, n): y[o, i] = sum_k w[k] x[o, src[i + k]] (axis 0 over i)."""
    outer = x.shape[0] // n
    i = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    o = cuda.blockIdx.y
    while o < outer and i < n:
        base = o * n
        acc = cval - cval
        for k in range(w.shape[0]):
            s = src[i + k]
            acc += w[k] * (x[base + s] if s >= 0 else cval)
        y[base + i] = acc
        o += cuda.gridDim.y


_TABLES: dict = {}
_MAX_GRID_Y = 65535
#: Largest radius per axis of the fused 2-D kernel.
FUSED_MAX_RADIUS = 16
_SMEM_LIMIT = 48 * 1024


@dataclasses.dataclass(frozen=True)
class Tuning:
    """Launch tuning of the Numba-CUDA Gaussian filter (override with ``TUNING.override(...)``)."""

    fused: bool = True  #: fuse the passes over the last two axes in shared memory
    tile_w: int = 128  #: output columns per fused tile (the simulator uses 8)
    tile_h: int = 16  #: most output rows per fused tile (halved until the tiles fit)
    fused_threads: int = 256  #: threads per fused block, 32 x (threads / 32) (simulator: 32)
    vertical_rows: int = 1  #: rows per work item of the vertical pass (4: register blocking)


TUNING = Tunable("numba_cuda.gaussian", Tuning())


def _fused_shape(itemsize: int, ry: int, rx: int, tuning: Tuning) -> tuple[int, int] | None:
    """(TH, TW) of the fused tiles: the two shared tiles fit in 48 KiB, or None."""
    if is_simulated("numba_cuda"):
        return 4, 8
    tw, th = tuning.tile_w, tuning.tile_h
    while th >= 4:
        if ((th + 2 * ry) + th) * (tw + 2 * rx) * itemsize <= _SMEM_LIMIT:
            return th, tw
        th //= 2
    return None


@functools.cache
def _fused_kernel(dtype_name: str, ry: int, rx: int, th: int, tw: int, vb: int = 1):
    """The fused kernel for one radius pair and tile shape (constants of the compiled code);
    ``vb`` > 1: each work item of the vertical pass makes ``vb`` rows from ``vb + 2 ry``
    shared loads (register blocking) instead of one row from ``2 ry + 1``."""
    nb_dtype = numba.float32 if dtype_name == "float32" else numba.float64
    sh, sw = th + 2 * ry, tw + 2 * rx
    ny, nx = 2 * ry + 1, 2 * rx + 1
    vb = vb if th % vb == 0 else 1
    blocked = vb > 1

    @jit
    def fused(x, y, wy, wx, srow, scol, h, w, tiles_x, tiles_y, cval):
        """y[p, i, j] = sum_a wy[a] sum_b wx[b] x[p, srow[i + a], scol[j + b]] (tables padded)."""
        s = cuda.shared.array((sh, sw), nb_dtype)
        m = cuda.shared.array((th, sw), nb_dtype)
        swy = cuda.local.array(ny, nb_dtype)  # taps in registers (constant indices once the
        swx = cuda.local.array(nx, nb_dtype)  # fixed-length tap loops are unrolled)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        nx_t = cuda.blockDim.x
        ny_t = cuda.blockDim.y
        blk = np.int64(cuda.blockIdx.x)
        bx = blk % tiles_x
        rest = blk // tiles_x
        by = rest % tiles_y
        base = (rest // tiles_y) * h * w
        x0 = bx * tw
        y0 = by * th
        for k in range(nx):
            swx[k] = wx[k]
        for k in range(ny):
            swy[k] = wy[k]
        for r in range(ty, sh, ny_t):  # stage the tile and its halo (2-D loops: no division)
            gr = srow[y0 + r]
            for c in range(tx, sw, nx_t):
                gc = scol[x0 + c]
                s[r, c] = x[base + gr * w + gc] if gr >= 0 and gc >= 0 else cval
        cuda.syncthreads()
        if blocked:  # vertical pass, vb rows per work item
            accs = cuda.local.array(vb, nb_dtype)
            for qb in range(ty * vb, th, ny_t * vb):
                for c in range(tx, sw, nx_t):
                    for o in range(vb):
                        accs[o] = 0
                    for j in range(vb + 2 * ry):
                        val = s[qb + j, c]
                        for o in range(vb):
                            if j - o >= 0 and j - o <= 2 * ry:
                                accs[o] += swy[j - o] * val
                    for o in range(vb):
                        m[qb + o, c] = accs[o]
        else:
            for q in range(ty, th, ny_t):  # vertical pass
                for c in range(tx, sw, nx_t):
                    acc = swy[ry] * s[q + ry, c]
                    for k in range(ry):
                        acc += swy[k] * (s[q + k, c] + s[q + 2 * ry - k, c])
                    m[q, c] = acc
        cuda.syncthreads()
        for q in range(ty, th, ny_t):  # horizontal pass and the write
            if y0 + q < h:
                row = base + (y0 + q) * w + x0
                for p in range(tx, tw, nx_t):
                    if x0 + p < w:
                        acc = swx[rx] * m[q, p + rx]
                        for k in range(rx):
                            acc += swx[k] * (m[q, p + k] + m[q, p + 2 * rx - k])
                        y[row + p] = acc

    return fused


@functools.lru_cache(maxsize=256)
def _padded_sources(n: int, r: int, mode: str, length: int) -> np.ndarray:
    """Source indices of positions -r .. length - r - 1 (beyond the axis: 0, never written)."""
    src = np.zeros(length, dtype=np.int64)
    tab = source_indices(n, r, mode)
    src[:len(tab)] = tab[:length]
    return src


def _table(values: np.ndarray, host: bool, stream):
    """Small constant tables on the device, cached (a host-to-device copy would synchronise)."""
    if host:
        return values
    key = (cuda.get_current_device().id, values.dtype.char, values.tobytes())
    t = _TABLES.get(key)
    if t is None:
        if len(_TABLES) > 512:
            _TABLES.clear()
        t = _TABLES[key] = cuda.to_device(values, stream=stream)
    return t


def gaussian_filter(x, weights, *, axes, mode, cval):
    """Launcher: see the contract in :mod:`arraygen.gaussian`."""
    host = isinstance(x, np.ndarray) or not hasattr(x, "__cuda_array_interface__")
    threads = threads_per_block()
    with _interop.cuda_device_context(x):
        a = contiguous(_interop.to_numpy_view(x) if host else x)
        dtype = np.float32 if "float32" in str(a.dtype) else np.float64
        stream = stream_of(a)
        radius = {ax: (len(w) - 1) // 2 for ax, w in zip(axes, weights)}
        tuning = TUNING.current()
        last2 = (a.ndim - 2, a.ndim - 1)
        shape2 = None
        if (tuning.fused and a.ndim >= 2 and all(ax in radius for ax in last2)
                and all(1 <= radius[ax] <= FUSED_MAX_RADIUS for ax in last2)):
            shape2 = _fused_shape(np.dtype(dtype).itemsize, radius[last2[0]], radius[last2[1]],
                                  tuning)
        for axis, w in zip(axes, weights):
            if shape2 is not None and axis in last2:
                continue
            shape = tuple(a.shape)
            r = (len(w) - 1) // 2
            taps = _table(np.array(w, dtype=dtype), host, stream)
            src = _table(source_indices(shape[axis], r, mode).astype(np.int64), host, stream)
            out = empty_like(a)
            n = shape[axis]
            inner = math.prod(shape[axis + 1:])
            outer = math.prod(shape[:axis])
            flat_x, flat_y = device_view(a.reshape(-1)), device_view(out.reshape(-1))
            if inner == 1:
                grid = ((n + threads - 1) // threads, min(outer, _MAX_GRID_Y))
                _pass_last_kernel[grid, threads, stream](flat_x, flat_y, taps, src, np.int64(n),
                                                         dtype(cval))
            else:
                grid = ((inner + threads - 1) // threads, min(outer * n, _MAX_GRID_Y))
                _pass_inner_kernel[grid, threads, stream](flat_x, flat_y, taps, src,
                                                          np.int64(n), np.int64(inner),
                                                          dtype(cval))
            a = out
        if shape2 is not None:
            a = _fused(a, weights[axes.index(last2[0])], weights[axes.index(last2[1])], mode,
                       cval, dtype, shape2, host, stream, tuning)
    return _interop.like(a, x)


def _fused(a, wy, wx, mode, cval, dtype, shape2, host, stream, tuning):
    """Both passes over the last two axes of the C-contiguous ``a`` in one kernel."""
    th, tw = shape2
    h, w = int(a.shape[-2]), int(a.shape[-1])
    ry, rx = (len(wy) - 1) // 2, (len(wx) - 1) // 2
    tiles_y, tiles_x = -(-h // th), -(-w // tw)
    planes = int(np.prod(a.shape[:-2], dtype=np.int64)) if a.ndim > 2 else 1
    srow = _table(_padded_sources(h, ry, mode, tiles_y * th + 2 * ry), host, stream)
    scol = _table(_padded_sources(w, rx, mode, tiles_x * tw + 2 * rx), host, stream)
    wyd = _table(np.array(wy, dtype=dtype), host, stream)
    wxd = _table(np.array(wx, dtype=dtype), host, stream)
    out = empty_like(a)
    kern = _fused_kernel(np.dtype(dtype).name, ry, rx, th, tw, tuning.vertical_rows)
    threads = 32 if is_simulated("numba_cuda") else tuning.fused_threads
    block = (min(32, tw), max(1, threads // min(32, tw)))
    kern[planes * tiles_x * tiles_y, block, stream](
        device_view(a.reshape(-1)), device_view(out.reshape(-1)), wyd, wxd, srow, scol,
        np.int64(h), np.int64(w), np.int64(tiles_x), np.int64(tiles_y), dtype(cval))
    return out
