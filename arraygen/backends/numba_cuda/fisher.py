"""Numba-CUDA kernels of the Fisher hot path (launcher contract: :mod:`arraygen.fisher`).

Fused step: one thread block per (sample, tile). With one tile per sample (many samples) a
single kernel reduces the sample's ``v'^-1/2`` in shared memory and then updates it, re-reading
``score`` and ``v`` while they are still in L2; with few large samples a first kernel writes
per-tile partial sums and a second one reduces them (fixed order) and updates. Noise: one
Philox block per quad of elements, keyed by the flat C-order element index.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numba
import numpy as np
from numba import cuda

from .. import _interop
from .. import _philox as ph
from .._tuning import Tunable
from . import contiguous, device_view, empty, empty_like, jit, stream_of, threads_per_block

MAX_TPB = 256


@dataclasses.dataclass(frozen=True)
class Tuning:
    """Choice between the one-kernel and the two-kernel step (``TUNING.override(...)``)."""

    #: quads a thread loads before it stores (0: the measured kernels, 44% of copy bandwidth on an
    #: H100; 2 compiled only in the simulator so far: the first H100 run failed to type
    #: `cuda.local.array(4 * nq)`, since fixed but not yet run on a GPU)
    quads_per_thread: int = 0
    sm_target_blocks: int = 1024  #: enough blocks to fill an H100 (132 SMs) several times
    fused_min_samples: int = 256  #: this many samples fill the GPU with one block each
    fused_max_per: int = 4096  #: samples at most this long always take the one-kernel path
    split_tile: int = 2048  #: fewest elements per tile on the two-kernel path


TUNING = Tunable("numba_cuda.fisher", Tuning())


@functools.lru_cache(maxsize=None)
def _kernels(dtype_name: str, qpt: int = 0):
    """Compile (lazily) the kernels for float32 or float64; ``qpt`` > 0: the update loads
    ``qpt`` whole quads (x, score, v, noise) before computing and storing them, and the
    reduction keeps four loads in flight (``qpt`` = 0: the element-by-element kernels)."""
    cast = np.float32 if dtype_name == "float32" else np.float64
    nb_dtype = numba.float32 if dtype_name == "float32" else numba.float64
    nq = max(qpt, 1)
    nq4 = 4 * nq  # a frozen constant: cuda.local.array needs a literal size, not an expression
    philox = jit(device=True)(ph.py_philox4x32)
    box_muller = jit(device=True)(
        ph.py_box_muller_f32 if dtype_name == "float32" else ph.py_box_muller_f64)

    @jit(device=True)
    def block_sum(acc, buf):
        tid = cuda.threadIdx.x
        buf[tid] = acc
        cuda.syncthreads()
        half = cuda.blockDim.x // 2
        while half > 0:
            if tid < half:
                buf[tid] += buf[tid + half]
            cuda.syncthreads()
            half //= 2
        total = buf[0]
        cuda.syncthreads()
        return total

    @jit(device=True)
    def tile_sum(s, v, e, m, one_m, one, start, stop, buf):
        acc = 0.0
        i = start + cuda.threadIdx.x
        while i < stop:
            vn = m * v[i] + one_m * (s[i] * s[i] + e)
            acc += one / math.sqrt(vn)
            i += cuda.blockDim.x
        return block_sum(acc, buf)

    @jit(device=True)
    def tile_update(x, s, v, e, noise, has_noise, m, one_m, one, h, two_h, scale, start, stop,
                    c2, c3, k0, k1, x_out, v_out):
        q = start // 4 + cuda.threadIdx.x
        q_end = (stop + 3) // 4
        while q < q_end:
            z0 = z1 = z2 = z3 = one
            if not has_noise:
                w0, w1, w2, w3 = philox(q, c2, c3, k0, k1)
                z0, z1, z2, z3 = box_muller(w0, w1, w2, w3)
            for lane in range(4):
                i = 4 * q + lane
                if i >= start and i < stop:
                    if has_noise:
                        z = noise[i]
                    elif lane == 0:
                        z = z0
                    elif lane == 1:
                        z = z1
                    elif lane == 2:
                        z = z2
                    else:
                        z = z3
                    si = s[i]
                    vn = m * v[i] + one_m * (si * si + e)
                    p = (one / math.sqrt(vn)) * scale
                    v_out[i] = vn
                    x_out[i] = x[i] + h * p * si + math.sqrt(two_h * p) * z
            q += cuda.blockDim.x

    @jit(device=True)
    def tile_sum4(s, v, e, m, one_m, one, start, stop, buf):
        """tile_sum with four independent loads of score and of v in flight per thread."""
        acc = 0.0
        bd = cuda.blockDim.x
        i = start + cuda.threadIdx.x
        while i + 3 * bd < stop:
            s0 = s[i]
            s1 = s[i + bd]
            s2 = s[i + 2 * bd]
            s3 = s[i + 3 * bd]
            v0 = v[i]
            v1 = v[i + bd]
            v2 = v[i + 2 * bd]
            v3 = v[i + 3 * bd]
            acc += one / math.sqrt(m * v0 + one_m * (s0 * s0 + e))
            acc += one / math.sqrt(m * v1 + one_m * (s1 * s1 + e))
            acc += one / math.sqrt(m * v2 + one_m * (s2 * s2 + e))
            acc += one / math.sqrt(m * v3 + one_m * (s3 * s3 + e))
            i += 4 * bd
        while i < stop:
            acc += one / math.sqrt(m * v[i] + one_m * (s[i] * s[i] + e))
            i += bd
        return block_sum(acc, buf)

    @jit(device=True)
    def tile_update_q(x, s, v, e, noise, has_noise, m, one_m, one, h, two_h, scale, start,
                      stop, c2, c3, k0, k1, x_out, v_out):
        """The update, ``qpt`` quads per thread and step: every load before any store."""
        xa = cuda.local.array(nq4, nb_dtype)
        sa = cuda.local.array(nq4, nb_dtype)
        va = cuda.local.array(nq4, nb_dtype)
        za = cuda.local.array(nq4, nb_dtype)
        bd = cuda.blockDim.x
        q_end = (stop + 3) // 4
        q = start // 4 + cuda.threadIdx.x
        while q < q_end:
            for u in range(nq):
                qu = q + u * bd
                for lane in range(4):
                    i = 4 * qu + lane
                    k = 4 * u + lane
                    if qu < q_end and i >= start and i < stop:
                        xa[k] = x[i]
                        sa[k] = s[i]
                        va[k] = v[i]
                        if has_noise:
                            za[k] = noise[i]
                    else:
                        xa[k] = 0
                        sa[k] = 0
                        va[k] = one
                        za[k] = 0
            if not has_noise:
                for u in range(nq):
                    w0, w1, w2, w3 = philox(q + u * bd, c2, c3, k0, k1)
                    z0, z1, z2, z3 = box_muller(w0, w1, w2, w3)
                    za[4 * u] = z0
                    za[4 * u + 1] = z1
                    za[4 * u + 2] = z2
                    za[4 * u + 3] = z3
            for u in range(nq):
                qu = q + u * bd
                for lane in range(4):
                    i = 4 * qu + lane
                    k = 4 * u + lane
                    if qu < q_end and i >= start and i < stop:
                        si = sa[k]
                        vn = m * va[k] + one_m * (si * si + e)
                        p = (one / math.sqrt(vn)) * scale
                        v_out[i] = vn
                        x_out[i] = xa[k] + h * p * si + math.sqrt(two_h * p) * za[k]
            q += nq * bd

    @jit
    def fused_q(x, s, v, eps, noise, has_noise, m, one_m, one, h, two_h, n_per, c2, c3, k0,
                k1, x_out, v_out):
        buf = cuda.shared.array(MAX_TPB, numba.float64)
        b = np.int64(cuda.blockIdx.x)
        while b < eps.shape[0]:
            start = b * n_per
            stop = start + n_per
            e = eps[b]
            total = tile_sum4(s, v, e, m, one_m, one, start, stop, buf)
            scale = cast(n_per / total)
            tile_update_q(x, s, v, e, noise, has_noise, m, one_m, one, h, two_h, scale, start,
                          stop, c2, c3, k0, k1, x_out, v_out)
            b += cuda.gridDim.x

    @jit
    def diagonal(s, eps, n_per, tiles, tile, out):
        # block t: tile t % tiles of batch t // tiles (one eps per block), 4 loads in flight
        t = np.int64(cuda.blockIdx.x)
        b = t // tiles
        start = b * n_per + (t - b * tiles) * tile
        stop = min(start + tile, (b + 1) * n_per)
        e = eps[b]
        bd = cuda.blockDim.x
        i = start + cuda.threadIdx.x
        while i + 3 * bd < stop:
            a0 = s[i]
            a1 = s[i + bd]
            a2 = s[i + 2 * bd]
            a3 = s[i + 3 * bd]
            out[i] = a0 * a0 + e
            out[i + bd] = a1 * a1 + e
            out[i + 2 * bd] = a2 * a2 + e
            out[i + 3 * bd] = a3 * a3 + e
            i += 4 * bd
        while i < stop:
            out[i] = s[i] * s[i] + e
            i += bd

    @jit
    def fused(x, s, v, eps, noise, has_noise, m, one_m, one, h, two_h, n_per, c2, c3, k0, k1,
              x_out, v_out):
        buf = cuda.shared.array(MAX_TPB, numba.float64)
        b = np.int64(cuda.blockIdx.x)
        while b < eps.shape[0]:
            start = b * n_per
            stop = start + n_per
            e = eps[b]
            total = tile_sum(s, v, e, m, one_m, one, start, stop, buf)
            scale = cast(n_per / total)
            tile_update(x, s, v, e, noise, has_noise, m, one_m, one, h, two_h, scale, start,
                        stop, c2, c3, k0, k1, x_out, v_out)
            b += cuda.gridDim.x

    @jit
    def partial(s, v, eps, m, one_m, one, n_per, tiles, tile, out):
        buf = cuda.shared.array(MAX_TPB, numba.float64)
        t = np.int64(cuda.blockIdx.x)
        b = t // tiles
        start = b * n_per + (t - b * tiles) * tile
        stop = min(start + tile, (b + 1) * n_per)
        total = tile_sum(s, v, eps[b], m, one_m, one, start, stop, buf)
        if cuda.threadIdx.x == 0:
            out[t] = total

    @jit
    def update(x, s, v, eps, noise, has_noise, m, one_m, one, h, two_h, n_per, tiles, tile,
               partials, c2, c3, k0, k1, x_out, v_out):
        buf = cuda.shared.array(MAX_TPB, numba.float64)
        t = np.int64(cuda.blockIdx.x)
        b = t // tiles
        acc = 0.0
        j = b * tiles + cuda.threadIdx.x
        while j < (b + 1) * tiles:
            acc += partials[j]
            j += cuda.blockDim.x
        total = block_sum(acc, buf)
        scale = cast(n_per / total)
        start = b * n_per + (t - b * tiles) * tile
        stop = min(start + tile, (b + 1) * n_per)
        tile_update(x, s, v, eps[b], noise, has_noise, m, one_m, one, h, two_h, scale, start,
                    stop, c2, c3, k0, k1, x_out, v_out)

    return {"diagonal": diagonal, "fused": fused_q if qpt else fused, "partial": partial,
            "update": update}


def tiling(n_samples: int, n_per: int, tuning: Tuning | None = None) -> tuple[int, int]:
    """``(tiles_per_sample, tile)``: one tile per sample when there are enough samples."""
    t = TUNING.current() if tuning is None else tuning
    if n_samples >= t.fused_min_samples or n_per <= t.fused_max_per:
        return 1, n_per
    tiles = min(-(-t.sm_target_blocks // n_samples), -(-n_per // t.split_tile), 1024)
    tile = 4 * -(-n_per // (4 * tiles))
    return -(-n_per // tile), tile


def fisher_diagonal(score, eps):
    """``score**2 + eps`` (per-batch ``eps``); see :mod:`arraygen.fisher` for the contract."""
    with _interop.cuda_device_context(score):
        s = contiguous(score)
        e = contiguous(eps)
        out = empty_like(s)
        n = int(np.prod(s.shape))
        if n:
            tpb = threads_per_block()
            n_per = n // int(e.shape[0])
            tile = min(n_per, tpb * 16)
            tiles = -(-n_per // tile)
            k = _kernels(np.dtype(str(s.dtype).replace("torch.", "")).name)["diagonal"]
            k[int(e.shape[0]) * tiles, tpb, stream_of(s)](
                device_view(s.reshape(-1)), device_view(e), n_per, tiles, tile,
                device_view(out.reshape(-1)))
    return _interop.like(out, score)


def fisher_langevin_step(x, score, v, eps, *, step_size, momentum, noise, key):
    """Fused pSGLD step; see :mod:`arraygen.fisher` for the contract."""
    with _interop.cuda_device_context(x):
        xs, ss, vs, e = contiguous(x), contiguous(score), contiguous(v), contiguous(eps)
        name = np.dtype(str(xs.dtype).replace("torch.", "")).name
        dt = np.dtype(name).type
        x_out, v_out = empty_like(xs), empty_like(vs)
        n_samples = int(xs.shape[0])
        n = int(np.prod(xs.shape))
        if n == 0:
            return _interop.like(x_out, x), _interop.like(v_out, v)
        n_per = n // n_samples
        has_noise = noise is not None
        zs = contiguous(noise).reshape(-1) if has_noise else empty(xs, 1, name)
        c2, c3, k0, k1 = ph.key_words(key) if key is not None else (np.uint64(0),) * 4
        scal = (dt(momentum), dt(1.0 - momentum), dt(1.0), dt(step_size), dt(2.0 * step_size))
        tuning = TUNING.current()
        ks = _kernels(name, tuning.quads_per_thread)
        tpb = threads_per_block()
        stream = stream_of(xs)
        args_in = [device_view(a.reshape(-1)) for a in (xs, ss, vs)] + [device_view(e)]
        outs = [device_view(x_out.reshape(-1)), device_view(v_out.reshape(-1))]
        tiles, tile = tiling(n_samples, n_per, tuning)
        if tiles == 1:
            grid = min(n_samples, 65535 * 16)
            ks["fused"][grid, tpb, stream](*args_in, device_view(zs), has_noise, *scal, n_per,
                                           c2, c3, k0, k1, *outs)
        else:
            partials = empty(xs, n_samples * tiles, np.float64)
            ks["partial"][n_samples * tiles, tpb, stream](
                args_in[1], args_in[2], args_in[3], *scal[:3], n_per, tiles, tile,
                device_view(partials))
            ks["update"][n_samples * tiles, tpb, stream](
                *args_in, device_view(zs), has_noise, *scal, n_per, tiles, tile,
                device_view(partials), c2, c3, k0, k1, *outs)
    return _interop.like(x_out, x), _interop.like(v_out, v)
