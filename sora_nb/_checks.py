"""Argument checks shared by the API, the CLI and the widgets.

Every check raises ``TypeError`` (wrong kind of value) or ``ValueError`` (right kind, out of range)
with a message that names the parameter and says what is allowed, e.g.
``ValueError: duration must be > 0 and <= 4.0 seconds, got -1.0``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Sequence


def check_str(name: str, value: Any, *, allow_empty: bool = False, max_len: int = 1000) -> str:
    """A string, stripped; empty allowed only when asked; at most ``max_len`` characters."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    stripped = value.strip()
    if not stripped and not allow_empty:
        raise ValueError(f"{name} must be a non-empty string (1 to {max_len} characters), got {value!r}")
    if len(stripped) > max_len:
        raise ValueError(f"{name} must be at most {max_len} characters, got {len(stripped)}")
    return stripped


def check_int(name: str, value: Any, lo: int, hi: int) -> int:
    """An integer (not a bool, not a float) with ``lo <= value <= hi``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer in [{lo}, {hi}], got {type(value).__name__} {value!r}")
    value = int(value)
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {value}")
    return value


def check_float(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False, unit: str = "") -> float:
    """A finite real number in ``[lo, hi]`` (or ``(lo, hi]`` when ``lo_open``)."""
    unit_s = f" {unit}" if unit else ""
    span = f"{'>' if lo_open else '>='} {lo:g} and <= {hi:g}{unit_s}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number {span}, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number {span}, got {value}")
    if value < lo or value > hi or (lo_open and value == lo):
        raise ValueError(f"{name} must be {span}, got {value:g}")
    return value


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """One of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """A real ``bool`` (not 0/1, not a string)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return value
