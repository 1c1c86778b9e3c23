"""Chunk-level Dask paths: a dask array in, a dask array out, the ordinary op on every chunk.

The public ops call these when an input is a dask array (:func:`is_dask_array`). Each builds a
graph of O(number of chunks) tasks whose tasks call the ordinary public op on NumPy or CuPy
chunks, so every chunk gets the ordinary kernels (numba_cpu, cupy, triton) and the ordinary
validation. Nothing here computes: results are lazy dask arrays.

Mapping (DESIGN §3):

- tiled ops (``kernel_matvec``, ``kernel_logsumexp``, ``kernel_softmax_matvec``): row chunks of
  ``x`` (with ``row_scale`` and ``x_bandwidth``), while ``y``, ``v``, ``col_scale``,
  ``y_bandwidth`` and ``log_weights`` are one chunk each, broadcast to every task
  (``blockwise`` with the ``y`` rows contracted). A row of these reductions depends on no other
  row, so for ``d <= DIRECT_MAX_D`` the result is bitwise equal to the in-memory call. A dask
  ``y`` in several row chunks (too large for one worker) gives a 2-D grid of (x chunk, y
  chunk) tasks instead, merged along ``y`` in a tree (sums; log-sum-exp merges), equal to the
  in-memory call within the tolerance table;
- ``gaussian_filter``: ``map_overlap`` with a halo of the filter radius on the filtered axes
  (``boundary="none"``: the filter's own mode handles the true border; ``"periodic"`` for wrap);
- ``fisher_*`` and batch-parallel callables: chunks of the batch axis (the per-sample
  normalisation needs every non-batch axis in one chunk); noise is drawn per chunk at the
  chunk's element offset of the Philox stream, so it is the noise of the whole call.

Dask is imported lazily: importing arraygen does not import dask.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any

__all__ = ["fisher_diagonal", "fisher_langevin_step", "gaussian_filter", "is_dask_array",
           "kernel_logsumexp", "kernel_matvec", "kernel_softmax_matvec", "map_batches",
           "materialize"]


def is_dask_array(x: Any) -> bool:
    """True for a ``dask.array.Array`` (without importing dask when it is not loaded)."""
    da = sys.modules.get("dask.array")
    return da is not None and isinstance(x, da.Array)


def any_dask(*arrays: Any) -> bool:
    """True when any argument is a dask array (cheap when dask.array was never imported)."""
    da = sys.modules.get("dask.array")
    return da is not None and any(isinstance(a, da.Array) for a in arrays)


def materialize(*arrays: Any):
    """Persist dask arrays (keeps an iterative algorithm's graph from growing); others as is.

    Returns one array for one argument, else a tuple.
    """
    lazy = [k for k, a in enumerate(arrays) if is_dask_array(a)]
    out = list(arrays)
    if lazy:
        import dask

        for k, a in zip(lazy, dask.persist(*(arrays[k] for k in lazy))):
            out[k] = a  # one round trip to the scheduler for all of them
    return out[0] if len(out) == 1 else tuple(out)


def as_dask(*arrays: Any, like: Any = None):
    """Arrays as dask arrays: NumPy/CuPy point clouds get the row chunking of ``like`` (the
    first dask argument by default), other arrays one chunk. ``None`` stays ``None``."""
    da = _da()
    like = like if like is not None else next(a for a in arrays if is_dask_array(a))
    n_row_chunks = len(like.chunks[0])
    out = []
    for a in arrays:
        if a is None or is_dask_array(a):
            out.append(a)
        elif a.ndim == 2:
            step = max(1, -(-a.shape[0] // n_row_chunks))
            out.append(da.from_array(a, chunks=(step, a.shape[1])))
        else:
            out.append(da.from_array(a, chunks=a.shape))
    return out


def whole(a: Any):
    """``a`` in one persisted chunk if it is a dask array (broadcast to every task); else ``a``."""
    if not is_dask_array(a):
        return a
    return _one_chunk(a).persist()


def _da():
    import dask.array as da

    return da


def task_threads() -> None:
    """Give the numba kernels of a task the threads dask gives a task's native libraries.

    A dask worker runs ``nthreads`` tasks at once and its nanny sets ``OMP_NUM_THREADS``
    (1 by default: ``distributed.nanny.pre-spawn-environ``) so that BLAS and OpenMP do not
    oversubscribe the cores; numba's parallel kernels ignore that variable and would start a
    thread per core in every task. Called at the start of each task: caps numba's threads (a
    per-thread setting) at ``OMP_NUM_THREADS`` where that is set; no-op otherwise. Results do
    not depend on it (rows are reduced independently).
    """
    limit = os.environ.get("OMP_NUM_THREADS", "")
    if not limit.isdigit() or int(limit) < 1:
        return
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency of the CPU kernels
        return
    if numba.get_num_threads() > int(limit):
        numba.set_num_threads(int(limit))


def _one_chunk(a: Any):
    """A dask array of ``a`` in a single chunk (NumPy/CuPy arrays are wrapped once)."""
    if a is None:
        return None
    da = _da()
    if is_dask_array(a):
        return a.rechunk(-1) if a.numblocks != (1,) * a.ndim else a
    return da.from_array(a, chunks=a.shape)


def _row_chunked(a: Any, chunks) -> Any:
    """A per-row vector ``(N,)`` chunked like the rows of ``x``."""
    if a is None:
        return None
    da = _da()
    if is_dask_array(a):
        return a.rechunk((chunks,))
    return da.from_array(a, chunks=(chunks,))


def _points(x: Any):
    """``x`` as a dask array ``(N, d)`` with the d axis in one chunk ((N,) becomes (N, 1))."""
    if x.ndim == 1:
        x = x.reshape((x.shape[0], 1))
    return x.rechunk({1: -1}) if x.numblocks[1] != 1 else x


def _meta(x: Any, dtype: Any, ndim: int | None = None):
    """An empty ``ndim``-D array of ``x``'s chunk type with ``dtype`` (NumPy or CuPy chunks)."""
    ndim = x.ndim if ndim is None else ndim
    return x._meta.astype(dtype).reshape(-1)[:0].reshape((0,) * ndim)


