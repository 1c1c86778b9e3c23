"""Bit-flip discrete diffusion: a denoising thermodynamic model (DTM) with one Ising model per step.

Forward process (spins ``s = 2x - 1`` in {-1, +1}, shape (B, C, H, W)): step ``t`` flips every
bit independently with probability ``beta_t`` (:func:`arraygen.schedules.bitflip_schedule`),
so ``q(s_t | s_0)`` flips with ``pbar_t = (1 - prod_{u<=t}(1 - 2 beta_u)) / 2`` and

    log q(s_t | s_{t-1}) = const + J_t s_t . s_{t-1},   J_t = 0.5 ln((1 - beta_t) / beta_t).

Reverse process: step ``t`` (``t = T..1``) is a conditional energy-based model

    p_theta(s_{t-1} | s_t) ∝ exp(-E_t(s_{t-1}) + J_t s_t . s_{t-1}),
    E_t(s) = -sum_i h_t,i s_i - sum_k sum_i W_t[k, i] s_i s_{i + o_k},

a :class:`arraygen.gibbs.StencilIsing` with the learned bias ``h_t`` plus the per-chain bias
``J_t s_t`` carrying ``x_t``. The couplings ``W_t`` live on ``K`` offsets ``o_k`` (the
local 3x3 neighbourhood plus skip links at distances 2, 4 and 8); they are either one weight
per site and offset (``coupling="site"``, the default: digits are not translation invariant,
so a weight may depend on where the edge is) or one weight per offset (``coupling="offset"``,
shared over the image). The time coupling ``J_t`` is fixed by the forward process, never learned.

Training maximises ``E_q log p_theta(s_{t-1} | s_t)`` for every step with the moment-matching
gradient (thrml's ``estimate_kl_grad`` with the opposite sign, i.e. ascent):

    dL/dh_t,i   = <s_i>_data - <s_i>_model,
    dL/dW_t[k,i] = <s_i s_{i+o_k}>_data - <s_i s_{i+o_k}>_model,

where the data averages run over pairs ``(s_{t-1}, s_t)`` from the forward process and the
model average over chains of ``p_theta(. | s_t)`` conditioned on the same ``s_t``. The model
chains are persistent (PCD-k): each iteration they continue from their last state under the
new conditioning and take ``pcd_k`` Gibbs sweeps. All ``T`` steps are trained together as
one stacked model of ``T * C`` channels (step ``t`` in channels ``(t-1)C .. tC-1``; edges that
would cross between steps carry zero weight), so one Gibbs call serves every step.

Sampling starts from Bernoulli(1/2) spins and, for ``t = T..1``, runs Gibbs sweeps of step
``t``'s conditional model starting from ``s_t``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import _array_api as aa
from . import _dask
from . import random as _random
from ._validation import check_choice, check_int, check_scalar, check_shape
from .gibbs import StencilIsing, _check_spin_values, local_offsets, to_spins
from .gibbs import _moments as _moments_core
from .gibbs import _sweeps as _gibbs_core
from .schedules import BitflipSchedule, bitflip_schedule

__all__ = [
    "DEFAULT_OFFSETS",
    "BitflipDTM",
    "forward_transition",
    "q_sample",
    "q_step",
]

logger = logging.getLogger("arraygen")

#: The 3x3 neighbourhood (4 undirected offsets) plus skip links at distances 2, 4 and 8 along
#: rows, columns and both diagonals (12 offsets): 16 offsets, 5 colours. On 16x16 digits
#: (T=8, 300 PCD-3 iterations) the long links lower the held-out Frechet distance from about
#: 3.2 (3x3 plus distance-2 row/column links) to about 1.8.
DEFAULT_OFFSETS = local_offsets(1, skip=(2, 4, 8))

_CONVENTIONS = ("pm1", "01")
_COUPLINGS = ("site", "offset")
_FORMAT_VERSION = 1


# ----------------------------------------------------------------------------------------------
# spins, bits and the forward process


def _check_spins(s: Any, name: str) -> None:
    """``ValueError`` naming ``name`` unless every value is -1 or +1 (``TypeError`` for bool)."""
    _check_spin_values(aa.array_namespace(**{name: s}), s, name)


def _check_bits(x: Any, name: str) -> None:
    if _dask.is_dask_array(x):  # one chunk-wise reduction; the data stay on the workers
        if x.dtype == np.bool_:
            return
        n_bad = int((~((x == 1) | (x == 0))).sum(dtype=np.int64).compute())
        if n_bad:
            raise ValueError(f"`{name}` must be binary (values 0 and 1 only); found {n_bad} "
                             f"other values")
        return
    xp = aa.array_namespace(**{name: x})
    if xp.isdtype(x.dtype, "bool"):
        return
    ok = (x == 1) | (x == 0)
    if not bool(xp.all(ok)):
        n_bad = int(xp.sum(xp.astype(~ok, xp.int64)))
        raise ValueError(f"`{name}` must be binary (values 0 and 1 only); found {n_bad} other "
                         f"values")


def _uniforms(rng: Any, shape: tuple[int, ...], like: Any, dtype: Any) -> Any:
    """Uniforms in (0, 1) shaped ``shape`` in ``like``'s namespace/device (Philox or Generator)."""
    xp = aa.array_namespace(like=like)
    gen = _random.as_key(rng)
    if isinstance(gen, np.random.Generator):
        host = gen.random(shape, dtype=np.float64)
        return xp.asarray(host, dtype=dtype, device=aa.device(like))
    return _random.uniform(gen, shape, dtype=dtype, like=like)


