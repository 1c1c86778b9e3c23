"""BitflipDTM.fit on dask images: the images stay on the workers, each iteration gathers its rows.

Oracle: the same ``fit`` on the NumPy images, which the dask call must reproduce bitwise
(parameters, optimiser moments, persistent chains, gradient history) for every chunking: the
drawn indices come from the same Philox words and the gathered rows are converted to spins
exactly as the whole set is in memory.
"""

import subprocess
import sys

import numpy as np
import pytest

from arraygen.discrete import BitflipDTM

da = pytest.importorskip("dask.array")
pytest.importorskip("distributed")

KW = {"iters": 3, "chains": 6, "pcd_k": 2, "rng": 7}


def _images(n=40, shape=(8, 8), seed=0, p=0.35):
    return (np.random.default_rng(seed).random((n, *shape)) < p).astype(np.uint8)


def _assert_same(a, b):
    np.testing.assert_array_equal(b.biases, a.biases)
    np.testing.assert_array_equal(b.couplings, a.couplings)
    assert a.train_state.keys() == b.train_state.keys()
    for name, value in a.train_state.items():
        np.testing.assert_array_equal(np.asarray(b.train_state[name]), np.asarray(value),
                                      err_msg=name)


@pytest.fixture
def computed(monkeypatch):
    """(shape, tasks) of every dask array computed on the client (``Array.compute``, also
    behind ``np.asarray``); tasks of the optimised graph that is sent to the scheduler."""
    import dask

    records = []
    compute = da.Array.compute

    def record(self, **kw):
        (optimized,) = dask.optimize(self)
        records.append((tuple(self.shape), len(optimized.__dask_graph__())))
        return compute(self, **kw)

    monkeypatch.setattr(da.Array, "compute", record)
    return records


@pytest.mark.parametrize("chunks,coupling,dtype", [
    (7, "site", np.uint8),             # ragged: 5 chunks of 7 and one of 5
    ((13, 1, 26), "offset", np.bool_),  # uneven, a one-row chunk
    (40, "site", np.float32),          # one chunk
])
def test_fit_on_dask_images_is_bitwise_the_in_memory_fit(dask_client, computed, chunks,
                                                         coupling, dtype):
    images = _images().astype(dtype)
    ref = BitflipDTM((8, 8), T=3, coupling=coupling)
    h_ref = ref.fit(images, **KW)
    lazy = da.from_array(images, chunks=(chunks, 8, 8))
    model = BitflipDTM((8, 8), T=3, coupling=coupling)
    h = model.fit(lazy, **KW)
    _assert_same(ref, model)
    assert h == h_ref
    assert isinstance(model.train_state["negative"], np.ndarray)
    # only reductions and the drawn rows come to the client, never the whole set
    shapes = [shape for shape, _ in computed]
    assert shapes and all(s[0] <= KW["chains"] for s in shapes if len(s) == 4), shapes
    assert (40, 1, 8, 8) not in shapes and (40, 8, 8) not in shapes


def test_channels_axis_and_resume(dask_client):
    images = _images(n=30, shape=(2, 6, 6), seed=3)
    ref = BitflipDTM((2, 6, 6), T=2)
    ref.fit(images, **KW)
    model = BitflipDTM((2, 6, 6), T=2)
    lazy = da.from_array(images, chunks=(4, 1, 6, 3))  # chunked along every axis
    model.fit(lazy, **{**KW, "iters": 2})
    model.fit(lazy, **{**KW, "iters": 1})             # resumes at iteration 2 of the stream
    _assert_same(ref, model)


def test_init_from_data_counts_chunkwise(dask_client, computed):
    images = _images(n=37, seed=5)
    ref = BitflipDTM((8, 8), T=4).init_from_data(images)
    model = BitflipDTM((8, 8), T=4).init_from_data(da.from_array(images, chunks=(5, 4, 8)))
    np.testing.assert_array_equal(model.biases, ref.biases)
    # a scalar (value check) and the (C, H, W) count: no image rows
    assert sorted(shape for shape, _ in computed) == [(), (1, 8, 8)]


@pytest.mark.parametrize("n", [70, 700])
def test_gather_graph_does_not_grow(dask_client, computed, n):
    # one small compute per iteration, its graph bounded by the row chunks the draw touches
    # (at most `chains`): a selection each (fused with the chunk's read) and its place in the
    # concatenation; the same bound at every iteration and for 10 or 100 row chunks
    images = _images(n=n, seed=2)
    model = BitflipDTM((8, 8), T=2)
    model.fit(da.from_array(images, chunks=(7, 8, 8)), **{**KW, "iters": 8})
    gathers = [tasks for shape, tasks in computed if len(shape) == 4]
    assert len(gathers) == 8
    assert all(shape[0] <= KW["chains"] for shape, _ in computed if len(shape) == 4)
    assert max(gathers) <= 2 * KW["chains"], gathers
    ref = BitflipDTM((8, 8), T=2)
    ref.fit(images, **{**KW, "iters": 8})
    _assert_same(ref, model)


@pytest.mark.parametrize("bad", [
    _images()[:, :7, :],                                   # wrong image shape
    _images()[:0],                                         # no images
    np.full((40, 8, 8), 0.5),                              # not binary
    np.zeros((40, 8, 8), dtype="U1"),                      # strings: not binary
    _images()[:, None, None],                              # five axes
])
def test_bad_dask_images_raise_like_numpy(dask_client, bad):
    with pytest.raises((ValueError, TypeError)) as expected:
        BitflipDTM((8, 8), T=2).fit(bad, **KW)
    with pytest.raises(expected.type) as got:
        BitflipDTM((8, 8), T=2).fit(da.from_array(bad, chunks=7), **KW)
    assert str(got.value) == str(expected.value)
    assert "`images`" in str(got.value)


def test_unknown_chunk_sizes_raise(dask_client):
    lazy = da.from_array(_images(), chunks=7)
    lazy = lazy[lazy[:, 0, 0] >= 0]                       # row count unknown until computed
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        BitflipDTM((8, 8), T=2).fit(lazy, **KW)


def test_importing_arraygen_does_not_import_dask():
    code = ("import sys, arraygen, arraygen.discrete; "
            "assert 'dask' not in sys.modules, 'dask imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
