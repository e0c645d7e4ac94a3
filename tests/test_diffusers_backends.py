"""Diffusers video pipelines under the sora_nb API, on tiny configs built in code (no Hub, CPU).

One tiny pipeline per family (sora_nb.testing): Wan, LTX-Video, CogVideoX (its DDIM and DPM
schedulers), HunyuanVideo, Mochi, plus LTX-Video image-to-video. Each checks frames and trace shapes,
determinism (and equality with a bare pipeline call), x0 against the transformer's own output
captured by a forward hook, cancel without decode, and the constraint messages.
"""

import threading

import numpy as np
import pytest
import torch

import sora_nb
from sora_nb import sampler
from sora_nb.backends import diffusers_video as dv
from sora_nb.testing import load_tiny, tiny_options, tiny_pipeline

FAMILIES = ["wan", "ltx", "cogvideox", "cogvideox-dpm", "hunyuan", "mochi"]
# A valid frame count per tiny pipeline (4k+1; LTX's tiny VAE is 8x in time like the real one; Mochi 6k+1).
FRAMES = {"wan": 9, "ltx": 9, "cogvideox": 9, "cogvideox-dpm": 9, "hunyuan": 9, "mochi": 7, "ltx-i2v": 9,
          "cogvideox-i2v": 9,
          "wan-unipc": 9, "mochi-inverted": 7}
PROMPT = "a red circle moving right"


def _variant(name):
    """Extra variants: Wan with its released scheduler (UniPC, flow prediction), Mochi with inverted sigmas."""
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    if name == "wan-unipc":
        gen = load_tiny("wan")
        gen.backend.pipe.scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                             flow_shift=3.0)
        return gen
    if name == "mochi-inverted":
        gen = load_tiny("mochi")
        gen.backend.pipe.scheduler = FlowMatchEulerDiscreteScheduler(invert_sigmas=True)
        return gen
    return load_tiny(name)


@pytest.fixture(scope="module")
def gens():
    """Tiny generators, built on first use and shared by the module's tests."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = _variant(name)
        return cache[name]

    return get


@pytest.mark.parametrize("name", FAMILIES)
def test_frames_trace_shapes_and_params(gens, name):
    gen = gens(name)
    n = FRAMES[name]
    w, h = gen.limits.default_size
    v = gen.generate(PROMPT, num_frames=n, steps=3, guidance=3.0, seed=1)
    assert v.frames.dtype == np.uint8 and v.frames.shape == (n, h, w, 3)
    c, f, lh, lw = gen.backend.latent_shape(gen.request(PROMPT, num_frames=n))
    assert v.trace.latent.dims == ("step", "frame", "channel", "y", "x")
    assert v.trace.latent.shape == (3, f, c, lh, lw) and v.trace.x0.shape == (3, f, c, lh, lw)
    assert v.trace.preview.shape == (3, f, lh, lw, 3) and v.trace.preview.dtype == np.uint8
    assert tuple(v.latents.shape) == (f, c, lh, lw)
    sig = v.trace.sigma.values
    assert sig[0] == pytest.approx(1.0, abs=1e-3) and np.all(np.diff(sig) < 0)
    p = v.params
    assert p["model"] == gen.name and p["num_frames"] == n and p["model_info"]["family"] == gen.backend.family.key
    assert p["duration"] == pytest.approx(n / gen.limits.fps) and v.fps == gen.limits.fps
    assert v.trace.attrs["model"] == gen.name
    # latent frame 0 holds video frame 0 alone, latent frame k >= 1 frames (k - 1) * t + 1 onwards
    t = gen.limits.temporal_factor
    np.testing.assert_allclose(v.trace.time.values * v.fps, [0] + [(k - 1) * t + 1 for k in range(1, f)], atol=1e-4)


@pytest.mark.parametrize("name", FAMILIES)
def test_deterministic_and_equal_to_a_bare_pipeline_call(gens, name):
    gen = gens(name)
    kw = dict(num_frames=FRAMES[name], steps=2, guidance=3.0, trace=False)
    a = gen.generate(PROMPT, seed=3, **kw)
    b = gen.generate(PROMPT, seed=3, **kw)
    c = gen.generate(PROMPT, seed=4, **kw)
    assert torch.equal(a.latents, b.latents) and np.array_equal(a.frames, b.frames)
    assert not torch.equal(a.latents, c.latents)
    # sora_nb changes nothing in the pipeline's computation: same latents as calling it directly
    backend = gen.backend
    request = gen.request(PROMPT, seed=3, **kw)
    bare = backend.pipe(**backend.call_arguments(request), generator=torch.Generator().manual_seed(3),
                        output_type="latent", return_dict=False)[0]
    assert torch.equal(backend.to_fcyx(bare, backend.latent_dims(request)), a.latents)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("name", ["wan", "ltx", "cogvideox", "hunyuan", "mochi"])
def test_frames_equal_a_bare_pipeline_calls_frames(name, dtype):
    """The decoded frames are the pipeline's own ``output_type="np"`` frames, also in bfloat16 (``from_pretrained``'s
    default on CUDA): Wan's decode took its latent statistics in float32 where the pipeline casts first, and in
    bfloat16 its frames were up to 16 levels off the pipeline's (the others are within rounding)."""
    gen = sora_nb.load(tiny_pipeline(name), dtype=dtype, **tiny_options(name))
    kw = dict(num_frames=FRAMES[name], steps=2, guidance=3.0)
    v = gen.generate(PROMPT, seed=3, trace=False, **kw)
    backend = gen.backend
    bare = backend.pipe(**backend.call_arguments(gen.request(PROMPT, seed=3, **kw)),
                        generator=torch.Generator().manual_seed(3), output_type="np", return_dict=False)[0][0]
    assert v.frames.shape == bare.shape
    diff = np.abs(v.frames.astype(int) - np.round(bare * 255).astype(int))
    assert diff.max() <= (0 if dtype == "float32" else 2), (name, dtype, diff.max())


class _Events:
    """Observer keeping float32 copies of every step event (the trace holds float16)."""

    def __init__(self):
        self.events = []

    def on_step(self, ev):
        self.events.append(dict(latent=ev.latent.detach().clone(), x0=ev.x0.detach().clone(), sigma=ev.sigma,
                                timestep=ev.timestep))


