"""Layout redraws (``retries``): a clip whose object count changes between latent frames is drawn again."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

import sora_nb
from sora_nb.api import RETRY_STRIDE
from sora_nb.backends import embedded

PROMPT = "a red circle moving right and a blue square spinning and a green star moving up"


def _raw_to_latents(b: embedded.EmbeddedBackend, raw: torch.Tensor) -> torch.Tensor:
    """Raw latent (C, F, h, w) -> the normalised (F, C, h, w) a Video.latents holds."""
    return b.vae.normalize(raw[None])[0].transpose(0, 1)


def test_count_blobs_is_four_connected():
    m = np.zeros((6, 6), bool)
    m[0, 0] = m[1, 1] = True  # diagonal neighbours: two objects
    m[3:5, 3:6] = True        # one block
    m[5, 0] = True
    assert embedded.count_blobs(m) == 4
    assert embedded.count_blobs(np.zeros((4, 4), bool)) == 0
    assert embedded.count_blobs(np.ones((16, 16), bool)) == 1


def test_layout_counts_read_the_shape_channels_of_the_raw_latent(gen):
    b = gen.backend
    (first, end), threshold = b.layout
    assert (first, end) == (11, 16) and threshold == pytest.approx(0.2)
    C = b.vae.config.latent_channels
    raw = torch.zeros(C, 4, 16, 16)
    raw[first, :, 2:5, 2:5] = 0.6           # a circle's disc in every frame
    raw[first + 3, :3, 10:13, 10:13] = 0.6  # a star's, gone from the last latent frame
    raw[first + 1, 3, 10:13, 10:13] = 0.1   # ... where a faint square (under the threshold) is not an object
    raw[first + 2, 1, 0, 15] = -5.0         # negative coverage counts as none
    raw[:first] = 3.0                        # the pixel channels say nothing about the count
    lat = _raw_to_latents(b, raw)
    assert b.layout_counts(lat) == [2, 2, 2, 1]
    assert b.layout_flaws(lat) == 1
    raw[first + 3, 1, 10:13, 10:13] = 0.0    # the star also vanishes in frame 1: 2, 1, 2, 1
    assert b.layout_flaws(_raw_to_latents(b, raw)) == 3
    # two shapes' coverage adds up: 0.15 + 0.15 is over the threshold
    raw = torch.zeros(C, 2, 16, 16)
    raw[first, :, 5, 5] = raw[first + 4, :, 5, 5] = 0.15
    assert b.layout_counts(_raw_to_latents(b, raw)) == [1, 1]


class _Scripted:
    """Wraps a backend; ``judge_draw`` answers from a table by the draw (the order of the final latents its
    ``denoise`` gave), and ``decoded`` keeps every latent the run decoded."""

    def __init__(self, backend, flaws_by_draw):
        self._b, self.table, self.seen, self.drawn, self.decoded = backend, flaws_by_draw, [], [], []

    def __getattr__(self, name):
        return getattr(self._b, name)

    def judge_draw(self, latents, prompt):
        k = next(i for i, v in enumerate(self.drawn) if torch.equal(v, latents))
        self.seen.append(k)
        return self.table[k], None, self.table[k] == 0

    def denoise(self, request, generator):
        for event in self._b.denoise(request, generator):
            last = event
            yield event
        self.drawn.append(last.x_next.detach().cpu().clone())

    def decode(self, latents, num_frames):
        self.decoded.append(latents.detach().cpu().clone())
        return self._b.decode(latents, num_frames)


def _scripted(gen, table):
    s = _Scripted(gen.backend, table)
    return sora_nb.Generator(s), s


@pytest.mark.parametrize("table, retries, picked, draws", [
    ([0, 5, 5], 2, 0, 1),   # no break: one draw
    ([2, 0, 1], 2, 1, 2),   # stops at the first draw without a break
    ([2, 1, 1], 2, 1, 3),   # none without: the fewest, the first of equals
    ([1, 0], 0, 0, 1),      # retries 0: the first draw, whatever its breaks
    ([3, 2, 2, 1, 0], 3, 3, 4),
])
def test_run_redraws_until_the_layout_holds_and_keeps_the_fewest_breaks(gen, table, retries, picked, draws):
    g, s = _scripted(gen, table)
    starts = []

    class Watch:
        def on_start(self, info):
            starts.append((info.request.seed, info.request.steps))

    v = g.generate(PROMPT, seed=5, steps=5, retries=retries, observers=[Watch()])
    seeds = [5 + RETRY_STRIDE * a for a in range(draws)]
    steps = [5, 3, 2, 2, 2][:draws]  # redraw a takes the manifest's a-th redraw_share (0.6, then 0.4) of the steps
    assert starts == list(zip(seeds, steps)) and s.seen == list(range(draws))
    assert len(s.drawn) == draws and len(s.decoded) == 1  # only the kept draw is decoded
    assert torch.equal(s.decoded[0], s.drawn[picked])
    assert v.params["retry"] == {"seeds": seeds, "steps": steps, "flaws": table[:draws], "picked": picked}
    # the call as made: it draws the same again
    assert v.params["seed"] == 5 and v.params["steps"] == 5 and v.params["retries"] == retries
    assert len(v.trace.step) == steps[picked]  # the kept draw's own trace, one entry per step it took
    # the clip kept is that draw's own: frames, latents and trace as a plain run of its seed and steps gives them
    plain = gen.generate(PROMPT, seed=seeds[picked], steps=steps[picked], retries=0)
    np.testing.assert_array_equal(v.frames, plain.frames)
    assert torch.equal(v.latents, plain.latents) and torch.equal(g.last_latents, plain.latents)
    np.testing.assert_array_equal(v.trace.x0.values, plain.trace.x0.values)
    # the call's seed and steps, as in params; after a redraw the kept draw's own are noise_seed and noise_steps
    assert v.trace.attrs["seed"] == 5 and v.trace.attrs["steps"] == 5
    if draws > 1:
        assert v.trace.attrs["noise_seed"] == seeds[picked] and v.trace.attrs["noise_steps"] == steps[picked]
        assert json.loads(v.trace.attrs["retry"]) == v.params["retry"]
    else:  # one draw: the trace is exactly the run's, as any observer records it
        assert not {"noise_seed", "noise_steps", "retry"} & set(v.trace.attrs)


def test_a_failed_decode_after_redraws_keeps_the_kept_draws_latents_and_trace(gen):
    """The kept draw is decoded after the last redraw; if that fails (out of memory, say), the DecodeError holds
    that draw's latents and trace, and decoding them again gives the clip a plain run of its seed gives."""
    g, s = _scripted(gen, [2, 0, 1])

    def fail(latents, num_frames):
        s.decoded.append(latents)
        raise MemoryError("no room to decode")

    s.decode = fail
    with pytest.raises(sora_nb.DecodeError, match=r"decoding the latents failed \(MemoryError: no room") as info:
        g.generate(PROMPT, seed=5, steps=5, retries=2)
    err = info.value
    assert len(s.drawn) == 2 and len(s.decoded) == 1  # two draws, one decode: the second, kept draw's
    assert torch.equal(err.latents, s.drawn[1]) and torch.equal(g.last_latents, s.drawn[1])
    assert err.trace is not None and len(err.trace.step) == 3  # the redraw's own trace (3 of 5 steps)
    plain = gen.generate(PROMPT, seed=5 + RETRY_STRIDE, steps=3, retries=0)
    np.testing.assert_array_equal(gen.decode(err.latents, err.num_frames), plain.frames)


