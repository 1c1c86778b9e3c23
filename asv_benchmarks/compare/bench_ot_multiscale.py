"""Multiscale Sinkhorn beside the exact solver and GeomLoss's multiscale backend (issue 18).

Problem (as ``tools/bench_multiscale_cpu.py``, smaller): N = M points in the unit cube,
d = 3, float32, ``x`` uniform and ``y = 0.5 (u + u^2)``; epsilon = 0.01 (cost |x - y|^2);
marginal L1 error 1e-3.

* ``arraygen:multiscale`` / ``arraygen:exact``: ``sinkhorn(..., tol=1e-3, method=...)``;
* ``peer:geomloss_multiscale``: ``SamplesLoss("sinkhorn", p=2, blur=sqrt(eps / 2),
  scaling=0.9, backend="multiscale")`` (GeomLoss's cost is |x - y|^2 / 2: the same problem),
  a fixed schedule with no tolerance.

``track_marginal_error`` reports every solver's marginal L1 error measured over all pairs in
float64 (GeomLoss's potentials doubled into arraygen's units), so times compare at a known
error. ``python -m asv_benchmarks.compare.bench_ot_multiscale`` prints the table.
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np

from ._tracking import tracking

C = tracking("common")

EPSILON, TOL = 0.01, 1e-3
PARAMS = ["arraygen:multiscale", "arraygen:exact", "peer:geomloss_multiscale"]
SIZES = [10_000, 20_000]


def problem(n: int):
    rng = np.random.default_rng(0)
    x = rng.random((n, 3)).astype(np.float32)
    u = rng.random((n, 3))
    return x, (0.5 * (u + u * u)).astype(np.float32)


def marginal_error(x, y, f, g) -> float:
    """Exact L1 marginal error of the plan of (f, g), uniform weights, float64."""
    from arraygen.tiled import kernel_logsumexp

    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    f, g = np.asarray(f, np.float64), np.asarray(g, np.float64)
    n, m = x.shape[0], y.shape[0]
    rows = np.exp(f / EPSILON - math.log(n) + kernel_logsumexp(
        x64, y64, beta=1 / EPSILON, log_weights=g / EPSILON - math.log(m)))
    cols = np.exp(g / EPSILON - math.log(m) + kernel_logsumexp(
        y64, x64, beta=1 / EPSILON, log_weights=f / EPSILON - math.log(n)))
    return float(np.abs(rows - 1 / n).sum() + np.abs(cols - 1 / m).sum())


def solve(param: str, x, y):
    """(f, g) in arraygen's units."""
    if param.startswith("arraygen:"):
        from arraygen.sinkhorn import sinkhorn

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = sinkhorn(x, y, epsilon=EPSILON, tol=TOL, max_iter=5000,
                           method=param.split(":")[1])
        return res.f, res.g
    torch = C.require_module("torch")
    geomloss = C.require_module("geomloss")
    loss = geomloss.SamplesLoss("sinkhorn", p=2, blur=math.sqrt(EPSILON / 2), scaling=0.9,
                                debias=False, potentials=True, backend="multiscale")
    f, g = loss(torch.from_numpy(x), torch.from_numpy(y))
    return 2.0 * f.double().numpy().ravel(), 2.0 * g.double().numpy().ravel()


class MultiscaleSinkhorn:
    params = [PARAMS, SIZES]
    param_names = ["backend", "size"]
    timeout = 1800

    def setup(self, param, size):
        if param.startswith("peer:"):
            C.require_module("geomloss")
            C.require_module("pykeops")
        self.param = param
        self.x, self.y = problem(size)
        solve(param, self.x[:2000], self.y[:2000])   # compile (numba / KeOps) untimed

    def time_sinkhorn(self, param, size):
        solve(self.param, self.x, self.y)

    def track_marginal_error(self, param, size):
        return marginal_error(self.x, self.y, *solve(self.param, self.x, self.y))

    track_marginal_error.unit = "L1"


def main() -> None:
    for n in SIZES:
        x, y = problem(n)
        for param in PARAMS:
            try:
                solve(param, x[:2000], y[:2000])
            except NotImplementedError as exc:
                print(f"{param}: skipped ({exc})")
                continue
            start = time.perf_counter()
            f, g = solve(param, x, y)
            sec = time.perf_counter() - start
            print(f"N = {n:6d} {param:26s} {sec:8.2f} s  error {marginal_error(x, y, f, g):.2e}")


if __name__ == "__main__":
    main()
