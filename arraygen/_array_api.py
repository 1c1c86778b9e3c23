"""Namespace, device and dtype helpers: the only module that imports array_api_compat.

Every public function of arraygen starts with ``xp = array_namespace(...)`` on its array
arguments. Python scalars and ``None`` are ignored; arrays from two libraries, or on two devices,
raise an error that names the arguments.
"""

from __future__ import annotations

import importlib
import math
from typing import Any

import array_api_compat
import numpy as np
from array_api_compat import device as _compat_device
from array_api_compat import (
    is_array_api_obj,
    is_array_api_strict_namespace,
    is_cupy_namespace,
    is_numpy_namespace,
    is_torch_namespace,
    size,
    to_device,
)
from array_api_compat import is_cupy_array as _compat_is_cupy_array
from array_api_compat import is_numpy_array as _compat_is_numpy_array
from array_api_compat import is_torch_array as _compat_is_torch_array

__all__ = [
    "array_namespace",
    "check_same_device",
    "compute_dtype",
    "device",
    "device_kind",
    "is_array",
    "is_array_api_strict_namespace",
    "is_cupy_array",
    "is_cupy_namespace",
    "is_numpy_array",
    "is_numpy_namespace",
    "is_torch_array",
    "is_torch_namespace",
    "namespace_for",
    "numpy_namespace",
    "plain_numpy",
    "result_dtype",
    "size",
    "to_device",
    "to_numpy",
]

Array = Any

# Fast path (issue 15, per-call overhead): plain NumPy arrays (``type(a) is np.ndarray``, not a
# subclass) in float64/float32 skip the generic array_api_compat lookups. Every fast path
# returns exactly what the general path returns for such input; anything else (subclasses,
# other libraries, other dtypes, non-native byte order) takes the general path.
_NDARRAY = np.ndarray
#: The native float dtypes the fast paths accept, compared by identity (NumPy caches them).
_F64 = np.dtype(np.float64)
_F32 = np.dtype(np.float32)
_numpy_xp = None


def numpy_namespace():
    """The compat namespace of NumPy arrays (what :func:`array_namespace` returns for them)."""
    global _numpy_xp
    if _numpy_xp is None:
        _numpy_xp = array_api_compat.array_namespace(np.empty(0))
    return _numpy_xp


def plain_numpy(values: Any) -> bool:
    """True if every value is ``None`` or a plain ``np.ndarray`` and at least one is an array.

    Void-dtype arrays (structured, or JAX's ``float0`` zero gradients, which array_api_compat
    does not count as NumPy arrays) are not plain.
    """
    seen = False
    for a in values:
        if a is None:
            continue
        if type(a) is not _NDARRAY or a.dtype.kind == "V":
            return False
        seen = True
    return seen


def is_fast_float(dtype: Any) -> bool:
    """True for NumPy's native float64 and float32 dtype objects (the fast-path dtypes)."""
    return dtype is _F64 or dtype is _F32


def device(x: Array) -> Any:
    """The device of an array (array_api_compat's ``device``; ``"cpu"`` for NumPy arrays)."""
    if type(x) is _NDARRAY:
        return "cpu"
    return _compat_device(x)


_NOT_ARRAYS = frozenset({type(None), bool, int, float, complex, str})


def is_array(x: Any) -> bool:
    """True for an array object of any Array-API library (not Python scalars)."""
    t = type(x)
    if t is _NDARRAY:
        return True
    if t in _NOT_ARRAYS:
        return False
    return is_array_api_obj(x) and not isinstance(x, (int, float, complex, bool))


def is_numpy_array(x: Any) -> bool:
    """array_api_compat's ``is_numpy_array`` (``np.ndarray`` or NumPy scalar), fast for arrays."""
    if type(x) is _NDARRAY and x.dtype.kind != "V":
        return True
    return _compat_is_numpy_array(x)


def is_torch_array(x: Any) -> bool:
    """array_api_compat's ``is_torch_array`` (False at once for NumPy arrays)."""
    if type(x) is _NDARRAY:
        return False
    return _compat_is_torch_array(x)


