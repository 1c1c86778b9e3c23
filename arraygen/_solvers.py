r"""One-evaluation-per-step update rules of the diffusion samplers, shared by
:mod:`arraygen.samplers` (which loops over a grid calling the model) and
:mod:`arraygen.integrations.diffusers` (whose ``step`` receives the model output from a
pipeline). Private: inputs are trusted.

Every rule works on VP ``x`` (``x_t = alpha x_0 + sigma z``) with the denoised estimate
``D = E[x_0 | x_t]`` and the grid's host coefficients (:class:`GridCoefficients`, float64).
A stepper is created once per run; ``step(k, x, d, noise)`` advances ``x`` from grid index
``k`` to ``k + 1`` and keeps whatever history the method needs. ``noise(j)`` returns the
``j``-th standard normal draw of the step (called only when the step is stochastic).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["ONE_EVAL_METHODS", "GridCoefficients", "make_stepper"]


class GridCoefficients:
    """Host float64 coefficients of a decreasing diffusion grid ``t`` on ``schedule``."""

    def __init__(self, schedule, grid: np.ndarray):
        self.t = np.asarray(grid, dtype=np.float64)
        la = schedule._log_alpha_bar(np, self.t)
        self.log_ab = la
        self.alpha_bar = np.exp(la)
        self.alpha = np.exp(0.5 * la)
        self.sigma = np.sqrt(-np.expm1(la))
        with np.errstate(divide="ignore"):
            self.lam = 0.5 * (la - np.log(-np.expm1(la)))  # log(alpha / sigma), +inf at t = 0
            self.ve = self.sigma / self.alpha
        self.n = self.t.shape[0] - 1


class _DDIM:
    """DDIM(eta) (Song et al. eq. 12/16); eta = 0 is Euler in the VE variables."""

    draws = 1

    def __init__(self, c: GridCoefficients, eta: float = 0.0):
        self.c, self.eta = c, float(eta)

    def stochastic(self, k: int) -> bool:
        return self.eta > 0.0 and self.c.sigma[k + 1] > 0.0

    def coefficients(self, k: int):
        c, eta = self.c, self.eta
        a, s = float(c.alpha[k]), float(c.sigma[k])
        an, sn = float(c.alpha[k + 1]), float(c.sigma[k + 1])
        noise_sd = 0.0
        if eta > 0.0 and sn > 0.0:
            step = -math.expm1(float(c.log_ab[k] - c.log_ab[k + 1]))  # 1 - ab_c / ab_p
            noise_sd = eta * (sn / s) * math.sqrt(step)
        direction = math.sqrt(max(0.0, sn * sn - noise_sd * noise_sd))
        return direction / s, an - direction * a / s, noise_sd

    def step(self, k, x, d, noise):
        cx, cd, cz = self.coefficients(k)
        x = cx * x + cd * d
        if cz > 0.0:
            x = x + cz * noise(0)
        return x


class _DDPM:
    """Ancestral DDPM step with the posterior q(x_t' | x_t, D)."""

    draws = 1

    def __init__(self, c: GridCoefficients):
        self.c = c

    def stochastic(self, k: int) -> bool:
        return self.c.sigma[k + 1] > 0.0

    def step(self, k, x, d, noise):
        c = self.c
        s2c, s2p = float(c.sigma[k]) ** 2, float(c.sigma[k + 1]) ** 2
        beta = -math.expm1(float(c.log_ab[k] - c.log_ab[k + 1]))
        c0 = float(c.alpha[k + 1]) * beta / s2c
        cx = float(c.alpha[k] / c.alpha[k + 1]) * s2p / s2c
        x = c0 * d + cx * x
        var = beta * s2p / s2c
        if var > 0.0:
            x = x + math.sqrt(var) * noise(0)
        return x


class _DPMpp2M:
    """DPM-Solver++(2M), ODE or SDE (k-diffusion's sample_dpmpp_2m / _2m_sde, VP form)."""

    draws = 1

    def __init__(self, c: GridCoefficients, sde: bool = False, eta: float = 1.0):
        self.c, self.sde, self.eta = c, bool(sde), float(eta) if sde else 0.0
        self.d_old = None
        self.h_old = None

    def stochastic(self, k: int) -> bool:
        return self.sde and self.eta > 0.0 and self.c.sigma[k + 1] > 0.0

    def step(self, k, x, d, noise):
        c = self.c
        sn, an = float(c.sigma[k + 1]), float(c.alpha[k + 1])
        if sn == 0.0:
            x = an * d
        else:
            s = float(c.sigma[k])
            h = float(c.lam[k + 1] - c.lam[k])
            if not self.sde:
                d_hat = d
                if self.d_old is not None:
                    r = self.h_old / h
                    d_hat = (1.0 + 1.0 / (2.0 * r)) * d - (1.0 / (2.0 * r)) * self.d_old
                x = (sn / s) * x - (an * math.expm1(-h)) * d_hat
            else:
                eh = self.eta * h
                cc = -math.expm1(-h - eh)
                x = (sn / s * math.exp(-eh)) * x + (an * cc) * d
                if self.d_old is not None:
                    r = self.h_old / h
                    x = x + (an * cc * 0.5 / r) * (d - self.d_old)
                if self.eta > 0.0:
                    x = x + (sn * math.sqrt(-math.expm1(-2.0 * eh))) * noise(0)
            self.h_old = h
        self.d_old = d
        return x


class _DPMpp3MSDE:
    """DPM-Solver++(3M) SDE (k-diffusion's sample_dpmpp_3m_sde in VP form); eta = 0 is the
    third-order multistep ODE solver."""

    draws = 1

    def __init__(self, c: GridCoefficients, eta: float = 1.0, s_noise: float = 1.0):
        self.c, self.eta, self.s_noise = c, float(eta), float(s_noise)
        self.d1 = self.d2 = None
        self.h1 = self.h2 = None

    def stochastic(self, k: int) -> bool:
        return self.eta > 0.0 and self.s_noise > 0.0 and self.c.sigma[k + 1] > 0.0

    def step(self, k, x, d, noise):
        c = self.c
        sn, an = float(c.sigma[k + 1]), float(c.alpha[k + 1])
        h = None
        if sn == 0.0:
            x = an * d
        else:
            s = float(c.sigma[k])
            h = float(c.lam[k + 1] - c.lam[k])
            h_eta = h * (self.eta + 1.0)
            x = (sn / s * math.exp(-self.eta * h)) * x + (an * -math.expm1(-h_eta)) * d
            phi_2 = math.expm1(-h_eta) / h_eta + 1.0
            if self.h2 is not None:
                r0, r1 = self.h1 / h, self.h2 / h
                d1_0 = (d - self.d1) / r0
                d1_1 = (self.d1 - self.d2) / r1
                d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
                d2 = (1.0 / (r0 + r1)) * (d1_0 - d1_1)
                phi_3 = phi_2 / h_eta - 0.5
                x = x + (an * phi_2) * d1 - (an * phi_3) * d2
            elif self.h1 is not None:
                r = self.h1 / h
                x = x + (an * phi_2 / r) * (d - self.d1)
            if self.eta > 0.0 and self.s_noise > 0.0:
                x = x + (sn * self.s_noise * math.sqrt(-math.expm1(-2.0 * h * self.eta))) \
                    * noise(0)
        self.d1, self.d2 = d, self.d1
        self.h1, self.h2 = h, self.h1
        return x


class _EulerAncestral:
    """Euler ancestral (k-diffusion's sample_euler_ancestral, diffusers'
    EulerAncestralDiscreteScheduler) in VP form."""

    draws = 1

    def __init__(self, c: GridCoefficients, eta: float = 1.0, s_noise: float = 1.0):
        self.c, self.eta, self.s_noise = c, float(eta), float(s_noise)

    def levels(self, k: int):
        s, s_to = float(self.c.ve[k]), float(self.c.ve[k + 1])
        if self.eta == 0.0 or s_to == 0.0:
            return s_to, 0.0
        s_up = min(s_to, self.eta * math.sqrt(s_to * s_to * (s * s - s_to * s_to) / (s * s)))
        return math.sqrt(max(0.0, s_to * s_to - s_up * s_up)), s_up

    def stochastic(self, k: int) -> bool:
        return self.levels(k)[1] > 0.0 and self.s_noise > 0.0

    def step(self, k, x, d, noise):
        c = self.c
        a, an, s = float(c.alpha[k]), float(c.alpha[k + 1]), float(c.ve[k])
        s_down, s_up = self.levels(k)
        # y = x / a; y' = y + (s_down - s)(y - d)/s = (s_down/s) y + (1 - s_down/s) d
        r = s_down / s
        x = (an * r / a) * x + (an * (1.0 - r)) * d
        if s_up > 0.0 and self.s_noise > 0.0:
            x = x + (an * s_up * self.s_noise) * noise(0)
        return x


class _UniPC:
    """UniPC with the B(h) = e^h - 1 ("bh2") variant, data prediction (Zhao et al. 2023),
    following diffusers' UniPCMultistepScheduler step by step: UniP-p predictor, then at the
    next step (using the model output already evaluated there) the UniC corrector, so the
    corrector costs no model evaluation. ``lower_order_final`` lowers the order in the last
    steps as diffusers does (order ``min(p, steps left)``)."""

    draws = 0

    def __init__(self, c: GridCoefficients, order: int = 2, corrector: bool = True,
                 lower_order_final: bool = True):
        self.c, self.order = c, int(order)
        self.corrector = bool(corrector)
        self.lower_order_final = bool(lower_order_final)
        self.ds: list = []  # model outputs, newest last
        self.ks: list = []  # their grid indices
        self.last_x = None
        self.last_order = None

    def stochastic(self, k: int) -> bool:
        return False

    def _rb(self, k0: int, h: float, hist_idx: list, p: int):
        """rks, R, b of diffusers' UniP/UniC for an expansion at grid index k0."""
        lam = self.c.lam
        rks = [float(lam[i] - lam[k0]) / h for i in hist_idx] + [1.0]
        hh = -h
        h_phi_1 = math.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1.0
        fact = 1.0
        b_h = math.expm1(hh)
        rows, b = [], []
        for i in range(1, p + 1):
            rows.append([r ** (i - 1) for r in rks])
            b.append(h_phi_k * fact / b_h)
            fact *= i + 1
            h_phi_k = h_phi_k / hh - 1.0 / fact
        return rks, np.array(rows), np.array(b), h_phi_1, b_h

    def step(self, k, x, d, noise):
        c = self.c
        if self.corrector and self.last_x is not None:
            x = self._correct(k, d)
        self.ds.append(d)
        self.ks.append(k)
        if len(self.ds) > self.order:
            self.ds.pop(0)
            self.ks.pop(0)
        p = min(self.order, len(self.ds))
        if self.lower_order_final:
            p = min(p, c.n - k)
        if c.sigma[k + 1] == 0.0:
            p = 1
        self.last_order = p
        self.last_x = x
        return self._predict(k, x, p)

    def _predict(self, k: int, x, p: int):
        c = self.c
        an, sn, s = float(c.alpha[k + 1]), float(c.sigma[k + 1]), float(c.sigma[k])
        m0 = self.ds[-1]
        if sn == 0.0:
            return an * m0
        h = float(c.lam[k + 1] - c.lam[k])
        hist = [self.ks[-(i + 1)] for i in range(1, p)]
        rks, rmat, b, h_phi_1, b_h = self._rb(k, h, hist, p)
        x_new = (sn / s) * x - (an * h_phi_1) * m0
        if p >= 2:
            rhos = [0.5] if p == 2 else list(np.linalg.solve(rmat[:-1, :-1], b[:-1]))
            for i, rho in enumerate(rhos):
                d1 = (self.ds[-(i + 2)] - m0) / rks[i]
                x_new = x_new - (an * b_h * float(rho)) * d1
        return x_new

    def _correct(self, k: int, d_new):
        """UniC: redo the step k - 1 -> k with the model output ``d_new`` at k."""
        c = self.c
        k0 = k - 1
        p = self.last_order
        an, sn, s = float(c.alpha[k]), float(c.sigma[k]), float(c.sigma[k0])
        m0 = self.ds[-1]
        h = float(c.lam[k] - c.lam[k0])
        hist = [self.ks[-(i + 1)] for i in range(1, p)]
        rks, rmat, b, h_phi_1, b_h = self._rb(k0, h, hist, p)
        rhos = [0.5] if p == 1 else [float(v) for v in np.linalg.solve(rmat, b)]
        x_new = (sn / s) * self.last_x - (an * h_phi_1) * m0
        for i in range(p - 1):
            d1 = (self.ds[-(i + 2)] - m0) / rks[i]
            x_new = x_new - (an * b_h * rhos[i]) * d1
        return x_new - (an * b_h * rhos[-1]) * (d_new - m0)


#: Methods whose every step costs exactly one model evaluation (usable by the diffusers adapter).
ONE_EVAL_METHODS = ("ddim", "ddpm", "euler", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m_sde",
                    "euler_ancestral", "unipc")


def make_stepper(method: str, c: GridCoefficients, **options):
    """The stepper of ``method`` (one of :data:`ONE_EVAL_METHODS`) on coefficients ``c``."""
    if method in ("ddim", "euler"):
        return _DDIM(c, eta=options.get("eta", 0.0) if method == "ddim" else 0.0)
    if method == "ddpm":
        return _DDPM(c)
    if method in ("dpmpp_2m", "dpmpp_2m_sde"):
        return _DPMpp2M(c, sde=method == "dpmpp_2m_sde" or options.get("sde", False),
                        eta=options.get("eta", 1.0))
    if method == "dpmpp_3m_sde":
        return _DPMpp3MSDE(c, eta=options.get("eta", 1.0), s_noise=options.get("s_noise", 1.0))
    if method == "euler_ancestral":
        return _EulerAncestral(c, eta=options.get("eta", 1.0),
                               s_noise=options.get("s_noise", 1.0))
    if method == "unipc":
        return _UniPC(c, order=options.get("order", 2), corrector=options.get("corrector", True),
                      lower_order_final=options.get("lower_order_final", True))
    raise ValueError(f"unknown method {method!r}; one of {ONE_EVAL_METHODS}")
