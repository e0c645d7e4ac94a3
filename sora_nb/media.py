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
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

VIDEO_FORMATS = {".mp4": "h264", ".webm": "vp9", ".gif": "gif"}


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
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    p = Path(path).expanduser()
    if p.suffix.lower() not in VIDEO_FORMATS:
        raise ValueError(f"path must end in one of {', '.join(VIDEO_FORMATS)}; got {str(p)!r}")
    if not p.parent.is_dir():
        raise ValueError(f"path: folder {str(p.parent)!r} does not exist (create it first)")
    if p.is_dir():
        raise ValueError(f"path {str(p)!r} is a folder, not a file name")
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

    target = check_output_path(path)
    frames = check_frames(frames)
    if not (np.isfinite(fps) and 0 < fps <= 240):
        raise ValueError(f"fps must be > 0 and <= 240, got {fps}")
    ffmpeg_exe()
    suffix = target.suffix.lower()
    args: list[str] = []
    if params is not None and suffix != ".gif":
        args = ["-metadata", "comment=" + json.dumps(params, sort_keys=True, default=str)]
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    try:
        kwargs: dict[str, Any] = {"fps": fps, "codec": VIDEO_FORMATS[suffix], "ffmpeg_args": args}
        if suffix == ".mp4":
            kwargs["crf"] = 18  # near-lossless: small clips, faithful colours
        mediapy.write_video(tmp, frames, **kwargs)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def read_video(path: str | os.PathLike) -> np.ndarray:
    """Frames of a video file as uint8 (T, H, W, 3)."""
    import mediapy

    ffmpeg_exe()
    return np.asarray(mediapy.read_video(str(path)))


def read_params(path: str | os.PathLike) -> dict[str, Any]:
    """The generation parameters stored in a clip written by :func:`write_video` ({} if none)."""
    out = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise ValueError(f"path {str(path)!r} is not a readable video: {out.stderr.strip()[:200]}")
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
