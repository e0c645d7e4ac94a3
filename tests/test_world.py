"""sora_nb.world: the renderer, the sampler and the caption language."""

import dataclasses
import io
import time

import numpy as np
import pytest

from sora_nb import world
from sora_nb.world import canvas, spec


def _background(clip) -> np.ndarray:
    """The (H, W, 3) float background the clip was drawn on."""
    return canvas.background_image(clip.labels.background, clip.size)


def _coverage(clip, k: int) -> np.ndarray:
    """Per-frame coverage (T, H, W) of object k, recovered from pixels of a one-object clip."""
    bg = _background(clip)[None]
    c = np.array(spec.PALETTE[clip.labels.objects[k].colour], np.float32)
    diff = clip.frames.astype(np.float32) - bg
    along = (c - bg) / np.maximum(np.sum((c - bg) ** 2, axis=-1, keepdims=True), 1e-6)
    return np.clip(np.sum(diff * along, axis=-1), 0, 1)


def _centroids(alpha: np.ndarray) -> np.ndarray:
    """(T, 2) coverage-weighted centroid (x, y) of each frame."""
    t, h, w = alpha.shape
    yy, xx = np.mgrid[:h, :w]
    mass = alpha.sum(axis=(1, 2))
    return np.stack([(alpha * xx).sum(axis=(1, 2)) / mass, (alpha * yy).sum(axis=(1, 2)) / mass], 1)


# --- render -----------------------------------------------------------------------------------


def test_render_shapes_sizes_and_defaults():
    clip = world.render("a red circle moving right", seed=0)
    assert clip.frames.shape == (16, 64, 64, 3) and clip.frames.dtype == np.uint8
    assert clip.caption == "a red circle moving right" and clip.fps == 8 and clip.seed == 0
    assert clip.duration == 2.0 and clip.size == (64, 64)
    wide = world.render("a blue star spinning", seed=1, duration=4.0, size=(96, 64), fps=8)
    assert wide.frames.shape == (32, 64, 96, 3)
    assert world.render("a green square moving up", seed=2, duration=1.0, fps=12).frames.shape == (12, 64, 64, 3)
    assert world.render("a green square moving up", seed=2, duration=3.0).frames.shape[0] == 24
    obj = clip.labels.objects[0]
    assert (obj.shape, obj.colour, obj.motion) == ("circle", "red", "right")
    assert obj.size in ("small", "large") and clip.labels.background in world.BACKGROUNDS


def test_render_is_deterministic_and_seed_dependent():
    a = world.render("a red circle moving right and a blue square moving up", seed=5)
    b = world.render("a red circle moving right and a blue square moving up", seed=5)
    c = world.render("a red circle moving right and a blue square moving up", seed=6)
    assert np.array_equal(a.frames, b.frames) and a.labels == b.labels
    assert not np.array_equal(a.frames, c.frames)
    again = world.render(a.labels, seed=123)  # fully specified labels render the same pixels
    assert np.array_equal(again.frames, a.frames)
    assert world.parse(again.caption).objects[0].shape == "circle"


@pytest.mark.parametrize("kwargs, match", [
    (dict(duration=0.5), "duration"), (dict(duration=5), "duration"), (dict(size=(64, 20)), "size"),
    (dict(size=(64, 300)), "size"), (dict(fps=2), "fps"), (dict(seed=-1), "seed"),
])
def test_render_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        world.render("a red circle moving right", **kwargs)


def test_labels_summaries_and_helpers_check_their_inputs():
    """Complete labels are checked as a caption's are (they skipped the check: a bare KeyError, or a clip with
    no object in it); summarize, against_bars, sample, caption and strip name a bad argument."""
    from sora_nb.world.spec import Labels, ObjectLabel as O

    for labels, match in ((Labels([O("square", "magenta", "right", "small", (0.3, 0.5))], "dark"), "colour must be one of"),
                          (Labels([O("square", "white", "right", "small", (0.3, 0.5))], "light"), "contrast"),
                          (Labels([O("circle", "red", "right", "large", (1.5, 0.5))], "dark"), r"start must be \(x, y\) fractions")):
        with pytest.raises(ValueError, match=match):
            world.render(labels)
    df = world.evaluate(world.oracle(), n=2, seed=0)
    with pytest.raises(TypeError, match="df must be a pandas DataFrame"):
        world.summarize([{"colour": 1.0}])
    with pytest.raises(ValueError, match="by must be one of df's columns"):
        world.summarize(df, by="nope")
    with pytest.raises(TypeError, match="bars must be a dict"):
        world.against_bars(df, bars="colour")
    with pytest.raises(ValueError, match=r"df\['colour'\] must hold shares in \[0, 1\]"):
        world.against_bars(df.assign(colour=3.0))
    assert len(list(world.sample(2, max_objects=np.int64(2)))) == 2
    with pytest.raises(TypeError, match="n must be an int >= 0, got str"):
        world.sample("2")
    with pytest.raises(ValueError, match="rng must be a numpy Generator, a seed"):
        world.caption(world.parse("a red circle moving right"), -1)
    frames = world.render("a red circle moving right").frames
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        world.strip(frames, n=0)
    assert world.strip(frames, n=3).shape == (64, 3 * 66 - 2, 3)
    # the float frames score takes ([0, 1]) look as the uint8 ones do: they were cast to uint8, all black
    np.testing.assert_array_equal(world.strip(frames / 255.0, n=3), world.strip(frames, n=3))
    from PIL import Image

    from sora_nb.world.show import gif_bytes

    gif = Image.open(io.BytesIO(gif_bytes(frames / 255.0, scale=1)))
    np.testing.assert_array_equal(np.asarray(gif.convert("RGB")), np.asarray(
        Image.open(io.BytesIO(gif_bytes(frames, scale=1))).convert("RGB")))
    assert np.asarray(gif.convert("RGB")).max() > 200
    with pytest.raises(ValueError, match="frames must be finite"):
        world.strip(np.full((2, 8, 8, 3), np.nan))


