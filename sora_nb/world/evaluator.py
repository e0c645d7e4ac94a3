"""The evaluator: score a clip against its caption from pixels, and run whole benchmarks."""

from __future__ import annotations

import itertools
import math
import numbers
from typing import Any, Callable, Optional

import numpy as np

from . import spec
from .language import parse
from .sampler import sample
from .vision import FEATURE_SCALE, HARMONICS, Scene, Track, majority, analyse

DIMENSIONS = ("colour", "shape", "size", "motion", "count", "consistency", "smoothness", "permanence",
              "background")
PRESENCE_PASS = 0.85  # share of frames an object must be seen in (frames behind the bar excused)
AGREEMENT_PASS = 0.8  # share of its frames whose colour and shape agree with the object's
SHAPE_DRIFT = 0.4  # shape-feature change (scaled L1) still counted as the same shape
SMOOTH_PASS = 0.8  # share of frame triples without a jump
JUMP = 0.2  # a step longer than this share of the frame's short side (and 4 times the path's pace) is a jump
MAX_TRACKS = 8


def score(frames, caption: str) -> dict:
    """Per-dimension scores in [0, 1] of frames against a caption, and "overall" (0 or 1).

    Each attribute dimension is the share of the caption's objects that got it right; NaN
    when the caption does not ask for it (size, background, permanence; colour or motion if
    no object names one). "overall" is 1 only when every asked dimension is 1.
    """
    return judge(analyse(frames), parse(caption))


def judge(scene: Scene, want: spec.Labels) -> dict:
    """Scores of what was seen (a Scene) against what was asked (parsed Labels)."""
    objects = per_object(scene, want)

    def share(key: str) -> float:
        return _share([o[key] for o in objects if o[key] is not None])

    res = {
        "colour": share("colour"),
        "shape": share("shape"),
        "size": share("size"),
        "motion": share("motion"),
        # a bar the caption did not ask for is one thing too many (one it asked for and is not there fails permanence)
        "count": float(len(scene.tracks) == len(want.objects) and (scene.bar is None or want.occluder)),
        "consistency": share("consistent"),
        "smoothness": share("smooth"),
        "permanence": share("permanent"),
        "background": float(scene.background == want.background) if want.background else math.nan,
    }
    asked = [v for v in res.values() if not math.isnan(v)]
    res["overall"] = float(all(v == 1.0 for v in asked))
    return res


def per_object(scene: Scene, want: spec.Labels) -> list[dict]:
    """What `judge` decides for each asked object, as one dict per object (in the caption's order):
    ``tracked`` and, as booleans, ``colour``, ``shape``, ``size``, ``motion``, ``consistent``, ``smooth``
    and ``permanent`` (None where the caption does not ask for it: colour, size, motion, and permanence
    of an object that does not pass behind the bar). `judge`'s object scores are their shares."""
    match = _match(want.objects, scene.tracks[:MAX_TRACKS])
    return [{"tracked": tr is not None,
             "colour": (tr is not None and tr.colour == o.colour) if o.colour else None,
             "shape": tr is not None and tr.shape == o.shape,
             "size": (tr is not None and tr.size == o.size) if o.size else None,
             "motion": (tr is not None and _motion_ok(o, tr)) if o.motion else None,
             "consistent": tr is not None and consistent(tr, scene),
             # a motion the caption leaves open is judged as seen (a bounce's floor is no jump)
             "smooth": tr is not None and smooth(tr, scene, o.motion or tr.motion),
             "permanent": (tr is not None and permanent(tr, scene, o.motion)) if o.occluded else None}
            for o, tr in zip(want.objects, match)]


def _share(oks: list) -> float:
    """Fraction of True, NaN for an empty list."""
    return float(np.mean(oks)) if oks else math.nan


def _motion_ok(obj: spec.ObjectLabel, tr: Track) -> bool:
    """Whether a track moves as asked (a spinning circle cannot be told from a still one)."""
    if obj.motion == "spin" and obj.shape == "circle":
        return tr.motion in ("spin", "still")
    return tr.motion == obj.motion


