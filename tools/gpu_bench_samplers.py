"""Sampling with the exact empirical score on the GPU (issue 14, speed item 3).

4096 images of 3x64x64 (d = 12288) are drawn with DPM-Solver++(2M), 20 model evaluations on the
samplers' default grid, from :class:`arraygen.scores.EmpiricalScore` over 10,000 training images.
Each evaluation is one call of the tiled online-softmax core ``arraygen.tiled._softmax_matvec``
(4096 queries against 10,000 points in d = 12288: 4 * 4096 * 10,000 * 12288 = 2.0e12 flops for
distances and weighted average). Training images are smoothed random fields (fixed seed).

Measured (synchronised: ``torch.cuda.synchronize`` around every timed region):

* ``images_per_s``: 4096 / the wall time of the whole sampler call (after a warm-up call).
* ``softmax_share``: in a second, identical call, every ``_softmax_matvec`` call is timed alone
  (synchronised before and after); the share is the summed kernel time over that call's wall
  time. The extra synchronisations make the second call slightly slower, so the share is a
  slight underestimate; ``softmax_tflops`` is the kernel's effective rate.

Prints one JSON line. ``--smoke`` runs a tiny size (32 images of 3x8x8 over 200 training
images, 4 evaluations) on whatever is there (CPU without CUDA) so the script can be checked
anywhere; ``--xp cupy`` runs in CuPy instead of torch.

Run: ``python tools/gpu_bench_samplers.py`` (H100), ``bash tools/gpu_run.sh --only samplers``
(the GPU suite calls :func:`run`), ``python tools/gpu_bench_samplers.py --smoke`` (CPU check).
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def _images(xp_name: str, n: int, side: int, device, seed: int = 0):
    """Smoothed random fields (N, 3, side, side), standardised, float32, on ``device``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3, side, side)).astype(np.float32)
    k = np.exp(-0.5 * (np.arange(-3, 4) / 1.5) ** 2).astype(np.float32)
    k /= k.sum()
    for axis in (2, 3):
        x = sum(w * np.roll(x, s, axis=axis) for s, w in zip(range(-3, 4), k))
    x = (x - x.mean()) / x.std()
    return _to(xp_name, x, device)


def _to(xp_name: str, a, device):
    if xp_name == "torch":
        import torch

        return torch.from_numpy(a).to(device)
    import cupy

    return cupy.asarray(a)


def _sync(xp_name: str, device) -> None:
    if xp_name == "torch":
        import torch

        if device.type == "cuda":
            torch.cuda.synchronize(device)
    else:
        import cupy

        cupy.cuda.get_current_stream().synchronize()


def measure(*, n_img: int, n_train: int, side: int, nfe: int, xp_name: str = "torch") -> dict:
    from arraygen import samplers as S
    from arraygen import tiled
    from arraygen.schedules import make_schedule
    from arraygen.scores import EmpiricalScore

    if xp_name == "torch":
        import torch

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = None
    import numpy as np

    data = _images(xp_name, n_train, side, device, seed=0)
    noise = _to(xp_name, np.random.default_rng(2).standard_normal(
        (n_img, 3, side, side)).astype(np.float32), device)
    sch = make_schedule("linear")
    model = EmpiricalScore(data, sch)

    def sample(x):
        return S.sample_dpmpp_2m(model, x, schedule=sch, steps=nfe, prediction="score")

    sample(noise[: min(8, n_img)])                   # warm-up: kernels compiled, caches filled
    _sync(xp_name, device)
    start = time.perf_counter()
    out = sample(noise)
    _sync(xp_name, device)
    total = time.perf_counter() - start

    core = tiled._softmax_matvec
    spent = [0.0, 0]

    def timed(*args, **kwargs):
        _sync(xp_name, device)
        t0 = time.perf_counter()
        res = core(*args, **kwargs)
        _sync(xp_name, device)
        spent[0] += time.perf_counter() - t0
        spent[1] += 1
        return res

    tiled._softmax_matvec = timed
    try:
        _sync(xp_name, device)
        start = time.perf_counter()
        sample(noise)
        _sync(xp_name, device)
        total_timed = time.perf_counter() - start
    finally:
        tiled._softmax_matvec = core
    d = 3 * side * side
    flops = 4.0 * n_img * n_train * d * spent[1]
    if xp_name == "torch":
        finite = bool(torch.isfinite(out).all())
        dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    else:
        import cupy

        finite = bool(cupy.isfinite(out).all())
        dev_name = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    return {"bench": "empirical_score_sampling", "sampler": "dpmpp_2m", "xp": xp_name,
            "device": dev_name, "images": n_img, "image_shape": [3, side, side],
            "training_images": n_train, "evaluations": nfe, "seconds": total,
            "images_per_s": n_img / total, "softmax_calls": spent[1],
            "softmax_seconds": spent[0], "seconds_with_kernel_timing": total_timed,
            "softmax_share": spent[0] / total_timed,
            "softmax_tflops": flops / spent[0] / 1e12 if spent[0] > 0 else None,
            "finite": finite}


def run(quick: bool = False) -> list[dict]:
    """Rows for tools/gpu_suite.py."""
    from gpu_common import row

    size = (512, 2000) if quick else (4096, 10_000)
    r = measure(n_img=size[0], n_train=size[1], side=64, nfe=20)
    print(json.dumps(r))
    label = f"{r['images']}x3x64x64,N={r['training_images']},{r['evaluations']} NFE"
    return [
        row("EmpiricalScore DPM++(2M)", "auto", label, r["seconds"] * 1e3, "img/s",
            r["images_per_s"]),
        row("  softmax kernel share", "auto", label, r["softmax_seconds"] * 1e3, "fraction",
            r["softmax_share"]),
        row("  softmax kernel", "auto", label, r["softmax_seconds"] * 1e3, "TFLOP/s",
            r["softmax_tflops"] or 0.0),
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny size, runs on CPU")
    ap.add_argument("--xp", choices=("torch", "cupy"), default="torch")
    ap.add_argument("--images", type=int, default=4096)
    ap.add_argument("--train", type=int, default=10_000)
    ap.add_argument("--nfe", type=int, default=20)
    args = ap.parse_args(argv)
    if args.smoke:
        r = measure(n_img=32, n_train=200, side=8, nfe=4, xp_name=args.xp)
    else:
        r = measure(n_img=args.images, n_train=args.train, side=64, nfe=args.nfe,
                    xp_name=args.xp)
    print(json.dumps(r))
    return 0 if r["finite"] else 1


if __name__ == "__main__":
    sys.exit(main())
