"""Fisher hot path: arraygen backends x sizes, against what a user would write instead.

``backend`` parameters are ``"<backend>@<namespace>"`` or ``"peer:<name>@<namespace>"``:
``peer:expr`` is the plain expression in that namespace (``score*score + eps``; the pSGLD step
written out with the library's own normal generator), i.e. NumPy or torch eager. Inputs have
shape ``(size // 16384, 16384)`` (a batch of 4x64x64 latents) with per-sample ``alpha_bar``.
2**28 elements run only with a GPU namespace. Every timed call is synchronised; ``setup``
warms up (compiles) first.
"""

from __future__ import annotations

import numpy as np

from .common import data, gpu_present, require_backend, split, synchronize, to_namespace

N_PER = 16384
SIZES = [2**20, 2**24, 2**28]
CPU_PARAMS = ["numba_cpu@numpy", "array_api@numpy", "peer:expr@numpy", "array_api@torch:cpu",
              "peer:expr@torch:cpu"]
GPU_PARAMS = ["cupy@cupy", "triton@torch:cuda", "numba_cuda@cupy", "array_api@torch:cuda",
              "peer:expr@torch:cuda", "peer:expr@cupy"]
PARAMS = CPU_PARAMS + (GPU_PARAMS if gpu_present() else [])


def _eps(alpha_bar):
    return 1e-4 + 1e-3 * (1.0 - alpha_bar)


def _peer_diagonal(score, eps_col):
    return score * score + eps_col


def _peer_step(xp_name, x, s, v, eps_col, h, m, z):
    """The pSGLD step as a user writes it in NumPy / torch / CuPy (noise ``z`` given)."""
    v_new = m * v + (1 - m) * (s * s + eps_col)
    if xp_name.startswith("torch"):
        import torch

        p = torch.rsqrt(v_new)
        p = p / p.mean(dim=1, keepdim=True)
        return x + h * p * s + torch.sqrt(2 * h * p) * z, v_new
    mod = np if xp_name == "numpy" else __import__("cupy")
    p = 1.0 / mod.sqrt(v_new)
    p = p / p.mean(axis=1, keepdims=True)
    return x + h * p * s + mod.sqrt(2 * h * p) * z, v_new


def _randn_like(xp_name, x):
    if xp_name.startswith("torch"):
        import torch

        return torch.randn_like(x)
    if xp_name == "cupy":
        import cupy

        return cupy.random.standard_normal(x.shape, dtype=x.dtype)
    return np.random.default_rng(0).standard_normal(x.shape, dtype=x.dtype)


class _Base:
    params = [PARAMS, SIZES]
    param_names = ["backend", "size"]
    timeout = 600

    def setup(self, param, size):
        backend, ns = split(param)
        if size > 2**24 and not ns.endswith(("cuda", "cupy")):
            raise NotImplementedError("2**28 elements only on GPU")
        if not backend.startswith("peer:"):
            require_backend(backend)
        self.backend, self.ns = backend, ns
        shape = (size // N_PER, N_PER)
        self.host = {"x": data(shape, 1), "s": data(shape, 2),
                     "v": np.abs(data(shape, 3)) + np.float32(0.1), "z": data(shape, 4)}
        self.alpha_bar = np.linspace(0.05, 0.95, shape[0]).astype(np.float32)
        self.arr = {k: to_namespace(a, ns) for k, a in self.host.items()}
        self.ab = to_namespace(self.alpha_bar, ns)
        self.eps_col = to_namespace(_eps(self.alpha_bar)[:, None].astype(np.float32), ns)
        self.run()  # warm-up: compile kernels, allocate pools
        synchronize(ns)

    def time_op(self, param, size):
        self.run()
        synchronize(self.ns)

    def peakmem_op(self, param, size):
        self.run()
        synchronize(self.ns)


class FisherDiagonal(_Base):
    """F = score**2 + eps(alpha_bar): 8 bytes/element (float32)."""

    def run(self):
        if self.backend == "peer:expr":
            return _peer_diagonal(self.arr["s"], self.eps_col)
        import arraygen

        return arraygen.fisher_diagonal(self.arr["s"], self.ab, backend=self.backend)

    def track_rel_err(self, param, size):
        from arraygen.reference.fisher import fisher_diagonal
        from arraygen.testing import to_numpy

        k = min(self.host["s"].shape[0], 64)
        got = to_numpy(self.run())[:k].astype(np.float64)
        want = fisher_diagonal(self.host["s"][:k], self.alpha_bar[:k].astype(np.float64))
        return float(np.max(np.abs(got - want) / np.abs(want)))


class FisherLangevinStep(_Base):
    """Fused pSGLD step, noise drawn in-kernel (peers draw with their library's generator)."""

    def run(self, noise=None):
        a = self.arr
        if self.backend == "peer:expr":
            z = noise if noise is not None else _randn_like(self.ns, a["x"])
            return _peer_step(self.ns, a["x"], a["s"], a["v"], self.eps_col, 0.01, 0.9, z)
        import arraygen

        return arraygen.fisher_langevin_step(a["x"], a["s"], a["v"], self.ab, step_size=0.01,
                                             momentum=0.9, noise=noise, rng=123,
                                             backend=self.backend)

    def track_rel_err(self, param, size):
        from arraygen.reference.fisher import fisher_langevin_step
        from arraygen.testing import to_numpy

        k = min(self.host["x"].shape[0], 64)
        x_new = to_numpy(self.run(noise=self.arr["z"])[0])[:k].astype(np.float64)
        h = {n: a[:k] for n, a in self.host.items()}
        want, _ = fisher_langevin_step(h["x"], h["s"], h["v"], self.alpha_bar[:k], 0.01, 0.9,
                                       h["z"])
        return float(np.max(np.abs(x_new - want)) / np.max(np.abs(want)))
