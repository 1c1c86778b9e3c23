"""Importing arraygen touches no GPU library."""

from __future__ import annotations

import subprocess
import sys


def test_import_does_not_import_gpu_libraries():
    code = (
        "import sys, arraygen\n"
        "heavy = [m for m in ('cupy', 'torch', 'triton', 'numba.cuda', 'numba') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported at `import arraygen`: {out.stdout.strip()}"


def test_cli_info_runs():
    out = subprocess.run([sys.executable, "-m", "arraygen", "info"], capture_output=True,
                         text=True, check=True)
    assert "backends:" in out.stdout and "array_api" in out.stdout