def test_a_failed_decode_after_redraws_gives_the_trace_the_calls_attrs(gen):
    """The DecodeError's trace has the attrs a decoded redraw's trace has (the call's seed and steps, the kept
    draw's noise_seed and noise_steps, retry): they were set only after a decode that succeeded, so the trace
    said the redraw's seed and steps were the call's."""
    import xarray as xr

    g, s = _scripted(gen, [2, 0, 1])
    ok = g.generate(PROMPT, seed=5, steps=5, retries=2)

    def fail(latents, num_frames):
        raise MemoryError("no room to decode")

    s.decode = fail
    s.drawn.clear()
    with pytest.raises(sora_nb.DecodeError) as info:
        g.generate(PROMPT, seed=5, steps=5, retries=2)
    attrs = info.value.trace.attrs
    assert attrs["seed"] == 5 and attrs["steps"] == 5
    assert attrs["noise_seed"] == 5 + RETRY_STRIDE and attrs["noise_steps"] == 3
    assert json.loads(attrs["retry"]) == {"seeds": [5, 5 + RETRY_STRIDE], "steps": [5, 3], "flaws": [2, 0],
                                          "picked": 1} == ok.params["retry"]
    xr.testing.assert_identical(info.value.trace, ok.trace)  # the same trace as the call that decoded


