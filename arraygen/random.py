"""Counter-based Philox4x32-10 random streams, identical on every namespace and kernel backend.

The generator is Philox4x32 with 10 rounds (Salmon et al., SC'11), checked against the
Random123 known-answer vectors. A stream is a :class:`Key`: a 64-bit ``seed`` (the Philox key
words ``k0 = seed & 0xffffffff``, ``k1 = seed >> 32``) and a 64-bit ``counter`` (the call
counter). Element ``e`` of an array (its flat C-order index) reads word ``e % 4`` of the block

    philox4x32(counter=(b & 0xffffffff, b >> 32, counter & 0xffffffff, counter >> 32), key)

with ``b = e // 4``. Every backend computes exactly these uint32 words, so the same key gives
bitwise-identical words on NumPy, array_api_strict, torch (CPU and CUDA), CuPy, and inside the
Numba, CUDA C and Triton kernels.

Conversions (also identical in every kernel):

* ``uniform`` float32: ``((w >> 9) + 0.5) * 2**-23`` (23 random bits), float64:
  ``(w + 0.5) * 2**-32`` (32 random bits). Both lie strictly inside (0, 1) and are exact, so
  uniforms are bitwise identical everywhere.
* ``normal``: Box-Muller within each block: with uniforms ``u0..u3`` of the block's words,
  lanes 0/1 are ``r cos(2 pi u1)``, ``r sin(2 pi u1)`` with ``r = sqrt(-2 log u0)``, lanes 2/3
  the same with ``u2, u3``. Normals agree across backends to a few ulps (libm differs).
"""

from __future__ import annotations

import dataclasses
import math
import secrets
from typing import Any

import numpy as np

from . import _array_api as aa
from ._validation import check_int
from .backends._philox_xp import philox_words as _philox_words

__all__ = ["Key", "as_key", "bits", "normal", "philox4x32", "uniform"]

PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
MASK32 = 0xFFFFFFFF
ROUNDS = 10

_TWO_PI = 2.0 * math.pi


@dataclasses.dataclass(frozen=True)
class Key:
    """A Philox stream: 64-bit ``seed`` (the key) and 64-bit ``counter`` (the call counter).

    Examples
    --------
    >>> from arraygen.random import Key, normal
    >>> key = Key(42)
    >>> z = normal(key, (3,))            # NumPy by default
    >>> z_next = normal(key.advance(), (3,))   # the next, independent stream
    """

    seed: int
    counter: int = 0

    def __post_init__(self) -> None:
        for name in ("seed", "counter"):
            value = getattr(self, name)
            value = check_int(value, f"Key {name}")
            if not 0 <= value < 2**64:
                raise ValueError(f"Key `{name}` must be in [0, 2**64); got {value}")
            object.__setattr__(self, name, int(value))

    @property
    def key_words(self) -> tuple[int, int]:
        """The Philox key words ``(k0, k1)``."""
        return self.seed & MASK32, self.seed >> 32

    @property
    def counter_words(self) -> tuple[int, int]:
        """Philox counter words 2 and 3 (words 0 and 1 hold the element block index)."""
        return self.counter & MASK32, self.counter >> 32

    def advance(self, n: int = 1) -> Key:
        """The key ``n`` call counters later (independent stream, same seed)."""
        return Key(self.seed, (self.counter + int(n)) % 2**64)


def as_key(rng: Any) -> Key | np.random.Generator:
    """Normalise an ``rng=`` argument: int seed or :class:`Key` -> Key; NumPy Generator as is.

    ``None`` draws a fresh 64-bit seed from the operating system (not reproducible).
    """
    if rng is None:
        return Key(secrets.randbits(64))
    if isinstance(rng, Key):
        return rng
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        if rng < 0:
            raise ValueError(f"`rng` seed must be non-negative; got {rng}")
        return Key(int(rng) % 2**64)
    raise TypeError(
        f"`rng` must be None, an int seed, an arraygen.random.Key or a numpy.random.Generator; "
        f"got {type(rng).__name__}"
    )


def philox4x32(counter, key, *, rounds: int = ROUNDS):
    """Raw vectorised Philox4x32: uint32 ``counter`` (..., 4) and ``key`` (..., 2) -> (..., 4).

    Parameters
    ----------
    counter : array of uint32, shape (..., 4)
    key : array of uint32, shape (..., 2), broadcastable against ``counter[..., :2]``
    rounds : int
        Number of rounds (10 for Philox4x32-10).

    Returns
    -------
    array of uint32, shape (..., 4), in the namespace and on the device of ``counter``.
    """
    xp = aa.array_namespace(counter=counter, key=key)
    if counter.shape[-1:] != (4,):
        raise ValueError(f"`counter` must have last axis 4; got shape {tuple(counter.shape)}")
    if key.shape[-1:] != (2,):
        raise ValueError(f"`key` must have last axis 2; got shape {tuple(key.shape)}")
    wide = xp.int64 if aa.is_torch_namespace(xp) else xp.uint64
    c = xp.astype(counter, wide)
    k = xp.astype(key, wide)
    words = _philox_words(c[..., 0], c[..., 1], c[..., 2], c[..., 3], k[..., 0], k[..., 1],
                          rounds)
    return xp.astype(xp.stack(words, axis=-1), xp.uint32)


def _resolve_namespace(like, xp, device):
    if like is not None:
        return aa.array_namespace(like=like), aa.device(like)
    return aa.namespace_for(xp), device


def _shape(shape) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"`shape` must be non-negative; got {shape}")
    return shape


