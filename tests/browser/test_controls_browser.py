"""The live controls panel in a real JupyterLab, in headless Chromium, with the embedded model.

The notebook shows ``sora_nb.controls(...)`` and waits for its first clip. The test then drags the
guidance slider's handle with the mouse (a real pointer drag on the noUiSlider, from 5 to about 7), and
watches the page: the x0 preview of every frame updates, then the ``<video>`` element gets a new ``src``
(a new blob of the new clip) that the browser decodes. Page-side timestamps (``performance.now()`` at pointer
release, at the preview widget's first new step, at the video's ``src`` change) give the latency
from slider release to first preview and to finished clip, as the user sees it; the kernel's own
numbers come back through a file the notebook writes. Finally a click on the first history
thumbnail brings the first clip back. Screenshots and the timings land in ``test-artifacts/``.
"""

from __future__ import annotations

import json
import os

import pytest

from harness import cell_errors, open_notebook, run_all_cells, save_json, save_screenshot, write_notebook

pytestmark = pytest.mark.browser

# Latency goals (embedded model, 20 steps): <= 0.3 s to first preview, <= 1.5 s to the finished clip.
# The test enforces looser bounds (a shared 2-core CI machine also runs JupyterLab and Chromium);
# SORA_NB_STRICT_LATENCY=1 enforces the goals themselves.
STRICT = os.environ.get("SORA_NB_STRICT_LATENCY", "") == "1"
MAX_FIRST_PREVIEW_S = 0.3 if STRICT else 1.5
MAX_FINISHED_S = 1.5 if STRICT else 6.0
# The drag's target, inside the model's guidance curve (0 to 10). For this prompt and seed the shipped
# model's layout check keeps its first draw at guidance 5 to 8 (one sampler run, 0.45 s alone); far up
# the slider (12 to 15.5) it redraws three times, four runs, and the bounds above are for one. The
# kernel's record says how many draws the clip took, and the test checks it was one.
TARGET_GUIDANCE = 7.0

NOTEBOOK = [
    "import json, os\n"
    "from pathlib import Path\n"
    "import sora_nb\n"
    "ui = sora_nb.controls(prompt='a red circle moving right', seed=0, steps=20, guidance=5.0)\n"
    "def record(change):\n"
    "    p = ui.video.params\n"
    "    # atomic: the test polls this file, so it must never see it half-written\n"
    "    Path('played.json.tmp').write_text(json.dumps({'guidance': p['guidance'], 'seed': p['seed'],\n"
    "        'slider': ui.guidance.value, 'history': len(ui.history), 'timing': ui.timings[-1]}))\n"
    "    os.replace('played.json.tmp', 'played.json')\n"
    "ui.player.observe(record, names='value')\n"
    "ui",
    "first = ui.wait(300)\n"
    "print('first clip ready, guidance', first.params['guidance'])",
]

WATCH = """() => {
  const root = document.querySelector('.sora-nb-controls');
  const preview = root.querySelector('.sora-nb-controls-preview[data-run]');
  const video = root.querySelector('video.sora-nb-controls-player');
  const rec = { release: null, preview: null, previewStep: null, src: null, run0: preview.dataset.run,
                src0: video.getAttribute('src') };
  window.__soraControls = rec;
  document.addEventListener('pointerup', () => { if (rec.release === null) rec.release = performance.now(); },
                            true);
  new MutationObserver(() => {
    if (rec.preview === null && rec.release !== null && preview.dataset.run !== rec.run0) {
      rec.preview = performance.now();
      rec.previewStep = Number(preview.dataset.step);
    }
  }).observe(preview, { attributes: true, attributeFilter: ['data-run', 'data-step'] });
  new MutationObserver(() => {
    if (rec.src === null && video.getAttribute('src') !== rec.src0) rec.src = performance.now();
  }).observe(video, { attributes: true, attributeFilter: ['src'] });
}"""

VIDEO_STATE = """(v) => ({ src: v.getAttribute('src'), width: v.videoWidth, height: v.videoHeight,
                          ready: v.readyState, error: v.error ? v.error.code : null })"""


def played(lab) -> dict:
    path = lab.root / "played.json"
    return json.loads(path.read_text()) if path.exists() else {}


