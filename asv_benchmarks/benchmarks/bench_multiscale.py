"""Multiscale and truncated algorithms (tracking, issue 18): ``sinkhorn(method="multiscale")``
and ``DiffusionMap(truncate=)``.

``MultiscaleSinkhorn``: N = M points in the unit cube, d = 3, float32, ``x`` uniform and
``y = 0.5 (u + u^2)`` (the problem of ``asv_benchmarks/compare/bench_ot_multiscale.py``),
epsilon = 0.01 on C = |x - y|^2, uniform weights, ``tol = 1e-3``, over namespace x method x
size (``method = "exact"``, the baseline of the same run, only at the smallest size on the CPU).
``track_marginal_error`` is the marginal L1 error of the returned potentials measured here over
ALL N M pairs in float64 (an independent check of the solver's own exact pass);
``track_fraction`` is ``res.info["fraction"]`` (point pairs computed at full resolution / those
of the dense solver; 1.0 for ``"exact"``); ``track_iterations`` counts iterations (coarse level
included).

``DiffusionMapTruncate``: N points uniform in a 2 x 1 rectangle, epsilon = 0.01 (kernel width
0.1, small against the rectangle, so most cluster pairs are negligible), alpha = 0.5, 4
nontrivial eigenpairs, over namespace x size x truncate (``None``: the exact fit, the baseline;
on the CPU only at N = 1_000). ``track_fraction`` / ``track_mass_bound`` come from
``truncation_``. ``DiffusionMapTruncateAccuracy.track_eig_err`` is the largest
|lambda - lambda_ref| against a dense float64 eigendecomposition of the exact operator at
N = 1_000 (it includes the truncation error, at most about ``mass_bound``).

Parameters ``"auto@<namespace>"``: the kernel backend is picked automatically. Sizes above
50_000 run only with a GPU namespace. Every timed call is synchronised; ``setup`` runs the whole
solve once (warm-up: kernel compilation) and the ``track_`` methods read that result.
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np

from .common import on_gpu, split, synchronize, to_namespace, with_gpu
from .common import repeat, rounds  # noqa: F401 (asv timing attributes)

PARAMS = with_gpu(["auto@numpy"], ["auto@torch:cuda", "auto@cupy"])

def _skip_size(ns, size: int, baseline: bool, cpu_size: int, what: str) -> None:
    """NotImplementedError (asv skips the row) for sizes above 50_000 without a GPU and, for the
    exact ``baseline``, sizes above ``cpu_size`` on the CPU or 50_000 on a GPU."""
    gpu = on_gpu(ns)
    if size > 50_000 and not gpu:
        raise NotImplementedError("N = 1_000_000 only on GPU")
    if baseline and size > (50_000 if gpu else cpu_size):
        raise NotImplementedError(f"{what} is timed at N = {cpu_size:_} on CPU, up to 50_000 "
                                  f"on GPU")


# -- Sinkhorn ------------------------------------------------------------------------------

EPSILON, TOL = 0.01, 1e-3
SINKHORN_SIZES = [2_000, 50_000, 1_000_000]
METHODS = ["multiscale", "exact"]


@functools.cache
def transport_problem(n: int) -> tuple[np.ndarray, np.ndarray]:
    gen = np.random.default_rng(0)
    x = gen.random((n, 3)).astype(np.float32)
    u = gen.random((n, 3))
    return x, (0.5 * (u + u * u)).astype(np.float32)


def _namespace(a):
    import array_api_compat

    return array_api_compat.array_namespace(a)


def exact_marginal_error(x, y, f, g) -> float:
    """L1 marginal error of the plan of (f, g) over all pairs (uniform weights), float64
    (float32 where the namespace has no float64)."""
    from arraygen.tiled import kernel_logsumexp

    xp = _namespace(x)
    dt = getattr(xp, "float64", None) or xp.float32
    x, y, f, g = (xp.astype(a, dt) for a in (x, y, f, g))
    n, m = x.shape[0], y.shape[0]
    rows = xp.exp(f / EPSILON - math.log(n) + kernel_logsumexp(
        x, y, beta=1 / EPSILON, log_weights=g / EPSILON - math.log(m)))
    cols = xp.exp(g / EPSILON - math.log(m) + kernel_logsumexp(
        y, x, beta=1 / EPSILON, log_weights=f / EPSILON - math.log(n)))
    err = xp.sum(xp.abs(rows - 1 / n)) + xp.sum(xp.abs(cols - 1 / m))
    return float(err)


class MultiscaleSinkhorn:
    params = [PARAMS, METHODS, SINKHORN_SIZES]
    param_names = ["backend", "method", "size"]
    timeout = 900

    def setup(self, param, method, size):
        _, ns = split(param)
        _skip_size(ns, size, method == "exact", SINKHORN_SIZES[0], "the exact baseline")
        self.ns, self.method = ns, method
        x, y = transport_problem(size)
        self.x, self.y = to_namespace(x, ns), to_namespace(y, ns)
        self.res = self.run()  # warm-up (compiles) and the result the track_ methods read

    def run(self):
        from arraygen.sinkhorn import sinkhorn

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = sinkhorn(self.x, self.y, epsilon=EPSILON, tol=TOL, max_iter=5000,
                           method=self.method)
        synchronize(self.ns)
        return res

    def time_sinkhorn(self, param, method, size):
        self.run()

    def track_marginal_error(self, param, method, size):
        return exact_marginal_error(self.x, self.y, self.res.f, self.res.g)

    track_marginal_error.unit = "L1"

    def track_fraction(self, param, method, size):
        info = self.res.info
        return 1.0 if info is None else float(info["fraction"])

    track_fraction.unit = "fraction of pairs"

    def track_iterations(self, param, method, size):
        return int(self.res.n_iter)

    track_iterations.unit = "iterations"


# -- DiffusionMap --------------------------------------------------------------------------

DMAP_EPSILON = 0.01
K = 4
DMAP_SIZES = [1_000, 20_000, 1_000_000]
TRUNCATES = [None, 3.0, 4.0]


@functools.cache
def rectangle(n: int) -> np.ndarray:
    """N points uniform in [0, 2] x [0, 1], float64 (float32 above 50_000)."""
    x = np.random.default_rng(0).random((n, 2)) * np.array([2.0, 1.0])
    return x.astype(np.float32) if n > 50_000 else x


def dense_spectrum(x: np.ndarray, eps: float, alpha: float = 0.5) -> np.ndarray:
    """The K + 1 largest eigenvalues of D^-1/2 K_alpha D^-1/2, K = exp(-|x-y|^2 / eps),
    float64 dense."""
    x = x.astype(np.float64)
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    k = np.exp(-d2 / eps)
    w = k.sum(1) ** -alpha
    k = w[:, None] * k * w[None, :]
    s = k.sum(1) ** -0.5
    return np.linalg.eigvalsh(s[:, None] * k * s[None, :])[::-1][:K + 1]


class _DmapBase:
    params = [PARAMS, DMAP_SIZES, TRUNCATES]
    param_names = ["backend", "size", "truncate"]
    timeout = 900

    def setup(self, param, size, truncate):
        _, ns = split(param)
        _skip_size(ns, size, truncate is None, DMAP_SIZES[0], "the exact fit")
        self.ns, self.truncate = ns, truncate
        self.x = to_namespace(rectangle(size), ns)
        self.dm = self.run()  # warm-up (compiles) and the fit the track_ methods read

    def run(self):
        from arraygen.dmap import DiffusionMap

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dm = DiffusionMap(n_components=K, alpha=0.5, epsilon=DMAP_EPSILON, rng=0,
                              truncate=self.truncate).fit(self.x)
        synchronize(self.ns)
        return dm


class DiffusionMapTruncate(_DmapBase):
    def time_fit(self, param, size, truncate):
        self.run()

    def track_fraction(self, param, size, truncate):
        rep = self.dm.truncation_
        return 1.0 if rep is None else float(rep.fraction)

    track_fraction.unit = "fraction of pairs"

    def track_mass_bound(self, param, size, truncate):
        rep = self.dm.truncation_
        return 0.0 if rep is None else float(rep.mass_bound)

    track_mass_bound.unit = "skipped / kept mass"


class DiffusionMapTruncateAccuracy(_DmapBase):
    """Eigenvalue error against the dense float64 spectrum (N = 1_000: O(N^3) reference)."""

    params = [PARAMS, DMAP_SIZES[:1], TRUNCATES]

    def track_eig_err(self, param, size, truncate):
        from arraygen.testing import to_numpy

        got = np.asarray(to_numpy(self.dm.eigenvalues_), dtype=np.float64)
        return float(np.max(np.abs(got - dense_spectrum(rectangle(size), DMAP_EPSILON))))

    track_eig_err.unit = "abs error"