@pytest.mark.parametrize("name", FAMILIES + ["wan-unipc", "mochi-inverted"])
def test_x0_matches_the_transformer_output(gens, name):
    """x0 in the events equals x0 computed from the transformer's own output (forward hook), guidance off."""
    gen = gens(name)
    backend, pipe = gen.backend, gen.backend.pipe
    calls = []

    def hook(module, args, kwargs, output):
        calls.append((kwargs["hidden_states"].detach().clone(), float(kwargs["timestep"].flatten()[0]),
                      output[0].detach().float().clone()))

    handle = pipe.transformer.register_forward_hook(hook, with_kwargs=True)
    obs = _Events()
    try:
        request = gen.request(PROMPT, num_frames=FRAMES[name], steps=4, guidance=1.0, seed=2)
        gen.run(request, observers=[obs])
    finally:
        handle.remove()
    assert len(calls) == len(obs.events) == 4
    dims = backend.latent_dims(request)
    scheduler = pipe.scheduler
    for (x_in, t, out), ev in zip(calls, obs.events):
        x_in = x_in.float()
        if backend.method == "returned":      # CogVideoX: v-prediction on alphas_cumprod
            a = scheduler.alphas_cumprod[int(round(t))].double()
            expected = (a.sqrt() * x_in.double() - (1 - a).sqrt() * out.double()).float()
        elif scheduler.config.get("invert_sigmas", False):   # Mochi: the model predicts x0 - noise
            expected = x_in + ev["sigma"] * out
        else:                                  # flow matching (Euler or UniPC): x0 = x - sigma * v
            expected = x_in - ev["sigma"] * out
        expected = backend.to_fcyx(expected, dims)
        assert torch.equal(backend.to_fcyx(x_in, dims), ev["latent"].float())  # the latent the model saw
        err = (ev["x0"].float() - expected).abs().max().item()
        assert err <= 1e-4, (name, ev["sigma"], err)


@pytest.mark.parametrize("name", ["wan", "ltx"])
def test_cancel_stops_the_pipeline_and_skips_decode(gens, name, monkeypatch):
    gen = gens(name)
    pipe = gen.backend.pipe
    decoded, model_calls = [], []
    monkeypatch.setattr(gen.backend, "vae_decode", lambda z: decoded.append(1))
    monkeypatch.setattr(pipe.vae, "decode", lambda *a, **k: decoded.append(2))
    handle = pipe.transformer.register_forward_hook(lambda *a: model_calls.append(1))
    cancel = threading.Event()

    class StopAtStep2:
        def on_step(self, ev):
            if ev.step == 1:
                cancel.set()

    try:
        with pytest.raises(sora_nb.Cancelled, match="after step 2 of 6"):
            gen.generate(PROMPT, num_frames=FRAMES[name], steps=6, guidance=1.0, observers=[StopAtStep2()],
                         cancel=cancel)
    finally:
        handle.remove()
    assert decoded == []
    assert len(model_calls) == 2  # the pipeline skipped its remaining steps
    assert not [t for t in threading.enumerate() if t.name == "sora_nb.diffusers"]
    monkeypatch.undo()
    assert gen.generate(PROMPT, num_frames=FRAMES[name], steps=1, trace=False).frames.shape[0] == FRAMES[name]


def test_closing_the_steps_early_stops_the_worker(gens):
    gen = gens("hunyuan")
    request = gen.request(PROMPT, num_frames=9, steps=5)
    steps = gen.backend.denoise(request, torch.Generator().manual_seed(0))
    assert next(steps).step == 0
    steps.close()
    assert not [t for t in threading.enumerate() if t.name == "sora_nb.diffusers"]


def test_constraint_messages(gens):
    wan, ltx, mochi = gens("wan"), gens("ltx"), gens("mochi")
    with pytest.raises(ValueError, match=r"num_frames must be 4k\+1 for Wan .*got 32: the nearest valid counts are "
                                         r"29 or 33"):
        wan.generate(PROMPT, num_frames=32)
    with pytest.raises(ValueError, match=r"num_frames must be 8k\+1 for LTX-Video .*got 12: .* 9 or 17"):
        ltx.generate(PROMPT, num_frames=12)
    with pytest.raises(ValueError, match=r"num_frames must be 6k\+1 for Mochi .*got 10: .* 7 or 13"):
        mochi.generate(PROMPT, num_frames=10)
    with pytest.raises(ValueError, match=r"num_frames must be an integer in \[1, 81\], got 85"):
        wan.generate(PROMPT, num_frames=85)
    with pytest.raises(ValueError, match=r"width must be a multiple of 16 for Wan .*got 40: the nearest valid width "
                                         r"is 32 or 48"):
        wan.generate(PROMPT, width=40, height=32)
    with pytest.raises(ValueError, match=r"height must be a multiple of 16 for Mochi .*got 8: .* 16"):
        mochi.generate(PROMPT, width=16, height=8)
    with pytest.raises(ValueError, match=r"duration and num_frames disagree: duration=2 s gives 33 frames at 16 fps"
                                         r".*num_frames=9"):
        wan.generate(PROMPT, duration=2.0, num_frames=9)
    # consistent duration + num_frames is fine; a duration becomes the nearest valid frame count
    assert wan.request(PROMPT, duration=2.0, num_frames=33).num_frames == 33
    assert wan.request(PROMPT, duration=0.5).num_frames == 9          # 8 frames at 16 fps -> 4k+1
    assert ltx.request(PROMPT, duration=0.5).num_frames == 9          # 12.5 -> 12 -> 8k+1 (9 and 17: 9 nearer)
    assert mochi.request(PROMPT, duration=0.3).num_frames == 7        # 9 -> 6k+1 (7 and 13: 7 nearer)
    # the released models' rules, by family (tiny pipelines share them except for spatial factors)
    assert wan.limits.frame_rule == "4k+1" and wan.limits.size_multiple == 16
    assert repr(wan) == ("Generator(model='wan (WanPipeline)', family='Wan', fps=16, frames=4k+1 up to 81, "
                         "width/height multiples of 16, default 32x32)")
    assert (ltx.limits.frame_rule, mochi.limits.frame_rule) == ("8k+1", "6k+1")
    assert gens("hunyuan").limits.frame_rule == "4k+1" and gens("cogvideox").limits.frame_rule == "4k+1"
    # a tiny VAE compresses less, but the pipelines check 32 (LTX-Video) and 16 (HunyuanVideo) themselves: sizes
    # between passed sora_nb's check and failed in diffusers' own words
    assert (ltx.limits.size_multiple, gens("hunyuan").limits.size_multiple) == (32, 16)
    with pytest.raises(ValueError, match=r"width must be a multiple of 32 for LTX-Video .*got 48: .* 32 or 64"):
        ltx.generate(PROMPT, width=48, height=32)
    with pytest.raises(ValueError, match=r"height must be a multiple of 16 for HunyuanVideo .*got 24"):
        gens("hunyuan").generate(PROMPT, width=16, height=24)
    real_ltx = sora_nb.Limits(name="ltx", fps=25, max_duration=257 / 25, sizes=((704, 480),), default_size=(704, 480),
                              family="LTX-Video", frame_step=8, size_multiple=32)
    with pytest.raises(ValueError, match=r"width must be a multiple of 32 for LTX-Video .*got 700: .* 672 or 704"):
        sora_nb.Request.build(real_ltx, PROMPT, width=700)
    assert sora_nb.Request.build(real_ltx, PROMPT, width=1216, height=704, num_frames=257).num_frames == 257


