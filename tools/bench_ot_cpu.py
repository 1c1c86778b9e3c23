"""CPU latency of entropic OT on small problems, side by side with POT and GeomLoss.

Three tables (uniform points in the unit square, epsilon = 0.05, float64):

1. ``latency``: wall time to a marginal L1 error of 1e-6 at N = M = 256, 1024, 4096 for
   arraygen's ``sinkhorn`` (automatic path; plain and ``relaxation="auto"``), POT's default
   ``ot.sinkhorn`` (Sinkhorn-Knopp) *including* its ``ot.dist`` cost matrix, and GeomLoss's
   tensorized ``SamplesLoss("sinkhorn")`` (``blur = sqrt(epsilon / 2)``: GeomLoss's cost is
   |x - y|^2 / 2). POT's stopThr and GeomLoss's ``scaling`` are tightened until their plan's
   L1 error, recomputed here, is <= 1e-6; the time of that setting is reported.
2. ``machinery``: at N = M = 100, the time per iteration and the fixed per-call cost of the
   dense path, the tiled Array-API path and the tiled numba_cpu path.
3. ``before/after`` (``--before FILE``: the pre-split ``arraygen/ot.py``, e.g. from
   ``git show ce53b09~1:arraygen/ot.py > /tmp/ot_before.py``): ``all_finite`` calls and time
   per iteration of a 200-iteration 500 x 400 run.

Run: ``python tools/bench_ot_cpu.py [--sizes 256 1024 4096] [--before /tmp/ot_before.py]``;
on a shared machine pin BLAS/OpenMP to one thread for every library alike
(``OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1``).
Each time is the best of ``--repeat`` runs (default 3).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time
import warnings

import numpy as np

EPS, TOL = 0.05, 1e-6


def _best(fn, repeat: int) -> float:
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _l1_error(plan, a, b) -> float:
    return float(np.abs(plan.sum(1) - a).sum() + np.abs(plan.sum(0) - b).sum())


def _pot_time(x, y, repeat):
    import ot

    a, b = np.full(len(x), 1 / len(x)), np.full(len(y), 1 / len(y))
    for thr in (1e-6, 1e-7, 1e-8, 1e-9, 1e-10):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plan = ot.sinkhorn(a, b, ot.dist(x, y), EPS, stopThr=thr, numItermax=100000)
        if _l1_error(plan, a, b) <= TOL:
            run = lambda: ot.sinkhorn(a, b, ot.dist(x, y), EPS, stopThr=thr,  # noqa: E731
                                      numItermax=100000)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return _best(run, repeat), f"stopThr={thr:g}"
    return math.nan, "never reached"


def _geomloss_time(x, y, repeat):
    import torch
    from geomloss import SamplesLoss

    xt, yt = torch.tensor(x), torch.tensor(y)
    eps_gl = EPS / 2.0
    a, b = np.full(len(x), 1 / len(x)), np.full(len(y), 1 / len(y))
    cost = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1) / 2.0
    err = math.nan
    for scaling in (0.5, 0.7, 0.9, 0.95, 0.99):
        loss = SamplesLoss("sinkhorn", p=2, blur=math.sqrt(eps_gl), scaling=scaling,
                           debias=False, potentials=True, backend="tensorized")
        f, g = (t.numpy().ravel() for t in loss(xt, yt))
        plan = a[:, None] * b[None, :] * np.exp((f[:, None] + g[None, :] - cost) / eps_gl)
        err = _l1_error(plan, a, b)
        if err <= TOL or scaling == 0.99:
            how = f"scaling={scaling}" + ("" if err <= TOL else f", error {err:.1e} > {TOL:g}")
            return _best(lambda: loss(xt, yt), repeat), how
    return math.nan, f"never reached ({err:.1e})"


def latency(sizes, repeat, geomloss_max):
    from arraygen.sinkhorn import sinkhorn

    rng = np.random.default_rng(0)
    print(f"\n## time to marginal L1 error {TOL:g}, uniform in the unit square, eps {EPS}")
    print("| N = M | arraygen (plain) | arraygen (relaxation auto) | POT ot.sinkhorn + ot.dist "
          "| GeomLoss tensorized |")
    print("|---|---|---|---|---|")
    for n in sizes:
        x, y = rng.random((n, 2)), rng.random((n, 2))
        cells = []
        for relax in (1.0, "auto"):
            res = sinkhorn(x, y, epsilon=EPS, tol=TOL, relaxation=relax, max_iter=100000)
            assert res.converged and res.marginal_error <= TOL
            t = _best(lambda: sinkhorn(x, y, epsilon=EPS, tol=TOL, relaxation=relax,  # noqa: B023
                                       max_iter=100000), repeat)
            cells.append(f"{t * 1e3:.1f} ms ({res.n_iter} it)")
        for peer in (_pot_time, _geomloss_time):
            if peer is _geomloss_time and n > geomloss_max:
                cells.append(f"skipped (N > {geomloss_max})")
                continue
            try:
                t, how = peer(x, y, repeat)
                cells.append(f"{t * 1e3:.1f} ms ({how})")
            except ImportError:
                cells.append("not installed")
        print(f"| {n} | " + " | ".join(cells) + " |")


def machinery(repeat):
    from arraygen.sinkhorn import sinkhorn

    rng = np.random.default_rng(1)
    x, y = rng.random((100, 2)), rng.random((100, 2))
    print("\n## N = M = 100, eps 0.05: per iteration and per call (max_iter = 1)")
    print("| path | per iteration | per call (1 iteration) |")
    print("|---|---|---|")
    for label, backend in (("dense (automatic)", None), ("tiled array_api", "array_api"),
                           ("tiled numba_cpu", "numba_cpu")):
        def run(k, backend=backend):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return sinkhorn(x, y, epsilon=0.05, tol=1e-300, max_iter=k,
                                backend=backend).n_iter
        run(5)
        n = run(401)
        t1, tn = _best(lambda: run(1), repeat), _best(lambda: run(401), repeat)
        print(f"| {label} | {(tn - t1) / (n - 1) * 1e6:.1f} us | {t1 * 1e6:.0f} us |")


def _counting(module, names, calls):
    """Wrap ``module``'s functions ``names`` to count their calls; returns the originals."""
    saved = {}
    for name in names:
        fn = getattr(module, name)
        saved[name] = fn

        def wrapped(*args, _fn=fn, **kwargs):
            calls.append(1)
            return _fn(*args, **kwargs)
        setattr(module, name, wrapped)
    return saved


