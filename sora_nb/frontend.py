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

from ._checks import MB, check_float, check_int
from .media import check_fps as clip_fps

COMMON = "_common.js"  # helpers shared by every module (anywidget takes one module string)
MAX_SCALE = 64         # CSS pixels per image pixel a player may use


def check_scale(value: object) -> int:
    """A player's ``scale``: an integer in [1, MAX_SCALE]."""
    return check_int("scale", value, 1, MAX_SCALE)


def check_fps(value: object) -> float:
    """A player's ``fps`` (frames or steps per second): a clip's range, `media.check_fps`."""
    return clip_fps(value, unit="per second")


def as_trait(check, value: object):
    """``check(value)`` for a trait's validator: its message, as the ``TraitError`` an assignment raises."""
    try:
        return check(value)
    except (TypeError, ValueError) as err:
        raise traitlets.TraitError(str(err)) from None


def _read(name: str) -> str:
    try:
        return resources.files("sora_nb._frontend").joinpath(name).read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        source = Path(__file__).resolve().parent.parent / "widgets" / name  # a source checkout, not installed
        if source.is_file():
            return source.read_text(encoding="utf-8")
        raise FileNotFoundError(f"the widget module {name!r} is missing from the installed package "
                                f"(sora_nb/_frontend/{name}); reinstall sora_nb") from None


def read_module(name: str) -> str:
    """Source of the front-end module ``name`` (e.g. ``"filmstrip.js"``), with ``_common.js`` in front."""
    return _read(COMMON) + "\n" + _read(name)


class Player:
    """Mixed into a widget with ``fps`` and ``scale`` traits: a value assigned later is checked as the
    constructor checks it (a ``TraitError`` with that message)."""

    @traitlets.validate("fps")
    def _valid_fps(self, proposal):
        return as_trait(check_fps, proposal["value"])

    @traitlets.validate("scale")
    def _valid_scale(self, proposal):
        return as_trait(check_scale, proposal["value"])


class Filmstrip(Player, anywidget.AnyWidget):
    """A clip played and scrubbed in the browser. ``index`` is the frame shown (synced both ways).

    ``scale`` (CSS pixels per pixel) defaults to what shows the frame about 256 pixels across (4 for the embedded
    model's 64x64). The frames are sent raw: more than ``max_payload_mb`` (a pipeline's 480p clip is ~100 MB) is
    refused, so a notebook is not sent what a browser tab struggles to hold; pass fewer or smaller frames."""

    _esm = read_module("filmstrip.js")
    frames = traitlets.Bytes(b"").tag(sync=True)
    shape = traitlets.List(traitlets.Int(), default_value=[0, 0, 0]).tag(sync=True)
    fps = traitlets.Float(8.0).tag(sync=True)
    index = traitlets.Int(0).tag(sync=True)
    scale = traitlets.Int(4).tag(sync=True)

    def __init__(self, frames: np.ndarray, fps: float = 8.0, *, scale: int | None = None,
                 max_payload_mb: float = 64.0, index: int = 0, **kwargs):
        fps = check_fps(fps)
        scale = None if scale is None else check_scale(scale)
        self._max_payload_mb = check_float("max_payload_mb", max_payload_mb, 0.0, 1e6, lo_open=True, unit="MB")
        frames = self._checked(frames)  # before the widget exists
        if scale is None:
            scale = min(MAX_SCALE, max(1, round(256 / max(frames.shape[1:3]))))
        super().__init__(fps=fps, scale=scale, **kwargs)
        self.set_frames(frames)
        self.index = index  # (checked against the frames just sent)

    def _checked(self, frames: np.ndarray) -> np.ndarray:
        frames = np.ascontiguousarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
            raise ValueError(f"frames must be uint8 of shape (T, H, W, 3) with T, H and W at least 1 (the browser "
                             f"draws each frame as an image); got {frames.dtype} {frames.shape}")
        if frames.nbytes > self._max_payload_mb * MB:
            raise ValueError(f"the filmstrip would send {frames.nbytes / MB:.3g} MB of frames to the browser (limit "
                             f"max_payload_mb={self._max_payload_mb:g}): pass fewer or smaller frames, e.g. "
                             "Filmstrip(video.frames[:, ::2, ::2], video.fps), or raise max_payload_mb")
        return frames

    def set_frames(self, frames: np.ndarray) -> None:
        """Send new frames (uint8 ``(T, H, W, 3)``, at most ``max_payload_mb``) to the browser in one binary message."""
        frames = self._checked(frames)
        with self.hold_sync():
            self.frames = frames.tobytes()
            self.shape = list(frames.shape[:3])
            self.index = min(self.index, frames.shape[0] - 1)

    @traitlets.validate("index")
    def _valid_index(self, proposal):
        t = self.shape[0]
        return as_trait(lambda v: check_int("index", v, 0, max(0, t - 1)), proposal["value"])

    def frame(self) -> np.ndarray:
        """The frame currently shown, as an array (what the browser draws)."""
        t, h, w = self.shape
        return np.frombuffer(self.frames, np.uint8).reshape(t, h, w, 3)[self.index]
