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
