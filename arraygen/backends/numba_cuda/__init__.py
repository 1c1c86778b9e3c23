"""Numba-CUDA kernels (``@cuda.jit``), one module per hot path, and their launch plumbing.

The helpers here give launchers native arrays, streams and block sizes: inputs are CuPy or torch
CUDA arrays (NumPy arrays under the CUDA simulator), outputs are allocated in the input's library
so they come back to the caller without a copy, and kernels run on that library's current stream.
"""

from __future__ import annotations

import numpy as np

from .. import is_simulated


def jit(*args, **kwargs):
    """``numba.cuda.jit``, or the CUDA simulator's ``jit`` when simulating.

    The simulator's decorator is taken explicitly, so kernels simulate even when ``numba.cuda``
    was first imported before ``NUMBA_ENABLE_CUDASIM`` was set (numba-cuda reads it once).
    Kernels refer to the real ``numba.cuda`` module, which the simulator swaps while they run.
    """
    if is_simulated("numba_cuda"):
        from numba.cuda.simulator import jit as simulator_jit

        return simulator_jit(*args, **kwargs)
    from numba import cuda

    return cuda.jit(*args, **kwargs)


def threads_per_block() -> int:
    """256 on a GPU; 32 in the simulator (which runs every thread as a Python thread)."""
    return 32 if is_simulated("numba_cuda") else 256


def contiguous(a):
    """``a`` as a C-contiguous array of its own library (NumPy, CuPy or torch; one copy at most)."""
    if isinstance(a, np.ndarray):
        return np.ascontiguousarray(a)
    if type(a).__module__.startswith("torch"):
        return a.contiguous()
    import cupy

    return cupy.ascontiguousarray(a)


def empty_like(a):
    """An uninitialised C-contiguous array like ``a`` in ``a``'s library and device."""
    if isinstance(a, np.ndarray):
        return np.empty_like(a)
    if type(a).__module__.startswith("torch"):
        import torch

        return torch.empty_like(a, memory_format=torch.contiguous_format)
    import cupy

    return cupy.empty_like(a)


def empty(a, n: int, dtype):
    """A 1-D uninitialised array of ``n`` elements of NumPy ``dtype``, beside ``a``."""
    if isinstance(a, np.ndarray):
        return np.empty(n, dtype=dtype)
    if type(a).__module__.startswith("torch"):
        import torch

        return torch.empty(n, dtype=getattr(torch, np.dtype(dtype).name), device=a.device)
    import cupy

    return cupy.empty(n, dtype=dtype)


def stream_of(a):
    """The Numba stream that ``a``'s library is using (torch/CuPy current stream), or 0."""
    if is_simulated("numba_cuda") or isinstance(a, np.ndarray):
        return 0
    from numba import cuda

    if type(a).__module__.startswith("torch"):
        import torch

        ptr = torch.cuda.current_stream(a.device).cuda_stream
    else:
        import cupy

        ptr = cupy.cuda.get_current_stream().ptr
    return cuda.external_stream(ptr) if ptr else cuda.default_stream()


def device_view(a):
    """A Numba device view of a CUDA array (no copy, no extra sync); host arrays as they are."""
    if is_simulated("numba_cuda") or isinstance(a, np.ndarray):
        return a
    from numba import cuda

    return cuda.as_cuda_array(a, sync=False)


def flat(a):
    """A 1-D view of a C-contiguous array of any of the three libraries."""
    return a.reshape(-1)
