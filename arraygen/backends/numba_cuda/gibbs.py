"""Numba-CUDA kernels of the Gibbs hot path (launcher contract: :mod:`arraygen.gibbs`).

One launch per colour and sweep; each thread owns a quad of 4 consecutive spins (one Philox
block of the sweep's uniform stream) and resamples those of its sites that have the current
colour, in place on a private int8 copy of the spins (sites of one colour are never coupled).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import cuda

from ..._kernels.gibbs import symmetric_offsets
from .. import _interop
from .. import _philox as ph
from .._philox_xp import origin_by_window
from . import contiguous, device_view, empty, stream_of, threads_per_block


@functools.cache
def _kernel(dtype_name: str):
    """Compile (lazily) the colour-phase kernel for float32 or float64."""
    cast = np.float32 if dtype_name == "float32" else np.float64
    one = cast(1.0)
    philox = cuda.jit(device=True)(ph.py_philox4x32)
    uniform = cuda.jit(device=True)(ph.py_uniform_f32)

    @cuda.jit(device=True)
    def field(s, J, offs, C, H, W, K, periodic, N, chain, c, y, x, site, g):
        for k in range(K):
            dc = offs[3 * k]
            dy = offs[3 * k + 1]
            dx = offs[3 * k + 2]
            fc = c + dc
            fy = y + dy
            fx = x + dx
            bc = c - dc
            by = y - dy
            bx = x - dx
            if periodic:  # offsets are reduced to |d| <= n/2: one add or subtract wraps
                fc = fc + C if fc < 0 else (fc - C if fc >= C else fc)
                fy = fy + H if fy < 0 else (fy - H if fy >= H else fy)
                fx = fx + W if fx < 0 else (fx - W if fx >= W else fx)
                bc = bc + C if bc < 0 else (bc - C if bc >= C else bc)
                by = by + H if by < 0 else (by - H if by >= H else by)
                bx = bx + W if bx < 0 else (bx - W if bx >= W else bx)
                fok = True
                bok = True
            else:
                fok = 0 <= fc < C and 0 <= fy < H and 0 <= fx < W
                bok = 0 <= bc < C and 0 <= by < H and 0 <= bx < W
            if fok:
                f = (fc * H + fy) * W + fx
                g += J[k * N + site] * cast(s[chain + f])
            if bok:
                b = (bc * H + by) * W + bx
                g += J[k * N + b] * cast(s[chain + b])
        return g

    @cuda.jit
    def phase(s, J, h, colors, offs, u, has_u, C, H, W, K, periodic, pn, pa, pb, pd, total,
              bias_batched, col, two_beta, c2, c3, k0, k1):  # pragma: no cover - compiled
        N = C * H * W
        quads = (total + 3) // 4
        q = cuda.grid(1)
        stride = cuda.gridsize(1)
        while q < quads:
            e0 = 4 * q
            b = e0 // N
            site = e0 - b * N
            c = site // (H * W)
            rem = site - c * (H * W)
            y = rem // W
            x = rem - y * W
            w0 = w1 = w2 = w3 = np.uint64(0)
            if not has_u:
                w0, w1, w2, w3 = philox(q, c2, c3, k0, k1)
            for lane in range(4):
                e = e0 + lane
                if e >= total:
                    break
                if pn > 0:
                    colour = (pa * c + pb * y + pd * x) % pn
                else:
                    colour = colors[site]
                if colour == col:
                    chain = b * N
                    g = h[chain + site] if bias_batched else h[site]
                    g = field(s, J, offs, C, H, W, K, periodic, N, chain, c, y, x, site, g)
                    p = one / (one + math.exp(-two_beta * g))
                    if has_u:
                        ue = u[e]
                    else:
                        w = w0 if lane == 0 else (w1 if lane == 1 else (w2 if lane == 2 else w3))
                        ue = uniform(w)
                    s[e] = 1 if ue < p else -1
                site += 1
                x += 1
                if x == W:
                    x = 0
                    y += 1
                    if y == H:
                        y = 0
                        c += 1
                        if c == C:
                            c = 0
                            site = 0
                            b += 1
            q += stride

    return phase


def _private_copy(a):
    """A C-contiguous copy of ``a`` in its own library (the kernels update it in place)."""
    if isinstance(a, np.ndarray):
        return np.array(a, order="C", copy=True)
    if type(a).__module__.startswith("torch"):
        return a.clone(memory_format=__import__("torch").contiguous_format)
    import cupy

    return cupy.array(a, order="C", copy=True)


def _dtype_name(a) -> str:
    return np.dtype(str(a.dtype).replace("torch.", "")).name


@origin_by_window
def gibbs_sweeps(spins, couplings, bias, colors, *, offsets, periodic, n_colors, pattern,
                 n_sweeps, beta, uniforms, key):
    """Launcher (contract in :mod:`arraygen.gibbs`): spins (B, C, H, W) int8 -> new spins.

    ``origin`` (a window of a larger array): one launch per sweep with the window's Philox
    uniforms drawn on the device (:func:`arraygen.backends._philox_xp.origin_by_window`).
    """
    with _interop.cuda_device_context(spins):
        s = _private_copy(spins)
        B, C, H, W = (int(v) for v in s.shape)
        total = B * C * H * W
        name = _dtype_name(couplings)
        dt = np.dtype(name).type
        j = contiguous(couplings).reshape(-1)
        h = contiguous(bias).reshape(-1)
        col = contiguous(colors).reshape(-1)
        K = len(offsets)
        if periodic:
            offsets = symmetric_offsets(offsets, (C, H, W))
        offs_np = np.asarray(offsets, dtype=np.int32).reshape(-1) if K else np.zeros(3, np.int32)
        stream = stream_of(s)
        if isinstance(s, np.ndarray):
            offs = offs_np
        else:
            offs = cuda.to_device(offs_np, stream=stream)
        u_all = None if uniforms is None else contiguous(uniforms).reshape(n_sweeps, total)
        dummy_u = empty(s, 1, name)
        pn, pa, pb, pd = pattern if pattern is not None else (0, 0, 0, 0)
        tpb = threads_per_block()
        quads = (total + 3) // 4
        blocks = max(1, min(-(-quads // tpb), 65535 * 8))
        kernel = _kernel(name)
        bias_batched = int(h.shape[0] != C * H * W)
        two_beta = dt(2.0 * beta)
        s_dev = device_view(s.reshape(-1))
        j_dev, h_dev, col_dev = device_view(j), device_view(h), device_view(col)
        for t in range(n_sweeps):
            if u_all is None:
                c2, c3, k0, k1 = ph.key_words(key.advance(t))
                u_t, has_u = device_view(dummy_u), 0
            else:
                c2 = c3 = k0 = k1 = np.uint64(0)
                u_t, has_u = device_view(u_all[t]), 1
            for c in range(n_colors):
                kernel[blocks, tpb, stream](s_dev, j_dev, h_dev, col_dev, offs, u_t, has_u, C, H,
                                            W, K, bool(periodic), pn, pa, pb, pd, total,
                                            bias_batched, c, two_beta, c2, c3, k0, k1)
    return _interop.like(s, spins)
