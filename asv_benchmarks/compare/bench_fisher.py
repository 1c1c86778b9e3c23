"""Fisher hot path beside the plain expression a user writes (NumPy, torch eager, CuPy).

``peer:expr`` is ``score*score + eps`` and the pSGLD step written out with the library's own
normal generator. Problem and sizes: ``asv_benchmarks/benchmarks/bench_fisher.py``.
"""

from __future__ import annotations

import numpy as np

from ._tracking import tracking

T = tracking("bench_fisher")
C = tracking("common")

PARAMS = C.with_gpu(["numba_cpu@numpy", "peer:expr@numpy", "array_api@torch:cpu",
                     "peer:expr@torch:cpu"],
                    ["cupy@cupy", "peer:expr@cupy", "triton@torch:cuda", "peer:expr@torch:cuda"])
SIZES = [2**22, 2**28]


def peer_step(ns, x, s, v, eps_col, h, m, z):
    """The pSGLD step as a user writes it in NumPy / torch / CuPy (noise ``z`` given)."""
    v_new = m * v + (1 - m) * (s * s + eps_col)
    if ns.startswith("torch"):
        import torch

        p = torch.rsqrt(v_new)
        p = p / p.mean(dim=1, keepdim=True)
        return x + h * p * s + torch.sqrt(2 * h * p) * z, v_new
    mod = np if ns == "numpy" else __import__("cupy")
    p = 1.0 / mod.sqrt(v_new)
    p = p / p.mean(axis=1, keepdims=True)
    return x + h * p * s + mod.sqrt(2 * h * p) * z, v_new


def randn_like(ns, x, gen):
    if ns.startswith("torch"):
        import torch

        return torch.randn_like(x)
    if ns == "cupy":
        import cupy

        return cupy.random.standard_normal(x.shape, dtype=x.dtype)
    return gen.standard_normal(x.shape, dtype=x.dtype)


class _Base:
    params = [PARAMS, SIZES]
    param_names = ["backend", "size"]
    timeout = 300

    def setup(self, param, size):
        self.case = T.FisherCase(param, size)
        if not self.case.backend.startswith("peer:"):
            C.require_backend(self.case.backend)
        self.eps_col = C.to_namespace(T.eps(self.case.alpha_bar)[:, None].astype(np.float32),
                                      self.case.ns)
        self.gen = np.random.default_rng(0)
        self.run()
        C.synchronize(self.case.ns)

    def time_op(self, param, size):
        self.run()
        C.synchronize(self.case.ns)


class FisherDiagonal(_Base):
    def run(self):
        c = self.case
        if c.backend == "peer:expr":
            return c.arr["s"] * c.arr["s"] + self.eps_col
        import arraygen

        return arraygen.fisher_diagonal(c.arr["s"], c.ab, backend=c.backend)


class FisherLangevinStep(_Base):
    def run(self):
        c, a = self.case, self.case.arr
        if c.backend == "peer:expr":
            z = randn_like(c.ns, a["x"], self.gen)
            return peer_step(c.ns, a["x"], a["s"], a["v"], self.eps_col, 0.01, 0.9, z)
        import arraygen

        return arraygen.fisher_langevin_step(a["x"], a["s"], a["v"], c.ab, step_size=0.01,
                                             momentum=0.9, rng=123, backend=c.backend)
