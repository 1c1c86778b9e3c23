"""Tiled diffusion kernel (tracking): ``kernel_matvec``, ``kernel_logsumexp`` and
``kernel_softmax_matvec`` over backend x size.

Problem: x = y of shape (N, 3) float32 standard normal, beta = 2, one right-hand side.
N = 200_000 runs only with a GPU namespace; the Array-API path on the CPU up to N = 10_000.
``track_rel_err`` is relative to a float64 evaluation of 64 rows. Every timed call is
synchronised; ``setup`` warms up (compiles). The peers (NumPy tiled GEMM, torch cdist) are in
``asv_benchmarks/compare/bench_tiled.py``.
"""

from __future__ import annotations

import numpy as np

from .common import data, on_gpu, require_backend, split, synchronize, to_namespace, with_gpu
from .common import repeat, rounds  # noqa: F401 (asv timing attributes)

BETA = 2.0
SIZES = [2_000, 10_000, 50_000, 200_000]
PARAMS = with_gpu(["numba_cpu@numpy", "array_api@numpy", "array_api@torch:cpu"],
                  ["cupy@cupy", "triton@torch:cuda", "numba_cuda@cupy", "array_api@torch:cuda"])


def reference_rows(x, y, v, rows):
    d2 = ((x[rows, None, :].astype(np.float64) - y[None, :, :]) ** 2).sum(-1)
    return np.exp(-BETA * d2) @ v.astype(np.float64)


def check_size(backend: str, ns: str, size: int) -> None:
    gpu = on_gpu(ns)
    if size > 50_000 and not gpu:
        raise NotImplementedError("N = 200_000 only on GPU")
    if backend == "array_api" and size > 10_000 and not gpu:
        raise NotImplementedError("the Array-API path on CPU is timed up to N = 10_000")


class _Base:
    params = [PARAMS, SIZES]
    param_names = ["backend", "size"]
    timeout = 600
    op = "matvec"

    def setup(self, param, size):
        backend, ns = split(param)
        check_size(backend, ns, size)
        require_backend(backend)
        self.backend, self.ns = backend, ns
        self.host = {"x": data((size, 3), 11), "v": data((size,), 12)}
        self.arr = {k: to_namespace(a, ns) for k, a in self.host.items()}
        self.arr["v2"] = self.arr["v"][:, None]
        self.run()  # warm-up: compile kernels, allocate pools

    def run(self):
        from arraygen import tiled

        x, v = self.arr["x"], self.arr["v"]
        if self.op == "logsumexp":
            out = tiled.kernel_logsumexp(x, x, beta=BETA, backend=self.backend)
        elif self.op == "softmax_matvec":
            out = tiled.kernel_softmax_matvec(x, x, self.arr["v2"], beta=BETA,
                                              backend=self.backend)
        else:
            out = tiled.kernel_matvec(x, x, v, beta=BETA, backend=self.backend)
        synchronize(self.ns)
        return out


class KernelMatvec(_Base):
    def time_matvec(self, param, size):
        self.run()

    def peakmem_matvec(self, param, size):
        self.run()

    def track_rel_err(self, param, size):
        from arraygen.testing import to_numpy

        rows = np.linspace(0, size - 1, 64).astype(np.int64)
        got = to_numpy(self.run())[rows].astype(np.float64)
        want = reference_rows(self.host["x"], self.host["x"], self.host["v"], rows)
        return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))

    track_rel_err.unit = "relative"


class KernelLogsumexp(_Base):
    op = "logsumexp"

    def time_logsumexp(self, param, size):
        self.run()


class KernelSoftmaxMatvec(_Base):
    op = "softmax_matvec"

    def time_softmax_matvec(self, param, size):
        self.run()
