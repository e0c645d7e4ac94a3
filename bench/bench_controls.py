"""Latency of the live controls (sora_nb.controls) with the embedded model, from code; prints a table.

    .venv/bin/python bench/bench_controls.py [--repeats 10] [--steps 20] [--threads N]

A panel is driven the way the browser drives it: a slider value changes (``ui.guidance.value = g``,
what the kernel does when a released slider's value arrives), and the panel's own clock measures,
from that change:

- *first preview*: the x0 preview of every frame after the first denoising step has been pushed to
  the preview widget (goal <= 0.3 s);
- *finished clip*: the clip is decoded, encoded to mp4 and set on the player (goal <= 1.5 s).

Rows for a change while idle, and for a change *during* a run (it cancels the run in flight, which
stops between two steps and skips the decode; the header counts the runs so cancelled, and a warning
says when a change came after its run's denoising, so that those rows mix in idle changes). Typed
fields (prompt, negative prompt) add the 0.3 s debounce after the last keystroke on top. The browser test (tests/browser/test_controls_browser.py)
measures the same from mouse release to what the page shows.
"""

from __future__ import annotations

import statistics
import time

import torch

import sora_nb
from _common import count, parse, parser, print_table
from sora_nb.controls import Controls

PROMPT = "a red circle moving right"
GOALS = {"first_preview": 0.3, "finished": 1.5}
MIN_STEPS = 6  # fewest --steps for which a change after step 3's preview still finds the run going (4: often not)


def row(name: str, values: list[float], goal: float | None) -> tuple[str, str, str, str, str]:
    med = statistics.median(values)
    verdict = "" if goal is None else ("ok" if med <= goal else "MISSED")
    return (name, f"{med:.3f}", f"{min(values):.3f}", f"{max(values):.3f}",
            "" if goal is None else f"<= {goal:g}  {verdict}")


def main() -> None:
    cli = parser(__doc__, repeats=10)
    cli.add_argument("--steps", type=count, default=20)
    args = parse(cli)
    if args.steps < MIN_STEPS:  # the change "during a run" comes once step 3's preview shows; at 4 steps the
        # preview throttle often shows step 4 first, and the change lands after the run (an idle change)
        cli.error(f"--steps must be >= {MIN_STEPS} (the timed change comes at step 3 of a run or later, and must "
                  f"come before the run's last step), got {args.steps}")
    if args.repeats > 48:  # the changes step guidance by 0.5 from 1: past 48 repeats they pass the slider's 50
        cli.error(f"--repeats must be at most 48 (each change moves guidance by 0.5 from 1, up to 50), got {args.repeats}")

    gen = sora_nb.load("shapes")
    ui = Controls(gen, prompt=PROMPT, seed=0, steps=args.steps, guidance=5.0)
    ui.wait(300)                                      # warm-up: first clip, prompt encoded and cached
    guidances = [1.0 + 0.5 * i for i in range(2 * args.repeats + 2)]

    idle = []
    for g in guidances[: args.repeats]:               # a change while idle
        ui.guidance.value = g
        ui.wait(300)
        assert ui.video.params["guidance"] == g
        idle.append(ui.timings[-1])

    during = []
    cancelled_before = ui.stats["cancelled"]
    for g in guidances[args.repeats: 2 * args.repeats]:   # a change while a run is at its 3rd step or so
        ui.seed.value = ui.seed.value + 1
        run = ui._generation
        deadline = time.monotonic() + 60
        while not (ui.preview.run == run and ui.preview.step >= 3) and time.monotonic() < deadline:
            time.sleep(0.002)
        ui.guidance.value = g
        ui.wait(300)
        assert ui.video.params["guidance"] == g
        during.append(ui.timings[-1])
    cancelled = ui.stats["cancelled"] - cancelled_before
    ui.close()

    rows = [("measure (s, from the value change)", "median", "min", "max", "goal")]
    landed = "during a run" if cancelled >= args.repeats else f"during a run (only {cancelled} of {args.repeats})"
    for label, runs in (("idle", idle), (landed, during)):
        rows.append(row(f"{label}: first preview", [t["first_preview"] for t in runs], GOALS["first_preview"]))
        rows.append(row(f"{label}: finished clip", [t["finished"] for t in runs], GOALS["finished"]))
    print(f"model {gen.name}, {args.steps} steps, 2 s clip, torch threads {torch.get_num_threads()}, "
          f"{args.repeats} changes each; runs cancelled by a change during them: {cancelled}/{args.repeats}")
    print_table(rows[1:], header=rows[0])
    if cancelled < args.repeats:
        print(f"WARNING: only {cancelled} of the {args.repeats} changes meant for a run in flight cancelled one; the "
              f"others came after the run's denoising, so the \"during a run\" rows mix in idle changes. Use more "
              f"--steps (now {args.steps}).")


if __name__ == "__main__":
    main()
