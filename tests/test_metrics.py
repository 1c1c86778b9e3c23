"""Image and distribution metrics against scikit-image, scipy and dense float64 formulas."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
from skimage.metrics import (mean_squared_error, normalized_root_mse, peak_signal_noise_ratio,
                             structural_similarity)

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
    """Every metric returns the input's namespace, device and dtype (assert_close checks
    them against the oracle built in that namespace)."""
    x, y = _images((2, 13, 14), seed=3)
    for dtype, tol in (("float64", 1e-12), ("float32", 2e-5)):
        xa, ya = xp.asarray(x, dtype=dtype), xp.asarray(y, dtype=dtype)
        want = xp.asarray(_per_image(_sk_ssim, x, y, data_range=1.0), dtype=dtype)
        assert_close(M.ssim(xa, ya, data_range=1.0), want, rtol=tol, atol=tol)
        want = xp.asarray(_per_image(peak_signal_noise_ratio, x, y, data_range=1.0),
                          dtype=dtype)
        assert_close(M.psnr(xa, ya, data_range=1.0), want, rtol=tol)
        want = xp.asarray(_per_image(normalized_root_mse, x, y), dtype=dtype)
        assert_close(M.nrmse(xa, ya), want, rtol=tol)
        # the full map (reflected borders) and channel_axis in every namespace
        want_mean, want_map = structural_similarity(
            x, y, data_range=1.0, gaussian_weights=False, win_size=5, channel_axis=0,
            use_sample_covariance=True, full=True)
        mean, smap = M.ssim(xa, ya, data_range=1.0, gaussian_weights=False, win_size=5,
                            channel_axis=0, use_sample_covariance=True, full=True)
        assert_close(mean, _scalar(xp, want_mean, dtype), rtol=tol, atol=tol)
        assert_close(smap, xp.asarray(want_map, dtype=dtype), rtol=tol, atol=tol)
    xu, yu = (x * 255).astype(np.uint8), (y * 255).astype(np.uint8)
    # integer images are computed in the namespace's default float (torch: float32)
    f64 = xp.__array_namespace_info__().default_dtypes(device=xp.device)["real floating"]
    assert_close(M.psnr(xp.asarray(xu), xp.asarray(yu)),
                 xp.asarray(_per_image(peak_signal_noise_ratio, xu, yu), dtype=f64), rtol=1e-6)
    assert_close(M.mse(xp.asarray(xu), xp.asarray(yu)),
                 xp.asarray(((xu.astype(float) - yu) ** 2).mean(axis=(-2, -1)), dtype=f64),
                 rtol=1e-6)
    a = np.random.default_rng(0).standard_normal((40, 3))
    b = np.random.default_rng(1).standard_normal((30, 3)) + 0.5
    fd = M.frechet_distance(xp.asarray(a), xp.asarray(b))
    assert_close(fd, _scalar(xp, _fid_scipy(a, b)), rtol=1e-9)
    assert_close(M.mmd(xp.asarray(a), xp.asarray(b), bandwidth=1.0),
                 _scalar(xp, _mmd_dense(a, b, 1.0)), rtol=1e-9, atol=1e-12)
    dxy = np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1)).mean()
    dxx = np.sqrt(((a[:, None] - a[None]) ** 2).sum(-1)).mean()
    dyy = np.sqrt(((b[:, None] - b[None]) ** 2).sum(-1)).mean()
    assert_close(M.energy_distance(xp.asarray(a), xp.asarray(b)),
                 _scalar(xp, 2 * dxy - dxx - dyy), rtol=1e-10)


def _scalar(xp, value, dtype="float64"):
    """A 0-d oracle in the test namespace (conftest's asarray makes 0-d input 1-d)."""
    return xp.reshape(xp.asarray(np.array([value], dtype=np.float64), dtype=dtype), ())


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


def _mmd_dense(x, y, h):
    """Unbiased MMD^2 from the dense Gram matrices (float64)."""
    n, m = len(x), len(y)
    return ((_gauss_gram(x, x, h).sum() - n) / (n * (n - 1))
            + (_gauss_gram(y, y, h).sum() - m) / (m * (m - 1)) - 2 * _gauss_gram(x, y, h).mean())


@pytest.mark.parametrize("joined_pairs", [0, 1 << 20])  # three launches / one joined launch
def test_mmd_against_dense_formula(monkeypatch, joined_pairs):
    monkeypatch.setattr(M, "_MMD_JOINED_PAIRS", joined_pairs)
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
        M.mae(np.asarray(x[0, 0, 0]), np.asarray(y[0, 0, 0]))
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
    with pytest.raises(ValueError, match=r"`features_a` and `features_b` must have the same "
                                         r"dimension.*\(10, 3\).*\(10, 2\)"):
        M.frechet_distance(a, a[:, :2])
    with pytest.raises(ValueError, match="`bandwidth` must be positive"):
        M.mmd(a, a, bandwidth=-1.0)
    with pytest.raises(ValueError, match="unbiased MMD needs at least 2 samples"):
        M.mmd(a[:1], a, bandwidth=1.0)
    with pytest.raises(ValueError, match="`y` must contain at least one point"):
        M.energy_distance(a, a[:0])
    with pytest.raises(ValueError, match="`x` contains 1 non-finite"):
        M.energy_distance(np.array([[np.inf]]), a[:, :1])
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="different namespaces"):
        M.mse(torch.tensor(x), y)


