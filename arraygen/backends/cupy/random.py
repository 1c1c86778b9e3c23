"""The Philox stream as computed by the CuPy kernels' device code (``philox.cuh`` through the
``philox_stream_*`` kernels of ``fisher.cu``); tests compare it with :func:`arraygen.random.bits`
and :func:`arraygen.random.normal`."""

from __future__ import annotations

import numpy as np

from .. import _interop
from .._interop import float_dtype_name
from . import module, stream_for

_NAMES = ("philox_stream_words", "philox_stream_normal<float>", "philox_stream_normal<double>")


def _launch(name: str, out, key) -> None:
    n = int(out.size)
    if n:
        c2, c3 = key.counter_words
        k0, k1 = key.key_words
        blocks = int(max(1, min(-(-n // (4 * 256)), 4096)))
        module("fisher.cu", _NAMES).get_function(name)(
            (blocks,), (256,),
            (out, np.int64(n), np.uint32(c2), np.uint32(c3), np.uint32(k0), np.uint32(k1)))


def stream_words(key, n: int, like):
    """uint32 words ``0..n-1`` of ``key``'s stream, on ``like``'s device and in its library."""
    import cupy

    with _interop.cuda_device_context(like), stream_for(like):
        out = cupy.empty(int(n), dtype=cupy.uint32)
        _launch("philox_stream_words", out, key)
    return _interop.like(out, like)


def stream_normal(key, n: int, like, dtype):
    """Standard normals ``0..n-1`` of ``key``'s stream in ``dtype`` (float32/float64)."""
    import cupy

    name = float_dtype_name(dtype)
    with _interop.cuda_device_context(like), stream_for(like):
        out = cupy.empty(int(n), dtype=name)
        _launch("philox_stream_normal<float>" if name == "float32"
                else "philox_stream_normal<double>", out, key)
    return _interop.like(out, like)