def _result_dtype(*arrays: Any):
    import numpy as np

    dts = [a.dtype for a in arrays if a is not None]
    out = np.result_type(*dts)
    if out.kind != "f":
        out = np.dtype(np.float64)
    return out


# --------------------------------------------------------------------------------------------
# tiled ops: row chunks of x, everything indexed by the rows of y broadcast in one chunk
# --------------------------------------------------------------------------------------------

def _args(named: dict[str, tuple[Any, str | None]]):
    """Flatten ``{name: (array, index)}`` for blockwise; returns (args, names present)."""
    args, names = [], []
    for name, (arr, ind) in named.items():
        if arr is not None:
            args += [arr, ind]
            names.append(name)
    return args, names


def _broadcast(arr, letter: str, rest: str = ""):
    """``(array, blockwise index)`` of an argument indexed by the rows of ``y`` that every
    task gets whole. A dask array in several chunks gets its own contracted index
    ``letter``: each task depends on every chunk and concatenates them (the same values, so
    the same results), with no merge task between the chunks' producers and the tasks (a
    Sinkhorn half-iteration's weights come straight from the last one's row chunks)."""
    if arr is None:
        return None, None
    if is_dask_array(arr) and arr.numblocks[0] > 1:
        if arr.ndim == 2 and arr.numblocks[1] != 1:
            arr = arr.rechunk({1: -1})
        return arr, letter + rest
    return _one_chunk(arr), "k" + rest


