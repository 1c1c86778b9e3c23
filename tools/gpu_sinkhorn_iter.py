"""Sinkhorn time per iteration on the GPU, this checkout against a baseline checkout.

Each version runs in its own subprocess (``PYTHONPATH`` points at it), on the same data:
N = M = 65,536 points in 3-D, float32 torch CUDA tensors, epsilon 0.01, a fixed number of
iterations (tol below reach). The per-iteration time shows what validation and host syncs
inside the loop cost.

    python tools/gpu_sinkhorn_iter.py --baseline .baseline   # on the device machine
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, sys, time, torch
import arraygen as ag
n, iters = int(sys.argv[1]), int(sys.argv[2])
g = torch.Generator(device="cuda").manual_seed(0)
x = torch.rand(n, 3, device="cuda", generator=g)
y = torch.rand(n, 3, device="cuda", generator=g)
kw = dict(epsilon=0.01, max_iter=iters, tol=1e-30)
ag.sinkhorn(x[:4096], y[:4096], **kw)
torch.cuda.synchronize()
best = None
for _ in range(3):
    t0 = time.perf_counter()
    res = ag.sinkhorn(x, y, **kw)
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / res.n_iter
    best = dt if best is None else min(best, dt)
print(json.dumps(dict(source=ag.__file__, n=n, n_iter=int(res.n_iter), ms_per_iter=best * 1e3,
                      cost=float(res.cost))))
"""


def run(quick: bool = False, baseline: str | None = None) -> list[dict]:
    n = 16384 if quick else 65536
    rows = []
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for label, root in (("baseline", baseline), ("this checkout", here)):
        if root is None:
            continue
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [os.path.abspath(root)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                                       if p and os.path.abspath(p) != here]))
        # `python -c` puts the working directory first on sys.path: run in the checkout itself
        out = subprocess.run([sys.executable, "-c", CHILD, str(n), "40"], env=env,
                             cwd=os.path.abspath(root), capture_output=True, text=True)
        line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
        if out.returncode or not line.startswith("{"):
            print(out.stdout[-2000:], out.stderr[-4000:])
            continue
        row = dict(json.loads(line), label=label)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--baseline")
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    run(a.quick, a.baseline)
