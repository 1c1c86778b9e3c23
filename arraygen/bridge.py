r"""Static Schrödinger bridges between two point clouds, from entropic optimal transport.

:class:`SchrodingerBridge` solves the entropic OT problem between the endpoint clouds with
:func:`arraygen.sinkhorn.sinkhorn` (cost :math:`\lVert x-y\rVert^2`,
:math:`\varepsilon = 2\sigma^2`) and exposes the bridge's drift, paths and coupling.

For backward compatibility this module also re-exports :class:`~arraygen.scores.EmpiricalScore`
(now in :mod:`arraygen.scores`) and the FastSB-OT solver of :mod:`arraygen.fastsbot`.
"""

from __future__ import annotations

import math

import numpy as np

from . import _array_api as aa
from . import _dask, _dask_batches
from . import _validation as V
from . import random as _random
from . import tiled as _tiled
from ._sinkhorn_kernels import sqdist_dense
from .scores import EmpiricalScore
from .sliced import _gaussian_matrix
from .sinkhorn import _detach, _options, _problem, _solve

__all__ = ["EmpiricalScore", "SchrodingerBridge"]


class SchrodingerBridge:
    r"""Static Schrödinger bridge between two point clouds, from entropic OT.

    Reference process: :math:`dX_t = \sigma dW_t` on :math:`t \in [0, 1]`. The bridge's
    endpoint coupling solves entropic OT with cost :math:`\lVert x-y\rVert^2` and
    :math:`\varepsilon = 2\sigma^2`:
    :math:`\pi_{ij} = a_i b_j e^{(f_i + g_j - C_{ij})/\varepsilon}`. Given its endpoints the
    bridge is a Brownian bridge, so :math:`X_t = (1-t)x_{0,i} + t x_{1,j} +
    \sigma\sqrt{t(1-t)} Z`, :math:`(i, j) \sim \pi`. Its drift is

    .. math::

        u(x, t) = \frac{E[X_1 \mid X_t = x] - x}{1 - t},
        \qquad
        E[X_1 \mid X_t = x] = \sum_j \operatorname{softmax}_j\Big(\log b_j + \frac{g_j}{\varepsilon}
            - \frac{\lVert x - x_{1,j}\rVert^2}{2\sigma^2 (1-t)}\Big)\, x_{1,j}

    (one tiled softmax average; at t = 0 the weights are the plan's row i when x = x_{0,i}).

    Parameters
    ----------
    x0 : array, shape (N, d)
        Source cloud (time 0).
    x1 : array, shape (M, d)
        Target cloud (time 1).
    sigma : float
        Noise level :math:`\sigma > 0` of the reference Brownian motion.
    a, b : array, optional
        Weights of ``x0`` and ``x1`` (default uniform).
    max_iter, tol, scaling, relaxation, check_finite, progress, backend
        Passed to :func:`arraygen.sinkhorn.sinkhorn` (defaults here: ``scaling=0.5``,
        ``relaxation="auto"``).

    Notes
    -----
    Dask: with a dask ``x0`` (or ``x1``) the Sinkhorn solve runs on row chunks with its state
    persisted at every iteration; :meth:`drift` and :meth:`sample_paths` then take dask or
    NumPy points and return dask arrays (a NumPy bridge also takes dask points), the paths
    persisted every step with each chunk's noise at its offset of the stream (so they do not
    depend on the chunking; ``rng`` must then be an int seed or Key).

    Attributes
    ----------
    sigma, epsilon : float
    result : SinkhornResult
        The entropic OT solution (``result.f``, ``result.g``, ``result.converged``...).

    Examples
    --------
    >>> import numpy as np
    >>> from arraygen.bridge import SchrodingerBridge
    >>> rng = np.random.default_rng(0)
    >>> sb = SchrodingerBridge(rng.normal(size=(50, 2)), rng.normal(3.0, 1.0, (40, 2)), 0.5)
    >>> sb.converged, sb.sample_paths(np.zeros((5, 2)), 10, rng=0).shape
    (True, (11, 5, 2))
    """

    def __init__(self, x0, x1, sigma: float, *, a=None, b=None, max_iter: int = 2000,
                 tol: float | None = None, scaling: float | None = 0.5,
                 relaxation: float | str = "auto", check_finite: bool = True,
                 progress: bool = False, backend: str | None = None):
        self.sigma = V.check_scalar(sigma, "sigma", positive=True)
        self.epsilon = 2.0 * self.sigma * self.sigma
        if self.epsilon == 0.0:
            raise ValueError(f"`sigma` is too small: epsilon = 2 sigma^2 = 2 * {self.sigma:.3g}^2 "
                             "underflows to 0 in float64")
        if not math.isfinite(self.epsilon):
            raise ValueError(f"`sigma` = {self.sigma:.6g} is out of range: epsilon = 2 sigma^2 "
                             "underflows or overflows float64")
        self.backend = backend
        opts = _options(epsilon=self.epsilon, max_iter=max_iter, tol=tol, scaling=scaling,
                        relaxation=relaxation, mixed_precision=False, check_every=1,
                        progress=progress, callback=None)
        if _dask.any_dask(x0, x1, a, b):  # Sinkhorn on the cluster, row chunks of x0
            x0, x1, a, b = _dask.as_dask(x0, x1, a, b)
        xp, (x0, x1, a, b) = V.common_namespace(x0=x0, x1=x1, a=a, b=b)
        prob = _problem(xp, x0, x1, a, b, names=("x0", "x1"), epsilon=self.epsilon,
                        epsilon_name="sigma", check_finite=check_finite, backend=backend)
        self.result = _solve(prob, stacklevel=3, **opts)
        self._xp = xp

    @property
    def converged(self) -> bool:
        """Whether the entropic OT solve reached ``tol`` (``result.converged``)."""
        return self.result.converged

    def _points(self, x, name: str):
        """``(x, out_dtype, xp)``: points (n, d) in the work dtype and their namespace (a dask
        ``x``, or any ``x`` for a bridge fitted on dask input, gives dask row chunks)."""
        xp = self._xp
        x = V.as_array(x, name)
        if _dask.is_dask_array(self.result._x) and not _dask.is_dask_array(x):
            x = _dask.as_dask(x, like=self.result._x)[0]
        elif _dask.is_dask_array(x) and not _dask.is_dask_array(self.result._x):
            xp = aa.array_namespace(**{name: x})  # NumPy/CuPy bridge, rows on the cluster
        else:
            aa.array_namespace(**{name: x, "x0": self.result._x})
            aa.check_same_device(**{name: x, "x0": self.result._x})
        d = self.result._x.shape[1]
        if x.ndim == 1 and d == 1:
            x = xp.reshape(x, (x.shape[0], 1))
        if x.ndim != 2 or x.shape[1] != d:
            raise ValueError(f"`{name}` must have shape (n, {d}) (the clouds' dimension); got "
                             f"shape {tuple(x.shape)}")
        x, out_dtype = aa.as_float_array(xp, _detach(x), name)
        work = self.result._x.dtype
        return (x if x.dtype == work else xp.astype(x, work)), out_dtype, xp

    def _posterior_mean(self, xp, xc, t: float):
        """E[X_1 | X_t = x] in centred coordinates."""
        res = self.result
        out, _ = _tiled._softmax_matvec(xp, xc, res._y, res._y,
                                        res._col_log_scale(),
                                        beta=1.0 / (self.epsilon * (1.0 - t)),
                                        backend=self.backend)
        return out

    @staticmethod
    def _cast(xp, a, dtype):
        return a if a.dtype == dtype else xp.astype(a, dtype)

    def drift(self, x, t: float):
        r"""Bridge drift :math:`u(x, t) = (E[X_1 \mid X_t = x] - x) / (1 - t)`.

        Parameters
        ----------
        x : array, shape (n, d)
        t : float in [0, 1)

        Returns
        -------
        array, shape (n, d), like ``x``.
        """
        t = V.check_scalar(t, "t")
        if not 0.0 <= t < 1.0:
            raise ValueError(f"`t` must lie in [0, 1) (the drift is singular at t = 1); got {t}")
        x, out_dtype, xp = self._points(x, "x")
        xc = x - self.result._shift
        return self._cast(xp, (self._posterior_mean(xp, xc, t) - xc) / (1.0 - t), out_dtype)

    def sample_paths(self, x_start, n_steps: int, rng=None, *, progress: bool = False,
                     callback=None):
        r"""Simulate the bridge from ``x_start`` at t = 0 by Euler-Maruyama.

        :math:`x_{k+1} = x_k + u(x_k, t_k)\,\Delta t + \sigma\sqrt{\Delta t}\, z_k` with
        :math:`t_k = k/n` and :math:`\Delta t = 1/n`.

        Parameters
        ----------
        x_start : array, shape (n, d)
            Starting points (typically ``x0`` or a subset).
        n_steps : int
            Number of steps (>= 1).
        rng : int, Key or numpy.random.Generator, optional
            Noise source; step k uses ``key.advance(k)``.
        progress : bool
            tqdm progress bar.
        callback : callable, optional
            ``callback(k, t, x)`` after each step.

        Returns
        -------
        array, shape (n_steps + 1, n, d): the path, ``paths[0] = x_start``.
        """
        n_steps = V.check_int(n_steps, "n_steps", minimum=1)
        x, out_dtype, xp = self._points(x_start, "x_start")
        gen = _random.as_key(rng)
        lazy = _dask.is_dask_array(x)
        if lazy and isinstance(gen, np.random.Generator):
            raise TypeError("`rng` must be an int seed or arraygen.random.Key for dask points "
                            "(a NumPy Generator cannot give every chunk its part of one stream)")
        dt = 1.0 / n_steps
        noise_scale = self.sigma * math.sqrt(dt)
        shift = self.result._shift
        xc = x - shift
        path = [x]
        steps = range(n_steps)
        if progress:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc="bridge", leave=False)
        for k in steps:
            t = k * dt
            drift = (self._posterior_mean(xp, xc, t) - xc) / (1.0 - t)
            g = gen if isinstance(gen, np.random.Generator) else gen.advance(k)
            z = _dask_batches.normal_rows(g, xc) if lazy else _gaussian_matrix(
                g, tuple(xc.shape), xc)
            # dask: the state is persisted every step (the graph never holds the history)
            xc = _dask.materialize(xc + dt * drift + noise_scale * z)
            path.append(xc + shift)
            if callback is not None:
                callback(k, t + dt, path[-1])
        return self._cast(xp, xp.stack(path, axis=0), out_dtype)

    def sample_coupling(self, n: int, rng=None, *, max_elements: int = 1 << 22):
        r"""Draw ``n`` index pairs (i, j) from the coupling :math:`\pi`, row by row.

        i is drawn from ``a``; then j from the plan's conditional row
        :math:`\pi_{ij}/a_i = \operatorname{softmax}_j(\log b_j + (g_j - C_{ij})/\varepsilon)`
        by inverse CDF, in blocks of at most ``max_elements`` entries (never the N x M plan).

        Parameters
        ----------
        n : int
            Number of pairs.
        rng : int, Key or numpy.random.Generator, optional
        max_elements : int
            Memory bound (entries) of one block of conditional rows.

        Returns
        -------
        i, j : int64 arrays, shape (n,)
            Indices into ``x0`` and ``x1``.
        """
        xp = self._xp
        n = V.check_int(n, "n", minimum=0)
        max_elements = V.check_int(max_elements, "max_elements", minimum=1)
        res = self.result
        xc, yc = res._x, res._y
        gen = _random.as_key(rng)
        u_i, u_j = (_uniforms(gen, n, xc, step) for step in (0, 1))
        cdf_a = xp.cumulative_sum(xp.astype(xp.exp(res._log_a), xp.float64))
        i = xp.searchsorted(cdf_a, u_i * cdf_a[-1], side="right")
        i = xp.clip(xp.astype(i, xp.int64), 0, xc.shape[0] - 1)
        m = yc.shape[0]
        rows = max(1, max_elements // m)
        w = res._col_log_scale()
        picks = []
        for s0 in range(0, n, rows):
            s1 = min(n, s0 + rows)
            z = w[None, :] - sqdist_dense(xp, xp.take(xc, i[s0:s1], axis=0), yc) / self.epsilon
            z = z - xp.max(z, axis=1, keepdims=True)
            cdf = xp.cumulative_sum(xp.astype(xp.exp(z), xp.float64), axis=1)
            below = xp.astype(cdf <= (u_j[s0:s1] * cdf[:, -1])[:, None], xp.int64)
            picks.append(xp.clip(xp.sum(below, axis=1), 0, m - 1))
        j = xp.concat(picks) if picks else xp.zeros((0,), dtype=xp.int64, device=aa.device(xc))
        return i, j


def _uniforms(gen, n: int, like, step: int):
    """n float64 uniforms in (0, 1) on ``like``'s device from a Key (advanced by step) or a
    NumPy Generator."""
    xp = aa.array_namespace(like=like)
    if isinstance(gen, np.random.Generator):
        return xp.asarray(gen.random(n), device=aa.device(like))
    return _random.uniform(gen.advance(step), (n,), dtype=xp.float64, like=like)


from .fastsbot import FastSBOTConfig, FastSBOTSolver, SelfCheckReport  # noqa: E402,F401
