"""Every arraygen module's docstring Examples run as doctests (NumPy only, no GPU).

Modules are found by walking the package (kernel backends under ``arraygen/backends`` are
skipped: their examples would need a GPU or a compiler, and their public faces are the op
modules). A module whose optional dependency is missing is skipped, not failed.
"""

from __future__ import annotations

import doctest
import importlib
import io
import os
import pkgutil

import pytest

import arraygen

#: Sub-packages not walked (kernels for GPUs and compilers; tested by their own suites).
SKIPPED_PACKAGES = ("arraygen.backends",)
#: Modules whose examples need a GPU (none of the walked modules, today).
GPU_MODULES: frozenset[str] = frozenset()
#: Modules run as scripts, not imported.
SCRIPT_MODULES = frozenset({"arraygen.__main__"})
#: Modules whose doctests fail because of a file another change owns: module -> reason.
KNOWN_FAILURES: dict[str, str] = {}

OPTIONFLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


def _walk(path, prefix):
    """Module names under ``path``, descending into packages except the skipped ones."""
    for info in pkgutil.iter_modules(path, prefix):
        if info.name.startswith(SKIPPED_PACKAGES):
            continue
        yield info.name
        if info.ispkg:
            sub = os.path.join(path[0], info.name.rsplit(".", 1)[-1])
            yield from _walk([sub], info.name + ".")


MODULES = sorted({"arraygen", *_walk(arraygen.__path__, "arraygen.")}
                 - SCRIPT_MODULES - GPU_MODULES)


def _param(name):
    if name in KNOWN_FAILURES:
        return pytest.param(name, marks=pytest.mark.xfail(reason=KNOWN_FAILURES[name],
                                                          strict=False))
    return name


def test_modules_are_found():
    """The walk sees the op modules and skips the backends (a broken walk would test nothing)."""
    for name in ("arraygen.tiled", "arraygen.metrics", "arraygen.cache", "arraygen.testing",
                 "arraygen._validation"):
        assert name in MODULES
    assert not any(m.startswith("arraygen.backends") for m in MODULES)


@pytest.mark.parametrize("name", [_param(m) for m in MODULES])
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write here
    try:
        module = importlib.import_module(name)
    except ImportError as exc:  # an optional dependency of this module is not installed
        pytest.skip(f"{name} cannot be imported here: {exc}")
    tests = [t for t in doctest.DocTestFinder(exclude_empty=True).find(module, name)
             if t.examples]
    if not tests:
        pytest.skip(f"{name} has no docstring examples")
    runner = doctest.DocTestRunner(optionflags=OPTIONFLAGS)
    report = io.StringIO()
    for test in tests:
        runner.run(test, out=report.write)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in " \
                               f"{name}:\n{report.getvalue()}"
