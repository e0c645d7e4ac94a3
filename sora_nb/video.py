"""``Video``: the result of a generation: frames, fps, the parameters that made it, and its trace."""

from __future__ import annotations

import copy
import dataclasses
import html
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from . import media


@dataclasses.dataclass(eq=False)
class Video:
    """A generated clip.

    Attributes:
      frames: uint8 array ``(T, H, W, 3)``.
      fps: frames per second.
      params: every parameter needed to reproduce the clip (prompt, seed, duration, guidance, steps,
        width, height, model, sora_nb version, ...): a copy of the dict given, so a clip's record cannot be
        changed through another's. ``params["fps"]`` is the model's frame rate, which ``reproduce`` checks;
        ``fps`` is the rate the clip plays and saves at (``dataclasses.replace(video, fps=4)`` slows it down).
      trace: ``xarray.Dataset`` of the denoising steps, or None when generated with ``trace=False``.
      latents: the final latent ``(frame, channel, y, x)`` before decoding, kept so a clip can be
        decoded again (e.g. after a decode failure) without re-running the steps.
    """

    frames: np.ndarray
    fps: float
    params: dict[str, Any]
    trace: xr.Dataset | None = None
    latents: torch.Tensor | None = None

    def __post_init__(self) -> None:
        # its own copy, as params are: a clip made from a buffer the caller fills again (or `dataclasses.replace`'s
        # copy, edited) shared its frames
        self.frames = np.array(media.check_frames(self.frames), copy=True)
        self.fps = media.check_fps(self.fps)
        if not isinstance(self.params, dict):
            raise TypeError(f"params must be a dict (prompt, seed, ...), got {type(self.params).__name__}")
        try:
            self.params = copy.deepcopy(self.params)
        except (TypeError, RecursionError) as err:  # a lock, a file handle, a dict holding itself
            raise TypeError(f"params must be plain data (numbers, text, lists, dicts) to be kept and saved with the "
                            f"clip; copying them failed: {err}") from None

    @property
    def num_frames(self) -> int:
        """Number of frames T."""
        return int(self.frames.shape[0])

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.num_frames / self.fps

    def __repr__(self) -> str:
        t, h, w, _ = self.frames.shape
        p = self.params
        return (f"Video({t} frames {w}x{h} @ {self.fps:g} fps, prompt={p.get('prompt')!r}, seed={p.get('seed')}, "
                f"guidance={p.get('guidance')}, steps={p.get('steps')}, model={p.get('model')!r})")

    def to_html(self, *, height: int = 256) -> str:
        """HTML that plays the clip in a loop, ``height`` pixels high (an integer in [1, 4096]), with its prompt
        and seed as a caption. A clip whose HTML would pass ``media.MAX_HTML_MB`` is refused: use
        :meth:`filmstrip` or :meth:`save`."""
        caption = f"{self.params.get('prompt', '')} · seed {self.params.get('seed')}"
        return media.video_html(self.frames, self.fps, height=height, title=caption)

    def _repr_html_(self) -> str:
        try:
            return self.to_html()
        except (RuntimeError, OSError, ValueError) as err:  # a note in the output, not a traceback (ffmpeg's too)
            return f"<pre>{html.escape(repr(self))}\n(not shown: {html.escape(str(err))})</pre>"

    def show(self, *, height: int = 256) -> None:
        """Display the clip in a notebook."""
        from IPython.display import HTML, display

        display(HTML(self.to_html(height=height)))

    def filmstrip(self, *, scale: int | None = None, max_payload_mb: float = 64.0):
        """A widget that plays and scrubs the frames in the browser (no kernel round trip); `frontend.Filmstrip`:
        ``scale`` None shows a frame about 256 pixels across; more than ``max_payload_mb`` of frames is refused."""
        from .frontend import Filmstrip

        return Filmstrip(self.frames, self.fps, scale=scale, max_payload_mb=max_payload_mb)

    def save(self, path: str | os.PathLike) -> Path:
        """Write an mp4 / webm / gif (by extension) atomically; mp4 and webm carry ``params``.

        An existing file of that name is replaced (keeping its mode) only once the new one is complete; a failed
        write leaves it as it was. mp4 and webm need an even width and height; a .gif at most 50 fps."""
        return media.write_video(path, self.frames, self.fps, params=self.params)
