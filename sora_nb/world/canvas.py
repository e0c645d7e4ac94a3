"""Rendering: motion paths, anti-aliased shapes (signed distance functions), layout, frames."""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import numpy as np

from . import spec
from .spec import Clip, Labels, ObjectLabel

LAYOUT_TRIES = 128  # candidate start positions tried at once per object
LAYOUT_RESTARTS = 12


@dataclasses.dataclass(frozen=True)
class Path:
    """Where one object is in every frame: centre (T, 2) px, scale (T,), angle (T,) radians."""

    centre: np.ndarray
    scale: np.ndarray
    angle: np.ndarray
    radius: float  # base radius in px
    shape: str
    spins: bool

    def extents(self) -> np.ndarray:
        """Per-frame (left, right, top, bottom) reach from the centre in px, (T, 4)."""
        hx, up, down, circ = spec.SHAPE_EXTENT[self.shape]
        if self.spins:
            hx = up = down = circ
        k = self.scale * self.radius
        return np.stack([hx * k, hx * k, up * k, down * k], axis=1)

    def reach(self) -> np.ndarray:
        """Per-frame circumradius in px (for spacing objects apart), (T,)."""
        return spec.SHAPE_EXTENT[self.shape][3] * self.scale * self.radius


def frame_times(n_frames: int) -> np.ndarray:
    """Normalised time of every frame, 0 at the first and 1 at the last."""
    return np.arange(n_frames) / max(n_frames - 1, 1)


def base_radius(size_name: str, size: tuple) -> float:
    """Base radius in px of a "small" or "large" object in a (width, height) frame."""
    return spec.RADIUS[size_name] * min(size)


def motion_offsets(motion: str, n_frames: int, fps: int, size: tuple, travel: Optional[float] = None):
    """Offsets (T, 2) from the start, scales (T,) and angles (T,) of one motion."""
    t = frame_times(n_frames)
    m = min(size)
    offset = np.zeros((n_frames, 2))
    scale = np.ones(n_frames)
    angle = np.zeros(n_frames)
    if motion in spec.DIRECTIONS:
        dx = ("right" in motion) - ("left" in motion)
        dy = ("down" in motion) - ("up" in motion)
        unit = np.array([dx, dy], float) / math.hypot(dx, dy)
        dist = spec.TRAVEL * m if travel is None else travel
        offset = t[:, None] * dist * unit[None, :]
    elif motion == "bounce":
        bounces = max(1, round(n_frames / fps))
        u = np.modf(bounces * t)[0]
        offset[:, 1] = -spec.BOUNCE_HEIGHT * m * 4 * u * (1 - u)
    elif motion in ("grow", "shrink"):
        lo, hi = spec.GROW_SCALE
        scale = lo + (hi - lo) * t if motion == "grow" else hi + (lo - hi) * t
    elif motion == "spin":
        angle = np.radians(spec.SPIN_DEG_PER_S) * np.arange(n_frames) / fps
    return offset, scale, angle


def occluder_columns(labels: Labels, size: tuple) -> Optional[tuple]:
    """The bar's pixel columns [x0, x1) or None."""
    if not labels.occluder or labels.occluder_x is None:
        return None
    w = size[0]
    x0 = int(round((labels.occluder_x - labels.occluder_width / 2) * w))
    x1 = int(round((labels.occluder_x + labels.occluder_width / 2) * w))
    return x0, x1


def object_path(obj: ObjectLabel, labels: Labels, size: tuple, n_frames: int, fps: int) -> Path:
    """The path of one fully specified object."""
    r = base_radius(obj.size, size)
    start = np.array([obj.start[0] * size[0], obj.start[1] * size[1]])
    travel = None
    if obj.occluded and labels.occluder_x is not None:
        travel = 2 * abs(labels.occluder_x * size[0] - start[0])
    offset, scale, angle = motion_offsets(obj.motion, n_frames, fps, size, travel)
    return Path(start[None, :] + offset, scale, angle, r, obj.shape, obj.motion == "spin")


def object_paths(labels: Labels, size: tuple, n_frames: int, fps: int) -> list:
    """Paths of all objects of fully specified labels."""
    return [object_path(o, labels, size, n_frames, fps) for o in labels.objects]


