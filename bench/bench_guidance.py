"""Prompt adherence against classifier-free guidance, scored by the shapes world's evaluator.

    .venv/bin/python bench/bench_guidance.py [--clips 50] [--steps 20] [--eta 0 1]

For each guidance value, generates the same ``--clips`` prompts (train split, default settings) and
prints the mean of every evaluator dimension. Guidance 0 ignores the prompt (unconditional), 1 is
the conditional model alone; adherence should rise from 1 and level off. ``--eta`` repeats the sweep
for each sampler noise given (default: the model's own).
"""

from __future__ import annotations

import argparse
import time

import sora_nb
from _common import count
from sora_nb import world

GUIDANCE = (0.0, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0)
COLUMNS = ("colour", "shape", "motion", "count", "consistency", "smoothness", "overall")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=count, default=50)
    parser.add_argument("--steps", type=count, default=20)
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--eta", type=float, nargs="*", default=None,
                        help="sampler noise per step, one sweep each (default: the model's own)")
    args = parser.parse_args()
    if args.eta and not all(0.0 <= e <= 1.0 for e in args.eta):  # (NaN fails too) before the model loads
        parser.error(f"--eta values must be numbers in [0, 1], got {args.eta}")
    gen = sora_nb.load(args.model)
    etas = args.eta if args.eta else [gen.limits.default_eta]
    print(f"model {gen.name}, {args.clips} prompts (train split) per guidance value, {args.steps} steps")
    print("| eta | guidance | " + " | ".join(COLUMNS) + " | s/clip |")
    print("|---|---|" + "---|" * (len(COLUMNS) + 1))
    for eta in etas:
        for g in GUIDANCE:
            start = time.perf_counter()
            df = world.evaluate(gen, n=args.clips, seed=4242, split="train", guidance=g, eta=eta, steps=args.steps)
            per_clip = (time.perf_counter() - start) / args.clips
            means = world.summarize(df)
            print(f"| {eta:g} | {g:g} | " + " | ".join(f"{means[c]:.3f}" for c in COLUMNS) + f" | {per_clip:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
