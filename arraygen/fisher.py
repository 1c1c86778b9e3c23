"""Fisher hot path: diagonal Fisher estimate and the fused preconditioned-Langevin (pSGLD) step.

Public ops (DESIGN 4.1) and their Array-API implementations; the kernels live in
``arraygen/backends/<language>/fisher.py`` and the float64 oracle in
``arraygen/reference/fisher.py``.

Launcher contract for kernel backends (every backend implements both):

``fisher_diagonal(score, eps) -> F``
    ``score``: float32/float64 array in the caller's namespace, any strides; ``eps``: 1-D array
    of ``nb`` values in the same namespace, device and dtype, where element ``i`` (flat C-order
    index) uses ``eps[i // (score.size // nb)]``. Returns ``score**2 + eps`` with score's dtype
    and, for torch, its memory format.

``fisher_langevin_step(x, score, v, eps, *, step_size, momentum, noise, key) -> (x_new, v_new)``
    ``x, score, v``: same shape and dtype (float32/float64); ``eps``: (B,) with
    ``B = x.shape[0]``; ``noise``: None or an array like ``x``; ``key``: an
    :class:`arraygen.random.Key` whose stream gives the noise when ``noise`` is None (element
    index = flat C-order index of ``x``). Returns new arrays; inputs are not modified.

Memory layouts: a dense input whose memory order is a permutation of its axes (torch
``channels_last``, NumPy Fortran order) reaches ``fisher_diagonal`` launchers as the
C-contiguous permuted view (no copy; the per-batch ``eps`` still applies when the batch axis
stays outermost), and the result is permuted back, so it has the input's layout. The fused
step's noise is keyed by the logical C-order index, so its launchers get C-contiguous copies
and the results are given the inputs' layouts afterwards. Other strided inputs are copied once
by the launchers.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from . import _array_api as aa
from . import _dask, _dispatch
from . import random as _random
from ._validation import (check_fits_dtype, check_scalar, common_namespace, host_float,
                          require_finite)

__all__ = ["fisher_diagonal", "fisher_langevin_step"]

# gpu_order from tools/gpu_bench_fisher.py on an H100, 2**28 float32, per-sample alpha_bar:
# fisher_diagonal through the public op triton 0.91 ms, cupy 1.01 ms, numba_cuda 1.24 ms (the
# kernels alone are within 3% of each other, at 97-100% of the copy bandwidth);
# fisher_langevin_step cupy 2.52 ms, triton 2.86 ms, numba_cuda 4.98 ms.
_dispatch.register(
    "fisher_diagonal",
    kernels={
        "numba_cpu": "arraygen.backends.numba_cpu.fisher:fisher_diagonal",
        "numba_cuda": "arraygen.backends.numba_cuda.fisher:fisher_diagonal",
        "cupy": "arraygen.backends.cupy.fisher:fisher_diagonal",
        "triton": "arraygen.backends.triton.fisher:fisher_diagonal",
    },
    gpu_order=("triton", "cupy", "numba_cuda"),
)
_dispatch.register(
    "fisher_langevin_step",
    kernels={
        "numba_cpu": "arraygen.backends.numba_cpu.fisher:fisher_langevin_step",
        "numba_cuda": "arraygen.backends.numba_cuda.fisher:fisher_langevin_step",
        "cupy": "arraygen.backends.cupy.fisher:fisher_langevin_step",
        "triton": "arraygen.backends.triton.fisher:fisher_langevin_step",
    },
    gpu_order=("cupy", "triton", "numba_cuda"),
)

_T_FALLBACK_WARNED = False
_T_FALLBACK_MESSAGE = (
    "fisher_diagonal: alpha_bar not given, using the alpha_bar = 1-t fallback, which is only "
    "right for a linear alpha_bar schedule; pass alpha_bar explicitly"
)


def _warn_t_fallback() -> None:
    global _T_FALLBACK_WARNED
    if not _T_FALLBACK_WARNED:
        _T_FALLBACK_WARNED = True
        warnings.warn(_T_FALLBACK_MESSAGE, UserWarning, stacklevel=3)


def _per_batch(xp: Any, value: Any, name: str, like: Any, dtype: Any, *, batch: int | None):
    """``value`` in [0, 1]: a Python float (checked here), or a (B,) array in ``dtype``.

    Scalars stay Python floats (no host-to-device copy). Arrays stay on their device and are
    range-checked later by :func:`_check_data`, in the same device reduction as the data (torch
    tensors that require grad keep their graph); a 0-d array is read as a scalar (one sync).
    """
    if aa.is_array(value):
        if value.ndim == 0:
            value = host_float(value)
        else:
            if value.ndim > 1 or value.shape[0] != batch:
                raise ValueError(
                    f"`{name}` must be a scalar or have shape ({batch},) (one value per sample "
                    f"along the first axis of shape {tuple(like.shape)}); "
                    f"got shape {tuple(value.shape)}")
            if xp.isdtype(value.dtype, "complex floating"):
                raise TypeError(f"`{name}` must be real; got dtype {value.dtype}")
            return xp.astype(value, dtype) if value.dtype != dtype else value
    return check_scalar(value, name, low=0.0, high=1.0)


def _eps(xp, score, alpha_bar, t, eps_floor, eps_scale, dtype, *, per_sample: bool):
    """``(eps, checked)``: eps = eps_floor + eps_scale * (1 - alpha_bar) as a 1-D array (1 or
    B values) in ``dtype`` on ``score``'s device, and the per-sample array that still needs its
    [0, 1] range check (None for scalars). A scalar alpha_bar is filled on the device
    (``xp.full``: no copy, no synchronisation)."""
    batch = score.shape[0] if score.ndim else None
    if alpha_bar is None:
        if t is None:
            raise ValueError("pass `alpha_bar` (or `t` for the alpha_bar = 1-t fallback)")
        name, value = "t", _per_batch(xp, t, "t", score, dtype, batch=batch)
        alpha_bar = 1.0 - value
        _warn_t_fallback()
    else:
        name = "alpha_bar"
        value = alpha_bar = _per_batch(xp, alpha_bar, "alpha_bar", score, dtype, batch=batch)
    eps = eps_floor + eps_scale * (1.0 - alpha_bar)
    if isinstance(eps, float):
        n = batch if per_sample and batch is not None else 1
        return xp.full((n,), eps, dtype=dtype, device=aa.device(score)), None
    return _poison_outside_unit(xp, eps, value), (name, value)


def _poison_outside_unit(xp, eps, value):
    """``eps`` with NaN where ``value`` (alpha_bar or t) is outside [0, 1] or NaN: the range is
    enforced on the device, with no host synchronisation, so an unchecked bad value makes its
    sample NaN instead of a plausible wrong result (an elementwise ``where`` over B values)."""
    # NaN made on the device (a host scalar copied to a CUDA device would synchronise)
    return xp.where(_in_unit(xp, value), eps, eps * float("nan"))


def _in_unit(xp, a):
    return xp.logical_and(a >= 0.0, a <= 1.0)


def _in_unit_interval(xp, a):
    return xp.all(_in_unit(xp, a))


def _check_data(xp, finite: dict, nonnegative: dict, unit: tuple | None) -> None:
    """One device reduction and one synchronisation for every data check of a call; on failure
    the culprit is found and named (slow path, errors only).

    ``finite``: name -> array that must be finite; ``nonnegative``: name -> array that must be
    >= 0; ``unit``: ``(name, array)`` whose values must lie in [0, 1], or None.
    """
    checks = []
    for name, a in finite.items():
        if a is None or aa.size(a) == 0:
            continue
        lo, hi = _min_max(xp, a)  # NaN propagates through both; +-inf shows in one of them
        ok = xp.logical_and(xp.isfinite(lo), xp.isfinite(hi))
        checks.append(xp.logical_and(ok, lo >= 0.0) if name in nonnegative else ok)
    checks += [xp.all(a >= 0.0) for name, a in nonnegative.items() if finite.get(name) is None]
    if unit is not None:
        checks.append(_in_unit_interval(xp, unit[1]))
    if not checks:
        return
    ok = checks[0]
    for c in checks[1:]:
        ok = xp.logical_and(ok, c)
    if bool(ok):
        return
    for name, a in finite.items():
        if a is not None:
            require_finite(xp, a, name)
    for name, a in nonnegative.items():
        if not bool(xp.all(a >= 0.0)):
            raise ValueError(f"`{name}` must be non-negative (a running second moment); got "
                             f"minimum {host_float(xp.min(a)):.6g}")
    name, a = unit
    lo, hi = host_float(xp.min(a)), host_float(xp.max(a))
    raise ValueError(f"`{name}` must lie in [0, 1]; got values in [{lo}, {hi}]")


def _min_max(xp, a):
    """(min, max) of a non-empty real array as 0-d device arrays: one read for torch
    (``aminmax``), two reductions elsewhere; no boolean temporaries of ``a``'s size."""
    if aa.is_torch_array(a):
        import torch

        with torch.no_grad():
            return torch.aminmax(a)
    return xp.min(a), xp.max(a)


