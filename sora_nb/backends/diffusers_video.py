"""Real pretrained video models through diffusers, as sora_nb backends: Wan 2.1/2.2, LTX-Video,
CogVideoX, HunyuanVideo and Mochi (text-to-video, and the image-to-video pipelines of Wan, LTX-Video
and CogVideoX). The rest of sora_nb (requests, traces, previews, widgets, export) does not know which
model it drives::

    gen = sora_nb.load("Wan-AI/Wan2.1-T2V-1.3B-Diffusers")          # or a pipeline object / local folder
    video = gen.generate("a cat surfing", num_frames=33, width=832, height=480, steps=30)
    video.trace                                                    # (step, frame, channel, y, x), as always

How a run works
---------------
The pipeline runs its own loop: prompt encoding, timesteps, classifier-free guidance and scheduler
steps are diffusers' code, called once per run with ``output_type="latent"`` and a
``callback_on_step_end``. Nothing of diffusers' loop is copied here. Three small things are added:

1. *A worker thread.* ``pipe(...)`` is a blocking loop, while :meth:`DiffusersVideoBackend.denoise`
   must be a generator that yields one :class:`~sora_nb.backend.StepEvent` per step. So the call
   runs in a worker thread, and the callback hands each step to the caller through a queue and
   waits for the caller to take the next one (lock step: observers see every step before the
   pipeline moves on, so the tensors they read are the current ones). Closing the generator (the
   sampler's cancel, a widget change, Ctrl-C) answers the waiting callback with "stop": it sets
   ``pipe._interrupt``, the pipeline skips its remaining steps without calling the model, returns
   latents we throw away, and nothing is decoded. (We keep our own stop flag because
   ``pipe._interrupt`` is reset when a call starts.) The handoff costs two queue operations per
   step and no device synchronisation.
2. *The initial latents.* The callback sees latents after each step; the latent fed to the model at
   step 0 comes from wrapping ``pipe.prepare_latents`` for the duration of the call (the pipeline
   still draws the noise itself, from the run's seeded CPU ``torch.Generator``, so a bare pipeline
   call with the same generator starts from the same noise, on any device).
3. *x0, the prediction of the clean latent*, by the scheduler at hand (chosen in :func:`x0_method`):

   - ``"flow"`` (``FlowMatchEulerDiscreteScheduler``: LTX-Video, HunyuanVideo, Mochi, the tiny Wan):
     the callback cannot see the model output, but Euler steps are linear in it, so consecutive
     latents give it back: ``v = (x_next - x) / (sigma_next - sigma)``, ``x0 = x - sigma * v``
     (``sigma`` the noise level; Mochi's inverted sigmas are turned into noise levels first). Exact
     up to float32 rounding; with bfloat16 latents (Mochi on a GPU) the rounding of ``x_next`` is
     amplified by ``sigma / (sigma - sigma_next)``, which is fine for previews, not for analysis.
   - ``"model_outputs"`` (``UniPCMultistepScheduler``, Wan's released scheduler, and
     DPM-Solver++): these multistep solvers keep the x0 they convert the model output to in
     ``scheduler.model_outputs[-1]``; we read it (consecutive latents would be wrong for them).
   - ``"returned"`` (CogVideoX's ``CogVideoXDDIMScheduler`` and ``CogVideoXDPMScheduler``): their
     ``step`` returns ``(prev_sample, pred_original_sample)`` but the pipeline keeps only the first,
     and the DPM one adds noise, so x0 cannot be recovered from consecutive latents. We wrap
     ``scheduler.step`` for the call and keep the ``pred_original_sample`` it returns, which is the
     v-prediction formula ``sqrt(alpha_t) x_t - sqrt(1 - alpha_t) v`` computed by the scheduler.

   Any other scheduler is refused with the list above.

Latent layout
-------------
Traces always hold ``(frame, channel, y, x)``: Wan, HunyuanVideo and Mochi latents are
``(batch, channel, frame, y, x)``; LTX-Video's are packed token sequences ``(batch, tokens, channel)``,
unpacked with the pipeline's own ``_unpack_latents``; CogVideoX's are frame-first
``(batch, frame, channel, y, x)``. ``sigma`` in the trace is the noise level of ``latent``: the flow
sigma, or ``sqrt(1 - alphas_cumprod[t])`` for CogVideoX's variance-preserving schedule.

Decoding
--------
Our own, after the steps (so a cancelled run never touches the VAE), with each pipeline's
denormalisation: Wan and Mochi ``latents_mean``/``latents_std``, LTX-Video ``_denormalize_latents``
(plus its decode timestep and noise when the VAE is timestep-conditioned; ``decode_timestep`` and
``decode_noise_scale`` are read from ``call_kwargs``; the noise comes from a generator seeded with 0,
not from the run's, so it differs from the pipeline's own decode), HunyuanVideo and CogVideoX the VAE's
``scaling_factor``. The decode runs with torch's global RNG seeded with 0 (and put back after): LTX-Video
0.9.1's VAE (``decoder_inject_noise``) draws noise inside ``vae.decode`` from it, so the same latents give the same
frames. The sampler keeps the latents if decoding fails (:class:`~sora_nb.sampler.DecodeError`).

Runs and decodes put every component in eval mode for the call (each module goes back to its own mode after): a
pipeline built from constructors, or one whose transformer was being fine-tuned, would otherwise run its dropout,
which draws from the global RNG, so the same seed gave another clip each time.

Constraints
-----------
==============  ==============  ============  ============  =========================
family          frames          width/height  fps           default size, max frames
==============  ==============  ============  ============  =========================
Wan 2.1         4k+1            16k           16            832x480, 81
Wan 2.2 5B      4k+1            32k           24            1280x704, 121
LTX-Video       8k+1            32k           25            704x480, 257
CogVideoX       4k+1            16k           8 (1.5: 16)   720x480, 49 (1.5: 81)
HunyuanVideo    4k+1            16k           24            1280x720, 129
Mochi           6k+1            16k           30            848x480, 163
==============  ==============  ============  ============  =========================

The rules are read from the loaded pipeline (VAE compression times transformer patch size), so a
pipeline with other factors gets its own; requests that break them are refused with the nearest
valid values (:class:`sora_nb.Request`). ``duration`` is turned into the nearest valid frame count.

Memory
------
:func:`estimate_memory` adds the weights (parameter bytes of every component, or only the largest
with ``offload="model"``), the transformer's activations (a rough ``batch * tokens * (8 * dim + ffn)``
elements) and the VAE decode (a rough ``frames * height * width * channels * 8`` elements over the
frames the VAE decodes at once, per tile with ``vae_tiling``). Before a run on CUDA,
:meth:`DiffusersVideoBackend.check` compares it with ``torch.cuda.mem_get_info`` and refuses
(:class:`NotEnoughMemory`) with the numbers and what offload or tiling would need. The estimate is
coarse (never measured against real GPU peaks in this project); ``memory_check=False`` skips it.

Guidance
--------
``guidance`` is the pipeline's ``guidance_scale``: at or below 1 diffusers runs the conditional
branch only (so 0 is not "unconditional" here, unlike the embedded model); HunyuanVideo's is its
distilled guidance embedding (its true CFG needs ``call_kwargs={"true_cfg_scale": ...}`` and a
negative prompt).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import inspect
import json
import math
import os
import queue
import re
import threading
import warnings
import weakref
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from .._checks import check_bool, check_float, check_int, check_str
from ..backend import Limits, StepEvent
from ..latent_formats import FORMATS, latent_to_rgb
from ..media import check_fps
from ..request import Request

MODEL_INDEX = "model_index.json"
GiB = 2**30
OFFLOAD = (None, "model", "sequential")
# Pipeline arguments sora_nb sets itself; call_kwargs may not override them.
RESERVED = frozenset({"prompt", "negative_prompt", "height", "width", "num_frames", "num_inference_steps",
                      "guidance_scale", "generator", "latents", "output_type", "return_dict", "image",
                      "callback_on_step_end", "callback_on_step_end_tensor_inputs", "num_videos_per_prompt"})


class NotEnoughMemory(ValueError):
    """The memory estimate of a run exceeds the device's free memory (raised before the run)."""


