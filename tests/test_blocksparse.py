"""Block-sparse tiled ops (``truncate=``): clusters, the keep rule, every backend against the
float64 truncated oracle, and the dense oracle within the reported ``mass_bound``."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from arraygen import tiled
from arraygen._kernels.blocksparse import merged_spans, point_mask
from arraygen._kernels.tiled import DIRECT_MAX_D
from arraygen.blocksparse import BlockPairs, Clusters, TruncationReport, block_pairs, cluster_points
from arraygen.reference import tiled as ref
from arraygen.testing import assert_close, to_numpy, tol


def _blobs(rng, n, d, k=3):
    """Random order of points in ``k`` tight blobs one unit apart along the first axis (so that
    some but not all cluster pairs are skipped, in any dimension)."""
    lab = rng.integers(0, k, n)
    pts = (0.1 / np.sqrt(d)) * rng.standard_normal((n, d))
    pts[:, 0] += lab
    return pts


def _need_blocks(kb):
    if kb.name != "array_api" and kb.name not in tiled._BLOCK_BACKENDS:
        pytest.skip(f"no arraygen/backends/{kb.name}/blocksparse.py yet")


def _sorted_mask(pairs, xc, yc):
    """The point-pair mask of ``pairs`` in the user's order of x and y."""
    mask = point_mask(pairs.host_offsets, pairs.host_cols, pairs.block_x, pairs.block_y,
                      xc.n, yc.n)
    return mask[to_numpy(xc.inverse)][:, to_numpy(yc.inverse)]


def _case(rng, kb, d, dtype):
    """(x, y, beta, block) at simulator-tiny or CPU sizes (odd, partial last clusters)."""
    if kb.simulated:
        n, m, block = 37, 29, 8
    else:
        n, m, block = 301, 257, 16
    x = _blobs(rng, n, d).astype(dtype)
    y = _blobs(rng, m, d).astype(dtype)
    return x, y, 30.0, block


def _exponent_scale(x, y, beta):
    """1 + beta (max |x|^2 + max |y|^2): the size of the exponents, which sets the rounding
    error of distances by the law of cosines."""
    return 1.0 + beta * float(np.max(np.sum(np.asarray(x, np.float64) ** 2, axis=1))
                              + np.max(np.sum(np.asarray(y, np.float64) ** 2, axis=1)))


def _close(out, want, dtype, n_terms, scale=1.0):
    rtol, atol_scale = tol(dtype, "reduction", n_terms)
    assert_close(out, want, rtol=rtol, atol=atol_scale * scale * float(np.max(np.abs(want))),
                 dtype=dtype, check_namespace=False, check_device=False, check_dtype=False)


# --------------------------------------------------------------------------------------------
# clusters and pair lists
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("d", [1, 3, 20])
def test_cluster_points_is_a_spatial_permutation(xp, rng, d):
    n, block = 203, 16
    xh = _blobs(rng, n, d)
    c = cluster_points(xp.asarray(xh), block=block)
    assert isinstance(c, Clusters) and (c.n, c.d, c.K, c.block) == (n, d, 13, block)
    perm, inv = to_numpy(c.perm), to_numpy(c.inverse)
    assert sorted(perm.tolist()) == list(range(n))
    assert np.array_equal(perm[inv], np.arange(n))
    pts = to_numpy(c.points)
    assert np.array_equal(pts, xh[perm])
    assert type(c.points) is type(xp.asarray(xh))
    counts = to_numpy(c.count)
    assert counts.tolist() == [16.0] * 12 + [11.0]  # only the last cluster is partial
    centers, radii, _ = ref._cluster_bounds(pts, block)
    assert_close(to_numpy(c.centers), centers, rtol=1e-12, atol=1e-12)
    assert np.all(to_numpy(c.radii) >= radii) and np.all(to_numpy(c.radii) <= radii * 1.0001)
    # spatial: much tighter than clusters of a random order
    rand_radii = ref._cluster_bounds(xh[rng.permutation(n)], block)[1]
    assert radii.mean() < 0.5 * rand_radii.mean()