def test_family_table_matches_the_released_models():
    fam = {b.family.key: b.family for b in dv.BACKENDS}
    assert (fam["wan"].fps, fam["wan"].max_frames, fam["wan"].sizes[0]) == (16.0, 81, (832, 480))
    assert (fam["ltx"].fps, fam["ltx"].max_frames) == (25.0, 257)
    assert (fam["cogvideox"].fps, fam["cogvideox"].max_frames) == (8.0, 49)
    assert (fam["hunyuan"].fps, fam["hunyuan"].max_frames) == (24.0, 129)
    assert (fam["mochi"].fps, fam["mochi"].max_frames) == (30.0, 163)
    assert {b.family.latent_format for b in dv.BACKENDS} == set(sora_nb.latent_formats.FORMATS)


@pytest.mark.parametrize("name,expected", [("wan", 5.0), ("ltx", 3.0), ("cogvideox", 6.0), ("hunyuan", 6.0),
                                           ("mochi", 4.5)])
def test_default_guidance_is_the_pipelines_own(gens, name, expected):
    """A request without guidance gets the pipeline's own guidance_scale default, as a bare call would."""
    gen = gens(name)
    assert gen.limits.default_guidance == expected
    assert gen.request(PROMPT, num_frames=FRAMES[name]).guidance == expected
    assert gen.request(PROMPT, num_frames=FRAMES[name], guidance=1.5).guidance == 1.5


def test_load_refuses_unknown_pipelines_and_bad_options():
    from diffusers import DiffusionPipeline

    class SomePipeline(DiffusionPipeline):
        def __init__(self):
            super().__init__()

    with pytest.raises(ValueError, match=r"unsupported diffusers pipeline 'SomePipeline'.*WanPipeline.*LTXPipeline"
                                         r".*CogVideoXPipeline.*HunyuanVideoPipeline.*MochiPipeline"):
        sora_nb.load(SomePipeline())
    pipe = tiny_pipeline("mochi")
    with pytest.raises(ValueError, match="offload must be None, 'model' or 'sequential'"):
        sora_nb.load(pipe, offload="gpu")
    with pytest.raises(TypeError, match="call_kwargs may not set num_frames"):
        sora_nb.load(pipe, call_kwargs={"num_frames": 9})
    with pytest.raises(TypeError, match="MochiPipeline takes no frame_rate"):
        sora_nb.load(pipe, call_kwargs={"frame_rate": 9})
    with pytest.raises(TypeError, match="the embedded model takes no loading options"):
        sora_nb.load("shapes", offload="model")
    with pytest.raises(ValueError, match="unknown model 'nope'.*diffusers repo id"):
        sora_nb.load("nope")


def test_load_a_saved_pipeline_folder(tmp_path):
    tiny_pipeline("ltx").save_pretrained(tmp_path / "ltx")
    gen = sora_nb.load(tmp_path / "ltx", default_size=(32, 32), call_kwargs={"max_sequence_length": 16})
    assert isinstance(gen, sora_nb.Generator) and gen.name == str(tmp_path / "ltx")
    assert gen.backend.describe()["source"] == "folder"
    v = gen.generate(PROMPT, num_frames=9, steps=2, trace=False)
    assert v.frames.shape == (9, 32, 32, 3)
    again = sora_nb.load(str(tmp_path / "ltx"), default_size=(32, 32), call_kwargs={"max_sequence_length": 16})
    assert again is gen  # cached per name and options
    # reproduce loads the folder the clip names, with the options that shape a clip (dtype, fps, call_kwargs)
    assert v.params["model_info"]["call_kwargs"] == {"max_sequence_length": 16}
    np.testing.assert_array_equal(sora_nb.reproduce(v).frames, v.frames)
    plain = sora_nb.load(tmp_path / "ltx", default_size=(32, 32))  # without the clip's call_kwargs
    with pytest.raises(ValueError, match=r"not the model that made this clip \(call_kwargs None, the clip's "
                                         r"\{'max_sequence_length': 16\}\)"):
        sora_nb.reproduce(v, model=plain)
    with pytest.raises(ValueError, match=r"fps 12.0, the clip's 25.0"):
        sora_nb.reproduce(v, model=sora_nb.load(tmp_path / "ltx", default_size=(32, 32), fps=12,
                                                call_kwargs={"max_sequence_length": 16}))


def test_a_pipeline_folder_with_pickle_weights_is_refused(tmp_path):
    """Weights load from safetensors only: a folder saved with .bin files is refused before torch.load runs."""
    tiny_pipeline("ltx").save_pretrained(tmp_path / "bin", safe_serialization=False)
    assert list((tmp_path / "bin" / "transformer").glob("*.bin"))
    loads = []
    real_load = torch.load
    torch.load = lambda *a, **k: loads.append(a) or real_load(*a, **k)
    try:
        with pytest.raises(ValueError, match=r"sora_nb loads safetensors weights only, never pickle.*"
                                             r"safe_serialization=True"):
            sora_nb.load(tmp_path / "bin", default_size=(32, 32), call_kwargs={"max_sequence_length": 16})
    finally:
        torch.load = real_load
    assert loads == []


@pytest.mark.parametrize("options,error,match", [
    (dict(device="gpu"), ValueError, r"device must be a torch device or a name such as 'cpu', 'cuda' or 'cuda:1', got 'gpu'"),
    (dict(device=torch.device("meta"), dtype="int8"), ValueError, r"dtype must be a floating-point torch dtype or one of bfloat16"),
    (dict(dtype=torch.int8), ValueError, r"dtype must be a floating-point torch dtype"),
    (dict(fps=-1), ValueError, r"fps must be >= 0.1 and <= 240, got -1"),
    (dict(fps="abc"), TypeError, r"fps must be a number >= 0.1 and <= 240"),
    (dict(max_frames=0), ValueError, r"max_frames must be an integer in \[1, 10000\], got 0"),
    (dict(max_frames=100), ValueError, r"max_frames must be 4k\+1 for this Wan pipeline .*got 100: the nearest are 97 "
                                       r"or 101"),  # it was 97 without a word
    (dict(default_size=(32,)), TypeError, r"default_size must be a \(width, height\) pair of integers"),
    (dict(default_size="32x32"), TypeError, r"default_size must be a \(width, height\) pair of integers"),
    (dict(default_size=(8192, 32)), ValueError, r"default_size width must be an integer in \[1, 4096\], got 8192"),
    (dict(default_size=(32, 32), sizes=[(33, 33)]), ValueError, r"sizes must be multiples of 16 for this Wan pipeline, got 33x33"),
    (dict(call_kwargs=[1]), TypeError, r"call_kwargs must be a dict of extra pipeline arguments, got list"),
    (dict(call_kwargs={"bogus": 1}), TypeError, r"call_kwargs: WanPipeline takes no bogus"),
    (dict(vae_tiling="no"), TypeError, r"vae_tiling must be True or False, got str 'no'"),
    (dict(memory_check=None), TypeError, r"memory_check must be True or False"),
    (dict(foo=1), TypeError, r"unknown option\(s\) foo for a diffusers model; its options are device, dtype, offload"),
])
def test_bad_load_options_are_refused_and_leave_the_pipeline_as_it_was(options, error, match):
    """Every option is checked before the pipeline is cast, moved or changed (it used to be cast to the asked
    dtype, or get VAE tiling, and only then be refused)."""
    pipe = tiny_pipeline("wan")
    before = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
    options = {"default_size": (32, 32), "dtype": "float16", "vae_tiling": True, **options}
    with pytest.raises(error, match=match):
        sora_nb.load(pipe, **options)
    after = pipe.transformer.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())
    assert not getattr(pipe.vae, "use_tiling", False) and "prepare_latents" not in vars(pipe)


