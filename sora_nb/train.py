"""Train the embedded model from the shapes world: ``python -m sora_nb.train`` (or ``sora-nb train``).

The recipe, in stages, each resumable from its checkpoint in ``--out``:

1. ``vae``: the video autoencoder, on clips rendered on the fly (pixel L1 + L2 loss).
   ``vae_smooth`` (off) adds a penalty on the latent's high-frequency power (:func:`roughness`):
   the shipped latent keeps 41% of its spatial power above half the Nyquist frequency where the
   pooled pictures keep 5% (``bench/bench_latent.py``). Weights 0.1 and 0.5 halve that share but cost
   3.4-4.1 dB of PSNR, and after 1000 DiT steps the clips were no better (0.5: worse, with a visible
   4-pixel grid), so it stays off.
   ``shape_channels`` (off) fills the latent's last five channels with each shape's coverage of the
   cell, from the world's labels; ``shape_layout`` (off, with it) also shows the encoder every object
   as a disc of its size and colour (`canvas.disc_layout`), so the latent holds where, how large and
   what colour, and the shape channels alone hold which outline. The decoder must then draw the
   outline: the decoder stage below deepens it (``dec_blocks``), weights object pixels up
   (``dec_object_weight``) and can blur its input (``dec_blur``) so that the DiT's ragged blobs decode
   as clean shapes. On the course recipe this raised generated shape from 0.29 to 0.73
   (bench/RESULTS.md, twelfth session). The labels exist only for the world's clips, so that encoder
   cannot encode other video; ``pix_steps`` (stage 5) trains one that can. ``shape_angle`` (off, with
   ``shape_layout``) gives two more label channels, before the shape channels, each disc's orientation
   (`canvas.angle_maps`): a disc has none, so without them a spinning outline decodes as a still one.
   ``dec_steps`` > 0 adds a decoder stage after it: the decoder alone, the encoder frozen.
2. ``cache``: encode a fixed set of training clips once; measure the latent mean / std.
3. ``text``: pre-train the text encoder on captions alone (no pixels, seconds): small probe heads
   must read every object's shape, colour, motion and size, the background, the wall and the object
   count back out of its token states. A text encoder trained from scratch inside the DiT gave the
   DiT nothing to attend to for thousands of steps; this one arrives knowing the words.
4. ``dit``: the diffusion transformer and the text encoder, with rectified-flow matching on the
   cached latents normalised per channel (x_t = (1 - s) x0 + s noise). The network predicts the
   clean latent x0 (x-prediction, as in "Back to Basics: Let Denoising Generative Models Denoise",
   Li & He 2025) over (1, 2, 2) spacetime patches (64 values per token, inside the 128-wide
   transformer) and is trained with the plain x0 loss |x0_hat - x0|^2 (``loss_floor=1``). The
   velocity loss |v_hat - v|^2 = |x0_hat - x0|^2 / s^2 (``loss_floor=0.05``) weighs the nearly
   clean levels up to 400 times more than the noisy ones, where the layout and colours of a clip are
   decided; at equal steps it followed the prompt far less (colour 0.14 against 0.40 after 1000
   steps). Noise levels half logit-normal (shifted toward noise) and half uniform, 10% caption
   dropout (the empty prompt is the unconditional branch of classifier-free guidance), the probe
   loss kept on at a small weight, an EMA of the weights. The DiT's matrix products run in bfloat16
   under autocast (``bf16``; attention and the loss stay float32) where the device multiplies bfloat16
   natively (``bf16="auto"``, the default; `native_bf16`): on a CPU with AMX that is 1.15x faster per
   step at equal quality after 1000 steps, while on a CPU that emulates bfloat16 a step takes about twice
   as long as in float32 (1.08 against 0.50 s, forty-ninth session), so there it stays float32. ``torch.compile`` of the DiT gave no gain on this CPU
   (``bench/bench_compile.py``: 278 against 270 ms a step, after 110 s of compiling), so it is not used; nor did
   the self-attention's products in bfloat16 (twenty-sixth session, bench/RESULTS.md). ``self_condition`` (feeding the model its own
   previous x0 estimate) is available but off: it cost 1.15x per step and gave no measurable gain.
   ``dit_rope`` (rotary 3D positions in self-attention) is available but off: 4% lower loss at equal
   steps, no measurable change in the evaluator's scores after 1000 steps.
   ``vae_spatial`` / ``vae_channels`` / ``dit_patch`` pick the latent grid: the default is a 4x
   autoencoder with 16 channels and (1, 2, 2) patches; an 8x autoencoder with 32 channels and one
   cell per token gives the DiT the same 8x8-pixel tokens and the same token count. ``vae_temporal``
   (frames per latent frame, 4) with ``dit_patch``'s frames does the same in time: ``vae_temporal=2`` and
   (2, 2, 2) patches keep 4-frame tokens, and the latent keeps twice the frames of motion.
   Fine-tuning: ``init_from`` starts this stage from a weights folder (its DiT, text encoder and
   latent statistics; no text pre-training). ``shape_contrast`` (off) adds the shape-word contrast
   of :func:`shape_contrast_loss` (``shape_margin``; ``shape_sigma`` restricts it to noisy rows).
   Fine-tunes of the shipped DiT with it widened the error gap a wrong shape word makes
   (``bench/bench_reads.py``: 2.6% to 5-9%) but hardly moved the shapes sampled, and cost motion,
   count or colour (``bench/RESULTS.md``), so it stays off. ``--rescore WEIGHTS --tune-dit`` (`tune_dit`,
   ``ft_steps``) fine-tunes a finished folder's DiT and text encoder this way on a fresh cache (``ft_cache_seeds``)
   in its own latent: 4000 steps on 17,000 clips took the shipped model's every-check share from 0.44 to 0.46
   (train), 0.275 to 0.345 and 0.31 to 0.365 (held out), motion from 0.72 to 0.78 (bench/RESULTS.md, eighteenth
   session). ``ft_depth`` grows the DiT first (`ShapesDiT.grown`): the same 4000 steps on the same batches at
   depth 9 instead of 6 gave the same loss (within 2% after step 1000) and the same scores (nineteenth session).
   ``count_weights`` (equal: off) draws the cached clips by their object count (`batch_draw`): drawing two- and
   three-object clips 1.2x and 1.8x as often (weights 1/2/3) in an ``ft_chain`` fine-tune left every check within
   noise, and those prompts did no better (twenty-third session). ``occluder_weight`` (1: off) draws clips with the
   occluder bar that many times as often: 3 (a third of the rows instead of a sixth) in an ``ft_chain`` fine-tune left
   the bar clips' ghost tracks (`bench/bench_occluder.py`) at 36 against 35, while the same stage without it gave 19,
   and every check within noise (twenty-seventh session). ``ft_level_weights`` draws an ``ft_chain`` fine-tune's noise
   levels by a profile (`level_weights`), e.g. ``[[0.9,1],[0.6,3]]``: the levels from 0.9 down to 0.6, where the
   sampler loses the clip's content (``bench/bench_redraw.py``), three times as often. ``expert_switch`` S > 0
   makes such a fine-tune one of two DiTs by noise level (`rescore`): with ``ft_expert`` "low" a low-noise expert
   (``low/``, the steps at or below S; the shipped one, thirty-third session, drew only those levels), with "high"
   the folder's main DiT again, for the steps above S, its ``low/`` kept; ``ft_from`` "low" starts it from the
   folder's expert instead of its main DiT (a continuation). The chain's teacher is the folder's main DiT at every
   level (one with both DiTs, each at its own levels, made a worse expert: bench/RESULTS.md, thirty-fourth session).
   ``motion_weight`` (0: off) adds :func:`frame_difference_loss` at that weight: the error of the change between
   adjacent latent frames, which the plain x0 loss weighs no more than an error every frame shares. At weight 1 it
   drew more motion and worse shapes, every check level (the course recipe's 4000 DiT steps on the 4x and on the 2x
   latent, and the shipped expert's fine-tune: bench/RESULTS.md, forty-second session), so it is off.
5. ``pixels`` (``pix_steps`` > 0, with ``shape_layout``): the encoder alone, deepened to ``pix_blocks``,
   learns to give from a clip's true frames the latent the labels give (:func:`train_pixel_encoder`), so
   the exported autoencoder encodes any video of the world. It runs after the decoder stage and before the
   cache (the cache keeps the disc encoder's latent), so the DiT is the last stage and ``train_minutes``
   can give it what the others leave. The latent cache, the decoder and the DiT are unchanged by it.
6. ``chain`` (optional: ``ft_chain`` N > 0 and ``ft_steps`` > 0 in a full run; `chain_stage`): the DiT stage's
   networks fine-tuned on their own N-step sampler's inputs, as ``--tune-dit`` does to a finished folder, on
   ``ft_cache_seeds``' clips through the exported encoder (encoded before the DiT stage, which leaves
   ``CHAIN_STEP_COST * ft_steps`` of its steps of the hour to it). It is not in the course preset: on the course
   recipe, 5000 DiT steps then 1500 chain steps (7175 DiT steps' worth) gave every check .33 / .24 / .32 against
   .345 / .29 / .345 for 7000 DiT steps alone (bench/RESULTS.md, twenty-sixth session).
7. ``export``: fit the latent-to-RGB preview map, write the weights folder (safetensors + sha256
   manifest + model card) and score the result with the shapes world's evaluator.

``--preset course`` (the default of a full run) sets the shipped model's architecture: the layout latent
with angle channels, the decoder and pixel-encoder stages, rotary positions, ``text_pretrained`` (the frozen
all-MiniLM-L6-v2 under a stack trained with the DiT; the text stage trains the stack and probe on its states of
``adapt_pool`` captions, computed once) and the guidance profile, with ``train_minutes=60``: the DiT trains for
whatever the hour leaves, up to ``dit_steps`` (7000; its step count, fixed at its step 100 from the pace, goes into
``recipe.json``; set ``dit_steps`` to it and ``train_minutes=0`` to rerun the same steps on any machine). Every
``REFIT_EVERY`` steps after that it is fitted again (never above ``dit_steps``) at the mean pace since step 20:
the pace drifts (0.57 s a step at step 100, 0.59 over the fifty-first session's run, which ended 1.1 min over
the hour without this; the fifty-second session's, refitting from 3900 to 3668 steps, trained 60.1 min in
all). The fixed-step stages before it each have a share of the hour (``vae_share`` .10,
``dec_share`` .20, ``pix_share`` .05; `PartBudget`): one whose pace at its step 25 would overrun its share runs
the steps that fit instead, and ``recipe.json`` records them too. On the forty-ninth session's host, which had
no AMX, those stages took 36 of the 60 minutes and left the DiT 2620 of its 7000 steps. The decoder's share is
the largest because it bounds every clip (cut from 1200 to 964 steps, its round trip passed every check in .570
of train prompts against .635); the pixel encoder's is the smallest because generation never uses it
(fifty-first session, bench/RESULTS.md). ``--preset plain`` is the dataclass's defaults. The shipped weights
took 285 min of further stages on top (their model card).

On a GPU: ``--set device='"cuda"'`` encodes the cache and trains the DiT there (``cache_workers``
processes encode the cache's entries in parallel), and ``dit_seconds`` fits the DiT's step count to a
wall budget (``ft_seconds`` a fine-tune's). ``scripts/train_gpu.py`` trains several variants side by side that
way (how the shipped DiT was made; ``bench/RESULTS.md``); ``scripts/tune_gpu.py`` fine-tunes the shipped DiT there
in variants side by side, and the same ``--rescore --tune-dit`` call exports each back on a CPU from its finished
stage alone (`finished_stage`: no cache is built again).

Every random draw comes from a ``torch.Generator`` / ``numpy.random.Generator`` seeded from
``--seed`` and the step number, so a run (and a resumed run) is deterministic on a given machine.
Progress (losses, timings, scores) goes to ``--out/log.jsonl`` and stdout; a resumed stage first logs
``{"stage": "resume", "of": <stage>, "step": <its checkpoint's step>}``; a stage an earlier call finished is
loaded, not trained again, and logs ``{"stage": "reused", "folder": <its folder>, "steps": <the steps it ran>}``
(a reloaded latent cache ``"clips": <the clips it holds>`` instead of steps; the text stage, its folder alone).

Checkpoints hold tensors in safetensors and everything else in JSON: no pickle anywhere. Each checkpoint and
finished stage is written whole (`atomic_folder`), so a run killed at any moment resumes from the last whole one.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler
from safetensors.torch import load_file, save_file

from ._checks import check_bool, check_choice, check_float, check_int
from ._files import COMPLETE, atomic_file, atomic_folder, recover_folder  # noqa: F401  (COMPLETE: tests)
from .backends import embedded
from .models import AdaptedEncoder, ShapesDiT, TextEncoder, VideoAutoencoder, build_adapted
from .models.text import PRETRAINED
from .world import canvas, language, sampler as world_sampler, spec


def native_bf16(device: str) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices natively, so that the DiT's autocast (``Recipe.bf16``) pays:
    a CUDA GPU that supports bfloat16, or a CPU with AVX512-BF16 or AMX (a step 1.15x faster than float32 on
    AMX). Elsewhere oneDNN emulates bfloat16 and a step is slower: on the forty-ninth session's 2-core AVX-512 CPU
    without either, 1.08 s against 0.50 s in float32 (bench/RESULTS.md)."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if kind != "cpu":
        return False
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(bool(check()) for check in checks if check is not None)


# Each simple field's kind and range, checked first in `Recipe.__post_init__` (the rules between fields follow).
# ("int", lo, hi), ("float", lo, hi, lo_open), ("bool",), ("choice", options)
RECIPE_RANGES: dict[str, tuple] = {
    "seed": ("int", 0, 2**63 - 1),
    "vae_steps": ("int", 0, 10_000_000), "vae_batch": ("int", 1, 4096), "vae_lr": ("float", 0.0, 10.0, True),
    "vae_channels": ("int", 1, 1024), "vae_hidden": ("int", 1, 4096), "vae_spatial": ("int", 1, 64),
    "vae_smooth": ("float", 0.0, 1e6, False),
    "text_steps": ("int", 0, 10_000_000), "text_batch": ("int", 1, 65536), "text_lr": ("float", 0.0, 10.0, True),
    "probe_weight": ("float", 0.0, 1e6, False), "text_width": ("int", 1, 8192), "text_layers": ("int", 1, 64),
    "dit_steps": ("int", 0, 10_000_000), "dit_batch": ("int", 1, 65536), "dit_lr": ("float", 0.0, 10.0, True),
    "dit_warmup": ("int", 0, 10_000_000), "caption_dropout": ("float", 0.0, 1.0, False),
    "sigma_shift": ("float", -10.0, 10.0, False), "ema_decay": ("float", 0.0, 0.999999, False),
    "dit_hidden": ("int", 1, 8192), "dit_depth": ("int", 1, 128), "dit_heads": ("int", 1, 128),
    "loss_floor": ("float", 0.0, 100.0, True), "latent_norm": ("choice", ("channel", "global")),
    "self_condition": ("bool",), "dit_rope": ("bool",),
    "eval_clips": ("int", 1, 100_000), "guidance_clips": ("int", 1, 100_000),
    "log_every": ("int", 1, 10**12), "ckpt_every": ("int", 1, 10**12),  # a huge count: never (scripts/train_gpu.py)
}


def _int_tuple(name: str, value: Any, length: int, what: str) -> tuple[int, ...]:
    """``length`` integers >= 1 (a list from JSON, or a tuple)."""
    if (isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or len(value) != length
            or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 64 for v in value)):
        raise ValueError(f"{name} must be {length} integers in [1, 64] ({what}), got {value!r}")
    return tuple(int(v) for v in value)


class RefusedInput(ValueError):
    """A command-line input refused before any work (``main`` reports it as a usage error, exit status 2)."""


@dataclasses.dataclass
class Recipe:
    """Every knob of a training run (all saved in the model card)."""

    seed: int = 0
    # autoencoder
    vae_steps: int = 600
    vae_batch: int = 8
    vae_lr: float = 2e-3
    vae_channels: int = 16         # latent channels
    vae_hidden: int = 64           # width of the autoencoder's convolutions at latent resolution
    vae_spatial: int = 4           # spatial compression (pixels per latent cell along each axis)
    vae_temporal: int = 4          # temporal compression (frames per latent frame); with dit_patch's frames > 1 the
                                   # DiT's tokens still span vae_temporal * dit_patch[0] frames
    vae_smooth: float = 0.0        # weight of the latent's high-frequency penalty (roughness; off)
    shape_channels: bool = False   # the latent's last len(SHAPES) channels are each shape's coverage of the cell,
                                   # from the world's labels (a diagnostic, off; see shape_cells)
    shape_layout: bool = False     # with shape_channels: objects enter the encoder as discs, so the outline can
                                   # come only from the shape channels (off; see canvas.disc_layout)
    shape_angle: bool = False      # with shape_layout: two more label channels, before the shape channels, say
                                   # which way each outline points (canvas.angle_maps), so spin can be drawn (off)
    dec_steps: int = 0             # then the decoder alone, the encoder (so the latent) frozen (0: off)
    dec_lr: float = 3e-4
    dec_noise: float = 0.05        # latent noise in the decoder stage, times the batch's latent std
    dec_blocks: int = 1            # the decoder stage deepens the decoder to this many residual blocks (new ones
                                   # start as the identity)
    dec_object_weight: float = 0.0  # extra loss weight, in the decoder stage, on pixels an object covers (or its
                                    # disc, with shape_layout)
    dec_blur: float = 0.0          # the decoder stage sets the decoder's input blur (VideoAutoencoder.decode_blur,
                                   # sigma in latent cells; 0: keep the autoencoder's own)
    dec_seed: int | None = None    # the decoder stage's clips and latent noise (None: the run's seed); a second
                                   # decoder stage on a folder (--rescore --tune-decoder) draws new clips with another
    pix_steps: int = 0             # with shape_layout: a last stage trains the encoder on the true frames to give
                                   # their layout latent, so the finished autoencoder encodes any video (0: off)
    pix_blocks: int = 3            # the pixel encoder's residual blocks (a wider view: an outline spans cells)
    pix_lr: float = 1e-3
    # with train_minutes: the most of the hour each fixed-step stage may take; at its step 25 a stage whose pace
    # would overrun its share cuts its step count to fit (`PartBudget`), so a slow machine leaves the DiT its
    # share (0: no cap). A fast machine runs the counts above unchanged.
    vae_share: float = 0.0
    dec_share: float = 0.0
    pix_share: float = 0.0
    # latent cache: (duration s, width, height, clips)
    cache: tuple[tuple[float, int, int, int], ...] = ((2.0, 64, 64, 6000), (1.0, 64, 64, 1000),
                                                      (2.0, 96, 64, 1000), (4.0, 64, 64, 500))
    # text encoder pre-training on captions (probe heads)
    text_steps: int = 1500
    text_batch: int = 64
    text_lr: float = 1e-3
    probe_weight: float = 0.1      # the probe loss, kept on during DiT training
    # diffusion transformer
    dit_steps: int = 7000
    dit_batch: int = 16
    dit_lr: float = 6e-4
    dit_warmup: int = 200
    caption_dropout: float = 0.1
    sigma_shift: float = 0.8       # mean of the logit-normal half of the noise levels (> 0: noisier)
    ema_decay: float = 0.998
    dit_hidden: int = 128
    dit_depth: int = 6
    dit_heads: int = 4
    dit_patch: tuple[int, int, int] = (1, 2, 2)  # latent cells per token (frames, y, x)
    loss_floor: float = 1.0        # the x0 loss is weighted 1/max(sigma, floor)^2: 1.0 = plain x0 MSE
    motion_weight: float = 0.0     # weight of the frame-difference loss (`frame_difference_loss`; 0: off)
    latent_norm: str = "channel"   # "channel": unit variance per latent channel; "global": one scale
    self_condition: bool = False   # the DiT also reads its own previous x0 estimate (half the batches)
    dit_rope: bool = False         # rotary 3D positions in the DiT's self-attention
    bf16: bool | str = "auto"      # the DiT's matrix products in bfloat16 (autocast; attention stays float32); "auto":
                                   # where the device multiplies bfloat16 natively (`native_bf16`), resolved at once
    shape_contrast: float = 0.0    # weight of the shape-word contrast (0: off; see shape_contrast_loss)
    shape_margin: float = 0.1      # the relative error gap the contrast asks of a caption with a wrong shape word
    shape_sigma: float = 0.0       # the contrast counts only rows at noise levels >= this (where outlines form)
    init_from: str = ""            # a weights folder whose DiT and text encoder the DiT stage starts from (fine-tune)
    # a DiT fine-tune of a finished folder (``--rescore WEIGHTS --tune-dit``; `tune_dit`)
    ft_steps: int = 0              # its steps (0: none)
    ft_lr: float = 2e-4            # its peak learning rate (warm-up, then cosine to 10%)
    ft_warmup: int = 100
    ft_seconds: float = 0.0        # > 0: its wall budget; ft_steps is cut to fit it (decided at its step 100), as dit_seconds
    ft_seed: int = 2               # seeds its batches and noise (the first DiT stage's came from ``seed``)
    ft_cache_seeds: tuple[int, ...] = (0, 1)  # its latent cache: the ``cache`` entries drawn with each of these seeds
    ft_depth: int = 0              # grow the DiT to this many blocks first (`ShapesDiT.grown`; 0: keep its depth)
    ft_distil: int = 0             # N > 0: distil the folder's 2N-step sampler into N steps instead (`distil_targets`)
    ft_chain: int = 0              # N > 0: half the rows start from the folder's own N-step sampler (`sampler_inputs`)
    ft_level_weights: tuple[tuple[float, float], ...] = ()  # ft_chain draws its grid's levels by noise level with
                                   # these weights, [[sigma_above, weight], ...] read as a guidance profile (the first
                                   # pair with sigma > sigma_above, else 1; `level_weights`); (): every level alike
    expert_switch: float = 0.0     # > 0 with --tune-dit: the fine-tune becomes the folder's low-noise expert, taking
                                   # the steps at or below this sigma, the folder's DiT the rest; 0: it replaces the DiT
    ft_expert: str = "low"         # with expert_switch > 0, which of the two DiTs a --tune-dit fine-tune becomes:
                                   # "low" (a new low-noise expert from the folder's main DiT) or "high" (the main DiT
                                   # itself, fine-tuned for the steps above the switch; the folder's low/ is kept)
    ft_from: str = "main"          # which of the folder's DiTs (and text stacks) a --tune-dit fine-tune starts from:
                                   # "main" (dit/), or "low" (its low-noise expert: a continuation of it, ft_expert "low")
    count_weights: tuple[float, ...] = (1.0, 1.0, 1.0)  # the DiT stage draws a cached clip of 1, 2, 3 objects with
                                   # these relative weights (`clip_weights`; equal: every clip alike, as before)
    occluder_weight: float = 1.0   # and a clip with the occluder bar this many times as often (1: as any other)
    text_width: int = 128
    text_layers: int = 2
    text_pretrained: str = ""      # a full run's text encoder: "" a word-level T5 trained from scratch, else a frozen
                                   # pretrained encoder (models.text.PRETRAINED) under a trained stack (`build_adapted`)
    adapt_steps: int = 0           # > 0 with --tune-dit: first swap in the adapted text encoder (`adapt_text`)
    adapt_lr: float = 1e-3
    adapt_batch: int = 64
    adapt_pool: int = 8000         # training captions whose frozen states it trains on
    device: str = "cpu"            # where the cache is encoded and the DiT trains ("cuda" on a GPU)
    dit_seconds: float = 0.0       # > 0: a wall budget; dit_steps is cut to fit it (decided at step 100)
    train_minutes: float = 0.0     # > 0: a full run's training budget; the DiT gets what the stages before it leave
    cache_workers: int = 1         # processes encoding the cache entries (the cache is the same for any count)
    # evaluation
    eval_clips: int = 200
    sample_eta: float = 1.0        # the exported model's default sampler noise per step (Request.eta; 1: re-noise
                                   # every step, which scored better than the deterministic sampler on the shipped DiT)
    sample_shift: float = 6.0      # the exported scheduler's shift (> 1: more of the steps at high noise; with
                                   # eta 1, 3 to 10 scored better than 1 on the shipped DiT)
    sample_guidance_profile: tuple[tuple[float, float], ...] = ()  # the exported model's guidance by noise level:
                                   # [[sigma_above, weight], ...], guidance 1 + weight (g - 1) at those steps
                                   # (embedded.check_guidance_profile); () is plain guidance at every step
    sample_retries: int = 3        # with shape_layout: the exported model's default Request.retries (redraws of a clip
                                   # whose object count changes between latent frames; 0 to embedded.MAX_RETRIES)
    layout_threshold: float = 0.2  # with shape_layout: the summed shape coverage that makes a latent cell an
                                   # object's, for that layout check (the manifest's layout_check)
    sample_redraw_share: tuple[float, ...] = (0.6, 0.4)  # with shape_layout: each redraw's steps as a share of the
                                   # request's, the last repeating (the manifest's redraw_share; on the shipped model
                                   # a first redraw in 12 of 20 scored as one in 20, a second in 8 as one in 12)
    guidance_candidates: tuple[float, ...] = (1.5, 2.0, 3.0, 5.0)  # the model's default guidance is the best
    guidance_clips: int = 48                                        # of these on this many clips
    log_every: int = 50
    ckpt_every: int = 250

    @property
    def pixel_latent(self) -> bool:
        """Whether the exported autoencoder's encoder reads the true frames (the pixel-encoder stage ran after a
        layout latent): a later decoder stage or DiT fine-tune then trains on `pixel_label_latent`, as the disc
        encoder is no longer in the folder."""
        return self.shape_layout and self.pix_steps > 0

    def __post_init__(self) -> None:
        """Refuse bad values before any stage starts: each field's kind and range (`RECIPE_RANGES`), then the
        rules between fields."""
        for name, rule in RECIPE_RANGES.items():
            value = getattr(self, name)
            if rule[0] == "int":
                check_int(name, value, rule[1], rule[2])
                setattr(self, name, int(value))
            elif rule[0] == "float":
                setattr(self, name, check_float(name, value, rule[1], rule[2], lo_open=rule[3]))
            elif rule[0] == "bool":
                check_bool(name, value)
            else:  # "choice"
                check_choice(name, value, rule[1])
        self.dit_patch = _int_tuple("dit_patch", self.dit_patch, 3, "(frames, y, x) latent cells per token")
        if self.dit_hidden % self.dit_heads:
            raise ValueError(f"dit_hidden must be a multiple of dit_heads ({self.dit_heads}), got {self.dit_hidden}")
        candidates = self.guidance_candidates
        if (isinstance(candidates, (str, bytes)) or not isinstance(candidates, (list, tuple)) or not candidates):
            raise ValueError(f"guidance_candidates must be a non-empty list of guidance scales in [0, 50], got {candidates!r}")
        self.guidance_candidates = tuple(check_float("guidance_candidates[]", g, 0.0, 50.0) for g in candidates)
        cache = self.cache
        if isinstance(cache, (str, bytes)) or not isinstance(cache, (list, tuple)) or not cache:
            raise ValueError(f"cache must be a non-empty list of [duration s, width, height, clips], got {cache!r}")
        from .world.spec import DURATION_RANGE

        entries = []
        for i, entry in enumerate(cache):
            if isinstance(entry, (str, bytes)) or not isinstance(entry, (list, tuple)) or len(entry) != 4:
                raise ValueError(f"cache[{i}] must be [duration s, width, height, clips], got {entry!r}")
            # the world draws 1 to 4 s clips: a shorter entry failed after the autoencoder stages, and the folder
            # then refused the corrected recipe
            duration = check_float(f"cache[{i}] duration", entry[0], *DURATION_RANGE, unit="seconds")
            size = (check_int(f"cache[{i}] width", entry[1], 1, 4096), check_int(f"cache[{i}] height", entry[2], 1, 4096))
            if size not in embedded.SIZES:
                raise ValueError(f"cache[{i}] width x height must be one of "
                                 f"{', '.join(f'{w}x{h}' for w, h in embedded.SIZES)}, got {size[0]}x{size[1]}")
            for side, cells in zip(size, (self.dit_patch[2], self.dit_patch[1])):  # width: x cells, height: y cells
                if side % self.vae_spatial or (side // self.vae_spatial) % cells:
                    raise ValueError(f"cache[{i}]: a side of {side} pixels must be whole latent cells (vae_spatial "
                                     f"{self.vae_spatial}) and whole tokens (dit_patch {list(self.dit_patch)})")
            entries.append((duration, *size, check_int(f"cache[{i}] clips", entry[3], 1, 10_000_000)))
        self.cache = tuple(entries)
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError):
            raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda', got {self.device!r}") from None
        for name in ("dit_seconds", "ft_seconds"):
            seconds = getattr(self, name)
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
                raise ValueError(f"{name} must be a finite number >= 0 (0: no wall budget), got {seconds!r}")
        minutes = self.train_minutes
        if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not math.isfinite(minutes) or not 0 <= minutes <= 10_000:
            raise ValueError(f"train_minutes must be a number in [0, 10000] (0: no budget; the DiT runs dit_steps), got {minutes!r}")
        for name in ("vae_share", "dec_share", "pix_share"):
            share = getattr(self, name)
            if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share < 1:
                raise ValueError(f"{name} must be a number in [0, 1): the most of train_minutes its stage may take "
                                 f"(0: no cap), got {share!r}")
        if minutes and self.dit_seconds:
            raise ValueError(f"train_minutes and dit_seconds are two budgets: set one of them, got train_minutes {minutes!r}, "
                             f"dit_seconds {self.dit_seconds!r}")
        if not isinstance(self.text_pretrained, str) or (self.text_pretrained and self.text_pretrained not in PRETRAINED):
            raise ValueError(f"text_pretrained must be \"\" (a word-level encoder trained from scratch) or one of "
                             f"{sorted(PRETRAINED)}, got {self.text_pretrained!r}")
        if self.bf16 == "auto":  # resolved here, so recipe.json records what the run did
            self.bf16 = native_bf16(self.device)
        if not isinstance(self.bf16, bool):
            raise ValueError(f"bf16 must be true, false or \"auto\" (true where the device multiplies bfloat16 "
                             f"natively), got {self.bf16!r}")
        if isinstance(self.cache_workers, bool) or not isinstance(self.cache_workers, int) or self.cache_workers < 1:
            raise ValueError(f"cache_workers must be an integer >= 1, got {self.cache_workers!r}")
        for name in ("shape_contrast", "shape_margin", "shape_sigma", "motion_weight", "dec_lr", "dec_noise",
                     "dec_object_weight", "dec_blur", "pix_lr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        for name in ("dec_lr", "pix_lr"):  # a stage at learning rate 0 trains nothing for its minutes
            if getattr(self, name) == 0:
                raise ValueError(f"{name} must be > 0 (the stage's peak learning rate; its steps field 0 skips the "
                                 f"stage), got 0")
        if not isinstance(self.shape_channels, bool):
            raise ValueError(f"shape_channels must be true or false, got {self.shape_channels!r}")
        if not isinstance(self.shape_layout, bool):
            raise ValueError(f"shape_layout must be true or false, got {self.shape_layout!r}")
        if self.shape_layout and not self.shape_channels:
            raise ValueError("shape_layout needs shape_channels=true (the discs' shape class is carried there)")
        if not isinstance(self.shape_angle, bool):
            raise ValueError(f"shape_angle must be true or false, got {self.shape_angle!r}")
        if self.shape_angle and not self.shape_layout:
            raise ValueError("shape_angle needs shape_layout=true (the angle is painted on the layout's discs)")
        labelled = len(spec.SHAPES) + 2 * self.shape_angle
        if self.shape_channels and self.vae_channels <= labelled:
            raise ValueError(f"shape_channels needs vae_channels > {labelled} (the label channels and at "
                             f"least one more), got {self.vae_channels!r}")
        if self.dec_blur > 4:
            raise ValueError(f"dec_blur must be a finite number in [0, 4] (sigma in latent cells), got {self.dec_blur!r}")
        if isinstance(self.dec_blocks, bool) or not isinstance(self.dec_blocks, int) or not 1 <= self.dec_blocks <= 8:
            raise ValueError(f"dec_blocks must be an integer in [1, 8] (the decoder's residual blocks), got {self.dec_blocks!r}")
        if self.dec_seed is not None and (isinstance(self.dec_seed, bool) or not isinstance(self.dec_seed, int)
                                          or self.dec_seed < 0):
            raise ValueError(f"dec_seed must be null (the run's seed) or an integer >= 0, got {self.dec_seed!r}")
        if isinstance(self.dec_steps, bool) or not isinstance(self.dec_steps, int) or self.dec_steps < 0:
            raise ValueError(f"dec_steps must be an integer >= 0 (0: no decoder stage), got {self.dec_steps!r}")
        if isinstance(self.pix_blocks, bool) or not isinstance(self.pix_blocks, int) or not 1 <= self.pix_blocks <= 8:
            raise ValueError(f"pix_blocks must be an integer in [1, 8] (the pixel encoder's residual blocks), "
                             f"got {self.pix_blocks!r}")
        if isinstance(self.pix_steps, bool) or not isinstance(self.pix_steps, int) or self.pix_steps < 0:
            raise ValueError(f"pix_steps must be an integer >= 0 (0: no pixel-encoder stage), got {self.pix_steps!r}")
        if self.pix_steps and not self.shape_layout:
            raise ValueError("pix_steps needs shape_layout=true (without the layout the encoder already reads pixels)")
        tf = self.vae_temporal
        if isinstance(tf, bool) or not isinstance(tf, int) or not 1 <= tf <= 8:
            raise ValueError(f"vae_temporal must be an integer in [1, 8] (frames per latent frame), got {tf!r}")
        pt = self.dit_patch[0] if isinstance(self.dit_patch, (list, tuple)) and self.dit_patch else None
        for duration, _, _, _ in self.cache:
            frames = -(-round(duration * embedded.FPS) // tf)  # latent frames of a cached clip
            if isinstance(pt, int) and pt >= 1 and frames % pt:
                raise ValueError(f"dit_patch's frames ({pt}) must divide every cached clip's latent frames: a "
                                 f"{duration:g} s clip has {frames} at vae_temporal {tf}")
        eta = self.sample_eta
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0.0 <= eta <= 1.0:
            raise ValueError(f"sample_eta must be a number in [0, 1] (0: the deterministic sampler), got {eta!r}")
        shift = self.sample_shift
        if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not 0.0 < shift <= 100.0:
            raise ValueError(f"sample_shift must be a number in (0, 100] (1: no shift), got {shift!r}")
        retries = self.sample_retries
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= embedded.MAX_RETRIES:
            raise ValueError(f"sample_retries must be an integer in [0, {embedded.MAX_RETRIES}] (0: no redraws), got "
                             f"{retries!r}")
        lt = self.layout_threshold
        if isinstance(lt, bool) or not isinstance(lt, (int, float)) or not 0.0 < lt < 1.0:
            raise ValueError(f"layout_threshold must be a shape coverage in (0, 1), got {lt!r}")
        self.sample_redraw_share = embedded.parse_redraw_share(self.sample_redraw_share, "sample_redraw_share")
        self.sample_guidance_profile = embedded.check_guidance_profile(self.sample_guidance_profile,
                                                                       "sample_guidance_profile")
        for name, what in (("ft_steps", "0: no DiT fine-tune"), ("ft_warmup", "steps"), ("ft_seed", "a seed"),
                           ("ft_depth", "0: keep the folder's depth, else its DiT's blocks after growing"),
                           ("ft_distil", "0: a flow-matching fine-tune, else the sampler steps to distil into"),
                           ("ft_chain", "0: noisy latents from the clean ones only, else the sampler steps to chain")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0 ({what}), got {value!r}")
        # the fine-tune's fields become the DiT stage's (`ft_stage`): their ranges, said now under their own names
        # (a chain stage's bad field failed after the whole DiT stage; a rescore's after claiming its --out)
        for name, into, top in (("ft_steps", "dit_steps", 10_000_000), ("ft_warmup", "dit_warmup", 10_000_000),
                                ("ft_seed", "seed", 2**63 - 1)):
            if getattr(self, name) > top:
                raise ValueError(f"{name} must be an integer in [0, {top}] (it becomes the fine-tune's {into}), got "
                                 f"{getattr(self, name)!r}")
        for name in ("ft_distil", "ft_chain"):
            value = getattr(self, name)
            if value > 1000:  # the scheduler's own timestep count
                raise ValueError(f"{name} must be 0 (off) or a sampler step count of at most 1000, got {value}")
            if value and (self.self_condition or self.shape_contrast):
                raise ValueError(f"{name} needs self_condition false and shape_contrast 0 (the folder's sampler steps have "
                                 f"neither), got self_condition {self.self_condition!r}, shape_contrast {self.shape_contrast!r}")
        for name, low, what in (("adapt_steps", 0, "0: keep the folder's text encoder"), ("adapt_batch", 1, "captions a step"),
                                ("adapt_pool", 1, "training captions")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 1_000_000:
                raise ValueError(f"{name} must be an integer in [{low}, 1000000] ({what}), got {value!r}")
        lr = self.adapt_lr
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"adapt_lr must be a finite number > 0, got {lr!r}")
        if self.ft_distil and self.ft_chain:
            raise ValueError(f"ft_distil and ft_chain are two fine-tunes: set one of them, got ft_distil {self.ft_distil}, "
                             f"ft_chain {self.ft_chain}")
        self.ft_level_weights = embedded.check_guidance_profile(self.ft_level_weights, "ft_level_weights")
        if self.ft_level_weights and not self.ft_chain:
            raise ValueError("ft_level_weights weights ft_chain's noise levels: it needs ft_chain > 0")
        if self.ft_level_weights and not float(level_weights(distil_grid(self.ft_chain, self.sample_shift)[0],
                                                             self.ft_level_weights).sum()):
            raise ValueError(f"ft_level_weights gives every level of the {self.ft_chain}-step grid weight 0, got "
                             f"{[list(p) for p in self.ft_level_weights]}")
        switch = self.expert_switch
        if isinstance(switch, bool) or not isinstance(switch, (int, float)) or not 0.0 <= switch < 1.0:
            raise ValueError(f"expert_switch must be a noise level in [0, 1) (0: no low-noise expert), got {switch!r}")
        if self.ft_expert not in ("low", "high"):
            raise ValueError(f"ft_expert must be 'low' (the fine-tune becomes the low-noise expert) or 'high' (it "
                             f"becomes the main DiT, the folder's expert kept), got {self.ft_expert!r}")
        if self.ft_from not in ("main", "low"):
            raise ValueError(f"ft_from must be 'main' (the fine-tune starts from the folder's dit/) or 'low' (from its "
                             f"low-noise expert), got {self.ft_from!r}")
        if self.ft_from == "low" and self.ft_expert != "low":
            raise ValueError("ft_from 'low' continues the folder's low-noise expert, which the fine-tune then replaces: "
                             f"it needs ft_expert 'low', got {self.ft_expert!r}")
        weights = self.count_weights
        if (not isinstance(weights, (list, tuple)) or len(weights) != spec.MAX_OBJECTS
                or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0
                           for w in weights) or not any(weights)):
            raise ValueError(f"count_weights must be {spec.MAX_OBJECTS} finite numbers >= 0, not all 0 (the relative "
                             f"weights of clips with 1 to {spec.MAX_OBJECTS} objects), got {weights!r}")
        self.count_weights = tuple(float(w) for w in weights)
        ow = self.occluder_weight
        if isinstance(ow, bool) or not isinstance(ow, (int, float)) or not math.isfinite(ow) or not 0 < ow <= 100:
            raise ValueError(f"occluder_weight must be a number in (0, 100] (how many times as often a clip with the "
                             f"occluder bar is drawn; 1: as any other), got {ow!r}")
        self.occluder_weight = float(ow)
        if self.ft_depth > 48:  # a network that size would not fit a laptop's memory
            raise ValueError(f"ft_depth must be 0 (keep the folder's depth) or at most 48 blocks, got {self.ft_depth}")
        lr = self.ft_lr
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or not 0 < lr <= 10:
            raise ValueError(f"ft_lr must be > 0 and <= 10 (it becomes the fine-tune's dit_lr), got {lr!r}")
        seeds = self.ft_cache_seeds
        if (not isinstance(seeds, (list, tuple)) or not seeds
                or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 2**63 - 1 for x in seeds)
                or len(set(seeds)) != len(seeds)):  # a repeated seed would count its clips twice
            raise ValueError(f"ft_cache_seeds must be a non-empty list of distinct integers in [0, 2**63 - 1], got "
                             f"{seeds!r}")
        self.ft_cache_seeds = tuple(seeds)
        if not isinstance(self.init_from, str):
            raise ValueError(f"init_from must be a weights folder's path as a string (\"\": none), got {self.init_from!r}")
        if self.init_from and not (Path(self.init_from) / "dit" / "config.json").is_file():
            raise ValueError(f"init_from must be a weights folder with dit/config.json (e.g. sora_nb/weights/shapes), "
                             f"got {self.init_from!r}")


# Named starting points for a full run (``--preset``); --set overrides them. "course" (the default) is the best
# recipe known to fit a course's hour on a 2-core CPU: the shipped model's architecture (the layout latent with
# angle channels, a decoder stage, a pixel encoder, rotary positions, the frozen pretrained text encoder under a
# trained stack, guidance by noise level), its DiT trained for what the hour leaves (``train_minutes``). It has
# none of the shipped model's later stages (longer decoder training, DiT fine-tunes; see its model card).
# "plain" is the dataclass's defaults: the plain latent and a word-level text encoder (the course recipe until the
# twenty-fifth session; a weaker model).
PRESETS: dict[str, dict[str, Any]] = {
    "course": dict(shape_channels=True, shape_layout=True, shape_angle=True, dec_steps=1200, dec_blocks=3,
                   dec_lr=1e-3, dec_object_weight=4.0, dec_blur=1.0, pix_steps=1500, dit_rope=True,
                   vae_share=0.10, dec_share=0.20, pix_share=0.05,
                   text_pretrained="all-MiniLM-L6-v2", train_minutes=60.0, guidance_candidates=(2.0,),
                   sample_guidance_profile=((0.9, 4.0), (0.6, 1.0), (0.0, 0.0))),
    "plain": {},
}
# --tiny on top of a preset: the stages it adds, at seconds-long sizes (a budget would cut a tiny run's DiT)
TINY_PRESET = {"course": dict(dec_steps=4, pix_steps=4, adapt_pool=64, train_minutes=0.0), "plain": {}}
TINY_RESCORE = ("guidance_candidates", "guidance_clips", "eval_clips", "cache", "log_every", "ckpt_every")
TINY = dict(guidance_candidates=(5.0,), guidance_clips=4, vae_steps=30, vae_batch=4, cache=((2.0, 64, 64, 64),), text_steps=20, text_batch=16, dit_steps=40, dit_batch=8, dit_warmup=5,
            eval_clips=8, log_every=10, ckpt_every=20, dit_depth=2)


# -- helpers -----------------------------------------------------------------------------------
def write_recipe(out: Path, recipe: Recipe) -> None:
    """Record the run's recipe (with the step counts it ran) in ``out/recipe.json``."""
    write_text_atomic(out / "recipe.json", json.dumps(dataclasses.asdict(recipe), indent=1))


