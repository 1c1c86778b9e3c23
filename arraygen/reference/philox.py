"""Philox4x32-10 on Python integers, one block at a time (the oracle for arraygen.random)."""

from __future__ import annotations

import math

import numpy as np

M0, M1 = 0xD2511F53, 0xCD9E8D57
W0, W1 = 0x9E3779B9, 0xBB67AE85
MASK = 0xFFFFFFFF


def philox4x32_block(counter: tuple[int, int, int, int], key: tuple[int, int],
                     rounds: int = 10) -> tuple[int, int, int, int]:
    """Random123's philox4x32 on one counter block: 4 uint32 words out."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for i in range(rounds):
        if i:
            k0, k1 = (k0 + W0) & MASK, (k1 + W1) & MASK
        p0, p1 = M0 * c0, M1 * c2
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0) & MASK, p1 & MASK, ((p0 >> 32) ^ c3 ^ k1) & MASK, p0 & MASK
    return c0, c1, c2, c3


def stream_words(seed: int, counter: int, n: int) -> np.ndarray:
    """Words 0..n-1 of the stream (seed, counter): element e is word e % 4 of block e // 4."""
    key = (seed & MASK, seed >> 32)
    out = []
    for b in range(-(-n // 4)):
        out.extend(philox4x32_block((b & MASK, b >> 32, counter & MASK, counter >> 32), key))
    return np.array(out[:n], dtype=np.uint64)


def uniform(seed: int, counter: int, n: int, dtype: str) -> np.ndarray:
    """The stream's uniforms, computed exactly in float64 and rounded to ``dtype``."""
    w = stream_words(seed, counter, n).astype(np.float64)
    if dtype == "float32":
        return ((np.floor(w / 512.0) + 0.5) / 2.0**23).astype(np.float32)
    return (w + 0.5) / 2.0**32


def normal(seed: int, counter: int, n: int, dtype: str) -> np.ndarray:
    """Box-Muller normals of the stream, in float64 from the ``dtype`` uniforms."""
    n_pad = 4 * -(-n // 4)
    u = uniform(seed, counter, n_pad, dtype).astype(np.float64).reshape(-1, 4)
    r01, r23 = np.sqrt(-2 * np.log(u[:, 0])), np.sqrt(-2 * np.log(u[:, 2]))
    z = np.stack([r01 * np.cos(2 * math.pi * u[:, 1]), r01 * np.sin(2 * math.pi * u[:, 1]),
                  r23 * np.cos(2 * math.pi * u[:, 3]), r23 * np.sin(2 * math.pi * u[:, 3])], -1)
    return z.reshape(-1)[:n]
