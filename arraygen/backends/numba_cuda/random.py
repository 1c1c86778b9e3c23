"""The Philox stream as computed inside Numba-CUDA kernels (the same device functions the Fisher
kernels call); tests compare it with :func:`arraygen.random.bits` and
:func:`arraygen.random.normal`."""

from __future__ import annotations

import functools

import numpy as np
from numba import cuda

from .. import _interop
from .._interop import float_dtype_name
from .. import _philox as ph
from . import device_view, empty, jit, stream_of, threads_per_block


@functools.lru_cache(maxsize=None)
def _kernels(dtype_name: str):
    philox = jit(device=True)(ph.py_philox4x32)
    box_muller = jit(device=True)(
        ph.py_box_muller_f32 if dtype_name == "float32" else ph.py_box_muller_f64)

    @jit
    def words(c2, c3, k0, k1, out):
        b = np.int64(cuda.grid(1))
        n = out.shape[0]
        while 4 * b < n:
            w0, w1, w2, w3 = philox(b, c2, c3, k0, k1)
            for lane in range(4):
                if 4 * b + lane < n:
                    out[4 * b + lane] = w0 if lane == 0 else (
                        w1 if lane == 1 else (w2 if lane == 2 else w3))
            b += np.int64(cuda.gridsize(1))

    @jit
    def normals(c2, c3, k0, k1, out):
        b = np.int64(cuda.grid(1))
        n = out.shape[0]
        while 4 * b < n:
            w0, w1, w2, w3 = philox(b, c2, c3, k0, k1)
            z0, z1, z2, z3 = box_muller(w0, w1, w2, w3)
            for lane in range(4):
                if 4 * b + lane < n:
                    out[4 * b + lane] = z0 if lane == 0 else (
                        z1 if lane == 1 else (z2 if lane == 2 else z3))
            b += np.int64(cuda.gridsize(1))

    return words, normals


def _native_like(like):
    """A native array beside ``like`` (CuPy or torch CUDA, or NumPy in the simulator)."""
    if isinstance(like, np.ndarray) or type(like).__module__.startswith(("torch", "cupy")):
        return like
    return np.asarray(_interop.to_numpy_view(like))


def _launch(kernel, key, out):
    n = int(out.shape[0])
    if n:
        tpb = threads_per_block()
        blocks = max(1, min(-(-n // (4 * tpb)), 4096))
        kernel[blocks, tpb, stream_of(out)](*ph.key_words(key), device_view(out))


def stream_words(key, n: int, like):
    """uint32 words ``0..n-1`` of ``key``'s stream, beside ``like`` (its library and device)."""
    native = _native_like(like)
    with _interop.cuda_device_context(native):
        out = empty(native, int(n), np.uint32)
        _launch(_kernels("float32")[0], key, out)
    return _interop.like(out, like)


def stream_normal(key, n: int, like, dtype):
    """Standard normals ``0..n-1`` of ``key``'s stream in ``dtype``, beside ``like``."""
    name = float_dtype_name(dtype)
    native = _native_like(like)
    with _interop.cuda_device_context(native):
        out = empty(native, int(n), name)
        _launch(_kernels(name)[1], key, out)
    return _interop.like(out, like)
