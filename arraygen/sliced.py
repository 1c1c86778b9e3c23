r"""Sliced optimal transport: sliced and max-sliced Wasserstein distances, sliced OT maps.

Each direction :math:`\theta` reduces OT to one dimension, where it is exact: sort and
subtract for equal sizes and uniform weights, quantile functions otherwise. The definitions
are POT's (``ot.sliced_wasserstein_distance``, ``ot.max_sliced_wasserstein_distance``).
"""

from __future__ import annotations

import numpy as np

from . import _array_api as aa
from . import _validation as V
from . import random as _random

__all__ = ["max_sliced_wasserstein", "sliced_ot_map", "sliced_wasserstein"]


def _detach(a):
    return a.detach() if aa.is_torch_array(a) else a


def _gaussian_matrix(gen, shape, like):
    """Standard normals in ``like``'s namespace/device/dtype from a Key or a NumPy Generator."""
    xp = aa.array_namespace(like=like)
    if isinstance(gen, np.random.Generator):
        host = gen.standard_normal(shape)
        return xp.asarray(host.astype(str(like.dtype).split(".")[-1]), device=aa.device(like))
    return _random.normal(gen, shape, dtype=like.dtype, like=like)


def _random_directions(gen, n: int, d: int, like):
    """``n`` unit vectors uniform on the sphere, shape (n, d) (normalised Gaussians)."""
    xp = aa.array_namespace(like=like)
    z = _gaussian_matrix(gen, (n, d), like)
    return z / xp.linalg.vector_norm(z, axis=1, keepdims=True)


