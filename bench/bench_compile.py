"""Does torch.compile speed up a DiT training step on this CPU? Eager against compiled, same work.

    .venv/bin/python bench/bench_compile.py --threads 2 [--steps 30] [--mode default]

One step is the course DiT's (128 wide, 6 deep, 4 heads, rotary positions, (1, 2, 2) patches) forward under
bfloat16 autocast, an x0 MSE, the backward and an AdamW step, on a batch of 16 random 2 s 64x64 latents with
text states of 8 to 16 tokens (the loop's batches vary in prompt length, so the compiled graph meets several
shapes). Ten steps warm up (the compiled model compiles then; their wall time is reported), then ``--steps`` are
timed. The weights and batches come from per-run seeds, never the global RNG. Twenty-sixth session, 2 cores:
eager 270 ms a step, compiled 278 ms after 110 s of compiling: no gain, so training stays eager.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from _common import count, parse, parser, print_table
from sora_nb.models.dit import ShapesDiT


def time_steps(compiled: bool, mode: str, steps: int) -> tuple[float, float]:
    """(warm-up seconds for 10 steps, seconds per step after)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        dit = ShapesDiT(latent_channels=16, hidden_size=128, depth=6, num_heads=4, patch_size=(1, 2, 2),
                        text_dim=128, rope=True)
    opt = torch.optim.AdamW(dit.parameters(), lr=1e-4)
    fwd = torch.compile(dit.predict_x0, mode=None if mode == "default" else mode) if compiled else dit.predict_x0
    g = torch.Generator().manual_seed(1)

    def step(i: int) -> None:
        n = 8 + (i % 5) * 2
        x, s = torch.randn(16, 16, 4, 16, 16, generator=g), torch.rand(16, generator=g)
        states, mask = torch.randn(16, n, 128, generator=g), torch.ones(16, n, dtype=torch.bool)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fwd(x, s * 1000, states, mask)
        loss = F.mse_loss(out.float(), x)
        opt.zero_grad()
        loss.backward()
        opt.step()

    t = time.perf_counter()
    for i in range(10):
        step(i)
    warm = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(steps):
        step(i)
    return warm, (time.perf_counter() - t) / steps


def compile_modes() -> tuple[str, ...]:
    """The ``mode`` names this torch's ``torch.compile`` takes."""
    try:
        from torch._inductor import list_mode_options

        return tuple(list_mode_options())
    except (ImportError, AttributeError):  # an older torch: its documented modes
        return ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--steps", type=count, default=30)
    p.add_argument("--mode", default="default", choices=compile_modes(), help="torch.compile mode (default: default)")
    args = parse(p)
    if args.steps < 1:
        p.error(f"--steps must be >= 1, got {args.steps}")
    rows = []
    for name, compiled in (("eager", False), (f"torch.compile (mode {args.mode})", True)):
        warm, per = time_steps(compiled, args.mode, args.steps)
        rows.append((name, f"{warm:.1f}", f"{per * 1e3:.1f}"))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print_table(rows, header=("DiT training step", "first 10 steps (s)", "ms per step after"))


if __name__ == "__main__":
    main()
