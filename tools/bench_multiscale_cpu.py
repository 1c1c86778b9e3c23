"""CPU time to a marginal error of 1e-3: multiscale Sinkhorn against the exact solver and
GeomLoss's multiscale backend (issue 18, "Speed it must reach", CPU row).

Problem: N = M = 50,000 points in the unit cube, d = 3, float32; ``x`` uniform, ``y`` a
warped uniform cloud ``0.5 (u + u^2)`` (same cube, different density); uniform weights;
epsilon = 0.01 in arraygen's convention (cost ``|x - y|^2``, plan
``a_i b_j exp((f_i + g_j - C_ij) / eps)``); target marginal L1 error 1e-3.

Rows of the table:

* ``arraygen multiscale``: ``sinkhorn(x, y, epsilon=eps, tol=1e-3, method="multiscale")``
  (plain, and ``relaxation="auto"``); its ``marginal_error`` is already exact (a dense float64
  pass over all N M pairs, included in the time).
* ``arraygen exact``: the same call with ``method="exact"``: defaults (no annealing, plain
  Sinkhorn) and the fastest exact setting (``scaling=0.5, relaxation="auto"``). Minutes: run
  once each; ``--skip-exact`` leaves them out.
* ``GeomLoss multiscale``: ``SamplesLoss("sinkhorn", p=2, blur=sqrt(eps / 2), scaling=s,
  debias=False, potentials=True, backend="multiscale")`` on float32 torch tensors. GeomLoss's
  cost is ``|x - y|^2 / 2`` and its temperature ``blur**p``, so blur = sqrt(eps / 2) is the
  same problem; its potentials are in half-cost units, so ``f = 2 f_GL``, ``g = 2 g_GL``.
  GeomLoss runs a fixed schedule (no tolerance): each ``scaling`` in ``--geomloss-scalings``
  is timed, and its marginal error is measured EXACTLY here from its potentials with
  arraygen's dense kernels in float64 (``kernel_logsumexp`` over all pairs, both marginals).
  KeOps compiles its formulas on first use: a 2,000-point call warms it up first, untimed.

Every time is one run (wall clock, ``time.perf_counter``); the 1-minute load average is printed
before each row (the machine is shared: compare rows measured at similar load).

Run: ``python tools/bench_multiscale_cpu.py [--n 50000] [--skip-exact] [--skip-geomloss]``.
"""

from __future__ import annotations

import argparse
import math
import os
import time
import warnings

import numpy as np

EPS, TOL = 0.01, 1e-3


def _load() -> float:
    return os.getloadavg()[0]


def _problem(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 3)).astype(np.float32)
    u = rng.random((n, 3))
    y = (0.5 * (u + u * u)).astype(np.float32)
    return x, y


def exact_marginal_error(x, y, f, g, eps: float = EPS) -> float:
    """L1 marginal error of the plan a_i b_j exp((f_i + g_j - |x_i - y_j|^2)/eps), uniform
    weights, over all pairs, in float64 with arraygen's dense tiled kernels."""
    from arraygen.tiled import kernel_logsumexp

    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    f, g = np.asarray(f, np.float64), np.asarray(g, np.float64)
    n, m = x.shape[0], y.shape[0]
    la, lb = -math.log(n), -math.log(m)
    rows = np.exp(la + f / eps + kernel_logsumexp(x64, y64, beta=1 / eps,
                                                  log_weights=lb + g / eps))
    cols = np.exp(lb + g / eps + kernel_logsumexp(y64, x64, beta=1 / eps,
                                                  log_weights=la + f / eps))
    return float(np.abs(rows - 1 / n).sum() + np.abs(cols - 1 / m).sum())


def run_arraygen(x, y, **kw):
    from arraygen.sinkhorn import sinkhorn

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sinkhorn(x, y, epsilon=EPS, tol=TOL, max_iter=5000, **kw)
    return time.perf_counter() - t0, res


def run_geomloss(x, y, scaling: float):
    import torch
    from geomloss import SamplesLoss

    loss = SamplesLoss("sinkhorn", p=2, blur=math.sqrt(EPS / 2), scaling=scaling,
                       debias=False, potentials=True, backend="multiscale")
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    t0 = time.perf_counter()
    f, g = loss(xt, yt)
    seconds = time.perf_counter() - t0
    return seconds, 2.0 * f.double().numpy().ravel(), 2.0 * g.double().numpy().ravel()


def _row(name, seconds, err, iters, note, load):
    ok = "yes" if err <= TOL else "no"
    print(f"| {name} | {seconds:.2f} | {err:.2e} | {ok} | {iters} | {note} | {load:.1f} |",
          flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--skip-exact", action="store_true")
    ap.add_argument("--skip-geomloss", action="store_true")
    ap.add_argument("--geomloss-scalings", type=float, nargs="+", default=[0.5, 0.7, 0.9])
    args = ap.parse_args(argv)
    x, y = _problem(args.n)
    # compile the numba kernels (dense and block-sparse, float32 and float64) untimed
    run_arraygen(x[:3000], y[:3000], method="multiscale")
    run_arraygen(x[:3000], y[:3000])
    print(f"N = M = {args.n}, d = 3, float32, epsilon = {EPS}, tol = {TOL}; "
          f"threads: NUMBA {os.environ.get('NUMBA_NUM_THREADS', 'default')}, "
          f"cpus {os.cpu_count()}")
    print("| solver | seconds | exact marginal error | <= 1e-3 | iterations | notes | load |")
    print("|---|---|---|---|---|---|---|")
    for kw in ({}, {"relaxation": "auto"}):
        load = _load()
        sec, res = run_arraygen(x, y, method="multiscale", **kw)
        info = res.info
        note = (f"{kw or 'defaults'}; clusters {info['clusters']}, coarse {info['coarse_iter']} "
                f"it, pairs computed {info['fraction']:.3f}, mass bounds "
                + ", ".join(f"{lv['mass_bound_rows']:.2g}/{lv['mass_bound_cols']:.2g}"
                            for lv in info["levels"]))
        _row("arraygen multiscale", sec, res.marginal_error, res.n_iter, note, load)
    if not args.skip_exact:
        for kw in ({}, {"scaling": 0.5, "relaxation": "auto"}):
            load = _load()
            sec, res = run_arraygen(x, y, method="exact", **kw)
            _row("arraygen exact", sec, res.marginal_error, res.n_iter, str(kw or "defaults"),
                 load)
    if not args.skip_geomloss:
        run_geomloss(x[:2000], y[:2000], 0.5)  # KeOps compiles its formulas (untimed)
        for s in args.geomloss_scalings:
            load = _load()
            sec, f, g = run_geomloss(x, y, s)
            err = exact_marginal_error(x, y, f, g)
            _row("GeomLoss multiscale", sec, err, "-", f"scaling={s}, truncate=5 (default)",
                 load)


if __name__ == "__main__":
    main()