def wait_played(page, lab, predicate, timeout_ms: int = 60_000) -> dict:
    """Poll the notebook's ``played.json`` until ``predicate`` holds."""
    for _ in range(timeout_ms // 100):
        data = played(lab)
        if data and predicate(data):
            return data
        page.wait_for_timeout(100)
    raise AssertionError(f"the kernel never showed the expected clip; last: {played(lab)}")


def test_guidance_slider_regenerates_and_video_changes(lab, page):
    write_notebook(lab.root / "controls.ipynb", NOTEBOOK)
    open_notebook(page, lab, "controls.ipynb")
    run_all_cells(page, timeout=300)
    assert cell_errors(page) == []
    root = page.locator(".sora-nb-controls")
    root.wait_for(state="visible", timeout=60_000)
    video = root.locator("video.sora-nb-controls-player")
    page.wait_for_function("(v) => v.videoWidth > 0", arg=video.element_handle(), timeout=30_000)
    before = video.evaluate(VIDEO_STATE)
    assert before["src"].startswith("blob:") and (before["width"], before["height"]) == (64, 64)
    assert before["error"] is None                        # Chromium decodes the h264 clip
    frames = root.locator(".sora-nb-controls-preview-frame")
    assert frames.count() == 4                            # every latent frame of the 2 s clip
    assert "guidance 5 " in root.locator(".sora-nb-controls-caption-text").inner_text()
    save_screenshot(root, "controls_before")

    page.evaluate(WATCH)
    slider = root.locator(".sora-nb-controls-guidance")
    handle = slider.locator(".noUi-handle")
    box = handle.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    track = slider.locator(".noUi-base").bounding_box()
    top = float(handle.get_attribute("aria-valuemax"))    # the model's max_guidance
    assert abs(x - (track["x"] + track["width"] * 5.0 / top)) < 2   # the handle sits at guidance 5
    target_x = track["x"] + track["width"] * TARGET_GUIDANCE / top
    page.mouse.move(x, y)
    page.mouse.down()
    for k in range(1, 5):                                 # a drag in four moves, not a jump
        page.mouse.move(x + (target_x - x) * k / 4, y)
        page.wait_for_timeout(15)
    page.mouse.up()
    page.wait_for_function("() => window.__soraControls.src !== null", timeout=60_000)
    rec = page.evaluate("() => window.__soraControls")
    readout = float(slider.locator(".widget-readout").inner_text())
    assert 5.0 < readout and abs(readout - TARGET_GUIDANCE) <= 1.0   # the slider moved right, to about the target

    data = wait_played(page, lab, lambda d: d["guidance"] != 5.0)
    assert data["guidance"] == data["slider"] == readout   # the clip was made with the slider's value
    assert data["seed"] == 0 and data["history"] == 2
    page.wait_for_function("(v) => v.readyState >= 2 && v.videoWidth > 0", arg=video.element_handle(),
                           timeout=30_000)
    after = video.evaluate(VIDEO_STATE)
    assert after["src"].startswith("blob:") and after["src"] != before["src"]   # the video element changed
    assert after["error"] is None and after["width"] == 64
    caption = root.locator(".sora-nb-controls-caption-text").inner_text()
    assert f"guidance {readout:g} " in caption
    save_screenshot(root, "controls_after_guidance")

    first_preview_s = (rec["preview"] - rec["release"]) / 1000
    finished_s = (rec["src"] - rec["release"]) / 1000
    timing = {"browser_release_to_first_preview_s": first_preview_s,
              "browser_release_to_finished_clip_s": finished_s,
              "first_preview_step": rec["previewStep"],
              "kernel_change_to_first_preview_s": data["timing"]["first_preview"],
              "kernel_change_to_finished_s": data["timing"]["finished"],
              "steps": data["timing"]["steps"], "draws": data["timing"]["draws"], "guidance": readout,
              "goals_s": {"first_preview": 0.3, "finished": 1.5}}
    save_json("controls_latency", timing)
    print(f"controls latency: {timing}")
    assert rec["previewStep"] >= 1 and rec["preview"] < rec["src"]
    assert data["timing"]["draws"] == 1, timing   # one run of the sampler: what the latency goals are for
    assert first_preview_s <= MAX_FIRST_PREVIEW_S, timing
    assert finished_s <= MAX_FINISHED_S, timing

    # the history strip: a click on the first thumbnail brings the guidance-5 clip back, no new run
    thumbs = root.locator(".sora-nb-controls-history-item")
    assert thumbs.count() == 2
    thumbs.first.click()
    data = wait_played(page, lab, lambda d: d["guidance"] == 5.0)
    assert data["slider"] == 5.0 and data["history"] == 2
    page.wait_for_function("(s) => document.querySelector('video.sora-nb-controls-player').getAttribute('src') !== s",
                           arg=after["src"], timeout=30_000)
    page.wait_for_function("() => document.querySelector('.sora-nb-controls-guidance .widget-readout')"
                           ".textContent.trim() === '5.0'", timeout=30_000)
    assert "guidance 5 " in root.locator(".sora-nb-controls-caption-text").inner_text()
    assert "Restored clip 1 of 2" in root.locator(".sora-nb-controls-message").inner_text()
    save_screenshot(root, "controls_restored")
