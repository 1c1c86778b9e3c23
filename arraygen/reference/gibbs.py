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
