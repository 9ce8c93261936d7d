"""Multi-tensor updates: ``vs.foreach`` and the fused optimizer steps, one launch for a
whole group of tensors.

Chunks kernels without a staging buffer (``kernels.templates``, "chunks"): the table has
one row per tensor with the byte address of each of its arrays (the variable, its value
or gradient, its slots) and the tensor's first index in the launch's flat index space;
element ``j`` of chunk ``c`` is element ``j - start`` of every array of its tensor.

Arithmetic: variables and values of any float dtype are converted to the *compute*
dtype (float32, or float64 for float64 variables) by ``cast.convert_word``, updated there,
and rounded once to the variable's dtype. A value is first converted to the variable's
dtype, as ``v.assign_add(x)`` converts it, then to the compute dtype. Slots are stored in
the compute dtype. Every multiply-add is one ``fma`` (see ``kernels.intrinsics``): one
rounding, the same bits on every target.

NaN: a GPU's float operations give 0x7FFFFFFF for any NaN; the CPU's keep an operand's
payload or give 0xFFC00000; a fused multiply-add's choice among its operands is the
compiler's. So every NaN an update stores has its bits chosen by a select, the same on
every target:
- ``vs.foreach``'s sum ``w + alpha * x`` and product ``w * alpha`` take the CPU's (x86)
  rule, as ``v.assign_add`` does (``cast.add_in_format``): ``w`` quieted where it is a
  NaN, else ``x`` quieted, else the default NaN (``cast.x86_nan32``, ``x86_nan64``);
  ``vs.foreach.assign`` computes nothing and stores the value's words, as casts do.
- The optimizer steps, a chain of operations with no per-variable twin, store NumPy's
  ``np.nan`` (:func:`settled32`, :func:`settled64`) in the variable and every slot.
Each compute dtype stores its own numbers in its own branch: a float32 slot value passed
through a float64 variable would be converted twice, and a GPU's conversions do not keep
a NaN's bits either.

The formulas are Keras 3's (``keras.optimizers.SGD``, ``Adam``; ``AdamW`` is Adam with
decoupled weight decay): the host computes the step's scalars (bias correction included)
in float32 as Keras does, and passes them as float64 holding float32 values.
"""

from __future__ import annotations

import numpy as np
from numba import float32, float64, uint64

from ._targets import element
from .access import load_word, store_word
from .cast import (  # noqa: F401 (SAME: the route callers compare with)
    F32_TO_SMALL,
    SAME,
    SMALL_TO_F32,
    convert_word,
    decode_to_f32_bits,
    encode_from_f32_bits,
    x86_nan32,
    x86_nan64,
)
from .declare import Array, Scalar, kernel
from .intrinsics import fma, mul_rn, sqrt

#: The compute dtype of an update (the ``kind`` scalar).
COMPUTE_F32 = 0
COMPUTE_F64 = 1

#: ``vs.foreach`` modes: ``v = alpha * x``, ``v = v + alpha * x``, ``v = v * alpha``.
ASSIGN = 0
ADD = 1
SCALE = 2


# ------------------------------------------------------------------ words <-> numbers
@element
def settled32(x):
    """``x``, or NumPy's NaN (0x7FC00000) where ``x`` is NaN."""
    return x if x == x else float32(np.nan)


@element
def settled64(x):
    """``x``, or NumPy's NaN (0x7FF8000000000000) where ``x`` is NaN."""
    return x if x == x else float64(np.nan)


@element
def larger(a, b):
    """``max(a, b)`` that propagates a NaN operand, as Keras's ``ops.maximum`` does
    (Python's ``max`` keeps ``a`` where ``b`` is NaN, a GPU's ``max.f32`` keeps the
    number where either is NaN)."""
    return b if b > a or b != b else a


@element
def foreach_bits32(w, x, alpha, mode):
    """The float32 bits :func:`foreach_math` stores for ``mode`` ADD or SCALE."""
    other = alpha if mode == SCALE else x
    return uint64(x86_nan32(foreach_math(w, x, alpha, mode), np.float32(w).view(np.uint32),
                            np.float32(other).view(np.uint32)))


