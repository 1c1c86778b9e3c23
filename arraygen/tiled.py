"""Tiled diffusion kernel: one tile loop over (x-block, y-block) pairs, three epilogues.

For points ``x`` (N, d), ``y`` (M, d) and ``beta > 0`` the Gaussian kernel
``K_ij = exp(-beta |x_i - y_j|^2)`` is applied without ever materialising the N x M matrix
(DESIGN 4.4): peak extra memory is O((N + M) * tile). The Array-API implementation here is
blocked over rows and columns; kernels live in ``arraygen/backends/<language>/tiled.py`` and
the float64 oracles in ``arraygen/reference/tiled.py``.

Distances: for ``d <= DIRECT_MAX_D`` every backend sums squared coordinate differences
directly. For larger ``d`` the public functions first centre ``x`` and ``y`` by their common
mean (the distance is translation invariant, and centring removes most of the cancellation)
and the backends use the law of cosines ``|x|^2 + |y|^2 - 2 x.y`` (clamped at 0) on the
matrix units, in full float32/float64 precision.

Launcher contract for kernel backends (each implements the three launchers below). Inputs are
arrays of the caller's namespace, already validated, in one compute dtype (float32 or
float64), possibly non-contiguous; ``x`` (N, d) and ``y`` (M, d) are centred when
``d > DIRECT_MAX_D``. ``beta`` is a Python float. Results come back in the caller's namespace
and dtype. GPU kernels accumulate in the compute dtype (float32 for float32).

``kernel_matvec(x, y, u, a, b, *, beta) -> out``
    ``u``: (M, p); ``a``: (N,) or None; ``b``: (M,) or None (None means all ones).
    ``out[i, k] = sum_j exp(-beta a_i b_j |x_i - y_j|^2) u[j, k]``, shape (N, p).
    (Row and column scales are applied by :func:`kernel_matvec`, not by the kernels.)

``kernel_logsumexp(x, y, w, *, beta) -> lse``
    ``w``: (M,) log-weights (finite or -inf, at least one finite) or None (zeros).
    ``lse[i] = log sum_j exp(w_j - beta |x_i - y_j|^2)``, shape (N,).

``kernel_softmax_matvec(x, y, v, w, *, beta) -> (out, lse)``
    ``v``: (M, p); ``w`` as above. ``out[i] = sum_j softmax_j(w_j - beta |x_i - y_j|^2) v_j``
    (N, p), computed with an online (running max) softmax; ``lse`` as in kernel_logsumexp.

The CUDA launchers may split the columns of ``y`` over thread blocks (:func:`column_splits`,
for a full last wave) and merge the partial sums, or partial (max, sum, acc) triples, after
the launch; no atomics.

Block-sparse launchers (``truncate=``; ``arraygen/backends/<language>/blocksparse.py``, full
contract in :mod:`arraygen._kernels.blocksparse`): the same three sums restricted to a list of
cluster pairs, on points in the kd-tree order of :func:`arraygen.blocksparse.cluster_points`
(row cluster ``A`` is rows ``[A block_x, (A + 1) block_x)`` and sums only over the columns of
the y-clusters ``cols[offsets[A]:offsets[A + 1]]``)::

    kernel_matvec_blocks(x, y, u, a, b, offsets, cols, *, beta, block_x, block_y) -> out
    kernel_logsumexp_blocks(x, y, w, offsets, cols, *, beta, block_x, block_y) -> lse
    kernel_softmax_matvec_blocks(x, y, v, w, offsets, cols, *, beta, block_x, block_y)
        -> (out, lse)

The private cores take ``pairs=`` (a :class:`arraygen.blocksparse.BlockPairs`) with every
array in the SORTED orders and return sorted results; the public ops sort, call them and
restore the caller's order.
"""

from __future__ import annotations

import pathlib

from . import _array_api as aa
from . import _dask, _dispatch
from . import _validation as _v
from . import blocksparse as _bs
from ._kernels.tiled import DIRECT_MAX_D, column_splits, merge_column_splits  # noqa: F401

__all__ = ["DIRECT_MAX_D", "column_splits", "kernel_logsumexp", "kernel_matvec",
           "kernel_softmax_matvec"]

