"""The world's attributes, their numbers, the held-out split, and the label/clip dataclasses."""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Optional

import numpy as np

SHAPES = ("circle", "square", "triangle", "star", "cross")
COLOURS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink", "white")
DIRECTIONS = ("left", "right", "up", "down", "up-left", "up-right", "down-left", "down-right")
MOTIONS = DIRECTIONS + ("bounce", "grow", "shrink", "spin", "still")
SIZES = ("small", "large")
BACKGROUNDS = ("dark", "light", "navy", "gradient")

# sRGB values, chosen far apart in hue (and lightness for white) and far from every background.
PALETTE = {
    "red": (228, 36, 36),
    "orange": (255, 136, 0),
    "yellow": (246, 222, 36),
    "green": (40, 190, 70),
    "cyan": (20, 216, 226),
    "blue": (44, 84, 250),
    "purple": (150, 60, 216),
    "pink": (255, 120, 196),
    "white": (245, 245, 245),
}
# Each background is a vertical ramp from its top colour to its bottom colour (flat if equal).
BACKGROUND_RGB = {
    "dark": ((18, 18, 24), (18, 18, 24)),
    "light": ((228, 226, 218), (228, 226, 218)),
    "navy": ((22, 32, 84), (22, 32, 84)),
    "gradient": ((84, 26, 92), (14, 58, 72)),
}
OCCLUDER_RGB = (128, 128, 128)

# Geometry, as fractions of min(width, height) (so 64 px -> the pixel figures in comments).
RADIUS = {"small": 0.10, "large": 0.15}  # 6.4 px and 9.6 px base radius
TRAVEL = 0.40  # distance covered by a directional motion over the whole clip (25.6 px)
BOUNCE_HEIGHT = 0.35  # apex height of a bounce (22.4 px)
GROW_SCALE = (0.6, 1.4)  # scale at the first and last frame of "grow" ("shrink" is reversed)
SPIN_DEG_PER_S = 90.0
EDGE_MARGIN_X = 3  # px kept clear at the left/right edges (the evaluator reads them)
EDGE_MARGIN_Y = 2
OBJECT_GAP = 3  # px kept between any two objects (and between an object and the bar)

# Per-shape extents in units of the base radius: x half-extent, y extent up, y extent down, and
# circumradius (used when the shape spins). Shapes are centred on their centroid.
SHAPE_EXTENT = {
    "circle": (1.0, 1.0, 1.0, 1.0),
    "square": (0.88, 0.88, 0.88, 0.88 * math.sqrt(2)),
    "triangle": (1.45 * math.sin(math.pi / 3), 1.45, 0.725, 1.45),
    "star": (1.40 * math.sin(2 * math.pi / 5), 1.40, 1.40 * math.cos(math.pi / 5), 1.40),
    "cross": (1.10, 1.10, 1.10, math.hypot(1.10, 0.40)),
}
SYMMETRY = {"circle": 0, "square": 4, "triangle": 3, "star": 5, "cross": 4}

# Held-out attribute combinations: an object with one of these never appears in split="train";
# every clip of split="heldout" has at least one such object.
HELDOUT_COLOUR_SHAPE = frozenset({
    ("pink", "triangle"), ("cyan", "square"), ("yellow", "star"), ("orange", "cross"),
    ("purple", "circle"),
})
HELDOUT_SHAPE_MOTION = frozenset({
    ("square", "bounce"), ("triangle", "grow"), ("star", "down-left"), ("circle", "up-right"),
    ("cross", "shrink"),
})

# The judge (vision) must pass the world's own true clips across these ranges. Below 40 px a small object's
# radius (0.10 of the short side) falls under the tracker's 3.2 px minimum and loses its shape; below 6 fps a
# bounce moves 17-22 px a frame, past the tracker's jump limit, and splits into two tracks.
SIZE_RANGE = (40, 256)
DURATION_RANGE = (1.0, 4.0)
FPS_RANGE = (6, 30)
MAX_OBJECTS = 3


