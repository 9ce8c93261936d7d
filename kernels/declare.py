"""Kernel declarations: one per kernel, from which both loops are generated.

A kernel is its element function plus a schema:

- ``arrays``: named 1-D arrays of raw words. ``Array.role`` says whether the loop reads
  ("in"), writes ("out") or updates ("inout") it; ``Array.word`` fixes its word dtype
  (index and table arrays) or leaves it to the launch (None: the specialization is
  chosen by the array's dtype); ``Array.step`` names an int64 scalar multiplying its
  index (0 makes a one-element array a scalar operand).
- ``scalars``: named typed values (see :data:`SCALAR_KINDS`).
- ``template``: the loop around the element function (``kernels.templates``):
  "elementwise", "region", "scatter", "gather" or "chunks".

Call sites pass every argument by name (``backend.launch(kernel, n, src=..., dst=...)``).
The CPU loop (numba, arrays as arguments) and the CUDA loop (numba-cuda, arrays as raw
device addresses, every argument a plain scalar) are generated from the template and
compiled once per :class:`Specialization`: the word dtypes of the arrays and, for
region kernels, the number of axes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

#: Scalar kinds and the numba types they pass as. A "format" is a small float's eight
#: uint32 fields; "axes" a tuple of int64, one per axis of the region; "conversion" the
#: six arguments of ``cast.convert_word`` after the word (route, source format,
#: destination format, lo, hi, mask).
SCALAR_KINDS = ("u32", "i64", "u64", "f32", "f64", "format", "axes", "conversion")

#: Word dtypes arrays travel as. bool travels as uint8 and float16 as uint16 (numba has
#: no float16 arrays); the loops read the same bytes.
WORD_OF = {np.dtype(name): name for name in
           ("uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float32", "float64")}
WORD_OF[np.dtype("bool")] = "uint8"
WORD_OF[np.dtype("float16")] = "uint16"

_RESERVED = frozenset({"start", "stop", "f", "g", "step", "loop", "cuda", "np", "element"})

#: Every word dtype, and the unsigned ones (what copies and converting kernels store).
WORDS = ("uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float32", "float64")
UNSIGNED = ("uint8", "uint16", "uint32", "uint64")

TEMPLATES = ("elementwise", "region", "scatter", "gather", "chunks")


@dataclass(frozen=True)
class Array:
    name: str
    role: str = "in"  # "in", "out" or "inout"
    word: str | None = None  # fixed word dtype, or None: chosen per launch among `words`
    words: tuple = ()  # the word dtypes a launch may pass (empty: any of WORDS)
    step: str | None = None  # name of an int64 scalar the element index is multiplied by
    width: int = 1  # words written per element-function call ("out" arrays)

    def __post_init__(self):
        if self.step and self.role != "in":  # (a step-0 operand is read once per loop)
            raise ValueError(f"Array {self.name!r}: only an 'in' array can have a step; it is {self.role!r}.")


@dataclass(frozen=True)
class Scalar:
    name: str
    kind: str

    def __post_init__(self):
        if self.kind not in SCALAR_KINDS:
            raise ValueError(f"Invalid scalar kind {self.kind!r} for {self.name!r}. Expected one of {SCALAR_KINDS}.")


@dataclass(frozen=True)
class Specialization:
    """What one compiled pair of loops is for: the word dtype of every array (schema
    order) and the number of axes of region kernels (0 for the others)."""

    words: tuple
    axes: int = 0


@dataclass(eq=False)
class Kernel:
    """One declared kernel. ``element`` is the element function (``_targets.element``);
    ``options`` are template options (see ``kernels.templates``)."""

    name: str
    template: str
    element: object
    arrays: tuple
    scalars: tuple = ()
    options: dict = field(default_factory=dict)
    doc: str = ""

    def __post_init__(self):
        if self.template not in TEMPLATES:
            raise ValueError(f"Invalid template {self.template!r} for kernel {self.name!r}. "
                             f"Expected one of {TEMPLATES}.")
        reserved = [n for n in [a.name for a in self.arrays] + [s.name for s in self.scalars]
                    if n.startswith("_") or n in _RESERVED]
        if reserved:
            raise ValueError(f"Kernel {self.name!r}: argument names {reserved} are taken by the generated loops "
                             f"(names starting with '_', and {sorted(_RESERVED)}).")
        self.array_names = tuple(a.name for a in self.arrays)
        self.scalar_names = tuple(s.name for s in self.scalars)
        #: Every argument a launch takes; ``loop_names``: those the loops take, in order
        #: (after start and stop; "type" arrays only choose the specialization).
        self.argument_names = self.array_names + self.scalar_names
        self.loop_names = tuple(a.name for a in self.arrays if a.role != "type") + self.scalar_names
        self._names = frozenset(self.argument_names)
        self._axes = any(s.kind == "axes" for s in self.scalars)
        self._compiled: dict = {}  # (target, Specialization) -> compiled loop
        self._by_key: dict = {}  # (target, (array dtypes..., axes)) -> (compiled loop, Specialization)
        self._binder = None
        self._lock = threading.Lock()

    def check_arguments(self, args: dict) -> None:
        """Raise TypeError unless ``args`` names exactly this kernel's arguments."""
        if args.keys() != self._names:
            missing = sorted(self._names - args.keys())
            unexpected = sorted(args.keys() - self._names)
            raise TypeError(f"Kernel {self.name!r} takes the arguments {list(self.argument_names)}; "
                            f"missing {missing}, unexpected {unexpected}.")

    def bind(self, args: dict, n: int = 0) -> tuple:
        """``(key, values)``: the arrays' dtypes (and axes), and the loop's arguments in
        order, for ``args`` (name -> value, host or device arrays) and a loop over ``n``
        indices. TypeError for names other than the kernel's; ValueError for an array
        that is not 1-D and contiguous (the loops index flat arrays), or that is indexed
        by element and has fewer than the ``n`` (times its width) elements the loop
        touches: the loops do not check bounds. Generated per kernel: it runs on every
        launch."""
        if self._binder is None:
            self._binder = _binder(self)
        try:
            return self._binder(args, n)
        except KeyError:
            self.check_arguments(args)
            raise

    def loop_for(self, target: str, key: tuple, args: dict):
        """``(compiled loop, Specialization)`` of ``target`` for arrays of the dtypes in
        ``key`` (from :meth:`bind`); compiled on first use."""
        hit = self._by_key.get((target, key))
        if hit is None:
            self.check_arguments(args)
            spec = self.specialization(args, key[-1])
            for a, word in zip(self.arrays, spec.words, strict=True):
                allowed = self.allowed_words(a)
                if word not in allowed:
                    raise TypeError(f"Kernel {self.name!r}: argument {a.name!r} must be an array of one of the "
                                    f"word dtypes {list(allowed)}; received dtype {args[a.name].dtype}.")
            hit = self._by_key[(target, key)] = (self.compiled(target, spec), spec)
        return hit

    def specialization(self, arrays: dict, axes: int = 0) -> Specialization:
        """The specialization for ``arrays`` (name -> array, or anything with a dtype)."""
        words = tuple(a.word or WORD_OF.get(arrays[a.name].dtype, str(arrays[a.name].dtype)) for a in self.arrays)
        return Specialization(words, axes)

    @staticmethod
    def allowed_words(array: Array) -> tuple:
        return (array.word,) if array.word else (array.words or WORDS)

    def examples(self, axes: int = 2) -> list:
        """Specializations that together use every word each array declares (the PTX
        tests compile these): the k-th takes each array's k-th word, cycling."""
        choices = [self.allowed_words(a) for a in self.arrays]
        count = max(len(c) for c in choices)
        return [Specialization(tuple(c[k % len(c)] for c in choices), axes if self._axes else 0) for k in range(count)]

    def compiled(self, target: str, spec: Specialization):
        """The compiled loop of ``target`` ("cpu", "cuda", "cudasim") for ``spec``,
        built on first use (see ``kernels.build``)."""
        same = self.options.get("cpu_loop_of")
        if target == "cpu" and same is not None:  # (a kernel of the same arguments whose CPU loop this one runs)
            return same.compiled(target, spec)
        key = (target, spec)
        loop = self._compiled.get(key)
        if loop is None:
            with self._lock:
                loop = self._compiled.get(key)
                if loop is None:
                    from . import build  # (numba: loaded by the first compile, not with the declarations)

                    loop = self._compiled[key] = build.compile_loop(self, target, spec)
        return loop

    def __repr__(self):
        return f"<Kernel {self.name} ({self.template})>"


