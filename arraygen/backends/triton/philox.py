"""Philox4x32-10 and its uniform / Box-Muller conversions as Triton device functions.

Exactly the stream of :mod:`arraygen.random` (not ``tl.rand``, whose key/counter layout
differs): element ``e`` uses word ``e % 4`` of the block with counter
``(b & 0xffffffff, b >> 32, c2, c3)``, ``b = e // 4``, and key ``(k0, k1)``. Transcendentals go
through libdevice (correctly rounded sqrt, accurate log/sin/cos) so normals agree with the other
backends to a few ulps.
"""

from __future__ import annotations

import triton
import triton.language as tl
from triton.language.extra import libdevice

from .. import is_simulated

PHILOX_M0 = tl.constexpr(0xD2511F53)
PHILOX_M1 = tl.constexpr(0xCD9E8D57)
PHILOX_W0 = tl.constexpr(0x9E3779B9)
PHILOX_W1 = tl.constexpr(0xBB67AE85)


@triton.jit
def key_words(c2, c3, k0, k1):
    """The four stream key words as uint32 scalars.

    Kernels take them as int arguments in [0, 2**32) listed in ``do_not_specialize`` (so they
    arrive as int32/int64 scalars, never as constants).
    """
    return c2.to(tl.uint32), c3.to(tl.uint32), k0.to(tl.uint32), k1.to(tl.uint32)


@triton.jit
def philox4x32(block, c2, c3, k0, k1):
    """Words of Philox blocks ``block`` (int64 tensor) for uint32 key words; 4 uint32 tensors."""
    c0 = (block & 0xFFFFFFFF).to(tl.uint32)
    c1 = (block >> 32).to(tl.uint32)
    c2 = tl.zeros_like(c0) + c2
    c3 = tl.zeros_like(c0) + c3
    for _ in tl.static_range(10):
        hi0 = tl.umulhi(c0, PHILOX_M0)
        hi1 = tl.umulhi(c2, PHILOX_M1)
        lo0 = tl.mul(c0, PHILOX_M0, sanitize_overflow=False)
        lo1 = tl.mul(c2, PHILOX_M1, sanitize_overflow=False)
        c0 = hi1 ^ c1 ^ k0
        c2 = hi0 ^ c3 ^ k1
        c1 = lo1
        c3 = lo0
        k0 = tl.add(k0, PHILOX_W0, sanitize_overflow=False)
        k1 = tl.add(k1, PHILOX_W1, sanitize_overflow=False)
    return c0, c1, c2, c3


@triton.jit
def uniform(w, IS_F64: tl.constexpr):
    """Uniform in (0, 1): float32 ``((w >> 9) + 0.5) * 2**-23``, float64 ``(w + 0.5) * 2**-32``."""
    if IS_F64:
        return (w.to(tl.float64) + 0.5) * 2.3283064365386963e-10
    else:
        return ((w >> 9).to(tl.float32) + 0.5) * 1.1920928955078125e-07


@triton.jit
def _box_muller_libdevice(w0, w1, w2, w3, IS_F64: tl.constexpr):
    u0 = uniform(w0, IS_F64)
    u1 = uniform(w1, IS_F64)
    u2 = uniform(w2, IS_F64)
    u3 = uniform(w3, IS_F64)
    r01 = libdevice.sqrt_rn(-2.0 * libdevice.log(u0))
    r23 = libdevice.sqrt_rn(-2.0 * libdevice.log(u2))
    t1 = 6.283185307179586 * u1
    t3 = 6.283185307179586 * u3
    return (r01 * libdevice.cos(t1), r01 * libdevice.sin(t1), r23 * libdevice.cos(t3),
            r23 * libdevice.sin(t3))


@triton.jit
def _box_muller_interpreted(w0, w1, w2, w3, IS_F64: tl.constexpr):
    u0 = uniform(w0, IS_F64)
    u1 = uniform(w1, IS_F64)
    u2 = uniform(w2, IS_F64)
    u3 = uniform(w3, IS_F64)
    if IS_F64:
        r01 = tl.sqrt(-2.0 * tl.log(u0))
        r23 = tl.sqrt(-2.0 * tl.log(u2))
    else:
        r01 = tl.sqrt_rn(-2.0 * tl.log(u0))
        r23 = tl.sqrt_rn(-2.0 * tl.log(u2))
    t1 = 6.283185307179586 * u1
    t3 = 6.283185307179586 * u3
    return r01 * tl.cos(t1), r01 * tl.sin(t1), r23 * tl.cos(t3), r23 * tl.sin(t3)


#: ``box_muller(w0, w1, w2, w3, IS_F64)``: four normal tensors (lanes 0..3 of each block).
#: Compiled kernels use libdevice; the interpreter has no libdevice and uses NumPy's math.
box_muller = _box_muller_interpreted if is_simulated("triton") else _box_muller_libdevice
