"""Triton kernels of the Fisher hot path (launcher contract: :mod:`arraygen.fisher`).

Elements are handled as ``[quads, 4]`` tiles: row ``q`` is the quad of flat indices
``4q .. 4q+3``, which is exactly Philox block ``q`` of the noise stream, and each row is one
16-byte (float32) access. ``fisher_langevin_step`` with many samples: one program per sample;
short samples (<= 4096 elements) stay in registers between the reduction and the update
(the op's 20 bytes/element in float32), longer ones are re-read in chunks. With few long samples: a
per-tile partial-sum kernel, then an update kernel that reduces the partials in a fixed order.
Loop trip counts are compile-time constants (the interpreter cannot loop to a runtime bound),
so each sample length compiles once.
"""

from __future__ import annotations

import dataclasses

import triton
import triton.language as tl

from .. import _interop
from .._tuning import Tunable
from . import philox



@dataclasses.dataclass(frozen=True)
class Tuning:
    """Launch tuning of the Triton Fisher kernels (override with ``TUNING.override(...)``).

    Samples of up to 4 ``single_max_quads`` elements stay in registers between the reduction
    and the update; longer ones are processed in chunks of ``chunk_quads`` quads and re-read
    (from L2). Measured on an H100 at 2**28 float32 in (16384, 16384): chunks of 2048 quads
    beat keeping a whole 16384-element sample in one program (register spills), 2.9 ms vs
    4.3 ms.
    """

    block_diag: int = 4096
    diag_warps: int = 8
    single_max_quads: int = 1024
    chunk_quads: int = 2048
    fused_min_samples: int = 256  #: this many samples fill an H100 with one program each
    fused_max_per: int = 1 << 15  #: samples at most this long always take the one-kernel path
    split_tile: int = 8192  #: fewest elements per tile on the two-kernel path
    split_blocks: int = 512  #: programs to aim for on the two-kernel path
    evict_hints: bool = True  #: keep score/v in L2 for the re-read, stream x and the outputs
    fused_warps: int = 0  #: warps per program of the one-kernel path (0: from the chunk size)
    join_lanes: bool = False  #: place the 4 normals of a quad by tl.join (else by selects)


TUNING = Tunable("triton.fisher", Tuning())
_KEY_ARGS = ["c2", "c3", "k0", "k1"]


