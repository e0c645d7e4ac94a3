"""`Generator.best_of`: several clips of a prompt, the one the model's latent-frame verifier scores highest."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

import sora_nb
from sora_nb import world
from sora_nb.backends import embedded
from sora_nb.models.verifier import ClipVerifier

PROMPT = "a yellow square moving left and a blue circle spinning"


def _with_verifier(b: embedded.EmbeddedBackend, verifier: ClipVerifier | None) -> embedded.EmbeddedBackend:
    info = {k: v for k, v in b.info.items() if k != "redraw_below"}  # these tests are about best_of's own pick
    return embedded.EmbeddedBackend(b.vae, b.dit, b.text, b.scheduler_config, b.latent_rgb.numpy(),
                                    {**info, "name": "verifier-test"}, b.low, verifier)


@pytest.fixture(scope="module")
def random_verifier(gen):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        return ClipVerifier(latent_channels=gen.backend.vae.config.latent_channels, text_dim=gen.backend.text.width)


def test_best_of_returns_the_highest_scored_candidate_which_generate_draws_again(gen, random_verifier):
    g = sora_nb.Generator(_with_verifier(gen.backend, random_verifier))
    kw = dict(steps=4, guidance=2.0)
    best = g.best_of(PROMPT, candidates=3, seed=11, **kw)
    info = best.params["best_of"]
    assert info["candidates"] == 3 and info["seeds"] == [11, 11 + 1_000_003, 11 + 2_000_006]
    plain = [g.generate(PROMPT, seed=s, **kw) for s in info["seeds"]]
    want = [float(g.backend.score_clip(v.latents, PROMPT)[0]) for v in plain]
    assert np.allclose(info["scores"], want, atol=1e-6)
    assert len(set(np.round(want, 6))) == 3  # three different clips, three different scores
    assert info["picked"] == int(np.argmax(want))
    again = plain[info["picked"]]
    assert best.params["seed"] == info["seeds"][info["picked"]]
    assert np.array_equal(best.frames, again.frames)
    assert np.array_equal(best.trace.x0.values, again.trace.x0.values)
    # the same call gives the same pick, with the count as a NumPy integer too
    again = g.best_of(PROMPT, candidates=np.int64(3), seed=11, **kw).params["best_of"]
    assert again == info and type(again["candidates"]) is int


def test_accept_stops_at_the_first_candidate_scored_at_or_above_it(gen, random_verifier):
    g = sora_nb.Generator(_with_verifier(gen.backend, random_verifier))
    kw = dict(steps=3, guidance=2.0, seed=11, retries=0)  # one draw per candidate (layout redraws: test_api)
    full = g.best_of(PROMPT, candidates=3, **kw).params["best_of"]
    want, seeds = full["scores"], full["seeds"]
    assert full["accept"] is None and len(seeds) == 3

    def draw(accept):
        started = []

        class Watch:
            def on_start(self, info):
                started.append(info.request.seed)

        video = g.best_of(PROMPT, candidates=3, accept=accept, observers=[Watch()], **kw)
        return video, video.params["best_of"], started

    # below every score: the first clip is taken, and no other is drawn
    video, info, started = draw(min(want) - 1.0)
    assert started == seeds[:1] and info["seeds"] == seeds[:1] and info["picked"] == 0
    assert info["scores"] == pytest.approx(want[:1], abs=1e-6) and video.params["seed"] == seeds[0]
    # exactly the best score: drawn up to the best, which is taken (>= accepts)
    k = int(np.argmax(want))
    video, info, started = draw(want[k])
    assert started == seeds[:k + 1] and info["picked"] == k and video.params["seed"] == seeds[k]
    # above every score: all are drawn and the highest is kept, as without accept
    video, info, started = draw(max(want) + 1.0)
    assert started == seeds and info["picked"] == k and info["accept"] == max(want) + 1.0
    assert np.array_equal(video.frames, g.generate(PROMPT, **{**kw, "seed": seeds[k]}).frames)


def test_score_clip_is_the_verifiers_mean_over_latent_frames(gen, random_verifier):
    b = _with_verifier(gen.backend, random_verifier)
    video = sora_nb.Generator(b).generate(PROMPT, seed=2, steps=3)
    states, mask = b.encode_prompt(PROMPT)
    frames = video.latents.float()  # (F, C, h, w)
    logits = random_verifier(frames, states.expand(len(frames), -1, -1), mask.expand(len(frames), -1))
    assert torch.allclose(b.score_clip(video.latents, PROMPT), logits.mean()[None], atol=1e-5)
    two = b.score_clip(torch.stack([video.latents, video.latents.flip(0)]), PROMPT)
    assert two.shape == (2,)


def test_best_of_refuses_bad_arguments_before_drawing_anything(gen, random_verifier):
    g = sora_nb.Generator(_with_verifier(gen.backend, random_verifier))
    started = []

    class Watch:
        def on_start(self, info):
            started.append(info)

    for bad, error in ((1, ValueError), (17, ValueError), (np.int64(17), ValueError),
                       (2.0, TypeError), (True, TypeError), ("2", TypeError), (None, TypeError)):
        with pytest.raises(error, match=r"candidates must be an integer in \[2, 16\]"):
            g.best_of(PROMPT, candidates=bad, observers=[Watch()])
    for bad, error in ((math.nan, ValueError), (math.inf, ValueError), ("2", TypeError), (True, TypeError)):
        with pytest.raises(error, match=r"accept must be a finite number \(a verifier score\) or None"):
            g.best_of(PROMPT, accept=bad, observers=[Watch()])
    with pytest.raises(TypeError, match=r"steps must be an integer in \[1, 1000\], got NoneType"):
        g.best_of(PROMPT, steps=None, observers=[Watch()])  # as generate: None is the default only where it is there
    with pytest.raises(TypeError, match="cancel must be a threading.Event"):
        g.best_of(PROMPT, cancel="stop", observers=[Watch()])
    with pytest.raises(ValueError, match="guidance"):
        g.best_of(PROMPT, guidance=math.nan, observers=[Watch()])
    with pytest.raises(ValueError, match="prompt"):
        g.best_of("", observers=[Watch()])
    with pytest.raises(TypeError, match="unknown parameter"):
        g.best_of(PROMPT, colour="red")
    assert started == []
    no_verifier = sora_nb.Generator(_with_verifier(gen.backend, None))
    with pytest.raises(ValueError, match="best_of needs a model with a verifier"):
        no_verifier.best_of(PROMPT)
    with pytest.raises(ValueError, match="has no verifier"):
        no_verifier.backend.score_clip(torch.zeros(4, 16, 16, 16), PROMPT)


def test_a_verifier_saves_loads_is_hash_checked_and_must_fit_the_model(gen, random_verifier, tmp_path):
    b = gen.backend
    folder = embedded.save_folder(tmp_path / "w", b.vae, b.dit, b.text, b.scheduler_config, b.latent_rgb.numpy(),
                                  {k: v for k, v in b.info.items() if k != "weights_sha256"}, b.low, random_verifier)
    assert "verifier/diffusion_pytorch_model.safetensors" in json.loads((folder / "manifest.json").read_text())["files"]
    back = embedded.load_folder(folder)
    latents = torch.randn(2, 4, 16, 16, 16)
    import copy

    rounded = copy.deepcopy(random_verifier).half().float()  # stored in float16, loaded as float32
    assert next(back.verifier.parameters()).dtype == torch.float32
    assert torch.equal(back.score_clip(latents, PROMPT), _with_verifier(b, rounded).score_clip(latents, PROMPT))
    assert torch.allclose(back.score_clip(latents, PROMPT), _with_verifier(b, random_verifier).score_clip(latents, PROMPT),
                          atol=2e-3)
    assert next(random_verifier.parameters()).dtype == torch.float32  # saving left the caller's verifier as it was
    tampered = tmp_path / "t"
    shutil.copytree(folder, tampered)
    weights = tampered / "verifier" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(sora_nb.backends.embedded.WeightsError, match="verifier"):
        embedded.load_folder(tampered)
    wrong = ClipVerifier(latent_channels=16, text_dim=64)
    with pytest.raises(embedded.WeightsError, match="the verifier reads 16 latent channels and 64-wide text states"):
        _with_verifier(b, wrong)
    assert not (tmp_path / "x").exists()
    with pytest.raises(embedded.WeightsError):
        embedded.save_folder(tmp_path / "x", b.vae, b.dit, b.text, b.scheduler_config, b.latent_rgb.numpy(),
                             dict(b.info), b.low, wrong)
    assert not (tmp_path / "x").exists()  # refused before anything is written


def test_the_shipped_verifier_picks_the_true_caption_of_true_clips(gen):
    """A regression check of the shipped verifier: on 48 true clips of train prompts it must score the true
    caption above a caption with one thing changed in most clips (it measured .90 or more; chance is .5)."""
    import importlib.util
    from pathlib import Path

    assert gen.backend.verifier is not None
    spec = importlib.util.spec_from_file_location("train_verifier", Path(__file__).resolve().parents[1] / "scripts" / "train_verifier.py")
    tv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tv)
    from sora_nb.train import clips_to_tensor, pixel_label_latent

    b = gen.backend
    clips = list(world.sample(48, seed=987, split="train", phrasing="train", duration=2.0, size=(64, 64)))
    with torch.no_grad():
        z = b.vae.normalize(pixel_label_latent(b.vae, clips, clips_to_tensor(clips), True)).transpose(1, 2)
    rng = np.random.default_rng(4)
    right = 0
    for clip, latents in zip(clips, z):
        true, *negatives = tv.captions_for(clip.caption, rng)
        right += float(b.score_clip(latents, true)[0]) > float(b.score_clip(latents, negatives[0])[0])
    assert right / len(clips) >= 0.8, right
