"""Gibbs contract shared by the op module and every backend."""

from __future__ import annotations


def symmetric_offsets(offsets, shape):
    """Periodic offsets reduced to [-n/2, n/2) per axis: the same neighbours on the torus.

    Kernels wrap ``i + o`` with one conditional add or subtract; this guarantees it suffices.
    """
    return tuple(tuple(((d + n // 2) % n) - n // 2 for d, n in zip(o, shape)) for o in offsets)
