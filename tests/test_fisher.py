"""Fisher hot path: every implementation against the float64 oracle, noise statistics, layouts,
reproducibility and bad input."""

from __future__ import annotations

import dataclasses
import importlib
import math
import warnings

import numpy as np
import pytest

import arraygen
from arraygen import fisher as agf
from arraygen import random as agr
from arraygen.reference import fisher as ref
from arraygen.testing import assert_close as _assert_close
from arraygen.testing import tol


def assert_close(actual, desired, **kw):
    """Values against a NumPy float64 oracle; namespace, device and dtype are asserted apart."""
    for check in ("check_namespace", "check_dtype", "check_device"):
        kw.setdefault(check, False)
    _assert_close(actual, desired, **kw)


DTYPES = ["float32", "float64"]


def _inputs(rng, shape, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    s = (2.0 * rng.standard_normal(shape)).astype(dtype)
    v = rng.uniform(0.05, 2.0, shape).astype(dtype)
    return x, s, v


def _alpha(rng, batch):
    return rng.uniform(0.0, 1.0, batch)


def _check_like(out, ref_array, xp, dtype):
    assert type(out) is type(ref_array)
    assert out.dtype == getattr(xp, dtype)
    assert tuple(out.shape) == tuple(ref_array.shape)
    if hasattr(xp, "device") and hasattr(out, "device"):
        assert str(out.device) == str(ref_array.device)


def _step_tol(dtype, n_per, *, drawn: bool):
    """Tolerance of x_new: a per-sample reduction, plus libm differences of the normals."""
    rtol, atol_scale = tol(dtype, "reduction", n_terms=n_per)
    if drawn:
        t_rtol, _ = tol(dtype, "transcendental")
        rtol, atol_scale = max(rtol, t_rtol), max(atol_scale, t_rtol)
    return rtol, atol_scale


# --------------------------------------------------------------------------- fisher_diagonal


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 5, 7), (4, 8), (1, 13)])
def test_diagonal_matches_oracle(kernel_backend, rng, dtype, shape):
    xp = kernel_backend.xp
    s = (3.0 * rng.standard_normal(shape)).astype(dtype)
    ab = _alpha(rng, shape[0])
    out = arraygen.fisher_diagonal(xp.asarray(s), xp.asarray(ab, dtype=dtype),
                                   backend=kernel_backend.name)
    _check_like(out, xp.asarray(s), xp, dtype)
    assert_close(out, ref.fisher_diagonal(s, ab), kind="elementwise")


@pytest.mark.parametrize("dtype", DTYPES)
def test_diagonal_scalar_alpha_and_eps_options(kernel_backend, rng, dtype):
    xp = kernel_backend.xp
    s = rng.standard_normal((2, 3, 3)).astype(dtype)
    out = arraygen.fisher_diagonal(xp.asarray(s), 0.25, eps_floor=0.5, eps_scale=2.0,
                                   backend=kernel_backend.name)
    assert_close(out, s.astype(np.float64) ** 2 + 0.5 + 2.0 * 0.75, kind="elementwise")


def test_diagonal_noncontiguous_views(kernel_backend, rng):
    xp = kernel_backend.xp
    big = rng.standard_normal((3, 9, 10)).astype("float32")
    view = xp.asarray(big)[:, 1::2, ::3]
    ab = _alpha(rng, 3)
    out = arraygen.fisher_diagonal(view, xp.asarray(ab, dtype="float32"),
                                   backend=kernel_backend.name)
    assert_close(out, ref.fisher_diagonal(big[:, 1::2, ::3], ab), kind="elementwise")


def test_diagonal_transposed_input_per_batch(kernel_backend, rng):
    """A permuted layout with the batch axis not outermost must still use eps per sample."""
    xp = kernel_backend.xp
    base = rng.standard_normal((6, 4)).astype("float64")
    score = xp.permute_dims(xp.asarray(base), (1, 0))  # shape (4, 6), Fortran order
    ab = _alpha(rng, 4)
    out = arraygen.fisher_diagonal(score, xp.asarray(ab), backend=kernel_backend.name)
    assert_close(out, ref.fisher_diagonal(base.T, ab), kind="elementwise")


def test_diagonal_half_inputs(kernel_backend, rng):
    xp = kernel_backend.xp
    s16 = rng.standard_normal((3, 11)).astype("float16")
    out = arraygen.fisher_diagonal(xp.asarray(s16), 0.3, backend=kernel_backend.name)
    assert out.dtype == xp.float16
    assert_close(out, ref.fisher_diagonal(s16.astype(np.float64), 0.3), dtype="float16")


def test_diagonal_bfloat16_and_overflow_clamp():
    torch = pytest.importorskip("torch")
    s = torch.tensor([[1.5, -2.0, 300.0]], dtype=torch.bfloat16)
    out = arraygen.fisher_diagonal(s, 1.0)
    assert out.dtype == torch.bfloat16
    assert_close(out, ref.fisher_diagonal(s.float().numpy(), 1.0), dtype="bfloat16")
    big = torch.tensor([[300.0]], dtype=torch.float16)  # 300**2 overflows float16
    f16 = arraygen.fisher_diagonal(big, 1.0)
    assert torch.isfinite(f16).all() and float(f16) == 65504.0