def test_grid_html_takes_a_clip_and_refuses_a_bad_fps_or_scale_by_name():
    """grid_html(fps=0) raised ZeroDivisionError, scale 0 or -1 PIL's "cannot write empty image" or numpy's
    "negative dimensions", and a single Clip "'Clip' object is not iterable"."""
    import base64

    from PIL import Image

    from sora_nb.world.show import gif_bytes, gif_html

    clip = world.render("a red circle moving right", seed=0)
    one = world.grid_html(clip)
    assert one == world.grid_html([clip]) and one.count("<img") == 1 and "a red circle moving right" in one
    gif = Image.open(io.BytesIO(base64.b64decode(one.split("base64,")[1].split('"')[0])))
    assert gif.size == (128, 128) and gif.n_frames == 16 and abs(gif.info["duration"] - 125) <= 10  # scale 2, 8 fps
    assert world.grid_html([(clip.frames, "x"), clip], fps=2.5).count("<img") == 2
    for kwargs, match in ((dict(fps=0), r"fps must be a finite number > 0 \(frames per second\), got 0"),
                          (dict(fps=-8), "fps must be a finite number > 0"),
                          (dict(fps=float("inf")), "fps must be a finite number > 0.*got inf"),
                          (dict(fps="8"), "fps must be a finite number > 0.*got '8'"),
                          (dict(scale=0), r"scale must be an int >= 1 \(each pixel drawn scale x scale\), got 0"),
                          (dict(scale=-1), "scale must be an int >= 1.*got -1"),
                          (dict(scale=1.5), "scale must be an int >= 1.*got 1.5")):
        with pytest.raises(ValueError, match=match):
            world.grid_html([(clip.frames, "x")], **kwargs)
        with pytest.raises(ValueError, match=match):
            gif_bytes(clip.frames, **kwargs)
        with pytest.raises(ValueError, match=match):
            gif_html(clip.frames, **kwargs)
    with pytest.raises(TypeError, match=r"clips\[1\] must be a Clip or a \(frames, title\) pair"):
        world.grid_html([clip, clip.frames])


def test_labels_render_as_given_or_are_refused_by_name():
    """A start given in Labels is where the object starts (it was redrawn unless every field was set); labels
    set whole are drawn only if they keep objects inside the frame and apart; a bar half given, or asked with
    no object behind it, is refused (a TypeError from the renderer; no bar drawn)."""
    L = world.Labels
    O = world.ObjectLabel
    clip = world.render(L([O("circle", "red", "right", "small", start=(0.2, 0.5))]), seed=0)
    assert clip.labels.objects[0].start == (0.2, 0.5)
    assert clip.tracks[0, 0, 0] == pytest.approx(0.2 * 64, abs=0.5)
    assert world.score(clip.frames, clip.caption)["overall"] == 1
    with pytest.raises(ValueError, match=r"cannot fit 1 object.*objects \[0\] start where their start says"):
        world.render(L([O("circle", "red", "left", "large", start=(0.1, 0.5))]), seed=0)
    with pytest.raises(ValueError, match="object 0 .* leaves the 64x64 frame at frame 0"):
        world.render(L([O("circle", "red", "left", "large", start=(0.1, 0.5))], "dark"), seed=0)
    with pytest.raises(ValueError, match="objects 0 and 1 overlap at frame 0"):
        world.render(L([O("circle", "red", "still", "large", start=(0.4, 0.5)),
                        O("square", "blue", "still", "large", start=(0.45, 0.5))], "dark"), seed=0)
    with pytest.raises(ValueError, match="occluder_x and occluder_width go together"):
        world.render(L([O("circle", "red", "right", "small", (0.1, 0.5), occluded=True)], "dark", True, 0.5), seed=0)
    with pytest.raises(ValueError, match=r"occluder_width must be a fraction of the frame's width in \(0, 1\)"):
        world.render(L([O("circle", "red", "right", "small", occluded=True)], "dark", True, 0.5, 2.0), seed=0)
    with pytest.raises(ValueError, match="occluder=True needs the object that passes behind the bar"):
        world.render(L([O("circle", "red", "right")], "dark", occluder=True), seed=0)
    again = world.render(clip.labels, seed=5)  # labels set whole draw the same clip, whatever the seed
    np.testing.assert_array_equal(again.frames, clip.frames)


