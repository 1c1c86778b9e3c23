"""CPU Gibbs: arraygen's numba_cpu sweeps against the NumPy colour-by-colour heat bath, side by side.

Usage: ``PYTHONPATH=. python tools/bench_gibbs_cpu.py [--repeats 5] [--calls 5] [--sizes 256 1024]``.

Models (L x L torus, one chain, per-site float32 couplings as in
``asv_benchmarks/benchmarks/bench_gibbs.py``): ``nn`` (nearest neighbour, 2 colours; peer: the
benchmark's ``_checkerboard``) and ``local8`` (``local_offsets(1, skip=(3,))``, 8 offsets;
peer: the same roll-shifted heat bath over the model's colours). Each repeat times arraygen and
the peer (10 sweeps per call): ``--calls`` arraygen calls back to back (as asv times them), then
one peer call; the table shows medians over all calls in spin updates per second, and the median
of the first arraygen call of each block ("cold": caches and the second core left to the peer).

With thrml installed (``pip install thrml``, the ``bench`` extra), each block also times one call
of thrml's block Gibbs on the same model, up to ``--thrml-max-size`` (thrml builds the graph from
one Python object per node and edge: 3 s at 256^2 with 4 offsets): its ``IsingEBM`` with one edge
per site and offset carrying the same coupling, the model's colour classes as blocks, 10 sweeps
per call compiled once (``eqx.filter_jit``; the first call, compilation included, is reported
apart).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from arraygen import gibbs
from asv_benchmarks.benchmarks.bench_gibbs import SWEEPS, _checkerboard, _host_model


def _local_model(size):
    offsets = gibbs.local_offsets(1, skip=(3,))
    gen = np.random.default_rng(0)
    j = (0.2 + 0.05 * gen.standard_normal((len(offsets), 1, size, size))).astype(np.float32)
    h = (0.1 * gen.standard_normal((1, size, size))).astype(np.float32)
    s = np.where(gen.random((1, 1, size, size)) < 0.5, 1, -1).astype(np.int8)
    return offsets, j, h, s


def _stencil_peer(offsets, j, h, s, colors, n_colors, n_sweeps, gen):
    """Roll-shifted heat bath over any stencil's colours (what a NumPy user writes)."""
    masks = [colors == c for c in range(n_colors)]
    for _ in range(n_sweeps):
        for mask in masks:
            g = np.broadcast_to(h, s.shape).copy()
            for k, (_, dy, dx) in enumerate(offsets):
                g += j[k] * np.roll(s, (-dy, -dx), (-2, -1))
                g += np.roll(j[k] * s, (dy, dx), (-2, -1))
            p = 1.0 / (1.0 + np.exp(-2.0 * g))
            s = np.where(mask, np.where(gen.random(s.shape, dtype=np.float32) < p, 1.0, -1.0), s)
    return s


def _cases(size):
    j, h, s = _host_model(size)
    nn = gibbs.StencilIsing(gibbs.nearest_neighbour_offsets(), j, h, boundary="periodic")
    sf = s.astype(np.float32)
    yield ("nn", nn, s, lambda gen: _checkerboard("numpy", j, h, sf, SWEEPS, gen))
    offsets, j8, h8, s8 = _local_model(size)
    loc = gibbs.StencilIsing(offsets, j8, h8, boundary="periodic")
    colors = np.asarray(loc.colors)
    sf8 = s8.astype(np.float32)
    yield ("local8", loc, s8, lambda gen: _stencil_peer(offsets, j8, h8, sf8, colors,
                                                         loc.n_colors, SWEEPS, gen))


def _thrml_sweeps(model, s, n_sweeps=SWEEPS):
    """``(call, setup seconds, to_grid)``: ``call()`` runs thrml's block Gibbs for ``n_sweeps``
    sweeps of ``model`` (one chain, periodic, C = 1, beta = 1) from the spins ``s`` with a new key
    each time and returns thrml's per-block states, which ``to_grid`` turns into the spins (H, W)
    in {-1, +1} (outside the timed call); None when thrml is not installed."""
    try:
        import equinox as eqx
        import jax
        import jax.numpy as jnp
        import thrml
        from thrml.models import IsingEBM, IsingSamplingProgram
    except ImportError:
        return None
    t0 = time.perf_counter()
    j, h = np.asarray(model.couplings)[:, 0], np.asarray(model.bias)[0]
    sites = np.arange(h.size).reshape(h.shape)
    nodes = [thrml.SpinNode() for _ in range(h.size)]
    edges = [(nodes[a], nodes[b]) for _, dy, dx in model.offsets
             for a, b in zip(sites.ravel(), np.roll(sites, (-dy, -dx), (0, 1)).ravel())]
    ebm = IsingEBM(nodes, edges, jnp.asarray(h.ravel()), jnp.asarray(j.ravel()),
                   jnp.asarray(1.0, dtype=jnp.float32))
    colours = np.asarray(model.colors).ravel()
    members = [np.flatnonzero(colours == c) for c in range(model.n_colors)]
    blocks = [thrml.Block([nodes[i] for i in m]) for m in members]
    program = IsingSamplingProgram(ebm, blocks, clamped_blocks=[])
    schedule = thrml.SamplingSchedule(n_warmup=n_sweeps, n_samples=1, steps_per_sample=1)
    up = np.asarray(s).ravel() > 0
    start = [jnp.asarray(up[m]) for m in members]
    run = eqx.filter_jit(lambda key: thrml.sample_states(key, program, schedule, start, [], blocks))
    seeds = iter(range(2**30))

    def to_grid(states):
        spins = np.empty(h.size, dtype=np.int8)
        for m, block in zip(members, states):
            spins[m] = np.where(np.asarray(block)[0], 1, -1)
        return spins.reshape(h.shape)

    call = lambda: jax.block_until_ready(run(jax.random.key(next(seeds))))
    return call, time.perf_counter() - t0, to_grid


