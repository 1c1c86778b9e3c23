"""+-J Gibbs fast path (tracking, issue 19): ``gibbs_sweeps(..., multispin=)`` over
backend x mode x size.

Model: L x L periodic torus, 4-neighbour couplings +-0.44 (random signs, one magnitude), zero
bias, float32, one chain of int8 spins, ``SWEEPS`` sweeps per timed call. ``mode``:

* ``multispin``: the multi-spin-coded kernels (32 spins per uint32 word; ``cupy`` and
  ``numba_cuda`` only, so these rows exist only on a GPU machine: ``setup`` skips them
  elsewhere);
* ``float``: the float-coupling kernel on the same model (``multispin=False``), the baseline
  of the same run (``numba_cpu`` on the CPU up to 1024^2).

``track_updates_per_s`` is spin updates per second (best of 3 back-to-back calls; 1e9
updates/s = 1 flip/ns). The per-site float-coupling model is ``bench_gibbs.py``.
"""

from __future__ import annotations

import numpy as np

from .bench_gibbs import SWEEPS, best_rate
from .common import on_gpu, require_backend, split, synchronize, to_namespace
from .common import repeat, rounds  # noqa: F401 (asv timing attributes)

SIZES = [256, 1024, 4096, 8192]
MODES = ["float", "multispin"]
#: every row is listed on every machine (the multispin rows are GPU-only: setup skips them)
PARAMS = ["numba_cpu@numpy", "cupy@cupy", "numba_cuda@cupy"]
MSC_BACKENDS = ("cupy", "numba_cuda")


def host_pm_model(size: int):
    """Couplings (2, 1, L, L) +-0.44, bias (1, L, L) zeros (float32), int8 spins (1, 1, L, L)."""
    gen = np.random.default_rng(19)
    j = np.where(gen.random((2, 1, size, size)) < 0.5, -0.44, 0.44).astype(np.float32)
    h = np.zeros((1, size, size), np.float32)
    s = np.where(gen.random((1, 1, size, size)) < 0.5, 1, -1).astype(np.int8)
    return j, h, s


class GibbsMultispin:
    params = [PARAMS, MODES, SIZES]
    param_names = ["backend", "mode", "size"]
    timeout = 600

    def setup(self, param, mode, size):
        backend, ns = split(param)
        if mode == "multispin" and backend not in MSC_BACKENDS:
            raise NotImplementedError(f"the multi-spin kernels exist for {MSC_BACKENDS}, not "
                                      f"{backend}")
        if size > 1024 and not on_gpu(ns):
            raise NotImplementedError("4096^2 and larger only on GPU")
        require_backend(backend)
        from arraygen.gibbs import StencilIsing, nearest_neighbour_offsets

        self.backend, self.ns, self.multispin = backend, ns, mode == "multispin"
        j, h, s = host_pm_model(size)
        self.model = StencilIsing(nearest_neighbour_offsets(), to_namespace(j, ns),
                                  to_namespace(h, ns), boundary="periodic")
        if self.model._msc is None:
            raise RuntimeError("the +-J benchmark model was not detected as +-J")
        self.s = to_namespace(s, ns)
        self.run()  # warm-up: compile kernels, allocate pools

    def run(self):
        from arraygen.gibbs import gibbs_sweeps

        out = gibbs_sweeps(self.model, self.s, n_sweeps=SWEEPS, rng=3,
                           multispin=self.multispin, backend=self.backend)
        synchronize(self.ns)
        return out

    def time_sweeps(self, param, mode, size):
        self.run()

    def track_updates_per_s(self, param, mode, size):
        return best_rate(self.run, size)

    track_updates_per_s.unit = "updates/s"
