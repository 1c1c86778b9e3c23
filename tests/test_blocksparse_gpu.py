"""Block-sparse launchers of the GPU languages (cupy, numba_cuda, triton) against float64 oracles.

The launchers are checked on random CSR pair lists (rows keeping one, some or all column
clusters; partial last clusters on both sides; block_x != block_y) against a dense float64
computation restricted to the pair list's point mask, in the CUDA simulators at tiny sizes and
natively on a GPU. Forced splits of the pair lists and row clusters spanning several thread
blocks exercise the launch geometry. Without a GPU the CUDA C source runs on the host
(tests/blocksparse_cu_host.cpp), under the CuPy launcher itself with a NumPy stand-in for CuPy.
The public ``truncate=`` path through these launchers is tests/test_blocksparse.py's.
"""

from __future__ import annotations

import importlib

import conftest
import numpy as np
import pytest

from arraygen._kernels.blocksparse import cluster_count, point_mask
from arraygen._kernels.blocksparse_gpu import pair_splits, row_geometry
from arraygen.testing import assert_close, tol

GPU = ("cupy", "numba_cuda", "triton")
DTYPES = ("float32", "float64")


@pytest.fixture(params=[p for p in conftest.kernel_backend_params() if p.id in GPU])
def gpu_backend(request):
    """The GPU entries of conftest's ``kernel_backend`` (CPU ones: tests/test_blocksparse.py)."""
    return request.param


def _launchers(name):
    return importlib.import_module(f"arraygen.backends.{name}.blocksparse")


def _sizes(kb):
    return (37, 29) if kb.simulated else (403, 357)


def _blocks(kb):
    return (8, 6) if kb.simulated else (48, 40)


def _pair_list(rng, kx, ky):
    """Random CSR pair list: row 0 keeps every column cluster, row 1 one, the rest a subset."""
    offsets, cols = [0], []
    for a in range(kx):
        k = ky if a == 0 else 1 if a == 1 else int(rng.integers(1, ky + 1))
        cols += sorted(rng.choice(ky, k, replace=False).tolist())
        offsets.append(len(cols))
    return np.array(offsets, np.int32), np.array(cols, np.int32)


class _Problem:
    def __init__(self, kb, rng, d, p, dtype, bandwidths=False, neg_inf=False):
        n, m = _sizes(kb)
        self.bx, self.by = _blocks(kb)
        self.x = rng.random((n, d)).astype(dtype)
        self.y = rng.random((m, d)).astype(dtype)
        if d > 16:  # the launchers take centred points on the law-of-cosines path
            mean = (self.x.sum(0) + self.y.sum(0)) / (n + m)
            self.x, self.y = (self.x - mean).astype(dtype), (self.y - mean).astype(dtype)
        self.v = rng.standard_normal((m, max(p, 1))).astype(dtype)
        self.w = rng.standard_normal(m).astype(dtype)
        if neg_inf:
            self.w[::3] = -np.inf
        self.a = rng.uniform(0.5, 2.0, n).astype(dtype) if bandwidths else None
        self.b = rng.uniform(0.5, 2.0, m).astype(dtype) if bandwidths else None
        self.beta = 4.0 / d
        self.offsets, self.cols = _pair_list(rng, cluster_count(n, self.bx),
                                             cluster_count(m, self.by))
        if neg_inf:  # the contract: every row keeps a column of finite weight
            self.w[0] = 0.0
            for a in range(self.offsets.size - 1):
                row = self.cols[self.offsets[a]:self.offsets[a + 1]]  # a view: edited in place
                if 0 not in row:  # column 0 (finite weight) is in cluster 0
                    row[0] = 0
                    row.sort()
        self.mask = point_mask(self.offsets, self.cols, self.bx, self.by, n, m)
        x64, y64 = self.x.astype(np.float64), self.y.astype(np.float64)
        self.d2 = ((x64[:, None, :] - y64[None, :, :]) ** 2).sum(-1)
        self.ns = kb.xp

    def args(self, *names):
        return [None if getattr(self, k) is None else self.ns.asarray(getattr(self, k))
                for k in names]

    def pairs(self):
        return self.ns.asarray(self.offsets), self.ns.asarray(self.cols)

    def kw(self):
        return {"beta": self.beta, "block_x": self.bx, "block_y": self.by}

    def matvec(self):
        scale = np.ones_like(self.d2)
        if self.a is not None:
            scale = self.a.astype(np.float64)[:, None] * self.b.astype(np.float64)[None, :]
        k = np.where(self.mask, np.exp(-self.beta * scale * self.d2), 0.0)
        return k @ self.v.astype(np.float64)

    def softmax(self):
        z = np.where(self.mask, self.w.astype(np.float64)[None, :] - self.beta * self.d2, -np.inf)
        top = z.max(axis=1, keepdims=True)
        e = np.exp(z - top)
        s = e.sum(axis=1)
        return (e @ self.v.astype(np.float64)) / s[:, None], top[:, 0] + np.log(s)


