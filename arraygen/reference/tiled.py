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
    d2 = sqdist(x, y)
    n, m = d2.shape
    a = np.ones(n) if x_bandwidth is None else np.asarray(x_bandwidth, dtype=np.float64)
    b = np.ones(m) if y_bandwidth is None else np.asarray(y_bandwidth, dtype=np.float64)
    r = np.ones(n) if row_scale is None else np.asarray(row_scale, dtype=np.float64)
    c = np.ones(m) if col_scale is None else np.asarray(col_scale, dtype=np.float64)
    k = np.exp(-float(beta) * a[:, None] * b[None, :] * d2)
    v = np.asarray(v, dtype=np.float64)
    cv = c * v if v.ndim == 1 else c[:, None] * v
    out = k @ cv
    return r * out if out.ndim == 1 else r[:, None] * out


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