def _agreement(obj: spec.ObjectLabel, tr: Track) -> float:
    """How well a track fits an asked object: identity (colour, shape) first, then size and motion."""
    hits = 2 * (obj.colour is None or tr.colour == obj.colour) + 2 * (tr.shape == obj.shape)
    hits += (obj.motion is None or _motion_ok(obj, tr)) + (obj.size is None or tr.size == obj.size)
    return hits + 1e-3 * len(tr.detections)


def _match(objs: list, tracks: list) -> list:
    """The track (or None) for each asked object, maximising agreement."""
    best, best_val = [None] * len(objs), -1.0
    slots = list(range(len(tracks))) + [None] * len(objs)
    for perm in itertools.permutations(slots, len(objs)):
        val = sum(_agreement(o, tracks[i]) for o, i in zip(objs, perm) if i is not None)
        if val > best_val:
            best, best_val = [tracks[i] if i is not None else None for i in perm], val
    return best


def _behind_bar(tr: Track, scene: Scene, t: int) -> bool:
    """Whether a track's interpolated position at frame t is behind the occluder bar."""
    if scene.bar is None:
        return False
    ts = np.array([d.t for d in tr.detections])
    if not ts.min() < t < ts.max():
        return False
    x = np.interp(t, ts, [d.x for d in tr.detections])
    r = max(d.radius for d in tr.detections) * 1.5
    return scene.bar[0] - r <= x <= scene.bar[1] + r


def consistent(tr: Track, scene: Scene) -> bool:
    """Seen in (nearly) every frame, with the same colour and shape throughout.

    A frame's shape agrees if it is classified as the object's shape, or if its shape features
    barely differ from the object's median features (a blurry shape near a class boundary may
    flip class without changing).
    """
    parts = consistency_parts(tr, scene)
    return parts["presence"] >= PRESENCE_PASS and parts["agreement"] >= AGREEMENT_PASS


def consistency_parts(tr: Track, scene: Scene) -> dict:
    """The shares ``consistent`` checks, and their parts: "presence" (frames seen or excused behind
    the bar), "colour" and "shape" (the share of whole views agreeing on each alone; NaN if the
    track was only seen cut by the bar) and "agreement" (both at once; colour alone when no view
    is whole, as its shape is then unknown)."""
    seen = {d.t for d in tr.detections}
    excused = {t for t in range(scene.n_frames) if t not in seen and _behind_bar(tr, scene, t)}
    presence = (len(seen) + len(excused)) / scene.n_frames
    whole = [d for d in tr.detections if not d.partial]
    if not whole:  # only ever seen cut by the bar: its shape is unknown, judge the colour
        agree = float(np.mean([d.colour == tr.colour for d in tr.detections]))
        return {"presence": presence, "colour": math.nan, "shape": math.nan, "agreement": agree}
    feats = np.array([d.features for d in whole]) * FEATURE_SCALE
    drift = np.abs(feats - np.median(feats, axis=0)).sum(axis=1)
    same_shape = [d.shape in (tr.shape, None) or dev <= SHAPE_DRIFT for d, dev in zip(whole, drift)]
    same_colour = [d.colour == tr.colour for d in whole]
    return {"presence": presence, "colour": float(np.mean(same_colour)), "shape": float(np.mean(same_shape)),
            "agreement": float(np.mean([c and ok for c, ok in zip(same_colour, same_shape)]))}


def trace(tr: Track, scene: Scene) -> list:
    """The object in every frame, found by colour (not by the tracker, which a jump would break).

    Per frame: the detection of the track's colour (and shape, if several) nearest to the
    track's own detection there, else the largest; None where there is none.
    """
    own = {d.t: d for d in tr.detections}
    out = []
    for t, dets in enumerate(scene.detections):
        cands = [d for d in dets if d.colour == tr.colour]
        if len(cands) > 1:
            cands = [d for d in cands if d.shape in (tr.shape, None)] or cands
        if not cands:
            out.append(None)
        elif t in own:
            out.append(min(cands, key=lambda d: math.hypot(d.x - own[t].x, d.y - own[t].y)))
        else:
            out.append(max(cands, key=lambda d: d.area))
    return out


