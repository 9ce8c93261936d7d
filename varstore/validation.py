"""Checks of user-given values that several modules share. Each raises at the moment the
value is given, naming the argument, what was received and what is expected."""

from __future__ import annotations

import numbers
import threading


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
        raise ValueError(
            f"Invalid value for argument `name`. Expected a non-empty string without '/' "
            f"(or None for an automatic name). Received: name={name!r}"
        )
    check_utf8("name", name)
    return name


def check_callable_or_none(attribute: str, value):
    """``value`` if it is None or callable, else a TypeError naming ``attribute``."""
    if value is not None and not callable(value):
        raise TypeError(
            f"Invalid value for attribute `{attribute}`. Expected a callable (such as a Keras "
            f"{attribute}) or None. Received: {attribute}={value!r}"
        )
    return value