@pytest.mark.parametrize("d", [1, 3, 20])
def test_block_pairs_follows_the_reference_rule(rng, d):
    n, m, bx, by = 157, 211, 16, 8
    x, y = _blobs(rng, n, d), _blobs(rng, m, d)
    w = np.log(rng.random(m))
    w[rng.random(m) < 0.2] = -np.inf
    a, b = rng.uniform(0.5, 2.0, n), rng.uniform(0.5, 2.0, m)
    cx, cy = cluster_points(x, block=bx), cluster_points(y, block=by)
    px, py = to_numpy(cx.perm), to_numpy(cy.perm)
    beta = 30.0
    for kw in ({}, {"log_weights": w}, {"x_bandwidth": a, "y_bandwidth": b}):
        sorted_kw = {k: v[px if k == "x_bandwidth" else py] for k, v in kw.items()}
        pairs = block_pairs(cx, cy, beta=beta, truncate=2.0, **sorted_kw)
        keep, mass = ref.block_keep(cx.points, cy.points, bx, by, beta, 2.0, **sorted_kw)
        got = point_mask(pairs.host_offsets, pairs.host_cols, 1, 1, cx.K, cy.K)
        assert np.array_equal(got, keep)
        assert 0.0 < pairs.fraction < 1.0
        assert pairs.fraction == pytest.approx(
            ref.point_mask(keep, n, m, bx, by).mean(), rel=1e-12)
        assert pairs.mass_bound == pytest.approx(mass, rel=1e-9, abs=1e-300)
        off, cols = to_numpy(pairs.offsets), to_numpy(pairs.cols)
        assert off.dtype == np.int32 and cols.dtype == np.int32
        assert np.all(np.diff(off) >= 1)  # no row cluster is empty
        for r in range(cx.K):
            assert np.all(np.diff(cols[off[r]:off[r + 1]]) > 0)


@pytest.mark.parametrize("d", [2, 20])
def test_block_pairs_same_points_follows_the_reference_rule(rng, d):
    """``same_points=True`` (a cloud against itself, e.g. DiffusionMap(truncate=)): row bound
    max(L_A, min_A w) against the float64 reference; the kept set shrinks; and the bound holds
    for every row of the dense kernel."""
    n, block, beta = 157, 16, 30.0
    x = 0.01 * rng.random((n, d))   # a square 2 x 2 (clusters wide against the kernel width)
    x[:, :2] = 2.0 * rng.random((n, 2))
    w = np.log(rng.random(n))
    w[rng.random(n) < 0.2] = -np.inf
    a = rng.uniform(0.5, 2.0, n)
    c = cluster_points(x, block=block)
    perm = to_numpy(c.perm)
    xs = np.asarray(c.points, dtype=np.float64)
    d2 = ref.sqdist(xs, xs)
    for kw in ({}, {"log_weights": w}, {"x_bandwidth": a, "y_bandwidth": a}):
        sorted_kw = {k: v[perm] for k, v in kw.items()}
        pairs = block_pairs(c, c, beta=beta, truncate=2.0, same_points=True, **sorted_kw)
        keep, mass = ref.block_keep(xs, xs, block, block, beta, 2.0, same_points=True,
                                    **sorted_kw)
        got = point_mask(pairs.host_offsets, pairs.host_cols, 1, 1, c.K, c.K)
        assert np.array_equal(got, keep)
        mask = ref.point_mask(keep, n, n, block, block)
        assert pairs.fraction == pytest.approx(mask.mean(), rel=1e-12)
        # d > DIRECT_MAX_D: the law of cosines' cancellation slack widens the distance bounds
        assert pairs.mass_bound == pytest.approx(mass, rel=1e-9 if d <= DIRECT_MAX_D else 1e-4, abs=1e-300)
        assert pairs.mass_bound >= mass * (1 - 1e-12)
        plain = block_pairs(c, c, beta=beta, truncate=2.0, **sorted_kw)
        assert pairs.nnz <= plain.nnz and np.all(got <= ref.block_keep(
            xs, xs, block, block, beta, 2.0, **sorted_kw)[0])
        if not kw:
            assert pairs.nnz < plain.nnz
            assert np.array_equal(got, got.T)   # symmetric without weights
        sa = sorted_kw.get("x_bandwidth", np.ones(n))
        logk = sorted_kw.get("log_weights", np.zeros(n))[None, :] - beta * np.outer(sa, sa) * d2
        k = np.exp(logk)
        kept = np.where(mask, k, 0.0).sum(axis=1)
        skipped = np.where(mask, 0.0, k).sum(axis=1)
        live = kept > 0
        assert np.all(skipped[live] / kept[live] <= pairs.mass_bound * (1 + 1e-9) + 1e-300)
    with pytest.raises(ValueError, match="same_points"):
        block_pairs(c, cluster_points(x, block=block), beta=beta, truncate=2.0,
                    same_points=True)


