r"""How :func:`arraygen.sinkhorn.sinkhorn` applies the Gibbs kernel :math:`e^{-C/\varepsilon}`.

Both answer the same four questions about ``z_ij = w_j - C_ij / eps`` (rows) or
``z_ij = w_i - C_ij / eps`` (columns), with :math:`C_{ij} = \lVert x_i - y_j\rVert^2`:

``rows(w, eps)`` / ``cols(w, eps)``
    log-sum-exp over the other cloud, shapes (N,) / (M,);
``row_average(v, w, eps)`` / ``col_average(u, w, eps)``
    softmax-weighted averages of ``v`` (M, p) over ``y`` (resp. ``u`` (N, p) over ``x``), with
    the log-sum-exp: ``(out, lse)``.

:class:`TiledKernel` calls the private cores of :mod:`arraygen.tiled` (memory O((N + M) d),
any backend). :class:`DenseKernel` holds the N x M cost matrix and, when the exponents'
range allows it, the kernel matrix :math:`K = e^{-C/\varepsilon}`: a log-sum-exp is then one
matrix-vector product, ``log(K @ exp(w - max w)) + max w`` (the largest term of every row is
at least :math:`e^{-\max C/\varepsilon}`, so nothing that matters underflows). Small problems
(N M up to :data:`DENSE_MAX_ELEMENTS`) use it: at N = 256 an iteration is a few microseconds
of BLAS instead of a kernel launch. Inputs are trusted: one namespace, device and dtype.
"""

from __future__ import annotations

import math
from typing import Any

from . import _array_api as aa
from . import _dask, tiled

#: Automatic choice: problems with N * M up to this use :class:`DenseKernel`.
DENSE_MAX_ELEMENTS = 1 << 22

#: Largest max(C) / epsilon for which :class:`DenseKernel` forms exp(-C / epsilon): the
#: smallest kernel entry must stay far above the dtype's underflow.
KERNEL_RANGE = {"float64": 500.0, "float32": 60.0}


def sqdist_dense(xp: Any, x: Any, y: Any):
    """Dense :math:`\\lVert x_i - y_j\\rVert^2` (N, M), coordinate by coordinate."""
    acc = None
    for k in range(x.shape[1]):
        diff = x[:, k][:, None] - y[:, k][None, :]
        acc = diff * diff if acc is None else acc + diff * diff
    return acc


#: exp of an exponent below this would be subnormal (slow on x86, up to 100x in torch) and
#: is below the dtype's resolution next to the largest term exp(0) = 1: it is flushed to 0.
_FLUSH = {"float64": -700.0, "float32": -85.0}


def _exp_shifted(xp: Any, d: Any, lo: float, ninf: Any):
    """exp(d) for d <= 0 with exponents below ``lo`` (subnormal results) flushed to 0."""
    return xp.exp(xp.where(d >= lo, d, ninf))


def _logsumexp(xp: Any, z: Any, axis: int, lo: float, ninf: Any, zero: Any):
    top = xp.max(z, axis=axis, keepdims=True)
    top = xp.where(xp.isfinite(top), top, zero)
    return (xp.log(xp.sum(_exp_shifted(xp, z - top, lo, ninf), axis=axis))
            + xp.squeeze(top, axis=axis))


class TiledKernel:
    """Reductions through the tiled cores (never forms an N x M array)."""

    dense = False

    def __init__(self, xp: Any, x: Any, y: Any, backend: str | None = None):
        # on a Dask cluster the centred row chunks are persisted once (else every iteration
        # recomputes the centring), and the cloud summed over is one persisted chunk
        # broadcast to every task
        x, y = _dask.materialize(x, y)
        self.xp, self.x, self.y, self.backend = xp, x, y, backend
        self.x_all, self.y_all = _dask.whole(x), _dask.whole(y)

    def rows(self, w, eps: float):
        return tiled._logsumexp(self.xp, self.x, self.y_all, w, beta=1.0 / eps,
                                backend=self.backend)

    def cols(self, w, eps: float):
        return tiled._logsumexp(self.xp, self.y, self.x_all, w, beta=1.0 / eps,
                                backend=self.backend)

    def row_average(self, v, w, eps: float):
        return tiled._softmax_matvec(self.xp, self.x, self.y_all, v, w, beta=1.0 / eps,
                                     backend=self.backend)

    def col_average(self, u, w, eps: float):
        return tiled._softmax_matvec(self.xp, self.y, self.x_all, u, w, beta=1.0 / eps,
                                     backend=self.backend)


class DenseKernel:
    """Reductions with the dense cost matrix (and kernel matrix): small problems only."""

    dense = True

    def __init__(self, xp: Any, x: Any, y: Any, scale: float):
        self.xp, self.x, self.y = xp, x, y
        self.c = sqdist_dense(xp, x, y)
        self._scale = scale
        name = str(x.dtype).split(".")[-1]
        self._range = KERNEL_RANGE.get(name, 0.0)
        self._lo = _FLUSH.get(name, -85.0)
        self._ninf = xp.full((), -math.inf, dtype=x.dtype, device=aa.device(x))
        self._zero = xp.zeros((), dtype=x.dtype, device=aa.device(x))
        self._eps = None
        self._k = None

    def _kernel(self, eps: float):
        """exp(-C / eps), cached for the last epsilon; None when its range is too wide."""
        if self._scale / eps > self._range:
            return None
        if eps != self._eps:
            self._k, self._eps = self.xp.exp(self.c * (-1.0 / eps)), eps
        return self._k

    def _reduce(self, w, eps: float, axis: int):
        xp = self.xp
        k = self._kernel(eps)
        if k is None:
            z = (w[None, :] if axis == 1 else w[:, None]) - self.c / eps
            return _logsumexp(xp, z, axis, self._lo, self._ninf, self._zero)
        top = xp.max(w)
        e = _exp_shifted(xp, w - top, self._lo, self._ninf)
        prod = xp.matmul(k, e) if axis == 1 else xp.matmul(e, k)
        return xp.log(prod) + top

    def rows(self, w, eps: float):
        return self._reduce(w, eps, 1)

    def cols(self, w, eps: float):
        return self._reduce(w, eps, 0)

    def _average(self, z, v):
        xp = self.xp
        top = xp.max(z, axis=1, keepdims=True)
        p = _exp_shifted(xp, z - top, self._lo, self._ninf)
        s = xp.sum(p, axis=1)
        return xp.matmul(p, v) / s[:, None], xp.log(s) + top[:, 0]

    def _kernel_average(self, k, v, w):
        """softmax average through the kernel matrix: (K diag(e) v) / (K e), e = exp(w - max)."""
        xp = self.xp
        top = xp.max(w)
        e = _exp_shifted(xp, w - top, self._lo, self._ninf)
        s = xp.matmul(k, e)
        return xp.matmul(k, e[:, None] * v) / s[:, None], xp.log(s) + top

    def row_average(self, v, w, eps: float):
        k = self._kernel(eps)
        if k is not None:
            return self._kernel_average(k, v, w)
        return self._average(w[None, :] - self.c / eps, v)

    def col_average(self, u, w, eps: float):
        k = self._kernel(eps)
        if k is not None:
            return self._kernel_average(self.xp.matrix_transpose(k), u, w)
        return self._average(w[None, :] - self.xp.matrix_transpose(self.c) / eps, u)
