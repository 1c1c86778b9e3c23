"""Diffusion maps (tracking): ``DiffusionMap.fit`` on a noisy swiss roll over solver x size.

Swiss roll (noise 0.05), alpha = 0.5, epsilon = "median", 8 nontrivial eigenpairs, end to end
(bandwidth, kernel, normalisation, eigensolver). ``backend`` parameters are
``"<eigensolver>@<namespace>"`` (the tiled kernel picks its backend automatically).
``track_eig_err`` is the largest |lambda - lambda_ref| against a dense float64 eigendecomposition
of the same operator (N <= 2000). The peers (dense eigh/eigsh, pyDiffMap, datafold) are in
``asv_benchmarks/compare/bench_dmap.py``.
"""

from __future__ import annotations

import functools

import numpy as np

from .common import split, synchronize, to_namespace, with_gpu
from .common import repeat, rounds  # noqa: F401 (asv timing attributes)

SIZES = [1000, 10000]
K = 8
PARAMS = with_gpu(["auto@numpy", "lanczos@numpy", "lanczos@torch:cpu"],
                  ["auto@torch:cuda", "auto@cupy", "lanczos@torch:cuda"])


@functools.cache
def roll(n: int) -> np.ndarray:
    from arraygen.datasets import swiss_roll

    return swiss_roll(n, noise=0.05, rng=0)[0]


def dense_operator(x: np.ndarray, eps: float, alpha: float = 0.5) -> np.ndarray:
    """The symmetric diffusion operator D^-1/2 K_alpha D^-1/2 with K = exp(-|x-y|^2 / eps)."""
    x = x - x.mean(0)
    d2 = np.sum(x * x, 1)[:, None] + np.sum(x * x, 1)[None, :] - 2.0 * x @ x.T
    k = np.exp(-np.maximum(d2, 0.0) / eps)
    q = k.sum(1) ** -alpha
    k *= q[:, None]
    k *= q[None, :]
    s = 1.0 / np.sqrt(k.sum(1))
    k *= s[:, None]
    k *= s[None, :]
    return k


def dense_eigenvalues(x: np.ndarray, eps: float, how: str = "eigh") -> np.ndarray:
    """The K + 1 largest eigenvalues of :func:`dense_operator` (eigh or ARPACK eigsh)."""
    m = dense_operator(x, eps)
    if how == "eigh":
        return np.linalg.eigvalsh(m)[::-1][:K + 1]
    from scipy.sparse.linalg import eigsh

    w = eigsh(m, k=K + 1, which="LA", tol=0, v0=np.ones(m.shape[0]), return_eigenvectors=False)
    return np.sort(w)[::-1]


class _Base:
    params = [PARAMS, SIZES]
    param_names = ["backend", "size"]
    timeout = 600

    def setup(self, param, size):
        solver, ns = split(param)
        if solver == "lanczos" and ns == "torch:cpu" and size > 1000:
            raise NotImplementedError("lanczos on torch:cpu is timed at N = 1000 (minutes above)")
        self.solver, self.ns, self.size = solver, ns, size
        self.x = to_namespace(roll(size), ns)
        self.dm = self.run()  # warm-up (kernel compilation)

    def run(self):
        from arraygen.dmap import DiffusionMap

        dm = DiffusionMap(n_components=K, alpha=0.5, eigensolver=self.solver, rng=0).fit(self.x)
        synchronize(self.ns)
        return dm


class DiffusionMapFit(_Base):
    def time_fit(self, param, size):
        self.run()

    def peakmem_fit(self, param, size):
        self.run()


class DiffusionMapAccuracy(_Base):
    """Eigenvalue error against the dense float64 reference (N = 1000: O(N^3) reference)."""

    params = [PARAMS, [1000]]

    def track_eig_err(self, param, size):
        from arraygen.testing import to_numpy

        got = np.asarray(to_numpy(self.dm.eigenvalues_), dtype=np.float64)
        want = dense_eigenvalues(roll(size), float(self.dm.epsilon_))
        return float(np.max(np.abs(got - want)))

    track_eig_err.unit = "abs error"
