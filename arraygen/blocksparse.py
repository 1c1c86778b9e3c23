"""Spatial clusters and cluster-pair lists for the block-sparse tiled kernels (issue 18).

A Gaussian kernel ``exp(-beta |x_i - y_j|^2)`` between far-apart groups of points is below any
useful resolution. :func:`cluster_points` reorders a cloud once so that each run of ``block``
consecutive points is one spatial cluster (a kd-tree order); :func:`block_pairs` lists, from the
clusters' centres and radii alone, the cluster pairs whose kernel can matter for a truncation
radius ``truncate`` (in units of the kernel width ``1 / sqrt(beta)``), and bounds the mass of
what it skips. The tiled ops (:func:`arraygen.kernel_matvec`, :func:`arraygen.kernel_logsumexp`,
:func:`arraygen.kernel_softmax_matvec`) take ``truncate=`` and do this for you; algorithms
keep their state in the sorted order and call the private cores of :mod:`arraygen.tiled` with
``pairs=``. The launcher contract is :mod:`arraygen._kernels.blocksparse`.

The keep rule, with ``w`` the log-weights (zeros if none) and ``a``/``b`` the per-point inverse
bandwidths (ones if none), for row cluster ``A`` and column cluster ``B`` with centres ``c``,
radii ``r``::

    dmin = max(0, |cA - cB| - rA - rB),   dmax = |cA - cB| + rA + rB
    U[A,B] = max_{j in B} w_j - beta amin_A bmin_B dmin^2          (every exponent of the pair)
    L[A]   = max_B (max_{j in B} w_j - beta amax_A bmax_B dmax^2)  (largest exponent of a row)
    keep (A, B)  iff  U[A,B] >= L[A] - truncate^2
    mass_bound = max_A sum_{B skipped} count_B exp(U[A,B] - L[A])

With ``same_points=True`` (a cloud against itself) ``L[A]`` is raised to
``max(L[A], min_{i in A} w_i)``: row ``i``'s own term ``e^(w_i)`` is one of its terms.

``mass_bound`` bounds, for every row, the skipped kernel mass divided by the kept mass, hence
the relative error of the row's kernel sum for non-negative right-hand sides (and the error of
the row's log-sum-exp, which is at most ``log(1 + mass_bound) <= mass_bound``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from . import _array_api as aa
from . import _validation as _v
from ._kernels.blocksparse import DEFAULT_BLOCK_CPU, DEFAULT_BLOCK_GPU, cluster_count
from ._kd_order import kd_order
from ._kernels.tiled import DIRECT_MAX_D

__all__ = ["BlockPairs", "Clusters", "TruncationReport", "block_pairs", "cluster_points"]

#: float64 elements of one chunk of the (row clusters x column clusters) bound tables.
_CHUNK_ELEMENTS = 1 << 22


@dataclasses.dataclass(frozen=True, eq=False)
class Clusters:
    """A cloud reordered into spatial clusters of ``block`` consecutive points.

    Attributes
    ----------
    perm : array, shape (n,), int64
        ``sorted = x[perm]`` (same namespace and device as the points).
    inverse : array, shape (n,), int64
        ``x = sorted[inverse]``.
    points : array, shape (n, d)
        The sorted points in the compute dtype.
    block : int
        Points per cluster; cluster ``k`` is rows ``[k block, min(n, (k + 1) block))``.
    centers : array, shape (K, d), float64
        Centroid of each cluster.
    radii : array, shape (K,), float64
        ``max |p - center|`` over each cluster (rounded up).
    count : array, shape (K,), float64
        Points per cluster (``block``, except possibly the last).
    n, d, K : int
        Points, dimension and clusters.
    """

    perm: Any
    inverse: Any
    points: Any
    block: int
    centers: Any
    radii: Any
    count: Any
    n: int
    d: int
    K: int

    def __repr__(self) -> str:
        return f"Clusters(n={self.n}, d={self.d}, block={self.block}, K={self.K})"


@dataclasses.dataclass(frozen=True, eq=False)
class BlockPairs:
    """The cluster pairs a block-sparse kernel computes (CSR over row clusters).

    Attributes
    ----------
    offsets : array, shape (Kx + 1,), int32
        Row cluster ``A`` computes the y-clusters ``cols[offsets[A]:offsets[A + 1]]``.
    cols : array, shape (nnz,), int32
        Column-cluster ids, ascending within a row cluster (points' device).
    fraction : float
        Point pairs computed divided by ``N M``.
    mass_bound : float
        Upper bound on skipped / kept kernel mass over all rows (0.0 when nothing is skipped).
    truncate : float
        The truncation radius the list was built for.
    block_x, block_y, n, m : int
        Cluster sizes and point counts of the two clouds.
    host_offsets, host_cols : numpy.ndarray
        Host copies of ``offsets`` and ``cols`` (for CPU launchers and the Array-API path),
        made on first use: GPU launchers never copy the lists back.
    """

    offsets: Any
    cols: Any
    fraction: float
    mass_bound: float
    truncate: float
    block_x: int
    block_y: int
    n: int
    m: int
    _host: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @property
    def host_offsets(self) -> np.ndarray:
        """Host copy of ``offsets`` (int32), made on first use."""
        return self._host_copy("offsets")

    @property
    def host_cols(self) -> np.ndarray:
        """Host copy of ``cols`` (int32), made on first use."""
        return self._host_copy("cols")

    def _host_copy(self, name: str) -> np.ndarray:
        if name not in self._host:
            self._host[name] = np.asarray(aa.to_numpy(getattr(self, name)), dtype=np.int32)
        return self._host[name]

    @property
    def nnz(self) -> int:
        """Number of cluster pairs computed."""
        return int(self.cols.shape[0])

    def __repr__(self) -> str:
        return (f"BlockPairs(nnz={self.nnz}, fraction={self.fraction:.4g}, "
                f"mass_bound={self.mass_bound:.3g}, truncate={self.truncate})")


@dataclasses.dataclass(frozen=True)
class TruncationReport:
    """What a truncated tiled op computed (``return_report=True``).

    Attributes
    ----------
    truncate : float or None
        The truncation radius (None: the dense op ran).
    fraction : float
        Fraction of the ``N M`` point pairs computed (1.0 for the dense op).
    mass_bound : float
        Rigorous bound on every row's skipped / kept kernel mass, so on the relative error of
        each row's kernel sum for non-negative right-hand sides (0.0 for the dense op).
    n_pairs_blocks : int or None
        Number of cluster pairs computed (None for the dense op).
    """

    truncate: float | None
    fraction: float
    mass_bound: float
    n_pairs_blocks: int | None


# --------------------------------------------------------------------------------------------
# clusters
# --------------------------------------------------------------------------------------------

def _kd_order(xh: np.ndarray, block: int) -> np.ndarray:
    """Host kd-tree order: split each segment along its widest coordinate at a multiple of
    ``block`` (left part: half the segment's clusters), until segments hold one cluster."""
    n, d = xh.shape
    xt = np.ascontiguousarray(xh.T)  # coordinate rows: contiguous gathers and reductions
    perm = np.arange(n, dtype=np.int64)
    stack = [(0, n)]
    while stack:
        s, e = stack.pop()
        size = e - s
        if size <= block:
            continue
        left = (cluster_count(size, block) // 2) * block
        idx = perm[s:e]
        if d > 1:  # the widest coordinate, from a strided subsample of large segments
            probe = xt[:, idx[::max(1, size // 4096)]]
            axis = int(np.argmax(probe.max(axis=1) - probe.min(axis=1)))
        else:
            axis = 0
        part = np.argpartition(xt[axis, idx], left)
        perm[s:e] = idx[part]
        stack.append((s + left, e))
        stack.append((s, s + left))
    return perm


def _pad_rows(xp, a, total: int, fill: float):
    """``a`` (n,) or (n, d) padded with ``fill`` rows to ``total`` rows."""
    n = a.shape[0]
    if total == n:
        return a
    shape = (total - n,) + tuple(a.shape[1:])
    return xp.concat([a, xp.full(shape, fill, dtype=a.dtype, device=aa.device(a))], axis=0)


def _cluster_reduce(xp, a, block: int, k: int, how: str):
    """Per-cluster ``min`` or ``max`` of a (n,) array in sorted order: (k,)."""
    fill = math.inf if how == "min" else -math.inf
    r = xp.reshape(_pad_rows(xp, a, k * block, fill), (k, block))
    return xp.min(r, axis=1) if how == "min" else xp.max(r, axis=1)


def _default_block(x) -> int:
    return DEFAULT_BLOCK_GPU if aa.device_kind(x)[0] == "cuda" else DEFAULT_BLOCK_CPU


def _apply_order(xp, x, perm_h: np.ndarray):
    """``(perm, inverse, sorted points)`` of the host order ``perm_h`` on ``x``'s device."""
    n = x.shape[0]
    inverse_h = np.empty_like(perm_h)
    inverse_h[perm_h] = np.arange(n, dtype=np.int64)
    dev = aa.device(x)
    perm = xp.asarray(perm_h, device=dev)
    inverse = xp.asarray(inverse_h, device=dev)
    return perm, inverse, xp.take(x, perm, axis=0)


def _clusters_of_order(xp, perm, inverse, points, block: int) -> Clusters:
    """The :class:`Clusters` of the runs of ``block`` consecutive ``points`` (already sorted
    by ``perm``; ``inverse`` its inverse): float64 centroids, radii and counts."""
    n, d = points.shape
    dev = aa.device(points)
    k = cluster_count(n, block)
    count_h = np.full(k, float(block))
    count_h[-1] = n - (k - 1) * block
    count = xp.asarray(count_h, dtype=xp.float64, device=dev)
    p64 = xp.astype(points.detach() if aa.is_torch_array(points) else points, xp.float64)
    grid = xp.reshape(_pad_rows(xp, p64, k * block, 0.0), (k, block, d))
    centers = xp.sum(grid, axis=1) / count[:, None]
    valid = xp.reshape(xp.arange(k * block, device=dev) < n, (k, block))
    diff = grid - centers[:, None, :]
    sq = xp.where(valid, xp.sum(diff * diff, axis=2), xp.zeros((), dtype=xp.float64, device=dev))
    radii = xp.sqrt(xp.max(sq, axis=1)) * (1.0 + 1e-12)
    return Clusters(perm=perm, inverse=inverse, points=points, block=int(block),
                    centers=centers, radii=radii, count=count, n=int(n), d=int(d), K=int(k))


def _nested_order(xh: np.ndarray, outer: int, inner: int) -> np.ndarray:
    """Host kd order whose runs of ``outer`` and of ``inner`` points are both clusters
    (``inner`` divides ``outer``): each ``outer`` run is split again down to ``inner``."""
    perm = _kd_order(xh, outer)
    if inner < outer:
        for s in range(0, perm.shape[0], outer):
            idx = perm[s:s + outer]
            perm[s:s + outer] = idx[_kd_order(xh[idx], inner)]
    return perm


def _order_on_host(x) -> bool:
    """Host arrays take the host order (partial sorts, no copy); device arrays the device
    order of :func:`arraygen._kd_order.kd_order` (whole-array sorts, no host round trip)."""
    return aa.device_kind(x)[0] == "cpu"


def _kd_sorted(xp, x, block: int, inner: int | None = None):
    """``(perm, inverse, sorted points)`` of the kd order of ``x`` into clusters of ``block``
    points (with ``inner``, a divisor of ``block``: runs of ``inner`` points are clusters too)."""
    if _order_on_host(x):
        xh = np.asarray(aa.to_numpy(x), dtype=np.float64)
        return _apply_order(xp, x, _nested_order(xh, block, inner or block))
    perm = kd_order(xp, x, block)
    if inner is not None and inner < block:
        perm = xp.take(perm, kd_order(xp, xp.take(x, perm, axis=0), inner, within=block))
    n = x.shape[0]
    inverse = xp.zeros((n,), dtype=xp.int64, device=aa.device(x))
    inverse[perm] = xp.arange(n, dtype=xp.int64, device=aa.device(x))
    return perm, inverse, xp.take(x, perm, axis=0)


def _build_clusters(xp, x, block: int) -> Clusters:
    """:func:`cluster_points` on a trusted (n, d) array in its compute dtype."""
    return _clusters_of_order(xp, *_kd_sorted(xp, x, block), block)


def cluster_points(x, *, block: int | None = None) -> Clusters:
    """Reorder a point cloud into spatial clusters of ``block`` consecutive points.

    The order is a kd-tree's: the cloud is split recursively along its widest coordinate at a
    multiple of ``block`` points until every part is one cluster, so only the last cluster may
    be partial. The order is computed where ``x`` lives (whole-array sorts on a GPU, partial
    sorts on the host); the clusters' arrays live in ``x``'s namespace and device. Build once per cloud and reuse it
    (``x_clusters=`` / ``y_clusters=`` of the tiled ops).

    Parameters
    ----------
    x : array, shape (N, d) or (N,)
        Finite points; ``(N,)`` is N points in one dimension.
    block : int, optional
        Points per cluster (default 64 for host arrays, 128 for CUDA arrays).

    Returns
    -------
    Clusters
        ``perm``, ``inverse``, sorted ``points`` (compute dtype), ``block``, float64
        ``centers`` (K, d), ``radii`` (K,), ``count`` (K,), and ``n``, ``d``, ``K``.

    Examples
    --------
    >>> import numpy as np
    >>> from arraygen.blocksparse import cluster_points
    >>> x = np.array([0.0, 10.0, 0.1, 10.1, 0.2])
    >>> c = cluster_points(x, block=2)
    >>> c.K, c.points[:, 0].tolist()
    (3, [0.0, 0.1, 0.2, 10.0, 10.1])
    >>> bool(np.all(c.points[c.inverse] == x[:, None]))
    True
    """
    xp, (x,) = _v.common_namespace(x=x)
    x, _ = _v.as_points(xp, x, "x")
    block = _default_block(x) if block is None else _v.check_int(block, "block", minimum=1)
    return _build_clusters(xp, x, block)


# --------------------------------------------------------------------------------------------
# pair lists
# --------------------------------------------------------------------------------------------

def _centre_distances(xp, ca, cb):
    """Lower and upper bounds of the centre distances |ca_A - cb_B| (float64, (ka, kb))."""
    d = ca.shape[1]
    if d <= DIRECT_MAX_D:
        d2 = None
        for k in range(d):
            diff = ca[:, k:k + 1] - cb[:, k][None, :]
            d2 = diff * diff if d2 is None else d2 + diff * diff
        dist = xp.sqrt(d2)
        return dist * (1.0 - 1e-12), dist * (1.0 + 1e-12)
    aa2 = xp.sum(ca * ca, axis=1)
    bb2 = xp.sum(cb * cb, axis=1)
    d2 = aa2[:, None] + bb2[None, :] - 2.0 * xp.matmul(ca, xp.matrix_transpose(cb))
    err = (4.0 * d + 8.0) * 2.0 ** -52 * (aa2[:, None] + bb2[None, :])  # cancellation slack
    zero = xp.zeros((), dtype=d2.dtype, device=aa.device(d2))
    return xp.sqrt(xp.maximum(d2 - err, zero)), xp.sqrt(xp.maximum(d2 + err, zero))


def _cluster_range(xp, v, c: Clusters):
    """Per-cluster ``(min, max)`` of a (n,) array in ``c``'s order, float64 (ones if None)."""
    if v is None:
        ones = xp.ones((c.K,), dtype=xp.float64, device=aa.device(c.centers))
        return ones, ones
    v64 = xp.astype(v, xp.float64)
    return (_cluster_reduce(xp, v64, c.block, c.K, "min"),
            _cluster_reduce(xp, v64, c.block, c.K, "max"))


def _pairs(xp, cx: Clusters, cy: Clusters, beta: float, truncate: float, w=None, a=None,
           b=None, *, same_points: bool = False) -> BlockPairs:
    """:func:`block_pairs` on trusted inputs (``w``, ``a``, ``b`` in the sorted orders;
    ``same_points=True`` only when ``cy`` holds the very points of ``cx`` in the same order)."""
    dev = aa.device(cx.centers)
    f64 = xp.float64
    kx, ky = cx.K, cy.K
    w64 = None if w is None else xp.astype(w, f64)
    if w64 is None:
        wmax = xp.zeros((ky,), dtype=f64, device=dev)
    else:
        wmax = _cluster_reduce(xp, w64, cy.block, ky, "max")
    if same_points:   # row i's own term e^(w_i - 0) is one of its terms: L_A >= min_A w
        floor = (xp.zeros((kx,), dtype=f64, device=dev) if w64 is None
                 else _cluster_reduce(xp, w64, cx.block, kx, "min"))
    amin, amax = _cluster_range(xp, a, cx)
    bmin, bmax = _cluster_range(xp, b, cy)
    cx_centers, cy_centers = cx.centers, cy.centers
    if cx.d > DIRECT_MAX_D:
        mean = (xp.sum(cx_centers * cx.count[:, None], axis=0)
                + xp.sum(cy_centers * cy.count[:, None], axis=0)) / float(cx.n + cy.n)
        cx_centers, cy_centers = cx_centers - mean, cy_centers - mean
    t2 = float(truncate) ** 2
    zero = xp.zeros((), dtype=f64, device=dev)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, ky))
    counts, col_parts, masses, computed = [], [], [], []
    for a0 in range(0, kx, chunk):
        a1 = min(kx, a0 + chunk)
        lo, hi = _centre_distances(xp, cx_centers[a0:a1, :], cy_centers)
        ra = cx.radii[a0:a1][:, None]
        rb = cy.radii[None, :]
        dmin = xp.maximum(lo - ra - rb, zero)
        dmax = hi + ra + rb
        upper = wmax[None, :] - beta * (amin[a0:a1][:, None] * bmin[None, :]) * (dmin * dmin)
        lower = wmax[None, :] - beta * (amax[a0:a1][:, None] * bmax[None, :]) * (dmax * dmax)
        top = xp.max(lower, axis=1)
        if same_points:
            top = xp.maximum(top, floor[a0:a1])
        keep = upper >= (top - t2)[:, None]
        gap = xp.where(keep, xp.asarray(-math.inf, dtype=f64, device=dev), upper - top[:, None])
        skipped = cy.count[None, :] * xp.exp(gap)
        masses.append(xp.max(xp.sum(skipped, axis=1)))
        kept_count = xp.where(keep, cy.count[None, :], zero)
        computed.append(xp.sum(xp.sum(kept_count, axis=1) * cx.count[a0:a1]))
        counts.append(xp.sum(xp.astype(keep, xp.int32), axis=1))
        col_parts.append(xp.astype(xp.nonzero(keep)[1], xp.int32))
    totals = aa.to_numpy(xp.stack([xp.max(xp.stack(masses)), xp.sum(xp.stack(computed))]))
    per_row = xp.concat(counts) if len(counts) > 1 else counts[0]
    offsets = xp.concat([xp.zeros((1,), dtype=xp.int32, device=dev),
                         xp.astype(xp.cumulative_sum(per_row), xp.int32)])
    cols = xp.concat(col_parts) if len(col_parts) > 1 else col_parts[0]
    return BlockPairs(offsets=offsets, cols=cols,
                      fraction=float(totals[1]) / (float(cx.n) * float(cy.n)),
                      mass_bound=float(totals[0]), truncate=float(truncate),
                      block_x=cx.block, block_y=cy.block, n=cx.n, m=cy.n)


def check_clusters(clusters: Any, name: str, x) -> Clusters:
    """``clusters`` as the :class:`Clusters` of the (n, d) array ``x`` (boundary helper).

    ``TypeError`` naming ``name`` for anything but Clusters of ``x``'s namespace;
    ``ValueError`` if their size or dimension differs from ``x``'s.
    """
    if not isinstance(clusters, Clusters):
        raise TypeError(f"`{name}` must be a Clusters from arraygen.blocksparse.cluster_points; "
                        f"got {type(clusters).__name__}")
    if (clusters.n, clusters.d) != tuple(x.shape):
        raise ValueError(f"`{name}` was built for {clusters.n} points in {clusters.d} "
                         f"dimensions; the points have shape {tuple(x.shape)}")
    aa.array_namespace(**{name: clusters.perm, "x": x})
    aa.check_same_device(**{name: clusters.perm, "x": x})
    return clusters


def block_pairs(cx: Clusters, cy: Clusters, *, beta: float, truncate: float, log_weights=None,
                x_bandwidth=None, y_bandwidth=None, same_points: bool = False) -> BlockPairs:
    r"""The cluster pairs whose Gaussian kernel can matter, and a bound on the rest.

    Keeps the pair ``(A, B)`` iff :math:`U_{AB} \ge L_A - \mathrm{truncate}^2` with

    .. math::

        U_{AB} = \max_{j \in B} w_j - \beta\, a^{\min}_A b^{\min}_B\, d^{\min}_{AB}{}^2,
        \qquad
        L_A = \max_B \bigl(\max_{j \in B} w_j - \beta\, a^{\max}_A b^{\max}_B\,
        d^{\max}_{AB}{}^2\bigr),

    :math:`d^{\min} = \max(0, |c_A - c_B| - r_A - r_B)`, :math:`d^{\max} = |c_A - c_B| + r_A
    + r_B`, and reports :math:`\max_A \sum_{B\ \mathrm{skipped}} n_B e^{U_{AB} - L_A}`, a bound
    on every row's skipped / kept kernel mass. O(Kx Ky) work on the clusters' device.

    Parameters
    ----------
    cx, cy : Clusters
        Clusters of the rows ``x`` and the columns ``y`` (:func:`cluster_points`).
    beta : float
        Inverse squared kernel width, > 0.
    truncate : float
        Truncation radius in kernel widths ``1 / sqrt(beta)``, > 0: pairs whose largest
        exponent is below the row's largest by more than ``truncate**2`` are skipped.
    log_weights : array, shape (M,), optional
        Column log-weights :math:`w` IN THE SORTED ORDER of ``cy`` (``-inf``: zero weight).
    x_bandwidth, y_bandwidth : array, shape (N,) and (M,), optional
        Per-point inverse bandwidths :math:`a, b > 0`, in the sorted orders of ``cx``/``cy``.
    same_points : bool, default False
        The rows are the columns (a cloud against itself: ``cy`` must be ``cx``). Then row
        :math:`i` holds its own term :math:`e^{w_i - 0}`, so :math:`L_A` is raised to
        :math:`\max(L_A, \min_{i \in A} w_i)` (0 without weights). The bound stays rigorous:
        it is still a lower bound on the largest exponent of every row of ``A``, and the pair
        ``(A, A)`` (:math:`d^{\min} = 0`, :math:`U_{AA} \ge \min_A w`) is always kept. It is
        far tighter when clusters are wide against the kernel width (the :math:`d^{\max}`
        bound then keeps nearly every pair); without weights the kept pattern is symmetric.

    Returns
    -------
    BlockPairs

    Examples
    --------
    >>> import numpy as np
    >>> from arraygen.blocksparse import block_pairs, cluster_points
    >>> x = np.concatenate([np.zeros(4), np.full(4, 100.0)])
    >>> c = cluster_points(x, block=4)
    >>> p = block_pairs(c, c, beta=1.0, truncate=3.0)
    >>> p.nnz, p.fraction, p.mass_bound < 1e-300
    (2, 0.5, True)
    >>> grid = np.stack(np.meshgrid(np.arange(16.0), np.arange(16.0)), -1).reshape(-1, 2)
    >>> c = cluster_points(grid, block=16)       # 16 squares of 4 x 4 points
    >>> block_pairs(c, c, beta=1.0, truncate=3.0).nnz
    180
    >>> block_pairs(c, c, beta=1.0, truncate=3.0, same_points=True).nnz
    100
    """
    for name, c in (("cx", cx), ("cy", cy)):
        if not isinstance(c, Clusters):
            raise TypeError(f"`{name}` must be a Clusters from cluster_points; got "
                            f"{type(c).__name__}")
    if cx.d != cy.d:
        raise ValueError(f"`cx` and `cy` must have the same dimension; got {cx.d} and {cy.d}")
    xp, _ = _v.common_namespace(cx=cx.perm, cy=cy.perm)
    beta = _v.check_scalar(beta, "beta", positive=True)
    truncate = _v.check_scalar(truncate, "truncate", positive=True)
    w = _v.as_log_weights(xp, log_weights, cy.n, cy.points)
    a = _v.as_vector(xp, x_bandwidth, cx.n, "x_bandwidth", cx.points, positive=True)
    b = _v.as_vector(xp, y_bandwidth, cy.n, "y_bandwidth", cy.points, positive=True)
    same_points = _v.check_choice(same_points, "same_points", (False, True))
    if same_points and cy is not cx:
        raise ValueError("`same_points=True` needs `cy` to be `cx` (a cloud against itself)")
    return _pairs(xp, cx, cy, beta, truncate, w, a, b, same_points=same_points)
