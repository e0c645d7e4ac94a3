"""sora_nb.world: a small world of moving shapes to train text-to-video models on, and to judge them.

Every clip shows 1 to 3 coloured shapes moving on a background, sometimes passing behind a
grey bar, and comes with a caption that names each of them. Because the world is ours, we
can make unlimited data, and we can check any claim about a model from its pixels alone.

Render a caption::

    from sora_nb import world
    clip = world.render("a red circle moving right and a blue square moving up", seed=0)
    clip.frames.shape          # (16, 64, 64, 3) uint8: T = round(duration * fps)
    clip.labels                # Labels(objects=[ObjectLabel(shape='circle', colour='red', ...)], ...)
    clip.tracks                # ground-truth centre of every object in every frame, (n, T, 2)
    clip                       # at the end of a notebook cell: plays (a looping GIF)
    world.show(list(world.sample(8)))   # a grid of clips with their captions

    world.render("a big star, yellow, spinning on a gradient background", seed=1,
                 duration=4.0, size=(96, 64), fps=8)   # size is (width, height)

What the caption leaves open (size, background, positions) is drawn from the seed; the same
arguments always give the same frames.

The world:

* shapes: circle, square, triangle, star, cross; sizes: small, large;
* colours: red, orange, yellow, green, cyan, blue, purple, pink, white;
* motions: left, right, up, down, up-left, up-right, down-left, down-right, bounce, grow,
  shrink, spin (not for circles), still;
* backgrounds: dark, light (never with a white object), navy, gradient;
* occluder: one small object moving left or right passes behind a grey bar and comes out
  the other side ("... passing behind a grey bar"), to test object permanence;
* durations 1 to 4 s, fps 6 to 30, any (width, height) from 40 to 256 px (64x64 and 96x64
  are the tested ones). Objects never overlap or leave the frame; when several do not fit,
  sizes the caption leaves open shrink to "small" (so crowded clips are mostly small objects),
  and `render` raises ValueError if even that fails.

Captions come in many phrasings ("a red circle moving right", "red disc sliding to the right",
"a circle, red, heading right", "a red ball that moves rightward", ...); `parse` is the
inverse, `caption` writes labels in a random phrasing, `vocabulary` lists every token
(words and punctuation, as split by `tokenize`) for a word-level tokenizer::

    world.parse("a circle, red, heading right").objects[0]   # ObjectLabel('circle', 'red', 'right', ...)
    world.caption(clip.labels, 3)                             # another phrasing (rng or seed 3)

Sample training data on the fly (deterministic per seed, about 200 clips/s on one core)::

    for clip in world.sample(1000, seed=0, split="train", phrasing="train"):
        ...  # clip.frames, clip.caption

Held out, for generalisation tests (never produced by split="train" / phrasing="train"):

* split="heldout": every clip has at least one object with a held-out combination, either
  colour+shape (pink triangle, cyan square, yellow star, orange cross, purple circle) or
  shape+motion (square+bounce, triangle+grow, star+down-left, circle+up-right,
  cross+shrink). Each colour, shape and motion still appears in training, just never in these
  pairs (see `HELDOUT_COLOUR_SHAPE`, `HELDOUT_SHAPE_MOTION`).
* phrasing="heldout": every object is described with a held-out template, "motion_first"
  ("sliding to the right, a red circle") or "that_is" ("a circle that is red and moving
  right"); the synonyms "violet" (purple) and "disk" (circle) appear only there.
  phrasing="any" mixes all templates.

Judge a clip from its pixels (no access to how it was made)::

    world.score(clip.frames, clip.caption)
    # {'colour': 1.0, 'shape': 1.0, 'size': nan, 'motion': 1.0, 'count': 1.0, 'consistency': 1.0,
    #  'smoothness': 1.0, 'permanence': nan, 'background': nan, 'overall': 1.0}

Every dimension is the share of the caption's objects that got it right, in [0, 1]:
colour, shape, size, motion (from the centroid track, size change and spin angle), count
(number of objects seen), consistency (each object seen in nearly every frame with the same
colour and shape), smoothness (no jumps between frames), permanence (the object seen on both
sides of the bar, in order, the same colour and shape), background. size, background and
permanence are NaN when the caption does not ask for them; "overall" ignores NaNs and is 1
only when everything asked is right. `analyse(frames)` returns what the evaluator saw
(background, bar, tracks).

How it reads pixels: the background is a per-row line fitted to the left/right border bands;
objects are pixels far from it (RGB distance > 40), split into 8-connected components; colour is
the nearest reference in CIELAB; shape the nearest prototype in rotation-invariant features
(spread and angular harmonics 2..6 of the soft mask); components are linked across frames by
position and colour; motion comes from the centroid track (direction), the size ratio
(grow/shrink), a there-and-back vertical track (bounce) and the phase of the shape's symmetry
harmonic (spin). It is robust to what small models make (tested with blur up to 1.2 px, noise up
to 12/255, a 10% colour cast); much heavier blur (a 4x down/up-sample) rounds off small stars and
squares, so their shape can be misread. About 15 ms per 16x64x64 clip.

Benchmark a model: ``generate_fn(caption, seed) -> frames`` (or anything with ``.frames``)::

    df = world.evaluate(generate_fn, n=200, seed=0, split="heldout")  # pandas, one row per clip
    df = world.evaluate(sora_nb.load(), n=200, guidance=2)            # or a model: its generate's keywords
    world.summarize(df)                                                # mean per dimension
    world.against_bars(df)                                             # each bar: mean, 95% interval, verdict
    world.summarize(world.evaluate(world.oracle(), n=50))              # ground truth: all 1.0
"""

from __future__ import annotations

from .evaluator import BARS, DIMENSIONS, HELDOUT_BAR, against_bars, evaluate, judge, oracle, score, summarize
from .language import (HELDOUT_TEMPLATES, PHRASINGS, TEMPLATES, TRAIN_TEMPLATES, caption, parse, tokenize,
                       vocabulary)
from .canvas import render
from .sampler import SPLITS, sample
from .show import grid_html, show, strip
from .spec import (BACKGROUNDS, COLOURS, HELDOUT_COLOUR_SHAPE, HELDOUT_SHAPE_MOTION, MOTIONS, SHAPES, SIZES, Clip,
                   Labels, ObjectLabel)
from .vision import Scene, Track, analyse

__all__ = [
    "BARS", "BACKGROUNDS", "COLOURS", "DIMENSIONS", "HELDOUT_BAR", "HELDOUT_COLOUR_SHAPE", "HELDOUT_SHAPE_MOTION", "HELDOUT_TEMPLATES",
    "MOTIONS", "PHRASINGS", "SHAPES", "SIZES", "SPLITS", "TEMPLATES", "TRAIN_TEMPLATES", "Clip", "Labels",
    "ObjectLabel", "Scene", "Track", "against_bars", "analyse", "caption", "evaluate", "judge", "oracle", "parse", "render",
    "grid_html", "sample", "score", "show", "strip", "summarize", "tokenize", "vocabulary",
]