@element
def foreach_bits64(w, x, alpha, mode):
    """:func:`foreach_bits32` in float64."""
    other = alpha if mode == SCALE else x
    return x86_nan64(foreach_math(w, x, alpha, mode), np.float64(w).view(np.uint64),
                     np.float64(other).view(np.uint64))


@element
def f32_bits(x):
    """The float32 bits to store for ``x`` (a NaN settled)."""
    return uint64(np.float32(settled32(x)).view(np.uint32))


@element
def f64_bits(x):
    """The float64 bits to store for ``x`` (a NaN settled)."""
    return np.float64(settled64(x)).view(np.uint64)


@element
def converted(word, conversion):
    """``word`` converted by ``conversion`` (the six arguments of ``convert_word``)."""
    return convert_word(word, conversion[0], conversion[1], conversion[2], conversion[3], conversion[4],
                        conversion[5])


@element
def loaded(address, index, like, conversion):
    """Element ``index`` of the array at ``address``, converted by ``conversion``."""
    return converted(load_word(address, index, like), conversion)


# The CPU loops' paths for small-float variables (float16, bfloat16, float8; compute in
# float32): the decode and the encode inline, where the conversion switch calls them,
# which left an Adam step on bfloat16 variables 10x slower than on float32 ones. Their
# operand (a gradient or a foreach value) is float32 or of the variable's own format.
@element
def small_bits(word, to_compute):
    """A small-float word as float32 bits (``to_compute``: route SMALL_TO_F32)."""
    return np.uint32(decode_to_f32_bits(word, to_compute[1]))


@element
def small_word(bits, from_compute):
    """float32 bits as the small format's word (``from_compute``: route F32_TO_SMALL)."""
    return uint64(uint64(encode_from_f32_bits(bits, from_compute[2])) & uint64(from_compute[5]))


@element
def operand_bits(word, conversion):
    """A float32 or small-float operand word as float32 bits (``conversion``: SAME or
    SMALL_TO_F32)."""
    if conversion[0] == SAME:
        return np.uint32(word)
    return np.uint32(decode_to_f32_bits(word, conversion[1]))


#: The operand conversions the ``small`` paths make inline: a gradient's to float32 bits
#: (:func:`operand_bits`), a foreach value's to the variable's words (:func:`foreach_small`).
GRADIENT_ROUTES = (SAME, SMALL_TO_F32)
VALUE_ROUTES = (SAME, F32_TO_SMALL)


def small_path(operand, routes, to_compute, from_compute) -> int:
    """1 where a launch may take its kernel's ``small`` path: small-float variables
    (``to_compute`` SMALL_TO_F32 and ``from_compute`` F32_TO_SMALL) and an ``operand``
    conversion among ``routes`` (:data:`GRADIENT_ROUTES` or :data:`VALUE_ROUTES`)."""
    return int(to_compute[0] == SMALL_TO_F32 and from_compute[0] == F32_TO_SMALL and operand[0] in routes)


# ------------------------------------------------------------------ foreach
@element
def foreach_math(w, x, alpha, mode):
    """``alpha * x``, ``w + alpha * x`` (one fma) or ``w * alpha``, in the type of its
    arguments (float32 or float64: the caller passes ``alpha`` in that type)."""
    if mode == SCALE:
        return w * alpha
    if mode == ADD:
        return fma(alpha, x, w)
    return alpha * x


@element
def foreach_element(j, start, w_address, x_address, x_step, like_w, like_wd, like_x, alpha, mode, kind, to_variable,
                    to_compute, from_compute):
    """Element ``j - start`` of one tensor: ``w = alpha * x``, ``w + alpha * x`` or
    ``w * alpha`` by ``mode``. ``xw``: the value's words -> the variable's; ``wc``: the
    variable's words -> compute bits; ``cw``: compute bits -> the variable's words."""
    i = j - start
    x = uint64(0)
    if mode != SCALE:
        x = loaded(x_address, i * x_step, like_x, to_variable)
        if mode == ASSIGN:
            store_word(w_address, i, x, like_wd)
            return
        x = converted(x, to_compute)
    w = loaded(w_address, i, like_w, to_compute)
    if kind == COMPUTE_F32:
        r = foreach_bits32(np.uint32(w).view(np.float32), np.uint32(x).view(np.float32), float32(alpha), mode)
    else:
        r = foreach_bits64(np.uint64(w).view(np.float64), np.uint64(x).view(np.float64), float64(alpha), mode)
    store_word(w_address, i, converted(r, from_compute), like_wd)


