"""Fast variants of the dense tiled kernels (FMA-only exponent, lazy rescaling, polynomial exp2).

* The float32 polynomial ``2**x`` against float64 ``exp2`` over the reduced range (the
  ``"poly_exp2"`` row of :mod:`arraygen.testing`), and the coefficient copies in the kernels.
* The CUDA C source ``arraygen/backends/cupy/tiled.cu`` compiled for the CPU
  (``tests/tiled_cu_host.cpp``: 128 threads and a barrier per block) against the float64 oracle:
  every fast variant, column splits, lazy redo of many tiles, ``-inf`` weights, far points.
* The Triton variants through their tuning record (interpreter on the CPU, native on a GPU).
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from arraygen import tiled
from arraygen._kernels.tiled import (
    POLY_EXP2_COEFFS,
    POLY_EXP2_REL_ERR,
    exp2_poly,
    merge_column_splits,
    poly_columns,
)
from arraygen.reference import tiled as ref
from arraygen.testing import POLY_EXP2_RTOL, assert_close, to_numpy, tol

ROOT = Path(__file__).resolve().parents[1]
CU = ROOT / "arraygen" / "backends" / "cupy" / "tiled.cu"
LOG2E = 1.0 / math.log(2.0)


# ---------------------------------------------------------------- the polynomial itself


@pytest.mark.parametrize("degree", sorted(POLY_EXP2_COEFFS))
def test_poly_exp2_relative_error(degree):
    """Max relative error over every reduced argument f in [-1/2, 1/2] and exponents -125..63."""
    f = np.linspace(-0.5, 0.5, 400_001)
    t = (np.arange(-125, 64)[:, None] + f[None, ::97]).ravel()
    t = np.concatenate([f, t, [-125.0, 63.99, 64.0]]).astype(np.float32)
    got = exp2_poly(t, degree).astype(np.float64)
    want = np.exp2(t.astype(np.float64))
    err = float(np.max(np.abs(got / want - 1)))
    assert err <= POLY_EXP2_REL_ERR[degree]
    assert err > 0.5 * POLY_EXP2_REL_ERR[degree]  # the stated bound is tight, not generous
    assert err <= POLY_EXP2_RTOL  # the tolerance row covers every degree offered
    # the clamps: far below the range a tiny positive number, never inf/NaN; above, 2**64
    low = exp2_poly(np.float32([-126.0, -200.0, -1e30]), degree)
    assert np.all((low >= 0) & (low <= 2.0**-125))
    assert float(exp2_poly(np.float32(1e30), degree)) == pytest.approx(2.0**64, rel=1e-4)


def test_poly_exp2_tolerance_row():
    r32, _ = tol("float32", "poly_exp2", n_terms=100)
    r_red, _ = tol("float32", "reduction", n_terms=100)
    assert r32 == pytest.approx(r_red + POLY_EXP2_RTOL)
    assert tol("float64", "poly_exp2", 100) == tol("float64", "reduction", 100)


def test_kernel_coefficients_match_the_contract():
    """tiled.cu's tiled_poly2<DEG> literals are the float32 coefficients of POLY_EXP2_COEFFS."""
    text = CU.read_text()
    for degree, coeffs in POLY_EXP2_COEFFS.items():
        body = re.search(rf"tiled_poly2<{degree}>\(float f\) \{{(.*?)\n\}}", text, re.DOTALL)
        assert body is not None, degree
        lits = [float(v) for v in re.findall(r"([0-9.]+(?:e-?[0-9]+)?)f\b", body.group(1))]
        assert sorted(np.float32(lits).tolist()) == sorted(np.float32(coeffs).tolist())


def test_poly_columns():
    assert poly_columns(0) == 0 and poly_columns(0.25) == 4 and poly_columns(1) == 16
    for bad in (0.1, -0.0625, 1.0625):
        with pytest.raises(ValueError, match="poly_share"):
            poly_columns(bad)


# ---------------------------------------------------------------- tiled.cu on the host