def test_merged_spans_cover_the_listed_clusters():
    # 25 columns in clusters of 10 (the last partial); row clusters list [0, 2], [1], [1, 2]
    offsets = np.array([0, 2, 3, 5])
    cols = np.array([0, 2, 1, 1, 2])
    span_off, starts, stops = merged_spans(offsets, cols, 10, 25)
    assert span_off.tolist() == [0, 2, 3, 4]
    assert list(zip(starts.tolist(), stops.tolist())) == [(0, 10), (20, 25), (10, 20), (10, 25)]


def test_two_separated_groups_skip_exactly_the_cross_pairs(rng):
    g1 = rng.random((64, 3)).astype(np.float32)
    g2 = rng.random((64, 3)).astype(np.float32) + np.float32(100.0)
    x = np.concatenate([g1, g2])[rng.permutation(128)]
    c = cluster_points(x, block=32)
    pairs = block_pairs(c, c, beta=1.0, truncate=5.0)
    mask = _sorted_mask(pairs, c, c)
    far = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=2) > 50
    assert np.array_equal(mask, ~far)
    assert pairs.nnz == 8 and pairs.fraction == 0.5 and pairs.mass_bound == 0.0
    v = rng.random(128).astype(np.float32)
    out, rep = tiled.kernel_matvec(x, x, v, beta=1.0, truncate=5.0, x_clusters=c,
                                   return_report=True)
    assert rep == TruncationReport(truncate=5.0, fraction=0.5, mass_bound=0.0, n_pairs_blocks=8)
    assert_close(out, ref.kernel_matvec(x, x, v, 1.0), dtype="float32", check_dtype=False)


def test_fraction_and_bound_shrink_with_truncate(rng):
    x = rng.random((2000, 2))
    c = cluster_points(x, block=16)
    fr, mb = [], []
    for t in (1.0, 2.0, 3.0, 4.0, 6.0):
        p = block_pairs(c, c, beta=100.0, truncate=t)
        fr.append(p.fraction)
        mb.append(p.mass_bound)
    assert all(a < b for a, b in itertools.pairwise(fr)), fr
    assert all(a > b for a, b in itertools.pairwise(mb)), mb
    assert fr[0] < 0.5


# (d, dtype): direct distances in 1-D and 3-D, the law of cosines above DIRECT_MAX_D; each
# pair is one Numba compile (kept few: first compiles dominate this file's time)
CASES = [(1, "float64"), (3, "float32"), (20, "float64")]