def is_cupy_array(x: Any) -> bool:
    """array_api_compat's ``is_cupy_array`` (False at once for NumPy arrays)."""
    if type(x) is _NDARRAY:
        return False
    return _compat_is_cupy_array(x)


def _library_name(x: Any) -> str:
    module = type(x).__module__.split(".")[0]
    return {"builtins": "python"}.get(module, module)


def array_namespace(*arrays: Any, **named: Any):
    """Return the compat namespace shared by the array arguments.

    Parameters
    ----------
    *arrays, **named
        Arrays, Python scalars or ``None``. Keyword arguments are used only to name the
        arguments in error messages (``array_namespace(x=x, y=y)``).

    Raises
    ------
    TypeError
        If the arrays come from different libraries, naming each argument's library, or if no
        argument is an array.
    """
    if plain_numpy((*arrays, *named.values())):
        return numpy_namespace()
    items = [(f"argument {i}", a) for i, a in enumerate(arrays)] + list(named.items())
    items = [(name, a) for name, a in items if a is not None and is_array(a)]
    if not items:
        raise TypeError("expected at least one array argument; got only scalars or None")
    libraries = {_library_name(a) for _, a in items}
    if len(libraries) > 1:
        described = ", ".join(f"`{name}` is {_library_name(a)}" for name, a in items)
        raise TypeError(f"arrays from different namespaces cannot be mixed: {described}")
    return array_api_compat.array_namespace(*(a for _, a in items))


def namespace_for(xp: Any):
    """Return the compat namespace for a raw or compat module (``numpy``, ``torch``...)."""
    if xp is None:
        return importlib.import_module("array_api_compat.numpy")
    name = getattr(xp, "__name__", "")
    if name.startswith("array_api_compat") or name == "array_api_strict":
        return xp
    if name in ("numpy", "cupy", "torch"):
        return importlib.import_module(f"array_api_compat.{name}")
    raise TypeError(f"`xp` must be an array namespace module such as numpy or torch; got {xp!r}")


def check_same_device(**named: Any) -> Any:
    """Return the common device of the named arrays; raise ``ValueError`` naming each device."""
    if plain_numpy(named.values()):
        return "cpu"
    devices = [(name, device(a)) for name, a in named.items() if a is not None and is_array(a)]
    if not devices:
        return None
    first = devices[0][1]
    if any(d != first for _, d in devices[1:]):
        described = ", ".join(f"`{name}` on {d}" for name, d in devices)
        raise ValueError(f"arrays must be on one device: {described}")
    return first


def device_kind(x: Array) -> tuple[str, int | None]:
    """Return ``("cpu", None)`` or ``("cuda", index)`` for an array."""
    if type(x) is _NDARRAY:
        return "cpu", None
    if is_cupy_array(x):
        return "cuda", int(x.device.id)
    if is_torch_array(x):
        if x.device.type == "cuda":
            return "cuda", int(x.device.index or 0)
        return x.device.type, None
    return "cpu", None


def dtype_name(dtype: Any) -> str:
    """The name of a dtype in any library: ``"float32"`` for ``"float32"``, ``numpy.float32``,
    ``numpy.dtype("float32")``, ``torch.float32``, CuPy's and array-api-strict's float32.

    Examples
    --------
    >>> import numpy as np
    >>> dtype_name(np.float64), dtype_name(np.dtype("int32")), dtype_name("bool")
    ('float64', 'int32', 'bool')
    """
    if isinstance(dtype, str):
        return dtype
    if isinstance(dtype, type):
        return dtype.__name__
    return str(dtype).rpartition(".")[2]


