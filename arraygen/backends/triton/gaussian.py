"""Triton kernels of the Gaussian hot path (launcher contract: :mod:`arraygen.gaussian`).

Each pass filters one axis of a C-contiguous (outer, n, inner) view. The boundary mode is
resolved on the host into a table ``src`` of n + 2r source indices (-1: cval, see
:func:`arraygen.gaussian.source_indices`), so kernels do no integer division per tap:

* ``inner > 1``: a program owns one output line ``y[o, i, j0:j0+BLOCK]`` and adds the 2r + 1
  input lines ``x[o, src[i + k], j0:j0+BLOCK]`` (contiguous loads);
* ``inner == 1`` (last axis): a program owns ``y[o, i0:i0+BLOCK]`` and gathers
  ``x[o, src[i + k]]``; the shifted loads hit L1/L2.

Passes over the last two axes with radii up to :data:`FUSED_MAX_RADIUS` run fused
(``Tuning.fused=True``; off by default: 3.0% of copy bandwidth against 15.9% for the two
passes at (16, 3, 1024, 1024) float32 on an H100) in ``_fused2d_kernel``: a program walks ``steps`` output
tiles of OH x OW down a column of one plane; per tile it loads the WH x WW input window (source
rows and columns from the mode's padded index tables, -1: cval) and applies both passes as two
small matrix products with banded (Toeplitz) tap matrices built once per program,
``Y = Tv @ X @ Th``, ``Tv[o, a] = wy[a - o]``, ``Th[b, p] = wx[b - p]`` (zero outside the band),
so the image is read once and written once (the window overlap of vertically adjacent tiles hits
L1, of horizontal neighbours L2). ``Tuning.precision`` picks the products' arithmetic: "ieee"
(fp32 FMA, exact to float32 rounding) or "tf32x3" (tensor cores, three TF32 products,
about 1e-6 relative; float32 only); float64 tiles use broadcast sums unless
``Tuning.dot_float64``.

The radius is a run-time argument (a new sigma never recompiles). Runs on torch tensors (CuPy
arrays are wrapped through DLPack); under ``TRITON_INTERPRET=1`` on CPU tensors.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import torch
import triton
import triton.language as tl

from ..._kernels.gaussian import source_indices
from .. import _interop
from .._tuning import Tunable

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


@triton.jit(do_not_specialize=["h", "w", "tiles_x", "tiles_y", "ry", "rx", "ows"])
def _fused2d_kernel(x_ptr, y_ptr, wy_ptr, wx_ptr, srow_ptr, scol_ptr, h, w, tiles_x, tiles_y,
                    ry, rx, ows, cval_ptr, OH: tl.constexpr, WH: tl.constexpr, OW: tl.constexpr,
                    WW: tl.constexpr, STEPS: tl.constexpr, PREC: tl.constexpr,
                    USE_DOT: tl.constexpr):
    """Y = Tv @ X @ Th per OH x OW tile; srow/scol: padded source tables (-1: cval)."""
    pid = tl.program_id(0).to(tl.int64)
    bx = pid % tiles_x
    rest = pid // tiles_x
    groups = (tiles_y + STEPS - 1) // STEPS
    by0 = (rest % groups) * STEPS
    base = (rest // groups) * h * w
    cval = tl.load(cval_ptr)
    oh = tl.arange(0, OH)
    ah = tl.arange(0, WH)
    ow = tl.arange(0, OW)
    aw = tl.arange(0, WW)
    dv = ah[None, :] - oh[:, None]
    tv = tl.load(wy_ptr + dv, mask=(dv >= 0) & (dv <= 2 * ry), other=0.0)  # [OH, WH]
    dh = aw[:, None] - ow[None, :]
    th = tl.load(wx_ptr + dh, mask=(dh >= 0) & (dh <= 2 * rx) & (ow[None, :] < ows),
                 other=0.0)  # [WW, OW]; tiles advance by ows <= OW columns
    sc = tl.load(scol_ptr + bx * ows + aw)
    cols = bx * ows + ow
    for step in range(STEPS):
        by = by0 + step
        sr = tl.load(srow_ptr + by * OH + ah)
        ok = (sr[:, None] >= 0) & (sc[None, :] >= 0)
        xw = tl.load(x_ptr + base + sr[:, None].to(tl.int64) * w + sc[None, :], mask=ok,
                     other=0.0)
        xw = tl.where(ok, xw, cval)
        if USE_DOT:
            v = tl.dot(tv, xw, input_precision=PREC)  # vertical pass: [OH, WW]
            yt = tl.dot(v, th, input_precision=PREC)  # horizontal pass: [OH, OW]
        else:  # the same products as broadcast sums (float64)
            v = tl.sum(tv[:, :, None] * xw[None, :, :], axis=1)
            yt = tl.sum(v[:, :, None] * th[None, :, :], axis=1)
        rows = by * OH + oh
        m = (rows[:, None] < h) & ((cols[None, :] < w) & (ow[None, :] < ows))
        tl.store(y_ptr + base + rows[:, None].to(tl.int64) * w + cols[None, :], yt, mask=m)


#: Largest radius per axis of the fused 2-D kernel.
FUSED_MAX_RADIUS = 16


@dataclasses.dataclass(frozen=True)
class Tuning:
    """Launch tuning of the Triton Gaussian filter (override with ``TUNING.override(...)``)."""

    fused: bool = False  #: fuse the passes over the last two axes (two banded products per tile)
    precision: str = "ieee"  #: float32 products: "ieee" (FMA) or "tf32x3" (tensor cores)
    steps: int = 8  #: tiles per program down a column (window overlap served by L1)
    out_w: int = 16  #: output columns per tile (the window is the next power of 2 >= out + 2r)
    num_warps: int = 4
    dot_float64: bool = False  #: float64 products through tl.dot (else broadcast sums)
    wide: bool = False  #: a tile makes every output its window allows (window - 2 r columns)


TUNING = Tunable("triton.gaussian", Tuning())


def _window(out: int, r: int) -> tuple[int, int]:
    """(outputs, window) of one tile axis: window a power of 2 holding outputs + 2 r."""
    out = max(out, 16)
    win = triton.next_power_of_2(out + 2 * r)
    return out, win


@functools.lru_cache(maxsize=256)
def _padded_sources(n: int, r: int, mode: str, length: int) -> np.ndarray:
    """int32 source indices of positions -r .. length - r - 1 (beyond the axis: 0, unused)."""
    src = np.zeros(length, dtype=np.int32)
    tab = source_indices(n, r, mode)
    src[:len(tab)] = tab[:length]
    return src


def _fused(a, wy, wx, mode, cval, tuning):
    """Both passes over the last two axes of the C-contiguous torch tensor ``a``."""
    h, w = int(a.shape[-2]), int(a.shape[-1])
    ry, rx = (len(wy) - 1) // 2, (len(wx) - 1) // 2
    oh, wh = _window(16 if ry <= 8 else 32, ry)
    ow, ww = _window(tuning.out_w if rx <= 8 else max(tuning.out_w, 32), rx)
    ows = ww - 2 * rx if tuning.wide else ow  # output columns per tile
    ow = triton.next_power_of_2(ows) if tuning.wide else ow
    tiles_y, tiles_x = -(-h // oh), -(-w // ows)
    steps = max(1, min(tuning.steps, tiles_y))
    groups = -(-tiles_y // steps)
    planes = a.numel() // (h * w)
    np_dtype = np.float32 if a.dtype == torch.float32 else np.float64
    srow = _padded_sources(h, ry, mode, groups * steps * oh + wh)
    scol = _padded_sources(w, rx, mode, tiles_x * ows + ww)
    dev = a.device
    prec = tuning.precision if a.dtype == torch.float32 else "ieee"
    out = torch.empty_like(a)
    _fused2d_kernel[(planes * tiles_x * groups,)](
        a, out, _device_table(np.array(wy, dtype=np_dtype), dev),
        _device_table(np.array(wx, dtype=np_dtype), dev), _device_table(srow, dev),
        _device_table(scol, dev), h, w, tiles_x, tiles_y, ry, rx, ows,
        _device_table(np.array([cval], dtype=np_dtype), dev),
        OH=oh, WH=wh, OW=ow, WW=ww, STEPS=steps, PREC=prec,
        USE_DOT=a.dtype == torch.float32 or tuning.dot_float64, num_warps=tuning.num_warps)
    return out


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
        tuning = TUNING.current()
        radius = {ax: (len(w) - 1) // 2 for ax, w in zip(axes, weights)}
        last2 = (a.ndim - 2, a.ndim - 1)
        # float64 without tl.dot: broadcast sums, kept to the small tiles (radius <= 8)
        max_r = (FUSED_MAX_RADIUS if a.dtype == torch.float32 or tuning.dot_float64
                 else FUSED_MAX_RADIUS // 2)
        fuse = (tuning.fused and a.ndim >= 2 and all(ax in radius for ax in last2)
                and all(1 <= radius[ax] <= max_r for ax in last2))
        for axis, w in zip(axes, weights):
            if fuse and axis in last2:
                continue
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
        if fuse:
            a = _fused(a, weights[axes.index(last2[0])], weights[axes.index(last2[1])], mode,
                       cval, tuning)
    return _interop.like(a, x)
