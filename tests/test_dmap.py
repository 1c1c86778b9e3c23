"""DiffusionMap against dense float64 oracles (eigenpairs, Nystrom, carre du champ, Doob)."""

from __future__ import annotations

import numpy as np
import pytest

from arraygen import _array_api as aa
from arraygen.datasets import swiss_roll, two_moons
from arraygen.dmap import DiffusionMap
from arraygen.tiled import kernel_matvec


# ------------------------------------------------------------------------------ dense oracle
def _dense(x, alpha, *, eps=None, inv_bw=None):
    """Dense float64 Coifman-Lafon operator: dict with K, D, w, Da, P, M."""
    x = np.asarray(x, dtype=np.float64)
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    k = np.exp(-d2 / eps) if inv_bw is None else np.exp(-d2 * np.outer(inv_bw, inv_bw))
    deg = k.sum(1)
    w = deg ** -alpha
    ka = w[:, None] * k * w[None, :]
    da = ka.sum(1)
    return {"K": k, "D": deg, "w": w, "Da": da, "P": ka / da[:, None],
            "M": ka / np.sqrt(np.outer(da, da))}


def _top_eig(m, k):
    lam, phi = np.linalg.eigh(m)
    return lam[::-1][:k], phi[:, ::-1][:, :k]


def _sin_angle(u, v):
    qu, _ = np.linalg.qr(u)
    qv, _ = np.linalg.qr(v)
    return float(np.linalg.norm(qv - qu @ (qu.T @ qv), 2))


def _roll(n, seed=0):
    x, t = swiss_roll(n, noise=0.05, rng=seed)
    return x, t


def _np(a):
    return np.asarray(aa.to_numpy(a), dtype=np.float64)


# ------------------------------------------------------------------------ eigenpairs vs dense
def test_fit_matches_dense_on_every_namespace(xp):
    xn, _ = _roll(180)
    x = xp.asarray(xn)
    dm = DiffusionMap(n_components=5, rng=1).fit(x)
    for attr in ("eigenvalues_", "eigenvectors_", "embedding_", "residuals_", "stationary_"):
        arr = getattr(dm, attr)
        assert aa.array_namespace(arr) is aa.array_namespace(x), attr
        assert aa.device(arr) == xp.device and arr.dtype == x.dtype, attr
    assert tuple(dm.eigenvalues_.shape) == (6,)
    assert tuple(dm.eigenvectors_.shape) == (180, 6)
    assert tuple(dm.embedding_.shape) == (180, 5)
    ref = _dense(xn, 0.5, eps=dm.epsilon_)
    lam_ref, phi_ref = _top_eig(ref["M"], 6)
    lam, psi = _np(dm.eigenvalues_), _np(dm.eigenvectors_)
    np.testing.assert_allclose(lam, lam_ref, atol=1e-9)
    assert abs(lam[0] - 1.0) < 1e-12 and np.all(np.diff(lam) <= 0)
    np.testing.assert_allclose(psi[:, 0], 1.0, atol=1e-9)           # psi_0 constant
    assert _sin_angle(psi[:, 1:], phi_ref[:, 1:] / np.sqrt(ref["Da"])[:, None]) < 1e-6
    resid = np.linalg.norm(ref["P"] @ psi - psi * lam, axis=0)       # right eigenvectors of P
    assert resid.max() < 1e-7
    pi = ref["Da"] / ref["Da"].sum()
    np.testing.assert_allclose(psi.T @ (pi[:, None] * psi), np.eye(6), atol=1e-8)
    np.testing.assert_allclose(_np(dm.stationary_), pi, rtol=1e-10)
    # reported residuals are ||P psi - lambda psi||_pi
    rep = np.sqrt((pi[:, None] * (ref["P"] @ psi - psi * lam) ** 2).sum(0))
    np.testing.assert_allclose(_np(dm.residuals_), rep, rtol=0.05, atol=1e-13)
    np.testing.assert_allclose(_np(dm.embedding_), psi[:, 1:] * lam[1:], rtol=1e-12)
    # deterministic signs: the largest-magnitude entry of each psi_k is positive
    idx = np.argmax(np.abs(psi), axis=0)
    assert np.all(psi[idx, np.arange(6)] > 0)


@pytest.mark.parametrize("solver", ["arpack", "lanczos", "dense"])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_solvers_agree_with_dense(solver, alpha):
    xn, _ = _roll(150, seed=2)
    dm = DiffusionMap(n_components=4, alpha=alpha, epsilon=30.0, eigensolver=solver,
                      rng=0).fit(xn)
    assert dm.eigensolver_ == solver and dm.converged_
    ref = _dense(xn, alpha, eps=30.0)
    lam_ref, phi_ref = _top_eig(ref["M"], 5)
    np.testing.assert_allclose(dm.eigenvalues_, lam_ref, atol=1e-9)
    assert _sin_angle(dm.eigenvectors_sym_, phi_ref) < 1e-6
    assert dm.residuals_.max() < 1e-7