def test_the_object_behind_the_bar_and_the_bar_are_given_together_or_refused_by_name():
    """occluded=True with occluder=False drew no bar under a caption that said "behind a grey pillar" (permanence
    0 on the world's own clip); a start given to the object behind the bar, or a bar given without it, was
    silently redrawn (start (0.2, 0.5) -> (0.15, 0.33); bar (0.3, 0.2) -> (0.5, 0.34))."""
    L, O = world.Labels, world.ObjectLabel
    for labels, match in (
            (L([O("circle", "red", "right", "small", (0.2, 0.5), occluded=True)], "dark", occluder=False),
             r"objects\[0\] has occluded=True but the labels have occluder=False: no bar would be drawn"),
            (L([O("circle", "red", "right", "small", (0.2, 0.5))], "dark", False, 0.5, 0.2),
             "occluder_x and occluder_width place the bar, which occluder=False leaves out"),
            (L([O("circle", "red", "right", "small", (0.2, 0.5), occluded=True)], "dark", occluder=True),
             r"the start of the object behind the bar \(objects\[0\].start=\(0.2, 0.5\)\) and the bar \(occluder_x="
             r"None, occluder_width=None\) go together: give both, or neither"),
            (L([O("square", "blue"), O("circle", "red", "right", "small", occluded=True)], "dark", True, 0.3, 0.2),
             r"objects\[1\].start=None\) and the bar \(occluder_x=0.3, occluder_width=0.2\) go together"),
            (L([O("circle", "red", "left", "small", (0.2, 0.5), occluded=True)], "dark", True, 0.5, 0.2),
             "objects\\[0\\] starts at x=0.2 moving left and never passes behind the bar at occluder_x=0.5"),
            (L([O("circle", "red", None, None, (0.5, 0.5), occluded=True)], None, True, 0.5, 0.2),
             "starts at x=0.5 moving left or right and never passes behind the bar")):
        with pytest.raises(ValueError, match=match):
            world.render(labels, seed=0)
    # both given: drawn as given, also when other fields are left open (it was redrawn unless every field was set)
    for motion, background in (("right", "dark"), (None, None)):
        labels = L([O("circle", "red", motion, None, (0.25, 0.3), occluded=True),
                    O("square", "blue", "still", "small")], background, True, 0.5, 0.2)
        clip = world.render(labels, seed=3, size=(96, 64))
        got = clip.labels
        assert (got.objects[0].start, got.objects[0].motion, got.occluder_x, got.occluder_width) == (
            (0.25, 0.3), "right", 0.5, 0.2)
        assert clip.tracks[0, 0].tolist() == pytest.approx([0.25 * 96, 0.3 * 64])
        assert world.analyse(clip.frames).bar == (38, 58)  # 96 * (0.5 -+ 0.1)
        s = world.score(clip.frames, clip.caption)
        assert s["permanence"] == 1 and s["overall"] == 1, clip.caption
    with pytest.raises(ValueError, match=r"object 0 \(a small circle moving right from start \(0.02, 0.3\)\) leaves "
                                         "the 64x64 frame at frame 0"):
        world.render(L([O("circle", "red", None, None, (0.02, 0.3), occluded=True)], None, True, 0.5, 0.2), seed=3)


def test_render_rejects_bad_types_and_impossible_scenes():
    with pytest.raises(TypeError, match="size"):
        world.render("a red circle moving right", size=64)
    with pytest.raises(TypeError, match="seed"):
        world.render("a red circle moving right", seed=1.5)
    with pytest.raises(ValueError, match="spin"):
        world.render("a red circle spinning")
    with pytest.raises(ValueError, match="contrast"):
        world.render("a white square moving up on a light background")
    with pytest.raises(ValueError, match="left or right"):
        world.render("a red star moving up, passing behind a grey bar")


