"""The live controls panel (sora_nb.controls), driven from code: no browser.

Most tests use a small fake backend (a real Backend behind a real Generator, run by the real sampler
loop) whose speed, failures and decode can be controlled; a few use the embedded model at 2 steps.
"""

from __future__ import annotations

import dataclasses
import gc
import html
import math
import re
import threading
import weakref
import time
from typing import Any, Iterator

import numpy as np
import pytest
import torch
import traitlets
from diffusers import FlowMatchEulerDiscreteScheduler

import sora_nb
from sora_nb.api import Generator
from sora_nb.backend import Limits, StepEvent
from sora_nb.controls import Controls, slug
from sora_nb.request import Request
from sora_nb.sampler import flow_matching_steps

C, H, W_ = 4, 8, 8     # latent channels, y, x (default size 32x32, 4 pixels per latent cell)


class FakeBackend:
    """A Backend whose x0 prediction changes at every step and depends on prompt, seed and guidance.

    ``step_delay``/``decode_delay`` slow it down; ``fail`` (a predicate on the request) makes
    ``denoise`` raise. It counts what it did: ``requests``, ``steps_run``, ``decodes``.
    """

    limits = Limits(name="fake", fps=8.0, max_duration=4.0, sizes=((32, 32), (48, 32)), default_size=(32, 32),
                    max_steps=1000, temporal_factor=2)

    def __init__(self, step_delay: float = 0.0, decode_delay: float = 0.0, fail: Any = None):
        self.step_delay, self.decode_delay, self.fail = step_delay, decode_delay, fail
        self.requests: list[Request] = []
        self.steps_run = 0
        self.decodes = 0
        self.decoding = threading.Event()

    def describe(self) -> dict[str, Any]:
        return {"name": "fake"}

    def num_frames(self, request: Request) -> int:
        return max(1, round(request.duration * self.limits.fps))

    def latent_shape(self, request: Request) -> tuple[int, int, int, int]:
        return (C, math.ceil(self.num_frames(request) / 2), request.height // 4, request.width // 4)

    def clean(self, request: Request, f: int, h: int, w: int, sigma: float) -> torch.Tensor:
        g = torch.Generator().manual_seed(sum(map(ord, request.prompt)) % 1000)
        base = torch.randn((f, C, h, w), generator=g) * 0.5 + 0.1 * request.guidance
        return base + sigma * torch.linspace(-1, 1, w)  # (F, C, h, w): changes with the noise level

    def denoise(self, request: Request, generator: torch.Generator) -> Iterator[StepEvent]:
        self.requests.append(request)
        if self.fail is not None and self.fail(request):
            raise RuntimeError("denoiser exploded")
        c, f, h, w = self.latent_shape(request)
        noise = torch.randn((f, c, h, w), generator=generator)

        def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            sigma = max(float(t) / 1000.0, 1e-3)
            return (x - self.clean(request, f, h, w, sigma)) / sigma

        scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
        for ev in flow_matching_steps(velocity, noise, scheduler, request.steps):
            if self.step_delay:
                time.sleep(self.step_delay)
            self.steps_run += 1
            yield ev

    def decode(self, latents: torch.Tensor, num_frames: int) -> np.ndarray:
        self.decoding.set()
        if self.decode_delay:
            time.sleep(self.decode_delay)
        self.decodes += 1
        rgb = self.preview(latents).repeat(4, axis=1).repeat(4, axis=2).repeat(2, axis=0)
        return np.ascontiguousarray(rgb[:num_frames])

    def preview(self, x0: torch.Tensor) -> np.ndarray:
        z = x0.detach().float().cpu()[:, :3].permute(0, 2, 3, 1).numpy()  # (F, h, w, 3)
        return np.clip(np.rint((z + 1.0) * 127.5), 0, 255).astype(np.uint8)


PANELS: list[Controls] = []


def panel(generator: Any, **kwargs: Any) -> Controls:
    """A Controls closed at the end of the test (fast defaults: 5 steps, short debounce)."""
    kwargs.setdefault("debounce", 0.05)
    kwargs.setdefault("steps", 5)
    kwargs.setdefault("prompt", "a red circle moving right")
    ui = Controls(generator, **kwargs)
    PANELS.append(ui)
    return ui


@pytest.fixture(autouse=True)
def _close_panels():
    yield
    while PANELS:
        PANELS.pop().close()


def fake(**kwargs: Any) -> tuple[Generator, FakeBackend]:
    backend = FakeBackend(**kwargs)
    return Generator(backend), backend


def wait_for(predicate: Any, timeout: float = 20.0) -> None:
    """Poll ``predicate`` (no busy spin: 5 ms sleeps) until true; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def controls_match(ui: Controls, params: dict) -> None:
    """The video's params equal the controls, value for value."""
    v = ui.values
    for key in ("prompt", "negative_prompt", "seed", "duration", "guidance", "eta", "steps", "width", "height"):
        assert params[key] == v[key], key


# -- with the embedded model ---------------------------------------------------------------------------
def test_embedded_params_equal_controls_and_follow_changes(gen):
    ui = panel(gen, prompt="a blue square moving up", seed=7, steps=2, guidance=3.0, duration=1.0)
    assert sora_nb.controls is not None and isinstance(ui.generator, Generator)
    first = ui.wait(120)
    assert first is not None and first.params["model"] == gen.name
    controls_match(ui, first.params)
    assert first.frames.shape == (8, 64, 64, 3)
    assert ui.preview.shape == [2, 16, 16]                        # all latent frames of the clip
    assert ui.preview.image().shape == (2, 16, 16, 3)

    ui.size.value = (96, 64)                                      # a value change starts a new clip
    wide = ui.wait(120)
    controls_match(ui, wide.params)
    assert wide.frames.shape == (8, 64, 96, 3) and ui.preview.shape == [2, 16, 24]

    ui.seed.value = 8
    other = ui.wait(120)
    controls_match(ui, other.params)
    assert other.params["seed"] == 8 and not np.array_equal(other.frames, wide.frames)
    assert [v.params["seed"] for v in ui.history] == [7, 7, 8]
    assert len(ui.player.value) > 1000 and ui.player.value == ui._entries[-1].mp4
    t = ui.timings[-1]
    assert 0 < t["first_preview"] < t["finished"] < 30 and t["steps"] == 2 and 1 <= t["draws"] <= 4


def test_controls_entry_point_uses_embedded_by_default(gen):
    ui = sora_nb.controls(prompt="a green star", steps=2, autostart=False)
    PANELS.append(ui)
    assert ui.generator is gen                                    # load() is cached: the same generator
    lim = gen.limits
    assert ui.duration.max == lim.max_duration and ui.guidance.max == lim.max_guidance
    assert ui.steps.max == min(lim.max_steps, 50) and ui.steps.min == 1
    assert [o[1] for o in ui.size.options] == [tuple(s) for s in lim.sizes]
    assert ui.video is None and not ui.busy
    assert ui.guidance.value == lim.default_guidance              # the model's own default, not a fixed 5
    bundle = ui._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert data["application/vnd.jupyter.widget-view+json"]["model_id"] == ui.root.model_id
    assert data["text/plain"].startswith("Controls(model='shapes")


def test_guidance_slider_starts_at_the_models_default():
    import dataclasses

    backend = FakeBackend()
    backend.limits = dataclasses.replace(FakeBackend.limits, default_guidance=2.5)
    ui = panel(sora_nb.Generator(backend), autostart=False)
    assert ui.guidance.value == 2.5
    assert panel(sora_nb.Generator(backend), autostart=False, guidance=6.0).guidance.value == 6.0


def test_eta_slider_starts_at_the_models_default_and_reaches_the_request(gen):
    ui = panel(gen, steps=2, autostart=False)
    assert ui.eta.value == gen.limits.default_eta == 1.0 and ui.eta.max == 1.0 and not ui.eta.disabled
    ui.set(eta=0.0)
    video = ui.wait(60)
    assert video.params["eta"] == 0.0 and ui.values["eta"] == 0.0
    np.testing.assert_array_equal(video.frames, gen.generate(**{**ui.values, "trace": False}).frames)
    fixed = panel(fake()[0], autostart=False)     # a model without a stochastic sampler (max_eta 0)
    assert fixed.eta.disabled and fixed.eta.value == 0.0
    with pytest.raises(ValueError, match=r"eta must be 0 for model 'fake'"):
        fixed.set(eta=0.5)
    assert fixed.eta.value == 0.0 and not fixed.busy  # refused before anything changed


# -- with the fake backend -----------------------------------------------------------------------------
def test_progressive_preview_of_every_frame_then_video():
    g, backend = fake(step_delay=0.02)
    ui = panel(g, steps=20, duration=2.0, autostart=False, preview_interval=0.05)
    pushes: list[tuple[int, np.ndarray]] = []
    ui.preview.observe(lambda ch: pushes.append((ch["new"], ui.preview.image().copy())), names="step")
    progress: list[int] = []
    ui.progress.observe(lambda ch: progress.append(ch["new"]), names="value")
    ui.run()
    video = ui.wait(30)
    steps = [s for s, _ in pushes]
    assert steps[0] == 1 and steps[-1] == 20 and steps == sorted(steps)
    assert 3 <= len(steps) < 20                        # throttled: not one push per step
    assert all(img.shape == (8, 8, 8, 3) for _, img in pushes)   # 8 latent frames: the whole clip
    assert not np.array_equal(pushes[0][1], pushes[-2][1])       # x0 sharpens over the steps
    np.testing.assert_array_equal(pushes[-1][1], video.trace.preview.isel(step=-1).values)
    assert max(progress) == 20 and ui.progress.bar_style == "success"
    assert ui.progress_label.value.startswith("done in")
    assert video.frames.shape == (16, 32, 32, 3)
    t = ui.timings[-1]
    assert t["first_preview"] < 0.3 and t["first_preview"] < t["finished"]


class RedrawingBackend(FakeBackend):
    """A FakeBackend with a layout check: every draw of a run breaks but its ``draws``-th (its first redraw here)."""

    limits = dataclasses.replace(FakeBackend.limits, name="fake-redraw", max_retries=2, default_retries=1, redraw_share=(0.5,))
    draws = 2

    def judge_draw(self, latents: torch.Tensor, prompt: str) -> tuple[int, None, bool]:
        breaks = 0 if len(self.requests) % self.draws == 0 else 1  # requests has one per draw
        return breaks, None, breaks == 0


def _run_redrawing(backend: RedrawingBackend) -> tuple[Any, Any, list[str]]:
    """One 6-step run of ``backend`` in the controls: (ui, video, every progress label shown)."""
    ui = panel(Generator(backend), steps=6, autostart=False, preview_interval=0.0)
    labels: list[str] = []
    ui.progress_label.observe(lambda ch: labels.append(ch["new"]), names="value")
    ui.run()
    return ui, ui.wait(30), labels


def test_a_layout_redraw_shows_in_the_progress_and_the_kept_draw_is_shown():
    backend = RedrawingBackend(step_delay=0.01)
    ui, video, labels = _run_redrawing(backend)
    assert len(backend.requests) == 2 and backend.requests[1].seed == backend.requests[0].seed + 999_999_937
    assert video.params["retry"] == {"seeds": [r.seed for r in backend.requests], "steps": [6, 3], "flaws": [1, 0],
                                     "picked": 1}
    assert [r.steps for r in backend.requests] == [6, 3] and video.params["steps"] == 6  # the redraw takes half
    assert any(s.startswith("step 6/6") for s in labels)  # the first draw's steps, unlabelled
    assert any(s.startswith("redraw 1 (the model's check failed) · step 3/3") for s in labels)
    assert not any(s.startswith("redraw 1 (the model's check failed) · step 4/") for s in labels)
    assert ui.progress_label.value.startswith("done in") and ui.progress_label.value.endswith(
        " · 2 draws (the model's check redrew it; kept draw 2)")
    assert ui.timings[-1]["draws"] == 2 and ui.timings[-1]["steps"] == 6
    np.testing.assert_array_equal(ui.preview.image(), video.trace.preview.isel(step=-1).values)
    assert (ui.preview.step, ui.preview.label) == (3, "x0 at step 3/3")  # the kept redraw's own last step


class TwiceRedrawingBackend(RedrawingBackend):
    """The first two draws of a run break: two redraws, the second in its own (last) share."""

    limits = dataclasses.replace(RedrawingBackend.limits, name="fake-redraw-2", default_retries=2,
                                 redraw_share=(0.5, 0.34))
    draws = 3


def test_a_second_redraw_shows_its_own_steps():
    backend = TwiceRedrawingBackend(step_delay=0.01)
    ui, video, labels = _run_redrawing(backend)
    assert [r.steps for r in backend.requests] == [6, 3, 2] and video.params["steps"] == 6  # 0.5, then 0.34 of 6
    assert [r.seed for r in backend.requests] == [backend.requests[0].seed + 999_999_937 * a for a in range(3)]
    assert video.params["retry"]["flaws"] == [1, 1, 0] and video.params["retry"]["picked"] == 2
    assert any(s.startswith("redraw 1 (the model's check failed) · step 3/3") for s in labels)
    assert any(s.startswith("redraw 2 (the model's check failed) · step 2/2") for s in labels)
    assert not any(s.startswith("redraw 2 (the model's check failed) · step 3/") for s in labels)
    assert ui.progress_label.value.endswith(" · 3 draws (the model's check redrew it; kept draw 3)")
    assert (ui.preview.step, ui.preview.label) == (2, "x0 at step 2/2")  # the kept second redraw's own last step


def test_change_during_run_cancels_it_and_skips_decode():
    g, backend = fake(step_delay=0.03)
    ui = panel(g, steps=20, guidance=2.0)
    wait_for(lambda: backend.steps_run >= 3)
    ui.guidance.value = 7.0
    video = ui.wait(30)
    assert video.params["guidance"] == 7.0 and ui.guidance.value == 7.0
    assert [v.params["guidance"] for v in ui.history] == [7.0]   # the first run left no trace
    assert backend.decodes == 1                                  # the cancelled run was never decoded
    assert ui.stats["cancelled"] == 1
    assert [r.guidance for r in backend.requests] == [2.0, 7.0]
    assert backend.steps_run < 40                                # it stopped early
    controls_match(ui, video.params)


def test_stale_result_never_replaces_the_newer_one():
    g, backend = fake(decode_delay=0.4)
    ui = panel(g, guidance=2.0)
    assert backend.decoding.wait(20)                 # run 1 is decoding: too late to cancel it
    ui.guidance.value = 7.0
    video = ui.wait(30)
    assert backend.decodes == 2 and ui.stats["stale"] == 1
    assert video.params["guidance"] == 7.0 and [v.params["guidance"] for v in ui.history] == [7.0]
    assert ui.caption.value.count("guidance 7") == 1


def test_typing_is_debounced_into_one_generation():
    g, backend = fake()
    ui = panel(g, debounce=0.25)
    ui.wait(30)
    n = len(backend.requests)
    text = "a blue square moving up"
    for i in range(5, len(text) + 1, 4):
        ui.prompt.value = text[:i]
        time.sleep(0.03)
    ui.prompt.value = text
    assert ui.busy and len(backend.requests) == n      # still waiting for the pause
    video = ui.wait(30)
    assert len(backend.requests) == n + 1              # one generation for all the keystrokes
    assert video.params["prompt"] == text
    assert 0.25 <= ui.timings[-1]["queued"] < 1.0      # it waited the debounce after the last keystroke


def test_kernel_stays_free_while_generating():
    g, backend = fake(step_delay=0.06)
    ui = panel(g, steps=20, autostart=False)            # a run takes >= 1.2 s
    t0 = time.perf_counter()
    ui.guidance.value = 3.0
    assert time.perf_counter() - t0 < 0.5             # the setter returned long before the run ends
    assert ui.busy and backend.decodes == 0
    seen = []
    for _ in range(10):                                # the "kernel" does other work meanwhile
        time.sleep(0.05)
        seen.append(ui.progress.value)
    assert seen[-1] > seen[0] and seen[-1] > 0         # the run advanced while this thread slept
    assert ui.wait(30).params["guidance"] == 3.0


def test_dice_shows_the_seed_before_the_run_and_uses_it():
    g, backend = fake(step_delay=0.02)
    ui = panel(g, seed=5)
    ui.wait(30)
    ui.dice.click()
    shown = ui.seed.value
    assert shown != 5 and 0 <= shown < 2**31          # the new seed is in the box right away
    video = ui.wait(30)
    assert video.params["seed"] == shown == backend.requests[-1].seed


def test_history_restores_exactly_without_generating(tmp_path):
    g, backend = fake()
    ui = panel(g, seed=1, guidance=2.0)
    ui.wait(30)
    ui.set(seed=2, guidance=4.0, prompt="a blue square", negative_prompt="red", steps=3)
    ui.wait(30)
    ui.set(seed=3, guidance=6.0, width=48, height=32, duration=1.0)
    ui.wait(30)
    assert [(v.params["seed"], v.params["guidance"]) for v in ui.history] == [(1, 2.0), (2, 4.0), (3, 6.0)]
    n = len(backend.requests)
    mp4s = [e.mp4 for e in ui._entries]

    restored = ui.restore(1)
    assert restored is ui.history[1] and ui.video is restored
    controls_match(ui, restored.params)
    assert ui.values["negative_prompt"] == "red" and ui.size.value == (32, 32) and ui.steps.value == 3
    assert ui.player.value == mp4s[1] and ui.history_strip.selected == 1
    np.testing.assert_array_equal(ui.preview.image(), restored.trace.preview.isel(step=-1).values)
    time.sleep(0.2)                                     # > debounce: nothing was scheduled
    ui.wait(5)
    assert len(backend.requests) == n and len(ui.history) == 3

    path = tmp_path / "shown.mp4"                       # the player shows that clip, params and all
    path.write_bytes(ui.player.value)
    assert sora_nb.read_params(path)["seed"] == 2

    assert [item["id"] for item in ui.history_strip.items] == [0, 1, 2]
    click = {"content": {"data": {"method": "custom", "content": {"event": "select", "index": 2, "id": 2}}},
             "buffers": []}
    ui.history_strip._handle_msg(click)                  # what a click on the third thumbnail sends
    controls_match(ui, ui.history[2].params)
    assert ui.size.value == (48, 32) and ui.player.value == mp4s[2] and "Restored clip 3 of 3" in ui.message.value

    ui.guidance.value = 9.0                              # and live again from there
    video = ui.wait(30)
    assert (video.params["seed"], video.params["width"], video.params["guidance"]) == (3, 48, 9.0)
    assert len(ui.history) == 4


def test_a_click_that_crosses_a_finishing_run_restores_the_clip_clicked():
    """The click sent only its thumbnail's position: with a full history each new clip shifts every position, so
    a click sent while a run finished restored the clip beside the one clicked."""
    g, _ = fake()
    ui = panel(g, seed=1, history_size=2)
    ui.wait(30)
    ui.seed.value = 2
    ui.wait(30)
    clicked = dict(ui.history_strip.items[0])           # the user clicks "s1" ...
    assert clicked["label"].startswith("s1 ")
    ui.seed.value = 3                                   # ... as seed 3 finishes: seed 1 leaves the full history
    ui.wait(30)

    def click(item):
        ui.history_strip._handle_msg({"content": {"data": {"method": "custom", "content": {
            "event": "select", "index": ui.history_strip.items.index(item) if item in ui.history_strip.items else 0,
            "id": item["id"]}}}, "buffers": []})

    click(clicked)                                      # gone: nothing is restored (it was seed 2 before)
    assert ui.seed.value == 3 and [v.params["seed"] for v in ui.history] == [2, 3]
    click(ui.history_strip.items[0])
    assert ui.seed.value == 2 and ui.video is ui.history[0]


def test_restore_while_running_wins_over_the_run():
    g, backend = fake(step_delay=0.03)
    ui = panel(g, steps=20, seed=1)
    ui.wait(30)
    ui.seed.value = 2
    wait_for(lambda: backend.steps_run >= 23)
    ui.restore(0)
    ui.wait(30)
    assert ui.video is ui.history[0] and ui.seed.value == 1 and len(ui.history) == 1


def test_bad_value_shows_the_api_message_and_the_panel_keeps_working():
    g, backend = fake()
    ui = panel(g, seed=4)
    good = ui.wait(30)
    with pytest.raises(ValueError) as api:
        g.generate("a red circle moving right", seed=-1)
    ui.seed.value = -1                                  # typed into the seed box
    ui.wait(30)
    assert ui.error == str(api.value) and "seed" in ui.error
    assert html.escape(str(api.value)) in ui.message.value
    assert ui.video is good and len(ui.history) == 1

    ui.prompt.value = "   "
    ui.wait(30)
    with pytest.raises(ValueError) as api_prompt:
        g.request("   ")
    assert ui.error == str(api_prompt.value)           # the newest problem is the one shown

    with pytest.raises(ValueError, match="guidance"):  # from code: raises like generate, changes nothing
        ui.set(prompt="a green star", seed=6, guidance=500.0)
    assert ui.guidance.value == 5.0 and ui.prompt.value == "   "

    ui.set(seed=6, prompt="a green star")
    video = ui.wait(30)
    assert ui.error is None and ui.message.value == ""
    assert video.params["seed"] == 6 and len(ui.history) == 2


def test_a_bad_value_during_a_run_leaves_no_progress_or_preview_of_it():
    """The run in flight is dropped for a value that is not valid: its step count, ETA and half-denoised
    preview go, and the preview is the shown clip's again (none before the first clip)."""
    g, backend = fake(step_delay=0.03)
    ui = panel(g, steps=20, seed=1)
    wait_for(lambda: backend.steps_run >= 4)
    ui.seed.value = -1                                  # the first run, not finished yet
    ui.wait(30)
    assert "seed" in ui.error and ui.video is None and ui.stats["cancelled"] == 1
    assert ui.progress.value == 0 and ui.progress_label.value == "not run: a value is not valid"
    assert ui.preview.shape == [0, 0, 0] and ui.preview.step == 0 and ui.preview.frames == b""

    ui.seed.value = 2
    first = ui.wait(30)
    finished = ui.preview.image().copy()
    assert ui.preview.label == "x0 at step 20/20"
    ui.seed.value = 3
    wait_for(lambda: backend.steps_run >= 20 + 20 + 4)  # the second run is on its way
    assert ui.preview.label != "x0 at step 20/20"
    ui.prompt.value = ""
    ui.wait(30)
    assert ui.video is first and ui.progress.value == 0 and "ETA" not in ui.progress_label.value
    assert ui.preview.label == "x0 at step 20/20" and np.array_equal(ui.preview.image(), finished)


def test_failing_backend_shows_the_error_and_the_panel_keeps_working():
    g, backend = fake(fail=lambda r: r.guidance == 13.0)
    ui = panel(g, guidance=2.0)
    ui.wait(30)
    ui.guidance.value = 13.0
    ui.wait(30)
    assert ui.error == "generation failed: RuntimeError: denoiser exploded"
    assert "denoiser exploded" in ui.message.value and ui.progress.bar_style == "danger"
    assert ui.video.params["guidance"] == 2.0 and ui.stats["failed"] == 1
    ui.guidance.value = 4.0
    video = ui.wait(30)
    assert video.params["guidance"] == 4.0 and ui.error is None


def test_a_failed_decode_keeps_its_latents_in_the_panel(monkeypatch):
    """The panel kept only the DecodeError's text, which pointed at generator.last_latents: that is per thread and
    was set in the panel's worker thread, so the steps (minutes on a pipeline) were lost."""
    g, backend = fake()
    ui = panel(g, guidance=2.0)
    first = ui.wait(30)
    decode = backend.decode
    monkeypatch.setattr(backend, "decode", lambda *a: (_ for _ in ()).throw(MemoryError("VAE out of memory")))
    ui.guidance.value = 3.0
    ui.wait(30)
    assert ui.error.startswith("decoding failed (MemoryError: VAE out of memory); every step ran and the latents are "
                               "kept in the panel's decode_error")
    err = ui.decode_error
    assert isinstance(err, sora_nb.sampler.DecodeError) and err.num_frames == 16 and ui.video is first
    monkeypatch.setattr(backend, "decode", decode)
    again = g.decode(err.latents, err.num_frames)
    direct = g.generate("a red circle moving right", guidance=3.0, steps=5, seed=ui.seed.value, trace=False)
    assert np.array_equal(again, direct.frames)


def test_a_clip_the_player_cannot_show_still_joins_the_history(monkeypatch):
    """The mp4 encode for the player sat in the run's try: an ffmpeg failure there threw the decoded clip away,
    kept the old one on screen under the new controls, and blamed the generation."""
    g, backend = fake()
    ui = panel(g, guidance=2.0)
    ui.wait(30)

    def broken(video):
        raise RuntimeError("cannot write 'clip.mp4': ffmpeg said Unknown encoder 'libx264'")

    monkeypatch.setattr(ui, "_encode", broken)
    ui.guidance.value = 7.0
    video = ui.wait(30)
    assert video.params["guidance"] == 7.0 and ui.video is video and len(ui.history) == 2
    assert ui.history[-1] is video and ui.player.layout.display == "none" and ui.stats["failed"] == 0
    assert ui.error == ("the clip is made (history, Inspect, video) but the player cannot show it: RuntimeError: "
                        "cannot write 'clip.mp4': ffmpeg said Unknown encoder 'libx264'")
    monkeypatch.undo()
    ui.restore(0)
    assert ui.player.layout.display is None and ui.player.value[4:8] == b"ftyp"


def test_the_history_keeps_within_its_memory_budget():
    """Each history entry held its full trace (up to 1 GB for a pipeline) and 32 were kept: a panel could fill
    the kernel's memory after some thirty changes without a word. Past ``history_mb`` the oldest traces go."""
    g, _ = fake()
    ui = panel(g, seed=0)
    ui.wait(30)
    one = ui._entry_bytes(ui._entries[0])
    trace = int(ui.video.trace.nbytes)
    assert 0 < 1.5 * trace < one  # clips differ by some bytes (mp4): half a trace of margin each way
    ui.close()
    ui = panel(g, seed=0, history_mb=(4 * one - 1.5 * trace) / 1e6)  # 4 clips less 2 traces fit, less 1 not
    ui.wait(30)
    for seed in (1, 2, 3):
        ui.seed.value = seed
        ui.wait(30)
    kept = [v.trace is not None for v in ui.history]
    assert [v.params["seed"] for v in ui.history] == [0, 1, 2, 3] and kept == [False, False, True, True]
    assert ui.stats["traces_dropped"] == 2 and ui.history[-1] is ui.video
    ui.restore(0)
    assert ui.inspect() is None and "cannot inspect this clip" in ui.error
    ui.close()
    ui = panel(g, seed=0, history_mb=1e-6)             # not even one clip fits: the newest still stays, whole
    ui.wait(30)
    ui.seed.value = 1
    ui.wait(30)
    assert [v.params["seed"] for v in ui.history] == [1] and ui.video.trace is not None
    with pytest.raises(ValueError, match=r"history_mb must be > 0 and <= 1e\+07 MB, got 0"):
        panel(g, history_mb=0)


def test_stop_cancels_without_decoding():
    g, backend = fake(step_delay=0.03)
    ui = panel(g, steps=20, seed=1)
    first = ui.wait(30)
    ui.seed.value = 2
    wait_for(lambda: backend.steps_run >= 24)
    ui.stop_button.click()
    ui.wait(30)
    text = ui.message.value
    assert "Stopped at step" in text and "nothing was decoded" in text
    k = int(text.split("Stopped at step ")[1].split()[0])
    assert 4 <= k < 20
    assert backend.decodes == 1 and ui.video is first and ui.stats["cancelled"] == 1


def test_save_writes_mp4_with_params(tmp_path):
    g, _ = fake()
    ui = panel(g, prompt="A Red Circle, moving right!", seed=12, save_dir=tmp_path)
    assert ui.save() is None and "nothing to save" in ui.message.value   # not finished yet
    video = ui.wait(30)
    path = ui.save()
    assert path == tmp_path / "a-red-circle-moving-right_seed12.mp4" and path.is_file()
    params = sora_nb.read_params(path)
    assert {k: params[k] for k in ("prompt", "seed", "guidance", "steps")} == \
        {k: video.params[k] for k in ("prompt", "seed", "guidance", "steps")}
    assert str(path) in ui.message.value
    assert slug("") == "clip" and slug("Ünïcode / stuff") == "n-code-stuff"
    # the same prompt and seed at another guidance: the default name takes a number, the first save stays
    ui.guidance.value = 7.0
    ui.wait(30)
    second = ui.save()
    assert second == tmp_path / "a-red-circle-moving-right_seed12_2.mp4"
    assert sora_nb.read_params(path)["guidance"] == video.params["guidance"] != 7.0
    assert sora_nb.read_params(second)["guidance"] == 7.0
    assert ui.save(path) == path and sora_nb.read_params(path)["guidance"] == 7.0  # a path given is written
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, got int"):
        ui.save(5)
    with pytest.raises(TypeError, match="timeout must be a number >= 0"):
        ui.wait("5")


def test_inspect_opens_the_inspector_on_the_current_video():
    g, _ = fake()
    ui = panel(g, autostart=False)
    assert ui.inspect() is None and "nothing to inspect" in ui.message.value
    ui.run()
    video = ui.wait(30)
    widget = ui.inspect()
    from sora_nb.inspector import Inspector

    assert isinstance(widget, Inspector) and ui.inspector_box.children == (widget,)
    assert widget.traces["a"].attrs["seed"] == video.params["seed"]
    assert widget.num_steps == video.params["steps"]


def test_arguments_are_checked():
    g, _ = fake()
    with pytest.raises(ValueError) as api:
        g.request("x", duration=9.0)
    with pytest.raises(ValueError) as ours:
        Controls(g, duration=9.0)
    assert str(ours.value) == str(api.value)
    with pytest.raises(TypeError, match="unknown control"):
        Controls(g, sed=3)
    with pytest.raises(ValueError, match="debounce"):
        Controls(g, debounce=-1)
    for kwargs, error, match in ((dict(debounce="0.3"), TypeError, r"debounce must be a number >= 0 and <= 60 seconds"),
                                 (dict(preview_interval=float("nan")), ValueError, r"preview_interval must be a finite number"),
                                 (dict(history_size=0), ValueError, r"history_size must be an integer in \[1, 1000\], got 0"),
                                 (dict(history_size=2.0), TypeError, r"history_size must be an integer in \[1, 1000\]"),
                                 (dict(save_dir=5), TypeError, r"save_dir must be a folder path \(str or os.PathLike\), got int"),
                                 (dict(trace="no"), TypeError, r"trace must be True or False, got str 'no'"),
                                 (dict(autostart=1), TypeError, r"autostart must be True or False, got int 1")):
        with pytest.raises(error, match=match):
            Controls(g, **kwargs)
    ok = panel(g, autostart=False, history_size=np.int64(3), debounce=np.float32(0.1))
    assert ok.history_size == 3 and type(ok.history_size) is int and ok.debounce == pytest.approx(0.1)
    ui = panel(g, autostart=False, steps=200, duration=0.125)   # valid API values outside the default range
    assert ui.steps.value == 200 and ui.duration.value == 0.125
    with pytest.raises(IndexError, match="history has 0 clips"):
        ui.restore(0)


def test_sliders_set_from_code_are_checked_not_clamped():
    """ipywidgets' sliders clamp a value set from code to their range: ``ui.steps.value = 200`` made a 50-step
    clip and ``ui.guidance.value = 500`` a guidance-50 one, without a word. A valid value now widens the range;
    one ``generate`` refuses raises its message and changes nothing."""
    g, _ = fake()
    ui = panel(g, seed=3)
    ui.wait(30)
    ui.steps.value = 200
    assert ui.steps.value == 200 and ui.steps.max == 200
    assert ui.wait(30).params["steps"] == 200
    ui.duration.value = 0.125
    assert ui.duration.value == 0.125 and ui.duration.min == 0.125
    assert ui.wait(30).params["duration"] == 0.125
    for name, bad, match in (("guidance", 500.0, r"guidance must be >= 0 and <= 50, got 500$"),
                             ("guidance", float("nan"), r"guidance must be a finite number"),
                             ("steps", 5000, r"steps must be an integer in \[1, 1000\], got 5000"),
                             ("duration", 0.0, r"duration must be > 0 and <= 4 seconds, got 0"),
                             ("eta", 0.5, r"eta must be >= 0 and <= 0, got 0.5")):
        before = getattr(ui, name).value
        with pytest.raises(traitlets.TraitError, match=match):
            setattr(getattr(ui, name), "value", bad)
        assert getattr(ui, name).value == before
    assert not ui.busy and len(ui.history) == 3 and ui.error is None


def test_none_means_the_models_default_as_in_generate():
    """``duration=None`` (and guidance, eta, width, height) is the model's default, as ``generate`` has it; it
    failed with a bare TypeError, after ``set`` had already changed the seed box."""
    g, _ = fake()
    ui = panel(g, autostart=False, duration=None, guidance=None, width=None)
    assert ui.duration.value == 2.0 and ui.guidance.value == g.limits.default_guidance
    assert ui.size.value == g.limits.default_size
    ui.set(seed=5, duration=0.5)
    ui.wait(30)
    ui.set(seed=6, duration=None)
    video = ui.wait(30)
    assert ui.seed.value == 6 and video.params["duration"] == 2.0 and video.params["seed"] == 6


def test_set_is_all_or_nothing(monkeypatch):
    """A value that fails while it is shown puts back the ones already shown: no half-set panel."""
    g, _ = fake()
    ui = panel(g, autostart=False, seed=1, guidance=2.0)
    assign = Controls._assign

    def failing(widget, value):
        if widget is ui.guidance:
            raise RuntimeError("the front end went away")
        assign(widget, value)

    monkeypatch.setattr(Controls, "_assign", staticmethod(failing))
    with pytest.raises(RuntimeError, match="went away"):
        ui.set(seed=7, prompt="a blue square", guidance=3.0)
    monkeypatch.setattr(Controls, "_assign", staticmethod(assign))
    assert ui.seed.value == 1 and ui.prompt.value == "a red circle moving right" and ui.guidance.value == 2.0
    assert not ui.busy and not ui.history


class AnySizeBackend(FakeBackend):
    """As a diffusers pipeline: any width and height that is a multiple of 16, a few sizes suggested."""

    limits = dataclasses.replace(FakeBackend.limits, sizes=((32, 32),), default_size=(32, 32), size_multiple=16,
                                 max_side=256)


def test_a_model_that_takes_any_multiple_gets_that_size_in_the_menu():
    """The size menu listed only the suggested sizes, so Controls(width=48, height=32) on a diffusers model failed
    with a garbled message, and ui.set(width=...) did after applying the values before it."""
    g = Generator(AnySizeBackend())
    ui = panel(g, width=48, height=32, seed=2)
    assert ui.size.value == (48, 32) and (48, 32) in ui.size._options_values
    assert ui.wait(30).frames.shape[1:3] == (32, 48)
    ui.set(seed=3, width=64, height=16)
    video = ui.wait(30)
    assert ui.size.value == (64, 16) and (video.params["width"], video.params["height"]) == (64, 16)
    assert video.params["seed"] == 3 and len(ui.history) == 2
    with pytest.raises(ValueError, match=r"width must be a multiple of 16"):
        ui.set(seed=4, width=50)
    assert ui.seed.value == 3 and ui.size.value == (64, 16)
    with pytest.raises(traitlets.TraitError, match=r"size \(80, 16\) is not in the menu .*ui.set\(width"):
        ui.size.value = (80, 16)
    ui.restore(0)  # a restored clip's size is put back in the menu
    assert ui.size.value == (48, 32) and not ui.busy


def change_then(ui, control, value, action, entered, release):
    """Set ``ui.<control>`` to ``value`` in another thread; once it has reached ``entered``, Stop ("stop") or restore
    clip 0 ("restore"), then let the change go on (``release``) and wait for the panel."""
    changer = threading.Thread(target=lambda: setattr(getattr(ui, control), "value", value))
    changer.start()
    assert entered.wait(10)
    if action == "stop":
        ui.stop()
    else:
        ui.restore(0)
    release.set()
    changer.join(10)
    ui.wait(30)


@pytest.mark.parametrize("action", ["stop", "restore"])
def test_a_change_still_being_checked_loses_to_stop_and_restore(action):
    """A change is checked (generator.request) before it is queued. Stop or a restore that came while it was
    checked used to lose to it: the change was queued after them and its clip replaced the restored one."""
    g, backend = fake()
    ui = panel(g, seed=1)
    first = ui.wait(30)
    entered, release = threading.Event(), threading.Event()
    request = g.request

    def slow_request(prompt, **kwargs):
        if kwargs.get("seed") == 2:
            entered.set()
            release.wait(10)
        return request(prompt, **kwargs)

    g.request = slow_request
    change_then(ui, "seed", 2, action, entered, release)
    assert ui.video is first and len(ui.history) == 1 and len(backend.requests) == 1
    assert ui.seed.value == (2 if action == "stop" else 1)


def test_stop_during_the_decode_says_the_clip_was_dropped():
    g, backend = fake(decode_delay=0.5)
    ui = panel(g, seed=1, steps=2)
    first = ui.wait(30)
    backend.decoding.clear()
    ui.seed.value = 2
    assert backend.decoding.wait(10)
    ui.stop()
    ui.wait(30)
    assert ui.video is first and "Stopped while the clip was decoded" in ui.message.value
    assert ui.progress_label.value == "stopped after step 2/2"


def test_seed_none_draws_a_fresh_seed_and_shows_it():
    """As ``generate(seed=None)``: a new seed, shown in the box before the run, and the one the clip used."""
    g, _ = fake()
    seeds = set()
    for _ in range(3):
        ui = panel(g, seed=None)
        ui.wait()
        assert ui.video.params["seed"] == ui.seed.value
        seeds.add(ui.seed.value)
    assert len(seeds) == 3 and 0 not in seeds  # it used to be 0 every time
    ui.set(seed=None)
    wait_for(lambda: ui.video is not None and ui.video.params["seed"] == ui.seed.value and ui.seed.value not in seeds)


def test_a_panel_running_at_exit_is_stopped_before_the_interpreter_ends():
    """A script (or a kernel shut down) that ended with a run in flight sometimes aborted in torch (status 134):
    the exit hook cancels the run without decoding and joins the worker."""
    from sora_nb.controls import _LIVE, _stop_live_panels

    g, backend = fake(step_delay=0.03)
    ui = panel(g, steps=200)
    wait_for(lambda: backend.steps_run >= 3)
    worker = ui._worker
    assert ui in set(_LIVE) and worker.is_alive()
    _stop_live_panels()
    assert not worker.is_alive() and backend.decodes == 0 and backend.steps_run < 200
    ran = backend.steps_run
    ui.seed.value = 7  # a closed panel starts nothing more
    time.sleep(0.3)
    assert backend.steps_run == ran and len(backend.requests) == 1


def test_an_idle_panel_holds_no_thread_and_closing_its_root_stops_it():
    """The worker waited for jobs forever, holding its panel: every re-run of a ``ui = controls()`` cell left a
    thread and the panel's history behind. It now ends when nothing is queued; the next change starts another."""
    g, backend = fake(step_delay=0.01)
    ui = panel(g)
    ui.wait(30)
    wait_for(lambda: ui._worker is None)
    assert not [t for t in threading.enumerate() if t.name == "sora_nb.controls"]
    ui.seed.value = 3
    assert ui.wait(30).params["seed"] == 3 and len(backend.requests) == 2
    wait_for(lambda: ui._worker is None)
    ui.root.close()  # closed by code that holds only the root: nothing more starts
    ui.seed.value = 4
    time.sleep(0.3)
    assert len(backend.requests) == 2 and ui.video.params["seed"] == 3


# -- closing, casts, the size menu, failures, readouts, races ----------------------------------------------
def _widget_tree(root: Any) -> list[Any]:
    """``root`` and every widget under it: children, layouts, styles."""
    import ipywidgets

    found, todo = [], [root]
    while todo:
        w = todo.pop()
        if not isinstance(w, ipywidgets.Widget) or any(w is f for f in found):
            continue
        found.append(w)
        todo.extend([getattr(w, "layout", None), getattr(w, "style", None), *getattr(w, "children", ())])
    return found


def test_close_closes_every_widget_and_frees_the_panel():
    """close() closed only ui.root: ipywidgets keeps every widget not closed, the controls' observers hold the panel,
    so each re-run of ``ui = controls(...)`` left a panel, its history and widgets in the kernel, closed or not."""
    from ipywidgets.widgets.widget import _instances

    g, _ = fake()
    ui = Controls(g, steps=5, seed=1, debounce=0.05)
    try:
        ui.wait(30)
        ui.seed.value = 2
        ui.wait(30)
        inspector = ui.inspect()
        widgets = _widget_tree(ui.root) + _widget_tree(inspector)
        assert inspector in widgets and ui.seed in widgets and ui.seed.layout in widgets
        ids = {w.model_id for w in widgets}
        assert ids <= set(_instances)
    finally:
        ui.close()
    assert [type(w).__name__ for w in widgets if w.comm is not None] == []
    assert not ids & set(_instances)
    ref = weakref.ref(ui)
    del ui, inspector, widgets
    wait_for(lambda: gc.collect() >= 0 and ref() is None, timeout=5)


def test_inspect_closes_the_inspector_it_replaces():
    """Each Inspect replaced the inspector below the panel without closing it: ipywidgets kept every one (and the
    trace it shows) for good."""
    from ipywidgets.widgets.widget import _instances

    g, _ = fake()
    ui = panel(g, seed=1)
    ui.wait(30)
    first = ui.inspect()
    first_id = first.model_id
    ui.seed.value = 2
    ui.wait(30)
    second = ui.inspect()
    assert second is not first and ui.inspector is second and ui.inspector_box.children == (second,)
    assert first.comm is None and first_id not in _instances
    assert second.comm is not None and second.traces["a"].attrs["seed"] == 2


@pytest.mark.parametrize("name, bad", [("steps", 7.9), ("steps", "12"), ("steps", True), ("steps", float("nan")),
                                       ("steps", None), ("guidance", "7"), ("guidance", True), ("guidance", None),
                                       ("duration", "1.5"), ("duration", False), ("eta", True),
                                       ("seed", 2.9), ("seed", "42"), ("seed", True), ("seed", float("nan")),
                                       ("seed", float("inf"))])
def test_a_value_set_from_code_is_checked_as_given_not_cast(name, bad):
    """ipywidgets' CInt/CFloat cast a value before the check saw it: ui.steps.value = 7.9 made a 7-step clip,
    "12" a 12-step one, guidance True a guidance-1 one, and the seed box took 2.9 as seed 2 and "42" as 42, all
    values generate refuses; steps = nan raised a TraitError that named no parameter. Each is refused at once, with
    generate's own message, and changes nothing."""
    g, backend = fake()
    ui = panel(g, seed=1)
    ui.wait(30)
    with pytest.raises((TypeError, ValueError)) as api:
        g.request("a red circle moving right", **{name: bad})
    widget = getattr(ui, name)
    before = widget.value
    with pytest.raises(traitlets.TraitError) as ours:
        widget.value = bad
    if name == "eta":  # the panel checks the model's range (this one takes no eta), as for eta = 0.5 above
        assert str(ours.value) == "eta must be a number >= 0 and <= 0, got bool True"
    else:
        assert str(ours.value) == str(api.value) and str(ours.value).startswith(f"{name} must be")
    assert widget.value == before and not ui.busy and len(backend.requests) == 1 and ui.error is None


def test_values_generate_takes_are_stored_as_the_number_it_uses():
    """An integer guidance or a numpy integer is a value generate takes: the control keeps the number as the
    clip's params have it (a float guidance, a Python int seed and steps). An integer seed out of range is not
    refused at once: the panel shows why it does not run (as for a seed typed in the browser)."""
    g, _ = fake()
    ui = panel(g, seed=1)
    ui.wait(30)
    ui.guidance.value = 7
    assert ui.guidance.value == 7.0 and type(ui.guidance.value) is float
    ui.wait(30)
    ui.set(steps=np.int64(6), seed=np.int64(9))
    assert (ui.steps.value, ui.seed.value) == (6, 9) and type(ui.steps.value) is int and type(ui.seed.value) is int
    video = ui.wait(30)
    assert (video.params["steps"], video.params["seed"], video.params["guidance"]) == (6, 9, 7.0)
    with pytest.raises(traitlets.TraitError, match=r"^seed must be an integer in \[0, \d+\], got NoneType None$"):
        ui.seed.value = None   # (ui.set(seed=None) draws a fresh seed, as generate(seed=None))
    ui.seed.value = sora_nb.request.MAX_SEED + 1
    ui.wait(30)
    assert ui.seed.value == sora_nb.request.MAX_SEED + 1 and ui.error.startswith("seed must be an integer in [0, ")
    assert ui.video is video


def test_the_size_menu_keeps_its_own_entry_and_refuses_pairs_of_non_integers():
    """``ui.size.value = (32.0, 32.0)`` equals the menu's (32, 32), and was kept as given: every later run failed
    with "width must be an integer"."""
    g, backend = fake()
    ui = panel(g, seed=1)
    ui.wait(30)
    for bad in [(32.0, 32.0), (True, 32), (32, "32"), (32,), 32]:
        with pytest.raises(traitlets.TraitError) as err:
            ui.size.value = bad
        assert str(err.value) == (f"size must be a (width, height) pair of integers, one of the menu's (32x32, "
                                  f"48x32); got {type(bad).__name__} {bad!r}")
        assert ui.size.value == (32, 32) and not ui.busy
    ui.size.value = [np.int64(48), np.int64(32)]
    assert ui.size.value is ui.size._options_values[1] and ui.size.value == (48, 32)
    assert [type(v) for v in ui.size.value] == [int, int]
    video = ui.wait(30)
    assert ui.error is None and (video.params["width"], video.params["height"]) == (48, 32)
    ui.seed.value = 2
    assert ui.wait(30).params["seed"] == 2 and ui.error is None and len(backend.requests) == 3


class MidFailBackend(FakeBackend):
    """Fails at step 7 of a guidance-13 run (after 6 steps, their previews shown)."""

    def denoise(self, request: Request, generator: torch.Generator) -> Iterator[StepEvent]:
        for i, ev in enumerate(super().denoise(request, generator)):
            if request.guidance == 13.0 and i == 6:
                raise RuntimeError("CUDA out of memory at step 7")
            yield ev


def test_a_run_that_fails_midway_leaves_the_shown_clips_preview_and_restore_clears_the_red():
    """After a failed run the player and caption showed the previous clip but the preview the failed run's
    half-denoised frames ("x0 at step 6/20"); a later restore left the progress bar red at 100%."""
    g = Generator(MidFailBackend(step_delay=0.01))
    ui = panel(g, steps=20, seed=1, preview_interval=0.0)
    first = ui.wait(30)
    shown = ui.preview.image().copy()
    assert ui.preview.label == "x0 at step 20/20"
    ui.guidance.value = 13.0
    ui.wait(30)
    assert ui.error == "generation failed: RuntimeError: CUDA out of memory at step 7" and ui.video is first
    assert ui.preview.label == "x0 at step 20/20" and ui.preview.step == 20
    assert np.array_equal(ui.preview.image(), shown)
    assert ui.progress.bar_style == "danger" and (ui.progress.value, ui.progress.max) == (6, 20)
    assert ui.progress_label.value == "failed at step 7/20"
    ui.restore(0)
    assert ui.progress.bar_style == "" and ui.progress.value == ui.progress.max == 20
    assert ui.progress_label.value == "restored clip 1 of 1" and ui.error is None


def _d3_format(spec: str, x: float) -> str:
    """What d3-format (the browser's slider readout) writes for ``x``, for the specs ``.<p>f``, ``.<p>g`` and
    ``.<p>`` (no type: like g, trailing zeros trimmed)."""
    m = re.fullmatch(r"\.(\d+)([fg]?)", spec)
    assert m is not None, f"a readout format this test does not know: {spec!r}"
    p, kind = int(m[1]), m[2]
    return f"{x:.{p}f}" if kind == "f" else f"{x:#.{p}g}" if kind == "g" else f"{x:.{p}g}"


class EtaBackend(FakeBackend):
    """A model that takes sampler noise (eta up to 1)."""

    limits = dataclasses.replace(FakeBackend.limits, max_eta=1.0)


def test_float_readouts_show_the_value_set_from_code():
    """The readouts were ".2f" (duration) and ".1f" (guidance, eta): eta 0.05 read 0.1, guidance 7.25 read 7.3 and
    duration 0.125 read 0.13, not the value the clip used. A value on the slider's grid reads as before."""
    g = Generator(EtaBackend())
    ui = panel(g, seed=1, autostart=False)

    def readout(name: str) -> str:
        return _d3_format(getattr(ui, name).readout_format, getattr(ui, name).value)

    for name, value, text in (("eta", 0.05, "0.05"), ("guidance", 7.25, "7.25"), ("duration", 0.125, "0.125"),
                              ("eta", 0.5, "0.5"), ("guidance", 5.0, "5.0"), ("duration", 2.0, "2.00"),
                              ("guidance", 1 / 3, "0.333333"), ("duration", 1e-300, "1e-300"),
                              ("guidance", 12.0625, "12.0625"), ("duration", 0.25, "0.25")):
        getattr(ui, name).value = value
        assert readout(name) == text, (name, value, getattr(ui, name).readout_format)
    ui.set(eta=0.05, guidance=7.25)   # a value set by set() (or restore) too
    assert (readout("eta"), readout("guidance")) == ("0.05", "7.25")


@pytest.mark.parametrize("control", ["prompt", "seed"])
@pytest.mark.parametrize("action", ["stop", "restore"])
def test_a_stop_or_restore_right_after_a_change_was_counted_still_wins(control, action):
    """A change counted in _submitting (its debounce timer fired, or a slider/seed change) read the change count only
    after it let the lock go: a Stop or restore that came in between got its count read, and the change ran anyway."""
    g, backend = fake()
    ui = panel(g, seed=1)
    first = ui.wait(30)
    entered, release = threading.Event(), threading.Event()
    submit_counted = Controls._submit_counted

    def gap(self, *args):  # the gap between counting the change and submitting it, held open
        if not entered.is_set():
            entered.set()
            release.wait(10)
        return submit_counted(self, *args)

    Controls._submit_counted = gap
    new = "a blue square" if control == "prompt" else 2
    try:
        change_then(ui, control, new, action, entered, release)
    finally:
        Controls._submit_counted = submit_counted
    assert len(backend.requests) == 1 and ui.video is first and len(ui.history) == 1
    assert getattr(ui, control).value == (new if action == "stop" else first.params[control])


def test_save_names_and_writes_the_same_clip(tmp_path, monkeypatch):
    """save() read ui.video twice: a run that finished between naming the file and writing it gave a file named
    after one clip (``_seed1``) that held another (seed 2)."""
    import sys

    module = sys.modules["sora_nb.controls"]   # (sora_nb.controls is the function)
    g, _ = fake()
    ui = panel(g, seed=1, save_dir=tmp_path)
    ui.wait(30)
    name = module.slug
    ran = []

    def slug_while_a_run_finishes(text: str, max_len: int = 40) -> str:
        if not ran:
            ran.append(True)
            ui.seed.value = 2
            assert ui.wait(30).params["seed"] == 2
        return name(text, max_len)

    monkeypatch.setattr(module, "slug", slug_while_a_run_finishes)
    path = ui.save()
    assert ran and ui.video.params["seed"] == 2
    assert path == tmp_path / "a-red-circle-moving-right_seed1.mp4" and sora_nb.read_params(path)["seed"] == 1