def test_diagonal_integer_input_becomes_default_float():
    out = arraygen.fisher_diagonal(np.arange(6).reshape(2, 3), 1.0, backend="array_api")
    assert out.dtype == np.float64
    assert_close(out, np.arange(6.0).reshape(2, 3) ** 2 + 1e-4, kind="elementwise")


def _torch_on(kernel_backend):
    torch = pytest.importorskip("torch")
    if kernel_backend.name == "numba_cuda" and kernel_backend.simulated:
        pytest.skip("the CUDA simulator takes NumPy arrays")
    dev = kernel_backend.xp.device if kernel_backend.xp.name.startswith("torch") else None
    if dev is None:
        dev = "cuda" if kernel_backend.name in ("cupy", "numba_cuda") else "cpu"
    return torch, dev


def test_diagonal_channels_last_keeps_memory_format(kernel_backend, rng):
    torch, dev = _torch_on(kernel_backend)
    s = torch.from_numpy(rng.standard_normal((2, 3, 4, 5)).astype("float32")).to(dev)
    s_cl = s.contiguous(memory_format=torch.channels_last)
    ab = _alpha(rng, 2)
    out = arraygen.fisher_diagonal(s_cl, torch.tensor(ab, dtype=torch.float32, device=dev),
                                   backend=kernel_backend.name)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert_close(out, ref.fisher_diagonal(s.cpu().numpy(), ab), kind="elementwise")


def test_t_fallback_warns_once(monkeypatch, rng):
    monkeypatch.setattr(agf, "_T_FALLBACK_WARNED", False)
    s = rng.standard_normal((2, 3))
    with pytest.warns(UserWarning, match="alpha_bar = 1-t fallback"):
        out = arraygen.fisher_diagonal(s, t=0.3)
    assert_close(out, ref.fisher_diagonal(s, 0.7), kind="elementwise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        arraygen.fisher_diagonal(s, t=np.array([0.1, 0.2]))


# ------------------------------------------------------------------------- fused step: oracle

STEP_SHAPES = [(3, 5, 7), (4, 2, 8), (2, 9)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", STEP_SHAPES)
def test_step_with_injected_noise_matches_oracle(kernel_backend, rng, dtype, shape):
    xp = kernel_backend.xp
    x, s, v = _inputs(rng, shape, dtype)
    z = rng.standard_normal(shape).astype(dtype)
    ab = _alpha(rng, shape[0])
    args = [xp.asarray(a) for a in (x, s, v)]
    x_new, v_new = arraygen.fisher_langevin_step(
        *args, xp.asarray(ab, dtype=dtype), step_size=0.02, momentum=0.8, noise=xp.asarray(z),
        backend=kernel_backend.name)
    xr, vr = ref.fisher_langevin_step(x, s, v, ab, 0.02, 0.8, z)
    _check_like(x_new, args[0], xp, dtype)
    _check_like(v_new, args[2], xp, dtype)
    n_per = math.prod(shape[1:])
    rtol, atol_scale = _step_tol(dtype, n_per, drawn=False)
    assert_close(v_new, vr, kind="elementwise")
    assert_close(x_new, xr, rtol=rtol, atol=atol_scale * np.abs(xr).max())
    # inputs untouched
    np.testing.assert_array_equal(xp.to_numpy(args[0]), x)
    np.testing.assert_array_equal(xp.to_numpy(args[2]), v)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 5, 7), (2, 16)])
def test_step_in_kernel_noise_is_the_key_stream(kernel_backend, rng, dtype, shape):
    """Noise drawn in-kernel equals arraygen.random.normal(key) up to libm ulps."""
    xp = kernel_backend.xp
    x, s, v = _inputs(rng, shape, dtype)
    key = agr.Key(2**64 - 5, 2**33 + 7)
    z = agr.normal(key, shape, dtype=getattr(np, dtype), xp=np)
    x_new, v_new = arraygen.fisher_langevin_step(
        *(xp.asarray(a) for a in (x, s, v)), 0.4, step_size=0.05, momentum=0.5, rng=key,
        backend=kernel_backend.name)
    xr, vr = ref.fisher_langevin_step(x, s, v, 0.4, 0.05, 0.5, z)
    rtol, atol_scale = _step_tol(dtype, math.prod(shape[1:]), drawn=True)
    assert_close(x_new, xr, rtol=rtol, atol=atol_scale * np.abs(xr).max())
    assert_close(v_new, vr, kind="elementwise")


