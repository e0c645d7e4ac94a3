"""scripts/tune_gpu.py on the CPU at a tiny budget: the travelling copy of the frozen text encoder, the
run (shared cache, a variant in its own process, its finished stage packed), and the export back here.

A lent GPU session has 15 minutes of device time, so the script must work the first time there.
"""

import json
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
    back = tmp_path / "back"
    back.mkdir()
    stdout = script("--run", tmp_path / "run", "--minilm", dest, "--device", "cpu", "--workers", 2,
                    "--cache", "[[2.0, 64, 64, 16], [1.0, 64, 64, 8]]", "--seconds", 4, "--dest", back,
                    "--variant", "v", '{"dit_batch": 4, "log_every": 1}')
    assert "cache: 24 clips" in stdout and "== v: exit 0" in stdout
    with tarfile.open(back / "v.tar") as tar:
        assert {"dit_final/dit/config.json", "log.jsonl", "recipe.json"} <= set(tar.getnames())
        tar.extractall(back / "v")
    ran = json.loads((back / "v" / "recipe.json").read_text())["ft_steps"]
    assert 0 < ran < 1_000_000  # the wall budget cut the steps
    command = shlex.split(re.search(r"back here: .*?python -m sora_nb\.train (.*)", stdout).group(1))
    assert command[command.index("--set") + 1:].count(f"ft_steps={ran}") == 1
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
                          (["--minilm", minilm, "--seconds", "-5"], "--seconds must be > 0")):
        done = subprocess.run([sys.executable, str(SCRIPT), "--run", str(root), *map(str, args)], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 2 and "Traceback" not in done.stderr, (args, done.stderr[-1500:])
        assert message in done.stderr, (args, done.stderr[-500:])
    assert not root.exists()
