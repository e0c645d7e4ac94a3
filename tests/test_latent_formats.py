"""Published latent -> RGB maps of the video model families."""

import numpy as np
import pytest
import torch

from sora_nb.latent_formats import FORMATS, get_format, latent_to_rgb

CHANNELS = {"wan2.1": 16, "ltx-video": 128, "hunyuanvideo": 16, "mochi": 12, "cogvideox": 16}


@pytest.mark.parametrize("family", sorted(CHANNELS))
def test_table_shapes(family):
    fmt = get_format(family)
    assert fmt.channels == CHANNELS[family]
    assert fmt.factors.shape == (CHANNELS[family], 3) and fmt.factors.dtype == np.float32
    assert fmt.bias.shape == (3,) and fmt.bias.dtype == np.float32
    assert np.all(np.isfinite(fmt.factors)) and np.abs(fmt.factors).max() < 1.0
    assert "@" in fmt.source  # names the file and commit the numbers were read from
    assert not fmt.factors.flags.writeable  # shared tables cannot be changed by accident


@pytest.mark.parametrize("family", sorted(CHANNELS))
def test_latent_to_rgb_shape_dtype_and_values(family):
    fmt = get_format(family)
    latent = torch.randn((3, fmt.channels, 5, 7), generator=torch.Generator().manual_seed(0))
    rgb = latent_to_rgb(latent, family)
    assert rgb.dtype == np.uint8 and rgb.shape == (3, 5, 7, 3)
    np.testing.assert_array_equal(rgb, latent_to_rgb(latent.numpy(), family))  # torch or numpy
    expected = latent[1, :, 2, 4].numpy() @ fmt.factors + fmt.bias  # one pixel by hand
    assert np.abs(rgb[1, 2, 4].astype(float) - np.clip((expected + 1) * 127.5, 0, 255)).max() <= 0.51
    zeros = latent_to_rgb(np.zeros((1, fmt.channels, 2, 2), np.float32), family)
    np.testing.assert_array_equal(zeros[0, 0, 0], np.rint((fmt.bias + 1) * 127.5).astype(np.uint8))


def test_published_numbers_spot_checks():
    """Regression guard on the transcription (values as published, see the module docstring)."""
    np.testing.assert_allclose(FORMATS["wan2.1"].factors[0], [-0.1299, -0.1692, 0.2932])
    np.testing.assert_allclose(FORMATS["wan2.1"].bias, [-0.1835, -0.0868, -0.3360])
    np.testing.assert_allclose(FORMATS["ltx-video"].factors[22], [-0.12689, -0.13107, -0.21005])
    np.testing.assert_allclose(FORMATS["ltx-video"].factors[127], [-0.014605, -0.0067032, 0.0039675])
    np.testing.assert_allclose(FORMATS["ltx-video"].bias, [-0.0571, -0.1657, -0.2512])
    np.testing.assert_allclose(FORMATS["hunyuanvideo"].factors[12], [-0.2315, -0.1920, -0.1355])
    np.testing.assert_allclose(FORMATS["mochi"].factors[7], [0.5294, 0.5204, 0.3852])
    np.testing.assert_allclose(FORMATS["cogvideox"].factors[0, 0], 0.11945946736445662)
    np.testing.assert_array_equal(FORMATS["cogvideox"].bias, [0, 0, 0])


def test_aliases():
    assert get_format("wan").name == "wan2.1" and get_format("Wan 2.1").name == "wan2.1"
    assert get_format("LTXPipeline").name == "ltx-video" and get_format("ltxv").name == "ltx-video"
    assert get_format("HunyuanVideo").name == "hunyuanvideo" and get_format("cogvideo").name == "cogvideox"
    assert get_format(FORMATS["mochi"]) is FORMATS["mochi"]


def test_errors_name_what_is_allowed():
    with pytest.raises(ValueError, match="unknown latent family 'sdxl'.*wan2.1"):
        latent_to_rgb(np.zeros((1, 4, 2, 2)), "sdxl")
    with pytest.raises(TypeError, match="family must be"):
        get_format(16)
    with pytest.raises(ValueError, match="latent has 8 channels.*expects 16"):
        latent_to_rgb(np.zeros((1, 8, 2, 2)), "wan2.1")
    with pytest.raises(ValueError, match=r"\(frame, channel, y, x\)"):
        latent_to_rgb(np.zeros((16, 2, 2)), "wan2.1")


def test_image_to_video_pipelines_and_wan_22_have_their_familys_map():
    for name, family in (("WanImageToVideoPipeline", "wan2.1"), ("wan2.2", "wan2.1"),
                         ("LTXImageToVideoPipeline", "ltx-video"), ("CogVideoXImageToVideoPipeline", "cogvideox")):
        assert get_format(name) is FORMATS[family], name


def test_a_latent_format_of_ones_own_is_checked_and_usable():
    """A LatentFormat built by hand with lists failed at its first use (AttributeError), a (C, 4) map with a numpy
    broadcast error, and hash() raised (a frozen dataclass of arrays)."""
    import warnings

    from sora_nb.latent_formats import LatentFormat

    fmt = LatentFormat("mine", [[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]], [0.0, 0.0, -0.5], "by hand")
    assert fmt.channels == 2 and fmt.factors.dtype == np.float32 and not fmt.bias.flags.writeable
    assert hash(fmt) == hash(fmt) and fmt == fmt and fmt != LatentFormat("mine", fmt.factors, fmt.bias, "by hand")
    rgb = latent_to_rgb(np.ones((1, 2, 1, 1), np.float32), fmt)
    np.testing.assert_array_equal(rgb[0, 0, 0], [191, 191, 64])
    for factors, bias, match in (([[1, 2, 3, 4]], [0, 0, 0], r"factors must be finite numbers of shape \(channels, 3\), "
                                                             r"got shape \(1, 4\)"),
                                 ([[1, 2, 3]], [0, 0], r"bias must be finite numbers of shape \(3,\), got shape \(2,\)"),
                                 ([[1, 2, float("nan")]], [0, 0, 0], r"factors must be finite numbers")):
        with pytest.raises(ValueError, match=match):
            LatentFormat("bad", factors, bias, "")
    # a NaN latent (a float16 overflow) previews as the bias, with no numpy warning at every step
    latent = np.zeros((1, 16, 2, 2), np.float32)
    latent[0, :, 0, 0] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rgb = latent_to_rgb(latent, "wan2.1")
    np.testing.assert_array_equal(rgb[0, 0, 0], rgb[0, 1, 1])
