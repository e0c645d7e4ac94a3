"""More diffusers-backend checks (tiny pipelines built in code, CPU): the same seed gives the same frames on every
generate, whatever torch's global RNG and the modules' training flags are; LTX-Video's frame rate is never 0."""

import warnings

import numpy as np
import torch

import sora_nb
from sora_nb.testing import tiny_options, tiny_pipeline, tiny_wan

PROMPT = "a red circle moving right"


def _ltx_with_noise_injecting_vae():
    """The tiny LTX pipeline with an LTX-Video 0.9.1-style VAE: timestep-conditioned, its decoder injecting noise
    (drawn inside ``vae.decode`` with no generator, from torch's global RNG), the noise scales made non-zero."""
    from diffusers import AutoencoderKLLTXVideo

    pipe = tiny_pipeline("ltx")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vae = AutoencoderKLLTXVideo(
            latent_channels=8, block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
            spatio_temporal_scaling=(True, True, True, False), decoder_spatio_temporal_scaling=(True, True, True, False),
            decoder_inject_noise=(True, True, True, True, False), timestep_conditioning=True,
            layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1),
            patch_size=1, patch_size_t=1, encoder_causal=True, decoder_causal=False).eval()
    for module in vae.modules():
        for name in ("per_channel_scale1", "per_channel_scale2"):
            if getattr(module, name, None) is not None:
                torch.nn.init.constant_(getattr(module, name), 0.5)
    vae.use_framewise_encoding = vae.use_framewise_decoding = False
    pipe.vae = vae
    return pipe


def test_a_noise_injecting_ltx_vae_decodes_the_same_frames_every_time():
    """LTX-Video 0.9.1's VAE adds noise while decoding, from torch's global RNG: the same seed gave the same latents
    but frames up to ~200 levels apart on each generate, and every decode moved the caller's random stream."""
    gen = sora_nb.load(_ltx_with_noise_injecting_vae(), **tiny_options("ltx"))
    a = gen.generate(PROMPT, num_frames=9, steps=2, seed=1, trace=False)
    torch.manual_seed(1234)  # whatever the global RNG holds
    b = gen.generate(PROMPT, num_frames=9, steps=2, seed=1, trace=False)
    assert torch.equal(a.latents, b.latents)
    assert np.array_equal(a.frames, b.frames)
    state = torch.random.get_rng_state()
    again = gen.backend.decode(a.latents, 9)
    assert np.array_equal(again, a.frames)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random stream is left alone


def test_a_pipeline_in_training_mode_gives_the_same_clip_for_the_same_seed():
    """A pipeline built from constructors (or a transformer left in train() by fine-tuning) has dropout on, drawn from
    torch's global RNG: two generates with one seed gave two clips. Runs use eval mode; the modules' own modes stay."""
    pipe = tiny_wan()  # the raw constructor: modules in training mode
    assert pipe.text_encoder.training and pipe.transformer.training
    gen = sora_nb.load(pipe, **tiny_options("wan"))
    kw = dict(num_frames=5, steps=2, seed=1, guidance=3.0)
    a = gen.generate(PROMPT, **kw)
    b = gen.generate(PROMPT, **kw)
    assert torch.equal(a.latents, b.latents) and np.array_equal(a.frames, b.frames)
    # the same clip as the pipeline in eval mode draws, and the user's modes are put back
    assert all(m.training for name in ("text_encoder", "transformer", "vae") for m in getattr(pipe, name).modules())
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.eval()
    c = gen.generate(PROMPT, **kw)
    assert torch.equal(a.latents, c.latents) and np.array_equal(a.frames, c.frames)


def test_ltx_at_a_frame_rate_under_half_a_frame_a_second_runs():
    """LTX-Video gets ``frame_rate=round(fps)``: a load with fps=0.4 passed 0, and the pipeline divided by it
    (ZeroDivisionError after the prompt was encoded)."""
    gen = sora_nb.load(tiny_pipeline("ltx"), fps=0.4, **tiny_options("ltx"))
    assert gen.backend.call_arguments(gen.request(PROMPT, num_frames=9))["frame_rate"] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        video = gen.generate(PROMPT, num_frames=9, steps=1, trace=False)
    assert video.frames.shape == (9, 32, 32, 3)