#: Automatic dispatch sends problems with d > DIRECT_MAX_D and more right-hand sides than this
#: to the Array-API path, whose blocked matrix products run on the vendor BLAS (e.g. the exact
#: score of image data sets: d = 12288 and v = the images); the kernels keep per-row
#: accumulators for at most this many columns at a time.
KERNEL_MAX_RHS = 64

#: Elements of one (rows x columns [x d]) tile of the Array-API implementation.
_TILE_ELEMENTS = 1 << 20
_TILE_COLS = 2048

# Fastest first, as measured by tools/gpu_bench_tiled.py on an H100 (N = M = 10^6, d = 3,
# float32, pairs/s, default tunings): matvec cupy 2.6e12, numba_cuda 2.4e12, triton 1.7e12;
# logsumexp cupy 2.5e12 (lazy rescaling, 8 rows a thread), triton 1.5e12, numba_cuda 1.3e12;
# softmax_matvec cupy 2.4e12, triton 1.7e12, numba_cuda 1.4e12.
_GPU_ORDER = {
    "kernel_matvec": ("cupy", "numba_cuda", "triton"),
    "kernel_logsumexp": ("cupy", "triton", "numba_cuda"),
    "kernel_softmax_matvec": ("cupy", "triton", "numba_cuda"),
}

for _op, _order in _GPU_ORDER.items():
    _dispatch.register(
        _op,
        kernels={b: f"arraygen.backends.{b}.tiled:{_op}"
                 for b in ("numba_cpu", "numba_cuda", "cupy", "triton")},
        gpu_order=_order,
    )

# Block-sparse launchers: registered for the backends whose blocksparse module exists.
_BLOCK_BACKENDS = tuple(
    b for b in ("numba_cpu", "numba_cuda", "cupy", "triton")
    if (pathlib.Path(__file__).parent / "backends" / b / "blocksparse.py").is_file())
for _op, _order in _GPU_ORDER.items():
    _dispatch.register(
        f"{_op}_blocks",
        kernels={b: f"arraygen.backends.{b}.blocksparse:{_op}_blocks" for b in _BLOCK_BACKENDS},
        gpu_order=tuple(b for b in _order if b in _BLOCK_BACKENDS),
    )


# --------------------------------------------------------------------------------------------
# boundary (validation through arraygen._validation, once per public call)
# --------------------------------------------------------------------------------------------

def _boundary(xp, x, y, v, beta, check_finite: bool):
    """Points, right-hand sides and ``beta`` of a public op as trusted core inputs.

    Returns ``(x, y, v2d or None, one_d, beta, out_dtype)`` with every array in the compute
    dtype. ``beta`` is checked on the host in float64 against the compute dtype (and, with
    ``check_finite``, ``beta * max |x_i - y_j|^2`` too), so float32 never sees an infinite
    or flushed ``beta``.
    """
    beta = _v.check_scalar(beta, "beta", positive=True)
    # finiteness of x and y comes with the exponent-range check (one reduction each)
    x, y, out_dtype = _v.as_point_pair(xp, x, y, check_finite=False)
    one_d = False
    if v is not None:
        v, one_d, v_dt = _v.as_rhs(xp, v, y.shape[0], "v", check_finite=check_finite)
        out_dtype = xp.result_type(out_dtype, v_dt)
    if v is not None and v.dtype != x.dtype:  # x and y already share one compute dtype
        (x, y, v), _ = _v.promote_float(xp, x, y, v)
    _v.check_fits_dtype(xp, beta, x.dtype, "beta")
    return x, y, v, one_d, beta, out_dtype


def _centre(xp, x, y):
    """Subtract the common mean of x and y (both (., d)) when the law of cosines is used."""
    if x.shape[1] <= DIRECT_MAX_D:
        return x, y
    n, m = x.shape[0], y.shape[0]
    mean = (xp.sum(x, axis=0) + xp.sum(y, axis=0)) / float(n + m)
    return x - mean, y - mean


def _cast_out(xp, a, out_dtype):
    return a if a.dtype == out_dtype else xp.astype(a, out_dtype)


