"""The bench/ scripts' command lines: `make bench` names scripts that exist and run, and counts are checked."""

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from _common import count, count_or_zero, parser  # noqa: E402


def make_bench_scripts() -> list[str]:
    text = (ROOT / "Makefile").read_text()
    return re.search(r"^BENCH_SPEED := (.+)$", text, re.M).group(1).split()


def test_make_bench_runs_scripts_that_exist_and_need_no_arguments():
    """`make bench` ran every bench_*.py with no arguments, and three of them require a weights folder, so it
    failed at the third script; it now runs the speed table's scripts, each of which parses with no arguments."""
    scripts = make_bench_scripts()
    assert scripts == ["bench/bench_generate.py", "bench/bench_trace.py", "bench/bench_controls.py"]
    for script in scripts:
        source = (ROOT / script).read_text()
        assert "required=True" not in source, script
        r = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "--threads" in r.stdout, (script, r.stderr)


def test_counts_are_usage_errors_not_tracebacks(capsys):
    assert count("3") == 3
    for bad, message in (("0", "expected an integer >= 1, got 0"), ("-1", "got -1"), ("x", "got 'x'")):
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            count(bad)
    p = parser("doc", repeats=5)
    assert p.parse_args([]).repeats == 5 and p.parse_args([]).threads is None
    with pytest.raises(SystemExit):
        p.parse_args(["--threads", "-1"])
    assert "argument --threads: expected an integer >= 1, got -1" in capsys.readouterr().err
    assert not any(a.dest == "repeats" for a in parser("doc")._actions)  # only scripts that repeat take it
    assert count_or_zero("0") == 0 and count_or_zero("3") == 3  # --retry-prompts 0 skips (it was refused)
    assert count_or_zero("00") == 0 and count_or_zero(" 0 ") == 0  # ("00" was "expected an integer >= 1")
    for bad in ("-1", "x"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"expected an integer >= 0 \(0: off\), got"):
            count_or_zero(bad)


@pytest.mark.parametrize("script, args, message", [
    ("bench_controls.py", ["--repeats", "49"], "--repeats must be at most 48"),  # guidance went past the slider's 50
    ("bench_card_scores.py", ["--save", "/tmp"], "--save must be a file name ending in .npz"),  # numpy wrote /tmp.npz
    ("bench_guidance.py", ["--guidance", "60"], r"--guidance values must be numbers in \[0, 50\]"),
])
def test_bench_options_that_would_fail_late_are_usage_errors(script, args, message, monkeypatch, capsys):
    import runpy

    monkeypatch.setattr(sys, "argv", [script, *args])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(ROOT / "bench" / script), run_name="__main__")
    assert done.value.code == 2 and re.search(message, capsys.readouterr().err)


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "bench").glob("*.py") if not p.name.startswith("_")))
def test_every_bench_script_answers_help(script, monkeypatch, capsys):
    """Each script's --help, run as `python bench/<script> --help` runs it: two scripts named a local variable
    `count`, which hid _common.count from their own argument parser (UnboundLocalError on every run)."""
    import runpy

    monkeypatch.setattr(sys, "argv", [script, "--help"])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(ROOT / "bench" / script), run_name="__main__")
    assert done.value.code == 0 and "usage:" in capsys.readouterr().out


def run_script(script, args, monkeypatch, capsys):
    """``python bench/<script> ARGS`` in this process: (exit code, stdout, stderr); 0 when it returned."""
    import runpy

    monkeypatch.setattr(sys, "argv", [script, *args])
    code = 0
    try:
        runpy.run_path(str(ROOT / "bench" / script), run_name="__main__")
    except SystemExit as done:
        code = done.code
    out = capsys.readouterr()
    return code, out.out, out.err


BAD = "/nonexistent/weights"


