"""Tiny diffusers video pipelines built in code: for tests, the bench's ``--tiny`` run and the Colab
notebook's offline stand-in. No Hub, no files: random weights, configs copied from diffusers' own
pipeline tests (``tests/pipelines/<family>/test_<family>.py``), and a byte-level tokenizer
(``transformers.ByT5Tokenizer()``, 384 ids, needs no vocabulary file) for every text encoder.

::

    from sora_nb.testing import tiny_pipeline, TINY_OPTIONS
    pipe = tiny_pipeline("wan")                          # a WanPipeline with random weights
    gen = sora_nb.load(pipe, **TINY_OPTIONS["wan"])      # small default size, short token sequences
    video = gen.generate("a red circle", num_frames=5, steps=2)

They draw noise, not pictures: they test plumbing (shapes, traces, determinism, cancel), never quality.
Building one takes well under a second. Use :func:`tiny_pipeline` (or :func:`load_tiny`): it calls a builder
inside a ``fork_rng`` block (the caller's random state is left alone, the weights are always the same) and leaves
the pipeline as ``from_pretrained`` would (eval mode, progress bar off). The ``tiny_<family>`` builders are its raw
constructors: they seed torch's global RNG themselves and return modules in training mode.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch

FAMILIES = ("wan", "ltx", "cogvideox", "hunyuan", "mochi")

# load() options for the tiny pipelines: a size they run at in milliseconds, short prompts.
TINY_OPTIONS: dict[str, dict[str, Any]] = {
    "wan": dict(default_size=(32, 32), call_kwargs={"max_sequence_length": 16}),
    "wan-i2v": dict(default_size=(32, 32), call_kwargs={"max_sequence_length": 16}),
    "wan-ti2v": dict(default_size=(32, 32), call_kwargs={"max_sequence_length": 16}),
    "ltx": dict(default_size=(32, 32), call_kwargs={"max_sequence_length": 16}),
    "ltx-i2v": dict(default_size=(32, 32), call_kwargs={"max_sequence_length": 16}),
    "cogvideox": dict(default_size=(16, 16), call_kwargs={"max_sequence_length": 16}),
    "cogvideox-i2v": dict(default_size=(16, 16), call_kwargs={"max_sequence_length": 16}),
    "hunyuan": dict(default_size=(16, 16),
                    call_kwargs={"max_sequence_length": 16, "prompt_template": {"template": "{}", "crop_start": 0}}),
    "mochi": dict(default_size=(16, 16), call_kwargs={"max_sequence_length": 16}),
}


def tokenizer() -> Any:
    """A byte-level T5 tokenizer (ids < 384) that needs no files."""
    from transformers import ByT5Tokenizer

    return ByT5Tokenizer()


def _t5(umt5: bool = False) -> Any:
    """A 2-layer T5 (or UMT5) encoder of width 32 over the byte vocabulary."""
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    kw = dict(vocab_size=384, d_model=32, d_ff=37, d_kv=8, num_heads=4, num_layers=2,
              relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return UMT5EncoderModel(UMT5Config(**kw)) if umt5 else T5EncoderModel(T5Config(**kw))


def tiny_wan(*, i2v: bool = False, expand_timesteps: bool = False) -> Any:
    """WanPipeline (or a WanImageToVideoPipeline without image encoder: Wan 2.1-style, the image's latent and
    mask as extra input channels, or with ``expand_timesteps`` Wan 2.2 TI2V-style, the image's latent in the first
    latent frame): 32x32, 4k+1 frames."""
    from diffusers import (AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline, WanPipeline,
                           WanTransformer3DModel)

    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    torch.manual_seed(0)
    text_encoder = _t5(umt5=True)
    torch.manual_seed(0)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
        in_channels=36 if i2v and not expand_timesteps else 16, out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=7.0)
    parts = dict(transformer=transformer, vae=vae, scheduler=scheduler, text_encoder=text_encoder,
                 tokenizer=tokenizer())
    if i2v:
        return WanImageToVideoPipeline(**parts, image_encoder=None, image_processor=None, transformer_2=None,
                                       expand_timesteps=expand_timesteps)
    return WanPipeline(**parts, transformer_2=None)


def tiny_ltx(*, i2v: bool = False) -> Any:
    """LTXPipeline (or LTXImageToVideoPipeline, same components): 32x32, VAE x8 in space and time."""
    from diffusers import (AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXImageToVideoPipeline,
                           LTXPipeline, LTXVideoTransformer3DModel)

    torch.manual_seed(0)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=4, attention_head_dim=8,
        cross_attention_dim=32, num_layers=1, caption_channels=32)
    torch.manual_seed(0)
    vae = AutoencoderKLLTXVideo(
        latent_channels=8, block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
        spatio_temporal_scaling=(True, True, True, False), decoder_spatio_temporal_scaling=(True, True, True, False),
        decoder_inject_noise=(False, False, False, False, False),
        layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1),
        patch_size=1, patch_size_t=1, encoder_causal=True, decoder_causal=False)
    vae.use_framewise_encoding = False
    vae.use_framewise_decoding = False
    torch.manual_seed(0)
    text_encoder = _t5()
    cls = LTXImageToVideoPipeline if i2v else LTXPipeline
    return cls(transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(),
               text_encoder=text_encoder, tokenizer=tokenizer())


def tiny_cogvideox(*, scheduler: str = "ddim", i2v: bool = False) -> Any:
    """CogVideoXPipeline (or CogVideoXImageToVideoPipeline: image latents concatenated, RoPE and learned
    positions, so 16x16 only) with CogVideoX's own DDIM (``"ddim"``, as CogVideoX-2b) or DPM (``"dpm"``, as
    5b) scheduler, configured as the released models (v-prediction, zero terminal SNR): 16x16, 4k+1 frames."""
    from diffusers import (AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXDPMScheduler,
                           CogVideoXImageToVideoPipeline, CogVideoXPipeline, CogVideoXTransformer3DModel)

    torch.manual_seed(0)
    if i2v:
        transformer = CogVideoXTransformer3DModel(
            num_attention_heads=2, attention_head_dim=16, in_channels=8, out_channels=4, time_embed_dim=2,
            text_embed_dim=32, num_layers=1, sample_width=2, sample_height=2, sample_frames=9, patch_size=2,
            temporal_compression_ratio=4, max_text_seq_length=16, use_rotary_positional_embeddings=True,
            use_learned_positional_embeddings=True)
    else:
        transformer = CogVideoXTransformer3DModel(
            num_attention_heads=4, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=2,
            text_embed_dim=32, num_layers=1, sample_width=2, sample_height=2, sample_frames=9, patch_size=2,
            temporal_compression_ratio=4, max_text_seq_length=16)
    torch.manual_seed(0)
    vae = AutoencoderKLCogVideoX(
        in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), latent_channels=4,
        layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4)
    torch.manual_seed(0)
    text_encoder = _t5()
    sched_kw = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                    prediction_type="v_prediction", rescale_betas_zero_snr=True, set_alpha_to_one=True,
                    snr_shift_scale=3.0, timestep_spacing="trailing")
    if scheduler not in ("ddim", "dpm"):
        raise ValueError(f"scheduler must be 'ddim' or 'dpm', got {scheduler!r}")
    sched = (CogVideoXDDIMScheduler if scheduler == "ddim" else CogVideoXDPMScheduler)(**sched_kw)
    cls = CogVideoXImageToVideoPipeline if i2v else CogVideoXPipeline
    return cls(transformer=transformer, vae=vae, scheduler=sched, text_encoder=text_encoder, tokenizer=tokenizer())


def tiny_hunyuan() -> Any:
    """HunyuanVideoPipeline with tiny Llama and CLIP text encoders: 16x16, 4k+1 frames."""
    from diffusers import (AutoencoderKLHunyuanVideo, FlowMatchEulerDiscreteScheduler, HunyuanVideoPipeline,
                           HunyuanVideoTransformer3DModel)
    from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel

    torch.manual_seed(0)
    transformer = HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=1,
        num_single_layers=1, num_refiner_layers=1, patch_size=1, patch_size_t=1, guidance_embeds=True,
        text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(2, 4, 4))
    torch.manual_seed(0)
    vae = AutoencoderKLHunyuanVideo(
        in_channels=3, out_channels=3, latent_channels=4, down_block_types=("HunyuanVideoDownBlock3D",) * 4,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        act_fn="silu", norm_num_groups=4, scaling_factor=0.476986, spatial_compression_ratio=8,
        temporal_compression_ratio=4, mid_block_add_attention=True)
    common = dict(bos_token_id=0, eos_token_id=2, intermediate_size=37, layer_norm_eps=1e-05, num_attention_heads=4,
                  num_hidden_layers=2, pad_token_id=1, vocab_size=1000, hidden_act="gelu")
    torch.manual_seed(0)
    text_encoder = LlamaModel(LlamaConfig(hidden_size=16, **common))
    torch.manual_seed(0)
    text_encoder_2 = CLIPTextModel(CLIPTextConfig(hidden_size=8, projection_dim=32, **common))
    return HunyuanVideoPipeline(transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
                                text_encoder=text_encoder, tokenizer=tokenizer(), text_encoder_2=text_encoder_2,
                                tokenizer_2=tokenizer())


def tiny_mochi() -> Any:
    """MochiPipeline: 16x16, 6k+1 frames."""
    from diffusers import AutoencoderKLMochi, FlowMatchEulerDiscreteScheduler, MochiPipeline, MochiTransformer3DModel

    torch.manual_seed(0)
    transformer = MochiTransformer3DModel(
        patch_size=2, num_attention_heads=2, attention_head_dim=8, num_layers=2, pooled_projection_dim=16,
        in_channels=12, out_channels=None, qk_norm="rms_norm", text_embed_dim=32, time_embed_dim=4,
        activation_fn="swiglu", max_sequence_length=16)
    torch.manual_seed(0)
    vae = AutoencoderKLMochi(latent_channels=12, out_channels=3, encoder_block_out_channels=(32, 32, 32, 32),
                             decoder_block_out_channels=(32, 32, 32, 32), layers_per_block=(1, 1, 1, 1, 1))
    torch.manual_seed(0)
    text_encoder = _t5()
    return MochiPipeline(transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(),
                         text_encoder=text_encoder, tokenizer=tokenizer())


BUILDERS: dict[str, Callable[[], Any]] = {
    "wan": tiny_wan,
    "wan-i2v": lambda: tiny_wan(i2v=True),
    "wan-ti2v": lambda: tiny_wan(i2v=True, expand_timesteps=True),
    "ltx": tiny_ltx,
    "ltx-i2v": lambda: tiny_ltx(i2v=True),
    "cogvideox": tiny_cogvideox,
    "cogvideox-dpm": lambda: tiny_cogvideox(scheduler="dpm"),
    "cogvideox-i2v": lambda: tiny_cogvideox(i2v=True),
    "hunyuan": tiny_hunyuan,
    "mochi": tiny_mochi,
}


def tiny_pipeline(name: str) -> Any:
    """A tiny pipeline by name (``BUILDERS``: wan, wan-i2v, wan-ti2v, ltx, ltx-i2v, cogvideox, cogvideox-dpm,
    cogvideox-i2v, hunyuan, mochi) in float32 on the CPU, in eval mode (as ``from_pretrained`` leaves
    them), progress bar off; the caller's RNG state is untouched."""
    if name not in BUILDERS:
        raise ValueError(f"unknown tiny pipeline {name!r}: use one of {', '.join(BUILDERS)}")
    with torch.random.fork_rng(devices=[]):
        pipe = BUILDERS[name]()
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.eval()  # built by constructors, so in training mode: T5's dropout would draw random numbers
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_options(name: str) -> dict[str, Any]:
    """The :func:`sora_nb.load` options that suit ``tiny_pipeline(name)`` (a copy)."""
    if name not in BUILDERS:
        raise ValueError(f"unknown tiny pipeline {name!r}: use one of {', '.join(BUILDERS)}")
    return copy.deepcopy(TINY_OPTIONS[name.replace("-dpm", "")])  # (a nested dict edited would change them all)


def load_tiny(name: str = "wan", **options: Any) -> Any:
    """``sora_nb.load(tiny_pipeline(name), **tiny_options(name), **options)``."""
    from .api import load

    return load(tiny_pipeline(name), **{**tiny_options(name), **options})