def test_step_int_seed_equals_key(kernel_backend, rng):
    xp = kernel_backend.xp
    x, s, v = (xp.asarray(a) for a in _inputs(rng, (2, 6), "float32"))
    a = arraygen.fisher_langevin_step(x, s, v, 0.5, step_size=0.1, rng=11,
                                      backend=kernel_backend.name)[0]
    b = arraygen.fisher_langevin_step(x, s, v, 0.5, step_size=0.1, rng=agr.Key(11),
                                      backend=kernel_backend.name)[0]
    np.testing.assert_array_equal(xp.to_numpy(a), xp.to_numpy(b))


def test_step_noncontiguous_views(kernel_backend, rng):
    xp = kernel_backend.xp
    big = [xp.asarray(a) for a in _inputs(rng, (3, 6, 9), "float64")]
    views = [a[:, ::2, 1:8] for a in big]
    host = [xp.to_numpy(a)[:, ::2, 1:8] for a in big]
    z = rng.standard_normal(host[0].shape)
    ab = _alpha(rng, 3)
    x_new, v_new = arraygen.fisher_langevin_step(*views, xp.asarray(ab), step_size=0.01,
                                                 noise=xp.asarray(z), backend=kernel_backend.name)
    xr, vr = ref.fisher_langevin_step(*host, ab, 0.01, 0.9, z)
    rtol, atol_scale = _step_tol("float64", 21, drawn=False)
    assert_close(x_new, xr, rtol=rtol, atol=atol_scale * np.abs(xr).max())
    assert_close(v_new, vr, kind="elementwise")


def test_step_half_inputs(kernel_backend, rng):
    xp = kernel_backend.xp
    x, s, v = _inputs(rng, (2, 3, 5), "float16")
    z = rng.standard_normal((2, 3, 5)).astype("float16")
    x_new, v_new = arraygen.fisher_langevin_step(
        *(xp.asarray(a) for a in (x, s, v)), 0.5, step_size=0.01, noise=xp.asarray(z),
        backend=kernel_backend.name)
    assert x_new.dtype == xp.float16 and v_new.dtype == xp.float16
    xr, vr = ref.fisher_langevin_step(x, s, v, 0.5, 0.01, 0.9, z)
    assert_close(x_new, xr, dtype="float16")
    assert_close(v_new, vr, dtype="float16")


@pytest.mark.parametrize("dtype", DTYPES)
def _tuning_override(backend: str, wanted: dict):
    """The launcher module's ``TUNING.override`` with the entries of ``wanted`` it has."""
    module = importlib.import_module(f"arraygen.backends.{backend}.fisher")
    fields = {f.name for f in dataclasses.fields(module.TUNING.default)}
    changes = {k: v for k, v in wanted.items() if k in fields}
    assert changes, f"{backend}: none of {sorted(wanted)} is a tuning field ({sorted(fields)})"
    return module.TUNING.override(**changes)


@pytest.mark.parametrize("dtype", DTYPES)
def test_step_two_kernel_path(kernel_backend, rng, dtype):
    """Few long samples take the per-tile partial-sum path on GPU backends."""
    if kernel_backend.name in ("array_api", "numba_cpu"):
        pytest.skip("GPU kernel backends only (numba_cpu tiles are covered by the shapes above)")
    with _tuning_override(kernel_backend.name, dict(
            fused_min_samples=10**9, fused_max_per=8, split_tile=12, sm_target_blocks=6,
            split_blocks=6, single_max_quads=2, chunk_quads=4)):
        _check_drawn_step(kernel_backend, rng, dtype)


def _check_drawn_step(kernel_backend, rng, dtype):
    shape = (2, 5, 9) if kernel_backend.simulated else (2, 70001)
    x, s, v = _inputs(rng, shape, dtype)
    key = agr.Key(3, 4)
    z = agr.normal(key, shape, dtype=getattr(np, dtype), xp=np)
    ab = _alpha(rng, 2)
    xp = kernel_backend.xp
    x_new, v_new = arraygen.fisher_langevin_step(
        *(xp.asarray(a) for a in (x, s, v)), xp.asarray(ab, dtype=dtype), step_size=0.03,
        rng=key, backend=kernel_backend.name)
    xr, vr = ref.fisher_langevin_step(x, s, v, ab, 0.03, 0.9, z)
    rtol, atol_scale = _step_tol(dtype, math.prod(shape[1:]), drawn=True)
    assert_close(x_new, xr, rtol=rtol, atol=atol_scale * np.abs(xr).max())
    assert_close(v_new, vr, kind="elementwise")


@pytest.mark.parametrize("dtype", DTYPES)
def test_step_fused_chunked_path(kernel_backend, rng, dtype):
    """One-kernel path without the register/whole-sample cache (samples re-read in chunks)."""
    tuning = {"triton": {"single_max_quads": 2, "chunk_quads": 4},
              "cupy": {"kq_float": 0, "kq_double": 0, "fused_threads": 64}}
    if kernel_backend.name not in tuning:
        pytest.skip("no such variant")
    with _tuning_override(kernel_backend.name, tuning[kernel_backend.name]):
        _check_fused_chunked(kernel_backend, rng, dtype)


