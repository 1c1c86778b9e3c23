"""Run the GPU test suite and the GPU benchmarks in one call, and print a short table last.

Usage on the device machine (see tools/gpu_run.sh, which installs the carried wheels first)::

    python3 tools/gpu_suite.py [--only fisher,tiled] [--no-tests] [--gpu-only] [--quick]

Benchmarks are the modules ``tools/gpu_bench_<name>.py``; each has ``run(quick) -> list[dict]``
returning rows made by :func:`gpu_common.row`. Full logs and JSON go to $OUT when set.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))  # the repo root: arraygen, asv_benchmarks


def _bench_names() -> list[str]:
    return sorted(p.stem.removeprefix("gpu_bench_") for p in HERE.glob("gpu_bench_*.py"))


def _workers() -> list[str]:
    """pytest-xdist arguments when it is installed: kernel compilation dominates the GPU suite
    and is CPU-bound, so one worker per spare core (ARRAYGEN_TEST_WORKERS overrides)."""
    try:
        import xdist  # noqa: F401
    except ImportError:
        return []
    n = int(os.environ.get("ARRAYGEN_TEST_WORKERS", max(1, min(14, (os.cpu_count() or 2) - 2))))
    return ["-n", str(n)] if n > 1 else []


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="", help="comma list of benchmark names")
    parser.add_argument("--tests", default="tests", help="pytest target(s), space separated")
    parser.add_argument("--no-tests", action="store_true")
    parser.add_argument("--no-bench", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--gpu-only", action="store_true",
                        help="only the tests that run a GPU kernel or a GPU namespace (ids "
                             "naming cupy, cuda, triton, gpu or stream): the rest is the CPU "
                             "suite CI runs, a third of the GPU run's time")
    args = parser.parse_args()
    out_dir = Path(os.environ.get("OUT", "/tmp/arraygen-gpu-out"))
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, ARRAYGEN_TEST_SIMULATE="0")
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    env.pop("TRITON_INTERPRET", None)
    summary = []
    if not args.no_tests:
        t0 = time.time()
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout=900",
               "--durations=25", *_workers(), *args.tests.split()]
        if args.gpu_only:
            cmd += ["-k", "cupy or cuda or triton or gpu or stream"]
        with open(out_dir / "tests.log", "w") as log:  # written as it goes: kept on timeout
            proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        text = (out_dir / "tests.log").read_text()
        tail = [ln for ln in text.splitlines() if ln.strip()][-25:]
        print("\n".join(tail))
        summary.append(f"tests: exit {proc.returncode} in {time.time() - t0:.0f} s")
    rows = []
    if not args.no_bench:
        names = [n for n in args.only.split(",") if n] or _bench_names()
        for name in names:
            try:
                module = importlib.import_module(f"gpu_bench_{name}")
                rows += module.run(quick=args.quick)
            except Exception:
                traceback.print_exc()
                summary.append(f"bench {name}: FAILED (traceback above)")
        (out_dir / "bench.json").write_text(json.dumps(rows, indent=1))
    if rows:
        from gpu_common import copy_bandwidth_gbs

        print(f"\ncopy bandwidth (same run): {copy_bandwidth_gbs():.0f} GB/s")
        print(f"{'op':26s} {'backend':12s} {'size':16s} {'ms':>9s} {'value':>10s} {'metric':8s} "
              f"{'ceil':>6s} {'peer':18s} {'x peer':>7s} {'rel err':>8s}")
        for r in rows:
            print(f"{r['op']:26s} {r['backend']:12s} {r['size']:16s} {r['ms']:9.3f} "
                  f"{r['value']:10.4g} {r['metric']:8s} {_fmt(r['frac_ceiling'], '6.1%')} "
                  f"{(r['peer'] or '-'):18s} {_fmt(r['vs_peer'], '7.2f')} {_fmt(r['rel_err'], '8.1e')}")
    for line in summary:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
