"""Shared by the bench scripts: the common command line and the table they print."""

from __future__ import annotations

import argparse
import time
from typing import Callable, Sequence

import torch


def _integer(text: str, low: int, what: str) -> int:
    """``text`` as an integer >= ``low``, else argparse's usage error naming ``what`` is expected."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
    return value


def count(text: str) -> int:
    """argparse type of a count (clips, steps, repeats, threads, ...): an integer >= 1, else a usage error."""
    return _integer(text, 1, "an integer >= 1")


def count_or_zero(text: str) -> int:
    """argparse type of a count that 0 turns off: an integer >= 0, else a usage error."""
    return _integer(text, 0, "an integer >= 0 (0: off)")


def parser(doc: str, *, repeats: int | None = None) -> argparse.ArgumentParser:
    """An argument parser with ``--threads`` and, for a script that times repeated calls, ``--repeats`` (the
    script adds its own options)."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    if repeats is not None:
        p.add_argument("--repeats", type=count, default=repeats, help=f"timed calls after a warm-up (default {repeats})")
    p.add_argument("--threads", type=count, default=None, help="torch threads (default: torch's choice)")
    return p


def parse(p: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse the command line and apply ``--threads``."""
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def print_table(rows: Sequence[Sequence[str]], header: Sequence[str] = ("measure", "value")) -> None:
    """Print ``rows`` as a markdown table, columns padded to their widest cell."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` calls (after one warm-up)."""
    fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out