def kernel(name: str, template: str, element, arrays, scalars=(), doc: str = "", **options) -> Kernel:
    """Declare a kernel (see the module docstring)."""
    return Kernel(name, template, element, tuple(arrays), tuple(scalars), options, doc)


def _binder(kernel: Kernel):
    """The :meth:`Kernel.bind` function of ``kernel``, as straight-line Python."""
    lines = ["def bind(args, n):", f"    if len(args) != {len(kernel.argument_names)}:", "        raise KeyError"]
    for i, a in enumerate(kernel.arrays):
        lines.append(f"    a{i} = args[{a.name!r}]")
        if a.word:  # (free words are checked through the key: an unknown dtype is refused)
            lines += [f"    if a{i}.dtype != _{a.word}:",
                      f"        _wrong_dtype({kernel.name!r}, {a.name!r}, a{i}, {a.word!r})"]
        if a.role != "type":  # (strides, not flags: numba's device arrays have no flags object)
            lines += [f"    if a{i}.ndim != 1 or (a{i}.strides[0] != a{i}.dtype.itemsize and a{i}.size > 1):",
                      f"        _not_flat({kernel.name!r}, {a.name!r}, a{i})"]
        if a.role in ("out", "inout"):
            lines += [f"    if type(a{i}) is _ndarray and not a{i}.flags.writeable:",
                      f"        _read_only({kernel.name!r}, {a.name!r})"]
        need = _elements_needed(kernel, a)
        if need:
            lines += [f"    if a{i}.size < {need}:", f"        _too_small({kernel.name!r}, {a.name!r}, a{i}, {need})"]
    values = [f"a{i}" for i, a in enumerate(kernel.arrays) if a.role != "type"]
    values += [f"args[{s.name!r}]" for s in kernel.scalars]
    axes = "len(args['shape'])" if kernel._axes else "0"
    key = ", ".join([f"a{i}.dtype" for i in range(len(kernel.arrays))] + [axes])
    lines.append(f"    return ({key}), ({', '.join(values)},)")
    namespace = {"_not_flat": _not_flat, "_too_small": _too_small, "_wrong_dtype": _wrong_dtype,
                 "_read_only": _read_only, "_ndarray": np.ndarray, **{f"_{w}": np.dtype(w) for w in WORDS}}
    exec("\n".join(lines), namespace)  # noqa: S102 - generated from the declaration
    return namespace["bind"]


