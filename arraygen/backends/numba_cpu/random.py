"""The Philox stream as computed by the Numba CPU kernels' own code.

Tests compare these with :func:`arraygen.random.bits` / :func:`arraygen.random.normal` to prove
that the kernels draw exactly the stream of the key.
"""

from __future__ import annotations

import numba
import numpy as np

from .._interop import float_dtype_name, like as _like
from . import philox, thread_safe


@numba.njit(parallel=True, cache=True)
def _words(c2, c3, k0, k1, out):  # pragma: no cover - compiled
    n = out.shape[0]
    for b in numba.prange((n + 3) // 4):
        w = philox.philox4x32(b, c2, c3, k0, k1)
        for lane in range(4):
            if 4 * b + lane < n:
                out[4 * b + lane] = w[lane]


@numba.njit(parallel=True, cache=True)
def _normals(c2, c3, k0, k1, one, out):  # pragma: no cover - compiled
    n = out.shape[0]
    for b in numba.prange((n + 3) // 4):
        w0, w1, w2, w3 = philox.philox4x32(b, c2, c3, k0, k1)
        z = philox.box_muller(w0, w1, w2, w3, one)
        for lane in range(4):
            if 4 * b + lane < n:
                out[4 * b + lane] = z[lane]


@thread_safe
def stream_words(key, n: int, like):
    """uint32 words ``0..n-1`` of ``key``'s stream, as an array of ``like``'s library (host)."""
    out = np.empty(int(n), dtype=np.uint32)
    _words(*philox.key_words(key), out)
    return _like(out, like)


@thread_safe
def stream_normal(key, n: int, like, dtype):
    """Standard normals ``0..n-1`` of ``key``'s stream in ``dtype`` (float32/float64 name)."""
    dt = np.dtype(float_dtype_name(dtype))
    out = np.empty(int(n), dtype=dt)
    _normals(*philox.key_words(key), dt.type(1), out)
    return _like(out, like)