def log(out: Path, **record: Any) -> None:
    """Append one JSON line to the run log and echo it."""
    record = {"time": round(time.time(), 2), **record}
    path = out / "log.jsonl"
    with open(path, "a+b") as f:  # a line a kill cut short is ended first, so this record stays its own line
        cut = False
        if f.seek(0, os.SEEK_END) > 0:
            f.seek(-1, os.SEEK_END)
            cut = f.read(1) != b"\n"
        f.write((b"\n" if cut else b"") + (json.dumps(record) + "\n").encode())
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()
                   if k != "time"), flush=True)


def read_log(path: Path) -> list[dict[str, Any]]:
    """A run log's records (one JSON object a line), skipping a line a kill cut short."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("time"), (int, float)):
            records.append(record)
    return records


def clips_to_tensor(clips: list) -> torch.Tensor:
    """World clips -> video tensor (B, 3, T, H, W) in [-1, 1]."""
    return frames_to_tensor(np.stack([c.frames for c in clips]))


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 frames (B, T, H, W, 3) -> video tensor (B, 3, T, H, W) in [-1, 1]."""
    return torch.from_numpy(frames).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0


def step_seed(seed: int, stage: str, step: int) -> int:
    """A distinct, reproducible seed per (run seed, stage, step)."""
    return (seed * 1_000_003 + {"vae": 1, "cache": 2, "dit": 3, "eval": 4, "text": 5, "swap": 6, "dec": 7, "pix": 8, "adapt": 9}[stage] * 10_007 + step) % (2**31)


