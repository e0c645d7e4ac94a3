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


# -- the front end alone, with a stand-in model (no JupyterLab): what its labels say -----------------------------
RENDER = """async ({src, state, bytesKeys}) => {
  const errors = [];
  window.addEventListener('error', (e) => errors.push(String(e.message)));
  const listeners = {};
  const st = {};
  for (const [k, v] of Object.entries(state)) {
    if (bytesKeys.includes(k)) {
      const bin = atob(v);
      const u = new Uint8Array(bin.length);
      for (let i = 0; i < bin.length; i++) u[i] = bin.charCodeAt(i);
      st[k] = new DataView(u.buffer);
    } else st[k] = v;
  }
  const model = {
    get: (k) => st[k],
    set: (k, v) => {
      const old = st[k];
      st[k] = v;
      if (old !== v) (listeners['change:' + k] || []).forEach((f) => f());
    },
    save_changes: () => {},
    on: (ev, f) => { (listeners[ev] = listeners[ev] || []).push(f); },
    off: () => {},
  };
  window.__model = model;
  try {
    const mod = await import(URL.createObjectURL(new Blob([src], { type: 'text/javascript' })));
    mod.default.render({ model, el: document.getElementById('out') });
  } catch (e) { errors.push('render: ' + e.message); }
  return errors;
}"""

BYTES = ("a_views", "b_views", "a_heat", "b_heat")


def render_alone(page, widget):
    """``widget`` (an Inspector) drawn by its real front-end module in ``page``, its state as Python has it."""
    import base64

    state = {name: base64.b64encode(getattr(widget, name)).decode() if name in BYTES else getattr(widget, name)
             for name in (*BYTES, "meta", "step", "frame", "view", "channel", "heat_channel", "scale", "fps")}
    page.set_content("<!doctype html><html><body><div id=out></div></body></html>")
    assert page.evaluate(RENDER, {"src": widget._esm, "state": state, "bytesKeys": list(BYTES)}) == []
    return page.locator(".sora-nb-inspector")


def label(root, name):
    return root.locator(f".sora-nb-inspector-{name}").first.inner_text()


def test_compared_steps_that_differ_are_both_shown(page):
    """Comparing 8 steps with 14 recorded every 2nd, index 6 is A's step 6 and B's step 12: the step row said
    "step 6 · σ 0.144" (A's alone), and B's guidance was never shown."""
    import warnings

    import sora_nb

    gen = toy_generator()
    a = gen.generate("a disc", seed=0, steps=8, guidance=5.0)
    b = gen.generate("a disc", seed=0, steps=14, guidance=5.0, record_every=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the note on steps that differ (tests/test_inspector.py)
        w = sora_nb.inspect(a, compare=b)
    w.step = 6
    root = render_alone(page, w)
    assert label(root, "step-label") == "step A: 6, B: 12 (7/8 recorded) · σ A: 0.144, B: 0.078 · guidance 5.00"
    assert "their denoising steps differ" in label(root, "notes")
    assert root.locator(".sora-nb-inspector-clip").evaluate("e => e.previousSibling.textContent") == \
        "the whole clip at step A: 6, B: 12"
    g1 = gen.generate("a disc", seed=0, steps=8, guidance=1.0)
    w = sora_nb.inspect(a, compare=g1)
    w.step = 3
    root = render_alone(page, w)
    assert label(root, "step-label") == "step 3 (4/8 recorded) · σ 0.572 · guidance A: 5.00, B: 1.00"
    assert root.locator(".sora-nb-inspector-notes").evaluate("e => e.style.display") == "none"  # nothing hidden


def test_frame_row_names_the_frame_coordinate(page):
    """The frame row said "frame 4/8" for index 3 (1-based, while the step row shows the step coordinate), and
    "frame 1/4" for a trace sliced to frames 4..7."""
    import sora_nb

    v = toy_generator().generate("a disc", seed=0, steps=4, guidance=5.0)
    w = sora_nb.inspect(v)
    w.frame = 3
    root = render_alone(page, w)
    assert label(root, "frame-label") == "frame 3 (4/8) · t = 0.75 s"
    assert root.locator(".sora-nb-inspector-steps").evaluate("e => e.previousSibling.textContent") == \
        "frame 3 across the steps"
    root = render_alone(page, sora_nb.inspect(v.trace.isel(frame=slice(4, 8))))
    assert label(root, "frame-label") == "frame 4 (1/4) · t = 1.00 s"


def test_recorded_steps_apart_show_the_update_per_step(page):
    """record_every=4 of 10 steps records 0, 4, 8, 9: the change view said "since previous step", and the update
    curve dropped at the last interval (1 step after intervals of 4). Every-step traces read as before."""
    import sora_nb

    gen = toy_generator()
    thin = gen.generate("a disc", seed=0, steps=10, record_every=4)
    w = sora_nb.inspect(thin, view="delta")
    w.step = 1
    root = render_alone(page, w)
    option = "s => s.options[s.selectedIndex].text"
    assert root.locator("select.sora-nb-inspector-view").evaluate(option) == \
        "change of x0 since the previous recorded step"
    assert "update: RMS change of x0 per step" in label(root, "legend")
    per_step = w.meta["a"]["stats"]["update"][1] / 4
    assert label(root, "readout") == (f"σ {w.meta['a']['stats']['sigma'][1]:.3f} · std(x_t) "
                                      f"{w.meta['a']['stats']['latent_std'][1]:.3f} · update per step {per_step:.3f} "
                                      "(over 4 steps)")
    assert label(root, "heat-label") == "since step 0 (4 steps earlier)"
    full = sora_nb.inspect(gen.generate("a disc", seed=0, steps=10), view="delta")
    full.step = 1
    root = render_alone(page, full)
    assert root.locator("select.sora-nb-inspector-view").evaluate(option) == "change of x0 since previous step"
    assert "— update: RMS change of x0\n" in label(root, "legend") + "\n" and "per step" not in label(root, "legend")
    assert label(root, "readout").endswith(f"· update {full.meta['a']['stats']['update'][1]:.3f}")
    assert label(root, "heat-label") == ""


def test_compared_previews_of_other_sizes_come_out_about_as_large(page):
    """A 16x16 preview next to a 60x104 one was drawn at the 16x16's scale: 256x256 next to 1664x960 CSS pixels."""
    import numpy as np

    import sora_nb

    small = toy_generator().generate("a disc", seed=0, steps=8).trace
    rows, cols = (np.arange(60) * 16) // 60, (np.arange(104) * 16) // 104  # the same preview at 60x104
    big = small.drop_vars("preview").assign(
        preview=(("step", "frame", "py", "px", "rgb"), small.preview.values[:, :, rows][:, :, :, cols]))
    for first, second in ((small, big), (big, small)):
        w = sora_nb.inspect(first, compare=second)
        root = render_alone(page, w)
        boxes = [root.locator("canvas.sora-nb-inspector-main").nth(i).bounding_box() for i in range(2)]
        sides = [max(box["width"], box["height"]) for box in boxes]
        assert max(sides) <= 1.3 * min(sides), sides
        assert w.scale * max(first.sizes["py"], first.sizes["px"]) == sides[0]  # A: at the scale set
