r"""Diffusion and flow-matching samplers, written once against the Array API.

Conventions
-----------
*Diffusion* (VP) time: t in [0, 1], t = 0 data, t = 1 noise,
``x_t = alpha x_0 + sigma z`` with ``alpha = sqrt(alpha_bar(t))``,
``sigma = sqrt(1 - alpha_bar(t))`` from a :class:`~arraygen.schedules.NoiseSchedule`.
A model is a callable ``model(x, t)`` whose output is, by ``prediction``:

===============  ===========================================================================
``"score"``      :math:`\nabla_x \log p_t(x)`
``"epsilon"``    the noise ``z`` (``epsilon = -sigma * score``)
``"x0"``         the denoised estimate :math:`E[x_0 \mid x_t]`
``"v"``          ``v = alpha * epsilon - sigma * x0`` (Salimans & Ho)
``"velocity"``   flow matching only (see below)
===============  ===========================================================================

``t`` reaches the model as a Python float, or as a ``(B,)`` array in ``x``'s namespace, device
and dtype with ``batched_t=True``. The model is never evaluated at a time with
``alpha_bar = 1`` (the final step to t = 0 uses the last prediction).

*Flow matching* time (``sample_flow_*``): t in [0, 1], **t = 0 noise, t = 1 data**, on the
linear path ``x_t = (1 - t) x_0 + t x_1`` (``x_0 ~ N(0, I)`` noise, ``x_1`` data); the model
predicts the velocity ``v(x, t) = E[x_1 - x_0 | x_t]``.

Probability-flow ODE (derived here because an earlier project got its sign wrong). The VP
forward SDE is ``dx = -1/2 beta(t) x dt + sqrt(beta(t)) dW`` with
``beta = -d log alpha_bar / dt``. Its probability-flow ODE ``dx/dt = f - g^2/2 * score`` is

.. math:: \frac{dx}{dt} = -\tfrac12 \beta(t)\,\bigl(x + \nabla_x \log p_t(x)\bigr),

integrated from t = 1 down to t = 0 (so ``dt < 0``: the drift moves *along* the score, as
the score points toward the data). In the scaled variables ``y = x / alpha`` and
``s = sigma / alpha`` (the variance-exploding level, ``s^2 = 1/alpha_bar - 1``,
``ds^2/dt = beta / alpha_bar``) and with ``D = E[x_0 | x_t] = (x + sigma^2 score) / alpha``
this becomes ``dy/dt = beta (y - D) / (2 sigma^2)`` and hence

.. math:: \frac{dy}{ds} = \frac{y - D}{s},

the form :func:`sample_euler` and :func:`sample_heun` discretise (Karras et al. 2022);
:func:`sample_dpmpp_2m` integrates the same ODE exactly in its linear part in
``lambda = log(alpha / sigma)``. The reverse SDE is
``dx = [-1/2 beta x - beta score] dt + sqrt(beta) dW`` (backward in t).

Name map (same algorithm on the same grid; k-diffusion's sigmas are ``schedule.ve_sigma(t)``,
and ``timesteps(n, "karras")`` on ``make_schedule("karras")`` is its ``get_sigmas_karras(n)``):

=============================  =======================  ========================================
arraygen                       k-diffusion              diffusers
=============================  =======================  ========================================
``sample_euler``               ``sample_euler``         ``EulerDiscreteScheduler``
``sample_heun``                ``sample_heun``          ``HeunDiscreteScheduler``
``sample_dpmpp_2m``            ``sample_dpmpp_2m``      ``DPMSolverMultistepScheduler`` (2M, ++)
``sample_dpmpp_2m(sde=True)``  ``sample_dpmpp_2m_sde``  same, ``algorithm_type="sde-dpmsolver++"``
``sample_ddim``                (= ``sample_euler``)     ``DDIMScheduler``
``sample_ddpm``                --                       ``DDPMScheduler``
``sample_sde``                 --                       ``ScoreSdeVpScheduler`` (+ corrector)
=============================  =======================  ========================================

Every sampler is stateless and batched (axis 0 is the batch; any trailing shape), runs in
``x``'s namespace and on its device in ``x``'s compute dtype (float32 for half input) with
the per-step coefficients computed in float64 on the host (no device synchronisation inside the
loop), and returns the result in ``x``'s floating dtype. Noise comes from
:mod:`arraygen.random`: with an int seed or a :class:`~arraygen.random.Key`, draw ``j`` of step
``k`` uses ``key.advance(k * draws_per_step + j)``, so it is reproducible and identical on every
backend (a NumPy Generator draws on the host instead).
"""

from __future__ import annotations

import logging
import math

import numpy as np

from . import _array_api as aa
from . import random as _random
from .schedules import TIMESTEP_KINDS, NoiseSchedule, timesteps, validate_grid

__all__ = [
    "PREDICTIONS",
    "convert_prediction",
    "ddim_invert",
    "dynamic_threshold",
    "flow_score",
    "flow_to_data",
    "flow_to_noise",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp_2m",
    "sample_euler",
    "sample_flow_ddim",
    "sample_flow_heun",
    "sample_flow_sde",
    "sample_heun",
    "sample_sde",
    "to_eps",
    "to_score",
    "to_v",
    "to_x0",
]

