"""Where the embedded model's shapes go wrong: a shape confusion table and why objects fail consistency.

    .venv/bin/python bench/bench_shape.py [--weights shapes] [--guidance G] [--per-shape 8] [--clips 64]

A diagnostic for the quality bars (issue 4), not a speed figure.
- Confusion: single-object prompts "a large {colour} {shape} on a dark background" (colours red,
  green, blue, yellow in turn; seeds 100, 101, ...), ``--per-shape`` of each shape. Each row is
  the asked shape and each column is the shape the evaluator reads for the object's track
  ("none" when no track was found).
- Consistency: ``--clips`` training prompts (sample seed 99) scored as the evaluator does. For each
  asked object with a track it counts whether it is consistent, and which of the three conditions
  it meets on its own: presence in at least 85% of frames, colour agreeing in at least 80% of its
  whole views, shape agreeing in at least 80% of them.
"""

from __future__ import annotations

import collections

import sora_nb
from _common import check_guidance, count, parse, parser, print_table
from sora_nb import world
from sora_nb.world import evaluator
from sora_nb.world.language import parse as parse_caption
from sora_nb.world.spec import SHAPES
from sora_nb.world.vision import analyse

COLOURS = ("red", "green", "blue", "yellow")


def confusion(gen, guidance, per_shape: int) -> collections.Counter:
    """(asked, read) -> count over single-object prompts."""
    counts = collections.Counter()
    for shape in SHAPES:
        for k in range(per_shape):
            prompt = f"a large {COLOURS[k % len(COLOURS)]} {shape} on a dark background"
            scene = analyse(gen.generate(prompt, seed=100 + k, guidance=guidance, trace=False).frames)
            counts[(shape, scene.tracks[0].shape if scene.tracks else "none")] += 1
    return counts


def consistency_parts(gen, guidance, clips: int) -> collections.Counter:
    """Counts of asked objects meeting each condition of the evaluator's consistency check."""
    counts = collections.Counter()
    for clip in world.sample(clips, seed=99, split="train"):
        scene = analyse(gen.generate(clip.caption, seed=clip.seed, guidance=guidance, trace=False).frames)
        want = parse_caption(clip.caption)
        for obj, tr in zip(want.objects, evaluator._match(want.objects, scene.tracks[: evaluator.MAX_TRACKS])):
            counts["asked objects"] += 1
            if tr is None:
                counts["no track"] += 1
                continue
            parts = evaluator.consistency_parts(tr, scene)
            counts["present in >= 85% of frames"] += parts["presence"] >= evaluator.PRESENCE_PASS
            counts["colour agrees in >= 80% of views"] += parts["colour"] >= evaluator.AGREEMENT_PASS
            counts["shape agrees in >= 80% of views"] += parts["shape"] >= evaluator.AGREEMENT_PASS
            counts["consistent"] += evaluator.consistent(tr, scene)
    return counts


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--weights", default="shapes")
    p.add_argument("--guidance", type=float, default=None, help="default: the model's own")
    p.add_argument("--per-shape", type=count, default=8)
    p.add_argument("--clips", type=count, default=64)
    args = parse(p)
    check_guidance(p, args.guidance)  # before the model loads
    gen = sora_nb.load(args.weights)
    guidance = gen.limits.default_guidance if args.guidance is None else args.guidance
    counts = confusion(gen, guidance, args.per_shape)
    read = [*SHAPES, "none"]
    print(f"{args.weights}, guidance {guidance:g}: shape read for single-object prompts "
          f"({sum(counts[(s, s)] for s in SHAPES)} of {args.per_shape * len(SHAPES)} as asked)")
    print_table([(s, *(counts[(s, r)] for r in read)) for s in SHAPES], header=("asked \\ read", *read))
    print()
    parts = consistency_parts(gen, guidance, args.clips)
    print(f"consistency of asked objects, {args.clips} training prompts:")
    print_table([(k, v) for k, v in parts.items()], header=("objects", "count"))


if __name__ == "__main__":
    main()
