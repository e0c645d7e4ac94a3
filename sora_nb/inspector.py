"""The latent inspector: scrub every denoising step of every frame, in the browser.

::

    video = sora_nb.generate("a red circle moving right", seed=0, steps=20)
    sora_nb.inspect(video)                       # or a trace: sora_nb.inspect(video.trace)
    sora_nb.inspect(video, compare=other_video)  # two runs side by side (e.g. guidance 1 vs 7)

The widget shows one frame at one step of the trace (:mod:`sora_nb.trace`), in one of four views:

- ``"x0"``: the RGB preview of the model's clean prediction x0 (the trace's ``preview``);
- ``"xt"``: x_t, the noisy latent fed to the model, through the same latent -> RGB map;
- ``"channel"``: one latent channel of x0 as a heatmap (blue negative, red positive);
- ``"delta"``: how much x0 changed since the previous recorded step (RMS over channels). With ``record_every``
  > 1 (or a thinned trace) the recorded steps are several denoising steps apart: the view is still the change
  since the previous *recorded* step (its title says so), while the per-step plot and readout show the update
  *per step*: each RMS change divided by the number of steps it spans (``step[s] - step[s - 1]``), so that a
  last interval of 1 step after intervals of 4 does not look like a drop. For a trace of every step both are
  the plain change since the previous step.

Heatmaps use one colour scale for all steps, frames and both compared traces, so a difference in
colour is a difference in value.

Captions name what tells the traces apart (default: seed and guidance); a trace of a redrawn clip (attrs
``noise_seed`` / ``noise_steps``: its noise is not the one its ``seed`` draws) says so. Two traces are shown
side by side by position (recorded step ``k`` of each, frame ``k`` of each): where their step numbers, noise
levels or frame coordinates differ the step and frame rows show both values, and a note in the widget (and a
:class:`UserWarning`) says so; so does one where the two start from different noise while their captions
suggest the same seed. Each panel has its own scale, so that two previews of different sizes come out about
the same size on screen.

Around it: step and frame sliders with play buttons, the whole clip at the current step (a
filmstrip), the current frame across the steps, and a per-step plot (sigma, std of x_t, size of
the update) with the current step marked.

How it stays instant: every view of every step and frame is computed here, in Python, once, and sent
to the browser as raw bytes (binary widget buffers, no base64) together with small lists of per-step
numbers. They are computed a recorded step at a time, so a build needs little memory beyond the bytes
it sends (no float32 copy of the trace). The front end (``widgets/inspector.js``, an anywidget ES
module) cuts frames out of those bytes and draws them with ``putImageData``; moving a slider never
waits for the kernel. Only a change of ``channel`` asks Python for a new heatmap stack. The widget's
state (``step``, ``frame``, ``view``, ``channel``) is synced both ways, and :meth:`Inspector.image`
returns the pixels currently shown, cut from the same bytes the browser draws.

The x_t view needs the latent -> RGB map that made the preview. A trace does not store it, so
:func:`fit_rgb_map` recovers it by least squares from the trace's own (x0, preview) pairs: exact up
to rounding when the preview is linear (the embedded model, and every family in
:mod:`sora_nb.latent_formats`).
"""

from __future__ import annotations

import functools
import io
import itertools
import math
import numbers
import warnings
from typing import Any, Callable, Iterable, Iterator

import anywidget
import numpy as np
import traitlets
import xarray as xr

from ._checks import check_float
from .frontend import MAX_SCALE, Player, as_trait, check_fps, check_scale, read_module
from .trace import MB, open_trace

__all__ = ["Inspector", "inspect", "open_trace", "fit_rgb_map", "to_rgb", "channel_heatmap", "channel_vmax",
           "delta_heatmap", "delta_vmax", "step_stats"]

VIEWS = ("x0", "xt", "channel", "delta")
STACKED_VIEWS = ("x0", "xt", "delta")   # sent once; the channel heatmap is sent per channel
NOISE_KEYS = ("noise_seed", "noise_steps")  # attrs of a redrawn clip's trace: the draw its noise came from
LABEL_KEYS = ("prompt", "seed", "guidance", "steps", "negative_prompt", "model") + NOISE_KEYS
MAX_FIT_PIXELS = 20_000
RIDGE = 1e-6          # relative ridge of the latent -> RGB fit (x0 channels can be nearly collinear)


# -- reading traces ----------------------------------------------------------------------------------
def as_trace(obj: Any, name: str = "video_or_trace") -> xr.Dataset:
    """The trace of a :class:`~sora_nb.Video`, or a trace Dataset, checked; TypeError/ValueError otherwise."""
    from .video import Video

    if isinstance(obj, Video):
        if obj.trace is None:
            raise ValueError(f"{name} has no trace: it was generated with trace=False; generate with trace=True")
        obj = obj.trace
    if not isinstance(obj, xr.Dataset):
        raise TypeError(f"{name} must be a sora_nb.Video or its trace (an xarray.Dataset), got {type(obj).__name__}")
    missing = [v for v in ("latent", "x0", "preview") if v not in obj.data_vars]
    if missing:
        raise ValueError(f"{name} is not a sora_nb trace: it has no {', '.join(missing)} variable(s) "
                         f"(has {', '.join(map(str, obj.data_vars)) or 'none'})")
    expected = {"latent": ("step", "frame", "channel", "y", "x"), "x0": ("step", "frame", "channel", "y", "x"),
                "preview": ("step", "frame", "py", "px", "rgb")}
    for var, dims in expected.items():
        if obj[var].dims != dims:
            raise ValueError(f"{name}.{var} must have dims {dims}, got {obj[var].dims}")
    if obj.preview.dtype != np.uint8 or obj.sizes["rgb"] != 3:
        raise ValueError(f"{name}.preview must be uint8 RGB, got {obj.preview.dtype} with {obj.sizes['rgb']} channels")
    for dim in ("step", "frame", "channel", "y", "x", "py", "px"):  # an empty one failed later, obscurely
        if obj.sizes[dim] == 0:
            raise ValueError(f"{name} is empty: its {dim!r} dimension has size 0 ({dict(obj.sizes)})")
    return obj


