"""Tier c: the multi-tensor pack/unpack kernels on both targets (CPU loop; CUDA loop in
the simulator or on a GPU), against NumPy/ml_dtypes references."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from helpers import SIMULATOR, device_address, record_cpu_runs, run_kernel
from varstore.casting import destination_words
from varstore.distributed import buckets as B
from varstore.dtypes import host_dtype, storage_dtype
from varstore.kernels import multi_tensor as K

pytestmark = pytest.mark.kernels

SIZES = [5, 1, 0, 2 * K.CHUNK + 3, 7] if not SIMULATOR else [5, 1, 0, 40, 7]


def test_chunks_cover_every_tensor_in_pieces_of_at_most_chunk():
    tensor, first, count = K.chunks([3, 0, 2 * K.CHUNK + 1, 1])
    assert tensor.tolist() == [0, 2, 2, 2, 3]
    assert first.tolist() == [0, 3, 3 + K.CHUNK, 3 + 2 * K.CHUNK, 4 + 2 * K.CHUNK]
    assert count.tolist() == [3, K.CHUNK, K.CHUNK, 1, 1]
    assert [a.tolist() for a in K.chunks([])] == [[], [], []]


class _Var:
    """What the bucket functions read of a variable."""

    def __init__(self, dtype, size, aggregation="sum"):
        self._dtype = dtype
        self.size = size
        self.aggregation = aggregation
        self.path = f"v{size}"


def _run(target, kernel, tensors, **args):
    """Launch ``kernel`` over its chunks (n = len(chunk_tensor)) with the table column
    tensor_address filled with the addresses of ``tensors``; NumPy arrays in ``tensors``
    and in ``args`` are updated in place."""
    n = len(args["chunk_tensor"])
    if target == "cpu":
        addresses = np.array([t.__array_interface__["data"][0] for t in tensors], np.uint64)
        run_kernel(target, kernel, n, tensor_address=addresses, **args)
        return
    from numba import cuda

    device_tensors = [cuda.to_device(t) for t in tensors]
    addresses = np.array([device_address(d) for d in device_tensors], np.uint64)
    run_kernel(target, kernel, n, tensor_address=addresses, **args)
    for host, dev in zip(tensors, device_tensors, strict=True):
        dev.copy_to_host(host)


def _words(values, dtype):
    """Storage words of ``values`` converted to ``dtype`` (ml_dtypes/NumPy rounding)."""
    return np.asarray(values).astype(host_dtype(dtype)).view(storage_dtype(dtype))


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16", "float16", "float8_e4m3fn", "int16", "uint8",
                                   "int32", "int64"])
def test_pack_then_unpack_add_and_mean(target, dtype):
    rng = np.random.default_rng(3)
    staging_dtype = B.STAGING[dtype]
    bucket = B.Bucket("sum", dtype, staging_dtype, "sum", tuple(), sum(SIZES))
    integer = dtype.startswith(("int", "uint"))
    values = [np.round(rng.uniform(-20, 20, size=s)) if integer or "8" in dtype else rng.uniform(-20, 20, size=s)
              for s in SIZES]
    if dtype == "uint8":
        values = [np.abs(v) for v in values]
    operands = [_words(v, dtype) for v in values]
    operands[1] = operands[1].reshape(1)  # a one-element operand fills its tensor (step 0)
    step = np.array([1, 0, 1, 1, 1], np.int64)
    negate = np.array([0, 0, 0, 1, 0], np.int64)
    counts = np.array(SIZES, np.int64)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    tensor, first, count = K.chunks(counts)
    to_stage, from_stage = B._constants(bucket.dtype, bucket.staging)[:2]
    like = np.zeros(1, B._source_like(dtype, staging_dtype))
    kind = B._kind(K, staging_dtype)
    staging = np.full(bucket.elements, 0xAB, staging_dtype)
    _run(target, K.pack, operands, staging=destination_words(staging), chunk_tensor=tensor, chunk_first=first,
         chunk_count=count, tensor_start=starts, tensor_step=step, tensor_negate=negate, like=like, kind=kind,
         conversion=to_stage, **K.pack_paths(to_stage))
    expected = np.concatenate([
        (-1 if n else 1) * np.broadcast_to(o.view(host_dtype(dtype)).astype(np.float64), (s,))
        for o, s, n in zip(operands, SIZES, negate, strict=True)
    ])
    np.testing.assert_array_equal(staging.astype(np.float64) if not integer else staging,
                                  expected.astype(staging.dtype))

    # Unpack into variables: tensor 2 adds (old + staging / 2), the others assign.
    olds = [_words(np.round(rng.uniform(-5, 5, size=s)) if integer else rng.uniform(-5, 5, size=s), dtype)
            for s in SIZES]
    if dtype == "uint8":
        olds = [_words(np.abs(o.astype(np.float64)), dtype) for o in olds]
    targets = [o.copy() for o in olds]
    add = np.array([0, 0, 1, 0, 1], np.int64)
    divisor = 1 if integer else 2
    like_dst = np.zeros(1, destination_words(np.empty(1, storage_dtype(dtype))).dtype)
    _run(target, K.unpack, targets, staging=destination_words(staging), chunk_tensor=tensor, chunk_first=first,
         chunk_count=count, tensor_start=starts, tensor_add=add, like_src=like, like_dst=like_dst, divisor=divisor,
         kind=kind, to_stage=to_stage, from_stage=from_stage, **K.unpack_paths(to_stage, from_stage))
    for i, (old, got) in enumerate(zip(olds, targets, strict=True)):
        part = staging[starts[i]:starts[i] + SIZES[i]]
        if integer:
            want = (part.astype(np.int64) + (old.astype(np.int64) if add[i] else 0)).astype(dtype)
        else:
            reduced = (part / np.array(divisor, part.dtype)).astype(part.dtype)
            if add[i]:
                reduced = (old.view(host_dtype(dtype)).astype(part.dtype) + reduced).astype(part.dtype)
            want = reduced.astype(host_dtype(dtype))
        np.testing.assert_array_equal(got.view(host_dtype(dtype)).view(got.dtype), want.view(got.dtype),
                                      err_msg=f"tensor {i}")


def test_a_threaded_cpu_launch_splits_at_chunk_boundaries_and_equals_serial(monkeypatch):
    from varstore.backends.numpy import NumpyBackend
    from varstore.kernels.launch import MIN_CPU_CHUNK

    monkeypatch.setenv("VARSTORE_NUM_THREADS", "1")
    serial_backend = NumpyBackend()
    serial_backend._cpu_workers()  # (read now: the variable changes below)
    monkeypatch.setenv("VARSTORE_NUM_THREADS", "3")
    backend = NumpyBackend()
    rng = np.random.default_rng(1)
    sizes = [3 * MIN_CPU_CHUNK + 11, 5, MIN_CPU_CHUNK - 1, 2 * K.CHUNK + 7]
    tensors = [rng.standard_normal(s).astype(np.float32) for s in sizes]
    counts = np.array(sizes, np.int64)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    tensor, first, count = K.chunks(counts)
    conversion = B.element_conversion("float32", "float32")
    tables = dict(chunk_tensor=tensor, chunk_first=first, chunk_count=count,
                  tensor_address=np.array([t.__array_interface__["data"][0] for t in tensors], np.uint64),
                  tensor_start=starts, tensor_step=np.ones(4, np.int64), tensor_negate=np.array([0, 1, 0, 1], np.int64),
                  like=np.zeros(1, np.uint32), kind=K.STAGE_F32, conversion=conversion, **K.pack_paths(conversion))
    # Record the chunk range of every run of the CPU loop.
    runs = []
    record_cpu_runs(monkeypatch, K.pack, runs)
    serial = np.zeros(int(counts.sum()), np.uint32)
    serial_backend.launch(K.pack, len(tensor), staging=serial, **tables)
    assert runs == [(0, len(tensor))]
    runs.clear()
    threaded = np.zeros_like(serial)
    backend.launch(K.pack, len(tensor), staging=threaded, **tables)
    np.testing.assert_array_equal(threaded, serial)
    assert len(runs) == 3  # three threads, each with whole chunks
    runs.sort()
    assert runs[0][0] == 0 and runs[-1][1] == len(tensor) and all(a[1] == b[0] for a, b in itertools.pairwise(runs))
    assert sum(stop - start for start, stop in runs) == len(tables["chunk_tensor"])
    np.testing.assert_array_equal(serial[starts[1]:starts[1] + 5].view(np.float32), -tensors[1])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_unpack_gives_a_nan_the_cpus_bits_on_every_target(target, dtype):
    """A mean added to the old value (``old + r / 2``), where either is NaN or the sum is
    inf - inf: the bits by the CPU's rule (``old``'s NaN quieted, else ``r``'s, else the
    default NaN), as ``v.assign_add`` gives them; a GPU's own float operations would give
    0x7FFFFFFF for each."""
    wide = dtype == "float64"
    word = np.uint64 if wide else np.uint32
    shift = 29 if wide else 0  # (float32 payload bits, moved to float64's)

    def bits(pattern32):  # a float32 bit pattern, or its float64 counterpart (same sign, payload, class)
        if not wide:
            return pattern32
        sign, exponent, fraction = pattern32 >> 31, (pattern32 >> 23) & 0xFF, pattern32 & 0x7FFFFF
        exponent = 0x7FF if exponent == 0xFF else exponent - 127 + 1023
        return (sign << 63) | (exponent << 52) | (fraction << shift)

    one, two, three, four, inf, ninf = (bits(x) for x in (0x3F800000, 0x40000000, 0x40400000, 0x40800000,
                                                          0x7F800000, 0xFF800000))
    quiet = bits(0x7FC00000) & ~bits(0x7F800000)  # (the quiet bit)
    reduced = np.array([bits(0x7F800001), two, inf, bits(0xFFC00123), two], word)  # r, halved by the mean (2 -> 1)
    olds = np.array([one, bits(0x7FA00000), ninf, bits(0x7FC00456), three], word)
    want = [bits(0x7F800001) | quiet, bits(0x7FA00000) | quiet, bits(0xFFC00000), bits(0x7FC00456), four]
    tensor, first, count = K.chunks(np.array([5], np.int64))
    kind = K.STAGE_F64 if wide else K.STAGE_F32
    bucket = B.Bucket("sum", dtype, dtype, "sum", tuple(), 5)
    to_stage, from_stage = B._constants(bucket.dtype, bucket.staging)[:2]
    targets = [olds.copy()]
    _run(target, K.unpack, targets, staging=reduced.copy(), chunk_tensor=tensor, chunk_first=first,
         chunk_count=count, tensor_start=np.zeros(1, np.int64), tensor_add=np.ones(1, np.int64),
         like_src=np.zeros(1, word), like_dst=np.zeros(1, word), divisor=2, kind=kind, to_stage=to_stage,
         from_stage=from_stage, **K.unpack_paths(to_stage, from_stage))
    assert [hex(int(x)) for x in targets[0]] == [hex(x) for x in want]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float8_e4m3fn", "float8_e5m2"])
def test_the_cpu_small_float_paths_give_the_general_paths_bits(dtype):
    """The CPU loops' ``small`` paths (decode and encode inline) against the conversion
    switch that a GPU runs, over every bit pattern of the format as tensors and as old
    values, NaNs and infinities included: pack (negated too) and unpack (assign, and add
    to the old value after a mean's division), byte for byte."""
    word = storage_dtype(dtype)
    words = np.arange(2 ** (8 * word.itemsize), dtype=word)
    n = words.size
    counts = np.array([n, n], np.int64)
    starts = np.array([0, n], np.int64)
    tensor, first, count = K.chunks(counts)
    bucket = B.Bucket("sum", dtype, "float32", "sum", tuple(), 2 * n)
    to_stage, from_stage = B._constants(bucket.dtype, bucket.staging)[:2]
    like = np.zeros(1, B._source_like(dtype, "float32"))
    assert K.pack_paths(to_stage)["small"] == 1 and K.unpack_paths(to_stage, from_stage)["small"] == 1
    tables = dict(chunk_tensor=tensor, chunk_first=first, chunk_count=count, tensor_start=starts)
    packed = []
    for paths in (K.pack_paths(to_stage), {"same": 0, "small": 0}):
        staging = np.zeros(2 * n, np.uint32)
        _run("cpu", K.pack, [words, words], staging=staging, tensor_step=np.ones(2, np.int64),
             tensor_negate=np.array([0, 1], np.int64), like=like, kind=K.STAGE_F32, conversion=to_stage, **tables,
             **paths)
        packed.append(staging)
    np.testing.assert_array_equal(packed[0], packed[1])
    # Unpack: the staging words are every pattern decoded, the old values every pattern
    # (rolled, so that each pairs with another); tensor 0 assigns, tensor 1 adds.
    olds = np.roll(words, 12345 % n)
    unpacked = []
    for paths in (K.unpack_paths(to_stage, from_stage), {"unchanged": 0, "small": 0}):
        for divisor in (1, 3):
            targets = [olds.copy(), olds.copy()]
            _run("cpu", K.unpack, targets, staging=packed[0].copy(), tensor_add=np.array([0, 1], np.int64),
                 like_src=like, like_dst=np.zeros(1, destination_words(words).dtype), divisor=divisor,
                 kind=K.STAGE_F32, to_stage=to_stage, from_stage=from_stage, **tables, **paths)
            unpacked.append(np.concatenate(targets).view(np.uint8))
    np.testing.assert_array_equal(unpacked[0], unpacked[2])
    np.testing.assert_array_equal(unpacked[1], unpacked[3])
