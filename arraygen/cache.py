"""Persistent on-disk cache of float arrays (FFT kernels, Fisher buffers...), shared by processes.

Layout: one file per entry, ``agkc1-<sha256 of the key>.agk`` in the cache directory. A file is

``b"AGKC1\\n" + sha256(body).hexdigest() + b"\\n" + body``, ``body = json(key) + b"\\n" + npy``

so a truncated or corrupted file is detected (digest mismatch), deleted and reported as a miss.
Array-valued key parameters are keyed by their bytes, dtype and shape (never by ``str()``,
which NumPy truncates).

Ownership: the cache deletes or touches only files it wrote: entries named
``agkc1-<64 hex digits>.agk`` that start with the magic header, and its own temporary files
``.agkc1-<16 hex digits>.*.tmp``. Anything else in the directory is left alone.

Failures: a cache problem never breaks a computation. Every ``OSError`` (the cache path is a
file, an entry's name is taken by a directory, a lock file of another user, a read-only
directory, a full disk) makes the operation a miss or a skipped write, with one
:class:`CacheWarning` per cache object and the details in the ``arraygen`` log.

Concurrency: writers write a private temporary file in the same directory and publish it with
``os.replace`` (atomic on POSIX and Windows), so readers see either no file or a complete one,
never a torn write; two writers of one key both publish complete files and the last one wins.
Eviction (least recently *accessed* first, access time refreshed on every hit with
``os.utime`` because many file systems do not record it) runs under an advisory ``fcntl`` lock
where the platform has one; a reader whose file is evicted under it gets a miss, not an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import _array_api as aa
from . import _validation as _v
from ._user_cache import user_cache_dir

__all__ = ["CacheWarning", "PersistentKernelCache", "default_cache_dir"]

logger = logging.getLogger("arraygen")

_MAGIC = b"AGKC1\n"
_PREFIX = "agkc1-"
_SUFFIX = ".agk"
_ENTRY = re.compile(r"agkc1-[0-9a-f]{64}\.agk")
_TMP = re.compile(r"\.agkc1-[0-9a-f]{16}\..+\.tmp")
_LOCK = ".agkc1.lock"
_STALE_TMP_SECONDS = 3600.0


class CacheWarning(UserWarning):
    """A cache directory problem (the computation goes on without the cache)."""


def default_cache_dir() -> Path:
    """``$ARRAYGEN_CACHE_DIR``, else the user cache directory + ``/arraygen``.

    The rule of :func:`arraygen._user_cache.user_cache_dir` (shared with the compiled-kernel
    cache): ``%LOCALAPPDATA%`` on Windows, ``~/Library/Caches`` on macOS and
    ``$XDG_CACHE_HOME`` (default ``~/.cache``) elsewhere.

    Examples
    --------
    >>> from unittest import mock
    >>> with mock.patch.dict(os.environ, {"ARRAYGEN_CACHE_DIR": "/tmp/agk-doc-env"}):
    ...     str(default_cache_dir())
    '/tmp/agk-doc-env'
    """
    return user_cache_dir()


def _array_key(value: Any) -> dict:
    """An array key component: sha256 of its little-endian C-order bytes, dtype and shape."""
    arr = np.asarray(aa.to_numpy(value))
    if arr.dtype.kind not in "biufc":
        raise TypeError(f"array-valued key parameters must hold numbers; got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<"), copy=False))
    return {"array": hashlib.sha256(arr.tobytes()).hexdigest(), "dtype": arr.dtype.str,
            "shape": list(arr.shape)}


def _canonical(value: Any) -> Any:
    """A JSON-able, platform-stable form of one key component."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return {"float": v.hex()} if math.isfinite(v) else {"float": repr(v)}
    if isinstance(value, np.ndarray) or aa.is_array(value):
        return _array_key(value)
    if isinstance(value, (tuple, list)):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, type) and issubclass(value, np.generic):
        value = np.dtype(value)
    return str(value).replace("torch.", "")  # dtypes and devices: float32, cuda:0 ...


