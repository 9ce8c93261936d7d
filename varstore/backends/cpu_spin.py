"""The compiled half of the CPU worker threads' hand-off (``cpu_threads``): waits and
signals on an int64 array of rows of ``LINE`` words, one row per worker. Every access is
sequentially consistent, so that where each side stores one word and then loads the
other's, they never both miss the other's store.

- ``wait(flags, row, word, old, spins)``, without the GIL: ``flags[row, word]`` once it
  differs from ``old``, else after ``spins`` tries the value then (``spins=0``: a load);
- ``store(flags, row, word, value)``, with the GIL held (a call that released it would
  have to ask for it back, and could sleep doing so);
- ``hand_over(flags, row, ticket, take, grace)``, without the GIL: post ``ticket``; 1
  if the worker sleeps (the caller must wake it); else wait up to ``take`` tries for
  the worker to take it, and ``grace`` tries more while it goes into its loop; 0;
- ``finish(flags, row, ticket, spins)``, without the GIL: say ``ticket`` is done; -1 if
  the caller sleeps waiting for it (the worker must wake it), else ``wait`` for the
  next ticket.
"""

from __future__ import annotations

import platform

import numba
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ..kernels._targets import _numba_cache_dir

LINE = 16  # int64 words per worker row: 128 bytes, so that no two workers share a cache line
# The words of a row. Written by the caller (the first 64 bytes): the last ticket handed
# over, the ticket a sleeping caller waits for. By the worker (the next 64 bytes): the
# last ticket it took, the last it finished, and 1 while it sleeps.
POSTED, CALLER_WAITS, STARTED, DONE, ASLEEP = 0, 1, 8, 9, 10

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


def _word_pointer(context, builder, signature, args):
    flags = context.make_array(signature.args[0])(context, builder, args[0])
    row, word = (context.cast(builder, args[i], signature.args[i], types.intp) for i in (1, 2))
    return builder.gep(flags.data, [builder.add(builder.mul(row, row.type(LINE)), word)])


@intrinsic
def _load(typingctx, flags, row, word):
    def codegen(context, builder, signature, args):
        return builder.load_atomic(_word_pointer(context, builder, signature, args), "seq_cst", 8)

    return types.int64(flags, row, word), codegen


@intrinsic
def _store(typingctx, flags, row, word, value):
    def codegen(context, builder, signature, args):
        item = context.cast(builder, args[3], signature.args[3], types.int64)
        builder.store_atomic(item, _word_pointer(context, builder, signature, args), "seq_cst", 8)
        return context.get_dummy_value()

    return types.none(flags, row, word, value), codegen


@intrinsic
def _pause(typingctx):
    """The spin-loop hint (``pause`` on x86: it frees the core's resources for its
    sibling hyperthread and avoids a memory-order flush when the load changes)."""

    def codegen(context, builder, signature, args):
        if _X86:
            fn = builder.module.declare_intrinsic("llvm.x86.sse2.pause", (), ir.FunctionType(ir.VoidType(), []))
            builder.call(fn, [])
        return context.get_dummy_value()

    return types.none(), codegen


with _numba_cache_dir([numba.config]) as _cacheable:

    @numba.njit(nogil=True, cache=_cacheable)
    def wait(flags, row, word, old, spins):
        for _ in range(spins):
            value = _load(flags, row, word)
            if value != old:
                return value
            _pause()
        return _load(flags, row, word)

    @numba.njit(cache=_cacheable)
    def store(flags, row, word, value):
        _store(flags, row, word, value)

    @numba.njit(nogil=True, cache=_cacheable)
    def hand_over(flags, row, ticket, take, grace):
        _store(flags, row, POSTED, ticket)
        if _load(flags, row, ASLEEP) != 0:
            return 1
        if wait(flags, row, STARTED, ticket - 1, take) == ticket:
            for _ in range(grace):
                _pause()
        return 0

    @numba.njit(nogil=True, cache=_cacheable)
    def finish(flags, row, ticket, spins):
        _store(flags, row, DONE, ticket)
        if _load(flags, row, CALLER_WAITS) == ticket:
            return -1
        return wait(flags, row, POSTED, ticket, spins)