def test_a_broken_model_index_is_named(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model_index.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"model_index.json' is not a readable model_index.json"):
        sora_nb.load(tmp_path / "m")
    (tmp_path / "m" / "model_index.json").write_text('{"scheduler": ["diffusers", "X"]}')
    with pytest.raises(ValueError, match=r"model_index.json' names no pipeline class \(its _class_name is None\)"):
        sora_nb.load(tmp_path / "m")


def test_a_device_this_machine_lacks_is_refused_before_loading(tmp_path, monkeypatch):
    tiny_pipeline("ltx").save_pretrained(tmp_path / "ltx")
    from diffusers import DiffusionPipeline

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    read = []
    monkeypatch.setattr(DiffusionPipeline, "from_pretrained", classmethod(lambda cls, *a, **k: read.append(a)))
    for options, match in ((dict(device="cuda"), r"device 'cuda' is not available: this torch sees no CUDA GPU"),
                           (dict(offload="model"), r"offload='model' keeps the weights on the CPU and streams them "
                                                   r"to a CUDA GPU, and this torch sees none: on the CPU, load without "
                                                   r"offload"),
                           (dict(offload="sequential", device="cpu"), r"offload='sequential' .*this torch sees none"),
                           (dict(offload="bogus"), r"offload must be None, 'model' or 'sequential', got 'bogus'")):
        with pytest.raises(ValueError, match=match):
            sora_nb.load(tmp_path / "ltx", default_size=(32, 32), **options)
    assert read == []  # refused before a weight was read
    # offloading needs accelerate: said before the download (diffusers raised after it, at enable_*_offload)
    import importlib.util

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "accelerate" else find_spec(name, *a))
    with pytest.raises(ImportError, match=r"offload='model' needs the accelerate package: pip install accelerate"):
        sora_nb.load(tmp_path / "ltx", default_size=(32, 32), offload="model")
    # with a GPU, offload to the CPU was taken and broke the pipeline object for good (its own calls too)
    pipe = tiny_pipeline("ltx")
    with pytest.raises(ValueError, match=r"offload='sequential' .* and device is 'cpu': on the CPU, load without offload"):
        sora_nb.load(pipe, device="cpu", offload="sequential", **tiny_options("ltx"))
    assert not hasattr(pipe.transformer, "_hf_hook")  # untouched
    assert read == []


def test_mochi_needs_two_steps():
    gen = load_tiny("mochi")
    assert gen.limits.min_steps == 2 and load_tiny("wan").limits.min_steps == 1
    with pytest.raises(ValueError, match=r"steps must be an integer in \[2, 1000\], got 1"):
        gen.generate(PROMPT, num_frames=FRAMES["mochi"], steps=1)
    assert gen.generate(PROMPT, num_frames=FRAMES["mochi"], steps=2, trace=False).frames.shape[0] == FRAMES["mochi"]