def _is_array_like(value) -> bool:
    """Arrays and lists/tuples (read as NumPy arrays); Python scalars and None are not."""
    return aa.is_array(value) or isinstance(value, (list, tuple))


def _broadcast_per_sample(xp, values, ndim: int):
    """(B,) -> (B, 1, ..., 1) for broadcasting over a sample; (1,) -> () scalar-like."""
    if values.shape[0] == 1:
        return xp.reshape(values, ())
    return xp.reshape(values, (values.shape[0],) + (1,) * (ndim - 1))


def _cast_out(xp, y, out_dtype):
    """Cast a float32 result back to a half output dtype, clamping to its finite range."""
    if y.dtype == out_dtype:
        return y
    if aa.is_half(xp, out_dtype):
        big = 3.3895313892515355e38 if "bfloat16" in str(out_dtype) else 65504.0
        y = xp.clip(y, -big, big)
    return xp.astype(y, out_dtype)


def _element_strides(x) -> tuple[int, ...] | None:
    """Strides in elements of a NumPy, CuPy or torch array; None for other libraries."""
    if aa.is_torch_array(x):
        return tuple(x.stride())
    if aa.is_numpy_array(x) or aa.is_cupy_array(x):
        return tuple(st // x.itemsize for st in x.strides)
    return None


def _dense_permutation(x) -> tuple[int, ...] | None:
    """``perm`` with ``permute_dims(x, perm)`` C-contiguous (x dense in some order), or None."""
    strides = _element_strides(x)
    if strides is None or any(st < 0 for st in strides):
        return None
    perm = tuple(sorted(range(x.ndim), key=lambda i: (-strides[i], i)))
    expected = 1
    for i in reversed(perm):
        if x.shape[i] != 1 and strides[i] != expected:
            return None
        expected *= x.shape[i]
    return perm


def _inverse(perm: tuple[int, ...]) -> tuple[int, ...]:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


def _is_identity(perm) -> bool:
    return perm is not None and perm == tuple(range(len(perm)))


def _c_contiguous_copy(a):
    """A C-contiguous copy of a NumPy, CuPy or torch array (its own library)."""
    if aa.is_torch_array(a):
        return a.contiguous()
    if aa.is_cupy_array(a):
        import cupy

        return cupy.ascontiguousarray(a)
    return np.ascontiguousarray(a)


def _match_layout(xp, out, ref):
    """``out`` (same shape) with ``ref``'s memory layout when ``ref`` is a dense permutation."""
    perm = _dense_permutation(ref)
    if perm is None or _is_identity(perm) or _element_strides(out) is None:
        return out
    if _dense_permutation(out) == perm:
        return out
    return xp.permute_dims(_c_contiguous_copy(xp.permute_dims(out, perm)), _inverse(perm))


def _diagonal_kernel_call(xp, launcher, score, eps):
    """Run a fisher_diagonal launcher in the memory order of ``score`` when that is free."""
    perm = _dense_permutation(score)
    if perm is None or _is_identity(perm) or (eps.shape[0] > 1 and perm[0] != 0):
        return launcher(score, eps)
    f = launcher(xp.permute_dims(score, perm), eps)
    return xp.permute_dims(f, _inverse(perm))


def fisher_diagonal(score, alpha_bar=None, *, t=None, eps_floor: float = 1e-4,
                    eps_scale: float = 1e-3, check_finite: bool = True,
                    backend: str | None = None):
    r"""Diagonal Fisher estimate :math:`F = s^2 + \epsilon(\bar\alpha)`.

    .. math:: \epsilon = \epsilon_\text{floor} + \epsilon_\text{scale}\,(1 - \bar\alpha)

    Parameters
    ----------
    score : array, shape (B, ...) or any shape when ``alpha_bar`` is a scalar
        Model score :math:`s = \nabla_x \log p_t(x)`. Half-precision inputs are computed in
        float32 and returned in their own dtype (clamped to its finite range); integer inputs
        become the namespace's default float.
    alpha_bar : float or array of shape () or (B,)
        Signal level :math:`\bar\alpha(t) \in [0, 1]`, one per sample along the first axis.
    t : float or array, optional
        Only if ``alpha_bar`` is None: use :math:`\bar\alpha = 1 - t`, which is right only for a
        linear schedule; a ``UserWarning`` ("alpha_bar = 1-t fallback") is issued once.
    eps_floor, eps_scale : float
        Damping; non-negative and finite.
    check_finite : bool
        Check a per-sample ``alpha_bar`` (or ``t``) array for values outside [0, 1] (one small
        device reduction and one synchronisation); False skips it (no host synchronisation;
        the range is then enforced on the device: a sample whose value is outside [0, 1] or
        NaN gets NaN). Scalars are always checked. ``score`` is not checked: F is
        elementwise, NaN in gives NaN out.
    backend : str, optional
        ``"array_api"``, ``"numba_cpu"``, ``"numba_cuda"``, ``"cupy"`` or ``"triton"``
        (default: ``ARRAYGEN_BACKEND`` or automatic, see :mod:`arraygen._dispatch`).

    Returns
    -------
    F : array like ``score`` (same namespace, device, shape, floating dtype; torch memory format)

    Examples
    --------
    >>> import numpy as np
    >>> from arraygen import fisher_diagonal
    >>> score = np.array([[1.0, -2.0], [0.0, 3.0]])
    >>> fisher_diagonal(score, np.array([1.0, 0.5]), eps_floor=0.0, eps_scale=1.0)
    array([[1. , 4. ],
           [0.5, 9.5]])
    """
    if _dask.is_dask_array(score) and t is None:
        return _dask.fisher_diagonal(score, alpha_bar, eps_floor=eps_floor,
                                     eps_scale=eps_scale, check_finite=check_finite,
                                     backend=backend)
    xp, (score, ab_arr, t_arr) = common_namespace(
        score=score, alpha_bar=alpha_bar if _is_array_like(alpha_bar) else None,
        t=t if _is_array_like(t) else None)
    alpha_bar = alpha_bar if ab_arr is None else ab_arr
    t = t if t_arr is None else t_arr
    score, out_dtype = aa.as_float_array(xp, score, "score")
    eps_floor = check_scalar(eps_floor, "eps_floor", nonnegative=True)
    eps_scale = check_scalar(eps_scale, "eps_scale", nonnegative=True)
    eps, unit = _eps(xp, score, alpha_bar, t, eps_floor, eps_scale, score.dtype,
                     per_sample=False)
    if check_finite and unit is not None:
        _check_data(xp, {}, {}, unit)
    name = _dispatch.select("fisher_diagonal", score, backend=backend)
    if name == "array_api":
        f = score * score + _broadcast_per_sample(xp, eps, score.ndim)
    else:
        f = _diagonal_kernel_call(xp, _dispatch.kernel("fisher_diagonal", name), score, eps)
        if f.ndim != score.ndim:  # a 0-d score comes back from launchers as (1,)
            f = xp.reshape(f, tuple(score.shape))
    return _cast_out(xp, _match_layout(xp, f, score), out_dtype)


def fisher_langevin_step(x, score, v, alpha_bar, *, step_size: float, momentum: float = 0.9,
                         noise=None, rng=None, eps_floor: float = 1e-4, eps_scale: float = 1e-3,
                         check_finite: bool = True, backend: str | None = None):
    r"""One fused Fisher-preconditioned Langevin step (pSGLD with momentum).

    .. math::

        v' &= m v + (1 - m) (s^2 + \epsilon(\bar\alpha)) \\
        P &= v'^{-1/2} / \operatorname{mean}_\text{sample}(v'^{-1/2}) \\
        x' &= x + h P s + \sqrt{2 h P}\, z

    where the mean runs over all axes but the first (so each sample's preconditioner has mean
    1) and ``z`` is ``noise`` or standard normals from the Philox stream of ``rng``.

    Parameters
    ----------
    x, score, v : arrays of shape (B, ...), ``x.ndim >= 2``
        State, score at ``x``, and the running second moment (non-negative).
    alpha_bar : float or array of shape (B,)
        Signal level in [0, 1] for the damping :math:`\epsilon`.
    step_size : float
        :math:`h > 0`.
    momentum : float
        :math:`m \in [0, 1)`.
    noise : array like ``x``, optional
        Standard normal noise to use instead of drawing it.
    rng : int, Key or numpy.random.Generator, optional
        Stream for the noise when ``noise`` is None. An int or Key gives the same noise on
        every backend and device; GPU kernels draw it in-kernel.
    eps_floor : float
        Damping floor, positive (it keeps :math:`v' > 0`, so :math:`P` is finite).
    eps_scale : float
        As in :func:`fisher_diagonal` (non-negative).
    check_finite : bool
        Check that ``x``, ``score``, ``v`` and ``noise`` are finite, ``v >= 0`` and a per-sample
        ``alpha_bar`` lies in [0, 1], in one device reduction with one synchronisation
        (``ValueError`` naming the argument). False skips it and makes the call free of host
        synchronisation (the choice for sampling loops): bad data then gives NaN, and a
        per-sample ``alpha_bar`` outside [0, 1] (or NaN) is caught on the device, making that
        sample's ``x_new`` and ``v_new`` NaN, so a finiteness check of the final result
        (e.g. :func:`arraygen._validation.require_finite`) reports it after the fact.
    backend : str, optional
        As in :func:`fisher_diagonal`.

    Returns
    -------
    x_new : array like ``x``
    v_new : array like ``v``

    Examples
    --------
    >>> import numpy as np
    >>> from arraygen import fisher_langevin_step
    >>> x = np.zeros((1, 2)); s = np.array([[1.0, -1.0]]); v = np.ones((1, 2))
    >>> x_new, v_new = fisher_langevin_step(x, s, v, 1.0, step_size=0.01, noise=np.zeros((1, 2)))
    >>> x_new, v_new
    (array([[ 0.01, -0.01]]), array([[1.00001, 1.00001]]))
    """
    if _dask.any_dask(x, score, v, noise, alpha_bar):
        return _dask.fisher_langevin_step(
            x, score, v, alpha_bar, step_size=check_scalar(step_size, "step_size", positive=True),
            momentum=momentum, noise=noise, rng=rng, eps_floor=eps_floor, eps_scale=eps_scale,
            check_finite=check_finite, backend=backend)
    xp, (x, score, v, noise, ab_arr) = common_namespace(
        x=x, score=score, v=v, noise=noise,
        alpha_bar=alpha_bar if _is_array_like(alpha_bar) else None)
    alpha_bar = alpha_bar if ab_arr is None else ab_arr
    for name, arr in (("x", x), ("score", score), ("v", v)):
        if arr is None:
            raise TypeError(f"`{name}` must be an array; got None")
    for name, arr in (("score", score), ("v", v), ("noise", noise)):
        if arr is not None and tuple(arr.shape) != tuple(x.shape):
            raise ValueError(
                f"`{name}` must have the shape of `x` {tuple(x.shape)}; got {tuple(arr.shape)}"
            )
    if x.ndim < 2:
        raise ValueError(
            f"`x` must have a batch axis and at least one more axis; got shape {tuple(x.shape)}"
        )
    step_size = check_scalar(step_size, "step_size", positive=True)
    momentum = check_scalar(momentum, "momentum", low=0.0, high=1.0, high_inclusive=False)
    eps_floor = check_scalar(eps_floor, "eps_floor", positive=True)
    eps_scale = check_scalar(eps_scale, "eps_scale", nonnegative=True)
    x_c, x_dtype = aa.as_float_array(xp, x, "x")
    s_c, _ = aa.as_float_array(xp, score, "score")
    v_c, v_dtype = aa.as_float_array(xp, v, "v")
    work = xp.result_type(x_c.dtype, s_c.dtype, v_c.dtype)
    x_c, s_c, v_c = (xp.astype(a, work) if a.dtype != work else a for a in (x_c, s_c, v_c))
    check_fits_dtype(xp, (1.0 - momentum) * eps_floor, work, "eps_floor",
                     what="(1 - momentum) * eps_floor")
    check_fits_dtype(xp, 2.0 * step_size, work, "step_size", what="2 * step_size")
    eps, unit = _eps(xp, x_c, alpha_bar, None, eps_floor, eps_scale, work, per_sample=True)
    if noise is not None:
        noise, _ = aa.as_float_array(xp, noise, "noise")
        noise = xp.astype(noise, work) if noise.dtype != work else noise
    if check_finite:
        _check_data(xp, {"x": x_c, "score": s_c, "v": v_c, "noise": noise}, {"v": v_c}, unit)
    gen = _random.as_key(rng) if noise is None else None
    if isinstance(gen, np.random.Generator):
        noise, gen = _random.normal_like(gen, x_c, dtype=work), None
    name = _dispatch.select("fisher_langevin_step", x_c, s_c, v_c, noise, backend=backend)
    if name == "array_api":
        if noise is None:
            noise = _random.normal(gen, tuple(x_c.shape), dtype=work, like=x_c)
        x_new, v_new = _langevin_step_xp(xp, x_c, s_c, v_c, eps, step_size, momentum, noise)
    else:
        launcher = _dispatch.kernel("fisher_langevin_step", name)
        x_new, v_new = launcher(x_c, s_c, v_c, eps, step_size=step_size, momentum=momentum,
                                noise=noise, key=gen)
    x_new, v_new = _match_layout(xp, x_new, x), _match_layout(xp, v_new, v)
    return _cast_out(xp, x_new, x_dtype), _cast_out(xp, v_new, v_dtype)


def _langevin_step_xp(xp, x, s, v, eps, step_size, momentum, z):
    """Array-API pSGLD step (see :func:`fisher_langevin_step`)."""
    eps_b = _broadcast_per_sample(xp, eps, x.ndim)
    v_new = momentum * v + (1.0 - momentum) * (s * s + eps_b)
    p = 1.0 / xp.sqrt(v_new)
    p = p / xp.mean(p, axis=tuple(range(1, x.ndim)), keepdims=True)
    x_new = x + step_size * p * s + xp.sqrt((2.0 * step_size) * p) * z
    return x_new, v_new