# ------------------------------------------------------------------------------------------
# issue 15: scikit-image's SSIM options and nrmse, against skimage.metrics
# ------------------------------------------------------------------------------------------

def _sk(a, b, **kw):
    kw.setdefault("data_range", 1.0)
    return structural_similarity(a, b, **kw)


@pytest.mark.parametrize("kw", [
    dict(gaussian_weights=False),                                   # skimage's default 7x7
    dict(gaussian_weights=False, win_size=5, use_sample_covariance=False),
    dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=True),
    dict(gaussian_weights=True, sigma=1.0, use_sample_covariance=False),
    dict(gaussian_weights=True, sigma=1.5, win_size=7, use_sample_covariance=False),  # crop 3
])
def test_ssim_options_match_skimage(kw):
    x, y = _images((2, 23, 19), seed=4)
    ours = {k: v for k, v in kw.items() if k != "use_sample_covariance"}
    ours["use_sample_covariance"] = kw.get("use_sample_covariance", True)  # skimage default
    got = M.ssim(x, y, data_range=1.0, **ours)
    want = np.array([_sk(a, b, **kw) for a, b in zip(x, y)])
    assert_close(got, want, rtol=1e-12, atol=1e-12)
    mean, smap = M.ssim(x, y, data_range=1.0, full=True, **ours)
    assert_close(mean, want, rtol=1e-12, atol=1e-12)
    for k in range(2):
        _, want_map = _sk(x[k], y[k], full=True, **kw)
        assert_close(smap[k], want_map, rtol=1e-11, atol=1e-12)


def test_ssim_full_map_default_window():
    """The full map has the image's shape, reflected borders, and its cropped mean is mssim."""
    x, y = _images((26, 31), seed=5)
    mean, smap = M.ssim(x, y, data_range=1.0, full=True)
    want_mean, want_map = _sk(x, y, gaussian_weights=True, sigma=1.5,
                              use_sample_covariance=False, full=True)
    assert smap.shape == x.shape
    assert_close(smap, want_map, rtol=1e-11, atol=1e-12)
    assert abs(float(mean) - want_mean) < 1e-13
    assert abs(float(M.ssim(x, y, data_range=1.0)) - want_mean) < 1e-13


@pytest.mark.parametrize("axis", [0, -1])
def test_ssim_channel_axis_matches_skimage(axis):
    x, y = _images((3, 17, 15), seed=6)
    if axis == -1:
        x, y = np.moveaxis(x, 0, -1), np.moveaxis(y, 0, -1)  # HWC
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    want, want_map = _sk(x, y, channel_axis=axis, full=True, **kw)
    mean, smap = M.ssim(x, y, data_range=1.0, channel_axis=axis, full=True)
    assert np.ndim(mean) == 0 and abs(float(mean) - want) < 1e-13
    assert smap.shape == x.shape
    assert_close(smap, want_map, rtol=1e-11, atol=1e-12)
    # a batch of HWC images: one value per image
    xb, yb = np.stack([x, y]), np.stack([y, x])
    got = M.ssim(xb, yb, data_range=1.0, channel_axis=axis if axis < 0 else 1)
    assert got.shape == (2,)
    assert_close(got, np.array([want, _sk(y, x, channel_axis=axis, **kw)]), rtol=1e-12)


