"""Faster inlining for numba's ``inline="always"``: linear-time IR copies, and a callee's
untyped IR made once.

Every element function is inlined as IR (``_targets.element``), and numba copies the
callee's IR at each call site block by block, each block with a deepcopy memo of its
own. Every ``ir.Var`` refers to the function's ``ir.Scope``, which holds every variable
of the function, so each block copies the whole scope again: the copy is quadratic in
the callee's size. The conversion switch of the cast kernels is big enough that these
copies were most of the compile time (a multi-tensor unpack to PTX: 17 s, 7 s with one
memo).

:func:`install` rewrites ``InlineWorker.inline_ir`` of numba (the CPU) and numba-cuda to
copy all blocks of one IR with one memo. The copy has the same structure as the
original (its blocks share one scope, as the original's do), so the compiled code is the
same. The method is rewritten from its own source, and only where that source holds the
exact lines below (numba is pinned in pyproject.toml); elsewhere it is left as it is.

It also replaces ``InlineWorker.inline_function``, which runs the untyped pipeline over
the callee (bytecode to IR, and the inlining of the callee's own callees, recursively)
at every call site: the IR is made once per function, typing context, target and
flags, and each call site inlines it under a fresh function identity, so the names of
the inlined variables are unique per call site, as numba makes them. ``inline_ir``
copies the callee's IR before it changes anything, so the kept IR is never changed. The
IR holds the callee's globals as they were when it was made: only functions of this
package (``MEMOISED_MODULES``), whose globals are fixed, are kept; the rest of the
process inlines as numba does. Here too, only where numba's method holds the exact lines
of ``_INLINE_FUNCTION_LINES``.
Twelve PTX specializations (convert, normal_words, unpack, foreach) compiled in 36 s
instead of 47, twelve CPU ones (foreach, copy_region_converting, scatter_indexed, adam)
in 28 s instead of 34, to the same PTX text and the same machine code.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import sys
import textwrap
import threading

# The lines of ``copy_ir`` in ``inline_ir`` that change, per module (as in the pinned
# numba 0.68 and numba-cuda 0.30), each replaced by one line so line numbers stay right.
_FIRST_LINE = ("kernel_copy = the_ir.copy()\n", "kernel_copy, memo = the_ir.copy(), {}\n")
_REWRITES = {
    "numba.core.inline_closurecall": [
        _FIRST_LINE,
        ("new_block = copy.deepcopy(the_ir.blocks[block_label])\n",
         "new_block = copy.deepcopy(the_ir.blocks[block_label], memo)\n"),
    ],
    "numba.cuda.core.inline_closurecall": [
        _FIRST_LINE,
        ("block_label: copy.deepcopy(block)\n", "block_label: copy.deepcopy(block, memo)\n"),
    ],
}
# Where each module's ``FunctionIdentity`` is (the identity of an inlined copy).
_BYTECODE = {"numba.core.inline_closurecall": "numba.core.bytecode",
             "numba.cuda.core.inline_closurecall": "numba.cuda.core.bytecode"}
# Functions of these modules (by ``__module__`` prefix) have their untyped IR kept:
# the kernels' element functions and the generated loops' steps.
MEMOISED_MODULES = ("varstore.", "varstore_generated_")
# The body of ``InlineWorker.inline_function`` that the kept-IR version replaces.
_INLINE_FUNCTION_LINES = ("callee_ir = self.run_untyped_passes(function)",
                          "freevars = function.__code__.co_freevars", "return self.inline_ir(")
_lock = threading.Lock()
_done: set = set()


def install(cuda: bool = False) -> bool:
    """Rewrite numba's ``InlineWorker.inline_ir`` and ``inline_function`` (and
    numba-cuda's, with ``cuda``) once; True when every rewritten method is in place."""
    import numba.core.inline_closurecall  # noqa: F401

    names = ["numba.core.inline_closurecall"]
    if cuda:
        try:
            import numba.cuda.core.inline_closurecall  # noqa: F401
        except ImportError:  # (no numba-cuda compiler: nothing of it to rewrite)
            return False
        names.append("numba.cuda.core.inline_closurecall")
    return all([_rewrite(name) for name in names])


def _rewrite(module_name: str) -> bool:
    with _lock:
        if module_name in _done:
            return True
        module = sys.modules.get(module_name)
        worker = getattr(module, "InlineWorker", None)
        if worker is None:
            return False
        method = worker.inline_ir
        try:
            source = inspect.getsource(method)  # (indented as in its class)
            first_line = inspect.getsourcelines(method)[1]
        except (OSError, TypeError):
            return False
        for old, new in _REWRITES[module_name]:
            if source.count(old) != 1:
                return False  # another numba version: its own method stays
            source = source.replace(old, new)
        namespace: dict = {}
        source = "\n" * (first_line - 1) + textwrap.dedent(source)  # numba's line numbers in tracebacks
        code = compile(source, inspect.getsourcefile(method) or module_name, "exec")
        exec(code, module.__dict__, namespace)  # noqa: S102 - numba's own method, one line changed
        rewritten = namespace["inline_ir"]
        rewritten.__doc__ = method.__doc__
        rewritten.__qualname__ = method.__qualname__
        worker.inline_ir = rewritten
        original = worker.inline_function
        try:
            pinned = all(line in inspect.getsource(original) for line in _INLINE_FUNCTION_LINES)
        except (OSError, TypeError):
            pinned = False
        if pinned:  # (another numba version: its own method stays)
            identity = importlib.import_module(_BYTECODE[module_name]).FunctionIdentity
            worker.inline_function = _inline_function(original, identity)
        _done.add(module_name)
        return pinned


def _inline_function(original, identity):
    """``InlineWorker.inline_function`` (``original``) with the callee's untyped IR made
    once (see the module docstring); ``identity``: the module's ``FunctionIdentity``."""
    # (function, typing context, target context class, flags) -> untyped IR. The class:
    # each compile takes a target context of its own, made from the flags.
    made: dict = {}
    lock = threading.Lock()

    def inline_function(self, caller_ir, block, i, function, arg_typs=None):
        if self.locals or not (getattr(function, "__module__", None) or "").startswith(MEMOISED_MODULES):
            # (typed locals shape the IR; other code's globals may change: as numba does)
            return original(self, caller_ir, block, i, function, arg_typs)
        self.flags.enable_ssa = False  # (as run_untyped_passes leaves the caller's flags)
        key = (function, self.typingctx, type(self.targetctx), self.flags.copy())
        with lock:
            kept = made.get(key)
        if kept is None:
            kept = self.run_untyped_passes(function)
            with lock:
                made.setdefault(key, kept)
        callee_ir = copy.copy(kept)
        callee_ir.func_id = identity.from_function(function)
        return self.inline_ir(caller_ir, block, i, callee_ir, function.__code__.co_freevars, arg_typs=arg_typs)

    return inline_function
