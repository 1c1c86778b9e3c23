"""Float64 oracle of the Gaussian hot path (DESIGN 4.2).

Semantics are scipy.ndimage.gaussian_filter's: per filtered axis a sampled Gaussian of radius
``int(truncate * sigma + 0.5)``, normalised to sum 1, correlated with the signal extended by the
boundary mode. Padding is done with ``numpy.pad`` (scipy ``reflect`` = NumPy ``symmetric``,
scipy ``mirror`` = NumPy ``reflect``, ``nearest`` = ``edge``), so this module shares no index
arithmetic with the kernels it checks.
"""

from __future__ import annotations

import math

import numpy as np

_NUMPY_PAD = {"reflect": "symmetric", "mirror": "reflect", "nearest": "edge", "wrap": "wrap",
              "constant": "constant"}


def gaussian_kernel1d(sigma: float, truncate: float = 4.0, order: int = 0,
                      radius: int | None = None) -> np.ndarray:
    """w[k] = g^(order)(k - r) / sum_j g(j - r), k = 0..2r, g(x) = exp(-x^2 / (2 sigma^2)).

    r = int(truncate * sigma + 0.5) unless ``radius`` is given. The derivative is written with
    probabilists' Hermite polynomials, g^(n)(x) = (-1/sigma)^n He_n(x / sigma) g(x) (not with
    the recursion the library uses).
    """
    r = int(truncate * sigma + 0.5) if radius is None else int(radius)
    k = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-0.5 * k * k / (sigma * sigma))
    coef = np.zeros(order + 1)
    coef[order] = 1.0
    he = np.polynomial.hermite_e.hermeval(k / sigma, coef)
    return (-1.0 / sigma) ** order * he * g / g.sum()


def correlate1d(x: np.ndarray, w: np.ndarray, axis: int, mode: str, cval: float = 0.0):
    """y[..., i, ...] = sum_k w[k] * xpad[..., i + k, ...] with xpad = x padded by mode."""
    x = np.asarray(x, dtype=np.float64)
    r = (len(w) - 1) // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (r, r)
    kwargs = {"constant_values": cval} if mode == "constant" else {}
    xp = np.pad(x, pad, mode=_NUMPY_PAD[mode], **kwargs)
    xp = np.moveaxis(xp, axis, -1)
    n = x.shape[axis]
    out = np.zeros(xp.shape[:-1] + (n,), dtype=np.float64)
    for k in range(len(w)):
        out += w[k] * xp[..., k:k + n]
    return np.moveaxis(out, -1, axis)


def gaussian_filter(x, sigma, axes=(-2, -1), mode="reflect", cval: float = 0.0,
                    truncate: float = 4.0, order=0, radius=None) -> np.ndarray:
    """Separable Gaussian filter along ``axes`` (sigma scalar or one per axis; 0 skips an axis).

    ``order``, ``mode`` and ``radius`` are scalars or one per axis; each pass correlates with
    the reversed kernel (convolution with the derivative kernel).
    """
    y = np.asarray(x, dtype=np.float64)
    axes = (axes,) if np.isscalar(axes) else tuple(axes)

    def per_axis(v):
        return list(v) if isinstance(v, (list, tuple)) else [v] * len(axes)

    for ax, s, o, m, r in zip(axes, per_axis(sigma), per_axis(order), per_axis(mode),
                              per_axis(radius)):
        if s > 1e-15:
            w = gaussian_kernel1d(float(s), truncate, o, r)[::-1]
            y = correlate1d(y, w, ax % y.ndim, m, cval)
    return y


def gaussian_kernel_fft(shape, sigma, floor: float = 1e-12, spacing=None) -> np.ndarray:
    """G(f) = max(exp(-2 pi^2 sum_i sigma_i^2 f_i^2), floor) on the rfftn grid of ``shape``.

    f_i = fftfreq(n_i, d=spacing_i); default spacing_i = 1 / n_i (unit-length domain).
    """
    shape = tuple(int(n) for n in shape)
    sigmas = [float(sigma)] * len(shape) if np.isscalar(sigma) else [float(s) for s in sigma]
    if spacing is None:
        spacing = [1.0 / n for n in shape]
    elif np.isscalar(spacing):
        spacing = [float(spacing)] * len(shape)
    e = np.zeros([1] * len(shape))
    for i, (n, s) in enumerate(zip(shape, sigmas)):
        d = spacing[i]
        f = np.fft.rfftfreq(n, d) if i == len(shape) - 1 else np.fft.fftfreq(n, d)
        e = e + (s * f).reshape([-1 if j == i else 1 for j in range(len(shape))]) ** 2
    return np.maximum(np.exp(-2.0 * math.pi**2 * e), floor)


def periodic_gaussian_filter(x, sigma, axes=(-2, -1)) -> np.ndarray:
    """Circular convolution with the untruncated sampled Gaussian, periodised over each axis.

    h[n] = sum_j g(n + j N) with g(t) = exp(-t^2 / (2 sigma^2)) / sqrt(2 pi sigma^2); by
    Poisson summation its DFT is sum_k G(f - k), i.e. the continuous transform G plus aliases
    of size exp(-2 pi^2 sigma^2 (1 - |f|)^2). Computed by direct summation (no FFT).
    """
    y = np.asarray(x, dtype=np.float64)
    axes = (axes,) if np.isscalar(axes) else tuple(axes)
    sigmas = [float(sigma)] * len(axes) if np.isscalar(sigma) else [float(s) for s in sigma]
    for ax, s in zip(axes, sigmas):
        ax = ax % y.ndim
        n = y.shape[ax]
        t = np.arange(n, dtype=np.float64)
        reps = math.ceil(12 * s / n) + 1
        h = sum(np.exp(-0.5 * ((t + j * n) / s) ** 2) for j in range(-reps, reps + 1))
        h = h / math.sqrt(2 * math.pi * s * s)
        moved = np.moveaxis(y, ax, -1)
        out = np.zeros_like(moved)
        for m in range(n):
            out += h[m] * np.roll(moved, m, axis=-1)
        y = np.moveaxis(out, -1, ax)
    return y
