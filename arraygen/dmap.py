r"""Diffusion maps (Coifman & Lafon 2006), matrix-free on the tiled Gaussian kernel.

Operator. For points :math:`x_1..x_N` (rows of ``X``; a 1-D ``(N,)`` array is N points on a
line), :math:`K_{ij} = \exp(-|x_i-x_j|^2/(\varepsilon\,\rho_i\rho_j))` with
:math:`\rho \equiv 1` unless a variable bandwidth is asked for. ``K`` is applied through the
tiled kernel (``beta = 1/epsilon``), never as an N x N array, except that NumPy and torch CPU
input with :math:`N^2` kernel values under ``dense_kernel_mb`` (256 MB) forms ``K`` once (the
same values) and applies it with BLAS; above that, torch CPU tensors run the Numba CPU kernels on
zero-copy NumPy views. The alpha-normalisation is

.. math::

    q = K\mathbf 1 / \rho^2,\quad w = q^{-\alpha},\quad D_\alpha = w \odot (K w),\quad
    P = D_\alpha^{-1} W K W \;(W = \mathrm{diag}(w)),

a row-stochastic Markov matrix, reversible with respect to :math:`\pi \propto D_\alpha`. Its
eigenpairs come from the symmetric :math:`M = \mathrm{diag}(r) K \mathrm{diag}(r)` with
:math:`r = D_\alpha^{-1/2} w` (so :math:`M = D_\alpha^{1/2} P D_\alpha^{-1/2}`): if
:math:`M\varphi = \lambda\varphi` then the right eigenvector of :math:`P` is
:math:`\psi = D_\alpha^{-1/2}\varphi`.

Normalisation of the fitted eigenvectors: :math:`\psi_k = \varphi_k / \sqrt{\pi}` with
:math:`\pi = D_\alpha / \sum D_\alpha` and unit-norm :math:`\varphi_k`. Then
:math:`\psi_0 \equiv 1` and :math:`\sum_i \pi_i \psi_k(x_i)\psi_l(x_i) = \delta_{kl}`.
Signs are fixed so that the entry of largest magnitude of each :math:`\psi_k` is positive.
``residuals_[k]`` is :math:`\lVert P\psi_k - \lambda_k\psi_k\rVert_\pi = \lVert M\varphi_k -
\lambda_k\varphi_k\rVert_2`, relative to :math:`\lVert\psi_k\rVert_\pi = 1`.

Bandwidths (``epsilon``):

* a positive float: :math:`\varepsilon` itself;
* ``"median"``: the median of :math:`|x_i - x_j|^2/(\rho_i\rho_j)` over the pairs
  :math:`i < j` of at most ``median_points`` (2000) points (all points when N is at most that;
  otherwise a fixed pseudo-random subset from a fixed Philox stream, so ``epsilon_`` is
  reproducible). If that median is zero (more than half of the pairs coincide) it is floored,
  with a warning, at the median of the nonzero squared distances; data whose points all
  coincide raise ``ValueError``;
* ``"bgh"`` (Berry, Giannakis & Harlim 2015, as pyDiffMap implements it): with
  :math:`s_{ij} = |x_i-x_j|^2/(\rho_i\rho_j)` over all ordered pairs (self pairs included) of
  the same ``median_points`` points, :math:`T(e) = \sum_{ij} \exp(-s_{ij}/(4e))` on the grid
  :math:`e = 2^{-40}, \dots, 2^{40}`; the chosen :math:`e` is the left end of the grid interval
  where :math:`d\log T/d\log e` is largest, and ``intrinsic_dim_`` is twice that slope,
  rounded. ``epsilon_`` is :math:`4e` (see the conventions below); ``"bgh_generous"`` doubles
  it, as pyDiffMap does;
* ``"knn"``: self-tuning kernel (Zelnik-Manor & Perona) :math:`K_{ij} =
  \exp(-|x_i-x_j|^2/(\sigma_i\sigma_j))` with :math:`\sigma_i` the distance from :math:`x_i`
  to its ``n_neighbors``-th nearest point of the training set, the point itself included
  (so a new point equal to a training point gets the same :math:`\sigma`). Computed in row
  blocks (never N x N). ``epsilon_`` is then the (N,) array :math:`\sigma_i^2`.

Variable bandwidth (``bandwidth_type``, Berry & Harlim 2016, as pyDiffMap's ``Kernel``): a
number :math:`\beta` or an expression in the intrinsic dimension ``d`` such as
``"-1/(d+2)"`` gives :math:`\rho = q_0^\beta` with :math:`q_0` the nearest-neighbour kernel
density estimate of pyDiffMap's ``NNKDE`` (8 neighbours): :math:`\rho^0_i = (\frac17
\sum_{j \in 7\mathrm{NN}(i)} |x_i - x_j|^2)^{1/2}` over the 7 nearest points at nonzero
distance (a new point: its 8 nearest fitted points, sum over 7, as pyDiffMap),
:math:`e_0, d` from the ``"bgh"`` rule on :math:`|x_i-x_j|^2/(\rho^0_i\rho^0_j)`, and
:math:`q_0(x) = \frac1N \sum_j \exp(-|x-x_j|^2/(4e_0\rho^0(x)\rho^0_j)) /
(\rho^0(x)^d (4\pi e_0)^{d/2})` (``kernel_density_``). A callable gets the (uncentred) points
and returns :math:`\rho` (N,) > 0. New points get their own :math:`\rho` in ``transform``.

Conventions against pyDiffMap (``pydiffmap.diffusion_map.DiffusionMap``), which agrees to
round-off when it uses the full kernel (``k = N``; its default k = 64 neighbours is a sparse
kNN kernel): pyDiffMap's kernel is :math:`\exp(-|x-y|^2/(4e\rho\rho))`, so its ``epsilon`` (and
``epsilon_fitted``) is ``epsilon_ / 4`` here (:meth:`DiffusionMap.from_pydiffmap` converts).
Its ``q`` is ``q_`` (it divides by :math:`\rho^2` whatever the dimension; Berry-Harlim's
paper uses :math:`\rho^d`: they agree for d = 2). It returns the generator's eigenvalues
:math:`(\lambda - 1)/e` in ascending order without :math:`\lambda_0`, unit-2-norm eigenvectors
(any sign) and the embedding :math:`\psi_k/\lVert\psi_k\rVert_2 \cdot \sqrt{-1/\mu_k}`; here
``eigenvalues_`` are those of :math:`P` with :math:`\lambda_0 = 1` and the embedding is
:math:`\lambda^t\psi`. Its Nystrom ``transform`` does not divide by :math:`\lambda_k`.

Eigensolvers (``eigensolver``): ``"arpack"`` (SciPy ``eigsh``, host), ``"cupy"``
(``cupyx.scipy.sparse.linalg.eigsh``, CuPy input), ``"lanczos"`` (:func:`arraygen.linalg.eigsh`,
any namespace and device, O(N ncv) memory), ``"dense"`` (forms M; small N only). ``"auto"``:
dense for N <= 64, else arpack for NumPy, cupy for CuPy, lanczos for everything else (torch
CPU/CUDA, array_api_strict). Repeated eigenvalues (symmetric data: a circle, a sphere, a torus)
are found with all their copies: ``"lanczos"`` is block Lanczos with ``block_size`` (default 4)
random start vectors, which sees every eigenspace of multiplicity up to ``block_size`` in one
pass; every iterative solver then runs the deflation check of :func:`arraygen.linalg.eigsh`
(block Lanczos on :math:`M` restricted to the complement of the found vectors), which finds
larger multiplicities and anything a single-vector solver (ARPACK, cupyx) missed, ``block_size``
copies per pass. ``converged_`` is False when that check still finds a missed eigenvalue.

Dask input (driver-vector model). ``fit`` on a ``dask.array`` ``X`` keeps the centred points
persisted in row chunks on the cluster (``X_`` stays a dask array). The only N x N work, the
kernel products :math:`K v`, runs there: each is one task per row chunk calling the ordinary
kernel on its chunk against the points broadcast in one chunk, and returns its (N,) or (N, p)
result to the driver as NumPy. The normalisation vectors and the eigensolver (its Krylov
basis) live in NumPy on the driver, so no host synchronisation recomputes lazy history and the
graph of every kernel call has the same size. The fitted arrays (``eigenvalues_``,
``eigenvectors_``, ``embedding_``, ``degree_``, ...) are NumPy arrays; they equal the NumPy fit
of the same data to round-off. Bandwidths: a float, ``"median"``, ``"bgh"`` or
``"bgh_generous"`` (their subsample of at most ``median_points`` rows is gathered to the
driver); ``"knn"``, ``bandwidth_type`` and ``truncate`` raise ``ValueError``;
``apply_markov``, ``carre_du_champ``, ``metric_tensor`` and ``doob`` take NumPy arrays and run
their kernel products on the cluster. ``transform`` (and ``DoobTransform.transform``) take
NumPy or dask new points and run the Nystrom extension out of core: one task per (chunk of new
points, chunk of the stored training points) computes that pair's kernel-softmax average and
log-sum-exp with the ordinary kernel, and the partials are merged per new point with their
log-sum-exp weights, so no task holds more than one training chunk. NumPy points give NumPy
coordinates, dask points a lazy dask array with their row chunks.
"""

from __future__ import annotations

import ast
import dataclasses
import logging
import math
import operator
import os
import time
import warnings
from typing import Any

import numpy as np

from . import _array_api as aa
from . import _dask
from . import _validation as _v
from . import linalg as _linalg
from . import random as _random
from . import tiled as _tiled
from ._kernels.tiled import DIRECT_MAX_D
from .tiled import _matvec, _softmax_matvec, _sqdist

__all__ = ["DiffusionMap", "DoobTransform"]

logger = logging.getLogger("arraygen")

EIGENSOLVERS = ("auto", "arpack", "cupy", "lanczos", "dense")
EPSILON_RULES = ("median", "knn", "bgh", "bgh_generous")
_DENSE_MAX_N = 64
_DENSE_LIMIT = 20000
_KDE_NEIGHBORS = 8


