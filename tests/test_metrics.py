"""Image and distribution metrics against scikit-image, scipy and dense float64 formulas."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from arraygen import metrics as M
from arraygen.ot import sliced_wasserstein as ot_sliced_wasserstein
from arraygen.testing import assert_close


def _images(shape, seed=0, noise=0.05):
    rng = np.random.default_rng(seed)
    x = rng.random(shape)
    y = np.clip(x + noise * rng.standard_normal(shape), 0, 1)
    return x, y


def _sk_ssim(a, b, data_range):
    return structural_similarity(a, b, data_range=data_range, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False)


def _per_image(fn, x, y, **kw):
    lead = x.shape[:-2]
    flat_x = x.reshape((-1,) + x.shape[-2:])
    flat_y = y.reshape((-1,) + y.shape[-2:])
    return np.array([fn(a, b, **kw) for a, b in zip(flat_x, flat_y)]).reshape(lead)


def test_ssim_matches_skimage_float():
    x, y = _images((2, 3, 31, 26))
    got = M.ssim(x, y, data_range=1.0)
    assert got.shape == (2, 3)
    assert_close(got, _per_image(_sk_ssim, x, y, data_range=1.0), rtol=1e-12, atol=1e-12)
    # skimage's channel_axis result is the mean over our channel axis
    ref = structural_similarity(np.moveaxis(x[0], 0, -1), np.moveaxis(y[0], 0, -1),
                                data_range=1.0, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False, channel_axis=-1)
    assert abs(float(np.mean(got[0])) - ref) < 1e-12


def test_ssim_and_psnr_uint8_inferred_range():
    x, y = _images((3, 20, 24), seed=1, noise=0.1)
    xu, yu = (x * 255).astype(np.uint8), (y * 255).astype(np.uint8)
    assert_close(M.ssim(xu, yu), _per_image(_sk_ssim, xu, yu, data_range=255), rtol=1e-12,
                 atol=1e-12)
    assert_close(M.psnr(xu, yu), _per_image(peak_signal_noise_ratio, xu, yu), rtol=1e-12)
    # no uint8 wrap-around: mse of (0 - 255) is 255^2, not 1
    a = np.zeros((4, 4), np.uint8)
    b = np.full((4, 4), 255, np.uint8)
    assert float(M.mse(a, b)) == 255.0 ** 2
    assert float(M.mae(b, a)) == 255.0


def test_psnr_mse_mae_float():
    x, y = _images((4, 17, 19), seed=2)
    assert_close(M.psnr(x, y, data_range=1.0),
                 _per_image(peak_signal_noise_ratio, x, y, data_range=1.0), rtol=1e-12)
    assert_close(M.mse(x, y), _per_image(mean_squared_error, x, y), rtol=1e-12)
    assert_close(M.mae(x, y), np.abs(x - y).mean(axis=(-2, -1)), rtol=1e-12)
    same = M.psnr(x, x, data_range=1.0)
    assert np.all(np.isinf(same)) and np.all(same > 0)
    mixed = np.stack([x[0], y[0]])
    out = M.psnr(np.stack([x[0], x[0]]), mixed, data_range=1.0)
    assert np.isinf(out[0]) and np.isfinite(out[1])


def test_namespaces(xp):
    x, y = _images((2, 13, 14), seed=3)
    for dtype, tol in (("float64", 1e-12), ("float32", 2e-5)):
        xa, ya = xp.asarray(x, dtype=dtype), xp.asarray(y, dtype=dtype)
        s = M.ssim(xa, ya, data_range=1.0)
        p = M.psnr(xa, ya, data_range=1.0)
        assert s.dtype == xa.dtype and p.dtype == xa.dtype
        assert_close(s, _per_image(_sk_ssim, x, y, data_range=1.0), rtol=tol, atol=tol)
        assert_close(p, _per_image(peak_signal_noise_ratio, x, y, data_range=1.0), rtol=tol)
    xu, yu = (x * 255).astype(np.uint8), (y * 255).astype(np.uint8)
    assert_close(M.psnr(xp.asarray(xu), xp.asarray(yu)),
                 _per_image(peak_signal_noise_ratio, xu, yu), rtol=1e-6)
    assert_close(M.mse(xp.asarray(xu), xp.asarray(yu)),
                 ((xu.astype(float) - yu) ** 2).mean(axis=(-2, -1)), rtol=1e-6)
    a = np.random.default_rng(0).standard_normal((40, 3))
    b = np.random.default_rng(1).standard_normal((30, 3)) + 0.5
    fd = M.frechet_distance(xp.asarray(a), xp.asarray(b))
    assert_close(fd, M.frechet_distance(a, b), rtol=1e-10)
    assert_close(M.mmd(xp.asarray(a), xp.asarray(b), bandwidth=1.0),
                 M.mmd(a, b, bandwidth=1.0), rtol=1e-9, atol=1e-12)
    assert_close(M.energy_distance(xp.asarray(a), xp.asarray(b)), M.energy_distance(a, b),
                 rtol=1e-10)


def _fid_scipy(a, b):
    """pytorch-fid's formula with scipy.linalg.sqrtm."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_frechet_distance_matches_sqrtm_formula():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((300, 12))
    b = rng.standard_normal((250, 12)) @ rng.standard_normal((12, 12)) * 0.4 + 0.3
    assert_close(M.frechet_distance(a, b), _fid_scipy(a, b), rtol=1e-9)
    assert abs(float(M.frechet_distance(a, a))) < 1e-9
    # float32 features are computed in float64
    out = M.frechet_distance(a.astype(np.float32), b.astype(np.float32))
    assert out.dtype == np.float64
    assert_close(out, _fid_scipy(a.astype(np.float32).astype(np.float64),
                                 b.astype(np.float32).astype(np.float64)), rtol=1e-9)