@element
def foreach_same(j, start, w_address, x_address, x_step, like_w, like_wd, like_x, alpha, mode, kind, to_variable,
                 to_compute, from_compute):
    """:func:`foreach_element` where the variable and the value are of the compute dtype
    (no conversion: the CPU loop's fast path; see ``kernels.multi_tensor``)."""
    i = j - start
    if mode == ASSIGN:  # (the words as they are, as foreach_element stores them)
        if kind == COMPUTE_F32:
            store_word(w_address, i, load_word(x_address, i * x_step, like_x), like_wd)
        else:
            store_word(w_address, i, load_word(x_address, i * x_step, like_wd), like_wd)
    elif kind == COMPUTE_F32:
        w = np.uint32(load_word(w_address, i, like_w)).view(np.float32)
        x = np.uint32(load_word(x_address, i * x_step, like_x)).view(np.float32)
        store_word(w_address, i, foreach_bits32(w, x, float32(alpha), mode), like_wd)
    else:
        w = np.uint64(load_word(w_address, i, like_wd)).view(np.float64)
        x = np.uint64(load_word(x_address, i * x_step, like_wd)).view(np.float64)
        store_word(w_address, i, foreach_bits64(w, x, float64(alpha), mode), like_wd)


@element
def foreach_small(j, start, w_address, x_address, x_step, like_w, like_wd, like_x, alpha, mode, kind, to_variable,
                  to_compute, from_compute):
    """:func:`foreach_element` for small-float variables with float32 values or values
    of their own format (``to_variable`` F32_TO_SMALL or SAME; see :func:`small_path`)."""
    i = j - start
    x = uint64(0)
    if mode != SCALE:
        x = uint64(load_word(x_address, i * x_step, like_x))
        if to_variable[0] != SAME:  # float32 -> the variable's words
            x = small_word(x, to_variable)
        if mode == ASSIGN:
            store_word(w_address, i, x, like_wd)
            return
    w = np.uint32(small_bits(load_word(w_address, i, like_w), to_compute)).view(np.float32)
    r = foreach_bits32(w, np.uint32(small_bits(x, to_compute)).view(np.float32), float32(alpha), mode)
    store_word(w_address, i, small_word(r, from_compute), like_wd)


# ------------------------------------------------------------------ optimizers
@element
def clipped(g, scale, clip):
    """The gradient after clipping: times its tensor's ``scale`` (clipping by norm; 1
    where none) and bounded to ``[-clip, clip]`` (clipping by value; inf where none)."""
    g = mul_rn(g, scale)  # (inexact with clipnorm; it feeds Adam's ``g - m``: never fused with it)
    if g > clip:
        return clip
    if g < -clip:
        return -clip
    return g


@element
def sgd_math(w, g, m, lr, momentum, nesterov, has_momentum, decay):
    """Keras's SGD (``decay``: ``weight_decay * lr``, 0 for none, applied first):
    ``m = m * momentum - g * lr``; ``w += m`` (nesterov: ``w += m * momentum - g * lr``);
    without momentum ``w -= g * lr``."""
    if decay != 0:
        w = fma(-w, decay, w)
    if not has_momentum:
        return fma(-g, lr, w), m
    step = -(g * lr)
    m = fma(m, momentum, step)
    if nesterov:
        return w + fma(m, momentum, step), m
    return w + m, m


@element
def adam_math(w, g, m, v, vhat, c1, c2, alpha, epsilon, decay, amsgrad):
    """Keras's Adam (``decay``: ``weight_decay * lr``, 0 for none, applied first):
    ``m += (g - m) * (1 - beta_1)``; ``v += (g*g - v) * (1 - beta_2)``; with amsgrad
    ``vhat = max(vhat, v)`` takes v's place; ``w -= m * alpha / (sqrt(v) + epsilon)``."""
    if decay != 0:
        w = fma(-w, decay, w)
    m = fma(g - m, c1, m)
    v = fma(fma(g, g, -v), c2, v)
    if amsgrad:
        vhat = larger(vhat, v)
        return w - m * alpha / (sqrt(vhat) + epsilon), m, v, vhat
    return w - m * alpha / (sqrt(v) + epsilon), m, v, vhat


