"""Numba CPU (parallel, prange) kernels of the Fisher hot path (launcher contract: arraygen.fisher).

Work is split into tiles that never cross a sample boundary, so every tile reads one damping
value and the per-sample sums of the fused step are reduced in a fixed order (results are
bitwise reproducible for a fixed thread count).
"""

from __future__ import annotations

import numba
import numpy as np

from .._interop import like, to_numpy_view
from . import compile_pair, philox, thread_safe

TILE = 1 << 14  # elements per parallel work item
PARALLEL_MIN = 1 << 17  # smaller arrays run on one thread (waking the thread pool costs more)


def _tiles(n_per: int) -> int:
    return max(1, -(-n_per // TILE))


# Inner loops run on per-tile slices: Numba vectorises those, not loops over the full arrays
# indexed from inside a prange body.


def _diagonal_kernel(s, eps, n_per, out):  # pragma: no cover - compiled
    nb = eps.shape[0]
    tiles = (n_per + TILE - 1) // TILE
    for t in numba.prange(nb * tiles):
        b = t // tiles
        start = b * n_per + (t - b * tiles) * TILE
        stop = min(start + TILE, (b + 1) * n_per)
        e = eps[b]
        st = s[start:stop]
        ot = out[start:stop]
        for j in range(st.shape[0]):
            ot[j] = st[j] * st[j] + e


def _partial_sums(s, v, eps, m, one_m, one, n_per, partial):  # pragma: no cover - compiled
    """partial[t] = sum over tile t of (m v + (1-m)(s^2 + eps))^-1/2 (fixed vectorised order)."""
    tiles = (n_per + TILE - 1) // TILE
    for t in numba.prange(partial.shape[0]):
        b = t // tiles
        start = b * n_per + (t - b * tiles) * TILE
        stop = min(start + TILE, (b + 1) * n_per)
        e = eps[b]
        st = s[start:stop]
        vt = v[start:stop]
        acc = 0.0
        for j in range(st.shape[0]):
            vn = m * vt[j] + one_m * (st[j] * st[j] + e)
            acc += one / np.sqrt(vn)
        partial[t] = acc


@numba.njit(inline="always")
def _update_one(x, s, v, i, z, e, m, one_m, one, h, two_h, scale, x_out, v_out):
    si = s[i]
    vn = m * v[i] + one_m * (si * si + e)
    p = (one / np.sqrt(vn)) * scale
    v_out[i] = vn
    x_out[i] = x[i] + h * p * si + np.sqrt(two_h * p) * z


def _update(x, s, v, eps, noise, has_noise, m, one_m, one, h, two_h, n_per, partial,
            c2, c3, k0, k1, x_out, v_out):  # pragma: no cover - compiled
    tiles = (n_per + TILE - 1) // TILE
    nb = partial.shape[0] // tiles
    inv_mean = np.empty(nb, dtype=x_out.dtype)  # n_per / sum, rounded to the compute dtype
    for b in range(nb):
        acc = 0.0
        for t in range(b * tiles, (b + 1) * tiles):
            acc += partial[t]
        inv_mean[b] = n_per / acc
    for t in numba.prange(partial.shape[0]):
        b = t // tiles
        start = b * n_per + (t - b * tiles) * TILE
        stop = min(start + TILE, (b + 1) * n_per)
        e = eps[b]
        scale = inv_mean[b]
        for q in range(start >> 2, (stop + 3) >> 2):
            base = 4 * q
            if has_noise:
                z0 = noise[max(base, start)]
                z1 = noise[min(base + 1, stop - 1)]
                z2 = noise[min(base + 2, stop - 1)]
                z3 = noise[min(base + 3, stop - 1)]
            else:
                w0, w1, w2, w3 = philox.philox4x32(q, c2, c3, k0, k1)
                z0, z1, z2, z3 = philox.box_muller(w0, w1, w2, w3, one)
            if base >= start and base + 4 <= stop:
                _update_one(x, s, v, base, z0, e, m, one_m, one, h, two_h, scale, x_out, v_out)
                _update_one(x, s, v, base + 1, z1, e, m, one_m, one, h, two_h, scale, x_out,
                            v_out)
                _update_one(x, s, v, base + 2, z2, e, m, one_m, one, h, two_h, scale, x_out,
                            v_out)
                _update_one(x, s, v, base + 3, z3, e, m, one_m, one, h, two_h, scale, x_out,
                            v_out)
            else:  # a quad cut by the tile's ends (sample length not a multiple of 4)
                for lane in range(4):
                    i = base + lane
                    if start <= i < stop:
                        z = noise[i] if has_noise else (
                            z0 if lane == 0 else (z1 if lane == 1 else (z2 if lane == 2 else z3)))
                        _update_one(x, s, v, i, z, e, m, one_m, one, h, two_h, scale, x_out,
                                    v_out)


_DIAGONAL = compile_pair(_diagonal_kernel)
_PARTIAL_SUMS = compile_pair(_partial_sums, fastmath={"reassoc"})
_UPDATE = compile_pair(_update, error_model="numpy")  # 1/0 -> inf as on array_api


def _host(a) -> np.ndarray:
    """C-contiguous NumPy view of a host array (one copy if it is not contiguous)."""
    return np.ascontiguousarray(to_numpy_view(a))


@thread_safe
def fisher_diagonal(score, eps):
    """``score**2 + eps`` (per-batch ``eps``); see :mod:`arraygen.fisher` for the contract."""
    s = _host(score)
    e = _host(eps)
    out = np.empty_like(s)
    if s.size:
        _DIAGONAL[s.size >= PARALLEL_MIN](s.reshape(-1), e, s.size // e.shape[0],
                                          out.reshape(-1))
    return like(out, score)


@thread_safe
def fisher_langevin_step(x, score, v, eps, *, step_size, momentum, noise, key):
    """Fused pSGLD step; see :mod:`arraygen.fisher` for the contract."""
    xs, ss, vs = _host(x), _host(score), _host(v)
    dt = xs.dtype.type
    e = _host(eps).astype(xs.dtype, copy=False)
    n_per = xs.size // xs.shape[0] if xs.shape[0] else 0
    x_out = np.empty_like(xs)
    v_out = np.empty_like(vs)
    if xs.size == 0:
        return like(x_out, x), like(v_out, v)
    has_noise = noise is not None
    zs = _host(noise).reshape(-1) if has_noise else np.empty(1, xs.dtype)
    c2, c3, k0, k1 = philox.key_words(key) if key is not None else (np.uint64(0),) * 4
    m, one_m = dt(momentum), dt(1.0 - momentum)
    partial = np.empty(xs.shape[0] * _tiles(n_per), dtype=np.float64)
    parallel = xs.size >= PARALLEL_MIN
    _PARTIAL_SUMS[parallel](ss.reshape(-1), vs.reshape(-1), e, m, one_m, dt(1), n_per,
                            partial)
    _UPDATE[parallel](xs.reshape(-1), ss.reshape(-1), vs.reshape(-1), e, zs, has_noise, m,
                      one_m, dt(1), dt(step_size), dt(2.0 * step_size), n_per, partial, c2, c3,
                      k0, k1, x_out.reshape(-1), v_out.reshape(-1))
    return like(x_out, x), like(v_out, v)
