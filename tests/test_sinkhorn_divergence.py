"""Sinkhorn divergence (GeomLoss semantics): values and gradients against GeomLoss, finite
differences and the definition; use as a torch loss."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from arraygen.sinkhorn import ConvergenceWarning, sinkhorn, sinkhorn_divergence


def _clouds(seed=0, n=40, m=30):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 2)), rng.normal(1.0, 0.7, size=(m, 2))


def test_definition_from_three_sinkhorn_solves(xp):
    x, y = _clouds()
    eps = 0.3
    s = sinkhorn_divergence(xp.asarray(x), xp.asarray(y), epsilon=eps, tol=1e-11)
    ot = [sinkhorn(p, q, epsilon=eps, tol=1e-11, relaxation="auto").dual_value
          for p, q in ((x, y), (x, x), (y, y))]
    assert tuple(s.shape) == () and s.dtype == xp.float64
    assert float(s) == pytest.approx(ot[0] - 0.5 * (ot[1] + ot[2]), rel=1e-9)
    raw = sinkhorn_divergence(xp.asarray(x), xp.asarray(y), epsilon=eps, tol=1e-11,
                              debias=False)
    assert float(raw) == pytest.approx(ot[0], rel=1e-9)


def test_zero_on_the_diagonal_and_positive():
    x, y = _clouds(1)
    assert float(sinkhorn_divergence(y, y, epsilon=0.2)) == 0.0
    assert float(sinkhorn_divergence(x, y, epsilon=0.2)) > 0.0
    # positive even where the biased OT_eps(a, a) would not be zero
    assert float(sinkhorn_divergence(x, x + 1e-3, epsilon=5.0)) >= 0.0


@pytest.mark.parametrize("eps", [0.5, 0.1])
@pytest.mark.parametrize("debias", [True, False])
def test_values_and_gradients_match_geomloss(eps, debias):
    torch = pytest.importorskip("torch")
    geomloss = pytest.importorskip("geomloss")
    x, y = _clouds(2)
    xg, yg = (torch.tensor(v, requires_grad=True) for v in (x, y))
    # GeomLoss: cost |x - y|^2 / 2 and epsilon = blur^2; run (nearly) to convergence
    loss = geomloss.SamplesLoss("sinkhorn", p=2, blur=math.sqrt(eps / 2), scaling=0.999,
                                debias=debias, backend="tensorized")
    ref = loss(xg, yg)
    ref.backward()
    xa, ya = (torch.tensor(v, requires_grad=True) for v in (x, y))
    ours = sinkhorn_divergence(xa, ya, epsilon=eps, tol=1e-11, max_iter=20000, debias=debias)
    ours.backward()
    assert ours.item() == pytest.approx(2.0 * ref.item(), rel=2e-6)
    # GeomLoss's gradients come from its last annealed potentials (a fixed iteration count):
    # they approach ours as scaling -> 1 (2e-2, 5e-3, 1.5e-3 at 0.9, 0.99, 0.999); ours are
    # checked against finite differences below
    for mine, theirs in ((xa.grad, xg.grad), (ya.grad, yg.grad)):
        mine, theirs = mine.numpy(), 2.0 * theirs.numpy()
        assert np.abs(mine - theirs).max() <= 1e-2 * np.abs(mine).max()


def test_gradients_are_finite_differences():
    torch = pytest.importorskip("torch")
    x, y = _clouds(3, 20, 15)
    rng = np.random.default_rng(4)
    a = rng.random(20) + 0.2
    a /= a.sum()
    eps, h = 0.4, 1e-5
    xt, yt, at = (torch.tensor(v, requires_grad=True) for v in (x, y, a))
    s = sinkhorn_divergence(xt, yt, at, epsilon=eps, tol=1e-13, max_iter=50000)
    s.backward()

    def value(xv, yv, av):
        return float(sinkhorn_divergence(xv, yv, av, epsilon=eps, tol=1e-13, max_iter=50000))

    for arr, grad, idx in ((x, xt.grad, (2, 1)), (y, yt.grad, (7, 0))):
        fd = []
        for sgn in (1.0, -1.0):
            moved = arr.copy()
            moved[idx] += sgn * h
            fd.append(value(moved, y, a) if arr is x else value(x, moved, a))
        assert grad[idx].item() == pytest.approx((fd[0] - fd[1]) / (2 * h), rel=1e-5,
                                                 abs=1e-9)
    # weights: directional derivative along a mass-preserving direction
    direction = np.zeros(20)
    direction[[0, 5]] = 1.0, -1.0
    fd = (value(x, y, a + h * direction) - value(x, y, a - h * direction)) / (2 * h)
    assert float(at.grad.numpy() @ direction) == pytest.approx(fd, rel=1e-5, abs=1e-9)


def test_works_as_a_torch_loss():
    torch = pytest.importorskip("torch")
    x, y = _clouds(5, 64, 48)
    xt = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    yt = torch.tensor(y, dtype=torch.float32)
    opt = torch.optim.SGD([xt], lr=20.0)
    losses = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: intra-op threads only contend on a busy CI box
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for _ in range(10):
                opt.zero_grad()
                loss = sinkhorn_divergence(xt, yt, epsilon=0.1)
                assert loss.dtype == torch.float32 and loss.requires_grad
                loss.backward()
                opt.step()
                losses.append(loss.item())
    finally:
        torch.set_num_threads(threads)
    assert losses[-1] < 0.1 * losses[0]
    # no graph through the iterations: the loss's graph holds O(N + M) tensors
    assert loss.grad_fn is not None and len(loss.grad_fn.next_functions) <= 4


def test_cuda_tensors():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    x, y = _clouds(6)
    xt = torch.tensor(x, device="cuda", requires_grad=True)
    s = sinkhorn_divergence(xt, torch.tensor(y, device="cuda"), epsilon=0.2)
    s.backward()
    ref = sinkhorn_divergence(x, y, epsilon=0.2)
    assert s.device.type == "cuda" and s.item() == pytest.approx(float(ref), rel=1e-6)


def test_batched(xp):
    rng = np.random.default_rng(7)
    xs, ys = rng.normal(size=(3, 20, 2)), rng.normal(0.5, 1.0, size=(3, 25, 2))
    out = sinkhorn_divergence(xp.asarray(xs), xp.asarray(ys), epsilon=0.3)
    assert tuple(out.shape) == (3,)
    for k in range(3):
        assert float(out[k]) == pytest.approx(float(sinkhorn_divergence(xs[k], ys[k],
                                                                        epsilon=0.3)), rel=1e-12)


def test_bad_input():
    x, y = _clouds()
    with pytest.raises(ValueError, match="`epsilon` must be positive"):
        sinkhorn_divergence(x, y, epsilon=0.0)
    with pytest.raises(ValueError, match=r"`x` of shape \(40, 2\).*`y` of shape \(30, 3\)"):
        sinkhorn_divergence(x, np.ones((30, 3)), epsilon=0.1)
    with pytest.raises(ValueError, match=r"sum\(a\) = 2"):
        sinkhorn_divergence(x, y, np.full(40, 0.05), epsilon=0.1)
    with pytest.warns(ConvergenceWarning):
        sinkhorn_divergence(x, y, epsilon=0.01, max_iter=3, scaling=None)
