r"""Optimal transport: the public facade over the modules that implement it.

- :mod:`arraygen.sinkhorn`: entropic OT between point clouds (:func:`sinkhorn`,
  :class:`SinkhornResult`, :func:`sinkhorn_divergence`);
- :mod:`arraygen.sliced`: sliced OT (:func:`sliced_wasserstein`,
  :func:`max_sliced_wasserstein`, :func:`sliced_ot_map`);
- :mod:`arraygen.bridge`: static Schrödinger bridges (:class:`SchrodingerBridge`).

``arraygen.ot.sinkhorn`` and the other names below keep working from here.

Examples
--------
>>> import numpy as np
>>> from arraygen.ot import sinkhorn
>>> x = np.random.default_rng(0).normal(size=(50, 2))
>>> bool(sinkhorn(x, x + 1.0, epsilon=0.5, scaling=0.5, relaxation="auto").converged)
True
"""

from __future__ import annotations

from .bridge import SchrodingerBridge
from .sinkhorn import (BatchedSinkhornResult, ConvergenceWarning, SinkhornResult, sinkhorn,
                       sinkhorn_divergence)
from .sliced import max_sliced_wasserstein, sliced_ot_map, sliced_wasserstein

__all__ = [
    "BatchedSinkhornResult",
    "ConvergenceWarning",
    "SchrodingerBridge",
    "SinkhornResult",
    "max_sliced_wasserstein",
    "sinkhorn",
    "sinkhorn_divergence",
    "sliced_ot_map",
    "sliced_wasserstein",
]
