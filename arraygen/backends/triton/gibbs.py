"""Triton kernels of the Gibbs hot path (launcher contract: :mod:`arraygen.gibbs`).

One launch per colour and sweep. A program owns ``BLOCK_Q`` quads of 4 consecutive spins (one
Philox block each, drawn once as a (BLOCK_Q,) vector and spread over the quad's lanes) and
resamples the sites of the current colour in place on a private int8 copy of the spins.
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from ..._kernels.gibbs import symmetric_offsets
from .. import _interop, is_simulated
from .._philox_xp import origin_by_window
from . import philox

BLOCK_Q = 256


@triton.jit
def _wrap(v, n):
    """v in [-n, 2n) onto [0, n) (periodic offsets are reduced to |d| <= n/2)."""
    v = tl.where(v < 0, v + n, v)
    return tl.where(v >= n, v - n, v)


@triton.jit(do_not_specialize=["C", "H", "W", "PN", "PA", "PB", "PD", "total", "col", "c2", "c3",
                              "k0", "k1"])
def _phase_kernel(s_ptr, j_ptr, h_ptr, colors_ptr, offs_ptr, u_ptr, C, H, W, PN, PA, PB, PD,
                  total, col, tb_ptr, c2, c3, k0, k1, K: tl.constexpr, PERIODIC: tl.constexpr,
                  HAS_U: tl.constexpr, BIAS_BATCHED: tl.constexpr, IS_F64: tl.constexpr,
                  ROW_QUADS: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    q = pid * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    lane = tl.arange(0, 4)
    e = 4 * q[:, None] + lane[None, :]                      # (BLOCK, 4) element indices
    in_range = e < total
    HW = H.to(tl.int64) * W
    N = C.to(tl.int64) * HW
    if ROW_QUADS:
        # W % 4 == 0: a quad never crosses a row, so divide once per quad, not per element
        row = q // (W // 4)                                  # = plane * H + y
        xq = q - row * (W // 4)
        plane = row // H
        bq = plane // C
        b = bq[:, None] + 0 * lane[None, :]
        c = (plane - bq * C).to(tl.int32)[:, None] + 0 * lane[None, :]
        y = (row - plane * H).to(tl.int32)[:, None] + 0 * lane[None, :]
        x = (4 * xq).to(tl.int32)[:, None] + lane[None, :]
        site = (c.to(tl.int64) * H + y) * W + x
    else:
        b = e // N
        site = e - b * N
        c = (site // HW).to(tl.int32)
        rem = site - c.to(tl.int64) * HW
        y = (rem // W).to(tl.int32)
        x = (rem - y.to(tl.int64) * W).to(tl.int32)
    if PN > 0:
        colour = (PA * c + PB * y + PD * x) % PN
    else:
        colour = tl.load(colors_ptr + site, mask=in_range, other=-1).to(tl.int32)
    active = in_range & (colour == col)
    chain = b * N
    if BIAS_BATCHED:
        g = tl.load(h_ptr + chain + site, mask=active, other=0.0)
    else:
        g = tl.load(h_ptr + site, mask=active, other=0.0)
    for k in tl.static_range(K):
        dc = tl.load(offs_ptr + 3 * k)
        dy = tl.load(offs_ptr + 3 * k + 1)
        dx = tl.load(offs_ptr + 3 * k + 2)
        fc = c + dc
        fy = y + dy
        fx = x + dx
        bc = c - dc
        by = y - dy
        bx = x - dx
        if PERIODIC:
            fc = _wrap(fc, C)
            fy = _wrap(fy, H)
            fx = _wrap(fx, W)
            bc = _wrap(bc, C)
            by = _wrap(by, H)
            bx = _wrap(bx, W)
            fok = active
            bok = active
        else:
            fok = active & (fc >= 0) & (fc < C) & (fy >= 0) & (fy < H) & (fx >= 0) & (fx < W)
            bok = active & (bc >= 0) & (bc < C) & (by >= 0) & (by < H) & (bx >= 0) & (bx < W)
        kN = k * N
        f = (fc.to(tl.int64) * H + fy) * W + fx
        bs = (bc.to(tl.int64) * H + by) * W + bx
        jf = tl.load(j_ptr + kN + site, mask=fok, other=0.0)
        sf = tl.load(s_ptr + chain + f, mask=fok, other=0).to(jf.dtype)
        jb = tl.load(j_ptr + kN + bs, mask=bok, other=0.0)
        sb = tl.load(s_ptr + chain + bs, mask=bok, other=0).to(jb.dtype)
        g += jf * sf + jb * sb
    two_beta = tl.load(tb_ptr)
    p = 1.0 / (1.0 + tl.exp(-two_beta * g))
    if HAS_U:
        u = tl.load(u_ptr + e, mask=active, other=1.0)
    else:
        kc2, kc3, kk0, kk1 = philox.key_words(c2, c3, k0, k1)
        w0, w1, w2, w3 = philox.philox4x32(q, kc2, kc3, kk0, kk1)
        w = tl.where(lane[None, :] == 0, w0[:, None],
                     tl.where(lane[None, :] == 1, w1[:, None],
                              tl.where(lane[None, :] == 2, w2[:, None], w3[:, None])))
        u = philox.uniform(w, False)
    new = tl.where(u < p, 1, -1).to(tl.int8)
    tl.store(s_ptr + e, new, mask=active)


@origin_by_window
def gibbs_sweeps(spins, couplings, bias, colors, *, offsets, periodic, n_colors, pattern,
                 n_sweeps, beta, uniforms, key):
    """Launcher (contract in :mod:`arraygen.gibbs`): spins (B, C, H, W) int8 -> new spins.

    ``origin`` (a window of a larger array): one launch per sweep with the window's Philox
    uniforms drawn on the device (:func:`arraygen.backends._philox_xp.origin_by_window`).
    """
    with _interop.cuda_device_context(spins):
        s = _interop.to_torch(spins).to(torch.int8).contiguous().clone()
        B, C, H, W = (int(v) for v in s.shape)
        total = B * C * H * W
        j = _interop.to_torch(couplings).contiguous()
        h = _interop.to_torch(bias).contiguous()
        col = _interop.to_torch(colors).contiguous()
        K = len(offsets)
        if periodic:
            offsets = symmetric_offsets(offsets, (C, H, W))
        offs = torch.as_tensor(np.asarray(offsets, dtype=np.int32).reshape(-1) if K
                               else np.zeros(3, np.int32), device=s.device)
        u_all = None if uniforms is None else _interop.to_torch(uniforms).contiguous()
        pn, pa, pb, pd = pattern if pattern is not None else (0, 0, 0, 0)
        is_f64 = j.dtype == torch.float64
        quads = (total + 3) // 4
        block = 16 if is_simulated("triton") else BLOCK_Q
        grid = (max(1, triton.cdiv(quads, block)),)
        two_beta = torch.full((1,), 2.0 * beta, dtype=j.dtype, device=s.device)
        for t in range(n_sweeps):
            if u_all is None:
                c2, c3 = key.advance(t).counter_words
                k0, k1 = key.key_words
                u_t = j  # unused (HAS_U is False)
            else:
                c2 = c3 = k0 = k1 = 0
                u_t = u_all[t]
            for c in range(n_colors):
                _phase_kernel[grid](s, j, h, col, offs, u_t, C, H, W, pn, pa, pb, pd, total,
                                    c, two_beta, c2, c3, k0, k1, K=K, PERIODIC=bool(periodic),
                                    HAS_U=u_all is not None,
                                    BIAS_BATCHED=h.numel() != C * H * W, IS_F64=is_f64,
                                    ROW_QUADS=W % 4 == 0, BLOCK=block)
    return _interop.like(s, spins)