@pytest.mark.parametrize("script, args, message", [
    # a bad second --weights folder: refused before the first folder's evaluation (it died after it)
    ("bench_samples.py", ["--weights", "shapes", "--weights", BAD, "--samples", "k0", "--clips", "1"],
     f"--weights '{BAD}': unknown model"),
    ("bench_occluder.py", ["--weights", "shapes", "--weights", BAD, "--clips", "1", "--pool", "60"],
     f"--weights '{BAD}': unknown model"),
    ("bench_coherence.py", ["--weights", "shapes", "--weights", BAD, "--clips", "2"], f"--weights '{BAD}': unknown model"),
    ("bench_experts.py", ["--high", "shapes", "--low", BAD], f"--low '{BAD}': unknown model"),
    # schedules, modes, patches, devices and step counts: usage errors, not tracebacks nor silent defaults
    ("bench_steps.py", ["--schedules", "0"], r"argument --schedules: takes step counts \(integers >= 1\), A or B, got '0'"),
    ("bench_steps.py", ["--schedules", "20", "C"], "argument --schedules: takes step counts .*got 'C'"),
    ("bench_compile.py", ["--mode", "fastest"], "argument --mode: invalid choice: 'fastest'"),
    ("bench_train_step.py", ["--patch", "0", "2", "2"], "dit_patch must be 3 integers in"),
    ("bench_train_step.py", ["--device", "foo"], "device must be a torch device"),
    ("gpu_overhead.py", ["--tiny", "--steps", "0"], "argument --steps: expected an integer >= 1, got 0"),
    ("gpu_overhead.py", ["--tiny", "--steps", "-2"], "argument --steps: expected an integer >= 1, got -2"),
    # --guidance outside [0, 50], checked as bench_samples.py and bench_guidance.py check it
    ("bench_experts.py", ["--high", "shapes", "--low", "shapes", "--guidance", "60"],
     r"--guidance must be a number in \[0, 50\], got 60"),
    ("bench_shape.py", ["--guidance", "-1"], r"--guidance must be a number in \[0, 50\], got -1"),
    ("bench_shape_channels.py", ["--weights", "shapes", "--guidance", "nan"], r"--guidance must be a number in \[0, 50\]"),
    # --threads where it was missing
    ("bench_guidance.py", ["--threads", "0"], "argument --threads: expected an integer >= 1, got 0"),
    ("bench_world.py", ["--threads", "0"], "argument --threads: expected an integer >= 1, got 0"),
    # 4 steps: the change meant for a run in flight came after it (an idle change timed as "during a run")
    ("bench_controls.py", ["--steps", "4"], "--steps must be >= 6"),
])
def test_bad_arguments_are_refused_up_front(script, args, message, monkeypatch, capsys):
    code, _, err = run_script(script, args, monkeypatch, capsys)
    assert code == 2 and re.search(message, err), (code, err[-2000:])


def test_gpu_overhead_tiny_on_a_cuda_machine_prints_no_gpu_rows(monkeypatch, capsys):
    """--tiny on a machine with CUDA: the GPU rows read ``peak``, filled only for a CUDA run (KeyError 'bare' at
    the end of the run); they now say n/a for any CPU run. The trace size is in MiB, to more than one decimal."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # only the availability checks are faked
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", lambda *a, **k: None)
    threads = torch.get_num_threads()
    try:
        code, out, err = run_script("gpu_overhead.py", ["--tiny", "--repeats", "1", "--steps", "2"], monkeypatch, capsys)
    finally:
        torch.set_num_threads(threads)
    assert code == 0, err[-2000:]
    assert re.search(r"\| peak GPU memory +\| n/a \(CPU run\)", out) and re.search(r"\| host syncs +\| n/a", out)
    size = re.search(r"\| trace size \(MiB\) +\| (\S+)", out)
    assert size and float(size.group(1)) > 0, out  # (MB, .1f: 0.0)


def test_card_scores_leave_the_change_blank_for_another_clip_count(tmp_path, monkeypatch, capsys):
    """--clips 2 compared two clips with the card's 200-clip figures and printed the difference as a change."""
    import json

    import numpy as np

    from sora_nb import world
    from sora_nb.backends import embedded
    from sora_nb.train import step_seed

    recipe = json.loads((embedded.WEIGHTS_DIR / "scores.json").read_text())["recipe"]
    assert int(recipe["eval_clips"]) != 2
    seed = step_seed(int(recipe["seed"]), "eval", 0)
    frames = {f"{split}/{phrasing}/{i}": clip.frames
              for split, phrasing in (("train", "train"), ("heldout", "train"), ("train", "heldout"))
              for i, clip in enumerate(world.sample(2, seed=seed, split=split, phrasing=phrasing))}
    np.savez(tmp_path / "f.npz", **frames)
    code, out, err = run_script("bench_card_scores.py", ["--clips", "2", "--frames", str(tmp_path / "f.npz")],
                                monkeypatch, capsys)
    assert code == 0, err[-2000:]
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| train/") or line.startswith("| heldout/")]
    assert len(rows) == 24 and all(r[4].strip() == "-" for r in rows), out
    assert f"change left blank (-): 2 clips a split against the card's {recipe['eval_clips']}" in out