def test_block_lanczos_fewer_wider_kernel_calls():
    xn, _ = _roll(200, seed=15)
    one = DiffusionMap(n_components=5, eigensolver="lanczos", block_size=1, rng=0).fit(xn)
    blk = DiffusionMap(n_components=5, eigensolver="lanczos", block_size=3, rng=0).fit(xn)
    np.testing.assert_allclose(blk.eigenvalues_, one.eigenvalues_, atol=1e-10)
    assert _sin_angle(blk.eigenvectors_, one.eigenvectors_) < 1e-5
    assert blk.n_kernel_calls_ < one.n_kernel_calls_


def test_t_scales_embedding():
    xn, _ = _roll(120, seed=3)
    a = DiffusionMap(n_components=3, t=1, rng=0).fit(xn)
    b = DiffusionMap(n_components=3, t=3, rng=0).fit(xn)
    np.testing.assert_allclose(b.embedding_, a.eigenvectors_[:, 1:] * a.eigenvalues_[1:] ** 3,
                               rtol=1e-7, atol=1e-12)


def test_float32_input():
    xn, _ = _roll(200, seed=4)
    dm = DiffusionMap(n_components=4, rng=0, eigensolver="lanczos").fit(xn.astype(np.float32))
    assert dm.eigenvalues_.dtype == np.float32 and dm.embedding_.dtype == np.float32
    ref = _dense(xn.astype(np.float32).astype(np.float64), 0.5, eps=float(dm.epsilon_))
    np.testing.assert_allclose(dm.eigenvalues_, _top_eig(ref["M"], 5)[0], atol=2e-6)


# --------------------------------------------------------------- FlashDiffusion's own cases
def _fd_data(n):
    """FlashDiffusion's test data: a 3-D swiss-roll-like set divided by its std."""
    x, _ = swiss_roll(n, noise=0.05, rng=7)
    return x / x.std()


@pytest.mark.parametrize("n", [150])
def test_prepass_row_sums(n):
    x = _fd_data(n)
    dm = DiffusionMap(n_components=3, epsilon=1.0, rng=0).fit(x)
    ref = _dense(x, 0.5, eps=1.0)
    np.testing.assert_allclose(dm.degree_, ref["D"], rtol=1e-12)
    np.testing.assert_allclose(dm.degree_alpha_, ref["Da"], rtol=1e-12)


