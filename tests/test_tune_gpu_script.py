"""scripts/tune_gpu.py on the CPU at a tiny budget: the travelling copy of the frozen text encoder, the
run (shared cache, a variant in its own process, its finished stage packed), and the export back here.

A lent GPU session has 15 minutes of device time, so the script must work the first time there.
"""

import dataclasses
import fcntl
import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "tune_gpu.py"


def script(*args) -> str:
    """Run scripts/tune_gpu.py in a fresh process (as on the GPU machine); its stdout, after a zero exit."""
    done = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def refused(*args) -> str:
    """Run scripts/tune_gpu.py; its stderr, after a usage error (exit 2, no traceback)."""
    done = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, (args, done.stdout[-1500:], done.stderr[-1500:])
    return done.stderr


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    dest = tmp_path_factory.mktemp("minilm")
    return dest, script("--pack", dest)


def test_the_packed_encoder_travels_small_and_gives_the_same_token_states(packed, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from sora_nb.models import text

    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    import tune_gpu

    dest, stdout = packed
    size = sum(f.stat().st_size for f in dest.iterdir())
    assert size < 24 * 2**20 and not (dest / "_check").exists()  # a call carries at most 64 MiB in all
    rel = float(re.search(r"relative error ([0-9.e+-]+)", stdout).group(1))
    assert 0 < rel < 3e-3  # float16's rounding, below the bfloat16 autocast the DiT trains under
    model = tune_gpu.unpack(dest, tmp_path / "site")
    original = load_file(str(text.pretrained_folder(tune_gpu.NAME) / "model.safetensors"))
    rebuilt = load_file(str(model / "model.safetensors"))
    assert rebuilt.keys() == original.keys()
    ids = load_file(str(dest / "minilm16.safetensors"))["kept.ids"]
    table, full = rebuilt[tune_gpu.TABLE], original[tune_gpu.TABLE]
    assert torch.equal(table[ids], full[ids].half().float())
    others = torch.ones(len(full), dtype=torch.bool)
    others[ids] = False
    assert others.sum() > 30_000 and not table[others].any()  # only the world's tokens travel
    tokenizer = text.pretrained_tokenizer(tune_gpu.NAME)
    tune_gpu.check_tokens(tokenizer, ["a small red circle moving left"], ids.tolist())
    with pytest.raises(ValueError, match="captions use tokens the packed encoder lacks"):
        tune_gpu.check_tokens(tokenizer, ["a zebra on a skateboard"], ids.tolist())


def test_a_variant_trains_in_its_budget_and_its_stage_exports_back_here(packed, tmp_path):
    from sora_nb import train
    from sora_nb.backends import embedded

    dest, _ = packed
    back = tmp_path / "back"  # --dest need not exist: it is made (its parent was checked before the cache)
    run_args = ["--run", tmp_path / "run", "--minilm", dest, "--device", "cpu", "--workers", 2,
               "--cache", "[[2.0, 64, 64, 16], [1.0, 64, 64, 8]]", "--seconds", 4]
    stdout = script(*run_args, "--dest", back, "--variant", "v", '{"dit_batch": 4, "log_every": 1}')
    assert "cache: 24 clips" in stdout and "== v: exit 0" in stdout
    with tarfile.open(back / "v.tar") as tar:
        assert {"dit_final/dit/config.json", "log.jsonl", "recipe.json"} <= set(tar.getnames())
        tar.extractall(back / "v")
    ran = json.loads((back / "v" / "recipe.json").read_text())["ft_steps"]
    assert 0 < ran < 1_000_000  # the wall budget cut the steps
    command = shlex.split(re.search(r"back here: .*?python -m sora_nb\.train (.*)", stdout).group(1))
    sets = command[command.index("--set") + 1:]
    assert sets.count(f"ft_steps={ran}") == 1
    # the GPU machine's own settings stay there: device "cuda" is refused on a CPU before the stage is read
    assert not [s for s in sets if s.split("=")[0] in ("device", "cache_workers", "ft_seconds")], sets
    args = [a.replace("runs/gpuft_v", str(back / "v")) for a in command] + ["eval_clips=2", "guidance_clips=2"]
    assert train.main(args) == 0
    assert not (back / "v" / "ft_cache_0").exists()  # the cache stayed on the machine that trained
    shipped = embedded.load_folder(ROOT / "sora_nb" / "weights" / "shapes")
    tuned = embedded.load_folder(back / "v" / "weights")
    stage = train.ShapesDiT.from_pretrained(back / "v" / "dit_final" / "dit", use_safetensors=True, low_cpu_mem_usage=False)
    # the shipped folder has a low-noise expert (its recipe's expert_switch): the stage replaces it, its main DiT stays
    assert shipped.low is not None and tuned.expert_switch == shipped.expert_switch
    assert all(torch.equal(v, tuned.low[0].state_dict()[k]) for k, v in stage.state_dict().items())
    assert any(not torch.equal(v, tuned.low[0].state_dict()[k]) for k, v in shipped.low[0].state_dict().items())
    assert all(torch.equal(v, tuned.dit.state_dict()[k]) for k, v in shipped.dit.state_dict().items())
    assert all(torch.equal(v, tuned.vae.state_dict()[k]) for k, v in shipped.vae.state_dict().items())
    recipe = json.loads((back / "v" / "weights" / "scores.json").read_text())["recipe"]
    assert (recipe["ft_steps"], recipe["ft_chain"], recipe["dit_batch"]) == (ran, 20, 4)

    # the same command again (here with another wall budget) resumes: it finds the finished stage and packs it again
    variant = tmp_path / "run" / "v"
    stage_bytes = (variant / "dit_final" / "dit" / "diffusion_pytorch_model.safetensors").read_bytes()
    again = tmp_path / "again"
    stdout = script(*run_args[:-1], 5, "--dest", again, "--variant", "v", '{"dit_batch": 4, "log_every": 1}')
    assert "== v: exit 0" in stdout and f"'ft_steps={ran}'" in stdout
    assert json.loads((variant / "recipe.json").read_text())["ft_steps"] == ran
    assert (variant / "dit_final" / "dit" / "diffusion_pytorch_model.safetensors").read_bytes() == stage_bytes
    with tarfile.open(again / "v.tar") as tar:
        assert json.loads(tar.extractfile("recipe.json").read())["ft_steps"] == ran
    # another recipe into the folder is refused before any work, naming what differs: it reused the finished stage
    # and recorded the new recipe over it
    recorded = (variant / "recipe.json").read_text()
    err = refused(*run_args, "--dest", again, "--variant", "v", '{"dit_batch": 8, "log_every": 1}')
    assert f"--variant v: --run {str(variant)!r} holds a run of another recipe (dit_batch 4 there, 8 now)" in err
    assert (variant / "recipe.json").read_text() == recorded
    # and a new variant beside it with another --cache: shared/ft_cache_0 (the first --cache's) was reused
    err = refused(*run_args[:-3], "[[2.0, 64, 64, 4]]", "--seconds", 4, "--dest", again, "--variant", "w", "{}")
    assert (f"--run {tmp_path / 'run'}: its shared cache was built with another recipe (cache [[2.0, 64, 64, 16], "
            "[1.0, 64, 64, 8]] there, [[2.0, 64, 64, 4]] now)") in err
    assert not (tmp_path / "run" / "w").exists()


def test_bad_arguments_are_usage_errors_before_the_cache(tmp_path):
    """A variant's bad JSON or field, --workers 0, a budget <= 0 and a missing packed encoder are one usage line
    (exit 2) before anything is built; they were tracebacks, a bad field only in a child after the cache."""
    minilm = tmp_path / "minilm"
    minilm.mkdir()
    root = tmp_path / "run"
    for args, message in ((["--minilm", tmp_path / "none"], "--minilm"),
                          (["--minilm", minilm, "--variant", "x", "{bad"], "--variant x:"),
                          (["--minilm", minilm, "--variant", "x", '{"ft_lr": -1}'], "--variant x: ft_lr must be"),
                          (["--minilm", minilm, "--workers", "0"], "--workers must be an integer >= 1, got 0"),
                          (["--minilm", minilm, "--seconds", "-5"], "--seconds must be a finite number > 0"),
                          (["--minilm", minilm, "--seconds", "inf"], "--seconds must be a finite number > 0"),
                          (["--minilm", minilm, "--total", "nan"], "--total a finite number >= 0, got 330 and nan")):
        done = subprocess.run([sys.executable, str(SCRIPT), "--run", str(root), *map(str, args)], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 2 and "Traceback" not in done.stderr, (args, done.stderr[-1500:])
        assert message in done.stderr, (args, done.stderr[-500:])
    assert not root.exists()


def tune_module(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    import tune_gpu

    return tune_gpu


def test_the_back_here_command_of_a_cuda_run_passes_the_cpu_checks(monkeypatch):
    """The command printed after a GPU run (device "cuda") carried device="cuda" (and the cache processes and the
    wall budget): on the CPU, `rescore_inputs` refused it (check_device) before it read the finished stage."""
    from sora_nb import train

    tune_gpu = tune_module(monkeypatch)
    overrides = tune_gpu.recipe_overrides(330.0, 16, {"dit_batch": 128, "ft_lr": 2e-4}, "cuda", tune_gpu.CACHE)
    command = shlex.split(tune_gpu.back_here("b128", overrides, 7))
    assert command[:3] == ["mkdir", "-p", "runs/gpuft_b128"]
    sets = command[command.index("--set") + 1:]
    fields = {k: json.loads(v) for k, _, v in (s.partition("=") for s in sets)}
    assert "device" not in fields and "cache_workers" not in fields and "ft_seconds" not in fields
    assert (fields["ft_steps"], fields["dit_batch"], fields["ft_lr"], fields["ft_chain"]) == (7, 128, 2e-4, 20)
    assert fields["cache"] == tune_gpu.CACHE  # the fine-tune's data, recorded in the exported recipe
    if not torch.cuda.is_available():  # what a CPU machine checks before any work: passes, on the CPU
        _, recipe, _ = train.rescore_inputs(ROOT / "sora_nb" / "weights" / "shapes", fields, False, True)
        assert (recipe.device, recipe.ft_steps, recipe.dit_batch) == ("cpu", 7, 128)


class Done:
    """A variant's finished process (`collect` waits on it)."""

    def __init__(self, rc: int):
        self.rc = rc

    def wait(self) -> int:
        return self.rc


def test_each_variant_is_packed_on_its_own_and_failures_are_reported(monkeypatch, tmp_path, capsys):
    """One variant that cannot be packed (here: its recipe.json is missing) stopped the loop with a traceback and
    lost every later variant's tar file; now each is packed in its own try, through a .part file."""
    tune_gpu = tune_module(monkeypatch)
    root, dest = tmp_path / "run", tmp_path / "dest"
    dest.mkdir()
    for name in ("a", "b", "c"):
        (root / name / "dit_final" / "dit").mkdir(parents=True)
        (root / name / "dit_final" / "dit" / "config.json").write_text("{}")
        (root / name / "log.jsonl").write_text("{}\n")
        (root / name / "recipe.json").write_text(json.dumps({"ft_steps": 5}))
        (root / f"{name}.out").write_text(f"{name} done\n")
    (root / "a" / "recipe.json").unlink()
    overrides = tune_gpu.recipe_overrides(30.0, 2, {}, "cuda", [[2.0, 64, 64, 8]])
    failed = tune_gpu.collect(root, {"a": (Done(0), overrides), "b": (Done(0), overrides), "c": (Done(3), overrides)},
                              dest)
    assert [f.split(" ")[0] for f in failed] == ["a", "c"] and "not packed" in failed[0] and "exit 3" in failed[1]
    assert sorted(p.name for p in dest.iterdir()) == ["b.tar"]  # no a.tar, no a.tar.part
    with tarfile.open(dest / "b.tar") as tar:
        assert sorted(tar.getnames()) == ["dit_final", "dit_final/dit", "dit_final/dit/config.json", "log.jsonl",
                                          "recipe.json"]
    out = capsys.readouterr().out
    assert "back here: mkdir -p runs/gpuft_b " in out and "'ft_steps=5'" in out and "device" not in out
    assert "failed: a (not packed" in out


def test_bad_names_and_dest_are_usage_errors_before_the_cache(tmp_path):
    """A --dest that cannot hold the tar files failed only at the first tarfile.open, after all the training; two
    variants of one name shared a folder, and a name like "shared" or "../x" wrote over the run's own folders."""
    minilm = tmp_path / "minilm"
    minilm.mkdir()
    root = tmp_path / "run"
    afile = tmp_path / "afile"
    afile.write_text("")
    for args, message in ((["--dest", afile], f"--dest {afile} is not a folder"),
                          (["--dest", afile / "sub"], f"--dest {afile / 'sub'} cannot be made: {afile} is not a folder"),
                          (["--variant", "a", "{}", "--variant", "a", "{}"], "--variant 'a' is given twice"),
                          (["--variant", "shared", "{}"], "--variant 'shared': shared and minilm are the run's"),
                          (["--variant", "minilm", "{}"], "--variant 'minilm'"),
                          (["--variant", "../x", "{}"], "--variant '../x': a name is letters, digits"),
                          (["--variant", "", "{}"], "--variant '': a name is letters, digits")):
        done = subprocess.run([sys.executable, str(SCRIPT), "--run", str(root), "--minilm", str(minilm),
                               "--dest", str(tmp_path / "tars"), *map(str, args)], cwd=ROOT, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 2 and "Traceback" not in done.stderr, (args, done.stderr[-1500:])
        assert message in done.stderr, (args, done.stderr[-500:])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "minilm"]  # no run folder, no --dest made


def test_a_variant_folder_of_another_recipe_in_use_or_changing_the_cache_is_refused_before_any_work(tmp_path,
                                                                                                    monkeypatch):
    """A variant folder holding a fine-tune of another recipe had its finished stage reused (and packed) under the new
    recipe; two calls into one --run trained into one folder at once; a variant's own ``cache`` was recorded while it
    trained on the shared cache (hard-linked into its folder); a shared cache of another --cache was reused. Each is
    a usage error now, before the cache, naming the fields or the folder."""
    tune_gpu = tune_module(monkeypatch)
    minilm = tmp_path / "minilm"
    minilm.mkdir()
    root = tmp_path / "run"
    cache = [[2.0, 64, 64, 16]]
    folder = root / "v"
    (folder / "dit_final" / "dit").mkdir(parents=True)  # that recipe's finished stage
    before = tune_gpu.shipped_recipe(tune_gpu.recipe_overrides(40.0, 2, {"dit_batch": 4}, "cpu", cache))
    (folder / "recipe.json").write_text(json.dumps(dataclasses.asdict(before)))
    command = ["--run", root, "--minilm", minilm, "--device", "cpu", "--workers", 2, "--cache", json.dumps(cache),
               "--dest", tmp_path / "tars"]
    err = refused(*command, "--variant", "v", '{"dit_batch": 8}')
    assert f"--variant v: --run {str(folder)!r} holds a run of another recipe (dit_batch 4 there, 8 now)" in err
    err = refused(*command, "--variant", "v", '{"dit_batch": 4, "cache": [[1.0, 64, 64, 4]]}')
    assert ("--variant v: cache would change the shared cache every variant trains on (shared/ft_cache_0): its clips "
            "are --cache") in err
    assert sorted(p.name for p in root.iterdir()) == ["v"] and sorted(p.name for p in folder.iterdir()) == [
        "dit_final", "recipe.json"]  # nothing made: no shared/, no lock file, no minilm/
    assert json.loads((folder / "recipe.json").read_text())["dit_batch"] == 4
    # the same recipe passes (another --seconds and --workers: the call's own); held by another process, it is refused
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        err = refused(*command[:7], 3, *command[8:], "--seconds", 20, "--variant", "v", '{"dit_batch": 4}')
    finally:
        os.close(fd)
    assert f"--variant v: --run {str(folder)!r} is in use by another sora-nb train" in err
    assert not (root / "minilm").exists() and not (root / "shared" / "ft_cache_0").exists()
    # a shared cache with no record of its --cache (an older script's) is not taken as this one's
    (root / "shared" / "ft_cache_0").mkdir(parents=True)
    (root / "shared" / "ft_cache_0" / "index.json").write_text("{}")
    err = refused(*command, "--variant", "v", '{"dit_batch": 4}')
    assert f"--run {root}: its shared cache has no record (cache_recipe.json) of the recipe it was built with" in err
