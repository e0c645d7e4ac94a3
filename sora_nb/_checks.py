"""Argument checks shared by the API, the CLI and the widgets.

Every check raises ``TypeError`` (wrong kind of value) or ``ValueError`` (right kind, out of range)
with a message that names the parameter and says what is allowed, e.g.
``ValueError: duration must be > 0 and <= 4.0 seconds, got -1.0``.
"""

from __future__ import annotations

import math
import numbers
import os
import unicodedata
from pathlib import Path
from typing import Any, Sequence

MB = 2**20  # a mebibyte: the payload and trace limits (trace, inspector, frontend)


def shown(value: float) -> str:
    """``value`` as short as ``:g`` writes it, unless that rounds it: ``50.0000001`` must not read as ``50``."""
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


def visible(text: str) -> bool:
    """Whether ``text`` holds a character that is not a space, a control or a format character (e.g. a
    zero-width space): a prompt of only such characters says nothing to a text encoder."""
    return any(unicodedata.category(ch)[0] not in "CZ" for ch in text)


def check_str(name: str, value: Any, *, allow_empty: bool = False, max_len: int = 1000) -> str:
    """A string, stripped; empty allowed only when asked; at most ``max_len`` characters; no control characters
    but tab, newline and carriage return."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    stripped = value.strip()
    if not allow_empty and not visible(stripped):
        raise ValueError(f"{name} must be a non-empty string (1 to {max_len} characters, at least one of them "
                         f"visible), got {value!r}")
    if len(stripped) > max_len:
        raise ValueError(f"{name} must be at most {max_len} characters, got {len(stripped)}")
    for i, ch in enumerate(stripped):  # a NUL, an escape, ...: never meant, and netCDF drops a NUL from the trace
        if ch not in "\t\n\r" and unicodedata.category(ch) == "Cc":
            raise ValueError(f"{name} must not hold control characters (tabs and newlines are allowed); got "
                             f"U+{ord(ch):04X} at position {i}")
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
    span = f"{'>' if lo_open else '>='} {shown(lo)} and <= {shown(hi)}{unit_s}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number {span}, got {type(value).__name__} {value!r}")
    try:
        value = float(value)
    except OverflowError:  # an int (or Fraction) too large for a float: not finite either
        raise ValueError(f"{name} must be a finite number {span}, got a number too large for a float") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number {span}, got {value}")
    if value < lo or value > hi or (lo_open and value == lo):
        raise ValueError(f"{name} must be {span}, got {shown(value)}")
    return value


def check_path(name: str, value: Any) -> Path:
    """A file-system path (``str`` or ``os.PathLike``), ``~`` expanded."""
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(value).__name__}")
    if not str(os.fspath(value)).strip():  # Path("") is "." (the message said "got '.'")
        raise ValueError(f"{name} must be a file name, got an empty string")
    return Path(value).expanduser()


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


OBSERVER_METHODS = ("on_start", "on_step", "on_end")


def check_run_options(observers: Any, cancel: Any) -> tuple[list[Any], Any]:
    """``observers``: an iterable of objects with at least one of ``on_start``/``on_step``/``on_end`` (None: none);
    ``cancel``: None or an event with ``is_set()`` (a ``threading.Event``). Checked before any step runs."""
    if observers is None:
        observers = []
    elif isinstance(observers, (str, bytes)) or not hasattr(observers, "__iter__"):
        raise TypeError(f"observers must be a list of observers (objects with {', '.join(OBSERVER_METHODS)}), "
                        f"got {type(observers).__name__}")
    observers = list(observers)
    for i, obs in enumerate(observers):
        if not any(callable(getattr(obs, m, None)) for m in OBSERVER_METHODS):
            raise TypeError(f"observers[{i}] must have a method {', '.join(OBSERVER_METHODS[:-1])} or "
                            f"{OBSERVER_METHODS[-1]}, got {type(obs).__name__}")
    if cancel is not None and not callable(getattr(cancel, "is_set", None)):
        raise TypeError(f"cancel must be a threading.Event or None, got {type(cancel).__name__}")
    return observers, cancel
