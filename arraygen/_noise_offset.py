"""The element offset of per-sample noise when a sampler runs on one batch chunk of a call.

A Dask batch chunk (rows ``b0 .. b1`` of a (B, ...) batch) runs the ordinary in-memory
sampler inside :func:`batch_offset` ``(b0 * prod(shape[1:]))``; the samplers' per-sample noise
draws (``arraygen.random.normal(key, x.shape, offset=current())``) then read exactly the
elements of the whole call's stream, so the result does not depend on the chunking. Draws that
are not per-sample (reference sets, projections) ignore it.
"""

from __future__ import annotations

import contextlib
import contextvars

_OFFSET = contextvars.ContextVar("arraygen_noise_offset", default=0)


def current() -> int:
    """The element offset of per-sample noise in this context (0 outside a batch chunk)."""
    return _OFFSET.get()


@contextlib.contextmanager
def batch_offset(offset: int):
    """Per-sample noise drawn inside starts at stream element ``offset``."""
    token = _OFFSET.set(int(offset))
    try:
        yield
    finally:
        _OFFSET.reset(token)