def smooth(tr: Track, scene: Scene, motion: Optional[str]) -> bool:
    """No jumps: position, size (and spin angle) change at a steady rate over consecutive frames.

    Two checks over the object's detections, frame by frame: the acceleration of position and
    size (and spin rate) stays near its median, and no step is much longer than the object's
    whole path spread over the clip. For "bounce" the frames near the floor, where the vertical
    velocity flips, are excused and steps are not checked.

    A step is taken from each detection to the previous one seen, ``g`` frames before (1 when none is missing
    between): its pace (step / g) is judged against the per-frame limits, and what it covers beyond ``g - 1``
    frames at the path's pace against the jump limit, so a jump is one whether the object was seen in every
    frame around it or hidden for a few (`consistent` lets a few frames go unseen). An object behind the bar moves
    on while hidden: its missing frames are judged the same way, at the path's pace.
    """
    seq = trace(tr, scene)
    s = scene.scale
    bad, checks = 0, 0
    whole = [d if d is not None and not d.partial else None for d in seq]
    triples = [whole[t - 1:t + 2] for t in range(1, len(seq) - 1) if all(d is not None for d in whole[t - 1:t + 2])]
    if triples:
        flags = _bad_accelerations(triples, seq, motion, tr.shape, s)
        bad, checks = int(flags.sum()), flags.size
    present = [d for d in seq if d is not None]
    if motion != "bounce" and len(present) >= 2:
        pairs = list(zip(present[:-1], present[1:]))  # each detection and the previous one seen
        xy = np.array([[d.x, d.y] for d in present])
        extent = np.linalg.norm(xy.max(axis=0) - xy.min(axis=0))
        ref = max(extent / max(len(present) - 1, 1), 0.02 * s)
        gaps = np.array([b.t - a.t for a, b in pairs], float)
        steps = np.array([math.hypot(b.x - a.x, b.y - a.y) for a, b in pairs])
        # Across frames where it hid behind the bar, a view cut by the bar has its centre off the object's (by up
        # to its radius), towards the side it is seen on: that much of the step is no movement.
        radius = float(np.median([d.radius for d in (tr.visible or tr.detections)]))
        for i, (a, b) in enumerate(pairs):
            if gaps[i] > 1 and all(_behind_bar(tr, scene, t) for t in range(a.t + 1, b.t)):
                steps[i] = max(steps[i] - radius * (a.partial + b.partial), 0.0)
        if np.any(steps / gaps > max(JUMP * s, 4 * ref)) or np.any(steps - (gaps - 1) * ref > JUMP * s):
            return False  # one teleport is a jump, whatever the share of good steps
        bad += int((steps / gaps > 2.5 * ref + 0.05 * s).sum())
        checks += steps.size
    return checks == 0 or bad / checks <= 1 - SMOOTH_PASS


def _bad_accelerations(triples: list, seq: list, motion: Optional[str], shape: Optional[str], s: float) -> np.ndarray:
    """For each triple of consecutive whole detections, whether it accelerates unlike the rest."""
    pos = np.array([[[d.x, d.y] for d in tri] for tri in triples])  # (N, 3, 2)
    rad = np.array([[d.radius for d in tri] for tri in triples])
    acc = pos[:, 2] - 2 * pos[:, 1] + pos[:, 0]
    acc_r = rad[:, 2] - 2 * rad[:, 1] + rad[:, 0]
    if motion == "bounce":
        ys = np.array([d.y for d in seq if d is not None])
        floor = ys.max() - 0.55 * (ys.max() - ys.min())
        near_floor = (pos[:, :, 1] >= floor).any(axis=1)
        acc[near_floor, 1] = np.median(acc[~near_floor, 1]) if (~near_floor).any() else 0.0
    bad = np.linalg.norm(acc - np.median(acc, axis=0), axis=1) > max(2.0, 0.06 * s)
    bad |= np.abs(acc_r - np.median(acc_r)) > max(1.0, 0.025 * s)
    k = spec.SYMMETRY.get(shape or "circle", 0)
    if motion == "spin" and k:
        ang = np.angle([[d.moments[HARMONICS.index(k)] for d in tri] for tri in triples])
        step = np.angle(np.exp(1j * np.diff(ang, axis=1))) / k  # per-frame rotation, radians
        bad |= np.abs(np.degrees(step[:, 1] - step[:, 0])) > 8.0
    return bad


