"""Philox4x32-10 compiled with ``numba.njit`` for the Numba CPU kernels.

The source is the shared scalar code of :mod:`arraygen.backends._philox` (also compiled by the
Numba-CUDA kernels); this module holds its jitted versions (``philox4x32``, ``uniform_f32``...)
and :func:`box_muller`, which picks the float32 or float64 conversion from a scalar's type.
"""

from __future__ import annotations

import numba
import numba.extending

from .._philox import (py_box_muller_f32, py_box_muller_f64, py_philox4x32, py_uniform_f32,
                       py_uniform_f64)
from .._philox import key_words  # noqa: F401  (re-exported for the launchers)

_jit = numba.njit(inline="always", cache=True, nogil=True)
philox4x32 = _jit(py_philox4x32)
box_muller_f32 = _jit(py_box_muller_f32)
box_muller_f64 = _jit(py_box_muller_f64)
uniform_f32 = _jit(py_uniform_f32)
uniform_f64 = _jit(py_uniform_f64)


def box_muller(w0, w1, w2, w3, like):
    """Four normals in the dtype of the scalar ``like`` (float32 or float64); Numba only."""
    raise TypeError("box_muller is only callable from Numba-compiled code")


@numba.extending.overload(box_muller, jit_options={"cache": True})
def _box_muller_overload(w0, w1, w2, w3, like):
    if like == numba.types.float32:
        return lambda w0, w1, w2, w3, like: box_muller_f32(w0, w1, w2, w3)
    return lambda w0, w1, w2, w3, like: box_muller_f64(w0, w1, w2, w3)