_VARIANTS = [
    # (kind, dtype, d, pc, cos, npoly, degree, rows)
    ("mv", "float", 3, 1, True, 0, 5, 4),
    ("mv", "float", 3, 1, True, 2, 5, 8),
    ("mv", "float", 3, 1, False, 4, 3, 4),
    ("mv", "float", 2, 4, True, 16, 4, 4),
    ("mv", "float", 16, 1, True, 1, 5, 8),
    ("mv", "double", 3, 1, True, 0, 5, 4),
    ("sm", "float", 3, 0, True, 0, 5, 4),
    ("sm", "float", 3, 0, False, 0, 5, 8),
    ("sm", "float", 3, 1, True, 2, 5, 4),
    ("sm", "float", 3, 4, True, 16, 3, 4),
    ("sm", "float", 1, 1, False, 4, 5, 4),
    ("sm", "float", 16, 1, True, 1, 5, 8),
    ("sm", "double", 3, 4, True, 0, 5, 4),
    ("sm", "double", 2, 0, False, 0, 5, 8),
]


def _name(kind, ct, d, pc, cos, npoly, degree, rows=4):
    base = "tiled_matvec_fast" if kind == "mv" else "tiled_softmax_lazy"
    return (f"{base}<{ct}, {d}, {pc}, {'true' if cos else 'false'}, {npoly}, {degree}, "
            f"{rows}>")


@pytest.fixture(scope="module")
def cu_host(tmp_path_factory):
    """tiled.cu compiled for the CPU with the instances of _VARIANTS (skips without g++)."""
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ not found: the CUDA source is not run on the host")
    out = tmp_path_factory.mktemp("tiled_cu_host")
    lines = []
    for variant in _VARIANTS:
        macro = "MV" if variant[0] == "mv" else "SM"
        lines.append(f"{macro}({variant[1]}, {_name(*variant)}),")
    (out / "tiled_cu_host_kernels.inc").write_text("\n".join(lines) + "\n")
    exe = out / "tiled_cu_host"
    cmd = [gxx, "-std=c++20", "-O1", "-ffp-contract=off", "-pthread", f"-I{CU.parent}",
           f"-I{out}", str(ROOT / "tests" / "tiled_cu_host.cpp"), "-o", str(exe)]
    res = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
    if res.returncode != 0 and "barrier" in res.stderr and "No such file" in res.stderr:
        pytest.skip("the C++ compiler has no <barrier>")
    assert res.returncode == 0, res.stderr[-4000:]
    return exe


