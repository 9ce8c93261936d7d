"""Intrinsics for element functions: one LLVM instruction each, on every target (CPU,
CUDA, and the simulator, which runs the CPU build).

- ``shr32``/``shl32``: numba types every shift result as (at least) 64-bit, and because a
  64-bit shift by 32..63 means something else than a 32-bit one, LLVM cannot narrow it
  back: each variable shift would cost two instructions on a GPU. The count is taken
  modulo 32: callers keep it below 32.
- ``udivmod32``: numba divides integers in 64 bits; a 64-bit division costs a GPU
  several times a 32-bit one, which index math (unravelling an element number over a
  shape) pays for every element. The operands must fit 32 bits.
- ``mulhi32``/``mulhi64``: the high half of a product, which division by a constant
  through a precomputed "magic" multiplier needs (``varstore.region_axes.division_magic``):
  numba would widen a 32-bit product to 64 bits and shift it, and has no 128-bit
  integers. On a GPU one ``mul.hi.u32`` / ``mul.hi.u64``, on x86 one ``mul``.
- ``mulwide32``: the whole 64-bit product of two uint32 values (Philox's rounds). From
  the generic form (zero-extend, multiply) NVVM emits one ``mul.wide.u32`` only while it
  still sees the zero-extensions: where an operand is the low word of a 64-bit value
  (the element's index, in a grid-stride loop), LLVM rewrites ``zext(trunc(x))`` as
  ``x & 0xFFFFFFFF`` and multiplies in 64 bits (``mul.lo.s64``: three multiplies on a
  GPU). On a GPU it is the instruction itself, as inline PTX.
- ``prefetch_for_write``: a write hint for a NumPy array's element (CPU loops only).
- ``fma``: NVVM fuses ``a * b + c`` into one fused multiply-add by default and the CPU does
  not, so the same source would round differently on the two targets. Element functions
  write every multiply-add as ``fma(a, b, c)`` (one rounding, on both), and a product
  that feeds an addition otherwise must be exact.
- ``mul_rn``: a product rounded once that no compiler fuses with the addition it feeds:
  ``mul.rn`` on a GPU (ptxas may fuse a ``mul`` without a rounding mode into an ``fma``
  with a following ``add``), a plain multiply on the CPU. For inexact products that feed
  an addition through a branch, where writing ``fma`` is not the computation meant.
- ``sqrt``: the correctly rounded square root (``llvm.sqrt``: ``sqrt.rn`` on a GPU,
  ``sqrtss``/``sqrtps`` on x86). numba's ``math.sqrt`` calls the C library's ``sqrtf``
  on the CPU, which may set ``errno``: LLVM keeps that call in the loop and does not
  vectorize it.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic


def _shift32(builder_method: str):
    """Codegen of a 32-bit shift of ``x`` by ``s % 32`` (``lshr`` or ``shl``)."""

    def codegen(context, builder, signature, args):
        value = context.cast(builder, args[0], signature.args[0], types.uint32)
        count = context.cast(builder, args[1], signature.args[1], types.uint32)
        return getattr(builder, builder_method)(value, builder.and_(count, count.type(31)))

    return codegen


@intrinsic
def shr32(typingctx, x, s):
    """``x >> (s % 32)`` on uint32 values, as one 32-bit logical shift."""
    return types.uint32(x, s), _shift32("lshr")


@intrinsic
def shl32(typingctx, x, s):
    """``(x << (s % 32)) mod 2**32`` on uint32 values, as one 32-bit shift."""
    return types.uint32(x, s), _shift32("shl")


@intrinsic
def fma(typingctx, a, b, c):
    """``a * b + c`` rounded once (``llvm.fma``), for float32 or float64 operands."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, signature, args):
        t = args[0].type
        fn = builder.module.declare_intrinsic("llvm.fma", [t], ir.FunctionType(t, [t, t, t]))
        return builder.call(fn, args)

    return a(a, b, c), codegen


@intrinsic
def mul_rn(typingctx, a, b):
    """``a * b`` rounded once (to nearest) and never fused into a later addition, for
    float32 or float64 operands."""
    if not (isinstance(a, types.Float) and a == b):
        return None

    def codegen(context, builder, signature, args):
        t = args[0].type
        if builder.module.triple.startswith("nvptx"):
            name = "llvm.nvvm.mul.rn.f" if isinstance(t, ir.FloatType) else "llvm.nvvm.mul.rn.d"
            fn = builder.module.declare_intrinsic(name, fnty=ir.FunctionType(t, [t, t]))
            return builder.call(fn, args)
        return builder.fmul(*args)

    return a(a, b), codegen


@intrinsic
def sqrt(typingctx, x):
    """The square root of a float32 or float64 ``x``, rounded once (``llvm.sqrt``)."""
    if not isinstance(x, types.Float):
        return None

    def codegen(context, builder, signature, args):
        t = args[0].type
        fn = builder.module.declare_intrinsic("llvm.sqrt", [t], ir.FunctionType(t, [t]))
        return builder.call(fn, args)

    return x(x), codegen


