"""Fused optimizers over a store: ``vs.optimizers.SGD``, ``Adam`` and ``AdamW``.

Keras 3's constructor arguments, defaults and update formulas; one fused multi-tensor
kernel (``kernels.updates``) per (variable dtype, gradient dtype) group does a whole
step: clipping, weight decay, the moments, bias correction and the weight write, in
float32 (float64 for float64 variables), every multiply-add one fused multiply-add,
each stored value rounded once. The step's scalars (``lr``, ``beta ** t``, the bias
correction) are computed on the host in float32 exactly as Keras computes them.

Slots live in the variables' store, named as Keras names them: ``adam/iteration``,
``adam/learning_rate``, ``adam/<variable path with '/' as '_'>_momentum`` (and
``_velocity``, ``_velocity_hat`` with amsgrad), so ``store.save``/``store.load`` resume
training exactly: build the optimizer, then load the checkpoint. A store holds the state
of one optimizer per name (a second one of that name, which would share them, is refused). float16,
bfloat16 and float8 variables keep float32 slots (Keras: the variable's dtype), and their
update reads the gradient in float32 before any rounding.

Differences from Keras, by design: each multiply-add is rounded once (an fma), where
Keras's separate NumPy operations round twice, so steps agree to float32 rounding, not
bit for bit; weight decay is ``w - w * (weight_decay * lr)``; a callable ``learning_rate``
is called with the iteration number (as a Keras ``LearningRateSchedule`` is).

>>> import numpy as np, varstore as vs
>>> store = vs.VariableStore(device="cpu")
>>> with vs.name_scope("dense"):
...     w = store.variable(np.ones(3, np.float32), name="kernel")
>>> opt = vs.optimizers.Adam(learning_rate=0.1)
>>> opt.apply([np.full(3, 0.5, np.float32)], [w])
>>> w.numpy().round(4), int(opt.iterations.numpy())
(array([0.9, 0.9, 0.9], dtype=float32), 1)
>>> [p for p in store if p.startswith("adam/")]
['adam/iteration', 'adam/learning_rate', 'adam/dense_kernel_momentum', 'adam/dense_kernel_velocity']
"""

from __future__ import annotations

import math
import operator
import warnings
import weakref

import numpy as np

from . import foreach, kernels, multi_tensor, scopes
from .casting import element_conversion
from .errors import ArgumentTypeError
from .multi_tensor import Tables, check_variables, checked_gradient, compute_dtype, destination_word, source_word
from .validation import check_number, is_real_number
from .variable import is_routed, live_storage

__all__ = ["SGD", "Adam", "AdamW", "Optimizer"]


