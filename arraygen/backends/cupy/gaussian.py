"""CuPy RawKernel launchers of the Gaussian hot path (contract: :mod:`arraygen.gaussian`).

``gaussian.cu`` holds three kernels. Two fuse the passes over the last two axes (radii up to
:data:`FUSED_MAX_RADIUS`; one module per radius pair, compiled on first use and kept by CuPy's
on-disk kernel cache): ``gauss2s<T, RY, RX, NT>`` (``Tuning.fused="strip"``) walks
a block down a column strip of ``NT * VEC`` columns, staging stages of ``2 RY + 1`` input rows
in shared memory with double-buffered ``cp.async`` 16-byte copies and keeping the vertical pass
in a ring of register rows, so each input row is read once per segment of ``seg`` rows;
``gauss2t<T, RY, RX, TH, TW>`` (``fused="tile"``, the default: 52.5% of copy bandwidth
against the strip kernel's 33.5% at (16, 3, 1024, 1024) float32 on an H100) stages a TH x TW output tile plus its halo in
shared memory with 16-byte loads, runs both passes there and writes 16-byte stores.
``gauss_pass<T>`` filters any one axis of a contiguous (outer, n, inner) view with a run-time
radius, for every other case.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import cupy
import numpy as np

from ..._kernels.gaussian import MODES
from .. import _interop
from .._tuning import Tunable
from . import dtype_name, module, native, sm_count, stream_for

_MODE_CODE = {m: i for i, m in enumerate(MODES)}
#: Largest radius per axis that the fused 2-D kernel is instantiated for.
FUSED_MAX_RADIUS = 16
_THREADS = 256
#: Output columns per tile of the staged kernel (TW of gauss2t), per C type.
_TILE_W = {"float": 128, "double": 64}
_SMEM_LIMIT = 48 * 1024  # static shared memory of one block
#: Segment heights the strip kernel chooses from (largest first).
_STRIP_SEGS = (256, 128, 64, 32, 16)


@dataclasses.dataclass(frozen=True)
class Tuning:
    """Launch tuning of the CuPy Gaussian filter (override with ``TUNING.override(...)``)."""

    fused: str = "tile"  #: fused 2-D kernel: "tile" (gauss2t) or "strip" (gauss2s)
    strip_threads: int = 0  #: threads per strip block, 32 or 64 (0: 64 for wide rows, else 32)
    strip_rows: int = 0  #: output rows per strip block (0: largest of _STRIP_SEGS filling the GPU)
    strip_waves: int = 4  #: blocks per SM the automatic strip_rows aims for


TUNING = Tunable("cupy.gaussian", Tuning())


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


_TAPS_BY_ID: dict = {}


def _device_taps(w, dtype):
    """Taps on the current device, cached: a host-to-device copy per call would synchronise.

    The op module hands the same read-only taps object for the same filter, so a lookup by
    identity (the entry keeps ``w`` alive, so its id stays unique) skips hashing its bytes."""
    dev = cupy.cuda.runtime.getDevice()
    hit = _TAPS_BY_ID.get((id(w), dev, dtype))
    if hit is not None and hit[0] is w:
        return hit[1]
    if len(_TAPS_BY_ID) > 256:
        _TAPS_BY_ID.clear()
    taps = _device_taps_by_value(w, dtype)
    if isinstance(w, np.ndarray) and not w.flags.writeable:
        _TAPS_BY_ID[(id(w), dev, dtype)] = (w, taps)
    return taps


def _device_taps_by_value(w, dtype):
    w = np.asarray(w, dtype=dtype)
    key = (cupy.cuda.Device().id, w.dtype.char, w.tobytes())
    taps = _TAPS.get(key)
    if taps is None:
        if len(_TAPS) > 256:
            _TAPS.clear()
        taps = _TAPS[key] = cupy.asarray(w)
    return taps


def _strip_smem(ctype: str, ry: int, rx: int, nt: int) -> int:
    size = 4 if ctype == "float" else 8
    vec = 16 // size
    sw = nt * vec + 2 * (-(-rx // vec) * vec)
    return 2 * (2 * ry + 1) * sw * size


def _strip_threads(ctype: str, ry: int, rx: int, w: int, tuning: Tuning) -> int:
    """Threads per gauss2s block (32 or 64), 0 when its shared tiles do not fit."""
    vec = 4 if ctype == "float" else 2
    choices = (tuning.strip_threads,) if tuning.strip_threads else (
        (64, 32) if w >= 2 * 64 * vec else (32,))
    for nt in choices:
        if _strip_smem(ctype, ry, rx, nt) <= _SMEM_LIMIT:
            return nt
    return 0


@functools.cache
def _strip_kernel(ctype: str, ry: int, rx: int, nt: int):
    name = f"gauss2s<{ctype}, {ry}, {rx}, {nt}>"
    return module("gaussian.cu", (name,)).get_function(name)


def _strip(a, wy, wx, code, cval, nt, tuning):
    h, w_ = a.shape[-2], a.shape[-1]
    planes = a.size // (h * w_)
    ry, rx = (len(wy) - 1) // 2, (len(wx) - 1) // 2
    ctype = dtype_name(a)
    vec = 16 // a.dtype.itemsize
    strips = -(-w_ // (nt * vec))
    seg = tuning.strip_rows
    if not seg:
        target = tuning.strip_waves * sm_count(cupy.cuda.Device().id)
        seg = next((s for s in _STRIP_SEGS if planes * strips * -(-h // s) >= target),
                   _STRIP_SEGS[-1])
    seg = max(1, min(seg, h))
    segs = -(-h // seg)
    out = cupy.empty_like(a)
    vec_ok = int(w_ % vec == 0 and a.data.ptr % 16 == 0 and out.data.ptr % 16 == 0)
    _strip_kernel(ctype, ry, rx, nt)(
        (strips * segs * planes,), (nt,),
        (a, out, wy, wx, np.int32(h), np.int32(w_), np.int32(strips), np.int32(segs),
         np.int32(seg), np.int32(code), a.dtype.type(cval), np.int32(vec_ok)))
    return out


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
                tuning = TUNING.current()
                wy, wx = taps[last2[0]], taps[last2[1]]
                # the strip kernel filters rows first, so in constant mode its vertical pass
                # pads with the horizontally filtered cval: exact only when the vertical taps
                # sum to 1 (no derivative) or cval is 0
                host_wy = np.asarray(weights[axes.index(last2[0])], dtype=np.float64)
                strip_ok = mode != "constant" or cval == 0 or abs(host_wy.sum() - 1.0) < 1e-12
                nt = (_strip_threads(dtype_name(a), radius[last2[0]], radius[last2[1]],
                                     a.shape[-1], tuning)
                      if tuning.fused == "strip" and strip_ok else 0)
                if nt:
                    a = _strip(a, wy, wx, code, cval, nt, tuning)
                else:
                    a = _staged(a, wy, wx, code, cval)
    return _interop.like(a, x)
