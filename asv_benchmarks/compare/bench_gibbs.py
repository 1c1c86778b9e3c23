"""Gibbs sweeps beside the checkerboard heat bath a NumPy / torch user writes, and thrml.

* ``peer:checkerboard``: the vectorised colour-by-colour heat bath (roll-shifted neighbours,
  per-site couplings, the library's own uniform generator), NumPy or torch;
* ``peer:thrml``: thrml's ``IsingEBM`` block sampler on the same model, run the way its users
  run it: the two colour classes as blocks, ``SamplingSchedule(n_warmup=SWEEPS, n_samples=1,
  steps_per_sample=1)`` (SWEEPS sweeps per call) compiled once with ``eqx.filter_jit`` in
  ``setup`` (as ``tools/bench_gibbs_cpu.py``). thrml builds its graph from one Python object per
  node and edge, so it is timed up to 256^2.

Problem and sizes: ``asv_benchmarks/benchmarks/bench_gibbs.py``.
"""

from __future__ import annotations

import numpy as np

from ._tracking import tracking

T = tracking("bench_gibbs")
C = tracking("common")

PARAMS = C.with_gpu(["numba_cpu@numpy", "peer:checkerboard@numpy", "peer:checkerboard@torch:cpu",
                     "peer:thrml@numpy"],
                    ["cupy@cupy", "peer:checkerboard@torch:cuda"])
SIZES = [256, 1024, 4096]


def checkerboard(ns, j, h, s, masks, n_sweeps, gen):
    """Vectorised two-colour heat bath (what a user writes): float spins, roll-shifted sums."""
    if ns.startswith("torch"):
        import torch

        roll, where, exp = torch.roll, torch.where, torch.exp
        rand = lambda: torch.rand(s.shape, device=s.device)  # noqa: E731
    else:
        roll, where, exp = np.roll, np.where, np.exp
        rand = lambda: gen.random(s.shape, dtype=np.float32)  # noqa: E731
    for _ in range(n_sweeps):
        for mask in masks:
            g = (h + j[0] * roll(s, -1, -1) + roll(j[0] * s, 1, -1)
                 + j[1] * roll(s, -1, -2) + roll(j[1] * s, 1, -2))
            p = 1.0 / (1.0 + exp(-2.0 * g))
            s = where(mask, where(rand() < p, 1.0, -1.0), s)
    return s


def thrml_program(j, h, s, n_sweeps):
    """A jitted ``call(key)`` running thrml's block Gibbs for ``n_sweeps`` sweeps of the torus."""
    thrml = C.require_module("thrml", "thrml")
    eqx = C.require_module("equinox", "thrml")
    jax = C.require_module("jax", "thrml")
    import jax.numpy as jnp
    from thrml.models import IsingEBM, IsingSamplingProgram

    size = h.shape[-1]
    sites = np.arange(size * size).reshape(size, size)
    nodes = [thrml.SpinNode() for _ in range(size * size)]
    edges, weights = [], []
    for k, (dy, dx) in enumerate(((0, 1), (1, 0))):
        nbr = np.roll(sites, (-dy, -dx), (0, 1))
        edges += [(nodes[a], nodes[b]) for a, b in zip(sites.ravel(), nbr.ravel())]
        weights.append(j[k, 0].ravel())
    ebm = IsingEBM(nodes, edges, jnp.asarray(h.ravel()), jnp.asarray(np.concatenate(weights)),
                   jnp.asarray(1.0, dtype=jnp.float32))
    colour = ((sites // size + sites % size) % 2).ravel()
    members = [np.flatnonzero(colour == c) for c in (0, 1)]
    blocks = [thrml.Block([nodes[i] for i in m]) for m in members]
    program = IsingSamplingProgram(ebm, blocks, clamped_blocks=[])
    schedule = thrml.SamplingSchedule(n_warmup=n_sweeps, n_samples=1, steps_per_sample=1)
    up = np.asarray(s).ravel() > 0
    start = [jnp.asarray(up[m]) for m in members]
    run = eqx.filter_jit(lambda key: thrml.sample_states(key, program, schedule, start, [],
                                                         blocks))
    return lambda seed: jax.block_until_ready(run(jax.random.key(seed)))


class GibbsSweeps:
    params = [PARAMS, SIZES]
    param_names = ["backend", "size"]
    timeout = 900

    def setup(self, param, size):
        backend, ns = C.split(param)
        if size > 1024 and not C.on_gpu(ns):
            raise NotImplementedError("4096^2 only on GPU")
        self.backend, self.ns, self.size = backend, ns, size
        j, h, s = T.host_model(size)
        if backend == "peer:thrml":
            if size > 256:
                raise NotImplementedError("thrml's graph build (a Python object per edge) is "
                                          "too slow above 256^2")
            self.thrml = thrml_program(j, h, s, T.SWEEPS)
            self.seed = 0
        elif backend == "peer:checkerboard":
            self.j, self.h = C.to_namespace(j, ns), C.to_namespace(h, ns)
            self.s = C.to_namespace(s.astype(np.float32), ns)
            yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
            self.masks = [C.to_namespace((yy + xx) % 2 == c, ns) for c in (0, 1)]
            self.gen = np.random.default_rng(1)
        else:
            C.require_backend(backend)
            from arraygen.gibbs import StencilIsing, nearest_neighbour_offsets

            self.model = StencilIsing(nearest_neighbour_offsets(), C.to_namespace(j, ns),
                                      C.to_namespace(h, ns), boundary="periodic")
            self.s = C.to_namespace(s, ns)
        self.run()  # warm-up: compile (thrml: jit), allocate pools

    def run(self):
        if self.backend == "peer:thrml":
            self.seed += 1
            return self.thrml(self.seed)
        if self.backend == "peer:checkerboard":
            out = checkerboard(self.ns, self.j, self.h, self.s, self.masks, T.SWEEPS, self.gen)
        else:
            from arraygen.gibbs import gibbs_sweeps

            out = gibbs_sweeps(self.model, self.s, n_sweeps=T.SWEEPS, rng=3, backend=self.backend)
        C.synchronize(self.ns)
        return out

    def time_sweeps(self, param, size):
        self.run()

    def track_updates_per_s(self, param, size):
        return T.best_rate(self.run, size)

    track_updates_per_s.unit = "updates/s"
