"""Model-output kinds and the converters between them (score, epsilon, x0, v; flow velocity),
and Imagen's dynamic thresholding. Public names are re-exported by :mod:`arraygen.samplers`."""

from __future__ import annotations

import math

from . import _array_api as aa
from . import _validation as _v

#: Model output kinds; ``"velocity"`` is for the flow-matching samplers only.
PREDICTIONS = ("score", "epsilon", "x0", "v", "velocity")
_VP_PREDICTIONS = ("score", "epsilon", "x0", "v")


# --------------------------------------------------------------------------------------------
# prediction converters
# --------------------------------------------------------------------------------------------

def _check_prediction(prediction: str, allowed=_VP_PREDICTIONS, name: str = "prediction"):
    if prediction not in allowed:
        hint = ""
        if prediction == "velocity":
            hint = " (flow-matching velocity models go to sample_flow_heun/sde/ddim)"
        raise ValueError(f"`{name}` must be one of {allowed}; got {prediction!r}{hint}")


def _coefficients(xp, alpha_bar, like):
    """(alpha, sigma) as Python floats or arrays broadcast along ``like``'s first axis."""
    if aa.is_array(alpha_bar):
        aa.array_namespace(alpha_bar=alpha_bar, x=like)
        ab = xp.astype(alpha_bar, xp.float64)
        if ab.ndim > 1 or (ab.ndim == 1 and ab.shape[0] != like.shape[0]):
            raise ValueError(f"`alpha_bar` must be a scalar or have shape ({like.shape[0]},); "
                             f"got shape {tuple(alpha_bar.shape)}")
        ab = xp.reshape(ab, (-1,) + (1,) * (like.ndim - 1)) if ab.ndim == 1 else ab
        a = xp.astype(xp.sqrt(ab), like.dtype)
        s = xp.astype(xp.sqrt(1.0 - ab), like.dtype)
        return a, s
    ab = _v.check_scalar(alpha_bar, "alpha_bar", low=0.0, high=1.0)
    return math.sqrt(ab), math.sqrt(1.0 - ab)


def convert_prediction(output, x, alpha_bar, *, source: str, target: str):
    r"""Convert a VP model output between ``score``, ``epsilon``, ``x0`` and ``v``.

    With :math:`\alpha = \sqrt{\bar\alpha}`, :math:`\sigma = \sqrt{1-\bar\alpha}` and
    ``x = alpha x0 + sigma epsilon``:
    ``score = -epsilon / sigma = (alpha x0 - x) / sigma^2``,
    ``x0 = (x + sigma^2 score) / alpha = (x - sigma epsilon) / alpha = alpha x - sigma v``,
    ``epsilon = (x - alpha x0) / sigma = sigma x + alpha v``,
    ``v = alpha epsilon - sigma x0``.

    Parameters
    ----------
    output : array, shape (B, ...)
        The model output of kind ``source``.
    x : array, shape (B, ...)
        The noisy input it was computed at.
    alpha_bar : float or array of shape () or (B,)
        :math:`\bar\alpha(t)` of each sample. Conversions dividing by ``alpha`` are undefined
        at ``alpha_bar = 0``, those dividing by ``sigma`` at ``alpha_bar = 1``.
    source, target : {"score", "epsilon", "x0", "v"}

    Returns
    -------
    array like ``output``.
    """
    _check_prediction(source, name="source")
    _check_prediction(target, name="target")
    xp = aa.array_namespace(output=output, x=x)
    aa.check_same_device(output=output, x=x)
    if tuple(output.shape) != tuple(x.shape):
        raise ValueError(f"`output` and `x` must have the same shape; got {tuple(output.shape)}"
                         f" and {tuple(x.shape)}")
    a, s = _coefficients(xp, alpha_bar, x)
    return _convert(output, x, a, s, source, target)