def test_the_shipped_model_redraws_by_default_and_the_same_seed_gives_the_same_clip(gen):
    assert gen.limits.default_retries == 3 and gen.limits.max_retries == embedded.MAX_RETRIES
    # a first redraw in 12 of 20 steps, later ones in 8: a clip redrawn three times costs 2.4 clips
    assert gen.limits.redraw_share == (0.6, 0.4) and [gen.limits.redraw_steps(20, a) for a in (1, 2, 3)] == [12, 8, 8]
    floor = gen.backend.redraw_below
    assert floor == -8.0 and gen.backend.verifier is not None
    broken, draws = [], set()
    for seed in range(12):  # find a seed whose first draw breaks (about half of them, for this three-object prompt)
        v = gen.generate(PROMPT, seed=seed, trace=False)
        r = v.params["retry"]
        n = len(r["seeds"])
        draws.add(n)
        assert r["seeds"] == [seed + RETRY_STRIDE * a for a in range(n)] and len(r["flaws"]) == len(r["scores"]) == n <= 4
        assert r["steps"] == [20, 12, 8, 8][:n] and v.params["steps"] == 20
        assert r["flaws"][r["picked"]] == min(r["flaws"]) == gen.backend.layout_flaws(v.latents)
        assert r["scores"][r["picked"]] == pytest.approx(float(gen.backend.score_clip(v.latents, PROMPT)[0]), abs=1e-5)
        ok = [f == 0 and s >= floor for f, s in zip(r["flaws"], r["scores"])]
        assert n == (ok.index(True) + 1 if any(ok) else 4)  # drawn until a draw passes, at most three times more
        keys = [(f, -s) for f, s in zip(r["flaws"], r["scores"])]
        assert r["picked"] == keys.index(min(keys))  # fewest breaks, then the highest score, the first of equals
        if r["flaws"][0]:
            broken.append((seed, v))
    assert broken, "no seed of 12 drew a broken layout"
    assert 3 in draws, "no seed of 12 needed the second redraw"
    seed, v = broken[0]
    first = gen.generate(PROMPT, seed=seed, trace=False, retries=0)
    assert gen.backend.layout_flaws(first.latents) == v.params["retry"]["flaws"][0] > 0
    again = gen.generate(PROMPT, seed=seed, trace=False)
    np.testing.assert_array_equal(again.frames, v.frames)
    assert again.params["retry"] == v.params["retry"]


@pytest.mark.parametrize("value, err, match", [
    (-1, ValueError, r"retries must be an integer in \[0, 8\], got -1"),
    (9, ValueError, r"retries must be an integer in \[0, 8\], got 9"),
    (1.0, TypeError, r"retries must be an integer in \[0, 8\], got float"),
    (True, TypeError, r"retries must be an integer in \[0, 8\], got bool"),
    ("2", TypeError, r"retries must be an integer in \[0, 8\], got str"),
])
def test_bad_retries_are_refused_by_name_before_drawing(gen, value, err, match):
    started = []

    class Watch:
        def on_start(self, info):
            started.append(info)

    with pytest.raises(err, match=match):
        gen.generate("a red circle", retries=value, observers=[Watch()])
    assert started == []


def test_a_model_without_a_layout_check_takes_only_zero_retries():
    g = sora_nb.load("shapes-untrained")
    assert g.limits.max_retries == 0 and g.limits.default_retries == 0
    with pytest.raises(ValueError, match="retries must be 0 for model 'shapes-untrained': it has no layout check"):
        g.generate("a red circle", retries=1, steps=1)
    with pytest.raises(TypeError, match="retries must be the integer 0 for model 'shapes-untrained'"):
        g.generate("a red circle", retries=0.5, steps=1)
    v = g.generate("a red circle", retries=0, steps=1, trace=False)
    assert "retry" not in v.params and v.params["retries"] == 0
    with pytest.raises(ValueError, match="model 'shapes-untrained' has no layout check"):
        g.backend.layout_counts(v.latents)