logger = logging.getLogger("arraygen")

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
    ab = aa.finite_scalar(alpha_bar, "alpha_bar")
    if not 0.0 <= ab <= 1.0:
        raise ValueError(f"`alpha_bar` must be in [0, 1]; got {ab}")
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
    percentile = aa.finite_scalar(percentile, "percentile")
    if not 0.0 < percentile <= 1.0:
        raise ValueError(f"`percentile` must be in (0, 1]; got {percentile}")
    floor = aa.finite_scalar(floor, "floor", positive=True)
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


# --------------------------------------------------------------------------------------------
# shared machinery
# --------------------------------------------------------------------------------------------

class _Run:
    """Everything a sampler loop needs: validated input, grid, model wrapper, noise, progress."""

    def __init__(self, model, x, *, schedule, steps, prediction, rng, progress, callback,
                 default_grid, allowed_predictions=_VP_PREDICTIONS, flow=False,
                 batched_t=False, dynamic_thresholding=None, draws_per_step=1,
                 needs_rng=False):
        if not callable(model):
            raise TypeError(f"`model` must be callable as model(x, t); got "
                            f"{type(model).__name__}")
        _check_prediction(prediction, allowed_predictions)
        if callback is not None and not callable(callback):
            raise TypeError(f"`callback` must be callable or None; got {type(callback).__name__}")
        self.xp = aa.array_namespace(x=x)
        if x.ndim < 1 or x.shape[0] == 0:
            raise ValueError(f"`x` must have a non-empty batch axis (B, ...); got shape "
                             f"{tuple(x.shape)}")
        self.x, self.out_dtype = aa.as_float_array(self.xp, x, "x")
        if not aa.all_finite(self.xp, self.x):
            raise ValueError("`x` (the starting noise) contains non-finite values")
        self.device = aa.device(self.x)
        self.model = model
        self.prediction = prediction
        self.flow = flow
        if flow:
            if schedule is not None:
                logger.debug("flow-matching samplers ignore `schedule` (the path is fixed)")
            self.schedule = None
            self.grid = _flow_grid(steps, default_grid)
        else:
            if not isinstance(schedule, NoiseSchedule):
                raise TypeError(f"`schedule` must be a NoiseSchedule (see make_schedule); got "
                                f"{type(schedule).__name__}")
            self.schedule = schedule
            self.grid = _diffusion_grid(steps, default_grid, schedule)
            la = schedule._log_alpha_bar(np, self.grid)
            self.log_ab = la
            self.alpha_bar = np.exp(la)
            self.alpha = np.exp(0.5 * la)
            self.sigma = np.sqrt(-np.expm1(la))
            with np.errstate(divide="ignore"):
                self.lam = 0.5 * (la - np.log(-np.expm1(la)))  # log(alpha / sigma)
            self.ve = self.sigma / self.alpha
            if self.alpha_bar[0] <= 0.0:
                raise ValueError("alpha_bar is 0 at the first time of the grid; start below "
                                 "t = 1 or use a schedule with alpha_bar(1) > 0")
            if self.sigma[0] == 0.0:
                raise ValueError("the grid starts at a time with alpha_bar = 1 (no noise)")
        self.batched_t = bool(batched_t)
        if dynamic_thresholding is True:
            dynamic_thresholding = 0.995
        if dynamic_thresholding not in (None, False):
            dynamic_thresholding = aa.finite_scalar(dynamic_thresholding, "dynamic_thresholding")
            if not 0.0 < dynamic_thresholding <= 1.0:
                raise ValueError(f"`dynamic_thresholding` must be a percentile in (0, 1]; got "
                                 f"{dynamic_thresholding}")
        else:
            dynamic_thresholding = None
        self.threshold = dynamic_thresholding
        self.draws = int(draws_per_step)
        self.key = _random.as_key(rng) if (rng is not None or needs_rng) else None
        self.callback = callback
        self.progress = progress
        self.nfe = 0

    # -- model evaluation ---------------------------------------------------------------------
    def raw(self, x, t: float):
        xp = self.xp
        tt = (xp.full((x.shape[0],), t, dtype=x.dtype, device=self.device)
              if self.batched_t else float(t))
        out = self.model(x, tt)
        self.nfe += 1
        if not aa.is_array(out):
            raise TypeError(f"the model must return an array; got {type(out).__name__}")
        if tuple(out.shape) != tuple(x.shape):
            raise ValueError(f"the model returned shape {tuple(out.shape)} for input shape "
                             f"{tuple(x.shape)}")
        return out if out.dtype == x.dtype else xp.astype(out, x.dtype)

    def predict(self, x, k: int, target: str):
        """Model prediction of kind ``target`` at grid index ``k`` (thresholded if x0)."""
        return self.predict_at(x, float(self.grid[k]), float(self.alpha[k]),
                               float(self.sigma[k]), target)

    def predict_at(self, x, t: float, a: float, s: float, target: str):
        """Prediction at time ``t`` with ``alpha = a``, ``sigma = s`` (VP)."""
        out = self.raw(x, t)
        out = _convert(out, x, a, s, self.prediction, target)
        if target == "x0" and self.threshold is not None:
            out = dynamic_threshold(out, self.threshold)
        return out

    def denoise(self, x, k: int):
        return self.predict(x, k, "x0")

    # -- noise, progress, callback ------------------------------------------------------------
    def noise(self, step: int, draw: int = 0):
        if self.key is None:
            raise ValueError("this sampler is stochastic here; pass `rng` (an int seed, an "
                             "arraygen.random.Key or a numpy.random.Generator)")
        if isinstance(self.key, np.random.Generator):
            return _random.normal_like(self.key, self.x)
        key = self.key.advance(step * self.draws + draw)
        return _random.normal(key, tuple(self.x.shape), dtype=self.x.dtype, like=self.x)

    def steps(self):
        n = self.grid.shape[0] - 1
        it = range(n)
        if self.progress:
            from tqdm.auto import tqdm

            it = tqdm(it, total=n, disable=False)
        return it

    def report(self, k: int, x, denoised=None):
        if self.callback is not None:
            self.callback({"step": k, "t": float(self.grid[k]), "t_next": float(self.grid[k + 1]),
                           "x": x, "denoised": denoised, "nfe": self.nfe})

    def finish(self, x):
        logger.debug("sampler finished: %d steps, %d model evaluations",
                     self.grid.shape[0] - 1, self.nfe)
        return x if x.dtype == self.out_dtype else self.xp.astype(x, self.out_dtype)


