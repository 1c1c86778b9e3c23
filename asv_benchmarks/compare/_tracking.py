"""The tracking suite's modules, whether asv imports this folder as the top-level package
``compare`` or Python imports it as ``asv_benchmarks.compare``."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])


def tracking(name: str):
    """``asv_benchmarks.benchmarks.<name>`` (the repository root joins ``sys.path`` if needed)."""
    if _ROOT not in sys.path:
        sys.path.append(_ROOT)
    return importlib.import_module(f"asv_benchmarks.benchmarks.{name}")