@intrinsic
def udivmod32(typingctx, a, b):
    """``(a // b, a % b)`` of two unsigned values below 2**32, as 32-bit division."""

    def codegen(context, builder, signature, args):
        x = context.cast(builder, args[0], signature.args[0], types.uint32)
        y = context.cast(builder, args[1], signature.args[1], types.uint32)
        return context.make_tuple(builder, signature.return_type, (builder.udiv(x, y), builder.urem(x, y)))

    return types.UniTuple(types.uint32, 2)(a, b), codegen


def _mulhi(bits: int):
    """Codegen of the high ``bits`` bits of the ``2 * bits``-bit product of two unsigned
    ``bits``-bit values: NVVM's own ``mulhi`` intrinsic on a GPU (from the generic form
    below, NVVM may widen the operands and multiply in 64 bits), else zero-extend,
    multiply, shift right, truncate (one ``mul`` on x86)."""
    word = getattr(types, f"uint{bits}")
    nvvm = {32: "llvm.nvvm.mulhi.ui", 64: "llvm.nvvm.mulhi.ull"}[bits]

    def codegen(context, builder, signature, args):
        a = context.cast(builder, args[0], signature.args[0], word)
        b = context.cast(builder, args[1], signature.args[1], word)
        if builder.module.triple.startswith("nvptx"):
            fn = builder.module.declare_intrinsic(nvvm, fnty=ir.FunctionType(a.type, [a.type, a.type]))
            return builder.call(fn, [a, b])
        wide = ir.IntType(2 * bits)
        product = builder.mul(builder.zext(a, wide), builder.zext(b, wide))
        return builder.trunc(builder.lshr(product, wide(bits)), a.type)

    return codegen


@intrinsic
def mulwide32(typingctx, a, b):
    """``a * b`` of two uint32 values as a uint64, as one 32x32 -> 64 multiply."""
    if not (isinstance(a, types.Integer) and isinstance(b, types.Integer)):
        return None  # (numba then reports the argument types it was given)

    def codegen(context, builder, signature, args):
        a, b = (context.cast(builder, v, t, types.uint32) for v, t in zip(args, signature.args, strict=True))
        wide = ir.IntType(64)
        if builder.module.triple.startswith("nvptx"):
            return builder.asm(ir.FunctionType(wide, [a.type, b.type]), "mul.wide.u32 $0, $1, $2;", "=l,r,r",
                               [a, b], False)
        return builder.mul(builder.zext(a, wide), builder.zext(b, wide))

    return types.uint64(a, b), codegen


@intrinsic
def mulhi32(typingctx, a, b):
    """``(a * b) >> 32`` of two uint32 values, as one 32x32 -> high 32 multiply."""
    return types.uint32(a, b), _mulhi(32)


@intrinsic
def mulhi64(typingctx, a, b):
    """``(a * b) >> 64`` of two uint64 values, as one 64x64 -> high 64 multiply."""
    return types.uint64(a, b), _mulhi(64)


# Raw memory access for multi-tensor kernels, which reach many arrays through a table of
# addresses (one kernel argument per array would not scale to thousands of tensors).
# The address is a byte address in the kernel's own memory space: host memory on the CPU
# and in the simulator, device memory (a generic pointer) on a GPU. Callers keep every
# access inside an array they own.


def _element_pointer(context, builder, signature, args, element_type):
    address = context.cast(builder, args[0], signature.args[0], types.uint64)
    index = context.cast(builder, args[1], signature.args[1], types.int64)
    base = builder.inttoptr(address, context.get_value_type(element_type).as_pointer())
    return builder.gep(base, [index])


@intrinsic
def load_at(typingctx, address, index, like):
    """Element ``index`` of the array of ``like``'s type that starts at byte ``address``."""
    if not isinstance(like, (types.Integer, types.Float)):  # (bool: pass its bytes as uint8)
        return None

    def codegen(context, builder, signature, args):
        return builder.load(_element_pointer(context, builder, signature, args, signature.return_type))

    return like(address, index, like), codegen


@intrinsic
def store_at(typingctx, address, index, value, like):
    """Write ``value``, converted to ``like``'s type, as element ``index`` of the array
    at ``address``."""
    if not isinstance(like, (types.Integer, types.Float)):
        return None

    def codegen(context, builder, signature, args):
        item = context.cast(builder, args[2], signature.args[2], like)
        builder.store(item, _element_pointer(context, builder, signature, args, like))
        return context.get_dummy_value()

    return types.none(address, index, value, like), codegen


