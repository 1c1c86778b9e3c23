r"""Entropic optimal transport between point clouds: log-domain Sinkhorn, Sinkhorn divergence.

Conventions (shared by :func:`sinkhorn`, :func:`sinkhorn_divergence` and
:class:`arraygen.bridge.SchrodingerBridge`)
-------------------------------------------------------------------------------------------
Cost :math:`C_{ij} = \lVert x_i - y_j\rVert^2` (no factor 1/2). The entropic problem is

.. math:: \mathrm{OT}_\varepsilon(a, b) = \min_{P \in \Pi(a, b)} \langle C, P\rangle
          + \varepsilon\,\mathrm{KL}(P \,\|\, a b^T),

whose solution is :math:`P = \operatorname{diag}(u) K \operatorname{diag}(v)` with
:math:`K = e^{-C/\varepsilon}`, i.e. exactly the plan of POT's
``ot.sinkhorn(a, b, C, reg=epsilon)``. The dual potentials ``f`` (N,) and ``g`` (M,) are in
cost units (the GeomLoss / OTT convention):

.. math:: P_{ij} = a_i b_j \exp\big((f_i + g_j - C_{ij}) / \varepsilon\big),

so POT's scalings are :math:`u_i = a_i e^{f_i/\varepsilon}`, :math:`v_j = b_j e^{g_j/\varepsilon}`
up to the constant shift :math:`f + c, g - c`. At convergence
:math:`\mathrm{OT}_\varepsilon = \langle f, a\rangle + \langle g, b\rangle`.

Sinkhorn iteration (log domain, one "iteration" = one update of each potential)::

    g_j <- -eps * log sum_i exp(log a_i + f_i/eps - C_ij/eps)   # column marginals exact
    f_i <- -eps * log sum_j exp(log b_j + g_j/eps - C_ij/eps)   # row marginals exact

Right after a ``g`` update the row sums of the plan of ``(f, g)`` are
:math:`a_i \exp((f_i - f^{new}_i)/\varepsilon)`, so the marginal error costs one O(N)
reduction (and one host synchronisation) per check. The reported ``marginal_error``
:math:`\lVert P1 - a\rVert_1 + \lVert P^T 1 - b\rVert_1` is recomputed for both marginals of
the returned potentials in a final pass (in float64 where the namespace has it), and
``converged`` is True only if that error is <= ``tol``.

Small problems (N M <= ``DENSE_MAX_ELEMENTS`` = 2**22, no ``backend`` given) iterate with a
dense cost matrix (one BLAS matrix-vector product per half-iteration); larger ones with the
tiled kernels of :mod:`arraygen.tiled`, memory O((N + M) d).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import warnings
from typing import Any

import numpy as np

from . import _array_api as aa
from . import _dask
from . import _validation as V
from ._sinkhorn_kernels import (DENSE_MAX_ELEMENTS, KERNEL_RANGE, DenseKernel, TiledKernel,
                                sqdist_dense)

__all__ = ["BatchedSinkhornResult", "ConvergenceWarning", "SinkhornResult", "sinkhorn",
           "sinkhorn_divergence"]

logger = logging.getLogger("arraygen")

#: Largest number of plan entries :meth:`SinkhornResult.plan` builds by default (2**26 = 64 Mi).
PLAN_MAX_ELEMENTS = 1 << 26

#: Default ``tol`` by compute dtype: float32 potentials cannot describe a plan much better
#: than 1e-5 (their rounding divided by epsilon), so 1e-6 would run to ``max_iter``.
DEFAULT_TOL = {"float64": 1e-6, "float32": 1e-4}

#: Stop (``converged=False``) when the error has not fallen by 5% in this many iterations
#: (a rounding floor; float64 gets a longer window, its floor is rarely in the way).
_STALL_ITERS = {"float64": 1000, "float32": 200}

#: Marginal error at which ``mixed_precision`` hands over from float32 to float64.
_MIXED_SWITCH = 1e-4

#: ``sinkhorn(method=)``: all N M pairs, coarse-to-fine with truncated kernels
#: (:mod:`arraygen._sinkhorn_multiscale`), or the automatic choice between the two.
_METHODS = ("exact", "multiscale", "auto")


class ConvergenceWarning(RuntimeWarning):
    """An iterative solver stopped before reaching its tolerance (see the result's fields)."""


# --------------------------------------------------------------------------------------------
# the problem: trusted, centred clouds and log-weights
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class _Problem:
    xp: Any
    x: Any                  # centred, compute dtype, no autograd
    y: Any
    shift: Any
    log_a: Any
    log_b: Any
    scale: float            # squared diameter of the bounding box of both clouds
    out_dtype: Any
    backend: str | None
    kernel: Any = None

    def astype(self, dtype) -> _Problem:
        xp = self.xp
        cast = [xp.astype(v, dtype) for v in (self.x, self.y, self.shift, self.log_a, self.log_b)]
        return _Problem(xp, *cast, self.scale, self.out_dtype, self.backend,
                        _kernel_for(xp, cast[0], cast[1], self.scale, self.backend,
                                    dense=self.kernel.dense))


def _detach(a):
    return a.detach() if aa.is_torch_array(a) else a


def _log_weights(xp, w, size: int, like):
    """log of weights (uniform if None) with log(0) = -inf and no warnings."""
    dt, dev = like.dtype, aa.device(like)
    if w is None:
        return xp.full((size,), -math.log(size), dtype=dt, device=dev)
    pos = w > 0
    safe = xp.where(pos, w, xp.ones((), dtype=dt, device=dev))
    return xp.where(pos, xp.log(safe), xp.full((), -math.inf, dtype=dt, device=dev))


def _cost_scale(xp, x, y, names: tuple[str, str]) -> float:
    """Squared diameter of the bounding box of both clouds, in float64 on the host."""
    lo = xp.minimum(xp.min(x, axis=0), xp.min(y, axis=0))
    hi = xp.maximum(xp.max(x, axis=0), xp.max(y, axis=0))
    span = aa.to_numpy(hi).astype(np.float64) - aa.to_numpy(lo).astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        scale = float(np.sum(span * span))
    if not math.isfinite(scale):
        raise ValueError(f"`{names[0]}` and `{names[1]}` span {float(np.max(np.abs(span))):.3g} "
                         "per coordinate: their squared diameter (the cost scale) overflows "
                         "float64; rescale the data")
    V.check_fits_dtype(xp, scale, x.dtype, f"{names[0]}` and `{names[1]}",
                       what="squared diameter of the clouds")
    return scale


def _check_epsilon(xp, epsilon: float, scale: float, dtype, name: str) -> None:
    """1/epsilon and max(C)/epsilon must be representable in the compute dtype."""
    if not epsilon > 0.0 or not math.isfinite(1.0 / epsilon) or not math.isfinite(
            scale / epsilon):
        raise ValueError(f"`{name}` is too small: epsilon = {epsilon:.6g} makes 1/epsilon or "
                         f"the cost scale {scale:.3g} / epsilon overflow float64")
    V.check_fits_dtype(xp, max(scale, 1.0) / epsilon, dtype, name,
                       what="cost scale / epsilon")


#: Dense log-domain iterations (exponents beyond the kernel matrix's range) beat the tiled
#: kernels' fixed costs only on problems this small.
_DENSE_LOG_MAX_ELEMENTS = 1 << 16


def _kernel_for(xp, x, y, scale: float, backend, *, epsilon: float | None = None,
                dense: bool | None = None):
    """Automatic choice: the dense kernel for small problems (with no backend asked for)."""
    if dense is None and _dask.any_dask(x, y):
        dense = False  # a cluster runs the tiled kernels on row chunks
    if dense is None:
        size = x.shape[0] * y.shape[0]
        in_range = scale / epsilon <= KERNEL_RANGE.get(aa.dtype_name(x.dtype), 0.0)
        dense = (backend is None and not os.environ.get("ARRAYGEN_BACKEND", "").strip()
                 and size <= (DENSE_MAX_ELEMENTS if in_range else _DENSE_LOG_MAX_ELEMENTS))
    return DenseKernel(xp, x, y, scale) if dense else TiledKernel(xp, x, y, backend)


def _problem(xp, x, y, a, b, *, names=("x", "y"), weight_names=("a", "b"), epsilon: float,
             epsilon_name: str = "epsilon", check_finite: bool = True, backend=None) -> _Problem:
    """Validate one problem (the boundary) and centre it."""
    x, y, out_dtype = V.as_point_pair(xp, _detach(x), _detach(y), names,
                                      check_finite=check_finite)
    a, b = V.as_marginals(xp, _detach(a), _detach(b), x.shape[0], y.shape[0], x, weight_names)
    scale = _cost_scale(xp, x, y, names)
    _check_epsilon(xp, epsilon, scale, x.dtype, epsilon_name)
    return _centred(xp, x, y, a, b, scale, out_dtype, backend, epsilon)


def _centred(xp, x, y, a, b, scale, out_dtype, backend, epsilon) -> _Problem:
    shift = 0.5 * (xp.mean(x, axis=0) + xp.mean(y, axis=0))
    xc, yc = x - shift, y - shift
    return _Problem(xp, xc, yc, shift, _log_weights(xp, a, x.shape[0], xc),
                    _log_weights(xp, b, y.shape[0], xc), scale, out_dtype, backend,
                    _kernel_for(xp, xc, yc, scale, backend, epsilon=epsilon))


def _epsilon_schedule(scale: float, epsilon: float, scaling: float | None) -> list[float]:
    """Annealing epsilons: scale, scale*s, scale*s^2, ... (> epsilon), then epsilon."""
    if scaling is None or not scale > epsilon:
        return [epsilon]
    eps = [scale]
    while eps[-1] * scaling > epsilon:
        eps.append(eps[-1] * scaling)
    return eps + [epsilon]


# --------------------------------------------------------------------------------------------
# public functions
# --------------------------------------------------------------------------------------------

def _options(*, epsilon, max_iter, tol, scaling, relaxation, mixed_precision, check_every,
             progress, callback) -> dict:
    """The boundary for the solver options (Python scalars)."""
    opts = {"epsilon": V.check_scalar(epsilon, "epsilon", positive=True),
            "max_iter": V.check_int(max_iter, "max_iter", minimum=1),
            "tol": None if tol is None else V.check_scalar(tol, "tol", positive=True),
            "check_every": V.check_int(check_every, "check_every", minimum=1),
            "scaling": None, "relaxation": "auto", "mixed_precision": bool(mixed_precision),
            "progress": bool(progress), "callback": callback}
    if scaling is not None:
        opts["scaling"] = V.check_scalar(scaling, "scaling", low=0.0, high=1.0,
                                         low_inclusive=False, high_inclusive=False)
    if relaxation != "auto":
        if isinstance(relaxation, str):
            raise ValueError(f"`relaxation` must be 'auto' or lie in [1, 2); got {relaxation!r}")
        opts["relaxation"] = V.check_scalar(relaxation, "relaxation", low=1.0, high=2.0,
                                            high_inclusive=False)
    return opts


def sinkhorn(x, y, a=None, b=None, *, epsilon: float, max_iter: int = 1000,
             tol: float | None = None, scaling: float | None = None,
             relaxation: float | str = 1.0, mixed_precision: bool = False, warm_start=None,
             check_every: int = 1, check_finite: bool = True, progress: bool = False,
             callback=None, method: str = "exact", backend: str | None = None):
    r"""Entropic optimal transport between two point clouds, log domain.

    Solves :math:`\min_{P \in \Pi(a,b)} \langle C, P\rangle + \varepsilon \mathrm{KL}(P\|ab^T)`
    with :math:`C_{ij} = \lVert x_i - y_j\rVert^2` by alternating log-domain updates of the
    potentials (module docstring). The plan equals POT's ``ot.sinkhorn(a, b, C, reg=epsilon)``.
    Small problems use a dense cost matrix; larger ones (or any explicit ``backend``) the
    tiled kernels, memory O((N + M) d).

    Parameters
    ----------
    x : array, shape (N, d), (N,) for d = 1, or (B, N, d) for B problems at once
        Source points (a list is read as a NumPy array).
    y : array, shape (M, d) (or (B, M, d))
        Target points (same namespace and device).
    a, b : array, shape (N,) and (M,) (or (B, N), (B, M)), optional
        Non-negative marginal weights, each summing to 1 (default uniform). Zeros are allowed.
    epsilon : float
        Regularisation :math:`\varepsilon > 0`, in cost units (squared distance).
    max_iter : int
        Maximum number of iterations (annealing stages included).
    tol : float, optional
        Stop when the marginal L1 error :math:`\lVert P1-a\rVert_1 + \lVert P^T1-b\rVert_1`
        of the plan is <= tol. Default by compute dtype: 1e-6 (float64), 1e-4 (float32,
        whose rounding floor is about 1e-5). A run whose error stops falling (a rounding
        floor) ends early with ``converged=False``.
    scaling : float in (0, 1), optional
        Epsilon-scaling: one iteration at each of :math:`\varepsilon_k = D^2 s^k` (D the
        diameter of the bounding box of both clouds) while above ``epsilon``, then
        iterations at ``epsilon``. None: no annealing.
    relaxation : float in [1, 2) or "auto"
        Over-relaxation :math:`\omega` of both updates at the final epsilon (Thibault et al.
        2017); 1 is plain Sinkhorn; ``"auto"`` estimates the optimal factor from the plain
        iterations' linear rate. The fixed point does not depend on :math:`\omega`.
    mixed_precision : bool
        For float64 input and ``tol < 1e-4``: iterate on float32 copies first, then continue
        in float64 from those potentials.
    warm_start : tuple (f, g) of arrays, shape (N,) and (M,) (or (B, N), (B, M)), optional
        Initial potentials (e.g. ``(res.f, res.g)`` of a nearby problem); annealing is skipped.
    check_every : int
        Check the marginal error every this many iterations (one host synchronisation).
    check_finite : bool
        Validate that ``x`` and ``y`` are finite (default True).
    progress : bool
        Show a tqdm progress bar.
    callback : callable, optional
        ``callback(info)`` at each check with a dict ``iteration, epsilon, marginal_error,
        f, g``; returning True stops the iteration.
    method : {"exact", "multiscale", "auto"}
        ``"exact"`` (default) sums over all N M pairs at every iteration. ``"multiscale"``
        solves a coarse problem on cluster centroids, extrapolates its potentials, and
        iterates at full resolution with truncated (block-sparse) kernels whose pair lists
        come from the current potentials (:mod:`arraygen._sinkhorn_multiscale`);
        ``marginal_error`` and ``converged`` still come from an exact pass over all pairs,
        ``max_iter`` counts the coarse iterations too, ``mixed_precision`` is not used, and
        ``res.info`` records what was truncated. ``"auto"`` picks ``"multiscale"`` for
        d <= 3, N M >= 2**24 and epsilon <= (squared diameter of the clouds) / 100, else
        ``"exact"``.
    backend : str, optional
        Backend of the tiled kernels (see :func:`arraygen.tiled.kernel_logsumexp`); giving
        one always uses the tiled path.

    Returns
    -------
    SinkhornResult (or BatchedSinkhornResult for (B, N, d) input)
        ``f`` (N,), ``g`` (M,) in the input's namespace, device and floating dtype; ``cost``,
        ``n_iter``, ``converged``, ``marginal_error``, ``epsilon``, ``errors`` (history).
        When ``x``, ``y``, ``a`` or ``b`` require gradients (torch), ``cost`` and
        ``dual_value`` are 0-d tensors whose gradients are those of
        :math:`\mathrm{OT}_\varepsilon` by the envelope theorem:
        :math:`\partial/\partial x_i = 2\sum_j P_{ij}(x_i - y_j)`, ``f`` for ``a`` and ``g``
        for ``b`` (as POT's ``sinkhorn2``; no backpropagation through the iterations).

    Warns
    -----
    ConvergenceWarning
        When the tolerance is not reached (then ``converged`` is False).

    Examples
    --------
    >>> import numpy as np
    >>> from arraygen.sinkhorn import sinkhorn
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(300, 2)), rng.normal(2.0, 0.5, size=(200, 2))
    >>> res = sinkhorn(x, y, epsilon=0.05, scaling=0.7)
    >>> bool(res.converged), res.marginal_error <= 1e-6
    (True, True)

    Coarse-to-fine with truncated kernels (the error is still measured over all pairs):

    >>> ms = sinkhorn(x, y, epsilon=0.05, scaling=0.7, method="multiscale")
    >>> bool(ms.converged), ms.marginal_error <= 1e-6, ms.info["method"]
    (True, True, 'multiscale')
    """
    opts = _options(epsilon=epsilon, max_iter=max_iter, tol=tol, scaling=scaling,
                    relaxation=relaxation, mixed_precision=mixed_precision,
                    check_every=check_every, progress=progress, callback=callback)
    V.check_choice(method, "method", _METHODS)
    if _dask.any_dask(x, y, a, b):
        x, y, a, b = _dask.as_dask(x, y, a, b)
    xp, (x, y, a, b) = V.common_namespace(x=x, y=y, a=a, b=b)
    if x.ndim == 3 or y.ndim == 3:
        return _batched(xp, x, y, a, b, warm_start, opts, check_finite, backend, method)
    prob = _problem(xp, x, y, a, b, epsilon=opts["epsilon"], check_finite=check_finite,
                    backend=backend)
    f0 = _warm_start(xp, warm_start, prob)
    res = _solve_method(prob, method, f0, opts)
    return res._with_gradients(x, y, a, b)


def _solve_method(prob: _Problem, method: str, f0, opts) -> SinkhornResult:
    """``_solve``, or the multiscale solver when ``method`` asks for it (or "auto" picks it)."""
    if method != "exact":
        from . import _sinkhorn_multiscale as ms

        if ms.choose_method(method, prob, opts["epsilon"]) == "multiscale":
            return ms.solve(prob, f0=f0, stacklevel=4, **opts)
    return _solve(prob, f0=f0, stacklevel=4, **opts)


def _warm_start(xp, warm_start, prob: _Problem):
    if warm_start is None:
        return None
    if not isinstance(warm_start, (tuple, list)) or len(warm_start) != 2:
        raise TypeError("`warm_start` must be a pair (f, g) of potentials; got "
                        f"{type(warm_start).__name__}")
    f = V.as_vector(xp, _detach(warm_start[0]), prob.x.shape[0], "warm_start[0]", prob.x)
    V.as_vector(xp, _detach(warm_start[1]), prob.y.shape[0], "warm_start[1]", prob.x)
    return f


def _batched(xp, x, y, a, b, warm_start, opts, check_finite, backend, method="exact"):
    """(B, N, d) clouds with (B, N) weights: one problem per leading index."""
    if x.ndim != 3 or y.ndim != 3 or x.shape[0] != y.shape[0]:
        raise ValueError("batched problems need `x` (B, N, d) and `y` (B, M, d) with the same "
                         f"B; got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    for name, w, cloud in (("a", a, x), ("b", b, y)):
        if w is not None and tuple(w.shape) != tuple(cloud.shape[:2]):
            raise ValueError(f"`{name}` must have shape {tuple(cloud.shape[:2])} (one weight "
                             f"per point of each problem); got shape {tuple(w.shape)}")
    if warm_start is not None and (not isinstance(warm_start, (tuple, list))
                                   or len(warm_start) != 2):
        raise TypeError("`warm_start` must be a pair (f, g) of potentials")
    results = []
    for k in range(x.shape[0]):
        prob = _problem(xp, x[k, ...], y[k, ...], None if a is None else a[k, ...],
                        None if b is None else b[k, ...], epsilon=opts["epsilon"],
                        check_finite=check_finite, backend=backend)
        f0 = None if warm_start is None else _warm_start(
            xp, (warm_start[0][k, ...], warm_start[1][k, ...]), prob)
        res = _solve_method(prob, method, f0, opts)
        results.append(res._with_gradients(x[k, ...], y[k, ...], None if a is None else a[k, ...],
                                           None if b is None else b[k, ...]))
    return BatchedSinkhornResult(results)


def sinkhorn_divergence(x, y, a=None, b=None, *, epsilon: float, debias: bool = True,
                        max_iter: int = 1000, tol: float | None = None,
                        scaling: float | None = 0.5, relaxation: float | str = "auto",
                        check_finite: bool = True, backend: str | None = None):
    r"""Sinkhorn divergence, a differentiable entropic OT loss (GeomLoss semantics).

    .. math::

        S_\varepsilon(a, b) = \mathrm{OT}_\varepsilon(a, b)
            - \tfrac12 \mathrm{OT}_\varepsilon(a, a) - \tfrac12 \mathrm{OT}_\varepsilon(b, b)

    with :math:`\mathrm{OT}_\varepsilon = \langle a, f\rangle + \langle b, g\rangle` the dual
    value of :func:`sinkhorn` (cost :math:`\lVert x - y\rVert^2`); ``debias=False`` returns
    :math:`\mathrm{OT}_\varepsilon(a, b)` alone. :math:`S_\varepsilon(b, b) = 0` and
    :math:`S_\varepsilon \ge 0`.

    Mapping to GeomLoss: its ``SamplesLoss("sinkhorn", p=2, blur=blur)`` uses the cost
    :math:`\lVert x-y\rVert^2/2` and :math:`\varepsilon_{GL} = \mathrm{blur}^2`, so
    ``sinkhorn_divergence(x, y, epsilon=eps) == 2 * SamplesLoss("sinkhorn", p=2,
    blur=sqrt(eps / 2))(x, y)`` (GeomLoss run to convergence, e.g. ``scaling=0.99``).

    Gradients (torch inputs that require grad) come from the potentials by the envelope
    theorem, never by backpropagation through the iterations (no autograd graph of the
    solve; memory O(N + M) on the tiled path, which problems above ``DENSE_MAX_ELEMENTS``
    pairs or with an explicit ``backend`` take):
    :math:`\nabla_{x_i} S = 2 a_i (T_{aa}(x_i) - T_{ab}(x_i))` with :math:`T` the barycentric
    maps of the two plans, and :math:`f_{ab} - f_{aa}` for ``a`` (GeomLoss's gradients).

    Parameters
    ----------
    x : array, shape (N, d) (or (B, N, d))
    y : array, shape (M, d) (or (B, M, d))
    a, b : array, shape (N,) and (M,) (or (B, N), (B, M)), optional
        Weights summing to 1 (default uniform).
    epsilon : float
        Regularisation in squared-distance units.
    debias : bool
        Subtract the two self-transport terms (default True).
    max_iter, tol, scaling, relaxation, check_finite, backend
        As in :func:`sinkhorn` (defaults here ``scaling=0.5``, ``relaxation="auto"``).

    Returns
    -------
    array, shape () (or (B,))
        In the inputs' namespace and dtype; carries gradients in torch.

    Examples
    --------
    >>> import numpy as np
    >>> from arraygen.sinkhorn import sinkhorn_divergence
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(100, 2))
    >>> float(sinkhorn_divergence(x, x, epsilon=0.5))
    0.0
    >>> round(float(sinkhorn_divergence(x, x + 1.0, epsilon=0.5)), 3)  # |shift|^2 = 2
    2.0
    """
    opts = _options(epsilon=epsilon, max_iter=max_iter, tol=tol, scaling=scaling,
                    relaxation=relaxation, mixed_precision=False, check_every=1,
                    progress=False, callback=None)
    xp, (x, y, a, b) = V.common_namespace(x=x, y=y, a=a, b=b)
    if x.ndim == 3 or y.ndim == 3:
        return _batched_divergence(xp, x, y, a, b, opts, debias, check_finite, backend)
    return _divergence(xp, x, y, a, b, opts, debias, check_finite, backend)


# --------------------------------------------------------------------------------------------
# the iteration
# --------------------------------------------------------------------------------------------

#: Largest automatic over-relaxation factor, and the plain iterations used to estimate it.
_OMEGA_MAX = 1.9
_RATE_WINDOW = 5
#: Over-relaxation starts only once the marginal error is below this (the linear regime).
_SWITCH_BELOW = 0.05


class _Relaxation:
    r"""The over-relaxation factor :math:`\omega` of a solve and, for ``"auto"``, its controller.

    ``"auto"`` runs plain iterations until the marginal error is below 0.05 and the linear
    rate :math:`\lambda` is measurable over a window of checks, then uses the optimal SOR
    factor :math:`2/(1+\sqrt{1-\lambda})` (capped at 1.9), raises it when the over-relaxed
    rate shows it was too small (Young's relation), and falls back to plain iterations from
    the potentials where it was switched on if the error grows tenfold (twice at most).
    """

    def __init__(self, setting, omega0: float, check_every: int, f, first: int):
        self.auto = setting == "auto"
        self.omega = omega0 if self.auto else float(setting)
        self.check_every = check_every
        self.safe = (f, _SWITCH_BELOW) if self.auto and self.omega != 1.0 else None
        self.retries = self.since = 0
        self.first = first          # index of the first error at the final epsilon

    def mix(self, old, new):
        return new if self.omega == 1.0 else (1.0 - self.omega) * old + self.omega * new

    def diverged(self, err: float) -> bool:
        return self.auto and self.safe is not None and not err <= 10.0 * self.safe[1]

    def restart(self, n_errors: int):
        """Back to plain iterations; returns the potential ``f`` to restart from."""
        logger.debug("sinkhorn: over-relaxation %.3f diverged; back to 1", self.omega)
        f = self.safe[0]
        self.omega, self.safe = 1.0, None
        self.retries += 1
        self.auto = self.retries <= 2
        self.first = n_errors
        return f

    def observe(self, errors: list, f, n_iter: int) -> None:
        if not self.auto:
            return
        window = _RATE_WINDOW << self.retries
        if self.safe is None:
            if errors[-1] <= _SWITCH_BELOW:
                self.omega = _estimate_relaxation(errors[self.first:], self.check_every, window)
            if self.omega != 1.0:
                self.safe, self.since = (f, errors[-1]), len(errors)
                logger.debug("sinkhorn: over-relaxation %.3f from iteration %d", self.omega,
                             n_iter)
        elif len(errors) - self.since >= window:
            better = _refine_relaxation(errors[self.since:], self.check_every, self.omega,
                                        window)
            if better > self.omega + 1e-3:
                self.omega, self.since = better, len(errors)


def _optimal_relaxation(rate: float) -> float:
    """SOR factor 2 / (1 + sqrt(1 - rate)) for a plain linear rate, capped at _OMEGA_MAX."""
    return min(_OMEGA_MAX, 2.0 / (1.0 + math.sqrt(max(0.0, 1.0 - rate))))


def _window_rate(errors: list, check_every: int, window: int) -> float | None:
    """Per-iteration linear rate over the last ``window`` checks (None if not decreasing)."""
    if len(errors) <= window:
        return None
    new, old = errors[-1], errors[-1 - window]
    if not (0.0 < new < old and math.isfinite(old)):
        return None
    return (new / old) ** (1.0 / (window * check_every))


def _estimate_relaxation(errors: list, check_every: int, window: int) -> float:
    """Over-relaxation factor from the plain iterations' error decay (1.0: not yet)."""
    if len(errors) < 2 * window:
        return 1.0
    rate = _window_rate(errors, check_every, window)
    return 1.0 if rate is None else _optimal_relaxation(rate)


def _refine_relaxation(errors: list, check_every: int, omega: float, window: int) -> float:
    r"""Optimal factor from the over-relaxed rate r at ``omega`` (never below ``omega``).

    Young: :math:`(r + \omega - 1)^2 = \omega^2 \lambda r` for real SOR eigenvalues (a
    monotone decrease); oscillating errors mean :math:`\omega` is at or above the optimum.
    """
    recent = errors[-1 - window:]
    if any(b >= a for a, b in zip(recent, recent[1:])):
        return omega
    rate = _window_rate(errors, check_every, window)
    if rate is None or rate <= omega - 1.0:
        return omega
    lam = (rate + omega - 1.0) ** 2 / (omega * omega * rate)
    return max(omega, _optimal_relaxation(min(lam, 1.0)))


class _Run:
    """One solve: the potentials, the history and the stopping rules."""

    def __init__(self, prob: _Problem, eps: float, tol: float, max_iter: int,
                 check_every: int, callback, bar):
        xp = prob.xp
        self.prob, self.xp, self.eps, self.tol = prob, xp, eps, tol
        self.max_iter, self.check_every, self.callback, self.bar = (max_iter, check_every,
                                                                     callback, bar)
        self.f = xp.zeros((prob.x.shape[0],), dtype=prob.x.dtype, device=aa.device(prob.x))
        self.g = None
        self.errors: list[float] = []
        self.epsilons: list[float] = []
        self.err = math.inf
        self._zero = xp.zeros((), dtype=prob.x.dtype, device=aa.device(prob.x))
        self._exact = None
        self._weights: dict = {}
        self.stall = _STALL_ITERS.get(aa.dtype_name(prob.x.dtype), 200)
        self.lazy = _dask.is_dask_array(prob.x)

    def g_of(self, f, eps):
        p = self.prob
        return -eps * p.kernel.cols(p.log_a + f / eps, eps)

    def f_of(self, g, eps):
        p = self.prob
        return -eps * p.kernel.rows(p.log_b + g / eps, eps)

    def step(self, eps: float) -> None:
        self.epsilons.append(eps)
        if self.bar is not None:
            self.bar.update(1)

    @property
    def n_iter(self) -> int:
        return len(self.epsilons)

    def anneal(self, schedule) -> None:
        for eps in schedule:
            g = self.g_of(self.f, eps)
            self.f = _dask.materialize(self.f_of(g, eps))
            self.step(eps)

    def _mismatch(self, log_w, new, old, eps):
        """sum_i w_i |exp((old_i - new_i)/eps) - 1| (marginal L1 error of one side)."""
        xp = self.xp
        w, mask = self._weights.get(id(log_w)) or self._weight(log_w)
        return xp.sum(xp.where(mask, w * xp.abs(xp.expm1((old - new) / eps)), self._zero))

    def _weight(self, log_w):
        w = self.xp.exp(log_w)
        self._weights[id(log_w)] = (w, w > 0)
        return self._weights[id(log_w)]

    def error(self, f, f_t, g, g_t, omega: float) -> float:
        """Marginal error of the plan (f, g) from the next updates (one host sync)."""
        p, eps = self.prob, self.eps
        err = self._mismatch(p.log_a, f_t, f, eps)
        if omega != 1.0:
            err = err + self._mismatch(p.log_b, g_t, g, eps)
        return V.host_float(err)

    def exact_error(self, f, g) -> float:
        """Both marginals of the plan (f, g), recomputed in float64 where available."""
        xp, p = self.xp, self.prob
        if p.x.dtype != getattr(xp, "float64", p.x.dtype):
            if self._exact is None:
                self._exact = _Run(p.astype(xp.float64), self.eps, self.tol, 1, 1, None, None)
            f, g = xp.astype(f, xp.float64), xp.astype(g, xp.float64)
            return self._exact.exact_error(f, g)
        rows = self._mismatch(p.log_a, self.f_of(g, self.eps), f, self.eps)
        cols = self._mismatch(p.log_b, self.g_of(f, self.eps), g, self.eps)
        return V.host_float(rows + cols)


def _stop_reason(run, err: float, stopped: bool, best: float, best_at: int, hint: str = ""):
    """``(reason, best, best_at)`` after an error check of an iteration loop (exact and
    multiscale): ``reason`` is non-empty when the loop must stop (non-finite error, the
    callback, no 5% gain in ``run.stall`` iterations; ``hint`` ends that message)."""
    if not math.isfinite(err):
        return "the marginal error became non-finite", best, best_at
    if stopped:
        return "it was stopped by the callback", best, best_at
    if err < 0.95 * best:
        return "", err, run.n_iter
    if run.n_iter - best_at >= run.stall:
        return (f"the error stopped falling (no 5% gain in {run.stall} iterations{hint})",
                best, best_at)
    return "", best, best_at


def _iterate(run: _Run, relax: _Relaxation) -> str:
    """Iterate at the final epsilon; leaves (f, g, err) on ``run``; returns '' if converged,
    else the reason it stopped."""
    eps = run.eps
    f = run.f
    g = g_t = run.g_of(f, eps)
    run.step(eps)
    inner_tol, refinements = run.tol, 0
    best, best_at = math.inf, run.n_iter
    while True:
        f_t = run.f_of(g, eps)
        if run.n_iter % run.check_every == 0 or run.n_iter >= run.max_iter:
            if run.lazy:  # the error's host sync and the next update share one f_t
                f_t = _dask.materialize(f_t)
            err = run.error(f, f_t, g, g_t, relax.omega)
            run.errors.append(err)
            if run.bar is not None:
                run.bar.set_postfix(err=f"{err:.2e}", omega=f"{relax.omega:.2f}")
            stopped = run.callback is not None and bool(run.callback(
                {"iteration": run.n_iter, "epsilon": eps, "marginal_error": err, "f": f,
                 "g": g}))
            if err <= inner_tol:
                run.f, run.g, run.err = f, g, run.exact_error(f, g)
                if run.err <= run.tol:
                    return ""
                # the in-loop estimate (one marginal, compute dtype) was optimistic
                refinements += 1
                inner_tol = err * max(0.1, 0.5 * run.tol / run.err)
                if refinements > 3:
                    return "the exact error of the plan stays above tol (rounding floor)"
            if relax.diverged(err):
                f = relax.restart(len(run.errors))
                g = g_t = run.g_of(f, eps)
                run.step(eps)
                continue
            reason, best, best_at = _stop_reason(
                run, err, stopped, best, best_at,
                f"; the rounding floor of {aa.dtype_name(run.prob.x.dtype)}?")
            if reason:
                break
            relax.observe(run.errors, f, run.n_iter)
        if run.n_iter >= run.max_iter:
            reason = f"max_iter = {run.max_iter} was reached"
            break
        f = relax.mix(f, f_t)
        g_t = run.g_of(f, eps)
        g = relax.mix(g, g_t)
        if run.lazy:  # a Dask cluster keeps the state; its graph must not grow
            f, g, g_t = _dask.materialize(f, g, g_t)
        run.step(eps)
    run.f, run.g = f, g
    run.err = run.exact_error(f, g) if math.isfinite(run.errors[-1]) else run.errors[-1]
    return reason


def _solve(prob: _Problem, *, epsilon: float, max_iter: int, tol: float | None,
           scaling: float | None, relaxation, mixed_precision: bool, check_every: int,
           progress: bool, callback, f0=None, stacklevel: int = 2) -> SinkhornResult:
    """Solve one validated problem (the private core of :func:`sinkhorn`)."""
    xp = prob.xp
    if tol is None:
        tol = DEFAULT_TOL.get(aa.dtype_name(prob.x.dtype), 1e-4)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_iter, desc="sinkhorn", leave=False)
    run = _Run(prob, epsilon, tol, max_iter, check_every, callback, bar)
    omega0, schedule = 1.0, _epsilon_schedule(prob.scale, epsilon, scaling)
    if f0 is not None:
        run.f, schedule = xp.astype(f0, prob.x.dtype), [epsilon]
    elif mixed_precision and prob.x.dtype == xp.float64 and tol < _MIXED_SWITCH:
        pre = _float32_start(prob, epsilon=epsilon, max_iter=max_iter, scaling=scaling,
                             relaxation=relaxation, check_every=check_every)
        if aa.all_finite(xp, pre._fc):
            run.f = xp.astype(pre._fc, xp.float64)
            run.epsilons, run.errors = list(pre.epsilons), list(pre.errors)
            schedule, omega0 = [epsilon], pre.relaxation
    run.anneal(schedule[:-1])
    relax = _Relaxation(relaxation, omega0, check_every, run.f, len(run.errors))
    reason = _iterate(run, relax)
    if bar is not None:
        bar.close()
    if reason:
        warnings.warn(
            f"sinkhorn did not converge: marginal L1 error {run.err:.3g} > tol {tol:.3g} after "
            f"{run.n_iter} iterations ({reason}); epsilon = {epsilon:.3g} is "
            f"{epsilon / max(prob.scale, 1e-300):.2g} of the cost scale {prob.scale:.3g}, dtype "
            f"{prob.x.dtype}. Try a larger max_iter, epsilon-scaling (scaling=0.5 to 0.9), a "
            "larger epsilon, or float64.", ConvergenceWarning, stacklevel=stacklevel)
    logger.debug("sinkhorn: %d iterations, error %.3g, converged %s", run.n_iter, run.err,
                 not reason)
    return _result(run, relax.omega, converged=not reason)


def _float32_start(prob: _Problem, *, epsilon, max_iter, scaling, relaxation,
                   check_every) -> SinkhornResult:
    """The float32 phase of ``mixed_precision``: solve to ``_MIXED_SWITCH`` in float32."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return _solve(prob.astype(prob.xp.float32), epsilon=epsilon, max_iter=max_iter,
                      tol=_MIXED_SWITCH, scaling=scaling, relaxation=relaxation,
                      mixed_precision=False, check_every=check_every, progress=False,
                      callback=None)


def _result(run: _Run, omega: float, *, converged: bool) -> SinkhornResult:
    xp, p = run.xp, run.prob
    f, g, eps = run.f, run.g, run.eps
    cost = _transport_cost(p, f, g, eps)
    zero = run._zero
    dual = V.host_float(xp.sum(xp.where(p.log_a > -math.inf, xp.exp(p.log_a) * f, zero))
                        + xp.sum(xp.where(p.log_b > -math.inf, xp.exp(p.log_b) * g, zero)))
    return SinkhornResult(
        f=_cast(xp, f, p.out_dtype), g=_cast(xp, g, p.out_dtype), cost=cost,
        n_iter=run.n_iter, converged=converged, marginal_error=run.err, epsilon=eps,
        errors=run.errors, epsilons=run.epsilons, dual_value=dual, relaxation=omega,
        _x=p.x, _y=p.y, _shift=p.shift, _log_a=p.log_a, _log_b=p.log_b, _fc=f, _gc=g,
        _out_dtype=p.out_dtype, _kernel=p.kernel)


def _cast(xp, a, dtype):
    return a if a.dtype == dtype else xp.astype(a, dtype)


def _row_moments(p: _Problem, f, g, eps):
    """Row masses r_i of the plan and the softmax mean m_i and second moment s_i of y."""
    xp = p.xp
    d = p.x.shape[1]
    v = xp.concat([p.y, xp.sum(p.y * p.y, axis=1)[:, None]], axis=1)
    out, lse = p.kernel.row_average(v, p.log_b + g / eps, eps)
    mass = xp.where(p.log_a > -math.inf, xp.exp(p.log_a + f / eps + lse),
                    xp.zeros((), dtype=p.x.dtype, device=aa.device(p.x)))
    return mass, out[:, :d], out[:, d]


def _transport_cost(p: _Problem, f, g, eps) -> float:
    r"""<C, P> = sum_i r_i (|x_i - m_i|^2 + s_i - |m_i|^2) (one pass, v = [y, |y|^2])."""
    xp = p.xp
    mass, m1, m2 = _row_moments(p, f, g, eps)
    zero = xp.zeros((), dtype=p.x.dtype, device=aa.device(p.x))
    spread = xp.maximum(m2 - xp.sum(m1 * m1, axis=1), zero)
    row_cost = xp.sum((p.x - m1) ** 2, axis=1) + spread
    return V.host_float(xp.sum(mass * row_cost))


def _plan_gradients(p: _Problem, f, g, eps):
    r"""Envelope gradients of OT_eps: :math:`2\sum_j P_{ij}(x_i - y_j)` for x (rows) and
    :math:`2\sum_i P_{ij}(y_j - x_i)` for y (columns)."""
    xp = p.xp
    zero = xp.zeros((), dtype=p.x.dtype, device=aa.device(p.x))
    mass, m1, _ = _row_moments(p, f, g, eps)
    gx = 2.0 * mass[:, None] * (p.x - m1)
    mx, lse = p.kernel.col_average(p.x, p.log_a + f / eps, eps)
    cmass = xp.where(p.log_b > -math.inf, xp.exp(p.log_b + g / eps + lse), zero)
    gy = 2.0 * cmass[:, None] * (p.y - mx)
    return gx, gy


def _wants_grad(t) -> bool:
    return t is not None and bool(getattr(t, "requires_grad", False))


def _attach(xp, value, like, terms):
    """``value`` as a 0-d array that has gradient G for each (input, G) in ``terms``:
    value + sum <t - detach(t), G> (numerically value; O(N + M) memory)."""
    out = value if aa.is_array(value) else xp.asarray(value, dtype=like.dtype,
                                                      device=aa.device(like))
    for t, grad in terms:
        if _wants_grad(t):
            grad = xp.astype(xp.reshape(grad, tuple(t.shape)), t.dtype)
            out = out + xp.sum((t - t.detach()) * grad)
    return out


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class SinkhornResult:
    r"""Result of :func:`sinkhorn`: potentials, cost and convergence diagnostics.

    The plan is :math:`P_{ij} = a_i b_j \exp((f_i + g_j - C_{ij})/\varepsilon)` (see the module
    docstring); it is never formed unless :meth:`plan` is called.

    Attributes
    ----------
    f : array, shape (N,)
        Potential of the source points, in cost units.
    g : array, shape (M,)
        Potential of the target points, in cost units.
    cost : float (0-d tensor when an input requires grad)
        Transport cost :math:`\langle C, P\rangle` of the returned plan.
    n_iter : int
        Iterations run (one iteration updates ``g`` then ``f``), annealing stages included.
    converged : bool
        True only if ``marginal_error <= tol``.
    marginal_error : float
        :math:`\lVert P1 - a\rVert_1 + \lVert P^T1 - b\rVert_1` of the returned plan, both
        marginals recomputed at the end (in float64 where the namespace has it).
    epsilon : float
        The regularisation used (final value when epsilon-scaling was used).
    errors : list of float
        Marginal error at each check (in-loop estimates; the history).
    epsilons : list of float
        The epsilon of each iteration (constant unless ``scaling`` was given).
    dual_value : float (0-d tensor when an input requires grad)
        :math:`\langle f, a\rangle + \langle g, b\rangle` (the entropic OT value at convergence).
    relaxation : float
        The over-relaxation factor in use at the end (1.0: plain Sinkhorn).
    info : dict or None
        ``method="multiscale"``: what was truncated (clusters, coarse iterations, the
        fraction of pairs computed and the mass bound of every pair list; keys in
        :data:`arraygen._sinkhorn_multiscale.INFO_KEYS`). None for the exact solver.
    """

    f: Any
    g: Any
    cost: Any
    n_iter: int
    converged: bool
    marginal_error: float
    epsilon: float
    errors: list
    epsilons: list
    dual_value: Any
    relaxation: float = 1.0
    info: dict | None = None
    _x: Any = dataclasses.field(repr=False, default=None)
    _y: Any = dataclasses.field(repr=False, default=None)
    _shift: Any = dataclasses.field(repr=False, default=None)
    _log_a: Any = dataclasses.field(repr=False, default=None)
    _log_b: Any = dataclasses.field(repr=False, default=None)
    _fc: Any = dataclasses.field(repr=False, default=None)
    _gc: Any = dataclasses.field(repr=False, default=None)
    _out_dtype: Any = dataclasses.field(repr=False, default=None)
    _kernel: Any = dataclasses.field(repr=False, default=None)

    @property
    def _xp(self):
        return aa.array_namespace(x=self._x)

    def _row_log_scale(self):
        return self._log_a + self._fc / self.epsilon

    def _col_log_scale(self):
        return self._log_b + self._gc / self.epsilon

    def _problem(self) -> _Problem:
        return _Problem(self._xp, self._x, self._y, self._shift, self._log_a, self._log_b,
                        0.0, self._out_dtype, None, self._kernel)

    def _with_gradients(self, x, y, a, b) -> SinkhornResult:
        """Attach envelope-theorem gradients to ``cost`` and ``dual_value`` (autograd inputs)."""
        if not any(_wants_grad(t) for t in (x, y, a, b)):
            return self
        xp = self._xp
        gx, gy = _plan_gradients(self._problem(), self._fc, self._gc, self.epsilon)
        terms = [(x, gx), (y, gy), (a, self._fc), (b, self._gc)]
        like = next(t for t in (x, y, a, b) if _wants_grad(t))
        self.cost = _attach(xp, self.cost, like, terms)
        self.dual_value = _attach(xp, self.dual_value, like, terms)
        return self

    def _operand(self, v, rows: int, name: str):
        xp = self._xp
        v = V.as_array(v, name)
        aa.array_namespace(**{name: v, "x": self._x})
        aa.check_same_device(**{name: v, "x": self._x})
        if v.ndim not in (1, 2) or v.shape[0] != rows:
            raise ValueError(f"`{name}` must have shape ({rows},) or ({rows}, p); got shape "
                             f"{tuple(v.shape)}")
        v, _ = aa.as_float_array(xp, _detach(v), name)
        one_d = v.ndim == 1
        v = _cast(xp, v, self._x.dtype)
        return (xp.reshape(v, (rows, 1)) if one_d else v), one_d

    def _apply(self, v, name, rows_side: bool):
        xp = self._xp
        n_in = self._y.shape[0] if rows_side else self._x.shape[0]
        v, one_d = self._operand(v, n_in, name)
        if rows_side:
            out, lse = self._kernel.row_average(v, self._col_log_scale(), self.epsilon)
            scale = xp.exp(self._row_log_scale() + lse)
        else:
            out, lse = self._kernel.col_average(v, self._row_log_scale(), self.epsilon)
            scale = xp.exp(self._col_log_scale() + lse)
        res = scale[:, None] * out
        if one_d:
            res = xp.reshape(res, (res.shape[0],))
        return _cast(xp, res, self._out_dtype)

    def plan_matvec(self, v):
        r"""Plan-vector product :math:`(P v)_i = \sum_j P_{ij} v_j` (P is never formed).

        Parameters
        ----------
        v : array, shape (M,) or (M, p)
            One or ``p`` right-hand sides.

        Returns
        -------
        array, shape (N,) or (N, p), in the potentials' namespace and dtype.
        """
        return self._apply(v, "v", True)

    def plan_rmatvec(self, u):
        r"""Transposed product :math:`(P^T u)_j = \sum_i P_{ij} u_i`.

        Parameters
        ----------
        u : array, shape (N,) or (N, p)

        Returns
        -------
        array, shape (M,) or (M, p).
        """
        return self._apply(u, "u", False)

    def barycentric_map(self):
        r"""Barycentric projection :math:`T(x_i) = \sum_j P_{ij} y_j / \sum_j P_{ij}`.

        Computed as the softmax average of ``y`` with weights
        :math:`b_j e^{(g_j - C_{ij})/\varepsilon}`; defined also for points of zero mass.

        Returns
        -------
        array, shape (N, d), in the input's namespace, device and dtype.
        """
        out, _ = self._kernel.row_average(self._y, self._col_log_scale(), self.epsilon)
        return _cast(self._xp, out + self._shift, self._out_dtype)

    def plan(self, *, max_elements: int = PLAN_MAX_ELEMENTS):
        r"""The dense plan :math:`P` (N, M), computed in float64 where available.

        Parameters
        ----------
        max_elements : int
            Refuse (``ValueError``) when N * M exceeds this (default 2**26).

        Returns
        -------
        array, shape (N, M)
        """
        xp = self._xp
        max_elements = V.check_int(max_elements, "max_elements", minimum=1)
        n, m = self._x.shape[0], self._y.shape[0]
        if n * m > max_elements:
            nbytes = n * m * np.dtype(aa.dtype_name(self._x.dtype)).itemsize
            raise ValueError(
                f"plan() would materialise an N x M = {n} x {m} matrix ({nbytes / 1e6:.0f} MB), "
                f"above `max_elements` = {max_elements}; use plan_matvec(), plan_rmatvec() or "
                "barycentric_map(), which never form it, or pass a larger max_elements")
        wide = getattr(xp, "float64", self._x.dtype)
        x, y = xp.astype(self._x, wide), xp.astype(self._y, wide)
        rows = xp.astype(self._log_a, wide) + xp.astype(self._fc, wide) / self.epsilon
        cols = xp.astype(self._log_b, wide) + xp.astype(self._gc, wide) / self.epsilon
        logp = rows[:, None] + cols[None, :] - sqdist_dense(xp, x, y) / self.epsilon
        return _cast(xp, xp.exp(logp), self._out_dtype)


class BatchedSinkhornResult:
    """Results of B problems solved in one :func:`sinkhorn` call ((B, N, d) input).

    Attributes
    ----------
    results : list of SinkhornResult
        One per problem (also ``res[k]``, ``len(res)``, iteration).
    f, g : array, shape (B, N) and (B, M)
    cost, dual_value : array, shape (B,)
    converged : bool
        All problems converged.
    marginal_error : float
        The largest marginal error.
    n_iter : int
        The most iterations any problem took.
    """

    def __init__(self, results: list):
        self.results = list(results)
        first = self.results[0]
        xp, like = first._xp, first.f
        self.f = xp.stack([r.f for r in self.results])
        self.g = xp.stack([r.g for r in self.results])
        self.cost = self._stack(xp, [r.cost for r in self.results], like)
        self.dual_value = self._stack(xp, [r.dual_value for r in self.results], like)
        self.converged = all(r.converged for r in self.results)
        self.marginal_error = max(r.marginal_error for r in self.results)
        self.n_iter = max(r.n_iter for r in self.results)
        self.epsilon = first.epsilon

    @staticmethod
    def _stack(xp, values, like):
        if any(aa.is_array(v) for v in values):
            return xp.stack([v if aa.is_array(v) else xp.asarray(v, dtype=like.dtype,
                                                                 device=aa.device(like))
                             for v in values])
        return xp.asarray(values, dtype=like.dtype, device=aa.device(like))

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, k: int) -> SinkhornResult:
        return self.results[k]

    def __iter__(self):
        return iter(self.results)

    def plan_matvec(self, v):
        """Per-problem :meth:`SinkhornResult.plan_matvec`: ``v`` (B, M) or (B, M, p)."""
        xp = self.results[0]._xp
        v = V.as_array(v, "v")
        if v.ndim not in (2, 3) or v.shape[0] != len(self):
            raise ValueError(f"`v` must have shape ({len(self)}, M) or ({len(self)}, M, p); got "
                             f"shape {tuple(v.shape)}")
        return xp.stack([r.plan_matvec(v[k, ...]) for k, r in enumerate(self.results)])


# --------------------------------------------------------------------------------------------
# Sinkhorn divergence
# --------------------------------------------------------------------------------------------

def _self_problem(p: _Problem, side: str) -> _Problem:
    pts, logw = (p.x, p.log_a) if side == "x" else (p.y, p.log_b)
    return _Problem(p.xp, pts, pts, p.shift, logw, logw, p.scale, p.out_dtype, p.backend,
                    _kernel_for(p.xp, pts, pts, p.scale, p.backend,
                                dense=isinstance(p.kernel, DenseKernel)))


def _solve_self(q: _Problem, *, epsilon: float, max_iter: int, tol: float | None,
                scaling: float | None, **_unused):
    r"""Symmetric Sinkhorn for :math:`\mathrm{OT}_\varepsilon(a, a)` (GeomLoss's debiasing
    terms): :math:`f \leftarrow (f + T(f))/2`, :math:`T(f)_i = -\varepsilon \log\sum_j
    a_j e^{(f_j - C_{ij})/\varepsilon}`, which converges linearly where the alternating
    iteration crawls on a self-transport problem. Returns the potential ``f`` (the plan is
    :math:`a_i a_j e^{(f_i + f_j - C_{ij})/\varepsilon}`)."""
    if tol is None:
        tol = DEFAULT_TOL.get(aa.dtype_name(q.x.dtype), 1e-4)
    run = _Run(q, epsilon, tol, max_iter, 1, None, None)
    f = run.f
    schedule = _epsilon_schedule(q.scale, epsilon, scaling)
    for eps in schedule[:-1]:
        f = 0.5 * (f + run.f_of(f, eps))
    for _ in range(max_iter):
        t = run.f_of(f, epsilon)
        run.err = 2.0 * V.host_float(run._mismatch(q.log_a, t, f, epsilon))
        if run.err <= tol or not math.isfinite(run.err):
            break
        f = 0.5 * (f + t)
    if not run.err <= tol:
        warnings.warn(f"sinkhorn_divergence: the self-transport term did not converge (marginal "
                      f"L1 error {run.err:.3g} > tol {tol:.3g} after {max_iter} iterations)",
                      ConvergenceWarning, stacklevel=4)
    return f


def _same_measure(p: _Problem) -> bool:
    xp = p.xp
    return (tuple(p.x.shape) == tuple(p.y.shape) and bool(xp.all(p.x == p.y))
            and bool(xp.all(p.log_a == p.log_b)))


def _divergence(xp, x, y, a, b, opts, debias, check_finite, backend):
    """S_eps for one pair of clouds, with envelope gradients attached."""
    p = _problem(xp, x, y, a, b, epsilon=opts["epsilon"], check_finite=check_finite,
                 backend=backend)
    eps = opts["epsilon"]
    if debias and _same_measure(p):
        # S(a, a) = 0 exactly, and it is S's minimum: zero gradients
        zero = xp.zeros((), dtype=p.out_dtype, device=aa.device(p.x))
        return _attach(xp, zero, p.x, [(t, xp.zeros(tuple(t.shape), dtype=p.x.dtype,
                                                    device=aa.device(p.x)))
                                       for t in (x, y, a, b) if t is not None])
    solved = _solve(p, stacklevel=4, **opts)
    value = solved.dual_value
    gx, gy = _plan_gradients(p, solved._fc, solved._gc, eps)
    ga, gb = solved._fc, solved._gc
    if debias:
        for side in ("x", "y"):
            q = _self_problem(p, side)
            f = _solve_self(q, **opts)
            zero = xp.zeros((), dtype=f.dtype, device=aa.device(f))
            # 0.5 OT(a, a) = <a, f>; its gradients: 2 sum_j P_ij (x_i - x_j) and f
            value -= V.host_float(xp.sum(xp.where(q.log_a > -math.inf,
                                                  xp.exp(q.log_a) * f, zero)))
            mass, m1, _ = _row_moments(q, f, f, eps)
            rows = 2.0 * mass[:, None] * (q.x - m1)
            if side == "x":
                gx, ga = gx - rows, ga - f
            else:
                gy, gb = gy - rows, gb - f
    like = p.x
    out = xp.asarray(value, dtype=p.out_dtype, device=aa.device(like))
    return _attach(xp, out, like, [(x, gx), (y, gy), (a, ga), (b, gb)])


def _batched_divergence(xp, x, y, a, b, opts, debias, check_finite, backend):
    if x.ndim != 3 or y.ndim != 3 or x.shape[0] != y.shape[0]:
        raise ValueError("batched problems need `x` (B, N, d) and `y` (B, M, d) with the same "
                         f"B; got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    return xp.stack([_divergence(xp, x[k, ...], y[k, ...], None if a is None else a[k, ...],
                                 None if b is None else b[k, ...], opts, debias, check_finite,
                                 backend) for k in range(x.shape[0])])
