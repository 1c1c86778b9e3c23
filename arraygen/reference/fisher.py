"""Float64 oracle of the Fisher hot path (DESIGN 4.1)."""

from __future__ import annotations

import numpy as np


def _eps(alpha_bar, ndim: int, eps_floor: float, eps_scale: float) -> np.ndarray:
    a = np.asarray(alpha_bar, dtype=np.float64)
    eps = eps_floor + eps_scale * (1.0 - a)
    return eps.reshape(eps.shape + (1,) * (ndim - eps.ndim)) if eps.ndim else eps


def fisher_diagonal(score, alpha_bar, eps_floor: float = 1e-4, eps_scale: float = 1e-3):
    """F = score**2 + eps, eps = eps_floor + eps_scale * (1 - alpha_bar) (alpha_bar () or (B,))."""
    s = np.asarray(score, dtype=np.float64)
    return s * s + _eps(alpha_bar, s.ndim, eps_floor, eps_scale)


def fisher_langevin_step(x, score, v, alpha_bar, step_size: float, momentum: float, noise,
                         eps_floor: float = 1e-4, eps_scale: float = 1e-3):
    """One pSGLD step with given noise z; returns (x_new, v_new) in float64.

    v_new = m v + (1 - m) F;  P = v_new**-1/2 / mean_sample(v_new**-1/2);
    x_new = x + h P score + sqrt(2 h P) z.
    """
    x = np.asarray(x, dtype=np.float64)
    s = np.asarray(score, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    z = np.asarray(noise, dtype=np.float64)
    f = fisher_diagonal(s, alpha_bar, eps_floor, eps_scale)
    v_new = momentum * v + (1.0 - momentum) * f
    p = 1.0 / np.sqrt(v_new)
    axes = tuple(range(1, x.ndim))
    p = p / p.mean(axis=axes, keepdims=True)
    x_new = x + step_size * p * s + np.sqrt(2.0 * step_size * p) * z
    return x_new, v_new
