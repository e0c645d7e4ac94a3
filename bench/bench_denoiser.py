"""How well the embedded DiT denoises real clips, per noise level, on object and background cells.

    .venv/bin/python bench/bench_denoiser.py [--weights shapes] [--clips 24] [--threads N]

A diagnostic for the quality bars, not a speed figure. Training clips from the shapes world are
encoded, noised to x_t = (1 - s) x0 + s n at each level s, and the model's single-step estimate of
x0 is compared with the truth (the DiT and text states sampling uses at that level: a low-noise expert,
where the weights have one, at the levels at or below its switch; the prompt alone, guidance 1), separately on
- object cells: latent cells far from the clip's background (squared distance from the per-channel
  median > 10% of the clip's largest), about 13% of cells;
- background cells: the rest.
Errors are squared errors summed over channels, per cell, in the unit-variance latent. The baseline
column is what the identity estimate x_t / (1 - s) would score on any cell (C s^2 / (1 - s)^2): a
model worse than it on object cells at low noise re-draws detail it was given, which shows up as
speckled, broken shapes at the end of sampling.
"""

from __future__ import annotations

import numpy as np
import torch

import sora_nb
from _common import count, expert_note, level_denoiser, parse, parser, print_table
from sora_nb.train import clips_to_tensor
from sora_nb.world import sampler as world_sampler

LEVELS = (0.9, 0.6, 0.4, 0.2, 0.1)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--weights", default="shapes")
    p.add_argument("--clips", type=count, default=24)
    args = parse(p)
    backend = sora_nb.load(args.weights).backend
    vae = backend.vae
    obj = {s: [] for s in LEVELS}
    bg = {s: [] for s in LEVELS}
    share = []
    channels = vae.config.latent_channels
    with torch.no_grad():
        for i, clip in enumerate(world_sampler.sample(args.clips, seed=77)):
            video = clips_to_tensor([clip])  # (1, 3, T, H, W) in [-1, 1]
            z = vae.normalize(vae.encode(video))  # (1, C, F, h, w)
            median = z.flatten(2).median(dim=2).values[..., None, None, None]  # (1, C, 1, 1, 1)
            dist = ((z - median) ** 2).sum(1)  # (1, F, h, w)
            is_obj = dist > 0.1 * dist.max()
            share.append(float(is_obj.float().mean()))
            at = level_denoiser(backend, [clip.caption], 1.0)  # the prompt's pass only
            noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(i))
            for s in LEVELS:
                dit, text, mask = at(s)
                x0 = dit.predict_x0((1 - s) * z + s * noise, torch.tensor([s * 1000.0]), text, mask)
                err = ((x0 - z) ** 2).sum(1)  # (1, F, h, w)
                obj[s].append(float(err[is_obj].mean()))
                bg[s].append(float(err[~is_obj].mean()))
    rows = [(f"{s:.1f}", f"{np.mean(obj[s]):.3f}", f"{np.mean(bg[s]):.3f}",
             f"{channels * s * s / (1 - s) ** 2:.3f}") for s in LEVELS]
    print(f"{args.weights}: {args.clips} clips, object cells {np.mean(share):.1%} of all; {expert_note(backend)}")
    print_table(rows, header=("noise level s", "object-cell error", "background-cell error",
                              "identity estimate"))


if __name__ == "__main__":
    main()