def _convert(out, x, a, s, source: str, target: str):
    """Conversion with (alpha, sigma) already resolved (floats or broadcastable arrays)."""
    if source == target:
        return out
    if target == "x0":
        if source == "score":
            return (x + (s * s) * out) / a
        if source == "epsilon":
            return (x - s * out) / a
        return a * x - s * out  # v
    if target == "epsilon":
        if source == "score":
            return -s * out
        if source == "x0":
            return (x - a * out) / s
        return s * x + a * out  # v
    if target == "score":
        if source == "epsilon":
            return -out / s
        if source == "x0":
            return (a * out - x) / (s * s)
        return -(s * x + a * out) / s  # v
    # target v
    if source == "score":
        return -s * (x + out) / a
    if source == "epsilon":
        return (out - s * x) / a
    return (a * x - out) / s  # x0


def to_x0(output, x, alpha_bar, *, prediction: str):
    """The denoised estimate from a model output (see :func:`convert_prediction`)."""
    return convert_prediction(output, x, alpha_bar, source=prediction, target="x0")


def to_eps(output, x, alpha_bar, *, prediction: str):
    """The noise estimate from a model output (see :func:`convert_prediction`)."""
    return convert_prediction(output, x, alpha_bar, source=prediction, target="epsilon")


def to_score(output, x, alpha_bar, *, prediction: str):
    """The score estimate from a model output (see :func:`convert_prediction`)."""
    return convert_prediction(output, x, alpha_bar, source=prediction, target="score")


def to_v(output, x, alpha_bar, *, prediction: str):
    """The v-prediction from a model output (see :func:`convert_prediction`)."""
    return convert_prediction(output, x, alpha_bar, source=prediction, target="v")


def flow_to_data(v, x, t):
    r"""Flow matching: :math:`E[x_1 \mid x_t] = x + (1 - t) v` (t = 0 noise, t = 1 data)."""
    return x + (1.0 - t) * v


def flow_to_noise(v, x, t):
    r"""Flow matching: :math:`E[x_0 \mid x_t] = x - t v` (the noise end)."""
    return x - t * v


def flow_score(v, x, t):
    r"""Flow matching score of the linear path: :math:`\nabla \log p_t = (t v - x)/(1 - t)`.

    For ``x_t = (1 - t) x_0 + t x_1`` with ``x_0 ~ N(0, I)``:
    :math:`\nabla\log p_t(x) = -E[x_0 \mid x_t]/(1-t)` and :math:`E[x_0 \mid x_t] = x - t v`.
    Undefined at t = 1.
    """
    return (t * v - x) / (1.0 - t)


# --------------------------------------------------------------------------------------------
# dynamic thresholding
# --------------------------------------------------------------------------------------------

def dynamic_threshold(x0, percentile: float = 0.995, *, floor: float = 1.0):
    r"""Imagen dynamic thresholding of a denoised estimate, per sample.

    ``s = max(quantile(|x0_b|, percentile), floor)`` over all elements of sample ``b``
    (linear interpolation at rank ``percentile * (n - 1)``), then
    ``x0_b <- clip(x0_b, -s, s) / s``.

    Parameters
    ----------
    x0 : array, shape (B, ...)
    percentile : float
        In (0, 1]; Imagen uses 0.995.
    floor : float
        Lower bound of ``s`` (1: samples already inside [-1, 1] are left unchanged).

    Returns
    -------
    array like ``x0``.
    """
    xp = aa.array_namespace(x0=x0)
    percentile = _v.check_scalar(percentile, "percentile", low=0.0, high=1.0,
                                 low_inclusive=False)
    floor = _v.check_scalar(floor, "floor", positive=True)
    if x0.ndim < 1 or x0.shape[0] == 0:
        raise ValueError(f"`x0` must have a non-empty batch axis; got shape {tuple(x0.shape)}")
    b = x0.shape[0]
    flat = xp.sort(xp.reshape(xp.abs(x0), (b, -1)), axis=1)
    n = flat.shape[1]
    pos = percentile * (n - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    q = flat[:, lo] * (1.0 - frac) + flat[:, hi] * frac
    s = xp.maximum(q, xp.full_like(q, floor))
    s = xp.reshape(s, (b,) + (1,) * (x0.ndim - 1))
    return xp.minimum(xp.maximum(x0, -s), s) / s
