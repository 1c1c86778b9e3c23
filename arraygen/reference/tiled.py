"""Float64 oracles of the tiled diffusion-kernel hot path (DESIGN 4.4).

Dense and obvious: the N x M kernel matrix is formed in float64 with direct coordinate
differences, so these are for test-sized problems only.
"""

from __future__ import annotations

import numpy as np


def sqdist(x, y) -> np.ndarray:
    """(N, M) squared Euclidean distances by direct differences, float64."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    diff = x[:, None, :] - y[None, :, :]
    return np.einsum("ijk,ijk->ij", diff, diff)


def kernel_matvec(x, y, v, beta: float, row_scale=None, col_scale=None, x_bandwidth=None,
                  y_bandwidth=None) -> np.ndarray:
    """out_i = r_i sum_j exp(-beta a_i b_j |x_i - y_j|^2) c_j v_j; v (M,) or (M, p)."""
    return kernel_matvec_masked(x, y, v, beta, True, row_scale, col_scale, x_bandwidth,
                                y_bandwidth)


def _logits(x, y, beta: float, log_weights) -> np.ndarray:
    z = -float(beta) * sqdist(x, y)
    if log_weights is not None:
        z = z + np.asarray(log_weights, dtype=np.float64)[None, :]
    return z


def kernel_logsumexp(x, y, beta: float, log_weights=None) -> np.ndarray:
    """out_i = log sum_j exp(w_j - beta |x_i - y_j|^2), shifted by the row maximum."""
    z = _logits(x, y, beta, log_weights)
    mx = z.max(axis=1)
    return mx + np.log(np.exp(z - mx[:, None]).sum(axis=1))


def kernel_softmax_matvec(x, y, v, beta: float, log_weights=None):
    """(out, lse): out_i = sum_j softmax_j(w_j - beta |x_i - y_j|^2) v_j, lse as above."""
    z = _logits(x, y, beta, log_weights)
    mx = z.max(axis=1)
    p = np.exp(z - mx[:, None])
    s = p.sum(axis=1)
    v = np.asarray(v, dtype=np.float64)
    out = (p @ v) / (s if v.ndim == 1 else s[:, None])
    return out, mx + np.log(s)


# --------------------------------------------------------------------------------------------
# truncation (block-sparse ops): the keep rule of arraygen.blocksparse, dense in float64
# --------------------------------------------------------------------------------------------

def _cluster_bounds(points, block: int):
    """Centroids, radii and counts of consecutive runs of ``block`` points (float64)."""
    p = np.asarray(points, dtype=np.float64)
    groups = [p[s:s + block] for s in range(0, p.shape[0], block)]
    centers = np.array([g.mean(axis=0) for g in groups])
    radii = np.array([np.sqrt(((g - c) ** 2).sum(axis=1).max()) for g, c in zip(groups, centers)])
    counts = np.array([g.shape[0] for g in groups], dtype=np.float64)
    return centers, radii, counts


def _per_cluster(values, size: int, block: int, how, default: float):
    if values is None:
        return np.full(-(-size // block), default)
    v = np.asarray(values, dtype=np.float64)
    return np.array([how(v[s:s + block]) for s in range(0, size, block)])


def block_keep(x_sorted, y_sorted, block_x: int, block_y: int, beta: float, truncate: float,
               log_weights=None, x_bandwidth=None, y_bandwidth=None, same_points=False):
    """The truncation rule on clouds in cluster order: ``(keep (Kx, Ky) bool, mass_bound)``.

    ``U = max_B w - beta amin bmin dmin^2``, ``L_A = max_B (max_B w - beta amax bmax dmax^2)``,
    keep iff ``U >= L_A - truncate^2``; ``mass_bound = max_A sum_skipped count_B e^(U - L_A)``.
    ``same_points=True`` (y is x): ``L_A := max(L_A, min_A w)``, each row's own term.
    ``log_weights`` and bandwidths are given in the same (sorted) orders as the points.
    """
    ca, ra, _ = _cluster_bounds(x_sorted, block_x)
    cb, rb, nb = _cluster_bounds(y_sorted, block_y)
    n, m = len(x_sorted), len(y_sorted)
    wmax = _per_cluster(log_weights, m, block_y, np.max, 0.0)
    amin = _per_cluster(x_bandwidth, n, block_x, np.min, 1.0)
    amax = _per_cluster(x_bandwidth, n, block_x, np.max, 1.0)
    bmin = _per_cluster(y_bandwidth, m, block_y, np.min, 1.0)
    bmax = _per_cluster(y_bandwidth, m, block_y, np.max, 1.0)
    dist = np.sqrt(sqdist(ca, cb))
    dmin = np.maximum(dist - ra[:, None] - rb[None, :], 0.0)
    dmax = dist + ra[:, None] + rb[None, :]
    with np.errstate(invalid="ignore"):
        upper = wmax[None, :] - beta * amin[:, None] * bmin[None, :] * dmin ** 2
        lower = wmax[None, :] - beta * amax[:, None] * bmax[None, :] * dmax ** 2
    top = lower.max(axis=1)
    if same_points:
        top = np.maximum(top, _per_cluster(log_weights, n, block_x, np.min, 0.0))
    keep = upper >= top[:, None] - float(truncate) ** 2
    skipped = np.where(keep, 0.0, nb[None, :] * np.exp(upper - top[:, None]))
    return keep, float(skipped.sum(axis=1).max())


def point_mask(keep, n: int, m: int, block_x: int, block_y: int) -> np.ndarray:
    """The (n, m) point-pair mask of a (Kx, Ky) cluster mask (sorted orders)."""
    keep = np.asarray(keep, dtype=bool)
    return keep[np.arange(n) // block_x][:, np.arange(m) // block_y]


def kernel_matvec_masked(x, y, v, beta: float, mask, row_scale=None, col_scale=None,
                         x_bandwidth=None, y_bandwidth=None) -> np.ndarray:
    """:func:`kernel_matvec` summing only the pairs where ``mask`` (N, M, or True) is True."""
    d2 = sqdist(x, y)
    n, m = d2.shape
    a = np.ones(n) if x_bandwidth is None else np.asarray(x_bandwidth, dtype=np.float64)
    b = np.ones(m) if y_bandwidth is None else np.asarray(y_bandwidth, dtype=np.float64)
    r = np.ones(n) if row_scale is None else np.asarray(row_scale, dtype=np.float64)
    c = np.ones(m) if col_scale is None else np.asarray(col_scale, dtype=np.float64)
    k = np.where(mask, np.exp(-float(beta) * a[:, None] * b[None, :] * d2), 0.0)
    v = np.asarray(v, dtype=np.float64)
    out = k @ (c * v if v.ndim == 1 else c[:, None] * v)
    return r * out if out.ndim == 1 else r[:, None] * out


def kernel_softmax_matvec_masked(x, y, v, beta: float, mask, log_weights=None):
    """``(out or None, lse)`` over the pairs where ``mask`` is True (``v=None``: lse only)."""
    z = np.where(mask, _logits(x, y, beta, log_weights), -np.inf)
    mx = z.max(axis=1)
    p = np.exp(z - mx[:, None])
    s = p.sum(axis=1)
    lse = mx + np.log(s)
    if v is None:
        return None, lse
    v = np.asarray(v, dtype=np.float64)
    return (p @ v) / (s if v.ndim == 1 else s[:, None]), lse


def kernel_logsumexp_masked(x, y, beta: float, mask, log_weights=None) -> np.ndarray:
    """:func:`kernel_logsumexp` over the pairs where ``mask`` is True."""
    return kernel_softmax_matvec_masked(x, y, None, beta, mask, log_weights)[1]
