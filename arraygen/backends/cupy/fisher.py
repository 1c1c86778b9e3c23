"""CuPy RawModule launchers of the Fisher hot path (kernels in ``fisher.cu``; contract in
:mod:`arraygen.fisher`).

``fisher_diagonal``: one pass, 16-byte vector loads/stores over quads of elements.
``fisher_langevin_step``: with many samples, one kernel with one thread block per sample: the
sample's score and v are loaded once into registers, reduced, and reused for the update, so
the kernel moves the op's 20 bytes/element (float32) and draws the noise in-kernel (one Philox
block per quad). ``Tuning.cluster`` > 0 splits each sample over a thread-block cluster
(``fisher_step_cluster``: small blocks, score/v/x in registers, partial sums exchanged through
distributed shared memory, sm_90). With few large samples, two kernels: per-tile partial sums,
then the update.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .. import _interop
from .._tuning import Tunable
from . import dtype_name, module, native, sm_count, stream_for

SOURCE = "fisher.cu"
KQ_CHOICES = {"float": (0, 1, 2, 4), "double": (0, 1, 2)}  # 0: no register cache, re-read
THREADS = 256
DIAG_UNROLL = 4  # quads per thread of fisher_diagonal (must match fisher.cu)


@dataclasses.dataclass(frozen=True)
class Tuning:
    """Launch tuning of the CuPy Fisher step (override with ``TUNING.override(...)``)."""

    kq_float: int = 4  #: float32 quads per thread kept in registers (one of KQ_CHOICES)
    kq_double: int = 1  #: float64 quads per thread kept in registers (one of KQ_CHOICES)
    fused_threads: int = 1024  #: most threads per block of the one-kernel path
    prefetch_x: bool = False  #: load the cached quads' x with score and v, before the reduction
    cluster: int = 0  #: largest thread-block cluster per sample (2, 4 or 8; 0: one block)
    cluster_kq_float: int = 2  #: float32 quads per thread in registers on the cluster path
    cluster_kq_double: int = 1  #: float64 quads per thread in registers on the cluster path
    fused_min_samples: int = 256  #: this many samples fill an H100 with one block each
    fused_max_per: int = 1 << 15  #: or samples this short: take the one-kernel path anyway
    split_tile: int = 8192  #: fewest elements per tile on the two-kernel path

    def kq(self, t: str) -> int:
        """Quads per thread in registers for C type ``t`` ("float" or "double")."""
        return self.kq_float if t == "float" else self.kq_double


TUNING = Tunable("cupy.fisher", Tuning())


def _fused_name(t: str, kq: int, prefetch_x: bool, threads: int) -> str:
    """``fisher_step_fused<T, KQ, PX, MAXT>``: MAXT the launch bound (512 or 1024 threads)."""
    return f"fisher_step_fused<{t}, {kq}, {int(bool(prefetch_x and kq))}, " \
           f"{512 if threads <= 512 else 1024}>"


def _names(t: str) -> tuple[str, ...]:
    default = Tuning()
    fused = _fused_name(t, default.kq(t), default.prefetch_x, default.fused_threads)
    return (f"fisher_diagonal_kernel<{t}>", fused,
            f"fisher_step_partial<{t}>", f"fisher_step_update<{t}>")


def _kernel(name: str, t: str):
    names = _names("float") + _names("double")
    if name not in names:  # a tuning variant: its own module (NVRTC instantiates it by name)
        names = names + (name,)
    return module(SOURCE, names).get_function(name)


def _sm_count() -> int:
    import cupy

    return sm_count(cupy.cuda.Device().id)


def fisher_diagonal(score, eps):
    """``score**2 + eps`` (per-batch ``eps``); see :mod:`arraygen.fisher` for the contract."""
    import cupy

    with _interop.cuda_device_context(score), stream_for(score):
        s = native(score)
        e = native(eps)
        t = dtype_name(s)
        out = cupy.empty_like(s)
        n = s.size
        if n:
            n_per = n // e.shape[0]
            quads = max(n // 4, 1)
            blocks = int(min(-(-quads // (THREADS * DIAG_UNROLL)), 2**31 - 1))
            _kernel(f"fisher_diagonal_kernel<{t}>", t)(
                (blocks,), (THREADS,),
                (s, e, out, np.int64(n), np.int64(n_per), np.float64(1.0 / n_per),
                 np.int32(e.shape[0])))
    return _interop.like(out, score)


CLUSTER_THREADS = 256  # threads per block of fisher_step_cluster (its launch bound)


def _cluster_size(tuning: Tuning, t: str, quads: int, n_samples: int) -> int:
    """Blocks per sample on the cluster path (1, 2, 4 or 8): the fewest whose register caches
    hold the sample, at most ``tuning.cluster``; 0 when the path is off or the grid too big."""
    if not tuning.cluster:
        return 0
    kq = tuning.cluster_kq_float if t == "float" else tuning.cluster_kq_double
    cl = 1
    while cl < min(tuning.cluster, 8) and cl * CLUSTER_THREADS * kq < quads:
        cl *= 2
    return cl if n_samples * cl <= 2**31 - 1 else 0


def _tiling(n_samples: int, n_per: int, sms: int, split_tile: int) -> tuple[int, int]:
    """``(tiles_per_sample, tile)`` for the two-kernel path (tiles are whole quads)."""
    tiles = min(-(-4 * sms // n_samples), -(-n_per // split_tile), 4096)
    tile = 4 * -(-n_per // (4 * max(tiles, 1)))
    return -(-n_per // tile), tile


def fisher_langevin_step(x, score, v, eps, *, step_size, momentum, noise, key):
    """Fused pSGLD step; see :mod:`arraygen.fisher` for the contract."""
    import cupy

    with _interop.cuda_device_context(x), stream_for(x):
        xs, ss, vs, e = native(x), native(score), native(v), native(eps)
        t = dtype_name(xs)
        ctype = np.float32 if t == "float" else np.float64
        x_out, v_out = cupy.empty_like(xs), cupy.empty_like(vs)
        n_samples = int(xs.shape[0])
        if xs.size == 0:
            return _interop.like(x_out, x), _interop.like(v_out, v)
        n_per = xs.size // n_samples
        zs = native(noise) if noise is not None else np.uint64(0)  # NULL: draw in-kernel
        c2, c3 = key.counter_words if key is not None else (0, 0)
        k0, k1 = key.key_words if key is not None else (0, 0)
        step = (ctype(momentum), ctype(1.0 - momentum), ctype(step_size), ctype(2.0 * step_size),
                np.int64(n_per), np.uint32(c2), np.uint32(c3), np.uint32(k0), np.uint32(k1))
        sms = _sm_count()
        tuning = TUNING.current()
        quads = n_per // 4 if n_per % 4 == 0 else n_per // 4 + 2  # quads a sample touches
        cl = _cluster_size(tuning, t, quads, n_samples)
        if cl and (n_samples >= tuning.fused_min_samples or n_per <= tuning.fused_max_per):
            kq = tuning.cluster_kq_float if t == "float" else tuning.cluster_kq_double
            _kernel(f"fisher_step_cluster<{t}, {kq}, {cl}>", t)(
                (n_samples * cl,), (CLUSTER_THREADS,),
                (xs, ss, vs, e, zs, x_out, v_out, np.int64(n_samples)) + step)
        elif n_samples >= tuning.fused_min_samples or n_per <= tuning.fused_max_per:
            kq = tuning.kq(t)
            threads = int(min(tuning.fused_threads, 32 * -(-quads // (32 * max(kq, 1)))))
            grid = int(min(n_samples, 2**31 - 1))
            _kernel(_fused_name(t, kq, tuning.prefetch_x, tuning.fused_threads), t)(
                (grid,), (threads,),
                (xs, ss, vs, e, zs, x_out, v_out, np.int64(n_samples)) + step)
        else:
            tiles, tile = _tiling(n_samples, n_per, sms, tuning.split_tile)
            partial = cupy.empty(n_samples * tiles, dtype=xs.dtype)
            blocks = (n_samples * tiles,)
            _kernel(f"fisher_step_partial<{t}>", t)(
                blocks, (THREADS,), (ss, vs, e, partial, np.int64(tiles), np.int64(tile)) + step)
            _kernel(f"fisher_step_update<{t}>", t)(
                blocks, (THREADS,),
                (xs, ss, vs, e, zs, partial, x_out, v_out, np.int64(tiles), np.int64(tile))
                + step)
    return _interop.like(x_out, x), _interop.like(v_out, v)
