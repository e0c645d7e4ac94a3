"""The shipped weights' quality on a small sample, so a regression in them fails CI.

The floors sit below what the shipped model measured on 200 clips per split (MODEL_CARD.md, default
settings: stochastic sampler eta 1, scheduler shift 6, guidance 2 at every step; train split colour 0.882,
shape 0.741, motion 0.623, count 0.765, consistency 0.579, overall 0.305, background 1.000; with the guidance
profile shipped since, 0.891, 0.768, 0.705, 0.725, 0.632, 0.375 and 1.000; with the seventeenth session's
decoder, 0.889, 0.849, 0.724, 0.745, 0.659, 0.440 and 1.000; with the eighteenth session's DiT fine-tune, 0.896,
0.859, 0.777, 0.725, 0.674, 0.460 and 1.000; with the twenty-first session's fine-tunes on the sampler's own inputs,
0.929, 0.915, 0.858, 0.855, 0.776, 0.575 and 1.000), by about three binomial standard deviations
of a 32-clip sample (about 60 objects, 45 of them asked to move; count and overall per clip; background,
measured at 1.0, keeps a margin of 0.15). The sample below measured colour 0.964, shape 0.948, motion
0.880, count 0.875, consistency 0.880, overall 0.750 (before the twenty-first session's fine-tunes: 0.932, 0.906,
0.839, 0.875, 0.818, 0.625; before the DiT fine-tune: 0.927, 0.880, 0.714, 0.750,
0.682, 0.531; the decoder before: 0.927, 0.755, 0.807, 0.781, 0.651, 0.531; without the profile: 0.932, 0.776,
0.766, 0.875, 0.682, 0.594; with the forty-fourth session's five-block decoder, on the thirty-third session's two DiTs: 0.979, 0.964,
0.948, 0.938, 0.964, 0.875; with the forty-fifth session's redraw of a draw that fails the model's own check,
default since: 0.990, 0.974, 0.958, 0.969, 0.974, 0.906; the same with the forty-seventh session's second redraw and the forty-eighth's third). The shape floor rose from 0.57 to 0.70 with the seventeenth session's decoder; the
motion, consistency and overall floors from 0.40, 0.38 and 0.06 to 0.58, 0.48 and 0.20 with the eighteenth
session's DiT fine-tune; all six (colour 0.75 to 0.82, shape 0.70 to 0.80, motion 0.58 to 0.70, count 0.53 to 0.66,
consistency 0.48 to 0.61, overall 0.20 to 0.31) with the twenty-first session's. The shape and consistency floors (0.80, 0.61) are far above what the model shipped before 2026-12-02 (DiT b on the plain latent) scored on
200 clips (0.331, 0.172), so swapping it back fails; the spin test fails for every model shipped before
the angle channels (0 of 16). They guard against a broken or swapped model or sampler; they are NOT the
project's quality bars (colour >= 0.95, ...), which this model does not meet yet (issue 4 stays open).
"""

import json

import pytest

import sora_nb
from sora_nb import world
from sora_nb.backends import embedded

N = 32
# the shipped autoencoder's round trip (labels' channels, as test_autoencoder_round_trip_floor) on the model
# card's 200 train clips measured shape 0.973 and every check 0.840 (seventeenth session's decoder)
ROUND_TRIP_FLOORS = {"shape": 0.91, "overall": 0.65}


@pytest.fixture(scope="module")
def shipped():
    if not (embedded.WEIGHTS_DIR / embedded.MANIFEST).is_file():
        pytest.fail("the package ships no weights (sora_nb/weights/shapes)")
    return sora_nb.load("shapes")


@pytest.fixture(scope="module")
def scores(shipped):
    df = world.evaluate(shipped, n=N, seed=2026, split="train")
    return world.summarize(df)


def test_shipped_weights_are_the_trained_model(shipped):
    assert shipped.name == "shapes"
    manifest = json.loads((embedded.WEIGHTS_DIR / "manifest.json").read_text())
    assert manifest["trained"] is True
    size = sum(p.stat().st_size for p in embedded.WEIGHTS_DIR.rglob("*") if p.is_file())
    assert size <= 30e6, size  # the budget: <= 30 MB in all (two DiTs since the thirty-third session)
    # the thirty-third session's low-noise expert takes the steps at or below sigma .8 (MODEL_CARD.md)
    assert shipped.backend.expert_switch == 0.8 and shipped.backend.low is not None
    card = (embedded.WEIGHTS_DIR / "MODEL_CARD.md").read_text()
    assert "| train/train |" in card and "wall time" in card


