"""Per-call overhead of the public ops on small problems (issue 15: <= 50 us at N = 100).

Each op runs on plain C-contiguous float64 NumPy inputs (N = M = 100 points in d = 3, a
10 x 10 image for ``gaussian_filter``) with the automatic backend; the time reported is the
best over ``--repeat`` rounds of the mean over ``--number`` calls, after a warm-up (which also
compiles any Numba kernel).

Usage::

    python tools/bench_overhead.py                       # the arraygen on sys.path
    python tools/bench_overhead.py --before /tmp/overhead_before   # before/after table

``--before PATH`` runs the same measurements in a subprocess with ``PYTHONPATH=PATH`` (a copy
of an older ``arraygen/`` package placed in PATH) and prints both columns; ``--rounds`` runs
before and after alternately that many times and keeps each op's best (the machine may be
shared). ``--stub-kernels`` replaces every kernel launcher by one that returns its first result
again: what remains is the Python shell (validation, dispatch, wrapping) of each op.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

N = 100


def _cases():
    import numpy as np

    import arraygen
    from arraygen import tiled
    from arraygen.metrics import mmd

    rng = np.random.default_rng(0)
    x = rng.random((N, 3))
    y = rng.random((N, 3))
    v = rng.random(N)
    v2 = rng.random((N, 2))
    w = np.log(rng.random(N) + 0.1)
    score = rng.standard_normal((N, 3))
    ab = rng.random(N)
    vel = rng.random((N, 3))  # a running second moment: non-negative
    noise = rng.standard_normal((N, 3))
    img = rng.random((10, 10))
    return {
        "kernel_matvec": lambda: tiled.kernel_matvec(x, y, v, beta=2.0),
        "kernel_matvec (check_finite=False)":
            lambda: tiled.kernel_matvec(x, y, v, beta=2.0, check_finite=False),
        "kernel_matvec (v (M, 2))": lambda: tiled.kernel_matvec(x, y, v2, beta=2.0),
        "kernel_logsumexp": lambda: tiled.kernel_logsumexp(x, y, beta=2.0),
        "kernel_logsumexp (log_weights)":
            lambda: tiled.kernel_logsumexp(x, y, beta=2.0, log_weights=w),
        "kernel_softmax_matvec": lambda: tiled.kernel_softmax_matvec(x, y, v, beta=2.0),
        "fisher_diagonal": lambda: arraygen.fisher_diagonal(score, ab),
        "fisher_diagonal (scalar alpha_bar)": lambda: arraygen.fisher_diagonal(score, 0.5),
        "fisher_langevin_step": lambda: arraygen.fisher_langevin_step(
            x, score, vel, ab, step_size=0.01, noise=noise),
        "gaussian_filter (10x10)": lambda: arraygen.gaussian_filter(img, 1.0),
        "mmd": lambda: mmd(x, y, bandwidth=0.5),
    }


def _stub_kernels() -> None:
    from arraygen import _dispatch

    real = _dispatch.kernel
    memo = {}

    def kernel(op_name, backend):
        launcher = real(op_name, backend)

        def first_result(*args, **kwargs):
            key = (op_name, backend) + tuple(getattr(a, "shape", None) for a in args)
            if key not in memo:
                memo[key] = launcher(*args, **kwargs)
            return memo[key]

        return first_result

    _dispatch.kernel = kernel


def measure(number: int, repeat: int, stub: bool = False) -> dict[str, float]:
    """Best per-call time in microseconds of every case."""
    if stub:
        _stub_kernels()
    out = {}
    for name, fn in _cases().items():
        for _ in range(20):  # warm-up: compiles kernels, fills caches
            fn()
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            best = min(best, (time.perf_counter() - t0) / number)
        out[name] = best * 1e6
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=200, help="calls per round")
    parser.add_argument("--repeat", type=int, default=15, help="rounds (the best is kept)")
    parser.add_argument("--before", help="PYTHONPATH of the 'before' arraygen copy")
    parser.add_argument("--rounds", type=int, default=2, help="alternating before/after runs")
    parser.add_argument("--stub-kernels", action="store_true",
                        help="time the Python shell only (launchers return a cached result)")
    parser.add_argument("--json", action="store_true", help="print JSON (used by --before)")
    args = parser.parse_args()
    if args.json or not args.before:
        now = measure(args.number, args.repeat, args.stub_kernels)
        import arraygen

        if args.json:
            print(json.dumps({"path": os.path.dirname(arraygen.__file__), "times": now}))
            return

        print(f"arraygen from {os.path.dirname(arraygen.__file__)}; N = {N}, best of "
              f"{args.repeat} x {args.number} calls")
        for name, us in now.items():
            print(f"{name:38s} {us:9.1f} us")
        return

    def run(pythonpath: str | None) -> dict[str, float]:
        env = dict(os.environ)
        if pythonpath:
            env["PYTHONPATH"] = pythonpath
        cmd = [sys.executable, __file__, "--json", "--number", str(args.number),
               "--repeat", str(args.repeat)] + (["--stub-kernels"] if args.stub_kernels else [])
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        got = json.loads(res.stdout.strip().splitlines()[-1])
        return got["path"], got["times"]

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    before, after = {}, {}
    for _ in range(args.rounds):
        for best, path in ((before, args.before), (after, here)):
            got_path, times = run(path)
            best["path"] = got_path
            for name, us in times.items():
                best[name] = min(us, best.get(name, float("inf")))
    before_path, after_path = before.pop("path"), after.pop("path")
    what = "Python shell only (kernels stubbed)" if args.stub_kernels else "automatic backend"
    print(f"N = M = {N}, d = 3 (image 10 x 10), float64 NumPy, {what}; best of "
          f"{args.rounds} x {args.repeat} x {args.number} calls")
    print(f"before: {before_path}\nafter:  {after_path}")
    print(f"{'op':38s} {'before':>10s} {'after':>10s} {'ratio':>7s}")
    for name, b in before.items():
        a = after[name]
        print(f"{name:38s} {b:8.1f}us {a:8.1f}us {b / a:6.2f}x")


if __name__ == "__main__":
    main()