# ---------------------------------------------------------------------------------------------
# Signed distance functions (negative inside), in px, of shapes centred at the origin, y down.


def _sd_box(u, v, hx, hy):
    """Box with half sizes (hx, hy)."""
    qx = np.abs(u) - hx
    qy = np.abs(v) - hy
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    return outside + np.minimum(np.maximum(qx, qy), 0)


def _sd_triangle(u, v, r):
    """Equilateral triangle pointing up with circumradius r (after Inigo Quilez)."""
    k = math.sqrt(3.0)
    half = r * k / 2  # half the side
    px = np.abs(u) - half
    py = -v + half / k
    flip = px + k * py > 0
    px, py = np.where(flip, (px - k * py) / 2, px), np.where(flip, (-k * px - py) / 2, py)
    px = px - np.clip(px, -2 * half, 0)
    return -np.hypot(px, py) * np.sign(py)


def _sd_star(u, v, r, inner=0.45):
    """Five-pointed star pointing up with outer radius r (after Inigo Quilez)."""
    k1x, k1y = 0.809016994375, -0.587785252292
    k2x, k2y = -k1x, k1y
    px = np.abs(u)
    py = -v
    d = np.maximum(k1x * px + k1y * py, 0)
    px, py = px - 2 * d * k1x, py - 2 * d * k1y
    d = np.maximum(k2x * px + k2y * py, 0)
    px, py = px - 2 * d * k2x, py - 2 * d * k2y
    px = np.abs(px)
    py = py - r
    bax, bay = inner * -k1y, inner * k1x - 1
    h = np.clip((px * bax + py * bay) / (bax * bax + bay * bay), 0, r)
    return np.hypot(px - bax * h, py - bay * h) * np.sign(py * bax - px * bay)


def shape_sdf(shape: str, u, v, r):
    """Signed distance in px to a shape of base radius r (array broadcasting over r)."""
    if shape == "circle":
        return np.hypot(u, v) - r
    if shape == "square":
        return _sd_box(u, v, 0.88 * r, 0.88 * r)
    if shape == "cross":
        return np.minimum(_sd_box(u, v, 1.10 * r, 0.40 * r), _sd_box(u, v, 0.40 * r, 1.10 * r))
    if shape == "triangle":
        return _sd_triangle(u, v, 1.45 * r)
    if shape == "star":
        return _sd_star(u, v, 1.40 * r)
    raise ValueError(f"shape must be one of {', '.join(spec.SHAPES)}; got {shape!r}")


def coverage(path: Path, size: tuple) -> tuple:
    """Anti-aliased coverage in [0, 1] of one object, on its bounding window: (alpha, y0, x0)."""
    w, h = size
    ext = path.extents()
    x0 = max(int(np.floor((path.centre[:, 0] - ext[:, 0]).min())) - 2, 0)
    x1 = min(int(np.ceil((path.centre[:, 0] + ext[:, 1]).max())) + 3, w)
    y0 = max(int(np.floor((path.centre[:, 1] - ext[:, 2]).min())) - 2, 0)
    y1 = min(int(np.ceil((path.centre[:, 1] + ext[:, 3]).max())) + 3, h)
    xs = np.arange(x0, x1, dtype=np.float32)[None, None, :] - path.centre[:, 0, None, None]
    ys = np.arange(y0, y1, dtype=np.float32)[None, :, None] - path.centre[:, 1, None, None]
    c = np.cos(path.angle)[:, None, None]
    s = np.sin(path.angle)[:, None, None]
    u, v = c * xs + s * ys, -s * xs + c * ys  # rotate the sampling grid by -angle
    r = (path.radius * path.scale)[:, None, None]
    alpha = np.clip(0.5 - shape_sdf(path.shape, u, v, r), 0.0, 1.0).astype(np.float32)
    return alpha, y0, x0


def background_image(name: str, size: tuple) -> np.ndarray:
    """The (H, W, 3) float32 background."""
    w, h = size
    top, bottom = (np.array(c, np.float32) for c in spec.BACKGROUND_RGB[name])
    ramp = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    rows = top[None, :] * (1 - ramp) + bottom[None, :] * ramp
    return np.broadcast_to(rows[:, None, :], (h, w, 3)).copy()


