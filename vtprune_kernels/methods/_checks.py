"""Argument checks shared by the pruning methods. Every error names the argument."""
from __future__ import annotations

import operator
from typing import Sequence, Tuple, Union

from .. import validation

BACKENDS = ("auto", "cpu", "reference", "cuda")


def integer(name: str, value) -> int:
    """``value`` as a Python int of any sign (bools and floats are rejected)."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def count(name: str, value, minimum: int = 0) -> int:
    """``value`` as a Python int >= minimum (bools and floats are rejected)."""
    value = integer(name, value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def keep(value) -> int:
    """A per-image token budget: an int >= 1 (one rule for the methods and the command line)."""
    value = count("keep", value)
    if value < 1:
        raise ValueError(
            "keep must be >= 1 visual token per image (per tile), got 0: to give the language model no "
            "visual tokens, leave the image out of the prompt"
        )
    return value


def fraction(name: str, value, *, upper_open: bool = False) -> float:
    """``value`` as a float in [0, 1] (or [0, 1) with ``upper_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number in [0, 1{')' if upper_open else ']'}, got {value!r}")
    value = float(value)
    if not (0.0 <= value < 1.0 if upper_open else 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must lie in [0, 1{')' if upper_open else ']'}, got {value}")
    return value


def grid(value: Union[int, Sequence[int]], name: str = "grid") -> Tuple[int, int]:
    """(h, w) of a token grid; a single int N means one row of N tokens."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"{name} must be (h, w), got {value!r}")
        return count(f"{name}[0]", value[0], 1), count(f"{name}[1]", value[1], 1)
    return 1, count(name, value, 1)


def window(value: Union[int, Sequence[int]]) -> Tuple[int, int]:
    """(wh, ww) window sizes, both >= 1; an int means a square window."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"window must be an int or (wh, ww), got {value!r}")
        return count("window[0]", value[0], 1), count("window[1]", value[1], 1)
    return count("window", value, 1), count("window", value, 1)


def backend(value: str) -> str:
    if value not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {value!r}")
    return value


def float_tensor(name: str, t, ndim: int):
    """A floating tensor of ``ndim`` dimensions (fp32/fp16/bf16), as the ops take them."""
    validation.check_tensor(name, t, ndim, validation.FLOAT_DTYPES)
    return t
