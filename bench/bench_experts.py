"""Two DiTs by noise level (expert denoisers): one for the steps above a switch level, another below it.

    .venv/bin/python bench/bench_experts.py --high FOLDER --low FOLDER [--switch 0.9 ...]
        [--samples k0 hc hp k3 k2 k4 k5] [--clips 200] [--threads 2]

A diagnostic for the quality bars (issue 4, thirty-second session), not a speed figure. The clips are
decided twice (bench/RESULTS.md, thirtieth and thirty-first sessions): composed in the first steps (sigma
above .9) and then kept or broken in the band .9-.6. A fine-tune that trains the band harder
(``ft_level_weights``) keeps more of a true clip in the band but composes worse. eDiff-I (Balaji et al.
2022) samples with several denoisers, each fine-tuned for a range of noise levels; here the ``--high``
folder's DiT and text stack take every step whose sigma is above ``--switch`` and the ``--low`` folder's
the rest. The autoencoder, guidance profile and sampler are the high folder's (the two must share an
autoencoder and tokenizer). Each switch level is judged on the samples of bench_samples.py (200 prompts
each, guidance 2, the model's defaults otherwise) and printed beside the two folders alone
(``--switch 1`` is the low folder alone, ``--switch 0`` the high one: pass them to measure them).
The cost per clip is the same number of DiT passes as either model alone.
"""

from __future__ import annotations

import time
from typing import Iterator

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

import sora_nb
from _common import parse, parser, print_table
from bench_samples import DIMS, sample
from sora_nb import world
from sora_nb.backend import StepEvent
from sora_nb.backends import embedded
from sora_nb.request import Request
from sora_nb.sampler import flow_matching_steps
from sora_nb.train import step_seed


class Experts(embedded.EmbeddedBackend):
    """The high backend's model with the low backend's DiT and text stack below sigma ``switch``."""

    def __init__(self, high: embedded.EmbeddedBackend, low: embedded.EmbeddedBackend, switch: float):
        for part in ("vae", "dit", "text"):
            if type(getattr(high, part)) is not type(getattr(low, part)):
                raise ValueError(f"--high and --low must be the same architecture ({part} differs)")
        arch = lambda cfg: {k: v for k, v in cfg.items() if not k.startswith("_")}  # noqa: E731 (not _name_or_path)
        if arch(high.dit.config) != arch(low.dit.config):
            raise ValueError("--high and --low DiTs have different configs")
        super().__init__(high.vae, high.dit, high.text, high.scheduler_config, high.latent_rgb.numpy(),
                         {**high.info, "name": f"experts@{switch}"})
        self.low, self.switch = low, switch

    def denoise(self, request: Request, generator: torch.Generator) -> Iterator[StepEvent]:
        shape = self.latent_shape(request)
        noise = torch.randn((1, *shape), generator=generator, dtype=torch.float32)
        conds = {"high": (self.dit, *self._conditioning(request)),
                 "low": (self.low.dit, *self.low._conditioning(request))}
        g = request.guidance
        both = g not in (0.0, 1.0)
        previous: list[torch.Tensor | None] = [None]
        used = [g]

        @torch.no_grad()
        def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            sigma = float(t) / 1000.0
            dit, text, mask = conds["high" if sigma > self.switch else "low"]
            if both:
                used[0] = embedded.guidance_at(self.guidance_profile, g, sigma)
            pair = both and used[0] != 1.0
            xin = torch.cat([x, x]) if pair else x
            prev = previous[0] if pair or previous[0] is None else previous[0][:1]
            v = dit(xin, t.reshape(1).expand(len(xin)).float(), text if pair else text[:1],
                    mask if pair else mask[:1], prev)
            if dit.config.self_condition:
                est = xin - (t.float() / 1000.0).clamp(min=1e-3) * v
                if both and not pair:
                    est = torch.cat([est, torch.zeros_like(est) if previous[0] is None else previous[0][1:]])
                previous[0] = est
            if pair:
                vc, vu = v.chunk(2)
                v = vu + used[0] * (vc - vu)
            return v

        scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.scheduler_config)
        for ev in flow_matching_steps(velocity, noise, scheduler, request.steps, eta=request.eta,
                                      generator=generator):
            yield StepEvent(step=ev.step, num_steps=ev.num_steps, timestep=ev.timestep, sigma=ev.sigma,
                            sigma_next=ev.sigma_next, latent=ev.latent[0].transpose(0, 1),
                            x0=ev.x0[0].transpose(0, 1), x_next=ev.x_next[0].transpose(0, 1), guidance=used[0])


def main() -> None:
    p = parser(__doc__, repeats=1)
    p.add_argument("--high", required=True, help="weights folder for the steps above --switch")
    p.add_argument("--low", required=True, help="weights folder for the steps at or below --switch")
    p.add_argument("--switch", type=float, nargs="+", default=[0.9])
    p.add_argument("--samples", nargs="+", default=["k0", "hc", "hp", "k3", "k2", "k4", "k5"])
    p.add_argument("--clips", type=int, default=200)
    p.add_argument("--guidance", type=float, default=2.0)
    args = parse(p)
    if any(not 0.0 <= s <= 1.0 for s in args.switch):
        p.error(f"--switch levels must be in [0, 1]; got {args.switch}")
    try:
        plan = [(s, *sample(s)) for s in args.samples]
    except ValueError as e:
        p.error(str(e))
    high, low = sora_nb.load(args.high).backend, sora_nb.load(args.low).backend
    rows = []
    for switch in args.switch:
        gen = sora_nb.Generator(Experts(high, low, switch))
        overall = []
        for name, split, phrasing, k in plan:
            t = time.perf_counter()
            df = world.evaluate(gen, n=args.clips, seed=step_seed(0, "eval", k), split=split, phrasing=phrasing,
                                guidance=args.guidance)
            s = world.summarize(df)
            overall.append(float(s["overall"]))
            rows.append([f"{switch:g}", name, " / ".join(f"{s[d]:.3f}" for d in DIMS), f"{s['overall']:.3f}",
                         f"{time.perf_counter() - t:.0f}"])
            print(" | ".join(rows[-1]), flush=True)
        rows.append([f"{switch:g}", f"mean of {len(plan)}", "", f"{sum(overall) / len(overall):.3f}", ""])
    print(f"high: {args.high}, low: {args.low}")
    print_table(rows, ("switch sigma", "sample", "colour / shape / motion / count / consistency", "every check", "s"))


if __name__ == "__main__":
    main()
