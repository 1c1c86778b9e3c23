"""Triton kernels of the Gaussian hot path (launcher contract: :mod:`arraygen.gaussian`).

Each pass filters one axis of a C-contiguous (outer, n, inner) view. The boundary mode is
resolved on the host into a table ``src`` of n + 2r source indices (-1: cval, see
:func:`arraygen.gaussian.source_indices`), so kernels do no integer division per tap:

* ``inner > 1``: a program owns one output line ``y[o, i, j0:j0+BLOCK]`` and adds the 2r + 1
  input lines ``x[o, src[i + k], j0:j0+BLOCK]`` (contiguous loads);
* ``inner == 1`` (last axis): a program owns ``y[o, i0:i0+BLOCK]`` and gathers
  ``x[o, src[i + k]]``; the shifted loads hit L1/L2.

The radius is a run-time argument (a new sigma never recompiles). Runs on torch tensors (CuPy
arrays are wrapped through DLPack); under ``TRITON_INTERPRET=1`` on CPU tensors.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import triton
import triton.language as tl

from ..._kernels.gaussian import source_indices
from .. import _interop

_BLOCK_INNER = 512
_BLOCK_LAST = 512
_MAX_GRID_Y = 65535


@triton.jit(do_not_specialize=["n", "inner", "r", "j0"])
def _pass_inner_kernel(x_ptr, y_ptr, w_ptr, src_ptr, n, inner, r, j0, BLOCK: tl.constexpr):
    """y[o, i, j] = sum_k w[k] x[o, src[i + k], j]; w_ptr[2r + 1] holds cval."""
    line = tl.program_id(0).to(tl.int64)  # o * n + i
    i = line % n
    j = j0 + tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = j < inner
    base = (line - i) * inner
    cval = tl.load(w_ptr + 2 * r + 1)
    acc = tl.zeros([BLOCK], dtype=cval.dtype)
    k = 0
    while k <= 2 * r:  # a while loop: the interpreter cannot range() over a scalar argument
        s = tl.load(src_ptr + i + k).to(tl.int64)
        v = tl.load(x_ptr + base + s * inner + j, mask=m & (s >= 0), other=0.0)
        acc += tl.load(w_ptr + k) * tl.where(s >= 0, v, cval)
        k += 1
    tl.store(y_ptr + line * inner + j, acc, mask=m)


@triton.jit(do_not_specialize=["n", "r"])
def _pass_last_kernel(x_ptr, y_ptr, w_ptr, src_ptr, n, r, BLOCK: tl.constexpr):
    """y[o, i] = sum_k w[k] x[o, src[i + k]]; w_ptr[2r + 1] holds cval."""
    o = tl.program_id(0).to(tl.int64)
    i = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = i < n
    row = x_ptr + o * n
    cval = tl.load(w_ptr + 2 * r + 1)
    acc = tl.zeros([BLOCK], dtype=cval.dtype)
    k = 0
    while k <= 2 * r:
        s = tl.load(src_ptr + i + k, mask=m, other=-1)
        v = tl.load(row + s, mask=m & (s >= 0), other=0.0)
        acc += tl.load(w_ptr + k) * tl.where(s >= 0, v, cval)
        k += 1
    tl.store(y_ptr + o * n + i, acc, mask=m)


_TABLES: dict = {}


def _device_table(values: np.ndarray, device):
    """Small constant tables on the device, cached (a host-to-device copy would synchronise)."""
    key = (str(device), values.dtype.char, values.tobytes())
    t = _TABLES.get(key)
    if t is None:
        if len(_TABLES) > 512:
            _TABLES.clear()
        t = _TABLES[key] = torch.from_numpy(values).to(device)
    return t


def gaussian_filter(x, weights, *, axes, mode, cval):
    """Launcher: see the contract in :mod:`arraygen.gaussian`."""
    with _interop.cuda_device_context(x):
        a = _interop.to_torch(x).contiguous()
        np_dtype = np.float32 if a.dtype == torch.float32 else np.float64
        for axis, w in zip(axes, weights):
            shape = tuple(a.shape)
            n = shape[axis]
            r = (len(w) - 1) // 2
            inner = math.prod(shape[axis + 1:])
            outer = math.prod(shape[:axis])
            taps = np.concatenate([np.asarray(w, dtype=np.float64), [cval]]).astype(np_dtype)
            taps = _device_table(taps, a.device)
            src = _device_table(source_indices(n, r, mode).astype(np.int32), a.device)
            out = torch.empty_like(a)
            if inner == 1:
                grid = (outer, triton.cdiv(n, _BLOCK_LAST))
                _pass_last_kernel[grid](a, out, taps, src, n, r, BLOCK=_BLOCK_LAST)
            else:
                step = _MAX_GRID_Y * _BLOCK_INNER  # grid axis 1 holds at most 65535 programs
                for j0 in range(0, inner, step):
                    grid = (outer * n, triton.cdiv(min(step, inner - j0), _BLOCK_INNER))
                    _pass_inner_kernel[grid](a, out, taps, src, n, inner, r, j0,
                                             BLOCK=_BLOCK_INNER)
            a = out
    return _interop.like(a, x)
