"""arraygen.testing: the tolerance table and assert_close's strict checks (like SciPy's
xp_assert_close: namespace, device and dtype before values)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from arraygen.testing import EPS, assert_close, tol


def test_tolerance_table():
    e32, e64 = EPS["float32"], EPS["float64"]
    assert tol("float64") == (8 * e64, 0.0)
    assert tol(np.float32, "transcendental") == (64 * e32, 0.0)
    rtol, atol_scale = tol("float32", "reduction", n_terms=400)
    assert rtol == pytest.approx(e32 * (16 + 4 * 20)) and atol_scale == rtol
    assert tol("float64", "exact") == (0.0, 0.0)
    assert tol(np.dtype("int32")) == (0.0, 0.0) and tol("uint8", "reduction") == (0.0, 0.0)
    # half dtypes are computed in float32 and rounded once
    assert tol("float16")[0] == max(8 * e32, 2 * EPS["float16"])
    torch = pytest.importorskip("torch")
    assert tol(torch.bfloat16)[0] == 2 * EPS["bfloat16"]
    with pytest.raises(ValueError, match="`kind` must be one of"):
        tol("float64", "loose")
    with pytest.raises(ValueError, match="no tolerance for dtype"):
        tol("complex128")


def test_values():
    d = np.array([1.0, -2.0, 1e-3])
    assert_close(d * (1 + 4 * EPS["float64"]), d)
    with pytest.raises(AssertionError, match=r"1 of 3 elements differ .*at \(1,\)"):
        assert_close(d + np.array([0, 1e-9, 0]), d)
    assert_close(d + 1e-9, d, atol=1e-8)
    with pytest.raises(AssertionError, match="1 of 3 elements differ"):
        assert_close(np.array([1.0, np.nan, 3.0]), np.array([1.0, np.nan, 3.0]))
    assert_close(np.array([1.0, np.nan]), np.array([1.0, np.nan]), equal_nan=True)
    assert_close(np.array([np.inf, -np.inf]), np.array([np.inf, -np.inf]))
    with pytest.raises(AssertionError):
        assert_close(np.array([np.inf]), np.array([-np.inf]))
    with pytest.raises(AssertionError, match=r"shape \(3,\) != expected \(1,\)"):
        assert_close(d, d[:1])
    assert_close(np.ones(3), np.ones(1), check_shape=False)  # broadcast
    # reduction rows scale atol with max|desired|
    big = np.array([1e6, 1e-6])
    assert_close(big + np.array([0, 1e-9]), big, kind="reduction", n_terms=100)


def test_dtype_is_checked():
    a = np.ones(3, np.float32)
    with pytest.raises(AssertionError, match="dtypes do not match: actual float32, desired "
                                             "float64"):
        assert_close(a, np.ones(3))
    assert_close(a, np.ones(3), check_dtype=False)
    assert_close(a, np.ones(3), check_dtype=np.float32)  # an explicit expected dtype
    with pytest.raises(AssertionError, match="dtypes do not match"):
        assert_close(a, np.ones(3, np.float32), check_dtype=np.float64)
    # a Python number sets no expectation; a NumPy scalar does
    assert_close(np.float32(2.0), 2.0)
    with pytest.raises(AssertionError, match="dtypes do not match"):
        assert_close(np.float32(2.0), np.float64(2.0))


def test_namespace_is_checked():
    torch = pytest.importorskip("torch")
    t = torch.ones(3, dtype=torch.float64)
    with pytest.raises(AssertionError, match="namespaces do not match: actual is torch, "
                                             "desired is numpy"):
        assert_close(t, np.ones(3))
    with pytest.raises(AssertionError, match="namespaces do not match: actual is numpy"):
        assert_close(np.ones(3), t)
    assert_close(t, np.ones(3), check_namespace=False)
    assert_close(t, torch.ones(3, dtype=torch.float64))
    with pytest.raises(AssertionError, match="dtypes do not match"):
        assert_close(t, torch.ones(3, dtype=torch.float32))
    with pytest.raises(AssertionError, match="namespaces do not match: actual is list"):
        assert_close([1.0, 1.0, 1.0], np.ones(3))


def test_device_is_checked():
    xps = pytest.importorskip("array_api_strict")
    other = xps.Device("device1")
    a = xps.asarray([1.0, 2.0], device=other)
    with pytest.raises(AssertionError, match="devices do not match: actual on .*device1"):
        assert_close(a, xps.asarray([1.0, 2.0]))
    assert_close(a, xps.asarray([1.0, 2.0]), check_device=False)
    # values only across libraries: a NumPy oracle for an array on any device (GPU results)
    assert_close(a, np.asarray([1.0, 2.0]), check_namespace=False)
    assert_close(a, xps.asarray([1.0, 2.0], device=other))
    with pytest.raises(AssertionError, match="elements differ"):
        assert_close(a, xps.asarray([1.0, 2.5], device=other))


def test_error_message_carries_err_msg():
    with pytest.raises(AssertionError, match="case 7"):
        assert_close(np.array([1.0]), np.array([2.0]), err_msg="case 7")
    with pytest.raises(AssertionError, match=r"max rel err 0\.5"):
        assert_close(np.array([1.0]), np.array([2.0]))
    assert math.isclose(EPS["float64"], 2.0**-52)
