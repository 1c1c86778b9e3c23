"""Numba CPU kernels (``numba.njit(parallel=True)``), one module per hot path.

``philox`` holds the scalar Philox4x32-10 stream code shared with the Numba-CUDA kernels.
"""

from __future__ import annotations

import types


def compile_pair(func, **options) -> dict:
    """``{parallel: dispatcher}``: a ``prange`` kernel compiled once multi-threaded and once for
    one thread (small inputs: waking the thread pool costs more than the work)."""
    import numba

    out = {}
    for parallel in (True, False):
        clone = types.FunctionType(func.__code__, func.__globals__, func.__name__,
                                   func.__defaults__, func.__closure__)
        clone.__qualname__ = f"{func.__qualname__}_{'parallel' if parallel else 'serial'}"
        out[parallel] = numba.njit(parallel=parallel, cache=True, nogil=True, **options)(clone)
    return out