def permanent(tr: Track, scene: Scene, motion: Optional[str]) -> bool:
    """Seen on one side of the bar, then later on the other side, the same colour and shape, and never in front
    of the bar (which covers it: `Scene.front`).

    Judged on the object's colour trace (so a tracker split at the bar does not matter); the
    shape is compared between whole views on the two sides when both exist.
    """
    if scene.bar is None or in_front_of_bar(tr, scene):
        return False
    seq = [d for d in trace(tr, scene) if d is not None]
    left = [d for d in seq if d.x < scene.bar[0]]
    right = [d for d in seq if d.x >= scene.bar[1]]
    if not left or not right:
        return False
    first, last = (left, right) if min(d.t for d in left) < min(d.t for d in right) else (right, left)
    if motion in ("left", "right") and first is not (left if motion == "right" else right):
        return False  # came out where it went in
    if max(d.t for d in last) <= min(d.t for d in first):
        return False
    return _same_shape(_side_views(first, scene.bar), _side_views(last, scene.bar))


def in_front_of_bar(tr: Track, scene: Scene) -> bool:
    """Whether the object is seen over the bar, which should hide it: a blob painted on the bar in some frame
    (`Scene.front`) of the object's colour and at least a third of its (whole) area."""
    area = float(np.median([d.area for d in tr.visible]))
    return any(d.colour == tr.colour and d.area >= area / 3 for dets in scene.front for d in dets)


