"""The kernels draw exactly the stream of arraygen.random: every kernel backend's own Philox
code gives words bitwise identical to arraygen.random.bits (in the backend's namespace) and to
the pure-Python reference, and normals within a few ulps of arraygen.random.normal."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from arraygen import random as agr
from arraygen.reference import philox as ref

KEYS = [agr.Key(0, 0), agr.Key(42, 7), agr.Key(2**64 - 1, 2**40 + 3), agr.Key(2**32 + 5, 2**63)]


def _module(kernel_backend):
    if kernel_backend.name == "array_api":
        pytest.skip("the Array-API path is arraygen.random itself")
    return importlib.import_module(f"arraygen.backends.{kernel_backend.name}.random")


def _like(kernel_backend):
    xp = kernel_backend.xp
    return xp.asarray(np.zeros(1, dtype=np.float32))


@pytest.mark.parametrize("key", KEYS, ids=lambda k: f"{k.seed:x}-{k.counter:x}")
@pytest.mark.parametrize("n", [1, 37, 4 * 64 + 3])
def test_kernel_words_bitwise_identical(kernel_backend, key, n):
    mod = _module(kernel_backend)
    like = _like(kernel_backend)
    words = mod.stream_words(key, n, like)
    assert type(words) is type(like)
    got = kernel_backend.xp.to_numpy(words).astype(np.uint64)
    np.testing.assert_array_equal(got, ref.stream_words(key.seed, key.counter, n))
    same_ns = agr.bits(key, (n,), like=like)
    np.testing.assert_array_equal(got, kernel_backend.xp.to_numpy(same_ns).astype(np.uint64))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("key", KEYS[1:3], ids=lambda k: f"{k.seed:x}-{k.counter:x}")
def test_kernel_normals_within_ulps(kernel_backend, key, dtype):
    mod = _module(kernel_backend)
    like = _like(kernel_backend)
    n = 4 * 50 + 1
    z = kernel_backend.xp.to_numpy(mod.stream_normal(key, n, like, dtype))
    assert z.dtype == np.dtype(dtype)
    expected = agr.normal(key, (n,), dtype=getattr(np, dtype), xp=np)
    oracle = ref.normal(key.seed, key.counter, n, dtype)
    eps = np.finfo(dtype).eps
    # a few ulps of an O(1) result: sqrt(-2 log u) reaches ~6, sin/cos/log differ by libm
    np.testing.assert_allclose(z, expected, rtol=16 * eps, atol=16 * eps)
    np.testing.assert_allclose(z, oracle, rtol=64 * eps, atol=64 * eps)


def test_numba_philox_high_block_word():
    """Block indices >= 2**32 put their high half in counter word 1 (64-bit element offsets)."""
    ph = pytest.importorskip("arraygen.backends.numba_cpu.philox")
    from arraygen.backends import _philox
    key = agr.Key(2**64 - 3, 9)
    c2, c3, k0, k1 = ph.key_words(key)
    for block in (2**32, 2**33 + 5, 2**62 + 1):
        expected = ref.philox4x32_block((block & 0xFFFFFFFF, block >> 32, 9, 0),
                                        (key.seed & 0xFFFFFFFF, key.seed >> 32))
        assert tuple(int(w) for w in ph.philox4x32(block, c2, c3, k0, k1)) == expected
        assert tuple(int(w) for w in _philox.py_philox4x32(block, c2, c3, k0, k1)) == expected
