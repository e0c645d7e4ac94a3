"""The thin API: shapes, params, determinism, reproduction from params."""

import math
import os
import threading
import warnings

import numpy as np
import pytest
import torch

import sora_nb
from sora_nb.request import Request


def test_generate_contract(video):
    assert isinstance(video, sora_nb.Video)
    assert video.frames.dtype == np.uint8
    assert video.frames.shape == (16, 64, 64, 3)
    assert video.fps == 8.0
    p = video.params
    for key in ("prompt", "seed", "duration", "guidance", "steps", "width", "height", "model", "sora_nb_version",
                "negative_prompt", "num_frames", "fps"):
        assert key in p, key
    assert p["prompt"] == "a red circle moving right" and p["seed"] == 0 and p["steps"] == 4
    assert p["sora_nb_version"] == sora_nb.__version__
    C = video.trace.sizes["channel"]
    assert video.latents.shape == (4, C, 16, 16)  # (frame, channel, y, x)


def test_module_generate_uses_default_model(gen):
    v = sora_nb.generate("a blue square moving up", seed=1, steps=2, trace=False)
    assert v.params["model"] == gen.name
    assert sora_nb.load("shapes") is gen


def test_same_seed_same_video_and_different_seed_differs(gen):
    a = gen.generate("a green star spinning", seed=7, steps=3, trace=False)
    b = gen.generate("a green star spinning", seed=7, steps=3, trace=False)
    c = gen.generate("a green star spinning", seed=8, steps=3, trace=False)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, c.frames)
    assert torch.equal(a.latents, b.latents)


def test_global_rng_untouched(gen):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    gen.generate("a red circle", seed=5, steps=2, trace=False)
    np.testing.assert_array_equal(torch.rand(3).numpy(), expected.numpy())
    # nor by loading weights (modules are built with random weights before the files' replace them), so a
    # script's draws do not depend on whether the model was already cached
    from sora_nb.backends.embedded import WEIGHTS_DIR, load_folder

    torch.manual_seed(123)
    load_folder(WEIGHTS_DIR, shipped=True)
    np.testing.assert_array_equal(torch.rand(3).numpy(), expected.numpy())


def test_params_reproduce_the_video(gen):
    v = gen.generate("a yellow triangle moving left", seed=3, steps=3, guidance=2.5, duration=1.0,
                     negative_prompt="blue", trace=False)
    fields = {f for f in Request.__dataclass_fields__}
    again = sora_nb.load(v.params["model"]).generate(**{k: v.params[k] for k in fields if k in v.params})
    np.testing.assert_array_equal(again.frames, v.frames)


