"""Shared by the bench scripts: the common command line, the table they print, and the DiT sampling uses at a
noise level (`level_denoiser`)."""

from __future__ import annotations

import argparse
import time
from typing import Any, Callable, Sequence

import torch

from sora_nb.backend import Limits


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


MAX_GUIDANCE = Limits.max_guidance  # what generate accepts (every model here)


def check_guidance(p: argparse.ArgumentParser, value: float | Sequence[float] | None) -> None:
    """``--guidance`` (one number, or a list of them; None: the model's default) must be in [0, 50], as
    generate would require: a usage error before any model loads (NaN fails too)."""
    if value is None:
        return
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not all(0.0 <= g <= MAX_GUIDANCE for g in values):
        if isinstance(value, (list, tuple)):
            p.error(f"--guidance values must be numbers in [0, {MAX_GUIDANCE:g}], got {list(value)}")
        p.error(f"--guidance must be a number in [0, {MAX_GUIDANCE:g}], got {value}")


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


def level_denoiser(backend: Any, prompts: Sequence[str], guidance: float) -> Callable[[float], tuple[Any, torch.Tensor, torch.Tensor]]:
    """sigma -> (DiT, token states, masks) for a batch of ``prompts``, as sampling picks them: each prompt's
    ``backend.denoiser(request)`` at ``guidance`` (the default negative prompt), so a low-noise expert takes
    the levels at or below its ``expert_switch`` with its own text states. The states are every prompt's
    conditional row, then (guidance other than 0 and 1) every prompt's negative row, zero-padded to one length."""
    import sora_nb

    gen = sora_nb.Generator(backend)
    picks = [backend.denoiser(gen.request(prompt, guidance=guidance)) for prompt in prompts]
    pad = torch.nn.functional.pad

    def at(sigma: float) -> tuple[Any, torch.Tensor, torch.Tensor]:
        chosen = [pick(sigma) for pick in picks]
        dit = chosen[0][0]
        if any(d is not dit for d, _, _ in chosen):
            raise RuntimeError(f"the prompts' denoisers pick different DiTs at sigma {sigma:g}")
        rows = [(t[i:i + 1], m[i:i + 1]) for i in range(chosen[0][1].shape[0]) for _, t, m in chosen]
        n = max(t.shape[1] for t, _ in rows)
        return (dit, torch.cat([pad(t, (0, 0, 0, n - t.shape[1])) for t, _ in rows]),
                torch.cat([pad(m, (0, n - m.shape[1])) for _, m in rows]))

    return at


def expert_note(backend: Any) -> str:
    """How the backend splits the noise levels between its DiTs, for a script's header line."""
    if getattr(backend, "low", None) is None:
        return "one DiT (no low-noise expert)"
    return f"the low-noise expert takes the levels at or below {backend.expert_switch:g}, as in sampling"


def load_models(p: argparse.ArgumentParser, names: Sequence[str | None], option: str = "--weights") -> list[Any]:
    """``sora_nb.load`` of every name (None: the shipped model), all before any is used, so that a bad second
    folder is a usage error at once, not a traceback after the first folder's whole evaluation."""
    import sora_nb

    out = []
    for name in names:
        try:
            out.append(sora_nb.load(name) if name is not None else sora_nb.load())
        except Exception as e:  # noqa: BLE001 (any load failure is the argument's: unknown name, bad folder, ...)
            p.error(f"{option} {name!r}: {e}")
    return out
