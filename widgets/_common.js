// Helpers shared by every widget module in this folder. sora_nb.frontend.read_module puts this file
// in front of the module it reads (anywidget takes one module string), so they are defined once here.

function make(tag, className, style = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  Object.assign(node.style, style);
  return node;
}

function bytesOf(view) {
  if (!view || !view.byteLength) return new Uint8Array(0);
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

// One h*w RGB frame starting at byte `offset` of `bytes`, as ImageData for putImageData.
function rgbImageData(bytes, offset, h, w) {
  const rgba = new Uint8ClampedArray(h * w * 4);
  for (let i = 0, j = offset; i < h * w; i++, j += 3) {
    rgba[4 * i] = bytes[j];
    rgba[4 * i + 1] = bytes[j + 1];
    rgba[4 * i + 2] = bytes[j + 2];
    rgba[4 * i + 3] = 255;
  }
  return new ImageData(rgba, w, h);
}

function pixelCanvas(h, w, scale, className) {
  const c = make("canvas", className, { imageRendering: "pixelated", width: `${w * scale}px`,
                                        height: `${h * scale}px`, display: "block" });
  c.width = w;
  c.height = h;
  return c;
}

// Notebook front ends bind plain keys (JupyterLab's command mode takes the arrow keys, and "d d" deletes
// the cell): keys typed while one of our own controls has the focus (a slider, a select, a play button or a
// history thumbnail, which a click focuses) stay with it, so arrows scrub the sliders and "d d" after a click on
// play does not delete the cell. Keys with a modifier, Shift+Enter (run the cell) and Escape still reach the page.
function guardKeys(root) {
  root.addEventListener("keydown", (event) => {
    const target = event.target;
    const ours = target instanceof HTMLInputElement || target instanceof HTMLSelectElement ||
      target instanceof HTMLButtonElement || (target instanceof HTMLElement && target !== root && target.tabIndex >= 0);
    const passed = event.ctrlKey || event.metaKey || event.altKey || event.key === "Escape" ||
      (event.shiftKey && event.key === "Enter");
    if (ours && !passed) event.stopPropagation();
  });
}

// `load` once for changes that arrive together (a new clip sets frames and shape in one message: two events).
function coalesced(load) {
  let pending = false;
  return () => {
    if (pending) return;
    pending = true;
    queueMicrotask(() => { pending = false; load(); });
  };
}

// A play button's loop: a click on `button` (showing ▶ or ⏸) starts or stops `advance(value)` every 1/fps
// seconds (fps read again when the model's changes), `read()` being the value shown. The same widget shown in
// two views plays at fps, not fps times the views playing: a tick that finds a value its own view did not set
// (another view's tick, or the user's scrub) takes that value and waits for the next tick. Returns {stop}.
function player(model, button, read, advance) {
  let timer = null;
  let last = null;
  function tick() {
    const now = read();
    if (last === null || now === last) advance(now);
    last = read();
  }
  function start() {
    timer = setInterval(tick, 1000 / Math.max(0.1, model.get("fps")));
  }
  function stop() {
    if (timer) clearInterval(timer);
    timer = null;
    button.textContent = "▶";
  }
  function onFps() {
    if (timer) { clearInterval(timer); start(); }
  }
  model.on("change:fps", onFps);
  button.addEventListener("click", () => {
    if (timer) return stop();
    last = null;
    button.textContent = "⏸";
    start();
  });
  return { stop() { stop(); model.off("change:fps", onFps); } };
}
