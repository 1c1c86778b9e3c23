"""CuPy RawModule kernels, one ``.cu`` source per hot path beside its launcher.

Helpers for the launchers: :func:`module` compiles a source of this folder (NVRTC, C++17, this
folder on the include path, no fast math) for the given template instantiations and caches it;
:func:`native` turns a CuPy or torch CUDA array into a C-contiguous, 16-byte aligned CuPy array
(zero-copy through DLPack when it already is); :func:`stream_for` is the stream the caller's
library is using (torch's current stream for torch input).
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent


@functools.lru_cache(maxsize=None)
def module(source: str, name_expressions: tuple[str, ...]):
    """The compiled ``cupy.RawModule`` of ``HERE/source`` with these kernel instantiations."""
    import cupy

    code = (HERE / source).read_text()
    return cupy.RawModule(code=code, options=("-std=c++17", f"-I{HERE}"),
                          name_expressions=list(name_expressions))


def native(a):
    """A C-contiguous CuPy array with a 16-byte aligned base: ``a`` itself (zero-copy through
    DLPack) when it already is one, else one copy."""
    from .._interop import to_cupy

    c = to_cupy(a)
    if c.flags.c_contiguous and c.data.ptr % 16 == 0:
        return c
    return c.copy(order="C")  # a fresh allocation is 256-byte aligned


def stream_for(a):
    """Context making the caller's stream CuPy's current one: torch's current stream for torch
    input (a no-op when both libraries are on the default stream), nothing for CuPy input."""
    if not type(a).__module__.startswith("torch"):
        return contextlib.nullcontext()
    import cupy
    import torch

    ts = torch.cuda.current_stream(a.device)
    if ts.cuda_stream == cupy.cuda.get_current_stream().ptr:
        return contextlib.nullcontext()
    from_external = getattr(cupy.cuda.Stream, "from_external", None)
    if from_external is not None:
        try:
            return from_external(ts)
        except (TypeError, ValueError, AttributeError):
            pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return cupy.cuda.ExternalStream(ts.cuda_stream)


@functools.lru_cache(maxsize=None)
def sm_count(device_id: int) -> int:
    """Number of streaming multiprocessors of a CUDA device."""
    import cupy

    return int(cupy.cuda.Device(device_id).attributes["MultiProcessorCount"])


def dtype_name(a) -> str:
    """``"float"`` or ``"double"``: the C type of a float32/float64 array."""
    name = str(a.dtype).replace("torch.", "")
    if name not in ("float32", "float64"):
        raise TypeError(f"CuPy kernels take float32 or float64 arrays; got {a.dtype}")
    return "float" if name == "float32" else "double"
