"""Numba-CUDA kernels of the Gaussian hot path (launcher contract: :mod:`arraygen.gaussian`).

Two kernels filter one axis of a C-contiguous (outer, n, inner) view, one thread per output
element on a 2-D grid (coalesced axis x, lines on axis y with a grid-stride loop): one for
``inner > 1`` and one for the last axis. The boundary mode is resolved on the host into a table of n + 2r
source indices (-1: cval, :func:`arraygen.gaussian.source_indices`) and the taps are an
array, so a new sigma never recompiles. CuPy and torch CUDA arrays are used in place through
``__cuda_array_interface__``; under ``NUMBA_ENABLE_CUDASIM=1`` host NumPy arrays run in
Numba's simulator.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from ..._kernels.gaussian import source_indices
from .. import _interop
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
        for axis, w in zip(axes, weights):
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
    return _interop.like(a, x)