class Optimizer:
    """What SGD, Adam and AdamW share: the learning rate, clipping, weight decay, the
    iteration count, the slots and the fused step (see the module docstring)."""

    _slot_names: tuple = ()

    def __init__(self, learning_rate, weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None,
                 name=None):
        if not (callable(learning_rate) or _is_real(learning_rate)):
            raise ArgumentTypeError(f"Invalid value for argument `learning_rate`. Expected a float, or a callable "
                                    f"of the iteration. Received: learning_rate={learning_rate!r}")
        if not callable(learning_rate):
            learning_rate = check_number("learning_rate", learning_rate, "a finite number >= 0", minimum=0.0)
        self.weight_decay = None if weight_decay is None else check_number(
            "weight_decay", weight_decay, "None or a finite number >= 0", minimum=0.0)
        self.clipnorm = _clip("clipnorm", clipnorm)
        self.clipvalue = _clip("clipvalue", clipvalue)
        self.global_clipnorm = _clip("global_clipnorm", global_clipnorm)
        given = [(k, v) for k, v in (("clipnorm", clipnorm), ("clipvalue", clipvalue),
                                     ("global_clipnorm", global_clipnorm)) if v is not None]
        if len(given) > 1:
            raise ValueError(f"Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set. Received: "
                             f"{', '.join(f'{k}={v!r}' for k, v in given)}")
        name = type(self).__name__.lower() if name is None else name
        if not isinstance(name, str) or not name or "/" in name:
            raise (ValueError if isinstance(name, str) else ArgumentTypeError)(
                f"Invalid value for argument `name`. Expected a non-empty string without '/'. Received: name={name!r}")
        self.name = name
        self._initial_learning_rate = learning_rate
        self._store = None
        self._device = None
        self._iterations = None
        self._learning_rate = None  # the store's variable, for a float learning rate
        self._slots: dict = {}  # id(variable) -> (variable, [slot variables])
        self._addresses: dict = {}  # id(variable) -> (its address, its slots' addresses)
        self._releases = -1  # the store's release count when the addresses were taken
        self._plan = None  # the last step's bound launches (_StepPlan), for a step with the same arrays
        self.built = False

    # ------------------------------------------------------------------ state
    @property
    def iterations(self):
        """The step count: a variable (int64, ``<name>/iteration``) once built."""
        return self._iterations

    @property
    def learning_rate(self) -> float:
        """The next step's learning rate (a schedule's value at the current iteration, as Keras's)."""
        if callable(self._initial_learning_rate):
            return self._current_learning_rate(0 if self._iterations is None else int(self._iterations.numpy()))
        if self._learning_rate is None:
            return self._initial_learning_rate
        return float(self._learning_rate.numpy())

    @learning_rate.setter
    def learning_rate(self, value):
        value = check_number("learning_rate", value, "a finite number >= 0", minimum=0.0)
        if callable(self._initial_learning_rate):
            raise TypeError("This optimizer's learning rate is a schedule; it cannot be set to a number.")
        self._initial_learning_rate = value
        if self._learning_rate is not None:
            self._learning_rate.assign(value)

    @property
    def variables(self) -> list:
        """The optimizer's own variables: the iteration, the learning rate, every slot."""
        own = [v for v in (self._iterations, self._learning_rate) if v is not None]
        return own + [slot for _, slots in self._slots.values() for slot in slots if slot is not None]

    def build(self, variables) -> None:
        """Create the iteration count, the learning rate and each variable's slots in the
        variables' store, on their device (a variable's slots that the store already
        holds, from an earlier build of this optimizer, are taken as they are)."""
        self._build(check_variables(variables, f"{self.name}.build"))

    def _build(self, variables) -> None:
        if not variables or (self._store is not None and all(id(v) in self._slots for v in variables)):
            return
        store, device = variables[0].store, variables[0].device
        built_store, built_device = (store, device) if self._store is None else (self._store, self._device)
        for variable in variables:  # (before anything is created)
            if variable.store is not built_store or variable.device != built_device:
                raise ValueError(f"{self.name}: variable {variable.path!r} is in another store, or on another "
                                 f"device, than the variables this optimizer was built for ({built_device}); an "
                                 f"optimizer serves the variables of one store and device.")
        if self._store is None:
            if f"{self.name}/iteration" in store:
                raise ValueError(f"The store already holds the state of an optimizer named {self.name!r} "
                                 f"({self.name}/iteration): two optimizers of one name would share their slots. "
                                 f"Give this one another name (name=...); to resume training, build the "
                                 f"optimizer first and then load the checkpoint.")
            self._store, self._device = store, device
            counter = {"device": store.counter_device, "trainable": False, "aggregation": "only_first_replica"}
            self._iterations = store.get_or_create(f"{self.name}/iteration", "zeros", (), "int64", **counter)
            if not callable(self._initial_learning_rate):
                self._learning_rate = store.get_or_create(f"{self.name}/learning_rate", self._initial_learning_rate,
                                                          (), "float32", **counter)
        for variable in variables:
            if id(variable) in self._slots:
                continue
            slot_dtype = "float64" if variable.stored.dtype == "float64" else "float32"
            prefix = f"{self.name}/{variable.path.replace('/', '_')}"
            slots = [self._store.get_or_create(f"{prefix}_{slot}", "zeros", variable.shape, slot_dtype,
                                               device=self._device, trainable=False) if slot is not None else None
                     for slot in self._slot_list()]
            self._slots[id(variable)] = (variable, slots)
        self.built = True

    def _slot_list(self) -> tuple:
        return self._slot_names

    # ------------------------------------------------------------------ steps
    def apply_gradients(self, grads_and_vars) -> None:
        """``apply`` of ``(gradient, variable)`` pairs."""
        pairs = list(grads_and_vars)
        self.apply([g for g, _ in pairs], [v for _, v in pairs])

    def apply(self, grads, variables) -> None:
        """One step: ``grads[i]`` (an array, host or the store's device, or a variable,
        of any float dtype, the variable's shape; None skips its variable) updates
        ``variables[i]``. Every entry is checked before anything is written. Inside a
        ``ReplicatedStore.replica_step()`` the gradients are queued, and ``sync()``
        reduces them by each variable's aggregation and then runs this step once."""
        grads, variables = list(grads), self._checked(variables)
        if len(grads) != len(variables):
            raise ValueError(f"{self.name}.apply: {len(grads)} gradients and {len(variables)} variables; expected "
                             f"one gradient per variable.")
        kept = [(g, v) for g, v in zip(grads, variables, strict=True) if g is not None]
        if not kept:
            raise ValueError(f"{self.name}.apply: no gradients provided for any variable.")
        if len(kept) < len(variables):
            missing = [v.path for g, v in zip(grads, variables, strict=True) if g is None]
            warnings.warn(f"Gradients do not exist for variables {missing}.", stacklevel=2)
        if scopes.ACTIVE and scopes.stateless_scope() is not None:
            raise RuntimeError(f"{self.name}.apply inside a StatelessScope: the fused step writes the store's "
                               f"variables in place; apply it outside the scope.")
        before = None if all(id(v) in self._slots for _, v in kept) else self._built_state(kept[0][1].store)
        try:
            self._build([v for _, v in kept])
            if self._store.queue_gradients(self._step, [(v, g) for g, v in kept]):
                return  # (a replicated store inside a replica step: its sync() runs the step)
            on_read = [v.path for _, v in kept if is_routed(v) and v.synchronization == "on_read"]
            if on_read:
                raise ValueError(f"{self.name}.apply: {on_read} are on_read variables of a ReplicatedStore, whose "
                                 f"replicas differ by design; an optimizer updates on_write/auto variables.")
            self._step([g for g, _ in kept], [v for _, v in kept])
        except BaseException as error:
            if before is not None:  # (a step that built state and failed: the state it made goes)
                try:
                    self._unbuild(before)
                except Exception as undo:  # (the step's error is the one to see)
                    error.add_note(f"Deleting the state this step made failed too: {undo!r}")
            raise

    def _built_state(self, store) -> tuple:
        """What :meth:`_unbuild` puts back: the optimizer's built state and the store's paths."""
        return (self._store, self._device, self._iterations, self._learning_rate, dict(self._slots), self.built,
                store, set(store))

    def _unbuild(self, before: tuple) -> None:
        """Delete the variables a failed step's build made in the store, and forget them."""
        *own, store, paths = before
        for path in [p for p in store if p not in paths and p.startswith(f"{self.name}/")]:
            store.delete(path)
        self._store, self._device, self._iterations, self._learning_rate, self._slots, self.built = own
        self._addresses.clear()
        self._plan = None

    def _checked(self, variables) -> list:
        """``variables`` as a checked list: at once where each was built by this
        optimizer, none twice, and the store has released none since; else every check."""
        if isinstance(variables, (list, tuple)) and self._store is not None and \
                self._store.releases == self._releases and all(id(v) in self._slots for v in variables) and \
                len(set(map(id, variables))) == len(variables):
            return list(variables)
        return check_variables(variables, f"{self.name}.apply")

    def _addresses_of(self, variable, backend) -> tuple:
        """``(variable address, slot addresses)``, remembered until the store releases a
        variable."""
        if self._store.releases != self._releases:
            self._addresses.clear()
            self._releases = self._store.releases
        found = self._addresses.get(id(variable))
        if found is None:
            slots = self._slots[id(variable)][1]
            found = self._addresses[id(variable)] = (
                backend.address(live_storage(variable)),
                tuple(0 if slot is None else backend.address(live_storage(slot)) for slot in slots))
        return found

    def _step(self, grads, variables, dtypes=None) -> None:
        """The fused step of checked, built ``variables``: every gradient is checked and
        every group's arguments made before the first launch. ``dtypes``: the gradients'
        dtypes where they are storage arrays (a replicated store's reduced gradients).

        A step with the same variables and the same gradient arrays as the last one (the
        same objects, read in place), the same settings, no clipping by norm, and no
        variable of the store released since, runs the last step's launches again with
        this step's scalars (:class:`_StepPlan`): the checks, addresses and tables are the
        last step's."""
        step = int(self._iterations.numpy())
        lr = float(self._current_learning_rate(step))
        plan, self._plan = self._plan, None
        if dtypes is None and plan is not None and plan.fits(grads, variables, self._store.releases,
                                                             self._settings()):
            plan.run(self, lr, step)
            self._plan = plan
            return self._count_step()
        _, _, backend, device = variables[0].stored
        if dtypes is None:
            operands = [(checked_gradient(g, v, backend, device, i), v) for i, (g, v) in enumerate(zip(grads, variables,
                                                                                                strict=True))]
            operands = multi_tensor.copy_aliased_gradients(operands, grads, lambda: variables + self.variables, backend)
        else:
            operands = [((g, d), v) for g, d, v in zip(grads, dtypes, variables, strict=True)]
        scales, clip = self._clipping([g for g, _ in operands], backend, device)
        groups: dict = {}
        for ((array, gdtype), variable), scale in zip(operands, scales, strict=True):
            groups.setdefault((variable.stored.dtype, gdtype), []).append((variable, array, scale))
        tables = Tables(backend, device)
        launches = []
        for (dtype, gdtype), members in groups.items():
            compute = compute_dtype(dtype)
            real = np.float64 if compute == "float64" else np.float32
            columns, kernel, scalars = self._launch(members, real, backend)
            scalars.update(zip(self._STEP_SCALARS, self._step_scalars(real, lr, step), strict=True))
            columns["tensor_variable"] = np.array([self._addresses_of(v, backend)[0] for v, _, _ in members],
                                                  np.uint64)
            columns["tensor_gradient"] = np.array([backend.address(a) for _, a, _ in members], np.uint64)
            columns["tensor_scale"] = np.array([s for _, _, s in members], np.float64)
            args = tables.chunked([v.size for v, _, _ in members], columns)
            args.update(like_w=tables.like(source_word(dtype, compute)), like_wd=tables.like(destination_word(dtype)),
                        like_g=tables.like(source_word(gdtype, compute)), like_s=tables.like(np.dtype(real)),
                        clip=float(real(clip)), kind=0 if compute == "float32" else 1,
                        gradient=element_conversion(gdtype, compute), to_compute=element_conversion(dtype, compute),
                        from_compute=element_conversion(compute, dtype), **scalars)
            if "small" in kernel.scalar_names:  # (the CPU loop's paths: no conversion, or inline)
                args.update(same=int(dtype == gdtype == "float32"), small=kernels.updates.small_path(
                    args["gradient"], kernels.updates.GRADIENT_ROUTES, args["to_compute"], args["from_compute"]))
            launches.append((kernel, args, real))
        if dtypes is None and not (self.clipnorm or self.global_clipnorm) and all(
                map(operator.is_, (array for (array, _), _ in operands), grads)):
            self._plan = _StepPlan.of(grads, variables, self._store.releases, self._settings(), backend, launches)
        for kernel, args, _ in launches:
            backend.launch(kernel, len(args["chunk_tensor"]), **args)
        self._count_step()

    def _count_step(self) -> None:
        """The step count + 1, in place (as the kernels write the slots: also when a
        replicated store's sync() runs the step), on its own device."""
        self._iterations.stored.backend.add_into(live_storage(self._iterations), 1, 1)

    def _current_learning_rate(self, step: int) -> float:
        if callable(self._initial_learning_rate):
            value = self._initial_learning_rate(step)
            try:  # (a number, or a 0-d array of any library: CuPy's and torch's convert by float(), on the host)
                number = float(value) if is_real_number(value) or getattr(value, "ndim", None) == 0 else None
            except (TypeError, ValueError, RuntimeError):
                number = None
            if number is None:
                raise ArgumentTypeError(f"{self.name}: learning_rate({step}) returned {value!r:.80}; expected a "
                                        f"number.")
            return check_number("learning_rate(iteration)", number, "a finite number >= 0", minimum=0.0)
        if self._learning_rate is None:
            return self._initial_learning_rate
        return float(self._learning_rate.numpy())

    def _clipping(self, gradients, backend, device) -> tuple:
        """``(per-gradient scales, clip value)``: Keras's clipnorm (each gradient times
        ``clipnorm / max(norm, clipnorm)``), global_clipnorm (every gradient times
        ``clip * min(1 / norm, 1 / clip)``, NaN where the norm is not finite) or
        clipvalue (bounded to [-clipvalue, clipvalue])."""
        ones = [1.0] * len(gradients)
        if self.clipnorm:
            c = np.float32(self.clipnorm)
            sums = foreach.sums_of_squares(backend, device, [[g] for g in gradients])  # (one wait for the device)
            return [float(c / max(np.float32(math.sqrt(x)), c)) for x in sums], math.inf
        if self.global_clipnorm:
            norm = np.float32(math.sqrt(foreach.sum_of_squares(backend, device, gradients)))
            c = np.float32(self.global_clipnorm)
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                scale = c * min(np.float32(1) / norm, np.float32(1) / c) + (norm - norm)
            return [float(scale)] * len(gradients), math.inf
        if self.clipvalue:
            return ones, self.clipvalue
        return ones, math.inf

    #: The scalars of the step's kernel that change from step to step, in the order
    #: :meth:`_step_scalars` gives them.
    _STEP_SCALARS: tuple = ()

    #: The public attributes a step's launches are made from, besides the learning rate
    #: and the weight decay (read at every step): a remembered step fits only while they
    #: are unchanged.
    _SETTINGS: tuple = ("clipnorm", "global_clipnorm", "clipvalue")

    def _settings(self) -> tuple:
        return tuple(getattr(self, name) for name in self._SETTINGS)

    def _launch(self, members, real, backend) -> tuple:
        """``(slot address columns, kernel, fixed scalars)`` of one group's fused step, in
        the compute dtype ``real``."""
        raise NotImplementedError

    def _step_scalars(self, real, lr: float, step: int) -> tuple:
        """The values of :data:`_STEP_SCALARS` for step ``step`` at learning rate ``lr``,
        in the compute dtype ``real``."""
        raise NotImplementedError

    def _slot_columns(self, members, names, backend) -> dict:
        slots = [self._addresses_of(variable, backend)[1] for variable, _, _ in members]
        return {column: np.array([s[k] for s in slots], np.uint64) for k, column in enumerate(names)}

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name!r} learning_rate={self._initial_learning_rate!r}>"


