"""Live controls: ipywidgets that re-generate the clip as you move them.

::

    ui = sora_nb.controls(prompt="a red circle moving right", steps=20)
    ui                      # at the end of a cell: the panel
    ui.guidance.value = 7   # from code, like moving the slider: a new clip starts at once
    ui.wait()               # block until idle (scripts, tests, notebooks run headless)
    ui.video                # the latest finished sora_nb.Video; ui.video.params match the controls
    ui.set(seed=3, guidance=2.5)   # several values, one generation
    ui.history[0]           # every finished clip; ui.restore(0) brings its parameters and video back

What happens on a change
------------------------
Every control (``ui.prompt``, ``ui.negative_prompt``, ``ui.seed``, ``ui.duration``, ``ui.guidance``,
``ui.eta``, ``ui.steps``, ``ui.size``) is an ordinary ipywidget whose ``.value`` can be set from code or in
the browser. A change

1. cancels the run in flight at once (a ``threading.Event``; the sampler stops between two steps
   and skips the decode, see :mod:`sora_nb.sampler`);
2. waits ``debounce`` seconds (0.3) after the last keystroke for the typed fields (prompt, negative
   prompt); sliders, the size menu and the seed box send a value when released or committed, so they
   start at once (a drag is one change, not hundreds, and release-to-preview stays short);
3. validates the values with ``generator.request(...)``, the same check as the API, so the panel
   rejects exactly what ``generate`` rejects, with the same message (shown in ``ui.message``; a slider or
   the size menu set from code refuses such a value at once, as ``traitlets.TraitError`` with that message,
   the value checked as given, never cast (``ui.steps.value = 7.9`` is refused, not made 7), and a valid
   value outside a slider's range widens the range instead of being clamped; the seed box refuses at once
   a value that is not an integer, and shows an integer out of range with the run's message);
4. hands the request to one background worker thread, so the kernel stays free: other cells run
   while the clip is made.

While it runs, an observer of the sampling loop pushes the x0 preview of *every frame* (the
backend's cheap latent -> RGB view, as the trace records it) to ``ui.preview`` at most every
``preview_interval`` seconds (first and last step always), and moves the progress bar with the step
count and an ETA. The finished clip is encoded once to mp4 (with its params in the metadata, like
:meth:`Video.save`) and shown by ``ui.player`` (an ``ipywidgets.Video``: binary bytes, a new
``blob:`` URL in the ``<video>`` element per clip), added to ``ui.history`` and its thumbnail strip.

A generation counter guards every update: a run whose request is no longer the newest (its controls
changed, Stop was pressed, or an older clip was restored) never replaces the newer state, not even
when it finished its decode in the meantime.

The buttons: the dice (a shuffle icon) draws a new seed and puts it in the seed box *before* the run
(the seed shown is the seed used); Stop cancels; Run generates again; Inspect opens :func:`sora_nb.inspect` on the clip;
Save writes ``<save_dir>/<prompt-slug>_seed<seed>.mp4`` (``_2``, ``_3``, ... rather than replace an earlier save). A bad value, or a backend that raises,
shows a message and leaves the panel working: the next change runs again. A failed decode keeps its latents in
``ui.decode_error`` (a :class:`sora_nb.sampler.DecodeError`); a clip the player cannot show (ffmpeg failed) still
joins the history and ``ui.video``.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import html
import logging
import numbers
import os
import re
import secrets
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Iterator

import anywidget
import ipywidgets as W
import numpy as np
import traitlets

from . import request as _request
from ._checks import check_bool, check_float, check_int, check_path
from .api import Generator, load
from .frontend import read_module
from .request import Request, _check_image
from .sampler import Cancelled, DecodeError
from .video import Video

logger = logging.getLogger(__name__)

__all__ = ["Controls", "controls", "ClipPreview", "HistoryStrip", "slug"]

CONTROL_NAMES = ("prompt", "negative_prompt", "seed", "duration", "guidance", "eta", "steps", "size")
TYPED = ("prompt", "negative_prompt")     # debounced: they change on every keystroke
MAX_SLIDER_STEPS = 50
MAX_HISTORY = 1000                         # clips the history keeps at most (each holds its frames and trace)
SEED_DRAW = 2**31                          # the dice draws in [0, 2**31), like Request for seed=None
PREVIEW_WIDTH = 480                        # CSS px the whole-clip preview aims at
PLAYER_WIDTH = 256                         # CSS px of the player


# -- checked control widgets ----------------------------------------------------------------------------
class _Unconverted(traitlets.Any):
    """A control's ``value`` as given (no ``CInt``/``CFloat`` cast, None refused): the widget's validator checks it."""

    allow_none = False   # traitlets.Any lets None past every validator


class _Checked:
    """A slider whose value set from code is checked as ``generate`` checks that keyword (``check``), and widens
    the slider's range when it is valid but outside it; ipywidgets' own sliders clamp silently, so
    ``ui.steps.value = 200`` made a 50-step clip and ``ui.guidance.value = 500`` a guidance-50 one. A value
    ``generate`` refuses raises ``traitlets.TraitError`` with its message and leaves the slider as it was.

    The subclasses declare ``value`` as :class:`_Unconverted` (a ``traitlets.Any``): ipywidgets' ``CInt`` and
    ``CFloat`` cast before any validator runs, so ``7.9`` reached the check as ``7``, ``"12"`` as ``12`` and
    ``True`` as ``1.0``, all of them values ``generate`` refuses. The check sees the value as given and stores the
    number it returns."""

    def __init__(self, *, check: Any, **kwargs: Any):
        self._check = check
        super().__init__(**kwargs)

    @traitlets.validate("value")
    def _validate_value(self, proposal: Any) -> Any:
        try:
            value = self._check(proposal["value"])
        except (TypeError, ValueError) as err:
            raise traitlets.TraitError(str(err)) from None
        if value > self.max:
            self.max = value
        if value < self.min:
            self.min = value
        return value


class CheckedFloatSlider(_Checked, W.FloatSlider):
    """A FloatSlider that checks a value set from code instead of clamping it (see :class:`_Checked`). Its readout
    shows ``decimals`` places, more when the value needs them (see :func:`readout_format`)."""

    value = _Unconverted(0.0, help="Float value (checked, not cast)").tag(sync=True)

    def __init__(self, *, decimals: int, **kwargs: Any):
        self._decimals = decimals
        super().__init__(**kwargs)
        self._fit_readout()
        self.observe(self._fit_readout, names="value")

    def _fit_readout(self, _change: Any = None) -> None:
        self.readout_format = readout_format(self.value, self._decimals)


def readout_format(value: float, decimals: int) -> str:
    """The d3-format of a float slider's readout for ``value``: ``decimals`` places (the step's), more when the value
    needs them to read as it is (a fixed ".1f" showed eta 0.05 as 0.1 and guidance 7.25 as 7.3), up to 6; a value
    that needs more shows 6 significant digits (``.6``: d3's "g" with trailing zeros trimmed, as Python's ``:g``)."""
    for places in range(decimals, 7):
        if float(f"{value:.{places}f}") == value:
            return f".{places}f"
    return ".6"


class CheckedIntSlider(_Checked, W.IntSlider):
    """An IntSlider that checks a value set from code instead of clamping it (see :class:`_Checked`)."""

    value = _Unconverted(0, help="Int value (checked, not cast)").tag(sync=True)


class SeedBox(W.IntText):
    """The seed box: an integer, as ``generate`` takes it. ``IntText``'s ``CInt`` cast ``2.9`` to ``2`` and ``"42"``
    to ``42``, so the clip's seed was not the value set; a value that is not an integer (a bool, a float, a string)
    is refused at once with ``generate``'s message. An integer outside the seeds ``generate`` takes is kept and
    shown, and the run says why it does not start (as for a seed typed in the browser)."""

    value = _Unconverted(0, help="Int value (checked, not cast)").tag(sync=True)

    @traitlets.validate("value")
    def _validate_value(self, proposal: Any) -> Any:
        value = proposal["value"]
        try:
            return check_int("seed", value, 0, _request.MAX_SEED)
        except TypeError as err:
            raise traitlets.TraitError(str(err)) from None
        except ValueError:  # an integer out of range: the run path shows generate's message
            return int(value)


class SizeMenu(W.Dropdown):
    """The size menu: ``(width, height)`` pairs. A pair not in the menu set from code is refused by name (use
    ``ui.set(width=..., height=...)``, which adds any size the model accepts); ipywidgets' own message for it was
    a garbled string-formatting error."""

    @traitlets.validate("value")
    def _validate_value(self, proposal: Any) -> Any:
        """The menu's own entry for ``value``: a pair equal to it but of other types (``(32.0, 32.0)``) was kept
        as given, and every later run failed with "width must be an integer"."""
        value = proposal["value"]
        if value is None:
            return None
        listed = ", ".join(f"{w}x{h}" for w, h in self._options_values)
        if not (isinstance(value, (tuple, list)) and len(value) == 2
                and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)):
            raise traitlets.TraitError(f"size must be a (width, height) pair of integers, one of the menu's "
                                       f"({listed}); got {type(value).__name__} {value!r}")
        pair = (int(value[0]), int(value[1]))
        for entry in self._options_values:
            if entry == pair:
                return entry
        raise traitlets.TraitError(f"size {pair!r} is not in the menu ({listed}); ui.set(width=..., "
                                   "height=...) adds any size the model accepts")


def size_label(size: tuple[int, int]) -> str:
    return f"{size[0]}×{size[1]}"


# -- browser-side widgets ------------------------------------------------------------------------------
class ClipPreview(anywidget.AnyWidget):
    """The x0 preview of every frame of the clip at the current step (``widgets/controls_preview.js``)."""

    _esm = read_module("controls_preview.js")
    kind = traitlets.Unicode("grid").tag(sync=True)
    frames = traitlets.Bytes(b"").tag(sync=True)                                      # F*H*W*3 uint8
    shape = traitlets.List(traitlets.Int(), default_value=[0, 0, 0]).tag(sync=True)   # [F, H, W]
    scale = traitlets.Int(6).tag(sync=True)
    label = traitlets.Unicode("").tag(sync=True)
    run = traitlets.Int(0).tag(sync=True)     # generation number the frames belong to
    step = traitlets.Int(0).tag(sync=True)    # 1-based step shown (0: nothing yet)

    def show(self, rgb: np.ndarray, *, run: int, step: int, label: str) -> None:
        """Send uint8 ``(F, H, W, 3)`` frames in one binary message."""
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        f, h, w = rgb.shape[:3]
        with self.hold_sync():
            self.frames = rgb.tobytes()
            self.shape = [int(f), int(h), int(w)]
            self.scale = max(1, min(8, PREVIEW_WIDTH // max(1, f * w)))
            self.run, self.step, self.label = int(run), int(step), label

    def clear(self, *, run: int, label: str) -> None:
        """Show no frames (as before the first run), with ``label``."""
        with self.hold_sync():
            self.frames, self.shape = b"", [0, 0, 0]
            self.run, self.step, self.label = int(run), 0, label

    def image(self) -> np.ndarray:
        """The frames shown, ``(F, H, W, 3)`` (what the browser draws)."""
        f, h, w = self.shape
        return np.frombuffer(self.frames, np.uint8).reshape(f, h, w, 3)


class HistoryStrip(anywidget.AnyWidget):
    """Thumbnails of past generations; a click in the browser calls ``on_select(index)``."""

    _esm = read_module("controls_preview.js")
    kind = traitlets.Unicode("strip").tag(sync=True)
    thumbs = traitlets.Bytes(b"").tag(sync=True)
    items = traitlets.List(traitlets.Dict()).tag(sync=True)    # [{h, w, label, title}]
    scale = traitlets.Int(2).tag(sync=True)
    selected = traitlets.Int(-1).tag(sync=True)

    def __init__(self, on_select: Any = None, **kwargs: Any):
        super().__init__(**kwargs)
        self._on_select = on_select
        self._ids: list[int] = []
        self.on_msg(self._on_custom_msg)

    def _on_custom_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not (isinstance(content, dict) and content.get("event") == "select" and self._on_select is not None):
            return
        # the click names its clip's id: a clip that finished meanwhile shifted every index (a full history
        # drops its oldest), and an id no longer in the strip is a clip that left it
        if "id" not in content:  # a message without one (an older front end): its index as sent
            self._on_select(int(content["index"]))
        elif content["id"] in self._ids:
            self._on_select(self._ids.index(content["id"]))

    def set_items(self, thumbs: list[np.ndarray], labels: list[str], titles: list[str], selected: int,
                  ids: list[int] | None = None) -> None:
        """Send every thumbnail (uint8 ``(h, w, 3)`` each) at once; ``ids`` name the clips (default: their
        positions) for the clicks to come back with."""
        self._ids = list(range(len(thumbs))) if ids is None else [int(i) for i in ids]
        with self.hold_sync():
            self.thumbs = b"".join(np.ascontiguousarray(t, dtype=np.uint8).tobytes() for t in thumbs)
            self.items = [{"h": int(t.shape[0]), "w": int(t.shape[1]), "label": lab, "title": tit, "id": i}
                          for t, lab, tit, i in zip(thumbs, labels, titles, self._ids)]
            self.selected = selected


# -- state -------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Job:
    """One requested generation."""

    generation: int
    request: Request
    cancel: threading.Event
    t_change: float                 # perf_counter of the change that asked for it
    t_submit: float
    reason: str = ""                # why it was cancelled: "stop" or "superseded"
    steps_done: int = 0
    t_last_step: float | None = None
    t_first_preview: float | None = None
    t_done: float | None = None


@dataclasses.dataclass
class _Entry:
    """A finished generation as the history keeps it."""

    video: Video
    mp4: bytes
    preview: np.ndarray             # (F, h, w, 3) x0 preview at the last step
    thumb: np.ndarray               # (h, w, 3)
    id: int = 0                     # the panel's count of finished clips when it joined: its name in the strip


class _RunObserver:
    """Sampler observer of one job: progressive preview, progress bar, ETA (throttled)."""

    def __init__(self, controls: "Controls", job: _Job):
        self.controls, self.job = controls, job
        self.t0 = time.perf_counter()
        self.last_push = -1.0
        self.num_steps = job.request.steps
        self.draw = -1  # 0: the first draw; 1, 2, ...: layout redraws (Request.retries), each a run of its own

    def on_start(self, info: Any) -> None:
        self.t0 = time.perf_counter()
        self.num_steps = info.request.steps
        self.draw += 1

    def on_step(self, event: Any) -> None:
        now = time.perf_counter()
        k, n = event.step + 1, event.num_steps
        self.job.steps_done = k
        self.job.t_last_step = now
        if k not in (1, n) and now - self.last_push < self.controls.preview_interval:
            return
        self.last_push = now
        rgb = np.asarray(self.controls.generator.backend.preview(event.x0.detach().cpu()))
        eta = (now - self.t0) / k * (n - k) + self.controls._decode_estimate
        self.controls._show_step(self.job, rgb, k, n, now - self.t0, eta, self.draw)


def slug(text: str, max_len: int = 40) -> str:
    """A file-name-safe version of ``text``: lowercase words joined by ``-`` (``"clip"`` if empty)."""
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:max_len].strip("-")
    return s or "clip"


class Controls:
    """The live panel: widgets as attributes, a worker thread, the latest ``video`` and the ``history``.

    Make one with :func:`controls`. Display it by putting it last in a cell (``ui.root`` is the
    ``VBox``). See the module docstring for what a change does.
    """

    def __init__(self, generator: Any = None, *, debounce: float = 0.3, preview_interval: float = 0.05,
                 save_dir: str | Path = ".", history_size: int = 32, history_mb: float = 2048.0,
                 autostart: bool = True, trace: bool = True, image: Any = None, **initial: Any):
        self.debounce = check_float("debounce", debounce, 0.0, 60.0, unit="seconds")
        self.preview_interval = check_float("preview_interval", preview_interval, 0.0, 60.0, unit="seconds")
        self.history_size = check_int("history_size", history_size, 1, MAX_HISTORY)
        self.history_mb = check_float("history_mb", history_mb, 0.0, 1e7, lo_open=True, unit="MB")
        if not isinstance(save_dir, (str, os.PathLike)):
            raise TypeError(f"save_dir must be a folder path (str or os.PathLike), got {type(save_dir).__name__}")
        self.save_dir = Path(save_dir).expanduser()
        self.trace = check_bool("trace", trace)
        check_bool("autostart", autostart)
        self.generator: Generator = load() if generator is None else load(generator)
        # an image-to-video model's first frame: fixed for the panel's runs (checked with the first values)
        self.image: Any = None if image is None else _check_image(self.generator.limits, image)

        self.video: Video | None = None          # the latest finished clip shown
        self._entries: list[_Entry] = []
        self.timings: list[dict[str, float]] = []  # per finished run: seconds from the change, its steps and draws
        self.stats = {"started": 0, "finished": 0, "cancelled": 0, "failed": 0, "stale": 0, "invalid": 0,
                      "traces_dropped": 0}
        self.error: str | None = None            # the message shown for the last failure, else None
        self.decode_error: DecodeError | None = None  # the last run whose decode failed: its latents, num_frames
        self.inspector: Any = None
        self._decode_estimate = 0.0

        self._cond = threading.Condition()       # scheduling state below
        self._apply = threading.RLock()          # serialises what is shown (results, previews, restore)
        self._generation = 0
        self._pending: _Job | None = None
        self._current: _Job | None = None
        self._timer: threading.Timer | None = None
        self._submitting = 0                     # changes between their timer and the queue
        self._epoch = 0                          # every change, Stop and restore: an older timer or submit is dropped
        self._t_change = 0.0
        self._quiet = 0
        self._closed = False
        self._worker: threading.Thread | None = None
        _LIVE.add(self)

        values = self._initial_values(initial)
        self._build_widgets(values)
        if autostart:
            self._submit(time.perf_counter())

    # -- construction ----------------------------------------------------------------------------------
    def _initial_values(self, initial: dict[str, Any]) -> dict[str, Any]:
        """Initial control values: the API defaults, overridden by ``initial``, validated like the API."""
        values = self._normalise(initial)
        defaults = self._model_defaults()
        merged = {"prompt": "a red circle moving right", "negative_prompt": "", "seed": 0, "steps": 20,
                  **{k: defaults[k] for k in ("duration", "guidance", "eta", "size")}, **values}
        self.generator.request(merged["prompt"], **self._request_kwargs(merged))  # raises like generate()
        return merged

    def _model_defaults(self) -> dict[str, Any]:
        """The values ``generate`` takes for a keyword given as None (and the panel starts from)."""
        lim = self.generator.limits
        return {"duration": min(2.0, lim.max_duration), "guidance": lim.default_guidance, "eta": lim.default_eta,
                "width": lim.default_size[0], "height": lim.default_size[1], "size": tuple(lim.default_size)}

    def _normalise(self, values: dict[str, Any]) -> dict[str, Any]:
        """Map keyword values onto control names (``width``/``height`` -> ``size``); TypeError if unknown."""
        values = dict(values)
        unknown = set(values) - set(CONTROL_NAMES) - {"width", "height"}
        if unknown:
            raise TypeError(f"unknown control(s): {', '.join(sorted(unknown))}; the controls are "
                            f"{', '.join(CONTROL_NAMES)} (or width and height)")
        for name, default in self._model_defaults().items():  # as generate(duration=None, ...): the model's default
            if name in values and values[name] is None:
                values[name] = default
        if "width" in values or "height" in values:
            w0, h0 = values.get("size", self.size.value if hasattr(self, "size") else self.generator.limits.default_size)
            values["size"] = (values.pop("width", w0), values.pop("height", h0))
        if "seed" in values and values["seed"] is None:  # as generate(seed=None): a fresh seed, shown in the box
            values["seed"] = secrets.randbelow(SEED_DRAW)
        if "size" in values:
            size = values["size"]
            if not (isinstance(size, (tuple, list)) and len(size) == 2):
                raise TypeError(f"size must be a (width, height) pair, got {size!r}")
            values["size"] = tuple(size)
        return values

    def _build_widgets(self, v: dict[str, Any]) -> None:
        lim = self.generator.limits
        wide = W.Layout(width="100%")
        style = {"description_width": "110px"}
        slider = W.Layout(width="360px")
        self.prompt = W.Textarea(value=v["prompt"], description="prompt", rows=2, layout=wide, style=style,
                                 continuous_update=True)
        self.negative_prompt = W.Text(value=v["negative_prompt"], description="negative prompt", layout=wide,
                                      style=style, continuous_update=True)
        self.seed = SeedBox(value=v["seed"], description="seed", style=style, layout=W.Layout(width="260px"))
        self.dice = W.Button(description="", icon="random", tooltip="draw a new seed (shown before the run)",
                             layout=W.Layout(width="44px"))
        fps = float(lim.fps)
        dur_step = max(0.25, 1.0 / fps)
        self.duration = CheckedFloatSlider(check=lambda x: check_float("duration", x, 0.0, lim.max_duration, lo_open=True,
                                                                  unit="seconds"),
                                      value=v["duration"], min=min(dur_step, v["duration"]), max=lim.max_duration,
                                      step=dur_step, description="duration (s)", continuous_update=False,
                                      style=style, decimals=2, layout=slider)
        self.guidance = CheckedFloatSlider(check=lambda x: check_float("guidance", x, 0.0, lim.max_guidance),
                                      value=v["guidance"], min=0.0, max=lim.max_guidance, step=0.5,
                                      description="guidance", continuous_update=False, style=style,
                                      decimals=1, layout=slider)
        self.eta = CheckedFloatSlider(check=lambda x: check_float("eta", x, 0.0, lim.max_eta),  # v["eta"]: checked
                                 value=v["eta"], min=0.0, max=lim.max_eta, step=0.1,
                                 description="eta (noise)", continuous_update=False, style=style,
                                 decimals=1, layout=slider, disabled=lim.max_eta <= 0.0,
                                 tooltip="fresh noise per sampler step: 0 deterministic, 1 re-noise every step")
        self.steps = CheckedIntSlider(check=lambda x: check_int("steps", x, lim.min_steps, lim.max_steps),
                                 value=v["steps"], min=lim.min_steps, max=max(min(lim.max_steps, MAX_SLIDER_STEPS), v["steps"]),
                                 description="steps", continuous_update=False, style=style,
                                 layout=slider)
        sizes = [(int(w), int(h)) for w, h in lim.sizes]
        if tuple(v["size"]) not in sizes:  # a size the model accepts beyond its suggestions (diffusers: any multiple)
            sizes.append(tuple(v["size"]))
        self.size = SizeMenu(options=[(size_label(sz), sz) for sz in sizes], value=tuple(v["size"]),
                             description="size (w×h)", style=style,
                               layout=W.Layout(width="260px"))
        self.run_button = W.Button(description="Run", icon="play", tooltip="generate again")
        self.stop_button = W.Button(description="Stop", icon="stop", tooltip="cancel the run in flight")
        self.inspect_button = W.Button(description="Inspect", icon="search",
                                       tooltip="open the latent inspector on this clip")
        self.save_button = W.Button(description="Save", icon="save", tooltip="write the mp4 with its params")
        self.progress = W.IntProgress(value=0, min=0, max=v["steps"], layout=W.Layout(width="220px"))
        self.progress_label = W.Label("")
        self.message = W.HTML("")
        self.preview = ClipPreview()
        self.player = W.Video(value=b"", format="mp4", autoplay=True, loop=True, controls=True,
                              width=str(PLAYER_WIDTH), layout=W.Layout(display="none"))
        self.caption = W.HTML("")
        self.history_strip = HistoryStrip(on_select=self.restore)
        self.inspector_box = W.VBox([])
        for name, widget in [*((n, getattr(self, n)) for n in CONTROL_NAMES), ("player", self.player),
                             ("preview", self.preview), ("history", self.history_strip),
                             ("message", self.message), ("caption", self.caption), ("progress", self.progress),
                             ("progress-label", self.progress_label), ("dice", self.dice),
                             ("run", self.run_button), ("stop", self.stop_button),
                             ("inspect", self.inspect_button), ("save", self.save_button)]:
            widget.add_class(f"sora-nb-controls-{name.replace('_', '-')}")
        for name in CONTROL_NAMES:
            getattr(self, name).observe(self._on_change, names="value")
        self.dice.on_click(lambda _b: self.roll())
        self.run_button.on_click(lambda _b: self.run())
        self.stop_button.on_click(lambda _b: self.stop())
        self.inspect_button.on_click(lambda _b: self.inspect())
        self.save_button.on_click(lambda _b: self.save())
        self.root = W.VBox([
            self.prompt, self.negative_prompt,
            W.HBox([self.seed, self.dice, self.size]),
            W.HBox([self.duration, self.guidance, self.eta, self.steps], layout=W.Layout(flex_flow="row wrap")),
            W.HBox([self.run_button, self.stop_button, self.inspect_button, self.save_button, self.progress,
                    self.progress_label], layout=W.Layout(align_items="center", flex_flow="row wrap")),
            self.message,
            W.HBox([W.VBox([W.HTML("<b>x0 preview, every frame</b>"), self.preview]),
                    W.VBox([W.HTML("<b>finished clip</b>"), self.player, self.caption],
                           layout=W.Layout(margin="0 0 0 24px"))],
                   layout=W.Layout(flex_flow="row wrap")),
            W.HTML("<b>history</b> (click to restore)"), self.history_strip,
            self.inspector_box,
        ])
        # the panel closed by code that holds only its root (ui.root.close()) starts nothing more
        self.root.observe(lambda change: change["new"] is None and self._stop_worker(), names="comm")
        self.root.add_class("sora-nb-controls")

    # -- display ---------------------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = self.root._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        if isinstance(data, dict):
            data["text/plain"] = repr(self)
        return bundle

    def __repr__(self) -> str:
        state = "running" if self.busy else "idle"
        return (f"Controls(model={self.generator.name!r}, prompt={self.prompt.value!r}, seed={self.seed.value}, "
                f"guidance={self.guidance.value:g}, steps={self.steps.value}, {state}, "
                f"{len(self._entries)} in history)")

    # -- values ----------------------------------------------------------------------------------------
    @property
    def values(self) -> dict[str, Any]:
        """The control values now, as ``generate`` keywords (``width``/``height`` instead of ``size``)."""
        v = {n: getattr(self, n).value for n in CONTROL_NAMES}
        return {"prompt": v["prompt"], **self._request_kwargs(v)}

    def _request_kwargs(self, v: dict[str, Any]) -> dict[str, Any]:
        width, height = v["size"]
        image = {} if self.image is None else {"image": self.image}
        return {"negative_prompt": v["negative_prompt"], "seed": v["seed"], "duration": v["duration"],
                "guidance": v["guidance"], "eta": v["eta"], "steps": v["steps"], "width": width, "height": height,
                **image}

    @property
    def history(self) -> list[Video]:
        """Finished clips, oldest first (at most ``history_size``)."""
        return [e.video for e in self._entries]

    @property
    def busy(self) -> bool:
        """Whether a change is waiting for its debounce, queued, or running."""
        with self._cond:
            return self._busy_locked()

    def _busy_locked(self) -> bool:
        return (self._timer is not None or self._submitting > 0 or self._pending is not None
                or self._current is not None)

    @contextlib.contextmanager
    def _silenced(self) -> Iterator[None]:
        """Set control values without starting a generation."""
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1

    def set(self, **values: Any) -> None:
        """Set several controls at once (``prompt``, ``seed``, ``guidance``, ``size`` or ``width``/``height``,
        ...) and start one generation. Values are validated like ``generate``: ValueError/TypeError."""
        values = self._normalise(values)
        before = {n: getattr(self, n).value for n in CONTROL_NAMES}
        merged = before | values
        self.generator.request(merged["prompt"], **self._request_kwargs(merged))
        with self._silenced():
            try:
                for name, value in values.items():
                    self._assign(getattr(self, name), value)
            except Exception:  # all or nothing: the controls show what they showed
                for name in values:
                    self._assign(getattr(self, name), before[name])
                raise
        self._schedule(0.0)

    @staticmethod
    def _assign(widget: W.ValueWidget, value: Any) -> None:
        """``widget.value = value`` for a value already checked: a slider widens its range to it (see
        :class:`_Checked`), the size menu adds a size it lacks (callers hold `_silenced`: adding an option
        moves the menu to its first entry on the way)."""
        if isinstance(widget, SizeMenu):
            value = (int(value[0]), int(value[1]))
            if value not in widget._options_values:
                widget.options = [*widget.options, (size_label(value), value)]
        widget.value = value

    # -- scheduling ------------------------------------------------------------------------------------
    def _on_change(self, change: dict) -> None:
        if self._quiet:
            return
        typed = any(change["owner"] is getattr(self, n) for n in TYPED)
        self._schedule(self.debounce if typed else 0.0)

    def _schedule(self, delay: float) -> None:
        """Cancel what runs, then submit the current values after ``delay`` seconds (restarting the wait)."""
        now = time.perf_counter()
        with self._cond:
            if self._closed:
                return
            self._epoch += 1
            self._t_change = now
            self._cancel_locked("superseded")
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if delay > 0:
                token = self._epoch
                self._timer = threading.Timer(delay, self._fire, args=(token,))
                self._timer.daemon = True
                self._timer.start()
                return
            self._submitting += 1
            epoch = self._epoch
        self._submit_counted(now, epoch)

    def _fire(self, token: int) -> None:
        with self._cond:
            if token != self._epoch or self._timer is None:
                return  # superseded by a later change
            self._timer = None
            self._submitting += 1
            t_change = self._t_change
        self._submit_counted(t_change, token)

    def _submit_counted(self, t_change: float, epoch: int) -> None:
        """:meth:`_submit`, for a caller that counted itself in ``_submitting`` (so ``wait`` waits for it).
        ``epoch``: the change count the caller read under the same lock as it counted itself; read here, after
        that lock was let go, it was a Stop's or a restore's that came in between, and the change won over them."""
        try:
            self._submit(t_change, epoch)
        finally:
            with self._cond:
                self._submitting -= 1
                self._cond.notify_all()

    def _cancel_locked(self, reason: str) -> None:
        """Drop the queued job and cancel the running one (caller holds ``_cond``)."""
        self._pending = None
        if self._current is not None and not self._current.cancel.is_set():
            self._current.reason = reason
            self._current.cancel.set()
        self._cond.notify_all()

    def _submit(self, t_change: float, epoch: int | None = None) -> None:
        """Validate the current values and queue them for the worker (or show why not). ``epoch``: the change
        count when this submit began; if a change, Stop or restore came while it validated, it is dropped (the
        later one has its own submit, or asked for none), so it cannot replace what they show."""
        values = self.values
        prompt = values.pop("prompt")
        try:
            request = self.generator.request(prompt, trace=self.trace, **values)
        except (ValueError, TypeError) as err:
            with self._apply, self._cond:
                if epoch is not None and epoch != self._epoch:
                    return
                self._generation += 1          # whatever still runs is for older values
                self._cancel_locked("superseded")
                self.stats["invalid"] += 1
                # no step count, ETA or half-denoised preview of a run the change dropped
                self._show_shown_clip("not run: a value is not valid")
                self._show_error(str(err))
            return
        with self._cond:
            if self._closed or (epoch is not None and epoch != self._epoch):
                return
            self._generation += 1
            self._cancel_locked("superseded")
            self._pending = _Job(self._generation, request, threading.Event(), t_change, time.perf_counter())
            if self._worker is None:  # (a worker sets None, under this lock, as it ends)
                self._worker = threading.Thread(target=self._work, name="sora_nb.controls", daemon=True)
                self._worker.start()
            self._cond.notify_all()

    def _is_latest(self, job: _Job) -> bool:
        return job.generation == self._generation and not job.cancel.is_set()

    # -- the worker ------------------------------------------------------------------------------------
    def _work(self) -> None:
        """Run queued jobs one at a time; never dies on an error. It ends when nothing is queued (the next change
        starts another), so a panel the user dropped holds no thread and no thread holds it."""
        while True:
            with self._cond:
                if self._pending is None or self._closed:
                    self._worker = None
                    return
                job, self._pending = self._pending, None
                self._current = job
            try:
                self._run(job)
            except Exception as err:  # a bug in showing a result: say so, keep the worker alive
                logger.exception("controls: run %d failed", job.generation)
                self._show_error(f"internal error: {type(err).__name__}: {err}")
            finally:
                with self._cond:
                    self._current = None
                    self._cond.notify_all()

    def _run(self, job: _Job) -> None:
        self.stats["started"] += 1
        with self._apply:
            if self._is_latest(job):
                self.progress.max = job.request.steps
                self.progress.value = 0
                self.progress.bar_style = ""
                self.progress_label.value = f"step 0/{job.request.steps}"
        try:
            video = self.generator._run(job.request, observers=[_RunObserver(self, job)], cancel=job.cancel)
        except Cancelled:
            self.stats["cancelled"] += 1
            if job.reason == "stop":
                with self._apply:
                    if job.generation == self._generation:
                        self.progress_label.value = f"stopped at step {job.steps_done}/{job.request.steps}"
                        self._show_message(f"Stopped at step {job.steps_done} of {job.request.steps}; "
                                           "nothing was decoded.")
            return
        except Exception as err:
            self.stats["failed"] += 1
            logger.warning("controls: generation failed: %s: %s", type(err).__name__, err)
            with self._apply:
                if job.generation == self._generation:
                    # the player and caption keep the clip shown: so does the preview (not the failed run's
                    # half-denoised x0); the red bar stays at the step reached
                    n, k = job.request.steps, job.steps_done
                    label = (f"decode failed after step {k}/{n}" if isinstance(err, DecodeError)
                             else f"failed at step {min(k + 1, n)}/{n}")
                    self._show_shown_clip(label, failed_at=k)
                    if isinstance(err, DecodeError):  # the steps are the expensive part: keep them for the user
                        self.decode_error = err
                        cause = err.__cause__ if err.__cause__ is not None else err
                        self._show_error(f"decoding failed ({type(cause).__name__}: {cause}); every step ran and the "
                                         "latents are kept in the panel's decode_error (.latents, .num_frames: "
                                         "generator.decode decodes them again)")
                    else:
                        self._show_error(f"generation failed: {type(err).__name__}: {err}")
            return
        try:  # the clip is made; a player that cannot show it must not lose it
            mp4, unshown = self._encode(video), None
        except Exception as err:  # noqa: BLE001 - an ffmpeg failure: the clip stays, without a player
            mp4, unshown = b"", f"{type(err).__name__}: {err}"
            logger.warning("controls: the clip could not be encoded for the player: %s", unshown)
        decode = time.perf_counter() - (job.t_last_step or job.t_submit)   # decode + mp4, for the next ETA
        entry = _Entry(video, mp4, self._final_preview(video), self._thumb(video.frames), id=self.stats["finished"])
        with self._apply:
            with self._cond:
                if not self._is_latest(job):
                    self.stats["stale"] += 1
                    if job.reason == "stop" and job.generation == self._generation:  # Stop came during the decode
                        self.progress_label.value = f"stopped after step {job.steps_done}/{job.request.steps}"
                        self._show_message(f"Stopped while the clip was decoded (step {job.steps_done} of "
                                           f"{job.request.steps}); it was dropped.")
                    return
                job.t_done = time.perf_counter()
                self._decode_estimate = decode
                self.video = video
                self._entries.append(entry)
                del self._entries[:-self.history_size]
                self._fit_history()
                self.stats["finished"] += 1
                draws = len((video.params.get("retry") or {}).get("seeds", [0]))   # 1 + the model's redraws
                self.timings.append({
                    "first_preview": (job.t_first_preview or job.t_done) - job.t_change,
                    "finished": job.t_done - job.t_change,
                    "queued": job.t_submit - job.t_change,
                    "steps": job.request.steps,
                    "draws": draws})
            self._show_entry(len(self._entries) - 1)
            self.progress.value = self.progress.max
            self.progress.bar_style = "success"
            self.progress_label.value = f"done in {job.t_done - job.t_submit:.2f} s" + (
                f" · {draws} draws (the model's check redrew it; kept draw {video.params['retry']['picked'] + 1})" if draws > 1 else "")
            self.error = None
            self.message.value = ""
            if unshown is not None:
                self._show_error(f"the clip is made (history, Inspect, video) but the player cannot show it: {unshown}")

    def _show_step(self, job: _Job, rgb: np.ndarray, k: int, n: int, elapsed: float, eta: float, draw: int = 0) -> None:
        """Push a preview and the progress of ``job`` (if it is still the newest)."""
        with self._apply:
            if not self._is_latest(job):
                return
            self.preview.show(rgb, run=job.generation, step=k, label=f"x0 at step {k}/{n}")
            if job.t_first_preview is None:
                job.t_first_preview = time.perf_counter()
            with self.progress.hold_sync():
                self.progress.max = n
                self.progress.value = k
            redraw = f"redraw {draw} (the model's check failed) · " if draw else ""
            self.progress_label.value = f"{redraw}step {k}/{n} · {elapsed:.2f} s · ETA {eta:.2f} s"

    def _encode(self, video: Video) -> bytes:
        """The clip as mp4 bytes, params in the metadata (what :meth:`Video.save` writes)."""
        with tempfile.TemporaryDirectory(prefix="sora-nb-controls-") as folder:
            path = video.save(Path(folder) / "clip.mp4")
            return path.read_bytes()

    @staticmethod
    def _entry_bytes(entry: _Entry) -> int:
        v = entry.video
        held = [v.frames.nbytes, len(entry.mp4), entry.preview.nbytes, entry.thumb.nbytes]
        held += [v.latents.element_size() * v.latents.nelement() if v.latents is not None else 0,
                 int(v.trace.nbytes) if v.trace is not None else 0]
        return sum(held)

    def _fit_history(self) -> None:
        """Keep the history within ``history_mb``: the oldest clips' traces go first (their frames, mp4 and
        thumbnail stay: Inspect says there is no trace), then the oldest clips; the newest clip always stays.
        A pipeline's trace can be tens of MB, and 32 of them filled the kernel's memory without a word."""
        budget = self.history_mb * 1e6
        total = sum(map(self._entry_bytes, self._entries))
        for entry in self._entries[:-1]:
            if total <= budget:
                return
            if entry.video.trace is not None:
                total -= int(entry.video.trace.nbytes)
                entry.video = dataclasses.replace(entry.video, trace=None)
                self.stats["traces_dropped"] += 1
        while total > budget and len(self._entries) > 1:
            total -= self._entry_bytes(self._entries.pop(0))

    def _final_preview(self, video: Video) -> np.ndarray:
        if video.trace is not None:
            return np.asarray(video.trace.preview.isel(step=-1).values)
        if video.latents is not None:
            return np.asarray(self.generator.backend.preview(video.latents))
        return video.frames

    @staticmethod
    def _thumb(frames: np.ndarray) -> np.ndarray:
        """The middle frame, halved until it is at most 48 pixels on its long side."""
        img = frames[len(frames) // 2]
        while max(img.shape[:2]) > 48:
            img = img[::2, ::2]
        return np.ascontiguousarray(img)

    def _show_entry(self, index: int) -> None:
        """Show history entry ``index``: player, caption, final preview, highlighted thumbnail."""
        entry = self._entries[index]
        p = entry.video.params
        with self.player.hold_sync():
            self.player.value = entry.mp4
            self.player.width = str(PLAYER_WIDTH)
            self.player.layout.display = None if entry.mp4 else "none"  # no mp4: ffmpeg failed (see _run)
        self.caption.value = ('<span class="sora-nb-controls-caption-text">'
                              + html.escape(f"{p['prompt']} · seed {p['seed']} · guidance {p['guidance']:g} · "
                                            f"{p['steps']} steps · {p['duration']:g} s · {p['width']}×{p['height']}")
                              + "</span>")
        self._preview_entry(entry)
        self.history_strip.set_items(
            [e.thumb for e in self._entries],
            [f"s{e.video.params['seed']} g{e.video.params['guidance']:g}" for e in self._entries],
            [self._title(e.video.params) for e in self._entries], index, [e.id for e in self._entries])

    def _preview_entry(self, entry: _Entry) -> None:
        """The preview of a finished clip: its x0 at its last step."""
        retry = entry.video.params.get("retry") or {}
        drawn = retry["steps"][retry["picked"]] if "steps" in retry else entry.video.params["steps"]  # a kept redraw's own steps
        self.preview.show(entry.preview, run=self._generation, step=drawn, label=f"x0 at step {drawn}/{drawn}")

    def _show_shown_clip(self, label: str, *, failed_at: int | None = None) -> None:
        """Progress and preview back to the clip the player shows (none before the first clip), the progress
        label saying ``label``: what a run dropped before its end leaves. ``failed_at``: the steps a failed run
        made, kept in a red (``danger``) bar."""
        with self.progress.hold_sync():
            self.progress.value = 0 if failed_at is None else failed_at
            self.progress.bar_style = "" if failed_at is None else "danger"
        self.progress_label.value = label
        if 0 <= self.history_strip.selected < len(self._entries):
            self._preview_entry(self._entries[self.history_strip.selected])
        else:
            self.preview.clear(run=self._generation, label="")

    @staticmethod
    def _title(p: dict[str, Any]) -> str:
        neg = f" (not: {p['negative_prompt']})" if p.get("negative_prompt") else ""
        return (f"{p['prompt']}{neg}\nseed {p['seed']}, guidance {p['guidance']:g}, {p['steps']} steps, "
                f"{p['duration']:g} s, {p['width']}x{p['height']}")

    # -- messages ----------------------------------------------------------------------------------------
    def _show_error(self, text: str) -> None:
        self.error = text
        self.message.value = f'<div class="sora-nb-controls-error" style="color:#b00020">⚠ {html.escape(text)}</div>'

    def _show_message(self, text: str) -> None:
        self.error = None
        self.message.value = f'<div class="sora-nb-controls-info">{html.escape(text)}</div>'

    # -- actions -------------------------------------------------------------------------------------------
    def roll(self) -> int:
        """The dice: draw a new seed, put it in the seed box (before the run) and generate; returns it."""
        seed = secrets.randbelow(SEED_DRAW)
        while seed == self.seed.value:
            seed = secrets.randbelow(SEED_DRAW)
        self.seed.value = seed   # the change starts the run, with exactly this seed
        return seed

    def run(self) -> None:
        """Generate the current values again (the Run button)."""
        self._schedule(0.0)

    def stop(self) -> None:
        """Cancel the waiting change and the run in flight (the Stop button); nothing is decoded."""
        with self._cond:
            self._epoch += 1
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._cancel_locked("stop")

    def restore(self, index: int) -> Video:
        """Bring back history entry ``index`` (negative counts from the end): its parameters go into the
        controls, without starting a generation, and its video is shown. Returns that video."""
        n = len(self._entries)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -n <= index < n:
            raise IndexError(f"index must be in [{-n}, {n - 1}] (history has {n} clips), got {index!r}")
        index = int(index) % n
        with self._apply:
            with self._cond:
                self._epoch += 1
                self._generation += 1    # anything in flight is for other values now
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
                self._cancel_locked("superseded")
            entry = self._entries[index]
            p = entry.video.params
            with self._silenced():
                for name in CONTROL_NAMES:
                    self._assign(getattr(self, name), (p["width"], p["height"]) if name == "size" else p[name])
            self.video = entry.video
            self._show_entry(index)
            with self.progress.hold_sync():
                self.progress.value = self.progress.max
                self.progress.bar_style = ""   # not a failed run's red
            self.progress_label.value = f"restored clip {index + 1} of {n}"
            self._show_message(f"Restored clip {index + 1} of {n}: seed {p['seed']}, guidance {p['guidance']:g}.")
        return entry.video

    def inspect(self) -> Any:
        """Open the latent inspector (:func:`sora_nb.inspect`) on the clip shown, below the panel."""
        if self.video is None:
            self._show_error("nothing to inspect yet: no clip has finished")
            return None
        try:
            from .inspector import inspect as make_inspector
        except ImportError as err:
            self._show_error(f"the latent inspector is not available: {err}")
            return None
        try:
            widget = make_inspector(self.video)
        except (ValueError, TypeError, traitlets.TraitError) as err:
            self._show_error(f"cannot inspect this clip: {err}")
            return None
        old, self.inspector = self.inspector, widget
        self.inspector_box.children = (widget,)
        if old is not None and old is not widget:  # ipywidgets keeps every widget not closed (and its trace)
            _close_tree(old)
        self._show_message(f"Inspecting: {self.video.params['prompt']} · seed {self.video.params['seed']}")
        return widget

    def save(self, path: str | Path | None = None) -> Path | None:
        """Write the clip shown as mp4 with its params. A ``path`` given is written (replacing a file there); the
        default name, ``<save_dir>/<slug>_seed<seed>.mp4``, takes a number (``_2``, ``_3``, ...) rather than
        replace an earlier save, since two clips of one prompt and seed differ in guidance, steps, ..."""
        if path is not None:
            path = check_path("path", path)
        video = self.video  # once: a run finishing meanwhile must not name the file after one clip, write another
        if video is None:
            self._show_error("nothing to save yet: no clip has finished")
            return None
        p = video.params
        if path is not None:
            target = path
        else:
            stem = f"{slug(p['prompt'])}_seed{p['seed']}"
            target, n = self.save_dir / f"{stem}.mp4", 1
            while target.exists():
                n += 1
                target = self.save_dir / f"{stem}_{n}.mp4"
        try:
            written = video.save(target)
        except (ValueError, TypeError, OSError, RuntimeError) as err:
            self._show_error(f"could not save: {err}")
            return None
        self._show_message(f"Saved {written}")
        return written

    def wait(self, timeout: float | None = 60.0) -> Video | None:
        """Block until nothing waits or runs; return ``video``. TimeoutError after ``timeout`` seconds (None:
        no limit)."""
        if timeout is not None:
            timeout = check_float("timeout", timeout, 0.0, 1e9, unit="seconds")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._busy_locked():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"the panel was still busy after {timeout} s")
                self._cond.wait(left)
        return self.video

    def close(self) -> None:
        """Stop the worker and close every widget of the panel (its layouts and styles, the inspector too).
        ipywidgets keeps each widget until it is closed, and the controls' observers hold the panel: closing
        only the root left the panel, its history and its threads' state in the kernel for good."""
        self._stop_worker()
        _close_tree(self.root)
        if self.inspector is not None:
            _close_tree(self.inspector)

    def _stop_worker(self) -> None:
        """Refuse new runs, cancel the one in flight and wait (up to 10 s) for the worker to end."""
        with self._cond:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._cancel_locked("stop")
            worker = self._worker
        if worker is not None:
            worker.join(timeout=10)


