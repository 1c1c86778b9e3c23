"""Numba CPU kernels (``numba.njit(parallel=True)``), one module per hot path.

``philox`` holds the jitted Philox4x32-10 stream code (its source, shared with the Numba-CUDA
kernels, is :mod:`arraygen.backends._philox`). Importing this package points Numba's on-disk
cache of arraygen's kernels at the user's cache directory and announces long first compiles
(:mod:`.compile_cache`).

Helpers for the launchers: :func:`compile_pair` (a ``prange`` kernel as a multi-threaded and a
one-thread dispatcher, each compiled on first use for the types of that call) and
:func:`thread_safe` (launchers callable from many Python threads under every threading layer).
"""

from __future__ import annotations

import functools
import threading
import types

from . import compile_cache

compile_cache.install()

__all__ = ["compile_pair", "thread_safe"]


def compile_pair(func, **options) -> dict:
    """``{parallel: dispatcher}``: a ``prange`` kernel compiled once multi-threaded and once for
    one thread (small inputs: waking the thread pool costs more than the work).

    Nothing is compiled here: each dispatcher compiles (or loads from the cache) the one
    specialisation a call needs, the first time a call needs it.
    """
    import numba

    out = {}
    for parallel in (True, False):
        clone = types.FunctionType(func.__code__, func.__globals__, func.__name__,
                                   func.__defaults__, func.__closure__)
        clone.__qualname__ = f"{func.__qualname__}_{'parallel' if parallel else 'serial'}"
        out[parallel] = numba.njit(parallel=parallel, cache=True, nogil=True, **options)(clone)
    return out


_LAUNCH_LOCK = threading.RLock()
_LAYER: list[str] = []  # the threading layer, once Numba has chosen it


def _serialise_launches() -> bool:
    """True under Numba's ``workqueue`` layer (not thread-safe: concurrent parallel launches
    abort the process) and while the layer is not known yet (no parallel kernel has run)."""
    if not _LAYER:
        import numba

        try:
            _LAYER.append(numba.threading_layer())
        except ValueError:  # chosen at the first parallel launch
            return True
    return _LAYER[0] == "workqueue"


def thread_safe(launcher):
    """Wrap a launcher so that concurrent calls from Python threads are safe.

    Under the ``tbb`` and ``omp`` layers calls run concurrently (both are thread-safe); under
    ``workqueue``, whose pool aborts the process when two threads launch parallel kernels at
    once, launches take turns behind one lock.
    """
    @functools.wraps(launcher)
    def launch(*args, **kwargs):
        if _serialise_launches():
            with _LAUNCH_LOCK:
                return launcher(*args, **kwargs)
        return launcher(*args, **kwargs)

    launch.thread_safe = True
    return launch
