"""Every tracking benchmark (``asv_benchmarks/benchmarks``) runs once at its smallest size.

asv is not needed: the benchmark classes are found the way asv finds them (``time_``,
``peakmem_``, ``track_`` methods; ``params``/``param_names``), every parameter combination with
its size-like axes at their first (smallest) value goes through ``setup``, each benchmark
method once, and ``teardown``. ``NotImplementedError`` in ``setup`` is asv's skip; anywhere else
it is a failure (asv reports it as one). A broken benchmark fails here, not in a nightly run.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import math
import pkgutil
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: parameter axes that are problem sizes: only their first (smallest) value runs here
SIZE_AXES = {"size", "n", "shape", "nfe", "dim"}
PREFIXES = ("time_", "peakmem_", "track_", "mem_", "timeraw_")


def _modules(package: str):
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("bench_"):
            yield importlib.import_module(f"{package}.{info.name}")


def _cases():
    for module in _modules("asv_benchmarks.benchmarks"):
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if name.startswith("_") or cls.__module__ != module.__name__:
                continue
            methods = [m for m in dir(cls) if m.startswith(PREFIXES) and callable(getattr(cls, m))]
            if methods:
                yield pytest.param(cls, methods, id=f"{module.__name__.rsplit('.', 1)[1]}.{name}")


def _combinations(cls):
    params = getattr(cls, "params", None)
    if params is None or params == []:
        return [()]
    params = list(params)
    if not isinstance(params[0], (list, tuple)):
        params = [params]
    names = list(getattr(cls, "param_names", [f"p{i}" for i in range(len(params))]))
    axes = []
    for name, values in zip(names, params):
        values = list(values)
        assert values, f"{cls.__name__}: parameter {name!r} has no values"
        if name in SIZE_AXES:
            assert all(not isinstance(v, (int, float)) or v >= values[0] for v in values), (
                f"{cls.__name__}: size axis {name!r} must start at its smallest value")
            values = values[:1]
        axes.append(values)
    return list(itertools.product(*axes))


@pytest.mark.parametrize(("cls", "methods"), list(_cases()))
def test_tracking_benchmark_runs_once(cls, methods):
    ran = 0
    for combo in _combinations(cls):
        bench = cls()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if hasattr(bench, "setup"):
                    bench.setup(*combo)
        except NotImplementedError:
            continue  # asv's skip
        try:
            for name in methods:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    value = getattr(bench, name)(*combo)
                if name.startswith("track_"):
                    assert isinstance(value, (int, float)), (name, combo, value)
                    assert math.isfinite(value), (name, combo, value)
            ran += 1
        finally:
            if hasattr(bench, "teardown"):
                bench.teardown(*combo)
    assert ran, f"{cls.__name__}: every combination skipped"


def test_suites_are_separate():
    """The tracking suite times arraygen only; the peers live in the comparison suite."""
    for module in _modules("asv_benchmarks.benchmarks"):
        for _, cls in inspect.getmembers(module, inspect.isclass):
            for values in getattr(cls, "params", []) or []:
                if isinstance(values, (list, tuple)):
                    assert not any(str(v).startswith("peer:") for v in values), cls
    compare = [m.__name__ for m in _modules("asv_benchmarks.compare")]
    assert compare, "the comparison suite has no benchmark modules"