#: Issue 19 launch variants of the fused step (each must give the oracle's result).
STEP_VARIANTS = {
    "cupy": [{"kq_float": 4, "kq_double": 1, "prefetch_x": True, "fused_threads": 512},
             {"kq_float": 2, "kq_double": 2, "prefetch_x": True, "fused_threads": 64},
             {"kq_float": 1, "kq_double": 1, "prefetch_x": False, "fused_threads": 32},
             {"cluster": 8}, {"cluster": 2, "cluster_kq_float": 1, "cluster_kq_double": 1}],
    "triton": [{"evict_hints": False}, {"fused_warps": 4}, {"join_lanes": True},
               {"join_lanes": True, "single_max_quads": 2, "chunk_quads": 4}],
    "numba_cuda": [{"quads_per_thread": 1}, {"quads_per_thread": 2},
                   {"quads_per_thread": 4}],
}


@pytest.mark.parametrize("dtype", DTYPES)
def test_step_launch_variants(kernel_backend, rng, dtype):
    """Every launch variant of the fused step (register cache, x prefetch, quads per thread,
    L2 eviction hints) agrees with the float64 oracle and draws the same noise."""
    if kernel_backend.name not in STEP_VARIANTS:
        pytest.skip("no such variant")
    for variant in STEP_VARIANTS[kernel_backend.name]:
        with _tuning_override(kernel_backend.name, variant):
            _check_fused_chunked(kernel_backend, rng, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_step_cupy_clusters_of_blocks(kernel_backend, rng, dtype):
    """The cluster path with 2..8 blocks per sample, odd sample lengths and quads beyond the
    register caches (GPU only)."""
    if kernel_backend.name != "cupy":
        pytest.skip("CuPy cluster kernel")
    xp = kernel_backend.xp
    for shape, cluster in (((5, 9001), 8), ((3, 2, 1100), 2), ((4, 2501), 4)):
        x, s, v = _inputs(rng, shape, dtype)
        key = agr.Key(5, 2)
        z = agr.normal(key, shape, dtype=getattr(np, dtype), xp=np)
        ab = _alpha(rng, shape[0])
        with _tuning_override("cupy", {"cluster": cluster, "cluster_kq_float": 1,
                                       "cluster_kq_double": 1}):
            x_new, v_new = arraygen.fisher_langevin_step(
                *(xp.asarray(a) for a in (x, s, v)), xp.asarray(ab, dtype=dtype),
                step_size=0.02, rng=key, backend="cupy")
        xr, vr = ref.fisher_langevin_step(x, s, v, ab, 0.02, 0.9, z)
        rtol, atol_scale = _step_tol(dtype, math.prod(shape[1:]), drawn=True)
        assert_close(x_new, xr, rtol=rtol, atol=atol_scale * np.abs(xr).max())
        assert_close(v_new, vr, kind="elementwise")


def _check_fused_chunked(kernel_backend, rng, dtype):
    shape = (3, 5, 9)
    x, s, v = _inputs(rng, shape, dtype)
    key = agr.Key(12, 1)
    z = agr.normal(key, shape, dtype=getattr(np, dtype), xp=np)
    xp = kernel_backend.xp
    x_new, v_new = arraygen.fisher_langevin_step(*(xp.asarray(a) for a in (x, s, v)), 0.7,
                                                 step_size=0.03, rng=key,
                                                 backend=kernel_backend.name)
    xr, vr = ref.fisher_langevin_step(x, s, v, 0.7, 0.03, 0.9, z)
    rtol, atol_scale = _step_tol(dtype, 45, drawn=True)
    assert_close(x_new, xr, rtol=rtol, atol=atol_scale * np.abs(xr).max())
    assert_close(v_new, vr, kind="elementwise")


def test_step_long_samples_reread_path(kernel_backend, rng):
    """Samples longer than what stays in registers (GPU only: sizes too big for simulators)."""
    if kernel_backend.simulated or kernel_backend.name in ("array_api", "numba_cpu"):
        pytest.skip("native GPU backends only")
    shape = (300, 70003)
    x, s, v = _inputs(rng, shape, "float32")
    key = agr.Key(8)
    z = agr.normal(key, shape, dtype=np.float32, xp=np)
    xp = kernel_backend.xp
    x_new, _ = arraygen.fisher_langevin_step(*(xp.asarray(a) for a in (x, s, v)), 0.5,
                                             step_size=0.01, rng=key, backend=kernel_backend.name)
    xr, _ = ref.fisher_langevin_step(x, s, v, 0.5, 0.01, 0.9, z)
    rtol, atol_scale = _step_tol("float32", shape[1], drawn=True)
    assert_close(x_new, xr, rtol=rtol, atol=atol_scale * np.abs(xr).max())


def test_step_channels_last_keeps_memory_format(kernel_backend, rng):
    torch, dev = _torch_on(kernel_backend)
    x, s, v = (torch.from_numpy(a).to(dev) for a in _inputs(rng, (2, 3, 4, 5), "float32"))
    key = agr.Key(21)
    cl = [a.contiguous(memory_format=torch.channels_last) for a in (x, s, v)]
    x_new, v_new = arraygen.fisher_langevin_step(*cl, 0.5, step_size=0.02, rng=key,
                                                 backend=kernel_backend.name)
    assert x_new.is_contiguous(memory_format=torch.channels_last)
    assert v_new.is_contiguous(memory_format=torch.channels_last)
    z = agr.normal(key, (2, 3, 4, 5), dtype=np.float32, xp=np)  # logical C-order keyed noise
    xr, vr = ref.fisher_langevin_step(x.cpu().numpy(), s.cpu().numpy(), v.cpu().numpy(), 0.5,
                                      0.02, 0.9, z)
    rtol, atol_scale = _step_tol("float32", 60, drawn=True)
    assert_close(x_new, xr, rtol=rtol, atol=atol_scale * np.abs(xr).max())
    assert_close(v_new, vr, kind="elementwise")


# ------------------------------------------------------------ fused step: noise and repeatability


def test_step_noise_statistics(kernel_backend):
    """score = 0: x' - x = sqrt(2 h P) z exactly, so (x' - x) / sqrt(2 h P) must be N(0, 1) and
    each element's increment variance 2 h P. Bounds fixed in advance: 5 standard errors, KS
    p > 1e-4 (fixed key, so the test is deterministic)."""
    from scipy import stats

    xp = kernel_backend.xp
    n_per = 1024 if kernel_backend.simulated else 8192
    shape = (2, n_per)
    v = np.where(np.arange(n_per) % 2 == 0, 0.25, 4.0) * np.ones(shape)
    m, h = 0.5, 0.01
    p = 1.0 / np.sqrt(m * v + (1 - m) * 1e-4)  # alpha_bar = 1: eps = 1e-4
    p = p / p.mean(axis=1, keepdims=True)
    x = np.zeros(shape)
    x_new, _ = arraygen.fisher_langevin_step(
        xp.asarray(x), xp.asarray(np.zeros(shape)), xp.asarray(v), 1.0, step_size=h,
        momentum=m, rng=agr.Key(2026, 1), backend=kernel_backend.name)
    dx = xp.to_numpy(x_new).astype(np.float64)
    z = (dx / np.sqrt(2 * h * p)).reshape(-1)
    n = z.size
    assert abs(z.mean()) < 5 / math.sqrt(n)
    assert abs(z.var() - 1) < 5 * math.sqrt(2 / n)
    assert stats.kstest(z, "norm").pvalue > 1e-4
    for level in (0, 1):  # the two preconditioner levels: variance 2 h P per element
        d = dx[:, level::2].reshape(-1)
        predicted = 2 * h * p[0, level]
        assert abs(d.var() / predicted - 1) < 5 * math.sqrt(2 / d.size)
    # neighbouring elements (same Philox block) are uncorrelated
    assert abs(np.corrcoef(z[0::2], z[1::2])[0, 1]) < 5 / math.sqrt(n / 2)


def test_step_same_key_bitwise_identical(kernel_backend, rng):
    xp = kernel_backend.xp
    args = [xp.asarray(a) for a in _inputs(rng, (3, 10), "float32")]
    run = lambda rng_: arraygen.fisher_langevin_step(  # noqa: E731
        *args, 0.3, step_size=0.05, rng=rng_, backend=kernel_backend.name)
    a, b, c = run(agr.Key(5, 2)), run(agr.Key(5, 2)), run(agr.Key(5, 3))
    np.testing.assert_array_equal(xp.to_numpy(a[0]), xp.to_numpy(b[0]))
    np.testing.assert_array_equal(xp.to_numpy(a[1]), xp.to_numpy(b[1]))
    assert not np.array_equal(xp.to_numpy(a[0]), xp.to_numpy(c[0]))
    np.testing.assert_array_equal(xp.to_numpy(a[1]), xp.to_numpy(c[1]))  # v' has no noise


def test_step_numpy_generator_rng(rng):
    x, s, v = _inputs(rng, (2, 5), "float64")
    g = np.random.default_rng(3)
    z = np.random.default_rng(3).standard_normal((2, 5))
    x_new, _ = arraygen.fisher_langevin_step(x, s, v, 0.5, step_size=0.1, rng=g)
    xr, _ = ref.fisher_langevin_step(x, s, v, 0.5, 0.1, 0.9, z)
    assert_close(x_new, xr, kind="reduction", n_terms=5)


def test_step_array_api_namespaces(xp, rng):
    """The Array-API path on every namespace against the oracle (injected and drawn noise)."""
    x, s, v = _inputs(rng, (3, 2, 5), "float32")
    ab = _alpha(rng, 3)
    args = [xp.asarray(a) for a in (x, s, v)]
    z = rng.standard_normal((3, 2, 5)).astype("float32")
    x_new, v_new = arraygen.fisher_langevin_step(*args, xp.asarray(ab, dtype="float32"),
                                                 step_size=0.1, noise=xp.asarray(z),
                                                 backend="array_api")
    _check_like(x_new, args[0], xp, "float32")
    xr, vr = ref.fisher_langevin_step(x, s, v, ab, 0.1, 0.9, z)
    assert_close(x_new, xr, kind="reduction", n_terms=10)
    assert_close(v_new, vr, kind="elementwise")
    key = agr.Key(17)
    x_new, _ = arraygen.fisher_langevin_step(*args, 0.2, step_size=0.1, rng=key,
                                             backend="array_api")
    zr = agr.normal(key, (3, 2, 5), dtype=np.float32, xp=np)
    xr, _ = ref.fisher_langevin_step(x, s, v, 0.2, 0.1, 0.9, zr)
    rtol, atol_scale = _step_tol("float32", 10, drawn=True)
    assert_close(x_new, xr, rtol=rtol, atol=atol_scale * np.abs(xr).max())
    f = arraygen.fisher_diagonal(args[1], xp.asarray(ab, dtype="float32"), backend="array_api")
    _check_like(f, args[1], xp, "float32")
    assert_close(f, ref.fisher_diagonal(s, ab), kind="elementwise")


# ------------------------------------------------------------------------------- bad input


def test_bad_inputs():
    torch = pytest.importorskip("torch")
    x = np.zeros((2, 3))
    with pytest.raises(TypeError, match="different namespaces"):
        arraygen.fisher_langevin_step(x, torch.zeros(2, 3), x, 0.5, step_size=0.1)
    with pytest.raises(ValueError, match="`score` must have the shape"):
        arraygen.fisher_langevin_step(x, np.zeros((2, 4)), x, 0.5, step_size=0.1)
    with pytest.raises(ValueError, match="`noise` must have the shape"):
        arraygen.fisher_langevin_step(x, x, x, 0.5, step_size=0.1, noise=np.zeros(3))
    with pytest.raises(ValueError, match="`x` must have a batch axis"):
        arraygen.fisher_langevin_step(np.zeros(3), np.zeros(3), np.zeros(3), 0.5, step_size=0.1)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="`step_size`"):
            arraygen.fisher_langevin_step(x, x, x, 0.5, step_size=bad)
    for bad in (1.0, -0.1, 2.0):
        with pytest.raises(ValueError, match="`momentum`"):
            arraygen.fisher_langevin_step(x, x, x, 0.5, step_size=0.1, momentum=bad)
    with pytest.raises(TypeError, match="`step_size`"):
        arraygen.fisher_langevin_step(x, x, x, 0.5, step_size="big")
    for bad in (1.5, -0.2, float("nan")):
        with pytest.raises(ValueError, match="`alpha_bar`"):
            arraygen.fisher_diagonal(x, bad)
    with pytest.raises(ValueError, match=r"`alpha_bar` must lie in \[0, 1\]"):
        arraygen.fisher_diagonal(x, np.array([0.5, 1.2]))
    with pytest.raises(ValueError, match=r"`alpha_bar` must be a scalar or have shape \(2,\)"):
        arraygen.fisher_diagonal(x, np.array([0.5, 0.2, 0.1]))
    with pytest.raises(ValueError, match=r"`alpha_bar` must be a scalar or have shape"):
        arraygen.fisher_langevin_step(x, x, x, np.zeros((2, 1)), step_size=0.1)
    with pytest.raises(ValueError, match="pass `alpha_bar`"):
        arraygen.fisher_diagonal(x)
    with pytest.raises(ValueError, match="pass `alpha_bar`"):
        arraygen.fisher_langevin_step(x, x, x, None, step_size=0.1)
    with pytest.raises(ValueError, match="`eps_floor`"):
        arraygen.fisher_diagonal(x, 0.5, eps_floor=-1.0)
    with pytest.raises(TypeError, match="different namespaces.*`alpha_bar`"):
        arraygen.fisher_diagonal(x, torch.tensor([0.5, 0.5]))
    with pytest.raises(TypeError, match="`score` must be real"):
        arraygen.fisher_diagonal(np.zeros((2, 2), dtype=complex), 0.5)
    with pytest.raises(TypeError, match="`rng`"):
        arraygen.fisher_langevin_step(x, x, x, 0.5, step_size=0.1, rng="seed")


