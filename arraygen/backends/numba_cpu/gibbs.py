"""Numba CPU kernels of the Gibbs hot path (launcher contract: arraygen.gibbs).

Colourings that repeat along every row with period n (the linear ones, (a c + b y + x) mod n)
run class-major: each grid row is stored as its n classes x = r (mod n), each contiguous and
with a halo, so the sites of one colour in a row are contiguous and every neighbour term is a
shifted contiguous slice (:func:`_class_field`). The colour phases of several sweeps run fused
as a wavefront over the rows (:func:`_stage`: phase f updates row y at step y + f D, D the
largest row offset), which gives the colour-by-colour result while the rows in flight stay in
cache. A chain is split into a band of rows per thread; the rows near band edges, which wait for
the other band, follow after a barrier (:func:`_stage`); several chains run in parallel.
A row's Philox uniforms are drawn when colour 0 reaches it (each block once, all 4 words used,
in a vectorised loop) and float32 probabilities use a vectorised exp (:func:`_exp_f32`).

Other colourings, and periodic grids whose width n does not divide, take the row kernel: per
sweep the uniforms of every site are drawn first, then each colour is one parallel loop over
grid rows (b, c, y) that visits the row's sites of that colour.

Sites of one colour are never coupled, so the in-place updates have no races and the results
do not depend on the thread count or the schedule.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numba
import numpy as np

from ..._kernels.gibbs import default_origin, row_starts
from .._interop import like, to_numpy_view
from .._tuning import Tunable
from . import compile_pair, philox, thread_safe
from .bits import as_float as _as_float
from .bits import as_int as _as_int

@dataclasses.dataclass(frozen=True)
class Tuning:
    """Launch tuning of the Numba CPU Gibbs kernels (override with ``TUNING.override(...)``).

    Attributes
    ----------
    parallel_min_sites
        The row kernel runs single-threaded on grids with fewer sites: below this, starting
        threads and the barrier after every colour cost more than they save (measured on 2
        shared cores: a 1024^2 sweep ran 2-4x faster on one thread than on two).
    wavefront_bytes
        Bytes of grid rows (couplings, bias, spins, uniforms) the wavefront keeps in flight
        when it runs several sweeps at once: about half the 2 MiB L2 cache of the benchmark
        machine.
    bands_min_sites
        One chain of at least this many sites is updated by all threads, a band of rows each.
    class_major
        Colourings periodic along rows run through the class-major kernel (False: the general
        colour-by-colour row kernel; the tests compare the two).
    """

    parallel_min_sites: int = 1 << 22
    wavefront_bytes: int = 1 << 20
    bands_min_sites: int = 1 << 12
    class_major: bool = True


TUNING = Tunable("numba_cpu.gibbs", Tuning())


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


def _fill_rows_kernel(u, rs, W, c2, c3, k0, k1):  # pragma: no cover - compiled
    """u[r * W + x] = float32 uniform of stream element rs[r] + x (rows of a window)."""
    for r in numba.prange(rs.shape[0]):
        e0 = rs[r]
        q0 = e0 // 4
        for q in range(q0, (e0 + W + 3) // 4):
            w = philox.philox4x32(q, c2, c3, k0, k1)
            for lane in range(4):
                x = 4 * q + lane - e0
                if 0 <= x < W:
                    u[r * W + x] = philox.uniform_f32(w[lane])


_FILL_ROWS = compile_pair(_fill_rows_kernel)


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
        # promote to float64 in Numba) and vectorises; s is +-1 wherever j is not zero
        gv[x] += jv[x] if sv[x] > 0 else -jv[x]


_MAGIC = np.float32(12582912.0)  # 1.5 * 2**23: adding it rounds a float32 to an integer
_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)
# degree-5 minimax polynomial of exp on [-ln2/2, ln2/2] (relative error 7.5e-8)
_E0 = np.float32(1.0000001192092896)
_E1 = np.float32(0.9999997019767761)
_E2 = np.float32(0.49998894333839417)
_E3 = np.float32(0.16667574644088745)
_E4 = np.float32(0.04191538318991661)
_E5 = np.float32(0.008297654800117016)


@numba.njit(inline="always", cache=True, nogil=True, error_model="numpy")
def _exp_f32(a):  # pragma: no cover - compiled
    """exp(a) for float32 a clamped to [-87, 87], in code LLVM vectorises.

    Cody-Waite reduction to |r| <= ln2/2, the minimax polynomial, and 2**k built in the
    exponent bits: after the float32 rounding of p = 1 / (1 + exp(-z)) the error of p stays
    below 1e-7 against float64, as with libm's expf (which Numba does not vectorise).
    """
    if a > np.float32(87.0):  # noqa: PLR1730 - selects, not min/max, vectorise in Numba
        a = np.float32(87.0)
    if a < np.float32(-87.0):  # noqa: PLR1730
        a = np.float32(-87.0)
    t = a * _LOG2E + _MAGIC  # k + 1.5 * 2**23: k in the low mantissa bits
    kf = t - _MAGIC
    r = (a - kf * _LN2_HI) - kf * _LN2_LO
    scale = _as_float(np.int32((_as_int(t) - np.int32(0x4B400000) + np.int32(127))
                               << np.int32(23)))
    return (_E0 + r * (_E1 + r * (_E2 + r * (_E3 + r * (_E4 + r * _E5))))) * scale


@numba.njit(inline="always", cache=True, nogil=True, error_model="numpy")
def _decide(sv, g, u, L, two_beta, one, fast):  # pragma: no cover - compiled
    """sv[m] = +1 if u[m] < 1 / (1 + exp(-two_beta g[m])) else -1, for m < L (float32:
    ``fast``, the exp of :func:`_exp_f32`)."""
    if fast:
        for m in range(L):
            z = np.float32(two_beta * g[m])
            p = np.float32(1.0) / (np.float32(1.0) + _exp_f32(-z))
            sv[m] = 1 if u[m] < p else -1
    else:
        for m in range(L):
            p = one / (one + math.exp(-two_beta * g[m]))
            sv[m] = 1 if u[m] < p else -1


@numba.njit(inline="always", cache=True, nogil=True, error_model="numpy")
def _update_row(r, s, j, h, colors, offs, periodic, C, H, W, col, x_step, x_phase, two_beta, u,
                one, fast, g):  # pragma: no cover - compiled
    """Resample the sites of colour ``col`` in grid row r = (b, c, y) of the int8 spins s.

    The field of all W sites of the row is accumulated with contiguous (SIMD) loops; the sites
    of colour ``col`` are x = x0 + x_step * m, x0 = (x_phase[c, y] + col) mod x_step when
    ``x_step > 0``, else those whose ``colors`` entry is ``col``. With ``fast`` (float32 and
    x_step > 0) the probabilities are computed by :func:`_exp_f32`.
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
        _decide(ss, gs, us, gs.shape[0], two_beta, one, fast)
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
        for r in range(t * rows // chunks, (t + 1) * rows // chunks):
            _update_row(r, s, j, h, colors, offs, periodic, C, H, W, col, x_step, x_phase,
                        two_beta, u, one, fast, g)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _colour_phase_serial(s, j, h, colors, offs, periodic, C, H, W, col, x_step, x_phase,
                         two_beta, u, one, fast, chunks):  # pragma: no cover - compiled
    """:func:`_colour_phase` on one thread (small grids: no thread start and barrier)."""
    g = np.empty(W, dtype=j.dtype)
    for r in range(s.shape[0] // W):
        _update_row(r, s, j, h, colors, offs, periodic, C, H, W, col, x_step, x_phase, two_beta,
                    u, one, fast, g)


# ----------------------------------------------------------------------------------------------
# Class-major wavefront path: colourings that repeat with period n along every row
#
# Rows are stored class-major with a halo: element x of a row lives at [x % n, P + x // n] of a
# (n, P + ceil(W / n) + P) block, so the sites of one colour in a row (one class) are contiguous
# and each neighbour term is one contiguous shifted slice. Halo and padding hold zero couplings
# (open grids) or wrapped copies (periodic grids).


@numba.njit(inline="always", cache=True, nogil=True, error_model="numpy")
def _philox_words(uw, q0, nq, c2, c3, k0, k1):  # pragma: no cover - compiled
    """uw[w, i] = float32 uniform of word w of Philox block q0 + i, for i < nq.

    One block per iteration and every word kept: a loop LLVM vectorises (uint64 lanes).
    """
    u0 = uw[0]
    u1 = uw[1]
    u2 = uw[2]
    u3 = uw[3]
    for i in range(nq):
        w0, w1, w2, w3 = philox.philox4x32(q0 + i, c2, c3, k0, k1)
        u0[i] = philox.uniform_f32(w0)
        u1[i] = philox.uniform_f32(w1)
        u2[i] = philox.uniform_f32(w2)
        u3[i] = philox.uniform_f32(w3)


@numba.njit(inline="always", cache=True, nogil=True, error_model="numpy")
def _philox_row(uw, tmp, e0, W, n, direct, c2, c3, k0, k1):  # pragma: no cover - compiled
    """Uniforms of the W elements of a row starting at flat element e0 into uw.

    ``direct`` (e0 % 4 == 0, n = 2 or 4): in class layout, element x at uw[x % n, x // n];
    else word-major as :func:`_philox_words`, uw (4, >= (W + 6) // 4) (:func:`_class_uniforms`
    gathers). n = 2 goes through the scratch ``tmp`` (4, >= W // 4): LLVM does not vectorise
    interleaved stores into two rows of one buffer.
    """
    q0 = e0 // 4
    nq = (e0 - 4 * q0 + W + 3) // 4
    if direct and n == 2:
        _philox_words(tmp, q0, nq, c2, c3, k0, k1)
        for r in range(2):
            lo = tmp[r]
            hi = tmp[r + 2]
            out = uw[r]
            for i in range(nq):
                out[2 * i] = lo[i]
                out[2 * i + 1] = hi[i]
    else:
        _philox_words(uw, q0, nq, c2, c3, k0, k1)


@numba.njit(inline="always", cache=True, nogil=True, error_model="numpy")
def _class_uniforms(uw, off, r, n, L, out):  # pragma: no cover - compiled
    """out[m] = uniform of row element x = r + n m (m < L): word (off + x) % 4 of the row's
    block (off + x) // 4, from the word-major layout of :func:`_philox_row`."""
    for m in range(L):
        x = off + r + n * m
        out[m] = uw[x & 3, x >> 2]


@numba.njit(inline="always", cache=True, nogil=True, error_model="numpy")
def _strided(src, r, n, L, out):  # pragma: no cover - compiled
    """out[m] = src[r + n m] for m < L."""
    v = src[r:]
    for m in range(L):
        out[m] = v[n * m]


@numba.njit(inline="always", cache=True, nogil=True, error_model="numpy")
def _wrap(v, n):  # pragma: no cover - compiled
    """v mod n for v in [-n, 2n)."""
    if v < 0:
        return v + n
    if v >= n:
        return v - n
    return v


@numba.njit(inline="always", cache=True, nogil=True, error_model="numpy")
def _pm(j, s):  # pragma: no cover - compiled
    """j * s for a spin s in {-1, +1}, as a select (stays in j's dtype and vectorises)."""
    return j if s > 0 else -j


@numba.njit(inline="always", cache=True, nogil=True, error_model="numpy")
def _plus4(acc, m, j0, s0, j1, s1, j2, s2, j3, s3):  # pragma: no cover - compiled
    """acc + j0[m] s0[m] + ... + j3[m] s3[m], added left to right."""
    acc += _pm(j0[m], s0[m])
    acc += _pm(j1[m], s1[m])
    acc += _pm(j2[m], s2[m])
    return acc + _pm(j3[m], s3[m])


@numba.njit(inline="always", cache=True, nogil=True, error_model="numpy")
def _add4(g, src, L, j0, s0, j1, s1, j2, s2, j3, s3):  # pragma: no cover - compiled
    """g[m] = src[m] + j0[m] s0[m] + ... + j3[m] s3[m] (added left to right), m < L.

    ``src`` must not overlap ``g`` (LLVM would not vectorise): :func:`_acc4` adds in place.
    """
    for m in range(L):
        g[m] = _plus4(src[m], m, j0, s0, j1, s1, j2, s2, j3, s3)


@numba.njit(inline="always", cache=True, nogil=True, error_model="numpy")
def _acc4(g, L, j0, s0, j1, s1, j2, s2, j3, s3):  # pragma: no cover - compiled
    """g[m] += j0[m] s0[m] + ... + j3[m] s3[m] (added to g left to right), m < L."""
    for m in range(L):
        g[m] = _plus4(g[m], m, j0, s0, j1, s1, j2, s2, j3, s3)


@numba.njit(inline="always", cache=True, nogil=True, error_model="numpy")
def _class_terms(tj, ts, tab, kidx, ch, y, r, C, H, n, Wp, P, periodic):  # pragma: no cover
    """Flat start indices of the neighbour terms of class r of grid row (ch, y); their count.

    ``tab[k, d, r] = (dc, dy, r2, q)``: the neighbour of element m along offset k (d = 0) or
    its opposite (d = 1) is element m + q of class r2 of row (ch + dc, y + dy). Forward edges
    are stored at the site, opposite ones at the neighbour. ``tj`` indexes the flat couplings
    (K, C*H, n, Wp), ``ts`` the flat spins of one chain (C*H, n, Wp).
    """
    row = ch * H + y
    nt = 0
    for k in range(tab.shape[0]):
        for d in range(2):
            c2 = ch + tab[k, d, r, 0]
            y2 = y + tab[k, d, r, 1]
            r2 = tab[k, d, r, 2]
            q = tab[k, d, r, 3]
            if periodic:
                row2 = _wrap(c2, C) * H + _wrap(y2, H)
            elif 0 <= c2 < C and 0 <= y2 < H:
                row2 = c2 * H + y2
            else:
                continue
            ts[nt] = (row2 * n + r2) * Wp + P + q
            if d == 0:
                tj[nt] = ((kidx[k] * C * H + row) * n + r) * Wp + P
            else:
                tj[nt] = ((kidx[k] * C * H + row2) * n + r2) * Wp + P + q
            nt += 1
    return nt


@numba.njit(inline="always", cache=True, nogil=True, error_model="numpy")
def _class_field(g, hv, jf, sf, tj, ts, nt, L):  # pragma: no cover - compiled
    """g[m] = hv[m] + sum of the nt terms jf[tj[i] + m] * sf[ts[i] + m], in term order, m < L.

    Four terms per pass over g (the sum order of :func:`_update_row`, one load and store of g
    per four terms).
    """
    i = 0
    if nt >= 4:
        _add4(g, hv, L, jf[tj[0]:], sf[ts[0]:], jf[tj[1]:], sf[ts[1]:], jf[tj[2]:], sf[ts[2]:],
              jf[tj[3]:], sf[ts[3]:])
        i = 4
    else:
        for m in range(L):
            g[m] = hv[m]
    while i + 4 <= nt:
        _acc4(g, L, jf[tj[i]:], sf[ts[i]:], jf[tj[i + 1]:], sf[ts[i + 1]:],
              jf[tj[i + 2]:], sf[ts[i + 2]:], jf[tj[i + 3]:], sf[ts[i + 3]:])
        i += 4
    while i < nt:
        _axpy(g, jf, tj[i], sf, ts[i], 0, L)
        i += 1


@numba.njit(inline="always", cache=True, nogil=True, error_model="numpy")
def _fill_halo(v, i0, P, Wc):  # pragma: no cover - compiled
    """Periodic halo of the class row at v[i0:i0 + P + Wc + P]: element m < 0 or m >= Wc
    (at i0 + P + m) copies element m mod Wc."""
    for i in range(P):
        v[i0 + i] = v[i0 + Wc + i]
        v[i0 + P + Wc + i] = v[i0 + P + i]


@numba.njit(inline="always", cache=True, nogil=True, error_model="numpy")
def _class_task(sb, sf, hb, model, grid, row, col, uw, u_nat, base, g, ub,
                coef):  # pragma: no cover - compiled
    """Resample the sites of colour ``col`` in grid row ``row`` of one chain (class-major).

    ``sb``: the chain's spins (C*H, n, Wp); ``hb``: its bias. ``model`` = (jf, x_phase, tj,
    ts, nt, lens, rs), ``grid`` = (W, n, P, periodic, direct) (:func:`_class_sweeps`).
    Uniforms: ``uw`` rows from :func:`_philox_row` when it has rows, else the row ``u_nat``
    (W,) of the injected ones; ``base`` is the chain's first grid row (its rows' stream
    elements start at ``rs[base + row]``).
    """
    jf, x_phase, tj, ts, nt, lens, rs = model
    W, n, P, periodic, direct = grid
    two_beta, one, fast = coef
    Wp = sb.shape[2]
    r = _wrap(x_phase[row] + col, n)
    L = lens[r]
    _class_field(g, hb[row, r, P:], jf, sf, tj[row, r], ts[row, r], nt[row, r], L)
    if uw.shape[0] > 0 and direct:
        _decide(sb[row, r, P:], g, uw[row, r], L, two_beta, one, fast)
    else:
        if uw.shape[0] > 0:
            _class_uniforms(uw[row], rs[base + row] & 3, r, n, L, ub)
        else:
            _strided(u_nat, r, n, L, ub)
        _decide(sb[row, r, P:], g, ub, L, two_beta, one, fast)
    if periodic:
        _fill_halo(sf, (row * n + r) * Wp, P, Wp - 2 * P)


@numba.njit(inline="always", cache=True, nogil=True, error_model="numpy")
def _phase_task(sb, sf, hb, model, grid, y, f, t0, keys, uw, tmp, u_all, b, g, ub, C, H,
                coef):  # pragma: no cover - compiled
    """Phase f of the sweep group starting at sweep t0 (sweep t0 + f // n, colour f % n) at
    grid row y of every channel of chain b; Philox rows are drawn at colour 0."""
    W, n, _, _, direct = grid
    rs = model[6]
    t = t0 + f // n
    col = f - (t - t0) * n
    base = b * (C * H)
    for ch in range(C):
        row = ch * H + y
        if uw.shape[0] > 0 and col == 0:
            _philox_row(uw[row], tmp, rs[base + row], W, n, direct, keys[t, 0], keys[t, 1],
                        keys[t, 2], keys[t, 3])
        _class_task(sb, sf, hb, model, grid, row, col, uw,
                    u_all[t % u_all.shape[0], b % u_all.shape[1], row], base, g, ub, coef)


# Not inlined, and one function for both stages: _phase_task (the whole row update) is then
# compiled once instead of twice, which halves the sweep kernel's first compile; the stage is
# called once per task and sweep group.
@numba.njit(cache=True, nogil=True, error_model="numpy")
def _stage(sb, sf, hb, model, grid, cone, a, e, top, bottom, F, D, t0, keys, uw, tmp, u_all, b,
           g, ub, C, H, coef):  # pragma: no cover - compiled
    """Band stage (``cone`` False): phases 0..F-1 on the grid rows [a, e) as a wavefront:
    phase f updates row y at step T = y + f D, phases in increasing order within a step. With
    D >= max |dy| each site sees its neighbours as colour-by-colour sweeps leave them. Where an
    edge borders other rows (``top``, ``bottom``: another band, or the periodic wrap), phase f
    skips the f D rows next to it (the cone stage does them): no row within D of another band
    is touched by a phase f >= 1, and phase 0 reads there only sites of other colours, which
    stay as they are.

    Cone stage (``cone`` True): the rows the band stages left at the band edge p = ``a``:
    phase f = 1..F-1 in order on rows [p - f D, p + f D) (mod H on periodic grids).
    """
    periodic = grid[3]
    outer = F - 1 if cone else e + (F - 1) * D - a
    T = 0
    fc = 0
    for o in range(max(outer, 0)):
        if cone:
            fc = o + 1
            lo, hi = -fc * D, fc * D
        else:
            T = a + o
            lo = 0 if D == 0 else max(0, (T - e) // D + 1)
            hi = (F if T < e else 0) if D == 0 else min(F, (T - a) // D + 1)
        for q in range(lo, hi):
            if cone:
                f = fc
                y = a + q
                if periodic:
                    y = _wrap(y, H)
                elif y < 0 or y >= H:
                    continue
            else:
                f = q
                y = T - f * D
                if (top and y < a + f * D) or (bottom and y >= e - f * D):
                    continue
            _phase_task(sb, sf, hb, model, grid, y, f, t0, keys, uw, tmp, u_all, b, g, ub, C,
                        H, coef)


def _sweeps_kernel(sc, hc, u_all, keys, n_sweeps, group, n_bands, cones, D, model, grid, C, H,
                   coef):  # pragma: no cover - compiled
    """``n_sweeps`` Gibbs sweeps of the class-major int8 spins sc (B, C*H, n, Wp) in place.

    Each chain's rows are split into ``n_bands`` bands; per group of ``group`` sweeps every
    (chain, band) runs :func:`_stage` in parallel, then every (chain, band edge)
    :func:`_stage`. Without ``cones`` (one band) the band has no bordered edges: on an
    open grid, or with the lag D = H (colour by colour) when rows are too few for cones.
    Uniforms: Philox (``keys[t]`` = (c2, c3, k0, k1) of sweep t) when ``keys`` has rows, else
    ``u_all`` (n_sweeps, B, C*H, W). ``model``, ``grid``: :func:`_class_task`; ``coef``:
    (2 beta, 1, fast).
    """
    W, n, P, periodic, direct = grid
    B = sc.shape[0]
    Wp = sc.shape[3]
    n_rows = C * H if keys.shape[0] > 0 else 0
    tasks = B * n_bands
    g = np.empty((tasks, Wp), dtype=hc.dtype)
    ub = np.empty((tasks, Wp), dtype=u_all.dtype)
    tmp = np.empty((tasks, 4, (W + 7) // 4), dtype=np.float32)
    uw = np.empty((B, n_rows, n if direct else 4, max((W + 7) // 4, Wp - 2 * P)),
                  dtype=np.float32)
    edges = (n_bands if periodic else n_bands - 1) if cones else 0
    # the stage flags as run-time booleans (not literals), so that both stages share one
    # compiled _stage
    band_stage = n_bands < 0
    cone_stage = not band_stage
    for t0 in range(0, n_sweeps, group):
        F = n * min(group, n_sweeps - t0)
        for i in numba.prange(tasks):
            b = i // n_bands
            band = i - b * n_bands
            _stage(sc[b], sc[b].reshape(-1), hc[b % hc.shape[0]], model, grid, band_stage,
                   band * H // n_bands, (band + 1) * H // n_bands,
                   cones and (periodic or band > 0),
                   cones and (periodic or band < n_bands - 1), F, D, t0, keys, uw[b],
                   tmp[i], u_all, b, g[i], ub[i], C, H, coef)
        for i in numba.prange(B * edges):
            b = i // edges
            j = i - b * edges  # edge j of chain b: scratch j of its bands
            p = (j + (0 if periodic else 1)) * H // n_bands
            _stage(sc[b], sc[b].reshape(-1), hc[b % hc.shape[0]], model, grid, cone_stage, p, p,
                   cones, cones, F, D, t0, keys, uw[b], tmp[b * n_bands + j], u_all, b,
                   g[b * n_bands + j], ub[b * n_bands + j], C, H, coef)


_SWEEPS = compile_pair(_sweeps_kernel, error_model="numpy")


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _term_table(tab, kidx, C, H, n, Wp, P, periodic):  # pragma: no cover - compiled
    """``(tj, ts, nt)``: :func:`_class_terms` of every class r of every grid row i at
    [i, r] (the kernel's per-task tables)."""
    K2 = 2 * tab.shape[0]
    tj = np.zeros((C * H, n, max(K2, 1)), dtype=np.int64)
    ts = np.zeros((C * H, n, max(K2, 1)), dtype=np.int64)
    nt = np.zeros((C * H, n), dtype=np.int64)
    for ch in range(C):
        for y in range(H):
            for r in range(n):
                nt[ch * H + y, r] = _class_terms(tj[ch * H + y, r], ts[ch * H + y, r], tab, kidx,
                                                 ch, y, r, C, H, n, Wp, P, periodic)
    return tj, ts, nt




@numba.njit(inline="always", cache=True, nogil=True, error_model="numpy")
def _row_to_classes(src, dst, n, P, periodic):  # pragma: no cover - compiled
    """dst[r, P + m] = src[r + n m]: one row (W,) in class-major form (n, P + Wc + P),
    periodic halos filled (the rest of the padding left as it is)."""
    W = src.shape[0]
    for r in range(n):
        _strided(src, r, n, (W - r + n - 1) // n, dst[r, P:])
        if periodic:
            _fill_halo(dst[r], 0, P, dst.shape[1] - 2 * P)


def _to_classes_kernel(s, j, h, sc, jc, hc, n, P, periodic):  # pragma: no cover - compiled
    """Rows (R, W) of the spins, couplings and bias to class-major (R, n, P + Wc + P)."""
    for i in numba.prange(s.shape[0]):
        _row_to_classes(s[i], sc[i], n, P, periodic)
    for i in numba.prange(j.shape[0]):
        _row_to_classes(j[i], jc[i], n, P, periodic)
    for i in numba.prange(h.shape[0]):
        _row_to_classes(h[i], hc[i], n, P, periodic)


def _from_classes_kernel(src, dst, n, P):  # pragma: no cover - compiled
    """dst[i, r + n m] = src[i, r, P + m]: rows back from class-major form."""
    W = dst.shape[1]
    for i in numba.prange(dst.shape[0]):
        for r in range(n):
            d = dst[i, r:]
            s = src[i, r, P:]
            for m in range((W - r + n - 1) // n):
                d[n * m] = s[m]


_TO_CLASSES = compile_pair(_to_classes_kernel, error_model="numpy")
_FROM_CLASSES = compile_pair(_from_classes_kernel, error_model="numpy")


def _class_tables(offsets, shape, n, periodic):
    """``(tab, kidx, lens, P, D)`` for :func:`_class_field`, from the offsets that give edges.

    ``kidx`` maps table rows to coupling rows, ``lens[r]`` is the length of class r, ``P`` the
    halo (largest |q|) and ``D`` the largest |dy| (the wavefront's row lag). Periodic shifts
    are taken in the symmetric range (dy in [-H/2, H/2), q in [-Wc/2, Wc/2)).
    """
    C, H, W = shape
    wc = -(-W // n)
    rows, kidx = [], []
    for k, (dc, dy, dx) in enumerate(offsets):
        if periodic:
            dc, dy = dc % C, (dy + H // 2) % H - H // 2
        elif abs(dc) >= C or abs(dy) >= H or abs(dx) >= W:
            continue
        entry = []
        for sgn in (1, -1):
            per_class = []
            for r in range(n):
                q, r2 = divmod(r + sgn * dx, n)
                if periodic:
                    q = (q + wc // 2) % wc - wc // 2
                per_class.append((sgn * dc, sgn * dy, r2, q))
            entry.append(per_class)
        rows.append(entry)
        kidx.append(k)
    tab = np.asarray(rows, dtype=np.int64).reshape(len(rows), 2, n, 4)
    lens = np.asarray([(W - r + n - 1) // n for r in range(n)], dtype=np.int64)
    halo = int(np.abs(tab[..., 3]).max(initial=0))
    lag = int(np.abs(tab[..., 1]).max(initial=0))
    return tab, np.asarray(kidx, dtype=np.int64), lens, halo, lag


@functools.lru_cache(maxsize=64)
def _class_plan(offsets, shape, n, periodic):
    """``(kidx, lens, P, D, tj, ts, nt)``: :func:`_class_tables` and :func:`_term_table` of a
    model geometry (cached; the arrays are read-only)."""
    C, H, W = shape
    tab, kidx, lens, P, lag = _class_tables(offsets, shape, n, periodic)
    tables = _term_table(tab, kidx, C, H, n, -(-W // n) + 2 * P, P, bool(periodic))
    out = (kidx, lens) + tables
    for a in out:
        a.flags.writeable = False
    return out[:2] + (P, lag) + out[2:]


@functools.lru_cache(maxsize=64)
def _pattern_phase(pattern, C, H):
    """x_phase (C*H,) of the linear colouring ``pattern`` = (n, a, b, 1): the sites of colour
    c in row (ch, y) are x = (x_phase + c) mod n (cached, read-only)."""
    n, a, b, _ = pattern
    cc, yy = np.meshgrid(np.arange(C), np.arange(H), indexing="ij")
    out = np.ascontiguousarray((-(a * cc + b * yy)) % n, dtype=np.int64).reshape(-1)
    out.flags.writeable = False
    return out


def _sweep_keys(key, n_sweeps):
    """(n_sweeps, 4) uint64: Philox words (c2, c3, k0, k1) of ``key.advance(t)``."""
    counters = np.uint64(key.counter) + np.arange(n_sweeps, dtype=np.uint64)  # wraps mod 2**64
    out = np.empty((n_sweeps, 4), dtype=np.uint64)
    out[:, 0] = counters & np.uint64(0xFFFFFFFF)
    out[:, 1] = counters >> np.uint64(32)
    out[:, 2], out[:, 3] = key.key_words
    return out


def _schedule(B, N, H, n, D, periodic, n_sweeps, row_bytes, tuning):
    """``(bands, group, cones, lag)`` of :func:`_sweeps_kernel` for B chains of N sites.

    One chain of at least ``tuning.bands_min_sites`` sites is split into a band per thread.
    ``group``: sweeps per wavefront, as many as keep the rows in flight (about D rows per
    colour and sweep, ``row_bytes`` each) within ``tuning.wavefront_bytes``, and few enough that
    the cones at band edges (F D rows each side, F = n group) stay apart. Grids too short for
    cones run colour by colour (lag H).
    """
    threads = numba.get_num_threads()
    bands = threads if B == 1 and threads > 1 and N >= tuning.bands_min_sites else 1
    if D == 0:
        return bands, max(n_sweeps, 1), False, 0
    group = max(1, min(tuning.wavefront_bytes // (D * n * row_bytes), n_sweeps))
    bands = min(bands, H // (2 * n * D))
    if not periodic and bands <= 1:
        return 1, group, False, D
    if bands == 0:
        return 1, max(n_sweeps, 1), False, H
    return bands, max(1, min(group, H // bands // (2 * n * D))), True, D


def _class_sweeps(s, j, h, x_phase, offsets, shape, n, periodic, n_sweeps, beta, u_all, key,
                  tuning, origin):
    """Sweeps through the class-major kernel; s int8 (B, N), j (K, N), h (N,) or (B, N);
    ``origin`` of the stream elements (:func:`arraygen._kernels.gibbs.row_starts`)."""
    C, H, W = shape
    B = s.shape[0]
    dtype = j.dtype.type
    kidx, lens, P, lag, tj, ts, nt = _class_plan(tuple(offsets), shape, n, bool(periodic))
    wp = -(-W // n) + 2 * P
    parallel = B * C * H * W >= tuning.bands_min_sites
    # padding and halo of open grids must hold zero couplings; other padding is never used
    sc = np.empty((B * C * H, n, wp), dtype=np.int8)
    jc = (np.empty if periodic else np.zeros)((j.shape[0] * C * H, n, wp), dtype=j.dtype)
    hc = np.empty((h.size // W, n, wp), dtype=h.dtype)
    _TO_CLASSES[parallel](s.reshape(-1, W), j.reshape(-1, W), h.reshape(-1, W), sc, jc, hc, n,
                          P, bool(periodic))
    if u_all is None:
        keys = _sweep_keys(key, n_sweeps)
        u4 = np.zeros((1, 1, C * H, 1), dtype=np.float32)
    else:
        keys = np.zeros((0, 4), dtype=np.uint64)
        u4 = u_all.reshape(n_sweeps, B, C * H, W)
    rs = row_starts((B, C, H, W), origin)
    model = (jc.reshape(-1), x_phase, tj, ts, nt, lens, rs)
    direct = W % 4 == 0 and n in (2, 4) and not np.any(rs & 3)
    grid = (W, n, P, bool(periodic), direct)
    row_bytes = C * (wp * (j.dtype.itemsize * (len(kidx) + 1) + 1) + 4 * W)
    bands, group, cones, lag = _schedule(B, C * H * W, H, n, lag, periodic, n_sweeps, row_bytes,
                                         tuning)
    _SWEEPS[B * bands > 1 and parallel](
        sc.reshape(B, C * H, n, wp), hc.reshape(-1, C * H, n, wp), u4, keys, n_sweeps, group,
        bands, cones, lag, model, grid, C, H, (dtype(2.0 * beta), dtype(1.0), dtype is np.float32))
    out = np.empty((B * C * H, W), dtype=np.int8)
    _FROM_CLASSES[parallel](sc, out, n, P)
    return out


def _row_pattern(colors: np.ndarray, n_colors: int, W: int):
    """``(n_colors, x_phase)`` if every row's colours are ``(x - x_phase[row]) mod n_colors``
    (so a row's sites of colour c are x = (x_phase + c) mod n, stepping by n), else ``(0, _)``."""
    rows = colors.reshape(-1, W).astype(np.int64)
    phase = (rows[:, :1]) % n_colors
    if np.array_equal(rows, (phase + np.arange(W)) % n_colors):
        return n_colors, np.ascontiguousarray((-phase[:, 0]) % n_colors)
    return 0, np.zeros(1, dtype=np.int64)


@thread_safe
def gibbs_sweeps(spins, couplings, bias, colors, *, offsets, periodic, n_colors, pattern,
                 n_sweeps, beta, uniforms, key, origin=None):
    """Launcher (contract in :mod:`arraygen.gibbs`): spins (B, C, H, W) int8 -> new spins."""
    s_np = to_numpy_view(spins)
    B, C, H, W = s_np.shape
    N = C * H * W
    j = np.ascontiguousarray(to_numpy_view(couplings)).reshape(-1)
    h = np.ascontiguousarray(to_numpy_view(bias)).reshape(-1)
    col = np.ascontiguousarray(to_numpy_view(colors), dtype=np.int8).reshape(-1)
    if pattern is not None and pattern[3] == 1:
        x_step, x_phase = pattern[0], _pattern_phase(tuple(pattern), C, H)
    else:
        x_step, x_phase = _row_pattern(col, n_colors, W)
    u_all = None if uniforms is None else np.ascontiguousarray(to_numpy_view(uniforms))
    tuning = TUNING.current()
    if tuning.class_major and x_step > 0 and (not periodic or W % x_step == 0):
        s = np.ascontiguousarray(s_np, dtype=np.int8).reshape(B, N)
        out = _class_sweeps(s, j.reshape(-1, N), h, x_phase, offsets, (C, H, W), x_step,
                            periodic, n_sweeps, beta, u_all, key, tuning,
                            default_origin(s_np.shape) if origin is None else origin)
        return like(out.reshape(B, C, H, W), spins)
    s = np.array(s_np, dtype=np.int8, order="C").reshape(-1)
    offs = np.asarray(offsets, dtype=np.int64).reshape(len(offsets), 3)
    dtype = j.dtype.type
    fast = dtype is np.float32 and x_step > 0
    two_beta = dtype(2.0 * beta)
    one = dtype(1.0)
    u_buf = np.empty(B * N, dtype=np.float32) if u_all is None else None
    parallel = B * N >= tuning.parallel_min_sites
    chunks = min(B * C * H, 4 * numba.get_num_threads())  # row blocks, a few per thread
    phase = _colour_phase if parallel else _colour_phase_serial
    fill = _FILL_UNIFORMS[parallel]
    rows = None if origin is None else row_starts((B, C, H, W), origin)
    for t in range(n_sweeps):
        if u_all is None:
            c2, c3, k0, k1 = philox.key_words(key.advance(t))
            if rows is None:
                fill(u_buf, c2, c3, k0, k1)
            else:
                _FILL_ROWS[parallel](u_buf, rows, W, c2, c3, k0, k1)
            u = u_buf
        else:
            u = u_all[t].reshape(-1)
        for c in range(n_colors):
            phase(s, j, h, col, offs, bool(periodic), C, H, W, np.int8(c), x_step, x_phase,
                  two_beta, u, one, fast, chunks)
    return like(s.reshape(B, C, H, W), spins)
