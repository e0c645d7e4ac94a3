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
variants' recipes take the base's autoencoder, latent and text encoder fields from its ``recipe.json``
(`BASE_FIELDS`; a ``--set`` or ``--variant`` value that differs is refused), and its seed unless ``--set`` gives
one. The fields the shared cache is built with (`CACHE_FIELDS`) go in ``--set``: a variant's own would be
recorded while it trains on the shared cache. A variant's folder resumes only its own recipe (the same command;
another is refused, naming the fields that differ), and is locked while a run trains into it. The
script imports ``sora_nb``'s training modules without the package's notebook front end (ipywidgets,
mediapy), which a bare GPU image may lack.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
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
# what --base's vae_final and text_final were trained under (its recipe.json): every variant uses them as they are,
# so its recipe records the base's values (a 2x base's variant recorded the default vae_spatial 4, and its export
# then described a 4x latent)
BASE_FIELDS = ("vae_steps", "vae_batch", "vae_lr", "vae_channels", "vae_hidden", "vae_spatial", "vae_temporal",
               "vae_smooth", "vae_share", "shape_channels", "shape_layout", "shape_angle",
               "text_steps", "text_batch", "text_lr", "text_width", "text_layers", "text_pretrained", "adapt_pool")
# what the shared latent cache is built with (once, in --out/shared, by --set): every variant trains on it
CACHE_FIELDS = ("seed", "cache", *(f for f in BASE_FIELDS if f.startswith(("vae_", "shape_"))))
# stages the variants do not run (they take the base's vae_final as it is)
NO_STAGES = ("dec_steps", "pix_steps")
SHARED_RECORD = "cache_recipe.json"  # in --out/shared: the CACHE_FIELDS its cache was built with


def recipe_for(overrides: dict):
    from sora_nb.train import Recipe

    return Recipe(**{**COMMON, **overrides})


def as_json(recipe) -> dict:
    """A recipe's fields as its recipe.json records them (lists, not tuples)."""
    return json.loads(json.dumps(dataclasses.asdict(recipe)))


