"""Device kd-tree order (arraygen._kd_order): a valid kd order in every namespace, with clusters
as tight as the host order's."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from arraygen._kd_order import kd_levels, kd_order


def _check_kd(xs: np.ndarray, block: int) -> None:
    """Every split of every level separates its two parts along some coordinate."""
    n = xs.shape[0]
    for bounds in kd_levels(n, block):
        for s, e in itertools.pairwise(bounds):
            if e - s <= block:
                continue
            mid = s + (-(-(e - s) // block) // 2) * block
            left, right = xs[s:mid], xs[mid:e]
            assert np.any(left.max(axis=0) <= right.min(axis=0)), (s, mid, e)


def test_levels_partition_into_clusters():
    for n, block in [(1, 4), (4, 4), (5, 4), (1000, 7), (1024, 64), (1000, 1)]:
        levels = kd_levels(n, block)
        final = [0]
        for s, e in itertools.pairwise(levels[-1]) if levels else [(0, n)]:
            size = e - s
            final += [s + (-(-size // block) // 2) * block, e] if size > block else [e]
        assert final == sorted(set(range(0, n, block)) | {n})  # full clusters, last partial


@pytest.mark.parametrize("n,d,block", [(1000, 3, 16), (777, 2, 10), (300, 20, 32), (50, 1, 7)])
def test_kd_order_every_namespace(xp, rng, n, d, block):
    x = rng.random((n, d)) * np.array([1.0 + k for k in range(d)])
    perm = kd_order(xp.namespace, xp.asarray(x), block)
    p = xp.to_numpy(perm)
    assert p.dtype == np.int64
    assert np.array_equal(np.sort(p), np.arange(n))
    _check_kd(x[p], block)


def test_kd_order_as_tight_as_host_order(rng):
    from arraygen import _array_api as aa
    from arraygen.blocksparse import _kd_order

    x = rng.random((4000, 3))
    block = 32

    def mean_radius(order):
        xs = x[order]
        return np.mean([np.sqrt(((c - c.mean(0)) ** 2).sum(1).max())
                        for c in np.split(xs, range(block, xs.shape[0], block))])

    ours = mean_radius(kd_order(aa.array_namespace(x), x, block))
    host = mean_radius(_kd_order(x, block))
    assert ours <= 1.1 * host


def test_duplicates_and_single_cluster(xp):
    x = np.zeros((40, 2))
    p = xp.to_numpy(kd_order(xp.namespace, xp.asarray(x), 8))
    assert np.array_equal(np.sort(p), np.arange(40))
    assert xp.to_numpy(kd_order(xp.namespace, xp.asarray(x[:5]), 8)).tolist() == list(range(5))


def test_nested_order_keeps_outer_clusters(xp, rng):
    """``within``: each run of the outer order is re-ordered on its own, so the runs of 64 and
    of 16 points are both kd clusters."""
    x = rng.random((1000, 3))
    ns = xp.namespace
    outer = xp.to_numpy(kd_order(ns, xp.asarray(x), 64))
    inner = xp.to_numpy(kd_order(ns, xp.asarray(x[outer]), 16, within=64))
    perm = outer[inner]
    assert np.array_equal(np.sort(perm), np.arange(1000))
    for s in range(0, 1000, 64):
        assert set(perm[s:s + 64]) == set(outer[s:s + 64])
        _check_kd(x[perm[s:s + 64]], 16)
    _check_kd(x[perm], 64)
