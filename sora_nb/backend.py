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
    max_guidance: float = 50.0
    max_prompt_chars: int = 1000
    temporal_factor: int = 1                   # video frames per latent frame (4 for a 4x temporal VAE)


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