@pytest.mark.parametrize("beta,alpha", [(1.0, 0.5), (0.5, 0.0), (2.0, 1.0)])
def test_tiled_operator_matches_dense_m(beta, alpha, rng):
    x = _fd_data(150)
    dm = DiffusionMap(n_components=3, alpha=alpha, epsilon=1.0 / beta, rng=0).fit(x)
    v = rng.standard_normal(150)
    mv = kernel_matvec(dm.X_, dm.X_, v, beta=beta, row_scale=dm.rscale_, col_scale=dm.rscale_)
    ref = _dense(x, alpha, eps=1.0 / beta)
    np.testing.assert_allclose(mv, ref["M"] @ v, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(dm.apply_markov(v), ref["P"] @ v, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("n", [150, 300])
def test_eigenvalues_within_1e_5(n):
    x = _fd_data(n)
    dm = DiffusionMap(n_components=5, epsilon=1.0, rng=0).fit(x)
    lam_ref = _top_eig(_dense(x, 0.5, eps=1.0)["M"], 6)[0]
    np.testing.assert_allclose(dm.eigenvalues_, lam_ref, rtol=1e-5)
    assert dm.embedding_.shape == (n, 5)


# ------------------------------------------------------------------------------- Nystrom
def test_nystrom_reproduces_training_coordinates(xp):
    xn, _ = _roll(160, seed=5)
    x = xp.asarray(xn)
    dm = DiffusionMap(n_components=4, t=2, rng=0).fit(x)
    out = dm.transform(x)
    assert aa.array_namespace(out) is aa.array_namespace(x) and out.dtype == x.dtype
    np.testing.assert_allclose(_np(out), _np(dm.embedding_), atol=1e-8)


def test_nystrom_new_points_match_dense_formula():
    xn, _ = _roll(200, seed=6)
    dm = DiffusionMap(n_components=4, rng=0).fit(xn)
    new = _roll(17, seed=9)[0] + np.array([0.0, 0.0, 50.0]) * np.r_[np.zeros(16), 1.0][:, None]
    out = dm.transform(new)
    mean = xn.mean(0)
    d2 = (((new - mean)[:, None, :] - (xn - mean)[None, :, :]) ** 2).sum(-1)
    kw = np.exp(-d2 / dm.epsilon_) * dm.weights_[None, :]
    lam, psi = dm.eigenvalues_[1:], dm.eigenvectors_[:, 1:]
    expected = (kw @ psi) / kw.sum(1, keepdims=True) / lam * lam
    np.testing.assert_allclose(out[:16], expected[:16], rtol=1e-9, atol=1e-12)
    assert np.all(np.isfinite(out))   # the far point (weights underflow) is still finite


def test_knn_bandwidth_matches_dense_and_nystrom():
    xn, _ = _roll(150, seed=8)
    dm = DiffusionMap(n_components=4, epsilon="knn", n_neighbors=6, rng=0).fit(xn)
    d = np.sqrt(((xn[:, None, :] - xn[None, :, :]) ** 2).sum(-1))
    sigma = np.sort(d, axis=1)[:, 5]                        # 6th smallest, self included
    np.testing.assert_allclose(dm.epsilon_, sigma ** 2, rtol=1e-10)
    ref = _dense(xn, 0.5, inv_bw=1.0 / sigma)
    np.testing.assert_allclose(dm.eigenvalues_, _top_eig(ref["M"], 5)[0], atol=1e-9)
    np.testing.assert_allclose(dm.transform(xn), dm.embedding_, atol=1e-8)


def test_median_epsilon_convention():
    xn, _ = _roll(300, seed=0)   # data from seed 0: the subsample stream must not follow it
    dm = DiffusionMap(n_components=2, rng=0).fit(xn)
    d2 = ((xn[:, None, :] - xn[None, :, :]) ** 2).sum(-1)
    assert dm.epsilon_ == pytest.approx(np.median(d2[np.triu_indices(300, 1)]), rel=1e-12)
    sub = DiffusionMap(n_components=2, median_points=120, rng=0).fit(xn)
    again = DiffusionMap(n_components=2, median_points=120, rng=5).fit(xn)
    assert sub.epsilon_ == again.epsilon_                   # fixed subsample, reproducible
    assert sub.epsilon_ == pytest.approx(dm.epsilon_, rel=0.15)


# ------------------------------------------------------------------------ carre du champ
def test_carre_du_champ_matches_dense(xp):
    xn, _ = _roll(140, seed=11)
    x = xp.asarray(xn)
    dm = DiffusionMap(n_components=3, rng=0).fit(x)
    p = _dense(xn, 0.5, eps=dm.epsilon_)["P"]
    rng = np.random.default_rng(1)
    f, g = np.sin(xn[:, 0]), rng.standard_normal(140)
    expected_fg = 0.5 * (p * (f[None, :] - f[:, None]) * (g[None, :] - g[:, None])).sum(1)
    expected_ff = 0.5 * (p * (f[None, :] - f[:, None]) ** 2).sum(1)
    got_fg = dm.carre_du_champ(xp.asarray(f), xp.asarray(g))
    got_ff = dm.carre_du_champ(xp.asarray(f))
    assert aa.array_namespace(got_ff) is aa.array_namespace(x)
    np.testing.assert_allclose(_np(got_fg), expected_fg, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(_np(got_ff), expected_ff, rtol=1e-8, atol=1e-12)
    assert np.all(_np(got_ff) >= 0)
    # constant functions have zero carre du champ (clipped round-off, never negative)
    c = xp.asarray(np.full(140, 3.0))
    for const in (dm.carre_du_champ(c), dm.carre_du_champ(c, c)):
        assert np.all(_np(const) >= 0) and np.max(_np(const)) < 1e-12


def test_metric_tensor_matches_dense():
    xn, _ = _roll(130, seed=12)
    dm = DiffusionMap(n_components=3, rng=0).fit(xn)
    g = dm.metric_tensor()
    assert g.shape == (130, 3, 3)
    p = _dense(xn, 0.5, eps=dm.epsilon_)["P"]
    y = dm.embedding_
    for a in range(3):
        for b in range(3):
            da = y[None, :, a] - y[:, None, a]
            db = y[None, :, b] - y[:, None, b]
            np.testing.assert_allclose(g[:, a, b], 0.5 * (p * da * db).sum(1), rtol=1e-7,
                                       atol=1e-13)
    assert np.all(np.linalg.eigvalsh(g) > -1e-12)
    sub = dm.metric_tensor([2, 0])
    np.testing.assert_allclose(sub[:, 0, 1], g[:, 2, 0], rtol=1e-12)


# ---------------------------------------------------------------------------------- Doob
def test_doob_eigenvalues_match_dense_p_h(xp):
    xn, _ = _roll(150, seed=13)
    x = xp.asarray(xn)
    dm = DiffusionMap(n_components=4, rng=0).fit(x)
    hn = np.exp(-((xn - xn.mean(0)) ** 2).sum(1) / 200.0)
    doob = dm.doob(xp.asarray(hn))
    p = _dense(xn, 0.5, eps=dm.epsilon_)["P"]
    ph = (p * hn[None, :]) / (p @ hn)[:, None]
    np.testing.assert_allclose(ph.sum(1), 1.0, rtol=1e-12)
    ev = np.sort(np.linalg.eigvals(ph).real)[::-1][:5]
    lam = _np(doob.eigenvalues_)
    np.testing.assert_allclose(lam, ev, atol=1e-9)
    psi = _np(doob.eigenvectors_)
    np.testing.assert_allclose(psi[:, 0], 1.0, atol=1e-8)
    rel = np.linalg.norm(ph @ psi - psi * lam, axis=0) / np.linalg.norm(psi, axis=0)
    assert rel.max() < 1e-7
    assert aa.array_namespace(doob.eigenvalues_) is aa.array_namespace(x)
    # P^h applied through the object equals the dense matrix
    v = np.cos(xn[:, 1])
    np.testing.assert_allclose(_np(doob.apply_markov(xp.asarray(v))), ph @ v, rtol=1e-10)
    # h = 1 is the identity transform
    same = dm.doob(xp.asarray(np.ones(150)))
    np.testing.assert_allclose(_np(same.eigenvalues_), _np(dm.eigenvalues_), atol=1e-9)


# ------------------------------------------------------------------------- warnings, errors
def test_disconnected_graph_warns():
    a, _ = two_moons(60, noise=0.02, rng=0)
    x = np.concatenate([a, a + 100.0])
    with pytest.warns(UserWarning, match="disconnected"):
        dm = DiffusionMap(n_components=3, epsilon=0.5, rng=0).fit(x)
    assert dm.eigenvalues_[1] > 1 - 1e-6


def test_partially_duplicated_data_floors_epsilon():
    x = np.zeros((100, 2))
    x = np.concatenate([x, np.random.default_rng(0).standard_normal((20, 2))])
    with pytest.warns(UserWarning, match="floor"):
        dm = DiffusionMap(n_components=2, rng=0).fit(x)
    assert dm.epsilon_ > 0 and np.all(np.isfinite(dm.embedding_))


def test_bad_inputs():
    xn, _ = _roll(60)
    with pytest.raises(ValueError, match="`epsilon` must be one of 'median', 'knn'"):
        DiffusionMap(epsilon="silverman")
    with pytest.raises(ValueError, match="`epsilon` must be positive"):
        DiffusionMap(epsilon=-1.0)
    with pytest.raises(ValueError, match=r"`alpha` must be <= 1.0"):
        DiffusionMap(alpha=1.5)
    with pytest.raises(ValueError, match="`n_components` must be >= 1"):
        DiffusionMap(n_components=0)
    with pytest.raises(ValueError, match="`eigensolver` must be one of"):
        DiffusionMap(eigensolver="magic")
    dm = DiffusionMap(n_components=3, rng=0)
    dm.alpha = -0.1
    with pytest.raises(ValueError, match="`alpha`"):
        dm.fit(xn)
    with pytest.raises(ValueError, match="all 10 points coincide"):
        DiffusionMap(n_components=2).fit(np.ones((10, 3)))
    with pytest.raises(ValueError, match="all 10 points coincide"):
        DiffusionMap(n_components=2, epsilon="knn").fit(np.ones((10, 3)))
    bad = xn.copy()
    bad[3, 1] = np.nan
    bad[7, 0] = np.inf
    with pytest.raises(ValueError, match="`X` contains 2 non-finite"):
        DiffusionMap(n_components=2).fit(bad)
    with pytest.raises(ValueError, match="`n_components`.*smaller than the number of points"):
        DiffusionMap(n_components=60).fit(xn)
    with pytest.raises(ValueError, match=r"`X` must have shape \(N, d\)"):
        DiffusionMap().fit(xn[None])
    with pytest.raises(ValueError, match="not fitted"):
        DiffusionMap().transform(xn)
    dm = DiffusionMap(n_components=3, rng=0).fit(xn)
    with pytest.raises(ValueError, match=r"`X_new` must have 3 columns.*shape \(5, 2\)"):
        dm.transform(xn[:5, :2])
    with pytest.raises(ValueError, match="`X_new` contains 1 non-finite"):
        dm.transform(bad[:5])
    with pytest.raises(ValueError, match="`h` must be positive"):
        dm.doob(-np.ones(60))
    with pytest.raises(ValueError, match="`h` contains 1 non-finite"):
        dm.doob(np.r_[np.nan, np.ones(59)])
    with pytest.raises(ValueError, match=r"`h` must have shape \(60,\)"):
        dm.doob(np.ones(59))
    with pytest.raises(ValueError, match="`f` and `g` must have the same shape"):
        dm.carre_du_champ(np.ones(60), np.ones((60, 2)))
    with pytest.raises(ValueError, match="`components`"):
        dm.metric_tensor([3])
    with pytest.raises(ValueError, match="`f` contains 1 non-finite"):
        dm.carre_du_champ(np.r_[np.nan, np.ones(59)])
    with pytest.raises(ValueError, match="`v` contains 1 non-finite"):
        dm.apply_markov(np.r_[np.inf, np.ones(59)])
    with pytest.raises(ValueError, match="`n_neighbors`"):
        DiffusionMap(n_components=2, epsilon="knn", n_neighbors=61).fit(xn)
    with pytest.raises(ValueError, match="`eigensolver`='cupy' needs CuPy"):
        DiffusionMap(n_components=2, eigensolver="cupy").fit(xn)
    with pytest.raises(TypeError, match="`X` must be an array"):
        DiffusionMap().fit("points")


def test_issue13_option_findings():
    """median_points 0/1/-3/2.5, epsilon=1e-320 and friends: errors naming the option."""
    xn, _ = _roll(60)
    for bad in (0, 1, -3):
        with pytest.raises(ValueError, match="`median_points` must be >= 2"):
            DiffusionMap(median_points=bad)
    with pytest.raises(TypeError, match="`median_points` must be an integer; got 2.5"):
        DiffusionMap(median_points=2.5)
    with pytest.raises(ValueError, match="`epsilon` = 1e-320 is too small"):
        DiffusionMap(epsilon=1e-320)
    # float32 data: 1/epsilon beyond float32's range names epsilon too (not `beta`)
    with pytest.raises(ValueError, match="`epsilon` \\(1/epsilon\\)"):
        DiffusionMap(n_components=2, epsilon=1e-40).fit(xn.astype(np.float32))
    with pytest.raises(TypeError, match="`n_neighbors` must be an integer"):
        DiffusionMap(n_neighbors=2.5)
    with pytest.raises(ValueError, match="`n_neighbors` must be >= 2"):
        DiffusionMap(n_neighbors=1)
    with pytest.raises(TypeError, match="`n_components` must be an integer"):
        DiffusionMap(n_components=True)
    with pytest.raises(TypeError, match="`n_components` must be an integer"):
        DiffusionMap(n_components=3.0)
    with pytest.raises(ValueError, match="`block_size` must be >= 1"):
        DiffusionMap(block_size=0)
    with pytest.raises(TypeError, match="`tol` must be a real number"):
        DiffusionMap(tol="small")
    with pytest.raises(ValueError, match="`kernel_dtype`"):
        DiffusionMap(kernel_dtype="int8")
    with pytest.raises(ValueError, match="`bandwidth_type`"):
        DiffusionMap(bandwidth_type="__import__('os')")
    with pytest.raises(ValueError, match="'knn' is itself a variable bandwidth"):
        DiffusionMap(epsilon="knn", bandwidth_type=-0.25)
    dm = DiffusionMap(n_components=2, rng=0).fit(xn)
    with pytest.raises(TypeError, match="`n_components` must be an integer"):
        dm.doob(np.ones(60), n_components=1.5)
    with pytest.raises(ValueError, match="`n_components`.*smaller than the number of points"):
        dm.doob(np.ones(60), n_components=60)
    # median_points = 2 is the smallest that defines a median of pairs
    small = DiffusionMap(n_components=2, median_points=2, rng=0).fit(xn)
    assert small.epsilon_ > 0 and small.converged_


def test_one_dimensional_cloud_is_n_points(xp):
    """(N,) means N points on a line, as everywhere in arraygen (issue 13)."""
    xn = np.sort(np.random.default_rng(3).uniform(0.0, 4.0, 90))
    one = DiffusionMap(n_components=3, epsilon=0.3, rng=0).fit(xp.asarray(xn))
    two = DiffusionMap(n_components=3, epsilon=0.3, rng=0).fit(xp.asarray(xn[:, None]))
    np.testing.assert_allclose(_np(one.eigenvalues_), _np(two.eigenvalues_), atol=1e-12)
    ref = _top_eig(_dense(xn[:, None], 0.5, eps=0.3)["M"], 4)[0]
    np.testing.assert_allclose(_np(one.eigenvalues_), ref, atol=1e-9)
    np.testing.assert_allclose(_np(one.transform(xp.asarray(xn[:7]))),
                               _np(one.embedding_)[:7], atol=1e-7)


def test_mixed_namespaces_raise():
    import torch

    xn, _ = _roll(80)
    dm = DiffusionMap(n_components=2, rng=0).fit(xn)
    with pytest.raises(TypeError, match="different namespaces"):
        dm.transform(torch.from_numpy(xn))


# ------------------------------------------------------------------------------- datasets
def test_datasets_same_numbers_on_every_namespace(xp):
    x_ref, t_ref = swiss_roll(50, rng=3)
    x, t = swiss_roll(50, rng=3, xp=xp.namespace, device=xp.device)
    assert aa.device(x) == xp.device and tuple(x.shape) == (50, 3)
    np.testing.assert_allclose(_np(x), x_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(_np(t), t_ref, rtol=1e-12)
    assert t_ref.min() >= 1.5 * np.pi and t_ref.max() <= 4.5 * np.pi
    clean, tc = swiss_roll(50, noise=0.0, rng=3)
    np.testing.assert_allclose(clean[:, 0], tc * np.cos(tc), rtol=1e-12)
    np.testing.assert_allclose(clean[:, 2], tc * np.sin(tc), rtol=1e-12)
    pts, lab = two_moons(51, noise=0.0, rng=1, xp=xp.namespace, device=xp.device)
    pts, lab = _np(pts), np.asarray(aa.to_numpy(lab))
    assert lab.sum() == 25
    up, lo = pts[lab == 0], pts[lab == 1]
    np.testing.assert_allclose((up ** 2).sum(1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(((lo - [1.0, 0.5]) ** 2).sum(1), 1.0, rtol=1e-12)
    with pytest.raises(ValueError, match="`n` must be >= 1"):
        swiss_roll(0)
    with pytest.raises(ValueError, match="`noise` must be non-negative"):
        two_moons(10, noise=-1.0)


def test_float32_kernel_on_float64_data():
    xn, _ = _roll(220, seed=14)
    dm = DiffusionMap(n_components=4, kernel_dtype="float32", rng=0).fit(xn)
    assert dm.eigenvalues_.dtype == np.float64
    ref = _dense(xn, 0.5, eps=dm.epsilon_)
    np.testing.assert_allclose(dm.eigenvalues_, _top_eig(ref["M"], 5)[0], atol=1e-6)
    assert dm.residuals_.max() < 1e-5
    with pytest.raises(ValueError, match="`kernel_dtype`"):
        DiffusionMap(n_components=2, kernel_dtype="int8").fit(xn)


# ------------------------------------------------- repeated eigenvalues (issue 15), every path
def _circle(n=160):
    t = 2.0 * np.pi * np.arange(n) / n
    return np.c_[np.cos(t), np.sin(t)]


def _latlon_sphere(n_lat=9, n_lon=18):
    """pyDiffMap's sphere (geographic coordinates, latitude from the equator) on a regular
    latitude-longitude grid: rotations by 2 pi / n_lon and z -> -z are exact symmetries."""
    lat = (np.arange(n_lat) + 0.5) / n_lat * np.pi - 0.5 * np.pi
    lon = 2.0 * np.pi * np.arange(n_lon) / n_lon - np.pi
    th, ph = np.meshgrid(lat, lon, indexing="ij")
    th, ph = th.ravel(), ph.ravel()
    return np.c_[np.cos(th) * np.cos(ph), np.cos(th) * np.sin(ph), np.sin(th)]


def _torus(n=12):
    """Flat torus grid in R^4: the (1, 0) and (0, 1) modes give eigenvalues of multiplicity 4."""
    a = 2.0 * np.pi * np.arange(n) / n
    th, ph = np.meshgrid(a, a, indexing="ij")
    th, ph = th.ravel(), ph.ravel()
    return np.c_[np.cos(th), np.sin(th), np.cos(ph), np.sin(ph)]


_SYMMETRIC = {"circle": (_circle, 1.0, 0.04), "sphere": (_latlon_sphere, 0.5, 0.3),
              "torus": (_torus, 0.5, 1.0)}


def _gap_k(lam, kmax=9):
    """Largest k <= kmax with a spectral gap after the k-th eigenvalue (unique subspace)."""
    for k in range(kmax, 1, -1):
        if lam[k - 1] - lam[k] > 1e-6:
            return k
    raise AssertionError("no gap")


def _solver_cases(xp):
    cases = [("auto", {}), ("lanczos", {"dense_kernel_mb": 0})]
    if xp.name == "numpy":
        cases += [("arpack", {"dense_kernel_mb": 0}), ("lanczos", {}), ("dense", {}),
                  ("lanczos", {"dense_kernel_mb": 0, "block_size": 1})]
    return cases


@pytest.mark.parametrize("shape", sorted(_SYMMETRIC))
def test_repeated_eigenvalues_every_solver(xp, shape):
    make, alpha, eps = _SYMMETRIC[shape]
    xn = make()
    ref = _dense(xn, alpha, eps=eps)
    lam_all, phi_all = np.linalg.eigh(ref["M"])
    lam_all, phi_all = lam_all[::-1], phi_all[:, ::-1]
    k = _gap_k(lam_all)
    mult = np.max(np.unique(np.round(lam_all[:k], 9), return_counts=True)[1])
    assert mult >= 2                                    # the data has repeated eigenvalues
    for solver, extra in _solver_cases(xp):
        dm = DiffusionMap(n_components=k - 1, alpha=alpha, epsilon=eps, eigensolver=solver,
                          rng=0, **extra).fit(xp.asarray(xn))
        what = f"{shape} {solver} {extra}"
        lam = _np(dm.eigenvalues_)
        np.testing.assert_allclose(lam, lam_all[:k], atol=1e-9, err_msg=what)
        assert _sin_angle(_np(dm.eigenvectors_sym_), phi_all[:, :k]) < 1e-6, what
        assert dm.converged_, what
        assert _np(dm.residuals_).max() < 1e-7, what


def test_issue15_circle_example():
    t = 2 * np.pi * np.arange(200) / 200
    x = np.c_[np.cos(t), np.sin(t)]
    for solver, extra in (("auto", {}), ("arpack", {"dense_kernel_mb": 0}),
                          ("lanczos", {"block_size": 1, "dense_kernel_mb": 0})):
        dm = DiffusionMap(n_components=4, alpha=1.0, epsilon=0.04, rng=0, eigensolver=solver,
                          **extra).fit(x)
        np.testing.assert_allclose(dm.eigenvalues_, [1, .98994897, .98994897, .96040204,
                                                     .96040204], atol=1e-8)
        # the 2-D embedding is a circle (cos t, sin t up to rotation), not a parabola
        r = np.hypot(dm.embedding_[:, 0], dm.embedding_[:, 1])
        assert r.std() / r.mean() < 1e-6


@pytest.mark.parametrize("shape", ["sphere", "torus"])
def test_doob_repeated_eigenvalues(xp, shape):
    """h = exp(0.3 x_0) keeps the rotations about one axis: doubled eigenvalues of P^h."""
    make, alpha, eps = _SYMMETRIC[shape]
    xn = make()
    ref = _dense(xn, alpha, eps=eps)
    hn = np.exp(0.3 * xn[:, 2 if shape == "sphere" else 0])
    ka = ref["w"][:, None] * ref["K"] * ref["w"][None, :]
    g = ka @ hn
    s = np.sqrt(hn / g)
    lam_all = np.linalg.eigvalsh(s[:, None] * ka * s[None, :])[::-1]
    k = _gap_k(lam_all)
    assert np.any(np.abs(np.diff(lam_all[:k])) < 1e-9)
    for solver, extra in _solver_cases(xp)[:3]:
        dm = DiffusionMap(n_components=2, alpha=alpha, epsilon=eps, eigensolver=solver, rng=0,
                          **extra).fit(xp.asarray(xn))
        doob = dm.doob(xp.asarray(hn), n_components=k - 1)
        np.testing.assert_allclose(_np(doob.eigenvalues_), lam_all[:k], atol=1e-9,
                                   err_msg=f"{solver} {extra}")
        assert doob.converged_


def test_dense_kernel_path_equals_tiled_path():
    xn, _ = _roll(300, seed=21)
    dense = DiffusionMap(n_components=5, rng=0).fit(xn)
    tiled = DiffusionMap(n_components=5, rng=0, dense_kernel_mb=0).fit(xn)
    assert dense.kernel_storage_ == "dense" and tiled.kernel_storage_ == "tiled"
    np.testing.assert_allclose(dense.degree_, tiled.degree_, rtol=1e-12)
    np.testing.assert_allclose(dense.eigenvalues_, tiled.eigenvalues_, atol=1e-10)
    assert _sin_angle(dense.eigenvectors_, tiled.eigenvectors_) < 1e-6
    np.testing.assert_allclose(dense.transform(xn[:9]), tiled.transform(xn[:9]), atol=1e-8)
    v = np.cos(xn[:, 0])
    np.testing.assert_allclose(dense.apply_markov(v), tiled.apply_markov(v), rtol=1e-11)


def test_doob_transform_nystrom(xp):
    """Out-of-sample extension of the h-transformed map: reproduces the fitted coordinates and
    matches the dense P^h formula at new points."""
    xn, _ = _roll(150, seed=13)
    dm = DiffusionMap(n_components=3, t=2, rng=0).fit(xp.asarray(xn))
    hn = np.exp(-((xn - xn.mean(0)) ** 2).sum(1) / 200.0)
    doob = dm.doob(xp.asarray(hn))
    np.testing.assert_allclose(_np(doob.transform(xp.asarray(xn))), _np(doob.embedding_),
                               atol=1e-7)
    new = _roll(11, seed=4)[0]
    out = _np(doob.transform(xp.asarray(new)))
    mean = xn.mean(0)
    d2 = (((new - mean)[:, None, :] - (xn - mean)[None, :, :]) ** 2).sum(-1)
    kwh = np.exp(-d2 / dm.epsilon_) * _np(dm.weights_)[None, :] * hn[None, :]
    lam, psi = _np(doob.eigenvalues_)[1:], _np(doob.eigenvectors_)[:, 1:]
    expected = (kwh @ psi) / kwh.sum(1, keepdims=True) / lam * lam ** 2
    np.testing.assert_allclose(out, expected, rtol=1e-8, atol=1e-11)


def test_repeated_eigenvalues_float32(xp):
    """float32 data: both copies of each doubled circle eigenvalue, to float32 accuracy."""
    x = _circle(200)
    ref = np.linalg.eigvalsh(_dense(x, 1.0, eps=0.04)["M"])[::-1][:5]
    for extra in ({}, {"dense_kernel_mb": 0}):
        dm = DiffusionMap(n_components=4, alpha=1.0, epsilon=0.04, rng=0,
                          **extra).fit(xp.asarray(x.astype(np.float32)))
        assert dm.eigenvalues_.dtype == xp.float32
        np.testing.assert_allclose(_np(dm.eigenvalues_), ref, atol=2e-6)
        assert dm.converged_


@pytest.mark.parametrize("solver", ["arpack", "lanczos"])
def test_tiny_problems_every_solver(solver):
    """k = N - 1 and k close to N: no scipy 'ncv must be k<ncv<=n' error, dense-exact answers."""
    x = np.random.default_rng(0).standard_normal((10, 2))
    ref = _top_eig(_dense(x, 0.5, eps=1.0)["M"], 9)[0]
    for nc in (8, 6, 3):
        dm = DiffusionMap(n_components=nc, epsilon=1.0, eigensolver=solver, rng=0,
                          dense_kernel_mb=0).fit(x)
        np.testing.assert_allclose(dm.eigenvalues_, ref[:nc + 1], atol=1e-10)
        assert dm.converged_


@pytest.mark.parametrize("solver", ["arpack", "lanczos"])
def test_converged_false_when_a_missed_eigenvalue_remains(monkeypatch, solver):
    """A deflation check cut short (one pass, block 1) on the circle, where a single-vector
    solver misses two copies: converged_ is False and a RuntimeWarning says why."""
    import functools

    from arraygen import linalg

    monkeypatch.setattr(linalg, "_complete", functools.partial(linalg._complete, max_passes=1))
    xn = _circle(200)
    with pytest.warns(RuntimeWarning, match="missed"):
        dm = DiffusionMap(n_components=4, alpha=1.0, epsilon=0.04, eigensolver=solver,
                          block_size=1, rng=0, dense_kernel_mb=0).fit(xn)
    assert dm.converged_ is False


def test_knn_swiss_roll_clustered_spectrum_converges():
    """A k-NN bandwidth on a noisy swiss roll puts the top eigenvalues within 1e-3 of each
    other (1, 0.99928, 0.99746, ...): the Lanczos fit (and its deflation check) must still
    converge, to the float64 dense spectrum of the same operator."""
    import warnings

    x, _ = swiss_roll(1500, noise=0.05, rng=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # no "not converged" warning either
        dm = DiffusionMap(n_components=8, alpha=0.5, epsilon="knn", eigensolver="lanczos",
                          rng=0).fit(x)
    assert dm.converged_
    s = np.sqrt(np.asarray(dm.epsilon_))
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    k = np.exp(-d2 / (s[:, None] * s[None, :]))
    w = k.sum(1) ** -0.5
    ka = w[:, None] * k * w[None, :]
    r = ka.sum(1) ** -0.5
    want = np.linalg.eigvalsh(r[:, None] * ka * r[None, :])[::-1][:9]
    assert want[1] - want[8] < 0.02   # the clustered case this test is about
    np.testing.assert_allclose(np.asarray(dm.eigenvalues_), want, rtol=0, atol=1e-9)