class PersistentKernelCache:
    """Bounded on-disk cache of float arrays keyed by ``(name, **params)``.

    Parameters
    ----------
    path : str or Path, optional
        Cache directory (created on first write). Default: :func:`default_cache_dir` + ``/kernels``.
    max_bytes : int
        Size bound in bytes of all entries together; least recently accessed entries are evicted
        after a write that passes it. An array larger than ``max_bytes`` is not stored.

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.TemporaryDirectory()
    >>> cache = PersistentKernelCache(folder.name, max_bytes=2**20)
    >>> g = cache.get_or_compute("ones", lambda: np.ones(3), n=3)   # computed and stored
    >>> float(cache.get("ones", n=3).sum())                          # read back
    3.0
    >>> cache.put("w", np.arange(4.0), weights=np.linspace(0, 1, 2000))  # keyed by content
    True
    >>> len(cache), cache.evict()
    (2, 0)
    >>> cache.clear(); len(cache)
    0
    >>> folder.cleanup()
    """

    def __init__(self, path: str | os.PathLike | None = None, max_bytes: int = 256 * 2**20):
        max_bytes = _v.check_int(max_bytes, "max_bytes", minimum=1)
        self.path = Path(path).expanduser() if path is not None else default_cache_dir() / "kernels"
        self.max_bytes = max_bytes
        self._warned = False

    def _problem(self, what: str, exc: OSError) -> None:
        """Log a cache failure; the first one of this cache object is also a CacheWarning."""
        logger.warning("PersistentKernelCache: %s in %s: %s", what, self.path, exc)
        if not self._warned:
            self._warned = True
            warnings.warn(f"PersistentKernelCache: {what} in {self.path} ({exc}); computing "
                          "without the cache (further problems are logged only)", CacheWarning,
                          stacklevel=3)

    def __repr__(self) -> str:
        return f"PersistentKernelCache(path={str(self.path)!r}, max_bytes={self.max_bytes})"

    # keys -------------------------------------------------------------------------------------
    @staticmethod
    def key(name: str, **params: Any) -> str:
        """Stable hex digest of ``(name, params)``.

        Floats are keyed by their exact hex, dicts sorted, arrays (any namespace) by the
        sha256 of their little-endian bytes with dtype and shape.

        Examples
        --------
        >>> a = np.arange(2000.0)
        >>> b = a.copy(); b[1000] = -1.0
        >>> PersistentKernelCache.key("k", w=a) == PersistentKernelCache.key("k", w=b)
        False
        >>> PersistentKernelCache.key("k", n=3) == PersistentKernelCache.key("k", n=np.int64(3))
        True
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"`name` must be a non-empty string; got {name!r}")
        text = json.dumps([name, _canonical(params)], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def _file(self, digest: str) -> Path:
        return self.path / (_PREFIX + digest + _SUFFIX)

    # reading ----------------------------------------------------------------------------------
    def get(self, name: str, *, xp: Any = None, device: Any = None, **params: Any):
        """The stored array for ``(name, params)`` in namespace ``xp`` on ``device``, or None.

        A corrupted or truncated entry is deleted, logged as a warning and reported as a miss.
        """
        digest = self.key(name, **params)
        path = self._file(digest)
        try:
            with open(path, "rb") as fh:
                blob = fh.read()
        except FileNotFoundError:
            return None
        except OSError as exc:  # the path is a file, the entry a directory, no permission...
            self._problem("could not read an entry", exc)
            return None
        arr = self._decode(blob, name, params, path)
        if arr is None:
            return None
        with contextlib.suppress(OSError):
            now = time.time()
            os.utime(path, (now, os.stat(path).st_mtime))
        return self._to_namespace(arr, xp, device)

    def _decode(self, blob: bytes, name: str, params: dict, path: Path) -> np.ndarray | None:
        head = len(_MAGIC) + 65
        ok = blob.startswith(_MAGIC) and len(blob) > head
        if ok:
            digest, body = blob[len(_MAGIC):head - 1], blob[head:]
            ok = hashlib.sha256(body).hexdigest().encode() == digest
        if ok:
            meta, _, payload = body.partition(b"\n")
            try:
                stored = json.loads(meta)
                ok = stored == json.loads(json.dumps([name, _canonical(params)], sort_keys=True))
                arr = np.load(io.BytesIO(payload), allow_pickle=False)
            except (ValueError, OSError, EOFError):
                ok = False
        if not ok:
            logger.warning("PersistentKernelCache: removing corrupted entry %s", path)
            with contextlib.suppress(OSError):
                os.unlink(path)
            return None
        return arr

    @staticmethod
    def _to_namespace(arr: np.ndarray, xp: Any, device: Any):
        if xp is None:
            return arr
        ns = aa.namespace_for(xp)
        if device is None:
            return ns.asarray(arr)
        if aa.is_torch_namespace(ns):
            import torch

            return torch.from_numpy(arr).to(device)
        return ns.asarray(arr, device=device)

    # writing ----------------------------------------------------------------------------------
    def put(self, name: str, array: Any, **params: Any) -> bool:
        """Store ``array`` (any namespace; copied to the host) under ``(name, params)``.

        Returns True if stored, False if the array is larger than ``max_bytes`` or the write
        failed (the failure is logged; a cache never breaks the computation).
        """
        arr = np.asarray(aa.to_numpy(array), order="C")
        if arr.dtype.kind not in "fiucb":
            raise TypeError(f"`array` must hold numbers; got dtype {arr.dtype}")
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        meta = json.dumps([name, _canonical(params)], sort_keys=True).encode()
        body = meta + b"\n" + buf.getvalue()
        blob = _MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body
        if len(blob) > self.max_bytes:
            logger.debug("PersistentKernelCache: %s (%d bytes) exceeds max_bytes", name, len(blob))
            return False
        digest = self.key(name, **params)
        tmp = None
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{_PREFIX}{digest[:16]}.", suffix=".tmp",
                                       dir=self.path)
            with os.fdopen(fd, "wb") as fh:
                fh.write(blob)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self._file(digest))
            tmp = None
        except OSError as exc:
            self._problem(f"could not write {name!r}", exc)
            return False
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        self.evict()
        return True

    def get_or_compute(self, name: str, compute: Callable[[], Any], *, xp: Any = None,
                       device: Any = None, **params: Any):
        """``get(...)``; on a miss, ``compute()``, store it and return it in ``xp``/``device``."""
        hit = self.get(name, xp=xp, device=device, **params)
        if hit is not None:
            return hit
        value = compute()
        self.put(name, value, **params)
        if xp is None:
            return value
        return self._to_namespace(np.asarray(aa.to_numpy(value), order="C"), xp, device)

    # housekeeping -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self):
        """Advisory exclusive lock on this cache's own lock file; yields False if unavailable."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: eviction races only cause misses
            yield True
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fh = open(self.path / _LOCK, "a+b")
        except OSError as exc:  # another user's lock file, a read-only directory...
            self._problem("could not open the lock file", exc)
            yield False
            return
        with fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            except OSError as exc:
                self._problem("could not lock", exc)
                yield False
                return
            try:
                yield True
            finally:
                with contextlib.suppress(OSError):
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    @staticmethod
    def _ours(p: Path) -> bool:
        """An entry this cache wrote: its name pattern, a regular file, the magic header."""
        try:
            with open(p, "rb") as fh:
                return fh.read(len(_MAGIC)) == _MAGIC
        except OSError:
            return False

    def _entries(self) -> list[tuple[float, int, Path]]:
        """``(atime, size, path)`` of this cache's entries; removes its own stale temp files.

        An entry is a regular file with this cache's name pattern and magic header; other
        files are neither counted nor touched.
        """
        out = []
        try:
            if not self.path.is_dir():
                return out
            children = list(self.path.iterdir())
        except OSError as exc:
            self._problem("could not list the directory", exc)
            return out
        now = time.time()
        for p in children:
            entry, tmp = _ENTRY.fullmatch(p.name), _TMP.fullmatch(p.name)
            if not (entry or tmp):
                continue  # not ours: never touched
            try:
                st = p.lstat()
            except OSError:
                continue
            if not os.path.isfile(p) or os.path.islink(p):
                continue
            if entry:
                if self._ours(p):
                    out.append((st.st_atime, st.st_size, p))
            elif now - st.st_mtime > _STALE_TMP_SECONDS:
                with contextlib.suppress(OSError):
                    p.unlink()  # our own temporary file, left behind by a writer that crashed
        return out

    def total_bytes(self) -> int:
        """Bytes held by all entries."""
        return sum(size for _, size, _ in self._entries())

    def __len__(self) -> int:
        return len(self._entries())

    def evict(self) -> int:
        """Delete least recently accessed entries until the total is within ``max_bytes``.

        Returns the number of entries deleted (0 if the lock is unavailable).
        """
        removed = 0
        with self._lock() as locked:
            if not locked:
                return 0
            entries = sorted(self._entries(), key=lambda e: e[0])
            total = sum(size for _, size, _ in entries)
            for _, size, p in entries:
                if total <= self.max_bytes:
                    break
                try:
                    p.unlink()
                    removed += 1
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    self._problem("could not evict an entry", exc)
                total -= size
        if removed:
            logger.debug("PersistentKernelCache: evicted %d entries from %s", removed, self.path)
        return removed

    def clear(self) -> None:
        """Delete every entry this cache wrote (other files in the directory stay)."""
        with self._lock() as locked:
            if not locked:
                return
            for _, _, p in self._entries():
                try:
                    p.unlink()
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    self._problem("could not delete an entry", exc)
