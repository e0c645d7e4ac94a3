"""What sora_nb adds on top of a bare diffusers WanPipeline call, measured in one run; prints a table.

    .venv/bin/python bench/gpu_overhead.py [--repeats 3] [--steps 20]    # on a CUDA GPU
    .venv/bin/python bench/gpu_overhead.py --tiny                        # CPU smoke run, tiny Wan pipeline

The real-size run builds Wan 2.1 T2V 1.3B's transformer architecture with *random* weights
(``WanTransformer3DModel``: dim 1536 = 12 heads x 128, 30 layers, ffn 8960, 16 latent channels,
text_dim 4096, patch (1, 2, 2), bfloat16) and the Wan 2.1 VAE architecture (``AutoencoderKLWan()``
defaults: base_dim 96, z_dim 16; random weights, float32 as Wan's docs recommend), with Wan's
released scheduler (UniPC, flow prediction, flow_shift 3.0). The text encoder is a stand-in: a
1-layer UMT5 of width 4096 over a byte tokenizer (the real one, UMT5-XXL, has 5.7 B parameters and
runs once per call on both sides, so it cannot change the ratio much but would dominate the setup).
Random weights cost exactly what trained ones cost, so the timings are those of the real model.

Both sides use the same pipeline object, prompt, seed (the same initial noise), 480x832, 33 frames,
guidance 5 (two transformer passes per step) and ``--steps``:

- *bare*: ``pipe(..., output_type="np")`` (denoise + VAE decode + postprocessing) and
  ``pipe(..., output_type="latent")``;
- *sora_nb*: ``gen.generate(..., trace=True)`` (the same pipeline call from a worker thread with a
  step callback, x0 for every step, the trace copied to pinned host memory without blocking, the
  latent->RGB previews after the run, our own decode) and with ``trace=False``; and the denoising
  alone (the sampler's loop with the trace recorder, no decode) against the bare latent call.

Runs alternate (bare, sora_nb, bare, ...) so drift hits both; every timing is bracketed by
``torch.cuda.synchronize()``. The goal is sora_nb traced / bare <= 1.03. Host syncs: a sora_nb run
and a bare run are repeated under ``torch.cuda.set_sync_debug_mode("warn")`` and the warnings
(synchronising CUDA calls) counted; the difference, per step, is what sora_nb adds (goal: none per
step; reading the schedule once per run is one).
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings

import torch

import sora_nb
from _common import count, parse, parser, print_table
from sora_nb.sampler import RunInfo
from sora_nb.trace import TraceRecorder

PROMPT = "a red circle moving right"
MiB = 2**20


def real_wan_pipeline(device: str):
    """WanPipeline with Wan 2.1 1.3B's transformer and VAE architectures, random weights (see the docstring)."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from sora_nb.testing import tokenizer

    torch.manual_seed(0)
    with torch.device(device):
        transformer = WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
            text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024).to(torch.bfloat16)
        vae = AutoencoderKLWan()  # Wan 2.1's VAE config (defaults)
        text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=384, d_model=4096, d_ff=10240, d_kv=64, num_heads=64,
                                                   num_layers=1, pad_token_id=0, eos_token_id=1)).to(torch.bfloat16)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    pipe = WanPipeline(transformer=transformer, vae=vae, scheduler=scheduler, text_encoder=text_encoder,
                       tokenizer=tokenizer(), transformer_2=None)
    for m in (transformer, vae, text_encoder):
        m.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn) -> float:
    """Wall seconds of one call, device work included."""
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def count_syncs(fn, cuda: bool) -> int | None:
    """Synchronising CUDA calls made by ``fn`` (None for a CPU run: ``--tiny``, or no GPU here; a CUDA machine's
    --tiny run fills no GPU figures, so it counts none either)."""
    if not cuda:
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def device_rows(cuda: bool, syncs_sora: int | None, syncs_bare: int | None, peak: dict[str, int],
                steps: int) -> list[tuple[str, str]]:
    """The host-sync and peak-memory rows: GPU figures only for a CUDA run (``cuda``: a GPU here and not --tiny;
    a CUDA machine's --tiny run measured neither, so it says n/a instead of reading an empty ``peak``)."""
    if not cuda or syncs_sora is None or syncs_bare is None:
        return [("host syncs", "n/a (CPU run)"), ("peak GPU memory", "n/a (CPU run)")]
    return [("host syncs per run: sora_nb traced / bare",
             f"{syncs_sora} / {syncs_bare} (extra per step: {(syncs_sora - syncs_bare) / steps:.2f})"),
            ("peak GPU memory (GiB): bare / traced",
             f"{peak['bare'] / 2**30:.2f} / {peak['sora_nb traced'] / 2**30:.2f}")]


