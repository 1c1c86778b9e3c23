"""Where Numba keeps arraygen's compiled kernels, and the notice of a long first compile.

Compiled kernels (``cache=True``) go to the user's cache directory, never into the source tree:

1. ``$ARRAYGEN_CACHE_DIR/numba`` when ``ARRAYGEN_CACHE_DIR`` is set;
2. else Numba's own ``NUMBA_CACHE_DIR`` when that is set (Numba's locator handles it);
3. else ``<user cache dir>/arraygen/numba`` (:func:`arraygen._user_cache.user_cache_dir`, the
   directory :class:`arraygen.cache.PersistentKernelCache` uses by default);

each in a sub-folder named by a fingerprint of the kernel sources (:func:`_source_tag`).

Only functions defined in arraygen's own source files use this location; other Numba code in
the process keeps Numba's default. When the directory cannot be written, a per-user folder of
the temporary directory is used instead (and when neither can, Numba's own locators).

A compile of arraygen kernels that runs past one second logs, on the ``"arraygen"`` logger at
INFO, ``compiling kernels (first run only) ...`` while it runs and ``compiling kernels (first
run only) ... done in X s`` when it ends.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import tempfile
import threading
import time
from pathlib import Path

from ..._user_cache import user_cache_dir

__all__ = ["cache_dir", "install"]

logger = logging.getLogger("arraygen")

_PACKAGE = Path(__file__).resolve().parents[2]  # .../arraygen
NOTICE_AFTER_S = 1.0


def cache_dir() -> Path | None:
    """The directory of arraygen's compiled Numba kernels, or None to leave it to Numba
    (``NUMBA_CACHE_DIR`` set and ``ARRAYGEN_CACHE_DIR`` not)."""
    if (os.environ.get("NUMBA_CACHE_DIR", "").strip()
            and not os.environ.get("ARRAYGEN_CACHE_DIR", "").strip()):
        return None
    return user_cache_dir() / "numba"


def _fallback_dir() -> Path:
    """Where kernels go when :func:`cache_dir` cannot be written: a per-user temporary folder
    (still never the source tree)."""
    user = getattr(os, "getuid", lambda: os.environ.get("USERNAME", "user"))()
    return Path(tempfile.gettempdir()) / f"arraygen-{user}" / "numba"


@functools.cache
def _source_tag() -> str:
    """A fingerprint of the sources the kernels compile from (name, size and modification time
    of every ``.py`` file of arraygen's ``backends`` and ``_kernels`` folders). Numba checks only
    the timestamp of a kernel's own file, but kernels inline helpers from other files: one
    cache folder per fingerprint means an edited helper never meets a stale compiled kernel."""
    digest = hashlib.sha1()
    for folder in ("backends", "_kernels"):
        for path in sorted((_PACKAGE / folder).rglob("*.py")):
            st = path.stat()
            digest.update(f"{path.relative_to(_PACKAGE)}:{st.st_size}:{st.st_mtime_ns};".encode())
    return "src-" + digest.hexdigest()[:12]


def _is_ours(path: str) -> bool:
    try:
        return Path(path).resolve().is_relative_to(_PACKAGE)
    except (OSError, ValueError):
        return False


def _locator_class():
    from numba.core import caching

    class ArraygenCacheLocator(caching._SourceFileBackedLocatorMixin, caching._CacheLocator):
        """Numba cache locator for arraygen's source files: :func:`cache_dir`, one folder per
        source folder (named like Numba's ``NUMBA_CACHE_DIR`` layout)."""

        def __init__(self, py_func, py_file, root):
            self._py_file = py_file
            self._lineno = py_func.__code__.co_firstlineno
            self._cache_path = str(root / self.get_suitable_cache_subpath(py_file))

        def get_cache_path(self):
            return self._cache_path

        @classmethod
        def from_function(cls, py_func, py_file):
            if not _is_ours(py_file):
                return None
            root = cache_dir()
            if root is None:
                return None
            for candidate in (root / _source_tag(), _fallback_dir() / _source_tag()):
                self = cls(py_func, py_file, candidate)
                try:
                    self.ensure_cache_path()
                except OSError:
                    continue
                return self
            return None

    return ArraygenCacheLocator


class _CompileNotice:
    """Numba event listener timing the compiles of arraygen's functions (outermost only)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._depth = 0
        self._start = 0.0
        self._timer = None
        self._announced = False

    def _announce(self):
        with self._lock:
            if self._depth and not self._announced:
                self._announced = True
                logger.info("compiling kernels (first run only) ...")

    def on_start(self, event):
        if not _event_is_ours(event):
            return
        with self._lock:
            self._depth += 1
            if self._depth == 1:
                self._start = time.perf_counter()
                self._announced = False
                self._timer = threading.Timer(NOTICE_AFTER_S, self._announce)
                self._timer.daemon = True
                self._timer.start()

    def on_end(self, event):
        if not _event_is_ours(event):
            return
        with self._lock:
            self._depth -= 1
            if self._depth:
                return
            self._timer.cancel()
            elapsed = time.perf_counter() - self._start
            announced = self._announced
        if announced or elapsed > NOTICE_AFTER_S:
            logger.info("compiling kernels (first run only) ... done in %.1f s", elapsed)


def _event_is_ours(event) -> bool:
    data = event.data if isinstance(event.data, dict) else {}
    func = getattr(data.get("dispatcher"), "py_func", None)
    module = getattr(func, "__module__", None) or ""
    return module == "arraygen" or module.startswith("arraygen.")


_INSTALLED: list[object] = []


def install() -> None:
    """Put the arraygen cache locator first in Numba's list and listen to compile events
    (idempotent; called when :mod:`arraygen.backends.numba_cpu` is imported)."""
    if _INSTALLED:
        return
    from numba.core import caching, event

    class CompileListener(_CompileNotice, event.Listener):
        pass

    locator = _locator_class()
    caching.CacheImpl._locator_classes.insert(0, locator)
    listener = CompileListener()
    event.register("numba:compile", listener)
    _INSTALLED.extend((locator, listener))
