"""The user's cache directory for arraygen (standard library only, importable from any layer).

``$ARRAYGEN_CACHE_DIR`` when set, else the platform's user cache directory + ``/arraygen``:
``%LOCALAPPDATA%`` on Windows, ``~/Library/Caches`` on macOS, ``$XDG_CACHE_HOME`` (default
``~/.cache``) elsewhere. Never inside the source tree.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["user_cache_dir"]


def user_cache_dir() -> Path:
    """``$ARRAYGEN_CACHE_DIR``, else the user cache directory + ``/arraygen``.

    Examples
    --------
    >>> import os
    >>> from unittest import mock
    >>> with mock.patch.dict(os.environ, {"ARRAYGEN_CACHE_DIR": "/tmp/agk-doc-env"}):
    ...     str(user_cache_dir())
    '/tmp/agk-doc-env'
    """
    env = os.environ.get("ARRAYGEN_CACHE_DIR", "").strip()
    if env:
        return Path(env).expanduser()
    if sys.platform.startswith("win"):
        base = Path(os.environ.get("LOCALAPPDATA", "") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", "").strip() or Path.home() / ".cache")
    return base / "arraygen"
