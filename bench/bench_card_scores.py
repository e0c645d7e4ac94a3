"""The model card's scores, drawn again and judged by this checkout's evaluator.

    .venv/bin/python bench/bench_card_scores.py [--weights FOLDER] [--clips 200] [--threads N] [--save FILE.npz]
                                               [--frames FILE.npz]

A weights folder's card (``scores.json``) records what the world's evaluator said of its clips when the folder was
exported. This draws the same clips (the card's splits, prompts and seeds, default settings) and scores them
now, printing each split's figures beside the card's: equal where neither the model nor the evaluator changed,
and the size of the change where the evaluator did (the fifty-seventh session's corrections, bench/RESULTS.md).
With ``--clips`` other than the card's count the clips are another sample, so the change column is left blank.
``--save`` keeps the drawn frames; ``--frames`` scores frames saved so, without drawing them again (e.g. to score
one set of clips with two checkouts' evaluators). A diagnostic, not a speed figure: 600 clips take about 6
minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

import sora_nb
from _common import count, parse, parser, print_table
from sora_nb import world
from sora_nb.backends import embedded
from sora_nb.train import step_seed

SPLITS = (("train", "train"), ("heldout", "train"), ("train", "heldout"))
SHOWN = ("colour", "shape", "motion", "count", "consistency", "smoothness", "permanence", "overall")


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--weights", default=str(embedded.WEIGHTS_DIR), help="weights folder (default: the shipped one)")
    p.add_argument("--clips", type=count, default=None, help="clips a split (default: the card's, 200)")
    p.add_argument("--save", type=Path, default=None, help="write the drawn frames to this .npz")
    p.add_argument("--frames", type=Path, default=None, help="score the frames of this .npz (from --save)")
    args = parse(p)
    if not (Path(args.weights) / "scores.json").is_file():
        p.error(f"--weights {args.weights!r} has no scores.json (a weights folder sora-nb train exported)")
    if args.save is not None and not args.save.parent.is_dir():  # checked before minutes of drawing
        p.error(f"--save: folder {str(args.save.parent)!r} does not exist")
    if args.save is not None and (args.save.is_dir() or args.save.suffix != ".npz"):  # numpy would write NAME.npz
        p.error(f"--save must be a file name ending in .npz, got {str(args.save)!r}")
    if args.frames is not None and not args.frames.is_file():
        p.error(f"--frames: no file {str(args.frames)!r}")
    card = json.loads((Path(args.weights) / "scores.json").read_text())
    recipe = card["recipe"]
    card_n = int(recipe["eval_clips"])
    n = args.clips or card_n
    comparable = n == card_n  # fewer (or more) clips are another sample: their difference is no change
    seed = step_seed(int(recipe["seed"]), "eval", 0)
    saved = dict(np.load(args.frames)) if args.frames else None
    if saved is not None:  # every clip this run scores, before a KeyError half-way
        wanted = [f"{split}/{phrasing}/{i}" for split, phrasing in SPLITS for i in range(n)]
        absent = [k for k in wanted if k not in saved]
        if absent:
            p.error(f"--frames {str(args.frames)!r} lacks {len(absent)} of the {len(wanted)} clips asked (e.g. "
                    f"{absent[0]!r}): save them with --save at the same --clips")
    gen = None if saved else sora_nb.load(args.weights)
    kept, rows = {}, []
    for split, phrasing in SPLITS:
        scores = []
        for i, clip in enumerate(world.sample(n, seed=seed, split=split, phrasing=phrasing)):
            key = f"{split}/{phrasing}/{i}"
            if saved is not None:
                frames = saved[key]
            else:
                frames = gen.generate(clip.caption, seed=clip.seed, trace=False).frames
            kept[key] = frames
            scores.append(world.score(frames, clip.caption))
        now = pd.DataFrame(scores).mean(skipna=True)
        then = card["scores"][f"{split}/{phrasing}"]
        for k in SHOWN:
            was = then.get(k, math.nan)
            change = f"{round(now[k] - was, 3) + 0.0:+.3f}" if comparable else "-"
            rows.append((f"{split}/{phrasing}", k, f"{was:.3f}", f"{now[k]:.3f}", change))
    print(f"{args.weights}: {n} clips a split, default settings")
    print_table(rows, ("split / phrasing", "check", "card", "now", "change"))
    if not comparable:
        print(f"change left blank (-): {n} clips a split against the card's {card_n}, so \"now\" scores another "
              f"sample of clips, not the card's clips again; run with --clips {card_n} (the default) for the change")
    if args.save:
        np.savez_compressed(args.save, **kept)


if __name__ == "__main__":
    main()
