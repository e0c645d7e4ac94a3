"""scripts/train_gpu.py end to end at a tiny budget on the CPU, with the 2x spatial latent.

A lent GPU session has 15 minutes of device time, so the script that trains the shipped DiT there must
work the first time: this runs its whole path (shared cache, a variant in its own process, the export
back on the CPU) with ``device`` "cpu" and the next run's settings (``vae_spatial=2``, 4x4 patches).
"""

import dataclasses
import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import sora_nb

from sora_nb.train import Recipe
from test_train import run

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "train_gpu.py"
TWO_X = {"vae_spatial": 2, "dit_patch": [1, 4, 4]}


def script(*args) -> str:
    """Run scripts/train_gpu.py in a fresh process (as on the GPU machine); its stdout, after a zero exit."""
    done = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def refused(*args) -> str:
    """Run scripts/train_gpu.py; its stderr, after a usage error (exit 2, no traceback)."""
    done = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)  # (seconds: the old script went on to train an autoencoder)
    assert done.returncode == 2 and "Traceback" not in done.stderr, (args, done.stdout[-1500:], done.stderr[-1500:])
    return done.stderr


def fake_base(path: Path, **fields) -> Path:
    """A --base with empty vae_final/ and text_final/ and the recipe.json of ``fields``: enough for the checks that
    come before any work (any work on it fails)."""
    (path / "vae_final").mkdir(parents=True)
    (path / "text_final").mkdir()
    (path / "recipe.json").write_text(json.dumps(dataclasses.asdict(Recipe(**fields))))
    return path