class SGD(Optimizer):
    """Keras's SGD: ``m = m * momentum - g * lr``, ``w += m`` (nesterov:
    ``w += m * momentum - g * lr``); without momentum ``w -= g * lr``."""

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=None, clipnorm=None,
                 clipvalue=None, global_clipnorm=None, name="SGD"):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name)
        momentum = check_number("momentum", momentum, "a float in [0, 1]", minimum=0.0)
        if momentum > 1:
            raise ValueError(f"Invalid value for argument `momentum`. Expected a float in [0, 1]. Received: "
                             f"momentum={momentum}")
        self.momentum = momentum
        self.nesterov = bool(nesterov)

    def _slot_list(self) -> tuple:
        return ("momentum",) if self.momentum else ()

    _STEP_SCALARS = ("lr", "decay")
    _SETTINGS = Optimizer._SETTINGS + ("momentum", "nesterov")

    def _launch(self, members, real, backend):
        has_momentum = bool(self.momentum)
        columns = self._slot_columns(members, ("tensor_momentum",), backend) if has_momentum else {
            "tensor_momentum": np.zeros(len(members), np.uint64)}
        return columns, kernels.updates.sgd, {"momentum": float(real(self.momentum)),
                                              "nesterov": int(self.nesterov), "has_momentum": int(has_momentum)}

    def _step_scalars(self, real, lr, step):
        decay = real(self.weight_decay) * real(lr) if self.weight_decay else real(0)
        return float(real(lr)), float(decay)


