"""Overhead of arraygen's Dask path against the in-memory call (CPU, LocalCluster).

Times ``kernel_matvec`` / ``kernel_logsumexp`` on row-chunked dask input (2 workers x 1 thread,
NumPy chunks, numba_cpu kernels inside every task) against the same call on the whole NumPy
array (2 threads), side by side in one run, and the graph size and build time per call.
With ``--sinkhorn`` it also times Sinkhorn iterations on dask input against NumPy, with
``--gibbs L`` Gibbs sweeps of an L x L lattice in 2 x 2 chunks (halo exchange every
``--sweeps-per-exchange`` sweeps; bitwise equal to the whole call) against NumPy.

    PYTHONPATH=. python tools/bench_dask.py --sizes 20000 200000 2000000 --m 2000
    PYTHONPATH=. python tools/bench_dask.py --sizes --sinkhorn 200000 --sinkhorn-m 2000 --sinkhorn-iters 20
    PYTHONPATH=. python tools/bench_dask.py --sizes --gibbs 2048 --sweeps 20
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[20_000, 200_000, 2_000_000])
    parser.add_argument("--m", type=int, default=2000, help="points of y (columns)")
    parser.add_argument("--d", type=int, default=3)
    parser.add_argument("--chunks", type=int, default=4, help="row chunks of x")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sinkhorn", type=int, default=0, metavar="N",
                        help="also time Sinkhorn iterations at N = M (0: skip)")
    parser.add_argument("--sinkhorn-m", type=int, default=0, metavar="M",
                        help="points of y for --sinkhorn (0: M = N)")
    parser.add_argument("--sinkhorn-iters", type=int, default=50)
    parser.add_argument("--check-every", type=int, default=1)
    parser.add_argument("--gibbs", type=int, default=0, metavar="L",
                        help="also time Gibbs sweeps on an L x L lattice (0: skip)")
    parser.add_argument("--sweeps", type=int, default=20)
    parser.add_argument("--sweeps-per-exchange", type=int, default=None)
    parser.add_argument("--boundary", choices=("open", "periodic"), default="open",
                        help="Gibbs boundary (periodic halos inject the wrapped uniforms)")
    args = parser.parse_args(argv)

    import dask.array as da
    import distributed

    import arraygen as ag

    cluster = distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1,
                                       dashboard_address=None, silence_logs=40)
    client = distributed.Client(cluster)
    gen = np.random.default_rng(0)
    y = gen.random((args.m, args.d), dtype=np.float32)
    v = gen.random(args.m, dtype=np.float32)
    rows = []
    for n in args.sizes:
        x = gen.random((n, args.d), dtype=np.float32)
        xd = da.from_array(x, chunks=(-(-n // args.chunks), args.d)).persist()
        distributed.wait(xd)
        ag.kernel_matvec(x[:10], y, v, beta=10.0)  # compile outside the timings
        ag.kernel_matvec(xd[:10], y, v, beta=10.0).compute()
        for op in ("kernel_matvec", "kernel_logsumexp"):
            fn = getattr(ag, op)
            call = (lambda a: fn(a, y, v, beta=10.0)) if op == "kernel_matvec" else (
                lambda a: fn(a, y, beta=10.0))
            t_mem = _best(lambda: call(x), args.repeats)
            t0 = time.perf_counter()
            lazy = call(xd)
            t_graph = time.perf_counter() - t0
            t_dask = _best(lambda: call(xd).compute(), args.repeats)
            same = bool(np.array_equal(call(xd).compute(), call(x)))
            rows.append(dict(op=op, n=n, m=args.m, d=args.d, chunks=args.chunks,
                             in_memory_s=t_mem, dask_s=t_dask, ratio=t_dask / t_mem,
                             graph_tasks=len(lazy.__dask_graph__()), graph_build_s=t_graph,
                             bitwise_equal=same))
            print(json.dumps(rows[-1]), flush=True)
    if args.sinkhorn:
        n = args.sinkhorn
        m = args.sinkhorn_m or n
        x = gen.random((n, args.d))
        yy = gen.random((m, args.d))
        kw = dict(epsilon=0.05, max_iter=args.sinkhorn_iters, tol=1e-30,
                  check_every=args.check_every)
        ag.sinkhorn(x[:50], yy[:50], **kw)
        ag.sinkhorn(da.from_array(x[:400], chunks=100), yy[:50], **kw)  # warm the workers
        t0 = time.perf_counter()
        ref = ag.sinkhorn(x, yy, **kw)
        t_mem = (time.perf_counter() - t0) / ref.n_iter
        xd = da.from_array(x, chunks=(-(-n // args.chunks), args.d)).persist()
        t0 = time.perf_counter()
        res = ag.sinkhorn(xd, yy, **kw)
        t_dask = (time.perf_counter() - t0) / res.n_iter
        f = res.f.compute() if hasattr(res.f, "compute") else np.asarray(res.f)
        rows.append(dict(op="sinkhorn_iteration", n=n, m=m, d=args.d, chunks=args.chunks,
                         n_iter=res.n_iter, check_every=args.check_every,
                         in_memory_s=t_mem, dask_s=t_dask, ratio=t_dask / t_mem,
                         max_abs_f_diff=float(np.max(np.abs(f - np.asarray(ref.f))))))
        print(json.dumps(rows[-1]), flush=True)
    if args.gibbs:
        from arraygen.gibbs import StencilIsing, gibbs_sweeps

        L = args.gibbs
        model = StencilIsing.nearest_neighbour((L, L), coupling=0.44,
                                                 boundary=args.boundary)
        s = np.where(gen.random((1, 1, L, L)) < 0.5, 1, -1).astype(np.int8)
        sd = da.from_array(s, chunks=(1, 1, L // 2, L // 2)).persist()
        kw = dict(n_sweeps=args.sweeps, beta=1.0, rng=0)
        gibbs_sweeps(model, s, n_sweeps=1, rng=0)  # compile outside the timings
        gibbs_sweeps(model, sd, n_sweeps=1, rng=0).compute()
        t_mem = _best(lambda: gibbs_sweeps(model, s, **kw), args.repeats)
        lazy = gibbs_sweeps(model, sd, sweeps_per_exchange=args.sweeps_per_exchange, **kw)
        t_dask = _best(lambda: gibbs_sweeps(model, sd, sweeps_per_exchange=args.sweeps_per_exchange,
                                            **kw).compute(), args.repeats)
        same = bool(np.array_equal(lazy.compute(), gibbs_sweeps(model, s, **kw)))
        rows.append(dict(op="gibbs_sweeps", n=L * L, sweeps=args.sweeps, chunks=4,
                         boundary=args.boundary,
                         sweeps_per_exchange=args.sweeps_per_exchange, in_memory_s=t_mem,
                         dask_s=t_dask, ratio=t_dask / t_mem,
                         graph_tasks=len(lazy.__dask_graph__()), bitwise_equal=same))
        print(json.dumps(rows[-1]), flush=True)
    client.close()
    cluster.close()
    print(f"# {os.cpu_count()} cores; {args.workers} workers x 1 thread vs in-memory")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
