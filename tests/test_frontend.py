"""The front-end modules in widgets/ and their Python widgets."""

import numpy as np
import pytest

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