@triton.jit
def _diagonal_kernel(s_ptr, eps_ptr, out_ptr, n_per, tiles, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    b = pid // tiles
    offs_in = (pid - b * tiles) * BLOCK + tl.arange(0, BLOCK)
    mask = offs_in < n_per
    offs = b * n_per + offs_in
    e = tl.load(eps_ptr + b)
    s = tl.load(s_ptr + offs, mask=mask)
    tl.store(out_ptr + offs, s * s + e, mask=mask)


@triton.jit
def _sqrt(x, IS_F64: tl.constexpr):
    if IS_F64:
        return tl.sqrt(x)
    else:
        return tl.sqrt_rn(x)


@triton.jit
def _quads(qs, start, stop, Q: tl.constexpr):
    """Quad indices ``qs .. qs+Q-1``, their ``[Q, 4]`` element indices and the in-range mask."""
    q = qs + tl.arange(0, Q)
    idx = q[:, None] * 4 + tl.arange(0, 4)[None, :]
    return q, idx, (idx >= start) & (idx < stop)


@triton.jit
def _vnew_rsqrt(s, v, e, m, one_m, IS_F64: tl.constexpr):
    vn = m * v + one_m * (s * s + e)
    return vn, 1.0 / _sqrt(vn, IS_F64)


@triton.jit
def _chunk_sum(s_ptr, v_ptr, e, m, one_m, qs, start, stop, Q: tl.constexpr,
               IS_F64: tl.constexpr, EVICT: tl.constexpr = False):
    """Per-quad sums (shape [Q]) of v'^-1/2 over the in-range elements of quads qs..qs+Q-1."""
    q, idx, mask = _quads(qs, start, stop, Q)
    if EVICT:  # read again by the update: keep in L2
        s = tl.load(s_ptr + idx, mask=mask, other=0.0, eviction_policy="evict_last")
        v = tl.load(v_ptr + idx, mask=mask, other=1.0, eviction_policy="evict_last")
    else:
        s = tl.load(s_ptr + idx, mask=mask, other=0.0)
        v = tl.load(v_ptr + idx, mask=mask, other=1.0)
    vn, p = _vnew_rsqrt(s, v, e, m, one_m, IS_F64)
    return tl.sum(tl.where(mask, p, 0.0), axis=1)


@triton.jit
def _update(x_ptr, z_ptr, xo_ptr, vo_ptr, s, v, q, idx, mask, e, m, one_m, h, two_h, scale,
            c2, c3, k0, k1, HAS_NOISE: tl.constexpr, IS_F64: tl.constexpr,
            EVICT: tl.constexpr = False, JOIN: tl.constexpr = False):
    """Write x' and v' of the masked ``[Q, 4]`` tile given its score and v."""
    vn, p = _vnew_rsqrt(s, v, e, m, one_m, IS_F64)
    pre = p * scale
    if HAS_NOISE:
        z = tl.load(z_ptr + idx, mask=mask, other=0.0)
    else:
        w0, w1, w2, w3 = philox.philox4x32(q, c2, c3, k0, k1)
        z0, z1, z2, z3 = philox.box_muller(w0, w1, w2, w3, IS_F64)
        if JOIN:  # [Q, 2, 2] -> [Q, 4] in lane order, a layout change instead of selects
            z = tl.reshape(tl.join(tl.join(z0, z2), tl.join(z1, z3)), (z0.shape[0], 4))
        else:
            lane = tl.arange(0, 4)[None, :]
            z = tl.where(lane == 0, z0[:, None],
                         tl.where(lane == 1, z1[:, None],
                                  tl.where(lane == 2, z2[:, None], z3[:, None])))
    if EVICT:  # read once, written once: stream past L2
        x = tl.load(x_ptr + idx, mask=mask, other=0.0, eviction_policy="evict_first")
        xn = x + h * pre * s + _sqrt(two_h * pre, IS_F64) * z
        tl.store(vo_ptr + idx, vn, mask=mask, cache_modifier=".cs")
        tl.store(xo_ptr + idx, xn, mask=mask, cache_modifier=".cs")
    else:
        x = tl.load(x_ptr + idx, mask=mask, other=0.0)
        xn = x + h * pre * s + _sqrt(two_h * pre, IS_F64) * z
        tl.store(vo_ptr + idx, vn, mask=mask)
        tl.store(xo_ptr + idx, xn, mask=mask)


@triton.jit
def _params(prm_ptr, m, one_m, h, two_h, IS_F64: tl.constexpr):
    """Step scalars: float32 kernel arguments, or float64 values read from ``prm_ptr``."""
    if IS_F64:
        return tl.load(prm_ptr), tl.load(prm_ptr + 1), tl.load(prm_ptr + 2), tl.load(prm_ptr + 3)
    else:
        return m, one_m, h, two_h


@triton.jit
def _scale(n_per, total, like):
    """``n_per / total`` (computed in float64) in the dtype of ``like``."""
    return (n_per.to(tl.float64) / total.to(tl.float64)).to(like.dtype)


@triton.jit(do_not_specialize=_KEY_ARGS)
def _step_fused(x_ptr, s_ptr, v_ptr, eps_ptr, z_ptr, prm_ptr, xo_ptr, vo_ptr, n_per,
                m, one_m, h, two_h, c2, c3, k0, k1, CHUNKS: tl.constexpr, Q: tl.constexpr,
                SINGLE: tl.constexpr,
                HAS_NOISE: tl.constexpr, IS_F64: tl.constexpr, EVICT: tl.constexpr = False,
                JOIN: tl.constexpr = False):
    b = tl.program_id(0).to(tl.int64)
    start = b * n_per
    stop = start + n_per
    q0 = start // 4
    m, one_m, h, two_h = _params(prm_ptr, m, one_m, h, two_h, IS_F64)
    e = tl.load(eps_ptr + b)
    c2, c3, k0, k1 = philox.key_words(c2, c3, k0, k1)
    if SINGLE:
        q, idx, mask = _quads(q0, start, stop, Q)
        s = tl.load(s_ptr + idx, mask=mask, other=0.0)
        v = tl.load(v_ptr + idx, mask=mask, other=1.0)
        vn, p = _vnew_rsqrt(s, v, e, m, one_m, IS_F64)
        total = tl.sum(tl.sum(tl.where(mask, p, 0.0), axis=1), axis=0)
        _update(x_ptr, z_ptr, xo_ptr, vo_ptr, s, v, q, idx, mask, e, m, one_m, h, two_h,
                _scale(n_per, total, e), c2, c3, k0, k1, HAS_NOISE, IS_F64, EVICT, JOIN)
    else:
        acc = tl.zeros((Q,), dtype=e.dtype)
        for c in range(0, CHUNKS):
            acc += _chunk_sum(s_ptr, v_ptr, e, m, one_m, q0 + c * Q, start, stop, Q, IS_F64,
                              EVICT)
        scale = _scale(n_per, tl.sum(acc, axis=0), e)
        for c in range(0, CHUNKS):
            q, idx, mask = _quads(q0 + c * Q, start, stop, Q)
            s = tl.load(s_ptr + idx, mask=mask, other=0.0)
            v = tl.load(v_ptr + idx, mask=mask, other=1.0)
            _update(x_ptr, z_ptr, xo_ptr, vo_ptr, s, v, q, idx, mask, e, m, one_m, h, two_h,
                    scale, c2, c3, k0, k1, HAS_NOISE, IS_F64, EVICT, JOIN)


@triton.jit
def _step_partial(s_ptr, v_ptr, eps_ptr, prm_ptr, part_ptr, n_per, tiles, tile, m, one_m,
                  CHUNKS: tl.constexpr, Q: tl.constexpr, IS_F64: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    b = t // tiles
    start = b * n_per + (t - b * tiles) * tile
    stop = tl.minimum(start + tile, (b + 1) * n_per)
    m, one_m, _, _ = _params(prm_ptr, m, one_m, m, m, IS_F64)
    e = tl.load(eps_ptr + b)
    acc = tl.zeros((Q,), dtype=e.dtype)
    for c in range(0, CHUNKS):
        acc += _chunk_sum(s_ptr, v_ptr, e, m, one_m, start // 4 + c * Q, start, stop, Q, IS_F64)
    tl.store(part_ptr + t, tl.sum(acc, axis=0))


@triton.jit(do_not_specialize=_KEY_ARGS)
def _step_update(x_ptr, s_ptr, v_ptr, eps_ptr, z_ptr, prm_ptr, part_ptr, xo_ptr, vo_ptr, n_per,
                 tiles, tile, m, one_m, h, two_h, c2, c3, k0, k1, CHUNKS: tl.constexpr,
                 Q: tl.constexpr,
                 TP: tl.constexpr,
                 HAS_NOISE: tl.constexpr, IS_F64: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    b = t // tiles
    j = tl.arange(0, TP)
    parts = tl.load(part_ptr + b * tiles + j, mask=j < tiles, other=0.0)
    e = tl.load(eps_ptr + b)
    scale = _scale(n_per, tl.sum(parts, axis=0), e)
    start = b * n_per + (t - b * tiles) * tile
    stop = tl.minimum(start + tile, (b + 1) * n_per)
    m, one_m, h, two_h = _params(prm_ptr, m, one_m, h, two_h, IS_F64)
    c2, c3, k0, k1 = philox.key_words(c2, c3, k0, k1)
    for c in range(0, CHUNKS):
        q, idx, mask = _quads(start // 4 + c * Q, start, stop, Q)
        s = tl.load(s_ptr + idx, mask=mask, other=0.0)
        v = tl.load(v_ptr + idx, mask=mask, other=1.0)
        _update(x_ptr, z_ptr, xo_ptr, vo_ptr, s, v, q, idx, mask, e, m, one_m, h, two_h, scale,
                c2, c3, k0, k1, HAS_NOISE, IS_F64)


def _torch(a):
    """A C-contiguous torch tensor sharing memory with ``a`` when it already is contiguous."""
    return _interop.to_torch(a).contiguous()


def fisher_diagonal(score, eps):
    """``score**2 + eps`` (per-batch ``eps``); see :mod:`arraygen.fisher` for the contract."""
    import torch

    with _interop.cuda_device_context(score):
        s = _torch(score)
        e = _torch(eps)
        out = torch.empty_like(s, memory_format=torch.contiguous_format)
        n = s.numel()
        if n:
            tuning = TUNING.current()
            n_per = n // e.shape[0]
            tiles = triton.cdiv(n_per, tuning.block_diag)
            _diagonal_kernel[(e.shape[0] * tiles,)](s, e, out, n_per, tiles,
                                                    BLOCK=tuning.block_diag,
                                                    num_warps=tuning.diag_warps)
    return _interop.like(out, score)


def _warps(quads: int) -> int:
    return int(min(32, max(4, quads * 4 // 512)))


def fisher_langevin_step(x, score, v, eps, *, step_size, momentum, noise, key):
    """Fused pSGLD step; see :mod:`arraygen.fisher` for the contract."""
    import torch

    with _interop.cuda_device_context(x):
        xs, ss, vs, e = _torch(x), _torch(score), _torch(v), _torch(eps)
        x_out = torch.empty_like(xs, memory_format=torch.contiguous_format)
        v_out = torch.empty_like(vs, memory_format=torch.contiguous_format)
        n_samples = int(xs.shape[0])
        if xs.numel() == 0:
            return _interop.like(x_out, x), _interop.like(v_out, v)
        n_per = xs.numel() // n_samples
        has_noise = noise is not None
        zs = _torch(noise) if has_noise else xs
        scal = (float(momentum), 1.0 - momentum, float(step_size), 2.0 * step_size)
        is_f64 = xs.dtype == torch.float64
        # float64 step scalars travel in a tensor (Triton passes Python floats as float32)
        prm = torch.tensor(scal, dtype=xs.dtype, device=xs.device) if is_f64 else xs
        c2, c3 = key.counter_words if key is not None else (0, 0)
        k0, k1 = key.key_words if key is not None else (0, 0)
        quads = (n_per + 3) // 4 + (1 if n_per % 4 else 0)
        tuning = TUNING.current()
        chunk_quads = tuning.chunk_quads
        if n_samples >= tuning.fused_min_samples or n_per <= tuning.fused_max_per:
            single = quads <= tuning.single_max_quads
            q = triton.next_power_of_2(quads) if single else chunk_quads
            _step_fused[(n_samples,)](xs, ss, vs, e, zs, prm, x_out, v_out, n_per, *scal,
                                      c2, c3, k0, k1,
                                      CHUNKS=triton.cdiv(quads, q), Q=q, SINGLE=single,
                                      HAS_NOISE=has_noise, IS_F64=is_f64,
                                      EVICT=tuning.evict_hints, JOIN=tuning.join_lanes,
                                      num_warps=tuning.fused_warps or _warps(q))
        else:
            tiles = min(triton.cdiv(tuning.split_blocks, n_samples),
                        triton.cdiv(n_per, tuning.split_tile), 4096)
            tile = 4 * triton.cdiv(n_per, 4 * tiles)
            tiles = triton.cdiv(n_per, tile)
            part = torch.empty(n_samples * tiles, dtype=xs.dtype, device=xs.device)
            grid = (n_samples * tiles,)
            chunks = triton.cdiv(tile // 4 + 1, chunk_quads)
            _step_partial[grid](ss, vs, e, prm, part, n_per, tiles, tile, *scal[:2],
                                CHUNKS=chunks, Q=chunk_quads,
                                IS_F64=is_f64, num_warps=8)
            _step_update[grid](xs, ss, vs, e, zs, prm, part, x_out, v_out, n_per, tiles, tile,
                               *scal, c2, c3, k0, k1, CHUNKS=chunks, Q=chunk_quads,
                               TP=triton.next_power_of_2(tiles),
                               HAS_NOISE=has_noise, IS_F64=is_f64, num_warps=8)
    return _interop.like(x_out, x), _interop.like(v_out, v)