def _thrml_check(size, n_sweeps, chains=8):
    """The same model in thrml and arraygen: the mean of s(x) s(x + 1) after ``n_sweeps`` sweeps
    from the same start, over ``chains`` chains each (nearest neighbour, L = size)."""
    _, model, s, _ = next(_cases(size))
    thrml_run = _thrml_sweeps(model, s, n_sweeps)
    if thrml_run is None:
        print("thrml is not installed")
        return
    call, _, to_grid = thrml_run
    pair = lambda a: float((a * np.roll(a, -1, -1)).mean())
    theirs = [pair(to_grid(call())) for _ in range(chains)]
    ours = [pair(np.asarray(gibbs.gibbs_sweeps(model, s, n_sweeps=n_sweeps, rng=10 + c,
                                               backend="numba_cpu"))[0, 0])
            for c in range(chains)]
    for name, v in (("thrml", theirs), ("numba_cpu", ours)):
        error = np.std(v) / np.sqrt(chains)
        print(f"{name:9} mean s(x) s(x + 1) after {n_sweeps} sweeps: {np.mean(v):.5f} "
              f"+- {error:.5f} (standard error, {chains} chains, L = {size})")


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="blocks (arraygen, then peer)")
    parser.add_argument("--calls", type=int, default=5, help="arraygen calls per block")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--no-peer", action="store_true", help="time arraygen only")
    parser.add_argument("--thrml-max-size", type=int, default=256,
                        help="largest L timed with thrml (when installed)")
    parser.add_argument("--thrml-check", type=int, metavar="SWEEPS",
                        help="only compare thrml's and arraygen's nearest-neighbour correlation "
                             "after SWEEPS sweeps (the same model in both)")
    args = parser.parse_args(argv)
    if args.thrml_check:
        _thrml_check(args.sizes[0], args.thrml_check)
        return
    print(f"{'model':8} {'L':>5} {'numba_cpu':>10} {'(cold)':>9} {'NumPy peer':>10} {'ratio':>6}"
          f" {'thrml':>10} {'ratio':>6}  updates/s: medians over {args.repeats} blocks")
    notes = []
    for size in args.sizes:
        for name, model, s, peer in _cases(size):
            thrml_run = None
            if not args.no_peer and size <= args.thrml_max_size:
                thrml_run = _thrml_sweeps(model, s)
            thrml_call = None
            if thrml_run is not None:
                thrml_call, setup, _ = thrml_run
                first = _timed(thrml_call)
                notes.append(f"thrml {name} L={size}: graph built in {setup:.1f} s, "
                             f"first call (compilation) {first:.1f} s")
            row = _measure(model, s, peer, thrml_call, size, args)
            print(f"{name:8} {size:5} " + row)
    if notes:
        print("\n".join(notes))


def _measure(model, s, peer, thrml_run, size, args):
    """One table row: arraygen's median rate (all calls, cold calls), then the NumPy peer's and
    thrml's (when given) with arraygen's ratio to each."""
    gen = np.random.default_rng(1)

    def ours():
        return gibbs.gibbs_sweeps(model, s, n_sweeps=SWEEPS, rng=3, backend="numba_cpu")

    ours()
    t_ours, t_cold, t_peer, t_thrml = [], [], [], []
    for _ in range(args.repeats):
        block = [_timed(ours) for _ in range(args.calls)]
        t_cold.append(block[0])
        t_ours += block
        if not args.no_peer:
            t_peer.append(_timed(lambda: peer(gen)))
        if thrml_run is not None:
            t_thrml.append(_timed(thrml_run))
    updates = SWEEPS * size * size
    rate = updates / np.median(t_ours)
    row = f"{rate:10.3g} {updates / np.median(t_cold):9.3g}"
    for times in (t_peer, t_thrml):
        if times:
            peer_rate = updates / np.median(times)
            row += f" {peer_rate:10.3g} {rate / peer_rate:6.1f}"
        else:
            row += f" {'-':>10} {'-':>6}"
    return row

if __name__ == "__main__":
    main()
