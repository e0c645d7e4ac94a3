"""Pixel analysis for the evaluator: background, occluder bar, objects per frame, and tracks.

Everything here reads only the frames. Objects are pixels that differ from the estimated
background; they are grouped into connected components, described by colour (nearest reference
in CIELAB), rotation-invariant shape features (angular harmonics of the mass distribution) and
position, and linked across frames into tracks.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Optional

import numpy as np

from . import spec

MIN_THRESHOLD = 40.0  # RGB distance from the background above which a pixel is an object
MAX_FG_FRACTION = 0.5  # frames with more foreground than this are noise, not shapes
HARMONICS = (2, 3, 4, 5, 6)
MIN_SHAPE_RADIUS = 3.2  # px: smaller blobs get no shape class
MAX_NOISE = 20.0  # per-channel noise (0-255) above which a clip is noise, not shapes on a background


@dataclasses.dataclass
class Detection:
    """One connected component in one frame."""

    t: int
    x: float
    y: float
    area: float
    lab: np.ndarray
    colour: str
    features: np.ndarray
    moments: np.ndarray  # complex angular moments for HARMONICS
    partial: bool  # touches the occluder bar or the frame edge
    shape: Optional[str] = None

    @property
    def radius(self) -> float:
        """Radius of the disc with the same area, px."""
        return math.sqrt(self.area / math.pi)


@dataclasses.dataclass
class Track:
    """Detections of one object across frames, with what they say about it."""

    detections: list
    colour: str = ""
    shape: Optional[str] = None
    size: Optional[str] = None
    motion: Optional[str] = None
    rotation_deg: float = 0.0
    displacement: tuple = (0.0, 0.0)
    scale_ratio: float = 1.0

    @property
    def visible(self) -> list:
        """Detections not cut by the bar or the frame edge (all of them if none is whole): what its shape and
        size are read from, as a cut view shows neither (a cross cut by the bar reads as a triangle, and small)."""
        whole = [d for d in self.detections if not d.partial]
        return whole or self.detections

    @property
    def seen(self) -> list:
        """What its colour and motion are read from, which take several views and which a cut view still shows:
        the whole detections if at least two are whole, else all of them."""
        whole = [d for d in self.detections if not d.partial]
        return whole if len(whole) >= 2 else self.detections


@dataclasses.dataclass
class Scene:
    """What the evaluator sees in a clip."""

    n_frames: int
    size: tuple  # (width, height)
    background: str
    background_rows: np.ndarray  # (H, 3) estimated background colour of every row
    background_fraction: float  # share of pixels explained by the background
    bar: Optional[tuple]  # occluder columns [x0, x1) or None
    detections: list  # per frame, a list of Detection
    tracks: list  # main tracks (objects), longest first
    front: list = dataclasses.field(default_factory=list)  # per frame, blobs seen in front of the bar (`in_front`)

    @property
    def scale(self) -> float:
        """min(width, height): the unit of the world's geometry."""
        return float(min(self.size))


# ---------------------------------------------------------------------------------------------
# Colour