def _truncation_options(truncate, x_clusters, y_clusters, return_report, dask: bool):
    """``truncate`` as a float or None, after checking the other truncation options."""
    _v.check_choice(return_report, "return_report", (False, True))
    if truncate is None:
        for name, c in (("x_clusters", x_clusters), ("y_clusters", y_clusters)):
            if c is not None:
                raise ValueError(f"`{name}` is used only with `truncate`; pass truncate= too "
                                 "(or drop it)")
        return None
    truncate = _v.check_scalar(truncate, "truncate", positive=True)
    if dask:
        raise NotImplementedError("`truncate` is not supported for Dask arrays; compute the "
                                  "dense op (truncate=None) or pass in-memory arrays")
    return truncate


def _clusters(xp, x, y, same: bool, x_clusters, y_clusters):
    """Clusters of x and y (given ones checked against the points; ``same``: y is x)."""
    if x_clusters is None:
        xc = _bs._build_clusters(xp, x, _bs._default_block(x))
    else:
        xc = _bs.check_clusters(x_clusters, "x_clusters", x)
    if y_clusters is not None:
        yc = _bs.check_clusters(y_clusters, "y_clusters", y)
    elif same:
        yc = xc
    else:
        yc = _bs._build_clusters(xp, y, _bs._default_block(y))
    return xc, yc


def _take(xp, a, perm):
    return None if a is None else xp.take(a, perm, axis=0)


def _report(pairs=None):
    if pairs is None:
        return _bs.TruncationReport(truncate=None, fraction=1.0, mass_bound=0.0,
                                    n_pairs_blocks=None)
    return _bs.TruncationReport(truncate=pairs.truncate, fraction=pairs.fraction,
                                mass_bound=pairs.mass_bound, n_pairs_blocks=pairs.nnz)


def _with_report(result, report, return_report):
    return (result, report) if return_report else result


# --------------------------------------------------------------------------------------------
# public ops
# --------------------------------------------------------------------------------------------

