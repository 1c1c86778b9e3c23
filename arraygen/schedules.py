"""Noise schedules: continuous diffusion (alpha_bar(t), t in [0, 1], t=0 data) and bit-flip.

The bit-flip schedule drives the discrete diffusion of :mod:`arraygen.discrete`: at step ``t``
every bit is flipped independently with probability ``beta_t``, so after ``t`` steps it has been
flipped (an odd number of times) with the marginal probability
``pbar_t = (1 - prod_{s<=t} (1 - 2 beta_s)) / 2``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from . import _array_api as aa
from . import _validation as _v

__all__ = [
    "FLOW_TIMESTEP_KINDS",
    "SCHEDULE_KINDS",
    "SIGMA_MAX",
    "TIMESTEP_KINDS",
    "BitflipSchedule",
    "NoiseSchedule",
    "bitflip_schedule",
    "flow_timesteps",
    "make_schedule",
    "timesteps",
    "validate_grid",
]


class BitflipSchedule(NamedTuple):
    """Per-step flip probabilities and marginals of a bit-flip forward process (float64, host).

    Index ``t - 1`` holds step ``t`` for ``t = 1..T``; the process starts at ``pbar_0 = 0``.
    Unpacks as ``betas, pbar = schedule``.

    Attributes
    ----------
    betas : numpy.ndarray, shape (T,)
        ``beta_t``: probability that step ``t`` flips a bit, in (0, 1/2].
    pbar : numpy.ndarray, shape (T,)
        ``pbar_t = (1 - prod_{s<=t}(1 - 2 beta_s)) / 2``: probability that ``x_t`` differs
        from ``x_0`` in a given bit; increasing, ``pbar_T = p_max``.
    """

    betas: np.ndarray
    pbar: np.ndarray

    @property
    def T(self) -> int:
        """Number of steps."""
        return int(self.betas.shape[0])

    @property
    def couplings(self) -> np.ndarray:
        """``J_t = 0.5 ln((1 - beta_t) / beta_t) = atanh(1 - 2 beta_t)``, shape (T,).

        ``log q(s_t | s_{t-1}) = const + J_t s_t . s_{t-1}`` for spins in {-1, +1}; ``J_t = 0``
        where ``beta_t = 1/2`` (the step forgets its input).
        """
        return np.arctanh(1.0 - 2.0 * self.betas)

    def marginal(self, t: int) -> float:
        """``pbar_t`` for ``t`` in ``0..T`` (``pbar_0 = 0``)."""
        t = _v.check_int(t, "t", minimum=0, maximum=self.T)
        return 0.0 if t == 0 else float(self.pbar[t - 1])


_BITFLIP_KINDS = ("cosine", "linear")


def bitflip_schedule(T: int, kind: str = "cosine", p_max: float = 0.5) -> BitflipSchedule:
    """Bit-flip forward schedule with a prescribed marginal flip probability.

    The marginal is set directly, ``u = t / T``:

    * ``"cosine"``: ``pbar_t = p_max (1 - cos(pi u)) / 2`` (slow start and end),
    * ``"linear"``: ``pbar_t = p_max u``,

    and the per-step probabilities follow from the correlation ``r_t = 1 - 2 pbar_t =
    prod_{s<=t}(1 - 2 beta_s)``: ``beta_t = (1 - r_t / r_{t-1}) / 2``. With the default
    ``p_max = 0.5`` the last marginal is exactly 1/2 (``|pbar_T - 1/2| = 0`` up to one
    rounding, well within 1e-12), ``beta_T = 1/2`` and ``J_T = 0``, so ``x_T`` is
    Bernoulli(1/2) noise independent of the data, which is where the reverse chain starts.
    ``p_max < 1/2`` leaves ``x_T`` correlated with ``x_0`` (``|pbar_T - 1/2| = 1/2 - p_max``).

    Parameters
    ----------
    T : int
        Number of steps, ``T >= 1``.
    kind : {"cosine", "linear"}
    p_max : float
        Marginal flip probability at ``t = T``, in (0, 0.5].

    Returns
    -------
    BitflipSchedule
        ``betas`` (T,) and ``pbar`` (T,), float64.
    """
    T = _v.check_int(T, "T", minimum=1)
    _v.check_choice(kind, "kind", _BITFLIP_KINDS)
    p_max = _v.check_scalar(p_max, "p_max", low=0.0, high=0.5, low_inclusive=False)
    u = np.arange(T + 1, dtype=np.float64) / T
    if kind == "cosine":
        pbar = p_max * (1.0 - np.cos(np.pi * u)) / 2.0
    else:
        pbar = p_max * u
    pbar[0], pbar[T] = 0.0, p_max
    r = 1.0 - 2.0 * pbar
    betas = 0.5 * (1.0 - r[1:] / r[:-1])
    betas = np.clip(betas, np.finfo(np.float64).tiny, 0.5)
    return BitflipSchedule(betas=betas, pbar=pbar[1:].copy())


# --------------------------------------------------------------------------------------------
# continuous noise schedules (DESIGN 5): t in [0, 1], t = 0 data, t = 1 noise, alpha_bar(0) = 1
# --------------------------------------------------------------------------------------------

SCHEDULE_KINDS = ("linear", "cosine", "quadratic", "sigmoid", "karras")
TIMESTEP_KINDS = ("linear", "quadratic", "cosine", "uniform_alpha_bar", "log_snr", "karras",
                  "leading", "trailing", "linspace", "sigmas")
FLOW_TIMESTEP_KINDS = ("linear", "quadratic")

_SCHEDULE_DEFAULTS = {
    "linear": {"beta_start": 1e-4, "beta_end": 0.02},
    "quadratic": {"beta_start": 1e-4, "beta_end": 0.02},
    "sigmoid": {"beta_start": 1e-4, "beta_end": 0.02, "sigmoid_start": -6.0, "sigmoid_end": 6.0},
    "cosine": {"s": 0.008, "alpha_bar_min": 1e-8},
    "karras": {"sigma_min": 0.002, "sigma_max": 80.0, "rho": 7.0},
}


def _softplus(xp, z):
    return xp.logaddexp(z, xp.zeros_like(z))


def _linear_discrete_log_alpha_bar(xp, t, b0: float, b1: float, n: float):
    r"""``log alpha_bar`` of DDPM's discrete linear betas, continuous in t.

    The discrete table is :math:`\log\bar\alpha_i = \sum_{j \le i} \log(1 - \beta_j)` with
    ``beta_j = b0 + (b1 - b0) j / (N - 1)`` (``numpy.linspace(b0, b1, N)``, diffusers'
    ``beta_schedule="linear"``) and step ``i`` at ``t = (i + 1) / N``. Each term is the midpoint
    rule of :math:`\int \log(1 - \beta(u))\,du` over ``[j - 1/2, j + 1/2]``, so

    .. math:: \log\bar\alpha(t) = \int_{-1/2}^{tN - 1/2} \log(1 - \beta(u))\,du

    equals the table at ``t = (i + 1) / N`` to about 1e-8 (the midpoint rule's
    :math:`\beta'^2/24` per step) and is smooth in between. With
    :math:`G(\beta) = -(1-\beta)\log(1-\beta) - \beta` (:math:`G' = \log(1-\beta)`) the
    integral is :math:`(G(\beta(tN - 1/2)) - G(\beta(-1/2))) / \beta'`. Clamped at 0 (a
    ``beta_start`` of 0 would make the first half step slightly negative).
    """
    c = (b1 - b0) / (n - 1.0) if n > 1 else 0.0
    u = t * n
    lo = b0 - 0.5 * c
    if c == 0.0:
        la = u * math.log1p(-lo)
    else:
        # u * (mean of log w over w in [w0, w0 (1 + d)]), w = 1 - beta, d = -c u / w0, written
        # without cancellation: mean = log w0 + (1 + d) log1p(d) / d - 1
        d = (-c / (1.0 - lo)) * u
        safe = xp.where(d == 0.0, xp.full_like(d, -1e-300), d)
        f = xp.where(d == 0.0, xp.zeros_like(d), (1.0 + d) * xp.log1p(safe) / safe - 1.0)
        small = xp.abs(d) < 1e-4  # series d/2 - d^2/6 + d^3/12 where the division loses digits
        f = xp.where(small, d * (0.5 - d * (1.0 / 6.0 - d / 12.0)), f)
        la = u * (math.log1p(-lo) + f)
    return xp.minimum(la, xp.zeros_like(la))


def _linear_discrete_beta(xp, t, b0: float, b1: float, n: float):
    """``-d log alpha_bar / dt`` of :func:`_linear_discrete_log_alpha_bar` (>= 0)."""
    c = (b1 - b0) / (n - 1.0) if n > 1 else 0.0
    beta = (b0 - 0.5 * c) + c * (t * n)
    out = -n * xp.log1p(-beta)
    return xp.maximum(out, xp.zeros_like(out))


class NoiseSchedule:
    r"""A continuous variance-preserving noise schedule :math:`\bar\alpha(t)`, t in [0, 1].

    ``x_t = sqrt(alpha_bar(t)) x_0 + sqrt(1 - alpha_bar(t)) z`` with ``t = 0`` the data
    (``alpha_bar(0) = 1``) and ``t = 1`` the noise end. Build it with :func:`make_schedule`.

    Every method takes ``t`` as a Python scalar (returns a Python float) or an array of any
    namespace (returns an array of that namespace, on its device, in ``t``'s floating dtype,
    float64 for integer ``t``); the arithmetic always runs in float64 (``log alpha_bar`` is
    evaluated in closed form, ``1 - alpha_bar`` as ``-expm1(log alpha_bar)``).

    Attributes
    ----------
    kind : str
        One of :data:`SCHEDULE_KINDS`.
    num_timesteps : int
        ``N`` of the discrete schedule the continuous one is scaled from (beta kinds).
    params : dict
        The schedule's parameters with defaults filled in.
    """

    def __init__(self, kind: str, num_timesteps: int, params: dict):
        self.kind = kind
        self.num_timesteps = int(num_timesteps)
        self.params = dict(params)
        self._table_lam = None

    def __repr__(self) -> str:
        if self.kind == "table":
            return (f"NoiseSchedule('table', num_timesteps={self.num_timesteps}, "
                    f"alpha_bar[-1]={math.exp(self._log_alpha_bar(np, np.float64(1.0))):.4g})")
        extra = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"NoiseSchedule({self.kind!r}, num_timesteps={self.num_timesteps}, {extra})"

    def _cache_key(self):
        """Hashable identity of the schedule's values (for caching grids)."""
        if self.kind == "table":
            return ("table", self.num_timesteps, hash(self._table_lam.tobytes()))
        return (self.kind, self.num_timesteps, tuple(sorted(self.params.items())))

    # -- tabulated schedules (a trained model's discrete alphas_cumprod) ------------------------
    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod) -> "NoiseSchedule":
        r"""A continuous schedule through a discrete table :math:`\bar\alpha_0 > ... >
        \bar\alpha_{N-1}` (a trained model's ``alphas_cumprod``).

        Step ``i`` sits at ``t = (i + 1) / N`` (so diffusers' integer timestep ``i`` is
        ``t * N - 1``, see :func:`arraygen.samplers.discrete_time_model`); between steps the
        log-SNR :math:`\lambda = \log(\bar\alpha / (1 - \bar\alpha))` is linear in t, and on
        ``[0, 1/N]`` :math:`\log\bar\alpha` runs linearly from 0. The table is read in float64
        (a float32 table keeps its float32 values exactly).

        Parameters
        ----------
        alphas_cumprod : array_like, shape (N,)
            ``N >= 2`` values in (0, 1), strictly decreasing (a table that reaches 0, such as a
            zero-terminal-SNR rescale, has no finite start: clip its last value first).

        Returns
        -------
        NoiseSchedule
            ``kind = "table"``, ``num_timesteps = N``.

        Examples
        --------
        >>> import numpy as np
        >>> from arraygen.schedules import NoiseSchedule
        >>> betas = np.linspace(1e-4, 0.02, 1000)
        >>> table = np.cumprod(1.0 - betas)
        >>> sch = NoiseSchedule.from_alphas_cumprod(table)
        >>> bool(abs(sch.alpha_bar(500 / 1000) - table[499]) < 1e-12)
        True
        """
        ab = _v.host_float64(alphas_cumprod, "alphas_cumprod", expected="a 1-D array of numbers")
        if ab.ndim != 1 or ab.shape[0] < 2:
            raise ValueError(f"`alphas_cumprod` must be 1-D with at least 2 entries; got shape "
                             f"{ab.shape}")
        if not np.all(np.isfinite(ab)) or ab.min() <= 0.0 or ab.max() >= 1.0:
            raise ValueError(f"`alphas_cumprod` must lie in (0, 1) (open); got min {ab.min()}, "
                             f"max {ab.max()} (clip a zero-terminal-SNR table's last entry)")
        if not np.all(np.diff(ab) < 0.0):
            raise ValueError("`alphas_cumprod` must be strictly decreasing")
        out = cls("table", int(ab.shape[0]), {})
        out._table_lam = np.log(ab) - np.log1p(-ab)
        out._table_ab = ab
        return out

    @classmethod
    def from_diffusers(cls, scheduler) -> "NoiseSchedule":
        """The schedule of a diffusers scheduler (its ``alphas_cumprod`` table).

        ``scheduler`` is a diffusers scheduler instance with ``alphas_cumprod`` (DDPM, DDIM,
        DPMSolverMultistep, UniPC, Euler, ... schedulers) or its ``config`` (then a
        ``DDPMScheduler`` is built from it to get the table). See
        :meth:`from_alphas_cumprod` for the time convention.
        """
        table = getattr(scheduler, "alphas_cumprod", None)
        if table is None:
            if isinstance(scheduler, dict):
                try:
                    from diffusers import DDPMScheduler
                except ImportError:  # pragma: no cover - optional dependency
                    raise ImportError("NoiseSchedule.from_diffusers(config) needs diffusers "
                                      "(pip install diffusers)") from None
                keys = set(DDPMScheduler().config)
                cfg = {k: v for k, v in dict(scheduler).items() if k in keys}
                table = DDPMScheduler.from_config(cfg).alphas_cumprod
            else:
                raise TypeError(f"`scheduler` must be a diffusers scheduler with "
                                f"`alphas_cumprod` or its config dict; got "
                                f"{type(scheduler).__name__}")
        if hasattr(table, "detach"):
            table = table.detach().cpu().double().numpy()
        return cls.from_alphas_cumprod(table)

    def _table_log_alpha_bar(self, xp, t):
        lam, la_first = self._table_knots(xp, t)
        n = self.num_timesteps
        shape = t.shape
        u = xp.reshape(t, (-1,)) * float(n) - 1.0
        i0 = xp.clip(xp.floor(u), 0.0, float(n - 2))
        frac = xp.clip(u - i0, 0.0, 1.0)
        idx = xp.astype(i0, xp.int64)
        l0 = xp.take(lam, idx)
        l1 = xp.take(lam, idx + 1)
        lam_t = l0 + frac * (l1 - l0)
        la_hi = -_softplus(xp, -lam_t)
        la_lo = (u + 1.0) * la_first
        return xp.reshape(xp.where(u < 0.0, la_lo, la_hi), shape)

    def _table_beta(self, xp, t):
        lam, la_first = self._table_knots(xp, t)
        n = self.num_timesteps
        shape = t.shape
        u = xp.reshape(t, (-1,)) * float(n) - 1.0
        idx = xp.astype(xp.clip(xp.floor(u), 0.0, float(n - 2)), xp.int64)
        slope = (xp.take(lam, idx + 1) - xp.take(lam, idx)) * float(n)
        la = self._table_log_alpha_bar(xp, xp.reshape(t, (-1,)))
        beta_hi = xp.expm1(la) * slope  # -(1 - alpha_bar) dlambda/dt
        beta_lo = xp.full_like(u, -float(n) * la_first)
        return xp.reshape(xp.where(u < 0.0, beta_lo, beta_hi), shape)

    def _table_knots(self, xp, t):
        lam = self._table_lam
        la_first = float(-np.logaddexp(0.0, -lam[0]))
        if xp is np:
            return lam, la_first
        return xp.asarray(lam, dtype=xp.float64, device=aa.device(t)), la_first

    # -- closed forms, generic over a namespace, float64 ---------------------------------------
    def _log_alpha_bar(self, xp, t):
        if self.kind == "table":
            return self._table_log_alpha_bar(xp, t)
        p, n = self.params, float(self.num_timesteps)
        if self.kind in ("linear", "quadratic", "sigmoid"):
            b0, b1 = p["beta_start"], p["beta_end"]
            if self.kind == "linear":
                return _linear_discrete_log_alpha_bar(xp, t, b0, b1, n)
            if self.kind == "quadratic":
                integral = t * t * t / 3.0
            else:
                a, b = p["sigmoid_start"], p["sigmoid_end"]
                z0 = _softplus(xp, xp.full_like(t, a))
                integral = (_softplus(xp, a + (b - a) * t) - z0) / (b - a)
            return -n * (b0 * t + (b1 - b0) * integral)
        if self.kind == "cosine":
            s = p["s"]
            f = xp.cos((t + s) / (1.0 + s) * (math.pi / 2.0))
            f0 = math.cos(s / (1.0 + s) * (math.pi / 2.0))
            floor = math.log(p["alpha_bar_min"])
            tiny = xp.full_like(t, 1e-300)
            return xp.maximum(2.0 * xp.log(xp.maximum(f, tiny) / f0), xp.full_like(t, floor))
        # karras: VE sigma s(t) = sigma_max t^rho, alpha_bar = 1 / (1 + s^2)
        sig = p["sigma_max"] * t ** p["rho"]
        return -xp.log1p(sig * sig)

    def _beta(self, xp, t):
        if self.kind == "table":
            return self._table_beta(xp, t)
        p, n = self.params, float(self.num_timesteps)
        if self.kind in ("linear", "quadratic", "sigmoid"):
            b0, b1 = p["beta_start"], p["beta_end"]
            if self.kind == "linear":
                return _linear_discrete_beta(xp, t, b0, b1, n)
            if self.kind == "quadratic":
                g = t * t
            else:
                a, b = p["sigmoid_start"], p["sigmoid_end"]
                g = 1.0 / (1.0 + xp.exp(-(a + (b - a) * t)))
            return n * (b0 + (b1 - b0) * g)
        if self.kind == "cosine":
            s = p["s"]
            arg = (t + s) / (1.0 + s) * (math.pi / 2.0)
            slope = math.pi / (1.0 + s) * xp.tan(arg)
            floored = self._log_alpha_bar(xp, t) <= math.log(p["alpha_bar_min"])
            return xp.where(floored, xp.zeros_like(t), slope)
        smax, rho = p["sigma_max"], p["rho"]
        sig = smax * t ** rho
        dsig = smax * rho * t ** (rho - 1.0)
        return 2.0 * sig * dsig / (1.0 + sig * sig)

    # -- evaluation on scalars / arrays of any namespace ---------------------------------------
    def _apply(self, t, fn):
        if aa.is_array(t):
            xp = aa.array_namespace(t=t)
            out_dtype = t.dtype if xp.isdtype(t.dtype, "real floating") else xp.float64
            t64 = xp.astype(t, xp.float64)
            return xp.astype(fn(xp, t64), out_dtype)
        try:
            value = float(t)
        except (TypeError, ValueError):
            raise TypeError(f"`t` must be a real scalar or an array; got {t!r}") from None
        with np.errstate(divide="ignore", over="ignore"):
            return float(fn(np, np.asarray(value, dtype=np.float64)))

    def log_alpha_bar(self, t):
        r""":math:`\log\bar\alpha(t)` (closed form, 0 at t = 0)."""
        return self._apply(t, self._log_alpha_bar)

    def alpha_bar(self, t):
        r""":math:`\bar\alpha(t)`, decreasing from 1 at t = 0."""
        return self._apply(t, lambda xp, u: xp.exp(self._log_alpha_bar(xp, u)))

    def alpha(self, t):
        r""":math:`\sqrt{\bar\alpha(t)}` (the data scale of ``x_t``)."""
        return self._apply(t, lambda xp, u: xp.exp(0.5 * self._log_alpha_bar(xp, u)))

    def sigma(self, t):
        r""":math:`\sqrt{1 - \bar\alpha(t)}` (the noise scale of ``x_t``)."""
        return self._apply(t, lambda xp, u: xp.sqrt(-xp.expm1(self._log_alpha_bar(xp, u))))

    def log_snr(self, t):
        r""":math:`\lambda(t) = \log(\bar\alpha / (1 - \bar\alpha))` (+inf at t = 0)."""
        def f(xp, u):
            la = self._log_alpha_bar(xp, u)
            return la - xp.log(-xp.expm1(la))
        return self._apply(t, f)

    def ve_sigma(self, t):
        r"""Variance-exploding noise level :math:`\sqrt{(1 - \bar\alpha)/\bar\alpha}`.

        ``x_t / sqrt(alpha_bar) = x_0 + ve_sigma(t) z``; for the ``karras`` kind this is
        ``sigma_max t^rho``.
        """
        def f(xp, u):
            la = self._log_alpha_bar(xp, u)
            return xp.sqrt(-xp.expm1(la) / xp.exp(la))
        return self._apply(t, f)

    def beta(self, t):
        r""":math:`\beta(t) = -\frac{d}{dt}\log\bar\alpha(t)` (closed form)."""
        return self._apply(t, self._beta)

    def t_from_log_alpha_bar(self, log_alpha_bar) -> np.ndarray:
        """Invert the schedule: the t in [0, 1] with ``log alpha_bar(t) = log_alpha_bar``.

        Vectorised bisection in float64 (64 halvings, so exact to rounding) on the host;
        targets outside ``[log alpha_bar(1), 0]`` are clipped to the ends. Returns a float64
        NumPy array shaped like the input.
        """
        target = np.asarray(log_alpha_bar, dtype=np.float64)
        lo = np.zeros_like(target)
        hi = np.ones_like(target)
        for _ in range(64):
            mid = 0.5 * (lo + hi)
            above = self._log_alpha_bar(np, mid) > target
            lo = np.where(above, mid, lo)
            hi = np.where(above, hi, mid)
        return 0.5 * (lo + hi)


