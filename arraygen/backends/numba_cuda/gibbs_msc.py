"""Numba-CUDA multi-spin-coded Gibbs sweeps of +-J nearest-neighbour models (contract:
:mod:`arraygen._kernels.gibbs_msc`; the NumPy version is ``arraygen.reference.gibbs.msc_sweeps``).

The same packed layout, field index, stream and threshold table as the CuPy kernels
(``arraygen/backends/cupy/gibbs_msc.cu``), with the simplest schedule: one launch per colour,
one thread per 32-spin word, updated in place (a word's other-colour bits, the only ones its
neighbours read, do not change). Each active spin draws its Philox block, so this kernel is for
the simulator (``NUMBA_ENABLE_CUDASIM=1``: CI checks the bit logic at tiny sizes) and for
correctness, not speed; ``gibbs_sweeps(..., multispin=True, backend="numba_cuda")`` runs it.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import cuda

from ..._kernels.gibbs_msc import threshold_table, words_per_row
from .. import _interop
from .. import _philox as ph
from . import contiguous, device_view, empty, jit, stream_of, threads_per_block

_MASK32 = np.uint32(0xFFFFFFFF)


@functools.cache
def _kernels():
    """Compile (lazily) the pack, colour-phase and unpack kernels."""
    philox = cuda.jit(device=True)(ph.py_philox4x32)

    @jit
    def pack(s, out, W, Wq, total_words):  # pragma: no cover - compiled
        i = cuda.grid(1)
        if i >= total_words:
            return
        r = i // Wq
        q = i - r * Wq
        word = np.uint32(0)
        for j in range(32):
            x = 32 * q + j
            if x < W and s[r * W + x] > 0:
                word |= np.uint32(1) << np.uint32(j)
        out[i] = word

    @jit
    def unpack(words, s, W, Wq, total):  # pragma: no cover - compiled
        e = cuda.grid(1)
        if e >= total:
            return
        r = e // W
        x = e - r * W
        bit = (words[r * Wq + x // 32] >> np.uint32(x % 32)) & np.uint32(1)
        s[e] = 1 if bit else -1

    @cuda.jit(device=True)
    def bit(word, j):
        return (np.uint32(word) >> np.uint32(j)) & np.uint32(1)

    @jit
    def phase(P, sx, sy, table, C, H, W, Wq, rows, signed, periodic, colour,
              c2, c3, k0, k1):  # pragma: no cover - compiled
        i = cuda.grid(1)
        if i >= rows * Wq:
            return
        r = i // Wq
        q = i - r * Wq
        y = r % H
        plane0 = r - y  # first row of this (chain, channel) plane
        sr = (r // H) % C * H + y  # row of the sign planes
        nlive = min(32, W - 32 * q)
        me = np.uint32(P[i])
        # horizontal neighbour bits at the word's ends (0 where they leave an open grid)
        lbit = np.uint32(0)
        lsign = np.uint32(0)
        if q > 0:
            lbit = bit(P[i - 1], 31)
            if signed:
                lsign = bit(sx[sr * Wq + q - 1], 31)
        elif periodic:
            lbit = bit(P[r * Wq + Wq - 1], (W - 1) % 32)
            if signed:
                lsign = bit(sx[sr * Wq + Wq - 1], (W - 1) % 32)
        rbit = np.uint32(0)
        if 32 * q + nlive < W:
            rbit = bit(P[i + 1], 0)
        elif periodic:
            rbit = bit(P[r * Wq], 0)
        nl = ((me << np.uint32(1)) | lbit) & _MASK32
        nr = (me >> np.uint32(1)) | (rbit << np.uint32(nlive - 1))
        up = np.uint32(0)
        dn = np.uint32(0)
        su = np.uint32(0)
        sd = np.uint32(0)
        if y > 0 or periodic:
            yu = y - 1 if y > 0 else H - 1
            up = np.uint32(P[(plane0 + yu) * Wq + q])
            if signed:
                su = np.uint32(sy[(sr - y + yu) * Wq + q])
        if y < H - 1 or periodic:
            yd = y + 1 if y < H - 1 else 0
            dn = np.uint32(P[(plane0 + yd) * Wq + q])
        sxw = np.uint32(0)
        sl = np.uint32(0)
        if signed:
            sd = np.uint32(sy[sr * Wq + q])
            sxw = np.uint32(sx[sr * Wq + q])
            sl = ((sxw << np.uint32(1)) | lsign) & _MASK32
        pos_l = nl ^ sl
        pos_r = nr ^ sxw
        pos_u = up ^ su
        pos_d = dn ^ sd
        par = (y + colour) % 2  # active bits: (x + y) % 2 == colour, x = 32 q + j
        out = me
        e_row = r * W + 32 * q
        for j in range(par, nlive, 2):
            idx = 2 * (bit(pos_l, j) + bit(pos_r, j) + bit(pos_u, j) + bit(pos_d, j))
            x = 32 * q + j
            if not periodic:
                idx += (x == 0) + (x == W - 1) + (y == 0) + (y == H - 1)
            e = e_row + j
            w0, w1, w2, w3 = philox(e // 4, c2, c3, k0, k1)
            lane = e % 4
            w = w0 if lane == 0 else (w1 if lane == 1 else (w2 if lane == 2 else w3))
            m = np.uint32(1) << np.uint32(j)
            if np.uint64(w) < table[idx]:
                out |= m
            else:
                out &= ~m & _MASK32
        P[i] = out

    return pack, phase, unpack


def _to_device(a, like, stream):
    """Host NumPy array ``a`` beside ``like`` (host under the simulator)."""
    if isinstance(like, np.ndarray):
        return a
    return cuda.to_device(a, stream=stream)


def gibbs_sweeps(spins, pm, *, n_sweeps, beta, key, dtype_name):
    """Launcher (contract in :mod:`arraygen._kernels.gibbs_msc`): int8 spins (B, C, H, W) ->
    new int8 spins; ``pm`` the model's :class:`~arraygen._kernels.gibbs_msc.PlusMinusJ`."""
    with _interop.cuda_device_context(spins):
        B, C, H, W = (int(v) for v in spins.shape)
        Wq = words_per_row(W)
        rows = B * C * H
        total = rows * W
        pack, phase, unpack = _kernels()
        stream = stream_of(spins)
        tpb = threads_per_block()
        s_flat = device_view(contiguous(spins).reshape(-1))
        words = empty(spins, rows * Wq, np.uint32)
        P = device_view(words)
        pack[-(-rows * Wq // tpb), tpb, stream](s_flat, P, W, Wq, rows * Wq)
        table = _to_device(threshold_table(pm, beta, dtype_name), spins, stream)
        dummy = np.zeros(1, np.uint32)
        sx = _to_device(pm.sx.reshape(-1), spins, stream) if pm.signed else \
            _to_device(dummy, spins, stream)
        sy = _to_device(pm.sy.reshape(-1), spins, stream) if pm.signed else sx
        k0, k1 = key.key_words
        grid = -(-rows * Wq // tpb)
        for t in range(n_sweeps):
            c2, c3 = key.advance(t).counter_words
            for colour in (0, 1):
                phase[grid, tpb, stream](P, sx, sy, table, C, H, W, Wq, rows, pm.signed,
                                         pm.periodic, colour, np.uint64(c2), np.uint64(c3),
                                         np.uint64(k0), np.uint64(k1))
        out = empty(spins, total, np.int8)
        unpack[-(-total // tpb), tpb, stream](P, device_view(out), W, Wq, total)
    return _interop.like(out.reshape(B, C, H, W), spins)