# --------------------------------------------------------------------------------------------
# the three ops on every backend
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("d, dtype", CASES)
def test_matvec_blocks_backends(kernel_backend, rng, dtype, d):
    kb = kernel_backend
    _need_blocks(kb)
    ns = kb.xp
    x, y, beta, block = _case(rng, kb, d, dtype)
    m = y.shape[0]
    v = rng.random((m, 2)).astype(dtype)
    a = rng.uniform(0.7, 1.4, x.shape[0]).astype(dtype)
    b = rng.uniform(0.7, 1.4, m).astype(dtype)
    cx, cy = cluster_points(ns.asarray(x), block=block), cluster_points(ns.asarray(y), block=block)
    for kw in ({}, {"x_bandwidth": a, "y_bandwidth": b}):
        out, rep = tiled.kernel_matvec(
            ns.asarray(x), ns.asarray(y), ns.asarray(v), beta=beta, truncate=2.0,
            x_clusters=cx, y_clusters=cy, return_report=True, backend=kb.name,
            **{k: ns.asarray(val) for k, val in kw.items()})
        assert type(out) is type(ns.asarray(x)) and out.dtype == getattr(ns, dtype)
        srt = {"x_bandwidth": a[to_numpy(cx.perm)], "y_bandwidth": b[to_numpy(cy.perm)]}
        pairs = block_pairs(cx, cy, beta=beta, truncate=2.0,
                            **{k: ns.asarray(srt[k]) for k in kw})
        assert rep.fraction == pairs.fraction and rep.n_pairs_blocks == pairs.nnz
        assert 0.0 < rep.fraction < 1.0
        mask = _sorted_mask(pairs, cx, cy)
        _close(out, ref.kernel_matvec_masked(x, y, v, beta, mask, **kw), dtype, m,
               _exponent_scale(x, y, beta))
        dense = ref.kernel_matvec(x, y, v, beta, **kw)
        relerr = np.max(np.abs(to_numpy(out) - dense) / dense)
        assert relerr <= rep.mass_bound + 50 * tol(dtype, "reduction", m)[0]


@pytest.mark.parametrize("d, dtype", CASES)
def test_logsumexp_and_softmax_blocks_backends(kernel_backend, rng, dtype, d):
    kb = kernel_backend
    _need_blocks(kb)
    ns = kb.xp
    x, y, beta, block = _case(rng, kb, d, dtype)
    m = y.shape[0]
    v = rng.standard_normal((m, 3)).astype(dtype)
    w = np.log(rng.random(m)).astype(dtype)
    w[rng.random(m) < 0.2] = -np.inf
    cx, cy = cluster_points(ns.asarray(x), block=block), cluster_points(ns.asarray(y), block=block)
    pairs = block_pairs(cx, cy, beta=beta, truncate=2.0, log_weights=ns.asarray(w[to_numpy(cy.perm)]))
    mask = _sorted_mask(pairs, cx, cy)
    assert 0.0 < pairs.fraction < 1.0
    common = {"beta": beta, "log_weights": ns.asarray(w), "truncate": 2.0, "x_clusters": cx,
                  "y_clusters": cy, "return_report": True, "backend": kb.name}
    lse, rep = tiled.kernel_logsumexp(ns.asarray(x), ns.asarray(y), **common)
    assert rep.fraction == pairs.fraction and rep.mass_bound == pairs.mass_bound
    scale = _exponent_scale(x, y, beta)
    _close(lse, ref.kernel_logsumexp_masked(x, y, beta, mask, w), dtype, m, scale)
    dense = ref.kernel_logsumexp(x, y, beta, w)
    # lse_trunc <= lse_dense <= lse_trunc + log(1 + mass_bound)
    gap = dense - to_numpy(lse).astype(np.float64)
    slack = 20 * tol(dtype, "reduction", m)[1] * scale * np.max(np.abs(dense))
    assert np.all(gap >= -slack) and np.all(gap <= math.log1p(rep.mass_bound) + slack)
    (out, lse2), rep2 = tiled.kernel_softmax_matvec(ns.asarray(x), ns.asarray(y),
                                                     ns.asarray(v), **common)
    assert rep2 == rep
    want, want_lse = ref.kernel_softmax_matvec_masked(x, y, v, beta, mask, w)
    _close(out, want, dtype, m, scale)
    _close(lse2, want_lse, dtype, m, scale)


