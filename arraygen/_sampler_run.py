"""The machinery every sampler loop shares: grid resolution, the validated run (model calls
with output checks, noise stream, callback, progress), and the discrete-timestep wrapper.
Private; public names are re-exported by :mod:`arraygen.samplers`."""

from __future__ import annotations

import functools
import logging
import math

import numpy as np

from . import _array_api as aa
from . import _dask, _noise_offset, _solvers
from . import _validation as _v
from . import random as _random
from ._predictions import _VP_PREDICTIONS, _check_prediction, _convert, dynamic_threshold
from .schedules import (FLOW_TIMESTEP_KINDS, TIMESTEP_KINDS, NoiseSchedule, flow_timesteps,
                        timesteps, validate_grid)

logger = logging.getLogger("arraygen")

# --------------------------------------------------------------------------------------------
# shared machinery
# --------------------------------------------------------------------------------------------

#: The default grid of every diffusion sampler when ``steps`` is an int: equal steps in log-SNR
#: from t = 1 (first level capped at VE sigma 80) down to VE sigma 0.002, then t = 0. Measured on
#: the exact Gaussian (cosine and linear VP, 16-D, tools/bench_samplers_cpu.py) it beats the
#: linear-t and (capped) Karras grids for DPM++(2M), UniPC, Euler and DDIM at 10-50 evaluations.
DEFAULT_GRID = "log_snr"

#: Default grid of the flow-matching samplers (``flow_timesteps`` kind).
DEFAULT_FLOW_GRID = "linear"

_GRID_KINDS = tuple(k for k in TIMESTEP_KINDS if k != "sigmas")


def _requires_prediction(allowed):
    """Make ``prediction`` a required keyword whose absence names the choices."""
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if kwargs.get("prediction") is None:
                raise TypeError(
                    f"{fn.__name__}() needs `prediction=`: what the model returns, one of "
                    f"{', '.join(repr(a) for a in allowed)} (diffusers/Stable Diffusion UNets "
                    f"are 'epsilon' or 'v'; there is no default because a wrong guess gives "
                    f"wrong samples silently)")
            if _dask.is_dask_array(args[1] if len(args) >= 2 else kwargs.get("x")):
                from ._dask_batches import map_sampler  # batch chunks, one task each

                kw = dict(kwargs)
                model = args[0] if args else kw.pop("model")
                x = args[1] if len(args) >= 2 else kw.pop("x")
                return map_sampler(wrapper, model, x, kw)
            return fn(*args, **kwargs)
        return wrapper
    return deco


def _is_step_count(steps) -> bool:
    return isinstance(steps, (bool, int, float, str, np.integer, np.floating)) or (
        aa.is_array(steps) and steps.ndim == 0)


def _diffusion_grid(steps, grid, schedule: NoiseSchedule) -> np.ndarray:
    """The decreasing grid from ``steps`` (int or explicit grid) and ``grid`` (kind or array)."""
    if grid is not None and not isinstance(grid, str):
        g = validate_grid(grid, "grid")
        if steps is not None:
            n = _v.check_int(steps, "steps", minimum=1)
            if n != g.shape[0] - 1:
                raise ValueError(f"`steps` = {n} disagrees with the explicit `grid` of "
                                 f"{g.shape[0] - 1} steps; pass one of them")
        return g
    if grid is not None and grid == "sigmas":
        raise ValueError("grid='sigmas' needs the levels: pass "
                         "grid=timesteps(n, 'sigmas', schedule, sigmas=[...])")
    kind = DEFAULT_GRID if grid is None else _v.check_choice(grid, "grid", _GRID_KINDS)
    if steps is None:
        raise TypeError("`steps` is required: a number of steps, or pass an explicit `grid`")
    if not _is_step_count(steps):
        return validate_grid(steps, "steps")
    n = _v.check_int(steps, "steps", minimum=1)
    key = (schedule._cache_key(), n, kind)
    grid = _GRID_CACHE.get(key)
    if grid is None:
        grid = timesteps(n, kind, schedule)
        if len(_GRID_CACHE) >= 256:
            _GRID_CACHE.pop(next(iter(_GRID_CACHE)))
        _GRID_CACHE[key] = grid
    return grid.copy()


