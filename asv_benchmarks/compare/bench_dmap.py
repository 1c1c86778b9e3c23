"""Diffusion maps beside what a user would run instead.

* ``peer:dense_eigh``: dense float64 kernel + ``numpy.linalg.eigh`` (N = 2000 only; O(N^3));
* ``peer:dense_eigsh``: dense float64 kernel + ``scipy.sparse.linalg.eigsh`` (N^2 memory);
* ``peer:pydiffmap``: pyDiffMap with the exact kernel (k = N; N = 2000 only);
* ``peer:datafold``: datafold ``DiffusionMaps``.

Every peer gets arraygen's median bandwidth (converted to its kernel convention). Problem:
``asv_benchmarks/benchmarks/bench_dmap.py``; ``peakmem_fit`` shows the memory side (arraygen's
operator is matrix-free; the dense kernel is N^2 float64).
"""

from __future__ import annotations

import functools

import numpy as np

from ._tracking import tracking

T = tracking("bench_dmap")
C = tracking("common")

PARAMS = C.with_gpu(["auto@numpy", "peer:dense_eigh", "peer:dense_eigsh", "peer:pydiffmap",
                     "peer:datafold"], ["auto@cupy"])
SIZES = [2000, 10000]


@functools.cache
def median_epsilon(n: int) -> float:
    from arraygen import DiffusionMap

    return float(DiffusionMap(n_components=T.K, alpha=0.5, rng=0).fit(T.roll(n)).epsilon_)


def pydiffmap_eigenvalues(x, eps):
    dm = C.require_module("pydiffmap.diffusion_map", "pydiffmap")
    # pyDiffMap's kernel is exp(-d^2 / (4 eps)): its epsilon is eps / 4
    mapper = dm.DiffusionMap.from_sklearn(n_evecs=T.K, alpha=0.5, epsilon=eps / 4.0,
                                          k=x.shape[0])
    mapper.fit(x)
    return np.r_[1.0, np.sort(np.real(mapper.evals))[::-1]]


def datafold_eigenvalues(x, eps):
    pfold = C.require_module("datafold.pcfold", "datafold")
    dynfold = C.require_module("datafold.dynfold", "datafold")
    # datafold's GaussianKernel is exp(-d^2 / (2 eps)): its epsilon is eps / 2
    model = dynfold.DiffusionMaps(kernel=pfold.GaussianKernel(epsilon=eps / 2.0),
                                  n_eigenpairs=T.K + 1, alpha=0.5, symmetrize_kernel=True)
    model.fit(pfold.PCManifold(x))
    return np.sort(np.real(model.eigenvalues_))[::-1]


class DiffusionMapFit:
    params = [PARAMS, SIZES]
    param_names = ["backend", "size"]
    timeout = 900

    def setup(self, param, size):
        self.param = param
        self.x_host = T.roll(size)
        if param.startswith("peer:"):
            name = param.split(":", 1)[1]
            if name == "dense_eigh" and size > 2000:
                raise NotImplementedError("dense eigh only at N = 2000 (O(N^3))")
            if name == "pydiffmap":
                C.require_module("pydiffmap", "pydiffmap")
                if size > 2000:
                    raise NotImplementedError("pyDiffMap's exact kernel (k = N) is timed at "
                                              "N = 2000 (minutes and N^2 memory above)")
            if name == "datafold":
                C.require_module("datafold", "datafold")
            self.ns = "numpy"
            self.eps = median_epsilon(size)
        else:
            self.solver, self.ns = C.split(param)
            self.x = C.to_namespace(self.x_host, self.ns)
        self.run()  # warm-up (kernel compilation)

    def run(self):
        if self.param.startswith("peer:"):
            name = self.param.split(":", 1)[1]
            if name.startswith("dense_"):
                return T.dense_eigenvalues(self.x_host, self.eps, name.split("_", 1)[1])
            if name == "pydiffmap":
                return pydiffmap_eigenvalues(self.x_host, self.eps)
            return datafold_eigenvalues(self.x_host, self.eps)
        from arraygen import DiffusionMap

        dm = DiffusionMap(n_components=T.K, alpha=0.5, eigensolver=self.solver, rng=0).fit(self.x)
        C.synchronize(self.ns)
        return dm

    def time_fit(self, param, size):
        self.run()

    def peakmem_fit(self, param, size):
        self.run()
