"""Every notebook in notebooks/ runs top to bottom on the CPU (no network)."""

import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
# Notebooks executed (with their own assertions) by another test module.
OWN_TESTS = {"02_shapes_world.ipynb"}
# Notebooks with their own assertions below.
CHECKED_HERE = {"01_quickstart.ipynb", "03_inside_the_denoiser.ipynb", "04_explore_prompts.ipynb",
                "07_train_your_own.ipynb", "08_real_models_on_colab.ipynb"}


def execute(path: Path, tmp_path: Path, parameters: str | None = None) -> nbformat.NotebookNode:
    """Run ``path`` in a fresh kernel with ``tmp_path`` as working folder; return the executed notebook.

    ``parameters`` is code run right after the cell tagged ``parameters`` (as papermill does), or first
    when there is none."""
    nb = nbformat.read(path, as_version=4)
    if parameters:
        tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
        nb.cells.insert(tagged[0] + 1 if tagged else 0, nbformat.v4.new_code_cell(parameters))
    temp = tmp_path / "tmp"  # the kernel's temporary folder (07's run folder was left in /tmp at every test run)
    temp.mkdir(exist_ok=True)
    before = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(temp)  # the kernel inherits it
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        if before is None:
            del os.environ["TMPDIR"]
        else:
            os.environ["TMPDIR"] = before
    return nb


def outputs_text(nb: nbformat.NotebookNode) -> str:
    """All text and HTML the notebook printed."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            data = out.get("data", {})
            parts.append(data.get("text/plain", "") + data.get("text/html", ""))
    return "\n".join(parts)


def test_quickstart(tmp_path):
    nb = execute(NOTEBOOKS / "01_quickstart.ipynb", tmp_path)
    text = outputs_text(nb)
    assert "<video" in text  # the bare `video` played
    assert "(16, 64, 64, 3) uint8 8.0" in text
    assert "same seed, same frames: True" in text and "other seed, same frames: False" in text
    assert "quickstart.mp4 a red circle moving right" in text
    assert "Dimensions:" in text or "xarray.Dataset" in text
    assert not (tmp_path / "quickstart.mp4").exists()
    # the live controls panel: shown, then driven from code
    assert "application/vnd.jupyter.widget-view+json" in widget_views(nb)
    assert "Controls(model='shapes" in text
    assert "live clip: guidance 7.0 seed 0 prompt a red circle moving right" in text


def widget_views(nb: nbformat.NotebookNode) -> str:
    """The mime types of every displayed output, joined (widget views show up as their mime type)."""
    return " ".join(k for cell in nb.cells for out in cell.get("outputs", []) for k in out.get("data", {}))


def test_explore_prompts(tmp_path):
    nb = execute(NOTEBOOKS / "04_explore_prompts.ipynb", tmp_path)
    text = outputs_text(nb)
    assert "application/vnd.jupyter.widget-view+json" in widget_views(nb)  # the panel was displayed
    assert "params match the controls: True" in text
    assert "dice seed shown = seed used: True" in text
    assert "seeds so far: [0, 1, 2]" in text
    assert "guidance values: [1.0, 3.0, 7.0, 5.0]" in text
    assert text.count("<video") >= 4                                         # the four clips side by side
    assert "prompt='a blue square moving up'" in text
    assert "restored: a red circle moving right seed 0 guidance 5.0" in text
    assert "same clip: True | params match: True" in text
    assert "a-red-circle-moving-right_seed0.mp4 5.0" in text
    assert "message: seed must be an integer in [0, " in text and "got -1" in text
    assert "then seed 3 | error: None" in text
    assert not list(tmp_path.glob("*.mp4"))


def test_real_models_notebook_with_a_tiny_pipeline(tmp_path):
    """08 runs offline with the tiny Wan pipeline in place of Wan 2.1 from the Hub (TINY = True)."""
    nb = execute(NOTEBOOKS / "08_real_models_on_colab.ipynb", tmp_path, parameters="TINY = True")
    text = outputs_text(nb)
    assert "on Colab: False" in text
    assert "Wan: frames 4k+1 (at most 81), width/height multiples of 16, 16 fps" in text
    assert "refused: num_frames must be 4k+1 for Wan" in text and "got 10: the nearest valid counts are 9" in text
    assert "weights_bytes" in text
    assert "<video" in text and "frames: (9, 32, 32, 3) uint8 16.0 fps" in text
    assert "model: wan (WanPipeline) | seed: 0 | num_frames: 9" in text
    assert "trace: {'step': 4, 'frame': 3, 'channel': 16, 'y': 4, 'x': 4" in text
    assert "application/vnd.jupyter.widget-view+json" in widget_views(nb)   # inspector and controls shown
    assert "Controls(model='wan (WanPipeline)'" in text
    assert "live clip: (9, 32, 32, 3) | error: None" in text
    assert "model in the file: wan (WanPipeline)" in text and (tmp_path / "wan_clip.mp4").is_file()


def test_inside_the_denoiser_and_with_the_untrained_model_it_suggests(tmp_path):
    nb = execute(NOTEBOOKS / "03_inside_the_denoiser.ipynb", tmp_path)
    assert "params['retry'] =" in outputs_text(nb)
    # the swap its introduction suggests: the curves flat at 0, the redraw section skipped (a KeyError before)
    nb = nbformat.read(NOTEBOOKS / "03_inside_the_denoiser.ipynb", as_version=4)
    assert sum('sora_nb.load("shapes")' in c.source for c in nb.cells) == 1
    for cell in nb.cells:
        cell.source = cell.source.replace('sora_nb.load("shapes")', 'sora_nb.load("shapes-untrained")')
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert "skipped: section 6 needs a model with the layout check, and 'shapes-untrained' has none" in outputs_text(nb)


def test_train_your_own_shows_the_start_and_the_checks_before_and_after(tmp_path):
    text = outputs_text(execute(NOTEBOOKS / "07_train_your_own.ipynb", tmp_path))
    psnr = re.search(r"reconstruction PSNR: PCA start ([\d.]+) dB, after \d+ steps ([\d.]+) dB", text)
    assert psnr and 20 < float(psnr[1]) < 45 and 20 < float(psnr[2]) < 45, text[-2000:]
    rows = dict(re.findall(r"^(untrained|trained here) +(colour .*)$", text, re.M))
    assert set(rows) == {"untrained", "trained here"}, text[-2000:]
    assert rows["untrained"].startswith("colour 0.00 shape 0.00"), rows  # its starting noise
    assert "dit loss: first" in text
    assert re.search(r"^deleted \S+sora_nb_train_\S+ exists: False$", text, re.M), text[-500:]  # its last cell
    assert [p.name for p in (tmp_path / "tmp").iterdir() if p.name.startswith("sora_nb_train_")] == []


def test_other_notebooks_run(tmp_path):
    """A notebook no test above checks still runs top to bottom (none today: every one has its own test)."""
    others = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb") if p.name not in OWN_TESTS | CHECKED_HERE)
    assert len(list(NOTEBOOKS.glob("*.ipynb"))) == len(others) + len(OWN_TESTS) + len(CHECKED_HERE)
    for name in others:
        execute(NOTEBOOKS / name, tmp_path)
