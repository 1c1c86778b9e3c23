"""CuPy launcher of the multi-spin-coded Gibbs kernels for +-J nearest-neighbour models
(contract: :mod:`arraygen._kernels.gibbs_msc`; kernels: ``gibbs_msc.cu``).

``gibbs_msc_sweep`` (one launch per sweep, a block per band of rows, the whole row in one
block) runs rows of up to ``_SWEEP_MAX_WORDS`` words (16384 spins); wider rows, or
``TUNING.override(kernel="phase")``, take ``gibbs_msc_phase`` (one launch per colour). Spins
are packed once per call and unpacked at the end.
"""

from __future__ import annotations

import dataclasses

import cupy
import numpy as np

from ..._kernels.gibbs_msc import threshold_table, words_per_row
from .. import _interop
from .._tuning import Tunable
from . import module, sm_count, stream_for

SOURCE = "gibbs_msc.cu"
_THREADS = 256
_MAX_BLOCKS = 65535 * 8
_SWEEP_MAX_WORDS = 512  # threads of one sweep block (__launch_bounds__(512) in gibbs_msc.cu)
_PACK = "arraygen::msc::msc_pack"
_UNPACK = "arraygen::msc::msc_unpack"


@dataclasses.dataclass(frozen=True)
class Tuning:
    """Which multi-spin kernel the launcher uses (``TUNING.override(...)``).

    Attributes
    ----------
    kernel
        "auto" (the sweep kernel where rows fit one block, else phase), "sweep" or "phase".
    rows
        Rows per band of the sweep kernel (even; None: :func:`band_rows`).
        Each band recomputes colour 0 of the rows just above and below it: ``2 / rows`` more
        Philox blocks, fewer bands to spread over the GPU with more rows.
    """

    kernel: str = "auto"
    rows: int | None = None


TUNING = Tunable("cupy.gibbs_msc", Tuning())


def _flag(v: bool) -> str:
    return "true" if v else "false"


def band_rows(planes: int, H: int, threads: int, sms: int) -> int:
    """Rows per band: the most (of 32, 16, 8) that still give ``sms * 192`` threads (6 warps
    an SM; the sweep kernel keeps 8 Philox blocks in flight per thread), else 8. Untuned: the
    GPU benchmark times 8, 16 and 32 (tools/gpu_bench_gibbs.py)."""
    for rows in (32, 16, 8):
        if planes * -(-H // rows) * threads >= sms * 192:
            return rows
    return 8


def _signs(pm):
    """The model's sign planes on the current device (cached on ``pm``), or dummies."""
    dev = cupy.cuda.Device().id
    key = ("cupy", dev)
    hit = pm.device_cache.get(key)
    if hit is None:
        if pm.signed:
            hit = (cupy.asarray(pm.sx.reshape(-1)), cupy.asarray(pm.sy.reshape(-1)))
        else:
            dummy = cupy.zeros(1, dtype=cupy.uint32)
            hit = (dummy, dummy)
        pm.device_cache[key] = hit
    return hit


def _table(pm, beta, dtype_name):
    """The threshold table on the current device, cached on ``pm`` (whose cache the models
    with other biases share: the key holds the field's parameters)."""
    key = ("cupy-table", cupy.cuda.Device().id, float(beta), dtype_name, pm.bias, pm.magnitude)
    hit = pm.device_cache.get(key)
    if hit is None:
        if len(pm.device_cache) > 64:  # a schedule of many betas: keep the cache small
            for k in [k for k in pm.device_cache if k[0] == "cupy-table"]:
                del pm.device_cache[k]
        hit = pm.device_cache[key] = cupy.asarray(threshold_table(pm, beta, dtype_name))
    return hit


def gibbs_sweeps(spins, pm, *, n_sweeps, beta, key, dtype_name):
    """Launcher (contract in :mod:`arraygen._kernels.gibbs_msc`): int8 spins (B, C, H, W) ->
    new int8 spins; ``pm`` the model's :class:`~arraygen._kernels.gibbs_msc.PlusMinusJ`."""
    with _interop.cuda_device_context(spins), stream_for(spins):
        s8 = _interop.to_cupy(spins)
        if not s8.flags.c_contiguous:
            s8 = cupy.ascontiguousarray(s8)
        B, C, H, W = (int(v) for v in s8.shape)
        Wq = words_per_row(W)
        planes = B * C
        n_words = planes * H * Wq
        total = planes * H * W
        periodic, signed, aligned = pm.periodic, pm.signed, W % 4 == 0
        flags = f"{_flag(periodic)}, {_flag(signed)}, {_flag(aligned)}"
        tuning = TUNING.current()
        use_sweep = tuning.kernel == "sweep" or (tuning.kernel == "auto"
                                                 and Wq <= _SWEEP_MAX_WORDS)
        if use_sweep and Wq > _SWEEP_MAX_WORDS:
            raise ValueError(f"the multi-spin sweep kernel takes rows of at most "
                             f"{32 * _SWEEP_MAX_WORDS} spins; got W = {W}")
        name = f"arraygen::msc::gibbs_msc_{'sweep' if use_sweep else 'phase'}<{flags}>"
        mod = module(SOURCE, (name, _PACK, _UNPACK))
        kernel = mod.get_function(name)
        sx, sy = _signs(pm)
        table = _table(pm, beta, dtype_name)
        words = cupy.empty(n_words, dtype=cupy.uint32)
        grid_words = int(min(max(-(-n_words // _THREADS), 1), _MAX_BLOCKS))
        mod.get_function(_PACK)((grid_words,), (_THREADS,),
                                (s8, words, np.int32(W), np.int32(Wq), np.int64(n_words)))
        k0, k1 = key.key_words
        geometry = (np.int32(C), np.int32(H), np.int32(W), np.int32(Wq))
        if use_sweep:
            threads = -(-Wq // 32) * 32
            rows = tuning.rows or band_rows(planes, H, threads,
                                            sm_count(cupy.cuda.Device().id))
            rows = max(2, rows + rows % 2)
            chunks = -(-H // rows)
            other = cupy.empty_like(words)
            for t in range(n_sweeps):
                c2, c3 = key.advance(t).counter_words
                kernel((planes * chunks,), (threads,),
                       (words, other, sx, sy, table) + geometry
                       + (np.int32(rows), np.int32(chunks), np.uint32(c2), np.uint32(c3),
                          np.uint32(k0), np.uint32(k1)),
                       shared_mem=3 * Wq * 4)
                words, other = other, words
        else:
            for t in range(n_sweeps):
                c2, c3 = key.advance(t).counter_words
                for colour in (0, 1):
                    kernel((grid_words,), (_THREADS,),
                           (words, sx, sy, table) + geometry
                           + (np.int64(n_words), np.int32(colour), np.uint32(c2),
                              np.uint32(c3), np.uint32(k0), np.uint32(k1)))
        out = cupy.empty((B, C, H, W), dtype=cupy.int8)
        grid = int(min(max(-(-total // _THREADS), 1), _MAX_BLOCKS))
        mod.get_function(_UNPACK)((grid,), (_THREADS,),
                                  (words, out, np.int32(W), np.int32(Wq), np.int64(total)))
    return _interop.like(out, spins)
