"""Sync plans: pending updates cut into buckets, and the multi-tensor pack and unpack.

A bucket holds updates of one (aggregation, dtype), in the variables' creation order, up
to ``bucket_bytes`` of staging (a larger variable gets a bucket of its own; 0 gives every
variable its own: "unfused"). One pack kernel fills a bucket's flat staging buffer, one
collective reduces it, one unpack kernel applies it. The plan's digest is what the ranks
compare before any collective runs.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import NamedTuple

import numpy as np

from .. import kernels
from ..casting import destination_words, element_conversion, source_words
from ..dtypes import INT_DTYPES, REGISTRY, storage_dtype
from ..multi_tensor import Tables
from ..variable import live_storage

#: Staging dtype of each variable dtype: one that every engine can add.
STAGING = {name: r.staging for name, r in REGISTRY.items()}

#: The collective each aggregation needs (None: applied locally, no collective).
COLLECTIVE = {"sum": "sum", "mean": "sum", "only_first_replica": "broadcast", "none": None}


def check_syncable(path: str, dtype: str, aggregation: str, synchronization: str, device: str,
                   store_device: str) -> None:
    """Raise ValueError where a synced variable could not be synced: replicas' integers
    cannot be averaged exactly, nor bools added, and the pack kernels read a store's
    variables on its own device."""
    if dtype in INT_DTYPES and aggregation == "mean":
        raise ValueError(
            f"Variable {path!r} is {dtype} with aggregation='mean' and synchronization="
            f"{synchronization!r}: replicas' integer values cannot be averaged exactly. Use "
            f"aggregation='sum' or 'only_first_replica', a float dtype, or synchronization='none'."
        )
    if dtype == "bool" and aggregation in ("sum", "mean"):
        raise ValueError(
            f"Variable {path!r} is bool with aggregation={aggregation!r}: bools cannot be added. Use "
            f"aggregation='only_first_replica' or 'none'."
        )
    if device != store_device:
        raise ValueError(f"Variable {path!r} would be on {device}, with synchronization={synchronization!r}: "
                         f"the store syncs its variables on its own device, {store_device}. Leave `device` "
                         f"out, or use synchronization='none'.")


class Update(NamedTuple):
    """A pending write: ``operand`` (storage dtype; the variable's shape, or one element
    that fills it) assigned (``mode="assign"``) or added (``"add"``, negated first where
    ``negate``) when the store syncs. ``order`` is the variable's creation number."""

    variable: object
    mode: str
    operand: object
    negate: bool
    order: int


class Bucket(NamedTuple):
    aggregation: str
    dtype: str
    staging: str  # staging dtype
    collective: str | None  # "sum", "broadcast" or None
    updates: tuple
    elements: int

    @property
    def nbytes(self) -> int:
        return self.elements * np.dtype(self.staging).itemsize

    def describe(self) -> dict:
        return {"aggregation": self.aggregation, "dtype": self.dtype, "collective": self.collective,
                "updates": [[u.variable.path, u.variable.size, u.mode] for u in self.updates]}


def plan(updates, bucket_bytes: float, raw: bool = False) -> list:
    """Buckets for ``updates``: grouped by (aggregation, dtype) in order of first
    appearance, each group in creation order, cut at ``bucket_bytes``. ``raw``: stage
    every dtype as its own storage words (bit-exact broadcasts)."""
    groups: dict = {}
    for update in sorted(updates, key=lambda u: u.order):
        variable = update.variable
        groups.setdefault((variable.aggregation, variable.stored.dtype), []).append(update)
    buckets = []
    for (aggregation, dtype), members in groups.items():
        staging = storage_dtype(dtype).name if raw else STAGING[dtype]
        if raw and staging == "bool":
            staging = "uint8"
        itemsize = np.dtype(staging).itemsize
        collective = "broadcast" if raw else COLLECTIVE[aggregation]
        current, elements = [], 0
        for update in members:
            size = update.variable.size
            if current and (elements + size) * itemsize > bucket_bytes:
                buckets.append(Bucket(aggregation, dtype, staging, collective, tuple(current), elements))
                current, elements = [], 0
            current.append(update)
            elements += size
        if current:
            buckets.append(Bucket(aggregation, dtype, staging, collective, tuple(current), elements))
    return buckets


def digest(buckets) -> bytes:
    """A hash of the collective part of a plan: equal on every rank, or the ranks would
    run different collectives."""
    text = json.dumps([b.describe() for b in buckets if b.collective], separators=(",", ":"))
    return hashlib.sha256(text.encode()).digest()


# ------------------------------------------------------------------ kernels' tables
def _source_like(dtype: str, staging: str):
    """The word type pack reads a ``dtype`` element as (``casting.source_words``)."""
    if dtype == "bool":
        return np.dtype(np.uint8)
    return source_words(np.empty(0, storage_dtype(dtype)), dtype, staging).dtype