def _diffusion_grid(steps, default_kind: str, schedule: NoiseSchedule) -> np.ndarray:
    if default_kind not in TIMESTEP_KINDS:
        raise ValueError(f"`grid` must be one of {TIMESTEP_KINDS}; got {default_kind!r}")
    if isinstance(steps, (int, np.integer)) and not isinstance(steps, bool):
        if steps < 1:
            raise ValueError(f"`steps` must be at least 1; got {steps}")
        return timesteps(int(steps), default_kind, schedule)
    if isinstance(steps, bool):
        raise TypeError("`steps` must be an int or a decreasing grid of times; got a bool")
    return validate_grid(steps, "steps")


def _flow_grid(steps, default_kind: str) -> np.ndarray:
    """Increasing flow-time grid (t = 0 noise -> t = 1 data)."""
    if isinstance(steps, (int, np.integer)) and not isinstance(steps, bool):
        if steps < 1:
            raise ValueError(f"`steps` must be at least 1; got {steps}")
        u = np.arange(int(steps) + 1, dtype=np.float64) / int(steps)
        grid = u * u if default_kind == "quadratic" else u
        grid[-1] = 1.0
        return grid
    if isinstance(steps, bool):
        raise TypeError("`steps` must be an int or an increasing grid of flow times; got a bool")
    return validate_grid(steps, "steps", increasing=True)


def _bcast(xp, values, like):
    """Per-sample (B,) values as an array broadcasting against ``like``."""
    return xp.reshape(values, (like.shape[0],) + (1,) * (like.ndim - 1))


def _sample_norm(xp, v):
    """Per-sample L2 norm, shape (B, 1, ..., 1)."""
    b = v.shape[0]
    n = xp.sqrt(xp.sum(xp.reshape(v * v, (b, -1)), axis=1))
    return _bcast(xp, n, v)


# --------------------------------------------------------------------------------------------
# diffusion samplers
# --------------------------------------------------------------------------------------------

_COMMON_DOC = """
    Parameters
    ----------
    model : callable
        ``model(x, t)`` returning an array shaped like ``x`` of kind ``prediction``.
    x : array, shape (B, ...)
        The starting noise at ``steps[0]`` (``N(0, I)`` for a grid starting at t = 1); its
        namespace and device are used throughout.
    schedule : NoiseSchedule
    steps : int or sequence of float
        Number of steps on the sampler's default grid (:func:`arraygen.schedules.timesteps`
        kind ``grid``), or an explicit strictly decreasing grid of times in [0, 1] (it may end
        above 0, e.g. for partial denoising).
    prediction : {"score", "epsilon", "x0", "v"}
    rng : int, Key or numpy.random.Generator, optional
        Noise stream (stochastic samplers only).
    progress : bool
        Show a tqdm progress bar.
    callback : callable, optional
        Called after every step with a dict ``step, t, t_next, x, denoised, nfe``.
    grid : str, optional
        Grid kind used when ``steps`` is an int.
    batched_t : bool
        Pass ``t`` to the model as a ``(B,)`` array instead of a Python float.
    dynamic_thresholding : float or bool, optional
        Apply :func:`dynamic_threshold` with this percentile (True: 0.995) to every denoised
        estimate.
"""

_COMMON_RETURNS = """
    Returns
    -------
    array like ``x``: the sample at the last time of the grid.
"""


def _doc(fn):
    fn.__doc__ = fn.__doc__.replace("    %(common)s\n", _COMMON_DOC).rstrip() + "\n" + _COMMON_RETURNS
    return fn