class Adam(Optimizer):
    """Keras's Adam: ``m += (g - m) * (1 - beta_1)``, ``v += (g*g - v) * (1 - beta_2)``,
    ``alpha = lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)``, ``w -= m * alpha /
    (sqrt(v) + epsilon)``; amsgrad: ``vhat = max(vhat, v)`` in v's place."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, name="adam"):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name)
        self.beta_1 = _unit("beta_1", beta_1)
        self.beta_2 = _unit("beta_2", beta_2)
        self.epsilon = check_number("epsilon", epsilon, "a finite number >= 0", minimum=0.0)
        self.amsgrad = bool(amsgrad)

    def _slot_list(self) -> tuple:
        return ("momentum", "velocity", "velocity_hat") if self.amsgrad else ("momentum", "velocity")

    _STEP_SCALARS = ("alpha", "decay")
    _SETTINGS = Optimizer._SETTINGS + ("beta_1", "beta_2", "epsilon", "amsgrad")

    def _launch(self, members, real, backend):
        columns = self._slot_columns(members, ("tensor_m", "tensor_v", "tensor_vhat")[:len(self._slot_list())], backend)
        columns.setdefault("tensor_vhat", np.zeros(len(members), np.uint64))
        return columns, kernels.updates.adam, {
            "c1": float(real(1 - self.beta_1)), "c2": float(real(1 - self.beta_2)),
            "epsilon": float(real(self.epsilon)), "amsgrad": int(self.amsgrad)}

    def _step_scalars(self, real, lr, step):
        lr, t = real(lr), real(step + 1)
        with np.errstate(over="ignore", under="ignore"):
            b1, b2 = np.power(real(self.beta_1), t), np.power(real(self.beta_2), t)
            alpha = lr * np.sqrt(real(1) - b2) / (real(1) - b1)
        decay = real(self.weight_decay) * lr if self.weight_decay else real(0)
        return float(alpha), float(decay)


class AdamW(Adam):
    """Adam with decoupled weight decay (Keras's AdamW: ``weight_decay=0.004``)."""

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, clipnorm=None, clipvalue=None, global_clipnorm=None, name="adamw"):
        if weight_decay is None:
            raise ValueError("Argument `weight_decay` must be a float for AdamW. Received: weight_decay=None")
        super().__init__(learning_rate, beta_1, beta_2, epsilon, amsgrad, weight_decay, clipnorm, clipvalue,
                         global_clipnorm, name)


