"""Fisher hot path (tracking): ``fisher_diagonal`` and the fused pSGLD step over backend x size.

Inputs have shape ``(size // 16384, 16384)`` (a batch of 4x64x64 latents), float32, with a
per-sample ``alpha_bar``. 2**28 elements run only with a GPU namespace. Every timed call is
synchronised; ``setup`` warms up (compiles) first. ``track_rel_err`` is the error against the
float64 oracle ``arraygen.reference.fisher``. The plain-expression peers are in
``asv_benchmarks/compare/bench_fisher.py``.
"""

from __future__ import annotations

import numpy as np

from .common import data, on_gpu, require_backend, split, synchronize, to_namespace, with_gpu
from .common import repeat, rounds  # noqa: F401 (asv timing attributes)

N_PER = 16384
SIZES = [2**20, 2**22, 2**28]
PARAMS = with_gpu(["numba_cpu@numpy", "array_api@numpy", "array_api@torch:cpu"],
                  ["cupy@cupy", "triton@torch:cuda", "numba_cuda@cupy", "array_api@torch:cuda"])


def eps(alpha_bar):
    return 1e-4 + 1e-3 * (1.0 - alpha_bar)


class FisherCase:
    """Inputs of one (backend, size) case, in the case's namespace (also used by compare/)."""

    def __init__(self, param, size):
        backend, ns = split(param)
        if size > 2**22 and not on_gpu(ns):
            raise NotImplementedError("2**28 elements only on GPU")
        self.backend, self.ns = backend, ns
        shape = (size // N_PER, N_PER)
        self.host = {"x": data(shape, 1), "s": data(shape, 2),
                     "v": np.abs(data(shape, 3)) + np.float32(0.1), "z": data(shape, 4)}
        self.alpha_bar = np.linspace(0.05, 0.95, shape[0]).astype(np.float32)
        self.arr = {k: to_namespace(a, ns) for k, a in self.host.items()}
        self.ab = to_namespace(self.alpha_bar, ns)


class _Base:
    params = [PARAMS, SIZES]
    param_names = ["backend", "size"]
    timeout = 300

    def setup(self, param, size):
        self.case = FisherCase(param, size)
        require_backend(self.case.backend)
        self.run()  # warm-up: compile kernels, allocate pools
        synchronize(self.case.ns)

    def time_op(self, param, size):
        self.run()
        synchronize(self.case.ns)


class FisherDiagonal(_Base):
    """F = score**2 + eps(alpha_bar): 8 bytes/element (float32)."""

    def run(self):
        import arraygen

        return arraygen.fisher_diagonal(self.case.arr["s"], self.case.ab,
                                        backend=self.case.backend)

    def track_rel_err(self, param, size):
        from arraygen.reference.fisher import fisher_diagonal
        from arraygen.testing import to_numpy

        c = self.case
        k = min(c.host["s"].shape[0], 64)
        got = to_numpy(self.run())[:k].astype(np.float64)
        want = fisher_diagonal(c.host["s"][:k], c.alpha_bar[:k].astype(np.float64))
        return float(np.max(np.abs(got - want) / np.abs(want)))

    track_rel_err.unit = "relative"


class FisherLangevinStep(_Base):
    """Fused pSGLD step, noise drawn in-kernel from the Philox stream."""

    def run(self, noise=None):
        import arraygen

        a = self.case.arr
        return arraygen.fisher_langevin_step(a["x"], a["s"], a["v"], self.case.ab,
                                             step_size=0.01, momentum=0.9, noise=noise, rng=123,
                                             backend=self.case.backend)

    def track_rel_err(self, param, size):
        from arraygen.reference.fisher import fisher_langevin_step
        from arraygen.testing import to_numpy

        c = self.case
        k = min(c.host["x"].shape[0], 64)
        x_new = to_numpy(self.run(noise=c.arr["z"])[0])[:k].astype(np.float64)
        h = {n: a[:k] for n, a in c.host.items()}
        want, _ = fisher_langevin_step(h["x"], h["s"], h["v"], c.alpha_bar[:k], 0.01, 0.9,
                                       h["z"])
        return float(np.max(np.abs(x_new - want)) / np.max(np.abs(want)))

    track_rel_err.unit = "relative"
