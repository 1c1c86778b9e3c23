"""Tiled diffusion kernel beside what a user writes instead.

* ``peer:numpy_tiled``: NumPy tiled law of cosines (one float32 GEMM per 2048-row tile, then
  ``exp`` and a GEMV);
* ``peer:torch_cdist``: torch chunked ``exp(-beta * cdist(x, y)**2) @ v``.

Problem and sizes: ``asv_benchmarks/benchmarks/bench_tiled.py`` (``kernel_matvec``).
"""

from __future__ import annotations

import numpy as np

from ._tracking import tracking

T = tracking("bench_tiled")
C = tracking("common")

PARAMS = C.with_gpu(["numba_cpu@numpy", "peer:numpy_tiled@numpy", "array_api@torch:cpu",
                     "peer:torch_cdist@torch:cpu"],
                    ["cupy@cupy", "triton@torch:cuda", "peer:torch_cdist@torch:cuda"])
SIZES = [10_000, 50_000, 200_000]


def numpy_tiled(x, y, v, tile=2048):
    sq_y = np.einsum("ij,ij->i", y, y)
    out = np.empty(x.shape[0], np.float32)
    for i0 in range(0, x.shape[0], tile):
        xb = x[i0:i0 + tile]
        d2 = np.einsum("ij,ij->i", xb, xb)[:, None] + sq_y[None, :] - 2.0 * (xb @ y.T)
        np.maximum(d2, 0.0, out=d2)
        out[i0:i0 + tile] = np.exp(-T.BETA * d2) @ v
    return out


def torch_cdist(x, y, v, chunk=1024):
    import torch

    return torch.cat([torch.exp(-T.BETA * torch.cdist(x[i:i + chunk], y) ** 2) @ v
                      for i in range(0, x.shape[0], chunk)])


class KernelMatvec:
    params = [PARAMS, SIZES]
    param_names = ["backend", "size"]
    timeout = 900

    def setup(self, param, size):
        backend, ns = C.split(param)
        if size > 50_000 and not C.on_gpu(ns):
            raise NotImplementedError("N = 200_000 only on GPU")
        if backend in ("array_api", "peer:torch_cdist") and size > 10_000 and not C.on_gpu(ns):
            raise NotImplementedError("torch on the CPU is timed up to N = 10_000")
        if not backend.startswith("peer:"):
            C.require_backend(backend)
        self.backend, self.ns = backend, ns
        self.x = C.to_namespace(C.data((size, 3), 11), ns)
        self.v = C.to_namespace(C.data((size,), 12), ns)
        self.run()

    def run(self):
        from arraygen import tiled

        if self.backend == "peer:numpy_tiled":
            out = numpy_tiled(self.x, self.x, self.v)
        elif self.backend == "peer:torch_cdist":
            out = torch_cdist(self.x, self.x, self.v)
        else:
            out = tiled.kernel_matvec(self.x, self.x, self.v, beta=T.BETA, backend=self.backend)
        C.synchronize(self.ns)
        return out

    def time_matvec(self, param, size):
        self.run()

    def peakmem_matvec(self, param, size):
        self.run()
