"""What tracing costs, measured in one run; prints a table.

    .venv/bin/python bench/bench_trace.py [--repeats 7] [--threads N]

Rows: wall time of the default generation (2 s clip, 20 steps, guidance 5) with tracing on and off,
interleaved (on, off, on, off, ...) so drift in the machine's load hits both alike, and their ratio
(medians; the goal is <= 1.05), also in CPU seconds, which other work on a shared machine
disturbs far less than wall time; the trace's size; the memory estimate made before the run against
the trace actually built; what the recorder does at a small limit (thinning, said aloud, and the
refusal with ``on_limit="raise"``); the memory a long traced run adds (RSS, sampled at every
step and after the trace is built) against the trace's size; spatial downsampling; the netCDF round trip; and the time to
build the inspector's payload (every view of every step, sent to the browser once).
"""

from __future__ import annotations

import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

import sora_nb
from _common import parse, parser, print_table
from sora_nb.inspector import Inspector
from sora_nb.trace import TraceThinned, TraceTooLarge, estimate_trace, open_trace, trace_options

PROMPT = "a red circle moving right"
DEFAULT = dict(seed=0, duration=2.0, guidance=5.0, steps=20)
MiB = 2**20  # every size below is in MiB (the library's own messages and max_mb say MB for 2**20 bytes)


def data_bytes(ds) -> int:
    """Bytes of the trace's data variables (what the estimate counts)."""
    return sum(ds[v].nbytes for v in ("latent", "x0", "preview"))


def rss_mb() -> float:
    """This process's resident memory, MiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def seconds(fn) -> float:
    """Wall seconds of one call."""
    return timed(fn)[0]


def timed(fn) -> tuple[float, float]:
    """Wall seconds and CPU seconds (this process, all threads) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    args = parse(parser(__doc__, repeats=7))
    gen = sora_nb.load("shapes")
    rows: list[tuple[str, str]] = [("model", gen.name), ("torch threads", str(torch.get_num_threads()))]

    # -- cost of tracing --------------------------------------------------------------------------
    on_run = lambda: gen.generate(PROMPT, trace=True, **DEFAULT)  # noqa: E731
    off_run = lambda: gen.generate(PROMPT, trace=False, **DEFAULT)  # noqa: E731
    on_run(), off_run()  # warm-up
    on, off, on_cpu, off_cpu = [], [], [], []
    for _ in range(args.repeats):
        for run, walls, cpus in ((on_run, on, on_cpu), (off_run, off, off_cpu)):
            wall, cpu = timed(run)
            walls.append(wall)
            cpus.append(cpu)
    med = statistics.median
    rows += [("generate, trace on: median s", f"{med(on):.3f}  (min {min(on):.3f})"),
             ("generate, trace off: median s", f"{med(off):.3f}  (min {min(off):.3f})"),
             ("trace on / off, wall (medians)", f"{med(on) / med(off):.3f}  (mins: {min(on) / min(off):.3f})"),
             ("trace on / off, CPU time (medians)", f"{med(on_cpu) / med(off_cpu):.3f}  (CPU s: {med(on_cpu):.3f} / "
              f"{med(off_cpu):.3f}; robust when other work shares the machine)")]

    # -- size and estimate ----------------------------------------------------------------------
    plan = estimate_trace(gen, PROMPT, **DEFAULT)
    video = on_run()
    actual = data_bytes(video.trace)
    rows += [("trace size, default clip (MiB)", f"{actual / MiB:.3f}  (Dataset.nbytes {video.trace.nbytes / MiB:.3f})"),
             ("estimate before the run (MiB)", f"{plan.nbytes / MiB:.3f}  ({'exact' if plan.nbytes == actual else 'off'})"),
             ("plan", str(plan))]

    # -- memory of a long traced run ----------------------------------------------------------------
    long = dict(seed=0, duration=4.0, width=96, height=64, steps=400, retries=0, guidance=2.0)
    gen.generate(PROMPT, trace=False, **long)  # the untraced run's own allocations first
    base = rss_mb()
    seen = [base]

    class Peak:  # RSS at every step (the recorder's arrays fill) and after the Dataset is built
        def on_step(self, event):
            seen.append(rss_mb())

    traced = gen.generate(PROMPT, observers=[Peak()], **long)
    seen.append(rss_mb())
    size = data_bytes(traced.trace) / MiB
    rows.append(("long traced run (4 s, 96x64, 400 steps): RSS growth / trace size",
                 f"{max(seen) - base:.0f} MiB / {size:.0f} MiB = {(max(seen) - base) / size:.2f}"))
    del traced

    # -- limits ----------------------------------------------------------------------------------
    limit = actual / 4 / MiB  # max_mb counts 2**20 bytes
    with trace_options(max_mb=limit), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        thin = gen.generate(PROMPT, **DEFAULT)
    said = [str(w.message) for w in caught if issubclass(w.category, TraceThinned)]
    rows += [(f"limit {limit:.3f} MiB (max_mb={limit:.3f}): steps kept", f"{thin.trace.sizes['step']} of 20, "
              f"record_every={thin.trace.attrs['record_every']}, {data_bytes(thin.trace) / MiB:.3f} MiB"),
             ("  warning", said[0] if said else "NONE (bug)")]
    try:
        with trace_options(max_mb=limit, on_limit="raise"):
            gen.generate(PROMPT, **DEFAULT)
        refusal = "NONE (bug)"
    except TraceTooLarge as err:
        refusal = str(err)
    rows.append(('  on_limit="raise"', refusal))
    with trace_options(downsample=2):
        small = gen.generate(PROMPT, **DEFAULT)
    rows.append(("downsample=2: trace size (MiB)", f"{data_bytes(small.trace) / MiB:.3f}  latent "
                 f"{tuple(small.trace.latent.shape)}"))

    # -- saving ------------------------------------------------------------------------------------
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "trace.nc"
        write_s = seconds(lambda: video.trace.sora.to_netcdf(path))
        size = path.stat().st_size
        read_s = seconds(lambda: open_trace(path))
        same = open_trace(path).identical(video.trace)
    rows.append(("netCDF: write / read s, file MiB", f"{write_s:.3f} / {read_s:.3f}, {size / MiB:.2f} MiB "
                 f"(float16 stored as float32), identical: {same}"))

    # -- inspector payload ------------------------------------------------------------------------
    build = [seconds(lambda: Inspector(video)) for _ in range(3)]
    widget = Inspector(video)
    payload = len(widget.a_views) + len(widget.a_heat)
    other = gen.generate(PROMPT, **{**DEFAULT, "guidance": 1.0})
    compare = seconds(lambda: Inspector(video, other))
    rows += [("inspector payload build: median s", f"{statistics.median(build):.3f}  ({payload / MiB:.2f} MiB of "
              "frames, sent once)"),
             ("inspector with compare= build s", f"{compare:.3f}")]

    print(f"sora_nb {sora_nb.__version__}: tracing cost for the default generation ({PROMPT!r}, 2 s, 20 steps, "
          f"guidance 5), {args.repeats} interleaved repeats")
    print_table(rows)


if __name__ == "__main__":
    main()
