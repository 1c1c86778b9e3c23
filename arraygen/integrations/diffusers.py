r"""arraygen's samplers inside diffusers pipelines, and diffusers models inside arraygen's.

* :class:`ArraygenScheduler`: a diffusers scheduler (``set_timesteps``, ``step`` returning an
  object with ``prev_sample``, ``scale_model_input``, ``timesteps``, ``init_noise_sigma``,
  ``order``, ``config``, ``add_noise``) whose steps are arraygen's one-evaluation samplers
  (DDIM, DDPM, Euler, DPM-Solver++(2M) and its SDE, DPM-Solver++(3M) SDE, Euler ancestral,
  UniPC). A diffusers user swaps it in with one line::

      pipe.scheduler = ArraygenScheduler.from_config(pipe.scheduler.config, method="unipc",
                                                     grid="log_snr")

  The noise table is the pipeline's (``num_train_timesteps``, ``beta_schedule``, ... read from
  the config exactly as diffusers builds it); with ``grid=None`` the timesteps follow the
  config's ``timestep_spacing`` (so DDIM and DPM-Solver++(2M) reproduce ``DDIMScheduler`` and
  ``DPMSolverMultistepScheduler`` to float32 rounding); any :func:`arraygen.schedules.timesteps`
  kind may be named instead (``"log_snr"`` measures best; it passes fractional timesteps, which
  diffusers UNets embed as they do integer ones).
* :func:`unet_model`: a diffusers UNet as an arraygen ``model(x, t)`` (continuous t -> the
  UNet's timestep, no autograd graph), for :mod:`arraygen.samplers` with
  :meth:`arraygen.schedules.NoiseSchedule.from_diffusers`.

Requires ``diffusers`` and ``torch`` (imported with this module).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers import DDPMScheduler
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from .. import _solvers
from .. import _validation as _v
from ..samplers import _convert, discrete_time_model
from ..schedules import TIMESTEP_KINDS, NoiseSchedule, _discrete_indices, validate_grid
from ..schedules import timesteps as _timesteps

__all__ = ["ArraygenScheduler", "ArraygenSchedulerOutput", "unet_model"]

#: ``method`` names of :class:`ArraygenScheduler` (one model evaluation per step).
METHODS = _solvers.ONE_EVAL_METHODS

_PREDICTION = {"epsilon": "epsilon", "v_prediction": "v", "sample": "x0"}


@dataclass
class ArraygenSchedulerOutput(BaseOutput):
    """``prev_sample``: the sample at the next (lower-noise) time; ``pred_original_sample``:
    the denoised estimate the step used."""

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


def unet_model(unet, schedule: NoiseSchedule | int):
    """A diffusers UNet (or any ``module(x, timestep).sample`` network) as ``model(x, t)``.

    ``t`` (arraygen's continuous time) becomes the timestep ``t * N - 1`` (see
    :func:`arraygen.samplers.discrete_time_model`); the call runs under ``torch.no_grad()``
    and returns ``.sample`` when the output has it. ``schedule`` is the table schedule
    (:meth:`NoiseSchedule.from_diffusers`) or ``N`` itself.
    """
    n = schedule.num_timesteps if isinstance(schedule, NoiseSchedule) else schedule

    def call(x, timestep):
        with torch.no_grad():
            out = unet(x, timestep)
        return getattr(out, "sample", out)

    call.__name__ = type(unet).__name__
    return discrete_time_model(call, n)


class ArraygenScheduler(SchedulerMixin, ConfigMixin):
    """A diffusers scheduler running an arraygen sampler (see the module docstring).

    Parameters
    ----------
    num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas
        The training noise table, as in every diffusers scheduler (built by diffusers'
        ``DDPMScheduler`` from the same arguments, so it is the pipeline's table bit for bit).
    prediction_type : {"epsilon", "v_prediction", "sample"}
        What the UNet returns.
    method : str
        One of :data:`METHODS`: ``"ddim"``, ``"ddpm"``, ``"euler"``, ``"dpmpp_2m"``,
        ``"dpmpp_2m_sde"``, ``"dpmpp_3m_sde"``, ``"euler_ancestral"``, ``"unipc"``.
    grid : str, optional
        A :func:`arraygen.schedules.timesteps` kind for ``set_timesteps``; None: the
        ``timestep_spacing`` below (diffusers' behaviour).
    timestep_spacing : {"leading", "linspace", "trailing"}
    steps_offset : int
        Added to the ``"leading"`` timesteps (Stable Diffusion configs use 1).
    eta : float
        Noise of ``"ddim"`` (0: deterministic), ``"dpmpp_2m_sde"``, ``"dpmpp_3m_sde"``,
        ``"euler_ancestral"`` (their default 1).
    solver_order : int
        UniPC's predictor order (2 or 3; diffusers' ``solver_order``).
    lower_order_final : bool
        UniPC: lower the order over the final steps (diffusers' default).
    """

    _compatibles = [e.name for e in KarrasDiffusionSchedulers]
    order = 1

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001,
                 beta_end: float = 0.02, beta_schedule: str = "linear", trained_betas=None,
                 prediction_type: str = "epsilon", method: str = "dpmpp_2m",
                 grid: str | None = None, timestep_spacing: str = "linspace",
                 steps_offset: int = 0, eta: float | None = None, solver_order: int = 2,
                 lower_order_final: bool = True):
        _v.check_choice(method, "method", METHODS)
        _v.check_choice(prediction_type, "prediction_type", tuple(_PREDICTION))
        _v.check_choice(timestep_spacing, "timestep_spacing", ("leading", "linspace",
                                                                "trailing"))
        if grid is not None:
            _v.check_choice(grid, "grid", tuple(k for k in TIMESTEP_KINDS if k != "sigmas"))
        _v.check_int(steps_offset, "steps_offset", minimum=0)
        _v.check_int(solver_order, "solver_order", minimum=1, maximum=3)
        if eta is not None:
            _v.check_scalar(eta, "eta", nonnegative=True)
        table = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_start=beta_start,
                              beta_end=beta_end, beta_schedule=beta_schedule,
                              trained_betas=trained_betas).alphas_cumprod
        self.alphas_cumprod = table
        self.schedule = NoiseSchedule.from_alphas_cumprod(table.double().numpy())
        self.init_noise_sigma = 1.0
        self.num_inference_steps = None
        self.timesteps = torch.from_numpy(np.arange(num_train_timesteps)[::-1].copy())
        self._grid = None
        self._stepper = None
        self._step_index = None

    @property
    def step_index(self):
        """Index of the next step (diffusers' convention)."""
        return self._step_index

    def set_timesteps(self, num_inference_steps: int | None = None, device=None, *,
                      timesteps: list | None = None, sigmas: list | None = None):
        """Build the grid: ``num_inference_steps`` steps on the configured grid, or explicit
        integer ``timesteps`` (decreasing) or VE ``sigmas`` (e.g. Align Your Steps)."""
        cfg = self.config
        big_n = cfg.num_train_timesteps
        if timesteps is not None:
            ts = np.asarray([float(t) for t in timesteps])
            grid = np.append((ts + 1.0) / big_n, 0.0)
        elif sigmas is not None:
            n = len(sigmas) - (1 if float(sigmas[-1]) == 0.0 else 0)
            grid = _timesteps(n, "sigmas", self.schedule, sigmas=sigmas)
        else:
            n = _v.check_int(num_inference_steps, "num_inference_steps", minimum=1)
            if cfg.grid is not None:
                grid = _timesteps(n, cfg.grid, self.schedule)
            else:
                idx = _discrete_indices(n, cfg.timestep_spacing, big_n)
                if cfg.timestep_spacing == "leading":
                    idx = idx + cfg.steps_offset
                grid = np.append((idx + 1.0) / big_n, 0.0)
        grid = validate_grid(grid, "timesteps")
        self._grid = grid
        self.num_inference_steps = grid.shape[0] - 1
        coef = _solvers.GridCoefficients(self.schedule, grid)
        if coef.alpha_bar[0] <= 0.0 or np.any(coef.sigma[:-1] == 0.0):
            raise ValueError("the grid leaves the schedule's noisy range")
        self._coef = coef
        opts = {"order": cfg.solver_order, "lower_order_final": cfg.lower_order_final}
        if cfg.eta is not None:
            opts["eta"] = cfg.eta
        if cfg.method == "dpmpp_2m_sde":
            opts.setdefault("eta", 1.0)
        self._stepper = _solvers.make_stepper(cfg.method, coef, **opts)
        steps = grid[:-1] * big_n - 1.0
        rounded = np.round(steps)
        if np.all(np.abs(steps - rounded) < 1e-6):
            ts = torch.from_numpy(rounded.astype(np.int64))
        else:
            ts = torch.from_numpy(steps.astype(np.float32))
        self.timesteps = ts.to(device) if device is not None else ts
        self._step_index = 0

    def set_begin_index(self, begin_index: int = 0):
        """Start at step ``begin_index`` of the grid (image-to-image pipelines call this after
        ``set_timesteps``; multistep methods warm up again from there)."""
        if self._stepper is None:
            raise ValueError("call set_timesteps before set_begin_index")
        self._step_index = _v.check_int(begin_index, "begin_index", minimum=0,
                                        maximum=self.num_inference_steps - 1)

    def scale_model_input(self, sample: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """Identity: arraygen's samplers work on VP samples (``init_noise_sigma`` = 1)."""
        return sample

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor,
             generator: torch.Generator | None = None, return_dict: bool = True, **kwargs):
        """Advance ``sample`` one step with the UNet output ``model_output`` at ``timestep``."""
        if self._stepper is None:
            raise ValueError("call set_timesteps before step")
        k = self._step_index
        if k is None or k >= self.num_inference_steps:
            raise ValueError("step called more often than there are timesteps; call "
                             "set_timesteps again")
        cfg = self.config
        c = self._coef
        dtype = sample.dtype
        x = sample.float() if dtype in (torch.float16, torch.bfloat16) else sample
        out = model_output.to(x.dtype)
        pred = _PREDICTION[cfg.prediction_type]
        d = _convert(out, x, float(c.alpha[k]), float(c.sigma[k]), pred, "x0")

        def noise(j):
            return randn_tensor(x.shape, generator=generator, device=x.device, dtype=x.dtype)

        prev = self._stepper.step(k, x, d, noise)
        self._step_index = k + 1
        prev = prev.to(dtype)
        if not return_dict:
            return (prev,)
        return ArraygenSchedulerOutput(prev_sample=prev, pred_original_sample=d.to(dtype))

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor,
                  timesteps: torch.Tensor) -> torch.Tensor:
        """``sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) noise`` at integer training timesteps."""
        ab = self.alphas_cumprod.to(device=original_samples.device,
                                    dtype=original_samples.dtype)[timesteps.long()]
        while ab.ndim < original_samples.ndim:
            ab = ab[..., None]
        return ab.sqrt() * original_samples + (1.0 - ab).sqrt() * noise

    def __len__(self) -> int:
        return self.config.num_train_timesteps