def _run_cu(exe, workdir, name, dtype, x, y, u, w, beta, *, p, pc, splits):
    """Launch ``name`` on the host the way backends/cupy/tiled.py does; returns the outputs."""
    n, d = x.shape
    m = y.shape[0]
    chunk = -(-m // splits)
    ctr = y.astype(dtype).mean(axis=0)
    w2 = np.zeros(m) if w is None else w.astype(dtype) * dtype(LOG2E)
    for fname, arr in (("x", x), ("y", y), ("u", u), ("w2", w2), ("ctr", ctr)):
        np.ascontiguousarray(arr, dtype).tofile(workdir / f"{fname}.bin")
    s = float(dtype(math.sqrt(beta * LOG2E)))
    rows = int(name.rstrip(">").rsplit(",", 1)[1])
    (workdir / "params.txt").write_text(f"{n} {m} {d} {p} {pc} {chunk} {splits} {s!r} "
                                        f"{rows}\n")
    res = subprocess.run([str(exe), name, str(workdir)], check=False, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return {k: np.fromfile(workdir / f"{k}.bin", dtype)
            for k in ("part", "acc", "mx", "sm") if (workdir / f"{k}.bin").exists()}


def _problem(rng, n, m, d, p, dtype, *, shift=0.25):
    x = rng.standard_normal((n, d)).astype(dtype)
    y = (rng.standard_normal((m, d)) + shift).astype(dtype)
    u = rng.standard_normal((m, max(p, 1))).astype(dtype)
    return x, y, u


def _rtol(dtype, npoly, m):
    kind = "poly_exp2" if npoly else "reduction"
    return tol(np.dtype(dtype).name, kind, m)[0]


@pytest.mark.parametrize("variant", _VARIANTS, ids=lambda v: _name(*v).replace(" ", ""))
@pytest.mark.parametrize("splits", [1, 3])
def test_cu_variant_on_host(cu_host, tmp_path, rng, variant, splits):
    kind, ct, d, pc, _, npoly, _, rows = variant
    dtype = np.float32 if ct == "float" else np.float64
    n, m = 128 * rows + 19, 301  # two row blocks, tail rows and a partial tile
    p = {0: 0, 1: 1, 4: 6}[pc]  # 6 right-hand sides: two launches of 4, the second partial
    x, y, u = _problem(rng, n, m, d, p, dtype)
    beta = 0.7
    name = _name(*variant)
    rtol = _rtol(dtype, npoly, m)
    if kind == "mv":
        out = _run_cu(cu_host, tmp_path, name, dtype, x, y, u, None, beta, p=p, pc=pc,
                      splits=splits)
        got = out["part"].reshape(splits, n, p).astype(np.float64).sum(axis=0)
        want = ref.kernel_matvec(x, y, u[:, :p], beta)
        # each term's error is relative: the scale is the sum of |terms| (u has both signs)
        scale = np.max(ref.kernel_matvec(x, y, np.abs(u[:, :p]), beta))
        assert_close(got, want, rtol=rtol, atol=rtol * scale)
        return
    w = rng.standard_normal(m)
    w[[0, m // 2, m - 1]] = -np.inf
    w = w.astype(dtype)
    got, lse = _softmax_on_host(cu_host, tmp_path, name, dtype, x, y, u, w, beta, p, pc, splits)
    want_out, want_lse = ref.kernel_softmax_matvec(x, y, u[:, :max(p, 1)], beta, w)
    scale = beta * float(np.max(np.sum(x.astype(np.float64) ** 2, 1))
                         + np.max(np.sum(y.astype(np.float64) ** 2, 1)))
    assert_close(lse, want_lse, rtol=rtol, atol=rtol * (np.max(np.abs(want_lse)) + scale))
    if p:
        assert_close(got, want_out, rtol=rtol, atol=rtol * np.max(np.abs(want_out)))


def _softmax_on_host(exe, workdir, name, dtype, x, y, u, w, beta, p, pc, splits):
    n = x.shape[0]
    out = _run_cu(exe, workdir, name, dtype, x, y, u, w, beta, p=p, pc=pc, splits=splits)
    acc = out["acc"].reshape(splits, n, max(p, 1)).astype(np.float64)
    mx = out["mx"].reshape(splits, n).astype(np.float64)
    sm = out["sm"].reshape(splits, n).astype(np.float64)
    got, lse = merge_column_splits(np, acc[:, :, :max(p, 1)], mx, sm)
    return got, lse


@pytest.mark.parametrize("cos", [True, False])
def test_cu_lazy_rescale_redoes_growing_maxima(cu_host, tmp_path, cos):
    """The maximum grows by more than 2^16 tile after tile (y walks towards x): every tile is
    redone, the sums stay exact; then a far cloud where every term underflows."""
    name = _name("sm", "float", 3, 1, cos, 2, 5)
    if ("sm", "float", 3, 1, cos, 2, 5, 4) not in _VARIANTS:
        name = _name("sm", "float", 3, 0, cos, 0, 5, 4 if cos else 8)
    rng = np.random.default_rng(5)
    n, m = 7, 640
    x = (rng.standard_normal((n, 3)) * 0.01).astype(np.float32)
    r = np.linspace(6.0, 0.05, m)  # decreasing distance: z grows by ~ beta r dr per column
    y = np.stack([r, 0.3 * np.sin(r), 0.2 * np.cos(r)], axis=1).astype(np.float32)
    u = rng.standard_normal((m, 1)).astype(np.float32)
    beta = 40.0
    pc = 1 if "3, 1," in name else 0
    p = pc
    got, lse = _softmax_on_host(cu_host, tmp_path, name, np.float32, x, y, u, None, beta, p, pc,
                                1)
    want_out, want_lse = ref.kernel_softmax_matvec(x, y, u, beta)
    rtol = tol("float32", "poly_exp2", m)[0]
    assert np.ptp(-beta * np.sum((x[0] - y) ** 2, 1)[::64]) > 64 * 16 / LOG2E  # maxima grow
    assert_close(lse, want_lse, rtol=rtol, atol=rtol * np.max(np.abs(want_lse)))
    if p:
        assert_close(got, want_out, rtol=rtol, atol=rtol * np.max(np.abs(want_out)))
    # far points, large beta: every exp2 underflows without the running maximum
    xf = rng.standard_normal((n, 3)).astype(np.float32)
    yf = (rng.standard_normal((m, 3)) + 30.0).astype(np.float32)
    got, lse = _softmax_on_host(cu_host, tmp_path, name, np.float32, xf, yf, u, None, 5.0, p, pc,
                                2)
    want_out, want_lse = ref.kernel_softmax_matvec(xf, yf, u, 5.0)
    assert np.all(want_lse < -1000)
    assert_close(lse, want_lse, rtol=rtol, atol=rtol * np.max(np.abs(want_lse)))
    if p:
        assert_close(got, want_out, rtol=1e-3, atol=4e-3)


@pytest.mark.parametrize("pc, npoly", [(0, 0), (1, 2)])
def test_cu_all_neg_inf_rows_and_tiles(cu_host, tmp_path, pc, npoly):
    """Tiles whose every weight is -inf (lazy state untouched), then finite ones; rows with no
    finite weight give lse = -inf also when polynomial columns summed their 2^-126 dust."""
    name = _name("sm", "float", 3, pc, True, npoly, 5)
    rng = np.random.default_rng(7)
    n, m = 9, 200
    x, y, u = _problem(rng, n, m, 3, pc, np.float32)
    w = np.full(m, -np.inf, np.float32)
    w[150:] = rng.standard_normal(50)
    _, lse = _softmax_on_host(cu_host, tmp_path, name, np.float32, x, y, u, w, 0.9, pc, pc, 3)
    want = ref.kernel_logsumexp(x, y, 0.9, w)
    assert np.all(np.isfinite(lse))
    assert_close(lse, want, rtol=1e-4, atol=1e-4 * np.max(np.abs(want)))
    with np.errstate(divide="ignore", invalid="ignore"):
        _, lse = _softmax_on_host(cu_host, tmp_path, name, np.float32, x, y, u,
                                  np.full(m, -np.inf, np.float32), 0.9, pc, pc, 1)
    assert np.all(lse == -np.inf)


# ---------------------------------------------------------------- launchers with a tuning


_TRITON_TUNINGS = [
    {"matvec_cosines": True, "softmax_cosines": True},
    {"lazy_rescale": True},
    {"lazy_rescale": True, "softmax_cosines": True, "softmax_poly_cols": 8,
     "matvec_cosines": True, "matvec_poly_cols": 8},
    {"matvec_poly_cols": 4, "softmax_poly_cols": 4, "poly_degree": 3, "fast_block_n": 16},
    {"lazy_rescale": True, "softmax_poly_cols": 16, "matvec_poly_cols": 16, "poly_degree": 4,
     "ftz_exp2": True, "fast_block_n": 64},
]
_CUPY_TUNINGS = [
    {"matvec_cosines": True, "softmax_cosines": True},
    {"lazy_rescale": True},
    {"lazy_rescale": True, "softmax_cosines": True, "softmax_poly_share": 0.125,
     "matvec_cosines": True, "matvec_poly_share": 0.125},
    {"matvec_poly_share": 0.25, "poly_degree": 3},
    {"lazy_rescale": True, "softmax_poly_share": 1.0, "matvec_poly_share": 1.0,
     "poly_degree": 4, "fast_rows": 8},
]


def _tuned_backends():
    from arraygen.backends import available

    status = available()
    out = []
    for name, tunings in (("triton", _TRITON_TUNINGS), ("cupy", _CUPY_TUNINGS)):
        for k, t in enumerate(tunings):
            marks = [] if status[name] is None else [pytest.mark.skip(reason=status[name])]
            out.append(pytest.param(name, t, id=f"{name}-{k}", marks=marks))
    return out


@pytest.fixture
def kernel_backend_by_name():
    """``get(name)``: the conftest KernelBackend of one backend (namespace, simulated flag)."""
    import conftest

    from arraygen.backends import is_simulated

    def get(name):
        ns = conftest._backend_namespace(name)
        if ns is None:
            pytest.skip(f"no namespace to run {name} on")
        return conftest.KernelBackend(name, ns, is_simulated(name))

    return get


def _kernel_rtol(dtype, tuning, m):
    poly = any(v for k, v in tuning.items() if "poly_" in k and k != "poly_degree")
    return tol(dtype, "poly_exp2" if poly else "reduction", m)[0]


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend, tuning", _tuned_backends())
def test_tuned_variants_through_the_ops(kernel_backend_by_name, rng, monkeypatch, backend, tuning,
                                       dtype):
    """Every variant through the public ops: matvec, log-sum-exp with -inf weights, softmax."""
    import importlib

    kb = kernel_backend_by_name(backend)
    module = importlib.import_module(f"arraygen.backends.{backend}.tiled")
    ns = kb.xp
    n, m = (37, 150) if kb.simulated else (531, 1301)
    d = 3
    x = rng.standard_normal((n, d)).astype(dtype)
    y = (rng.standard_normal((m, d)) + 0.25).astype(dtype)
    v = rng.standard_normal((m, 1)).astype(dtype)
    w = rng.standard_normal(m)
    w[[0, m // 2, m - 1]] = -np.inf
    w = w.astype(dtype)
    beta = 0.9
    rtol = _kernel_rtol(dtype, tuning, m)
    launched = _record_launches(monkeypatch, backend, module)
    with module.TUNING.override(**tuning):
        mv = tiled.kernel_matvec(ns.asarray(x), ns.asarray(y), ns.asarray(v), beta=beta,
                                 backend=backend)
        lse = tiled.kernel_logsumexp(ns.asarray(x), ns.asarray(y), beta=beta,
                                     log_weights=ns.asarray(w), backend=backend)
        out, lse2 = tiled.kernel_softmax_matvec(ns.asarray(x), ns.asarray(y), ns.asarray(v),
                                                beta=beta, log_weights=ns.asarray(w),
                                                backend=backend)
    want_mv = ref.kernel_matvec(x, y, v, beta)
    want_out, want_lse = ref.kernel_softmax_matvec(x, y, v, beta, w)
    scale = beta * float(np.max(np.sum(x.astype(np.float64) ** 2, 1))
                         + np.max(np.sum(y.astype(np.float64) ** 2, 1)))
    opts = {"check_namespace": False, "check_device": False, "check_dtype": False}
    abs_scale = np.max(ref.kernel_matvec(x, y, np.abs(v), beta))  # sum of |terms|
    assert_close(mv, want_mv, rtol=rtol, atol=rtol * abs_scale, **opts)
    for got in (lse, lse2):
        assert_close(got, want_lse, rtol=rtol, atol=rtol * (np.max(np.abs(want_lse)) + scale),
                     **opts)
    assert_close(out, want_out, rtol=rtol, atol=rtol * np.max(np.abs(want_out)), **opts)
    # the tuning chose the kernels (not only equal values from today's kernels)
    assert launched == _expected_launches(backend, tuning, dtype), launched


def _record_launches(monkeypatch, backend, module) -> list:
    """Names of the kernels the launcher runs: ``fast``/``plain`` per op (matvec, lse, softmax)."""
    launched = []
    if backend == "cupy":
        orig = module._launch

        def launch(name, grid, args):
            launched.append(name.split("<")[0])
            return orig(name, grid, args)

        monkeypatch.setattr(module, "_launch", launch)
        return launched
    for attr in ("_matvec_fast", "_softmax_fast"):
        orig = getattr(module, attr)

        def wrapped(*a, _orig=orig, _attr=attr, **k):
            launched.append(_attr)
            return _orig(*a, **k)

        monkeypatch.setattr(module, attr, wrapped)
    return launched


def _expected_launches(backend, tuning, dtype) -> list:
    if backend == "cupy":  # the variant over the backend's defaults
        from arraygen.backends.cupy.tiled import Tuning as CupyTuning

        t = CupyTuning(**tuning)
        fast_mv = (t.matvec_cosines or t.fast_rows != 4
                   or (dtype == "float32" and t.matvec_poly_share > 0))
        sm = "tiled_softmax_lazy" if t.lazy_rescale else "tiled_softmax_direct"
        return ["tiled_matvec_fast" if fast_mv else "tiled_matvec_direct", sm, sm]
    from arraygen.backends.triton.tiled import Tuning

    t = Tuning(**tuning)
    return (["_matvec_fast"] if t.fast_matvec() else []) + ["_softmax_fast"] * 2 * int(
        t.fast_softmax())


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("backend, tuning", _tuned_backends())
def test_tuned_variants_growing_maxima_and_far_points(kernel_backend_by_name, backend, tuning):
    """The lazy redo taken tile after tile (maxima growing past 2^16), and far points."""
    import importlib

    kb = kernel_backend_by_name(backend)
    module = importlib.import_module(f"arraygen.backends.{backend}.tiled")
    ns = kb.xp
    rng = np.random.default_rng(11)
    n, m = 5, 400
    x = (rng.standard_normal((n, 3)) * 0.01).astype(np.float32)
    r = np.linspace(6.0, 0.05, m)
    y = np.stack([r, 0.3 * np.sin(r), 0.2 * np.cos(r)], axis=1).astype(np.float32)
    v = rng.standard_normal((m, 1)).astype(np.float32)
    rtol = tol("float32", "poly_exp2", m)[0]
    opts = {"check_namespace": False, "check_device": False, "check_dtype": False}
    for xx, yy, beta in ((x, y, 40.0), (x * 100, (y + 30.0).astype(np.float32), 5.0)):
        with module.TUNING.override(**tuning):
            out, lse = tiled.kernel_softmax_matvec(ns.asarray(xx), ns.asarray(yy),
                                                   ns.asarray(v), beta=beta, backend=backend)
        want_out, want_lse = ref.kernel_softmax_matvec(xx, yy, v, beta)
        assert_close(lse, want_lse, rtol=rtol, atol=rtol * np.max(np.abs(want_lse)), **opts)
        assert_close(out, want_out, rtol=1e-3, atol=4e-3 * np.max(np.abs(want_out)), **opts)


def test_tuning_rejects_bad_shares():
    pytest.importorskip("triton")
    from arraygen.backends.triton import tiled as ttiled

    x = np.zeros((3, 2), np.float32)
    torch = pytest.importorskip("torch")
    dev = "cuda" if torch.cuda.is_available() else "cpu"  # CPU tensors: the interpreter
    with ttiled.TUNING.override(matvec_poly_cols=3), pytest.raises(ValueError,
                                                                   match="poly_cols"):
        tiled.kernel_matvec(torch.asarray(x, device=dev), torch.asarray(x, device=dev),
                            torch.ones(3, 1, device=dev), beta=1.0, backend="triton")


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning",
                            "ignore:divide by zero encountered:RuntimeWarning")
@pytest.mark.parametrize("backend, tuning", _tuned_backends())
def test_tuned_variants_all_neg_inf_weights(kernel_backend_by_name, backend, tuning):
    """The private core (trusted input) with every weight -inf: lse = -inf, not the
    polynomial's 2^-126 dust (the public op rejects such weights at the boundary)."""
    import importlib

    from arraygen import _array_api as aa

    kb = kernel_backend_by_name(backend)
    module = importlib.import_module(f"arraygen.backends.{backend}.tiled")
    rng = np.random.default_rng(3)
    x = kb.xp.asarray(rng.standard_normal((6, 3)).astype(np.float32))
    y = kb.xp.asarray(rng.standard_normal((70, 3)).astype(np.float32))
    w = kb.xp.asarray(np.full(70, -np.inf, np.float32))
    with module.TUNING.override(**tuning):
        lse = tiled._logsumexp(aa.array_namespace(x), x, y, w, beta=1.0, backend=backend)
    assert np.all(to_numpy(lse) == -np.inf)


def test_cupy_launcher_on_host(tmp_path):
    """backends/cupy/tiled.py end to end on the CPU (tests/tiled_cupy_host.py in a subprocess:
    a NumPy stand-in for cupy, the launches run by the host build of tiled.cu): every Tuning
    case selects its kernels and matches the oracle, right-hand sides in two chunks, splits."""
    if shutil.which("g++") is None:
        pytest.skip("g++ not found: the CUDA source is not run on the host")
    import sys

    res = subprocess.run([sys.executable, str(ROOT / "tests" / "tiled_cupy_host.py"),
                          str(tmp_path)], check=False, capture_output=True, text=True,
                         timeout=900)
    if res.returncode != 0 and "barrier" in res.stderr and "No such file" in res.stderr:
        pytest.skip("the C++ compiler has no <barrier>")
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    assert "worst error / rtol" in res.stdout