def test_two_generators_over_one_pipeline_take_turns():
    """A run patches its pipeline for the call, so runs of one pipeline object wait for each other, whichever
    Generator makes them (e.g. a script's and a live panel's): both clips come out as if made alone."""
    pipe = tiny_pipeline("wan")
    from sora_nb.testing import tiny_options

    g1 = sora_nb.load(pipe, **tiny_options("wan"))
    g2 = sora_nb.load(pipe, **{**tiny_options("wan"), "name": "the same pipeline again"})
    assert g1 is not g2 and g1.backend._call_lock is g2.backend._call_lock
    out = {}

    def draw(gen, steps):
        try:
            out[steps] = gen.generate(PROMPT, num_frames=5, steps=steps, seed=1, trace=False).frames
        except Exception as err:  # noqa: BLE001 - the assertion below names it
            out[steps] = err

    threads = [threading.Thread(target=draw, args=(g, n)) for g, n in ((g1, 6), (g2, 9))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert all(isinstance(v, np.ndarray) for v in out.values()), out
    for gen, steps in ((g1, 6), (g2, 9)):
        np.testing.assert_array_equal(out[steps], gen.generate(PROMPT, num_frames=5, steps=steps, seed=1, trace=False).frames)
    assert "prepare_latents" not in vars(pipe)


def test_decodes_from_many_threads_take_turns_and_a_nested_call_is_refused():
    """The VAE keeps per-call state while it decodes (Wan's caches its causal frames): decodes from four threads at
    once gave 6 frames of 9, or other pixels, before they took the pipeline's lock. A generate or decode asked for
    from inside a run on the same thread (an observer) would wait forever for that run: it is refused."""
    gen = load_tiny("wan")
    clip = gen.generate(PROMPT, num_frames=9, steps=2, seed=1, trace=False)
    ref = gen.decode(clip.latents, 9)
    assert ref.shape == (9, 32, 32, 3)
    same = []

    def decode():
        for _ in range(3):
            same.append(np.array_equal(gen.decode(clip.latents, 9), ref))

    threads = [threading.Thread(target=decode) for _ in range(4)]
    [t.start() for t in threads]
    [t.join(120) for t in threads]
    assert same == [True] * 12

    class Nested:
        def __init__(self, call):
            self.call, self.error = call, None

        def on_step(self, event):
            if self.error is None:
                try:
                    self.call()
                except RuntimeError as err:
                    self.error = err

    for call in (lambda: gen.generate(PROMPT, num_frames=5, steps=2, seed=2, trace=False),
                 lambda: gen.decode(clip.latents, 9)):
        nested = Nested(call)
        out = gen.generate(PROMPT, num_frames=9, steps=2, seed=1, trace=False, observers=[nested])
        assert "this pipeline is running a call for this thread" in str(nested.error)
        np.testing.assert_array_equal(out.frames, clip.frames)  # the outer run went on as if alone


def test_image_to_video(gens):
    gen = gens("ltx-i2v")
    assert gen.limits.image_input
    image = np.zeros((32, 32, 3), np.uint8)
    image[8:24, 8:24] = (255, 0, 0)
    v = gen.generate(PROMPT, image=image, num_frames=9, steps=3, guidance=1.0)
    assert v.frames.shape == (9, 32, 32, 3)
    assert v.params["image"].startswith("image 32x32 sha256:")
    # the image's latent frame is not denoised: x_t and x0 of frame 0 stay the encoded image
    lat, x0 = v.trace.latent.values, v.trace.x0.values
    assert np.array_equal(lat[0, 0], lat[-1, 0]) and np.allclose(x0[:, 0], lat[:, 0], atol=1e-3)
    other = gen.generate(PROMPT, image=np.full((32, 32, 3), 200, np.uint8), num_frames=9, steps=3, guidance=1.0)
    assert not np.array_equal(v.trace.latent.values[0, 0], other.trace.latent.values[0, 0])
    # reproduce: a pipeline object is not loaded by name, and the clip needs its image again, the same one
    with pytest.raises(ValueError, match="pipeline object .* pass model= that pipeline"):
        sora_nb.reproduce(v)
    with pytest.raises(ValueError, match="clip was made from an image \\(image 32x32 sha256:.*pass image="):
        sora_nb.reproduce(v, model=gen)
    with pytest.raises(ValueError, match="image is not the one that made this clip"):
        sora_nb.reproduce(v, model=gen, image=np.full((32, 32, 3), 200, np.uint8))
    np.testing.assert_array_equal(sora_nb.reproduce(v.params, model=gen, image=image).frames, v.frames)
    with pytest.raises(ValueError, match="not the model that made this clip .*pipeline 'LTXPipeline', the clip's 'LTXImageToVideoPipeline'"):
        sora_nb.reproduce(v, model=gens("ltx"), image=image)
    with pytest.raises(ValueError, match="image is required"):
        gen.generate(PROMPT, num_frames=9)
    with pytest.raises(ValueError, match="image is only accepted by image-to-video models"):
        gens("ltx").generate(PROMPT, image=image)
    with pytest.raises(TypeError, match="image must be a PIL image or a uint8"):
        gen.generate(PROMPT, image=np.zeros((32, 32), np.float32))
    for shape in ((0, 0, 3), (32, 0, 3), (1, 1, 3)):  # these made clips from nothing
        with pytest.raises(ValueError, match=r"image must be 8 to 8192 pixels on each side .*got \d+x\d+"):
            gen.generate(PROMPT, image=np.zeros(shape, np.uint8), num_frames=9)


def test_cogvideox_image_to_video(gens):
    gen = gens("cogvideox-i2v")
    assert gen.limits.image_input and gen.backend.latent_channels() == 4  # the transformer takes 8: image latents
    kw = dict(num_frames=9, steps=2, guidance=1.0, seed=0)
    a = gen.generate(PROMPT, image=np.zeros((16, 16, 3), np.uint8), **kw)
    b = gen.generate(PROMPT, image=np.full((16, 16, 3), 255, np.uint8), **kw)
    assert a.frames.shape == (9, 16, 16, 3) and a.trace.latent.shape[1:] == (3, 4, 2, 2)
    assert not torch.equal(a.latents, b.latents)  # the image conditions the run
    # learned positional embeddings (as CogVideoX-5b-I2V): its trained size only; 32x32 passed "multiples of 16"
    # and failed inside diffusers
    assert (gen.limits.sizes, gen.limits.size_multiple) == (((16, 16),), 0)
    assert "sizes [16x16]" in repr(gen)
    with pytest.raises(ValueError, match=r"width x height must be one of 16x16 for model .*; got 32x32"):
        gen.generate(PROMPT, image=np.zeros((32, 32, 3), np.uint8), width=32, height=32, **kw)
    with pytest.raises(ValueError, match="has learned positional embeddings .* draws only 16x16; got 32x32"):
        sora_nb.load(gen.backend.pipe, **{**tiny_options("cogvideox-i2v"), "default_size": (32, 32)})


def test_wan_image_to_video_loads():
    import ftfy  # noqa: F401  (a dependency: diffusers' Wan pipelines call it unconditionally)
    gen = load_tiny("wan-i2v")
    v = gen.generate(PROMPT, image=np.zeros((32, 32, 3), np.uint8), num_frames=5, steps=2)
    assert v.frames.shape == (5, 32, 32, 3)


def test_wan_22_image_to_video_draws_the_pipelines_frames():
    """Wan 2.2's image-to-video (expand_timesteps, the TI2V 5B) keeps the image's latent in the first latent frame
    and blends it in before decoding: sora_nb decoded the raw latents, so the clip did not start from the image."""
    from PIL import Image

    gen = load_tiny("wan-ti2v")
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    for guidance in (1.0, 3.0):
        v = gen.generate(PROMPT, image=image, seed=1, guidance=guidance, steps=3, num_frames=5)
        request = gen.request(PROMPT, image=image, seed=1, guidance=guidance, steps=3, num_frames=5)
        bare = gen.backend.pipe(**{**gen.backend.call_arguments(request), "image": Image.fromarray(image)},
                                generator=torch.Generator().manual_seed(1), output_type="np", return_dict=False)[0][0]
        assert v.frames.shape == bare.shape == (5, 32, 32, 3)
        assert np.abs(v.frames.astype(int) - np.round(bare * 255).astype(int)).max() <= 1
        # the model sees the image's latent in latent frame 0 at every step: the trace shows it there
        x0 = v.trace.x0.values.astype(np.float32)
        np.testing.assert_allclose(x0[:, 0], np.broadcast_to(x0[-1:, 0], x0[:, 0].shape), atol=2e-3)


def test_memory_estimate_and_refusal(gens):
    gen = gens("wan")
    backend = gen.backend
    request = gen.request(PROMPT, num_frames=9)
    est = dv.estimate_memory(backend, request)
    weights = sum(p.numel() * p.element_size() for m in (backend.pipe.transformer, backend.pipe.vae,
                                                          backend.pipe.text_encoder)
                  for p in (*m.parameters(), *m.buffers()))
    assert est["weights_bytes"] == est["weights_total_bytes"] == weights
    assert est["peak_bytes"] == weights + max(est["activation_bytes"], est["decode_bytes"]) > weights
    assert est["tokens"] == 3 * 2 * 2  # 3 latent frames of 4x4 latents in 2x2 patches
    dv.check_memory(est, free_bytes=10 * est["peak_bytes"])  # fits: nothing raised
    with pytest.raises(dv.NotEnoughMemory, match=r"this run needs about .* GiB \(weights .* \+ max\(activations .*, "
                                                 r"decode .*\).* but the GPU has 0\.0 GiB free.*offload=\"model\".*"
                                                 r"memory_check=False") as info:
        dv.check_memory(est, free_bytes=1000)
    assert isinstance(info.value, ValueError)
    backend.check(request)  # on the CPU: no refusal


def test_decode_failure_keeps_the_latents(gens, monkeypatch):
    gen = gens("mochi")
    good = gen.generate(PROMPT, num_frames=7, steps=2, seed=5)

    def fail(z):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(gen.backend, "vae_decode", fail)
    with pytest.raises(sampler.DecodeError, match=r"decoding the latents failed \(OutOfMemoryError.*kept") as info:
        gen.generate(PROMPT, num_frames=7, steps=2, seed=5)
    err = info.value
    assert torch.equal(err.latents, good.latents) and torch.equal(gen.last_latents, good.latents)
    assert err.trace is not None and err.trace.sizes["step"] == 2
    monkeypatch.undo()
    assert np.array_equal(gen.decode(err.latents, err.num_frames), good.frames)


def test_controls_drive_a_diffusers_generator(gens):
    gen = gens("hunyuan")
    ui = sora_nb.controls(gen, duration=0.25, steps=2, guidance=1.0)
    try:
        video = ui.wait(120)
        assert ui.error is None and video is not None
        assert video.frames.shape == (5, 16, 16, 3) and (16, 16) in [o[1] for o in ui.size.options]
    finally:
        ui.close()


def test_controls_take_an_image_for_an_image_to_video_model(gens):
    """controls(i2v) refused to start ("image is required") and controls(i2v, image=...) called image an unknown
    control: an image-to-video model could not have a panel."""
    gen = gens("ltx-i2v")
    image = np.zeros((32, 32, 3), np.uint8)
    image[8:24, 8:24] = (255, 0, 0)
    with pytest.raises(ValueError, match="image is required"):
        sora_nb.controls(gen, steps=2)
    ui = sora_nb.controls(gen, image=image, duration=0.36, steps=2, guidance=1.0, seed=3)
    try:
        video = ui.wait(120)
        assert ui.error is None and video.frames.shape == (9, 32, 32, 3)
        assert video.params["image"].startswith("image 32x32 sha256:")
        direct = gen.generate(ui.prompt.value, image=image, num_frames=9, steps=2, guidance=1.0,
                              seed=3, trace=False)
        np.testing.assert_array_equal(video.frames, direct.frames)
    finally:
        ui.close()
    with pytest.raises(ValueError, match="image is only accepted by image-to-video models"):
        sora_nb.controls(gens("ltx"), image=image)


@pytest.mark.parametrize("name", ["cogvideox", "wan", "hunyuan"])
def test_decoding_the_first_frames_gives_the_clips_first_frames(gens, name):
    """CogVideoX dropped leading latent frames as if they were 1.5's padding whenever fewer frames were asked:
    decode(latents, 1) was the clip's last latent frame decoded, not its first frame."""
    gen = gens(name)
    v = gen.generate(PROMPT, num_frames=9, steps=2, trace=False)
    for n in (1, 5, 9):
        np.testing.assert_array_equal(gen.decode(v.latents, n), v.frames[:n])
    # 3 latent frames of a causal VAE hold 9 frames, not 12: refused before a decode (it ran one, then refused)
    calls = []
    real = gen.backend.decode
    gen.backend.decode = lambda *a: calls.append(a) or real(*a)
    try:
        with pytest.raises(ValueError, match=r"num_frames must be an integer in \[1, 9\], got 12"):
            gen.decode(v.latents, 12)
    finally:
        del gen.backend.decode
    assert calls == []


def test_cogvideox_15_padding_stays_out_of_the_trace_and_latents():
    """CogVideoX 1.5 pads the latent frames in front to a multiple of its temporal patch and drops them before it
    decodes; the trace and video.latents kept the pad as frame 0, so every time label was one latent frame late
    (the last past the clip's end)."""
    from diffusers import CogVideoXTransformer3DModel

    pipe = tiny_pipeline("cogvideox")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        pipe.transformer = CogVideoXTransformer3DModel(
            num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=2,
            text_embed_dim=32, num_layers=1, sample_width=2, sample_height=2, sample_frames=9, patch_size=2,
            patch_size_t=2, temporal_compression_ratio=4, max_text_seq_length=16,
            use_rotary_positional_embeddings=True).eval()
    gen = sora_nb.load(pipe, **tiny_options("cogvideox"))
    v = gen.generate(PROMPT, num_frames=9, steps=2, guidance=1.0)
    assert v.latents.shape[0] == 3 and v.trace.sizes["frame"] == 3  # 9 frames: 3 latent frames (padded to 4)
    assert v.trace.time.values.max() <= (v.frames.shape[0] - 1) / v.fps
    np.testing.assert_array_equal(gen.decode(v.latents, 9), v.frames)
    np.testing.assert_allclose(v.trace.x0.isel(step=-1).values, v.latents.numpy(), atol=2e-3)  # stored in float16


def test_reproduce_draws_a_tiled_clip_tiled_again(tmp_path):
    """reproduce loaded a folder's pipeline without the clip's vae_tiling: other pixels (tiles blend at their
    seams) under the same params. A pipeline the user tiled was also recorded as untiled."""
    folder = tmp_path / "wan"
    tiny_pipeline("wan").save_pretrained(folder, safe_serialization=True)
    gen = sora_nb.load(str(folder), vae_tiling=True, call_kwargs={"max_sequence_length": 16})
    v = gen.generate(PROMPT, num_frames=5, steps=2, width=512, height=512, trace=False)
    assert v.params["model_info"]["vae_tiling"] is True
    vae = gen.backend.pipe.vae
    vae.disable_tiling()
    try:
        assert not np.array_equal(gen.decode(v.latents, 5), v.frames)  # tiling moves pixels here
    finally:
        vae.enable_tiling()
    np.testing.assert_array_equal(sora_nb.reproduce(v).frames, v.frames)
    pipe = tiny_pipeline("wan")
    pipe.vae.enable_tiling()  # tiled by the user, loaded without the option
    assert sora_nb.load(pipe, **tiny_options("wan")).backend.describe()["vae_tiling"] is True


def test_reproduce_of_a_clip_longer_than_the_familys_maximum_uses_its_max_frames():
    pipe = tiny_pipeline("wan")
    gen = sora_nb.load(pipe, max_frames=101, **tiny_options("wan"))
    v = gen.generate(PROMPT, num_frames=85, steps=2, trace=False)
    assert v.params["model_info"]["max_frames"] == 101
    np.testing.assert_array_equal(sora_nb.reproduce(v, model=pipe).frames, v.frames)  # "num_frames ... [1, 81]"


def test_pipelines_sharing_components_run_one_at_a_time():
    """The lock was the pipeline object's, but a run's state lives in its components: an image-to-video pipeline
    made with from_pipe over the same scheduler, transformer and VAE (two panels, one per pipeline) ran at the same
    time as the text-to-video one and both runs died (IndexError from the shared scheduler's step index)."""
    from diffusers import LTXImageToVideoPipeline

    t2v = tiny_pipeline("ltx")
    i2v = LTXImageToVideoPipeline.from_pipe(t2v)
    i2v.set_progress_bar_config(disable=True)
    assert i2v.scheduler is t2v.scheduler and i2v.transformer is t2v.transformer
    a, b = sora_nb.load(t2v, **tiny_options("ltx")), sora_nb.load(i2v, **tiny_options("ltx-i2v"))
    assert a.backend._call_lock is b.backend._call_lock
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    calls = {"a": (a, dict(num_frames=9, steps=8, seed=1)), "b": (b, dict(num_frames=9, steps=5, seed=2, image=image))}
    alone = {key: gen.generate(PROMPT, trace=False, **kw).frames for key, (gen, kw) in calls.items()}
    out = {}

    def run(key):
        gen, kw = calls[key]
        try:
            out[key] = gen.generate(PROMPT, trace=False, **kw).frames
        except Exception as err:  # noqa: BLE001 - what the test reports
            out[key] = err

    threads = [threading.Thread(target=run, args=(key,)) for key in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for key in calls:
        assert isinstance(out[key], np.ndarray), out[key]
        np.testing.assert_array_equal(out[key], alone[key])


@pytest.mark.parametrize("name, part", [("ltx", "vae"), ("ltx", "transformer"), ("wan", "text_encoder"),
                                        ("wan", "tokenizer"), ("wan", "vae"), ("hunyuan", "text_encoder_2")])
def test_a_pipeline_missing_a_component_is_refused_at_load(name, part):
    """A pipeline without its VAE loaded and ran every step before the decode failed (suggesting vae_tiling);
    without a text encoder or transformer it failed inside the pipeline with an AttributeError."""
    pipe = tiny_pipeline(name)
    setattr(pipe, part, None)
    with pytest.raises(ValueError, match=rf"this {type(pipe).__name__} has no {part} \(None\): sora_nb runs the whole"):
        sora_nb.load(pipe, **tiny_options(name))


def test_a_negative_prompt_the_pipeline_would_not_use_is_a_warning(gens):
    """HunyuanVideo's guidance is distilled: its negative prompt needs true_cfg_scale, and without it the clip was
    the same with or without one while params recorded it; other pipelines use it only above guidance 1."""
    import warnings

    hunyuan = gens("hunyuan")
    with pytest.warns(UserWarning, match=r"negative_prompt has no effect on this HunyuanVideo run: its guidance is "
                                         r"distilled .*true_cfg_scale"):
        hunyuan.request(PROMPT, negative_prompt="a dog", guidance=6.0)
    with pytest.warns(UserWarning, match=r"negative_prompt has no effect on this Wan run: guidance is 1 \(it is "
                                         r"used only above 1\)"):
        gens("wan").request(PROMPT, negative_prompt="a dog", guidance=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gens("wan").request(PROMPT, negative_prompt="a dog", guidance=5.0)  # used: no warning
        hunyuan.request(PROMPT, guidance=6.0)


def test_loading_keeps_the_users_progress_bar_settings():
    pipe = tiny_pipeline("ltx")
    pipe.set_progress_bar_config(leave=False, desc="mine")
    sora_nb.load(pipe, **tiny_options("ltx"))
    assert pipe._progress_bar_config == {"leave": False, "desc": "mine", "disable": True}


def test_the_trace_records_the_guidance_each_step_used():
    """trace.guidance was the request's at every step: Wan 2.2's low-noise expert's guidance_scale_2 (below its
    boundary), CogVideoX's dynamic CFG and a guidance <= 1 (no unconditional pass) were recorded as the request's."""
    import copy
    import math

    from diffusers import WanPipeline

    base = tiny_pipeline("wan")
    pipe = WanPipeline(transformer=base.transformer, transformer_2=copy.deepcopy(base.transformer), vae=base.vae,
                       scheduler=base.scheduler, text_encoder=base.text_encoder, tokenizer=base.tokenizer,
                       boundary_ratio=0.9)
    pipe.set_progress_bar_config(disable=True)
    options = tiny_options("wan")
    options["call_kwargs"]["guidance_scale_2"] = 1.0
    v = sora_nb.load(pipe, **options).generate(PROMPT, steps=4, num_frames=5, seed=0, guidance=5.0)
    expected = [5.0 if t >= 900 else 1.0 for t in v.trace.timestep.values]
    assert v.trace.guidance.values.tolist() == expected and 1.0 in expected and 5.0 in expected
    cog = load_tiny("cogvideox", call_kwargs={"max_sequence_length": 16, "use_dynamic_cfg": True})
    v = cog.generate(PROMPT, steps=4, num_frames=9, seed=0, guidance=6.0)
    n = 4
    ts = cog.backend.pipe.scheduler.timesteps.tolist()  # the pipeline's own formula, at its own timesteps
    dynamic = [1 + 6.0 * (1 - math.cos(math.pi * ((n - t) / n) ** 5.0)) / 2 for t in ts]
    np.testing.assert_allclose(v.trace.guidance.values, dynamic, rtol=1e-5)
    off = load_tiny("wan").generate(PROMPT, steps=2, num_frames=5, guidance=0.5)
    assert off.trace.guidance.values.tolist() == [1.0, 1.0]  # diffusers runs no unconditional pass at <= 1


def test_embedded_model_takes_num_frames(gen):
    v = gen.generate(PROMPT, num_frames=8, steps=2, trace=False)
    assert v.frames.shape[0] == 8 and v.params["duration"] == 1.0 and v.params["num_frames"] == 8
    with pytest.raises(ValueError, match="duration and num_frames disagree"):
        gen.generate(PROMPT, num_frames=8, duration=2.0)
    with pytest.raises(ValueError, match=r"num_frames must be an integer in \[1, 32\]"):
        gen.generate(PROMPT, num_frames=40)


def test_a_stochastic_scheduler_the_pipeline_cannot_seed_is_refused():
    """DPM-Solver's sde-dpmsolver++ draws noise at every step; Wan (like LTX, Hunyuan and Mochi) does not pass the
    run's generator to scheduler.step, so that noise came from the global RNG: the same seed gave other clips."""
    from diffusers import DPMSolverMultistepScheduler

    pipe = tiny_pipeline("wan")
    pipe.scheduler = DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++", use_flow_sigmas=True,
                                                 prediction_type="flow_prediction", flow_shift=3.0)
    from sora_nb.testing import tiny_options

    with pytest.raises(ValueError, match=r"algorithm_type='sde-dpmsolver\+\+' draws noise at every step, and "
                                         r"WanPipeline does not pass it the run's generator"):
        sora_nb.load(pipe, **tiny_options("wan"))
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, algorithm_type="dpmsolver++")
    gen = sora_nb.load(pipe, **tiny_options("wan"))
    a, b = (gen.generate(PROMPT, num_frames=5, steps=2, seed=1, trace=False) for _ in range(2))
    assert np.array_equal(a.frames, b.frames)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, algorithm_type="sde-dpmsolver++")
    with pytest.raises(ValueError, match="does not pass it the run's generator"):  # swapped in after load
        gen.generate(PROMPT, num_frames=5, steps=2, seed=1, trace=False)


