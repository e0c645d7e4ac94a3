"""Memory and time of building the latent inspector for a large trace; prints a table.

    .venv/bin/python bench/bench_inspector_memory.py [--steps 30] [--frames 21] [--channels 16]
                                                     [--height 60] [--width 104] [--preview-scale 1]
                                                     [--compare] [--repeats 3] [--threads N]

The default trace is Wan-480p sized: 30 recorded steps of 21 latent frames (81 video frames), 16
channels of 60 x 104 latent pixels, float16 ``latent`` and ``x0`` and a uint8 preview at latent
resolution (``--preview-scale 2``: twice that). It is synthetic (smooth x0, its preview through a
fixed linear map, x_t = x0 plus noise that shrinks over the steps), made a step at a time so that
making it does not blur the measurement.

Each measure runs in a fresh Python process (the trace built, a tiny inspector made for the imports
and colour tables, then ``sora_nb.inspect(trace)``, as a notebook does):

- peak memory above the trace (tracemalloc: every numpy array and Python object), and what of it
  the widget keeps (the bytes it sends); their difference is the temporary memory of the build;
- peak resident memory above the resident memory before the build (``VmHWM`` reset through
  ``/proc/self/clear_refs``; Linux);
- the wall time of the build (median of ``--repeats``, after a warm-up), and of a change of the
  channel shown (its colour scale and heat stack computed and sent), without tracemalloc.

It measures the sora_nb it imports: to measure another copy (an older one, say), put it first on
``PYTHONPATH``; the header names the module measured.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from _common import count, parse, parser, print_table

MB = 2**20


def make_trace(steps: int, frames: int, channels: int, height: int, width: int, preview_scale: int, seed: int = 0):
    """A synthetic trace with the layout sora_nb records, made a step at a time."""
    import xarray as xr

    rng = np.random.default_rng(seed)
    py, px = height * preview_scale, width * preview_scale
    yy, xx = np.meshgrid(np.linspace(-1, 1, height, dtype=np.float32), np.linspace(-1, 1, width, dtype=np.float32),
                         indexing="ij")
    rgb_map = rng.normal(0, 0.3, (channels + 1, 3)).astype(np.float32)
    rgb_map[-1] = 0.1
    latent = np.empty((steps, frames, channels, height, width), np.float16)
    x0 = np.empty_like(latent)
    preview = np.empty((steps, frames, py, px, 3), np.uint8)
    sigma = np.linspace(1.0, 1.0 / steps, steps, dtype=np.float32)
    phase = rng.uniform(0, 2 * np.pi, (channels, 1, 1)).astype(np.float32)
    freq = rng.uniform(1, 4, (channels, 1, 1)).astype(np.float32)
    iy = (np.arange(py) * height) // py
    ix = (np.arange(px) * width) // px
    for s in range(steps):
        for f in range(frames):
            clean = np.sin(freq * (xx + 0.05 * f) + phase) * np.cos(freq * yy - phase)  # (C, y, x)
            blur = sigma[s] * rng.normal(0, 0.5, clean.shape).astype(np.float32)
            x0[s, f] = clean + blur
            latent[s, f] = (1 - sigma[s]) * x0[s, f] + sigma[s] * rng.standard_normal(clean.shape, np.float32)
            z = np.moveaxis(x0[s, f].astype(np.float32), 0, -1) @ rgb_map[:-1] + rgb_map[-1]
            small = np.clip(np.rint((z + 1.0) * 127.5), 0, 255).astype(np.uint8)
            preview[s, f] = small[iy][:, ix]
    return xr.Dataset(
        data_vars={"latent": (("step", "frame", "channel", "y", "x"), latent),
                   "x0": (("step", "frame", "channel", "y", "x"), x0),
                   "preview": (("step", "frame", "py", "px", "rgb"), preview)},
        coords={"step": ("step", np.arange(steps, dtype=np.int64)),
                "timestep": ("step", sigma * 1000),
                "sigma": ("step", sigma),
                "guidance": ("step", np.full(steps, 5.0, np.float32)),
                "frame": ("frame", np.arange(frames, dtype=np.int64)),
                "time": ("frame", (np.arange(frames) * 4 / 16).astype(np.float32)),
                "rgb": ("rgb", np.array(["r", "g", "b"]))},
        attrs={"prompt": "synthetic", "seed": seed, "guidance": 5.0, "steps": steps, "model": "synthetic"})


def _vm(field: str) -> float:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(args: argparse.Namespace) -> dict:
    """One measure (``args.child``) in this process; a JSON-able dict."""
    import sora_nb

    traces = [make_trace(args.steps, args.frames, args.channels, args.height, args.width, args.preview_scale, seed)
              for seed in ((0, 1) if args.compare else (0,))]
    build = lambda: sora_nb.inspect(traces[0], compare=traces[1] if args.compare else None,  # noqa: E731
                                    max_payload_mb=1e6)
    out = {"module": sora_nb.inspector.__file__,
           "trace_mb": sum(t[v].nbytes for t in traces for v in ("latent", "x0", "preview")) / MB}
    sora_nb.inspect(make_trace(2, 1, args.channels, 4, 4, 1))  # imports and colour tables, not counted below
    gc.collect()
    if args.child == "tracemalloc":
        import tracemalloc

        tracemalloc.start()
        widget = build()
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out.update(peak_mb=peak / MB, kept_mb=current / MB,
                   sent_mb=sum(len(getattr(widget, k)) for k in ("a_views", "a_heat", "b_views", "b_heat")) / MB)
    elif args.child == "rss":
        try:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
            before = _vm("VmRSS")
            widget = build()
            out.update(rss_peak_mb=_vm("VmHWM") - before, rss_kept_mb=_vm("VmRSS") - before)
        except OSError:
            out.update(rss_peak_mb=None, rss_kept_mb=None)
    else:
        widget = build()  # warm-up
        times, channel = [], []
        for _ in range(args.repeats):
            del widget
            gc.collect()
            start = time.perf_counter()
            widget = build()
            times.append(time.perf_counter() - start)
        for k in range(args.repeats):  # a new channel: its scale and heat stack(s), computed and sent
            start = time.perf_counter()
            widget.channel = 1 + k % (args.channels - 1) if args.channels > 1 else 0
            channel.append(time.perf_counter() - start)
        out.update(seconds=times, channel_seconds=channel)
    return out


def run_child(kind: str, argv: list[str]) -> dict:
    """``child`` in a fresh Python process."""
    done = subprocess.run([sys.executable, __file__, *argv, "--child", kind], capture_output=True, text=True,
                          check=False, env={**os.environ})
    if done.returncode:
        raise SystemExit(f"the {kind} measure failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = parser(__doc__, repeats=3)
    p.add_argument("--steps", type=count, default=30, help="recorded steps (default 30)")
    p.add_argument("--frames", type=count, default=21, help="latent frames (default 21: 81 video frames)")
    p.add_argument("--channels", type=count, default=16, help="latent channels (default 16)")
    p.add_argument("--height", type=count, default=60, help="latent height (default 60: 480 pixels)")
    p.add_argument("--width", type=count, default=104, help="latent width (default 104: 832 pixels)")
    p.add_argument("--preview-scale", type=count, default=1, help="preview pixels per latent pixel (default 1)")
    p.add_argument("--compare", action="store_true", help="build with a second trace of the same size (compare=)")
    p.add_argument("--child", choices=("tracemalloc", "rss", "time"), help=argparse.SUPPRESS)
    args = parse(p)
    if args.child:
        print(json.dumps(child(args)))
        return
    argv = sys.argv[1:]
    mem = run_child("tracemalloc", argv)
    rss = run_child("rss", argv)
    tim = run_child("time", argv)
    temp = mem["peak_mb"] - mem["kept_mb"]
    rows = [
        ("module measured", mem["module"]),
        ("trace(s): latent + x0 + preview (MiB)", f"{mem['trace_mb']:.1f}"),
        ("sent to the browser (MiB)", f"{mem['sent_mb']:.1f}"),
        ("build: median wall s", f"{statistics.median(tim['seconds']):.3f}  (min {min(tim['seconds']):.3f}, "
                                 f"{len(tim['seconds'])} builds)"),
        ("channel change (its scale and heat stack): median s", f"{statistics.median(tim['channel_seconds']):.3f}"),
        ("tracemalloc: peak above the trace (MiB)", f"{mem['peak_mb']:.1f}"),
        ("tracemalloc: kept by the widget (MiB)", f"{mem['kept_mb']:.1f}"),
        ("tracemalloc: temporary = peak - kept (MiB)", f"{temp:.1f}  ({temp / mem['trace_mb']:.2f} x the trace)"),
        ("peak RSS above RSS before the build (MiB)",
         "n/a" if rss["rss_peak_mb"] is None else f"{rss['rss_peak_mb']:.1f}  (after: {rss['rss_kept_mb']:.1f})"),
    ]
    shape = (f"{args.steps} steps x {args.frames} frames x {args.channels} channels x {args.height} x {args.width}, "
             f"preview x{args.preview_scale}{', with compare=' if args.compare else ''}")
    print(f"inspector build, synthetic trace of {shape}; numpy {np.__version__}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print_table(rows)


if __name__ == "__main__":
    main()