def _side_views(dets: list, bar: tuple) -> list:
    """The views of one side of the bar to judge its shape by: the whole ones, else the half farthest from the
    bar (the least cut). An object that stays near the bar on one side is never "whole" there: with no views
    that side was judged the same shape as anything, a square that came out a star included."""
    whole = [d for d in dets if not d.partial]
    if whole or not dets:
        return whole
    far = sorted(dets, key=lambda d: -max(bar[0] - d.x, d.x - bar[1]))
    return far[:(len(far) + 1) // 2]


def _same_shape(a: list, b: list) -> bool:
    """Whether two sets of detections show the same shape (True if either is empty)."""
    if not a or not b:
        return True
    fa = np.median([d.features for d in a], axis=0) * FEATURE_SCALE
    fb = np.median([d.features for d in b], axis=0) * FEATURE_SCALE
    shape_a, shape_b = majority([d.shape for d in a]), majority([d.shape for d in b])
    return (shape_a is not None and shape_a == shape_b) or float(np.abs(fa - fb).sum()) <= SHAPE_DRIFT


# ---------------------------------------------------------------------------------------------
# Benchmarks


def oracle(duration: float = 2.0, size: tuple = (64, 64), fps: int = 8) -> Callable:
    """A generate_fn that renders the ground truth: a perfect model, for reference."""
    from .canvas import render

    def generate(caption: str, seed: int):
        """Ground-truth frames of caption."""
        return render(caption, seed=seed, duration=duration, size=size, fps=fps).frames

    return generate


def evaluate(generate_fn: Any, n: int = 200, seed: int = 0, split: str = "train", phrasing: str = "train",
             duration: float = 2.0, size: tuple = (64, 64), fps: Optional[int] = None, max_objects: int = 3,
             **generate_kwargs: Any):
    """Score a model on n sampled prompts: a pandas DataFrame.

    ``generate_fn`` is either a function ``(caption, seed) -> frames`` or a model with a ``generate``
    method, such as a loaded :class:`sora_nb.Generator`. A model makes each clip as
    ``model.generate(caption, seed=seed, duration=duration, width=size[0], height=size[1], trace=False,
    **generate_kwargs)``, so ``world.evaluate(sora_nb.load(), n=200, guidance=2)`` judges the default
    model at guidance 2 (``generate_kwargs`` go only to a model, not to a function). Either may return
    frames (uint8 (T, H, W, 3), or float in [0, 1]) or any object with a ``.frames`` attribute.

    ``fps`` is the frame rate the prompts are sampled (laid out) at, as `sample`'s; the judge reads whatever
    frames come back. A function draws at the rate it likes (default 8, the world's). A model draws at its own
    rate, ``model.limits.fps`` (its ``generate`` takes none), so for a model ``fps`` is that rate: leave it out
    (None) or pass the same; any other is refused (it was ignored), as is any fps for a model that has no
    ``limits.fps``. Left out for a model, it is ``limits.fps`` where that is a whole number the world
    renders at (6 to 30; 8 for the shipped shapes model), else 8.

    One row per clip: caption, seed, n_objects, occluder, heldout, templates and every
    dimension of `score`.
    """
    import pandas as pd

    model = getattr(generate_fn, "generate", None)
    if callable(model):
        own = getattr(getattr(generate_fn, "limits", None), "fps", None)
        if fps is not None and (own is None or isinstance(fps, bool) or fps != own):
            has = (f", model.limits.fps = {own:g}: pass fps={own:g} or leave fps out" if own is not None
                   else ", and this model has no limits.fps to check fps against: leave fps out")
            raise ValueError(f"evaluate: fps={fps!r}, but a model draws its clips at its own frame rate (its generate "
                             f"takes no fps){has}")
        if fps is None:
            whole = isinstance(own, numbers.Real) and not isinstance(own, bool) and float(own).is_integer()
            fps = int(own) if whole and spec.FPS_RANGE[0] <= own <= spec.FPS_RANGE[1] else 8
        taken = {"width": "size=(width, height)", "height": "size=(width, height)",
                 "trace": "nothing: evaluate keeps no trace"}
        clash = sorted(set(generate_kwargs) & set(taken))
        if clash:
            raise TypeError(f"evaluate sets {', '.join(clash)} itself; pass {taken[clash[0]]} instead")
        kwargs = dict(duration=duration, width=size[0], height=size[1], trace=False, **generate_kwargs)
        generate_fn = lambda caption, seed: model(caption, seed=seed, **kwargs)  # noqa: E731
    elif not callable(generate_fn):
        raise TypeError(f"generate_fn must be a function (caption, seed) -> frames or a model with a generate "
                        f"method (e.g. sora_nb.load()), got {type(generate_fn).__name__}")
    elif generate_kwargs:
        raise TypeError(f"evaluate: {', '.join(sorted(generate_kwargs))} go to a model's generate; generate_fn is "
                        f"a function (caption, seed) -> frames, so pass them inside it instead")
    if fps is None:
        fps = 8
    rows = []
    for clip in sample(n, seed=seed, split=split, phrasing=phrasing, duration=duration, size=size, fps=fps,
                       max_objects=max_objects):
        out = generate_fn(clip.caption, clip.seed)
        row = {"caption": clip.caption, "seed": clip.seed, "n_objects": len(clip.labels.objects),
               "occluder": clip.labels.occluder, "heldout": clip.labels.is_heldout(),
               "templates": ",".join(clip.templates)}
        row.update(score(out, clip.caption))
        rows.append(row)
    columns = ["caption", "seed", "n_objects", "occluder", "heldout", "templates", *DIMENSIONS, "overall"]
    return pd.DataFrame(rows, columns=columns)


def summarize(df, by: Optional[str] = None):
    """Mean of every dimension (NaN, i.e. not asked, skipped): a pandas Series, or a DataFrame by group."""
    if not hasattr(df, "columns"):
        raise TypeError(f"df must be a pandas DataFrame of evaluate()'s rows, got {type(df).__name__}")
    if by is not None and by not in df.columns:
        raise ValueError(f"by must be one of df's columns ({', '.join(map(str, df.columns))}), got {by!r}")
    dims = [c for c in (*DIMENSIONS, "overall") if c in df.columns]
    if by is None:
        out = df[dims].mean(skipna=True)
        out["n"] = len(df)
        return out
    out = df.groupby(by)[dims].mean()
    out["n"] = df.groupby(by).size()
    return out


# Issue 4's quality bars for the embedded model: each check's share over the clips of train prompts. The held-out
# rows' bar is on every check at once (``{"overall": HELDOUT_BAR}``).
BARS = {"colour": 0.95, "shape": 0.90, "motion": 0.90, "count": 0.90, "consistency": 0.95}
HELDOUT_BAR = 0.85


def against_bars(df, bars: Optional[dict] = None, z: float = 1.96):
    """Each barred check's mean over the clips of ``df`` (``evaluate``'s rows, NaN skipped as in `summarize`)
    with a Wilson score interval for a share p over the n clips that were asked it (z 1.96: 95%), against its
    bar. Wilson's interval needs only p and n, stays inside [0, 1] and has width at p = 0 or 1 (20 of 20 clips
    right gives [.839, 1], not [1, 1]). A check scored as a share of a clip's objects varies at most p(1 - p)
    from clip to clip, so for it the interval is conservative. A pandas DataFrame indexed by check: mean, low,
    high, n, bar and verdict:

    - "holds": the whole interval is at or above the bar;
    - "missed": the whole interval is below it;
    - "above, within noise" / "below, within noise": the mean is on that side, but the interval holds the bar,
      so this many clips cannot tell (one sample of 200 clips has a half-width of about .03-.05).

    ``bars`` maps checks to bars in [0, 1] (default `BARS`; the held-out rows: ``{"overall": HELDOUT_BAR}``).
    """
    import pandas as pd

    if bars is not None and not isinstance(bars, dict):
        raise TypeError(f"bars must be a dict of checks to bars in [0, 1], e.g. {{'colour': 0.95}}, got "
                        f"{type(bars).__name__} {bars!r}")
    bars = dict(BARS if bars is None else bars)
    if not bars:
        raise ValueError("bars must name at least one check, e.g. {'colour': 0.95}")
    for check, bar in bars.items():
        if check not in (*DIMENSIONS, "overall"):
            raise ValueError(f"bars: unknown check {check!r}; the checks are {', '.join((*DIMENSIONS, 'overall'))}")
        if isinstance(bar, bool) or not isinstance(bar, numbers.Real) or not 0.0 <= float(bar) <= 1.0:
            raise ValueError(f"bars[{check!r}] must be a number in [0, 1], got {bar!r}")
    if isinstance(z, bool) or not isinstance(z, numbers.Real) or not math.isfinite(z) or z <= 0:
        raise ValueError(f"z must be a finite number > 0 (1.96 for a 95% interval), got {z!r}")
    if not hasattr(df, "columns"):
        raise TypeError(f"df must be a pandas DataFrame of evaluate()'s rows, got {type(df).__name__}")
    missing = [c for c in bars if c not in df.columns]
    if missing:
        raise ValueError(f"df has no column {', '.join(map(repr, missing))}: pass evaluate()'s rows")
    rows = {}
    for check, bar in bars.items():
        values = df[check].dropna().to_numpy(dtype=float)
        if ((values < 0) | (values > 1)).any():
            raise ValueError(f"df[{check!r}] must hold shares in [0, 1] (evaluate()'s scores), got values from "
                             f"{values.min():g} to {values.max():g}")
        n = len(values)
        if n == 0:
            rows[check] = dict(mean=math.nan, low=math.nan, high=math.nan, n=0, bar=float(bar), verdict="not asked")
            continue
        mean = float(values.mean())
        low, high = wilson(mean, n, z)
        verdict = ("holds" if low >= bar else "missed" if high < bar
                   else "above, within noise" if mean >= bar else "below, within noise")
        rows[check] = dict(mean=mean, low=low, high=high, n=n, bar=float(bar), verdict=verdict)
    return pd.DataFrame.from_dict(rows, orient="index")[["mean", "low", "high", "n", "bar", "verdict"]]


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a share ``p`` observed over ``n`` trials (z 1.96: 95%)."""
    if n <= 0:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z / d * math.sqrt(max(0.0, p * (1 - p)) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)
