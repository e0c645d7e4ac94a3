"""The latent inspector in a real JupyterLab, in headless Chromium.

The notebook opens two toy traces (guidance 5 vs 1, saved to netCDF by this test) and shows
``sora_nb.inspect(a, compare=b)``. The test moves the step slider with the keyboard (a real input
event), checks the canvas pixels changed and that the kernel heard about it, then times scrub
updates inside the page: set the slider, dispatch ``input``, read the canvas back, and (the figure
asserted on) wait for the next animation frame, i.e. until the new image can be on screen.
"""

from __future__ import annotations

import statistics

import pytest

from harness import cell_errors, open_notebook, run_all_cells, save_json, save_screenshot, write_notebook
from toy import toy_generator

pytestmark = pytest.mark.browser

SCRUB_UPDATES = 40
MAX_SCRUB_MS = 50.0

NOTEBOOK = [
    "import sora_nb\n"
    "a = sora_nb.open_trace('toy_g5.nc')\n"
    "b = sora_nb.open_trace('toy_g1.nc')\n"
    "w = sora_nb.inspect(a, compare=b)\n"
    "w.observe(lambda change: open('step.txt', 'w').write(str(change['new'])), names='step')\n"
    "w",
]

READ_CANVAS = """(canvas) => Array.from(canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data)"""

TIME_SCRUBS = """async (n) => {
  const root = document.querySelector('.sora-nb-inspector');
  const slider = root.querySelector('input.sora-nb-inspector-step');
  const canvas = root.querySelector('canvas.sora-nb-inspector-main');
  const ctx = canvas.getContext('2d');
  const read = () => ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  const sync = [], painted = [];
  let changed = 0;
  for (let i = 0; i < n; i++) {
    const before = read();
    const target = (Number(slider.value) + 1) % (Number(slider.max) + 1);
    const t0 = performance.now();
    slider.value = String(target);
    slider.dispatchEvent(new Event('input', { bubbles: true }));
    const after = read();
    const t1 = performance.now();
    await new Promise((resolve) => requestAnimationFrame(() => resolve()));
    painted.push(performance.now() - t0);
    sync.push(t1 - t0);
    if (after.some((v, j) => v !== before[j])) changed++;
  }
  return { sync, painted, changed };
}"""


@pytest.fixture
def inspector_notebook(lab):
    """Toy traces saved into the lab's folder and the notebook that inspects them."""
    gen = toy_generator()
    for guidance, name in ((5.0, "toy_g5.nc"), (1.0, "toy_g1.nc")):
        gen.generate("a disc", seed=0, steps=8, guidance=guidance).trace.sora.to_netcdf(lab.root / name)
    return write_notebook(lab.root / "inspector.ipynb", NOTEBOOK).name


def test_inspector_renders_scrubs_and_is_fast(lab, page, inspector_notebook):
    open_notebook(page, lab, inspector_notebook)
    run_all_cells(page)
    assert cell_errors(page) == []
    root = page.locator(".sora-nb-inspector")
    root.wait_for(state="visible", timeout=60_000)
    mains = root.locator("canvas.sora-nb-inspector-main")
    assert mains.count() == 2  # guidance 5 and guidance 1, side by side
    assert root.locator(".sora-nb-inspector-clip canvas").count() == 2 * 8  # 8 latent frames per trace
    assert root.locator(".sora-nb-inspector-steps canvas").count() == 2 * 8  # 8 recorded steps per trace
    assert "guidance 5" in root.locator(".sora-nb-inspector-caption").first.inner_text()
    canvas = mains.first
    box = canvas.bounding_box()
    assert box["width"] >= 200 and box["height"] >= 200  # scaled up, not a 16-pixel speck
    first = canvas.evaluate(READ_CANVAS)
    assert len(set(first)) > 10  # an image, not a blank canvas
    save_screenshot(root, "inspector_step0")

    slider = root.locator("input.sora-nb-inspector-step")
    slider.focus()
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    assert slider.input_value() == "3"
    third = canvas.evaluate(READ_CANVAS)
    assert sum(a != b for a, b in zip(first, third)) > 100  # the picture moved on
    assert "step 3" in root.locator(".sora-nb-inspector-step-label").inner_text()
    step_file = lab.root / "step.txt"
    for _ in range(40):  # the kernel heard the change (state synced back to Python)
        if step_file.exists() and step_file.read_text() == "3":
            break
        page.wait_for_timeout(250)
    assert step_file.read_text() == "3"
    save_screenshot(root, "inspector_step3")

    result = page.evaluate(TIME_SCRUBS, SCRUB_UPDATES)
    painted, sync = result["painted"], result["sync"]
    timing = {"updates": SCRUB_UPDATES, "changed": result["changed"],
              "median_ms_to_next_frame": statistics.median(painted), "max_ms_to_next_frame": max(painted),
              "median_ms_sync_draw": statistics.median(sync), "max_ms_sync_draw": max(sync)}
    save_json("inspector_scrub_timing", timing)
    print(f"scrub timing: {timing}")
    assert result["changed"] == SCRUB_UPDATES, timing  # every update drew a different image
    assert timing["median_ms_to_next_frame"] <= MAX_SCRUB_MS, timing
    assert timing["median_ms_sync_draw"] <= MAX_SCRUB_MS / 5, timing

    x0_view = canvas.evaluate(READ_CANVAS)
    root.locator("select.sora-nb-inspector-view").select_option("channel")
    heat = canvas.evaluate(READ_CANVAS)
    assert sum(a != b for a, b in zip(heat, x0_view)) > 100  # the heatmap replaced the RGB preview
    assert root.locator(".sora-nb-inspector-heat-label").inner_text().startswith("showing channel 0")
    save_screenshot(root, "inspector_channel_view")
