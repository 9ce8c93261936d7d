"""Checks of user-given values that several modules share. Each raises at the moment the
value is given, naming the argument, what was received and what is expected."""

from __future__ import annotations

import math
import numbers
import threading

import numpy as np

from .dtypes import FLOAT_DTYPES, INT_DTYPES, WORD_DTYPES
from .errors import ArgumentTypeError

_NUMERIC_DTYPES = FLOAT_DTYPES | INT_DTYPES


def check_utf8(argument: str, text: str) -> None:
    """Names and paths become checkpoint keys, which the safetensors format stores as
    UTF-8: a string with a lone surrogate (``"\\ud800"``) could be saved by no reader, so
    it is refused when it is given.

    Raises:
        ValueError: ``text`` cannot be encoded as UTF-8.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected a string that can be encoded as UTF-8 "
            f"({error.reason} at position {error.start}). Received: {argument}={text!r}"
        ) from None


def check_seconds(argument: str, value) -> float:
    """A timeout: a real number of seconds, > 0 and at most ``threading.TIMEOUT_MAX`` (the
    longest wait Python's locks accept; about 292 years).

    Raises:
        TypeError: ``value`` is not a real number (a bool or a string is not).
        ValueError: it is not in (0, TIMEOUT_MAX] (NaN and infinity are not).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"Invalid type for argument `{argument}`. Expected a number of seconds (int or float). "
                        f"Received: {argument}={value!r} of type {type(value).__name__}")
    try:
        seconds = float(value)
    except OverflowError:  # an int beyond any float
        seconds = float("inf")
    if not 0 < seconds <= threading.TIMEOUT_MAX:
        raise ValueError(f"Invalid value for argument `{argument}`. Expected a number of seconds > 0 and at most "
                         f"{threading.TIMEOUT_MAX:.0f} (the longest wait Python's threads support). "
                         f"Received: {argument}={value!r}")
    return seconds


def check_choice(argument: str, value, allowed: tuple) -> str:
    """``value`` if it is one of the strings ``allowed`` ("none" for None), else a ValueError."""
    if value is None:
        return "none"
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected one of "
            f"{[None, *allowed]}. Received: {argument}={value!r}"
        )
    return value


def check_name(name):
    """A variable's ``name``: None (an automatic one) or a non-empty UTF-8 string without '/'."""
    if name is None:
        return None
    if not isinstance(name, str) or name == "" or "/" in name:
        raise (ValueError if isinstance(name, str) else ArgumentTypeError)(
            f"Invalid value for argument `name`. Expected a non-empty string without '/' "
            f"(or None for an automatic name). Received: name={name!r}"
        )
    check_utf8("name", name)
    return name


def check_callable_or_none(attribute: str, value):
    """``value`` if it is None or callable, else an ArgumentTypeError (a TypeError; a
    ValueError, as Keras raises) naming ``attribute``."""
    if value is not None and not callable(value):
        raise ArgumentTypeError(
            f"Invalid value for attribute `{attribute}`. Expected a callable (such as a Keras "
            f"{attribute}) or None. Received: {attribute}={value!r}"
        )
    return value


MAX_DIMS = 64  # NumPy's (and CuPy's) most dimensions of an array


def standardize_shape(shape) -> tuple:
    """``shape`` as a tuple of non-negative ints; a clear ArgumentTypeError (a TypeError and a
    ValueError) for a wrong type, ValueError for a negative size or too many dimensions."""
    if type(shape) is tuple and len(shape) <= MAX_DIMS and all(type(d) is int and d >= 0 for d in shape):
        return shape  # the common case, on every variable's creation
    if shape is None or isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
        raise ArgumentTypeError(f"Invalid shape: {shape!r}. Expected a tuple or list of non-negative ints.")
    dims = tuple(shape)
    if len(dims) > MAX_DIMS:
        raise ValueError(f"Invalid shape: {shown(shape)} has {len(dims)} dimensions. Expected at most "
                         f"{MAX_DIMS} (NumPy's and CuPy's limit).")
    for d in dims:
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)) or d < 0:
            raise (ArgumentTypeError if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer))
                   else ValueError)(
                f"Invalid shape: {shape!r}. Expected a tuple or list of non-negative ints; "
                f"dimension {d!r} is not one."
            )
    return tuple(int(d) for d in dims)


