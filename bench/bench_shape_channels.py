"""Shape as explicit latent channels: does the DiT draw the right shape when the latent names it?

    .venv/bin/python -m sora_nb.train --out runs/priv --set shape_channels=true
    .venv/bin/python bench/bench_shape_channels.py --weights runs/priv/weights [--guidance 1.5] [--threads 2]

A diagnostic for the quality bars (issue 4, eleventh session), not a speed figure and not the shipped
recipe. The recipe knob ``shape_channels`` (off by default) trains with one change: the latent's last
five channels are not the encoder's output but each shape's visible coverage of the latent cell
(`sora_nb.world.canvas.shape_maps`, averaged over the cell's 4 frames x 4 x 4 pixels), in the
autoencoder's training and in the DiT's latent cache. The labels are the world's own,
so they are only there at training time: the DiT must generate those channels from the prompt, and
the decoder learns to read them. (A VA-VAE-like alignment, with privileged labels standing in for a
foundation model's features; the encoder alone learns these channels poorly, see bench/RESULTS.md.)

With ``shape_layout`` as well (twelfth session), the encoder sees discs and only the shape channels say
which outline to draw, so this table shows how much of the DiT's choice the decoder turns into pixels.

This script asks single-object prompts "a large {red, green, blue, yellow} {shape} on a dark background"
(seeds 100-107, 8 per shape, as bench_shape.py) and prints, per clip, the shape whose channel holds the
most mass in the generated latent, and the shape the evaluator reads from the decoded pixels.
"""

from __future__ import annotations

import collections
import sys

from _common import check_guidance, parse, parser
from sora_nb.world import spec

K = len(spec.SHAPES)  # the latent's last K channels are the shape channels
COLOURS = ("red", "green", "blue", "yellow")


def read(weights: str, guidance: float) -> None:
    """Single-object prompts: the shape channel the DiT drew against the shape read from the pixels."""
    import sora_nb
    from sora_nb.world.vision import analyse

    gen = sora_nb.load(weights)
    vae = gen.backend.vae
    counts, channel_ok, read_ok, agree, n = collections.Counter(), 0, 0, 0.0, 0
    for shape in spec.SHAPES:
        for k in range(8):
            prompt = f"a large {COLOURS[k % 4]} {shape} on a dark background"
            video = gen.generate(prompt, seed=100 + k, guidance=guidance, trace=False)
            z = vae.denormalize(video.latents.transpose(0, 1)[None].float())[0, -K:].clamp(min=0)  # (K, F, h, w)
            drawn = spec.SHAPES[int(z.sum((1, 2, 3)).argmax())]
            per_frame = z.sum((2, 3)).argmax(0)  # (F,) each latent frame's strongest shape channel
            agree += float((per_frame == per_frame.mode().values).float().mean())
            scene = analyse(video.frames)
            seen = scene.tracks[0].shape if scene.tracks else "none"
            channel_ok += drawn == shape
            read_ok += seen == shape
            n += 1
            counts[(shape, drawn, seen)] += 1
    print(f"{weights}, guidance {guidance}: shape channel right {channel_ok}/{n}, pixels read right {read_ok}/{n}, "
          f"latent frames agreeing with the clip's strongest channel {agree / n:.2f}")
    print("| asked | strongest channel | read from pixels | clips |\n|---|---|---|---|")
    for (asked, drawn, seen), c in sorted(counts.items()):
        print(f"| {asked} | {drawn} | {seen} | {c} |")


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--weights", required=True, help="a weights folder trained with shape_channels=true")
    p.add_argument("--guidance", type=float, default=1.5)
    args = parse(p)
    check_guidance(p, args.guidance)  # before the model loads
    read(args.weights, args.guidance)
    return 0


if __name__ == "__main__":
    sys.exit(main())
