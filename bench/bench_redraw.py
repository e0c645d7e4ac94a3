"""Where a clip's content is decided: the true clip's latent noised to a level and redrawn by the DiT from there.

    .venv/bin/python bench/bench_redraw.py [--weights FOLDER] [--levels 0 0.3 0.6 0.75 0.9 1]
        [--clips 200] [--threads 2]

A diagnostic for the quality bars (issue 4, thirtieth session), not a speed figure. For the model card's
train prompts (``k0`` of bench_samples.py: world sampler, evaluation seed ``step_seed(0, "eval", 0)``) it
encodes the world's own rendering of each prompt with the model's encoder (the latent the decoder was
trained on: `train.pixel_label_latent`), noises it to the level s, and lets the DiT take the rest of the
model's sampler from there: its 20-step grid from the first level at or below s, guidance 2 with the
model's guidance profile, a fresh noise at every step (eta 1, the shipped default). Each step's DiT and text
states are the ones sampling uses at that level (the backend's ``denoiser(request)``: a low-noise expert,
where the folder has one, takes the steps at or below its ``expert_switch``). Then it decodes and scores
every clip (colour / shape / motion / count / consistency, and every check at once).

Level 0 is the autoencoder's round trip (what any DiT could reach with this decoder); level 1 draws from
pure noise, the model's own generation of the prompt (one draw: the default generate's redraws of a
clip its check rejects are not run here). Between them, the level where every check falls is
where the DiT decides (and loses) the clip's content; the levels above it are where a better DiT must
differ. Redraws are SDEdit (Meng et al. 2022): the same loop a "remix with strength s" would run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from _common import count, expert_note, level_denoiser, parse, parser, print_table
from sora_nb import train, world
from sora_nb.backends import embedded
from sora_nb.train import step_seed

DIMS = ("colour", "shape", "motion", "count", "consistency", "overall")
GUIDANCE = 2.0
STEPS = 20
BATCH = 8


@torch.no_grad()
def redraw(be: embedded.EmbeddedBackend, z: torch.Tensor, captions: list[str], level: float,
           grid: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """The normalised latents ``z`` noised to the first grid level at or below ``level`` and sampled from there."""
    if level <= 0.0:
        return z
    at = level_denoiser(be, captions, GUIDANCE)  # sampling's DiT and text states at each level
    todo = [k for k in range(len(grid) - 1) if float(grid[k]) <= level + 1e-6]
    s = float(grid[todo[0]])
    x = (1.0 - s) * z + s * torch.randn(z.shape, generator=g)
    for k in todo:
        s, s_next = float(grid[k]), float(grid[k + 1])
        w = embedded.guidance_at(be.guidance_profile, GUIDANCE, s)
        t = torch.full((2 * len(z),), s * 1000.0)
        dit, states, masks = at(s)  # the main DiT, or the low-noise expert at or below its switch
        c, u = dit.predict_x0(torch.cat([x, x]), t, states, masks).float().chunk(2)
        x0 = u + w * (c - u)
        x = (1.0 - s_next) * x0 + s_next * torch.randn(z.shape, generator=g)  # x0 itself at the last step
    return x


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--weights", default="", help="weights folder (default the shipped)")
    p.add_argument("--levels", type=float, nargs="+", default=[0.0, 0.3, 0.6, 0.75, 0.9, 1.0])
    p.add_argument("--clips", type=count, default=200)
    args = parse(p)
    if args.clips < 1:
        p.error(f"--clips must be >= 1; got {args.clips}")
    if any(not 0.0 <= v <= 1.0 for v in args.levels):
        p.error(f"--levels must be noise levels in [0, 1]; got {args.levels}")
    folder = Path(args.weights) if args.weights else embedded.WEIGHTS_DIR
    be = embedded.load_folder(folder)
    recipe = json.loads((folder / "scores.json").read_text())["recipe"] if (folder / "scores.json").is_file() else {}
    if not (recipe.get("shape_layout") and recipe.get("pix_steps")):
        p.error(f"{str(folder)!r}: the redraw needs a layout-latent model with a pixel encoder (the shipped recipe's)")
    if float(be.limits.default_eta) != 1.0:
        p.error(f"this model's default eta is {be.limits.default_eta}; the redraw loop is the eta 1 sampler")
    shape_angle = bool(recipe.get("shape_angle"))
    grid = train.distil_grid(STEPS, float(be.scheduler_config.get("shift", 1.0)))[0]
    clips = list(world.sample(args.clips, seed=step_seed(0, "eval", 0), split="train", phrasing="train"))
    scores: dict[float, list[dict]] = {v: [] for v in args.levels}
    seconds = dict.fromkeys(args.levels, 0.0)
    for b in range(0, len(clips), BATCH):
        part = clips[b:b + BATCH]
        video = train.clips_to_tensor(part)
        with torch.no_grad():
            z = be.vae.normalize(train.pixel_label_latent(be.vae, part, video, shape_angle))
        for level in args.levels:
            t = time.perf_counter()
            g = torch.Generator().manual_seed(1000 + b)
            zz = redraw(be, z, [c.caption for c in part], level, grid, g)
            with torch.no_grad():
                out = be.vae.decode(be.vae.denormalize(zz), video.shape[2])
            frames = ((out.permute(0, 2, 3, 4, 1) + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
            scores[level].extend(world.score(f, c.caption) for f, c in zip(frames, part))
            seconds[level] += time.perf_counter() - t
    rows = []
    for level in args.levels:
        m = {d: float(np.nanmean([s[d] for s in scores[level]])) for d in DIMS}
        first = max((float(v) for v in grid[:-1] if float(v) <= level + 1e-6), default=0.0)
        rows.append([f"{level:g}", f"{first:.3f}" if level > 0 else "-",
                     " / ".join(f"{m[d]:.3f}" for d in DIMS[:-1]), f"{m['overall']:.3f}", f"{seconds[level]:.0f}"])
    print(f"{folder}: {len(clips)} train/train prompts (k0), guidance {GUIDANCE:g}, {expert_note(be)}; "
          "one draw per clip")
    print_table(rows, ("level", "first step's sigma", "colour / shape / motion / count / consistency",
                       "every check", "s"))


if __name__ == "__main__":
    main()
