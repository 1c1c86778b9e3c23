"""GPU benchmark of gaussian_filter: sigma = 2, float32, (16, 3, 1024, 1024), last two axes.

Floor: one read + one write, 8 bytes per element (50.3 M elements -> 403 MB); at the
measured copy bandwidth (~3.0 TB/s on an H100) about 0.13 ms. Every GPU backend of arraygen is
timed against torch conv2d separable (two conv2d, the same 17 taps, scipy-'reflect' padding by an
index gather) and cupyx.scipy.ndimage.gaussian_filter, in the same run. Values are GB/s counted
as 8 bytes/element; ``ceil`` is the fraction of copy bandwidth; ``x peer`` the ratio to
cupyx.scipy.ndimage (for the torch row: to cupyx too). ``rel err`` is max |y - scipy float64| /
max |scipy| on the first image.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpu_common import bench_ms, copy_bandwidth_gbs, row

from asv_benchmarks.benchmarks.bench_gaussian import _torch_separable  # the peer, defined once

SIGMA = 2.0


def _rel_err(y, want) -> float:
    from arraygen import _array_api as aa

    got = aa.to_numpy(y)[0, 0].astype(np.float64)
    return float(np.abs(got - want).max() / np.abs(want).max())


def _bench_shape(shape, quick, rows):
    import cupy
    import cupyx.scipy.ndimage as cndi
    import scipy.ndimage as ndi
    import torch

    from arraygen.backends import available
    from arraygen.gaussian import gaussian_filter, gaussian_filter_fft

    size = "x".join(map(str, shape))
    n = int(np.prod(shape))
    torch.manual_seed(0)
    xt = torch.randn(shape, device="cuda", dtype=torch.float32)
    xc = cupy.from_dlpack(xt)
    want = ndi.gaussian_filter(xt[0, 0].double().cpu().numpy(), SIGMA)
    gbs = lambda ms: 8.0 * n / (ms * 1e-3) / 1e9
    ceiling = copy_bandwidth_gbs()
    rep = 60 if quick else 200

    peer_fn = lambda: cndi.gaussian_filter(xc, (0, 0, SIGMA, SIGMA))
    peer_ms = bench_ms(peer_fn, rep_ms=rep)
    peer = gbs(peer_ms)
    cases = [("cupy", lambda: gaussian_filter(xc, SIGMA, backend="cupy")),
             ("triton", lambda: gaussian_filter(xt, SIGMA, backend="triton")),
             ("numba_cuda", lambda: gaussian_filter(xc, SIGMA, backend="numba_cuda"))]
    for name, fn in cases:
        if available()[name] is not None:
            continue
        err = _rel_err(fn(), want)
        ms = bench_ms(fn, rep_ms=rep)
        rows.append(row("gaussian_filter", name, size, ms, "GB/s", gbs(ms), ceiling,
                        "cupyx.ndimage", peer, err))
    torch_fn = lambda: _torch_separable(xt, SIGMA)
    ms = bench_ms(torch_fn, rep_ms=rep)
    rows.append(row("gaussian_filter", "peer:torch", size, ms, "GB/s", gbs(ms), ceiling,
                    "cupyx.ndimage", peer, _rel_err(torch_fn(), want)))
    rows.append(row("gaussian_filter", "peer:cupyx", size, peer_ms, "GB/s", peer, ceiling,
                    None, None, _rel_err(peer_fn(), want)))
    fft_fn = lambda: gaussian_filter_fft(xt, SIGMA)
    ms = bench_ms(fft_fn, rep_ms=rep)
    rows.append(row("gaussian_filter_fft", "torch.fft", size, ms, "GB/s", gbs(ms), ceiling,
                    "cupyx.ndimage", peer, None))
    xt = xc = None  # free the inputs before the next size
    torch.cuda.empty_cache()


def run(quick: bool = False) -> list[dict]:
    rows: list[dict] = []
    _bench_shape((16, 3, 1024, 1024), quick, rows)
    if not quick:
        _bench_shape((16, 3, 256, 256), quick, rows)
    return rows


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(r)
