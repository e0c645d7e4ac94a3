"""Benchmark sora_nb.world: how fast the sampler feeds training, and how fast the evaluator judges.

    .venv/bin/python bench/bench_world.py            # 200 clips per row
    .venv/bin/python bench/bench_world.py --n 500

Prints one row per measurement. Targets (2 CPU cores): sample() at least 200 clips of
16x64x64 in under 10 s; score() under 20 ms per 16x64x64 clip.
"""

from __future__ import annotations

import argparse
import os
import time

from sora_nb import world
from sora_nb.world import vision


def timed(fn):
    """(result, seconds) of fn()."""
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    """Run the measurements and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="clips per measurement (default 200)")
    args = ap.parse_args()
    n = args.n
    rows = []

    list(world.sample(3, seed=123))  # warm up imports and caches
    _, proto_s = timed(vision.shape_prototypes)
    for label, kw in (("16x64x64 (2 s, 8 fps)", {}), ("32x64x96 (4 s, 96x64)", dict(duration=4.0, size=(96, 64)))):
        clips, s = timed(lambda kw=kw: list(world.sample(n, seed=0, **kw)))
        rows.append((f"sample() {label}", f"{n / s:8.1f} clips/s", f"{n} clips in {s:6.2f} s"))
        if label.startswith("16"):
            small = clips
        else:
            wide = clips
    heldout, s = timed(lambda: list(world.sample(n, seed=0, split="heldout", phrasing="heldout")))
    rows.append(("sample() held-out split + phrasing", f"{n / s:8.1f} clips/s", f"{n} clips in {s:6.2f} s"))
    for label, clips in (("16x64x64", small), ("32x64x96", wide)):
        scores, s = timed(lambda clips=clips: [world.score(c.frames, c.caption) for c in clips])
        mean = sum(x["overall"] for x in scores) / len(scores)
        rows.append((f"score() {label}", f"{1000 * s / len(clips):8.2f} ms/clip",
                     f"overall on ground truth {mean:.3f}"))
    rows.append(("score() first call: shape prototypes", f"{1000 * proto_s:8.1f} ms", "once per process"))
    df, s = timed(lambda: world.evaluate(world.oracle(), n=n, seed=7))
    rows.append(("evaluate(oracle) render + score", f"{1000 * s / n:8.2f} ms/clip",
                 f"overall {world.summarize(df)['overall']:.3f} on {n} clips"))

    width = max(len(r[0]) for r in rows)
    print(f"sora_nb.world benchmark ({os.cpu_count()} CPUs, one process)")
    print(f"{'measurement':<{width}}  {'rate':>16}  note")
    print("-" * (width + 50))
    for name, rate, note in rows:
        print(f"{name:<{width}}  {rate:>16}  {note}")


if __name__ == "__main__":
    main()