#: (schedule key, steps, kind) -> grid: inverting the schedule by bisection costs about a
#: millisecond, which a sampler called in a loop over small batches would pay every call.
_GRID_CACHE: dict = {}


def _flow_grid(steps, grid, shift: float) -> np.ndarray:
    """Increasing flow-time grid (t = 0 noise -> t = 1 data)."""
    if grid is not None and not isinstance(grid, str):
        g = validate_grid(grid, "grid", increasing=True)
        if steps is not None and _v.check_int(steps, "steps", minimum=1) != g.shape[0] - 1:
            raise ValueError(f"`steps` = {steps} disagrees with the explicit `grid` of "
                             f"{g.shape[0] - 1} steps; pass one of them")
        return g
    kind = DEFAULT_FLOW_GRID if grid is None else _v.check_choice(grid, "grid",
                                                                  FLOW_TIMESTEP_KINDS)
    if steps is None:
        raise TypeError("`steps` is required: a number of steps, or pass an explicit `grid`")
    if not _is_step_count(steps):
        return validate_grid(steps, "steps", increasing=True)
    return flow_timesteps(_v.check_int(steps, "steps", minimum=1), kind, shift=shift)


def _resolve_model_dtype(xp, model_dtype, x_dtype):
    if model_dtype is None:
        return x_dtype if aa.is_half(xp, x_dtype) else None
    if isinstance(model_dtype, str):
        dt = getattr(xp, model_dtype, None)
        if dt is None and model_dtype == "bfloat16":
            raise TypeError("`model_dtype` 'bfloat16' is not available in this array library")
        model_dtype = dt
    try:
        ok = model_dtype is not None and xp.isdtype(model_dtype, "real floating")
    except Exception:
        ok = False
    if not ok and "bfloat16" not in str(model_dtype):
        raise TypeError(f"`model_dtype` must be a real floating dtype of x's library (or its "
                        f"name); got {model_dtype!r}")
    return model_dtype


