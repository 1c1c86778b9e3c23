"""EmpiricalScore(truncate=...): block-sparse softmax at small noise levels (issue 18).

Oracles: (1) a float64 dense softmax over the data with the skipped (query cluster, data
cluster) pairs masked, rebuilt here from the public clustering API (the truncated model must
compute exactly that, to round-off); (2) the float64 exact posterior mean, within the reported
bound: |E_trunc - E| <= mass_bound * max_j |y_j - E_trunc| per query (the skipped mass moves the
average by at most that); the score inherits alpha / sigma^2 times it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from arraygen import _array_api as aa
from arraygen.blocksparse import block_pairs, cluster_points
from arraygen.schedules import make_schedule
from arraygen.scores import EmpiricalScore


def _np(a):
    return np.asarray(aa.to_numpy(a), dtype=np.float64)


@pytest.fixture(scope="module")
def setup():
    gen = np.random.default_rng(0)
    data = gen.random((1500, 2))
    queries = gen.random((300, 2))
    return data, queries, make_schedule("linear")


def _posterior(x, data, ab, logw=None, mask=None):
    """float64 posterior mean sum_j softmax_j(log w_j - beta |x/alpha - y_j|^2) y_j."""
    alpha, beta = math.sqrt(ab), ab / (2.0 * (1.0 - ab))
    e = -beta * ((x[:, None, :] / alpha - data[None, :, :]) ** 2).sum(-1)
    if logw is not None:
        e = e + logw[None, :]
    if mask is not None:
        e = np.where(mask, e, -np.inf)
    e = e - e.max(1, keepdims=True)
    p = np.exp(e)
    return (p @ data) / p.sum(1, keepdims=True)


def _mask(x, data, ab, truncate, logw=None):
    """The kept (query, data) pairs of the rule, in the user's order, rebuilt publicly."""
    alpha, beta = math.sqrt(ab), ab / (2.0 * (1.0 - ab))
    cq, cd = cluster_points(x / alpha), cluster_points(data)
    w = None if logw is None else logw[_np(cd.perm).astype(np.int64)]
    pairs = block_pairs(cq, cd, beta=beta, truncate=truncate, log_weights=w)
    keep = np.zeros((cq.n, cd.n), dtype=bool)
    off, cols = _np(pairs.offsets).astype(np.int64), _np(pairs.cols).astype(np.int64)
    for a in range(cq.K):
        for b in cols[off[a]:off[a + 1]]:
            keep[a * cq.block:(a + 1) * cq.block, b * cd.block:(b + 1) * cd.block] = True
    return keep[np.ix_(_np(cq.inverse).astype(np.int64), _np(cd.inverse).astype(np.int64))]


@pytest.mark.parametrize("t", [0.002, 0.01, 0.03])
def test_truncated_denoiser_is_the_masked_softmax_and_within_the_bound(setup, t):
    data, x, sched = setup
    model = EmpiricalScore(data, sched, truncate=3.0)
    got = _np(model.denoise(x, t))
    rep = model.truncation_
    assert rep.truncate == 3.0 and 0.0 < rep.fraction <= 1.0
    ab = float(sched.alpha_bar(t))
    mask = _mask(x, data, ab, 3.0)
    assert np.mean(mask) == pytest.approx(rep.fraction, abs=1e-12)
    np.testing.assert_allclose(got, _posterior(x, data, ab, mask=mask), rtol=0, atol=1e-12)
    exact = _posterior(x, data, ab)
    spread = np.max(np.abs(data[None, :, :] - got[:, None, :]), axis=(1, 2))
    assert np.all(np.abs(got - exact).max(1) <= rep.mass_bound * spread + 1e-12)
    # the score: alpha / sigma^2 times the denoiser's error
    score = _np(model.score(x, t))
    exact_score = (math.sqrt(ab) * exact - x) / (1.0 - ab)
    err = np.abs(score - exact_score).max(1)
    assert np.all(err <= math.sqrt(ab) / (1.0 - ab) * (rep.mass_bound * spread + 1e-12) + 1e-9)


