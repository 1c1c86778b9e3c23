"""Shared benchmark helpers: backends x namespaces, synchronisation, fixed-seed data, skips.

A benchmark parameter ``backend`` is ``"<backend>@<namespace>"``: the arraygen backend and the
namespace/device its inputs live in (``numba_cpu@numpy``, ``triton@torch:cuda``...), or (in the
comparison suite, ``asv_benchmarks/compare``) ``"peer:<name>@<namespace>"`` for the code a user
would write instead. ``setup`` raises ``NotImplementedError`` (asv's skip; the message is printed
by ``asv run -e``) when a combination cannot run here. Data must not be changed, only appended
(comparisons across history).
"""

from __future__ import annotations

import functools
import importlib
import os

import numpy as np

#: asv timing attributes of the tracking suite (each module imports them): one round, 1 to 5
#: samples within 4 s per case, so a full run stays bounded on 2 cores.
rounds = 1
repeat = (1, 5, 4.0)

#: GPU namespaces: their cases join the parameter grids only where a GPU is present.
GPU_NAMESPACES = ("torch:cuda", "cupy")


def gpu_present() -> bool:
    return os.path.exists("/dev/nvidiactl")


def on_gpu(namespace: str) -> bool:
    return namespace in GPU_NAMESPACES


@functools.lru_cache(maxsize=None)
def data(shape: tuple[int, ...], seed: int = 0, dtype: str = "float32") -> np.ndarray:
    """Fixed-seed standard normal data (never zeros), drawn in ``dtype`` (float32 draws skip a
    float64 copy: 2**28-element GPU cases set up in seconds, not minutes)."""
    gen = np.random.default_rng(seed)
    if np.dtype(dtype) in (np.float32, np.float64):
        return gen.standard_normal(shape, dtype=dtype)
    return gen.standard_normal(shape).astype(dtype)


def to_namespace(a: np.ndarray, namespace: str):
    """Move a NumPy array to ``numpy``, ``torch:cpu``, ``torch:cuda`` or ``cupy``."""
    if namespace == "numpy":
        return a
    if namespace.startswith("torch"):
        torch = require_module("torch", "torch")
        dev = namespace.partition(":")[2] or "cpu"
        if dev == "cuda" and not torch.cuda.is_available():
            raise NotImplementedError("no CUDA device")
        return torch.from_numpy(np.ascontiguousarray(a)).to(dev)
    if namespace == "cupy":
        return require_module("cupy", "cupy-cuda13x").asarray(a)
    raise NotImplementedError(namespace)


def synchronize(namespace: str) -> None:
    if namespace == "torch:cuda":
        import torch

        torch.cuda.synchronize()
    elif namespace == "cupy":
        import cupy

        cupy.cuda.get_current_stream().synchronize()


def require_module(module: str, pip_name: str | None = None):
    """Import ``module`` or skip (asv: ``NotImplementedError`` in setup) saying how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise NotImplementedError(f"{module} is not installed ({exc}): "
                                  f"pip install {pip_name or module}") from None


def require_backend(name: str) -> None:
    """Skip (``NotImplementedError``) unless arraygen's backend ``name`` runs natively here."""
    from arraygen.backends import available, is_simulated

    if name == "array_api":
        return
    reason = available().get(name)
    if reason is not None:
        raise NotImplementedError(f"backend {name}: {reason}")
    if name in ("numba_cuda", "triton") and is_simulated(name):
        raise NotImplementedError(f"backend {name} runs in its CPU simulator here")


def split(param: str) -> tuple[str, str]:
    """``"numba_cpu@numpy"`` -> ``("numba_cpu", "numpy")``."""
    backend, _, namespace = param.partition("@")
    return backend, namespace or "numpy"


def with_gpu(cpu: list, gpu: list) -> list:
    """The parameter list: ``cpu``, plus ``gpu`` where a GPU is present."""
    return list(cpu) + (list(gpu) if gpu_present() else [])
