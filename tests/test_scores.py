"""EmpiricalScore against a dense float64 computation of the noised empirical posterior."""

import math

import numpy as np
import pytest

from arraygen import _array_api as aa
from arraygen import tiled
from arraygen.schedules import make_schedule
from arraygen.scores import EmpiricalScore


def _dense(data, w, x, ab):
    """Posterior mean, score and eps by forming the full weight matrix in float64."""
    data = np.asarray(data, np.float64).reshape(data.shape[0], -1)
    xf = np.asarray(x, np.float64).reshape(x.shape[0], -1)
    a, var = math.sqrt(ab), 1.0 - ab
    logits = np.log(w)[None, :] - ((xf[:, None, :] - a * data[None]) ** 2).sum(-1) / (2 * var)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    post = p @ data
    return post, (a * post - xf) / var, (xf - a * post) / math.sqrt(var)


@pytest.mark.parametrize("t", [0.05, 0.4, 0.9])
def test_matches_dense_float64(xp, t):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(37, 3, 2))
    w = rng.uniform(0.1, 1.0, 37)
    w /= w.sum()
    x = rng.normal(size=(11, 3, 2))
    sch = make_schedule("cosine")
    model = EmpiricalScore(xp.asarray(data), sch, weights=xp.asarray(w))
    post, score, eps = _dense(data, w, x, float(sch.alpha_bar(t)))
    xx = xp.asarray(x)
    for got, want in ((model.denoise(xx, t), post), (model(xx, t), score),
                      (model.eps(xx, t), eps)):
        assert tuple(got.shape) == x.shape
        got = np.asarray(aa.to_numpy(got)).reshape(x.shape[0], -1)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_uniform_weights_and_float32(xp):
    rng = np.random.default_rng(1)
    data = rng.normal(size=(50, 4))
    x = rng.normal(size=(9, 4))
    sch = make_schedule("linear")
    model = EmpiricalScore(xp.asarray(data, dtype=xp.float32), sch)
    got = model.denoise(xp.asarray(x, dtype=xp.float32), 0.3)
    assert got.dtype == xp.float32
    want, _, _ = _dense(data, np.full(50, 1 / 50), x, float(sch.alpha_bar(0.3)))
    np.testing.assert_allclose(aa.to_numpy(got), want, rtol=2e-4, atol=2e-4)


def test_per_sample_times_match_scalar_calls():
    rng = np.random.default_rng(2)
    data, x = rng.normal(size=(20, 2)), rng.normal(size=(6, 2))
    model = EmpiricalScore(data, make_schedule("cosine"))
    t = np.array([0.2, 0.7, 0.2, 0.5, 0.7, 0.9])
    got = model(x, t)
    for i, ti in enumerate(t):
        np.testing.assert_allclose(got[i], model(x[i:i + 1], float(ti))[0], rtol=1e-12)


def test_alpha_bar_zero_gives_the_weighted_mean_and_t0_raises():
    sch = make_schedule("karras")          # alpha_bar(1) > 0, so build a point with ab = 0 by hand
    data = np.array([[0.0], [2.0], [4.0]])
    w = np.array([0.5, 0.25, 0.25])
    model = EmpiricalScore(data, sch, weights=w)
    out = model._at(np, np.zeros((2, 1)), 0.0, "x0")
    np.testing.assert_allclose(out, np.full((2, 1), 1.5))
    with pytest.raises(ValueError, match="alpha_bar = 1"):
        model(np.zeros((1, 1)), 0.0)


def test_one_dimensional_data_are_points():
    data = np.array([-1.0, 1.0, 3.0])
    sch = make_schedule("linear")
    model = EmpiricalScore(data, sch)
    got = model.denoise(np.array([0.5, 2.5]), 0.2)
    want, _, _ = _dense(data[:, None], np.full(3, 1 / 3), np.array([[0.5], [2.5]]),
                        float(sch.alpha_bar(0.2)))
    np.testing.assert_allclose(got, want[:, 0], rtol=1e-10)


def test_calls_the_softmax_core_not_the_public_op(monkeypatch):
    calls = []
    core = tiled._softmax_matvec
    monkeypatch.setattr(tiled, "_softmax_matvec", lambda *a, **k: calls.append(1) or core(*a, **k))
    monkeypatch.setattr(tiled, "kernel_softmax_matvec",
                        lambda *a, **k: pytest.fail("public op called in the model"))
    model = EmpiricalScore(np.ones((4, 2)), make_schedule("linear"))
    model(np.zeros((3, 2)), 0.5)
    assert calls == [1]


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(data=np.array([[np.nan, 0.0]])), ValueError, "`data` contains 1 non-finite"),
    (dict(data=np.zeros((0, 2))), ValueError, "`data`"),
    (dict(data="abc"), TypeError, "`data`"),
    (dict(schedule="linear"), TypeError, "`schedule`"),
    (dict(weights=np.array([0.5, 0.6, -0.1])), ValueError, "`weights` must be non-negative"),
    (dict(weights=np.array([0.5, 0.6, 0.1])), ValueError, "`weights` must sum to 1"),
    (dict(weights=np.array([0.5, 0.5])), ValueError, r"`weights` must have shape \(3,\)"),
    (dict(backend=3), TypeError, "`backend`"),
])
def test_bad_construction(kwargs, exc, match):
    args = dict(data=np.zeros((3, 2)), schedule=make_schedule("linear"))
    args.update(kwargs)
    data, schedule = args.pop("data"), args.pop("schedule")
    with pytest.raises(exc, match=match):
        EmpiricalScore(data, schedule, **args)


def test_bad_queries():
    model = EmpiricalScore(np.zeros((3, 2)), make_schedule("linear"))
    with pytest.raises(ValueError, match=r"`x` must have shape \(B, 2\)"):
        model(np.zeros((3, 3)), 0.5)
    with pytest.raises(ValueError, match="`t` must be in"):
        model(np.zeros((3, 2)), 1.5)
    with pytest.raises(ValueError, match="`t` must be finite"):
        model(np.zeros((3, 2)), float("nan"))
    with pytest.raises(ValueError, match=r"`t` must be a scalar or have shape \(3,\)"):
        model(np.zeros((3, 2)), np.array([0.1, 0.2]))
