"""Custom widgets whose front ends live in ``widgets/`` (shipped as ``sora_nb._frontend``).

Each widget is an ``anywidget.AnyWidget``: the Python side declares synced traits, the ES module
renders them. Frames are sent once as raw bytes (binary buffers, not base64); playing and scrubbing
then happen in the browser with no kernel round trip.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import anywidget
import numpy as np
import traitlets


COMMON = "_common.js"  # helpers shared by every module (anywidget takes one module string)


def _read(name: str) -> str:
    try:
        return resources.files("sora_nb._frontend").joinpath(name).read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):  # running from a source checkout, not installed
        return (Path(__file__).resolve().parent.parent / "widgets" / name).read_text(encoding="utf-8")


def read_module(name: str) -> str:
    """Source of the front-end module ``name`` (e.g. ``"filmstrip.js"``), with ``_common.js`` in front."""
    return _read(COMMON) + "\n" + _read(name)


class Filmstrip(anywidget.AnyWidget):
    """A clip played and scrubbed in the browser. ``index`` is the frame shown (synced both ways)."""

    _esm = read_module("filmstrip.js")
    frames = traitlets.Bytes(b"").tag(sync=True)
    shape = traitlets.List(traitlets.Int(), default_value=[0, 0, 0]).tag(sync=True)
    fps = traitlets.Float(8.0).tag(sync=True)
    index = traitlets.Int(0).tag(sync=True)
    scale = traitlets.Int(4).tag(sync=True)

    def __init__(self, frames: np.ndarray, fps: float = 8.0, *, scale: int = 4, **kwargs):
        super().__init__(fps=float(fps), scale=int(scale), **kwargs)
        self.set_frames(frames)

    def set_frames(self, frames: np.ndarray) -> None:
        """Send new frames (uint8 ``(T, H, W, 3)``) to the browser in one binary message."""
        frames = np.ascontiguousarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be uint8 of shape (T, H, W, 3); got {frames.dtype} {frames.shape}")
        with self.hold_sync():
            self.frames = frames.tobytes()
            self.shape = list(frames.shape[:3])
            self.index = min(self.index, frames.shape[0] - 1)

    def frame(self) -> np.ndarray:
        """The frame currently shown, as an array (what the browser draws)."""
        t, h, w = self.shape
        return np.frombuffer(self.frames, np.uint8).reshape(t, h, w, 3)[self.index]
