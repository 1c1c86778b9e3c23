"""GPU benchmark of entropic OT: tiled log-domain Sinkhorn, N = M = 1_000_000, d = 3, float32.

Problem: x ~ N(0, I_3), y ~ N(2, 0.25 I_3), uniform weights, epsilon = 0.05 on
C = |x - y|^2, run with ``scaling=0.5, relaxation="auto"`` to a marginal L1 error of 1e-3.
For every GPU kernel backend the row gives the total time (``ms``), the effective pair rate
``2 N M n_iter / seconds`` (``value``, pairs/s; one iteration is two log-sum-exp passes), the
fraction of the exp ceiling (SMs x 16 ex2/clk x 1.755 GHz), iterations and peak GPU memory (in
``size``), and the final marginal error (``rel_err`` column).

Peer: the same log-domain updates written in torch, chunked over rows
(``logsumexp(w - cdist(x_chunk, y)**2 / eps)``, 256 rows x M per chunk). It is timed on a row
subset (its pairs/s does not depend on N) and compared per pair: ``vs_peer`` is our pair rate
over the peer's, i.e. the speed-up at equal iteration count.

Per iteration (issue 13): ``sinkhorn_iteration`` rows time one iteration at N = M = 65_536
(``max_iter`` 25 minus 5, checks every iteration, no early stop). With
``ARRAYGEN_BENCH_OT_BEFORE=/path/to/old_ot.py`` (e.g. ``git show ce53b09~1:arraygen/ot.py``) the
pre-split solver, which re-validated its arrays through the public tiled ops twice per
iteration, is timed the same way (``before`` rows).

Run: ``bash tools/gpu_run.sh --only ot`` (``--quick``: N = 65_536); ``ARRAYGEN_BENCH_BACKENDS=cupy``
restricts the backends (each full run takes about a minute).
"""

from __future__ import annotations

import os
import time

from gpu_common import row

_EPS = 0.05
_TOL = 1e-3
_CLOCK_HZ = 1.755e9


def _exp_rate(torch) -> float:
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    return sms * 16 * _CLOCK_HZ


def _peer_half_step(torch, x, y, w, eps: float, chunk: int = 256):
    """Chunked torch log-domain update: -eps * logsumexp_j(w_j - |x_i - y_j|^2 / eps)."""
    out = []
    for i0 in range(0, x.shape[0], chunk):
        d2 = torch.cdist(x[i0:i0 + chunk], y) ** 2
        out.append(-eps * torch.logsumexp(w[None, :] - d2 / eps, dim=1))
    return torch.cat(out)


def _peer_rate(torch, x, y, rows: int) -> float:
    """Pairs per second of the chunked torch update on ``rows`` rows (median of 3)."""
    n = y.shape[0]
    w = torch.full((n,), -float(torch.log(torch.tensor(float(n)))), device="cuda")
    xs = x[:rows]
    _peer_half_step(torch, xs, y, w, _EPS)
    torch.cuda.synchronize()
    times = []
    for _ in range(3):
        start = time.perf_counter()
        _peer_half_step(torch, xs, y, w, _EPS)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    times.sort()
    return rows * float(n) / times[1]


def _solvers():
    """(label, sinkhorn) pairs: the current solver and, if asked for, the pre-split one."""
    from arraygen.sinkhorn import sinkhorn

    out = [("after", sinkhorn)]
    path = os.environ.get("ARRAYGEN_BENCH_OT_BEFORE")
    if path:
        import importlib.util
        import sys

        spec = importlib.util.spec_from_file_location("arraygen._ot_before", path)
        old = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = old
        spec.loader.exec_module(old)
        out.append(("before", old.sinkhorn))
    return out


def _per_iteration_rows(torch, x, y, backend, exp_rate) -> list[dict]:
    """Time per iteration at N = M = 65_536 (25 minus 5 iterations, no early stop)."""
    import warnings

    n = 1 << 16
    xs, ys = x[:n], y[:n]
    rows = []
    for label, solver in _solvers():
        def timed(k, solver=solver):
            torch.cuda.synchronize()
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                solver(xs, ys, epsilon=_EPS, tol=1e-30, max_iter=k, backend=backend)
            torch.cuda.synchronize()
            return time.perf_counter() - start

        timed(5)
        per_it = (min(timed(25) for _ in range(3)) - min(timed(5) for _ in range(3))) / 20
        rows.append(row("sinkhorn_iteration", f"{backend}:{label}", f"N=M={n},d=3",
                        per_it * 1e3, "pairs/s", 2.0 * n * n / per_it, exp_rate, err=None))
        print(f"sinkhorn per iteration {backend} ({label}): {per_it * 1e3:.3f} ms")
    return rows


def run(quick: bool = False) -> list[dict]:
    import warnings

    import torch

    import arraygen
    from arraygen.ot import sinkhorn

    n = 1 << 16 if quick else 1_000_000
    d = 3
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(n, d, device="cuda", generator=g)
    y = 2.0 + 0.5 * torch.randn(n, d, device="cuda", generator=g)
    exp_rate = _exp_rate(torch)
    peer_rows = 4096 if quick else 16384
    peer_rate = _peer_rate(torch, x, y, peer_rows)
    rows = [row("sinkhorn_half_step", "peer", f"{peer_rows}x{n},d={d}",
                peer_rows * float(n) / peer_rate * 1e3, "pairs/s", peer_rate, exp_rate,
                err=None)]
    wanted = os.environ.get("ARRAYGEN_BENCH_BACKENDS", "triton,cupy,numba_cuda").split(",")
    backends = [b for b in ("triton", "cupy", "numba_cuda")
                if b in wanted and arraygen.backends.available()[b] is None]
    for backend in backends:
        xin, yin = x, y
        if backend != "triton":
            import cupy as cp

            xin, yin = cp.from_dlpack(x), cp.from_dlpack(y)
        try:
            sinkhorn(xin[:4096], yin[:4096], epsilon=_EPS, max_iter=2, backend=backend)
        except Exception as exc:  # noqa: BLE001 (compile failure: report, go on)
            print(f"sinkhorn {backend}: {type(exc).__name__}: {exc}")
            continue
        rows += _per_iteration_rows(torch, xin, yin, backend, exp_rate)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        pool = None
        if backend != "triton":
            import cupy as cp

            pool = cp.get_default_memory_pool()
            pool_base = pool.total_bytes()
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = sinkhorn(xin, yin, epsilon=_EPS, tol=_TOL, max_iter=500, scaling=0.5,
                           relaxation="auto", backend=backend)
        torch.cuda.synchronize()
        sec = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() - base
        if pool is not None:
            peak = max(peak, pool.total_bytes() - pool_base)
        rate = 2.0 * n * n * res.n_iter / sec
        size = (f"N=M={n},d={d},it={res.n_iter},mem={peak / 2**20:.0f}MiB,"
                f"conv={int(res.converged)}")
        rows.append(row("sinkhorn", backend, size, sec * 1e3, "pairs/s", rate, exp_rate,
                        peer="torch chunked lse", peer_value=peer_rate,
                        err=float(res.marginal_error)))
        print(f"sinkhorn {backend}: {sec:.2f} s, {res.n_iter} iterations, marginal error "
              f"{res.marginal_error:.2e}, cost {res.cost:.6f}, peak extra GPU memory "
              f"{peak / 2**20:.1f} MiB; peer would take {2.0 * n * n * res.n_iter / peer_rate:.0f} s")
    return rows


if __name__ == "__main__":
    import sys

    for r in run(quick="--quick" in sys.argv):
        print(r)
