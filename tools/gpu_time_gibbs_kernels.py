"""Time forced CuPy Gibbs sweep kernels side by side on the benchmark models (one call of
``--sweeps`` sweeps each, so the per-call spin check is amortised).

    python3 tools/gpu_time_gibbs_kernels.py local8 stream64x4 stream32x4 fused [--sweeps 100]
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from gpu_bench_gibbs import L, _model, _spins
from gpu_common import bench_ms

from arraygen.backends.cupy import gibbs as cupy_gibbs
from arraygen.gibbs import gibbs_sweeps

parser = argparse.ArgumentParser()
parser.add_argument("model", choices=("nn", "local8"))
parser.add_argument("choices", nargs="+", help="values of cupy gibbs.Tuning.kernel")
parser.add_argument("--sweeps", type=int, default=100)
args = parser.parse_args()
model = _model(args.model, L)
s = _spins(L)
reference = None
for choice in args.choices:
    forced = cupy_gibbs.TUNING.override(kernel=choice)
    forced.__enter__()
    out = gibbs_sweeps(model, s, n_sweeps=2, rng=3, backend="cupy")
    reference = out if reference is None else reference
    same = bool((out == reference).all())
    ms = bench_ms(lambda: gibbs_sweeps(model, s, n_sweeps=args.sweeps, rng=3, backend="cupy"),
                  rep_ms=300)
    rate = args.sweeps * L * L / (ms * 1e-3)
    print(f"{args.model:7s} {choice:14s} {ms / args.sweeps:8.4f} ms/sweep {rate:.3e} upd/s  "
          f"same as first: {same}", flush=True)
    forced.__exit__(None, None, None)