def test_reproduce_a_video_its_params_and_a_saved_clip(gen, tmp_path):
    """sora_nb.reproduce makes a clip again from a Video, its params or the mp4 that records them: same frames,
    redraws, eta, size and negative prompt included; generate(**params) points to it."""
    v = gen.generate("a yellow triangle moving left", seed=3, steps=4, guidance=2.5, duration=1.0, eta=0.5,
                     width=96, negative_prompt="blue", retries=2)
    path = v.save(tmp_path / "clip.mp4")
    for clip in (v, v.params, path, str(path)):
        again = sora_nb.reproduce(clip)
        np.testing.assert_array_equal(again.frames, v.frames)
        assert again.params == v.params
    assert sora_nb.reproduce(v, trace=False).trace is None and v.trace is not None
    picked = gen.best_of("a green square moving up", candidates=2, seed=1, steps=3, duration=0.5)
    again = sora_nb.reproduce(picked)  # drawn again from the picked candidate's own seed
    np.testing.assert_array_equal(again.frames, picked.frames)
    assert "best_of" in picked.params and "best_of" not in again.params
    with pytest.raises(TypeError, match="fps, model_info, .* recorded in a clip's params.*sora_nb.reproduce"):
        sora_nb.generate(**v.params)
    with pytest.raises(TypeError, match="clip must be a Video, its params dict or the path"):
        sora_nb.reproduce(5)
    with pytest.raises(ValueError, match="must hold at least 'prompt' and 'model'"):
        sora_nb.reproduce({"seed": 1})
    with pytest.raises(ValueError, match="does not know: colour"):
        sora_nb.reproduce({**v.params, "colour": "red"})
    # a key that decides the frames, missing, was the model's default: another clip, drawn silently
    for gone in ("seed", "steps", "guidance", "retries"):
        with pytest.raises(ValueError, match=f"clip's params lack {gone}, which decide its frames"):
            sora_nb.reproduce({k: val for k, val in v.params.items() if k != gone})
    with pytest.raises(ValueError, match=r"lack num_frames \(or duration\)"):
        sora_nb.reproduce({k: val for k, val in v.params.items() if k not in ("num_frames", "duration")})
    with pytest.raises(TypeError, match=r"clip's params\['model'\] must be a str, got int"):
        sora_nb.reproduce({**v.params, "model": 5})
    with pytest.raises(ValueError, match="not the model that made this clip .*name 'shapes-untrained', the clip's 'shapes'"):
        sora_nb.reproduce(v, model="shapes-untrained")
    # the clip records what else shapes its pixels, and reproduce says when this process differs
    assert v.params["runtime"] == {"torch": torch.__version__, "threads": torch.get_num_threads()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sora_nb.reproduce(v, trace=False)  # the same runtime: no warning
    other = {**v.params, "runtime": {"torch": "2.0.0", "threads": 99}}
    with pytest.warns(RuntimeWarning, match=r"made with torch 2\.0\.0 on 99 CPU threads and this process has torch "):
        assert sora_nb.reproduce(other, trace=False).params["runtime"] == v.params["runtime"]


def _other_weights(folder, shift):
    """A copy of the shipped weights folder with another sampler shift: other weights, still named "shapes",
    as every `sora-nb train` export is."""
    import json
    import shutil

    from sora_nb.backends import embedded

    if not folder.exists():
        shutil.copytree(embedded.WEIGHTS_DIR, folder)
    config = folder / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "shift": shift}))
    manifest = json.loads((folder / embedded.MANIFEST).read_text())
    embedded.write_manifest(folder, {k: v for k, v in manifest.items() if k not in ("files", "format")})
    return folder


def test_reproduce_finds_the_weights_folder_and_refuses_other_weights(gen, tmp_path):
    """A clip made from a weights folder records the folder; reproduce loads it and refuses the shipped model,
    which has the same name and other weights (it used to draw another clip without a word)."""
    mine = sora_nb.load(_other_weights(tmp_path / "w", 3.0))
    v = mine.generate("a red circle moving right", seed=0, steps=3, duration=0.5, retries=0)
    assert v.params["model"] == "shapes" and v.params["model_info"]["folder"] == str((tmp_path / "w").resolve())
    assert v.trace.attrs["model_folder"] == v.params["model_info"]["folder"]
    assert v.trace.attrs["weights_sha256"] == v.params["model_info"]["weights_sha256"]
    assert "folder" not in gen.generate("a red circle", steps=2, trace=False).params["model_info"]  # shipped: by name
    shipped = gen.generate("a red circle moving right", seed=0, steps=3, duration=0.5, retries=0, trace=False)
    assert not np.array_equal(shipped.frames, v.frames)
    np.testing.assert_array_equal(sora_nb.reproduce(v).frames, v.frames)
    with pytest.raises(ValueError, match=f"not the model that made this clip \\(weights_sha256 "
                                         f"'{gen.backend.describe()['weights_sha256']}', the clip's "
                                         f"'{v.params['model_info']['weights_sha256']}'\\)"):
        sora_nb.reproduce(v, model="shapes")
    (tmp_path / "w").rename(tmp_path / "moved")
    with pytest.raises(ValueError, match="weights in folder .* not there any more: pass model="):
        sora_nb.reproduce(v)
    np.testing.assert_array_equal(sora_nb.reproduce(v, model=tmp_path / "moved").frames, v.frames)


def test_load_reads_a_folder_again_when_its_weights_change(tmp_path):
    """load caches a folder's model under its manifest: weights written again into the folder (a second training
    run, say) load anew instead of returning the model loaded before."""
    first = sora_nb.load(_other_weights(tmp_path / "w", 3.0))
    assert sora_nb.load(tmp_path / "w") is first and sora_nb.load(str(tmp_path / "w") + "/") is first
    second = sora_nb.load(_other_weights(tmp_path / "w", 4.0))
    assert second is not first
    assert second.backend.describe()["weights_sha256"] != first.backend.describe()["weights_sha256"]
    assert second.backend.scheduler_config["shift"] == 4.0 and sora_nb.load(tmp_path / "w") is second


