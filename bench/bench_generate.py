"""Speed of the embedded model's default generation, measured in one run; prints a table.

    .venv/bin/python bench/bench_generate.py [--repeats 5] [--threads N] [--weights shapes] [--steps 20]

Rows: load time; default generation (2 s clip, 20 steps, guidance 5: classifier-free guidance, so
two model passes per step) with tracing on and off and their ratio; the trace's size; the model's
FLOPs per clip (counted by torch's FlopCounterMode) and the share of this machine's float32 matmul
peak (a 1024^3 torch.matmul, measured in the same run) that generation reaches. When the model's
guidance profile turns guidance off at some steps (weight 0), those steps run the prompt's pass alone;
the last rows time the same clip with both passes at every step (those weights set to 1e-9) for the saving.
The timed clips repeat one prompt, whose text states the backend caches; a row times the text encoder
alone on new prompts (what a changed prompt adds once).
``--steps`` times another step count (the bar is set at 20).
When the model has a verifier, rows time ``best_of(candidates=2)`` against ``generate``
(interleaved, trace off) and the verifier's score of one clip alone.
When the model judges its draws (``retries``; the shipped model redraws up to three times by default a clip whose object
count changes between latent frames or that its verifier scores under ``redraw_below``), the last rows time
``--retry-prompts`` world captions (each with its own seed, trace off, the model's default guidance) with the default
retries against ``retries=0``, interleaved: median, mean and slowest clip, the share of clips redrawn, the time of clips
drawn two, three or more times (redraw a takes ``limits.redraw_steps(steps, a)`` steps), and the check (``judge_draw``) alone.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

import sora_nb
from _common import count, count_or_zero, parse, parser, print_table, timed

PROMPT = "a red circle moving right"


def matmul_peak(n: int = 1024, repeats: int = 20) -> float:
    """Float32 matmul throughput in FLOP/s on this machine (best of ``repeats``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = min(timed(lambda: torch.matmul(a, b), repeats))
    return 2 * n**3 / best


def main() -> None:
    p = parser(__doc__, repeats=5)
    p.add_argument("--weights", default="shapes", help="the model to time: a name or a weights folder")
    p.add_argument("--steps", type=count, default=20, help="denoising steps per clip (default 20, the bar's)")
    p.add_argument("--retry-prompts", type=count_or_zero, default=40,
                   help="world captions timed with the default retries and with none (default 40; 0: skip)")
    args = parse(p)

    start = time.perf_counter()
    try:
        gen = sora_nb.load(args.weights)
    except (ValueError, TypeError) as err:
        p.error(f"--weights: {err}")
    load_s = time.perf_counter() - start
    kw = dict(seed=0, duration=2.0, guidance=5.0, steps=args.steps)

    on, off = [], []
    gen.generate(PROMPT, trace=True, **kw)
    for _ in range(args.repeats):  # interleave so drift affects both equally
        t0 = time.perf_counter(); gen.generate(PROMPT, trace=True, **kw); on.append(time.perf_counter() - t0)
        t0 = time.perf_counter(); gen.generate(PROMPT, trace=False, **kw); off.append(time.perf_counter() - t0)
    video = gen.generate(PROMPT, trace=True, **kw)
    trace_mb = video.trace.nbytes / 2**20

    # the prompt's states are cached per prompt: a new prompt (a widget edit) first runs the text encoder
    encode = []
    if hasattr(gen.backend, "text"):
        from sora_nb import world

        prompts = [c.caption for c in world.sample(args.repeats + 1, seed=99)]
        low = getattr(gen.backend, "low", None)  # a low-noise expert has its own text stack: a new prompt runs both
        stacks = [gen.backend.text] + ([low[1]] if low else [])
        with torch.no_grad():
            for stack in stacks:
                stack(prompts[:1])
            for prompt in prompts[1:]:
                t0 = time.perf_counter()
                for stack in stacks:
                    stack([prompt])
                encode.append(time.perf_counter() - t0)

    # oneDNN off while counting: the decoder's convolutions then go through aten.convolution, which the
    # counter knows (it has no formula for aten.mkldnn_convolution, which they call when timed); attention through
    # the math kernel: the counter has no formula for the CPU flash-attention kernel the timed clips use, and
    # counted it as 0 (7.4 of 35.8 GFLOP a default clip, the fifty-eighth session found)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with (torch.backends.mkldnn.flags(enabled=False), sdpa_kernel(SDPBackend.MATH),
          FlopCounterMode(display=False) as counter):
        gen.generate(PROMPT, trace=False, **kw)
    flops = counter.get_total_flops()
    peak = matmul_peak()
    med_off = statistics.median(off)

    both = None
    profile = getattr(gen.backend, "guidance_profile", ())
    if any(w == 0.0 for _, w in profile):  # the same networks, every step paying for both passes
        from sora_nb.backends.embedded import EmbeddedBackend
        b = gen.backend
        info = {**b.info, "guidance_profile": [[s, w or 1e-9] for s, w in profile]}
        paired = sora_nb.Generator(EmbeddedBackend(b.vae, b.dit, b.text, b.scheduler_config, b.latent_rgb.numpy(), info,
                                                   b.low, b.verifier))
        paired.generate(PROMPT, trace=False, **kw)
        skip, both = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter(); gen.generate(PROMPT, trace=False, **kw); skip.append(time.perf_counter() - t0)
            t0 = time.perf_counter(); paired.generate(PROMPT, trace=False, **kw); both.append(time.perf_counter() - t0)

    best = None
    if getattr(gen.backend, "verifier", None) is not None:  # Generator.best_of: two clips and the verifier's pick
        gen.best_of(PROMPT, candidates=2, trace=False, **kw)
        best, single, score = [], [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter(); gen.best_of(PROMPT, candidates=2, trace=False, **kw); best.append(time.perf_counter() - t0)
            t0 = time.perf_counter(); gen.generate(PROMPT, trace=False, **kw); single.append(time.perf_counter() - t0)
            t0 = time.perf_counter(); gen.backend.score_clip(video.latents, PROMPT); score.append(time.perf_counter() - t0)

    redraw = None
    if gen.limits.max_retries and args.retry_prompts > 0:  # layout redraws: what they cost over varied prompts
        from sora_nb import world

        clips = list(world.sample(args.retry_prompts, seed=7, split="train"))
        plain_kw = dict(duration=2.0, steps=args.steps, trace=False)
        redraw, once, draws, check = [], [], [], []
        states = getattr(gen.backend, "encode_prompt", None)  # (not `encode`: the text encoder's timings above)
        for c in clips:
            if states is not None:  # the prompt's text states first (cached): neither arm pays for them, not the first
                states(c.caption)
                if getattr(gen.backend, "low", None) is not None:
                    states(c.caption, low=True)
            t0 = time.perf_counter(); v = gen.generate(c.caption, seed=c.seed, **plain_kw); redraw.append(time.perf_counter() - t0)
            t0 = time.perf_counter(); gen.generate(c.caption, seed=c.seed, retries=0, **plain_kw); once.append(time.perf_counter() - t0)
            draws.append(len(v.params["retry"]["seeds"]))
            t0 = time.perf_counter(); gen.backend.judge_draw(v.latents, c.caption); check.append(time.perf_counter() - t0)

    rows = [
        ("model", gen.name),
        ("torch threads", str(torch.get_num_threads())),
        ("load (s)", f"{load_s:.2f}"),
        ("generate, trace on: median s", f"{statistics.median(on):.3f}  (min {min(on):.3f})"),
        ("generate, trace off: median s", f"{med_off:.3f}  (min {min(off):.3f})"),
        ("trace on / off (medians)", f"{statistics.median(on) / med_off:.3f}"),
        ("trace size (MiB)", f"{trace_mb:.2f}"),
        *([("text encoder, a new prompt: median ms", f"{1e3 * statistics.median(encode):.1f}  (uncounted in the FLOPs "
            "below: a repeated prompt's states are cached)")] if encode else []),
        ("model FLOPs per clip (G)", f"{flops / 1e9:.1f}"),
        ("achieved (GFLOP/s)", f"{flops / med_off / 1e9:.1f}"),
        ("torch fp32 matmul peak (GFLOP/s, best of 20 1024^3 products)", f"{peak / 1e9:.1f}"),
        ("share of matmul peak", f"{flops / med_off / peak:.1%}"),
    ]
    if both:
        rows += [
            ("guidance-off steps skip the negative pass: median s", f"{statistics.median(skip):.3f}  (min {min(skip):.3f})"),
            ("both passes at every step: median s", f"{statistics.median(both):.3f}  (min {min(both):.3f})"),
            ("skip / both (medians)", f"{statistics.median(skip) / statistics.median(both):.3f}"),
        ]
    if best:
        rows += [
            ("best_of, 2 candidates, trace off: median s", f"{statistics.median(best):.3f}  (min {min(best):.3f})"),
            ("generate beside it, trace off: median s", f"{statistics.median(single):.3f}  (min {min(single):.3f})"),
            ("best_of 2 / generate (medians)", f"{statistics.median(best) / statistics.median(single):.3f}"),
            ("the verifier's score of one clip: median ms", f"{1e3 * statistics.median(score):.1f}"),
        ]
    if redraw:
        rows += [
            (f"{len(redraw)} world prompts, default retries ({gen.limits.default_retries}): median / mean / max s",
             f"{statistics.median(redraw):.3f} / {statistics.mean(redraw):.3f} / {max(redraw):.3f}"),
            ("the same, retries=0: median / mean / max s",
             f"{statistics.median(once):.3f} / {statistics.mean(once):.3f} / {max(once):.3f}"),
            ("clips redrawn; mean draws per clip", f"{sum(d > 1 for d in draws) / len(draws):.1%}; {statistics.mean(draws):.2f}"),
            *[(f"clips drawn {n} times ({sum(d == n for d in draws)}; redraws in "
               f"{', '.join(str(gen.limits.redraw_steps(args.steps, a)) for a in range(1, n))} of {args.steps} steps): "
               "median / max s, and / the same prompt's retries=0",
               f"{statistics.median(t for t, d in zip(redraw, draws) if d == n):.3f} / "
               f"{max(t for t, d in zip(redraw, draws) if d == n):.3f}; "
               f"{statistics.median(t / o for t, o, d in zip(redraw, once, draws) if d == n):.2f}x")
              for n in sorted(set(draws)) if n > 1],
            ("mean time, default retries / retries=0", f"{statistics.mean(redraw) / statistics.mean(once):.3f}"),
            ("the model's check of one draw (judge_draw): median ms", f"{1e3 * statistics.median(check):.2f}"),
        ]
    print(f"sora_nb {sora_nb.__version__}: default generation ({PROMPT!r}, 2 s, {args.steps} steps, guidance 5), "
          f"{args.repeats} repeats")
    print_table(rows)


if __name__ == "__main__":
    main()
