"""The pieces of generated loop source that the templates share: access expressions per
target (:class:`Source`), the arrays a loop takes, the element function's scalar
arguments, indentation and the CUDA grid-stride loop.

``kernels.templates`` writes whole loops from these; ``kernels.wide`` the CUDA
elementwise loop's wide path.
"""

from __future__ import annotations

CONVERSION_FIELDS = ("route", "src_fmt", "dst_fmt", "lo", "hi", "mask")

#: The region kernels' scalars that the templates use themselves (not the element
#: function's arguments).
REGION_SCALARS = frozenset({"dst_offset", "dst_strides", "src_offset", "src_strides", "shape", "magic", "shift",
                            "narrow"})

#: Bytes per word of each word dtype the kernels take.
ITEMSIZE = {"uint8": 1, "int8": 1, "uint16": 2, "int16": 2, "uint32": 4, "int32": 4, "float32": 4,
            "uint64": 8, "int64": 8, "float64": 8}


class Source:
    """Access expressions of one target: arrays indexed (CPU) or raw addresses (CUDA)."""

    def __init__(self, kernel, spec, target: str):
        self.kernel = kernel
        self.cuda = target != "cpu"
        self.words = dict(zip(kernel.array_names, spec.words, strict=True))
        self.axes = spec.axes

    def load(self, array: str, index: str) -> str:
        if self.cuda:
            return f"load_word({array}, int64({index}), {self.words[array]}(0))"
        # Unsigned indices (every index here is >= 0): numba then skips the negative-index
        # wraparound, and LLVM vectorizes the loops (casts ran twice as fast).
        return f"{array}[uint64({index})]"

    def store(self, array: str, index: str, value: str) -> str:
        if self.cuda:
            return f"store_word({array}, int64({index}), {value}, {self.words[array]}(0))"
        return f"{array}[uint64({index})] = {value}"

    def type_values(self) -> list[str]:
        """Locals holding a zero of each type-only array's word (``like`` arguments)."""
        return [f"{a.name} = {self.words[a.name]}(0)" for a in self.kernel.arrays if a.role == "type"]

    def index_bytes(self, array) -> int:
        """Bytes of ``array`` per loop index (its word times its width)."""
        return ITEMSIZE[self.words[array.name]] * array.width


def loop_arrays(kernel) -> list:
    """The arrays the loops take (type-only arrays just choose the word)."""
    return [a for a in kernel.arrays if a.role != "type"]


def hoisted(array) -> str:
    """The local holding the one element of a stepped array whose step is 0 (read once,
    before the loop)."""
    return f"_h_{array.name}"


def element_scalars(kernel, used: set) -> list[str]:
    """f's scalar arguments: the kernel's scalars not consumed by the template, a
    conversion spread into its six fields."""
    out = []
    spread = not kernel.options.get("tuples")
    for s in kernel.scalars:
        if s.name in used:
            continue
        if s.kind == "conversion" and spread:
            out += [f"{s.name}[{k}]" for k in range(len(CONVERSION_FIELDS))]
        else:
            out.append(s.name)
    return out


def indent(lines: list[str], depth: int) -> list[str]:
    return ["    " * depth + line for line in lines]


def grid_stride(i: str, first: str, stop: str, stride: str, body: list[str]) -> list[str]:
    """``for i in range(first, stop, stride): body`` as a while loop: numba's ``range``
    works out its trip count with a 64-bit division (per thread, before the first
    element), which a running index does not need. ``stop`` is read once, as by
    ``range``; ``body`` must not ``continue`` (it would skip the step)."""
    return [f"{i} = int64({first})", f"{i}_stop = {stop}", f"while {i} < {i}_stop:", *indent(body, 1),
            f"    {i} += {stride}"]
