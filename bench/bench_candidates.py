"""Best of N seeds: how much picking among a prompt's clips could give, and what the model itself can pick.

    .venv/bin/python bench/bench_candidates.py [--weights FOLDER] [--candidates 3] [--clips 200] [--samples k0 hc ...]
        [--verifier FOLDER] [--verifier-only] [--threads 2]

A diagnostic for the quality bars (issue 4, thirtieth session), not a speed figure. For ``--clips`` prompts of
each sample (bench_samples.py's: ``k0`` the model card's train prompts, ``hc`` / ``hp`` its held-out rows, ``kN``
train prompts at evaluation seed ``step_seed(0, "eval", N)``; ``--k N`` is ``--samples kN``) it draws
``--candidates`` clips per prompt at default settings (the prompt's own seed, then seed + 1000003 j) and
scores each with the evaluator. The first table gives the share of prompts where every check passes: for
each candidate alone, and for the best of 2, 4, 8 and N (the first that many candidates; those up to N) as the
evaluator would pick (an oracle: the most any reranker can reach). The second gives what a reranker that sees
only the model picks, best of the same counts:

* ``x0 error``: the DiT's error in re-estimating the clip's latent under the prompt, noised to sigma
  0.3 / 0.5 / 0.7 / 0.9 with fixed noise (a diffusion classifier's score; lower is picked);
* ``prompt gain``: the same error under the empty prompt less under the prompt (higher is picked);
* ``settled at sigma s``: how far the sampler's x0 estimate at the step nearest s lies from the final latent
  (the trace; the least moved is picked);
* ``verifier`` (the model's own, or ``--verifier FOLDER`` from ``scripts/train_verifier.py``): the mean over the clip's
  latent frames of a verifier's logit for the prompt (`sora_nb.models.verifier`; the highest is picked), and
  as ``best_of(accept=0)`` picks: the first candidate scored 0 or more, else the highest, with the clips drawn.

Picking by the evaluator would be judging with the test, so only model-internal scores are candidates for a
sampler option.
"""

from __future__ import annotations

import numpy as np
import torch

import sora_nb
from sora_nb.models.verifier import ClipVerifier
from _common import count, parse, parser, print_table
from bench_samples import sample
from sora_nb import world
from sora_nb.api import CANDIDATE_STRIDE
from sora_nb.train import step_seed

LEVELS = (0.3, 0.5, 0.7, 0.9)
SETTLED = (0.9, 0.78, 0.54)  # the 20-step grid's levels 8, 12 and 16


@torch.no_grad()
def x0_errors(be, z0: torch.Tensor, prompt: str) -> np.ndarray:
    """(len(LEVELS), 2): the DiT's x0 error on ``z0`` (1, C, F, h, w) noised to each level, under the prompt and ''."""
    (sc, mc), (su, mu) = be.encode_prompt(prompt), be.encode_prompt("")
    n = max(sc.shape[1], su.shape[1])
    pad = torch.nn.functional.pad
    text = torch.cat([pad(sc, (0, 0, 0, n - sc.shape[1])), pad(su, (0, 0, 0, n - su.shape[1]))])
    mask = torch.cat([pad(mc, (0, n - mc.shape[1])), pad(mu, (0, n - mu.shape[1]))])
    g = torch.Generator().manual_seed(12345)
    out = []
    for s in LEVELS:
        x = (1 - s) * z0 + s * torch.randn(z0.shape, generator=g)
        x0 = be.dit.predict_x0(torch.cat([x, x]), torch.full((2,), s * 1000.0), text, mask).float()
        out.append(((x0 - z0) ** 2).mean(dim=(1, 2, 3, 4)).tolist())
    return np.array(out)


ACCEPT = 0.0  # the threshold README and bench/RESULTS.md quote for best_of(accept=)


