"""Tiled diffusion kernel: arraygen backends x sizes, against what a user would write instead.

``backend`` parameters are ``"<backend>@<namespace>"`` or ``"peer:<name>@<namespace>"``:

* ``peer:numpy_tiled``: NumPy tiled law of cosines (one float32 GEMM per 2048-row tile, then
  ``exp`` and a GEMV), the FlashDiffusion-style loop a NumPy user writes;
* ``peer:torch_cdist``: torch chunked ``exp(-beta * cdist(x, y)**2) @ v``.

Problem: x = y of shape (N, 3) float32 standard normal, beta = 2, one right-hand side; the op
is ``kernel_matvec`` (``time_``, ``peakmem_``, ``track_rel_err``) and ``kernel_logsumexp``
(``time_``). N = 200_000 runs only with a GPU namespace. Errors are relative to a float64
evaluation of 64 rows. Every timed call is synchronised; ``setup`` warms up (compiles).
"""

from __future__ import annotations

import numpy as np

from .common import data, gpu_present, require_backend, split, synchronize, to_namespace

BETA = 2.0
SIZES = [2_000, 10_000, 50_000, 200_000]
CPU_PARAMS = ["numba_cpu@numpy", "array_api@numpy", "array_api@torch:cpu",
              "peer:numpy_tiled@numpy", "peer:torch_cdist@torch:cpu"]
GPU_PARAMS = ["cupy@cupy", "triton@torch:cuda", "numba_cuda@cupy", "array_api@torch:cuda",
              "peer:torch_cdist@torch:cuda"]
PARAMS = CPU_PARAMS + (GPU_PARAMS if gpu_present() else [])


def _numpy_tiled(x, y, v, tile=2048):
    sq_y = np.einsum("ij,ij->i", y, y)
    out = np.empty(x.shape[0], np.float32)
    for i0 in range(0, x.shape[0], tile):
        xb = x[i0:i0 + tile]
        d2 = np.einsum("ij,ij->i", xb, xb)[:, None] + sq_y[None, :] - 2.0 * (xb @ y.T)
        np.maximum(d2, 0.0, out=d2)
        out[i0:i0 + tile] = np.exp(-BETA * d2) @ v
    return out


def _torch_cdist(x, y, v, chunk=1024):
    import torch

    return torch.cat([torch.exp(-BETA * torch.cdist(x[i:i + chunk], y) ** 2) @ v
                      for i in range(0, x.shape[0], chunk)])


def _reference_rows(x, y, v, rows):
    d2 = ((x[rows, None, :].astype(np.float64) - y[None, :, :]) ** 2).sum(-1)
    return np.exp(-BETA * d2) @ v.astype(np.float64)


class _Base:
    params = [PARAMS, SIZES]  # noqa: RUF012 - asv reads these class attributes
    param_names = ["backend", "size"]  # noqa: RUF012
    timeout = 900
    op = "matvec"

    def setup(self, param, size):
        backend, ns = split(param)
        gpu = ns.endswith(("cuda", "cupy"))
        if size > 50_000 and not gpu:
            raise NotImplementedError("N = 200_000 only on GPU")
        if backend == "array_api" and size > 10_000 and not gpu:
            raise NotImplementedError("the Array-API path on CPU is timed up to N = 10_000")
        if not backend.startswith("peer:"):
            require_backend(backend)
        self.backend, self.ns = backend, ns
        self.host = {"x": data((size, 3), 11), "v": data((size,), 12)}
        self.arr = {k: to_namespace(a, ns) for k, a in self.host.items()}
        self.run(self.op)  # warm-up: compile kernels, allocate pools

    def _call(self, op):
        from arraygen import tiled

        x, v = self.arr["x"], self.arr["v"]
        if self.backend == "peer:numpy_tiled":
            return _numpy_tiled(x, x, v)
        if self.backend == "peer:torch_cdist":
            return _torch_cdist(x, x, v)
        if op == "logsumexp":
            return tiled.kernel_logsumexp(x, x, beta=BETA, backend=self.backend)
        return tiled.kernel_matvec(x, x, v, beta=BETA, backend=self.backend)

    def run(self, op="matvec"):
        out = self._call(op)
        synchronize(self.ns)
        return out


class TimeKernelMatvec(_Base):
    def time_matvec(self, param, size):
        self.run()


class TimeKernelLogsumexp(_Base):
    op = "logsumexp"

    def setup(self, param, size):
        if param.startswith("peer:"):
            raise NotImplementedError("the peers compute the matvec only")
        super().setup(param, size)

    def time_logsumexp(self, param, size):
        self.run("logsumexp")


class PeakmemKernelMatvec(_Base):
    def peakmem_matvec(self, param, size):
        self.run()


class TrackKernelMatvecError(_Base):
    def track_rel_err(self, param, size):
        from arraygen.testing import to_numpy

        rows = np.linspace(0, size - 1, 64).astype(np.int64)
        got = to_numpy(self.run())[rows].astype(np.float64)
        want = _reference_rows(self.host["x"], self.host["x"], self.host["v"], rows)
        return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))

    track_rel_err.unit = "relative error"
