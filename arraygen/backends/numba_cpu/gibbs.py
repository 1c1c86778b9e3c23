"""Numba CPU (parallel, prange) kernels of the Gibbs hot path (launcher contract: arraygen.gibbs).

Per sweep the uniforms of every site are drawn first (one Philox block per 4 elements, in
parallel); then each colour is one parallel loop over grid rows (b, c, y), and each row visits
its sites of that colour. Sites of one colour are never coupled, so the in-place update has no
races and the result does not depend on the thread count.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from .._interop import like, to_numpy_view
from . import compile_pair, philox

#: Grids with fewer sites run single-threaded: below this, starting threads and the barrier
#: after every colour cost more than they save (measured on 2 shared cores: a 1024^2 sweep ran
#: 2-4x faster on one thread than on two).
PARALLEL_MIN_SITES = 1 << 22


def _fill_uniforms_kernel(u, c2, c3, k0, k1):  # pragma: no cover - compiled
    n = u.shape[0]
    for q in numba.prange((n + 3) // 4):
        w0, w1, w2, w3 = philox.philox4x32(q, c2, c3, k0, k1)
        e = 4 * q
        u[e] = philox.uniform_f32(w0)
        if e + 1 < n:
            u[e + 1] = philox.uniform_f32(w1)
        if e + 2 < n:
            u[e + 2] = philox.uniform_f32(w2)
        if e + 3 < n:
            u[e + 3] = philox.uniform_f32(w3)


_FILL_UNIFORMS = compile_pair(_fill_uniforms_kernel)


@numba.njit(inline="always", cache=True, nogil=True, error_model="numpy")
def _axpy(g, j, joff, s, soff, lo, hi):  # pragma: no cover - compiled
    """g[x] += j[joff + x] * s[soff + x] for x in [lo, hi).

    Written on slices with a loop from 0 so that no negative-index wraparound is generated
    and LLVM vectorises it (about 10x faster than indexing with offsets).
    """
    if hi <= lo:
        return
    gv = g[lo:hi]
    jv = j[joff + lo:joff + hi]
    sv = s[soff + lo:soff + hi]
    for x in range(hi - lo):
        # a select instead of j * s keeps the arithmetic in j's dtype (int8 * float32 would
        # promote to float64 in Numba) and vectorises; s = 0 never occurs (spins are +-1)
        gv[x] += jv[x] if sv[x] > 0 else -jv[x]


_MAGIC = np.float32(12582912.0)  # 1.5 * 2**23: adding it rounds a float32 to an integer
_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)


@numba.njit(inline="always", cache=True, nogil=True, error_model="numpy")
def _sigmoid_f32(z, tm, out, n):  # pragma: no cover - compiled
    """out[m] = 1 / (1 + exp(-z[m])) for m < n in float32, in loops LLVM vectorises.

    exp by Cody-Waite reduction to |r| <= ln2/2 and a degree-7 Taylor polynomial, scaled by
    2**k built in the exponent bits (|error| < 1e-7 against float64, the size of float32
    rounding of p near 1; libm's expf is not vectorised by Numba).
    """
    for m in range(n):
        a = -z[m]
        if a > np.float32(87.0):  # noqa: PLR1730 - selects, not min/max, vectorise in Numba
            a = np.float32(87.0)
        if a < np.float32(-87.0):  # noqa: PLR1730
            a = np.float32(-87.0)
        t = a * _LOG2E + _MAGIC
        kf = t - _MAGIC
        r = (a - kf * _LN2_HI) - kf * _LN2_LO
        out[m] = np.float32(1.0) + r * (np.float32(1.0) + r * (np.float32(0.5) + r * (
            np.float32(1.0 / 6) + r * (np.float32(1.0 / 24) + r * (np.float32(1.0 / 120) + r * (
                np.float32(1.0 / 720) + r * np.float32(1.0 / 5040)))))))
        tm[m] = t
    bits = tm.view(np.int32)
    for m in range(n):
        bits[m] = (bits[m] - np.int32(0x4B400000) + np.int32(127)) << np.int32(23)
    for m in range(n):
        out[m] = np.float32(1.0) / (np.float32(1.0) + out[m] * tm[m])


@numba.njit(inline="always", cache=True, nogil=True, error_model="numpy")
def _update_row(r, s, j, h, colors, offs, periodic, C, H, W, col, x_step, x_phase, two_beta, u,
                one, fast, g, zc, tm, pc):  # pragma: no cover - compiled
    """Resample the sites of colour ``col`` in grid row r = (b, c, y) of the int8 spins s.

    The field of all W sites of the row is accumulated with contiguous (SIMD) loops; the sites
    of colour ``col`` are x = x0 + x_step * m, x0 = (x_phase[c, y] + col) mod x_step when
    ``x_step > 0``, else those whose ``colors`` entry is ``col``. With ``fast`` (float32 and
    x_step > 0) the probabilities are computed by :func:`_sigmoid_f32`.
    """
    K = offs.shape[0]
    N = C * H * W
    b = r // (C * H)
    cy = r - b * (C * H)
    c = cy // H
    y = cy - c * H
    row = c * H * W + y * W          # site index of (c, y, 0)
    sb = b * N                        # chain offset in s and u
    hb = sb if h.shape[0] != N else 0
    hv = h[hb + row:hb + row + W]
    for x in range(W):
        g[x] = hv[x]
    for k in range(K):
        dc = offs[k, 0]
        dy = offs[k, 1]
        dx = offs[k, 2]
        fc = c + dc
        fy = y + dy
        pc_ = c - dc
        py = y - dy
        jk = k * N
        if periodic:
            frow = (fc % C) * H * W + (fy % H) * W
            brow = (pc_ % C) * H * W + (py % H) * W
            d = dx % W
            # forward neighbour x + d (wrapped), edge weight stored at this site
            _axpy(g, j, jk + row, s, sb + frow + d, 0, W - d)
            _axpy(g, j, jk + row, s, sb + frow + d - W, W - d, W)
            # backward neighbour x - d (wrapped), edge weight stored at the neighbour
            _axpy(g, j, jk + brow - d, s, sb + brow - d, d, W)
            _axpy(g, j, jk + brow - d + W, s, sb + brow - d + W, 0, d)
        else:
            if 0 <= fc < C and 0 <= fy < H:
                frow = fc * H * W + fy * W
                _axpy(g, j, jk + row, s, sb + frow + dx, max(0, -dx), min(W, W - dx))
            if 0 <= pc_ < C and 0 <= py < H:
                brow = pc_ * H * W + py * W
                _axpy(g, j, jk + brow - dx, s, sb + brow - dx, max(0, dx), min(W, W + dx))
    if x_step > 0:
        # strided views of this colour's sites: indices from 0, so no wraparound checks
        x0 = (x_phase[c * H + y] + col) % x_step
        gs = g[x0::x_step]
        ss = s[sb + row + x0:sb + row + W:x_step]
        us = u[sb + row + x0:sb + row + W:x_step]
        n = gs.shape[0]
        if fast:
            for m in range(n):
                zc[m] = np.float32(two_beta * gs[m])
            _sigmoid_f32(zc, tm, pc, n)
            for m in range(n):
                ss[m] = 1 if us[m] < pc[m] else -1
        else:
            for m in range(n):
                p = one / (one + math.exp(-two_beta * gs[m]))
                ss[m] = 1 if us[m] < p else -1
    else:
        for x in range(W):
            if colors[row + x] == col:
                p = one / (one + math.exp(-two_beta * g[x]))
                s[sb + row + x] = 1 if u[sb + row + x] < p else -1


@numba.njit(parallel=True, cache=True, nogil=True, error_model="numpy")
def _colour_phase(s, j, h, colors, offs, periodic, C, H, W, col, x_step, x_phase, two_beta, u,
                  one, fast, chunks):  # pragma: no cover - compiled
    """Update every site of colour ``col`` of the int8 spins s (B*C*H*W,) in place: one
    parallel loop over grid rows (sites of one colour are never coupled: no races)."""
    rows = s.shape[0] // W
    for t in numba.prange(chunks):
        g = np.empty(W, dtype=j.dtype)
        zc = np.empty(W, dtype=np.float32)
        tm = np.empty(W, dtype=np.float32)
        pc = np.empty(W, dtype=np.float32)
        for r in range(t * rows // chunks, (t + 1) * rows // chunks):
            _update_row(r, s, j, h, colors, offs, periodic, C, H, W, col, x_step, x_phase,
                        two_beta, u, one, fast, g, zc, tm, pc)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _colour_phase_serial(s, j, h, colors, offs, periodic, C, H, W, col, x_step, x_phase,
                         two_beta, u, one, fast, chunks):  # pragma: no cover - compiled
    """:func:`_colour_phase` on one thread (small grids: no thread start and barrier)."""
    g = np.empty(W, dtype=j.dtype)
    zc = np.empty(W, dtype=np.float32)
    tm = np.empty(W, dtype=np.float32)
    pc = np.empty(W, dtype=np.float32)
    for r in range(s.shape[0] // W):
        _update_row(r, s, j, h, colors, offs, periodic, C, H, W, col, x_step, x_phase, two_beta,
                    u, one, fast, g, zc, tm, pc)


def _row_pattern(colors: np.ndarray, n_colors: int, W: int):
    """``(n_colors, x_phase)`` if every row's colours are ``(x - x_phase[row]) mod n_colors``
    (so a row's sites of colour c are x = (x_phase + c) mod n, stepping by n), else ``(0, _)``."""
    rows = colors.reshape(-1, W).astype(np.int64)
    phase = (rows[:, :1]) % n_colors
    if np.array_equal(rows, (phase + np.arange(W)) % n_colors):
        return n_colors, np.ascontiguousarray((-phase[:, 0]) % n_colors)
    return 0, np.zeros(1, dtype=np.int64)


def gibbs_sweeps(spins, couplings, bias, colors, *, offsets, periodic, n_colors, pattern,
                 n_sweeps, beta, uniforms, key):
    """Launcher (contract in :mod:`arraygen.gibbs`): spins (B, C, H, W) int8 -> new spins."""
    s_np = to_numpy_view(spins)
    B, C, H, W = s_np.shape
    N = C * H * W
    s = np.array(s_np, dtype=np.int8, order="C").reshape(-1)
    j = np.ascontiguousarray(to_numpy_view(couplings)).reshape(-1)
    h = np.ascontiguousarray(to_numpy_view(bias)).reshape(-1)
    col = np.ascontiguousarray(to_numpy_view(colors), dtype=np.int8).reshape(-1)
    offs = np.asarray(offsets, dtype=np.int64).reshape(len(offsets), 3)
    if pattern is not None and pattern[3] == 1:
        n, a, b, _ = pattern
        cc, yy = np.meshgrid(np.arange(C), np.arange(H), indexing="ij")
        x_step, x_phase = n, np.ascontiguousarray((-(a * cc + b * yy)) % n).reshape(-1)
    else:
        x_step, x_phase = _row_pattern(col, n_colors, W)
    dtype = j.dtype.type
    fast = dtype is np.float32 and x_step > 0
    two_beta = dtype(2.0 * beta)
    one = dtype(1.0)
    u_all = None if uniforms is None else np.ascontiguousarray(to_numpy_view(uniforms))
    u_buf = np.empty(B * N, dtype=np.float32) if u_all is None else None
    parallel = B * N >= PARALLEL_MIN_SITES
    chunks = min(B * C * H, 4 * numba.get_num_threads())  # row blocks, a few per thread
    phase = _colour_phase if parallel else _colour_phase_serial
    fill = _FILL_UNIFORMS[parallel]
    for t in range(n_sweeps):
        if u_all is None:
            c2, c3, k0, k1 = philox.key_words(key.advance(t))
            fill(u_buf, c2, c3, k0, k1)
            u = u_buf
        else:
            u = u_all[t].reshape(-1)
        for c in range(n_colors):
            phase(s, j, h, col, offs, bool(periodic), C, H, W, np.int8(c), x_step, x_phase,
                  two_beta, u, one, fast, chunks)
    return like(s.reshape(B, C, H, W), spins)
