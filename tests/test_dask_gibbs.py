"""Gibbs sweeps on a dask lattice: halo exchange every S sweeps, global Philox origin.

Oracle: the same ``gibbs_sweeps`` call on the whole NumPy lattice, which the chunked call must
reproduce bitwise (0 differing spins) for every chunking, S and boundary. The window origin of
the launchers is checked at beta = 0, where each spin is the sign of its own uniform.
"""

import pickle

import numpy as np
import pytest

from arraygen import gibbs as G
from arraygen._kernels.gibbs import default_origin, element_indices, row_starts
from arraygen.random import Key, uniform

da = pytest.importorskip("dask.array")
pytest.importorskip("distributed")


def _model(kind, boundary, shape=(1, 24, 20), seed=0):
    gen = np.random.default_rng(seed)
    if kind == "nn":
        offsets = G.nearest_neighbour_offsets()
    elif kind == "local":
        offsets = G.local_offsets(1)
    else:  # a channel link and a skip link: 3 colours or more, dc != 0
        offsets = ((0, 0, 1), (0, 1, 0), (1, 0, 0), (0, 0, 3))
    J = (0.5 * gen.normal(size=(len(offsets),) + shape)).astype(np.float32)
    h = (0.3 * gen.normal(size=shape)).astype(np.float32)
    return G.StencilIsing(offsets, J, h, boundary=boundary)


def _spins(shape, seed=1):
    return np.where(np.random.default_rng(seed).random(shape) < 0.5, 1, -1).astype(np.int8)


def test_row_starts_is_the_flat_index_by_default():
    shape = (2, 3, 4, 5)
    e = element_indices(shape, default_origin(shape))
    np.testing.assert_array_equal(e.reshape(-1), np.arange(2 * 3 * 4 * 5))
    # a window at (chain 1, row 2, column 1) of a (3, 3, 8, 9) array
    rows = row_starts((1, 3, 2, 4), (((1 * 3) * 8 + 2) * 9 + 1, 3 * 8 * 9, 8 * 9, 9))
    full = np.arange(3 * 3 * 8 * 9).reshape(3, 3, 8, 9)
    np.testing.assert_array_equal(rows, full[1:2, :, 2:4, 1].reshape(-1))


@pytest.mark.parametrize("kind", ["nn", "local"])
def test_window_origin_draws_the_whole_calls_uniforms(kernel_backend, kind):
    # beta = 0: P(+1) = 1/2, so every spin is +1 iff its uniform < 1/2; a window with its
    # origin must give exactly the whole lattice's spins there, sweep after sweep
    if kernel_backend.simulated and kernel_backend.name == "triton":
        pytest.skip("slow in the Triton interpreter; the launcher shares numba_cuda's path")
    xp = kernel_backend.xp
    B, C, H, W = 3, 1, 12, 16
    model = _model(kind, "open", shape=(C, H, W))
    s = _spins((B, C, H, W))
    whole = G.gibbs_sweeps(model, xp.asarray(s), n_sweeps=2, beta=0.0, rng=7,
                           backend=kernel_backend.name)
    b0, y0, x0, h, w = 1, 3, 5, 6, 8  # a window of 2 chains, 6 rows, 8 columns
    sub = G.StencilIsing(model.offsets, model.couplings[:, :, y0:y0 + h, x0:x0 + w],
                         model.bias[:, y0:y0 + h, x0:x0 + w])
    win = xp.asarray(np.ascontiguousarray(s[b0:b0 + 2, :, y0:y0 + h, x0:x0 + w]))
    origin = (((b0 * C) * H + y0) * W + x0, C * H * W, H * W, W)
    ns = G.aa.array_namespace(win)
    out = G._sweeps(ns, sub._to(ns, G.aa.device(win)), win, n_sweeps=2, beta=0.0, gen=Key(7),
                    uniforms=None, backend=kernel_backend.name, origin=origin)
    np.testing.assert_array_equal(G.aa.to_numpy(out),
                                  G.aa.to_numpy(whole)[b0:b0 + 2, :, y0:y0 + h, x0:x0 + w])
    # and the spins are the sign test of the stream's uniforms of the whole lattice
    u = uniform(Key(7).advance(1), (B, C, H, W), dtype=np.float32)
    np.testing.assert_array_equal(G.aa.to_numpy(whole), np.where(u < 0.5, 1, -1))


EVEN = (2, 1, 12, 10)                    # even chunks
RAGGED = (1, 1, (6, 8, 10), (7, 13))     # ragged and unaligned (realigned to the period)
SMALL = (2, 1, (4, 4, 4, 4, 8), (10, 10))  # chunks smaller than the halo (merged)


@pytest.mark.parametrize("boundary,kind,chunks,S", [
    ("open", "nn", EVEN, 1),
    ("open", "local", RAGGED, 2),
    ("open", "channels", SMALL, None),
    ("open", "nn", RAGGED, 3),
    ("periodic", "nn", EVEN, 1),
    ("periodic", "local", SMALL, None),
    ("periodic", "channels", RAGGED, 2),
])
def test_chunked_sweeps_bitwise_equal_whole_call(dask_client, boundary, kind, chunks, S):
    shape = (2, 24, 20) if kind == "channels" else (1, 24, 20)
    model = _model(kind, boundary, shape=shape)
    s = _spins((3,) + shape)
    ref = G.gibbs_sweeps(model, s, n_sweeps=5, beta=0.7, rng=3)
    chunks = chunks[:1] + (shape[0],) + chunks[2:]
    out = G.gibbs_sweeps(model, da.from_array(s, chunks=chunks), n_sweeps=5, beta=0.7, rng=3,
                         sweeps_per_exchange=S)
    assert isinstance(out, da.Array) and out.dtype == np.int8
    got = out.compute()
    assert int(np.sum(got != ref)) == 0
    assert not np.all(got == s)  # the sweeps did something