def test_seed_none_records_the_seed_used(gen):
    v = gen.generate("a pink circle", seed=None, steps=2, trace=False)
    seed = v.params["seed"]
    assert isinstance(seed, int) and 0 <= seed < 2**31
    again = gen.generate("a pink circle", seed=seed, steps=2, trace=False)
    np.testing.assert_array_equal(again.frames, v.frames)


@pytest.mark.parametrize("duration,frames,latent_frames", [(0.125, 1, 1), (1.0, 8, 2), (1.5, 12, 3),
                                                           (2.0, 16, 4), (4.0, 32, 8)])
def test_durations(gen, duration, frames, latent_frames):
    v = gen.generate("a red circle", duration=duration, steps=2)
    assert v.frames.shape == (frames, 64, 64, 3)
    assert v.params["num_frames"] == frames
    assert v.trace.sizes["frame"] == latent_frames


def test_wide_resolution(gen):
    v = gen.generate("a red circle", width=96, height=64, steps=2)
    assert v.frames.shape == (16, 64, 96, 3)
    assert v.trace.sizes["x"] == 24 and v.trace.sizes["y"] == 16


def test_guidance_paths_differ_and_prompt_matters_for_cfg(gen):
    """guidance 0 ignores the prompt, 1 uses it alone, other values mix both branches."""
    kw = dict(seed=2, steps=3, trace=False)
    g0a = gen.generate("a red circle", guidance=0.0, **kw)
    g0b = gen.generate("a blue star", guidance=0.0, **kw)
    np.testing.assert_array_equal(g0a.frames, g0b.frames)  # unconditional: prompt is ignored
    neg = gen.generate("a red circle", guidance=0.0, negative_prompt="blue", **kw)
    # guidance 0 encodes the negative prompt alone: [CLS] blue [SEP]
    assert gen.backend._conditioning(gen.request("x", guidance=0.0, negative_prompt="blue"))[0].shape[1] == 3
    assert neg.params["negative_prompt"] == "blue"


def test_cancel_raises_and_skips_decode(gen, monkeypatch):
    cancel = threading.Event()
    decoded = []
    monkeypatch.setattr(gen.backend, "decode", lambda *a: decoded.append(1))

    class StopAfterTwo:
        def __init__(self):
            self.steps = []

        def on_step(self, ev):
            self.steps.append(ev.step)
            if ev.step == 1:
                cancel.set()

    obs = StopAfterTwo()
    with pytest.raises(sora_nb.Cancelled, match="after step 2 of 10"):
        gen.generate("a red circle", steps=10, observers=[obs], cancel=cancel)
    assert obs.steps == [0, 1]
    assert decoded == []


class _Failing:
    """An observer that logs its calls and raises in one of them."""

    def __init__(self, where=None):
        self.where, self.log = where, []

    def on_start(self, info):
        self.log.append("start")
        if self.where == "start":
            raise KeyError("boom-start")

    def on_step(self, ev):
        self.log.append(f"step{ev.step}")
        if self.where == "step" and ev.step == 1:
            raise KeyError("boom-step")

    def on_end(self, latents, cancelled):
        self.log.append(f"end {cancelled}")
        if self.where == "end":
            raise KeyError("boom-end")


def test_an_observers_on_end_error_keeps_the_clip_and_the_others_still_close(gen):
    """An on_end error was raised from the run's finally: a finished, decoded clip was lost (and a DecodeError's
    latents with it); an on_start/on_step error skipped every other observer's on_end."""
    good, bad = _Failing(), _Failing("end")
    with pytest.warns(RuntimeWarning, match=r"observer _Failing.on_end raised KeyError: 'boom-end' \(the run's result is kept\)"):
        v = gen.generate("a red circle moving right", steps=4, retries=0, trace=False, observers=[good, bad])
    ref = gen.generate("a red circle moving right", steps=4, retries=0, trace=False)
    assert np.array_equal(v.frames, ref.frames) and good.log[-1] == "end False"
    assert torch.equal(gen.last_latents, ref.latents)
    for where, steps in (("start", []), ("step", ["step0", "step1"])):
        good, bad = _Failing(), _Failing(where)
        with pytest.raises(KeyError, match=f"boom-{where}"):
            gen.generate("a red circle moving right", steps=4, retries=0, observers=[good, bad])
        assert good.log == ["start", *steps, "end True"] and bad.log[-1] == "end True"


