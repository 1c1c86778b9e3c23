"""The Philox stream as computed by the Triton device functions the Fisher kernels use; tests
compare it with :func:`arraygen.random.bits` and :func:`arraygen.random.normal`."""

from __future__ import annotations

import triton
import triton.language as tl

from .. import _interop
from .._interop import float_dtype_name
from . import philox

QUADS = 256


@triton.jit(do_not_specialize=["c2", "c3", "k0", "k1"])
def _stream_kernel(out_ptr, n, c2, c3, k0, k1, Q: tl.constexpr, WORDS: tl.constexpr,
                   IS_F64: tl.constexpr):
    q = tl.program_id(0).to(tl.int64) * Q + tl.arange(0, Q)
    idx = q[:, None] * 4 + tl.arange(0, 4)[None, :]
    lane = tl.arange(0, 4)[None, :]
    c2, c3, k0, k1 = philox.key_words(c2, c3, k0, k1)
    w0, w1, w2, w3 = philox.philox4x32(q, c2, c3, k0, k1)
    if WORDS:
        a0, a1, a2, a3 = w0, w1, w2, w3
    else:
        a0, a1, a2, a3 = philox.box_muller(w0, w1, w2, w3, IS_F64)
    val = tl.where(lane == 0, a0[:, None],
                   tl.where(lane == 1, a1[:, None], tl.where(lane == 2, a2[:, None], a3[:, None])))
    tl.store(out_ptr + idx, val, mask=idx < n)


def _run(key, n: int, like, dtype_name: str):
    import torch

    ref = _interop.to_torch(like) if not isinstance(like, torch.Tensor) else like
    n = int(n)
    with _interop.cuda_device_context(ref):
        words = dtype_name == "uint32"
        # torch has no full uint32 arithmetic: the kernel writes the words into int64 slots
        out = torch.empty(n, dtype=torch.int64 if words else getattr(torch, dtype_name),
                          device=ref.device)
        if n:
            c2, c3 = key.counter_words
            k0, k1 = key.key_words
            grid = (triton.cdiv(triton.cdiv(n, 4), QUADS),)
            _stream_kernel[grid](out, n, c2, c3, k0, k1, Q=QUADS, WORDS=words,
                                 IS_F64=dtype_name == "float64")
        if words:
            out = out.to(torch.uint32)
    return _interop.like(out, like)


def stream_words(key, n: int, like):
    """uint32 words ``0..n-1`` of ``key``'s stream, beside ``like`` (its library and device)."""
    return _run(key, n, like, "uint32")


def stream_normal(key, n: int, like, dtype):
    """Standard normals ``0..n-1`` of ``key``'s stream in ``dtype`` (float32/float64)."""
    return _run(key, n, like, float_dtype_name(dtype))