@dataclasses.dataclass(frozen=True)
class Family:
    """What sora_nb knows about a model family (the released models' values)."""

    key: str
    label: str                              # named in messages
    latent_format: str                      # sora_nb.latent_formats key
    fps: float
    max_frames: int
    sizes: tuple[tuple[int, int], ...]      # suggested (width, height), first = default
    pipelines: tuple[str, ...]              # text-to-video pipeline class names
    i2v_pipelines: tuple[str, ...] = ()     # image-to-video pipeline class names
    size_check: int = 8                     # the multiple the pipeline's own check_inputs asks of width and height


# -- schedule and x0 ---------------------------------------------------------------------------------
def x0_method(scheduler: Any) -> str:
    """How x0 is obtained for ``scheduler``: ``"flow"``, ``"model_outputs"`` or ``"returned"`` (see the
    module docstring); ValueError for schedulers sora_nb cannot read x0 from."""
    name = type(scheduler).__name__
    cfg = scheduler.config
    if name in ("CogVideoXDDIMScheduler", "CogVideoXDPMScheduler"):
        return "returned"
    if name == "UniPCMultistepScheduler" and cfg.get("predict_x0", True):
        return "model_outputs"
    if name == "DPMSolverMultistepScheduler" and cfg.get("algorithm_type") in ("dpmsolver++", "sde-dpmsolver++"):
        return "model_outputs"
    if name == "FlowMatchEulerDiscreteScheduler" and not cfg.get("stochastic_sampling", False):
        return "flow"
    raise ValueError(f"sora_nb cannot read the x0 prediction from scheduler {name}: use "
                     "FlowMatchEulerDiscreteScheduler (without stochastic_sampling), UniPCMultistepScheduler "
                     "(predict_x0=True), DPMSolverMultistepScheduler (dpmsolver++) or CogVideoX's DDIM/DPM "
                     "schedulers")


def check_seeded(pipe: Any) -> None:
    """ValueError for a stochastic scheduler whose noise the pipeline would draw from torch's global RNG: only
    CogVideoX's pipelines pass their ``generator`` to ``scheduler.step``, so elsewhere a seed would not fix the clip."""
    cfg = pipe.scheduler.config
    if str(cfg.get("algorithm_type", "")).startswith("sde") and not type(pipe).__name__.startswith("CogVideoX"):
        raise ValueError(f"scheduler {type(pipe.scheduler).__name__} with algorithm_type={cfg['algorithm_type']!r} "
                         f"draws noise at every step, and {type(pipe).__name__} does not pass it the run's generator: "
                         "the same seed would give another clip each time; use algorithm_type='dpmsolver++'")


def _noise_levels(scheduler: Any, timesteps: list[float]) -> list[float]:
    """Noise level of the latent before each step, plus the final one (length steps + 1)."""
    cfg = scheduler.config
    flow = (type(scheduler).__name__.startswith("FlowMatch") or cfg.get("use_flow_sigmas", False)
            or cfg.get("prediction_type") == "flow_prediction")
    if flow:
        sigmas = [float(s) for s in scheduler.sigmas.detach().float().cpu().tolist()]
        if cfg.get("invert_sigmas", False):  # Mochi: 0 = noise, 1 = data
            sigmas = [1.0 - s for s in sigmas]
        return sigmas[: len(timesteps) + 1]
    ac = scheduler.alphas_cumprod.detach().double().cpu()
    levels = [math.sqrt(max(0.0, 1.0 - float(ac[int(round(t))]))) for t in timesteps]
    return levels + [0.0]