def result_dtype(xp: Any, *arrays: Any):
    """Floating dtype of the result: the promoted floating dtype of the arrays.

    Integer and boolean arrays become the namespace's default float; float16/bfloat16 stay as
    they are (use :func:`compute_dtype` for the dtype to compute in).
    """
    if xp is _numpy_xp and xp is not None:
        dts = {a.dtype for a in arrays if type(a) is _NDARRAY}
        if len(dts) == 1 and plain_numpy(arrays):
            (dt,) = dts
            if dt is _F64 or dt is _F32:
                return dt
    dts = [a.dtype for a in arrays if a is not None and is_array(a)]
    floats = [d for d in dts if xp.isdtype(d, "real floating")]
    if not floats:
        return _default_float(xp)
    out = floats[0]
    for d in floats[1:]:
        out = xp.result_type(out, d)
    return out


def _default_float(xp: Any):
    info = getattr(xp, "__array_namespace_info__", None)
    if info is not None:
        try:
            return info().default_dtypes()["real floating"]
        except Exception:  # pragma: no cover - very old namespaces
            pass
    return xp.float64


def is_half(xp: Any, dtype: Any) -> bool:
    """True for float16 and bfloat16."""
    if dtype is _F64 or dtype is _F32:
        return False
    f16 = getattr(xp, "float16", None)
    if f16 is not None and dtype == f16:
        return True
    return "bfloat16" in str(dtype)


def compute_dtype(xp: Any, dtype: Any):
    """The dtype arithmetic runs in: float32 for half dtypes, the dtype itself otherwise."""
    if (dtype is _F64 or dtype is _F32) and xp is _numpy_xp:
        return dtype
    if not xp.isdtype(dtype, "real floating"):
        return _default_float(xp)
    return xp.float32 if is_half(xp, dtype) else dtype


def as_float_array(xp: Any, x: Array, name: str):
    """Return ``(x_compute, out_dtype)``: x converted to its compute dtype, and the dtype to return.

    Integer/boolean inputs become the namespace's default float (and are returned in it).
    """
    dt = x.dtype
    if (dt is _F64 or dt is _F32) and xp is _numpy_xp:
        return x, dt
    if xp.isdtype(x.dtype, "complex floating"):
        raise TypeError(f"`{name}` must be real; got dtype {x.dtype}")
    out_dtype = x.dtype if xp.isdtype(x.dtype, "real floating") else _default_float(xp)
    work = compute_dtype(xp, out_dtype)
    if x.dtype != work:
        x = xp.astype(x, work)
    return x, out_dtype


def to_numpy(x: Array) -> np.ndarray:
    """Copy an array of any namespace to a host NumPy array (tests, plots and reports only)."""
    if isinstance(x, np.ndarray):
        return x
    if is_cupy_array(x):
        return x.get()
    if is_torch_array(x):
        t = x.detach().cpu()
        if "bfloat16" in str(t.dtype):
            t = t.float()
        return t.numpy()
    try:
        return np.asarray(x)
    except Exception:
        return np.from_dlpack(x)


def scalar_or_array(xp: Any, value: Any, *, name: str, like: Array, dtype: Any):
    """Convert a Python scalar or array argument to an array in ``like``'s namespace and device."""
    if is_array(value):
        array_namespace(**{name: value, "input": like})
        check_same_device(**{name: value, "input": like})
        return xp.astype(value, dtype) if value.dtype != dtype else value
    return xp.asarray(value, dtype=dtype, device=device(like))


def all_finite(xp: Any, x: Array) -> bool:
    """Host-side check that every element is finite (one reduction, one sync)."""
    if type(x) is _NDARRAY and xp is _numpy_xp:
        return bool(np.isfinite(x).all())
    return bool(xp.all(xp.isfinite(x)))


def finite_scalar(value: Any, name: str, *, positive: bool = False, nonnegative: bool = False) -> float:
    """Validate a real scalar option; ``ValueError`` names the argument and the value."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a real number; got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"`{name}` must be finite; got {v}")
    if positive and not v > 0:
        raise ValueError(f"`{name}` must be positive; got {v}")
    if nonnegative and v < 0:
        raise ValueError(f"`{name}` must be non-negative; got {v}")
    return v