@intrinsic
def prefetch_for_write(typingctx, array, index):
    """Ask the cache for the line holding ``array[index]``, to be written soon
    (``llvm.prefetch``, read-write, keep in all levels: ``prefetchw`` on x86). A hint:
    it never faults, so ``index`` may lie past the array's end. For the CPU loops, which
    take NumPy arrays: a strided row write reads every line it touches, and the
    hardware prefetcher does not follow it from one row (page) to the next."""
    if not (isinstance(array, types.Array) and array.ndim == 1 and array.layout == "C"
            and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        at = context.cast(builder, args[1], signature.args[1], types.intp)
        byte = ir.IntType(8).as_pointer()
        int32 = ir.IntType(32)
        fn = builder.module.declare_intrinsic("llvm.prefetch", [byte],
                                              ir.FunctionType(ir.VoidType(), [byte, int32, int32, int32]))
        builder.call(fn, [builder.bitcast(builder.gep(data, [at]), byte), int32(1), int32(3), int32(1)])
        return context.get_dummy_value()

    return types.none(array, index), codegen


# Wide access for the generated CUDA loops (kernels.templates): several consecutive
# elements moved by one vector load or store of up to 16 bytes (``ld.global.v4.u32`` and
# the like), where one element per access would leave most of each memory transaction
# unused. The address of the first element must be aligned to the vector's size: the
# loops check it before they take this path.


def _vector_pointer(context, builder, address_value, address_type, index_value, index_type, element, vector):
    """The address of element ``index`` as a pointer to the access's ``vector`` type."""
    address = context.cast(builder, address_value, address_type, types.uint64)
    index = context.cast(builder, index_value, index_type, types.int64)
    scalar = context.get_value_type(element)
    first = builder.gep(builder.inttoptr(address, scalar.as_pointer()), [index])
    return builder.bitcast(first, vector.as_pointer())


def _vector_alignment(context, element, count) -> int:
    return context.get_abi_sizeof(context.get_value_type(element)) * count


def _uniform_tuple(t):
    return (isinstance(t, types.UniTuple) and isinstance(t.dtype, (types.Integer, types.Float))
            and t.count in (2, 4, 8, 16))


def _lanes(context, element, count):
    """(elements per 32-bit lane, lanes): narrow elements travel packed in 32-bit lanes
    (eight uint16 as four uint32: one ``v4.u32`` access; NVVM splits a vector of eight
    16-bit lanes into two 8-byte accesses), wider ones one per lane."""
    size = context.get_abi_sizeof(context.get_value_type(element))
    if size < 4 and size * count >= 4:
        per_lane = 4 // size
        return per_lane, count // per_lane
    return 1, count


def _vector_access(context, builder, signature, args, like):
    """``(element type, elements per lane, lanes, lane type, pointer, alignment)`` of a
    vector access of ``like``'s k elements at element ``args[1]`` of the array at byte
    address ``args[0]``."""
    element, count = like.dtype, like.count
    scalar = context.get_value_type(element)
    per_lane, lanes = _lanes(context, element, count)
    lane = ir.IntType(32) if per_lane > 1 else scalar
    pointer = _vector_pointer(context, builder, args[0], signature.args[0], args[1], signature.args[1],
                              element, ir.VectorType(lane, lanes))
    return scalar, per_lane, lanes, lane, pointer, _vector_alignment(context, element, count)


@intrinsic
def load_vector(typingctx, address, index, like):
    """Elements ``index .. index + k - 1`` of the array of ``like``'s element type at byte
    ``address``, as one vector load (``like`` is a k-tuple; the first element's address
    must be aligned to the k elements' size)."""
    if not _uniform_tuple(like):
        return None

    def codegen(context, builder, signature, args):
        scalar, per_lane, lanes, lane, pointer, align = _vector_access(context, builder, signature, args, like)
        vector = builder.load(pointer, align=align)
        items = []
        for k in range(lanes):
            word = builder.extract_element(vector, ir.Constant(ir.IntType(32), k))
            if per_lane == 1:
                items.append(word)
                continue
            bits = 32 // per_lane
            for m in range(per_lane):  # little-endian: element m in the lane's low bits first
                items.append(builder.trunc(builder.lshr(word, ir.Constant(lane, bits * m)), scalar))
        return context.make_tuple(builder, signature.return_type, items)

    return like(address, index, like), codegen


@intrinsic
def store_vector(typingctx, address, index, values, like):
    """Write the k values of the tuple ``values``, converted to ``like``'s element type
    (``like`` a k-tuple), as elements ``index .. index + k - 1`` of the array at byte
    ``address``: one vector store (aligned as for :func:`load_vector`)."""
    if not (_uniform_tuple(like) and isinstance(values, types.BaseTuple) and len(values) == like.count):
        return None

    def codegen(context, builder, signature, args):
        _, per_lane, lanes, lane, pointer, align = _vector_access(context, builder, signature, args, like)
        items = [context.cast(builder, builder.extract_value(args[2], k), values[k], like.dtype)
                 for k in range(like.count)]
        vector = ir.Constant(ir.VectorType(lane, lanes), ir.Undefined)
        for k in range(lanes):
            if per_lane == 1:
                word = items[k]
            else:
                bits = 32 // per_lane
                word = ir.Constant(lane, 0)
                for m in range(per_lane):
                    part = builder.shl(builder.zext(items[k * per_lane + m], lane), ir.Constant(lane, bits * m))
                    word = builder.or_(word, part)
            vector = builder.insert_element(vector, word, ir.Constant(ir.IntType(32), k))
        builder.store(vector, pointer, align=align)
        return context.get_dummy_value()

    return types.none(address, index, values, like), codegen
