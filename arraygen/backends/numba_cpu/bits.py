"""Bit reinterpretation between floats and integers of the same width (LLVM bitcasts), for
the Numba CPU kernels' vectorisable exp2 and integer-keyed max reductions."""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

__all__ = ["as_float", "as_int"]


@intrinsic
def as_float(typingctx, bits):
    """Reinterpret int32 -> float32 or int64 -> float64 bits (an LLVM bitcast)."""
    if bits == types.int32:
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.FloatType())
        return types.float32(types.int32), codegen
    if bits == types.int64:
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.DoubleType())
        return types.float64(types.int64), codegen
    return None


@intrinsic
def as_int(typingctx, value):
    """Reinterpret float32 -> int32 or float64 -> int64 bits (an LLVM bitcast)."""
    if value == types.float32:
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.IntType(32))
        return types.int32(types.float32), codegen
    if value == types.float64:
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.IntType(64))
        return types.int64(types.float64), codegen
    return None
