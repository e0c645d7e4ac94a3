"""The filmstrip (``Video.filmstrip()``) in a real JupyterLab, in headless Chromium.

The same filmstrip is shown in two cells. The test scrubs it with the arrow keys, types notebook shortcuts
into its slider and, after a click, its play button (``d d`` deleted the filmstrip's own cell: the keys went on
to JupyterLab's command mode), then plays it from both views and counts the frames shown in about two seconds: the widget plays at
its fps, not at the fps times the views playing. A scale set from Python resizes both views.
"""

from __future__ import annotations

import pytest

from harness import cell_errors, open_notebook, run_all_cells, save_screenshot, write_notebook

pytestmark = pytest.mark.browser

FRAMES, FPS = 40, 8.0

NOTEBOOK = [
    "import numpy as np\n"
    "import sora_nb\n"
    f"frames = np.zeros(({FRAMES}, 8, 8, 3), np.uint8)\n"
    f"for i in range({FRAMES}):\n"
    "    frames[i, :, : i % 8 + 1] = 40 + 5 * i\n"
    f"fs = sora_nb.Video(frames=frames, fps={FPS}, params={{}}).filmstrip(scale=4)\n"
    "fs",
    "fs",
    "import pathlib, threading, time\n"
    "def rescale():  # a change from Python once the test says so (the file 'go')\n"
    "    while not pathlib.Path('go').exists():\n"
    "        time.sleep(0.1)\n"
    "    fs.scale = 6\n"
    "threading.Thread(target=rescale, daemon=True).start()",
    "y = 2",
]

FRAMES_SHOWN = """async ([ms, every]) => {
  const label = document.querySelector('.sora-nb-filmstrip-label');
  const seen = [];
  const t0 = performance.now();
  while (performance.now() - t0 < ms) {
    seen.push(Number(label.textContent.match(/frame (\\d+)/)[1]));
    await new Promise((resolve) => setTimeout(resolve, every));
  }
  return seen;
}"""


def test_filmstrip_keys_stay_with_it_and_two_views_play_at_its_fps(lab, page):
    write_notebook(lab.root / "filmstrip.ipynb", NOTEBOOK)
    open_notebook(page, lab, "filmstrip.ipynb")
    run_all_cells(page)
    assert cell_errors(page) == []
    sliders = page.locator("input.sora-nb-filmstrip-slider")
    sliders.nth(1).wait_for(state="visible", timeout=60_000)
    labels = page.locator(".sora-nb-filmstrip-label")
    cells = page.locator(".jp-NotebookPanel .jp-Cell")
    assert cells.count() == 4

    sliders.first.focus()
    for _ in range(2):
        page.keyboard.press("ArrowRight")
    assert sliders.first.input_value() == "2"
    assert labels.nth(0).inner_text() == f"frame 2 (3/{FRAMES})"  # the index, as in Python, then k/n
    assert labels.nth(1).inner_text() == f"frame 2 (3/{FRAMES})"  # the other view follows the shared index
    for key in ("d", "d", "b", "a", "x"):  # JupyterLab's delete, insert-below/above and cut shortcuts
        page.keyboard.press(key)
    page.wait_for_timeout(300)
    assert cells.count() == 4
    assert sliders.count() == 2
    save_screenshot(page.locator(".jp-NotebookPanel .jp-Cell").first, "filmstrip_after_keys")

    plays = page.locator("button.sora-nb-filmstrip-play")
    plays.nth(0).click()
    plays.nth(1).click()
    seen = page.evaluate(FRAMES_SHOWN, [2000, 50])
    plays.nth(0).click()
    plays.nth(1).click()
    advanced = sum((b - a) % FRAMES for a, b in zip(seen, seen[1:]))
    # 2 s at 8 fps: 16 frames (a timer's first tick, a busy page: 10 to 20); two drivers made it about 32
    assert 10 <= advanced <= 20, seen
    # a click focuses the play button: "d d" then went on to command mode and deleted the filmstrip's cell
    assert page.evaluate("() => document.activeElement.className") == "sora-nb-filmstrip-play"
    for key in ("d", "d", "x"):
        page.keyboard.press(key)
    page.wait_for_timeout(300)
    assert cells.count() == 4 and plays.count() == 2

    canvases = page.locator("canvas.sora-nb-filmstrip-canvas")
    assert canvases.nth(0).evaluate("(c) => c.style.width") == "32px"  # 8 pixels at scale 4
    (lab.root / "go").write_text("")
    page.wait_for_function("() => Array.from(document.querySelectorAll('canvas.sora-nb-filmstrip-canvas'))"
                           ".every((c) => c.style.width === '48px')", timeout=20_000)
