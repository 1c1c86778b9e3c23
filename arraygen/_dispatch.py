"""Hot-path registry and backend selection.

Selection for one op call, in order:

1. the ``backend=`` keyword,
2. the ``ARRAYGEN_BACKEND`` environment variable,
3. automatic: host input (NumPy arrays, torch CPU tensors) -> ``numba_cpu`` if usable, else
   ``array_api``; CuPy or torch CUDA input -> the op's GPU order (fastest first, as measured by
   the benchmarks); anything else (array_api_strict, ...) -> ``array_api``. The Numba kernels
   take torch CPU tensors zero-copy (NumPy views of their memory) and return torch tensors of
   the same dtype on the CPU.

An explicit choice (1 or 2) that cannot be honoured raises :class:`BackendError` naming the
reason and the backends that could run this call. The automatic choice never raises: it falls
back to the Array-API path. Torch tensors that require grad always go to the Array-API path,
which autograd can differentiate; the kernels cannot.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
from collections.abc import Callable
from typing import Any

from . import _array_api as aa
from .backends import BACKENDS, available, is_simulated

__all__ = ["BackendError", "OpSpec", "kernel", "register", "select", "spec"]

logger = logging.getLogger("arraygen")


class BackendError(ValueError):
    """An explicitly requested backend cannot run this call (the message says why)."""


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """One hot-path op: its Array-API implementation and its kernel launchers.

    Attributes
    ----------
    name
        Public op name, e.g. ``"fisher_diagonal"``.
    kernels
        Backend name -> ``"module:function"`` of the launcher (imported on first use).
    gpu_order
        Kernel backends to try, in order, for CUDA input (fastest first).
    """

    name: str
    kernels: dict[str, str]
    gpu_order: tuple[str, ...]

    def __post_init__(self) -> None:
        unknown = set(self.kernels) - set(BACKENDS[1:])
        if unknown:
            raise ValueError(f"op {self.name!r}: unknown kernel backends {sorted(unknown)}")
        missing = set(self.gpu_order) - set(self.kernels)
        if missing:
            raise ValueError(f"op {self.name!r}: gpu_order names {sorted(missing)} with no kernel")


_OPS: dict[str, OpSpec] = {}
_LAUNCHERS: dict[tuple[str, str], Callable[..., Any]] = {}  # (op, backend) -> launcher


def register(name: str, *, kernels: dict[str, str], gpu_order: tuple[str, ...]) -> OpSpec:
    """Register a hot-path op (called once by the module that defines its public function)."""
    op = OpSpec(name=name, kernels=dict(kernels), gpu_order=tuple(gpu_order))
    _OPS[name] = op
    for key in [k for k in _LAUNCHERS if k[0] == name]:
        del _LAUNCHERS[key]
    return op


def spec(name: str) -> OpSpec:
    """The registered :class:`OpSpec` of an op."""
    return _OPS[name]


def registered_ops() -> dict[str, OpSpec]:
    """All registered ops (for ``python -m arraygen info`` and the docs table)."""
    return dict(_OPS)


def _requested(backend: str | None) -> tuple[str | None, str]:
    if backend is not None:
        source = "backend="
    else:
        backend = os.environ.get("ARRAYGEN_BACKEND", "").strip() or None
        source = "ARRAYGEN_BACKEND"
    if backend is not None and backend not in BACKENDS:
        raise BackendError(
            f"unknown backend {backend!r} (from {source}); valid names are: {', '.join(BACKENDS)}"
        )
    return backend, source


def _requires_grad(arrays: tuple[Any, ...]) -> bool:
    return any(aa.is_torch_array(a) and a.requires_grad for a in arrays)


def _why_not(backend: str, op: OpSpec, arrays: tuple[Any, ...]) -> str | None:
    """None if ``backend`` can run ``op`` on ``arrays`` here, else the reason."""
    if backend == "array_api":
        return None
    if backend not in op.kernels:
        return f"{op.name} has no {backend} implementation"
    status = available()[backend]
    if status is not None:
        return status
    if _requires_grad(arrays):
        return "kernels do not propagate gradients and a torch input requires grad"
    kinds = {aa.device_kind(a)[0] for a in arrays}
    libs = {type(a).__module__.split(".")[0] for a in arrays}
    kind = "cuda" if "cuda" in kinds else next(iter(kinds))
    if kind not in ("cpu", "cuda"):
        return f"arrays on device type {kind!r} are not supported by kernel backends"
    if backend == "numba_cpu":
        if kind != "cpu":
            return "numba_cpu runs on host (CPU) arrays; the arrays are on a CUDA device"
        return None
    if backend == "numba_cuda":
        if kind == "cuda" or is_simulated("numba_cuda"):
            return None
        return "numba_cuda needs CUDA arrays (CuPy or torch on cuda)"
    if backend == "cupy":
        if kind != "cuda":
            return "cupy needs CUDA arrays (CuPy or torch on cuda)"
        return None
    if backend == "triton":
        if kind == "cuda":
            return None
        if is_simulated("triton") and libs <= {"numpy", "torch"}:
            return None
        return "triton needs CUDA arrays (torch or CuPy on cuda)"
    return f"unknown backend {backend!r}"  # pragma: no cover


def _is_host_kernel_input(a: Any) -> bool:
    """NumPy arrays and torch CPU tensors: what the Numba CPU kernels take without a copy."""
    if aa.is_numpy_array(a):
        return True
    return aa.is_torch_array(a) and a.device.type == "cpu"


def select(op_name: str, *arrays: Any, backend: str | None = None,
           prefer_array_api: bool = False) -> str:
    """Choose the backend for one call of ``op_name`` on ``arrays`` (see module docstring).

    ``prefer_array_api`` is the op's size-based hint: when the choice is automatic, shapes the
    kernels handle poorly (e.g. wide matrix-product problems better served by the vendor BLAS
    through the Array-API path) take the Array-API path; explicit choices are unaffected.
    """
    op = _OPS[op_name]
    if (backend is None and aa.plain_numpy(arrays)
            and not os.environ.get("ARRAYGEN_BACKEND", "").strip()):
        # fast path, plain NumPy input and no explicit choice: the automatic rule below reduces
        # to "numba_cpu if this op has it and it is usable, else array_api"
        if not prefer_array_api and "numba_cpu" in op.kernels and (
                available()["numba_cpu"] is None):
            logger.debug("%s: automatic backend %s", op_name, "numba_cpu")
            return "numba_cpu"
        return "array_api"
    arrays = tuple(a for a in arrays if a is not None and aa.is_array(a))
    choice, source = _requested(backend)
    if choice is not None:
        reason = _why_not(choice, op, arrays)
        if reason is not None:
            usable = [b for b in BACKENDS if _why_not(b, op, arrays) is None]
            raise BackendError(
                f"backend {choice!r} (from {source}) cannot run {op_name} here: {reason}. "
                f"Usable backends for these arrays: {', '.join(usable)}"
            )
        logger.debug("%s: backend %s (from %s)", op_name, choice, source)
        return choice
    kinds = {aa.device_kind(a)[0] for a in arrays}
    if prefer_array_api:
        order = ()
    elif "cuda" in kinds:
        order = op.gpu_order
    elif arrays and all(_is_host_kernel_input(a) for a in arrays):
        order = ("numba_cpu",)
    else:
        order = ()
    for name in order:
        if is_simulated(name):
            continue
        if _why_not(name, op, arrays) is None:
            logger.debug("%s: automatic backend %s", op_name, name)
            return name
    return "array_api"


def kernel(op_name: str, backend: str) -> Callable[..., Any]:
    """Import and return the launcher of ``op_name`` for a kernel backend.

    Numba CPU launchers come wrapped by :func:`arraygen.backends.numba_cpu.thread_safe` (safe to
    call from many Python threads under any Numba threading layer) when they are not already.
    """
    launcher = _LAUNCHERS.get((op_name, backend))
    if launcher is not None:
        return launcher
    target = _OPS[op_name].kernels[backend]
    module, _, function = target.partition(":")
    launcher = getattr(importlib.import_module(module), function)
    if backend == "numba_cpu" and not getattr(launcher, "thread_safe", False):
        from .backends.numba_cpu import thread_safe

        launcher = thread_safe(launcher)
    _LAUNCHERS[op_name, backend] = launcher
    return launcher
