"""Number types for command-line flags: a value out of range is one clear line.

``number(int, "whole number of MB", 0)`` is an ``argparse`` type that takes
whole numbers of 0 or more and otherwise fails with ``not a whole number of
MB: 'x'`` or ``must be 0 or more`` (or the ``hint`` given).
"""

from __future__ import annotations

import argparse
from typing import Callable, Optional, TypeVar

N = TypeVar("N", int, float)


def number(convert: Callable[[str], N], noun: str, minimum: N, *, exclusive: bool = False,
           hint: Optional[str] = None) -> Callable[[str], N]:
    """An argparse type: ``convert(text)``, at least ``minimum`` (more than it when
    ``exclusive``); ``hint`` replaces the default out-of-range message."""

    def parse(text: str) -> N:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {noun}: {text!r}") from None
        if value < minimum or (exclusive and value == minimum):
            raise argparse.ArgumentTypeError(
                hint or (f"must be more than {minimum}" if exclusive else f"must be {minimum} or more"))
        return value

    return parse


#: Common shapes.
count = number(int, "whole number", 1)
seconds = number(float, "number of seconds", 0.0)
seconds_above_zero = number(float, "number of seconds", 0.0, exclusive=True)
