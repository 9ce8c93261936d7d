"""Initializers, as in Keras 3.

Each instance is a callable ``init(shape, dtype=None)`` returning a new array on the
default device, and also fills a variable's storage in place with :meth:`Initializer.fill`
(no temporary the size of the variable).
"""

from __future__ import annotations

import functools
import inspect
import math

import numpy as np

from . import backends
from .casting import cast_into, cast_on_host
from .dtypes import is_float, standardize_dtype, storage_dtype
from .random import check_seed, draw_seed, fill_random, normal_matrix
from .validation import check_number, check_option, check_scalar, shown, standardize_shape
from .values import as_storage_array, write


def is_initializer(obj) -> bool:
    """Whether a Variable's first argument is an initializer (a name, an Initializer, a
    callable) rather than a value: array-likes are values."""
    if isinstance(obj, (str, Initializer)):
        return True
    return callable(obj) and not hasattr(obj, "__array__") and not hasattr(obj, "__cuda_array_interface__")


class Initializer:
    """Base class. Subclasses implement :meth:`fill` and :meth:`get_config`."""

    def __call__(self, shape, dtype=None):
        """A new array of ``shape`` and ``dtype`` (default ``floatx()``) on the default device."""
        shape = standardize_shape(shape)
        dtype = standardize_dtype(dtype)
        backend, device = backends.for_device(None)  # (the default store's device)
        storage = backend.empty(shape, storage_dtype(dtype), device)
        self.fill(backend, storage, dtype)
        return backend.present(storage, dtype)

    def fill(self, backend, storage, dtype: str) -> None:
        """Write the initial values into ``storage`` (a storage array of ``backend``)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement fill()")

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: dict):
        """An instance from :meth:`get_config`'s dict (Keras's config format)."""
        if not isinstance(config, dict):
            raise TypeError(
                f"Invalid config for {cls.__name__}. Expected a dict of its arguments. Received: config={config!r}"
            )
        named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        accepted = [
            p.name for p in inspect.signature(cls.__init__).parameters.values() if p.kind in named and p.name != "self"
        ]
        unknown = [key for key in config if key not in accepted]
        if unknown:
            raise TypeError(
                f"Invalid config for {cls.__name__}. Expected keys among {accepted}. "
                f"Received unknown keys {unknown} in config={config!r}"
            )
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def scalar_word(owner, value, dtype: str):
    """``value``'s storage word in ``dtype`` for the initializer ``owner``, converted on
    the host once per dtype and value object (kept in ``owner._words``, made on first use:
    a subclass need not call ``__init__``); a value set since is converted anew, and an
    array value (which can change in place) at every fill."""
    words = owner.__dict__.setdefault("_words", {})  # dtype -> (value, word)
    hit = words.get(dtype)
    if hit is not None and hit[0] is value:
        return hit[1]
    host = np.asarray(value)
    word = cast_on_host(host, host.dtype.name, dtype)[()]
    if not isinstance(value, np.ndarray):
        words[dtype] = (value, word)
    return word


class Constant(Initializer):
    """Fills with a scalar ``value`` (cast to the variable's dtype).

    >>> Constant(3.0)((2,), "float32")
    array([3., 3.], dtype=float32)

    Any real scalar is a value, infinities and NaN included (as in Keras, where it is simply
    cast): a constant fill is what was asked for, unlike a NaN standard deviation. A bool
    fills 1 or 0. Arrays are not supported (Keras broadcasts them).
    """

    def __init__(self, value=0.0):
        self.value = check_scalar(value)

    def fill(self, backend, storage, dtype):
        backend.fill(storage, self._word(dtype))

    def _word(self, dtype: str):
        return scalar_word(self, self.value, dtype)

    def get_config(self):
        return {"value": self.value}


class Zeros(Initializer):
    """Fills with 0."""

    def fill(self, backend, storage, dtype):
        backend.fill(storage, storage.dtype.type(0))  # 0 is the all-zero word in every dtype


class Ones(Initializer):
    """Fills with 1."""

    def fill(self, backend, storage, dtype):
        _ONE.fill(backend, storage, dtype)


_ONE = Constant(1)  # (Ones' fill, its words converted once per dtype)


def compute_fans(shape) -> tuple[int, int]:
    """(fan_in, fan_out) of a kernel shape, as Keras computes them.

    1-D: both are the length; 2-D: (rows, columns); 3-D and up (convolution kernels,
    ``(*receptive_field, in_channels, out_channels)``): the channels times the receptive
    field size. A scalar gives (1, 1).
    """
    shape = tuple(shape)
    if len(shape) < 1:
        return 1, 1
    if len(shape) == 1:
        return int(shape[0]), int(shape[0])
    if len(shape) == 2:
        return int(shape[0]), int(shape[1])
    receptive_field = 1
    for dim in shape[:-2]:
        receptive_field *= dim
    return int(shape[-2] * receptive_field), int(shape[-1] * receptive_field)


class RandomInitializer(Initializer):
    """Base of the random initializers.

    ``seed``: an int makes the instance draw the same values on every call and every
    backend; None draws a seed now, from the source ``vs.set_seed`` re-seeds.
    """

    def __init__(self, seed=None):
        self.seed = draw_seed() if seed is None else check_seed(seed)
        self._init_seed = None if seed is None else self.seed  # a Python int: the config stays JSON

    def get_config(self) -> dict:
        return {"seed": self._init_seed}

    def _check_dtype(self, dtype: str) -> None:
        if not is_float(dtype):
            raise ValueError(
                f"{type(self).__name__} draws floating-point values; it cannot initialize "
                f"a {dtype} variable. Expected a float dtype. Received: dtype={dtype!r}"
            )

    def _fill(self, backend, storage, dtype, distribution, a, b) -> None:
        self._check_dtype(dtype)
        fill_random(backend, storage, dtype, self.seed, distribution, a, b)


class RandomUniform(RandomInitializer):
    """Uniform values in [minval, maxval) (maxval itself can appear after rounding).

    Drawn as ``minval + (maxval - minval) * u``, u from 24 (float64: 53) random bits.

    ``minval == maxval`` fills that value (as TensorFlow's and JAX's uniform do for floats).
    """

    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        low = check_number("minval", minval, "a finite number")
        high = check_number("maxval", maxval, "a finite number")
        problem = "minval <= maxval" if low > high else None
        if problem is None and not math.isfinite(high - low):  # the fill scales by the width
            problem = "maxval - minval to be finite"
        if problem:
            raise ValueError(
                f"Invalid values for arguments `minval` and `maxval`. Expected {problem}. "
                f"Received: minval={shown(minval)}, maxval={shown(maxval)}"
            )
        self.minval = low
        self.maxval = high
        super().__init__(seed)

    def fill(self, backend, storage, dtype):
        self._fill(backend, storage, dtype, "uniform", self.minval, self.maxval - self.minval)

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval, **super().get_config()}


def _check_normal(mean, stddev) -> tuple[float, float]:
    # stddev 0 fills the mean: harmless, and Keras accepts it; a negative one is a slip.
    mean = check_number("mean", mean, "a finite number")
    return mean, check_number("stddev", stddev, "a finite number >= 0", minimum=0.0)


class RandomNormal(RandomInitializer):
    """Normal values: ``mean + stddev * z``, z standard normal (Box-Muller)."""

    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean, self.stddev = _check_normal(mean, stddev)
        super().__init__(seed)

    def fill(self, backend, storage, dtype):
        self._fill(backend, storage, dtype, "normal", self.mean, self.stddev)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, **super().get_config()}


class TruncatedNormal(RandomInitializer):
    """Normal values within two standard deviations of the mean (inverse CDF of the
    truncated distribution: every element costs the same, no redraws).

    The values' own standard deviation is about 0.88 ``stddev``.
    """

    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean, self.stddev = _check_normal(mean, stddev)
        super().__init__(seed)

    def fill(self, backend, storage, dtype):
        self._fill(backend, storage, dtype, "truncated_normal", self.mean, self.stddev)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, **super().get_config()}


_MODES = ("fan_in", "fan_out", "fan_avg")
_SCALING_DISTRIBUTIONS = ("uniform", "truncated_normal", "untruncated_normal")
# The standard deviation of a standard normal truncated to [-2, 2]: dividing by it makes
# the truncated draw's variance equal `scale / fan` (Keras's constant).
TRUNCATION_CORRECTION = 0.87962566103423978


class VarianceScaling(RandomInitializer):
    """Values whose variance is ``scale / n``, n the fan chosen by ``mode``.

    - truncated_normal (or "normal"): stddev = sqrt(scale / n) / 0.87962566, within 2 stddev;
    - untruncated_normal: stddev = sqrt(scale / n);
    - uniform: within [-limit, limit], limit = sqrt(3 scale / n).

    n is fan_in, fan_out or (fan_in + fan_out) / 2 (:func:`compute_fans`), at least 1.
    """

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None):
        scale = check_number("scale", scale, "a finite number > 0", minimum=0.0, strict=True)
        mode = check_option("mode", mode, _MODES)
        # Keras lower-cases the distribution (not the mode).
        name = check_option("distribution", distribution, ("normal", *_SCALING_DISTRIBUTIONS), fold_case=True)
        name = "truncated_normal" if name == "normal" else name
        self.scale = scale
        self.mode = mode
        self.distribution = name
        super().__init__(seed)

    def fill(self, backend, storage, dtype):
        self._fill(backend, storage, dtype, *_scaled_draw(self.scale, self.mode, self.distribution, storage.shape))

    def get_config(self):
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution, **super().get_config()}


def _scaling(name: str, scale: float, mode: str, distribution: str, formula: str):
    def __init__(self, seed=None):
        VarianceScaling.__init__(self, scale=scale, mode=mode, distribution=distribution, seed=seed)

    def get_config(self):
        return {"seed": self._init_seed}

    __init__.__qualname__ = f"{name}.__init__"  # Python's unexpected-keyword errors name the class
    doc = f"{formula} (VarianceScaling(scale={scale}, mode={mode!r}, distribution={distribution!r}))."
    return type(name, (VarianceScaling,), {"__init__": __init__, "get_config": get_config, "__doc__": doc})


GlorotUniform = _scaling("GlorotUniform", 1.0, "fan_avg", "uniform", "Uniform within sqrt(6 / (fan_in + fan_out))")
GlorotNormal = _scaling("GlorotNormal", 1.0, "fan_avg", "truncated_normal",
                        "Truncated normal, stddev sqrt(2 / (fan_in + fan_out))")
HeUniform = _scaling("HeUniform", 2.0, "fan_in", "uniform", "Uniform within sqrt(6 / fan_in)")
HeNormal = _scaling("HeNormal", 2.0, "fan_in", "truncated_normal", "Truncated normal, stddev sqrt(2 / fan_in)")
LecunUniform = _scaling("LecunUniform", 1.0, "fan_in", "uniform", "Uniform within sqrt(3 / fan_in)")
LecunNormal = _scaling("LecunNormal", 1.0, "fan_in", "truncated_normal", "Truncated normal, stddev sqrt(1 / fan_in)")
for _cls in (GlorotUniform, GlorotNormal, HeUniform, HeNormal, LecunUniform, LecunNormal):
    _cls.__module__ = __name__


@functools.lru_cache(maxsize=1024)
def _scaled_draw(scale: float, mode: str, distribution: str, shape: tuple) -> tuple:
    """``(distribution, a, b)`` of a VarianceScaling fill of ``shape`` (cached: a model's
    variables repeat a few shapes)."""
    fan_in, fan_out = compute_fans(shape)
    fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[mode]
    scale = scale / max(1.0, fan)
    if distribution == "truncated_normal":
        return "truncated_normal", 0.0, math.sqrt(scale) / TRUNCATION_CORRECTION
    if distribution == "untruncated_normal":
        return "normal", 0.0, math.sqrt(scale)
    limit = math.sqrt(3.0 * scale)
    return "uniform", -limit, 2.0 * limit


class Orthogonal(RandomInitializer):
    """An orthogonal matrix (times ``gain``), reshaped to the variable's shape.

    As Keras: the QR decomposition of a seeded normal matrix of shape
    (max(rows, cols), min(rows, cols)), rows being the product of all dimensions but the
    last, with Q's columns multiplied by the signs of R's diagonal; transposed when
    rows < cols. QR runs on the variable's device (NumPy or CuPy ``linalg.qr``) in float32
    (float64 for float64 variables), on temporaries the size of the matrix.
    """

    def __init__(self, gain=1.0, seed=None):
        self.gain = check_number("gain", gain, "a finite number")
        super().__init__(seed)

    def fill(self, backend, storage, dtype):
        self._check_dtype(dtype)
        shape = storage.shape
        if len(shape) < 2:
            raise ValueError(
                f"Orthogonal can only initialize variables of at least two dimensions. "
                f"Received: shape={shape} of rank {len(shape)}."
            )
        rows = int(np.prod(shape[:-1]))
        cols = shape[-1]
        xp = backend.xp
        a, work = normal_matrix(backend, (max(rows, cols), min(rows, cols)), dtype, self.seed,
                                backend.device_of(storage))
        with backend.on_device(backend.device_of(storage)):
            q, r = xp.linalg.qr(a)
            q = q * xp.sign(xp.diagonal(r))
            if rows < cols:
                q = q.T
            q = xp.asarray(q * q.dtype.type(self.gain), order="C").reshape(shape)
        cast_into(backend, q, work, storage, dtype)

    def get_config(self):
        return {"gain": self.gain, **super().get_config()}


class Identity(Initializer):
    """``gain`` on the main diagonal, 0 elsewhere; 2-D variables only (any dtype)."""

    def __init__(self, gain=1.0):
        check_number("gain", gain, "a finite number")
        self.gain = check_scalar(gain, "gain", "Identity")

    def fill(self, backend, storage, dtype):
        shape = storage.shape
        if len(shape) != 2:
            raise ValueError(
                f"Identity can only initialize 2-D variables (matrices). Received: shape={shape} of rank {len(shape)}."
            )
        backend.fill(storage, storage.dtype.type(0))  # 0 is the all-zero word in every dtype
        rows, cols = shape
        word = scalar_word(self, self.gain, dtype)
        with backend.on_device(backend.device_of(storage)):
            storage.reshape(-1)[:: cols + 1][: min(rows, cols)].fill(word)  # the diagonal, in place

    def get_config(self):
        return {"gain": self.gain}


zeros = Zeros
ones = Ones
constant = Constant
random_uniform = RandomUniform
random_normal = RandomNormal
truncated_normal = TruncatedNormal
variance_scaling = VarianceScaling
glorot_uniform = GlorotUniform
glorot_normal = GlorotNormal
he_uniform = HeUniform
he_normal = HeNormal
lecun_uniform = LecunUniform
lecun_normal = LecunNormal
orthogonal = Orthogonal
identity = Identity

_CLASSES = (
    Constant, Zeros, Ones, RandomUniform, RandomNormal, TruncatedNormal, VarianceScaling,
    GlorotUniform, GlorotNormal, HeUniform, HeNormal, LecunUniform, LecunNormal, Orthogonal, Identity,
)
def fill_storage(init, backend, device, storage, shape, dtype) -> None:
    """Initialize ``storage`` from an initializer object or any callable ``f(shape, dtype)``."""
    if isinstance(init, Initializer):
        init.fill(backend, storage, dtype)
        return
    result = init(shape, dtype)
    array, array_dtype = as_storage_array(result, backend, device, dtype)
    if array.ndim != 0 and array.shape != shape:
        raise ValueError(
            f"The initializer {init!r} returned an array of shape {array.shape}; expected the "
            f"requested shape {shape} (or a scalar)."
        )
    write(backend, storage, dtype, array, array_dtype)


_REGISTRY = {cls.__name__: cls for cls in _CLASSES}
_REGISTRY.update({
    "constant": Constant, "zeros": Zeros, "ones": Ones, "random_uniform": RandomUniform,
    "random_normal": RandomNormal, "truncated_normal": TruncatedNormal, "variance_scaling": VarianceScaling,
    "glorot_uniform": GlorotUniform, "glorot_normal": GlorotNormal, "he_uniform": HeUniform,
    "he_normal": HeNormal, "lecun_uniform": LecunUniform, "lecun_normal": LecunNormal,
    "orthogonal": Orthogonal, "identity": Identity,
    # Keras's short and legacy names
    "uniform": RandomUniform, "normal": RandomNormal, "zero": Zeros, "one": Ones,
    "OrthogonalInitializer": Orthogonal, "IdentityInitializer": Identity,
})


def get(identifier):
    """An initializer, as Keras's ``initializers.get``.

    Takes None (returns None), a name, a config dict ``{"class_name": ..., "config": {...}}``,
    an instance, a class (instantiated with no arguments), or a callable ``f(shape, dtype)``.

    Raises:
        ValueError: an unknown name or class name (the message lists the known ones), a
            config dict without "class_name", a bad argument in the config, or an object
            that is none of the above.
        TypeError: a "class_name" that is not a string, a "config" that is not a dict or
            has keys the class does not take, or an argument of the wrong type.
    """
    if identifier is None or isinstance(identifier, Initializer):
        return identifier
    if isinstance(identifier, dict):
        if "class_name" not in identifier:
            raise ValueError(
                f"Could not interpret initializer config: {identifier!r}. Expected a dict with a "
                f"'class_name' key and an optional 'config' dict."
            )
        return _lookup(identifier["class_name"]).from_config(identifier.get("config", {}))
    if isinstance(identifier, str):
        return _by_name(identifier)
    if isinstance(identifier, type):
        instance = identifier()
        if callable(instance):  # Keras instantiates any class given; one must give an initializer
            return instance
    elif callable(identifier):
        return identifier
    raise ValueError(
        f"Could not interpret initializer: {identifier!r}. Expected a name, a config dict, an "
        f"Initializer, or a callable f(shape, dtype)."
    )


_by_name_states: dict = {}  # name -> (class, prototype's __dict__, whether it draws a seed)


def _by_name(name: str) -> Initializer:
    """A new instance of the initializer called ``name``, with its default arguments:
    a copy of a prototype validated once (variables made from a name, hundreds per
    model, skip the argument checks), with a fresh seed for a random one (one draw, as
    ``cls()`` makes)."""
    entry = _by_name_states.get(name)
    if entry is None:
        cls = _lookup(name)
        random = issubclass(cls, RandomInitializer)
        state = dict((cls(seed=0) if random else cls()).__dict__)
        if random:
            state["_init_seed"] = None
        entry = _by_name_states[name] = (cls, state, random)
    cls, state, random = entry
    instance = object.__new__(cls)
    instance.__dict__.update(state)
    if random:
        instance.seed = draw_seed()
    return instance


def _lookup(name) -> type:
    if not isinstance(name, str):
        raise TypeError(f"Invalid initializer name: {name!r}. Expected a string, one of {sorted(_REGISTRY)}.")
    if name not in _REGISTRY:
        raise ValueError(f"Unknown initializer: {name!r}. Expected one of {sorted(_REGISTRY)}.")
    return _REGISTRY[name]
