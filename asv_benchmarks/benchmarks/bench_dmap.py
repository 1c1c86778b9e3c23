"""Diffusion maps: DiffusionMap.fit on noisy swiss rolls against what a user would run instead.

Problem (peer_numbers.md P2): swiss roll (noise 0.05), alpha = 0.5, epsilon = median squared
pairwise distance, 8 nontrivial eigenpairs (9 with lambda_0 = 1), end to end (bandwidth, kernel,
normalisation, eigensolver). ``backend`` parameters are ``"<eigensolver>@<namespace>"`` for
arraygen (the tiled kernel picks its backend automatically) or ``"peer:<name>"``:

* ``peer:dense_eigh``: dense float64 kernel + ``numpy.linalg.eigh`` (N=2000 only; O(N^3));
* ``peer:dense_eigsh``: dense float64 kernel + ``scipy.sparse.linalg.eigsh`` (N^2 memory);
* ``peer:pydiffmap``: pyDiffMap with the exact kernel (k = N), only if importable;
* ``peer:datafold``: datafold DiffusionMaps, only if importable.

``track_eig_err`` is the largest |lambda - lambda_ref| against dense float64 (eigh at 2000,
ARPACK with tol 0 at 10000). Every timed call is synchronised; ``setup`` warms up first.
"""

from __future__ import annotations

import functools
from typing import ClassVar

import numpy as np

from arraygen._array_api import to_numpy

from .common import gpu_present, split, synchronize, to_namespace

SIZES = [2000, 10000]
K = 8
CPU_PARAMS = ["auto@numpy", "lanczos@numpy", "lanczos@torch:cpu", "peer:dense_eigh",
              "peer:dense_eigsh", "peer:pydiffmap", "peer:datafold"]
GPU_PARAMS = ["auto@torch:cuda", "auto@cupy"]
PARAMS = CPU_PARAMS + (GPU_PARAMS if gpu_present() else [])


@functools.cache
def _roll(n: int) -> np.ndarray:
    from arraygen.datasets import swiss_roll

    return swiss_roll(n, noise=0.05, rng=0)[0]


def _median_sq(x: np.ndarray, m: int = 2000) -> float:
    """The same convention as DiffusionMap(epsilon="median") (exact for N <= 2000)."""
    from arraygen import _array_api as aa
    from arraygen import dmap

    xc = x - x.mean(0)
    return dmap._median_epsilon(aa.array_namespace(xc), xc, m)


def _dense_operator(x: np.ndarray, eps: float) -> np.ndarray:
    d2 = np.sum(x * x, 1)[:, None] + np.sum(x * x, 1)[None, :] - 2.0 * x @ x.T
    k = np.exp(-np.maximum(d2, 0.0) / eps)
    w = k.sum(1) ** -0.5
    k *= w[:, None]
    k *= w[None, :]
    s = 1.0 / np.sqrt(k.sum(1))
    k *= s[:, None]
    k *= s[None, :]
    return k


def _peer_dense(x, eps, how):
    m = _dense_operator(x - x.mean(0), eps)
    if how == "eigh":
        return np.linalg.eigvalsh(m)[::-1][:K + 1]
    from scipy.sparse.linalg import eigsh

    w = eigsh(m, k=K + 1, which="LA", tol=0, v0=np.ones(m.shape[0]), return_eigenvectors=False)
    return np.sort(w)[::-1]


@functools.cache
def _reference(n: int) -> np.ndarray:
    x = _roll(n)
    return _peer_dense(x, _median_sq(x), "eigh" if n <= 2000 else "eigsh")


def _peer_pydiffmap(x, eps):
    from pydiffmap import diffusion_map as dm

    # pyDiffMap's kernel is exp(-d^2 / (4 eps)) -> its epsilon = eps / 4
    mapper = dm.DiffusionMap.from_sklearn(n_evecs=K, alpha=0.5, epsilon=eps / 4.0,
                                          k=x.shape[0])
    mapper.fit(x)
    return np.r_[1.0, np.sort(np.real(mapper.evals))[::-1]]


def _peer_datafold(x, eps):
    import datafold.pcfold as pfold
    from datafold.dynfold import DiffusionMaps

    # datafold's GaussianKernel is exp(-d^2 / (2 eps)) -> its epsilon = eps / 2
    model = DiffusionMaps(kernel=pfold.GaussianKernel(epsilon=eps / 2.0), n_eigenpairs=K + 1,
                          alpha=0.5, symmetrize_kernel=True)
    model.fit(pfold.PCManifold(x))
    return np.sort(np.real(model.eigenvalues_))[::-1]


class DiffusionMapFit:
    params: ClassVar = [PARAMS, SIZES]
    param_names: ClassVar = ["backend", "size"]
    timeout = 900

    def setup(self, param, size):
        self.param = param
        self.x_host = _roll(size)
        if param.startswith("peer:"):
            name = param.split(":", 1)[1]
            if name == "dense_eigh" and size > 2000:
                raise NotImplementedError("dense eigh only at N=2000 (O(N^3))")
            if name == "pydiffmap":
                try:
                    import pydiffmap  # noqa: F401
                except ImportError:
                    raise NotImplementedError("pydiffmap not installed") from None
            if name == "datafold":
                try:
                    import datafold  # noqa: F401
                except ImportError:
                    raise NotImplementedError("datafold not installed") from None
            self.ns = "numpy"
            self.eps = _median_sq(self.x_host)
        else:
            solver, self.ns = split(param)
            self.solver = solver
            self.x = to_namespace(self.x_host, self.ns)
        self.last = self.run()  # warm-up (kernel compilation)

    def run(self):
        if self.param.startswith("peer:"):
            name = self.param.split(":", 1)[1]
            if name.startswith("dense_"):
                return _peer_dense(self.x_host, self.eps, name.split("_", 1)[1])
            if name == "pydiffmap":
                return _peer_pydiffmap(self.x_host, self.eps)
            return _peer_datafold(self.x_host, self.eps)
        from arraygen.dmap import DiffusionMap

        dm = DiffusionMap(n_components=K, alpha=0.5, eigensolver=self.solver, rng=0).fit(self.x)
        synchronize(self.ns)
        return to_numpy(dm.eigenvalues_)

    def time_fit(self, param, size):
        self.run()

    def peakmem_fit(self, param, size):
        self.run()

    def track_eig_err(self, param, size):
        return float(np.max(np.abs(np.asarray(self.last, dtype=np.float64) -
                                   _reference(size))))

    track_eig_err.unit = "abs error"
