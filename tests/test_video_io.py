"""Saving, reading back, atomic writes and ffmpeg errors."""

import os
import tempfile

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
    exe = media.ffmpeg_exe()
    assert os.path.basename(exe).startswith("ffmpeg")
    # a command name is looked up on PATH (it was refused: "ffmpeg not found at 'ffmpeg'"), as imageio-ffmpeg's
    # own IMAGEIO_FFMPEG_EXE=ffmpeg does; a missing one is named with the variable that gave it
    (tmp_path / "bin").mkdir()
    os.symlink(exe, tmp_path / "bin" / "ffmpeg")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    for variable in ("SORA_NB_FFMPEG", "IMAGEIO_FFMPEG_EXE"):
        monkeypatch.setenv(variable, "ffmpeg")
        assert media.ffmpeg_exe() == str(tmp_path / "bin" / "ffmpeg")
        monkeypatch.setenv(variable, "no-such-ffmpeg")
        with pytest.raises(sora_nb.FFmpegNotFoundError, match=f"ffmpeg not found at 'no-such-ffmpeg' \\(from {variable}\\)"):
            media.ffmpeg_exe()
        monkeypatch.delenv(variable)
    assert media.ffmpeg_exe() == exe


def test_a_file_without_a_video_stream_says_so(tmp_path):
    """An audio-only mp4 gave ffmpeg's statistics line as the reason ("video:0KiB audio:5KiB ...")."""
    import subprocess

    audio = tmp_path / "audio.mp4"
    subprocess.run([media.ffmpeg_exe(), "-y", "-v", "error", "-f", "lavfi", "-i", "sine=d=0.5", "-c:a", "aac",
                    str(audio)], check=True)
    with pytest.raises(ValueError, match=r"path '.*audio.mp4' is not a readable video: it has no video stream$"):
        media.read_video(audio)


def test_video_rejects_bad_frames():
    with pytest.raises(ValueError, match=r"frames must be uint8 of shape \(T, H, W, 3\)"):
        sora_nb.Video(frames=np.zeros((4, 8, 8, 3), np.float32), fps=8.0, params={})
    with pytest.raises(ValueError, match="frames must be uint8"):
        sora_nb.Video(frames=np.zeros((8, 8, 3), np.uint8), fps=8.0, params={})


def test_a_clip_keeps_its_own_copy_of_its_params():
    import dataclasses

    params = {"prompt": "a red ball", "seed": 3, "runtime": {"threads": 2}}
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    clip = sora_nb.Video(frames=frames, fps=8.0, params=params)
    params["seed"] = 4
    params["runtime"]["threads"] = 1
    assert clip.params == {"prompt": "a red ball", "seed": 3, "runtime": {"threads": 2}}
    slower = dataclasses.replace(clip, fps=4.0)  # a retimed clip: its record is its own
    slower.params["seed"] = 5
    assert clip.params["seed"] == 3 and slower.params["seed"] == 5 and slower.fps == 4.0


def test_show_displays_html(video, monkeypatch):
    shown = []
    import IPython.display

    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    video.show()
    assert "<video" in shown[0].data


def test_a_saved_clip_gets_a_normal_files_mode_and_keeps_a_replaced_files_mode(tmp_path):
    """mkstemp makes its file private (0o600); the clip renamed from it must not stay so."""
    video = smooth_clip()
    old = os.umask(0o022)
    try:
        fresh = video.save(tmp_path / "fresh.gif")
        shared = tmp_path / "shared.gif"
        shared.write_bytes(b"old clip")
        shared.chmod(0o664)
        video.save(shared)
    finally:
        os.umask(old)
    assert fresh.stat().st_mode & 0o777 == 0o644
    assert shared.stat().st_mode & 0o777 == 0o664 and shared.read_bytes() != b"old clip"


def test_saving_through_a_link_writes_its_target_and_keeps_the_link(tmp_path):
    video = smooth_clip()
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "clip.gif"
    target.write_bytes(b"old clip")
    link = tmp_path / "clip.gif"
    link.symlink_to(target)
    assert video.save(link) == link
    assert link.is_symlink() and target.read_bytes()[:3] == b"GIF"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.gif", "real"]
    assert [p.name for p in (tmp_path / "real").iterdir()] == ["clip.gif"]


