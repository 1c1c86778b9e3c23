"""Dask in, dask out: chunk-level graphs that call the ordinary op on every chunk.

Oracle: the same public op on the whole NumPy array (bitwise for row-chunked tiled ops,
halo-exchanged Gaussian filters and batch-chunked Fisher steps with explicit noise).
"""

import os

import numpy as np
import pytest

import arraygen as ag
from arraygen import random as R

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")


def _tasks(a) -> int:
    return len(a.__dask_graph__())


@pytest.fixture
def clouds():
    gen = np.random.default_rng(0)
    return gen.random((1000, 3)), gen.random((700, 3)), gen


@pytest.mark.parametrize("chunks", [300, (100, 400, 500)])  # even and ragged row chunks
def test_kernel_matvec_rows_bitwise(dask_client, clouds, chunks):
    x, y, gen = clouds
    v, vv = gen.random(700), gen.random((700, 4))
    r, c = gen.random(1000) + 0.5, gen.random(700) + 0.5
    a, b = gen.random(1000) + 0.5, gen.random(700) + 0.5
    xd = da.from_array(x, chunks=(chunks, 3))
    out = ag.kernel_matvec(xd, y, v, beta=3.0)
    assert isinstance(out, da.Array) and out.shape == (1000,)
    np.testing.assert_array_equal(out.compute(), ag.kernel_matvec(x, y, v, beta=3.0))
    out = ag.kernel_matvec(xd, da.from_array(y, chunks=(700, 3)), vv, beta=3.0, row_scale=r,
                           col_scale=c, x_bandwidth=a, y_bandwidth=b)
    ref = ag.kernel_matvec(x, y, vv, beta=3.0, row_scale=r, col_scale=c, x_bandwidth=a,
                           y_bandwidth=b)
    np.testing.assert_array_equal(out.compute(), ref)


def test_logsumexp_and_softmax_bitwise(dask_client, clouds):
    x, y, gen = clouds
    w = np.log(gen.random(700))
    w[::7] = -np.inf
    v = gen.random((700, 2))
    xd = da.from_array(x, chunks=(250, 3))
    lse = ag.kernel_logsumexp(xd, y, beta=5.0, log_weights=w)
    np.testing.assert_array_equal(lse.compute(),
                                  ag.kernel_logsumexp(x, y, beta=5.0, log_weights=w))
    out, lse = ag.kernel_softmax_matvec(xd, y, v, beta=5.0, log_weights=w)
    ref_out, ref_lse = ag.kernel_softmax_matvec(x, y, v, beta=5.0, log_weights=w)
    np.testing.assert_array_equal(out.compute(), ref_out)
    np.testing.assert_array_equal(lse.compute(), ref_lse)
    out1, _ = ag.kernel_softmax_matvec(xd, y, v[:, 0], beta=5.0)
    np.testing.assert_array_equal(out1.compute(), ag.kernel_softmax_matvec(x, y, v[:, 0],
                                                                           beta=5.0)[0])


