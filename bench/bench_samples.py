"""The seven evaluation samples by which sessions compare weights folders (issue 4): a quality table.

    .venv/bin/python bench/bench_samples.py --weights FOLDER [--weights FOLDER ...]
        [--samples k0 hc hp k3 k2 k4 k5] [--clips 200] [--guidance 2] [--threads 2]

A diagnostic for the quality bars, not a speed figure. Each sample is 200 prompts of the shapes world
(``world.evaluate`` at default settings, guidance 2 with the model's guidance profile): ``k0`` is the
model card's train row (evaluation seed ``step_seed(0, "eval", 0)``), ``hc`` / ``hp`` its held-out
combinations and held-out phrasings rows, and ``kN`` 200 more train prompts at ``step_seed(0, "eval", N)``
(k 1 is the guidance choice's sample and is not used). For each folder it prints colour / shape / motion
/ count / consistency (every check) per sample and the mean of every check over the samples. One sample
of 200 clips has a standard deviation of about .035 on every check; a mean of seven about .013.
A second table judges the issue's quality bars on the pooled clips (`world.against_bars`): the train-prompt
samples' five checks, and the held-out samples' every check against .85, each with its 95% interval and a
verdict (holds, missed, or above / below the bar within noise).
"""

from __future__ import annotations

import time

import sora_nb
from _common import check_guidance, count, load_models, parse, parser, print_table
from sora_nb import world
from sora_nb.train import step_seed

DIMS = ("colour", "shape", "motion", "count", "consistency")
SAMPLES = {"hc": ("heldout", "train", 0), "hp": ("train", "heldout", 0)}  # kN: train prompts at seed index N


def sample(name: str) -> tuple[str, str, int]:
    """(split, phrasing, evaluation seed index) of a sample name."""
    if name in SAMPLES:
        return SAMPLES[name]
    if name.startswith("k") and name[1:].isdigit() and int(name[1:]) != 1:
        return "train", "train", int(name[1:])
    raise ValueError(f"--samples: each must be k0, hc, hp or kN with N >= 2 (k1 is the guidance choice's); got {name!r}")


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--weights", action="append", default=[], help="weights folder (repeatable; default the shipped)")
    p.add_argument("--samples", nargs="+", default=["k0", "hc", "hp", "k3", "k2", "k4", "k5"])
    p.add_argument("--clips", type=count, default=200)
    p.add_argument("--guidance", type=float, default=2.0)
    args = parse(p)
    if args.clips < 1:
        p.error(f"--clips must be >= 1; got {args.clips}")
    check_guidance(p, args.guidance)  # before the model loads, as generate would refuse it
    try:
        plan = [(s, *sample(s)) for s in args.samples]
    except ValueError as e:
        p.error(str(e))
    folders = args.weights or ["shapes"]
    models = load_models(p, folders)  # every folder loaded (and checked) before the first evaluation
    rows: list[list[str]] = []
    bars: list[list[str]] = []
    for folder, gen in zip(folders, models):
        per_clip = {}
        score(gen, folder, plan, args.clips, args.guidance, rows, per_clip)
        bars += bar_rows(folder, plan, per_clip)
    print_table(rows, ("weights", "sample", "colour / shape / motion / count / consistency", "every check", "s"))
    print()
    print_table(bars, ("weights", "pooled samples (clips)", "check", "mean [95% interval]", "bar", "verdict"))


def bar_rows(label: str, plan: list[tuple[str, str, str, int]], per_clip: dict) -> list[list[str]]:
    """The quality bars judged on the pooled clips: the train-prompt samples' five checks (`world.BARS`), and the
    held-out samples' every check (`world.HELDOUT_BAR`), each with its 95% interval (`world.against_bars`)."""
    import pandas as pd

    out = []
    groups = (([n for n, split, phrasing, _ in plan if (split, phrasing) == ("train", "train")], None),
              ([n for n, split, phrasing, _ in plan if (split, phrasing) != ("train", "train")],
               {"overall": world.HELDOUT_BAR}))
    for names, bars in groups:
        if not names:
            continue
        df = pd.concat([per_clip[n] for n in names], ignore_index=True)
        for check, r in world.against_bars(df, bars).iterrows():
            out.append([label, f"{' '.join(names)} ({len(df)})", "every check" if check == "overall" else check,
                        f"{r['mean']:.3f} [{r['low']:.3f}, {r['high']:.3f}]", f"{r['bar']:.2f}", r["verdict"]])
    return out


def score(gen: sora_nb.Generator, label: str, plan: list[tuple[str, str, str, int]], clips: int, guidance: float,
          rows: list[list[str]], per_clip: dict | None = None) -> float:
    """Judge ``gen`` on each sample of ``plan`` (name, split, phrasing, seed index); append a row per sample
    (printed as it comes) and one for the mean to ``rows``, and each sample's per-clip rows to ``per_clip`` (by
    name); return the mean of every check."""
    overall = []
    for name, split, phrasing, k in plan:
        t = time.perf_counter()
        df = world.evaluate(gen, n=clips, seed=step_seed(0, "eval", k), split=split, phrasing=phrasing,
                            guidance=guidance)
        s = world.summarize(df)
        if per_clip is not None:
            per_clip[name] = df
        overall.append(float(s["overall"]))
        rows.append([label, name, " / ".join(f"{s[d]:.3f}" for d in DIMS), f"{s['overall']:.3f}",
                     f"{time.perf_counter() - t:.0f}"])
        print(" | ".join(rows[-1]), flush=True)
    mean = sum(overall) / len(overall)
    rows.append([label, f"mean of {len(plan)}", "", f"{mean:.3f}", ""])
    return mean


if __name__ == "__main__":
    main()
