"""Gibbs hot path (tracking): block Gibbs sweeps of a periodic nearest-neighbour Ising model.

Model: L x L torus, per-site couplings J = 0.4 + 0.1 N(0, 1), bias 0.1 N(0, 1), one chain,
``SWEEPS`` sweeps per timed call. ``track_updates_per_s`` reports spin updates per second (best
of 3 back-to-back calls). 4096^2 runs only with a GPU namespace; the Array-API path on the CPU
up to 256^2. The peers (NumPy/torch checkerboard, thrml) are in
``asv_benchmarks/compare/bench_gibbs.py``.
"""

from __future__ import annotations

import time

import numpy as np

from .common import on_gpu, require_backend, split, synchronize, to_namespace, with_gpu
from .common import repeat, rounds  # noqa: F401 (asv timing attributes)

SIZES = [64, 256, 1024, 4096]
SWEEPS = 10
PARAMS = with_gpu(["numba_cpu@numpy", "array_api@numpy", "array_api@torch:cpu"],
                  ["cupy@cupy", "triton@torch:cuda", "numba_cuda@cupy", "array_api@torch:cuda"])


def host_model(size):
    """Couplings (2, 1, L, L), bias (1, L, L) float32 and int8 spins (1, 1, L, L)."""
    gen = np.random.default_rng(0)
    j = (0.4 + 0.1 * gen.standard_normal((2, 1, size, size))).astype(np.float32)
    h = (0.1 * gen.standard_normal((1, size, size))).astype(np.float32)
    s = np.where(gen.random((1, 1, size, size)) < 0.5, 1, -1).astype(np.int8)
    return j, h, s


def best_rate(run, size: int, repeats: int = 3) -> float:
    """Spin updates per second of ``run`` (``SWEEPS`` sweeps of L^2 sites), best of ``repeats``."""
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return SWEEPS * size * size / best


class GibbsSweeps:
    params = [PARAMS, SIZES]
    param_names = ["backend", "size"]
    timeout = 600

    def setup(self, param, size):
        backend, ns = split(param)
        if size > 1024 and not on_gpu(ns):
            raise NotImplementedError("4096^2 only on GPU")
        if backend == "array_api" and size > 256 and not on_gpu(ns):
            raise NotImplementedError("the Array-API path on CPU is timed up to 256^2")
        require_backend(backend)
        from arraygen.gibbs import StencilIsing, nearest_neighbour_offsets

        self.backend, self.ns = backend, ns
        j, h, s = host_model(size)
        self.model = StencilIsing(nearest_neighbour_offsets(), to_namespace(j, ns),
                                  to_namespace(h, ns), boundary="periodic")
        self.s = to_namespace(s, ns)
        self.run()  # warm-up: compile kernels, allocate pools

    def run(self):
        from arraygen.gibbs import gibbs_sweeps

        out = gibbs_sweeps(self.model, self.s, n_sweeps=SWEEPS, rng=3, backend=self.backend)
        synchronize(self.ns)
        return out

    def time_sweeps(self, param, size):
        self.run()

    def track_updates_per_s(self, param, size):
        return best_rate(self.run, size)

    track_updates_per_s.unit = "updates/s"
