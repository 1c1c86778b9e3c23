"""Entropic OT (tracking): arraygen's tiled log-domain ``sinkhorn`` in its three modes.

Problem: x ~ N(0, I_2), y ~ N(2, 0.25 I_2), N = M, uniform weights, epsilon = 0.05 on
C = |x - y|^2, float64, run to a marginal L1 error ``||P1 - a||_1 + ||P^T1 - b||_1 <= 1e-6``.
``backend`` parameters (automatic kernel backend: numba_cpu on NumPy input):

* ``fast``: ``sinkhorn(..., scaling=0.5, relaxation="auto", mixed_precision=True)``;
* ``scaling``: ``sinkhorn(..., scaling=0.5)`` (epsilon-scaling only);
* ``plain``: no epsilon-scaling, no over-relaxation (N = 256 only).

N = 256 is the mini-batch size of flow matching (per-call overhead dominates); N = 5000 is
compute-bound.

``track_iterations`` counts iterations; ``track_cost_rel_err`` is |cost - ref| / ref against
POT float64 Sinkhorn run to stopThr = 1e-10 (the oracle; skipped without POT). ``peakmem_`` at
N = M = 50_000 shows the O(N + M) memory (the dense plan would need 20 GB). POT, its log-domain
solver and GeomLoss are timed in ``asv_benchmarks/compare/bench_ot.py``.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np

from .common import require_module
from .common import repeat, rounds  # noqa: F401 (asv timing attributes)

EPSILON = 0.05
TOL = 1e-6
SIZES = [256, 5_000]
MODES = {"fast": {"scaling": 0.5, "relaxation": "auto", "mixed_precision": True},
         "scaling": {"scaling": 0.5}, "plain": {}}


@functools.cache
def problem(n: int, seed: int = 0):
    """x ~ N(0, I_2), y ~ N(2, 0.5^2 I_2), float64."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 2)), rng.normal(2.0, 0.5, size=(n, 2))


def run_arraygen(n: int, mode: str, *, max_iter: int = 5000):
    from arraygen import sinkhorn

    x, y = problem(n)
    return sinkhorn(x, y, epsilon=EPSILON, tol=TOL, max_iter=max_iter, **MODES[mode])


def warm_up() -> None:
    """Compile the float32 and float64 kernels (a 3-iteration run on 64 points)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_arraygen(64, "fast", max_iter=3)
        run_arraygen(64, "plain", max_iter=3)


@functools.cache
def reference_cost(n: int) -> float:
    """<C, P> of POT float64 Sinkhorn run to stopThr = 1e-10 (the accuracy oracle)."""
    ot = require_module("ot", "pot")
    x, y = problem(n)
    a = np.full(n, 1.0 / n)
    cmat = ot.dist(x, y)
    plan = ot.sinkhorn(a, a, cmat, reg=EPSILON, stopThr=1e-10, numItermax=100_000)
    return float((plan * cmat).sum())


class Sinkhorn:
    params = [list(MODES), SIZES]
    param_names = ["mode", "size"]
    timeout = 600

    def setup(self, mode, size):
        if mode == "plain" and size > 256:
            raise NotImplementedError("plain Sinkhorn is timed at N = 256")
        self.mode, self.size = mode, size
        warm_up()
        problem(size)

    def time_sinkhorn(self, mode, size):
        run_arraygen(self.size, self.mode)

    def track_iterations(self, mode, size):
        return run_arraygen(self.size, self.mode).n_iter

    track_iterations.unit = "iterations"


class SinkhornAccuracy:
    params = [list(MODES), [256]]
    param_names = ["mode", "size"]
    timeout = 600

    def setup(self, mode, size):
        reference_cost(size)
        warm_up()

    def track_cost_rel_err(self, mode, size):
        res = run_arraygen(size, mode)
        return abs(res.cost - reference_cost(size)) / reference_cost(size)

    track_cost_rel_err.unit = "relative"


class SinkhornMemory:
    """Two iterations (plus the cost pass): peak memory stays O(N + M)."""

    params = [[5_000, 50_000]]
    param_names = ["size"]
    timeout = 600

    def setup(self, size):
        warm_up()
        problem(size)

    def peakmem_sinkhorn(self, size):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run_arraygen(size, "plain", max_iter=2)