def kernel_matvec(x, y, v, *, beta: float, row_scale=None, col_scale=None, x_bandwidth=None,
                  y_bandwidth=None, check_finite: bool = True, truncate: float | None = None,
                  x_clusters=None, y_clusters=None, return_report: bool = False,
                  backend: str | None = None):
    r"""Gaussian-kernel matrix-vector product, tiled (never forms the N x M matrix).

    .. math::

        \mathrm{out}_i = r_i \sum_{j=1}^{M} \exp(-\beta\, a_i b_j \lVert x_i - y_j\rVert^2)\,
                         c_j\, v_j

    Parameters
    ----------
    x : array, shape (N, d) or (N,)
        Query points (rows), finite; ``(N,)`` is N points in one dimension.
    y : array, shape (M, d) or (M,)
        Source points (columns), finite, same ``d``.
    v : array, shape (M,) or (M, p)
        One or ``p`` right-hand sides.
    beta : float
        Inverse squared bandwidth, finite and > 0.
    row_scale, col_scale : array, shape (N,) and (M,), optional
        :math:`r` and :math:`c` (default ones), e.g. diffusion-map normalisations.
    x_bandwidth, y_bandwidth : array, shape (N,) and (M,), optional
        Per-point inverse bandwidths :math:`a, b > 0` (self-tuning kernels; default ones).
    check_finite : bool
        Check that the inputs are finite and that ``beta`` times the largest squared distance
        fits the compute dtype (a few reductions and host synchronisations; default True).
        ``beta`` itself is always checked against the compute dtype on the host.
    truncate : float, optional
        Skip the cluster pairs whose largest possible exponent lies more than
        ``truncate**2`` below the largest exponent of the row (``truncate`` is in kernel
        widths ``1 / sqrt(beta)``; see :mod:`arraygen.blocksparse`). Default None: exact.
    x_clusters, y_clusters : Clusters, optional
        :func:`arraygen.blocksparse.cluster_points` of ``x`` and ``y``, to reuse across calls
        (built when not given; ``y is x`` reuses ``x``'s). Only with ``truncate``.
    return_report : bool
        Also return a :class:`arraygen.blocksparse.TruncationReport` (fraction of pairs
        computed, ``mass_bound`` on every row's relative error).
    backend : str, optional
        ``"array_api"``, ``"numba_cpu"``, ``"numba_cuda"``, ``"cupy"`` or ``"triton"``
        (default: ``ARRAYGEN_BACKEND`` or automatic, see :mod:`arraygen._dispatch`).

    Returns
    -------
    out : array, shape (N,) if ``v`` is 1-D else (N, p)
        In the inputs' namespace, device and promoted floating dtype.
    report : TruncationReport
        Only with ``return_report=True``: ``(out, report)``.

    Examples
    --------
    >>> import numpy as np
    >>> from arraygen.tiled import kernel_matvec
    >>> x = np.array([[0.0], [1.0]])
    >>> out = kernel_matvec(x, x, np.ones(2), beta=1.0, backend="array_api")
    >>> np.allclose(out, 1 + np.exp(-1.0))
    True

    Far-apart groups of points are skipped with ``truncate``:

    >>> x = np.concatenate([np.linspace(0, 1, 64), np.linspace(50, 51, 64)])
    >>> out, rep = kernel_matvec(x, x, np.ones(128), beta=1.0, truncate=4.0,
    ...                          return_report=True)
    >>> rep.fraction, bool(np.allclose(out, kernel_matvec(x, x, np.ones(128), beta=1.0)))
    (0.5, True)
    """
    dask = _dask.any_dask(x, y, v, row_scale, col_scale, x_bandwidth, y_bandwidth)
    truncate = _truncation_options(truncate, x_clusters, y_clusters, return_report, dask)
    if dask:
        return _with_report(_dask.kernel_matvec(
            x, y, v, beta=_v.check_scalar(beta, "beta", positive=True), row_scale=row_scale,
            col_scale=col_scale, x_bandwidth=x_bandwidth, y_bandwidth=y_bandwidth,
            backend=backend, check_finite=check_finite), _report(), return_report)
    same = y is x
    if v is None:
        raise TypeError("`v` must be an array of shape (M,) or (M, p); got None")
    xp, (x, y, v, r, c, a, b) = _v.common_namespace(
        x=x, y=y, v=v, row_scale=row_scale, col_scale=col_scale, x_bandwidth=x_bandwidth,
        y_bandwidth=y_bandwidth)
    x, y, v, one_d, beta, out_dtype = _boundary(xp, x, y, v, beta, check_finite)
    n, m = x.shape[0], y.shape[0]
    r = _v.as_vector(xp, r, n, "row_scale", x, check_finite=check_finite)
    c = _v.as_vector(xp, c, m, "col_scale", x, check_finite=check_finite)
    a = _v.as_vector(xp, a, n, "x_bandwidth", x, positive=True, check_finite=check_finite)
    b = _v.as_vector(xp, b, m, "y_bandwidth", x, positive=True, check_finite=check_finite)
    if check_finite:
        scale = beta
        for bw in (a, b):
            if bw is not None:
                scale *= _v.host_float(xp.max(bw))
        _v.check_exponent_range(xp, scale, x, y, "beta")
    u = v if c is None else c[:, None] * v
    if truncate is None:
        out = _matvec(xp, x, y, u, beta=beta, a=a, b=b, backend=backend)
        report = None
    else:
        xc, yc = _clusters(xp, x, y, same, x_clusters, y_clusters)
        a_s, b_s = _take(xp, a, xc.perm), _take(xp, b, yc.perm)
        pairs = _bs._pairs(xp, xc, yc, beta, truncate, None, a_s, b_s)
        out = _matvec(xp, _take(xp, x, xc.perm), _take(xp, y, yc.perm), _take(xp, u, yc.perm),
                      beta=beta, a=a_s, b=b_s, backend=backend, pairs=pairs, xc=xc, yc=yc)
        out = _take(xp, out, xc.inverse)
        report = pairs
    if r is not None:
        out = r[:, None] * out
    if one_d:
        out = xp.reshape(out, (n,))
    return _with_report(_cast_out(xp, out, out_dtype), _report(report), return_report)


