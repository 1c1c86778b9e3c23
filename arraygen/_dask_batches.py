"""Batch-parallel Dask paths: samplers, ``FastSBOTSolver.sample`` and per-row noise.

Each chunk of the batch (first) axis runs the ordinary in-memory call on its rows (every other
axis in one chunk), one task per chunk. Per-sample noise is drawn at the chunk's element offset
of the Philox stream (:mod:`arraygen._noise_offset`), so with an int seed or
:class:`arraygen.random.Key` the samples equal those of the in-memory call on the whole batch,
whatever the chunking. Where a step couples the samples of a batch (FastSB-OT's entropic-OT or
sliced-OT bridge to a ``reference``, its Langevin corrector's batch-mean preconditioner) each
chunk is its own batch and the result depends on the chunking.
"""

from __future__ import annotations

import math

import numpy as np

from . import _dask
from . import random as _random
from ._noise_offset import batch_offset

__all__ = ["fastsbot_sample", "is_dask_namespace", "map_sampler", "normal_rows"]


def is_dask_namespace(xp) -> bool:
    """True for ``dask.array`` (or its array-api-compat wrapper)."""
    return "dask" in getattr(xp, "__name__", "")


def _key(rng, what: str):
    key = _random.as_key(rng)  # None: one fresh key shared by every chunk
    if isinstance(key, np.random.Generator):
        raise TypeError(f"`rng` must be an int seed or arraygen.random.Key for {what} (a NumPy "
                        f"Generator cannot give every chunk its part of one stream)")
    return key


def _batch_chunks(x):
    """``x`` with every non-batch axis in one chunk."""
    return x.rechunk({i: -1 for i in range(1, x.ndim)}) if x.ndim > 1 else x


def _float_dtype(x):
    dt = np.dtype(x.dtype)
    return dt if dt.kind == "f" else np.dtype(np.float64)


def _map_at_batch_offset(x, call):
    """``call(block)`` on every batch chunk of the dask ``x`` (other axes in one chunk), each
    under the Philox element offset of its first row (:func:`batch_offset`); lazy."""
    x = _batch_chunks(x)
    per_sample = math.prod(x.shape[1:])
    dtype = _float_dtype(x)

    def run(block, block_info=None):
        start = block_info[0]["array-location"][0][0]
        with batch_offset(start * per_sample):
            return call(block)

    return x.map_blocks(run, dtype=dtype, meta=_dask._meta(x, dtype))


def map_sampler(sampler, model, x, kwargs: dict):
    """``sampler(model, chunk, **kwargs)`` on every batch chunk of the dask ``x``; lazy."""
    kwargs = dict(kwargs)
    kwargs["rng"] = _key(kwargs.get("rng"), f"{getattr(sampler, '__name__', 'a sampler')} on "
                         f"dask input")
    return _map_at_batch_offset(x, lambda block: sampler(model, block, **kwargs))


def normal_rows(key, like):
    """Standard normals shaped like the dask ``like`` (N, ...), chunk by chunk at the chunk's
    element offset: bitwise ``arraygen.random.normal(key, like.shape)``."""
    dtype = _float_dtype(like)
    per_row = math.prod(like.shape[1:])

    def draw(block, block_info=None):
        start = block_info[0]["array-location"][0][0]
        return _random.normal(key, tuple(block.shape), offset=start * per_row, dtype=dtype,
                              like=block)

    return like.map_blocks(draw, dtype=dtype, meta=_dask._meta(like, dtype))


def fastsbot_sample(solver, shape, *, noise, rng, dtype, progress, callback, chunks=None):
    """:meth:`FastSBOTSolver.sample` over batch chunks: of the dask ``noise``, or of
    ``shape`` (NumPy chunks of ``chunks`` rows, dask's choice by default) drawn from ``rng``."""
    import dask.array as da

    key = _key(rng, "FastSBOTSolver.sample on dask")
    if noise is None:
        if shape is None:
            raise TypeError("give `shape` (B, ...) or the starting `noise`")
        np_dtype = np.dtype(dtype) if dtype is not None and not isinstance(dtype, str) \
            else np.dtype(dtype or "float64")
        batch = chunks if chunks is not None else "auto"
        ones = da.empty(tuple(int(s) for s in shape), dtype=np_dtype,
                        chunks=(batch,) + tuple(-1 for _ in shape[1:]))
        noise = normal_rows(key, ones)
    return _map_at_batch_offset(noise, lambda block: solver.sample(
        noise=block, rng=key, progress=progress, callback=callback))