def main() -> None:
    p = parser(__doc__, repeats=3)
    p.add_argument("--tiny", action="store_true", help="tiny Wan pipeline on the CPU (a smoke run)")
    p.add_argument("--steps", type=count, default=None, help="denoising steps, >= 1 (default 20; --tiny: 10)")
    args = parse(p)
    cuda = torch.cuda.is_available() and not args.tiny
    steps = args.steps if args.steps is not None else (10 if args.tiny else 20)
    if args.tiny:
        from sora_nb.testing import tiny_pipeline

        pipe, size, frames, extra = tiny_pipeline("wan"), (32, 32), 9, {"max_sequence_length": 16}
        label = "tiny WanPipeline (sora_nb.testing), CPU"
    else:
        if not cuda:
            sys.exit("no CUDA GPU here: run with --tiny for the CPU smoke run")
        pipe, size, frames, extra = real_wan_pipeline("cuda"), (832, 480), 33, {}
        label = f"Wan 2.1 1.3B architecture, random weights, {torch.cuda.get_device_name()}"
    gen = sora_nb.load(pipe, default_size=size, call_kwargs=extra)
    kw = dict(seed=0, num_frames=frames, guidance=5.0, steps=steps, width=size[0], height=size[1])
    request = gen.request(PROMPT, **kw)
    bare_args = gen.backend.call_arguments(request)

    def bare(output_type: str):
        return pipe(**bare_args, generator=torch.Generator().manual_seed(0), output_type=output_type)

    def sora_denoise():
        """The sampler's loop with the trace recorder, without the decode."""
        rec = TraceRecorder(gen.backend.preview)
        rec.on_start(RunInfo(request=request, num_frames=frames, fps=gen.limits.fps, model=gen.backend.describe(),
                             limits=gen.limits))
        ev = None
        for ev in gen.backend.denoise(request, torch.Generator().manual_seed(0)):
            rec.on_step(ev)
        rec.on_end(ev.x_next, False)
        return rec.dataset

    runs = {"bare": lambda: bare("np"), "sora_nb traced": lambda: gen.generate(PROMPT, trace=True, **kw),
            "sora_nb trace off": lambda: gen.generate(PROMPT, trace=False, **kw),
            "bare latent": lambda: bare("latent"), "sora_nb denoise+trace": sora_denoise}
    times: dict[str, list[float]] = {k: [] for k in runs}
    peak: dict[str, int] = {}
    for fn in runs.values():  # warm-up (kernels, allocator, pinned buffers)
        fn()
    for _ in range(args.repeats):
        for name, fn in runs.items():
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            times[name].append(timed(fn))
            if cuda:
                peak[name] = max(peak.get(name, 0), torch.cuda.max_memory_allocated())
    med = {k: statistics.median(v) for k, v in times.items()}
    video = gen.generate(PROMPT, trace=True, **kw)
    syncs_sora, syncs_bare = count_syncs(runs["sora_nb traced"], cuda), count_syncs(runs["bare"], cuda)

    rows = [
        ("pipeline", label),
        ("torch / diffusers", f"{torch.__version__} / {__import__('diffusers').__version__}"),
        ("clip", f"{size[0]}x{size[1]}, {frames} frames, {steps} steps, guidance 5 (CFG), UniPC" if not args.tiny
         else f"{size[0]}x{size[1]}, {frames} frames, {steps} steps, guidance 5 (CFG), flow Euler"),
        ("repeats (interleaved)", str(args.repeats)),
    ]
    for name in runs:
        rows.append((f"{name}: median s", f"{med[name]:.3f}  (min {min(times[name]):.3f})"))
    rows += [
        ("sora_nb traced / bare (goal <= 1.03)", f"{med['sora_nb traced'] / med['bare']:.3f}"),
        ("sora_nb trace off / bare", f"{med['sora_nb trace off'] / med['bare']:.3f}"),
        ("denoise+trace / bare latent", f"{med['sora_nb denoise+trace'] / med['bare latent']:.3f}"),
        ("overhead per step (ms, traced - bare)", f"{(med['sora_nb traced'] - med['bare']) / steps * 1e3:.2f}"),
        ("trace size (MiB)", f"{video.trace.nbytes / MiB:.4g}"),
    ]
    rows += device_rows(cuda, syncs_sora, syncs_bare, peak, steps)
    print(f"sora_nb {sora_nb.__version__}: overhead over a bare WanPipeline call ({PROMPT!r})")
    print_table(rows)


if __name__ == "__main__":
    main()
