"""GPU benchmark of issue 18 (multiscale): block-sparse kernels and Sinkhorn, peers in the run.

Pieces (each guarded: a failure prints its traceback and the table goes on):

1. ``kernel_logsumexp`` block-sparse at N = M = 10^6, d = 3 (uniform in the unit cube),
   beta = 1 / epsilon = 100, truncate 3, 4, 5, every GPU backend, beside the dense kernel of the
   same backend on the same (sorted) points. Value: dense-equivalent pairs/s (N M / time), so
   ``x peer`` is the speed-up over dense; ``frac_ceiling`` is the rate of pairs actually computed
   over the exp-unit floor (SMs x 16 ex2/clk x 1.755 GHz); ``rel_err`` the largest absolute
   error of the log-sum-exp against float64 over 256 sampled rows (the truncation error is at
   most log(1 + mass_bound)). Extra keys in bench.json: fraction, mass_bound, nnz, the time of
   cluster_points and block_pairs. A small launch-geometry sweep of the CuPy kernel at
   truncate 4 follows.
2. ``sinkhorn(method="multiscale")`` at 10^6 to marginal error 1e-3 (epsilon = 0.01, unit cube)
   when the solver exists: wall time, the solver's own (exact) error and an independent exact
   check with arraygen's dense kernels (float32 kernels, float64 sums).
3. FlashSinkhorn 0.4.x (``.whl/flash_sinkhorn-*.whl``) on the same data: ``backend="multiscale"``
   (tol 1e-3) and ``backend="symmetric"`` (epsilon scaling 0.5 and 0.9), blur = 0.1 (its
   eps = blur^2 with the same cost |x - y|^2). Their marginal error is measured exactly with
   arraygen's kernels (theirs is sampled) on the user's points and, key ``err_on_tf32``, on the
   centred TF32-rounded points FlashSinkhorn solves on. Error metric: ||P1 - a||_1 +
   ||P^T1 - b||_1 (arraygen's ``marginal_error``; FlashSinkhorn's tol is the max of the two).
4. GeomLoss ``backend="multiscale"`` (KeOps) in a subprocess (it segfaulted at code generation on
   the device image before): wheels from ``.whl/peers/`` installed into a separate folder, so
   the GPU test run never imports them. A crash is reported with its signal.
5. FlashSinkhorn's headline setting: d = 64, N = M = 50,000 (randn points, random weights),
   eps = 0.1, 10 fixed iterations (``bench_forward.py``), FlashSinkhorn symmetric beside
   ``arraygen.sinkhorn`` (d > 16: the law-of-cosines kernels) with ``max_iter=10``; both errors
   measured exactly (float64 kernels).

``python tools/gpu_bench_multiscale.py [--quick]`` prints the rows; ``tools/gpu_suite.py`` runs
it with the other GPU benchmarks (``--only multiscale``). ``ARRAYGEN_MULTISCALE_PIECES=kernels,
flash`` runs some pieces only (the whole run takes a few minutes: GeomLoss may compile for up to
240 s). ``--smoke`` runs pieces 1-2 at N = 300 on the CPU simulators
(a check of the script itself, no timings worth reading).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

from gpu_common import row

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
_EPS = 0.01
_BETA = 1.0 / _EPS
_TRUNCATES = (3.0, 4.0, 5.0)
_TOL = 1e-3
_CLOCK_HZ = 1.755e9
_BACKENDS = ("cupy", "triton", "numba_cuda")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

class _Ctx:
    """Run-wide settings: device, sizes, and the shared data of pieces 1-4."""

    def __init__(self, quick: bool, smoke: bool):
        import torch

        self.torch = torch
        self.smoke = smoke
        self.cuda = torch.cuda.is_available() and not smoke
        self.device = "cuda" if self.cuda else "cpu"
        self.n = 300 if smoke else (1 << 17 if quick else 1_000_000)
        self.reps = 2 if smoke else 3
        g = torch.Generator(device=self.device).manual_seed(0)
        self.x = torch.rand(self.n, 3, device=self.device, generator=g)
        self.y = torch.rand(self.n, 3, device=self.device, generator=g)
        self.size = f"N=M={self.n},d=3"

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def time_s(self, fn, reps: int | None = None) -> float:
        """Median seconds of ``fn()`` after one warm-up (CUDA events on the GPU)."""
        torch = self.torch
        fn()
        self.sync()
        times = []
        for _ in range(reps or self.reps):
            if self.cuda:
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end) * 1e-3)
            else:
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
        times.sort()
        return times[len(times) // 2]

    def wall_s(self, fn):
        """(result, seconds) of one call, synchronised."""
        self.sync()
        t0 = time.perf_counter()
        res = fn()
        self.sync()
        return res, time.perf_counter() - t0

    def exp_rate(self) -> float | None:
        if not self.cuda:
            return None
        sms = self.torch.cuda.get_device_properties(0).multi_processor_count
        return sms * 16 * _CLOCK_HZ

    def backends(self):
        import arraygen.backends as ab

        avail = ab.available()
        names = [b for b in _BACKENDS if avail.get(b) is None]
        return [b for b in names if b != "cupy"] if self.smoke else names

    def native(self, backend, t):
        """``t`` (torch) as the array type the benchmark feeds ``backend``: CuPy for the CuPy
        and Numba launchers (as gpu_bench_tiled), torch for Triton; NumPy in the smoke run."""
        if t is None:
            return None
        if self.smoke:
            return t if backend == "triton" else t.numpy()
        if backend == "triton":
            return t
        import cupy as cp

        return cp.from_dlpack(t)


def _guard(name: str, rows: list, fn, *args) -> None:
    t0 = time.time()
    try:
        rows += fn(*args)
    except Exception:  # noqa: BLE001 - report and go on with the other pieces
        print(f"[multiscale] {name}: FAILED after {time.time() - t0:.1f} s", flush=True)
        traceback.print_exc()


def _torch(a):
    import torch

    return a if isinstance(a, torch.Tensor) else torch.from_dlpack(a)


def _lse_ref(torch, x, y, idx, beta, w=None):
    """float64 log-sum-exp of the rows ``idx`` over all of ``y``."""
    xs = x[idx].double()
    yd = y.double()
    parts = []
    for j0 in range(0, y.shape[0], 1 << 18):
        z = -beta * torch.cdist(xs, yd[j0:j0 + (1 << 18)]) ** 2
        if w is not None:
            z = z + w[j0:j0 + (1 << 18)].double()[None, :]
        parts.append(torch.logsumexp(z, dim=1))
    return torch.logsumexp(torch.stack(parts, dim=1), dim=1)


def exact_marginal_error(x, y, a, b, f, g, eps: float, *, dtype=None):
    """``(||P1 - a||_1 + ||P^T1 - b||_1, max of the two)`` of the plan
    ``P_ij = a_i b_j exp((f_i + g_j - |x_i - y_j|^2) / eps)``, every pair summed by arraygen's
    dense tiled kernels (``dtype``: torch dtype of the kernel evaluation, default float32);
    the L1 sums in float64."""
    import torch

    from arraygen import tiled

    dt = dtype or torch.float32
    x, y = _torch(x).to(dt), _torch(y).to(dt)
    a64, b64 = _torch(a).double(), _torch(b).double()
    f64, g64 = _torch(f).double().reshape(-1), _torch(g).double().reshape(-1)
    la, lb = torch.log(a64), torch.log(b64)
    wy = (lb + g64 / eps).to(dt)
    wx = (la + f64 / eps).to(dt)
    lse_r = tiled.kernel_logsumexp(x, y, beta=1.0 / eps, log_weights=wy, check_finite=False)
    lse_c = tiled.kernel_logsumexp(y, x, beta=1.0 / eps, log_weights=wx, check_finite=False)
    rows = torch.exp(la + f64 / eps + lse_r.double())
    cols = torch.exp(lb + g64 / eps + lse_c.double())
    er = float((rows - a64).abs().sum())
    ec = float((cols - b64).abs().sum())
    return er + ec, max(er, ec)


# --------------------------------------------------------------------------------------------
# 1. block-sparse logsumexp vs dense
# --------------------------------------------------------------------------------------------

def _kernels(ctx: _Ctx) -> list[dict]:
    torch = ctx.torch
    from arraygen import tiled
    from arraygen.blocksparse import block_pairs, cluster_points

    rows = []
    block = 16 if ctx.smoke else None  # the smoke run: several clusters, something skipped
    (cx, cy), t_cluster = ctx.wall_s(lambda: (cluster_points(ctx.x, block=block),
                                              cluster_points(ctx.y, block=block)))
    print(f"[multiscale] cluster_points x2: {t_cluster:.3f} s (block {cx.block}, K {cx.K})",
          flush=True)
    try:  # the device kd order (arraygen._kd_order) on the same cloud, for comparison
        from arraygen import _array_api as aa
        from arraygen._kd_order import kd_order

        _, t_kd = ctx.wall_s(lambda: kd_order(aa.array_namespace(ctx.x), ctx.x, cx.block))
        _, t_kd = ctx.wall_s(lambda: kd_order(aa.array_namespace(ctx.x), ctx.x, cx.block))
        print(f"[multiscale] _kd_order.kd_order (device) x1: {t_kd:.3f} s", flush=True)
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        t_kd = None
    xs, ys = _torch(cx.points), _torch(cy.points)
    g = torch.Generator(device=ctx.device).manual_seed(1)
    idx = torch.randperm(ctx.n, device=ctx.device, generator=g)[:256]
    ref = _lse_ref(torch, xs, ys, idx, _BETA)
    pairs_nm = float(ctx.n) * ctx.n
    exp_rate = ctx.exp_rate()
    lists = {}
    for t in _TRUNCATES:
        pairs, t_pairs = ctx.wall_s(functools.partial(block_pairs, cx, cy, beta=_BETA,
                                                      truncate=t))
        lists[t] = pairs
        print(f"[multiscale] block_pairs truncate={t}: {t_pairs:.3f} s, nnz {pairs.nnz}, "
              f"fraction {pairs.fraction:.4f}, mass_bound {pairs.mass_bound:.2e}", flush=True)
        lists[t, "ms"] = t_pairs * 1e3
    for backend in ctx.backends():
        xin, yin = ctx.native(backend, xs), ctx.native(backend, ys)
        dense = functools.partial(tiled.kernel_logsumexp, xin, yin, beta=_BETA,
                                  check_finite=False, backend=backend)
        try:
            dense_s = ctx.time_s(dense)
        except Exception:  # noqa: BLE001
            traceback.print_exc()
            continue
        dense_rate = pairs_nm / dense_s
        dense_err = float((_torch(dense())[idx].double() - ref).abs().max())
        rows.append(row("logsumexp dense", backend, ctx.size, dense_s * 1e3, "pairs/s",
                        dense_rate, exp_rate, err=dense_err))
        launch = importlib.import_module(f"arraygen.backends.{backend}.blocksparse")
        for t in _TRUNCATES:
            pairs = lists[t]
            off, cols = ctx.native(backend, _torch(pairs.offsets)), ctx.native(
                backend, _torch(pairs.cols))
            fn = functools.partial(launch.kernel_logsumexp_blocks, xin, yin, None, off, cols,
                                   beta=_BETA, block_x=pairs.block_x, block_y=pairs.block_y)
            try:
                sec = ctx.time_s(fn)
                err = float((_torch(fn())[idx].double() - ref).abs().max())
            except Exception:  # noqa: BLE001
                traceback.print_exc()
                continue
            computed = pairs.fraction * pairs_nm / sec
            r = row(f"logsumexp_blocks t={t:g}", backend, ctx.size, sec * 1e3, "pairs/s",
                    pairs_nm / sec, None, peer="dense same backend", peer_value=dense_rate,
                    err=err)
            r.update(frac_ceiling=computed / exp_rate if exp_rate else None,
                     computed_pairs_per_s=computed, fraction=pairs.fraction,
                     mass_bound=pairs.mass_bound, nnz=pairs.nnz,
                     block_pairs_ms=lists[t, "ms"], cluster_points_ms=t_cluster * 1e3,
                     device_kd_order_ms=None if t_kd is None else t_kd * 1e3)
            rows.append(r)
    if "cupy" in ctx.backends():
        rows += _cupy_sweep(ctx, xs, ys, lists[4.0], idx, ref, pairs_nm, exp_rate)
    return rows


def _cupy_sweep(ctx, xs, ys, pairs, idx, ref, pairs_nm, exp_rate) -> list[dict]:
    """Launch geometry of the CuPy kernel at truncate 4: threads x rows, forced splits."""
    from arraygen.backends.cupy import blocksparse as launch

    xin, yin = ctx.native("cupy", xs), ctx.native("cupy", ys)
    off, cols = ctx.native("cupy", _torch(pairs.offsets)), ctx.native("cupy", _torch(pairs.cols))
    rows = []
    variants = [{"threads": 32, "rows": 4}, {"threads": 64, "rows": 2},
                {"threads": 128, "rows": 1}, {"splits": 1}, {"splits": 4}]
    for v in variants:
        fn = functools.partial(launch.kernel_logsumexp_blocks, xin, yin, None, off, cols,
                               beta=_BETA, block_x=pairs.block_x, block_y=pairs.block_y)
        try:
            with launch.TUNING.override(**v):
                sec = ctx.time_s(fn)
                err = float((_torch(fn())[idx].double() - ref).abs().max())
        except Exception:  # noqa: BLE001
            traceback.print_exc()
            continue
        tag = ",".join(f"{k}={val}" for k, val in v.items())
        r = row("logsumexp_blocks t=4", f"cupy[{tag}]", ctx.size, sec * 1e3, "pairs/s",
                pairs_nm / sec, None, err=err)
        r.update(frac_ceiling=pairs.fraction * pairs_nm / sec / exp_rate if exp_rate else None)
        rows.append(r)
    return rows


# --------------------------------------------------------------------------------------------
# 2. arraygen multiscale Sinkhorn
# --------------------------------------------------------------------------------------------

def _uniform(ctx, n):
    return ctx.torch.full((n,), 1.0 / n, dtype=ctx.torch.float64, device=ctx.device)


def _sinkhorn_multiscale(ctx: _Ctx) -> list[dict]:
    from arraygen.sinkhorn import sinkhorn

    torch = ctx.torch
    # warm-up (compiles) on a small problem of the same kind
    small = min(ctx.n, 1 << 14)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sinkhorn(ctx.x[:small], ctx.y[:small], epsilon=_EPS, tol=_TOL, method="multiscale")
        res, sec = ctx.wall_s(lambda: sinkhorn(ctx.x, ctx.y, epsilon=_EPS, tol=_TOL,
                                               method="multiscale"))
    if os.environ.get("ARRAYGEN_MULTISCALE_PROFILE", "0") != "0":  # where the seconds go
        import cProfile
        import pstats

        prof = cProfile.Profile()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prof.runcall(lambda: (sinkhorn(ctx.x, ctx.y, epsilon=_EPS, tol=_TOL,
                                           method="multiscale"), ctx.sync()))
        pstats.Stats(prof).sort_stats("tottime").print_stats(18)
    a = _uniform(ctx, ctx.n)
    err, _ = exact_marginal_error(ctx.x, ctx.y, a, a, res.f, res.g, _EPS)
    print(f"[multiscale] arraygen sinkhorn multiscale: {sec:.2f} s, n_iter {res.n_iter}, "
          f"converged {res.converged}, own error {res.marginal_error:.2e}, exact check "
          f"{err:.2e}; info {getattr(res, 'info', None)}", flush=True)
    r = row("sinkhorn multiscale", "arraygen", ctx.size + f",eps={_EPS}", sec * 1e3,
            "s to tol", sec, None, err=err)
    r.update(own_marginal_error=float(res.marginal_error), converged=bool(res.converged),
             n_iter=int(res.n_iter), target_s=3.0, exact_today_s=58.0)
    rows = [r]
    if ctx.n <= (1 << 17) and os.environ.get("ARRAYGEN_BENCH_EXACT", "1") != "0":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res_e, sec_e = ctx.wall_s(lambda: sinkhorn(ctx.x, ctx.y, epsilon=_EPS, tol=_TOL))
        err_e, _ = exact_marginal_error(ctx.x, ctx.y, a, a, res_e.f, res_e.g, _EPS)
        re = row("sinkhorn exact", "arraygen", ctx.size + f",eps={_EPS}", sec_e * 1e3,
                 "s to tol", sec_e, None, err=err_e)
        re.update(n_iter=int(res_e.n_iter), converged=bool(res_e.converged))
        rows.append(re)
        rows[0].update(peer="arraygen exact", vs_peer=sec_e / sec)
    rows += _device_clustering_variant(ctx, a)
    del torch
    return rows


def _device_clustering_variant(ctx: _Ctx, a) -> list[dict]:
    """Clustering time of the solver on the device (its default for CUDA arrays) against the
    host kd order, and the whole solve again with the host order patched in (private names:
    guarded)."""
    from unittest import mock

    from arraygen import _array_api as aa
    from arraygen import _sinkhorn_multiscale as ms
    from arraygen import blocksparse
    from arraygen.sinkhorn import sinkhorn

    xp = aa.array_namespace(ctx.x)
    coarse, fine = ms.default_blocks(ctx.n, ctx.x)
    ms._cluster_levels(xp, ctx.x, coarse, fine)
    _, t_dev = ctx.wall_s(lambda: ms._cluster_levels(xp, ctx.x, coarse, fine))
    with mock.patch.object(blocksparse, "_order_on_host", lambda x: True), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, t_host = ctx.wall_s(lambda: ms._cluster_levels(xp, ctx.x, coarse, fine))
        res, sec = ctx.wall_s(lambda: sinkhorn(ctx.x, ctx.y, epsilon=_EPS, tol=_TOL,
                                               method="multiscale"))
    print(f"[multiscale] solver clustering of one cloud (blocks {coarse}/{fine}): device kd "
          f"order {t_dev:.3f} s, host kd order {t_host:.3f} s", flush=True)
    err, _ = exact_marginal_error(ctx.x, ctx.y, a, a, res.f, res.g, _EPS)
    print(f"[multiscale] arraygen sinkhorn multiscale, host kd order: {sec:.2f} s, n_iter "
          f"{res.n_iter}, own error {res.marginal_error:.2e}, exact check {err:.2e}", flush=True)
    r = row("sinkhorn multiscale", "arraygen+host kd", ctx.size + f",eps={_EPS}", sec * 1e3,
            "s to tol", sec, None, err=err)
    r.update(own_marginal_error=float(res.marginal_error), converged=bool(res.converged),
             n_iter=int(res.n_iter), clustering_host_s=t_host, clustering_device_s=t_dev)
    return [r]


# --------------------------------------------------------------------------------------------
# 3. FlashSinkhorn on the same data
# --------------------------------------------------------------------------------------------

def _flash_runs(ctx: _Ctx) -> list[dict]:
    if not ctx.cuda:
        print("[multiscale] FlashSinkhorn needs CUDA tensors: skipped", flush=True)
        return []
    try:
        import flash_sinkhorn
        from flash_sinkhorn import SamplesLoss
        from flash_sinkhorn.multiscale._preprocess import preprocess_coordinates
    except ImportError as exc:
        print(f"[multiscale] FlashSinkhorn not importable ({exc}); carry "
              ".whl/flash_sinkhorn-0.4.1-py3-none-any.whl", flush=True)
        return []
    torch = ctx.torch
    version = getattr(flash_sinkhorn, "__version__", "?")
    a32 = torch.full((ctx.n,), 1.0 / ctx.n, device="cuda")
    a = a32.double()
    xt, yt = preprocess_coordinates(ctx.x, ctx.y, a32, a32)
    blur = math.sqrt(_EPS)
    configs = [("multiscale", {"backend": "multiscale", "tol": _TOL})]
    configs += [(f"symmetric s={s}", {"backend": "symmetric", "scaling": s})
                for s in (0.5, 0.9)]
    rows = []
    small = min(ctx.n, 1 << 14)
    for name, kw in configs:
        try:
            loss = SamplesLoss("sinkhorn", blur=blur, potentials=True, **kw)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                loss(ctx.x[:small], ctx.y[:small])  # compiles and autotunes
                (f, g), sec = ctx.wall_s(functools.partial(loss, ctx.x, ctx.y))
            err, err_max = exact_marginal_error(ctx.x, ctx.y, a, a, f, g, _EPS)
            err_tf32, _ = exact_marginal_error(xt, yt, a, a, f, g, _EPS)
        except Exception:  # noqa: BLE001
            traceback.print_exc()
            continue
        info = getattr(loss, "last_multiscale_info", None)
        print(f"[multiscale] FlashSinkhorn {version} {name}: {sec:.2f} s, exact error {err:.2e} "
              f"(max of the two {err_max:.2e}, on its TF32 points {err_tf32:.2e})"
              + (f", accepted {info.accepted} stop {info.stop}" if info is not None else ""),
              flush=True)
        r = row("sinkhorn multiscale" if name == "multiscale" else "sinkhorn eps-scaling",
                f"flash {name}", ctx.size + f",eps={_EPS}", sec * 1e3, "s to tol", sec, None,
                err=err)
        r.update(err_max_side=err_max, err_on_tf32=err_tf32, version=version,
                 accepted=None if info is None else bool(info.accepted))
        rows.append(r)
    return rows


# --------------------------------------------------------------------------------------------
# 4. GeomLoss multiscale in a subprocess
# --------------------------------------------------------------------------------------------

_GEOMLOSS_CHILD = r"""
import sys, time, torch, warnings
from geomloss import SamplesLoss
data = torch.load(sys.argv[1])
x, y = data["x"].cuda(), data["y"].cuda()
out = {}
for scaling in (0.5, 0.9):
    # GeomLoss p=2 uses C/2 = |x-y|^2/2 at eps' = blur^2: the problem C at eps is eps' = eps/2,
    # and its potentials are half of ours.
    loss = SamplesLoss("sinkhorn", p=2, blur=(data["eps"] / 2) ** 0.5, scaling=scaling,
                       backend="multiscale", potentials=True)
    loss(x[:4096], y[:4096])
    torch.cuda.synchronize(); t0 = time.perf_counter()
    f, g = loss(x, y)
    torch.cuda.synchronize()
    out[scaling] = (time.perf_counter() - t0, (2 * f).cpu(), (2 * g).cpu())
