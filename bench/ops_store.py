"""Stores and checkpoints: a new variable, ``store.save`` (atomic safetensors write with
fsync) and ``store.load`` into an existing variable.

Byte accounting: creation counts the variable's bytes; save and load count the file's
tensor bytes once.
"""

from __future__ import annotations

import os

import numpy as np

from .ops_base import ELEMENT, Case, host_normal, require, square_shape, storage_of

# ---------------------------------------------------------------- variables


def build_create(ctx, nbytes):
    n = nbytes // ELEMENT
    shape = square_shape(n)
    store = ctx.new_store()
    made: list = []

    def create():
        if made:
            store.delete(made.pop().path)
        made.append(store.variable("zeros", shape=shape, dtype="float32", name="created"))

    fns = {"ours": create}
    holder: list = []
    label, fn = ctx.native.zeros(shape, holder)
    fns[label] = fn
    if ctx.torch:
        theld: list = []
        label, fn = ctx.torch.zeros(shape, theld)
        fns["torch " + label] = fn
    keras = ctx.keras_for(nbytes)
    if keras:
        def keras_create():
            holder[:] = [keras.Variable(initializer="zeros", shape=shape, dtype="float32")]

        fns["keras.Variable (numpy backend)"] = keras_create

    def check():
        require(len(store) == 1 and made[0].shape == shape, f"store holds {len(store)} variables after the creations")
        require(int(ctx.native.xp.count_nonzero(storage_of(made[0]))) == 0, "a zeros variable is not zero")

    return Case(fns, nbytes, check, ceiling="fill", keep=[store])


# ---------------------------------------------------------------- checkpoints


def build_save(ctx, nbytes):
    n = nbytes // ELEMENT
    host = host_normal(n, seed=8, scale=1.0)
    store = ctx.new_store()
    store.variable(host, name="weights")
    path = os.path.join(ctx.tmpdir, "bench.safetensors")
    plain = ctx.native.from_host(host)
    fns = {"ours": lambda: store.save(path)}
    label, fn = ctx.native.save(plain, path + ".raw")
    fns[label] = fn

    def check():
        other = ctx.new_store()
        other.variable("zeros", shape=(n,), dtype="float32", name="weights")
        other.load(path)
        require(bool(ctx.native.xp.array_equal(storage_of(other["weights"]), plain)),
                "store.save: the file does not hold the variable")

    return Case(fns, nbytes, check, ceiling=None, keep=[store, plain])


def build_load(ctx, nbytes):
    n = nbytes // ELEMENT
    host = host_normal(n, seed=9, scale=1.0)
    path = os.path.join(ctx.tmpdir, "bench.safetensors")
    writer = ctx.new_store()
    writer.variable(host, name="weights")
    writer.save(path)
    ctx.native.save(ctx.native.from_host(host), path + ".raw")[1]()
    store = ctx.new_store()
    store.variable("zeros", shape=(n,), dtype="float32", name="weights")
    fns = {"ours": lambda: store.load(path)}
    holder: list = []
    label, fn = ctx.native.load(path + ".raw", holder)
    fns[label] = fn

    def check():
        got = ctx.native.to_host(storage_of(store["weights"]))
        require(bool(np.array_equal(got, host)), "store.load: the variable does not hold the file's tensor")

    return Case(fns, nbytes, check, ceiling=None, keep=[writer, store])

