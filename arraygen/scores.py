r"""Score models built from data: the exact score of a noised empirical distribution.

:class:`EmpiricalScore` is the model a perfectly trained diffusion network would converge to on
a finite data set: the score of the VP-noised empirical measure
:math:`p_t = \sum_j w_j N(\alpha y_j, \sigma^2 I)` (:math:`\alpha^2 = \bar\alpha(t)`,
:math:`\sigma^2 = 1 - \bar\alpha(t)`). It is exact, so it serves tests, demos and benchmarks as
a ground truth for the samplers (a sampler driven by it reproduces the training points as
t -> 0).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from . import _array_api as aa
from . import _validation as V
from . import tiled as _tiled

__all__ = ["EmpiricalScore"]


class EmpiricalScore:
    r"""Exact score and denoiser of the VP-noised empirical distribution of ``data``.

    For :math:`x_t = \alpha x_0 + \sigma z` with :math:`x_0` drawn from the data points
    :math:`y_j` (with probabilities :math:`w_j`, uniform by default):

    .. math::

        E[x_0 \mid x_t = x] = \sum_j \pi_j(x)\, y_j,\qquad
        \pi_j(x) \propto w_j \exp\Bigl(-\frac{\lVert x - \alpha y_j\rVert^2}{2\sigma^2}\Bigr),
        \qquad
        \nabla\log p_t(x) = \frac{\alpha E[x_0 \mid x] - x}{\sigma^2}.

    Since :math:`\lVert x - \alpha y_j\rVert^2 = \alpha^2\lVert x/\alpha - y_j\rVert^2`, the
    weights are :math:`\mathrm{softmax}_j(\log w_j - \beta\lVert x/\alpha - y_j\rVert^2)` with
    :math:`\beta = \bar\alpha / (2(1-\bar\alpha))`: one call of the tiled online-softmax core
    (``arraygen.tiled._softmax_matvec``, the kernel behind
    :func:`arraygen.tiled.kernel_softmax_matvec`) on the points ``x / alpha`` against the data;
    the B x N weight matrix is never formed. At :math:`\bar\alpha = 0` the posterior is the
    prior (the weighted data mean). The score does not exist at :math:`\bar\alpha = 1`
    (t = 0), which raises.

    The data are validated once, here; each call checks only the query's library and shape
    (no host synchronisation unless ``t`` is an array of per-sample times).

    Tensors are flattened: ``data`` of shape (N, ...) and queries of shape (B, ...) with the
    same trailing shape; 1-D ``data`` of shape (N,) is N points in one dimension (queries (B,)).

    Parameters
    ----------
    data : array, shape (N, ...) or (N,)
        The data points (finite). Lists are read as NumPy arrays.
    schedule : NoiseSchedule
        Gives :math:`\bar\alpha(t)`.
    weights : array, shape (N,), optional
        Probabilities of the points (finite, non-negative, summing to 1).
    truncate : float > 0, optional
        Block-sparse softmax (issue 18). At small noise levels the posterior weights are
        dominated by the data points nearest to ``x / alpha``: the data are clustered once
        (here) and every evaluation clusters its queries and skips the (query cluster, data
        cluster) pairs whose largest possible weight is below :math:`e^{-\mathrm{truncate}^2}`
        times the largest weight of the row (:func:`arraygen.blocksparse.block_pairs`, in units
        of the kernel width :math:`\sigma/\alpha\sqrt2`). ``truncation_`` then reports the
        fraction of (query, data) pairs computed and ``mass_bound``, a bound on every query's
        skipped / kept posterior mass: the denoiser's error is at most
        ``mass_bound * max_j |y_j - E[x_0 | x]|`` per query (the score's, ``alpha / sigma^2``
        times that). Each evaluation then costs one host synchronisation (the pair count).
        Default None: the exact softmax over all data points.
    backend : str, optional
        Kernel backend of the softmax core (as :func:`arraygen.tiled.kernel_softmax_matvec`).

    Attributes
    ----------
    prediction : str
        ``"score"``: calling the model returns the score (pass ``prediction="score"`` to the
        samplers, or use :meth:`denoise` / :meth:`eps` with ``"x0"`` / ``"epsilon"``).
    truncation_ : TruncationReport or None
        With ``truncate``: what the most recent evaluation computed (for an array of times,
        the pair-weighted ``fraction`` and the largest ``mass_bound`` over its times); None
        before the first evaluation and without ``truncate``.

    Examples
    --------
    >>> import numpy as np
    >>> from arraygen.schedules import make_schedule
    >>> from arraygen.scores import EmpiricalScore
    >>> model = EmpiricalScore(np.array([[-1.0], [1.0]]), make_schedule("linear"))
    >>> model(np.zeros((1, 1)), 0.5)          # symmetric data: the score at 0 vanishes
    array([[0.]])
    >>> x0 = model.denoise(np.array([[3.0]]), 0.01)   # near t = 0: the nearest data point
    >>> bool(abs(x0[0, 0] - 1.0) < 1e-6)
    True
    """

    prediction = "score"

    def __init__(self, data, schedule, *, weights=None, truncate: float | None = None,
                 backend: str | None = None):
        from .schedules import NoiseSchedule

        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"`schedule` must be a NoiseSchedule (see make_schedule); got "
                            f"{type(schedule).__name__}")
        if backend is not None and not isinstance(backend, str):
            raise TypeError(f"`backend` must be a backend name or None; got {backend!r}")
        xp, (data, weights) = V.common_namespace(data=data, weights=weights)
        if data.ndim == 0 or data.shape[0] < 1:
            raise ValueError(f"`data` must have shape (N, ...) with N >= 1; got shape "
                             f"{tuple(data.shape)}")
        self.item_shape = tuple(int(s) for s in data.shape[1:])
        flat = xp.reshape(data, (data.shape[0], -1)) if data.ndim != 2 else data
        flat, _ = V.as_points(xp, flat, "data")
        self.xp = xp
        self.schedule = schedule
        self.data = flat
        self.backend = backend
        self.log_weights = None
        if weights is not None:
            w = V.as_vector(xp, weights, flat.shape[0], "weights", flat)
            lo = V.host_float(xp.min(w))
            if lo < 0:
                raise ValueError(f"`weights` must be non-negative; got minimum {lo:.6g}")
            total = V.host_float(xp.sum(w))
            tol = 1e-9 if w.dtype == xp.float64 else 1e-5
            if not abs(total - 1.0) <= tol:
                raise ValueError(f"`weights` must sum to 1 (probabilities); got sum {total!r}")
            safe = xp.where(w > 0, w, xp.ones_like(w))
            self.log_weights = xp.where(w > 0, xp.log(safe), xp.full_like(w, -math.inf))
        self._cast = {flat.dtype: (flat, self.log_weights)}
        self.truncate = None if truncate is None else V.check_scalar(truncate, "truncate",
                                                                     positive=True)
        self.truncation_ = None
        self._clustered = {}
        if self.truncate is not None:
            from .blocksparse import cluster_points

            cl = cluster_points(flat)
            logw = None if self.log_weights is None else xp.take(self.log_weights, cl.perm)
            self._clustered[flat.dtype] = (cl, logw)

    def __call__(self, x, t):
        """The score :math:`\\nabla\\log p_t(x)`, shaped like ``x`` (``model(x, t)``)."""
        return self.score(x, t)

    def __repr__(self) -> str:
        return (f"EmpiricalScore({self.data.shape[0]} points of shape {self.item_shape}, "
                f"{self.schedule!r})")

    # -- public quantities --------------------------------------------------------------------
    def denoise(self, x, t):
        r"""Posterior mean :math:`E[x_0 \mid x_t = x]`, shaped like ``x``."""
        return self._eval(x, t, "x0")

    def score(self, x, t):
        r"""Score :math:`\nabla\log p_t(x) = (\alpha E[x_0 \mid x] - x)/\sigma^2`."""
        return self._eval(x, t, "score")

    def eps(self, x, t):
        r"""Noise prediction :math:`(x - \alpha E[x_0 \mid x])/\sigma`."""
        return self._eval(x, t, "epsilon")

    # -- implementation -----------------------------------------------------------------------
    def _flatten(self, x):
        if not aa.is_array(x):
            x = V.as_array(x, "x")
        xp = aa.array_namespace(x=x, data=self.data)
        aa.check_same_device(x=x, data=self.data)
        if x.ndim < 1 or tuple(x.shape[1:]) != self.item_shape:
            want = ", ".join(["B"] + [str(s) for s in self.item_shape])
            raise ValueError(f"`x` must have shape ({want}) like the data's items; got shape "
                             f"{tuple(x.shape)}")
        xf, out_dtype = aa.as_float_array(xp, xp.reshape(x, (x.shape[0], -1)), "x")
        return xp, xf, out_dtype

    def _eval(self, x, t, target: str):
        xp, xf, out_dtype = self._flatten(x)
        b = xf.shape[0]
        if aa.is_array(t) and math.prod(t.shape) > 1:
            t_host = np.asarray(aa.to_numpy(t), dtype=np.float64).reshape(-1)
            if t_host.shape[0] != b:
                raise ValueError(f"`t` must be a scalar or have shape ({b},); got shape "
                                 f"{tuple(t.shape)}")
            values = np.unique(t_host)
            parts, reports = [], []
            for v in values:
                idx = np.nonzero(t_host == v)[0]
                sel = xp.asarray(idx, device=aa.device(xf))
                parts.append((idx, self._at(xp, xp.take(xf, sel, axis=0),
                                            self._time(float(v)), target)))
                reports.append((idx.shape[0], self.truncation_))
            if self.truncate is not None:
                self.truncation_ = _merge_reports(reports, b)
            order = np.concatenate([idx for idx, _ in parts])
            stacked = xp.concat([p for _, p in parts], axis=0)
            inverse = np.empty(b, dtype=np.int64)
            inverse[order] = np.arange(b)
            out = xp.take(stacked, xp.asarray(inverse, device=aa.device(xf)), axis=0)
        else:
            out = self._at(xp, xf, self._time(V.check_scalar(t, "t")), target)
        out = xp.reshape(out, tuple(x.shape))
        return out if out.dtype == out_dtype else xp.astype(out, out_dtype)

    def _time(self, t: float) -> float:
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"`t` must be in [0, 1]; got {t}")
        ab = float(self.schedule.alpha_bar(t))
        if ab >= 1.0:
            raise ValueError(f"the noised empirical score is undefined at alpha_bar = 1 "
                             f"(t = {t}); evaluate at t > 0")
        return ab

    def _data_in(self, xp, dtype):
        hit = self._cast.get(dtype)
        if hit is None:
            w = self.log_weights
            hit = (xp.astype(self.data, dtype), None if w is None else xp.astype(w, dtype))
            self._cast[dtype] = hit
        return hit

    def _sorted_data(self, xp, dtype):
        """Clusters of the data (points in ``dtype``) and log-weights in their order."""
        hit = self._clustered.get(dtype)
        if hit is None:
            cl, logw = next(iter(self._clustered.values()))
            cl = dataclasses.replace(cl, points=xp.astype(cl.points, dtype))
            hit = (cl, None if logw is None else xp.astype(logw, dtype))
            self._clustered[dtype] = hit
        return hit

    def _posterior_truncated(self, xp, xq, beta: float):
        """Block-sparse softmax average of the data for the queries ``xq`` (user order)."""
        from .blocksparse import block_pairs, cluster_points

        cd, logw = self._sorted_data(xp, xq.dtype)
        cq = cluster_points(xq)
        pairs = block_pairs(cq, cd, beta=beta, truncate=self.truncate, log_weights=logw)
        self.truncation_ = _report(self.truncate, pairs)
        post, _ = _tiled._softmax_matvec(xp, cq.points, cd.points, cd.points, logw, beta=beta,
                                         backend=self.backend, pairs=pairs, xc=cq, yc=cd)
        return xp.take(post, cq.inverse, axis=0)

    def _at(self, xp, xf, ab: float, target: str):
        data, logw = self._data_in(xp, xf.dtype)
        if ab > 0.0 and self.truncate is not None:
            post = self._posterior_truncated(xp, xf / math.sqrt(ab), ab / (2.0 * (1.0 - ab)))
        elif ab <= 0.0:
            if logw is None:
                mean = xp.mean(data, axis=0)
            else:
                mean = xp.sum(xp.exp(logw)[:, None] * data, axis=0)
            post = xp.broadcast_to(mean[None, :], tuple(xf.shape))
        else:
            alpha = math.sqrt(ab)
            beta = ab / (2.0 * (1.0 - ab))
            post, _ = _tiled._softmax_matvec(xp, xf / alpha, data, data, logw, beta=beta,
                                             backend=self.backend)
        if ab <= 0.0 and self.truncate is not None:   # the prior: every point, nothing skipped
            from .blocksparse import TruncationReport

            self.truncation_ = TruncationReport(truncate=self.truncate, fraction=1.0,
                                                mass_bound=0.0, n_pairs_blocks=None)
        if target == "x0":
            return post
        alpha, var = math.sqrt(ab), 1.0 - ab
        if target == "score":
            return (alpha * post - xf) / var
        return (xf - alpha * post) / math.sqrt(var)


def _report(truncate: float, pairs):
    from .blocksparse import TruncationReport

    return TruncationReport(truncate=truncate, fraction=float(pairs.fraction),
                            mass_bound=float(pairs.mass_bound), n_pairs_blocks=pairs.nnz)


def _merge_reports(reports, total: int):
    """One report for an evaluation split by time: pair-weighted fraction, worst bound."""
    from .blocksparse import TruncationReport

    blocks = [r.n_pairs_blocks for _, r in reports]
    return TruncationReport(
        truncate=reports[0][1].truncate,
        fraction=sum(b * r.fraction for b, r in reports) / float(total),
        mass_bound=max(r.mass_bound for _, r in reports),
        n_pairs_blocks=None if any(k is None for k in blocks) else sum(blocks))
