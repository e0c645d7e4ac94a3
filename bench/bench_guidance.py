"""Prompt adherence against classifier-free guidance, scored by the shapes world's evaluator.

    .venv/bin/python bench/bench_guidance.py [--clips 50] [--steps 20] [--eta 0 1] [--guidance 1 3] [--retries 0]
        [--threads N]

For each guidance value (``--guidance``; default 0, 1, 2, 3, 5, 7.5, 10), generates the same ``--clips`` prompts
(train split, default settings, the same seeds) and prints the mean of every evaluator dimension, then the 95%
Wilson interval of what the prompt asks for (colour, shape, motion) and, for each value after the first, the
paired change from the first on those clips (clips that pass the three checks at one value and not the other).
Guidance 0 ignores the prompt (unconditional), 1 is the conditional model alone; adherence should rise from 1 and
level off. ``--eta`` repeats the sweep for each sampler noise given (default: the model's own).

Each clip is one draw (``--retries 0``, the default here): the shipped model's default generate redraws a clip its
own check rejects (the layout check, and a verifier that reads the prompt), which would make guidance 0 pick among
draws by the prompt, not ignore it, and redraw different clips at different values. ``--retries N`` (up to the
model's ``limits.max_retries``) measures the default generation instead (3 for the shipped model); the
guidance curves in bench/RESULTS.md from before this option were taken at the model's default generate, with
redraws wherever the model had them.
"""

from __future__ import annotations

import math
import time

import sora_nb
from _common import check_guidance, count, count_or_zero, parse
from _common import parser as _parser  # main's own variable is named parser
from sora_nb import world
from sora_nb.world.evaluator import wilson

GUIDANCE = (0.0, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0)
ASKED = ("colour", "shape", "motion")  # what the prompt asks for: what guidance should raise


def sign_test(gained: int, lost: int) -> float:
    """Two-sided exact sign test of ``gained`` against ``lost`` discordant pairs (1.0 when there are none)."""
    n, k = gained + lost, min(gained, lost)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)
COLUMNS = ("colour", "shape", "motion", "count", "consistency", "smoothness", "overall")


def main() -> None:
    parser = _parser(__doc__)
    parser.add_argument("--clips", type=count, default=50)
    parser.add_argument("--steps", type=count, default=20)
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--eta", type=float, nargs="*", default=None,
                        help="sampler noise per step, one sweep each (default: the model's own)")
    parser.add_argument("--guidance", type=float, nargs="+", default=list(GUIDANCE),
                        help="guidance values (default 0 1 2 3 5 7.5 10)")
    parser.add_argument("--retries", type=count_or_zero, default=0,
                        help="redraws of a clip the model's check rejects (default 0: one draw, so guidance 0 is "
                             "unconditional; the shipped model's generate defaults to 3)")
    args = parse(parser)
    if args.eta and not all(0.0 <= e <= 1.0 for e in args.eta):  # (NaN fails too) before the model loads
        parser.error(f"--eta values must be numbers in [0, 1], got {args.eta}")
    check_guidance(parser, args.guidance)
    try:
        gen = sora_nb.load(args.model)
    except (ValueError, TypeError) as err:
        parser.error(f"--model: {err}")
    if args.retries > gen.limits.max_retries:
        parser.error(f"--retries must be at most {gen.limits.max_retries} for {gen.name}, got {args.retries}")
    etas = args.eta if args.eta else [gen.limits.default_eta]
    print(f"model {gen.name}, {args.clips} prompts (train split) per guidance value, {args.steps} steps, "
          f"retries {args.retries}" + (" (one draw per clip)" if args.retries == 0 else " (redraws on)"))
    print("| eta | guidance | " + " | ".join(COLUMNS) + " | s/clip |")
    print("|---|---|" + "---|" * (len(COLUMNS) + 1))
    for eta in etas:
        asked = {}
        for g in args.guidance:
            start = time.perf_counter()
            df = world.evaluate(gen, n=args.clips, seed=4242, split="train", guidance=g, eta=eta, steps=args.steps,
                                retries=args.retries)
            per_clip = (time.perf_counter() - start) / args.clips
            means = world.summarize(df)
            print(f"| {eta:g} | {g:g} | " + " | ".join(f"{means[c]:.3f}" for c in COLUMNS) + f" | {per_clip:.2f} |",
                  flush=True)
            sub = df[list(ASKED)]  # the clip does what the prompt asks (a check the prompt does not make: NaN, passed)
            asked[g] = (sub.isna() | (sub >= 1.0)).all(axis=1).to_numpy()
        print(f"\neta {eta:g}: clips that pass colour, shape and motion together, 95% Wilson interval; paired "
              f"against guidance {args.guidance[0]:g} on the same {args.clips} prompts and seeds")
        first = asked[args.guidance[0]]
        for g, ok in asked.items():
            lo, hi = wilson(float(ok.mean()), len(ok))
            gained, lost = int((ok & ~first).sum()), int((first & ~ok).sum())
            print(f"  guidance {g:g}: {ok.mean():.3f} [{lo:.3f}, {hi:.3f}]"
                  + ("" if g == args.guidance[0] else f"; {gained} clips gained, {lost} lost (two-sided sign test "
                                                     f"p = {sign_test(gained, lost):.3g})"))


if __name__ == "__main__":
    main()
