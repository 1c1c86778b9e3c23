"""Shared benchmark helpers: backends x namespaces, synchronisation, fixed-seed data.

A benchmark parameter ``backend`` is ``"<backend>@<namespace>"``: the arraygen backend and the
namespace/device its inputs live in (``numba_cpu@numpy``, ``triton@torch:cuda``...), or
``"peer:<name>"`` for the code a user would write instead. ``setup`` raises
``NotImplementedError`` (asv: skip) when a combination cannot run here.
Data must not be changed, only appended (comparisons across history).
"""

from __future__ import annotations

import functools
import os

import numpy as np


def gpu_present() -> bool:
    return os.path.exists("/dev/nvidiactl")


@functools.lru_cache(maxsize=None)
def data(shape: tuple[int, ...], seed: int = 0, dtype: str = "float32") -> np.ndarray:
    """Fixed-seed standard normal data (never zeros)."""
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def to_namespace(a: np.ndarray, namespace: str):
    """Move a NumPy array to ``numpy``, ``torch:cpu``, ``torch:cuda`` or ``cupy``."""
    if namespace == "numpy":
        return a
    if namespace.startswith("torch"):
        import torch

        dev = namespace.partition(":")[2] or "cpu"
        if dev == "cuda" and not torch.cuda.is_available():
            raise NotImplementedError("no CUDA device")
        return torch.from_numpy(np.ascontiguousarray(a)).to(dev)
    if namespace == "cupy":
        try:
            import cupy
        except ImportError:
            raise NotImplementedError("cupy not installed") from None
        return cupy.asarray(a)
    raise NotImplementedError(namespace)


def synchronize(namespace: str) -> None:
    if namespace == "torch:cuda":
        import torch

        torch.cuda.synchronize()
    elif namespace == "cupy":
        import cupy

        cupy.cuda.get_current_stream().synchronize()


def require_backend(name: str) -> None:
    """Raise NotImplementedError (asv skip) unless arraygen's backend ``name`` is usable."""
    from arraygen.backends import available

    if name != "array_api" and available().get(name) is not None:
        raise NotImplementedError(available()[name])


def split(param: str) -> tuple[str, str]:
    """``"numba_cpu@numpy"`` -> ``("numba_cpu", "numpy")``."""
    backend, _, namespace = param.partition("@")
    return backend, namespace or "numpy"