def test_ssim_one_d_and_n_d_match_skimage():
    rng = np.random.default_rng(7)
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    s = rng.random(64)
    t = np.clip(s + 0.1 * rng.standard_normal(64), 0, 1)
    assert abs(float(M.ssim(s, t, data_range=1.0)) - _sk(s, t, **kw)) < 1e-13
    signals = np.stack([s, t, s[::-1]])  # a batch of 1-D signals
    got = M.ssim(signals, signals[::-1], data_range=1.0, spatial_dims=1)
    assert_close(got, np.array([_sk(a, b, **kw) for a, b in zip(signals, signals[::-1])]),
                 rtol=1e-12)
    vol = rng.random((12, 13, 14))
    vol2 = np.clip(vol + 0.1 * rng.standard_normal(vol.shape), 0, 1)
    got = M.ssim(vol, vol2, data_range=1.0, spatial_dims=3)
    assert abs(float(got) - _sk(vol, vol2, **kw)) < 1e-13
    got = M.ssim(vol, vol2, data_range=1.0, spatial_dims=3, gaussian_weights=False)
    assert abs(float(got) - _sk(vol, vol2, gaussian_weights=False,
                                use_sample_covariance=False)) < 1e-13
    # the default reads a 3-D array as a batch of 2-D images
    assert M.ssim(vol, vol2, data_range=1.0).shape == (12,)


def test_ssim_signed_integer_range_is_dtype_span():
    """skimage's SSIM infers dtype max - min (int8: 255), not PSNR's rule (127 if >= 0)."""
    rng = np.random.default_rng(8)
    a = rng.integers(0, 100, (20, 20)).astype(np.int8)
    b = np.clip(a + rng.integers(-9, 10, a.shape), 0, 127).astype(np.int8)
    with pytest.warns(UserWarning, match="data_range"):  # skimage warns for non-uint8 ints
        want = _sk(a, b, data_range=None, gaussian_weights=True, sigma=1.5,
                   use_sample_covariance=False)
    assert abs(float(M.ssim(a, b)) - want) < 1e-13
    assert abs(float(M.ssim(a, b, data_range=255)) - want) < 1e-13
    assert abs(float(M.ssim(a, b, data_range=127)) - want) > 1e-6  # the rule matters here
    assert float(M.psnr(a, b)) == pytest.approx(peak_signal_noise_ratio(a, b), rel=1e-12)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the last case overflows, then raises
def test_ssim_psnr_huge_data_range_no_nan_or_inf():
    """float32 ssim with data_range=1e20 gave NaN and psnr(data_range=1e200) inf."""
    x, y = _images((2, 16, 16), seed=9)
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    want = np.array([_sk(a, b, data_range=1e20, gaussian_weights=True, sigma=1.5,
                         use_sample_covariance=False) for a, b in zip(x, y)])
    got = M.ssim(x32, y32, data_range=1e20)
    assert got.dtype == np.float32 and np.all(np.isfinite(got))
    assert_close(got, want.astype(np.float32), rtol=1e-6)
    got = M.psnr(x, y, data_range=1e200)
    mse = ((x - y) ** 2).mean(axis=(-2, -1))
    assert_close(got, 4000.0 - 10 * np.log10(mse), rtol=1e-14)  # 20 log10(1e200) = 4000
    got32 = M.psnr(x32, y32, data_range=1e200)
    assert got32.dtype == np.float32
    assert_close(got32, (4000.0 - 10 * np.log10(((x32.astype(float) - y32) ** 2)
                                                  .mean(axis=(-2, -1)))).astype(np.float32),
                 rtol=1e-6)
    with pytest.raises(ValueError, match="`x` and `y` reach .* overflows float32"):
        M.ssim(x32 * np.float32(1e30), y32, data_range=1e31)