# ---------------------------------------------------------------------- issue 13: bad data


@pytest.mark.parametrize("bad", ["v_negative", "x_nan", "score_inf", "v_nan", "noise_nan",
                                 "alpha_nan", "alpha_high"])
def test_step_bad_data_is_the_same_error_on_every_backend(kernel_backend, bad, rng):
    """v < 0 gave all-NaN output on array_api and ZeroDivisionError inside the numba_cpu
    kernel; NaN/inf data gave NaN silently. Every backend now raises the same ValueError."""
    kb = kernel_backend
    x, s, v = (rng.standard_normal((3, 4)) for _ in range(3))
    v = np.abs(v)
    z = rng.standard_normal((3, 4))
    ab = np.array([0.2, 0.5, 0.9])
    name = bad.split("_")[0]
    if bad == "v_negative":
        v[1, 2] = -0.5
    elif bad == "alpha_high":
        ab[2] = 1.5
    else:
        arrays = {"x": x, "score": s, "v": v, "noise": z, "alpha": ab}
        arrays[name].flat[1] = np.nan if bad.endswith("nan") else np.inf
    match = {"v_negative": "`v` must be non-negative", "alpha_nan": r"`alpha_bar` must lie in",
             "alpha_high": r"`alpha_bar` must lie in \[0, 1\]"}.get(bad, f"`{name}` contains 1 "
                                                                        "non-finite")
    args = [kb.xp.asarray(a) for a in (x, s, v)]
    with pytest.raises(ValueError, match=match):
        arraygen.fisher_langevin_step(*args, kb.xp.asarray(ab), step_size=0.1,
                                      noise=kb.xp.asarray(z), backend=kb.name)