def kernel_logsumexp(x, y, *, beta: float, log_weights=None, check_finite: bool = True,
                     truncate: float | None = None, x_clusters=None, y_clusters=None,
                     return_report: bool = False, backend: str | None = None):
    r"""Row-wise log-sum-exp of the weighted Gaussian kernel, tiled.

    .. math:: \mathrm{out}_i = \log \sum_{j=1}^{M} \exp(w_j - \beta \lVert x_i - y_j\rVert^2)

    Parameters
    ----------
    x : array, shape (N, d) or (N,)
    y : array, shape (M, d) or (M,), M >= 1
    beta : float
        Finite and > 0.
    log_weights : array, shape (M,), optional
        :math:`w_j` (default 0); ``-inf`` entries are zero weights, at least one must be finite.
    check_finite : bool
        As in :func:`kernel_matvec`.
    truncate, x_clusters, y_clusters, return_report
        As in :func:`kernel_matvec` (``mass_bound`` also bounds the error of ``out``).
    backend : str, optional
        As in :func:`kernel_matvec`.

    Returns
    -------
    out : array, shape (N,)
    report : TruncationReport
        Only with ``return_report=True``: ``(out, report)``.

    Examples
    --------
    >>> import numpy as np
    >>> from arraygen.tiled import kernel_logsumexp
    >>> x = np.array([0.0, 1.0])  # two points in 1-D
    >>> lse = kernel_logsumexp(x, x, beta=1.0, backend="array_api")
    >>> np.allclose(lse, np.log(1 + np.exp(-1.0)))
    True
    """
    dask = _dask.any_dask(x, y, log_weights)
    truncate = _truncation_options(truncate, x_clusters, y_clusters, return_report, dask)
    if dask:
        return _with_report(_dask.kernel_logsumexp(
            x, y, beta=_v.check_scalar(beta, "beta", positive=True), log_weights=log_weights,
            backend=backend, check_finite=check_finite), _report(), return_report)
    same = y is x
    xp, (x, y, w) = _v.common_namespace(x=x, y=y, log_weights=log_weights)
    x, y, _, _, beta, out_dtype = _boundary(xp, x, y, None, beta, check_finite)
    w = _v.as_log_weights(xp, w, y.shape[0], x)
    if check_finite:
        _v.check_exponent_range(xp, beta, x, y, "beta")
    if truncate is None:
        return _with_report(_cast_out(xp, _logsumexp(xp, x, y, w, beta=beta, backend=backend),
                                      out_dtype), _report(), return_report)
    xc, yc = _clusters(xp, x, y, same, x_clusters, y_clusters)
    w_s = _take(xp, w, yc.perm)
    pairs = _bs._pairs(xp, xc, yc, beta, truncate, w_s)
    lse = _logsumexp(xp, _take(xp, x, xc.perm), _take(xp, y, yc.perm), w_s, beta=beta,
                     backend=backend, pairs=pairs, xc=xc, yc=yc)
    return _with_report(_cast_out(xp, _take(xp, lse, xc.inverse), out_dtype), _report(pairs),
                        return_report)


