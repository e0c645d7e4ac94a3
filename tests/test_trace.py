"""The trace recorded by the sampler loop: schema, values, saving, and the memory bounds."""

import time
import warnings

import numpy as np
import pytest
import torch
import xarray as xr

import sora_nb
from sora_nb import trace as trace_mod
from sora_nb.trace import (TraceOptions, TraceRecorder, TraceThinned, TraceTooLarge, estimate_trace, open_trace,
                           plan_trace, recorded_steps, trace_options)


def latent_shape(gen, **kwargs):
    """(frame, channel, y, x) of the model's latent for a request (whatever the model's config)."""
    c, f, h, w = gen.backend.latent_shape(gen.request("a red circle", **kwargs))
    return f, c, h, w


def test_schema(gen, video):
    ds = video.trace
    f, c, h, w = latent_shape(gen, steps=4)
    assert isinstance(ds, xr.Dataset)
    assert ds.latent.dims == ("step", "frame", "channel", "y", "x")
    assert ds.x0.dims == ("step", "frame", "channel", "y", "x")
    assert ds.preview.dims == ("step", "frame", "py", "px", "rgb")
    assert ds.latent.dtype == np.float16 and ds.x0.dtype == np.float16 and ds.preview.dtype == np.uint8
    assert ds.latent.shape == (4, f, c, h, w) and ds.preview.shape[:2] == (4, f) and ds.sizes["rgb"] == 3
    assert list(ds.step.values) == [0, 1, 2, 3]
    assert ds.timestep.dims == ("step",) and ds.sigma.dims == ("step",)
    assert ds.step.dtype == np.int64 and ds.sigma.dtype == np.float32 and ds.timestep.dtype == np.float32
    assert np.all(np.diff(ds.sigma.values) < 0) and ds.sigma.values[0] == pytest.approx(1.0)
    np.testing.assert_allclose(ds.time.values, np.arange(f) * 4 / video.fps)  # latent frame k: video frames 4k..
    assert ds.time.attrs["units"] == "s" and ds.frame.dims == ("frame",)
    for key in ("prompt", "seed", "guidance", "steps", "model", "fps", "sora_nb_version"):
        assert key in ds.attrs
    assert ds.attrs["prompt"] == "a red circle moving right" and ds.attrs["fps"] == 8.0
    assert ds.attrs["record_every"] == 1 and ds.attrs["requested_record_every"] == 1
    assert ds.attrs["trace_downsample"] == 1
    assert all(isinstance(v, (str, int, float, np.integer, np.floating)) for v in ds.attrs.values())


@pytest.mark.parametrize("duration, times", [(1.25, [0.0, 0.5, 1.0]), (0.125, [0.0]),
                                             (3.875, [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5])])