# -- views, computed the way the browser shows them --------------------------------------------------
# A trace's float16 arrays can be hundreds of MB (Wan 480p: 30 steps of 21 frames are 126 MB each), so nothing
# here makes a float32 copy of a whole one: the views, scales and stats are computed a recorded step at a time
# (a float32 copy of one step's (frame, channel, y, x)). Per step they are the very numpy operations the
# whole-trace formulas were (elementwise, or reduced within a step), so every byte and number is the same.
def _preview_index(trace: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The preview's rows and columns nearest to the latent's (the preview sampled at latent resolution)."""
    h, w = trace.sizes["y"], trace.sizes["x"]
    return (np.arange(h) * trace.sizes["py"]) // h, (np.arange(w) * trace.sizes["px"]) // w


def _finite_in_float32(values: np.ndarray) -> np.ndarray:
    """``np.isfinite(values.astype(np.float32))``, without the copy when ``values`` are float16 or float32 already."""
    return np.isfinite(values if values.dtype in (np.float16, np.float32) else values.astype(np.float32))


def fit_rgb_map(trace: xr.Dataset) -> np.ndarray:
    """The linear latent -> RGB map behind ``preview``: a (channel + 1, 3) matrix (last row the bias).

    Least squares (with a tiny ridge, so channels that are nearly collinear in x0 do not get huge
    opposite weights that would blow up on the noise of x_t) on unsaturated preview pixels (every
    channel strictly inside 0..255) at latent resolution (the nearest preview pixel), at most 20,000
    of them, picked evenly; the map reproduces ``preview`` from ``x0`` up to rounding when the preview
    is linear.
    """
    trace = as_trace(trace, "trace")
    c = trace.sizes["channel"]
    x0, preview = trace.x0.values, trace.preview.values
    iy, ix = _preview_index(trace)
    grid = (x0.shape[0], x0.shape[1], x0.shape[3], x0.shape[4])  # a sample per (step, frame, y, x)
    unsaturated, finite = np.empty(grid, bool), np.empty(grid, bool)
    for s in range(grid[0]):  # a step at a time: masks of the samples, not float copies of them
        rgb = preview[s][:, iy][:, :, ix]
        unsaturated[s] = np.all((rgb > 0) & (rgb < 255), axis=-1)
        finite[s] = np.all(_finite_in_float32(x0[s]), axis=1)  # an inf in x0 would void the fit
    ok = (unsaturated & finite).ravel()
    if ok.sum() < c + 1:  # almost everything saturated: use what there is (finite)
        ok = finite.ravel()
    if ok.sum() < c + 1:
        raise ValueError(f"trace's x0 has {int(ok.sum())} finite pixels, fewer than the {c + 1} the latent -> RGB map "
                         "needs: the run diverged")
    idx = np.flatnonzero(ok)
    idx = idx[:: -(-len(idx) // MAX_FIT_PIXELS)]  # a ceiling stride: at most MAX_FIT_PIXELS samples
    s, f, y, x = np.unravel_index(idx, grid)
    samples = x0[s, f, :, y, x].astype(np.float32)                   # (N, C)
    target = preview[s, f, iy[y], ix[x]].astype(np.float32)          # (N, 3)
    a = np.concatenate([samples, np.ones((len(idx), 1), np.float32)], axis=1).astype(np.float64)
    target = target.astype(np.float64) / 127.5 - 1.0
    gram = a.T @ a
    ridge = RIDGE * np.trace(gram) / len(gram) * np.eye(len(gram))  # keeps collinear channels' weights small
    return np.linalg.solve(gram + ridge, a.T @ target).astype(np.float32)


def _apply_map(latent: np.ndarray, rgb_map: np.ndarray) -> np.ndarray:
    """(..., channel, y, x) latent through a (channel + 1, 3) map to uint8 (..., y, x, 3); a non-finite value
    (a diverged run's) is mid grey. A stack (of steps, frames) is mapped a (channel, y, x) at a time: the same
    products, without float32 copies of the whole."""
    if latent.ndim > 3:
        out = np.empty(latent.shape[:-3] + latent.shape[-2:] + (3,), np.uint8)
        for i, step in enumerate(latent):
            out[i] = _apply_map(step, rgb_map)
        return out
    z = np.moveaxis(latent.astype(np.float32), -3, -1)  # (..., y, x, C)
    rgb = np.nan_to_num(z @ rgb_map[:-1] + rgb_map[-1], nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(np.rint((rgb + 1.0) * 127.5), 0, 255).astype(np.uint8)


def _finite_percentile(values: np.ndarray, q: float) -> float:
    """The ``q``th percentile of ``values``' finite entries (0.0 when there are none): a scale that one NaN or
    inf (a diverged step) does not turn into NaN for every step and frame."""
    values = values[np.isfinite(values)]  # a copy: np.percentile may sort it in place rather than copy it again
    return float(np.percentile(values, q, overwrite_input=True)) if values.size else 0.0


def _percentile_from_ranks(n: int, q: float, ranked: Callable[[list[int]], np.ndarray]) -> float:
    """``float(np.percentile(values, q))`` (numpy's default, "linear" method) of ``n`` float32 values known through
    ``ranked(ranks)``: the values at those 0-based positions of the values sorted.

    np.percentile interpolates between the sorted values of ranks ``floor(v)`` and ``floor(v) + 1``, where
    ``v = (n - 1) * (q / 100)``, at the fraction ``v - floor(v)``; the pair is interpolated here by numpy itself
    (np.quantile of the two values at that fraction: its own virtual index is the fraction, exactly), so the
    result is np.percentile's to the bit.
    """
    v = (n - 1) * np.true_divide(q, 100)
    lo = int(np.floor(v))
    if lo >= n - 1:  # one value (q < 100 otherwise keeps v below n - 1)
        return float(ranked([n - 1])[0])
    return float(np.quantile(ranked([lo, lo + 1]), float(v - lo)))


def _abs_percentile(values: np.ndarray, channel: int, q: float) -> float:
    """``_finite_percentile(np.abs(values[:, :, channel].astype(np.float32)), q)``, ``values`` (step, frame, channel,
    y, x); float16 values (a trace's) are not copied: the finite float16 magnitudes are 31,744 bit patterns
    (0x0000 to 0x7BFF, in the order of their values; 0x7C00 is inf, above it NaN), so a count of each, made a
    step at a time, is the values sorted."""
    if values.dtype != np.float16:
        return _finite_percentile(np.abs(values[:, :, channel].astype(np.float32)), q)
    counts = np.zeros(0x8000, np.int64)
    for step in values:
        counts += np.bincount((step[:, channel].view(np.uint16) & 0x7FFF).ravel(), minlength=0x8000)
    below = np.cumsum(counts[:0x7C00])  # below[i]: how many finite magnitudes are <= the one of bit pattern i
    if below[-1] == 0:
        return 0.0
    ranked = lambda ranks: (np.searchsorted(below, ranks, side="right")  # noqa: E731
                            .astype(np.uint16).view(np.float16).astype(np.float32))
    return _percentile_from_ranks(int(below[-1]), q, ranked)


def to_rgb(trace: xr.Dataset, var: str = "latent", rgb_map: np.ndarray | None = None) -> xr.DataArray:
    """``trace[var]`` (``"latent"`` = x_t, or ``"x0"``) as uint8 RGB ``(step, frame, y, x, rgb)``, through
    ``rgb_map`` (default: :func:`fit_rgb_map` of the trace)."""
    trace = as_trace(trace, "trace")
    if var not in ("latent", "x0"):
        raise ValueError(f"var must be 'latent' or 'x0', got {var!r}")
    rgb_map = fit_rgb_map(trace) if rgb_map is None else np.asarray(rgb_map, np.float32)
    if rgb_map.shape != (trace.sizes["channel"] + 1, 3):
        raise ValueError(f"rgb_map must have shape ({trace.sizes['channel'] + 1}, 3), got {rgb_map.shape}")
    rgb = _apply_map(trace[var].values, rgb_map)
    return xr.DataArray(rgb, dims=("step", "frame", "y", "x", "rgb"),
                        coords={k: trace[k] for k in ("step", "frame") if k in trace.coords},
                        attrs={"long_name": f"RGB view of {var}"})


@functools.lru_cache(maxsize=4)
def _lut(name: str) -> np.ndarray:
    """A matplotlib colormap as a (256, 3) uint8 table."""
    import matplotlib

    return (matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)


def _colorize(values: np.ndarray, lo: float, hi: float, cmap: str) -> np.ndarray:
    """Float array -> uint8 RGB (..., 3) through ``cmap`` with ``lo..hi`` mapped to its ends."""
    span = hi - lo if hi > lo else 1.0
    scaled = np.nan_to_num((values - lo) / span * 255, nan=0.0, posinf=255.0, neginf=0.0)  # NaN: the low end
    idx = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return _lut(cmap)[idx]


def _stack(steps: Iterable[np.ndarray], n: int) -> np.ndarray:
    """The arrays ``steps`` yields (``n`` of them, alike) stacked into one, filled as they come."""
    out = None
    for i, step in enumerate(steps):
        if out is None:
            out = np.empty((n, *step.shape), step.dtype)
        out[i] = step
    assert out is not None
    return out


def _channel_args(trace: Any, channel: Any, var: str) -> tuple[xr.Dataset, int]:
    """``trace`` (a Video's or a Dataset, `as_trace`) and ``channel`` checked against its channels."""
    trace = as_trace(trace, "trace")
    if var not in ("x0", "latent"):
        raise ValueError(f"var must be 'x0' or 'latent', got {var!r}")
    return trace, _index("channel", channel, trace.sizes["channel"])


def _check_vmax(vmax: Any) -> float | None:
    return None if vmax is None else check_float("vmax", vmax, 0.0, math.inf, lo_open=True)


def channel_vmax(trace: xr.Dataset, channel: int, var: str = "x0") -> float:
    """The heatmap scale of a channel: the 99.5th percentile of |values| over all steps and frames (finite
    values; 1.0 when that is 0)."""
    trace, channel = _channel_args(trace, channel, var)
    return _abs_percentile(trace[var].values, channel, 99.5) or 1.0


def _channel_heat_steps(values: np.ndarray, channel: int, vmax: float) -> Iterator[np.ndarray]:
    """:func:`channel_heatmap` of ``values`` (step, frame, channel, y, x) a step at a time: uint8 (frame, y, x, 3)."""
    for step in values:
        yield _colorize(step[:, channel].astype(np.float32), -vmax, vmax, "RdBu_r")


def channel_heatmap(trace: xr.Dataset, channel: int, var: str = "x0", *, vmax: float | None = None) -> np.ndarray:
    """Channel ``channel`` of ``trace[var]`` as uint8 RGB (step, frame, y, x, 3): diverging colours
    (``RdBu_r``: blue < 0 < red) on the symmetric scale ``[-vmax, vmax]`` (default :func:`channel_vmax`),
    the same for every step and frame."""
    trace, channel = _channel_args(trace, channel, var)
    vmax = _check_vmax(vmax)
    vmax = channel_vmax(trace, channel, var) if vmax is None else vmax
    return _stack(_channel_heat_steps(trace[var].values, channel, vmax), trace.sizes["step"])


def _square_changes(x0: np.ndarray) -> Iterator[np.ndarray]:
    """Per recorded step after the first: float32 ``(x0[s] - x0[s - 1]) ** 2`` (frame, channel, y, x), one step
    at a time (the array is reused: use it before asking for the next)."""
    if len(x0) < 2:
        return
    previous = x0[0].astype(np.float32)
    for s in range(1, len(x0)):
        current = x0[s].astype(np.float32)
        yield np.square(np.subtract(current, previous, out=previous), out=previous)
        previous = current


def _x0_change(x0: np.ndarray, update: list | None = None) -> np.ndarray:
    """RMS over channels of x0[s] - x0[s - 1]: float (step, frame, y, x), zero at the first step. ``update``, when
    given, gets each step's RMS change over everything appended (step_stats' ``update``, from the same pass)."""
    change = np.zeros((x0.shape[0], x0.shape[1], x0.shape[3], x0.shape[4]), np.float32)
    for s, square in enumerate(_square_changes(x0), start=1):
        change[s] = np.sqrt(np.mean(square, axis=1))
        if update is not None:
            update.append(float(np.sqrt(np.mean(square))))
    return change


def _change_vmax(change: np.ndarray) -> float:
    """:func:`delta_vmax` of a trace whose :func:`_x0_change` is ``change``."""
    return (_finite_percentile(change[1:], 99.5) if len(change) > 1 else 0.0) or 1.0


def delta_vmax(trace: xr.Dataset) -> float:
    """The change heatmap's scale: the 99.5th percentile of the change of x0 between recorded steps (finite
    values; 1.0 when that is 0)."""
    return _change_vmax(_x0_change(as_trace(trace, "trace").x0.values))


def _delta_heat_steps(change: np.ndarray, vmax: float) -> Iterator[np.ndarray]:
    """:func:`delta_heatmap` of the change ``change`` a step at a time: uint8 (frame, y, x, 3)."""
    for step in change:
        yield _colorize(step, 0.0, vmax, "magma")


def delta_heatmap(trace: xr.Dataset, *, vmax: float | None = None) -> np.ndarray:
    """How much x0 changed since the previous recorded step, as uint8 RGB (step, frame, y, x, 3)
    (``magma`` on ``[0, vmax]``, default :func:`delta_vmax`, the same for every step)."""
    trace, vmax = as_trace(trace, "trace"), _check_vmax(vmax)
    change = _x0_change(trace.x0.values)
    vmax = _change_vmax(change) if vmax is None else vmax
    return _stack(_delta_heat_steps(change, vmax), len(change))


def step_stats(trace: xr.Dataset) -> dict[str, list]:
    """Per recorded step: ``step``, ``sigma``, ``timestep``, ``guidance`` (the guidance the step used; None
    in traces recorded before sora_nb kept it), ``latent_std`` (std of x_t), ``x0_std`` and ``update`` (RMS
    change of x0 since the previous recorded step; None at the first)."""
    trace = as_trace(trace, "trace")
    update = [None] + [float(np.sqrt(np.mean(square))) for square in _square_changes(trace.x0.values)]
    return _step_stats(trace, update)


def _step_stats(trace: xr.Dataset, update: list[float | None]) -> dict[str, list]:
    """:func:`step_stats` of ``trace`` with its ``update`` given."""
    coord = lambda k, default: [float(v) for v in (trace[k].values if k in trace.coords else default)]  # noqa: E731
    std = lambda values: [float(step.astype(np.float32).std()) for step in values]  # noqa: E731
    n = trace.sizes["step"]
    return {
        "step": [int(v) for v in (trace.step.values if "step" in trace.coords else range(n))],
        "sigma": coord("sigma", [np.nan] * n),
        "timestep": coord("timestep", [np.nan] * n),
        "guidance": [float(v) for v in trace.guidance.values] if "guidance" in trace.coords else [None] * n,
        "latent_std": std(trace.latent.values),
        "x0_std": std(trace.x0.values),
        "update": update,
    }


def _resize_nearest(stack: np.ndarray, h: int, w: int) -> np.ndarray:
    """(..., y, x, 3) -> (..., h, w, 3) by nearest neighbour (identity when already that size)."""
    if stack.shape[-3:-1] == (h, w):
        return stack
    iy = (np.arange(h) * stack.shape[-3]) // h
    ix = (np.arange(w) * stack.shape[-2]) // w
    return np.ascontiguousarray(stack[..., iy, :, :][..., ix, :])


def _join(chunks: Iterable[np.ndarray], nbytes: int) -> bytes:
    """The bytes of ``chunks`` (arrays, each in C order), back to back: ``nbytes`` of them, written into one buffer
    as the chunks come, so that no stack is held twice (as a stack and its ``tobytes``, or the pieces and their
    join); CPython's BytesIO hands its buffer over without a copy."""
    out = io.BytesIO()
    if nbytes > 1:
        out.seek(nbytes - 1)
        out.write(b"\0")  # the buffer's full size at once, rather than grown as the chunks come
        out.seek(0)
    for chunk in chunks:
        out.write(np.ascontiguousarray(chunk))
    assert out.tell() == nbytes, (out.tell(), nbytes)
    return out.getvalue()


def _label(trace: xr.Dataset, keys: tuple[str, ...]) -> str:
    """A short caption from the trace's attrs, e.g. ``"seed 0 · guidance 5"``; with ``noise_seed`` / ``noise_steps``
    among ``keys``, where the trace's noise came from: ``"redrawn: noise seed 1000, 12 steps"`` (a redrawn clip's
    trace) or ``"not redrawn: noise seed 0"`` (its seed's own noise)."""
    parts = []
    for k in keys:
        v = trace.attrs.get(k, "")
        if k in NOISE_KEYS:
            if k == NOISE_KEYS[0]:  # one part for both
                parts.append(_noise_label(trace))
        elif k == "prompt":
            parts.append(repr(str(v)))
        elif isinstance(v, (float, np.floating)):
            parts.append(f"{k} {float(v):g}")
        else:
            parts.append(f"{k} {v}")
    return " · ".join(parts)


def _noise_label(trace: xr.Dataset) -> str:
    """Where the trace's starting noise came from (see :func:`_label`)."""
    attrs = trace.attrs
    if not any(k in attrs for k in NOISE_KEYS):
        return f"not redrawn: noise seed {attrs.get('seed', '?')}"
    steps = attrs.get("noise_steps")
    return f"redrawn: noise seed {attrs.get('noise_seed', '?')}" + ("" if steps is None else f", {steps} steps")


def _noise_seed(trace: xr.Dataset) -> Any:
    """The seed the trace's starting noise was drawn from: ``noise_seed`` after a redraw, else ``seed``."""
    return trace.attrs.get("noise_seed", trace.attrs.get("seed"))


def _listed(values: list) -> str:
    """``values`` for a message: all of them, or the first few and the last two."""
    shown = [str(v) for v in values]
    return ", ".join(shown if len(shown) <= 10 else shown[:6] + ["...", *shown[-2:]])


def _compare_notes(a: xr.Dataset, b: xr.Dataset, keys: tuple[str, ...]) -> list[str]:
    """What side by side by position hides about ``a`` and ``b`` (captioned by ``keys``): steps, noise levels or
    frames that differ at the same position, and a different starting noise under captions that suggest the
    same seed."""
    notes = []
    sa, sb = (_step_stats_coords(t) for t in (a, b))
    if sa["step"] != sb["step"]:
        notes.append(f"A and B are matched by recorded step index, but their denoising steps differ (A: "
                     f"{_listed(sa['step'])}; B: {_listed(sb['step'])}): the step row shows both")
    elif not np.allclose(sa["sigma"], sb["sigma"], rtol=1e-4, atol=1e-6, equal_nan=True):
        notes.append("A and B are matched by recorded step index, but their noise levels σ differ at the same "
                     "step: the step row shows both")
    fa, fb = (_frame_coords(t) for t in (a, b))
    if fa != fb:
        notes.append(f"A and B are matched by frame index, but their frames differ (A: {_listed(fa)}; B: "
                     f"{_listed(fb)}): the frame row shows both")
    if "seed" not in keys:  # the captions do not tell the seeds apart: say so if the noise is not the same
        na, nb = _noise_seed(a), _noise_seed(b)
        if str(na) != str(nb):
            why = f"noise seed {na} vs {nb}"
        elif (a.latent.shape[1:] == b.latent.shape[1:] and sa["step"][0] == sb["step"][0] == 0 and fa == fb
              and not np.array_equal(a.latent.values[0], b.latent.values[0], equal_nan=True)):
            why = "their x_t at step 0 differ"
        else:
            why = None
        if why is not None:
            notes.append(f"A and B start from different noise ({why}) although both have seed "
                         f"{a.attrs.get('seed', '?')}: they differ by more than "
                         f"{' and '.join(k for k in keys if k not in NOISE_KEYS) or 'their captions'}")
    return notes


def _step_stats_coords(trace: xr.Dataset) -> dict[str, list]:
    """The trace's ``step`` and ``sigma`` per recorded step, as :func:`step_stats` has them."""
    n = trace.sizes["step"]
    return {"step": [int(v) for v in (trace.step.values if "step" in trace.coords else range(n))],
            "sigma": [float(v) for v in (trace.sigma.values if "sigma" in trace.coords else [np.nan] * n)]}


def _frame_coords(trace: xr.Dataset) -> list:
    """The trace's ``frame`` coordinate (its latent frames' numbers; 0, 1, ... when it has none)."""
    n = trace.sizes["frame"]
    if "frame" not in trace.coords:
        return list(range(n))
    return [int(v) if isinstance(v, (numbers.Integral, np.integer)) else str(v) for v in trace.frame.values]


class _Panel:
    """One trace's precomputed views, at the preview's resolution, made in two stages because the panels share
    the change view's scale: the panel (its latent -> RGB map, stats, and the change of x0, a float32
    (step, frame, y, x) kept until the views are made), then :meth:`make_views` on the scale of every panel."""

    def __init__(self, trace: xr.Dataset):
        self.trace = trace
        s, f = trace.sizes["step"], trace.sizes["frame"]
        self.h, self.w = trace.sizes["py"], trace.sizes["px"]
        self.shape = [s, f, self.h, self.w]
        self.rgb_map = fit_rgb_map(trace)
        update: list[float | None] = [None]
        self.change: np.ndarray | None = _x0_change(trace.x0.values, update)  # and step_stats' update, in one pass
        self.stats = _step_stats(trace, update)
        self.views = b""

    @property
    def delta_vmax(self) -> float:
        """:func:`delta_vmax` of the trace (before :meth:`make_views`)."""
        assert self.change is not None
        return _change_vmax(self.change)

    def make_views(self, delta_vmax: float) -> None:
        """``views``: the x0, xt and delta stacks (``delta`` on the scale ``delta_vmax``), back to back, made a step
        at a time."""
        change, latent, h, w = self.change, self.trace.latent.values, self.h, self.w
        assert change is not None
        stacks = {
            "x0": lambda: iter(self.trace.preview.values),
            "xt": lambda: (_resize_nearest(_apply_map(step, self.rgb_map), h, w) for step in latent),
            "delta": lambda: (_resize_nearest(heat, h, w) for heat in _delta_heat_steps(change, float(delta_vmax))),
        }
        self.views = _join(itertools.chain.from_iterable(stacks[v]() for v in STACKED_VIEWS),
                           len(STACKED_VIEWS) * self.shape[0] * self.shape[1] * self.frame_bytes)
        self.change = None

    @property
    def frame_bytes(self) -> int:
        """Bytes of one (H, W, 3) image."""
        return self.h * self.w * 3

    def heat(self, channel: int, vmax: float) -> bytes:
        """The channel heatmap stack on the scale ``vmax``, as bytes (made a step at a time)."""
        steps = _channel_heat_steps(self.trace.x0.values, channel, float(vmax))
        return _join((_resize_nearest(heat, self.h, self.w) for heat in steps),
                     self.shape[0] * self.shape[1] * self.frame_bytes)

    def meta(self, label: str) -> dict[str, Any]:
        """Small JSON facts the front end needs."""
        time = [float(t) for t in self.trace.time.values] if "time" in self.trace.coords else None
        # NaN is not JSON (the kernel's message would carry the text "nan"): a value not there is null ("–")
        stats = {k: [v if v is None or isinstance(v, int) or math.isfinite(v) else None for v in values]
                 for k, values in self.stats.items()}
        steps, update = stats["step"], stats["update"]
        # the steps each recorded step's update spans, and the update per step (plotted: a last interval of 1 step
        # after intervals of 4 looked like a drop); both the plain update when every step is recorded
        gaps = [None] + [b - a for a, b in zip(steps, steps[1:])]
        per_step = [None if u is None or g is None else (u / g if g > 1 else u) for u, g in zip(update, gaps)]
        return {"shape": self.shape, "channels": int(self.trace.sizes["channel"]), "label": label,
                "stats": stats, "views": list(STACKED_VIEWS), "time": time, "frames": _frame_coords(self.trace),
                "gaps": gaps, "update_per_step": per_step}


# -- the widget --------------------------------------------------------------------------------------
def _index(name: str, value: Any, n: int) -> int:
    """``value`` if an integer with ``0 <= value < n``; TypeError/ValueError naming the range otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer index in [0, {n - 1}], got {type(value).__name__} {value!r}")
    if not 0 <= value < n:
        raise ValueError(f"{name} must be an index in [0, {n - 1}], got {value}")
    return int(value)


class Inspector(Player, anywidget.AnyWidget):
    """The inspector widget (make one with :func:`inspect`). ``step`` is an index into the trace's
    ``step`` dimension (``trace.step[step]`` is the denoising step), ``frame`` a latent frame."""

    _esm = read_module("inspector.js")
    a_views = traitlets.Bytes(b"").tag(sync=True)   # x0, xt, delta stacks of trace A, uint8, back to back
    a_heat = traitlets.Bytes(b"").tag(sync=True)    # channel heatmap stack of trace A
    b_views = traitlets.Bytes(b"").tag(sync=True)   # the same for the comparison trace (empty if none)
    b_heat = traitlets.Bytes(b"").tag(sync=True)
    meta = traitlets.Dict().tag(sync=True)          # {"a": {...}, "b": {...} or None}: shapes, labels, stats
    step = traitlets.Int(0).tag(sync=True)
    frame = traitlets.Int(0).tag(sync=True)
    view = traitlets.Enum(VIEWS, default_value="x0").tag(sync=True)
    channel = traitlets.Int(0).tag(sync=True)
    heat_channel = traitlets.Int(0).tag(sync=True)  # the channel the heat stacks show
    scale = traitlets.Int(16).tag(sync=True)        # CSS pixels per image pixel in the main view
    fps = traitlets.Float(4.0).tag(sync=True)       # play speed, steps or frames per second

    def __init__(self, trace: Any, compare: Any = None, *, view: str = "x0", channel: int = 0,
                 scale: int | None = None, fps: float = 4.0, max_payload_mb: float = 64.0, **kwargs: Any):
        scale = None if scale is None else check_scale(scale)
        fps = check_fps(fps)  # these before the views are built
        max_payload_mb = check_float("max_payload_mb", max_payload_mb, 0.0, 1e6, lo_open=True, unit="MB")
        a = as_trace(trace, "video_or_trace")
        b = as_trace(compare, "compare") if compare is not None else None
        if view not in VIEWS:
            raise ValueError(f"view must be one of {', '.join(map(repr, VIEWS))}, got {view!r}")
        if b is not None:
            for dim in ("step", "frame"):
                if a.sizes[dim] != b.sizes[dim]:
                    raise ValueError(f"compare must have as many recorded {dim}s as the first trace: "
                                     f"{b.sizes[dim]} vs {a.sizes[dim]}")
        traces = [a] if b is None else [a, b]
        channel = _index("channel", channel, min(t.sizes["channel"] for t in traces))  # ValueError/TypeError here
        self._check_payload(traces, max_payload_mb)
        self._panels = {key: _Panel(t) for key, t in zip("ab", traces)}
        scale_of_change = max(p.delta_vmax for p in self._panels.values())  # one colour scale, so panels compare
        for panel in self._panels.values():
            panel.make_views(scale_of_change)
        if scale is None:
            scale = min(MAX_SCALE, max(1, round(256 / max(a.sizes["py"], a.sizes["px"]))))
        super().__init__(view=view, scale=scale, fps=fps, **kwargs)
        keys = self._label_keys(a, b)
        notes = _compare_notes(a, b, keys) if b is not None else []
        for note in notes:
            warnings.warn(note, UserWarning, stacklevel=3)
        with self.hold_sync():
            self.a_views = self._panels["a"].views
            self.b_views = self._panels["b"].views if b is not None else b""
            self.meta = {"a": self._panels["a"].meta(_label(a, keys)),
                         "b": self._panels["b"].meta(_label(b, keys)) if b is not None else None,
                         "notes": notes}
            self._send_heat(channel)
            self.channel = channel

    # -- construction helpers --------------------------------------------------------------------
    @staticmethod
    def _check_payload(traces: list[xr.Dataset], max_mb: float) -> None:
        """Refuse (ValueError) to send more than ``max_mb`` to the browser."""
        per_step = sum(4 * t.sizes["frame"] * t.sizes["py"] * t.sizes["px"] * 3 for t in traces)
        n = traces[0].sizes["step"]
        total = per_step * n
        if total > max_mb * MB:
            # every k-th step and the last (slice(None, None, k) dropped the last, the clean result), k the
            # smallest that fits (2 when even two steps do not: then the limit must rise)
            fits = int(max_mb * MB // per_step)
            if fits >= 2 and n > 2:
                k = max(2, -(-(n - 1) // (fits - 1)))
                keep = f"[*range(0, {n - 1}, {k}), {n - 1}]" if k < n - 1 else f"[0, {n - 1}]"
                advice = (f"pass fewer steps, e.g. trace.isel(step={keep}) (one recorded step in {k} and the last"
                          f"{', of both traces' if len(traces) > 1 else ''})")
            else:
                advice = "pass fewer frames or a smaller preview"
            raise ValueError(f"the inspector would send {total / MB:.3g} MB to the browser (limit max_payload_mb="
                             f"{max_mb:g}): {advice}, or raise max_payload_mb")

    @staticmethod
    def _label_keys(a: xr.Dataset, b: xr.Dataset | None) -> tuple[str, ...]:
        """The attrs that tell the two traces apart (default: seed and guidance), and ``noise_seed`` /
        ``noise_steps`` when either trace is a redrawn clip's (its noise is not its seed's: the caption says
        where it came from)."""
        traces = [a] if b is None else [a, b]
        redrawn = any(k in t.attrs for t in traces for k in NOISE_KEYS)
        if b is None:
            keys: tuple[str, ...] = ("seed", "guidance")
        else:
            keys = tuple(k for k in LABEL_KEYS if k not in NOISE_KEYS and str(a.attrs.get(k)) != str(b.attrs.get(k)))
            keys = keys or ("seed", "guidance")
        return keys + (NOISE_KEYS if redrawn else ())

    # -- state ---------------------------------------------------------------------------------------
    @property
    def traces(self) -> dict[str, xr.Dataset]:
        """The traces shown, by panel (``"a"`` and, when comparing, ``"b"``)."""
        return {k: p.trace for k, p in self._panels.items()}

    @property
    def num_steps(self) -> int:
        """Recorded steps (the step slider's length)."""
        return self._panels["a"].shape[0]

    @property
    def num_frames(self) -> int:
        """Latent frames (the frame slider's length)."""
        return self._panels["a"].shape[1]

    @property
    def _num_channels(self) -> int:
        """Channels every panel has (the channel view's range)."""
        return min(p.trace.sizes["channel"] for p in self._panels.values())

    @traitlets.validate("step")
    def _valid_step(self, proposal: dict) -> int:
        return self._in_range("step", proposal["value"], self.num_steps)

    @traitlets.validate("frame")
    def _valid_frame(self, proposal: dict) -> int:
        return self._in_range("frame", proposal["value"], self.num_frames)

    @traitlets.validate("channel")
    def _valid_channel(self, proposal: dict) -> int:
        return self._in_range("channel", proposal["value"], self._num_channels)

    @staticmethod
    def _in_range(name: str, value: int, n: int) -> int:
        """``value`` if an integer with ``0 <= value < n``; TraitError naming the range otherwise (a trait set
        after construction)."""
        return as_trait(lambda v: _index(name, v, n), value)

    @traitlets.validate("heat_channel")
    def _check_heat_channel(self, proposal: dict) -> int:
        """Set only with the heat stacks it names (`_send_heat`): set from outside, the label said one channel while
        the stacks showed another, and a later ``channel`` change to it sent nothing."""
        if proposal["value"] != getattr(self, "_sent_heat", proposal["value"]):
            raise traitlets.TraitError(f"heat_channel is the channel of the heat stacks sent "
                                       f"({self._sent_heat}); set channel= to show another")
        return proposal["value"]

    @traitlets.observe("channel")
    def _on_channel(self, change: dict) -> None:
        if hasattr(self, "_panels") and change["new"] != self.heat_channel:
            self._send_heat(change["new"])

    def _send_heat(self, channel: int) -> None:
        """Compute and send the heatmap stacks of ``channel``."""
        vmax = max(channel_vmax(p.trace, channel) for p in self._panels.values())  # shared by the panels
        with self.hold_sync():
            self.a_heat = self._panels["a"].heat(channel, vmax)
            self.b_heat = self._panels["b"].heat(channel, vmax) if "b" in self._panels else b""
            self._sent_heat = channel
            self.heat_channel = channel

    # -- what is shown -------------------------------------------------------------------------------
    def image(self, panel: str = "a", *, view: str | None = None, step: int | None = None,
              frame: int | None = None) -> np.ndarray:
        """The uint8 (H, W, 3) image the browser draws in ``panel`` (defaults: the current state)."""
        if panel not in self._panels:
            raise ValueError(f"panel must be one of {', '.join(map(repr, self._panels))}, got {panel!r}")
        p = self._panels[panel]
        view = self.view if view is None else view
        step = self.step if step is None else _index("step", step, self.num_steps)
        frame = self.frame if frame is None else _index("frame", frame, self.num_frames)
        s, f, h, w = p.shape
        if view == "channel":
            buf, base = (self.a_heat if panel == "a" else self.b_heat), 0
        elif view in STACKED_VIEWS:
            buf, base = p.views, STACKED_VIEWS.index(view) * s * f * p.frame_bytes
        else:
            raise ValueError(f"view must be one of {', '.join(map(repr, VIEWS))}, got {view!r}")
        start = base + (step * f + frame) * p.frame_bytes
        return np.frombuffer(buf, np.uint8, p.frame_bytes, start).reshape(h, w, 3)

    def clip(self, panel: str = "a") -> np.ndarray:
        """Every frame at the current step and view, (F, H, W, 3): the filmstrip row."""
        return np.stack([self.image(panel, frame=i) for i in range(self.num_frames)])

    def across_steps(self, panel: str = "a") -> np.ndarray:
        """The current frame at every recorded step, (S, H, W, 3): the steps row."""
        return np.stack([self.image(panel, step=i) for i in range(self.num_steps)])


def inspect(video_or_trace: Any, compare: Any = None, *, view: str = "x0", channel: int = 0,
            scale: int | None = None, fps: float = 4.0, max_payload_mb: float = 64.0) -> Inspector:
    """The latent inspector widget for a :class:`~sora_nb.Video` (generated with ``trace=True``) or a trace.

    Args:
      video_or_trace: a Video or its ``trace`` (also one read back with :func:`sora_nb.open_trace`).
      compare: a second Video or trace with as many recorded steps and frames, shown side by side
        (e.g. guidance 1 vs 7, or two seeds); the sliders move both, matching steps and frames by position
        (where their step numbers, noise levels, frames or starting noise differ, the widget says so and a
        UserWarning is issued).
      view: ``"x0"`` (RGB preview of the clean prediction), ``"xt"`` (the noisy latent in RGB),
        ``"channel"`` (one latent channel as a heatmap) or ``"delta"`` (change since the previous recorded step).
      channel: the latent channel of the ``"channel"`` view.
      scale: CSS pixels per image pixel in the main view (default: about 256 pixels wide); a compared trace's
        preview of another size gets its own scale, so it comes out about as large.
      fps: play speed of the play buttons (steps or frames per second).
      max_payload_mb: refuse (ValueError) to send more than this to the browser.
    """
    return Inspector(video_or_trace, compare, view=view, channel=channel, scale=scale, fps=fps,
                     max_payload_mb=max_payload_mb)