def test_a_reused_trace_recorder_drops_the_last_runs_trace_at_a_new_start(gen):
    from sora_nb.trace import TraceRecorder

    rec = TraceRecorder(gen.backend.preview)
    gen.generate("a red circle moving right", steps=3, retries=0, trace=False, observers=[rec])
    assert rec.dataset is not None and rec.dataset.sizes["step"] == 3
    with pytest.raises(KeyError):
        gen.generate("a red circle moving right", steps=5, retries=0, trace=False, observers=[rec, _Failing("start")])
    assert rec.dataset is None  # it held the first run's trace


def test_cancel_before_the_first_step_runs_none_and_after_the_last_keeps_the_clip(gen, monkeypatch):
    calls = []
    denoise = gen.backend.denoise
    monkeypatch.setattr(gen.backend, "denoise", lambda *a: (calls.append(1), denoise(*a))[1])
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(sora_nb.Cancelled, match="cancelled before the first step"):
        gen.generate("a red circle", steps=4, retries=0, cancel=cancel)
    assert calls == []  # a step was run (and thrown away) before the flag was read

    class AtLast:
        def on_step(self, ev):
            if ev.step + 1 == ev.num_steps:
                cancel.set()

    cancel.clear()
    v = gen.generate("a red circle", steps=4, retries=0, trace=False, cancel=cancel, observers=[AtLast()])
    ref = gen.generate("a red circle", steps=4, retries=0, trace=False)
    assert np.array_equal(v.frames, ref.frames)  # every step had run: the clip is decoded, not thrown away


@pytest.mark.parametrize("field, value, error, message", [
    ("guidance", float("nan"), ValueError, r"guidance must be a finite number >= 0 and <= 50, got nan"),
    ("width", 128, ValueError, r"width x height must be one of 64x64, 96x64 for model 'shapes'; got 128x64"),
    ("steps", 0, ValueError, r"steps must be an integer in \[1, 1000\], got 0"),
    ("prompt", "   ", ValueError, r"prompt"),
])
def test_run_validates_a_request_built_by_hand(gen, field, value, error, message):
    """``Request`` is public and ``run`` took it as given: NaN guidance drew an all-black clip recorded as
    guidance nan, 128x128 ran at a size the model does not support, steps=0 was an IndexError."""
    import dataclasses

    with pytest.raises(error, match=message):
        gen.run(dataclasses.replace(sora_nb.Request(prompt="a red circle"), **{field: value}))
    with pytest.raises(TypeError, match="request must be a sora_nb.Request"):
        gen.run({"prompt": "a red circle"})
    req = gen.request("a red circle moving right", steps=3, seed=2, retries=0)
    assert np.array_equal(gen.run(req).frames, gen.generate("a red circle moving right", steps=3, seed=2, retries=0).frames)


def test_decode_checks_its_frame_count(gen, video):
    for bad, error in ((100, ValueError), (0, ValueError), (-1, ValueError), (True, TypeError), (3.7, TypeError)):
        with pytest.raises(error, match=r"num_frames must be an integer in \[1, 16\]"):
            gen.decode(video.latents, bad)
    with pytest.raises(TypeError, match=r"latents must be a \(frame, channel, y, x\) torch tensor"):
        gen.decode(video.latents.numpy(), 16)
    assert np.array_equal(gen.decode(video.latents, 16), video.frames)
    assert gen.decode(video.latents, 5).shape == (5, 64, 64, 3)
    # another layout (the VAE's own channel-first) or another model's channels: named (it was torch's size error)
    with pytest.raises(ValueError, match=r"latents must be \(frame, channel, y, x\) with this model's 16 channels, "
                                         r"got shape \(16, 4, 16, 16\)"):
        gen.decode(video.latents.transpose(0, 1).contiguous(), 16)
    with pytest.raises(ValueError, match=r"this model's 16 channels, got shape \(4, 8, 16, 16\)"):
        gen.decode(video.latents[:, :8], 16)