@pytest.fixture(scope="module")
def folder_copy(tmp_path_factory):
    dst = tmp_path_factory.mktemp("w") / "shapes"
    shutil.copytree(embedded.WEIGHTS_DIR, dst)
    return dst


SHARE = r"redraw_share must be a share of the steps in \(0, 1\], or a list of 1 to 8 such shares \(one per redraw, the last repeating\), "


@pytest.mark.parametrize("edit, match", [
    ({"layout_check": {"channels": [11, 17], "threshold": 0.2}}, r"layout_check channels must be \[first, end\]"),
    ({"layout_check": {"channels": [12, 11], "threshold": 0.2}}, r"layout_check channels must be \[first, end\]"),
    ({"layout_check": {"channels": [11, 16], "threshold": 1.5}}, r"layout_check threshold must be a coverage in \(0, 1\)"),
    ({"layout_check": [11, 16]}, r"layout_check channels must be"),
    ({"default_retries": 9}, r"default_retries must be an integer in \[0, 8\]"),
    ({"default_retries": -1}, r"default_retries must be an integer in \[0, 8\]"),
    ({"layout_check": None, "redraw_below": None, "redraw_share": None, "default_retries": 1},
     r"default_retries must be an integer in \[0, 0\] \(it has no layout_check"),
    ({"layout_check": None}, r"redraw_below needs a layout_check and a verifier/ in the folder \(has no layout_check"),
    ({"redraw_share": 0}, SHARE + r"got 0"),
    ({"redraw_share": 1.5}, SHARE + r"got 1.5"),
    ({"redraw_share": "0.6"}, SHARE + r"got '0.6'"),
    ({"redraw_share": True}, SHARE + r"got True"),
    ({"redraw_share": []}, SHARE + r"got \[\]"),
    ({"redraw_share": [0.6, 0]}, SHARE + r"got \[0.6, 0\]"),
    ({"redraw_share": [0.6, None]}, SHARE + r"got \[0.6, None\]"),
    ({"redraw_share": [0.5] * 9}, SHARE + r"got \[0.5, 0.5"),
    ({"redraw_share": {"first": 0.6}}, SHARE + r"got \{'first': 0.6\}"),
    ({"layout_check": None, "redraw_below": None, "default_retries": None},
     r"redraw_share needs a layout_check \(a model without one never redraws\)"),
])
def test_a_manifest_with_a_bad_layout_check_is_refused(folder_copy, edit, match):
    path = folder_copy / embedded.MANIFEST
    original = path.read_text()
    try:
        manifest = json.loads(original)
        for k, v in edit.items():
            if v is None:
                manifest.pop(k, None)
            else:
                manifest[k] = v
        path.write_text(json.dumps(manifest))
        with pytest.raises(embedded.WeightsError, match=match):
            embedded.load_folder(folder_copy)
    finally:
        path.write_text(original)
    assert embedded.load_folder(folder_copy).limits.default_retries == 3  # the copy as shipped still loads


def _with_floor(b: embedded.EmbeddedBackend, floor) -> embedded.EmbeddedBackend:
    return embedded.EmbeddedBackend(b.vae, b.dit, b.text, b.scheduler_config, b.latent_rgb.numpy(),
                                    {**b.info, "name": "floor-test", "redraw_below": floor}, b.low, b.verifier)


