// Filmstrip: play and scrub a clip entirely in the browser.
// State (from sora_nb.frontend.Filmstrip): frames (bytes, T*H*W*3 uint8 RGB), shape [T, H, W],
// fps, index (the frame shown, synced back to Python), scale (CSS pixels per video pixel).
// rgbImageData, guardKeys, coalesced and player come from _common.js (see sora_nb.frontend.read_module).

function render({ model, el }) {
  const canvas = document.createElement("canvas");
  canvas.className = "sora-nb-filmstrip-canvas";
  canvas.style.imageRendering = "pixelated";
  const slider = document.createElement("input");
  slider.type = "range";
  slider.min = 0;
  slider.className = "sora-nb-filmstrip-slider";
  const play = document.createElement("button");
  play.textContent = "▶";
  play.className = "sora-nb-filmstrip-play";
  const label = document.createElement("span");
  label.className = "sora-nb-filmstrip-label";
  const bar = document.createElement("div");
  bar.append(play, slider, label);
  el.append(canvas, bar);
  const ctx = canvas.getContext("2d");
  let images = [];

  function load() {
    const [t, h, w] = model.get("shape");
    const view = model.get("frames");
    const bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
    images = [];
    for (let i = 0; i < t; i++) images.push(rgbImageData(bytes, i * h * w * 3, h, w));
    canvas.width = w;
    canvas.height = h;
    const scale = model.get("scale");
    canvas.style.width = `${w * scale}px`;
    canvas.style.height = `${h * scale}px`;
    slider.max = Math.max(0, t - 1);
    draw();
  }
  function draw() {
    const i = Math.min(model.get("index"), images.length - 1);
    if (i >= 0 && images[i]) ctx.putImageData(images[i], 0, 0);
    slider.value = i;
    label.textContent = `frame ${i} (${i + 1}/${images.length})`;  // the index (0-based, as in Python), then k/n
  }
  slider.addEventListener("input", () => {
    model.set("index", Number(slider.value));
    model.save_changes();
    draw();
  });
  const playing = player(model, play, () => model.get("index"), (value) => {
    model.set("index", (value + 1) % Math.max(1, images.length));
    model.save_changes();
    draw();
  });
  guardKeys(el);
  const reload = coalesced(load);
  model.on("change:frames", reload);
  model.on("change:shape", reload);
  model.on("change:scale", reload);
  model.on("change:index", draw);
  load();
  return () => playing.stop();
}

export default { render };
