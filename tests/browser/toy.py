"""A toy backend whose denoising visibly changes at every step, for inspector tests.

The embedded model's untrained placeholder predicts a zero velocity (its output layer starts at
zero, as in DiT), so its x_t and x0 never change across steps: fine for schema tests, useless for
checking that scrubbing shows something new. This backend implements the same Backend protocol
(:mod:`sora_nb.backend`) with a hand-written "model": its x0 prediction is a disc moving right,
blurred in proportion to the noise level (coarse first, fine last) and with a contrast that grows
with guidance, and it runs through the real sampler loop and :class:`~sora_nb.trace.TraceRecorder`.

    gen = toy_generator()
    video = gen.generate("a disc", seed=0, steps=8, guidance=5.0)   # a sora_nb.Video with a trace
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from sora_nb.api import Generator
from sora_nb.backend import Limits, StepEvent
from sora_nb.request import Request
from sora_nb.sampler import flow_matching_steps

CHANNELS = 4
LATENT = 16                      # latent y and x
SPATIAL, TEMPORAL = 2, 2         # video pixels per latent cell, video frames per latent frame
RGB_MAP = np.array([[0.9, 0.1, -0.2],   # (channels + 1, 3): disc -> warm
                    [-0.1, 0.6, 0.1],   # horizontal stripes -> green
                    [0.0, 0.2, 0.8],    # background gradient -> blue
                    [0.3, -0.3, 0.3],
                    [-0.3, -0.4, -0.2]], dtype=np.float32)


def _blur(x: torch.Tensor, radius: float) -> torch.Tensor:
    """Gaussian blur of (..., y, x) with standard deviation ``radius`` latent pixels (0: none)."""
    if radius < 0.3:
        return x
    k = int(math.ceil(3 * radius))
    t = torch.arange(-k, k + 1, dtype=x.dtype)
    g = torch.exp(-0.5 * (t / radius) ** 2)
    g = g / g.sum()
    flat = x.reshape(-1, 1, *x.shape[-2:])
    flat = torch.nn.functional.conv2d(torch.nn.functional.pad(flat, (k, k, 0, 0), mode="replicate"), g.view(1, 1, 1, -1))
    flat = torch.nn.functional.conv2d(torch.nn.functional.pad(flat, (0, 0, k, k), mode="replicate"), g.view(1, 1, -1, 1))
    return flat.reshape(x.shape)


class ToyBackend:
    """Backend protocol with a closed-form x0 prediction (see the module docstring)."""

    limits = Limits(name="toy", fps=8.0, max_duration=4.0, sizes=((LATENT * SPATIAL, LATENT * SPATIAL),),
                    default_size=(LATENT * SPATIAL, LATENT * SPATIAL), temporal_factor=TEMPORAL)

    def describe(self) -> dict[str, Any]:
        return {"name": "toy"}

    def num_frames(self, request: Request) -> int:
        return max(1, round(request.duration * self.limits.fps))

    def latent_shape(self, request: Request) -> tuple[int, int, int, int]:
        """(C, F, h, w), like the embedded model."""
        return (CHANNELS, math.ceil(self.num_frames(request) / TEMPORAL), LATENT, LATENT)

    def clean(self, num_latent_frames: int, sigma: float, guidance: float) -> torch.Tensor:
        """The x0 prediction at noise level ``sigma``: (C, F, h, w)."""
        yy, xx = torch.meshgrid(torch.arange(LATENT, dtype=torch.float32), torch.arange(LATENT, dtype=torch.float32),
                                indexing="ij")
        frames = []
        for f in range(num_latent_frames):
            cx = 3.0 + f * (LATENT - 6.0) / max(1, num_latent_frames - 1)
            disc = ((xx - cx) ** 2 + (yy - LATENT / 2) ** 2 < 9.0).float()
            frames.append(torch.stack([disc * (0.3 + 0.14 * guidance), 0.4 * torch.cos(yy / 2.5 + f),
                                       yy / LATENT - 0.5, 0.3 * torch.sin(xx / 2.0)]))
        x0 = torch.stack(frames, dim=1)  # (C, F, h, w)
        return _blur(x0, 4.0 * sigma)

    def denoise(self, request: Request, generator: torch.Generator) -> Iterator[StepEvent]:
        c, f, h, w = self.latent_shape(request)
        noise = torch.randn((1, c, f, h, w), generator=generator, dtype=torch.float32)

        def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            sigma = max(float(t) / 1000.0, 1e-3)
            return (x - self.clean(f, sigma, request.guidance)[None]) / sigma

        scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
        for ev in flow_matching_steps(velocity, noise, scheduler, request.steps):
            yield StepEvent(step=ev.step, num_steps=ev.num_steps, timestep=ev.timestep, sigma=ev.sigma,
                            sigma_next=ev.sigma_next, latent=ev.latent[0].transpose(0, 1),
                            x0=ev.x0[0].transpose(0, 1), x_next=ev.x_next[0].transpose(0, 1))

    def decode(self, latents: torch.Tensor, num_frames: int) -> np.ndarray:
        rgb = self.preview(latents)  # (F, h, w, 3)
        rgb = rgb.repeat(SPATIAL, axis=1).repeat(SPATIAL, axis=2).repeat(TEMPORAL, axis=0)
        return np.ascontiguousarray(rgb[:num_frames])

    def preview(self, x0: torch.Tensor) -> np.ndarray:
        z = x0.detach().float().cpu().permute(0, 2, 3, 1).numpy()  # (F, h, w, C)
        rgb = z @ RGB_MAP[:-1] + RGB_MAP[-1]
        return np.clip(np.rint((rgb + 1.0) * 127.5), 0, 255).astype(np.uint8)


def toy_generator() -> Generator:
    """A :class:`sora_nb.Generator` driving :class:`ToyBackend`."""
    return Generator(ToyBackend())
