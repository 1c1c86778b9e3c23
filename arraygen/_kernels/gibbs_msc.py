r"""Multi-spin-coded Gibbs contract (+-J nearest-neighbour models), shared by the op module and
the multi-spin kernels (``arraygen/backends/{cupy,numba_cuda}/gibbs_msc.py``).

A model qualifies (:func:`detect_couplings`, :func:`with_bias`) when its offsets are the
4-neighbour pair (0, 0, 1) and (0, 1, 0), its colouring is the checkerboard ``(x + y) mod 2``
(2 colours), every edge of the grid has a coupling of the same magnitude ``a`` (signs free: +-J;
``a = 0`` allowed) and the bias is one value ``h`` for every site (a (C, H, W) bias; per-chain
biases do not qualify).

Packed layout
    Spins (B, C, H, W) become ``R = B C H`` rows of ``Wq = ceil(W / 32)`` uint32 words: bit ``j``
    of word ``q`` of row ``r`` is 1 iff the spin at ``x = 32 q + j`` is +1; bits with ``x >= W``
    are 0. Sign planes ``sx``, ``sy`` (C H rows of Wq words, only when some coupling is
    negative): bit 1 iff the coupling of the edge (x, x + 1), resp. (y, y + 1), at that site is
    negative (0 where the edge leaves an open grid).
Field index
    For a site with P positive terms ``J s_nb > 0`` among its edges and M missing edges (open
    boundary), ``idx = 2 P + M`` in 0..8 and :math:`\gamma = h + a (\mathrm{idx} - 4)`.
Stream and decision
    The uniform of sweep ``t`` at flat C-order element ``e`` of the spins is word ``w = e % 4`` of
    Philox block ``e // 4`` of ``key.advance(t)``: the stream of the float-coupling kernels. The
    site takes +1 iff ``w < table[idx]`` (uint32 compare), where ``table``
    (:func:`threshold_table`) holds the integer thresholds of ``u < p``: ``u = ((w >> 9) + 0.5)
    2^-23`` for float32 models and ``(w + 0.5) 2^-32`` for float64, ``p = 1 / (1 + exp(-2 beta
    gamma))`` computed in float64 and rounded once to the model's dtype; the count of words with
    ``u < p`` is exact except that 2^32 (every word) is stored as 2^32 - 1, so a site with
    ``p = 1`` (in the dtype) takes -1 for the one word 2^32 - 1 (probability 2^-32). The
    float-coupling kernels compute ``p`` in the model's dtype, so the two paths agree except
    where ``u`` falls within a rounding of ``p``.
Sweep
    Colour 0 (``(x + y)`` even) then colour 1, each site of a colour from the current spins.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np

from .. import _array_api as aa

WORD_BITS = 32
#: number of field indices (idx = 2 P + M in 0..8)
N_FIELDS = 9
NN_OFFSETS = ((0, 0, 1), (0, 1, 0))


class PlusMinusJ:
    """A model's +-J description (:func:`detect_couplings`, :func:`with_bias`): ``magnitude``
    a, uniform ``bias`` h, ``signed`` (some coupling negative), host sign planes ``sx``/``sy``
    (uint32 (C H, Wq)) or None, ``shape`` (C, H, W), ``periodic``. Device copies of the sign planes are cached in
    ``device_cache`` (keyed by the launcher)."""

    def __init__(self, magnitude: float, bias: float, sx, sy, shape, periodic: bool):
        self.magnitude = float(magnitude)
        self.bias = float(bias)
        self.sx, self.sy = sx, sy
        self.signed = sx is not None
        self.shape = tuple(shape)
        self.periodic = bool(periodic)
        self.device_cache: dict[Any, Any] = {}

    def with_bias(self, bias: float) -> PlusMinusJ:
        out = PlusMinusJ(self.magnitude, bias, self.sx, self.sy, self.shape, self.periodic)
        out.device_cache = self.device_cache  # same sign planes
        return out

    def __repr__(self) -> str:
        return (f"PlusMinusJ(magnitude={self.magnitude}, bias={self.bias}, "
                f"signed={self.signed}, shape={self.shape}, periodic={self.periodic})")


def words_per_row(W: int) -> int:
    return -(-W // WORD_BITS)


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """bool (..., W) -> uint32 (..., Wq): bit j of word q is bits[..., 32 q + j]."""
    W = bits.shape[-1]
    Wq = words_per_row(W)
    pad = np.zeros(bits.shape[:-1] + (Wq * WORD_BITS,), dtype=bool)
    pad[..., :W] = bits
    return np.ascontiguousarray(
        np.packbits(pad, axis=-1, bitorder="little").view("<u4").astype(np.uint32))


def qualifies(offsets, colors_np: np.ndarray, bias_ndim: int) -> bool:
    """Cheap structural test (no device reduction): 4-neighbour offsets, checkerboard colours,
    a (C, H, W) bias (``bias_ndim`` 3)."""
    if bias_ndim != 3 or sorted(tuple(o) for o in offsets) != sorted(NN_OFFSETS):
        return False
    _, H, W = colors_np.shape
    board = (np.arange(H)[:, None] + np.arange(W)[None, :]) % 2
    return int(colors_np.max()) == 1 and bool(np.array_equal(colors_np, np.broadcast_to(
        board, colors_np.shape)))


def detect_couplings(xp, offsets, couplings_eff, colors_np: np.ndarray,
                     periodic: bool) -> PlusMinusJ | None:
    """The couplings' :class:`PlusMinusJ` (bias still unset: NaN), or None when the multi-spin
    kernels do not apply to them.

    ``couplings_eff`` (K, C, H, W) are zero on edges that leave the grid (open boundaries).
    One host synchronisation per model (none when the offsets or the colouring already rule
    the model out).
    """
    if not qualifies(offsets, colors_np, 3):
        return None
    kx = [tuple(o) for o in offsets].index((0, 0, 1))
    absj = xp.abs(couplings_eff)
    a = xp.max(absj)
    # every edge of the grid has |J| == a (on an open grid: not those at x = W-1, y = H-1)
    jx, jy = absj[kx, ...], absj[1 - kx, ...]
    if not periodic:
        jx, jy = jx[:, :, :-1], jy[:, :-1, :]
    if not bool(xp.all(jx == a) & xp.all(jy == a)):
        return None
    a = float(a)
    sx = sy = None
    if a > 0 and bool(xp.any(couplings_eff < 0)):
        neg = aa.to_numpy(couplings_eff < 0)
        C, H, W = colors_np.shape
        sx = pack_bits(neg[kx].reshape(C * H, W))
        sy = pack_bits(neg[1 - kx].reshape(C * H, W))
    return PlusMinusJ(a, math.nan, sx, sy, colors_np.shape, periodic)


def with_bias(xp, pm: PlusMinusJ | None, bias) -> PlusMinusJ | None:
    """``pm`` with the model's bias when it is one value over a (C, H, W) grid, else None."""
    if pm is None or bias.ndim != 3:
        return None
    flat = xp.reshape(bias, (-1,))
    if not bool(xp.max(flat) == xp.min(flat)):
        return None
    return pm.with_bias(float(flat[0]))