def _not_flat(kernel: str, name: str, array) -> None:
    raise ValueError(f"Kernel {kernel!r}: argument {name!r} must be a 1-D C-contiguous array; "
                     f"received shape {array.shape}, strides {array.strides}.")


def _elements_needed(kernel: Kernel, array: Array) -> str | None:
    """The expression (in ``n`` and the scalars) of how many elements of ``array`` the
    loop over ``n`` indices touches, for arrays indexed by the loop's index."""
    if array.role == "type" or array.word == "int64" and kernel.template == "chunks":
        return None
    if kernel.template == "elementwise":
        if array.step:
            return f"(1 if args[{array.step!r}] == 0 else n * args[{array.step!r}])"
        return f"n * {array.width}"
    if kernel.template == "gather" and array.name in ("dst", "index"):
        return "n"
    if kernel.template == "scatter" and array.name == "index":
        return "n"
    return None  # region and table offsets: bounded by their callers (indexing.py, buckets.py)


def _too_small(kernel: str, name: str, array, need: int) -> None:
    raise ValueError(f"Kernel {kernel!r}: argument {name!r} has {array.size} elements; the launch touches {need}.")


def _wrong_dtype(kernel: str, name: str, array, word: str) -> None:
    raise TypeError(f"Kernel {kernel!r}: argument {name!r} must be an array of {word}; received dtype {array.dtype}.")


def _read_only(kernel: str, name: str) -> None:
    raise ValueError(f"Kernel {kernel!r}: argument {name!r} is written, and the array given is read-only.")
