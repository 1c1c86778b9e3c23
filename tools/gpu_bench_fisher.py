"""GPU table rows for the Fisher hot path: every GPU backend and torch eager at 2**28 float32.

Inputs have shape (16384, 16384) (2**28 elements, a batch of 16384 4x64x64 latents) with a
per-sample alpha_bar. Traffic counted per element (float32): fisher_diagonal reads score and
writes F (8 bytes); fisher_langevin_step reads x, score, v and writes x, v (20 bytes, the op's
count); the two-kernel path of few long samples moves 28 bytes (pass 1 re-reads score and v),
reported in a separate row with its own byte count. Bandwidth is a fraction of the device copy
bandwidth measured in the same run (gpu_common.copy_bandwidth_gbs). Rows marked "(kernel)" call
the backend's launcher directly (eps precomputed, no argument checks). Rows "scalar ab" pass
alpha_bar as a Python float (one noise level per batch, the usual sampler call): no host
synchronisation at all. With a per-sample alpha_bar array on the device, the public op checks its
range through one small device-to-host copy, a synchronisation per call.
Rows "nosync" pass the per-sample alpha_bar with check_finite=False: no host synchronisation
(the alpha_bar range is enforced on the device: out of range makes the sample NaN), so they
show the kernel at the public op. The default check_finite=True reads x, score, v once more for
its finiteness checks and synchronises once.
Rows with a tuning suffix ("triton B8192", "cupy kq0 t512"...) are variants of the defaults
(issue 19: "px" prefetches x before the block reduction, "t512" a 512-thread launch bound,
"numba q0(old)" the element-by-element Numba kernel), measured side by side so the winner can be
made the default in the backend's ``Tuning``.
"""

from __future__ import annotations

import os

import numpy as np

from gpu_common import bench_ms, copy_bandwidth_gbs, row

N_PER = 16384