@_doc
def sample_ddpm(model, x, *, schedule, steps, prediction="score", rng=None, progress=False,
                callback=None, grid="linear", batched_t=False, dynamic_thresholding=None):
    r"""Ancestral DDPM sampling with the posterior :math:`q(x_{t'} \mid x_t, \hat x_0)`.

    For a step from t to t' < t with :math:`\bar\alpha_c = \bar\alpha(t)`,
    :math:`\bar\alpha_p = \bar\alpha(t')`, :math:`\beta = 1 - \bar\alpha_c/\bar\alpha_p`:

    .. math::

        x_{t'} = \frac{\sqrt{\bar\alpha_p}\,\beta}{1-\bar\alpha_c}\hat x_0
               + \frac{\sqrt{\bar\alpha_c/\bar\alpha_p}\,(1-\bar\alpha_p)}{1-\bar\alpha_c} x_t
               + \sqrt{\tilde\beta}\, z, \qquad
        \tilde\beta = \beta\,\frac{1-\bar\alpha_p}{1-\bar\alpha_c},

    with no noise on a step to t' = 0 (which returns :math:`\hat x_0`). One model evaluation
    per step.

    %(common)s
    """
    run = _Run(model, x, schedule=schedule, steps=steps, prediction=prediction, rng=rng,
               progress=progress, callback=callback, default_grid=grid, batched_t=batched_t,
               dynamic_thresholding=dynamic_thresholding, needs_rng=True)
    x = run.x
    for k in run.steps():
        d = run.denoise(x, k)
        # 1 - alpha_bar as sigma^2 and beta = -expm1(log ab_c - log ab_p): no cancellation
        s2c, s2p = float(run.sigma[k]) ** 2, float(run.sigma[k + 1]) ** 2
        beta = -math.expm1(float(run.log_ab[k] - run.log_ab[k + 1]))
        c0 = float(run.alpha[k + 1]) * beta / s2c
        cx = float(run.alpha[k] / run.alpha[k + 1]) * s2p / s2c
        x = c0 * d + cx * x
        var = beta * s2p / s2c
        if var > 0.0:
            x = x + math.sqrt(var) * run.noise(k)
        run.report(k, x, d)
    return run.finish(x)


def _ddim_coefficients(run, k: int, eta: float):
    """(c_x, c_d, c_noise) of x_next = c_x x + c_d D + c_noise z for DDIM(eta), Song eq. 12/16."""
    a, s = float(run.alpha[k]), float(run.sigma[k])
    an, sn = float(run.alpha[k + 1]), float(run.sigma[k + 1])
    noise_sd = 0.0
    if eta > 0.0 and sn > 0.0:
        step = -math.expm1(float(run.log_ab[k] - run.log_ab[k + 1]))  # 1 - ab_c / ab_p
        noise_sd = eta * (sn / s) * math.sqrt(step)
    direction = math.sqrt(max(0.0, sn * sn - noise_sd * noise_sd))
    # eps_hat = (x - a D) / s  =>  x_next = an D + direction * eps_hat + noise_sd z
    return direction / s, an - direction * a / s, noise_sd


@_doc
def sample_ddim(model, x, *, schedule, steps, prediction="score", rng=None, progress=False,
                callback=None, eta=0.0, grid="linear", batched_t=False,
                dynamic_thresholding=None):
    r"""DDIM (Song et al. 2021, eq. 12 and 16) with stochasticity ``eta``.

    .. math::

        x_{t'} = \sqrt{\bar\alpha_p}\,\hat x_0 + \sqrt{1-\bar\alpha_p-\sigma_\eta^2}\,\hat\epsilon
                 + \sigma_\eta z,\quad
        \sigma_\eta = \eta\sqrt{\tfrac{1-\bar\alpha_p}{1-\bar\alpha_c}}
                      \sqrt{1-\tfrac{\bar\alpha_c}{\bar\alpha_p}}

    with :math:`\hat\epsilon = (x_t - \sqrt{\bar\alpha_c}\hat x_0)/\sqrt{1-\bar\alpha_c}`
    (computed from the thresholded :math:`\hat x_0` when thresholding, so a step stays on the
    line through :math:`x_t`). ``eta = 0`` is deterministic and equals :func:`sample_euler` on
    the same grid (Euler in the variance-exploding variables); ``eta = 1`` is DDPM's
    posterior variance. :func:`ddim_invert` runs ``eta = 0`` backwards. One model evaluation
    per step.

    %(common)s
    eta : float
        >= 0 (0: deterministic).
    """
    eta = aa.finite_scalar(eta, "eta", nonnegative=True)
    run = _Run(model, x, schedule=schedule, steps=steps, prediction=prediction, rng=rng,
               progress=progress, callback=callback, default_grid=grid, batched_t=batched_t,
               dynamic_thresholding=dynamic_thresholding, needs_rng=eta > 0)
    x = run.x
    for k in run.steps():
        d = run.denoise(x, k)
        cx, cd, cz = _ddim_coefficients(run, k, eta)
        x = cx * x + cd * d
        if cz > 0.0:
            x = x + cz * run.noise(k)
        run.report(k, x, d)
    return run.finish(x)