class _StepPlan:
    """A step's launches for the next step with the same variables, gradient arrays and
    settings, bound (``backend.bound_launch``) at the first such step. Gradients are held
    weakly: one freed does not fit (a type without weak references is not planned)."""

    __slots__ = ("variables", "grads", "releases", "settings", "backend", "launches", "bound")

    def __init__(self, variables, grads, releases, settings, backend, launches):
        self.variables, self.grads, self.releases, self.settings = variables, grads, releases, settings
        self.backend, self.launches, self.bound = backend, launches, None

    @classmethod
    def of(cls, grads, variables, releases: int, settings: tuple, backend, launches):
        try:  # (launches: (kernel, args, compute dtype) each)
            refs = list(map(weakref.ref, grads))
        except TypeError:
            return None
        return cls(list(variables), refs, releases, settings, backend, launches)

    def fits(self, grads, variables, releases: int, settings: tuple) -> bool:
        return (releases == self.releases and settings == self.settings and len(grads) == len(self.grads)
                == len(variables) and all(ref() is g for ref, g in zip(self.grads, grads, strict=True))
                and all(map(operator.is_, variables, self.variables)))

    def run(self, optimizer, lr: float, step: int) -> None:
        if self.bound is None:
            self.bound = [(self.backend.bound_launch(kernel, len(args["chunk_tensor"]), args,
                                                     optimizer._STEP_SCALARS), real)
                          for kernel, args, real in self.launches]
            self.launches = None
        for run, real in self.bound:
            run(*optimizer._step_scalars(real, lr, step))


# ------------------------------------------------------------------ checks
def _is_real(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _clip(argument: str, value):
    if value is None:
        return None
    return check_number(argument, value, "None or a finite number > 0", minimum=0.0, strict=True)


def _unit(argument: str, value) -> float:
    value = check_number(argument, value, "a float in [0, 1)", minimum=0.0)
    if value >= 1:
        raise ValueError(f"Invalid value for argument `{argument}`. Expected a float in [0, 1). Received: "
                         f"{argument}={value}")
    return value