def test_nrmse_matches_skimage():
    x, y = _images((3, 12, 10), seed=10)
    for norm in ("euclidean", "min-max", "mean", "Euclidean"):
        got = M.nrmse(x, y, normalization=norm)
        want = _per_image(normalized_root_mse, x, y, normalization=norm)
        assert_close(got, want, rtol=1e-12)
    xu, yu = (x * 255).astype(np.uint8), (y * 255).astype(np.uint8)
    assert_close(M.nrmse(xu, yu, normalization="min-max"),
                 _per_image(normalized_root_mse, xu, yu, normalization="min-max"), rtol=1e-12)
    s = x.reshape(-1)
    assert abs(float(M.nrmse(s, y.reshape(-1))) - normalized_root_mse(s, y.reshape(-1))) < 1e-13
    assert float(M.nrmse(x[0], x[0])) == 0.0
    zero = np.zeros((4, 4))
    with pytest.warns(UserWarning, match="normalisation of `x` is 0"):
        assert np.isinf(M.nrmse(zero, zero + 1.0))
    with pytest.raises(ValueError, match="`normalization` must be one of"):
        M.nrmse(x, y, normalization="max")


def test_mmd_bandwidth_out_of_range_names_bandwidth():
    a = np.random.default_rng(0).standard_normal((10, 3))
    for h in (1e200, 1e-200):  # said "`beta`" / raised ZeroDivisionError
        with pytest.raises(ValueError, match="`bandwidth` = .* is out of range"):
            M.mmd(a, a + 1, bandwidth=h)
    with pytest.raises(ValueError, match=r"`bandwidth` \(1 / \(2 bandwidth\^2\)\).*float32"):
        M.mmd(a.astype(np.float32), a.astype(np.float32), bandwidth=1e-20)
    with pytest.raises(ValueError, match=r"`bandwidth` \(1 / \(2 bandwidth\^2\)\) = .* too large"):
        M.mmd(a.astype(np.float32), a.astype(np.float32), bandwidth=1e-19)
    with pytest.raises(TypeError, match="`bandwidth` must be a real number"):
        M.mmd(a, a, bandwidth="wide")


def test_mmd_calls_the_core_not_the_public_op(monkeypatch):
    """Inside mmd the kernel sums run on tiled._matvec (no re-validation per sum)."""
    from arraygen import tiled

    def public(*args, **kwargs):
        raise AssertionError("mmd called the public kernel_matvec")

    monkeypatch.setattr(tiled, "kernel_matvec", public)
    rng = np.random.default_rng(11)
    x, y = rng.standard_normal(30), rng.standard_normal(25) + 0.3  # (N,): points in 1-D
    got = M.mmd(x, y, bandwidth=[0.5, 1.5], backend="array_api")
    want = _mmd_dense(x[:, None], y[:, None], 0.5) + _mmd_dense(x[:, None], y[:, None], 1.5)
    assert_close(got, want, rtol=1e-10)


def test_ssim_bad_options():
    x, y = _images((16, 16), seed=12)
    with pytest.raises(ValueError, match="`win_size` must be odd"):
        M.ssim(x, y, data_range=1.0, win_size=4)
    with pytest.raises(TypeError, match="`win_size` must be an integer"):
        M.ssim(x, y, data_range=1.0, win_size=7.0)
    with pytest.raises(ValueError, match="at least 17 x 17"):
        M.ssim(x, y, data_range=1.0, win_size=17)
    with pytest.raises(ValueError, match="`channel_axis` must be an axis of `x`"):
        M.ssim(x, y, data_range=1.0, channel_axis=2)
    with pytest.raises(ValueError, match="`spatial_dims` must be <= 2"):
        M.ssim(x, y, data_range=1.0, spatial_dims=3)
    with pytest.raises(ValueError, match="`sigma` must be positive"):
        M.ssim(x, y, data_range=1.0, sigma=0.0)
    with pytest.raises(ValueError, match="`gaussian_weights` must be one of"):
        M.ssim(x, y, data_range=1.0, gaussian_weights="yes")
    with pytest.raises(ValueError, match="`win_size` = 1 leaves no sample covariance"):
        M.ssim(x, y, data_range=1.0, win_size=1, gaussian_weights=False,
               use_sample_covariance=True)
    # lists are read as NumPy arrays
    assert float(M.mse([[0.0, 1.0]], [[0.0, 3.0]])) == 2.0
