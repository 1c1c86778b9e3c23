r"""``sinkhorn(..., method="multiscale")``: coarse-to-fine Sinkhorn with truncated kernels.

The exact solver (:mod:`arraygen.sinkhorn`) evaluates all N M kernel entries at every
half-iteration. At small epsilon in low dimension most of them are below any useful
resolution: the plan :math:`P_{ij} = a_i b_j e^{(f_i + g_j - C_{ij})/\varepsilon}` is
concentrated within a few kernel widths :math:`\sqrt\varepsilon` of the transport map. This
module skips, with a bound, the cluster pairs that cannot matter (GeomLoss's
``backend="multiscale"``, Schmitzer 2016, is the model; the code is arraygen's own):

1. **Clusters.** Both clouds are reordered once into a nested kd-tree order (the order of
   :func:`arraygen.blocksparse.cluster_points`, split again inside each cluster) in which runs
   of :data:`FINE_BLOCK` points (the pair lists' clusters) and runs of a smaller power of two
   (the coarse clusters, about :data:`COARSE_POINTS` of them per cloud) are both spatial
   clusters. All the state of the fine level lives in that sorted order and is permuted back
   at the end.
2. **Coarse level.** The coarse clusters' weighted centroids with summed weights form a
   small problem, solved with the exact solver and epsilon-scaling (``scaling``, default 0.5)
   down to :math:`\varepsilon_c = \max(\varepsilon, c_{jump}\, \bar r^2)`, :math:`\bar r`
   the median coarse-cluster radius (below that scale the centroids cannot describe the
   plan). At most half of ``max_iter`` goes to this level (the annealing is shortened to fit).
3. **Extrapolation.** ``f`` on the fine points is one softmin against the coarse dual:
   :math:`f_i = -\varepsilon_c \log\sum_B \exp(\log b_B + g_B/\varepsilon_c -
   \lVert x_i - y_B\rVert^2/\varepsilon_c)` (an N x K pass).
4. **Fine level.** Epsilon-scaling continues at full resolution from :math:`\varepsilon_c`
   to :math:`\varepsilon` (when :math:`\varepsilon_c > \varepsilon`), then plain (or
   over-relaxed, ``relaxation``) iterations run to ``tol``. Every half-iteration uses the
   block-sparse kernels with a pair list (:func:`arraygen.blocksparse.block_pairs`) built from
   the current potentials as log-weights: ``log a + f/eps`` for the ``g`` update and
   ``log b + g/eps`` for the ``f`` update. Pair lists are rebuilt once per epsilon level
   (and when an exact check asks for a wider truncation), never inside the iterations.
5. **Exact check.** When the in-loop estimate reaches ``tol``, ONE dense pass over all N M
   pairs (float64 where the namespace has it) measures the marginal error of the returned
   plan and its cost. ``converged`` is True only if that exact error is <= ``tol``; when it
   is not, the truncation radius grows by :data:`TRUNCATE_STEP` (pair lists rebuilt from the
   current potentials) and the iterations continue, at most :data:`MAX_EXACT_CHECKS` times.

Truncation radius. ``truncate`` is in kernel widths: a cluster pair is skipped when its
largest possible log-plan entry is below the row's smallest possible largest entry by more than
``truncate**2``. The default is :math:`\sqrt{\log(16 / \mathrm{tol})}` (about 3.2 for
``tol = 1e-3``) and at least :data:`MIN_TRUNCATE`. Each pair list reports ``mass_bound``, a
rigorous bound on every row's skipped / kept kernel mass for the potentials it was built
from; it is recorded, not used to stop: the exact check decides.

What was truncated is recorded in ``SinkhornResult.info`` (a dict, :data:`INFO_KEYS`):
``method``, ``block`` (points per pair-list cluster of x and y), ``clusters`` (Kx, Ky),
``coarse_block``, ``coarse_clusters`` (the coarse level's sizes and centroid counts),
``coarse_iter``, ``coarse_epsilon``, ``coarse_marginal_error``, ``levels`` (one dict per pair
list pair: ``epsilon``, ``truncate``, ``fraction_rows`` / ``fraction_cols`` (point pairs
computed / (N M) by the ``f`` and ``g`` updates), ``mass_bound_rows`` / ``mass_bound_cols``
and ``iterations`` run with it), ``fraction`` (point pairs computed over all full-resolution
half-iterations / those of the dense solver, the exact checks excluded) and
``exact_passes``.

``method="auto"`` (:func:`choose_method`) picks ``"multiscale"`` when all of: NumPy / torch /
CuPy-like input that is not a Dask array, d <= :data:`AUTO_MAX_D`, N M >=
:data:`AUTO_MIN_PAIRS`, and the kernel is narrow against the clouds:
:math:`\varepsilon \le D^2 / \mathrm{AUTO\_MIN\_RATIO}` with :math:`D^2` the squared diameter of
the bounding box (then a truncated row keeps a small share of the other cloud). Otherwise
``"exact"``.
"""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np

