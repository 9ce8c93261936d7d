"""Tier c: every CUDA kernel compiles for a real GPU target (sm_90 PTX), and the 32-bit
element math stays 32-bit.

This needs NVVM (installed with ``numba-cuda[cu13]``, the test extra), not a GPU: it is
the check of the real CUDA compiler on hosts that have none. The simulator does not
type-check kernels the way the CUDA target does.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from helpers import SIMULATOR, strongly_connected_components

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
from varstore.kernels import updates as U  # noqa: E402
from varstore.kernels.philox import philox4x32_10  # noqa: E402

FMT = types.UniTuple(types.uint32, 8)
ALL_KERNELS = K.KERNELS + R.KERNELS + S.KERNELS + M.KERNELS + U.KERNELS

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
def _sm90(sm90_without_a_gpu):
    """Every test here compiles for sm_90 (conftest's ``sm90_without_a_gpu``)."""


PTX_TARGET = "ptx:9.0"


def _nvjitlink_available() -> bool:
    from varstore.kernels.build import link_cubin

    return link_cubin(".version 8.0\n.target sm_90\n.address_size 64\n", 9, 0) is not None
_PARAM_BYTES = {"u64": 8, "s64": 8, "b64": 8, "f64": 8, "u32": 4, "s32": 4, "b32": 4, "f32": 4}
_TYPE_BYTES = {"uint64": 8, "int64": 8, "float64": 8, "uint32": 4, "float32": 4}


def _ptx(kernel, spec=None):
    return kernel.compiled(PTX_TARGET, spec or kernel.examples()[0])


def test_every_kernel_module_declares_its_kernels():
    """Loops are generated from declarations: no kernel module writes a CPU or CUDA loop
    by hand (the templates, with the wide path of their CUDA loop, are the one place that
    does)."""
    import pathlib

    import varstore.kernels as package

    folder = pathlib.Path(package.__file__).parent
    for path in sorted(folder.glob("*.py")):
        if path.name in ("templates.py", "wide.py"):
            continue
        text = path.read_text()
        assert "cuda.grid(" not in text and "cuda.gridsize(" not in text, path.name
        assert "@cpu_kernel" not in text and "@cuda_kernel" not in text, path.name
    for kernel in ALL_KERNELS:
        assert kernel.examples(), kernel.name


@needs_nvvm
@pytest.mark.parametrize("kernel", ALL_KERNELS, ids=lambda k: k.name)
def test_kernel_compiles_for_sm90(kernel):
    """Every specialization the schema declares compiles to one sm_90 entry whose
    parameters are the flat scalars the launch passes, in width and number.

    The region, scatter and multi-tensor kernels have no integer division or remainder
    at all: not in the index math (magic numbers), not in the grid-stride loops (running
    indices, where numba's ``range`` divides to get its trip count). The elementwise and
    gather kernels keep one, outside their steps: LLVM unrolls their short scalar loop at
    run time and divides once per thread, before its first index, to count the trips
    (:func:`test_steps_have_no_division` checks the steps)."""
    for spec in kernel.examples():
        loop = _ptx(kernel, spec)
        assert ".target sm_90" in loop.ptx
        if kernel.template not in ("elementwise", "gather"):
            assert DIVISION.findall(loop.ptx) == [], (kernel.name, spec)
        header = loop.ptx[loop.ptx.index(".entry " + loop.entry):]
        header = header[:header.index(")")]
        widths = [_PARAM_BYTES[t] for t in re.findall(r"\.param\s+\.(\w+)", header)]
        assert widths == [_TYPE_BYTES[t] for t in loop.params], (kernel.name, spec)
        if _nvjitlink_available():  # the cubin the driver loads without a PTX JIT
            assert loop.cubin is not None and loop.cubin[:4] == b"\x7fELF", (kernel.name, spec)


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
@pytest.mark.parametrize("kernel", [R.normal_words, R.truncated_words, R.normal_f64, R.uniform_words],
                         ids=lambda k: k.name)
def test_random_kernels_use_only_correctly_rounded_operations(kernel):
    """Why CPU and GPU draw the same bits: the device code has no approximate instructions
    and calls no math library; division, sqrt and conversions round to nearest."""
    ptx = _ptx(kernel).ptx
    assert not re.search(r"\.approx\b|\bex2\.|\blg2\.|\bsin\.|\bcos\.|\brcp\.|\bcall\b", ptx)
    float_ops = re.findall(r"\b(?:div|sqrt)\.(\w+)\.f(?:32|64)\b", ptx)
    assert all(mode == "rn" for mode in float_ops), float_ops


def _fusable_products(ptx: str) -> list:
    """The ``add``/``sub`` instructions without a rounding mode that read the result of a
    ``mul`` without one, directly or through ``mov``s: pairs ptxas may fuse into an fma."""
    products = set()
    for line in ptx.splitlines():
        op = re.match(r"\s*(mul|mov)\.(?:f32|f64|b32|b64)\s+(%\w+),\s*(%?\w+)", line)
        if op and (op.group(1) == "mul" or op.group(3) in products):
            products.add(op.group(2))
    return [line.strip() for line in ptx.splitlines()
            if re.match(r"\s*(?:add|sub)\.f(?:32|64)\s", line)
            and any(register in products for register in re.findall(r"%\w+", line)[1:])]


@needs_nvvm
@pytest.mark.parametrize("kernel", U.KERNELS, ids=lambda k: k.name)
def test_update_kernels_round_like_the_cpu(kernel):
    """Why the optimizer steps give the CPU's bits: every multiply-add is an explicit
    fma (NVVM would fuse a plain ``a * b + c`` on its own, and the CPU does not), the
    other float operations round to nearest, and nothing is approximate or a library
    call."""
    ptx = _ptx(kernel).ptx
    assert not re.search(r"\.approx\b|\.ftz\b|\brcp\.|\bcall\b", ptx)
    modes = re.findall(r"\b(?:add|sub|mul|fma|div|sqrt)\.(\w+)\.f(?:32|64)\b", ptx)
    assert modes and all(mode == "rn" for mode in modes), sorted(set(modes))
    assert re.search(r"\bfma\.rn\.f32\b", ptx)
    # A multiply without a rounding mode may be fused by ptxas with an add without one
    # that it feeds: no such product reaches such an add or subtract, directly or through
    # moves (clipping's inexact scale is a mul.rn).
    assert _fusable_products(ptx) == [], kernel.name
    if kernel is not U.foreach:
        assert re.search(r"\bmul\.rn\.f32\b", ptx)
    if kernel is U.adam:
        assert re.search(r"\bsqrt\.rn\.f32\b", ptx) and re.search(r"\bdiv\.rn\.f32\b", ptx)


@needs_nvvm
@pytest.mark.parametrize("kernel", U.KERNELS, ids=lambda k: k.name)
def test_update_kernels_choose_their_nan_bits(kernel):
    """Why a NaN an update computes has the CPU's bits on a GPU (whose float operations
    give 0x7FFFFFFF for any NaN): the optimizers select each number they store (the
    variable; Adam's m, v and vhat, SGD's momentum) against NumPy's NaN, 0x7FC00000 or
    0x7FF8000000000000 by compute dtype: one ``selp`` with the constant per store and
    per compute branch today (a compiler that kept the constant in one register would
    fail this count with correct code; the byte comparisons of
    tests/test_update_kernels.py on a GPU are the proof). ``foreach`` selects the x86
    default NaN (0xFFC00000 or 0xFFF8000000000000) where neither operand is a NaN. And no
    ``max`` or ``min`` instruction drops a NaN (amsgrad's maximum propagates it, as
    NumPy's does)."""
    # (foreach selects integer words: PTX writes them as signed decimal or hex immediates)
    constants = {U.foreach: (r"-4194304|0[xX][fF]{2}[cC]00000\b|4290772992",
                             r"-2251799813685248|0[xX][fF]{3}8000000000000\b|18444492273895866368"),
                 U.sgd: (r"0f7FC00000", r"0d7FF8000000000000"), U.adam: (r"0f7FC00000", r"0d7FF8000000000000")}[kernel]
    stored = {U.foreach: 1, U.sgd: 2, U.adam: 4}[kernel]
    for spec in kernel.examples():
        ptx = _ptx(kernel, spec).ptx
        assert all(len(re.findall(c, ptx)) >= stored for c in constants), spec
        assert not re.search(r"\b(?:max|min)\.f(?:32|64)\b", ptx), spec


@needs_nvvm
def test_unpack_chooses_its_nan_bits():
    """The multi-tensor unpack (``sync()``'s sums and means) selects the x86 default NaN
    where its sum is NaN and neither operand is (``cast.x86_nan32``/``x86_nan64``), in
    both of its float branches: a GPU's own add would store 0x7FFFFFFF."""
    for spec in M.unpack.examples():
        ptx = _ptx(M.unpack, spec).ptx
        assert re.search(r"-4194304|0[xX][fF]{2}[cC]00000\b|4290772992", ptx), spec
        assert re.search(r"-2251799813685248|0[xX][fF]{3}8000000000000\b|18444492273895866368", ptx), spec


# Integer division and remainder instructions, of any width.
DIVISION = re.compile(r"\b(?:div|rem)\.[su](?:32|64)\b")


def _step_ptx(kernel, spec, name: str = "step") -> str:
    """The PTX of a kernel's generated per-element ``step`` (index math, loads, element
    call, stores), or its wide ``vstep``, compiled alone as a device function (``vstep``
    of a kernel with a stepped operand also takes that operand's one word)."""
    from numba import cuda

    from varstore.kernels import build, templates

    module, _ = build._import_generated(kernel, spec, PTX_TARGET)
    arrays = len(templates.loop_arrays(kernel))
    scalars = build.cpu_signature(kernel, spec).args[2 + arrays:]
    argtypes = (types.int64,) + (types.uint64,) * arrays + tuple(scalars)
    if name != "step":
        words = dict(zip(kernel.array_names, spec.words, strict=True))
        argtypes += tuple(getattr(types, words[a.name]) for a in templates.loop_arrays(kernel) if a.step)
    ptx, _ = cuda.compile_ptx(getattr(module, name).py_func, argtypes, device=True, cc=(9, 0))
    return ptx


@needs_nvvm
@pytest.mark.parametrize("kernel", [k for k in ALL_KERNELS if k.template in ("elementwise", "gather")],
                         ids=lambda k: k.name)
def test_steps_have_no_division(kernel):
    """The per-index work of the elementwise and gather kernels (the scalar ``step`` and
    the wide ``vstep``) has no integer division or remainder."""
    from varstore.kernels import build

    spec = kernel.examples()[0]
    module, _ = build._import_generated(kernel, spec, PTX_TARGET)
    for name in ["step", "vstep"] if hasattr(module, "vstep") else ["step"]:
        assert DIVISION.findall(_step_ptx(kernel, spec, name)) == [], (kernel.name, name)


@needs_nvvm
@pytest.mark.parametrize("kernel", [S.copy_region, S.copy_region_converting, S.scatter_indexed, S.fill_region],
                         ids=lambda k: k.name)
def test_region_kernels_unravel_without_division(kernel):
    """A region element's offsets take no division on either path: each axis divides by
    its extent through a magic multiplier, ``mul.hi.u32`` for arrays under 2**31
    elements, ``mul.hi.u64`` above."""
    for spec in kernel.examples(axes=3):
        ptx = _step_ptx(kernel, spec)
        assert DIVISION.findall(ptx) == [], (kernel.name, spec)
        assert re.search(r"\bmul\.hi\.u32\b", ptx) and re.search(r"\bmul\.hi\.u64\b", ptx), (kernel.name, spec)


@needs_nvvm
def test_region_copy_has_a_32bit_unravel():
    """Arrays under 2**31 elements unravel element numbers with a 32-bit multiply-high,
    and the whole kernel, its grid-stride loop included, has no division."""
    ptx = _ptx(S.copy_region, S.copy_region.examples(axes=3)[0]).ptx
    assert re.search(r"\bmul\.hi\.u32\b", ptx)
    assert DIVISION.findall(ptx) == []


# ------------------------------------------------------------------ wide access
_VECTOR_OPS = {  # bytes per access -> the PTX operand types that move that many
    16: r"v4\.[usbf]32|v2\.[usbf]64",
    8: r"v2\.[usbf]32|[usbf]64",
    4: r"[usbf]32|v4\.[usb]8|v2\.[usbf]16",
}


@needs_nvvm
@pytest.mark.parametrize("kernel", [k for k in ALL_KERNELS if k.template == "elementwise"], ids=lambda k: k.name)
def test_elementwise_loops_load_and_store_wide(kernel):
    """Where the wide path applies, every array moves its share of 16 bytes per index
    group in single vector instructions (``ld.global.v4.u32``, ``st.global.v2.f64``...):
    the narrowest array 16 bytes per access. A stepped operand (step 0 on the wide path)
    is read once, before the loop, and has no share."""
    from varstore.kernels.templates import loop_arrays
    from varstore.kernels.wide import VECTOR_BYTES, vector_width

    for spec in kernel.examples():
        v = vector_width(kernel, spec)
        words = dict(zip(kernel.array_names, spec.words, strict=True))
        arrays = [a for a in loop_arrays(kernel) if not a.step]
        sizes = {a.name: np.dtype(words[a.name]).itemsize * a.width for a in arrays}
        ptx = _ptx(kernel, spec).ptx
        assert min(VECTOR_BYTES, v * min(sizes.values())) == VECTOR_BYTES, (kernel.name, spec)
        for a in arrays:
            nbytes = min(VECTOR_BYTES, v * sizes[a.name])
            if nbytes < 4:
                continue
            ops = ["ld"] if a.role == "in" else ["st"] if a.role == "out" else ["ld", "st"]
            for op in ops:
                assert re.search(rf"\b{op}\.global\.(?:{_VECTOR_OPS[nbytes]})\b", ptx), (kernel.name, spec, a.name, op)


_WIDE_REGION_KERNELS = [k for k in ALL_KERNELS if k.template == "region" and (k.options.get("wide")
                                                                                or k.options.get("rows"))]


@needs_nvvm
@pytest.mark.parametrize("kernel", _WIDE_REGION_KERNELS, ids=lambda k: k.name)
def test_contiguous_regions_load_and_store_wide(kernel):
    """A region kernel with the option ``wide`` or ``rows`` moves its share of 16 bytes per index
    group in single vector instructions on its path for regions that both arrays walk
    with stride 1 (option ``wide``, one axis: ``v[a:b] = x``, ``v[0, :] = row``) or for
    contiguous rows (option ``rows``, several axes: ``v[:, 8:520] = b``, a warp per row);
    the loops of those paths have no 64-bit multiply and no division. The general region
    kernels compiled for several axes have no vector access (their strided loops keep
    few registers: the rows go to the row kernels)."""
    from varstore.kernels.templates import loop_arrays
    from varstore.kernels.wide import VECTOR_BYTES, vector_width

    assert {S.copy_region, S.fill_region, S.copy_rows, S.fill_rows, *S.REGION_CASTS.values()} == set(
        _WIDE_REGION_KERNELS)
    vector = re.compile(r"\b(?:ld|st)\.global\.v[24]\.")
    for axes in (2, 3) if kernel.options.get("rows") else (1,):
        for spec in kernel.examples(axes=axes)[:2] if axes > 1 else kernel.examples(axes=1):
            v = vector_width(kernel, spec)
            words = dict(zip(kernel.array_names, spec.words, strict=True))
            sizes = {a.name: np.dtype(words[a.name]).itemsize * a.width for a in loop_arrays(kernel)}
            assert v * min(sizes.values()) >= VECTOR_BYTES, (kernel.name, spec)
            ptx = _ptx(kernel, spec).ptx
            for a in loop_arrays(kernel):
                nbytes = min(VECTOR_BYTES, v * sizes[a.name])
                op = "st" if a.role == "out" else "ld"
                assert re.search(rf"\b{op}\.global\.(?:{_VECTOR_OPS[nbytes]})\b", ptx), (kernel.name, spec, a.name)
            # One axis: the loops with vector accesses. Several: a row's offsets take a
            # few 64-bit multiplies per row, which LLVM may place next to a row's scalar
            # head or tail (fewer than 2 groups' elements per row); so the blocks with
            # vector accesses, where the groups' index math is.
            loops = [body for body in _loops(ptx) if any(vector.search(line) for line in body)]
            assert loops, (kernel.name, spec)
            if axes > 1:
                loops = [block for loop in _loops(ptx, by_block=True) for block in loop
                         if any(vector.search(line) for line in block)]
            for body in loops:
                assert WIDE_MULTIPLY_OR_DIVISION.findall("\n".join(body)) == [], (kernel.name, spec)
    if kernel.options.get("wide"):
        assert not vector.search(_ptx(kernel, kernel.examples(axes=2)[0]).ptx), kernel.name


@needs_nvvm
def test_wide_loops_link_without_spills():
    """The wide steps keep their values in registers: no local-memory spills (ptxas's
    report through nvJitLink), for the kernels with the most indices per thread."""
    if not _nvjitlink_available():
        pytest.skip("nvJitLink is not installed")
    from varstore.kernels.build import cubin_resources
    from varstore.kernels.declare import Specialization

    for kernel, words in [(K.encode_f32, ("uint32", "uint8")), (K.decode_f64, ("uint8", "float64")),
                          (R.normal_words, ("uint8",)), (K.convert, ("float32", "uint8")),
                          (S.REGION_CASTS["encode_f32"], ("uint8", "uint32")), (S.copy_region, ("uint8", "uint8")),
                          (S.copy_rows, ("uint8", "uint8"))]:
        axes = 2 if kernel.options.get("rows") else 1 if kernel.template == "region" else 0
        loop = _ptx(kernel, Specialization(words, axes))
        report = cubin_resources(loop.ptx, 9, 0)
        assert report["spill_stores"] == 0 and report["spill_loads"] == 0, (kernel.name, report)
        assert 0 < report["registers"] <= 128, (kernel.name, report)


# ------------------------------------------------------------------ index math
# 64-bit multiplies (three IMADs each on a GPU) and integer division, of any width.
WIDE_MULTIPLY_OR_DIVISION = re.compile(r"\b(?:mul\.lo\.[su]64|mad\.lo\.[su]64|(?:div|rem)\.[su](?:32|64))\b")


def _loops(ptx: str, by_block: bool = False) -> list:
    """The loops of a kernel's PTX that load or store global memory (the per-element
    work), each as the lines of its basic blocks: the cycles (strongly connected
    components) of the control-flow graph, wherever the blocks are laid out; with
    ``by_block``, each loop as its basic blocks that load or store global memory.
    Only the entry's own code: a callee's (``call``) is not followed, so the test that
    uses this also requires the loops to call nothing."""
    blocks, jumps, falls, labels = [[]], [[]], [True], {}
    for line in ptx[ptx.index(".entry "):].splitlines():
        text = line.strip()
        label = re.fullmatch(r"(\$L__BB\d+_\d+):", text)
        if label:
            if blocks[-1]:
                blocks.append([]), jumps.append([]), falls.append(True)
            labels[label.group(1)] = len(blocks) - 1
            continue
        blocks[-1].append(text)
        target = re.search(r"\bbra(?:\.uni)?\s+(\$L__BB\d+_\d+);", text)
        if target or re.match(r"(?:@!?%p\d+\s+)?(?:ret|exit);", text):
            jumps[-1] += [target.group(1)] if target else []
            falls[-1] = text.startswith("@")  # a conditional branch also falls through
            blocks.append([]), jumps.append([]), falls.append(True)
    successors = [[labels[t] for t in jumps[v]] + ([v + 1] if falls[v] and v + 1 < len(blocks) else [])
                  for v in range(len(blocks))]

    graph = dict(enumerate(successors))
    found = [c for c in strongly_connected_components(graph) if len(c) > 1 or c[0] in successors[c[0]]]
    # (global or generic addresses: not parameters, locals, shared or constant memory)
    memory = re.compile(r"\b(?:ld|st)\.(?!param|local|shared|const)")
    touching = [[blocks[v] for v in sorted(c)] for c in found]
    touching = [loop for loop in touching if any(memory.search(line) for block in loop for line in block)]
    if by_block:
        return [[block for block in loop if any(memory.search(line) for line in block)] for loop in touching]
    return [[line for block in loop for line in block] for loop in touching]


@needs_nvvm
@pytest.mark.parametrize("kernel", [k for k in ALL_KERNELS if k.template == "elementwise"], ids=lambda k: k.name)
def test_elementwise_loops_index_without_64bit_multiplies(kernel):
    """The per-element loops of the elementwise kernels (the wide groups, the scalar head
    and tail) walk their arrays with running 64-bit addresses, one add each per trip:
    no 64-bit multiply and no division. The random fills had one 64-bit multiply per
    Philox call until its rounds multiplied through ``intrinsics.mulwide32``: LLVM turned
    the multiply of the index's low word into a 64x64 one. A kernel with a stepped
    operand is checked on its wide loop (its steps 0): its general loop, for other
    steps, multiplies the index by the step."""
    stepped = any(a.step for a in kernel.arrays)
    vector = re.compile(r"\b(?:ld|st)\.global\.v[24]\.")
    for spec in kernel.examples():
        loops = _loops(_ptx(kernel, spec).ptx)
        if stepped:
            loops = [body for body in loops if any(vector.search(line) for line in body)]
        assert loops, (kernel.name, spec)
        for body in loops:
            found = WIDE_MULTIPLY_OR_DIVISION.findall("\n".join(body))
            assert found == [], (kernel.name, spec, found)
            assert not any(re.match(r"(?:@!?%p\d+\s+)?call\b", line) for line in body), (kernel.name, spec)


def test_cached_ptx_and_cubins_are_named_by_the_toolkit_that_built_them(monkeypatch):
    """PTX and cubins on disk carry a tag of the CUDA toolkit's wheel versions and
    ``CUDA_HOME``: an image built by another toolkit (CUDA 13's PTX, which a CUDA 12
    driver refuses) is never loaded from the same cache folder."""
    import importlib.metadata

    from varstore.kernels import _targets

    tag = _targets.toolkit_tag.__wrapped__()
    assert re.fullmatch(r"[0-9a-f]{8}", tag) and tag == _targets.toolkit_tag.__wrapped__()
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda name: "12.9.0" if name == "nvidia-nvjitlink" else real(name))
    other_wheels = _targets.toolkit_tag.__wrapped__()
    monkeypatch.setattr(importlib.metadata, "version", real)
    monkeypatch.setenv("CUDA_HOME", "/opt/cuda-12.4")
    other_home = _targets.toolkit_tag.__wrapped__()
    monkeypatch.delenv("CUDA_HOME")
    monkeypatch.setattr(_targets, "_libraries", lambda: "nvvm=/usr/local/cuda-12.4/nvvm/lib64/libnvvm.so:1:2")
    other_library = _targets.toolkit_tag.__wrapped__()  # (a system toolkit: no wheel, no variable)
    assert len({tag, other_wheels, other_home, other_library}) == 4


@needs_nvvm
def test_a_ptx_build_writes_its_images_under_the_toolkit_tag(tmp_path, monkeypatch):
    from varstore.kernels import _targets, build

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    loop = build.compile_loop(K.encode_f32, PTX_TARGET, K.encode_f32.examples()[0])  # (not the loop kept in memory)
    written = sorted(p.name for p in tmp_path.rglob("*.sm90.*"))
    assert written and all(f".sm90.{_targets.toolkit_tag()}." in name for name in written), written
    assert any(name.endswith(".ptx") for name in written) and loop.ptx
