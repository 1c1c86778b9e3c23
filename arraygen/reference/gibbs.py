"""Float64 oracle of the Gibbs hot path (DESIGN 4.3): explicit edge lists and site loops.

A model is given by ``offsets`` (K triples), ``couplings`` (K, C, H, W), ``bias`` (C, H, W) or
(B, C, H, W) and ``periodic``. ``edges`` lists every undirected edge (i, j, k) once, with
flat site indices i, j = i + o_k (wrapped on all three axes if periodic, dropped if it leaves
the grid otherwise); everything else is computed from that list.
"""

from __future__ import annotations

import itertools

import numpy as np


def edges(offsets, shape, periodic: bool) -> list[tuple[int, int, int]]:
    """Every edge (i, j, k): site i, its neighbour j = i + o_k (flat C-order indices)."""
    C, H, W = shape
    out = []
    for k, (dc, dy, dx) in enumerate(offsets):
        for c, y, x in itertools.product(range(C), range(H), range(W)):
            nc, ny, nx = c + dc, y + dy, x + dx
            if periodic:
                nc, ny, nx = nc % C, ny % H, nx % W
            elif not (0 <= nc < C and 0 <= ny < H and 0 <= nx < W):
                continue
            out.append(((c * H + y) * W + x, (nc * H + ny) * W + nx, k))
    return out


def _flat_params(couplings, bias, shape):
    n = int(np.prod(shape))
    j = np.asarray(couplings, dtype=np.float64).reshape(len(couplings), n)
    h = np.asarray(bias, dtype=np.float64)
    h = h.reshape(-1, n) if h.ndim == 4 else h.reshape(1, n)
    return j, h


def energy(offsets, couplings, bias, spins, periodic: bool) -> np.ndarray:
    """E(s) = -sum_i h_i s_i - sum_edges J_k,i s_i s_j for spins (B, C, H, W) -> (B,)."""
    s = np.asarray(spins, dtype=np.float64)
    shape = s.shape[1:]
    j, h = _flat_params(couplings, bias, shape)
    s = s.reshape(s.shape[0], -1)
    e = -np.sum(h * s, axis=1)
    for i, nb, k in edges(offsets, shape, periodic):
        e = e - j[k, i] * s[:, i] * s[:, nb]
    return e


def neighbour_lists(offsets, couplings, shape, periodic: bool):
    """For each site the list of (neighbour, weight) over all edges touching it."""
    n = int(np.prod(shape))
    j = np.asarray(couplings, dtype=np.float64).reshape(len(couplings), n)
    nbrs = [[] for _ in range(n)]
    for i, nb, k in edges(offsets, shape, periodic):
        nbrs[i].append((nb, j[k, i]))
        nbrs[nb].append((i, j[k, i]))
    return nbrs


def gibbs_sweeps(offsets, couplings, bias, colors, spins, uniforms, beta: float,
                 periodic: bool, return_margin: bool = False):
    """Heat-bath sweeps with given uniforms (n_sweeps, B, C, H, W); spins (B, C, H, W).

    Per sweep and colour c = 0..max(colors), each site i of colour c (in turn; they are not
    coupled, so the order does not matter) takes +1 iff u_i < sigmoid(2 beta gamma_i), with
    gamma_i = h_i + sum over edges (i, j) of J s_j. With ``return_margin`` also returns the
    smallest |u_i - P_i| over all decisions (how close the run came to a rounding tie).
    """
    margin = np.inf
    s = np.asarray(spins, dtype=np.float64).copy()
    B = s.shape[0]
    shape = s.shape[1:]
    n = int(np.prod(shape))
    s = s.reshape(B, n)
    u = np.asarray(uniforms, dtype=np.float64).reshape(-1, B, n)
    _, h = _flat_params(couplings, bias, shape)
    nbrs = neighbour_lists(offsets, couplings, shape, periodic)
    col = np.asarray(colors).reshape(n)
    for t in range(u.shape[0]):
        for c in range(int(col.max()) + 1):
            for b in range(B):
                for i in np.flatnonzero(col == c):
                    gamma = h[b % h.shape[0], i] + sum(w * s[b, nb] for nb, w in nbrs[i])
                    p = 1.0 / (1.0 + np.exp(-2.0 * beta * gamma))
                    margin = min(margin, abs(u[t, b, i] - p))
                    s[b, i] = 1.0 if u[t, b, i] < p else -1.0
    out = s.reshape((B,) + tuple(shape))
    return (out, margin) if return_margin else out


def conditional_probability(offsets, couplings, bias, spins, beta: float,
                            periodic: bool) -> np.ndarray:
    """P(s_i = +1 | rest) = sigmoid(2 beta gamma_i) for every site of spins (B, C, H, W)."""
    s = np.asarray(spins, dtype=np.float64)
    B = s.shape[0]
    shape = s.shape[1:]
    n = int(np.prod(shape))
    s = s.reshape(B, n)
    _, h = _flat_params(couplings, bias, shape)
    gamma = np.broadcast_to(h, (B, n)).copy()
    for i, nb, k in edges(offsets, shape, periodic):
        w = float(np.asarray(couplings, dtype=np.float64).reshape(len(couplings), n)[k, i])
        gamma[:, i] += w * s[:, nb]
        gamma[:, nb] += w * s[:, i]
    return (1.0 / (1.0 + np.exp(-2.0 * beta * gamma))).reshape((B,) + tuple(shape))