def _composite(labels: Labels, size: tuple, fps: int, img: np.ndarray, paint, bar: np.ndarray) -> np.ndarray:
    """Paint the objects over ``img`` (T, H, W, C) float32 in order, each with its coverage and the
    C values ``paint(obj)``, then the occluder bar with ``bar``; in place, returned."""
    for obj, path in zip(labels.objects, object_paths(labels, size, img.shape[0], fps)):
        alpha, y0, x0 = coverage(path, size)
        a = alpha[..., None]
        win = img[:, y0:y0 + alpha.shape[1], x0:x0 + alpha.shape[2]]
        win *= 1 - a
        win += a * paint(obj)
    cols = occluder_columns(labels, size)
    if cols is not None:
        img[:, :, cols[0]:cols[1]] = bar
    return img


def draw(labels: Labels, size: tuple, n_frames: int, fps: int) -> np.ndarray:
    """Frames (T, H, W, 3) uint8 of fully specified labels."""
    img = np.repeat(background_image(labels.background, size)[None], n_frames, axis=0)
    img = _composite(labels, size, fps, img, lambda obj: np.array(spec.PALETTE[obj.colour], np.float32),
                     np.array(spec.OCCLUDER_RGB, np.float32))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def shape_maps(labels: Labels, size: tuple, n_frames: int, fps: int) -> np.ndarray:
    """Visible coverage of each shape class, (T, H, W, len(SHAPES)) float32 in [0, 1].

    Painted as `draw` paints: a later object covers an earlier one, and the occluder bar covers all.
    Training supervision only (the autoencoder's shape channels); generation never sees it.
    """
    w, h = size
    one_hot = np.eye(len(spec.SHAPES), dtype=np.float32)
    return _composite(labels, size, fps, np.zeros((n_frames, h, w, len(spec.SHAPES)), np.float32),
                      lambda obj: one_hot[spec.SHAPES.index(obj.shape)], np.float32(0.0))



def disc_layout(labels: Labels, size: tuple, n_frames: int, fps: int) -> tuple:
    """The clip with every object drawn as a disc, and each disc's shape class.

    Each object keeps its colour, path, size and scale but is painted as a circle of its base radius,
    so the frames (T, H, W, 3) uint8 say where and how large each object is, not its outline. The maps
    (T, H, W, len(SHAPES)) float32 are the discs' visible coverage, in the channel of the object's
    true shape. Training supervision only (recipe ``shape_layout``): the autoencoder encodes the discs
    and the class, and learns to decode the true outline from them.
    """
    w, h = size
    discs = dataclasses.replace(labels, objects=[dataclasses.replace(o, shape="circle") for o in labels.objects])
    one_hot = np.eye(len(spec.SHAPES), dtype=np.float32)
    true_shape = {id(d): spec.SHAPES.index(o.shape) for d, o in zip(discs.objects, labels.objects)}
    maps = _composite(discs, size, fps, np.zeros((n_frames, h, w, len(spec.SHAPES)), np.float32),
                      lambda obj: one_hot[true_shape[id(obj)]], np.float32(0.0))
    return draw(discs, size, n_frames, fps), maps


def angle_maps(labels: Labels, size: tuple, n_frames: int, fps: int) -> np.ndarray:
    """Each object's orientation where its disc of `disc_layout` shows, (T, H, W, 2) float32.

    The two values are (cos k*angle, sin k*angle) times the disc's visible coverage, k the true shape's
    rotational symmetry (`spec.SYMMETRY`: a square turned by 90 degrees looks the same, so 4), and 0 for
    a circle, which has no orientation. A still object keeps one value; a spinning one turns it k times
    as fast as it turns. Training supervision only (recipe ``shape_angle``): with it the layout latent says
    which way an outline points, so a spinning outline can be drawn.
    """
    w, h = size
    discs = dataclasses.replace(labels, objects=[dataclasses.replace(o, shape="circle") for o in labels.objects])
    turn = {}
    for d, o, path in zip(discs.objects, labels.objects, object_paths(labels, size, n_frames, fps)):
        k = spec.SYMMETRY[o.shape]
        vec = np.stack([np.cos(k * path.angle), np.sin(k * path.angle)], -1) if k else np.zeros((n_frames, 2))
        turn[id(d)] = vec.astype(np.float32)[:, None, None, :]  # (T, 1, 1, 2): one value per frame
    return _composite(discs, size, fps, np.zeros((n_frames, h, w, 2), np.float32),
                      lambda obj: turn[id(obj)], np.float32(0.0))