def _close_tree(widget: W.Widget) -> None:
    """Close ``widget`` and every widget it holds in a synced trait (children, layout, style, ...)."""
    seen: set[int] = set()
    todo = [widget]
    while todo:
        w = todo.pop()
        if id(w) in seen:
            continue
        seen.add(id(w))
        for name in w.trait_names(sync=True):
            held = getattr(w, name, None)
            for item in held if isinstance(held, (list, tuple)) else (held,):
                if isinstance(item, W.Widget):
                    todo.append(item)
        w.close()


# Panels whose worker may be running. At exit each is stopped first: a daemon worker still inside torch while
# the interpreter finalizes aborted the process ("terminate called without an active exception", status 134).
_LIVE: "weakref.WeakSet[Controls]" = weakref.WeakSet()


@atexit.register
def _stop_live_panels() -> None:
    for ui in list(_LIVE):
        ui._stop_worker()


def controls(generator: Any = None, **initial: Any) -> Controls:
    """The live panel for ``generator`` (a :func:`sora_nb.load` result or model name; default the embedded
    model). ``initial`` sets the first values (``prompt``, ``negative_prompt``, ``seed``, ``duration``,
    ``guidance``, ``eta``, ``steps``, ``size`` as ``(width, height)`` or ``width``/``height``) and options (``debounce=0.3`` seconds after the last
    keystroke, ``preview_interval=0.05``, ``save_dir="."``, ``history_size=32``, ``history_mb=2048`` (past it
    the oldest clips' traces are dropped, then the oldest clips), ``autostart=True``; for an
    image-to-video model, ``image=`` its first frame, a PIL image or uint8 ``(H, W, 3)`` array, kept for every run).
    The first clip starts at once; ``ui.wait()`` blocks until it is done."""
    return Controls(generator, **initial)