def ddim_invert(model, x, *, schedule, steps, prediction="score", progress=False,
                callback=None, grid="linear", batched_t=False, n_fixed_point=0):
    r"""Run deterministic DDIM (``eta = 0``) backwards: data end -> noise end of the grid.

    ``x`` is a sample at the *last* time of the grid (which must be > 0, because inversion
    needs a noise estimate there: pass an explicit grid such as ``timesteps(n)[:-1]`` or one
    ending at a small t), and the result is at ``steps[0]``. Each forward DDIM step is
    ``x_lo = c_x x_hi + c_d D(x_hi, t_hi)``; inversion solves it for ``x_hi``:

    * initial guess (the usual DDIM inversion): ``D(x_hi) ~ D(x_lo, t_lo)``, i.e.
      ``x_hi = alpha_hi D_lo + sigma_hi eps_lo``, one model evaluation;
    * ``n_fixed_point`` refinements ``x_hi <- (x_lo - c_d D(x_hi, t_hi)) / c_x`` (one model
      evaluation each), which make ``sample_ddim(ddim_invert(x)) == x`` to round-off when the
      iteration contracts. Its rate is about ``|c_d / c_x| * |dD/dx|``, which approaches 1
      for steps near t = 0 (there ``dD/dx ~ 1 / alpha``): end the grid at a moderate t or
      use more iterations there.

    Parameters
    ----------
    model, schedule, prediction, progress, callback, grid, batched_t
        As in :func:`sample_ddim`.
    x : array, shape (B, ...)
        Sample at the grid's last time.
    steps : int or sequence of float
        The *sampling* grid (decreasing); with an int the default grid's final t = 0 is
        dropped, so ``steps`` = n gives n - 1 inversion steps.
    n_fixed_point : int
        Fixed-point refinements per step (>= 0).

    Returns
    -------
    array like ``x`` at time ``steps[0]``.
    """
    if isinstance(n_fixed_point, bool) or not isinstance(n_fixed_point, (int, np.integer)) \
            or n_fixed_point < 0:
        raise ValueError(f"`n_fixed_point` must be a non-negative int; got {n_fixed_point!r}")
    if isinstance(steps, (int, np.integer)) and not isinstance(steps, bool):
        if steps < 2:
            raise ValueError(f"`steps` must be at least 2 for inversion (the final step to "
                             f"t = 0 is dropped); got {steps}")
        steps = timesteps(int(steps), grid, schedule)[:-1]
    run = _Run(model, x, schedule=schedule, steps=steps, prediction=prediction, rng=None,
               progress=progress, callback=callback, default_grid=grid, batched_t=batched_t)
    if run.sigma[-1] <= 0.0:
        raise ValueError("`steps` must end above t = 0 for inversion (alpha_bar < 1 there); "
                         f"got a grid ending at t = {run.grid[-1]!r}")
    x = run.x
    n = run.grid.shape[0] - 1
    for j in range(n):
        k = n - 1 - j  # the forward step k goes grid[k] -> grid[k + 1]; we undo it
        lo = k + 1
        d_lo = run.denoise(x, lo)
        eps_lo = (x - float(run.alpha[lo]) * d_lo) / float(run.sigma[lo])
        x_hi = float(run.alpha[k]) * d_lo + float(run.sigma[k]) * eps_lo
        cx, cd, _ = _ddim_coefficients(run, k, 0.0)
        for _ in range(int(n_fixed_point)):
            x_hi = (x - cd * run.denoise(x_hi, k)) / cx
        x = x_hi
        if run.callback is not None:
            run.callback({"step": j, "t": float(run.grid[lo]), "t_next": float(run.grid[k]),
                          "x": x, "denoised": d_lo, "nfe": run.nfe})
    return run.finish(x)


@_doc
def sample_euler(model, x, *, schedule, steps, prediction="score", rng=None, progress=False,
                 callback=None, grid="karras", batched_t=False, dynamic_thresholding=None):
    r"""Euler's method on the probability-flow ODE in the variance-exploding variables.

    With ``y = x / alpha`` and ``s = sigma / alpha`` (module docstring),
    ``y' = y + (s' - s)(y - D(x, t)) / s`` and ``x' = alpha' y'``: first order, one model
    evaluation per step (the same update as :func:`sample_ddim` with ``eta = 0``).

    %(common)s
    """
    run = _Run(model, x, schedule=schedule, steps=steps, prediction=prediction, rng=rng,
               progress=progress, callback=callback, default_grid=grid, batched_t=batched_t,
               dynamic_thresholding=dynamic_thresholding)
    x = run.x
    for k in run.steps():
        d = run.denoise(x, k)
        x = _euler_step(run, x, d, k)
        run.report(k, x, d)
    return run.finish(x)


def _euler_step(run, x, d, k: int):
    s, sn = float(run.ve[k]), float(run.ve[k + 1])
    a, an = float(run.alpha[k]), float(run.alpha[k + 1])
    # y' = y + (sn - s)(y - D)/s = (sn/s) y + (1 - sn/s) D, and x = alpha y
    r = sn / s
    return (an * r / a) * x + (an * (1.0 - r)) * d