class _Run:
    """Everything a sampler loop needs: validated input, grid, model wrapper, noise, progress."""

    def __init__(self, model, x, *, schedule, steps, prediction, rng, progress, callback,
                 grid=None, allowed_predictions=_VP_PREDICTIONS, flow=False,
                 batched_t=False, dynamic_thresholding=None, draws_per_step=1,
                 needs_rng=False, model_dtype=None, shift=1.0):
        if not callable(model):
            raise TypeError(f"`model` must be callable as model(x, t); got "
                            f"{type(model).__name__}")
        _check_prediction(prediction, allowed_predictions)
        if callback is not None and not callable(callback):
            raise TypeError(f"`callback` must be callable or None; got {type(callback).__name__}")
        x = _v.as_array(x, "x")
        self.xp = aa.array_namespace(x=x)
        if x.ndim < 1 or x.shape[0] == 0:
            raise ValueError(f"`x` must have a non-empty batch axis (B, ...); got shape "
                             f"{tuple(x.shape)}")
        self.x, self.out_dtype = aa.as_float_array(self.xp, x, "x")
        _v.require_finite(self.xp, self.x, "x")
        self.model_dtype = _resolve_model_dtype(self.xp, model_dtype, x.dtype)
        self.device = aa.device(self.x)
        self.model = model
        self.model_name = getattr(model, "__name__", None) or type(model).__name__
        self.prediction = prediction
        self.flow = flow
        if flow:
            if schedule is not None:
                logger.debug("flow-matching samplers ignore `schedule` (the path is fixed)")
            self.schedule = None
            self.grid = _flow_grid(steps, grid, _v.check_scalar(shift, "shift", positive=True))
        else:
            if not isinstance(schedule, NoiseSchedule):
                raise TypeError(f"`schedule` must be a NoiseSchedule (see make_schedule); got "
                                f"{type(schedule).__name__}")
            self.schedule = schedule
            self.grid = _diffusion_grid(steps, grid, schedule)
            c = self.coef = _solvers.GridCoefficients(schedule, self.grid)
            self.log_ab, self.alpha_bar, self.alpha = c.log_ab, c.alpha_bar, c.alpha
            self.sigma, self.lam, self.ve = c.sigma, c.lam, c.ve
            if self.alpha_bar[0] <= 0.0:
                raise ValueError("alpha_bar is 0 at the first time of the grid; start below "
                                 "t = 1 or use a schedule with alpha_bar(1) > 0")
            flat = np.nonzero(self.sigma[:-1] == 0.0)[0]
            if flat.size:
                i = int(flat[0])
                raise ValueError(f"the schedule has no noise (alpha_bar = 1 in float64) at "
                                 f"t = {self.grid[i]:.6g}, step {i} of the grid, before its "
                                 f"last time: use a grid inside the schedule's noisy range "
                                 f"(e.g. the default grid) or a less extreme schedule")
        self.batched_t = bool(batched_t)
        if dynamic_thresholding is True:
            dynamic_thresholding = 0.995
        if dynamic_thresholding not in (None, False):
            dynamic_thresholding = _v.check_scalar(dynamic_thresholding,
                                                   "dynamic_thresholding", low=0.0, high=1.0,
                                                   low_inclusive=False)
        else:
            dynamic_thresholding = None
        self.threshold = dynamic_thresholding
        self.draws = int(draws_per_step)
        self.key = _random.as_key(rng) if (rng is not None or needs_rng) else None
        self.callback = callback
        self.progress = progress
        self.nfe = 0
        self._pending = []  # (device sum, step, t): finiteness checked without a sync per step
        self._immediate = aa.is_numpy_array(self.x)

    # -- model evaluation ---------------------------------------------------------------------
    def raw(self, x, t: float, step: int | None = None):
        xp = self.xp
        xm = x if self.model_dtype is None else xp.astype(x, self.model_dtype)
        tt = (xp.full((x.shape[0],), t, dtype=x.dtype, device=self.device)  # t never in half
              if self.batched_t else float(t))
        out = self.model(xm, tt)
        self.nfe += 1
        if not (type(out) is type(xm) and out.dtype == xm.dtype and out.shape == xm.shape):
            # the full check (library, complex, shape) only when the cheap one is not conclusive
            _v.check_model_output(xp, out, xm, model="model", step=step, t=t,
                                  check_finite=False)
        if out.dtype != x.dtype:
            out = xp.astype(out, x.dtype)
        # one sum per output: finite unless the output holds NaN/inf (or overflows the sum);
        # on NumPy checked now, elsewhere stacked and read once at the end (no sync per step)
        total = xp.sum(out)
        if self._immediate:
            if not math.isfinite(float(total)) and not aa.all_finite(xp, out):
                self._raise_non_finite(step, t)
        else:
            self._pending.append((total, step, t))
        return out

    def _raise_non_finite(self, step, t):
        where = f" at step {step}" if step is not None else ""
        raise ValueError(f"`model` ({self.model_name}) returned non-finite values (NaN or "
                         f"inf, or values whose sum overflows){where} (t = {t:.6g}); the "
                         f"sample would be NaN")

    def _flush(self):
        if not self._pending:
            return
        xp = self.xp
        sums = aa.to_numpy(xp.stack([f for f, _, _ in self._pending]))
        bad = np.nonzero(~np.isfinite(sums.astype(np.float64)))[0]
        pending, self._pending = self._pending, []
        if bad.size:
            _, step, t = pending[int(bad[0])]
            self._raise_non_finite(step, t)

    def predict(self, x, k: int, target: str):
        """Model prediction of kind ``target`` at grid index ``k`` (thresholded if x0)."""
        return self.predict_at(x, float(self.grid[k]), float(self.alpha[k]),
                               float(self.sigma[k]), target, step=k)

    def predict_at(self, x, t: float, a: float, s: float, target: str, step=None):
        """Prediction at time ``t`` with ``alpha = a``, ``sigma = s`` (VP)."""
        out = self.raw(x, t, step)
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
        return _random.normal(key, tuple(self.x.shape), offset=_noise_offset.current(),
                              dtype=self.x.dtype, like=self.x)

    def steps(self):
        n = self.grid.shape[0] - 1
        it = range(n)
        if self.progress:
            from tqdm.auto import tqdm

            it = tqdm(it, total=n, disable=False)
        return it

    def report(self, k: int, x, denoised=None, *, t=None, t_next=None):
        """Call the callback; returns its replacement for ``x`` when it returns one."""
        if self.callback is None:
            return x
        t = float(self.grid[k]) if t is None else t
        t_next = float(self.grid[k + 1]) if t_next is None else t_next
        new = self.callback({"step": k, "t": t, "t_next": t_next, "x": x,
                             "denoised": denoised, "nfe": self.nfe})
        if new is None:
            return x
        _v.check_model_output(self.xp, new, x, model="callback", step=k, t=t,
                              check_finite=False)
        return new if new.dtype == x.dtype else self.xp.astype(new, x.dtype)

    def finish(self, x):
        self._flush()
        logger.debug("sampler finished: %d steps, %d model evaluations",
                     self.grid.shape[0] - 1, self.nfe)
        return x if x.dtype == self.out_dtype else self.xp.astype(x, self.out_dtype)


