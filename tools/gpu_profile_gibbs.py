"""Profile target for Nsight Compute: one 4096^2 nearest-neighbour sweep with a chosen CuPy kernel.

    ncu --kernel-name regex:gibbs --launch-skip 1 --launch-count 1 --section SpeedOfLight \
        python3 tools/gpu_profile_gibbs.py fused_stage32 [nn|local8]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from gpu_bench_gibbs import L, _model, _spins  # noqa: E402

from arraygen.backends.cupy import gibbs as cupy_gibbs  # noqa: E402
from arraygen.gibbs import gibbs_sweeps  # noqa: E402

cupy_gibbs.TUNING.override(kernel=sys.argv[1] if len(sys.argv) > 1 else "auto").__enter__()
model = _model(sys.argv[2] if len(sys.argv) > 2 else "nn", L)
s = _spins(L)
for _ in range(2):
    gibbs_sweeps(model, s, n_sweeps=1, rng=3, backend="cupy")
