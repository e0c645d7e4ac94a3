"""The front-end modules in widgets/ and their Python widgets."""

import numpy as np
import pytest
import traitlets

from sora_nb.frontend import Filmstrip, read_module


def test_module_ships_with_the_package():
    src = read_module("filmstrip.js")
    assert "export default" in src and "function render" in src


def test_filmstrip_sends_frames_as_bytes(video):
    fs = video.filmstrip(scale=3)
    assert fs.shape == [16, 64, 64]
    assert isinstance(fs.frames, bytes) and len(fs.frames) == 16 * 64 * 64 * 3
    fs.index = 5
    np.testing.assert_array_equal(fs.frame(), video.frames[5])
    fs.set_frames(video.frames[:3])
    assert fs.shape == [3, 64, 64] and fs.index == 2
    with pytest.raises(ValueError, match="frames must be uint8"):
        fs.set_frames(np.zeros((2, 4, 4), np.uint8))
    for empty in ((0, 4, 4, 3), (2, 0, 4, 3), (2, 4, 0, 3)):  # the browser cannot draw an empty image
        with pytest.raises(ValueError, match=r"with T, H and W at least 1"):
            fs.set_frames(np.zeros(empty, np.uint8))
    for bad in (3, -1):  # three frames: 0..2 (-1 gave a frame the browser does not draw, 3 an IndexError later)
        with pytest.raises(traitlets.TraitError, match=r"index must be an integer in \[0, 2\], got " + str(bad)):
            fs.index = bad
    assert fs.index == 2 and fs.shape == [3, 64, 64]


def test_filmstrip_refuses_a_bad_scale_or_speed(video):
    for kwargs, error, match in ((dict(scale=0), ValueError, r"scale must be an integer in \[1, 64\], got 0"),
                                 (dict(scale=2.7), TypeError, r"scale must be an integer in \[1, 64\], got float 2.7"),
                                 (dict(fps=float("nan")), ValueError, r"fps must be a finite number >= 0.1")):
        with pytest.raises(error, match=match):
            Filmstrip(video.frames, **kwargs)
    with pytest.raises(ValueError, match=r"scale must be an integer in \[1, 64\], got -2"):
        video.filmstrip(scale=-2)
    fs = video.filmstrip(scale=np.int64(3))
    with pytest.raises(traitlets.TraitError, match=r"fps must be >= 0.1 and <= 240 per second, got 0"):
        fs.fps = 0
    assert fs.scale == 3 and type(fs.scale) is int and fs.fps == 8.0


def test_filmstrip_scales_to_the_frame_and_refuses_a_payload_a_tab_cannot_hold(video):
    """``scale`` None shows a frame about 256 pixels across (it was 4 for every size: a 480x832 clip drew 3328 CSS
    pixels wide); frames over ``max_payload_mb`` are refused by name (a Wan 480p clip sent ~100 MB raw); ``index``
    as an argument is the frame shown (it was checked before the frames existed, so any index > 0 was refused)."""
    assert video.filmstrip().scale == 4  # the embedded model's 64x64
    wide = np.zeros((2, 480, 832, 3), np.uint8)
    assert Filmstrip(wide).scale == 1 and Filmstrip(np.zeros((1, 16, 8, 3), np.uint8)).scale == 16
    big = np.zeros((81, 480, 832, 3), np.uint8)  # Wan's default clip: 92.5 MiB
    with pytest.raises(ValueError, match=r"the filmstrip would send 92.5 MB of frames to the browser \(limit "
                                         r"max_payload_mb=64\): pass fewer or smaller frames"):
        Filmstrip(big)
    fs = Filmstrip(big[:, ::2, ::2], 16.0, index=40)
    assert fs.shape == [81, 240, 416] and fs.index == 40 and fs.scale == 1
    with pytest.raises(ValueError, match=r"would send 92.5 MB .* max_payload_mb=64"):
        fs.set_frames(big)
    assert fs.shape == [81, 240, 416] and len(fs.frames) == 81 * 240 * 416 * 3  # the old frames kept
    assert Filmstrip(big, max_payload_mb=100).shape == [81, 480, 832]
    with pytest.raises(ValueError, match=r"max_payload_mb must be > 0 and <= 1e\+06 MB, got -1"):
        video.filmstrip(max_payload_mb=-1)
    with pytest.raises(traitlets.TraitError, match=r"index must be an integer in \[0, 15\], got 16"):
        Filmstrip(video.frames, index=16)
    np.testing.assert_array_equal(Filmstrip(video.frames, index=5).frame(), video.frames[5])