def _lanczos_ncv(n: int, k: int, block: int) -> int:
    """Lanczos basis of the fit. Diffusion spectra cluster below 1 (a k-NN bandwidth puts the
    top eigenvalues within 1e-4..1e-2 of each other): with the generic basis max(2k + 1, 20)
    the restarts stall (swiss roll, 5000 points: 300 restarts, wrong 4th digit), with 48
    vectors the same fit converges in 336 operator calls to the dense eigenvalues. The
    deflation check uses the same basis. O(N ncv) memory: 192 MB at N = 1e6 in float32."""
    return min(max(4 * k + 8, 48), max(2 * block, (n - block) // block * block))
# Fixed stream of the median-rule subsample; a constant nobody passes as `rng` (seed 0 would
# pick exactly the smallest-parameter points of data generated with rng=0).
_MEDIAN_SEED = 0x9E3779B97F4A7C15


# --------------------------------------------------------------------------------------------
# options (validated once, through arraygen._validation)
# --------------------------------------------------------------------------------------------

_BIN_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
            ast.Div: operator.truediv, ast.Pow: operator.pow}
_UNARY_OPS = {ast.USub: operator.neg, ast.UAdd: operator.pos}


def _eval_in_d(expr: str, d: float) -> float:
    """Arithmetic expression in ``d`` (``"-1/(d+2)"``): numbers, d, + - * / ** and brackets."""

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) \
                and not isinstance(node.value, bool):
            return float(node.value)
        if isinstance(node, ast.Name) and node.id == "d":
            return float(d)
        if isinstance(node, ast.BinOp) and type(node.op) in _BIN_OPS:
            return _BIN_OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY_OPS:
            return _UNARY_OPS[type(node.op)](ev(node.operand))
        raise ValueError(f"unsupported element {ast.dump(node)[:40]}")

    try:
        value = ev(ast.parse(expr, mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError) as exc:
        raise ValueError(f"`bandwidth_type` must be a number, a callable or an arithmetic "
                         f"expression in d such as '-1/(d+2)'; got {expr!r} ({exc})") from None
    if not math.isfinite(value):
        raise ValueError(f"`bandwidth_type` {expr!r} is not finite for d = {d:g}")
    return value


def _check_bandwidth_type(bandwidth_type):
    if bandwidth_type is None or callable(bandwidth_type):
        return bandwidth_type
    if isinstance(bandwidth_type, str):
        _eval_in_d(bandwidth_type, 2.0)
        return bandwidth_type
    return _v.check_scalar(bandwidth_type, "bandwidth_type")


def _check_options(o) -> dict:
    """Validate the options of a DiffusionMap ``o``; returns them normalised."""
    eps = o.epsilon
    if isinstance(eps, str):
        _v.check_choice(eps, "epsilon", EPSILON_RULES)
    else:
        if aa.is_array(eps) and math.prod(eps.shape) != 1:
            raise TypeError(f"`epsilon` must be one of {EPSILON_RULES} or a positive number; "
                            f"got an array of shape {tuple(eps.shape)}")
        try:
            eps = _v.check_scalar(eps, "epsilon", positive=True)
        except TypeError:
            raise TypeError(f"`epsilon` must be one of {EPSILON_RULES} or a positive number; "
                            f"got {eps!r}") from None
        if not math.isfinite(1.0 / eps):
            raise ValueError(f"`epsilon` = {eps!r} is too small: 1/epsilon overflows float64")
    bw = _check_bandwidth_type(o.bandwidth_type)
    if bw is not None and isinstance(eps, str) and eps == "knn":
        raise ValueError("`epsilon`='knn' is itself a variable bandwidth; use it without "
                         "`bandwidth_type`")
    out = {
        "n_components": _v.check_int(o.n_components, "n_components", minimum=1),
        "alpha": _v.check_scalar(o.alpha, "alpha", low=0.0, high=1.0),
        "epsilon": eps,
        "t": _v.check_scalar(o.t, "t", nonnegative=True),
        "eigensolver": _v.check_choice(o.eigensolver, "eigensolver", EIGENSOLVERS),
        "tol": None if o.tol is None else _v.check_scalar(o.tol, "tol", positive=True),
        "n_neighbors": _v.check_int(o.n_neighbors, "n_neighbors", minimum=2),
        "median_points": _v.check_int(o.median_points, "median_points", minimum=2),
        "block_size": _v.check_int(o.block_size, "block_size", minimum=1),
        "dense_kernel_mb": _v.check_scalar(o.dense_kernel_mb, "dense_kernel_mb",
                                           nonnegative=True),
        "bandwidth_type": bw,
        "truncate": None if o.truncate is None else _v.check_scalar(o.truncate, "truncate",
                                                                    positive=True),
    }
    kd = o.kernel_dtype
    if kd is not None and aa.dtype_name(kd) not in ("float32", "float64"):
        raise ValueError(f"`kernel_dtype` must be None, 'float32' or 'float64'; got {kd!r}")
    return out


# --------------------------------------------------------------------------------------------
# bandwidths
# --------------------------------------------------------------------------------------------

def _total_variance(xp, xc) -> float:
    """Mean squared distance to the mean (``xc`` is centred); 0 iff all points coincide."""
    return _v.host_float(xp.sum(xc * xc)) / xc.shape[0]


def _require_spread(xp, xc) -> float:
    var = _total_variance(xp, xc)
    if var == 0.0:
        raise ValueError(f"`X`: all {xc.shape[0]} points coincide (zero variance); a diffusion "
                         "map needs at least two distinct points")
    return var


def _subsample(xp, n: int, max_points: int, dev):
    """Indices of the fixed subsample (None: all points) used by the median and bgh rules."""
    if n <= max_points:
        return None
    u = _random.uniform(_random.Key(_MEDIAN_SEED), (n,), dtype=xp.float64, xp=xp, device=dev)
    return xp.argsort(u)[:max_points]


def _pair_sqdist(xp, xs, inv_bw=None):
    """Scaled squared distances ``|x_i - x_j|^2 a_i a_j`` over the pairs i < j, (m(m-1)/2,)."""
    m = xs.shape[0]
    if aa.is_numpy_array(xs) and inv_bw is None and xs.shape[1] <= DIRECT_MAX_D:
        from scipy.spatial.distance import pdist   # the same direct sums, pairs i < j, in C

        return xp.asarray(pdist(np.asarray(xs), "sqeuclidean"))
    d2 = _sqdist(xp, xs, xs)
    if inv_bw is not None:
        d2 = d2 * inv_bw[:, None] * inv_bw[None, :]
    ar = xp.arange(m, device=aa.device(xs))
    return d2[ar[:, None] < ar[None, :]]


def _median(xp, vals) -> float:
    """Median of a 1-D array (native selection where there is one)."""
    count = vals.shape[0]
    lo, hi = (count - 1) // 2, count // 2
    if aa.is_numpy_array(vals):
        part = np.partition(np.asarray(vals), [lo, hi])
        return 0.5 * (float(part[lo]) + float(part[hi]))
    if aa.is_torch_array(vals):
        import torch

        return 0.5 * (float(torch.kthvalue(vals, lo + 1).values)
                      + float(torch.kthvalue(vals, hi + 1).values))
    srt = xp.sort(vals)
    return 0.5 * (_v.host_float(srt[lo]) + _v.host_float(srt[hi]))


def _median_epsilon(xp, xc, max_points: int, inv_bw=None) -> float:
    """Median of |x_i - x_j|^2 a_i a_j over pairs i < j of (a fixed subsample of) the points."""
    var = _require_spread(xp, xc)
    idx = _subsample(xp, xc.shape[0], max_points, aa.device(xc))
    xs = xc if idx is None else xp.take(xc, idx, axis=0)
    ib = inv_bw if idx is None or inv_bw is None else xp.take(inv_bw, idx)
    vals = _pair_sqdist(xp, xs, ib)
    med = _median(xp, vals)
    if med > 0.0:
        return med
    positive = vals[vals > 0]
    floor = _median(xp, positive) if positive.shape[0] else 2.0 * var
    warnings.warn(f"DiffusionMap: the median squared pairwise distance is 0 (most points "
                  f"coincide); using the floor epsilon = {floor:.6g} (median of the nonzero "
                  "squared distances)", UserWarning, stacklevel=4)
    return floor


def _bgh(xp, pairs, m: int) -> tuple[float, int]:
    """Berry-Giannakis-Harlim rule on the scaled squared distances of the pairs i < j of m
    points (self pairs add m zeros): pyDiffMap's ``choose_optimal_epsilon_BGH``.

    Returns ``(e, d)`` in pyDiffMap's convention (kernel ``exp(-s / (4 e))``). Grid points more
    than 2^8 beyond the data's distance range have slopes below 1e-50 and are skipped.
    """
    grid = 2.0 ** np.arange(-40.0, 41.0)
    s_max = _v.host_float(xp.max(pairs))
    pos = pairs[pairs > 0]
    s_min = _v.host_float(xp.min(pos)) if pos.shape[0] else s_max
    lo = max(0, int(np.searchsorted(grid, s_min / 4.0 * 2.0 ** -8)) - 1)
    hi = min(grid.size, int(np.searchsorted(grid, s_max / 4.0 * 2.0 ** 8)) + 2)
    if hi - lo < 2:
        lo, hi = max(0, min(lo, grid.size - 2)), max(2, min(grid.size, hi))
    eps = grid[lo:hi]
    log_t = []
    for e in eps:
        z = pairs * (-1.0 / (4.0 * float(e)))
        mx = _v.host_float(xp.max(z))
        lse = mx + math.log(_v.host_float(xp.sum(xp.exp(z - mx))))
        log_t.append(np.logaddexp(math.log(m), math.log(2.0) + lse))
    log_deriv = np.diff(np.asarray(log_t)) / np.diff(np.log(eps))
    loc = int(np.argmax(log_deriv))
    return float(eps[loc]), int(np.round(2.0 * log_deriv[loc]))


def _row_blocks(xq, nt: int):
    budget = (1 << 26) if aa.device_kind(xq)[0] == "cuda" else (1 << 22)
    return max(1, min(xq.shape[0], budget // max(nt, 1)))


def _kth_smallest(xp, d2, k: int):
    """k-th smallest (1-based) entry of each row of ``d2`` (native partial selection)."""
    if aa.is_numpy_array(d2):
        return xp.asarray(np.partition(d2, k - 1, axis=1)[:, k - 1])
    if aa.is_torch_array(d2):
        import torch

        return torch.kthvalue(d2, k, dim=1).values
    if aa.is_cupy_array(d2):
        import cupy

        return cupy.partition(d2, k - 1, axis=1)[:, k - 1]
    return xp.sort(d2, axis=1)[:, k - 1]


def _sum_smallest(xp, d2, k: int):
    """Sum of the k smallest entries of each row of ``d2``."""
    if aa.is_numpy_array(d2):
        return xp.asarray(np.sum(np.partition(d2, k - 1, axis=1)[:, :k], axis=1))
    if aa.is_torch_array(d2):
        import torch

        return torch.sum(torch.topk(d2, k, dim=1, largest=False).values, dim=1)
    if aa.is_cupy_array(d2):
        import cupy

        return cupy.sum(cupy.partition(d2, k - 1, axis=1)[:, :k], axis=1)
    return xp.sum(xp.sort(d2, axis=1)[:, :k], axis=1)


def _sum_smallest_positive(xp, d2, k: int):
    """Sum of the k smallest strictly positive entries of each row (0 if there are fewer)."""
    inf = xp.full_like(d2, math.inf)
    s = _sum_smallest(xp, xp.where(d2 > 0, d2, inf), k)
    return xp.where(xp.isfinite(s), s, xp.zeros_like(s))


def _knn_reduce(xp, xq, xt, k: int, reduce):
    """``reduce(d2_block, k)`` over row blocks of the squared distances from xq to xt."""
    rows = _row_blocks(xq, xt.shape[0])
    parts = [reduce(xp, _sqdist(xp, xq[i0:i0 + rows, :], xt), k)
             for i0 in range(0, xq.shape[0], rows)]
    return parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)


def _knn_sigma(xp, xq, xt, k: int):
    """Distance from each row of ``xq`` to its k-th nearest row of ``xt`` (self included)."""
    return xp.sqrt(_knn_reduce(xp, xq, xt, k, _kth_smallest))


def _knn_sigma_clustered(xp, cl, k: int):
    """:func:`_knn_sigma` of the clustered points against themselves, in the clusters' order.

    Exact, without the N x N distances: a cluster A of ``block >= k`` points holds, for each
    of its points, k points within ``2 r_A``, so only the clusters B with ``|c_A - c_B| - r_A
    - r_B <= 2 r_A`` can hold its k nearest. Distances to those candidates are computed in
    batches of row clusters (padded with a cluster at infinity); a partial last cluster is
    done directly against all points. The same direct sums as :func:`_knn_sigma`, so the
    same values for d <= DIRECT_MAX_D.
    """
    pts, n, d, block, n_cl = cl.points, cl.n, cl.d, cl.block, cl.K
    full = n // block
    if block < k or full == 0:
        return _knn_sigma(xp, pts, pts, k)
    dev, dtype = aa.device(pts), pts.dtype
    pad = xp.full(((n_cl + 1) * block - n, d), math.inf, dtype=dtype, device=dev)
    blocks = xp.reshape(xp.concat([pts, pad], axis=0), (n_cl + 1, block, d))
    centers, radii = cl.centers, cl.radii
    budget = (1 << 26) if aa.device_kind(pts)[0] == "cuda" else (1 << 22)

    def candidates(ids):
        dc = xp.sqrt(_sqdist(xp, xp.take(centers, ids, axis=0), centers))
        reach = 3.0 * xp.take(radii, ids)[:, None] + radii[None, :]
        return dc <= reach * (1.0 + 1e-7) + 1e-300

    # candidate counts of every full cluster (one host copy), then batches of clusters with
    # similar counts, so a few wide clusters do not pad every batch
    outer = max(1, (1 << 22) // n_cl)
    counts = np.concatenate([
        np.asarray(aa.to_numpy(xp.sum(xp.astype(candidates(
            xp.arange(a0, min(full, a0 + outer), device=dev)), xp.int64), axis=1)))
        for a0 in range(0, full, outer)])
    by_count = np.argsort(counts, kind="stable")
    parts = []
    i = 0
    while i < full:
        j = min(full, i + max(1, budget // (block * block * int(counts[by_count[i]]))))
        while j - i > 1 and (j - i) * block * block * int(counts[by_count[j - 1]]) > 2 * budget:
            j = i + (j - i) // 2
        ids = xp.asarray(by_count[i:j].astype(np.int64), device=dev)
        cmax = int(counts[by_count[j - 1]])
        near = candidates(ids)
        order = xp.argsort(xp.astype(~near, xp.int8), axis=1, stable=True)[:, :cmax]
        slot = xp.arange(cmax, device=dev)[None, :] < xp.sum(xp.astype(near, xp.int64),
                                                            axis=1)[:, None]
        cand = xp.where(slot, order, xp.full_like(order, n_cl))
        rows = xp.take(blocks, ids, axis=0)
        cols = xp.reshape(xp.take(blocks, xp.reshape(cand, (-1,)), axis=0),
                          (j - i, cmax * block, d))
        if d <= DIRECT_MAX_D:
            d2 = None
            for c in range(d):
                diff = rows[:, :, c][:, :, None] - cols[:, :, c][:, None, :]
                d2 = diff * diff if d2 is None else d2 + diff * diff
        else:
            finite = xp.isfinite(cols[:, :, 0])
            safe = xp.where(xp.isfinite(cols), cols, xp.zeros_like(cols))
            xx = xp.sum(rows * rows, axis=2)
            yy = xp.where(finite, xp.sum(safe * safe, axis=2),
                          xp.full_like(cols[:, :, 0], math.inf))
            d2 = xx[:, :, None] + yy[:, None, :] - 2.0 * xp.matmul(rows,
                                                                   xp.matrix_transpose(safe))
            d2 = xp.maximum(d2, xp.zeros((), dtype=dtype, device=dev))
        kth = _kth_smallest(xp, xp.reshape(d2, ((j - i) * block, cmax * block)), k)
        parts.append(xp.reshape(kth, (j - i, block)))
        i = j
    back = np.empty(full, dtype=np.int64)
    back[by_count] = np.arange(full, dtype=np.int64)
    merged = xp.concat(parts, axis=0) if len(parts) > 1 else parts[0]
    parts = [xp.reshape(xp.take(merged, xp.asarray(back, device=dev), axis=0),
                        (full * block,))]
    if full * block < n:
        parts.append(_knn_reduce(xp, pts[full * block:, :], pts, k, _kth_smallest))
    return xp.sqrt(xp.concat(parts, axis=0) if len(parts) > 1 else parts[0])


class _VariableBandwidth:
    """pyDiffMap's NNKDE and ``rho = q0 ** beta`` (Berry-Harlim), fitted on centred points."""

    def __init__(self, xp, xc, spec, raw_x, max_points: int):
        self.spec = spec
        if callable(spec):
            self.rho_ = self._call(xp, raw_x, "X", xc)
            self.kde_ = None
            self.dim_ = None
            return
        self.xt = xc
        self.rho0 = self._rho0(xp, xc, training=True)
        idx = _subsample(xp, xc.shape[0], max_points, aa.device(xc))
        xs = xc if idx is None else xp.take(xc, idx, axis=0)
        r0 = self.rho0 if idx is None else xp.take(self.rho0, idx)
        self.eps0, self.dim_ = _bgh(xp, _pair_sqdist(xp, xs, 1.0 / r0), xs.shape[0])
        self.kde_ = self.density(xp, xc, self.rho0)
        beta = spec if not isinstance(spec, str) else _eval_in_d(spec, float(self.dim_))
        self.beta_ = float(beta)
        self.rho_ = self.kde_ ** self.beta_

    def _rho0(self, xp, xq, training=False):
        """sqrt(mean of the 7 smallest squared distances): for the fitted points the nonzero
        ones (itself and duplicates excluded), for new points the 8 nearest over 7 (as
        pyDiffMap's NNKDE)."""
        k = min(_KDE_NEIGHBORS, self.xt.shape[0])
        if training:
            s = _knn_reduce(xp, xq, self.xt, max(k - 1, 1), _sum_smallest_positive)
        else:
            s = _knn_reduce(xp, xq, self.xt, k, _sum_smallest)
        # points without enough distinct neighbours get a floored bandwidth, with a warning
        return DiffusionMap._floor_sigma(xp, xp.sqrt(s / float(max(k - 1, 1))), self.xt)

    def density(self, xp, xq, rho0_q):
        """pyDiffMap's NNKDE density at the centred points ``xq`` (rho0 of xq given)."""
        n = self.xt.shape[0]
        ones = xp.ones((n, 1), dtype=xq.dtype, device=aa.device(xq))
        s = _matvec(xp, xq, self.xt, ones, beta=1.0 / (4.0 * self.eps0),
                    a=1.0 / rho0_q, b=1.0 / self.rho0)[:, 0]
        d = float(self.dim_)
        return s / float(n) / rho0_q ** d / (4.0 * math.pi * self.eps0) ** (d / 2.0)

    def _call(self, xp, raw, name, like):
        out = self.spec(raw)
        try:
            return _v.as_vector(xp, out, like.shape[0], f"bandwidth_type({name})", like,
                                positive=True)
        except TypeError as exc:
            raise TypeError(f"`bandwidth_type` callable must return an array (N,) of positive "
                            f"bandwidths: {exc}") from None

    def at(self, xp, xq_centred, raw_q):
        """rho at new (centred) points."""
        if callable(self.spec):
            return self._call(xp, raw_q, "X_new", xq_centred)
        rho0 = self._rho0(xp, xq_centred)
        return self.density(xp, xq_centred, rho0) ** self.beta_


# --------------------------------------------------------------------------------------------
# the kernel (dense for small NumPy problems, tiled otherwise)
# --------------------------------------------------------------------------------------------

def _numba_bridge(x, backend) -> bool:
    """torch CPU tensors use the Numba CPU kernels on zero-copy NumPy views of their memory
    (the Array-API tiles on torch CPU cost ~8x more per kernel call, and far more when the
    cores are shared) unless a backend was asked for."""
    if backend is not None or os.environ.get("ARRAYGEN_BACKEND"):
        return False
    if not aa.is_torch_array(x) or aa.device_kind(x)[0] != "cpu":
        return False
    from .backends import available

    return available().get("numba_cpu", "absent") is None


def _as_numpy_view(a):
    """A torch CPU tensor as a NumPy array sharing its memory (contiguous, detached)."""
    return a.detach().contiguous().numpy()


class _Kernel:
    """K (with optional per-point inverse bandwidths) on the centred training points.

    Calls take 2-D blocks and use the tiled private core (no validation, no host sync). With
    ``work_dtype`` (float32 for float64 data) the kernel sums run in that dtype and results
    are promoted back. ``dense`` forms the N x N matrix once (NumPy, small N).
    """

    def __init__(self, xp, x, beta: float, inv_bw, backend, work_dtype=None, dense=False):
        self.xp, self.beta, self.backend = xp, beta, backend
        self.dtype = x.dtype
        self.work = x.dtype if work_dtype is None else work_dtype
        self.x = self._cast(x)
        self.inv_bw = None if inv_bw is None else self._cast(inv_bw)
        self.n_calls = 0
        self.mat = self._dense() if dense else None
        self.bridge = self.mat is None and _numba_bridge(self.x, backend)
        if self.bridge:
            self._np = aa.namespace_for(np)
            self.x_np = _as_numpy_view(self.x)
            self.inv_bw_np = None if self.inv_bw is None else _as_numpy_view(self.inv_bw)

    def numpy_twin(self):
        """The same kernel over NumPy views of this (torch CPU) kernel's memory, or None.

        Lets the eigensolver's many small host operations run in NumPy, whose per-call cost on
        small blocks is a fraction of torch CPU's."""
        if not (self.bridge or (self.mat is not None and aa.is_torch_array(self.mat))):
            return None
        twin = object.__new__(_Kernel)
        twin.xp, twin.beta, twin.backend = aa.namespace_for(np), self.beta, self.backend
        twin.x = _as_numpy_view(self.x)
        twin.dtype = twin.x.dtype if self.dtype == self.work else (
            np.float64 if self.dtype == self.xp.float64 else np.float32)
        twin.work = twin.x.dtype
        twin.inv_bw = None if self.inv_bw is None else _as_numpy_view(self.inv_bw)
        twin.mat = None if self.mat is None else _as_numpy_view(self.mat)
        twin.bridge = False
        twin.n_calls = 0
        return twin

    def _dense(self):
        xp, x, n = self.xp, self.x, self.x.shape[0]
        rows = max(1, min(n, (1 << 22) // max(n, 1)))
        # host memory (NumPy or torch CPU, the only callers): filled in row blocks, one N x N
        out = xp.empty((n, n), dtype=x.dtype, device=aa.device(x))
        for i0 in range(0, n, rows):
            expo = _sqdist(xp, x[i0:i0 + rows, :], x) * (-self.beta)
            if self.inv_bw is not None:
                expo = expo * self.inv_bw[i0:i0 + rows][:, None] * self.inv_bw[None, :]
            out[i0:i0 + rows, :] = xp.exp(expo)
        return out

    def _cast(self, a):
        if a is None or a.dtype == self.work:
            return a
        return self.xp.astype(a, self.work)

    def __call__(self, v, *, row=None, col=None, x=None, x_inv_bw=None):
        """``r_i sum_j K(x_i, x_j) c_j v_j`` (v (M,) or (M, p)) for the training points (or
        the rows ``x`` with inverse bandwidths ``x_inv_bw``)."""
        xp = self.xp
        self.n_calls += 1
        one_d = v.ndim == 1
        u = xp.reshape(v, (v.shape[0], 1)) if one_d else v
        if col is not None:
            u = col[:, None] * u
        u = self._cast(u)
        if x is None and self.mat is not None:
            out = xp.matmul(self.mat, u)
        elif self.bridge:
            xq = self.x_np if x is None else _as_numpy_view(self._cast(x))
            a = self.inv_bw_np if x is None else _as_numpy_view(self._cast(x_inv_bw))
            out = _matvec(self._np, xq, self.x_np, _as_numpy_view(u), beta=self.beta, a=a,
                          b=self.inv_bw_np, backend="numba_cpu")
            import torch

            out = torch.from_numpy(out)
        else:
            xq = self.x if x is None else self._cast(x)
            a = self.inv_bw if x is None else self._cast(x_inv_bw)
            out = _matvec(xp, xq, self.x, u, beta=self.beta, a=a, b=self.inv_bw,
                          backend=self.backend)
        out = out if out.dtype == self.dtype else xp.astype(out, self.dtype)
        if row is not None:
            out = row[:, None] * out
        return xp.reshape(out, (out.shape[0],)) if one_d else out


class _DaskKernel:
    """K on centred training points held row-chunked on a Dask cluster (driver-vector model).

    ``x`` is a persisted dask array (N, d) with row chunks; ``y`` the same points persisted
    once in one chunk, broadcast to every task. A call takes NumPy vectors (N,) or (N, p) on
    the driver, runs the kernel sums on the cluster (the tiled private core's chunk-level
    path: one task per row chunk, the ordinary kernels on each chunk) and returns NumPy: a
    fresh O(number of chunks) graph over persisted inputs each time, so nothing lazy piles up
    across eigensolver iterations. ``v`` travels to the workers with each call (O(N p)).
    """

    inv_bw = None
    mat = None
    bridge = False

    def __init__(self, x, beta: float, backend, dtype, work_dtype=None):
        self.xp = aa.namespace_for(np)
        self.beta, self.backend = beta, backend
        self.dtype = np.dtype(dtype)
        self.work = self.dtype if work_dtype is None else np.dtype(aa.dtype_name(work_dtype))
        x = x if x.dtype == self.work else x.astype(self.work)
        self.x = _dask.materialize(x)
        self.y = _dask.whole(self.x)
        self.n_calls = 0

    def numpy_twin(self):
        return None

    def __call__(self, v, *, row=None, col=None, x=None, x_inv_bw=None):
        """``r_i sum_j K(x_i, x_j) c_j v_j`` for the training points (NumPy in and out)."""
        if x is not None:  # new points take softmax() (the Nystrom extension)
            raise TypeError("_DaskKernel(..., x=) is not a call path: new points go through "
                            "softmax()")
        self.n_calls += 1
        one_d = v.ndim == 1
        u = np.reshape(v, (v.shape[0], 1)) if one_d else v
        if col is not None:
            u = col[:, None] * u
        u = np.ascontiguousarray(u, dtype=self.work)
        out = np.asarray(_matvec(self.xp, self.x, self.y, u, beta=self.beta,
                                 backend=self.backend).compute())
        out = out if out.dtype == self.dtype else out.astype(self.dtype)
        if row is not None:
            out = row[:, None] * out
        return np.reshape(out, (out.shape[0],)) if one_d else out

    def softmax(self, xq, v, log_w):
        r"""``sum_j softmax_j(log_w_j - beta |xq_i - x_j|^2) v_j`` for new points ``xq``.

        Out of core: the Dask tiled op with the stored row-chunked training points as ``y``
        (one task per pair of chunks, partial softmaxes merged by their log-sum-exps in a tree:
        no training chunk is gathered, nothing underflows). ``xq`` NumPy: returns NumPy; a
        dask array: returns a lazy dask array with its row chunks.
        """
        import dask.array as da

        lazy = _dask.is_dask_array(xq)
        q = xq if lazy else da.from_array(xq, chunks=xq.shape)
        q = q.astype(self.work).rechunk({1: -1})
        rows = self.x.chunks[0]
        vt = da.from_array(np.ascontiguousarray(v, dtype=self.work), chunks=(rows, v.shape[1]))
        wt = da.from_array(np.ascontiguousarray(log_w, dtype=self.work), chunks=(rows,))
        avg, _ = _dask.kernel_softmax_matvec(q, self.x, vt, beta=self.beta, log_weights=wt,
                                             backend=self.backend, check_finite=False)
        avg = avg.astype(self.dtype)
        return avg if lazy else np.asarray(avg.compute())


def _cluster(xp, x):
    """The spatial clusters of the (trusted, centred) training points."""
    from .blocksparse import cluster_points

    return cluster_points(x)


def _report(truncate: float, pairs):
    """The TruncationReport of a pair list (what a truncated kernel call computed)."""
    from .blocksparse import TruncationReport

    return TruncationReport(truncate=float(truncate), fraction=float(pairs.fraction),
                            mass_bound=float(pairs.mass_bound),
                            n_pairs_blocks=int(pairs.nnz))


class _BlockKernel:
    """K restricted to the kept cluster pairs (``truncate``; block-sparse tiled matvec).

    The training points are clustered once (``arraygen.blocksparse.cluster_points``) and the
    cluster-pair list is built once (``block_pairs(..., same_points=True)``, symmetric).
    Calls take and return vectors in the user's order (one gather in, one out); the
    eigensolver uses :attr:`sorted`, the same operator on vectors in the clusters' order, so
    its iterations gather nothing. New points (``x=``) are clustered per call.
    """

    mat = None
    bridge = False

    def __init__(self, xp, x, beta: float, inv_bw, backend, truncate: float, work_dtype=None,
                 clusters=None):
        from . import blocksparse as _bs

        self._bs = _bs
        self.xp, self.beta, self.backend, self.truncate = xp, beta, backend, float(truncate)
        self.dtype = x.dtype
        self.work = x.dtype if work_dtype is None else work_dtype
        cl = _cluster(xp, x) if clusters is None else clusters
        if cl.points.dtype != self.work:
            cl = dataclasses.replace(cl, points=self._cast(cl.points))
        self.clusters = cl
        self.perm, self.inverse = cl.perm, cl.inverse
        self.x = cl.points
        self.inv_bw = None if inv_bw is None else self._cast(xp.take(inv_bw, cl.perm))
        self.pairs = _bs._pairs(xp, cl, cl, beta, self.truncate, None, self.inv_bw,
                                 self.inv_bw, same_points=True)
        self.report = _report(self.truncate, self.pairs)
        self.last_report = None
        self.n_calls = 0
        self.sorted = _SortedBlockKernel(self)

    def numpy_twin(self):
        return None

    def _cast(self, a):
        if a is None or a.dtype == self.work:
            return a
        return self.xp.astype(a, self.work)

    def _sorted_matvec(self, u):
        """K u for u (N, p) in the clusters' order and the work dtype; result in that order."""
        self.n_calls += 1
        return _tiled._matvec(self.xp, self.x, self.x, u, beta=self.beta, a=self.inv_bw,
                              b=self.inv_bw, backend=self.backend, pairs=self.pairs,
                              xc=self.clusters, yc=self.clusters)

    def _query(self, x, x_inv_bw):
        """Clusters, inverse bandwidths (clusters' order) and pair list of new points."""
        xq = self._bs.cluster_points(self._cast(x))
        a = None if x_inv_bw is None else self._cast(self.xp.take(x_inv_bw, xq.perm))
        pairs = self._bs.block_pairs(xq, self.clusters, beta=self.beta, truncate=self.truncate,
                                     x_bandwidth=a, y_bandwidth=self.inv_bw)
        self.last_report = _report(self.truncate, pairs)
        return xq, a, pairs

    def __call__(self, v, *, row=None, col=None, x=None, x_inv_bw=None):
        """``r_i sum_j K(x_i, x_j) c_j v_j`` with v, r, c in the user's order (as _Kernel)."""
        xp = self.xp
        one_d = v.ndim == 1
        u = xp.reshape(v, (v.shape[0], 1)) if one_d else v
        if col is not None:
            u = col[:, None] * u
        u = self._cast(xp.take(u, self.perm, axis=0))
        if x is None:
            out = xp.take(self._sorted_matvec(u), self.inverse, axis=0)
        else:
            self.n_calls += 1
            xq, a, pairs = self._query(x, x_inv_bw)
            out = _tiled._matvec(xp, xq.points, self.x, u, beta=self.beta, a=a, b=self.inv_bw,
                                 backend=self.backend, pairs=pairs, xc=xq, yc=self.clusters)
            out = xp.take(out, xq.inverse, axis=0)
        out = out if out.dtype == self.dtype else xp.astype(out, self.dtype)
        if row is not None:
            out = row[:, None] * out
        return xp.reshape(out, (out.shape[0],)) if one_d else out

    def softmax(self, x, v, log_w):
        """``sum_j softmax_j(log_w_j - beta |x_i - x_j|^2) v_j`` for new points x (user order)."""
        xp = self.xp
        self.n_calls += 1
        xq, _, pairs = self._query(x, None)
        vs = self._cast(xp.take(v, self.perm, axis=0))
        ws = self._cast(xp.take(log_w, self.perm, axis=0))
        out, _ = _tiled._softmax_matvec(xp, xq.points, self.x, vs, ws, beta=self.beta,
                                        backend=self.backend, pairs=pairs, xc=xq,
                                        yc=self.clusters)
        out = xp.take(out, xq.inverse, axis=0)
        return out if out.dtype == self.dtype else xp.astype(out, self.dtype)


class _SortedBlockKernel:
    """The operator of a :class:`_BlockKernel` on vectors in the clusters' order (solver)."""

    mat = None
    bridge = False
    inv_bw = None

    def __init__(self, parent: _BlockKernel):
        self.parent = parent
        self.xp, self.dtype = parent.xp, parent.dtype

    @property
    def n_calls(self):
        return self.parent.n_calls

    def numpy_twin(self):
        return None

    def __call__(self, v, *, row=None, col=None):
        xp, p = self.xp, self.parent
        one_d = v.ndim == 1
        u = xp.reshape(v, (v.shape[0], 1)) if one_d else v
        if col is not None:
            u = col[:, None] * u
        out = p._sorted_matvec(p._cast(u))
        out = out if out.dtype == self.dtype else xp.astype(out, self.dtype)
        if row is not None:
            out = row[:, None] * out
        return xp.reshape(out, (out.shape[0],)) if one_d else out


# --------------------------------------------------------------------------------------------
# eigenpairs of diag(r) K diag(r)
# --------------------------------------------------------------------------------------------

def _auto_solver(xp, n: int) -> str:
    if n <= _DENSE_MAX_N:
        return "dense"
    if aa.is_numpy_namespace(xp):
        return "arpack"
    if aa.is_cupy_namespace(xp):
        return "cupy"
    return "lanczos"


def _arpack_ncv(n: int, k: int) -> int:
    """ARPACK basis size: 2k + 6 (24 for k = 9 used 25 matvecs against 27 for scipy's 2k + 1
    on the swiss roll; larger bases only add matvecs before the first convergence check)."""
    return min(n, max(2 * k + 6, 20))


def _solve(kern: _Kernel, rscale, k: int, solver: str, tol, gen, xp, block_size: int):
    """Top-k eigenpairs of M = diag(rscale) K diag(rscale): (lam desc, phi (N, k), resid,
    converged)."""
    if isinstance(kern, _BlockKernel):   # solve in the clusters' order, phi back in the user's
        lam, phi, resid, converged = _solve(kern.sorted, xp.take(rscale, kern.perm), k, solver,
                                            tol, gen, xp, block_size)
        return lam, xp.take(phi, kern.inverse, axis=0), resid, converged
    twin = kern.numpy_twin() if aa.is_torch_array(rscale) else None
    if twin is not None:   # torch CPU: solve on zero-copy NumPy views, results back as tensors
        import torch

        out = _solve(twin, _as_numpy_view(rscale), k, solver, tol, gen, twin.xp, block_size)
        kern.n_calls += twin.n_calls
        return (torch.from_numpy(out[0]), torch.from_numpy(out[1]), torch.from_numpy(out[2]),
                out[3])
    n = rscale.shape[0]
    dev, dtype = aa.device(rscale), rscale.dtype
    rs = rscale[:, None]

    def op(v):
        return rs * kern(rs * v)

    if k > n or (k == n and solver != "dense"):
        raise ValueError(f"`n_components` + 1 = {k} eigenpairs of {n} points need "
                         f"eigensolver='dense' (iterative solvers need fewer than N)")
    tol_eff = (1e-8 if dtype == xp.float64 else 1e-5) if tol is None else float(tol)
    if solver in ("arpack", "cupy") and k >= n - 1:   # ARPACK needs k < ncv <= n
        solver = "dense"
    if solver == "dense":
        if n > _DENSE_LIMIT:
            raise ValueError(f"`eigensolver`='dense' forms the N x N matrix; N = {n} is above "
                             f"{_DENSE_LIMIT}: use 'auto', 'arpack', 'lanczos' or 'cupy'")
        mat = op(xp.eye(n, dtype=dtype, device=dev))
        mat = 0.5 * (mat + xp.matrix_transpose(mat))
        w, v = xp.linalg.eigh(mat)
        idx = xp.arange(n - 1, n - 1 - k, -1, device=dev)
        lam, phi = xp.take(w, idx), xp.take(v, idx, axis=1)
        resid = xp.linalg.vector_norm(xp.matmul(mat, phi) - phi * lam[None, :], axis=0)
        return lam, phi, resid, True
    linop = _linalg._Operator(op, n, xp, dev, dtype, matmat=True)
    ncv = _lanczos_ncv(n, k, block_size)
    if solver == "lanczos":
        lam, phi, info = _linalg._eigsh(linop, k, block_size, tol_eff, 300, ncv, gen,
                                        stacklevel=4)
        return lam, phi, info.residuals, info.converged
    if solver == "arpack":
        theta, phi, ok = _arpack(op, n, k, tol_eff, gen, xp, dev, dtype)
    else:  # cupy
        theta, phi, ok = _cupy_eigsh(op, n, k, tol_eff, gen, xp, dev, dtype)
    if not ok:
        warnings.warn(f"DiffusionMap: {solver} did not converge; falling back to the "
                      "Array-API block Lanczos solver", RuntimeWarning, stacklevel=3)
        lam, phi, info = _linalg._eigsh(linop, k, block_size, tol_eff, 300, ncv, gen,
                                        stacklevel=4)
        return lam, phi, info.residuals, info.converged
    theta, phi, resid, verified, added = _linalg._complete(linop, theta, phi, k, block_size,
                                                           tol_eff, 300, gen, ncv=ncv)
    if added:
        logger.info("DiffusionMap: the deflation check added %d eigenpairs that %s missed "
                    "(repeated eigenvalues)", added, solver)
    lam = xp.asarray(np.ascontiguousarray(theta), dtype=dtype, device=dev)
    if resid is None:
        resid = xp.linalg.vector_norm(op(phi) - phi * lam[None, :], axis=0)
    worst = _v.host_float(xp.max(resid))
    converged = verified and worst <= 10.0 * tol_eff * max(1.0, float(np.max(np.abs(theta))))
    if not converged:
        why = ("the deflation check still finds missed eigenvalues" if not verified else
               f"largest residual {worst:.3g} > 10 * tol = {10.0 * tol_eff:.3g}")
        warnings.warn(f"DiffusionMap: {solver} eigenpairs not converged ({why})",
                      RuntimeWarning, stacklevel=3)
    return lam, phi, resid, converged


def _arpack(op, n, k, tol, gen, xp, dev, dtype):
    """SciPy ARPACK: ``(theta (k,) float64 host desc, phi (n, k), converged)``."""
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator
    from scipy.sparse.linalg import eigsh as scipy_eigsh

    def mv(v):
        v = np.asarray(v, dtype=np.float64).reshape(n, -1)
        out = op(xp.asarray(v.astype(np.float32 if dtype == xp.float32 else np.float64),
                            device=dev))
        return np.asarray(aa.to_numpy(out), dtype=np.float64)

    lin = LinearOperator((n, n), matvec=mv, matmat=mv, dtype=np.float64)
    v0 = np.asarray(aa.to_numpy(_linalg._normal(gen, n, 1, xp, dev, xp.float64, step=0)),
                    dtype=np.float64)[:, 0]
    try:
        w, v = scipy_eigsh(lin, k=k, which="LA", v0=v0, ncv=_arpack_ncv(n, k), tol=tol,
                           maxiter=max(300, 10 * k))
    except ArpackNoConvergence:
        return None, None, False
    order = np.argsort(w)[::-1]
    phi = xp.asarray(np.ascontiguousarray(v[:, order]), dtype=dtype, device=dev)
    return np.ascontiguousarray(w[order]), phi, True


def _cupy_eigsh(op, n, k, tol, gen, xp, dev, dtype):
    """cupyx eigsh (stops silently at maxiter: the residual check after it judges)."""
    import cupy
    from cupyx.scipy.sparse.linalg import LinearOperator
    from cupyx.scipy.sparse.linalg import eigsh as cupy_eigsh

    def mv(v):
        return op(cupy.reshape(v, (n, -1))).reshape(v.shape)

    lin = LinearOperator((n, n), matvec=mv, matmat=mv, dtype=dtype)
    v0 = _linalg._normal(gen, n, 1, xp, dev, dtype, step=0)[:, 0]
    w, v = cupy_eigsh(lin, k=k, which="LA", v0=v0, ncv=_arpack_ncv(n, k), tol=tol,
                      maxiter=max(300, 10 * k))
    order = cupy.argsort(w)[::-1]
    return cupy.asnumpy(w[order]).astype(np.float64), v[:, order], True


def _psi_from_phi(xp, phi, s):
    r"""Right eigenvectors ``psi = phi * sqrt(sum s^2) / s`` (psi_0 = 1), signs fixed."""
    total = xp.sum(s * s)
    psi = phi * (xp.sqrt(total) / s)[:, None]
    big = xp.max(psi, axis=0)
    small = xp.min(psi, axis=0)
    sign = xp.where(big >= -small, xp.ones_like(big), -xp.ones_like(big))
    return psi * sign[None, :], phi * sign[None, :]


def _warn_disconnected(xp, lam, dtype, what: str) -> None:
    gap_tol = 1e-6 if dtype == xp.float64 else 1e-4
    lam_h = np.asarray(aa.to_numpy(lam), dtype=np.float64)
    mult = int(np.sum(lam_h > 1.0 - gap_tol))
    if mult > 1:
        more = " (or more)" if mult == lam_h.shape[0] else ""
        warnings.warn(
            f"{what}: eigenvalue 1 has multiplicity {mult}{more} (spectral gap 1 - lambda_1 = "
            f"{1.0 - lam_h[1]:.3g}): the kernel graph looks disconnected, with at least {mult} "
            "components; increase epsilon (or n_neighbors)", UserWarning, stacklevel=4)


def _power(xp, lam, t: float):
    pos = xp.where(lam > 0, lam, xp.zeros_like(lam))
    return pos ** t


class _Spectral:
    """Shared fitted attributes of :class:`DiffusionMap` and :class:`DoobTransform`."""

    eigenvalues_: Any
    eigenvectors_: Any
    eigenvectors_sym_: Any
    residuals_: Any
    stationary_: Any
    embedding_: Any
    converged_: bool

    def _set_spectrum(self, xp, lam, phi, resid, s, t, converged, out_dtype, what):
        psi, phi = _psi_from_phi(xp, phi, s)
        cast = (lambda a: a) if out_dtype == lam.dtype else (lambda a: xp.astype(a, out_dtype))
        self._lam_c, self._psi_c = lam, psi
        self.eigenvalues_ = cast(lam)
        self.eigenvectors_ = cast(psi)
        self.eigenvectors_sym_ = cast(phi)
        self.residuals_ = cast(resid)
        self.stationary_ = cast(s * s / xp.sum(s * s))
        self.embedding_ = cast(psi[:, 1:] * _power(xp, lam[1:], t)[None, :])
        self.converged_ = bool(converged)
        _warn_disconnected(xp, lam, lam.dtype, what)


# --------------------------------------------------------------------------------------------
# public classes
# --------------------------------------------------------------------------------------------

class DiffusionMap(_Spectral):
    r"""Diffusion map with Coifman-Lafon alpha-normalisation, tiled and matrix-free.

    See the module docstring for the operator, normalisations, bandwidth rules, the
    conventions against pyDiffMap and how repeated eigenvalues are found.

    Parameters
    ----------
    n_components : int >= 1
        Number of nontrivial diffusion coordinates (``n_components + 1`` eigenpairs).
    alpha : float in [0, 1]
        0: graph Laplacian normalisation, 1/2: Fokker-Planck, 1: Laplace-Beltrami (density
        removed).
    epsilon : "median", "bgh", "bgh_generous", "knn" or float
        Kernel bandwidth: :math:`K = \exp(-|x-y|^2/(\varepsilon\rho_x\rho_y))` (pyDiffMap's
        epsilon times 4).
    t : float >= 0
        Diffusion time of the embedding :math:`\lambda^t \psi`.
    eigensolver : {"auto", "arpack", "cupy", "lanczos", "dense"}
    tol : float, optional
        Eigensolver residual tolerance (default 1e-8 float64, 1e-5 float32); eigenvalue errors
        are about ``tol**2 / gap``.
    rng : int, Key or numpy.random.Generator, optional
        Random start vectors of the eigensolver.
    n_neighbors : int >= 2
        Neighbour rank of the ``"knn"`` bandwidth (default 7, the point itself counted).
    median_points : int >= 2
        Points used by the ``"median"`` and ``"bgh"`` rules (default 2000).
    block_size : int >= 1
        Block size of the Lanczos solver and of the deflation check (default 4): eigenvalues
        of multiplicity up to ``block_size`` are found in one pass, larger ones by further
        passes of the check.
    kernel_dtype : None, "float32" or "float64"
        Dtype of the kernel sums (default: the data's compute dtype). ``"float32"`` on
        float64 data runs the kernel (the cost) in float32 and keeps the normalisation and
        eigensolver in float64: eigenvalues stay within ~1e-7 of the float64 ones (swiss roll,
        N = 10k: 1.2e-8), residuals ~1e-7.
    bandwidth_type : None, float, str or callable
        Variable bandwidth :math:`\rho` (Berry-Harlim, pyDiffMap's ``bandwidth_type``): an
        exponent :math:`\beta` of the kernel density estimate, an expression in the
        intrinsic dimension ``d`` (``"-1/(d+2)"``), or a callable ``X -> rho``.
    dense_kernel_mb : float >= 0
        NumPy and torch CPU input: form the N x N kernel when it takes at most this many
        megabytes (default 256: N up to ~5,800 in float64), for BLAS matvecs with the same
        values; 0 keeps the tiled matrix-free path.
    truncate : float > 0, optional
        Block-sparse kernel (issue 18): the training points are clustered once and every
        kernel product of ``fit`` (degree, alpha-normalisation, eigensolver), ``transform``,
        ``apply_markov``, ``carre_du_champ`` and ``doob`` skips the cluster pairs whose
        largest possible term is below :math:`e^{-\mathrm{truncate}^2}` (the row's own
        term is 1: :func:`arraygen.blocksparse.block_pairs` with ``same_points=True``;
        the pattern is symmetric). New points (``transform``) use that rule as is.
        ``truncation_`` reports the fraction of point pairs computed and the bound on the
        skipped mass (relative to the kept row sums). Pays with small bandwidths (``"knn"``):
        most of the kernel is negligible there. Not with dask input. Default None: exact.
    backend : str, optional
        Kernel backend of the tiled kernel (:func:`arraygen.tiled.kernel_matvec`).

    Attributes
    ----------
    eigenvalues_ : (n_components + 1,)
        Descending, ``eigenvalues_[0] = 1``.
    eigenvectors_ : (N, n_components + 1)
        Right eigenvectors :math:`\psi` of :math:`P`, :math:`\psi_0 \equiv 1`,
        :math:`\pi`-orthonormal.
    eigenvectors_sym_ : (N, n_components + 1)
        Unit-norm eigenvectors :math:`\varphi` of the symmetric :math:`M`.
    embedding_ : (N, n_components)
        :math:`\lambda_k^t \psi_k`, k = 1..n_components.
    residuals_ : (n_components + 1,)
        :math:`\lVert P\psi_k - \lambda_k\psi_k\rVert_\pi`.
    epsilon_ : float, or (N,) array for ``"knn"`` (:math:`\sigma_i^2`)
    intrinsic_dim_ : int or None
        Dimension estimate of the ``"bgh"`` rule (or of the bandwidth's density estimate).
    bandwidths_ : (N,) or None
        :math:`\rho` of a variable bandwidth (pyDiffMap's ``bandwidths``).
    q_ : (N,)
        Density used by the alpha-normalisation, :math:`K\mathbf 1/\rho^2` (pyDiffMap's ``q``).
    kernel_density_ : (N,) or None
        Kernel density estimate at the fitted points: the bandwidth's nearest-neighbour KDE,
        or with a fixed bandwidth and a known ``intrinsic_dim_`` the normalised Gaussian KDE
        :math:`(K\mathbf 1)_i / (N (\pi\varepsilon)^{d/2})`; None otherwise.
    stationary_ : (N,)
        :math:`\pi = D_\alpha / \sum D_\alpha`.
    degree_, weights_, degree_alpha_, rscale_ : (N,)
        :math:`D = K1`, :math:`w = q^{-\alpha}`, :math:`D_\alpha`, :math:`D_\alpha^{-1/2} w`.
    converged_ : bool
        Every eigenpair met ``tol`` and the deflation check found no missed eigenvalue.
    n_kernel_calls_ : int
        Kernel applications made by ``fit`` (each applies K to a block of vectors).
    truncation_ : TruncationReport or None
        With ``truncate``: ``fraction`` of the N x N point pairs computed and ``mass_bound``,
        an upper bound on the skipped kernel mass of a row relative to its kept mass (the
        eigenvalues then differ from the exact ones by about ``mass_bound`` at most, see
        :func:`arraygen.testing.tol`, kind ``"truncated"``). None without truncation.
    kernel_storage_ : "dense", "tiled", "blocksparse" or "dask"
        ``"dask"``: ``X`` was a dask array; the kernel runs on its cluster (see the module
        docstring, driver-vector model) and the fitted arrays are NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> from arraygen.dmap import DiffusionMap
    >>> t = 2 * np.pi * np.arange(200) / 200
    >>> circle = np.c_[np.cos(t), np.sin(t)]
    >>> dm = DiffusionMap(n_components=4, alpha=1.0, epsilon=0.04, rng=0).fit(circle)
    >>> np.round(dm.eigenvalues_, 5).tolist()     # every eigenvalue but the first is double
    [1.0, 0.98995, 0.98995, 0.9604, 0.9604]
    >>> dm.embedding_.shape, dm.converged_
    ((200, 4), True)
    """

    def __init__(self, n_components: int = 8, alpha: float = 0.5, epsilon: Any = "median",
                 t: float = 1, eigensolver: str = "auto", tol: float | None = None,
                 rng: Any = None, *, n_neighbors: int = 7, median_points: int = 2000,
                 block_size: int = 4, kernel_dtype: Any = None, bandwidth_type: Any = None,
                 dense_kernel_mb: float = 256.0, truncate: float | None = None,
                 backend: str | None = None):
        self.n_components = n_components
        self.alpha = alpha
        self.epsilon = epsilon
        self.t = t
        self.eigensolver = eigensolver
        self.tol = tol
        self.rng = rng
        self.n_neighbors = n_neighbors
        self.median_points = median_points
        self.block_size = block_size
        self.kernel_dtype = kernel_dtype
        self.bandwidth_type = bandwidth_type
        self.dense_kernel_mb = dense_kernel_mb
        self.truncate = truncate
        self.backend = backend
        _check_options(self)

    @classmethod
    def from_pydiffmap(cls, *, alpha: float = 0.5, epsilon: Any = "bgh", n_evecs: int = 1,
                       bandwidth_type: Any = None, **options) -> DiffusionMap:
        """A DiffusionMap with pyDiffMap's parameter names and epsilon convention.

        ``DiffusionMap.from_pydiffmap(n_evecs=2, epsilon=0.1, alpha=1.0)`` is pyDiffMap's
        ``DiffusionMap.from_sklearn(n_evecs=2, epsilon=0.1, alpha=1.0)`` with the full kernel
        (``k = N``): a numeric epsilon is multiplied by 4 (pyDiffMap's kernel is
        ``exp(-|x-y|^2 / (4 epsilon))``); ``"bgh"``/``"bgh_generous"`` and ``bandwidth_type``
        pass through. Other keywords go to :class:`DiffusionMap`.

        Examples
        --------
        >>> from arraygen.dmap import DiffusionMap
        >>> DiffusionMap.from_pydiffmap(n_evecs=2, epsilon=0.1).epsilon
        0.4
        """
        if not isinstance(epsilon, str):
            epsilon = 4.0 * _v.check_scalar(epsilon, "epsilon", positive=True)
        return cls(n_components=n_evecs, alpha=alpha, epsilon=epsilon,
                   bandwidth_type=bandwidth_type, **options)

    # ---------------------------------------------------------------------------------- fit
    def fit(self, X) -> DiffusionMap:
        """Fit on the points ``X`` (N, d), or (N,) for points on a line; returns ``self``.

        ``X`` may be a dask array: the kernel products then run on its cluster and the fitted
        arrays are NumPy (module docstring, "Dask input")."""
        opts = _check_options(self)
        start = time.perf_counter()
        xp, (X,) = _v.common_namespace(X=X)
        x, out_dtype = _v.as_points(xp, X, "X", min_points=2)
        n = x.shape[0]
        k = opts["n_components"] + 1
        if k > n:
            raise ValueError(f"`n_components` ({opts['n_components']}) must be smaller than "
                             f"the number of points N = {n}")
        if _dask.is_dask_array(x):
            return self._fit_dask(xp, x, out_dtype, opts, start)
        self._opts = opts
        self._xp, self._out_dtype = xp, out_dtype
        self.mean_ = xp.mean(x, axis=0)
        xc = x - self.mean_[None, :]
        self.n_features_in_ = x.shape[1]
        _require_spread(xp, xc)
        eps_opt = opts["epsilon"]
        inv_bw = clusters = None
        self.intrinsic_dim_ = None
        self.bandwidths_ = None
        self._vbw = None
        kde = None
        if opts["bandwidth_type"] is not None:
            self._vbw = _VariableBandwidth(xp, xc, opts["bandwidth_type"], X,
                                           opts["median_points"])
            self.bandwidths_ = xp.astype(self._vbw.rho_, out_dtype)
            inv_bw = 1.0 / self._vbw.rho_
            kde = self._vbw.kde_
            self.intrinsic_dim_ = self._vbw.dim_
        if eps_opt == "knn":
            if opts["n_neighbors"] > n:
                raise ValueError(f"`n_neighbors` ({opts['n_neighbors']}) must be at most the "
                                 f"number of points N = {n}")
            if opts["truncate"] is not None:   # the clusters make the k-NN search local
                clusters = _cluster(xp, xc)
                sigma = xp.take(_knn_sigma_clustered(xp, clusters, opts["n_neighbors"]),
                                clusters.inverse)
            else:
                sigma = _knn_sigma(xp, xc, xc, opts["n_neighbors"])
            sigma = self._floor_sigma(xp, sigma, xc)
            self.sigma_floor_ = _v.host_float(xp.min(sigma))
            inv_bw = 1.0 / sigma
            beta = 1.0
            self.epsilon_ = xp.astype(sigma * sigma, out_dtype)
        else:
            if eps_opt == "median":
                eps = _median_epsilon(xp, xc, opts["median_points"], inv_bw)
            elif isinstance(eps_opt, str):   # bgh
                idx = _subsample(xp, n, opts["median_points"], aa.device(xc))
                xs = xc if idx is None else xp.take(xc, idx, axis=0)
                ib = inv_bw if idx is None or inv_bw is None else xp.take(inv_bw, idx)
                e, self.intrinsic_dim_ = _bgh(xp, _pair_sqdist(xp, xs, ib), xs.shape[0])
                eps = 4.0 * e * (2.0 if eps_opt == "bgh_generous" else 1.0)
            else:
                eps = float(eps_opt)
            self.epsilon_ = eps
            beta = 1.0 / eps
        work = self._work_dtype(xp, x.dtype)
        _v.check_fits_dtype(xp, beta, work, "epsilon", what="1/epsilon")
        self.beta_ = beta
        self.X_ = self._like = xc
        self.truncation_ = None
        if opts["truncate"] is not None:
            kern = _BlockKernel(xp, xc, beta, inv_bw, self.backend, opts["truncate"], work,
                                clusters=clusters)
            self.truncation_ = kern.report
            self.kernel_storage_ = "blocksparse"
            return self._fit_spectrum(xp, kern, aa.device(xc), xc.dtype, x.shape[1], kde,
                                      out_dtype, start)
        itemsize = 4 if work == xp.float32 else 8
        host = aa.is_numpy_namespace(xp) or (aa.is_torch_array(xc)
                                             and aa.device_kind(xc)[0] == "cpu")
        dense = host and n * n * itemsize <= opts["dense_kernel_mb"] * 2**20
        kern = _Kernel(xp, xc, beta, inv_bw, self.backend, work, dense=dense)
        self.kernel_storage_ = "dense" if dense else "tiled"
        return self._fit_spectrum(xp, kern, aa.device(xc), xc.dtype, x.shape[1], kde,
                                  out_dtype, start)

    def _fit_spectrum(self, xp, kern, dev, dtype, d: int, kde, out_dtype, start) -> DiffusionMap:
        """The part of ``fit`` after the bandwidth: alpha-normalisation and eigenpairs."""
        opts, eps_opt, n = self._opts, self._opts["epsilon"], self.X_.shape[0]
        k = opts["n_components"] + 1
        self._kern = kern
        ones = xp.ones((n,), dtype=dtype, device=dev)
        deg = kern(ones)
        q = deg if self._vbw is None else deg / (self._vbw.rho_ * self._vbw.rho_)
        w = q ** (-opts["alpha"])
        deg_alpha = w * kern(w)
        rscale = w / xp.sqrt(deg_alpha)
        self.degree_, self.weights_, self.degree_alpha_, self.rscale_ = deg, w, deg_alpha, rscale
        self.q_ = q
        if kde is None and self.intrinsic_dim_ is not None and eps_opt != "knn":
            dim = float(self.intrinsic_dim_)
            kde = deg / float(n) / (math.pi * self.epsilon_) ** (dim / 2.0)
        self.kernel_density_ = None if kde is None else xp.astype(kde, out_dtype)
        solver = _auto_solver(xp, n) if opts["eigensolver"] == "auto" else opts["eigensolver"]
        if solver == "cupy" and not aa.is_cupy_namespace(xp):
            raise ValueError(f"`eigensolver`='cupy' needs CuPy input; got {xp.__name__} arrays")
        self.eigensolver_ = solver
        self._gen = _random.as_key(self.rng)
        lam, phi, resid, converged = _solve(kern, rscale, k, solver, opts["tol"], self._gen, xp,
                                            opts["block_size"])
        self._set_spectrum(xp, lam, phi, resid, xp.sqrt(deg_alpha), opts["t"], converged,
                           out_dtype, "DiffusionMap")
        self.n_kernel_calls_ = kern.n_calls
        logger.debug("DiffusionMap.fit: N=%d d=%d epsilon=%s solver=%s kernel=%s calls=%d in "
                    "%.3f s", n, d, eps_opt,
                    solver, self.kernel_storage_, kern.n_calls, time.perf_counter() - start)
        return self

    def _fit_dask(self, dxp, x, out_dtype, opts, start) -> DiffusionMap:
        """``fit`` on a dask array ``x`` (N, d), already validated (driver-vector model).

        The centred points stay persisted in row chunks on the cluster; each kernel
        application runs there (:class:`_DaskKernel`) and returns NumPy, so the (N,) and
        (N, p) vectors, the normalisation and the eigensolver live in NumPy on the driver.
        Only the bandwidth rule's subsample (at most ``median_points`` rows) is gathered.
        """
        if opts["bandwidth_type"] is not None or opts["epsilon"] == "knn":
            raise ValueError("`X` is a dask array: DiffusionMap on a cluster supports "
                             "`epsilon` = 'median', 'bgh', 'bgh_generous' or a float and no "
                             "`bandwidth_type`; fit NumPy data for the others")
        if opts["truncate"] is not None:
            raise ValueError("`truncate` is not supported when `X` is a dask array (the "
                             "kernel products run dense on the cluster); use truncate=None")
        xp = aa.namespace_for(np)
        n = x.shape[0]
        self._opts = opts
        self._xp, self._out_dtype = xp, out_dtype
        x = x.rechunk({1: -1})
        self.mean_ = np.asarray(x.mean(axis=0).compute())
        xc = _dask.materialize(x - self.mean_[None, :])
        self.n_features_in_ = x.shape[1]
        _require_spread(dxp, xc)
        self.intrinsic_dim_ = self.bandwidths_ = self._vbw = self.truncation_ = None
        eps_opt = opts["epsilon"]
        if isinstance(eps_opt, str):
            idx = _subsample(xp, n, opts["median_points"], "cpu")
            xs = np.asarray((xc if idx is None else xc[np.asarray(idx)]).compute())
            if eps_opt == "median":
                eps = _median_epsilon(xp, xs, opts["median_points"])
            else:   # bgh
                e, self.intrinsic_dim_ = _bgh(xp, _pair_sqdist(xp, xs), xs.shape[0])
                eps = 4.0 * e * (2.0 if eps_opt == "bgh_generous" else 1.0)
        else:
            eps = float(eps_opt)
        self.epsilon_, self.beta_ = eps, 1.0 / eps
        dtype = np.dtype(xc.dtype)
        work = self._work_dtype(xp, dtype)
        _v.check_fits_dtype(xp, self.beta_, work, "epsilon", what="1/epsilon")
        kern = _DaskKernel(xc, self.beta_, self.backend, dtype, work)
        self.X_ = xc
        self.kernel_storage_ = "dask"
        self._fit_spectrum(xp, kern, "cpu", dtype, x.shape[1], None, out_dtype, start)
        self._like = self.degree_   # later inputs (v, f, h) are NumPy on the driver
        return self

    def _work_dtype(self, xp, dtype):
        kd = self.kernel_dtype
        if kd is None:
            return dtype
        return xp.float32 if aa.dtype_name(kd) == "float32" else xp.float64

    def fit_transform(self, X):
        """``fit(X).embedding_``: the (N, n_components) diffusion coordinates."""
        return self.fit(X).embedding_

    @staticmethod
    def _floor_sigma(xp, sigma, xc):
        floor = 1e-8 * math.sqrt(2.0 * _total_variance(xp, xc))
        small = int(_v.host_float(xp.sum(xp.astype(sigma < floor, xp.int64))))
        if small:
            warnings.warn(f"DiffusionMap: {small} points have a zero k-NN distance (duplicates); "
                          f"their bandwidth is floored at {floor:.3g}", UserWarning, stacklevel=3)
            sigma = xp.maximum(sigma, xp.full_like(sigma, floor))
        return sigma

    def _check_fitted(self) -> None:
        if not hasattr(self, "X_"):
            raise ValueError("this DiffusionMap is not fitted yet; call fit(X) first")

    def _fitted_array(self, arr, name: str):
        """An array argument in the fitted data's namespace and device (lists -> NumPy)."""
        arr = _v.as_array(arr, name)
        aa.array_namespace(**{name: arr, "X_fit": self._like})
        aa.check_same_device(**{name: arr, "X_fit": self._like})
        return arr

    def _new_points(self, X_new):
        """Validated, centred new points in the fitted dtype: ``(xn, raw, out_dtype)``."""
        xp = self._xp
        if self.kernel_storage_ == "dask":   # NumPy or dask new points
            xp, (X_new,) = _v.common_namespace(X_new=X_new)
        else:
            X_new = self._fitted_array(X_new, "X_new")
        xn, out_dtype = _v.as_points(xp, X_new, "X_new")
        if xn.shape[1] != self.n_features_in_:
            raise ValueError(f"`X_new` must have {self.n_features_in_} columns like the fitted "
                             f"`X` (shape {(self.X_.shape[0], self.n_features_in_)}); got shape "
                             f"{tuple(xn.shape)}")
        xn = xp.astype(xn, self.X_.dtype) if xn.dtype != self.X_.dtype else xn
        return xn - self.mean_[None, :], X_new, out_dtype

    def _cast_coords(self, coords, out_dtype):
        if coords.dtype == out_dtype:
            return coords
        if _dask.is_dask_array(coords):
            return coords.astype(out_dtype)
        return self._xp.astype(coords, out_dtype)

    def _nystrom(self, xn, raw, weights, psi, lam, t: float):
        r"""``lam^t * sum_j K(x*, x_j) c_j psi_j / (lam sum_j K(x*, x_j) c_j)``."""
        xp = self._xp
        inv_bw_new = None
        if self._vbw is not None:
            inv_bw_new = 1.0 / self._vbw.at(xp, xn, raw)
        elif self._kern.inv_bw is not None:   # knn
            inv_bw_new = 1.0 / self._floor_sigma(
                xp, _knn_sigma(xp, xn, self.X_, self._opts["n_neighbors"]), self.X_)
        if self.kernel_storage_ == "dask" or (
                inv_bw_new is None and isinstance(self._kern, _BlockKernel)):
            avg = self._kern.softmax(xn, psi, xp.log(weights))  # both kernels have softmax()
        elif inv_bw_new is None:
            avg, _ = _softmax_matvec(xp, xn, self.X_, psi, xp.log(weights), beta=self.beta_,
                                     backend=self.backend)
        else:
            ones = xp.ones((self.X_.shape[0], 1), dtype=psi.dtype, device=aa.device(psi))
            out = self._kern(xp.concat([ones, psi], axis=1), col=weights, x=xn,
                             x_inv_bw=inv_bw_new)
            den = out[:, 0]
            bad = int(_v.host_float(xp.sum(xp.astype(~(den > 0), xp.int64))))
            if bad:
                raise ValueError(f"`X_new`: {bad} points are so far from the training data that "
                                 "all their kernel weights underflow to 0")
            avg = out[:, 1:] / den[:, None]
        tiny = float(xp.finfo(lam.dtype).smallest_normal)
        lam_pos = xp.where(lam > tiny, lam, xp.full_like(lam, tiny))
        return avg * (lam_pos ** (t - 1.0))[None, :]

    # ---------------------------------------------------------------------------- transform
    def transform(self, X_new):
        r"""Nystrom extension of the diffusion coordinates to new points.

        .. math::

            \psi_k(x^*) = \frac{\sum_j K(x^*, x_j)\, w_j\, \psi_k(x_j)}
                               {\lambda_k \sum_j K(x^*, x_j)\, w_j},
            \qquad \mathrm{coords}_k(x^*) = \lambda_k^t\, \psi_k(x^*),

        computed as a kernel-softmax average (stable for points far from the data) or, for
        the ``"knn"`` bandwidth and variable bandwidths, with the new points' own bandwidth
        (:math:`\sigma(x^*)`, :math:`\rho(x^*)`). On the training points this reproduces
        ``embedding_`` (up to the eigensolver residual).

        Parameters
        ----------
        X_new : array, shape (N_new, d) (or (N_new,) for d = 1)

        Returns
        -------
        coords : array, shape (N_new, n_components)
        """
        self._check_fitted()
        xn, raw, out_dtype = self._new_points(X_new)
        coords = self._nystrom(xn, raw, self.weights_, self._psi_c[:, 1:], self._lam_c[1:],
                               self._opts["t"])
        return self._cast_coords(coords, out_dtype)

    # --------------------------------------------------------------- Markov operator and CdC
    def _rows(self, v, name: str):
        xp = self._xp
        v = self._fitted_array(v, name)
        n = self.X_.shape[0]
        if v.ndim not in (1, 2) or v.shape[0] != n:
            raise ValueError(f"`{name}` must have shape ({n},) or ({n}, p) (one row per fitted "
                             f"point); got shape {tuple(v.shape)}")
        v, _ = aa.as_float_array(xp, v, name)
        _v.require_finite(xp, v, name)
        return xp.astype(v, self.X_.dtype) if v.dtype != self.X_.dtype else v

    def apply_markov(self, v):
        r"""``P v`` for v (N,) or (N, p): :math:`(Pv)_i = \sum_j K_{ij} w_j v_j /
        \sum_j K_{ij} w_j`` (one kernel call)."""
        self._check_fitted()
        return self._markov(self._rows(v, "v"))

    def _markov(self, v):
        return self._kern(v, row=self.weights_ / self.degree_alpha_, col=self.weights_)

    def carre_du_champ(self, f, g=None):
        r"""Carre du champ of the diffusion: :math:`\Gamma(f, g) = \tfrac12[P(fg) - f\,Pg
        - g\,Pf + fg]`, i.e. :math:`\Gamma(f,g)_i = \tfrac12 \sum_j P_{ij}(f_j - f_i)
        (g_j - g_i)`.

        Discrete (no :math:`1/\varepsilon` scaling). :math:`\Gamma(f, f) \ge 0`; for ``g=None``
        or ``g is f`` round-off below zero is clipped to 0. One kernel call.

        Parameters
        ----------
        f, g : array, shape (N,) or (N, p)
            Functions on the fitted points (same shape); ``g`` defaults to ``f``.

        Returns
        -------
        gamma : array, same shape as ``f``
        """
        self._check_fitted()
        xp = self._xp
        same = g is None or g is f
        f2 = self._rows(f, "f")
        if not same:
            g2 = self._rows(g, "g")
            if tuple(g2.shape) != tuple(f2.shape):
                raise ValueError(f"`f` and `g` must have the same shape; got {tuple(f2.shape)} "
                                 f"and {tuple(g2.shape)}")
        n = self.X_.shape[0]
        one_d = f2.ndim == 1
        f2 = xp.reshape(f2, (n, 1)) if one_d else f2
        g2 = f2 if same else xp.reshape(g2, (n, -1))
        p = f2.shape[1]
        cols = [f2 * g2, f2] if same else [f2 * g2, f2, g2]
        pv = self._markov(xp.concat(cols, axis=1))
        p_fg, p_f = pv[:, :p], pv[:, p:2 * p]
        p_g = p_f if same else pv[:, 2 * p:]
        gamma = 0.5 * (p_fg - f2 * p_g - g2 * p_f + f2 * g2)
        if same:
            gamma = xp.maximum(gamma, xp.zeros_like(gamma))
        return xp.reshape(gamma, (n,)) if one_d else gamma

    def metric_tensor(self, components=None):
        r"""Carre du champ between pairs of diffusion coordinates, per point.

        ``G[i, a, b] = Gamma(Y_a, Y_b)(x_i)`` with :math:`Y = ` ``embedding_[:, components]``
        (:math:`Y_a = \lambda_a^t \psi_a`). Each ``G[i]`` is symmetric positive semidefinite:
        it is the (discrete) cometric, i.e. the inverse Riemannian metric of the data manifold
        expressed in the diffusion coordinates. One kernel call with ``q(q+3)/2`` columns.

        Parameters
        ----------
        components : sequence of int, optional
            Coordinates to use (0-based columns of ``embedding_``); default all.

        Returns
        -------
        G : array, shape (N, q, q)
        """
        self._check_fitted()
        xp = self._xp
        nc = self.embedding_.shape[1]
        if components is None:
            comps = list(range(nc))
        else:
            comps = [_v.check_int(c, "components", minimum=0) for c in components]
        if not comps or any(c >= nc for c in comps):
            raise ValueError(f"`components` must be indices in [0, {nc}); got {components!r}")
        lam = self._lam_c
        y = self._psi_c[:, 1:] * _power(xp, lam[1:], self._opts["t"])[None, :]
        y = xp.stack([y[:, c] for c in comps], axis=1)
        q = len(comps)
        pairs = [(a, b) for a in range(q) for b in range(a, q)]
        prods = xp.stack([y[:, a] * y[:, b] for a, b in pairs], axis=1)
        pv = self._markov(xp.concat([prods, y], axis=1))
        py = pv[:, len(pairs):]
        entries = {}
        for idx, (a, b) in enumerate(pairs):
            g = 0.5 * (pv[:, idx] - y[:, a] * py[:, b] - y[:, b] * py[:, a] + y[:, a] * y[:, b])
            if a == b:
                g = xp.maximum(g, xp.zeros_like(g))
            entries[(a, b)] = entries[(b, a)] = g
        rows = [xp.stack([entries[(a, b)] for b in range(q)], axis=1) for a in range(q)]
        out = xp.stack(rows, axis=1)
        return out if out.dtype == self._out_dtype else xp.astype(out, self._out_dtype)

    # --------------------------------------------------------------------------------- Doob
    def doob(self, h, *, n_components: int | None = None, tol: float | None = None):
        r"""Doob h-transform :math:`P^h = \mathrm{diag}(1/(Ph))\, P\, \mathrm{diag}(h)`.

        Computed as another symmetric rescaling of the same kernel:
        :math:`P^h = \mathrm{diag}(1/g) K_\alpha \mathrm{diag}(h)` with :math:`g = K_\alpha h`,
        similar to :math:`S = \mathrm{diag}(r^h) K \mathrm{diag}(r^h)`,
        :math:`r^h = w\sqrt{h/g} = r \sqrt{h / (Ph)}`. :math:`P^h` is row-stochastic and
        reversible with respect to :math:`\pi^h \propto h\,g`; its right eigenvectors are
        :math:`\psi^h = \varphi^h/\sqrt{\pi^h}`, normalised like the base map's. The same
        eigensolver (and deflation check for repeated eigenvalues) as the map's.

        Parameters
        ----------
        h : array, shape (N,)
            Positive, finite function on the fitted points.
        n_components : int, optional
            Nontrivial eigenpairs (default: the map's ``n_components``).
        tol : float, optional
            Eigensolver tolerance (default: the map's).

        Returns
        -------
        DoobTransform
            With ``eigenvalues_``, ``eigenvectors_``, ``embedding_``, ``residuals_``,
            ``stationary_`` (:math:`\pi^h`), ``h_``, ``rscale_`` and ``transform``.
        """
        self._check_fitted()
        xp = self._xp
        n = self.X_.shape[0]
        h = self._fitted_array(h, "h")
        h = _v.as_vector(xp, h, n, "h", self._like, positive=True)
        nc = self._opts["n_components"] if n_components is None else _v.check_int(
            n_components, "n_components", minimum=1)
        if nc + 1 > n:
            raise ValueError(f"`n_components` ({nc}) must be smaller than the number of points "
                             f"N = {n}")
        tol = self._opts["tol"] if tol is None else _v.check_scalar(tol, "tol", positive=True)
        g = self._kern(h, row=self.weights_, col=self.weights_)
        rscale_h = self.weights_ * xp.sqrt(h / g)
        gen = self._gen.advance(1 << 32) if isinstance(self._gen, _random.Key) else self._gen
        lam, phi, resid, converged = _solve(self._kern, rscale_h, nc + 1, self.eigensolver_, tol,
                                            gen, xp, self._opts["block_size"])
        return DoobTransform(self, h, g, rscale_h, lam, phi, resid, converged)


class DoobTransform(_Spectral):
    r"""Eigenpairs of the Doob h-transform :math:`P^h` of a fitted :class:`DiffusionMap`.

    Returned by :meth:`DiffusionMap.doob`; attributes as the map's: ``eigenvalues_``
    (descending, :math:`\lambda_0 = 1`), ``eigenvectors_`` (:math:`\psi^h`, :math:`\psi^h_0
    \equiv 1`), ``eigenvectors_sym_``, ``embedding_``, ``residuals_``, ``converged_``,
    ``stationary_`` (:math:`\pi^h \propto h \cdot K_\alpha h`), plus ``h_`` and ``rscale_``.
    """

    def __init__(self, base: DiffusionMap, h, g, rscale, lam, phi, resid, converged):
        xp = base._xp
        self.base = base
        self.h_ = h
        self.rscale_ = rscale
        self.t = base._opts["t"]
        self._set_spectrum(xp, lam, phi, resid, xp.sqrt(g * h), self.t, converged,
                           base._out_dtype, "DiffusionMap.doob")

    def apply_markov(self, v):
        r"""``P^h v = (P(h v)) / (P h)`` for v (N,) or (N, p)."""
        v = self.base._rows(v, "v")
        hv = self.h_ * v if v.ndim == 1 else self.h_[:, None] * v
        num = self.base._markov(hv)
        den = self.base._markov(self.h_)
        return num / den if v.ndim == 1 else num / den[:, None]

    def transform(self, X_new):
        r"""Nystrom extension of the h-transformed coordinates to new points.

        :math:`P^h(x^*, x_j) = K(x^*, x_j) w_j h_j / \sum_l K(x^*, x_l) w_l h_l`, so

        .. math::

            \psi^h_k(x^*) = \frac{\sum_j K(x^*, x_j)\, w_j h_j\, \psi^h_k(x_j)}
                                 {\lambda^h_k \sum_j K(x^*, x_j)\, w_j h_j},
            \qquad \mathrm{coords}_k(x^*) = (\lambda^h_k)^t\, \psi^h_k(x^*);

        on the fitted points this reproduces ``embedding_``.

        Parameters
        ----------
        X_new : array, shape (N_new, d)

        Returns
        -------
        coords : array, shape (N_new, n_components)
        """
        base = self.base
        xn, raw, out_dtype = base._new_points(X_new)
        coords = base._nystrom(xn, raw, base.weights_ * self.h_, self._psi_c[:, 1:],
                               self._lam_c[1:], self.t)
        return base._cast_coords(coords, out_dtype)