def kernel_softmax_matvec(x, y, v, *, beta: float, log_weights=None,
                          check_finite: bool = True, truncate: float | None = None,
                          x_clusters=None, y_clusters=None, return_report: bool = False,
                          backend: str | None = None):
    r"""Softmax-weighted average of ``v`` over ``y`` for every row ``x_i`` (online softmax).

    .. math::

        z_{ij} = w_j - \beta \lVert x_i - y_j\rVert^2, \qquad
        \mathrm{out}_i = \sum_j \frac{e^{z_{ij}}}{\sum_k e^{z_{ik}}}\, v_j, \qquad
        \mathrm{lse}_i = \log \sum_j e^{z_{ij}}

    computed FlashAttention-style (running maximum, one pass over ``y``).

    Parameters
    ----------
    x : array, shape (N, d) or (N,)
    y : array, shape (M, d) or (M,)
    v : array, shape (M,) or (M, p)
    beta : float
        Finite and > 0.
    log_weights : array, shape (M,), optional
        As in :func:`kernel_logsumexp`.
    check_finite : bool
        As in :func:`kernel_matvec`.
    truncate, x_clusters, y_clusters, return_report
        As in :func:`kernel_matvec`; with ``return_report=True`` the result is
        ``((out, lse), report)``.
    backend : str, optional
        As in :func:`kernel_matvec`.

    Returns
    -------
    out : array, shape (N,) or (N, p)
    lse : array, shape (N,)

    Examples
    --------
    >>> import numpy as np
    >>> from arraygen.tiled import kernel_softmax_matvec
    >>> x, v = np.array([0.0, 1.0]), np.array([0.0, 1.0])
    >>> out, lse = kernel_softmax_matvec(x, x, v, beta=1.0, backend="array_api")
    >>> w = np.exp(-1.0) / (1 + np.exp(-1.0))   # weight of the other point
    >>> np.allclose(out, [w, 1 - w])
    True
    """
    dask = _dask.any_dask(x, y, v, log_weights)
    truncate = _truncation_options(truncate, x_clusters, y_clusters, return_report, dask)
    if dask:
        return _with_report(_dask.kernel_softmax_matvec(
            x, y, v, beta=_v.check_scalar(beta, "beta", positive=True), log_weights=log_weights,
            backend=backend, check_finite=check_finite), _report(), return_report)
    same = y is x
    if v is None:
        raise TypeError("`v` must be an array of shape (M,) or (M, p); got None")
    xp, (x, y, v, w) = _v.common_namespace(x=x, y=y, v=v, log_weights=log_weights)
    x, y, v, one_d, beta, out_dtype = _boundary(xp, x, y, v, beta, check_finite)
    n = x.shape[0]
    w = _v.as_log_weights(xp, w, y.shape[0], x)
    if check_finite:
        _v.check_exponent_range(xp, beta, x, y, "beta")
    if truncate is None:
        out, lse = _softmax_matvec(xp, x, y, v, w, beta=beta, backend=backend)
        pairs = None
    else:
        xc, yc = _clusters(xp, x, y, same, x_clusters, y_clusters)
        w_s = _take(xp, w, yc.perm)
        pairs = _bs._pairs(xp, xc, yc, beta, truncate, w_s)
        out, lse = _softmax_matvec(xp, _take(xp, x, xc.perm), _take(xp, y, yc.perm),
                                   _take(xp, v, yc.perm), w_s, beta=beta, backend=backend,
                                   pairs=pairs, xc=xc, yc=yc)
        out, lse = _take(xp, out, xc.inverse), _take(xp, lse, xc.inverse)
    if one_d:
        out = xp.reshape(out, (n,))
    result = _cast_out(xp, out, out_dtype), _cast_out(xp, lse, out_dtype)
    return _with_report(result, _report(pairs), return_report)



# --------------------------------------------------------------------------------------------
# private cores: trusted inputs (algorithms call these; no validation, no host sync)
# --------------------------------------------------------------------------------------------

def _matvec(xp, x, y, u, *, beta: float, a=None, b=None, backend: str | None = None,
            pairs=None, xc=None, yc=None):
    """:func:`kernel_matvec` on trusted inputs: ``sum_j exp(-beta a_i b_j |x_i - y_j|^2) u_j``.

    ``x`` (N, d), ``y`` (M, d), ``u`` (M, p), ``a`` (N,) / ``b`` (M,) or None: one namespace,
    device and compute dtype, finite; ``beta`` a positive Python float. Returns (N, p) in the
    compute dtype. No validation and no device-to-host synchronisation. Dask inputs (an
    algorithm's state on a cluster) take the chunk-level path.

    With ``pairs`` (a :class:`~arraygen.blocksparse.BlockPairs` of the clusters ``xc``, ``yc``)
    every array is in the sorted orders (``xc.perm``, ``yc.perm``), only the listed cluster
    pairs are summed, and the result is in ``x``'s sorted order.
    """
    if pairs is not None:
        return _matvec_blocks(xp, x, y, u, a, b, beta, pairs, backend)
    if _dask.any_dask(x, y, u, a, b):
        return _dask.kernel_matvec(x, y, u, beta=beta, x_bandwidth=a, y_bandwidth=b,
                                   backend=backend, check_finite=False)
    x, y = _centre(xp, x, y)
    name = _dispatch.select("kernel_matvec", x, y, u, backend=backend,
                            prefer_array_api=_wide(x, u))
    if name == "array_api":
        return _matvec_xp(xp, x, y, u, a, b, beta)
    return _dispatch.kernel("kernel_matvec", name)(x, y, u, a, b, beta=beta)


