"""Bit-flip discrete diffusion (arraygen.discrete, schedules.bitflip_schedule, binary datasets).

Oracles: closed-form marginals and composed 2x2 Markov matrices for the forward process, exact
enumeration (written out here, independent of arraygen.gibbs) for the reverse conditional and
the PCD gradient, scipy.linalg.sqrtm for the Frechet distance, and the exact held-out
conditional log-likelihood for training.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import scipy.linalg

from arraygen import discrete as D
from arraygen import plotting as P
from arraygen.datasets import binarized_digits, load_binary_images
from arraygen.random import Key
from arraygen.schedules import bitflip_schedule

AA = "array_api"


# ----------------------------------------------------------------------------------------------
# schedule


@pytest.mark.parametrize("kind", ["cosine", "linear"])
@pytest.mark.parametrize("T", [1, 2, 5, 12])
@pytest.mark.parametrize("p_max", [0.5, 0.3])
def test_schedule_marginals_match_composed_markov_matrices(kind, T, p_max):
    sched = bitflip_schedule(T, kind, p_max)
    assert sched.betas.shape == (T,) and sched.pbar.shape == (T,)
    assert np.all(sched.betas > 0) and np.all(sched.betas <= 0.5)
    assert np.all(np.diff(sched.pbar) > 0)
    m = np.eye(2)
    for t in range(1, T + 1):
        b = sched.betas[t - 1]
        m = m @ np.array([[1 - b, b], [b, 1 - b]])
        assert m[0, 1] == pytest.approx(sched.pbar[t - 1], abs=1e-14)
        assert sched.marginal(t) == sched.pbar[t - 1]
        np.testing.assert_allclose(D.forward_transition(sched, 0, t), m, atol=1e-14)
    u = np.arange(1, T + 1) / T
    closed = p_max * (1 - np.cos(np.pi * u)) / 2 if kind == "cosine" else p_max * u
    np.testing.assert_allclose(sched.pbar, closed, rtol=1e-12, atol=1e-15)
    assert sched.marginal(0) == 0.0


def test_schedule_default_ends_at_one_half_and_unpacks():
    betas, pbar = bitflip_schedule(10)
    assert abs(pbar[-1] - 0.5) < 1e-12
    assert betas[-1] == 0.5
    sched = bitflip_schedule(10, "linear", 0.5)
    assert abs(sched.pbar[-1] - 0.5) < 1e-12 and sched.T == 10


def test_forward_transition_between_steps_composes():
    sched = bitflip_schedule(6, "linear", 0.45)
    for s, t in [(0, 6), (2, 5), (3, 3)]:
        m = np.eye(2)
        for u in range(s + 1, t + 1):
            b = sched.betas[u - 1]
            m = m @ np.array([[1 - b, b], [b, 1 - b]])
        np.testing.assert_allclose(D.forward_transition(sched, s, t), m, atol=1e-14)


def test_time_coupling_formula():
    sched = bitflip_schedule(8, "cosine", 0.5)
    b = sched.betas
    J = sched.couplings
    np.testing.assert_allclose(J[:-1], 0.5 * np.log((1 - b[:-1]) / b[:-1]), rtol=1e-12)
    assert J[-1] == 0.0  # beta_T = 1/2 forgets the input
    # q(s_t | s_{t-1}) ∝ exp(J_t s_t s_{t-1}): the ratio keep / flip is exp(2 J_t)
    np.testing.assert_allclose(np.exp(2 * J[:-1]), (1 - b[:-1]) / b[:-1], rtol=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    ({"T": 0}, "`T`"), ({"T": -3}, "`T`"), ({"T": 5, "p_max": 0.0}, "`p_max`"),
    ({"T": 5, "p_max": 0.51}, "`p_max`"), ({"T": 5, "p_max": float("nan")}, "`p_max`"),
    ({"T": 5, "kind": "sqrt"}, "`kind`"),
])
def test_schedule_bad_inputs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bitflip_schedule(**kwargs)
    with pytest.raises(TypeError, match="`T`"):
        bitflip_schedule(2.5)


# ----------------------------------------------------------------------------------------------
# forward process


def test_q_sample_and_q_step_marginals_empirical():
    sched = bitflip_schedule(5, "cosine", 0.5)
    n = 200_000
    x0 = np.where(np.random.default_rng(1).random((n, 1)) < 0.5, -1.0, 1.0)
    x = x0
    for t in range(1, 6):
        xt = D.q_sample(x0, t, sched, rng=Key(7, t))
        x = D.q_step(x, t, sched, rng=Key(9, t))
        sd = np.sqrt(0.25 / n)
        for sample in (xt, x):
            assert set(np.unique(sample)) <= {-1.0, 1.0}
            assert abs(np.mean(sample != x0) - sched.pbar[t - 1]) < 5 * sd
    # one step only flips with beta_t given x_{t-1}
    prev = D.q_sample(x0, 2, sched, rng=3)
    nxt = D.q_step(prev, 3, sched, rng=4)
    assert abs(np.mean(nxt != prev) - sched.betas[2]) < 5 * np.sqrt(0.25 / n)


def test_q_sample_per_sample_steps_and_bits_convention():
    sched = bitflip_schedule(4, "linear", 0.5)
    n = 50_000
    x0 = np.zeros((4, n), dtype=np.uint8)
    xt = D.q_sample(x0, np.array([0, 1, 2, 4]), sched, rng=0, convention="01")
    assert xt.dtype == np.uint8
    assert np.all(xt[0] == 0)
    for row, t in zip(xt[1:], (1, 2, 4)):
        assert abs(row.mean() - sched.pbar[t - 1]) < 5 * np.sqrt(0.25 / n)


def test_forward_reproducible_with_key():
    sched = bitflip_schedule(3)
    x0 = np.ones((3, 1, 4, 5), dtype=np.float32)
    a = D.q_sample(x0, 2, sched, rng=Key(5))
    b = D.q_sample(x0, 2, sched, rng=5)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32


def test_forward_bad_inputs():
    sched = bitflip_schedule(3)
    with pytest.raises(ValueError, match="`x0`"):
        D.q_sample(np.array([[0.0, 1.0]]), 1, sched)
    with pytest.raises(ValueError, match="`x_prev`"):
        D.q_step(np.array([[0, 2]]), 1, sched, convention="01")
    with pytest.raises(ValueError, match="`t`"):
        D.q_step(np.ones((2, 2)), 0, sched)
    with pytest.raises(ValueError, match="`t`"):
        D.q_sample(np.ones((2, 2)), 4, sched)
    with pytest.raises(ValueError, match="`t`"):
        D.q_sample(np.ones((2, 2)), np.array([1, 2, 3]), sched)
    with pytest.raises(TypeError, match="`t`"):
        D.q_sample(np.ones((2, 2)), 1.5, sched)
    with pytest.raises(ValueError, match="`convention`"):
        D.q_sample(np.ones((2, 2)), 1, sched, convention="bits")


# ----------------------------------------------------------------------------------------------
# exact enumeration helpers (independent of arraygen.gibbs)


def _states(n):
    return np.array(list(itertools.product([-1.0, 1.0], repeat=n)))


def _log_weights(model, t, s_t):
    """log of exp(-E_t(s) + J_t s_t . s) for every state s of one step (flat C-order sites)."""
    C, H, W = model.shape
    n = C * H * W
    S = _states(n)
    h = np.asarray(model.biases[t - 1], dtype=np.float64).reshape(-1)
    w = np.asarray(model._site_couplings()[t - 1], dtype=np.float64)
    jt = model.schedule.couplings[t - 1]
    logw = S @ h + jt * (S @ np.asarray(s_t, dtype=np.float64).reshape(-1))
    idx = np.arange(n).reshape(C, H, W)
    for k, (dc, dy, dx) in enumerate(model.offsets):
        for c, y, x in itertools.product(range(C), range(H), range(W)):
            c2, y2, x2 = c + dc, y + dy, x + dx
            if 0 <= c2 < C and 0 <= y2 < H and 0 <= x2 < W:
                logw = logw + w[k, c, y, x] * S[:, idx[c, y, x]] * S[:, idx[c2, y2, x2]]
    return S, logw


def _exact_conditional(model, t, s_t):
    S, logw = _log_weights(model, t, s_t)
    p = np.exp(logw - logw.max())
    return S, p / p.sum()


def _random_model(shape, T, offsets, seed, coupling="site", dtype="float64"):
    model = D.BitflipDTM(shape, T=T, offsets=offsets, coupling=coupling, dtype=dtype)
    g = np.random.default_rng(seed)
    model.biases = g.normal(0, 0.5, model.biases.shape)
    model.couplings = g.normal(0, 0.5, model.couplings.shape)
    return model


def test_reverse_step_matches_exact_conditional():
    offsets = ((0, 0, 1), (0, 1, 0), (0, 1, 1), (0, 1, -1))
    model = _random_model((1, 2, 3), 3, offsets, seed=3)
    t = 2
    s_t = np.array([[[1, -1, -1], [1, 1, -1]]], dtype=np.float64)
    n = 40_000
    cond = np.broadcast_to(s_t, (n, 1, 2, 3)).copy()
    # the step model is the conditional: gibbs.exact_distribution agrees with our enumeration
    from arraygen.gibbs import exact_distribution

    states, probs = exact_distribution(model.step_model(t, s_t[None]))
    S, p = _exact_conditional(model, t, s_t)
    order = [int("".join("1" if v > 0 else "0" for v in st.reshape(-1)), 2) for st in states]
    np.testing.assert_allclose(np.asarray(probs)[0], p[order], rtol=1e-10, atol=1e-14)
    out = model.reverse_step(cond, t, sweeps=25, rng=11, backend=AA)
    assert out.shape == cond.shape
    codes = ((out.reshape(n, -1) > 0) * (2 ** np.arange(5, -1, -1))).sum(axis=1)
    freq = np.bincount(codes, minlength=64) / n
    expected = p[[int(format(c, "06b"), 2) for c in range(64)]]
    assert 0.5 * np.abs(freq - expected).sum() < 0.03
    np.testing.assert_allclose(out.reshape(n, -1).mean(axis=0), p @ S, atol=5 / np.sqrt(n))


# ----------------------------------------------------------------------------------------------
# PCD gradient against the exact gradient


@pytest.mark.parametrize("coupling", ["site", "offset"])
def test_pcd_gradient_matches_exact_gradient(coupling):
    # two channels with a channel offset: the stacked training model must not couple steps
    offsets = ((0, 0, 1), (1, 0, 0), (1, 0, 1))
    shape, T = (2, 1, 2), 2
    model = _random_model(shape, T, offsets, seed=5, coupling=coupling)
    g = np.random.default_rng(0)
    n_pairs, reps = 3, 6000
    prev = np.where(g.random((n_pairs, T, *shape)) < 0.5, -1.0, 1.0)
    cur = np.where(g.random((n_pairs, T, *shape)) < 0.5, -1.0, 1.0)
    s_prev, s_t = np.repeat(prev, reps, axis=0), np.repeat(cur, reps, axis=0)
    negative = np.where(g.random(s_prev.shape) < 0.5, -1.0, 1.0)
    gh, gw, neg = model.gradient(s_prev, s_t, negative, pcd_k=30, rng=2, backend=AA)
    assert gh.shape == model.biases.shape and gw.shape == model.couplings.shape
    assert neg.shape == negative.shape
    C, H, W = shape
    idx = np.arange(C * H * W).reshape(shape)
    K = len(offsets)
    exp_h = np.zeros((T, C * H * W))
    exp_w = np.zeros((T, K, C, H, W))
    for t in range(1, T + 1):
        for i in range(n_pairs):
            S, p = _exact_conditional(model, t, cur[i, t - 1])
            exp_h[t - 1] += (prev[i, t - 1].reshape(-1) - p @ S) / n_pairs
            for k, (dc, dy, dx) in enumerate(offsets):
                for c, y, x in itertools.product(range(C), range(H), range(W)):
                    c2, y2, x2 = c + dc, y + dy, x + dx
                    if 0 <= c2 < C and 0 <= y2 < H and 0 <= x2 < W:
                        a, b = idx[c, y, x], idx[c2, y2, x2]
                        data = prev[i, t - 1].reshape(-1)
                        exp_w[t - 1, k, c, y, x] += (data[a] * data[b]
                                                     - p @ (S[:, a] * S[:, b])) / n_pairs
    if coupling == "offset":
        exp_w = exp_w.reshape(T, K, -1).sum(axis=-1)
    tol = 5 / np.sqrt(n_pairs * reps)
    np.testing.assert_allclose(np.asarray(gh).reshape(T, -1), exp_h, atol=tol)
    np.testing.assert_allclose(np.asarray(gw), exp_w, atol=tol * (1 if coupling == "site" else 3))
    # a wrong conditional (no x_t bias) is far from the estimate: the test can fail
    assert np.abs(np.asarray(gh).reshape(T, -1) - exp_h).max() < 0.5 * np.abs(exp_h).max()


def test_gradient_bad_inputs():
    model = D.BitflipDTM((2, 3), T=2)
    good = np.ones((4, 2, 1, 2, 3))
    with pytest.raises(ValueError, match="`s_prev`"):
        model.gradient(good * 0.5, good, good)
    with pytest.raises(ValueError, match="`negative`"):
        model.gradient(good, good, np.ones((5, 2, 1, 2, 3)))
    with pytest.raises(ValueError, match="`s_t`"):
        model.gradient(good, np.ones((4, 3, 1, 2, 3)), good)
    with pytest.raises(ValueError, match="`pcd_k`"):
        model.gradient(good, good, good, pcd_k=0)


# ----------------------------------------------------------------------------------------------
# training, sampling, checkpoints


def _stripes(n, seed):
    """3x4 images whose rows are all-0 or all-1, 5% of pixels flipped: coupled pixels."""
    g = np.random.default_rng(seed)
    rows = g.random((n, 3, 1)) < 0.5
    return (rows ^ (g.random((n, 3, 4)) < 0.05)).astype(np.uint8)


def _heldout_nll(model, images, seed):
    """Exact mean -log p_theta(s_{t-1} | s_t) over forward pairs of held-out images, all steps."""
    s0 = 2.0 * images[:, None].astype(np.float64) - 1.0
    prev, cur = model._forward_pairs(s0, Key(seed))
    total = 0.0
    for t in range(1, model.T + 1):
        for i in range(s0.shape[0]):
            S, logw = _log_weights(model, t, cur[i, t - 1])
            lse = logw.max() + np.log(np.exp(logw - logw.max()).sum())
            match = np.all(S == prev[i, t - 1].reshape(-1), axis=1)
            total -= logw[match][0] - lse
    return total / s0.shape[0]


def test_training_lowers_heldout_nll():
    train, test = _stripes(200, 0), _stripes(40, 1)
    model = D.BitflipDTM((3, 4), T=3, offsets=((0, 0, 1), (0, 1, 0), (0, 0, 2)), dtype="float64")
    model.init_from_data(train)
    before = _heldout_nll(model, test, 3)
    model.fit(train, iters=120, chains=32, pcd_k=3, lr=0.03, rng=0, backend=AA)
    after = _heldout_nll(model, test, 3)
    assert after < before - 1.0, (before, after)


def test_init_from_data_is_exact_for_independent_pixels():
    g = np.random.default_rng(4)
    images = (g.random((500, 2, 2)) < np.array([[0.2, 0.7], [0.5, 0.9]])).astype(np.uint8)
    model = D.BitflipDTM((2, 2), T=2, offsets=((0, 0, 1),), dtype="float64").init_from_data(images)
    p1 = (images.sum(axis=0) + 1.0) / (images.shape[0] + 2.0)
    m = 2 * p1 - 1
    # step 1: reverse of q(s_1|s_0) under an independent prior with means m is exp(atanh(m) s)
    np.testing.assert_allclose(model.biases[0, 0], np.arctanh(m), rtol=1e-12)
    r1 = 1 - 2 * model.schedule.pbar[0]
    np.testing.assert_allclose(model.biases[1, 0], np.arctanh(r1 * m), rtol=1e-12)
    assert not np.any(model.couplings)


def test_sample_shape_values_and_reproducible():
    model = D.BitflipDTM((4, 5), T=3)
    model.init_from_data(np.random.default_rng(0).random((30, 4, 5)) < 0.3)
    a = model.sample(7, sweeps=2, rng=3, backend=AA)
    b = model.sample(7, sweeps=2, rng=3, backend=AA)
    assert a.shape == (7, 1, 4, 5) and a.dtype == np.uint8
    assert set(np.unique(a)) <= {0, 1}
    np.testing.assert_array_equal(a, b)
    _, traj = model.sample(2, sweeps=1, rng=0, return_trajectory=True, backend=AA)
    assert len(traj) == 4 and set(np.unique(traj[0])) <= {-1.0, 1.0}


def test_checkpoint_round_trip_and_exact_resume(tmp_path):
    train = _stripes(50, 2)
    kw = {"T": 2, "offsets": ((0, 0, 1), (0, 1, 0)), "dtype": "float64"}
    a = D.BitflipDTM((3, 4), **kw)
    a.fit(train, iters=4, chains=8, pcd_k=2, rng=Key(1), backend=AA)
    b = D.BitflipDTM((3, 4), **kw)
    calls = []
    history = b.fit(train, iters=2, chains=8, pcd_k=2, rng=Key(1), backend=AA,
                    callback=lambda it, model, stats: calls.append((it, model, stats)))
    assert [c[0] for c in calls] == [0, 1] and calls[0][1] is b
    assert [c[2]["grad_bias_rms"] for c in calls] == history["grad_bias_rms"]
    path = tmp_path / "ckpt.npz"
    b.save(path)
    c = D.BitflipDTM.load(path)
    np.testing.assert_array_equal(c.biases, b.biases)
    np.testing.assert_array_equal(c.couplings, b.couplings)
    np.testing.assert_array_equal(c.schedule.betas, b.schedule.betas)
    np.testing.assert_array_equal(c.schedule.pbar, b.schedule.pbar)
    assert c.offsets == b.offsets and c.config() == b.config()
    with np.load(path) as f:
        assert {"schedule_betas", "schedule_pbar", "offsets", "couplings", "biases",
                "config"} <= set(f.files)
        assert json.loads(str(f["config"]))["coupling"] == "site"
    c.fit(train, iters=2, chains=8, pcd_k=2, rng=Key(1), backend=AA)
    np.testing.assert_array_equal(c.biases, a.biases)
    np.testing.assert_array_equal(c.couplings, a.couplings)


def test_checkpoint_offset_mode_float32(tmp_path):
    m = D.BitflipDTM((3, 3), T=2, coupling="offset")
    m.couplings = np.asarray(np.random.default_rng(0).normal(size=m.couplings.shape), np.float32)
    m.save(tmp_path / "m.npz")
    r = D.BitflipDTM.load(tmp_path / "m.npz")
    assert r.couplings.dtype == np.float32 and r.coupling == "offset"
    np.testing.assert_array_equal(r.couplings, m.couplings)
    assert not r.train_state


def test_model_bad_inputs(tmp_path):
    model = D.BitflipDTM((3, 4), T=2)
    with pytest.raises(ValueError, match="`images`"):
        model.fit(np.full((5, 3, 4), 2), iters=1)
    with pytest.raises(ValueError, match="`images`"):
        model.fit(np.zeros((5, 4, 3), dtype=np.uint8), iters=1)
    with pytest.raises(ValueError, match="`s_t`"):
        model.reverse_step(np.zeros((2, 1, 3, 4)), 1)
    with pytest.raises(ValueError, match="`s_t`"):
        model.reverse_step(np.ones((2, 1, 4, 3)), 1)
    with pytest.raises(ValueError, match="`t`"):
        model.reverse_step(np.ones((2, 1, 3, 4)), 3)
    with pytest.raises(ValueError, match="`lr`"):
        model.fit(np.zeros((5, 3, 4), dtype=np.uint8), iters=1, lr=-1.0)
    with pytest.raises(ValueError, match="`coupling`"):
        D.BitflipDTM((3, 4), coupling="dense")
    with pytest.raises(ValueError, match="`shape`"):
        D.BitflipDTM((3,))
    with pytest.raises(ValueError, match="`offsets`"):
        D.BitflipDTM((3, 4), offsets=((1, 0, 0),), boundary="periodic")
    with pytest.raises(ValueError, match="`offsets`"):
        D.BitflipDTM((3, 4), offsets=((0, 0, 1), (0, 0, -1)))
    with pytest.raises(ValueError, match="`dtype`"):
        D.BitflipDTM((3, 4), dtype="int8")
    with pytest.raises(ValueError, match="`n`"):
        model.sample(0)
    np.savez(tmp_path / "bad.npz", biases=np.zeros(3))
    with pytest.raises(ValueError, match="`path`"):
        D.BitflipDTM.load(tmp_path / "bad.npz")


def test_other_namespaces(xp):
    model = D.BitflipDTM((3, 4), T=2, offsets=((0, 0, 1), (0, 1, 0)), xp=xp.namespace,
                         device=xp.device)
    images = xp.asarray(_stripes(20, 0))
    model.fit(images, iters=2, chains=4, pcd_k=1, rng=0, backend=AA)
    out = model.sample(3, sweeps=1, rng=1, backend=AA)
    assert type(out) is type(images)
    assert set(np.unique(xp.to_numpy(out))) <= {0, 1}


# ----------------------------------------------------------------------------------------------
# quality table and pictures


def _fd_scipy(a, b):
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    return (np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(ca + cb)
            - 2 * np.trace(scipy.linalg.sqrtm(ca @ cb).real))


def test_pca_frechet_table_matches_sklearn_pca_and_scipy():
    from sklearn.decomposition import PCA

    data = binarized_digits(16, seed=0)
    g = np.random.default_rng(5)
    samples = (g.random((300, 16, 16)) < 0.4).astype(np.uint8)
    table = P.pca_frechet_table(data.train, data.test, samples, n_components=8, rng=0)
    flat = data.train.reshape(len(data.train), -1).astype(float)
    pca = PCA(n_components=8, svd_solver="full").fit(flat)

    def feats(x):
        return pca.transform(x.reshape(len(x), -1).astype(float))

    assert table["model"] == pytest.approx(_fd_scipy(feats(samples), feats(data.test)),
                                           rel=1e-6)
    real = P.pca_frechet_table(data.train, data.test, data.train[:300], n_components=8, rng=0)
    assert real["model"] < real["bernoulli"]
    assert real["train (floor)"] < real["bernoulli"] < table["model"]
    assert real["n_samples"] == 300 and "Frechet" in P.format_quality_table(real)
    with pytest.raises(ValueError, match="`samples`"):
        P.pca_frechet_table(data.train, data.test, np.full((5, 16, 16), 3))
    with pytest.raises(ValueError, match="`n_components`"):
        P.pca_frechet_table(data.train, data.test, samples, n_components=0)


def test_image_grid_and_png(tmp_path):
    imgs = np.random.default_rng(0).random((7, 1, 4, 5)) < 0.5
    grid = P.image_grid(imgs, ncols=3)
    assert grid.shape == (3 * 5 + 1, 3 * 6 + 1)
    np.testing.assert_array_equal(grid[1:5, 1:6], imgs[0, 0])
    P.save_sample_grid(imgs, tmp_path / "g.png", ncols=3, title="x")
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------------------------
# data sets


@pytest.mark.parametrize("size", [16, 32])
def test_binarized_digits(size):
    data = binarized_digits(size, threshold=0.4, test_fraction=0.25, seed=1)
    assert data.train.shape[1:] == (size, size) and data.train.dtype == np.uint8
    assert data.train.shape[0] + data.test.shape[0] == 1797
    assert data.test.shape[0] == round(0.25 * 1797)
    assert set(np.unique(data.train)) == {0, 1}
    assert set(np.unique(data.test_labels)) == set(range(10))
    assert 0.2 < data.train.mean() < 0.5
    again = binarized_digits(size, threshold=0.4, test_fraction=0.25, seed=1)
    np.testing.assert_array_equal(again.test, data.test)
    # the train and test images are different digits
    flat_tr = {r.tobytes() for r in data.train.reshape(data.train.shape[0], -1)}
    overlap = sum(r.tobytes() in flat_tr for r in data.test.reshape(data.test.shape[0], -1))
    assert overlap < 0.05 * data.test.shape[0]
    with pytest.raises(ValueError, match="`size`"):
        binarized_digits(24)
    with pytest.raises(ValueError, match="`threshold`"):
        binarized_digits(16, threshold=1.5)


def test_load_binary_images(tmp_path):
    imgs = np.random.default_rng(0).random((6, 5, 4)) < 0.5
    np.savez(tmp_path / "ok.npz", images=imgs)
    out = load_binary_images(tmp_path / "ok.npz")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, imgs)
    np.savez(tmp_path / "f.npz", x=imgs.astype(np.float32), y=np.arange(6))
    np.testing.assert_array_equal(load_binary_images(tmp_path / "f.npz", key="x"), imgs)
    with pytest.raises(ValueError, match="`key`"):
        load_binary_images(tmp_path / "f.npz")
    np.savez(tmp_path / "bad.npz", images=imgs * 2.0 - 1.0)
    with pytest.raises(ValueError, match="binary"):
        load_binary_images(tmp_path / "bad.npz")
    np.savez(tmp_path / "flat.npz", images=np.zeros(5))
    with pytest.raises(ValueError, match="shape"):
        load_binary_images(tmp_path / "flat.npz")


# ----------------------------------------------------------------------------------------------
# command line


@pytest.mark.filterwarnings("ignore:frechet_distance:UserWarning")
def test_train_dtm_command_and_resume(tmp_path, capsys):
    from arraygen.cli import main

    out = tmp_path / "run"
    args = ["train-dtm", "--steps", "2", "--iters", "3", "--chains", "8", "--pcd-k", "1",
            "--sweeps", "1", "--samples", "30", "--out", str(out), "--backend", AA,
            "--no-progress"]
    assert main(args) == 0
    for name in ("checkpoint.npz", "samples.png", "metrics.txt"):
        assert (out / name).exists()
    text = (out / "metrics.txt").read_text()
    assert "DTM samples" in text and "training images (floor)" in text
    assert main(args[:-5] + ["--out", str(tmp_path / "again"), "--resume", str(out),
                             "--backend", AA, "--no-progress"]) == 0
    assert D.BitflipDTM.load(tmp_path / "again" / "checkpoint.npz").train_state["iteration"] == 6
    npz = tmp_path / "imgs.npz"
    np.savez(npz, images=_stripes(40, 0))
    assert main(args[:-5] + ["--out", str(tmp_path / "npz"), "--data", str(npz), "--samples",
                             "8", "--backend", AA, "--no-progress"]) == 0
    capsys.readouterr()


def test_kernel_backends_agree_with_array_api(kernel_backend):
    ns = kernel_backend.xp
    model = _random_model((3, 4), 2, ((0, 0, 1), (0, 1, 0), (0, 1, 1)), seed=8)
    if ns.name != "numpy":
        model = D.BitflipDTM((3, 4), T=2, offsets=model.offsets, dtype="float64",
                             xp=ns.namespace, device=ns.device)
        ref = _random_model((3, 4), 2, model.offsets, seed=8)
        model.biases, model.couplings = ns.asarray(ref.biases), ns.asarray(ref.couplings)
    s_t = np.where(np.random.default_rng(1).random((5, 1, 3, 4)) < 0.5, -1.0, 1.0)
    got = model.reverse_step(ns.asarray(s_t), 2, sweeps=2, rng=Key(4),
                             backend=kernel_backend.name)
    want = model.reverse_step(ns.asarray(s_t), 2, sweeps=2, rng=Key(4), backend=AA)
    np.testing.assert_array_equal(ns.to_numpy(got), ns.to_numpy(want))
    images = ns.asarray(_stripes(12, 0))
    model.fit(images, iters=2, chains=4, pcd_k=1, rng=0, backend=kernel_backend.name)
    out = model.sample(3, sweeps=1, rng=1, backend=kernel_backend.name)
    assert set(np.unique(ns.to_numpy(out))) <= {0, 1}


@pytest.mark.parametrize("call, exc, match", [
    (lambda: D.BitflipDTM((1, 2.5, 4)), TypeError, "`shape`"),
    (lambda: D.BitflipDTM((0, 4)), ValueError, "`shape`"),
    (lambda: D.BitflipDTM((3, 4), T=2.5), TypeError, "`T`"),
    (lambda: D.BitflipDTM((3, 4), boundary="torus"), ValueError, "`boundary`"),
    (lambda: D.BitflipDTM((3, 4), T=2).sample(2.5), TypeError, "`n`"),
    (lambda: D.BitflipDTM((3, 4), T=2).sample(2, sweeps=0), ValueError, "`sweeps`"),
    (lambda: D.BitflipDTM((3, 4), T=2).fit(np.zeros((4, 3, 4), np.uint8), iters=True),
     TypeError, "`iters`"),
    (lambda: D.BitflipDTM((3, 4), T=2).fit(np.zeros((4, 3, 4), np.uint8), chains=0),
     ValueError, "`chains`"),
    (lambda: D.BitflipDTM((3, 4), T=2).fit(np.zeros((4, 3, 4), np.uint8), lr=float("nan")),
     ValueError, "`lr`"),
    (lambda: D.BitflipDTM((3, 4), T=2).fit(np.zeros((4, 3, 4), np.uint8), optimizer="rmsprop"),
     ValueError, "`optimizer`"),
    (lambda: D.BitflipDTM((3, 4), T=2).step_model(1.0), TypeError, "`t`"),
    (lambda: D.forward_transition(bitflip_schedule(3), 2, 1), ValueError, "`s`"),
    (lambda: D.forward_transition(bitflip_schedule(3), 0, 4), ValueError, "`t`"),
    (lambda: P.image_grid(np.zeros((2, 3, 3)), ncols=0), ValueError, "`ncols`"),
    (lambda: P.sample_grid_figure({}), ValueError, "`panels`"),
])
def test_options_validated_at_the_boundary(call, exc, match):
    """Options go through arraygen._validation: 2.5 is a TypeError, not truncated to 2."""
    with pytest.raises(exc, match=match):
        call()


def test_training_and_sampling_loops_do_not_revalidate(monkeypatch):
    """Spins are checked once at the boundary; the loops call the trusted cores only (no
    per-iteration host synchronisation for validation)."""
    from arraygen import gibbs

    calls = []
    real = D._check_spins
    monkeypatch.setattr(D, "_check_spins", lambda s, name: (calls.append(name), real(s, name)))
    # the loops' Gibbs sweeps go through gibbs' private core (no spin-value check per call)
    cores = []
    real_core = D._gibbs_core
    monkeypatch.setattr(D, "_gibbs_core", lambda *a, **k: (cores.append(1), real_core(*a, **k))[1])
    monkeypatch.setattr(gibbs, "gibbs_sweeps", lambda *a, **k: calls.append("gibbs_sweeps"))
    # and the PCD moments through gibbs' private moments core (no public `moments` per step)
    moment_cores = []
    real_moments = D._moments_core
    monkeypatch.setattr(D, "_moments_core", lambda *a, **k: (moment_cores.append(1),
                                                             real_moments(*a, **k))[1])
    monkeypatch.setattr(gibbs, "moments", lambda *a, **k: calls.append("moments"))
    monkeypatch.setattr(gibbs, "_check_spin_values",
                        lambda *a, **k: calls.append("_check_spin_values"))
    images = (np.random.default_rng(0).random((6, 3, 4)) < 0.5).astype(np.uint8)
    model = D.BitflipDTM((3, 4), T=2)
    model.fit(images, iters=3, chains=4, pcd_k=1, rng=0, backend=AA)
    model.sample(3, sweeps=1, rng=1, backend=AA)
    assert calls == [] and len(cores) == 3 + model.T
    assert len(moment_cores) == 2 * 3                   # data and chains, per iteration
    model.reverse_step(np.ones((2, 1, 3, 4)), 1, sweeps=1, rng=0, backend=AA)
    assert calls == ["s_t"]
