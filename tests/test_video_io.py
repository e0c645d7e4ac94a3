"""Saving, reading back, atomic writes and ffmpeg errors."""

import os

import numpy as np
import pytest

import sora_nb
from sora_nb import media


def smooth_clip():
    """A gradient background with a white square moving right: what codecs handle well."""
    t, h, w = 16, 64, 64
    frames = np.zeros((t, h, w, 3), np.uint8)
    frames[..., 0] = np.linspace(20, 200, w, dtype=np.uint8)[None, None, :]
    frames[..., 2] = 90
    for i in range(t):
        frames[i, 24:40, 4 + 3 * i:20 + 3 * i] = 255
    return sora_nb.Video(frames=frames, fps=8.0, params={"prompt": "a white square moving right", "seed": 0})


@pytest.mark.parametrize("ext,tolerance", [("mp4", 3), ("webm", 4), ("gif", 6)])
def test_save_round_trip(tmp_path, ext, tolerance):
    video = smooth_clip()
    path = video.save(tmp_path / f"clip.{ext}")
    assert path.is_file() and path.stat().st_size > 0
    back = sora_nb.read_video(path)
    assert back.shape == video.frames.shape
    # lossy codecs: close on average, not bit-exact; the square is where it was drawn
    assert np.abs(back.astype(int) - video.frames.astype(int)).mean() < tolerance
    assert back[10, 32, 4 + 30 + 8].min() > 200
    assert [p.name for p in tmp_path.iterdir()] == [f"clip.{ext}"]  # no temp files left


@pytest.mark.parametrize("ext", ["mp4", "webm"])
def test_params_travel_in_the_file(video, tmp_path, ext):
    path = video.save(tmp_path / f"clip.{ext}")
    params = sora_nb.read_params(path)
    assert params["prompt"] == video.params["prompt"]
    assert params["seed"] == video.params["seed"]
    assert params["model"] == video.params["model"]


def test_bad_output_paths(video, tmp_path):
    with pytest.raises(ValueError, match="path: folder .*missing.* does not exist"):
        video.save(tmp_path / "missing" / "clip.mp4")
    with pytest.raises(ValueError, match=r"path must end in one of \.mp4, \.webm, \.gif"):
        video.save(tmp_path / "clip.avi")
    with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
        video.save(42)
    (tmp_path / "dir.mp4").mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        video.save(tmp_path / "dir.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.mp4"]


def test_failed_write_leaves_no_file_and_keeps_the_old_one(video, tmp_path, monkeypatch):
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"previous clip")

    def boom(path, frames, **kwargs):
        with open(path, "wb") as f:
            f.write(b"half")
        raise RuntimeError("encoder crashed")

    import mediapy

    monkeypatch.setattr(mediapy, "write_video", boom)
    with pytest.raises(RuntimeError, match="encoder crashed"):
        video.save(target)
    assert target.read_bytes() == b"previous clip"
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_missing_ffmpeg_is_a_clear_error(video, tmp_path, monkeypatch):
    monkeypatch.setenv("SORA_NB_FFMPEG", str(tmp_path / "no-ffmpeg"))
    with pytest.raises(sora_nb.FFmpegNotFoundError, match="ffmpeg not found at .*SORA_NB_FFMPEG"):
        video.save(tmp_path / "clip.mp4")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.delenv("SORA_NB_FFMPEG")
    assert os.path.basename(media.ffmpeg_exe()).startswith("ffmpeg")


def test_video_rejects_bad_frames():
    with pytest.raises(ValueError, match=r"frames must be uint8 of shape \(T, H, W, 3\)"):
        sora_nb.Video(frames=np.zeros((4, 8, 8, 3), np.float32), fps=8.0, params={})
    with pytest.raises(ValueError, match="frames must be uint8"):
        sora_nb.Video(frames=np.zeros((8, 8, 3), np.uint8), fps=8.0, params={})


def test_show_displays_html(video, monkeypatch):
    shown = []
    import IPython.display

    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    video.show()
    assert "<video" in shown[0].data