@dataclasses.dataclass(frozen=True)
class ObjectLabel:
    """One object: what it is, how it moves, and where it starts.

    ``size`` is "small" or "large"; ``start`` is the centre at the first frame as fractions of
    (width, height). Fields the caption leaves open are None in `parse`'s output.
    ``occluded`` marks the object that passes behind the occluder bar.
    """

    shape: str
    colour: Optional[str] = None
    motion: Optional[str] = None
    size: Optional[str] = None
    start: Optional[tuple] = None
    occluded: bool = False


@dataclasses.dataclass(frozen=True)
class Labels:
    """Everything that was rendered: objects (painted in order), background, occluder bar.

    ``occluder_x`` and ``occluder_width`` are the bar's centre and width as fractions of the
    frame width (None without a bar).
    """

    objects: list
    background: Optional[str] = None
    occluder: bool = False
    occluder_x: Optional[float] = None
    occluder_width: Optional[float] = None

    def is_heldout(self) -> bool:
        """Whether any object has a held-out attribute combination."""
        return any(is_heldout_object(o) for o in self.objects)


@dataclasses.dataclass(frozen=True, eq=False)
class Clip:
    """A rendered clip: uint8 frames (T, H, W, 3), its caption, and the labels behind it."""

    frames: np.ndarray
    caption: str
    labels: Labels
    fps: int = 8
    seed: int = 0
    templates: tuple = ()  # names of the caption templates used, one per object (sample() only)

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames.shape[0] / self.fps

    @property
    def size(self) -> tuple:
        """(width, height) in pixels."""
        return (self.frames.shape[2], self.frames.shape[1])

    @property
    def tracks(self) -> np.ndarray:
        """Ground-truth centre of every object in every frame, (n_objects, T, 2) as (x, y) px."""
        from .canvas import object_paths

        paths = object_paths(self.labels, self.size, self.frames.shape[0], self.fps)
        return np.stack([p.centre for p in paths]) if paths else np.zeros((0, self.frames.shape[0], 2))

    def _repr_html_(self):
        """Plays in a notebook (as a looping GIF) when it is the last value of a cell."""
        from .show import gif_html

        return gif_html(self.frames, self.fps, self.caption)


def is_heldout_object(obj: ObjectLabel) -> bool:
    """Whether this object's (colour, shape) or (shape, motion) pair is held out."""
    return (obj.colour, obj.shape) in HELDOUT_COLOUR_SHAPE or (obj.shape, obj.motion) in HELDOUT_SHAPE_MOTION


