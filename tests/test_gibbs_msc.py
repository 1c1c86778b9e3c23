"""Multi-spin-coded (+-J) Gibbs fast path: detection, the NumPy algorithm
(``reference.gibbs.msc_sweeps``) against the float64 oracle and exact enumeration, and bit for
bit against it: the numba_cuda kernel (simulated on CPU), the CUDA C kernels of
``backends/cupy/gibbs_msc.cu`` run on the CPU (``tests/gibbs_msc_cu_host.cpp``: std::threads and
a barrier per block, AddressSanitizer), the CuPy launcher driving them through a stand-in
``cupy`` module, and the CuPy kernels on a GPU."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from arraygen import gibbs
from arraygen import random as agr
from arraygen._kernels import gibbs_msc as msc
from arraygen.backends import available, is_simulated
from arraygen.reference import gibbs as ref
from arraygen.reference import philox as ref_philox

NN = gibbs.nearest_neighbour_offsets()


def _pm_model(gen, shape, boundary, *, a=0.6, h=0.2, signed=True, dtype=np.float32, xp=np):
    """A +-J model (random signs) and its sign planes (C, H, W) for the reference."""
    neg = gen.random((2,) + shape) < 0.5 if signed else np.zeros((2,) + shape, bool)
    j = np.where(neg, -a, a).astype(dtype)
    model = gibbs.StencilIsing(NN, xp.asarray(j), xp.asarray(np.full(shape, h, dtype)),
                               boundary=boundary)
    return model, j, neg[0], neg[1]


def _spins(gen, shape):
    return np.where(gen.random(shape) < 0.5, 1, -1).astype(np.int8)


def _words_to_uniforms(seed, counter, n_sweeps, shape):
    n = math.prod(shape)
    u = [((ref.philox_words(seed, counter + t, n) >> 9).astype(np.float64) + 0.5) / 2.0**23
         for t in range(n_sweeps)]
    return np.stack(u).astype(np.float32).reshape((n_sweeps,) + shape)


# ----------------------------------------------------------------------------------------------
# detection and the contract


def test_detection_of_plus_minus_j_models():
    gen = np.random.default_rng(0)
    model, *_ = _pm_model(gen, (2, 4, 6), "periodic")
    assert model._msc is not None and model._msc.signed and model._msc.magnitude == np.float32(0.6)
    assert model._msc.bias == float(np.float32(0.2))
    uniform = gibbs.StencilIsing.nearest_neighbour((5, 7), coupling=0.3)
    assert uniform._msc is not None and not uniform._msc.signed
    # open grid: the couplings of edges leaving the grid are ignored, whatever they hold
    j = np.full((2, 1, 3, 5), 0.3, np.float32)
    j[0, :, :, -1] = 7.0
    j[1, :, -1, :] = -2.0
    assert gibbs.StencilIsing(NN, j, np.zeros((1, 3, 5), np.float32))._msc is not None
    # not +-J: one magnitude differs, per-site bias, per-chain bias, other offsets or colours
    j = np.full((2, 1, 4, 4), 0.3, np.float32)
    j[0, 0, 1, 1] = 0.31
    assert gibbs.StencilIsing(NN, j, np.zeros((1, 4, 4), np.float32))._msc is None
    h = np.zeros((1, 4, 4), np.float32)
    h[0, 0, 0] = 0.1
    assert gibbs.StencilIsing.nearest_neighbour((4, 4), bias=h)._msc is None
    assert uniform.with_bias(np.zeros((3, 1, 5, 7), np.float32))._msc is None
    assert uniform.with_bias(np.full((1, 5, 7), 0.5, np.float32))._msc.bias == 0.5
    assert gibbs.StencilIsing.nearest_neighbour((4, 4), skip=(2,))._msc is None
    assert gibbs.StencilIsing.local((4, 4))._msc is None
    # a periodic grid of odd width has no checkerboard colouring
    assert gibbs.StencilIsing.nearest_neighbour((4, 5), boundary="periodic")._msc is None


def test_threshold_table_is_the_exact_uniform_comparison():
    pm = msc.PlusMinusJ(0.45, -0.1, None, None, (1, 2, 2), True)
    for dtype in ("float32", "float64"):
        for beta in (0.0, 0.7, 40.0):
            table = msc.threshold_table(pm, beta, dtype)
            assert table.dtype == np.uint32
            if beta == 40.0:
                assert table[8] == 2**32 - 1 and table[0] == 0  # p = 1 and p = 0 in the dtype
            assert table[:9].tolist() == ref.msc_threshold_table(0.45, -0.1, beta, dtype)
            assert np.all(np.diff(table[:9].astype(np.float64)) >= 0)  # p grows with the field
            for idx in range(9):
                g = -0.1 + 0.45 * (idx - 4)
                p = 1.0 / (1.0 + math.exp(-2.0 * beta * g))
                t = int(table[idx])
                for w in (t - 1, t):  # the last word taking +1 and the first taking -1
                    if not 0 <= w < 2**32 or w == 2**32 - 1:  # 2^32 is stored as 2^32 - 1
                        continue
                    if dtype == "float32":
                        u = np.float32(((w >> 9) + 0.5) * 2.0**-23)
                        assert (u < np.float32(p)) == (w < t), (dtype, beta, idx, w)
                    else:
                        assert ((w + 0.5) * 2.0**-32 < p) == (w < t), (dtype, beta, idx, w)


def test_reference_philox_and_packing():
    assert np.array_equal(ref.philox_words(2**40 + 17, 2**33 + 5, 23),
                          ref_philox.stream_words(2**40 + 17, 2**33 + 5, 23))
    s = _spins(np.random.default_rng(1), (2, 3, 70))
    words = ref.msc_pack(s)
    assert words.shape == (2, 3, 3) and words.dtype == np.uint32
    assert int(words[0, 0, 0] & 1) == (s[0, 0, 0] > 0) and int(words[1, 2, 2] >> 5 & 1) == (
        s[1, 2, 69] > 0)
    assert np.all(words[..., 2] >> 6 == 0)  # bits past W stay 0
    assert np.array_equal(ref.msc_unpack(words, 70), s)
    assert np.array_equal(msc.pack_bits(s > 0), words)


# ----------------------------------------------------------------------------------------------
# the NumPy algorithm against the float64 oracle (same Philox uniforms, tie-free seeds)

REF_CASES = [((1, 4, 6), "periodic"), ((2, 3, 5), "open"), ((1, 4, 38), "open"),
             ((1, 2, 66), "periodic"), ((1, 1, 7), "open")]


@pytest.mark.parametrize("shape,boundary", REF_CASES)
def test_msc_algorithm_matches_float_oracle(shape, boundary):
    gen = np.random.default_rng(sum(shape))
    periodic = boundary == "periodic"
    model, j, nx, ny = _pm_model(gen, shape, boundary, a=0.5, h=-0.15)
    B, n_sweeps, beta = 2, 3, 0.8
    s0 = _spins(gen, (B,) + shape)
    colors = np.asarray(model.colors)
    for seed in range(200, 260):
        u = _words_to_uniforms(seed, 3, n_sweeps, s0.shape)
        want, margin = ref.gibbs_sweeps(NN, j, np.full(shape, -0.15), colors, s0, u, beta,
                                        periodic, return_margin=True)
        if margin > 1e-5:
            break
    got = ref.msc_sweeps(s0, nx, ny, float(np.float32(0.5)), float(np.float32(-0.15)), beta,
                         periodic, seed, 3, n_sweeps)
    np.testing.assert_array_equal(got, want.astype(np.int8))


def test_msc_algorithm_float64_uses_the_full_word():
    gen = np.random.default_rng(3)
    model, j, nx, ny = _pm_model(gen, (1, 4, 4), "periodic", a=0.4, h=0.1, dtype=np.float64)
    s0 = _spins(gen, (3, 1, 4, 4))
    for seed in range(50):
        u = np.stack([(ref.philox_words(seed, t, s0.size).astype(np.float64) + 0.5) / 2.0**32
                      for t in range(2)]).reshape((2,) + s0.shape)
        want, margin = ref.gibbs_sweeps(NN, j, np.full((1, 4, 4), 0.1), np.asarray(model.colors),
                                        s0, u, 1.3, True, return_margin=True)
        if margin > 1e-9:
            break
    got = ref.msc_sweeps(s0, nx, ny, 0.4, 0.1, 1.3, True, seed, 0, 2, dtype="float64")
    np.testing.assert_array_equal(got, want.astype(np.int8))


# ----------------------------------------------------------------------------------------------
# stationary distribution: many chains against exact enumeration (chi-square, fixed seeds)

STAT_CASES = [((1, 3, 4), "open", 0.45, 0.2), ((1, 4, 4), "periodic", 0.35, -0.1),
              ((2, 2, 3), "open", 0.6, 0.0)]


def _chi_square(states_flat, probs, n_chains):
    """Chi-square over the states (dof), and the total variation distance of the empirical
    distribution beside its 90th percentile for exact samples of the same size."""
    idx = ((states_flat > 0).astype(np.int64)
           << np.arange(states_flat.shape[1] - 1, -1, -1)).sum(1)
    counts = np.bincount(idx, minlength=probs.shape[-1])
    expected = n_chains * probs
    keep = expected > 5
    chi2 = np.sum((counts[keep] - expected[keep]) ** 2 / expected[keep])
    dof = int(keep.sum()) - 1
    tv = 0.5 * np.abs(counts / n_chains - probs).sum()
    exact = np.random.default_rng(0).multinomial(n_chains, probs / probs.sum(), size=40)
    tv_exact = np.quantile(0.5 * np.abs(exact / n_chains - probs).sum(1), 0.9)
    return chi2, dof, tv, tv_exact


@pytest.mark.parametrize("case", range(len(STAT_CASES)))
def test_msc_algorithm_samples_the_exact_distribution(case):
    shape, boundary, a, h = STAT_CASES[case]
    gen = np.random.default_rng(40 + case)
    model, _, nx, ny = _pm_model(gen, shape, boundary, a=a, h=h, dtype=np.float64)
    n_chains, beta = 20000, 1.0
    s0 = _spins(gen, (n_chains,) + shape)
    out = ref.msc_sweeps(s0, nx, ny, a, h, beta, boundary == "periodic", 1234 + case, 0, 25,
                         dtype="float64")
    _, probs = gibbs.exact_distribution(model, beta=beta)
    chi2, dof, tv, tv_exact = _chi_square(out.reshape(n_chains, -1), np.asarray(probs), n_chains)
    assert chi2 < dof + 6 * math.sqrt(2 * dof), (chi2, dof)
    assert tv < 1.15 * tv_exact, (tv, tv_exact)


# ----------------------------------------------------------------------------------------------
# kernels: bit for bit against the NumPy algorithm


def _numba_cuda_usable():
    return available()["numba_cuda"] is None


@pytest.mark.skipif(not _numba_cuda_usable(), reason="numba_cuda backend unavailable")
@pytest.mark.parametrize("shape,boundary,signed", [((1, 4, 6), "periodic", True),
                                                   ((2, 3, 5), "open", True),
                                                   ((1, 2, 34), "periodic", False),
                                                   ((1, 3, 33), "open", True),
                                                   ((3, 2, 8), "periodic", True)])
def test_numba_cuda_msc_kernel_matches_algorithm(shape, boundary, signed):
    gen = np.random.default_rng(7)
    xp = np
    if not is_simulated("numba_cuda"):
        cupy = pytest.importorskip("cupy")
        xp = cupy
    model, _, nx, ny = _pm_model(gen, shape, boundary, a=0.5, h=0.1, signed=signed, xp=xp)
    s0 = _spins(gen, (2,) + shape)
    key = agr.Key(77, 5)
    out = gibbs.gibbs_sweeps(model, xp.asarray(s0), n_sweeps=2, beta=0.9, rng=key,
                             multispin=True, backend="numba_cuda")
    want = ref.msc_sweeps(s0, nx if signed else None, ny if signed else None,
                          float(np.float32(0.5)), float(np.float32(0.1)), 0.9,
                          boundary == "periodic", 77, 5, 2)
    assert out.dtype == xp.int8 and tuple(out.shape) == s0.shape
    np.testing.assert_array_equal(np.asarray(out if xp is np else out.get()), want)


def test_multispin_option_errors_name_the_argument():
    model = gibbs.StencilIsing.nearest_neighbour((4, 4), coupling=0.5)
    s = np.ones((1, 1, 4, 4), np.int8)
    with pytest.raises(ValueError, match="multispin"):
        gibbs.gibbs_sweeps(model, s, rng=0, multispin="yes")
    with pytest.raises(ValueError, match="multispin"):
        gibbs.gibbs_sweeps(gibbs.StencilIsing.local((4, 4)), s, rng=0, multispin=True)
    with pytest.raises(ValueError, match="multispin"):
        gibbs.gibbs_sweeps(model, s, rng=np.random.default_rng(0), multispin=True)
    with pytest.raises(ValueError, match="multispin"):
        gibbs.gibbs_sweeps(model, s, rng=0, multispin=True, backend="array_api")
    # multispin=False or a model that does not qualify: the float-coupling path, as before
    a = gibbs.gibbs_sweeps(model, s, rng=3, n_sweeps=2, multispin=False, backend="array_api")
    b = gibbs.gibbs_sweeps(model, s, rng=3, n_sweeps=2, backend="array_api")
    np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------------------------
# the CUDA C kernels on the CPU (tests/gibbs_msc_cu_host.cpp: std::threads and a barrier per block)

ROOT = Path(__file__).resolve().parent.parent
HOST_CASES = [  # (B, C, H, W), boundary, signed, rows of a band
    ((2, 1, 6, 70), "periodic", True, 2), ((1, 1, 8, 96), "periodic", True, 4),
    ((2, 1, 5, 37), "open", True, 2), ((1, 2, 7, 40), "open", False, 4),
    ((1, 1, 4, 6), "periodic", False, 4), ((1, 1, 5, 1), "open", True, 2),
    ((1, 1, 2, 4), "periodic", True, 2), ((2, 2, 4, 36), "periodic", True, 2),
    ((2, 3, 3, 64), "open", True, 4)]


@pytest.fixture(scope="module")
def cu_host(tmp_path_factory):
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ not found")
    folder = tmp_path_factory.mktemp("msc_host")
    probe = folder / "probe.cpp"
    probe.write_text("#include <barrier>\n"
                     "int main() { std::barrier<> b(1); b.arrive_and_wait(); }\n")
    if subprocess.run([gxx, "-std=c++20", "-pthread", str(probe), "-o", str(folder / "probe")],
                      check=False, capture_output=True).returncode:
        pytest.skip("g++ has no C++20 <barrier>")
    exe = folder / "msc_host"
    # AddressSanitizer where it links: a read past a buffer fails the run
    asan = subprocess.run([gxx, "-fsanitize=address", str(probe), "-pthread", "-std=c++20",
                           "-o", str(folder / "probe_asan")], check=False,
                          capture_output=True).returncode == 0
    cmd = [gxx, "-std=c++20", "-O1", "-pthread", f"-I{ROOT / 'arraygen' / 'backends' / 'cupy'}",
           str(ROOT / "tests" / "gibbs_msc_cu_host.cpp"), "-o", str(exe)]
    build = subprocess.run(cmd + (["-fsanitize=address"] if asan else []), check=False,
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]  # gibbs_msc.cu must build as C++ too
    return exe


@pytest.mark.parametrize("kernel", ["sweep", "phase"])
@pytest.mark.parametrize("case", range(len(HOST_CASES)))
def test_cuda_c_msc_kernels_on_host_match_algorithm(cu_host, tmp_path, kernel, case):
    (B, C, H, W), boundary, signed, rows = HOST_CASES[case]
    gen = np.random.default_rng(300 + case)
    periodic = boundary == "periodic"
    model, _, nx, ny = _pm_model(gen, (C, H, W), boundary, a=0.5, h=-0.1, signed=signed)
    pm = model._msc
    assert pm is not None and pm.signed == signed
    s0 = _spins(gen, (B, C, H, W))
    seed, counter, n_sweeps, beta = 2**33 + 9, 2**32 - 2, 3, 0.8
    msc.pack_bits(s0 > 0).tofile(tmp_path / "words.bin")
    dummy = np.zeros(1, np.uint32)
    (pm.sx if signed else dummy).tofile(tmp_path / "sx.bin")
    (pm.sy if signed else dummy).tofile(tmp_path / "sy.bin")
    msc.threshold_table(pm, beta, "float32").tofile(tmp_path / "table.bin")
    Wq = msc.words_per_row(W)
    threads = 32 * -(-Wq // 32)
    (tmp_path / "params.txt").write_text(
        f"{int(periodic)} {int(signed)} {B} {C} {H} {W} {rows} {threads} {n_sweeps} {seed} "
        f"{counter}\n")
    subprocess.run([str(cu_host), kernel, str(tmp_path)], check=True, timeout=120)
    words = np.fromfile(tmp_path / "out.bin", dtype=np.uint32).reshape(B, C, H, Wq)
    want = ref.msc_sweeps(s0, nx if signed else None, ny if signed else None,
                          float(np.float32(0.5)), float(np.float32(-0.1)), beta, periodic, seed,
                          counter, n_sweeps)
    np.testing.assert_array_equal(ref.msc_unpack(words, W), want)


# The CuPy launcher end to end on the CPU: a stand-in ``cupy`` module whose RawModule kernels are
# the same CUDA C run by the host harness (built as a shared library, called through ctypes), so
# the launcher's argument lists, grid, shared memory, pack and unpack kernels are exercised.


@pytest.fixture(scope="module")
def cu_lib(cu_host):
    import ctypes

    lib_path = cu_host.parent / "libmsc_host.so"
    subprocess.run([shutil.which("g++"), "-std=c++20", "-O1", "-pthread", "-shared", "-fPIC",
                    f"-I{ROOT / 'arraygen' / 'backends' / 'cupy'}",
                    str(ROOT / "tests" / "gibbs_msc_cu_host.cpp"), "-o", str(lib_path)],
                   check=True, capture_output=True)
    lib = ctypes.CDLL(str(lib_path))
    i, ll, u, p = ctypes.c_int, ctypes.c_longlong, ctypes.c_uint, ctypes.c_void_p
    lib.host_msc_sweep.argtypes = [i, i, i, ll, i, ll] + [p] * 5 + [i] * 6 + [u] * 4
    lib.host_msc_phase.argtypes = [i, i, i, ll, i] + [p] * 4 + [i] * 4 + [ll, i] + [u] * 4
    lib.host_msc_pack.argtypes = [ll, i, p, p, i, i, ll]
    lib.host_msc_unpack.argtypes = [ll, i, p, p, i, i, ll]
    return lib


class _HostKernel:
    def __init__(self, lib, name):
        self.lib, self.name = lib, name

    def __call__(self, grid, block, args, shared_mem=0):
        conv = [a.ctypes.data if isinstance(a, np.ndarray) else int(a) for a in args]
        g, t = int(grid[0]), int(block[0])
        if "<" in self.name:
            flags = [int(f.strip() == "true") for f in self.name[:-1].split("<")[1].split(",")]
        if "gibbs_msc_sweep" in self.name:
            assert t <= 512 and t % 32 == 0
            self.lib.host_msc_sweep(*flags, g, t, int(shared_mem), *conv)
        elif "gibbs_msc_phase" in self.name:
            self.lib.host_msc_phase(*flags, g, t, *conv)
        elif self.name.endswith("msc_pack"):
            self.lib.host_msc_pack(g, t, *conv)
        else:
            self.lib.host_msc_unpack(g, t, *conv)


def _stand_in_cupy(lib):
    import types

    fake = types.ModuleType("cupy")
    fake.ndarray = np.ndarray
    fake.uint32, fake.int8 = np.uint32, np.int8
    fake.empty, fake.empty_like, fake.zeros = np.empty, np.empty_like, np.zeros
    fake.asarray, fake.ascontiguousarray = np.asarray, np.ascontiguousarray

    class Device:
        def __init__(self, index=0):
            self.id = index
            self.attributes = {"MultiProcessorCount": 2}

    class RawModule:
        def __init__(self, code, options, name_expressions):
            assert "gibbs_msc" in code and all(n.startswith("arraygen::msc::")
                                               for n in name_expressions)
            self.names = set(name_expressions)

        def get_function(self, name):
            assert name in self.names
            return _HostKernel(lib, name)

    fake.cuda = types.SimpleNamespace(Device=Device)
    fake.RawModule = RawModule
    return fake


LAUNCHER_CASES = [((2, 2, 6, 70), "periodic", True), ((2, 1, 5, 37), "open", True),
                  ((1, 1, 9, 64), "open", False), ((3, 1, 4, 40), "periodic", False)]


@pytest.mark.parametrize("tuning", [{}, {"kernel": "sweep", "rows": 4}, {"kernel": "phase"}])
@pytest.mark.parametrize("case", range(len(LAUNCHER_CASES)))
def test_cupy_launcher_on_host_matches_algorithm(cu_lib, monkeypatch, case, tuning):
    import importlib
    import sys

    try:
        import cupy  # noqa: F401
        pytest.skip("real CuPy present: the CuPy tests run the launcher")
    except ImportError:
        pass
    from arraygen.backends import cupy as cupy_pkg

    monkeypatch.setitem(sys.modules, "cupy", _stand_in_cupy(cu_lib))
    sys.modules.pop("arraygen.backends.cupy.gibbs_msc", None)
    cupy_pkg.module.cache_clear()
    try:
        launcher = importlib.import_module("arraygen.backends.cupy.gibbs_msc")
        (B, C, H, W), boundary, signed = LAUNCHER_CASES[case]
        gen = np.random.default_rng(500 + case)
        model, _, nx, ny = _pm_model(gen, (C, H, W), boundary, a=0.35, h=0.1, signed=signed)
        s0 = _spins(gen, (B, C, H, W))
        with launcher.TUNING.override(**tuning):
            out = launcher.gibbs_sweeps(s0, model._msc, n_sweeps=3, beta=0.9,
                                        key=agr.Key(12, 3), dtype_name="float32")
        want = ref.msc_sweeps(s0, nx if signed else None, ny if signed else None,
                              float(np.float32(0.35)), float(np.float32(0.1)), 0.9,
                              boundary == "periodic", 12, 3, 3)
        assert out.dtype == np.int8 and out.shape == s0.shape
        np.testing.assert_array_equal(out, want)
    finally:
        sys.modules.pop("arraygen.backends.cupy.gibbs_msc", None)
        cupy_pkg.module.cache_clear()
        cupy_pkg.sm_count.cache_clear()


# ----------------------------------------------------------------------------------------------
# CuPy (GPU only)


def _cupy():
    if available()["cupy"] is not None:
        pytest.skip(f"cupy backend unavailable: {available()['cupy']}")
    import cupy

    return cupy


CUPY_CASES = [  # (B, C, H, W), boundary, signed couplings
    ((2, 1, 64, 96), "periodic", True), ((2, 1, 37, 70), "open", True),
    ((2, 1, 6, 4096), "periodic", False), ((3, 1, 10, 7), "open", True),
    ((2, 1, 130, 40), "periodic", True), ((1, 2, 4, 16416), "periodic", True)]


@pytest.mark.parametrize("kernel", ["auto", "sweep", "phase"])
@pytest.mark.parametrize("case", range(len(CUPY_CASES)))
def test_cupy_msc_kernels_match_algorithm(kernel, case):
    cupy = _cupy()
    from arraygen.backends.cupy import gibbs_msc as cg

    (B, C, H, W), boundary, signed = CUPY_CASES[case]
    gen = np.random.default_rng(case)
    model, _, nx, ny = _pm_model(gen, (C, H, W), boundary, a=0.4, h=0.05, signed=signed,
                                 xp=cupy)
    s0 = _spins(gen, (B, C, H, W))
    key = agr.Key(991, 2)
    want = ref.msc_sweeps(s0, nx if signed else None, ny if signed else None,
                          float(np.float32(0.4)), float(np.float32(0.05)), 0.7,
                          boundary == "periodic", 991, 2, 3)
    if kernel == "sweep" and W > 32 * cg._SWEEP_MAX_WORDS:  # rows wider than one block
        with cg.TUNING.override(kernel="sweep"), pytest.raises(ValueError, match="W = "):
            gibbs.gibbs_sweeps(model, cupy.asarray(s0), n_sweeps=3, beta=0.7, rng=key,
                               backend="cupy")
        return
    for rows in ((None,) if kernel != "sweep" else (2, 8, None)):
        with cg.TUNING.override(kernel=kernel, rows=rows):
            out = gibbs.gibbs_sweeps(model, cupy.asarray(s0), n_sweeps=3, beta=0.7, rng=key,
                                     backend="cupy")
        assert out.dtype == cupy.int8
        np.testing.assert_array_equal(cupy.asnumpy(out), want, err_msg=f"{kernel} rows={rows}")


def test_cupy_msc_torch_spins_and_float64():
    _cupy()
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs torch CUDA")
    gen = np.random.default_rng(21)
    model, _, nx, ny = _pm_model(gen, (1, 12, 64), "open", a=0.3, h=0.2, dtype=np.float64,
                                 xp=np)
    s0 = _spins(gen, (3, 1, 12, 64))
    out = gibbs.gibbs_sweeps(model, torch.as_tensor(s0, device="cuda"), n_sweeps=2, beta=1.1,
                             rng=agr.Key(4, 0), backend="cupy")
    assert isinstance(out, torch.Tensor) and out.dtype == torch.int8 and out.is_cuda
    want = ref.msc_sweeps(s0, nx, ny, 0.3, 0.2, 1.1, False, 4, 0, 2, dtype="float64")
    np.testing.assert_array_equal(out.cpu().numpy(), want)


def test_cupy_msc_agrees_with_float_coupling_kernel():
    cupy = _cupy()
    gen = np.random.default_rng(11)
    model, *_ = _pm_model(gen, (1, 256, 256), "periodic", a=0.44, h=0.0, xp=cupy)
    s0 = cupy.asarray(_spins(gen, (4, 1, 256, 256)))
    fast = gibbs.gibbs_sweeps(model, s0, n_sweeps=5, rng=5, backend="cupy")
    slow = gibbs.gibbs_sweeps(model, s0, n_sweeps=5, rng=5, multispin=False, backend="cupy")
    # identical uniforms; p differs by at most a rounding, so ties are ~1e-7 of the decisions
    assert float((fast != slow).mean()) < 1e-3


def test_cupy_msc_samples_the_exact_distribution():
    cupy = _cupy()
    shape = (1, 4, 4)
    gen = np.random.default_rng(5)
    model, j, *_ = _pm_model(gen, shape, "periodic", a=0.4, h=0.1, xp=cupy)
    n_chains = 20000
    s0 = cupy.asarray(_spins(gen, (n_chains,) + shape))
    out = cupy.asnumpy(gibbs.gibbs_sweeps(model, s0, n_sweeps=30, rng=8, backend="cupy"))
    _, probs = gibbs.exact_distribution(gibbs.StencilIsing(NN, j, np.full(shape, 0.1, np.float32),
                                                           boundary="periodic"))
    chi2, dof, tv, tv_exact = _chi_square(out.reshape(n_chains, -1), np.asarray(probs), n_chains)
    assert chi2 < dof + 6 * math.sqrt(2 * dof), (chi2, dof)
    assert tv < 1.15 * tv_exact, (tv, tv_exact)