def _tiled_blockwise(op_name: str, x, y, *, rows: dict, cols: dict, rhs, options: dict,
                     outputs: int):
    """One blockwise graph over the row chunks of ``x`` calling ``arraygen.tiled.<op_name>``.

    A dask ``y`` in several row chunks takes the 2-D grid of :func:`_tiled_grid` instead."""
    if is_dask_array(y) and len(y.chunks[0]) > 1:
        return _tiled_grid(op_name, x, y, rows=rows, cols=cols, rhs=rhs, options=options,
                           outputs=outputs)
    da = _da()
    x = _points(x)
    y = _points(_one_chunk(y) if not is_dask_array(y) else y).rechunk(-1)
    row_chunks = x.chunks[0]
    named = {"x": (x, "ij"), "y": (y, "kj")}
    one_d = rhs is not None and rhs.ndim == 1
    if rhs is not None:
        named["v"] = _broadcast(rhs, "l", "" if one_d else "p")
    for name, arr in rows.items():
        named[name] = (_row_chunked(arr, row_chunks), "i")
    for letter, (name, arr) in zip("mnor", cols.items()):
        named[name] = _broadcast(arr, letter)
    args, names = _args(named)
    dtype = _result_dtype(x, y, rhs)

    def call(*chunks):
        from . import tiled

        task_threads()
        kw = dict(zip(names, chunks))
        xs, ys = kw.pop("x"), kw.pop("y")
        fn = getattr(tiled, op_name)
        if "v" in kw:
            return fn(xs, ys, kw.pop("v"), **kw, **options)
        return fn(xs, ys, **kw, **options)

    out_ind = "i" if rhs is None or one_d else "ip"
    if outputs == 1:
        return da.blockwise(call, out_ind, *args, concatenate=True, dtype=dtype,
                            meta=_meta(x, dtype, len(out_ind)))
    # kernel_softmax_matvec: (out, lse). Stack lse as an extra column, then split.
    def call_stacked(*chunks):
        out, lse = call(*chunks)
        xp_out = out.reshape((out.shape[0], -1))
        try:
            import array_api_compat

            xp = array_api_compat.array_namespace(out)
        except Exception:  # pragma: no cover - every chunk type has a namespace
            raise
        return xp.concat([xp_out, lse[:, None]], axis=1)

    stacked = da.blockwise(call_stacked, "iq", *args, concatenate=True, dtype=dtype,
                           new_axes={"q": (rhs.shape[1] if rhs.ndim == 2 else 1) + 1},
                           meta=_meta(x, dtype, 2))
    out = stacked[:, :-1]
    if one_d:
        out = out[:, 0]
    return out, stacked[:, -1]


# --------------------------------------------------------------------------------------------
# tiled ops with y in several chunks: a 2-D grid of partials merged in a tree
# --------------------------------------------------------------------------------------------

#: Partials merged per task of the tree (depth ceil(log_k(y chunks))).
GRID_SPLIT_EVERY = 4


def merge_log_partials(xp, lse, out=None):
    r"""Merge partial log-sum-exps (and softmax averages) of disjoint column sets.

    ``lse`` (N, S): the partials' ``log sum_j w_j k_ij`` (``-inf`` for a part with no
    weight); ``out`` (N, S, p) or None: the matching averages. Returns ``(lse (N,), out (N, p)
    or None)`` with :math:`L = m + \log \sum_s e^{l_s - m}`, :math:`m = \max_s l_s`, and
    :math:`o = \sum_s e^{l_s - L} o_s` (a part of weight 0 contributes 0, even a NaN average).
    Rows whose every part is ``-inf`` give ``-inf`` (and an average of 0).
    """
    top = xp.max(lse, axis=1)
    finite = top > -math.inf
    safe_top = xp.where(finite, top, xp.zeros_like(top))
    wgt = xp.exp(lse - safe_top[:, None])  # 0 for -inf parts, 1 for the largest
    total = xp.sum(wgt, axis=1)
    merged = xp.where(finite, safe_top + xp.log(xp.where(finite, total, xp.ones_like(total))),
                      top)
    if out is None:
        return merged, None
    share = wgt / xp.where(finite, total, xp.ones_like(total))[:, None]
    zero = xp.zeros_like(out)
    avg = xp.sum(xp.where(share[:, :, None] > 0, share[:, :, None] * out, zero), axis=1)
    return merged, avg


def _merge_packed(block, axis=1, keepdims=True, **_):
    """Tree combine of packed partials (n, k, p + 1) (average columns, then lse) -> (n, 1, p + 1)."""
    import array_api_compat

    xp = array_api_compat.array_namespace(block)
    lse, avg = merge_log_partials(xp, block[:, :, -1], block[:, :, :-1])
    out = xp.concat([avg, lse[:, None]], axis=1)
    return out[:, None, :] if keepdims else out


def _finish_packed(block, axis=1, keepdims=False, **_):
    """Tree root: merge, and raise where a row had no weight at all (as the in-memory op)."""
    out = _merge_packed(block, axis=axis, keepdims=keepdims)
    import array_api_compat

    xp = array_api_compat.array_namespace(out)
    if out.shape[0] and not bool(xp.all(out[..., -1] > -math.inf)):
        raise ValueError("`log_weights` must have at least one finite entry (all weights "
                         "are 0)")
    return out