# ---------------------------------------------------------------------------------------------
# Layout: fill in what the caption left open (size, background, positions, the bar).


def complete(labels: Labels, size: tuple, n_frames: int, fps: int, rng: np.random.Generator) -> Labels:
    """Fully specified labels: open sizes, background, colours, motions and positions drawn from rng."""
    spec.check_labels(labels)
    background = labels.background
    if background is None:
        white = any(o.colour == "white" for o in labels.objects)
        allowed = [b for b in spec.BACKGROUNDS if not (b == "light" and white)]
        background = allowed[rng.integers(len(allowed))]
    objects = [_complete_object(o, rng, labels.occluder_x) for o in labels.objects]
    bar = (labels.occluder_x, labels.occluder_width) if labels.occluder_x is not None else None
    candidates = [objects]
    shrunk = [o if given.size else dataclasses.replace(o, size="small") for o, given in zip(objects, labels.objects)]
    if shrunk != objects:
        candidates.append(shrunk)  # objects whose size the caption left open may shrink to fit
    for objs in candidates:
        placed = _place(objs, background, size, n_frames, fps, rng, bar)
        if placed is not None:
            if bar is not None:  # the object behind a given bar starts where its start says: it may leave the frame
                check_layout(placed, size, n_frames, fps)
            return placed
    given = [i for i, o in enumerate(labels.objects) if o.start is not None]
    raise ValueError(
        f"cannot fit {len(objects)} object(s) with these sizes and motions into a {size[0]}x{size[1]} frame "
        "without overlaps; use fewer or smaller objects or a wider size"
        + (f" (objects {given} start where their start says, inside the frame's margins and clear of the rest "
           "for the whole clip, or not at all)" if given else "")
    )


def _complete_object(obj: ObjectLabel, rng: np.random.Generator, bar_x: Optional[float] = None) -> ObjectLabel:
    """Draw the open attributes of one object (the object behind a bar given with its start moves towards it)."""
    size = obj.size or ("small" if obj.occluded else spec.SIZES[rng.integers(2)])
    colour = obj.colour or spec.COLOURS[rng.integers(len(spec.COLOURS) - 1)]  # not white: may be on light
    motion = obj.motion
    if motion is None and obj.occluded and obj.start is not None and bar_x is not None:
        motion = "right" if bar_x > obj.start[0] else "left"
    if motion is None:
        allowed = [m for m in spec.MOTIONS if not (m == "spin" and obj.shape == "circle")]
        allowed = ("left", "right") if obj.occluded else allowed
        motion = allowed[rng.integers(len(allowed))]
    return dataclasses.replace(obj, size=size, colour=colour, motion=motion)


def _place(objects, background, size, n_frames, fps, rng, given_bar: Optional[tuple] = None) -> Optional[Labels]:
    """Random non-overlapping start positions (and bar), or None if none were found. The object behind the bar
    keeps its start if it has one, with ``given_bar`` (centre, width) (`spec.check_labels` pairs them)."""
    # the bar's object first (the bar goes where it can pass), then objects with a start given, then the rest
    order = sorted(range(len(objects)), key=lambda i: (not objects[i].occluded, objects[i].start is None))
    rel = {i: _relative_path(objects[i], size, n_frames, fps) for i in order if not objects[i].occluded}
    for _ in range(LAYOUT_RESTARTS):
        bar = None
        placed = {}  # index -> (start as fractions, absolute Path)
        for i in order:
            if objects[i].occluded:
                if objects[i].start is not None and given_bar is not None:
                    bar, start = tuple(given_bar), tuple(objects[i].start)
                else:
                    bar, start = _place_occluded(objects[i], size, n_frames, fps, rng)
                if bar is None:
                    return None
                tmp = Labels([], None, True, *bar)
                placed[i] = start, object_path(dataclasses.replace(objects[i], start=start), tmp, size, n_frames, fps)
                continue
            start = _place_one(rel[i], size, rng, [p for _, p in placed.values()], bar, objects[i].start)
            if start is None:
                break
            offset = np.array([start[0] * size[0], start[1] * size[1]])
            placed[i] = start, dataclasses.replace(rel[i], centre=rel[i].centre + offset)
        if len(placed) == len(objects):
            objs = [dataclasses.replace(o, start=placed[i][0]) for i, o in enumerate(objects)]
            if bar is None:
                return Labels(objs, background)
            return Labels(objs, background, True, bar[0], bar[1])
    return None