def _one_eval_loop(run: _Run, stepper):
    """The loop of every one-evaluation-per-step sampler (see :mod:`arraygen._solvers`)."""
    x = run.x
    for k in run.steps():
        d = run.denoise(x, k)
        x = stepper.step(k, x, d, lambda j, k=k: run.noise(k, j))
        x = run.report(k, x, d)
    return run.finish(x)


def _bcast(xp, values, like):
    """Per-sample (B,) values as an array broadcasting against ``like``."""
    return xp.reshape(values, (like.shape[0],) + (1,) * (like.ndim - 1))


def _sample_norm(xp, v):
    """Per-sample L2 norm, shape (B, 1, ..., 1)."""
    b = v.shape[0]
    n = xp.sqrt(xp.sum(xp.reshape(v * v, (b, -1)), axis=1))
    return _bcast(xp, n, v)


def discrete_time_model(model, num_timesteps: int):
    r"""Wrap a network that takes a discrete timestep (diffusers' UNets) as ``model(x, t)``.

    arraygen's continuous ``t`` maps to the network's timestep argument
    ``i = t * N - 1`` (``N`` = ``num_timesteps``, the training table's length; step ``i`` of the
    table sits at ``t = (i + 1) / N``, as :meth:`NoiseSchedule.from_alphas_cumprod` places it).
    Values within 1e-6 of an integer are passed as that integer (the grids ``"leading"``,
    ``"trailing"``, ``"linspace"`` land on them); others stay fractional (UNets embed float
    timesteps). ``t`` may be a Python float or a ``(B,)`` array (``batched_t=True``).

    Parameters
    ----------
    model : callable
        ``model(x, timestep)`` returning the network output as an array like ``x`` (wrap a
        diffusers UNet as ``lambda x, i: unet(x, i).sample``, or use
        :func:`arraygen.integrations.diffusers.unet_model`).
    num_timesteps : int
        ``N`` (``len(alphas_cumprod)``, diffusers' ``num_train_timesteps``).

    Returns
    -------
    callable ``f(x, t)``

    Examples
    --------
    >>> from arraygen.samplers import discrete_time_model
    >>> f = discrete_time_model(lambda x, i: i, 1000)
    >>> f(None, 0.9), f(None, 0.9005)
    (899, 899.5)
    """
    if not callable(model):
        raise TypeError(f"`model` must be callable; got {type(model).__name__}")
    n = _v.check_int(num_timesteps, "num_timesteps", minimum=1)

    def wrapped(x, t):
        if aa.is_array(t):
            xp = aa.array_namespace(t=t)
            v = t * float(n) - 1.0
            r = xp.round(v)
            return model(x, xp.where(xp.abs(v - r) < 1e-6, r, v))
        v = float(t) * n - 1.0
        r = round(v)
        return model(x, r if abs(v - r) < 1e-6 else v)

    wrapped.__name__ = getattr(model, "__name__", type(model).__name__)
    return wrapped