def _logsumexp(xp, x, y, w=None, *, beta: float, backend: str | None = None, pairs=None,
               xc=None, yc=None):
    """:func:`kernel_logsumexp` on trusted inputs (``w`` (M,) log-weights or None): (N,).

    ``pairs``, ``xc``, ``yc``: as in :func:`_matvec` (sorted orders in and out).
    """
    if pairs is not None:
        return _softmax_blocks(xp, x, y, None, w, beta, pairs, backend)[1]
    if _dask.any_dask(x, y, w):
        return _dask.kernel_logsumexp(x, y, beta=beta, log_weights=w, backend=backend,
                                      check_finite=False)
    x, y = _centre(xp, x, y)
    name = _dispatch.select("kernel_logsumexp", x, y, w, backend=backend)
    if name == "array_api":
        return _softmax_xp(xp, x, y, None, w, beta)[1]
    return _dispatch.kernel("kernel_logsumexp", name)(x, y, w, beta=beta)


def _softmax_matvec(xp, x, y, v, w=None, *, beta: float, backend: str | None = None,
                    pairs=None, xc=None, yc=None):
    """:func:`kernel_softmax_matvec` on trusted inputs (``v`` (M, p)).

    Returns ``(out (N, p), lse (N,))`` in the compute dtype. ``pairs``, ``xc``, ``yc``: as in
    :func:`_matvec` (sorted orders in and out).
    """
    if pairs is not None:
        return _softmax_blocks(xp, x, y, v, w, beta, pairs, backend)
    if _dask.any_dask(x, y, v, w):
        return _dask.kernel_softmax_matvec(x, y, v, beta=beta, log_weights=w, backend=backend,
                                           check_finite=False)
    x, y = _centre(xp, x, y)
    name = _dispatch.select("kernel_softmax_matvec", x, y, v, w, backend=backend,
                            prefer_array_api=_wide(x, v))
    if name == "array_api":
        return _softmax_xp(xp, x, y, v, w, beta)
    return _dispatch.kernel("kernel_softmax_matvec", name)(x, y, v, w, beta=beta)


def _no_dask_blocks(*arrays):
    if _dask.any_dask(*arrays):
        raise NotImplementedError("block-sparse tiled kernels (pairs=) do not take Dask arrays")


def _matvec_blocks(xp, x, y, u, a, b, beta, pairs, backend):
    """The block-sparse matvec on sorted, trusted inputs (see :func:`_matvec`)."""
    _no_dask_blocks(x, y, u, a, b)
    x, y = _centre(xp, x, y)
    name = _dispatch.select("kernel_matvec_blocks", x, y, u, backend=backend,
                            prefer_array_api=_wide(x, u))
    if name == "array_api":
        from . import _tiled_blocks

        return _tiled_blocks.matvec(xp, x, y, u, a, b, beta, pairs)
    return _dispatch.kernel("kernel_matvec_blocks", name)(
        x, y, u, a, b, pairs.offsets, pairs.cols, beta=beta, block_x=pairs.block_x,
        block_y=pairs.block_y)


def _softmax_blocks(xp, x, y, v, w, beta, pairs, backend):
    """Block-sparse online softmax on sorted, trusted inputs: ``(out or None, lse)``."""
    _no_dask_blocks(x, y, v, w)
    x, y = _centre(xp, x, y)
    op = "kernel_logsumexp_blocks" if v is None else "kernel_softmax_matvec_blocks"
    name = _dispatch.select(op, x, y, v, w, backend=backend, prefer_array_api=_wide(x, v))
    if name == "array_api":
        from . import _tiled_blocks

        return _tiled_blocks.softmax(xp, x, y, v, w, beta, pairs)
    launcher = _dispatch.kernel(op, name)
    kw = {"beta": beta, "block_x": pairs.block_x, "block_y": pairs.block_y}
    if v is None:
        return None, launcher(x, y, w, pairs.offsets, pairs.cols, **kw)
    return launcher(x, y, v, w, pairs.offsets, pairs.cols, **kw)


def _wide(x, v) -> bool:
    """Matrix-product-shaped problems that automatic dispatch gives to the Array-API path."""
    return x.shape[1] > DIRECT_MAX_D and v is not None and v.ndim == 2 and (
        v.shape[1] > KERNEL_MAX_RHS)


# --------------------------------------------------------------------------------------------
# Array-API implementation: blocked over rows and columns
# --------------------------------------------------------------------------------------------