from . import _array_api as aa
from . import _dask, tiled
from ._kernels.blocksparse import DEFAULT_BLOCK_GPU
from .blocksparse import BlockPairs, Clusters, _clusters_of_order, _kd_sorted, _pairs
from .sinkhorn import (
    _METHODS,
    DEFAULT_TOL,
    ConvergenceWarning,
    SinkhornResult,
    _cast,
    _kernel_for,
    _Problem,
    _Relaxation,
    _Run,
    _solve,
    _stop_reason,
)

logger = logging.getLogger("arraygen")

#: Methods accepted by ``sinkhorn(method=)``.
METHODS = _METHODS

#: ``method="auto"``: multiscale only for d up to this, N M at least this, and
#: epsilon <= (squared diameter) / AUTO_MIN_RATIO. Measured on 2 CPU cores (unit cube, d = 3,
#: epsilon = 0.01, tol = 1e-3, float32): N = M = 2048 exact 0.09-0.29 s vs multiscale 0.69 s;
#: N = M = 4096 exact 0.28-0.90 s vs multiscale 0.14 s.
AUTO_MAX_D = 3
AUTO_MIN_PAIRS = 1 << 24
AUTO_MIN_RATIO = 100.0

#: Points per cluster of the pair lists (truncated kernels): host arrays, CUDA arrays; small
#: clouds use fewer (a power of two), keeping at least MIN_FINE_CLUSTERS clusters.
FINE_BLOCK = 64
FINE_BLOCK_GPU = DEFAULT_BLOCK_GPU
MIN_FINE_CLUSTERS = 64

#: The coarse level has about COARSE_POINTS centroids per cloud: clusters of a power-of-two
#: size, at least MIN_COARSE_BLOCK points. The kd order is nested, so the clusters of both
#: sizes are spatial clusters of one order.
COARSE_POINTS = 3000
MIN_COARSE_BLOCK = 4

#: Coarse-to-fine jump: the coarse level anneals down to JUMP_FACTOR * (median radius)^2.
JUMP_FACTOR = 1.0

#: Truncation radius: default sqrt(log(TRUNCATE_MASS / tol)), at least MIN_TRUNCATE; grown by
#: TRUNCATE_STEP when an exact check fails.
TRUNCATE_MASS = 16.0
MIN_TRUNCATE = 2.5
TRUNCATE_STEP = 0.75

#: Exact dense checks at most (each costs about two dense half-iterations).
MAX_EXACT_CHECKS = 4

#: On a GPU the exact check evaluates its kernels in the points' dtype (float32 there: float64
#: exponentials run at a small fraction of the float32 rate, 20 s instead of 0.7 s at
#: N = M = 1e6) when ``tol`` is at least this and the rounding of the exponents is small
#: against it (:data:`EXACT_NARROW_SHARE`); its O(N) sums stay float64.
EXACT_NARROW_MIN_TOL = 1e-5
#: The narrow exact check needs ``eps_dtype * scale / epsilon <= EXACT_NARROW_SHARE * tol``:
#: the exponents ``log b + g / epsilon - C / epsilon`` reach ``scale / epsilon`` (``scale`` the
#: squared diameter of the clouds' box), so each row mass carries a relative rounding error of
#: about ``eps_dtype * scale / epsilon``, and so does the marginal L1 error it measures (unit
#: cube, epsilon = 0.01: 3.6e-5 against tol 1e-3).
EXACT_NARROW_SHARE = 0.05

