"""arraygen: Array-API numerics for generative sampling.

Every algorithm is written once against the Python Array API, so NumPy, CuPy and PyTorch
arrays all work and results come back in the caller's namespace, on the caller's device.
Hot paths have hand-written kernels (Numba CPU and CUDA, CuPy RawKernel, Triton) chosen by
:mod:`arraygen._dispatch`; ``arraygen.backends.available()`` says which can run here.

Importing arraygen imports none of cupy, torch, triton or numba.cuda.
"""

from __future__ import annotations

import logging

from . import backends, random, testing
from ._dispatch import BackendError
from .fisher import fisher_diagonal, fisher_langevin_step

__version__ = "0.1.0"

logging.getLogger("arraygen").addHandler(logging.NullHandler())

__all__ = [
    "BackendError",
    "__version__",
    "backends",
    "fisher_diagonal",
    "fisher_langevin_step",
    "random",
    "testing",
]