def save_optimizer(opt: torch.optim.Optimizer, path: Path) -> None:
    """Optimizer state as safetensors (tensors) + JSON (scalars), no pickle."""
    sd = opt.state_dict()
    tensors, scalars = {}, {"param_groups": sd["param_groups"], "state": {}}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value) and value.ndim > 0:
                tensors[f"{idx}.{key}"] = value.contiguous()
            else:
                scalars["state"].setdefault(str(idx), {})[key] = float(value)
    save_file(tensors, str(path.with_suffix(".safetensors")))
    path.with_suffix(".json").write_text(json.dumps(scalars))


def load_optimizer(opt: torch.optim.Optimizer, path: Path) -> None:
    """Inverse of :func:`save_optimizer`."""
    tensors = load_file(str(path.with_suffix(".safetensors")))
    scalars = json.loads(path.with_suffix(".json").read_text())
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    for idx, values in scalars["state"].items():
        for key, value in values.items():
            state.setdefault(int(idx), {})[key] = torch.tensor(value)
    opt.load_state_dict({"state": state, "param_groups": scalars["param_groups"]})


def recover_folders(out: Path) -> None:
    """`recover_folder` for every folder of a run that a kill left mid-swap (the names a run makes: `STAGE_FOLDERS`;
    any other ``*.old`` or ``*.partial`` is not the run's)."""
    if out.is_dir():
        for leftover in sorted(out.glob("*.partial")) + sorted(out.glob("*.old")):
            name = leftover.name.rsplit(".", 1)[0]
            if STAGE_FOLDERS.fullmatch(name):
                recover_folder(leftover.with_name(name))