@pytest.mark.parametrize("n_chunks", [2, 4, 8])
def test_tiled_graph_is_o_chunks(clouds, n_chunks):
    x, y, gen = clouds
    xd = da.from_array(x, chunks=(-(-1000 // n_chunks), 3))
    out = ag.kernel_matvec(xd, y, gen.random(700), beta=1.0)
    assert _tasks(out) <= 2 * n_chunks + 4  # x chunks, one y, one v, one task per row chunk


@pytest.mark.parametrize("mode", ["reflect", "mirror", "nearest", "wrap", "constant"])
def test_gaussian_filter_halo_bitwise(dask_client, mode):
    img = np.random.default_rng(1).random((2, 3, 64, 50))
    xd = da.from_array(img, chunks=(1, 3, 20, 17))
    out = ag.gaussian_filter(xd, (2.0, 1.5), mode=mode)
    assert isinstance(out, da.Array)
    np.testing.assert_array_equal(out.compute(), ag.gaussian_filter(img, (2.0, 1.5), mode=mode))


def test_fisher_batch_chunks(dask_client):
    gen = np.random.default_rng(2)
    x = gen.standard_normal((10, 3, 8, 8)).astype(np.float32)
    s = gen.standard_normal(x.shape).astype(np.float32)
    v = np.abs(gen.standard_normal(x.shape)).astype(np.float32)
    ab = np.linspace(0.1, 0.9, 10).astype(np.float32)
    xd = da.from_array(x, chunks=(3, 3, 8, 4))
    F = ag.fisher_diagonal(xd, ab)
    np.testing.assert_array_equal(F.compute(), ag.fisher_diagonal(x, ab))
    xn, vn = ag.fisher_langevin_step(xd, s, v, ab, step_size=1e-3, rng=5)
    # the chunks draw the Philox normals of the whole call at their element offsets
    xr, vr = ag.fisher_langevin_step(x, s, v, ab, step_size=1e-3,
                                     noise=R.normal(5, x.shape, dtype=np.float32))
    np.testing.assert_array_equal(xn.compute(), xr)
    np.testing.assert_array_equal(vn.compute(), vr)
    # and agree with the in-kernel noise of the whole call to float32 rounding
    xk, _ = ag.fisher_langevin_step(x, s, v, ab, step_size=1e-3, rng=5)
    np.testing.assert_allclose(xn.compute(), xk, rtol=0, atol=2e-6)


def test_readme_dask_example_runs():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("## On a cluster (Dask)"):text.index("## Development")]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    namespace: dict = {}
    try:
        exec(compile(block, "README.md", "exec"), namespace)
        out = namespace["out"]
        assert isinstance(out, da.Array) and out.numblocks == (4,)
        x, y = namespace["x"].compute(), namespace["y"]
        np.testing.assert_array_equal(out.compute(), ag.kernel_matvec(
            x, y, np.ones(2000, np.float32), beta=10.0))
    finally:
        if "client" in namespace:
            cluster = namespace["client"].cluster
            namespace["client"].close()
            cluster.close()


def test_sinkhorn_on_a_cluster_matches_numpy_and_keeps_graphs_small(dask_client):
    gen = np.random.default_rng(3)
    x, y = gen.random((600, 2)), gen.random((400, 2))
    ref = ag.sinkhorn(x, y, epsilon=0.1, backend="numba_cpu")
    xd = da.from_array(x, chunks=(200, 2))
    res = ag.sinkhorn(xd, y, epsilon=0.1)
    assert isinstance(res.f, da.Array) and res.converged == ref.converged
    assert res.n_iter == ref.n_iter
    np.testing.assert_allclose(res.f.compute(), ref.f, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.cost, ref.cost, rtol=1e-12)
    # state persisted at iteration boundaries: the result's graph does not grow with n_iter
    short = ag.sinkhorn(xd, y, epsilon=0.1, max_iter=3, tol=1e-30)
    assert len(res.f.__dask_graph__()) <= len(short.f.__dask_graph__()) + 8


# ---- y in several chunks: a 2-D grid of (x chunk, y chunk) partials merged in a tree ----

def _depth(a) -> int:
    """Longest chain of tasks in ``a``'s graph."""
    from dask.core import get_dependencies

    dsk = dict(a.__dask_graph__())
    memo: dict = {}

    def depth(k):
        if k not in memo:
            memo[k] = 1 + max((depth(d) for d in get_dependencies(dsk, k)), default=0)
        return memo[k]

    return max(depth(k) for k in dsk)


@pytest.fixture
def grid_inputs(clouds):
    x, y, gen = clouds
    w = np.log(gen.random(700))
    w[::7] = -np.inf
    w[100:250] = -np.inf  # the whole second y chunk has zero weight
    xd = da.from_array(x, chunks=((100, 400, 500), 3))  # ragged in both axes
    yd = da.from_array(y, chunks=((100, 150, 50, 400), 3))
    return x, y, xd, yd, w, gen


def test_grid_matvec_matches_in_memory(dask_client, grid_inputs):
    from arraygen.testing import assert_close

    x, y, xd, yd, _, gen = grid_inputs
    v, vv = gen.random(700), gen.random((700, 4))
    r, c = gen.random(1000) + 0.5, gen.random(700) + 0.5
    a, b = gen.random(1000) + 0.5, gen.random(700) + 0.5
    out = ag.kernel_matvec(xd, yd, v, beta=3.0)
    assert isinstance(out, da.Array) and out.shape == (1000,)
    assert_close(out.compute(), ag.kernel_matvec(x, y, v, beta=3.0), kind="reduction",
                 n_terms=700)
    out = ag.kernel_matvec(xd, yd, da.from_array(vv, chunks=(300, 4)), beta=3.0, row_scale=r,
                           col_scale=c, x_bandwidth=a, y_bandwidth=b)
    ref = ag.kernel_matvec(x, y, vv, beta=3.0, row_scale=r, col_scale=c, x_bandwidth=a,
                           y_bandwidth=b)
    assert out.shape == (1000, 4)
    assert_close(out.compute(), ref, kind="reduction", n_terms=700)
    # float32 stays float32 and within the float32 row of the table
    x32, y32, v32 = (t.astype(np.float32) for t in (x, y, vv))
    out = ag.kernel_matvec(xd.astype(np.float32), yd.astype(np.float32), v32, beta=3.0)
    assert_close(out.compute(), ag.kernel_matvec(x32, y32, v32, beta=3.0), kind="reduction",
                 n_terms=700)


def test_grid_logsumexp_softmax_match_in_memory(dask_client, grid_inputs):
    from arraygen.testing import assert_close

    x, y, xd, yd, w, gen = grid_inputs
    v = gen.random((700, 2))
    wd = da.from_array(w, chunks=350)  # chunked unlike y: rechunked along y's chunks
    lse = ag.kernel_logsumexp(xd, yd, beta=5.0, log_weights=wd)
    ref = ag.kernel_logsumexp(x, y, beta=5.0, log_weights=w)
    assert isinstance(lse, da.Array) and lse.shape == (1000,)
    assert_close(lse.compute(), ref, kind="reduction", n_terms=700)
    out, lse = ag.kernel_softmax_matvec(xd, yd, v, beta=5.0, log_weights=w)
    ref_out, ref_lse = ag.kernel_softmax_matvec(x, y, v, beta=5.0, log_weights=w)
    assert out.shape == (1000, 2) and np.isfinite(out.compute()).all()
    assert_close(out.compute(), ref_out, kind="reduction", n_terms=700)
    assert_close(lse.compute(), ref_lse, kind="reduction", n_terms=700)
    out1, lse1 = ag.kernel_softmax_matvec(xd, yd, v[:, 0], beta=5.0)
    ref1, ref_lse1 = ag.kernel_softmax_matvec(x, y, v[:, 0], beta=5.0)
    assert out1.shape == (1000,)
    assert_close(out1.compute(), ref1, kind="reduction", n_terms=700)
    assert_close(lse1.compute(), ref_lse1, kind="reduction", n_terms=700)


def test_grid_all_weights_zero_is_the_in_memory_error(dask_client, grid_inputs):
    x, y, xd, yd, w, _ = grid_inputs
    lse = ag.kernel_logsumexp(xd, yd, beta=5.0, log_weights=np.full(700, -np.inf))
    with pytest.raises(ValueError, match="log_weights"):
        lse.compute()


def test_merge_log_partials_is_the_logsumexp_of_the_union():
    from scipy.special import logsumexp

    from arraygen._dask import merge_log_partials

    gen = np.random.default_rng(4)
    lse = gen.normal(size=(5, 3)) * 30
    lse[1] = -np.inf
    lse[2, 0] = -np.inf
    out = gen.random((5, 3, 2))
    out[2, 0] = np.nan  # a part of zero weight contributes nothing, even a NaN average
    merged, avg = merge_log_partials(np, lse, out)
    np.testing.assert_allclose(merged[[0, 2, 3, 4]], logsumexp(lse[[0, 2, 3, 4]], axis=1),
                               rtol=1e-14)
    assert merged[1] == -np.inf and np.all(avg[1] == 0)
    with np.errstate(invalid="ignore"):
        share = np.exp(lse - merged[:, None])
    share[~np.isfinite(lse)] = 0
    np.testing.assert_allclose(avg[[0, 2, 3, 4]],
                               np.einsum("ns,nsp->np", share, np.nan_to_num(out))[[0, 2, 3, 4]],
                               rtol=1e-13)


def test_grid_graph_is_o_pairs_and_log_deep(clouds):
    x, y, gen = clouds
    w = np.log(gen.random(700))
    xd = da.from_array(x, chunks=(250, 3))  # 4 row chunks
    sizes, depths = {}, {}
    for n_y in (4, 16, 64):
        yd = da.from_array(y, chunks=(-(-700 // n_y), 3))
        n_y = yd.numblocks[0]
        out = ag.kernel_softmax_matvec(xd, yd, gen.random((700, 2)), beta=1.0,
                                       log_weights=w)[0]
        sizes[n_y], depths[n_y] = _tasks(out), _depth(out)
        # pair tasks (and dask's per-block step before its tree), the 4-way merge tree
        # (< 1/3 more), the inputs' chunks and a few slices: O(pairs), at most 3 per pair
        assert sizes[n_y] <= 3 * 4 * n_y + 3 * n_y + 3 * 4 + 8, (n_y, sizes[n_y])
    # a 4-way tree: 16 times more y chunks add 2 levels, not 60 tasks to a chain
    assert depths[64] - depths[4] <= 2, depths


def _numba_threads_in_a_task():
    import numba

    from arraygen._dask import task_threads

    before = numba.get_num_threads()
    task_threads()
    return before, numba.get_num_threads(), os.environ.get("OMP_NUM_THREADS")


def test_numba_kernels_in_a_task_take_the_workers_omp_threads(dask_client):
    # the nanny sets OMP_NUM_THREADS=1: a worker's task must not start a numba thread per
    # core (2 workers x 2 numba threads oversubscribed the 2 CI cores)
    numba = pytest.importorskip("numba")
    before, after, omp = dask_client.submit(_numba_threads_in_a_task, pure=False).result()
    assert omp is not None and after == min(before, int(omp))
    assert after == 1 or int(omp) > 1


def test_task_threads_is_per_thread_and_needs_omp(monkeypatch):
    import threading

    numba = pytest.importorskip("numba")
    from arraygen._dask import task_threads

    main = numba.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    task_threads()
    assert numba.get_num_threads() == main  # no limit asked for: unchanged
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    seen = []
    t = threading.Thread(target=lambda: (task_threads(), seen.append(numba.get_num_threads())))
    t.start()
    t.join()
    assert seen == [1] and numba.get_num_threads() == main  # only the task's thread


def test_sinkhorn_on_dask_computes_each_half_iteration_once(monkeypatch):
    # the error check's host sync and the next update share one persisted f_t, and the
    # centred clouds are persisted once: kernel tasks per iteration = 2 halves x 2 chunks
    import dask

    from arraygen import tiled

    calls = []
    inner = tiled.kernel_logsumexp
    monkeypatch.setattr(tiled, "kernel_logsumexp",
                        lambda *a, **k: calls.append(1) or inner(*a, **k))
    gen = np.random.default_rng(5)
    x, y = gen.random((600, 2)), gen.random((400, 2))
    xd = da.from_array(x, chunks=(300, 2))  # y follows in 2 row chunks
    with dask.config.set(scheduler="sync"), pytest.warns(RuntimeWarning, match="converge"):
        res = ag.sinkhorn(xd, y, epsilon=0.1, max_iter=10, tol=1e-30)
    assert res.n_iter == 10
    # 10 iterations of 2 halves + the exact error's 2 halves (float64: no recast), 2 chunks
    assert len(calls) <= 2 * (2 * res.n_iter + 2), len(calls)
    with pytest.warns(RuntimeWarning, match="converge"):
        ref = ag.sinkhorn(x, y, epsilon=0.1, max_iter=10, tol=1e-30, backend="numba_cpu")
    np.testing.assert_allclose(res.f.compute(), ref.f, rtol=0, atol=1e-12)


def test_tiled_kernel_persists_the_centred_clouds(dask_client):
    from arraygen._sinkhorn_kernels import TiledKernel

    x = da.from_array(np.random.default_rng(6).random((500, 2)), chunks=(250, 2))
    xc = x - x.mean(axis=0)  # lazy: a reduction and a subtraction per chunk
    k = TiledKernel(da, xc, xc)
    assert len(k.x.__dask_graph__()) == k.x.numblocks[0] == 2  # persisted, no history
    np.testing.assert_array_equal(k.x.compute(), xc.compute())


def test_chunked_weights_reach_the_tasks_without_a_merge_task(dask_client, clouds):
    # a Sinkhorn half-iteration's log-weights come from the last one's row chunks: each task
    # takes them straight from those chunks (no rechunk hop), with bitwise the same result
    x, y, gen = clouds
    w = np.log(gen.random(700))
    w[::5] = -np.inf
    xd = da.from_array(x, chunks=(250, 3))
    wd = da.from_array(w, chunks=((100, 250, 350),)) * 1.0
    out = ag.kernel_logsumexp(xd, y, beta=5.0, log_weights=wd)
    assert not any("rechunk" in name for name in out.__dask_graph__().layers)
    assert _tasks(out) <= 4 + 1 + 2 * 3 + 4  # x, y, w (+ its multiply), one per row chunk
    np.testing.assert_array_equal(out.compute(),
                                  ag.kernel_logsumexp(x, y, beta=5.0, log_weights=w))
    v = gen.random((700, 2))
    out, lse = ag.kernel_softmax_matvec(xd, y, da.from_array(v, chunks=(350, 1)), beta=5.0,
                                        log_weights=wd)
    ref_out, ref_lse = ag.kernel_softmax_matvec(x, y, v, beta=5.0, log_weights=w)
    np.testing.assert_array_equal(out.compute(), ref_out)
    np.testing.assert_array_equal(lse.compute(), ref_lse)