#: Keys of ``SinkhornResult.info`` for ``method="multiscale"``.
INFO_KEYS = ("method", "block", "clusters", "coarse_block", "coarse_clusters", "coarse_iter",
             "coarse_epsilon", "coarse_marginal_error", "levels", "fraction", "exact_passes",
             "exact_dtype")


# --------------------------------------------------------------------------------------------
# the choice
# --------------------------------------------------------------------------------------------

def choose_method(method: str, prob: _Problem, epsilon: float) -> str:
    """``"exact"`` or ``"multiscale"`` for a validated problem (``method`` already checked).

    ``"multiscale"`` asked for explicitly on Dask input is a ``ValueError`` naming ``method``.
    """
    if method == "exact":
        return "exact"
    lazy = _dask.any_dask(prob.x, prob.y)
    if method == "multiscale":
        if lazy:
            raise ValueError("`method` = 'multiscale' does not support Dask arrays (its "
                             "clustering needs the whole clouds); use method='exact'")
        return "multiscale"
    n, m, d = prob.x.shape[0], prob.y.shape[0], prob.x.shape[1]
    pays = (not lazy and d <= AUTO_MAX_D and n * m >= AUTO_MIN_PAIRS
            and epsilon * AUTO_MIN_RATIO <= prob.scale)
    return "multiscale" if pays else "exact"


def default_truncate(tol: float) -> float:
    """The default truncation radius (kernel widths) for a tolerance."""
    return max(MIN_TRUNCATE, math.sqrt(math.log(TRUNCATE_MASS / tol)))


def _pow2_floor(v: float) -> int:
    return 1 << max(0, math.floor(math.log2(max(1.0, v))))


def default_blocks(n: int, x) -> tuple[int, int]:
    """``(coarse, fine)`` points per cluster for a cloud of ``n`` points like ``x``."""
    coarse = max(MIN_COARSE_BLOCK, _pow2_floor(n / COARSE_POINTS))
    fine = FINE_BLOCK_GPU if aa.device_kind(x)[0] == "cuda" else FINE_BLOCK
    return coarse, min(fine, max(coarse, _pow2_floor(n / MIN_FINE_CLUSTERS)))


def _cluster_levels(xp, x, coarse: int, fine: int) -> tuple[Clusters, Clusters]:
    """The coarse and the fine clusters of ``x`` (N, d), in one nested kd order."""
    order = _kd_sorted(xp, x, max(coarse, fine), min(coarse, fine))
    return _clusters_of_order(xp, *order, coarse), _clusters_of_order(xp, *order, fine)


# --------------------------------------------------------------------------------------------
# the truncated kernel (sorted order)
# --------------------------------------------------------------------------------------------

def _entries(xp, pairs):
    """(row cluster, column cluster) of every pair of a CSR list, int64, on its device."""
    nnz = pairs.cols.shape[0]
    dev = aa.device(pairs.cols)
    at = xp.arange(nnz, dtype=xp.int64, device=dev)
    row = xp.searchsorted(xp.astype(pairs.offsets[1:], xp.int64), at, side="right")
    return xp.astype(row, xp.int64), xp.astype(pairs.cols, xp.int64)


def _sorted_unique(xp, keys):
    """The distinct values of a 1-D integer array, ascending."""
    keys = xp.sort(keys)
    if keys.shape[0] < 2:
        return keys
    new = xp.concat([xp.ones((1,), dtype=xp.bool, device=aa.device(keys)),
                     keys[1:] != keys[:-1]])
    return keys[new]


