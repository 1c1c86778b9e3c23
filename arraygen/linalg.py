"""Array-API eigensolver: thick-restart (block) Lanczos for the largest eigenpairs.

:func:`eigsh` finds the ``k`` largest (algebraic) eigenvalues of a real symmetric operator given
as a matrix or as a block matvec ``V -> A @ V``. It works in any Array-API namespace on any
device (NumPy, torch CPU/CUDA, CuPy, array_api_strict): the Krylov basis ``V`` (n, ncv + b)
stays in the operator's namespace and dtype, only the small projected matrix (ncv x ncv) is
solved on the host in float64. Memory is O(n * ncv); no n x n array is ever formed.

Method (Krylov-Schur form of thick-restart Lanczos, Wu & Simon 2000; Stewart 2001):

* random start block from the Philox stream of ``rng`` (never a guessed eigenvector);
* each new block ``W = A V_j`` is orthogonalised against the whole basis by two passes of
  classical Gram-Schmidt (full reorthogonalisation), the coefficients fill the projected
  matrix ``H = V^T A V``; an exhausted Krylov space (breakdown) continues with a fresh random
  block orthogonal to the basis;
* Rayleigh-Ritz on ``H``; a Ritz pair ``(theta_i, V y_i)`` is converged when its residual
  ``||A V y_i - theta_i V y_i|| = ||B y_i||`` (``B``: the coupling of the last block) is at
  most ``tol * ||A||_est`` (``||A||_est``: the largest ``|theta|`` seen);
* thick restart: keep the ``keep`` best Ritz vectors plus the residual block, continue;
* repeated eigenvalues: a start block of ``b`` random vectors sees up to ``b`` directions of
  each eigenspace, so multiplicities up to ``block_size`` are found in one pass; the deflation
  check then runs block Lanczos on ``A`` restricted to the complement of the found vectors
  (found directions shifted below the spectrum) and merges anything above the k-th eigenvalue
  by Rayleigh-Ritz on the union, ``b`` more copies per pass, until nothing is left above it.

The returned residuals are recomputed from the operator (one extra block matvec), so they are
the true ``||A x_i - lambda_i x_i||``, not estimates.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from . import _array_api as aa
from . import random as _random
from ._validation import check_int, check_scalar

__all__ = ["EigshInfo", "eigsh"]


@dataclasses.dataclass
class EigshInfo:
    """Diagnostics of :func:`eigsh` (also readable as a mapping: ``info["residuals"]``).

    Attributes
    ----------
    residuals : array, shape (k,)
        True residual norms ``||A x_i - lambda_i x_i||`` (unit-norm ``x_i``), in the operator's
        namespace and device.
    converged : bool
        Whether every wanted Ritz pair met the tolerance.
    n_converged : int
        How many of the ``k`` wanted pairs met it.
    n_matvec : int
        Number of operator-vector products (columns), including the residual check.
    n_calls : int
        Number of calls of the operator (a block of ``b`` columns counts once).
    n_restarts : int
        Thick restarts performed.
    tol : float
        The tolerance used (relative to ``||A||_est``).
    """

    residuals: Any
    converged: bool
    n_converged: int
    n_matvec: int
    n_calls: int
    n_restarts: int
    tol: float

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def keys(self):
        return [f.name for f in dataclasses.fields(self)]


def default_tol(xp: Any, dtype: Any) -> float:
    """Default relative residual tolerance: 1e-9 for float64, 1e-5 for float32."""
    return 1e-9 if dtype == xp.float64 else 1e-5


class _Operator:
    """A symmetric operator as a block matvec, with its namespace, device, dtype and size."""

    def __init__(self, a, n, xp, device, dtype, matmat=False):
        self.matmat = bool(matmat)
        if aa.is_array(a):
            ns = aa.array_namespace(matvec_or_matrix=a)
            if a.ndim != 2 or a.shape[0] != a.shape[1]:
                raise ValueError(f"`matvec_or_matrix` must be a square matrix or a callable; got "
                                 f"shape {tuple(a.shape)}")
            if n is not None and int(n) != a.shape[0]:
                raise ValueError(f"`n` ({n}) does not match the matrix shape {tuple(a.shape)}")
            mat, _ = aa.as_float_array(ns, a, "matvec_or_matrix")
            if dtype is not None:
                mat = ns.astype(mat, _dtype_of(ns, dtype))
            if not aa.all_finite(ns, mat):
                raise ValueError("`matvec_or_matrix` contains non-finite values")
            self.xp, self.device, self.dtype, self.n = ns, aa.device(mat), mat.dtype, a.shape[0]
            self._mat = mat
            self._fn = None
        elif callable(a):
            if n is None:
                raise ValueError("`n` is required when `matvec_or_matrix` is a callable")
            self.n = check_int(n, "n", minimum=1)
            self.xp = aa.namespace_for(np if xp is None else xp)
            self.device = device
            self.dtype = _dtype_of(self.xp, dtype) if dtype is not None else self.xp.float64
            self._mat = None
            self._fn = a
        else:
            raise TypeError(f"`matvec_or_matrix` must be a square array or a callable; got "
                            f"{type(a).__name__}")
        self.n_matvec = 0
        self.n_calls = 0

    def __call__(self, v):
        self.n_matvec += v.shape[1]
        self.n_calls += 1
        if self._mat is not None:
            return self.xp.matmul(self._mat, v)
        if self.matmat:
            out = self._fn(v)
            if tuple(out.shape) != tuple(v.shape):
                raise ValueError(f"`matvec_or_matrix` returned shape {tuple(out.shape)} for "
                                 f"input of shape {tuple(v.shape)}; with matmat=True it must map "
                                 "(n, p) blocks to (n, p)")
        else:
            self.n_calls += v.shape[1] - 1
            cols = []
            for i in range(v.shape[1]):
                col = self._fn(v[:, i])
                if tuple(col.shape) != (self.n,):
                    raise ValueError(f"`matvec_or_matrix` returned shape {tuple(col.shape)} for "
                                     f"a vector of shape ({self.n},); it must map (n,) to (n,)")
                cols.append(col)
            out = self.xp.stack(cols, axis=1)
        return out if out.dtype == self.dtype else self.xp.astype(out, self.dtype)

    def check_symmetric(self, gen, tol: float) -> None:
        """Warn if ``u^T A v != v^T A u`` on a random probe (matrices only: free of matvecs)."""
        if self._mat is None:
            return
        xp = self.xp
        uv = _normal(gen, self.n, 2, xp, self.device, self.dtype, step=1 << 40)
        av = xp.matmul(self._mat, uv)
        a = float(xp.sum(uv[:, 0] * av[:, 1]))
        b = float(xp.sum(uv[:, 1] * av[:, 0]))
        scale = float(xp.linalg.vector_norm(av)) * float(xp.linalg.vector_norm(uv)) + 1e-300
        if abs(a - b) > max(tol, 100 * float(xp.finfo(self.dtype).eps)) * scale:
            warnings.warn(f"eigsh: the matrix does not look symmetric (u^T A v - v^T A u = "
                          f"{a - b:.3g} on a random probe); eigsh assumes a symmetric operator",
                          UserWarning, stacklevel=3)


def _dtype_of(xp, dtype):
    if isinstance(dtype, str):
        dtype = getattr(xp, dtype)
    if dtype not in (xp.float32, xp.float64):
        raise ValueError(f"`dtype` must be float32 or float64; got {dtype}")
    return dtype


def _normal(gen, n: int, p: int, xp, device, dtype, *, step: int):
    """(n, p) standard normals: Philox stream ``gen.advance(step)``, or a NumPy Generator."""
    if isinstance(gen, np.random.Generator):
        host = gen.standard_normal((n, p))
        return xp.asarray(host.astype("float32" if dtype == xp.float32 else "float64"),
                          device=device)
    return _random.normal(gen.advance(step), (n, p), dtype=dtype, xp=xp, device=device)


def _host(a) -> np.ndarray:
    return np.asarray(aa.to_numpy(a), dtype=np.float64)


class _Basis:
    """The Krylov basis (n, j) as one array, grown by concatenation (no in-place writes)."""

    def __init__(self, op: _Operator):
        self.op = op
        self.v = None

    @property
    def size(self) -> int:
        return 0 if self.v is None else self.v.shape[1]

    def append(self, q) -> None:
        self.v = q if self.v is None else self.op.xp.concat([self.v, q], axis=1)

    def project_out(self, w):
        """Two classical Gram-Schmidt passes against the basis: returns (w_perp, V^T w)."""
        xp = self.op.xp
        if self.v is None:
            return w, None
        vt = xp.matrix_transpose(self.v)
        c1 = xp.matmul(vt, w)
        w = w - xp.matmul(self.v, c1)
        c2 = xp.matmul(vt, w)
        w = w - xp.matmul(self.v, c2)
        return w, c1 + c2


def _orthonormal_block(basis: _Basis, w, gen, step: int, thresh: float):
    """Orthonormalise ``w`` (n, b), already orthogonal to the basis: ``w = Q R``.

    Directions with singular value below ``thresh`` (an exhausted Krylov space) are replaced
    by random vectors orthogonal to the basis and to the rest of ``Q``, with zero coupling.
    Returns ``(Q, R (b, b) float64 host, full_rank)``.
    """
    op = basis.op
    xp = op.xp
    b = w.shape[1]
    if b == 1:
        norm = float(xp.linalg.vector_norm(w))
        if not math.isfinite(norm):
            raise ValueError("`matvec_or_matrix` produced non-finite values")
        if norm > thresh:
            return w / norm, np.array([[norm]]), True
        rank, q, r = 0, None, np.zeros((1, 1))
    else:
        # w = Qw Rw (Householder, on the device), then the small SVD Rw = U S V^T on the host:
        # w = (Qw U) S V^T, the rank-revealing factorisation without an n x b SVD
        try:
            qw, rw = xp.linalg.qr(w)
        except Exception as exc:  # LAPACK errors of NaN input differ between libraries
            if np.all(np.isfinite(_host(w))):
                raise
            raise ValueError("`matvec_or_matrix` produced non-finite values") from exc
        rw_h = _host(rw)
        if not np.all(np.isfinite(rw_h)):
            raise ValueError("`matvec_or_matrix` produced non-finite values")
        ur, s_h, vt_h = np.linalg.svd(rw_h)
        rank = int(np.sum(s_h > thresh))
        r = np.zeros((b, b))
        r[:rank] = s_h[:rank, None] * vt_h[:rank]
        q = None
        if rank:
            q = xp.matmul(qw, xp.asarray(np.ascontiguousarray(ur[:, :rank]), dtype=op.dtype,
                                         device=op.device))
        if rank == b:
            return q, r, True
    # breakdown: fill the missing directions with random vectors orthogonal to everything
    z = _normal(gen, op.n, b - rank, xp, op.device, op.dtype, step=step)
    for _ in range(2):
        z, _c = basis.project_out(z)
        if q is not None:
            z = z - xp.matmul(q, xp.matmul(xp.matrix_transpose(q), z))
    qz, _r = xp.linalg.qr(z)
    q = qz if q is None else xp.concat([q, qz], axis=1)
    return q, r, False


def _rayleigh_ritz(h, m: int, b: int, anorm: float):
    """Ritz values (descending), vectors and residual estimates of the m x m projection."""
    hs = 0.5 * (h[:m, :m] + h[:m, :m].T)
    theta, y = np.linalg.eigh(hs)
    theta, y = theta[::-1].copy(), np.ascontiguousarray(y[:, ::-1])
    anorm = max(anorm, float(np.max(np.abs(theta))))
    coupling = h[m:m + b, :m]
    res_est = np.linalg.norm(coupling @ y, axis=0)
    return theta, y, coupling, res_est, anorm


def eigsh(matvec_or_matrix: Callable | Any, k: int, *, n: int | None = None, xp: Any = None,
          device: Any = None, dtype: Any = None, tol: float | None = None,
          max_iter: int | None = None, ncv: int | None = None, block_size: int = 1,
          matmat: bool = False, rng: Any = None, verify: bool = True):
    r"""The ``k`` largest eigenpairs of a real symmetric operator (thick-restart Lanczos).

    Solves :math:`A x_i = \lambda_i x_i` for the ``k`` largest (algebraic) :math:`\lambda_i`,
    using only products with :math:`A`; see the module docstring for the method.

    Repeated eigenvalues: a Krylov method started from a block of ``b`` random vectors sees
    at most ``b`` independent directions of each eigenspace, so one pass of block Lanczos finds
    every eigenvalue of multiplicity up to ``block_size`` with all its copies. With
    ``verify=True`` (default) the result is then checked on the deflated operator
    :math:`(I - XX^T) A (I - XX^T)`: an eigenvalue above :math:`\lambda_k` that the first pass
    missed (multiplicity above ``block_size``, or an unlucky start) is found there, ``block_size``
    copies per pass, and merged by a Rayleigh-Ritz step on the union, until the deflated operator
    has nothing above :math:`\lambda_k`. ``info.converged`` is True only when that check passed.

    Parameters
    ----------
    matvec_or_matrix : array (n, n) or callable
        A symmetric matrix, or a callable mapping a vector ``v`` (n,) to ``A @ v`` (n,) in the
        namespace, device and dtype given by ``xp``/``device``/``dtype`` (or, with
        ``matmat=True``, a block ``V`` (n, p) to ``A @ V`` (n, p) in one call).
    k : int
        Number of eigenpairs, ``1 <= k < n``.
    n : int, optional
        Operator size (required for a callable).
    xp, device, dtype : optional
        Namespace (module), device and dtype (float32/float64) of the basis for a callable
        operator; default NumPy, host, float64. For a matrix they are taken from the matrix.
    tol : float, optional
        Convergence test ``||A x_i - theta_i x_i|| <= tol * ||A||_est``; default 1e-9
        (float64) or 1e-5 (float32).
    max_iter : int, optional
        Maximum number of restarts (default 300).
    ncv : int, optional
        Basis size before a restart (default ``max(2k + 1, 20)``, a multiple of
        ``block_size``, at most ``n - block_size``).
    block_size : int
        Vectors per Lanczos step (block Lanczos): the largest multiplicity found in one pass.
        With ``matmat=True`` one operator call per step.
    matmat : bool
        The callable takes (n, p) blocks (fewer, wider calls: the start block, each step and
        the final residual check are one call each).
    rng : int, Key or numpy.random.Generator, optional
        Random start block (and breakdown replacements); Philox stream for int/Key.
    verify : bool
        Run the deflation check for missed (repeated) eigenvalues described above.

    Returns
    -------
    eigenvalues : array, shape (k,)
        Descending.
    eigenvectors : array, shape (n, k)
        Orthonormal columns, ``eigenvectors[:, i]`` belongs to ``eigenvalues[i]``.
    info : EigshInfo
        ``residuals`` (true residual norms), ``converged``, ``n_matvec``, ``n_calls``, ...

    Raises
    ------
    ValueError
        ``k < 1`` or ``k >= n``; operator producing non-finite values; bad shapes.

    Warns
    -----
    RuntimeWarning
        If not all pairs converged within ``max_iter`` restarts, or the deflation check still
        found missed eigenvalues after its last pass (``info.converged`` is then False and the
        current Ritz approximations are returned).

    Examples
    --------
    >>> import numpy as np
    >>> from arraygen.linalg import eigsh
    >>> a = np.diag(np.arange(100.0))
    >>> w, v, info = eigsh(a, 3, rng=0)
    >>> np.round(w, 6).tolist()
    [99.0, 98.0, 97.0]
    >>> a = np.diag(np.r_[np.full(3, 2.0), np.arange(97.0) / 97])   # eigenvalue 2, three times
    >>> w, v, info = eigsh(a, 4, rng=0)
    >>> np.round(w, 6).tolist(), info.converged
    ([2.0, 2.0, 2.0, 0.989691], True)
    """
    op = _Operator(matvec_or_matrix, n, xp, device, dtype, matmat)
    nn = op.n
    k = check_int(k, "k", minimum=1)
    if k >= nn:
        raise ValueError(f"`k` must be smaller than the operator size n = {nn}; got k = {k}")
    b = check_int(block_size, "block_size", minimum=1)
    tol = (default_tol(op.xp, op.dtype) if tol is None
           else check_scalar(tol, "tol", positive=True))
    max_iter = 300 if max_iter is None else check_int(max_iter, "max_iter", minimum=1)
    ncv = None if ncv is None else check_int(ncv, "ncv", minimum=k + 1)
    gen = _random.as_key(rng)
    op.check_symmetric(gen, tol)
    return _eigsh(op, k, b, tol, max_iter, ncv, gen, verify=bool(verify))


def _eigsh(op: _Operator, k: int, b: int, tol: float, max_iter: int, ncv: int | None, gen,
           *, verify: bool = True, stacklevel: int = 3):
    """:func:`eigsh` on a trusted operator and options."""
    ns = op.xp
    res = _lanczos(op, k, b, tol, max_iter, ncv, gen, step0=0)
    if res is None:
        return _dense(op, k, tol)
    theta, vecs, n_converged, restarts, res_est, _done = res
    converged = n_converged == k
    if not converged:
        warnings.warn(
            f"eigsh: only {n_converged} of {k} eigenpairs converged after {restarts} restarts "
            f"(tol={tol:g}, largest residual estimate {float(np.max(res_est)):.3g}); "
            "returning the current Ritz approximations (info.converged=False)",
            RuntimeWarning, stacklevel=stacklevel)
    residuals = None
    if verify and converged:
        theta, vecs, residuals, verified, n_added = _complete(op, theta, vecs, k, b, tol,
                                                              max_iter, gen, ncv=ncv)
        if not verified:
            converged = False
            warnings.warn(
                f"eigsh: the deflation check still finds eigenvalues above lambda_k = "
                f"{theta[k - 1]:.6g} that the solver missed (repeated eigenvalues of "
                f"multiplicity above block_size={b}?); returning the current approximations "
                "(info.converged=False); a larger block_size finds more copies per pass",
                RuntimeWarning, stacklevel=stacklevel)
    vals = ns.asarray(np.ascontiguousarray(theta[:k]), dtype=op.dtype, device=op.device)
    if residuals is None:
        residuals = ns.linalg.vector_norm(op(vecs) - vecs * vals[None, :], axis=0)
    info = EigshInfo(residuals=residuals, converged=converged, n_converged=n_converged,
                     n_matvec=op.n_matvec, n_calls=op.n_calls, n_restarts=restarts, tol=tol)
    return vals, vecs, info


def _lanczos(op: _Operator, k: int, b: int, tol: float, max_iter: int, ncv: int | None, gen,
             *, step0: int, floor: float | None = None):
    """Thick-restart block Lanczos core: ``(theta (k,) host, X (n, k), n_conv, restarts,
    res_est (k,), done)``, or None when the operator is too small for a Krylov basis.

    ``floor``: only the Ritz pairs above it, and the first one below it, must converge (the
    deflation check's question is whether anything lies above ``floor``)."""

    def finished(theta, res_est):
        need = k if floor is None else min(k, 1 + int(np.sum(theta[:k] > floor)))
        return bool(np.all(res_est[:need] <= tol * anorm))

    ns, nn = op.xp, op.n
    m = max(2 * k + 1, 20) if ncv is None else ncv
    m = -(-max(m, k + b) // b) * b
    m = min(m, (nn - b) // b * b)
    if m < k + 1 or m < 2 * b:
        return None

    eps = float(np.finfo(np.float32 if op.dtype == ns.float32 else np.float64).eps)
    basis = _Basis(op)
    q0, _r = ns.linalg.qr(_normal(gen, nn, b, ns, op.device, op.dtype, step=step0))
    basis.append(q0)
    h = np.zeros((m + b, m + b))
    anorm = 0.0
    draws = 1
    restarts = 0
    keep = 0
    while True:
        # expand the basis towards m + b columns; stop early once the wanted pairs converge
        early = False
        broke = False
        while basis.size < m + b and not early:
            j = basis.size
            cur = basis.v[:, j - b:j]
            w = op(cur)
            w, c = basis.project_out(w)
            c_h = _host(c)
            if not np.all(np.isfinite(c_h)):
                raise ValueError("`matvec_or_matrix` produced non-finite values")
            h[:j, j - b:j] = c_h
            anorm = max(anorm, float(np.max(np.abs(c_h[j - b:j]))))
            thresh = max(anorm, 1e-300) * eps * 8 * math.sqrt(nn)
            q, r, full_rank = _orthonormal_block(basis, w, gen, step0 + draws, thresh)
            draws += 1
            # after a breakdown zero residuals do not prove that no eigenvalue is missing
            broke = broke or not full_rank
            h[j:j + b, j - b:j] = r
            basis.append(q)
            if k < j < m and not broke:
                theta, y, coupling, res_est, anorm = _rayleigh_ritz(h, j, b, anorm)
                early = finished(theta, res_est)
        mc = basis.size - b
        theta, y, coupling, res_est, anorm = _rayleigh_ritz(h, mc, b, anorm)
        done = res_est[:k] <= tol * anorm
        if finished(theta, res_est) or restarts >= max_iter:
            break
        # thick restart: the best `keep` Ritz vectors plus the residual block
        n_conv = int(done.sum())
        keep = min(m - b, max(k + n_conv, k + (m - k) // 2))
        keep = m - ((m - keep) // b) * b
        restarts += 1
        ritz = ns.matmul(basis.v[:, :m], ns.asarray(y[:, :keep], dtype=op.dtype,
                                                      device=op.device))
        resid = basis.v[:, m:m + b]
        basis = _Basis(op)
        basis.append(ritz)
        basis.append(resid)
        arrow = coupling @ y[:, :keep]
        h = np.zeros((m + b, m + b))
        h[:keep, :keep] = np.diag(theta[:keep])
        h[keep:keep + b, :keep] = arrow
        h[:keep, keep:keep + b] = arrow.T
    yk = ns.asarray(np.ascontiguousarray(y[:, :k]), dtype=op.dtype, device=op.device)
    vecs = ns.matmul(basis.v[:, :mc], yk)
    return (theta[:k].copy(), vecs, int(done.sum()), restarts, res_est[:k],
            finished(theta, res_est))


class _Deflated:
    """``w -> P A P w - shift (I - P) w`` with ``P = I - X X^T``: ``A`` on the complement of
    span(X), the found directions moved below the spectrum (an ``_Operator`` look-alike)."""

    def __init__(self, op: _Operator, x, shift: float):
        self.op, self.x, self.shift = op, x, shift
        self.xp, self.device, self.dtype, self.n = op.xp, op.device, op.dtype, op.n
        self.xt = op.xp.matrix_transpose(x)

    def __call__(self, w):
        xp = self.xp
        comp = xp.matmul(self.x, xp.matmul(self.xt, w))
        aw = self.op(w - comp)
        aw = aw - xp.matmul(self.x, xp.matmul(self.xt, aw))
        return aw - self.shift * comp


def _complete(op: _Operator, theta, vecs, k: int, b: int, tol: float, max_iter: int, gen,
              max_passes: int | None = None, ncv: int | None = None):
    """Deflation check for eigenvalues the solver missed (repeated eigenvalues).

    Repeats: top ``b`` eigenpairs of ``A`` on the orthogonal complement of the found vectors
    (block Lanczos with block ``b`` from a fresh random block); those above ``theta[k-1]``
    (beyond the tolerance) were missed: Rayleigh-Ritz on the union, keep the top ``k``.
    Returns ``(theta, vecs, residuals or None, verified, n_added)``.
    """
    ns, nn = op.xp, op.n
    kk = min(b, nn - k - 1)
    if kk < 1:
        return theta, vecs, None, True, 0
    passes = max_passes if max_passes is not None else k // b + 3
    eps = float(np.finfo(np.float32 if op.dtype == ns.float32 else np.float64).eps)
    residuals = None
    added = 0
    for p in range(passes):
        anorm = max(float(np.max(np.abs(theta))), 1e-300)
        lam_k = float(theta[k - 1])
        thr = 10.0 * tol * anorm + 100.0 * eps * anorm
        defl = _Deflated(op, vecs, 2.0 * anorm + abs(lam_k))
        res = _lanczos(defl, kk, b, tol, max_iter, ncv, gen, step0=(p + 1) << 24,
                       floor=lam_k + thr)
        if res is None:     # complement too small for a Krylov basis: dense on it
            q = ns.linalg.qr(_normal(gen, nn, nn - k, ns, op.device, op.dtype,
                                     step=(p + 1) << 24))[0]
            q = q - ns.matmul(vecs, ns.matmul(ns.matrix_transpose(vecs), q))
            q = ns.linalg.qr(q)[0]
            hq = _host(ns.matmul(ns.matrix_transpose(q), op(q)))
            mu_all, y_all = np.linalg.eigh(0.5 * (hq + hq.T))
            mu, u = mu_all[::-1], ns.matmul(q, ns.asarray(np.ascontiguousarray(y_all[:, ::-1]),
                                                          dtype=op.dtype, device=op.device))
            inner_ok = True
        else:
            mu, u, _n, _r, _e, inner_ok = res
        new = np.flatnonzero(mu > lam_k + thr)
        if new.size == 0:
            return theta, vecs, residuals, inner_ok, added
        added += int(new.size)
        un = ns.take(u, ns.asarray([int(i) for i in new], dtype=ns.int64, device=op.device),
                     axis=1)
        for _ in range(2):
            un = un - ns.matmul(vecs, ns.matmul(ns.matrix_transpose(vecs), un))
        un = ns.linalg.qr(un)[0]
        q = ns.concat([vecs, un], axis=1)
        aq = op(q)
        hq = _host(ns.matmul(ns.matrix_transpose(q), aq))
        w_all, y_all = np.linalg.eigh(0.5 * (hq + hq.T))
        theta = w_all[::-1][:k].copy()
        yk = ns.asarray(np.ascontiguousarray(y_all[:, ::-1][:, :k]), dtype=op.dtype,
                        device=op.device)
        vecs = ns.matmul(q, yk)
        vals = ns.asarray(theta, dtype=op.dtype, device=op.device)
        residuals = ns.linalg.vector_norm(ns.matmul(aq, yk) - vecs * vals[None, :], axis=0)
    return theta, vecs, residuals, False, added


def _dense(op: _Operator, k: int, tol: float):
    """Tiny operators: apply to the identity and use the namespace's dense ``eigh``."""
    xp = op.xp
    eye = xp.eye(op.n, dtype=op.dtype, device=op.device)
    a = op(eye)
    a = 0.5 * (a + xp.matrix_transpose(a))
    w, v = xp.linalg.eigh(a)
    idx = xp.arange(op.n - 1, op.n - 1 - k, -1, device=op.device)
    vals = xp.take(w, idx)
    vecs = xp.take(v, idx, axis=1)
    residuals = xp.linalg.vector_norm(xp.matmul(a, vecs) - vecs * vals[None, :], axis=0)
    info = EigshInfo(residuals=residuals, converged=True, n_converged=k, n_matvec=op.n_matvec,
                     n_calls=op.n_calls, n_restarts=0, tol=tol)
    return vals, vecs, info
