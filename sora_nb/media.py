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
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from ._checks import check_float, check_path
from ._files import atomic_file

VIDEO_FORMATS = {".mp4": "h264", ".webm": "vp9", ".gif": "gif"}
MIN_FPS = 0.1        # ffmpeg's mp4 muxer fails below ~1e-5 fps and webm reads back as 0 fps
MAX_FPS = 240.0
MAX_GIF_FPS = 50.0   # GIF stores delays in hundredths of a second and browsers slow delays under 2/100 s
MAX_PARAMS_BYTES = 64 * 1024  # the JSON of params in a file's metadata (ffmpeg takes it on its command line)
MAX_HTML_MB = 16.0   # inline clips larger than this are not embedded in a notebook (filmstrip() or save())


class FFmpegNotFoundError(RuntimeError):
    """No usable ffmpeg binary was found."""


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary, configured into mediapy; raises FFmpegNotFoundError if none."""
    import mediapy

    path = os.environ.get("SORA_NB_FFMPEG")
    source = "SORA_NB_FFMPEG"
    if not path:
        source = "IMAGEIO_FFMPEG_EXE" if os.environ.get("IMAGEIO_FFMPEG_EXE") else "imageio-ffmpeg"
        try:
            import imageio_ffmpeg

            path = imageio_ffmpeg.get_ffmpeg_exe()
        except (ImportError, RuntimeError) as err:
            raise FFmpegNotFoundError(
                "ffmpeg not found: install imageio-ffmpeg==0.7.0 (pip install 'imageio-ffmpeg==0.7.0') "
                "or set SORA_NB_FFMPEG to an ffmpeg binary") from err
    if os.sep not in path and shutil.which(path):  # a command name ("ffmpeg"): the one on PATH
        path = shutil.which(path)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise FFmpegNotFoundError(f"ffmpeg not found at {path!r} (from {source}); set SORA_NB_FFMPEG to an "
                                  "executable ffmpeg binary or to a command on PATH")
    _check_runs(path)
    mediapy.set_ffmpeg(path)
    return path


_RUNS: dict[tuple, bool] = {}  # (path, size, mtime) -> whether `path -version` says it is ffmpeg


def _check_runs(path: str) -> None:
    """FFmpegNotFoundError unless ``path -version`` prints ffmpeg's banner (asked once per binary and process):
    another executable (``SORA_NB_FFMPEG=/bin/true``) failed only after the model had run, or blamed the file."""
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _RUNS:
        try:
            out = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=30).stdout
            _RUNS[key] = out.startswith("ffmpeg")
        except (OSError, subprocess.SubprocessError):
            _RUNS[key] = False
    if not _RUNS[key]:
        raise FFmpegNotFoundError(f"ffmpeg at {path!r} does not run ('{path} -version' fails); set SORA_NB_FFMPEG to "
                                  "a working ffmpeg binary or reinstall imageio-ffmpeg==0.7.0")


def check_output_path(path: str | os.PathLike, name: str = "path") -> Path:
    """A writable video path: known extension, existing folder. Raises ValueError/TypeError naming ``name`` (the
    CLI's ``--output``)."""
    p = check_path(name, path)
    if p.suffix.lower() not in VIDEO_FORMATS:
        raise ValueError(f"{name} must end in one of {', '.join(VIDEO_FORMATS)}; got {str(p)!r}")
    try:
        p.exists()
    except OSError as err:  # e.g. a name longer than the file system allows: now, not after the model has run
        raise ValueError(f"{name} {str(p)[:80]!r}{'...' if len(str(p)) > 80 else ''} cannot be a file here "
                         f"({err.strerror})") from None
    if p.is_symlink() and not Path(os.path.realpath(p)).parent.is_dir():  # the file is written where it points
        raise ValueError(f"{name} {str(p)!r} is a link to {os.readlink(p)!r}, whose folder does not exist: write to "
                         "another name or remove the link")
    if not p.parent.is_dir():
        raise ValueError(f"{name}: folder {str(p.parent)!r} does not exist (create it first)")
    if p.is_dir():
        raise ValueError(f"{name} {str(p)!r} is a folder, not a file name")
    if p.is_symlink() and Path(os.path.realpath(p)).suffix.lower() != p.suffix.lower():
        raise ValueError(f"{name} {str(p)!r} is a link to {os.path.realpath(p)!r}, which does not end in "
                         f"{p.suffix}: write to the file itself or to another name")
    folder = Path(os.path.realpath(p)).parent if p.is_symlink() else p.parent  # a link's file is written where it points
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{name}: folder {str(folder)!r} is not writable (choose another folder)")
    try:
        held, shared = os.stat(p), os.stat(folder)  # (stat follows a link to the file written)
    except OSError:  # nothing there yet
        return p
    if shared.st_mode & stat.S_ISVTX and os.geteuid() not in (0, held.st_uid, shared.st_uid):
        # a sticky folder (/tmp): another user's file there cannot be replaced, found out after the model ran
        raise ValueError(f"{name} {str(p)!r} is another user's file in a shared folder, which only they can "
                         "replace: choose another name")
    return p


def check_fps(fps: Any, unit: str = "") -> float:
    """Frames per second of a clip (or a player's speed, with its ``unit``): a number in [0.1, 240]."""
    return check_float("fps", fps, MIN_FPS, MAX_FPS, unit=unit)


def check_input_path(path: Any, name: str = "path") -> Path:
    """A video file to read: an existing file. Raises TypeError/ValueError naming ``name``."""
    p = check_path(name, path)
    if not p.is_file():
        raise ValueError(f"{name} {str(p)!r} is not a readable video: " + ("it is a folder" if p.is_dir() else "no such file"))
    return p


def check_frames(frames: Any) -> np.ndarray:
    """uint8 frames of shape (T, H, W, 3)."""
    try:
        frames = np.asarray(frames)
    except ValueError:  # a list of frames of other shapes: numpy's message names nothing
        raise ValueError("frames must be uint8 of shape (T, H, W, 3) with T, H, W >= 1; got frames of different "
                         "shapes") from None
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or min(frames.shape[:3]) < 1:
        raise ValueError(f"frames must be uint8 of shape (T, H, W, 3) with T, H, W >= 1; "
                         f"got {frames.dtype} {frames.shape}")
    return frames


def _json_value(value: Any) -> Any:
    """``json.dumps``'s fallback for params: numpy scalars and arrays as numbers and lists, paths as text."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"params hold a {type(value).__name__}, which a video file's metadata cannot carry (JSON: "
                    "str, number, bool, None, list, dict)")


def _non_text_key(value: Any, _open: frozenset[int] = frozenset()) -> Any:
    """The first dict key in ``value`` (nested in dicts and lists) that is not a str, else None; ValueError for a
    dict or list that holds itself (it has no JSON; the walk recursed until Python stopped it)."""
    if isinstance(value, (dict, list, tuple)):
        if id(value) in _open:
            raise ValueError("params must not hold themselves (a dict or list inside itself has no JSON)")
        _open = _open | {id(value)}
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return key
            found = _non_text_key(item, _open)
            if found is not None:
                return found
    elif isinstance(value, (list, tuple)):
        for item in value:
            found = _non_text_key(item, _open)
            if found is not None:
                return found
    return None


def params_json(params: dict[str, Any]) -> str:
    """The JSON a video file carries for ``params``; ValueError/TypeError naming what cannot be written."""
    bad = _non_text_key(params)
    if bad is not None:  # (json.dumps writes 5 as "5", so the clip would carry other params; mixed keys did not sort)
        raise TypeError(f"params: every key must be a str (a JSON object's keys are text), got {type(bad).__name__} "
                        f"{bad!r}")
    try:
        text = json.dumps(params, sort_keys=True, default=_json_value)
    except TypeError as err:
        raise TypeError(f"params: {err}") from None
    size = len(text.encode())
    if size > MAX_PARAMS_BYTES:
        raise ValueError(f"params must be at most {MAX_PARAMS_BYTES // 1024} KiB as JSON to go in a video file's "
                         f"metadata; got {size / 1024:.0f} KiB")
    return text


def _ffmpeg_path(path: Path) -> str:
    """``path`` as ffmpeg should see it: absolute, so a name such as ``run:1.mp4`` is not read as a protocol."""
    return os.path.abspath(path)


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float, *,
                params: dict[str, Any] | None = None) -> Path:
    """Write ``frames`` to ``path`` (mp4/webm/gif by extension) atomically; return the path."""
    import mediapy

    given = check_output_path(path)
    target = Path(os.path.realpath(given)) if given.is_symlink() else given  # write through a link, keep the link
    frames = check_frames(frames)
    fps = check_fps(fps)
    suffix = target.suffix.lower()
    if suffix == ".gif" and fps > MAX_GIF_FPS:
        raise ValueError(f"fps must be <= {MAX_GIF_FPS:g} for a .gif (it stores delays in hundredths of a second); "
                         f"got {fps:g}: save an mp4 or webm")
    if suffix != ".gif" and (frames.shape[1] % 2 or frames.shape[2] % 2):
        raise ValueError(f"frames must have an even width and height for {suffix} (browsers play only 4:2:0 "
                         f"video); got {frames.shape[2]}x{frames.shape[1]}: crop them or save a .gif")
    args: list[str] = []
    if params is not None and suffix != ".gif":
        args = ["-metadata", "comment=" + params_json(params)]
    ffmpeg_exe()
    kwargs: dict[str, Any] = {"fps": fps, "codec": VIDEO_FORMATS[suffix], "ffmpeg_args": args}
    if suffix == ".mp4":
        kwargs["crf"] = 18  # near-lossless: small clips, faithful colours
    with atomic_file(target, suffix=suffix, name=given) as tmp:
        try:
            mediapy.write_video(_ffmpeg_path(tmp), frames, **kwargs)
        except (RuntimeError, OSError) as err:  # OSError: a broken pipe, ffmpeg gone before the last frame
            if _interrupted(err):  # Ctrl-C in a terminal stops ffmpeg too, whose exit then replaced the interrupt
                raise KeyboardInterrupt from None
            broken_ffmpeg()
            if isinstance(err, RuntimeError):
                reason = ffmpeg_reason(str(err).replace(_ffmpeg_path(tmp), str(given)))
            else:
                reason = (f"nothing: it stopped reading the frames ({type(err).__name__}); check that it has the "
                          f"{VIDEO_FORMATS[suffix]} encoder ({ffmpeg_exe()} -hide_banner -encoders)")
            raise RuntimeError(f"cannot write {str(given)!r}: ffmpeg said {reason}") from None
    return given


def _interrupted(err: BaseException) -> bool:
    """Whether ``err`` was raised while a KeyboardInterrupt was being handled (mediapy's writer, closing)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, KeyboardInterrupt):
            return True
        seen.add(id(err))
        err = err.__context__
    return False


def broken_ffmpeg() -> None:
    """Raise FFmpegNotFoundError if the configured ffmpeg does not run (``ffmpeg -version``): called after a
    failure, so that a broken binary is not blamed on the file being read or written."""
    exe = ffmpeg_exe()
    _RUNS.clear()  # ask again: it may have broken since
    _check_runs(exe)


def ffmpeg_reason(text: str) -> str:
    """ffmpeg's last "what: why" line from its output, without its banner or ``[demuxer @ 0x...]`` tags."""
    if (text.startswith("Unable to parse video header") and "Input #" in text
            and not re.search(r"Stream #\S+: Video", text)):
        return "it has no video stream"  # (mediapy's message for a file ffmpeg reads, audio alone)
    text = re.sub(r"Error (writing|reading) '[^']*':\s*", "", text)  # mediapy's prefix, naming a temporary file
    lines = [re.sub(r"^\[[^\]]*\]\s*", "", line.strip()) for line in text.splitlines() if line.strip()]
    if not lines:
        return "ffmpeg stopped without a message (killed? out of memory, or a file-size limit)"
    said = [line for line in lines if ": " in line and not line.startswith(("ffmpeg version", "video:"))
            and not GENERIC.match(line)]  # ffmpeg 7's summary lines, after the cause
    causes = [line for line in lines if line not in said and not GENERIC.match(line)
              and re.search(r"\b(invalid|error|failed|cannot|could not|not supported)\b", line, re.I)]
    return (said or causes or lines)[-1][:200]


GENERIC = re.compile(r"(Task finished with error code|Terminating thread|Error while opening encoder|Nothing was "
                     r"written|Conversion failed|Error opening output file)", re.I)


def read_video(path: str | os.PathLike) -> np.ndarray:
    """Frames of a video file as uint8 (T, H, W, 3)."""
    import mediapy

    path = check_input_path(path)
    ffmpeg_exe()
    try:
        return np.asarray(mediapy.read_video(_ffmpeg_path(path)))
    except RuntimeError as err:
        broken_ffmpeg()
        raise ValueError(f"path {str(path)!r} is not a readable video: {ffmpeg_reason(str(err))}") from err


def read_params(path: str | os.PathLike, name: str = "path") -> dict[str, Any]:
    """The generation parameters stored in a clip written by :func:`write_video`: {} if it has no comment
    metadata (e.g. a .gif); ValueError if its comment is not a JSON object (another program's, or edited). Errors
    name the argument ``name`` (`sora_nb.reproduce`'s ``clip``)."""
    path = check_input_path(path, name)
    out = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", _ffmpeg_path(path), "-f", "ffmetadata", "-"],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        broken_ffmpeg()
        raise ValueError(f"{name} {str(path)!r} is not a readable video: {ffmpeg_reason(out.stderr)}")
    lines = out.stdout.replace("\\\n", "\n").splitlines()
    for i, line in enumerate(lines):
        if line.lower().startswith("comment="):
            text = "\n".join([line.split("=", 1)[1]] + lines[i + 1:])
            try:
                params = json.JSONDecoder().raw_decode(text.replace("\\=", "=").replace("\\;", ";")
                                                       .replace("\\#", "#").replace("\\\\", "\\"))[0]
            except (ValueError, RecursionError):
                params = None
            if not isinstance(params, dict):
                raise ValueError(f"{name} {str(path)!r}: its comment metadata is not sora_nb params (a JSON object "
                                 "written by sora_nb)")
            return params
    return {}


def video_html(frames: np.ndarray, fps: float, *, height: int = 256, title: str | None = None) -> str:
    """An HTML ``<video>`` element (inline mp4) that plays and loops ``frames``, scaled to ``height`` pixels
    (an integer in [1, 4096]); ``title`` is plain text (escaped here). An odd width or height is padded by one
    edge pixel for the browser; a clip whose HTML would pass ``MAX_HTML_MB`` is refused (ValueError)."""
    import html

    import mediapy

    from ._checks import check_int

    frames = check_frames(frames)
    fps = check_fps(fps)
    height = check_int("height", height, 1, 4096)
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title must be a str or None, got {type(title).__name__}")
    t, h, w, _ = frames.shape
    shown_w = max(1, int(height * w / h + 0.5))  # the display width mediapy gives this height
    if height < h or shown_w < w:  # mediapy would shrink the frames to the display size, odd sides and all
        h, w = max(2, height - height % 2), max(2, shown_w - shown_w % 2)
        frames = np.asarray(mediapy.resize_video(frames, (h, w)))
    if h % 2 or w % 2:  # H.264 4:2:0, the only kind browsers play, needs even sides
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    ffmpeg_exe()
    # the element's size is at least the frames' (a smaller one would make mediapy shrink them to odd sides again)
    try:
        page = mediapy.show_video(frames, fps=fps, height=max(height, frames.shape[1]), width=max(shown_w, frames.shape[2]),
                                  title=None if title is None else html.escape(title), return_html=True)
    except (RuntimeError, OSError) as err:
        broken_ffmpeg()
        raise RuntimeError(f"ffmpeg could not encode the clip for display: {ffmpeg_reason(str(err))}") from None
    if len(page) > MAX_HTML_MB * 1e6:
        raise ValueError(f"the clip is {len(page) / 1e6:.1f} MB as inline HTML, over the {MAX_HTML_MB:g} MB a "
                         "notebook output should hold: save() it and open the file, or show part of it (fewer or smaller frames)")
    return page
