"""The sora-nb command line."""

import subprocess
import tempfile
import sys

import numpy as np
import pytest

import sora_nb


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "sora_nb", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def assert_refused(code, out, err, message, folder):
    """A refused command: exit status 2, nothing on stdout, one stderr line naming the problem, nothing written."""
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("sora-nb: error: ") and message in lines[0]
    assert list(folder.iterdir()) == []

def test_generate_writes_the_clip(tmp_path):
    out = tmp_path / "clip.mp4"
    r = run("generate", "a red circle moving right", "--seed", "3", "--duration", "1", "--guidance", "4",
            "--steps", "3", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert f"wrote {out}" in r.stdout and "8 frames 64x64" in r.stdout
    frames = sora_nb.read_video(out)
    assert frames.shape == (8, 64, 64, 3)
    params = sora_nb.read_params(out)
    assert params["seed"] == 3 and params["guidance"] == 4.0 and params["steps"] == 3
    # the CLI and the API make the same clip: identical frames encode to identical decoded frames
    api = sora_nb.generate("a red circle moving right", seed=3, duration=1.0, guidance=4.0, steps=3, trace=False)
    np.testing.assert_array_equal(frames, sora_nb.read_video(api.save(tmp_path / "api.mp4")))


@pytest.mark.parametrize("args,message", [
    (["--duration", "-1"], "duration must be > 0 and <= 4 seconds, got -1"),
    (["--duration", "nan"], "argument --duration: expected a finite number, got 'nan'"),
    (["--guidance", "-2"], "guidance must be >= 0 and <= 50, got -2"),
    (["--steps", "0"], r"steps must be an integer in [1, 1000], got 0"),
    (["--seed", "abc"], "argument --seed: expected an integer, got 'abc'"),
    (["--width", "100"], "width x height must be one of 64x64, 96x64"),
    (["--width", "0"], "width must be an integer in [1, 8192], got 0 (model 'shapes' draws 64x64, 96x64)"),
    (["-o", "/nonexistent-folder/clip.mp4"], "folder '/nonexistent-folder' does not exist"),
    (["-o", "clip.avi"], "--output must end in one of .mp4, .webm, .gif"),  # the option's name, not "path"
    (["--model", "nope"], "unknown model 'nope'"),
    (["--best-of", "0"], "--best-of must be an integer in [1, 16], got 0"),
    (["--best-of", "17"], "--best-of must be an integer in [1, 16], got 17"),
    (["--best-of", "2", "--model", "shapes-untrained"], "best_of needs a model with a verifier"),
    (["--best-of", "2", "--steps", "0"], r"steps must be an integer in [1, 1000], got 0"),
    (["--accept", "2"], "--accept needs --best-of 2 or more, got --best-of 1"),
    (["--retries", "9"], r"retries must be an integer in [0, 8], got 9"),
    (["--retries", "1", "--model", "shapes-untrained"], "retries must be 0 for model 'shapes-untrained'"),
    (["--retries", "x"], "argument --retries: expected an integer, got 'x'"),
    (["--best-of", "2", "--accept", "inf"], "argument --accept: expected a finite number, got 'inf'"),
])
def test_bad_input_exits_nonzero_with_one_line(tmp_path, monkeypatch, capsys, args, message):
    """In this process (`cli.main`, as the console script calls it; a loaded model is cached, so each case costs
    no import and no load); the next test runs two of these cases through a real ``sora-nb`` process."""
    from sora_nb import cli

    monkeypatch.chdir(tmp_path)
    try:
        code = cli.main(["generate", "a red circle", *args])
    except SystemExit as exit_:  # argparse's own errors exit
        code = exit_.code
    captured = capsys.readouterr()
    assert_refused(code, captured.out, captured.err, message, tmp_path)


@pytest.mark.parametrize("args,message", [
    (["--seed", "abc"], "argument --seed: expected an integer, got 'abc'"),  # refused by argparse
    (["--duration", "-1"], "duration must be > 0 and <= 4 seconds, got -1"),  # refused against the model's limits
])
def test_bad_input_exits_nonzero_with_one_line_from_the_console(tmp_path, args, message):
    r = run("generate", "a red circle", *args, cwd=tmp_path)
    assert_refused(r.returncode, r.stdout, r.stderr, message, tmp_path)


def test_reproduce_writes_the_same_clip_again(tmp_path, monkeypatch, capsys):
    """`sora-nb reproduce clip.mp4 -o again.mp4` reads the params the clip records and draws it again: the same
    frames. Bad input is refused in one line, with nothing written."""
    from sora_nb import cli

    clip = tmp_path / "clip.mp4"
    sora_nb.generate("a blue square moving up", seed=5, duration=1.0, steps=3, eta=0.5, trace=False).save(clip)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["reproduce", str(clip), "-o", "again.mp4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("wrote again.mp4 (8 frames 64x64, model shapes, seed 5") and \
        out.rstrip().endswith("the same frames as the clip's)")
    np.testing.assert_array_equal(sora_nb.read_video(tmp_path / "again.mp4"), sora_nb.read_video(clip))
    assert sora_nb.read_params(tmp_path / "again.mp4") == sora_nb.read_params(clip)
    (tmp_path / "again.mp4").unlink()
    for args, message in ((["missing.mp4", "-o", "x.mp4"], "clip 'missing.mp4' is not a readable video: no such file"),
                          ([str(clip), "-o", "x.avi"], "--output must end in one of .mp4, .webm, .gif"),
                          ([str(clip), "-o", "x.mp4", "--model", "shapes-untrained"],
                           "model 'shapes-untrained' is not the model that made this clip")):
        code = cli.main(["reproduce", *args])
        captured = capsys.readouterr()
        assert code in (1, 2) and captured.out == "", (args, captured)
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("sora-nb: error: ") and message in lines[0], lines
        assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_reproduce_refuses_to_write_over_the_clip_it_compares_with(tmp_path, monkeypatch, capsys):
    """``-o`` naming the clip itself (or a link to it) used to overwrite it, then compare the new file with itself:
    "the same frames" whatever was drawn."""
    from sora_nb import cli

    clip = tmp_path / "clip.mp4"
    sora_nb.generate("a blue square moving up", seed=5, duration=1.0, steps=2, trace=False).save(clip)
    (tmp_path / "link.mp4").symlink_to(clip)
    before = clip.read_bytes()
    monkeypatch.chdir(tmp_path)
    for out in ("clip.mp4", str(clip), "link.mp4"):
        assert cli.main(["reproduce", "clip.mp4", "-o", out]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"sora-nb: error: --output '{out}' is the clip itself") and err.count("\n") == 1
    assert clip.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "link.mp4"]


def test_a_missing_ffmpeg_is_refused_before_the_model_runs(tmp_path, monkeypatch, capsys):
    from sora_nb import cli

    clip = tmp_path / "clip.mp4"
    sora_nb.generate("a blue square moving up", seed=5, duration=1.0, steps=2, trace=False).save(clip)
    monkeypatch.setenv("SORA_NB_FFMPEG", str(tmp_path / "no-ffmpeg"))
    ran = []
    monkeypatch.setattr(sora_nb, "load", lambda *a, **k: ran.append(a))
    monkeypatch.setattr(sora_nb, "reproduce", lambda *a, **k: ran.append(a))
    for args in (["generate", "a red circle", "-o", str(tmp_path / "x.mp4")],
                 ["reproduce", str(clip), "-o", str(tmp_path / "x.mp4")]):
        assert cli.main(args) == 1
        assert capsys.readouterr().err.startswith("sora-nb: error: ffmpeg not found at")
    assert ran == [] and [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_version(capsys):
    from sora_nb import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"sora-nb {sora_nb.__version__}\n"


def test_best_of_writes_the_verifiers_pick(tmp_path):
    out = tmp_path / "best.mp4"
    r = run("generate", "a green star moving up", "--seed", "5", "--steps", "3", "--best-of", "2", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert "best of 2 by the verifier" in r.stdout
    params = sora_nb.read_params(out)
    info = params["best_of"]
    assert info["candidates"] == 2 and info["seeds"] == [5, 5 + 1_000_003]
    assert params["seed"] == info["seeds"][info["picked"]] and info["picked"] == int(np.argmax(info["scores"]))
    api = sora_nb.generate("a green star moving up", seed=params["seed"], steps=3, trace=False)
    np.testing.assert_array_equal(sora_nb.read_video(out), sora_nb.read_video(api.save(tmp_path / "api.mp4")))


def test_retries_redraw_a_broken_layout_and_say_so(tmp_path):
    prompt = "a red circle moving right and a blue square spinning and a green star moving up"
    gen = sora_nb.load()
    seed = next(s for s in range(20) if gen.backend.layout_flaws(gen.generate(prompt, seed=s, retries=0, trace=False).latents))
    api = gen.generate(prompt, seed=seed, trace=False)  # the model's default: up to three redraws
    draws = len(api.params["retry"]["seeds"])
    assert draws in (2, 3, 4)
    out = tmp_path / "r.mp4"
    r = run("generate", prompt, "--seed", str(seed), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert f"{draws} draws by the model's check (kept draw {api.params['retry']['picked'] + 1})" in r.stdout
    params = sora_nb.read_params(out)
    assert params["retry"] == api.params["retry"] and params["seed"] == seed and params["retries"] == 3
    np.testing.assert_array_equal(sora_nb.read_video(out), sora_nb.read_video(api.save(tmp_path / "api.mp4")))
    r = run("generate", prompt, "--seed", str(seed), "--retries", "0", "-o", str(tmp_path / "once.mp4"))
    assert r.returncode == 0, r.stderr
    assert "draws" not in r.stdout
    assert sora_nb.read_params(tmp_path / "once.mp4")["retry"]["seeds"] == [seed]


def test_accept_stops_at_the_first_clip_the_verifier_accepts(tmp_path):
    out = tmp_path / "first.mp4"
    r = run("generate", "a green star moving up", "--seed", "5", "--steps", "3", "--best-of", "3",
            "--accept=-1e9", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert "accepted by the verifier after 1 of 3 clips" in r.stdout
    info = sora_nb.read_params(out)["best_of"]
    assert info["seeds"] == [5] and info["picked"] == 0 and info["accept"] == -1e9 and info["candidates"] == 3


def test_empty_prompt(tmp_path):
    r = run("generate", "", cwd=tmp_path)
    assert r.returncode == 2 and "prompt must be a non-empty string" in r.stderr


def test_help_explains_every_option():
    r = run("generate", "--help")
    assert r.returncode == 0
    for option in ("--seed", "--duration", "--guidance", "--steps", "--width", "--height", "--negative-prompt",
                   "--model", "--output", "--best-of", "--accept", "--retries"):
        assert option in r.stdout
    assert "[0, 50]" in r.stdout and "[1, 1000]" in r.stdout
    from sora_nb.request import MAX_SEED

    assert f"[0, {MAX_SEED}]" in r.stdout  # it said [0, 2^63-1], seeds it refused


def test_reproduce_speaks_the_commands_words(tmp_path, monkeypatch, capsys):
    """Errors said "pass model= the folder (or a Generator)" and "path '...'", words of the Python API; a .webm
    made from an .mp4 clip said nothing of the frames (the README promises a verdict); -o "" said "got '.'"."""
    import shutil

    from sora_nb import cli, train
    from sora_nb.backends import embedded

    monkeypatch.chdir(tmp_path)
    shutil.copytree(embedded.WEIGHTS_DIR, tmp_path / "w3")
    clip = tmp_path / "fw.mp4"
    sora_nb.load(str(tmp_path / "w3")).generate("a red circle", seed=1, steps=2, trace=False).save(clip)
    (tmp_path / "w3").rename(tmp_path / "w3moved")
    assert cli.main(["reproduce", "fw.mp4", "-o", "again.mp4"]) == 2
    err = capsys.readouterr().err
    assert "pass --model the folder with those weights" in err and "model=" not in err and "Generator" not in err, err
    (tmp_path / "notvideo.mp4").write_text("hi")
    assert cli.main(["reproduce", "notvideo.mp4", "-o", "a.mp4"]) == 2
    assert capsys.readouterr().err.startswith("sora-nb: error: clip 'notvideo.mp4' is not a readable video")
    assert cli.main(["reproduce", "fw.mp4", "-o", "", "--model", "w3moved"]) == 2
    assert "--output must be a file name, got an empty string" in capsys.readouterr().err
    assert cli.main(["reproduce", "fw.mp4", "-o", "cross.webm", "--model", "w3moved"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("wrote cross.webm") and "frames not compared: a .webm is encoded otherwise than the .mp4 " \
        "clip, write the same format to compare" in out, out


def main_in_process(*argv):
    """``cli.main(argv)``'s exit status (argparse's own errors exit by SystemExit)."""
    from sora_nb import cli

    try:
        return cli.main(list(argv))
    except SystemExit as exit_:
        return exit_.code


def test_train_passes_every_later_argument_to_the_trainer(monkeypatch, capsys):
    """`sora-nb train --out runs/tiny --tiny` (the README's commands): options after `train` are the trainer's."""
    from sora_nb import train

    seen = []
    monkeypatch.setattr(train, "main", lambda argv, prog: seen.append((argv, prog)) or 0)
    assert main_in_process("train", "--out", "runs/tiny", "--tiny") == 0
    assert main_in_process("train", "--out", "runs/plain", "--preset", "plain", "--set", "dit_steps=10") == 0
    assert seen == [(["--out", "runs/tiny", "--tiny"], "sora-nb train"),
                    (["--out", "runs/plain", "--preset", "plain", "--set", "dit_steps=10"], "sora-nb train")]


def test_train_help_and_bad_train_options_come_from_the_trainer(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main_in_process("train", "--help") == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: sora-nb train") and "--out" in out and "--tiny" in out and "--set" in out
    for args, message in ((["--set", "dit_steps"], "--set takes KEY=VALUE with KEY a recipe field, got 'dit_steps'"),
                          (["--set", "dit_stepz=3"], "--set dit_stepz=3: unknown field 'dit_stepz'"),
                          (["--set", "dit_steps=ten"], "--set dit_steps=VALUE: VALUE must be JSON"),
                          (["--bogus"], "unrecognized arguments: --bogus")):
        assert main_in_process("train", *args) == 2
        err = capsys.readouterr().err
        assert err.startswith("usage: sora-nb train") and f"sora-nb train: error: {message}" in err, err
    assert list(tmp_path.iterdir()) == []  # nothing trained, no run folder made
    r = run("train", "--help")  # the console script: its arguments come from sys.argv
    assert r.returncode == 0 and r.stdout.startswith("usage: sora-nb train") and "--tiny" in r.stdout
    assert "train" in run("--help").stdout


def test_a_write_refused_after_generating_is_one_line_and_exit_1(tmp_path, monkeypatch, capsys):
    """A folder that passes the checks but refuses the file (a read-only mount, a full disk) fails at the write,
    after the clip was made: one stderr line naming the clip, status 1, no traceback, nothing left behind."""

    def refuse(**kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / ".clip.tmp.mp4"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    code = main_in_process("generate", "a red circle", "--steps", "2", "--retries", "0", "-o", str(tmp_path / "clip.mp4"))
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 1 and captured.out == "" and len(lines) == 1, captured.err
    assert lines[0] == f"sora-nb: error: [Errno 13] cannot write '{tmp_path / 'clip.mp4'}': Permission denied"
    assert list(tmp_path.iterdir()) == []


def test_reproduce_notes_a_clip_made_with_another_torch_or_thread_count(tmp_path, monkeypatch, capsys):
    from sora_nb import cli

    v = sora_nb.generate("a blue square moving up", seed=5, duration=1.0, steps=2, trace=False)
    clip = sora_nb.Video(frames=v.frames, fps=v.fps, params={**v.params, "runtime": {"torch": "2.0.0", "threads": 99}})
    clip.save(tmp_path / "clip.mp4")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["reproduce", "clip.mp4", "-o", "again.mp4"]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith("sora-nb: note: this clip was made with torch 2.0.0 on 99 CPU threads")
    assert captured.err.count("\n") == 1 and "the same frames as the clip's" in captured.out


def test_ctrl_c_stops_in_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from sora_nb import cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # as Ctrl-C during the steps

    monkeypatch.setattr(sora_nb.api.Generator, "_run", interrupted)  # what generate, reproduce and the CLI call
    assert cli.main(["generate", "a red circle moving right", "-o", str(tmp_path / "x.mp4")]) == 130
    assert capsys.readouterr().err == "sora-nb: stopped; nothing was written\n"  # (a 40-line traceback before)
    assert list(tmp_path.iterdir()) == []