def _probability(gamma: float, beta: float) -> float:
    z = -2.0 * beta * gamma
    if z > 700.0:
        return 0.0
    return 1.0 / (1.0 + math.exp(z))


def threshold_table(pm: PlusMinusJ, beta: float, dtype_name: str) -> np.ndarray:
    """uint32 (16,): ``table[idx]`` = number of 32-bit words ``w`` with ``u(w) < p(idx)``,
    2^32 stored as 2^32 - 1 (the first :data:`N_FIELDS` entries; the rest 0), so that
    ``+1 iff w < table[idx]``."""
    out = np.zeros(16, dtype=np.uint32)
    for idx in range(N_FIELDS):
        p = _probability(pm.bias + pm.magnitude * (idx - 4), beta)
        if dtype_name == "float32":
            # u = (m + 0.5) 2^-23 with m = w >> 9: count m < p 2^23 - 1/2, times 512 words each
            pf = Fraction(float(np.float32(p)))
            m = math.ceil(pf * 2**23 - Fraction(1, 2))
            count = min(max(m, 0), 2**23) * 512
        else:
            pf = Fraction(p)
            count = min(max(math.ceil(pf * 2**32 - Fraction(1, 2)), 0), 2**32)
        out[idx] = min(count, 2**32 - 1)
    return out
