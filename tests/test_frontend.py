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