def test_a_draw_the_verifier_scores_under_redraw_below_is_drawn_again(gen):
    kw = dict(steps=4, trace=False)
    never = sora_nb.Generator(_with_floor(gen.backend, -1e9))   # the floor never bites: the layout alone decides
    always = sora_nb.Generator(_with_floor(gen.backend, 1e9))   # no draw is ever good enough
    a = never.generate("a red circle moving right", seed=3, retries=2, **kw).params["retry"]
    assert a["flaws"][-1] == 0 and len(a["seeds"]) == len(a["flaws"])  # stopped at the first unbroken draw
    b = always.generate("a red circle moving right", seed=3, retries=2, **kw)
    r = b.params["retry"]
    assert len(r["seeds"]) == 3 and r["seeds"][:len(a["seeds"])] == a["seeds"]  # the same draws, then more
    best = min(range(3), key=lambda j: (r["flaws"][j], -r["scores"][j]))
    assert r["picked"] == best and r["scores"][best] == pytest.approx(
        float(gen.backend.score_clip(b.latents, "a red circle moving right")[0]), abs=1e-5)
    assert r["steps"] == [4, 2, 2]  # round(0.6 * 4), then round(0.4 * 4)
    assert r["flaws"] == [gen.backend.layout_flaws(gen.generate("a red circle moving right", seed=s, retries=0, steps=n,
                                                                 trace=False).latents) for s, n in zip(r["seeds"], r["steps"])]


@pytest.mark.parametrize("info, match", [
    ({"redraw_below": float("nan")}, "redraw_below must be a finite verifier score"),
    ({"redraw_below": "low"}, "redraw_below must be a finite verifier score"),
    ({"redraw_below": -8.0, "layout_check": None}, "redraw_below needs a layout_check and a verifier"),
])
def test_a_bad_redraw_below_is_refused(gen, info, match):
    b = gen.backend
    meta = {**b.info, "name": "floor-test"}
    for k, v in info.items():
        if v is None:
            meta.pop(k, None)
        else:
            meta[k] = v
    meta.pop("default_retries", None)
    with pytest.raises(embedded.WeightsError, match=match):
        embedded.EmbeddedBackend(b.vae, b.dit, b.text, b.scheduler_config, b.latent_rgb.numpy(), meta, b.low, b.verifier)
    with pytest.raises(embedded.WeightsError, match="redraw_below needs a layout_check and a verifier"):
        embedded.EmbeddedBackend(b.vae, b.dit, b.text, b.scheduler_config, b.latent_rgb.numpy(),
                                 {**b.info, "name": "floor-test", "redraw_below": -8.0}, b.low, None)


def test_redraw_steps_rounds_the_share_and_takes_at_least_one_step(gen):
    limits = gen.limits
    assert [limits.redraw_steps(n) for n in (1, 2, 3, 4, 5, 20, 40, 50)] == [1, 1, 2, 2, 3, 12, 24, 30]
    assert [limits.redraw_steps(n, 1) for n in (5, 20)] == [3, 12]  # the first redraw: the first share (0.6)
    for a in (2, 3, 8):  # later redraws: the last share (0.4)
        assert [limits.redraw_steps(n, a) for n in (1, 2, 3, 4, 5, 20, 40)] == [1, 1, 1, 2, 2, 8, 16]
    full = dataclasses.replace(limits, redraw_share=(1.0,))
    assert [full.redraw_steps(n, a) for n in (1, 7, 20) for a in (1, 5)] == [1, 1, 7, 7, 20, 20]
    for bad in (0, -1, True, 1.5, "1"):
        with pytest.raises(ValueError, match=r"redraw must be an integer >= 1 \(1: the first redraw\), got "):
            limits.redraw_steps(20, bad)


def test_save_folder_refuses_a_bad_redraw_share_before_writing(gen, tmp_path):
    b = gen.backend
    for share, match in ((0.0, r"redraw_share must be a share of the steps in \(0, 1\]"),
                         (2, r"redraw_share must be a share of the steps in \(0, 1\]")):
        with pytest.raises(embedded.WeightsError, match=match):
            embedded.save_folder(tmp_path / "x", b.vae, b.dit, b.text, b.scheduler_config, b.latent_rgb.numpy(),
                                 {**b.info, "redraw_share": share}, b.low, b.verifier)
        assert not (tmp_path / "x").exists()
    plain = {k: v for k, v in b.info.items() if k not in ("layout_check", "redraw_below", "default_retries")}
    with pytest.raises(embedded.WeightsError, match="redraw_share needs a layout_check"):
        embedded.save_folder(tmp_path / "x", b.vae, b.dit, b.text, b.scheduler_config, b.latent_rgb.numpy(), plain,
                             b.low, b.verifier)
    assert not (tmp_path / "x").exists()