def test_step_check_finite_false_skips_the_checks(rng):
    x, s, v = (np.abs(rng.standard_normal((2, 3))) for _ in range(3))
    x[0, 0] = np.nan
    z = rng.standard_normal((2, 3))
    with pytest.raises(ValueError, match="`x` contains 1 non-finite"):
        arraygen.fisher_langevin_step(x, s, v, 0.5, step_size=0.1, noise=z)
    x_new, v_new = arraygen.fisher_langevin_step(x, s, v, 0.5, step_size=0.1, noise=z,
                                                 check_finite=False, backend="array_api")
    xr, vr = ref.fisher_langevin_step(x, s, v, 0.5, 0.1, 0.9, z)
    np.testing.assert_allclose(x_new, xr, rtol=1e-12)  # NaN where the oracle has NaN
    np.testing.assert_allclose(v_new, vr, rtol=1e-12)


def test_step_options_and_lists(rng):
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match="`eps_floor` must be positive"):
        arraygen.fisher_langevin_step(x, x, x, 0.5, step_size=0.1, eps_floor=0.0)
    with pytest.raises(ValueError, match=r"`eps_floor` \(\(1 - momentum\) \* eps_floor\)"):
        x32 = x.astype(np.float32)
        arraygen.fisher_langevin_step(x32, x32, x32, 0.5, step_size=0.1, eps_floor=1e-300)
    with pytest.raises(TypeError, match="`v` must be an array"):
        arraygen.fisher_langevin_step(x, x, "v", 0.5, step_size=0.1)
    # lists are read as NumPy arrays, alpha_bar too
    xs, s, v = (rng.standard_normal((2, 3)) for _ in range(3))
    v = np.abs(v)
    z = rng.standard_normal((2, 3))
    got = arraygen.fisher_langevin_step(xs.tolist(), s.tolist(), v.tolist(), [0.3, 0.6],
                                        step_size=0.1, noise=z.tolist())
    want = ref.fisher_langevin_step(xs, s, v, np.array([0.3, 0.6]), 0.1, 0.9, z)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-12)
    np.testing.assert_allclose(arraygen.fisher_diagonal(s.tolist(), [0.3, 0.6]),
                               ref.fisher_diagonal(s, np.array([0.3, 0.6])), rtol=1e-14)
    with pytest.raises(ValueError, match=r"`alpha_bar` must lie in \[0, 1\]"):
        arraygen.fisher_diagonal(s, [0.3, float("nan")])
    # check_finite=False skips the host range check (and its synchronisation); the range is
    # enforced on the device: the out-of-range sample is NaN, the other one exact
    f = arraygen.fisher_diagonal(s, np.array([0.3, 2.0]), check_finite=False)
    np.testing.assert_allclose(f[0], ref.fisher_diagonal(s[:1], np.array([0.3]))[0], rtol=1e-14)
    assert np.isnan(f[1]).all()