def _check(out, want, ns, dtype, n_terms, exponent=0.0):
    assert type(out) is type(ns.asarray(np.zeros(1)))
    assert out.dtype == getattr(ns, dtype)
    rtol, atol_scale = tol(dtype, "reduction", n_terms)
    atol = atol_scale * (float(np.max(np.abs(want))) + exponent)
    assert_close(out, want, rtol=rtol, atol=atol, dtype=dtype, check_namespace=False,
                 check_device=False, check_dtype=False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d,p,bandwidths", [(3, 1, False), (2, 5, True), (20, 3, False)])
def test_matvec_blocks(gpu_backend, rng, dtype, d, p, bandwidths):
    kb = gpu_backend
    pr = _Problem(kb, rng, d, p, dtype, bandwidths=bandwidths)
    x, y, v, a, b = pr.args("x", "y", "v", "a", "b")
    out = _launchers(kb.name).kernel_matvec_blocks(x, y, v, a, b, *pr.pairs(), **pr.kw())
    assert tuple(out.shape) == (pr.x.shape[0], p)
    _check(out, pr.matvec(), kb.xp, dtype, pr.y.shape[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [3, 20])
def test_logsumexp_blocks(gpu_backend, rng, dtype, d):
    kb = gpu_backend
    pr = _Problem(kb, rng, d, 0, dtype, neg_inf=True)
    x, y, w = pr.args("x", "y", "w")
    lse = _launchers(kb.name).kernel_logsumexp_blocks(x, y, w, *pr.pairs(), **pr.kw())
    _, want = pr.softmax()
    assert tuple(lse.shape) == (pr.x.shape[0],)
    _check(lse, want, kb.xp, dtype, pr.y.shape[0], exponent=pr.beta * d + 3.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d,p", [(3, 1), (2, 6), (20, 2)])
def test_softmax_matvec_blocks(gpu_backend, rng, dtype, d, p):
    kb = gpu_backend
    pr = _Problem(kb, rng, d, p, dtype)
    x, y, v, w = pr.args("x", "y", "v", "w")
    out, lse = _launchers(kb.name).kernel_softmax_matvec_blocks(x, y, v, w, *pr.pairs(),
                                                                **pr.kw())
    want_out, want_lse = pr.softmax()
    assert tuple(out.shape) == (pr.x.shape[0], p)
    _check(out, want_out, kb.xp, dtype, pr.y.shape[0])
    _check(lse, want_lse, kb.xp, dtype, pr.y.shape[0], exponent=pr.beta * d + 3.0)


def _geometry_override(name):
    """Forced splits and row clusters spanning several thread blocks (programs)."""
    mod = _launchers(name)
    if name == "triton":
        return mod.TUNING.override(splits=3, block_m=16)
    return mod.TUNING.override(splits=3, threads=32, rows=1)


@pytest.mark.parametrize("d", [3, 20])
def test_splits_and_row_tiles(gpu_backend, rng, d):
    """Three splits of every pair list (rows with fewer pairs than splits included) and
    clusters of more rows than one block holds give the unsplit results."""
    kb = gpu_backend
    pr = _Problem(kb, rng, d, 2, "float64")
    pr.bx = 40 if kb.simulated else 150  # > 32 rows of one block: several row tiles
    pr.offsets, pr.cols = _pair_list(rng, cluster_count(pr.x.shape[0], pr.bx),
                                     cluster_count(pr.y.shape[0], pr.by))
    pr.mask = point_mask(pr.offsets, pr.cols, pr.bx, pr.by, pr.x.shape[0], pr.y.shape[0])
    x, y, v, w = pr.args("x", "y", "v", "w")
    mod = _launchers(kb.name)
    with _geometry_override(kb.name):
        mv = mod.kernel_matvec_blocks(x, y, v, None, None, *pr.pairs(), **pr.kw())
        out, lse = mod.kernel_softmax_matvec_blocks(x, y, v, w, *pr.pairs(), **pr.kw())
    want_out, want_lse = pr.softmax()
    m = pr.y.shape[0]
    _check(mv, pr.matvec(), kb.xp, "float64", m)
    _check(out, want_out, kb.xp, "float64", m)
    _check(lse, want_lse, kb.xp, "float64", m, exponent=pr.beta * d + 3.0)


def test_geometry_helpers():
    assert row_geometry(128) == (64, 2, 1)
    assert row_geometry(512) == (128, 4, 1)
    assert row_geometry(8) == (32, 1, 1)
    threads, rows, tiles = row_geometry(1000)
    assert threads * rows * tiles >= 1000 and threads <= 128
    assert row_geometry(100, threads=32, rows=1) == (32, 1, 4)
    # splits: a fuller last wave, but at least two pairs per split on average
    assert pair_splits(10, 10 * 100, 10, 1000) == 8
    assert pair_splits(10, 10 * 5, 10, 1000) == 2
    assert pair_splits(10_000, 10_000 * 100, 10_000, 100) == 1
    assert pair_splits(10, 10, 10, 1000, forced=5) == 5


def test_cuda_source_instantiates_every_launcher_kernel():
    """The kernel names the CuPy launcher asks NVRTC for exist in blocksparse.cu."""
    from pathlib import Path

    import arraygen

    src = (Path(arraygen.__file__).parent / "backends" / "cupy" / "blocksparse.cu").read_text()
    for kernel in ("bs_matvec_direct", "bs_softmax_direct", "bs_matvec_cos", "bs_softmax_cos"):
        assert f"__global__ void __launch_bounds__(BS_MAX_THREADS)\n{kernel}(" in src


# --------------------------------------------------------------------------------------------
# blocksparse.cu on the host (tests/blocksparse_cu_host.cpp), as backends/cupy/blocksparse.py
# launches it: the CUDA C kernels are checked without a GPU
# --------------------------------------------------------------------------------------------

_CU_INSTANCES = [  # (kind, C type, template instance)
    ("mv", "float", "bs_matvec_direct<float, 3, 1, 2, false>"),
    ("mv", "double", "bs_matvec_direct<double, 2, 4, 1, true>"),
    ("mv", "double", "bs_matvec_direct<double, 2, 4, 2, true>"),
    ("mv", "double", "bs_matvec_direct<double, 3, 4, 4, false>"),
    ("sm", "float", "bs_softmax_direct<float, 3, 0, 2>"),
    ("sm", "double", "bs_softmax_direct<double, 3, 4, 1>"),
    ("sm", "double", "bs_softmax_direct<double, 3, 4, 2>"),
    ("mv", "double", "bs_matvec_cos<double, 4, true>"),
    ("sm", "float", "bs_softmax_cos<float, 0>"),
    ("sm", "double", "bs_softmax_cos<double, 4>"),
]


@pytest.fixture(scope="module")
def cu_host(tmp_path_factory):
    """blocksparse.cu compiled for the CPU with the instances above (skips without g++)."""
    import shutil
    import subprocess
    from pathlib import Path

    import arraygen

    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ not found: the CUDA source is not run on the host")
    out = tmp_path_factory.mktemp("blocksparse_cu_host")
    lines = [f'KERNEL("{kind}", {ct}, {inst}),' for kind, ct, inst in _CU_INSTANCES]
    (out / "blocksparse_cu_host_kernels.inc").write_text("\n".join(lines) + "\n")
    root = Path(arraygen.__file__).resolve().parent
    exe = out / "blocksparse_cu_host"
    cmd = [gxx, "-std=c++20", "-O1", "-ffp-contract=off", "-pthread", "-Wno-unknown-pragmas",
           f"-I{root / 'backends' / 'cupy'}", f"-I{out}",
           str(root.parent / "tests" / "blocksparse_cu_host.cpp"), "-o", str(exe)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if res.returncode != 0 and "barrier" in res.stderr and "No such file" in res.stderr:
        pytest.skip("the C++ compiler has no <barrier>")
    assert res.returncode == 0, res.stderr[-4000:]
    return exe


def _run_cu(exe, workdir, inst, pr, *, p, splits, threads, rows, bandwidths=False):
    """One launcher call of backends/cupy/blocksparse.py, its kernels run on the host."""
    import subprocess

    from arraygen._kernels.tiled import merge_column_splits

    ct = "float" if "float," in inst else "double"
    dtype = np.float32 if ct == "float" else np.float64
    n, d = pr.x.shape
    m = pr.y.shape[0]
    cos = "_cos<" in inst
    if cos:
        threads, rows = 128, 1
    tpc = -(-pr.bx // (threads * rows))
    pc = 0 if p == 0 else (1 if p == 1 else 4)
    log2e = 1.0 / np.log(2.0)
    s = pr.beta * log2e if cos else np.sqrt(pr.beta * log2e)
    ones_n, ones_m = np.ones(n), np.ones(m)
    arrays = {"x": pr.x, "y": pr.y, "u": pr.v[:, :max(p, 1)],
              "a": pr.a if bandwidths else ones_n, "b": pr.b if bandwidths else ones_m,
              "w2": pr.w * dtype(log2e), "yy": (pr.y.astype(dtype) ** 2).sum(1)}
    for name, arr in arrays.items():
        np.ascontiguousarray(arr, dtype).tofile(workdir / f"{name}.bin")
    pr.offsets.astype(np.int32).tofile(workdir / "offsets.bin")
    pr.cols.astype(np.int32).tofile(workdir / "cols.bin")
    (workdir / "params.txt").write_text(
        f"{n} {m} {d} {p} {pc} {pr.bx} {pr.by} {tpc} {splits} {threads} {float(dtype(s))!r}\n")
    res = subprocess.run([str(exe), inst, str(workdir)], capture_output=True, text=True,
                         timeout=300, check=False)
    assert res.returncode == 0, res.stderr
    if inst.startswith("bs_matvec"):
        part = np.fromfile(workdir / "part.bin", dtype).reshape(splits, n, p)
        return part.sum(axis=0), None
    acc = np.fromfile(workdir / "acc.bin", dtype).reshape(splits, n, max(p, 1))[:, :, :p]
    mx = np.fromfile(workdir / "mx.bin", dtype).reshape(splits, n)
    sm = np.fromfile(workdir / "sm.bin", dtype).reshape(splits, n)
    return merge_column_splits(np, acc, mx, sm)


class _Host:
    name, simulated = "cu_host", True

    def __init__(self):
        import array_api_compat.numpy as xnp

        self.xp = xnp


@pytest.mark.parametrize("kind,ct,inst", _CU_INSTANCES, ids=[i[2].replace(" ", "")
                                                            for i in _CU_INSTANCES])
@pytest.mark.parametrize("splits,threads,rows", [(1, 64, 2), (3, 32, 1)])
def test_cuda_source_on_host(cu_host, tmp_path, rng, kind, ct, inst, splits, threads, rows):
    """blocksparse.cu (every kernel, both dtypes, bandwidths, several right-hand sides, forced
    splits, clusters over several blocks) against the float64 masked oracle."""
    args = [a.strip() for a in inst[inst.index("<") + 1:-1].split(",")]
    cos = "_cos<" in inst
    d = 20 if cos else int(args[1])
    pc = int(args[1] if cos else args[2])
    p = 0 if pc == 0 else (1 if pc == 1 else 6)
    if not cos:
        rows = int(args[3])
    bandwidths = args[-1] == "true" and kind == "mv"
    dtype = "float32" if ct == "float" else "float64"
    pr = _Problem(_Host(), rng, d, p, dtype, bandwidths=bandwidths, neg_inf=(kind == "sm"))
    pr.bx = 40  # several blocks of 32 threads x 1 row
    pr.offsets, pr.cols = _pair_list(rng, cluster_count(pr.x.shape[0], pr.bx),
                                     cluster_count(pr.y.shape[0], pr.by))
    pr.mask = point_mask(pr.offsets, pr.cols, pr.bx, pr.by, pr.x.shape[0], pr.y.shape[0])
    if kind == "sm":
        for a in range(pr.offsets.size - 1):  # a finite log-weight in every row (column 0)
            row = pr.cols[pr.offsets[a]:pr.offsets[a + 1]]
            if 0 not in row:
                row[0] = 0
                row.sort()
        pr.mask = point_mask(pr.offsets, pr.cols, pr.bx, pr.by, pr.x.shape[0], pr.y.shape[0])
    out, lse = _run_cu(cu_host, tmp_path, inst, pr, p=p, splits=splits, threads=threads,
                       rows=rows, bandwidths=bandwidths)
    m = pr.y.shape[0]
    rtol, _ = tol(dtype, "reduction", m)
    if kind == "mv":
        want = pr.matvec()[:, :p]
        np.testing.assert_allclose(out, want, rtol=rtol, atol=rtol * np.abs(want).max())
        return
    want_out, want_lse = pr.softmax()
    np.testing.assert_allclose(lse, want_lse, rtol=rtol, atol=rtol * (pr.beta * d + 3.0))
    if p:
        want_out = want_out[:, :p]
        np.testing.assert_allclose(out, want_out, rtol=rtol, atol=rtol * np.abs(want_out).max())


class _HostKernel:
    """A kernel of blocksparse.cu as the CuPy launcher calls it, ``fn(grid, block, args)``, run
    by the host executable. The arguments are matched to the kernel's parameter names read from
    the .cu source, so a launcher passing them in the wrong order fails here."""

    def __init__(self, exe, workdir, name):
        import re
        from pathlib import Path

        import arraygen

        self.exe, self.workdir, self.name = exe, workdir, name
        src = (Path(arraygen.__file__).parent / "backends" / "cupy" / "blocksparse.cu")
        base = name[:name.index("<")]
        sig = re.search(rf"\n{base}\(([^)]*)\)", src.read_text()).group(1)
        self.params = [re.findall(r"\w+", p)[-1] for p in sig.split(",")]
        targs = [a.strip() for a in name[name.index("<") + 1:-1].split(",")]
        self.cos = "_cos" in base
        self.pc = int(targs[1] if self.cos else targs[2])
        self.dtype = np.float32 if targs[0] == "float" else np.float64

    def __call__(self, grid, block, args):
        import subprocess

        assert len(args) == len(self.params), (self.params, len(args))
        a = dict(zip(self.params, args, strict=True))
        wd = self.workdir
        n, m = int(a["n"]), int(a["m"])
        defaults = {"a": np.ones(n), "b": np.ones(m), "yy": np.zeros(m), "w2": np.zeros(m),
                    "u": np.zeros((m, 1))}
        for fname in ("x", "y", "u", "a", "b", "yy", "w2"):
            key = "v" if fname == "u" and "v" in a else fname
            if key in a:
                arr = a[key]
                assert arr.dtype == self.dtype, (key, arr.dtype)
            else:
                arr = defaults[fname].astype(self.dtype)
            np.ascontiguousarray(arr).tofile(wd / f"{fname}.bin")
        for key in ("offsets", "cols"):
            assert a[key].dtype == np.int32, key
            np.ascontiguousarray(a[key]).tofile(wd / f"{key}.bin")
        d = int(a["d"]) if self.cos else a["x"].shape[1]
        p, c0, tpc = int(a["p"]), int(a["c0"]), int(a["tpc"])
        splits, threads = grid[1], block[0]
        kx = a["offsets"].shape[0] - 1
        assert grid[0] == kx * tpc and threads <= 128
        s = float(a["beta2"] if self.cos else a["s"])
        (wd / "params.txt").write_text(f"{n} {m} {d} {p} {self.pc} {int(a['bx'])} "
                                       f"{int(a['by'])} {tpc} {splits} {threads} {s!r} {c0}\n")
        res = subprocess.run([str(self.exe), self.name, str(wd)], capture_output=True,
                             text=True, timeout=300, check=False)
        assert res.returncode == 0, res.stderr
        pa = max(p, 1)
        cs = slice(c0, min(c0 + max(self.pc, 1), pa))
        if "part_out" in a:
            part = np.fromfile(wd / "part.bin", self.dtype).reshape(splits, n, pa)
            a["part_out"][:, :, cs] = part[:, :, cs]
        else:
            acc = np.fromfile(wd / "acc.bin", self.dtype).reshape(splits, n, pa)
            a["acc_out"][:, :, cs] = acc[:, :, cs]
            if c0 == 0:  # the kernels write the softmax state in the first launch only
                a["mx_out"][...] = np.fromfile(wd / "mx.bin", self.dtype).reshape(splits, n)
                a["sm_out"][...] = np.fromfile(wd / "sm.bin", self.dtype).reshape(splits, n)


@pytest.fixture
def host_cupy_launcher(cu_host, tmp_path, monkeypatch):
    """arraygen.backends.cupy.blocksparse imported against a NumPy stand-in for CuPy, its
    kernels run by the host executable (skips where CuPy itself is installed: the GPU run
    tests the real thing)."""
    import contextlib
    import importlib.util
    import sys
    import types

    import arraygen.backends.cupy as cupy_pkg

    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed: the launcher is tested natively")
    fake = types.ModuleType("cupy")
    for name in ("float32", "float64", "int32", "empty", "ones", "zeros", "sum", "max", "exp2",
                 "log2", "ascontiguousarray"):
        setattr(fake, name, getattr(np, name))
    fake.cuda = types.SimpleNamespace(Device=lambda *a: types.SimpleNamespace(id=0))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    name = "arraygen.backends.cupy.blocksparse"
    sys.modules.pop(name, None)
    try:
        mod = importlib.import_module(name)
        monkeypatch.setattr(mod, "native", np.ascontiguousarray)
        monkeypatch.setattr(mod, "stream_for", lambda a: contextlib.nullcontext())
        monkeypatch.setattr(mod, "cuda_device_context", lambda a: contextlib.nullcontext())
        monkeypatch.setattr(mod, "like", lambda out, ref: out)
        monkeypatch.setattr(mod, "sm_count", lambda i: 4)
        monkeypatch.setattr(mod, "_function", lambda expr: _HostKernel(cu_host, tmp_path, expr))
        yield mod
    finally:
        sys.modules.pop(name, None)
        if hasattr(cupy_pkg, "blocksparse"):
            delattr(cupy_pkg, "blocksparse")


@pytest.mark.parametrize("op,dtype,d,p,bandwidths", [
    ("matvec", "float32", 3, 1, False), ("matvec", "float64", 2, 6, True),
    ("matvec", "float64", 20, 6, True), ("logsumexp", "float32", 3, 0, False),
    ("logsumexp", "float32", 20, 0, False), ("softmax", "float64", 3, 6, False),
    ("softmax", "float64", 20, 3, False)])
@pytest.mark.parametrize("splits", [None, 3])
def test_cupy_launcher_on_host(host_cupy_launcher, rng, op, dtype, d, p, bandwidths, splits):
    """The CuPy launchers themselves (argument order, geometry, dtypes, splits and their merge)
    with the kernels of blocksparse.cu run on the host, against the float64 masked oracle."""
    mod = host_cupy_launcher
    pr = _Problem(_Host(), rng, d, p, dtype, bandwidths=bandwidths, neg_inf=(op != "matvec"))
    pr.bx = 40
    pr.offsets, pr.cols = _pair_list(rng, cluster_count(pr.x.shape[0], pr.bx),
                                     cluster_count(pr.y.shape[0], pr.by))
    for a in range(pr.offsets.size - 1):  # a finite log-weight in every row (column 0)
        row = pr.cols[pr.offsets[a]:pr.offsets[a + 1]]
        if 0 not in row:
            row[0] = 0
            row.sort()
    pr.mask = point_mask(pr.offsets, pr.cols, pr.bx, pr.by, pr.x.shape[0], pr.y.shape[0])
    kw = pr.kw()
    m = pr.y.shape[0]
    rtol, _ = tol(dtype, "reduction", m)
    offsets, cols = pr.offsets.astype(np.int64), pr.cols  # int64 offsets: cast by the launcher
    with mod.TUNING.override(splits=splits):
        if op == "matvec":
            out = mod.kernel_matvec_blocks(pr.x, pr.y, pr.v, pr.a, pr.b, offsets, cols, **kw)
            want = pr.matvec()
            assert out.dtype == np.dtype(dtype) and out.shape == want.shape
            np.testing.assert_allclose(out, want, rtol=rtol, atol=rtol * np.abs(want).max())
            return
        if op == "logsumexp":
            lse = mod.kernel_logsumexp_blocks(pr.x, pr.y, pr.w, offsets, cols, **kw)
            out = None
        else:
            out, lse = mod.kernel_softmax_matvec_blocks(pr.x, pr.y, pr.v, pr.w, offsets, cols,
                                                        **kw)
    want_out, want_lse = pr.softmax()
    assert lse.dtype == np.dtype(dtype) and lse.shape == want_lse.shape
    np.testing.assert_allclose(lse, want_lse, rtol=rtol, atol=rtol * (pr.beta * d + 3.0))
    if out is not None:
        assert out.shape == want_out.shape
        np.testing.assert_allclose(out, want_out, rtol=rtol, atol=rtol * np.abs(want_out).max())
