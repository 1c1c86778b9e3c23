"""Gibbs hot path: block Gibbs sweeps of a periodic nearest-neighbour Ising model.

``backend`` parameters are ``"<backend>@<namespace>"`` or ``"peer:<name>@<namespace>"``:
``peer:checkerboard`` is the vectorised colour-by-colour heat bath a NumPy / torch user writes
(roll-shifted neighbours, per-site couplings, the library's own uniform generator);
``peer:thrml`` is thrml's IsingEBM block sampler on the same model (only if thrml imports).
Models: L x L torus, per-site couplings J = 0.4 + 0.1 N(0, 1), bias 0.1 N(0, 1), one chain,
``SWEEPS`` sweeps per timed call. ``track_updates_per_s`` reports spin updates per second.
"""

from __future__ import annotations

import time

import numpy as np

from .common import gpu_present, require_backend, split, synchronize, to_namespace

SIZES = [64, 256, 1024, 4096]
SWEEPS = 10
CPU_PARAMS = ["numba_cpu@numpy", "array_api@numpy", "peer:checkerboard@numpy",
              "array_api@torch:cpu", "peer:checkerboard@torch:cpu", "peer:thrml@numpy"]
GPU_PARAMS = ["cupy@cupy", "triton@torch:cuda", "numba_cuda@cupy", "array_api@torch:cuda",
              "peer:checkerboard@torch:cuda"]
PARAMS = CPU_PARAMS + (GPU_PARAMS if gpu_present() else [])


def _host_model(size):
    gen = np.random.default_rng(0)
    j = (0.4 + 0.1 * gen.standard_normal((2, 1, size, size))).astype(np.float32)
    h = (0.1 * gen.standard_normal((1, size, size))).astype(np.float32)
    s = np.where(gen.random((1, 1, size, size)) < 0.5, 1, -1).astype(np.int8)
    return j, h, s


def _checkerboard(ns, j, h, s, n_sweeps, gen):
    """Vectorised two-colour heat bath (what a user writes): float spins, roll-shifted sums."""
    if ns.startswith("torch"):
        import torch

        roll, where, exp = torch.roll, torch.where, torch.exp
        rand = lambda: torch.rand(s.shape, device=s.device)
    else:
        roll, where, exp = np.roll, np.where, np.exp
        rand = lambda: gen.random(s.shape, dtype=np.float32)
    size = s.shape[-1]
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    masks = [to_namespace(((yy + xx) % 2 == c), ns) for c in (0, 1)]
    for _ in range(n_sweeps):
        for mask in masks:
            g = (h + j[0] * roll(s, -1, -1) + roll(j[0] * s, 1, -1)
                 + j[1] * roll(s, -1, -2) + roll(j[1] * s, 1, -2))
            p = 1.0 / (1.0 + exp(-2.0 * g))
            s = where(mask, where(rand() < p, 1.0, -1.0), s)
    return s


def _thrml_program(j, size):
    """thrml's IsingEBM and a two-block (checkerboard) sampling program on the same torus."""
    import jax
    import jax.numpy as jnp
    from thrml import Block, SamplingSchedule, SpinNode
    from thrml.models import IsingEBM, IsingSamplingProgram, hinton_init

    nodes = [SpinNode() for _ in range(size * size)]
    edges, weights = [], []
    for y in range(size):
        for x in range(size):
            i = y * size + x
            edges.append((nodes[i], nodes[y * size + (x + 1) % size]))
            weights.append(j[0, 0, y, x])
            edges.append((nodes[i], nodes[((y + 1) % size) * size + x]))
            weights.append(j[1, 0, y, x])
    even = Block([nodes[y * size + x] for y in range(size) for x in range(size) if (x + y) % 2 == 0])
    odd = Block([nodes[y * size + x] for y in range(size) for x in range(size) if (x + y) % 2 == 1])
    model = IsingEBM(nodes, edges, jnp.zeros(len(nodes)), jnp.asarray(weights), jnp.array(1.0))
    program = IsingSamplingProgram(model, [even, odd], clamped_blocks=[])
    init = hinton_init(jax.random.key(0), model, [even, odd], ())
    return program, init, SamplingSchedule


class GibbsSweeps:
    params = [PARAMS, SIZES]
    param_names = ["backend", "size"]
    timeout = 900

    def setup(self, param, size):
        backend, ns = split(param)
        if size > 1024 and not ns.endswith(("cuda", "cupy")):
            raise NotImplementedError("4096^2 only on GPU")
        self.backend, self.ns, self.size = backend, ns, size
        j, h, s = _host_model(size)
        if backend == "peer:thrml":
            try:
                import thrml  # noqa: F401
            except ImportError:
                raise NotImplementedError("thrml is not installed") from None
            if size > 256:
                raise NotImplementedError("thrml's graph setup is too slow above 256^2")
            self.program, self.init, schedule = _thrml_program(j, size)
            self.schedule = schedule(0, 1, SWEEPS)
        elif backend.startswith("peer:"):
            self.j, self.h = to_namespace(j, ns), to_namespace(h, ns)
            self.s = to_namespace(s.astype(np.float32), ns)
            self.gen = np.random.default_rng(1)
        else:
            require_backend(backend)
            from arraygen.gibbs import StencilIsing, nearest_neighbour_offsets

            self.model = StencilIsing(nearest_neighbour_offsets(), to_namespace(j, ns),
                                      to_namespace(h, ns), boundary="periodic")
            self.s = to_namespace(s, ns)
        self.run()  # warm-up: compile kernels, allocate pools

    def run(self):
        if self.backend == "peer:thrml":
            import jax
            from thrml import sample_states

            out = sample_states(jax.random.key(1), self.program, self.schedule, self.init, [],
                                self.program.gibbs_spec.free_blocks)
            jax.block_until_ready(out)
            return out
        if self.backend.startswith("peer:"):
            out = _checkerboard(self.ns, self.j, self.h, self.s, SWEEPS, self.gen)
        else:
            from arraygen.gibbs import gibbs_sweeps

            out = gibbs_sweeps(self.model, self.s, n_sweeps=SWEEPS, rng=3, backend=self.backend)
        synchronize(self.ns)
        return out

    def time_sweeps(self, param, size):
        self.run()

    def peakmem_sweeps(self, param, size):
        self.run()

    def track_updates_per_s(self, param, size):
        best = np.inf
        for _ in range(3):
            t0 = time.perf_counter()
            self.run()
            best = min(best, time.perf_counter() - t0)
        return SWEEPS * size * size / best

    track_updates_per_s.unit = "updates/s"