def srgb_to_lab(rgb) -> np.ndarray:
    """CIELAB (D65) of sRGB values in [0, 255], any leading shape."""
    c = np.asarray(rgb, np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


_COLOUR_LAB = srgb_to_lab([spec.PALETTE[c] for c in spec.COLOURS])
_LAB_WEIGHT = np.array([0.5, 1.0, 1.0])  # lightness drifts more than hue in generated clips


def lab_distance(a, b) -> np.ndarray:
    """Lightness-discounted distance between CIELAB colours."""
    return np.linalg.norm((np.asarray(a) - np.asarray(b)) * _LAB_WEIGHT, axis=-1)


def classify_colour(lab) -> str:
    """Nearest reference colour name."""
    return spec.COLOURS[int(np.argmin(lab_distance(_COLOUR_LAB, lab)))]


def classify_background(rows: np.ndarray) -> str:
    """Background name of an estimated (H, 3) background."""
    if np.linalg.norm(rows[0] - rows[-1]) > 40:
        return "gradient"
    flat = [b for b in spec.BACKGROUNDS if b != "gradient"]
    refs = srgb_to_lab([spec.BACKGROUND_RGB[b][0] for b in flat])
    lab = srgb_to_lab(rows.mean(axis=0))
    return flat[int(np.argmin(np.linalg.norm(refs - lab, axis=-1)))]


# ---------------------------------------------------------------------------------------------
# Background and foreground


def _robust_line(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-channel straight line through rows (H, 3), ignoring outlier rows."""
    h = values.shape[0]
    y = np.arange(h, dtype=np.float64)
    keep = weights > 0
    fit = np.repeat(np.median(values[keep] if keep.any() else values, axis=0)[None], h, axis=0)
    for _ in range(3):
        if keep.sum() < 4:
            break
        a = np.stack([np.ones(keep.sum()), y[keep]], 1) * weights[keep, None]
        coef, *_ = np.linalg.lstsq(a, values[keep] * weights[keep, None], rcond=None)
        fit = coef[0][None] + y[:, None] * coef[1][None]
        resid = np.linalg.norm(values - fit, axis=1)
        mad = np.median(resid[keep])
        keep = (weights > 0) & (resid <= max(4 * mad, 8.0))
    return fit


def estimate_background(f: np.ndarray) -> tuple:
    """Background rows (H, 3) and distance of every pixel from it (T, H, W)."""
    band = np.concatenate([f[:, :, :3], f[:, :, -3:]], axis=2)  # (T, H, 6, 3)
    rows = np.median(band.transpose(1, 0, 2, 3).reshape(f.shape[1], -1, 3), axis=1)
    rows = _robust_line(rows, np.ones(f.shape[1]))
    dist = np.linalg.norm(f - rows[None, :, None, :].astype(np.float32), axis=-1)
    bg = dist < MIN_THRESHOLD
    count = bg.sum(axis=(0, 2))
    sums = np.einsum("thwc,thw->hc", f, bg.astype(np.float32))
    means = sums / np.maximum(count, 1)[:, None]
    rows = _robust_line(means, (count >= 0.1 * f.shape[0] * f.shape[2]).astype(np.float64))
    dist = np.linalg.norm(f - rows[None, :, None, :].astype(np.float32), axis=-1)
    return rows, dist


def noise_level(f: np.ndarray, rows: np.ndarray) -> float:
    """Robust per-channel standard deviation of the left/right border bands around the background."""
    band = np.concatenate([f[:, :, :3], f[:, :, -3:]], axis=2) - rows[None, :, None, :].astype(np.float32)
    return float(1.4826 * np.median(np.abs(band)))


def find_bar(fg: np.ndarray, scale: float) -> Optional[tuple]:
    """Columns [x0, x1) of a static full-height bar (foreground in nearly every pixel), or None."""
    cols = fg.mean(axis=(0, 1)) > 0.85
    best = None
    x = 0
    while x < cols.size:
        if cols[x]:
            x1 = x
            while x1 < cols.size and cols[x1]:
                x1 += 1
            if x1 - x >= max(3, 0.05 * scale) and (best is None or x1 - x > best[1] - best[0]):
                best = (x, x1)
            x = x1
        else:
            x += 1
    return best


def label_components(mask: np.ndarray) -> np.ndarray:
    """8-connected components of each frame of a (T, H, W) bool mask: int32 labels, 0 = none.

    Each pixel takes the smallest label among its neighbours, with pointer jumping, until no label changes (a
    fixed point: every component is one label, whatever its size; at most 64 sweeps left a large object of a
    384 px frame split in two). Each sweep that changes something lowers a label, so the loop ends."""
    t, h, w = mask.shape
    big = np.int32(t * h * w + 1)
    lab = np.where(mask, np.arange(1, t * h * w + 1, dtype=np.int32).reshape(t, h, w), big)
    pad = np.full((t, h + 2, w + 2), big, np.int32)
    while True:
        pad[:, 1:-1, 1:-1] = lab
        new = lab.copy()
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                if dy != 1 or dx != 1:
                    np.minimum(new, pad[:, dy:dy + h, dx:dx + w], out=new)
        new[~mask] = big
        flat = new.ravel()
        sel = np.flatnonzero(flat < big)
        v = flat[sel]
        while True:  # pointer jumping: a label is the index (+1) of a pixel of the component
            jumped = np.minimum(v, flat[v - 1])
            if np.array_equal(jumped, v):
                break
            v = jumped
            flat[sel] = v
        if np.array_equal(new, lab):
            break
        lab = new
    lab = lab.copy()
    lab[~mask] = 0
    return lab


def _dilate_labels(lab: np.ndarray) -> np.ndarray:
    """Labels grown by one pixel into unlabelled neighbours (8-connected)."""
    t, h, w = lab.shape
    pad = np.zeros((t, h + 2, w + 2), lab.dtype)
    pad[:, 1:-1, 1:-1] = lab
    grown = lab.copy()
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            nb = pad[:, dy:dy + h, dx:dx + w]
            fill = (grown == 0) & (nb > 0)
            grown[fill] = nb[fill]
    return grown


# ---------------------------------------------------------------------------------------------
# Per-component measurements


def _group_max(keys: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Max of values per key in [0, n)."""
    out = np.full(n, -np.inf)
    np.maximum.at(out, keys, values)
    return out


def measure(frames: np.ndarray, classify: bool = True) -> tuple:
    """Background, bar and per-frame detections of a clip: (rows, bg_fraction, bar, detections).

    classify=False leaves Detection.shape None (used to build the shape prototypes themselves).
    """
    f = frames.astype(np.float32)
    t_len, h, w, _ = f.shape
    scale = float(min(h, w))
    rows, dist = estimate_background(f)
    bg_level = float(np.median(dist[dist < MIN_THRESHOLD])) if (dist < MIN_THRESHOLD).any() else 0.0
    threshold = max(MIN_THRESHOLD, 3.0 * bg_level)
    fg = dist > threshold
    bg_fraction = float(1.0 - fg.mean())
    detections = [[] for _ in range(t_len)]
    if noise_level(f, rows) > MAX_NOISE:
        return rows, 0.0, None, detections  # no background to speak of: noise, not a scene
    bar = find_bar(fg, scale)
    if bar is not None:
        fg[:, :, max(bar[0] - 2, 0):bar[1] + 2] = False  # with a margin for blurred edges
    noisy = fg.mean(axis=(1, 2)) > MAX_FG_FRACTION
    fg[noisy] = False
    lab = label_components(fg)
    ids, inverse, counts = np.unique(lab[lab > 0], return_inverse=True, return_counts=True)
    if ids.size == 0:
        return rows, bg_fraction, bar, detections
    # Keep blobs the size of a shape: not specks, not half the frame.
    min_area, max_area = 0.003 * scale ** 2, 0.25 * scale ** 2
    good = (counts >= min_area) & (counts <= max_area)
    remap = np.zeros(int(lab.max()) + 1, np.int64)
    remap[ids[good]] = np.arange(1, good.sum() + 1)
    lab = remap[lab]
    n = int(good.sum()) + 1
    if n == 1:
        return rows, bg_fraction, bar, detections
    core_lab = lab
    lab = _dilate_labels(lab)
    tt, yy, xx = np.nonzero(lab)
    key = lab[tt, yy, xx]
    d = dist[tt, yy, xx].astype(np.float64)
    rgb = f[tt, yy, xx].astype(np.float64)
    in_core = core_lab[tt, yy, xx] > 0
    maxd = _group_max(key, np.where(in_core, d, -np.inf), n)
    core = in_core & (d >= 0.6 * maxd[key])
    ncore = np.bincount(key, core, n)
    contrast = np.bincount(key, d * core, n) / np.maximum(ncore, 1)
    colour = np.stack([np.bincount(key, rgb[:, c] * core, n) for c in range(3)], 1) / np.maximum(ncore, 1)[:, None]
    wgt = np.clip(d / np.maximum(contrast[key], 1e-6), 0.0, 1.0)
    area = np.bincount(key, wgt, n)
    cx = np.bincount(key, wgt * xx, n) / np.maximum(area, 1e-9)
    cy = np.bincount(key, wgt * yy, n) / np.maximum(area, 1e-9)
    dx, dy = xx - cx[key], yy - cy[key]
    rho2 = dx * dx + dy * dy
    m2 = np.bincount(key, wgt * rho2, n)
    z = (dx + 1j * dy) / np.sqrt(np.maximum(rho2, 1e-12))
    moments = []
    for k in HARMONICS:
        zk = wgt * rho2 * z ** k
        moments.append(np.bincount(key, zk.real, n) + 1j * np.bincount(key, zk.imag, n))
    moments = np.stack(moments, 1)
    spread = m2 / np.maximum(area, 1e-9) ** 2 * 2 * math.pi  # 1 for a disc, more for spiky shapes
    feats = np.concatenate([spread[:, None], np.abs(moments) / np.maximum(m2, 1e-9)[:, None]], 1)
    t_of = np.zeros(n, np.int64)
    t_of[key] = tt
    x0 = -_group_max(key, np.where(in_core, -xx, -np.inf), n)  # bounding box of the
    x1 = _group_max(key, np.where(in_core, xx, -np.inf), n)  # undilated component
    y0 = -_group_max(key, np.where(in_core, -yy, -np.inf), n)
    y1 = _group_max(key, np.where(in_core, yy, -np.inf), n)
    labs = srgb_to_lab(colour)
    for i in range(1, n):
        partial = x0[i] <= 0 or y0[i] <= 0 or x1[i] >= w - 1 or y1[i] >= h - 1
        if bar is not None:
            partial = partial or (x1[i] >= bar[0] - 3 and x0[i] <= bar[1] + 2)  # next to the cut
        det = Detection(int(t_of[i]), float(cx[i]), float(cy[i]), float(area[i]), labs[i],
                        classify_colour(labs[i]), feats[i], moments[i], bool(partial))
        det.shape = classify_shape(det) if classify else None
        detections[det.t].append(det)
    return rows, bg_fraction, bar, detections


# ---------------------------------------------------------------------------------------------
# Shape prototypes: the canonical shapes, rendered and measured by the same code.


@functools.lru_cache(maxsize=1)
def shape_prototypes() -> tuple:
    """(features (N, F), shape names (N,), area per base radius squared {shape: k})."""
    from .canvas import Path, coverage

    rng = np.random.default_rng(1234)
    radii = (3.8, 5.0, 6.4, 8.0, 9.6, 11.5, 13.4)
    blurs = (0.0, 0.8, 1.3)
    frames, names = [], []
    for shape in spec.SHAPES:
        period = 2 * math.pi / max(spec.SYMMETRY[shape], 1)
        for r in radii:
            for blur in blurs:
                for a in (0.0, 0.3, 0.55, 0.8):
                    c = 32 + rng.uniform(-0.5, 0.5, 2)
                    p = Path(c[None], np.ones(1), np.array([a * period]), r, shape, True)
                    alpha, y0, x0 = coverage(p, (64, 64))
                    img = np.zeros((64, 64), np.float32)
                    img[y0:y0 + alpha.shape[1], x0:x0 + alpha.shape[2]] = alpha[0]
                    img = gaussian_blur(img, blur)
                    frames.append(img)
                    names.append(shape)
    alpha = np.stack(frames)[..., None]
    bg = np.array(spec.BACKGROUND_RGB["dark"][0], np.float32)
    fg = np.array(spec.PALETTE["white"], np.float32)
    clip = np.clip(bg * (1 - alpha) + fg * alpha, 0, 255).astype(np.uint8)
    _, _, _, dets = measure(clip, classify=False)
    feats, labels, per_r2 = [], [], {s: [] for s in spec.SHAPES}
    for i, ds in enumerate(dets):
        if len(ds) != 1:
            continue
        feats.append(ds[0].features)
        labels.append(names[i])
        shape_i = i // (len(blurs) * 4)
        r = radii[shape_i % len(radii)]
        per_r2[names[i]].append(ds[0].area / r ** 2)
    area_k = {s: float(np.median(v)) for s, v in per_r2.items()}
    return np.array(feats), np.array(labels), area_k


FEATURE_SCALE = np.array([3.0, 4.0, 4.0, 4.0, 4.0, 2.0])  # spread, then harmonics 2..6


def classify_shape(det: Detection) -> Optional[str]:
    """Nearest prototype shape, or None for blobs too small to tell."""
    if det.radius < MIN_SHAPE_RADIUS:
        return None
    feats, names, _ = shape_prototypes()
    d = np.abs((feats - det.features) * FEATURE_SCALE).sum(axis=1)
    return str(names[int(np.argmin(d))])


def gaussian_blur(img: np.ndarray, sigma: float, axes: tuple = (-2, -1)) -> np.ndarray:
    """Separable Gaussian blur along two axes (identity for sigma 0), edges replicated."""
    if sigma <= 0:
        return img
    r = max(1, int(math.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    out = np.asarray(img, np.float32)
    for axis in axes:
        moved = np.moveaxis(out, axis, -1)
        p = np.pad(moved, [(0, 0)] * (moved.ndim - 1) + [(r, r)], mode="edge")
        moved = sum(k[i] * p[..., i:i + moved.shape[-1]] for i in range(2 * r + 1))
        out = np.moveaxis(moved, -1, axis)
    return out


# ---------------------------------------------------------------------------------------------
# Tracks


def _speed(dets: list) -> float:
    """Recent speed (px per frame) of a track from its last two whole detections."""
    whole = [d for d in dets if not d.partial]
    if len(whole) < 2:
        return 0.0
    a, b = whole[-2], whole[-1]
    return math.hypot(b.x - a.x, b.y - a.y) / max(b.t - a.t, 1)


def link(detections: list, scale: float) -> list:
    """Greedy frame-to-frame linking of detections into tracks (lists of Detection)."""
    tracks = []
    for t, dets in enumerate(detections):
        cands = []
        for ti, tr in enumerate(tracks):
            last = tr[-1]
            gap = t - last.t
            if gap <= 0:
                continue
            ref = ([d for d in tr if not d.partial] or tr)[-1]
            gate = 0.25 * scale + 1.5 * _speed(tr) * gap + (0.2 * scale if last.partial else 0.0)
            lab = np.mean([d.lab for d in tr[-4:]], axis=0)
            for di, d in enumerate(dets):
                dist = math.hypot(d.x - ref.x, d.y - ref.y)
                de = float(lab_distance(lab, d.lab))
                if dist <= gate and de <= 30:
                    cands.append((dist / gate + de / 30, ti, di))
        used_t, used_d = set(), set()
        for _, ti, di in sorted(cands):
            if ti not in used_t and di not in used_d:
                tracks[ti].append(dets[di])
                used_t.add(ti)
                used_d.add(di)
        tracks.extend([d] for di, d in enumerate(dets) if di not in used_d)
    return tracks


def majority(values: list, weights: Optional[list] = None):
    """Most common value (weighted), ignoring None; None if there is none."""
    tally = {}
    for i, v in enumerate(values):
        if v is not None:
            tally[v] = tally.get(v, 0.0) + (1.0 if weights is None else weights[i])
    return max(tally, key=tally.get) if tally else None


def _track_shape(dets: list) -> Optional[str]:
    """Majority shape of the whole detections (None if there are none)."""
    return majority([d.shape for d in dets if not d.partial])


def _merge(tracks: list) -> list:
    """Join tracks of the same colour (and shape, where known) that follow each other in time.

    This bridges gaps where an object was hidden (behind the bar) or too small to see.
    """
    tracks = sorted(tracks, key=lambda tr: tr[0].t)
    merged = True
    while merged:
        merged = False
        for i, a in enumerate(tracks):
            ca, sa = majority([d.colour for d in a]), _track_shape(a)
            for j in range(i + 1, len(tracks)):
                b = tracks[j]
                if b[0].t <= a[-1].t:
                    continue
                sb = _track_shape(b)
                if majority([d.colour for d in b]) == ca and (sa is None or sb is None or sa == sb):
                    tracks[i] = a + b
                    del tracks[j]
                    merged = True
                    break
            if merged:
                break
    return tracks


def _rotation(dets: list, shape: Optional[str]) -> float:
    """Total rotation in degrees over the detections, from the phase of the symmetry harmonic."""
    k = spec.SYMMETRY.get(shape or "circle", 0)
    if k == 0 or len(dets) < 2:
        return 0.0
    phase = np.unwrap(np.angle([d.moments[HARMONICS.index(k)] for d in dets]))
    return float(np.degrees(phase[-1] - phase[0]) / k)


def _bounces(y: np.ndarray, scale: float) -> bool:
    """Whether a vertical track goes up and comes back down by comparable amounts."""
    span = y.max() - y.min()
    if span < 0.15 * scale:
        return False
    fall = np.max(np.maximum.accumulate(y) - y)  # rising on screen after a low point
    rise = np.max(y - np.minimum.accumulate(y))  # falling on screen after a high point
    return fall >= 0.5 * span and rise >= 0.5 * span and abs(y[-1] - y[0]) < 0.5 * span


def classify_motion(dets: list, shape: Optional[str], scale: float) -> tuple:
    """(motion, displacement (dx, dy), scale ratio, rotation degrees) of a track's whole detections."""
    if len(dets) < 2:
        return None, (0.0, 0.0), 1.0, 0.0
    t = np.array([d.t for d in dets], float)
    xy = np.array([[d.x, d.y] for d in dets])
    r = np.array([d.radius for d in dets])
    span = t[-1] - t[0]
    slope = np.polyfit(t, xy, 1)[0]
    dx, dy = slope * span
    ratio = float(np.exp(np.polyfit(t, np.log(np.maximum(r, 0.5)), 1)[0] * span))
    rot = _rotation(dets, shape)
    if ratio >= 1.5:
        motion = "grow"
    elif ratio <= 1 / 1.5:
        motion = "shrink"
    elif _bounces(xy[:, 1], scale) and abs(dx) < 0.12 * scale:
        motion = "bounce"
    elif math.hypot(dx, dy) >= 0.12 * scale:
        motion = direction_name(dx, dy)
    elif abs(rot) >= 25.0:
        motion = "spin"
    else:
        motion = "still"
    return motion, (float(dx), float(dy)), ratio, rot


def direction_name(dx: float, dy: float) -> str:
    """One of the eight directions nearest to a displacement (y down)."""
    ang = math.degrees(math.atan2(-dy, dx)) % 360
    names = ["right", "up-right", "up", "up-left", "left", "down-left", "down", "down-right"]
    return names[int(((ang + 22.5) % 360) // 45)]


def size_name(dets: list, shape: Optional[str], scale: float) -> Optional[str]:
    """ "small" or "large" from the median area of whole detections."""
    if not dets:
        return None
    _, _, area_k = shape_prototypes()
    k = area_k.get(shape or "circle", math.pi)
    r = math.sqrt(float(np.median([d.area for d in dets])) / k) / scale
    return "small" if r < math.sqrt(spec.RADIUS["small"] * spec.RADIUS["large"]) else "large"


def summarise(dets: list, scale: float) -> Track:
    """A Track with colour, shape, size and motion read from its detections."""
    tr = Track(sorted(dets, key=lambda d: d.t))
    vis, seen = tr.visible, tr.seen
    tr.colour = majority([d.colour for d in seen], [d.area for d in seen])
    tr.shape = majority([d.shape for d in vis]) or majority([d.shape for d in tr.detections])
    tr.size = size_name(vis, tr.shape, scale)
    tr.motion, tr.displacement, tr.scale_ratio, tr.rotation_deg = classify_motion(seen, tr.shape, scale)
    return tr


def analyse(frames) -> Scene:
    """Read a clip's pixels: background, occluder bar, and one track per object."""
    frames = as_frames(frames)
    t_len, h, w, _ = frames.shape
    scale = float(min(h, w))
    rows, bg_fraction, bar, detections = measure(frames)
    tracks = _merge(link(detections, scale))
    min_len = max(2, int(math.ceil(0.25 * t_len)))
    main = [summarise(tr, scale) for tr in tracks if len(tr) >= min_len]
    main.sort(key=lambda tr: -len(tr.detections))
    background = classify_background(rows) if bg_fraction >= 0.4 else "unknown"
    front = in_front(frames, bar)
    return Scene(t_len, (w, h), background, rows, bg_fraction, bar, detections, main, front)


def in_front(frames: np.ndarray, bar: Optional[tuple]) -> list:
    """Per frame, the blobs painted over the bar (columns [x0, x1)): what covers it in some frames and not in most.

    `measure` cuts the bar's columns out of every frame, so an object that passes in front of the bar looks there
    like one that passes behind it; this reads what it cut. The bar stands still, so each of its pixels is compared
    with its own median over the clip (its one or two columns at either edge, which blur into the background, are
    left out). Pixels farther from it than `MIN_THRESHOLD` (or 3 times the typical distance, for a noisy bar) are
    grouped into connected components; those the size of a shape (as in `measure`) are Detections (partial, with
    no shape): frame, centre in the frame, area (px), colour.
    """
    out = [[] for _ in range(len(frames))]
    if bar is None or bar[1] - bar[0] < 5:
        return out
    x0, x1 = bar[0] + 2, bar[1] - 2
    f = frames[:, :, x0:x1].astype(np.float32)
    dist = np.linalg.norm(f - np.median(f, axis=0)[None], axis=-1)
    mask = dist > max(MIN_THRESHOLD, 3.0 * float(np.median(dist)))
    if not mask.any():
        return out
    scale = float(min(frames.shape[1:3]))
    lab = label_components(mask)
    ids, counts = np.unique(lab[lab > 0], return_counts=True)
    for i, area in zip(ids, counts):
        if area < 0.003 * scale ** 2:
            continue
        tt, yy, xx = np.nonzero(lab == i)
        lab_colour = srgb_to_lab(f[tt, yy, xx].mean(axis=0))
        out[int(tt[0])].append(Detection(int(tt[0]), float(xx.mean() + x0), float(yy.mean()), float(area), lab_colour,
                                         classify_colour(lab_colour), np.zeros(1 + len(HARMONICS)),
                                         np.zeros(len(HARMONICS), complex), True))
    return out


def as_frames(frames, min_frames: int = 2) -> np.ndarray:
    """uint8 (T, H, W, 3) from an array or tensor, or anything with .frames; T >= ``min_frames`` (a judged clip
    moves: 2; a picture of it: 1).

    - uint8: as is.
    - other integers (uint16, int64, ...): values in [0, 255], as uint8; any value outside is refused (16-bit
      frames, 0..65535, are not read as 8-bit ones: scale them to 0..255 first).
    - floats (float16/32/64, and torch's bfloat16): in [0, 1] when at most 0.1% of the values exceed 1.5 (the
      99.9th percentile is at most 1.5), else in [0, 255]; then scaled, rounded and clipped to 0..255. A few
      pixels a decoder overshoots (1.6, or 3.0) do not move a [0, 1] clip to the 0..255 scale, where it would
      read as near black (only a 0..255 clip that is black, <= 1.5, in all but 0.1% of its values would read
      as [0, 1]: pass such a clip as uint8). NaN and infinite values are refused.
    """
    frames = getattr(frames, "frames", frames)
    if hasattr(frames, "detach"):  # a torch tensor
        frames = frames.detach().cpu()
        if frames.is_floating_point():  # bfloat16 has no numpy dtype
            frames = frames.float()
        frames = frames.numpy()
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] < min_frames:
        raise ValueError(f"frames must be (T, H, W, 3) with T >= {min_frames}, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise TypeError(f"frames must be uint8 in [0, 255], other integers in [0, 255] or floats in [0, 1] "
                            f"(or [0, 255]), got dtype {arr.dtype}")
        if np.issubdtype(arr.dtype, np.integer):  # integers are 0..255, as uint8
            lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
            if lo < 0 or hi > 255:
                raise ValueError(f"integer frames must hold values in [0, 255] (8-bit), got {arr.dtype} values from "
                                 f"{lo} to {hi}; scale 16-bit frames to 0..255 (e.g. frames // 257) or pass uint8")
            return arr.astype(np.uint8)
        arr = arr.astype(np.float32)
        if not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).sum())
            raise ValueError(f"frames must be finite: {bad} value{' is' if bad == 1 else 's are'} NaN or infinite")
        # [0, 1] unless more than 0.1% of the values exceed 1.5 (a 0..255 clip has most of its values there)
        unit = np.count_nonzero(arr > 1.5) <= 0.001 * arr.size
        arr = np.clip(np.rint(arr * (255.0 if unit else 1.0)), 0, 255).astype(np.uint8)
    return arr
