"""The sampler: a deterministic stream of random clips from the train or held-out split."""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from . import spec
from .language import PHRASINGS, caption_with_templates
from .canvas import render
from .spec import Clip, Labels, ObjectLabel

SPLITS = ("train", "heldout")
N_OBJECTS_P = (0.4, 0.35, 0.25)
OCCLUDER_P = 0.15


def _allowed_motions(shape: str, occluded: bool) -> tuple:
    """Motions an object of this shape can have."""
    if occluded:
        return ("left", "right")
    return tuple(m for m in spec.MOTIONS if not (m == "spin" and shape == "circle"))


def _draw_object(rng, colours_left, occluded, split, forced=None) -> ObjectLabel:
    """One object; in the train split never a held-out combination; forced is a held-out pair."""
    for _ in range(1000):
        shape = spec.SHAPES[rng.integers(len(spec.SHAPES))]
        colour = colours_left[rng.integers(len(colours_left))]
        motions = _allowed_motions(shape, occluded)
        motion = motions[rng.integers(len(motions))]
        if forced is not None:
            kind, pair = forced
            if kind == "colour-shape":
                colour, shape = pair
                motions = _allowed_motions(shape, occluded)
                motion = motions[rng.integers(len(motions))]
            else:
                shape, motion = pair
            if colour not in colours_left:
                continue
        size = "small" if occluded else spec.SIZES[rng.integers(2)]
        obj = ObjectLabel(shape, colour, motion, size, occluded=occluded)
        if split == "train" and spec.is_heldout_object(obj):
            continue
        return obj
    raise RuntimeError("could not draw an object")  # unreachable with the world's tables


def _heldout_pair(rng, occluded: bool) -> tuple:
    """A random held-out combination usable by an object (occluded ones must move sideways)."""
    pairs = [("colour-shape", p) for p in sorted(spec.HELDOUT_COLOUR_SHAPE)]
    if not occluded:
        pairs += [("shape-motion", p) for p in sorted(spec.HELDOUT_SHAPE_MOTION)]
    return pairs[rng.integers(len(pairs))]


def draw_labels(rng: np.random.Generator, split: str = "train", max_objects: int = 3) -> Labels:
    """Random attributes of one clip (no positions yet)."""
    p = np.array(N_OBJECTS_P[:max_objects])
    n = int(rng.choice(np.arange(1, max_objects + 1), p=p / p.sum()))
    occluder = bool(rng.random() < OCCLUDER_P)
    heldout_at = 0 if split == "heldout" else -1  # drawn first, so its colour is free
    colours = list(spec.COLOURS)
    objects = []
    for k in range(n):
        occluded = occluder and k == 0
        forced = _heldout_pair(rng, occluded) if k == heldout_at else None
        obj = _draw_object(rng, colours, occluded, split, forced)
        colours.remove(obj.colour)
        objects.append(obj)
    objects = [objects[i] for i in rng.permutation(n)]
    backgrounds = [b for b in spec.BACKGROUNDS if not (b == "light" and any(o.colour == "white" for o in objects))]
    background = backgrounds[rng.integers(len(backgrounds))]
    return Labels(objects, background, occluder)


def sample(n: int, seed: int = 0, split: str = "train", phrasing: str = "train", duration: float = 2.0,
           size: tuple = (64, 64), fps: int = 8, max_objects: int = 3) -> Iterator[Clip]:
    """Yield n random clips, the same ones for the same arguments.

    split "train" never contains a held-out attribute combination, "heldout" always does (see
    the module docstring). phrasing picks caption templates: "train", "heldout" or "any".
    Each clip can be re-rendered with ``render(clip.caption, seed=clip.seed, ...)``.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be an int >= 0, got {type(n).__name__} {n!r}")
    if n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    if phrasing not in PHRASINGS:
        raise ValueError(f"phrasing must be one of {', '.join(PHRASINGS)}; got {phrasing!r}")
    if isinstance(max_objects, bool) or not isinstance(max_objects, (int, np.integer)) or not 1 <= max_objects <= spec.MAX_OBJECTS:
        raise ValueError(f"max_objects must be an int in [1, {spec.MAX_OBJECTS}], got {max_objects!r}")
    spec.check_render_args(duration, size, fps, seed)
    return _stream(n, seed, split, phrasing, duration, tuple(size), fps, max_objects)


def _without_one(labels: Labels, split: str, rng: np.random.Generator) -> Labels:
    """The labels minus one object, keeping the occluded one and (for "heldout") a held-out one."""
    objs = labels.objects
    keep_heldout = split == "heldout" and sum(spec.is_heldout_object(o) for o in objs) == 1
    droppable = [i for i, o in enumerate(objs) if not o.occluded and not (keep_heldout and spec.is_heldout_object(o))]
    drop = droppable[rng.integers(len(droppable))]
    return dataclasses.replace(labels, objects=[o for i, o in enumerate(objs) if i != drop])


def _stream(n, seed, split, phrasing, duration, size, fps, max_objects) -> Iterator[Clip]:
    """The generator behind `sample` (arguments already checked)."""
    codes = (SPLITS.index(split), PHRASINGS.index(phrasing))
    for i in range(n):
        rng = np.random.default_rng([int(seed), i, *codes])
        labels = draw_labels(rng, split, max_objects)
        for _ in range(100):
            text, names = caption_with_templates(labels, rng, phrasing)
            clip_seed = int(rng.integers(2**31))
            try:
                clip = render(text, seed=clip_seed, duration=duration, size=size, fps=fps)
            except ValueError:
                # These objects do not fit in the frame: drop one, or draw a new scene.
                if len(labels.objects) > 1:
                    labels = _without_one(labels, split, rng)
                else:
                    labels = draw_labels(rng, split, max_objects)
                continue
            yield dataclasses.replace(clip, templates=names)
            break
        else:
            raise RuntimeError(f"could not lay out clip {i}")
