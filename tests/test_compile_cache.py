"""Compiled Numba kernels go to the user's cache directory (ARRAYGEN_CACHE_DIR here), never into
the source tree; a second process loads them instead of compiling; a compile is announced on
the "arraygen" logger."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import arraygen
from arraygen.backends import available

pytestmark = pytest.mark.skipif(available()["numba_cpu"] is not None,
                                reason=str(available()["numba_cpu"]))

PACKAGE = Path(arraygen.__file__).resolve().parent

SCRIPT = textwrap.dedent("""
    import logging, sys
    import numpy as np
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s: %(message)s")
    from arraygen.backends.numba_cpu import compile_cache
    compile_cache.NOTICE_AFTER_S = 0.0  # announce every compile, however short
    from arraygen.backends.numba_cpu import fisher
    s = np.arange(24.0).reshape(3, 8)
    out = fisher.fisher_diagonal(s, np.full(3, 0.5))
    assert np.array_equal(out, s * s + 0.5)
    print("cache dir", compile_cache.cache_dir())
""")


def _cache_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.suffix in (".nbi", ".nbc")}


def _run(env_updates: dict[str, str]) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    for name in ("ARRAYGEN_CACHE_DIR", "NUMBA_CACHE_DIR", "NUMBA_DISABLE_JIT"):
        env.pop(name, None)
    env.update(env_updates)
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_kernels_cached_in_arraygen_cache_dir_not_in_the_source_tree(tmp_path):
    before = {p: p.stat().st_mtime_ns for p in _cache_files(PACKAGE)}
    first = _run({"ARRAYGEN_CACHE_DIR": str(tmp_path)})
    assert f"cache dir {tmp_path / 'numba'}" in first.stdout
    files = _cache_files(tmp_path / "numba")
    assert any(p.name.startswith("fisher._diagonal_kernel") for p in files), sorted(files)
    after = {p: p.stat().st_mtime_ns for p in _cache_files(PACKAGE)}
    assert after == before, "kernels were cached inside the source tree"
    assert "arraygen: compiling kernels (first run only) ... done in" in first.stdout
    # a new process finds the kernels: nothing to compile, nothing announced
    second = _run({"ARRAYGEN_CACHE_DIR": str(tmp_path)})
    assert "compiling kernels" not in second.stdout
    assert _cache_files(tmp_path / "numba") == files


def test_numba_cache_dir_is_respected_without_arraygen_cache_dir(tmp_path):
    proc = _run({"NUMBA_CACHE_DIR": str(tmp_path)})
    assert "cache dir None" in proc.stdout
    assert any(p.name.startswith("fisher._diagonal_kernel") for p in _cache_files(tmp_path))


def test_default_cache_dir_is_a_user_cache_dir(tmp_path, monkeypatch):
    from arraygen.backends.numba_cpu import compile_cache

    monkeypatch.delenv("ARRAYGEN_CACHE_DIR", raising=False)
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path))
    default = compile_cache.cache_dir()
    assert default.parts[-2:] == ("arraygen", "numba")
    assert not default.resolve().is_relative_to(PACKAGE)
    from arraygen.cache import default_cache_dir  # the persistent kernel cache: same root

    assert default.parent == default_cache_dir()
    monkeypatch.setenv("ARRAYGEN_CACHE_DIR", str(tmp_path / "mine"))
    assert compile_cache.cache_dir() == tmp_path / "mine" / "numba"


def test_unwritable_cache_dir_falls_back_to_a_temporary_folder(tmp_path):
    """A cache dir that cannot be created (a file is in the way) never sends the kernels into
    the source tree."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    (tmp_path / "tmp").mkdir()
    before = {p: p.stat().st_mtime_ns for p in _cache_files(PACKAGE)}
    _run({"ARRAYGEN_CACHE_DIR": str(blocker), "TMPDIR": str(tmp_path / "tmp")})
    assert {p: p.stat().st_mtime_ns for p in _cache_files(PACKAGE)} == before
    assert any(p.name.startswith("fisher._diagonal_kernel")
               for p in _cache_files(tmp_path / "tmp"))


def test_edited_kernel_sources_get_a_fresh_cache_folder(tmp_path):
    """Kernels inline helpers from other files, whose edits Numba's own timestamp check of the
    kernel's file misses: the cache folder is keyed by a fingerprint of all kernel sources."""
    from arraygen.backends.numba_cpu import compile_cache

    tag = compile_cache._source_tag()
    assert tag.startswith("src-") and tag == compile_cache._source_tag()
    first = _run({"ARRAYGEN_CACHE_DIR": str(tmp_path)})
    assert "compiling kernels" in first.stdout
    assert {p.parent.parent.name for p in _cache_files(tmp_path / "numba")} == {tag}
    # the same kernels under another fingerprint (an edited helper file): compiled again
    global SCRIPT
    edited = SCRIPT.replace("compile_cache.NOTICE_AFTER_S = 0.0",
                            "compile_cache.NOTICE_AFTER_S = 0.0\n"
                            "compile_cache._source_tag = lambda: 'src-edited'")
    old, SCRIPT = SCRIPT, edited
    try:
        second = _run({"ARRAYGEN_CACHE_DIR": str(tmp_path)})
    finally:
        SCRIPT = old
    assert "compiling kernels (first run only) ... done in" in second.stdout
    assert (tmp_path / "numba" / "src-edited").is_dir()
