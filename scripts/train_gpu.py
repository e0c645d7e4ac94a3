"""Train several DiT variants side by side on one GPU, inside one wall budget.

How the GPU-trained candidates for the embedded model were made (issue 4): a lent GPU session has
minutes, not hours, so one call builds one large latent cache (60,500 clips, 16 processes, 51 s on
the H200 machine) with the run folder's autoencoder, then trains every variant at once, one process
each sharing the GPU (three side by side ran at 0.10-0.12 s/step at batch 128: the small models are
bound by Python and kernel launches, not by the GPU's arithmetic). Each variant is an ordinary
``sora_nb.train`` run folder; ``dit_seconds`` fits its step count to the budget. Back on a CPU,
``--export`` writes a variant's weights folder and scores it (``sora_nb.train.export``), with the
latent statistics the GPU run measured, since its cache stays on the GPU machine.

    python scripts/train_gpu.py --base runs/base --out runs/gpu --seconds 520 \\
        --variant a '{}' --variant b '{"dit_hidden": 192, "dit_heads": 6}' --variant c '{"dit_depth": 10}'
    python scripts/train_gpu.py --base runs/base --export runs/gpu/b      # back on the CPU: export, score

``--base`` is a run folder holding ``vae_final`` and ``text_final`` (an autoencoder and text encoder its recipe
trained; the variants use its recipe's defaults, the plain latent and word-level text encoder, not the layout
latent and adapted MiniLM of today's shipped model: this is how the previous shipped DiT was made). The
script imports ``sora_nb``'s training modules without the package's notebook front end (ipywidgets,
mediapy), which a bare GPU image may lack.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
if "sora_nb" not in sys.modules and importlib.util.find_spec("ipywidgets") is None:
    # a bare GPU image: load the training code only, skipping sora_nb/__init__ (widgets, media)
    _pkg = types.ModuleType("sora_nb")
    _pkg.__path__ = [str(ROOT / "sora_nb")]
    sys.modules["sora_nb"] = _pkg

# the cache of the GPU runs: the CPU recipe's four entries and five times as many clips besides
GPU_CACHE = ([[2.0, 64, 64, 6000], [1.0, 64, 64, 1000], [2.0, 96, 64, 1000], [4.0, 64, 64, 500]]
             + [[2.0, 64, 64, 5000]] * 8 + [[1.0, 64, 64, 2500]] * 2 + [[2.0, 96, 64, 2500]] * 2
             + [[4.0, 64, 64, 1000]] * 2)
VARIANT_NAME = re.compile(r"[A-Za-z0-9_-]+")
COMMON = dict(device="cuda", dit_batch=128, ema_decay=0.999, dit_steps=1_000_000, log_every=500,
              ckpt_every=1_000_000_000, cache=GPU_CACHE, cache_workers=16)


def recipe_for(overrides: dict):
    from sora_nb.train import Recipe

    return Recipe(**{**COMMON, **overrides})


def build_shared(base: Path, shared: Path, overrides: dict) -> None:
    """The autoencoder (copied from ``base``) and the latent cache every variant reads."""
    from sora_nb import world
    from sora_nb.train import build_cache, latent_stats, train_vae

    shared.mkdir(parents=True, exist_ok=True)
    if not (shared / "vae_final").exists():
        shutil.copytree(base / "vae_final", shared / "vae_final")
    recipe = recipe_for(overrides)
    t0 = time.perf_counter()
    cache = build_cache(recipe, shared, world, train_vae(recipe, shared, world))
    print(f"cache: {sum(len(c) for _, c in cache['buckets'].values())} clips in {time.perf_counter() - t0:.0f} s",
          flush=True)
    mean, std = latent_stats(cache, "channel")
    (shared / "latent_stats.json").write_text(json.dumps({"mean": mean, "std": std}))


def train_variant(folder: Path, overrides: dict) -> None:
    """One variant's DiT (the text encoder pre-training is reused from ``text_final``)."""
    import dataclasses

    import torch

    from sora_nb import world
    from sora_nb.train import build_cache, train_dit, train_vae

    torch.set_num_threads(2)
    recipe = recipe_for(overrides)
    (folder / "recipe.json").write_text(json.dumps(dataclasses.asdict(recipe), indent=1))  # train_dit adds the steps run
    cache = build_cache(recipe, folder, world, train_vae(recipe, folder, world))
    train_dit(recipe, folder, world, cache)