def exact_distribution(offsets, couplings, bias, shape, periodic: bool, beta: float = 1.0):
    """All 2**N states (site 0 most significant bit, bit 1 -> +1) and their probabilities."""
    n = int(np.prod(shape))
    m = np.arange(2**n)[:, None]
    states = np.where((m >> np.arange(n - 1, -1, -1)[None, :]) & 1, 1.0, -1.0)
    states = states.reshape((2**n,) + tuple(shape))
    h = np.asarray(bias, dtype=np.float64)
    if h.ndim == 4:
        out = [exact_distribution(offsets, couplings, hb, shape, periodic, beta)[1] for hb in h]
        return states, np.stack(out)
    e = energy(offsets, couplings, h, states, periodic)
    w = np.exp(-beta * (e - e.min()))
    return states, w / w.sum()


def is_proper_colouring(offsets, colors, periodic: bool) -> bool:
    """True iff no edge joins two sites of the same colour."""
    col = np.asarray(colors).reshape(-1)
    return all(col[i] != col[j] for i, j, _ in edges(offsets, np.asarray(colors).shape, periodic))


# ----------------------------------------------------------------------------------------------
# Multi-spin coding (+-J nearest-neighbour models): the algorithm of the msc kernels, bit-exact
#
# Spins (B, C, H, W) are packed into rows of uint32 words (bit j of word q <-> x = 32 q + j);
# the couplings of the edges (x, x+1) and (y, y+1) all have magnitude ``a`` and signs given by
# ``neg_x`` / ``neg_y`` (C, H, W) booleans; the bias is one value ``h``. A site with P positive
# terms J s_nb > 0 and M missing edges (open grid) has field index idx = 2 P + M and field
# gamma = h + a (idx - 4); it takes +1 iff its Philox word w < table[idx] (the integer
# threshold of u(w) < p, p = sigmoid(2 beta gamma) in float64 rounded once to ``dtype``; 2^32
# stored as 2^32 - 1).

_M0, _M1, _W0, _W1 = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85
_MASK = 0xFFFFFFFF


