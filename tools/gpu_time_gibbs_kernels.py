"""Time forced CuPy Gibbs sweep kernels side by side on the benchmark models (one call of
``--sweeps`` sweeps each, so the per-call spin check is amortised).

    python3 tools/gpu_time_gibbs_kernels.py local8 stream64x4 stream32x4 fused [--sweeps 100]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from gpu_bench_gibbs import L, _model, _spins
from gpu_common import bench_ms

from arraygen.backends.cupy import gibbs as cupy_gibbs
from arraygen.gibbs import gibbs_sweeps

args = [a for a in sys.argv[1:] if not a.startswith("--")]
sweeps = int(sys.argv[sys.argv.index("--sweeps") + 1]) if "--sweeps" in sys.argv else 100
args = [a for a in args if a != str(sweeps)]
model = _model(args[0], L)
s = _spins(L)
reference = None
for choice in args[1:]:
    cupy_gibbs.KERNEL_CHOICE = choice
    out = gibbs_sweeps(model, s, n_sweeps=2, rng=3, backend="cupy")
    reference = out if reference is None else reference
    same = bool((out == reference).all())
    ms = bench_ms(lambda: gibbs_sweeps(model, s, n_sweeps=sweeps, rng=3, backend="cupy"), rep_ms=300)
    print(f"{args[0]:7s} {choice:14s} {ms / sweeps:8.4f} ms/sweep {sweeps * L * L / (ms * 1e-3):.3e} "
          f"upd/s  same as first: {same}", flush=True)