def export_variant(base: Path, folder: Path) -> None:
    """Back on a CPU: write the weights folder of a trained variant and score it (``sora_nb.train.export``),
    with the latent statistics the GPU run measured (its 60k-clip cache stays on the GPU machine)."""
    from sora_nb import world
    from sora_nb.models import ShapesDiT, TextEncoder, VideoAutoencoder
    from sora_nb.train import Recipe, export

    recipe = Recipe(**json.loads((folder / "recipe.json").read_text()))
    stats = json.loads((folder.parent / "shared" / "latent_stats.json").read_text())
    cache = {"buckets": {}, "channel_stats": (stats["mean"], stats["std"])}
    vae = VideoAutoencoder.from_pretrained(base / "vae_final", use_safetensors=True, low_cpu_mem_usage=False).eval()
    dit = ShapesDiT.from_pretrained(folder / "dit_final" / "dit", use_safetensors=True, low_cpu_mem_usage=False).eval()
    text = TextEncoder.from_pretrained(folder / "dit_final").eval()
    times = [r["time"] for r in map(json.loads, (folder / "log.jsonl").read_text().splitlines()) if r.get("stage") == "dit"]
    export(recipe, folder, world, vae, dit, text, cache, {"dit": times[-1] - times[0]})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=Path("runs/base"))
    parser.add_argument("--out", type=Path, default=Path("runs/gpu"))
    parser.add_argument("--seconds", type=float, default=420.0, help="wall budget for everything")
    parser.add_argument("--set", default="{}", help="JSON overrides for every variant (and the cache)")
    parser.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "JSON"), default=[])
    parser.add_argument("--export", type=Path, metavar="FOLDER", help="score a trained variant (on a CPU)")
    parser.add_argument("--worker", nargs=2, metavar=("FOLDER", "JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.export:
        for path in (args.base / "vae_final", args.export / "recipe.json", args.export / "dit_final",
                     args.export.parent / "shared" / "latent_stats.json"):
            if not path.exists():
                parser.error(f"--export {args.export}: {path} is missing (a variant folder of a finished GPU run, "
                             f"beside its shared/, and --base with vae_final/)")
        export_variant(args.base, args.export)
        return 0
    if args.worker:
        train_variant(Path(args.worker[0]), json.loads(args.worker[1]))
        return 0
    t0 = time.perf_counter()
    if not math.isfinite(args.seconds) or args.seconds <= 0:
        parser.error(f"--seconds must be a finite number > 0 (the wall budget), got {args.seconds:g}")
    for path in (args.base / "vae_final", args.base / "text_final"):
        if not path.is_dir():
            parser.error(f"--base {args.base}: {path} is missing (a run folder's trained autoencoder and text encoder)")

    def parsed(option: str, text: str) -> dict:
        """A JSON object of Recipe fields, checked now, before the cache's minutes."""
        try:
            value = json.loads(text)
        except ValueError:
            parser.error(f"{option}: expected a JSON object of recipe fields, got {text!r}")
        if not isinstance(value, dict):
            parser.error(f"{option}: expected a JSON object of recipe fields, got {text!r}")
        return value

    common = parsed("--set", args.set)
    given = args.variant or [("a", "{}")]
    seen = set()
    for name, _ in given:  # each names a folder beside shared/ in --out (and the one --export reads)
        if not VARIANT_NAME.fullmatch(name):
            parser.error(f"--variant {name!r}: a name is letters, digits, '_' and '-' only ([A-Za-z0-9_-]+)")
        if name == "shared":
            parser.error(f"--variant {name!r}: shared is the run's folder every variant reads; choose another name")
        if name in seen:
            parser.error(f"--variant {name!r} is given twice; each variant needs its own name")
        seen.add(name)
    variants = [(name, parsed(f"--variant {name}", text)) for name, text in given]
    for name, overrides in variants:
        try:
            recipe_for({**common, **overrides})
        except (TypeError, ValueError) as err:
            parser.error(f"--variant {name}: {err}")
    shared = args.out / "shared"
    build_shared(args.base, shared, common)
    procs = {}
    for name, overrides in variants:
        folder = args.out / name
        folder.mkdir(parents=True, exist_ok=True)
        for sub in ("vae_final", "cache"):
            if not (folder / sub).exists():
                os.symlink((shared / sub).resolve(), folder / sub)
        if not (folder / "text_final").exists():
            shutil.copytree(args.base / "text_final", folder / "text_final")
        budget = max(60.0, args.seconds - (time.perf_counter() - t0) - 45)  # 45 s: start-up and saving
        fields = {**common, **overrides, "dit_seconds": budget}
        with open(folder / "stdout.log", "w") as log:  # the child keeps its own handle
            procs[name] = subprocess.Popen([sys.executable, __file__, "--worker", str(folder), json.dumps(fields)],
                                           stdout=log, stderr=subprocess.STDOUT)
        print(f"variant {name}: {fields}", flush=True)
    failed = [name for name, p in procs.items() if p.wait() != 0]
    print(f"all done in {time.perf_counter() - t0:.0f} s; failed: {failed}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
