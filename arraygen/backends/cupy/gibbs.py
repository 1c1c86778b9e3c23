"""CuPy RawKernel launchers of the Gibbs hot path (contract: :mod:`arraygen.gibbs`).

``gibbs.cu`` holds four kernels, all giving identical spins:

- ``gibbs_sweep_stream<T, ...>``: the same models as the next one; one launch per sweep, each
  block streams down a strip of columns in steps of a few rows with the colour phases lagging
  each other, keeping the rows in flight (spins, couplings, Philox blocks) in rings in shared
  memory: the couplings are read about once per sweep with no halo of rows, so large stencils
  (radius 3, 8 offsets) stay bound by memory bandwidth.
- ``gibbs_sweep_fused<T, ...>``: plane-local stencils (every offset with dc = 0) with a linear
  colouring and W % 4 == 0. One launch per sweep; the offsets and the colour pattern are
  template arguments, so each model compiles its own kernel (NVRTC, cached by CuPy) with
  unrolled neighbour loops. Reads the couplings and bias about once per sweep.
- ``gibbs_sweep_tiled<T>``: plane-local stencils with W % 4 == 0 and any colouring (colours
  read from the colour array); one launch per sweep, offsets read at run time.
- ``gibbs_phase<T>``: everything else; one launch per colour and sweep, one thread per quad of
  spins (one Philox block), in place on a private int8 copy of the spins.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import cupy
import numpy as np

from ..._kernels.gibbs import symmetric_offsets
from .. import _interop
from .._philox_xp import origin_by_window
from .._tuning import Tunable
from . import dtype_name, module, native, stream_for

SOURCE = "gibbs.cu"
_THREADS = 256
_MAX_BLOCKS = 65535 * 8
_NAMES = ("arraygen::gibbs_phase<float>", "arraygen::gibbs_phase<double>",
          "arraygen::gibbs_sweep_tiled<float>", "arraygen::gibbs_sweep_tiled<double>")
_TILE_QUADS = 32           # tile width in quads of spins (128 columns)
_MAX_SMEM = 48 * 1024      # bytes of shared memory a tiled block may use
_FUSED_MAX_COLOURS = 8
_FUSED_MAX_OFFSETS = 16
_FUSED_MAX_STAGED = 110 * 1024  # staged bytes per 256 threads: 512 threads still fit on an SM
_MAX_BLOCK_SMEM = 227 * 1024    # the opt-in shared memory limit of one block (sm_80 and later)
_SMEM_PER_SM = 228 * 1024      # shared memory of one SM (sm_90), 1 KB of it reserved per block
#: (strip quads, rows per step, quads per thread in x, in y) of the streaming kernel, preferred first
_STREAM_SHAPES = ((32, 16, 1, 1), (64, 4, 1, 1), (32, 8, 1, 1), (32, 4, 1, 1))


@dataclasses.dataclass(frozen=True)
class Tuning:
    """Which sweep kernel the CuPy launcher uses (override with ``TUNING.override(...)``).

    Attributes
    ----------
    kernel
        "auto", or force "stream" (the first shape of ``_STREAM_SHAPES`` that fits),
        "stream32" (32-quad strips) or "stream<quads>x<rows per step>[x<quads per thread in
        x>x<in y>]", "fused" (its own choice of staging), "fused_stage" (couplings staged in
        shared memory by asynchronous copies), "fused_stage_sync" (by loads), "fused_global"
        (read from global memory), each with the suffix "32" for 32-quad-wide regions,
        "tiled" or "phase".
    stream_layout
        ``(chunk rows, chunks, tail rows per block)`` of the streaming kernel's blocks (see
        ``_stream_layout``); None: chosen to fill the GPU (tests force small ones).
    """

    kernel: str = "auto"
    stream_layout: tuple[int, int, int] | None = None


TUNING = Tunable("cupy.gibbs", Tuning())


class StreamPlan(NamedTuple):
    """Launch plan of the streaming sweep kernel (``gibbs_sweep_stream`` in gibbs.cu)."""

    name: str  #: kernel instantiation
    threads: int
    tile_quads: int  #: quads of a strip that the block updates (its width less the halo)
    smem: int  #: dynamic shared memory bytes
    extra_rows: int  #: rows read per block beyond its chunk (halo and ring fill)


class FusedPlan(NamedTuple):
    """Launch plan of the fused sweep kernel (``gibbs_sweep_fused`` in gibbs.cu)."""

    name: str  #: kernel instantiation
    threads: int
    tile_rows: int
    tile_quads: int
    smem: int  #: dynamic shared memory bytes
    staged: bool  #: the couplings are staged in shared memory


class Tiling(NamedTuple):
    """Launch plan of the tiled (one launch per sweep, any colouring) kernel."""

    tile_rows: int
    tile_quads: int
    radius_rows: int
    halo_quads: int
    smem: int


def _kernel(name: str, ctype: str):
    return module(SOURCE, _NAMES).get_function(f"arraygen::{name}<{ctype}>")


def _tiling(offsets, n_colors, H, W):
    """The :class:`Tiling` of the tiled kernel, or None if it does not apply."""
    if W % 4 or any(o[0] != 0 for o in offsets):
        return None
    ry = max((abs(o[1]) for o in offsets), default=0)
    hq = -(-max((abs(o[2]) for o in offsets), default=0) // 4)
    th = min(16 if n_colors * ry <= 4 else 32, H)
    twq = min(_TILE_QUADS, W // 4)
    smem = (th + 2 * n_colors * ry) * 4 * (twq + 2 * n_colors * hq)
    smem += 16 * (th + 2 * (n_colors - 1) * ry) * (twq + 2 * (n_colors - 1) * hq)
    if smem > _MAX_SMEM:
        return None
    return Tiling(th, twq, ry, hq, smem)


def _compiled_pattern(offsets, pattern, n_colors, C, H, W):
    """``(ry, rxq)``, the stencil's radius in rows and in quads, when the kernels with the
    stencil and colouring compiled in apply (plane-local offsets, a linear colouring,
    W % 4 == 0); else None."""
    if (pattern is None or W % 4 or any(o[0] != 0 for o in offsets) or n_colors < 1
            or n_colors > _FUSED_MAX_COLOURS or len(offsets) > _FUSED_MAX_OFFSETS
            or C * H * W >= 2**31):
        return None
    ry = max((abs(o[1]) for o in offsets), default=0)
    rxq = -(-max((abs(o[2]) for o in offsets), default=0) // 4)
    return ry, rxq


def _template_args(offsets, pattern, periodic, injected, ctype):
    """``T, PERIODIC, HAS_U, NC, PB, PD``, then (after the kernel's own) the offsets' pack."""
    n, _, pb, pd = pattern
    pack = "".join(f", {o[1]}, {o[2]}" for o in offsets)
    flags = ", ".join(str(bool(v)).lower() for v in (periodic, injected))
    return f"{ctype}, {flags}, {n}, {pb}, {pd}", pack


def _stream(offsets, pattern, n_colors, C, H, W, periodic, injected, ctype, choice):
    """The :class:`StreamPlan` of the streaming kernel, or None when it does not apply
    (``gibbs_sweep_stream`` in gibbs.cu; the ring sizes mirror ``StreamRows`` there)."""
    radius = _compiled_pattern(offsets, pattern, n_colors, C, H, W)
    if radius is None or not (choice == "auto" or choice.startswith("stream")):
        return None
    ry, rxq = radius
    gq = (n_colors - 1) * rxq
    size = 8 if ctype == "double" else 4
    shapes = _STREAM_SHAPES
    spec = choice.removeprefix("stream")
    if "x" in spec:  # "stream<quads>x<rows>[x<qx>x<qy>]" forces one shape
        shape = tuple(int(v) for v in spec.split("x"))
        shapes = (shape + (1, 1)[len(shape) - 2:],)
    for rwq, rb, qx, qy in shapes:
        if rwq - 2 * gq < 8 or (rwq == 64 and (spec == "32" or W // 4 < 128)):
            continue
        ring = (n_colors + 1) * ry + 2 * rb          # StreamRows::RING
        word_rows = (n_colors - 1) * ry + rb         # StreamRows::WORD_ROWS
        swq = rwq + 2 * rxq
        smem = len(offsets) * ring * 4 * swq * size + word_rows * 4 * rwq * 4 + ring * swq * 4
        if smem <= _MAX_BLOCK_SMEM:
            break
    else:
        return None
    head, pack = _template_args(offsets, pattern, periodic, injected, ctype)
    name = f"arraygen::gibbs_sweep_stream<{head}, {rwq}, {rb}, {qx}, {qy}{pack}>"
    return StreamPlan(name, rb // qy * rwq // qx, rwq - 2 * gq, smem,
                      2 * (n_colors - 1) * ry + ring)


def _stream_blocks(H: int, columns: int, chunk_rows: int, chunks: int, tail_rows: int) -> int:
    """Blocks of the streaming kernel's layout: ``chunks`` head blocks per column, then the
    tail rows [chunks chunk_rows, H) of all columns, ``tail_rows`` per block."""
    tail = columns * (H - min(chunk_rows * chunks, H))
    return columns * chunks + (-(-tail // tail_rows) if tail else 0)


@functools.lru_cache(maxsize=256)
def _stream_layout(H: int, columns: int, slots: int, extra_rows: int):
    """``(chunk_rows, chunks, tail_rows_per_block, blocks)`` of the streaming kernel for
    ``columns`` (plane, strip) columns of H rows, with ``slots`` blocks resident on the GPU at
    once and ``extra_rows`` rows of overhead per block segment (halo and ring fill).

    The head splits every column into ``chunks`` chunks of ``chunk_rows`` rows, a block each,
    the blocks of one chunk streaming adjacent strips side by side (their shared columns come
    from L2). When the head fills one wave but leaves some of its slots idle, the rows below
    it (the tail) go, end to end, to those idle blocks. Chosen to minimise the time of the
    slowest slot: (waves) x (rows a block reads, overheads included)."""
    best = None
    for n in range(1, max(1, H // 8) + 1):  # head only, in waves
        rows = -(-H // n)
        blocks = columns * -(-H // rows)
        cost = -(-blocks // slots) * (rows + extra_rows)
        if best is None or cost < best[0]:
            best = (cost, (rows, blocks // columns, 0, blocks))
    chunks, idle = divmod(slots, columns)
    if chunks and idle:  # head and tail in one wave
        for rows in range(-(-H * columns // slots), H // chunks + 1):
            tail = H - chunks * rows
            per_block = -(-columns * tail // idle)
            segments = -(-per_block // tail) + 1 if tail else 0
            cost = max(rows + extra_rows, per_block + segments * extra_rows)
            if cost < best[0]:
                best = (cost, (rows, chunks, per_block,
                               _stream_blocks(H, columns, rows, chunks, per_block)))
    return best[1]


def _resident_blocks(kernel, threads: int, smem: int) -> int:
    """Blocks of ``kernel`` resident on the whole GPU at once (threads, registers, shared memory)."""
    device = cupy.cuda.Device()
    sms = device.attributes["MultiProcessorCount"]
    regs = max(int(getattr(kernel, "num_regs", 0) or 0), 1)
    regs_per_warp = -(-regs * 32 // 256) * 256  # allocated in units of 256
    per_sm = min(2048 // threads, _SMEM_PER_SM // (smem + 1024),
                 65536 // (regs_per_warp * (threads // 32)))
    return sms * max(per_sm, 1)


def _fused(offsets, pattern, n_colors, C, H, W, periodic, injected, ctype, choice):
    """The :class:`FusedPlan` of the fused kernel for this model, or None when it does not
    apply (``gibbs_sweep_fused`` in gibbs.cu: regions of 8 qpt rows x rwq quads, rwq threads
    per row)."""
    radius = _compiled_pattern(offsets, pattern, n_colors, C, H, W)
    if radius is None or choice in ("tiled", "phase") or choice.startswith("stream"):
        return None
    ry, rxq = radius
    gy, gq = (n_colors - 1) * ry, (n_colors - 1) * rxq
    size = 8 if ctype == "double" else 4

    def layout(rwq, qpt):  # (window sites, bytes of staged couplings), or None if no tile left
        if 8 * qpt - 2 * gy < 8 or rwq - 2 * gq < 8:
            return None
        window = (8 * qpt + 2 * ry) * 4 * (rwq + 2 * rxq)
        return window, len(offsets) * window * size

    rwq = 32 if choice.endswith("32") or W // 4 < 128 else 64
    qpt = 4 if layout(rwq, 4) and 32 - 2 * gy >= 16 else 8
    if layout(rwq, qpt) is None:
        rwq = 32
        if layout(rwq, qpt) is None:
            return None
    window, staged = layout(rwq, qpt)
    forced = choice.startswith("fused_stage")
    if forced and window + staged > _MAX_BLOCK_SMEM:
        smaller = [(32, q) for q in (qpt, 4) if layout(32, q) and sum(layout(32, q)) <= _MAX_BLOCK_SMEM]
        if smaller:  # a smaller region (more halo) whose couplings fit
            rwq, qpt = smaller[0]
            window, staged = layout(rwq, qpt)
    stage = window + staged <= _MAX_BLOCK_SMEM and (
        forced or (not choice.startswith("fused_global") and staged <= _FUSED_MAX_STAGED * rwq // 32))
    head, pack = _template_args(offsets, pattern, periodic, injected, ctype)
    name = (f"arraygen::gibbs_sweep_fused<{head}, {rwq}, {qpt}, "
            f"{(1 if 'sync' in choice else 2) if stage else 0}{pack}>")
    return FusedPlan(name, 8 * rwq, 8 * qpt - 2 * gy, rwq - 2 * gq,
                     window + (staged if stage else 0), stage)


def _sweep_kernel(name: str, smem: int):
    """The compiled one-launch-per-sweep kernel ``name``, allowed ``smem`` bytes of dynamic
    shared memory."""
    kernel = module(SOURCE, (name,)).get_function(name)
    if smem > _MAX_SMEM:
        kernel.max_dynamic_shared_size_bytes = smem
    return kernel


@origin_by_window
def gibbs_sweeps(spins, couplings, bias, colors, *, offsets, periodic, n_colors, pattern,
                 n_sweeps, beta, uniforms, key):
    """Launcher (contract in :mod:`arraygen.gibbs`): spins (B, C, H, W) int8 -> new spins.

    ``origin`` (a window of a larger array): one launch per sweep with the window's Philox
    uniforms drawn on the device (:func:`arraygen.backends._philox_xp.origin_by_window`).
    """
    with _interop.cuda_device_context(spins), stream_for(spins):
        s = cupy.array(_interop.to_cupy(spins), dtype=cupy.int8, order="C", copy=True)
        B, C, H, W = (int(v) for v in s.shape)
        j = native(couplings)
        h = native(bias)
        col = native(colors)
        K = len(offsets)
        if periodic:
            offsets = symmetric_offsets(offsets, (C, H, W))
        offs = cupy.asarray(np.asarray(offsets, dtype=np.int32).reshape(-1) if K
                            else np.zeros(3, dtype=np.int32))
        dtype = j.dtype.type
        u_all = None if uniforms is None else native(uniforms)
        dummy_u = cupy.zeros(1, dtype=j.dtype)
        pn, pa, pb, pd = pattern if pattern is not None else (0, 0, 0, 0)
        total = B * C * H * W
        quads = (total + 3) // 4
        blocks = int(min(max((quads + _THREADS - 1) // _THREADS, 1), _MAX_BLOCKS))
        ctype = dtype_name(j)
        bias_batched = np.int32(h.size != C * H * W)
        two_beta = dtype(2.0 * beta)
        injected = u_all is not None
        tuning = TUNING.current()
        choice = tuning.kernel
        fused = _fused(offsets, pattern, n_colors, C, H, W, periodic, injected, ctype, choice)
        stream = None
        if fused is None or (choice == "auto" and not fused.staged):
            # auto: the fused kernel where it stages the couplings (small stencils), else stream
            stream = _stream(offsets, pattern, n_colors, C, H, W, periodic, injected, ctype,
                             choice)
            fused = fused if stream is None else None
        tiling = None if stream or fused or choice == "phase" else _tiling(
            offsets, n_colors, H, W)
        if stream is not None:
            sweep_threads, sweep_smem = stream.threads, stream.smem
            sweep_kernel = _sweep_kernel(stream.name, sweep_smem)
            strips = -(-(W // 4) // stream.tile_quads)
            if tuning.stream_layout is None:
                chunk_rows, chunks, tail_rows, grid = _stream_layout(
                    H, B * C * strips,
                    _resident_blocks(sweep_kernel, sweep_threads, sweep_smem), stream.extra_rows)
            else:
                chunk_rows, chunks, tail_rows = tuning.stream_layout
                grid = _stream_blocks(H, B * C * strips, chunk_rows, chunks, tail_rows)
            layout = (np.int32(chunk_rows), np.int32(chunks), np.int32(strips),
                      np.int32(B * C), np.int32(tail_rows))
            other = cupy.empty_like(s)
        elif fused is not None:
            sweep_threads, sweep_smem = fused.threads, fused.smem
            sweep_kernel = _sweep_kernel(fused.name, sweep_smem)
            tiles_y, tiles_x = -(-H // fused.tile_rows), -(-(W // 4) // fused.tile_quads)
            grid = B * C * tiles_y * tiles_x
            layout = (np.int32(tiles_y), np.int32(tiles_x))
            other = cupy.empty_like(s)
        elif tiling is not None:
            th, twq, ry, hq, smem = tiling
            tiles_y, tiles_x = -(-H // th), -(-(W // 4) // twq)
            grid = B * C * tiles_y * tiles_x
            kernel = _kernel("gibbs_sweep_tiled", ctype)
            other = cupy.empty_like(s)
        else:
            kernel = _kernel("gibbs_phase", ctype)
        for t in range(n_sweeps):
            if u_all is None:
                c2, c3 = key.advance(t).counter_words
                k0, k1 = key.key_words
                u_t, has_u = dummy_u, np.int32(0)
            else:
                c2 = c3 = k0 = k1 = 0
                u_t, has_u = u_all[t], np.int32(1)
            words = (np.uint32(c2), np.uint32(c3), np.uint32(k0), np.uint32(k1))
            if stream is not None or fused is not None:
                sweep_kernel((grid,), (sweep_threads,),
                             (s, other, j, h, u_t, np.int32(C), np.int32(H), np.int32(W),
                              np.int32(pa)) + layout + (bias_batched, two_beta) + words,
                             shared_mem=sweep_smem)
                s, other = other, s
                continue
            if tiling is not None:
                kernel((grid,), (_THREADS,),
                       (s, other, j, h, col, offs, u_t, has_u, np.int32(C), np.int32(H),
                        np.int32(W), np.int32(K), np.int32(bool(periodic)), np.int32(pn),
                        np.int32(pa), np.int32(pb), np.int32(pd), np.int32(n_colors),
                        np.int32(ry), np.int32(hq), np.int32(th), np.int32(twq),
                        np.int32(tiles_y), np.int32(tiles_x), bias_batched, two_beta) + words,
                       shared_mem=smem)
                s, other = other, s
                continue
            for c in range(n_colors):
                kernel((blocks,), (_THREADS,),
                       (s, j, h, col, offs, u_t, has_u, np.int32(C), np.int32(H),
                        np.int32(W), np.int32(K), np.int32(bool(periodic)), np.int32(pn),
                        np.int32(pa), np.int32(pb), np.int32(pd), np.int64(total),
                        bias_batched, np.int32(c), two_beta) + words)
    return _interop.like(s, spins)
