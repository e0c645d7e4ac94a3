"""Wall time per DiT training step of `sora_nb.train`, and how much of it is host-side work.

    .venv/bin/python bench/bench_train_step.py [--device cpu|cuda] [--batch 128] [--threads N] [--patch 1 2 2]

Runs the real training loop (`sora_nb.train.train_dit`) on a synthetic latent cache (random
latents of the 2 s 64x64 shape, real training captions) twice, for ``--warm`` and for
``--warm + --steps`` steps, and reports the difference divided by ``--steps``: the per-step wall
with start-up costs removed. Two models are timed:
- the recipe's DiT at the chosen width and depth;
- a tiny DiT (32 wide, 1 deep, 32-wide text encoder): its arithmetic is small, so its step time is
  mostly the loop's fixed costs (index draws, optimiser and EMA calls, one launch per operation).
  On a GPU this part does not shrink with a faster chip; on a CPU the tiny model's memory-bound
  operations still count.
A third row times, alone, the host work the loop no longer does per step since the cache's captions
are tokenised and parsed once: tokenising a batch of captions and parsing their probe targets.

``--bf16 both`` (the default) times each model with the DiT's bfloat16 autocast on and off (``Recipe.bf16``);
the header says what ``bf16="auto"`` picks here (`train.native_bf16`). Forty-ninth session, 2 cores of an
AVX-512 CPU without AVX512-BF16 or AMX, ``--batch 16 --hidden 128 --heads 4`` (the course DiT's step): bfloat16
is slower than float32 there, so "auto" keeps float32 (bench/RESULTS.md).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import count, parse, parser, print_table, timed
from sora_nb import train, world


def synthetic_cache(n: int, seed: int = 0) -> dict:
    """n random latents of the 2 s 64x64 shape (16 channels, 4 latent frames, 16x16) with real captions."""
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(n, 16, 4, 16, 16, generator=g).to(torch.bfloat16)
    captions = train.caption_batch(np.random.default_rng(seed), n)
    return {"buckets": {"16x4x16x16": (latents, captions)}}


def time_steps(recipe: train.Recipe, cache: dict, steps: int) -> float:
    """Wall seconds of train_dit for ``steps`` steps (fresh run folder, text pre-training off)."""
    recipe = dataclasses.replace(recipe, dit_steps=steps)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        train.train_dit(recipe, Path(tmp), world, cache)
        if recipe.device != "cpu":
            torch.cuda.synchronize()
        return time.perf_counter() - t0


def per_step(recipe: train.Recipe, cache: dict, warm: int, steps: int) -> float:
    """Seconds per step with the run's fixed costs removed."""
    return (time_steps(recipe, cache, warm + steps) - time_steps(recipe, cache, warm)) / steps


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=count, default=128)
    p.add_argument("--hidden", type=count, default=192)
    p.add_argument("--depth", type=count, default=6)
    p.add_argument("--heads", type=count, default=6)
    p.add_argument("--warm", type=int, default=5)
    p.add_argument("--steps", type=count, default=10)
    p.add_argument("--clips", type=count, default=2000, help="synthetic cache size (at least 1024)")
    p.add_argument("--patch", type=int, nargs=3, default=[1, 2, 2], metavar=("F", "Y", "X"),
                   help="latent cells per token (the recipe's dit_patch); 1 4 4 gives a quarter of the tokens")
    p.add_argument("--bf16", choices=("auto", "true", "false", "both"), default="both",
                   help="the DiT's bfloat16 autocast (Recipe.bf16): both times each model with it on and off")
    args = parse(p)
    if args.steps < 5 or args.warm < 1 or args.batch < 1:
        p.error(f"--steps must be >= 5 (the figure is a difference of two runs), --warm and --batch >= 1; "
                f"got --steps {args.steps}, --warm {args.warm}, --batch {args.batch}")
    base = dict(device=args.device, dit_batch=args.batch, text_steps=0, log_every=10 ** 9, ckpt_every=10 ** 9,
                dit_warmup=1, dit_patch=tuple(args.patch))
    try:  # the recipe checks --patch, --device and the DiT's shape: usage errors, before the cache is made
        recipes = {
            f"DiT {args.hidden} wide x {args.depth} deep": train.Recipe(**base, dit_hidden=args.hidden,
                                                                      dit_depth=args.depth, dit_heads=args.heads),
            "tiny DiT (fixed per-step costs)": train.Recipe(**base, dit_hidden=32, dit_depth=1, dit_heads=2,
                                                       text_width=32, text_layers=1),
        }
    except ValueError as e:
        p.error(f"{e} (from --patch, --device, --hidden, --depth or --heads)")
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        p.error(f"--device {args.device!r}: no CUDA GPU here (torch {torch.__version__})")
    cache = synthetic_cache(max(args.clips, 1024))
    rows = []
    tokenizer, probe = train.embedded.build_tokenizer(train.caption_words(world)), train.CaptionProbe(128)
    text = train.TextEncoder(tokenizer, train.embedded.build_encoder(len(tokenizer)))
    for n in sorted({args.batch, 1024}):
        captions = cache["buckets"]["16x4x16x16"][1][:n]
        best = min(timed(lambda: (text.tokenize(captions), probe.targets(captions)), 5))
        rows.append(("per-batch tokenising + probe targets (removed)", n, f"{best * 1e3:.1f}", "-"))
    modes = {"auto": ["auto"], "true": [True], "false": [False], "both": [True, False]}[args.bf16]
    for name, recipe in recipes.items():
        for bf16 in modes:
            run = dataclasses.replace(recipe, bf16=bf16)
            s = per_step(run, cache, args.warm, args.steps)
            rows.append((f"{name}, {'bfloat16 autocast' if run.bf16 else 'float32'}", args.batch, f"{s * 1e3:.1f}",
                         f"{args.batch / s:.0f}"))
    print(f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, patch {tuple(args.patch)}, "
          f'bf16="auto" picks {"bfloat16" if train.native_bf16(args.device) else "float32"} here')
    print_table(rows, header=("model", "batch", "ms per step", "clips per s"))


if __name__ == "__main__":
    main()