def test_step_checks_synchronise_once(monkeypatch, rng):
    """All data checks of a step (four arrays, v >= 0, per-sample alpha_bar) share one
    device reduction: the host reads one boolean."""
    torch = pytest.importorskip("torch")
    x, s, v, z = (torch.from_numpy(np.abs(rng.standard_normal((3, 4)))) for _ in range(4))
    ab = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    calls = []
    real_bool = torch.Tensor.__bool__

    def counting_bool(self):
        calls.append(tuple(self.shape))
        return real_bool(self)

    monkeypatch.setattr(torch.Tensor, "__bool__", counting_bool)
    arraygen.fisher_langevin_step(x, s, v, ab, step_size=0.1, noise=z)
    assert calls == [()]
    calls.clear()
    arraygen.fisher_langevin_step(x, s, v, ab, step_size=0.1, noise=z, check_finite=False)
    assert calls == []


def test_big_endian_input_default_backend(rng):
    """Issue 13: astype('>f8') input gave a numba TypingError on the default backend."""
    x, s, v = (np.abs(rng.standard_normal((2, 5))) for _ in range(3))
    z = rng.standard_normal((2, 5))
    got = arraygen.fisher_langevin_step(*(a.astype(">f8") for a in (x, s, v)), 0.4,
                                        step_size=0.1, noise=z.astype(">f4"))
    want = ref.fisher_langevin_step(x, s, v, 0.4, 0.1, 0.9, z.astype(np.float32))
    for g, w in zip(got, want):
        assert g.dtype == np.float64
        np.testing.assert_allclose(g, w, rtol=1e-12)
    f = arraygen.fisher_diagonal(s.astype(">f4"), np.array([0.2, 0.3], ">f8"))
    assert f.dtype == np.float32
    np.testing.assert_allclose(f, ref.fisher_diagonal(s.astype(np.float32), [0.2, 0.3]),
                               rtol=1e-6)


