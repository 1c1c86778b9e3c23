r"""FastSB-OT: predictor-corrector diffusion sampling with an entropic-OT bridge to reference data.

One sampling step from :math:`t` to :math:`t' < t` (VP diffusion, t = 0 data, t = 1 noise,
:math:`\alpha_t = \sqrt{\bar\alpha(t)}`, :math:`\sigma_t^2 = 1 - \bar\alpha(t)`):

1. **Model**: one evaluation at :math:`(x, t)`, converted to the denoiser
   :math:`D(x) \approx E[x_0 \mid x_t = x]`.
2. **OT bridge** (only with a ``reference`` set :math:`y_1..y_M` of data samples, while
   :math:`\sigma_t \ge` ``ot_min_sigma``). The static Schrödinger bridge between the current
   samples and the scaled reference :math:`\alpha_t y_j` whose reference kernel is the forward
   noise :math:`e^{-\lVert x - \alpha_t y\rVert^2 / (2\sigma_t^2)}` is entropic OT with
   cost :math:`\lVert x_i - \alpha_t y_j\rVert^2` and

   .. math:: \varepsilon_t = s_\varepsilon \cdot 2\sigma_t^2

   (``ot_epsilon_scale`` :math:`s_\varepsilon`, default 1: epsilon is annealed with the noise
   level in units of the squared distance, the cost's own scale). Its barycentric map
   :math:`T(x_i) = \sum_j P_{ij}\alpha_t y_j / a_i` is the posterior mean of the forward
   kernel under the constraint that every reference point receives mass :math:`1/M`: a
   *mass-balanced* denoiser (if the samples already follow :math:`p_t` and the model is exact,
   :math:`T \approx \alpha_t D`). The predictor then uses

   .. math:: D' = (1 - \kappa_t) D + \kappa_t T / \alpha_t,\qquad
             \kappa_t = \min(1, \text{ot\_strength}\cdot\sigma_t^2),

   i.e. it moves the samples part-way toward their barycentric targets, more at high noise
   (where mode weights are decided) and not at all below ``ot_min_sigma`` (near the data the
   bridge would copy reference points). The potentials come from
   :func:`arraygen.ot.sinkhorn` (tiled, log domain, automatic over-relaxation: the N x M plan
   is never formed). When the dense-equivalent size :math:`N M \cdot` itemsize exceeds
   ``memory_limit_ot_mb`` (the per-iteration cost is O(N M)), the bridge uses sliced OT
   instead: :func:`arraygen.ot.sliced_ot_map` from the samples to the noised reference
   :math:`\alpha_t y_j + \sigma_t z_j`, applied before the model call as
   :math:`x \leftarrow x + \kappa_t(\mathrm{map}(x) - x)`.
3. **Predictor**: a DDIM step (:func:`arraygen.samplers.sample_ddim`, ``eta``) or a reverse-SDE
   Euler-Maruyama step (:func:`arraygen.samplers.sample_sde`) with :math:`D'`.
4. **Corrector** (``corrector_steps`` m, skipped on the final step to t = 0): m fused
   Fisher-preconditioned momentum Langevin updates at :math:`t'`
   (:func:`arraygen.fisher.fisher_langevin_step`, pSGLD), each with one model evaluation and
   step size :math:`h = \min(2(\text{snr}\sqrt{D}/\overline{\lVert s\rVert})^2, \sigma_{t'}^2)`
   (:math:`D` the number of features, :math:`\overline{\lVert s\rVert}` the batch mean of the
   per-sample score norms: Song et al.'s rule with :math:`E\lVert z\rVert \approx \sqrt D`;
   the cap is the inverse curvature bound of :math:`p_{t'}`; one host synchronisation per
   update). The second-moment state :math:`v`, the diagonal Fisher information
   :math:`E[s^2]` estimated by the batch mean of :math:`s^2` (so a sample's preconditioner
   does not depend on its own position, which would bias the unadjusted step), is carried
   across steps and updates with ``momentum``.

Model evaluations: ``steps + corrector_steps * (steps - 1)``. The time grid is
:func:`arraygen.schedules.timesteps` of kind ``grid`` (default ``"log_snr"``: equally spaced in
log-SNR from t = 1 down to the level ``sigma_min``, then a final step to t = 0).

Presets (``quality``; every field can be overridden):

===========  =====  =========  ==========  =====  ========  =========  ===  ==========  ======
preset       steps  predictor  correctors  snr    momentum  sigma_min  OT   Sinkhorn    sliced
                                                                            iterations  proj.
===========  =====  =========  ==========  =====  ========  =========  ===  ==========  ======
``draft``    8      sde        0           0.16   0.9       0.3        off  10          16
``fast``     12     sde        0           0.16   0.9       0.25       on   20          32
``balanced`` 20     sde        0           0.16   0.9       0.2        on   50          64
``ultra``    30     sde        1           0.16   0.95      0.15       on   100         128
``extreme``  50     sde        2           0.16   0.99      0.1        on   200         256
===========  =====  =========  ==========  =====  ========  =========  ===  ==========  ======

Every preset anneals epsilon as :math:`\varepsilon_t = 2\sigma_t^2` (``ot_epsilon_scale`` 1) with
Sinkhorn tolerance 1e-3 on the marginal L1 error and applies the bridge while
:math:`\sigma_t \ge 0.5`. "OT on" only acts when a ``reference`` set is given.

Random streams: with an int seed or :class:`~arraygen.random.Key` ``key``, the starting noise
is ``key``'s stream, and step ``k`` uses ``key.advance(1 + k * 1024 + j)``: ``j = 0`` the
predictor, ``j = 1..m`` the corrector updates, ``j = 1023`` the sliced-OT directions and
reference noise. Same seed, same backend => identical samples.

Caching (``cache=`` a :class:`~arraygen.cache.PersistentKernelCache`): the per-step table
(t, alpha_bar, sigma^2, epsilon_t, kappa_t) is stored under ``"fastsbot_table"`` keyed by the
schedule, the grid and the bridge settings, so a new process skips the grid inversion; it is
also memoised on the solver. Sinkhorn potentials are *not* cached: they depend on the current
samples, which change at every step and every call.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import time
import warnings
from typing import Any

import numpy as np

from . import _array_api as aa
from . import random as _random
from .schedules import TIMESTEP_KINDS, NoiseSchedule, timesteps

__all__ = ["PRESETS", "FastSBOTConfig", "FastSBOTSolver", "SelfCheckReport"]

logger = logging.getLogger("arraygen")

#: Quality presets: the values the ``None`` fields of :class:`FastSBOTConfig` take.
_PRESET_FIELDS = ("steps", "predictor", "corrector_steps", "corrector_snr", "momentum",
                  "sigma_min", "use_ot", "sinkhorn_iterations", "sliced_projections")
#: Quality presets: the values the ``None`` fields of :class:`FastSBOTConfig` take.
PRESETS: dict[str, dict[str, Any]] = {
    name: dict(zip(_PRESET_FIELDS, values))
    for name, values in {
        "draft": (8, "sde", 0, 0.16, 0.9, 0.3, False, 10, 16),
        "fast": (12, "sde", 0, 0.16, 0.9, 0.25, True, 20, 32),
        "balanced": (20, "sde", 0, 0.16, 0.9, 0.2, True, 50, 64),
        "ultra": (30, "sde", 1, 0.16, 0.95, 0.15, True, 100, 128),
        "extreme": (50, "sde", 2, 0.16, 0.99, 0.1, True, 200, 256),
    }.items()
}
PREDICTORS = ("ddim", "sde")
_VP_PREDICTIONS = ("score", "epsilon", "x0", "v")
_STREAM_STRIDE = 1024


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an integer; got {value!r}")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}; got {value}")
    return int(value)


@dataclasses.dataclass
class FastSBOTConfig:
    """Settings of :class:`FastSBOTSolver`; ``None`` fields take the ``quality`` preset's value.

    Parameters
    ----------
    quality : {"draft", "fast", "balanced", "ultra", "extreme"}
        Preset (module docstring table). Unknown names raise ``ValueError``.
    steps : int, optional
        Predictor steps (>= 1). Exclusive with ``nfe``.
    nfe : int, optional
        Budget of model evaluations instead of ``steps``: the largest ``steps`` with
        ``steps + corrector_steps * (steps - 1) <= nfe``.
    predictor : {"ddim", "sde"}, optional
    eta : float
        DDIM stochasticity (>= 0; DDIM predictor only).
    corrector_steps : int, optional
        Fisher-Langevin corrector updates per step (>= 0).
    corrector_snr : float, optional
        Corrector signal-to-noise ratio (> 0) setting its step size.
    momentum : float, optional
        Momentum of the corrector's second-moment estimate, in [0, 1).
    sigma_min : float, optional
        Noise level :math:`\\sigma` of the last time before t = 0 on the ``"log_snr"`` grid,
        in (0, 1).
    grid : str
        Time-grid kind (:data:`arraygen.schedules.TIMESTEP_KINDS`; default ``"log_snr"``).
    use_ot : bool, optional
        Use the OT bridge when the solver has a ``reference`` set.
    sinkhorn_iterations : int, optional
        Maximum Sinkhorn iterations per bridged step (>= 1).
    sinkhorn_tol : float
        Sinkhorn tolerance on the marginal L1 error (> 0).
    ot_epsilon_scale : float
        :math:`\\varepsilon_t = \\text{ot\\_epsilon\\_scale}\\cdot 2\\sigma_t^2` (> 0).
    ot_strength : float
        :math:`\\kappa_t = \\min(1, \\text{ot\\_strength}\\,\\sigma_t^2)` (>= 0).
    ot_min_sigma : float
        The bridge acts while :math:`\\sigma_t \\ge` this, in [0, 1].
    sliced_projections : int, optional
        Directions of the sliced-OT fallback (>= 1).
    memory_limit_ot_mb : float
        Above this dense-equivalent size (N * M * itemsize, MiB) the bridge uses sliced OT (> 0).
    dynamic_thresholding : float, optional
        Percentile of :func:`arraygen.samplers.dynamic_threshold` applied to the denoiser.
    profile : bool
        Record per-stage times, memory and the epsilon trace in ``solver.profile_``.
    backend : str, optional
        Kernel backend for the Fisher step and the tiled OT kernels.
    """

    quality: str = "balanced"
    steps: int | None = None
    nfe: int | None = None
    predictor: str | None = None
    eta: float = 0.0
    corrector_steps: int | None = None
    corrector_snr: float | None = None
    momentum: float | None = None
    sigma_min: float | None = None
    grid: str = "log_snr"
    use_ot: bool | None = None
    sinkhorn_iterations: int | None = None
    sinkhorn_tol: float = 1e-3
    ot_epsilon_scale: float = 1.0
    ot_strength: float = 1.0
    ot_min_sigma: float = 0.5
    sliced_projections: int | None = None
    memory_limit_ot_mb: float = 100.0
    dynamic_thresholding: float | None = None
    profile: bool = False
    backend: str | None = None

    def __post_init__(self):
        if not isinstance(self.quality, str) or self.quality not in PRESETS:
            raise ValueError(f"`quality` must be one of {tuple(PRESETS)}; got {self.quality!r}")
        preset = PRESETS[self.quality]
        if self.steps is not None and self.nfe is not None:
            raise ValueError(f"give `steps` or `nfe`, not both; got steps={self.steps!r}, "
                             f"nfe={self.nfe!r}")
        for name, value in preset.items():
            if name == "steps" and self.nfe is not None:
                continue
            if getattr(self, name) is None:
                setattr(self, name, value)
        self.corrector_steps = _check_int(self.corrector_steps, "corrector_steps", 0)
        if self.nfe is not None:
            self.nfe = _check_int(self.nfe, "nfe", 1)
            m = self.corrector_steps
            self.steps = max(1, (self.nfe + m) // (1 + m))
        self.steps = _check_int(self.steps, "steps", 1)
        if self.predictor not in PREDICTORS:
            raise ValueError(f"`predictor` must be one of {PREDICTORS}; got {self.predictor!r}")
        self.eta = aa.finite_scalar(self.eta, "eta", nonnegative=True)
        self.corrector_snr = aa.finite_scalar(self.corrector_snr, "corrector_snr", positive=True)
        self.momentum = aa.finite_scalar(self.momentum, "momentum")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"`momentum` must lie in [0, 1); got {self.momentum}")
        self.sigma_min = aa.finite_scalar(self.sigma_min, "sigma_min")
        if not 0.0 < self.sigma_min < 1.0:
            raise ValueError(f"`sigma_min` must lie in (0, 1); got {self.sigma_min}")
        if self.grid not in TIMESTEP_KINDS:
            raise ValueError(f"`grid` must be one of {TIMESTEP_KINDS}; got {self.grid!r}")
        if not isinstance(self.use_ot, (bool, np.bool_)):
            raise TypeError(f"`use_ot` must be a bool; got {self.use_ot!r}")
        self.use_ot = bool(self.use_ot)
        self.sinkhorn_iterations = _check_int(self.sinkhorn_iterations, "sinkhorn_iterations", 1)
        self.sinkhorn_tol = aa.finite_scalar(self.sinkhorn_tol, "sinkhorn_tol", positive=True)
        self.ot_epsilon_scale = aa.finite_scalar(self.ot_epsilon_scale, "ot_epsilon_scale",
                                                 positive=True)
        self.ot_strength = aa.finite_scalar(self.ot_strength, "ot_strength", nonnegative=True)
        self.ot_min_sigma = aa.finite_scalar(self.ot_min_sigma, "ot_min_sigma")
        if not 0.0 <= self.ot_min_sigma <= 1.0:
            raise ValueError(f"`ot_min_sigma` must lie in [0, 1]; got {self.ot_min_sigma}")
        self.sliced_projections = _check_int(self.sliced_projections, "sliced_projections", 1)
        self.memory_limit_ot_mb = aa.finite_scalar(self.memory_limit_ot_mb, "memory_limit_ot_mb",
                                                   positive=True)
        if self.dynamic_thresholding is not None:
            p = aa.finite_scalar(self.dynamic_thresholding, "dynamic_thresholding")
            if not 0.0 < p <= 1.0:
                raise ValueError(f"`dynamic_thresholding` must be a percentile in (0, 1]; got {p}")
            self.dynamic_thresholding = p
        self.profile = bool(self.profile)
        if self.backend is not None and not isinstance(self.backend, str):
            raise TypeError(f"`backend` must be a backend name or None; got {self.backend!r}")

    @property
    def model_evaluations(self) -> int:
        """Model evaluations of one :meth:`FastSBOTSolver.sample` call."""
        return self.steps + self.corrector_steps * (self.steps - 1)


@dataclasses.dataclass
class SelfCheckReport:
    """Result of :meth:`FastSBOTSolver.self_check`.

    Attributes
    ----------
    passed : bool
        All checks passed.
    checks : dict
        ``name -> {"passed": bool, "value": float, "threshold": float, "detail": str}``.
    """

    passed: bool
    checks: dict

    def __bool__(self) -> bool:
        return self.passed

    def __getitem__(self, name: str):
        """Dict-style access: ``report["passed"]``, ``report["checks"]`` or a check's name."""
        if name in ("passed", "checks"):
            return getattr(self, name)
        return self.checks[name]

    def to_dict(self) -> dict:
        """``{"passed": ..., "checks": {...}}`` (JSON-serialisable)."""
        return {"passed": self.passed, "checks": {k: dict(v) for k, v in self.checks.items()}}

    def __str__(self) -> str:
        lines = [f"FastSB-OT self-check: {'PASS' if self.passed else 'FAIL'}"]
        for name, c in self.checks.items():
            lines.append(f"  {name}: {'pass' if c['passed'] else 'FAIL'} value {c['value']:.3g} "
                         f"(threshold {c['threshold']:.3g}) {c['detail']}")
        return "\n".join(lines)