def make_schedule(kind: str = "linear", num_timesteps: int = 1000, **params) -> NoiseSchedule:
    r"""Build a continuous VP noise schedule (t in [0, 1], t = 0 data, t = 1 noise).

    Kinds (:math:`N` = ``num_timesteps``, :math:`\beta_0, \beta_1` = ``beta_start``,
    ``beta_end``):

    * ``"linear"``: DDPM's discrete betas ``linspace(beta_start, beta_end, N)`` (1e-4..0.02;
      diffusers' ``beta_schedule="linear"``) as a continuous schedule that equals their table
      :math:`\bar\alpha_i = \prod_{j\le i}(1-\beta_j)` at ``t = (i + 1) / N`` to about
      1e-8: :math:`\log\bar\alpha(t) = \int_{-1/2}^{tN-1/2}\log(1-\beta(u))\,du` with
      :math:`\beta(u) = \beta_0 + (\beta_1-\beta_0)u/(N-1)` (the midpoint rule of the
      table's sum; :math:`\bar\alpha(1) \approx 4.0\cdot10^{-5}`). The first-order form
      :math:`\exp(-N(\beta_0 t + (\beta_1-\beta_0) t^2/2))` used before drops the
      :math:`-\sum\beta_j^2/2` term and is up to 7% off the trained models' table.
    * ``"quadratic"``: :math:`\beta(t) = N(\beta_0 + (\beta_1-\beta_0) t^2)`,
      :math:`\bar\alpha = \exp(-N(\beta_0 t + (\beta_1-\beta_0) t^3/3))`.
    * ``"sigmoid"``: :math:`\beta(t) = N(\beta_0 + (\beta_1-\beta_0)\,\mathrm{sigmoid}(a +
      (b-a)t))` with ``sigmoid_start`` a = -6, ``sigmoid_end`` b = 6, integrated in closed form
      with softplus.
    * ``"cosine"`` (iDDPM, ``s`` = 0.008): :math:`\bar\alpha = f(t)/f(0)`,
      :math:`f = \cos^2(\frac{t+s}{1+s}\frac{\pi}{2})`, floored at ``alpha_bar_min`` = 1e-8 (the
      formula reaches 0 at t = 1, where no sampler can start); ``beta`` is 0 on the floor.
    * ``"karras"`` (``sigma_min`` = 0.002, ``sigma_max`` = 80, ``rho`` = 7): the EDM noise
      levels as a VP schedule, :math:`\bar\alpha = 1/(1+s(t)^2)` with the variance-exploding
      level :math:`s(t) = \sigma_{max} t^\rho` (so :math:`\bar\alpha(0) = 1`,
      :math:`s(1) = \sigma_{max}`, and :math:`s^{1/\rho}` is linear in t). ``sigma_min`` is
      where :func:`timesteps` ``"karras"`` ends its ramp before the final step to t = 0, so
      ``timesteps(n, "karras")`` reproduces k-diffusion's ``get_sigmas_karras(n, 0.002, 80)``
      followed by 0.

    Parameters
    ----------
    kind : str
        One of :data:`SCHEDULE_KINDS`.
    num_timesteps : int
        Scale :math:`N` of the beta kinds (the discrete DDPM length), >= 1.
    **params
        Kind-specific parameters listed above; unknown names raise ``TypeError``.

    Returns
    -------
    NoiseSchedule
    """
    _v.check_choice(kind, "kind", SCHEDULE_KINDS)
    num_timesteps = _v.check_int(num_timesteps, "num_timesteps", minimum=1)
    defaults = _SCHEDULE_DEFAULTS[kind]
    unknown = set(params) - set(defaults)
    if unknown:
        raise TypeError(f"unknown parameters {sorted(unknown)} for the {kind!r} schedule; "
                        f"valid: {sorted(defaults)}")
    full = dict(defaults)
    for name, value in params.items():
        full[name] = _v.check_scalar(value, name)
    if kind in ("linear", "quadratic", "sigmoid"):
        if not 0.0 <= full["beta_start"] <= full["beta_end"] or full["beta_end"] <= 0.0:
            raise ValueError(f"`beta_start` and `beta_end` must satisfy 0 <= beta_start <= "
                             f"beta_end, beta_end > 0; got {full['beta_start']}, "
                             f"{full['beta_end']}")
        if kind == "sigmoid" and not full["sigmoid_start"] < full["sigmoid_end"]:
            raise ValueError(f"`sigmoid_start` must be below `sigmoid_end`; got "
                             f"{full['sigmoid_start']}, {full['sigmoid_end']}")
    elif kind == "cosine":
        _v.check_scalar(full["s"], "s", positive=True)
        if not 0.0 < full["alpha_bar_min"] < 1.0:
            raise ValueError(f"`alpha_bar_min` must be in (0, 1); got {full['alpha_bar_min']}")
    else:
        _v.check_scalar(full["sigma_min"], "sigma_min", positive=True)
        _v.check_scalar(full["rho"], "rho", positive=True, high=1e3)
        if not full["sigma_min"] < full["sigma_max"]:
            raise ValueError(f"`sigma_min` must be below `sigma_max`; got "
                             f"{full['sigma_min']} >= {full['sigma_max']}")
    return NoiseSchedule(kind, int(num_timesteps), full)


