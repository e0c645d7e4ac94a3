"""The trace recorded by the sampler loop: schema and values."""

import numpy as np
import pytest
import torch
import xarray as xr


def test_schema(video):
    ds = video.trace
    assert isinstance(ds, xr.Dataset)
    assert ds.latent.dims == ("step", "frame", "channel", "y", "x")
    assert ds.x0.dims == ("step", "frame", "channel", "y", "x")
    assert ds.preview.dims == ("step", "frame", "py", "px", "rgb")
    assert ds.latent.dtype == np.float16 and ds.x0.dtype == np.float16 and ds.preview.dtype == np.uint8
    assert ds.sizes["step"] == 4 and ds.sizes["frame"] == 4 and ds.sizes["channel"] == 8
    assert list(ds.step.values) == [0, 1, 2, 3]
    assert ds.timestep.dims == ("step",) and ds.sigma.dims == ("step",)
    assert np.all(np.diff(ds.sigma.values) < 0) and ds.sigma.values[0] == pytest.approx(1.0)
    np.testing.assert_allclose(ds.time.values, [0.0, 0.5, 1.0, 1.5])
    assert ds.time.attrs["units"] == "s"
    for key in ("prompt", "seed", "guidance", "steps", "model", "fps", "sora_nb_version"):
        assert key in ds.attrs
    assert ds.attrs["prompt"] == "a red circle moving right" and ds.attrs["fps"] == 8.0


def test_step0_latent_is_the_initial_noise(gen):
    v = gen.generate("a red circle", seed=11, steps=3)
    noise = torch.randn((1, 8, 4, 16, 16), generator=torch.Generator().manual_seed(11))
    expected = noise[0].transpose(0, 1).to(torch.float16).numpy()  # (frame, channel, y, x)
    np.testing.assert_array_equal(v.trace.latent.isel(step=0).values, expected)


def test_last_x0_decodes_to_the_frames(gen, video):
    x0 = torch.from_numpy(video.trace.x0.isel(step=-1).values.astype(np.float32))
    frames = gen.backend.decode(x0, video.num_frames)
    assert np.abs(frames.astype(int) - video.frames.astype(int)).max() <= 3


def test_record_every_keeps_the_last_step(gen):
    v = gen.generate("a red circle", steps=10, record_every=4)
    assert list(v.trace.step.values) == [0, 4, 8, 9]
    assert v.params["record_every"] == 4


def test_trace_off_records_nothing(gen):
    v = gen.generate("a red circle", steps=3, trace=False)
    assert v.trace is None


def test_zarr_round_trip(video, tmp_path):
    video.trace.to_zarr(tmp_path / "t.zarr")
    back = xr.open_zarr(tmp_path / "t.zarr").load()
    xr.testing.assert_identical(video.trace, back)