def _tiles(n: int, m: int, d: int, tile: tuple[int, int] | None):
    """Row and column block sizes: one tile holds about _TILE_ELEMENTS values."""
    if tile is not None:
        return max(1, int(tile[0])), max(1, int(tile[1]))
    tc = min(m, _TILE_COLS)
    depth = d if d <= DIRECT_MAX_D else 1
    tr = max(1, min(n, _TILE_ELEMENTS // (tc * depth)))
    return tr, tc


def _sqdist(xp, xb, yb):
    """|x_i - y_j|^2 for one (rows, cols) tile: direct for small d, law of cosines otherwise."""
    d = xb.shape[1]
    if d <= DIRECT_MAX_D:
        acc = None
        for k in range(d):
            diff = xb[:, k:k + 1] - yb[:, k][None, :]
            acc = diff * diff if acc is None else acc + diff * diff
        return acc
    xx = xp.sum(xb * xb, axis=1)
    yy = xp.sum(yb * yb, axis=1)
    d2 = xx[:, None] + yy[None, :] - 2.0 * xp.matmul(xb, xp.matrix_transpose(yb))
    return xp.maximum(d2, xp.zeros((), dtype=d2.dtype, device=aa.device(d2)))


def _matvec_xp(xp, x, y, u, a, b, beta, tile=None):
    """Array-API tiled ``sum_j exp(-beta a_i b_j |x_i - y_j|^2) u_j`` (see module docstring)."""
    n, m = x.shape[0], y.shape[0]
    tr, tc = _tiles(n, m, x.shape[1], tile)
    blocks = []
    for i0 in range(0, n, tr):
        i1 = min(n, i0 + tr)
        xb = x[i0:i1, :]
        acc = None
        for j0 in range(0, m, tc):
            j1 = min(m, j0 + tc)
            expo = _sqdist(xp, xb, y[j0:j1, :]) * (-beta)
            if a is not None:
                expo = expo * a[i0:i1][:, None]
            if b is not None:
                expo = expo * b[j0:j1][None, :]
            part = xp.matmul(xp.exp(expo), u[j0:j1, :])
            acc = part if acc is None else acc + part
        blocks.append(acc)
    return blocks[0] if len(blocks) == 1 else xp.concat(blocks, axis=0)


def _softmax_xp(xp, x, y, v, w, beta, tile=None):
    """Array-API online softmax: returns ``(out or None, lse)`` (see module docstring)."""
    n, m = x.shape[0], y.shape[0]
    tr, tc = _tiles(n, m, x.shape[1], tile)
    dev, dt = aa.device(x), x.dtype
    zero = xp.zeros((), dtype=dt, device=dev)
    outs, lses = [], []
    for i0 in range(0, n, tr):
        i1 = min(n, i0 + tr)
        xb = x[i0:i1, :]
        mx = s = acc = None
        for j0 in range(0, m, tc):
            j1 = min(m, j0 + tc)
            z = _sqdist(xp, xb, y[j0:j1, :]) * (-beta)
            if w is not None:
                z = z + w[j0:j1][None, :]
            tile_max = xp.max(z, axis=1)
            new = tile_max if mx is None else xp.maximum(mx, tile_max)
            # rows whose weights so far are all zero keep a finite shift (no inf - inf)
            shift = xp.where(xp.isfinite(new), new, zero)
            p = xp.exp(z - shift[:, None])
            ps = xp.sum(p, axis=1)
            pv = None if v is None else xp.matmul(p, v[j0:j1, :])
            if mx is None:
                s, acc = ps, pv
            else:
                # exp(mx - new) <= 1; rows with no mass so far (mx = -inf, s = 0) get 0
                scale = xp.where(xp.isfinite(mx), xp.exp(xp.where(xp.isfinite(mx), mx, new)
                                                          - shift), zero)
                s = s * scale + ps
                acc = None if v is None else acc * scale[:, None] + pv
            mx = new
        shift = xp.where(xp.isfinite(mx), mx, zero)
        lses.append(shift + xp.log(s))
        if v is not None:
            outs.append(acc / s[:, None])
    lse = lses[0] if len(lses) == 1 else xp.concat(lses, axis=0)
    if v is None:
        return None, lse
    out = outs[0] if len(outs) == 1 else xp.concat(outs, axis=0)
    return out, lse