def test_observers_see_every_step_in_order(gen):
    seen = []

    class Obs:
        def on_start(self, info):
            seen.append(("start", info.num_frames))

        def on_step(self, ev):
            seen.append(("step", ev.step, round(ev.sigma, 4)))

        def on_end(self, latents, cancelled):
            seen.append(("end", cancelled, tuple(latents.shape)))

    gen.generate("a red circle", steps=5, observers=[Obs()], trace=False, retries=0)  # one draw (redraws: test_retries)
    assert seen[0] == ("start", 16)
    assert [s[1] for s in seen[1:-1]] == [0, 1, 2, 3, 4]
    sigmas = [s[2] for s in seen[1:-1]]
    assert sigmas[0] == 1.0 and all(a > b for a, b in zip(sigmas, sigmas[1:]))
    C = gen.backend.vae.config.latent_channels
    assert seen[-1] == ("end", False, (4, C, 16, 16))


def test_repr_html_plays(video):
    html = video._repr_html_()
    assert "<video" in html and "data:video/mp4;base64," in html
    assert "a red circle moving right" in html
    assert "Video(16 frames 64x64 @ 8 fps" in repr(video)


def test_load_accepts_generator_and_rejects_unknown(gen, tmp_path):
    assert sora_nb.load(gen) is gen
    with pytest.raises(ValueError, match="unknown model 'nope'.*shapes"):
        sora_nb.load("nope")
    with pytest.raises(TypeError, match="model must be"):
        sora_nb.load(3)
    for empty in ("", "  "):  # not the working folder
        with pytest.raises(ValueError, match="model must be a model name .*got an empty string"):
            sora_nb.load(empty)
    with pytest.raises(ValueError, match="not a sora_nb weights folder"):
        sora_nb.load(str(tmp_path))
    # a folder that is no model is not walked first (load("~") stat-ed every file; a dangling link raised errno)
    (tmp_path / "sub").mkdir()
    os.symlink(tmp_path / "gone", tmp_path / "sub" / "broken")
    with pytest.raises(ValueError, match="not a sora_nb weights folder"):
        sora_nb.load(str(tmp_path))