def _flip_probability(xp: Any, p: Any, batch: int, like: Any, dtype: Any) -> Any:
    """Per-sample flip probabilities, shape (B, 1, ..., 1), from a scalar or a (B,) vector."""
    p = np.asarray(p, dtype=np.float64)
    if p.ndim == 0:
        p = np.full((batch,), float(p))
    shape = (batch,) + (1,) * (like.ndim - 1)
    return xp.reshape(xp.asarray(p, dtype=dtype, device=aa.device(like)), shape)


def _step_indices(t: Any, low: int, high: int, batch: int, name: str = "t") -> np.ndarray:
    """``t`` (int or (B,) integers) as a host int64 array checked in [low, high]."""
    if aa.is_array(t):
        t = aa.to_numpy(t)
    arr = np.asarray(t)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"`{name}` must be an integer or an integer array; got {t!r}")
    if arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] != batch):
        raise ValueError(f"`{name}` must be a scalar or have shape ({batch},); got shape "
                         f"{arr.shape}")
    if arr.size and (arr.min() < low or arr.max() > high):
        raise ValueError(f"`{name}` must lie in [{low}, {high}]; got {arr.tolist()}")
    return arr.astype(np.int64)


def _flip(xp: Any, x: Any, p: Any, rng: Any, convention: str) -> Any:
    """Flip each element of ``x`` independently with probability ``p`` (broadcast)."""
    dtype = xp.float64 if x.dtype == xp.float64 else xp.float32
    u = _uniforms(rng, tuple(x.shape), x, dtype)
    flip = u < p
    if convention == "pm1":
        return xp.where(flip, -x, x)
    if xp.isdtype(x.dtype, "bool"):
        return xp.logical_xor(flip, x)
    return xp.where(flip, 1 - x, x)


def _check_convention(x: Any, convention: str, name: str) -> None:
    check_choice(convention, "convention", _CONVENTIONS)
    if convention == "pm1":
        _check_spins(x, name)
    else:
        _check_bits(x, name)


def q_sample(x0: Any, t: Any, schedule: BitflipSchedule, *, rng: Any = None,
             convention: str = "pm1") -> Any:
    """Draw ``x_t ~ q(x_t | x_0)``: flip every bit of ``x0`` independently with ``pbar_t``.

    Parameters
    ----------
    x0 : array, shape (B, ...)
        Spins in {-1, +1} (``convention="pm1"``) or bits in {0, 1} (``"01"``).
    t : int or int array of shape (B,)
        Step(s) in ``0..T`` (``pbar_0 = 0`` returns ``x0``).
    schedule : BitflipSchedule
    rng : int, Key or numpy.random.Generator, optional
        Uniforms from the Philox stream of ``rng`` (element = flat C-order index).

    Returns
    -------
    array
        Same shape, dtype, namespace and device as ``x0``.
    """
    xp = aa.array_namespace(x0=x0)
    _check_convention(x0, convention, "x0")
    if x0.ndim < 1:
        raise ValueError(f"`x0` must have a leading batch axis; got shape {tuple(x0.shape)}")
    steps = _step_indices(t, 0, schedule.T, x0.shape[0])
    pbar = np.concatenate([[0.0], schedule.pbar])[steps]
    dtype = xp.float64 if x0.dtype == xp.float64 else xp.float32
    p = _flip_probability(xp, pbar, x0.shape[0], x0, dtype)
    return _flip(xp, x0, p, rng, convention)


def q_step(x_prev: Any, t: Any, schedule: BitflipSchedule, *, rng: Any = None,
           convention: str = "pm1") -> Any:
    """Draw ``x_t ~ q(x_t | x_{t-1})``: flip every bit of ``x_prev`` with ``beta_t``.

    Parameters are as for :func:`q_sample`, with ``t`` in ``1..T``.
    """
    xp = aa.array_namespace(x_prev=x_prev)
    _check_convention(x_prev, convention, "x_prev")
    if x_prev.ndim < 1:
        raise ValueError(f"`x_prev` must have a leading batch axis; got shape "
                         f"{tuple(x_prev.shape)}")
    steps = _step_indices(t, 1, schedule.T, x_prev.shape[0])
    dtype = xp.float64 if x_prev.dtype == xp.float64 else xp.float32
    p = _flip_probability(xp, schedule.betas[steps - 1], x_prev.shape[0], x_prev, dtype)
    return _flip(xp, x_prev, p, rng, convention)


def forward_transition(schedule: BitflipSchedule, s: int, t: int) -> np.ndarray:
    """The 2x2 per-bit transition matrix ``q(x_t | x_s)`` for ``0 <= s <= t <= T`` (float64).

    ``M[a, b] = P(x_t = b | x_s = a)`` = ``1 - p`` on the diagonal and ``p`` off it, with
    ``p = (1 - prod_{s<u<=t} (1 - 2 beta_u)) / 2`` (``p = pbar_t`` for ``s = 0``).
    """
    t = check_int(t, "t", minimum=0, maximum=schedule.T)
    s = check_int(s, "s", minimum=0, maximum=t)
    r = float(np.prod(1.0 - 2.0 * schedule.betas[s:t]))
    p = 0.5 * (1.0 - r)
    return np.array([[1.0 - p, p], [p, 1.0 - p]])


