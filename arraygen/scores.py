r"""Score models built from data: the exact score of a noised empirical distribution.

:class:`EmpiricalScore` is the model a perfectly trained diffusion network would converge to on
a finite data set: the score of the VP-noised empirical measure
:math:`p_t = \frac1N\sum_j N(\alpha y_j, \sigma^2 I)` (:math:`\alpha^2 = \bar\alpha(t)`,
:math:`\sigma^2 = 1 - \bar\alpha(t)`). It is exact, so it serves tests and demos as a ground
truth for the samplers (a sampler driven by it reproduces the training points as t -> 0).
"""

from __future__ import annotations

import math

import numpy as np

from . import _array_api as aa

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
    :math:`\beta = \bar\alpha / (2(1-\bar\alpha))`, which is exactly
    :func:`arraygen.tiled.kernel_softmax_matvec` on the points ``x / alpha`` against the data
    (tiled: the B x N weight matrix is never formed). At :math:`\bar\alpha = 0` the posterior
    is the prior (the weighted data mean). The score does not exist at
    :math:`\bar\alpha = 1` (t = 0), which raises.

    Images and other tensors are flattened: ``data`` of shape (N, ...) and queries of shape
    (B, ...) with the same trailing shape.

    Parameters
    ----------
    data : array, shape (N, ...)
        The data points (finite).
    schedule : NoiseSchedule
        Gives :math:`\bar\alpha(t)`.
    weights : array, shape (N,), optional
        Probabilities of the points (non-negative, summing to 1).
    backend : str, optional
        Passed to :func:`~arraygen.tiled.kernel_softmax_matvec`.

    Examples
    --------
    >>> import numpy as np
    >>> from arraygen.schedules import make_schedule
    >>> from arraygen.scores import EmpiricalScore
    >>> model = EmpiricalScore(np.array([[-1.0], [1.0]]), make_schedule("linear"))
    >>> score = model(np.zeros((1, 1)), 0.5)    # model(x, t), prediction="score"
    """

    prediction = "score"

    def __init__(self, data, schedule, *, weights=None, backend: str | None = None):
        xp = aa.array_namespace(data=data, weights=weights)
        if not hasattr(schedule, "alpha_bar"):
            raise TypeError(f"`schedule` must be a NoiseSchedule (see make_schedule); got "
                            f"{type(schedule).__name__}")
        if data.ndim < 2 or data.shape[0] < 1:
            raise ValueError(f"`data` must have shape (N, ...) with N >= 1 and at least one "
                             f"feature axis; got shape {tuple(data.shape)}")
        flat, _ = aa.as_float_array(xp, xp.reshape(data, (data.shape[0], -1)), "data")
        if not aa.all_finite(xp, flat):
            raise ValueError("`data` contains non-finite values")
        self.xp = xp
        self.schedule = schedule
        self.item_shape = tuple(int(s) for s in data.shape[1:])
        self.data = flat
        self.backend = backend
        self.log_weights = None
        if weights is not None:
            aa.check_same_device(data=data, weights=weights)
            w = xp.astype(weights, flat.dtype)
            if tuple(w.shape) != (flat.shape[0],):
                raise ValueError(f"`weights` must have shape ({flat.shape[0]},); got shape "
                                 f"{tuple(weights.shape)}")
            if not aa.all_finite(xp, w) or bool(xp.any(w < 0)):
                raise ValueError("`weights` must be finite and non-negative")
            total = float(xp.sum(w))
            if abs(total - 1.0) > 1e-6:
                raise ValueError(f"`weights` must sum to 1; got sum {total!r}")
            safe = xp.where(w > 0, w, xp.ones_like(w))
            self.log_weights = xp.where(w > 0, xp.log(safe), xp.full_like(w, -math.inf))

    def __call__(self, x, t):
        """The score :math:`\\nabla\\log p_t(x)`, shaped like ``x`` (``model(x, t)``)."""
        return self.score(x, t)

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
        xp = aa.array_namespace(x=x, data=self.data)
        aa.check_same_device(x=x, data=self.data)
        if tuple(x.shape[1:]) != self.item_shape or x.ndim < 2:
            raise ValueError(f"`x` must have shape (B, {', '.join(map(str, self.item_shape))}) "
                             f"like the data's items; got shape {tuple(x.shape)}")
        xf, out_dtype = aa.as_float_array(xp, xp.reshape(x, (x.shape[0], -1)), "x")
        return xp, xf, out_dtype

    def _eval(self, x, t, target: str):
        xp, xf, out_dtype = self._flatten(x)
        b = xf.shape[0]
        if aa.is_array(t):
            t_host = np.asarray(aa.to_numpy(t), dtype=np.float64).reshape(-1)
            if t_host.shape[0] not in (1, b):
                raise ValueError(f"`t` must be a scalar or have shape ({b},); got shape "
                                 f"{tuple(t.shape)}")
            values = np.unique(t_host)
            if values.shape[0] == 1:
                out = self._at(xp, xf, float(values[0]), target)
            else:
                parts = []
                for v in values:
                    idx = np.nonzero(t_host == v)[0]
                    sel = xp.asarray(idx, device=aa.device(xf))
                    parts.append((idx, self._at(xp, xp.take(xf, sel, axis=0), float(v), target)))
                order = np.concatenate([idx for idx, _ in parts])
                stacked = xp.concat([p for _, p in parts], axis=0)
                inverse = np.empty(b, dtype=np.int64)
                inverse[order] = np.arange(b)
                out = xp.take(stacked, xp.asarray(inverse, device=aa.device(xf)), axis=0)
        else:
            out = self._at(xp, xf, aa.finite_scalar(t, "t"), target)
        out = xp.reshape(out, tuple(x.shape))
        return out if out.dtype == out_dtype else xp.astype(out, out_dtype)

    def _at(self, xp, xf, t: float, target: str):
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"`t` must be in [0, 1]; got {t}")
        ab = float(self.schedule.alpha_bar(t))
        if ab >= 1.0:
            raise ValueError(f"the noised empirical score is undefined at alpha_bar = 1 "
                             f"(t = {t}); evaluate at t > 0")
        data = self.data if self.data.dtype == xf.dtype else xp.astype(self.data, xf.dtype)
        if ab <= 0.0:
            if self.log_weights is None:
                post = xp.broadcast_to(xp.mean(data, axis=0)[None, :], tuple(xf.shape))
            else:
                w = xp.astype(xp.exp(self.log_weights), xf.dtype)
                post = xp.broadcast_to(xp.sum(w[:, None] * data, axis=0)[None, :],
                                       tuple(xf.shape))
        else:
            from .tiled import kernel_softmax_matvec

            alpha = math.sqrt(ab)
            beta = ab / (2.0 * (1.0 - ab))
            post, _ = kernel_softmax_matvec(xf / alpha, data, data, beta=beta,
                                            log_weights=self.log_weights, backend=self.backend)
        if target == "x0":
            return post
        alpha, var = math.sqrt(ab), 1.0 - ab
        if target == "score":
            return (alpha * post - xf) / var
        return (xf - alpha * post) / math.sqrt(var)


