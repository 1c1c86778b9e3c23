"""Load the installed k-diffusion's ``k_diffusion/sampling.py`` (the real file) for parity tests
and tools/bench_samplers_cpu.py, without running the package ``__init__``, which imports
torchvision, clean-fid, wandb, jsonmerge, ... (k-diffusion is installed with ``--no-deps``).

Use::

    from _kdiffusion import load_sampling
    kd, reason = load_sampling()   # (module, "") or (None, why it is unavailable)

If ``import k_diffusion`` works, its own ``k_diffusion.sampling`` is returned. Otherwise
``sampling.py`` is executed as ``_kdiffusion_shim.sampling`` inside a stand-in package whose
``utils`` is the real ``utils.py`` when that imports, else a module holding only
``append_dims`` (the one ``utils`` name ``sampling.py`` uses) whose source is cut verbatim
out of the installed ``utils.py``.
Only ``sampling.py``'s own imports are needed then: scipy, torch, torchdiffeq, torchsde
(+ trampoline), tqdm.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import sys
import types
from pathlib import Path

_SHIM = "_kdiffusion_shim"

__all__ = ["load_sampling"]


def _exec_file(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return mod


def _utils_module(pkg_dir: Path) -> types.ModuleType:
    path = pkg_dir / "utils.py"
    try:
        return _exec_file(f"{_SHIM}.utils", path)
    except ImportError:  # torchvision, PIL, safetensors... missing: only append_dims is needed
        src = path.read_text()
    node = next((n for n in ast.parse(src).body
                 if isinstance(n, ast.FunctionDef) and n.name == "append_dims"), None)
    if node is None:
        raise ImportError(f"no append_dims in {path}")
    mod = types.ModuleType(f"{_SHIM}.utils")
    mod.__file__ = str(path)
    exec(compile(ast.get_source_segment(src, node), str(path), "exec"), mod.__dict__)
    sys.modules[mod.__name__] = mod
    return mod


@functools.cache
def load_sampling():
    """``(k_diffusion.sampling module, "")``, or ``(None, reason)`` when it cannot be loaded."""
    if "k_diffusion.sampling" in sys.modules:
        return sys.modules["k_diffusion.sampling"], ""
    spec = importlib.util.find_spec("k_diffusion")  # locates the package, runs nothing
    if spec is None or not spec.submodule_search_locations:
        return None, "k-diffusion is not installed"
    try:
        return importlib.import_module("k_diffusion.sampling"), ""
    except Exception:  # its __init__ needs packages we do not have: load sampling.py alone
        for name in [m for m in sys.modules if m == "k_diffusion" or
                     m.startswith("k_diffusion.")]:
            sys.modules.pop(name, None)
    pkg_dir = Path(next(iter(spec.submodule_search_locations)))
    if f"{_SHIM}.sampling" in sys.modules:
        return sys.modules[f"{_SHIM}.sampling"], ""
    try:
        pkg = types.ModuleType(_SHIM)
        pkg.__path__ = []  # nothing else of k-diffusion can be imported through the shim
        pkg.__package__ = _SHIM
        sys.modules[_SHIM] = pkg
        pkg.utils = _utils_module(pkg_dir)
        mod = _exec_file(f"{_SHIM}.sampling", pkg_dir / "sampling.py")
    except Exception as exc:  # e.g. torchsde / torchdiffeq missing
        sys.modules.pop(_SHIM, None)
        sys.modules.pop(f"{_SHIM}.utils", None)
        return None, (f"k-diffusion's sampling.py cannot be loaded "
                      f"({type(exc).__name__}: {exc})")
    pkg.sampling = mod
    return mod, ""