def test_time_is_the_start_of_each_latent_frames_video_frames(gen, duration, times):
    """The embedded autoencoder packs video frames 4k..4k+3 into latent frame k whatever the clip's length
    (a short last group is padded), so latent frame k starts at 4k / fps: 10 frames are 0, .5, 1 s, not
    0, .42, .83 s (frames spread evenly over the latent frames, as the trace once had it)."""
    v = gen.generate("a red circle moving right", seed=0, steps=2, duration=duration, retries=0)
    assert v.trace.sizes["frame"] == len(times) and v.num_frames == round(duration * 8)
    np.testing.assert_allclose(v.trace.time.values, times)
    # each start is a video frame the clip has, and the last latent frame's start is its last group's first frame
    assert v.trace.time.values[-1] * v.fps == 4 * ((v.num_frames - 1) // 4)


def test_latent_frame_start_follows_the_frame_rule():
    from sora_nb.backend import Limits

    embedded = Limits(name="e", fps=8.0, max_duration=4.0, sizes=((64, 64),), default_size=(64, 64), temporal_factor=4)
    causal = Limits(name="c", fps=16.0, max_duration=5.0, sizes=((64, 64),), default_size=(64, 64), temporal_factor=4,
                    frame_step=4)
    mochi = Limits(name="m", fps=30.0, max_duration=5.0, sizes=((64, 64),), default_size=(64, 64), temporal_factor=6,
                   frame_step=6)
    assert [embedded.latent_frame_start(k) for k in range(4)] == [0, 4, 8, 12]
    # a causal autoencoder keeps frame 0 alone, then 4 (or 6) frames per latent frame: 1-4, 5-8, ...
    assert [causal.latent_frame_start(k) for k in range(4)] == [0, 1, 5, 9]
    assert [mochi.latent_frame_start(k) for k in range(3)] == [0, 1, 7]


def test_step0_latent_is_the_initial_noise(gen):
    v = gen.generate("a red circle", seed=11, steps=3)
    f, c, h, w = latent_shape(gen, steps=3)
    noise = torch.randn((1, c, f, h, w), generator=torch.Generator().manual_seed(11))
    expected = noise[0].transpose(0, 1).to(torch.float16).numpy()  # (frame, channel, y, x)
    np.testing.assert_array_equal(v.trace.latent.isel(step=0).values, expected)


def test_last_x0_decodes_to_the_frames(gen, video):
    x0 = torch.from_numpy(video.trace.x0.isel(step=-1).values.astype(np.float32))
    frames = gen.backend.decode(x0, video.num_frames)
    assert frames.shape == video.frames.shape
    assert np.abs(frames.astype(int) - video.frames.astype(int)).max() <= 3


def test_preview_is_the_backend_preview_of_x0(gen, video):
    x0 = torch.from_numpy(video.trace.x0.isel(step=2).values.astype(np.float32))
    diff = gen.backend.preview(x0).astype(int) - video.trace.preview.isel(step=2).values.astype(int)
    assert np.abs(diff).max() <= 2  # float16 rounding of x0 only


def test_record_every_keeps_the_last_step(gen):
    v = gen.generate("a red circle", steps=10, record_every=4)
    assert list(v.trace.step.values) == [0, 4, 8, 9]
    assert v.params["record_every"] == 4 and v.trace.attrs["record_every"] == 4
    assert recorded_steps(10, 5) == [0, 5, 9] and recorded_steps(1, 3) == [0]


def test_trace_off_records_nothing_and_builds_no_recorder(gen, monkeypatch):
    class Forbidden:
        def __init__(self, *args, **kwargs):
            raise AssertionError("trace=False must not build a recorder")

    monkeypatch.setattr(sora_nb.api, "TraceRecorder", Forbidden)
    v = gen.generate("a red circle", steps=3, trace=False)
    assert v.trace is None and v.frames.dtype == np.uint8


# -- saving -------------------------------------------------------------------------------------------
def test_plain_netcdf_cannot_store_float16(video, tmp_path):
    with pytest.raises(TypeError, match="float16"):
        video.trace.to_netcdf(tmp_path / "plain.nc")


def test_netcdf_round_trip_is_identical(video, tmp_path):
    path = tmp_path / "t.nc"
    video.trace.sora.to_netcdf(path)
    with xr.open_dataset(path) as raw:  # on disk: float32, marked
        assert raw.latent.dtype == np.float32 and raw.latent.attrs["sora_nb_dtype"] == "float16"
    back = open_trace(path)
    xr.testing.assert_identical(video.trace, back)
    assert back.latent.dtype == np.float16 and back.x0.dtype == np.float16 and back.preview.dtype == np.uint8
    assert "sora_nb_dtype" not in back.latent.attrs
    assert "sora_nb_dtype" not in video.trace.latent.attrs  # saving did not touch the original


def test_netcdf_keeps_every_character_a_prompt_may_hold(gen, tmp_path):
    """Tabs, newlines, quotes and any script survive the netCDF round trip (control characters that would not,
    a NUL, are refused with the prompt)."""
    prompt = 'a red "circle"\tmoving\r\nright, 赤い円 🔴'
    v = gen.generate(prompt, seed=1, steps=2, duration=0.5, retries=0, negative_prompt="blue\nsquare")
    v.trace.sora.to_netcdf(tmp_path / "t.nc")
    back = open_trace(tmp_path / "t.nc")
    assert back.attrs["prompt"] == prompt and back.attrs["negative_prompt"] == "blue\nsquare"
    xr.testing.assert_identical(v.trace, back)


def test_zarr_round_trip(video, tmp_path):
    video.trace.to_zarr(tmp_path / "t.zarr")
    xr.testing.assert_identical(video.trace, xr.open_zarr(tmp_path / "t.zarr").load())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        video.trace.sora.to_zarr(tmp_path / "t2.zarr")
        back = open_trace(tmp_path / "t2.zarr")
    # fixed-width text has no stable zarr v3 encoding (zarr's UnstableSpecificationWarning): none is written;
    # nor is consolidated metadata (ZarrUserWarning: not part of the zarr v3 specification): no warning at all
    assert not [w for w in caught if "Specification" in w.category.__name__], \
        [str(w.message)[:120] for w in caught]
    assert not caught, [f"{w.category.__name__}: {str(w.message)[:120]}" for w in caught]
    stored = xr.open_zarr(tmp_path / "t2.zarr", consolidated=False)
    assert stored.rgb.dtype.kind != "U" and stored.rgb.attrs["sora_nb_dtype"] == "<U1"
    assert list(stored.rgb.values) == ["r", "g", "b"]
    xr.testing.assert_identical(video.trace, back)
    assert back.latent.dtype == np.float16 and back.rgb.dtype == np.dtype("<U1") and "sora_nb_dtype" not in back.rgb.attrs


def test_zarr_appends_and_stores_written_consolidated_warn_nothing(video, tmp_path):
    """An append writes no consolidated metadata either, and open_trace reads a store written with it (as sora_nb
    once wrote them) without a warning: both give back the identical trace."""
    from sora_nb.trace import encode_text_for_zarr

    first, rest = video.trace.isel(step=slice(0, 2)), video.trace.isel(step=slice(2, None))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encode_text_for_zarr(video.trace).to_zarr(tmp_path / "old.zarr", consolidated=True)  # the old writer's store
        encode_text_for_zarr(first).to_zarr(tmp_path / "old_appended.zarr", consolidated=True)
    assert (tmp_path / "old.zarr" / "zarr.json").read_text().count("consolidated_metadata") >= 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first.sora.to_zarr(tmp_path / "a.zarr")
        rest.sora.to_zarr(tmp_path / "a.zarr", append_dim="step")
        rest.sora.to_zarr(tmp_path / "old_appended.zarr", append_dim="step")
        appended, old, old_appended = (open_trace(tmp_path / name) for name in ("a.zarr", "old.zarr",
                                                                                  "old_appended.zarr"))
    assert not caught, [f"{w.category.__name__}: {str(w.message)[:120]}" for w in caught]
    for back in (appended, old, old_appended):
        xr.testing.assert_identical(video.trace, back)


def test_zarr_refusals_name_the_path_and_the_way_out(video, tmp_path):
    """The default mode="w-" over an existing store (or a folder holding anything) is FileExistsError naming the
    path and mode="w" (zarr's own named neither: "Cannot create '' ..."); a path that is a file is refused whatever
    the mode, and left as it was (mode="w" failed inside the atomic swap with NotADirectoryError)."""
    store = tmp_path / "t.zarr"
    video.trace.sora.to_zarr(store)
    with pytest.raises(FileExistsError, match=r"path '.*t\.zarr' already exists \(a zarr store\): pass mode=\"w\" "
                                              r"to replace it"):
        video.trace.sora.to_zarr(store)
    notes = tmp_path / "results"
    notes.mkdir()
    (notes / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"path '.*results' already exists \(a folder\): pass mode=\"w\""):
        video.trace.sora.to_zarr(notes)
    assert [p.name for p in notes.iterdir()] == ["notes.txt"]
    (tmp_path / "empty.zarr").mkdir()  # an empty folder is written into, as zarr does
    video.trace.sora.to_zarr(tmp_path / "empty.zarr")
    xr.testing.assert_identical(video.trace, open_trace(tmp_path / "empty.zarr"))

    video.trace.sora.to_netcdf(tmp_path / "t.nc")
    before = (tmp_path / "t.nc").read_bytes()
    for kwargs in ({}, {"mode": "w"}, {"mode": "a"}):
        with pytest.raises(ValueError, match=r"path '.*t\.nc' is a file, not a zarr store"):
            video.trace.sora.to_zarr(tmp_path / "t.nc", **kwargs)
    assert (tmp_path / "t.nc").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.zarr", "results", "t.nc", "t.zarr"]


@pytest.mark.parametrize("kwargs, named", [
    ({"engine": "scipy"}, r"engine='scipy' \(netCDF3 only\)"),
    ({"format": "NETCDF3_CLASSIC"}, r"format='NETCDF3_CLASSIC'"),
    ({"format": "NETCDF3_64BIT"}, r"format='NETCDF3_64BIT'"),
    ({"engine": "netcdf4", "format": "NETCDF4_CLASSIC"}, r"format='NETCDF4_CLASSIC'"),
])
def test_netcdf_formats_without_uint8_are_refused_by_name(video, tmp_path, kwargs, named):
    """netCDF3 and NETCDF4_CLASSIC have no unsigned byte for the preview: xarray's error spoke of casting
    datetimes; the refusal names the format (or engine) and says NETCDF4 is needed, and writes nothing."""
    with pytest.raises(ValueError, match=rf"cannot write {named}.*no unsigned 8-bit type .*uint8 preview\. "
                                         r"Use format='NETCDF4' \(the default\)"):
        video.trace.sora.to_netcdf(tmp_path / "t.nc", **kwargs)
    assert list(tmp_path.iterdir()) == []
    video.trace.sora.to_netcdf(tmp_path / "t.nc", format="NETCDF4")  # the default, named
    xr.testing.assert_identical(video.trace, open_trace(tmp_path / "t.nc"))


def test_open_trace_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no trace"):
        open_trace(tmp_path / "nothing.nc")


def test_open_trace_of_something_else_is_a_clear_error(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"not a trace")
    with pytest.raises(ValueError, match=r"path '.*clip.mp4' is not a trace written by trace.sora.to_netcdf or to_zarr"):
        open_trace(tmp_path / "clip.mp4")
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, got NoneType"):
        open_trace(None)


def test_netcdf_writes_are_atomic_and_checked(video, tmp_path, monkeypatch):
    """A failed write leaves no half-written file and an older trace intact; a bad path names the folder."""
    path = tmp_path / "t.nc"
    video.trace.sora.to_netcdf(path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"path: folder '.*missing' does not exist \(create it first\)"):
        video.trace.sora.to_netcdf(tmp_path / "missing" / "t.nc")
    with pytest.raises(ValueError, match=r"is a folder, not a file name"):
        video.trace.sora.to_netcdf(tmp_path)
    with pytest.raises(ValueError, match=r"path: folder '.*missing' does not exist"):
        video.trace.sora.to_zarr(tmp_path / "missing" / "t.zarr")

    def crash(self, target, **kwargs):
        with open(target, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", crash)
    with pytest.raises(OSError, match="disk full"):
        video.trace.sora.to_netcdf(path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["t.nc"]
    monkeypatch.undo()
    xr.testing.assert_identical(video.trace, open_trace(path))


def test_zarr_writes_are_atomic_and_open_trace_refuses_what_is_not_a_whole_trace(gen, video, tmp_path, monkeypatch):
    """A zarr store replaced by a write that fails (or is killed) stays the old one: it was half written, and
    open_trace read it with NaN where the write stopped; a dataset without the trace's variables is refused."""
    import json

    path = tmp_path / "t.zarr"
    video.trace.sora.to_zarr(path)
    other = gen.generate("a blue square moving up", seed=1, steps=3).trace
    original = xr.Dataset.to_zarr

    def crash(self, store, **kwargs):
        original(self[["latent"]], store, **kwargs)  # part of it, then the write stops
        raise KeyboardInterrupt

    monkeypatch.setattr(xr.Dataset, "to_zarr", crash)
    with pytest.raises(KeyboardInterrupt):
        other.sora.to_zarr(path, mode="w")
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["t.zarr"]
    xr.testing.assert_identical(video.trace, open_trace(path))
    other.sora.to_zarr(path, mode="w")  # a whole write replaces it
    xr.testing.assert_identical(other, open_trace(path))
    assert [p.name for p in tmp_path.iterdir()] == ["t.zarr"]
    with pytest.raises(Exception, match="already exists|contains"):  # zarr's own refusal without mode="w"
        other.sora.to_zarr(path)

    video.trace[["latent"]].to_zarr(tmp_path / "half.zarr")
    with pytest.raises(ValueError, match=r"is not a trace .*: it has no x0, preview over steps and frames"):
        open_trace(tmp_path / "half.zarr")
    xr.Dataset({"temperature": ("t", np.zeros(3))}).to_netcdf(tmp_path / "weather.nc")
    with pytest.raises(ValueError, match=r"weather.nc' is not a trace .*no latent, x0, preview .*temperature"):
        open_trace(tmp_path / "weather.nc")
    back = open_trace(path)
    json.dumps(back.attrs)  # Python numbers again (numpy int64 after a netCDF or zarr round trip)
    assert type(back.attrs["seed"]) is int


def test_a_downsample_past_the_latent_pools_it_to_one_cell(gen):
    with trace_mod.trace_options(downsample=32):  # the latent is 16x16: a run failed inside torch
        v = gen.generate("a red circle moving right", seed=0, steps=3)
    assert (v.trace.sizes["y"], v.trace.sizes["x"]) == (1, 1) and v.trace.attrs["trace_downsample"] == 16
    with pytest.raises(ValueError, match=r"record_every must be an integer in \[1, 1000\], got 0"):
        TraceRecorder(gen.backend.preview, record_every=0)


# -- memory bounds ------------------------------------------------------------------------------------
def data_bytes(ds):
    """Bytes of the data variables (what estimate_trace_bytes counts)."""
    return sum(ds[v].nbytes for v in ("latent", "x0", "preview"))


def test_estimate_before_the_run_matches_the_trace(gen):
    plan = estimate_trace(gen, "a red circle", steps=6, record_every=2)
    v = gen.generate("a red circle", steps=6, record_every=2)
    assert plan.steps == (0, 2, 4, 5) and plan.record_every == 2 and not plan.thinned
    assert plan.nbytes == data_bytes(v.trace)
    assert "MB" in str(plan) and "4 of 6 steps" in str(plan)


def test_thinning_past_the_limit_is_said_aloud(gen):
    full = estimate_trace(gen, "a red circle", steps=12).nbytes
    limit_mb = full * 0.45 / 2**20
    with trace_options(max_mb=limit_mb), pytest.warns(TraceThinned, match="thinned from record_every=1"):
        v = gen.generate("a red circle", steps=12)
    kept = list(v.trace.step.values)
    assert kept[0] == 0 and kept[-1] == 11 and 2 <= len(kept) < 12
    assert data_bytes(v.trace) <= limit_mb * 2**20
    k = v.trace.attrs["record_every"]
    assert kept == recorded_steps(12, k) and v.trace.attrs["requested_record_every"] == 1
    assert data_bytes(v.trace) > 0
    # the smallest record_every that fits: one less would not have fitted
    per_step = full // 12
    assert len(recorded_steps(12, k - 1)) * per_step > limit_mb * 2**20
    assert trace_mod.get_trace_options().max_mb == TraceOptions().max_mb  # restored after the block


def test_trace_option_blocks_in_two_threads_keep_to_their_thread():
    """Blocks that overlap in two threads: each sees its own options, and both leave the defaults behind (the
    process-wide swap restored one thread's options over the other's, for good)."""
    import threading

    default = trace_mod.get_trace_options()
    a_in, b_in, b_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def a():
        with trace_options(max_mb=5):
            a_in.set()
            b_in.wait(10)
            seen["a"] = trace_mod.get_trace_options().max_mb
        b_out.wait(10)

    def b():
        a_in.wait(10)
        with trace_options(max_mb=7, on_limit="raise"):
            b_in.set()
            seen["b"] = (trace_mod.get_trace_options().max_mb, trace_mod.get_trace_options().on_limit)
            time.sleep(0.1)  # a's block ends first
        b_out.set()

    threads = [threading.Thread(target=f) for f in (a, b)]
    [t.start() for t in threads]
    [t.join(20) for t in threads]
    assert seen == {"a": 5.0, "b": (7.0, "raise")}
    assert trace_mod.get_trace_options() == default
    with trace_options(max_mb=3):
        with trace_options(on_limit="raise"):
            assert (trace_mod.get_trace_options().max_mb, trace_mod.get_trace_options().on_limit) == (3.0, "raise")
        assert trace_mod.get_trace_options().on_limit == default.on_limit
    with pytest.raises(ValueError, match="max_mb"), trace_options(max_mb=-1):
        pass
    assert trace_mod.get_trace_options() == default


def test_refusal_happens_before_the_first_step(gen):
    steps_seen = []

    class Counter:
        def on_step(self, event):
            steps_seen.append(event.step)

    with trace_options(max_mb=0.001, on_limit="raise"), pytest.raises(TraceTooLarge, match="over the limit"):
        gen.generate("a red circle", steps=5, observers=[Counter()])
    assert steps_seen == []


def test_refusal_when_even_two_steps_do_not_fit(gen):
    with trace_options(max_mb=1e-4), pytest.raises(TraceTooLarge, match="first and last steps"):
        gen.generate("a red circle", steps=5)


def test_plan_rules():
    latent, preview = (4, 16, 60, 104), (4, 60, 104, 3)
    per_step = 2 * 2 * 4 * 16 * 60 * 104 + 4 * 60 * 104 * 3
    assert plan_trace(50, latent, preview, 1, TraceOptions()).nbytes == 50 * per_step
    thin = plan_trace(50, latent, preview, 1, TraceOptions(max_mb=10 * per_step / 2**20))
    assert thin.record_every == 6 and len(thin.steps) == 10 and thin.thinned  # 0, 6, ..., 48, 49
    big = plan_trace(10, (21, 16, 90, 160), (21, 90, 160, 3), 1, TraceOptions())
    assert big.downsample == 2  # 160 > max_side 128: averaged over 2 x 2 blocks
    assert plan_trace(10, (21, 16, 90, 160), (21, 90, 160, 3), 1, TraceOptions(downsample=1)).downsample == 1
    with pytest.raises(ValueError, match="on_limit"):
        TraceOptions(on_limit="drop")
    with pytest.raises(ValueError, match="max_mb"):
        TraceOptions(max_mb=0)
    with pytest.raises(ValueError, match="downsample"):
        TraceOptions(downsample=0)


@pytest.mark.parametrize("call, where", [
    (lambda: trace_options(max_MB=5).__enter__(), r"trace_options\(\) got unknown trace option 'max_MB' "
                                                   r"\(did you mean 'max_mb'\?\)"),
    (lambda: trace_mod.set_trace_options(limit=5), r"set_trace_options\(\) got unknown trace option 'limit'; "),
    (lambda: TraceRecorder(lambda x0: x0, maxmb=5), r"TraceRecorder\(\) got unknown trace option 'maxmb' "
                                                    r"\(did you mean 'max_mb'\?\)"),
])
def test_a_misspelled_trace_option_is_refused_with_the_valid_names(call, where):
    default = trace_mod.get_trace_options()
    with pytest.raises(TypeError, match=where + r".*the options are max_mb, on_limit, downsample, max_side$"):
        call()
    assert trace_mod.get_trace_options() == default


def test_bad_limits_and_step_counts_are_clear_errors():
    """A max_mb too large for a float was a bare OverflowError; zero steps an IndexError from the planner."""
    for value in (10**400, -(10**400)):
        with pytest.raises(ValueError, match=r"^max_mb must be a finite number > 0 \(MB\), got a number too large "
                                             r"for a float$"):
            trace_options(max_mb=value).__enter__()
    assert TraceOptions(max_mb=10**300).max_mb == 10**300  # large, but a float holds it
    latent, preview = (4, 16, 16, 16), (4, 16, 16, 3)
    for call in (lambda: plan_trace(0, latent, preview), lambda: recorded_steps(0, 1),
                 lambda: plan_trace(-3, latent, preview)):
        with pytest.raises(ValueError, match=r"^num_steps must be an integer in \[1, \d+\], got -?\d+$"):
            call()
    with pytest.raises(ValueError, match=r"^record_every must be an integer in \[1, \d+\], got 0$"):
        recorded_steps(5, 0)
    with pytest.raises(TypeError, match=r"^num_steps must be an integer"):
        recorded_steps(2.5, 1)
    assert recorded_steps(1, 1) == [0] and plan_trace(1, latent, preview).steps == (0,)


def test_downsampled_previews_are_the_preview_of_the_stored_x0_on_either_path(gen, monkeypatch):
    """Downsampled, the preview is the backend's preview of the pooled x0 the trace stores, on the CPU path as on
    the CUDA one (which the CPU path averaged the clamped uint8 preview instead of, 35 levels apart): here the CUDA
    path runs on the CPU, with tensors that say is_cuda and pinned buffers and events faked."""
    from sora_nb import sampler

    be = gen.backend
    request = gen.request("a red circle moving right", seed=1, steps=5, retries=0, trace=False, record_every=2)

    class FakeCuda(torch.Tensor):
        @property
        def is_cuda(self):
            return True

    class Event:
        def record(self):
            pass

        def synchronize(self):
            pass

    class OnCuda:
        limits = be.limits

        def __getattr__(self, name):
            return getattr(be, name)

        def denoise(self, req, generator):
            for e in be.denoise(req, generator):
                e.latent, e.x0, e.x_next = (t.as_subclass(FakeCuda) for t in (e.latent, e.x0, e.x_next))
                yield e

        def decode(self, latents, num_frames):
            return be.decode(latents.as_subclass(torch.Tensor), num_frames)

        def preview(self, x0):
            return be.preview(x0.as_subclass(torch.Tensor))

    empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *a, pin_memory=False, **k: empty(*a, **k))
    monkeypatch.setattr(torch.cuda, "Event", Event)
    with trace_options(downsample=2):
        cpu, cuda = TraceRecorder(be.preview, record_every=2), TraceRecorder(OnCuda().preview, record_every=2)
    sampler.run(be, request, observers=[cpu])
    sampler.run(OnCuda(), request, observers=[cuda])
    a, b = cpu.dataset, cuda.dataset
    assert a.attrs["trace_downsample"] == 2 and list(a.step.values) == [0, 2, 4] and a.preview.shape[2:4] == (8, 8)
    np.testing.assert_array_equal(a.x0.values, b.x0.values)
    np.testing.assert_array_equal(a.preview.values, b.preview.values)
    for i in range(a.sizes["step"]):
        x0 = torch.from_numpy(a.x0.values[i]).float()
        np.testing.assert_array_equal(a.preview.values[i], be.preview(x0))


def test_spatial_downsampling_averages_blocks(gen):
    full = gen.generate("a red circle", seed=3, steps=3)
    with trace_options(downsample=2):
        small = gen.generate("a red circle", seed=3, steps=3)
    s, f, c, h, w = full.trace.latent.shape
    assert small.trace.latent.shape == (s, f, c, h // 2, w // 2)
    assert small.trace.preview.shape[2:4] == (full.trace.preview.shape[2] // 2, full.trace.preview.shape[3] // 2)
    assert small.trace.attrs["trace_downsample"] == 2
    pooled = full.trace.latent.values.astype(np.float32).reshape(s, f, c, h // 2, 2, w // 2, 2).mean(axis=(4, 6))
    # both sides went through float16 (the trace's storage): about 1e-3 relative apart at most (2^-11 per rounding)
    np.testing.assert_allclose(small.trace.latent.values.astype(np.float32), pooled, atol=2e-3, rtol=1e-3)
    np.testing.assert_array_equal(small.frames, full.frames)  # the video itself is untouched


def test_backends_without_latent_shape_are_planned_at_the_first_step(gen, video):
    recorder = TraceRecorder(lambda x0: gen.backend.preview(x0))  # not a bound backend method
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gen.generate("a red circle moving right", seed=0, steps=4, trace=False, observers=[recorder])
    assert recorder.plan is not None and recorder.plan.steps == (0, 1, 2, 3)
    expected = video.trace.copy()
    expected.attrs["trace"] = 0  # the only difference: this run asked for trace=False
    xr.testing.assert_identical(recorder.dataset, expected)



def test_a_cancelled_run_keeps_the_steps_it_recorded(gen):
    """The recorder's arrays are sized for every planned step; a run cancelled after two steps gives a trace of
    those two, equal to the first two of the same run left to finish."""
    import threading

    from sora_nb.trace import TraceRecorder

    full = gen.generate("a red circle", seed=4, steps=10, retries=0)
    cancel = threading.Event()
    recorder = TraceRecorder(gen.backend.preview)

    class StopAfterTwo:
        def on_step(self, event):
            if event.step == 1:
                cancel.set()

    with pytest.raises(sora_nb.Cancelled):
        gen.generate("a red circle", seed=4, steps=10, retries=0, trace=False, observers=[recorder, StopAfterTwo()],
                     cancel=cancel)
    ds = recorder.dataset
    assert ds.attrs["cancelled"] and list(ds.step.values) == [0, 1]
    for name in ("latent", "x0", "preview"):
        np.testing.assert_array_equal(ds[name].values, full.trace[name].values[:2])
        assert ds[name].values.base is None or ds[name].values.base.shape[0] == 2  # the 8 unused steps freed
