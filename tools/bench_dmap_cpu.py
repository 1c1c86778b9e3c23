"""CPU timing of DiffusionMap.fit against a dense float64 kernel + SciPy eigsh (issue 20).

A short measuring script, not a test. Swiss roll (noise 0.05, d = 3), 8 nontrivial
eigenpairs, alpha = 0.5, the median epsilon; best of ``--repeat`` runs after a warm-up (kernel
compilation). The peer forms the N x N float64 kernel with NumPy, normalises it and calls
``scipy.sparse.linalg.eigsh(M, k=9, which="LA")`` (what a user with enough memory writes).

Run from the repository root::

    python tools/bench_dmap_cpu.py --sizes 2000 10000 --torch-sizes 2000 10000

and, for the code before a change, the same with ``PYTHONPATH`` pointing at an older copy of
the package. Each line: case, N, seconds, kernel calls, largest |lambda - lambda_peer|.

Block-sparse rows (issue 18): ``--truncate-sizes 20000 --truncate 3 4`` fits the swiss roll
with the self-tuning ``"knn"`` bandwidth (small: most of the kernel is negligible) exactly and
with ``DiffusionMap(truncate=...)`` (NumPy, the Numba CPU kernels, ``dense_kernel_mb=0`` so
the exact fit is the tiled one), and prints both times, the fraction of point pairs computed,
the reported ``mass_bound`` and the largest |lambda_truncated - lambda_exact|.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

K = 8


def roll(n: int) -> np.ndarray:
    from arraygen.datasets import swiss_roll

    return swiss_roll(n, noise=0.05, rng=0)[0]


def peer(x: np.ndarray, eps: float) -> np.ndarray:
    from scipy.sparse.linalg import eigsh

    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    k = np.exp(-d2 / eps)
    w = k.sum(1) ** -0.5
    ka = w[:, None] * k * w[None, :]
    s = ka.sum(1) ** -0.5
    m = s[:, None] * ka * s[None, :]
    return np.sort(eigsh(m, k=K + 1, which="LA")[0])[::-1]


def best(fn, repeat: int):
    out, times = None, []
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[2000, 10000])
    ap.add_argument("--torch-sizes", type=int, nargs="*", default=[2000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--truncate-sizes", type=int, nargs="*", default=[])
    ap.add_argument("--truncate", type=float, nargs="*", default=[3.0, 4.0])
    args = ap.parse_args(argv)
    import arraygen
    from arraygen.dmap import DiffusionMap

    print(f"# arraygen from {Path(arraygen.__file__).parent}")
    DiffusionMap(n_components=K, rng=0).fit(roll(300))             # warm-up / compile
    refs = {}
    for n in sorted(set(args.sizes) | set(args.torch_sizes)):
        x = roll(n)
        dm = DiffusionMap(n_components=K, rng=0).fit(x)
        eps = float(dm.epsilon_)
        if n <= 10000:
            t, ref = best(lambda: peer(x, eps), 1 if n > 5000 else args.repeat)
            refs[n] = ref
            print(f"peer dense f64 + scipy eigsh  N={n:6d}  {t:8.3f} s")
    for n in args.sizes:
        x = roll(n)
        t, dm = best(lambda: DiffusionMap(n_components=K, rng=0).fit(x),
                     1 if n > 5000 else args.repeat)
        err = np.max(np.abs(np.asarray(dm.eigenvalues_) - refs[n])) if n in refs else np.nan
        print(f"auto@numpy                    N={n:6d}  {t:8.3f} s  calls={dm.n_kernel_calls_:3d}"
              f"  err={err:.1e}  converged={dm.converged_}")
    if args.torch_sizes:
        import torch

        for n in args.torch_sizes:
            xt = torch.from_numpy(roll(n))
            t, dm = best(lambda: DiffusionMap(n_components=K, eigensolver="lanczos",
                                              rng=0).fit(xt), 1 if n > 5000 else args.repeat)
            lam = dm.eigenvalues_.numpy()
            err = np.max(np.abs(lam - refs[n])) if n in refs else np.nan
            print(f"lanczos@torch:cpu             N={n:6d}  {t:8.3f} s  "
                  f"calls={dm.n_kernel_calls_:3d}  err={err:.1e}  converged={dm.converged_}")
    for n in args.truncate_sizes:
        truncated_rows(n, args.truncate)
    sys.stdout.flush()


def truncated_rows(n: int, truncates) -> None:
    """Exact against block-sparse DiffusionMap, knn bandwidth, one run each (after warm-up)."""
    from arraygen.dmap import DiffusionMap

    x = roll(n)
    opts = {"n_components": K, "epsilon": "knn", "rng": 0, "dense_kernel_mb": 0}
    DiffusionMap(**opts, truncate=truncates[0]).fit(roll(2000))        # compile the kernels
    t_exact, exact = best(lambda: DiffusionMap(**opts).fit(x), 1)
    lam = np.asarray(exact.eigenvalues_)
    print(f"knn exact (tiled)             N={n:6d}  {t_exact:8.3f} s  "
          f"calls={exact.n_kernel_calls_:3d}")
    for trunc in truncates:
        t, dm = best(lambda trunc=trunc: DiffusionMap(**opts, truncate=trunc).fit(x), 1)
        rep = dm.truncation_
        err = np.max(np.abs(np.asarray(dm.eigenvalues_) - lam))
        print(f"knn truncate={trunc:<4g}            N={n:6d}  {t:8.3f} s  "
              f"calls={dm.n_kernel_calls_:3d}  fraction={rep.fraction:.4f}  "
              f"mass_bound={rep.mass_bound:.2e}  err={err:.1e}  speedup={t_exact / t:.1f}x")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