def _pair_partial(op_name: str, names, options: dict, p: int):
    """The task of one (row chunk, y chunk) pair: the in-memory op on the pair, packed."""

    def call(*chunks):
        import array_api_compat

        from . import tiled

        task_threads()
        kw = dict(zip(names, chunks))
        xs, ys, v = kw.pop("x"), kw.pop("y"), kw.pop("v", None)
        xp = array_api_compat.array_namespace(xs)
        fn = getattr(tiled, op_name)
        if op_name == "kernel_matvec":
            out = fn(xs, ys, v, **kw, **options)
            return xp.reshape(out, (xs.shape[0], 1, -1))
        w = kw.get("log_weights")
        if w is not None and not bool(xp.any(w > -math.inf)):
            # a y chunk of zero weight: the op would refuse it; its partial is -inf (and 0)
            lse = xp.full((xs.shape[0],), -math.inf, dtype=xs.dtype)
            avg = xp.zeros((xs.shape[0], p), dtype=xs.dtype)
        elif v is None:
            lse, avg = fn(xs, ys, **kw, **options), xp.zeros((xs.shape[0], 0), dtype=xs.dtype)
        else:
            avg, lse = fn(xs, ys, v, **kw, **options)
            avg = xp.reshape(avg, (xs.shape[0], p))
        lse, avg = xp.astype(lse, avg.dtype), avg
        return xp.concat([avg, lse[:, None]], axis=1)[:, None, :]

    return call


def _tiled_grid(op_name: str, x, y, *, rows: dict, cols: dict, rhs, options: dict,
                outputs: int):
    """A grid of (row chunk of ``x``, row chunk of ``y``) tasks, each the in-memory op on its
    pair, merged along ``y`` in a tree of :data:`GRID_SPLIT_EVERY`-way merges (matvec: sums;
    log-sum-exp and softmax: :func:`merge_log_partials`). ``v``, ``col_scale``,
    ``y_bandwidth`` and ``log_weights`` are chunked like ``y``. Tasks: O(row chunks x y
    chunks); depth: O(log y chunks)."""
    da = _da()
    x, y = _points(x), _points(y)
    y_chunks = y.chunks[0]
    named = {"x": (x, "id"), "y": (y, "jd")}
    one_d = rhs is not None and rhs.ndim == 1
    p = 0 if rhs is None else (1 if one_d else rhs.shape[1])
    if rhs is not None:
        v_chunks = (y_chunks,) + ((p,),) * (rhs.ndim - 1)
        rv = rhs.rechunk(v_chunks) if is_dask_array(rhs) else da.from_array(rhs, v_chunks)
        named["v"] = (rv, "j" if one_d else "jp")
    for name, arr in rows.items():
        named[name] = (_row_chunked(arr, x.chunks[0]), "i")
    for name, arr in cols.items():
        named[name] = (_row_chunked(arr, y_chunks), "j")
    args, names = _args(named)
    dtype = _result_dtype(x, y, rhs)
    width = p if op_name == "kernel_matvec" else p + 1
    parts = da.blockwise(_pair_partial(op_name, names, options, p), "ijq", *args,
                         concatenate=True, dtype=dtype, new_axes={"q": width},
                         adjust_chunks={"j": 1}, meta=_meta(x, dtype, 3))
    if op_name == "kernel_matvec":
        out = parts.sum(axis=1, split_every=GRID_SPLIT_EVERY, dtype=dtype)
        return out[:, 0] if one_d else out
    merged = da.reduction(parts, chunk=lambda b, **_: b, combine=_merge_packed,
                          aggregate=_finish_packed, axis=1, keepdims=False, dtype=dtype,
                          split_every=GRID_SPLIT_EVERY, concatenate=True,
                          meta=_meta(x, dtype, 2))
    lse = merged[:, -1]
    if outputs == 1:
        return lse
    out = merged[:, :-1]
    return (out[:, 0] if one_d else out), lse


def kernel_matvec(x, y, v, *, beta, row_scale=None, col_scale=None, x_bandwidth=None,
                  y_bandwidth=None, backend=None, check_finite=True):
    """Dask path of :func:`arraygen.kernel_matvec`: a lazy ``(N,)`` or ``(N, p)`` result."""
    return _tiled_blockwise(
        "kernel_matvec", x, y, rows={"row_scale": row_scale, "x_bandwidth": x_bandwidth},
        cols={"col_scale": col_scale, "y_bandwidth": y_bandwidth}, rhs=v,
        options=_options(beta=beta, backend=backend, check_finite=check_finite), outputs=1)


def kernel_logsumexp(x, y, *, beta, log_weights=None, backend=None, check_finite=True):
    """Dask path of :func:`arraygen.kernel_logsumexp`: a lazy ``(N,)`` result."""
    return _tiled_blockwise(
        "kernel_logsumexp", x, y, rows={}, cols={"log_weights": log_weights}, rhs=None,
        options=_options(beta=beta, backend=backend, check_finite=check_finite), outputs=1)


