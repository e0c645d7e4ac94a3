"""Do the generated latent frames hang together? Frame-to-frame coherence of the DiT's clips.

    .venv/bin/python bench/bench_coherence.py --weights shapes [--weights FOLDER ...]
        [--reference RUN/cache/16x4x16x16.safetensors] [--clips 40] [--threads 2]

(``--weights`` takes a model name or a weights folder, e.g. ``runs/layout1/weights`` from the training run
in bench/RESULTS.md's thirteenth session, and ``--reference`` a latent cache of such a run.)

A diagnostic for the quality bars (issue 4, fourteenth session), not a speed figure. For each 2 s
clip (the model card's train/train prompts and seeds: the world sampler at evaluation seed
``step_seed(0, "eval", 0)``, as the card's ``world.evaluate``; the model's default settings) it takes the
final clean latent (the trace's last x0, in the DiT's normalised units, 4 latent frames) and, per
pair of neighbouring latent frames, the correlation of their maps of deviation from the clip's
background (each channel's median). A clip whose objects stay put or move a little scores high on
every pair; an object that vanishes, or a new one that appears, between two frames lowers that pair.

``--reference`` scores the same way real latents of the training cache (a ``cache/*.safetensors``
file of 4-frame clips, normalised with the first model's latent statistics). Their pairs are even (the
middle one a little higher); their level is lower than a model's, whose clips lack the real latents'
fine detail and often move too little, so compare the evenness, not the level. The table gives the mean
coherence of each pair, the middle pair's against the mean of the other two, and, per pair, how many
clips have their weakest link there.
"""

from __future__ import annotations

import numpy as np
import torch

from _common import count, load_models, parse, parser, print_table


def coherence(x: torch.Tensor) -> np.ndarray:
    """(F, C, h, w) latent -> (F-1,) correlations of neighbouring frames' deviation from the background."""
    background = x.flatten(2).median(dim=2).values.median(dim=0).values  # (C,) each channel's typical value
    d = (x - background[None, :, None, None]).flatten(1)  # (F, C*h*w)
    d = d - d.mean(dim=1, keepdim=True)
    a, b = d[:-1], d[1:]  # (F-1, n) each
    return ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-8)).numpy()


def summary(name: str, values: list) -> tuple:
    """One table row: mean coherence per pair, and the count of clips whose weakest pair is each."""
    v = np.array(values)  # (clips, F-1)
    weakest = np.bincount(v.argmin(axis=1), minlength=v.shape[1])
    mean = v.mean(axis=0)
    pairs = " / ".join(f"{m:.3f}" for m in mean)
    middle = mean[len(mean) // 2] / np.delete(mean, len(mean) // 2).mean()  # the 1-2 pair against 0-1 and 2-3
    return name, len(v), pairs, f"{middle:.2f}", " / ".join(str(int(k)) for k in weakest)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--weights", action="append", required=True, help="a weights folder (repeatable)")
    p.add_argument("--reference", default=None, help="a cache file of 4-frame latents to score as real clips")
    p.add_argument("--clips", type=count, default=40)
    args = parse(p)
    if args.clips < 2:
        p.error(f"--clips must be >= 2, got {args.clips}")
    reference = None
    if args.reference:  # read and checked before the minutes of generation
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            reference = load_file(args.reference)["latents"][: max(args.clips, 200)].float()  # (N, C, F, h, w)
        except (OSError, KeyError, SafetensorError) as e:
            p.error(f"--reference must be a latent cache file (cache/*.safetensors): {e}")
        if reference.ndim != 5 or reference.shape[2] != 4:
            p.error(f"--reference must hold 4-frame (2 s) latents, got {tuple(reference.shape)}")
    from sora_nb.train import step_seed
    from sora_nb.world import sample

    models = load_models(p, args.weights)  # every folder loaded (and checked) before the minutes of generation
    rows = []
    for i, (weights, gen) in enumerate(zip(args.weights, models)):
        if reference is not None and i == 0:  # real latents in the first model's normalised units
            reference = gen.backend.vae.normalize(reference)
        values = []
        for clip in sample(args.clips, seed=step_seed(0, "eval", 0), split="train", phrasing="train"):  # the card's
            video = gen.generate(clip.caption, seed=clip.seed, duration=2.0)
            x0 = torch.from_numpy(video.trace.x0.values[-1].astype(np.float32))  # (F, C, h, w)
            values.append(coherence(x0))
        rows.append(summary(weights, values))
    if reference is not None:
        rows.append(summary(f"real latents ({args.reference})", [coherence(x.transpose(0, 1)) for x in reference]))
    print_table(rows, header=("clips from", "n", "coherence, frames 0-1 / 1-2 / 2-3", "middle / outer",
                              "weakest pair (clips)"))


if __name__ == "__main__":
    main()
