"""The trace: every denoising step of every frame, as a labelled ``xarray.Dataset``.

:class:`TraceRecorder` is an observer of the sampling loop (the same for every backend). It copies
x_t, the x0 prediction and a cheap RGB preview of x0 at every ``record_every``-th step (the last step
is always kept), as float16 on the CPU, and builds::

    Dimensions: step, frame, channel, y, x   (latent);  py, px, rgb (preview)
    Coordinates: step; timestep(step); sigma(step); frame; time(frame) [s]
    latent  (step, frame, channel, y, x) float16   x_t fed to the model at that step
    x0      (step, frame, channel, y, x) float16   the model's prediction of the clean latent
    preview (step, frame, py, px, rgb)   uint8     RGB view of x0
    attrs: prompt, seed, guidance, steps, model, fps, sora_nb_version, ...  (netCDF-safe)

``frame`` indexes latent frames (video time); ``step`` indexes diffusion time.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import xarray as xr

from .backend import StepEvent
from .sampler import RunInfo


def _netcdf_safe(value: Any) -> Any:
    """Attrs must be str, numbers or 1-D arrays to survive ``to_netcdf``; bools become ints."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (str, int, float, np.integer, np.floating)):
        return value
    if value is None:
        return ""
    return str(value)


def estimate_trace_bytes(num_steps: int, latent_shape: tuple[int, ...], preview_shape: tuple[int, ...],
                         record_every: int = 1) -> int:
    """Bytes a trace will take: two float16 latents and one uint8 preview per recorded step."""
    recorded = len(recorded_steps(num_steps, record_every))
    return recorded * (2 * 2 * int(np.prod(latent_shape)) + int(np.prod(preview_shape)))


def recorded_steps(num_steps: int, record_every: int) -> list[int]:
    """Indices of the steps kept: every ``record_every``-th, and always the last."""
    kept = list(range(0, num_steps, record_every))
    if kept[-1] != num_steps - 1:
        kept.append(num_steps - 1)
    return kept


class TraceRecorder:
    """Observer that records the run into an ``xarray.Dataset`` (``.dataset`` after the run)."""

    def __init__(self, preview: Callable[[torch.Tensor], np.ndarray], record_every: int = 1):
        self.preview = preview
        self.record_every = record_every
        self.dataset: xr.Dataset | None = None
        self._info: RunInfo | None = None
        self._keep: set[int] = set()
        self._rows: list[dict[str, Any]] = []

    def on_start(self, info: RunInfo) -> None:
        self._info = info
        self._keep = set(recorded_steps(info.request.steps, self.record_every))
        self._rows = []

    def on_step(self, event: StepEvent) -> None:
        if event.step not in self._keep:
            return
        self._rows.append({
            "step": event.step,
            "timestep": event.timestep,
            "sigma": event.sigma,
            "latent": event.latent.detach().to("cpu", torch.float16).numpy(),
            "x0": event.x0.detach().to("cpu", torch.float16).numpy(),
            "preview": self.preview(event.x0),
        })

    def on_end(self, latents: torch.Tensor, cancelled: bool) -> None:
        if self._rows:
            self.dataset = self._build(cancelled)

    def _build(self, cancelled: bool) -> xr.Dataset:
        """Stack the recorded rows into the Dataset described in the module docstring."""
        from . import __version__

        info = self._info
        assert info is not None
        rows = self._rows
        latent = np.stack([r["latent"] for r in rows])  # (S, F, C, y, x)
        n_frames = latent.shape[1]
        factor = info.num_frames / n_frames if n_frames else 1.0
        ds = xr.Dataset(
            data_vars={
                "latent": (("step", "frame", "channel", "y", "x"), latent,
                           {"long_name": "x_t, the latent fed to the model"}),
                "x0": (("step", "frame", "channel", "y", "x"), np.stack([r["x0"] for r in rows]),
                       {"long_name": "predicted clean latent x0"}),
                "preview": (("step", "frame", "py", "px", "rgb"), np.stack([r["preview"] for r in rows]),
                            {"long_name": "RGB preview of x0"}),
            },
            coords={
                "step": ("step", np.array([r["step"] for r in rows], dtype=np.int64), {"long_name": "denoising step"}),
                "timestep": ("step", np.array([r["timestep"] for r in rows], dtype=np.float32),
                             {"long_name": "scheduler timestep"}),
                "sigma": ("step", np.array([r["sigma"] for r in rows], dtype=np.float32),
                          {"long_name": "noise level of x_t"}),
                "frame": ("frame", np.arange(n_frames, dtype=np.int64), {"long_name": "latent frame"}),
                "time": ("frame", (np.arange(n_frames) * factor / info.fps).astype(np.float32),
                         {"long_name": "video time of the latent frame's first video frame", "units": "s"}),
                "rgb": ("rgb", np.array(["r", "g", "b"])),
            },
        )
        attrs = dict(info.request.asdict())
        attrs.update(model=info.model.get("name", ""), fps=float(info.fps), num_frames=info.num_frames,
                     sora_nb_version=__version__, cancelled=cancelled)
        ds.attrs = {k: _netcdf_safe(v) for k, v in attrs.items()}
        return ds
