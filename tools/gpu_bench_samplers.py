"""GPU benchmark of sampling with the exact empirical score (issue: samplers on the H100).

4096 images of 3x64x64 (d = 12288) are sampled with DDIM (eta = 0, 50 steps, linear schedule)
from :class:`arraygen.bridge.EmpiricalScore` over 10_000 training images: every step is one
``kernel_softmax_matvec`` of 4096 queries against 10_000 points in d = 12288, i.e.
4096 * 10_000 * 12288 * 2 = 1.0e12 flops for the distances plus the same again for the weighted
average. Training images are smoothed random fields (torch on the GPU, fixed seed), not zeros.

Rows: images/s end to end; the fraction of the wall time spent in the softmax kernel (the same
50 softmax calls timed alone); the kernel's effective TFLOP/s.

Run: ``bash tools/gpu_run.sh --only samplers`` (``--quick``: 512 images, 2000 training images).
"""

from __future__ import annotations

import time

from gpu_common import row


def _images(torch, n: int, g):
    import torch.nn.functional as F

    x = torch.randn(n, 3, 64, 64, device="cuda", generator=g)
    k = torch.exp(-0.5 * (torch.arange(-6, 7, device="cuda", dtype=torch.float32) / 2.0) ** 2)
    k = (k / k.sum()).view(1, 1, 1, -1)
    x = x.reshape(n * 3, 1, 64, 64)
    x = F.conv2d(F.pad(x, (6, 6, 0, 0), mode="circular"), k)
    x = F.conv2d(F.pad(x, (0, 0, 6, 6), mode="circular"), k.transpose(-1, -2))
    x = x.reshape(n, 3, 64, 64)
    return (x - x.mean()) / x.std()


def run(quick: bool = False) -> list[dict]:
    import torch

    import arraygen
    from arraygen.bridge import EmpiricalScore
    from arraygen.samplers import sample_ddim
    from arraygen.schedules import make_schedule
    from arraygen.tiled import kernel_softmax_matvec

    n_img, n_train, steps = (512, 2000, 50) if quick else (4096, 10_000, 50)
    g = torch.Generator(device="cuda").manual_seed(0)
    data = _images(torch, n_train, g)
    sch = make_schedule("linear")
    model = EmpiricalScore(data, sch)
    noise = torch.randn(n_img, 3, 64, 64, device="cuda", generator=g)
    sample_ddim(model, noise[:8], schedule=sch, steps=2)  # compile / warm up
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = sample_ddim(model, noise, schedule=sch, steps=steps)
    torch.cuda.synchronize()
    total = time.perf_counter() - start
    finite = bool(torch.isfinite(out).all())
    # the softmax kernel alone, same shapes, as many calls as the sampler made
    q = noise.reshape(n_img, -1)
    y = data.reshape(n_train, -1)
    kernel_softmax_matvec(q[:8], y, y, beta=0.5)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        kernel_softmax_matvec(q, y, y, beta=0.5)
    torch.cuda.synchronize()
    kernel = time.perf_counter() - start
    d = q.shape[1]
    flops = 4.0 * n_img * n_train * d * steps
    size = f"{n_img}x3x64x64,N={n_train},{steps} steps"
    from arraygen.tiled import _wide

    backend = arraygen._dispatch.select("kernel_softmax_matvec", q,
                                        prefer_array_api=_wide(q, y))
    print(f"EmpiricalScore DDIM: {total:.2f} s, {n_img / total:.0f} images/s, softmax kernel "
          f"{kernel:.2f} s ({kernel / total:.0%} of the time, backend {backend}), "
          f"{flops / kernel / 1e12:.1f} TFLOP/s, finite={finite}")
    return [
        row("EmpiricalScore DDIM", backend, size, total * 1e3, "img/s", n_img / total),
        row("  softmax kernel share", backend, size, kernel * 1e3, "fraction", kernel / total),
        row("  softmax kernel", backend, size, kernel * 1e3, "TFLOP/s", flops / kernel / 1e12),
    ]