def test_frechet_distance_few_samples_warns_and_stays_real():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((5, 8)), rng.standard_normal((6, 8))
    with pytest.warns(UserWarning, match="fewer samples than features"):
        value = M.frechet_distance(a, b)
    assert np.isfinite(float(value)) and float(value) > 0
    assert_close(value, _fid_scipy(a, b), rtol=1e-6)


def _gauss_gram(a, b, h):
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return np.exp(-d2 / (2 * h * h))


def test_mmd_against_dense_formula():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((90, 3)), rng.standard_normal((70, 3)) + 0.4
    h = 0.8
    kxx, kyy, kxy = _gauss_gram(x, x, h), _gauss_gram(y, y, h), _gauss_gram(x, y, h)
    unbiased = ((kxx.sum() - 90) / (90 * 89) + (kyy.sum() - 70) / (70 * 69)
                - 2 * kxy.mean())
    biased = kxx.mean() + kyy.mean() - 2 * kxy.mean()
    assert_close(M.mmd(x, y, bandwidth=h), unbiased, rtol=1e-10)
    assert_close(M.mmd(x, y, bandwidth=h, unbiased=False), biased, rtol=1e-10)
    multi = M.mmd(x, y, bandwidth=[0.5, 2.0], unbiased=False)
    ref = sum(_gauss_gram(x, x, s).mean() + _gauss_gram(y, y, s).mean()
              - 2 * _gauss_gram(x, y, s).mean() for s in (0.5, 2.0))
    assert_close(multi, ref, rtol=1e-10)


def test_energy_distance_against_scipy():
    rng = np.random.default_rng(3)
    u, v = rng.standard_normal(400), rng.standard_normal(300) * 1.7 + 0.2
    assert_close(np.sqrt(M.energy_distance(u, v)), scipy.stats.energy_distance(u, v),
                 rtol=1e-10)
    x, y = rng.standard_normal((50, 4)), rng.standard_normal((60, 4))
    dxy = np.sqrt(((x[:, None] - y[None]) ** 2).sum(-1)).mean()
    dxx = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1)).mean()
    dyy = np.sqrt(((y[:, None] - y[None]) ** 2).sum(-1)).mean()
    assert_close(M.energy_distance(x, y), 2 * dxy - dxx - dyy, rtol=1e-10)


def test_sliced_wasserstein_is_the_ot_one():
    assert M.sliced_wasserstein is ot_sliced_wasserstein


def test_bad_inputs():
    x, y = _images((2, 16, 16))
    with pytest.raises(ValueError, match="`data_range` is required for floating-point"):
        M.psnr(x, y)
    with pytest.raises(ValueError, match="`data_range` is required for floating-point"):
        M.ssim(x, y)
    with pytest.raises(ValueError, match=r"same shape; got \(2, 16, 16\) and \(16, 16\)"):
        M.mse(x, y[0])
    with pytest.raises(ValueError, match="at least 11 x 11"):
        M.ssim(x[:, :8, :8], y[:, :8, :8], data_range=1.0)
    with pytest.raises(ValueError, match="`x` must be images"):
        M.mae(x[0, 0], y[0, 0])
    bad = x.copy()
    bad[0, 3, 3] = np.nan
    with pytest.raises(ValueError, match="`x` contains 1 non-finite"):
        M.psnr(bad, y, data_range=1.0)
    assert np.isnan(M.psnr(bad, y, data_range=1.0, check_finite=False)[0])
    with pytest.raises(ValueError, match="`data_range` must be positive"):
        M.psnr(x, y, data_range=0.0)
    with pytest.warns(UserWarning, match="more than data_range"):
        M.psnr(x * 255, y * 255, data_range=1.0)
    a = np.random.default_rng(0).standard_normal((10, 3))
    with pytest.raises(ValueError, match="at least 2 samples"):
        M.frechet_distance(a[:1], a)
    with pytest.raises(ValueError, match=r"same number of columns .*\(10, 3\) and \(10, 2\)"):
        M.frechet_distance(a, a[:, :2])
    with pytest.raises(ValueError, match="`bandwidth` must be positive"):
        M.mmd(a, a, bandwidth=-1.0)
    with pytest.raises(ValueError, match="unbiased MMD needs at least 2 samples"):
        M.mmd(a[:1], a, bandwidth=1.0)
    with pytest.raises(ValueError, match="`y` must be non-empty"):
        M.energy_distance(a, a[:0])
    with pytest.raises(ValueError, match="`x` contains 1 non-finite"):
        M.energy_distance(np.array([[np.inf]]), a[:, :1])
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="different namespaces"):
        M.mse(torch.tensor(x), y)