def shown(value) -> str:
    """``repr(value)`` for an error message, shortened: a 400-digit int or a long list
    would bury the message."""
    text = repr(value)
    return text if len(text) <= 100 else f"{text[:60]}...{text[-20:]} ({len(text)} characters)"


def is_real_number(value) -> bool:
    """A Python, NumPy or ml_dtypes real number, or a 0-d array (NumPy, CuPy...) of one;
    not a bool, which Python counts as an int but which as a stddev or a bound is a slip."""
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, numbers.Real):
        return True
    dtype = getattr(value, "dtype", None)
    return isinstance(dtype, np.dtype) and dtype.name in _NUMERIC_DTYPES and getattr(value, "ndim", None) == 0


def check_number(argument: str, value, expected: str, *, minimum: float | None = None, strict: bool = False) -> float:
    """``value`` as a finite float, or a TypeError (not a number) or ValueError (not finite,
    or below ``minimum``) naming ``argument``. Checked here, at construction, because the
    fill kernels would turn a bad value into NaN or infinity, or fail deep inside numba."""
    if not is_real_number(value):
        note = " (a bool is not accepted as a number)" if isinstance(value, (bool, np.bool_)) else ""
        raise TypeError(
            f"Invalid value for argument `{argument}`. Expected {expected}{note}. Received: {argument}={shown(value)}"
        )
    try:
        number = float(value)
    except OverflowError:  # an int (or Fraction) beyond float64's range
        number = math.inf
    if not math.isfinite(number) or (minimum is not None and (number <= minimum if strict else number < minimum)):
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected {expected}. Received: {argument}={shown(value)}"
        )
    return number


def check_option(argument: str, value, allowed, *, fold_case: bool = False) -> str:
    """``value`` if it is one of the strings ``allowed`` (compared lower-cased with
    ``fold_case``), else a TypeError (not a string) or ValueError naming ``argument``."""
    if not isinstance(value, str):
        raise TypeError(
            f"Invalid value for argument `{argument}`. Expected a string, one of {list(allowed)}. "
            f"Received: {argument}={shown(value)}"
        )
    folded = value.lower() if fold_case else value
    if folded not in allowed:
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected one of {list(allowed)}. "
            f"Received: {argument}={shown(value)}"
        )
    return folded


def check_scalar(value, argument: str = "value", owner: str = "Constant"):
    """``value`` as a NumPy or Python scalar whose own dtype the fill casts from (so an int
    fills an int variable exactly, and wraps as NumPy's astype when it does not fit)."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    dtype = getattr(value, "dtype", None)
    if isinstance(dtype, np.dtype) and dtype.name in WORD_DTYPES and getattr(value, "ndim", None) == 0:
        value = float(value)  # exact; the host cast reads these dtypes as raw words
    elif not isinstance(value, np.generic) and getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        value = value.item()  # a 0-d CuPy (or other device) array, which NumPy cannot read
    try:
        array = np.asarray(value)
    except Exception:  # what NumPy cannot read (ragged lists, device arrays) is no real scalar
        array = np.asarray(None)
    if isinstance(value, int) and array.dtype.kind == "O":
        raise ValueError(
            f"Invalid value for argument `{argument}` of {owner}. Expected a real scalar; an int must "
            f"fit in 64 bits (pass a float for a larger value). Received: {argument}={shown(value)}"
        )
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"Invalid value for argument `{argument}` of {owner}. Expected a real scalar (a number or a "
            f"bool). Received: {argument}={shown(value)}"
        )
    if array.ndim != 0:
        raise ValueError(
            f"Invalid value for argument `{argument}` of {owner}. Expected a real scalar; arrays are "
            f"not supported. Received: {argument}={shown(value)}"
        )
    return value
