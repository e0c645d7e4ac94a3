"""Two DiTs by noise level (expert denoisers): one for the steps above a switch level, another below it.

    .venv/bin/python bench/bench_experts.py --high FOLDER --low FOLDER [--switch 0.9 ...]
        [--samples k0 hc hp k3 k2 k4 k5] [--clips 200] [--threads 2]

A diagnostic for the quality bars (issue 4, thirty-second session), not a speed figure. The clips are
decided twice (bench/RESULTS.md, thirtieth and thirty-first sessions): composed in the first steps (sigma
above .9) and then kept or broken in the band .9-.6. A fine-tune that trains the band harder
(``ft_level_weights``) keeps more of a true clip in the band but composes worse. eDiff-I (Balaji et al.
2022) samples with several denoisers, each fine-tuned for a range of noise levels; here the ``--high``
folder's DiT and text stack take every step whose sigma is above ``--switch`` and the ``--low`` folder's
the rest (its low-noise expert's, if it has one: ``--high shapes --low shapes --switch S`` moves the shipped
model's switch; a high folder with an expert lends its main DiT). The autoencoder, guidance profile and
sampler are the high folder's (the two must share an autoencoder and tokenizer). Each switch level is judged on the samples of bench_samples.py (200 prompts
each, guidance 2, the model's defaults otherwise). To measure either folder alone in the same table,
pass ``--switch 0`` (the high folder at every step) or ``--switch 1`` (the low one).
The cost per clip is the same number of DiT passes as either model alone.
"""

from __future__ import annotations

import sora_nb
from _common import check_guidance, count, load_models, parse, parser, print_table
from bench_samples import sample, score
from sora_nb.backends import embedded


def experts(high: embedded.EmbeddedBackend, low: embedded.EmbeddedBackend, switch: float) -> embedded.EmbeddedBackend:
    """The high backend's model with the low backend's DiT and text stack at sigma ``switch`` and below (the
    package's own low-noise expert, as a weights folder with ``low/`` loads it)."""
    info = {k: v for k, v in high.info.items() if k != "expert_switch"} | {"name": f"experts@{switch}"}
    pair = low.low or (low.dit, low.text)  # a --low folder with its own expert lends that one
    if 0.0 < switch < 1.0:
        return embedded.EmbeddedBackend(high.vae, high.dit, high.text, high.scheduler_config,
                                        high.latent_rgb.numpy(), {**info, "expert_switch": switch}, low=pair,
                                        verifier=high.verifier)
    dit, text = (high.dit, high.text) if switch <= 0.0 else pair  # either DiT at every step
    return embedded.EmbeddedBackend(high.vae, dit, text, high.scheduler_config, high.latent_rgb.numpy(), info,
                                    verifier=high.verifier)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--high", required=True, help="weights folder for the steps above --switch")
    p.add_argument("--low", required=True, help="weights folder for the steps at or below --switch")
    p.add_argument("--switch", type=float, nargs="+", default=[0.9])
    p.add_argument("--samples", nargs="+", default=["k0", "hc", "hp", "k3", "k2", "k4", "k5"])
    p.add_argument("--clips", type=count, default=200)
    p.add_argument("--guidance", type=float, default=2.0)
    args = parse(p)
    check_guidance(p, args.guidance)  # before the models load, as generate would refuse it after they did
    if any(not 0.0 <= s <= 1.0 for s in args.switch):
        p.error(f"--switch levels must be in [0, 1]; got {args.switch}")
    try:
        plan = [(s, *sample(s)) for s in args.samples]
    except ValueError as e:
        p.error(str(e))
    (high,), (low,) = load_models(p, [args.high], "--high"), load_models(p, [args.low], "--low")
    high, low = high.backend, low.backend
    rows: list[list[str]] = []
    for switch in args.switch:
        score(sora_nb.Generator(experts(high, low, switch)), f"{switch:g}", plan, args.clips, args.guidance, rows)
    print(f"high: {args.high}, low: {args.low}")
    print_table(rows, ("switch sigma", "sample", "colour / shape / motion / count / consistency", "every check", "s"))


if __name__ == "__main__":
    main()