def test_gpu_script_trains_a_variant_and_exports_it_on_the_cpu(tmp_path):
    base = run(tmp_path, "base", **TWO_X)  # the base's vae_final and text_final, as a CPU run makes them (seed 3)
    # no vae_spatial: the variant takes the base's (2; the default 4 was recorded, with the base's 2x autoencoder)
    common = {"dit_patch": [1, 4, 4], "device": "cpu", "cache": [[2.0, 64, 64, 8], [1.0, 64, 64, 4]], "cache_workers": 1,
              "dit_steps": 4, "dit_batch": 2, "dit_warmup": 1, "log_every": 1, "eval_clips": 2,
              "guidance_clips": 2, "guidance_candidates": [2.0], "dit_depth": 1}
    out = tmp_path / "gpu"
    command = ["--base", base, "--out", out, "--seconds", 30, "--set", json.dumps(common)]
    stdout = script(*command, "--variant", "w", '{"dit_hidden": 48, "dit_heads": 3}')
    assert "failed: []" in stdout

    stats = json.loads((out / "shared" / "latent_stats.json").read_text())
    assert len(stats["mean"]) == len(stats["std"]) == 16
    assert np.isfinite(stats["mean"]).all() and min(stats["std"]) > 0
    variant = out / "w"
    recipe = json.loads((variant / "recipe.json").read_text())
    assert (recipe["vae_spatial"], recipe["dit_patch"], recipe["dit_hidden"]) == (2, [1, 4, 4], 48)
    base_recipe = json.loads((base / "recipe.json").read_text())
    assert recipe["seed"] == base_recipe["seed"] == 3  # the base's seed, as --set gives none
    assert recipe["cache"] == common["cache"] and recipe["vae_steps"] == base_recipe["vae_steps"] != Recipe().vae_steps
    assert recipe["dit_seconds"] >= 60.0  # the script's floor on the wall budget
    steps = [r["step"] for r in map(json.loads, (variant / "log.jsonl").read_text().splitlines())
             if r.get("stage") == "dit" and "loss" in r]
    assert steps == [0, 1, 2, 3]
    dit_config = json.loads((variant / "dit_final" / "dit" / "config.json").read_text())
    assert (dit_config["patch_size"], dit_config["hidden_size"], dit_config["depth"]) == ([1, 4, 4], 48, 1)

    script("--base", base, "--export", variant)
    folder = variant / "weights"
    vae_config = json.loads((folder / "vae" / "config.json").read_text())
    assert vae_config["spatial_factor"] == 2
    # the export normalises with the statistics the (GPU) run measured, not with a cache it lacks
    np.testing.assert_allclose(vae_config["latent_mean"], stats["mean"], rtol=1e-6)
    np.testing.assert_allclose(vae_config["latent_std"], stats["std"], rtol=1e-6)
    scores = json.loads((folder / "scores.json").read_text())
    assert set(scores["scores"]) == {"train/train", "heldout/train", "train/heldout"}
    assert scores["guidance"] == 2.0

    video = sora_nb.load(str(folder)).generate("a red circle moving right", seed=1, steps=3)
    assert video.frames.shape == (16, 64, 64, 3) and video.frames.dtype == np.uint8
    assert video.trace["x0"].shape == (3, 4, 16, 32, 32)  # (steps, latent frames, channels, 64/2, 64/2)

    # the same command again resumes (here: finds the finished stage); its recipe and DiT stay
    dit_bytes = (variant / "dit_final" / "dit" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert "failed: []" in script(*command, "--variant", "w", '{"dit_hidden": 48, "dit_heads": 3}')
    again = json.loads((variant / "recipe.json").read_text())
    assert {k: v for k, v in again.items() if k != "dit_seconds"} == {k: v for k, v in recipe.items() if k != "dit_seconds"}
    assert (variant / "dit_final" / "dit" / "diffusion_pytorch_model.safetensors").read_bytes() == dit_bytes
    assert any(r.get("stage") == "reused" and r.get("folder") == "dit_final"
               for r in map(json.loads, (variant / "log.jsonl").read_text().splitlines()))
    # another recipe into the folder is refused before any work, naming what differs: it reused the 48-wide DiT and
    # recorded dit_hidden 96 over it ("failed: []")
    log_lines = (variant / "log.jsonl").read_text()
    err = refused(*command, "--variant", "w", '{"dit_hidden": 96, "dit_heads": 3}')
    assert f"--variant w: --out {str(variant)!r} holds a run of another recipe (dit_hidden 48 there, 96 now)" in err
    assert json.loads((variant / "recipe.json").read_text()) == again and (variant / "log.jsonl").read_text() == log_lines
    # and a new variant beside it with another cache: shared/'s cache (of the first --set) was reused
    other = {**common, "cache": [[2.0, 64, 64, 4]]}
    err = refused(*command[:-1], json.dumps(other), "--variant", "v", '{"dit_hidden": 48, "dit_heads": 3}')
    assert (f"--out {out}: its shared cache was built with another recipe (cache [[2.0, 64, 64, 8], [1.0, 64, 64, 4]] "
            "there, [[2.0, 64, 64, 4]] now)") in err
    assert not (out / "v").exists()


def test_bad_arguments_are_usage_errors_before_any_work(tmp_path):
    """Bad JSON, a variant's bad field, a missing --base or --export folder, a budget <= 0 or not finite, and
    variant names that are given twice, are not plain names or are the shared folder's are one usage line (exit 2)
    before the cache is built; they were tracebacks, some only after the cache's minutes, or (inf, two variants of
    one name, "shared") accepted."""
    base = fake_base(tmp_path / "base")
    out = tmp_path / "gpu"
    for args, message in ((["--set", "{bad"], "--set: expected a JSON object of recipe fields"),
                          (["--variant", "a", '{"dit_lr": -1}'], "--variant a: dit_lr must be"),
                          (["--variant", "a", "[1]"], "--variant a: expected a JSON object"),
                          (["--seconds", "-5"], "--seconds must be a finite number > 0 (the wall budget), got -5"),
                          (["--seconds", "inf"], "--seconds must be a finite number > 0 (the wall budget), got inf"),
                          (["--seconds", "nan"], "--seconds must be a finite number > 0 (the wall budget), got nan"),
                          (["--variant", "a", "{}", "--variant", "a", "{}"], "--variant 'a' is given twice"),
                          (["--variant", "shared", "{}"], "--variant 'shared': shared is the run's folder"),
                          (["--variant", "a/b", "{}"], "--variant 'a/b': a name is letters, digits, '_' and '-' only"),
                          (["--variant", "..", "{}"], "--variant '..': a name is letters, digits"),
                          (["--base", tmp_path / "none"], "vae_final is missing"),
                          (["--export", tmp_path / "none"], "is missing (a variant folder of a finished GPU run")):
        full = ["--base", base, "--out", out, *args] if "--base" not in args else ["--out", out, *args]
        done = subprocess.run([sys.executable, str(SCRIPT), *map(str, full)], cwd=ROOT, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 2 and "Traceback" not in done.stderr, (args, done.stderr[-1500:])
        assert message in done.stderr, (args, done.stderr[-500:])
    assert not out.exists()


def script_module(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    import train_gpu

    return train_gpu


def test_a_variant_folder_of_another_recipe_or_in_use_is_refused_before_any_work(tmp_path, monkeypatch):
    """A variant folder holding a run of another recipe had its finished stages reused and the new recipe recorded
    over them ("failed: []"); two calls into one folder trained into it at once. Both are usage errors now, before
    the cache: the first naming the fields that differ, the second the folder in use."""
    train_gpu = script_module(monkeypatch)
    base = fake_base(tmp_path / "base", seed=3, vae_spatial=2)
    out = tmp_path / "gpu"
    common = {"dit_patch": [1, 4, 4], "device": "cpu", "cache": [[2.0, 64, 64, 8]]}
    # as the script records that run: the base's fields (here its seed and vae_spatial, the rest defaults), --set's,
    # the variant's and the call's budget
    before = {"seed": 3, "vae_spatial": 2, **common, "dit_hidden": 96, "dit_heads": 3, "dit_seconds": 61.5}
    folder = out / "a"
    (folder / "dit_final" / "dit").mkdir(parents=True)  # a finished stage of that recipe
    (folder / "recipe.json").write_text(json.dumps(dataclasses.asdict(train_gpu.recipe_for(before))))
    command = ["--base", base, "--out", out, "--set", json.dumps(common)]
    err = refused(*command, "--variant", "a", '{"dit_hidden": 48, "dit_heads": 3}')
    assert f"--variant a: --out {str(folder)!r} holds a run of another recipe (dit_hidden 96 there, 48 now)" in err
    assert sorted(p.name for p in out.iterdir()) == ["a"] and sorted(p.name for p in folder.iterdir()) == [
        "dit_final", "recipe.json"]  # no shared/, no lock file: nothing was made
    recorded = json.loads((folder / "recipe.json").read_text())
    assert (recorded["dit_hidden"], recorded["vae_spatial"]) == (96, 2)
    # the same recipe passes that check (a call's wall budget, dit_seconds, is its own); held by another process,
    # the folder is refused
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        err = refused(*command, "--variant", "a", '{"dit_hidden": 96, "dit_heads": 3}')
    finally:
        os.close(fd)
    assert f"--variant a: --out {str(folder)!r} is in use by another sora-nb train" in err
    assert not (out / "shared" / "cache").exists() and not (folder / "cache").exists()


def test_a_variant_takes_the_base_latent_and_its_own_cache_fields_are_refused(tmp_path):
    """The variants' recipe ignored the base's: a 2x base's variant recorded vae_spatial 4 (and its export said so),
    and a variant's own seed or cache was recorded while it trained on the shared cache. The base's fields are the
    variants' now (a value that differs is refused, named with the base's), and the cache's belong in --set."""
    base = fake_base(tmp_path / "base", seed=3, vae_spatial=2)
    out = tmp_path / "gpu"
    two_x = ["--set", json.dumps({"dit_patch": [1, 4, 4]})]
    for args, message in ((["--set", '{"vae_spatial": 4}'], "--set: vae_spatial 4 (--base: 2): every variant uses "
                                                             "--base's vae_final and text_final as they are"),
                          (["--variant", "a", '{"vae_spatial": 4, "text_width": 64}'],
                           "--variant a: vae_spatial 4 (--base: 2), text_width 64 (--base: 128): every variant uses"),
                          ([*two_x, "--variant", "a", '{"seed": 5}'],
                           "--variant a: seed set the latent cache, which is built once (in --out/shared) for every "
                           "variant: give them in --set"),
                          ([*two_x, "--variant", "a", '{"cache": [[1.0, 64, 64, 4]], "seed": 3}'],
                           "--variant a: cache set the latent cache"),
                          (["--set", '{"dec_steps": 5}'], "--set: dec_steps 5: the variants use --base's vae_final as "
                                                          "it is (no decoder or pixel-encoder stage runs)")):
        assert message in refused("--base", base, "--out", out, *args), args
    (base / "recipe.json").unlink()
    assert f"--base {base}: {base / 'recipe.json'} cannot be read" in refused("--base", base, "--out", out)
    assert not out.exists()


def test_export_refuses_a_recipe_that_does_not_describe_the_networks(tmp_path):
    """A folder the old script trained could record vae_spatial 4 over the base's 2x autoencoder, or dit_hidden 48
    over a 96-wide DiT (a later call's recipe over a reused stage); --export wrote and scored it under that recipe."""
    base = fake_base(tmp_path / "base", seed=3, vae_spatial=2)
    folder = tmp_path / "gpu" / "a"
    (folder / "dit_final" / "dit").mkdir(parents=True)
    (folder / "dit_final" / "dit" / "config.json").write_text(json.dumps(
        {"hidden_size": 96, "depth": 1, "num_heads": 3, "patch_size": [1, 4, 4]}))
    (folder / "recipe.json").write_text(json.dumps(dataclasses.asdict(Recipe(
        seed=3, dit_hidden=48, dit_heads=3, dit_depth=1, dit_patch=(1, 4, 4)))))
    (tmp_path / "gpu" / "shared").mkdir()
    (tmp_path / "gpu" / "shared" / "latent_stats.json").write_text('{"mean": [0], "std": [1]}')
    err = refused("--base", base, "--export", folder)
    assert (f"--export {folder}: its recipe.json does not describe the networks it would export (vae_spatial 4 "
            "(--base: 2), dit_hidden 48 (its DiT: 96))") in err
    assert not (folder / "weights").exists()


def test_a_stage_copy_cut_short_leaves_no_half_stage(tmp_path, monkeypatch):
    """Ctrl-C (or a full disk) while the script copies --base's vae_final or text_final left a half folder that the
    next run took as the stage (it only asked whether the folder existed) and trained on."""
    import importlib.util
    import shutil

    spec = importlib.util.spec_from_file_location("train_gpu_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    src = tmp_path / "base" / "vae_final"
    src.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (src / name).write_text(name)
    dst = tmp_path / "shared" / "vae_final"
    dst.parent.mkdir()
    real = shutil.copytree

    def cut_short(a, b, **kw):
        Path(b).mkdir(exist_ok=True)
        shutil.copy2(Path(a) / "config.json", Path(b) / "config.json")
        raise KeyboardInterrupt

    monkeypatch.setattr(module.shutil, "copytree", cut_short)
    try:
        module.copy_stage(src, dst)
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("the interrupt was swallowed")
    assert not dst.exists() and sorted(p.name for p in dst.parent.iterdir()) == []
    monkeypatch.setattr(module.shutil, "copytree", real)
    module.copy_stage(src, dst)  # the next run copies it whole
    assert sorted(p.name for p in dst.iterdir()) == ["config.json", "model.safetensors"]
    (dst / "model.safetensors").write_text("kept")
    module.copy_stage(src, dst)  # a finished copy is kept as it is
    assert (dst / "model.safetensors").read_text() == "kept"
