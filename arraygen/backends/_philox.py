"""Philox4x32-10 and its uniform/normal conversions as plain scalar Python: the one Philox
source the Numba backends share.

The functions use only ``numpy.uint64``/``float32``/``float64`` scalars and :mod:`math`, so the
same source compiles with ``numba.njit`` (:mod:`arraygen.backends.numba_cpu.philox`) and with
``numba.cuda.jit(device=True)`` (the :mod:`arraygen.backends.numba_cuda` kernels), and runs as
plain Python in the CUDA simulator. This module imports neither numba nor any backend package.
Words are uint32 values held in uint64 scalars (so the 32x32 -> 64-bit products never
overflow). The stream layout and the conversions are those of :mod:`arraygen.random`: element
``e`` uses word ``e % 4`` of the block with counter ``(b & 0xffffffff, b >> 32, c2, c3)``,
``b = e // 4``, and key ``(k0, k1)``.
"""

from __future__ import annotations

import math

import numpy as np

M0 = np.uint64(0xD2511F53)
M1 = np.uint64(0xCD9E8D57)
W0 = np.uint64(0x9E3779B9)
W1 = np.uint64(0xBB67AE85)
MASK32 = np.uint64(0xFFFFFFFF)
SHIFT32 = np.uint64(32)
SHIFT9 = np.uint64(9)
TWO_PI_F32 = np.float32(2.0 * math.pi)
TWO_PI_F64 = np.float64(2.0 * math.pi)
HALF_F32 = np.float32(0.5)
SCALE_F32 = np.float32(2.0**-23)
MINUS2_F32 = np.float32(-2.0)


def py_philox4x32(b, c2, c3, k0, k1):
    """The 4 words (uint64 scalars holding uint32) of block ``b`` (int64) of a stream.

    ``c2, c3, k0, k1`` are uint64 scalars holding uint32 values (counter words 2/3, key).
    """
    bu = np.uint64(b)
    c0 = bu & MASK32
    c1 = bu >> SHIFT32
    for _ in range(10):
        p0 = M0 * c0
        p1 = M1 * c2
        n0 = (p1 >> SHIFT32) ^ c1 ^ k0
        n2 = (p0 >> SHIFT32) ^ c3 ^ k1
        c1 = p1 & MASK32
        c3 = p0 & MASK32
        c0 = n0
        c2 = n2
        k0 = (k0 + W0) & MASK32
        k1 = (k1 + W1) & MASK32
    return c0, c1, c2, c3


def py_uniform_f32(w):
    """float32 uniform in (0, 1): ``((w >> 9) + 0.5) * 2**-23`` (exact)."""
    return (np.float32(w >> SHIFT9) + HALF_F32) * SCALE_F32


def py_uniform_f64(w):
    """float64 uniform in (0, 1): ``(w + 0.5) * 2**-32`` (exact)."""
    return (np.float64(w) + 0.5) * 2.0**-32


def py_box_muller_f32(w0, w1, w2, w3):
    """Four float32 standard normals from one block's words (lanes 0..3).

    The uniform conversion is written out (not a call) so the function compiles standalone.
    """
    u0 = (np.float32(w0 >> SHIFT9) + HALF_F32) * SCALE_F32
    u1 = (np.float32(w1 >> SHIFT9) + HALF_F32) * SCALE_F32
    u2 = (np.float32(w2 >> SHIFT9) + HALF_F32) * SCALE_F32
    u3 = (np.float32(w3 >> SHIFT9) + HALF_F32) * SCALE_F32
    r01 = np.float32(math.sqrt(np.float32(MINUS2_F32 * np.float32(math.log(u0)))))
    r23 = np.float32(math.sqrt(np.float32(MINUS2_F32 * np.float32(math.log(u2)))))
    t1 = np.float32(TWO_PI_F32 * u1)
    t3 = np.float32(TWO_PI_F32 * u3)
    return (np.float32(r01 * np.float32(math.cos(t1))), np.float32(r01 * np.float32(math.sin(t1))),
            np.float32(r23 * np.float32(math.cos(t3))), np.float32(r23 * np.float32(math.sin(t3))))


def py_box_muller_f64(w0, w1, w2, w3):
    """Four float64 standard normals from one block's words (lanes 0..3)."""
    u0 = (np.float64(w0) + 0.5) * 2.0**-32
    u1 = (np.float64(w1) + 0.5) * 2.0**-32
    u2 = (np.float64(w2) + 0.5) * 2.0**-32
    u3 = (np.float64(w3) + 0.5) * 2.0**-32
    r01 = math.sqrt(-2.0 * math.log(u0))
    r23 = math.sqrt(-2.0 * math.log(u2))
    t1 = TWO_PI_F64 * u1
    t3 = TWO_PI_F64 * u3
    return r01 * math.cos(t1), r01 * math.sin(t1), r23 * math.cos(t3), r23 * math.sin(t3)


def key_words(key) -> tuple[np.uint64, np.uint64, np.uint64, np.uint64]:
    """``(c2, c3, k0, k1)`` of an :class:`arraygen.random.Key` as uint64 scalars."""
    c2, c3 = key.counter_words
    k0, k1 = key.key_words
    return np.uint64(c2), np.uint64(c3), np.uint64(k0), np.uint64(k1)
