r"""Diffusion maps (Coifman & Lafon 2006), matrix-free on the tiled Gaussian kernel.

Operator. For points :math:`x_1..x_N` (rows of ``X``), :math:`K_{ij} = \exp(-|x_i-x_j|^2/
\varepsilon)` is applied through :func:`arraygen.tiled.kernel_matvec` (``beta = 1/epsilon``),
never as an N x N array. The alpha-normalisation is

.. math::

    D = K\mathbf 1,\quad w = D^{-\alpha},\quad D_\alpha = w \odot (K w),\quad
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
* ``"median"``: the median of :math:`|x_i - x_j|^2` over the pairs :math:`i < j` of at most
  ``median_points`` (2000) points (all points when N is at most that; otherwise a fixed
  pseudo-random subset from a fixed Philox stream, so ``epsilon_`` is reproducible). If that median is
  zero (more than half of the pairs coincide) it is floored, with a warning, at the median of
  the nonzero squared distances; data whose points all coincide raise ``ValueError``;
* ``"knn"``: self-tuning kernel (Zelnik-Manor & Perona) :math:`K_{ij} =
  \exp(-|x_i-x_j|^2/(\sigma_i\sigma_j))` with :math:`\sigma_i` the distance from :math:`x_i`
  to its ``n_neighbors``-th nearest point of the training set, the point itself included
  (so a new point equal to a training point gets the same :math:`\sigma`). Computed in row
  blocks (never N x N). ``epsilon_`` is then the (N,) array :math:`\sigma_i^2`.

Eigensolvers (``eigensolver``): ``"arpack"`` (SciPy ``eigsh`` on a ``LinearOperator``, host),
``"cupy"`` (``cupyx.scipy.sparse.linalg.eigsh``, CuPy input), ``"lanczos"``
(:func:`arraygen.linalg.eigsh`, any namespace and device, O(N ncv) memory), ``"dense"`` (forms
M; small N only). ``"auto"``: dense for N <= 64, else arpack for NumPy, cupy for CuPy, lanczos
for everything else (torch CPU/CUDA, array_api_strict).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from typing import Any

import numpy as np

from . import _array_api as aa
from . import linalg as _linalg
from . import random as _random
from ._kernels.tiled import DIRECT_MAX_D
from .tiled import kernel_matvec, kernel_softmax_matvec

__all__ = ["DiffusionMap", "DoobTransform"]

logger = logging.getLogger("arraygen")

EIGENSOLVERS = ("auto", "arpack", "cupy", "lanczos", "dense")
_DENSE_MAX_N = 64
_DENSE_LIMIT = 20000
# Fixed stream of the median-rule subsample; a constant nobody passes as `rng` (seed 0 would
# pick exactly the smallest-parameter points of data generated with rng=0).
_MEDIAN_SEED = 0x9E3779B97F4A7C15


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------

def _check_points(xp, x, name: str, *, min_points: int = 1):
    if x.ndim != 2:
        raise ValueError(f"`{name}` must be 2-D (points x dimensions); got shape "
                         f"{tuple(x.shape)}")
    if x.shape[0] < min_points:
        raise ValueError(f"`{name}` must contain at least {min_points} points; got shape "
                         f"{tuple(x.shape)}")
    if x.shape[1] < 1:
        raise ValueError(f"`{name}` must have at least one column; got shape {tuple(x.shape)}")
    x, out_dtype = aa.as_float_array(xp, x, name)
    finite = xp.isfinite(x)
    if not bool(xp.all(finite)):
        bad = int(xp.sum(xp.astype(~finite, xp.int64)))
        raise ValueError(f"`{name}` contains {bad} non-finite values (NaN or inf)")
    return x, out_dtype


def _validate_options(n_components, alpha, epsilon, t, eigensolver, tol, n_neighbors):
    if isinstance(n_components, bool) or not isinstance(n_components, (int, np.integer)):
        raise TypeError(f"`n_components` must be an integer; got {n_components!r}")
    if n_components < 1:
        raise ValueError(f"`n_components` must be >= 1; got {n_components}")
    alpha = aa.finite_scalar(alpha, "alpha")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"`alpha` must be in [0, 1]; got {alpha}")
    if isinstance(epsilon, str):
        if epsilon not in ("median", "knn"):
            raise ValueError(f"`epsilon` must be 'median', 'knn' or a positive number; got "
                             f"{epsilon!r}")
    else:
        aa.finite_scalar(epsilon, "epsilon", positive=True)
    aa.finite_scalar(t, "t", nonnegative=True)
    if eigensolver not in EIGENSOLVERS:
        raise ValueError(f"`eigensolver` must be one of {EIGENSOLVERS}; got {eigensolver!r}")
    if tol is not None:
        aa.finite_scalar(tol, "tol", positive=True)
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, (int, np.integer)) \
            or n_neighbors < 1:
        raise ValueError(f"`n_neighbors` must be a positive integer; got {n_neighbors!r}")


# --------------------------------------------------------------------------------------------
# bandwidths
# --------------------------------------------------------------------------------------------



def _block_sqdist(xp, xb, y):
    """(rows, M) squared distances: direct differences for small d, law of cosines otherwise."""
    if xb.shape[1] <= DIRECT_MAX_D:
        acc = None
        for k in range(xb.shape[1]):
            diff = xb[:, k:k + 1] - y[:, k][None, :]
            acc = diff * diff if acc is None else acc + diff * diff
        return acc
    xx = xp.sum(xb * xb, axis=1)
    yy = xp.sum(y * y, axis=1)
    d2 = xx[:, None] + yy[None, :] - 2.0 * xp.matmul(xb, xp.matrix_transpose(y))
    return xp.maximum(d2, xp.zeros((), dtype=d2.dtype, device=aa.device(d2)))


def _total_variance(xp, xc) -> float:
    """Mean squared distance to the mean (``xc`` is centred); 0 iff all points coincide."""
    return float(xp.sum(xc * xc)) / xc.shape[0]


def _median_epsilon(xp, xc, max_points: int) -> float:
    """Median of |x_i - x_j|^2 over pairs i < j of (a fixed subsample of) the centred points."""
    n = xc.shape[0]
    dev = aa.device(xc)
    var = _total_variance(xp, xc)
    if var == 0.0:
        raise ValueError(f"`X`: all {n} points coincide (zero variance); a diffusion map needs "
                         "at least two distinct points")
    if n > max_points:
        u = _random.uniform(_random.Key(_MEDIAN_SEED), (n,), dtype=xp.float64, xp=xp,
                            device=dev)
        idx = xp.argsort(u)[:max_points]
        xs = xp.take(xc, idx, axis=0)
    else:
        xs = xc
    m = xs.shape[0]
    d2 = _block_sqdist(xp, xs, xs)
    ar = xp.arange(m, device=dev)
    pairs = d2[ar[:, None] < ar[None, :]]
    vals = xp.sort(pairs)
    count = vals.shape[0]
    med = 0.5 * (float(vals[(count - 1) // 2]) + float(vals[count // 2]))
    if med > 0.0:
        return med
    positive = vals[vals > 0]
    floor = (float(xp.sort(positive)[positive.shape[0] // 2]) if positive.shape[0]
             else 2.0 * var)
    warnings.warn(f"DiffusionMap: the median squared pairwise distance is 0 (most points "
                  f"coincide); using the floor epsilon = {floor:.6g} (median of the nonzero "
                  "squared distances)", UserWarning, stacklevel=4)
    return floor


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


def _knn_sigma(xp, xq, xt, k: int):
    """Distance from each row of ``xq`` to its k-th nearest row of ``xt`` (self included)."""
    nq, nt = xq.shape[0], xt.shape[0]
    budget = (1 << 26) if aa.device_kind(xq)[0] == "cuda" else (1 << 22)
    rows = max(1, min(nq, budget // max(nt, 1)))
    parts = []
    for i0 in range(0, nq, rows):
        d2 = _block_sqdist(xp, xq[i0:i0 + rows, :], xt)
        parts.append(_kth_smallest(xp, d2, k))
    kth = parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)
    return xp.sqrt(kth)


# --------------------------------------------------------------------------------------------
# eigenpairs of diag(r) K diag(r)
# --------------------------------------------------------------------------------------------

class _Kernel:
    """K (with optional per-point inverse bandwidths) on the centred training points.

    With ``work_dtype`` (float32 for float64 data) the tiled kernel runs in that dtype and
    its results are promoted back; everything else stays in the data's dtype.
    """

    def __init__(self, xp, x, beta: float, inv_bw, backend, work_dtype=None):
        self.xp, self.beta, self.backend = xp, beta, backend
        self.dtype = x.dtype
        self.work = x.dtype if work_dtype is None else work_dtype
        self.x = self._cast(x)
        self.inv_bw = None if inv_bw is None else self._cast(inv_bw)
        self.n_calls = 0

    def _cast(self, a):
        if a is None or a.dtype == self.work:
            return a
        return self.xp.astype(a, self.work)

    def __call__(self, v, *, row=None, col=None, x=None, x_inv_bw=None):
        """``r_i sum_j K(x_i, x_j) c_j v_j`` for the training points (or rows ``x``)."""
        self.n_calls += 1
        c = self._cast
        out = kernel_matvec(self.x if x is None else c(x), self.x, c(v), beta=self.beta,
                            row_scale=c(row), col_scale=c(col),
                            x_bandwidth=self.inv_bw if x is None else c(x_inv_bw),
                            y_bandwidth=self.inv_bw, backend=self.backend)
        return out if out.dtype == self.dtype else self.xp.astype(out, self.dtype)


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
    return min(n - 1, max(2 * k + 6, 20))


def _solve(kern: _Kernel, rscale, k: int, solver: str, tol, gen, xp, block_size: int = 1):
    """Top-k eigenpairs of M = diag(rscale) K diag(rscale): (lam desc, phi (N, k), info)."""
    n = rscale.shape[0]
    dev, dtype = aa.device(rscale), rscale.dtype

    def op(v):
        return kern(v, row=rscale, col=rscale)

    if k > n or (k == n and solver != "dense"):
        raise ValueError(f"`n_components` + 1 = {k} eigenpairs of {n} points need "
                         f"eigensolver='dense' (iterative solvers need fewer than N)")
    tol_eff = (1e-8 if dtype == xp.float64 else 1e-5) if tol is None else float(tol)
    converged = True
    resid = None
    if solver == "dense":
        if n > _DENSE_LIMIT:
            raise ValueError(f"`eigensolver`='dense' forms the N x N matrix; N = {n} is above "
                             f"{_DENSE_LIMIT}: use 'auto', 'arpack', 'lanczos' or 'cupy'")
        mat = op(xp.eye(n, dtype=dtype, device=dev))
        mat = 0.5 * (mat + xp.matrix_transpose(mat))
        w, v = xp.linalg.eigh(mat)
        idx = xp.arange(n - 1, n - 1 - k, -1, device=dev)
        lam, phi = xp.take(w, idx), xp.take(v, idx, axis=1)
    elif solver == "lanczos":
        lam, phi, info = _linalg.eigsh(op, k, n=n, xp=xp, device=dev, dtype=dtype, tol=tol_eff,
                                       rng=gen, block_size=block_size, matmat=True)
        converged, resid = info.converged, info.residuals
    elif solver == "arpack":
        lam, phi, converged = _arpack(op, n, k, tol_eff, gen, xp, dev, dtype)
    else:  # cupy
        lam, phi = _cupy_eigsh(op, n, k, tol_eff, gen, xp, dev, dtype)
    if resid is None:
        resid = xp.linalg.vector_norm(op(phi) - phi * lam[None, :], axis=0)
    if solver == "cupy":
        # cupyx stops silently at maxiter: judge convergence by the true residuals (||M|| = 1)
        worst = float(xp.max(resid))
        converged = worst <= 10.0 * tol_eff
        if not converged:
            warnings.warn(f"DiffusionMap: cupyx eigsh did not converge (largest residual "
                          f"{worst:.3g} > 10 * tol = {10.0 * tol_eff:.3g})", RuntimeWarning,
                          stacklevel=3)
    return lam, phi, resid, converged


def _arpack(op, n, k, tol, gen, xp, dev, dtype):
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
        converged = True
    except ArpackNoConvergence:
        warnings.warn("DiffusionMap: ARPACK did not converge; falling back to the Array-API "
                      "Lanczos solver", RuntimeWarning, stacklevel=4)
        lam, phi, info = _linalg.eigsh(op, k, n=n, xp=xp, device=dev, dtype=dtype, tol=tol,
                                       rng=gen, matmat=True)
        return lam, phi, info.converged
    order = np.argsort(w)[::-1]
    lam = xp.asarray(np.ascontiguousarray(w[order]), dtype=dtype, device=dev)
    phi = xp.asarray(np.ascontiguousarray(v[:, order]), dtype=dtype, device=dev)
    return lam, phi, converged


def _cupy_eigsh(op, n, k, tol, gen, xp, dev, dtype):
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
    return w[order], v[:, order]


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

    See the module docstring for the operator, normalisations and bandwidth rules.

    Parameters
    ----------
    n_components : int
        Number of nontrivial diffusion coordinates (``n_components + 1`` eigenpairs).
    alpha : float in [0, 1]
        0: graph Laplacian normalisation, 1/2: Fokker-Planck, 1: Laplace-Beltrami (density
        removed).
    epsilon : "median", "knn" or float
        Kernel bandwidth: :math:`K = \exp(-|x-y|^2/\varepsilon)`.
    t : float >= 0
        Diffusion time of the embedding :math:`\lambda^t \psi`.
    eigensolver : {"auto", "arpack", "cupy", "lanczos", "dense"}
    tol : float, optional
        Eigensolver residual tolerance (default 1e-8 float64, 1e-5 float32); eigenvalue errors
        are about ``tol**2 / gap``.
    rng : int, Key or numpy.random.Generator, optional
        Random start vectors of the eigensolver.
    n_neighbors : int
        Neighbour rank of the ``"knn"`` bandwidth (default 7, the point itself counted).
    median_points : int
        Points used by the ``"median"`` rule (default 2000).
    block_size : int
        Vectors per kernel call in the ``"lanczos"`` solver (block Lanczos; larger blocks need
        fewer, wider kernel calls).
    kernel_dtype : None, "float32" or "float64"
        Dtype of the tiled kernel sums (default: the data's compute dtype). ``"float32"`` on
        float64 data runs the kernel (the cost) in float32 and keeps the normalisation and
        eigensolver in float64: eigenvalues stay within ~1e-7 of the float64 ones (swiss roll,
        N = 10k: 1.2e-8), residuals ~1e-7.
    backend : str, optional
        Kernel backend for :func:`arraygen.tiled.kernel_matvec`.

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
    stationary_ : (N,)
        :math:`\pi = D_\alpha / \sum D_\alpha`.
    degree_, weights_, degree_alpha_, rscale_ : (N,)
        :math:`D = K1`, :math:`w = D^{-\alpha}`, :math:`D_\alpha`, :math:`D_\alpha^{-1/2} w`.
    converged_ : bool
    n_kernel_calls_ : int
        Tiled kernel calls made by ``fit`` (each applies K to a block of vectors).

    Examples
    --------
    >>> from arraygen.datasets import swiss_roll
    >>> from arraygen.dmap import DiffusionMap
    >>> x, t = swiss_roll(1000, rng=0)
    >>> dm = DiffusionMap(n_components=4, rng=0).fit(x)
    >>> dm.embedding_.shape
    (1000, 4)
    """

    def __init__(self, n_components: int = 8, alpha: float = 0.5, epsilon: Any = "median",
                 t: float = 1, eigensolver: str = "auto", tol: float | None = None,
                 rng: Any = None, *, n_neighbors: int = 7, median_points: int = 2000,
                 block_size: int = 1, kernel_dtype: Any = None, backend: str | None = None):
        _validate_options(n_components, alpha, epsilon, t, eigensolver, tol, n_neighbors)
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
        self.backend = backend

    # ---------------------------------------------------------------------------------- fit
    def fit(self, X) -> DiffusionMap:
        """Fit on the points ``X`` (N, d); returns ``self``."""
        _validate_options(self.n_components, self.alpha, self.epsilon, self.t,
                          self.eigensolver, self.tol, self.n_neighbors)
        start = time.perf_counter()
        xp = aa.array_namespace(X=X)
        x, out_dtype = _check_points(xp, X, "X", min_points=2)
        n = x.shape[0]
        k = int(self.n_components) + 1
        if k > n:
            raise ValueError(f"`n_components` ({self.n_components}) must be smaller than the "
                             f"number of points N = {n}")
        self._xp, self._out_dtype = xp, out_dtype
        self.mean_ = xp.mean(x, axis=0)
        xc = x - self.mean_[None, :]
        self.n_features_in_ = x.shape[1]
        inv_bw = None
        if isinstance(self.epsilon, str) and self.epsilon == "median":
            eps = _median_epsilon(xp, xc, int(self.median_points))
            beta = 1.0 / eps
            self.epsilon_ = eps
        elif isinstance(self.epsilon, str):
            if self.n_neighbors > n:
                raise ValueError(f"`n_neighbors` ({self.n_neighbors}) must be at most the "
                                 f"number of points N = {n}")
            if _total_variance(xp, xc) == 0.0:
                raise ValueError(f"`X`: all {n} points coincide (zero variance); a diffusion "
                                 "map needs at least two distinct points")
            sigma = self._floor_sigma(xp, _knn_sigma(xp, xc, xc, int(self.n_neighbors)), xc)
            self.sigma_floor_ = float(xp.min(sigma))
            inv_bw = 1.0 / sigma
            beta = 1.0
            self.epsilon_ = xp.astype(sigma * sigma, out_dtype)
        else:
            if _total_variance(xp, xc) == 0.0:
                raise ValueError(f"`X`: all {n} points coincide (zero variance); a diffusion "
                                 "map needs at least two distinct points")
            self.epsilon_ = float(self.epsilon)
            beta = 1.0 / self.epsilon_
        self.beta_ = beta
        self.X_ = xc
        work = None
        if self.kernel_dtype is not None:
            work = self.kernel_dtype
            if isinstance(work, str):
                work = getattr(xp, work, None)
            if work not in (xp.float32, xp.float64):
                raise ValueError(f"`kernel_dtype` must be None, 'float32' or 'float64'; got "
                                 f"{self.kernel_dtype!r}")
        kern = _Kernel(xp, xc, beta, inv_bw, self.backend, work)
        self._kern = kern
        ones = xp.ones((n,), dtype=xc.dtype, device=aa.device(xc))
        deg = kern(ones)
        w = deg ** (-float(self.alpha))
        deg_alpha = w * kern(w)
        rscale = w / xp.sqrt(deg_alpha)
        self.degree_, self.weights_, self.degree_alpha_, self.rscale_ = deg, w, deg_alpha, rscale
        solver = (_auto_solver(xp, n) if self.eigensolver == "auto" else self.eigensolver)
        if solver == "cupy" and not aa.is_cupy_namespace(xp):
            raise ValueError(f"`eigensolver`='cupy' needs CuPy input; got {xp.__name__} arrays")
        self.eigensolver_ = solver
        self._gen = _random.as_key(self.rng)
        lam, phi, resid, converged = _solve(kern, rscale, k, solver, self.tol, self._gen, xp,
                                            int(self.block_size))
        self._set_spectrum(xp, lam, phi, resid, xp.sqrt(deg_alpha), float(self.t), converged,
                           out_dtype, "DiffusionMap")
        self.n_kernel_calls_ = kern.n_calls
        logger.info("DiffusionMap.fit: N=%d d=%d epsilon=%s solver=%s kernel calls=%d in %.3f s",
                    n, x.shape[1], "knn" if inv_bw is not None else f"{self.epsilon_:.4g}",
                    solver, kern.n_calls, time.perf_counter() - start)
        return self

    def fit_transform(self, X):
        """``fit(X).embedding_``: the (N, n_components) diffusion coordinates."""
        return self.fit(X).embedding_

    @staticmethod
    def _floor_sigma(xp, sigma, xc):
        floor = 1e-8 * math.sqrt(2.0 * _total_variance(xp, xc))
        small = int(xp.sum(xp.astype(sigma < floor, xp.int64)))
        if small:
            warnings.warn(f"DiffusionMap: {small} points have a zero k-NN distance (duplicates); "
                          f"their bandwidth is floored at {floor:.3g}", UserWarning, stacklevel=3)
            sigma = xp.maximum(sigma, xp.full_like(sigma, floor))
        return sigma

    def _check_fitted(self) -> None:
        if not hasattr(self, "X_"):
            raise ValueError("this DiffusionMap is not fitted yet; call fit(X) first")

    def _same_space(self, arr, name: str):
        """Validate an array against the fitted data: namespace and device."""
        aa.array_namespace(**{name: arr, "X_fit": self.X_})
        aa.check_same_device(**{name: arr, "X_fit": self.X_})

    # ---------------------------------------------------------------------------- transform
    def transform(self, X_new):
        r"""Nystrom extension of the diffusion coordinates to new points.

        .. math::

            \psi_k(x^*) = \frac{\sum_j K(x^*, x_j)\, w_j\, \psi_k(x_j)}
                               {\lambda_k \sum_j K(x^*, x_j)\, w_j},
            \qquad \mathrm{coords}_k(x^*) = \lambda_k^t\, \psi_k(x^*),

        computed as a kernel-softmax average (stable for points far from the data) or, for the
        ``"knn"`` bandwidth, with the new points' own :math:`\sigma(x^*)`. On the training
        points this reproduces ``embedding_`` (up to the eigensolver residual).

        Parameters
        ----------
        X_new : array, shape (N_new, d)

        Returns
        -------
        coords : array, shape (N_new, n_components)
        """
        self._check_fitted()
        xp = self._xp
        self._same_space(X_new, "X_new")
        xn, out_dtype = _check_points(xp, X_new, "X_new")
        if xn.shape[1] != self.n_features_in_:
            raise ValueError(f"`X_new` must have {self.n_features_in_} columns like the fitted "
                             f"`X` (shape {(self.X_.shape[0], self.n_features_in_)}); got shape "
                             f"{tuple(xn.shape)}")
        xn = xp.astype(xn, self.X_.dtype) if xn.dtype != self.X_.dtype else xn
        xn = xn - self.mean_[None, :]
        lam = self._lam_c[1:]
        psi = self._psi_c[:, 1:]
        if self._kern.inv_bw is None:
            avg, _ = kernel_softmax_matvec(xn, self.X_, psi, beta=self.beta_,
                                           log_weights=xp.log(self.weights_),
                                           backend=self.backend)
        else:
            sig = self._floor_sigma(xp, _knn_sigma(xp, xn, self.X_, int(self.n_neighbors)),
                                    self.X_)
            ones = xp.ones((self.X_.shape[0], 1), dtype=psi.dtype, device=aa.device(psi))
            out = self._kern(xp.concat([ones, psi], axis=1), col=self.weights_, x=xn,
                             x_inv_bw=1.0 / sig)
            den = out[:, 0]
            if not bool(xp.all(den > 0)):
                bad = int(xp.sum(xp.astype(~(den > 0), xp.int64)))
                raise ValueError(f"`X_new`: {bad} points are so far from the training data that "
                                 "all their kernel weights underflow to 0")
            avg = out[:, 1:] / den[:, None]
        tiny = float(xp.finfo(lam.dtype).smallest_normal)
        lam_pos = xp.where(lam > tiny, lam, xp.full_like(lam, tiny))
        coords = avg * (lam_pos ** (float(self.t) - 1.0))[None, :]
        return coords if coords.dtype == out_dtype else xp.astype(coords, out_dtype)

    # --------------------------------------------------------------- Markov operator and CdC
    def apply_markov(self, v):
        r"""``P v`` for v (N,) or (N, p): :math:`(Pv)_i = \sum_j K_{ij} w_j v_j /
        \sum_j K_{ij} w_j`` (one tiled kernel call)."""
        self._check_fitted()
        self._same_space(v, "v")
        xp = self._xp
        v = xp.astype(v, self.X_.dtype) if v.dtype != self.X_.dtype else v
        if v.shape[0] != self.X_.shape[0]:
            raise ValueError(f"`v` must have {self.X_.shape[0]} rows (one per fitted point); "
                             f"got shape {tuple(v.shape)}")
        return self._kern(v, row=self.weights_ / self.degree_alpha_, col=self.weights_)

    def carre_du_champ(self, f, g=None):
        r"""Carre du champ of the diffusion: :math:`\Gamma(f, g) = \tfrac12[P(fg) - f\,Pg
        - g\,Pf + fg]`, i.e. :math:`\Gamma(f,g)_i = \tfrac12 \sum_j P_{ij}(f_j - f_i)
        (g_j - g_i)`.

        Discrete (no :math:`1/\varepsilon` scaling). :math:`\Gamma(f, f) \ge 0`; for ``g=None``
        or ``g is f`` round-off below zero is clipped to 0. One tiled kernel call.

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
        self._same_space(f, "f")
        same = g is None or g is f
        if not same:
            self._same_space(g, "g")
            if tuple(g.shape) != tuple(f.shape):
                raise ValueError(f"`f` and `g` must have the same shape; got {tuple(f.shape)} "
                                 f"and {tuple(g.shape)}")
        n = self.X_.shape[0]
        if f.ndim not in (1, 2) or f.shape[0] != n:
            raise ValueError(f"`f` must have shape ({n},) or ({n}, p); got {tuple(f.shape)}")
        one_d = f.ndim == 1
        f2 = xp.reshape(f, (n, 1)) if one_d else f
        f2 = xp.astype(f2, self.X_.dtype) if f2.dtype != self.X_.dtype else f2
        g2 = f2 if same else xp.reshape(g, (n, -1))
        g2 = xp.astype(g2, self.X_.dtype) if g2.dtype != self.X_.dtype else g2
        p = f2.shape[1]
        cols = [f2 * g2, f2] if same else [f2 * g2, f2, g2]
        pv = self.apply_markov(xp.concat(cols, axis=1))
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
        expressed in the diffusion coordinates. One tiled kernel call with ``q(q+3)/2`` columns.

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
        comps = list(range(nc)) if components is None else [int(c) for c in components]
        if not comps or any(c < 0 or c >= nc for c in comps):
            raise ValueError(f"`components` must be indices in [0, {nc}); got {components!r}")
        lam = self._lam_c
        y = self._psi_c[:, 1:] * _power(xp, lam[1:], float(self.t))[None, :]
        y = xp.stack([y[:, c] for c in comps], axis=1)
        q = len(comps)
        pairs = [(a, b) for a in range(q) for b in range(a, q)]
        prods = xp.stack([y[:, a] * y[:, b] for a, b in pairs], axis=1)
        pv = self.apply_markov(xp.concat([prods, y], axis=1))
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
        :math:`\psi^h = \varphi^h/\sqrt{\pi^h}`, normalised like the base map's.

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
            ``stationary_`` (:math:`\pi^h`), ``h_``, ``rscale_``.
        """
        self._check_fitted()
        xp = self._xp
        self._same_space(h, "h")
        n = self.X_.shape[0]
        if tuple(h.shape) != (n,):
            raise ValueError(f"`h` must have shape ({n},) (one value per fitted point); got "
                             f"shape {tuple(h.shape)}")
        h, _ = aa.as_float_array(xp, h, "h")
        h = xp.astype(h, self.X_.dtype) if h.dtype != self.X_.dtype else h
        if not bool(xp.all(xp.isfinite(h))) or not bool(xp.all(h > 0)):
            raise ValueError("`h` must be finite and strictly positive everywhere")
        nc = self.n_components if n_components is None else n_components
        _validate_options(nc, self.alpha, self.epsilon, self.t, self.eigensolver, tol,
                          self.n_neighbors)
        g = self._kern(h, row=self.weights_, col=self.weights_)
        rscale_h = self.weights_ * xp.sqrt(h / g)
        solver = self.eigensolver_
        gen = self._gen.advance(1 << 32) if isinstance(self._gen, _random.Key) else self._gen
        tol = self.tol if tol is None else tol
        lam, phi, resid, converged = _solve(self._kern, rscale_h, int(nc) + 1, solver, tol, gen,
                                            xp, int(self.block_size))
        return DoobTransform(self, h, g, rscale_h, lam, phi, resid, converged)