def test_a_pipeline_folders_clip_records_enough_to_be_made_again(tmp_path, monkeypatch):
    """A folder's clip recorded the path as given (relative: from another working folder reproduce asked the Hub),
    only the scheduler's class (a changed shift went unnoticed), and load() returned the cached pipeline after the
    folder was saved again with other weights. A pipeline object's clip could not be made again with that object."""
    import copy

    from sora_nb.testing import tiny_options

    tiny_pipeline("ltx").save_pretrained(tmp_path / "ltx")
    monkeypatch.chdir(tmp_path)
    gen = sora_nb.load("ltx", **tiny_options("ltx"))
    kw = dict(num_frames=9, steps=2, seed=1, trace=False)
    v = gen.generate(PROMPT, **kw)
    info = v.params["model_info"]
    assert info["folder"] == str((tmp_path / "ltx").resolve()) and v.params["model"] == "ltx"
    assert info["scheduler_config"]["shift"] == gen.backend.pipe.scheduler.config.shift
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    np.testing.assert_array_equal(sora_nb.reproduce(v).frames, v.frames)
    # model= the folder itself, by its absolute path or a copy moved elsewhere: loaded with the recorded options
    # (refused before: "name '/tmp/.../ltx', the clip's 'ltx'", and call_kwargs None)
    import shutil

    shutil.copytree(tmp_path / "ltx", tmp_path / "moved")
    for folder in (tmp_path / "ltx", str(tmp_path / "moved")):
        np.testing.assert_array_equal(sora_nb.reproduce(v, model=folder).frames, v.frames)
    changed = copy.deepcopy(v.params)
    changed["model_info"]["scheduler_config"]["shift"] = 9.0
    with pytest.raises(ValueError, match=r"not the model that made this clip \(scheduler_config "):
        sora_nb.reproduce(changed)
    other = tiny_pipeline("ltx")
    with torch.no_grad():
        for p in other.transformer.parameters():
            p.add_(0.05)
    other.save_pretrained(tmp_path / "ltx")  # other weights into the same folder: loaded anew
    again = sora_nb.load(tmp_path / "ltx", **tiny_options("ltx"))
    assert not np.array_equal(again.generate(PROMPT, **kw).frames, v.frames)
    assert again is sora_nb.load(tmp_path / "ltx", **tiny_options("ltx"))  # and cached while unchanged
    pipe = tiny_pipeline("ltx")
    clip = sora_nb.load(pipe, **tiny_options("ltx")).generate(PROMPT, **kw)
    np.testing.assert_array_equal(sora_nb.reproduce(clip, model=pipe).frames, clip.frames)


