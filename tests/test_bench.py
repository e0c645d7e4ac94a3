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
