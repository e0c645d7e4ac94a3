"""The sampling loop, written once for every backend, as a generator of per-step events.

``backend.denoise`` yields one :class:`~sora_nb.backend.StepEvent` per step (DiT's
``p_sample_loop_progressive``); :func:`run` drains it, hands every event to the observers (trace
recorder, live preview, progress bar) and checks the cancel flag between steps. A cancelled run
closes the generator and skips the decode.

:func:`flow_matching_steps` is the Euler loop of rectified flow, shared by backends that run their
own model (the embedded one): x_next = x + (sigma_next - sigma) * v and x0 = x - sigma * v; with
``eta`` > 0 part of the noise in x_next is drawn fresh at every step (a stochastic sampler).
"""

from __future__ import annotations

import dataclasses
import math
import threading
import warnings
from typing import Any, Callable, Iterable, Iterator, Protocol

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from .backend import Backend, Limits, StepEvent
from .request import Request


class Cancelled(RuntimeError):
    """Raised by :func:`run` when the cancel flag was set; nothing was decoded."""


class DecodeError(RuntimeError):
    """The steps finished but decoding the latents failed (often out of memory in the VAE).

    Nothing is lost: ``latents`` holds the final ``(frame, channel, y, x)`` latents (on the CPU) and
    ``num_frames`` the frame count, so ``generator.decode(err.latents, err.num_frames)`` can try again
    after freeing memory (or, for a diffusers pipeline, turning on tiled decoding); ``trace`` is the run's trace (set by
    :meth:`sora_nb.Generator.run`) or None.
    """

    def __init__(self, message: str, latents: torch.Tensor, num_frames: int):
        super().__init__(message)
        self.latents = latents
        self.num_frames = num_frames
        self.trace: Any = None


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """What observers learn before the first step."""

    request: Request
    num_frames: int                 # video frames that will be decoded
    fps: float
    model: dict[str, Any]           # backend.describe()
    limits: Limits                  # the model's (frame rules: which video frames a latent frame holds)


class Observer(Protocol):
    """Anything that watches a run; all methods are optional."""

    def on_start(self, info: RunInfo) -> None: ...
    def on_step(self, event: StepEvent) -> None: ...
    def on_end(self, latents: torch.Tensor, cancelled: bool) -> None: ...


def _notify(observers: Iterable[Any], method: str, *args: Any) -> None:
    """Call ``method`` on every observer that has it (the first error is raised: the run stops)."""
    for obs in observers:
        fn = getattr(obs, method, None)
        if fn is not None:
            fn(*args)


def _notify_end(observers: Iterable[Any], latents: torch.Tensor | None, cancelled: bool) -> None:
    """``on_end`` for every observer, each on its own: one observer's error does not keep the others from
    closing, and it does not replace the run's result or its own error (the clip, a DecodeError's latents,
    Cancelled); it is a RuntimeWarning that names the observer."""
    for obs in observers:
        fn = getattr(obs, "on_end", None)
        if fn is None:
            continue
        try:
            fn(latents, cancelled)
        except Exception as err:  # noqa: BLE001 - reported, not raised: see the docstring
            warnings.warn(f"observer {type(obs).__name__}.on_end raised {type(err).__name__}: {err} (the run's "
                          "result is kept)", RuntimeWarning, stacklevel=3)


