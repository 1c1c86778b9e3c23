"""Philox streams started at an element offset: a chunk draws the numbers of the whole call."""

import numpy as np
import pytest

from arraygen import random as R


@pytest.mark.parametrize("draw", [R.uniform, R.normal, R.bits])
@pytest.mark.parametrize("offset", [0, 1, 2, 3, 4, 5, 17, 50])
@pytest.mark.parametrize("n", [1, 2, 7, 40])
def test_offset_equals_slice_of_whole_stream(draw, offset, n):
    key = R.Key(7)
    whole = draw(key, (offset + n + 3,))
    part = draw(key, (n,), offset=offset)
    np.testing.assert_array_equal(part, whole[offset:offset + n])


def test_offset_chunks_tile_a_2d_array_in_c_order():
    key = R.Key(11)
    whole = R.normal(key, (6, 5), dtype=np.float32)
    rows = [R.normal(key, (2, 5), offset=5 * r0, dtype=np.float32) for r0 in (0, 2, 4)]
    np.testing.assert_array_equal(np.concatenate(rows), whole)


@pytest.mark.parametrize("bad, error", [(-1, ValueError), (2.5, TypeError), (True, TypeError),
                                        ("3", TypeError)])
def test_offset_must_be_a_non_negative_integer(bad, error):
    with pytest.raises(error, match="`offset`"):
        R.uniform(1, (3,), offset=bad)


def test_offset_on_torch_matches_numpy():
    torch = pytest.importorskip("torch")
    a = R.uniform(3, (9,), offset=6, xp=torch, dtype="float64")
    b = R.uniform(3, (9,), offset=6, dtype="float64")
    np.testing.assert_array_equal(a.numpy(), b)
