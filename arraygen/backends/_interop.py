"""Zero-copy hand-offs between array libraries, for the kernel launchers.

* host arrays (NumPy, torch CPU, array_api_strict) -> NumPy views through DLPack;
* CuPy <-> torch CUDA through DLPack (Triton launches on torch tensors, CuPy on CuPy arrays);
* Numba-CUDA takes anything with ``__cuda_array_interface__`` (CuPy and torch CUDA) directly.

Launchers convert inputs with these helpers, run the kernel on the native arrays, and hand the
results back in the caller's namespace with :func:`like`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from .. import _array_api as aa


def to_numpy_view(x: Any) -> np.ndarray:
    """A NumPy view of a host array (no copy for NumPy, torch CPU and DLPack producers)."""
    if isinstance(x, np.ndarray):
        return x
    if aa.is_torch_array(x):
        return x.detach().numpy()
    try:
        return np.from_dlpack(x)
    except (TypeError, BufferError, RuntimeError):
        return np.asarray(x)


def to_torch(x: Any):
    """A torch tensor sharing memory with ``x`` (NumPy, CuPy or torch)."""
    import torch

    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    return torch.from_dlpack(x)


def to_cupy(x: Any):
    """A CuPy array sharing memory with ``x`` (CuPy or torch CUDA)."""
    import cupy

    if isinstance(x, cupy.ndarray):
        return x
    return cupy.from_dlpack(x)


def like(native: Any, reference: Any) -> Any:
    """Return ``native`` (NumPy, CuPy or torch) as an array of ``reference``'s library.

    Zero-copy where the two libraries can share memory (DLPack); array_api_strict results are
    wrapped by ``asarray`` (a host copy, which is what that test namespace does anyway).
    """
    if type(native) is type(reference):
        return native
    if isinstance(reference, np.ndarray):
        return to_numpy_view(native) if not aa.is_cupy_array(native) else native.get()
    if aa.is_torch_array(reference):
        return to_torch(native)
    if aa.is_cupy_array(reference):
        return to_cupy(native)
    xp = aa.array_namespace(reference)
    host = native if isinstance(native, np.ndarray) else to_numpy_view(native)
    return xp.asarray(host, device=aa.device(reference))


def cuda_device_context(x: Any):
    """Context manager making ``x``'s CUDA device current (a no-op for host arrays)."""
    kind, index = aa.device_kind(x)
    if kind != "cuda":
        return contextlib.nullcontext()
    if aa.is_torch_array(x):
        import torch

        return torch.cuda.device(index)
    import cupy

    return cupy.cuda.Device(index)


def float_dtype_name(dtype) -> str:
    """``"float32"`` or ``"float64"`` from a dtype name, NumPy or torch dtype."""
    text = str(dtype)
    for name in ("float32", "float64"):
        if name in text:
            return name
    raise ValueError(f"`dtype` must be float32 or float64; got {dtype!r}")