def test_scalar_and_missing_arrays(kernel_backend):
    """A 0-d score (or a NumPy scalar) keeps its shape; a missing array is a TypeError."""
    xp = kernel_backend.xp
    for score in (xp.reshape(xp.asarray(np.array([2.0])), ()), np.float64(2.0)):
        if isinstance(score, np.generic) and kernel_backend.name not in ("numba_cpu",
                                                                          "array_api"):
            continue
        f = arraygen.fisher_diagonal(score, 0.5, backend=kernel_backend.name)
        assert tuple(f.shape) == ()
        np.testing.assert_allclose(float(f), 4.0 + 1e-4 + 1e-3 * 0.5, rtol=1e-14)
    x = np.ones((2, 3))
    for args in ((None, x, x), (x, None, x), (x, x, None)):
        with pytest.raises(TypeError, match="must be an array; got None"):
            arraygen.fisher_langevin_step(*args, 0.5, step_size=0.1)


def test_step_size_beyond_the_dtype_is_an_error():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"`step_size` \(2 \* step_size\) = 2e\+300"):
        arraygen.fisher_langevin_step(x, x, x, 0.5, step_size=1e300, rng=0)


class _SyncCounter:
    """Counts host reads of torch tensors (bool/float/int/item/tolist/numpy/__array__)."""

    METHODS = ("__bool__", "__float__", "__int__", "__index__", "item", "tolist", "numpy",
               "__array__", "cpu")

    def __init__(self, monkeypatch, torch):
        self.calls = []
        for name in self.METHODS:
            real = getattr(torch.Tensor, name)

            def counting(tensor, *args, _real=real, _name=name, **kwargs):
                self.calls.append(_name)
                return _real(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counting)


@pytest.mark.parametrize("backend", ["array_api", "triton"])
def test_step_per_sample_alpha_bar_without_host_sync(monkeypatch, backend, rng):
    """Issue 19: with a per-sample alpha_bar on the device and check_finite=False the step makes
    no host read at all; alpha_bar outside [0, 1] (or NaN) is caught on the device and makes
    exactly its samples NaN, which a finiteness check of the result reports after the fact."""
    torch = pytest.importorskip("torch")
    if backend != "array_api" and arraygen.backends.available()[backend] is not None:
        pytest.skip(f"{backend} not usable here")
    from arraygen import _array_api as aa
    from arraygen._validation import require_finite

    dev = "cuda" if backend != "array_api" and torch.cuda.is_available() else "cpu"
    shape = (4, 2, 8)
    x, s, z = (torch.from_numpy(rng.standard_normal(shape).astype(np.float32)).to(dev)
               for _ in range(3))
    v = torch.from_numpy(np.abs(rng.standard_normal(shape)).astype(np.float32)).to(dev)
    ab_host = np.array([0.1, 1.5, 0.9, np.nan])
    ab = torch.from_numpy(ab_host.astype(np.float32)).to(dev)
    counter = _SyncCounter(monkeypatch, torch)
    x_new, v_new = arraygen.fisher_langevin_step(x, s, v, ab, step_size=0.05, noise=z,
                                                 check_finite=False, backend=backend)
    assert counter.calls == []
    monkeypatch.undo()
    good = [0, 2]
    want = ref.fisher_langevin_step(*(a.cpu().numpy()[good] for a in (x, s, v)), ab_host[good],
                                    0.05, 0.9, z.cpu().numpy()[good])
    for got, w in zip((x_new, v_new), want):
        got = got.cpu().numpy()
        assert_close(got[good], w, kind="transcendental", dtype="float32")
        assert np.isnan(got[[1, 3]]).all()
    with pytest.raises(ValueError, match="`x_new` contains 32 non-finite"):
        require_finite(aa.namespace_for(torch), x_new, "x_new")
    # the default check still names the argument, before any work is done
    with pytest.raises(ValueError, match=r"`alpha_bar` must lie in \[0, 1\]"):
        arraygen.fisher_langevin_step(x, s, v, ab, step_size=0.05, noise=z, backend=backend)
