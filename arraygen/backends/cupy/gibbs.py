"""CuPy RawKernel launchers of the Gibbs hot path (contract: :mod:`arraygen.gibbs`).

``gibbs.cu`` holds two kernels. ``gibbs_sweep_tiled<T>`` (plane-local stencils, every offset
with dc = 0, and W % 4 == 0): one launch per sweep, tiles with a halo in shared memory, so a
sweep reads couplings and bias about once whatever the number of colours. ``gibbs_phase<T>``
(everything else): one launch per colour and sweep, one thread per quad of spins (one Philox
block), in place on a private int8 copy of the spins. Both give identical spins.
"""

from __future__ import annotations

import cupy
import numpy as np

from ...gibbs import symmetric_offsets
from .. import _interop
from . import dtype_name, module, native, stream_for

SOURCE = "gibbs.cu"
_THREADS = 256
_MAX_BLOCKS = 65535 * 8
_NAMES = ("arraygen::gibbs_phase<float>", "arraygen::gibbs_phase<double>",
          "arraygen::gibbs_sweep_tiled<float>", "arraygen::gibbs_sweep_tiled<double>")
_TILE_QUADS = 32           # tile width in quads of spins (128 columns)
_MAX_SMEM = 48 * 1024      # bytes of shared memory a tiled block may use


def _kernel(name: str, ctype: str):
    return module(SOURCE, _NAMES).get_function(f"arraygen::{name}<{ctype}>")


def _tiling(offsets, n_colors, H, W):
    """(TH, TWQ, Ry, HQ, smem bytes) of the tiled kernel, or None if it does not apply."""
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
    return th, twq, ry, hq, smem


def gibbs_sweeps(spins, couplings, bias, colors, *, offsets, periodic, n_colors, pattern,
                 n_sweeps, beta, uniforms, key):
    """Launcher (contract in :mod:`arraygen.gibbs`): spins (B, C, H, W) int8 -> new spins."""
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
        tiling = _tiling(offsets, n_colors, H, W)
        if tiling is not None:
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
