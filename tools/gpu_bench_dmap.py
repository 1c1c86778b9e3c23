"""GPU benchmark of DiffusionMap.fit: swiss roll (noise 0.05, d=3), float32, 8 eigenpairs.

Target (issue 3): N = 1_000_000 in < 60 s and < 2 GB of GPU memory beyond the data (the
data itself is 12 MB). The fit is matrix-free: every step applies the tiled kernel (never
N x N), the Lanczos basis is O(N * ncv). Rows:

* ``dmap_fit`` (torch CUDA, eigensolver "auto" = Array-API block Lanczos with the default
  block_size=4 and the deflation check for repeated eigenvalues; also block_size=1 and CuPy +
  cupyx eigsh (+ the same check) in the full run): ``ms`` is the end-to-end fit time; ``value`` the
  effective kernel rate in Gpair/s = kernel calls x N^2 / fit time (a block call counts once);
  extra keys ``kernel_calls``, ``peak_extra_gb`` (torch.cuda.max_memory_allocated during the
  fit minus what was allocated before it), ``seconds``.
* N = 10_000: ``rel_err`` is max |lambda - lambda_ref| against dense float64
  ``torch.linalg.eigvalsh`` of the same operator; the peer is the dense float32 kernel matrix +
  ``torch.linalg.eigh`` (what a user with enough memory writes), timed in the same run.

* ``dmap_fit_knn`` (issue 18, target N = 1e6 in < 2 s): the self-tuning ``"knn"`` bandwidth
  (7 neighbours), exact (``exact_knn``: dense k-NN search + tiled kernel) and block-sparse
  (``truncate=3``/``4``: the k-NN search over candidate clusters and the kernel over the kept
  cluster pairs). Extra keys: ``fraction`` of point pairs computed, ``mass_bound``, and in
  ``rel_err`` the largest |lambda - lambda_exact| against the exact fit of the same run; also
  ``cluster_s``, the time of the clustering alone (kd order + bounds).

Run with ``bash tools/gpu_run.sh --only dmap`` (``--quick``: 10k and 1M with the default
solver only; the knn rows run in both).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpu_common import row, sync

K = 8


def _roll(n: int):
    import torch

    from arraygen.datasets import swiss_roll

    x, _ = swiss_roll(n, noise=0.05, rng=0, xp=torch, device=torch.device("cuda"),
                      dtype=torch.float32)
    return x.contiguous()


def _dense_operator(x, eps):
    import torch

    xc = x - x.mean(0)
    k = torch.exp(-torch.cdist(xc, xc).square() / eps)
    w = k.sum(1).pow(-0.5)
    k = w[:, None] * k * w[None, :]
    s = k.sum(1).rsqrt()
    return s[:, None] * k * s[None, :]


def _fit(x, **options):
    import torch

    from arraygen.dmap import DiffusionMap

    sync()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    start = time.perf_counter()
    dm = DiffusionMap(n_components=K, alpha=0.5, rng=0, **options).fit(x)
    sync()
    seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() - before) / 1e9
    return dm, seconds, peak


def _row(n, label, dm, seconds, peak, err=None, peer=None, peer_value=None):
    rate = dm.n_kernel_calls_ * float(n) ** 2 / seconds / 1e9
    r = row("dmap_fit", label, f"N={n},d=3,k={K}", seconds * 1e3, "Gpair/s", rate, None, peer,
            peer_value, err)
    r.update(seconds=seconds, kernel_calls=dm.n_kernel_calls_, peak_extra_gb=peak,
             eigensolver=dm.eigensolver_, converged=dm.converged_,
             block_size=dm.block_size,
             max_residual=float(dm.residuals_.max()))
    return r


def _small(rows, quick):
    import torch

    n = 10_000
    x = _roll(n)
    _fit(_roll(2_000))                                   # warm-up: kernel compilation
    dm, seconds, peak = _fit(x)
    m64 = _dense_operator(x.double(), float(dm.epsilon_))
    ref = torch.linalg.eigvalsh(m64).flip(0)[:K + 1].cpu().numpy()
    del m64
    sync()
    start = time.perf_counter()
    m32 = _dense_operator(x, float(dm.epsilon_))
    peer_vals = torch.linalg.eigh(m32)[0].flip(0)[:K + 1]
    sync()
    peer_s = time.perf_counter() - start
    del m32
    err = float(np.max(np.abs(dm.eigenvalues_.double().cpu().numpy() - ref)))
    peer_rate = dm.n_kernel_calls_ * float(n) ** 2 / peer_s / 1e9
    rows.append(_row(n, "torch:lanczos", dm, seconds, peak, err, "dense f32 eigh", peer_rate))
    peer_err = float(np.max(np.abs(peer_vals.double().cpu().numpy() - ref)))
    rows.append(row("dmap_fit", "peer:dense_eigh", f"N={n},d=3,k={K}", peer_s * 1e3,
                    "Gpair/s", peer_rate, None, None, None, peer_err))
    torch.cuda.empty_cache()


def _large(rows, quick):
    import torch

    for n in ([1_000_000] if quick else [200_000, 1_000_000]):
        x = _roll(n)
        dm, seconds, peak = _fit(x)
        rows.append(_row(n, "torch:lanczos", dm, seconds, peak))
        if not quick:
            dm, seconds, peak = _fit(x, eigensolver="lanczos", block_size=1)
            rows.append(_row(n, "torch:lanczos_b1", dm, seconds, peak))
            try:
                import cupy

                xc = cupy.from_dlpack(x)
                start = time.perf_counter()
                from arraygen.dmap import DiffusionMap

                dmc = DiffusionMap(n_components=K, alpha=0.5, rng=0).fit(xc)
                cupy.cuda.get_current_stream().synchronize()
                rows.append(_row(n, "cupy:eigsh", dmc, time.perf_counter() - start, float("nan")))
            except ImportError:
                pass
        del x
        torch.cuda.empty_cache()


def _knn(rows, quick):
    """Exact against block-sparse ``"knn"`` fits at N = 1e6 (and 2e5 in the full run)."""
    import torch

    from arraygen.blocksparse import cluster_points

    _fit(_roll(20_000), epsilon="knn", truncate=3.0)            # warm-up: compilation
    for n in ([1_000_000] if quick else [200_000, 1_000_000]):
        x = _roll(n)
        sync()
        start = time.perf_counter()
        cluster_points(x - x.mean(0))
        sync()
        cluster_s = time.perf_counter() - start
        ref, exact_s, peak = _fit(x, epsilon="knn")
        lam = ref.eigenvalues_.double().cpu().numpy()
        r = _row(n, "torch:exact_knn", ref, exact_s, peak)
        r["op"] = "dmap_fit_knn"
        rows.append(r)
        for trunc in (3.0, 4.0):
            dm, seconds, peak = _fit(x, epsilon="knn", truncate=trunc)
            err = float(np.max(np.abs(dm.eigenvalues_.double().cpu().numpy() - lam)))
            # vs_peer = exact seconds / truncated seconds (same rate units on both sides)
            same_work = dm.n_kernel_calls_ * float(n) ** 2 / exact_s / 1e9
            r = _row(n, f"torch:truncate={trunc:g}", dm, seconds, peak, err, "exact_knn",
                     same_work)
            r.update(op="dmap_fit_knn", fraction=dm.truncation_.fraction,
                     mass_bound=dm.truncation_.mass_bound, cluster_s=cluster_s,
                     exact_seconds=exact_s)
            rows.append(r)
        del x
        torch.cuda.empty_cache()


def run(quick: bool = False) -> list[dict]:
    rows: list[dict] = []
    _small(rows, quick)
    _large(rows, quick)
    _knn(rows, quick)
    return rows


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(r)