def validate_grid(grid, name: str = "steps", *, increasing: bool = False) -> np.ndarray:
    """Check an explicit time grid: 1-D, >= 2 points, finite, in [0, 1], strictly decreasing
    (diffusion time: t = 1 noise -> t = 0 data) or, with ``increasing=True``, strictly
    increasing (flow time: t = 0 noise -> t = 1 data).

    Returns it as a float64 NumPy array (host).
    """
    g = _v.host_float64(grid, name, expected="an int or a 1-D sequence of times")
    if g.ndim != 1 or g.shape[0] < 2:
        raise ValueError(f"`{name}` must be a 1-D grid of at least 2 times (>= 1 step); got "
                         f"shape {g.shape}")
    if not np.all(np.isfinite(g)) or g.min() < 0.0 or g.max() > 1.0:
        raise ValueError(f"`{name}` must lie in [0, 1]; got min {g.min()}, max {g.max()}")
    steps = np.diff(g)
    bad = np.nonzero(~(steps > 0.0 if increasing else steps < 0.0))[0]
    if bad.size:
        i = int(bad[0])
        order = ("strictly increasing (flow time: t = 0 noise -> t = 1 data)" if increasing
                 else "strictly decreasing (t = 1 noise -> t = 0 data)")
        raise ValueError(f"`{name}` must be {order}; got {g[i]!r} followed by {g[i + 1]!r} "
                         f"at index {i}")
    return g


