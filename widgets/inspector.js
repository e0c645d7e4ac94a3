// Latent inspector: every denoising step of every frame, scrubbed in the browser.
//
// State (from sora_nb.inspector.Inspector):
//   a_views, b_views  bytes: the "x0", "xt" and "delta" stacks of a trace, back to back, each
//                     (step, frame, H, W, 3) uint8 RGB (b_* empty when not comparing)
//   a_heat, b_heat    bytes: the (step, frame, H, W, 3) heatmap stack of latent channel `heat_channel`
//   meta              {a: {shape: [S, F, H, W], channels, label, views, stats: {step, sigma, ...}, time, frames (the
//                     frame coordinate), gaps (steps between recorded steps), update_per_step}, b: ... or null,
//                     notes: [what comparing by position hides, shown above the panels]}
//   step, frame, view, channel   synced both ways; scale (CSS px per pixel of A; B gets its own, to come out
//                     about as large), fps (play speed)
// Comparing, the step and frame rows show one value where A and B agree and "A: .., B: .." where they do not.
// With gaps between recorded steps (record_every > 1, a thinned trace) the change view is the change since the
// previous *recorded* step, and the plot and readout show the update per step (divided by the steps it spans).
// Frames are cut out of the bytes once (cached as ImageData) and drawn with putImageData, so moving
// a slider redraws synchronously in the input handler, with no kernel round trip.

const VIEWS = [
  ["x0", "x0: clean prediction (RGB)"],
  ["xt", "x_t: noisy latent (RGB)"],
  ["channel", "one latent channel of x0"],
  ["delta", "change of x0 since previous step"],
];
const DELTA_GAPPED = "change of x0 since the previous recorded step";
const SERIES = [  // per-step curves: stats key, legend, colour
  ["sigma", "σ (noise level)", "#1f77b4"],
  ["latent_std", "std of x_t", "#2ca02c"],
  ["update", "update: RMS change of x0", "#d62728"],
];
const UPDATE_GAPPED = "update: RMS change of x0 per step (since the previous recorded step, ÷ the steps between)";
const MAX_STEP_THUMBS = 32;

function evenlySpaced(n, k) {
  if (n <= k) return [...Array(n).keys()];
  const out = [];
  for (let i = 0; i < k; i++) out.push(Math.round((i * (n - 1)) / (k - 1)));
  return out;
}

function fmt(v, digits = 3) {
  return v === null || v === undefined || Number.isNaN(v) ? "–" : Number(v).toFixed(digits);
}

// Whether a panel's recorded steps are not every step (its updates span several steps).
function gapped(p) {
  return (p.meta.gaps || []).some((g) => g !== null && g !== 1);
}

// A per-step series of a panel: the update per step where its recorded steps have gaps.
function series(p, name) {
  return name === "update" && gapped(p) && p.meta.update_per_step ? p.meta.update_per_step : p.meta.stats[name];
}

// The frame coordinate of frame index f (its index where the trace has none).
function frameOf(p, f) {
  return p.meta.frames ? p.meta.frames[f] : f;
}

// One trace's frames, cut out of its bytes on demand and cached as ImageData.
class Panel {
  constructor(meta, views, heat) {
    this.meta = meta;
    [this.S, this.F, this.H, this.W] = meta.shape;
    this.views = views;
    this.heat = heat;
    this.cache = new Map();
  }
  setHeat(heat) {
    this.heat = heat;
    for (const key of [...this.cache.keys()]) if (key.startsWith("channel:")) this.cache.delete(key);
  }
  image(view, s, f) {
    const key = `${view}:${s}:${f}`;
    const hit = this.cache.get(key);
    if (hit) return hit;
    const n = this.H * this.W * 3;
    const bytes = view === "channel" ? this.heat : this.views;
    const base = view === "channel" ? 0 : this.meta.views.indexOf(view) * this.S * this.F * n;
    const offset = base + (s * this.F + f) * n;
    if (offset < 0 || bytes.length < offset + n) return null;
    const img = rgbImageData(bytes, offset, this.H, this.W);
    this.cache.set(key, img);
    return img;
  }
}

