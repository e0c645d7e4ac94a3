"""sora_nb.world's evaluator, validated: ground truth passes, broken clips fail the right dimension."""

import dataclasses
import math
import time

import numpy as np
import pytest

from sora_nb import world
from sora_nb.world import canvas, spec, vision

REVERSIBLE = {"left", "right", "up", "down", "up-left", "up-right", "down-left", "down-right", "grow", "shrink"}


def _systematic() -> list:
    """One clip per (shape, motion), cycling colours, backgrounds and sizes; plus occluder clips."""
    clips, i = [], 0
    for shape in world.SHAPES:
        for motion in world.MOTIONS:
            if shape == "circle" and motion == "spin":
                continue
            colour = world.COLOURS[i % 8]  # white is covered by the sampled clips
            labels = world.Labels([world.ObjectLabel(shape, colour, motion, world.SIZES[i % 2])],
                                  world.BACKGROUNDS[i % 4])
            clips.append(world.render(labels, seed=i, size=((64, 64), (96, 64))[i % 2]))
            i += 1
    for j, shape in enumerate(world.SHAPES * 2):
        direction = ("right", "left")[j % 2]
        text = f"a {world.COLOURS[j % 9]} {shape} moving {direction}, passing behind a grey bar"
        clips.append(world.render(text, seed=j, size=((64, 64), (96, 64))[j // 5], duration=(2.0, 3.0)[j % 2]))
    return clips


@pytest.fixture(scope="module")
def ground_truth():
    """About 330 clips of every attribute, several sizes and durations, with their scores."""
    clips = _systematic()
    clips += list(world.sample(110, seed=0, split="train", phrasing="any"))
    clips += list(world.sample(50, seed=1, split="heldout", phrasing="heldout", size=(96, 64), duration=3.0))
    clips += list(world.sample(50, seed=2, split="train", duration=1.0))
    clips += list(world.sample(40, seed=3, split="heldout", size=(96, 64), duration=4.0))
    clips += list(world.sample(20, seed=4, split="train", fps=12))
    return [(c, world.score(c.frames, c.caption)) for c in clips]


def test_ground_truth_scores_overall_at_least_098(ground_truth):
    assert len(ground_truth) >= 300
    overall = np.mean([s["overall"] for _, s in ground_truth])
    assert overall >= 0.98
    for dim in world.DIMENSIONS:
        values = [s[dim] for _, s in ground_truth if not math.isnan(s[dim])]
        assert values and np.mean(values) >= 0.98, dim


def test_ground_truth_passes_for_every_attribute(ground_truth):
    groups = {}
    for clip, s in ground_truth:
        keys = {("background", clip.labels.background), ("objects", len(clip.labels.objects)),
                ("occluder", clip.labels.occluder), ("size", clip.size), ("frames", len(clip.frames))}
        for o in clip.labels.objects:
            keys |= {("shape", o.shape), ("colour", o.colour), ("motion", o.motion), ("objsize", o.size)}
        for k in keys:
            groups.setdefault(k, []).append(s["overall"])
    for kind, values in (("shape", world.SHAPES), ("colour", world.COLOURS), ("motion", world.MOTIONS),
                         ("background", world.BACKGROUNDS), ("objsize", world.SIZES), ("objects", (1, 2, 3)),
                         ("occluder", (False, True)), ("size", ((64, 64), (96, 64))), ("frames", (8, 16, 24, 32))):
        for v in values:
            scores = groups.get((kind, v), [])
            assert len(scores) >= 3 and np.mean(scores) >= 0.95, (kind, v, len(scores))


def test_random_noise_scores_at_most_01(ground_truth):
    rng = np.random.default_rng(0)
    results = []
    for i, (clip, _) in enumerate(ground_truth[:20]):
        shape = clip.frames.shape
        noise = rng.integers(0, 256, shape, dtype=np.uint8) if i % 2 else \
            np.clip(rng.normal(128, 50, shape), 0, 255).astype(np.uint8)
        results.append(world.score(noise, clip.caption))
    assert np.mean([s["overall"] for s in results]) <= 0.1
    assert np.nanmean([[s[d] for d in world.DIMENSIONS] for s in results]) <= 0.1


def test_time_reversed_clips_fail_motion(ground_truth):
    picked = [c for c, _ in ground_truth if all(o.motion in REVERSIBLE for o in c.labels.objects)][:80]
    assert len(picked) >= 50
    scores = [world.score(c.frames[::-1], c.caption) for c in picked]
    assert np.mean([s["motion"] < 1 for s in scores]) >= 0.95
    assert np.mean([s["overall"] for s in scores]) <= 0.05


def test_recoloured_clips_fail_colour(ground_truth):
    scores = []
    for clip, _ in ground_truth[:150:2]:
        shift = 1 if clip.labels.background != "light" else 2  # never paint white on light
        objs = [dataclasses.replace(o, colour=spec.COLOURS[(spec.COLOURS.index(o.colour) + shift) % 9])
                for o in clip.labels.objects]
        if clip.labels.background == "light" and any(o.colour == "white" for o in objs):
            continue
        frames = canvas.draw(dataclasses.replace(clip.labels, objects=objs), clip.size, len(clip.frames), clip.fps)
        scores.append(world.score(frames, clip.caption))
    assert len(scores) >= 60
    assert all(s["colour"] < 1 for s in scores)
    assert all(s["overall"] == 0 for s in scores)


def test_shuffled_frame_clips_fail_smoothness(ground_truth):
    rng = np.random.default_rng(1)
    picked = [c for c, _ in ground_truth if all(o.motion in REVERSIBLE for o in c.labels.objects)][:80]
    scores = []
    for clip in picked:
        order = rng.permutation(len(clip.frames))
        while np.mean(np.abs(np.diff(order)) == 1) > 0.3:  # a real shuffle, not nearly the same order
            order = rng.permutation(len(clip.frames))
        scores.append(world.score(clip.frames[order], clip.caption))
    assert np.mean([s["smoothness"] < 1 for s in scores]) >= 0.95
    assert np.mean([s["overall"] for s in scores]) <= 0.05


def _occluded(ground_truth) -> list:
    """Ground-truth clips with an occluder, and the index of the object that passes behind it."""
    return [(c, next(i for i, o in enumerate(c.labels.objects) if o.occluded)) for c, _ in ground_truth
            if c.labels.occluder]


def test_object_that_vanishes_behind_the_occluder_fails_permanence(ground_truth):
    cases = _occluded(ground_truth)
    assert len(cases) >= 15
    assert all(s["permanence"] == 1 for c, s in ground_truth if c.labels.occluder)
    for clip, k in cases:
        bar_x = clip.labels.occluder_x * clip.size[0]
        hidden_from = int(np.argmin(np.abs(clip.tracks[k][:, 0] - bar_x)))  # behind the bar here
        rest = dataclasses.replace(clip.labels, objects=[o for i, o in enumerate(clip.labels.objects) if i != k])
        frames = clip.frames.copy()
        frames[hidden_from:] = canvas.draw(rest, clip.size, len(frames), clip.fps)[hidden_from:]
        s = world.score(frames, clip.caption)
        assert s["permanence"] == 0 and s["overall"] == 0, clip.caption


def test_object_that_comes_out_in_another_colour_fails_permanence(ground_truth):
    for clip, k in _occluded(ground_truth)[:10]:
        bar_x = clip.labels.occluder_x * clip.size[0]
        hidden_from = int(np.argmin(np.abs(clip.tracks[k][:, 0] - bar_x)))
        obj = clip.labels.objects[k]
        other = spec.COLOURS[(spec.COLOURS.index(obj.colour) + 3) % 8]
        objs = [dataclasses.replace(o, colour=other) if i == k else o for i, o in enumerate(clip.labels.objects)]
        frames = clip.frames.copy()
        frames[hidden_from:] = canvas.draw(dataclasses.replace(clip.labels, objects=objs), clip.size,
                                           len(frames), clip.fps)[hidden_from:]
        assert world.score(frames, clip.caption)["permanence"] == 0, clip.caption


def test_object_that_changes_shape_behind_the_occluder_fails_permanence(ground_truth):
    cases = [(c, k) for c, k in _occluded(ground_truth) if c.labels.objects[k].shape != "square"][:10]
    assert len(cases) >= 5
    for clip, k in cases:  # it comes out as a square (the narrowest shape, so it stays in frame)
        bar_x = clip.labels.occluder_x * clip.size[0]
        hidden_from = int(np.argmin(np.abs(clip.tracks[k][:, 0] - bar_x)))
        objs = [dataclasses.replace(o, shape="square") if i == k else o for i, o in enumerate(clip.labels.objects)]
        frames = clip.frames.copy()
        frames[hidden_from:] = canvas.draw(dataclasses.replace(clip.labels, objects=objs), clip.size,
                                           len(frames), clip.fps)[hidden_from:]
        assert world.score(frames, clip.caption)["permanence"] == 0, clip.caption


def test_an_object_that_comes_out_as_a_wider_shape_fails_permanence():
    """A wider shape stays near the bar on its way out, so no view there is whole: that side was judged the same
    shape as anything (every swap of shape behind the bar passed for 46 of 304 occluder clips); its views
    farthest from the bar are judged now."""
    caption = "a red square moving right passing behind a grey bar"
    clip = world.render(caption, seed=0, size=(96, 64))
    star = dataclasses.replace(clip.labels, objects=[dataclasses.replace(clip.labels.objects[0], shape="star")])
    frames = np.concatenate([clip.frames[:7], world.render(star, seed=0, size=(96, 64)).frames[7:]])  # hidden at 7
    scene = world.analyse(frames)
    assert all(d.partial for d in scene.tracks[0].detections if d.x > scene.bar[1])  # no whole view on the way out
    assert world.score(frames, caption)["permanence"] == 0
    assert world.score(clip.frames, caption)["overall"] == 1


@pytest.mark.parametrize("shape, motion, words, a, b", [
    ("triangle", "grow", "growing", (0.25, 0.3), (0.6, 0.7)),
    ("square", "spin", "spinning", (0.25, 0.3), (0.6, 0.7)),
    ("circle", "right", "moving right", (0.15, 0.3), (0.45, 0.3)),  # a 19 px leap on its way
])
def test_one_jump_fails_smoothness(shape, motion, words, a, b):
    """One jump of a third of the frame halfway through passed: a fifth of the frame-to-frame checks may fail
    (detection noise), and one jump fails two or three of about thirty."""
    first = world.render(world.Labels([world.ObjectLabel(shape, "red", motion, "small", a)], "dark"), seed=0)
    second = world.render(world.Labels([world.ObjectLabel(shape, "red", motion, "small", b)], "dark"), seed=0)
    caption = f"a red {shape} {words}"
    assert world.score(first.frames, caption)["smoothness"] == 1
    assert world.score(np.concatenate([first.frames[:8], second.frames[8:]]), caption)["smoothness"] == 0


@pytest.mark.parametrize("motion, start, step", [("right", (0.15, 0.4), (1, 0)), ("down-left", (0.8, 0.2), (-0.7, 0.7))])
def test_a_jump_hidden_by_a_short_dropout_fails_smoothness(motion, start, step):
    """The step test compared only detections in consecutive frames, so an 18 px jump made while the object was
    unseen for two frames (which `consistent` lets go: 14 of 16 frames seen) passed every check, though it failed
    smoothness seen in full. A step is now taken from the previous frame seen, its missing frames at the path's
    pace; the same dropout without a jump still passes."""
    caption = f"a small red circle moving {motion} on a dark background"
    first = world.render(world.Labels([world.ObjectLabel("circle", "red", motion, "small", start)], "dark")).frames
    moved = (start[0] + step[0] * 18 / 64, start[1] + step[1] * 18 / 64)
    second = world.render(world.Labels([world.ObjectLabel("circle", "red", motion, "small", moved)], "dark")).frames
    blank = np.broadcast_to(first[:1, :, :1], (2, *first.shape[1:]))  # the background's first column
    for hidden in (0, 1, 2):
        jump = np.concatenate([first[:7], blank[:hidden], second[7 + hidden:]])
        s = world.score(jump, caption)
        assert s["consistency"] == 1 and s["smoothness"] == 0 and s["overall"] == 0, hidden
        dropout = np.concatenate([first[:7], blank[:hidden], first[7 + hidden:]])
        assert world.score(dropout, caption)["overall"] == 1, hidden


def test_objects_behind_the_bar_move_on_while_hidden():
    """An object hidden behind the bar is missing for several frames, and its views cut by the bar have their
    centres off its own: the step across its hidden frames is no jump, down to the smallest frame at the lowest
    rate (a small cross at 40 x 40 and 6 fps overshot the jump limit by 0.05 px before the cut views were allowed
    their offset)."""
    for j, shape in enumerate(world.SHAPES * 2):
        text = f"a small {world.COLOURS[j % 9]} {shape} moving {('right', 'left')[j % 2]}, passing behind a grey bar"
        for size, fps, duration in (((40, 40), 6, 1.0), ((64, 64), 8, 2.0), ((128, 96), 12, 3.0)):
            try:
                clip = world.render(text, seed=j, size=size, fps=fps, duration=duration)
            except ValueError:  # no room at 40 x 40 for some
                continue
            assert world.score(clip.frames, clip.caption)["overall"] == 1, (text, size, fps)


def _painted_in_front(clip) -> np.ndarray:
    """The clip's frames with its occluded object painted again over everything, the bar included."""
    k = next(i for i, o in enumerate(clip.labels.objects) if o.occluded)
    path = canvas.object_paths(clip.labels, clip.size, len(clip.frames), clip.fps)[k]
    alpha, y0, x0 = canvas.coverage(path, clip.size)
    f = clip.frames.astype(np.float32)
    win = f[:, y0:y0 + alpha.shape[1], x0:x0 + alpha.shape[2]]
    win *= 1 - alpha[..., None]
    win += alpha[..., None] * np.array(spec.PALETTE[clip.labels.objects[k].colour], np.float32)
    return np.clip(np.rint(f), 0, 255).astype(np.uint8)


def test_an_object_seen_in_front_of_the_bar_fails_permanence(ground_truth):
    """`measure` cuts the bar's columns out, so an object painted over the bar (never hidden) looked like one
    passing behind it and got permanence 1. What covers the bar in some frames is read now (`Scene.front`)."""
    cases = _occluded(ground_truth)[:12]
    assert len(cases) >= 10
    for clip, _ in cases:
        s = world.score(_painted_in_front(clip), clip.caption)
        assert s["permanence"] == 0 and s["overall"] == 0, clip.caption
        assert all(not dets for dets in world.analyse(clip.frames).front)  # nothing over the world's own bar


def test_a_bar_the_caption_did_not_ask_for_fails_count(ground_truth):
    """A clip with a bar scored against a caption that asks for none scored 1 everywhere."""
    for clip, _ in _occluded(ground_truth)[:6]:
        plain = clip.caption.split(", passing behind")[0]  # the _systematic captions
        if plain == clip.caption:
            continue
        s = world.score(clip.frames, plain)
        assert s["count"] == 0 and s["overall"] == 0 and math.isnan(s["permanence"]), plain
        assert world.score(clip.frames, clip.caption)["overall"] == 1


def test_shape_is_read_from_the_whole_views():
    """A cut view shows neither shape nor size: with one whole view (a cross) and nine cut by the bar (most read
    as triangles), the shape was read from the cut views, as with fewer than two whole views they all counted."""
    def det(t, x, shape, partial):
        return vision.Detection(t, x, 30.0, 90.0, np.zeros(3), "green", np.zeros(6), np.zeros(5, complex), partial,
                                shape)

    cut = [("cross", 9), ("triangle", 11), ("triangle", 13), ("triangle", 14), (None, 15), ("star", 45),
           ("triangle", 46), ("triangle", 48), ("cross", 50)]
    dets = [det(t, x, shape, True) for t, (shape, x) in enumerate(cut)] + [det(9, 53, "cross", False)]
    tr = vision.summarise(dets, 64.0)
    assert tr.shape == "cross" and tr.visible == dets[-1:]
    assert tr.colour == "green" and tr.motion == "right"  # colour and motion still read from every view
    assert vision.summarise(dets[:-1], 64.0).shape == "triangle"  # with no whole view, the cut views are all


def test_object_that_changes_shape_or_colour_midway_fails_consistency(ground_truth):
    picked = [c for c, _ in ground_truth if not c.labels.occluder][:60]
    for change in ("shape", "colour"):
        failed = []
        for clip in picked:
            objs = []
            for o in clip.labels.objects:
                if change == "shape":
                    shape = "circle" if o.shape == "square" else "square"  # square <-> circle keeps the extent small
                    objs.append(dataclasses.replace(o, shape=shape, motion="still" if o.motion == "spin" and shape == "circle" else o.motion))
                else:
                    objs.append(dataclasses.replace(o, colour=spec.COLOURS[(spec.COLOURS.index(o.colour) + 4) % 8]))
            half = len(clip.frames) // 2
            frames = clip.frames.copy()
            frames[half:] = canvas.draw(dataclasses.replace(clip.labels, objects=objs), clip.size,
                                        len(frames), clip.fps)[half:]
            s = world.score(frames, clip.caption)
            failed.append(s["consistency"] < 1 and s["overall"] == 0)
        assert np.mean(failed) >= 0.95, change


def test_robust_to_blur_noise_and_colour_drift(ground_truth):
    """What a small, imperfect model makes: soft edges, mild noise, a slight colour cast."""
    rng = np.random.default_rng(2)
    scores = []
    for clip, _ in ground_truth[::4]:
        f = vision.gaussian_blur(clip.frames.astype(np.float32), 1.0, axes=(1, 2))
        f = f * rng.uniform(0.92, 1.08, 3) + rng.normal(0, 8, f.shape)
        scores.append(world.score(np.clip(f, 0, 255).astype(np.uint8), clip.caption))
    assert np.mean([s["overall"] for s in scores]) >= 0.95


def test_wrong_captions_fail_the_right_dimension():
    clip = world.render("a large red circle moving right on a dark background", seed=0)
    assert world.score(clip, clip.caption)["overall"] == 1  # a Clip works as frames too
    checks = {
        "a large blue circle moving right": "colour", "a large red square moving right": "shape",
        "a small red circle moving right": "size", "a large red circle moving left": "motion",
        "a red circle moving right and a blue star spinning": "count",
        "a large red circle moving right on a light background": "background",
        "a large red circle moving right, passing behind a grey bar": "permanence",
    }
    for text, dim in checks.items():
        s = world.score(clip.frames, text)
        assert s[dim] < 1 and s["overall"] == 0, (text, s)


def test_score_keys_nan_when_not_asked_and_other_phrasings():
    clip = world.render("a green star spinning and a pink square moving down", seed=4)
    s = world.score(clip.frames, clip.caption)
    assert set(world.DIMENSIONS) | {"overall"} <= set(s)
    assert math.isnan(s["size"]) and math.isnan(s["background"]) and math.isnan(s["permanence"])
    assert s["overall"] == 1 and all(0 <= v <= 1 for v in s.values() if not math.isnan(v))
    for seed in range(5):  # any caption of the same labels, in any phrasing, scores the same pixels
        text = world.caption(clip.labels, seed, phrasing="any")
        assert world.score(clip.frames, text)["overall"] == 1, text
    as_float = clip.frames.astype(np.float32) / 255.0
    assert world.score(as_float, clip.caption)["overall"] == 1
    # one pixel just over 1 (a decoder's overshoot) used to move the whole clip to the 0..255 scale: all black
    over = as_float.copy()
    over[0, 0, 0, 0] = 1.001
    assert world.score(over, clip.caption)["overall"] == 1
    assert world.score(clip.frames.astype(np.float32), clip.caption)["overall"] == 1  # floats in 0..255
    assert world.score(clip.frames.astype(np.int64), clip.caption)["overall"] == 1
    for bad in (np.nan, np.inf):
        broken = as_float.copy()
        broken[1, 2, 3, 0] = bad
        with pytest.raises(ValueError, match="frames must be finite: 1 value is NaN or infinite"):
            world.score(broken, clip.caption)
    with pytest.raises(ValueError, match="frames"):
        world.score(clip.frames[0], clip.caption)
    with pytest.raises(ValueError, match="unknown word"):
        world.score(clip.frames, "a red dragon")


def test_frames_of_every_dtype_are_read_on_their_scale_or_refused_by_name():
    """A float clip in [0, 1] with one pixel at 1.6 was read as 0..255 (near black, overall 0); 16-bit frames were
    clipped to 255 (all white, overall 0); a bfloat16 tensor raised numpy's "Got unsupported ScalarType"."""
    import torch

    clip = world.render("a red circle moving right on a dark background", seed=0)
    unit = clip.frames / 255.0
    for value, count in ((1.6, 1), (3.0, 40)):  # 40 values: 0.02% of the clip's
        over = unit.copy()
        over.reshape(-1)[np.random.default_rng(0).choice(over.size, count, replace=False)] = value
        got = vision.as_frames(over)
        assert (got == clip.frames).mean() > 0.999 and world.score(over, clip.caption)["overall"] == 1
    np.testing.assert_array_equal(vision.as_frames(clip.frames.astype(np.float64)), clip.frames)  # 0..255
    np.testing.assert_array_equal(vision.as_frames(unit.astype(np.float16)), clip.frames)
    np.testing.assert_array_equal(vision.as_frames(clip.frames.astype(np.uint16)), clip.frames)
    negative = clip.frames.astype(np.int64)
    negative[0, 0, 0, 0] = -1
    for ints in (clip.frames.astype(np.uint16) * 257, negative):
        with pytest.raises(ValueError, match=r"integer frames must hold values in \[0, 255\] \(8-bit\), got "
                                             rf"{ints.dtype} values from {ints.min()} to {ints.max()}"):
            world.score(ints, clip.caption)
    bf16 = torch.from_numpy(unit).to(torch.bfloat16)
    assert np.abs(vision.as_frames(bf16).astype(int) - clip.frames).max() <= 1
    assert world.score(bf16, clip.caption)["overall"] == 1
    np.testing.assert_array_equal(vision.as_frames(torch.from_numpy(clip.frames)), clip.frames)
    with pytest.raises(TypeError, match="frames must be uint8 in \\[0, 255\\].*got dtype bool"):
        world.score(clip.frames > 0, clip.caption)


def test_a_caption_that_leaves_the_motion_open_passes_the_worlds_own_clip():
    """With no motion asked, smoothness judged the clip as if it asked none: a bounce (whose velocity flips at
    the floor) failed every time, against a caption its own render drew from."""
    bounces = 0
    for seed in range(24):
        clip = world.render("a red star", seed=seed)
        bounces += clip.labels.objects[0].motion == "bounce"
        assert world.score(clip.frames, "a red star")["overall"] == 1, (seed, clip.labels.objects[0].motion)
    assert bounces >= 2


@pytest.mark.parametrize("size, fps", [((40, 40), 8), ((96, 40), 8), ((64, 64), 6), ((40, 64), 6)])
def test_true_clips_pass_at_the_edges_of_the_worlds_ranges(size, fps):
    """The judge must pass the world's own clips wherever render accepts: at a 32 px side a small object fell
    under the tracker's smallest radius (no shape), and at 4-5 fps a bounce jumped past its limit (two tracks),
    so those ranges now start at 40 px and 6 fps."""
    failed = []
    for shape in spec.SHAPES:
        for motion in ("bouncing", "growing", "shrinking", "moving right", "moving up"):
            for size_word in ("small", "large"):
                caption = f"a {size_word} red {shape} {motion}"
                clip = world.render(caption, seed=1, size=size, fps=fps, duration=1.0)
                if world.score(clip.frames, caption)["overall"] != 1:
                    failed.append(caption)
    assert not failed
    with pytest.raises(ValueError, match=r"size must be \(width, height\) with each in \[40, 256\] px, got \(32, 32\)"):
        world.render("a red circle moving right", size=(32, 32))
    with pytest.raises(ValueError, match=r"fps must be in \[6, 30\], got 5"):
        world.render("a red circle moving right", fps=5)


def test_score_is_fast(ground_truth):
    clips = [c for c, _ in ground_truth if c.frames.shape == (16, 64, 64, 3)][:60]
    t = time.process_time()  # CPU time: other processes on the machine do not count
    for c in clips:
        world.score(c.frames, c.caption)
    per_clip = (time.process_time() - t) / len(clips)
    assert per_clip < 0.06  # about 15 ms on one core; see bench/bench_world.py


def test_a_large_object_is_one_component_however_many_sweeps_it_takes():
    """label_components stopped after 64 sweeps: the world's large growing star, drawn 8 times larger (512 x 768,
    as another model may draw it), came out in two pieces in some frames (two tracks, count 0)."""
    c = world.render("a large red star growing", seed=1, size=(96, 64))
    mask = np.abs(c.frames.astype(int) - c.frames[:, :1, :1].astype(int)).sum(-1) > 60
    big = mask[[9, 12, 13, 14]].repeat(8, 1).repeat(8, 2)
    lab = vision.label_components(big)
    assert [len(np.unique(f[f > 0])) for f in lab] == [1, 1, 1, 1]
    np.testing.assert_array_equal(lab > 0, big)
    # a one-pixel wide zigzag 3 x 400 px long, and two pieces that stay apart
    snake = np.zeros((1, 60, 60), bool)
    snake[0, ::4, 1:-1] = True
    snake[0, 1::8, -2] = snake[0, 2::8, -2] = snake[0, 3::8, -2] = True
    snake[0, 5::8, 1] = snake[0, 6::8, 1] = snake[0, 7::8, 1] = True
    snake[0, 57:, :] = False
    snake[0, 58, 10:20] = True
    lab = vision.label_components(snake)
    assert len(np.unique(lab[lab > 0])) == 2 and (lab[snake] > 0).all() and (lab[~snake] == 0).all()
    assert len(np.unique(lab[0, :57][snake[0, :57]])) == 1


def test_evaluate_and_summarize():
    df = world.evaluate(world.oracle(), n=12, seed=3, split="heldout", phrasing="any")
    assert len(df) == 12 and list(df.columns[:6]) == ["caption", "seed", "n_objects", "occluder", "heldout", "templates"]
    assert df["heldout"].all() and (df["overall"] == 1).all()
    summary = world.summarize(df)
    assert summary["overall"] == 1 and summary["n"] == 12 and summary["colour"] == 1
    by = world.summarize(df, by="n_objects")
    assert set(by.index) <= {1, 2, 3} and (by["overall"] == 1).all()

    class Out:  # anything with .frames works, and float frames in [0, 1]
        def __init__(self, frames):
            self.frames = frames

    blank = world.evaluate(lambda caption, seed: Out(np.zeros((16, 64, 64, 3), np.float32)), n=5, seed=0)
    assert (blank["overall"] == 0).all() and (blank["count"] == 0).all()


def test_evaluate_takes_a_model_and_its_generate_keywords():
    """A model with a ``generate`` method (a loaded sora_nb.Generator) is called with the caption, the clip's
    seed, the sampled size and duration, trace off and the extra keywords; a function gets no keywords."""
    calls = []

    class Model:
        def generate(self, caption, **kw):
            calls.append((caption, kw))
            return world.render(caption, seed=kw["seed"], duration=kw["duration"], size=(kw["width"], kw["height"]))

    df = world.evaluate(Model(), n=4, seed=5, duration=1.0, size=(96, 64), guidance=2.5)
    assert (df["overall"] == 1).all() and list(df["caption"]) == [c for c, _ in calls]
    assert [kw["seed"] for _, kw in calls] == list(df["seed"])
    assert all(kw == dict(seed=kw["seed"], duration=1.0, width=96, height=64, trace=False, guidance=2.5)
               for _, kw in calls)
    with pytest.raises(TypeError, match="guidance go to a model's generate"):
        world.evaluate(world.oracle(), n=1, guidance=2.0)
    with pytest.raises(TypeError, match="generate_fn must be a function"):
        world.evaluate("not a model", n=1)
    for kw, hint in ((dict(width=96), r"evaluate sets width itself; pass size=\(width, height\) instead"),
                     (dict(height=64, guidance=2), r"evaluate sets height itself; pass size=\(width, height\)"),
                     (dict(trace=True), r"evaluate sets trace itself; pass nothing: evaluate keeps no trace")):
        with pytest.raises(TypeError, match=hint):
            world.evaluate(Model(), n=1, **kw)
    assert len(calls) == 4  # refused before any clip


def test_evaluate_refuses_an_fps_a_model_cannot_draw_at():
    """evaluate(model, fps=16) sampled prompts at 16 fps and called generate without it: the model drew at its
    own rate and the fps asked was silently ignored. A model's rate is its limits.fps."""
    import types

    calls = []

    class Model:
        limits = types.SimpleNamespace(fps=8.0)

        def generate(self, caption, **kw):
            calls.append(kw)
            return world.render(caption, seed=kw["seed"], duration=kw["duration"], size=(kw["width"], kw["height"]))

    class Bare:  # no limits: its rate cannot be checked
        generate = Model.generate

    with pytest.raises(ValueError, match=r"evaluate: fps=16, but a model draws its clips at its own frame rate \(its "
                                         r"generate takes no fps\), model.limits.fps = 8: pass fps=8 or leave fps out"):
        world.evaluate(Model(), n=1, fps=16)
    with pytest.raises(ValueError, match="evaluate: fps=8, but .* this model has no limits.fps to check fps against"):
        world.evaluate(Bare(), n=1, fps=8)
    assert calls == []  # refused before any clip
    want = world.evaluate(world.oracle(), n=2, seed=4)
    for model, kw in ((Model(), {}), (Model(), dict(fps=8)), (Bare(), {})):
        df = world.evaluate(model, n=2, seed=4, **kw)  # the same prompts as at the world's 8 fps
        assert list(df["caption"]) == list(want["caption"]) and (df["overall"] == 1).all()
    fast = Model()
    fast.limits = types.SimpleNamespace(fps=12)
    twelve = [c.caption for c in world.sample(3, seed=4, fps=12)]
    assert list(world.evaluate(fast, n=3, seed=4)["caption"]) == twelve == list(
        world.evaluate(fast, n=3, seed=4, fps=12)["caption"])


def test_per_object_results_add_up_to_judges_shares():
    """`per_object` is `judge` object by object: its shares are judge's colour, shape, motion and consistency."""
    from sora_nb.world import analyse, evaluator, parse, sample

    seen, failed = 0, 0
    for clip in sample(12, seed=4, split="train", phrasing="train"):
        frames = clip.frames.copy()
        if seen % 2:  # half the clips with an object's later frames blanked, so some objects fail
            frames[8:, :, :32] = frames[0, 0, 0]
        seen += 1
        scene, want = analyse(frames), parse(clip.caption)
        rows, res = evaluator.per_object(scene, want), evaluator.judge(scene, want)
        assert len(rows) == len(want.objects)
        failed += sum(not r["consistent"] for r in rows)
        for key in ("colour", "shape", "motion", "consistent"):
            asked = [r[key] for r in rows if r[key] is not None]
            want_share = res["consistency" if key == "consistent" else key]
            if asked:
                assert np.mean(asked) == pytest.approx(want_share)
            else:
                assert np.isnan(want_share)
    assert failed > 0  # the blanked clips give the comparison objects that fail


def test_against_bars_gives_each_bar_an_interval_and_a_verdict():
    import pandas as pd

    n = 400
    df = pd.DataFrame({
        "colour": np.ones(n),                                        # every clip right: a zero-width interval
        "shape": np.r_[np.ones(380), np.zeros(20)],                  # .95 over 400 clips: clearly above .90
        "motion": np.r_[np.ones(362), np.zeros(38)],                 # .905: above .90, within noise
        "count": np.r_[np.ones(356), np.zeros(44)],                  # .89: below .90, within noise
        "consistency": np.r_[np.full(200, 0.5), np.full(200, np.nan)],   # asked in 200 clips, all .5: missed
        "overall": np.r_[np.ones(300), np.zeros(100)]})
    t = world.against_bars(df)
    assert list(t.index) == ["colour", "shape", "motion", "count", "consistency"]
    assert list(t.columns) == ["mean", "low", "high", "n", "bar", "verdict"]
    # all 400 right: the mean is 1, but the interval has width (Wilson: 1 - z^2 / (n + z^2) at its low end)
    assert t.loc["colour", "mean"] == t.loc["colour", "high"] == 1.0
    assert np.isclose(t.loc["colour", "low"], 400 / (400 + 1.96 ** 2)) and t.loc["colour", "low"] > 0.95
    assert list(t["verdict"]) == ["holds", "holds", "above, within noise", "below, within noise", "missed"]
    assert t.loc["consistency", "n"] == 200 and t.loc["consistency", "mean"] == 0.5   # NaN (not asked) skipped
    lo, hi = t.loc["motion", "low"], t.loc["motion", "high"]                  # Wilson's interval for 362 of 400
    p, z = 362 / 400, 1.96
    centre = (p + z * z / 800) / (1 + z * z / 400)
    assert np.isclose((lo + hi) / 2, centre) and centre < p                  # pulled towards 1/2
    assert np.isclose(hi - lo, 2 * z / (1 + z * z / 400) * np.sqrt(p * (1 - p) / 400 + z * z / 640000))
    assert np.isclose(hi - lo, 2 * z * np.sqrt(p * (1 - p) / 400), rtol=0.02)  # near the normal one at this n
    assert list(t["bar"]) == [world.BARS[c] for c in t.index]
    wide = world.against_bars(df, bars={"motion": np.float32(0.9)}, z=np.float64(3.0))  # a wider interval, another verdict
    assert wide.loc["motion", "low"] < t.loc["motion", "low"] and wide.loc["motion", "verdict"] == "above, within noise"
    held = world.against_bars(df, bars={"overall": world.HELDOUT_BAR})
    assert held.loc["overall", "verdict"] == "missed" and held.loc["overall", "mean"] == 0.75
    assert world.against_bars(df.assign(size=np.nan), bars={"size": 0.9}).loc["size", "verdict"] == "not asked"
    few = world.against_bars(pd.DataFrame({"colour": [1.0] * 20}), bars={"colour": 0.95}).loc["colour"]
    assert few["mean"] == few["high"] == 1.0 and round(few["low"], 3) == 0.839   # 20 of 20 cannot show .95
    assert few["verdict"] == "above, within noise"
    lo, hi = world.evaluator.wilson(0.0, 20)
    assert lo == 0.0 and round(hi, 3) == 0.161
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        world.evaluator.wilson(0.5, 0)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(bars={}), ValueError, "bars must name at least one check"),
    (dict(bars={"colours": 0.9}), ValueError, "unknown check 'colours'"),
    (dict(bars={"colour": 1.5}), ValueError, r"bars\['colour'\] must be a number in \[0, 1\], got 1.5"),
    (dict(bars={"colour": "high"}), ValueError, r"bars\['colour'\] must be a number in \[0, 1\]"),
    (dict(z=0), ValueError, "z must be a finite number > 0"),
    (dict(z=float("nan")), ValueError, "z must be a finite number > 0"),
    (dict(bars={"size": 0.9}), ValueError, "df has no column 'size'"),
])
def test_against_bars_refuses_bad_input(kwargs, error, match):
    import pandas as pd

    df = pd.DataFrame({c: [1.0, 0.0] for c in world.BARS})
    with pytest.raises(error, match=match):
        world.against_bars(df, **kwargs)
    with pytest.raises(TypeError, match="df must be a pandas DataFrame"):
        world.against_bars([{"colour": 1.0}])
