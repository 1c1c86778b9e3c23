"""Block-sparse tiled kernel (tracking): ``kernel_logsumexp`` and ``kernel_matvec`` with
``truncate=`` over backend x size x truncate (issue 18).

Problem: x = y of shape (N, 3) float32, uniform in the unit cube, beta = 400 (kernel width
``1 / sqrt(beta)`` = 0.05), one non-negative right-hand side ``v`` in [0.5, 1.5] for the
matvec. The clusters (:func:`arraygen.blocksparse.cluster_points`) are built once in ``setup``
and passed as ``x_clusters`` (their reuse across calls is the intended use); each timed call
builds its pair list and runs the block-sparse kernel. ``truncate = None`` is the dense op on
the same data (the baseline of the same run). N = 1_000_000 runs only with a GPU namespace;
the Array-API path up to N = 50_000 (CPU: 2_000).

Tracked, from the call's :class:`arraygen.blocksparse.TruncationReport` and a float64 oracle:

* ``track_fraction``: point pairs computed / N^2 (1.0 for the dense op);
* ``track_mass_bound``: the reported bound on every row's skipped / kept kernel mass;
* ``track_rel_err``: over 64 rows against the float64 dense sums, the largest relative error of
  the kernel sum (matvec) or the largest absolute error of the log-sum-exp (the relative error
  of the sum to first order). Both are at most ``mass_bound`` plus float32 rounding.
"""

from __future__ import annotations

import numpy as np

from .common import on_gpu, require_backend, split, synchronize, to_namespace, with_gpu
from .common import repeat, rounds  # noqa: F401 (asv timing attributes)

BETA = 400.0
SIZES = [2_000, 50_000, 1_000_000]
TRUNCATES = [None, 3.0, 4.0]
PARAMS = with_gpu(["numba_cpu@numpy", "array_api@numpy", "array_api@torch:cpu"],
                  ["cupy@cupy", "triton@torch:cuda", "numba_cuda@cupy", "array_api@torch:cuda"])
ROWS = 64


def cloud(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Points (N, 3) uniform in the unit cube and v (N,) in [0.5, 1.5], float32, fixed seed."""
    gen = np.random.default_rng(18)
    x = gen.random((size, 3)).astype(np.float32)
    return x, (0.5 + gen.random(size)).astype(np.float32)


def reference_rows(x, v, rows, op):
    """float64 dense kernel sums (matvec) or log-sum-exps of the rows ``rows``."""
    x64 = x.astype(np.float64)
    d2 = np.zeros((rows.shape[0], x64.shape[0]))
    for k in range(x64.shape[1]):   # one coordinate at a time: (rows, N) float64 temporaries
        d2 += (x64[rows, k, None] - x64[None, :, k]) ** 2
    e = -BETA * d2
    if op == "matvec":
        return np.exp(e) @ v.astype(np.float64)
    top = e.max(axis=1)
    return top + np.log(np.exp(e - top[:, None]).sum(axis=1))


def check_size(backend: str, ns: str, size: int) -> None:
    gpu = on_gpu(ns)
    if size > 50_000 and not gpu:
        raise NotImplementedError("N = 1_000_000 only on GPU")
    if backend == "array_api" and size > (50_000 if gpu else 2_000):
        raise NotImplementedError("the Array-API path is timed up to N = 2_000 on CPU, "
                                  "50_000 on GPU")


class _Base:
    params = [PARAMS, SIZES, TRUNCATES]
    param_names = ["backend", "size", "truncate"]
    timeout = 600
    op = "matvec"

    def setup(self, param, size, truncate):
        backend, ns = split(param)
        check_size(backend, ns, size)
        require_backend(backend)
        self.backend, self.ns, self.truncate = backend, ns, truncate
        self.host_x, self.host_v = cloud(size)
        self.x = to_namespace(self.host_x, ns)
        self.v = to_namespace(self.host_v, ns)
        self.clusters = None
        if truncate is not None:
            from arraygen.blocksparse import cluster_points

            self.clusters = cluster_points(self.x)
        self.run()  # warm-up: compile kernels, allocate pools

    def run(self):
        """(out, report) of one synchronised call."""
        from arraygen import tiled

        opts = {"beta": BETA, "return_report": True, "backend": self.backend}
        if self.truncate is not None:
            opts.update(truncate=self.truncate, x_clusters=self.clusters)
        if self.op == "logsumexp":
            out = tiled.kernel_logsumexp(self.x, self.x, **opts)
        else:
            out = tiled.kernel_matvec(self.x, self.x, self.v, **opts)
        synchronize(self.ns)
        return out

    def track_fraction(self, param, size, truncate):
        return float(self.run()[1].fraction)

    track_fraction.unit = "fraction of pairs"

    def track_mass_bound(self, param, size, truncate):
        return float(self.run()[1].mass_bound)

    track_mass_bound.unit = "skipped / kept mass"

    def track_rel_err(self, param, size, truncate):
        from arraygen.testing import to_numpy

        rows = np.linspace(0, size - 1, ROWS).astype(np.int64)
        got = np.asarray(to_numpy(self.run()[0]), dtype=np.float64)[rows]
        want = reference_rows(self.host_x, self.host_v, rows, self.op)
        if self.op == "matvec":
            return float(np.max(np.abs(got - want) / np.abs(want)))
        return float(np.max(np.abs(got - want)))

    track_rel_err.unit = "relative"


class BlockSparseLogsumexp(_Base):
    op = "logsumexp"

    def time_logsumexp(self, param, size, truncate):
        self.run()


class BlockSparseMatvec(_Base):
    def time_matvec(self, param, size, truncate):
        self.run()