def write_text_atomic(path: Path, text: str) -> None:
    """``path.write_text(text)``, but a kill leaves the old file or the new one, never half of one."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def resume(ckpt: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, recipe: Recipe | None = None,
           field: str = "") -> int:
    """Load a stage's checkpoint (model and optimizer) if there is one; the step to start from. With
    ``recipe`` and ``field``, the stage's step count as its checkpoint recorded it (a `PartBudget` may have cut
    it) goes back into ``recipe.<field>``, so the resumed stage follows the same schedule."""
    recover_folder(ckpt)
    if not (ckpt / "state.json").is_file():
        return 0
    model.load_state_dict(load_file(str(ckpt / "model.safetensors")))
    load_optimizer(opt, ckpt / "optim")
    state = json.loads((ckpt / "state.json").read_text())
    if recipe is not None and "steps" in state:
        setattr(recipe, field, state["steps"])
    log(ckpt.parent, stage="resume", of=ckpt.name.removesuffix("_ckpt"), step=state["step"])
    return state["step"]


def checkpoint(ckpt: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, step: int, steps: int | None = None,
               seconds: float | None = None) -> None:
    """Save a stage's model and optimizer, to resume at ``step`` (safetensors and JSON, no pickle); ``steps``:
    the stage's step count, recorded for `resume`; ``seconds``: the stage's wall seconds up to ``step``
    (`PartBudget.elapsed`, read back by `checkpoint_seconds`). Whole or not at all (`atomic_folder`)."""
    state = {"step": step, **({} if steps is None else {"steps": steps}),
             **({} if seconds is None else {"seconds": float(seconds)})}
    with atomic_folder(ckpt) as folder:
        save_file(model.state_dict(), str(folder / "model.safetensors"))
        save_optimizer(opt, folder / "optim")
        (folder / "state.json").write_text(json.dumps(state))


def checkpoint_seconds(ckpt: Path) -> float:
    """The wall seconds a stage's checkpoint recorded it had trained for (`checkpoint`; 0 without a checkpoint or
    that record): a `PartBudget` resumed from it counts them."""
    try:
        value = json.loads((ckpt / "state.json").read_text()).get("seconds", 0.0)
    except (OSError, ValueError, AttributeError):
        return 0.0
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and value > 0 else 0.0


class PartBudget:
    """A fixed-step stage's share of a full run's hour (``train_minutes`` times ``share``). The stage calls it
    at every step; over its steps ``start + 5`` to ``start + 25`` it times the pace, and at ``start + 25``, if
    the steps left would overrun what the share leaves, it cuts ``recipe.<field>`` (the stage's step count,
    which its cosine schedule reads) to fit, and logs it. Before that every step's learning rate is the
    warm-up's, which does not depend on the count, so the whole stage follows one schedule. The pace is
    the machine's, so the count is too, as the DiT's is under a budget: ``recipe.json`` records the counts
    run, and setting them with ``train_minutes=0`` reruns the same steps anywhere. A stage resumed from a
    checkpoint at or after step 25 keeps the count its checkpoint recorded (`resume`) and is not cut again; one
    resumed from an earlier checkpoint (``ckpt_every`` < 25: its count not fixed yet) is budgeted as a fresh one,
    the pace timed over its steps ``start + 5`` to ``start + 25`` (as the DiT's, resumed before its step 100), with
    ``spent``, the seconds its checkpoint recorded (`elapsed`, `checkpoint_seconds`), counted as already used of
    its share."""

    PACE = (5, 25)

    def __init__(self, recipe: Recipe, out: Path, stage: str, field: str, share: float, start: int,
                 clock: Callable[[], float] = time.perf_counter, spent: float = 0.0) -> None:
        self.recipe, self.out, self.stage, self.field, self.clock = recipe, out, stage, field, clock
        self.start = start
        fixed = start >= self.PACE[1]  # the count was fixed (or left) at step 25 before the checkpoint was taken
        self.seconds = 60.0 * recipe.train_minutes * share if recipe.train_minutes and share and not fixed else 0.0
        self.t0 = clock() - spent
        self.t_pace = 0.0

    def elapsed(self) -> float:
        """The stage's wall seconds so far: since this budget was made, plus the ``spent`` it was given."""
        return self.clock() - self.t0

    def __call__(self, step: int) -> None:
        if not self.seconds:
            return
        first, fix = self.PACE
        if step == self.start + first:
            self.t_pace = self.clock()
        elif step == self.start + fix:
            now = self.clock()
            pace = (now - self.t_pace) / (fix - first)
            steps = getattr(self.recipe, self.field)
            fit = step + int((self.seconds - (now - self.t0)) / max(pace, 1e-9))
            if fit < steps:
                setattr(self.recipe, self.field, max(step + 1, fit))
                log(self.out, stage=self.stage, step=step, s_per_step=pace, budget_s=self.seconds,
                    **{self.field: getattr(self.recipe, self.field), "cut_from": steps})


def cosine_lr(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to 10% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


# -- stage 1: the autoencoder ---------------------------------------------------------------------
def initial_vae(recipe: Recipe, world) -> VideoAutoencoder:
    """The autoencoder `train_vae` starts from: the recipe's architecture, its seed's weights, its first layers
    the PCA of 64 training clips' pixel blocks (already a blurry reconstruction)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        vae = VideoAutoencoder(latent_channels=recipe.vae_channels, hidden=recipe.vae_hidden,
                               spatial_factor=recipe.vae_spatial, temporal_factor=recipe.vae_temporal)
    vae.init_from_pca(clips_to_tensor(list(world.sample(64, seed=step_seed(recipe.seed, "vae", 10**6), split="train"))))
    return vae


def train_vae(recipe: Recipe, out: Path, world) -> VideoAutoencoder:
    """Train (or resume) the video autoencoder; returns it in eval mode."""
    final = out / "vae_final"
    if (final / "config.json").is_file():
        return finished_part(final, recipe, "vae_steps")
    vae = initial_vae(recipe, world)
    opt = torch.optim.AdamW(vae.parameters(), lr=recipe.vae_lr, weight_decay=0.0)
    ckpt = out / "vae_ckpt"
    start = resume(ckpt, vae, opt, recipe, "vae_steps")
    t0 = time.perf_counter()
    budget = PartBudget(recipe, out, "vae", "vae_steps", recipe.vae_share, start, spent=checkpoint_seconds(ckpt))
    step = start - 1
    while (step := step + 1) < recipe.vae_steps:
        budget(step)
        duration, size = VAE_SIZES[step % len(VAE_SIZES)]
        clips = list(world.sample(recipe.vae_batch, seed=step_seed(recipe.seed, "vae", step), split="train",
                                  duration=duration, size=size))
        video = clips_to_tensor(clips)
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, recipe.vae_steps, recipe.vae_lr, 50)
        z = recipe_latent(recipe, vae, clips, video)
        if step > recipe.vae_steps // 3:  # make the decoder robust to imperfect latents from the DiT
            g = torch.Generator().manual_seed(step_seed(recipe.seed, "vae", step))
            z = z + 0.05 * z.detach().std() * torch.randn(z.shape, generator=g)
        recon = vae.decode(z, video.shape[2])
        loss = F.l1_loss(recon, video) + F.mse_loss(recon, video) + 1e-4 * z.pow(2).mean()
        if recipe.vae_smooth:
            loss = loss + recipe.vae_smooth * roughness(z)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if step % recipe.log_every == 0 or step == recipe.vae_steps - 1:
            psnr = 10 * math.log10(4.0 / max(1e-8, F.mse_loss(recon.detach(), video).item()))
            log(out, stage="vae", step=step, loss=loss.item(), psnr=psnr, s_per_step=(time.perf_counter() - t0) / (step - start + 1))
        if (step + 1) % recipe.ckpt_every == 0 and step + 1 < recipe.vae_steps:
            checkpoint(ckpt, vae, opt, step + 1, recipe.vae_steps, budget.elapsed())
    return finish_part(vae, final, ckpt, recipe.vae_steps)


def shape_cells(clips: list, vae: VideoAutoencoder, maps: np.ndarray | None = None) -> torch.Tensor:
    """Each shape's visible coverage of every latent cell, (B, len(SHAPES), F, h, w) in [0, 1]
    (`canvas.shape_maps`, or the given (B, T, H, W, S) ``maps``, averaged over the cell's frames and pixels)."""
    if maps is None:
        maps = np.stack([canvas.shape_maps(c.labels, c.size, len(c.frames), c.fps) for c in clips])  # (B, T, H, W, S)
    video = vae._pad_frames(torch.from_numpy(maps).permute(0, 4, 1, 2, 3))  # (B, S, T', H, W)
    kt, ks = vae.config.temporal_factor, vae.config.spatial_factor
    return F.avg_pool3d(video, (kt, ks, ks))  # (B, S, F, h, w)


def with_shape_channels(vae: VideoAutoencoder, z: torch.Tensor, clips: list) -> torch.Tensor:
    """Recipe ``shape_channels``: the latent ``z`` of ``clips`` with its last len(SHAPES) channels replaced
    by `shape_cells`. The labels exist only for the world's clips, so only the autoencoder stage and the
    cache see them; the DiT must generate those channels from the prompt, and the decoder learns to read
    them. A diagnostic of where shapes are lost (bench/bench_shape_channels.py, bench/RESULTS.md): the
    DiT then draws the right shape channel, but the decoded outline does not follow it."""
    return torch.cat([z[:, :-len(spec.SHAPES)], shape_cells(clips, vae).to(z)], 1)


def training_latent(vae: VideoAutoencoder, clips: list, shape_channels: bool, shape_layout: bool,
            video: torch.Tensor | None = None, shape_angle: bool = False) -> torch.Tensor:
    """The latent the recipe trains on: ``vae.encode`` of the clips (``video``, if given, is their
    tensor); with ``shape_channels``, `with_shape_channels`; with ``shape_layout`` as well, the encoder
    sees each object as a disc (`canvas.disc_layout`) and the shape channels hold the discs' class, so
    only those channels say which outline to draw. With ``shape_angle`` too, the two channels before the
    shape channels hold each disc's orientation (`canvas.angle_maps`, pooled over the cell as the class
    is), so they say which way the outline points and how it turns."""
    if not shape_layout:
        z = vae.encode(clips_to_tensor(clips) if video is None else video)
        return with_shape_channels(vae, z, clips) if shape_channels else z
    views = [canvas.disc_layout(c.labels, c.size, len(c.frames), c.fps) for c in clips]
    z = vae.encode(frames_to_tensor(np.stack([v[0] for v in views])).to(next(vae.parameters()).device))
    cells = label_cells(vae, clips, shape_angle, np.stack([v[1] for v in views]))
    return torch.cat([z[:, :-cells.shape[1]], cells.to(z)], 1)


def label_cells(vae: VideoAutoencoder, clips: list, shape_angle: bool, discs: np.ndarray | None = None) -> torch.Tensor:
    """The layout latent's label channels of ``clips``: (angle cos, sin,) then each shape's disc coverage
    per cell, (B, (2 +) len(SHAPES), F, h, w). ``discs``: their `canvas.disc_layout` class maps, if drawn."""
    if discs is None:
        discs = np.stack([canvas.disc_layout(c.labels, c.size, len(c.frames), c.fps)[1] for c in clips])
    cells = shape_cells(clips, vae, discs)
    if shape_angle:
        angles = np.stack([canvas.angle_maps(c.labels, c.size, len(c.frames), c.fps) for c in clips])
        cells = torch.cat([shape_cells(clips, vae, angles), cells], 1)
    return cells


def pixel_label_latent(vae: VideoAutoencoder, clips: list, video: torch.Tensor, shape_angle: bool) -> torch.Tensor:
    """For an autoencoder whose encoder reads the true frames (after the recipe's pixel-encoder stage):
    its latent of ``video`` with the label channels (`label_cells`) set from the clips' labels, as the
    DiT was trained to draw them. The decoder stage of a rescore (``--decoder``) trains on this, as the
    disc encoder it was first trained with is no longer in the folder."""
    z = vae.encode(video)
    cells = label_cells(vae, clips, shape_angle)
    return torch.cat([z[:, :-cells.shape[1]], cells.to(z)], 1)


def recipe_latent(recipe: Recipe, vae: VideoAutoencoder, clips: list, video: torch.Tensor | None = None) -> torch.Tensor:
    """`training_latent` with the recipe's latent knobs (``shape_channels``, ``shape_layout``, ``shape_angle``)."""
    return training_latent(vae, clips, recipe.shape_channels, recipe.shape_layout, video, recipe.shape_angle)


VAE_SIZES = ((2.0, (64, 64)), (2.0, (64, 64)), (1.0, (96, 64)), (2.0, (96, 64)))  # (duration, size) by step


def tune_decoder(recipe: Recipe, out: Path, world, vae: VideoAutoencoder, pixels: bool = False) -> VideoAutoencoder:
    """Train (or resume) the decoder alone for ``recipe.dec_steps``, the encoder frozen: the latent (so the
    latent cache and any DiT trained on it) is unchanged; only the decoding of it changes. The autoencoder's
    round trip caps what any DiT can score (``bench/bench_ceiling.py``), and the joint stage leaves the
    decoder short of what it can do. The course recipe's default is off; the shipped model's layout latent
    needs it (bench/RESULTS.md). ``pixels``: train on `pixel_label_latent` instead of the recipe's latent
    (an autoencoder whose encoder reads the true frames; `rescore` sets it). Returns the autoencoder in
    eval mode."""
    final = out / "dec_final"
    if (final / "config.json").is_file():
        return finished_part(final, recipe, "dec_steps")
    vae = deepen_decoder(vae, recipe.dec_blocks).train()
    if recipe.dec_blur:
        vae.register_to_config(decode_blur=float(recipe.dec_blur))
    for name, p in vae.named_parameters():
        p.requires_grad_(not name.startswith("enc"))
    decoder = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(decoder, lr=recipe.dec_lr, weight_decay=0.0)
    ckpt = out / "dec_ckpt"
    # from the steps asked, before any cut (at step 25, inside it) and before `resume` loads a cut count: a resumed
    # stage follows the same schedule
    warmup = min(50, recipe.dec_steps // 10)
    start = resume(ckpt, vae, opt, recipe, "dec_steps")
    seed = recipe.seed if recipe.dec_seed is None else recipe.dec_seed
    t0 = time.perf_counter()
    budget = PartBudget(recipe, out, "decoder", "dec_steps", recipe.dec_share, start, spent=checkpoint_seconds(ckpt))
    step = start - 1
    while (step := step + 1) < recipe.dec_steps:
        budget(step)
        duration, size = VAE_SIZES[step % len(VAE_SIZES)]
        clips = list(world.sample(recipe.vae_batch, seed=step_seed(seed, "dec", step), split="train",
                                  duration=duration, size=size))
        video = clips_to_tensor(clips)
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, recipe.dec_steps, recipe.dec_lr, warmup)
        with torch.no_grad():
            z = (pixel_label_latent(vae, clips, video, recipe.shape_angle) if pixels
                 else recipe_latent(recipe, vae, clips, video))
            g = torch.Generator().manual_seed(step_seed(seed, "dec", step))
            z = z + recipe.dec_noise * z.std() * torch.randn(z.shape, generator=g)
        recon = vae.decode(z, video.shape[2])
        if recipe.dec_object_weight:
            weight = 1.0 + recipe.dec_object_weight * object_mask(clips, recipe.shape_layout)
            loss = (weight * ((recon - video).abs() + (recon - video) ** 2)).mean()
        else:
            loss = F.l1_loss(recon, video) + F.mse_loss(recon, video)
        optimise(opt, decoder, loss)
        if step % recipe.log_every == 0 or step == recipe.dec_steps - 1:
            psnr = 10 * math.log10(4.0 / max(1e-8, F.mse_loss(recon.detach(), video).item()))
            log(out, stage="decoder", step=step, loss=loss.item(), psnr=psnr,
                s_per_step=(time.perf_counter() - t0) / (step - start + 1))
        if (step + 1) % recipe.ckpt_every == 0 and step + 1 < recipe.dec_steps:
            checkpoint(ckpt, vae, opt, step + 1, recipe.dec_steps, budget.elapsed())
    return finish_part(vae, final, ckpt, recipe.dec_steps)


def optimise(opt: torch.optim.Optimizer, params: list, loss: torch.Tensor) -> None:
    """One step of a part-of-the-autoencoder stage: the gradient of ``loss``, clipped to norm 1 over ``params``."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


def finish_part(vae: VideoAutoencoder, final: Path, ckpt: Path, steps: int) -> VideoAutoencoder:
    """End an autoencoder stage: everything trainable again, saved to ``final`` with the ``steps`` it ran
    (``steps.json``, read back by `finished_part`), checkpoint gone."""
    vae.requires_grad_(True)
    with atomic_folder(final) as folder:
        vae.save_pretrained(folder, safe_serialization=True)
        (folder / "steps.json").write_text(json.dumps({"steps": steps}))
    shutil.rmtree(ckpt, ignore_errors=True)
    return vae.eval()


def reuse_steps(final: Path, recipe: Recipe, field: str) -> None:
    """A finished stage loaded instead of trained: the steps it ran (its ``steps.json``; a budget may have cut
    them) go back into ``recipe.<field>``, whatever this call asked, so the run's ``recipe.json`` records them;
    the log says so (``reused``: a new ``--out`` trains the stage anew)."""
    steps = final / "steps.json"
    if steps.is_file():
        setattr(recipe, field, json.loads(steps.read_text())["steps"])
    log(final.parent, stage="reused", folder=final.name, steps=getattr(recipe, field))


def finished_part(final: Path, recipe: Recipe, field: str) -> VideoAutoencoder:
    """A finished autoencoder stage's result, reloaded by a resumed run, with its steps (`reuse_steps`)."""
    reuse_steps(final, recipe, field)
    return VideoAutoencoder.from_pretrained(final, use_safetensors=True, low_cpu_mem_usage=False).eval()


def train_pixel_encoder(recipe: Recipe, out: Path, world, vae: VideoAutoencoder) -> VideoAutoencoder:
    """Recipe ``pix_steps`` (with ``shape_layout``): train (or resume) the encoder alone to give, from a clip's
    true frames, the latent `training_latent` makes from its labels: the discs' appearance and the shape
    class. The layout encoder reads discs that only the world's labels can paint, so without this stage the
    autoencoder cannot encode other video (an image to animate, a clip to extend). The student starts from
    the disc encoder, deepened to ``pix_blocks`` residual blocks (an outline spans several cells); the loss
    is the latent's squared error per channel over the channel's variance in 16 clips drawn at the start
    (the shape channels share one: weighting by each batch's variance blew up on a shape the batch
    lacked). The decoder, the latent statistics and the DiT are unchanged. Returns the autoencoder with
    the new encoder, in eval mode."""
    final = out / "pix_final"
    if (final / "config.json").is_file():
        return finished_part(final, recipe, "pix_steps")
    teacher = _copy(vae).eval()
    vae = deepen_encoder(vae, recipe.pix_blocks).train()
    for name, p in vae.named_parameters():
        p.requires_grad_(name.startswith("enc"))
    encoder = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(encoder, lr=recipe.pix_lr, weight_decay=0.0)
    ckpt = out / "pix_ckpt"
    warmup = min(50, recipe.pix_steps // 10)  # from the steps asked, before a cut or `resume` (see tune_decoder)
    start = resume(ckpt, vae, opt, recipe, "pix_steps")
    with torch.no_grad():  # one fixed weight per channel: a batch without some shape has no variance in its channel
        probe = list(world.sample(16, seed=step_seed(recipe.seed, "pix", 10 ** 6), split="train"))
        var = channel_scales(training_latent(teacher, probe, True, True, shape_angle=recipe.shape_angle),
                             recipe.shape_angle)
    t0 = time.perf_counter()
    budget = PartBudget(recipe, out, "pixels", "pix_steps", recipe.pix_share, start, spent=checkpoint_seconds(ckpt))
    step = start - 1
    while (step := step + 1) < recipe.pix_steps:
        budget(step)
        duration, size = VAE_SIZES[step % len(VAE_SIZES)]
        clips = list(world.sample(recipe.vae_batch, seed=step_seed(recipe.seed, "pix", step), split="train",
                                  duration=duration, size=size))
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, recipe.pix_steps, recipe.pix_lr, warmup)
        with torch.no_grad():
            target = training_latent(teacher, clips, True, True, shape_angle=recipe.shape_angle)  # (B, C, F, h, w)
        z = vae.encode(clips_to_tensor(clips))
        loss = ((z - target) ** 2 / var).mean()
        optimise(opt, encoder, loss)
        if step % recipe.log_every == 0 or step == recipe.pix_steps - 1:
            log(out, stage="pixels", step=step, loss=loss.item(), class_accuracy=class_accuracy(z.detach(), target),
                s_per_step=(time.perf_counter() - t0) / (step - start + 1))
        if (step + 1) % recipe.ckpt_every == 0 and step + 1 < recipe.pix_steps:
            checkpoint(ckpt, vae, opt, step + 1, recipe.pix_steps, budget.elapsed())
    return finish_part(vae, final, ckpt, recipe.pix_steps)


def channel_scales(want: torch.Tensor, shape_angle: bool = False) -> torch.Tensor:
    """The pixel encoder's fixed loss scale per channel, (1, C, 1, 1, 1): each channel's variance in the
    layout latents ``want`` (B, C, F, h, w), except that the shape channels share one, and with
    ``shape_angle`` the two angle channels another. A channel of its own for a shape the sample lacks, or for
    the angle's sine in a sample without spin, would have almost no variance and swamp the loss."""
    var = want.transpose(0, 1).reshape(want.shape[1], -1).var(1)  # (C,)
    k = len(spec.SHAPES)
    var[-k:] = var[-k:].mean()
    if shape_angle:
        var[-k - 2:-k] = var[-k - 2:-k].mean()
    return var.clamp_min(1e-4).view(1, -1, 1, 1, 1)


def class_accuracy(z: torch.Tensor, target: torch.Tensor) -> float:
    """Share of the object cells (target shape mass >= 0.5) where ``z``'s strongest shape channel is the
    target's: how well a pixel encoder reads the outline (`train_pixel_encoder`)."""
    shapes = len(spec.SHAPES)
    want, got = target[:, -shapes:], z[:, -shapes:]  # (B, S, F, h, w)
    cells = want.sum(1) >= 0.5
    if not cells.any():
        return float("nan")
    return float((want.argmax(1) == got.argmax(1))[cells].float().mean())


def deepen_decoder(vae: VideoAutoencoder, blocks: int) -> VideoAutoencoder:
    """A copy of ``vae`` whose decoder has ``blocks`` residual blocks: the existing ones keep their weights,
    new ones start as the identity (so the copy decodes exactly as ``vae`` does until trained)."""
    return _deepened(vae, "dec", blocks)


def deepen_encoder(vae: VideoAutoencoder, blocks: int) -> VideoAutoencoder:
    """A copy of ``vae`` whose encoder has ``blocks`` residual blocks (as `deepen_decoder`)."""
    return _deepened(vae, "enc", blocks)


def _deepened(vae: VideoAutoencoder, side: str, blocks: int) -> VideoAutoencoder:
    field = {"dec": "decoder_blocks", "enc": "encoder_blocks"}[side]
    if blocks < vae.config[field]:
        raise ValueError(f"{side}_blocks must be >= the autoencoder's {vae.config[field]} {field.replace('_', ' ')} "
                         f"(a network is deepened, never cut), got {blocks}")
    if blocks == vae.config[field]:
        return _copy(vae)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        config = {k: v for k, v in vae.config.items() if not k.startswith("_")}  # "_use_default_values" would
        deeper = VideoAutoencoder(**{**config, field: blocks})                    # undo the new depth
    missing, unexpected = deeper.load_state_dict(vae.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(f"{side}_blocks.") for k in missing), (missing, unexpected)
    return deeper.to(next(vae.parameters()).device)


def object_mask(clips: list, discs: bool = False) -> torch.Tensor:
    """(B, 1, T, H, W) 1.0 where an object covers the pixel (or, with ``discs``, where either the object or
    its disc of `canvas.disc_layout` does), else 0.0: the decoder stage's ``dec_object_weight``."""
    masks = []
    for c in clips:
        cover = canvas.shape_maps(c.labels, c.size, len(c.frames), c.fps).sum(-1)
        if discs:
            cover = cover + canvas.disc_layout(c.labels, c.size, len(c.frames), c.fps)[1].sum(-1)
        masks.append(cover > 0)
    return torch.from_numpy(np.stack(masks)).float()[:, None]


def roughness(z: torch.Tensor) -> torch.Tensor:
    """Share of the latent's (per-channel centred) power that a 3x3 spatial box blur removes."""
    flat = z.transpose(0, 1).reshape(z.shape[1], -1)  # (C, n)
    var = flat.var(1).detach().view(1, -1, 1, 1, 1)  # (1, C, 1, 1, 1)
    padded = F.pad(z, (1, 1, 1, 1, 0, 0), mode="replicate")
    blur = F.avg_pool3d(padded, (1, 3, 3), stride=1)  # (B, C, F, h, w)
    return ((z - blur).pow(2) / var).mean()


# -- stage 2: the latent cache --------------------------------------------------------------------
def build_cache(recipe: Recipe, out: Path, world, vae: VideoAutoencoder, pixels: bool = False,
                name: str = "cache") -> dict[str, Any]:
    """Encode the training clips once (into ``out/name``); return {shape: (latents, captions)} plus latent
    statistics. ``pixels``: the latent is `pixel_label_latent` (an autoencoder after the pixel-encoder stage)."""
    path = out / name
    if (path / "index.json").is_file():
        index = json.loads((path / "index.json").read_text())
        buckets = {}
        for key, captions in index["buckets"].items():
            buckets[key] = (load_file(str(path / f"{key}.safetensors"))["latents"], captions)
        # said in the log as a reloaded stage is (`reuse_steps`): the clips it holds, not the recipe's cache asked now
        log(out, stage="reused", folder=name, clips=sum(len(c) for _, c in buckets.values()))
        return {"buckets": buckets, "mean": index["mean"], "std": index["std"]}
    path.mkdir(parents=True, exist_ok=True)
    buckets: dict[str, tuple[torch.Tensor, list[str]]] = {}
    t0 = time.perf_counter()
    jobs = [(i, entry, recipe.seed, recipe.device, pixels, recipe.shape_channels, recipe.shape_layout, recipe.shape_angle)
            for i, entry in enumerate(recipe.cache)]
    if recipe.cache_workers > 1:  # each entry has its own seed: the same cache for any worker count
        import concurrent.futures
        import multiprocessing
        import tempfile

        with tempfile.TemporaryDirectory() as given:  # the workers load the autoencoder given, saved for them
            vae.save_pretrained(given, safe_serialization=True)
            with concurrent.futures.ProcessPoolExecutor(recipe.cache_workers, mp_context=multiprocessing.get_context("spawn"),
                                                        initializer=_set_worker_vae, initargs=(given,)) as pool:
                results = list(pool.map(_cache_entry, jobs))
    else:
        _WORKER["vae"] = vae
        try:
            results = [_cache_entry(job) for job in jobs]
        finally:
            _WORKER.pop("vae", None)
    for latents, caps in results:  # entries of one latent shape share a bucket, in recipe order
        key = add_to_bucket(buckets, latents, caps)
        log(out, stage="cache", bucket=key, clips=len(buckets[key][1]), seconds=time.perf_counter() - t0)
    allz = torch.cat([b[0].flatten() for b in buckets.values()])
    mean, std = float(allz.mean()), float(allz.std())
    for key, (latents, caps) in buckets.items():
        save_file({"latents": latents.contiguous()}, str(path / f"{key}.safetensors"))
    write_text_atomic(path / "index.json", json.dumps({"buckets": {k: v[1] for k, v in buckets.items()},
                                                      "mean": mean, "std": std}))  # last: it marks the cache done
    return {"buckets": buckets, "mean": mean, "std": std}


def add_to_bucket(buckets: dict[str, tuple[torch.Tensor, list[str]]], latents: torch.Tensor, captions: list[str]) -> str:
    """Append cached ``latents`` (n, C, F, h, w) and their captions to the bucket of their latent shape
    ("CxFxhxw"); return its key."""
    key = "x".join(map(str, latents.shape[1:]))
    if key in buckets:
        latents, captions = torch.cat([buckets[key][0], latents]), buckets[key][1] + captions
    buckets[key] = (latents, captions)
    return key


_WORKER: dict[str, Any] = {}  # the autoencoder a cache process encodes with


def _set_worker_vae(folder: str) -> None:
    torch.set_num_threads(1)
    _WORKER["vae"] = embedded.load_vae(folder).eval()


def _cache_entry(job: tuple[int, tuple[float, int, int, int], int, str, bool, bool, bool, bool]
                 ) -> tuple[torch.Tensor, list[str]]:
    """Render and encode one cache entry (its own seed): float16 latents (n, C, F, h, w) on the CPU, captions."""
    from . import world

    i, (duration, width, height, n), seed, device, pixels, *labelled = job
    vae = _WORKER["vae"].to(device)
    lats, caps, batch = [], [], []
    clips_iter = world.sample(n, seed=step_seed(seed, "cache", i), split="train", phrasing="train",
                              duration=duration, size=(width, height))
    for clip in clips_iter:
        batch.append(clip)
        if len(batch) == 32:
            lats.append(_encode(vae, batch, *labelled, pixels=pixels)); caps += [c.caption for c in batch]; batch = []
    if batch:
        lats.append(_encode(vae, batch, *labelled, pixels=pixels)); caps += [c.caption for c in batch]
    vae.to("cpu")
    return torch.cat(lats), caps


@torch.no_grad()
def _encode(vae: VideoAutoencoder, clips: list, shape_channels: bool = False, shape_layout: bool = False,
            shape_angle: bool = False, pixels: bool = False) -> torch.Tensor:
    """Raw latents (B, C, F, h, w) of a list of clips (`training_latent`, or with ``pixels``
    `pixel_label_latent`), stored as float16 on the CPU."""
    device = next(vae.parameters()).device
    video = clips_to_tensor(clips).to(device)
    z = (pixel_label_latent(vae, clips, video, shape_angle) if pixels
         else training_latent(vae, clips, shape_channels, shape_layout, video, shape_angle))
    return z.to("cpu", torch.float16)


# -- stage 3: the text encoder, pre-trained on captions ---------------------------------------------
PROBE_FIELDS = (("shape", spec.SHAPES), ("colour", spec.COLOURS), ("motion", spec.MOTIONS), ("size", spec.SIZES))


class CaptionProbe(torch.nn.Module):
    """Training-only heads reading a caption's attributes back from the text encoder's token states.

    One learned query per object slot (objects in the order the caption names them) and one for the
    scene attend over the token states; linear heads classify each slot's shape, colour, motion and
    size ("none" when absent or unsaid) and the scene's background, wall and object count. The
    heads are discarded after training: they only shape the token states the DiT attends to.
    """

    def __init__(self, width: int, slots: int = spec.MAX_OBJECTS):
        super().__init__()
        self.slots = slots
        self.queries = torch.nn.Parameter(torch.randn(slots + 1, width) * width ** -0.5)  # (Q, E)
        self.key = torch.nn.Linear(width, width)
        self.heads = torch.nn.ModuleDict({name: torch.nn.Linear(width, len(values) + 1) for name, values in PROBE_FIELDS})
        self.scene = torch.nn.ModuleDict({"background": torch.nn.Linear(width, len(spec.BACKGROUNDS) + 1),
                                          "occluder": torch.nn.Linear(width, 2),
                                          "count": torch.nn.Linear(width, slots + 1)})

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Token states (B, L, E) and mask (B, L) -> logits per field ((B, slots, k) or (B, k))."""
        scores = torch.einsum("qe,ble->bql", self.queries, self.key(states)) / states.shape[-1] ** 0.5  # (B, Q, L)
        scores = scores.masked_fill(~mask.bool()[:, None], float("-inf"))
        pooled = scores.softmax(-1) @ states  # (B, Q, E)
        out = {name: head(pooled[:, : self.slots]) for name, head in self.heads.items()}  # (B, slots, k)
        out.update({name: head(pooled[:, self.slots]) for name, head in self.scene.items()})  # (B, k)
        return out

    def targets(self, captions: list[str]) -> dict[str, torch.Tensor]:
        """Class indices of what each caption says (0 = none), parsed with the world's grammar."""
        t = {name: torch.zeros(len(captions), self.slots, dtype=torch.long) for name, _ in PROBE_FIELDS}
        t.update({name: torch.zeros(len(captions), dtype=torch.long) for name in self.scene})
        for i, caption in enumerate(captions):
            if not caption.strip():  # the empty prompt (caption dropout) says nothing: all "none"
                continue
            labels = language.parse(caption)
            for k, obj in enumerate(labels.objects[: self.slots]):
                for name, values in PROBE_FIELDS:
                    value = getattr(obj, name)
                    t[name][i, k] = values.index(value) + 1 if value in values else 0
            t["background"][i] = spec.BACKGROUNDS.index(labels.background) + 1 if labels.background else 0
            t["occluder"][i] = int(labels.occluder)
            t["count"][i] = min(len(labels.objects), self.slots)
        return t

    def loss(self, states: torch.Tensor, mask: torch.Tensor, captions: list[str]) -> tuple[torch.Tensor, float]:
        """Mean cross-entropy over every field, and the share of fields read correctly."""
        targets = {k: v.to(states.device) for k, v in self.targets(captions).items()}
        loss, accuracy = self.loss_from_targets(states, mask, targets)
        return loss, float(accuracy)

    def loss_from_targets(self, states: torch.Tensor, mask: torch.Tensor, targets: dict[str, torch.Tensor],
                          weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``loss`` from precomputed ``targets``, counting only the rows whose ``weight`` (B,) is 1.

        With ``weight`` each field's loss is the mean over the weighted rows (0 if none), as if the
        other rows were not in the batch. Nothing here waits for the device: the accuracy comes back
        as a tensor.
        """
        logits = self(states, mask)
        w = torch.ones(states.shape[0], device=states.device) if weight is None else weight.float()
        losses, right, total = [], [], []
        for name, target in targets.items():
            lg = logits[name].reshape(-1, logits[name].shape[-1])
            rows = w.repeat_interleave(target[0].numel())  # (B * slots) or (B,)
            ce = F.cross_entropy(lg, target.reshape(-1), reduction="none")
            losses.append((ce * rows).sum() / rows.sum().clamp(min=1.0))
            right.append(((lg.argmax(-1) == target.reshape(-1)).float() * rows).sum()); total.append(rows.sum())
        accuracy = torch.stack(right).sum() / torch.stack(total).sum().clamp(min=1.0)
        return torch.stack(losses).mean(), accuracy


def caption_tensors(text: TextEncoder, probe: CaptionProbe, captions: Sequence[str],
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], np.ndarray]:
    """Token ids and mask ``(N + 1, L)`` and probe targets of ``captions`` on ``device``, padded to
    the longest, and each row's token count (on the host, so a batch can be cut to its longest
    caption without waiting for the device); the extra last row is the empty prompt (caption dropout)."""
    captions = [*captions, ""]
    tokens = text.tokenize(captions)
    targets = probe.targets(captions)
    return (text_rows(text, tokens).to(device), tokens["attention_mask"].to(device),
            {k: v.to(device) for k, v in targets.items()}, tokens["attention_mask"].sum(1).numpy())


def text_rows(text: TextEncoder, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
    """What the training loop feeds the text encoder for each caption: token ids ``(N, L)``, or for an
    adapted encoder its frozen part's states ``(N, L, 384)``, computed here once (the loop then runs
    only the trained part; `encode_rows`). The frozen states are computed where the encoder is (on a GPU,
    not on the host: 60,000 captions are about 50 TFLOP through the frozen encoder)."""
    if not isinstance(text.encoder, AdaptedEncoder):
        return tokens["input_ids"]
    ids, mask = tokens["input_ids"].to(text.encoder.device), tokens["attention_mask"].to(text.encoder.device)
    return torch.cat([text.encoder.source(ids[i:i + 256], mask[i:i + 256]) for i in range(0, len(ids), 256)])


def encode_rows(encoder: torch.nn.Module, rows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token states ``(B, L, E)`` of ``text_rows`` output: ids through the whole encoder, frozen states
    through an adapted encoder's trained part."""
    if rows.is_floating_point():
        return encoder.adapt(rows, mask).last_hidden_state
    return encoder(input_ids=rows, attention_mask=mask).last_hidden_state


def clip_weights(captions: Sequence[str], count_weights: Sequence[float], occluder_weight: float = 1.0) -> np.ndarray:
    """Each caption's draw weight in the DiT stage: ``count_weights[n - 1]`` for a caption of n objects, times
    ``occluder_weight`` if it asks for the occluder bar."""
    table = np.asarray(count_weights, dtype=np.float64)
    labels = [language.parse(c) for c in captions]
    counts = np.array([len(lab.objects) for lab in labels])  # 1 .. MAX_OBJECTS
    bar = np.array([lab.occluder for lab in labels], dtype=bool)
    return table[np.clip(counts, 1, len(table)) - 1] * np.where(bar, float(occluder_weight), 1.0)


def batch_draw(cache: dict[str, Any], count_weights: Sequence[float],
               occluder_weight: float = 1.0) -> Callable[[np.random.Generator, int], tuple[str, np.ndarray]]:
    """The DiT stage's draw of a batch: ``draw(rng, n) -> (bucket key, n clip indices)``, a bucket (one
    latent shape) first, then n of its clips. With equal ``count_weights`` and ``occluder_weight`` 1 every
    cached clip is alike: the bucket by its clip count, its clips uniformly. Otherwise a clip weighs
    `clip_weights` (``count_weights[k - 1]`` for k objects, times ``occluder_weight`` with the bar): the
    bucket by its clips' summed weight, its clips by theirs."""
    keys = sorted(cache["buckets"])
    if len(set(count_weights)) == 1 and occluder_weight == 1.0:
        clip_p = {k: None for k in keys}  # uniform within the bucket
        sums = np.array([len(cache["buckets"][k][1]) for k in keys], dtype=np.float64)
    else:
        clip_p = {k: clip_weights(cache["buckets"][k][1], count_weights, occluder_weight) for k in keys}
        sums = np.array([clip_p[k].sum() for k in keys])
        clip_p = {k: w / w.sum() if w.sum() > 0 else None for k, w in clip_p.items()}  # a bucket of weight 0 is never drawn
    bucket_p = sums / sums.sum()

    def draw(rng: np.random.Generator, n: int) -> tuple[str, np.ndarray]:
        key = keys[rng.choice(len(keys), p=bucket_p)]
        size = len(cache["buckets"][key][1])
        return key, rng.integers(0, size, n) if clip_p[key] is None else rng.choice(size, n, p=clip_p[key])
    return draw


_WORD_SHAPE = {w: shape for words in (language.SHAPE_WORDS, language.HELDOUT_SHAPE_WORDS)
               for shape, ws in words.items() for w in ws}
_SHAPE_WORD = re.compile(r"\b(" + "|".join(sorted(map(re.escape, _WORD_SHAPE), key=len, reverse=True)) + r")\b")


def swap_shape(caption: str, rng: np.random.Generator) -> str:
    """``caption`` with one of its shape words (chosen by ``rng``) replaced by a training word for
    another shape, everything else kept; "" when it names no shape (the empty prompt)."""
    hits = list(_SHAPE_WORD.finditer(caption))
    if not hits:
        return ""
    hit = hits[rng.integers(len(hits))]
    other = rng.choice([s for s in spec.SHAPES if s != _WORD_SHAPE[hit.group(1)]])
    return caption[: hit.start()] + str(rng.choice(language.SHAPE_WORDS[other])) + caption[hit.end():]


SWAP_VARIANTS = 2  # wrong-shape captions kept per cached caption for the shape contrast


def swapped_tensors(text: TextEncoder, captions: Sequence[str], seed: int, device: torch.device) -> list[tuple]:
    """For each of ``SWAP_VARIANTS``: token ids and mask ``(N + 1, L)`` of every caption with one
    shape word swapped (``swap_shape``), the row lengths and which rows name a shape (host arrays);
    the last row is the empty prompt, as in ``caption_tensors``."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(SWAP_VARIANTS):
        swapped = [swap_shape(c, rng) for c in captions] + [""]
        tokens = text.tokenize(swapped)
        out.append((text_rows(text, tokens).to(device), tokens["attention_mask"].to(device),
                    tokens["attention_mask"].sum(1).numpy(), np.array([bool(c) for c in swapped])))
    return out


def frame_difference_loss(x0_hat: torch.Tensor, x0: torch.Tensor, scale: torch.Tensor | float = 1.0) -> torch.Tensor:
    """The mean square error of the change between adjacent latent frames, (x0_hat[f+1] - x0_hat[f]) against
    (x0[f+1] - x0[f]), each row divided by ``scale`` as the x0 loss is (``recipe.motion_weight``).

    The plain x0 loss weighs an error shared by every frame (an object drawn a little off everywhere) and an
    error that flickers from frame to frame alike; this term counts only the second: the motion drawn wrong, or
    a frame that breaks from its neighbours. Latents are (B, C, F, h, w); a clip of one latent frame gives 0."""
    if x0_hat.shape != x0.shape or x0.dim() != 5:
        raise ValueError(f"x0_hat and x0 must be latents of one shape (B, C, F, h, w), got {tuple(x0_hat.shape)} "
                         f"and {tuple(x0.shape)}")
    if x0.shape[2] < 2:
        return x0_hat.sum() * 0.0
    err = (x0_hat - x0) / scale
    return err.diff(dim=2).pow(2).mean()


def shape_contrast_loss(x0_hat: torch.Tensor, x0_swap: torch.Tensor, x0: torch.Tensor, margin: float,
                        weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The shape-word contrast: the model's x0 estimate of a clip under its own caption must beat its
    estimate under the same caption with one shape word swapped, by a relative error ``margin``.

    x0_hat, x0_swap: estimates (B, C, F, h, w) from the same noisy latents under the true and the
    swapped caption; x0: the clean latents. Plain denoising weighs a shape word by the few outline
    cells it changes, so a model can learn position, colour and motion and still draw its outlines
    from the noise (bench/bench_reads.py: a 2.6% error gap for shape against 25-29% for colour and
    direction). Returns the hinge ``mean(relu(margin - gap))`` over the rows whose ``weight`` is 1,
    where gap = (e_swap - e_true) / e_true per clip, and the mean gap (both tensors: no device sync).
    """
    e_true = (x0_hat.float() - x0).pow(2).flatten(1).mean(1)
    e_swap = (x0_swap.float() - x0).pow(2).flatten(1).mean(1)
    gap = (e_swap - e_true) / e_true.detach().clamp(min=1e-6)
    w = weight.float()
    count = w.sum().clamp(min=1.0)
    return (F.relu(margin - gap) * w).sum() / count, (gap.detach() * w).sum() / count


def init_stats(recipe: Recipe, cache: dict[str, Any]) -> None:
    """Make the cache's latent statistics ``recipe.init_from``'s (the latent space its DiT was trained in)."""
    vae = json.loads((Path(recipe.init_from) / "vae" / "config.json").read_text())
    cache["channel_stats"] = (vae["latent_mean"], vae["latent_std"])


def load_init(recipe: Recipe, cache: dict[str, Any]) -> tuple[ShapesDiT, TextEncoder, embedded.EmbeddedBackend]:
    """The DiT and text encoder of ``recipe.init_from`` to fine-tune (loaded and sha256-checked as the
    package loads its weights; its low-noise expert's with ``ft_from`` "low"), with :func:`init_stats`, and the
    folder's backend. A recipe with a deeper ``dit_depth`` gets the folder's
    DiT grown to it (`ShapesDiT.grown`, computing the same at first); any other difference in the DiT's
    architecture is refused, by field."""
    backend = embedded.load_folder(recipe.init_from)
    dit, text, grow = init_networks(recipe, backend)
    init_stats(recipe, cache)
    return (dit.grown(recipe.dit_depth) if grow else dit), text, backend


def init_networks(recipe: Recipe, backend: embedded.EmbeddedBackend) -> tuple[ShapesDiT, TextEncoder, bool]:
    """``recipe.init_from``'s DiT and text encoder (``backend``'s; its expert's with ``ft_from`` "low") and whether
    the recipe grows the DiT; ValueError naming every field of the DiT's architecture that differs from the recipe
    (`main` asks before any stage, so a wrong folder is not found after the autoencoder's minutes)."""
    if recipe.ft_from == "low" and backend.low is None:
        raise ValueError(f"ft_from 'low' continues a folder's low-noise expert; {recipe.init_from!r} has none")
    dit, text = backend.low if recipe.ft_from == "low" else (backend.dit, backend.text)
    config = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in dit.config.items()}
    wanted = {"hidden_size": recipe.dit_hidden, "depth": recipe.dit_depth, "num_heads": recipe.dit_heads,
              "patch_size": list(recipe.dit_patch), "self_condition": recipe.self_condition, "rope": recipe.dit_rope}
    differ = {k: (v, config[k]) for k, v in wanted.items() if config[k] != v}
    grow = recipe.dit_depth > config["depth"]  # a deeper recipe grows the folder's DiT (it computes the same at first)
    if grow:
        differ.pop("depth")
    if differ:
        raise ValueError("init_from's DiT differs from the recipe (recipe, folder): "
                         + ", ".join(f"{k} {a!r} vs {b!r}" for k, (a, b) in differ.items()))
    return dit, text, grow


def caption_words(world) -> list[str]:
    """The text encoder's vocabulary: the world's words and punctuation."""
    return sorted(set(world.vocabulary()) | set(",.;:!?'\"-()"))


def caption_batch(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` fresh training-split captions (labels drawn and phrased by the world; no rendering)."""
    return [language.caption(world_sampler.draw_labels(rng, "train"), rng, phrasing="train") for _ in range(n)]


def train_text(recipe: Recipe, out: Path, text: TextEncoder, probe: CaptionProbe) -> None:
    """Pre-train ``text`` (in place) with the probe heads on captions alone; saved to ``text_final``."""
    final = out / "text_final"
    if (final / "text.safetensors").is_file():
        text.encoder.load_state_dict(load_file(str(final / "text.safetensors")), strict=False)
        probe.load_state_dict(load_file(str(final / "probe.safetensors")))
        log(out, stage="reused", folder=final.name)  # (as `reuse_steps` says of the stages that record their steps)
        return
    params = [p for p in text.encoder.parameters() if p.requires_grad] + list(probe.parameters())
    opt = torch.optim.AdamW(params, lr=recipe.text_lr, weight_decay=0.01)
    adapted = isinstance(text.encoder, AdaptedEncoder)
    if adapted:  # the frozen part's states of a pool of captions, computed once: the steps run the stack only
        t0 = time.perf_counter()
        pool = caption_batch(np.random.default_rng(step_seed(recipe.seed, "text", -1)), recipe.adapt_pool)
        tokens = text.tokenize(pool)
        with torch.no_grad():
            source, pool_mask = text_rows(text, tokens), tokens["attention_mask"]
        pool_targets = probe.targets(pool)
        log(out, stage="text", pool=len(pool), pool_s=time.perf_counter() - t0)
    t0 = time.perf_counter()
    for step in range(recipe.text_steps):
        rng = np.random.default_rng(step_seed(recipe.seed, "text", step))
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, recipe.text_steps, recipe.text_lr, 50)
        if adapted:
            idx = torch.from_numpy(rng.integers(0, len(pool), recipe.text_batch))
            length = int(pool_mask[idx].sum(1).max())
            mask = pool_mask[idx, :length]
            loss, acc = probe.loss_from_targets(encode_rows(text.encoder, source[idx, :length], mask), mask,
                                                {k: v[idx] for k, v in pool_targets.items()})
            acc = float(acc)
        else:
            captions = caption_batch(rng, recipe.text_batch)
            loss, acc = probe.loss(*text(captions), captions)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % (recipe.log_every * 4) == 0 or step == recipe.text_steps - 1:
            log(out, stage="text", step=step, loss=loss.item(), accuracy=acc,
                s_per_step=(time.perf_counter() - t0) / (step + 1))
    with atomic_folder(final) as folder:
        save_file(_dedup(text.encoder.state_dict()), str(folder / "text.safetensors"))
        save_file(probe.state_dict(), str(folder / "probe.safetensors"))


def token_alignment(teacher: TextEncoder, student: TextEncoder, captions: Sequence[str]
                    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
    """Both encoders' tokens of ``captions`` and, for each student token ``(B, Ls)``, the teacher token
    it stands for: the teacher token whose characters hold its first character (a word piece stands
    for its whole word); special tokens ([CLS], [SEP]) stand for the teacher's end token; padding -1."""
    t_tok = teacher.tokenizer(list(captions), padding=True, truncation=True, max_length=embedded.MAX_TOKENS,
                              return_tensors="pt", return_token_type_ids=False, return_offsets_mapping=True)
    s_tok = student.tokenizer(list(captions), padding=True, truncation=True, max_length=embedded.MAX_TOKENS,
                              return_tensors="pt", return_token_type_ids=False, return_offsets_mapping=True)
    t_off, s_off = t_tok.pop("offset_mapping"), s_tok.pop("offset_mapping")
    index = torch.full(s_tok["input_ids"].shape, -1, dtype=torch.long)
    for b in range(len(captions)):
        t_len, s_len = int(t_tok["attention_mask"][b].sum()), int(s_tok["attention_mask"][b].sum())
        end = t_len - 1  # the teacher's end token
        spans = [(int(a), int(z)) for a, z in t_off[b, :end]]
        for j in range(s_len):
            a, z = (int(v) for v in s_off[b, j])
            if a == z:  # a special token
                index[b, j] = end
                continue
            index[b, j] = next((i for i, (ta, tz) in enumerate(spans) if ta <= a < tz), end)
    return dict(s_tok), dict(t_tok), index


def adapted_text(recipe: Recipe, out: Path, teacher: TextEncoder) -> TextEncoder:
    """A new adapted encoder (`models.build_adapted`, seeded by the recipe) trained by `adapt_text` to
    stand in for ``teacher``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed + 3)
        tokenizer, encoder = build_adapted(width=teacher.width, layers=recipe.text_layers)
    text = TextEncoder(tokenizer, encoder)
    adapt_text(recipe, out, teacher, text)
    return text


def adapt_text(recipe: Recipe, out: Path, teacher: TextEncoder, text: TextEncoder) -> None:
    """Train an adapted encoder ``text`` (in place) to give the states of a trained ``teacher``,
    token for token (`token_alignment`), on ``adapt_pool`` training captions and the empty prompt: a
    DiT trained with ``teacher`` then reads ``text`` alike, and ``text``'s frozen pretrained part carries
    it to words and phrasings no training caption has. The frozen part's states are computed once for
    the pool (the steps train only the projection and the small stack). Saved to ``adapt_final``;
    resumable (a finished stage is reloaded)."""
    final = out / "adapt_final"
    if (final / "text.safetensors").is_file():
        text.encoder.load_state_dict(load_file(str(final / "text.safetensors")), strict=False)
        return
    t0 = time.perf_counter()
    captions = caption_batch(np.random.default_rng(step_seed(recipe.seed, "adapt", 0)), recipe.adapt_pool) + [""]
    s_tok, t_tok, index = token_alignment(teacher, text, captions)
    mask = s_tok["attention_mask"]
    with torch.no_grad():
        source = text_rows(text, s_tok)  # (N, Ls, 384)
        want = torch.cat([teacher.encoder(input_ids=t_tok["input_ids"][i:i + 256],
                                          attention_mask=t_tok["attention_mask"][i:i + 256]).last_hidden_state
                          for i in range(0, len(captions), 256)])  # (N, Lt, E)
        scale = want[t_tok["attention_mask"].bool()].var()
        target = torch.gather(want, 1, index.clamp(min=0)[..., None].expand(-1, -1, want.shape[-1]))  # (N, Ls, E)
    valid = index >= 0
    log(out, stage="adapt", pool=len(captions), pool_s=time.perf_counter() - t0)
    params = [p for p in text.encoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=recipe.adapt_lr, weight_decay=0.01)
    t0 = time.perf_counter()
    for step in range(recipe.adapt_steps):
        rng = np.random.default_rng(step_seed(recipe.seed, "adapt", step + 1))
        idx = torch.from_numpy(rng.integers(0, len(captions), recipe.adapt_batch))
        got = text.encoder.adapt(source[idx], mask[idx]).last_hidden_state  # (B, Ls, E)
        loss = ((got - target[idx])[valid[idx]] ** 2).mean() / scale  # relative to the teacher's variance
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, recipe.adapt_steps, recipe.adapt_lr, 50)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % (recipe.log_every * 4) == 0 or step == recipe.adapt_steps - 1:
            log(out, stage="adapt", step=step, loss=loss.item(), s_per_step=(time.perf_counter() - t0) / (step + 1))
    with atomic_folder(final) as folder:
        save_file(_dedup(text.encoder.state_dict()), str(folder / "text.safetensors"))


# -- stage 4: the diffusion transformer -----------------------------------------------------------
def latent_stats(cache: dict[str, Any], norm: str = "channel") -> tuple[list[float], list[float]]:
    """Per-channel mean and std of every cached latent (the autoencoder's channels differ in scale).

    A cache dict with ``"channel_stats"`` ((mean, std) lists per channel) uses those instead of the latents.
    ``norm="global"`` keeps the per-channel means but one std for all channels (the root mean square
    of the channel stds), so the latent keeps the autoencoder's relative channel scales: a loss in
    that space weighs an error by how much it changes the pixels, and the faint detail channels do
    not get the same weight (and the same signal-to-noise ratio at every noise level) as the coarse ones.
    """
    if "channel_stats" in cache:  # measured where the cache was built (a GPU run's cache stays there)
        mean, std = (torch.tensor(v, dtype=torch.float32) for v in cache["channel_stats"])
    else:
        flat = torch.cat([lat.float().transpose(0, 1).reshape(lat.shape[1], -1) for lat, _ in cache["buckets"].values()],
                         dim=1)  # (C, n)
        mean, std = flat.mean(1), flat.std(1)
    # a channel constant over the cache (a small cache's shape channel of a shape it never drew) is left
    # unscaled; dividing by its zero std gave inf latents and a failed export
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    if norm == "global":
        std = std.pow(2).mean().sqrt().expand_as(std)
    elif norm != "channel":
        raise ValueError(f"latent_norm must be 'channel' or 'global', got {norm!r}")
    return mean.tolist(), std.tolist()


def distil_grid(steps: int, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``steps``-step sampler's noise levels (``steps`` + 1, ending at 0; the embedded model's
    `FlowMatchEulerDiscreteScheduler` with ``shift``) and the level halfway between each and the next in
    unshifted time, where a sampler of twice the steps stops in between."""
    sched = FlowMatchEulerDiscreteScheduler.from_config(embedded.default_scheduler_config(shift))
    sched.set_timesteps(steps)
    sigmas = sched.sigmas.float()
    u = sigmas / (shift - (shift - 1.0) * sigmas)  # unshift: sigma = shift u / (1 + (shift - 1) u)
    mid = (u[:-1] + u[1:]) / 2
    return sigmas, shift * mid / (1.0 + (shift - 1.0) * mid)


def level_weights(sigmas: torch.Tensor, profile: tuple[tuple[float, float], ...]) -> torch.Tensor:
    """Draw weights of a grid's levels (all but its last, 0) by noise level: for each, the weight of the
    first pair of ``profile`` with sigma > sigma_above, else 1 (the recipe's ``ft_level_weights``)."""
    def weight(v: float) -> float:
        return next((w for above, w in profile if v > above), 1.0)
    return torch.tensor([weight(v) for v in sigmas[:-1].tolist()], dtype=torch.float64)


def _level_guidance(levels: torch.Tensor, guidance: float, profile: tuple[tuple[float, float], ...],
                    device: torch.device) -> torch.Tensor:
    """The guidance of each noise level in ``levels`` (`embedded.guidance_at`), read on the host once and moved
    to ``device`` (no per-row host reads of device tensors)."""
    return torch.tensor([embedded.guidance_at(profile, guidance, v) for v in levels.tolist()], device=device)


def _guided_x0(teacher: ShapesDiT, states: torch.Tensor, masks: torch.Tensor, x: torch.Tensor, s: torch.Tensor,
               w: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The teacher's guided x0 for rows ``rows`` of a batch of n (``states``/``masks``: the n prompts' text states,
    then the n empty prompts'), at levels ``s`` with guidance ``w`` per row: (guided, prompt's, empty prompt's)."""
    n = len(states) // 2
    both = torch.cat([rows, rows + n])  # the rows' prompt and empty-prompt states
    c, u = teacher.predict_x0(torch.cat([x, x]), torch.cat([s, s]) * 1000.0, states[both], masks[both]).float().chunk(2)
    return u + w.view(-1, 1, 1, 1, 1) * (c - u), c, u


@torch.no_grad()
def sampler_inputs(teacher: ShapesDiT, cond: tuple[torch.Tensor, torch.Tensor], uncond: tuple[torch.Tensor, torch.Tensor],
                   x0: torch.Tensor, sigmas: torch.Tensor, g: torch.Generator, guidance: float = 1.0,
                   profile: tuple[tuple[float, float], ...] = (), chain: float = 0.5,
                   weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noisy latents as the stochastic (eta 1) guided sampler meets them: (x_t, sigma, level index per row).

    Each row takes a level ``i`` of the sampler's grid ``sigmas`` (`distil_grid`; the last, 0, is never taken),
    every level alike, or drawn with ``weights`` (one per level but the last; `level_weights`).
    Its x_t is a clean latent noised to sigma_i: the true ``x0``, or, for a ``chain`` share of the rows with a
    level above them, the teacher's guided estimate from the level before (``guidance`` with ``profile``,
    `embedded.guidance_at`; ``cond`` and ``uncond`` are the prompt's and the empty prompt's text states and masks),
    as x_t is at sampling time, where each step keeps only its x0 estimate and draws fresh noise."""
    n, dev = len(x0), x0.device
    view = (-1, 1, 1, 1, 1)
    states, masks = torch.cat([cond[0], uncond[0]]), torch.cat([cond[1], uncond[1]])
    weight = _level_guidance(sigmas, guidance, profile, dev)
    sigmas = sigmas.to(dev)
    if weights is None:
        i = torch.randint(len(sigmas) - 1, (n,), generator=g, device=dev)
    else:
        i = torch.multinomial(weights.to(dev), n, replacement=True, generator=g)
    s = sigmas[i]
    prev = (i - 1).clamp(min=0)
    s_prev = sigmas[prev]
    chained = (torch.rand(n, generator=g, device=dev) < chain) & (i > 0)
    before = (1 - s_prev.view(view)) * x0 + s_prev.view(view) * torch.randn(x0.shape, generator=g, device=dev)
    start = x0.clone()
    rows = chained.nonzero()[:, 0]
    if len(rows):
        start[rows] = _guided_x0(teacher, states, masks, before[rows], s_prev[rows], weight[prev[rows]], rows)[0]
    xt = (1 - s.view(view)) * start + s.view(view) * torch.randn(x0.shape, generator=g, device=dev)
    return xt, s, i


@torch.no_grad()
def distil_targets(teacher: ShapesDiT, cond: tuple[torch.Tensor, torch.Tensor], uncond: tuple[torch.Tensor, torch.Tensor],
                   said: torch.Tensor, x0: torch.Tensor, grid: tuple[torch.Tensor, torch.Tensor], g: torch.Generator,
                   guidance: float = 1.0, profile: tuple[tuple[float, float], ...] = (), chain: float = 0.5
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One batch of step distillation for the stochastic (eta 1) guided sampler: (x_t, sigma, target).

    Each row's x_t is a noisy latent at a level ``i`` of the student's grid (`distil_grid`), as the sampler meets
    it (`sampler_inputs`, with ``chain``). The teacher then takes the two steps its sampler of twice the steps
    takes from x_t: its guided x0 at sigma_i (``guidance`` with ``profile``; ``cond`` and ``uncond`` are the
    prompt's and the empty prompt's text states and masks), noised afresh to the level halfway, and there its
    two branches' x0. The target is the prompt's branch for the rows whose caption is ``said``, the empty
    prompt's for the rest. With eta 1 every step keeps only its x0 estimate, so a student whose branches at
    sigma_i match these targets, mixed by the same guidance, takes one step where the teacher takes two
    (Salimans & Ho's progressive distillation, for the stochastic sampler: the student learns the mean over
    the fresh noise)."""
    sigmas, mids = grid
    n, dev = len(x0), x0.device
    view = (-1, 1, 1, 1, 1)
    states, masks = torch.cat([cond[0], uncond[0]]), torch.cat([cond[1], uncond[1]])
    xt, s, i = sampler_inputs(teacher, cond, uncond, x0, sigmas, g, guidance, profile, chain)
    weights = [_level_guidance(levels, guidance, profile, dev) for levels in (sigmas, mids)]
    s_mid = mids.to(dev)[i]
    everyone = torch.arange(n, device=dev)
    first = _guided_x0(teacher, states, masks, xt, s, weights[0][i], everyone)[0]
    x_mid = (1 - s_mid.view(view)) * first + s_mid.view(view) * torch.randn(x0.shape, generator=g, device=dev)
    _, c, u = _guided_x0(teacher, states, masks, x_mid, s_mid, weights[1][i], everyone)
    return xt, s, torch.where(said.view(view), c, u)


def finished_stage(out: Path, name: str = "dit") -> bool:
    """Whether ``out`` holds the DiT stage ``name``'s finished networks (``<name>_final``), which `train_dit`
    then loads instead of training."""
    return (Path(out) / f"{name}_final" / "dit" / "config.json").is_file()


REFIT_EVERY = 250  # a budgeted DiT stage checks its pace again every this many steps after step 100 (`train_dit`)


def train_dit(recipe: Recipe, out: Path, world, cache: dict[str, Any], deadline: float | None = None,
              init: tuple[ShapesDiT, TextEncoder, float] | None = None, reserve: float = 0.0,
              name: str = "dit", record: Callable[[int], None] | None = None) -> tuple[ShapesDiT, TextEncoder]:
    """Flow-matching training of the DiT and the text encoder; returns the EMA weights (a finished stage's, saved
    with the steps it ran, are loaded again, and those steps go back into ``recipe.dit_steps``). ``deadline`` (a
    ``time.perf_counter()`` value): the steps' wall budget is what is left of it when they start, after the text
    pre-training (or ``dit_seconds``, if that is less), less ``reserve`` steps at this stage's pace (kept for a
    stage after it). ``init`` (a DiT, a text encoder and a guidance): start from copies of these networks instead of
    fresh ones or ``init_from``'s folder; the teacher of ``ft_chain`` / ``ft_distil`` is them, sampling at that
    guidance (a full run's chain stage, `chain_stage`). ``name``: the stage's name in the log and of its
    folders (``<name>_final``, ``<name>_ckpt``). ``record``: called with the steps run before the finished stage is
    saved, to write them into the run's own ``recipe.json`` (`main`, `tune_dit`: ``recipe`` may be a stage's copy,
    whose recipe.json a stop before the caller's own write left for the next call to be refused by); without it a
    stage named "dit" writes ``recipe`` itself (a direct call, as ``scripts/train_gpu.py``'s)."""
    final = out / f"{name}_final"
    if finished_stage(out, name):
        reuse_steps(final, recipe, "dit_steps")
        dit = ShapesDiT.from_pretrained(final / "dit", use_safetensors=True, low_cpu_mem_usage=False)
        if recipe.init_from:
            init_stats(recipe, cache)  # the latent statistics it was fine-tuned in
        return dit.eval(), TextEncoder.from_pretrained(final).eval()
    words = caption_words(world)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed + 1)
        if recipe.text_pretrained and not recipe.init_from:  # the frozen encoder under a fresh trained stack
            tokenizer, encoder = build_adapted(recipe.text_pretrained, width=recipe.text_width, layers=recipe.text_layers)
        else:
            tokenizer = embedded.build_tokenizer(words)
            encoder = embedded.build_encoder(len(tokenizer), width=recipe.text_width, layers=recipe.text_layers)
        text = TextEncoder(tokenizer, encoder)
        dit = ShapesDiT(latent_channels=next(iter(cache["buckets"].values()))[0].shape[1],
                        hidden_size=recipe.dit_hidden, depth=recipe.dit_depth, num_heads=recipe.dit_heads,
                        patch_size=tuple(recipe.dit_patch), text_dim=text.width,
                        self_condition=recipe.self_condition, rope=recipe.dit_rope)
        probe = CaptionProbe(text.width)
    folder = None  # init_from's backend (its main DiT teaches a continuation of its expert)
    if init is not None:  # trainable copies (the frozen pretrained encoder is not a parameter of the stack)
        dit, text = _copy(init[0], True).train(), TextEncoder(init[1].tokenizer, _copy(init[1].encoder, True).train())
        tokenizer = text.tokenizer
    elif recipe.init_from:
        dit, text, folder = load_init(recipe, cache)
        if recipe.adapt_steps and not isinstance(text.encoder, AdaptedEncoder):
            text = adapted_text(recipe, out, text)
        tokenizer = text.tokenizer
    else:
        train_text(recipe, out, text, probe)
    device = torch.device(recipe.device)
    dit.to(device); text.encoder.to(device); probe.to(device)
    teacher = None
    if recipe.ft_distil or recipe.ft_chain:  # the folder's networks as they are now, frozen: its sampler
        kind = "ft_distil" if recipe.ft_distil else "ft_chain"
        if init is not None:
            guidance = float(init[2])
        elif not recipe.init_from:
            raise ValueError(f"{kind} reads a finished folder's sampler: it needs init_from (--rescore WEIGHTS --tune-dit)")
        else:  # the teacher samples as the folder does by default: its guidance, with the recipe's guidance profile
            guidance = float(json.loads((Path(recipe.init_from) / "manifest.json").read_text()).get("default_guidance", 1.0))
        # the folder's main DiT at every level, also for a continuation of its expert (``ft_from`` "low"): a
        # teacher with both DiTs, each at its own levels, made a worse expert (thirty-fourth session, bench/RESULTS.md)
        main = (folder.dit.to(device), folder.text.encoder.to(device)) if recipe.ft_from == "low" else (dit, text.encoder)
        teacher = (_copy(main[0]).eval(), _copy(main[1]).eval(), guidance)
        grid = distil_grid(recipe.ft_distil or recipe.ft_chain, recipe.sample_shift)
        chain_weights = level_weights(grid[0], recipe.ft_level_weights) if recipe.ft_level_weights else None
    ema_dit, ema_text = _copy(dit), _copy(text.encoder)
    params = list(dit.parameters()) + list(text.encoder.parameters()) + list(probe.parameters())
    opt = torch.optim.AdamW(params, lr=recipe.dit_lr, weight_decay=0.01, betas=(0.9, 0.99),
                            fused=device.type == "cuda")  # one kernel per step on a GPU, not one per tensor
    start, ckpt = 0, out / f"{name}_ckpt"
    recover_folder(ckpt)
    if (ckpt / "state.json").is_file():
        dit.load_state_dict(load_file(str(ckpt / "dit.safetensors")))
        text.encoder.load_state_dict(load_file(str(ckpt / "text.safetensors")), strict=False)
        ema_dit.load_state_dict(load_file(str(ckpt / "ema_dit.safetensors")))
        ema_text.load_state_dict(load_file(str(ckpt / "ema_text.safetensors")), strict=False)
        probe.load_state_dict(load_file(str(ckpt / "probe.safetensors")))
        load_optimizer(opt, ckpt / "optim")
        state = json.loads((ckpt / "state.json").read_text())
        start, recipe.dit_steps = state["step"], state.get("dit_steps", recipe.dit_steps)
        log(out, stage="resume", of=name, step=start)  # the log's later steps follow this checkpoint, not the lines above
    mean, std = (torch.tensor(v, device=device).view(1, -1, 1, 1, 1) for v in latent_stats(cache, recipe.latent_norm))
    draw = batch_draw(cache, recipe.count_weights, recipe.occluder_weight)
    on_device = {k: lat.to(device) for k, (lat, _) in cache["buckets"].items()}
    # every cached caption tokenised and parsed once: the loop only indexes tensors (no per-step
    # tokenising or parsing on the host, which on a GPU costs more than the step's arithmetic)
    captions_on_device = {k: caption_tensors(text, probe, caps, device) for k, (_, caps) in cache["buckets"].items()}
    swapped_on_device = {k: swapped_tensors(text, caps, step_seed(recipe.seed, "swap", 0), device)
                         for k, (_, caps) in cache["buckets"].items()} if recipe.shape_contrast else {}
    t0 = time.perf_counter()
    budget = recipe.dit_seconds
    if deadline is not None and start < 100:  # a resumed run past step 100 keeps the step count it fixed
        # what the deadline leaves, or the stage's own wall budget (a chain stage's ft_seconds) if that is less
        budget = min(max(1.0, deadline - t0), recipe.dit_seconds or math.inf)
        log(out, stage=name, budget_s=budget,
            **({"train_minutes": recipe.train_minutes} if recipe.train_minutes else {}),
            **({"dit_seconds": recipe.dit_seconds} if recipe.dit_seconds else {}))
    step, asked = start, recipe.dit_steps  # a budget fits the count to the pace, never above the count asked for
    while step < recipe.dit_steps:
        if budget and step == start + 100 < recipe.dit_steps:
            # a wall budget: fix the step count from the pace so far (before the warm-up ends, so the
            # cosine schedule is the one the run follows throughout)
            pace = (time.perf_counter() - t_pace) / 80
            fit = int((budget - (time.perf_counter() - t0)) / pace - reserve)
            recipe.dit_steps = min(recipe.dit_steps, step + max(0, fit))
            log(out, stage=name, step=step, s_per_step=pace, budget_s=budget, reserve_steps=reserve,
                dit_steps=recipe.dit_steps)
            if step >= recipe.dit_steps:  # the budget (less the reserve) was spent by step 100
                break
        elif budget and step > start + 100 and (step - start) % REFIT_EVERY == 0:
            # the pace drifts (the fifty-first session's course run: 0.57 s a step at step 100, 0.65 by step
            # 1000, 0.59 over the run, which ended 64 s over its budget): fit the count again at the mean pace
            # since step 20, up to the count asked for, so the stage ends within its budget with its schedule
            # finished, not cut off by the guard below with its learning rate still high
            pace = (time.perf_counter() - t_pace) / (step - start - 20)
            fit = max(step + 1, min(asked, step + int((budget - (time.perf_counter() - t0)) / pace - reserve)))
            if fit != recipe.dit_steps:
                log(out, stage=name, step=step, s_per_step=pace, budget_s=budget, reserve_steps=reserve,
                    dit_steps=fit, refit_from=recipe.dit_steps)
                recipe.dit_steps = fit
        if budget and time.perf_counter() - t0 > 1.15 * budget:
            log(out, stage=name, step=step, stopped="over the wall budget")
            recipe.dit_steps = step
            break
        if step == start + 20:
            t_pace = time.perf_counter()
        rng = np.random.default_rng(step_seed(recipe.seed, "dit", step))
        g = torch.Generator(device).manual_seed(step_seed(recipe.seed, "dit", step))
        key, idx = draw(rng, recipe.dit_batch)
        latents, (ids, tmask, targets, lengths) = on_device[key], captions_on_device[key]
        said = rng.random(recipe.dit_batch) >= recipe.caption_dropout  # dropped captions become ""
        length = int(max(lengths[idx][said].max(initial=0), lengths[-1]))  # the batch's longest prompt
        nc = recipe.dit_batch // 2 if recipe.shape_contrast else 0  # rows also shown a wrong shape word
        if nc:
            sw_ids, sw_mask, sw_lengths, sw_named = swapped_on_device[key][int(rng.integers(SWAP_VARIANTS))]
            contrast_rows = said[:nc] & sw_named[idx[:nc]]
            length = int(max(length, sw_lengths[idx[:nc]].max()))
        both = torch.from_numpy(np.stack([idx, said.astype(np.int64)]))
        idx_d, said_d = (both.pin_memory() if device.type == "cuda" else both).to(device, non_blocking=True)
        x0 = (latents[idx_d].float() - mean) / std  # (B, C, F, h, w)
        said_d = said_d.bool()[:, None]
        pick = said_d if ids.dim() == 2 else said_d[..., None]  # rows are ids (B, L) or frozen states (B, L, 384)
        ids_b = torch.where(pick, ids[idx_d, :length], ids[-1, :length])  # the last row is the empty prompt
        mask = torch.where(said_d, tmask[idx_d, :length], tmask[-1, :length])
        if nc:  # the swapped captions ride in the same text and DiT calls, as extra rows
            ids_b = torch.cat([ids_b, sw_ids[idx_d[:nc], :length]])
            mask = torch.cat([mask, sw_mask[idx_d[:nc], :length]])
        # noise levels: half logit-normal (mid levels, where the image forms), half uniform so the
        # levels near 1 that sampling starts from are trained too
        n = recipe.dit_batch
        if teacher is not None:  # the teacher's sampler makes x_t (ft_chain), and the target too (ft_distil)
            full = int(max(lengths[idx].max(), lengths[-1]))  # every row's prompt, said or not, and the empty one
            ids_c, mask_c = ids[idx_d, :full], tmask[idx_d, :full]
            ids_u, mask_u = ids[-1:, :full].expand(n, *[-1] * (ids.dim() - 1)), tmask[-1:, :full].expand(n, -1)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=recipe.bf16):
                t_states = encode_rows(teacher[1], torch.cat([ids_c, ids_u]), torch.cat([mask_c, mask_u]))
                cond, uncond = (t_states[:n], mask_c), (t_states[n:], mask_u)
                if recipe.ft_distil:
                    xt, sigma, x0 = distil_targets(teacher[0], cond, uncond, said_d[:, 0], x0, grid, g, teacher[2],
                                                   recipe.sample_guidance_profile)
                else:  # the target stays the clean latent: the model learns to mend its own sampler's estimates
                    xt, sigma, _ = sampler_inputs(teacher[0], cond, uncond, x0, grid[0], g, teacher[2],
                                                  recipe.sample_guidance_profile, weights=chain_weights)
        else:
            sigma = torch.where(torch.rand(n, generator=g, device=device) < 0.5,
                                torch.sigmoid(torch.randn(n, generator=g, device=device) + recipe.sigma_shift),
                                torch.rand(n, generator=g, device=device))
            noise = torch.randn(x0.shape, generator=g, device=device)
            xt = (1 - sigma.view(-1, 1, 1, 1, 1)) * x0 + sigma.view(-1, 1, 1, 1, 1) * noise
        s = sigma.view(-1, 1, 1, 1, 1)
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, recipe.dit_steps, recipe.dit_lr, recipe.dit_warmup)
        states = encode_rows(text.encoder, ids_b, mask)  # (B [+ nc], L, E)
        x_in, t_in = (torch.cat([xt, xt[:nc]]), torch.cat([sigma, sigma[:nc]])) if nc else (xt, sigma)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=recipe.bf16):
            x0_prev = None
            if recipe.self_condition and rng.random() < 0.5:
                # self-conditioning (Chen et al. 2022): half the time the model first estimates x0 without
                # help, then sees that estimate, as it will see the previous step's at sampling time
                with torch.no_grad():
                    x0_prev = dit.predict_x0(x_in, t_in * 1000.0, states.detach(), mask)
            x0_all = dit.predict_x0(x_in, t_in * 1000.0, states, mask, x0_prev)  # (B [+ nc], C, F, h, w)
        x0_hat = x0_all[:n]
        # x0 loss weighted 1 / max(s, floor)^2: floor 1 is the plain x0 MSE, 0.05 the velocity loss
        scale = s.clamp(min=recipe.loss_floor)
        loss = F.mse_loss((x0_hat - x0) / scale, torch.zeros_like(x0))
        if recipe.motion_weight:
            loss = loss + recipe.motion_weight * frame_difference_loss(x0_hat, x0, scale)
        if nc:
            rows = torch.from_numpy(contrast_rows).to(device) & (sigma[:nc] >= recipe.shape_sigma)
            contrast, gap = shape_contrast_loss(x0_hat[:nc], x0_all[n:], x0[:nc], recipe.shape_margin, rows)
            loss = loss + recipe.shape_contrast * contrast
        if recipe.probe_weight:
            probe_loss, _ = probe.loss_from_targets(states[:n], mask[:n], {k: v[idx_d] for k, v in targets.items()},
                                                    said_d[:, 0])
            loss = loss + recipe.probe_weight * probe_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(recipe.ema_decay, (1 + step) / (10 + step))
        _ema_update(ema_dit, dit, decay)
        _ema_update(ema_text, text.encoder, decay)
        if step % recipe.log_every == 0 or step == recipe.dit_steps - 1:
            extra = {"contrast": contrast.item(), "shape_gap": gap.item()} if nc else {}
            log(out, stage=name, step=step, loss=loss.item(), lr=opt.param_groups[0]["lr"],
                s_per_step=(time.perf_counter() - t0) / (step - start + 1), **extra)
        if (step + 1) % recipe.ckpt_every == 0 and step + 1 < recipe.dit_steps:
            with atomic_folder(ckpt) as folder:  # whole or not at all: a kill mid-write keeps the last one
                save_file(dit.state_dict(), str(folder / "dit.safetensors"))
                save_file(_dedup(text.encoder.state_dict()), str(folder / "text.safetensors"))
                save_file(ema_dit.state_dict(), str(folder / "ema_dit.safetensors"))
                save_file(_dedup(ema_text.state_dict()), str(folder / "ema_text.safetensors"))
                save_file(probe.state_dict(), str(folder / "probe.safetensors"))
                save_optimizer(opt, folder / "optim")
                (folder / "state.json").write_text(json.dumps({"step": step + 1, "dit_steps": recipe.dit_steps}))
        step += 1
    ema_dit.to("cpu"); ema_text.to("cpu")
    if record is not None:
        record(recipe.dit_steps)
    elif name == "dit":
        write_recipe(out, recipe)  # with the steps run
    text_ema = TextEncoder(tokenizer, ema_text)
    with atomic_folder(final) as folder:
        ema_dit.save_pretrained(folder / "dit", safe_serialization=True)
        text_ema.save_pretrained(folder)
        (folder / "steps.json").write_text(json.dumps({"steps": recipe.dit_steps}))
    shutil.rmtree(ckpt, ignore_errors=True)
    return ema_dit.eval(), text_ema.eval()


def tuned_depth(recipe: Recipe, depth: int) -> int:
    """The DiT's depth after the fine-tune of a folder whose DiT has ``depth`` blocks (``ft_depth``, 0: ``depth``)."""
    if recipe.ft_depth and recipe.ft_depth < depth:
        raise ValueError(f"ft_depth must be 0 (keep the depth) or >= the folder's DiT depth {depth}, got {recipe.ft_depth}")
    return recipe.ft_depth or depth


def tune_dit(recipe: Recipe, out: Path, world, weights: Path, vae: VideoAutoencoder) -> tuple[ShapesDiT, TextEncoder]:
    """Fine-tune a finished weights folder's DiT and text encoder (`train_dit` with ``init_from``) for
    ``recipe.ft_steps`` at peak lr ``ft_lr``, on a cache of the recipe's ``cache`` entries drawn once with each
    of ``ft_cache_seeds`` (the first DiT stage's clips are seed ``seed``'s; another seed gives new ones), its
    batches and noise from ``ft_seed``, in the folder's latent statistics. The latent is ``vae``'s (the
    folder's autoencoder; after the pixel-encoder stage `pixel_label_latent`, which is what its decoder was
    last trained on). ``ft_depth`` above the folder's depth first grows the DiT (`ShapesDiT.grown`: new blocks
    that start as the identity). ``ft_distil`` N > 0 trains on the folder's own sampler instead of the clean latents:
    the targets are its two guided steps of the 2N-step sampler (`distil_targets`), so that N steps of the result
    do what 2N of the folder's do. ``ft_chain`` N > 0 keeps the clean latents as targets but draws each row's noisy
    latent at a level of the folder's N-step sampler, half of them from its own guided estimate one level up
    (`sampler_inputs`): the inputs the DiT meets when it samples, not only noised true clips. Resumable: the caches and the finished stage are kept in ``out``. Returns the EMA weights."""
    depth = tuned_depth(recipe, json.loads((Path(weights) / "dit" / "config.json").read_text())["depth"])
    stage = ft_stage(recipe, init_from=str(weights), dit_depth=depth)
    # a finished stage (trained here or elsewhere, e.g. on a GPU machine whose cache stayed there) needs no cache
    buckets = {} if finished_stage(out) else ft_buckets(recipe, out, world, vae)

    def record(steps: int) -> None:  # ft_seconds may have fixed the step count at step 100: the steps it ran
        recipe.ft_steps = steps
        write_recipe(out, recipe)  # the folder's recipe, never the stage's copy

    dit, text = train_dit(stage, out, world, {"buckets": buckets}, record=record)
    record(stage.dit_steps)  # (a finished stage, reloaded, too)
    return dit, text


def ft_buckets(recipe: Recipe, out: Path, world, vae: VideoAutoencoder) -> dict[str, tuple[torch.Tensor, list[str]]]:
    """A fine-tune's latent cache: the recipe's ``cache`` entries drawn once with each of ``ft_cache_seeds``,
    encoded by ``vae`` (`pixel_label_latent` after the pixel-encoder stage), kept in ``out/ft_cache_<seed>``."""
    buckets: dict[str, tuple[torch.Tensor, list[str]]] = {}
    for seed in recipe.ft_cache_seeds:
        part = build_cache(dataclasses.replace(recipe, seed=seed), out, world, vae, pixels=recipe.pixel_latent,
                           name=f"ft_cache_{seed}")
        for latents, caps in part["buckets"].values():
            add_to_bucket(buckets, latents, caps)
    return buckets


def ft_stage(recipe: Recipe, **changes: Any) -> Recipe:
    """The DiT stage's recipe for a fine-tune: ``ft_steps`` at peak lr ``ft_lr`` from ``ft_seed``, within the wall
    budget ``ft_seconds`` if one is set (the DiT stage's own ``dit_seconds`` is not the fine-tune's). Its
    ``train_minutes`` is 0: the run's hour is not a stage's budget (a full run's chain stage is given what the hour
    leaves as its ``deadline``, `chain_stage`, and keeps the smaller of that and ``ft_seconds``; a folder's
    recorded hour is not a --tune-dit fine-tune's), and a stage recipe with both budgets was refused by `Recipe`
    after every stage before it had run."""
    return dataclasses.replace(recipe, seed=recipe.ft_seed, dit_steps=recipe.ft_steps, dit_lr=recipe.ft_lr,
                               dit_warmup=recipe.ft_warmup, dit_seconds=recipe.ft_seconds, train_minutes=0.0,
                               **changes)


# A chain step (the teacher's guided estimate, then a training step) costs this many DiT steps: measured on the
# 2-core CPU, 0.447 s against 0.316 s (bench/RESULTS.md, twenty-fifth session). A full run's DiT stage leaves
# ft_steps of them of the hour to the chain stage; the chain stage then fits its own steps to what is left.
CHAIN_STEP_COST = 1.45


def chain_stage(recipe: Recipe, out: Path, world, buckets: dict[str, tuple[torch.Tensor, list[str]]],
                cache: dict[str, Any], dit: ShapesDiT, text: TextEncoder, deadline: float | None = None
                ) -> tuple[ShapesDiT, TextEncoder]:
    """A full run's last stage (``ft_chain`` N > 0 and ``ft_steps`` > 0): the DiT stage's networks fine-tuned on
    their own N-step sampler's inputs, as ``--rescore WEIGHTS --tune-dit`` does to a finished folder, the teacher
    sampling at the recipe's one guidance candidate. Its clips are ``buckets`` (`ft_buckets` through the finished
    autoencoder, whose encoder is the one the exported model has), in the DiT stage's (``cache``'s) latent statistics. Trained in
    ``out/chain_final`` (resumable; logged as stage "chain"); ``recipe.ft_steps`` becomes the steps it ran (fewer if ``deadline`` came first)."""
    stage = ft_stage(recipe)
    tuned = train_dit(stage, out, world, {"buckets": buckets, "channel_stats": latent_stats(cache)}, deadline,
                      init=(dit, text, recipe.guidance_candidates[0]), name="chain")
    recipe.ft_steps = stage.dit_steps
    return tuned


def _copy(module: torch.nn.Module, trainable: bool = False) -> torch.nn.Module:
    """A frozen copy of a module (for the EMA and a teacher), or with ``trainable`` one to train."""
    import copy

    clone = copy.deepcopy(module)
    for p in clone.parameters():
        p.requires_grad_(trainable)
    return clone


def _dedup(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop tied duplicates (T5 shares its embedding) so safetensors can save the dict."""
    seen, out = set(), {}
    for k, v in state.items():
        if v.data_ptr() in seen:
            continue
        seen.add(v.data_ptr())
        out[k] = v.contiguous()
    return out


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema = decay * ema + (1 - decay) * model."""
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1 - decay)


# -- stage 5: export and evaluate -----------------------------------------------------------------
def export(recipe: Recipe, out: Path, world, vae: VideoAutoencoder, dit: ShapesDiT, text: TextEncoder,
           cache: dict[str, Any], seconds: dict[str, float], done_before: Sequence[str] = (),
           low: tuple[ShapesDiT, TextEncoder] | None = None, verifier: Any = None,
           redraw_below: float | None = None) -> Path:
    """Write the weights folder with its manifest and model card; evaluate; return the folder. ``low``: a
    low-noise expert for the steps at or below ``recipe.expert_switch``. ``verifier`` (a `ClipVerifier` reading
    ``text``'s states) and its ``redraw_below`` floor: a rescored folder's own, kept (`rescore`)."""
    mean, std = latent_stats(cache, recipe.latent_norm)
    vae.register_to_config(latent_mean=mean, latent_std=std)
    clips = list(world.sample(16, seed=step_seed(recipe.seed, "cache", 0), split="train"))
    video = clips_to_tensor(clips)
    with torch.no_grad():
        z = vae.normalize(recipe_latent(recipe, vae, clips, video))  # as the DiT draws it
    latent_rgb = embedded.fit_latent_rgb(vae, z, video)
    info = {"name": "shapes", "trained": True, "default_eta": float(recipe.sample_eta),
            "description": "trained on the sora_nb shapes world by sora_nb.train"}
    if recipe.sample_guidance_profile:
        info["guidance_profile"] = [list(pair) for pair in recipe.sample_guidance_profile]
    if low is not None:
        info["expert_switch"] = float(recipe.expert_switch)
    if recipe.shape_layout:  # the shape channels are the latent's last len(SHAPES)
        c = vae.config.latent_channels
        info["layout_check"] = {"channels": [c - len(spec.SHAPES), c], "threshold": float(recipe.layout_threshold)}
        info["default_retries"] = int(recipe.sample_retries)
        info["redraw_share"] = list(recipe.sample_redraw_share)  # a tuple since Recipe's checks
        if verifier is not None and redraw_below is not None:
            info["redraw_below"] = float(redraw_below)
    # written whole or not at all (`atomic_folder`): the run's earlier weights stay until the new ones are complete,
    # evaluated and carded; a kill during the evaluation's minutes left a folder that loaded with no card
    with atomic_folder(out / "weights") as folder:
        scheduler_config = embedded.default_scheduler_config(recipe.sample_shift)
        embedded.save_folder(folder, vae, dit, text, scheduler_config, latent_rgb, info, low, verifier)
        from .api import Generator

        t0 = time.perf_counter()
        gen = Generator(embedded.load_folder(folder))
        # the chosen guidance goes into the manifest by the last save_folder below; until then pass it explicitly
        info["default_guidance"], sweep = choose_guidance(recipe, out, world, gen)
        guidance = info["default_guidance"]
        scores = {}
        for split, phrasing in (("train", "train"), ("heldout", "train"), ("train", "heldout")):
            df = world.evaluate(gen, n=recipe.eval_clips, seed=step_seed(recipe.seed, "eval", 0), split=split,
                                phrasing=phrasing, guidance=guidance)
            summary = world.summarize(df)
            scores[f"{split}/{phrasing}"] = {k: round(float(v), 4) for k, v in dict(summary).items()
                                             if isinstance(v, (int, float, np.floating)) and not math.isnan(float(v))}
            log(out, stage="eval", split=split, phrasing=phrasing, **scores[f"{split}/{phrasing}"])
        seconds["eval"] = time.perf_counter() - t0
        if not bars_held(scores):
            info["description"] += " (below the quality bars: see MODEL_CARD.md)"
        seconds = stage_seconds(out, seconds, done_before)
        card = model_card(recipe, seconds, scores, folder, info["default_guidance"], sweep, info.get("redraw_below"))
        (folder / "MODEL_CARD.md").write_text(card)
        (folder / "scores.json").write_text(json.dumps({"scores": scores, "seconds": seconds,
                                                        "guidance": info["default_guidance"],
                                                        "guidance_sweep": sweep, "recipe": dataclasses.asdict(recipe)},
                                                       indent=1))
        embedded.save_folder(folder, vae, dit, text, scheduler_config, latent_rgb, info, low, verifier)
    return out / "weights"


def check_device(device: str) -> None:
    """ValueError naming ``device`` if torch cannot place a tensor on it (no CUDA here, say)."""
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as e:
        raise ValueError(f"device {device!r} is not usable on this machine: {e}") from None


def rescore_inputs(weights: str | Path, overrides: dict[str, Any] | None, decoder: bool, dit: bool
                   ) -> tuple[dict[str, Any], "Recipe", embedded.EmbeddedBackend]:
    """`rescore`'s checks, before any work: the folder's prior scores, its recipe with ``overrides``, and the
    folder loaded (sha256-checked). Raises `RefusedInput` naming what is wrong."""
    weights = Path(weights)
    try:
        if not (weights / "scores.json").is_file():
            raise ValueError(f"rescore needs a weights folder written by sora_nb.train's export (with scores.json "
                             f"holding its recipe); {str(weights)!r} has none")
        be = embedded.load_folder(weights)  # sha256-checked, as the package loads it (scores.json is one of them)
        try:
            prior = json.loads((weights / "scores.json").read_text())
        except ValueError as err:
            raise ValueError(f"{str(weights / 'scores.json')!r} is not JSON ({err})") from None
        if not isinstance(prior, dict) or not isinstance(prior.get("recipe"), dict) or \
                not isinstance(prior.get("seconds"), dict):
            raise ValueError(f"{str(weights / 'scores.json')!r} holds no recipe (a JSON object with 'recipe' and "
                             "'seconds', as sora_nb.train's export writes it)")
        fields = {f.name for f in dataclasses.fields(Recipe)}
        recipe = Recipe(**{**{k: v for k, v in prior["recipe"].items() if k in fields}, **(overrides or {})})
        if decoder and recipe.dec_steps < 1:
            raise ValueError(f"the decoder stage needs dec_steps >= 1 (e.g. --set dec_steps=900), got {recipe.dec_steps}")
        check_device(recipe.device)  # an absent accelerator fails now, not after the caches' minutes
        if dit and recipe.ft_steps < 1:
            raise ValueError(f"the DiT fine-tune needs ft_steps >= 1 (e.g. --set ft_steps=4000), got {recipe.ft_steps}")
        if decoder and recipe.dec_blocks < be.vae.config.decoder_blocks:
            raise ValueError(f"dec_blocks must be >= the folder's decoder's {be.vae.config.decoder_blocks} blocks (a "
                             f"decoder is deepened, never cut), got {recipe.dec_blocks}")
        if be.low is not None and not recipe.expert_switch:
            raise ValueError(f"{str(weights)!r} has a low-noise expert: expert_switch must stay in (0, 1), got 0")
        if recipe.expert_switch and not dit and be.low is None:
            raise ValueError(f"expert_switch {recipe.expert_switch} needs a low-noise expert: make one with --tune-dit "
                             f"(the fine-tune becomes it), or set expert_switch=0")
        if dit and recipe.ft_expert == "high" and be.low is None:
            raise ValueError(f"ft_expert 'high' fine-tunes the main DiT of a folder with a low-noise expert, for the "
                             f"steps above its switch; {str(weights)!r} has none: make one first (ft_expert 'low')")
        if dit and recipe.ft_distil and be.low is not None:
            raise ValueError(f"ft_distil distils a one-DiT sampler; {str(weights)!r} has a low-noise expert (use ft_chain)")
        if dit and recipe.ft_from == "low" and be.low is None:
            raise ValueError(f"ft_from 'low' continues a folder's low-noise expert; {str(weights)!r} has none: make one "
                             f"first (ft_from 'main')")
        if dit:  # refused before anything is written, as is a fine-tune's stage recipe that `Recipe` refuses
            ft_stage(recipe, init_from=str(weights), dit_depth=tuned_depth(recipe, be.dit.config.depth))
    except (TypeError, ValueError) as err:
        raise RefusedInput(str(err)) from err
    return prior, recipe, be


def rescore(weights: str | Path, out: Path, world, overrides: dict[str, Any] | None = None,
            decoder: bool = False, dit: bool = False) -> Path:
    """Export a trained weights folder again, unchanged networks, with its recorded recipe updated by
    ``overrides`` (sampler settings such as ``sample_eta``): the default guidance is chosen again, every
    split evaluated again and the model card rewritten, into ``out/weights``. The training wall times
    are the folder's own (its scores.json); the latent statistics are its autoencoder's.

    ``decoder``: first run the decoder stage (``tune_decoder``, the recipe's ``dec_steps`` > 0) on the
    folder's autoencoder; the encoder, the DiT and the text encoder stay byte for byte the same. A folder
    whose recipe ran the pixel-encoder stage (``shape_layout`` and ``pix_steps`` > 0) no longer holds the
    disc encoder, so the stage trains on `pixel_label_latent` (its encoder's latent of the true frames with
    the labels' channels). The seventeenth session's shipped decoder was made this way: three such stages
    (1500, 2000 and 2500 steps) took the round trip's every-check share from .62 to .84.

    ``dit``: then fine-tune the folder's DiT and text encoder (`tune_dit`, the recipe's ``ft_steps`` > 0); the
    autoencoder stays the same. With ``expert_switch`` > 0 the fine-tuned pair becomes the folder's low-noise
    expert (the steps at or below that sigma) and the folder's own DiT keeps the steps above it (eDiff-I's
    expert denoisers; the shipped model's second DiT, thirty-third session). A folder with an expert keeps it
    on a plain rescore (``expert_switch`` may move its switch level); ``--tune-dit`` on it trains a new expert from
    its main DiT, as the first was, which replaces the old one; with ``ft_expert`` "high" the fine-tune replaces
    the main DiT and its text encoder instead (a high-noise expert, trained with ``ft_level_weights`` on the levels
    above the switch), and ``low/`` stays byte for byte."""
    prior, recipe, be = rescore_inputs(weights, overrides, decoder, dit)
    weights = Path(weights)
    lock_run(out)
    claim_rescore(out, {"rescore": str(weights.resolve()), "weights_sha256": embedded.manifest_digest(weights),
                        "overrides": json.loads(json.dumps(overrides or {})), "tune_decoder": bool(decoder),
                        "tune_dit": bool(dit)})
    cache = {"buckets": {}, "channel_stats": (list(be.vae.config.latent_mean), list(be.vae.config.latent_std))}
    seconds = {k: v for k, v in prior["seconds"].items() if k not in ("eval", "resumed")}
    vae = be.vae
    if decoder:
        # a full run's hour (train_minutes, dec_share) is not this stage's: it runs the dec_steps asked for
        vae, seconds["decoder"] = rescore_stage(
            out, "decoder", (out / "dec_final" / "config.json").is_file(), lambda: tune_decoder(
                dataclasses.replace(recipe, dec_share=0.0), out, world, vae, pixels=recipe.pixel_latent),
            lambda: logged_span(out, "decoder"))
    dit_net, text = be.dit, be.text
    if recipe.adapt_steps and not dit and not isinstance(text.encoder, AdaptedEncoder):  # (with dit: in train_dit)
        text, seconds["adapt"] = rescore_stage(out, "adapt", (out / "adapt_final" / "text.safetensors").is_file(),
                                               lambda: adapted_text(recipe, out, be.text),
                                               lambda: logged_span(out, "adapt"))
    low = be.low
    if dit:
        # an earlier call of this folder trained it (and recorded its seconds), a GPU machine did (its log spans its
        # calls there: nothing idle between), or one began it and was stopped
        (dit_net, text), took = rescore_stage(out, "dit_tune", finished_stage(out),
                                              lambda: tune_dit(recipe, out, world, weights, vae),
                                              lambda: logged_seconds(out, "dit"))
        seconds["dit_tune"] = seconds.get("dit_tune", 0.0) + took
        if recipe.expert_switch and recipe.ft_expert == "low":
            low, dit_net, text = (dit_net, text), be.dit, be.text
    # the folder's verifier reads its main text encoder's states: kept (with its redraw floor) while that encoder is
    # the same and the latent's channels are (a plain rescore, a decoder stage, a low-noise expert's fine-tune)
    keep = be.verifier is not None and text is be.text
    return export(recipe, out, world, vae, dit_net, text, cache, seconds, low=low,
                  verifier=be.verifier if keep else None, redraw_below=be.redraw_below if keep else None)


def rescore_stage(out: Path, key: str, done: bool, run: Callable[[], Any], logged: Callable[[], float]
                  ) -> tuple[Any, float]:
    """Run one of `rescore`'s training stages (``key`` in ``out/timing.json``; ``done``: an earlier call finished it,
    so ``run`` reloads it) and return its result and its wall seconds over every call: those of calls stopped
    during it (`counted_if_stopped`, `unfinished_seconds`) plus this call's; for a stage an earlier call finished,
    the figure that call recorded (``"finished"``), else ``logged()`` (a stage finished on a GPU machine, or before
    that record existed). Recorded when the stage finishes: a call stopped in the export, then called again, cards
    the seconds the stage trained, not those of reloading it."""
    t = time.perf_counter()
    if not done:
        resumed = unfinished_seconds(out, key)
    else:
        finished = _timing(out).get("finished", {})
        resumed = finished.get(key) if isinstance(finished, dict) else None
        if not isinstance(resumed, (int, float)) or isinstance(resumed, bool):
            resumed = logged()
    with counted_if_stopped(out, key):
        result = run()
    took = float(resumed) + (0.0 if done else time.perf_counter() - t)
    if not done:  # (the log's span would count the time between the calls)
        record = _timing(out)
        record.setdefault("finished", {})[key] = took
        record.get("unfinished", {}).pop(key, None)
        write_text_atomic(out / "timing.json", json.dumps(record, indent=1))
    return result, took


def logged_span(out: Path, stage: str) -> float:
    """Wall seconds from the first to the last of ``out``'s log records of ``stage``, plus what the first says came
    before it (its ``pool_s``, or its ``s_per_step``: one step): a finished decoder or adapter stage's seconds when
    no call recorded them (0 without a record)."""
    path = Path(out) / "log.jsonl"
    records = [r for r in read_log(path) if r.get("stage") == stage] if path.is_file() else []
    if not records:
        return 0.0
    before = records[0].get("pool_s", records[0].get("s_per_step", 0.0))
    before = before if isinstance(before, (int, float)) and not isinstance(before, bool) else 0.0
    return records[-1]["time"] - records[0]["time"] + float(before)


def logged_seconds(out: Path, stage: str) -> float:
    """Wall seconds from the start of ``out``'s log (less a first cache record's own build time) to its last
    ``stage`` record: what a finished stage took in the call that trained it (0 without a log)."""
    path = Path(out) / "log.jsonl"
    if not path.is_file():
        return 0.0
    records = read_log(path)
    ends = [r["time"] for r in records if r.get("stage") == stage]
    if not records or not ends:
        return 0.0
    first = records[0]
    start = first["time"] - (first.get("seconds", 0.0) if first.get("stage") == "cache" else 0.0)
    return max(ends) - start


def _timing(out: Path) -> dict[str, Any]:
    """``out/timing.json``'s record (`stage_seconds`), or an empty one."""
    path = out / "timing.json"
    try:
        record = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        record = {}
    return record if isinstance(record, dict) else {}


@contextlib.contextmanager
def counted_if_stopped(out: Path, stage: str) -> Iterator[None]:
    """Run the block (``stage``); if it is stopped (Ctrl-C, an error), record its wall seconds in
    ``out/timing.json``: the call that finishes the stage counts them (`unfinished_seconds`), so a stage resumed
    from its checkpoint is carded with the minutes every call spent on it, not only the last call's."""
    t = time.perf_counter()
    try:
        yield
    except BaseException:
        record = _timing(out)
        unfinished = record.setdefault("unfinished", {})
        unfinished[stage] = unfinished.get(stage, 0.0) + time.perf_counter() - t
        write_text_atomic(out / "timing.json", json.dumps(record, indent=1))
        raise


def unfinished_seconds(out: Path, stage: str) -> float:
    """Wall seconds earlier calls spent on ``stage`` before they were stopped (`counted_if_stopped`)."""
    return float(_timing(out).get("unfinished", {}).get(stage, 0.0))


def spent_seconds(out: Path, done_before: Sequence[str]) -> float:
    """Wall seconds earlier calls of a full run spent in ``out`` (its ``timing.json``, `stage_seconds`): the figures
    of the stages they finished (``done_before``) and the seconds of those they were stopped in (``"unfinished"``,
    `counted_if_stopped`). ``train_minutes``' deadline counts them: a run stopped and resumed gave its DiT a whole
    new hour from each call's start, so it trained (and ran) longer than the same run uninterrupted."""
    record = _timing(out)
    prior, unfinished = record.get("seconds"), record.get("unfinished")
    prior = prior if isinstance(prior, dict) else {}
    unfinished = unfinished if isinstance(unfinished, dict) else {}
    figures = [prior.get(stage) for stage in done_before] + list(unfinished.values())
    return float(sum(v for v in figures if isinstance(v, (int, float)) and not isinstance(v, bool)
                     and math.isfinite(v) and v > 0))


def stage_seconds(out: Path, seconds: dict[str, float], done_before: Sequence[str]) -> dict[str, Any]:
    """Wall seconds per stage, kept in ``out/timing.json`` across runs: a stage an earlier run finished
    (``done_before``) keeps that run's figure; those are listed under ``"resumed"``. A full run writes it after
    every stage (`main`), so a run interrupted before its export still leaves its finished stages' figures; the
    earlier run's figures of stages this call has not reached yet are kept too, and so are the seconds of stages
    a stopped call had begun (``"unfinished"``; ``seconds`` of a stage finished here already count them)."""
    path = out / "timing.json"
    record = _timing(out)
    prior = record.get("seconds", {})
    unfinished = {k: v for k, v in record.get("unfinished", {}).items() if k not in seconds}
    merged, resumed = {}, []
    for stage, value in seconds.items():
        if stage in done_before and stage in prior:
            merged[stage] = prior[stage]
            resumed.append(stage)
        else:
            merged[stage] = value
    merged.update({stage: prior[stage] for stage in done_before if stage in prior and stage not in merged})
    write_text_atomic(path, json.dumps({"seconds": merged, "resumed": resumed,
                                        **({"unfinished": unfinished} if unfinished else {}),
                                        **({"finished": record["finished"]} if record.get("finished") else {})},
                                       indent=1))
    return {**merged, "resumed": resumed}


def experts_sentence(recipe: Recipe) -> str:
    """The model card's words on a folder with two DiTs: which takes which steps, and which the ``ft_*`` fields made."""
    made = ("`dit/` and `text_encoder/` being the last fine-tune (the recipe's `ft_*` fields, `ft_expert` \"high\"), "
            "for the levels above it, and `low/` an earlier one for the levels at or below it"
            if recipe.ft_expert == "high" else
            "`low/` being a fine-tune of them for the levels at or below it (the recipe's `ft_*` fields)")
    return (f" Two DiTs by noise level (expert denoisers, as eDiff-I's): `dit/` and `text_encoder/` take the sampler's "
            f"steps above sigma {recipe.expert_switch:g}, `low/` the rest, {made}; a clip costs the same DiT passes as "
            f"with one.")


def model_card(recipe: Recipe, seconds: dict[str, Any], scores: dict[str, dict[str, float]], folder: Path,
               guidance: float = 5.0, sweep: dict[str, float] | None = None,
               redraw_below: float | None = None) -> str:
    """Markdown model card: data, recipe, wall time, hardware, scores, the quality bars."""
    import platform

    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20
    resumed = seconds.get("resumed", [])
    times = {k: v for k, v in seconds.items() if k != "resumed"}
    train_min = sum(v for k, v in times.items() if k != "eval") / 60
    adapted = folder / "text_encoder" / "pretrained.json"
    if adapted.is_file():
        meta = json.loads(adapted.read_text())
        text_kind = (f"a frozen pretrained {meta['name']} (a 6-layer BERT from the PyPI package `{meta['pip']}`, read "
                     f"offline and sha256-checked; not counted in this folder's size) under a trained projection and "
                     f"{recipe.text_layers}-layer T5 stack")
    else:
        text_kind = f"a {recipe.text_layers}-layer T5 text encoder"
    lines = [
        "# shapes: the embedded sora_nb model", "",
        "A small Sora-like text-to-video model: a video autoencoder (4x time, 4x space), a diffusion "
        f"transformer over spacetime patches with cross-attention to {text_kind}, "
        "trained with rectified flow matching on the procedural shapes world (`sora_nb.world`, train split)."
        + (experts_sentence(recipe) if (folder / embedded.LOW).is_dir() else ""),
        "", "## Training", "",
        f"- hardware: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "- wall time: " + ", ".join(
            f"{k} {v / 60:.1f} min" + (" (by an earlier run in this folder; resumed)" if k in resumed else "")
            for k, v in times.items())
        + f" (dit includes the text stage); training (all but eval) {train_min:.1f} min",
        f"- recipe: `{json.dumps(dataclasses.asdict(recipe))}`",
        f"- weights folder size: {size:.1f} MiB",
        "", f"## Scores (shapes-world evaluator, {recipe.eval_clips} clips each, default settings)", "",
        f"Default settings: 2 s, 64x64, 20 steps, sampler eta {recipe.sample_eta:g} and shift "
        f"{recipe.sample_shift:g}, guidance {guidance:g}"
        + (f" with the guidance profile {json.dumps([list(p) for p in recipe.sample_guidance_profile])} (guidance "
           "1 + weight (g - 1) at steps whose noise level is above each sigma_above)"
           if recipe.sample_guidance_profile else "")
        + (f", up to {recipe.sample_retries} redraw(s) of a clip whose object count changes between latent frames"
           + ("" if redraw_below is None else f" or whose verifier score is below {redraw_below:g}")
           + f" (Request.retries), with {' then '.join(f'{x:g}' for x in recipe.sample_redraw_share)} of the steps"
           if recipe.shape_layout and recipe.sample_retries else "")
        + " (the model's default, chosen as the best "
        "prompt adherence of " + (", ".join(f"{k}: {v:.3f}" for k, v in sweep.items()) if sweep else "a single candidate")
        + f" on {recipe.guidance_clips} other training prompts).", "",
        "| split / phrasing | " + " | ".join(sorted(next(iter(scores.values())).keys())) + " |",
        "|---|" + "---|" * len(next(iter(scores.values()))),
    ]
    for name, s in scores.items():
        lines.append(f"| {name} | " + " | ".join(f"{s[k]:.3f}" for k in sorted(s)) + " |")
    lines += ["", "## The project's quality bars", "", "| bar | needs | measured | holds |", "|---|---|---|---|"]
    for split, dim, need in QUALITY_BARS:
        got = scores.get(split, {}).get(dim)
        shown = "not measured" if got is None else f"{got:.3f}"
        holds = "not measured" if got is None else ("yes" if got >= need else "**no**")
        lines.append(f"| {dim} ({split}) | >= {need:.2f} | {shown} | {holds} |")
    return "\n".join(lines) + "\n"


def choose_guidance(recipe: Recipe, out: Path, world, gen) -> tuple[float, dict[str, float]]:
    """The candidate guidance with the best prompt adherence (mean of colour, shape, motion, background
    and count on ``guidance_clips`` training prompts, a different sample from the evaluation's); the
    adherence of each candidate."""
    if len(recipe.guidance_candidates) == 1:
        return float(recipe.guidance_candidates[0]), {}
    adherence = {}
    for g in recipe.guidance_candidates:
        df = world.evaluate(gen, n=recipe.guidance_clips, seed=step_seed(recipe.seed, "eval", 1), split="train",
                            guidance=g)
        s = world.summarize(df)
        adherence[f"g={g:g}"] = round(float(np.nanmean([s[k] for k in ADHERENCE])), 4)
        log(out, stage="guidance", guidance=float(g), adherence=adherence[f"g={g:g}"])
    best = max(recipe.guidance_candidates, key=lambda g: adherence[f"g={g:g}"])
    return float(best), adherence


ADHERENCE = ("colour", "shape", "motion", "background", "count")

# (split/phrasing, dimension, minimum): issue 4's bars on the shapes world's evaluator
QUALITY_BARS = (("train/train", "colour", 0.95), ("train/train", "shape", 0.90), ("train/train", "motion", 0.90),
                ("train/train", "consistency", 0.95), ("train/train", "count", 0.90),
                ("heldout/train", "overall", 0.85), ("train/heldout", "overall", 0.85))


def bars_held(scores: dict[str, dict[str, float]]) -> bool:
    """Whether every quality bar holds for these evaluator scores."""
    return all(scores.get(split, {}).get(dim, -1.0) >= need for split, dim, need in QUALITY_BARS)


# Fields a run rewrites as it goes (a stage's share of the hour cuts its steps, the DiT refits its count): a resumed
# run's recipe.json may hold other values than its command line gives, and the checkpoints say which apply.
RUN_WRITTEN = frozenset({"vae_steps", "dec_steps", "pix_steps", "dit_steps", "ft_steps"})


def check_out_folder(out: Path) -> None:
    """``--out``: a folder, or a path one can be made at, that can be written (nothing is made here: a command
    refused later leaves no folder behind). An existing folder must be empty or a run's (a folder of the user's
    own files is not one to write a run into: the export replaces ``weights/`` and a kill's leftovers,
    ``*.partial`` and ``*.old``, are cleaned up). Raises `RefusedInput`."""
    if out.is_dir() and any(p.name != ".lock" for p in out.iterdir()) and not is_run_folder(out):
        raise RefusedInput(f"--out {str(out)!r} holds files that are not a sora-nb train run's (no "
                           f"{', '.join(RUN_MARKS)} or stage folder): choose a new or empty folder")
    if out.exists() and not out.is_dir():
        raise RefusedInput(f"--out must be a folder (made if missing), got a file: {str(out)!r}")
    base = out.absolute()
    while not base.exists():
        base = base.parent
    if not base.is_dir():
        raise RefusedInput(f"--out {str(out)!r} cannot be made: {str(base)!r} is a file")
    if not os.access(base, os.W_OK | os.X_OK):
        raise RefusedInput(f"--out {str(out)!r}: {str(base)!r} is not writable")


RUN_MARKS = ("recipe.json", "rescore.json", "log.jsonl")  # files only a run writes into its --out


STAGE_FOLDERS = re.compile(r"\w+_(final|ckpt)|cache|ft_cache_\d+|weights")  # the folders a run makes in its --out


def _written_by_a_run(path: Path) -> bool:
    """Whether ``path`` is one of `RUN_MARKS` as a run writes it (a JSON object; the log's first line, one with
    its ``time``), not a user's file of the same name."""
    try:
        if path.name == "log.jsonl":
            with open(path, encoding="utf-8") as f:
                record = json.loads(f.readline())
            return isinstance(record, dict) and "time" in record
        return isinstance(json.loads(path.read_text()), dict)
    except (OSError, ValueError):
        return False


def is_run_folder(out: Path) -> bool:
    """Whether ``out`` holds a ``sora-nb train`` run: a full run's recipe, a rescore's record or a run's log (as a
    run writes them), or a stage's folder with what a stage writes in it (``dit_final`` as a GPU machine sends it
    back, a ``*_ckpt``: safetensors or JSON; a ``cache``: its index or latents). Generic names alone are not
    enough: a user's project with a ``cache/`` or ``log.jsonl`` of its own is not a run, and its ``*.old`` and
    ``*.partial`` folders are not a run's to recover."""
    if any(_written_by_a_run(out / name) for name in RUN_MARKS if (out / name).is_file()):
        return True
    for p in out.iterdir():
        if not p.is_dir() or p.name == "weights" or not STAGE_FOLDERS.fullmatch(p.name):
            continue
        if any(f.suffix in (".safetensors", ".json") for f in p.glob("*")) or any(p.glob("*/*.safetensors")):
            return True
    return False


_HELD: dict[str, int] = {}  # the run folders this process holds locked (their lock files' descriptors)


def lock_run(out: Path) -> None:
    """Make ``out``, finish a swap a kill cut short there (`recover_folders`), and hold an exclusive lock on
    ``out/.lock`` (until `main` returns; a direct caller keeps it): two commands writing into one folder mixed their
    seeds' checkpoints and recorded a recipe neither ran. RefusedInput when another process holds it."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    key = str(out.resolve())
    if key not in _HELD:
        fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RefusedInput(f"--out {str(out)!r} is in use by another sora-nb train: wait for it to end, or "
                               "choose another --out") from None
        _HELD[key] = fd
    recover_folders(out)


def claim_rescore(out: Path, spec: dict[str, Any]) -> None:
    """A rescore's ``--out`` holds one rescore: the same command resumes it, another is refused (it would reuse the
    first's finished stages and record options that never ran). Writes ``out/rescore.json``. (A folder that a GPU
    machine's fine-tune came back in, ``dit_final`` with its ``recipe.json``, takes its first rescore.)"""
    record = out / "rescore.json"
    if not record.is_file() and any((out / stage).is_dir() for stage in ("vae_final", "vae_ckpt")):
        # a full run's folder: its finished DiT (trained in its own latent) would be taken as the fine-tune's, with
        # the rescored folder's autoencoder, and its weights/ and recipe replaced
        raise RefusedInput(f"--out {str(out)!r} holds a training run (its autoencoder stage): a rescore there would "
                           "mix its networks with the rescored folder's; choose a new --out")
    if record.is_file():
        try:
            before = json.loads(record.read_text())
        except ValueError:  # cut short by a kill: written again below
            before = spec
        if before != spec:
            before = before if isinstance(before, dict) else {}
            differ = [k for k in sorted(set(spec) | set(before)) if before.get(k) != spec.get(k)]
            raise RefusedInput(f"--out {str(out)!r} holds another rescore ({', '.join(differ)} differ): resume it with "
                               "the same command, or choose a new --out")
    write_text_atomic(record, json.dumps(spec, indent=1, sort_keys=True))


def check_same_recipe(out: Path, recipe: Recipe) -> None:
    """A folder that holds a run's progress resumes only the same recipe (seed included): a run resumed with
    other options would mix two recipes' networks and record the wrong one. Raises `RefusedInput` naming the
    fields that differ. `RUN_WRITTEN` fields are the run's own to change."""
    recorded = out / "recipe.json"
    if not recorded.is_file() or not any(p.is_dir() for p in out.iterdir()):
        return  # nothing trained there yet
    try:
        before = json.loads(recorded.read_text())
    except ValueError:
        return  # a recipe.json cut short: written before any stage, so nothing depends on it
    now = json.loads(json.dumps(dataclasses.asdict(recipe)))
    differ = [k for k in sorted(now) if k not in RUN_WRITTEN and k in before and before[k] != now[k]]
    if differ:
        shown = ", ".join(f"{k} {before[k]!r} there, {now[k]!r} now" for k in differ[:4])
        raise RefusedInput(f"--out {str(out)!r} holds a run of another recipe ({shown}"
                           f"{', ...' if len(differ) > 4 else ''}): resume it with the same options, or choose a new --out")


def main(argv: list[str] | None = None, prog: str = "python -m sora_nb.train") -> int:
    """Command line entry point (``prog``: the name its usage and errors give). Ctrl-C stops a run in one line
    (the same command resumes it), and the run's lock on its ``--out`` is released when it returns."""
    held = set(_HELD)
    try:
        return _main(argv, prog)
    except KeyboardInterrupt:
        print(f"{prog}: stopped; run the same command to resume", file=sys.stderr)
        return 130
    finally:
        for key in set(_HELD) - held:
            os.close(_HELD.pop(key))


FT_STAGE_FIELDS = ("ft_steps", "ft_lr", "ft_warmup", "ft_seconds", "ft_seed", "ft_cache_seeds")  # a fine-tune's schedule
# the decoder stage's and the pixel-encoder stage's settings, read only by that stage (`tune_decoder`,
# `train_pixel_encoder`), which a full run has only with dec_steps > 0 / pix_steps > 0
DEC_STAGE_FIELDS = ("dec_lr", "dec_noise", "dec_blocks", "dec_object_weight", "dec_blur", "dec_seed", "dec_share")
PIX_STAGE_FIELDS = ("pix_blocks", "pix_lr", "pix_share")


def unused_fields(keys: Sequence[str], recipe: "Recipe | None", rescore: bool = False, tune_dit: bool = False
                  ) -> dict[str, str]:
    """The fields among ``keys`` (those ``--set`` names) that this call would record but never use, each with
    where it does apply: a full run (``rescore`` False) has no fine-tune of a folder's DiT (``ft_depth``,
    ``ft_expert``), reads ``ft_from`` and ``adapt_*`` only with ``init_from``, a fine-tune's schedule only in its
    chain stage (``ft_chain`` without ``init_from``), and the decoder's (pixel encoder's) settings only with
    ``dec_steps`` (``pix_steps``) > 0: the exported autoencoder of a run without that stage has other values than
    the ones its recipe.json, scores.json and card would record; a rescore without ``--tune-dit`` trains no DiT."""
    where: dict[str, str] = {}
    for key in keys:
        if rescore:
            if key.startswith("ft_") and not tune_dit:
                where[key] = "a DiT fine-tune: add --tune-dit"
            continue
        if key in ("ft_depth", "ft_expert"):
            where[key] = "the fine-tune of a finished folder's DiT: --rescore WEIGHTS --tune-dit"
        elif key in ("ft_from", "adapt_steps", "adapt_lr", "adapt_batch") and not recipe.init_from:
            where[key] = "a DiT stage started from a folder: init_from, or --rescore WEIGHTS --tune-dit"
        elif key in FT_STAGE_FIELDS and not (recipe.ft_chain and not recipe.init_from):
            where[key] = ("a full run's chain stage (ft_chain N without init_from), or --rescore WEIGHTS --tune-dit"
                          + ("; with init_from the DiT stage's schedule is dit_*" if recipe.init_from else ""))
        elif key in DEC_STAGE_FIELDS and not recipe.dec_steps:
            where[key] = "the decoder stage: dec_steps > 0, or --rescore WEIGHTS --tune-decoder"
        elif key in PIX_STAGE_FIELDS and not recipe.pix_steps:
            where[key] = "the pixel-encoder stage: pix_steps > 0 (with shape_layout)"
    return where


def _refuse_unused(parser: argparse.ArgumentParser, where: dict[str, str], run: str) -> None:
    if where:
        parser.error(f"{run} would record but not use " + "; ".join(f"{k} (it applies to {v})" for k, v in where.items()))


def _main(argv: list[str] | None, prog: str) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0] + " With no options it trains "
                                     "the course recipe into runs/shapes: about an hour on 2 CPU cores (Ctrl-C "
                                     "stops it; the same command resumes). --tiny is a seconds-long smoke run.")
    parser.add_argument("--out", default="runs/shapes", help="run folder (checkpoints, log, weights; default: "
                        "runs/shapes)")
    parser.add_argument("--seed", type=int, default=None, help="the run's seed (default 0; a rescore keeps its folder's)")
    parser.add_argument("--tiny", action="store_true", help="a seconds-long smoke run of the preset (tests, notebooks)")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a full run's recipe before --set: course (the "
                        "default: the shipped architecture in an hour's training) or plain (the dataclass defaults)")
    parser.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                        help="override recipe fields (several --set add up)")
    parser.add_argument("--ship", action="store_true", help="copy the weights into the package when done")
    parser.add_argument("--rescore", metavar="WEIGHTS", help="no training: score a weights folder again under its "
                        "recorded recipe and the --set overrides (e.g. sample_eta=0) into --out/weights")
    parser.add_argument("--tune-decoder", action="store_true", help="with --rescore: first train the folder's "
                        "decoder alone for the recipe's dec_steps (e.g. --set dec_steps=900); the latent is unchanged")
    parser.add_argument("--tune-dit", action="store_true", help="with --rescore: fine-tune the folder's DiT and text "
                        "encoder for the recipe's ft_steps (e.g. --set ft_steps=4000) on a fresh latent cache; with ft_distil=N, "
                        "distil its 2N-step sampler into N steps instead; with ft_chain=N, train on its N-step sampler's inputs")
    args = parser.parse_args(argv)
    if args.rescore is not None and not args.rescore.strip():  # an unset shell variable: not a full hour's run
        parser.error("--rescore must name a weights folder, got an empty string")
    if args.rescore and args.preset:
        parser.error("--preset is for a full run; --rescore reads the folder's recorded recipe (change it with --set)")
    preset = args.preset or "course"
    overrides: dict[str, Any] = {} if args.rescore else dict(PRESETS[preset])
    if args.tiny:  # a rescore keeps its folder's architecture and training record: only the evaluation shrinks
        overrides.update({k: TINY[k] for k in TINY_RESCORE} if args.rescore else {**TINY, **TINY_PRESET[preset]})
    known = {f.name for f in dataclasses.fields(Recipe)}
    set_keys: list[str] = []
    for item in args.set:
        key, eq, value = item.partition("=")
        if not eq:
            parser.error(f"--set takes KEY=VALUE with KEY a recipe field, got {item!r}")
        if key not in known:
            parser.error(f"--set {item}: unknown field {key!r}; the recipe's fields are sora_nb.train.Recipe's "
                         f"(docs/TRAINING.md)")
        if key == "seed":
            parser.error("--set seed=N: the run's seed is --seed N")
        try:
            overrides[key] = json.loads(value)
        except ValueError:
            parser.error(f"--set {key}=VALUE: VALUE must be JSON (e.g. 0.5, true, [1, 2, 2], '\"text\"'), got {value!r}")
        set_keys.append(key)
    if not args.out.strip():  # (Path("") is the working folder)
        parser.error("--out must name a folder, got an empty string")
    out = Path(args.out).expanduser()
    try:
        check_out_folder(out)
        if args.ship:
            check_shippable()
    except RefusedInput as err:
        parser.error(str(err))
    if args.rescore:
        from . import world

        if args.seed is not None:
            parser.error("--seed goes with a full run; a rescore keeps its folder's recorded seed")
        _refuse_unused(parser, unused_fields(set_keys, None, rescore=True, tune_dit=args.tune_dit), "this rescore")
        try:  # rescore checks its inputs (`rescore_inputs`) before any work
            folder = rescore(args.rescore, out, world, overrides, decoder=args.tune_decoder, dit=args.tune_dit)
        except RefusedInput as err:
            parser.error(str(err))
        print(f"weights written to {folder}")
        return ship(folder) if args.ship else 0
    if args.tune_decoder:
        parser.error("--tune-decoder goes with --rescore WEIGHTS (a full run has the decoder stage when dec_steps > 0)")
    if args.tune_dit:
        parser.error("--tune-dit goes with --rescore WEIGHTS (a full run trains its DiT; init_from starts it from a folder)")
    try:
        recipe = Recipe(seed=0 if args.seed is None else args.seed, **overrides)
    except (TypeError, ValueError) as err:
        parser.error(str(err))
    _refuse_unused(parser, unused_fields(set_keys, recipe), "a full run")
    if recipe.expert_switch:
        parser.error("expert_switch makes a fine-tune the low-noise expert: use --rescore WEIGHTS --tune-dit "
                     "--set expert_switch=S")
    if recipe.ft_distil and not recipe.init_from:
        parser.error("ft_distil reads a finished folder's sampler: use --rescore WEIGHTS --tune-dit --set ft_distil=N")
    chain = bool(recipe.ft_chain) and not recipe.init_from  # a chain stage after the DiT's (with init_from: the DiT's own teacher)
    if chain and (recipe.ft_steps < 1 or len(recipe.guidance_candidates) != 1):
        parser.error(f"a full run's chain stage (ft_chain {recipe.ft_chain}) needs ft_steps >= 1 and one guidance "
                     f"candidate, the guidance its teacher samples at; got ft_steps {recipe.ft_steps}, "
                     f"guidance_candidates {list(recipe.guidance_candidates)}")
    if chain:
        try:  # the chain stage's own recipe, refused now rather than after every stage before it
            ft_stage(recipe)
        except (TypeError, ValueError) as err:
            parser.error(f"the chain stage's recipe (ft_stage): {err}")
    try:  # an absent accelerator fails now, not after the autoencoder's minutes
        check_device(recipe.device)
    except ValueError as err:
        parser.error(str(err))  # a usage error like every other refused input (exit status 2)
    if recipe.init_from:  # its folder loads and its DiT fits the recipe: now, not when the DiT stage starts
        try:
            init_networks(recipe, embedded.load_folder(recipe.init_from))
        except (ValueError, OSError) as err:
            parser.error(f"init_from: {err}")
    try:
        if (out / "rescore.json").is_file():  # its weights/ would be replaced by a training run's, under its record
            raise RefusedInput(f"--out {str(out)!r} holds a rescore (rescore.json), not a training run: resume it with "
                               "its --rescore command, or choose a new --out for this run")
        check_same_recipe(out, recipe)
        lock_run(out)  # (and a swap a kill cut short is finished before anything reads the folder)
    except RefusedInput as err:
        parser.error(str(err))
    except OSError as err:
        parser.error(f"--out {str(out)!r}: the folder cannot be made ({err.strerror})")
    write_recipe(out, recipe)
    from . import world

    seconds: dict[str, float] = {}
    done_before = [stage for stage, marker in (("vae", "vae_final/config.json"), ("cache", "cache/index.json"),
                                                ("dit", "dit_final/dit/config.json"),
                                                ("ft_cache", f"ft_cache_{recipe.ft_cache_seeds[-1]}/index.json"),
                                                ("chain", "chain_final/dit/config.json"),
                                                ("decoder", "dec_final/config.json"),
                                                ("pixels", "pix_final/config.json")) if (out / marker).is_file()]
    spent = spent_seconds(out, done_before)  # by earlier calls of this run: train_minutes' hour counts them
    start = time.perf_counter()

    def timed(stage: str, run: Callable[[], Any]) -> Any:
        """Run one stage; its wall seconds (with those of earlier calls stopped during it) go into ``seconds``
        and, at once, into ``out/timing.json``; a call stopped during it records its seconds there."""
        t = time.perf_counter()
        with counted_if_stopped(out, stage):
            result = run()
        seconds[stage] = time.perf_counter() - t + unfinished_seconds(out, stage)
        stage_seconds(out, seconds, done_before)
        return result

    vae = timed("vae", lambda: train_vae(recipe, out, world))
    if recipe.dec_steps:
        vae = timed("decoder", lambda: tune_decoder(recipe, out, world, vae))
    finished = vae
    if recipe.pix_steps:  # a new encoder for true frames; the cache below keeps the disc encoder's latent
        finished = timed("pixels", lambda: train_pixel_encoder(recipe, out, world, vae))
    cache = timed("cache", lambda: build_cache(recipe, out, world, vae))
    if chain:  # the chain stage's clips, encoded now so that the DiT's budget already counts them
        buckets = timed("ft_cache", lambda: ft_buckets(recipe, out, world, finished))
    # with train_minutes the DiT gets what the stages before it left of the budget (less the chain stage's share)
    deadline = start - spent + 60 * recipe.train_minutes if recipe.train_minutes else None
    reserve = CHAIN_STEP_COST * recipe.ft_steps if chain else 0.0
    stage = dataclasses.replace(recipe, ft_chain=0) if chain else recipe  # the chain's teacher is this stage's result

    def record(steps: int) -> None:  # the run's recipe with the steps the DiT ran, never the stage's copy (whose
        recipe.dit_steps = steps     # ft_chain 0 a stop before the stage returns left for the same command to refuse)
        write_recipe(out, recipe)

    dit, text = timed("dit", lambda: train_dit(stage, out, world, cache, deadline, reserve=reserve, record=record))
    record(stage.dit_steps)  # the steps it ran (a finished stage's, reloaded, too)
    if chain:
        dit, text = timed("chain", lambda: chain_stage(recipe, out, world, buckets, cache, dit, text, deadline))
        write_recipe(out, recipe)  # with its steps run
    folder = export(recipe, out, world, finished, dit, text, cache, seconds, done_before)
    print(f"weights written to {folder}")
    return ship(folder) if args.ship else 0


def check_shippable(target: Path | None = None) -> None:
    """``--ship``'s checks, before any training: the package's weights folder (or ``target``) can be replaced."""
    target = Path(embedded.WEIGHTS_DIR if target is None else target)
    parent = target.parent
    for path in (parent, target) if target.exists() else (parent,):
        if not os.access(path, os.W_OK | os.X_OK):
            raise RefusedInput(f"--ship replaces {str(target)!r}, but {str(path)!r} is not writable (install sora_nb "
                               "editable, `pip install -e .`, in a folder you may write, or drop --ship)")


def ship(folder: Path, target: Path | None = None) -> int:
    """Copy a weights folder into the package (``sora_nb/weights/shapes``, or ``target``), whole or not at all:
    the copy is made beside it and swapped in (`atomic_folder`), so a copy that fails leaves the shipped
    weights as they were."""
    target = Path(embedded.WEIGHTS_DIR if target is None else target)
    check_shippable(target)
    with atomic_folder(target) as partial:
        shutil.copytree(folder, partial, dirs_exist_ok=True)
    print(f"shipped to {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