# -- the run -----------------------------------------------------------------------------------------
class PipelineLock:
    """One call at a time on a pipeline: a run (the pipeline call, in a worker thread) or a decode. It knows the
    caller thread it is held for, so a run or decode asked for from inside a run on the same thread (an observer
    calling ``generate``) is refused rather than waiting forever for the run that waits for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.caller: int | None = None

    def check(self, caller: int) -> None:
        """RuntimeError if ``caller`` (a thread ident) is the thread whose run holds the pipeline now."""
        if self.caller == caller:
            raise RuntimeError("this pipeline is running a call for this thread (an observer or cancel check "
                               "calling generate or decode?): run or decode it after that call ends")

    @contextlib.contextmanager
    def held(self, caller: int) -> Iterator[None]:
        """Hold the pipeline for the thread ``caller`` (`check`ed first: refused, not waited for, when its own
        run holds it)."""
        self.check(caller)
        with self._lock:
            self.caller = caller
            try:
                yield
            finally:
                self.caller = None


_LOCKS: "weakref.WeakKeyDictionary[Any, PipelineLock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


LOCKED_PARTS = ("scheduler", "transformer", "transformer_2", "vae")  # components a call keeps state in


def pipeline_lock(pipe: Any) -> PipelineLock:
    """The lock of one pipeline object, shared by every backend over it and by every pipeline that shares one of
    its stateful components (diffusers' ``from_pipe`` makes an image-to-video pipeline over the same scheduler,
    transformer and VAE): a run patches the pipeline (its ``prepare_latents``, its scheduler's state) for the
    length of a call, and the VAE keeps per-call state while it decodes (and offload hooks move modules), so two
    calls or decodes at once would clash."""
    with _LOCKS_GUARD:
        parts = [pipe] + [part for name in LOCKED_PARTS if (part := getattr(pipe, name, None)) is not None]
        lock = next((_LOCKS[part] for part in parts if part in _LOCKS), None) or PipelineLock()
        for part in parts:
            _LOCKS.setdefault(part, lock)
        return lock


@contextlib.contextmanager
def _patched(obj: Any, name: str, replacement: Any) -> Iterator[None]:
    """Set the instance attribute ``obj.name`` for the block, then restore what was there."""
    had = name in vars(obj)
    old = vars(obj).get(name)
    object.__setattr__(obj, name, replacement)
    try:
        yield
    finally:
        if had:
            object.__setattr__(obj, name, old)
        else:
            object.__delattr__(obj, name)


@contextlib.contextmanager
def _eval_mode(modules: list[Any]) -> Iterator[None]:
    """Every module (and submodule) in ``modules`` in eval mode for the block, then each back in the mode it was in.

    A pipeline built from constructors, or one whose transformer was just fine-tuned (a LoRA left in ``train()``),
    has dropout on: the text encoder's and transformer's dropout draw from torch's global RNG, so the same seed gave
    another clip on every generate (and inference with dropout is not the model's output)."""
    modes = [(m, m.training) for module in modules if isinstance(module, torch.nn.Module) for m in module.modules()]
    for m, training in modes:
        if training:
            m.training = False
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


@contextlib.contextmanager
def _seeded_global_rng(device: torch.device, seed: int = 0) -> Iterator[None]:
    """torch's global RNG (the CPU's and ``device``'s) seeded with ``seed`` for the block, then as it was.

    For the decode: LTX-Video 0.9.1's VAE (``decoder_inject_noise``) adds noise inside ``vae.decode`` drawn with no
    generator, from the global RNG, so the same latents gave other frames at every decode (and the caller's random
    stream moved); seeded, a decode is a function of its latents."""
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.random.default_generator.manual_seed(seed)
        if devices:
            with torch.cuda.device(devices[0]):
                torch.cuda.manual_seed(seed)
        mps_state = None
        if device.type == "mps":
            mps_state = torch.mps.get_rng_state()
            torch.mps.manual_seed(seed)
        try:
            yield
        finally:
            if mps_state is not None:
                torch.mps.set_rng_state(mps_state)


class _PipelineRun:
    """One pipeline call in a worker thread, its steps handed over one by one (see the module docstring)."""

    def __init__(self, backend: "DiffusersVideoBackend", request: Request, generator: torch.Generator):
        self.backend, self.request, self.generator = backend, request, generator
        self.pipe = backend.pipe
        self.dims = backend.latent_dims(request)
        self.method = x0_method(self.pipe.scheduler)
        check_seeded(self.pipe)  # (a scheduler swapped in after load)
        self.steps_q: queue.SimpleQueue = queue.SimpleQueue()   # worker -> caller: ("step"|"done"|"error", x)
        self.replies: queue.SimpleQueue = queue.SimpleQueue()   # caller -> worker: "go" | "stop"
        self.stop = threading.Event()
        self.x: torch.Tensor | None = None       # latent fed to the model at the current step (pipeline layout)
        self.returned_x0: torch.Tensor | None = None
        self.prepared: Any = None                # what prepare_latents returned (an image's conditioning, say)
        self.schedule: tuple[list[float], list[float]] | None = None
        # the CUDA device is per thread: the worker uses the caller's
        self.cuda_device = torch.cuda.current_device() if torch.cuda.is_initialized() else None

    def events(self) -> Iterator[StepEvent]:
        self.caller = threading.get_ident()  # the worker holds the pipeline for it (refused when its own run does)
        worker = threading.Thread(target=self._work, name="sora_nb.diffusers", daemon=True)
        worker.start()
        try:
            while True:
                kind, payload = self.steps_q.get()
                if kind == "step":
                    yield payload
                    self.replies.put("go")
                elif kind == "error":
                    raise payload
                else:
                    return
        finally:  # normal end, error, or the caller closed us (cancel): stop the pipeline, wait for it
            self.stop.set()
            self.replies.put("stop")
            worker.join()

    def _work(self) -> None:
        try:
            if self.cuda_device is not None:
                torch.cuda.set_device(self.cuda_device)
            with self.backend._call_lock.held(self.caller):
                self._call()
            self.steps_q.put(("done", None))
        except BaseException as err:  # handed to the caller, who re-raises it
            self.steps_q.put(("error", err))

    def _call(self) -> None:
        pipe = self.pipe
        kwargs = self.backend.call_arguments(self.request)
        kwargs.update(generator=self.generator, output_type="latent", return_dict=False,
                      callback_on_step_end=self._callback, callback_on_step_end_tensor_inputs=["latents"])
        prepare = pipe.prepare_latents

        @functools.wraps(prepare)  # keeps the signature: pipelines inspect what their callees accept
        def prepare_and_keep(*args: Any, **kw: Any) -> Any:
            out = prepare(*args, **kw)
            self.x = out[0] if isinstance(out, tuple) else out
            self.prepared = out
            return out

        with contextlib.ExitStack() as stack:
            stack.enter_context(_eval_mode(list(pipe.components.values())))
            stack.enter_context(_patched(pipe, "prepare_latents", prepare_and_keep))
            if self.method == "returned":
                step = pipe.scheduler.step

                @functools.wraps(step)  # the pipeline passes generator= and eta= only if step's signature has them
                def step_and_keep(*args: Any, **kw: Any) -> Any:
                    out = step(*args, **kw)
                    self.returned_x0 = out[1] if isinstance(out, tuple) else out.pred_original_sample
                    return out

                stack.enter_context(_patched(pipe.scheduler, "step", step_and_keep))
            pipe(**kwargs)

    def _callback(self, pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        if self.stop.is_set():
            pipe._interrupt = True
            return kwargs
        x_next = kwargs["latents"]
        event = self._event(i, x_next)
        self.x = x_next
        self.steps_q.put(("step", event))
        if self.replies.get() == "stop":
            pipe._interrupt = True
        return kwargs  # diffusers needs the dict back

    def _event(self, i: int, x_next: torch.Tensor) -> StepEvent:
        if self.schedule is None:  # once per run (the only host sync we add: reading the timesteps)
            scheduler = self.pipe.scheduler
            timesteps = [float(t) for t in scheduler.timesteps.detach().float().cpu().tolist()]
            if len(timesteps) != self.request.steps:
                raise RuntimeError(f"the scheduler made {len(timesteps)} timesteps for steps={self.request.steps}; "
                                   f"sora_nb supports one model evaluation per step")
            self.schedule = (timesteps, _noise_levels(scheduler, timesteps))
        timesteps, sigmas = self.schedule
        x = self.x
        if x is None:
            raise RuntimeError("the pipeline did not call prepare_latents; sora_nb cannot see the initial latents")
        if self.method == "flow":
            xf = x.float()
            x0 = xf - sigmas[i] * (x_next.float() - xf) / (sigmas[i + 1] - sigmas[i])
        elif self.method == "model_outputs":
            x0 = self.pipe.scheduler.model_outputs[-1]
        else:
            x0 = self.returned_x0
        dims, seen = self.dims, self.backend.as_seen
        layout = self.backend.to_fcyx
        return StepEvent(step=i, num_steps=len(timesteps), timestep=timesteps[i], sigma=sigmas[i],
                         sigma_next=sigmas[i + 1], guidance=self.backend.step_guidance(self.request, timesteps[i]),
                         latent=layout(seen(x, self.prepared), dims),
                         x0=layout(seen(x0, self.prepared), dims), x_next=layout(seen(x_next, self.prepared), dims))


# -- the backend ---------------------------------------------------------------------------------------
class DiffusersVideoBackend:
    """The Backend protocol for a diffusers video pipeline; one small subclass per family below.

    Options: ``fps``, ``max_frames``, ``default_size``, ``sizes`` (override the family's values),
    ``call_kwargs`` (extra arguments for every pipeline call, e.g. ``{"max_sequence_length": 226}``),
    ``memory_check`` (refuse runs whose estimate exceeds free CUDA memory; default True).
    """

    family: Family
    min_steps = 1  # fewest denoising steps the family's schedule can make

    def __init__(self, pipe: Any, *, name: str | None = None, source: str = "object", fps: float | None = None,
                 max_frames: int | None = None, default_size: tuple[int, int] | None = None,
                 sizes: Any = None, call_kwargs: dict[str, Any] | None = None, offload: str | None = None,
                 vae_tiling: bool = False, memory_check: bool = True):
        self.pipe = pipe
        check_components(pipe)
        self.image_input = type(pipe).__name__ in self.family.i2v_pipelines
        x0_method(pipe.scheduler)  # refuse schedulers we cannot read x0 from, now rather than at the first run
        check_seeded(pipe)
        self.call_kwargs = _check_call_kwargs(pipe, call_kwargs)
        self.offload, self.memory_check = offload, bool(memory_check)
        self.source = source
        self.folder = ""  # the absolute path of a local pipeline folder it was loaded from
        self._call_lock = pipeline_lock(pipe)  # one call at a time per pipeline, whichever Generator asks
        self.limits = self._limits(name or _default_name(pipe, self.family), fps, max_frames, default_size, sizes)

    @property
    def method(self) -> str:
        """How x0 is read from the pipeline's current scheduler (:func:`x0_method`)."""
        return x0_method(self.pipe.scheduler)

    # -- per family (overridden) -------------------------------------------------------------------
    def factors(self) -> tuple[int, int, int, int]:
        """(temporal VAE factor, spatial VAE factor, temporal patch, spatial patch)."""
        raise NotImplementedError

    def latent_channels(self) -> int:
        return int(self.pipe.vae.config.latent_channels)

    def family_values(self) -> tuple[float, int, tuple[tuple[int, int], ...]]:
        """(fps, max frames, suggested sizes) for this pipeline (the family's, or its variant's)."""
        return self.family.fps, self.family.max_frames, self.family.sizes

    def extra_call_arguments(self, request: Request) -> dict[str, Any]:
        return {}

    def to_fcyx(self, latents: torch.Tensor, dims: tuple[int, int, int]) -> torch.Tensor:
        """Pipeline-layout latents (batch of one) to ``(frame, channel, y, x)``."""
        return latents[0].transpose(0, 1)  # (B, C, F, h, w) -> (F, C, h, w)

    def as_seen(self, latents: torch.Tensor, prepared: Any) -> torch.Tensor:
        """Pipeline-layout latents as the model sees them and the pipeline decodes them (``prepared``: what its
        ``prepare_latents`` returned). The same latents for most pipelines."""
        return latents

    def to_vae(self, latents: torch.Tensor, num_frames: int) -> torch.Tensor:
        """``(frame, channel, y, x)`` to the VAE's ``(1, channel, frame, y, x)``."""
        return latents.transpose(0, 1)[None]

    def vae_decode(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents ``(1, C, F, h, w)`` to pixels ``(1, 3, T, H, W)`` in [-1, 1]."""
        raise NotImplementedError

    @property
    def vae_tiling(self) -> bool:
        """Whether the VAE decodes in tiles: the VAE's own state (``load(..., vae_tiling=True)`` turns it on; a
        pipeline the user tiled, or an earlier load tiled, is tiled too), which moves decoded pixels."""
        return bool(getattr(self.pipe.vae, "use_tiling", False))

    # -- protocol ----------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        pipe = self.pipe
        transformer = _transformer(pipe)
        return {"name": self.limits.name, "family": self.family.key, "pipeline": type(pipe).__name__,
                "scheduler": type(pipe.scheduler).__name__, "x0": self.method,
                "dtype": str(transformer.dtype).replace("torch.", ""), "device": str(pipe._execution_device),
                "offload": self.offload or "", "vae_tiling": self.vae_tiling, "source": self.source,
                "max_frames": self.limits.max_frames,  # a load's max_frames option: reproduce needs it again
                # the scheduler's settings shape the clip as much as its class (Wan's docs change its shift)
                "scheduler_config": _recordable({k: v for k, v in pipe.scheduler.config.items()
                                                 if not k.startswith("_")}),
                **({"folder": self.folder} if self.folder else {}),
                **({"call_kwargs": _recordable(self.call_kwargs)} if self.call_kwargs else {})}

    def step_guidance(self, request: Request, timestep: float) -> float:
        """The classifier-free guidance the pipeline applies at ``timestep`` (asked during its call): its own
        ``_guidance_scale`` as it stands at this step (CogVideoX's ``use_dynamic_cfg`` changes it every step), and
        1 where it runs no unconditional pass (guidance <= 1)."""
        g = getattr(self.pipe, "_guidance_scale", None)
        g = float(request.guidance if g is None else g)
        return g if getattr(self.pipe, "do_classifier_free_guidance", g > 1) else 1.0

    def negative_unused(self, request: Request) -> str:
        """Why ``request``'s negative prompt would not reach the model ("" when it would): diffusers pipelines
        run the unconditional branch only at guidance > 1."""
        return "" if request.guidance > 1 else f"guidance is {request.guidance:g} (it is used only above 1)"

    def check(self, request: Request) -> None:
        """Before a run: a negative prompt the pipeline would not use is a warning (the clip records it all the
        same); the memory estimate against free CUDA memory (see :func:`check_memory`)."""
        why = self.negative_unused(request) if request.negative_prompt else ""
        if why:
            warnings.warn(f"negative_prompt has no effect on this {self.family.label} run: {why}", UserWarning,
                          stacklevel=3)
        if not self.memory_check:
            return
        device = torch.device(self.pipe._execution_device)
        if device.type != "cuda":
            return
        free, _total = torch.cuda.mem_get_info(device)
        check_memory(estimate_memory(self, request), free_bytes=free,
                     resident_bytes=_resident_bytes(self.pipe, device))

    def num_frames(self, request: Request) -> int:
        return request.num_frames if request.num_frames is not None else self.limits.frames_for(request.duration)

    def latent_dims(self, request: Request) -> tuple[int, int, int]:
        """(latent frames, latent height, latent width) of ``request``."""
        t, s, _pt, _p = self.factors()
        return (self.num_frames(request) - 1) // t + 1, request.height // s, request.width // s

    def latent_shape(self, request: Request) -> tuple[int, int, int, int]:
        """(C, F, h, w), for planning the trace before the first step."""
        f, h, w = self.latent_dims(request)
        return self.latent_channels(), f, h, w

    def call_arguments(self, request: Request) -> dict[str, Any]:
        """The pipeline's arguments for ``request`` (without generator, output type and callback)."""
        kw: dict[str, Any] = dict(prompt=request.prompt, negative_prompt=request.negative_prompt or None,
                                  height=request.height, width=request.width, num_frames=self.num_frames(request),
                                  num_inference_steps=request.steps, guidance_scale=request.guidance)
        if request.image is not None:
            kw["image"] = request.image
        kw.update(self.extra_call_arguments(request))
        kw.update(self.call_kwargs)
        return kw

    def denoise(self, request: Request, generator: torch.Generator) -> Iterator[StepEvent]:
        """Run the pipeline (in a worker thread) and yield its steps; closing this stops it undecoded."""
        yield from _PipelineRun(self, request, generator).events()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, num_frames: int) -> np.ndarray:
        pipe = self.pipe
        z = self.to_vae(torch.as_tensor(latents), num_frames).to(pipe._execution_device, torch.float32)
        with self._call_lock.held(threading.get_ident()):  # the VAE keeps per-call state: one decode (or run) at a time
            try:
                with _eval_mode([pipe.vae]), _seeded_global_rng(z.device):
                    video = self.vae_decode(z)  # (1, 3, T, H, W)
            finally:
                pipe.maybe_free_model_hooks()  # with offload: put the VAE back on the CPU
        video = video[0, :, :num_frames].float().permute(1, 2, 3, 0)  # (T, H, W, 3)
        return ((video + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu().numpy()

    @torch.no_grad()
    def preview(self, x0: torch.Tensor) -> np.ndarray:
        fmt = FORMATS.get(self.family.latent_format)
        if fmt is not None and x0.shape[1] == fmt.channels:
            return latent_to_rgb(x0, fmt)
        # No published factors for these channels (tiny test models, Wan 2.2's 48-channel VAE): grey.
        grey = x0.detach().float().cpu().mean(dim=1)  # (F, h, w)
        v = ((grey + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
        return v[..., None].expand(*v.shape, 3).numpy().copy()

    # -- helpers ----------------------------------------------------------------------------------------
    def _limits(self, name: str, fps: float | None, max_frames: int | None, default_size: Any,
                sizes: Any) -> Limits:
        t, s, _pt, p = self.factors()
        multiple = math.lcm(s * p, self.family.size_check)  # the latent's patches, and the pipeline's own check
        fam_fps, fam_max, fam_sizes = self.family_values()
        fps = float(fam_fps if fps is None else fps)
        if max_frames is not None and (max_frames - 1) % t:  # it was snapped down without a word
            lo = 1 + (max_frames - 1) // t * t
            raise ValueError(f"max_frames must be {t}k+1 for this {self.family.label} pipeline (its VAE keeps {t} "
                             f"frames a latent frame, the first alone), got {max_frames}: the nearest are {lo} or "
                             f"{lo + t}")
        max_frames = int(fam_max if max_frames is None else max_frames)
        max_frames = 1 + (max_frames - 1) // t * t
        if sizes is None:
            sizes = tuple(sz for sz in fam_sizes if sz[0] % multiple == 0 and sz[1] % multiple == 0)
        sizes = tuple((int(w), int(h)) for w, h in sizes)
        odd = [f"{w}x{h}" for w, h in sizes if w % multiple or h % multiple]
        if odd:
            raise ValueError(f"sizes must be multiples of {multiple} for this {self.family.label} pipeline, "
                             f"got {', '.join(odd)}")
        if default_size is None:
            if not sizes:
                raise ValueError(f"no suggested size of {self.family.label} is a multiple of {multiple} for this "
                                 "pipeline: pass default_size=(width, height)")
            default_size = sizes[0]
        default_size = (int(default_size[0]), int(default_size[1]))
        if default_size[0] % multiple or default_size[1] % multiple:
            raise ValueError(f"default_size must be multiples of {multiple} for this {self.family.label} pipeline, "
                             f"got {default_size[0]}x{default_size[1]}")
        if default_size not in sizes:
            sizes = (default_size, *sizes)
        return Limits(name=name, fps=fps, max_duration=max_frames / fps, sizes=sizes, default_size=default_size,
                      max_prompt_chars=4000, temporal_factor=t, family=self.family.label, frame_step=t,
                      size_multiple=multiple, max_side=MAX_SIDE, min_steps=self.min_steps, image_input=self.image_input,
                      default_guidance=self.pipeline_guidance())

    def pipeline_guidance(self) -> float:
        """The pipeline's own default ``guidance_scale`` (Wan 5, LTX-Video 3, CogVideoX 6, ...), else 5."""
        try:
            default = inspect.signature(type(self.pipe).__call__).parameters["guidance_scale"].default
        except (KeyError, TypeError, ValueError):
            return 5.0
        return float(default) if isinstance(default, (int, float)) and not isinstance(default, bool) else 5.0


# -- the families ----------------------------------------------------------------------------------------
class WanBackend(DiffusersVideoBackend):
    """Wan 2.1 / 2.2: ``(B, C, F, h, w)`` latents normalised by the VAE's ``latents_mean``/``latents_std``."""

    family = Family("wan", "Wan", "wan2.1", 16.0, 81, ((832, 480), (480, 832), (1280, 720), (720, 1280)),
                    ("WanPipeline",), ("WanImageToVideoPipeline",), size_check=16)

    def step_guidance(self, request: Request, timestep: float) -> float:
        """Wan 2.2 with two experts (``boundary_ratio``): the low-noise expert's steps, below the boundary, use
        ``guidance_scale_2`` (the pipeline's ``_guidance_scale_2``)."""
        g = super().step_guidance(request, timestep)
        ratio = getattr(self.pipe.config, "boundary_ratio", None) if hasattr(self.pipe, "config") else None
        second = getattr(self.pipe, "_guidance_scale_2", None)
        if ratio is None or second is None or not getattr(self.pipe, "do_classifier_free_guidance", True):
            return g  # (no unconditional pass: 1 at every step)
        return float(second) if timestep < ratio * self.pipe.scheduler.config.num_train_timesteps else g

    def factors(self) -> tuple[int, int, int, int]:
        pt, ph, _pw = _transformer(self.pipe).config.patch_size
        return int(self.pipe.vae_scale_factor_temporal), int(self.pipe.vae_scale_factor_spatial), int(pt), int(ph)

    def latent_channels(self) -> int:
        return int(self.pipe.vae.config.z_dim)

    def family_values(self) -> tuple[float, int, tuple[tuple[int, int], ...]]:
        if self.latent_channels() == 48:  # Wan 2.2 TI2V 5B: 24 fps, up to 121 frames, 1280x704
            return 24.0, 121, ((1280, 704), (704, 1280))
        return super().family_values()

    def as_seen(self, latents: torch.Tensor, prepared: Any) -> torch.Tensor:
        # Wan 2.2's image-to-video (expand_timesteps, the TI2V 5B) keeps the image's latent in the first latent
        # frame: the transformer sees it there at every step, and the pipeline blends it in before decoding
        if getattr(self.pipe.config, "expand_timesteps", False) and isinstance(prepared, tuple) and len(prepared) == 3:
            _latents, condition, first_frame_mask = prepared
            return ((1 - first_frame_mask) * condition + first_frame_mask * latents).to(latents.dtype)
        return latents

    def vae_decode(self, z: torch.Tensor) -> torch.Tensor:
        # in WanPipeline's order and dtype (cast first, then divide by 1/std in the VAE's dtype): in bfloat16 the
        # float32 arithmetic gave other inputs in 4 of 10 latent values, pixels up to 16 levels off the pipeline's
        vae = self.pipe.vae
        z = z.to(vae.dtype)
        mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(z.device, z.dtype)
        inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(z.device, z.dtype)
        return vae.decode(z / inv_std + mean, return_dict=False)[0]


class LTXBackend(DiffusersVideoBackend):
    """LTX-Video: packed ``(B, tokens, C)`` latents; ``frame_rate`` is passed to the pipeline (RoPE)."""

    family = Family("ltx", "LTX-Video", "ltx-video", 25.0, 257, ((704, 480), (480, 704), (768, 512), (512, 768)),
                    ("LTXPipeline",), ("LTXImageToVideoPipeline",), size_check=32)

    def factors(self) -> tuple[int, int, int, int]:
        pipe = self.pipe
        return (int(pipe.vae_temporal_compression_ratio), int(pipe.vae_spatial_compression_ratio),
                int(pipe.transformer_temporal_patch_size), int(pipe.transformer_spatial_patch_size))

    def latent_channels(self) -> int:
        return int(self.pipe.transformer.config.in_channels)

    def extra_call_arguments(self, request: Request) -> dict[str, Any]:
        # an integer, as the pipeline takes it; at least 1 (it divides by it: fps=0.4 failed with ZeroDivisionError)
        return {"frame_rate": max(1, int(round(self.limits.fps)))}

    def to_fcyx(self, latents: torch.Tensor, dims: tuple[int, int, int]) -> torch.Tensor:
        _t, _s, pt, p = self.factors()
        f, h, w = dims
        return self.pipe._unpack_latents(latents, f, h, w, p, pt)[0].transpose(0, 1)

    def __init__(self, pipe: Any, **options: Any):
        super().__init__(pipe, **options)
        for key in ("decode_timestep", "decode_noise_scale"):  # checked now, not after every step has run
            self._decode_value(key)

    def _decode_value(self, key: str) -> float | None:
        """``call_kwargs[key]``: a number, or (as the pipeline takes one per prompt) a list of one for our one clip."""
        value = self.call_kwargs.get(key)
        if isinstance(value, (list, tuple)) and len(value) == 1:
            value = value[0]
        if value is None and key == "decode_noise_scale":
            return None  # the pipeline's default: the decode timestep
        return check_float(f"call_kwargs[{key!r}]", 0.0 if value is None else value, 0.0, 1.0)

    def vae_decode(self, z: torch.Tensor) -> torch.Tensor:
        pipe, vae = self.pipe, self.pipe.vae
        z = pipe._denormalize_latents(z, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
        timestep = None
        if vae.config.timestep_conditioning:  # as LTXPipeline: blend in noise at the decode timestep
            t = self._decode_value("decode_timestep")
            scale = self._decode_value("decode_noise_scale")
            scale = t if scale is None else scale
            noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(0), dtype=z.dtype).to(z.device)
            z = (1 - scale) * z + scale * noise
            timestep = torch.tensor([t], device=z.device, dtype=vae.dtype)
        return vae.decode(z.to(vae.dtype), timestep, return_dict=False)[0]


class CogVideoXBackend(DiffusersVideoBackend):
    """CogVideoX 1.0 / 1.5: frame-first ``(B, F, C, h, w)`` latents, VAE ``scaling_factor``."""

    family = Family("cogvideox", "CogVideoX", "cogvideox", 8.0, 49, ((720, 480), (480, 720)),
                    ("CogVideoXPipeline",), ("CogVideoXImageToVideoPipeline",))

    def factors(self) -> tuple[int, int, int, int]:
        cfg = self.pipe.transformer.config
        return (int(self.pipe.vae_scale_factor_temporal), int(self.pipe.vae_scale_factor_spatial),
                int(cfg.patch_size_t or 1), int(cfg.patch_size))

    def family_values(self) -> tuple[float, int, tuple[tuple[int, int], ...]]:
        if self.pipe.transformer.config.patch_size_t is not None:  # CogVideoX 1.5
            return 16.0, 81, ((1360, 768), (768, 1360))
        return super().family_values()

    def _limits(self, name: str, fps: float | None, max_frames: int | None, default_size: Any,
                sizes: Any) -> Limits:
        """As every family's, but a transformer with learned positional embeddings (CogVideoX-5b-I2V) draws only
        the size it was trained at (diffusers refuses any other): that size alone."""
        lim = super()._limits(name, fps, max_frames, default_size, sizes)
        cfg = self.pipe.transformer.config
        if not cfg.get("use_learned_positional_embeddings", False):
            return lim
        s = self.factors()[1]
        only = (int(cfg.sample_width) * s, int(cfg.sample_height) * s)
        asked = ([lim.default_size] if default_size is not None else []) + ([*lim.sizes] if sizes is not None else [])
        other = [f"{w}x{h}" for w, h in asked if (w, h) != only]
        if other:
            raise ValueError(f"this {self.family.label} pipeline has learned positional embeddings (as CogVideoX-5b-I2V) "
                             f"and draws only {only[0]}x{only[1]}; got {', '.join(other)}")
        return dataclasses.replace(lim, sizes=(only,), default_size=only, size_multiple=0)

    def to_fcyx(self, latents: torch.Tensor, dims: tuple[int, int, int]) -> torch.Tensor:
        """(B, F, C, h, w) -> (F, C, h, w), without the frames CogVideoX 1.5 pads in front (to a multiple of its
        temporal patch; the pipeline drops them before it decodes): the trace, ``video.latents`` and a decode
        see the clip's own latent frames only."""
        return latents[0, latents.shape[1] - dims[0]:]

    def to_vae(self, latents: torch.Tensor, num_frames: int) -> torch.Tensor:
        return latents.transpose(0, 1)[None]  # every frame given (decode keeps the first num_frames)

    def vae_decode(self, z: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        return vae.decode((z / vae.config.scaling_factor).to(vae.dtype)).sample


class HunyuanVideoBackend(DiffusersVideoBackend):
    """HunyuanVideo: ``(B, C, F, h, w)`` latents, VAE ``scaling_factor``; guidance is distilled guidance."""

    def step_guidance(self, request: Request, timestep: float) -> float:
        """The distilled guidance the model reads at every step (its embedding), whatever its value."""
        return float(request.guidance)

    def negative_unused(self, request: Request) -> str:
        """Its guidance is distilled (one pass): a negative prompt takes a true-CFG pass, only with
        ``call_kwargs={"true_cfg_scale": > 1}``."""
        true_cfg = self.call_kwargs.get("true_cfg_scale", 1.0)
        if isinstance(true_cfg, (int, float)) and true_cfg > 1:
            return ""
        return ("its guidance is distilled into the model (one pass a step); a negative prompt needs a true "
                "classifier-free pass: load with call_kwargs={'true_cfg_scale': 3.0} or so")

    family = Family("hunyuan", "HunyuanVideo", "hunyuanvideo", 24.0, 129,
                    ((1280, 720), (720, 1280), (960, 544), (544, 960), (848, 480), (480, 848)),
                    ("HunyuanVideoPipeline",), size_check=16)

    def factors(self) -> tuple[int, int, int, int]:
        cfg = self.pipe.transformer.config
        return (int(self.pipe.vae_scale_factor_temporal), int(self.pipe.vae_scale_factor_spatial),
                int(cfg.patch_size_t), int(cfg.patch_size))

    def vae_decode(self, z: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        return vae.decode((z / vae.config.scaling_factor).to(vae.dtype), return_dict=False)[0]


class MochiBackend(DiffusersVideoBackend):
    """Mochi: ``(B, C, F, h, w)`` latents normalised by ``latents_mean``/``latents_std``; 6x temporal VAE."""

    family = Family("mochi", "Mochi", "mochi", 30.0, 163, ((848, 480), (480, 848)), ("MochiPipeline",))
    min_steps = 2  # its linear-quadratic schedule divides by steps - 1

    def factors(self) -> tuple[int, int, int, int]:
        pipe = self.pipe
        return int(pipe.vae_temporal_scale_factor), int(pipe.vae_spatial_scale_factor), 1, int(
            pipe.transformer.config.patch_size)

    def vae_decode(self, z: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        cfg = vae.config
        if getattr(cfg, "latents_mean", None) is not None and getattr(cfg, "latents_std", None) is not None:
            mean = torch.tensor(cfg.latents_mean, device=z.device).view(1, -1, 1, 1, 1)
            std = torch.tensor(cfg.latents_std, device=z.device).view(1, -1, 1, 1, 1)
            z = z * std / cfg.scaling_factor + mean
        else:
            z = z / cfg.scaling_factor
        return vae.decode(z.to(vae.dtype), return_dict=False)[0]


BACKENDS: tuple[type[DiffusersVideoBackend], ...] = (WanBackend, LTXBackend, CogVideoXBackend, HunyuanVideoBackend,
                                                     MochiBackend)


def supported_pipelines() -> list[str]:
    """Every diffusers pipeline class name sora_nb can drive."""
    return [n for b in BACKENDS for n in (*b.family.pipelines, *b.family.i2v_pipelines)]


def backend_class(pipeline_class_name: str) -> type[DiffusersVideoBackend]:
    """The backend for a pipeline class name; ValueError listing the supported ones."""
    for b in BACKENDS:
        if pipeline_class_name in b.family.pipelines or pipeline_class_name in b.family.i2v_pipelines:
            return b
    raise ValueError(f"unsupported diffusers pipeline {pipeline_class_name!r}: sora_nb drives "
                     f"{', '.join(supported_pipelines())} (families Wan, LTX-Video, CogVideoX, HunyuanVideo, Mochi)")


# -- memory ----------------------------------------------------------------------------------------------
def _modules(pipe: Any) -> dict[str, torch.nn.Module]:
    return {k: v for k, v in pipe.components.items() if isinstance(v, torch.nn.Module)}


def _module_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def _resident_bytes(pipe: Any, device: torch.device) -> int:
    """Bytes of weights already on ``device`` (they are not in ``mem_get_info``'s free memory)."""
    return sum(t.numel() * t.element_size() for m in _modules(pipe).values()
               for t in (*m.parameters(), *m.buffers()) if t.device.type == device.type)


def estimate_memory(backend: DiffusersVideoBackend, request: Request) -> dict[str, Any]:
    """A rough peak-memory estimate for ``request`` on ``backend``'s device, in bytes (see the module
    docstring): ``weights_bytes``, ``activation_bytes``, ``decode_bytes``, ``peak_bytes`` (weights +
    the larger of the other two), and the same with ``offload="model"`` and with ``vae_tiling``."""
    pipe = backend.pipe
    sizes = {k: _module_bytes(m) for k, m in _modules(pipe).items()}
    total = sum(sizes.values())
    largest = max(sizes.values(), default=0)
    if backend.offload == "sequential":
        resident = max((_module_bytes(m) for m in _transformer(pipe).modules() if not list(m.children())), default=0)
    elif backend.offload == "model":
        resident = largest
    else:
        resident = total
    transformer = _transformer(pipe)
    cfg = transformer.config
    elem = torch.finfo(transformer.dtype).bits // 8 if transformer.dtype.is_floating_point else 4
    t, s, pt, p = backend.factors()
    f, h, w = backend.latent_dims(request)
    tokens = math.ceil(f / pt) * (h // p) * (w // p)
    dim = int(cfg.get("num_attention_heads", 1) * cfg.get("attention_head_dim", 64))
    ffn = int(cfg.get("ffn_dim") or 4 * dim)
    batched_cfg = backend.family.key in ("ltx", "cogvideox", "mochi") and request.guidance > 1
    activations = (2 if batched_cfg else 1) * tokens * (8 * dim + ffn) * elem
    vae = pipe.vae
    vcfg = vae.config
    channels = int(vcfg.get("base_dim") or (vcfg.get("decoder_block_out_channels") or vcfg.get("block_out_channels")
                                            or (128,))[0])
    frames = backend.num_frames(request)
    at_once = 4 if backend.family.key == "wan" else frames  # Wan's causal VAE decodes a latent frame at a time
    vae_elem = torch.finfo(vae.dtype).bits // 8 if vae.dtype.is_floating_point else 4

    def decode(tiled: bool) -> int:
        hh, ww = request.height, request.width
        if tiled:
            hh = min(hh, int(getattr(vae, "tile_sample_min_height", hh) or hh))
            ww = min(ww, int(getattr(vae, "tile_sample_min_width", ww) or ww))
        return int(min(frames, at_once) * hh * ww * channels * 8 * vae_elem)

    decode_now = decode(backend.vae_tiling)
    return {
        "weights_bytes": int(resident), "weights_total_bytes": int(total), "largest_component_bytes": int(largest),
        "activation_bytes": int(activations), "decode_bytes": decode_now, "decode_tiled_bytes": decode(True),
        "tokens": int(tokens), "peak_bytes": int(resident + max(activations, decode_now)),
        "peak_offload_bytes": int(largest + max(activations, decode_now)),
        "peak_tiled_bytes": int(resident + max(activations, decode(True))),
        "offload": backend.offload or "", "vae_tiling": backend.vae_tiling,
    }


def check_memory(estimate: dict[str, Any], *, free_bytes: int, resident_bytes: int = 0, margin: float = 0.9) -> None:
    """Raise :class:`NotEnoughMemory` when ``estimate["peak_bytes"]`` (less the weights already on the device,
    ``resident_bytes``) exceeds ``margin`` of ``free_bytes``, saying what offload or tiling would need."""
    need = estimate["peak_bytes"] - resident_bytes
    if need <= margin * free_bytes:
        return
    g = lambda b: f"{b / GiB:.1f} GiB"  # noqa: E731
    parts = (f"weights {g(estimate['weights_bytes'])} + max(activations {g(estimate['activation_bytes'])}, "
             f"decode {g(estimate['decode_bytes'])})")
    tips = []
    if not estimate["offload"]:
        tips.append(f"sora_nb.load(..., offload=\"model\") keeps only the largest component on the GPU: about "
                    f"{g(estimate['peak_offload_bytes'])}")
    if not estimate["vae_tiling"] and estimate["decode_tiled_bytes"] < estimate["decode_bytes"]:
        tips.append(f"vae_tiling=True decodes in tiles: about {g(estimate['peak_tiled_bytes'])}")
    tips.append("fewer frames or a smaller size")
    raise NotEnoughMemory(f"this run needs about {g(estimate['peak_bytes'])} ({parts}; "
                          f"{g(resident_bytes)} of it already loaded) but the GPU has {g(free_bytes)} free. Try: "
                          + "; ".join(tips) + ". (The estimate is rough: memory_check=False in sora_nb.load skips it.)")


# -- loading ---------------------------------------------------------------------------------------------
def _transformer(pipe: Any) -> Any:
    return getattr(pipe, "transformer", None) or getattr(pipe, "transformer_2")


def _default_name(pipe: Any, family: Family) -> str:
    path = getattr(pipe, "name_or_path", None)
    return str(path) if path else f"{family.key} ({type(pipe).__name__})"


def _recordable(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` as params can hold them (JSON): each value as is when JSON takes it, else its repr."""
    out = {}
    for key, value in values.items():
        try:
            out[str(key)] = json.loads(json.dumps(value))  # as a file gives it back: tuples as lists
        except (TypeError, ValueError):
            out[str(key)] = repr(value)
    return out


def _check_call_kwargs(pipe: Any, call_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """Extra pipeline arguments: not ones sora_nb sets, and ones the pipeline accepts."""
    call_kwargs = dict(call_kwargs or {})
    taken = sorted(set(call_kwargs) & RESERVED)
    if taken:
        raise TypeError(f"call_kwargs may not set {', '.join(taken)}: sora_nb sets them from generate()'s keywords")
    accepted = set(inspect.signature(type(pipe).__call__).parameters)
    unknown = sorted(set(call_kwargs) - accepted)
    if unknown:
        raise TypeError(f"call_kwargs: {type(pipe).__name__} takes no {', '.join(unknown)}")
    return call_kwargs


DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
          "float32": torch.float32, "fp32": torch.float32, "float64": torch.float64, "fp64": torch.float64}
BACKEND_OPTIONS = ("name", "fps", "max_frames", "default_size", "sizes", "call_kwargs", "memory_check")
MAX_FRAMES = 10_000
MAX_SIDE = 4096


def _torch_dtype(dtype: Any) -> torch.dtype:
    """A floating-point torch dtype, from itself or its name."""
    if isinstance(dtype, str) and dtype.replace("torch.", "") in DTYPES:
        dtype = DTYPES[dtype.replace("torch.", "")]
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return dtype
    raise ValueError(f"dtype must be a floating-point torch dtype or one of {', '.join(DTYPES)}, got {dtype!r}")


def _torch_device(device: Any) -> torch.device:
    """A torch device this machine has, from itself or its name ("cpu", "cuda", "cuda:1", "mps")."""
    try:
        dev = device if isinstance(device, torch.device) else torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device must be a torch device or a name such as 'cpu', 'cuda' or 'cuda:1', "
                         f"got {device!r}") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {str(dev)!r} is not available: this torch sees no CUDA GPU "
                             "(torch.cuda.is_available() is False); use device='cpu'")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"device {str(dev)!r} is not available: this machine has {count} CUDA GPU(s), "
                             f"cuda:0 to cuda:{count - 1}")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {str(dev)!r} is not available on this machine; use device='cpu'")
    return dev


def _size_pair(name: str, value: Any) -> tuple[int, int]:
    """A (width, height) pair of integers in [1, MAX_SIDE]."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name} must be a (width, height) pair of integers, got {value!r}")
    return check_int(f"{name} width", value[0], 1, MAX_SIDE), check_int(f"{name} height", value[1], 1, MAX_SIDE)


def check_load_options(device: Any, dtype: Any, offload: Any, vae_tiling: Any,
                       options: dict[str, Any]) -> tuple[torch.device | None, torch.dtype | None, dict[str, Any]]:
    """Every loading option, checked before any weight is read or the user's pipeline is touched: the device
    and dtype as torch objects, and the backend's options with their values checked."""
    unknown = sorted(set(options) - set(BACKEND_OPTIONS))
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)} for a diffusers model; its options are device, "
                        f"dtype, offload, vae_tiling, {', '.join(BACKEND_OPTIONS)}")
    if offload not in OFFLOAD:
        raise ValueError(f"offload must be None, 'model' or 'sequential', got {offload!r}")
    check_bool("vae_tiling", vae_tiling)
    out = dict(options)
    if "memory_check" in out:
        check_bool("memory_check", out["memory_check"])
    if out.get("name") is not None:
        out["name"] = check_str("name", out["name"], max_len=200)
    if out.get("fps") is not None:
        out["fps"] = check_fps(out["fps"])
    if out.get("max_frames") is not None:
        out["max_frames"] = check_int("max_frames", out["max_frames"], 1, MAX_FRAMES)
    if out.get("default_size") is not None:
        out["default_size"] = _size_pair("default_size", out["default_size"])
    if out.get("sizes") is not None:
        sizes = out["sizes"]
        if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
            raise TypeError(f"sizes must be a list of (width, height) pairs, got {type(sizes).__name__}")
        out["sizes"] = tuple(_size_pair(f"sizes[{i}]", sz) for i, sz in enumerate(sizes))
    if out.get("call_kwargs") is not None and not isinstance(out["call_kwargs"], dict):
        raise TypeError(f"call_kwargs must be a dict of extra pipeline arguments, got {type(out['call_kwargs']).__name__}")
    device = None if device is None else _torch_device(device)
    if offload is not None:  # offloading streams weights to an accelerator, through accelerate's hooks
        if not torch.cuda.is_available() or (device is not None and device.type != "cuda"):
            raise ValueError(f"offload={offload!r} keeps the weights on the CPU and streams them to a CUDA GPU, "
                             f"and {'this torch sees none' if not torch.cuda.is_available() else f'device is {str(device)!r}'}"
                             ": on the CPU, load without offload (the pipeline runs there whole)")
        _torch_device(device if device is not None else "cuda")
        if importlib.util.find_spec("accelerate") is None:  # diffusers says so only after every weight is read
            raise ImportError(f"offload={offload!r} needs the accelerate package: pip install accelerate (or "
                              "pip install 'sora_nb[gpu]')")
    return device, None if dtype is None else _torch_dtype(dtype), out


def is_pipeline(obj: Any) -> bool:
    """Whether ``obj`` is a diffusers pipeline object."""
    try:
        from diffusers import DiffusionPipeline
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, DiffusionPipeline)


def is_pipeline_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds a saved diffusers pipeline."""
    return (Path(folder) / MODEL_INDEX).is_file()


def looks_like_repo_id(text: str) -> bool:
    """``owner/name`` as on the Hugging Face Hub."""
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", text))


def check_components(pipe: Any) -> None:
    """ValueError naming a component a run needs that the pipeline lacks (None): its VAE, scheduler, text
    encoder(s) and tokenizer(s), and a transformer; else the run would spend every step and fail at the decode, or
    fail inside the pipeline with an AttributeError."""
    parts = pipe.components
    need = ["vae", "scheduler", "text_encoder", "tokenizer"] + [k for k in ("text_encoder_2", "tokenizer_2") if k in parts]
    missing = [k for k in need if parts.get(k) is None]
    if parts.get("transformer") is None and parts.get("transformer_2") is None:
        missing.append("transformer")
    if missing:
        raise ValueError(f"this {type(pipe).__name__} has no {', '.join(missing)} (None): sora_nb runs the whole "
                         "pipeline, so every component it calls must be there")


def from_pipeline(pipe: Any, *, device: Any = None, dtype: Any = None, offload: str | None = None,
                  vae_tiling: bool = False, source: str = "object", **options: Any) -> DiffusersVideoBackend:
    """Wrap a pipeline object (moved to ``device`` / cast to ``dtype`` / offloaded only when asked).

    Every option is checked, and the backend built (which checks the sizes against the pipeline), before the
    pipeline is moved, cast or changed: a refused option leaves the user's pipeline as it was."""
    cls = backend_class(type(pipe).__name__)
    device, dtype, options = check_load_options(device, dtype, offload, vae_tiling, options)
    backend = cls(pipe, offload=offload, vae_tiling=vae_tiling, source=source, **options)
    if dtype is not None:
        pipe.to(dtype=dtype)
    if offload == "model":
        pipe.enable_model_cpu_offload(device=device or "cuda")
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device or "cuda")
    elif device is not None:
        pipe.to(device)
    if vae_tiling:
        pipe.vae.enable_tiling()
    # sora_nb shows its own progress; the user's other settings of the bar stay
    pipe.set_progress_bar_config(**{**(getattr(pipe, "_progress_bar_config", None) or {}), "disable": True})
    return backend


def _class_name(model: str) -> str:
    """The pipeline class of a folder or repo id, from its model_index.json (before any weights)."""
    if Path(model).expanduser().is_dir():
        path = Path(model).expanduser() / MODEL_INDEX
    else:
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(model, MODEL_INDEX))
        except Exception as err:  # offline and not cached, unknown repo, no network...
            raise ValueError(f"could not read {MODEL_INDEX} of {model!r} from the Hugging Face Hub "
                             f"({type(err).__name__}: {err}); check the repo id, or download it first when offline "
                             "(HF_HUB_OFFLINE=1)") from err
    try:
        index = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{str(path)!r} is not a readable {MODEL_INDEX}: {err}") from err
    name = index.get("_class_name") if isinstance(index, dict) else None
    if not isinstance(name, str) or not name:
        raise ValueError(f"{str(path)!r} names no pipeline class (its _class_name is {name!r})")
    return name


def from_pretrained(model: str, *, device: Any = None, dtype: Any = None, offload: str | None = None,
                    vae_tiling: bool = False, **options: Any) -> DiffusersVideoBackend:
    """Load a repo id or a saved pipeline folder (``DiffusionPipeline.from_pretrained``), safetensors weights only.

    The options are checked before any weight is read; a folder or repo whose weights are only pickle files
    (``.bin``, ``.pt``) is refused."""
    from diffusers import DiffusionPipeline

    backend_class(_class_name(model))  # unsupported families fail before downloading weights
    device, dtype, options = check_load_options(device, dtype, offload, vae_tiling, options)
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    local = Path(model).expanduser().is_dir()
    from diffusers.utils import deprecation_utils

    # newer diffusers call it dtype and warn on torch_dtype; older ones know only torch_dtype
    dtype_kw = "dtype" if hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE") else "torch_dtype"
    try:
        pipe = DiffusionPipeline.from_pretrained(str(Path(model).expanduser()) if local else model,
                                                 local_files_only=local, use_safetensors=True, **{dtype_kw: dtype})
    except (OSError, ValueError) as err:
        if "safetensors" not in str(err).lower():
            raise
        raise ValueError(f"{model!r}: sora_nb loads safetensors weights only, never pickle, and a component "
                         f"of this pipeline has none ({str(err).splitlines()[0][:200]}); save it with "
                         "pipe.save_pretrained(folder, safe_serialization=True)") from err
    options.setdefault("name", model)
    backend = from_pipeline(pipe, device=device, offload=offload, vae_tiling=vae_tiling,
                            source="folder" if local else "hub", **options)
    if local:
        backend.folder = str(Path(model).expanduser().resolve())
    return backend


def folder_fingerprint(folder: str | Path) -> str:
    """Every file's path, size and modification time in a pipeline folder, hashed: `sora_nb.load` caches a folder's
    pipeline under it, so weights saved again into the folder load anew (hashing gigabytes of weights would not
    do for a cache key)."""
    import hashlib

    parts = []
    for root, _dirs, files in os.walk(folder):
        for name in sorted(files):
            path = os.path.join(root, name)
            try:
                st = os.stat(path)
            except OSError:  # a dangling link: its own entry
                st = os.lstat(path)
            parts.append(f"{os.path.relpath(path, folder)}\0{st.st_size}\0{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()