def kernel_softmax_matvec(x, y, v, *, beta, log_weights=None, backend=None, check_finite=True):
    """Dask path of :func:`arraygen.kernel_softmax_matvec`: lazy ``(out, lse)``."""
    return _tiled_blockwise(
        "kernel_softmax_matvec", x, y, rows={}, cols={"log_weights": log_weights}, rhs=v,
        options=_options(beta=beta, backend=backend, check_finite=check_finite), outputs=2)


def _options(**kw):
    """Keyword options for the per-chunk call (``None`` options dropped, ``backend`` kept)."""
    return {k: v for k, v in kw.items() if v is not None or k == "backend"}


# --------------------------------------------------------------------------------------------
# gaussian_filter: halo exchange
# --------------------------------------------------------------------------------------------

def gaussian_filter(x, sigma, *, axes=(-2, -1), mode="reflect", cval=0.0, truncate=4.0,
                    backend=None, **options):
    """Dask path of :func:`arraygen.gaussian_filter` (``map_overlap``, halo = filter radius)."""
    from . import gaussian

    ndim = x.ndim
    axes_t = (axes,) if isinstance(axes, int) else tuple(axes)
    axes_t = tuple(a % ndim for a in axes_t)
    sigmas = _per_axis(sigma, len(axes_t))
    modes = _per_axis(mode, len(axes_t))
    radius = options.get("radius")
    radii = _per_axis(radius, len(axes_t)) if radius is not None else [
        int(float(truncate) * float(s) + 0.5) for s in sigmas]
    depth = {a: 0 for a in range(ndim)}
    boundary = {a: "none" for a in range(ndim)}
    for a, r, m in zip(axes_t, radii, modes):
        depth[a] = min(int(r), x.shape[a])
        if m in ("wrap", "grid-wrap"):
            boundary[a] = "periodic"
    # dask needs every chunk at least as deep as the halo
    chunks = {a: max(max(x.chunks[a]), depth[a]) if depth[a] else x.chunks[a]
              for a in range(ndim)}
    if any(min(x.chunks[a]) < depth[a] for a in range(ndim)):
        x = x.rechunk(chunks)

    def call(block):
        task_threads()
        return gaussian.gaussian_filter(block, sigma, axes=axes, mode=mode, cval=cval,
                                        truncate=truncate, backend=backend, **options)

    dtype = _result_dtype(x)
    return x.map_overlap(call, depth=depth, boundary=boundary, dtype=dtype,
                         meta=_meta(x, dtype))


def _per_axis(value, n: int) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"expected {n} per-axis values; got {value!r}")
        return list(value)
    return [value] * n


# --------------------------------------------------------------------------------------------
# batch-parallel: Fisher and any per-sample callable
# --------------------------------------------------------------------------------------------

def _batch_chunked(a, like):
    """``a`` chunked like ``like``'s batch axis with every other axis in one chunk."""
    da = _da()
    if a is None:
        return None
    if not is_dask_array(a):
        a = da.from_array(a, chunks=a.shape)
    return a.rechunk((like.chunks[0],) + tuple((s,) for s in a.shape[1:]))


def map_batches(fn, x, *arrays, dtype=None, **kwargs):
    """Apply ``fn(x_chunk, *array_chunks, **kwargs)`` to chunks of the batch (first) axis.

    Every other axis is put in one chunk; ``arrays`` of the same leading length are chunked
    the same way. ``fn`` must return an array shaped like its first argument.
    """
    x = x.rechunk({i: -1 for i in range(1, x.ndim)})
    chunked = [_batch_chunked(a, x) if getattr(a, "ndim", 0) else a for a in arrays]
    dtype = dtype or _result_dtype(x)
    def call(*blocks):
        task_threads()
        return fn(*blocks, **kwargs)

    return x.map_blocks(call, *chunked, dtype=dtype,
                        meta=_meta(x, dtype))


def fisher_diagonal(score, alpha_bar=None, **options):
    """Dask path of :func:`arraygen.fisher_diagonal` (elementwise per batch chunk)."""
    from . import fisher

    if getattr(alpha_bar, "ndim", 0) == 1:
        col = alpha_bar.reshape((-1,) + (1,) * (score.ndim - 1))
        return map_batches(lambda s, a: fisher.fisher_diagonal(s, a.reshape((-1,)), **options),
                           score, col)
    return map_batches(lambda s: fisher.fisher_diagonal(s, alpha_bar, **options), score)


