"""End-to-end CPU run of arraygen/backends/cupy/tiled.py (tests/test_tiled_variants.py runs it in a
subprocess): a NumPy stand-in for cupy, and every kernel launch run by the host build of tiled.cu
(tests/tiled_cu_host.cpp). Usage: ``python tiled_cupy_host.py WORKDIR``. Exit status 0: every
Tuning case within the tolerance table of the float64 oracle, with the kernels the case selects.
"""

from __future__ import annotations

import contextlib
import itertools
import subprocess
import sys
import types
from pathlib import Path

import numpy as np

if __name__ != "__main__":  # it replaces sys.modules["cupy"]: never inside another process
    raise ImportError("tests/tiled_cupy_host.py is a script: run it, do not import it")

ROOT = Path(__file__).resolve().parents[1]
WORK = Path(sys.argv[1])
EXE = WORK / "exe"

_fake = types.ModuleType("cupy")
_fake.float32, _fake.float64 = np.float32, np.float64
for _f in ("ones", "zeros", "empty", "ascontiguousarray", "sum", "max", "exp2", "log2"):
    setattr(_fake, _f, getattr(np, _f))
_fake.cuda = types.SimpleNamespace(Device=lambda: types.SimpleNamespace(id=0))
sys.modules["cupy"] = _fake
sys.path.insert(0, str(ROOT))

import arraygen.backends.cupy.tiled as ct
from arraygen.reference import tiled as ref
from arraygen.testing import tol

ct.native = np.ascontiguousarray
ct._native = lambda a, dtype: np.ascontiguousarray(a, dtype)
ct.sm_count = lambda i: 132
ct.stream_for = lambda x: contextlib.nullcontext()
ct.cuda_device_context = lambda x: contextlib.nullcontext()
ct.like = lambda out, x: out
ct._function = lambda name: types.SimpleNamespace(num_regs=48)

CASES = [
    {"matvec_cosines": True},
    {"matvec_cosines": True, "matvec_poly_share": 1 / 16, "fast_rows": 8},
    {"matvec_poly_share": 0.25, "poly_degree": 3},
    {"lazy_rescale": True},
    {"lazy_rescale": True, "softmax_cosines": True, "softmax_poly_share": 2 / 16},
    {"lazy_rescale": True, "softmax_cosines": True, "fast_rows": 8, "splits": 3},
]
_names: set[str] = set()  # every kernel launched (the host program's instances)
_case: set[str] = set()  # the kernels of the current case
_record = True