def _inputs(n: int, n_per: int):
    import torch

    g = torch.Generator(device="cuda").manual_seed(0)
    shape = (n // n_per, n_per)
    x = torch.randn(shape, device="cuda", generator=g)
    s = torch.randn(shape, device="cuda", generator=g)
    v = torch.rand(shape, device="cuda", generator=g) + 0.1
    ab = torch.linspace(0.05, 0.95, shape[0], device="cuda")
    return x, s, v, ab


def _rel_err_diag(out, s, ab) -> float:
    from arraygen.reference.fisher import fisher_diagonal

    k = 64
    want = fisher_diagonal(s[:k].double().cpu().numpy(), ab[:k].double().cpu().numpy())
    got = out[:k].double().cpu().numpy()
    return float(np.max(np.abs(got - want) / np.abs(want)))


def _rel_err_step(out, x, s, v, ab, z) -> float:
    from arraygen.reference.fisher import fisher_langevin_step

    k = 16
    h = [a[:k].double().cpu().numpy() for a in (x, s, v, z)]
    want, _ = fisher_langevin_step(h[0], h[1], h[2], ab[:k].double().cpu().numpy(), 0.01, 0.9,
                                   h[3])
    got = out[:k].double().cpu().numpy()
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def _torch_step(x, s, v, eps_col, h=0.01, m=0.9, z=None):
    import torch

    v_new = m * v + (1 - m) * (s * s + eps_col)
    p = torch.rsqrt(v_new)
    p = p / p.mean(dim=1, keepdim=True)
    z = torch.randn_like(x) if z is None else z
    return x + h * p * s + torch.sqrt(2 * h * p) * z, v_new


def _as(backend, t):
    """``t`` (torch CUDA) as the array type the backend's users pass: CuPy for cupy and
    numba_cuda, torch for triton (zero-copy)."""
    if backend in ("cupy", "numba_cuda"):
        import cupy

        return cupy.from_dlpack(t)
    return t


def _set(module_name: str, **values):
    """Enter a tuning override of a backend's Fisher launcher (``TUNING.override``); returns
    the module and the override, which the caller exits."""
    import importlib

    mod = importlib.import_module(f"arraygen.backends.{module_name}.fisher")
    override = mod.TUNING.override(**values)
    override.__enter__()
    return mod, override


# (label, backend, tuning constants): the defaults first, then variants measured for tuning
DIAG_VARIANTS = [("cupy", "cupy", {}), ("triton", "triton", {}),
                 ("numba_cuda", "numba_cuda", {}),
                 ("triton B8192", "triton", {"block_diag": 8192, "diag_warps": 8})]
STEP_VARIANTS = [("cupy", "cupy", {}), ("triton", "triton", {}),
                 ("numba_cuda", "numba_cuda", {}),
                 ("cupy kq0 t512", "cupy", {"kq_float": 0, "kq_double": 0,
                                            "fused_threads": 512}),
                 ("cupy kq4 px t512", "cupy", {"kq_float": 4, "prefetch_x": True,
                                               "fused_threads": 512}),
                 ("cupy kq4 t512", "cupy", {"kq_float": 4, "fused_threads": 512}),
                 ("cupy kq2 px t512", "cupy", {"kq_float": 2, "prefetch_x": True,
                                               "fused_threads": 512}),
                 ("cupy kq2 px t1024", "cupy", {"kq_float": 2, "prefetch_x": True}),
                 ("cupy kq1 px t1024", "cupy", {"kq_float": 1, "prefetch_x": True}),
                 ("cupy cluster8 kq2", "cupy", {"cluster": 8}),
                 ("cupy cluster4 kq4", "cupy", {"cluster": 4, "cluster_kq_float": 4}),
                 ("triton single", "triton", {"single_max_quads": 4096}),
                 ("triton loop1024", "triton", {"chunk_quads": 1024}),
                 ("triton nohints", "triton", {"evict_hints": False}),
                 ("triton w8", "triton", {"fused_warps": 8}),
                 ("triton w32", "triton", {"fused_warps": 32}),
                 ("triton join", "triton", {"join_lanes": True}),
                 ("triton join single", "triton", {"join_lanes": True,
                                                   "single_max_quads": 4096}),
                 ("numba q0(old)", "numba_cuda", {"quads_per_thread": 0}),
                 ("numba q1", "numba_cuda", {"quads_per_thread": 1}),
                 ("numba q4", "numba_cuda", {"quads_per_thread": 4})]


def _variants(table):
    """The table, or its defaults only (``ARRAYGEN_BENCH_DEFAULTS_ONLY=1``: a short run)."""
    if os.environ.get("ARRAYGEN_BENCH_DEFAULTS_ONLY", "0") != "0":
        return [v for v in table if not v[2]]
    return table


def run(quick: bool = False) -> list[dict]:
    import torch

    import arraygen
    from arraygen import _dispatch
    from arraygen.random import Key

    n = 2**24 if quick else 2**28
    size = f"2^{int(np.log2(n))} f32"
    bw = copy_bandwidth_gbs()
    usable = {b for b, why in arraygen.backends.available().items() if why is None}
    rows = []
    x, s, v, ab = _inputs(n, N_PER)
    eps = 1e-4 + 1e-3 * (1 - ab)
    eps_col = eps[:, None]
    z = torch.randn_like(x)

    # fisher_diagonal: 8 bytes/element
    torch_ms = bench_ms(lambda: s * s + eps_col)
    torch_gbs = 8 * n / (torch_ms * 1e-3) / 1e9
    rows.append(row("fisher_diagonal", "torch eager", size, torch_ms, "GB/s", torch_gbs, bw,
                    err=_rel_err_diag(s * s + eps_col, s, ab)))
    for label, backend, tuning in _variants(DIAG_VARIANTS):
        if backend not in usable:
            continue
        mod, old = _set(backend, **tuning)
        try:
            sb, abb = _as(backend, s), _as(backend, ab)
            fn = lambda sb=sb, abb=abb, backend=backend: arraygen.fisher_diagonal(  # noqa: E731
                sb, abb, backend=backend)
            out = torch.from_dlpack(fn())
            ms = bench_ms(fn)
            rows.append(row("fisher_diagonal", label, size, ms, "GB/s",
                            8 * n / (ms * 1e-3) / 1e9, bw, "torch eager", torch_gbs,
                            err=_rel_err_diag(out, s, ab)))
            if not tuning:  # one noise level for the batch: alpha_bar as a Python float
                fn_scalar = lambda sb=sb, backend=backend: arraygen.fisher_diagonal(  # noqa: E731
                    sb, 0.5, backend=backend)
                ms = bench_ms(fn_scalar)
                rows.append(row("fisher_diagonal scalar ab", label, size, ms, "GB/s",
                                8 * n / (ms * 1e-3) / 1e9, bw, "torch eager", torch_gbs))
            if not tuning:  # the launcher alone: no argument checks or eps computation
                launcher = _dispatch.kernel("fisher_diagonal", backend)
                eb = _as(backend, eps)
                ms = bench_ms(lambda sb=sb, eb=eb, launcher=launcher: launcher(sb, eb))
                rows.append(row("fisher_diagonal (kernel)", label, size, ms, "GB/s",
                                8 * n / (ms * 1e-3) / 1e9, bw, "torch eager", torch_gbs))
        finally:
            old.__exit__(None, None, None)

    # fisher_langevin_step: op traffic 20 bytes/element; noise drawn in-kernel
    torch_ms = bench_ms(lambda: _torch_step(x, s, v, eps_col))
    torch_gbs = 20 * n / (torch_ms * 1e-3) / 1e9
    rows.append(row("fisher_langevin_step", "torch eager", size, torch_ms, "GB/s", torch_gbs, bw,
                    err=_rel_err_step(_torch_step(x, s, v, eps_col, z=z)[0], x, s, v, ab, z)))
    for label, backend, tuning in _variants(STEP_VARIANTS):
        if backend not in usable:
            continue
        mod, old = _set(backend, **tuning)
        try:
            xb, sb, vb, abb = (_as(backend, a) for a in (x, s, v, ab))
            fn = lambda xb=xb, sb=sb, vb=vb, abb=abb, backend=backend: (  # noqa: E731
                arraygen.fisher_langevin_step(xb, sb, vb, abb, step_size=0.01, momentum=0.9,
                                              rng=7, backend=backend))
            ms = bench_ms(fn)
            out = arraygen.fisher_langevin_step(xb, sb, vb, abb, step_size=0.01, momentum=0.9,
                                                noise=_as(backend, z), backend=backend)[0]
            rows.append(row("fisher_langevin_step", label, size, ms, "GB/s",
                            20 * n / (ms * 1e-3) / 1e9, bw, "torch eager", torch_gbs,
                            err=_rel_err_step(torch.from_dlpack(out), x, s, v, ab, z)))
            # per-sample alpha_bar with check_finite=False: no host synchronisation at all
            # (the alpha_bar range is enforced on the device), the sampling-loop call
            ms = bench_ms(lambda xb=xb, sb=sb, vb=vb, abb=abb, backend=backend: (
                arraygen.fisher_langevin_step(xb, sb, vb, abb, step_size=0.01, momentum=0.9,
                                              rng=7, check_finite=False, backend=backend)))
            rows.append(row("fisher_langevin_step nosync", label, size, ms, "GB/s",
                            20 * n / (ms * 1e-3) / 1e9, bw, "torch eager", torch_gbs))
            if not tuning:  # one noise level for the batch: alpha_bar as a Python float
                ms = bench_ms(lambda xb=xb, sb=sb, vb=vb, backend=backend: (
                    arraygen.fisher_langevin_step(xb, sb, vb, 0.5, step_size=0.01, momentum=0.9,
                                                  rng=7, backend=backend)))
                rows.append(row("fisher_langevin_step scalar ab", label, size, ms, "GB/s",
                                20 * n / (ms * 1e-3) / 1e9, bw, "torch eager", torch_gbs))
                launcher = _dispatch.kernel("fisher_langevin_step", backend)
                eb = _as(backend, eps)
                ms = bench_ms(lambda xb=xb, sb=sb, vb=vb, eb=eb, launcher=launcher: launcher(
                    xb, sb, vb, eb, step_size=0.01, momentum=0.9, noise=None, key=Key(7)))
                rows.append(row("fisher_langevin_step (kernel)", label, size, ms, "GB/s",
                                20 * n / (ms * 1e-3) / 1e9, bw, "torch eager", torch_gbs))
        except Exception as exc:  # noqa: BLE001 (a failing variant is reported, the table goes on)
            print(f"fisher_langevin_step {label}: {type(exc).__name__}: {exc}")
        finally:
            old.__exit__(None, None, None)
    # few long samples: the two-kernel path (28 bytes/element actually moved)
    xl, sl, vl, abl = _inputs(n, n // 16)
    for backend in ("cupy", "triton"):
        if backend not in usable:
            continue
        xb, sb, vb, abb = (_as(backend, a) for a in (xl, sl, vl, abl))
        fn = lambda xb=xb, sb=sb, vb=vb, abb=abb, backend=backend: (  # noqa: E731
            arraygen.fisher_langevin_step(xb, sb, vb, abb, step_size=0.01, momentum=0.9, rng=7,
                                          backend=backend))
        ms = bench_ms(fn)
        rows.append(row("fisher_step B=16 (28 B/el)", backend, size, ms, "GB/s",
                        28 * n / (ms * 1e-3) / 1e9, bw))
    return rows