def base_fields(base: Path) -> dict:
    """The fields every variant takes from ``base``'s recipe.json: `BASE_FIELDS` and its seed (the default seed;
    --set may give another). Raises ValueError when the recipe cannot be read."""
    try:
        recorded = json.loads((base / "recipe.json").read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{base / 'recipe.json'} cannot be read ({err}): a run folder's recorded recipe") from None
    if not isinstance(recorded, dict):
        raise ValueError(f"{base / 'recipe.json'} is not a recipe (a JSON object)")
    return {k: recorded[k] for k in ("seed", *BASE_FIELDS) if k in recorded}


def differ_from_base(given: dict, recipe, base: dict) -> str:
    """The `BASE_FIELDS` in ``given`` whose value in ``recipe`` differs from ``base``'s, shown ("" if none)."""
    now = as_json(recipe)
    return ", ".join(f"{k} {now[k]!r} (--base: {base[k]!r})" for k in BASE_FIELDS
                     if k in given and k in base and now[k] != base[k])


def check_variant_folder(folder: Path, recipe) -> None:
    """A variant folder resumes only its own recipe (`sora_nb.train.check_same_recipe`: RefusedInput naming the
    fields that differ), less ``dit_seconds``: each call's wall budget is its own."""
    from sora_nb.train import check_out_folder, check_same_recipe

    check_out_folder(folder)
    try:
        before = json.loads((folder / "recipe.json").read_text())
    except (OSError, ValueError):
        before = None
    if isinstance(before, dict) and "dit_seconds" in before:
        recipe = copy.copy(recipe)
        recipe.dit_seconds = before["dit_seconds"]
    check_same_recipe(folder, recipe)


def shared_cache_problem(shared: Path, recipe, fields: tuple[str, ...], unrecorded: bool) -> str | None:
    """Why ``shared``'s cache is not the one ``recipe`` builds: its ``fields`` differ from the record
    (`SHARED_RECORD`), or (``unrecorded``: a cache is there) it has no record; None when it is. (tune_gpu's too.)"""
    record = shared / SHARED_RECORD
    if record.is_file():
        try:
            before = json.loads(record.read_text())
        except ValueError:
            before = None
        if isinstance(before, dict):
            now = as_json(recipe)
            differ = [k for k in fields if k in before and before[k] != now[k]]
            return ("its shared cache was built with another recipe (" + ", ".join(
                f"{k} {before[k]!r} there, {now[k]!r} now" for k in differ[:4]) + (", ..." if len(differ) > 4 else "")
                + ")") if differ else None
    return f"its shared cache has no record ({SHARED_RECORD}) of the recipe it was built with" if unrecorded else None


def check_shared(shared: Path, recipe) -> str | None:
    """Why ``shared``'s cache is not the one ``recipe`` builds (its `CACHE_FIELDS` differ from the record), or None."""
    return shared_cache_problem(shared, recipe, CACHE_FIELDS, (shared / "cache" / "index.json").is_file()
                                or (shared / "latent_stats.json").is_file())


def copy_stage(src: Path, dst: Path) -> None:
    """Copy a finished stage folder from --base, whole or not at all: a copy cut short (Ctrl-C, a full disk, a
    kill) leaves no ``dst`` (or a ``.partial`` the next run clears), never a half copy a later run would take as
    the stage and train on."""
    from sora_nb._files import atomic_folder, recover_folder

    recover_folder(dst)
    if dst.exists():
        return
    with atomic_folder(dst) as partial:
        shutil.copytree(src, partial, dirs_exist_ok=True)


def build_shared(base: Path, shared: Path, overrides: dict) -> None:
    """The autoencoder (copied from ``base``) and the latent cache every variant reads."""
    from sora_nb import world
    from sora_nb.train import build_cache, latent_stats, train_vae

    shared.mkdir(parents=True, exist_ok=True)
    copy_stage(base / "vae_final", shared / "vae_final")
    recipe = recipe_for(overrides)
    t0 = time.perf_counter()
    cache = build_cache(recipe, shared, world, train_vae(recipe, shared, world))
    print(f"cache: {sum(len(c) for _, c in cache['buckets'].values())} clips in {time.perf_counter() - t0:.0f} s",
          flush=True)
    mean, std = latent_stats(cache, "channel")
    (shared / "latent_stats.json").write_text(json.dumps({"mean": mean, "std": std}))


def train_variant(folder: Path, overrides: dict) -> None:
    """One variant's DiT (the text encoder pre-training is reused from ``text_final``)."""
    import torch

    from sora_nb import world
    from sora_nb.train import build_cache, train_dit, train_vae, write_recipe

    torch.set_num_threads(2)
    recipe = recipe_for(overrides)
    write_recipe(folder, recipe)  # train_dit adds the steps run
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


def export_mismatch(base: Path, folder: Path) -> str | None:
    """Why ``folder``'s recorded recipe does not describe its networks (a folder an older train_gpu.py trained: its
    recipe could differ from --base's autoencoder, or be a later call's over a DiT of another), or None."""
    try:
        recipe = json.loads((folder / "recipe.json").read_text())
        from_base = base_fields(base)
        dit = json.loads((folder / "dit_final" / "dit" / "config.json").read_text())
    except (OSError, ValueError) as err:
        return f"cannot be read ({err})"
    differ = [f"{k} {recipe[k]!r} (--base: {from_base[k]!r})" for k in BASE_FIELDS
              if k in recipe and k in from_base and recipe[k] != from_base[k]]
    differ += [f"{k} {recipe.get(k)!r} (its DiT: {dit.get(key)!r})" for k, key in
               (("dit_hidden", "hidden_size"), ("dit_depth", "depth"), ("dit_heads", "num_heads"), ("dit_patch", "patch_size"))
               if recipe.get(k) != dit.get(key)]
    if differ:
        return (f"its recipe.json does not describe the networks it would export ({', '.join(differ)}): "
                "train the variant again into a new --out")
    return None


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
        for path in (args.base / "vae_final", args.base / "recipe.json", args.export / "recipe.json",
                     args.export / "dit_final", args.export.parent / "shared" / "latent_stats.json"):
            if not path.exists():
                parser.error(f"--export {args.export}: {path} is missing (a variant folder of a finished GPU run, "
                             f"beside its shared/, and --base with vae_final/ and recipe.json)")
        problem = export_mismatch(args.base, args.export)
        if problem:
            parser.error(f"--export {args.export}: {problem}")
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
    try:
        from_base = base_fields(args.base)
    except ValueError as err:
        parser.error(f"--base {args.base}: {err}")

    def parsed(option: str, text: str) -> dict:
        """A JSON object of Recipe fields, checked now, before the cache's minutes."""
        try:
            value = json.loads(text)
        except ValueError:
            parser.error(f"{option}: expected a JSON object of recipe fields, got {text!r}")
        if not isinstance(value, dict):
            parser.error(f"{option}: expected a JSON object of recipe fields, got {text!r}")
        return value

    set_fields = parsed("--set", args.set)
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
    common = {**from_base, **set_fields}  # the base's fields, then --set's (refused below where they differ)
    recipes = {}
    for option, given_fields, fields in [("--set", set_fields, common)] + [
            (f"--variant {name}", overrides, {**common, **overrides}) for name, overrides in variants]:
        try:
            recipe = recipe_for(fields)
        except (TypeError, ValueError) as err:
            parser.error(f"{option}: {err}")
        shown = differ_from_base(given_fields, recipe, from_base)
        if shown:
            parser.error(f"{option}: {shown}: every variant uses --base's vae_final and text_final as they are, and "
                         "records the values of its recipe.json they were trained under (leave these fields out)")
        stages = [k for k in NO_STAGES if getattr(recipe, k)]
        if stages:
            parser.error(f"{option}: {', '.join(f'{k} {getattr(recipe, k)}' for k in stages)}: the variants use "
                         "--base's vae_final as it is (no decoder or pixel-encoder stage runs); leave it out")
        if option == "--set":
            shared_recipe = recipe
        else:
            now, shared_now = as_json(recipe), as_json(shared_recipe)
            cache_given = [k for k in CACHE_FIELDS if k in given_fields and now[k] != shared_now[k]]
            if cache_given:
                parser.error(f"{option}: {', '.join(cache_given)} set the latent cache, which is built once (in "
                             "--out/shared) for every variant: give them in --set")
            recipes[option.split(" ", 1)[1]] = recipe
    shared = args.out / "shared"
    from sora_nb import train

    problem = check_shared(shared, shared_recipe)
    if problem:
        parser.error(f"--out {args.out}: {problem}: resume it with the same --base and --set, or choose a new --out")
    # a variant folder resumes only its own recipe (one of another recipe had its finished stages reused and the
    # new recipe recorded over them), and is locked while this call trains into it, as is shared/
    for name, recipe in recipes.items():
        try:
            check_variant_folder(args.out / name, recipe)
        except train.RefusedInput as err:
            parser.error(f"--variant {name}: {err}")
    for option, folder in [("--out", shared)] + [(f"--variant {name}", args.out / name) for name in recipes]:
        try:
            train.lock_run(folder)
        except train.RefusedInput as err:
            parser.error(f"{option}: {err}")
        except OSError as err:
            parser.error(f"{option}: {folder} cannot be made ({err.strerror})")
    train.write_text_atomic(shared / SHARED_RECORD, json.dumps({k: v for k, v in as_json(shared_recipe).items()
                                                                 if k in CACHE_FIELDS}, indent=1))
    build_shared(args.base, shared, common)
    procs = {}
    for name, overrides in variants:
        folder = args.out / name
        for sub in ("vae_final", "cache"):
            if not (folder / sub).exists():
                os.symlink((shared / sub).resolve(), folder / sub)
        copy_stage(args.base / "text_final", folder / "text_final")
        budget = max(60.0, args.seconds - (time.perf_counter() - t0) - 45)  # 45 s: start-up and saving
        fields = {**common, **overrides, "dit_seconds": budget}
        lock = train._HELD.get(str(folder.resolve()))  # the child holds the folder's lock too, should this process end
        with open(folder / "stdout.log", "w") as log:  # the child keeps its own handle
            procs[name] = subprocess.Popen([sys.executable, __file__, "--worker", str(folder), json.dumps(fields)],
                                           stdout=log, stderr=subprocess.STDOUT, pass_fds=() if lock is None else (lock,))
        print(f"variant {name}: {fields}", flush=True)
    failed = [name for name, p in procs.items() if p.wait() != 0]
    print(f"all done in {time.perf_counter() - t0:.0f} s; failed: {failed}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