def test_dense_error_is_within_mass_bound_at_several_radii(rng):
    x, y = rng.random(1500), rng.random(1300)
    v = rng.random(1300)
    cx, cy = cluster_points(x, block=16), cluster_points(y, block=16)
    dense = ref.kernel_matvec(x[:, None], y[:, None], v, 1e4)
    dense_lse = ref.kernel_logsumexp(x[:, None], y[:, None], 1e4)
    seen = []
    for t in (1.0, 2.0, 3.0):
        out, rep = tiled.kernel_matvec(x, y, v, beta=1e4, truncate=t, x_clusters=cx,
                                       y_clusters=cy, return_report=True)
        err = np.max(np.abs(out - dense) / dense)
        assert err <= rep.mass_bound * (1 + 1e-9) + 1e-13
        lse = tiled.kernel_logsumexp(x, y, beta=1e4, truncate=t, x_clusters=cx, y_clusters=cy)
        gap = dense_lse - lse
        assert np.all(gap >= -1e-12) and np.all(gap <= math.log1p(rep.mass_bound) + 1e-12)
        seen.append((err, rep.mass_bound))
    assert seen[0][0] > 1e-6  # the property is exercised with real truncation error
    assert seen[-1][0] < seen[0][0]


def test_one_dimensional_inputs_and_reuse(rng):
    x, y = rng.random(150), rng.random(130)
    v = rng.random(130)
    out = tiled.kernel_matvec(x, y, v, beta=500.0, truncate=3.0)
    assert out.shape == (150,)
    cx, cy = cluster_points(x), cluster_points(y)
    again = tiled.kernel_matvec(x, y, v, beta=500.0, truncate=3.0, x_clusters=cx, y_clusters=cy)
    assert np.array_equal(out, again)
    lse1 = tiled.kernel_logsumexp(x, x, beta=500.0, truncate=3.0)
    lse2 = tiled.kernel_logsumexp(x, x, beta=500.0, truncate=3.0, x_clusters=cx)
    assert np.array_equal(lse1, lse2)


def test_private_cores_work_in_sorted_order(rng):
    xp = np
    f32 = np.float32
    x, y = rng.random((200, 3)).astype(f32), rng.random((170, 3)).astype(f32)
    v, w = rng.random((170, 2)).astype(f32), np.log(rng.random(170)).astype(f32)
    cx, cy = cluster_points(x, block=16), cluster_points(y, block=16)
    ws = w[cy.perm]
    pairs = block_pairs(cx, cy, beta=200.0, truncate=2.5, log_weights=ws)
    xs, ys, vs = cx.points, cy.points, v[cy.perm]
    out_s, lse_s = tiled._softmax_matvec(xp, xs, ys, vs, ws, beta=200.0, pairs=pairs, xc=cx,
                                         yc=cy)
    lse_only = tiled._logsumexp(xp, xs, ys, ws, beta=200.0, pairs=pairs, xc=cx, yc=cy)
    (out, lse), _ = tiled.kernel_softmax_matvec(x, y, v, beta=200.0, log_weights=w,
                                                truncate=2.5, x_clusters=cx, y_clusters=cy,
                                                return_report=True)
    assert np.array_equal(out_s[cx.inverse], out) and np.array_equal(lse_s[cx.inverse], lse)
    assert_close(lse_only, lse_s, dtype="float32")
    pm = block_pairs(cx, cy, beta=200.0, truncate=2.5)
    mv = tiled._matvec(xp, xs, ys, vs, beta=200.0, pairs=pm, xc=cx, yc=cy, backend="array_api")
    want = ref.kernel_matvec_masked(xs, ys, vs, 200.0, point_mask(
        pm.host_offsets, pm.host_cols, 16, 16, 200, 170))
    assert_close(mv, want, dtype="float32", check_dtype=False)


@pytest.mark.parametrize("d, dtype", [(3, "float32"), (1, "float64")])
def test_namespaces_keep_type_and_dtype(xp, rng, d, dtype):
    x, y = rng.random((90, d)).astype(dtype), rng.random((70, d)).astype(dtype)
    v = rng.random(70).astype(dtype)
    X, Y, V = xp.asarray(x), xp.asarray(y), xp.asarray(v)
    out, rep = tiled.kernel_matvec(X, Y, V, beta=100.0, truncate=2.0, return_report=True)
    assert type(out) is type(X) and out.dtype == X.dtype and tuple(out.shape) == (90,)
    cx, cy = cluster_points(X), cluster_points(Y)
    pairs = block_pairs(cx, cy, beta=100.0, truncate=2.0)
    pairs_mask = _sorted_mask(pairs, cx, cy)
    _close(out, ref.kernel_matvec_masked(x, y, v, 100.0, pairs_mask), dtype, 70)
    assert isinstance(pairs, BlockPairs) and rep.n_pairs_blocks == pairs.nnz


