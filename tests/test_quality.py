"""The shipped weights' quality on a small sample, so a regression in them fails CI.

The floors sit below what the shipped model measured on 200 clips per split (MODEL_CARD.md, default
settings: stochastic sampler eta 1, scheduler shift 6, guidance 2; train split colour 0.880, shape 0.770,
motion 0.592, count 0.765, consistency 0.612, overall 0.335, background 1.000), by about three binomial
standard deviations of a 32-clip sample (about 60 objects, 45 of them asked to move; count and overall per
clip; background, measured at 1.0, keeps a margin of 0.15). The sample below measured colour 0.932, shape
0.797, motion 0.693, count 0.844, consistency 0.682, overall 0.438. The shape and consistency floors
(0.6, 0.42) are far above what the earlier shipped model (DiT b on the plain latent) scored on 200 clips
(0.331, 0.172), so swapping it back fails. They guard against a broken or swapped model or sampler; they
are NOT the project's quality bars (colour >= 0.95, ...), which this model does not meet yet (issue 4
stays open).
"""

import json

import pytest

import sora_nb
from sora_nb import world
from sora_nb.backends import embedded

N = 32


@pytest.fixture(scope="module")
def shipped():
    if not (embedded.WEIGHTS_DIR / embedded.MANIFEST).is_file():
        pytest.fail("the package ships no weights (sora_nb/weights/shapes)")
    return sora_nb.load("shapes")


@pytest.fixture(scope="module")
def scores(shipped):
    df = world.evaluate(lambda caption, seed: shipped.generate(caption, seed=seed, trace=False).frames,
                        n=N, seed=2026, split="train")
    return world.summarize(df)


def test_shipped_weights_are_the_trained_model(shipped):
    assert shipped.name == "shapes"
    manifest = json.loads((embedded.WEIGHTS_DIR / "manifest.json").read_text())
    assert manifest["trained"] is True
    size = sum(p.stat().st_size for p in embedded.WEIGHTS_DIR.rglob("*") if p.is_file())
    assert size <= 30 * 2**20, size  # the budget: <= 30 MB in all
    card = (embedded.WEIGHTS_DIR / "MODEL_CARD.md").read_text()
    assert "| train/train |" in card and "wall time" in card


@pytest.mark.parametrize("dimension,floor", [("background", 0.85), ("colour", 0.75), ("shape", 0.6),
                                             ("motion", 0.37), ("count", 0.53), ("consistency", 0.42),
                                             ("overall", 0.08)])
def test_quality_floor_on_a_small_sample(scores, dimension, floor):
    assert scores[dimension] >= floor, dict(scores)


def test_guidance_raises_adherence(shipped):
    """The default guidance (2, chosen at export) follows the prompt (colour + background) better than
    the unconditional model (0): 1.97 against 0.18 when measured."""
    def adherence(g):
        df = world.evaluate(lambda caption, seed: shipped.generate(caption, seed=seed, guidance=g, trace=False).frames,
                            n=16, seed=7, split="train")
        s = world.summarize(df)
        return s["colour"] + s["background"]

    assert shipped.limits.default_guidance == 2.0 and shipped.limits.default_eta == 1.0
    assert shipped.backend.scheduler_config["shift"] == 6.0
    assert adherence(shipped.limits.default_guidance) > adherence(0.0) + 0.3