def _orthonormal_directions(gen, n: int, d: int, like):
    """``n`` directions made of ceil(n/d) Haar-random orthonormal bases, shape (n, d)."""
    xp = aa.array_namespace(like=like)
    blocks = -(-n // d)
    z = _gaussian_matrix(gen, (blocks, d, d), like)
    q, r = xp.linalg.qr(z)
    diag = xp.stack([r[:, k, k] for k in range(d)], axis=1)
    one = xp.ones((), dtype=like.dtype, device=aa.device(like))
    q = q * xp.where(diag < 0, -one, one)[:, None, :]
    return xp.reshape(xp.permute_dims(q, (0, 2, 1)), (blocks * d, d))[:n, :]


def _wasserstein_1d_pp(xp, u, v, a, b, p: float):
    r"""Per-column :math:`W_p^p` between 1-D empirical measures, exactly.

    ``u`` (N, P), ``v`` (M, P): P projected samples; ``a`` (N,), ``b`` (M,) weights or None.
    Equal sizes and uniform weights: sort and subtract. Otherwise the quantile functions
    :math:`\int_0^1 |F^{-1}(q) - G^{-1}(q)|^p dq` over the merged breakpoints of both CDFs.
    """
    n, m, k = u.shape[0], v.shape[0], u.shape[1]
    if a is None and b is None and n == m:
        return xp.mean(xp.abs(xp.sort(u, axis=0) - xp.sort(v, axis=0)) ** p, axis=0)
    f64, dev = xp.float64, aa.device(u)
    iu, iv = xp.argsort(u, axis=0), xp.argsort(v, axis=0)
    us, vs = xp.take_along_axis(u, iu, axis=0), xp.take_along_axis(v, iv, axis=0)

    def cdf(w, idx, size):
        if w is None:
            steps = xp.full((size, k), 1.0 / size, dtype=f64, device=dev)
        else:
            steps = xp.reshape(xp.take(xp.astype(w, f64), xp.reshape(idx, (-1,))), (size, k))
        return xp.cumulative_sum(steps, axis=0)

    cu, cv = cdf(a, iu, n), cdf(b, iv, m)
    qs = xp.sort(xp.concat([cu, cv], axis=0), axis=0)
    # columns side by side on one line: column j shifted by 2j, so one searchsorted serves all
    offset = 2.0 * xp.arange(k, dtype=f64, device=dev)[None, :]

    def quantile(c, sorted_vals, size):
        flat_c = xp.reshape(xp.matrix_transpose(c + offset), (-1,))
        flat_q = xp.reshape(xp.matrix_transpose(qs + offset), (-1,))
        idx = xp.reshape(xp.searchsorted(flat_c, flat_q), (k, n + m))
        base = xp.arange(k, dtype=idx.dtype, device=dev)[:, None] * size
        idx = xp.clip(idx - base, 0, size - 1)
        return xp.matrix_transpose(xp.take_along_axis(xp.matrix_transpose(sorted_vals), idx,
                                                      axis=1))

    uq, vq = quantile(cu, us, n), quantile(cv, vs, m)
    delta = qs - xp.concat([xp.zeros((1, k), dtype=f64, device=dev), qs[:-1, :]], axis=0)
    diff = xp.astype(xp.abs(uq - vq), f64) ** p
    return xp.astype(xp.sum(delta * diff, axis=0), u.dtype)


def _projected(x, y, n_projections, p, rng, a, b, projections, check_finite):
    """The boundary of the sliced distances, then W_p^p along each direction: (wpp, theta)."""
    p = V.check_scalar(p, "p", low=1.0)
    xp, (x, y, a, b, projections) = V.common_namespace(x=x, y=y, a=a, b=b,
                                                       projections=projections)
    x, y, _ = V.as_point_pair(xp, _detach(x), _detach(y), ("x", "y"),
                              check_finite=check_finite)
    a, b = V.as_marginals(xp, _detach(a), _detach(b), x.shape[0], y.shape[0], x)
    d = x.shape[1]
    if projections is None:
        n_projections = V.check_int(n_projections, "n_projections", minimum=1)
        theta = _random_directions(_random.as_key(rng), n_projections, d, x)
    else:
        if projections.ndim != 2 or projections.shape[1] != d:
            raise ValueError(f"`projections` must have shape (L, {d}) (one unit direction per "
                             f"row); got shape {tuple(projections.shape)}")
        theta, _ = aa.as_float_array(xp, _detach(projections), "projections")
        theta = theta if theta.dtype == x.dtype else xp.astype(theta, x.dtype)
    ht = xp.matrix_transpose(theta)
    wpp = _wasserstein_1d_pp(xp, xp.matmul(x, ht), xp.matmul(y, ht), a, b, p)
    return xp, xp.astype(wpp, xp.float64), theta, p


def sliced_wasserstein(x, y, n_projections: int = 128, p: float = 2, rng=None, *, a=None,
                       b=None, projections=None, log: bool = False, check_finite: bool = True):
    r"""Sliced Wasserstein distance, Monte Carlo over random directions (as POT's).

    .. math::

        SW_p(\mu, \nu) = \Big(\frac{1}{L}\sum_{l=1}^{L}
                         W_p^p(\theta_{l\#}\mu, \theta_{l\#}\nu)\Big)^{1/p}

    with :math:`\theta_l` uniform on the unit sphere: the definition of POT's
    ``ot.sliced_wasserstein_distance``. Each 1-D :math:`W_p^p` is exact.

    Parameters
    ----------
    x : array, shape (N, d) (or (N,))
    y : array, shape (M, d)
    n_projections : int
        Number of directions L (fresh directions on every call unless ``rng`` fixes them).
    p : float
        Order, >= 1.
    rng : int, Key or numpy.random.Generator, optional
        Source of the directions (Philox normals from an int or Key, drawn on the inputs'
        device; a Generator draws on the host). None: fresh OS entropy.
    a, b : array, shape (N,) and (M,), optional
        Non-negative weights summing to 1 (default uniform).
    projections : array, shape (L, d), optional
        Use these unit directions instead of drawing (``n_projections`` and ``rng`` ignored).
        POT's ``projections`` argument is the transpose, shape (d, L).
    log : bool
        Also return a dict with ``"projections"`` (L, d) and ``"projected_emds"`` (L,), the
        per-direction :math:`W_p^p` (POT's ``log=True``, whose projections are (d, L)).
    check_finite : bool
        Validate that ``x`` and ``y`` are finite.

    Returns
    -------
    float (and the dict when ``log``)

    Examples
    --------
    >>> import numpy as np
    >>> from arraygen.sliced import sliced_wasserstein
    >>> x = np.random.default_rng(0).normal(size=(200, 3))
    >>> round(sliced_wasserstein(x, x + np.array([1.0, 0.0, 0.0]), rng=0, p=1), 2) > 0
    True
    """
    xp, wpp, theta, p = _projected(x, y, n_projections, p, rng, a, b, projections,
                                   check_finite)
    value = V.host_float(xp.mean(wpp)) ** (1.0 / p)
    if log:
        return value, {"projections": theta, "projected_emds": wpp}
    return value


def max_sliced_wasserstein(x, y, n_projections: int = 128, p: float = 2, rng=None, *, a=None,
                           b=None, projections=None, log: bool = False,
                           check_finite: bool = True):
    r"""Max-sliced Wasserstein distance over random directions (as POT's).

    .. math:: \max_{l} W_p(\theta_{l\#}\mu, \theta_{l\#}\nu)

    POT's ``ot.max_sliced_wasserstein_distance``: the largest 1-D distance over the drawn
    directions (a lower bound of the true max-sliced distance, tight as L grows).

    Parameters
    ----------
    x, y, n_projections, p, rng, a, b, projections, log, check_finite
        As in :func:`sliced_wasserstein`.

    Returns
    -------
    float (and the dict of :func:`sliced_wasserstein` when ``log``)

    Examples
    --------
    >>> import numpy as np
    >>> from arraygen.sliced import max_sliced_wasserstein
    >>> x = np.random.default_rng(0).normal(size=(100, 2))
    >>> d = max_sliced_wasserstein(x, x + np.array([3.0, 0.0]), n_projections=500, rng=0)
    >>> 2.9 < d <= 3.0 + 1e-9
    True
    """
    xp, wpp, theta, p = _projected(x, y, n_projections, p, rng, a, b, projections,
                                   check_finite)
    value = V.host_float(xp.max(wpp)) ** (1.0 / p)
    if log:
        return value, {"projections": theta, "projected_emds": wpp}
    return value


def sliced_ot_map(x, y, *, n_projections: int = 64, rng=None, n_iter: int = 1,
                  step: float = 1.0, check_finite: bool = True):
    r"""Move ``x`` toward ``y`` by sliced optimal transport (iterative distribution transfer).

    Each iteration draws ``L = n_projections`` fresh directions :math:`\theta_l` (blocks of
    Haar-random orthonormal bases), solves the 1-D OT problem along each (quantile matching:
    the point of rank r among N goes to the ``y``-quantile at level (r + 1/2)/N), and moves

    .. math::

        x_i \leftarrow x_i + \mathrm{step}\,\frac{d}{L}\sum_{l=1}^{L}
            \big(T_l(\langle x_i,\theta_l\rangle) - \langle x_i,\theta_l\rangle\big)\,\theta_l .

    :math:`E[\theta\theta^T] = I/d` for uniform directions makes the expected step the full
    displacement; with a full orthonormal basis (L = d) it is exact (Pitié et al. 2007).

    Parameters
    ----------
    x : array, shape (N, d)
        Points to move.
    y : array, shape (M, d)
        Target samples (M may differ from N).
    n_projections : int
        Directions per iteration (a multiple of d uses whole bases).
    rng : int, Key or numpy.random.Generator, optional
        Source of the directions; iteration k uses ``key.advance(k)``.
    n_iter : int
        Iterations (fresh directions each).
    step : float
        Step size; 1 applies the full estimated displacement.
    check_finite : bool
        Validate that ``x`` and ``y`` are finite.

    Returns
    -------
    array, shape (N, d), in ``x``'s namespace, device and dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from arraygen.sliced import sliced_ot_map
    >>> x = np.random.default_rng(0).normal(size=(64, 2))
    >>> out = sliced_ot_map(x, x + 1.0, n_projections=2, rng=0)
    >>> bool(np.allclose(out, x + 1.0))
    True
    """
    n_projections = V.check_int(n_projections, "n_projections", minimum=1)
    n_iter = V.check_int(n_iter, "n_iter", minimum=0)
    step = V.check_scalar(step, "step", positive=True)
    xp, (x, y) = V.common_namespace(x=x, y=y)
    shape = tuple(x.shape)
    x, y, out_dtype = V.as_point_pair(xp, _detach(x), _detach(y), ("x", "y"),
                                      check_finite=check_finite)
    gen = _random.as_key(rng)
    n, m, d = x.shape[0], y.shape[0], x.shape[1]
    for it in range(n_iter):
        g = gen if isinstance(gen, np.random.Generator) else gen.advance(it)
        theta = _orthonormal_directions(g, n_projections, d, x)
        ht = xp.matrix_transpose(theta)
        u = xp.matmul(x, ht)
        vs = xp.sort(xp.matmul(y, ht), axis=0)
        rank = xp.argsort(xp.argsort(u, axis=0), axis=0)
        j = xp.clip(((2 * rank + 1) * m) // (2 * n), 0, m - 1)
        target = xp.take_along_axis(vs, xp.astype(j, xp.int64), axis=0)
        x = x + (step * d / n_projections) * xp.matmul(target - u, theta)
    x = xp.reshape(x, shape)
    return x if x.dtype == out_dtype else xp.astype(x, out_dtype)
