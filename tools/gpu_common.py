"""Shared timing helpers for the GPU benchmark scripts (tools/gpu_bench_*.py).

All timings are medians of CUDA-event-timed repetitions after warm-up
(``triton.testing.do_bench``), on inputs that are never all zeros.
"""

from __future__ import annotations

import functools


def sync() -> None:
    import torch

    torch.cuda.synchronize()


def bench_ms(fn, *, warmup_ms: float = 25, rep_ms: float = 200) -> float:
    """Median milliseconds of ``fn()`` (CUDA events, L2 flushed between repetitions)."""
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))


@functools.lru_cache(maxsize=None)
def copy_bandwidth_gbs(n_bytes: int = 2**30) -> float:
    """Measured device-to-device copy bandwidth in GB/s, counting bytes read plus written."""
    import torch

    a = torch.rand(n_bytes // 4, device="cuda")
    b = torch.empty_like(a)
    ms = bench_ms(lambda: b.copy_(a))
    return 2 * n_bytes / (ms * 1e-3) / 1e9


def row(op: str, backend: str, size: str, ms: float, metric: str, value: float,
        ceiling: float | None = None, peer: str | None = None, peer_value: float | None = None,
        err: float | None = None) -> dict:
    """One result row: ``value`` in ``metric`` units, its fraction of ``ceiling`` and the
    ratio to the peer measured in the same run (higher is better for both)."""
    r = {
        "op": op, "backend": backend, "size": size, "ms": ms, "metric": metric, "value": value,
        "frac_ceiling": (value / ceiling) if ceiling else None,
        "peer": peer, "vs_peer": (value / peer_value) if peer_value else None, "rel_err": err,
    }
    # one line as soon as it is measured: a run killed by its time limit keeps what it had
    frac = f" {100 * r['frac_ceiling']:.1f}%" if r["frac_ceiling"] else ""
    tail = "" if err is None else f" | err {err:.2e}"
    print(f"[row] {op} | {backend} | {size} | {ms:.3f} ms | {value:.4g} {metric}{frac}{tail}",
          flush=True)
    return r
