"""The trace: every denoising step of every frame, as a labelled ``xarray.Dataset``.

:class:`TraceRecorder` is an observer of the sampling loop (the same for every backend). It copies
x_t, the x0 prediction and a cheap RGB preview of x0 at every ``record_every``-th step (the last step
is always kept), as float16 on the CPU, and builds::

    Dimensions: step, frame, channel, y, x   (latent);  py, px, rgb (preview)
    Coordinates: step; timestep(step); sigma(step); guidance(step); frame; time(frame) [s]
    latent  (step, frame, channel, y, x) float16   x_t fed to the model at that step
    x0      (step, frame, channel, y, x) float16   the model's prediction of the clean latent
    preview (step, frame, py, px, rgb)   uint8     the backend's RGB preview of x0 (of the stored, downsampled x0
                                                   when the trace is downsampled)
    attrs: prompt, seed, guidance, steps, model, fps, sora_nb_version, ...  (netCDF-safe); weights_sha256
           and model_folder where the model records them; after a redraw noise_seed, noise_steps, retry

``frame`` indexes latent frames (video time); ``step`` indexes diffusion time. ``trace=False`` builds
no recorder at all, so it records nothing and costs nothing.

Keeping it bounded
------------------
A trace holds ``2 * 2 * frame * channel * y * x`` bytes of float16 latents plus the uint8 preview per
recorded step (:func:`estimate_trace_bytes`). Before recording anything the recorder makes a
:class:`TracePlan` and logs it (logger ``sora_nb.trace``):

1. *Spatial downsampling*: latents wider or taller than ``max_side`` (128 latent pixels) are
   averaged over ``d x d`` blocks (``d`` the smallest factor that brings them under it), and the
   preview is the backend's preview of that averaged x0, as stored in the trace (on the CPU and
   on a GPU alike, so ``preview == backend.preview(trace.x0)`` step by step). ``downsample=1``
   turns it off, any other integer forces it. The embedded model (16 x 16 latents) is never
   downsampled.
2. *The limit*: if the estimate is above ``max_mb`` (default 1024 MB, or the environment variable
   ``SORA_NB_TRACE_LIMIT_MB``), then with ``on_limit="thin"`` (default) the recorder keeps every
   k-th step with the smallest ``k >= record_every`` that fits, and says so with a
   :class:`TraceThinned` warning; with ``on_limit="raise"``, or when even the first and last steps
   alone do not fit, it refuses with :class:`TraceTooLarge` before the first step is recorded.

Set these process-wide with :func:`set_trace_options` or for a block (in its thread) with :func:`trace_options`
(a name other than ``max_mb``, ``on_limit``, ``downsample`` and ``max_side`` is refused with TypeError)::

    with sora_nb.trace.trace_options(max_mb=50, on_limit="raise"):
        video = gen.generate("a red circle moving right", steps=50)

or pass your own ``TraceRecorder(backend.preview, max_mb=...)`` in ``observers=`` (with
``trace=False``) and read ``recorder.dataset``. An observer sees every draw of a call: with ``retries`` (the
embedded model redraws a broken layout) or ``best_of``, your recorder holds the last draw, which need not be the
clip returned, and its attrs are that draw's (its noise seed as ``seed``). Pass ``retries=0``, or use the
built-in trace, which is always the returned clip's. Backends that expose ``latent_shape(request)``
(``(channel, frame, y, x)``, as the embedded model does) get the plan before the first model call;
others at the first step. The effective choice is recorded in the attrs (``record_every``,
``requested_record_every``, ``trace_downsample``).

On a GPU the copy to the host must not stall the loop: when the latent is on CUDA the recorder casts
to float16 on the device and copies with ``non_blocking=True`` into page-locked (pinned) buffers
allocated once per run, and computes the previews from those host copies after the run (so a
backend's ``preview`` must accept CPU tensors). That path is guarded by ``tensor.is_cuda``; the
project's test machine has no GPU, so it is exercised only where one is present.

Saving
------
netCDF has no float16 type, so ``trace.to_netcdf(path)`` fails. ``trace.sora.to_netcdf(path)`` (an
xarray accessor registered by this module) stores each float16 variable as float32 (every float16
value is exactly representable, so nothing is lost) with the attribute
``sora_nb_dtype = "float16"``; :func:`open_trace` restores float16 and drops the attribute, so
``xr.testing.assert_identical(trace, open_trace(path))`` holds. Zarr stores float16 natively, so
``trace.to_zarr(path)`` and ``xr.open_zarr`` round trip identically too; but zarr v3 has no stable encoding of
the ``rgb`` coordinate's fixed-width text and warns that such a store may not be readable by a later zarr, and
xarray's consolidated metadata (its default) is not part of the zarr v3 specification, which zarr also warns about.
``trace.sora.to_zarr(path)`` writes that text as variable-length strings, marked the same way, and writes no
consolidated metadata (``consolidated=False`` unless you pass ``consolidated``), so it warns about neither;
:func:`open_trace` (or ``xr.open_zarr(path, consolidated=False)``, then :func:`decode_trace`) gives back the
identical trace. An existing store is replaced only with ``mode="w"``.

netCDF3 (``engine="scipy"``, ``format="NETCDF3_CLASSIC"`` and the other NETCDF3 formats) and
``format="NETCDF4_CLASSIC"`` have no unsigned 8-bit type for the uint8 ``preview``: ``trace.sora.to_netcdf``
refuses them; it needs ``format="NETCDF4"`` (the default) with the netcdf4 or h5netcdf engine.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import xarray as xr

from ._checks import MB, check_int, check_path
from ._files import atomic_file, atomic_folder
from .backend import StepEvent
from .request import MAX_RECORD_EVERY
from .sampler import RunInfo

logger = logging.getLogger(__name__)

DTYPE_ATTR = "sora_nb_dtype"       # marks a variable stored as another dtype (float16 as float32, <U1 as str)
ON_LIMIT = ("thin", "raise")
MAX_NUM_STEPS = 10**6               # a bound for num_steps in planning (far past any model's max_steps)


class TraceTooLarge(ValueError):
    """The trace would exceed the memory limit and may not be thinned (raised before recording)."""


class TraceThinned(UserWarning):
    """The trace keeps fewer steps than asked for, to stay under the memory limit."""


# -- options -----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TraceOptions:
    """How big a trace may get and what to do past that."""

    max_mb: float = 1024.0          # limit on the estimated trace size, MB (2**20 bytes)
    on_limit: str = "thin"          # "thin": keep fewer steps and warn; "raise": refuse before the run
    downsample: int | None = None   # spatial factor for latents and previews; None = auto (big latents)
    max_side: int = 128             # auto downsampling keeps latent y and x at most this

    def __post_init__(self) -> None:
        if not isinstance(self.max_mb, (int, float)) or isinstance(self.max_mb, bool):
            raise ValueError(f"max_mb must be a finite number > 0 (MB), got {self.max_mb!r}")
        try:
            finite = math.isfinite(self.max_mb)
        except OverflowError:  # an int too large for a float: not finite either (as _checks.check_float says)
            raise ValueError("max_mb must be a finite number > 0 (MB), got a number too large for a float") from None
        if not (finite and self.max_mb > 0):
            raise ValueError(f"max_mb must be a finite number > 0 (MB), got {self.max_mb!r}")
        if self.on_limit not in ON_LIMIT:
            raise ValueError(f"on_limit must be one of {', '.join(map(repr, ON_LIMIT))}; got {self.on_limit!r}")
        if self.downsample is not None and (isinstance(self.downsample, bool) or not isinstance(self.downsample, int)
                                            or self.downsample < 1):
            raise ValueError(f"downsample must be None (auto) or an integer >= 1, got {self.downsample!r}")
        if isinstance(self.max_side, bool) or not isinstance(self.max_side, int) or self.max_side < 1:
            raise ValueError(f"max_side must be an integer >= 1, got {self.max_side!r}")


OPTION_NAMES = tuple(f.name for f in dataclasses.fields(TraceOptions))


def _with_changes(options: TraceOptions, changes: dict[str, Any], where: str) -> TraceOptions:
    """``options`` with ``changes``; a name that is not an option is refused with TypeError naming the valid ones
    (the dataclass's own message names neither)."""
    unknown = [name for name in changes if name not in OPTION_NAMES]
    if unknown:
        folded = {o.replace("_", ""): o for o in OPTION_NAMES}  # max_MB, maxmb: max_mb
        hints = [f"{name!r}" + (f" (did you mean {folded[key]!r}?)" if (key := str(name).lower().replace("_", ""))
                                in folded else "") for name in unknown]
        raise TypeError(f"{where} got unknown trace option{'s' if len(unknown) > 1 else ''} {', '.join(hints)}; "
                        f"the options are {', '.join(OPTION_NAMES)}")
    return dataclasses.replace(options, **changes)


def _default_options() -> TraceOptions:
    """Defaults, with the limit read from ``SORA_NB_TRACE_LIMIT_MB`` when set."""
    env = os.environ.get("SORA_NB_TRACE_LIMIT_MB")
    if not env:
        return TraceOptions()
    try:
        return TraceOptions(max_mb=float(env))
    except ValueError:
        warnings.warn(f"SORA_NB_TRACE_LIMIT_MB must be a number > 0 (MB), got {env!r}; using "
                      f"{TraceOptions.max_mb:g} MB", stacklevel=2)
        return TraceOptions()


_options = _default_options()
# a trace_options block's options: per thread (and asyncio task), so overlapping blocks in two threads neither see
# nor undo each other's (a process-wide swap left one thread's options behind for good)
_block_options: contextvars.ContextVar[TraceOptions | None] = contextvars.ContextVar("sora_nb_trace_options",
                                                                                      default=None)


def get_trace_options() -> TraceOptions:
    """The options new recorders start from: the innermost :func:`trace_options` block's in this thread, else the
    process-wide ones."""
    block = _block_options.get()
    return _options if block is None else block


def set_trace_options(**changes: Any) -> TraceOptions:
    """Change the process-wide options (``max_mb``, ``on_limit``, ``downsample``, ``max_side``); returns the old ones."""
    global _options
    old = _options
    _options = _with_changes(old, changes, "set_trace_options()")
    return old


@contextlib.contextmanager
def trace_options(**changes: Any) -> Iterator[TraceOptions]:
    """``with trace_options(max_mb=50): ...``: options for the block, in this thread only (other threads, a live
    panel's worker among them, keep theirs); restored after."""
    options = _with_changes(get_trace_options(), changes, "trace_options()")
    token = _block_options.set(options)
    try:
        yield options
    finally:
        _block_options.reset(token)


# -- planning ----------------------------------------------------------------------------------------
def recorded_steps(num_steps: int, record_every: int) -> list[int]:
    """Indices of the steps kept: every ``record_every``-th, and always the last (``num_steps`` >= 1)."""
    check_int("num_steps", num_steps, 1, MAX_NUM_STEPS)
    check_int("record_every", record_every, 1, MAX_NUM_STEPS)  # (thinning tries any up to num_steps)
    kept = list(range(0, num_steps, record_every))
    if kept[-1] != num_steps - 1:
        kept.append(num_steps - 1)
    return kept


def _pooled(shape: tuple[int, ...], downsample: int, axes: tuple[int, int]) -> tuple[int, ...]:
    """``shape`` with the two spatial ``axes`` divided (floor) by ``downsample``."""
    out = list(shape)
    for a in axes:
        out[a] = max(1, out[a] // downsample)
    return tuple(out)


def estimate_trace_bytes(num_steps: int, latent_shape: tuple[int, ...], preview_shape: tuple[int, ...],
                         record_every: int = 1, *, downsample: int = 1) -> int:
    """Bytes a trace will take: two float16 latents ``(frame, channel, y, x)`` and one uint8 preview
    ``(frame, py, px, 3)`` per recorded step, after ``downsample``."""
    recorded = len(recorded_steps(num_steps, record_every))
    latent = _pooled(tuple(latent_shape), downsample, (-2, -1))
    preview = _pooled(tuple(preview_shape), downsample, (-3, -2))
    return recorded * (2 * 2 * int(np.prod(latent)) + int(np.prod(preview)))


@dataclasses.dataclass(frozen=True)
class TracePlan:
    """What a recorder will keep, decided before it records anything."""

    num_steps: int
    steps: tuple[int, ...]           # step indices kept
    record_every: int                # effective (>= the requested one)
    requested_record_every: int
    downsample: int                  # spatial factor applied to latents and previews
    latent_shape: tuple[int, ...]    # (frame, channel, y, x) as produced by the backend
    preview_shape: tuple[int, ...]   # (frame, py, px, 3) as produced by the backend
    nbytes: int                      # estimated size of the trace
    requested_nbytes: int            # what the request alone would have taken
    max_mb: float

    @property
    def thinned(self) -> bool:
        """Whether steps were dropped to fit the limit."""
        return self.record_every != self.requested_record_every

    def __str__(self) -> str:
        f, c, h, w = self.latent_shape
        ds = f", downsampled x{self.downsample}" if self.downsample > 1 else ""
        thin = (f"; thinned from record_every={self.requested_record_every} "
                f"({self.requested_nbytes / MB:.2f} MB)" if self.thinned else "")
        return (f"trace: {len(self.steps)} of {self.num_steps} steps (record_every={self.record_every}), "
                f"{f} frames x {c} channels x {h}x{w} latent{ds}: {self.nbytes / MB:.2f} MB "
                f"(limit {self.max_mb:g} MB){thin}")


def auto_downsample(latent_shape: tuple[int, ...], max_side: int) -> int:
    """Smallest factor that brings the latent's y and x to at most ``max_side``."""
    return max(1, math.ceil(max(latent_shape[-2:]) / max_side))


def plan_trace(num_steps: int, latent_shape: tuple[int, ...], preview_shape: tuple[int, ...],
               record_every: int = 1, options: TraceOptions | None = None) -> TracePlan:
    """Choose the steps and the spatial factor for a trace; raise :class:`TraceTooLarge` if it can't fit.

    The thinning rule: keep the requested ``record_every`` if the estimate fits ``max_mb``; else (with
    ``on_limit="thin"``) the smallest larger ``record_every`` that fits (the first and last steps are
    always kept); refuse when even those two do not fit, or when ``on_limit="raise"``.
    """
    num_steps = check_int("num_steps", num_steps, 1, MAX_NUM_STEPS)
    opts = options or get_trace_options()
    d = opts.downsample if opts.downsample is not None else auto_downsample(latent_shape, opts.max_side)
    d = max(1, min(d, *latent_shape[-2:]))  # a factor past the latent's side pools it to one cell, not to none
    limit = opts.max_mb * MB
    size = lambda k: estimate_trace_bytes(num_steps, latent_shape, preview_shape, k, downsample=d)  # noqa: E731
    requested = size(record_every)
    chosen = record_every
    if requested > limit:
        def advice(fewer: bool = True) -> str:
            return ("raise the limit (sora_nb.trace.set_trace_options(max_mb=...), or SORA_NB_TRACE_LIMIT_MB set "
                    "before sora_nb is imported), " + ("record fewer steps (record_every=...), " if fewer else "")
                    + "downsample (set_trace_options(downsample=...)) or generate with trace=False")
        if opts.on_limit == "raise":
            raise TraceTooLarge(f"the trace would take {requested / MB:.1f} MB for {num_steps} steps of a "
                                f"{tuple(latent_shape)} latent, over the limit of {opts.max_mb:g} MB: {advice()}")
        chosen = next((k for k in range(record_every, max(num_steps, record_every + 1)) if size(k) <= limit), None)
        if chosen is None:
            raise TraceTooLarge(f"even the first and last steps of a {tuple(latent_shape)} latent take "
                                f"{size(max(num_steps, 1)) / MB:.1f} MB, over the limit of {opts.max_mb:g} MB: "
                                f"{advice(fewer=False)}")  # (those two are always kept: fewer steps cannot help)
    return TracePlan(num_steps=num_steps, steps=tuple(recorded_steps(num_steps, chosen)), record_every=chosen,
                     requested_record_every=record_every, downsample=d, latent_shape=tuple(latent_shape),
                     preview_shape=tuple(preview_shape), nbytes=size(chosen), requested_nbytes=requested,
                     max_mb=opts.max_mb)


def estimate_trace(generator: Any, prompt: str = "a red circle moving right", **kwargs: Any) -> TracePlan:
    """The plan (and size) of the trace ``generator.generate(prompt, **kwargs)`` would record, without running it.

    Needs a backend with ``latent_shape(request) -> (channel, frame, y, x)`` (the embedded model has it).
    """
    backend = generator.backend
    if getattr(backend, "latent_shape", None) is None:
        raise TypeError(f"{type(backend).__name__} does not expose latent_shape(request); the trace is planned "
                        "at the first step instead (see TraceRecorder.plan)")
    request = generator.request(prompt, **kwargs)
    latent_shape, preview_shape = _shapes_from_backend(backend, request)
    return plan_trace(request.steps, latent_shape, preview_shape, request.record_every)


def _shapes_from_backend(backend: Any, request: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(frame, channel, y, x) latent and (frame, py, px, 3) preview shapes, from ``latent_shape`` and a
    preview of zeros (cheap: a linear map)."""
    c, f, h, w = backend.latent_shape(request)
    preview = backend.preview(torch.zeros(f, c, h, w))
    return (f, c, h, w), tuple(np.shape(preview))


# -- recording ---------------------------------------------------------------------------------------
def _netcdf_safe(value: Any) -> Any:
    """Attrs must be str, numbers or 1-D arrays to survive ``to_netcdf``; bools become ints."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (str, int, float, np.integer, np.floating)):
        return value
    if value is None:
        return ""
    return str(value)


def _pool_latent(x: torch.Tensor, d: int) -> torch.Tensor:
    """Average ``(frame, channel, y, x)`` over ``d x d`` blocks (identity for d = 1)."""
    return x if d == 1 else torch.nn.functional.avg_pool2d(x, d)


class TraceRecorder:
    """Observer that records the run into an ``xarray.Dataset`` (``.dataset`` after the run).

    ``max_mb``, ``on_limit``, ``downsample`` and ``max_side`` default to the process-wide
    :func:`get_trace_options`; ``.plan`` is the :class:`TracePlan` once it is made.
    """

    def __init__(self, preview: Callable[[torch.Tensor], np.ndarray], record_every: int = 1, **options: Any):
        self.preview = preview
        self.record_every = check_int("record_every", record_every, 1, MAX_RECORD_EVERY)
        self.options = _with_changes(get_trace_options(), options, "TraceRecorder()")
        self._backend = getattr(preview, "__self__", None)  # set when ``preview`` is a backend's bound method
        self.dataset: xr.Dataset | None = None
        self.plan: TracePlan | None = None
        self._info: RunInfo | None = None
        self._keep: set[int] = set()
        self._rows: list[dict[str, Any]] = []    # the kept steps' scalars (step, timestep, sigma, guidance)
        self._arrays: dict[str, np.ndarray] = {}  # latent, x0, preview: one array each, sized by the plan
        self._pinned: dict[str, torch.Tensor] = {}
        self._copied: Any = None  # CUDA event after the last non-blocking copy

    # -- observer protocol ---------------------------------------------------------------------
    def on_start(self, info: RunInfo) -> None:
        self.dataset = None  # a run that fails before its first step leaves no trace, not the last run's
        self._info = info
        self._rows = []
        self._arrays = {}
        self._pinned = {}
        self._copied = None
        self.plan = None
        if getattr(self._backend, "latent_shape", None) is not None:  # plan before the first model call
            self._set_plan(*_shapes_from_backend(self._backend, info.request))

    def on_step(self, event: StepEvent) -> None:
        if self.plan is None or tuple(event.latent.shape) != self.plan.latent_shape:
            self._plan_at_first_step(event)
        if event.step not in self._keep:
            return
        d = self.plan.downsample
        guidance = event.guidance if event.guidance is not None else self._info.request.guidance
        row: dict[str, Any] = {"step": event.step, "timestep": event.timestep, "sigma": event.sigma,
                               "guidance": guidance}
        if event.latent.is_cuda:
            self._copy_cuda(event, len(self._rows))
        else:
            x0 = _pool_latent(event.x0.detach(), d).to("cpu", torch.float16)
            self._store(len(self._rows), {
                "latent": _pool_latent(event.latent.detach(), d).to("cpu", torch.float16).numpy(),
                "x0": x0.numpy(),
                # downsampled: the preview of the stored x0, as the CUDA path makes it (averaging the backend's
                # clamped uint8 preview gave other colours); at full size the preview of x0 itself, as before
                "preview": np.asarray(self.preview(x0.float() if d > 1 else event.x0))})
        self._rows.append(row)

    def on_end(self, latents: torch.Tensor, cancelled: bool) -> None:
        if self._rows:
            if self._pinned:
                self._collect_cuda()
            self.dataset = self._build(cancelled)

    # -- helpers --------------------------------------------------------------------------------
    def _store(self, slot: int, values: dict[str, np.ndarray]) -> None:
        """Write one kept step's arrays into the trace's arrays, made at the first one for every kept step: the
        peak is the trace itself, not a list of steps plus their stacked copy."""
        if not self._arrays:
            n = len(self.plan.steps)
            self._arrays = {name: np.empty((n, *np.shape(v)), dtype=np.asarray(v).dtype) for name, v in values.items()}
        for name, value in values.items():
            self._arrays[name][slot] = value

    def _set_plan(self, latent_shape: tuple[int, ...], preview_shape: tuple[int, ...]) -> None:
        """Plan the trace, say so (log; warn when thinned), and remember the steps to keep."""
        info = self._info
        assert info is not None
        self.plan = plan_trace(info.request.steps, latent_shape, preview_shape, self.record_every, self.options)
        self._keep = set(self.plan.steps)
        logger.info("%s", self.plan)
        if self.plan.thinned:
            warnings.warn(f"{self.plan}. To keep every step, raise the limit with "
                          "sora_nb.trace.set_trace_options(max_mb=...)", TraceThinned, stacklevel=2)

    def _plan_at_first_step(self, event: StepEvent) -> None:
        """Plan from the shapes the backend actually produces (first step, or a mismatching hint)."""
        if self._rows:
            raise RuntimeError(f"latent shape changed during the run: {tuple(event.latent.shape)} vs "
                               f"{self.plan.latent_shape if self.plan else None}")
        preview = self.preview(event.x0.detach().float().cpu())
        self._set_plan(tuple(event.latent.shape), tuple(np.shape(preview)))

    def _copy_cuda(self, event: StepEvent, slot: int) -> None:
        """Cast on the device and copy without blocking into pinned host buffers (one per run)."""
        d, n = self.plan.downsample, len(self.plan.steps)
        for name in ("latent", "x0"):
            src = _pool_latent(getattr(event, name).detach(), d).to(torch.float16)
            if name not in self._pinned:
                self._pinned[name] = torch.empty((n, *src.shape), dtype=torch.float16, pin_memory=True)
            self._pinned[name][slot].copy_(src, non_blocking=True)
        self._copied = torch.cuda.Event()
        self._copied.record()

    def _collect_cuda(self) -> None:
        """Wait for the last copy, then fill the rows (and previews, from the host copies)."""
        self._copied.synchronize()
        for i in range(len(self._rows)):
            x0 = self._pinned["x0"][i]
            self._store(i, {"latent": self._pinned["latent"][i].numpy(), "x0": x0.numpy(),
                            "preview": np.asarray(self.preview(x0.float()))})  # already at the downsampled size
        self._pinned = {}

    def _build(self, cancelled: bool) -> xr.Dataset:
        """Stack the recorded rows into the Dataset described in the module docstring."""
        from . import __version__

        info, plan = self._info, self.plan
        assert info is not None and plan is not None
        rows = self._rows
        n = len(rows)  # fewer than planned when cancelled: a copy, so the unused rows are freed
        arrays = {name: a if n == len(a) else a[:n].copy() for name, a in self._arrays.items()}
        self._arrays = {}
        latent = arrays["latent"]  # (S, F, C, y, x)
        n_frames = latent.shape[1]
        starts = np.array([info.limits.latent_frame_start(k) for k in range(n_frames)], dtype=np.float64)
        ds = xr.Dataset(
            data_vars={
                "latent": (("step", "frame", "channel", "y", "x"), latent,
                           {"long_name": "x_t, the latent fed to the model"}),
                "x0": (("step", "frame", "channel", "y", "x"), arrays["x0"],
                       {"long_name": "predicted clean latent x0"}),
                "preview": (("step", "frame", "py", "px", "rgb"), arrays["preview"],
                            {"long_name": "RGB preview of x0"}),
            },
            coords={
                "step": ("step", np.array([r["step"] for r in rows], dtype=np.int64), {"long_name": "denoising step"}),
                "timestep": ("step", np.array([r["timestep"] for r in rows], dtype=np.float32),
                             {"long_name": "scheduler timestep"}),
                "sigma": ("step", np.array([r["sigma"] for r in rows], dtype=np.float32),
                          {"long_name": "noise level of x_t"}),
                "guidance": ("step", np.array([r["guidance"] for r in rows], dtype=np.float32),
                             {"long_name": "classifier-free guidance used at that step"}),
                "frame": ("frame", np.arange(n_frames, dtype=np.int64), {"long_name": "latent frame"}),
                "time": ("frame", (starts / info.fps).astype(np.float32),
                         {"long_name": "video time of the latent frame's first video frame", "units": "s"}),
                "rgb": ("rgb", np.array(["r", "g", "b"])),
            },
        )
        attrs = dict(info.request.asdict())
        # which weights: their hash and folder where the model records them (params["model_info"] holds the rest)
        attrs.update({attr: info.model[key] for key, attr in (("weights_sha256", "weights_sha256"), ("folder", "model_folder"))
                      if info.model.get(key)})
        attrs.update(model=info.model.get("name", ""), fps=float(info.fps), num_frames=info.num_frames,
                     sora_nb_version=__version__, cancelled=cancelled, record_every=plan.record_every,
                     requested_record_every=plan.requested_record_every, trace_downsample=plan.downsample)
        ds.attrs = {k: _netcdf_safe(v) for k, v in attrs.items()}
        return ds


# -- saving and loading ------------------------------------------------------------------------------
def _stored_as(ds: xr.Dataset, match: Callable[[np.dtype], bool], dtype: Any) -> xr.Dataset:
    """A copy of ``ds`` with each variable whose dtype ``match``es cast to ``dtype``, its own dtype kept in the
    ``sora_nb_dtype`` attribute ("float16", "<U1") for :func:`decode_trace`."""
    out = ds.copy()
    for name, var in ds.variables.items():
        if match(var.dtype):
            out[name] = var.astype(dtype)
            out[name].attrs = {**var.attrs, DTYPE_ATTR: str(var.dtype)}
    return out


def encode_for_netcdf(ds: xr.Dataset) -> xr.Dataset:
    """A copy of ``ds`` netCDF can store: float16 variables widened to float32, marked ``sora_nb_dtype``."""
    return _stored_as(ds, lambda dtype: dtype == np.float16, np.float32)


def decode_trace(ds: xr.Dataset) -> xr.Dataset:
    """Undo :func:`encode_for_netcdf` and :func:`encode_text_for_zarr`: variables marked ``sora_nb_dtype`` get their
    dtype back."""
    out = ds.copy()
    for name, var in ds.variables.items():
        if DTYPE_ATTR in var.attrs:
            attrs = {k: v for k, v in var.attrs.items() if k != DTYPE_ATTR}
            out[name] = var.astype(np.dtype(var.attrs[DTYPE_ATTR]))
            out[name].attrs = attrs
    return out


def encode_text_for_zarr(ds: xr.Dataset) -> xr.Dataset:
    """Fixed-width text variables as variable-length strings (object dtype), marked ``sora_nb_dtype``."""
    return _stored_as(ds, lambda dtype: dtype.kind == "U", object)


def _is_zarr(path: Path) -> bool:
    """Zarr stores are folders (or ``*.zarr``); anything else is read as netCDF."""
    return path.is_dir() or path.suffix == ".zarr"


TRACE_VARIABLES = ("latent", "x0", "preview")  # what every trace holds, over its step and frame dimensions


def _python_scalar(value: Any) -> Any:
    """A numpy scalar as the Python number it was saved from (``json.dumps`` takes it); anything else as is."""
    return value.item() if isinstance(value, np.generic) else value


def open_trace(path: str | os.PathLike) -> xr.Dataset:
    """Read a trace saved with ``trace.sora.to_netcdf`` (float16 restored) or ``to_zarr``, fully loaded; attrs are
    Python numbers and text again. A file or store that is not a whole trace (another dataset, or a store a killed
    write left without ``latent``, ``x0`` or ``preview``) is refused with ValueError. A zarr store is read without
    consolidated metadata (``trace.sora.to_zarr`` writes none; a store written with it, as sora_nb once did, reads
    the same), so it warns about neither its absence nor zarr v3's view of it."""
    path = check_path("path", path)
    if not path.exists():
        raise FileNotFoundError(f"no trace at {str(path)!r}")
    opener = functools.partial(xr.open_zarr, consolidated=False) if _is_zarr(path) else xr.open_dataset
    not_trace = f"path {str(path)!r} is not a trace written by trace.sora.to_netcdf or to_zarr"
    try:
        with opener(path) as ds:
            trace = decode_trace(ds.load())
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{not_trace}: {str(err).splitlines()[0][:200] if str(err) else type(err).__name__}") from err
    missing = [v for v in TRACE_VARIABLES if v not in trace.data_vars or not {"step", "frame"} <= set(trace[v].dims)]
    if missing:
        raise ValueError(f"{not_trace}: it has no {', '.join(missing)} over steps and frames (variables: "
                         f"{', '.join(map(str, trace.data_vars)) or 'none'})")
    trace.attrs = {k: _python_scalar(v) for k, v in trace.attrs.items()}
    return trace


NETCDF_NO_UINT8 = ("NETCDF3_CLASSIC", "NETCDF3_64BIT", "NETCDF3_64BIT_OFFSET", "NETCDF3_64BIT_DATA", "NETCDF4_CLASSIC")


def _check_netcdf_format(kwargs: dict[str, Any]) -> None:
    """Refuse the netCDF formats (and the scipy engine, netCDF3 only) that have no unsigned 8-bit type: the uint8
    preview fails in them with xarray's message about casting to int8, which names neither the cause nor the fix."""
    engine, fmt = kwargs.get("engine"), kwargs.get("format")
    bad = []
    if isinstance(fmt, str) and fmt.upper() in NETCDF_NO_UINT8:
        bad.append(f"format={fmt!r}")
    if engine == "scipy":
        bad.append("engine='scipy' (netCDF3 only)")
    if bad:
        raise ValueError(f"trace.sora.to_netcdf cannot write {' with '.join(bad)}: it has no unsigned 8-bit type for "
                         "the trace's uint8 preview. Use format='NETCDF4' (the default) with engine='netcdf4' or "
                         "'h5netcdf' (or omit format and engine), or trace.sora.to_zarr")


def _trace_target(path: Any, *, store: bool = False) -> Path:
    """Where a trace is written: a path in an existing folder (a folder itself only for a zarr ``store``).
    Raises TypeError/ValueError."""
    target = check_path("path", path)
    if not target.parent.is_dir():
        raise ValueError(f"path: folder {str(target.parent)!r} does not exist (create it first)")
    if target.is_dir() and not store:
        raise ValueError(f"path {str(target)!r} is a folder, not a file name")
    if store and target.exists() and not target.is_dir():
        raise ValueError(f"path {str(target)!r} is a file, not a zarr store (a zarr store is a folder): remove it "
                         "or choose another path")
    return target


class TraceAccessor:
    """``trace.sora``: saving that keeps a trace identical (see the module docstring); registered with xarray by
    ``sora_nb._accessor`` when sora_nb is imported."""

    def __init__(self, ds: xr.Dataset):
        self._ds = ds

    def to_netcdf(self, path: str | os.PathLike, **kwargs: Any) -> None:
        """Write netCDF, float16 stored as marked float32; read back with :func:`open_trace`.

        Atomic (as ``Video.save``): written beside ``path`` and renamed over it when complete, so a failed write
        leaves no half-written file and an older file at ``path`` intact; ``mode="a"`` appends in place. Needs
        ``format="NETCDF4"`` (the default): netCDF3 (``engine="scipy"``) and NETCDF4_CLASSIC have no type for the
        uint8 preview, and are refused with ValueError."""
        target = _trace_target(path)
        _check_netcdf_format(kwargs)
        ds = encode_for_netcdf(self._ds)
        if kwargs.get("mode", "w") != "w":
            ds.to_netcdf(target, **kwargs)
            return
        with atomic_file(target, suffix=target.suffix or ".nc") as tmp:
            ds.to_netcdf(tmp, **kwargs)

    def to_zarr(self, path: str | os.PathLike, **kwargs: Any) -> Any:
        """Write zarr (float16 kept as is); read back with :func:`open_trace`.

        Fixed-width text (the ``rgb`` coordinate's ``<U1``) has no stable zarr v3 encoding: zarr warns that a
        store holding it may be unreadable by a later zarr. It is written as variable-length strings, marked
        with its dtype as :func:`encode_for_netcdf` marks float16, and :func:`open_trace` restores it. No
        consolidated metadata is written (``consolidated=False`` unless given; zarr v3 warns that it is not part of
        its specification): read the store with :func:`open_trace`, or ``xr.open_zarr(path, consolidated=False)``.

        An existing ``path`` is replaced only with ``mode="w"`` (the default ``mode="w-"`` refuses it with
        FileExistsError); ``mode="a"`` or ``append_dim="step"`` add to a store in place. A ``path`` that is a file
        is refused with ValueError."""
        target = _trace_target(path, store=True)
        kwargs.setdefault("consolidated", False)
        mode = kwargs.get("mode", "w-")
        if mode == "w-" and target.is_dir() and any(target.iterdir()) and not kwargs.get("append_dim") \
                and not kwargs.get("region"):  # (an empty folder is written into, as zarr does)
            what = "a zarr store" if (target / "zarr.json").exists() or (target / ".zgroup").exists() else "a folder"
            raise FileExistsError(f"path {str(target)!r} already exists ({what}): pass mode=\"w\" to replace it "
                                  "(what it holds is lost), or mode=\"a\" / append_dim=\"step\" to add to a trace "
                                  "store")
        ds = encode_text_for_zarr(self._ds)
        if mode not in ("w", "w-") or kwargs.get("append_dim") or kwargs.get("region"):
            return ds.to_zarr(target, **kwargs)  # appending or updating in place
        # a new store: written whole beside the target and swapped in (`atomic_folder`), so a killed write leaves
        # the old store (or none), never a half store that open_trace would read with NaN where the write stopped
        with atomic_folder(target) as folder:
            return ds.to_zarr(folder, **{**kwargs, "mode": "w"})

    @property
    def megabytes(self) -> float:
        """Size of the trace in memory, MB."""
        return self._ds.nbytes / MB