#: Default top of the ``"karras"`` and ``"log_snr"`` grids, in variance-exploding units.
SIGMA_MAX = 80.0


def _discrete_indices(n: int, kind: str, num_train: int) -> np.ndarray:
    """diffusers' integer timesteps (decreasing) for ``timestep_spacing`` = kind."""
    if kind == "leading":
        ratio = num_train // n
        if ratio < 1:
            raise ValueError(f"`n` = {n} exceeds the schedule's {num_train} discrete steps")
        return (np.arange(n) * ratio)[::-1].astype(np.float64)
    if kind == "trailing":
        return np.round(np.arange(num_train, 0, -num_train / n)) - 1.0
    return np.linspace(0, num_train - 1, n + 1).round()[::-1][:-1].copy()  # linspace


def timesteps(n: int, kind: str = "linear", schedule: NoiseSchedule | None = None, *,
              sigma_min: float | None = None, sigma_max: float | None = None,
              rho: float | None = None, log_snr_max: float | None = None,
              sigmas=None) -> np.ndarray:
    r"""A sampling grid of ``n`` steps: ``n + 1`` times strictly decreasing to 0.

    Kinds (:math:`u_k = k/n`, k = 0..n):

    * ``"linear"``: :math:`t_k = 1 - u_k` (diffusers' ``"trailing"`` spacing in continuous t).
    * ``"quadratic"``: :math:`t_k = 1 - u_k^2` (denser near t = 1).
    * ``"cosine"``: :math:`t_k = (1 + \cos(\pi u_k))/2` (denser at both ends).
    * ``"uniform_alpha_bar"``: :math:`\bar\alpha(t_k)` equally spaced from
      :math:`\bar\alpha(1)` to 1.
    * ``"log_snr"`` (the samplers' default, :data:`arraygen.samplers.DEFAULT_GRID`): t = 1, then
      ``n - 1`` further times equally spaced in :math:`\lambda = \log\mathrm{SNR}` on the ramp
      from :math:`\max(\lambda(1), -2\log\sigma_{max})` to ``log_snr_max`` (default
      :math:`-2\log(0.002)`), then t = 0. ``sigma_max`` defaults to :data:`SIGMA_MAX` = 80 (VE
      units), so on schedules whose :math:`\bar\alpha(1)` is tiny (cosine: VE level 1e4) the
      levels are not wasted on pure noise; t = 1 stays the entry point (the ramp's first level
      is replaced by t = 1).
    * ``"karras"``: t = 1, then the variance-exploding levels
      :math:`s_k = (s_{max}^{1/\rho} + \frac{k}{n-1}(s_{min}^{1/\rho} -
      s_{max}^{1/\rho}))^\rho` for k = 1..n-1 with ``sigma_max`` = min(the schedule's level at
      t = 1, 80), ``sigma_min`` = 0.002, ``rho`` = 7, then t = 0; on the ``karras`` schedule
      these are k-diffusion's ``get_sigmas_karras(n, 0.002, 80)`` plus 0.
    * ``"leading"``, ``"trailing"``, ``"linspace"``: diffusers' ``timestep_spacing`` on the
      schedule's ``num_timesteps`` = N discrete steps (integer timesteps ``i``, at
      ``t = (i + 1) / N``), then t = 0. ``"leading"`` is DDIMScheduler's default,
      ``"linspace"`` DPMSolverMultistep's and UniPC's (``linspace(0, N-1, n+1)`` rounded, the
      last dropped); the first time is below 1 except for ``"trailing"``.
    * ``"sigmas"``: a precomputed list of VE levels (``sigmas=``, decreasing, e.g. an "Align
      Your Steps" schedule, which may end in 0): interpolated log-linearly to ``n`` levels
      when its length differs (AYS's rule), mapped to t by inverting the schedule (levels
      above the schedule's top are clipped to t = 1), then t = 0.

    The schedule-dependent kinds invert ``schedule`` by bisection (default schedule: ``karras``
    for the ``"karras"`` grid, ``linear`` otherwise).

    Parameters
    ----------
    n : int
        Number of steps, >= 1.
    kind : str
        One of :data:`TIMESTEP_KINDS`.
    schedule : NoiseSchedule, optional
    sigma_min, sigma_max, rho, log_snr_max : float, optional
        Overrides for the ``"karras"`` and ``"log_snr"`` grids (``sigma_max`` caps both).
    sigmas : array_like, optional
        The VE levels of the ``"sigmas"`` kind.

    Returns
    -------
    numpy.ndarray, shape (n + 1,), float64
        ``t_0 > t_1 > ... > t_n = 0``.

    Examples
    --------
    >>> from arraygen.schedules import make_schedule, timesteps
    >>> sch = make_schedule("cosine")
    >>> g = timesteps(10, "log_snr", sch)
    >>> float(g[0]), float(g[-1]), round(float(sch.ve_sigma(g[1])), 2)
    (1.0, 0.0, 24.65)
    """
    n = _v.check_int(n, "n", minimum=1)
    _v.check_choice(kind, "kind", TIMESTEP_KINDS)
    if schedule is not None and not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"`schedule` must be a NoiseSchedule (see make_schedule); got "
                        f"{type(schedule).__name__}")
    if sigmas is not None and kind != "sigmas":
        raise TypeError(f"`sigmas` is only used by the 'sigmas' grid kind; got kind {kind!r}")
    u = np.arange(n + 1, dtype=np.float64) / n
    if kind == "linear":
        grid = 1.0 - u
    elif kind == "quadratic":
        grid = 1.0 - u * u
    elif kind == "cosine":
        grid = 0.5 * (1.0 + np.cos(np.pi * u))
    elif kind in ("leading", "trailing", "linspace"):
        if schedule is None:
            schedule = make_schedule("linear")
        big_n = schedule.num_timesteps
        idx = _discrete_indices(n, kind, big_n)
        grid = np.append((idx + 1.0) / big_n, 0.0)
        return validate_grid(grid, name="timesteps")
    else:
        if schedule is None:
            schedule = make_schedule("karras" if kind == "karras" else "linear")
        la1 = float(schedule._log_alpha_bar(np, np.float64(1.0)))
        if kind == "uniform_alpha_bar":
            targets = np.log(np.linspace(math.exp(la1), 1.0, n + 1))
            grid = schedule.t_from_log_alpha_bar(targets)
        elif kind == "sigmas":
            grid = _sigma_list_grid(n, sigmas, schedule, la1)
            return validate_grid(grid, name="timesteps")
        else:
            s_top = math.sqrt(-math.expm1(la1) / math.exp(la1))
            cap = (SIGMA_MAX if sigma_max is None
                   else _v.check_scalar(sigma_max, "sigma_max", positive=True))
            if kind == "karras":
                sp = schedule.params if schedule.kind == "karras" else {}
                s_hi = min(s_top, cap)
                s_lo = (_v.check_scalar(sigma_min, "sigma_min", positive=True)
                        if sigma_min is not None else float(sp.get("sigma_min", 0.002)))
                r = (_v.check_scalar(rho, "rho", positive=True, high=1e3) if rho is not None
                     else float(sp.get("rho", 7.0)))
                if not s_lo < s_hi:
                    raise ValueError(f"`sigma_min` must be below `sigma_max`; got {s_lo} >= "
                                     f"{s_hi}")
                ramp = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
                # in log space: (a + ramp (b - a))^rho with a, b = s^(1/rho)
                a, b = s_hi ** (1 / r), s_lo ** (1 / r)
                lam = -2.0 * r * np.log(a + ramp * (b - a))
            else:
                top = (_v.check_scalar(log_snr_max, "log_snr_max")
                       if log_snr_max is not None else -2.0 * math.log(0.002))
                lam1 = max(la1 - math.log(-math.expm1(la1)), -2.0 * math.log(cap))
                if not top > lam1:
                    raise ValueError(f"`log_snr_max` must exceed the grid's first log-SNR "
                                     f"{lam1:.4g}; got {top}")
                lam = np.linspace(lam1, top, n)
            # alpha_bar = sigmoid(lambda)  =>  log alpha_bar = -softplus(-lambda)
            la = -np.logaddexp(0.0, -lam)
            grid = np.append(schedule.t_from_log_alpha_bar(la), 0.0)
        grid[0] = 1.0
    grid[-1] = 0.0
    return validate_grid(grid, name="timesteps")


