"""Fixtures: ``xp`` over installed namespaces and ``kernel_backend`` over usable backends.

* ``xp``: numpy, array_api_strict, torch:cpu, and on a GPU machine cupy and torch:cuda.
  ``ARRAYGEN_TEST_NAMESPACES=numpy,torch:cpu`` selects a subset. The fixture value is a
  :class:`TestNamespace`: the compat namespace (``xp.float32``, ``xp.sum``...) plus ``.device``,
  ``.name``, ``.asarray(numpy_array)`` (placed on the device) and ``.namespace``.
* ``kernel_backend``: array_api, numba_cpu, numba_cuda, cupy, triton where usable;
  ``ARRAYGEN_TEST_BACKENDS`` selects a subset. Its value has ``.name`` and ``.xp`` (the
  TestNamespace the backend runs on: numba_cpu -> numpy, numba_cuda -> cupy, or numpy under the
  CUDA simulator, cupy -> cupy, triton -> torch:cuda, or torch:cpu under the interpreter).

On a machine with no NVIDIA device the GPU backends are tested in their simulators
(``NUMBA_ENABLE_CUDASIM=1``, ``TRITON_INTERPRET=1``), set here before anything imports them;
``ARRAYGEN_TEST_SIMULATE=0`` turns that off.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
from typing import Any

import numpy as np
import pytest

_HAS_NVIDIA = os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvidia0")
if not _HAS_NVIDIA and os.environ.get("ARRAYGEN_TEST_SIMULATE", "1") != "0":
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
    os.environ.setdefault("TRITON_INTERPRET", "1")

from arraygen import _array_api as aa  # noqa: E402
from arraygen.backends import BACKENDS, available, is_simulated  # noqa: E402


def pytest_configure(config):
    # Registered here, after the simulator switches above: naming a numba warning class in
    # pyproject.toml would import numba before they are set.
    config.addinivalue_line("filterwarnings",
                            "ignore::numba.core.errors.NumbaPerformanceWarning")


@dataclasses.dataclass(frozen=True)
class TestNamespace:
    """A compat namespace bound to one device, for building test inputs."""

    __test__ = False
    name: str
    namespace: Any
    device: Any

    def __getattr__(self, attr):
        return getattr(self.namespace, attr)

    def asarray(self, a, dtype=None, copy=None):
        """``a`` (NumPy or nested lists) as an array of this namespace on this device."""
        if isinstance(dtype, str):
            dtype = getattr(self.namespace, dtype)
        arr = np.asarray(a)
        if self.name.startswith("torch"):
            import torch

            out = torch.from_numpy(np.ascontiguousarray(arr)).to(self.device)
            return out if dtype is None else out.to(dtype)
        out = self.namespace.asarray(arr, device=self.device)
        return out if dtype is None else self.namespace.astype(out, dtype)

    def to_numpy(self, a) -> np.ndarray:
        return aa.to_numpy(a)

    def __repr__(self) -> str:
        return self.name


def _cuda_usable() -> bool:
    if not _HAS_NVIDIA:
        return False
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def _make_namespace(name: str) -> TestNamespace | None:
    module, _, dev = name.partition(":")
    if importlib.util.find_spec(module) is None:
        return None
    if module == "numpy":
        import array_api_compat.numpy as ns

        return TestNamespace(name, ns, "cpu")
    if module == "array_api_strict":
        import array_api_strict as ns

        return TestNamespace(name, ns, ns.Device("CPU_DEVICE"))
    if module == "torch":
        if dev == "cuda" and not _cuda_usable():
            return None
        import array_api_compat.torch as ns
        import torch

        # an explicit index: results report cuda:0, and torch.device("cuda") != cuda:0
        return TestNamespace(name, ns, torch.device("cuda:0" if dev == "cuda" else "cpu"))
    if module == "cupy":
        if not _cuda_usable():
            return None
        try:
            import array_api_compat.cupy as ns
            import cupy

            if cupy.cuda.runtime.getDeviceCount() < 1:
                return None
        except Exception:
            return None
        return TestNamespace(name, ns, cupy.cuda.Device(0))
    return None


_ALL_NAMESPACES = ("numpy", "array_api_strict", "torch:cpu", "cupy", "torch:cuda")


def _selected(env: str, universe) -> list[str]:
    text = os.environ.get(env, "").strip()
    if not text:
        return list(universe)
    wanted = [t.strip() for t in text.split(",") if t.strip()]
    unknown = set(wanted) - set(universe)
    if unknown:
        raise pytest.UsageError(f"{env}: unknown names {sorted(unknown)}; valid: {list(universe)}")
    return wanted


def namespace_params() -> list:
    params = []
    for name in _selected("ARRAYGEN_TEST_NAMESPACES", _ALL_NAMESPACES):
        ns = _make_namespace(name)
        if ns is not None:
            params.append(pytest.param(ns, id=name))
    return params


@pytest.fixture(params=namespace_params())
def xp(request) -> TestNamespace:
    return request.param


@dataclasses.dataclass(frozen=True)
class KernelBackend:
    """A usable backend and the namespace its inputs are built in."""

    name: str
    xp: TestNamespace
    simulated: bool

    def __repr__(self) -> str:
        return self.name


def _backend_namespace(name: str) -> TestNamespace | None:
    if name in ("array_api", "numba_cpu"):
        return _make_namespace("numpy")
    if name == "numba_cuda":
        return _make_namespace("numpy") if is_simulated(name) else _make_namespace("cupy")
    if name == "cupy":
        return _make_namespace("cupy")
    if name == "triton":
        return _make_namespace("torch:cpu" if is_simulated(name) else "torch:cuda")
    return None


def kernel_backend_params() -> list:
    status = available()
    params = []
    for name in _selected("ARRAYGEN_TEST_BACKENDS", BACKENDS):
        ns = _backend_namespace(name) if status[name] is None else None
        if ns is None:
            reason = status[name] or "no namespace to run it on"
            params.append(pytest.param(None, id=name, marks=pytest.mark.skip(reason=reason)))
        else:
            params.append(pytest.param(KernelBackend(name, ns, is_simulated(name)), id=name))
    return params


@pytest.fixture(params=kernel_backend_params())
def kernel_backend(request) -> KernelBackend:
    return request.param


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh seeded NumPy generator for test inputs."""
    return np.random.default_rng(20261122)


@pytest.fixture(scope="session")
def dask_client():
    """One LocalCluster (2 worker processes x 1 thread) shared by every Dask test."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, silence_logs=40) as cluster, \
            distributed.Client(cluster) as client:
        yield client