def test_per_chain_bias_and_leading_axes(dask_client):
    model = _model("nn", "open", shape=(1, 16, 16))
    bias = np.random.default_rng(4).normal(size=(2, 3, 1, 16, 16)).astype(np.float32)
    s = _spins((2, 3, 1, 16, 16))
    m2 = model.with_bias(bias.reshape(6, 1, 16, 16))
    ref = G.gibbs_sweeps(m2, s.reshape(6, 1, 16, 16), n_sweeps=3, beta=1.0, rng=Key(9, 2))
    out = G.gibbs_sweeps(m2, da.from_array(s.reshape(6, 1, 16, 16), chunks=(4, 1, 8, 8)),
                         n_sweeps=3, beta=1.0, rng=Key(9, 2), sweeps_per_exchange=1)
    np.testing.assert_array_equal(out.compute(), ref)
    m1 = model
    ref5 = G.gibbs_sweeps(m1, s, n_sweeps=3, beta=1.0, rng=1)
    out5 = G.gibbs_sweeps(m1, da.from_array(s, chunks=(1, 2, 1, 8, 16)), n_sweeps=3, beta=1.0,
                          rng=1)
    assert out5.shape == s.shape
    np.testing.assert_array_equal(out5.compute(), ref5)


def test_graph_grows_by_one_task_per_chunk_and_exchange():
    model = _model("nn", "open", shape=(1, 32, 32))
    sd = da.from_array(_spins((2, 1, 32, 32)), chunks=(1, 1, 16, 16))  # 8 chunks

    def tasks(n_sweeps):
        out = G.gibbs_sweeps(model, sd, n_sweeps=n_sweeps, rng=0, sweeps_per_exchange=1)
        return len(out.__dask_graph__())

    t1, t2, t5 = tasks(1), tasks(2), tasks(5)
    assert t2 - t1 == 8 and t5 - t2 == 3 * 8  # O(chunks) per exchange, never O(sites)
    assert t1 <= 8 + 2 * 4 + 2 * 4 + 8  # input, haloed couplings and bias, one sweep layer


def test_dask_gibbs_errors():
    model = _model("nn", "open", shape=(1, 8, 8))
    sd = da.from_array(_spins((2, 1, 8, 8)), chunks=(1, 1, 4, 8))
    with pytest.raises(TypeError, match="uniforms"):
        G.gibbs_sweeps(model, sd, n_sweeps=1, uniforms=np.zeros((1, 2, 1, 8, 8)))
    with pytest.raises(TypeError, match="rng"):
        G.gibbs_sweeps(model, sd, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="sweeps_per_exchange"):
        G.gibbs_sweeps(model, sd, rng=0, sweeps_per_exchange=0)
    with pytest.raises(ValueError, match="spins"):
        G.gibbs_sweeps(model, da.zeros((2, 1, 8, 9), chunks=4), rng=0)
    with pytest.raises(ValueError, match="spins"):  # checked by the tasks, at compute time
        G.gibbs_sweeps(model, sd * 0, rng=0).compute(scheduler="synchronous")


@pytest.mark.parametrize("class_major", [True, False])
@pytest.mark.parametrize("x0", [4, 6])  # rows start on a Philox block boundary, or not
# (window origins keep the colouring's period 2, as the dask path aligns them)
def test_numba_cpu_window_origin_both_kernels(class_major, x0):
    # the class-major wavefront and the row kernel, with couplings (beta > 0): a window
    # whose halo covers the reach of the sweeps agrees with the whole lattice inside
    nb = pytest.importorskip("arraygen.backends.numba_cpu.gibbs")
    B, C, H, W = 2, 1, 16, 24
    model = _model("nn", "open", shape=(C, H, W))
    s = _spins((B, C, H, W))
    whole = G.gibbs_sweeps(model, s, n_sweeps=2, beta=0.8, rng=11, backend="numba_cpu")
    y0, h, w, halo = 4, 10, 16, 4  # 2 sweeps x 2 colours x radius 1
    sub = G.StencilIsing(model.offsets, model.couplings[:, :, y0:y0 + h, x0:x0 + w],
                         model.bias[:, y0:y0 + h, x0:x0 + w])
    origin = ((0 * H + y0) * W + x0, C * H * W, H * W, W)
    with nb.TUNING.override(class_major=class_major, parallel_min_sites=1):
        out = G._sweeps(np, sub, s[:, :, y0:y0 + h, x0:x0 + w].copy(), n_sweeps=2, beta=0.8,
                        gen=Key(11), uniforms=None, backend="numba_cpu", origin=origin)
    inner = (slice(None), slice(None), slice(halo, h - halo), slice(halo, w - halo))
    np.testing.assert_array_equal(out[inner], whole[:, :, y0:y0 + h, x0:x0 + w][inner])


def test_large_model_is_scattered_once(dask_client):
    # couplings of 1 MiB and more go to the cluster by scatter, not inside the graph
    model = _model("nn", "open", shape=(1, 256, 512))
    s = _spins((1, 1, 256, 512))
    ref = G.gibbs_sweeps(model, s, n_sweeps=2, beta=0.5, rng=6)
    out = G.gibbs_sweeps(model, da.from_array(s, chunks=(1, 1, 128, 256)), n_sweeps=2,
                         beta=0.5, rng=6)
    # the graph holds the spins (128 KiB) and references, not the 1.5 MiB of couplings and bias
    assert len(pickle.dumps(dict(out.__dask_graph__()))) < 1 << 20
    np.testing.assert_array_equal(out.compute(), ref)
