"""Gibbs hot path: colouring, energy, moments, exact enumeration, every backend against the oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest

from arraygen import _array_api as aa
from arraygen import gibbs
from arraygen import random as agr
from arraygen.reference import gibbs as ref
from arraygen.testing import assert_close as _assert_close


def assert_close(actual, desired, **kw):
    """Values against a NumPy float64 oracle; namespace, device and dtype are asserted apart."""
    for check in ("check_namespace", "check_dtype", "check_device"):
        kw.setdefault(check, False)
    _assert_close(actual, desired, **kw)


# the small model of the oracle comparisons: local 3x3 links, a channel link and a skip link
OFFSETS = ((0, 0, 1), (0, 1, 0), (0, 1, 1), (0, 1, -1), (1, 0, 0), (0, 0, 3), (1, 2, -1))
SHAPE = (2, 3, 5)
# margin |u - P| below which float32 backends may decide differently from the float64 oracle
TIE_MARGIN = {"float32": 1e-4, "float64": 1e-9}


def _model_arrays(rng, offsets, shape, *, batch=None, scale=0.6):
    j = rng.normal(scale=scale, size=(len(offsets),) + shape)
    h = rng.normal(scale=0.5, size=((batch,) if batch else ()) + shape)
    return j, h


def _random_spins(rng, shape):
    return np.where(rng.random(shape) < 0.5, 1, -1).astype(np.int8)


def _uniforms_without_ties(rng, offsets, j, h, colors, s0, n_sweeps, beta, periodic, margin):
    """Uniforms for which the oracle run never comes within ``margin`` of a rounding tie."""
    for _ in range(50):
        u = rng.random((n_sweeps,) + s0.shape).astype(np.float32)
        out, m = ref.gibbs_sweeps(offsets, j, h, colors, s0, u, beta, periodic,
                                  return_margin=True)
        if m > margin:
            return u, out
    raise AssertionError("could not draw tie-free uniforms")  # pragma: no cover


# ----------------------------------------------------------------------------------------------
# colouring


@pytest.mark.parametrize("boundary", ["open", "periodic"])
def test_colouring_is_proper_for_random_offsets(boundary):
    gen = np.random.default_rng(7)
    periodic = boundary == "periodic"
    checked = 0
    for _ in range(60):
        shape = tuple(int(v) for v in gen.integers(1, 7, size=3))
        k = int(gen.integers(1, 6))
        offsets = [tuple(int(v) for v in gen.integers(-3, 4, size=3)) for _ in range(k)]
        try:
            model = gibbs.StencilIsing.from_offsets(shape, offsets, coupling=0.1,
                                                    boundary=boundary)
        except ValueError:
            continue  # zero, duplicated or opposite offsets (tested below)
        colors = np.asarray(model.colors)
        assert colors.shape == shape
        assert colors.min() == 0 and colors.max() == model.n_colors - 1
        assert ref.is_proper_colouring(model.offsets, colors, periodic)
        if model.color_pattern is not None:
            n, a, b, d = model.color_pattern
            c, y, x = np.meshgrid(*(np.arange(v) for v in shape), indexing="ij")
            np.testing.assert_array_equal(colors, (a * c + b * y + d * x) % n)
        checked += 1
    assert checked > 20


def test_colouring_sizes():
    nn = gibbs.StencilIsing.nearest_neighbour((8, 8), boundary="periodic")
    assert nn.n_colors == 2 and nn.color_pattern == (2, 0, 1, 1)
    king = gibbs.StencilIsing.local((8, 8), boundary="periodic")
    assert king.n_colors == 4
    # 3x4 torus: no linear pattern fits both periods; the greedy quotient fallback is used
    odd = gibbs.StencilIsing.nearest_neighbour((3, 4), boundary="periodic")
    assert odd.color_pattern is None
    assert ref.is_proper_colouring(odd.offsets, np.asarray(odd.colors), True)


# ----------------------------------------------------------------------------------------------
# energy, moments, exact distribution


@pytest.mark.parametrize("boundary", ["open", "periodic"])
def test_energy_matches_brute_force(xp, boundary):
    gen = np.random.default_rng(1)
    j, h = _model_arrays(gen, OFFSETS, SHAPE, batch=4)
    model = gibbs.StencilIsing(OFFSETS, xp.asarray(j), xp.asarray(h), boundary=boundary)
    s = _random_spins(gen, (4,) + SHAPE)
    e = gibbs.energy(model, xp.asarray(s))
    want = ref.energy(OFFSETS, j, h, s, boundary == "periodic")
    assert e.shape == (4,)
    assert_close(e, want, kind="reduction", n_terms=len(OFFSETS) * 30, check_dtype=xp.float64)
    # shared bias, unbatched spins: a 0-d energy
    m1 = gibbs.StencilIsing(OFFSETS, xp.asarray(j), xp.asarray(h[0]), boundary=boundary)
    e1 = gibbs.energy(m1, xp.asarray(s[2]))
    assert e1.shape == ()
    assert_close(e1, ref.energy(OFFSETS, j, h[0], s[2:3], boundary == "periodic")[0],
                 kind="reduction", n_terms=len(OFFSETS) * 30)


@pytest.mark.parametrize("boundary", ["open", "periodic"])
def test_moments_match_brute_force(xp, boundary):
    gen = np.random.default_rng(2)
    j, h = _model_arrays(gen, OFFSETS, SHAPE)
    model = gibbs.StencilIsing(OFFSETS, xp.asarray(j, dtype="float32"),
                               xp.asarray(h, dtype="float32"), boundary=boundary)
    s = _random_spins(gen, (6,) + SHAPE)
    mom = gibbs.moments(model, xp.asarray(s))
    flat = s.reshape(6, -1).astype(np.float64)
    want_corr = np.zeros((len(OFFSETS), flat.shape[1]))
    for i, nb, k in ref.edges(OFFSETS, SHAPE, boundary == "periodic"):
        want_corr[k, i] = np.mean(flat[:, i] * flat[:, nb])
    assert_close(mom.mean, flat.mean(axis=0).reshape(SHAPE), kind="reduction", n_terms=6,
                 check_dtype=xp.float32)
    assert_close(mom.corr, want_corr.reshape((len(OFFSETS),) + SHAPE), kind="reduction",
                 n_terms=6)


@pytest.mark.parametrize("boundary", ["open", "periodic"])
def test_exact_distribution_matches_reference(boundary):
    gen = np.random.default_rng(3)
    offsets, shape = ((0, 0, 1), (0, 1, 0), (0, 1, 1)), (1, 3, 3)
    j, h = _model_arrays(gen, offsets, shape, batch=2)
    model = gibbs.StencilIsing(offsets, j, h, boundary=boundary)
    states, probs = gibbs.exact_distribution(model, beta=0.8)
    want_states, want_probs = ref.exact_distribution(offsets, j, h, shape,
                                                     boundary == "periodic", beta=0.8)
    np.testing.assert_array_equal(states, want_states)
    assert probs.shape == (2, 2**9)
    assert_close(probs, want_probs, kind="transcendental")
    assert_close(probs.sum(axis=1), np.ones(2), kind="reduction", n_terms=2**9)


# ----------------------------------------------------------------------------------------------
# sweeps against the oracle


@pytest.mark.parametrize("boundary", ["open", "periodic"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sweeps_injected_uniforms_match_oracle(kernel_backend, boundary, dtype):
    xp = kernel_backend.xp
    gen = np.random.default_rng(4)
    B, n_sweeps, beta = 3, 3, 0.9
    periodic = boundary == "periodic"
    j, h = _model_arrays(gen, OFFSETS, SHAPE, batch=B)
    j, h = j.astype(dtype), h.astype(dtype)
    model = gibbs.StencilIsing(OFFSETS, xp.asarray(j), xp.asarray(h), boundary=boundary)
    s0 = _random_spins(gen, (B,) + SHAPE)
    u, want = _uniforms_without_ties(gen, OFFSETS, j, h, xp.to_numpy(model.colors), s0,
                                     n_sweeps, beta, periodic, TIE_MARGIN[dtype])
    # float spins given as a non-contiguous view; the result keeps the dtype
    s_t = xp.asarray(np.ascontiguousarray(s0.transpose(0, 1, 3, 2)).astype(np.float32))
    s_in = xp.permute_dims(s_t, (0, 1, 3, 2))
    out = gibbs.gibbs_sweeps(model, s_in, n_sweeps=n_sweeps, beta=beta,
                             uniforms=xp.asarray(u.astype(dtype)), backend=kernel_backend.name)
    assert out.dtype == xp.float32 and tuple(out.shape) == s0.shape
    np.testing.assert_array_equal(xp.to_numpy(out), want)
    np.testing.assert_array_equal(xp.to_numpy(s_in), s0)  # input untouched


@pytest.mark.parametrize("boundary", ["open", "periodic"])
def test_sweeps_philox_stream_matches_oracle(kernel_backend, boundary):
    xp = kernel_backend.xp
    gen = np.random.default_rng(5)
    B, n_sweeps = 2, 3
    periodic = boundary == "periodic"
    j, h = _model_arrays(gen, OFFSETS, SHAPE)
    j, h = j.astype(np.float32), h.astype(np.float32)
    model = gibbs.StencilIsing(OFFSETS, xp.asarray(j), xp.asarray(h), boundary=boundary)
    s0 = _random_spins(gen, (B,) + SHAPE)
    for seed in range(100, 150):
        key = agr.Key(seed, 11)
        u = np.stack([agr.uniform(key.advance(t), s0.shape, dtype=np.float32)
                      for t in range(n_sweeps)])
        want, margin = ref.gibbs_sweeps(OFFSETS, j, h, xp.to_numpy(model.colors), s0, u, 1.0,
                                        periodic, return_margin=True)
        if margin > TIE_MARGIN["float32"]:
            break
    out = gibbs.gibbs_sweeps(model, xp.asarray(s0), n_sweeps=n_sweeps, rng=key,
                             backend=kernel_backend.name)
    assert out.dtype == xp.int8
    np.testing.assert_array_equal(xp.to_numpy(out), want)


PLANE_OFFSETS = gibbs.local_offsets(1, skip=(2,))  # 8 offsets, all within a channel plane


@pytest.mark.parametrize("boundary", ["open", "periodic"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_plane_local_stencil_matches_oracle(kernel_backend, boundary, dtype):
    """W % 4 == 0 and dc == 0: the shape the tiled (one launch per sweep) kernels take."""
    xp = kernel_backend.xp
    gen = np.random.default_rng(8)
    shape, B, n_sweeps = (2, 5, 8), 2, 2
    periodic = boundary == "periodic"
    j, h = _model_arrays(gen, PLANE_OFFSETS, shape, batch=B)
    j, h = j.astype(dtype), h.astype(dtype)
    model = gibbs.StencilIsing(PLANE_OFFSETS, xp.asarray(j), xp.asarray(h), boundary=boundary)
    s0 = _random_spins(gen, (B,) + shape)
    u, want = _uniforms_without_ties(gen, PLANE_OFFSETS, j, h, xp.to_numpy(model.colors), s0,
                                     n_sweeps, 1.1, periodic, TIE_MARGIN[dtype])
    out = gibbs.gibbs_sweeps(model, xp.asarray(s0), n_sweeps=n_sweeps, beta=1.1,
                             uniforms=xp.asarray(u.astype(dtype)), backend=kernel_backend.name)
    np.testing.assert_array_equal(xp.to_numpy(out), want)


@pytest.mark.parametrize("boundary", ["open", "periodic"])
def test_multi_tile_grid_matches_oracle(kernel_backend, boundary):
    """A grid of several tiles in y and x (tiles are 16-32 rows x 128 columns), Philox stream."""
    if kernel_backend.simulated:
        pytest.skip("2856 sites per sweep are too many for the simulators")
    xp = kernel_backend.xp
    gen = np.random.default_rng(9)
    shape, n_sweeps = (1, 21, 136), 2
    periodic = boundary == "periodic"
    j, h = _model_arrays(gen, PLANE_OFFSETS, shape, scale=0.3)
    j, h = j.astype(np.float32), h.astype(np.float32)
    model = gibbs.StencilIsing(PLANE_OFFSETS, xp.asarray(j), xp.asarray(h), boundary=boundary)
    s0 = _random_spins(gen, (1,) + shape)
    for seed in range(20):
        u = np.stack([agr.uniform(agr.Key(seed).advance(t), s0.shape, dtype=np.float32)
                      for t in range(n_sweeps)])
        want, margin = ref.gibbs_sweeps(PLANE_OFFSETS, j, h, xp.to_numpy(model.colors), s0, u,
                                        1.0, periodic, return_margin=True)
        if margin > 1e-5:
            break
    out = gibbs.gibbs_sweeps(model, xp.asarray(s0), n_sweeps=n_sweeps, rng=seed,
                             backend=kernel_backend.name)
    np.testing.assert_array_equal(xp.to_numpy(out), want)


def test_namespaces_and_unbatched_spins(xp):
    gen = np.random.default_rng(6)
    offsets, shape = gibbs.nearest_neighbour_offsets(skip=(2,)), (1, 4, 5)
    j, h = _model_arrays(gen, offsets, shape)
    model = gibbs.StencilIsing(offsets, xp.asarray(j), xp.asarray(h), boundary="periodic")
    s0 = _random_spins(gen, shape)
    u, want = _uniforms_without_ties(gen, offsets, j, h, xp.to_numpy(model.colors), s0[None],
                                     2, 1.0, True, TIE_MARGIN["float64"])
    out = gibbs.gibbs_sweeps(model, xp.asarray(s0), n_sweeps=2, uniforms=xp.asarray(u[:, 0]))
    assert out.dtype == xp.int8 and tuple(out.shape) == shape
    assert type(out) is type(xp.asarray(s0))
    np.testing.assert_array_equal(xp.to_numpy(out), want[0])
    same = gibbs.gibbs_sweeps(model, xp.asarray(s0), n_sweeps=0)
    np.testing.assert_array_equal(xp.to_numpy(same), s0)


def test_seeded_runs_reproducible_and_generator_accepted():
    model = gibbs.StencilIsing.local((6, 7), skip=(3,), coupling=0.3, bias=0.1)
    s0 = _random_spins(np.random.default_rng(0), (4, 1, 6, 7))
    a = gibbs.gibbs_sweeps(model, s0, n_sweeps=3, rng=9)
    b = gibbs.gibbs_sweeps(model, s0, n_sweeps=3, rng=agr.Key(9))
    c = gibbs.gibbs_sweeps(model, s0, n_sweeps=3, rng=10)
    np.testing.assert_array_equal(a, b)
    assert np.any(a != c)
    d = gibbs.gibbs_sweeps(model, s0, n_sweeps=3, rng=np.random.default_rng(1))
    assert set(np.unique(d)) <= {-1, 1} and d.dtype == np.int8


# ----------------------------------------------------------------------------------------------
# exact enumeration: long runs of many chains against exact marginals and pair correlations

STAT_MODELS = [
    ("local+skip/open", ((0, 0, 1), (0, 1, 0), (0, 1, 1), (0, 1, -1), (0, 0, 2)), (1, 3, 3),
     "open"),
    ("nn/periodic-greedy", ((0, 0, 1), (0, 1, 0)), (1, 3, 4), "periodic"),
    ("channels+skip/periodic", ((1, 0, 0), (0, 0, 1), (0, 1, 1), (0, 0, 2)), (2, 2, 4),
     "periodic"),
]
N_CHAINS = 12000   # per bias group: independent samples after burn-in
BURN_IN = 60
SIGMAS = 5.5       # pre-registered bound on every standardised deviation


def _exact_stats(offsets, shape, periodic, states, probs):
    s = states.reshape(states.shape[0], -1).astype(np.float64)
    mean = probs @ s
    edges = ref.edges(offsets, shape, periodic)
    corr = np.array([probs @ (s[:, i] * s[:, nb]) for i, nb, _ in edges])
    return mean, corr, edges


def _stat_backends():
    from arraygen.backends import available, is_simulated

    return [pytest.param(name, marks=pytest.mark.skipif(
        available()[name] is not None or is_simulated(name),
        reason="needs a native backend (simulators are too slow for 10^4 chains)"))
        for name in ("array_api", "numba_cpu", "numba_cuda", "cupy", "triton")]


def _stat_namespace(backend):
    if backend in ("array_api", "numba_cpu"):
        return np.asarray, np.asarray
    if backend == "triton":
        import torch

        return (lambda a: torch.as_tensor(a, device="cuda")), (lambda a: a.cpu().numpy())
    import cupy

    return cupy.asarray, cupy.asnumpy


@pytest.mark.parametrize("backend", _stat_backends())
@pytest.mark.parametrize("index", range(len(STAT_MODELS)), ids=[m[0] for m in STAT_MODELS])
def test_long_chains_match_exact_enumeration(backend, index):
    name, offsets, shape, boundary = STAT_MODELS[index]
    to_dev, to_host = _stat_namespace(backend)
    gen = np.random.default_rng(1000 + index)
    periodic = boundary == "periodic"
    groups = 2
    j = gen.normal(scale=0.35, size=(len(offsets),) + shape).astype(np.float32)
    h_groups = gen.normal(scale=0.4, size=(groups,) + shape).astype(np.float32)
    h = np.repeat(h_groups, N_CHAINS, axis=0)                    # per-chain bias
    model = gibbs.StencilIsing(offsets, to_dev(j), to_dev(h), boundary=boundary)
    s0 = _random_spins(gen, h.shape)
    out = to_host(gibbs.gibbs_sweeps(model, to_dev(s0), n_sweeps=BURN_IN, beta=1.0,
                                     rng=gen.integers(2**63), backend=backend))
    exact_model = gibbs.StencilIsing(offsets, j, h_groups, boundary=boundary)
    states, probs = gibbs.exact_distribution(exact_model)
    assert ref.is_proper_colouring(offsets, to_host(model.colors), periodic)
    for g in range(groups):
        samples = out[g * N_CHAINS:(g + 1) * N_CHAINS].reshape(N_CHAINS, -1).astype(np.float64)
        mean, corr, edges = _exact_stats(offsets, shape, periodic, np.asarray(states),
                                         np.asarray(probs[g]))
        z_mean = (samples.mean(0) - mean) / np.sqrt((1 - mean**2 + 1e-12) / N_CHAINS)
        emp_corr = np.array([np.mean(samples[:, i] * samples[:, nb]) for i, nb, _ in edges])
        z_corr = (emp_corr - corr) / np.sqrt((1 - corr**2 + 1e-12) / N_CHAINS)
        assert np.max(np.abs(z_mean)) < SIGMAS, (name, g, z_mean)
        assert np.max(np.abs(z_corr)) < SIGMAS, (name, g, z_corr)
        # moments() gives the same per-edge correlations as the explicit edge list
        mom = gibbs.moments(gibbs.StencilIsing(offsets, j, h_groups[g], boundary=boundary),
                            out[g * N_CHAINS:(g + 1) * N_CHAINS])
        mc = np.asarray(mom.corr).reshape(len(offsets), -1)
        np.testing.assert_allclose([mc[k, i] for i, _, k in edges], emp_corr, atol=1e-6)
        # whole-distribution check: chi-square over the states, bound dof + 6 sqrt(2 dof)
        idx = ((samples > 0).astype(np.int64) << np.arange(samples.shape[1] - 1, -1, -1)).sum(1)
        counts = np.bincount(idx, minlength=probs.shape[-1])
        expected = N_CHAINS * np.asarray(probs[g])
        keep = expected > 5
        chi2 = np.sum((counts[keep] - expected[keep]) ** 2 / expected[keep])
        dof = int(keep.sum()) - 1
        assert chi2 < dof + 6 * math.sqrt(2 * dof), (name, g, chi2, dof)


# ----------------------------------------------------------------------------------------------
# constructors and helpers


def test_constructors_and_with_bias():
    m = gibbs.StencilIsing.from_offsets((2, 3, 4), gibbs.local_offsets(skip=(2,)),
                                        coupling=np.arange(8.0), bias=0.5)
    assert m.offsets == ((0, 0, 1), (0, 1, -1), (0, 1, 0), (0, 1, 1),
                         (0, 0, 2), (0, 2, 0), (0, 2, 2), (0, 2, -2))
    assert m.couplings.shape == (8, 2, 3, 4) and m.bias.shape == (2, 3, 4)
    np.testing.assert_array_equal(np.asarray(m.couplings)[:, 1, 2, 3], np.arange(8.0))
    nn = gibbs.StencilIsing.nearest_neighbour((4, 4), skip=(2,), coupling=1.0)
    assert nn.offsets == ((0, 0, 1), (0, 1, 0), (0, 0, 2), (0, 2, 0))
    hb = np.ones((5, 2, 3, 4), np.float32)
    mb = m.with_bias(hb)
    assert mb.bias.shape == (5, 2, 3, 4) and mb.n_colors == m.n_colors
    assert m.bias.shape == (2, 3, 4)
    with pytest.raises(ValueError, match="`bias`"):
        m.with_bias(np.ones((3, 3)))


def test_spin_bit_conversions(xp):
    bits = xp.asarray(np.array([[0, 1, 1], [1, 0, 0]], dtype=np.uint8))
    s = gibbs.to_spins(bits)
    np.testing.assert_array_equal(xp.to_numpy(s), [[-1, 1, 1], [1, -1, -1]])
    assert s.dtype == xp.int8
    back = gibbs.to_bits(s)
    np.testing.assert_array_equal(xp.to_numpy(back), xp.to_numpy(bits))
    np.testing.assert_array_equal(xp.to_numpy(gibbs.to_spins(xp.asarray(np.array([True, False])))),
                                  [1, -1])
    with pytest.raises(ValueError, match="`bits`"):
        gibbs.to_spins(xp.asarray(np.array([0, 2])))
    with pytest.raises(ValueError, match="`spins`"):
        gibbs.to_bits(xp.asarray(np.array([0, 1], dtype=np.int8)))


# ----------------------------------------------------------------------------------------------
# bad input


def test_bad_offsets_and_shapes():
    j = np.zeros((2, 1, 3, 3))
    with pytest.raises(ValueError, match="`offsets`.*itself"):
        gibbs.StencilIsing([(0, 0, 0), (0, 1, 0)], j, np.zeros((1, 3, 3)))
    with pytest.raises(ValueError, match="`offsets`.*distinct"):
        gibbs.StencilIsing([(0, 1, 0), (0, 1, 0)], j, np.zeros((1, 3, 3)))
    with pytest.raises(ValueError, match=r"`offsets`.*opposite.*\(0, 1, 0\).*\(0, -1, 0\)"):
        gibbs.StencilIsing([(0, 1, 0), (0, -1, 0)], j, np.zeros((1, 3, 3)))
    with pytest.raises(ValueError, match="`offsets`.*periodic"):
        gibbs.StencilIsing([(0, 3, 0), (0, 0, 1)], j, np.zeros((1, 3, 3)), boundary="periodic")
    with pytest.raises(ValueError, match="`couplings`"):
        gibbs.StencilIsing([(0, 1, 0)], j, np.zeros((1, 3, 3)))
    with pytest.raises(ValueError, match="`couplings`"):
        gibbs.StencilIsing([(0, 1, 0)], np.zeros((1, 3, 3)), np.zeros((1, 3, 3)))
    with pytest.raises(ValueError, match="`bias`"):
        gibbs.StencilIsing([(0, 1, 0), (0, 0, 1)], j, np.zeros((1, 3, 4)))
    with pytest.raises(ValueError, match="`boundary`"):
        gibbs.StencilIsing([(0, 1, 0), (0, 0, 1)], j, np.zeros((1, 3, 3)), boundary="wrap")
    with pytest.raises(ValueError, match="`couplings`.*non-finite"):
        gibbs.StencilIsing([(0, 1, 0), (0, 0, 1)], j + np.nan, np.zeros((1, 3, 3)))
    with pytest.raises(ValueError, match="`model`.*20"):
        gibbs.exact_distribution(gibbs.StencilIsing.nearest_neighbour((3, 7)))


def test_bad_sweep_arguments():
    model = gibbs.StencilIsing.nearest_neighbour((3, 4), coupling=0.2)
    s = np.ones((2, 1, 3, 4), np.int8)
    with pytest.raises(ValueError, match="`spins`.*-1 and \\+1"):
        gibbs.gibbs_sweeps(model, np.zeros((2, 1, 3, 4), np.int8))
    with pytest.raises(ValueError, match="`spins`.*-1 and \\+1"):
        gibbs.energy(model, np.full((1, 3, 4), 0.5))
    with pytest.raises(TypeError, match="`spins`"):
        gibbs.gibbs_sweeps(model, np.ones((1, 3, 4), bool))
    with pytest.raises(ValueError, match="`spins`.*shape"):
        gibbs.gibbs_sweeps(model, np.ones((2, 1, 4, 3), np.int8))
    with pytest.raises(ValueError, match="`spins`.*per-chain"):
        gibbs.gibbs_sweeps(model.with_bias(np.zeros((3, 1, 3, 4))), s)
    for beta in (float("nan"), float("inf"), -0.5):
        with pytest.raises(ValueError, match="`beta`"):
            gibbs.gibbs_sweeps(model, s, beta=beta)
    with pytest.raises(ValueError, match="`n_sweeps`"):
        gibbs.gibbs_sweeps(model, s, n_sweeps=-1)
    with pytest.raises(TypeError, match="`n_sweeps`"):
        gibbs.gibbs_sweeps(model, s, n_sweeps=2.5)
    with pytest.raises(ValueError, match="`uniforms`"):
        gibbs.gibbs_sweeps(model, s, n_sweeps=2, uniforms=np.zeros((1, 2, 1, 3, 4)))
    with pytest.raises(ValueError, match="`uniforms`"):
        gibbs.gibbs_sweeps(model, s, n_sweeps=1, uniforms=np.full((1, 2, 1, 3, 4), 2.0))
    with pytest.raises(TypeError, match="`model`"):
        gibbs.gibbs_sweeps("model", s)
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="namespaces"):
        gibbs.gibbs_sweeps(model, torch.ones((2, 1, 3, 4), dtype=torch.int8),
                           uniforms=np.zeros((1, 2, 1, 3, 4)))


def test_bad_options_name_the_argument():
    """Issue 13: non-integer shapes and options were truncated silently."""
    with pytest.raises(TypeError, match=r"`shape` must contain integers; got 2.5 at position 1"):
        gibbs.StencilIsing.nearest_neighbour(shape=(1, 2.5, 4))
    with pytest.raises(ValueError, match="`shape` must have 2 or 3 entries"):
        gibbs.StencilIsing.nearest_neighbour(shape=(1, 2, 3, 4))
    with pytest.raises(TypeError, match="`radius` must be an integer"):
        gibbs.local_offsets(1.5)
    with pytest.raises(ValueError, match="`radius` must be >= 1"):
        gibbs.StencilIsing.local((4, 4), radius=0)
    with pytest.raises(TypeError, match="`skip` must be an integer"):
        gibbs.nearest_neighbour_offsets(skip=(2.5,))
    with pytest.raises(TypeError, match="`offsets` must be a sequence of"):
        gibbs.StencilIsing([(0, 1), (0, 0, 1)], np.zeros((2, 1, 3, 3)), 0.0)
    with pytest.raises(TypeError, match="`offsets` must be integers"):
        gibbs.StencilIsing([(0, 1.5, 0)], np.zeros((1, 1, 3, 3)), 0.0)
    with pytest.raises(TypeError, match="`dtype` must name a real floating dtype"):
        gibbs.StencilIsing.nearest_neighbour((3, 3), dtype="float77")
    with pytest.raises(ValueError, match="`boundary` must be one of 'open', 'periodic'"):
        gibbs.StencilIsing.nearest_neighbour((3, 3), boundary="wrap")
    with pytest.raises(TypeError, match="`couplings` must be an array"):
        gibbs.StencilIsing([(0, 1, 0)], "J", 0.0)
    with pytest.raises(TypeError, match="`n_sweeps` must be an integer"):
        gibbs.gibbs_sweeps(gibbs.StencilIsing.nearest_neighbour((3, 3)),
                           np.ones((1, 3, 3), np.int8), n_sweeps=True)


def test_lists_are_read_as_numpy_arrays():
    offs = [(0, 0, 1), (0, 1, 0)]
    j = np.full((2, 1, 3, 3), 0.4)
    h = np.linspace(-1, 1, 9).reshape(1, 3, 3)
    from_lists = gibbs.StencilIsing(offs, j.tolist(), h.tolist())
    from_arrays = gibbs.StencilIsing(offs, j, h)
    s = np.ones((2, 1, 3, 3), np.int8)
    a = gibbs.gibbs_sweeps(from_lists, s.tolist(), n_sweeps=2, rng=3, backend="array_api")
    b = gibbs.gibbs_sweeps(from_arrays, s, n_sweeps=2, rng=3, backend="array_api")
    assert isinstance(a, np.ndarray)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(gibbs.energy(from_lists, s[0].tolist()),
                               gibbs.energy(from_arrays, s[0]))
    model = gibbs.StencilIsing.from_offsets((3, 3), offs, coupling=[0.4, 0.4], bias=h.tolist(),
                                            dtype="float64")
    np.testing.assert_array_equal(model.couplings, j)
    # big-endian arrays (a numba TypingError on the default backend before)
    swapped = gibbs.StencilIsing(offs, j.astype(">f8"), h.astype(">f4"))
    np.testing.assert_array_equal(gibbs.gibbs_sweeps(swapped, s.astype(">i2"), n_sweeps=2, rng=3),
                                  gibbs.gibbs_sweeps(from_arrays, s, n_sweeps=2, rng=3))


@pytest.mark.parametrize("backend", [None, "array_api", "numba_cpu"])
def test_numpy_model_with_torch_spins(backend):
    """Issue 15: a model built from NumPy arrays works with torch spins (its arrays move to the
    spins' namespace and device once) and gives the spins of a torch-built model."""
    torch = pytest.importorskip("torch")
    from arraygen.backends import available

    if backend == "numba_cpu" and available()["numba_cpu"] is not None:
        pytest.skip("numba_cpu not usable")
    rng = np.random.default_rng(5)
    j = rng.normal(0.0, 0.5, (len(OFFSETS),) + SHAPE).astype(np.float32)
    h = rng.normal(0.0, 0.3, SHAPE).astype(np.float32)
    np_model = gibbs.StencilIsing(OFFSETS, j, h, boundary="periodic")
    torch_model = gibbs.StencilIsing(OFFSETS, torch.from_numpy(j), torch.from_numpy(h),
                                     boundary="periodic")
    s0 = torch.from_numpy(np.where(rng.random((3,) + SHAPE) < 0.5, 1, -1).astype(np.int8))
    got = gibbs.gibbs_sweeps(np_model, s0, n_sweeps=3, rng=11, backend=backend)
    want = gibbs.gibbs_sweeps(torch_model, s0, n_sweeps=3, rng=11, backend=backend)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.int8
    assert torch.equal(got, want)
    moved = np_model._to(aa.array_namespace(s0), aa.device(s0))
    assert moved is np_model._to(aa.array_namespace(s0), aa.device(s0))  # cached, moved once
    assert len(np_model._moved) == 1 and isinstance(moved.couplings, torch.Tensor)
    e = gibbs.energy(np_model, got)
    assert isinstance(e, torch.Tensor)
    assert torch.allclose(e, gibbs.energy(torch_model, got))
    m_np, m_t = gibbs.moments(np_model, got), gibbs.moments(torch_model, got)
    assert torch.equal(m_np.mean, m_t.mean) and torch.equal(m_np.corr, m_t.corr)
    # NumPy spins with the torch-built model: the other direction
    back = gibbs.gibbs_sweeps(torch_model, s0.numpy(), n_sweeps=3, rng=11, backend="array_api")
    np.testing.assert_array_equal(back, gibbs.gibbs_sweeps(np_model, s0.numpy(), n_sweeps=3,
                                                           rng=11, backend="array_api"))
    # with_bias gives a model with its own cache (the moved copy carries the old bias)
    other = np_model.with_bias(np.zeros(SHAPE, np.float32))
    assert other._moved == {}
    assert not torch.equal(gibbs.energy(other, got), e)


def test_numpy_model_with_torch_cuda_spins():
    """The same on the GPU: the NumPy model's arrays move to the spins' CUDA device once."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    rng = np.random.default_rng(6)
    j = rng.normal(0.0, 0.5, (len(OFFSETS),) + SHAPE).astype(np.float32)
    h = rng.normal(0.0, 0.3, SHAPE).astype(np.float32)
    np_model = gibbs.StencilIsing(OFFSETS, j, h)
    cuda_model = gibbs.StencilIsing(OFFSETS, torch.from_numpy(j).cuda(),
                                    torch.from_numpy(h).cuda())
    s0 = torch.from_numpy(np.where(rng.random((2,) + SHAPE) < 0.5, 1, -1).astype(np.int8))
    s0 = s0.cuda()
    got = gibbs.gibbs_sweeps(np_model, s0, n_sweeps=2, rng=3)
    assert got.device == s0.device
    assert torch.equal(got, gibbs.gibbs_sweeps(cuda_model, s0, n_sweeps=2, rng=3))


def test_numba_cpu_threaded_rows_match_array_api():
    """The multi-threaded row loop (used for large grids) gives the single-threaded result."""
    from arraygen.backends import available

    if available()["numba_cpu"] is not None:
        pytest.skip(available()["numba_cpu"])
    from arraygen.backends.numba_cpu import gibbs as nb

    model = gibbs.StencilIsing.local((3, 9, 12), skip=(3,), coupling=0.3, bias=0.1,
                                     boundary="periodic")
    s0 = _random_spins(np.random.default_rng(3), (2, 3, 9, 12))
    want = gibbs.gibbs_sweeps(model, s0, n_sweeps=3, rng=4, backend="array_api")
    with nb.TUNING.override(parallel_min_sites=1, class_major=False):
        got = gibbs.gibbs_sweeps(model, s0, n_sweeps=3, rng=4, backend="numba_cpu")
    np.testing.assert_array_equal(got, want)


CUPY_KERNELS = ("stream", "stream32", "stream64x4", "stream64x4x2x1", "stream32x16x1x2",
                "fused_stage", "fused_stage32", "fused_stage_sync32", "fused_global32", "tiled",
                "phase")
CUPY_MODELS = {
    "nn": gibbs.nearest_neighbour_offsets(),
    "nn_skip": gibbs.nearest_neighbour_offsets(skip=(3,)),
    "local8": gibbs.local_offsets(1, skip=(3,)),
    "wide": ((0, 0, 5), (0, 2, -1), (0, 1, 0)),
}


@pytest.mark.parametrize("boundary", ["open", "periodic"])
@pytest.mark.parametrize("model_name", sorted(CUPY_MODELS))
@pytest.mark.parametrize("choice", CUPY_KERNELS)
def test_cupy_sweep_kernels_match_oracle(choice, model_name, boundary):
    """Every CuPy sweep kernel, forced, on grids of several tiles each way, with a partial last
    tile (the fused kernel's tiles are 14-62 rows x 104-248 columns; "stream32" streams 2 chunks
    of 24 rows of strips of 104-120 columns, then gives the last 22 rows of every strip to
    blocks of 17 rows, which run on into the next strip or plane): float64 with a batched bias
    and injected uniforms against the oracle, float32 with the Philox stream against the
    per-colour kernel."""
    from arraygen.backends import available

    if available()["cupy"] is not None:
        pytest.skip(available()["cupy"])
    from arraygen.backends.cupy import gibbs as cg

    layout = (24, 2, 17) if choice == "stream32" else None
    with cg.TUNING.override(kernel=choice, stream_layout=layout):
        _check_cupy_kernel(cg, model_name, boundary)


def _check_cupy_kernel(cg, model_name, boundary):
    import cupy

    offsets, periodic = CUPY_MODELS[model_name], boundary == "periodic"
    gen = np.random.default_rng(11)
    shape, B = (2, 70, 520), 2
    j, h = _model_arrays(gen, offsets, shape, batch=B, scale=0.3)
    model = gibbs.StencilIsing(offsets, cupy.asarray(j), cupy.asarray(h), boundary=boundary)
    s0 = _random_spins(gen, (B,) + shape)
    u, want = _uniforms_without_ties(gen, offsets, j, h, cupy.asnumpy(model.colors), s0, 2, 0.8,
                                     periodic, 1e-9)
    out = gibbs.gibbs_sweeps(model, cupy.asarray(s0), n_sweeps=2, beta=0.8,
                             uniforms=cupy.asarray(u), backend="cupy")
    np.testing.assert_array_equal(cupy.asnumpy(out), want)
    # float32 and the Philox stream: the same decisions as the one-launch-per-colour kernel
    model = gibbs.StencilIsing(offsets, cupy.asarray(j, dtype=cupy.float32),
                               cupy.asarray(h[0], dtype=cupy.float32), boundary=boundary)
    got = gibbs.gibbs_sweeps(model, cupy.asarray(s0), n_sweeps=3, rng=5, backend="cupy")
    with cg.TUNING.override(kernel="phase"):
        want = gibbs.gibbs_sweeps(model, cupy.asarray(s0), n_sweeps=3, rng=5, backend="cupy")
    np.testing.assert_array_equal(cupy.asnumpy(got), cupy.asnumpy(want))


def test_cupy_branch_free_reciprocal_is_correctly_rounded():
    """The sweep kernels' branch-free 1/x (x >= 1) equals __frcp_rn for every float32 in
    [1, 2^126), and is at most 2^-126 above (where every uniform exceeds it)."""
    from arraygen.backends import available

    if available()["cupy"] is not None:
        pytest.skip(available()["cupy"])
    import cupy

    from arraygen.backends.cupy import HERE

    code = (HERE / "gibbs.cu").read_text() + r"""
    extern "C" __global__ void rcp_mismatches(unsigned long long* bad, unsigned int first,
                                              unsigned int count) {
        unsigned long long n = 0;
        for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < count;
             i += gridDim.x * blockDim.x) {
            const float x = __uint_as_float(first + i);
            n += __float_as_uint(arraygen::ag_rcp(x)) != __float_as_uint(__frcp_rn(x));
        }
        atomicAdd(bad, n);
    }
    extern "C" __global__ void rcp_large(float* out, const float* x, int n) {
        const int i = blockIdx.x * blockDim.x + threadIdx.x;
        if (i < n) out[i] = arraygen::ag_rcp(x[i]);
    }
    """
    mod = cupy.RawModule(code=code, options=("-std=c++17", f"-I{HERE}"))
    bad = cupy.zeros(1, dtype=cupy.uint64)
    first = int(np.float32(1.0).view(np.uint32))
    count = int(np.float32(2.0**126).view(np.uint32)) - first  # every float in [1, 2^126)
    mod.get_function("rcp_mismatches")((1024,), (256,), (bad, np.uint32(first), np.uint32(count)))
    assert int(bad.get()[0]) == 0
    x = cupy.asarray(np.array([2.0**126, 3e38, np.inf], dtype=np.float32))
    out = cupy.empty_like(x)
    mod.get_function("rcp_large")((1,), (32,), (out, x, np.int32(x.size)))
    assert np.all(cupy.asnumpy(out) <= 2.0**-126)


# (offsets, (C, H, W), boundary): odd sizes, W % 4 != 0, W % n != 0 (open), channel links
CLASS_CASES = [
    (gibbs.nearest_neighbour_offsets(), (1, 40, 18), "periodic"),
    (gibbs.nearest_neighbour_offsets(), (1, 9, 7), "open"),
    (gibbs.nearest_neighbour_offsets(skip=(3,)), (1, 24, 24), "periodic"),
    (gibbs.local_offsets(1, skip=(3,)), (1, 40, 36), "periodic"),
    (gibbs.local_offsets(1, skip=(3,)), (1, 11, 13), "open"),
    (gibbs.local_offsets(1, skip=(2,)), (1, 64, 16), "periodic"),
    (OFFSETS, (2, 30, 15), "open"),
    (OFFSETS, (3, 9, 12), "periodic"),
    (((0, 0, 1), (0, 0, 5)), (2, 5, 12), "periodic"),  # no row links: lag 0
]


def _class_case_inputs(index, batch, dtype):
    offsets, shape, boundary = CLASS_CASES[index]
    gen = np.random.default_rng(50 + index)
    j, h = _model_arrays(gen, offsets, shape, batch=batch if batch > 1 else None, scale=0.4)
    model = gibbs.StencilIsing(offsets, j.astype(dtype), h.astype(dtype), boundary=boundary)
    return model, _random_spins(gen, (batch,) + shape), gen


# schedules of the class-major kernel: (bands_min_sites, wavefront_bytes): one band, one sweep
# per wavefront; one band, all sweeps; two bands (cones at band edges), several sweeps
SCHEDULES = [(1 << 40, 1), (1 << 40, 1 << 40), (1, 1 << 40)]


@pytest.mark.parametrize("schedule", range(len(SCHEDULES)))
@pytest.mark.parametrize("index", range(len(CLASS_CASES)))
def test_numba_cpu_class_major_matches_row_kernel(index, schedule):
    """The class-major wavefront kernel (bands, cones, sweep groups) gives bit for bit the
    spins of the colour-by-colour row kernel: Philox stream, one and several chains."""
    from arraygen.backends import available

    if available()["numba_cpu"] is not None:
        pytest.skip(available()["numba_cpu"])
    import numba

    from arraygen.backends.numba_cpu import gibbs as nb

    bands_min, wavefront = SCHEDULES[schedule]
    if bands_min == 1 and numba.get_num_threads() < 2:
        pytest.skip("needs two Numba threads")
    for batch in (1, 3):
        model, s0, _ = _class_case_inputs(index, batch, np.float32)
        with nb.TUNING.override(bands_min_sites=bands_min, wavefront_bytes=wavefront):
            got = gibbs.gibbs_sweeps(model, s0, n_sweeps=7, beta=1.3, rng=11,
                                     backend="numba_cpu")
        with nb.TUNING.override(class_major=False):
            want = gibbs.gibbs_sweeps(model, s0, n_sweeps=7, beta=1.3, rng=11,
                                      backend="numba_cpu")
        np.testing.assert_array_equal(got, want)
        assert np.any(got != s0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("index", [1, 4, 7])
def test_numba_cpu_class_major_injected_uniforms(index, dtype):
    """Injected uniforms (both dtypes) and a per-chain bias through the class-major kernel."""
    from arraygen.backends import available

    if available()["numba_cpu"] is not None:
        pytest.skip(available()["numba_cpu"])
    from arraygen.backends.numba_cpu import gibbs as nb

    model, s0, gen = _class_case_inputs(index, 2, dtype)
    u = gen.random((4,) + s0.shape).astype(dtype)
    got = gibbs.gibbs_sweeps(model, s0, n_sweeps=4, uniforms=u, backend="numba_cpu")
    with nb.TUNING.override(class_major=False):
        want = gibbs.gibbs_sweeps(model, s0, n_sweeps=4, uniforms=u, backend="numba_cpu")
    np.testing.assert_array_equal(got, want)


def test_stencils_beyond_the_colour_limit_raise_value_errors():
    """local(radius=8) on an open grid ended in AttributeError; radius=2**70 in MemoryError."""
    with pytest.raises(ValueError, match="`offsets` need more than 64 colours on the open grid"):
        gibbs.StencilIsing.local((20, 20), radius=8)
    with pytest.raises(ValueError, match="`radius` must be <= 10"):
        gibbs.local_offsets(2**70)
    assert gibbs.StencilIsing.local((20, 20), radius=7).n_colors == 64


def test_beta_beyond_the_dtype_is_an_error():
    """float32 couplings with 2 * beta above float32 max gave NaN probabilities (a site with
    zero field then always chose -1) instead of an error."""
    model = gibbs.StencilIsing.nearest_neighbour((3, 3), coupling=0.0)
    s = np.ones((1, 3, 3), np.int8)
    with pytest.raises(ValueError, match=r"`beta` \(2 \* beta\) = 2e\+300 is out of range"):
        gibbs.gibbs_sweeps(model, s, beta=1e300, rng=0, backend="array_api")
    model64 = gibbs.StencilIsing.nearest_neighbour((3, 3), coupling=0.0, dtype="float64")
    out = gibbs.gibbs_sweeps(model64, np.ones((64, 1, 3, 3), np.int8), beta=1e300, rng=0,
                             backend="array_api")
    assert 0.3 < float(np.mean(out == 1)) < 0.7  # zero field: a fair coin at any beta