class _BlockKernel:
    """The two log-sum-exp reductions of :mod:`arraygen._sinkhorn_kernels` on pair lists.

    ``rows`` (the ``f`` update, x-clusters against y-clusters) and ``cols`` (the ``g``
    update) use pair lists built by :meth:`rebuild_cols` / :meth:`rebuild_rows` from the
    current potentials; :meth:`symmetrise` then gives both updates the union of the two
    lists (one the transpose of the other), so that the iterations are Sinkhorn's on one
    fixed sparse kernel and converge to its fixed point.
    """

    dense = False

    def __init__(self, xp, cx, cy, log_a, log_b, backend):
        self.xp, self.cx, self.cy, self.backend = xp, cx, cy, backend
        self.x, self.y = cx.points, cy.points
        self.log_a, self.log_b = log_a, log_b
        self.row_pairs = self.col_pairs = None
        self.truncate = None

    def rebuild_cols(self, f, eps: float, truncate: float):
        """Pair list of the ``g`` update from ``f`` (log-weights log a + f / eps)."""
        self.truncate = truncate
        self.col_pairs = _pairs(self.xp, self.cy, self.cx, 1.0 / eps, truncate,
                                self.log_a + f / eps)

    def rebuild_rows(self, g, eps: float, truncate: float):
        """Pair list of the ``f`` update from ``g`` (log-weights log b + g / eps)."""
        self.truncate = truncate
        self.row_pairs = _pairs(self.xp, self.cx, self.cy, 1.0 / eps, truncate,
                                self.log_b + g / eps)

    def symmetrise(self):
        """Both pair lists := their union (the cluster pairs either rule keeps), built where
        the lists live (one sort of the pair keys per list, no host round trip)."""
        xp = self.xp
        rows, cols = self.row_pairs, self.col_pairs
        kx, ky = self.cx.K, self.cy.K
        ra, rb = _entries(xp, rows)          # (x-cluster, y-cluster) of the row list
        cb, ca = _entries(xp, cols)          # (y-cluster, x-cluster) of the column list
        keys = _sorted_unique(xp, xp.concat([ra * ky + rb, ca * ky + cb]))
        a, b = keys // ky, keys % ky
        self.row_pairs = self._csr(a, b, self.cx, self.cy, rows)
        keys_t = xp.sort(b * kx + a)
        self.col_pairs = self._csr(keys_t // kx, keys_t % kx, self.cy, self.cx, cols)

    def _csr(self, r, c, cr, cc, like):
        """BlockPairs of the cluster pairs (r, c) sorted by (r, c); ``like``'s bound and
        radius."""
        xp = self.xp
        dev = aa.device(r)
        bounds = xp.arange(cr.K + 1, dtype=r.dtype, device=dev)
        offsets = xp.astype(xp.searchsorted(r, bounds, side="left"), xp.int32)
        computed = xp.sum(xp.take(cr.count, r) * xp.take(cc.count, c))
        fraction = float(aa.to_numpy(computed)) / (float(cr.n) * float(cc.n))
        return BlockPairs(offsets=offsets, cols=xp.astype(c, xp.int32), fraction=fraction,
                          mass_bound=like.mass_bound, truncate=like.truncate,
                          block_x=cr.block, block_y=cc.block, n=cr.n, m=cc.n)

    def rows(self, w, eps: float):
        return tiled._logsumexp(self.xp, self.x, self.y, w, beta=1.0 / eps,
                                backend=self.backend, pairs=self.row_pairs, xc=self.cx,
                                yc=self.cy)

    def cols(self, w, eps: float):
        return tiled._logsumexp(self.xp, self.y, self.x, w, beta=1.0 / eps,
                                backend=self.backend, pairs=self.col_pairs, xc=self.cy,
                                yc=self.cx)


# --------------------------------------------------------------------------------------------
# the exact pass (sorted order, float64 where available)
# --------------------------------------------------------------------------------------------

def _on_gpu(x) -> bool:
    return aa.device_kind(x)[0] != "cpu"


class _ExactPass:
    """Marginal error, transport cost and dual value of the plan (f, g), over all N M pairs.

    Two dense passes: a softmax average of ``[y, |y|^2]`` over the rows (its log-sum-exp gives
    the row marginals, its averages the cost) and a log-sum-exp over the columns.
    """

    def __init__(self, prob: _Problem, eps: float, tol: float | None):
        xp = prob.xp
        self.xp, self.eps = xp, eps
        wide = getattr(xp, "float64", prob.x.dtype)
        rounding = float(np.finfo(aa.dtype_name(prob.x.dtype)).eps) * prob.scale / eps
        narrow = (tol is not None and tol >= EXACT_NARROW_MIN_TOL and _on_gpu(prob.x)
                  and rounding <= EXACT_NARROW_SHARE * tol)
        self.wide, self.kdt = wide, (prob.x.dtype if narrow else wide)
        self.x = xp.astype(prob.x, wide)
        xk, yk = xp.astype(prob.x, self.kdt), xp.astype(prob.y, self.kdt)
        self.log_a, self.log_b = xp.astype(prob.log_a, wide), xp.astype(prob.log_b, wide)
        self.kernel = _kernel_for(xp, xk, yk, prob.scale, prob.backend, epsilon=eps)
        self.v = xp.concat([yk, xp.sum(yk * yk, axis=1)[:, None]], axis=1)
        self.zero = xp.zeros((), dtype=wide, device=aa.device(self.x))
        self.passes = 0

    def _mass(self, log_w, log_scale):
        xp = self.xp
        return xp.where(log_w > -math.inf, xp.exp(log_w + log_scale), self.zero)

    def __call__(self, f, g) -> tuple[float, float, float]:
        xp, eps, zero, wide, kdt = self.xp, self.eps, self.zero, self.wide, self.kdt
        f, g = xp.astype(f, wide), xp.astype(g, wide)
        d = self.x.shape[1]
        out, lse = self.kernel.row_average(self.v, xp.astype(self.log_b + g / eps, kdt), eps)
        out, lse = xp.astype(out, wide), xp.astype(lse, wide)
        row_mass = self._mass(self.log_a, f / eps + lse)
        col_lse = xp.astype(self.kernel.cols(xp.astype(self.log_a + f / eps, kdt), eps), wide)
        col_mass = self._mass(self.log_b, g / eps + col_lse)
        a, b = self._mass(self.log_a, zero), self._mass(self.log_b, zero)
        m1, m2 = out[:, :d], out[:, d]
        spread = xp.maximum(m2 - xp.sum(m1 * m1, axis=1), zero)
        row_cost = xp.sum((self.x - m1) ** 2, axis=1) + spread
        totals = xp.stack([xp.sum(xp.abs(row_mass - a)) + xp.sum(xp.abs(col_mass - b)),
                           xp.sum(row_mass * row_cost),
                           xp.sum(a * f) + xp.sum(b * g)])
        err, cost, dual = (float(t) for t in aa.to_numpy(totals))
        self.passes += 1
        return err, cost, dual


# --------------------------------------------------------------------------------------------
# the fine-level run
# --------------------------------------------------------------------------------------------

class _FineRun(_Run):
    """A :class:`arraygen.sinkhorn._Run` on the sorted problem whose kernel is truncated."""

    def __init__(self, sprob: _Problem, exact: _ExactPass, eps, tol, max_iter, check_every,
                 callback, bar, unsort):
        super().__init__(sprob, eps, tol, max_iter, check_every, None, bar)
        self.exact = exact
        self.user_callback, self.unsort = callback, unsort
        self.levels: list[dict] = []
        self.pairs_computed = 0.0     # point pairs / (N M), summed over half-iterations
        self.half_iters = 0
        self.last_exact = None        # (f, g, err, cost, dual)

    # -- bookkeeping of what the kernels computed
    def _count(self, side: str):
        k = self.prob.kernel
        pairs = k.row_pairs if side == "rows" else k.col_pairs
        self.pairs_computed += pairs.fraction
        self.half_iters += 1
        if self.levels:
            self.levels[-1]["iterations"] += 0.5

    def g_of(self, f, eps):
        self._count("cols")
        return super().g_of(f, eps)

    def f_of(self, g, eps):
        self._count("rows")
        return super().f_of(g, eps)

    def level(self, f, eps: float, truncate: float):
        """New pair lists at ``eps``: the ``g`` update's from ``f``, then ``g`` itself, then
        the ``f`` update's from ``g``. Returns ``g`` (one truncated half-iteration)."""
        k = self.prob.kernel
        k.rebuild_cols(f, eps, truncate)
        self.levels.append({"epsilon": eps, "truncate": truncate,
                            "fraction_cols": k.col_pairs.fraction,
                            "mass_bound_cols": k.col_pairs.mass_bound,
                            "fraction_rows": None, "mass_bound_rows": None,
                            "iterations": 0.0})
        g = self.g_of(f, eps)
        k.rebuild_rows(g, eps, truncate)
        k.symmetrise()
        self.levels[-1].update(fraction_rows=k.row_pairs.fraction,
                               mass_bound_rows=k.row_pairs.mass_bound,
                               fraction_cols=k.col_pairs.fraction)
        logger.debug("sinkhorn multiscale: eps %.3g truncate %.2f fractions %.3g / %.3g mass "
                     "bounds %.2g / %.2g", eps, truncate, k.row_pairs.fraction,
                     k.col_pairs.fraction, k.row_pairs.mass_bound, k.col_pairs.mass_bound)
        return g

    def exact_error(self, f, g) -> float:
        err, cost, dual = self.exact(f, g)
        self.last_exact = (f, g, err, cost, dual)
        return err

    def report(self, err: float, f, g) -> bool:
        """Progress bar and callback (potentials in the user's order); True: stop."""
        if self.bar is not None:
            self.bar.set_postfix(err=f"{err:.2e}")
        if self.user_callback is None:
            return False
        return bool(self.user_callback({"iteration": self.n_iter, "epsilon": self.eps,
                                        "marginal_error": err, "f": self.unsort[0](f),
                                        "g": self.unsort[1](g)}))


def _iterate(run: _FineRun, relax: _Relaxation, truncate: float) -> str:
    """Truncated iterations at the final epsilon to ``tol`` (checked exactly); leaves
    (f, g, err) on ``run``; returns '' if converged, else why it stopped."""
    eps = run.eps
    f = run.f
    g = g_t = run.level(f, eps, truncate)
    run.step(eps)
    inner_tol, checks = run.tol, 0
    best, best_at = math.inf, run.n_iter
    while True:
        f_t = run.f_of(g, eps)
        if run.n_iter % run.check_every == 0 or run.n_iter >= run.max_iter:
            err = run.error(f, f_t, g, g_t, relax.omega)
            run.errors.append(err)
            stopped = run.report(err, f, g)
            if err <= inner_tol:
                run.f, run.g, run.err = f, g, run.exact_error(f, g)
                if run.err <= run.tol:
                    return ""
                checks += 1
                if checks >= MAX_EXACT_CHECKS:
                    return (f"{checks} exact checks found the error above tol (the truncation "
                            f"radius reached {truncate:.2f} kernel widths)")
                # the exact error has the truncation's share (the in-loop estimate has not):
                # widen it and rebuild both pair lists from the current potentials
                if run.err - err > 0.25 * run.tol and run.n_iter < run.max_iter:
                    truncate += TRUNCATE_STEP
                    f = relax.mix(f, f_t)
                    g = g_t = run.level(f, eps, truncate)
                    run.step(eps)
                    continue
                inner_tol = err * max(0.1, 0.5 * run.tol / run.err)
            if relax.diverged(err):
                f = relax.restart(len(run.errors))
                g = g_t = run.g_of(f, eps)
                run.step(eps)
                continue
            reason, best, best_at = _stop_reason(run, err, stopped, best, best_at)
            if reason:
                break
            relax.observe(run.errors, f, run.n_iter)
        if run.n_iter >= run.max_iter:
            reason = f"max_iter = {run.max_iter} was reached"
            break
        f = relax.mix(f, f_t)
        g_t = run.g_of(f, eps)
        g = relax.mix(g, g_t)
        run.step(eps)
    run.f, run.g = f, g
    return reason


# --------------------------------------------------------------------------------------------
# the solve
# --------------------------------------------------------------------------------------------

def _cluster_sums(xp, values, block: int, k: int):
    """Per-cluster sums of (n,) or (n, p) values in sorted order: (k,) or (k, p)."""
    n = values.shape[0]
    pad = k * block - n
    if pad:
        shape = (pad,) + tuple(values.shape[1:])
        values = xp.concat([values, xp.zeros(shape, dtype=values.dtype,
                                             device=aa.device(values))], axis=0)
    return xp.sum(xp.reshape(values, (k, block) + tuple(values.shape[1:])), axis=1)


def _coarse_cloud(xp, c, log_w):
    """Weighted centroids and log of the summed weights of each cluster (compute dtype)."""
    dt = c.points.dtype
    w = xp.exp(log_w)
    mass = _cluster_sums(xp, w, c.block, c.K)
    moment = _cluster_sums(xp, w[:, None] * c.points, c.block, c.K)
    centers = xp.astype(c.centers, dt)
    pos = mass > 0
    safe = xp.where(pos, mass, xp.ones((), dtype=dt, device=aa.device(mass)))
    pts = xp.where(pos[:, None], moment / safe[:, None], centers)
    ninf = xp.full((), -math.inf, dtype=dt, device=aa.device(mass))
    return pts, xp.where(pos, xp.log(safe), ninf)


def _median_radius(xp, cx, cy) -> float:
    radii = np.concatenate([aa.to_numpy(cx.radii), aa.to_numpy(cy.radii)])
    return float(np.median(radii))


def _softmin(xp, x, y, log_w, pot, eps, backend):
    """-eps log sum_j exp(log_w_j + pot_j / eps - |x_i - y_j|^2 / eps): (N,), dense."""
    return -eps * tiled._logsumexp(xp, x, y, log_w + pot / eps, beta=1.0 / eps,
                                   backend=backend)


def solve(prob: _Problem, *, epsilon: float, max_iter: int, tol: float | None,
          scaling: float | None, relaxation, check_every: int, progress: bool, callback,
          f0=None, truncate: float | None = None, block: int | None = None,
          stacklevel: int = 2, **_unused) -> SinkhornResult:
    """Multiscale solve of one validated problem (user order in and out); see module doc."""
    xp = prob.xp
    dt = prob.x.dtype
    if tol is None:
        tol = DEFAULT_TOL.get(aa.dtype_name(dt), 1e-4)
    truncate = default_truncate(tol) if truncate is None else float(truncate)
    n, m = prob.x.shape[0], prob.y.shape[0]
    (bcx, bx), (bcy, by) = default_blocks(n, prob.x), default_blocks(m, prob.y)
    if block is not None:
        bx = by = block
    ccx, cx = _cluster_levels(xp, prob.x, bcx, bx)
    ccy, cy = _cluster_levels(xp, prob.y, bcy, by)
    log_a = xp.take(prob.log_a, cx.perm, axis=0)
    log_b = xp.take(prob.log_b, cy.perm, axis=0)
    kernel = _BlockKernel(xp, cx, cy, log_a, log_b, prob.backend)
    sprob = _Problem(xp, cx.points, cy.points, prob.shift, log_a, log_b, prob.scale,
                     prob.out_dtype, prob.backend, kernel)
    unsort = (lambda v: xp.take(v, cx.inverse, axis=0),
              lambda v: xp.take(v, cy.inverse, axis=0))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_iter, desc="sinkhorn (multiscale)", leave=False)
    run = _FineRun(sprob, _ExactPass(sprob, epsilon, tol), epsilon, tol, max_iter, check_every,
                   callback, bar, unsort)
    s = 0.5 if scaling is None else scaling
    info = {"method": "multiscale", "block": (bx, by), "clusters": (cx.K, cy.K),
            "coarse_block": (bcx, bcy), "coarse_clusters": (ccx.K, ccy.K),
            "coarse_iter": 0, "coarse_epsilon": None, "coarse_marginal_error": None}

    if f0 is not None:
        f = xp.take(xp.astype(f0, dt), cx.perm, axis=0)
        eps_c = epsilon
    elif max_iter >= 2:
        eps_c = max(epsilon, JUMP_FACTOR * _median_radius(xp, ccx, ccy) ** 2)
        f, coarse = _coarse_start(prob, ccx, ccy, log_a, log_b, eps_c, tol, max_iter // 2, s,
                                  relaxation, check_every)
        run.epsilons = list(coarse.epsilons)
        info.update(coarse_iter=coarse.n_iter, coarse_epsilon=eps_c,
                    coarse_marginal_error=coarse.marginal_error)
    else:
        f, eps_c = xp.zeros((n,), dtype=dt, device=aa.device(prob.x)), epsilon
    # fine epsilon-scaling from eps_c down to epsilon, one pair list per level
    eps_k = eps_c * s
    while eps_k > epsilon and run.n_iter < max_iter:
        g = run.level(f, eps_k, truncate)
        f = run.f_of(g, eps_k)
        run.step(eps_k)
        eps_k *= s
    run.f = f
    relax = _Relaxation(relaxation, 1.0, check_every, f, len(run.errors))
    reason = _iterate(run, relax, truncate) if run.n_iter < max_iter else (
        f"max_iter = {max_iter} was reached before the final epsilon")
    if run.g is None:
        run.g = run.level(run.f, epsilon, truncate)
    last = run.last_exact
    if last is None or last[0] is not run.f or last[1] is not run.g:
        run.exact_error(run.f, run.g)
    if bar is not None:
        bar.close()
    f, g, err, cost, dual = run.last_exact
    info.update(levels=run.levels, exact_passes=run.exact.passes,
                exact_dtype=aa.dtype_name(run.exact.kdt),
                fraction=run.pairs_computed / max(1, run.half_iters))
    if reason:
        warnings.warn(
            f"sinkhorn (multiscale) did not converge: marginal L1 error {err:.3g} > tol "
            f"{tol:.3g} after {run.n_iter} iterations ({reason}); epsilon = {epsilon:.3g}, "
            f"dtype {dt}. Try a larger max_iter or method='exact'.", ConvergenceWarning,
            stacklevel=stacklevel)
    logger.debug("sinkhorn multiscale: %d iterations, exact error %.3g, converged %s, "
                 "fraction %.3g", run.n_iter, err, not reason, info["fraction"])
    fu, gu = unsort[0](f), unsort[1](g)
    return SinkhornResult(
        f=_cast(xp, fu, prob.out_dtype), g=_cast(xp, gu, prob.out_dtype), cost=cost,
        n_iter=run.n_iter, converged=not reason, marginal_error=err, epsilon=epsilon,
        errors=run.errors, epsilons=run.epsilons, dual_value=dual, relaxation=relax.omega,
        _x=prob.x, _y=prob.y, _shift=prob.shift, _log_a=prob.log_a, _log_b=prob.log_b,
        _fc=fu, _gc=gu, _out_dtype=prob.out_dtype, _kernel=prob.kernel, info=info)