def test_small_noise_skips_most_pairs():
    """At small noise the posterior is a few nearest points: with queries as dense as the data
    (a sampler near t = 0) most cluster pairs are skipped."""
    gen = np.random.default_rng(7)
    data = gen.random((5000, 2))
    x = data + 1e-3 * gen.standard_normal(data.shape)
    sched = make_schedule("linear")
    t = 2e-3
    model = EmpiricalScore(data, sched, truncate=3.0)
    got = _np(model.denoise(x, t))
    rep = model.truncation_
    assert rep.fraction < 0.5
    ab = float(sched.alpha_bar(t))
    for i0 in range(0, x.shape[0], 1000):   # float64 exact oracle in row blocks
        want = _posterior(x[i0:i0 + 1000], data, ab)
        assert np.max(np.abs(got[i0:i0 + 1000] - want)) <= rep.mass_bound * 2.0 + 1e-12


def test_weights_and_per_sample_times(setup):
    data, x, sched = setup
    gen = np.random.default_rng(4)
    w = gen.random(data.shape[0])
    w[::5] = 0.0
    w /= w.sum()
    model = EmpiricalScore(data, sched, weights=w, truncate=4.0)
    exact = EmpiricalScore(data, sched, weights=w)
    t = gen.choice([0.003, 0.02], size=x.shape[0])
    got, want = _np(model.denoise(x, t)), _np(exact.denoise(x, t))
    rep = model.truncation_
    assert rep.n_pairs_blocks is not None and rep.fraction <= 1.0
    assert np.max(np.abs(got - want)) <= rep.mass_bound * 2.0 + 1e-12
    # zero-weight points never get posterior mass: the masked oracle with -inf weights
    with np.errstate(divide="ignore"):
        logw = np.log(w)
    ab = float(sched.alpha_bar(0.003))
    sel = t == 0.003
    mask = _mask(x[sel], data, ab, 4.0, logw)
    np.testing.assert_allclose(got[sel], _posterior(x[sel], data, ab, logw, mask), atol=1e-12)


def test_large_noise_keeps_everything(setup):
    """At large noise every data point matters: nothing is skipped, the exact posterior."""
    data, x, sched = setup
    model = EmpiricalScore(data, sched, truncate=3.0)
    got = _np(model.denoise(x[:50], 0.9))
    assert model.truncation_.fraction == 1.0 and model.truncation_.mass_bound == 0.0
    want = _posterior(x[:50], data, float(sched.alpha_bar(0.9)))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_truncated_score_in_every_namespace(xp, setup):
    data, x, sched = setup
    ref = EmpiricalScore(data[:400], sched, truncate=3.0).score(x[:50], 0.01)
    model = EmpiricalScore(xp.asarray(data[:400]), sched, truncate=3.0)
    got = model.score(xp.asarray(x[:50]), 0.01)
    np.testing.assert_allclose(_np(got), _np(ref), rtol=1e-10, atol=1e-8)
    # float32 queries on float64 data: the clustered data are cast once and reused
    got32 = model.score(xp.asarray(x[:50].astype(np.float32)), 0.01)
    assert _np(got32).dtype == np.float64 and got32.dtype == xp.float32
    np.testing.assert_allclose(_np(got32), _np(ref), rtol=2e-3, atol=2e-3)


def test_without_truncate_no_report(setup):
    data, x, sched = setup
    model = EmpiricalScore(data, sched)
    model.denoise(x[:3], 0.1)
    assert model.truncation_ is None


@pytest.mark.parametrize("bad, err", [(0.0, ValueError), (-2.0, ValueError),
                                      (float("inf"), ValueError), ("3", TypeError)])
def test_bad_truncate_names_the_argument(setup, bad, err):
    data, _, sched = setup
    with pytest.raises(err, match="`truncate`"):
        EmpiricalScore(data, sched, truncate=bad)