function sliderRow(axis) {
  const box = make("div", `sora-nb-inspector-row sora-nb-inspector-${axis}-row`,
                   { display: "flex", alignItems: "center", gap: "6px", margin: "2px 0" });
  const play = make("button", `sora-nb-inspector-play-${axis}`, { width: "2.2em" });
  play.textContent = "▶";
  play.title = `play the ${axis}s`;
  const name = make("span", "", { width: "3.2em" });
  name.textContent = axis;
  const slider = make("input", `sora-nb-inspector-${axis}`, { width: "260px" });
  slider.type = "range";
  slider.min = 0;
  slider.step = 1;
  const label = make("span", `sora-nb-inspector-${axis}-label`, { fontVariantNumeric: "tabular-nums" });
  box.append(play, name, slider, label);
  return { box, play, slider, label };
}

function render({ model, el }) {
  const root = make("div", "sora-nb-inspector", { fontFamily: "sans-serif", fontSize: "12px", lineHeight: "1.4" });
  const notesBox = make("div", "sora-nb-inspector-notes", { color: "#b35c00", margin: "0 0 6px 0" });
  const mainsBox = make("div", "sora-nb-inspector-mains", { display: "flex", gap: "16px", alignItems: "flex-start" });
  const controls = make("div", "sora-nb-inspector-controls",
                        { display: "flex", alignItems: "center", gap: "8px", margin: "6px 0" });
  const viewSelect = make("select", "sora-nb-inspector-view");
  for (const [value, text] of VIEWS) {
    const opt = document.createElement("option");
    opt.value = value;
    opt.textContent = text;
    viewSelect.append(opt);
  }
  const channelBox = make("label", "", { display: "flex", alignItems: "center", gap: "4px" });
  const channelInput = make("input", "sora-nb-inspector-channel", { width: "4em" });
  channelInput.type = "number";
  channelInput.min = 0;
  channelBox.append("channel", channelInput);
  const heatLabel = make("span", "sora-nb-inspector-heat-label", { color: "#666" });
  controls.append("view", viewSelect, channelBox, heatLabel);
  const stepRow = sliderRow("step");
  const frameRow = sliderRow("frame");
  const plot = make("canvas", "sora-nb-inspector-plot", { width: "380px", height: "130px", display: "block",
                                                          border: "1px solid #ddd" });
  plot.width = 380 * (window.devicePixelRatio || 1);
  plot.height = 130 * (window.devicePixelRatio || 1);
  const legend = make("div", "sora-nb-inspector-legend", { display: "flex", gap: "10px", flexWrap: "wrap" });
  const readout = make("div", "sora-nb-inspector-readout", { fontVariantNumeric: "tabular-nums" });
  const clipTitle = make("div", "", { marginTop: "8px", fontWeight: "bold" });
  const clipBox = make("div", "sora-nb-inspector-clip");
  const stepsTitle = make("div", "", { marginTop: "8px", fontWeight: "bold" });
  const stepsBox = make("div", "sora-nb-inspector-steps");
  root.append(notesBox, mainsBox, controls, stepRow.box, frameRow.box, plot, legend, readout, clipTitle, clipBox,
              stepsTitle, stepsBox);
  el.append(root);

  let panels = {};
  let mains = {};
  let clipThumbs = {};
  let stepThumbs = {};
  let stepIndex = [];

  // One value where every panel agrees (as shown), "A: x, B: y" where they do not.
  function both(value, format = String) {
    const shown = Object.values(panels).map((p) => format(value(p)));
    if (shown.every((v) => v === shown[0])) return shown[0];
    return Object.keys(panels).map((key, i) => `${key.toUpperCase()}: ${shown[i]}`).join(", ");
  }

  function put(canvas, img) {
    if (img) canvas.getContext("2d").putImageData(img, 0, 0);
  }

  function setState(name, value) {
    model.set(name, value);
    model.save_changes();
  }

  function thumbRow(key, count, onClick, kind) {
    const p = panels[key];
    const scale = Math.max(1, Math.round(48 / Math.max(p.H, p.W)));
    const row = make("div", `sora-nb-inspector-thumbs sora-nb-inspector-${kind}-thumbs`,
                     { display: "flex", gap: "3px", flexWrap: "wrap", alignItems: "center", margin: "2px 0" });
    if (Object.keys(panels).length > 1) {
      const tag = make("span", "", { width: "1.5em", fontWeight: "bold" });
      tag.textContent = key.toUpperCase();
      row.append(tag);
    }
    const thumbs = [];
    for (let i = 0; i < count; i++) {
      const c = pixelCanvas(p.H, p.W, scale, "sora-nb-inspector-thumb");
      c.style.cursor = "pointer";
      c.style.outline = "2px solid transparent";
      c.addEventListener("click", () => onClick(i));
      row.append(c);
      thumbs.push(c);
    }
    return { row, thumbs };
  }

  function build() {
    const meta = model.get("meta") || {};
    panels = {};
    for (const key of ["a", "b"]) {
      if (meta[key]) panels[key] = new Panel(meta[key], bytesOf(model.get(`${key}_views`)), bytesOf(model.get(`${key}_heat`)));
    }
    const a = panels.a;
    if (!a) return;
    const scale = model.get("scale");
    const comparing = Object.keys(panels).length > 1;
    notesBox.replaceChildren();
    for (const text of meta.notes || []) {
      const line = make("div", "sora-nb-inspector-note");
      line.textContent = `⚠ ${text}`;
      notesBox.append(line);
    }
    notesBox.style.display = notesBox.childElementCount ? "block" : "none";
    const anyGapped = Object.values(panels).some(gapped);
    viewSelect.querySelector('option[value="delta"]').textContent = anyGapped ? DELTA_GAPPED : VIEWS[3][1];
    mainsBox.replaceChildren();
    mains = {};
    for (const [key, p] of Object.entries(panels)) {
      // A at `scale`; another panel at the scale that makes it about as large (previews of other sizes)
      const side = Math.max(p.H, p.W), aSide = Math.max(a.H, a.W);
      const pScale = p === a ? scale : Math.max(1, Math.min(64, Math.round((scale * aSide) / side)));
      const fig = make("figure", "", { margin: "0" });
      const canvas = pixelCanvas(p.H, p.W, pScale, "sora-nb-inspector-main");
      canvas.dataset.panel = key;
      const caption = make("figcaption", "sora-nb-inspector-caption", { maxWidth: `${p.W * pScale}px` });
      caption.textContent = (comparing ? `${key.toUpperCase()}: ` : "") + p.meta.label;
      fig.append(canvas, caption);
      mainsBox.append(fig);
      mains[key] = canvas;
    }
    stepRow.slider.max = a.S - 1;
    frameRow.slider.max = a.F - 1;
    channelInput.max = Math.min(...Object.values(panels).map((p) => p.meta.channels)) - 1;
    stepIndex = evenlySpaced(a.S, MAX_STEP_THUMBS);
    clipBox.replaceChildren();
    stepsBox.replaceChildren();
    clipThumbs = {};
    stepThumbs = {};
    for (const key of Object.keys(panels)) {
      const clip = thumbRow(key, a.F, (i) => setState("frame", i), "clip");
      const steps = thumbRow(key, stepIndex.length, (j) => setState("step", stepIndex[j]), "steps");
      clipBox.append(clip.row);
      stepsBox.append(steps.row);
      clipThumbs[key] = clip.thumbs;
      stepThumbs[key] = steps.thumbs;
    }
    legend.replaceChildren();
    for (const [name, text, colour] of SERIES) {
      const item = make("span", "", { color: colour });
      item.textContent = `— ${name === "update" && anyGapped ? UPDATE_GAPPED : text}`;
      legend.append(item);
    }
    const note = make("span", "", { color: "#666" });
    note.textContent = `(${comparing ? "A solid, B dashed; " : ""}each curve scaled to its maximum)`;
    legend.append(note);
    draw();
  }

  function drawPlot(s) {
    const ctx = plot.getContext("2d");
    const W = plot.width, H = plot.height;
    const k = W / 380;
    const L = 6 * k, R = 6 * k, T = 8 * k, B = 16 * k;
    ctx.clearRect(0, 0, W, H);
    const a = panels.a;
    const n = a.S;
    const x = (i) => L + (n > 1 ? (i / (n - 1)) * (W - L - R) : (W - L - R) / 2);
    for (const [name, , colour] of SERIES) {
      const all = Object.values(panels).flatMap((p) => series(p, name)).filter((v) => v !== null && Number.isFinite(v));
      const top = Math.max(...all.map(Math.abs), 0);
      if (!(top > 0)) continue;
      const y = (v) => T + (1 - v / top) * (H - T - B);
      Object.values(panels).forEach((p, pi) => {
        ctx.strokeStyle = colour;
        ctx.lineWidth = 1.5 * k;
        ctx.setLineDash(pi === 0 ? [] : [4 * k, 3 * k]);
        ctx.beginPath();
        let started = false;
        series(p, name).forEach((v, i) => {
          if (v === null || !Number.isFinite(v)) { started = false; return; }
          if (started) ctx.lineTo(x(i), y(v)); else ctx.moveTo(x(i), y(v));
          started = true;
        });
        ctx.stroke();
        const v = series(p, name)[s];
        if (v !== null && Number.isFinite(v)) {
          ctx.setLineDash([]);
          ctx.fillStyle = colour;
          ctx.beginPath();
          ctx.arc(x(s), y(v), 3 * k, 0, 2 * Math.PI);
          ctx.fill();
        }
      });
    }
    ctx.setLineDash([]);
    ctx.strokeStyle = "#888";
    ctx.lineWidth = 1 * k;
    ctx.beginPath();
    ctx.moveTo(x(s), T / 2);
    ctx.lineTo(x(s), H - B);
    ctx.stroke();
    ctx.fillStyle = "#444";
    ctx.font = `${10 * k}px sans-serif`;
    ctx.textAlign = "left";
    ctx.fillText(`step ${both((p) => p.meta.stats.step[0])}`, L, H - 4 * k);
    ctx.textAlign = "right";
    ctx.fillText(`step ${both((p) => p.meta.stats.step[n - 1])}`, W - R, H - 4 * k);
    const right = x(s) > W / 2;  // the current step's number beside the marker line, inside the plot
    ctx.textAlign = right ? "right" : "left";
    ctx.fillText(`step ${both((p) => p.meta.stats.step[s])}`, x(s) + (right ? -4 : 4) * k, T + 8 * k);
  }

  function draw() {
    const a = panels.a;
    if (!a) return;
    const s = Math.min(model.get("step"), a.S - 1);
    const f = Math.min(model.get("frame"), a.F - 1);
    const view = model.get("view");
    for (const [key, p] of Object.entries(panels)) {
      put(mains[key], p.image(view, s, f));
      clipThumbs[key].forEach((c, i) => {
        put(c, p.image(view, s, i));
        c.style.outline = i === f ? "2px solid #f80" : "2px solid transparent";
      });
      stepThumbs[key].forEach((c, j) => {
        put(c, p.image(view, stepIndex[j], f));
        c.style.outline = stepIndex[j] === s ? "2px solid #f80" : "2px solid transparent";
      });
    }
    stepRow.slider.value = s;
    frameRow.slider.value = f;
    const guidance = (p) => (p.meta.stats.guidance ? p.meta.stats.guidance[s] : null);
    const g = Object.values(panels).some((p) => guidance(p) != null) ?
      ` · guidance ${both(guidance, (v) => (v == null ? "–" : fmt(v, 2)))}` : "";
    stepRow.label.textContent = `step ${both((p) => p.meta.stats.step[s])} (${s + 1}/${a.S} recorded) · ` +
      `σ ${both((p) => p.meta.stats.sigma[s], (v) => fmt(v))}${g}`;
    const time = Object.values(panels).some((p) => p.meta.time) ?
      ` · t = ${both((p) => (p.meta.time ? p.meta.time[f] : null), (v) => fmt(v, 2))} s` : "";
    frameRow.label.textContent = `frame ${both((p) => frameOf(p, f))} (${f + 1}/${a.F})${time}`;
    viewSelect.value = view;
    channelBox.style.display = view === "channel" ? "flex" : "none";
    if (document.activeElement !== channelInput) channelInput.value = model.get("channel");
    const since = (p) => (s > 0 ? p.meta.stats.step[s - 1] : null);
    const gap = both((p) => p.meta.gaps && p.meta.gaps[s], (n) => (n === 1 ? "1 step" : `${n} steps`));
    heatLabel.textContent = view === "channel" ? `showing channel ${model.get("heat_channel")} (blue < 0 < red)` :
      view === "delta" && Object.values(panels).some(gapped) ?
        (s > 0 ? `since step ${both(since)} (${gap} earlier)` : "the first recorded step") : "";
    readout.textContent = Object.entries(panels).map(([key, p]) => {
      const t = p.meta.stats;
      const tag = Object.keys(panels).length > 1 ? `${key.toUpperCase()}: ` : "";
      const update = gapped(p) ? `update per step ${fmt(series(p, "update")[s])}` +
        (p.meta.gaps[s] > 1 ? ` (over ${p.meta.gaps[s]} steps)` : "") : `update ${fmt(t.update[s])}`;
      return `${tag}σ ${fmt(t.sigma[s])} · std(x_t) ${fmt(t.latent_std[s])} · ${update}`;
    }).join("   |   ");
    clipTitle.textContent = `the whole clip at step ${both((p) => p.meta.stats.step[s])}`;
    stepsTitle.textContent = `frame ${both((p) => frameOf(p, f))} across the steps` +
      (stepIndex.length < a.S ? ` (${stepIndex.length} of ${a.S} recorded steps)` : "");
    drawPlot(s);
  }

  // play the steps or the frames (`player`, _common.js: its button starts and stops it)
  const players = [["step", stepRow], ["frame", frameRow]].map(([axis, row]) =>
    player(model, row.play, () => model.get(axis), (value) => {
      const a = panels.a;
      if (a) setState(axis, (value + 1) % (axis === "step" ? a.S : a.F));
    }));
  guardKeys(root);
  stepRow.slider.addEventListener("input", () => setState("step", Number(stepRow.slider.value)));
  frameRow.slider.addEventListener("input", () => setState("frame", Number(frameRow.slider.value)));
  viewSelect.addEventListener("change", () => setState("view", viewSelect.value));
  channelInput.addEventListener("change", () => {
    const max = Number(channelInput.max);
    const c = Math.max(0, Math.min(max, Math.round(Number(channelInput.value)) || 0));
    channelInput.value = c;
    setState("channel", c);
  });

  for (const name of ["meta", "a_views", "b_views", "scale"]) model.on(`change:${name}`, build);
  for (const key of ["a", "b"]) {
    model.on(`change:${key}_heat`, () => {
      if (panels[key]) panels[key].setHeat(bytesOf(model.get(`${key}_heat`)));
      draw();
    });
  }
  for (const name of ["step", "frame", "view", "channel", "heat_channel"]) model.on(`change:${name}`, draw);
  build();
  return () => {
    for (const p of players) p.stop();
  };
}

export default { render };