torch.save(out, sys.argv[2])
"""


def _geomloss(ctx: _Ctx) -> list[dict]:
    if not ctx.cuda:
        return []
    torch = ctx.torch
    peers = ROOT / ".whl" / "peers"
    wheels = sorted(peers.glob("*.whl"))
    if not wheels:
        print("[multiscale] GeomLoss: no wheels in .whl/peers (geomloss, pykeops, keopscore, "
              "pybind11): skipped", flush=True)
        return []
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                        "--no-compile", "--target", str(site), *map(str, wheels)], check=True)
        data, out = Path(tmp) / "data.pt", Path(tmp) / "out.pt"
        torch.save({"x": ctx.x.cpu(), "y": ctx.y.cpu(), "eps": _EPS}, data)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(site), os.environ.get("PYTHONPATH", "")]))
        t0 = time.time()
        try:
            proc = subprocess.run([sys.executable, "-c", _GEOMLOSS_CHILD, str(data), str(out)],
                                  env=env, capture_output=True, text=True, timeout=240,
                                  check=False)
        except subprocess.TimeoutExpired:
            print("[multiscale] GeomLoss multiscale: timed out after 240 s", flush=True)
            return []
        if proc.returncode != 0:
            sig = f" (signal {-proc.returncode})" if proc.returncode < 0 else ""
            print(f"[multiscale] GeomLoss multiscale failed, exit {proc.returncode}{sig} after "
                  f"{time.time() - t0:.0f} s; stderr tail:\n{proc.stderr[-3000:]}", flush=True)
            return []
        res = torch.load(out)
    a = _uniform(ctx, ctx.n)
    rows = []
    for scaling, (sec, f, g) in res.items():
        err, err_max = exact_marginal_error(ctx.x, ctx.y, a, a, f.cuda(), g.cuda(), _EPS)
        print(f"[multiscale] GeomLoss multiscale scaling={scaling}: {sec:.2f} s, exact error "
              f"{err:.2e}", flush=True)
        r = row("sinkhorn multiscale", f"geomloss s={scaling}", ctx.size + f",eps={_EPS}",
                sec * 1e3, "s to tol", sec, None, err=err)
        r.update(err_max_side=err_max)
        rows.append(r)
    return rows


# --------------------------------------------------------------------------------------------
# 5. FlashSinkhorn's headline setting: d = 64, N = 50,000
# --------------------------------------------------------------------------------------------

def _headline(ctx: _Ctx) -> list[dict]:
    if not ctx.cuda:
        return []
    torch = ctx.torch
    from arraygen.sinkhorn import sinkhorn

    n, d, eps, iters = 50_000, 64, 0.1, 10
    torch.manual_seed(0)
    x = torch.randn(n, d, device="cuda")
    y = torch.randn(n, d, device="cuda")
    a = torch.rand(n, device="cuda") + 0.1
    b = torch.rand(n, device="cuda") + 0.1
    a, b = a / a.sum(), b / b.sum()
    size = f"N=M={n},d={d},eps={eps}"
    rows = []

    def ours():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return sinkhorn(x, y, a, b, epsilon=eps, max_iter=iters, tol=1e-30,
                            check_every=iters)

    res, sec = ctx.wall_s(ours)  # warm-up (compiles)
    sec = min(ctx.wall_s(ours)[1] for _ in range(3))
    err, _ = exact_marginal_error(x, y, a, b, res.f, res.g, eps, dtype=torch.float64)
    ours_row = row(f"sinkhorn {iters} iters", "arraygen", size, sec * 1e3, "s", sec, None,
                   err=err)
    ours_row.update(n_iter=int(res.n_iter), note="includes arraygen's final exact error pass")
    rows.append(ours_row)
    try:
        from flash_sinkhorn import SamplesLoss
    except ImportError as exc:
        print(f"[multiscale] FlashSinkhorn not importable ({exc})", flush=True)
        return rows
    for tf32 in (True, False):
        loss = SamplesLoss("sinkhorn", backend="symmetric", use_epsilon_scaling=False, eps=eps,
                           n_iters=iters, debias=False, potentials=True, normalize=False,
                           allow_tf32=tf32)
        try:
            call = functools.partial(loss, a, x, b, y)
            call()
            (f, g), _ = ctx.wall_s(call)
            fsec = min(ctx.wall_s(call)[1] for _ in range(3))
            ferr, _ = exact_marginal_error(x, y, a, b, f, g, eps, dtype=torch.float64)
        except Exception:  # noqa: BLE001
            traceback.print_exc()
            continue
        r = row(f"sinkhorn {iters} iters", f"flash symmetric{' tf32' if tf32 else ''}", size,
                fsec * 1e3, "s", fsec, None, err=ferr)
        rows.append(r)
        ours_row.update(peer=f"flash symmetric{' tf32' if tf32 else ''}", vs_peer=fsec / sec)
    return rows


# --------------------------------------------------------------------------------------------

PIECES = {"kernels": _kernels, "sinkhorn": _sinkhorn_multiscale, "flash": _flash_runs,
          "geomloss": _geomloss, "headline": _headline}


def run(quick: bool = False, smoke: bool = False) -> list[dict]:
    """The rows of the pieces named in ``ARRAYGEN_MULTISCALE_PIECES`` (comma list of
    kernels, sinkhorn, flash, geomloss, headline; default all), each guarded."""
    ctx = _Ctx(quick, smoke)
    names = [p for p in os.environ.get("ARRAYGEN_MULTISCALE_PIECES", ",".join(PIECES)).split(",")
             if p]
    rows: list[dict] = []
    for name in names:
        t0 = time.time()
        _guard(name, rows, PIECES[name], ctx)
        print(f"[multiscale] piece {name}: {time.time() - t0:.1f} s", flush=True)
    return rows


if __name__ == "__main__":
    smoke = "--smoke" in sys.argv
    if smoke:
        os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
        os.environ.setdefault("TRITON_INTERPRET", "1")
    sys.path.insert(0, str(ROOT))
    with contextlib.suppress(BrokenPipeError):
        for r in run(quick="--quick" in sys.argv, smoke=smoke):
            print(json.dumps(r))