def before_after(path, repeat):
    import arraygen._array_api as aa
    import arraygen._validation as val
    from arraygen.sinkhorn import sinkhorn

    spec = importlib.util.spec_from_file_location("arraygen._ot_before", path)
    old = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = old
    spec.loader.exec_module(old)
    rng = np.random.default_rng(2)
    x, y = rng.random((500, 2)), rng.random((400, 2))
    print("\n## 500 x 400, 200 iterations (eps 1e-3, no early stop): validation in the loop")
    print("(before = the pre-split ot.py calling today's public tiled ops)")
    print("| version | all_finite + _validation calls | per iteration |")
    print("|---|---|---|")
    runs = (("before (ot.py, public kernel_logsumexp)", old.sinkhorn, None),
            ("after, tiled numba_cpu (same kernels)", sinkhorn, "numba_cpu"),
            ("after, automatic (dense)", sinkhorn, None))
    for label, fn, backend in runs:
        def run(k, fn=fn, backend=backend):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fn(x, y, epsilon=1e-3, tol=1e-300, max_iter=k, backend=backend)
        run(3)
        calls = []
        saved_aa = _counting(aa, ["all_finite"], calls)
        # host_float is the marginal-error check's one sync per check (allowed), not validation
        saved_val = _counting(val, [n for n in val.__all__ if callable(getattr(val, n))
                                    and n != "host_float"], calls)
        try:
            run(200)
        finally:
            for name, fn_ in saved_aa.items():
                setattr(aa, name, fn_)
            for name, fn_ in saved_val.items():
                setattr(val, name, fn_)
        t = (_best(lambda: run(200), repeat) - _best(lambda: run(1), repeat)) / 199
        print(f"| {label} | {len(calls)} | {t * 1e3:.3f} ms |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--before", help="path of the pre-split arraygen/ot.py")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--geomloss-max", type=int, default=1024,
                        help="largest N timed with GeomLoss's tensorized backend (slow)")
    args = parser.parse_args(argv)
    if not args.skip_latency:
        latency(args.sizes, args.repeat, args.geomloss_max)
    machinery(args.repeat)
    if args.before:
        before_after(args.before, args.repeat)


if __name__ == "__main__":
    main()
