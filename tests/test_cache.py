"""PersistentKernelCache: round trip, keys, eviction, corruption, concurrent processes."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from arraygen import _array_api as aa
from arraygen.cache import PersistentKernelCache, default_cache_dir


def _payload(i: int) -> np.ndarray:
    """Content determined by the key, so any complete read can be checked exactly."""
    return np.random.default_rng(i).standard_normal(64 + 32 * (i % 3)).astype(np.float32)


def test_round_trip_dtypes_shapes(tmp_path):
    cache = PersistentKernelCache(tmp_path)
    arrays = {"a": np.arange(12, dtype=np.float64).reshape(3, 4),
              "b": np.linspace(0, 1, 7, dtype=np.float32),
              "c": np.array(3.5), "d": np.arange(5, dtype=np.int64)}
    for name, arr in arrays.items():
        assert cache.get(name, shape=list(arr.shape)) is None
        assert cache.put(name, arr, shape=list(arr.shape))
    for name, arr in arrays.items():
        got = cache.get(name, shape=list(arr.shape))
        assert got.dtype == arr.dtype and got.shape == arr.shape
        np.testing.assert_array_equal(got, arr)
    assert len(cache) == 4
    assert cache.get("a", shape=[4, 3]) is None  # other params, other entry


def test_returns_requested_namespace_and_device(tmp_path, xp):
    cache = PersistentKernelCache(tmp_path)
    arr = np.linspace(-1, 1, 9, dtype=np.float32).reshape(3, 3)
    cache.put("k", xp.asarray(arr), sigma=1.0)  # stored from any namespace
    got = cache.get("k", xp=xp.namespace, device=xp.device, sigma=1.0)
    assert aa.array_namespace(got) is aa.array_namespace(xp.asarray(arr))
    assert aa.device(got) == aa.device(xp.asarray(arr)) and got.dtype == xp.float32
    np.testing.assert_array_equal(aa.to_numpy(got), arr)


def test_key_is_stable_and_discriminating():
    k = PersistentKernelCache.key
    assert k("g", shape=[64, 64], sigma=1.0, dtype="float32") == k(
        "g", dtype="float32", sigma=1.0, shape=(64, 64))
    assert k("g", sigma=1.0) != k("g", sigma=1.0 + 1e-15)
    assert k("g", sigma=1.0) != k("h", sigma=1.0)
    assert k("g", dtype="float32") == k("g", dtype=np.dtype("float32"))
    code = ("from arraygen.cache import PersistentKernelCache as C;"
            "print(C.key('g', shape=[64, 64], sigma=0.1, dtype='float32'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=dict(os.environ, PYTHONHASHSEED="123"))
    assert out.stdout.strip() == k("g", shape=[64, 64], sigma=0.1, dtype="float32")


def test_get_or_compute_computes_once(tmp_path):
    cache = PersistentKernelCache(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return np.full(4, 2.0)

    a = cache.get_or_compute("x", compute, n=4)
    b = cache.get_or_compute("x", compute, n=4)
    assert len(calls) == 1
    np.testing.assert_array_equal(a, b)
    fresh = PersistentKernelCache(tmp_path)  # another instance (another process) sees it
    np.testing.assert_array_equal(fresh.get("x", n=4), a)


def test_lru_eviction_by_access_time(tmp_path):
    one = len(_blob_of(tmp_path, _payload(0)))
    cache = PersistentKernelCache(tmp_path / "c", max_bytes=3 * one + one // 2)
    for i in (0, 3, 6):  # same size (i % 3 == 0)
        cache.put("e", _payload(i), i=i)
        time.sleep(0.02)
    assert cache.get("e", i=0) is not None  # refresh 0: now 3 is least recently used
    time.sleep(0.02)
    cache.put("e", _payload(9), i=9)
    assert cache.get("e", i=3) is None
    for i in (0, 6, 9):
        np.testing.assert_array_equal(cache.get("e", i=i), _payload(i))
    assert cache.total_bytes() <= cache.max_bytes


def _blob_of(tmp_path, arr) -> bytes:
    probe = PersistentKernelCache(tmp_path / "probe")
    probe.put("e", arr, i=0)
    return next((tmp_path / "probe").glob("*.agk")).read_bytes()


def test_entry_larger_than_bound_is_not_stored(tmp_path):
    cache = PersistentKernelCache(tmp_path, max_bytes=1000)
    assert not cache.put("big", np.zeros(1000), n=1000)
    assert cache.get("big", n=1000) is None and len(cache) == 0


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_corrupted_entry_is_a_logged_miss(tmp_path, caplog, damage):
    cache = PersistentKernelCache(tmp_path)
    cache.put("k", np.arange(100.0), n=100)
    (path,) = tmp_path.glob("*.agk")
    blob = bytearray(path.read_bytes())
    if damage == "flip":
        blob[-7] ^= 0x10
    elif damage == "truncate":
        blob = blob[: len(blob) // 2]
    else:
        blob = bytearray(b"not a cache file")
    path.write_bytes(bytes(blob))
    with caplog.at_level(logging.WARNING, logger="arraygen"):
        assert cache.get("k", n=100) is None
    assert "corrupted" in caplog.text
    assert not path.exists()
    assert cache.get_or_compute("k", lambda: np.arange(100.0), n=100)[99] == 99.0


def test_default_location_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("ARRAYGEN_CACHE_DIR", str(tmp_path / "envdir"))
    assert default_cache_dir() == tmp_path / "envdir"
    cache = PersistentKernelCache()
    assert cache.path == tmp_path / "envdir" / "kernels"
    cache.put("k", np.ones(2), a=1)
    assert list((tmp_path / "envdir" / "kernels").glob("*.agk"))


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="`max_bytes` must be >= 1; got 0"):
        PersistentKernelCache(tmp_path, max_bytes=0)
    with pytest.raises(TypeError, match="`max_bytes` must be an integer"):
        PersistentKernelCache(tmp_path, max_bytes=1.5)
    with pytest.raises(TypeError, match="`name` must be a non-empty string"):
        PersistentKernelCache.key("")
    with pytest.raises(TypeError, match="`array` must hold numbers"):
        PersistentKernelCache(tmp_path).put("k", np.array(["a"]))


def _worker(path: str, max_bytes: int, seed: int, rounds: int, queue) -> None:
    """Write and read shared keys; report every inconsistency (a torn or wrong read).

    A torn read would be caught by the digest and logged as a corrupted entry, so every
    warning of the ``arraygen`` logger counts as an error too.
    """
    warnings_seen = []

    class _Count(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.WARNING:
                warnings_seen.append(record.getMessage())

    logging.getLogger("arraygen").addHandler(_Count())
    cache = PersistentKernelCache(path, max_bytes=max_bytes)
    rng = np.random.default_rng(seed)
    errors, hits = [], 0
    for _ in range(rounds):
        i = int(rng.integers(0, 6))
        if rng.random() < 0.5:
            cache.put("shared", _payload(i), i=i)
        got = cache.get("shared", i=i)
        if got is not None:
            hits += 1
            if got.shape != _payload(i).shape or not np.array_equal(got, _payload(i)):
                errors.append(f"key {i}: wrong content")
    queue.put((errors + warnings_seen, hits))


@pytest.mark.parametrize("max_bytes", [1 << 30, 1200])  # no eviction / constant eviction
def test_concurrent_processes(tmp_path, max_bytes):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), max_bytes, s, 60, queue))
             for s in range(4)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    errors = [e for errs, _ in results for e in errs]
    assert not errors, errors[:5]
    assert sum(h for _, h in results) > 0
    assert not list(tmp_path.glob("*.tmp"))  # every writer published or cleaned up
    cache = PersistentKernelCache(tmp_path, max_bytes=max_bytes)
    assert cache.total_bytes() <= max_bytes
    for i in range(6):
        got = cache.get("shared", i=i)
        assert got is None or np.array_equal(got, _payload(i))


# ------------------------------------------------------------------------------------------
# issue 13: content keys for arrays, only own files touched, OSErrors warn once and compute
# ------------------------------------------------------------------------------------------

def test_array_params_are_keyed_by_content():
    """str() truncates long arrays: two different 2,000-element arrays shared a key."""
    a = np.arange(2000.0)
    b = a.copy()
    b[1000] += 0.5
    assert str(a) == str(b)  # the premise: NumPy's repr hides the difference
    k = PersistentKernelCache.key
    assert k("g", w=a) != k("g", w=b)
    assert k("g", w=a) == k("g", w=a.copy())  # content, not identity
    assert k("g", w=a) != k("g", w=a.astype(np.float32))  # dtype
    assert k("g", w=a) != k("g", w=a.reshape(40, 50))  # shape
    assert k("g", w=a) == k("g", w=a.astype(">f8"))  # byte order is not content
    assert k("g", w=[a, 1]) != k("g", w=[b, 1])  # nested


def test_get_returns_the_array_of_its_own_key(tmp_path):
    cache = PersistentKernelCache(tmp_path)
    a = np.arange(2000.0)
    b = a.copy()
    b[1000] += 0.5
    cache.put("weights", a * 2, w=a)
    assert cache.get("weights", w=b) is None  # a different key, not a's entry
    cache.put("weights", b * 2, w=b)
    np.testing.assert_array_equal(cache.get("weights", w=a), a * 2)
    np.testing.assert_array_equal(cache.get("weights", w=b), b * 2)


def test_only_own_files_are_deleted(tmp_path):
    """Eviction and clear used to delete any *.agk and any *.tmp older than an hour."""
    cache = PersistentKernelCache(tmp_path, max_bytes=4000)
    old = time.time() - 7200
    foreign = {name: tmp_path / name for name in (
        "notes.tmp", "other.agk", "a" * 64 + ".agk", "agkc1-" + "b" * 64 + ".agk",
        ".agkc1-zz.tmp")}
    for p in foreign.values():
        p.write_bytes(b"someone else's data" * 20)
        os.utime(p, (old, old))
    (tmp_path / "dir.agk").mkdir()
    own_stale = tmp_path / (".agkc1-" + "c" * 16 + ".x1.tmp")
    own_fresh = tmp_path / (".agkc1-" + "d" * 16 + ".x2.tmp")
    for p in (own_stale, own_fresh):
        p.write_bytes(b"partial")
    os.utime(own_stale, (old, old))
    for i in range(6):  # far past max_bytes: eviction runs after every write
        cache.put("e", np.full(200, float(i)), i=i)
    assert 0 < len(cache) < 6
    cache.clear()
    assert len(cache) == 0
    assert all(p.exists() for p in foreign.values()) and (tmp_path / "dir.agk").is_dir()
    assert not own_stale.exists() and own_fresh.exists()


def _cache_warnings(record):
    from arraygen.cache import CacheWarning

    return [w for w in record if issubclass(w.category, CacheWarning)]


def _compute_twice(cache):
    """get_or_compute twice through a broken cache: both compute, one CacheWarning."""
    import warnings

    calls = []

    def compute():
        calls.append(1)
        return np.arange(5.0)

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(2):
            np.testing.assert_array_equal(cache.get_or_compute("k", compute, n=5),
                                          np.arange(5.0))
        cache.evict()
        cache.clear()
        len(cache)
    return len(calls), _cache_warnings(record)


def test_cache_path_is_a_file(tmp_path):
    target = tmp_path / "not-a-dir"
    target.write_bytes(b"x")
    calls, warned = _compute_twice(PersistentKernelCache(target))
    assert calls == 2 and len(warned) == 1
    assert target.read_bytes() == b"x"


def test_entry_name_taken_by_a_directory(tmp_path):
    cache = PersistentKernelCache(tmp_path)
    cache._file(cache.key("k", n=5)).mkdir()
    calls, warned = _compute_twice(cache)
    assert calls == 2 and len(warned) == 1


def test_lock_file_of_another_user(tmp_path, monkeypatch):
    """An unopenable lock file (here a directory; another user's file is the same OSError) and
    a lock call that fails: the entry is still stored and read, with one warning."""
    cache = PersistentKernelCache(tmp_path)
    (tmp_path / ".agkc1.lock").mkdir()
    calls, warned = _compute_twice(cache)
    assert calls == 1 and len(warned) == 1  # stored and read back; eviction skipped
    (tmp_path / ".agkc1.lock").rmdir()
    import fcntl

    def denied(*args):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(fcntl, "flock", denied)
    from arraygen.cache import CacheWarning

    fresh = PersistentKernelCache(tmp_path)
    with pytest.warns(CacheWarning, match="could not lock"):
        fresh.clear()  # cannot lock: clears nothing
    assert len(fresh) == 1


def test_read_only_directory(tmp_path, monkeypatch):
    tmp_path.joinpath("ro").mkdir()
    ro = tmp_path / "ro"
    if os.geteuid() == 0:  # root ignores permissions: make the write fail as it would
        import tempfile

        def denied(*args, **kwargs):
            raise PermissionError(13, "Permission denied", str(ro))

        monkeypatch.setattr(tempfile, "mkstemp", denied)
    else:
        ro.chmod(0o555)
    try:
        calls, warned = _compute_twice(PersistentKernelCache(ro))
    finally:
        ro.chmod(0o755)
    assert calls == 2 and len(warned) == 1
