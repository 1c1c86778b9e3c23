"""Device functions shared by the dense (:mod:`.tiled`) and block-sparse (:mod:`.blocksparse`)
Numba-CUDA tile kernels.

The two walk their columns differently (``y`` in order; the column clusters of a CSR pair list)
but load a row, stage a column, sum a staged tile into the row accumulators and store a row
with the same code, kept here once. The functions are inlined at the Numba IR level
(``inline="always"``), so the kernels compile to the code they had with the loops written out
(the same PTX). Layout of a staged column of width ``W = D + PC + 1`` in shared memory:
``y' = s y`` in ``[0, D)``, the right-hand sides in ``[D, D + PC)``, then ``b_j`` (matvec) or
``w2_j`` (softmax) at ``D + PC``; exponents in log2 units (kernel value ``exp2(-|x' - y'|^2)``).
"""

from __future__ import annotations

import functools
import math
import types

import numpy as np

from . import jit


@functools.cache
def tile_functions(dtype_name: str, D: int, PC: int, ROWS: int, TJ: int):
    """The device functions for ``D`` coordinates, ``PC`` right-hand sides and ``ROWS`` rows
    per thread (``TJ`` staged columns per tile), as a namespace:

    ``load_row(x, i, ok, s, xr, r)``: ``xr[r] = s x[i]`` (zeros unless ``ok``);
    ``stage(sy, t, y, rhs, j, ok, p, c0, s)``: column ``j`` into slot ``t`` (zeros unless ``ok``;
    right-hand sides past ``p`` zero; the kernel stages slot ``D + PC``);
    ``matvec_tile(sy, xr, na, part, acc)``: ``acc[r, c] += sum_t exp2(na_r b_t |x'_r - y'_t|^2)
    u_t[c]`` (``bw``: else ``exp2(-|x'_r - y'_t|^2)``) through the per-tile partials ``part``;
    ``softmax_tile(sy, xr, mx, sm, ps, pacc, acc)``: the online softmax over one tile (running
    max ``mx``, ``sm = sum 2^(z - mx)``, ``acc = sum 2^(z - mx) v``, a new maximum rescaling
    totals and partials ``ps``, ``pacc``); ``store_row(out, split, i, p, c0, acc, r)``:
    ``out[split, i, c0 + c] = acc[r, c]`` below ``p``; ``store_softmax(acc_out, mx_out,
    sm_out, split, i, p, c0, mx, sm, acc, r)``: the same plus ``mx``, ``sm`` when ``c0 = 0``.
    ``matvec_tile_bw`` is ``matvec_tile`` with bandwidths.
    """
    nbt = getattr(np, dtype_name)
    W = D + PC + 1
    zero = nbt(0.0)

    @jit(device=True, inline="always")
    def load_row(x, i, ok, s, xr, r):
        for k in range(D):
            xr[r, k] = x[i, k] * s if ok else zero

    @jit(device=True, inline="always")
    def stage(sy, t, y, rhs, j, ok, p, c0, s):
        for k in range(D):
            sy[t * W + k] = y[j, k] * s if ok else zero
        for c in range(PC):
            sy[t * W + D + c] = rhs[j, c0 + c] if (ok and c0 + c < p) else zero

    def make_matvec_tile(BW):
        @jit(device=True, inline="always")
        def matvec_tile(sy, xr, na, part, acc):
            for r in range(ROWS):
                for c in range(PC):
                    part[r, c] = zero
            for t in range(TJ):
                off = t * W
                for r in range(ROWS):
                    q = zero
                    for k in range(D):
                        diff = xr[r, k] - sy[off + k]
                        q += diff * diff
                    if BW:
                        e = math.exp2(na[r] * sy[off + D + PC] * q)
                    else:
                        e = math.exp2(-q)
                    for c in range(PC):
                        part[r, c] += e * sy[off + D + c]
            for r in range(ROWS):
                for c in range(PC):
                    acc[r, c] += part[r, c]

        return matvec_tile

    @jit(device=True, inline="always")
    def softmax_tile(sy, xr, mx, sm, ps, pacc, acc):
        for r in range(ROWS):
            ps[r] = zero
            for c in range(PC):
                pacc[r, c] = zero
        for t in range(TJ):
            off = t * W
            for r in range(ROWS):
                z = sy[off + D + PC]
                for k in range(D):
                    diff = xr[r, k] - sy[off + k]
                    z -= diff * diff
                q = z - mx[r]
                if q > zero:  # new running maximum: rescale the accumulated terms
                    f = math.exp2(-q)
                    sm[r] *= f
                    ps[r] *= f
                    for c in range(PC):
                        acc[r, c] *= f
                        pacc[r, c] *= f
                    mx[r] = z
                    q = zero
                e = math.exp2(q)
                ps[r] += e
                for c in range(PC):
                    pacc[r, c] += e * sy[off + D + c]
        for r in range(ROWS):
            sm[r] += ps[r]
            for c in range(PC):
                acc[r, c] += pacc[r, c]

    @jit(device=True, inline="always")
    def store_row(out, split, i, p, c0, acc, r):
        for c in range(PC):
            if c0 + c < p:
                out[split, i, c0 + c] = acc[r, c]

    @jit(device=True, inline="always")
    def store_softmax(acc_out, mx_out, sm_out, split, i, p, c0, mx, sm, acc, r):
        if c0 == 0:
            mx_out[split, i] = mx[r]
            sm_out[split, i] = sm[r]
        for c in range(PC):
            if c0 + c < p:
                acc_out[split, i, c0 + c] = acc[r, c]

    return types.SimpleNamespace(
        load_row=load_row, stage=stage, matvec_tile=make_matvec_tile(False),
        matvec_tile_bw=make_matvec_tile(True), softmax_tile=softmax_tile, store_row=store_row,
        store_softmax=store_softmax)


@functools.cache
def row_dot(dtype_name: str):
    """``row_dot(x, i, y, j, d)`` = ``x_i . y_j`` over ``d`` coordinates (``|x_i|^2`` with
    ``y, j = x, i``): the law of cosines of the one-row-per-thread kernels (any ``d``)."""
    zero = getattr(np, dtype_name)(0.0)

    @jit(device=True, inline="always")
    def dot(x, i, y, j, d):
        acc = zero
        for k in range(d):
            acc += x[i, k] * y[j, k]
        return acc

    return dot


@functools.cache
def online_term(dtype_name: str, PC: int):
    """``mx, sm = term(z, mx, sm, acc, v, j, p, c0)``: one column of the one-row online softmax
    (law-of-cosines kernels), exponent ``z`` in log2 units: a new maximum rescales ``sm`` and
    ``acc``, then ``sm += 2^(z - mx)`` and ``acc[c] += 2^(z - mx) v[j, c0 + c]`` below ``p``."""
    zero = getattr(np, dtype_name)(0.0)

    @jit(device=True, inline="always")
    def term(z, mx, sm, acc, v, j, p, c0):
        q = z - mx
        if q > zero:
            f = math.exp2(-q)
            sm *= f
            for c in range(PC):
                acc[c] *= f
            mx = z
            q = zero
        e = math.exp2(q)
        sm += e
        for c in range(PC):
            if c0 + c < p:
                acc[c] += e * v[j, c0 + c]
        return mx, sm

    return term


__all__ = ["online_term", "row_dot", "tile_functions"]
