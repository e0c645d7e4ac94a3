"""Which prompt words the embedded DiT reads: its denoising error used as a classifier.

    .venv/bin/python bench/bench_reads.py [--weights shapes] [--clips 32] [--draws 2] [--threads N]

A diagnostic for the quality bars (issue 4), not a speed figure. A model that reads a word denoises
a clip better under the true word than under a wrong one, so the word whose caption gives the
lowest x0 error is the model's "reading" of the clip (the diffusion classifier of Li et al. 2023).

Clips are rendered by the world from "a {colour} {shape} moving {direction} on a dark background"
(training colour/shape pairs only; seeds 300, 301, ...). For each attribute (colour: 9 words,
shape: 5, direction: 8) every candidate caption differs from the truth in that one word. Each clip
is encoded, noised at each level s with ``--draws`` fixed noises (shared by all candidates), and
the candidates' x0 errors (summed over the latent) are compared; each level's DiT and text states are
the ones sampling uses there (a low-noise expert, where the weights have one, at or below its switch;
the prompt alone, guidance 1). The table gives the share of
clips whose lowest-error candidate is the true word, at each level and with the errors summed over
levels, and the mean gap between the best wrong word and the true one, relative to the true
word's error (how much the word matters). Chance is 1/9, 1/5 and 1/8.
"""

from __future__ import annotations

import numpy as np
import torch

import sora_nb
from _common import count, expert_note, level_denoiser, parse, parser, print_table
from sora_nb import world
from sora_nb.train import clips_to_tensor
from sora_nb.world import spec

LEVELS = (0.9, 0.75, 0.6, 0.4, 0.2)
TEMPLATE = "a {colour} {shape} moving {direction} on a dark background"
WORDS = {"colour": spec.COLOURS, "shape": spec.SHAPES, "direction": spec.DIRECTIONS}
DIRECTION_TEXT = {d: d.replace("-", " and to the ") if "-" in d else d for d in spec.DIRECTIONS}


def caption(colour: str, shape: str, direction: str) -> str:
    return TEMPLATE.format(colour=colour, shape=shape, direction=DIRECTION_TEXT[direction])


def truths(n: int) -> list[dict[str, str]]:
    """``n`` (colour, shape, direction) triples, training pairs only, deterministic."""
    rng = np.random.default_rng(300)
    out = []
    while len(out) < n:
        t = {k: str(rng.choice(v)) for k, v in WORDS.items()}
        if (t["colour"], t["shape"]) in spec.HELDOUT_COLOUR_SHAPE or (t["shape"], t["direction"]) in spec.HELDOUT_SHAPE_MOTION:
            continue
        if t["colour"] == "white":  # keeps "white" out of the background's words' way
            continue
        out.append(t)
    return out


def errors(backend, z: torch.Tensor, prompts: list[str], draws: int, seed: int) -> np.ndarray:
    """x0 squared error summed over the latent, (levels, prompts), averaged over the noise draws."""
    at = level_denoiser(backend, prompts, 1.0)  # sampling's DiT and the prompts' own pass at each level
    k = len(prompts)
    out = np.zeros((len(LEVELS), k))
    for d in range(draws):
        noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed * 100 + d))
        for i, s in enumerate(LEVELS):
            xt = ((1 - s) * z + s * noise).expand(k, *z.shape[1:])
            dit, states, mask = at(s)
            x0 = dit.predict_x0(xt, torch.full((k,), s * 1000.0), states, mask)
            out[i] += ((x0 - z) ** 2).flatten(1).sum(1).numpy() / draws
    return out


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--weights", default="shapes")
    p.add_argument("--clips", type=count, default=32)
    p.add_argument("--draws", type=count, default=2)
    args = parse(p)
    if args.clips < 1 or args.draws < 1:
        raise SystemExit(f"--clips and --draws must be >= 1; got --clips {args.clips}, --draws {args.draws}")
    backend = sora_nb.load(args.weights).backend
    vae = backend.vae
    right = {a: np.zeros(len(LEVELS) + 1) for a in WORDS}
    gaps = {a: [] for a in WORDS}
    with torch.no_grad():
        for c, truth in enumerate(truths(args.clips)):
            clip = world.render(caption(**truth), seed=300 + c)
            z = vae.normalize(vae.encode(clips_to_tensor([clip])))  # (1, C, F, h, w)
            for attr, words in WORDS.items():
                prompts = [caption(**{**truth, attr: w}) for w in words]
                err = errors(backend, z, prompts, args.draws, seed=c)  # (levels, words)
                true = words.index(truth[attr])
                total = err.sum(0)
                right[attr][:-1] += err.argmin(1) == true
                right[attr][-1] += total.argmin() == true
                wrong = np.delete(total, true)
                gaps[attr].append((wrong.min() - total[true]) / total[true])
    rows = [(attr, f"1/{len(WORDS[attr])}", *(f"{r / args.clips:.2f}" for r in right[attr]),
             f"{np.mean(gaps[attr]):+.2%}") for attr in WORDS]
    print(f"{args.weights}: {args.clips} clips, {args.draws} noise draws per level; {expert_note(backend)}")
    print_table(rows, header=("word", "chance", *(f"s={s}" for s in LEVELS), "all levels",
                              "gap (best wrong - true) / true"))


if __name__ == "__main__":
    main()
