r"""Gibbs hot path: block Gibbs sampling of Ising models with a stencil of couplings (DESIGN 4.3).

Spins :math:`s \in \{-1, +1\}` live on a grid (C, H, W); chains are batched in front,
(..., C, H, W). A :class:`StencilIsing` model has K offsets :math:`o_k = (dc, dy, dx)` and
couplings ``J`` of shape (K, C, H, W), where ``J[k, i]`` is the weight of the undirected edge
:math:`(i, i + o_k)`. Its energy is

.. math:: E(s) = -\sum_i h_i s_i - \sum_k \sum_i J_{k,i}\, s_i\, s_{i + o_k}

and the heat-bath conditional of site :math:`i` given the rest is
:math:`P(s_i = +1) = \sigma(2 \beta \gamma_i)` with

.. math:: \gamma_i = h_i + \sum_k J_{k,i}\, s_{i+o_k} + \sum_k J_{k,i-o_k}\, s_{i-o_k}.

A proper colouring of the sites (no two coupled sites share a colour) is computed from the
offsets; one sweep updates the colours in increasing order, every site of a colour in parallel.

Public ops: :func:`gibbs_sweeps` (dispatched), :func:`energy`, :func:`moments`,
:func:`exact_distribution`, and the helpers :func:`to_spins`, :func:`to_bits`. The float64
oracle is :mod:`arraygen.reference.gibbs`; kernels live in
``arraygen/backends/<language>/gibbs.py``.

Launcher contract for kernel backends:

``gibbs_sweeps(spins, couplings, bias, colors, *, offsets, periodic, n_colors, pattern,
n_sweeps, beta, uniforms, key, origin=None) -> spins_new``
    ``spins``: int8 (B, C, H, W) in the caller's namespace, values in {-1, +1}; the launcher
    must not modify it and returns a new int8 array of that shape. ``couplings``: (K, C, H, W)
    float32 or float64, already zero on edges that leave the grid (open boundaries).
    ``bias``: (C, H, W) or (B, C, H, W), the dtype of ``couplings``. ``colors``: int8 (C, H, W),
    values 0..n_colors-1; ``pattern``: None or ``(n, a, b, d)`` when ``colors`` equals
    ``(a c + b y + d x) mod n`` (kernels may compute colours instead of reading them).
    ``offsets``: tuple of K ``(dc, dy, dx)`` int triples.
    ``periodic``: bool (wrap all three grid axes). ``beta``: Python float >= 0.
    ``uniforms``: None or an array (n_sweeps, B, C, H, W) of the couplings' dtype; when None the
    uniform of sweep ``t`` at flat C-order element ``e`` of ``spins`` is word ``e % 4`` of Philox
    block ``e // 4`` of ``key.advance(t)``, converted as float32 (``arraygen.random.uniform``).
    ``origin``: None, or ``(e0, chain_stride, plane_stride, row_stride)`` when ``spins`` is a
    window of a larger array (a Dask chunk with its halo): site (b, c, y, x) then uses element
    ``e0 + b chain_stride + c plane_stride + y row_stride + x`` instead of its flat index
    (:func:`arraygen._kernels.gibbs.row_starts`).
    Per sweep, for colour ``c = 0..n_colors-1``: every site of colour ``c`` computes
    ``gamma`` (above) in the couplings' dtype, ``p = 1 / (1 + exp(-2 beta gamma))`` and sets
    ``s = +1 if u < p else -1``.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, NamedTuple

import numpy as np

from . import _array_api as aa
from . import _dask, _dispatch
from . import random as _random
from ._kernels import gibbs_msc as _msc
from ._kernels.gibbs import symmetric_offsets  # noqa: F401
from ._validation import (as_array, check_choice, check_fits_dtype, check_int, check_scalar,
                          check_shape, common_namespace)

__all__ = [
    "Moments",
    "StencilIsing",
    "energy",
    "exact_distribution",
    "gibbs_sweeps",
    "local_offsets",
    "moments",
    "nearest_neighbour_offsets",
    "to_bits",
    "to_spins",
]

_dispatch.register(
    "gibbs_sweeps",
    kernels={
        "numba_cpu": "arraygen.backends.numba_cpu.gibbs:gibbs_sweeps",
        "numba_cuda": "arraygen.backends.numba_cuda.gibbs:gibbs_sweeps",
        "cupy": "arraygen.backends.cupy.gibbs:gibbs_sweeps",
        "triton": "arraygen.backends.triton.gibbs:gibbs_sweeps",
    },
    # H100, 4096^2, 10 sweeps per call (tools/gpu_bench_gibbs.py): nearest neighbour cupy (fused
    # sweep kernel) 9.9e10 (1.48e11 at 100 sweeps per call), triton 4.0e10, numba_cuda 2.5e10
    # updates/s; 8 offsets cupy (streaming kernel) 3.6e10 (4.2e10 at 100), triton and numba_cuda
    # 0.9e10
    gpu_order=("cupy", "triton", "numba_cuda"),
)

_MAX_LINEAR_COLOURS = 64
_MAX_COLOURS = 127
_EXACT_MAX_SPINS = 20
_MAX_LOCAL_RADIUS = 10


# ----------------------------------------------------------------------------------------------
# Offsets and colouring


def _check_skip(skip) -> tuple[int, ...]:
    if isinstance(skip, (int, np.integer)):
        skip = (skip,)
    if not isinstance(skip, (tuple, list, range)):
        raise TypeError(f"`skip` must be a sequence of link distances; got {skip!r}")
    return tuple(check_int(d, "skip") for d in skip)


def nearest_neighbour_offsets(skip=()) -> tuple[tuple[int, int, int], ...]:
    """Offsets of the 4-neighbour grid, (0, 0, 1) and (0, 1, 0), plus skip links.

    Each distance ``d`` (an int >= 2) in ``skip`` adds the links (0, 0, d) and (0, d, 0).

    Examples
    --------
    >>> from arraygen.gibbs import nearest_neighbour_offsets
    >>> nearest_neighbour_offsets(skip=(3,))
    ((0, 0, 1), (0, 1, 0), (0, 0, 3), (0, 3, 0))
    """
    out = [(0, 0, 1), (0, 1, 0)]
    for d in _check_skip(skip):
        out += [(0, 0, d), (0, d, 0)]
    return tuple(out)


def local_offsets(radius: int = 1, skip=()) -> tuple[tuple[int, int, int], ...]:
    """Offsets of the (2r+1) x (2r+1) local stencil (each undirected link once) plus skip links.

    ``radius=1`` gives the 3x3 (king's move) stencil (0,0,1), (0,1,-1), (0,1,0), (0,1,1).
    Each distance ``d`` in ``skip`` adds (0, 0, d), (0, d, 0), (0, d, d) and (0, d, -d).

    Examples
    --------
    >>> from arraygen.gibbs import local_offsets
    >>> local_offsets(1)
    ((0, 0, 1), (0, 1, -1), (0, 1, 0), (0, 1, 1))
    """
    # the (r+1) x (r+1) sites of a block are pairwise coupled: (r+1)^2 <= 127 colours
    radius = check_int(radius, "radius", minimum=1, maximum=_MAX_LOCAL_RADIUS)
    out = [(0, 0, dx) for dx in range(1, radius + 1)]
    out += [(0, dy, dx) for dy in range(1, radius + 1) for dx in range(-radius, radius + 1)]
    for d in _check_skip(skip):
        out += [(0, 0, d), (0, d, 0), (0, d, d), (0, d, -d)]
    return tuple(out)


def _check_offsets(offsets, shape: tuple[int, int, int], periodic: bool):
    """Validate offsets; return them as a tuple of int triples."""
    try:
        arr = np.asarray(offsets)
    except (ValueError, TypeError):
        raise TypeError(f"`offsets` must be a sequence of (dc, dy, dx) int triples; got "
                        f"{offsets!r}") from None
    if arr.dtype == object or arr.dtype.kind not in "iuf":
        raise TypeError(f"`offsets` must be a sequence of (dc, dy, dx) int triples; got "
                        f"{offsets!r}")
    if arr.size == 0:
        return ()
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"`offsets` must be a sequence of (dc, dy, dx) triples; got shape "
                         f"{arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise TypeError(f"`offsets` must be integers; got {offsets!r}")
        arr = arr.astype(np.int64)
    offs = [tuple(int(v) for v in row) for row in arr]
    dims = np.asarray(shape)
    for o in offs:
        if o == (0, 0, 0):
            raise ValueError("`offsets` couple a site to itself: offset (0, 0, 0) is not allowed")
        if periodic and np.all(np.mod(o, dims) == 0):
            raise ValueError(f"`offsets`: offset {o} couples each site to itself on the periodic "
                             f"grid {shape}")
    for (k, a), (l, b) in itertools.combinations(enumerate(offs), 2):
        if a == b:
            raise ValueError(f"`offsets` must be distinct; {a} appears at positions {k} and {l}")
        if a == tuple(-v for v in b):
            raise ValueError(f"`offsets` must not contain opposite pairs: {a} (position {k}) and "
                             f"{b} (position {l}) describe the same edges")
        if periodic and (np.all(np.mod(np.subtract(a, b), dims) == 0)
                         or np.all(np.mod(np.add(a, b), dims) == 0)):
            raise ValueError(f"`offsets` {a} and {b} describe the same edges on the periodic "
                                 f"grid {shape}")
    return tuple(offs)


def _active(offsets, shape, periodic):
    """Offsets that give at least one edge."""
    if periodic:
        return list(offsets)
    return [o for o in offsets if all(abs(d) < n for d, n in zip(o, shape))]


def _linear_colouring(offsets, shape, periodic):
    """Smallest n with colour = (a c + b y + d x) mod n proper; None if none up to the cap."""
    active = _active(offsets, shape, periodic)
    if not active:
        return (1, 0, 0, 0)
    off = np.asarray(active, dtype=np.int64)
    C, H, W = shape
    for n in range(2, _MAX_LINEAR_COLOURS + 1):
        r = np.arange(n)
        a = r[:, None, None] if np.any(off[:, 0]) else np.zeros((1, 1, 1), np.int64)
        b = r[None, :, None] if np.any(off[:, 1]) else np.zeros((1, 1, 1), np.int64)
        d = r[None, None, :] if np.any(off[:, 2]) else np.zeros((1, 1, 1), np.int64)
        vals = (a[..., None] * off[:, 0] + b[..., None] * off[:, 1]
                + d[..., None] * off[:, 2]) % n
        ok = np.all(vals != 0, axis=-1)
        if periodic:
            ok &= ((a * C) % n == 0) & ((b * H) % n == 0) & ((d * W) % n == 0)
        if not ok.any():
            continue
        ia, ib, id_ = np.nonzero(ok)
        cands = [(int(a.ravel()[i] if a.size > 1 else 0), int(b.ravel()[j] if b.size > 1 else 0),
                  int(d.ravel()[k] if d.size > 1 else 0)) for i, j, k in zip(ia, ib, id_)]
        # prefer the textbook pattern x + b y + a c (d = 1), then small coefficients
        ca, cb, cd = min(cands, key=lambda t: (t[2] != 1, t[0], t[1], t[2]))
        return (n, ca, cb, cd)
    return None


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def _quotient_colouring(offsets, shape, small: bool = False):
    """Greedy colouring of the smallest quotient torus without self-loops (periodic fallback).

    The colour of site (c, y, x) is that of (c mod qc, y mod qy, x mod qx); it is proper because
    qc | C, qy | H, qx | W and no offset is zero modulo (qc, qy, qx). With ``small`` only
    quotients of at most 4096 sites are tried (None if there is none).
    """
    off = np.asarray(offsets, dtype=np.int64)
    cands = sorted(itertools.product(*(_divisors(n) for n in shape)), key=lambda q: math.prod(q))
    for q in cands:
        if small and math.prod(q) > 4096:
            return None
        if not np.any(np.all(off % np.asarray(q) == 0, axis=1)):
            break
    qc, qy, qx = q
    table = -np.ones(q, dtype=np.int64)
    for c, y, x in itertools.product(range(qc), range(qy), range(qx)):
        used = set()
        for dc, dy, dx in off:
            for sgn in (1, -1):
                used.add(int(table[(c + sgn * dc) % qc, (y + sgn * dy) % qy, (x + sgn * dx) % qx]))
        colour = 0
        while colour in used:
            colour += 1
        table[c, y, x] = colour
    C, H, W = shape
    return np.tile(table, (C // qc, H // qy, W // qx))


def _colouring(offsets, shape, periodic):
    """``(colors, pattern)``: int8 (C, H, W) colours and the linear pattern (n, a, b, d) or None."""
    C, H, W = shape
    pattern = _linear_colouring(offsets, shape, periodic)
    colors = None
    if pattern is not None:
        n, a, b, d = pattern
        c, y, x = np.meshgrid(np.arange(C), np.arange(H), np.arange(W), indexing="ij")
        colors = (a * c + b * y + d * x) % n
    if periodic and (pattern is None or pattern[0] > 2 * len(offsets) + 1):
        greedy = _quotient_colouring(offsets, shape, small=pattern is not None)
        if greedy is not None and (colors is None or greedy.max() < colors.max()):
            colors, pattern = greedy, None
    if colors is None:
        raise ValueError(f"`offsets` need more than {_MAX_LINEAR_COLOURS} colours on the open "
                         f"grid {shape} (no periodic colouring with at most "
                         f"{_MAX_LINEAR_COLOURS} exists); use fewer or shorter offsets")
    n_colors = int(colors.max()) + 1
    if n_colors > _MAX_COLOURS:
        raise ValueError(f"`offsets` need {n_colors} colours on grid {shape}; at most "
                         f"{_MAX_COLOURS} are supported")
    colors = colors.astype(np.int8)
    _assert_proper(colors, offsets, periodic)
    return colors, pattern


def _assert_proper(colors: np.ndarray, offsets, periodic: bool) -> None:
    for o in offsets:
        nb = _shift_np(colors.astype(np.int64), o, periodic, fill=-1)
        if np.any(nb == colors):
            raise RuntimeError(f"internal error: colouring is not proper for offset {o}")


def _shift_np(a: np.ndarray, o, periodic: bool, fill=0) -> np.ndarray:
    """``out[..., c, y, x] = a[..., c+dc, y+dy, x+dx]`` (``fill`` outside the grid if open)."""
    if periodic:
        return np.roll(a, shift=tuple(-v for v in o), axis=(-3, -2, -1))
    out = np.full_like(a, fill)
    src, dst = [Ellipsis], [Ellipsis]
    for d, n in zip(o, a.shape[-3:]):
        if abs(d) >= n:
            return out
        src.append(slice(max(d, 0), n + min(d, 0)))
        dst.append(slice(max(-d, 0), n + min(-d, 0)))
    out[tuple(dst)] = a[tuple(src)]
    return out


def _edge_mask(offsets, shape, periodic) -> np.ndarray:
    """(K, C, H, W) float64: 1 where the edge (i, i + o_k) exists, 0 where it leaves the grid."""
    ones = np.ones(shape, dtype=np.float64)
    if not offsets:
        return np.zeros((0,) + tuple(shape))
    return np.stack([_shift_np(ones, o, periodic) for o in offsets])


# ----------------------------------------------------------------------------------------------
# The model


def _as_model_array(xp, value, name, dtype, device):
    if aa.is_array(value):
        arr, _ = aa.as_float_array(xp, value, name)
        return xp.astype(arr, dtype) if arr.dtype != dtype else arr
    return xp.asarray(check_scalar(value, name), dtype=dtype, device=device)


def _array_or_scalar(value, name):
    """Lists become NumPy arrays; arrays and Python scalars pass (scalars checked later)."""
    return as_array(value, name) if isinstance(value, (list, tuple)) else value


def _move(xp, a, device):
    """``a`` (any namespace) as an array of ``xp`` on ``device``, through the host."""
    return xp.asarray(np.ascontiguousarray(aa.to_numpy(a)), device=device)


class StencilIsing:
    r"""Ising model with couplings on a stencil of offsets, for block Gibbs sampling.

    .. math:: E(s) = -\sum_i h_i s_i - \sum_k \sum_i J_{k,i}\, s_i\, s_{i+o_k},
              \qquad s \in \{-1,+1\}^{C \times H \times W}

    Parameters
    ----------
    offsets : sequence of K (dc, dy, dx) int triples
        Distinct, none zero, no two opposite (local links and long-range "skip" links).
    couplings : array, shape (K, C, H, W)
        ``J[k, i]`` is the weight of the undirected edge (i, i + o_k), each edge counted once.
        With ``boundary="open"`` entries whose edge leaves the grid are ignored; with
        ``"periodic"`` all three grid axes wrap.
    bias : array, shape (C, H, W) or (B, C, H, W)
        Field ``h``; a per-chain bias (B, C, H, W) carries conditioning (B chains).
    boundary : {"open", "periodic"}

    Attributes
    ----------
    offsets : tuple of (dc, dy, dx)
    couplings, bias : arrays in the model's namespace and floating dtype
    shape : (C, H, W)
    colors : int32 array (C, H, W), colours 0..n_colors-1 (coupled sites never share one)
    n_colors : int
    color_pattern : (n, a, b, d) or None
        ``colors = (a c + b y + d x) mod n`` when the colouring is linear.

    Notes
    -----
    :func:`gibbs_sweeps`, :func:`energy` and :func:`moments` work on spins of any namespace
    and device: a model built from NumPy arrays used with torch (CPU or CUDA) spins has its
    arrays moved to the spins' namespace and device once; the copy is kept on the model.

    Examples
    --------
    >>> import numpy as np
    >>> from arraygen.gibbs import StencilIsing
    >>> J = np.full((2, 1, 3, 3), 0.5)
    >>> model = StencilIsing([(0, 0, 1), (0, 1, 0)], J, np.zeros((1, 3, 3)))
    >>> model.n_colors, model.shape
    (2, (1, 3, 3))
    >>> StencilIsing.nearest_neighbour((4, 4), coupling=0.3, boundary="periodic").n_colors
    2
    >>> StencilIsing.local((5, 5), radius=1).n_colors
    4
    """

    def __init__(self, offsets, couplings, bias, *, boundary: str = "open"):
        bias = _array_or_scalar(bias, "bias")
        xp, (couplings, _) = common_namespace(couplings=couplings,
                                              bias=bias if aa.is_array(bias) else None)
        check_choice(boundary, "boundary", ("open", "periodic"))
        if couplings.ndim != 4:
            raise ValueError(f"`couplings` must have shape (K, C, H, W); got "
                             f"{tuple(couplings.shape)}")
        shape = tuple(int(v) for v in couplings.shape[1:])
        if min(shape) < 1:
            raise ValueError(f"`couplings` grid (C, H, W) must be non-empty; got {shape}")
        periodic = boundary == "periodic"
        offs = _check_offsets(offsets, shape, periodic)
        if len(offs) != couplings.shape[0]:
            raise ValueError(f"`couplings` must have shape (K, C, H, W) with K = {len(offs)} "
                             f"offsets; got {tuple(couplings.shape)}")
        device = aa.device(couplings)
        j, _ = aa.as_float_array(xp, couplings, "couplings")
        dtype = j.dtype
        h = _as_model_array(xp, bias, "bias", dtype, device)
        if tuple(h.shape) not in (shape,) and not (h.ndim == 4 and tuple(h.shape[1:]) == shape):
            raise ValueError(f"`bias` must have shape (C, H, W) = {shape} or (B, C, H, W); got "
                             f"{tuple(h.shape)}")
        if not aa.all_finite(xp, j):
            raise ValueError("`couplings` contains non-finite values")
        if not aa.all_finite(xp, h):
            raise ValueError("`bias` contains non-finite values")
        self.offsets = offs
        self.boundary = boundary
        self.periodic = periodic
        self.shape = shape
        self.couplings = j
        self.bias = h
        self.dtype = dtype
        self._xp = xp
        self._device = device
        self._colors_np, self.color_pattern = _colouring(offs, shape, periodic)
        self.n_colors = int(self._colors_np.max()) + 1
        mask = _edge_mask(offs, shape, periodic)
        self._couplings_eff = j if periodic else j * xp.asarray(mask, dtype=dtype, device=device)
        # +-J nearest-neighbour models: the multi-spin kernels' description (_kernels/gibbs_msc)
        self._pm_couplings = _msc.detect_couplings(xp, offs, self._couplings_eff,
                                                   self._colors_np, periodic)
        self._msc = _msc.with_bias(xp, self._pm_couplings, h)
        self._colors_dev = None
        self._moved = {}

    def _to(self, xp, device) -> StencilIsing:
        """This model with its arrays in namespace ``xp`` on ``device`` (``self`` if they are
        there already). The copy is made once per (namespace, device, dtype) and kept."""
        if xp is self._xp and str(device) == str(self._device):
            return self
        key = (getattr(xp, "__name__", str(xp)), str(device), aa.dtype_name(self.dtype))
        hit = self._moved.get(key)
        if hit is None:
            dtype = getattr(xp, aa.dtype_name(self.dtype))
            hit = object.__new__(StencilIsing)
            hit.__dict__.update(self.__dict__)
            hit.couplings = xp.astype(_move(xp, self.couplings, device), dtype)
            hit.bias = xp.astype(_move(xp, self.bias, device), dtype)
            hit._couplings_eff = xp.astype(_move(xp, self._couplings_eff, device), dtype)
            hit.dtype, hit._xp, hit._device = dtype, xp, device
            hit._colors_dev, hit._moved = None, {}
            self._moved[key] = hit
        return hit

    # -- construction helpers ------------------------------------------------------------------

    def with_bias(self, bias) -> StencilIsing:
        """The same couplings and colouring with another bias (C, H, W) or (B, C, H, W).

        Examples
        --------
        >>> import numpy as np
        >>> from arraygen.gibbs import StencilIsing
        >>> model = StencilIsing.nearest_neighbour((3, 3))
        >>> model.with_bias(np.zeros((4, 1, 3, 3))).bias.shape  # one bias per chain
        (4, 1, 3, 3)
        """
        new = object.__new__(StencilIsing)
        new.__dict__.update(self.__dict__)
        new._moved = {}
        bias = _array_or_scalar(bias, "bias")
        if aa.is_array(bias):
            common_namespace(couplings=self.couplings, bias=bias)
        h = _as_model_array(self._xp, bias, "bias", self.dtype, self._device)
        if tuple(h.shape) != self.shape and not (h.ndim == 4 and tuple(h.shape[1:]) == self.shape):
            raise ValueError(f"`bias` must have shape (C, H, W) = {self.shape} or (B, C, H, W); "
                             f"got {tuple(h.shape)}")
        if not aa.all_finite(self._xp, h):
            raise ValueError("`bias` contains non-finite values")
        new.bias = h
        new._msc = _msc.with_bias(self._xp, self._pm_couplings, h)
        return new

    @classmethod
    def from_offsets(cls, shape, offsets, *, coupling=1.0, bias=0.0, boundary="open",
                     xp=None, device=None, dtype=None) -> StencilIsing:
        """Model on grid ``shape`` = (C, H, W) (or (H, W), C = 1) with broadcast parameters.

        ``coupling`` is a scalar, a (K,) per-offset array or a full (K, C, H, W) array;
        ``bias`` a scalar or an array broadcastable to (C, H, W), or (B, C, H, W).
        """
        shape = check_shape(shape, "shape", ndim=(2, 3))
        if len(shape) == 2:
            shape = (1,) + shape
        arrays = {n: a for n, a in (("coupling", coupling), ("bias", bias)) if aa.is_array(a)}
        if arrays:
            ns, found = common_namespace(**arrays)
            device = aa.device(found[0]) if device is None else device
        else:
            ns = aa.namespace_for(np if xp is None else xp)
        first = next(iter(arrays.values()), None)
        if dtype is None:
            dtype = first.dtype if first is not None and ns.isdtype(first.dtype,
                                                                   "real floating") \
                else ns.float32
        elif isinstance(dtype, str):
            if not hasattr(ns, dtype) or not ns.isdtype(getattr(ns, dtype), "real floating"):
                raise TypeError(f"`dtype` must name a real floating dtype; got {dtype!r}")
            dtype = getattr(ns, dtype)
        K = len(tuple(offsets))
        full = (K,) + shape
        if isinstance(coupling, (list, tuple)):  # a (K,) list of per-offset couplings
            coupling = as_array(coupling, "coupling").astype(np.float64)
        j = coupling if aa.is_array(coupling) and not isinstance(coupling, np.ndarray) \
            else ns.asarray(check_scalar(coupling, "coupling") if np.ndim(coupling) == 0
                            else coupling, dtype=dtype, device=device)
        j = ns.astype(j, dtype)
        if j.ndim == 1:
            if j.shape[0] != K:
                raise ValueError(f"`coupling` of shape (K,) must have K = {K}; got "
                                 f"{tuple(j.shape)}")
            j = ns.reshape(j, (K, 1, 1, 1))
        j = ns.broadcast_to(j, full) + ns.zeros(full, dtype=dtype, device=device)
        bias = _array_or_scalar(bias, "bias")
        h = bias if aa.is_array(bias) else ns.asarray(check_scalar(bias, "bias"),
                                                       dtype=dtype, device=device)
        h = ns.astype(h, dtype)
        hshape = tuple(h.shape) if h.ndim == 4 else shape
        h = ns.broadcast_to(h, hshape) + ns.zeros(hshape, dtype=dtype, device=device)
        return cls(offsets, j, h, boundary=boundary)

    @classmethod
    def nearest_neighbour(cls, shape, *, coupling=1.0, bias=0.0, skip=(), boundary="open",
                          xp=None, device=None, dtype=None) -> StencilIsing:
        """4-neighbour grid model (offsets :func:`nearest_neighbour_offsets`), optional skips."""
        return cls.from_offsets(shape, nearest_neighbour_offsets(skip), coupling=coupling,
                                bias=bias, boundary=boundary, xp=xp, device=device, dtype=dtype)

    @classmethod
    def local(cls, shape, *, radius=1, skip=(), coupling=1.0, bias=0.0, boundary="open",
              xp=None, device=None, dtype=None) -> StencilIsing:
        """Local (2r+1)^2 stencil plus skip links (offsets :func:`local_offsets`)."""
        return cls.from_offsets(shape, local_offsets(radius, skip), coupling=coupling, bias=bias,
                                boundary=boundary, xp=xp, device=device, dtype=dtype)

    # -- properties ----------------------------------------------------------------------------

    @property
    def n_offsets(self) -> int:
        return len(self.offsets)

    @property
    def n_sites(self) -> int:
        return math.prod(self.shape)

    @property
    def colors(self):
        """int32 array (C, H, W) of colours 0..n_colors-1, in the model's namespace/device."""
        return self._xp.asarray(self._colors_np.astype(np.int32), device=self._device)

    def _kernel_colors(self):
        if self._colors_dev is None:
            self._colors_dev = self._xp.asarray(self._colors_np, device=self._device)
        return self._colors_dev

    def edge_mask(self):
        """(K, C, H, W) array: 1 where the edge (i, i + o_k) exists, else 0 (open boundary)."""
        return self._xp.asarray(_edge_mask(self.offsets, self.shape, self.periodic),
                                dtype=self.dtype, device=self._device)

    def __repr__(self) -> str:
        return (f"StencilIsing(shape={self.shape}, offsets={self.offsets}, "
                f"boundary={self.boundary!r}, n_colors={self.n_colors}, "
                f"bias_shape={tuple(self.bias.shape)}, dtype={self.dtype})")


# ----------------------------------------------------------------------------------------------
# Spin conventions


def _check_spin_values(xp, s, name):
    if xp.isdtype(s.dtype, "bool"):
        raise TypeError(f"`{name}` must hold spins -1/+1, not booleans; convert {{0,1}} data "
                        f"with arraygen.gibbs.to_spins")
    if xp.isdtype(s.dtype, "complex floating"):
        raise TypeError(f"`{name}` must be real; got dtype {s.dtype}")
    ok = xp.logical_or(s == 1, s == -1)
    if not bool(xp.all(ok)):
        n_bad = int(xp.sum(xp.astype(xp.logical_not(ok), xp.int64)))
        raise ValueError(f"`{name}` must contain only -1 and +1; {n_bad} values are not (use "
                         f"arraygen.gibbs.to_spins to convert {{0,1}} data)")


def to_spins(bits, *, dtype=None):
    """{0, 1} (or bool) data -> spins {-1, +1}: ``s = 2 b - 1``; default dtype int8.

    Raises ``ValueError`` if any value is not 0 or 1.

    Examples
    --------
    >>> import numpy as np
    >>> from arraygen.gibbs import to_spins
    >>> to_spins(np.array([0, 1, 1]))
    array([-1,  1,  1], dtype=int8)
    """
    xp, (bits,) = common_namespace(bits=bits)
    dtype = xp.int8 if dtype is None else dtype
    if xp.isdtype(bits.dtype, "bool"):
        b = xp.astype(bits, xp.int8)
    else:
        n_bad = int(xp.sum(xp.astype(xp.logical_not(xp.logical_or(bits == 0, bits == 1)),
                                     xp.int64)))
        if n_bad:
            raise ValueError(f"`bits` must contain only 0 and 1; {n_bad} values are not")
        b = xp.astype(bits, xp.int8)
    return xp.astype(2 * b - 1, dtype)


def to_bits(spins, *, dtype=None):
    """Spins {-1, +1} -> {0, 1}: ``b = (s + 1) / 2``; default dtype uint8.

    Raises ``ValueError`` if any value is not -1 or +1.

    Examples
    --------
    >>> import numpy as np
    >>> from arraygen.gibbs import to_bits
    >>> to_bits(np.array([-1, 1, 1], dtype=np.int8))
    array([0, 1, 1], dtype=uint8)
    """
    xp, (spins,) = common_namespace(spins=spins)
    _check_spin_values(xp, spins, "spins")
    dtype = xp.uint8 if dtype is None else dtype
    return xp.astype(spins > 0, dtype)


# ----------------------------------------------------------------------------------------------
# Array-API implementation


def _shift(xp, a, o, periodic: bool):
    """``out[..., c, y, x] = a[..., c+dc, y+dy, x+dx]``, zero outside the grid if not periodic."""
    if periodic:
        return xp.roll(a, shift=tuple(-v for v in o), axis=(-3, -2, -1))
    out = a
    for axis, d in zip((-3, -2, -1), o):
        if d == 0:
            continue
        n = out.shape[axis]
        if abs(d) >= n:
            return xp.zeros(a.shape, dtype=a.dtype, device=aa.device(a))
        idx = [slice(None)] * out.ndim
        idx[axis] = slice(d, None) if d > 0 else slice(None, n + d)
        kept = out[tuple(idx)]
        pad_shape = list(out.shape)
        pad_shape[axis] = abs(d)
        pad = xp.zeros(tuple(pad_shape), dtype=a.dtype, device=aa.device(a))
        out = xp.concat((kept, pad) if d > 0 else (pad, kept), axis=axis)
    return out


def _field(xp, model, s):
    """Conditional field gamma (same shape as s, float) of every site."""
    j = model._couplings_eff
    g = model.bias + xp.zeros(s.shape, dtype=s.dtype, device=aa.device(s))
    for k, o in enumerate(model.offsets):
        g = g + j[k, ...] * _shift(xp, s, o, model.periodic)
        g = g + _shift(xp, j[k, ...] * s, tuple(-v for v in o), model.periodic)
    return g


def _sweeps_xp(xp, model, s, n_sweeps, beta, uniforms, gen, origin=None):
    """Array-API block Gibbs sweeps on float spins s (B, C, H, W); returns float spins."""
    colors = model._kernel_colors()
    work = s.dtype
    for t in range(n_sweeps):
        if uniforms is not None:
            u = uniforms[t, ...]
        elif origin is not None:  # a window of a larger array: its sites' stream elements
            u = xp.astype(_window_uniforms(xp, gen.advance(t), tuple(s.shape), origin, s), work)
        elif isinstance(gen, np.random.Generator):
            u = xp.asarray(gen.random(tuple(s.shape), dtype=np.float32), device=aa.device(s))
            u = xp.astype(u, work)
        else:
            u = xp.astype(_random.uniform(gen.advance(t), tuple(s.shape), dtype=xp.float32,
                                          like=s), work)
        for c in range(model.n_colors):
            g = _field(xp, model, s)
            p = 1.0 / (1.0 + xp.exp((-2.0 * beta) * g))
            new = xp.where(u < p, xp.ones_like(s), -xp.ones_like(s))
            s = xp.where(colors == c, new, s)
    return s


def _window_uniforms(xp, key, shape4, origin, like):
    """float32 uniforms of the sites of a window (launcher contract ``origin``)."""
    from ._kernels.gibbs import element_indices
    from .backends._philox_xp import uniform_f32_at

    e = xp.asarray(element_indices(shape4, origin), device=aa.device(like))
    c2, c3 = key.counter_words
    return uniform_f32_at(xp, e, c2, c3, *key.key_words)


def _check_model(model):
    if not isinstance(model, StencilIsing):
        raise TypeError(f"`model` must be an arraygen.gibbs.StencilIsing; got "
                        f"{type(model).__name__}")


def _check_spins_shape(model, spins):
    if spins.ndim < 3 or tuple(spins.shape[-3:]) != model.shape:
        raise ValueError(f"`spins` must have shape (..., C, H, W) with (C, H, W) = {model.shape}; "
                         f"got {tuple(spins.shape)}")
    if model.bias.ndim == 4 and tuple(spins.shape) != tuple(model.bias.shape):
        raise ValueError(f"`spins` must have the shape of the per-chain `bias` "
                         f"{tuple(model.bias.shape)}; got {tuple(spins.shape)}")


def gibbs_sweeps(model: StencilIsing, spins, *, n_sweeps: int = 1, beta: float = 1.0, rng=None,
                 uniforms=None, multispin: bool | None = None,
                 sweeps_per_exchange: int | None = None,
                 backend: str | None = None):
    r"""Block Gibbs (heat-bath) sweeps of a :class:`StencilIsing` model.

    Per sweep, for each colour :math:`c = 0, \dots, n-1` in order, every site :math:`i` of
    colour :math:`c` is resampled in parallel:

    .. math::

        \gamma_i = h_i + \sum_k J_{k,i}\, s_{i+o_k} + \sum_k J_{k,i-o_k}\, s_{i-o_k}, \qquad
        s_i = \begin{cases} +1 & u_i < \sigma(2 \beta \gamma_i) \\ -1 & \text{otherwise}
        \end{cases}

    Parameters
    ----------
    model : StencilIsing
    spins : array, shape (..., C, H, W)
        Values in {-1, +1}, any integer or floating dtype (int8 is the native kernel dtype).
        With a per-chain bias (B, C, H, W) the shape must be (B, C, H, W).
    n_sweeps : int
        Number of sweeps (>= 0).
    beta : float
        Inverse temperature (finite, >= 0).
    rng : int, Key or numpy.random.Generator, optional
        Stream for the uniforms: sweep ``t`` uses ``key.advance(t)`` and the site's flat C-order
        index in ``spins`` (float32 uniforms, :func:`arraygen.random.uniform`), so every backend
        draws identical numbers. A Generator draws on the host.
    uniforms : array, shape (n_sweeps, \*spins.shape), optional
        Uniforms in [0, 1] to use instead of drawing them.
    sweeps_per_exchange : int, optional
        Dask ``spins`` only: sweeps between halo exchanges (default: as many as keep the halo
        within a quarter of the smallest chunk). The result is bitwise that of the whole call.
    multispin : bool, optional
        The multi-spin-coded fast path for +-J models (Notes). None (default): taken
        automatically on the ``"cupy"`` backend when the model qualifies; False: never; True:
        required (``"cupy"`` or ``"numba_cuda"`` backend, a +-J model, a Key stream; else
        ValueError).
    backend : str, optional
        ``"array_api"``, ``"numba_cpu"``, ``"numba_cuda"``, ``"cupy"`` or ``"triton"``.

    Returns
    -------
    array like ``spins`` (namespace, device, shape and dtype)

    Notes
    -----
    **+-J fast path.** When the model has the 4-neighbour offsets with the checkerboard
    colouring, every edge's coupling has the same magnitude ``a`` (signs free; uniform couplings
    are the special case) and the bias is one value ``h`` over the grid, a site's field takes
    one of 9 values :math:`h + a\,(2P + M - 4)` (P positive terms :math:`J s_{nb} > 0`, M edges
    missing at an open boundary). The multi-spin kernels (``arraygen/backends/cupy/gibbs_msc.cu``)
    pack 32 spins per uint32 word, count the positive terms with bitwise adders and compare each
    site's Philox word with a table of 9 integer thresholds. The uniforms are those of the
    float-coupling kernels (same key, sweep and site); ``p`` comes from the exact field in
    float64, rounded once to the model's dtype, where those kernels compute it in the model's
    dtype, so the two agree except where ``u`` lies within a rounding of ``p`` (about 1e-7 of
    the float32 decisions). :func:`arraygen.reference.gibbs.msc_sweeps` is the NumPy version of
    the same algorithm; ``model._msc`` is set at construction when the model qualifies.

    Examples
    --------
    >>> import numpy as np
    >>> from arraygen.gibbs import StencilIsing, gibbs_sweeps
    >>> model = StencilIsing.nearest_neighbour((4, 4), coupling=10.0)
    >>> s = gibbs_sweeps(model, np.ones((2, 1, 4, 4), np.int8), n_sweeps=3, rng=0,
    ...                  backend="array_api")  # default: the numba_cpu kernel
    >>> s.shape, s.dtype, bool(np.all(s == 1))  # a strong ferromagnet stays aligned
    ((2, 1, 4, 4), dtype('int8'), True)
    """
    _check_model(model)
    if _dask.is_dask_array(spins):
        from ._dask_gibbs import gibbs_sweeps as dask_sweeps

        return dask_sweeps(model, spins, n_sweeps=n_sweeps, beta=beta, rng=rng,
                           uniforms=uniforms, sweeps_per_exchange=sweeps_per_exchange,
                           backend=backend)
    xp, (spins, uniforms) = common_namespace(spins=spins, uniforms=uniforms)
    model = model._to(xp, aa.device(spins))
    _check_spins_shape(model, spins)
    n_sweeps = check_int(n_sweeps, "n_sweeps", minimum=0)
    beta = check_scalar(beta, "beta", nonnegative=True)
    check_fits_dtype(xp, 2.0 * beta, model.dtype, "beta", what="2 * beta")
    check_choice(multispin, "multispin", (None, True, False))
    if multispin is True and (model._msc is None or uniforms is not None
                              or isinstance(rng, np.random.Generator)):
        raise ValueError("`multispin=True` needs a +-J nearest-neighbour model (4-neighbour "
                         "offsets, checkerboard colours, one coupling magnitude, one bias "
                         "value) and a Key stream (no `uniforms`, no numpy Generator)")
    _check_spin_values(xp, spins, "spins")
    work = model.dtype
    if uniforms is not None:
        if tuple(uniforms.shape) != (n_sweeps,) + tuple(spins.shape):
            raise ValueError(f"`uniforms` must have shape (n_sweeps, *spins.shape) = "
                             f"{(n_sweeps,) + tuple(spins.shape)}; got {tuple(uniforms.shape)}")
        uniforms, _ = aa.as_float_array(xp, uniforms, "uniforms")
        uniforms = xp.astype(uniforms, work) if uniforms.dtype != work else uniforms
        if n_sweeps and not bool(xp.all(xp.logical_and(uniforms >= 0, uniforms <= 1))):
            raise ValueError("`uniforms` must lie in [0, 1]")
    if n_sweeps == 0:
        return xp.asarray(spins, copy=True)
    gen = _random.as_key(rng) if uniforms is None else None
    return _sweeps(xp, model, spins, n_sweeps=n_sweeps, beta=beta, gen=gen, uniforms=uniforms,
                   backend=backend, multispin=multispin)


#: launchers of the multi-spin-coded +-J kernels (contract: arraygen/_kernels/gibbs_msc.py)
_MSC_KERNELS = {"cupy": "arraygen.backends.cupy.gibbs_msc",
                "numba_cuda": "arraygen.backends.numba_cuda.gibbs_msc"}


def _msc_launcher(model, name, gen, uniforms, multispin):
    """The multi-spin launcher for this call, or None (the float-coupling kernels)."""
    if multispin is False or model._msc is None or uniforms is not None \
            or isinstance(gen, np.random.Generator) or (multispin is None and name != "cupy"):
        return None
    if name not in _MSC_KERNELS:
        raise ValueError(f"`multispin=True` needs the 'cupy' or 'numba_cuda' backend; the "
                         f"selected backend is {name!r}")
    import importlib

    return importlib.import_module(_MSC_KERNELS[name]).gibbs_sweeps


def _sweeps(xp, model, spins, *, n_sweeps, beta, gen, uniforms, backend,
            multispin=None, origin=None):
    """Private core of :func:`gibbs_sweeps`, for loops (PCD training, discrete diffusion): it
    trusts its inputs and synchronises only where a NumPy Generator draws on the host.

    ``model`` in ``spins``' namespace and device (``model._to``), ``spins`` (..., C, H, W) with
    values in {-1, +1}, ``n_sweeps >= 1``, ``beta`` a Python float (``2 beta`` fits the model
    dtype), ``gen`` a Key or Generator (None when ``uniforms``, (n_sweeps, *spins.shape) in
    [0, 1] and the model's dtype, are given). ``origin``: the launcher contract's stream
    origin when ``spins`` is a window of a larger array (a Key ``gen`` then), else None.
    """
    work = model.dtype
    shape4 = (math.prod(spins.shape[:-3]),) + model.shape
    u4 = None if uniforms is None else xp.reshape(uniforms, (n_sweeps,) + shape4)
    name = _dispatch.select("gibbs_sweeps", spins, model.couplings, model.bias, uniforms,
                            backend=backend)
    msc = None if origin is not None else _msc_launcher(model, name, gen, uniforms, multispin)
    if msc is not None:  # +-J model: multi-spin kernels (``multispin`` as in gibbs_sweeps)
        s8 = xp.reshape(xp.astype(spins, xp.int8, copy=False), shape4)
        out = msc(s8, model._msc, n_sweeps=n_sweeps, beta=beta, key=gen,
                  dtype_name=aa.dtype_name(model.dtype))
    elif name == "array_api":
        s = xp.reshape(xp.astype(spins, work), shape4)
        out = _sweeps_xp(xp, model, s, n_sweeps, beta, u4, gen, origin)
    else:
        launcher = _dispatch.kernel("gibbs_sweeps", name)
        s8 = xp.reshape(xp.astype(spins, xp.int8, copy=False), shape4)
        bias = model.bias
        kw = {"offsets": model.offsets, "periodic": model.periodic, "n_colors": model.n_colors,
              "pattern": model.color_pattern, "beta": beta}
        if origin is not None:
            kw["origin"] = origin
        if isinstance(gen, np.random.Generator):
            for _ in range(n_sweeps):
                u = xp.asarray(gen.random(shape4, dtype=np.float32), device=aa.device(spins))
                u = xp.reshape(xp.astype(u, work), (1,) + shape4)
                s8 = launcher(s8, model._couplings_eff, bias, model._kernel_colors(),
                              n_sweeps=1, uniforms=u, key=None, **kw)
            out = s8
        else:
            out = launcher(s8, model._couplings_eff, bias, model._kernel_colors(),
                           n_sweeps=n_sweeps, uniforms=u4, key=gen, **kw)
    return xp.reshape(xp.astype(out, spins.dtype, copy=False), tuple(spins.shape))


# ----------------------------------------------------------------------------------------------
# Energy, moments, exact distribution


def _model_and_spins(model, spins):
    """Boundary of energy/moments: ``(xp, model in the spins' namespace, float spins)``."""
    _check_model(model)
    xp, (spins,) = common_namespace(spins=spins)
    model = model._to(xp, aa.device(spins))
    _check_spins_shape(model, spins)
    _check_spin_values(xp, spins, "spins")
    return xp, model, xp.astype(spins, model.dtype)


def energy(model: StencilIsing, spins):
    r"""Energy :math:`E(s) = -\sum_i h_i s_i - \sum_k \sum_i J_{k,i} s_i s_{i+o_k}`.

    Parameters
    ----------
    model : StencilIsing
    spins : array, shape (..., C, H, W), values in {-1, +1}

    Returns
    -------
    array, shape (...) (the leading batch shape), in the model's floating dtype

    Examples
    --------
    >>> import numpy as np
    >>> from arraygen.gibbs import StencilIsing, energy
    >>> model = StencilIsing.nearest_neighbour((2, 2), coupling=1.0, dtype="float64")
    >>> float(energy(model, np.ones((1, 2, 2))))  # four aligned edges
    -4.0
    """
    xp, model, s = _model_and_spins(model, spins)
    e = -(model.bias * s)
    for k, o in enumerate(model.offsets):
        e = e - model._couplings_eff[k, ...] * s * _shift(xp, s, o, model.periodic)
    return xp.sum(e, axis=(-3, -2, -1))


class Moments(NamedTuple):
    """Sufficient statistics of a batch of spin configurations.

    Attributes
    ----------
    mean : array (C, H, W)
        Per-site mean :math:`\\langle s_i \\rangle` over the batch.
    corr : array (K, C, H, W)
        Per-edge correlation :math:`\\langle s_i s_{i+o_k} \\rangle` (0 where the edge leaves
        the grid), the statistic paired with ``J[k, i]``.
    """

    mean: Any
    corr: Any


def moments(model: StencilIsing, spins) -> Moments:
    r"""Per-site means and per-offset correlations over the batch (PCD sufficient statistics).

    The log-likelihood gradient of a :class:`StencilIsing` with respect to ``bias`` and
    ``couplings`` (at ``beta = 1``) is ``moments(data) - moments(model samples)``.

    Parameters
    ----------
    model : StencilIsing
    spins : array, shape (..., C, H, W), values in {-1, +1}
        All leading axes are averaged over.

    Returns
    -------
    Moments
        ``mean`` (C, H, W) and ``corr`` (K, C, H, W) in the model's floating dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from arraygen.gibbs import StencilIsing, moments
    >>> model = StencilIsing.nearest_neighbour((1, 3), dtype="float64")
    >>> m = moments(model, np.array([[[[1, 1, -1]]], [[[1, -1, -1]]]]))
    >>> m.mean.tolist(), m.corr[0].tolist()  # corr[0]: s_i s_(i + (0, 0, 1))
    ([[[1.0, 0.0, -1.0]]], [[[0.0, 0.0, 0.0]]])
    """
    xp, model, s = _model_and_spins(model, spins)
    return _moments(xp, model, s)


def _moments(xp, model, spins) -> Moments:
    """Private core of :func:`moments`, for loops (PCD training): it trusts its inputs.

    ``model`` is already in the spins' namespace and device (``model._to(xp, device)``) and
    ``spins`` (..., C, H, W) hold values in {-1, +1} in the model's floating dtype (cast here
    if not). No spin-value check and no host synchronisation.
    """
    s = spins if spins.dtype == model.dtype else xp.astype(spins, model.dtype)
    s = xp.reshape(s, (-1,) + model.shape)
    mean = xp.mean(s, axis=0)
    mask = model.edge_mask()
    corr = [xp.mean(s * _shift(xp, s, o, model.periodic), axis=0) * mask[k, ...]
            for k, o in enumerate(model.offsets)]
    corr = xp.stack(corr) if corr else xp.zeros((0,) + model.shape, dtype=model.dtype,
                                                 device=aa.device(s))
    return Moments(mean, corr)


def exact_distribution(model: StencilIsing, *, beta: float = 1.0):
    r"""Every state of a small model and its Boltzmann probability :math:`\propto e^{-\beta E}`.

    Parameters
    ----------
    model : StencilIsing
        At most 20 spins (C H W <= 20).
    beta : float
        Inverse temperature (finite, >= 0).

    Returns
    -------
    states : int8 array (2**N, C, H, W)
        State ``m`` has spin +1 at flat site ``j`` iff bit ``N-1-j`` of ``m`` is set.
    probs : float64 array (2**N,), or (B, 2**N) for a per-chain bias (B, C, H, W)

    Examples
    --------
    >>> from arraygen.gibbs import StencilIsing, exact_distribution
    >>> states, probs = exact_distribution(StencilIsing.nearest_neighbour((1, 2), coupling=0.0))
    >>> states.shape, probs.tolist()
    ((4, 1, 1, 2), [0.25, 0.25, 0.25, 0.25])
    """
    _check_model(model)
    beta = check_scalar(beta, "beta", nonnegative=True)
    n = model.n_sites
    if n > _EXACT_MAX_SPINS:
        raise ValueError(f"`model` has {n} spins; exact_distribution enumerates 2**N states and "
                         f"allows at most {_EXACT_MAX_SPINS}")
    xp = model._xp
    m = np.arange(2**n, dtype=np.int64)[:, None]
    bits = (m >> np.arange(n - 1, -1, -1, dtype=np.int64)[None, :]) & 1
    states_np = (2 * bits - 1).astype(np.int8).reshape((2**n,) + model.shape)
    # energies in float64 on the host: the couplings are tiny for <= 20 spins
    j = aa.to_numpy(model._couplings_eff).astype(np.float64)
    h = aa.to_numpy(model.bias).astype(np.float64)
    s = states_np.astype(np.float64)
    hs = h.reshape((-1, 1, n)) if h.ndim == 4 else h.reshape((1, 1, n))
    e = -np.sum(hs * s.reshape((1, 2**n, n)), axis=-1)
    for k, o in enumerate(model.offsets):
        e = e - np.sum((j[k, ...] * s * _shift_np(s, o, model.periodic)).reshape(2**n, n), axis=-1)
    logw = -beta * e
    logw = logw - logw.max(axis=-1, keepdims=True)
    w = np.exp(logw)
    probs = w / w.sum(axis=-1, keepdims=True)
    if h.ndim != 4:
        probs = probs[0]
    return (xp.asarray(states_np, device=model._device),
            xp.asarray(probs, dtype=xp.float64, device=model._device))
