"""Sliced and max-sliced Wasserstein distances against POT (log=True, max-sliced), autograd
inputs, lists, and bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from arraygen.sliced import max_sliced_wasserstein, sliced_ot_map, sliced_wasserstein

pot = pytest.importorskip("ot")


def _data(seed=0, n=80, m=60, d=4, projections=11):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(n, d)), rng.normal(0.5, 1.5, size=(m, d))
    theta = rng.normal(size=(projections, d))
    theta /= np.linalg.norm(theta, axis=1, keepdims=True)
    a = rng.random(n) + 0.1
    return x, y, theta, a / a.sum()


@pytest.mark.parametrize("p", [1, 2, 3])
def test_log_returns_pots_per_projection_values(xp, p):
    x, y, theta, a = _data()
    for wa in (None, a):
        value, log = sliced_wasserstein(xp.asarray(x), xp.asarray(y), p=p,
                                        projections=xp.asarray(theta), log=True,
                                        a=None if wa is None else xp.asarray(wa))
        ref, ref_log = pot.sliced_wasserstein_distance(x, y, wa, None, p=p,
                                                       projections=theta.T, log=True)
        assert value == pytest.approx(float(ref), rel=1e-10)
        np.testing.assert_allclose(xp.to_numpy(log["projected_emds"]),
                                   ref_log["projected_emds"], rtol=1e-10)
        np.testing.assert_allclose(xp.to_numpy(log["projections"]), ref_log["projections"].T)
        assert value == pytest.approx(float(np.mean(ref_log["projected_emds"])) ** (1 / p))


@pytest.mark.parametrize("p", [1, 2])
def test_max_sliced_matches_pot(xp, p):
    x, y, theta, a = _data(1)
    for wa in (None, a):
        ours = max_sliced_wasserstein(xp.asarray(x), xp.asarray(y), p=p,
                                      projections=xp.asarray(theta),
                                      a=None if wa is None else xp.asarray(wa))
        ref = pot.max_sliced_wasserstein_distance(x, y, wa, None, p=p, projections=theta.T)
        assert ours == pytest.approx(float(ref), rel=1e-10)
    value, log = max_sliced_wasserstein(x, y, projections=theta, log=True)
    assert value == pytest.approx(float(np.max(log["projected_emds"])) ** 0.5)
    # never above the distance along the best direction, which a translation attains
    shift = np.array([3.0, 0.0, 0.0, 0.0])
    many = max_sliced_wasserstein(x, x + shift, n_projections=400, rng=0, p=1)
    assert 2.9 < many <= 3.0 + 1e-12


def test_positional_arguments_keep_designs_order():
    x, y, _, _ = _data(2)
    assert sliced_wasserstein(x, y, 32, 1, 5) == sliced_wasserstein(x, y, n_projections=32,
                                                                    p=1, rng=5)
    assert max_sliced_wasserstein(x, y, 32, 1, 5) == max_sliced_wasserstein(
        x, y, n_projections=32, p=1, rng=5)


def test_autograd_inputs_lists_and_float32():
    torch = pytest.importorskip("torch")
    x, y, theta, _ = _data(3)
    xt = torch.tensor(x, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "converting a tensor that requires grad" warning
        v = sliced_wasserstein(xt, torch.tensor(y), projections=torch.tensor(theta))
        m = max_sliced_wasserstein(xt, torch.tensor(y), projections=torch.tensor(theta))
        out = sliced_ot_map(xt, torch.tensor(y), n_projections=4, rng=0)
    assert v == pytest.approx(sliced_wasserstein(x, y, projections=theta), rel=1e-12)
    assert m == pytest.approx(max_sliced_wasserstein(x, y, projections=theta), rel=1e-12)
    assert not out.requires_grad and tuple(out.shape) == x.shape
    assert sliced_wasserstein(x.tolist(), y.tolist(), projections=theta.tolist()) == (
        pytest.approx(sliced_wasserstein(x, y, projections=theta), rel=1e-12))
    f32 = sliced_wasserstein(x.astype(np.float32), y.astype(np.float32), projections=theta)
    assert f32 == pytest.approx(sliced_wasserstein(x, y, projections=theta), rel=1e-5)


def test_bad_input():
    x, y, theta, _ = _data(4)
    with pytest.raises(ValueError, match="`p` must be >= 1"):
        max_sliced_wasserstein(x, y, p=0.5)
    with pytest.raises(TypeError, match="`n_projections` must be an integer"):
        max_sliced_wasserstein(x, y, n_projections=2.5)
    with pytest.raises(ValueError, match=r"`projections` must have shape \(L, 4\)"):
        max_sliced_wasserstein(x, y, projections=theta[:, :3])
    with pytest.raises(TypeError, match="`x` must be an array"):
        sliced_wasserstein("x", y)
    with pytest.raises(ValueError, match="`x` contains 1 non-finite"):
        bad = x.copy()
        bad[0, 0] = np.nan
        sliced_wasserstein(bad, y)
    with pytest.raises(ValueError, match="`step` must be positive"):
        sliced_ot_map(x, y, step=0.0)
