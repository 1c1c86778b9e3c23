r"""FastSB-OT: a multistep diffusion sampler with optional corrector and entropic-OT bridge.

Grid and notation (VP diffusion, t = 0 data, t = 1 noise): :math:`\alpha_k^2 = \bar\alpha(t_k)`,
:math:`\sigma_k^2 = 1 - \bar\alpha(t_k)`, :math:`\lambda_k = \log(\alpha_k/\sigma_k)`. The
``steps`` = n levels :math:`t_0 = 1 > t_1 > \dots > t_{n-1}` are equally spaced in
:math:`\lambda` (``grid="log_snr"``) from the level where the variance-exploding noise
:math:`\sigma_k/\alpha_k` equals ``sigma_max`` (capped at the schedule's own level at t = 1,
which stays the entry point) down to ``sigma_min``; then a final **denoising step** to
:math:`t_n = 0` (:math:`\bar\alpha = 1`) returns the denoiser at the last level.

One step :math:`k \to k+1` (:math:`h = \lambda_{k+1} - \lambda_k`):

1. **Model**: one evaluation at :math:`(x_k, t_k)`, converted to the denoiser
   :math:`D_k \approx E[x_0 \mid x_{t_k} = x_k]`.
2. **OT bridge** (only with a ``reference`` set :math:`y_1..y_M` and ``use_ot``, while
   :math:`\sigma_k \ge` ``ot_min_sigma``): entropic OT between the samples and the scaled
   reference :math:`\alpha_k y_j` with cost :math:`\lVert x_i - \alpha_k y_j\rVert^2` and
   :math:`\varepsilon_k = s_\varepsilon \cdot 2\sigma_k^2` (the forward-noise kernel: the
   static Schrödinger bridge); its barycentric map :math:`T` is a mass-balanced denoiser and
   :math:`D_k \leftarrow (1-\kappa_k) D_k + \kappa_k T/\alpha_k`,
   :math:`\kappa_k = \min(1, \text{ot\_strength}\cdot\sigma_k^2)`. Over ``memory_limit_ot_mb``
   the sliced OT map to the noised reference is used instead (before the model call).
3. **Unified corrector** (``unified_corrector``, UniC of Zhao et al. 2023, for k >= 1): the
   point :math:`x_k` is recomputed from :math:`x_{k-1}` with :math:`D_k` included in the
   multistep combination (one order higher than the predictor that produced it). It reuses the
   evaluation of step 1, so it costs no model evaluation.
4. **Predictor** (``predictor``): the exponential-integrator multistep update in data
   prediction,

   .. math:: x_{k+1} = \frac{\sigma_{k+1}}{\sigma_k} x_k - \alpha_{k+1}(e^{-h}-1)
             \Bigl(D_k + \sum_{i \ge 1} \rho_i \frac{D_{k-i} - D_k}{r_i}\Bigr),\qquad
             r_i = \frac{\lambda_{k-i} - \lambda_k}{h},

   of order 1 (``"ddim"``, with ``eta`` noise), 2 (``"dpmpp_2m"``, :math:`\rho_1 = 1/2`: DPM-
   Solver++(2M)) or 3 (``"dpmpp_3m"``, the :math:`\rho` of UniP-3 with
   :math:`B(h) = e^{-h} - 1`). The order drops to what the history allows at the start and to
   1 on the last steps (the final step is :math:`x_n = D_{n-1}`).
5. **Langevin corrector** (``corrector_steps`` m >= 1, not on the final step): m
   Fisher-preconditioned Langevin updates at :math:`t_{k+1}` (pSGLD with momentum, the
   preconditioner from the batch-mean second moment of the score), each one model evaluation,
   step size :math:`h = \min(2(\text{snr}\sqrt{D}/\overline{\lVert s\rVert})^2,
   \sigma_{k+1}^2)` computed on the device (no host synchronisation).

Model evaluations: ``steps + corrector_steps * (steps - 1)``.

Presets (``quality``; every field can be overridden). Each was chosen by measurement with
``tools/bench_fastsbot.py`` (16-D Gaussians with variances 0.01..2 on the cosine and linear VP
schedules against the exact probability-flow map, and the 8-component 2-D ring mixture against a
2000-step solution of the same ODE from the same noise):

%(table)s

The Langevin corrector is off in every preset: at equal model evaluations it made the law
worse (Gaussians: moment error 0.03-0.06 against 0.02, the Monte-Carlo floor of 4000 samples, at
12-50 evaluations; ring: MMD^2 1e-2 / 1.6e-3 at 12 / 20 evaluations against 4e-7 / -2e-4 for
the same preset without it, equal at the noise floor at 50): each update costs an evaluation
the predictor uses better. The OT bridge is on in every preset but acts only with a
``reference`` set: with an exact or well-trained score it has nothing to correct; it helps when
the model's mode weights are wrong and reference data are at hand
(tests/test_fastsbot.py::test_ot_bridge_corrects_mode_weights).

What each preset does and why (path error at its own budget; DPM++(2M) / UniPC with their
default capped log-SNR grids from ``arraygen.samplers`` at the same evaluations in brackets;
Gaussian = the 16-D cosine problem, ring = the 2-D mixture):

* ``draft`` (8 evaluations): second-order multistep **without** the unified corrector (with it the
  Gaussian error doubles, 0.019 -> 0.042, while the ring's improves 0.25 -> 0.20), grid sigma 20 -> 0.02. Gaussian 0.019 (0.024 / 0.058),
  ring 0.25 (0.69 / 0.71). **Limit:** tuned for standardised data; on the 16-D Gaussian scaled
  by 5 (standard deviations up to 7) it loses (0.086 against DPM++(2M)'s 0.027); no 8-step
  setting measured beat both baselines at every scale (sigma_max 80 ties DPM++(2M) within 5 %%).
* ``fast`` (12): third-order multistep + UniC, grid sigma 40 -> 0.03. Gaussian 0.012
  (0.036 / 0.042), ring 0.080 (0.28 / 0.19).
* ``balanced`` (20): third order + UniC, sigma 80 -> 0.01. Gaussian 0.0006 (0.017 / 0.012),
  ring 0.019 (0.081 / 0.029).
* ``ultra`` (30): third order + UniC, sigma 80 -> 0.005. Gaussian 0.0004 (0.0078 / 0.0037),
  ring 0.0050 (0.032 / 0.0105).
* ``extreme`` (50): third order + UniC, sigma 80 -> 0.002. Gaussian 0.0001 (0.0028 / 0.0008),
  ring 0.0009 (0.011 / 0.0029).

The gain over the two baselines comes from the third order with the free corrector and from
ending the grid at a ``sigma_min`` matched to the budget (the baselines stop at 0.002 whatever
the budget, spending evaluations where little changes). On held-out problems not used for the
tuning (``tools/bench_fastsbot.py --held-out``: another 32-D Gaussian, the Gaussian scaled by 5,
a 5-component mixture on the cosine schedule) every preset still wins at its budget except
``draft`` on the scaled Gaussian. **Limits:** a preset beats DPM++(2M) and UniPC only near its
own budget: with ``nfe=`` far above it, its ``sigma_min`` caps the accuracy (``draft`` at 50
evaluations: 0.0047 against 0.0028 / 0.0008), and far below it the third order is unstable
(``extreme`` at 8: 0.29 against 0.024); pick the preset whose step count matches the budget.

Random streams: with an int seed or :class:`~arraygen.random.Key` ``key``, the starting noise
is ``key``'s stream, and step ``k`` uses ``key.advance(1 + k * 1024 + j)``: ``j = 0`` the
predictor noise (``ddim`` with ``eta > 0``), ``j = 1..m`` the Langevin updates, ``j = 1023`` the
sliced-OT directions and reference noise. Same seed, same backend => identical samples.

Caching (``cache=`` a :class:`~arraygen.cache.PersistentKernelCache`): the per-step table
(t, alpha_bar, sigma^2, epsilon_t, kappa_t) is stored under ``"fastsbot_table"`` keyed by the
schedule, the grid and the bridge settings; it is also memoised on the solver.
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
from . import _dask, _dask_batches, _noise_offset
from . import _validation as V
from . import random as _random
from .schedules import TIMESTEP_KINDS, NoiseSchedule, timesteps, validate_grid

__all__ = ["PRESETS", "PREDICTORS", "FastSBOTConfig", "FastSBOTSolver", "SelfCheckReport"]

logger = logging.getLogger("arraygen")

_PRESET_FIELDS = ("steps", "predictor", "unified_corrector", "sigma_min", "sigma_max",
                  "corrector_steps", "use_ot", "sinkhorn_iterations", "sliced_projections")
#: Quality presets: the values the ``None`` fields of :class:`FastSBOTConfig` take.
PRESETS: dict[str, dict[str, Any]] = {
    name: dict(zip(_PRESET_FIELDS, values))
    for name, values in {
        "draft": (8, "dpmpp_2m", False, 0.02, 20.0, 0, True, 10, 16),
        "fast": (12, "dpmpp_3m", True, 0.03, 40.0, 0, True, 20, 32),
        "balanced": (20, "dpmpp_3m", True, 0.01, 80.0, 0, True, 50, 64),
        "ultra": (30, "dpmpp_3m", True, 0.005, 80.0, 0, True, 100, 128),
        "extreme": (50, "dpmpp_3m", True, 0.002, 80.0, 0, True, 200, 256),
    }.items()
}
#: Why each preset is what it is (printed in the module docstring table).
_PRESET_NOTES = {
    "draft": "",
    "fast": "",
    "balanced": "",
    "ultra": "",
    "extreme": "",
}
PREDICTORS = ("dpmpp_2m", "dpmpp_3m", "ddim")
_ORDER = {"ddim": 1, "dpmpp_2m": 2, "dpmpp_3m": 3}
_VP_PREDICTIONS = ("score", "epsilon", "x0", "v")
_STREAM_STRIDE = 1024


def _preset_table() -> str:
    head = ("============  =====  ==========  =====  =========  =========  ==========  ======\n"
            "preset        steps  predictor   UniC   sigma_min  sigma_max  Sinkhorn    sliced\n"
            "                                                              iterations  proj.\n"
            "============  =====  ==========  =====  =========  =========  ==========  ======")
    rows = [head]
    for name, p in PRESETS.items():
        rows.append(f"{'``' + name + '``':<12}  {p['steps']:<5}  {p['predictor']:<10}  "
                    f"{'on' if p['unified_corrector'] else 'off':<5}  {p['sigma_min']:<9g}  "
                    f"{p['sigma_max']:<9g}  {p['sinkhorn_iterations']:<10}  "
                    f"{p['sliced_projections']}")
    rows.append(head.splitlines()[0])
    return "\n".join(rows)


__doc__ = __doc__ % {"table": _preset_table()}


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
    predictor : {"dpmpp_2m", "dpmpp_3m", "ddim"}, optional
        Multistep order 2, 3, or 1 (DDIM).
    unified_corrector : bool, optional
        UniC correction with the next evaluation (no extra evaluations); not with
        ``corrector_steps > 0`` or a stochastic DDIM predictor.
    eta : float
        DDIM stochasticity (>= 0; ``"ddim"`` predictor only).
    sigma_min, sigma_max : float, optional
        Variance-exploding noise levels :math:`\\sigma/\\alpha` of the last level before the
        final denoising step and of the top of the grid (``0 < sigma_min < sigma_max``).
    grid : str
        Time-grid kind (:data:`arraygen.schedules.TIMESTEP_KINDS`; default ``"log_snr"``;
        ``"karras"`` also uses ``sigma_min`` / ``sigma_max``).
    corrector_steps : int, optional
        Fisher-Langevin corrector updates per step (>= 0).
    corrector_snr : float
        Corrector signal-to-noise ratio (> 0) setting its step size.
    momentum : float
        Momentum of the corrector's second-moment estimate, in [0, 1).
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
        The bridge acts while :math:`\\sigma_t \\ge` this (VP units), in [0, 1].
    sliced_projections : int, optional
        Directions of the sliced-OT fallback (>= 1).
    memory_limit_ot_mb : float
        Above this dense-equivalent size (N * M * itemsize, MiB) the bridge uses sliced OT (> 0).
    dynamic_thresholding : float, optional
        Percentile in (0, 1] of :func:`arraygen.samplers.dynamic_threshold` on the denoiser.
    profile : bool
        Record per-stage times, memory and the epsilon trace in ``solver.profile_``.
    backend : str, optional
        Kernel backend for the tiled OT kernels.

    Examples
    --------
    >>> from arraygen.fastsbot import FastSBOTConfig
    >>> cfg = FastSBOTConfig(quality="fast")
    >>> cfg.steps, cfg.predictor, cfg.model_evaluations
    (12, 'dpmpp_3m', 12)
    >>> FastSBOTConfig(quality="turbo")
    Traceback (most recent call last):
    ...
    ValueError: `quality` must be one of 'draft', 'fast', 'balanced', 'ultra', 'extreme'; got 'turbo'
    """

    quality: str = "balanced"
    steps: int | None = None
    nfe: int | None = None
    predictor: str | None = None
    unified_corrector: bool | None = None
    eta: float = 0.0
    sigma_min: float | None = None
    sigma_max: float | None = None
    grid: str = "log_snr"
    corrector_steps: int | None = None
    corrector_snr: float = 0.16
    momentum: float = 0.9
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
        V.check_choice(self.quality, "quality", tuple(PRESETS))
        if self.steps is not None and self.nfe is not None:
            raise ValueError(f"give `steps` or `nfe`, not both; got steps={self.steps!r}, "
                             f"nfe={self.nfe!r}")
        explicit_unic = self.unified_corrector
        for name, value in PRESETS[self.quality].items():
            if name == "steps" and self.nfe is not None:
                continue
            if getattr(self, name) is None:
                setattr(self, name, value)
        self.corrector_steps = V.check_int(self.corrector_steps, "corrector_steps", minimum=0)
        self.predictor = V.check_choice(self.predictor, "predictor", PREDICTORS)
        self.eta = V.check_scalar(self.eta, "eta", nonnegative=True)
        if self.eta > 0 and self.predictor != "ddim":
            raise ValueError(f"`eta` > 0 needs predictor='ddim'; got predictor="
                             f"{self.predictor!r}, eta={self.eta}")
        self.unified_corrector = _check_bool(self.unified_corrector, "unified_corrector")
        if self.unified_corrector and (self.corrector_steps > 0 or self.eta > 0):
            if explicit_unic:
                raise ValueError("`unified_corrector` cannot be combined with Langevin "
                                 "`corrector_steps` > 0 or a stochastic DDIM predictor (eta > 0)")
            self.unified_corrector = False
        if self.nfe is not None:
            self.nfe = V.check_int(self.nfe, "nfe", minimum=1)
            m = self.corrector_steps
            self.steps = max(1, (self.nfe + m) // (1 + m))
        self.steps = V.check_int(self.steps, "steps", minimum=1)
        self.sigma_min = V.check_scalar(self.sigma_min, "sigma_min", positive=True)
        self.sigma_max = V.check_scalar(self.sigma_max, "sigma_max", positive=True)
        if not self.sigma_min < self.sigma_max:
            raise ValueError(f"`sigma_min` must be below `sigma_max`; got sigma_min="
                             f"{self.sigma_min}, sigma_max={self.sigma_max}")
        self.grid = V.check_choice(self.grid, "grid", TIMESTEP_KINDS)
        self.corrector_snr = V.check_scalar(self.corrector_snr, "corrector_snr", positive=True)
        self.momentum = V.check_scalar(self.momentum, "momentum", low=0.0, high=1.0,
                                       high_inclusive=False)
        self.use_ot = _check_bool(self.use_ot, "use_ot")
        self.sinkhorn_iterations = V.check_int(self.sinkhorn_iterations, "sinkhorn_iterations",
                                               minimum=1)
        self.sinkhorn_tol = V.check_scalar(self.sinkhorn_tol, "sinkhorn_tol", positive=True)
        self.ot_epsilon_scale = V.check_scalar(self.ot_epsilon_scale, "ot_epsilon_scale",
                                               positive=True)
        self.ot_strength = V.check_scalar(self.ot_strength, "ot_strength", nonnegative=True)
        self.ot_min_sigma = V.check_scalar(self.ot_min_sigma, "ot_min_sigma", low=0.0, high=1.0)
        self.sliced_projections = V.check_int(self.sliced_projections, "sliced_projections",
                                              minimum=1)
        self.memory_limit_ot_mb = V.check_scalar(self.memory_limit_ot_mb, "memory_limit_ot_mb",
                                                 positive=True)
        if self.dynamic_thresholding is not None:
            self.dynamic_thresholding = V.check_scalar(
                self.dynamic_thresholding, "dynamic_thresholding", low=0.0, high=1.0,
                low_inclusive=False)
        self.profile = _check_bool(self.profile, "profile")
        if self.backend is not None and not isinstance(self.backend, str):
            raise TypeError(f"`backend` must be a backend name or None; got {self.backend!r}")

    @property
    def model_evaluations(self) -> int:
        """Model evaluations of one :meth:`FastSBOTSolver.sample` call."""
        return self.steps + self.corrector_steps * (self.steps - 1)


def _check_bool(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a bool; got {value!r}")
    return bool(value)


# --------------------------------------------------------------------------------------------
# the multistep update coefficients (host, float64, once per grid)
# --------------------------------------------------------------------------------------------

def _unip_weights(h: float, rks: list[float], corrector: bool) -> list[float]:
    """UniPC-bh2 weights (Zhao et al. 2023, as diffusers' UniPCMultistepScheduler computes them).

    ``rks`` are :math:`r_i` of the earlier points; the predictor returns one weight per
    ``rks`` entry, the corrector one more (for the new evaluation, :math:`r = 1`).
    """
    p = len(rks) + 1
    if not corrector and p == 2:
        return [0.5]
    if corrector and p == 1:
        return [0.5]
    hh = -h
    h_phi_1 = math.expm1(hh)
    b_h = h_phi_1
    h_phi_k = h_phi_1 / hh - 1.0
    fact = 1.0
    b = []
    for i in range(1, p + 1):
        b.append(h_phi_k * fact / b_h)
        fact *= i + 1
        h_phi_k = h_phi_k / hh - 1.0 / fact
    r_full = np.array(list(rks) + [1.0])
    mat = np.stack([r_full ** (i - 1) for i in range(1, p + 1)])
    if corrector:
        return [float(v) for v in np.linalg.solve(mat, np.array(b))]
    return [float(v) for v in np.linalg.solve(mat[:-1, :-1], np.array(b[:-1]))]


def _update(lam, alpha, sigma, s0: int, t: int, order: int, d_new: bool):
    """Coefficients of ``x_t = cx x_{s0} + sum_i c_i D_{s0 - i} (+ c_new D_t)``.

    Returns ``(cx, {i: c_i}, c_new)``; ``d_new`` asks for the corrector form.
    """
    if sigma[t] == 0.0:                                   # final denoising step: x = D
        return 0.0, {0: 1.0}, 0.0
    h = float(lam[t] - lam[s0])
    e = math.expm1(-h)                                    # e^{-h} - 1 = B(h) (bh2)
    cx = float(sigma[t] / sigma[s0])
    coef = {0: -float(alpha[t]) * e}
    n_hist = order - 1 if not d_new else order - 1
    rks = [float((lam[s0 - i] - lam[s0]) / h) for i in range(1, n_hist + 1)]
    rho = _unip_weights(h, rks, d_new) if (rks or d_new) else []
    scale = -float(alpha[t]) * e
    for i, r in enumerate(rks, start=1):
        w = scale * rho[i - 1] / r
        coef[i] = coef.get(i, 0.0) + w
        coef[0] -= w
    c_new = 0.0
    if d_new:
        c_new = scale * rho[-1]
        coef[0] -= c_new
    return cx, coef, c_new


def _plan(lam, alpha, sigma, ab, order: int, unified: bool, eta: float):
    """Per-step update table: ``pred[k] = (cx, {i: c}, c_noise)``, ``corr[k]`` or None."""
    n = lam.shape[0] - 1
    pred, corr, orders = [], [], []
    for k in range(n):
        p = max(1, min(order, k + 1, n - k))
        orders.append(p)
        if eta > 0.0 and sigma[k + 1] > 0.0:
            c = float(eta * math.sqrt((sigma[k + 1] ** 2 / sigma[k] ** 2)
                                      * (1.0 - ab[k] / ab[k + 1])))
            keep = math.sqrt(max(float(sigma[k + 1]) ** 2 - c * c, 0.0))
            cx = float(keep / sigma[k])
            pred.append((cx, {0: float(alpha[k + 1] - keep * alpha[k] / sigma[k])}, c))
        else:
            cx, coef, _ = _update(lam, alpha, sigma, k, k + 1, p, False)
            pred.append((cx, coef, 0.0))
        if unified and k >= 1:
            corr.append(_update(lam, alpha, sigma, k - 1, k, orders[k - 1], True))
        else:
            corr.append(None)
    return pred, corr, orders


def _combine(xp, x, cx: float, coef: dict, hist: list, extra=None):
    """``cx x + sum_i coef[i] hist[-1 - i] (+ extra)`` with Python-float coefficients."""
    out = cx * x if cx != 0.0 else None
    for i, c in coef.items():
        if c == 0.0:
            continue
        term = c * hist[-1 - i]
        out = term if out is None else out + term
    if extra is not None:
        out = extra if out is None else out + extra
    return out if out is not None else xp.zeros_like(x)


def _to_x0(out, x, a: float, s: float, prediction: str):
    """A model output of kind ``prediction`` at (alpha, sigma) as the denoiser x0."""
    if prediction == "x0":
        return out
    if prediction == "epsilon":
        return (x - s * out) / a
    if prediction == "score":
        return (x + (s * s) * out) / a
    return a * x - s * out                               # v


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
    """Multistep sampler with optional correctors and OT bridge (module docstring).

    Parameters
    ----------
    score_model : callable
        ``score_model(x, t)`` with ``x`` of shape (B, ...) and ``t`` a Python float, returning
        an array like ``x`` of kind ``prediction``. NumPy, torch and CuPy models work.
    schedule : NoiseSchedule
    config : FastSBOTConfig, optional
        Default ``FastSBOTConfig()`` ("balanced").
    reference : array, shape (M, ...), optional
        Data samples for the OT bridge (finite; same trailing shape as the samples).
    prediction : {"score", "epsilon", "x0", "v"}
        What the model returns (default ``"score"``).
    cache : PersistentKernelCache, optional
        Where to keep the per-step table across processes.

    Attributes
    ----------
    profile_ : dict
        After :meth:`sample` with ``config.profile``: ``times`` (seconds per stage: model,
        bridge, predictor, corrector, total), ``memory``, ``epsilon`` / ``kappa`` /
        ``ot_method`` / ``sinkhorn_iterations`` / ``sinkhorn_error`` per step, ``orders``,
        ``nfe``, ``cache_hit``, ``timesteps``.
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
    >>> x.shape, solver.nfe_
    ((500, 2), 12)
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
        V.check_choice(prediction, "prediction", _VP_PREDICTIONS)
        if cache is not None and not callable(getattr(cache, "get", None)):
            raise TypeError(f"`cache` must be a PersistentKernelCache or None; got "
                            f"{type(cache).__name__}")
        self.model = score_model
        self.schedule = schedule
        self.config = config
        self.prediction = prediction
        self.cache = cache
        self.reference = None
        if reference is not None:
            rxp, (ref,) = V.common_namespace(reference=reference)
            if ref.ndim < 2 or ref.shape[0] < 2:
                raise ValueError(f"`reference` must have shape (M, ...) with M >= 2 and a "
                                 f"feature axis; got shape {tuple(ref.shape)}")
            flat, _ = V.as_points(rxp, rxp.reshape(ref, (ref.shape[0], -1)), "reference",
                                  min_points=2)
            self.reference = ref if ref.dtype == flat.dtype else rxp.astype(ref, flat.dtype)
        self.profile_: dict = {}
        self.nfe_ = 0
        self._table = None
        self._table_hit = False
        self._plan_cache = None

    # -- the per-step table -------------------------------------------------------------------
    def _grid(self) -> np.ndarray:
        c = self.config
        sch = self.schedule
        la1 = float(sch._log_alpha_bar(np, np.float64(1.0)))
        lam1 = la1 - math.log(-math.expm1(la1))          # log-SNR at t = 1
        top = -2.0 * math.log(c.sigma_min)
        if c.steps == 1:
            return np.array([1.0, 0.0])
        if c.grid == "log_snr":
            if not top > lam1:
                raise ValueError(f"`sigma_min` = {c.sigma_min} is above the schedule's noise "
                                 f"level at t = 1 (sigma = {math.exp(-lam1 / 2):.4g})")
            start = max(lam1, -2.0 * math.log(c.sigma_max))
            lam = np.linspace(min(start, top - 1e-9), top, c.steps)
            la = -np.logaddexp(0.0, -lam)
            grid = np.append(sch.t_from_log_alpha_bar(la), 0.0)
            grid[0] = 1.0
            return validate_grid(grid, "timesteps")
        if c.grid == "karras":
            s_hi = min(math.exp(-lam1 / 2.0), c.sigma_max)
            return timesteps(c.steps, "karras", sch, sigma_min=c.sigma_min, sigma_max=s_hi)
        return timesteps(c.steps, c.grid, sch)

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
                          "sigma_min": c.sigma_min, "sigma_max": c.sigma_max,
                          "eps_scale": c.ot_epsilon_scale, "strength": c.ot_strength,
                          "min_sigma": c.ot_min_sigma}
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

    def _plan(self):
        if self._plan_cache is None:
            table = self.step_table()
            ab = table[:, 1]
            alpha = np.sqrt(ab)
            sigma = np.sqrt(table[:, 2])
            with np.errstate(divide="ignore"):
                lam = np.log(alpha) - np.log(sigma)
            c = self.config
            self._plan_cache = _plan(lam, alpha, sigma, ab, _ORDER[c.predictor],
                                     c.unified_corrector, c.eta)
        return self._plan_cache

    # -- sampling -----------------------------------------------------------------------------
    def _namespace(self, xp, device, noise):
        if noise is not None:
            return aa.array_namespace(noise=noise), aa.device(noise)
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

    def sample(self, shape=None, *, rng=None, noise=None, xp=None, device=None, dtype=None,
               progress=False, callback=None):
        """Draw samples: start from N(0, I) at t = 1 and run the configured steps to t = 0.

        Parameters
        ----------
        shape : tuple of int
            (B, ...) sample shape (integers; ``2.5`` is an error). Optional with ``noise``.
        rng : int, Key or numpy.random.Generator, optional
            Noise source (module docstring: stream layout).
        noise : array, shape (B, ...), optional
            The starting noise at t = 1; the samples take its namespace, device and dtype. A
            dask array gives dask samples: each batch chunk runs this method (one task), its
            noise at the chunk's offset of the stream, so the samples equal the in-memory
            call's unless a step couples the batch (the OT bridge to a ``reference``, the
            Langevin corrector), where each chunk is its own batch.
        xp : module, optional
            Namespace of the samples (numpy, torch, cupy; ``dask.array``: batch chunks of
            NumPy samples, as with dask ``noise``). Default: the ``reference``'s
            namespace, torch for a torch ``nn.Module`` model, else NumPy; if the model then
            returns arrays of another library (a torch function called on the NumPy start),
            the samples move to that library and device at the first step.
        device : optional
            Device in that namespace.
        dtype : optional
            Floating dtype (default: the namespace's default float, or the reference's).
        progress : bool
            tqdm progress bar.
        callback : callable, optional
            ``callback(info)`` after every step with ``step, t, t_next, x, denoised, nfe``;
            a returned array replaces ``x``.

        Returns
        -------
        array of ``shape`` in that namespace, device and dtype.
        """
        c = self.config
        if callback is not None and not callable(callback):
            raise TypeError(f"`callback` must be callable or None; got {type(callback).__name__}")
        if _dask.is_dask_array(noise) or _dask_batches.is_dask_namespace(xp):
            return _dask_batches.fastsbot_sample(self, shape, noise=noise, rng=rng, dtype=dtype,
                                                 progress=progress, callback=callback)
        if noise is not None:
            nxp, (noise,) = V.common_namespace(noise=noise)
            if shape is not None and V.check_shape(shape, "shape") != tuple(noise.shape):
                raise ValueError(f"`shape` {tuple(shape)} differs from `noise`'s shape "
                                 f"{tuple(noise.shape)}")
            shape = tuple(noise.shape)
            if len(shape) < 2:
                raise ValueError(f"`noise` must have shape (B, ...) with a feature axis; got "
                                 f"{shape}")
            if not nxp.isdtype(noise.dtype, "real floating"):
                noise = nxp.astype(noise, aa.result_dtype(nxp, noise))
            V.require_finite(nxp, noise, "noise")
        elif shape is None:
            raise TypeError("give `shape` (B, ...) or the starting `noise`")
        shape = V.check_shape(shape, "shape")
        if len(shape) < 2:
            raise ValueError(f"`shape` must be (B, ...) with a feature axis; got {shape}")
        ns, device = self._namespace(xp, device, noise)
        if dtype is None:
            if noise is not None:
                dtype = noise.dtype
            else:
                same = self.reference is not None and aa.namespace_for(ns).__name__ == \
                    aa.array_namespace(reference=self.reference).__name__
                dtype = self.reference.dtype if same else aa.result_dtype(ns)
        elif isinstance(dtype, str):
            dtype = getattr(ns, dtype, None)
            if dtype is None:
                raise ValueError(f"`dtype` must be a floating dtype name of {ns.__name__}")
        if not ns.isdtype(dtype, "real floating"):
            raise ValueError(f"`dtype` must be a real floating dtype; got {dtype}")
        out_dtype, work = dtype, aa.compute_dtype(ns, dtype)
        ref = None
        if self.reference is not None and c.use_ot:
            ref = self._reference_for(ns, device, work, shape)
        key = _random.as_key(rng)
        if noise is not None:
            x = noise if noise.dtype == work else ns.astype(noise, work)
        else:
            x = self._start_noise(key, shape, ns, device, work)
        return self._run(x, ns, ref, key, out_dtype, progress, callback)

    def _run(self, x, ns, ref, key, out_dtype, progress, callback):
        c = self.config
        table = self.step_table()
        pred, corr, orders = self._plan()
        n_steps = table.shape[0] - 1
        times = {"model": 0.0, "bridge": 0.0, "predictor": 0.0, "corrector": 0.0}
        trace = {"epsilon": [], "kappa": [], "ot_method": [], "sinkhorn_iterations": [],
                 "sinkhorn_error": []}
        not_converged: list[tuple[int, float]] = []
        v_state = None
        nfe = 0
        shape = tuple(x.shape)
        d_feat = math.prod(shape[1:])
        prof = c.profile
        hist: list = []
        x_prev = None
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
            a_c, s_c = math.sqrt(ab_c), math.sqrt(s2_c)
            step_key = None if isinstance(key, np.random.Generator) else key.advance(
                1 + k * _STREAM_STRIDE)
            bridge = ref is not None and kap_c > 0.0
            sliced = bridge and self._use_sliced(shape[0], ref.shape[0], x.dtype, ns)
            trace["epsilon"].append(eps_c if bridge and not sliced else None)
            trace["kappa"].append(kap_c if bridge else 0.0)
            trace["ot_method"].append(("sliced" if sliced else "sinkhorn") if bridge else None)
            n_it = err = None
            t0 = time.perf_counter()
            if sliced:
                x = self._sliced_bridge(x, ref, ab_c, s2_c, kap_c, step_key, key)
                t0 = clock("bridge", t0)
            out = self._model_call(x, t_c, k)
            nfe += 1
            if k == 0 and aa._library_name(out) != aa._library_name(x):
                x, ns, ref = self._adopt(out, x, ref)
                out_dtype = x.dtype
                out = out if out.dtype == x.dtype else ns.astype(out, x.dtype)
            t0 = clock("model", t0)
            den = _to_x0(out, x, a_c, s_c, self.prediction)
            if c.dynamic_thresholding is not None:
                from .samplers import dynamic_threshold

                den = dynamic_threshold(den, c.dynamic_thresholding)
            if bridge and not sliced:
                target, n_it, err = self._sinkhorn_target(x, ref, a_c, eps_c)
                if err is not None and not err <= c.sinkhorn_tol:
                    not_converged.append((k, err))
                den = (1.0 - kap_c) * den + (kap_c / a_c) * target
                t0 = clock("bridge", t0)
            trace["sinkhorn_iterations"].append(n_it)
            trace["sinkhorn_error"].append(err)
            if corr[k] is not None and x_prev is not None:
                cx, coef, c_new = corr[k]
                x = _combine(ns, x_prev, cx, coef, hist, c_new * den)
            hist.append(den)
            if len(hist) > 3:
                hist.pop(0)
            x_prev = x
            cx, coef, c_noise = pred[k]
            z = None
            if c_noise > 0.0:
                z = self._normal(step_key if step_key is not None else key, x)
                z = c_noise * z
            x = _combine(ns, x, cx, coef, hist, z)
            t0 = clock("predictor", t0)
            if t_n > 0.0 and c.corrector_steps > 0:
                ab_n = float(table[k + 1, 1])
                s2_n = float(table[k + 1, 2])
                a_n, s_n = math.sqrt(ab_n), math.sqrt(s2_n)
                for j in range(c.corrector_steps):
                    out = self._model_call(x, t_n, k)
                    nfe += 1
                    score = (a_n * _to_x0(out, x, a_n, s_n, self.prediction) - x) / s2_n
                    gen = step_key.advance(1 + j) if step_key is not None else key
                    x, v_state = self._langevin(ns, x, score, v_state, ab_n, s2_n, d_feat, gen)
                t0 = clock("corrector", t0)
            if callback is not None:
                replaced = callback({"step": k, "t": t_c, "t_next": t_n, "x": x,
                                     "denoised": den, "nfe": nfe})
                if replaced is not None:
                    V.check_model_output(ns, replaced, x, model="callback", step=k, t=t_c,
                                         check_finite=False)
                    x = replaced if replaced.dtype == x.dtype else ns.astype(replaced, x.dtype)
        self.nfe_ = nfe
        if not aa.all_finite(ns, x):
            raise ValueError(f"`score_model` drove the samples to non-finite values within "
                             f"{n_steps} steps; check its output and `prediction` "
                             f"({self.prediction!r})")
        if not_converged:
            from .ot import ConvergenceWarning

            worst = max(e for _, e in not_converged)
            warnings.warn(f"FastSB-OT: the bridge's Sinkhorn did not reach sinkhorn_tol = "
                          f"{c.sinkhorn_tol:g} within {c.sinkhorn_iterations} iterations at "
                          f"{len(not_converged)} of {n_steps} steps (largest marginal error "
                          f"{worst:.3g}); the bridge used the last potentials. Raise "
                          f"sinkhorn_iterations or ot_epsilon_scale.", ConvergenceWarning,
                          stacklevel=3)
        if prof:
            _synchronize(x)
            times["total"] = time.perf_counter() - t_start
            self.profile_ = {"times": times, "memory": _peak_memory_mb(x), "nfe": nfe,
                             "cache_hit": self._table_hit, "timesteps": table[:, 0].tolist(),
                             "orders": list(orders), **trace}
        logger.debug("FastSB-OT: %d steps, %d model evaluations", n_steps, nfe)
        return x if x.dtype == out_dtype else ns.astype(x, out_dtype)

    # -- pieces ---------------------------------------------------------------------------------
    def _model_call(self, x, t: float, step: int):
        out = self.model(x, t)
        if not aa.is_array(out):
            raise TypeError(f"`score_model` must return an array like its input; got "
                            f"{type(out).__name__} at step {step} (t = {t:.6g})")
        if tuple(out.shape) != tuple(x.shape):
            raise ValueError(f"`score_model` returned shape {tuple(out.shape)} for input "
                             f"shape {tuple(x.shape)} at step {step} (t = {t:.6g})")
        if "complex" in str(out.dtype):
            raise TypeError(f"`score_model` returned complex values (dtype {out.dtype})")
        if aa._library_name(out) != aa._library_name(x):
            return out
        if aa.device(out) != aa.device(x):
            raise ValueError(f"`score_model` returned an array on {aa.device(out)} for input on "
                             f"{aa.device(x)}")
        xp = aa.array_namespace(x=x)
        return out if out.dtype == x.dtype else xp.astype(out, x.dtype)

    def _adopt(self, out, x, ref):
        """Move the NumPy start to the model output's library and device (first step only)."""
        lib_out, lib_x = aa._library_name(out), aa._library_name(x)
        if lib_x != "numpy" or ref is not None:
            raise TypeError(f"`score_model` returned a {lib_out} array for a {lib_x} input; "
                            f"return the input's array type, or pass `xp=` or `noise=` in the "
                            f"model's library")
        ons = aa.array_namespace(out=out)
        dt = out.dtype if ons.isdtype(out.dtype, "real floating") else aa.result_dtype(ons)
        x_new = ons.asarray(np.asarray(x), dtype=aa.compute_dtype(ons, dt),
                            device=aa.device(out))
        logger.debug("FastSB-OT: samples follow the model output to %s", lib_out)
        return x_new, ons, ref

    def _start_noise(self, gen, shape, ns, device, dtype):
        if isinstance(gen, np.random.Generator):
            np_dtype = np.float32 if dtype == ns.float32 else np.float64
            host = gen.standard_normal(shape).astype(np_dtype)
            if aa.is_torch_namespace(ns):
                import torch

                return torch.from_numpy(host).to(device)
            return ns.asarray(host, device=device)
        return _random.normal(gen, shape, dtype=dtype, xp=ns, device=device)

    def _normal(self, gen, like):
        """Per-sample noise shaped like the batch ``like`` (at a Dask chunk's offset)."""
        if isinstance(gen, np.random.Generator):
            return _random.normal_like(gen, like)
        return _random.normal(gen, tuple(like.shape), offset=_noise_offset.current(),
                              dtype=like.dtype, like=like)

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
        """Barycentric targets of x (B, ...) toward alpha * ref: (targets like x, n_iter, error).

        Calls the public :func:`arraygen.ot.sinkhorn` once per bridged step (with
        ``check_finite=False``; the inputs are already trusted). With ``profile`` off the
        iteration count and error are left on the device (no host synchronisation).
        """
        from .ot import ConvergenceWarning, sinkhorn

        xp = aa.array_namespace(x=x)
        c = self.config
        flat = xp.reshape(x, (x.shape[0], -1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            res = sinkhorn(flat, a * ref, epsilon=eps, max_iter=c.sinkhorn_iterations,
                           relaxation="auto", tol=c.sinkhorn_tol, check_finite=False,
                           backend=c.backend)
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

    def _langevin(self, xp, x, score, v, ab: float, s2: float, d_feat: int, gen):
        """One Fisher-preconditioned Langevin update; ``v`` the batch-mean second moment or None.

        :math:`v' = m v + (1-m)(\\overline{s^2} + \\epsilon)`, :math:`P = v'^{-1/2} /
        \\mathrm{mean}(v'^{-1/2})` (shared by the batch), :math:`x' = x + hPs + \\sqrt{2hP} z`,
        with the step size on the device (no host synchronisation).
        """
        c = self.config
        b = x.shape[0]
        sq = score * score
        norms = xp.sqrt(xp.sum(xp.reshape(sq, (b, -1)), axis=1))
        mean_norm = xp.maximum(xp.mean(norms), xp.asarray(1e-30, dtype=x.dtype,
                                                          device=aa.device(x)))
        h = xp.minimum(2.0 * (c.corrector_snr * math.sqrt(d_feat) / mean_norm) ** 2,
                       xp.asarray(s2, dtype=x.dtype, device=aa.device(x)))
        m2 = xp.mean(sq, axis=0, keepdims=True)
        damp = 1e-4 + 1e-3 * (1.0 - ab)
        v_new = m2 + damp if v is None else c.momentum * v + (1.0 - c.momentum) * (m2 + damp)
        p = 1.0 / xp.sqrt(v_new)
        p = p / xp.mean(p)
        z = self._normal(gen, x)
        return x + h * p * score + xp.sqrt(2.0 * h * p) * z, v_new

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

        n = V.check_int(n, "n", minimum=8)
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
            z, v = self._langevin(np, z, -z, v, 1.0, 1.0, 2, key.advance(10 + i))
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
