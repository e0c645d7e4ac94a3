"""The latent inspector's Python side: what it sends to the browser and what it shows.

Most tests use the toy backend (tests/browser/toy.py), whose denoising changes visibly at every
step; the embedded placeholder model predicts a zero velocity, so its steps all look alike.
"""

import re

import numpy as np
import pytest
import traitlets

import sora_nb
from browser.toy import RGB_MAP, toy_generator
from sora_nb.frontend import read_module
from sora_nb.inspector import (Inspector, _apply_map, channel_heatmap, channel_vmax, delta_heatmap, delta_vmax,
                               fit_rgb_map, step_stats, to_rgb)


@pytest.fixture(scope="module")
def toy():
    return toy_generator()


@pytest.fixture(scope="module")
def toy5(toy):
    return toy.generate("a disc", seed=0, steps=8, guidance=5.0)


@pytest.fixture(scope="module")
def toy1(toy):
    return toy.generate("a disc", seed=0, steps=8, guidance=1.0)


def test_inspect_the_default_clip(video):
    w = sora_nb.inspect(video)
    ds = video.trace
    s, f, h, w_ = ds.sizes["step"], ds.sizes["frame"], ds.sizes["py"], ds.sizes["px"]
    assert isinstance(w, Inspector)
    assert (w.step, w.frame, w.view, w.channel) == (0, 0, "x0", 0)
    assert isinstance(w.a_views, bytes) and len(w.a_views) == 3 * s * f * h * w_ * 3  # x0, xt, delta stacks
    assert len(w.a_heat) == s * f * h * w_ * 3 and w.b_views == b"" and w.meta["b"] is None
    assert w.meta["a"]["shape"] == [s, f, h, w_] and w.meta["a"]["channels"] == ds.sizes["channel"]
    for step, frame in [(0, 0), (s - 1, f - 1), (1, f // 2)]:
        w.step, w.frame = step, frame
        np.testing.assert_array_equal(w.image(), ds.preview.values[step, frame])
    np.testing.assert_array_equal(w.clip(), ds.preview.values[w.step])
    np.testing.assert_array_equal(w.across_steps(), ds.preview.values[:, w.frame])
    assert w.scale * max(h, w_) == pytest.approx(256, abs=max(h, w_))


def test_image_changes_with_step_in_every_view(toy5):
    w = sora_nb.inspect(toy5)
    for view in ("x0", "xt", "channel", "delta"):
        w.view = view
        first, last = w.image(step=1), w.image(step=7)
        changed = np.any(first != last, axis=-1).mean()
        assert changed > 0.2, (view, changed)
        w.step = 7
        np.testing.assert_array_equal(w.image(), last)
        w.step = 0


def test_x0_and_xt_views_use_the_previews_map(toy5):
    ds = toy5.trace
    fitted = fit_rgb_map(ds)
    np.testing.assert_allclose(fitted, RGB_MAP, atol=0.01)  # recovered from (x0, preview) pairs
    assert np.abs(_apply_map(ds.x0.values, fitted).astype(int) - ds.preview.values).max() <= 1
    w = sora_nb.inspect(toy5, view="xt")
    noise = ds.latent.values[0, 3].astype(np.float32)  # x_t at step 0 is the initial noise
    by_hand = _apply_map(noise, RGB_MAP)
    assert np.abs(w.image(step=0, frame=3).astype(int) - by_hand).max() <= 2
    xt = to_rgb(ds, "latent")
    assert xt.dims == ("step", "frame", "y", "x", "rgb") and xt.dtype == np.uint8
    np.testing.assert_array_equal(xt.values[0, 3], w.image(step=0, frame=3))


def test_channel_view_resends_one_heatmap_per_channel(toy5):
    ds = toy5.trace
    w = sora_nb.inspect(toy5, view="channel", channel=0)
    assert w.heat_channel == 0
    np.testing.assert_array_equal(w.image(step=7, frame=2), channel_heatmap(ds, 0)[7, 2])
    before = w.a_heat
    w.channel = 2
    assert w.heat_channel == 2 and w.a_heat != before
    np.testing.assert_array_equal(w.image(step=7, frame=2), channel_heatmap(ds, 2)[7, 2])
    # diverging colours: negative blue-ish, positive red-ish (channel 0 is the disc, > 0 inside it)
    heat = channel_heatmap(ds, 0)[7, 2].astype(int)
    disc = ds.x0.values[7, 2, 0] > 0.5
    assert (heat[disc, 0] - heat[disc, 2]).mean() > 50
    with pytest.raises(traitlets.TraitError, match=r"channel must be an index in \[0, 3\]"):
        w.channel = 4


def test_delta_view_is_black_at_the_first_step(toy5):
    w = sora_nb.inspect(toy5, view="delta")
    first = w.image(step=0).reshape(-1, 3)
    assert np.all(first == first[0]) and first[0].sum() < 30  # magma's darkest colour everywhere
    assert w.image(step=7).astype(int).sum() > first.astype(int).sum() * 5
    np.testing.assert_array_equal(delta_heatmap(toy5.trace)[5, 1], w.image(step=5, frame=1))


def test_step_stats(toy5):
    ds = toy5.trace
    stats = step_stats(ds)
    np.testing.assert_allclose(stats["sigma"], ds.sigma.values)
    assert stats["guidance"] == [5.0] * 8  # a backend that does not vary it: the request's, at every step
    assert step_stats(ds.drop_vars("guidance"))["guidance"] == [None] * 8  # a trace saved before it was kept
    assert stats["step"] == list(range(8)) and stats["update"][0] is None
    x0 = ds.x0.values.astype(np.float32)
    assert stats["update"][3] == pytest.approx(float(np.sqrt(np.mean((x0[3] - x0[2]) ** 2))), rel=1e-5)
    assert stats["latent_std"][0] == pytest.approx(float(ds.latent.values[0].astype(np.float32).std()), rel=1e-5)
    assert stats["latent_std"][0] > stats["latent_std"][6]  # the noise goes away
    w = sora_nb.inspect(toy5)
    assert w.meta["a"]["stats"] == stats
    np.testing.assert_allclose(w.meta["a"]["time"], ds.time.values)


def test_compare_two_guidance_values(toy5, toy1):
    w = sora_nb.inspect(toy5, compare=toy1)
    assert w.meta["a"]["label"] == "guidance 5" and w.meta["b"]["label"] == "guidance 1"
    assert len(w.b_views) == len(w.a_views) and len(w.b_heat) == len(w.a_heat)
    w.step = 7
    np.testing.assert_array_equal(w.image("b"), toy1.trace.preview.values[7, 0])
    assert np.any(w.image("a") != w.image("b"))
    w.view = "channel"  # both panels follow the same state, on one colour scale
    vmax = max(channel_vmax(toy5.trace, 0), channel_vmax(toy1.trace, 0))
    assert vmax == channel_vmax(toy5.trace, 0) > channel_vmax(toy1.trace, 0)  # guidance 5: the stronger disc
    np.testing.assert_array_equal(w.image("b"), channel_heatmap(toy1.trace, 0, vmax=vmax)[7, 0])
    np.testing.assert_array_equal(w.image("a"), channel_heatmap(toy5.trace, 0)[7, 0])


def test_compare_needs_the_same_steps_and_frames(toy, toy5):
    other = toy.generate("a disc", seed=0, steps=5)
    with pytest.raises(ValueError, match="compare must have as many recorded steps"):
        sora_nb.inspect(toy5, compare=other)


def test_inspect_a_trace_read_back_from_netcdf(toy5, tmp_path):
    toy5.trace.sora.to_netcdf(tmp_path / "toy.nc")
    back = sora_nb.open_trace(tmp_path / "toy.nc")
    assert sora_nb.inspect(back).a_views == sora_nb.inspect(toy5.trace).a_views


def test_errors_are_clear(toy, toy5):
    with pytest.raises(TypeError, match="must be a sora_nb.Video or its trace"):
        sora_nb.inspect(np.zeros((2, 2)))
    with pytest.raises(TypeError, match="compare must be"):
        sora_nb.inspect(toy5, compare="guidance 7")
    no_trace = toy.generate("a disc", steps=2, trace=False)
    with pytest.raises(ValueError, match="trace=False"):
        sora_nb.inspect(no_trace)
    with pytest.raises(ValueError, match="no preview"):
        sora_nb.inspect(toy5.trace.drop_vars("preview"))
    with pytest.raises(ValueError, match="view must be one of 'x0', 'xt', 'channel', 'delta'"):
        sora_nb.inspect(toy5, view="noise")
    with pytest.raises(ValueError, match="max_payload_mb"):
        sora_nb.inspect(toy5, max_payload_mb=0.01)
    w = sora_nb.inspect(toy5)
    with pytest.raises(traitlets.TraitError, match=r"step must be an index in \[0, 7\]"):
        w.step = 8
    with pytest.raises(traitlets.TraitError):
        w.view = "noise"
    with pytest.raises(ValueError, match="panel must be one of 'a'"):
        w.image("b")
    for name, bad, error, match in (("fps", float("nan"), ValueError, r"fps must be a finite number >= 0.1 and <= 240"),
                                    ("fps", -1, ValueError, r"fps must be >= 0.1 and <= 240 per second, got -1"),
                                    ("scale", -3, ValueError, r"scale must be an integer in \[1, 64\], got -3"),
                                    ("scale", 2.5, TypeError, r"scale must be an integer in \[1, 64\], got float")):
        with pytest.raises(error, match=match):
            sora_nb.inspect(toy5, **{name: bad})
        with pytest.raises(traitlets.TraitError, match=name):  # set later, as the step is (a float scale: traitlets' own)
            setattr(w, name, bad)
    assert w.scale == 16 and w.fps == 4.0  # a refused value changes nothing
    for kwargs, error, match in ((dict(channel=1.5), TypeError, r"channel must be an integer index in \[0, \d+\], got float"),
                                 (dict(channel="1"), TypeError, r"channel must be an integer index .*got str '1'"),
                                 (dict(channel=16), ValueError, r"channel must be an index in \[0, \d+\], got 16"),
                                 (dict(max_payload_mb="64"), TypeError, r"max_payload_mb must be a number > 0"),
                                 (dict(max_payload_mb=float("nan")), ValueError, r"max_payload_mb must be a finite number")):
        with pytest.raises(error, match=match):  # nan used to turn the payload limit off
            sora_nb.inspect(toy5, **kwargs)
    with pytest.raises(TypeError, match=r"step must be an integer index in \[0, 7\], got float 1.5"):
        w.image(step=1.5)
    with pytest.raises(ValueError, match=r"frame must be an index in \[0, \d+\], got -1"):
        w.image(frame=-1)


def test_a_tiny_preview_gets_a_scale_a_player_may_use(toy5):
    """The default scale aims at 256 CSS pixels; for a preview of 2 x 2 pixels that was 128, past the players'
    limit of 64, so inspect() refused a scale its caller never passed (and the panel's Inspect button failed)."""
    small = toy5.trace.isel(py=slice(0, 2), px=slice(0, 2), y=slice(0, 2), x=slice(0, 2))
    w = sora_nb.inspect(small)
    assert w.scale == 64 and w.image().shape == (2, 2, 3)


def test_an_infinite_value_in_x0_leaves_the_rgb_map_as_it_was(toy5):
    """fit_rgb_map drops non-finite samples: one inf in x0 made the whole x_t view one flat colour."""
    clean = fit_rgb_map(toy5.trace)
    broken = toy5.trace.copy(deep=True)
    broken.x0.values[0, 0, 0, 0, 0] = np.inf
    np.testing.assert_allclose(fit_rgb_map(broken), clean, atol=1e-3)
    broken.x0.values[:] = np.nan
    with pytest.raises(ValueError, match=r"x0 has 0 finite pixels, fewer than the 5 .*: the run diverged"):
        fit_rgb_map(broken)


def test_a_nan_patch_at_one_step_leaves_the_other_steps_views_as_they_were(toy5):
    """One NaN made every scale NaN: the channel view of every step and frame one flat colour, the change view
    on a scale of 1, and the stats the widget sends not JSON."""
    import json
    import warnings

    clean = toy5.trace
    broken = clean.copy(deep=True)
    for var in ("x0", "latent"):
        broken[var].values[-1, 0, :, :4, :4] = np.nan  # a 4x4 patch at the last step of frame 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "invalid value encountered in cast"
        vmax = channel_vmax(broken, 0)
        assert np.isfinite(vmax) and vmax == pytest.approx(channel_vmax(clean, 0), rel=0.05)
        heat = channel_heatmap(broken, 0, vmax=channel_vmax(clean, 0))
        np.testing.assert_array_equal(heat[:-1], channel_heatmap(clean, 0)[:-1])  # every step before it
        assert len(np.unique(heat[0].reshape(-1, 3), axis=0)) > 10
        np.testing.assert_array_equal(_apply_map(broken.latent.values[:-1], fit_rgb_map(clean)),
                                      _apply_map(clean.latent.values[:-1], fit_rgb_map(clean)))
        w = sora_nb.inspect(broken)
    json.dumps(w.meta, allow_nan=False)  # what the kernel sends: null for a missing number, not "nan"
    assert w.meta["a"]["stats"]["update"][-1] is None and w.meta["a"]["stats"]["update"][1] is not None


def test_heat_channel_follows_the_stacks_sent(toy5):
    """heat_channel took any value: set to 99, or to 5 while channel 0's stacks were shown, the label named one
    channel and the stacks showed another, and a later channel change to it sent nothing."""
    w = sora_nb.inspect(toy5, view="channel", channel=0)
    for bad in (99, 2):
        with pytest.raises(traitlets.TraitError, match=r"heat_channel is the channel of the heat stacks sent \(0\)"):
            w.heat_channel = bad
    w.channel = 2
    assert w.heat_channel == 2
    np.testing.assert_array_equal(w.image(step=7, frame=2), channel_heatmap(toy5.trace, 2)[7, 2])


def test_the_view_helpers_check_their_arguments(toy5):
    """channel_heatmap(ch=16) raised numpy's IndexError, ch=-1 drew the last channel, vmax=-1 or NaN one flat colour;
    a Video was 'not subscriptable'. They take a Video or a trace, as to_rgb does, and name the range."""
    ds = toy5.trace
    n = ds.sizes["channel"]
    for bad in (n, -1):
        with pytest.raises(ValueError, match=rf"channel must be an index in \[0, {n - 1}\], got {bad}"):
            channel_heatmap(ds, bad)
    for vmax in (-1.0, 0.0, float("nan")):
        with pytest.raises(ValueError, match=r"vmax must be"):
            channel_heatmap(ds, 0, vmax=vmax)
        with pytest.raises(ValueError, match=r"vmax must be"):
            delta_heatmap(ds, vmax=vmax)
    np.testing.assert_array_equal(channel_heatmap(toy5, 1), channel_heatmap(ds, 1))  # a Video: its trace
    assert channel_vmax(toy5, 1) == channel_vmax(ds, 1) and step_stats(toy5) == step_stats(ds)
    with pytest.raises(ValueError, match=r"var must be 'x0' or 'latent'"):
        channel_vmax(ds, 0, var="preview")


def test_the_payload_limit_names_a_small_size_and_the_fit_keeps_its_sample_cap(toy5, monkeypatch):
    from sora_nb import inspector

    with pytest.raises(ValueError, match=r"would send 0\.\d+ MB to the browser \(limit max_payload_mb=0.0001\)"):
        sora_nb.inspect(toy5, max_payload_mb=0.0001)  # it said "0 MB"
    seen = []
    solve = np.linalg.solve
    monkeypatch.setattr(inspector, "MAX_FIT_PIXELS", 100)
    monkeypatch.setattr(np.linalg, "solve", lambda a, b: (seen.append(a[-1, -1]), solve(a, b))[1])
    fit_rgb_map(toy5.trace)
    assert 50 < seen[0] < 100.5  # (with its small ridge) the Gram matrix's last entry counts the samples: up to twice the cap before


def test_front_end_module():
    src = read_module("inspector.js")
    assert "export default" in src and "function render" in src and "putImageData" in src
    for name in ("sora-nb-inspector-main", 'sliderRow("step")', 'sliderRow("frame")', "sora-nb-inspector-${axis}",
                 "sora-nb-inspector-play-${axis}", "sora-nb-inspector-plot", "sora-nb-inspector-clip",
                 "sora-nb-inspector-steps", "sora-nb-inspector-view", "sora-nb-inspector-channel"):
        assert name in src, name
    assert "base64" not in src and "atob(" not in src  # frames arrive as binary buffers


def test_public_api():
    assert sora_nb.inspect is sora_nb.inspector.inspect and "inspect" in sora_nb.__all__
    assert sora_nb.open_trace is sora_nb.trace.open_trace and "open_trace" in sora_nb.__all__


# -- built a step at a time, byte for byte what the whole-trace formulas give -------------------------
def synthetic_trace(seed, steps=6, frames=3, channels=16, h=24, w=40, ph=37, pw=50):
    """A trace with sora_nb's layout: smooth float16 x0, x_t = x0 plus shrinking noise, and a uint8 preview of x0
    through a linear map (some pixels saturated) at another resolution than the latent's. A step holds 46,080
    values, more than numpy sums in one block, so a sum over a step is not a sum over a block by luck."""
    import xarray as xr

    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    freq, phase = rng.uniform(1, 4, (channels, 1, 1)), rng.uniform(0, 6, (channels, 1, 1))
    sigma = np.linspace(1.0, 1.0 / steps, steps).astype(np.float32)
    t = np.arange(frames)[:, None, None, None] * 0.1
    clean = 1.5 * np.sin(freq * (xx + t) + phase) * np.cos(freq * yy - phase)              # (F, C, h, w)
    x0 = (clean + sigma[:, None, None, None, None] * rng.normal(0, 0.5, (steps, *clean.shape))).astype(np.float16)
    latent = ((1 - sigma[:, None, None, None, None]) * x0
              + sigma[:, None, None, None, None] * rng.standard_normal(x0.shape)).astype(np.float16)
    rgb_map = rng.normal(0, 0.3, (channels + 1, 3)).astype(np.float32)
    rgb = np.clip(np.rint((np.moveaxis(x0.astype(np.float32), 2, -1) @ rgb_map[:-1] + rgb_map[-1] + 1) * 127.5), 0, 255)
    preview = rgb.astype(np.uint8)[:, :, (np.arange(ph) * h) // ph][:, :, :, (np.arange(pw) * w) // pw]
    dims = ("step", "frame", "channel", "y", "x")
    return xr.Dataset(
        {"latent": (dims, latent), "x0": (dims, x0), "preview": (("step", "frame", "py", "px", "rgb"), preview)},
        coords={"step": ("step", np.arange(steps) * 2), "sigma": ("step", sigma), "timestep": ("step", sigma * 1000),
                "guidance": ("step", np.full(steps, 5.0, np.float32)), "frame": ("frame", np.arange(frames)),
                "time": ("frame", np.arange(frames, dtype=np.float32) / 4), "rgb": ("rgb", ["r", "g", "b"])},
        attrs={"prompt": "synthetic", "seed": seed, "guidance": 5.0})


def diverged(ds):
    """``ds`` with a NaN patch at the last step, infinities and a negative zero."""
    ds = ds.copy(deep=True)
    ds.x0.values[-1, 0, :, :4, :4] = np.nan
    ds.latent.values[-1, 0, :, :3, :3] = np.inf
    ds.x0.values[0, -1, 1, 2, 2] = -np.inf
    ds.x0.values[2, 1, 0, 1, 1] = -0.0
    return ds


def reference_views(ds, delta_vmax=None, channel=0, channel_vmax_=None):
    """What the inspector computed before it worked a step at a time, from whole-trace float32 copies: the x0, xt
    and delta stacks (bytes), a channel's heat stack (bytes), the scales, the rgb map and the stats."""
    import matplotlib

    def colorize(values, lo, hi, cmap):
        lut = (matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)
        span = hi - lo if hi > lo else 1.0
        scaled = np.nan_to_num((values - lo) / span * 255, nan=0.0, posinf=255.0, neginf=0.0)
        return lut[np.clip(np.rint(scaled), 0, 255).astype(np.uint8)]

    def percentile(values):
        values = values[np.isfinite(values)]
        return float(np.percentile(values, 99.5)) if values.size else 0.0

    def resize(stack, h, w):
        iy, ix = (np.arange(h) * stack.shape[2]) // h, (np.arange(w) * stack.shape[3]) // w
        return np.ascontiguousarray(stack[:, :, iy][:, :, :, ix])

    c, (h, w), (ph, pw) = ds.sizes["channel"], (ds.sizes["y"], ds.sizes["x"]), (ds.sizes["py"], ds.sizes["px"])
    x0, latent = ds.x0.values.astype(np.float32), ds.latent.values.astype(np.float32)
    # the rgb map
    x = x0.transpose(0, 1, 3, 4, 2).reshape(-1, c)
    y = resize(ds.preview.values, h, w).astype(np.float32).reshape(-1, 3)
    ok = np.all((y > 0) & (y < 255), axis=1) & np.all(np.isfinite(x), axis=1)
    idx = np.flatnonzero(ok)
    idx = idx[:: -(-len(idx) // 20_000)]
    a = np.concatenate([x[idx], np.ones((len(idx), 1), np.float32)], axis=1).astype(np.float64)
    gram = a.T @ a
    ridge = 1e-6 * np.trace(gram) / len(gram) * np.eye(len(gram))
    rgb_map = np.linalg.solve(gram + ridge, a.T @ (y[idx].astype(np.float64) / 127.5 - 1.0)).astype(np.float32)
    # x_t through it
    z = np.moveaxis(latent, -3, -1)
    rgb = np.nan_to_num(z @ rgb_map[:-1] + rgb_map[-1], nan=0.0, posinf=1.0, neginf=-1.0)
    xt = np.clip(np.rint((rgb + 1.0) * 127.5), 0, 255).astype(np.uint8)
    # the change of x0, its scale; the channel's scale
    change = np.zeros((x0.shape[0], x0.shape[1], h, w), np.float32)
    change[1:] = np.sqrt(np.mean(np.square(np.diff(x0, axis=0)), axis=2))
    own_delta_vmax = percentile(change[1:]) or 1.0
    own_channel_vmax = {var: percentile(np.abs(ds[var].values[:, :, channel].astype(np.float32))) or 1.0
                        for var in ("x0", "latent")}
    delta_vmax = own_delta_vmax if delta_vmax is None else delta_vmax
    channel_vmax_ = own_channel_vmax["x0"] if channel_vmax_ is None else channel_vmax_
    views = (np.ascontiguousarray(ds.preview.values).tobytes() + resize(xt, ph, pw).tobytes()
             + resize(colorize(change, 0.0, delta_vmax, "magma"), ph, pw).tobytes())
    heat = resize(colorize(x0[:, :, channel], -channel_vmax_, channel_vmax_, "RdBu_r"), ph, pw).tobytes()
    axes = (1, 2, 3, 4)
    stats = {"step": [int(v) for v in ds.step.values], "sigma": [float(v) for v in ds.sigma.values],
             "timestep": [float(v) for v in ds.timestep.values], "guidance": [float(v) for v in ds.guidance.values],
             "latent_std": [float(v) for v in latent.std(axis=axes)], "x0_std": [float(v) for v in x0.std(axis=axes)],
             "update": [None] + [float(v) for v in np.sqrt(np.mean(np.square(np.diff(x0, axis=0)), axis=axes))]}
    return dict(views=views, heat=heat, xt=xt, delta=colorize(change, 0.0, own_delta_vmax, "magma"),
                channel=colorize(x0[:, :, channel], -own_channel_vmax["x0"], own_channel_vmax["x0"], "RdBu_r"),
                delta_vmax=own_delta_vmax, channel_vmax=own_channel_vmax,
                rgb_map=rgb_map, stats=stats)


def as_sent(stats):
    """Stats with NaN as None, as the widget sends them (so that == compares them)."""
    return {k: [None if isinstance(v, float) and not np.isfinite(v) else v for v in vs] for k, vs in stats.items()}


@pytest.mark.parametrize("broken", [False, True], ids=["clean", "diverged"])
def test_every_byte_sent_is_what_the_whole_trace_formulas_give(broken):
    """The views, heat stacks, scales, stats and rgb map are computed a step at a time (a Wan 480p trace took 4x
    its size in float32 copies to inspect); they are, to the byte, what the whole-trace formulas gave."""
    import warnings

    a, b = synthetic_trace(1), synthetic_trace(2, ph=24, pw=40)  # b: a preview at latent resolution
    if broken:
        a = diverged(a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # inf - inf, as before
        ref_a, ref_b = reference_views(a), reference_views(b)
        scale = max(ref_a["delta_vmax"], ref_b["delta_vmax"])
        for ds, ref in ((a, ref_a), (b, ref_b)):
            np.testing.assert_array_equal(fit_rgb_map(ds), ref["rgb_map"])
            assert delta_vmax(ds) == ref["delta_vmax"]
            assert channel_vmax(ds, 0) == ref["channel_vmax"]["x0"]
            assert channel_vmax(ds, 0, "latent") == ref["channel_vmax"]["latent"]
            assert as_sent(step_stats(ds)) == as_sent(ref["stats"])
            np.testing.assert_array_equal(to_rgb(ds).values, ref["xt"])
            np.testing.assert_array_equal(delta_heatmap(ds), ref["delta"])
            np.testing.assert_array_equal(channel_heatmap(ds, 0), ref["channel"])
        alone = sora_nb.inspect(a)
        assert alone.a_views == ref_a["views"] and alone.a_heat == ref_a["heat"]
        assert alone.meta["a"]["stats"] == as_sent(ref_a["stats"])
        w = sora_nb.inspect(a, compare=b)
        for channel in (0, 5, 15):
            if channel:
                w.channel = channel
            heat_vmax = max(reference_views(ds, channel=channel)["channel_vmax"]["x0"] for ds in (a, b))
            for ds, views, heat in ((a, w.a_views, w.a_heat), (b, w.b_views, w.b_heat)):
                ref = reference_views(ds, delta_vmax=scale, channel=channel, channel_vmax_=heat_vmax)
                assert views == ref["views"] and heat == ref["heat"], channel
        assert w.meta["b"]["stats"] == as_sent(ref_b["stats"])


def test_channel_scales_from_counts_are_numpys_percentile():
    """channel_vmax counts float16 magnitudes instead of sorting a float32 copy: the same number, to the bit, for
    any count of values, ties, zeros of both signs, subnormals, infinities and NaN, at any step."""
    from sora_nb.inspector import _abs_percentile

    rng = np.random.default_rng(0)
    cases = [np.zeros(1), np.full(6, -0.0), np.array([np.nan, np.inf, -np.inf, np.nan])]
    for n in (1, 2, 3, 7, 200, 201, 999, 4096, 20_001):
        cases.append(rng.standard_normal(n) * rng.choice([1e-6, 1e-3, 1.0, 300.0]))
        cases.append(rng.integers(-3, 4, n).astype(np.float64))  # many ties
    cases.append(np.concatenate([rng.standard_normal(500), [np.nan] * 7, [np.inf, -np.inf], np.full(9, 6e-8)]))
    for values in cases:
        values = np.concatenate([values, [np.nan] * (len(values) % 2)]).astype(np.float16)  # NaN: not counted
        trace = rng.standard_normal((2, 1, 3, 1, len(values) // 2)).astype(np.float16)  # (step, frame, channel, y, x)
        trace[:, :, 1] = values.reshape(2, 1, 1, -1)
        magnitudes = np.abs(trace[:, :, 1].astype(np.float32))
        magnitudes = magnitudes[np.isfinite(magnitudes)]
        expected = float(np.percentile(magnitudes, 99.5)) if magnitudes.size else 0.0
        got = _abs_percentile(trace, 1, 99.5)
        assert np.float64(got).tobytes() == np.float64(expected).tobytes(), (values.size, got, expected)


def test_building_the_inspector_makes_no_float32_copy_of_the_trace():
    """Temporary memory of a build (peak less what the widget keeps) was about 4x the trace; now it is a few of
    its steps."""
    import gc
    import tracemalloc

    ds = synthetic_trace(3, steps=24, frames=4, channels=16, h=32, w=48, ph=32, pw=48)
    sora_nb.inspect(synthetic_trace(4, steps=2, frames=1, h=4, w=4, ph=4, pw=4))  # imports and colour tables
    gc.collect()
    tracemalloc.start()
    try:
        w = sora_nb.inspect(ds)
        kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    trace_bytes = ds.latent.nbytes + ds.x0.nbytes + ds.preview.nbytes
    assert len(w.a_views) + len(w.a_heat) <= kept
    assert peak - kept < 0.5 * trace_bytes, ((peak - kept) / trace_bytes)  # the whole-trace formulas: about 3.8


# -- what the captions, rows and notes say ----------------------------------------------------------------
def redrawn(toy, noise_seed, guidance, noise_steps=8):
    """A toy trace as a kept redraw leaves it (sora_nb.api): the call's seed and steps, the draw's noise_seed and
    noise_steps."""
    trace = toy.generate("a disc", seed=noise_seed, steps=noise_steps, guidance=guidance).trace.copy()
    trace.attrs.update(seed=0, steps=20, noise_seed=noise_seed, noise_steps=noise_steps)
    return trace


def test_a_redrawn_clip_says_so_and_a_different_starting_noise_is_noted(toy, toy5, toy1):
    """guidance 1 vs 7 of seed 0, both redrawn from other noise, were captioned "guidance 1" / "guidance 7" as if
    they started from the same noise (the label keys ignored noise_seed / noise_steps)."""
    import warnings

    lo, hi = redrawn(toy, 1000, 1.0), redrawn(toy, 2000, 7.0)
    alone = sora_nb.inspect(lo)
    assert alone.meta["a"]["label"] == "seed 0 · guidance 1 · redrawn: noise seed 1000, 8 steps"
    assert alone.meta["notes"] == []
    note = ("A and B start from different noise (noise seed 1000 vs 2000) although both have seed 0: they differ "
            "by more than guidance")
    with pytest.warns(UserWarning, match=re.escape(note)):
        w = sora_nb.inspect(lo, compare=hi)
    assert (w.meta["a"]["label"], w.meta["b"]["label"]) == ("guidance 1 · redrawn: noise seed 1000, 8 steps",
                                                            "guidance 7 · redrawn: noise seed 2000, 8 steps")
    assert w.meta["notes"] == [note]
    with pytest.warns(UserWarning, match=r"different noise \(noise seed 1000 vs 0\) although both have seed 0"):
        w = sora_nb.inspect(lo, compare=toy5)  # a redraw next to a first draw
    assert w.meta["b"]["label"] == "guidance 5 · steps 8 · not redrawn: noise seed 0"
    same = redrawn(toy, 1000, 7.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same noise: nothing to note
        w = sora_nb.inspect(lo, compare=same)
        assert w.meta["notes"] == [] and w.meta["b"]["label"] == "guidance 7 · redrawn: noise seed 1000, 8 steps"
        w = sora_nb.inspect(toy5, compare=toy1)  # neither redrawn: as before
        assert (w.meta["a"]["label"], w.meta["b"]["label"], w.meta["notes"]) == ("guidance 5", "guidance 1", [])
    other = toy.generate("a disc", seed=1, steps=8, guidance=1.0).trace.copy()
    other.attrs["seed"] = 0  # attrs that say seed 0 over another seed's noise
    with pytest.warns(UserWarning, match=r"different noise \(their x_t at step 0 differ\) although both have seed 0"):
        sora_nb.inspect(toy5, compare=other)


def test_compare_by_position_says_where_steps_frames_or_noise_levels_differ(toy, toy5, toy1):
    """Steps are matched by position: 8 steps next to 14 recorded every 2nd showed A's step 6 beside B's step 12
    under the label "step 6" (and A's sigma). It is still allowed, but said."""
    import warnings

    b = toy.generate("a disc", seed=0, steps=14, guidance=5.0, record_every=2)
    note = ("A and B are matched by recorded step index, but their denoising steps differ (A: 0, 1, 2, 3, 4, 5, 6, 7; "
            "B: 0, 2, 4, 6, 8, 10, 12, 13): the step row shows both")
    with pytest.warns(UserWarning, match=re.escape(note)):
        w = sora_nb.inspect(toy5, compare=b)
    assert w.meta["notes"] == [note] and w.meta["b"]["stats"]["step"][6] == 12
    with pytest.warns(UserWarning, match="their noise levels σ differ at the same step"):
        sora_nb.inspect(toy5, compare=toy5.trace.assign_coords(sigma=toy5.trace.sigma * 0.5))
    with pytest.warns(UserWarning, match=re.escape("their frames differ (A: 0, 1, 2, 3; B: 4, 5, 6, 7)")) as seen:
        sora_nb.inspect(toy5.trace.isel(frame=slice(0, 4)), compare=toy5.trace.isel(frame=slice(4, 8)))
    assert len(seen) == 1  # other frames' noise is not "different starting noise"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sora_nb.inspect(toy5, compare=toy1).meta["notes"] == []


def test_recorded_steps_apart_send_the_update_per_step(toy):
    """record_every=4 of 10 steps records 0, 4, 8, 9: its updates span 4, 4 and 1 steps, and the plotted update
    dropped at the last (1 step after 4). The front end plots and reads out the update per step it is sent."""
    thin = sora_nb.inspect(toy.generate("a disc", seed=0, steps=10, record_every=4)).meta["a"]
    update = thin["stats"]["update"]
    assert thin["stats"]["step"] == [0, 4, 8, 9] and thin["gaps"] == [None, 4, 4, 1]
    assert thin["update_per_step"] == [None, update[1] / 4, update[2] / 4, update[3]]
    full = sora_nb.inspect(toy.generate("a disc", seed=0, steps=10)).meta["a"]
    assert full["gaps"] == [None] + [1] * 9 and full["update_per_step"] == full["stats"]["update"]  # as before


def test_meta_sends_the_frame_coordinate(toy5):
    """The frame row counted frames from 1 and ignored the trace's frame coordinate (a trace sliced to frames 4..7
    said "frame 1/4"): the front end is sent the coordinate."""
    assert sora_nb.inspect(toy5).meta["a"]["frames"] == list(range(8))
    assert sora_nb.inspect(toy5.trace.isel(frame=slice(4, 8))).meta["a"]["frames"] == [4, 5, 6, 7]


def test_the_payload_advice_keeps_the_last_step(toy):
    """The advice was trace.isel(step=slice(None, None, 4)): of 20 steps it kept 0..16, dropping the last (the
    clean result). The selection advised keeps it, and fits."""
    v = toy.generate("a disc", seed=0, steps=20)
    with pytest.raises(ValueError, match=r"max_payload_mb=0.1\): pass fewer steps") as err:
        sora_nb.inspect(v, max_payload_mb=0.1)
    advised = re.search(r"trace\.isel\(step=(\[.*?\])\)", str(err.value)).group(1)
    kept = v.trace.isel(step=eval(advised))
    assert int(kept.step[-1]) == int(v.trace.step[-1]) == 19 and int(kept.step[0]) == 0
    assert sora_nb.inspect(kept, max_payload_mb=0.1).meta["a"]["stats"]["step"][-1] == 19


@pytest.mark.parametrize("dim", ["channel", "y", "x", "py", "px"])
def test_an_empty_dimension_is_refused_by_name(toy5, dim):
    """An empty channel, y, x, py or px dimension gave a bare IndexError, "the run diverged" or "channel must be an
    index in [0, -1]"."""
    with pytest.raises(ValueError, match=rf"video_or_trace is empty: its '{dim}' dimension has size 0"):
        sora_nb.inspect(toy5.trace.isel({dim: slice(0, 0)}))