def _launch(name, grid, args):
    """Record the kernel (first pass) or run it on the host (second pass), outputs in place."""
    _names.add(name)
    _case.add(name)
    if _record:
        return
    fast = name.startswith(("tiled_matvec_fast", "tiled_softmax_lazy"))
    rows = int(name.rstrip(">").rsplit(",", 1)[1]) if fast else 4
    pc = int(name.split(",")[2].strip(" >"))
    if name.startswith("tiled_matvec"):
        if fast:
            x, y, u, ctr, n, m, chunk, p, c0, s, part = args
        else:
            x, y, u, _, _, n, m, chunk, p, c0, s, part = args
            ctr = np.zeros(x.shape[1], x.dtype)
        files = {"x": x, "y": y, "u": u, "w2": np.zeros(1, x.dtype), "ctr": ctr}
        outs = {"part": part}
    else:
        if fast:
            x, y, v, w2, ctr, n, m, chunk, p, c0, s, acc, mx, sm = args
        else:
            x, y, v, w2, n, m, chunk, p, c0, s, acc, mx, sm = args
            ctr = np.zeros(x.shape[1], x.dtype)
        files = {"x": x, "y": y, "u": v, "w2": w2, "ctr": ctr}
        outs = {"acc": acc, "mx": mx, "sm": sm}
    if c0 != 0:  # the host program runs every right-hand-side chunk at once
        return
    work = WORK / "w"
    work.mkdir(exist_ok=True)
    for key, arr in files.items():
        np.ascontiguousarray(arr).tofile(work / f"{key}.bin")
    (work / "params.txt").write_text(f"{n} {m} {x.shape[1]} {p} {pc} {chunk} {grid[1]} "
                                     f"{float(s)!r} {rows}\n")
    res = subprocess.run([str(EXE), name, str(work)], check=False, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr
    for key, arr in outs.items():
        arr[...] = np.fromfile(work / f"{key}.bin", arr.dtype).reshape(arr.shape)


ct._launch = _launch


def _run_all() -> float:
    rng = np.random.default_rng(0)
    worst = 0.0
    for case, dtype, p in itertools.product(CASES, (np.float32, np.float64), (1, 6)):
        if (dtype == np.float64 or p > 1) and case not in CASES[-2:]:
            continue  # double and chunked right-hand sides: the last two cases (same templates)
        n, m = 700, 333
        x = rng.standard_normal((n, 3)).astype(dtype)
        y = (rng.standard_normal((m, 3)) + 0.3).astype(dtype)
        u = rng.standard_normal((m, p)).astype(dtype)
        w = rng.standard_normal(m).astype(dtype)
        w[5] = -np.inf
        _case.clear()
        with ct.TUNING.override(**case):
            mv = ct.kernel_matvec(x, y, u, None, None, beta=0.8)
            lse = ct.kernel_logsumexp(x, y, w, beta=0.8)
            out, lse2 = ct.kernel_softmax_matvec(x, y, u, w, beta=0.8)
        if _record:
            continue
        kinds = {nm.split("<")[0] for nm in _case}
        fast_mv = (case.get("matvec_cosines") or case.get("fast_rows", 4) != 4
                   or (dtype == np.float32 and case.get("matvec_poly_share", 0) > 0))
        want_mv = "tiled_matvec_fast" if fast_mv else "tiled_matvec_direct"
        lazy = case.get("lazy_rescale", ct.Tuning().lazy_rescale)
        want_sm = "tiled_softmax_lazy" if lazy else "tiled_softmax_direct"
        assert kinds == {want_mv, want_sm}, (case, kinds)
        rtol = tol(np.dtype(dtype).name, "poly_exp2", m)[0]
        ref_mv = ref.kernel_matvec(x, y, u, 0.8)
        ref_out, ref_lse = ref.kernel_softmax_matvec(x, y, u, 0.8, w)
        abs_mv = np.max(ref.kernel_matvec(x, y, np.abs(u), 0.8))  # sum of |terms|: u signed
        errs = (np.max(np.abs(mv - ref_mv)) / abs_mv,
                max(np.max(np.abs(lse - ref_lse)), np.max(np.abs(lse2 - ref_lse)))
                / np.max(np.abs(ref_lse)),
                np.max(np.abs(out - ref_out)) / np.max(np.abs(ref_out)))
        assert max(errs) < rtol, (case, dtype, p, errs, rtol)
        assert mv.dtype == dtype and lse.dtype == dtype and out.shape == (n, p)
        worst = max(worst, max(errs) / rtol)
    return worst


_run_all()
lines = [("MV" if "matvec" in nm else "SM") + f"({nm.split('<')[1].split(',')[0]}, {nm}),"
         for nm in sorted(_names)]
(WORK / "tiled_cu_host_kernels.inc").write_text("\n".join(lines) + "\n")
cmd = ["g++", "-std=c++20", "-O1", "-ffp-contract=off", "-pthread",
       f"-I{ROOT}/arraygen/backends/cupy", f"-I{WORK}", str(ROOT / "tests" / "tiled_cu_host.cpp"),
       "-o", str(EXE)]
build = subprocess.run(cmd, check=False, capture_output=True, text=True)
assert build.returncode == 0, build.stderr[-3000:]
_record = False
print(f"{len(lines)} kernels; worst error / rtol: {_run_all():.3g}")