@_doc
def sample_heun(model, x, *, schedule, steps, prediction="score", rng=None, progress=False,
                callback=None, grid="karras", batched_t=False, dynamic_thresholding=None,
                s_churn=0.0, s_tmin=0.0, s_tmax=math.inf, s_noise=1.0):
    r"""Heun's second-order method on the probability-flow ODE (Karras et al. 2022, Alg. 1/2).

    In ``y = x / alpha``, ``s = sigma / alpha`` with slope ``f(y, s) = (y - D) / s``: an Euler
    predictor ``y~ = y + (s' - s) f(y, s)``, then ``y' = y + (s' - s)(f(y, s) + f(y~, s'))/2``.
    The step to ``s' = 0`` (t = 0) is an Euler step (``f`` is undefined there), so ``n`` steps
    ending at t = 0 cost ``2n - 1`` model evaluations. Second order: the endpoint error falls
    about 4x when the steps double.

    With ``s_churn > 0`` this is EDM's stochastic sampler (Algorithm 2): before a step whose
    level ``s`` lies in ``[s_tmin, s_tmax]`` the noise is raised to
    ``s^ = s (1 + gamma)``, ``gamma = min(s_churn / n, sqrt(2) - 1)`` (capped at the
    schedule's level at t = 1), by ``y <- y + s_noise sqrt(s^2 - s_old^2) z``, and the Heun
    step starts from the time ``t^`` with that level (found by inverting the schedule). The
    levels are the variance-exploding ``s`` (k-diffusion's sigmas). Needs ``rng`` then.

    %(common)s
    s_churn : float
        Total churn (>= 0; 0: deterministic).
    s_tmin, s_tmax : float
        Range of levels ``s`` where churn is applied.
    s_noise : float
        Scale of the added noise (>= 0; EDM uses values slightly above 1).
    """
    s_churn = aa.finite_scalar(s_churn, "s_churn", nonnegative=True)
    s_tmin = aa.finite_scalar(s_tmin, "s_tmin", nonnegative=True)
    s_noise = aa.finite_scalar(s_noise, "s_noise", nonnegative=True)
    s_tmax = float(s_tmax)
    if math.isnan(s_tmax) or s_tmax < s_tmin:
        raise ValueError(f"`s_tmax` must be >= `s_tmin`; got {s_tmax} < {s_tmin}")
    run = _Run(model, x, schedule=schedule, steps=steps, prediction=prediction, rng=rng,
               progress=progress, callback=callback, default_grid=grid, batched_t=batched_t,
               dynamic_thresholding=dynamic_thresholding, needs_rng=s_churn > 0)
    x = run.x
    n = run.grid.shape[0] - 1
    ve_max = float(schedule.ve_sigma(1.0))
    for k in run.steps():
        t_c, a_c, s_c = float(run.grid[k]), float(run.alpha[k]), float(run.ve[k])
        if s_churn > 0 and s_tmin <= s_c <= s_tmax:
            s_hat = min(s_c * (1.0 + min(s_churn / n, math.sqrt(2.0) - 1.0)), ve_max)
            if s_hat > s_c:
                t_c = float(schedule.t_from_log_alpha_bar(-math.log1p(s_hat * s_hat)))
                la = float(schedule._log_alpha_bar(np, np.float64(t_c)))
                a_hat = math.exp(0.5 * la)
                s_hat = math.sqrt(-math.expm1(la)) / a_hat
                extra = s_noise * math.sqrt(max(0.0, s_hat * s_hat - s_c * s_c))
                x = a_hat * (x / a_c + extra * run.noise(k))
                a_c, s_c = a_hat, s_hat
        d = run.predict_at(x, t_c, a_c, a_c * s_c, "x0")
        sn, an = float(run.ve[k + 1]), float(run.alpha[k + 1])
        y = x / a_c
        f1 = (y - d) / s_c
        y_next = y + (sn - s_c) * f1
        if sn > 0.0:
            d2 = run.denoise(an * y_next, k + 1)
            f2 = (y_next - d2) / sn
            y_next = y + (0.5 * (sn - s_c)) * (f1 + f2)
        x = an * y_next
        run.report(k, x, d)
    return run.finish(x)


@_doc
def sample_dpmpp_2m(model, x, *, schedule, steps, prediction="score", rng=None,
                    progress=False, callback=None, sde=False, eta=1.0, grid="karras",
                    batched_t=False, dynamic_thresholding=None):
    r"""DPM-Solver++(2M) (Lu et al. 2022), multistep in :math:`\lambda = \log(\alpha/\sigma)`.

    ODE (``sde=False``), with :math:`h = \lambda' - \lambda` and the previous step's
    :math:`h_{-1}`, :math:`r = h_{-1}/h`:

    .. math::

        x' = \frac{\sigma'}{\sigma} x - \alpha' (e^{-h} - 1) \hat D, \qquad
        \hat D = (1 + \tfrac{1}{2r}) D_k - \tfrac{1}{2r} D_{k-1},

    first order (:math:`\hat D = D_k`) at the first step and on a final step to t = 0
    (``x' = D_k``). SDE variant (``sde=True``, DPM-Solver++(2M) SDE, midpoint form, with
    :math:`\eta h`):

    .. math::

        x' = \frac{\sigma'}{\sigma} e^{-\eta h} x + \alpha'(1 - e^{-(1+\eta)h}) D_k
             + \tfrac{\alpha'}{2r}(1 - e^{-(1+\eta)h})(D_k - D_{k-1})
             + \sigma' \sqrt{1 - e^{-2\eta h}}\, z.

    One model evaluation per step. These are k-diffusion's ``sample_dpmpp_2m`` and
    ``sample_dpmpp_2m_sde`` written for VP ``x`` (they agree after scaling by alpha).

    %(common)s
    sde : bool
        Stochastic variant (needs ``rng``).
    eta : float
        Noise scale of the SDE variant (>= 0).
    """
    eta = aa.finite_scalar(eta, "eta", nonnegative=True) if sde else 0.0
    run = _Run(model, x, schedule=schedule, steps=steps, prediction=prediction, rng=rng,
               progress=progress, callback=callback, default_grid=grid, batched_t=batched_t,
               dynamic_thresholding=dynamic_thresholding, needs_rng=sde and eta > 0)
    x = run.x
    d_old = None
    h_old = None
    for k in run.steps():
        d = run.denoise(x, k)
        sn, an = float(run.sigma[k + 1]), float(run.alpha[k + 1])
        if sn == 0.0:
            x = an * d
        else:
            s = float(run.sigma[k])
            h = float(run.lam[k + 1] - run.lam[k])
            if not sde:
                d_hat = d
                if d_old is not None:
                    r = h_old / h
                    d_hat = (1.0 + 1.0 / (2.0 * r)) * d - (1.0 / (2.0 * r)) * d_old
                x = (sn / s) * x - (an * math.expm1(-h)) * d_hat
            else:
                eh = eta * h
                c = -math.expm1(-h - eh)
                x = (sn / s * math.exp(-eh)) * x + (an * c) * d
                if d_old is not None:
                    r = h_old / h
                    x = x + (an * c * 0.5 / r) * (d - d_old)
                if eta > 0.0:
                    x = x + (sn * math.sqrt(-math.expm1(-2.0 * eh))) * run.noise(k)
            h_old = h
        d_old = d
        run.report(k, x, d)
    return run.finish(x)


