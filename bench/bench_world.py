"""Benchmark sora_nb.world: how fast the sampler feeds training, and how fast the evaluator judges.

    .venv/bin/python bench/bench_world.py            # 200 clips per row
    .venv/bin/python bench/bench_world.py --n 500 [--threads N]

Prints one row per measurement. Targets (2 CPU cores): sample() at least 200 clips of
16x64x64 in under 10 s; score() under 20 ms per 16x64x64 clip.
"""

from __future__ import annotations

import os
import time

from _common import count, parse, parser
from sora_nb import world
from sora_nb.world import vision


def timed(fn):
    """(result, wall seconds, CPU seconds of this process) of fn()."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    """Run the measurements and print the table."""
    ap = parser(__doc__)  # --threads, as every bench script
    ap.add_argument("--n", type=count, default=200, help="clips per measurement (default 200)")
    n = parse(ap).n
    rows = []  # (measurement, wall figure, CPU figure, note)

    def rate(name, wall, cpu, note):
        """A clips/s row."""
        rows.append((name, f"{n / wall:7.1f} clips/s", f"{n / cpu:7.1f} clips/s", note))

    def per_clip(name, wall, cpu, count, note):
        """A ms/clip row."""
        rows.append((name, f"{1000 * wall / count:7.2f} ms/clip", f"{1000 * cpu / count:7.2f} ms/clip", note))

    list(world.sample(3, seed=123))  # warm up imports and caches
    _, wall, cpu = timed(vision.shape_prototypes)
    rows.append(("score() first call: shape prototypes", f"{1000 * wall:7.1f} ms", f"{1000 * cpu:7.1f} ms",
                 "once per process"))
    small, wall, cpu = timed(lambda: list(world.sample(n, seed=0)))
    rate("sample() 16x64x64 (2 s, 8 fps)", wall, cpu, f"{n} clips in {wall:.2f} s (target: 200 in < 10 s)")
    wide, wall, cpu = timed(lambda: list(world.sample(n, seed=0, duration=4.0, size=(96, 64))))
    rate("sample() 32x64x96 (4 s, 96x64)", wall, cpu, f"{n} clips in {wall:.2f} s")
    _, wall, cpu = timed(lambda: list(world.sample(n, seed=0, split="heldout", phrasing="heldout")))
    rate("sample() held-out split and phrasing", wall, cpu, f"{n} clips in {wall:.2f} s")
    for label, clips in (("16x64x64", small), ("32x64x96", wide)):
        scores, wall, cpu = timed(lambda clips=clips: [world.score(c.frames, c.caption) for c in clips])
        mean = sum(x["overall"] for x in scores) / len(scores)
        per_clip(f"score() {label}", wall, cpu, len(clips), f"overall on ground truth {mean:.3f}")
    df, wall, cpu = timed(lambda: world.evaluate(world.oracle(), n=n, seed=7))
    per_clip("evaluate(oracle): sample + render + score", wall, cpu, n,
             f"overall {world.summarize(df)['overall']:.3f} on {n} clips")

    width = max(len(r[0]) for r in rows)
    print(f"sora_nb.world benchmark ({os.cpu_count()} CPUs, one process; CPU = this process's CPU time)")
    print(f"{'measurement':<{width}}  {'wall':>16}  {'CPU':>16}  note")
    print("-" * (width + 80))
    for name, wall_txt, cpu_txt, note in rows:
        print(f"{name:<{width}}  {wall_txt:>16}  {cpu_txt:>16}  {note}")


if __name__ == "__main__":
    main()