@element
def sgd_element(j, start, w_address, g_address, m_address, scale, like_w, like_wd, like_g, like_s,
                lr, momentum, nesterov, has_momentum, decay, clip, kind, gradient, to_compute, from_compute):
    """One element of a fused SGD step (``g``: gradient -> compute bits, ``wc``/``cw``:
    the variable's words <-> compute bits; slots are compute-dtype words)."""
    i = j - start
    gb = loaded(g_address, i, like_g, gradient)
    wb = loaded(w_address, i, like_w, to_compute)
    if kind == COMPUTE_F32:
        m = float32(load_word(m_address, i, like_s)) if has_momentum else float32(0)
        g = clipped(np.uint32(gb).view(np.float32), float32(scale), float32(clip))
        w, m = sgd_math(np.uint32(wb).view(np.float32), g, m, float32(lr), float32(momentum), nesterov,
                        has_momentum, float32(decay))
        if has_momentum:
            store_word(m_address, i, settled32(m), like_s)
        r = f32_bits(w)
    else:
        m = float64(load_word(m_address, i, like_s)) if has_momentum else float64(0)
        g = clipped(np.uint64(gb).view(np.float64), scale, clip)
        w, m = sgd_math(np.uint64(wb).view(np.float64), g, m, lr, momentum, nesterov, has_momentum, decay)
        if has_momentum:
            store_word(m_address, i, settled64(m), like_s)
        r = f64_bits(w)
    store_word(w_address, i, converted(r, from_compute), like_wd)


@element
def sgd_same(j, start, w_address, g_address, m_address, scale, like_w, like_wd, like_g, like_s,
             lr, momentum, nesterov, has_momentum, decay, clip, kind, gradient, to_compute, from_compute):
    """:func:`sgd_element` for float32 variables and gradients: no conversion (the CPU
    loop's fast path; a GPU keeps the general function)."""
    i = j - start
    m = float32(load_word(m_address, i, like_s)) if has_momentum else float32(0)
    g = clipped(np.uint32(load_word(g_address, i, like_g)).view(np.float32), float32(scale), float32(clip))
    w, m = sgd_math(np.uint32(load_word(w_address, i, like_w)).view(np.float32), g, m, float32(lr),
                    float32(momentum), nesterov, has_momentum, float32(decay))
    if has_momentum:
        store_word(m_address, i, settled32(m), like_s)
    store_word(w_address, i, f32_bits(w), like_wd)


@element
def sgd_small(j, start, w_address, g_address, m_address, scale, like_w, like_wd, like_g, like_s,
              lr, momentum, nesterov, has_momentum, decay, clip, kind, gradient, to_compute, from_compute):
    """:func:`sgd_element` for small-float variables with float32 or small-float
    gradients (see :func:`small_path`)."""
    i = j - start
    m = float32(load_word(m_address, i, like_s)) if has_momentum else float32(0)
    g = clipped(np.uint32(operand_bits(load_word(g_address, i, like_g), gradient)).view(np.float32),
                float32(scale), float32(clip))
    w, m = sgd_math(np.uint32(small_bits(load_word(w_address, i, like_w), to_compute)).view(np.float32), g, m,
                    float32(lr), float32(momentum), nesterov, has_momentum, float32(decay))
    if has_momentum:
        store_word(m_address, i, settled32(m), like_s)
    store_word(w_address, i, small_word(f32_bits(w), from_compute), like_wd)