def _block_words(key: Key, n: int, xp, device, first_block: int = 0):
    """The (ceil(n/4), 4) int64 array of stream words of blocks ``first_block ...``."""
    n_blocks = -(-n // 4)
    wide = xp.int64 if aa.is_torch_namespace(xp) else xp.uint64
    b = xp.arange(first_block, first_block + n_blocks, dtype=wide, device=device)
    c2, c3 = key.counter_words
    k0, k1 = key.key_words
    zero = xp.zeros_like(b)
    words = _philox_words(b & MASK32, b >> 32, zero + c2, zero + c3, k0, k1)
    return xp.stack(words, axis=-1)


def _check_offset(offset) -> int:
    return check_int(offset, "offset", minimum=0)


def _element_blocks(key: Key, n: int, offset: int, xp, device):
    """Blocks covering elements ``offset .. offset + n - 1`` and the element index of the first."""
    skip = offset % 4
    return _block_words(key, n + skip, xp, device, first_block=offset // 4), skip


def bits(key: Key | int, shape, *, offset: int = 0, like=None, xp=None, device=None):
    """The raw uint32 stream words of ``key`` for an array of ``shape`` (C order).

    ``offset`` starts at element ``offset`` of the stream, so a chunk of a larger array draws
    exactly the words the whole call gives it.
    """
    key = _need_key(key)
    xp, device = _resolve_namespace(like, xp, device)
    shape = _shape(shape)
    n = math.prod(shape)
    blocks, skip = _element_blocks(key, n, _check_offset(offset), xp, device)
    words = xp.reshape(blocks, (-1,))[skip:skip + n]
    return xp.reshape(xp.astype(words, xp.uint32), shape)


def _need_key(key) -> Key:
    out = as_key(key) if key is not None else None
    if not isinstance(out, Key):
        raise TypeError(f"`key` must be an arraygen.random.Key or int seed; got {key!r}")
    return out


def _float_dtype(xp, dtype, like):
    if dtype is None:
        if like is not None and xp.isdtype(like.dtype, "real floating"):
            return aa.compute_dtype(xp, like.dtype)
        return xp.float64 if "float64" in str(aa._default_float(xp)) else xp.float32
    if isinstance(dtype, str):
        dtype = getattr(xp, dtype)
    if dtype not in (xp.float32, xp.float64):
        raise ValueError(f"`dtype` must be float32 or float64; got {dtype}")
    return dtype


def _to_uniform(xp, words, dtype):
    if dtype == xp.float32:
        return (xp.astype(words >> 9, xp.float32) + 0.5) * (2.0**-23)
    return (xp.astype(words, xp.float64) + 0.5) * (2.0**-32)


def uniform(key: Key | int, shape, *, offset: int = 0, dtype=None, like=None, xp=None,
            device=None):
    """Uniform floats in the open interval (0, 1) from the stream of ``key``.

    Parameters
    ----------
    key : Key or int
    shape : int or tuple of int
    offset : int, optional
        First element of the stream (default 0): ``uniform(k, (n,), offset=s)`` equals
        ``uniform(k, (s + n,))[s:]``, so chunks of a large array draw the numbers of the whole
        call.
    dtype : float32 or float64, optional
        Default: ``like``'s compute dtype, else the namespace's default float.
    like : array, optional
        Take namespace and device from this array.
    xp, device : optional
        Namespace (module) and device when ``like`` is not given; NumPy by default.
    """
    key = _need_key(key)
    xp, device = _resolve_namespace(like, xp, device)
    dtype = _float_dtype(xp, dtype, like)
    shape = _shape(shape)
    n = math.prod(shape)
    blocks, skip = _element_blocks(key, n, _check_offset(offset), xp, device)
    words = xp.reshape(blocks, (-1,))[skip:skip + n]
    return xp.reshape(_to_uniform(xp, words, dtype), shape)


def normal(key: Key | int, shape, *, offset: int = 0, dtype=None, like=None, xp=None,
           device=None):
    """Standard normal floats from the stream of ``key`` (Box-Muller inside each Philox block).

    Parameters are as for :func:`uniform`.
    """
    key = _need_key(key)
    xp, device = _resolve_namespace(like, xp, device)
    dtype = _float_dtype(xp, dtype, like)
    shape = _shape(shape)
    n = math.prod(shape)
    blocks, skip = _element_blocks(key, n, _check_offset(offset), xp, device)
    u = _to_uniform(xp, blocks, dtype)
    r01 = xp.sqrt(-2.0 * xp.log(u[:, 0]))
    r23 = xp.sqrt(-2.0 * xp.log(u[:, 2]))
    t1 = _TWO_PI * u[:, 1]
    t3 = _TWO_PI * u[:, 3]
    z = xp.stack([r01 * xp.cos(t1), r01 * xp.sin(t1), r23 * xp.cos(t3), r23 * xp.sin(t3)],
                 axis=-1)
    return xp.reshape(xp.reshape(z, (-1,))[skip:skip + n], shape)


def normal_like(rng: Any, x, *, dtype=None):
    """Standard normals shaped like ``x``, in its namespace and on its device.

    ``rng`` is anything :func:`as_key` takes; a NumPy Generator draws on the host and the
    result is transferred to ``x``'s device.
    """
    xp = aa.array_namespace(x=x)
    gen = as_key(rng)
    if dtype is None:
        dtype = aa.compute_dtype(xp, x.dtype)
    if isinstance(gen, np.random.Generator):
        np_dtype = np.float32 if dtype == xp.float32 else np.float64
        host = gen.standard_normal(tuple(x.shape), dtype=np_dtype)
        return xp.asarray(host, device=aa.device(x))
    return normal(gen, tuple(x.shape), dtype=dtype, like=x)