def _coarse_start(prob, cx, cy, log_a, log_b, eps_c, tol, budget, scaling, relaxation,
                  check_every):
    """Solve the centroid problem at ``eps_c`` in at most ``budget`` iterations (annealing
    stages included: at most half of them); extrapolate ``f`` to the fine points."""
    xp = prob.xp
    px, la_c = _coarse_cloud(xp, cx, log_a)
    py, lb_c = _coarse_cloud(xp, cy, log_b)
    coarse = _Problem(xp, px, py, prob.shift, la_c, lb_c, prob.scale, prob.out_dtype,
                      prob.backend, _kernel_for(xp, px, py, prob.scale, prob.backend,
                                                epsilon=eps_c))
    stages = budget // 2
    if prob.scale > eps_c and math.log(eps_c / prob.scale) / math.log(scaling) > stages:
        scaling = (eps_c / prob.scale) ** (1.0 / stages) * (1.0 - 1e-9) if stages else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = _solve(coarse, epsilon=eps_c, max_iter=budget, tol=tol, scaling=scaling,
                     relaxation=relaxation, mixed_precision=False, check_every=check_every,
                     progress=False, callback=None)
    f = _softmin(xp, cx.points, py, lb_c, res._gc, eps_c, prob.backend)
    return f, res



__all__: list[str] = []
