"""Kernel backends, one sub-package per kernel language, imported lazily.

``available()`` reports, for every backend name, ``None`` when it can run here or a sentence
saying why it cannot. Importing :mod:`arraygen` imports none of numba, cupy, torch or triton;
this function does, the first time it is called (results are cached per process).

Simulation: with ``NUMBA_ENABLE_CUDASIM=1`` the ``numba_cuda`` kernels run on host arrays in
Numba's CUDA simulator, and with ``TRITON_INTERPRET=1`` the ``triton`` kernels run on CPU torch
tensors in Triton's interpreter. Both are for testing on machines without a GPU.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os

__all__ = ["BACKENDS", "KERNEL_BACKENDS", "available", "is_simulated", "reset_cache", "versions"]

#: Every backend name that ``backend=`` accepts. ``reference`` is deliberately absent: the
#: float64 oracles in :mod:`arraygen.reference` are never dispatched.
BACKENDS = ("array_api", "numba_cpu", "numba_cuda", "cupy", "triton")
KERNEL_BACKENDS = BACKENDS[1:]


def _disabled(name: str) -> str | None:
    var = f"ARRAYGEN_DISABLE_{name.upper()}"
    if os.environ.get(var, "").strip() not in ("", "0"):
        return f"disabled by {var}={os.environ[var]}"
    return None


def is_simulated(name: str) -> bool:
    """True when the named GPU backend runs in its CPU simulator or interpreter."""
    if name == "numba_cuda":
        return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")
    if name == "triton":
        return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    return False


def _missing(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return f"the `{module}` package is not installed"
    return None


def _check_numba_cpu() -> str | None:
    if reason := _missing("numba"):
        return reason
    try:
        import numba  # noqa: F401
    except Exception as exc:  # pragma: no cover - broken installs
        return f"numba failed to import: {exc}"
    return None


def _check_numba_cuda() -> str | None:
    if reason := _missing("numba"):
        return reason
    try:
        from numba import cuda
    except Exception as exc:
        return f"numba.cuda failed to import: {exc}"
    if is_simulated("numba_cuda"):
        return None
    try:
        if not cuda.is_available():
            return "no CUDA device visible to numba (set NUMBA_ENABLE_CUDASIM=1 to simulate)"
    except Exception as exc:  # pragma: no cover
        return f"numba.cuda could not query devices: {exc}"
    return None


def _check_cupy() -> str | None:
    if reason := _missing("cupy"):
        return reason
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "CuPy sees no CUDA device"
    except Exception as exc:
        return f"CuPy cannot use a GPU here: {type(exc).__name__}: {exc}"
    return None


def _check_triton() -> str | None:
    if reason := _missing("triton") or _missing("torch"):
        return reason
    try:
        import torch
        import triton  # noqa: F401
    except Exception as exc:
        return f"triton failed to import: {exc}"
    if is_simulated("triton"):
        return None
    if not torch.cuda.is_available():
        return "torch sees no CUDA device (set TRITON_INTERPRET=1 to interpret on the CPU)"
    return None


_CHECKS = {
    "array_api": lambda: None,
    "numba_cpu": _check_numba_cpu,
    "numba_cuda": _check_numba_cuda,
    "cupy": _check_cupy,
    "triton": _check_triton,
}


@functools.lru_cache(maxsize=None)
def _status(name: str) -> str | None:
    return _disabled(name) or _CHECKS[name]()


def available() -> dict[str, str | None]:
    """Map each backend name to ``None`` (usable) or the reason it is not usable here."""
    return {name: _status(name) for name in BACKENDS}


def reset_cache() -> None:
    """Forget cached availability (after changing ``ARRAYGEN_DISABLE_*`` in a running process)."""
    _status.cache_clear()


def versions() -> dict[str, str | None]:
    """Installed versions of the libraries arraygen can use (``None`` when absent)."""
    out = {}
    for module in ("numpy", "scipy", "array_api_compat", "array_api_strict", "numba",
                   "numba_cuda", "cupy", "torch", "triton", "tqdm", "matplotlib"):
        if importlib.util.find_spec(module) is None:
            out[module] = None
            continue
        try:
            out[module] = getattr(importlib.import_module(module), "__version__", "unknown")
        except Exception as exc:  # pragma: no cover
            out[module] = f"import failed: {exc}"
    return out
