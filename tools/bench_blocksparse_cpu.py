"""Block-sparse (``truncate=``) against dense ``kernel_logsumexp`` on the CPU (numba_cpu).

Uniform points in the unit cube, ``beta = 1 / epsilon``: the dense op, then ``truncate`` =
3, 4, 5 through the public op (clusters built once and reused: the time includes the pair list)
and through the private core on sorted inputs with a prebuilt pair list (what an iterative
solver pays per iteration). Reports the fraction of pairs computed, the ``mass_bound``, and the
largest relative error of the row kernel sums, ``expm1(lse_dense - lse_truncated)``, over a
subset of rows (the dense result of the same run is the reference).

    PYTHONPATH=. python tools/bench_blocksparse_cpu.py --n 50000 --d 3 --epsilon 0.01
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _best(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000, help="N = M points")
    parser.add_argument("--d", type=int, default=3)
    parser.add_argument("--epsilon", type=float, default=0.01, help="beta = 1 / epsilon")
    parser.add_argument("--truncate", type=float, nargs="+", default=[3.0, 4.0, 5.0])
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument("--block", type=int, default=None, help="points per cluster")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--subset", type=int, default=5000, help="rows checked for the error")
    parser.add_argument("--json", action="store_true", help="print one JSON object per row")
    args = parser.parse_args(argv)

    from arraygen import tiled
    from arraygen.blocksparse import _pairs, cluster_points

    rng = np.random.default_rng(0)
    x = rng.random((args.n, args.d)).astype(args.dtype)
    y = rng.random((args.n, args.d)).astype(args.dtype)
    beta = 1.0 / args.epsilon
    rows = rng.choice(args.n, size=min(args.subset, args.n), replace=False)
    xp = np

    # warm up (Numba compiles) on a small problem
    small = x[:2000], y[:2000]
    tiled.kernel_logsumexp(*small, beta=beta, backend="numba_cpu")
    tiled.kernel_logsumexp(*small, beta=beta, truncate=3.0, backend="numba_cpu")

    t_dense, dense = _best(lambda: tiled.kernel_logsumexp(x, y, beta=beta, backend="numba_cpu",
                                                          check_finite=False), args.repeats)
    t0 = time.perf_counter()
    cx = cluster_points(x, block=args.block)
    cy = cluster_points(y, block=args.block)
    t_cluster = time.perf_counter() - t0
    results = [{"case": "dense", "seconds": t_dense, "fraction": 1.0, "mass_bound": 0.0,
                    "max_rel_err": 0.0, "pairs_per_s": args.n * args.n / t_dense}]
    for t in args.truncate:
        t_op, (lse, rep) = _best(lambda t=t: tiled.kernel_logsumexp(
            x, y, beta=beta, truncate=t, x_clusters=cx, y_clusters=cy, return_report=True,
            backend="numba_cpu", check_finite=False), args.repeats)
        t0 = time.perf_counter()
        pairs = _pairs(xp, cx, cy, beta, t)
        t_pairs = time.perf_counter() - t0
        t_core, _ = _best(lambda pairs=pairs: tiled._logsumexp(xp, cx.points, cy.points, beta=beta,
                                                   backend="numba_cpu", pairs=pairs, xc=cx,
                                                   yc=cy), args.repeats)
        err = float(np.max(np.expm1(dense[rows].astype(np.float64)
                                    - lse[rows].astype(np.float64))))
        results.append({"case": f"truncate={t:g}", "seconds": t_op, "core_seconds": t_core,
                            "pairs_seconds": t_pairs, "fraction": rep.fraction,
                            "mass_bound": rep.mass_bound, "max_rel_err": err,
                            "speedup_core": t_dense / t_core,
                            "pairs_per_s": rep.fraction * args.n * args.n / t_core})
    header = (f"kernel_logsumexp numba_cpu N=M={args.n} d={args.d} beta={beta:g} {args.dtype} "
              f"block={cx.block}; cluster_points x2: {t_cluster:.3f} s")
    if args.json:
        print(json.dumps({"header": header}))
        for r in results:
            print(json.dumps(r))
        return 0
    print(header)
    print(f"{'case':>13} {'op s':>8} {'core s':>8} {'pairs s':>8} {'speedup':>8} "
          f"{'fraction':>9} {'mass_bound':>11} {'max rel err':>11} {'pairs/s':>9}")
    for r in results:
        print(f"{r['case']:>13} {r['seconds']:8.3f} {r.get('core_seconds', r['seconds']):8.3f} "
              f"{r.get('pairs_seconds', 0.0):8.3f} {r.get('speedup_core', 1.0):8.2f} "
              f"{r['fraction']:9.4f} {r['mass_bound']:11.3g} {r['max_rel_err']:11.3g} "
              f"{r['pairs_per_s']:9.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
