"""CuPy RawKernel launchers of the Gaussian hot path (contract: :mod:`arraygen.gaussian`).

``gaussian.cu`` holds two kernels: ``gauss2t<T, RY, RX, TH, TW>`` fuses the passes over the
last two axes (radii up to :data:`FUSED_MAX_RADIUS`; one module per radius pair, compiled on
first use and kept by CuPy's on-disk kernel cache): each 256-thread block stages a TH x TW
output tile plus halo in shared memory with 16-byte loads, then runs both passes there and
writes 16-byte stores; ``gauss_pass<T>`` filters any one axis of a contiguous (outer, n, inner)
view with a run-time radius, for every other case.
"""

from __future__ import annotations

import functools
import math

import cupy
import numpy as np

from ..._kernels.gaussian import MODES
from .. import _interop
from . import dtype_name, module, native, stream_for

_MODE_CODE = {m: i for i, m in enumerate(MODES)}
#: Largest radius per axis that the fused 2-D kernel is instantiated for.
FUSED_MAX_RADIUS = 16
_THREADS = 256
#: Output columns per tile of the staged kernel (TW of gauss2t), per C type.
_TILE_W = {"float": 128, "double": 64}
_SMEM_LIMIT = 48 * 1024  # static shared memory of one block


def _staged_tile_rows(ctype: str, ry: int, rx: int) -> int:
    """Largest TH in (32, 16, 8) whose two shared tiles of gauss2t fit in static memory."""
    size = 4 if ctype == "float" else 8
    vec = 16 // size
    sw = _TILE_W[ctype] + 2 * (-(-rx // vec) * vec)
    for th in (32, 16, 8):
        if (2 * th + 2 * ry) * sw * size < _SMEM_LIMIT:
            return th
    return 8  # unreachable for radii <= FUSED_MAX_RADIUS


@functools.cache
def _staged_kernel(ctype: str, ry: int, rx: int):
    th = _staged_tile_rows(ctype, ry, rx)
    name = f"gauss2t<{ctype}, {ry}, {rx}, {th}, {_TILE_W[ctype]}>"
    return module("gaussian.cu", (name,)).get_function(name), th


@functools.cache
def _pass_kernel(ctype: str):
    name = f"gauss_pass<{ctype}>"
    return module("gaussian.cu", (name,)).get_function(name)


_TAPS: dict = {}


def _device_taps(w, dtype):
    """Taps on the current device, cached: a host-to-device copy per call would synchronise."""
    w = np.asarray(w, dtype=dtype)
    key = (cupy.cuda.Device().id, w.dtype.char, w.tobytes())
    taps = _TAPS.get(key)
    if taps is None:
        if len(_TAPS) > 256:
            _TAPS.clear()
        taps = _TAPS[key] = cupy.asarray(w)
    return taps


def _one_pass(a, w, axis, code, cval):
    shape = a.shape
    n = shape[axis]
    inner = math.prod(shape[axis + 1:])
    total = a.size
    r = (len(w) - 1) // 2
    out = cupy.empty_like(a)
    blocks = int(min((total + _THREADS - 1) // _THREADS, 65535 * 8))
    _pass_kernel(dtype_name(a))((blocks,), (_THREADS,),
                                (a, out, w, np.int64(total), np.int32(n), np.int64(inner),
                                 np.int32(r), np.int32(code), a.dtype.type(cval)))
    return out


def _staged(a, wy, wx, code, cval):
    h, w_ = a.shape[-2], a.shape[-1]
    planes = a.size // (h * w_)
    ry, rx = (len(wy) - 1) // 2, (len(wx) - 1) // 2
    ctype = dtype_name(a)
    kern, th = _staged_kernel(ctype, ry, rx)
    tw = _TILE_W[ctype]
    tiles_x, tiles_y = -(-w_ // tw), -(-h // th)
    out = cupy.empty_like(a)
    vec = 16 // a.dtype.itemsize
    vec_ok = int(w_ % vec == 0 and a.data.ptr % 16 == 0 and out.data.ptr % 16 == 0)
    kern((tiles_x * tiles_y * planes,), (256,),
         (a, out, wy, wx, np.int32(h), np.int32(w_), np.int32(tiles_x), np.int32(tiles_y),
          np.int32(code), a.dtype.type(cval), np.int32(vec_ok)))
    return out


def gaussian_filter(x, weights, *, axes, mode, cval):
    """Launcher: see the contract in :mod:`arraygen.gaussian`."""
    code = _MODE_CODE[mode]
    with _interop.cuda_device_context(x):
        with stream_for(x):  # kernels launch on CuPy's current stream
            a = native(x)
            taps = {ax: _device_taps(w, a.dtype) for ax, w in zip(axes, weights)}
            radius = {ax: (len(w) - 1) // 2 for ax, w in zip(axes, weights)}
            last2 = (a.ndim - 2, a.ndim - 1)
            fuse = (a.ndim >= 2 and all(ax in radius for ax in last2)
                    and all(1 <= radius[ax] <= FUSED_MAX_RADIUS for ax in last2))
            for ax in axes:
                if not (fuse and ax in last2):
                    a = _one_pass(a, taps[ax], ax, code, cval)
            if fuse:
                a = _staged(a, taps[last2[0]], taps[last2[1]], code, cval)
    return _interop.like(a, x)