def _free_box(path: Path, size: tuple) -> tuple:
    """Allowed range of start (x, y) keeping a path with zero start inside the frame margins."""
    w, h = size
    ext = path.extents()
    off = path.centre
    x_lo = (spec.EDGE_MARGIN_X + ext[:, 0] - off[:, 0]).max()
    x_hi = (w - 1 - spec.EDGE_MARGIN_X - ext[:, 1] - off[:, 0]).min()
    y_lo = (spec.EDGE_MARGIN_Y + ext[:, 2] - off[:, 1]).max()
    y_hi = (h - 1 - spec.EDGE_MARGIN_Y - ext[:, 3] - off[:, 1]).min()
    return x_lo, x_hi, y_lo, y_hi


def _relative_path(obj, size, n_frames, fps, travel=None) -> Path:
    """The path of obj started at (0, 0)."""
    offset, scale, angle = motion_offsets(obj.motion, n_frames, fps, size, travel)
    return Path(offset, scale, angle, base_radius(obj.size, size), obj.shape, obj.motion == "spin")


def _place_occluded(obj, size, n_frames, fps, rng) -> tuple:
    """Bar (centre, width) as fractions and the start of the object that passes behind it."""
    w, h = size
    m = min(size)
    r = base_radius(obj.size, size)
    hx = spec.SHAPE_EXTENT[obj.shape][0] * r
    margin = 1  # this object is at the frame edge only in the first or last frame
    room = w - 1 - 2 * margin  # the path spans bar + 2 * (gap + 2 * hx)
    for gap in (5.0, 4.0):  # whole, clear of the bar, in the first and last frames
        bar_w = float(np.floor(min(2 * hx + 0.15 * m, room - 2 * (gap + 2 * hx))))
        if bar_w >= 2 * hx:  # at least as wide as the object
            break
    else:
        return None, None
    half_span = bar_w / 2 + gap + 2 * hx
    cx_lo = margin + half_span
    cx_hi = w - 1 - margin - half_span
    bar_cx = rng.uniform(cx_lo, cx_hi) if cx_hi > cx_lo else (cx_lo + cx_hi) / 2
    bar_cx = round(bar_cx - bar_w / 2) + bar_w / 2  # whole columns
    x0 = bar_cx - bar_w / 2 - gap - hx if obj.motion == "right" else bar_cx + bar_w / 2 + gap + hx
    rel = _relative_path(obj, size, n_frames, fps)
    _, _, y_lo, y_hi = _free_box(rel, size)
    y0 = rng.uniform(y_lo, y_hi)
    return (bar_cx / w, bar_w / w), (x0 / w, y0 / h)