@element
def adam_element(j, start, w_address, g_address, m_address, v_address, vhat_address, scale, like_w, like_wd, like_g,
                 like_s, c1, c2, alpha, epsilon, decay, amsgrad, clip, kind, gradient, to_compute, from_compute):
    """One element of a fused Adam / AdamW step (slots m, v and, with amsgrad, vhat)."""
    i = j - start
    gb = loaded(g_address, i, like_g, gradient)
    wb = loaded(w_address, i, like_w, to_compute)
    if kind == COMPUTE_F32:
        vhat = float32(load_word(vhat_address, i, like_s)) if amsgrad else float32(0)
        g = clipped(np.uint32(gb).view(np.float32), float32(scale), float32(clip))
        w, m, v, vhat = adam_math(np.uint32(wb).view(np.float32), g, float32(load_word(m_address, i, like_s)),
                                  float32(load_word(v_address, i, like_s)), vhat, float32(c1), float32(c2),
                                  float32(alpha), float32(epsilon), float32(decay), amsgrad)
        store_word(m_address, i, settled32(m), like_s)
        store_word(v_address, i, settled32(v), like_s)
        if amsgrad:
            store_word(vhat_address, i, settled32(vhat), like_s)
        r = f32_bits(w)
    else:
        vhat = float64(load_word(vhat_address, i, like_s)) if amsgrad else float64(0)
        g = clipped(np.uint64(gb).view(np.float64), scale, clip)
        w, m, v, vhat = adam_math(np.uint64(wb).view(np.float64), g, float64(load_word(m_address, i, like_s)),
                                  float64(load_word(v_address, i, like_s)), vhat, c1, c2, alpha, epsilon, decay,
                                  amsgrad)
        store_word(m_address, i, settled64(m), like_s)
        store_word(v_address, i, settled64(v), like_s)
        if amsgrad:
            store_word(vhat_address, i, settled64(vhat), like_s)
        r = f64_bits(w)
    store_word(w_address, i, converted(r, from_compute), like_wd)


@element
def adam_same(j, start, w_address, g_address, m_address, v_address, vhat_address, scale, like_w, like_wd, like_g,
              like_s, c1, c2, alpha, epsilon, decay, amsgrad, clip, kind, gradient, to_compute, from_compute):
    """:func:`adam_element` for float32 variables and gradients: no conversion (the CPU
    loop's fast path; a GPU keeps the general function)."""
    i = j - start
    vhat = float32(load_word(vhat_address, i, like_s)) if amsgrad else float32(0)
    g = clipped(np.uint32(load_word(g_address, i, like_g)).view(np.float32), float32(scale), float32(clip))
    w, m, v, vhat = adam_math(np.uint32(load_word(w_address, i, like_w)).view(np.float32), g,
                              float32(load_word(m_address, i, like_s)), float32(load_word(v_address, i, like_s)),
                              vhat, float32(c1),
                              float32(c2), float32(alpha), float32(epsilon), float32(decay), amsgrad)
    store_word(m_address, i, settled32(m), like_s)
    store_word(v_address, i, settled32(v), like_s)
    if amsgrad:
        store_word(vhat_address, i, settled32(vhat), like_s)
    store_word(w_address, i, f32_bits(w), like_wd)


@element
def adam_small(j, start, w_address, g_address, m_address, v_address, vhat_address, scale, like_w, like_wd, like_g,
               like_s, c1, c2, alpha, epsilon, decay, amsgrad, clip, kind, gradient, to_compute, from_compute):
    """:func:`adam_element` for small-float variables with float32 or small-float
    gradients (see :func:`small_path`)."""
    i = j - start
    vhat = float32(load_word(vhat_address, i, like_s)) if amsgrad else float32(0)
    g = clipped(np.uint32(operand_bits(load_word(g_address, i, like_g), gradient)).view(np.float32),
                float32(scale), float32(clip))
    w, m, v, vhat = adam_math(np.uint32(small_bits(load_word(w_address, i, like_w), to_compute)).view(np.float32), g,
                              float32(load_word(m_address, i, like_s)), float32(load_word(v_address, i, like_s)),
                              vhat, float32(c1), float32(c2), float32(alpha), float32(epsilon), float32(decay),
                              amsgrad)
    store_word(m_address, i, settled32(m), like_s)
    store_word(v_address, i, settled32(v), like_s)
    if amsgrad:
        store_word(vhat_address, i, settled32(vhat), like_s)
    store_word(w_address, i, small_word(f32_bits(w), from_compute), like_wd)