def check_render_args(duration, size, fps, seed) -> tuple:
    """Validate render/sample arguments; return (n_frames, width, height)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int >= 0, got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed}")
    if isinstance(duration, bool) or not isinstance(duration, numbers.Real):
        raise TypeError(f"duration must be a number of seconds in [1, 4], got {duration!r}")
    if not DURATION_RANGE[0] <= float(duration) <= DURATION_RANGE[1]:
        raise ValueError(f"duration must be in [1, 4] seconds, got {duration}")
    if isinstance(fps, bool) or not isinstance(fps, numbers.Integral):
        raise TypeError(f"fps must be an int in [{FPS_RANGE[0]}, {FPS_RANGE[1]}], got {fps!r}")
    if not FPS_RANGE[0] <= fps <= FPS_RANGE[1]:
        raise ValueError(f"fps must be in [{FPS_RANGE[0]}, {FPS_RANGE[1]}], got {fps}")
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise TypeError(f"size must be a (width, height) pair of ints, got {size!r}")
    for v in size:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"size must be a (width, height) pair of ints, got {size!r}")
        if not SIZE_RANGE[0] <= v <= SIZE_RANGE[1]:
            raise ValueError(
                f"size must be (width, height) with each in [{SIZE_RANGE[0]}, {SIZE_RANGE[1]}] px, got {tuple(size)}"
            )
    n_frames = int(round(float(duration) * fps))
    return n_frames, int(size[0]), int(size[1])


def check_labels(labels: Labels) -> None:
    """Raise ValueError if labels ask for something the world cannot render.

    Among them: an object with occluded=True needs occluder=True (a bar drawn), and a bar given (occluder_x,
    occluder_width) needs occluder=True; the object behind the bar and the bar are laid out together, so its start
    and the bar are given both (then drawn as given, the object moving towards the bar) or neither (the world
    places both): one without the other is refused, not silently replaced."""
    objs = labels.objects
    if not 1 <= len(objs) <= MAX_OBJECTS:
        raise ValueError(f"a clip has 1 to {MAX_OBJECTS} objects, got {len(objs)}")
    for o in objs:
        _check_choice("shape", o.shape, SHAPES)
        _check_choice("colour", o.colour, COLOURS, optional=True)
        _check_choice("motion", o.motion, MOTIONS, optional=True)
        _check_choice("size", o.size, SIZES, optional=True)
        if o.start is not None:  # a fraction of the frame's width and height, where the object's centre starts
            ok = (isinstance(o.start, (tuple, list)) and len(o.start) == 2
                  and all(isinstance(v, numbers.Real) and not isinstance(v, bool) and 0.0 <= v <= 1.0 for v in o.start))
            if not ok:
                raise ValueError(f"start must be (x, y) fractions of the frame in [0, 1], got {o.start!r}")
        if o.shape == "circle" and o.motion == "spin":
            raise ValueError("a spinning circle looks still; spin needs a shape other than circle")
        if o.colour == "white" and labels.background == "light":
            raise ValueError("a white object on a light background has too little contrast")
        if o.occluded and o.motion not in (None, "left", "right"):
            raise ValueError(f"the object behind the bar must move left or right, not {o.motion!r}")
        if o.occluded and o.size == "large":
            raise ValueError("the object behind the bar must be small (a large one never hides fully)")
    _check_choice("background", labels.background, BACKGROUNDS, optional=True)
    if sum(o.occluded for o in objs) > 1:
        raise ValueError("at most one object can pass behind the occluder bar")
    if labels.occluder and not any(o.occluded for o in objs):
        raise ValueError("occluder=True needs the object that passes behind the bar: an ObjectLabel with occluded=True")
    for i, o in enumerate(objs):
        if o.occluded and not labels.occluder:
            raise ValueError(f"objects[{i}] has occluded=True but the labels have occluder=False: no bar would be "
                             "drawn for it to pass behind; set occluder=True (the bar) or occluded=False")
    if not labels.occluder and (labels.occluder_x is not None or labels.occluder_width is not None):
        raise ValueError(f"occluder_x and occluder_width place the bar, which occluder=False leaves out: set "
                         f"occluder=True or leave them None, got occluder_x={labels.occluder_x!r}, "
                         f"occluder_width={labels.occluder_width!r}")
    bar = (labels.occluder_x, labels.occluder_width)
    if (bar[0] is None) != (bar[1] is None):
        raise ValueError(f"occluder_x and occluder_width go together (the bar's centre and width as fractions of the "
                         f"frame's width), got occluder_x={bar[0]!r}, occluder_width={bar[1]!r}")
    for name, value in zip(("occluder_x", "occluder_width"), bar):
        if value is not None and not (isinstance(value, numbers.Real) and not isinstance(value, bool)
                                      and 0.0 < value < 1.0):
            raise ValueError(f"{name} must be a fraction of the frame's width in (0, 1), got {value!r}")
    hidden = [i for i, o in enumerate(objs) if o.occluded]
    if hidden:  # the object behind the bar and the bar are placed together: both given, or both left to the world
        i, o = hidden[0], objs[hidden[0]]
        if (o.start is None) != (labels.occluder_x is None):
            raise ValueError(f"the start of the object behind the bar (objects[{i}].start={o.start!r}) and the bar "
                             f"(occluder_x={labels.occluder_x!r}, occluder_width={labels.occluder_width!r}) go "
                             "together: give both, or neither for the world to place them")
        if o.start is not None:
            ahead = labels.occluder_x - o.start[0]  # > 0: the bar is to the right of the start
            if ahead == 0 or (o.motion == "left" and ahead > 0) or (o.motion == "right" and ahead < 0):
                raise ValueError(f"objects[{i}] starts at x={o.start[0]:g} moving {o.motion or 'left or right'} and "
                                 f"never passes behind the bar at occluder_x={labels.occluder_x:g}: start it to one "
                                 "side of the bar, moving towards it")


def _check_choice(name, value, allowed, optional=False):
    """Raise ValueError unless value is one of allowed (or None when optional)."""
    if value is None and optional:
        return
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