def _sigma_list_grid(n: int, sigmas, schedule: NoiseSchedule, la1: float) -> np.ndarray:
    if sigmas is None:
        raise TypeError("the 'sigmas' grid kind needs `sigmas=` (decreasing VE noise levels)")
    if aa.is_array(sigmas):
        sigmas = aa.to_numpy(sigmas)
    try:
        sig = np.asarray(sigmas, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"`sigmas` must be a 1-D sequence of numbers; got "
                        f"{type(sigmas).__name__}") from None
    if sig.ndim != 1 or sig.shape[0] < 1:
        raise ValueError(f"`sigmas` must be a non-empty 1-D sequence; got shape {sig.shape}")
    if sig.shape[0] > 1 and sig[-1] == 0.0:
        sig = sig[:-1]
    if not np.all(np.isfinite(sig)) or sig.min() <= 0.0:
        raise ValueError("`sigmas` must be finite and positive (a final 0 is allowed)")
    if sig.shape[0] > 1 and not np.all(np.diff(sig) < 0.0):
        raise ValueError("`sigmas` must be strictly decreasing")
    if sig.shape[0] != n:
        if sig.shape[0] < 2:
            raise ValueError(f"`sigmas` has one level; it cannot be interpolated to {n} steps")
        xs = np.linspace(0.0, 1.0, sig.shape[0])
        sig = np.exp(np.interp(np.linspace(0.0, 1.0, n), xs, np.log(sig[::-1])))[::-1]
    la = -np.log1p(sig * sig)
    la = np.maximum(la, la1)
    return np.append(schedule.t_from_log_alpha_bar(la), 0.0)


