"""Import layering of the kernel backends, read from the source (AST), not by importing.

* ``arraygen/backends/**`` imports only ``arraygen.backends``, ``arraygen._kernels``,
  ``arraygen._array_api`` and ``arraygen._user_cache`` from arraygen (no op or algorithm
  module above it);
* no backend package (``numba_cpu``, ``numba_cuda``, ``cupy``, ``triton``) imports a sibling
  backend package: what they share lives in ``arraygen/backends/*.py`` (``_philox``,
  ``_interop``);
* ``arraygen/reference`` (the float64 oracles) imports nothing from arraygen.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import arraygen

ROOT = Path(arraygen.__file__).resolve().parent
BACKENDS = ROOT / "backends"
PACKAGES = sorted(p.name for p in BACKENDS.iterdir() if (p / "__init__.py").is_file())
ALLOWED_IN_BACKENDS = ("arraygen.backends", "arraygen._kernels", "arraygen._array_api",
                       "arraygen._user_cache")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, absolute module)`` of every import in ``path`` (relative ones resolved; for
    ``from pkg import name`` ``pkg.name`` is listed, as ``name`` may be a sub-module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out += [(node.lineno, f"{mod}.{alias.name}") for alias in node.names]
    return out


def _arraygen_imports(path):
    return [(line, mod) for line, mod in _imports(path)
            if mod == "arraygen" or mod.startswith("arraygen.")]


def _under(mod: str, prefix: str) -> bool:
    return mod == prefix or mod.startswith(prefix + ".")


def _sources(folder: Path):
    return sorted(folder.rglob("*.py"))


def test_resolver_sees_relative_imports():
    """The scan is not vacuous: it resolves the relative imports the launchers really use."""
    mods = {m for _, m in _arraygen_imports(BACKENDS / "numba_cpu" / "tiled.py")}
    assert "arraygen._kernels.tiled.DIRECT_MAX_D" in mods
    assert "arraygen.backends._interop.like" in mods
    assert len(PACKAGES) >= 4


@pytest.mark.parametrize("path", _sources(BACKENDS), ids=lambda p: str(p.relative_to(ROOT)))
def test_backends_import_nothing_above_them(path):
    bad = [(line, mod) for line, mod in _arraygen_imports(path)
           if not any(_under(mod, ok) for ok in ALLOWED_IN_BACKENDS)]
    assert not bad, f"{path.relative_to(ROOT)} imports from above the backends: {bad}"


@pytest.mark.parametrize("path", _sources(BACKENDS), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_sideways_imports_between_backend_packages(path):
    rel = path.relative_to(BACKENDS).parts
    own = rel[0] if len(rel) > 1 else None
    bad = []
    for line, mod in _arraygen_imports(path):
        for pkg in PACKAGES:
            if pkg != own and _under(mod, f"arraygen.backends.{pkg}"):
                bad.append((line, mod))
    assert not bad, f"{path.relative_to(ROOT)} imports a sibling backend package: {bad}"


@pytest.mark.parametrize("path", _sources(ROOT / "reference"),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_reference_oracles_import_nothing_from_arraygen(path):
    bad = [(line, mod) for line, mod in _arraygen_imports(path)
           if not _under(mod, "arraygen.reference")]
    assert not bad, f"{path.relative_to(ROOT)} imports from arraygen: {bad}"
