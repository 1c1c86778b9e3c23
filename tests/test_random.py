"""Philox4x32-10 streams: known answers, identity across namespaces, distribution checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from arraygen import random as agr
from arraygen.reference import philox as ref

# Random123 tests/kat_vectors, "philox4x32 10" lines: counter, key, expected output.
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


def test_reference_matches_known_answers():
    for counter, key, expected in KAT:
        assert ref.philox4x32_block(counter, key) == expected


def test_philox4x32_known_answers(xp):
    counter = xp.asarray(np.array([c for c, _, _ in KAT], dtype=np.uint32))
    key = xp.asarray(np.array([k for _, k, _ in KAT], dtype=np.uint32))
    out = agr.philox4x32(counter, key)
    assert out.dtype == xp.uint32
    np.testing.assert_array_equal(xp.to_numpy(out).astype(np.uint64),
                                  np.array([e for _, _, e in KAT], dtype=np.uint64))


@pytest.mark.parametrize("seed,counter", [(0, 0), (42, 7), (2**64 - 1, 2**40 + 3)])
def test_stream_words_match_reference(xp, seed, counter):
    key = agr.Key(seed, counter)
    n = 37  # not a multiple of 4
    words = agr.bits(key, (n,), xp=xp.namespace, device=xp.device)
    np.testing.assert_array_equal(xp.to_numpy(words).astype(np.uint64),
                                  ref.stream_words(seed, counter, n))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_uniform_bitwise_identical_to_reference(xp, dtype):
    key = agr.Key(123, 5)
    u = agr.uniform(key, (5, 7), dtype=getattr(xp, dtype), xp=xp.namespace, device=xp.device)
    assert u.dtype == getattr(xp, dtype)
    expected = ref.uniform(123, 5, 35, dtype).reshape(5, 7)
    np.testing.assert_array_equal(xp.to_numpy(u), expected)
    assert float(xp.min(u)) > 0 and float(xp.max(u)) < 1


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_normal_matches_reference(xp, dtype):
    key = agr.Key(9, 1)
    z = agr.normal(key, (3, 11), dtype=getattr(xp, dtype), xp=xp.namespace, device=xp.device)
    rtol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(xp.to_numpy(z), ref.normal(9, 1, 33, dtype).reshape(3, 11),
                               rtol=rtol, atol=rtol)


def test_like_takes_namespace_device_and_dtype(xp):
    x = xp.asarray(np.zeros((4, 3), dtype=np.float32))
    z = agr.normal(1, x.shape, like=x)
    assert z.dtype == xp.float32
    assert type(z) is type(x)


def test_normal_moments_and_independence_of_streams():
    n = 400_000
    z = agr.normal(agr.Key(2026), (n,))
    # mean, variance, kurtosis within 5 standard errors of N(0, 1)
    assert abs(z.mean()) < 5 / math.sqrt(n)
    assert abs(z.var() - 1) < 5 * math.sqrt(2 / n)
    assert abs(np.mean(z**4) - 3) < 5 * math.sqrt(96 / n)
    w = agr.normal(agr.Key(2026).advance(), (n,))
    assert abs(np.corrcoef(z, w)[0, 1]) < 5 / math.sqrt(n)
    # Kolmogorov-Smirnov against the normal CDF
    from scipy import stats

    assert stats.kstest(z[:50_000], "norm").pvalue > 1e-4


def test_uniform_is_uniform():
    from scipy import stats

    u = agr.uniform(agr.Key(77), (100_000,), dtype=np.float64)
    assert stats.kstest(u, "uniform").pvalue > 1e-4
    counts = np.bincount((u * 16).astype(int), minlength=16)
    assert stats.chisquare(counts).pvalue > 1e-4


def test_key_validation_and_as_key():
    assert agr.as_key(5) == agr.Key(5)
    k = agr.Key(1, 2)
    assert agr.as_key(k) is k
    gen = np.random.default_rng(0)
    assert agr.as_key(gen) is gen
    assert isinstance(agr.as_key(None), agr.Key)
    with pytest.raises(ValueError, match="seed"):
        agr.as_key(-1)
    with pytest.raises(TypeError, match="rng"):
        agr.as_key("seed")
    with pytest.raises(ValueError, match="counter"):
        agr.Key(1, 2**64)
    with pytest.raises(TypeError, match="seed"):
        agr.Key(1.5)
    assert agr.Key(1, 2**64 - 1).advance() == agr.Key(1, 0)


def test_bad_shapes_and_dtypes():
    with pytest.raises(ValueError, match="counter"):
        agr.philox4x32(np.zeros((2, 3), np.uint32), np.zeros((2, 2), np.uint32))
    with pytest.raises(ValueError, match="dtype"):
        agr.uniform(1, (3,), dtype=np.int32)
    with pytest.raises(ValueError, match="shape"):
        agr.normal(1, (-1, 2))