def test_a_saved_wan_pipeline_loads(tmp_path):
    """diffusers loads Wan's transformer (it keeps some modules in float32) only with accelerate, which was an
    optional extra: every Wan folder or repo failed with "low_cpu_mem_usage cannot be False"."""
    from sora_nb.testing import tiny_options

    pipe = tiny_pipeline("wan")
    pipe.save_pretrained(tmp_path / "wan")
    gen = sora_nb.load(tmp_path / "wan", **tiny_options("wan"))
    kw = dict(num_frames=5, steps=2, seed=1, trace=False)
    np.testing.assert_array_equal(gen.generate(PROMPT, **kw).frames,
                                  sora_nb.load(pipe, **tiny_options("wan")).generate(PROMPT, **kw).frames)


def test_tiny_options_are_a_deep_copy_and_a_bad_name_is_named():
    """Editing a nested option changed every later tiny_options() (a shallow copy); an unknown name was a bare KeyError."""
    from sora_nb import testing

    opts = tiny_options("hunyuan")
    opts["call_kwargs"]["prompt_template"]["crop_start"] = 99
    assert tiny_options("hunyuan")["call_kwargs"]["prompt_template"] == {"template": "{}", "crop_start": 0}
    assert testing.TINY_OPTIONS["hunyuan"]["call_kwargs"]["prompt_template"]["crop_start"] == 0
    assert tiny_options("cogvideox-dpm") == tiny_options("cogvideox")
    with pytest.raises(ValueError, match=r"unknown tiny pipeline 'foo': use one of wan, "):
        tiny_options("foo")