def test_report_without_truncate(rng):
    x = rng.random((20, 2))
    out, rep = tiled.kernel_logsumexp(x, x, beta=1.0, return_report=True, backend="array_api")
    assert rep == TruncationReport(truncate=None, fraction=1.0, mass_bound=0.0,
                                   n_pairs_blocks=None)
    assert np.array_equal(out, tiled.kernel_logsumexp(x, x, beta=1.0, backend="array_api"))


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------

def test_bad_inputs_name_the_argument(rng):
    x, y, v = rng.random((30, 2)), rng.random((20, 2)), rng.random(20)
    cx = cluster_points(x)
    for bad, err in ((-1.0, ValueError), (0.0, ValueError), (math.inf, ValueError),
                     ("3", TypeError)):
        with pytest.raises(err, match="truncate"):
            tiled.kernel_matvec(x, y, v, beta=1.0, truncate=bad)
    with pytest.raises(TypeError, match="x_clusters"):
        tiled.kernel_logsumexp(x, y, beta=1.0, truncate=2.0, x_clusters="clusters")
    with pytest.raises(ValueError, match="y_clusters"):
        tiled.kernel_logsumexp(x, y, beta=1.0, truncate=2.0, y_clusters=cx)
    with pytest.raises(ValueError, match="x_clusters"):
        tiled.kernel_softmax_matvec(x, y, v, beta=1.0, x_clusters=cx)
    with pytest.raises(ValueError, match="return_report"):
        tiled.kernel_matvec(x, y, v, beta=1.0, return_report="yes")
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="x_clusters"):
        tiled.kernel_matvec(x, y, v, beta=1.0, truncate=2.0,
                            x_clusters=cluster_points(torch.from_numpy(x)))
    with pytest.raises(ValueError, match="block"):
        cluster_points(x, block=0)
    with pytest.raises(TypeError, match="block"):
        cluster_points(x, block=2.5)
    with pytest.raises(ValueError, match="`x`"):
        cluster_points(np.array([[np.nan, 0.0]]))
    with pytest.raises(TypeError, match="cx"):
        block_pairs(x, cx, beta=1.0, truncate=1.0)
    with pytest.raises(ValueError, match="truncate"):
        block_pairs(cx, cx, beta=1.0, truncate=-2.0)
    with pytest.raises(ValueError, match="log_weights"):
        block_pairs(cx, cx, beta=1.0, truncate=2.0, log_weights=np.full(30, -np.inf))


def test_truncate_with_dask_is_not_implemented(rng):
    da = pytest.importorskip("dask.array")
    x = da.from_array(rng.random((20, 2)), chunks=10)
    with pytest.raises(NotImplementedError, match="truncate"):
        tiled.kernel_logsumexp(x, x, beta=1.0, truncate=2.0)


def test_autograd_through_truncated_op(rng):
    torch = pytest.importorskip("torch")
    pts = np.concatenate([rng.random((64, 2)), rng.random((64, 2)) + 50.0])
    x = torch.tensor(pts, requires_grad=True)
    v = torch.tensor(rng.random(128))
    c = cluster_points(x.detach(), block=32)
    out, rep = tiled.kernel_matvec(x, x, v, beta=2.0, truncate=4.0, x_clusters=c,
                                   return_report=True)
    assert rep.fraction == 0.5
    (g,) = torch.autograd.grad(out.sum(), x)
    x2 = torch.tensor(pts, requires_grad=True)
    (g2,) = torch.autograd.grad(tiled.kernel_matvec(x2, x2, v, beta=2.0).sum(), x2)
    assert_close(g, g2, rtol=1e-12, atol=1e-12 * float(g2.abs().max()), dtype="float64")
