"""Checks of user-given values that several modules share. Each raises at the moment the
value is given, naming the argument, what was received and what is expected."""

from __future__ import annotations


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