# ----------------------------------------------------------------------------------------------
# the model


def _check_offsets(offsets: Any, boundary: str) -> tuple[tuple[int, int, int], ...]:
    try:
        out = tuple(tuple(int(v) for v in o) for o in offsets)
    except (TypeError, ValueError):
        raise TypeError(f"`offsets` must be a sequence of (dc, dy, dx) integer triples; got "
                        f"{offsets!r}") from None
    if not out or any(len(o) != 3 for o in out):
        raise ValueError(f"`offsets` must be a non-empty sequence of (dc, dy, dx) triples; got "
                         f"{offsets!r}")
    if boundary == "periodic" and any(o[0] != 0 for o in out):
        raise ValueError("`offsets` with a channel step dc != 0 need boundary='open' (steps are "
                         f"stacked along the channel axis); got {out}")
    return out


class BitflipDTM:
    """Bit-flip diffusion with a learned conditional :class:`~arraygen.gibbs.StencilIsing` per step.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(H, W)`` or ``(C, H, W)``.
    schedule : BitflipSchedule, optional
        Default: ``bitflip_schedule(T, kind, p_max)``.
    T : int
        Number of steps when ``schedule`` is not given.
    kind, p_max
        Passed to :func:`~arraygen.schedules.bitflip_schedule`.
    offsets : sequence of (dc, dy, dx)
        Coupling offsets (see :class:`~arraygen.gibbs.StencilIsing`); default
        :data:`DEFAULT_OFFSETS` (3x3 neighbourhood plus skip links at distances 2, 4, 8).
    coupling : {"site", "offset"}
        One coupling per site and offset (``W_t`` of shape (K, C, H, W)) or one per offset
        (shape (K,), broadcast over the image).
    boundary : {"open", "periodic"}
    dtype : str
        ``"float32"`` (default) or ``"float64"``: dtype of the parameters.
    xp, device
        Namespace (module) and device of the parameters; NumPy by default.

    Attributes
    ----------
    biases : array, shape (T, C, H, W)
        ``h_t`` at index ``t - 1``.
    couplings : array, shape (T, K, C, H, W) or (T, K)
        ``W_t`` at index ``t - 1``; zero on edges that leave the grid (open boundary).
    schedule : BitflipSchedule
    offsets : tuple of (dc, dy, dx)
    """

    def __init__(self, shape: Sequence[int], schedule: BitflipSchedule | None = None, *,
                 T: int = 10, kind: str = "cosine", p_max: float = 0.5,
                 offsets: Sequence[Sequence[int]] = DEFAULT_OFFSETS, coupling: str = "site",
                 boundary: str = "open", dtype: str = "float32", xp: Any = None,
                 device: Any = None) -> None:
        shape = check_shape(shape, "shape", ndim=(2, 3))
        if len(shape) == 2:
            shape = (1,) + shape
        if schedule is None:
            schedule = bitflip_schedule(check_int(T, "T", minimum=1), kind, p_max)
        if not isinstance(schedule, BitflipSchedule):
            raise TypeError(f"`schedule` must be a BitflipSchedule; got {type(schedule).__name__}")
        check_choice(coupling, "coupling", _COUPLINGS)
        check_choice(boundary, "boundary", ("open", "periodic"))
        dtype_name = next((n for n in ("float32", "float64") if n in str(dtype)), None)
        if dtype_name is None:
            raise ValueError(f"`dtype` must be 'float32' or 'float64'; got {dtype!r}")
        self.shape = shape
        self.schedule = schedule
        self.offsets = _check_offsets(offsets, boundary)
        self.coupling = coupling
        self.boundary = boundary
        self.xp = aa.namespace_for(np if xp is None else xp)
        self.device = device
        self.dtype = getattr(self.xp, dtype_name)
        self._edge_mask = self._make_edge_mask()
        # validates the offsets (distinct, none zero, no opposite pairs) and their colouring
        StencilIsing.from_offsets(shape, self.offsets, coupling=0.0, boundary=boundary)
        T, K = schedule.T, len(self.offsets)
        self.biases = self.xp.zeros((T, *shape), dtype=self.dtype, device=device)
        cshape = (T, K, *shape) if coupling == "site" else (T, K)
        self.couplings = self.xp.zeros(cshape, dtype=self.dtype, device=device)
        self.train_state: dict[str, Any] = {}

    # -- geometry ---------------------------------------------------------------------------

    @property
    def T(self) -> int:
        """Number of diffusion steps."""
        return self.schedule.T

    def _make_edge_mask(self):
        """(K, C, H, W) with 1 where the edge (i, i + o_k) stays in one image, else 0."""
        C, H, W = self.shape
        mask = np.ones((len(self.offsets), C, H, W))
        c, y, x = np.meshgrid(np.arange(C), np.arange(H), np.arange(W), indexing="ij")
        for k, (dc, dy, dx) in enumerate(self.offsets):
            inside = (c + dc >= 0) & (c + dc < C)
            if self.boundary == "open":
                inside &= (y + dy >= 0) & (y + dy < H) & (x + dx >= 0) & (x + dx < W)
            mask[k] = inside
        return self.xp.asarray(mask, dtype=self.dtype, device=self.device)

    def _site_couplings(self, couplings: Any = None) -> Any:
        """Couplings as (T, K, C, H, W), masked to edges inside one image."""
        xp = self.xp
        w = self.couplings if couplings is None else couplings
        if self.coupling == "offset":
            w = xp.reshape(w, (*w.shape, 1, 1, 1))
        return w * self._edge_mask

    def step_model(self, t: int, s_t: Any = None) -> StencilIsing:
        """The Ising model of reverse step ``t`` (``1 <= t <= T``).

        Without ``s_t`` the bias is the learned ``h_t`` (C, H, W) (the model ``exp(-E_t)``);
        with conditioning spins ``s_t`` of shape (B, C, H, W) it is the per-chain bias
        ``h_t + J_t s_t``, so the model is ``p_theta(s_{t-1} | s_t)``.
        """
        t = check_int(t, "t", minimum=1, maximum=self.T)
        if s_t is not None:
            s_t = self._check_state(s_t, "s_t")
        return self._step_model(t, s_t)

    def _step_model(self, t: int, s_t: Any = None) -> StencilIsing:
        """:meth:`step_model` for a trusted ``t`` and spins ``s_t`` in the parameters' dtype."""
        h = self.biases[t - 1, ...]
        if s_t is not None:
            h = h + float(self.schedule.couplings[t - 1]) * s_t
        w = self._site_couplings()[t - 1, ...]
        return StencilIsing(self.offsets, w, h, boundary=self.boundary)

    def _check_state(self, s: Any, name: str) -> Any:
        xp = self.xp
        aa.array_namespace(**{name: s, "biases": self.biases})
        if s.ndim != 4 or tuple(s.shape[1:]) != self.shape:
            raise ValueError(f"`{name}` must have shape (B, {', '.join(map(str, self.shape))}); "
                             f"got {tuple(s.shape)}")
        _check_spins(s, name)
        return xp.astype(s, self.dtype) if s.dtype != self.dtype else s

    # -- stacked model: all T steps as T*C channels ------------------------------------------

    def _stack(self, a: Any) -> Any:
        """(B, T, C, H, W) -> (B, T*C, H, W)."""
        B, T, C, H, W = a.shape
        return self.xp.reshape(a, (B, T * C, H, W))

    def _unstack(self, a: Any) -> Any:
        """(..., T*C, H, W) -> (..., T, C, H, W)."""
        C, H, W = self.shape
        return self.xp.reshape(a, (*a.shape[:-3], self.T, C, H, W))

    def _stacked_model(self, cond: Any) -> StencilIsing:
        """All steps' conditional models as one StencilIsing on (B, T*C, H, W) chains.

        ``cond`` (B, T, C, H, W) holds ``s_t`` for step ``t`` at index ``t - 1``.
        """
        xp = self.xp
        C, H, W = self.shape
        jt = xp.asarray(self.schedule.couplings, dtype=self.dtype, device=self.device)
        bias = self.biases + xp.reshape(jt, (self.T, 1, 1, 1)) * cond
        w = xp.permute_dims(self._site_couplings(), (1, 0, 2, 3, 4))
        w = xp.reshape(w, (len(self.offsets), self.T * C, H, W))
        return StencilIsing(self.offsets, w, self._stack(bias), boundary=self.boundary)

    # -- gradient -----------------------------------------------------------------------------

    def gradient(self, s_prev: Any, s_t: Any, negative: Any, *, pcd_k: int = 1, rng: Any = None,
                 backend: str | None = None) -> tuple[Any, Any, Any]:
        """Moment-matching gradient of ``mean_b log p_theta(s_prev_b | s_t_b)`` for every step.

        Positive phase: the data pairs. Negative phase: the chains ``negative``, each conditioned
        on its pair's ``s_t``, advanced by ``pcd_k`` Gibbs sweeps (PCD-k when the returned
        chains are passed back next time).

        Parameters
        ----------
        s_prev, s_t, negative : arrays, shape (B, T, C, H, W)
            Spins: ``s_{t-1}`` and ``s_t`` of step ``t`` at index ``t - 1``, and the chains.
        pcd_k : int
            Gibbs sweeps of the chains before their moments are taken.

        Returns
        -------
        grad_biases : (T, C, H, W)
            ``<s_i>_data - <s_i>_model``.
        grad_couplings : (T, K, C, H, W), or (T, K) for ``coupling="offset"``
            ``<s_i s_{i+o_k}>_data - <s_i s_{i+o_k}>_model`` (summed over sites for shared
            couplings), zero on masked edges.
        negative : (B, T, C, H, W)
            The advanced chains.
        """
        xp = self.xp
        shape5 = None
        for name, a in (("s_prev", s_prev), ("s_t", s_t), ("negative", negative)):
            aa.array_namespace(**{name: a, "biases": self.biases})
            if a.ndim != 5 or tuple(a.shape[1:]) != (self.T, *self.shape):
                raise ValueError(f"`{name}` must have shape (B, {self.T}, "
                                 f"{', '.join(map(str, self.shape))}); got {tuple(a.shape)}")
            if shape5 is not None and tuple(a.shape) != shape5:
                raise ValueError(f"`s_prev`, `s_t` and `negative` must have one shape; got "
                                 f"{shape5} and {tuple(a.shape)} for `{name}`")
            shape5 = tuple(a.shape)
            _check_spins(a, name)
        pcd_k = check_int(pcd_k, "pcd_k", minimum=1)
        s_prev, s_t, negative = (xp.astype(a, self.dtype) if a.dtype != self.dtype else a
                                 for a in (s_prev, s_t, negative))
        return self._gradient(s_prev, s_t, negative, pcd_k, rng, backend)

    def _gradient(self, s_prev: Any, s_t: Any, negative: Any, pcd_k: int, rng: Any,
                  backend: str | None) -> tuple[Any, Any, Any]:
        """:meth:`gradient` on trusted spins (B, T, C, H, W) in the parameters' dtype."""
        xp = self.xp
        shape5 = tuple(negative.shape)
        model = self._stacked_model(s_t)
        model = model._to(xp, aa.device(negative))   # converted once for sweeps and moments
        chains = self._sweeps(model, self._stack(negative), pcd_k, rng, backend)
        chains = xp.astype(chains, self.dtype) if chains.dtype != self.dtype else chains
        m_pos, c_pos = _moments_core(xp, model, self._stack(s_prev))
        m_neg, c_neg = _moments_core(xp, model, chains)
        grad_h = self._unstack(m_pos - m_neg)
        grad_w = self._unstack(c_pos - c_neg)                      # (K, T, C, H, W)
        grad_w = xp.permute_dims(grad_w, (1, 0, 2, 3, 4)) * self._edge_mask
        if self.coupling == "offset":
            grad_w = xp.sum(xp.reshape(grad_w, (*grad_w.shape[:2], -1)), axis=-1)
        negative = xp.reshape(chains, shape5)
        return grad_h, grad_w, negative

    # -- initialisation and training ------------------------------------------------------------

    def _data_spins(self, images: Any, name: str = "images") -> Any:
        """Validated {0, 1} images (N, H, W) or (N, C, H, W) -> spins (N, C, H, W) in self.xp.

        A dask array stays one: the validated images (N, C, H, W) themselves, not spins,
        persisted on the workers (:func:`arraygen._dask.materialize`); :meth:`_draw` turns the
        rows an iteration gathers into spins.
        """
        if _dask.is_dask_array(images):
            return self._dask_images(images, name)
        if not aa.is_array(images):
            images = np.asarray(images)
        if aa.is_numpy_array(images) and not aa.is_numpy_namespace(self.xp):
            images = self.xp.asarray(np.ascontiguousarray(images), device=self.device)
        aa.array_namespace(**{name: images, "biases": self.biases})
        if images.ndim == 3 and self.shape[0] == 1 and tuple(images.shape[1:]) == self.shape[1:]:
            images = self.xp.reshape(images, (images.shape[0], *self.shape))
        self._check_image_shape(tuple(images.shape), name)
        _check_bits(images, name)
        return to_spins(images, dtype=self.dtype)

    def _check_image_shape(self, shape: tuple, name: str) -> None:
        if len(shape) != 4 or shape[1:] != self.shape:
            raise ValueError(f"`{name}` must have shape (N, {', '.join(map(str, self.shape))}) "
                             f"(or (N, H, W) for one channel); got {shape}")
        if shape[0] < 1:
            raise ValueError(f"`{name}` must hold at least one image; got shape {shape}")

    def _dask_images(self, images: Any, name: str) -> Any:
        """:meth:`_data_spins` of a dask array: shape from the metadata, values by one
        reduction, then persisted (N, C, H, W) {0, 1} images (nothing comes to the host)."""
        meta = images._meta
        if not aa.is_numpy_array(meta):  # CuPy chunks must match the parameters' namespace
            aa.array_namespace(**{name: meta, "biases": self.biases})
        if any(math.isnan(n) for n in images.shape):
            raise ValueError(f"`{name}` has unknown chunk sizes {images.chunks}; call "
                             f"`{name}.compute_chunk_sizes()` first")
        if images.ndim == 3 and self.shape[0] == 1 and tuple(images.shape[1:]) == self.shape[1:]:
            images = images.reshape((images.shape[0], *self.shape))
        self._check_image_shape(tuple(images.shape), name)
        images = _dask.materialize(_dask.rows_whole(images))   # whole images per chunk
        _check_bits(images, name)
        return images

    def _draw(self, data: Any, idx: np.ndarray) -> Any:
        """Spins (B, C, H, W) of the images ``idx`` (host int64) of :meth:`_data_spins`' output.

        In memory a take; on dask one small compute of the drawn rows
        (:func:`arraygen._dask.take_rows`), converted like :meth:`_data_spins` converts the
        whole set, so both give the same numbers.
        """
        xp = self.xp
        if not _dask.is_dask_array(data):
            return xp.take(data, xp.asarray(idx, device=self.device), axis=0)
        rows = _dask.take_rows(data, idx)
        if aa.is_numpy_array(rows) and not aa.is_numpy_namespace(xp):
            rows = np.ascontiguousarray(rows)
        return to_spins(xp.asarray(rows, device=self.device), dtype=self.dtype)

    def init_from_data(self, images: Any) -> BitflipDTM:
        """Set every ``h_t`` to the exact reverse step of independent pixels; zero couplings.

        With data means ``m_i = E[s_0,i]`` (add-one smoothed, so never +-1), the pixels of
        ``x_{t-1}`` have mean ``(1 - 2 pbar_{t-1}) m_i``; for independent pixels the reverse
        conditional is then exactly ``h_t,i = atanh((1 - 2 pbar_{t-1}) m_i)`` plus ``J_t s_t``.
        So the initial model samples the product-of-Bernoulli baseline, and training only has
        to add what the couplings can explain. A dask ``images`` is counted chunk-wise (one
        reduction to a (C, H, W) count); the images stay on the workers.
        """
        return self._init_from(self._data_spins(images))

    def _init_from(self, data: Any) -> BitflipDTM:
        """:meth:`init_from_data` on :meth:`_data_spins`' output."""
        xp = self.xp
        n = data.shape[0]
        if _dask.is_dask_array(data):
            # integer counts: equal to the in-memory float sum of 0/1 (exact below 2**24 images)
            count = (data != 0).sum(axis=0, dtype=np.int64).compute()
            ones = xp.asarray(aa.to_numpy(count), dtype=self.dtype, device=self.device)
        else:
            ones = xp.sum((data + 1.0) / 2.0, axis=0)
        p_one = (ones + 1.0) / (n + 2.0)
        m = 2.0 * p_one - 1.0
        r_prev = xp.asarray(1.0 - 2.0 * np.concatenate([[0.0], self.schedule.pbar[:-1]]),
                            dtype=self.dtype, device=self.device)
        self.biases = xp.atanh(xp.reshape(r_prev, (self.T, 1, 1, 1)) * m)
        self.couplings = xp.zeros_like(self.couplings)
        return self

    def _forward_pairs(self, s0: Any, key: Any) -> tuple[Any, Any]:
        """One forward trajectory per image: (s_prev, s_t), each (B, T, C, H, W)."""
        xp = self.xp
        u = _uniforms(key, (s0.shape[0], self.T, *self.shape), s0, self.dtype)
        betas = xp.asarray(self.schedule.betas, dtype=self.dtype, device=self.device)
        flips = u < xp.reshape(betas, (1, self.T, 1, 1, 1))
        states = [s0]
        for t in range(self.T):
            states.append(xp.where(flips[:, t, ...], -states[-1], states[-1]))
        return xp.stack(states[:-1], axis=1), xp.stack(states[1:], axis=1)

    def fit(self, images: Any, *, iters: int = 500, chains: int = 64, pcd_k: int = 5,
            lr: float = 0.03, optimizer: str = "adam", weight_decay: float = 0.0,
            init: str = "data", rng: Any = None, progress: bool = False,
            callback: Callable[[int, BitflipDTM, dict], Any] | None = None,
            backend: str | None = None) -> dict[str, list[float]]:
        """Train every step by PCD-k on forward pairs drawn from ``images``.

        Each iteration draws ``chains`` images (with replacement), runs the forward process to
        get the pairs ``(s_{t-1}, s_t)`` of every step, advances the persistent chains by
        ``pcd_k`` sweeps conditioned on those ``s_t`` (:meth:`gradient`) and takes one
        ascent step on ``h`` and ``W``: Adam (``lr``, betas 0.9/0.999, eps 1e-8) or plain
        SGD ``theta += lr * grad``. ``weight_decay`` adds ``-weight_decay * theta`` to the
        gradient. Calling ``fit`` again (or after :meth:`load`) resumes: optimiser state,
        chains and iteration count live in ``train_state``.

        ``images`` may be a dask array (e.g. ``dask.array.from_zarr``; NumPy or, for a CuPy
        model, CuPy chunks, any chunking). The images then stay on the workers: they are
        persisted there once in chunks of whole images (the cluster's memory must hold them),
        validated and (``init="data"``) counted by chunk-wise reductions, and each iteration
        gathers only the ``chains`` rows it draws (one compute of at most two tasks per row
        chunk holding a drawn row, the same bound every iteration, whatever N). The
        O(``chains``) state (parameters, optimiser moments, persistent chains) lives in
        ``train_state`` in the parameters' namespace as usual. The draws come from the same
        Philox stream, so the result is bitwise that of the in-memory call on
        ``images.compute()``.

        Parameters
        ----------
        images : array or dask array, shape (N, H, W) or (N, C, H, W)
            Training images in {0, 1}.
        iters : int
            Iterations (each trains all ``T`` steps).
        chains : int
            Data pairs and persistent chains per step and iteration.
        pcd_k : int
            Gibbs sweeps per iteration.
        init : {"data", "zeros"}
            On a fresh model: biases from :meth:`init_from_data`, or zero. Ignored when resuming.
        rng : int, Key or numpy.random.Generator, optional
        progress : bool
            Show a tqdm progress bar.
        callback : callable, optional
            ``callback(iteration, model, stats)`` after every iteration; ``stats`` holds the
            RMS of both gradients.

        Returns
        -------
        dict
            ``"grad_bias_rms"`` and ``"grad_coupling_rms"`` per iteration (lists of floats).

        Examples
        --------
        >>> import numpy as np
        >>> import dask.array as da
        >>> from arraygen.discrete import BitflipDTM
        >>> images = (np.random.default_rng(0).random((40, 8, 8)) < 0.3).astype(np.uint8)
        >>> kw = dict(iters=2, chains=6, pcd_k=1, rng=7)
        >>> a, b = BitflipDTM((8, 8), T=2), BitflipDTM((8, 8), T=2)
        >>> _ = a.fit(images, **kw)
        >>> _ = b.fit(da.from_array(images, chunks=7), **kw)   # images stay a dask array
        >>> bool(np.array_equal(a.couplings, b.couplings))
        True
        """
        xp = self.xp
        iters = check_int(iters, "iters", minimum=1)
        chains = check_int(chains, "chains", minimum=1)
        pcd_k = check_int(pcd_k, "pcd_k", minimum=1)
        lr = check_scalar(lr, "lr", positive=True)
        weight_decay = check_scalar(weight_decay, "weight_decay", nonnegative=True)
        check_choice(optimizer, "optimizer", ("adam", "sgd"))
        check_choice(init, "init", ("data", "zeros"))
        data = self._data_spins(images)
        n_data = data.shape[0]
        key = _philox_key(rng)
        state = self.train_state
        if not state:
            if init == "data":
                self._init_from(data)
            state.update(iteration=0, step=0, m_h=xp.zeros_like(self.biases),
                         v_h=xp.zeros_like(self.biases), m_w=xp.zeros_like(self.couplings),
                         v_w=xp.zeros_like(self.couplings), negative=None)
        negative = state["negative"]
        if negative is not None and negative.shape[0] != chains:
            logger.info("fit: %d chains requested, %d stored; restarting the chains", chains,
                        negative.shape[0])
            negative = None
        history: dict[str, list[float]] = {"grad_bias_rms": [], "grad_coupling_rms": []}
        from tqdm.auto import tqdm

        start = int(state["iteration"])
        bar = tqdm(range(start, start + int(iters)), disable=not progress, desc="train-dtm",
                   unit="it")
        for it in bar:
            base = key.advance(4 * it)
            words = aa.to_numpy(_random.bits(base, (chains,), xp=np))
            s0 = self._draw(data, words.astype(np.int64) % n_data)
            s_prev, s_t = self._forward_pairs(s0, base.advance(1))
            if negative is None:
                negative = s_prev
            g_h, g_w, negative = self._gradient(s_prev, s_t, negative, pcd_k, base.advance(2),
                                                backend)
            if weight_decay:
                g_h = g_h - weight_decay * self.biases
                g_w = g_w - weight_decay * self.couplings
            self._ascent(state, g_h, g_w, lr, optimizer)
            state["iteration"] = it + 1
            state["negative"] = negative
            stats = {"grad_bias_rms": float(xp.sqrt(xp.mean(g_h * g_h))),
                     "grad_coupling_rms": float(xp.sqrt(xp.mean(g_w * g_w)))}
            for name, value in stats.items():
                history[name].append(value)
            if progress:
                bar.set_postfix(g_h=f"{stats['grad_bias_rms']:.3f}",
                                g_w=f"{stats['grad_coupling_rms']:.3f}")
            if callback is not None:
                callback(it, self, stats)
        bar.close()
        return history

    def _ascent(self, state: dict, g_h: Any, g_w: Any, lr: float, optimizer: str) -> None:
        xp = self.xp
        if optimizer == "sgd":
            self.biases = self.biases + lr * g_h
            self.couplings = self.couplings + lr * g_w
            return
        b1, b2, eps = 0.9, 0.999, 1e-8
        step = int(state["step"]) + 1
        state["step"] = step
        c1, c2 = 1.0 - b1**step, 1.0 - b2**step
        state["m_h"] = b1 * state["m_h"] + (1.0 - b1) * g_h
        state["v_h"] = b2 * state["v_h"] + (1.0 - b2) * g_h * g_h
        state["m_w"] = b1 * state["m_w"] + (1.0 - b1) * g_w
        state["v_w"] = b2 * state["v_w"] + (1.0 - b2) * g_w * g_w
        self.biases = self.biases + lr * (state["m_h"] / c1) / (xp.sqrt(state["v_h"] / c2) + eps)
        self.couplings = (self.couplings
                          + lr * (state["m_w"] / c1) / (xp.sqrt(state["v_w"] / c2) + eps))

    # -- sampling -------------------------------------------------------------------------------

    def reverse_step(self, s_t: Any, t: int, *, sweeps: int = 10, init: Any = None,
                     rng: Any = None, backend: str | None = None) -> Any:
        """Draw ``s_{t-1}`` from ``p_theta(. | s_t)`` by ``sweeps`` Gibbs sweeps.

        The chains start at ``init`` (default: ``s_t`` itself). Returns spins shaped like
        ``s_t`` (B, C, H, W) in the parameters' dtype.
        """
        sweeps = check_int(sweeps, "sweeps", minimum=1)
        t = check_int(t, "t", minimum=1, maximum=self.T)
        s_t = self._check_state(s_t, "s_t")
        start = s_t if init is None else self._check_state(init, "init")
        if tuple(start.shape) != tuple(s_t.shape):
            raise ValueError(f"`init` must have the shape of `s_t` {tuple(s_t.shape)}; got "
                             f"{tuple(start.shape)}")
        return self._reverse_step(s_t, t, sweeps, start, rng, backend)

    def _reverse_step(self, s_t: Any, t: int, sweeps: int, start: Any, rng: Any,
                      backend: str | None) -> Any:
        """:meth:`reverse_step` on trusted spins in the parameters' dtype."""
        out = self._sweeps(self._step_model(t, s_t), start, sweeps, rng, backend)
        return self.xp.astype(out, self.dtype) if out.dtype != self.dtype else out

    def _sweeps(self, model: StencilIsing, spins: Any, n_sweeps: int, rng: Any,
                backend: str | None) -> Any:
        """Gibbs sweeps through :mod:`arraygen.gibbs`' private core (trusted spins in
        {-1, +1}; no spin-value check, no host synchronisation per call)."""
        xp = self.xp
        model = model._to(xp, aa.device(spins))
        return _gibbs_core(xp, model, spins, n_sweeps=n_sweeps, beta=1.0,
                           gen=_random.as_key(rng), uniforms=None, backend=backend)

    def sample(self, n: int, *, sweeps: int = 10, rng: Any = None, progress: bool = False,
               return_trajectory: bool = False, backend: str | None = None) -> Any:
        """Run the reverse chain from Bernoulli(1/2) noise: ``n`` images in {0, 1}.

        ``s_T`` is uniform on {-1, +1}; for ``t = T..1``, ``s_{t-1}`` is ``sweeps`` Gibbs sweeps
        of ``p_theta(. | s_t)`` started at ``s_t`` (:meth:`reverse_step`).

        Returns
        -------
        array
            uint8 images (n, C, H, W); with ``return_trajectory`` also the list of spins
            ``[s_T, ..., s_0]``.
        """
        n = check_int(n, "n", minimum=1)
        sweeps = check_int(sweeps, "sweeps", minimum=1)
        xp = self.xp
        key = _philox_key(rng)
        u = _random.uniform(key, (int(n), *self.shape), dtype=self.dtype, xp=xp,
                            device=self.device)
        s = 1.0 - 2.0 * xp.astype(u < 0.5, self.dtype)
        trajectory = [s]
        from tqdm.auto import tqdm

        for t in tqdm(range(self.T, 0, -1), disable=not progress, desc="sample", unit="step"):
            s = self._reverse_step(s, t, sweeps, s, key.advance(t), backend)
            trajectory.append(s)
        images = xp.astype(s > 0, xp.uint8)
        return (images, trajectory) if return_trajectory else images

    # -- checkpoints ----------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The constructor options (JSON-serialisable), stored in checkpoints."""
        return {"format_version": _FORMAT_VERSION, "shape": list(self.shape),
                "coupling": self.coupling, "boundary": self.boundary,
                "dtype": "float64" if self.dtype == self.xp.float64 else "float32"}

    def save(self, path: Any) -> None:
        """Write an ``.npz`` checkpoint: schedule, offsets, couplings, biases, config, and the
        training state (optimiser moments, persistent chains, iteration) when there is one."""
        arrays = {"schedule_betas": self.schedule.betas, "schedule_pbar": self.schedule.pbar,
                  "offsets": np.asarray(self.offsets, dtype=np.int64),
                  "couplings": aa.to_numpy(self.couplings), "biases": aa.to_numpy(self.biases)}
        state = self.train_state
        if state:
            arrays["train_counters"] = np.asarray([state["iteration"], state["step"]],
                                                  dtype=np.int64)
            for name in ("m_h", "v_h", "m_w", "v_w", "negative"):
                if state[name] is not None:
                    arrays[f"train_{name}"] = aa.to_numpy(state[name])
        arrays["config"] = np.asarray(json.dumps(self.config()))
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)

    @classmethod
    def load(cls, path: Any, *, xp: Any = None, device: Any = None) -> BitflipDTM:
        """Read a checkpoint written by :meth:`save` (parameters restored bit for bit)."""
        with np.load(path, allow_pickle=False) as f:
            data = {name: f[name] for name in f.files}
        missing = {"schedule_betas", "schedule_pbar", "offsets", "couplings", "biases",
                   "config"} - set(data)
        if missing:
            raise ValueError(f"`path` {path!s} is not a BitflipDTM checkpoint; missing "
                             f"{sorted(missing)}")
        config = json.loads(str(data["config"]))
        if config.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"`path` {path!s} has checkpoint format "
                             f"{config.get('format_version')!r}; expected {_FORMAT_VERSION}")
        schedule = BitflipSchedule(betas=data["schedule_betas"], pbar=data["schedule_pbar"])
        model = cls(tuple(config["shape"]), schedule,
                    offsets=[tuple(int(v) for v in o) for o in data["offsets"]],
                    coupling=config["coupling"], boundary=config["boundary"],
                    dtype=config["dtype"], xp=xp, device=device)
        for name in ("couplings", "biases"):
            value = data[name]
            expected = tuple(getattr(model, name).shape)
            if value.shape != expected:
                raise ValueError(f"`path` {path!s}: `{name}` has shape {value.shape}; expected "
                                 f"{expected}")
            setattr(model, name, model.xp.asarray(value, device=device))
        if "train_counters" in data:
            state = {"iteration": int(data["train_counters"][0]),
                     "step": int(data["train_counters"][1]), "negative": None}
            for name in ("m_h", "v_h", "m_w", "v_w", "negative"):
                if f"train_{name}" in data:
                    state[name] = model.xp.asarray(data[f"train_{name}"], device=device)
            model.train_state = state
        return model


def _philox_key(rng: Any) -> _random.Key:
    """A Philox :class:`~arraygen.random.Key` from ``rng`` (a Generator gives a derived seed)."""
    gen = _random.as_key(rng)
    if isinstance(gen, np.random.Generator):
        return _random.Key(int(gen.integers(0, 2**63)))
    return gen
