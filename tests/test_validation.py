"""Every bad input raises ValueError/TypeError naming the parameter and its allowed range."""

import math

import numpy as np
import pytest

import sora_nb

BAD = [
    # (kwargs, exception, message fragment)
    (dict(prompt=3), TypeError, "prompt must be a string"),
    (dict(prompt=None), TypeError, "prompt must be a string"),
    (dict(prompt=""), ValueError, "prompt must be a non-empty string"),
    (dict(prompt="   "), ValueError, "prompt must be a non-empty string"),
    (dict(prompt="x" * 1001), ValueError, "prompt must be at most 400 characters"),
    # nothing a text encoder can read: control and zero-width characters tokenize as the empty prompt
    (dict(prompt="\x00\x01\x02"), ValueError, r"prompt must be a non-empty string \(1 to 400 characters, at least one of them visible\)"),
    (dict(prompt="\u200b\u200b"), ValueError, r"prompt must be a non-empty string .*visible"),
    # a control character inside a prompt (netCDF traces dropped a NUL, so the saved trace named another prompt)
    (dict(prompt="a red circle\x00 moving"), ValueError,
     r"prompt must not hold control characters \(tabs and newlines are allowed\); got U\+0000 at position 12"),
    (dict(negative_prompt="blue\x1b[31m"), ValueError, r"negative_prompt must not hold control characters .*U\+001B at position 4"),
    # 60 words and the text encoder's [CLS] and [SEP]
    (dict(prompt=" ".join(["red"] * 60)), ValueError, r"prompt is too long for model .*: 62 tokens, at most 48 \(about 46 words\)"),
    (dict(negative_prompt=5), TypeError, "negative_prompt must be a string"),
    (dict(duration=0), ValueError, r"duration must be > 0 and <= 4 seconds, got 0"),
    (dict(duration=-1.0), ValueError, r"duration must be > 0 and <= 4 seconds, got -1"),
    (dict(duration=float("nan")), ValueError, r"duration must be a finite number > 0 and <= 4 seconds"),
    (dict(duration=4.5), ValueError, r"duration must be > 0 and <= 4 seconds, got 4.5"),
    (dict(duration="2"), TypeError, "duration must be a number"),
    (dict(guidance=float("nan")), ValueError, r"guidance must be a finite number >= 0 and <= 50"),
    (dict(guidance=math.inf), ValueError, r"guidance must be a finite number"),
    (dict(guidance=-0.5), ValueError, r"guidance must be >= 0 and <= 50, got -0.5"),
    (dict(guidance=True), TypeError, "guidance must be a number"),
    # a value just past a limit is shown as given, not rounded onto the limit
    (dict(guidance=50.0000001), ValueError, r"guidance must be >= 0 and <= 50, got 50.0000001$"),
    (dict(duration=4.0000001), ValueError, r"duration must be > 0 and <= 4 seconds, got 4.0000001$"),
    (dict(cancel="x"), TypeError, r"cancel must be a threading.Event or None, got str"),
    (dict(observers=5), TypeError, r"observers must be a list of observers \(objects with on_start, on_step, on_end\), got int"),
    (dict(observers=[object()]), TypeError, r"observers\[0\] must have a method on_start, on_step or on_end, got object"),
    (dict(steps=0), ValueError, r"steps must be an integer in \[1, 1000\], got 0"),
    (dict(steps=10**9), ValueError, r"steps must be an integer in \[1, 1000\]"),
    (dict(steps=2.5), TypeError, r"steps must be an integer in \[1, 1000\]"),
    (dict(seed=1.5), TypeError, r"seed must be an integer in \[0, "),
    (dict(seed="0"), TypeError, r"seed must be an integer"),
    (dict(seed=-1), ValueError, r"seed must be an integer in \[0, "),
    (dict(seed=2**64), ValueError, r"seed must be an integer in \[0, "),
    # torch's CPU generator reads 32 bits: 2**32 + 1 drew seed 1's clip (it was accepted, up to 2**63 - 1)
    (dict(seed=2**32 + 1), ValueError, r"seed must be an integer in \[0, 4294967295\], got 4294967297 \(the noise "
                                       r"generator reads 32 bits: a larger seed would draw the same clip as seed 1\)"),
    (dict(width=65), ValueError, r"width x height must be one of 64x64, 96x64 .*got 65x64"),
    (dict(width=10**6, height=10**6), ValueError, r"width must be an integer in \[1, 8192\], got 1000000 \(model "
                                                  r"'shapes' draws 64x64, 96x64\)"),  # and what the model takes
    (dict(width=0), ValueError, r"width must be an integer in \[1, 8192\], got 0 \(model 'shapes' draws 64x64, 96x64\)"),
    (dict(height=32), ValueError, r"width x height must be one of"),
    (dict(width="64"), TypeError, r"width must be an integer"),
    (dict(trace="yes"), TypeError, r"trace must be True or False"),
    (dict(record_every=0), ValueError, r"record_every must be an integer in \[1, 1000\]"),
    (dict(eta=-0.1), ValueError, r"eta must be >= 0 and <= 1, got -0.1"),
    (dict(eta=1.5), ValueError, r"eta must be >= 0 and <= 1, got 1.5"),
    (dict(eta=float("nan")), ValueError, r"eta must be a finite number >= 0 and <= 1"),
    (dict(eta="1"), TypeError, r"eta must be a number >= 0 and <= 1"),
    # an int too large for a float was OverflowError, naming nothing
    (dict(guidance=10**400), ValueError, r"guidance must be a finite number >= 0 and <= 50, got a number too large"),
    (dict(duration=10**400), ValueError, r"duration must be a finite number > 0 and <= 4 seconds, got a number too"),
]