def test_bench_steps_draws_each_clip_once_on_its_own_schedule(monkeypatch, capsys):
    """A redraw (12 or 8 steps) ran the whole fixed schedule, and the default redraws made the "20" row something
    other than the N-step schedule alone: each clip is now one draw (retries=0), and `Fixed` refuses another count."""
    from sora_nb import world

    import bench_steps

    seen = []
    real = world.evaluate
    monkeypatch.setattr(world, "evaluate", lambda *a, **k: seen.append(k) or real(*a, **k))
    code, out, err = run_script("bench_steps.py", ["--clips", "1", "--schedules", "3"], monkeypatch, capsys)
    assert code == 0, err[-2000:]
    assert [k.get("retries") for k in seen] == [0] and seen[0]["steps"] == 3
    assert "one draw per clip" in out
    fixed = bench_steps.Fixed(num_train_timesteps=1000)
    fixed.LEVELS = [1.0, 0.5, 0.0]
    fixed.set_timesteps(2)
    with pytest.raises(RuntimeError, match="asked for 12 steps, the schedule has 2"):
        fixed.set_timesteps(12)


def test_bench_redraw_samples_with_the_low_noise_expert_as_generate_does(gen):
    """bench_redraw's level 1 ("the model's own generation") ran the main DiT at every step; sampling gives the
    steps at or below expert_switch to the shipped low-noise expert (12 and 8 of 20)."""
    import torch

    import bench_redraw
    from sora_nb import train

    be = gen.backend
    assert be.low is not None
    calls = {"main": 0, "low": 0}
    hooks = [be.dit.blocks[0].register_forward_pre_hook(lambda m, a: calls.__setitem__("main", calls["main"] + 1)),
             be.low[0].blocks[0].register_forward_pre_hook(lambda m, a: calls.__setitem__("low", calls["low"] + 1))]
    try:
        grid = train.distil_grid(20, float(be.scheduler_config.get("shift", 1.0)))[0]
        bench_redraw.redraw(be, torch.zeros(1, 16, 4, 16, 16), ["a red circle moving right"], 1.0, grid,
                            torch.Generator().manual_seed(0))
        redraw = dict(calls)
        calls.update(main=0, low=0)
        gen.generate("a red circle moving right", seed=0, retries=0, trace=False)
    finally:
        for h in hooks:
            h.remove()
    assert redraw == calls and calls["low"] > 0, (redraw, calls)


def test_level_denoiser_is_the_backends_own_choice(gen):
    """bench_denoiser.py and bench_reads.py take each level's DiT and text states from `level_denoiser`: the
    backend's `denoiser(request)`, so below the switch they judge the low-noise expert that sampling uses."""
    import torch

    from _common import level_denoiser

    be = gen.backend
    for g in (1.0, 2.0):
        at = level_denoiser(be, ["a red circle moving right", "two blue squares"], g)
        for sigma in (0.95, be.expert_switch, 0.3):
            dit, states, masks = at(sigma)
            assert dit is (be.low[0] if sigma <= be.expert_switch else be.dit)
            for i, prompt in enumerate(["a red circle moving right", "two blue squares"]):
                _, text, mask = be.denoiser(gen.request(prompt, guidance=g))(sigma)
                for row in range(len(text)):
                    k = row * 2 + i
                    n = text.shape[1]
                    assert torch.equal(states[k, :n], text[row]) and torch.equal(masks[k, :n], mask[row])
                    assert not masks[k, n:].any()


def test_bench_coherence_draws_the_model_cards_prompts(monkeypatch, capsys):
    """Its doc says the card's train/train prompts and seeds; it sampled at seed 0, the card at step_seed(0, "eval", 0)."""
    from sora_nb import world
    from sora_nb.train import step_seed

    seeds = []
    real = world.sample
    monkeypatch.setattr(world, "sample", lambda n, seed=0, **k: seeds.append(seed) or real(n, seed=seed, **k))
    code, out, err = run_script("bench_coherence.py", ["--weights", "shapes", "--clips", "2"], monkeypatch, capsys)
    assert code == 0, err[-2000:]
    assert seeds == [step_seed(0, "eval", 0)] and "| shapes" in out


@pytest.mark.parametrize("script", ["bench_generate.py", "bench_trace.py", "gpu_overhead.py"])
def test_sizes_in_mebibytes_are_labelled_mib(script):
    """bytes / 2**20 was labelled MB (10**6 bytes); the library's own messages (max_mb) are not the bench's."""
    source = (ROOT / "bench" / script).read_text()
    assert "2**20" in source and not re.search(r"\(MB\)|\d\} MB|, file MB|MB of", source)
