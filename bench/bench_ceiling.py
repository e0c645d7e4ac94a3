"""The autoencoder's ceiling: the evaluator's scores of real clips passed through the video autoencoder.

    .venv/bin/python bench/bench_ceiling.py [--weights FOLDER | --vae FOLDER] [--clips 200] [--seed S] [--threads N]

A diagnostic for the quality bars (issue 4), not a speed figure. The diffusion transformer draws in
the autoencoder's latent, so no DiT can score better than the autoencoder's own round trip of the
true clip: encode the world's rendering of the prompt, decode it, score it against the prompt. The
first table gives, for each split the model card scores (same prompts and seeds as the card's
evaluation by default), the rendering itself (the oracle, a perfect model) and the round trip. The
second splits the round trip's "overall" (every check passed) by the clip's objects: with or
without a small object, and by object count. ``--vae`` scores an autoencoder folder on its own (a
training run's ``vae_final`` or ``dec_final``), e.g. to compare autoencoder recipes before a DiT is
trained on one. An autoencoder trained with the recipe's ``shape_channels`` (and ``shape_layout``, ``shape_angle``) is
given its latent as the DiT saw it in training (`sora_nb.train.training_latent`): read from a weights folder's
recorded recipe, or set with ``--shape-channels`` / ``--shape-layout`` for ``--vae``. An autoencoder
whose encoder was then trained on the true frames (the recipe's ``pix_steps``: a weights folder from such a
run, or ``--vae`` a run's ``pix_final``) encodes the clip's own frames, with no labels. A third table
takes the held-out combinations' round trip object by object (`world.evaluator.per_object`): each held-out
pair (a colour-shape or shape-motion pair no training clip has) against the clips' other objects, since a
decoder that learned which shapes move how from the training clips can draw an unseen pair wrong.
``--generated`` (with a weights folder or the shipped model) adds the same table for the model's own clips
of those prompts (default settings, each prompt's seed), so the DiT's and the autoencoder's share of a
held-out pair's failures can be told apart.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import sora_nb
from _common import count, parse, parser, print_table
from sora_nb import world
from sora_nb.backends import embedded
from sora_nb.train import step_seed, training_latent
from sora_nb.world import evaluator, spec
from sora_nb.world.language import parse as parse_caption
from sora_nb.world.vision import analyse

DIMS = ("colour", "shape", "motion", "count", "consistency", "smoothness", "overall")
SPLITS = (("train", "train"), ("heldout", "train"), ("train", "heldout"))


@torch.no_grad()
def round_trip(vae, clip, shape_channels: bool = False, shape_layout: bool = False, shape_angle: bool = False) -> np.ndarray:
    """A world clip -> the autoencoder's reconstruction of its frames, uint8 (T, H, W, 3)."""
    z = training_latent(vae, [clip], shape_channels, shape_layout, shape_angle=shape_angle)
    out = vae.decode(z, len(clip.frames))[0]  # (3, T, H, W)
    return ((out.permute(1, 2, 3, 0) + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--weights", default=None, help="a weights folder (default: the shipped model)")
    p.add_argument("--vae", default=None, help="an autoencoder folder (a run's vae_final or dec_final) instead")
    p.add_argument("--shape-channels", action="store_true", help="with --vae: trained with shape_channels")
    p.add_argument("--shape-layout", action="store_true", help="with --vae: trained with shape_layout")
    p.add_argument("--shape-angle", action="store_true", help="with --vae: trained with shape_angle")
    p.add_argument("--generated", action="store_true", help="also the model's own clips of the held-out combinations")
    p.add_argument("--clips", type=count, default=200)
    p.add_argument("--seed", type=int, default=step_seed(0, "eval", 0), help="default: the model card's")
    args = parse(p)
    if args.vae:
        vae = embedded.load_vae(args.vae).eval()
    else:
        vae = (embedded.load_folder(args.weights) if args.weights else embedded.load_default()).vae.eval()
        card = Path(args.weights or embedded.WEIGHTS_DIR) / "scores.json"
        recipe = json.loads(card.read_text()).get("recipe", {}) if card.is_file() else {}
        pixels = bool(recipe.get("pix_steps", 0))  # its encoder reads the true frames
        args.shape_channels = bool(recipe.get("shape_channels", False)) and not pixels
        args.shape_layout = bool(recipe.get("shape_layout", False)) and not pixels
        args.shape_angle = bool(recipe.get("shape_angle", False)) and not pixels
    if args.generated and args.vae:
        p.error("--generated needs a whole model (--weights or the shipped one), not --vae")
    if args.shape_layout and not args.shape_channels:
        p.error("--shape-layout goes with --shape-channels (as the recipe's shape_layout needs shape_channels)")
    if args.shape_angle and not args.shape_layout:
        p.error("--shape-angle goes with --shape-layout (as the recipe's shape_angle needs shape_layout)")
    how = dict(shape_channels=args.shape_channels, shape_layout=args.shape_layout, shape_angle=args.shape_angle)
    rows, by_kind, by_pair, by_pair_gen = [], [], {}, {}
    for split, phrasing in SPLITS:
        clips = list(world.sample(args.clips, seed=args.seed, split=split, phrasing=phrasing))
        oracle = pd.DataFrame([evaluator.score(c.frames, c.caption) for c in clips])
        scenes = [analyse(round_trip(vae, c, **how)) for c in clips]
        trip = pd.DataFrame([evaluator.judge(scene, parse_caption(c.caption)) for scene, c in zip(scenes, clips)])
        if split == "heldout":
            tally_pairs(by_pair, clips, scenes)
            if args.generated:
                gen = sora_nb.load(args.weights) if args.weights else sora_nb.load()
                tally_pairs(by_pair_gen, clips, [analyse(gen.generate(c.caption, seed=c.seed, trace=False).frames)
                                                 for c in clips])
        for name, df in (("rendering (oracle)", oracle), ("autoencoder round trip", trip)):
            s = df.mean(numeric_only=True)
            rows.append([f"{split}/{phrasing}", name, *(f"{s[d]:.3f}" for d in DIMS)])
        small = np.array([any(o.size == "small" for o in c.labels.objects) for c in clips])
        objects = np.array([len(c.labels.objects) for c in clips])
        ok = trip["overall"].to_numpy()
        for label, mask in (("no small object", ~small), ("a small object", small),
                            *((f"{k} object{'s' if k > 1 else ''}", objects == k) for k in sorted(set(objects)))):
            share = float(ok[mask].mean()) if mask.any() else math.nan
            by_kind.append([f"{split}/{phrasing}", label, str(int(mask.sum())), f"{share:.3f}"])
    print(f"autoencoder: {args.vae or args.weights or 'shipped'}; {args.clips} clips per split, seed {args.seed}"
          + "".join(f"; {k}" for k, v in how.items() if v))
    print_table(rows, ("split / phrasing", "frames scored", *DIMS))
    print()
    print_table(by_kind, ("split / phrasing", "round-trip clips with", "clips", "overall"))
    for name, pairs in (("the round trip", by_pair), ("the model's own clips", by_pair_gen)):
        if pairs:
            print(f"\nheld-out combinations, {name} per asked object: its held-out pair, or another object")
            table = [[pair, str(len(res)), *(f"{np.mean([r[k] for r in res if r[k] is not None]):.3f}" for k in PER_OBJECT)]
                     for pair, res in sorted(pairs.items(), key=lambda kv: (kv[0] == "other", kv[0]))]
            print_table(table, ("object", "objects", *(f"{k} right" if k in ("colour", "shape", "motion") else k
                                                       for k in PER_OBJECT)))


PER_OBJECT = ("tracked", "colour", "shape", "motion", "consistent")


def tally_pairs(by_pair: dict, clips: list, scenes: list) -> None:
    """Add each asked object's `evaluator.per_object` result (of the clip's analysed frames, ``scenes``) to
    ``by_pair`` under its `held_out_pair`."""
    for scene, c in zip(scenes, clips):
        for lab, res in zip(c.labels.objects, evaluator.per_object(scene, parse_caption(c.caption))):
            by_pair.setdefault(held_out_pair(lab), []).append(res)


def held_out_pair(obj: spec.ObjectLabel) -> str:
    """The object's held-out combination ("square + bounce"), or "other"."""
    if (obj.colour, obj.shape) in spec.HELDOUT_COLOUR_SHAPE:
        return f"{obj.colour} + {obj.shape}"
    if (obj.shape, obj.motion) in spec.HELDOUT_SHAPE_MOTION:
        return f"{obj.shape} + {obj.motion}"
    return "other"


if __name__ == "__main__":
    main()