def accepted(scores: list[dict], m: int) -> tuple[int, int]:
    """(picked, clips drawn) of `Generator.best_of(candidates=m, accept=ACCEPT)` on one prompt's verifier scores."""
    v = [sc["verifier"] for sc in scores[:m]]
    first = next((j for j, x in enumerate(v) if x >= ACCEPT), None)
    return (first, first + 1) if first is not None else (int(np.argmax(v)), m)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--weights", default=None, help="a weights folder (default: the shipped model)")
    p.add_argument("--candidates", type=count, default=3)
    p.add_argument("--clips", type=count, default=200)
    p.add_argument("--k", type=int, default=None, help="evaluation seed index of train prompts (same as --samples kK)")
    p.add_argument("--samples", nargs="+", default=None, help="bench_samples.py's samples (k0, hc, hp, kN); default k0")
    p.add_argument("--verifier", default=None,
                   help="a verifier folder (scripts/train_verifier.py) to rerank by; default the model's own, if it has one")
    p.add_argument("--verifier-only", action="store_true", help="skip the x0-error and settled rerankers (faster)")
    args = parse(p)
    if args.candidates < 2 or args.clips < 1:
        p.error(f"--candidates must be >= 2 and --clips >= 1; got {args.candidates}, {args.clips}")
    names = args.samples or [f"k{args.k or 0}"]
    try:
        plan = [(name, *sample(name)) for name in names]
    except ValueError as e:
        p.error(str(e))
    gen = sora_nb.load(args.weights) if args.weights else sora_nb.load()
    verifier = (ClipVerifier.from_pretrained(args.verifier, use_safetensors=True, low_cpu_mem_usage=False).eval()
                if args.verifier else gen.backend.verifier)
    if args.verifier_only and verifier is None:
        p.error("--verifier-only: the model has no verifier and none was given (--verifier FOLDER)")
    n = args.candidates
    summary = []
    for name, split, phrasing, k in plan:
        passed, scores = [], []  # per prompt: a list per candidate
        for clip in world.sample(args.clips, seed=step_seed(0, "eval", k), split=split, phrasing=phrasing):
            ok, sc = [], []
            for j in range(n):
                video = gen.generate(clip.caption, seed=clip.seed + CANDIDATE_STRIDE * j)
                ok.append(world.score(video.frames, clip.caption)["overall"] == 1.0)
                sc.append({})
                if not args.verifier_only:
                    err = x0_errors(gen.backend, video.latents.transpose(0, 1)[None].float(), clip.caption)
                    x0, sigma = video.trace.x0.values.astype(np.float32), video.trace.sigma.values
                    sc[-1].update({"x0 error": -float(err[:, 0].sum()), "prompt gain": float((err[:, 1] - err[:, 0]).sum())})
                    sc[-1].update({f"settled at sigma {s:g}": -float(((x0[int(np.abs(sigma - s).argmin())] - x0[-1]) ** 2).mean())
                                   for s in SETTLED})
                if verifier is not None:
                    sc[-1]["verifier"] = float(verifier.clip_score(video.latents[None], *gen.backend.encode_prompt(clip.caption))[0])
            passed.append(ok)
            scores.append(sc)
        ok = np.array(passed, dtype=float)  # (prompts, candidates)
        sizes = sorted({m for m in (2, 4, 8, n) if m <= n})  # best of m: the first m candidates
        print(f"sample {name} ({split} split, {phrasing} phrasings), {len(ok)} prompts, every check:")
        print_table([*([f"candidate {j}", f"{ok[:, j].mean():.3f}"] for j in range(n)),
                     *([f"best of {m} (oracle)", f"{ok[:, :m].max(1).mean():.3f}"] for m in sizes)],
                    ("every check", f"{len(ok)} prompts"))
        print()
        rows = []
        for key in scores[0][0]:
            picks = [np.mean([ok[i, max(range(m), key=lambda j: scores[i][j][key])] for i in range(len(ok))])
                     for m in sizes]
            rows.append([key, *(f"{x:.3f}" for x in picks)])
            if key == "verifier":  # best_of(accept=ACCEPT): the first candidate scored >= ACCEPT, else the highest
                taken = [[accepted(scores[i], m) for i in range(len(ok))] for m in sizes]
                rows.append([f"verifier, accept={ACCEPT:g} (clips drawn)",
                             *(f"{np.mean([ok[i, j] for i, (j, _) in enumerate(t)]):.3f} "
                               f"({np.mean([d for _, d in t]):.2f})" for t in taken)])
                summary.append([name, f"{ok[:, 0].mean():.3f}", *(f"{ok[:, :m].max(1).mean():.3f} / {x:.3f}"
                                                                   for m, x in zip(sizes, picks))])
        print_table(rows, ("picked by the model's", *(f"best of {m}" for m in sizes)))
        print()
    if summary:
        print("the verifier's pick against candidate 0 (generate's own clip), every check:")
        print_table(summary, ("sample", "candidate 0", *(f"best of {m}: oracle / verifier" for m in sizes)))


if __name__ == "__main__":
    main()
