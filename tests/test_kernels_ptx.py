"""Tier c: every CUDA kernel compiles for a real GPU target (sm_90 PTX), and the 32-bit
element math stays 32-bit.

This needs NVVM (installed with ``numba-cuda[cu13]``, the test extra), not a GPU: it is
the check of the real CUDA compiler on hosts that have none. The simulator does not
type-check kernels the way the CUDA target does.
"""

from __future__ import annotations

import re

import pytest

from helpers import SIMULATOR

pytestmark = [
    pytest.mark.kernels,
    pytest.mark.skipif(SIMULATOR, reason="the simulator replaces numba.cuda's compiler"),
]

numba = pytest.importorskip("numba")
from numba import types  # noqa: E402

from varstore.kernels import cast as K  # noqa: E402
from varstore.kernels import multi_tensor as M  # noqa: E402
from varstore.kernels import random_fill as R  # noqa: E402
from varstore.kernels import strided as S  # noqa: E402
from varstore.kernels.philox import philox4x32_10  # noqa: E402

FMT = types.UniTuple(types.uint32, 8)
A = {name: getattr(types, name)[::1] for name in
     ("uint8", "uint16", "uint32", "uint64", "int8", "int32", "int64", "float32", "float64", "boolean")}

SIGNATURES = {
    K.encode_f32: [(A["uint32"], A["uint16"], FMT), (A["uint32"], A["uint8"], FMT)],
    K.encode_f64: [(A["float64"], A["uint16"], FMT), (A["int64"], A["uint8"], FMT), (A["boolean"], A["uint16"], FMT)],
    K.decode: [(A["uint16"], A["uint32"], FMT), (A["uint8"], A["uint32"], FMT)],
    K.decode_f64: [(A["uint16"], A["float64"], FMT), (A["uint8"], A["float64"], FMT)],
    K.transcode: [(A["uint16"], A["uint8"], FMT, FMT), (A["uint8"], A["uint16"], FMT, FMT)],
    K.float_to_int: [(A["float32"], A["int8"], types.int64, types.int64), (A["float64"], A["int64"], types.int64, types.int64)],
    K.float_to_uint64: [(A["float64"], A["uint64"])],
    K.widen_f32: [(A["uint32"], A["float64"])],
    K.narrow_f64: [(A["float64"], A["uint32"])],
    K.accumulate: [(A["uint16"], A["uint16"], types.int64, FMT), (A["uint8"], A["uint8"], types.int64, FMT)],
}
_WORDS = (types.int64, types.uint32, types.uint32, types.float32, types.float32, types.boolean, FMT)
_F64 = (types.int64, types.uint32, types.uint32, types.float64, types.float64)
for _kernel in (R.uniform_words, R.normal_words, R.truncated_words):
    SIGNATURES[_kernel] = [(A["uint32"], *_WORDS), (A["uint16"], *_WORDS), (A["uint8"], *_WORDS)]
for _kernel in (R.uniform_f64, R.normal_f64, R.truncated_f64_kernel):
    SIGNATURES[_kernel] = [(A["float64"], *_F64)]
_AXES = types.UniTuple(types.int64, 2)
SIGNATURES[S.copy_region] = [
    (A["uint32"], types.int64, _AXES, A["uint32"], types.int64, _AXES, _AXES, types.int64, types.int64),
    (A["uint16"], types.int64, types.UniTuple(types.int64, 4), A["uint16"], types.int64,
     types.UniTuple(types.int64, 4), types.UniTuple(types.int64, 4), types.int64, types.int64),
]
_CONVERSION = (types.int64, FMT, FMT, types.int64, types.int64, types.uint64)  # route, formats, lo, hi, mask
SIGNATURES[S.copy_region_converting] = [
    (A["uint16"], types.int64, _AXES, A["uint32"], types.int64, _AXES, _AXES, types.int64, types.int64, *_CONVERSION),
    (A["uint8"], types.int64, _AXES, A["float64"], types.int64, _AXES, _AXES, types.int64, types.int64, *_CONVERSION),
    (A["uint32"], types.int64, _AXES, A["int8"], types.int64, _AXES, _AXES, types.int64, types.int64, *_CONVERSION),
]
SIGNATURES[S.scatter_indexed] = [(A["uint16"], A["int64"], A["uint16"], _AXES, _AXES, *_CONVERSION),
                                 (A["uint64"], A["int64"], A["boolean"], _AXES, _AXES, *_CONVERSION)]
SIGNATURES[S.gather_indexed] = [(A["uint32"], A["int64"], A["uint32"])]
_TABLE = A["int64"]
_STAGE_CONVERSION = types.Tuple(_CONVERSION)
SIGNATURES[M.pack] = [
    (A[staging], _TABLE, _TABLE, _TABLE, A["uint64"], _TABLE, _TABLE, _TABLE, A[like], types.int64, _STAGE_CONVERSION)
    for staging, like in (("uint32", "uint16"), ("uint32", "uint32"), ("uint64", "uint64"), ("uint32", "int8"))
]
SIGNATURES[M.unpack] = [
    (A[staging], _TABLE, _TABLE, _TABLE, A["uint64"], _TABLE, _TABLE, A[src], A[dst], types.int64, types.int64,
     _STAGE_CONVERSION, _STAGE_CONVERSION)
    for staging, src, dst in (("uint32", "uint16", "uint16"), ("uint32", "uint32", "uint32"),
                              ("uint64", "uint64", "uint64"), ("uint32", "int8", "uint8"))
]
ALL_KERNELS = K.KERNELS + R.KERNELS + S.KERNELS + M.KERNELS