class DoobTransform(_Spectral):
    r"""Eigenpairs of the Doob h-transform :math:`P^h` of a fitted :class:`DiffusionMap`.

    Returned by :meth:`DiffusionMap.doob`; attributes as the map's: ``eigenvalues_``
    (descending, :math:`\lambda_0 = 1`), ``eigenvectors_`` (:math:`\psi^h`, :math:`\psi^h_0
    \equiv 1`), ``eigenvectors_sym_``, ``embedding_``, ``residuals_``, ``stationary_``
    (:math:`\pi^h \propto h \cdot K_\alpha h`), plus ``h_`` and ``rscale_``.
    """

    def __init__(self, base: DiffusionMap, h, g, rscale, lam, phi, resid, converged):
        xp = base._xp
        self.base = base
        self.h_ = h
        self.rscale_ = rscale
        self.t = base.t
        self._set_spectrum(xp, lam, phi, resid, xp.sqrt(g * h), float(base.t), converged,
                           base._out_dtype, "DiffusionMap.doob")

    def apply_markov(self, v):
        r"""``P^h v = (P(h v)) / (P h)`` for v (N,) or (N, p)."""
        hv = self.h_ * v if v.ndim == 1 else self.h_[:, None] * v
        num = self.base.apply_markov(hv)
        den = self.base.apply_markov(self.h_)
        return num / den if v.ndim == 1 else num / den[:, None]
