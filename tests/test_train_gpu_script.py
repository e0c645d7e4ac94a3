"""scripts/train_gpu.py end to end at a tiny budget on the CPU, with the 2x spatial latent.

A lent GPU session has 15 minutes of device time, so the script that trains the shipped DiT there must
work the first time: this runs its whole path (shared cache, a variant in its own process, the export
back on the CPU) with ``device`` "cpu" and the next run's settings (``vae_spatial=2``, 4x4 patches).
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

import sora_nb

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


def test_gpu_script_trains_a_variant_and_exports_it_on_the_cpu(tmp_path):
    base = run(tmp_path, "base", **TWO_X)  # the base's vae_final and text_final, as a CPU run makes them
    common = {**TWO_X, "device": "cpu", "cache": [[2.0, 64, 64, 8], [1.0, 64, 64, 4]], "cache_workers": 1,
              "dit_steps": 4, "dit_batch": 2, "dit_warmup": 1, "log_every": 1, "eval_clips": 2,
              "guidance_clips": 2, "guidance_candidates": [2.0], "dit_depth": 1}
    out = tmp_path / "gpu"
    stdout = script("--base", base, "--out", out, "--seconds", 30, "--set", json.dumps(common),
                    "--variant", "w", '{"dit_hidden": 48, "dit_heads": 3}')
    assert "failed: []" in stdout

    stats = json.loads((out / "shared" / "latent_stats.json").read_text())
    assert len(stats["mean"]) == len(stats["std"]) == 16
    assert np.isfinite(stats["mean"]).all() and min(stats["std"]) > 0
    variant = out / "w"
    recipe = json.loads((variant / "recipe.json").read_text())
    assert (recipe["vae_spatial"], recipe["dit_patch"], recipe["dit_hidden"]) == (2, [1, 4, 4], 48)
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


def test_bad_arguments_are_usage_errors_before_any_work(tmp_path):
    """Bad JSON, a variant's bad field, a missing --base or --export folder, a budget <= 0 or not finite, and
    variant names that are given twice, are not plain names or are the shared folder's are one usage line (exit 2)
    before the cache is built; they were tracebacks, some only after the cache's minutes, or (inf, two variants of
    one name, "shared") accepted."""
    base = tmp_path / "base"
    (base / "vae_final").mkdir(parents=True)
    (base / "text_final").mkdir()
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