# ---------------------------------------------------------------------------- kernels
# Tables (see kernels.multi_tensor): chunk_tensor, chunk_first, chunk_count per chunk;
# per tensor its first flat index (tensor_start) and its arrays' byte addresses.
_CHUNKS = (Array("chunk_tensor", word="int64"), Array("chunk_first", word="int64"),
           Array("chunk_count", word="int64"))
_FLOATS = ("uint32", "uint16", "uint8", "float64", "uint64")  # (what casting.source_words gives a float)
_WORDS = ("uint32", "uint16", "uint8", "uint64")  # destination words of a float variable
_SLOTS = ("float32", "float64")
_CONVERSIONS = (Scalar("to_variable", "conversion"), Scalar("to_compute", "conversion"),
                Scalar("from_compute", "conversion"))
_GRADIENT = (Scalar("gradient", "conversion"), Scalar("to_compute", "conversion"), Scalar("from_compute", "conversion"))


def _address(name):
    return Array(name, word="uint64")


foreach = kernel(
    "foreach", "chunks", foreach_element,
    (*_CHUNKS, Array("tensor_start", word="int64"), _address("tensor_variable"), _address("tensor_value"),
     Array("tensor_step", word="int64"), Array("like_w", "type", words=_FLOATS),
     Array("like_wd", "type", words=_WORDS), Array("like_x", "type", words=_FLOATS)),
    (Scalar("alpha", "f64"), Scalar("mode", "i64"), Scalar("kind", "i64"), *_CONVERSIONS, Scalar("same", "u32"),
     Scalar("small", "u32")),
    row=("tensor_start", "tensor_variable", "tensor_value", "tensor_step"),
    fast=(("same", foreach_same), ("small", foreach_small)), tuples=True,
    doc="vs.foreach: every variable of a group <- alpha * value, + alpha * value, or * alpha.")

sgd = kernel(
    "sgd", "chunks", sgd_element,
    (*_CHUNKS, Array("tensor_start", word="int64"), _address("tensor_variable"), _address("tensor_gradient"),
     _address("tensor_momentum"), Array("tensor_scale", word="float64"), Array("like_w", "type", words=_FLOATS),
     Array("like_wd", "type", words=_WORDS), Array("like_g", "type", words=_FLOATS),
     Array("like_s", "type", words=_SLOTS)),
    (Scalar("lr", "f64"), Scalar("momentum", "f64"), Scalar("nesterov", "u32"), Scalar("has_momentum", "u32"),
     Scalar("decay", "f64"), Scalar("clip", "f64"), Scalar("kind", "i64"), *_GRADIENT, Scalar("same", "u32"),
     Scalar("small", "u32")),
    row=("tensor_start", "tensor_variable", "tensor_gradient", "tensor_momentum", "tensor_scale"), tuples=True,
    fast=(("same", sgd_same), ("small", sgd_small)),
    doc="A fused SGD step (weight decay, momentum, nesterov) over a group of variables.")

adam = kernel(
    "adam", "chunks", adam_element,
    (*_CHUNKS, Array("tensor_start", word="int64"), _address("tensor_variable"), _address("tensor_gradient"),
     _address("tensor_m"), _address("tensor_v"), _address("tensor_vhat"), Array("tensor_scale", word="float64"),
     Array("like_w", "type", words=_FLOATS), Array("like_wd", "type", words=_WORDS),
     Array("like_g", "type", words=_FLOATS), Array("like_s", "type", words=_SLOTS)),
    (Scalar("c1", "f64"), Scalar("c2", "f64"), Scalar("alpha", "f64"), Scalar("epsilon", "f64"),
     Scalar("decay", "f64"), Scalar("amsgrad", "u32"), Scalar("clip", "f64"), Scalar("kind", "i64"), *_GRADIENT,
     Scalar("same", "u32"), Scalar("small", "u32")),
    row=("tensor_start", "tensor_variable", "tensor_gradient", "tensor_m", "tensor_v", "tensor_vhat",
         "tensor_scale"), tuples=True, fast=(("same", adam_same), ("small", adam_small)),
    doc="A fused Adam / AdamW step (weight decay, moments, bias correction, amsgrad) over a group of variables.")

KERNELS = (foreach, sgd, adam)
