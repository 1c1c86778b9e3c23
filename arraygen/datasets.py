"""Synthetic and bundled data sets for tests, demos and benchmarks.

Every generator takes ``rng=`` (int seed or :class:`arraygen.random.Key`: Philox streams, the
same numbers on every namespace and device; or a ``numpy.random.Generator``, drawn on the host)
and ``xp``/``device``/``dtype`` for where the result lives (default NumPy float64).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import numpy as np

from . import _array_api as aa
from . import random as _random
from ._validation import check_int

__all__ = ["BinaryImages", "GaussianMixture", "binarized_digits", "load_binary_images",
           "swiss_roll", "two_moons"]


def _draw(gen, kind: str, shape, step: int, xp, device, dtype):
    """``kind`` in {"uniform", "normal"} draws of ``shape`` from stream ``step`` of ``gen``."""
    if isinstance(gen, np.random.Generator):
        host = gen.random(shape) if kind == "uniform" else gen.standard_normal(shape)
        np_dtype = np.float32 if dtype == xp.float32 else np.float64
        return xp.asarray(host.astype(np_dtype), device=device)
    fn = _random.uniform if kind == "uniform" else _random.normal
    return fn(gen.advance(step), shape, dtype=dtype, xp=xp, device=device)


def _setup(n, noise, rng, xp, dtype):
    n = check_int(n, "n", minimum=1)
    noise = aa.finite_scalar(noise, "noise", nonnegative=True)
    ns = aa.namespace_for(np if xp is None else xp)
    if dtype is None:
        dtype = ns.float64
    elif isinstance(dtype, str):
        dtype = getattr(ns, dtype)
    if dtype not in (ns.float32, ns.float64):
        raise ValueError(f"`dtype` must be float32 or float64; got {dtype}")
    return int(n), noise, _random.as_key(rng), ns, dtype


def swiss_roll(n: int, *, noise: float = 0.05, rng: Any = None, xp: Any = None,
               device: Any = None, dtype: Any = None):
    r"""Noisy swiss roll in 3-D (scikit-learn's ``make_swiss_roll`` convention).

    .. math::

        t = \tfrac{3\pi}{2}(1 + 2u),\quad h = 21 v,\quad
        x = (t\cos t,\; h,\; t\sin t) + \mathrm{noise}\cdot z

    with :math:`u, v \sim U(0, 1)` and :math:`z \sim N(0, I_3)`.

    Parameters
    ----------
    n : int
        Number of points.
    noise : float
        Standard deviation of the additive Gaussian noise (>= 0).
    rng : int, Key or numpy.random.Generator, optional
    xp, device, dtype : optional
        Namespace, device and float dtype of the outputs (NumPy float64 by default).

    Returns
    -------
    points : array, shape (n, 3)
    t : array, shape (n,)
        The roll parameter (angle) of each point, in :math:`[1.5\pi, 4.5\pi]`.
    """
    n, noise, gen, ns, dtype = _setup(n, noise, rng, xp, dtype)
    u = _draw(gen, "uniform", (n,), 0, ns, device, dtype)
    v = _draw(gen, "uniform", (n,), 1, ns, device, dtype)
    t = 1.5 * math.pi * (1.0 + 2.0 * u)
    pts = ns.stack([t * ns.cos(t), 21.0 * v, t * ns.sin(t)], axis=1)
    if noise > 0:
        pts = pts + noise * _draw(gen, "normal", (n, 3), 2, ns, device, dtype)
    return pts, t


def two_moons(n: int, *, noise: float = 0.05, rng: Any = None, xp: Any = None,
              device: Any = None, dtype: Any = None):
    r"""Two interleaving half circles in 2-D (scikit-learn's ``make_moons`` convention).

    Points ``0 .. ceil(n/2)-1`` lie on the upper moon :math:`(\cos\theta, \sin\theta)`, the rest
    on the lower :math:`(1 - \cos\theta, 1/2 - \sin\theta)`, with :math:`\theta \sim U(0, \pi)`,
    plus ``noise`` times standard normal noise.

    Returns
    -------
    points : array, shape (n, 2)
    labels : array, shape (n,), int64
        0 for the upper moon, 1 for the lower.
    """
    n, noise, gen, ns, dtype = _setup(n, noise, rng, xp, dtype)
    n_up = (n + 1) // 2
    theta = math.pi * _draw(gen, "uniform", (n,), 0, ns, device, dtype)
    labels = ns.astype(ns.arange(n, device=device) >= n_up, ns.int64)
    lower = ns.astype(labels, dtype)
    px = ns.cos(theta) * (1.0 - 2.0 * lower) + lower
    py = ns.sin(theta) * (1.0 - 2.0 * lower) + 0.5 * lower
    pts = ns.stack([px, py], axis=1)
    if noise > 0:
        pts = pts + noise * _draw(gen, "normal", (n, 2), 1, ns, device, dtype)
    return pts, labels


class BinaryImages(NamedTuple):
    """A train/test split of binary images: {0, 1} uint8 arrays of shape (N, H, W) and labels."""

    train: np.ndarray
    train_labels: np.ndarray
    test: np.ndarray
    test_labels: np.ndarray


@functools.lru_cache(maxsize=4)
def _upsampled_digits(size: int, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The binarised digits and labels (read-only; callers index them, which copies)."""
    from scipy import ndimage
    from sklearn.datasets import load_digits

    digits = load_digits()
    intensity = digits.images.astype(np.float64) / 16.0
    up = ndimage.zoom(intensity, (1, size / 8, size / 8), order=1, grid_mode=True, mode="nearest")
    images = (up > threshold).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def binarized_digits(size: int = 16, *, threshold: float = 0.4, test_fraction: float = 0.2,
                     seed: int = 0) -> BinaryImages:
    """scikit-learn's bundled 8x8 digits, upsampled to ``size x size`` and binarised.

    Each image (intensities 0..16, scaled to [0, 1]) is upsampled by linear interpolation
    (``scipy.ndimage.zoom(order=1, grid_mode=True, mode="nearest")``, pixels as areas) and set
    to 1 where the interpolated intensity exceeds ``threshold``. The 1797 images are split at
    random (``numpy.random.default_rng(seed)``) into train and test sets.

    Parameters
    ----------
    size : {16, 32}
        Side of the output images.
    threshold : float
        Intensity threshold in (0, 1).
    test_fraction : float
        Fraction of the images held out, in (0, 1).
    seed : int
        Seed of the split.

    Returns
    -------
    BinaryImages
        ``train`` (N_train, size, size) and ``test`` (N_test, size, size) uint8 in {0, 1},
        ``train_labels`` and ``test_labels`` int64 digits 0..9.
    """
    if size not in (16, 32):
        raise ValueError(f"`size` must be 16 or 32; got {size!r}")
    threshold = float(threshold)
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"`threshold` must be in (0, 1); got {threshold}")
    test_fraction = float(test_fraction)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"`test_fraction` must be in (0, 1); got {test_fraction}")
    images, labels = _upsampled_digits(size, threshold)
    order = np.random.default_rng(seed).permutation(images.shape[0])
    n_test = max(1, round(test_fraction * images.shape[0]))
    test, train = order[:n_test], order[n_test:]
    return BinaryImages(images[train], labels[train], images[test], labels[test])