def _is_torch_module(obj) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def _synchronize(x) -> None:
    kind, _ = aa.device_kind(x)
    if kind != "cuda":
        return
    if aa.is_torch_array(x):
        import torch

        torch.cuda.synchronize(x.device)
    elif aa.is_cupy_array(x):
        import cupy

        cupy.cuda.get_current_stream().synchronize()


def _peak_memory_mb(x) -> dict:
    out = {}
    try:
        import resource

        out["host_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except (ImportError, OSError):
        pass
    kind, index = aa.device_kind(x)
    if kind == "cuda" and aa.is_torch_array(x):
        import torch

        out["device_peak_mb"] = torch.cuda.max_memory_allocated(index) / 2**20
    elif kind == "cuda" and aa.is_cupy_array(x):
        import cupy

        out["device_pool_used_mb"] = cupy.get_default_memory_pool().used_bytes() / 2**20
    return out


class FastSBOTSolver:
    """Predictor-corrector sampler with an optional entropic-OT bridge (module docstring).

    Parameters
    ----------
    score_model : callable
        ``score_model(x, t)`` with ``x`` of shape (B, ...) and ``t`` a Python float, returning
        an array like ``x`` of kind ``prediction``. NumPy, torch and CuPy models work: the
        samples live in the namespace given to :meth:`sample` (a torch ``nn.Module`` defaults
        to torch on its parameters' device).
    schedule : NoiseSchedule
    config : FastSBOTConfig, optional
        Default ``FastSBOTConfig()`` ("balanced").
    reference : array, shape (M, ...), optional
        Data samples for the OT bridge (finite; same trailing shape as the samples).
    prediction : {"score", "epsilon", "x0", "v"}
    cache : PersistentKernelCache, optional
        Where to keep the per-step table across processes.

    Attributes
    ----------
    profile_ : dict
        After :meth:`sample` with ``config.profile``: ``times`` (seconds per stage: model,
        bridge, predictor, corrector, total), ``memory`` (peak host RSS, device peak),
        ``epsilon`` / ``kappa`` / ``ot_method`` / ``sinkhorn_iterations`` /
        ``sinkhorn_error`` per step, ``nfe``, ``cache_hit``.
    nfe_ : int
        Model evaluations of the last :meth:`sample` call.

    Examples
    --------
    >>> import numpy as np
    >>> from arraygen.datasets import GaussianMixture
    >>> from arraygen.schedules import make_schedule
    >>> from arraygen.fastsbot import FastSBOTConfig, FastSBOTSolver
    >>> gm = GaussianMixture(np.array([[-2.0, 0.0], [2.0, 0.0]]), np.array([0.1, 0.1]))
    >>> sch = make_schedule("linear")
    >>> solver = FastSBOTSolver(gm.model(sch), sch, FastSBOTConfig(quality="fast"))
    >>> x = solver.sample((500, 2), rng=0)
    """

    def __init__(self, score_model, schedule, config: FastSBOTConfig | None = None, *,
                 reference=None, prediction: str = "score", cache=None):
        if not callable(score_model):
            raise TypeError(f"`score_model` must be callable as model(x, t); got "
                            f"{type(score_model).__name__}")
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"`schedule` must be a NoiseSchedule (see make_schedule); got "
                            f"{type(schedule).__name__}")
        if config is None:
            config = FastSBOTConfig()
        if not isinstance(config, FastSBOTConfig):
            raise TypeError(f"`config` must be a FastSBOTConfig; got {type(config).__name__}")
        if prediction not in _VP_PREDICTIONS:
            raise ValueError(f"`prediction` must be one of {_VP_PREDICTIONS}; got {prediction!r}")
        if cache is not None and not callable(getattr(cache, "get_or_compute", None)):
            raise TypeError(f"`cache` must be a PersistentKernelCache or None; got "
                            f"{type(cache).__name__}")
        self.model = score_model
        self.schedule = schedule
        self.config = config
        self.prediction = prediction
        self.cache = cache
        self.reference = None
        if reference is not None:
            if not aa.is_array(reference):
                raise TypeError(f"`reference` must be an array of shape (M, ...); got "
                                f"{type(reference).__name__}")
            rxp = aa.array_namespace(reference=reference)
            if reference.ndim < 2 or reference.shape[0] < 2:
                raise ValueError(f"`reference` must have shape (M, ...) with M >= 2 and a "
                                 f"feature axis; got shape {tuple(reference.shape)}")
            ref, _ = aa.as_float_array(rxp, reference, "reference")
            if not aa.all_finite(rxp, ref):
                raise ValueError("`reference` contains non-finite values")
            self.reference = ref
        self.profile_: dict = {}
        self.nfe_ = 0
        self._table = None
        self._table_hit = False

    # -- the per-step table -------------------------------------------------------------------
    def _grid(self) -> np.ndarray:
        c = self.config
        if c.grid == "log_snr":
            top = math.log((1.0 - c.sigma_min ** 2) / c.sigma_min ** 2)
            return timesteps(c.steps, "log_snr", self.schedule, log_snr_max=top)
        return timesteps(c.steps, c.grid, self.schedule)

    def _compute_table(self) -> np.ndarray:
        c = self.config
        t = self._grid()
        la = self.schedule._log_alpha_bar(np, t)
        s2 = -np.expm1(la)
        eps = c.ot_epsilon_scale * 2.0 * s2
        kappa = np.minimum(1.0, c.ot_strength * s2)
        kappa = np.where(np.sqrt(s2) >= c.ot_min_sigma, kappa, 0.0)
        return np.stack([t, np.exp(la), s2, eps, kappa], axis=1)

    def step_table(self) -> np.ndarray:
        """Per-time table, float64 (steps + 1, 5): t, alpha_bar, sigma^2, epsilon_t, kappa_t."""
        if self._table is None:
            c = self.config
            if self.cache is not None:
                params = {"schedule": repr(self.schedule), "grid": c.grid, "steps": c.steps,
                              "sigma_min": c.sigma_min, "eps_scale": c.ot_epsilon_scale,
                              "strength": c.ot_strength, "min_sigma": c.ot_min_sigma}
                hit = self.cache.get("fastsbot_table", **params)
                self._table_hit = hit is not None
                table = hit if hit is not None else self._compute_table()
                if hit is None:
                    self.cache.put("fastsbot_table", table, **params)
            else:
                table = self._compute_table()
            self._table = np.asarray(table, dtype=np.float64)
        return self._table

    @property
    def timesteps(self) -> np.ndarray:
        """The time grid, strictly decreasing from 1 to 0 (float64)."""
        return self.step_table()[:, 0].copy()

    # -- sampling -----------------------------------------------------------------------------
    def _namespace(self, xp, device):
        if xp is None and self.reference is not None:
            ns = aa.array_namespace(reference=self.reference)
            return ns, aa.device(self.reference) if device is None else device
        if xp is None and _is_torch_module(self.model):
            import torch

            ns = aa.namespace_for(torch)
            params = list(self.model.parameters())
            dev = params[0].device if params and device is None else (device or "cpu")
            return ns, dev
        ns = aa.namespace_for(xp)
        if device is None:
            device = "cpu" if aa.is_torch_namespace(ns) else None
        return ns, device

    def _model_call(self, x, t: float):
        out = self.model(x, t)
        if not aa.is_array(out):
            raise TypeError(f"the score model must return an array; got {type(out).__name__}")
        if tuple(out.shape) != tuple(x.shape):
            raise ValueError(f"the score model returned shape {tuple(out.shape)} for input "
                             f"shape {tuple(x.shape)}")
        xp = aa.array_namespace(x=x, model_output=out)
        return out if out.dtype == x.dtype else xp.astype(out, x.dtype)

    def sample(self, shape, *, rng=None, xp=None, device=None, dtype=None, progress=False,
               callback=None):
        """Draw samples: start from N(0, I) at t = 1 and run the configured steps to t = 0.

        Parameters
        ----------
        shape : tuple of int
            (B, ...) sample shape.
        rng : int, Key or numpy.random.Generator, optional
            Noise source (module docstring: stream layout).
        xp : module, optional
            Namespace of the samples (numpy, torch, cupy); default NumPy, or the
            ``reference``'s namespace, or torch for a torch ``nn.Module`` model.
        device : optional
            Device in that namespace.
        dtype : optional
            Floating dtype (default: the namespace's default float, or the reference's).
        progress : bool
            tqdm progress bar.
        callback : callable, optional
            ``callback(info)`` after every step with ``step, t, t_next, x, denoised, nfe``.

        Returns
        -------
        array of ``shape`` in that namespace, device and dtype.
        """
        from . import samplers as S

        c = self.config
        try:
            shape = tuple(int(s) for s in shape)
        except TypeError:
            raise TypeError(f"`shape` must be a tuple of ints; got {shape!r}") from None
        if len(shape) < 2 or shape[0] < 1 or min(shape) < 1:
            raise ValueError(f"`shape` must be (B, ...) with B >= 1 and a feature axis; got "
                             f"{shape}")
        if callback is not None and not callable(callback):
            raise TypeError(f"`callback` must be callable or None; got {type(callback).__name__}")
        ns, device = self._namespace(xp, device)
        if dtype is None:
            same = self.reference is not None and aa.namespace_for(ns).__name__ == \
                aa.array_namespace(reference=self.reference).__name__
            dtype = self.reference.dtype if same else aa.result_dtype(ns)
        elif isinstance(dtype, str):
            dtype = getattr(ns, dtype)
        if not ns.isdtype(dtype, "real floating"):
            raise ValueError(f"`dtype` must be a real floating dtype; got {dtype}")
        out_dtype, work = dtype, aa.compute_dtype(ns, dtype)
        ref = None
        if self.reference is not None and c.use_ot:
            ref = self._reference_for(ns, device, work, shape)
        key = _random.as_key(rng)
        x = self._start_noise(key, shape, ns, device, work)
        table = self.step_table()
        n_steps = table.shape[0] - 1
        times = {"model": 0.0, "bridge": 0.0, "predictor": 0.0, "corrector": 0.0}
        trace = {"epsilon": [], "kappa": [], "ot_method": [], "sinkhorn_iterations": [],
                 "sinkhorn_error": []}
        not_converged: list[tuple[int, float]] = []
        v_state = None
        nfe = 0
        d_feat = math.prod(shape[1:])
        prof = c.profile
        t_start = time.perf_counter()
        steps_iter = range(n_steps)
        if progress:
            from tqdm.auto import tqdm

            steps_iter = tqdm(steps_iter, total=n_steps, desc="FastSB-OT")

        def clock(stage, t0):
            if prof:
                _synchronize(x)
                times[stage] += time.perf_counter() - t0
            return time.perf_counter()

        for k in steps_iter:
            t_c, ab_c, s2_c, eps_c, kap_c = (float(v) for v in table[k])
            t_n = float(table[k + 1, 0])
            step_key = None if isinstance(key, np.random.Generator) else key.advance(
                1 + k * _STREAM_STRIDE)
            bridge = ref is not None and kap_c > 0.0
            sliced = bridge and self._use_sliced(shape[0], ref.shape[0], work, ns)
            trace["epsilon"].append(eps_c if bridge and not sliced else None)
            trace["kappa"].append(kap_c if bridge else 0.0)
            trace["ot_method"].append(("sliced" if sliced else "sinkhorn") if bridge else None)
            n_it = err = None
            t0 = time.perf_counter()
            if sliced:
                x = self._sliced_bridge(x, ref, ab_c, s2_c, kap_c, step_key, key)
                t0 = clock("bridge", t0)
            out = self._model_call(x, t_c)
            nfe += 1
            t0 = clock("model", t0)
            a_c = math.sqrt(ab_c)
            den = S.convert_prediction(out, x, ab_c, source=self.prediction, target="x0")
            if c.dynamic_thresholding is not None:
                den = S.dynamic_threshold(den, c.dynamic_thresholding)
            if bridge and not sliced:
                target, n_it, err = self._sinkhorn_target(x, ref, a_c, eps_c)
                if not err <= c.sinkhorn_tol:
                    not_converged.append((k, err))
                den = (1.0 - kap_c) * den + (kap_c / a_c) * target
                t0 = clock("bridge", t0)
            trace["sinkhorn_iterations"].append(n_it)
            trace["sinkhorn_error"].append(err)
            fixed = den

            def frozen(_x, _t, _d=fixed):
                return _d

            grid = np.array([t_c, t_n])
            pred_key = step_key if step_key is not None else key
            if c.predictor == "ddim":
                x_new = S.sample_ddim(frozen, x, schedule=self.schedule, steps=grid,
                                      prediction="x0", eta=c.eta,
                                      rng=pred_key if c.eta > 0 else None)
            else:
                x_new = S.sample_sde(frozen, x, schedule=self.schedule, steps=grid,
                                     prediction="x0", rng=pred_key)
            x = x_new
            t0 = clock("predictor", t0)
            if t_n > 0.0 and c.corrector_steps > 0:
                ab_n = float(table[k + 1, 1])
                s2_n = float(table[k + 1, 2])
                for j in range(c.corrector_steps):
                    score = S.convert_prediction(self._model_call(x, t_n), x, ab_n,
                                                 source=self.prediction, target="score")
                    nfe += 1
                    x, v_state = self._corrector(x, score, v_state, ab_n, s2_n, d_feat,
                                                 step_key.advance(1 + j)
                                                 if step_key is not None else key)
                t0 = clock("corrector", t0)
            if callback is not None:
                callback({"step": k, "t": t_c, "t_next": t_n, "x": x, "denoised": den,
                          "nfe": nfe})
        self.nfe_ = nfe
        if not_converged:
            from .ot import ConvergenceWarning

            worst = max(e for _, e in not_converged)
            warnings.warn(f"FastSB-OT: the bridge's Sinkhorn did not reach sinkhorn_tol = "
                          f"{c.sinkhorn_tol:g} within {c.sinkhorn_iterations} iterations at "
                          f"{len(not_converged)} of {n_steps} steps (largest marginal error "
                          f"{worst:.3g}); the bridge used the last potentials. Raise "
                          f"sinkhorn_iterations or ot_epsilon_scale.", ConvergenceWarning,
                          stacklevel=2)
        if prof:
            _synchronize(x)
            times["total"] = time.perf_counter() - t_start
            self.profile_ = {"times": times, "memory": _peak_memory_mb(x), "nfe": nfe,
                             "cache_hit": self._table_hit, "timesteps": table[:, 0].tolist(),
                             **trace}
        logger.debug("FastSB-OT: %d steps, %d model evaluations", n_steps, nfe)
        return x if x.dtype == out_dtype else ns.astype(x, out_dtype)

    # -- pieces ---------------------------------------------------------------------------------
    def _start_noise(self, gen, shape, ns, device, dtype):
        if isinstance(gen, np.random.Generator):
            np_dtype = np.float32 if dtype == ns.float32 else np.float64
            host = gen.standard_normal(shape).astype(np_dtype)
            if aa.is_torch_namespace(ns):
                import torch

                return torch.from_numpy(host).to(device)
            return ns.asarray(host, device=device)
        return _random.normal(gen, shape, dtype=dtype, xp=ns, device=device)

    def _reference_for(self, ns, device, dtype, shape):
        ref = self.reference
        rns = aa.array_namespace(reference=ref)
        if aa.namespace_for(ns).__name__ != rns.__name__:
            raise TypeError(f"`reference` is a {rns.__name__} array but the samples are in "
                            f"{ns.__name__}; pass the reference in the samples' namespace")
        if tuple(ref.shape[1:]) != tuple(shape[1:]):
            raise ValueError(f"`reference` items have shape {tuple(ref.shape[1:])} but the "
                             f"samples have {tuple(shape[1:])}")
        if device is not None and aa.device(ref) != device:
            raise ValueError(f"`reference` is on {aa.device(ref)} but the samples go to "
                             f"{device}")
        flat = rns.reshape(ref, (ref.shape[0], -1))
        return flat if flat.dtype == dtype else rns.astype(flat, dtype)

    def _use_sliced(self, n: int, m: int, dtype, ns) -> bool:
        itemsize = 4 if dtype == ns.float32 else 8
        return n * m * itemsize > self.config.memory_limit_ot_mb * 2**20

    def _sinkhorn_target(self, x, ref, a: float, eps: float):
        """Barycentric targets of x (B, ...) toward alpha * ref: (targets like x, n_iter, error)."""
        from .ot import ConvergenceWarning, sinkhorn

        xp = aa.array_namespace(x=x)
        c = self.config
        flat = xp.reshape(x, (x.shape[0], -1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            res = sinkhorn(flat, a * ref, epsilon=eps, max_iter=c.sinkhorn_iterations,
                           relaxation="auto",
                           tol=c.sinkhorn_tol, check_finite=False, backend=c.backend)
        target = xp.reshape(res.barycentric_map(), tuple(x.shape))
        return target, int(res.n_iter), float(res.marginal_error)

    def _sliced_bridge(self, x, ref, ab: float, s2: float, kappa: float, step_key, key):
        from .ot import sliced_ot_map

        xp = aa.array_namespace(x=x)
        gen = step_key.advance(_STREAM_STRIDE - 1) if step_key is not None else key
        if isinstance(gen, np.random.Generator):
            z = _random.normal_like(gen, ref)
            dirs = gen
        else:
            z = _random.normal(gen, tuple(ref.shape), dtype=ref.dtype, like=ref)
            dirs = gen.advance(2**32)
        target = math.sqrt(ab) * ref + math.sqrt(s2) * z
        flat = xp.reshape(x, (x.shape[0], -1))
        moved = sliced_ot_map(flat, target, n_projections=self.config.sliced_projections,
                              rng=dirs, check_finite=False)
        return x + kappa * (xp.reshape(moved, tuple(x.shape)) - x)

    def _corrector(self, x, score, v, ab: float, s2: float, d_feat: int, gen):
        """One Fisher-Langevin update; ``v`` is the batch-mean second moment (1, ...) or None."""
        from .fisher import fisher_langevin_step

        c = self.config
        xp = aa.array_namespace(x=x)
        b = x.shape[0]
        norms = xp.sqrt(xp.sum(xp.reshape(score * score, (b, -1)), axis=1))
        mean_norm = max(float(xp.mean(norms)), 1e-30)
        h = min(2.0 * (c.corrector_snr * math.sqrt(d_feat) / mean_norm) ** 2, s2)
        if v is None:
            v = xp.mean(score * score, axis=0, keepdims=True) + 1e-4
        x, v_new = fisher_langevin_step(x, score, xp.broadcast_to(v, tuple(x.shape)), ab,
                                        step_size=h, momentum=c.momentum, rng=gen,
                                        backend=c.backend)
        return x, xp.mean(v_new, axis=0, keepdims=True)

    # -- self check -----------------------------------------------------------------------------
    def self_check(self, *, rng=0, n: int = 256) -> SelfCheckReport:
        """Check the solver's numerical pieces on synthetic data (NumPy, float64).

        * ``sinkhorn_convergence``: Sinkhorn between two Gaussian clouds (``n`` points, d = 2)
          at the epsilon of every bridged step reaches ``sinkhorn_tol`` within
          ``sinkhorn_iterations`` (value: the largest final marginal error).
        * ``fisher_stability``: 200 corrector updates (this config's snr and momentum) on a
          standard normal target (4096 points), started at variance 9, keep the samples
          finite with per-coordinate variance within 25 % of 1 (value: |variance - 1|; the
          unadjusted step and the preconditioner's own dependence on the score give a few
          per cent).
        * ``transport_symmetry``: the entropic OT cost from x to y equals the cost from y to x
          and the potentials swap, ``f_xy = g_yx`` up to a constant (value: the larger
          relative difference; threshold 1e-3).

        Returns
        -------
        SelfCheckReport
        """
        from .ot import ConvergenceWarning, sinkhorn

        n = _check_int(n, "n", 8)
        c = self.config
        key = _random.as_key(rng)
        if isinstance(key, np.random.Generator):
            key = _random.Key(int(key.integers(0, 2**63)))
        x = _random.normal(key, (n, 2), xp=np)
        y = 0.7 * _random.normal(key.advance(1), (n, 2), xp=np) + np.array([1.5, -0.5])
        checks = {}
        table = self.step_table()
        eps_values = sorted({float(e) for e, kap in zip(table[:-1, 3], table[:-1, 4])
                             if kap > 0.0}) or [c.ot_epsilon_scale * 2.0]
        worst, detail = 0.0, []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            for eps in eps_values:
                res = sinkhorn(x, y, epsilon=eps, max_iter=c.sinkhorn_iterations,
                               relaxation="auto",
                               tol=c.sinkhorn_tol, backend=c.backend)
                err = float(res.marginal_error) if res.converged or math.isfinite(
                    res.marginal_error) else math.inf
                worst = max(worst, err)
                detail.append(f"eps {eps:.3g}: {res.n_iter} it")
        checks["sinkhorn_convergence"] = {"passed": worst <= c.sinkhorn_tol, "value": worst,
                                          "threshold": c.sinkhorn_tol,
                                          "detail": ", ".join(detail)}
        z = 3.0 * _random.normal(key.advance(2), (4096, 2), xp=np)
        v = None
        for i in range(200):
            z, v = self._corrector(z, -z, v, 1.0, 1.0, 2, key.advance(10 + i))
        finite = bool(np.all(np.isfinite(z)))
        dev = float(np.max(np.abs(np.var(z, axis=0) - 1.0))) if finite else math.inf
        checks["fisher_stability"] = {"passed": finite and dev <= 0.25, "value": dev,
                                      "threshold": 0.25,
                                      "detail": f"snr {c.corrector_snr}, momentum {c.momentum}"}
        eps = max(eps_values)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            r_xy = sinkhorn(x, y, epsilon=eps, max_iter=1000, tol=1e-9, backend=c.backend)
            r_yx = sinkhorn(y, x, epsilon=eps, max_iter=1000, tol=1e-9, backend=c.backend)
        cost_rel = abs(r_xy.cost - r_yx.cost) / max(abs(r_xy.cost), 1e-30)
        df = np.asarray(r_xy.f) - np.asarray(r_yx.g)
        pot_rel = float(np.max(np.abs(df - df.mean()))) / max(float(np.ptp(r_xy.f)), 1e-30)
        value = max(cost_rel, pot_rel)
        checks["transport_symmetry"] = {
            "passed": value <= 1e-3, "value": value, "threshold": 1e-3,
            "detail": f"cost {r_xy.cost:.6g} vs {r_yx.cost:.6g}, epsilon {eps:.3g}"}
        return SelfCheckReport(passed=all(ch["passed"] for ch in checks.values()),
                               checks=checks)
