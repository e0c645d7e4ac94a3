"""Where the sampler's steps pay: the evaluator's scores for step schedules that refine part of the path.

    .venv/bin/python bench/bench_steps.py [--weights FOLDER] [--clips 200] [--k 3] [--cut 0.6] [--schedules 20 40 A B]

A diagnostic for the quality bars (issue 4), not a speed figure. The embedded model samples with
diffusers' `FlowMatchEulerDiscreteScheduler` (the model's shift) and the stochastic step (eta 1), so a
schedule is just its list of noise levels. ``N`` is the model's own N-step schedule. ``A`` takes the
40-step schedule's levels above ``--cut`` and the 20-step schedule's below it (fine where the noise is
high, where the shipped model's guidance profile guides); ``B`` the reverse. Each schedule generates the
same ``--clips`` train-split prompts (evaluation seed ``step_seed(0, "eval", k)``; k 0 is the model
card's sample) at the model's default guidance, and the table gives every evaluator check, the share
of clips that pass them all, the DiT passes per clip (two where guidance is on) and the seconds per clip.
A second table splits that share by the prompt's object count (the clips of each count in brackets).

Every clip is one draw of its schedule: ``retries=0``, no redraws. The model's default ``generate`` redraws a
clip that its own check rejects (``limits.default_retries``, on fewer steps), and a redraw would not run the
schedule under test, so the "20" row is the model's 20-step sampler alone, not the model card's default
generation (which has redraws), and the DiT passes and seconds are those of the one draw each clip gets.
A low-noise expert, where the weights ship one, takes its steps as in sampling (the backend's own denoiser).
"""

from __future__ import annotations

import argparse
import time

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

import sora_nb
from _common import count, parse, parser, print_table
from sora_nb import world
from sora_nb.backends import embedded
from sora_nb.backends.embedded import guidance_at
from sora_nb.train import distil_grid, step_seed

CHECKS = ("colour", "shape", "motion", "count", "consistency", "overall")


def levels(shift: float, steps: int) -> list[float]:
    """The model's ``steps``-step noise levels (ending at 0)."""
    return distil_grid(steps, shift)[0].tolist()


def schedule_name(text: str) -> str:
    """argparse type of a ``--schedules`` entry: a step count >= 1, ``A`` or ``B``, else a usage error."""
    if text in ("A", "B") or (text.isdigit() and int(text) >= 1):
        return text
    raise argparse.ArgumentTypeError(f"takes step counts (integers >= 1), A or B, got {text!r}")


def schedule(name: str, shift: float, cut: float) -> list[float]:
    """A schedule's noise levels: ``N`` steps, or ``A`` / ``B`` (see the module's doc)."""
    if name.isdigit():
        return levels(shift, int(name))
    fine, coarse = levels(shift, 40), levels(shift, 20)
    if name == "A":
        return [s for s in fine if s > cut] + [s for s in coarse if s <= cut]
    if name == "B":
        return [s for s in coarse if s > cut] + [s for s in fine if s <= cut]
    raise ValueError(f"a schedule is a step count, A or B, got {name!r}")


class Fixed(FlowMatchEulerDiscreteScheduler):
    """The scheduler with its levels replaced by a given list (set as ``LEVELS`` before sampling)."""

    LEVELS: list[float] = []

    def set_timesteps(self, num_inference_steps=None, device=None, **kwargs):
        if num_inference_steps != len(self.LEVELS) - 1:  # e.g. a redraw's fewer steps: it would run LEVELS anyway
            raise RuntimeError(f"Fixed: asked for {num_inference_steps} steps, the schedule has {len(self.LEVELS) - 1}")
        super().set_timesteps(num_inference_steps, device=device, **kwargs)
        self.sigmas = torch.tensor(self.LEVELS, dtype=torch.float32)
        self.timesteps = self.sigmas[:-1] * 1000.0


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--weights", default=None, help="a weights folder (default: the shipped model)")
    p.add_argument("--clips", type=count, default=200)
    p.add_argument("--k", type=int, default=3, help="evaluation seed index (0: the model card's prompts)")
    p.add_argument("--cut", type=float, default=0.6, help="the noise level A and B split at")
    p.add_argument("--schedules", nargs="+", type=schedule_name, default=["20", "40", "A", "B"],
                   help="step counts (the model's own N-step schedule), A or B (default 20 40 A B)")
    args = parse(p)
    gen = sora_nb.load(args.weights) if args.weights else sora_nb.load()
    backend = gen.backend
    shift = float(backend.scheduler_config["shift"])
    g = gen.limits.default_guidance

    rows, by_count = [], []
    try:
        for name in args.schedules:
            sig = schedule(name, shift, args.cut)
            Fixed.LEVELS = sig
            embedded.FlowMatchEulerDiscreteScheduler = Fixed  # the backend builds its scheduler from this name
            passes = sum(2 if guidance_at(backend.guidance_profile, g, s) != 1.0 else 1 for s in sig[:-1])
            start = time.perf_counter()
            df = world.evaluate(gen, n=args.clips, seed=step_seed(0, "eval", args.k), split="train", phrasing="train",
                                steps=len(sig) - 1, retries=0)  # one draw per clip: a redraw would not run `sig`
            per_clip = (time.perf_counter() - start) / args.clips
            means = world.summarize(df)
            rows.append([name, len(sig) - 1, passes, *(f"{means[c]:.3f}" for c in CHECKS), f"{per_clip:.2f}"])
            groups = df.groupby("n_objects")["overall"]
            by_count.append([name, *(f"{m:.3f} ({n})" for m, n in zip(groups.mean(), groups.size()))])
            print(f"done {name}", flush=True)
    finally:  # the backend's own scheduler back, whatever happened
        embedded.FlowMatchEulerDiscreteScheduler = FlowMatchEulerDiscreteScheduler
    print(f"model {gen.name}, {args.clips} train/train prompts (k {args.k}), guidance {g:g}, shift {shift:g}, "
          f"cut {args.cut:g}; one draw per clip (retries=0: the model's default redraws are off)")
    print_table(rows, ("schedule", "steps", "DiT passes", *CHECKS, "s/clip"))
    print("\nevery check at once, by the prompt's object count (clips)")
    print_table(by_count, ("schedule", *(f"{n} object{'s' if n > 1 else ''}" for n in sorted(int(v) for v in df["n_objects"].unique()))))


if __name__ == "__main__":
    main()