def load_binary_images(path, *, key: str | None = None) -> np.ndarray:
    """Binary images from a user ``.npz`` file, validated to hold only 0 and 1.

    Parameters
    ----------
    path : str or path-like
        An ``.npz`` archive (``numpy.savez``).
    key : str, optional
        The array to read; default: the only array in the file, else ``"images"``.

    Returns
    -------
    numpy.ndarray
        uint8 array of shape (N, H, W) or (N, C, H, W) with values in {0, 1}.

    Raises
    ------
    ValueError
        If the array is not 3-D or 4-D, is empty, or holds values other than 0 and 1 (bool,
        integer and float arrays are accepted when every value is exactly 0 or 1).
    """
    with np.load(path, allow_pickle=False) as archive:
        names = list(archive.files)
        if key is None:
            if len(names) == 1:
                key = names[0]
            elif "images" in names:
                key = "images"
            else:
                raise ValueError(f"`key` must name one of the arrays {names} in {path!s}")
        if key not in names:
            raise ValueError(f"`key` {key!r} is not in {path!s}; arrays: {names}")
        images = archive[key]
    if images.ndim not in (3, 4) or images.size == 0:
        raise ValueError(f"images in {path!s} must be a non-empty (N, H, W) or (N, C, H, W) "
                         f"array; got shape {images.shape}")
    if images.dtype == np.bool_:
        return images.astype(np.uint8)
    if not (np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)):
        raise TypeError(f"images in {path!s} must be bool, integer or float; got {images.dtype}")
    bad = ~((images == 0) | (images == 1))
    if bad.any():
        values = np.unique(images[bad])[:5]
        raise ValueError(f"images in {path!s} must be binary (values 0 and 1 only); found "
                         f"{int(bad.sum())} other values, e.g. {values.tolist()}")
    return images.astype(np.uint8)