# Integer ALU instructions on 64-bit operands (address arithmetic uses add.s64 too, so the
# check is made on the element functions alone, compiled as device functions).
WIDE_INTEGER_OPS = re.compile(r"\b(?:add|sub|mul\.lo|mul\.wide|and|or|xor|not|shl|shr|selp|min|max)\.[subt]64\b")


def _nvvm_available() -> bool:
    try:
        from numba import cuda

        cuda.compile_ptx(lambda x: None, (types.int32,), device=True, cc=(9, 0))
        return True
    except Exception:
        return False


needs_nvvm = pytest.mark.skipif(
    not SIMULATOR and not _nvvm_available(), reason="NVVM is not installed (pip install numba-cuda[cu13])"
)


@pytest.fixture(autouse=True)
def sm90_without_a_gpu(monkeypatch):
    """numba-cuda compiles overloads (e.g. scalar ``.view``) for the *current* device's
    compute capability; with no GPU there is none, so stand in an sm_90 one."""
    import numba.cuda.dispatcher as dispatcher

    class _Sm90:
        compute_capability = (9, 0)

    monkeypatch.setattr(dispatcher, "get_current_device", lambda: _Sm90())


def test_every_kernel_has_signatures_here():
    assert set(SIGNATURES) == set(ALL_KERNELS)


@needs_nvvm
@pytest.mark.parametrize("kernel", ALL_KERNELS, ids=lambda k: k.name)
def test_kernel_compiles_for_sm90(kernel):
    for argtypes in SIGNATURES[kernel]:
        ptx = kernel.cuda.ptx(argtypes, cc=(9, 0))
        assert ".target sm_90" in ptx and ".entry" in ptx


@needs_nvvm
@pytest.mark.parametrize(
    "element, argtypes",
    [
        (K.encode_from_f32_bits, (types.uint32, FMT)),
        (K.decode_to_f32_bits, (types.uint16, FMT)),
        (K.decode_to_f32_bits, (types.uint8, FMT)),
        (K.add_in_format, (types.uint16, types.uint16, types.int64, FMT)),
    ],
    ids=["encode_from_f32_bits", "decode_to_f32_bits-u16", "decode_to_f32_bits-u8", "add_in_format"],
)
def test_32bit_element_math_stays_32bit(element, argtypes):
    from numba import cuda

    ptx, _ = cuda.compile_ptx(element.py_func, argtypes, device=True, cc=(9, 0))
    body = ptx[ptx.index("{"):]
    wide = sorted(set(WIDE_INTEGER_OPS.findall(body)))
    assert wide == [], f"64-bit integer ops in {element.py_func.__name__}: {wide}"


@needs_nvvm
def test_philox_multiplies_are_single_32x32_to_64_instructions():
    """Philox's 20 multiplies are mul.wide.u32 (its shr.u64 by 32 takes the high half,
    which ptxas folds into the same IMAD.WIDE), never a 64x64 multiply."""
    from numba import cuda

    ptx, _ = cuda.compile_ptx(philox4x32_10.py_func, (types.uint32,) * 6, device=True, cc=(9, 0))
    wide = len(re.findall(r"\bmul\.(?:wide|hi)\.u32\b", ptx))
    assert wide >= 20, f"expected 20 32x32->64 multiplies (2 per round), found {wide}"
    assert not re.search(r"\bmul\.lo\.[su]64\b", ptx)



@needs_nvvm
@pytest.mark.parametrize("kernel", [R.normal_words, R.truncated_words, R.normal_f64, R.uniform_words], ids=lambda k: k.name)
def test_random_kernels_use_only_correctly_rounded_operations(kernel):
    """Why CPU and GPU draw the same bits: the device code has no approximate instructions
    and calls no math library; division, sqrt and conversions round to nearest."""
    ptx = kernel.cuda.ptx(SIGNATURES[kernel][0], cc=(9, 0))
    assert not re.search(r"\.approx\b|\bex2\.|\blg2\.|\bsin\.|\bcos\.|\brcp\.|\bcall\b", ptx)
    float_ops = re.findall(r"\b(?:div|sqrt)\.(\w+)\.f(?:32|64)\b", ptx)
    assert all(mode == "rn" for mode in float_ops), float_ops


@needs_nvvm
def test_region_copy_has_a_32bit_unravel():
    """Arrays under 2**31 elements unravel element numbers with 32-bit division."""
    ptx = S.copy_region.cuda.ptx(SIGNATURES[S.copy_region][0], cc=(9, 0))
    assert re.search(r"\bdiv\.u32\b", ptx) and re.search(r"\brem\.u32\b", ptx)