def _x0_model(target):
    """A velocity field whose clean estimate is always ``target``: v = (x - target) / sigma."""
    return lambda x, t: (x - target) / (float(t) / 1000.0)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_stochastic_steps_follow_the_eta_formula(eta):
    from diffusers import FlowMatchEulerDiscreteScheduler

    from sora_nb.sampler import flow_matching_steps

    target = torch.randn(1, 2, 3, 4, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(1, 2, 3, 4, generator=torch.Generator().manual_seed(2))
    events = list(flow_matching_steps(_x0_model(target), noise, FlowMatchEulerDiscreteScheduler(), 5, eta=eta,
                                      generator=torch.Generator().manual_seed(3)))
    fresh = torch.Generator().manual_seed(3)  # the same stream: one draw per step but the last
    for ev in events:
        torch.testing.assert_close(ev.x0, target, atol=1e-5, rtol=0)
        s, sn, x = ev.sigma, ev.sigma_next, ev.latent
        if sn == 0.0:
            torch.testing.assert_close(ev.x_next, target, atol=1e-5, rtol=0)  # the last step returns x0
            continue
        eps = (x - (1 - s) * target) / s  # the noise x_t holds
        z = torch.randn(x.shape, generator=fresh) if eta > 0 else 0.0
        expected = (1 - sn) * target + sn * (math.sqrt(1 - eta ** 2) * eps + eta * z)
        torch.testing.assert_close(ev.x_next, expected, atol=1e-5, rtol=1e-5)
    again = list(flow_matching_steps(_x0_model(target), noise, FlowMatchEulerDiscreteScheduler(), 5, eta=eta,
                                     generator=torch.Generator().manual_seed(3)))
    other = list(flow_matching_steps(_x0_model(target), noise, FlowMatchEulerDiscreteScheduler(), 5, eta=eta,
                                     generator=torch.Generator().manual_seed(4)))
    assert torch.equal(again[2].x_next, events[2].x_next)  # the same generator, the same steps
    assert torch.equal(other[2].x_next, events[2].x_next) == (eta == 0.0)


def test_eta_is_the_models_default_recorded_and_reproducible(gen):
    assert gen.limits.max_eta == 1.0 and gen.limits.default_eta == 1.0  # the shipped weights' choice
    a = gen.generate("a green star spinning", seed=7, steps=4, trace=False)
    b = gen.generate("a green star spinning", seed=7, steps=4, trace=False)
    ode = gen.generate("a green star spinning", seed=7, steps=4, eta=0.0, trace=False)
    ode2 = gen.generate("a green star spinning", seed=7, steps=4, eta=0, trace=False)
    assert a.params["eta"] == 1.0 and ode.params["eta"] == 0.0
    np.testing.assert_array_equal(a.frames, b.frames)     # stochastic steps draw from the per-call generator
    np.testing.assert_array_equal(ode.frames, ode2.frames)
    assert not np.array_equal(a.frames, ode.frames)
    # both start from the same noise: the first step's input is the seed's noise either way
    c = gen.generate("a green star spinning", seed=7, steps=4, eta=0.0)
    d = gen.generate("a green star spinning", seed=7, steps=4, eta=1.0)
    np.testing.assert_array_equal(c.trace["latent"].isel(step=0).values, d.trace["latent"].isel(step=0).values)


def test_the_module_functions_show_the_generators_keywords():
    """help(sora_nb.generate) showed (prompt, **kwargs): its keywords, defaults and docs are Generator.generate's,
    plus model=."""
    import inspect

    for function, method in ((sora_nb.generate, sora_nb.Generator.generate),
                             (sora_nb.best_of, sora_nb.Generator.best_of)):
        shown = inspect.signature(function).parameters
        own = {k: v for k, v in inspect.signature(method).parameters.items() if k != "self"}
        assert shown["model"].default == "shapes" and shown["model"].kind is inspect.Parameter.KEYWORD_ONLY
        assert {k: v for k, v in shown.items() if k != "model"} == own
        assert inspect.getdoc(method) in function.__doc__
    assert inspect.signature(sora_nb.generate).parameters["guidance"].default is None
    assert "guidance: classifier-free guidance scale" in sora_nb.generate.__doc__


def test_shapes_loads_anew_after_new_weights_are_shipped(tmp_path, monkeypatch):
    """`load("shapes")` was cached by name alone: weights shipped since (`sora-nb train --ship` in another process)
    were never picked up in a running kernel, and `reproduce` of their clips was refused."""
    import shutil

    from sora_nb import api
    from sora_nb.backends import embedded

    folder = tmp_path / "shapes"
    shutil.copytree(embedded.WEIGHTS_DIR, folder)
    monkeypatch.setattr(embedded, "WEIGHTS_DIR", folder)
    monkeypatch.setattr(api, "_loaded", {})
    first = sora_nb.load("shapes")
    assert sora_nb.load("shapes") is first
    info = {k: v for k, v in embedded.verify_folder(folder).items() if k not in ("files", "format")}
    info["default_guidance"] = first.limits.default_guidance + 1.0
    embedded.write_manifest(folder, info)
    second = sora_nb.load("shapes")
    assert second is not first and second.limits.default_guidance == first.limits.default_guidance + 1.0
    assert sora_nb.generate("a red circle", steps=2, trace=False).params["guidance"] == second.limits.default_guidance
    assert [k for k in api._loaded if k[:2] == ("name", "shapes")] == [
        ("name", "shapes", embedded.manifest_digest(folder))]  # the one loaded before is not kept


def test_a_file_or_an_empty_name_is_not_looked_up_as_a_repo_id(tmp_path):
    """`load("sub/clip.mp4")` (a file) was sent to the Hugging Face Hub as a repo id."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "clip.mp4").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"model '.*sub/clip.mp4' is a file, not a weights folder or a diffusers "
                                         r"pipeline folder"):
        sora_nb.load(str(tmp_path / "sub" / "clip.mp4"))


def test_reproduce_names_its_clip_argument(tmp_path):
    (tmp_path / "notvideo.mp4").write_text("hi")
    with pytest.raises(ValueError, match=r"^clip '.*notvideo.mp4' is not a readable video"):
        sora_nb.reproduce(str(tmp_path / "notvideo.mp4"))
    with pytest.raises(ValueError, match=r"^clip must be a file name, got an empty string"):
        sora_nb.reproduce("")
