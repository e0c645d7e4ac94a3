"""Clips with the occluder bar: every check, and ghost tracks at the bar's edges, generated against the round trip.

    .venv/bin/python bench/bench_occluder.py [--weights FOLDER [--weights FOLDER ...]] [--clips 200] [--pool 1200] [--seed 777]
        [--round-trip] [--threads 2]

A diagnostic for the quality bars (issue 4, twenty-seventh session), not a speed figure. It takes the
prompts with the occluder bar ("... behind a grey bar") among ``--pool`` train prompts (world sampler,
evaluation seed ``--seed``, about 16% of them), at most ``--clips``, and scores each model's clip of each
prompt at default settings: every check at once, count, consistency, and **ghost tracks**: tracks seen
only cut by the bar and never more than 4 px from one of its edges. The shipped model draws the bar's
edge as a ramp of grey several latent cells wide instead of a step (its x0 estimate of the edge moves in
the guided steps and then fades over the last, unguided ones; bench/RESULTS.md), and the evaluator reads
the lighter band beside the bar as an extra object, so the clip fails count. ``--round-trip`` adds the
autoencoder's round trip of the world's own rendering of each prompt (the first model's autoencoder, whose
encoder reads true frames, as the shipped one's does), which has none: the ghosts are the DiT's.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from _common import count, load_models, parse, parser, print_table
from sora_nb import world
from sora_nb.world import evaluator

EDGE_PX = 4.0  # a ghost track stays this close to one of the bar's edges in every frame it is seen


def ghost_tracks(scene) -> int:
    """Tracks seen only cut by the bar (every detection partial), within EDGE_PX of one of its edges throughout."""
    if scene.bar is None:
        return 0
    n = 0
    for tr in scene.tracks:
        xs = np.array([d.x for d in tr.detections])
        near = np.minimum(np.abs(xs - scene.bar[0]), np.abs(xs - scene.bar[1])) < EDGE_PX
        n += bool(all(d.partial for d in tr.detections) and near.all())
    return n


def score_clips(frames_of, clips) -> list[str]:
    """One table row: every check, count, consistency, ghost tracks (clips with one), s/clip."""
    t0, overall, count, consistency, ghosts, with_ghost = time.perf_counter(), [], [], [], 0, 0
    for clip in clips:
        scene = evaluator.analyse(frames_of(clip))
        res = evaluator.judge(scene, evaluator.parse(clip.caption))
        overall.append(res["overall"]), count.append(res["count"]), consistency.append(res["consistency"])
        g = ghost_tracks(scene)
        ghosts, with_ghost = ghosts + g, with_ghost + (g > 0)
    return [f"{np.mean(overall):.3f}", f"{np.mean(count):.3f}", f"{np.nanmean(consistency):.3f}",
            f"{ghosts} ({with_ghost})", f"{(time.perf_counter() - t0) / len(clips):.2f}"]


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--weights", action="append", default=None, help="a weights folder (repeatable; default: the shipped model)")
    p.add_argument("--clips", type=count, default=200, help="at most this many prompts with the bar")
    p.add_argument("--pool", type=count, default=1200, help="train prompts to take them from")
    p.add_argument("--seed", type=int, default=777, help="the world sampler's seed (default: used in no choice)")
    p.add_argument("--round-trip", action="store_true", help="also score the autoencoder's round trip of the true clips")
    args = parse(p)
    for name in ("clips", "pool"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    clips = [c for c in world.sample(args.pool, seed=args.seed, split="train", phrasing="train")
             if c.labels.occluder][: args.clips]
    if not clips:
        raise SystemExit(f"no prompt with the occluder bar among {args.pool} (--pool)")
    names = args.weights or [None]
    models = load_models(p, names)  # every folder loaded (and checked) before the first is scored
    rows = []
    for w, gen in zip(names, models):
        rows.append([w or "shipped", *score_clips(lambda c: gen.generate(c.caption, seed=c.seed, trace=False).frames, clips)])
        if args.round_trip and len(rows) == 1:
            from bench_ceiling import round_trip

            vae = gen.backend.vae
            rows.append([f"{w or 'shipped'}: autoencoder round trip",
                         *score_clips(lambda c: round_trip(vae, world.render(c.caption, seed=c.seed)), clips)])
    print(f"{len(clips)} prompts with the occluder bar among {args.pool} train prompts (seed {args.seed})")
    print_table(rows, ("clips of", "every check", "count", "consistency", "ghost tracks (clips)", "s/clip"))


if __name__ == "__main__":
    main()