def fisher_langevin_step(x, score, v, alpha_bar, *, step_size, noise=None, rng=None, **options):
    """Dask path of :func:`arraygen.fisher_langevin_step`: ``(x_new, v_new)``, lazy.

    With ``rng`` an int or :class:`arraygen.random.Key`, each batch chunk draws the Philox
    normals at its own element offset, i.e. exactly the noise of the whole call.
    """
    import numpy as np

    from . import fisher
    from . import random as _random

    da = _da()
    if not is_dask_array(x):  # chunk the batch like the first dask argument
        like = next(a for a in (score, v, noise) if is_dask_array(a))
        x = da.from_array(x, chunks=(like.chunks[0],) + tuple((s,) for s in x.shape[1:]))
    x = x.rechunk({i: -1 for i in range(1, x.ndim)})
    per_sample = math.prod(x.shape[1:])
    score_c, v_c = _batch_chunked(score, x), _batch_chunked(v, x)
    ab = None
    if getattr(alpha_bar, "ndim", 0) == 1:  # (B,) as (B, 1, ..., 1) so blocks align on axis 0
        ab = _batch_chunked(alpha_bar.reshape((-1,) + (1,) * (x.ndim - 1)), x)
    key = None
    if noise is None:
        key = _random.as_key(rng)
        if isinstance(key, np.random.Generator):
            raise TypeError("`rng` must be an int seed or arraygen.random.Key for dask input "
                            "(a NumPy Generator cannot give every chunk its part of one stream)")
    noise_c = _batch_chunked(noise, x)
    dtype = _result_dtype(x, score, v)

    def step(xb, sb, vb, *rest, block_info=None):
        task_threads()
        rest = list(rest)
        a = rest.pop(0).reshape((-1,)) if ab is not None else alpha_bar
        z = rest.pop(0) if noise_c is not None else None
        if z is None:
            start = block_info[0]["array-location"][0][0]
            work = np.float32 if xb.dtype in (np.float16, np.float32) else np.float64
            z = _random.normal(key, tuple(xb.shape), offset=start * per_sample, dtype=work,
                               like=xb)
        xn, vn = fisher.fisher_langevin_step(xb, sb, vb, a, step_size=step_size, noise=z,
                                             **options)
        return _stack(xn, vn)

    extra = [a for a in (ab, noise_c) if a is not None]
    out = da.map_blocks(step, x, score_c, v_c, *extra, dtype=dtype, new_axis=0,
                        chunks=((2,),) + x.chunks, meta=_meta(x, dtype))
    return out[0], out[1]


def _stack(a, b):
    import array_api_compat

    xp = array_api_compat.array_namespace(a)
    return xp.stack([a, b])


# --------------------------------------------------------------------------------------------
# row gathers and reductions for iterative training on dask data
# --------------------------------------------------------------------------------------------

def rows_whole(x):
    """``x`` with every axis but the first in one chunk (row chunks unchanged)."""
    if all(n == 1 for n in x.numblocks[1:]):
        return x
    return x.rechunk({i: -1 for i in range(1, x.ndim)})


def _take_local(block, local):
    return block[local]


def take_rows(x, idx):
    """``x[idx]`` for a dask array ``x`` and host row indices ``idx`` (any order, repeats), as
    one in-memory array of ``x``'s chunk type.

    One compute of a graph with one selection task per row chunk that holds a drawn row
    (fused with the chunk's read) and its place in the concatenation: at most
    ``2 * min(len(set(idx)), number of row chunks)`` tasks whatever ``x.shape[0]`` or the
    calls before. Each distinct row is moved once; repeats are made on the host. ``x``
    should have its other axes in one chunk (:func:`rows_whole`; rechunked here otherwise).
    """
    import numpy as np

    da = _da()
    x = rows_whole(x)
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    uniq, inverse = np.unique(idx, return_inverse=True)
    bounds = np.cumsum((0,) + tuple(x.chunks[0]))
    block = np.searchsorted(bounds, uniq, side="right") - 1
    parts = []
    for b in np.unique(block):
        local = uniq[block == b] - bounds[b]
        parts.append(x.blocks[int(b)].map_blocks(
            _take_local, local, chunks=((local.size,),) + x.chunks[1:], dtype=x.dtype,
            meta=x._meta))
    rows = (parts[0] if len(parts) == 1 else da.concatenate(parts, axis=0)).compute()
    return rows[inverse]