def test_labels_match_pixels_centroid_track():
    """The coverage-weighted centroid of the drawn object follows clip.tracks to a fraction of a pixel."""
    for i, shape in enumerate(world.SHAPES):
        for motion in ("right", "up-left", "bounce", "grow", "spin", "still"):
            if shape == "circle" and motion == "spin":
                continue
            clip = world.render(f"a {world.COLOURS[i]} {shape} {motion_word(motion)} on a dark background", seed=i)
            got = _centroids(_coverage(clip, 0))
            np.testing.assert_allclose(got, clip.tracks[0], atol=0.3, err_msg=f"{shape} {motion}")


def motion_word(motion: str) -> str:
    """A caption phrase for a motion name."""
    return {"right": "moving right", "up-left": "moving up and to the left", "bounce": "bouncing",
            "grow": "growing", "spin": "spinning", "still": "standing still"}[motion]


def test_labels_match_pixels_colour_size_and_growth():
    clip = world.render("a large yellow square growing on a navy background", seed=3)
    core = _coverage(clip, 0) > 0.999
    assert np.all(clip.frames[core] == spec.PALETTE["yellow"])
    area = _coverage(clip, 0).sum(axis=(1, 2))
    r = spec.RADIUS["large"] * 64
    assert area[len(area) // 2] == pytest.approx((2 * 0.88 * r) ** 2, rel=0.1)  # middle frame: scale 1
    assert area[-1] / area[0] == pytest.approx((1.4 / 0.6) ** 2, rel=0.05)
    small = world.render("a small yellow square standing still on a navy background", seed=3)
    ratio = area[len(area) // 2] / _coverage(small, 0).sum(axis=(1, 2)).mean()
    assert ratio == pytest.approx((spec.RADIUS["large"] / spec.RADIUS["small"]) ** 2, rel=0.1)


def test_backgrounds_are_as_named():
    for name in world.BACKGROUNDS:
        clip = world.render(f"a red circle moving right on a {name} background", seed=0)
        top, bottom = spec.BACKGROUND_RGB[name]
        assert np.abs(clip.frames[0, 0, 0].astype(int) - top).max() <= 1
        assert np.abs(clip.frames[0, -1, -1].astype(int) - bottom).max() <= 1
    gradient = world.render("a red circle moving right on a gradient background", seed=0).frames[0, :, 0]
    assert np.all(np.abs(np.diff(gradient.astype(int), axis=0)) <= 2)  # a smooth ramp


def test_occluder_hides_the_object_and_it_comes_out_the_other_side():
    clip = world.render("a small red circle moving right, passing behind a grey bar", seed=4)
    lab = clip.labels
    assert lab.occluder and lab.objects[0].occluded
    x0, x1 = canvas.occluder_columns(lab, clip.size)
    assert np.all(clip.frames[:, :, x0:x1] == spec.OCCLUDER_RGB)
    alpha = _coverage(clip, 0)
    alpha[:, :, x0:x1] = 0
    visible = alpha.sum(axis=(1, 2))
    full = visible.max()
    track = clip.tracks[0]
    assert visible[0] == pytest.approx(full, rel=0.02) and visible[-1] == pytest.approx(full, rel=0.02)
    assert track[0, 0] < x0 and track[-1, 0] > x1  # starts left of the bar, ends right of it
    assert visible.min() < 0.05 * full  # hidden (nearly) entirely in between


def test_objects_never_overlap_or_leave_the_frame():
    for clip in world.sample(40, seed=9, max_objects=3):
        paths = canvas.object_paths(clip.labels, clip.size, len(clip.frames), clip.fps)
        for p in paths:
            ext = p.extents()
            assert np.all(p.centre[:, 0] - ext[:, 0] >= 0) and np.all(p.centre[:, 0] + ext[:, 1] <= clip.size[0] - 1)
            assert np.all(p.centre[:, 1] - ext[:, 2] >= 0) and np.all(p.centre[:, 1] + ext[:, 3] <= clip.size[1] - 1)
        for a in range(len(paths)):
            for b in range(a + 1, len(paths)):
                gap = np.hypot(*(paths[a].centre - paths[b].centre).T) - paths[a].reach() - paths[b].reach()
                assert gap.min() >= spec.OBJECT_GAP - 1e-9


def test_shape_maps_mark_each_shape_where_its_pixels_are():
    for clip in world.sample(12, seed=21, max_objects=3):
        maps = canvas.shape_maps(clip.labels, clip.size, len(clip.frames), clip.fps)  # (T, H, W, S)
        assert maps.shape == clip.frames.shape[:3] + (len(spec.SHAPES),) and maps.dtype == np.float32
        total = maps.sum(-1)
        assert total.min() >= 0 and total.max() <= 1 + 1e-5
        drawn = np.any(clip.frames != np.rint(_background(clip))[None].astype(np.uint8), axis=-1)
        cols = canvas.occluder_columns(clip.labels, clip.size)
        if cols is not None:
            drawn[:, :, cols[0]:cols[1]] = False
            assert np.all(maps[:, :, cols[0]:cols[1]] == 0)  # the bar hides everything behind it
        assert np.all(drawn[total > 0.02]) and np.all(total[drawn] > 0)  # maps cover exactly the drawn pixels
        asked = {spec.SHAPES.index(o.shape) for o in clip.labels.objects}
        assert {int(k) for k in np.flatnonzero(maps.sum((0, 1, 2)))} == asked
        for obj in clip.labels.objects:  # an opaque pixel of one shape has that object's colour
            k = spec.SHAPES.index(obj.shape)
            same = [o for o in clip.labels.objects if o.shape == obj.shape]
            full = maps[..., k] >= 1 - 1e-6
            if len(same) == 1 and full.any():
                assert np.abs(clip.frames[full].astype(int) - spec.PALETTE[obj.colour]).max() <= 1


def test_disc_layout_draws_discs_and_labels_them_with_the_true_shape():
    seen = set()
    for clip in world.sample(12, seed=21, max_objects=3):
        n = len(clip.frames)
        frames, maps = canvas.disc_layout(clip.labels, clip.size, n, clip.fps)
        assert frames.shape == clip.frames.shape and frames.dtype == np.uint8
        assert maps.shape == clip.frames.shape[:3] + (len(spec.SHAPES),) and maps.dtype == np.float32
        discs = dataclasses.replace(clip.labels, objects=[dataclasses.replace(o, shape="circle")
                                                          for o in clip.labels.objects])
        assert np.array_equal(frames, canvas.draw(discs, clip.size, n, clip.fps))  # every object as a circle
        disc_cover = canvas.shape_maps(discs, clip.size, n, clip.fps)[..., spec.SHAPES.index("circle")]
        assert np.allclose(maps.sum(-1), disc_cover, atol=1e-6)  # where the discs are, nothing else
        asked = {spec.SHAPES.index(o.shape) for o in clip.labels.objects}
        assert {int(k) for k in np.flatnonzero(maps.sum((0, 1, 2)))} == asked  # in the true shapes' channels
        if any(o.shape != "circle" for o in clip.labels.objects):
            assert not np.array_equal(frames, clip.frames)  # the outline is gone from the frames
            seen.add("outline")
        for obj in clip.labels.objects:  # an opaque disc pixel of one shape class has that object's colour
            k = spec.SHAPES.index(obj.shape)
            full = maps[..., k] >= 1 - 1e-6
            if sum(o.shape == obj.shape for o in clip.labels.objects) == 1 and full.any():
                assert np.abs(frames[full].astype(int) - spec.PALETTE[obj.colour]).max() <= 1
                seen.add("colour")
    assert seen == {"outline", "colour"}


def test_angle_maps_give_each_discs_orientation_and_turn_it_for_spin():
    """Recipe ``shape_angle``: (cos k*angle, sin k*angle) on each disc, k the shape's symmetry, 0 for circles."""
    seen = set()
    for clip in world.sample(80, seed=5, max_objects=2):
        n = len(clip.frames)
        angles = canvas.angle_maps(clip.labels, clip.size, n, clip.fps)
        assert angles.shape == clip.frames.shape[:3] + (2,) and angles.dtype == np.float32
        maps = canvas.disc_layout(clip.labels, clip.size, n, clip.fps)[1]
        for obj in clip.labels.objects:
            alone = sum(o.shape == obj.shape for o in clip.labels.objects) == 1
            full = maps[..., spec.SHAPES.index(obj.shape)] >= 1 - 1e-6  # this object's disc, fully covering
            if not alone or not full.any():
                continue
            vec = angles[full]
            if obj.shape == "circle":
                assert np.all(vec == 0)  # a circle has no orientation
                seen.add("circle")
                continue
            assert np.allclose(np.hypot(vec[:, 0], vec[:, 1]), 1.0, atol=1e-5)  # a unit vector inside the disc
            k = spec.SYMMETRY[obj.shape]
            per_frame = [angles[t][full[t]].mean(0) for t in range(n) if full[t].any()]
            turned = np.degrees(np.angle(complex(*per_frame[-1]) / complex(*per_frame[0])))
            if obj.motion == "spin":  # turned by k * 90 deg/s between consecutive frames, here 45 deg a frame for k 4
                shown = [t for t in range(n) if full[t].any()]
                for (t0, a), (t1, b) in zip(zip(shown, per_frame), zip(shown[1:], per_frame[1:])):
                    if t1 == t0 + 1:
                        step = np.degrees(np.angle(complex(*b) / complex(*a)))
                        assert np.isclose(step, k * spec.SPIN_DEG_PER_S / clip.fps, atol=1e-2)
                        seen.add("spin")
            else:
                assert np.allclose(vec, [1.0, 0.0], atol=1e-5) and abs(turned) < 1e-3  # unturned, throughout
                seen.add("still")
        assert np.all(angles[np.abs(maps.sum(-1)) == 0] == 0)  # nothing off the discs
    assert seen == {"circle", "spin", "still"}


# --- sample -----------------------------------------------------------------------------------


def test_sample_is_deterministic_and_reproducible_by_render():
    a = list(world.sample(6, seed=3, phrasing="any"))
    b = list(world.sample(6, seed=3, phrasing="any"))
    assert [c.caption for c in a] == [c.caption for c in b]
    assert all(np.array_equal(x.frames, y.frames) for x, y in zip(a, b))
    assert [c.caption for c in world.sample(6, seed=4)] != [c.caption for c in a]
    for clip in a:
        again = world.render(clip.caption, seed=clip.seed, duration=clip.duration, size=clip.size, fps=clip.fps)
        assert np.array_equal(again.frames, clip.frames)


@pytest.fixture(scope="module")
def train_clips():
    """A sample of the training stream (train split, train phrasings)."""
    return list(world.sample(250, seed=0, split="train", phrasing="train"))


@pytest.fixture(scope="module")
def heldout_clips():
    """A sample of the held-out stream (held-out split, held-out phrasings)."""
    return list(world.sample(80, seed=1, split="heldout", phrasing="heldout"))


def test_sample_covers_the_world(train_clips):
    objs = [o for c in train_clips for o in c.labels.objects]
    assert {o.shape for o in objs} == set(world.SHAPES)
    assert {o.colour for o in objs} == set(world.COLOURS)
    assert {o.motion for o in objs} == set(world.MOTIONS)
    assert {o.size for o in objs} == set(world.SIZES)
    assert {c.labels.background for c in train_clips} == set(world.BACKGROUNDS)
    assert {len(c.labels.objects) for c in train_clips} == {1, 2, 3}
    assert 0.05 < np.mean([c.labels.occluder for c in train_clips]) < 0.3
    assert all(o.colour != "white" for c in train_clips if c.labels.background == "light" for o in c.labels.objects)
    assert all(len({o.colour for o in c.labels.objects}) == len(c.labels.objects) for c in train_clips)


def test_heldout_split_is_disjoint_from_train(train_clips, heldout_clips):
    for clip in train_clips:
        for o in clip.labels.objects:
            assert (o.colour, o.shape) not in world.HELDOUT_COLOUR_SHAPE
            assert (o.shape, o.motion) not in world.HELDOUT_SHAPE_MOTION
    assert all(c.labels.is_heldout() for c in heldout_clips)
    objs = [o for c in heldout_clips for o in c.labels.objects]
    pairs = {(o.colour, o.shape) for o in objs} | {(o.shape, o.motion) for o in objs}
    assert len(pairs & (world.HELDOUT_COLOUR_SHAPE | world.HELDOUT_SHAPE_MOTION)) >= 8
    assert all(not c.labels.is_heldout() for c in world.sample(10, seed=1, split="train", phrasing="heldout"))


def test_heldout_phrasing_is_disjoint_from_train(train_clips, heldout_clips):
    heldout_words = {"violet", "disk"}
    for clip in train_clips:
        assert clip.templates and set(clip.templates) <= set(world.TRAIN_TEMPLATES)
        assert not heldout_words & set(world.tokenize(clip.caption))
    assert {t for c in train_clips for t in c.templates} == set(world.TRAIN_TEMPLATES)
    assert all(set(c.templates) <= set(world.HELDOUT_TEMPLATES) for c in heldout_clips)
    assert {t for c in heldout_clips for t in c.templates} == set(world.HELDOUT_TEMPLATES)


def test_sample_rejects_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        world.sample(2, split="test")
    with pytest.raises(ValueError, match="phrasing"):
        world.sample(2, phrasing="weird")
    with pytest.raises(ValueError, match="max_objects"):
        world.sample(2, max_objects=4)
    assert all(len(c.labels.objects) == 1 for c in world.sample(20, seed=0, max_objects=1))


def test_sample_is_fast():
    list(world.sample(5, seed=99))  # warm up
    t = time.process_time()  # CPU time: other processes on the machine do not count
    clips = list(world.sample(100, seed=7))
    elapsed = time.process_time() - t
    assert len(clips) == 100 and clips[0].frames.shape == (16, 64, 64, 3)
    assert elapsed < 10.0  # the target is 200 clips in 10 s; see bench/bench_world.py


# --- language ---------------------------------------------------------------------------------


@pytest.mark.parametrize("template", list(world.TEMPLATES))
def test_captions_round_trip_through_the_parser(template):
    rng = np.random.default_rng(sorted(world.TEMPLATES).index(template))
    from sora_nb.world.sampler import draw_labels

    for i in range(150):
        labels = draw_labels(rng, "train" if i % 2 else "heldout")
        mention_size, mention_bg = i % 3 > 0, i % 4 > 0
        text = world.caption(labels, rng, phrasing="any", template=template, mention_size=mention_size,
                             mention_background=mention_bg)
        got = world.parse(text)
        want = [(o.shape, o.colour, o.motion, o.size if mention_size else None, o.occluded) for o in labels.objects]
        assert [(o.shape, o.colour, o.motion, o.size, o.occluded) for o in got.objects] == want, text
        assert got.background == (labels.background if mention_bg else None), text
        assert got.occluder == labels.occluder


def test_parse_examples_from_the_issue():
    a = world.parse("a red circle moving right and a blue square moving up")
    assert [(o.colour, o.shape, o.motion) for o in a.objects] == [("red", "circle", "right"), ("blue", "square", "up")]
    for text in ("a red circle moving right", "red disc sliding to the right", "a circle, red, heading right"):
        o = world.parse(text).objects[0]
        assert (o.shape, o.colour, o.motion) == ("circle", "red", "right"), text
    b = world.parse("on a navy blue background, a big white star that spins")
    assert b.background == "navy" and b.objects[0].size == "large" and b.objects[0].motion == "spin"
    assert world.parse("a tiny box").objects[0] == world.ObjectLabel("square", None, None, "small")


@pytest.mark.parametrize("text, want", [
    ("a red circle moving right and a blue square", [("circle", "right"), ("square", None)]),
    ("a small red ball moving left and a large green star", [("circle", "left"), ("star", None)]),
    ("a red circle moving right and a blue square passing behind a grey bar", [("circle", "right"), ("square", None)]),
    ("a red circle moving right, a blue square and a green star moving up",
     [("circle", "right"), ("square", None), ("star", "up")]),
    ("a square that is red and moving right and a blue circle", [("square", "right"), ("circle", None)]),
    ("a red circle and moving left, a blue square", [("circle", None), ("square", "left")]),  # the motion first
    ("a red circle and a blue square moving left", [("circle", None), ("square", "left")]),
    # a motion ending a phrase before a comma: it went to the next object, whose own motion is left open
    ("a box that is blue and hopping, and a red circle", [("square", "bounce"), ("circle", None)]),
    ("a box, blue, hopping, a red circle and a green star", [("square", "bounce"), ("circle", None), ("star", None)]),
    ("a square that is blue and moving right, a red circle and a green star",
     [("square", "right"), ("circle", None), ("star", None)]),
    ("a red circle and hopping, a blue square", [("circle", None), ("square", "bounce")]),  # the motion first
])
def test_a_motion_stays_with_the_object_it_follows(text, want):
    """A caption that leaves one object's motion open: the motion given went to the next object (both word
    orders are the language's); the punctuation between them decides."""
    assert [(o.shape, o.motion) for o in world.parse(text).objects] == want


def test_captions_that_leave_some_motions_open_round_trip():
    """Captions of every template, with some objects' motion left out, parse back to what was written: the
    motion given went to a neighbour (e.g. "a box that is blue and hopping, and a red circle": the circle
    hopped). Left out: a motion-less object before a "motion_first" one ("a red box, hopping, a blue circle"
    reads either way; the parser gives the motion to the object before it)."""
    from sora_nb.world import language
    from sora_nb.world.sampler import draw_labels

    no_motion = {"adjective": "{a} {size}{colour} {shape}{og}", "bare": "{size}{colour} {shape}{og}",
                 "apposition": "{a} {size}{shape}, {colour}{og}", "relative": "{a} {size}{colour} {shape}{og}",
                 "in_colour": "{a} {size}{shape} in {colour}{og}", "motion_first": "{a} {size}{colour} {shape}{og}",
                 "that_is": "{a} {size}{shape} that is {colour}{og}"}
    assert set(no_motion) == set(world.TEMPLATES)
    checked, wrong = 0, []
    for i in range(1500):
        rng = np.random.default_rng([11, i])
        labels = draw_labels(rng, ["train", "heldout"][i % 2])
        drop = [bool(rng.random() < 0.5) for _ in labels.objects]
        drop[int(rng.integers(len(drop)))] = True
        names = [str(rng.choice(list(world.TEMPLATES))) for _ in labels.objects]
        if any(d and b == "motion_first" for d, b in zip(drop, names[1:])):
            continue  # ambiguous
        phrases = []
        for o, d, name in zip(labels.objects, drop, names):
            templates = dict(language.TEMPLATES, **({name: no_motion[name]} if d else {}))
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(language, "TEMPLATES", templates)
                phrases.append(language.object_phrase(o, name, rng, "any", bool(rng.random() < 0.4)))
        n = len(phrases)
        text = phrases[0] if n == 1 else str(rng.choice(language.JOINERS[n])).format(*phrases)
        want = [(o.shape, o.colour, None if d else o.motion, o.occluded) for o, d in zip(labels.objects, drop)]
        got = [(o.shape, o.colour, o.motion, o.occluded) for o in world.parse(text).objects]
        checked += 1
        if got != want:
            wrong.append(text)
    assert checked > 1000 and wrong == [], (len(wrong), wrong[:5])


def test_the_motion_names_parse_and_a_misplaced_world_word_is_not_called_unknown():
    for name in ("up-left", "up-right", "down-left", "down-right"):  # world.MOTIONS' own names
        for text in (f"a red circle moving {name}", f"a red circle moving {name.replace('-', ' ')}"):
            assert world.parse(text).objects[0].motion == name, text
    assert world.parse("a red circle moving to the top right").objects[0].motion == "up-right"
    assert world.parse("a red circle moving rïght").objects[0].motion == "right"  # accents dropped
    assert "-" in world.vocabulary()
    with pytest.raises(ValueError, match="the word 'navy' is the world's only inside a phrase .*'navy background'"):
        world.parse("a navy circle")
    with pytest.raises(ValueError, match="unknown word 'elephant'"):
        world.parse("a red elephant")


@pytest.mark.parametrize("text, match", [
    ("a red elephant moving right", "elephant"), ("a red moving right", "no shape"),
    ("a red blue circle", "two colours"), ("a circle, a square, a star and a cross", "at most 3"),
])
def test_parse_rejects_captions_outside_the_language(text, match):
    with pytest.raises(ValueError, match=match):
        world.parse(text)


def test_vocabulary_covers_every_caption(train_clips, heldout_clips):
    vocab = world.vocabulary()
    assert vocab == sorted(set(vocab)) and all(w == w.lower() for w in vocab)
    assert {"red", "circle", "moving", "right", ",", "violet", "disk", "behind"} <= set(vocab)
    words = set()
    for clip in train_clips + heldout_clips + list(world.sample(30, seed=5, phrasing="any")):
        words |= set(world.tokenize(clip.caption))
    assert words <= set(vocab)
    assert world.tokenize("A circle, red.") == ["a", "circle", ",", "red", "."]


@pytest.mark.parametrize("labels, match", [
    (world.Labels([world.ObjectLabel("hexagon", "red", "right")]),
     r"labels.objects\[0\].shape must be one of circle, square, triangle, star, cross; got 'hexagon'"),
    (world.Labels([world.ObjectLabel("circle", "red", "right"), world.ObjectLabel("circle", "magenta", "right")]),
     r"labels.objects\[1\].colour must be one of red, orange, .*, white; got 'magenta'"),
    (world.Labels([world.ObjectLabel("circle", "red", "sideways")]),
     r"labels.objects\[0\].motion must be one of left, right, .*, still; got 'sideways'"),
    (world.Labels([world.ObjectLabel("circle", "red", "right", "medium")]),
     r"labels.objects\[0\].size must be one of small, large or None; got 'medium'"),
    (world.Labels([world.ObjectLabel("circle", "red", "right")], "sunset"),
     r"labels.background must be one of dark, light, navy, gradient or None; got 'sunset'"),
    (world.Labels([]), "labels.objects must hold 1 to 3 objects, got 0"),
    (world.Labels([world.ObjectLabel("circle", "red", "right")] * 5), "labels.objects must hold 1 to 3 objects, got 5"),
    (world.Labels([world.ObjectLabel("circle", None, "right")]),
     r"caption\(\) needs the shape, colour and motion of every object: labels.objects\[0\].colour is None"),
])
def test_caption_refuses_labels_outside_the_world_by_name(labels, match):
    """caption() raised numpy's "high <= 0" for an unknown shape or colour, and a bare KeyError ('sideways', 5)
    for an unknown motion, size, background or too many objects."""
    with pytest.raises(ValueError, match=match):
        world.caption(labels, 0, mention_size=True, mention_background=True)


def test_caption_writes_labels_the_world_cannot_draw():
    """caption() checks names, not whether render can draw the scene: a wrong caption (a verifier's negative) is
    still a caption."""
    text = world.caption(world.Labels([world.ObjectLabel("circle", "white", "spin")], "light"), 0,
                         mention_background=True)
    got = world.parse(text)
    assert [(o.shape, o.colour, o.motion) for o in got.objects] == [("circle", "white", "spin")]
    assert got.background == "light"


def test_caption_is_deterministic_per_seed_and_varied():
    labels = world.parse("a red circle moving right and a blue square moving up")
    labels = dataclasses.replace(labels, background="dark")
    assert world.caption(labels, 1) == world.caption(labels, 1)
    variants = {world.caption(labels, s) for s in range(40)}
    assert len(variants) > 30
    for text in variants:
        assert [(o.colour, o.shape, o.motion) for o in world.parse(text).objects] == [
            ("red", "circle", "right"), ("blue", "square", "up")]