@_doc
def sample_sde(model, x, *, schedule, steps, prediction="score", rng=None, progress=False,
               callback=None, corrector_steps=0, snr=0.16, grid="linear", batched_t=False,
               dynamic_thresholding=None):
    r"""Reverse VP SDE by Euler-Maruyama, with an optional Langevin corrector (Song et al. 2021).

    The reverse SDE ``dx = [-1/2 beta x - beta score] dt + sqrt(beta) dW`` (backward in t) is
    discretised in the time variable ``u = -log alpha_bar`` (``du = beta dt``), in which it is
    autonomous: with ``B = log(alpha_bar(t') / alpha_bar(t))`` for a step t -> t' < t,

    .. math:: x' = x + (\tfrac12 x + s(x, t))\,B + \sqrt{B}\, z,

    no noise on a final step to t = 0. With ``corrector_steps = m > 0`` every step first runs
    ``m`` Langevin updates at t: ``x <- x + e s + sqrt(2 e) z`` with the step
    ``e = min(2 (snr <|z|> / <|s|>)^2, sigma_t^2)``, where ``<.>`` is the batch mean of the
    per-sample norms (Song et al.'s reference choice: one step size per update, shared by the
    batch; per-sample norms would correlate ``e`` with ``z`` and with the position, which biases
    low-dimensional targets badly). The cap keeps the unadjusted Langevin step stable:
    ``p_t`` is the data convolved with ``N(0, sigma_t^2 I)``, whose log-density has curvature at
    most ``1 / sigma_t^2``. Model evaluations: ``steps * (1 + m)``. Needs ``rng``.

    %(common)s
    corrector_steps : int
        Langevin corrector updates per step (>= 0).
    snr : float
        Corrector signal-to-noise ratio (> 0).
    """
    if isinstance(corrector_steps, bool) or not isinstance(corrector_steps, (int, np.integer)) \
            or corrector_steps < 0:
        raise ValueError(f"`corrector_steps` must be a non-negative int; got "
                         f"{corrector_steps!r}")
    snr = aa.finite_scalar(snr, "snr", positive=True)
    m = int(corrector_steps)
    run = _Run(model, x, schedule=schedule, steps=steps, prediction=prediction, rng=rng,
               progress=progress, callback=callback, default_grid=grid, batched_t=batched_t,
               dynamic_thresholding=dynamic_thresholding, draws_per_step=m + 1, needs_rng=True)
    xp = run.xp
    x = run.x
    for k in run.steps():
        e_max = float(run.sigma[k]) ** 2
        for j in range(m):
            g = run.predict(x, k, "score")
            z = run.noise(k, j + 1)
            ratio = snr * xp.mean(_sample_norm(xp, z)) / xp.maximum(
                xp.mean(_sample_norm(xp, g)), xp.asarray(1e-30, dtype=g.dtype,
                                                         device=run.device))
            e = xp.minimum(2.0 * ratio * ratio, xp.asarray(e_max, dtype=g.dtype,
                                                           device=run.device))
            x = x + e * g + xp.sqrt(2.0 * e) * z
        if run.threshold is not None:
            d = run.predict(x, k, "x0")
            g = _convert(d, x, float(run.alpha[k]), float(run.sigma[k]), "x0", "score")
        else:
            g = run.predict(x, k, "score")
        big_b = float(math.log(run.alpha_bar[k + 1] / run.alpha_bar[k]))
        x = x + big_b * (0.5 * x + g)
        if run.sigma[k + 1] > 0.0:
            x = x + math.sqrt(big_b) * run.noise(k, 0)
        run.report(k, x)
    return run.finish(x)


# --------------------------------------------------------------------------------------------
# flow-matching samplers (t = 0 noise, t = 1 data)
# --------------------------------------------------------------------------------------------

_FLOW_DOC = """
    Parameters
    ----------
    model : callable
        ``model(x, t)``: the velocity ``v(x, t) = E[x_1 - x_0 | x_t]`` of the linear path
        ``x_t = (1 - t) x_0 + t x_1`` (t = 0 noise, t = 1 data).
    x : array, shape (B, ...)
        Starting noise at ``steps[0]`` (``N(0, I)`` at t = 0).
    schedule : None
        Ignored (the path is fixed); accepted for a uniform signature.
    steps : int or sequence of float
        Number of steps, or an explicit strictly *increasing* grid of flow times in [0, 1].
    prediction : {"velocity"}
    rng, progress, callback, batched_t
        As for the diffusion samplers.
"""

_FLOW_RETURNS = """
    Returns
    -------
    array like ``x`` at the grid's last time (t = 1: data).
"""


def _flow_doc(fn):
    fn.__doc__ = fn.__doc__.replace("    %(flow)s\n", _FLOW_DOC).rstrip() + "\n" + _FLOW_RETURNS
    return fn