@pytest.mark.parametrize("dimension,floor", [("background", 0.85), ("colour", 0.82), ("shape", 0.80),
                                             ("motion", 0.70), ("count", 0.66), ("consistency", 0.61),
                                             ("overall", 0.31)])
def test_quality_floor_on_a_small_sample(scores, dimension, floor):
    assert scores[dimension] >= floor, dict(scores)


def test_spinning_outlines_are_drawn_turning(shipped):
    """The layout latent's angle channels (recipe ``shape_angle``) let the model draw a spinning outline: 16
    one-object "spinning" prompts, each read by the evaluator's tracker. Measured 9 of 16 read as "spin", with
    the guidance profile and without, 10 of 16 with the seventeenth session's decoder, 14 of 16 with the
    eighteenth session's DiT fine-tune and 14 of 16 after the twenty-first session's (the model before the angle channels: 0 of 16, all but one "still")."""
    from sora_nb.world import vision

    colours = ["red", "blue", "green", "yellow", "purple", "orange", "pink", "cyan"]
    shapes = ["square", "triangle", "star", "cross"]
    reads = []
    for i in range(16):
        frames = shipped.generate(f"a {colours[i % 8]} {shapes[i % 4]} spinning", seed=100 + i, trace=False).frames
        tracks = vision.analyse(frames).tracks
        reads.append(tracks[0].motion if tracks else None)
    assert sum(r == "spin" for r in reads) >= 8, reads


def test_guidance_raises_adherence(shipped):
    """The default guidance (2, chosen at export, with the model's guidance profile) follows the prompt
    (colour + background) better than the unconditional model (0): 1.93 against 0.36 when measured (1.94 against 0.36
    before the twenty-first session's fine-tunes; 1.96
    against 0.27 before the eighteenth session's DiT fine-tune; 1.82 at guidance 2 without the profile)."""
    def adherence(g):
        df = world.evaluate(shipped, n=16, seed=7, split="train", guidance=g)
        s = world.summarize(df)
        return s["colour"] + s["background"]

    assert shipped.limits.default_guidance == 2.0 and shipped.limits.default_eta == 1.0
    assert shipped.backend.scheduler_config["shift"] == 6.0
    assert shipped.backend.guidance_profile == ((0.9, 4.0), (0.6, 1.0), (0.0, 0.0))
    assert adherence(shipped.limits.default_guidance) > adherence(0.0) + 0.3


def test_autoencoder_round_trip_floor(shipped):
    """The shipped autoencoder caps what any DiT can score: 32 true train clips, encoded from their frames
    (the pixel encoder) with the label channels set from the labels as the DiT was trained to draw them,
    decoded and scored. Floors about three binomial standard deviations below the 200-clip round trip of
    the decoder shipped in the seventeenth session (ROUND_TRIP_FLOORS); the decoder before it measured shape 0.886 and
    every check 0.620 on those 200 clips, so it fails both floors. This sample measured shape 1.000 and every
    check 0.906 (the decoder before: 0.880 and 0.594)."""
    import numpy as np
    import torch

    from sora_nb.train import clips_to_tensor, pixel_label_latent
    from sora_nb.world import evaluator

    vae = shipped.backend.vae
    rows = []
    for clip in world.sample(N, seed=2027, split="train"):
        with torch.no_grad():
            z = pixel_label_latent(vae, [clip], clips_to_tensor([clip]), shape_angle=True)
            video = vae.decode(z, len(clip.frames))[0]
        frames = ((video.permute(1, 2, 3, 0) + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
        rows.append(evaluator.score(frames, clip.caption))
    shape = float(np.nanmean([r["shape"] for r in rows]))
    overall = float(np.mean([r["overall"] for r in rows]))
    assert shape >= ROUND_TRIP_FLOORS["shape"] and overall >= ROUND_TRIP_FLOORS["overall"], (shape, overall)