def flow_timesteps(n: int, kind: str = "linear", *, shift: float = 1.0) -> np.ndarray:
    r"""An increasing flow-matching grid of ``n`` steps (t = 0 noise -> t = 1 data).

    ``"linear"``: :math:`t_k = k/n`; ``"quadratic"``: :math:`t_k = (k/n)^2` (dense at the noise
    end). ``shift`` is SD3's time shift of the noise level :math:`\sigma = 1 - t`:
    :math:`\sigma' = s\sigma / (1 + (s - 1)\sigma)` (``shift`` > 1 spends more steps at high
    noise, as diffusers' ``FlowMatchEulerDiscreteScheduler(shift=...)``); 1 leaves the grid as
    is.

    Examples
    --------
    >>> from arraygen.schedules import flow_timesteps
    >>> flow_timesteps(4, shift=3.0).round(3).tolist()
    [0.0, 0.1, 0.25, 0.5, 1.0]
    """
    n = _v.check_int(n, "n", minimum=1)
    _v.check_choice(kind, "kind", FLOW_TIMESTEP_KINDS)
    shift = _v.check_scalar(shift, "shift", positive=True)
    u = np.arange(n + 1, dtype=np.float64) / n
    grid = u * u if kind == "quadratic" else u
    if shift != 1.0:
        sig = 1.0 - grid
        grid = 1.0 - shift * sig / (1.0 + (shift - 1.0) * sig)
    grid[0], grid[-1] = 0.0, 1.0
    return validate_grid(grid, name="timesteps", increasing=True)
