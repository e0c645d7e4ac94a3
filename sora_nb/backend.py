"""The backend protocol: the only place that knows which model is behind a generator.

A backend knows how to encode a prompt, run the denoising steps (yielding one :class:`StepEvent`
per step) and decode latents into frames. Everything else in sora_nb (requests, traces, previews,
progress, cancel, widgets, export) is written once, against this protocol, and never branches on
the model family.

Latents are always handed out as ``(frame, channel, y, x)`` float tensors (batch of one, squeezed),
whatever layout the model uses internally.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterator, Protocol, runtime_checkable

import numpy as np
import torch

from .request import Request


@dataclasses.dataclass(frozen=True)
class Limits:
    """What a model supports; requests are validated against it before any work is done."""

    name: str                                  # shown in params["model"] and error messages
    fps: float                                 # native frame rate of the decoded video
    max_duration: float                        # seconds
    sizes: tuple[tuple[int, int], ...]         # supported (width, height) pairs
    default_size: tuple[int, int]
    max_steps: int = 1000
    min_steps: int = 1                         # fewest denoising steps (Mochi's schedule needs 2)
    max_guidance: float = 50.0
    default_guidance: float = 5.0              # the guidance a request gets when it names none
    max_eta: float = 0.0                       # sampler noise per step (see Request.eta); 0: deterministic only
    default_eta: float = 0.0                   # the eta a request gets when it names none
    max_prompt_chars: int = 1000
    temporal_factor: int = 1                   # video frames per latent frame (4 for a 4x temporal VAE)
    family: str = ""                           # model family named in constraint messages ("Wan", "LTX-Video")
    frame_step: int = 1                        # valid frame counts are frame_step * k + 1 (1: any count)
    size_multiple: int = 0                     # >0: any width/height that is a multiple of it (sizes are
                                               # suggestions); 0: only the pairs in ``sizes``
    max_side: int = 8192                       # largest width or height when size_multiple > 0
    image_input: bool = False                  # image-to-video: ``image=`` is required
    max_retries: int = 0                       # redraws allowed of a draw that fails the model's check (Request.retries);
                                               # 0: the model does not judge its draws (``judge_draw``)
    default_retries: int = 0                   # the retries a request gets when it names none
    redraw_share: tuple[float, ...] = (1.0,)  # each redraw's steps as a share of the request's, the first
                                               # redraw's first; the last share repeats (`redraw_steps`)

    def redraw_steps(self, steps: int, redraw: int = 1) -> int:
        """The denoising steps of redraw ``redraw`` (1: the first; `Generator.run`) of a request for ``steps``:
        ``redraw_share[redraw - 1]`` of them (the last share for later redraws), rounded, at least 1."""
        if isinstance(redraw, bool) or not isinstance(redraw, int) or redraw < 1:
            raise ValueError(f"redraw must be an integer >= 1 (1: the first redraw), got {redraw!r}")
        share = self.redraw_share[min(redraw, len(self.redraw_share)) - 1]
        return max(self.min_steps, round(steps * share))

    # -- frame counts ------------------------------------------------------------------------------
    @property
    def frame_rule(self) -> str:
        """The frame-count rule in words, e.g. ``"4k+1"`` (``"any count"`` when frame_step is 1)."""
        return "any count" if self.frame_step <= 1 else f"{self.frame_step}k+1"

    @property
    def max_frames(self) -> int:
        """The largest valid frame count within ``max_duration``."""
        n = max(1, math.floor(self.max_duration * self.fps + 1e-6))
        return self.snap_frames(n, up=False)

    def valid_frames(self, n: int) -> bool:
        """Whether ``n`` frames satisfy the frame rule (``frame_step * k + 1``) and the maximum."""
        return 1 <= n <= self.max_frames and (self.frame_step <= 1 or (n - 1) % self.frame_step == 0)

    def snap_frames(self, n: int, *, up: bool | None = None) -> int:
        """The valid count nearest ``n`` (ties go up); ``up=True``/``False`` rounds up/down instead."""
        s = max(1, self.frame_step)
        lo = 1 + (max(n, 1) - 1) // s * s
        hi = lo if lo == n else lo + s
        if up is None:
            return hi if hi - n <= n - lo else lo
        return hi if up else lo

    def nearest_frames(self, n: int) -> list[int]:
        """The valid counts around ``n`` (one or two), for error messages."""
        lo, hi = self.snap_frames(n, up=False), self.snap_frames(n, up=True)
        out = [c for c in dict.fromkeys((lo, hi)) if 1 <= c <= self.max_frames]
        return out or [self.max_frames]

    def latent_frame_start(self, k: int) -> int:
        """The first video frame that latent frame ``k`` holds. A causal video autoencoder (frame counts
        ``frame_step * k + 1``: Wan, LTX-Video, CogVideoX, HunyuanVideo, Mochi) keeps video frame 0 alone in
        latent frame 0 and then ``temporal_factor`` frames per latent frame, so latent frame k >= 1 starts at
        ``(k - 1) * temporal_factor + 1``; otherwise (the embedded model) latent frame k holds frames
        ``k * temporal_factor`` onwards."""
        t = max(1, self.temporal_factor)
        if self.frame_step > 1:
            return 0 if k <= 0 else (k - 1) * t + 1
        return k * t

    def frames_for(self, duration: float) -> int:
        """Frames for ``duration`` seconds: ``round(duration * fps)``, moved to the nearest valid count."""
        n = max(1, round(duration * self.fps))
        return min(self.snap_frames(n), self.max_frames)

    # -- sizes ----------------------------------------------------------------------------------------
    def nearest_sides(self, v: int) -> list[int]:
        """Multiples of ``size_multiple`` around ``v`` (one or two), for error messages."""
        m = self.size_multiple
        lo, hi = max(m, v // m * m), max(m, -(-v // m) * m)
        return [c for c in dict.fromkeys((lo, hi)) if c <= self.max_side] or [self.max_side // m * m]


@dataclasses.dataclass
class StepEvent:
    """One denoising step, as seen by every observer (trace recorder, preview, progress, cancel).

    ``latent`` is x_t, the input of the model at this step; ``x0`` is the model's prediction of the
    clean latent. Both are ``(frame, channel, y, x)`` tensors on the backend's device; observers
    copy what they keep.
    """

    step: int            # 0-based index of the step
    num_steps: int
    timestep: float      # the scheduler's timestep fed to the model
    sigma: float         # noise level of ``latent`` (flow matching: x_t = (1 - sigma) x0 + sigma eps)
    sigma_next: float    # noise level after this step
    latent: torch.Tensor
    x0: torch.Tensor
    x_next: torch.Tensor
    guidance: float | None = None  # the guidance this step used, where a backend varies it by step (None: the request's)


@runtime_checkable
class Backend(Protocol):
    """What a model must provide to be driven by :func:`sora_nb.sampler.run`."""

    limits: Limits

    def describe(self) -> dict[str, Any]:
        """Model facts recorded in ``Video.params`` (name, revision, weights hash, ...)."""

    def num_frames(self, request: Request) -> int:
        """Number of video frames the request asks for."""

    def denoise(self, request: Request, generator: torch.Generator) -> Iterator[StepEvent]:
        """Encode the prompt, draw the initial noise from ``generator`` and yield every step.

        Closing the iterator early (cancel) must stop the work without decoding.
        """

    def decode(self, latents: torch.Tensor, num_frames: int) -> np.ndarray:
        """Final ``(frame, channel, y, x)`` latents to uint8 frames ``(T, H, W, 3)``."""

    def preview(self, x0: torch.Tensor) -> np.ndarray:
        """A cheap uint8 RGB view ``(frame, py, px, 3)`` of a latent (no full decode)."""

    # Optional (the embedded model with a layout latent has it; ``limits.max_retries`` > 0 says so):
    #   judge_draw(latents, prompt) -> (breaks, score, ok): one draw's final ``(frame, channel, y, x)`` latents
    #   judged by the model itself: how often its layout breaks from one latent frame to the next, a score (higher
    #   is better, or None) and whether it is good enough; `Generator.run` redraws a draw that is not ok up to
    #   ``request.retries`` times and keeps the one with the fewest breaks, then the highest score.
