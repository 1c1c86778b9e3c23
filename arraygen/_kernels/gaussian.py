"""Gaussian filter contract shared by the op module and every backend: boundary modes and the
source index of each padded position."""

from __future__ import annotations

import numpy as np

#: scipy.ndimage boundary modes, in the order the kernels number them.
MODES = ("reflect", "mirror", "nearest", "wrap", "constant")


def source_indices(n: int, r: int, mode: str) -> np.ndarray:
    """Source index of ``i = -r .. n - 1 + r`` along an axis of length ``n`` (-1: cval)."""
    i = np.arange(-r, n + r, dtype=np.int64)
    if mode == "constant":
        return np.where((i >= 0) & (i < n), i, -1)
    if mode == "nearest":
        return np.clip(i, 0, n - 1)
    if mode == "wrap":
        return np.mod(i, n)
    if n == 1:
        return np.zeros_like(i)
    if mode == "reflect":
        j = np.mod(i, 2 * n)
        return np.where(j >= n, 2 * n - 1 - j, j)
    j = np.mod(i, 2 * n - 2)  # mirror
    return np.where(j >= n, 2 * n - 2 - j, j)