def flow_matching_steps(
    velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    noise: torch.Tensor,
    scheduler: FlowMatchEulerDiscreteScheduler,
    steps: int,
    *,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
) -> Iterator[StepEvent]:
    """Euler steps of a flow-matching model from pure ``noise``; yields x_t, x0 and x_next per step.

    ``velocity(x, timestep)`` returns the (guided) velocity for latent ``x``; the scheduler object must
    be fresh (it keeps a step index).

    ``eta`` in [0, 1] sets how much fresh noise each step takes (the flow analogue of DDIM's eta). A step
    splits x_t = (1 - sigma) x0 + sigma eps into the model's clean estimate x0 = x - sigma v and the
    noise it implies, eps = x + (1 - sigma) v, and builds
    x_next = (1 - sigma_next) x0 + sigma_next (sqrt(1 - eta^2) eps + eta z), z fresh from ``generator``.
    eta = 0 is the deterministic Euler step (the probability-flow ODE, done by ``scheduler.step``);
    eta = 1 re-noises x0 with new noise at every step, as diffusers' ``stochastic_sampling`` does. The
    last step (sigma_next = 0) returns x0 either way. Same generator state, same result.
    """
    scheduler.set_timesteps(steps, device=noise.device)
    sigmas = scheduler.sigmas.tolist()
    x = noise
    for i, t in enumerate(scheduler.timesteps):
        v = velocity(x, t)
        x0 = x - sigmas[i] * v
        if eta > 0.0:
            s, s_next = sigmas[i], sigmas[i + 1]
            if s_next > 0.0:
                eps = x + (1.0 - s) * v
                z = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x.device, x.dtype)
                x_next = (1.0 - s_next) * x0 + s_next * (math.sqrt(1.0 - eta * eta) * eps + eta * z)
            else:
                x_next = x0
        else:
            x_next = scheduler.step(v, t, x, return_dict=False)[0]
        yield StepEvent(step=i, num_steps=steps, timestep=float(t), sigma=sigmas[i],
                        sigma_next=sigmas[i + 1], latent=x, x0=x0, x_next=x_next)
        x = x_next


def run(
    backend: Backend,
    request: Request,
    *,
    observers: Iterable[Any] = (),
    cancel: threading.Event | None = None,
    decode: bool = True,
) -> tuple[torch.Tensor, np.ndarray | None]:
    """Run every step of ``request`` on ``backend``; return the final latents and decoded frames.

    With ``decode=False`` the frames are None and the caller decodes later with :func:`decode_latents`
    (`Generator.run` decodes only the draw it keeps). Raises :class:`Cancelled` (without decoding) when
    ``cancel`` is set before the first step or between two steps; once the last step has run the clip is
    decoded and returned.

    Observers: an error in ``on_start`` or ``on_step`` stops the run and is raised, after every observer
    whose ``on_start`` ran got ``on_end(latents so far or None, cancelled=True)``; an error in ``on_end`` is a
    warning (see `_notify_end`), so a finished clip is never lost to it.
    """
    observers = list(observers)
    generator = torch.Generator(device="cpu").manual_seed(request.seed)
    num_frames = backend.num_frames(request)
    info = RunInfo(request=request, num_frames=num_frames, fps=backend.limits.fps, model=backend.describe(),
                   limits=backend.limits)
    started: list[Any] = []
    latents = None
    try:
        for obs in observers:
            started.append(obs)
            _notify([obs], "on_start", info)
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled before the first step")
        steps = backend.denoise(request, generator)
        try:
            for event in steps:
                _notify(observers, "on_step", event)
                latents = event.x_next
                if cancel is not None and cancel.is_set() and event.step + 1 < event.num_steps:
                    raise Cancelled(f"cancelled after step {event.step + 1} of {event.num_steps}")
        finally:
            close = getattr(steps, "close", None)
            if close is not None:
                close()
    except BaseException:
        _notify_end(started, latents, True)
        raise
    assert latents is not None, "backend.denoise yielded no step"
    try:
        frames = decode_latents(backend, latents, num_frames) if decode else None
    finally:
        _notify_end(observers, latents, False)
    return latents, frames


def decode_latents(backend: Backend, latents: torch.Tensor, num_frames: int) -> np.ndarray:
    """``backend.decode(latents, num_frames)``; a failure is raised as :class:`DecodeError`, which keeps the
    latents (on the CPU) so that they can be decoded again."""
    try:
        return backend.decode(latents, num_frames)
    except Exception as err:  # keep the latents: the steps are the expensive part
        tiling = (" or with tiled decoding (sora_nb.load(..., vae_tiling=True))"  # only pipelines that have it
                  if getattr(backend, "vae_tiling", True) is False else "")
        raise DecodeError(f"decoding the latents failed ({type(err).__name__}: {err}); the latents are kept in "
                          "this error's .latents (and generator.last_latents): decode them again with "
                          f"generator.decode(err.latents, err.num_frames) after freeing memory{tiling}",
                          latents.detach().cpu(), num_frames) from err
