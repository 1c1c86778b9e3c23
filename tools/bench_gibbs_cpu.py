"""CPU Gibbs: arraygen's numba_cpu sweeps against the NumPy colour-by-colour heat bath, side by side.

Usage: ``PYTHONPATH=. python tools/bench_gibbs_cpu.py [--repeats 5] [--calls 5] [--sizes 256 1024]``.

Models (L x L torus, one chain, per-site float32 couplings as in
``asv_benchmarks/benchmarks/bench_gibbs.py``): ``nn`` (nearest neighbour, 2 colours; peer: the
benchmark's ``_checkerboard``) and ``local8`` (``local_offsets(1, skip=(3,))``, 8 offsets;
peer: the same roll-shifted heat bath over the model's colours). Each repeat times arraygen and
the peer (10 sweeps per call): ``--calls`` arraygen calls back to back (as asv times them), then
one peer call; the table shows medians over all calls in spin updates per second, and the median
of the first arraygen call of each block ("cold": caches and the second core left to the peer).
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
    args = parser.parse_args(argv)
    print(f"{'model':8} {'L':>5} {'numba_cpu':>10} {'(cold)':>9} {'NumPy peer':>10} {'ratio':>6}"
          f"  updates/s: medians over {args.repeats} blocks")
    for size in args.sizes:
        for name, model, s, peer in _cases(size):
            row = _measure(model, s, peer, size, args)
            print(f"{name:8} {size:5} " + row)


def _measure(model, s, peer, size, args):
    """One table row: arraygen's median rate (all calls, cold calls), the peer's, the ratio."""
    gen = np.random.default_rng(1)

    def ours():
        return gibbs.gibbs_sweeps(model, s, n_sweeps=SWEEPS, rng=3, backend="numba_cpu")

    ours()
    t_ours, t_cold, t_peer = [], [], []
    for _ in range(args.repeats):
        block = [_timed(ours) for _ in range(args.calls)]
        t_cold.append(block[0])
        t_ours += block
        if not args.no_peer:
            t_peer.append(_timed(lambda: peer(gen)))
    updates = SWEEPS * size * size
    rate = updates / np.median(t_ours)
    row = f"{rate:10.3g} {updates / np.median(t_cold):9.3g}"
    if t_peer:
        peer_rate = updates / np.median(t_peer)
        row += f" {peer_rate:10.3g} {rate / peer_rate:6.1f}"
    return row

if __name__ == "__main__":
    main()
