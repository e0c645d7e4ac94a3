"""Display helpers that need no ffmpeg: animated GIFs in HTML, and frame strips as arrays."""

from __future__ import annotations

import base64
import html
import io
import math
import numbers

import numpy as np

from .vision import as_frames


def _check_fps_scale(fps, scale) -> None:
    """Raise ValueError naming fps (a finite number > 0, frames per second) or scale (an int >= 1)."""
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a finite number > 0 (frames per second), got {fps!r}")
    if isinstance(scale, bool) or not isinstance(scale, numbers.Integral) or scale < 1:
        raise ValueError(f"scale must be an int >= 1 (each pixel drawn scale x scale), got {scale!r}")


def gif_bytes(frames: np.ndarray, fps: int = 8, scale: int = 3) -> bytes:
    """An endlessly looping animated GIF of (T, H, W, 3) frames (uint8, or floats in [0, 1] as
    `sora_nb.world.score` takes them), enlarged scale times (an int >= 1); fps a finite number > 0 (a GIF holds
    frame times in hundredths of a second, at least 20 ms)."""
    from PIL import Image

    _check_fps_scale(fps, scale)
    scale = int(scale)
    big = np.repeat(np.repeat(as_frames(frames, 1), scale, axis=1), scale, axis=2)
    images = [Image.fromarray(f) for f in big]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], loop=0,
                   duration=max(int(round(1000 / fps)), 20))
    return buf.getvalue()


def gif_html(frames: np.ndarray, fps: int = 8, title: str = "", scale: int = 3) -> str:
    """An <img> of the clip as a GIF, with its title underneath."""
    frames = as_frames(frames, 1)
    data = base64.b64encode(gif_bytes(frames, fps, scale)).decode("ascii")
    w = frames.shape[2] * scale
    cap = f'<div style="width:{w}px;font-size:11px;line-height:1.2">{html.escape(title)}</div>' if title else ""
    style = "display:inline-block;margin:4px;vertical-align:top"
    return f'<div style="{style}"><img src="data:image/gif;base64,{data}">{cap}</div>'


def grid_html(clips, fps: int = 8, scale: int = 2) -> str:
    """Clips (a Clip, or a list of Clip objects and (frames, title) pairs) side by side, wrapping like text. A
    Clip plays at its own fps, a pair at ``fps`` (a finite number > 0); ``scale`` (an int >= 1) enlarges each."""
    _check_fps_scale(fps, scale)
    if hasattr(clips, "frames"):
        clips = [clips]
    cells = []
    for i, c in enumerate(clips):
        if hasattr(c, "frames"):
            frames, title, rate = c.frames, c.caption, c.fps
        elif isinstance(c, (tuple, list)) and len(c) == 2 and (c[1] is None or isinstance(c[1], str)):
            frames, title, rate = c[0], c[1] or "", fps
        else:
            raise TypeError(f"clips[{i}] must be a Clip or a (frames, title) pair with title a str, got "
                            f"{type(c).__name__} {c!r:.60}")
        cells.append(gif_html(frames, rate, title, scale))
    return "<div>" + "".join(cells) + "</div>"


def show(clips, fps: int = 8, scale: int = 2):
    """Display clips as looping GIFs with captions in a notebook."""
    from IPython.display import HTML, display

    if hasattr(clips, "frames"):
        clips = [clips]
    display(HTML(grid_html(clips, fps, scale)))


def strip(frames: np.ndarray, n: int = 4, gap: int = 2) -> np.ndarray:
    """n evenly spaced frames side by side as one uint8 (H, n * (W + gap) - gap, 3) image (frames: uint8, or
    floats in [0, 1] as `sora_nb.world.score` takes them)."""
    frames = as_frames(frames, 1)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an int >= 1 (frames shown), got {n!r}")
    if isinstance(gap, bool) or not isinstance(gap, (int, np.integer)) or gap < 0:
        raise ValueError(f"gap must be an int >= 0 (pixels between frames), got {gap!r}")
    idx = np.linspace(0, len(frames) - 1, n).round().astype(int)
    h, w = frames.shape[1:3]
    out = np.full((h, n * (w + gap) - gap, 3), 255, np.uint8)
    for i, k in enumerate(idx):
        out[:, i * (w + gap):i * (w + gap) + w] = frames[k]
    return out