@_flow_doc
def sample_flow_heun(model, x, *, schedule=None, steps, prediction="velocity", rng=None,
                     progress=False, callback=None, batched_t=False):
    r"""Heun's method on the flow ODE ``dx/dt = v(x, t)``, t from 0 (noise) to 1 (data).

    ``x~ = x + h v(x, t)``, ``x' = x + h (v(x, t) + v(x~, t')) / 2``: second order, two model
    evaluations per step (the velocity is evaluated at t = 1 too).

    %(flow)s
    """
    run = _Run(model, x, schedule=schedule, steps=steps, prediction=prediction, rng=rng,
               progress=progress, callback=callback, default_grid="linear",
               allowed_predictions=("velocity",), flow=True, batched_t=batched_t)
    x = run.x
    for k in run.steps():
        t, tn = float(run.grid[k]), float(run.grid[k + 1])
        h = tn - t
        v1 = run.raw(x, t)
        x_e = x + h * v1
        v2 = run.raw(x_e, tn)
        x = x + (0.5 * h) * (v1 + v2)
        run.report(k, x, None)
    return run.finish(x)


@_flow_doc
def sample_flow_sde(model, x, *, schedule=None, steps, prediction="velocity", rng=None,
                    progress=False, callback=None, temperature=0.5, n_noise_free=5,
                    batched_t=False):
    r"""Marginal-preserving flow SDE by Euler-Maruyama, t from 0 (noise) to 1 (data).

    .. math::

        dx = \Bigl[v + \frac{g(t)^2}{2}\nabla\log p_t(x)\Bigr] dt + g(t)\, dW,\qquad
        \nabla\log p_t = \frac{t v - x}{1 - t},\qquad g(t) = T (1 - t)

    (``T`` = ``temperature``). The Fokker-Planck equation of this SDE is the continuity
    equation of ``v``, so every ``T`` has the flow's marginals; ``g^2 score / 2 =
    T^2 (1 - t)(t v - x) / 2`` stays finite at t = 1. In the final ``n_noise_free`` steps
    ``g = 0`` (plain Euler on ``v``). One model evaluation per step; needs ``rng`` when
    ``temperature > 0``.

    %(flow)s
    temperature : float
        Noise scale ``T`` >= 0.
    n_noise_free : int
        Number of final steps without noise (>= 0; default 5).
    """
    temperature = aa.finite_scalar(temperature, "temperature", nonnegative=True)
    if isinstance(n_noise_free, bool) or not isinstance(n_noise_free, (int, np.integer)) \
            or n_noise_free < 0:
        raise ValueError(f"`n_noise_free` must be a non-negative int; got {n_noise_free!r}")
    run = _Run(model, x, schedule=schedule, steps=steps, prediction=prediction, rng=rng,
               progress=progress, callback=callback, default_grid="linear",
               allowed_predictions=("velocity",), flow=True, batched_t=batched_t,
               needs_rng=temperature > 0)
    x = run.x
    n = run.grid.shape[0] - 1
    for k in run.steps():
        t, tn = float(run.grid[k]), float(run.grid[k + 1])
        h = tn - t
        v = run.raw(x, t)
        g = temperature * (1.0 - t) if k < n - int(n_noise_free) else 0.0
        if g > 0.0:
            drift = v + (0.5 * g * g) * flow_score(v, x, t)
            x = x + h * drift + (g * math.sqrt(h)) * run.noise(k)
        else:
            x = x + h * v
        run.report(k, x, None)
    return run.finish(x)


@_flow_doc
def sample_flow_ddim(model, x, *, schedule=None, steps, prediction="velocity", rng=None,
                     progress=False, callback=None, eta=0.0, batched_t=False):
    r"""DDIM on the linear flow path, on the quadratic grid ``t_k = (k / n)^2`` by default.

    The path is Gaussian with ``alpha_t = t`` (data) and ``sigma_t = 1 - t`` (noise); from
    ``x1 = x + (1 - t) v`` and ``x0 = x - t v``, a step t -> t' > t is

    .. math::

        x' = t'\,\hat x_1 + \sqrt{(1-t')^2 - c^2}\,\hat x_0 + c\, z,\qquad
        c = \eta\,(1 - t')\sqrt{1 - r^2},\ r = \frac{t (1 - t')}{t' (1 - t)},

    DDIM's family for a general Gaussian path (``c^2`` is the posterior variance of the
    Markov forward process times ``eta^2``), so every ``eta`` keeps the marginals. ``eta = 0``
    is Euler, ``x' = x + (t' - t) v``. The quadratic grid is dense at the noise end. One model
    evaluation per step; needs ``rng`` when ``eta > 0``.

    %(flow)s
    eta : float
        >= 0 (0: deterministic).
    """
    eta = aa.finite_scalar(eta, "eta", nonnegative=True)
    run = _Run(model, x, schedule=schedule, steps=steps, prediction=prediction, rng=rng,
               progress=progress, callback=callback, default_grid="quadratic",
               allowed_predictions=("velocity",), flow=True, batched_t=batched_t,
               needs_rng=eta > 0)
    x = run.x
    for k in run.steps():
        t, tn = float(run.grid[k]), float(run.grid[k + 1])
        v = run.raw(x, t)
        if eta == 0.0:
            x = x + (tn - t) * v
        else:
            x1 = flow_to_data(v, x, t)
            x0 = flow_to_noise(v, x, t)
            r = 0.0 if t == 0.0 else t * (1.0 - tn) / (tn * (1.0 - t))
            c = eta * (1.0 - tn) * math.sqrt(max(0.0, 1.0 - r * r))
            direction = math.sqrt(max(0.0, (1.0 - tn) ** 2 - c * c))
            x = tn * x1 + direction * x0
            if c > 0.0:
                x = x + c * run.noise(k)
        run.report(k, x, None)
    return run.finish(x)