class GaussianMixture:
    r"""A Gaussian mixture with exact samples, densities and scores of its noised versions.

    :math:`p(x) = \sum_k w_k N(x; \mu_k, S_k)`. For any Gaussian path
    ``x = a x_1 + b z`` (``x_1 ~ p``, ``z ~ N(0, I)``) the law of ``x`` is again a mixture,
    with means :math:`a\mu_k` and covariances :math:`C_k = a^2 S_k + b^2 I`, so its score
    and posterior means are exact:

    .. math::

        \nabla\log p(x) = -\sum_k r_k(x)\, C_k^{-1}(x - a\mu_k),\quad
        E[x_1\mid x] = \sum_k r_k(x)\,(\mu_k + a S_k C_k^{-1}(x - a\mu_k)),\quad
        E[z\mid x] = b \sum_k r_k(x)\, C_k^{-1}(x - a\mu_k)

    with responsibilities :math:`r_k \propto w_k N(x; a\mu_k, C_k)`. The VP diffusion uses
    ``a = sqrt(alpha_bar(t))``, ``b = sqrt(1 - alpha_bar(t))``; flow matching uses ``a = t``,
    ``b = 1 - t``. Everything is computed in float64 through the eigendecompositions of the
    :math:`S_k` (taken once) and returned in the query's namespace, device and float dtype.

    Parameters
    ----------
    means : array, shape (K, d)
    covariances : array, optional
        ``(K, d, d)`` symmetric positive semi-definite, ``(K, d)`` diagonals, ``(K,)``
        isotropic variances, or None (identity).
    weights : array, shape (K,), optional
        Non-negative, summing to 1 (default uniform).
    """

    def __init__(self, means, covariances=None, weights=None):
        xp = aa.array_namespace(means=means, covariances=covariances, weights=weights)
        aa.check_same_device(means=means, covariances=covariances, weights=weights)
        if means.ndim != 2 or means.shape[0] < 1 or means.shape[1] < 1:
            raise ValueError(f"`means` must have shape (K, d) with K, d >= 1; got shape "
                             f"{tuple(means.shape)}")
        k, d = int(means.shape[0]), int(means.shape[1])
        self.xp, self.device = xp, aa.device(means)
        f64 = xp.float64
        self.means = xp.astype(means, f64)
        if not aa.all_finite(xp, self.means):
            raise ValueError("`means` contains non-finite values")
        eye = xp.eye(d, dtype=f64, device=self.device)
        if covariances is None:
            cov = xp.broadcast_to(eye, (k, d, d))
        else:
            c = xp.astype(covariances, f64)
            if tuple(c.shape) == (k,):
                cov = c[:, None, None] * eye
            elif tuple(c.shape) == (k, d):
                cov = c[:, :, None] * eye
            elif tuple(c.shape) == (k, d, d):
                cov = c
            else:
                raise ValueError(f"`covariances` must have shape ({k},), ({k}, {d}) or "
                                 f"({k}, {d}, {d}) for `means` of shape ({k}, {d}); got shape "
                                 f"{tuple(c.shape)}")
            if not aa.all_finite(xp, cov):
                raise ValueError("`covariances` contains non-finite values")
            asym = float(xp.max(xp.abs(cov - xp.matrix_transpose(cov))))
            if asym > 1e-8 * max(1.0, float(xp.max(xp.abs(cov)))):
                raise ValueError(f"`covariances` must be symmetric; max |S - S^T| = {asym:.3g}")
        self.covariances = xp.asarray(cov, copy=True)
        lam, vec = xp.linalg.eigh(0.5 * (self.covariances + xp.matrix_transpose(self.covariances)))
        if float(xp.min(lam)) < -1e-10 * max(1.0, float(xp.max(xp.abs(lam)))):
            raise ValueError(f"`covariances` must be positive semi-definite; smallest "
                             f"eigenvalue {float(xp.min(lam)):.3g}")
        self._lam = xp.maximum(lam, xp.zeros_like(lam))
        self._vec = vec
        if weights is None:
            w = xp.full((k,), 1.0 / k, dtype=f64, device=self.device)
        else:
            w = xp.astype(weights, f64)
            if tuple(w.shape) != (k,):
                raise ValueError(f"`weights` must have shape ({k},); got shape "
                                 f"{tuple(w.shape)}")
            if not aa.all_finite(xp, w) or bool(xp.any(w < 0)):
                raise ValueError("`weights` must be finite and non-negative")
            total = float(xp.sum(w))
            if abs(total - 1.0) > 1e-6:
                raise ValueError(f"`weights` must sum to 1; got sum {total!r}")
            w = w / total
        self.weights = w
        self._log_w = xp.where(w > 0, xp.log(xp.where(w > 0, w, xp.ones_like(w))),
                               xp.full_like(w, -math.inf))

    @property
    def n_components(self) -> int:
        return int(self.means.shape[0])

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def mean(self):
        """Mixture mean :math:`\\sum_k w_k \\mu_k`, shape (d,), float64."""
        return self.xp.sum(self.weights[:, None] * self.means, axis=0)

    def covariance(self):
        """Mixture covariance :math:`\\sum_k w_k (S_k + \\mu_k\\mu_k^T) - m m^T`, (d, d)."""
        xp = self.xp
        m = self.mean()
        second = xp.sum(self.weights[:, None, None]
                        * (self.covariances + self.means[:, :, None] * self.means[:, None, :]),
                        axis=0)
        return second - m[:, None] * m[None, :]

    def noised(self, alpha_bar) -> GaussianMixture:
        """The law of ``sqrt(alpha_bar) x + sqrt(1 - alpha_bar) z``: another mixture."""
        ab = aa.finite_scalar(alpha_bar, "alpha_bar")
        if not 0.0 <= ab <= 1.0:
            raise ValueError(f"`alpha_bar` must be in [0, 1]; got {ab}")
        xp = self.xp
        eye = xp.eye(self.dim, dtype=xp.float64, device=self.device)
        return GaussianMixture(math.sqrt(ab) * self.means, ab * self.covariances + (1 - ab) * eye,
                               self.weights)

    # -- sampling -------------------------------------------------------------------------------
    def sample(self, n: int, rng: Any = None, *, dtype: Any = None):
        """``n`` exact samples, shape (n, d), in the namespace and on the device of ``means``.

        Components come from one uniform per sample (stream 0 of ``rng``), the Gaussian
        part from ``d`` normals per sample (stream 1): ``x = mu_k + U_k diag(sqrt(lam_k)) z``.
        """
        n = check_int(n, "n", minimum=1)
        xp = self.xp
        dtype = xp.float64 if dtype is None else (getattr(xp, dtype) if isinstance(dtype, str)
                                                  else dtype)
        gen = _random.as_key(rng)
        n, d, k = int(n), self.dim, self.n_components
        u = _draw(gen, "uniform", (n,), 0, xp, self.device, xp.float64)
        z = _draw(gen, "normal", (n, d), 1, xp, self.device, xp.float64)
        cum = xp.cumulative_sum(self.weights)
        comp = xp.sum(xp.astype(u[:, None] > cum[None, : k - 1], xp.int64), axis=1)
        comp = xp.minimum(comp, xp.full_like(comp, k - 1))
        mu = xp.take(self.means, comp, axis=0)
        scale = xp.take(xp.sqrt(self._lam), comp, axis=0)
        vec = xp.take(self._vec, comp, axis=0)
        x = mu + xp.sum(vec * (scale * z)[:, None, :], axis=2)
        return xp.astype(x, dtype)

    # -- exact posterior quantities on a Gaussian path ---------------------------------------------
    def _path(self, x, a, b):
        """Responsibilities and C_k^{-1}(x - a mu_k); ``a``, ``b`` floats or (B,) float64."""
        xp = self.xp
        d = self.dim
        if x.ndim != 2 or x.shape[1] != d:
            raise ValueError(f"`x` must have shape (B, {d}); got shape {tuple(x.shape)}")
        x64 = xp.astype(x, xp.float64)
        if aa.is_array(a):
            a3, b3 = xp.reshape(a, (1, -1, 1)), xp.reshape(b, (1, -1, 1))
        else:
            a3, b3 = a, b
        diff = x64[None, :, :] - a3 * self.means[:, None, :]            # (K, B, d)
        z = xp.matmul(diff, self._vec)                                    # eigen-coordinates
        den = (a3 * a3) * self._lam[:, None, :] + b3 * b3                # (K, B, d)
        zc = z / den
        quad = xp.sum(z * zc, axis=2)
        logdet = xp.sum(xp.log(den), axis=2)
        logp = self._log_w[:, None] - 0.5 * (quad + logdet + d * math.log(2 * math.pi))
        mx = xp.max(logp, axis=0)
        p = xp.exp(logp - mx[None, :])
        tot = xp.sum(p, axis=0)
        resp = p / tot[None, :]                                           # (K, B)
        cinv = xp.matmul(zc, xp.matrix_transpose(self._vec))              # C^{-1}(x - a mu)
        s_cinv = xp.matmul(zc * self._lam[:, None, :], xp.matrix_transpose(self._vec))
        return resp, cinv, s_cinv, mx + xp.log(tot)

    def _ab(self, t, schedule, like):
        if schedule is None or not hasattr(schedule, "alpha_bar"):
            raise TypeError(f"`schedule` must be a NoiseSchedule; got {type(schedule).__name__}")
        xp = self.xp
        if aa.is_array(t):
            t64 = xp.astype(t, xp.float64)
            if t64.ndim == 0:
                t64 = xp.reshape(t64, (1,))
            if t64.shape[0] == 1 and like.shape[0] != 1:
                t64 = xp.broadcast_to(t64, (like.shape[0],))
            if tuple(t64.shape) != (like.shape[0],):
                raise ValueError(f"`t` must be a scalar or have shape ({like.shape[0]},); got "
                                 f"shape {tuple(t.shape)}")
            return schedule.alpha(t64), schedule.sigma(t64)
        return schedule.alpha(t), schedule.sigma(t)

    def _out(self, value, x):
        xp = self.xp
        dt = x.dtype if xp.isdtype(x.dtype, "real floating") else xp.float64
        return xp.astype(value, dt)

    def score(self, x, t, schedule):
        r"""Exact score :math:`\nabla\log p_t(x)` of the VP-noised mixture at time ``t``.

        Parameters
        ----------
        x : array, shape (B, d)
        t : float or array of shape () or (B,)
        schedule : NoiseSchedule

        Returns
        -------
        array, shape (B, d), in ``x``'s float dtype.
        """
        a, b = self._ab(t, schedule, x)
        resp, cinv, _, _ = self._path(x, a, b)
        return self._out(-self.xp.sum(resp[:, :, None] * cinv, axis=0), x)

    def denoiser(self, x, t, schedule):
        r"""Exact posterior mean :math:`E[x_0 \mid x_t = x]` (t = 0 data), shape (B, d)."""
        a, b = self._ab(t, schedule, x)
        resp, _, s_cinv, _ = self._path(x, a, b)
        xp = self.xp
        a3 = xp.reshape(a, (1, -1, 1)) if aa.is_array(a) else a
        comp = self.means[:, None, :] + a3 * s_cinv
        return self._out(xp.sum(resp[:, :, None] * comp, axis=0), x)

    def eps(self, x, t, schedule):
        r"""Exact noise prediction :math:`E[z \mid x_t = x] = -\sigma\nabla\log p_t(x)`."""
        a, b = self._ab(t, schedule, x)
        resp, cinv, _, _ = self._path(x, a, b)
        xp = self.xp
        b2 = xp.reshape(b, (-1, 1)) if aa.is_array(b) else b
        return self._out(b2 * xp.sum(resp[:, :, None] * cinv, axis=0), x)

    def velocity(self, x, t):
        r"""Exact flow-matching velocity :math:`E[x_1 - x_0 \mid x_t = x]`.

        Linear path ``x_t = (1 - t) x_0 + t x_1`` with t = 0 noise (``x_0 ~ N(0, I)``) and
        t = 1 data (``x_1`` from this mixture); ``t`` a float or (B,) array in [0, 1].
        """
        xp = self.xp
        if aa.is_array(t):
            tt = xp.astype(t, xp.float64)
            tt = xp.broadcast_to(xp.reshape(tt, (-1,)), (x.shape[0],))
            a, b = tt, 1.0 - tt
            a3, b2 = xp.reshape(a, (1, -1, 1)), xp.reshape(b, (-1, 1))
        else:
            tt = aa.finite_scalar(t, "t")
            if not 0.0 <= tt <= 1.0:
                raise ValueError(f"`t` must be in [0, 1]; got {tt}")
            a, b = tt, 1.0 - tt
            a3, b2 = a, b
        resp, cinv, s_cinv, _ = self._path(x, a, b)
        x1 = xp.sum(resp[:, :, None] * (self.means[:, None, :] + a3 * s_cinv), axis=0)
        x0 = b2 * xp.sum(resp[:, :, None] * cinv, axis=0)
        return self._out(x1 - x0, x)

    def log_prob(self, x):
        """Log-density of the (clean) mixture at ``x`` (B, d); needs positive definite S_k."""
        _, _, _, lse = self._path(x, 1.0, 0.0)
        return self._out(lse, x)

    def model(self, schedule, prediction: str = "score"):
        """``model(x, t)`` for the samplers: the exact ``score``, ``epsilon`` or ``x0``."""
        fns = {"score": self.score, "epsilon": self.eps, "x0": self.denoiser}
        if prediction not in fns:
            raise ValueError(f"`prediction` must be one of {tuple(fns)}; got {prediction!r}")
        fn = fns[prediction]
        return lambda x, t: fn(x, t, schedule)
