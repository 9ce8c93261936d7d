"""Linear-time IR copies for numba's ``inline="always"``.

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
"""

from __future__ import annotations

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
_lock = threading.Lock()
_done: set = set()


def install(cuda: bool = False) -> bool:
    """Rewrite numba's ``InlineWorker.inline_ir`` (and numba-cuda's, with ``cuda``) once;
    True when every rewritten method is in place."""
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
        _done.add(module_name)
        return True