def test_a_folder_that_refuses_the_write_names_the_clip_and_keeps_the_old_one(tmp_path, monkeypatch):
    video = smooth_clip()
    target = tmp_path / "clip.gif"
    target.write_bytes(b"old clip")
    # a folder the user may not write to (root may write anywhere, so the check is faked here)
    real_access = os.access
    monkeypatch.setattr(media.os, "access", lambda p, mode: False if str(p) == str(tmp_path) else real_access(p, mode))
    with pytest.raises(ValueError, match=r"path: folder .* is not writable \(choose another folder\)"):
        video.save(target)
    monkeypatch.setattr(media.os, "access", real_access)

    # one that refuses only when the file is made (e.g. a read-only mount, which os.access may not see)
    def refuse(**kwargs):
        raise PermissionError(13, "Permission denied", os.path.join(kwargs["dir"], ".clip.x9.gif"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionError, match=r"cannot write '.*clip\.gif': Permission denied") as err:
        video.save(target)
    assert ".clip.x9" not in str(err.value)  # the message names the clip asked for, not the temporary file
    assert target.read_bytes() == b"old clip" and [p.name for p in tmp_path.iterdir()] == ["clip.gif"]


def test_reading_a_missing_or_broken_video_is_a_clear_error(tmp_path):
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, got NoneType"):
        sora_nb.read_params(None)
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, got int"):
        sora_nb.read_video(3)
    for read in (sora_nb.read_params, sora_nb.read_video):
        with pytest.raises(ValueError, match=r"path '.*nothing.mp4' is not a readable video: no such file"):
            read(tmp_path / "nothing.mp4")
        with pytest.raises(ValueError, match=r"is not a readable video: it is a folder"):
            read(tmp_path)
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    with pytest.raises(ValueError, match=r"path '.*junk.mp4' is not a readable video: .*Invalid data"):
        sora_nb.read_video(tmp_path / "junk.mp4")
    with pytest.raises(ValueError, match=r"path '.*junk.mp4' is not a readable video"):
        sora_nb.read_params(tmp_path / "junk.mp4")


def _with_comment(src, dest, comment):
    """A copy of the clip ``src`` whose comment metadata is ``comment`` (another program's, or edited by hand)."""
    import subprocess

    subprocess.run([media.ffmpeg_exe(), "-v", "error", "-y", "-i", str(src), "-c", "copy", "-metadata",
                    f"comment={comment}", str(dest)], check=True)
    return dest


def test_names_ffmpeg_would_read_as_a_protocol_save_and_read_back(video, tmp_path, monkeypatch):
    """``run:1.mp4`` or ``file:z.mp4`` is a plain file name; ffmpeg reads ``word:`` as a protocol unless the path
    is absolute (``file:z.mp4`` opened ``z.mp4``, another file)."""
    monkeypatch.chdir(tmp_path)
    smooth_clip().save("z.mp4")  # the file ``file:z.mp4`` would have been read as
    for name in ("run:1.mp4", "file:z.mp4", "2024-05-01T12:30.webm"):
        path = video.save(name)
        assert str(path) == name
        assert sora_nb.read_params(name) == video.params
        np.testing.assert_array_equal(sora_nb.read_video(name).shape, video.frames.shape)
        assert np.abs(sora_nb.read_video(name).astype(int) - video.frames.astype(int)).mean() < 4, name


def test_a_comment_that_is_not_params_is_refused_by_name(video, tmp_path):
    clip = video.save(tmp_path / "clip.mp4")
    for comment in ("[1, 2, 3]", "42", "null", "{not json", "Made with another tool", "[" * 5000):
        bad = _with_comment(clip, tmp_path / "bad.mp4", comment)
        for read in (sora_nb.read_params, sora_nb.reproduce):
            with pytest.raises(ValueError, match=r"bad\.mp4'.*comment metadata is not sora_nb params"):
                read(bad)
    gif = video.save(tmp_path / "clip.gif")
    assert sora_nb.read_params(gif) == {}
    with pytest.raises(ValueError, match=r"clip.gif' carries no sora_nb params: .*mp4 or webm.*a \.gif carries none"):
        sora_nb.reproduce(gif)
    params = {**video.params, "model_info": {**video.params["model_info"], "folder": 5}}
    with pytest.raises(TypeError, match=r"params\['model_info'\]\['folder'\] must be a str"):
        sora_nb.reproduce(params)


def test_a_link_to_a_file_of_another_kind_is_refused(video, tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("my notes")
    (tmp_path / "clip.mp4").symlink_to(target)
    with pytest.raises(ValueError, match=r"clip\.mp4' is a link to '.*notes\.txt', which does not end in \.mp4"):
        video.save(tmp_path / "clip.mp4")
    assert target.read_text() == "my notes" and sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "notes.txt"]


def test_frames_fps_and_sizes_the_files_cannot_carry_are_refused(tmp_path):
    frames = smooth_clip().frames
    with pytest.raises(ValueError, match=r"T, H, W >= 1; got uint8 \(16, 0, 64, 3\)"):
        sora_nb.Video(frames=frames[:, :0], fps=8.0, params={})
    for fps in (0.0, 0.05, 241.0):
        with pytest.raises(ValueError, match=r"fps must be >= 0.1 and <= 240"):
            sora_nb.Video(frames=frames, fps=fps, params={})
    odd = sora_nb.Video(frames=frames[:, :63, :61], fps=8.0, params={"prompt": "odd"})
    for ext in ("mp4", "webm"):
        with pytest.raises(ValueError, match=rf"even width and height for \.{ext} .*got 61x63: crop them or save a \.gif"):
            odd.save(tmp_path / f"odd.{ext}")
    assert sora_nb.read_video(odd.save(tmp_path / "odd.gif")).shape == (16, 63, 61, 3)
    assert "<video" in odd.to_html()  # padded by one pixel for the browser, not refused
    fast = sora_nb.Video(frames=frames, fps=60.0, params={})
    with pytest.raises(ValueError, match=r"fps must be <= 50 for a \.gif .*got 60: save an mp4 or webm"):
        fast.save(tmp_path / "fast.gif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.gif"]


def test_params_a_file_cannot_carry_are_refused_and_numpy_numbers_are_numbers(tmp_path):
    clip = smooth_clip()
    clip.params.update(seed=np.int64(3), guidance=np.float32(2.5), shape=np.array([1, 2]))
    path = clip.save(tmp_path / "np.mp4")
    back = sora_nb.read_params(path)
    assert back["seed"] == 3 and isinstance(back["seed"], int) and back["guidance"] == 2.5 and back["shape"] == [1, 2]
    path.unlink()
    clip.params["tensor"] = object()
    with pytest.raises(TypeError, match="params hold a object, which a video file's metadata cannot carry"):
        clip.save(tmp_path / "obj.mp4")
    clip.params["tensor"] = {"layers": [{1: "a", "b": 2}]}  # mixed keys failed to sort ("'<' not supported")
    with pytest.raises(TypeError, match=r"params: every key must be a str \(a JSON object's keys are text\), got int 1"):
        clip.save(tmp_path / "keys.mp4")
    clip.params["tensor"] = "x" * 70_000
    with pytest.raises(ValueError, match=r"params must be at most 64 KiB as JSON .*got 68 KiB"):
        clip.save(tmp_path / "big.mp4")
    assert list(tmp_path.iterdir()) == []


def test_an_ffmpeg_failure_names_the_clip_not_the_temporary_file(tmp_path, monkeypatch):
    import mediapy

    def fail(path, frames, **kwargs):
        raise RuntimeError(f"Error writing '{path}':\nffmpeg version 7\n[libx264 @ 0x55] broken: no space left")

    monkeypatch.setattr(mediapy, "write_video", fail)
    with pytest.raises(RuntimeError) as err:
        smooth_clip().save(tmp_path / "clip.mp4")
    assert str(err.value) == f"cannot write '{tmp_path / 'clip.mp4'}': ffmpeg said broken: no space left"
    assert list(tmp_path.iterdir()) == []


def test_a_name_near_the_length_limit_saves(tmp_path):
    name = "c" * (255 - len(".gif")) + ".gif"
    assert smooth_clip().save(tmp_path / name).name == name
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_html_checks_its_height_escapes_its_title_and_caps_its_size(monkeypatch):
    clip = smooth_clip()
    for height, error in ((-1, ValueError), (0, ValueError), (5000, ValueError), (2.5, TypeError),
                          ("256", TypeError), (True, TypeError)):
        with pytest.raises(error, match=r"height must be an integer .*4096"):
            clip.to_html(height=height)
    page = media.video_html(clip.frames, 8.0, title="</video><script>alert(1)</script>")
    assert "<script>" not in page and "&lt;script&gt;" in page
    clip.params["prompt"] = "a <b>bold</b> square"
    assert "a &lt;b&gt;bold&lt;/b&gt; square" in clip.to_html() and "<b>" not in clip.to_html()
    monkeypatch.setattr(media, "MAX_HTML_MB", 0.001)
    with pytest.raises(ValueError, match=r"MB as inline HTML, over the 0.001 MB .*save\(\) it and open the file"):
        clip.to_html()
    note = clip._repr_html_()  # what a notebook shows: a note, not a traceback
    assert note.startswith("<pre>Video(16 frames 64x64") and "not shown: the clip is" in note


@pytest.mark.parametrize("width, height, shown", [(704, 480, 256), (1280, 720, 256), (512, 512, 255), (33, 256, 256)])
def test_html_plays_in_a_browser_at_sizes_it_shrinks(tmp_path, width, height, shown):
    """mediapy shrank an LTX (704x480) or Wan (1280x720) clip to 375x256 or 455x256 and, for an odd side, encoded
    it as 4:4:4 H.264, which browsers do not play: the notebook showed a dead player."""
    import base64
    import re
    import subprocess

    frames = np.random.default_rng(0).integers(0, 256, (3, height, width, 3), dtype=np.uint8)
    page = media.video_html(frames, 8.0, height=shown)
    (tmp_path / "shown.mp4").write_bytes(base64.b64decode(re.search(r"base64,([^\"']+)", page).group(1)))
    said = subprocess.run([media.ffmpeg_exe(), "-i", str(tmp_path / "shown.mp4")], capture_output=True, text=True).stderr
    pixels, size = re.search(r"Video: h264 .*?, (yuv\w+)[^,]*, (\d+)x(\d+)", said).group(1), \
        re.search(r"Video: h264 .*?, yuv\w+[^,]*, (\d+)x(\d+)", said).groups()
    assert pixels == "yuv420p" and int(size[0]) % 2 == int(size[1]) % 2 == 0
    assert int(size[1]) <= max(shown, 2 * ((height + 1) // 2))  # shrunk (or padded by one pixel), not grown


def test_a_missing_ffmpeg_shows_a_note_not_a_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("SORA_NB_FFMPEG", str(tmp_path / "no-ffmpeg"))
    note = smooth_clip()._repr_html_()
    assert note.startswith("<pre>Video(") and "not shown: ffmpeg not found at" in note


def _fake_ffmpeg(tmp_path, body):
    """An executable shell script standing in for ffmpeg."""
    exe = tmp_path / "ffmpeg"
    exe.write_text("#!/bin/sh\n" + body + "\n")
    exe.chmod(0o755)
    return str(exe)


def test_a_broken_ffmpeg_is_named_not_the_file(tmp_path, monkeypatch):
    """An ffmpeg that does not run made a good clip "not a readable video", a save quoted the hidden temporary
    file with no reason, and the notebook's display raised instead of showing its note."""
    good = smooth_clip().save(tmp_path / "good.mp4")
    before = good.read_bytes()
    monkeypatch.setenv("SORA_NB_FFMPEG", _fake_ffmpeg(tmp_path, "exit 1"))
    for call in (lambda: sora_nb.read_video(good), lambda: sora_nb.read_params(good),
                 lambda: smooth_clip().save(good)):
        with pytest.raises(sora_nb.FFmpegNotFoundError, match=r"ffmpeg at '.*ffmpeg' does not run \('.*ffmpeg -version' fails\)"):
            call()
    assert good.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["ffmpeg", "good.mp4"]
    note = smooth_clip()._repr_html_()
    assert note.startswith("<pre>Video(") and "does not run" in note


def test_an_ffmpeg_without_the_encoder_gives_its_reason_not_a_broken_pipe(tmp_path, monkeypatch):
    """An ffmpeg that runs but exits at once (no libx264) raised a bare BrokenPipeError in about one save of four
    (whenever it was gone before mediapy wrote the frames), and its own message was lost."""
    real = media.ffmpeg_exe()
    monkeypatch.setenv("SORA_NB_FFMPEG", _fake_ffmpeg(
        tmp_path, f'[ "$1" = "-version" ] && exec "{real}" -version\necho "Unknown encoder \'libx264\'" >&2\nexit 1'))
    clip = sora_nb.Video(frames=np.zeros((64, 256, 256, 3), np.uint8), fps=8.0, params={"prompt": "p"})
    for i in range(6):
        with pytest.raises(RuntimeError, match=r"cannot write '.*out.mp4': ffmpeg said (Unknown encoder 'libx264'|nothing: "
                                               r"it stopped reading the frames \(BrokenPipeError\); check that it has "
                                               r"the h264 encoder)"):
            clip.save(tmp_path / "out.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ffmpeg"]


def test_ctrl_c_during_an_encode_is_an_interrupt_not_a_write_error(video, tmp_path, monkeypatch):
    """In a terminal Ctrl-C stops ffmpeg too: mediapy's writer, closing, raised "ffmpeg exited", which replaced the
    KeyboardInterrupt (the CLI said "cannot write", exit 1, not "stopped", 130). The old file stays."""
    import mediapy

    def interrupted(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        finally:
            raise RuntimeError("ffmpeg exited with code 255")

    target = tmp_path / "clip.mp4"
    target.write_bytes(b"previous clip")
    monkeypatch.setattr(mediapy, "write_video", interrupted)
    with pytest.raises(KeyboardInterrupt):
        video.save(target)
    assert target.read_bytes() == b"previous clip" and [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_an_output_name_the_file_system_cannot_take_is_refused_before_any_work(tmp_path):
    """A name too long for the file system, or a link into a folder that does not exist, failed as a raw OSError
    at write time (after the model had run)."""
    with pytest.raises(ValueError, match=r"path '.*nnnn'\.\.\. cannot be a file here \(File name too long\)"):
        media.check_output_path(tmp_path / ("n" * 300 + ".mp4"))
    link = tmp_path / "clip.mp4"
    os.symlink(tmp_path / "nowhere" / "x.mp4", link)
    with pytest.raises(ValueError, match=r"path '.*clip.mp4' is a link to '.*nowhere/x.mp4', whose folder does not "
                                         r"exist"):
        media.check_output_path(link)
    link.unlink()
    os.symlink(tmp_path / "x.mp4", link)  # a dangling link into a folder that exists: written there
    assert media.check_output_path(link) == link


def test_an_executable_that_is_not_ffmpeg_is_refused_up_front(tmp_path, monkeypatch):
    """SORA_NB_FFMPEG=/bin/true passed the up-front check: a generate failed after the model ran, and reproduce
    said the clip "carries no sora_nb params"."""
    good = smooth_clip().save(tmp_path / "good.mp4")
    monkeypatch.setenv("SORA_NB_FFMPEG", _fake_ffmpeg(tmp_path, "exit 0"))
    for call in (media.ffmpeg_exe, lambda: sora_nb.read_params(good)):
        with pytest.raises(sora_nb.FFmpegNotFoundError, match=r"ffmpeg at '.*ffmpeg' does not run"):
            call()


def test_a_clip_keeps_its_own_copy_of_its_frames():
    """Only params were copied: a clip made from a buffer the caller fills again, or a `dataclasses.replace` copy
    edited, changed the other clip's frames."""
    import dataclasses

    buffer = np.zeros((2, 8, 8, 3), np.uint8)
    clip = sora_nb.Video(frames=buffer, fps=8.0, params={})
    buffer[:] = 255
    assert clip.frames.max() == 0
    slower = dataclasses.replace(clip, fps=4.0)
    slower.frames[0] = 7
    assert clip.frames.max() == 0 and slower.frames.max() == 7


def test_frames_and_params_that_cannot_be_kept_are_named():
    with pytest.raises(ValueError, match=r"^frames must be uint8 of shape \(T, H, W, 3\) with T, H, W >= 1; got frames "
                                         r"of different shapes$"):
        sora_nb.Video(frames=[np.zeros((8, 8, 3), np.uint8), np.zeros((4, 8, 3), np.uint8)], fps=8.0, params={})
    import threading

    with pytest.raises(TypeError, match=r"^params must be plain data .*copying them failed: cannot pickle"):
        sora_nb.Video(frames=np.zeros((1, 8, 8, 3), np.uint8), fps=8.0, params={"lock": threading.Lock()})
    looped = {"prompt": "a red ball"}
    looped["again"] = [looped]
    with pytest.raises(ValueError, match=r"^params must not hold themselves"):  # was a RecursionError
        media.params_json(looped)


def test_ffmpegs_cause_is_named_not_its_summary_lines():
    """ffmpeg 7 ends with "Task finished with error code: ..." after the cause; a killed ffmpeg says nothing."""
    said = ("[libx264 @ 0x55] invalid width x height (20000x2)\n[vost#0:0/libx264 @ 0x1] Error while opening encoder -"
            " maybe incorrect parameters such as bit_rate, rate, width or height\nConversion failed!\n"
            "Task finished with error code: -22 (Invalid argument)\n")
    assert media.ffmpeg_reason(said) == "invalid width x height (20000x2)"
    assert media.ffmpeg_reason("") == "ffmpeg stopped without a message (killed? out of memory, or a file-size limit)"
    assert media.ffmpeg_reason("[in#0 @ 0x1] x.mp4: No such file or directory\n") == "x.mp4: No such file or directory"


def test_a_file_the_save_could_not_replace_is_refused_before_any_work(tmp_path, monkeypatch):
    """Another user's file in a sticky folder (/tmp), or a link into a folder we may not write, passed the check:
    `sora-nb generate` ran the model, then failed naming the temporary file."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    (shared / "clip.mp4").write_bytes(b"theirs")
    assert media.check_output_path(shared / "clip.mp4") == shared / "clip.mp4"  # our own (root's) file
    monkeypatch.setattr(os, "geteuid", lambda: 12345)  # as another user: the file (root's) is not ours to replace
    with pytest.raises(ValueError, match=r"is another user's file in a shared folder, which only they can replace"):
        media.check_output_path(shared / "clip.mp4", "--output")
    assert media.check_output_path(shared / "new.mp4") == shared / "new.mp4"  # a new name there is fine
    monkeypatch.undo()
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "real.mp4").write_bytes(b"x")
    (tmp_path / "link.mp4").symlink_to(locked / "real.mp4")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if os.path.realpath(p) == str(locked) else real_access(p, mode))
    with pytest.raises(ValueError, match=rf"--output: folder '{locked}' is not writable"):
        media.check_output_path(tmp_path / "link.mp4", "--output")


def test_a_replace_that_fails_names_the_clip_not_the_temporary_file(tmp_path, monkeypatch):
    from sora_nb import _files

    def refuse(src, dst):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(_files.os, "replace", refuse)
    with pytest.raises(PermissionError) as err:
        smooth_clip().save(tmp_path / "clip.mp4")
    assert str(err.value) == f"[Errno 1] cannot write '{tmp_path / 'clip.mp4'}': Operation not permitted"
    assert list(tmp_path.iterdir()) == []