def philox_words(seed: int, counter: int, n: int) -> np.ndarray:
    """Words 0..n-1 (uint64 holding uint32) of the Philox4x32-10 stream (seed, counter):
    element e is word e % 4 of block e // 4 (vectorised over blocks)."""
    nb = -(-n // 4)
    b = np.arange(nb, dtype=np.uint64)
    c0, c1 = b & np.uint64(_MASK), b >> np.uint64(32)
    c2 = np.full(nb, counter & _MASK, dtype=np.uint64)
    c3 = np.full(nb, counter >> 32, dtype=np.uint64)
    k0, k1 = seed & _MASK, seed >> 32
    m, s32 = np.uint64(_MASK), np.uint64(32)
    for _ in range(10):
        p0, p1 = np.uint64(_M0) * c0, np.uint64(_M1) * c2
        c0, c1, c2, c3 = ((p1 >> s32) ^ c1 ^ np.uint64(k0)) & m, p1 & m, \
            ((p0 >> s32) ^ c3 ^ np.uint64(k1)) & m, p0 & m
        k0, k1 = (k0 + _W0) & _MASK, (k1 + _W1) & _MASK
    return np.stack([c0, c1, c2, c3], axis=-1).reshape(-1)[:n]


def msc_threshold_table(a: float, h: float, beta: float, dtype: str) -> list[int]:
    """The 9 uint32 thresholds: +1 iff w < table[idx] <=> u(w) < p(idx), exactly except that
    a count of 2^32 (p = 1) is stored as 2^32 - 1."""
    import math
    from fractions import Fraction

    out = []
    for idx in range(9):
        z = -2.0 * beta * (h + a * (idx - 4))
        p = 0.0 if z > 700.0 else 1.0 / (1.0 + math.exp(z))
        if dtype == "float32":
            m = math.ceil(Fraction(float(np.float32(p))) * 2**23 - Fraction(1, 2))
            count = min(max(m, 0), 2**23) * 512
        else:
            count = min(max(math.ceil(Fraction(p) * 2**32 - Fraction(1, 2)), 0), 2**32)
        out.append(min(count, 2**32 - 1))
    return out


def msc_pack(spins) -> np.ndarray:
    """(..., W) spins in {-1, +1} -> (..., ceil(W / 32)) uint32 words (bit 1 <-> +1)."""
    s = np.asarray(spins)
    W = s.shape[-1]
    Wq = -(-W // 32)
    bits = np.zeros(s.shape[:-1] + (32 * Wq,), dtype=bool)
    bits[..., :W] = s > 0
    return np.packbits(bits, axis=-1, bitorder="little").view("<u4").astype(np.uint32)


def msc_unpack(words, W: int) -> np.ndarray:
    """Inverse of :func:`msc_pack`: int8 spins (..., W)."""
    w = np.ascontiguousarray(np.asarray(words, dtype="<u4"))
    bits = np.unpackbits(w.view(np.uint8), axis=-1, bitorder="little")[..., :W]
    return (2 * bits.astype(np.int8) - 1).astype(np.int8)


def _bits(words) -> np.ndarray:
    """uint32 (..., Wq) -> uint8 bits (..., 32 Wq)."""
    w = np.ascontiguousarray(np.asarray(words, dtype="<u4"))
    return np.unpackbits(w.view(np.uint8), axis=-1, bitorder="little")


def _neighbour_words(P, W: int, periodic: bool, left: bool):
    """Words whose bit j holds the left (or right) neighbour's bit of x = 32 q + j in its row
    (0 where the neighbour leaves an open grid), built with word shifts like the kernels."""
    P = P.astype(np.uint64)
    Wq = P.shape[-1]
    nlive_last = W - 32 * (Wq - 1)
    out = np.zeros_like(P)
    if left:
        out = (P << np.uint64(1)) & np.uint64(0xFFFFFFFF)
        out[..., 1:] |= P[..., :-1] >> np.uint64(31)
        if periodic:
            out[..., 0] |= (P[..., -1] >> np.uint64(nlive_last - 1)) & np.uint64(1)
    else:
        out = P >> np.uint64(1)
        out[..., :-1] |= (P[..., 1:] & np.uint64(1)) << np.uint64(31)
        if periodic:
            out[..., -1] |= (P[..., 0] & np.uint64(1)) << np.uint64(nlive_last - 1)
    return out.astype(np.uint32)


def msc_sweeps(spins, neg_x, neg_y, a: float, h: float, beta: float, periodic: bool,
               seed: int, counter: int, n_sweeps: int, dtype: str = "float32") -> np.ndarray:
    """Checkerboard heat-bath sweeps of a +-J nearest-neighbour model, by multi-spin coding.

    ``spins`` (B, C, H, W) int8; ``neg_x``/``neg_y`` (C, H, W) bool (None: all couplings +a);
    sweep ``t`` uses the Philox stream (seed, counter + t), element e <-> word e % 4 of block
    e // 4. Colour 0 is (x + y) even. Returns int8 spins (B, C, H, W).
    """
    s = np.asarray(spins)
    B, C, H, W = s.shape
    Wq = -(-W // 32)
    table = np.array(msc_threshold_table(a, h, beta, dtype), dtype=np.uint64)  # compared as ints
    rows = msc_pack(s).reshape(B, C, H, Wq)
    nx = np.zeros((C, H, W), bool) if neg_x is None else np.array(neg_x, dtype=bool)
    ny = np.zeros((C, H, W), bool) if neg_y is None else np.array(neg_y, dtype=bool)
    if not periodic:  # edges leaving the grid have no coupling
        nx[..., W - 1] = False
        ny[:, H - 1, :] = False
    sx, sy = msc_pack(np.where(nx, 1, -1)), msc_pack(np.where(ny, 1, -1))
    live = np.zeros(32 * Wq, dtype=bool)
    live[:W] = True
    x = np.arange(32 * Wq)
    y = np.arange(H)[:, None]
    # missing edges of an open grid, per bit: left, right, up, down
    miss = np.zeros((H, 32 * Wq), dtype=np.int64)
    if not periodic:
        miss += (x == 0)[None, :].astype(np.int64) + (x == W - 1)[None, :]
        miss += (y == 0).astype(np.int64) + (y == H - 1)
    # the sign bit of the edge to the left of x is sx at x - 1
    sxl = _neighbour_words(sx, W, periodic, left=True)
    syu = np.roll(sy, 1, axis=1)
    if not periodic:
        syu[:, 0] = 0
    for t in range(n_sweeps):
        w = philox_words(seed, (counter + t) % 2**64, B * C * H * W).reshape(B, C, H, W)
        wpad = np.zeros((B, C, H, 32 * Wq), dtype=np.uint64)
        wpad[..., :W] = w
        for colour in (0, 1):
            nl = _neighbour_words(rows, W, periodic, left=True)
            nr = _neighbour_words(rows, W, periodic, left=False)
            up = np.roll(rows, 1, axis=2)
            dn = np.roll(rows, -1, axis=2)
            if not periodic:
                up[:, :, 0] = 0
                dn[:, :, -1] = 0
            pos = (_bits(nl ^ sxl).astype(np.int64) + _bits(nr ^ sx) + _bits(up ^ syu)
                   + _bits(dn ^ sy))
            idx = 2 * pos + miss
            new = wpad < table[idx]
            active = (((x[None, :] + y) % 2) == colour) & live[None, :]
            bits = np.where(active, new, _bits(rows).astype(bool))
            rows = msc_pack(np.where(bits, 1, -1))
    return msc_unpack(rows, W).reshape(B, C, H, W)