@pytest.mark.parametrize("kwargs,exc,match", BAD, ids=[str(sorted(k.items()))[:60] for k, _, _ in BAD])
def test_bad_input_is_refused_with_a_clear_message(gen, kwargs, exc, match):
    kwargs = dict(kwargs)
    prompt = kwargs.pop("prompt", "a red circle")
    with pytest.raises(exc, match=match):
        gen.generate(prompt, steps=kwargs.pop("steps", 2), **kwargs)


def test_numpy_integers_are_accepted(gen):
    v = gen.generate("a red circle", seed=np.int64(4), steps=np.int32(2), duration=np.float32(1.0), trace=False)
    assert v.params["seed"] == 4 and type(v.params["seed"]) is int
    assert v.params["steps"] == 2 and v.frames.shape[0] == 8


def test_unknown_keyword_is_a_type_error(gen):
    with pytest.raises(TypeError, match="unexpected keyword argument 'sead'"):
        gen.generate("a red circle", sead=3)
    with pytest.raises(TypeError, match="unknown parameter"):
        sora_nb.Request.build(gen.limits, "a red circle", sead=3)


def test_a_failed_request_leaves_the_generator_working(gen):
    with pytest.raises(ValueError):
        gen.generate("a red circle", duration=-1)
    v = gen.generate("a red circle", steps=2, trace=False)
    assert v.frames.shape == (16, 64, 64, 3)


def test_eta_other_than_0_is_refused_where_the_model_has_no_stochastic_sampler(gen):
    import dataclasses

    limits = dataclasses.replace(gen.limits, name="wan-like", max_eta=0.0, default_eta=0.0)
    assert sora_nb.Request.build(limits, "a red circle").eta == 0.0
    with pytest.raises(ValueError, match=r"eta must be 0 for model 'wan-like'.*got 0.5"):
        sora_nb.Request.build(limits, "a red circle", eta=0.5)
    with pytest.raises(ValueError, match=r"eta must be >= 0 and <= 1, got 2"):
        sora_nb.Request.build(limits, "a red circle", eta=2)


def test_visible_prompts_in_any_script_are_accepted(gen):
    """The visible-character rule refuses only what says nothing: letters of any script and emoji pass."""
    for prompt in ("un cercle rouge", "赤い円", "🔴 moving right", "\u200ba red circle", "a red circle\n\tmoving\r\nright"):
        assert gen.request(prompt).prompt == prompt.strip()


def test_observers_none_means_none_and_a_generator_of_observers_sees_every_draw(gen):
    """``observers=None`` is no observers. An iterator of observers is read once, so each draw of a
    redrawn clip still reaches it (it used to be used up by the first draw)."""
    v = gen.generate("a red circle", steps=2, trace=False, retries=0, observers=None)
    assert v.frames.shape == (16, 64, 64, 3)
    starts = []

    class Watch:
        def on_start(self, info):
            starts.append(info.request.steps)

    # a clip the model redraws: a 2-step draw of two objects often fails its check
    for seed in range(20):
        starts.clear()
        v = gen.generate("a red circle and a blue square", seed=seed, steps=2, trace=False, retries=2,
                         observers=(w for w in [Watch()]))
        if len(v.params["retry"]["seeds"]) > 1:
            break
    assert len(v.params["retry"]["seeds"]) > 1, "no redrawn clip in 20 seeds"
    assert len(starts) == len(v.params["retry"]["seeds"])


def test_a_video_is_checked_when_made(gen):
    frames = np.zeros((4, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=r"fps must be >= 0.1 and <= 240, got 0"):
        sora_nb.Video(frames, fps=0, params={})
    with pytest.raises(ValueError, match=r"fps must be a finite number >= 0.1 and <= 240"):
        sora_nb.Video(frames, fps=float("nan"), params={})
    with pytest.raises(TypeError, match=r"params must be a dict \(prompt, seed, ...\), got NoneType"):
        sora_nb.Video(frames, fps=8, params=None)
    v = sora_nb.Video(frames, fps=np.float32(8), params={})
    assert v.fps == 8.0 and type(v.fps) is float and v.duration == 0.5


def test_best_of_accept_too_large_for_a_float_is_named(gen):
    with pytest.raises(ValueError, match=r"accept must be a finite number \(a verifier score\) or None, got a number "
                                         r"too large for a float"):
        gen.best_of("a red circle", candidates=2, accept=10**400, steps=2)


@pytest.mark.parametrize("bad", [np.float32("nan"), np.float32("inf"), np.float16("-inf")])
def test_best_of_a_numpy_nan_or_inf_accept_is_named_as_such(gen, bad):
    """A float32/float16 NaN or inf is no Python float: it was reported as "a number too large for a float"."""
    with pytest.raises(ValueError, match=rf"accept must be a finite number \(a verifier score\) or None, got "
                                         rf"{float(bad)}$"):
        gen.best_of("a red circle", candidates=2, accept=bad, steps=2)