def _ltx_timestep_conditioned():
    """A tiny LTX pipeline whose VAE is timestep-conditioned (LTX-Video 0.9.1 and later)."""
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline, LTXVideoTransformer3DModel

    from sora_nb.testing import _t5, tokenizer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformer = LTXVideoTransformer3DModel(in_channels=8, out_channels=8, patch_size=1, patch_size_t=1,
                                                 num_attention_heads=4, attention_head_dim=8, cross_attention_dim=32,
                                                 num_layers=1, caption_channels=32)
        vae = AutoencoderKLLTXVideo(latent_channels=8, block_out_channels=(8, 8, 8, 8),
                                    decoder_block_out_channels=(8, 8, 8, 8),
                                    spatio_temporal_scaling=(True, True, True, False),
                                    decoder_spatio_temporal_scaling=(True, True, True, False),
                                    decoder_inject_noise=(False,) * 5, layers_per_block=(1,) * 5,
                                    decoder_layers_per_block=(1,) * 5, patch_size=1, patch_size_t=1,
                                    encoder_causal=True, decoder_causal=False, timestep_conditioning=True)
        vae.use_framewise_encoding = vae.use_framewise_decoding = False
        pipe = LTXPipeline(transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(),
                           text_encoder=_t5(), tokenizer=tokenizer())
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_ltx_decode_timestep_as_the_pipeline_takes_it():
    """LTX's ``decode_timestep`` / ``decode_noise_scale`` are a number or a list (one per prompt): a list was taken at
    load and failed after every step had run, as a DecodeError advising tiling. A list of one draws what the number
    draws (the decode noise is sora_nb's, seeded with 0, so not the bare pipeline's); other values are refused at
    load, by name."""
    pipe = _ltx_timestep_conditioned()
    options = tiny_options("ltx")
    frames = []
    for extra in ({"decode_timestep": [0.05], "decode_noise_scale": [0.025]},
                  {"decode_timestep": 0.05, "decode_noise_scale": 0.025}, {}):
        gen = sora_nb.load(pipe, **{**options, "call_kwargs": {**options["call_kwargs"], **extra}})
        frames.append(gen.generate(PROMPT, num_frames=9, steps=2, seed=0, trace=False).frames)
    assert np.array_equal(frames[0], frames[1]) and not np.array_equal(frames[1], frames[2])
    for bad, message in (({"decode_timestep": [0.05, 0.1]}, r"call_kwargs\['decode_timestep'\] must be a number"),
                         ({"decode_timestep": 2.0}, r"call_kwargs\['decode_timestep'\] must be >= 0 and <= 1, got 2"),
                         ({"decode_noise_scale": "x"}, r"call_kwargs\['decode_noise_scale'\] must be a number")):
        with pytest.raises((TypeError, ValueError), match=message):
            sora_nb.load(pipe, **{**options, "call_kwargs": {**options["call_kwargs"], **bad}})