def _place_one(rel: Path, size, rng, other_paths, bar, given: Optional[tuple] = None) -> Optional[tuple]:
    """A start for a path (given from a zero start) clear of the frame edges, the bar and other paths: drawn
    from rng, or ``given`` (fractions of the frame) if it is one."""
    w, h = size
    x_lo, x_hi, y_lo, y_hi = _free_box(rel, size)
    if x_hi < x_lo or y_hi < y_lo:
        return None
    if given is not None:
        x, y = given[0] * w, given[1] * h
        if not (x_lo <= x <= x_hi and y_lo <= y <= y_hi):
            return None
        starts = np.array([[x, y]], float)
    else:
        starts = np.stack([rng.uniform(x_lo, x_hi, LAYOUT_TRIES), rng.uniform(y_lo, y_hi, LAYOUT_TRIES)], axis=1)
    centre = rel.centre[None, :, :] + starts[:, None, :]  # (K, T, 2)
    ok = np.ones(len(starts), bool)
    if bar is not None:
        ext = rel.extents()
        bx0, bx1 = (bar[0] - bar[1] / 2) * w, (bar[0] + bar[1] / 2) * w
        right = centre[..., 0] + ext[None, :, 1]
        left = centre[..., 0] - ext[None, :, 0]
        ok &= ~np.any((right > bx0 - spec.OBJECT_GAP) & (left < bx1 + spec.OBJECT_GAP), axis=1)
    reach = rel.reach()
    for p in other_paths:
        dist = np.hypot(centre[..., 0] - p.centre[None, :, 0], centre[..., 1] - p.centre[None, :, 1])
        ok &= np.all(dist >= reach + p.reach() + spec.OBJECT_GAP, axis=1)
    if not ok.any():
        return None
    if given is not None:
        return tuple(given)
    x, y = starts[np.argmax(ok)]
    return (float(x) / w, float(y) / h)


def check_layout(labels: Labels, size: tuple, n_frames: int, fps: int) -> None:
    """ValueError, naming the object, unless fully specified labels keep every object inside the frame and
    clear of the others in every frame (what `complete`'s layout ensures; labels given whole skip it)."""
    w, h = size
    paths = object_paths(labels, size, n_frames, fps)
    for i, (o, p) in enumerate(zip(labels.objects, paths)):
        ext, c = p.extents(), p.centre
        inside = ((c[:, 0] - ext[:, 0] >= 0) & (c[:, 0] + ext[:, 1] <= w - 1)
                  & (c[:, 1] - ext[:, 2] >= 0) & (c[:, 1] + ext[:, 3] <= h - 1))
        if not inside.all():
            raise ValueError(f"object {i} (a {o.size} {o.shape} moving {o.motion} from start {tuple(o.start)}) leaves "
                             f"the {w}x{h} frame at frame {int(np.argmin(inside))}: give another start, or leave "
                             "start None for the world to place it")
        for j in range(i):
            q = paths[j]
            near = np.hypot(c[:, 0] - q.centre[:, 0], c[:, 1] - q.centre[:, 1]) < p.reach() + q.reach()
            if near.any():
                raise ValueError(f"objects {j} and {i} overlap at frame {int(np.argmax(near))}: give other starts, or "
                                 "leave start None for the world to place them")


def render_labels(labels: Labels, caption: str, seed: int, n_frames: int, size: tuple, fps: int) -> Clip:
    """Complete labels from seed and draw them."""
    rng = np.random.default_rng(seed)
    if _is_complete(labels):
        check_layout(labels, size, n_frames, fps)
        full = labels
    else:
        full = complete(labels, size, n_frames, fps, rng)
    return Clip(draw(full, size, n_frames, fps), caption, full, fps, seed)


def _is_complete(labels: Labels) -> bool:
    """Whether every attribute and position is already set."""
    return labels.background is not None and all(
        o.colour and o.motion and o.size and o.start is not None for o in labels.objects
    ) and (not labels.occluder or labels.occluder_x is not None)


def render(caption, seed: int = 0, duration: float = 2.0, size: tuple = (64, 64), fps: int = 8) -> Clip:
    """Render a caption (or Labels) as a Clip; what the caption leaves open is drawn from seed.

    The same (caption, seed, duration, size, fps) always gives the same frames.
    """
    from .language import caption as make_caption
    from .language import parse

    n_frames, w, h = spec.check_render_args(duration, size, fps, seed)
    if isinstance(caption, Labels):
        spec.check_labels(caption)  # labels with every field set skip `complete`, which checks the rest
        clip = render_labels(caption, "", int(seed), n_frames, (w, h), fps)
        return dataclasses.replace(clip, caption=make_caption(clip.labels, np.random.default_rng(seed)))
    if not isinstance(caption, str):
        raise TypeError(f"caption must be a str or Labels, got {type(caption).__name__}")
    return render_labels(parse(caption), caption, int(seed), n_frames, (w, h), fps)
