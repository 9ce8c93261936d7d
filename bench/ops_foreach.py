"""Training-loop primitives: ``vs.foreach`` over many variables against a Python loop of
the per-variable call, timed in the same run.

The size is the bytes of all the variables together (float32), spread over
:data:`VARIABLES` variables (at least one element each): 256 KiB is 1,000 (64,) variables.
"""

from __future__ import annotations

import numpy as np

import varstore as vs

from .ops_base import ELEMENT, Case, host_normal, require, storage_of

VARIABLES = 1000


def _normal(rng, n: int) -> np.ndarray:
    """float32 normal data of ``n`` elements, its draws repeating past 2**20 (``host_normal``):
    four fresh GiB of normals per optimizer op cost about a minute on a small host."""
    return host_normal(n, int(rng.integers(2**31)))


def build_foreach_assign_sub(ctx, nbytes):
    each = max(1, nbytes // ELEMENT // VARIABLES)
    store = ctx.new_store()
    ours = [store.variable("zeros", shape=(each,), dtype="float32", name=f"f{i}") for i in range(VARIABLES)]
    loop = [store.variable("zeros", shape=(each,), dtype="float32", name=f"l{i}") for i in range(VARIABLES)]
    grads = [ctx.native.from_host(np.full(each, 0.5, np.float32)) for _ in range(VARIABLES)]

    def python_loop():
        for v, g in zip(loop, grads, strict=True):
            v.assign_sub(g)

    fns = {"ours": lambda: vs.foreach.assign_sub(ours, grads), "Python loop of v.assign_sub": python_loop}
    if ctx.torch:
        torch = ctx.torch.torch
        t_vars = [ctx.torch.tensor(np.zeros(each, np.float32)) for _ in range(VARIABLES)]
        t_grads = [ctx.torch.tensor(np.full(each, 0.5, np.float32)) for _ in range(VARIABLES)]
        fns["torch._foreach_sub_"] = lambda: torch._foreach_sub_(t_vars, t_grads)

    def check():
        got = np.stack([ctx.native.to_host(storage_of(v)) for v in ours])
        require(bool(np.all(got == got.flat[0])) and got.flat[0] < 0 and got.flat[0] % 0.5 == 0,
                "foreach.assign_sub: the variables differ or are not whole multiples of the update")

    return Case(fns, 3 * VARIABLES * each * ELEMENT, check, ceiling="copy", keep=[store, grads])


#: Adam's parameters are spread over this many variables (the target's 50 x (256, 256)
#: at 12.5 MiB).
ADAM_VARIABLES = 50
#: Keras's Adam is a baseline up to this size (it takes about 90 ms per step at 12.5 MiB).
KERAS_ADAM_BYTES = 16 << 20


def build_optimizer_adam(ctx, nbytes):
    """One Adam step over ``nbytes`` of float32 parameters in 50 variables: ours (one
    fused launch), Keras's Adam (numpy backend) and ``torch.optim.Adam(fused=True)`` where
    they run. Bytes: 16 read and 12 written per parameter (w, g, m, v; w, m, v)."""
    return _optimizer_case(ctx, nbytes, "Adam", {"learning_rate": 1e-3}, 28, _numpy_adam)


def build_optimizer_sgd(ctx, nbytes):
    """One SGD step with momentum 0.9, as :func:`build_optimizer_adam`. Bytes: 12 read
    and 8 written per parameter (w, g, m; w, m)."""
    return _optimizer_case(ctx, nbytes, "SGD", {"learning_rate": 1e-2, "momentum": 0.9}, 20, _numpy_sgd)


def _optimizer_case(ctx, nbytes, name: str, kwargs: dict, bytes_per_parameter: int, ufuncs):
    each = max(1, nbytes // ELEMENT // ADAM_VARIABLES)
    rng = np.random.default_rng(0)
    store = ctx.new_store()
    weights = [store.variable(_normal(rng, each), name=f"w{i}") for i in range(ADAM_VARIABLES)]
    grads = [ctx.native.from_host(_normal(rng, each)) for _ in range(ADAM_VARIABLES)]
    opt = getattr(vs.optimizers, name)(**kwargs)
    opt.build(weights)
    fns = {"ours": lambda: opt.apply(grads, weights), "array ufuncs per variable": ufuncs(ctx, grads, each)}
    keras = ctx.keras_for(nbytes, limit=KERAS_ADAM_BYTES)
    if keras:
        kw = [keras.Variable(_normal(rng, each)) for _ in range(ADAM_VARIABLES)]
        k_opt = getattr(keras.optimizers, name)(**kwargs)
        k_opt.build(kw)
        host_grads = [ctx.native.to_host(g) for g in grads]
        fns[f"keras.optimizers.{name} (numpy backend)"] = lambda: k_opt.apply(host_grads, kw)
    if ctx.torch and ctx.torch.device != "cpu":
        torch = ctx.torch.torch
        tw = [torch.nn.Parameter(ctx.torch.tensor(_normal(rng, each))) for _ in
              range(ADAM_VARIABLES)]
        for p, g in zip(tw, grads, strict=True):
            p.grad = ctx.torch.tensor(ctx.native.to_host(g))
        t_kwargs = {"lr" if k == "learning_rate" else k: v for k, v in kwargs.items()}
        t_opt = getattr(torch.optim, name)(tw, fused=True, **t_kwargs)
        fns[f"torch.optim.{name}(fused=True)"] = t_opt.step

    def check():
        w = ctx.native.to_host(storage_of(weights[0]))
        require(bool(np.all(np.isfinite(w))) and int(opt.iterations.numpy()) > 0,
                f"optimizer/{name.lower()}: the weights are not finite or no step was counted")

    return Case(fns, bytes_per_parameter * ADAM_VARIABLES * each, check, ceiling="copy", keep=[store, grads])


def _numpy_sgd(ctx, grads, each: int):
    """SGD with momentum written with the array module's ufuncs, one variable at a time,
    in place (Keras's formulas: ``m = m * momentum - g * lr``, ``w += m``)."""
    rng = np.random.default_rng(1)
    state = [(ctx.native.from_host(_normal(rng, each)),
              ctx.native.from_host(np.zeros(each, np.float32))) for _ in grads]

    def run():
        for (w, m), g in zip(state, grads, strict=True):
            m *= np.float32(0.9)
            m -= g * np.float32(1e-2)
            w += m

    return run


def _numpy_adam(ctx, grads, each: int):
    """Adam written with the array module's ufuncs, one variable at a time (in place
    where a ufunc can write in place): what a hand-written loop without a fused kernel
    does."""
    xp = ctx.native.xp
    rng = np.random.default_rng(1)
    state = [(ctx.native.from_host(_normal(rng, each)), ctx.native.from_host(np.zeros(
        each, np.float32)), ctx.native.from_host(np.zeros(each, np.float32))) for _ in grads]
    step = [0]

    def run():
        step[0] += 1
        alpha = np.float32(1e-3 * np.sqrt(1 - 0.999 ** step[0]) / (1 - 0.9 ** step[0]))
        for (w, m, v), g in zip(state, grads, strict=True):
            m += (g - m) * np.float32(0.1)
            v += (g * g - v) * np.float32(0.001)
            w -= m * alpha / (xp.sqrt(v) + np.float32(1e-7))

    return run
