"""32-bit shifts for element functions.

Numba types every shift result as (at least) 64-bit, and because a 64-bit shift by 32..63
means something else than a 32-bit one, LLVM cannot narrow it back: each variable shift
costs two instructions on a GPU. These intrinsics emit one 32-bit shift on every target
(CPU, CUDA, and the simulator, which runs the CPU build). The count is taken modulo 32:
callers keep it below 32.
"""

from __future__ import annotations

from numba import types
from numba.extending import intrinsic


@intrinsic
def shr32(typingctx, x, s):
    """``x >> (s % 32)`` on uint32 values, as one 32-bit logical shift."""

    def codegen(context, builder, signature, args):
        value = context.cast(builder, args[0], signature.args[0], types.uint32)
        count = context.cast(builder, args[1], signature.args[1], types.uint32)
        return builder.lshr(value, builder.and_(count, count.type(31)))

    return types.uint32(x, s), codegen


@intrinsic
def shl32(typingctx, x, s):
    """``(x << (s % 32)) mod 2**32`` on uint32 values, as one 32-bit shift."""

    def codegen(context, builder, signature, args):
        value = context.cast(builder, args[0], signature.args[0], types.uint32)
        count = context.cast(builder, args[1], signature.args[1], types.uint32)
        return builder.shl(value, builder.and_(count, count.type(31)))

    return types.uint32(x, s), codegen