@functools.lru_cache(maxsize=None)
def _constants(dtype: str, staging: str) -> tuple:
    """``(to_stage, from_stage, source words, destination words, kind)`` of the launches
    of a bucket of ``dtype`` variables staged as ``staging``: the same for every bucket
    of the pair, made once (they cost several µs a launch)."""
    if staging == storage_dtype(dtype).name or (dtype == "bool" and staging == "uint8"):
        to_stage = from_stage = element_conversion(staging, staging)  # raw staging: words move unchanged
    else:
        to_stage, from_stage = element_conversion(dtype, staging), element_conversion(staging, dtype)
    destination = destination_words(np.empty(1, storage_dtype(dtype))).dtype
    return to_stage, from_stage, _source_like(dtype, staging), destination, _kind(_kernels(), staging)


def _kernels():
    return kernels.multi_tensor  # numba loads on first use, not at import


def _kind(K, staging: str) -> int:
    return {"float32": K.STAGE_F32, "float64": K.STAGE_F64}.get(staging, K.STAGE_INT)


def layout(bucket: Bucket) -> tuple:
    """``(starts, (chunk_tensor, chunk_first, chunk_count))`` of a bucket's tensors in its
    staging buffer: computed once per sync, used by its pack and its unpack."""
    counts = np.fromiter((u.variable.size for u in bucket.updates), np.int64, len(bucket.updates))
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    return starts, _kernels().chunks(counts)


def pack_arguments(tables: Tables, bucket: Bucket, where: tuple, addresses=None) -> dict:
    """The pack launch's arguments but the staging buffer: the chunk tables, each
    tensor's start, fill step and sign, uploaded (the same for every sync of one plan
    whose operands fill and negate alike), and with ``addresses`` (the operands', int64
    words) their column too, in the same transfer."""
    K = _kernels()
    starts, (tensor, first, count) = where
    step = [0 if u.operand.size == 1 and u.variable.size != 1 else 1 for u in bucket.updates]
    negate = [int(u.negate) for u in bucket.updates]
    t = tables.upload([tensor, first, count, starts, step, negate] + ([] if addresses is None else [addresses]))
    to_stage, _, source, _, kind = _constants(bucket.dtype, bucket.staging)
    arguments = dict(chunk_tensor=t[0], chunk_first=t[1], chunk_count=t[2], tensor_start=t[3], tensor_step=t[4],
                     tensor_negate=t[5], like=tables.like(source), kind=kind, conversion=to_stage,
                     **K.pack_paths(to_stage))
    if addresses is not None:
        arguments["tensor_address"] = t[6].view(np.uint64)
    return arguments


def pack(tables: Tables, bucket: Bucket, staging, where: tuple, arguments: dict | None = None) -> dict:
    """Fill ``staging`` (flat, the bucket's staging dtype) from the updates' operands
    (``arguments``: :func:`pack_arguments` of this bucket without addresses, made
    before). Returns the arguments it launched with, but the staging buffer."""
    backend = tables.backend
    addresses = np.array(backend.addresses([u.operand for u in bucket.updates]), np.uint64).view(np.int64)
    if arguments is None:
        arguments = pack_arguments(tables, bucket, where, addresses)
    else:
        arguments = dict(arguments, tensor_address=tables.upload([addresses])[0].view(np.uint64))
    backend.launch(_kernels().pack, len(arguments["chunk_tensor"]), staging=destination_words(staging), **arguments)
    return arguments


def unpack_arguments(tables: Tables, bucket: Bucket, where: tuple, divisor: int = 1, targets=None) -> dict:
    """The unpack launch's arguments but the staging buffer: valid while ``targets`` (by
    default the updates' variables' storage arrays) are the arrays they were made for."""
    K = _kernels()
    backend = tables.backend
    starts, (tensor, first, count) = where
    if targets is None:
        targets = [live_storage(u.variable) for u in bucket.updates]
    address = [backend.address(a) for a in targets]
    add = [int(u.mode == "add") for u in bucket.updates]
    t = tables.upload([tensor, first, count, np.array(address, np.uint64).view(np.int64), starts, add])
    to_stage, from_stage, source, destination, kind = _constants(bucket.dtype, bucket.staging)
    return dict(chunk_tensor=t[0], chunk_first=t[1], chunk_count=t[2], tensor_address=t[3].view(np.uint64),
                tensor_start=t[4], tensor_add=t[5], like_src=tables.like(source), like_dst=tables.like(destination),
                divisor=int(divisor), kind=kind, to_stage=to_stage, from_stage=from_stage,
                **K.unpack_paths(to_stage, from_stage))


def unpack(tables: Tables, bucket: Bucket, staging, where: tuple, divisor: int = 1, targets=None,
           arguments: dict | None = None) -> None:
    """Apply ``staging`` to the updates' variables (or to ``targets``, arrays of the
    variables' shapes and storage dtypes): assign, or add where the update adds; divided
    by ``divisor`` first (a mean). ``arguments``: :func:`unpack_arguments` of the same."""
    if arguments is None:
        arguments = unpack_arguments(tables, bucket, where, divisor, targets)
    tables.backend.launch(_kernels().unpack, len(arguments["chunk_tensor"]), staging=destination_words(staging),
                          **arguments)
