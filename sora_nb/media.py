"""Video files and display, through mediapy and the ffmpeg that ``imageio-ffmpeg`` ships.

- :func:`ffmpeg_exe` finds ffmpeg (``SORA_NB_FFMPEG`` overrides) and points mediapy at it.
- :func:`write_video` writes mp4 / webm / gif by extension, atomically: the clip is encoded to a
  temporary file beside the target and renamed over it only when complete, so a failed write never
  leaves a half-written file. mp4 and webm files carry the generation parameters as JSON in their
  ``comment`` metadata; :func:`read_params` reads them back.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from ._checks import check_float, check_path
from ._files import atomic_file

VIDEO_FORMATS = {".mp4": "h264", ".webm": "vp9", ".gif": "gif"}
MAX_FPS = 240.0


class FFmpegNotFoundError(RuntimeError):
    """No usable ffmpeg binary was found."""


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary, configured into mediapy; raises FFmpegNotFoundError if none."""
    import mediapy

    path = os.environ.get("SORA_NB_FFMPEG")
    if not path:
        try:
            import imageio_ffmpeg

            path = imageio_ffmpeg.get_ffmpeg_exe()
        except (ImportError, RuntimeError) as err:
            raise FFmpegNotFoundError(
                "ffmpeg not found: install imageio-ffmpeg==0.7.0 (pip install 'imageio-ffmpeg==0.7.0') "
                "or set SORA_NB_FFMPEG to an ffmpeg binary") from err
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise FFmpegNotFoundError(f"ffmpeg not found at {path!r} (from SORA_NB_FFMPEG or imageio-ffmpeg); "
                                  "set SORA_NB_FFMPEG to an executable ffmpeg binary")
    mediapy.set_ffmpeg(path)
    return path


def check_output_path(path: str | os.PathLike) -> Path:
    """A writable video path: known extension, existing folder. Raises ValueError/TypeError."""
    p = check_path("path", path)
    if p.suffix.lower() not in VIDEO_FORMATS:
        raise ValueError(f"path must end in one of {', '.join(VIDEO_FORMATS)}; got {str(p)!r}")
    if not p.parent.is_dir():
        raise ValueError(f"path: folder {str(p.parent)!r} does not exist (create it first)")
    if p.is_dir():
        raise ValueError(f"path {str(p)!r} is a folder, not a file name")
    if not os.access(p.parent, os.W_OK | os.X_OK):
        raise ValueError(f"path: folder {str(p.parent)!r} is not writable (choose another folder)")
    return p


def check_fps(fps: Any, unit: str = "") -> float:
    """Frames per second of a clip (or a player's speed, with its ``unit``): a number in (0, 240]."""
    return check_float("fps", fps, 0.0, MAX_FPS, lo_open=True, unit=unit)


def check_input_path(path: Any) -> Path:
    """A video file to read: an existing file. Raises TypeError/ValueError."""
    p = check_path("path", path)
    if not p.is_file():
        raise ValueError(f"path {str(p)!r} is not a readable video: " + ("it is a folder" if p.is_dir() else "no such file"))
    return p


def check_frames(frames: Any) -> np.ndarray:
    """uint8 frames of shape (T, H, W, 3)."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"frames must be uint8 of shape (T, H, W, 3) with T >= 1; got {frames.dtype} {frames.shape}")
    return frames


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float, *,
                params: dict[str, Any] | None = None) -> Path:
    """Write ``frames`` to ``path`` (mp4/webm/gif by extension) atomically; return the path."""
    import mediapy

    given = check_output_path(path)
    target = Path(os.path.realpath(given)) if given.is_symlink() else given  # write through a link, keep the link
    frames = check_frames(frames)
    fps = check_fps(fps)
    ffmpeg_exe()
    suffix = target.suffix.lower()
    args: list[str] = []
    if params is not None and suffix != ".gif":
        args = ["-metadata", "comment=" + json.dumps(params, sort_keys=True, default=str)]
    kwargs: dict[str, Any] = {"fps": fps, "codec": VIDEO_FORMATS[suffix], "ffmpeg_args": args}
    if suffix == ".mp4":
        kwargs["crf"] = 18  # near-lossless: small clips, faithful colours
    with atomic_file(target, suffix=suffix, name=given) as tmp:
        mediapy.write_video(tmp, frames, **kwargs)
    return given


def ffmpeg_reason(text: str) -> str:
    """ffmpeg's last "what: why" line from its output, without its banner or ``[demuxer @ 0x...]`` tags."""
    lines = [re.sub(r"^\[[^\]]*\]\s*", "", line.strip()) for line in text.splitlines() if line.strip()]
    said = [line for line in lines if ": " in line and not line.startswith("ffmpeg version")]
    return (said or lines or ["ffmpeg gave no reason"])[-1][:200]


def read_video(path: str | os.PathLike) -> np.ndarray:
    """Frames of a video file as uint8 (T, H, W, 3)."""
    import mediapy

    path = check_input_path(path)
    ffmpeg_exe()
    try:
        return np.asarray(mediapy.read_video(str(path)))
    except RuntimeError as err:
        raise ValueError(f"path {str(path)!r} is not a readable video: {ffmpeg_reason(str(err))}") from err


def read_params(path: str | os.PathLike) -> dict[str, Any]:
    """The generation parameters stored in a clip written by :func:`write_video` ({} if none)."""
    path = check_input_path(path)
    out = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise ValueError(f"path {str(path)!r} is not a readable video: {ffmpeg_reason(out.stderr)}")
    lines = out.stdout.replace("\\\n", "\n").splitlines()
    for i, line in enumerate(lines):
        if line.lower().startswith("comment="):
            text = "\n".join([line.split("=", 1)[1]] + lines[i + 1:])
            try:
                return json.JSONDecoder().raw_decode(text.replace("\\=", "=").replace("\\;", ";")
                                                     .replace("\\#", "#").replace("\\\\", "\\"))[0]
            except ValueError:
                return {}
    return {}


def video_html(frames: np.ndarray, fps: float, *, height: int = 256, title: str | None = None) -> str:
    """An HTML ``<video>`` element (inline mp4) that plays and loops ``frames``, scaled to ``height``."""
    import mediapy

    ffmpeg_exe()
    return mediapy.show_video(check_frames(frames), fps=fps, height=height, title=title, return_html=True)
